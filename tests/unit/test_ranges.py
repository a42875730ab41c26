import random

import pytest

from gmemfs.base.ranges import RangeSet


def test_adjacent_ranges_merge():
    ranges = RangeSet([(0, 10), (10, 20)])
    assert list(ranges) == [(0, 20)]
    assert ranges.total == 20


def test_overlapping_ranges_merge_across_several_runs():
    ranges = RangeSet([(0, 5), (10, 15), (20, 25), (40, 50)])
    ranges.add(3, 22)
    assert list(ranges) == [(0, 25), (40, 50)]
    assert ranges.total == 35


def test_remove_splits_a_run():
    ranges = RangeSet([(0, 100)])
    ranges.remove(40, 60)
    assert list(ranges) == [(0, 40), (60, 100)]
    assert ranges.total == 80


def test_remove_outside_any_run_changes_nothing():
    ranges = RangeSet([(10, 20)])
    ranges.remove(20, 30)
    ranges.remove(0, 10)
    assert list(ranges) == [(10, 20)]


def test_gaps_and_overlapping_partition_a_window():
    ranges = RangeSet([(10, 20), (30, 40)])
    assert list(ranges.gaps(0, 50)) == [(0, 10), (20, 30), (40, 50)]
    assert list(ranges.overlapping(15, 35)) == [(15, 20), (30, 35)]
    assert list(ranges.gaps(12, 18)) == []
    assert ranges.covers(10, 20)
    assert not ranges.covers(10, 21)


def test_empty_ranges_are_ignored():
    ranges = RangeSet()
    ranges.add(5, 5)
    ranges.remove(7, 3)
    assert len(ranges) == 0 and ranges.total == 0


@pytest.mark.parametrize("seed", range(20))
def test_matches_a_set_of_units_under_random_changes(seed):
    rng = random.Random(seed)
    ranges, units = RangeSet(), set()
    for _ in range(300):
        start = rng.randrange(0, 200)
        end = start + rng.randrange(0, 30)
        if rng.random() < 0.6:
            ranges.add(start, end)
            units.update(range(start, end))
        else:
            ranges.remove(start, end)
            units.difference_update(range(start, end))
        assert ranges.total == len(units)
        assert {unit for start, end in ranges for unit in range(start, end)} == units
        runs = list(ranges)
        assert all(end < next_start for (_, end), (next_start, _) in zip(runs, runs[1:])), "runs must not touch"
    window = (50, 150)
    assert {u for s, e in ranges.gaps(*window) for u in range(s, e)} == set(range(*window)) - units
