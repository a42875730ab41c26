"""Spec section 8: KVM_GMEM_CONVERT_SHARED / _PRIVATE, rule by rule, with errno and error_offset."""

import mmap
import os
import signal

import pytest
from support.files import open_gmem
from support.host import touch
from support.syscalls import KEEP_SIZE, convert, fallocate_result

from gmemfs.kernel.uapi import KVM_GMEM_CONVERT_PRIVATE, KVM_GMEM_CONVERT_SHARED

PAGES = 2
K4 = 4096


def file_size(page_size: int) -> int:
    """Two pages, and at least eight 4 KiB pages, so 4 KiB-granular cases fit in 4 KiB files."""
    return PAGES * max(page_size, 4 * K4)


@pytest.fixture
def gmem(gmem_dir, page_size):
    fd = open_gmem(gmem_dir, size=file_size(page_size))
    yield fd
    os.close(fd)


def shared(fd) -> str:
    return os.getxattr(fd, "user.gmem.shared").decode()


def test_ioctl_numbers_are_the_kernels():
    assert KVM_GMEM_CONVERT_SHARED == 0xC040AF41
    assert KVM_GMEM_CONVERT_PRIVATE == 0xC040AF42


def test_new_files_start_private(gmem):
    assert shared(gmem) == ""


@pytest.mark.parametrize("to", ["shared", "private"])
def test_error_offset_on_input_is_einval(gmem, to):
    assert convert(gmem, to, 0, K4, error_offset=K4) == ("EINVAL", K4)
    assert shared(gmem) == ""


@pytest.mark.parametrize("to", ["shared", "private"])
def test_size_zero_succeeds_and_does_nothing(gmem, to, page_size):
    assert convert(gmem, to, 100 * file_size(page_size), 0) == ("OK", 0)
    assert shared(gmem) == ""


@pytest.mark.parametrize(
    "offset, size",
    [
        (lambda P: 0, lambda P: file_size(P) + K4),  # passes the size
        (lambda P: file_size(P), lambda P: K4),  # at the end
        (lambda P: (1 << 64) - K4, lambda P: 2 * K4),  # offset + size overflows
        (lambda P: 512, lambda P: K4),  # unaligned offset
        (lambda P: 0, lambda P: K4 + 512),  # unaligned size
    ],
    ids=["past_size", "at_end", "overflow", "unaligned_offset", "unaligned_size"],
)
@pytest.mark.parametrize("to", ["shared", "private"])
def test_bad_ranges_are_einval(gmem, page_size, to, offset, size):
    assert convert(gmem, to, offset(page_size), size(page_size)) == ("EINVAL", 0)
    assert shared(gmem) == ""


def test_4k_granularity_even_inside_a_huge_page(gmem, page_size):
    assert convert(gmem, "shared", K4, 2 * K4) == ("OK", 0)
    assert shared(gmem) == "0x1000-0x3000"
    assert convert(gmem, "private", 2 * K4, K4) == ("OK", 0)
    assert shared(gmem) == "0x1000-0x2000"


def test_shareability_is_kept_as_merged_runs(gmem, page_size):
    for page in (0, 2, 1):
        assert convert(gmem, "shared", page * K4, K4) == ("OK", 0)
    assert shared(gmem) == "0x0-0x3000"
    assert convert(gmem, "shared", 0, file_size(page_size)) == ("OK", 0)
    assert shared(gmem) == f"0x0-{file_size(page_size):#x}"


def test_unsized_file_is_einval_for_any_range(gmem_dir):
    fd = open_gmem(gmem_dir, "unsized")
    try:
        assert convert(fd, "shared", 0, K4) == ("EINVAL", 0)
        assert convert(fd, "shared", 0, 0) == ("OK", 0)
    finally:
        os.close(fd)


@pytest.mark.parametrize("page_size", [4096, 2 << 20], ids=["4K", "2M"])
def test_to_private_is_eagain_while_a_host_process_holds_a_page_locked(gmem, page_size):
    assert convert(gmem, "shared", 0, file_size(page_size)) == ("OK", 0)
    locked_at = page_size + 3 * K4  # a 4 KiB page in the second page
    ready_read, ready_write = os.pipe()
    release_read, release_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        mapping = mmap.mmap(gmem, K4, mmap.MAP_SHARED, offset=locked_at)
        mapping[0:1] = b"x"
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        address = ctypes.addressof(ctypes.c_char.from_buffer(mapping))
        libc.mlock(ctypes.c_void_p(address), ctypes.c_size_t(K4))
        os.write(ready_write, b"1")
        os.read(release_read, 1)
        os._exit(0)
    try:
        assert os.read(ready_read, 1) == b"1"
        assert convert(gmem, "private", 0, file_size(page_size)) == ("EAGAIN", locked_at)
        assert shared(gmem) == f"0x0-{file_size(page_size):#x}", "nothing converted"
        assert convert(gmem, "private", 0, page_size) == ("OK", 0), "pages before the locked one are free"
    finally:
        os.write(release_write, b"1")
        os.waitpid(pid, 0)
    assert convert(gmem, "private", 0, file_size(page_size)) == ("OK", 0)
    assert shared(gmem) == ""


def test_conversions_are_in_place_and_keep_the_contents(gmem, page_size):
    """RFC v2's conversions selftest without a guest: the host writes 'A', converts to private
    and back, and reads 'A'."""
    assert fallocate_result(gmem, KEEP_SIZE, 0, page_size) == "OK"
    assert convert(gmem, "shared", 0, page_size) == ("OK", 0)
    assert touch(gmem, 0, 8, write=b"A" * 8) == "OK:" + "A" * 8
    assert convert(gmem, "private", 0, page_size) == ("OK", 0)
    assert touch(gmem, 0, 8) == signal.Signals.SIGBUS.name
    assert convert(gmem, "shared", 0, page_size) == ("OK", 0)
    assert touch(gmem, 0, 8) == "OK:" + "A" * 8
    assert os.fstat(gmem).st_blocks * 512 == page_size
