"""Range lists in pages that one xattr value can carry (the VFS caps a value at 64 KiB)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gmemfs.base.ranges import RangeSet
from gmemfs.kernel.inspection import paged_name, parse_attribute_name, parse_range_page, range_page
from gmemfs.kernel.uapi import XATTR_SIZE_MAX


def alternate_pages(count: int, page: int = 4096) -> RangeSet:
    return RangeSet([(2 * i * page, (2 * i + 1) * page) for i in range(count)])


def read_all(ranges: RangeSet, limit: int = XATTR_SIZE_MAX) -> "tuple[RangeSet, list[bytes]]":
    """Follow the pages as a reader does: every page, and the runs they add up to."""
    pages, found, offset = [], RangeSet(), 0
    while offset is not None:
        pages.append(range_page(ranges, offset, limit))
        runs, rest = parse_range_page(pages[-1].decode())
        for run in runs:
            found.add(*run)
        assert rest is None or rest > offset
        offset = rest
    return found, pages


def test_a_list_that_fits_is_one_value_as_before():
    assert range_page(RangeSet([(0, 0x200000), (0x600000, 0x800000)])) == b"0x0-0x200000,0x600000-0x800000"
    assert range_page(RangeSet()) == b""


def test_a_long_list_is_paged_within_the_vfs_cap():
    ranges = alternate_pages(20_000)
    found, pages = read_all(ranges)
    assert found == ranges
    assert len(pages) > 1 and all(len(page) <= XATTR_SIZE_MAX for page in pages)
    first_runs, rest = parse_range_page(pages[0].decode())
    assert pages[0].endswith(f",more@{rest:#x}".encode()) and rest == 2 * len(first_runs) * 4096


def test_a_page_starts_at_any_offset_and_clips_the_run_across_it():
    ranges = RangeSet([(0, 0x4000), (0x8000, 0xA000)])
    assert range_page(ranges, 0x2000) == b"0x2000-0x4000,0x8000-0xa000"
    assert range_page(ranges, 0xA000) == b""


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.tuples(st.integers(0, 1 << 40), st.integers(1, 1 << 20))), st.integers(60, 400))
def test_the_pages_add_up_to_the_list_whatever_the_limit(runs, limit):
    ranges = RangeSet([(start, start + length) for start, length in runs])
    found, pages = read_all(ranges, limit)
    assert found == ranges and all(len(page) <= limit for page in pages)


def test_names_getxattr_answers():
    assert parse_attribute_name(b"user.gmem.flags") == (b"user.gmem.flags", 0)
    assert parse_attribute_name(b"user.gmem.shared@0x200000") == (b"user.gmem.shared", 0x200000)
    assert paged_name(b"user.gmem.allocated", 0x200000) == b"user.gmem.allocated@0x200000"
    assert paged_name(b"user.gmem.allocated", 0) == b"user.gmem.allocated"
    for name in (b"user.gmem.flags@0x0", b"user.gmem.shared@4096", b"user.gmem.shared@0x", b"user.gmem.other"):
        assert parse_attribute_name(name) is None, name


@pytest.mark.parametrize("text", ["abc", "0x0-0x1000,more@zz", "0x0-"])
def test_a_value_that_is_no_page_of_runs_is_refused(text):
    with pytest.raises(ValueError):
        parse_range_page(text)
