"""The in-place conversion series v7 (May 2026), from its own code: KVM_SET_MEMORY_ATTRIBUTES2
on the guest_memfd fd ([PATCH v7 09,10,12,13/42], kvm_gmem_set_attributes)."""

import ctypes
import mmap
import os

import pytest
from support.host import touch
from support.syscalls import convert, set_attributes2, xattr

from gmemfs import create_guest_memfd
from gmemfs.kernel.uapi import (
    GUEST_MEMFD_FLAG_INIT_SHARED,
    GUEST_MEMFD_FLAG_MMAP,
    KVM_MEMORY_ATTRIBUTE_PRIVATE,
)

K4 = 4096
PRIVATE = KVM_MEMORY_ATTRIBUTE_PRIVATE
MAPPABLE = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED


@pytest.fixture
def v7(shared_mounts):
    """An anonymous 4-page v7 file, mappable and starting shared."""
    fd = create_guest_memfd(shared_mounts(K4, "inplace-v7").mountpoint, 4 * K4, MAPPABLE)
    yield fd
    os.close(fd)


@pytest.mark.parametrize(
    "offset, size, attributes, flags, reserved, expected",
    [
        (0, K4, PRIVATE, 1, (0,) * 11, "EINVAL"),  # flags must be 0: v7 has no content modes
        (0, K4, PRIVATE, 0, (1,) + (0,) * 10, "EINVAL"),  # reserved
        (0, K4, 1 << 4, 0, (0,) * 11, "EINVAL"),  # only PRIVATE
        (0, 0, PRIVATE, 0, (0,) * 11, "EINVAL"),  # size 0
        (K4 // 2, K4, PRIVATE, 0, (0,) * 11, "EINVAL"),
        (4 * K4, K4, PRIVATE, 0, (0,) * 11, "EINVAL"),  # offset >= i_size
        (3 * K4, 2 * K4, PRIVATE, 0, (0,) * 11, "EINVAL"),
        (0, 4 * K4, PRIVATE, 0, (0,) * 11, "OK"),
    ],
)
def test_set_memory_attributes2_checks(v7, offset, size, attributes, flags, reserved, expected):
    assert set_attributes2(v7, offset, size, attributes, flags, reserved=reserved)[0] == expected


def test_error_offset_is_output_only(v7):
    assert set_attributes2(v7, 0, K4, PRIVATE, error_offset=K4) == ("OK", K4)


def test_conversions_keep_contents_and_private_pages_sigbus(v7):
    assert touch(v7, K4, 4, write=b"A" * 4) == "OK:AAAA"
    assert set_attributes2(v7, K4, K4, PRIVATE) == ("OK", 0)
    assert touch(v7, K4, 4) == "SIGBUS"
    assert xattr(v7, "shared") == f"0x0-{K4:#x},{2 * K4:#x}-{4 * K4:#x}"
    assert set_attributes2(v7, K4, K4, 0) == ("OK", 0)
    assert touch(v7, K4, 4) == "OK:AAAA"


def test_eagain_names_the_page_in_use(v7):
    with mmap.mmap(v7, 4 * K4, mmap.MAP_SHARED) as mapping:
        mapping[2 * K4] = 1
        libc = ctypes.CDLL(None, use_errno=True)
        address = ctypes.addressof(ctypes.c_char.from_buffer(mapping, 2 * K4))
        assert libc.mlock(ctypes.c_void_p(address), ctypes.c_size_t(K4)) == 0
        try:
            assert set_attributes2(v7, 0, 4 * K4, PRIVATE) == ("EAGAIN", 2 * K4)
            assert xattr(v7, "shared") == f"0x0-{4 * K4:#x}", "nothing converted"
        finally:
            libc.munlock(ctypes.c_void_p(address), ctypes.c_size_t(K4))
        del address


def test_rfc_v2_conversion_ioctls_do_not_exist(v7):
    assert convert(v7, "private", 0, K4)[0] == "ENOTTY"


def test_files_without_init_shared_start_private_and_convert(shared_mounts):
    fd = create_guest_memfd(shared_mounts(K4, "inplace-v7").mountpoint, 2 * K4, GUEST_MEMFD_FLAG_MMAP)
    try:
        assert xattr(fd, "shared") == ""
        assert set_attributes2(fd, 0, K4, 0) == ("OK", 0)
        assert touch(fd, 0, 4, write=b"v7ok") == "OK:v7ok"
    finally:
        os.close(fd)
