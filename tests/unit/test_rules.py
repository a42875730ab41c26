import stat

import pytest
from support.syscalls import errno_name

from gmemfs.kernel.rules import (
    FallocatePlan,
    GmemError,
    check_creation_size,
    check_flags_change,
    inherited_group,
    page_size_for_flags,
    parse_flags_value,
    plan_fallocate,
)
from gmemfs.kernel.uapi import (
    KVM_GUEST_MEMFD_HUGE_1GB,
    KVM_GUEST_MEMFD_HUGE_2MB,
    KVM_GUEST_MEMFD_HUGE_16GB,
    KVM_GUEST_MEMFD_HUGETLB,
    RFC_V1,
)

MiB, GiB = 1 << 20, 1 << 30
MACHINE_SIZES = frozenset({2 * MiB, GiB})
KEEP, PUNCH = 0x1, 0x3


def page_size(flags):
    return page_size_for_flags(flags, RFC_V1, MACHINE_SIZES, 2 * MiB)


def refused(call, *args):
    with pytest.raises(GmemError) as info:
        call(*args)
    return errno_name(info.value.errno)


def test_seed_uapi_values():
    assert KVM_GUEST_MEMFD_HUGETLB == 0x2
    assert KVM_GUEST_MEMFD_HUGE_2MB == 21 << 26 == 0x54000000
    assert KVM_GUEST_MEMFD_HUGE_1GB == 30 << 26 == 0x78000000


@pytest.mark.parametrize(
    "flags, expected",
    [
        (0, 4096),
        (KVM_GUEST_MEMFD_HUGETLB, 2 * MiB),  # size field 0: the default huge page size
        (KVM_GUEST_MEMFD_HUGETLB | KVM_GUEST_MEMFD_HUGE_2MB, 2 * MiB),
        (KVM_GUEST_MEMFD_HUGETLB | KVM_GUEST_MEMFD_HUGE_1GB, GiB),
    ],
)
def test_valid_flags_select_the_page_size(flags, expected):
    assert page_size(flags) == expected


@pytest.mark.parametrize(
    "flags",
    [
        1 << 0,
        1 << 2,
        1 << 25,
        KVM_GUEST_MEMFD_HUGE_2MB,  # size field without HUGETLB
        KVM_GUEST_MEMFD_HUGETLB | 1 << 0,
        KVM_GUEST_MEMFD_HUGETLB | KVM_GUEST_MEMFD_HUGE_2MB | 1 << 32,
        KVM_GUEST_MEMFD_HUGETLB | KVM_GUEST_MEMFD_HUGE_16GB,  # a size this machine lacks
        -1,
        1 << 64,
    ],
)
def test_invalid_flags_are_einval(flags):
    assert refused(page_size, flags) == "EINVAL"


@pytest.mark.parametrize(
    "text, value", [(b"0", 0), (b"2", 2), (b"010", 10), (b"0x54000002", 0x54000002), (b" 0X2\n", 2), (b"7\x00", 7)]
)
def test_flags_values_in_decimal_or_hex(text, value):
    assert parse_flags_value(text) == value


@pytest.mark.parametrize("text", [b"", b"-1", b"two", b"0b10", b"1_000", b"0x", b"2 2", b"9" * 5000])
def test_malformed_flags_values_are_einval(text):
    assert refused(parse_flags_value, text) == "EINVAL"


def test_flags_are_fixed_once_sized():
    check_flags_change(0)
    assert refused(check_flags_change, 4096) == "EINVAL"


@pytest.mark.parametrize("page", [4096, 2 * MiB, GiB])
@pytest.mark.parametrize("multiple", [-1, 0, 0.5, 1.5])
def test_creation_size_must_be_a_positive_multiple(page, multiple):
    assert refused(check_creation_size, 0, int(page * multiple) or (1 if multiple == 0.5 else 0), page) == "EINVAL"


