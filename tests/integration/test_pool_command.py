"""gmemfs pool: shows and sizes the huge page pools, refusing what would hurt."""

import json
import os
import subprocess
import sys

import pytest
from support.files import open_gmem
from support.pools import PAGE_1G, PAGE_2M
from support.users import AS_NOBODY, gmemfs_for_anyone

from gmemfs.base.hugepages import pool_counters, set_pool_pages


def gmemfs(*args):
    return subprocess.run([sys.executable, "-m", "gmemfs", *args], capture_output=True, text=True, timeout=30)


@pytest.fixture
def restore_pools(huge_pools):
    """Put every pool back at the size it had, whatever the test did."""
    sizes = {size: pool_counters(size).total for size in (PAGE_2M, PAGE_1G)}
    yield
    for size, total in sizes.items():
        set_pool_pages(size, total)


def test_json_lists_every_pool_as_sysfs_has_it(restore_pools):
    pools = {pool["page_size"]: pool for pool in json.loads(gmemfs("pool", "--json").stdout)["pools"]}
    assert set(pools) == {PAGE_2M, PAGE_1G}
    for size, pool in pools.items():
        counters = pool_counters(size)
        assert (pool["total"], pool["free"], pool["reserved"], pool["surplus"]) == (
            counters.total,
            counters.free,
            counters.reserved,
            counters.surplus,
        )


def test_table_shows_each_size():
    result = gmemfs("pool")
    assert result.returncode == 0
    assert "2M" in result.stdout and "1G" in result.stdout and "reserved" in result.stdout


def test_sets_a_pool_and_reports_what_the_kernel_granted(restore_pools):
    target = pool_counters(PAGE_2M).total + 3
    result = gmemfs("pool", f"2M={target}")
    assert result.returncode == 0, result.stderr
    assert f"2M pool: {target} pages" in result.stdout
    assert pool_counters(PAGE_2M).total == target


@pytest.mark.parametrize(
    "request_text, message",
    [
        ("2M=100000000", "more than this machine's"),
        ("2X=3", "is not SIZE=PAGES"),
        ("2M", "is not SIZE=PAGES"),
        ("2M=-1", "cannot be negative"),
        ("4K=10", "no 4K huge pages"),
    ],
)
def test_refuses_bad_requests_with_one_line(restore_pools, request_text, message):
    before = pool_counters(PAGE_2M).total
    result = gmemfs("pool", request_text)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert pool_counters(PAGE_2M).total == before


def test_never_shrinks_below_reserved_pages(restore_pools, start_gmemfs):
    daemon = start_gmemfs("-o", "pagesize=2M")
    fd = open_gmem(daemon.mountpoint, size=4 * PAGE_2M)
    try:
        before = pool_counters(PAGE_2M)
        result = gmemfs("pool", f"2M={before.reserved - 1}")
        assert result.returncode == 1 and "in use or reserved" in result.stderr
        assert pool_counters(PAGE_2M) == before
    finally:
        os.close(fd)


def test_non_root_cannot_change_pools(restore_pools):
    before = pool_counters(PAGE_2M).total
    with gmemfs_for_anyone() as gmemfs_command:
        result = subprocess.run(
            [*AS_NOBODY, *gmemfs_command, "pool", f"2M={before + 1}"], capture_output=True, text=True
        )
    assert result.returncode == 1 and "only root" in result.stderr
    assert pool_counters(PAGE_2M).total == before
