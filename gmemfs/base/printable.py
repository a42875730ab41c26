r"""Names as a terminal may show them: any user picks the names on a mount, and the admin reads them.

Escaped as `ls -b` does: `\n`, `\t`, `\\`, and every other unprintable character (terminal
escapes, other control characters, undecodable bytes) as its bytes in octal (`\033`), so a
name cannot colour the screen, move the cursor or start a new row, and reads back unambiguously.
"""

import os

_NAMED = {"\\": "\\\\", "\n": "\\n", "\t": "\\t"}


def printable(name: str) -> str:
    r"""'a\x1b[31m\nb' -> 'a\\033[31m\\nb'; a name with nothing to escape comes back unchanged."""
    if name.isprintable() and "\\" not in name:
        return name
    return "".join(_escaped(character) for character in name)


def _escaped(character: str) -> str:
    if character in _NAMED:
        return _NAMED[character]
    if character.isprintable():
        return character
    return "".join(f"\\{byte:03o}" for byte in os.fsencode(character))  # surrogateescape: the name's own bytes