def test_creation_size_checks():
    check_creation_size(0, 2 * MiB, 2 * MiB)
    assert refused(check_creation_size, 0, 4096, 2 * MiB) == "EINVAL"
    assert refused(check_creation_size, 4 * MiB, 4 * MiB, 2 * MiB) == "EINVAL", "size is fixed, even to itself"


P = 2 * MiB
SIZE = 4 * P


@pytest.mark.parametrize(
    "mode, offset, length, expected",
    [
        (0, 0, P, "EOPNOTSUPP"),  # no KEEP_SIZE
        (0x2, 0, P, "EOPNOTSUPP"),  # PUNCH without KEEP_SIZE
        (0x11, 0, P, "EOPNOTSUPP"),  # ZERO_RANGE
        (0x1 | 0x8, 0, P, "EOPNOTSUPP"),  # COLLAPSE_RANGE
        (0, 1, 1, "EOPNOTSUPP"),  # mode is checked before alignment
        (KEEP, 512, P, "EINVAL"),  # 4 KiB alignment, even in a huge page file
        (KEEP, 0, P + 512, "EINVAL"),
        (PUNCH, 512, P, "EINVAL"),
        (KEEP, SIZE - 4096, 2 * 4096, "EINVAL"),  # the size is checked before rounding down
        (KEEP, SIZE, P, "EINVAL"),  # allocate at the end
        (KEEP, SIZE - P, 2 * P, "EINVAL"),  # across the end
        (KEEP, 10 * SIZE, P, "EINVAL"),  # after the end
        (PUNCH, -P, P, "EINVAL"),  # negative offset (the VFS says so first)
        (KEEP, 0, 0, "EINVAL"),  # empty
    ],
)
def test_fallocate_refusals_in_kernel_order(mode, offset, length, expected):
    assert refused(plan_fallocate, mode, offset, length, P, SIZE) == expected


@pytest.mark.parametrize(
    "mode, offset, length, plan",
    [
        (KEEP, 0, SIZE, FallocatePlan(False, 0, SIZE)),
        (KEEP, P, P, FallocatePlan(False, P, 2 * P)),
        (PUNCH, P, P, FallocatePlan(True, P, 2 * P)),
        (PUNCH, SIZE - P, 4 * P, FallocatePlan(True, SIZE - P, SIZE)),  # across the end: clipped
        (PUNCH, SIZE, P, FallocatePlan(True, SIZE, SIZE)),  # at the end: nothing to do
        (KEEP, 4096, 4096, FallocatePlan(False, 0, 0)),  # inside one huge page: nothing (rounded down)
        (KEEP, 4096, P, FallocatePlan(False, 0, P)),  # [4K, 2M+4K): page 0
        (PUNCH, 4096, 4096, FallocatePlan(True, 4096, 2 * 4096)),  # the bytes: zeroed, page kept
        (PUNCH, 8 * SIZE, P, FallocatePlan(True, SIZE, SIZE)),
    ],
)
def test_fallocate_plans(mode, offset, length, plan):
    assert plan_fallocate(mode, offset, length, P, SIZE) == plan


@pytest.mark.parametrize("mode", [KEEP, PUNCH])
def test_fallocate_on_unsized_file_is_einval(mode):
    assert refused(plan_fallocate, mode, 0, P, P, 0) == "EINVAL"


def test_a_set_group_id_directory_gives_new_inodes_its_group_and_new_directories_its_bit():
    plain, shared = stat.S_IFDIR | 0o755, stat.S_IFDIR | 0o2775
    assert inherited_group(stat.S_IFREG | 0o600, plain, 100, 5) == (5, stat.S_IFREG | 0o600)
    assert inherited_group(stat.S_IFREG | 0o600, shared, 100, 5) == (100, stat.S_IFREG | 0o600)
    assert inherited_group(stat.S_IFDIR | 0o700, shared, 100, 5) == (100, stat.S_IFDIR | 0o2700)
    assert inherited_group(stat.S_IFDIR | 0o700, plain, 100, 5) == (5, stat.S_IFDIR | 0o700)
