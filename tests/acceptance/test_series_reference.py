"""The series' own code as a reference table: each case cites the patch and function it comes
from, since no kernel here runs hugetlb guest_memfd. Sources (public patches):
RFC v1 (Sept 2024) 14-16/39 virt/kvm/guest_memfd.c; RFC v2 (May 2025) virt/kvm/guest_memfd.c,
mm/guestmem_hugetlb.c, include/uapi/linux/guestmem.h; mainline 6.8 and 6.18 kvm_gmem_create();
in-place conversion v7 (May 2026) 09-13/42 kvm_gmem_set_attributes(); the hugetlb restructuring
series (linux-cc wip-gmem-conversions-hugetlb-restructuring-12-08-25, Dec 2025) virt/kvm/guest_memfd.c
and guest_memfd_hugetlb.c, its rows in its code's order (`hugetlb-2025`)."""

import ctypes
import mmap
import os

import pytest
from support.host import touch
from support.pools import PAGE_1G, PAGE_2M
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


# ---- the hugetlb restructuring series (Dec 2025): -o abi=hugetlb-2025 -----------------------------
# Its uapi (AMDESE/linux-kvm 07fb82367304 include/uapi/linux/kvm.h): MMAP 1 << 0, INIT_SHARED 1 << 1,
# HUGETLB 1 << 2, and kvm_create_guest_memfd's __u8 page_order (user.gmem.page_order on the mount).
MMAP, INIT_SHARED, HUGETLB = 1 << 0, 1 << 1, 1 << 2
PRIVATE = 1 << 3
M2 = PAGE_2M

# (source, flags, page_order, size, expected), in kvm_gmem_create()'s order.
H25_CREATION = [
    ("hugetlb-2025 kvm_gmem_create: flags & ~kvm_gmem_get_supported_flags()", 1 << 3, 0, M2, "EINVAL"),
    ("hugetlb-2025 kvm_gmem_create: page_order without HUGETLB", MMAP, 9, M2, "EINVAL"),
    ("hugetlb-2025 kvm_gmem_create: HUGETLB with INIT_SHARED", HUGETLB | MMAP | INIT_SHARED, 9, M2, "EINVAL"),
    (
        "hugetlb-2025 kvm_gmem_create: HUGETLB | INIT_SHARED, before the pool",
        HUGETLB | INIT_SHARED,
        9,
        1 << 40,
        "EINVAL",
    ),
    ("hugetlb-2025 gmem_hugetlb_valid_order: order 0", HUGETLB, 0, M2, "EINVAL"),
    ("hugetlb-2025 gmem_hugetlb_valid_order: no hstate of order 10 (4 MiB)", HUGETLB, 10, 2 * M2, "EINVAL"),
    ("hugetlb-2025 kvm_gmem_create: size not aligned to PAGE_SIZE << page_order", HUGETLB, 9, M2 + K4, "EINVAL"),
    ("hugetlb-2025 kvm_gmem_create: size <= 0", HUGETLB, 9, 0, "EINVAL"),
    ("hugetlb-2025 gmem_hugetlb_setup: hugepage_new_subpool(h, n, n) needs n pages", HUGETLB, 9, 1 << 40, "ENOMEM"),
    ("hugetlb-2025 kvm_gmem_create: HUGETLB | MMAP, order 9 (2 MiB)", HUGETLB | MMAP, 9, 2 * M2, "OK"),
    ("hugetlb-2025 kvm_gmem_create: HUGETLB, order 18 (1 GiB)", HUGETLB, 18, PAGE_1G, "OK"),
    ("hugetlb-2025 kvm_gmem_create: MMAP | INIT_SHARED, order 0 (4 KiB)", MMAP | INIT_SHARED, 0, K4, "OK"),
]


@pytest.fixture
def h25_mount(shared_mounts):
    return shared_mounts(K4, "hugetlb-2025").mountpoint


@pytest.mark.parametrize("source, flags, page_order, size, expected", H25_CREATION, ids=[c[0] for c in H25_CREATION])
def test_hugetlb_2025_creation(h25_mount, source, flags, page_order, size, expected):
    def create():
        os.close(create_guest_memfd(h25_mount, size, flags, page_order))

    assert errno_of(create) == expected


