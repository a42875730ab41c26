import struct

import pytest
from support.syscalls import errno_name

from gmemfs.base.ranges import RangeSet, format_ranges, parse_ranges
from gmemfs.commands.status import Segment, segments
from gmemfs.daemon.host_users import locked_in_smaps
from gmemfs.kernel.rules import (
    GmemError,
    check_conversions,
    check_host_access,
    converts_anything,
    page_size_for_flags,
    plan_conversion,
)
from gmemfs.kernel.uapi import (
    INPLACE_V7,
    KVM_GMEM_CONVERT_PRIVATE,
    KVM_GMEM_CONVERT_SHARED,
    KVM_SET_MEMORY_ATTRIBUTES2,
    KVM_SET_MEMORY_ATTRIBUTES2_STRUCT,
    LINUX_6_8,
    RFC_V1,
    RFC_V2,
    UPSTREAM,
    ConversionRequest,
)

K4 = 4096
SIZE = 16 * K4


def refused(call, *args):
    with pytest.raises(GmemError) as info:
        call(*args)
    return errno_name(info.value.errno)


def convert_shared_request(offset, size, error_offset=0):
    data = ConversionRequest(False, offset, size, error_offset, reserved=(0,) * 5).encode(error_offset)
    return ConversionRequest.decode(KVM_GMEM_CONVERT_SHARED, data)


def attributes2_request(offset, size, attributes=0, flags=0, error_offset=0, reserved=(0,) * 11):
    fields = (offset, size, attributes, flags, error_offset, *reserved)
    return ConversionRequest.decode(KVM_SET_MEMORY_ATTRIBUTES2, struct.pack(KVM_SET_MEMORY_ATTRIBUTES2_STRUCT, *fields))


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
def test_plan_conversion_rfc_v2(offset, size, error_offset, expected):
    request = convert_shared_request(offset, size, error_offset)
    if isinstance(expected, str):
        assert refused(plan_conversion, request, SIZE) == expected
    else:
        assert plan_conversion(request, SIZE) == expected


@pytest.mark.parametrize(
    "request_fields, expected",
    [
        ({"offset": 0, "size": K4, "flags": 1}, "EINVAL"),  # v7 has no content modes: flags must be 0
        ({"offset": 0, "size": K4, "flags": 2}, "EINVAL"),
        ({"offset": 0, "size": K4, "reserved": (1,) + (0,) * 10}, "EINVAL"),
        ({"offset": 0, "size": K4, "attributes": 1 << 4}, "EINVAL"),
        ({"offset": 0, "size": 0}, "EINVAL"),  # unlike RFC v2, size 0 is refused
        ({"offset": 1, "size": K4}, "EINVAL"),
        ({"offset": SIZE, "size": K4}, "EINVAL"),
        ({"offset": 0, "size": K4, "error_offset": K4}, (0, K4)),  # error_offset is output only
        ({"offset": K4, "size": K4, "attributes": 8}, (K4, 2 * K4)),
    ],
)
def test_plan_conversion_inplace_v7(request_fields, expected):
    request = attributes2_request(**request_fields)
    if isinstance(expected, str):
        assert refused(plan_conversion, request, SIZE) == expected
    else:
        assert plan_conversion(request, SIZE) == expected


def test_attributes2_codec_round_trips_and_writes_error_offset_back():
    request = attributes2_request(K4, 2 * K4, attributes=8)
    assert request.to_private and (request.offset, request.size) == (K4, 2 * K4)
    answer = struct.unpack(KVM_SET_MEMORY_ATTRIBUTES2_STRUCT, request.encode(error_offset=2 * K4))
    assert answer[:5] == (K4, 2 * K4, 8, 0, 2 * K4)
    assert len(request.encode(0)) == 128 and KVM_SET_MEMORY_ATTRIBUTES2 == 0xC080AED2


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


def test_conversion_ioctls_exist_per_profile():
    check_conversions(RFC_V1, KVM_GMEM_CONVERT_SHARED)
    check_conversions(RFC_V2, KVM_GMEM_CONVERT_PRIVATE)
    check_conversions(INPLACE_V7, KVM_SET_MEMORY_ATTRIBUTES2)
    assert refused(check_conversions, INPLACE_V7, KVM_GMEM_CONVERT_SHARED) == "ENOTTY"
    assert refused(check_conversions, RFC_V2, KVM_SET_MEMORY_ATTRIBUTES2) == "ENOTTY"
    assert refused(check_conversions, UPSTREAM, KVM_GMEM_CONVERT_SHARED) == "ENOTTY"
    assert refused(check_conversions, LINUX_6_8, KVM_SET_MEMORY_ATTRIBUTES2) == "ENOTTY"


def test_rfc_v2_converts_only_files_with_support_shared():
    assert converts_anything(RFC_V1, 0)
    assert converts_anything(INPLACE_V7, 0), "v7 keeps attributes for every file"
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


SMAPS = b"""\
7f0000000000-7f0000002000 rw-s 00001000 00:3a 5                          /mnt/gmem/vm0
Size:                  8 kB
VmFlags: rd wr sh mr mw me ms lo sd
7f0000010000-7f0000011000 rw-s 00000000 00:3a 5                          /mnt/gmem/vm0
Size:                  4 kB
VmFlags: rd wr sh mr mw me ms sd
7f0000020000-7f0000021000 rw-s 00000000 00:3a 6                          /mnt/gmem/other
VmFlags: rd wr sh mr mw me ms lo sd
7f0000030000-7f0000031000 rw-s 00000000 00:05 77                         /tmp/spoof 00:3a 5 x
VmFlags: rd wr sh mr mw me ms lo sd
7f0000040000-7f0000041000 r--s 00000000 00:3a 5                          /mnt/gmem/vm0
VmFlags: rd mr me ms lo sd
"""


def test_only_locked_writable_mappings_of_the_very_inode_are_in_use():
    """Not a path that spells the device and inode, not a read-only mapping (a reader's)."""
    lines = SMAPS.splitlines(keepends=True)
    assert list(locked_in_smaps(lines, (b"00:3a", b"5"))) == [(0x1000, 0x3000)]


def test_the_first_page_in_use_is_the_error_offset():
    from gmemfs.kernel.rules import first_page_in_use

    assert first_page_in_use([(0, K4), (5 * K4 + 100, 9 * K4)], 2 * K4, 8 * K4) == 5 * K4
    assert first_page_in_use([(0, K4)], 2 * K4, 8 * K4) is None
