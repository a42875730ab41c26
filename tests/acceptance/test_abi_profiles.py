"""Spec section 2 and issue 3: the rfc-v1, rfc-v2 and upstream flag ABIs, each a table of bits."""

import mmap
import os

import pytest
from support.commands import assert_one_line_error, run_gmemfs
from support.files import open_gmem
from support.host import touch
from support.syscalls import convert, errno_of, set_flags, xattr

from gmemfs import create_guest_memfd
from gmemfs.uapi import (
    GUEST_MEMFD_FLAG_HUGETLB_V2,
    GUEST_MEMFD_FLAG_INIT_PRIVATE,
    GUEST_MEMFD_FLAG_INIT_SHARED,
    GUEST_MEMFD_FLAG_MMAP,
    GUEST_MEMFD_FLAG_SUPPORT_SHARED,
    GUESTMEM_HUGETLB_FLAG_2MB,
    KVM_GUEST_MEMFD_HUGE_2MB,
    KVM_GUEST_MEMFD_HUGETLB,
)

K4, M2 = 4096, 2 << 20
V2_SUPPORT_SHARED, V2_INIT_PRIVATE = GUEST_MEMFD_FLAG_SUPPORT_SHARED, GUEST_MEMFD_FLAG_INIT_PRIVATE
V2_HUGETLB, V2_HUGE_2MB = GUEST_MEMFD_FLAG_HUGETLB_V2, GUESTMEM_HUGETLB_FLAG_2MB
UP_MMAP, UP_INIT_SHARED = GUEST_MEMFD_FLAG_MMAP, GUEST_MEMFD_FLAG_INIT_SHARED
HUGE_2MB = KVM_GUEST_MEMFD_HUGE_2MB  # RFC v1's size field


@pytest.fixture
def abi_dir(shared_mounts, request):
    """A directory on a 4 KiB mount of the ABI named by the test's `abi` parameter."""
    directory = shared_mounts(K4, request.param).mountpoint / f"t-{os.getpid()}-{request.node.name[-20:]}"
    directory.mkdir()
    yield directory
    for name in os.listdir(directory):
        os.unlink(directory / name)
    directory.rmdir()


# (abi, flags, errno of setting them, page size, starts shared, mmap allowed)
TABLE = [
    ("rfc-v1", 0, "OK", K4, False, True),
    ("rfc-v1", KVM_GUEST_MEMFD_HUGETLB | HUGE_2MB, "OK", M2, False, True),
    ("rfc-v1", 1 << 0, "EINVAL", None, None, None),
    ("rfc-v1", 1 << 2, "EINVAL", None, None, None),
    ("rfc-v2", 0, "OK", K4, False, False),
    ("rfc-v2", V2_SUPPORT_SHARED, "OK", K4, True, True),
    ("rfc-v2", V2_SUPPORT_SHARED | V2_INIT_PRIVATE, "OK", K4, False, True),
    ("rfc-v2", V2_INIT_PRIVATE, "EINVAL", None, None, None),  # INIT_PRIVATE needs SUPPORT_SHARED
    ("rfc-v2", V2_HUGETLB | V2_HUGE_2MB | V2_SUPPORT_SHARED, "OK", M2, True, True),
    ("rfc-v2", V2_HUGETLB | HUGE_2MB | V2_SUPPORT_SHARED, "EINVAL", None, None, None),  # RFC v1's field
    ("rfc-v2", 1 << 1 | HUGE_2MB, "EINVAL", None, None, None),  # the seed's HUGETLB bit is INIT_PRIVATE here
    ("rfc-v2", 1 << 3, "EINVAL", None, None, None),
    ("upstream", 0, "OK", K4, False, False),
    ("upstream", UP_MMAP, "OK", K4, False, True),
    ("upstream", UP_INIT_SHARED, "OK", K4, True, False),
    ("upstream", UP_MMAP | UP_INIT_SHARED, "OK", K4, True, True),
    ("upstream", 1 << 2, "EINVAL", None, None, None),
    ("upstream", 1 << 2 | HUGE_2MB, "EINVAL", None, None, None),  # no hugetlb in mainline
]


@pytest.mark.parametrize(
    "abi_dir, flags, expected, page_size, starts_shared, mmap_allowed",
    [row for row in TABLE],
    ids=[f"{row[0]}-{row[1]:#x}" for row in TABLE],
    indirect=["abi_dir"],
)
def test_flag_table(abi_dir, huge_pools, flags, expected, page_size, starts_shared, mmap_allowed):
    fd = open_gmem(abi_dir)
    try:
        assert errno_of(set_flags, fd, flags) == expected
        if expected != "OK":
            return
        os.ftruncate(fd, page_size)
        assert int(xattr(fd, "page_size")) == page_size
        assert xattr(fd, "shared") == (f"0x0-{page_size:#x}" if starts_shared else "")
    finally:
        os.close(fd)
    reopened = os.open(abi_dir / "gmem", os.O_RDWR)  # the kernel learns mmap support at open
    try:
        result = errno_of(lambda: mmap.mmap(reopened, K4, mmap.MAP_SHARED).close())
        assert result == ("OK" if mmap_allowed else "ENODEV")
        if mmap_allowed:
            assert touch(reopened, 0, 4) == ("OK:\0\0\0\0" if starts_shared else "SIGBUS")
    finally:
        os.close(reopened)


@pytest.mark.parametrize("abi_dir", ["upstream"], indirect=True)
def test_upstream_has_no_conversion_ioctls(abi_dir):
    fd = create_guest_memfd(abi_dir, 2 * K4, UP_MMAP)
    try:
        assert convert(fd, "shared", 0, K4) == ("ENOTTY", 0)
    finally:
        os.close(fd)


@pytest.mark.parametrize("abi_dir", ["rfc-v2"], indirect=True)
def test_rfc_v2_conversions_without_support_shared_do_nothing(abi_dir):
    """RFC v2 keeps no shareability for such files: kvm_gmem_convert_range() finds no work, returns 0."""
    fd = create_guest_memfd(abi_dir, 2 * K4, 0)
    try:
        assert convert(fd, "shared", 0, K4) == ("OK", 0)
        assert xattr(fd, "shared") == ""
        assert convert(fd, "shared", K4, 4 * K4) == ("EINVAL", 0), "the arguments are still checked first"
        assert convert(fd, "private", 0, K4, error_offset=K4) == ("EINVAL", K4)
    finally:
        os.close(fd)
    fd = create_guest_memfd(abi_dir, 2 * K4, V2_SUPPORT_SHARED | V2_INIT_PRIVATE)
    try:
        assert convert(fd, "shared", 0, K4) == ("OK", 0)
        assert touch(fd, 0, 4, write=b"v2ok") == "OK:v2ok"
    finally:
        os.close(fd)


def test_upstream_mount_refuses_huge_pages(tmp_path):
    result = run_gmemfs("-o", "abi=upstream,pagesize=2M", str(tmp_path))
    assert_one_line_error(result, "the upstream ABI has no hugetlb pages")