@pytest.fixture
def h25_file(h25_mount):
    """A 2-page HUGETLB | MMAP file of 2 MiB pages (page_order 9)."""
    fd = create_guest_memfd(h25_mount, 2 * M2, HUGETLB | MMAP, 9)
    yield fd
    os.close(fd)


def test_hugetlb_2025_a_new_hugetlb_file(h25_file):
    """kvm_gmem_init_inode(): all private (no INIT_SHARED); gmem_hugetlb_init(): i_blkbits is the
    huge page's; gmem_hugetlb_setup(): the subpool reserves every page at creation."""
    assert xattr(h25_file, "shared") == ""
    assert os.fstat(h25_file).st_blksize == M2
    assert (xattr(h25_file, "reserved"), xattr(h25_file, "page_order"), xattr(h25_file, "flags")) == ("2", "9", "0x5")
    assert touch(h25_file, 0, 4) == "SIGBUS", "kvm_gmem_fault_user_mapping(): a private page"


# (source, mode, offset, length, errno, allocated afterwards) on the 2-page file, page 1 allocated first.
H25_FALLOCATE = [
    ("hugetlb-2025 kvm_gmem_fallocate: no KEEP_SIZE", 0, 0, M2, "EOPNOTSUPP", "0x200000-0x400000"),
    ("hugetlb-2025 kvm_gmem_fallocate: !IS_ALIGNED(offset, PAGE_SIZE << order)", KEEP_SIZE, K4, K4, "EINVAL",
     "0x200000-0x400000"),
    ("hugetlb-2025 kvm_gmem_fallocate: !IS_ALIGNED(len, PAGE_SIZE << order)", KEEP_SIZE, 0, M2 + K4, "EINVAL",
     "0x200000-0x400000"),
    ("hugetlb-2025 kvm_gmem_fallocate: a punch aligned to 4 KiB only", PUNCH, M2 + K4, K4, "EINVAL",
     "0x200000-0x400000"),
    ("hugetlb-2025 kvm_gmem_allocate: offset + len > i_size", KEEP_SIZE, M2, 2 * M2, "EINVAL", "0x200000-0x400000"),
    ("hugetlb-2025 kvm_gmem_allocate: huge page 0", KEEP_SIZE, 0, M2, "OK", "0x0-0x400000"),
    ("hugetlb-2025 kvm_gmem_punch_hole: a whole huge page", PUNCH, M2, M2, "OK", ""),
    ("hugetlb-2025 kvm_gmem_punch_hole: at i_size, nothing to do", PUNCH, 2 * M2, M2, "OK", "0x200000-0x400000"),
]  # fmt: skip


@pytest.mark.parametrize(
    "source, mode, offset, length, expected, allocated", H25_FALLOCATE, ids=[c[0] for c in H25_FALLOCATE]
)
def test_hugetlb_2025_fallocate(h25_file, source, mode, offset, length, expected, allocated):
    assert fallocate_result(h25_file, KEEP_SIZE, M2, M2) == "OK"
    assert fallocate_result(h25_file, mode, offset, length) == expected
    assert xattr(h25_file, "allocated") == allocated


# (source, call, expected, shared afterwards) on the 2-page file (all private).
H25_CONVERSIONS = [
    ("hugetlb-2025 kvm_gmem_set_attributes: flags != 0", lambda fd: set_attributes2(fd, 0, K4, 0, flags=1)[0],
     "EINVAL", ""),
    ("hugetlb-2025 kvm_gmem_set_attributes: reserved words are not checked",
     lambda fd: set_attributes2(fd, 0, K4, 0, reserved=(1,) * 11)[0], "OK", "0x0-0x1000"),
    ("hugetlb-2025 kvm_gmem_set_attributes: attributes & ~kvm_supported_mem_attributes()",
     lambda fd: set_attributes2(fd, 0, K4, 1 << 4)[0], "EINVAL", ""),
    ("hugetlb-2025 kvm_gmem_set_attributes: size == 0", lambda fd: set_attributes2(fd, 0, 0, 0)[0], "EINVAL", ""),
    ("hugetlb-2025 kvm_gmem_set_attributes: !PAGE_ALIGNED(offset)", lambda fd: set_attributes2(fd, 512, K4, 0)[0],
     "EINVAL", ""),
    ("hugetlb-2025 kvm_gmem_set_attributes: offset >= i_size",
     lambda fd: set_attributes2(fd, 2 * M2, K4, 0)[0], "EINVAL", ""),
    ("hugetlb-2025 kvm_gmem_set_attributes: 4 KiB inside a huge page (restructured to 4 KiB folios)",
     lambda fd: set_attributes2(fd, M2 + K4, K4, 0)[0], "OK", "0x201000-0x202000"),
    ("hugetlb-2025 __kvm_gmem_set_attributes: already private, nothing to do",
     lambda fd: set_attributes2(fd, 0, 2 * M2, PRIVATE)[0], "OK", ""),
    ("hugetlb-2025 kvm_gmem_ioctl: RFC v2's conversion ioctls are ENOTTY", lambda fd: convert(fd, "shared", 0, K4)[0],
     "ENOTTY", ""),
]  # fmt: skip


