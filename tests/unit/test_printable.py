"""Names as the admin's terminal shows them: nothing in a name acts on the terminal."""

import os

from gmemfs.base.printable import printable


def test_a_plain_name_is_unchanged():
    assert printable("/d/vm0 [x] é") == "/d/vm0 [x] é"


def test_controls_and_backslashes_are_escaped_as_ls_b_does():
    assert printable("a\x1b[31mb\nc\td\\e\x7f") == "a\\033[31mb\\nc\\td\\\\e\\177"


def test_undecodable_bytes_show_as_themselves_in_octal():
    assert printable(os.fsdecode(b"vm\xff")) == "vm\\377"


def test_invisible_unicode_controls_are_escaped():
    assert printable("evil\u202etxt.exe\u0085") == "evil\\342\\200\\256txt.exe\\302\\205"
