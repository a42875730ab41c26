"""Spec section 2 and issues 3 and 19: the flag ABIs, each a table of bits; huge pages behind
upstream's flags; hugetlb-2025's page_order on the filesystem."""

import errno
import mmap
import os

import pytest
from support.commands import assert_one_line_error, run_gmemfs
from support.files import open_gmem
from support.host import touch
from support.pools import wait_for_counters
from support.syscalls import convert, errno_of, set_flags, xattr

from gmemfs import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, create_guest_memfd, fallocate, set_memory_attributes
from gmemfs.base.hugepages import pool_counters
from gmemfs.kernel.uapi import (
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


def test_a_4k_abi_refuses_an_unknown_page_size(tmp_path):
    assert_one_line_error(run_gmemfs("-o", "abi=upstream,pagesize=4M", str(tmp_path)), "pagesize=4M")


@pytest.fixture
def upstream_2m(start_gmemfs, huge_pools):
    """An upstream mount whose files get 2 MiB pages (no kernel has this: the seed's subpool behind 7.2's flags)."""
    return start_gmemfs("-o", "abi=upstream,pagesize=2M").mountpoint


def test_upstream_with_2m_pages_backs_mainline_files_with_huge_pages(upstream_2m):
    """The 7.2 rules stay (flags MMAP | INIT_SHARED, 4 KiB sizes and fallocate ranges); every file
    reserves all its huge pages at creation, rounded up as the seed's HUGETLB with size field 0."""
    before = pool_counters(M2).reserved
    fd = create_guest_memfd(upstream_2m, 2 * M2 + K4, UP_MMAP | UP_INIT_SHARED)
    try:
        assert (os.fstat(fd).st_size, os.fstat(fd).st_blksize) == (2 * M2 + K4, M2)
        assert (xattr(fd, "reserved"), pool_counters(M2).reserved) == ("3", before + 3)
        assert errno_of(fallocate, fd, FALLOC_FL_KEEP_SIZE, K4, K4) == "OK"
        assert xattr(fd, "allocated") == "0x0-0x200000", "the huge page behind [4K, 8K)"
        assert pool_counters(M2).reserved == before + 2
        assert touch(fd, 2 * M2, 4, write=b"tail") == "OK:tail", "the last page, past a huge page boundary"
        assert xattr(fd, "allocated") == "0x0-0x200000,0x400000-0x600000"
        assert errno_of(fallocate, fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, 0, 2 * M2 + K4) == "OK"
        assert xattr(fd, "allocated") == "", "a punch to the size frees the last huge page too"
        assert errno_of(fallocate, fd, FALLOC_FL_KEEP_SIZE, 512, K4) == "EINVAL", "7.2's PAGE_ALIGNED"
    finally:
        os.close(fd)
    assert wait_for_counters(M2, before, pool_counters(M2).free).reserved == before, "released at eviction"


def test_upstream_with_2m_pages_refuses_what_the_pool_cannot_reserve(upstream_2m):
    with pytest.raises(OSError) as refused:
        create_guest_memfd(upstream_2m, 1 << 40, UP_MMAP)
    assert refused.value.errno == errno.ENOMEM


# ---- hugetlb-2025 on the filesystem: page_order is user.gmem.page_order ----------------------------
H25_HUGETLB = 1 << 2


@pytest.mark.parametrize("abi_dir", ["hugetlb-2025"], indirect=True)
def test_hugetlb_2025_page_order_is_an_attribute_checked_at_creation(abi_dir, huge_pools):
    """kvm_gmem_create() checks flags and page_order together: on the mount the size that completes
    creation does, so either attribute may be set first."""
    fd = open_gmem(abi_dir)
    try:
        assert errno_of(os.setxattr, fd, "user.gmem.page_order", b"9") == "OK"
        assert errno_of(os.ftruncate, fd, M2) == "EINVAL", "page_order without HUGETLB"
        assert errno_of(set_flags, fd, 1 << 3) == "EINVAL", "an unknown bit is refused at once"
        assert errno_of(set_flags, fd, H25_HUGETLB | UP_MMAP) == "OK"
        assert errno_of(os.setxattr, fd, "user.gmem.page_order", b"256") == "EINVAL", "a __u8"
        assert "user.gmem.page_order" in os.listxattr(fd)
        os.ftruncate(fd, M2)
        assert (xattr(fd, "page_size"), xattr(fd, "page_order"), xattr(fd, "reserved")) == (str(M2), "9", "1")
        assert errno_of(os.setxattr, fd, "user.gmem.page_order", b"18") == "EINVAL", "fixed once created"
    finally:
        os.close(fd)


def test_hugetlb_2025_mount_default_is_hugetlb_with_page_order(start_gmemfs, huge_pools):
    mountpoint = start_gmemfs("-o", "abi=hugetlb-2025,pagesize=2M").mountpoint
    fd = open_gmem(mountpoint, size=M2)
    try:
        assert (xattr(fd, "flags"), xattr(fd, "page_order"), xattr(fd, "shared")) == ("0x4", "9", "")
    finally:
        os.close(fd)


def test_page_order_exists_only_in_hugetlb_2025(shared_mounts):
    fd = create_guest_memfd(shared_mounts(K4, "upstream").mountpoint, K4)
    try:
        assert "user.gmem.page_order" not in os.listxattr(fd)
        assert errno_of(os.setxattr, fd, "user.gmem.page_order", b"9") == "EOPNOTSUPP"
    finally:
        os.close(fd)


def test_hugetlb_2025_client_and_gmemfs_convert_use_set_memory_attributes2(shared_mounts, huge_pools):
    """gmemfs.set_memory_attributes and `gmemfs convert` speak the file's ABI: ATTRIBUTES2 here."""
    fd = create_guest_memfd(shared_mounts(K4, "hugetlb-2025").mountpoint, 2 * M2, H25_HUGETLB | UP_MMAP, 9)
    try:
        set_memory_attributes(fd, 0, M2, 0)
        assert xattr(fd, "shared") == "0x0-0x200000"
        path = f"/proc/{os.getpid()}/fd/{fd}"  # the file of our fd, for the command
        assert run_gmemfs("convert", path, "private", "-o", "4K", "-l", "4K").returncode == 0
        assert xattr(fd, "shared") == "0x0-0x1000,0x2000-0x200000"
        assert run_gmemfs("convert", path, "shared").returncode == 0, "to the end of the file"
        assert xattr(fd, "shared") == "0x0-0x400000"
    finally:
        os.close(fd)
