"""The series' own code as a reference table: each case cites the patch and function it comes
from, since no kernel here runs hugetlb guest_memfd. Sources (public patches):
RFC v1 (Sept 2024) 14-16/39 virt/kvm/guest_memfd.c; RFC v2 (May 2025) virt/kvm/guest_memfd.c,
mm/guestmem_hugetlb.c, include/uapi/linux/guestmem.h; mainline 6.8 and 6.18 kvm_gmem_create();
in-place conversion v7 (May 2026) 09-13/42 kvm_gmem_set_attributes()."""

import os

import pytest
from support.pools import PAGE_2M
from support.syscalls import KEEP_SIZE, PUNCH, convert, errno_of, fallocate_result, set_attributes2, xattr

from gmemfs import create_guest_memfd

K4 = 4096
V1_HUGE_2M = 1 << 1 | 21 << 26
V2_SUPPORT_SHARED, V2_INIT_PRIVATE, V2_HUGETLB = 1 << 0, 1 << 1, 1 << 2

CREATION = [
    (
        "RFC v1 16/39 kvm_gmem_create: a bit beyond HUGETLB and its size field",
        "rfc-v1",
        V1_HUGE_2M | 1,
        PAGE_2M,
        "EINVAL",
    ),
    ("RFC v1 16/39 kvm_gmem_create: size aligned to 1 << size_log", "rfc-v1", V1_HUGE_2M, PAGE_2M + K4, "EINVAL"),
    ("RFC v1 16/39 kvm_gmem_create: without HUGETLB, PAGE_ALIGNED(size)", "rfc-v1", 0, K4 + 1, "EINVAL"),
    ("RFC v1 16/39 kvm_gmem_create: size <= 0", "rfc-v1", 0, 0, "EINVAL"),
    (
        "RFC v1 14/39 hugepage_new_subpool(h, n, n, false): the pool must hold n",
        "rfc-v1",
        V1_HUGE_2M,
        1 << 40,
        "ENOMEM",
    ),
    ("RFC v1 16/39 kvm_gmem_create: HUGETLB | HUGE_2MB, 2 MiB", "rfc-v1", V1_HUGE_2M, PAGE_2M, "OK"),
    ("RFC v2 kvm_gmem_create: INIT_PRIVATE only with SUPPORT_SHARED", "rfc-v2", V2_INIT_PRIVATE, K4, "EINVAL"),
    ("RFC v2 kvm_gmem_create: size field only with HUGETLB", "rfc-v2", 21 << 58, K4, "EINVAL"),
    ("RFC v2 guestmem.h: GUESTMEM_HUGETLB_FLAG_SHIFT 58", "rfc-v2", V2_HUGETLB | 21 << 58, PAGE_2M, "OK"),
    ("RFC v2 guestmem_hugetlb_setup: !IS_ALIGNED(size, huge_page_size)", "rfc-v2", V2_HUGETLB | 21 << 58, K4, "EINVAL"),
    (
        "RFC v2 guestmem_hugetlb_setup: hstate_sizelog(22): no 4 MiB hstate",
        "rfc-v2",
        V2_HUGETLB | 22 << 58,
        2 * PAGE_2M,
        "EINVAL",
    ),
    ("mainline 6.8 kvm_gmem_create: valid_flags = 0", "linux-6.8", 1 << 0, K4, "EINVAL"),
    ("mainline 6.18 kvm_gmem_create: MMAP | INIT_SHARED", "upstream", 3, K4, "OK"),
    ("mainline 6.18 kvm_gmem_create: any other bit", "upstream", 1 << 2, K4, "EINVAL"),
]


@pytest.mark.parametrize("source, abi, flags, size, expected", CREATION, ids=[case[0] for case in CREATION])
def test_creation(shared_mounts, source, abi, flags, size, expected):
    def create():
        os.close(create_guest_memfd(shared_mounts(K4, abi).mountpoint, size, flags))

    assert errno_of(create) == expected


# (source, mode, offset, length, errno, allocated afterwards) on a 2-page 2 MiB file, page 1 allocated first.
FALLOCATE = [
    ("RFC v1 15/39 kvm_gmem_fallocate: no KEEP_SIZE", 0, 0, PAGE_2M, "EOPNOTSUPP", "0x200000-0x400000"),
    (
        "RFC v1 15/39 kvm_gmem_fallocate: !PAGE_ALIGNED(offset), 4 KiB",
        KEEP_SIZE,
        512,
        K4,
        "EINVAL",
        "0x200000-0x400000",
    ),
    (
        "RFC v1 15/39 kvm_gmem_allocate: offset + len > i_size",
        KEEP_SIZE,
        2 * PAGE_2M - K4,
        2 * K4,
        "EINVAL",
        "0x200000-0x400000",
    ),
    (
        "RFC v1 15/39 kvm_gmem_allocate: round_down both ends: [4K, 8K) is nothing",
        KEEP_SIZE,
        K4,
        K4,
        "OK",
        "0x200000-0x400000",
    ),
    ("RFC v1 15/39 kvm_gmem_allocate: [4K, 2M+4K) allocates huge page 0", KEEP_SIZE, K4, PAGE_2M, "OK", "0x0-0x400000"),
    (
        "RFC v1 15/39 kvm_gmem_hugetlb_truncate_range: partial page zeroed, stays",
        PUNCH,
        PAGE_2M + K4,
        K4,
        "OK",
        "0x200000-0x400000",
    ),
    ("RFC v1 15/39 kvm_gmem_hugetlb_truncate_range: whole pages freed", PUNCH, PAGE_2M - K4, PAGE_2M + K4, "OK", ""),
    (
        "RFC v1 15/39 kvm_gmem_punch_hole: past the size is nothing to do",
        PUNCH,
        2 * PAGE_2M,
        PAGE_2M,
        "OK",
        "0x200000-0x400000",
    ),
]


