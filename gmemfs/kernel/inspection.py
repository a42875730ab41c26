"""The inspection attributes' names, and their range lists in pages that one value can carry.

The VFS caps an xattr value at XATTR_SIZE_MAX (64 KiB): a longer answer reaches nobody
(getxattr(2) fails with E2BIG). A file with thousands of runs is normal (a guest shares
and unshares pages one by one), so `user.gmem.allocated` and `user.gmem.shared` hold the
runs that fit, then `more@OFFSET`; `user.gmem.shared@OFFSET` holds the runs from OFFSET on.
"""

import re

from ..base.ranges import Range, RangeSet, format_ranges, parse_ranges
from .uapi import XATTR_ALLOCATED, XATTR_NAMES, XATTR_SHARED, XATTR_SIZE_MAX

RANGE_ATTRIBUTES = (XATTR_ALLOCATED, XATTR_SHARED)
_OFFSET = re.compile(rb"0x[0-9a-fA-F]{1,16}")
_MORE = "more@"
_MORE_ROOM = len(f",{_MORE}{(1 << 64) - 1:#x}")  # what the continuation takes at most


def parse_attribute_name(name: bytes) -> "tuple[bytes, int] | None":
    """(attribute, offset) for a name getxattr answers, None for any other name:
    b'user.gmem.shared@0x200000' -> (b'user.gmem.shared', 0x200000)."""
    if name in XATTR_NAMES:
        return name, 0
    attribute, at, offset = name.partition(b"@")
    if at and attribute in RANGE_ATTRIBUTES and _OFFSET.fullmatch(offset):
        return attribute, int(offset, 16)
    return None


def paged_name(attribute: bytes, offset: int) -> bytes:
    """The name whose value lists the runs of `attribute` from `offset` on."""
    return attribute if offset == 0 else attribute + f"@{offset:#x}".encode()


def range_page(ranges: RangeSet, offset: int = 0, limit: int = XATTR_SIZE_MAX) -> bytes:
    """The runs from `offset` on (a run across it starts there), as many whole runs as fit in
    `limit` bytes; when some are left, the last item says where they start: 'more@0x...'."""
    runs: list[Range] = []
    used = 0
    for run in ranges.overlapping(offset, 1 << 64):
        used += len(f"{run[0]:#x}-{run[1]:#x},")
        if used + _MORE_ROOM > limit:
            return f"{format_ranges(runs)},{_MORE}{run[0]:#x}".encode()
        runs.append(run)
    return format_ranges(runs).encode()


def parse_range_page(text: str) -> "tuple[RangeSet, int | None]":
    """The inverse of range_page: (the runs, where the rest starts or None); ValueError if it is
    not a page of runs."""
    listed, more, rest = text.rpartition("," + _MORE)
    if not more:
        return parse_ranges(text), None
    return parse_ranges(listed), int(rest, 16)
