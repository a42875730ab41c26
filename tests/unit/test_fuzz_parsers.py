"""Fuzz the functions that parse what requests carry: they return a value or refuse with the
kernel's errno (or a readable message), and never raise anything else.

Bounded for CI; GMEMFS_FUZZ_EXAMPLES=100000 runs longer.
"""

import errno
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gmemfs.base.ranges import RangeSet, format_ranges, parse_ranges
from gmemfs.daemon.faults import FaultRule, parse_fault
from gmemfs.daemon.options import MountOptions, OptionError, parse_mount_options
from gmemfs.kernel.rules import (
    FallocatePlan,
    GmemError,
    page_size_for_flags,
    parse_flags_value,
    plan_conversion,
    plan_fallocate,
)
from gmemfs.kernel.uapi import (
    ABI_PROFILES,
    KVM_GMEM_CONVERT_PRIVATE,
    KVM_GMEM_CONVERT_SHARED,
    KVM_SET_MEMORY_ATTRIBUTES2,
    ConversionRequest,
)

FUZZ = settings(
    max_examples=int(os.environ.get("GMEMFS_FUZZ_EXAMPLES", "400")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)
EDGES = st.sampled_from([0, 1, -1, 4095, 4096, 2 << 20, (1 << 63) - 1, 1 << 63, (1 << 64) - 1, 1 << 64, -(1 << 63)])
NUMBERS = st.one_of(EDGES, st.integers(min_value=-(1 << 70), max_value=1 << 70))
SIZES = frozenset({2 << 20, 1 << 30})


@FUZZ
@given(st.one_of(st.binary(max_size=80), st.text(alphabet="0123456789xX", max_size=6000).map(str.encode)))
def test_flags_values(value):
    try:
        assert parse_flags_value(value) >= 0
    except GmemError as error:
        assert error.errno == errno.EINVAL


@FUZZ
@given(NUMBERS, st.sampled_from(sorted(ABI_PROFILES)))
def test_flags(flags, abi):
    try:
        assert page_size_for_flags(flags, ABI_PROFILES[abi], SIZES, 2 << 20) in {4096, *SIZES}
    except GmemError as error:
        assert error.errno == errno.EINVAL


@FUZZ
@given(NUMBERS, NUMBERS, NUMBERS, st.sampled_from([4096, 2 << 20, 1 << 30]), st.integers(0, 1 << 45))
def test_fallocate_requests(mode, offset, length, page_size, pages):
    size = pages // page_size * page_size
    try:
        plan = plan_fallocate(mode, offset, length, page_size, size)
    except GmemError as error:
        assert error.errno in (errno.EINVAL, errno.EOPNOTSUPP)
        return
    assert isinstance(plan, FallocatePlan)
    assert 0 <= plan.start <= plan.end <= size, "a plan never leaves the file"


@FUZZ
@given(
    st.sampled_from([KVM_GMEM_CONVERT_SHARED, KVM_GMEM_CONVERT_PRIVATE, KVM_SET_MEMORY_ATTRIBUTES2]),
    st.binary(min_size=128, max_size=128),
    st.integers(0, 1 << 45),
)
def test_conversion_requests(request_number, data, file_size):
    """Any bytes the caller's struct may hold decode, and plan to a range inside the file or EINVAL."""
    request = ConversionRequest.decode(request_number, data[: request_number >> 16 & 0x3FFF])
    try:
        plan = plan_conversion(request, file_size)
    except GmemError as error:
        assert error.errno == errno.EINVAL
        return
    assert plan is None or 0 <= plan[0] < plan[1] <= file_size


@FUZZ
@given(st.lists(st.text(max_size=40), max_size=4))
def test_mount_options(option_strings):
    try:
        assert isinstance(parse_mount_options(option_strings), MountOptions)
    except OptionError as error:
        assert str(error)


@FUZZ
@given(st.text(max_size=40))
def test_fault_rules(text):
    try:
        assert isinstance(parse_fault(text), FaultRule)
    except ValueError as error:
        assert str(error).startswith("fail=")


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 1 << 50), st.integers(0, 1 << 20)), max_size=30))
def test_range_text_round_trips(runs):
    ranges = RangeSet([(start, start + length) for start, length in runs])
    assert parse_ranges(format_ranges(ranges)) == ranges