@pytest.mark.parametrize("source, call, expected, shared", H25_CONVERSIONS, ids=[c[0] for c in H25_CONVERSIONS])
def test_hugetlb_2025_conversion(h25_file, source, call, expected, shared):
    assert call(h25_file) == expected
    assert xattr(h25_file, "shared") == shared


class Mlocked:
    """A page of fd mapped and mlock()ed: what gmemfs sees as 'in use by the host'."""

    def __init__(self, fd: int, size: int, offset: int) -> None:
        self.mapping = mmap.mmap(fd, size, mmap.MAP_SHARED)
        self.mapping[offset] = 1
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.address = ctypes.c_void_p(ctypes.addressof(ctypes.c_char.from_buffer(self.mapping, offset)))
        assert self.libc.mlock(self.address, ctypes.c_size_t(K4)) == 0

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.libc.munlock(self.address, ctypes.c_size_t(K4))
        del self.address
        self.mapping.close()


def test_hugetlb_2025_kvm_gmem_convert_eagain_keeps_the_batches_before(h25_file):
    """__kvm_gmem_set_attributes() converts one huge page at a time; kvm_gmem_convert() refuses the
    batch whose page has unexpected references (EAGAIN, error_offset = that folio's head, a 4 KiB
    page once shared), and the huge pages before it stay converted: no rollback."""
    assert set_attributes2(h25_file, 0, 2 * M2, 0) == ("OK", 0)
    with Mlocked(h25_file, 2 * M2, M2 + 2 * K4):
        assert set_attributes2(h25_file, 0, 2 * M2, PRIVATE) == ("EAGAIN", M2 + 2 * K4)
        assert xattr(h25_file, "shared") == "0x200000-0x400000", "huge page 0 was converted"
    assert set_attributes2(h25_file, 0, 2 * M2, PRIVATE) == ("OK", 0)


def test_hugetlb_2025_a_4k_file_is_one_batch(h25_mount):
    """page_order 0: batch_size = i_size, so a refusal converts nothing."""
    fd = create_guest_memfd(h25_mount, 4 * K4, MMAP | INIT_SHARED)
    try:
        with Mlocked(fd, 4 * K4, 2 * K4):
            assert set_attributes2(fd, 0, 4 * K4, PRIVATE) == ("EAGAIN", 2 * K4)
            assert xattr(fd, "shared") == "0x0-0x4000"
    finally:
        os.close(fd)


def test_hugetlb_2025_merge_truncate_range_punch_is_eagain_while_the_host_holds_a_page(h25_file):
    """kvm_gmem_punch_hole() -> merge_truncate_range(require_merge): unsafe references are EAGAIN
    and nothing is truncated."""
    assert fallocate_result(h25_file, KEEP_SIZE, 0, 2 * M2) == "OK"
    assert set_attributes2(h25_file, 0, M2, 0) == ("OK", 0)
    with Mlocked(h25_file, M2, K4):
        assert fallocate_result(h25_file, PUNCH, 0, M2) == "EAGAIN"
        assert xattr(h25_file, "allocated") == "0x0-0x400000"
        assert fallocate_result(h25_file, PUNCH, M2, M2) == "OK", "the other huge page is not held"
    assert fallocate_result(h25_file, PUNCH, 0, M2) == "OK"
    assert xattr(h25_file, "allocated") == ""