@pytest.mark.parametrize("source, mode, offset, length, expected, allocated", FALLOCATE, ids=[c[0] for c in FALLOCATE])
def test_fallocate(shared_mounts, source, mode, offset, length, expected, allocated):
    fd = create_guest_memfd(shared_mounts(K4, "rfc-v1").mountpoint, 2 * PAGE_2M, V1_HUGE_2M)
    try:
        assert fallocate_result(fd, KEEP_SIZE, PAGE_2M, PAGE_2M) == "OK"
        assert fallocate_result(fd, mode, offset, length) == expected
        assert xattr(fd, "allocated") == allocated
    finally:
        os.close(fd)


# (source, abi, creation flags, call, expected) on a 4-page file; call(fd) returns the errno name.
CONVERSIONS = [
    (
        "RFC v2 kvm_gmem_ioctl_convert_range: error_offset != 0",
        "rfc-v2",
        V2_SUPPORT_SHARED,
        lambda fd: convert(fd, "shared", 0, K4, error_offset=K4)[0],
        "EINVAL",
    ),
    (
        "RFC v2 kvm_gmem_ioctl_convert_range: size == 0 succeeds",
        "rfc-v2",
        V2_SUPPORT_SHARED,
        lambda fd: convert(fd, "private", 64 * K4, 0)[0],
        "OK",
    ),
    (
        "RFC v2 kvm_gmem_ioctl_convert_range: offset + size > i_size",
        "rfc-v2",
        V2_SUPPORT_SHARED,
        lambda fd: convert(fd, "private", 3 * K4, 2 * K4)[0],
        "EINVAL",
    ),
    (
        "RFC v2 kvm_gmem_ioctl_convert_range: !IS_ALIGNED(offset, PAGE_SIZE)",
        "rfc-v2",
        V2_SUPPORT_SHARED,
        lambda fd: convert(fd, "private", 512, K4)[0],
        "EINVAL",
    ),
    (
        "RFC v2 kvm_gmem_convert_range: no SUPPORT_SHARED, no shareability: no work",
        "rfc-v2",
        0,
        lambda fd: convert(fd, "shared", 0, K4)[0],
        "OK",
    ),
    (
        "v7 09/42 kvm_gmem_set_attributes: flags != 0",
        "inplace-v7",
        1,
        lambda fd: set_attributes2(fd, 0, K4, 8, flags=1)[0],
        "EINVAL",
    ),
    (
        "v7 09/42 kvm_gmem_set_attributes: reserved != 0",
        "inplace-v7",
        1,
        lambda fd: set_attributes2(fd, 0, K4, 8, reserved=(0,) * 10 + (1,))[0],
        "EINVAL",
    ),
    (
        "v7 09/42 kvm_gmem_set_attributes: size == 0",
        "inplace-v7",
        1,
        lambda fd: set_attributes2(fd, 0, 0, 8)[0],
        "EINVAL",
    ),
    (
        "v7 09/42 kvm_gmem_set_attributes: offset >= i_size",
        "inplace-v7",
        1,
        lambda fd: set_attributes2(fd, 4 * K4, K4, 8)[0],
        "EINVAL",
    ),
    (
        "v7 13/42 kvm_gmem_ioctl: RFC v2's ioctls are ENOTTY",
        "inplace-v7",
        1,
        lambda fd: convert(fd, "private", 0, K4)[0],
        "ENOTTY",
    ),
    (
        "mainline 6.18 guest_memfd: no ioctl at all",
        "upstream",
        1,
        lambda fd: convert(fd, "private", 0, K4)[0],
        "ENOTTY",
    ),
]


@pytest.mark.parametrize("source, abi, flags, call, expected", CONVERSIONS, ids=[c[0] for c in CONVERSIONS])
def test_conversion(shared_mounts, source, abi, flags, call, expected):
    fd = create_guest_memfd(shared_mounts(K4, abi).mountpoint, 4 * K4, flags)
    try:
        assert call(fd) == expected
    finally:
        os.close(fd)
