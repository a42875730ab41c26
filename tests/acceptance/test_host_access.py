"""Spec section 6: the host reaches shared pages through mmap, and nothing else."""

import mmap
import os

from support.host import touch
from support.syscalls import convert, errno_of

PAGES = 2


def test_touching_a_private_page_is_sigbus(sized_gmem, page_size):
    assert touch(sized_gmem, 0, 8) == "SIGBUS"
    assert touch(sized_gmem, page_size, 8, write=b"x") == "SIGBUS"


def test_shared_pages_can_be_written_and_read_through_mmap(sized_gmem, page_size):
    assert convert(sized_gmem, "shared", 0, PAGES * page_size) == ("OK", 0)
    assert touch(sized_gmem, page_size + 8, 8, write=b"guestmem") == "OK:guestmem"
    assert touch(sized_gmem, page_size + 8, 8) == "OK:guestmem", "another mapping, in another process, sees it"
    assert os.fstat(sized_gmem).st_blocks * 512 == page_size, "writing a shared hole allocated its page"


def test_a_page_shared_again_shows_what_it_held(sized_gmem, page_size):
    assert convert(sized_gmem, "shared", 0, page_size) == ("OK", 0)
    assert touch(sized_gmem, 0, 8, write=b"secret!!") == "OK:secret!!"
    assert convert(sized_gmem, "private", 0, page_size) == ("OK", 0)
    assert convert(sized_gmem, "shared", 0, page_size) == ("OK", 0)
    assert touch(sized_gmem, 0, 8) == "OK:secret!!"


def test_conversion_to_private_drops_what_the_kernel_caches(sized_gmem, page_size):
    assert convert(sized_gmem, "shared", 0, page_size) == ("OK", 0)
    with mmap.mmap(sized_gmem, page_size, mmap.MAP_SHARED) as mapping:
        mapping[0:4] = b"kept"  # dirty in the page cache, mapped in this process
        assert convert(sized_gmem, "private", 0, page_size) == ("OK", 0)
        assert touch(sized_gmem, 0, 4) == "SIGBUS", "no cached copy survives the conversion"
        assert convert(sized_gmem, "shared", 0, page_size) == ("OK", 0)
        assert mapping[0:4] == b"kept", "the dirty data was written back first, and kept in place"


def test_private_4k_page_inside_a_shared_huge_page(sized_gmem, page_size):
    assert convert(sized_gmem, "shared", 0, page_size) == ("OK", 0)
    assert convert(sized_gmem, "private", 4096, 4096) == ("OK", 0)
    assert touch(sized_gmem, 0, 8, write=b"neighbor") == "OK:neighbor"
    assert touch(sized_gmem, 4096, 8) == "SIGBUS"
    if page_size > 8192:
        assert touch(sized_gmem, 8192, 8).startswith("OK:")


def test_madv_remove_punches(sized_gmem, page_size):
    assert convert(sized_gmem, "shared", 0, PAGES * page_size) == ("OK", 0)
    with mmap.mmap(sized_gmem, PAGES * page_size, mmap.MAP_SHARED) as mapping:
        mapping[0:4] = b"page"
        mapping[page_size : page_size + 4] = b"next"
        mapping.flush()
        assert os.fstat(sized_gmem).st_blocks * 512 == PAGES * page_size
        mapping.madvise(mmap.MADV_REMOVE, 0, page_size)
        assert os.getxattr(sized_gmem, "user.gmem.allocated").decode() == f"{page_size:#x}-{2 * page_size:#x}"
        assert mapping[0:4] == b"\0\0\0\0" and mapping[page_size : page_size + 4] == b"next"


def test_read_and_write_are_refused_as_in_the_kernel(sized_gmem, page_size):
    assert errno_of(os.read, sized_gmem, 4096) == "EINVAL", "private pages: EINVAL, as in the kernel"
    assert errno_of(os.pread, sized_gmem, 4096, 0) == "ESPIPE"
    assert errno_of(os.lseek, sized_gmem, 0, os.SEEK_SET) == "ESPIPE"
    assert convert(sized_gmem, "shared", 0, page_size) == ("OK", 0)
    assert touch(sized_gmem, 0, 4) == "OK:\0\0\0\0", "the page is in the host's page cache now"
    assert errno_of(os.write, sized_gmem, b"x" * 4096) == "EINVAL"
    assert errno_of(os.read, sized_gmem, 8) == "EINVAL", "shared and cached pages too (it used to return them)"
    assert errno_of(os.read, sized_gmem, 0) == "EINVAL", "as the kernel: no read at all"
