"""The hugetlb restructuring series' rules (hugetlb-2025) and huge pages behind upstream's flags, pure."""

import pytest
from support.syscalls import errno_name

from gmemfs.kernel.rules import (
    GmemError,
    converted_before_refusal,
    file_geometry,
    page_size_for_page_order,
    parse_page_order,
    plan_fallocate,
)
from gmemfs.kernel.uapi import (
    FALLOC_FL_KEEP_SIZE,
    HUGETLB_2025,
    UPSTREAM,
    flags_for_page_size,
    page_order_for_page_size,
)

K4, M2, G1 = 4096, 2 << 20, 1 << 30
SIZES = (M2, G1)
MMAP, INIT_SHARED, HUGETLB = 1, 2, 4


def refused(call, *args):
    with pytest.raises(GmemError) as info:
        call(*args)
    return errno_name(info.value.errno)


@pytest.mark.parametrize(
    "flags, order, expected",
    [
        (HUGETLB | MMAP, 9, M2),
        (HUGETLB, 18, G1),
        (MMAP | INIT_SHARED, 0, K4),
        (1 << 3 | MMAP, 9, "EINVAL"),  # unknown bit first, even with page_order and no HUGETLB
        (MMAP, 9, "EINVAL"),
        (HUGETLB | INIT_SHARED, 0, "EINVAL"),  # INIT_SHARED before the order
        (HUGETLB, 0, "EINVAL"),
        (HUGETLB, 10, "EINVAL"),  # no 4 MiB hstate
        (HUGETLB | 21 << 26, 9, "EINVAL"),  # RFC v1's size field is no part of this ABI
    ],
)
def test_page_size_for_page_order(flags, order, expected):
    if isinstance(expected, str):
        assert refused(page_size_for_page_order, flags, order, HUGETLB_2025, SIZES) == expected
    else:
        assert page_size_for_page_order(flags, order, HUGETLB_2025, SIZES) == expected


def test_a_page_order_is_a_byte():
    assert parse_page_order(b"18") == 18
    assert refused(parse_page_order, b"256") == "EINVAL"


def test_mount_defaults_per_page_size():
    assert (flags_for_page_size(M2, HUGETLB_2025), page_order_for_page_size(M2, HUGETLB_2025)) == (HUGETLB, 9)
    assert (flags_for_page_size(G1, HUGETLB_2025), page_order_for_page_size(G1, HUGETLB_2025)) == (HUGETLB, 18)
    assert (flags_for_page_size(M2, UPSTREAM), page_order_for_page_size(M2, UPSTREAM)) == (0, 0)


def test_huge_fallocate_alignment_of_hugetlb_2025():
    geometry = file_geometry(HUGETLB, 9, HUGETLB_2025, SIZES, M2)
    assert refused(plan_fallocate, FALLOC_FL_KEEP_SIZE, K4, K4, M2, 2 * M2, geometry) == "EINVAL"
    assert plan_fallocate(FALLOC_FL_KEEP_SIZE, 0, M2, M2, 2 * M2, geometry).end == M2


def test_huge_pages_behind_upstream_keep_its_4k_rules_and_round_allocations_out():
    geometry = file_geometry(MMAP | INIT_SHARED, 0, UPSTREAM, SIZES, M2, backing_page_size=M2)
    assert (geometry.page_size, geometry.size_alignment, geometry.fallocate_alignment) == (M2, K4, K4)
    plan = plan_fallocate(FALLOC_FL_KEEP_SIZE, K4, K4, M2, M2 + K4, geometry)
    assert (plan.start, plan.end) == (0, M2)
    assert refused(file_geometry, HUGETLB, 0, UPSTREAM, SIZES, M2, M2) == "EINVAL", "7.2 has no bit 2"


@pytest.mark.parametrize(
    "start, in_use, page_size, converted_to",
    [
        (0, M2 + 2 * K4, M2, M2),  # huge page 0 done
        (K4, K4, M2, K4),  # the first batch refused: nothing
        (K4, 2 * M2, M2, 2 * M2),  # the partial first batch and huge page 1
        (0, 3 * K4, K4, 0),  # a 4 KiB file is one batch
    ],
)
def test_batches_converted_before_a_refusal(start, in_use, page_size, converted_to):
    assert converted_before_refusal(start, in_use, page_size) == converted_to
