"""A set of byte ranges kept as merged, sorted runs.

gmem files track allocated and shared pages; a 1 TiB file may hold millions of
pages, so state grows with the number of runs, never with the number of pages.
Lookups bisect; an update replaces one slice of two parallel lists.
"""

from bisect import bisect_left, bisect_right
from collections.abc import Iterator

Range = tuple[int, int]  # [start, end)


class RangeSet:
    """Disjoint half-open ranges; adjacent ranges merge."""

    __slots__ = ("_ends", "_starts", "_total")

    def __init__(self, ranges: "list[Range] | None" = None) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._total = 0
        for start, end in ranges or ():
            self.add(start, end)

    def add(self, start: int, end: int) -> None:
        if start >= end:
            return
        first = bisect_left(self._ends, start)  # first run ending at or after start
        stop = bisect_right(self._starts, end)  # runs from here on start after end
        if first < stop:
            start = min(start, self._starts[first])
            end = max(end, self._ends[stop - 1])
            self._total -= sum(self._ends[first:stop]) - sum(self._starts[first:stop])
        self._starts[first:stop] = [start]
        self._ends[first:stop] = [end]
        self._total += end - start

    def remove(self, start: int, end: int) -> None:
        if start >= end:
            return
        first = bisect_right(self._ends, start)  # first run ending after start
        stop = bisect_left(self._starts, end)  # runs from here on start at or after end
        if first >= stop:
            return
        kept_starts, kept_ends = [], []
        if self._starts[first] < start:
            kept_starts.append(self._starts[first])
            kept_ends.append(start)
        if self._ends[stop - 1] > end:
            kept_starts.append(end)
            kept_ends.append(self._ends[stop - 1])
        self._total -= sum(self._ends[first:stop]) - sum(self._starts[first:stop])
        self._total += sum(kept_ends) - sum(kept_starts)
        self._starts[first:stop] = kept_starts
        self._ends[first:stop] = kept_ends

    def gaps(self, start: int, end: int) -> Iterator[Range]:
        """The parts of [start, end) that the set does not cover, in order."""
        position = start
        index = bisect_right(self._ends, start)
        while index < len(self._starts) and self._starts[index] < end:
            if self._starts[index] > position:
                yield position, self._starts[index]
            position = max(position, self._ends[index])
            index += 1
        if position < end:
            yield position, end

    def overlapping(self, start: int, end: int) -> Iterator[Range]:
        """The parts of [start, end) that the set covers, in order."""
        index = bisect_right(self._ends, start)
        while index < len(self._starts) and self._starts[index] < end:
            yield max(start, self._starts[index]), min(end, self._ends[index])
            index += 1

    def covers(self, start: int, end: int) -> bool:
        return next(self.gaps(start, end), None) is None

    @property
    def total(self) -> int:
        """Bytes covered."""
        return self._total

    def __iter__(self) -> Iterator[Range]:
        return zip(self._starts, self._ends)

    def __len__(self) -> int:
        return len(self._starts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RangeSet) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"RangeSet({list(self)!r})"


def format_ranges(ranges: "RangeSet | list[Range]") -> str:
    """'0x0-0x200000,0x600000-0x800000': half-open byte ranges, empty when none."""
    return ",".join(f"{start:#x}-{end:#x}" for start, end in ranges)


def parse_ranges(text: str) -> RangeSet:
    """The inverse of format_ranges."""
    ranges = RangeSet()
    for item in filter(None, text.split(",")):
        start, _, end = item.partition("-")
        ranges.add(int(start, 16), int(end, 16))
    return ranges
