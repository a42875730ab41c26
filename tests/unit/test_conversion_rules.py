import io

import pytest
from support.syscalls import errno_name

from gmemfs.host_mappings import _locked_in_smaps
from gmemfs.ranges import RangeSet, format_ranges, parse_ranges
from gmemfs.rules import (
    GmemError,
    check_conversions,
    check_host_access,
    converts_anything,
    page_size_for_flags,
    plan_conversion,
)
from gmemfs.status import Segment, segments
from gmemfs.uapi import LINUX_6_8, RFC_V1, RFC_V2, UPSTREAM

K4 = 4096
SIZE = 16 * K4


def refused(call, *args):
    with pytest.raises(GmemError) as info:
        call(*args)
    return errno_name(info.value.errno)


@pytest.mark.parametrize(
    "offset, size, error_offset, expected",
    [
        (0, K4, K4, "EINVAL"),  # error_offset is checked first
        (SIZE * 8, 0, K4, "EINVAL"),
        ((1 << 64) - K4, 2 * K4, 0, "EINVAL"),
        (0, SIZE + K4, 0, "EINVAL"),
        (1, K4, 0, "EINVAL"),
        (0, K4 + 1, 0, "EINVAL"),
        (SIZE + 1, 0, 0, None),  # size 0: nothing to do, even out of range
        (K4, 2 * K4, 0, (K4, 3 * K4)),
    ],
)
def test_plan_conversion(offset, size, error_offset, expected):
    if isinstance(expected, str):
        assert refused(plan_conversion, offset, size, error_offset, SIZE) == expected
    else:
        assert plan_conversion(offset, size, error_offset, SIZE) == expected


def test_profiles_say_who_starts_shared_and_who_may_mmap():
    assert [RFC_V1.starts_shared(0), RFC_V1.mmap_allowed(0)] == [False, True]
    assert [RFC_V2.starts_shared(0), RFC_V2.mmap_allowed(0)] == [False, False]
    assert [RFC_V2.starts_shared(1), RFC_V2.starts_shared(3), RFC_V2.mmap_allowed(1)] == [True, False, True]
    assert [UPSTREAM.starts_shared(2), UPSTREAM.mmap_allowed(2), UPSTREAM.mmap_allowed(1)] == [True, False, True]


def test_profile_flag_rules():
    sizes, default = frozenset({2 << 20}), 2 << 20
    assert page_size_for_flags(1 << 2 | 21 << 58, RFC_V2, sizes, default) == 2 << 20
    assert refused(page_size_for_flags, 1 << 2 | 21 << 26, RFC_V2, sizes, default) == "EINVAL", "RFC v1's field"
    assert refused(page_size_for_flags, 1 << 1, RFC_V2, sizes, default) == "EINVAL"
    assert refused(page_size_for_flags, 1 << 2, UPSTREAM, sizes, default) == "EINVAL"
    assert page_size_for_flags(3, UPSTREAM, sizes, default) == K4


def test_conversions_exist_per_profile():
    check_conversions(RFC_V1)
    check_conversions(RFC_V2)
    assert refused(check_conversions, UPSTREAM) == "ENOTTY"
    assert refused(check_conversions, LINUX_6_8) == "ENOTTY"


def test_rfc_v2_converts_only_files_with_support_shared():
    assert converts_anything(RFC_V1, 0)
    assert not converts_anything(RFC_V2, 0)
    assert converts_anything(RFC_V2, 1)


def test_host_access_names_the_first_private_page():
    shared = RangeSet([(0, K4), (2 * K4, 4 * K4)])
    check_host_access(shared, 2 * K4, 3 * K4, "read")
    with pytest.raises(GmemError, match="private page 0x1000"):
        check_host_access(shared, 0, 3 * K4, "read")


def test_ranges_round_trip_through_text():
    ranges = RangeSet([(0, 0x200000), (0x600000, 0x800000)])
    assert format_ranges(ranges) == "0x0-0x200000,0x600000-0x800000"
    assert parse_ranges(format_ranges(ranges)) == ranges
    assert parse_ranges("") == RangeSet()


def test_segments_split_where_allocation_or_sharing_changes():
    allocated = RangeSet([(0, 4 * K4)])
    shared = RangeSet([(2 * K4, 6 * K4)])
    assert segments(8 * K4, allocated, shared) == [
        Segment(0, 2 * K4, True, False),
        Segment(2 * K4, 4 * K4, True, True),
        Segment(4 * K4, 6 * K4, False, True),
        Segment(6 * K4, 8 * K4, False, False),
    ]
    assert segments(4 * K4, RangeSet(), RangeSet()) == [Segment(0, 4 * K4, False, False)]


SMAPS = """\
7f0000000000-7f0000002000 rw-s 00001000 00:3a 5                          /mnt/gmem/vm0
Size:                  8 kB
VmFlags: rd wr sh mr mw me ms lo sd
7f0000010000-7f0000011000 rw-s 00000000 00:3a 5                          /mnt/gmem/vm0
Size:                  4 kB
VmFlags: rd wr sh mr mw me ms sd
7f0000020000-7f0000021000 rw-s 00000000 00:3a 6                          /mnt/gmem/other
VmFlags: rd wr sh mr mw me ms lo sd
"""


def test_locked_mappings_are_found_in_smaps():
    assert list(_locked_in_smaps(io.StringIO(SMAPS), " 00:3a 5 ")) == [(0x1000, 0x3000)]
