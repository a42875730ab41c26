"""Spec section 4: what /sys/kernel/mm/hugepages shows at each step of a hugetlb file's life."""

import errno
import os

import pytest
from support.files import open_gmem
from support.pools import PAGE_1G, PAGE_2M, wait_for_counters
from support.syscalls import KEEP_SIZE, PUNCH, errno_of, fallocate_result

from gmemfs.base.hugepages import pool_counters

# (page size, file pages N, pages allocated and punched k)
SHAPES = {PAGE_2M: (8, 3), PAGE_1G: (2, 1)}


@pytest.fixture(params=list(SHAPES), ids=["2M", "1G"])
def page_size(request):
    return request.param


def counters(page_size):
    current = pool_counters(page_size)
    return current.free, current.reserved


def test_accounting_table(gmem_dir, page_size):
    n, k = SHAPES[page_size]
    free, reserved = counters(page_size)
    fd = open_gmem(gmem_dir)
    try:
        assert counters(page_size) == (free, reserved), "an unsized file holds nothing"
        os.ftruncate(fd, n * page_size)
        assert counters(page_size) == (free, reserved + n), "sized: every page reserved"
        assert os.getxattr(fd, "user.gmem.reserved") == str(n).encode()
        assert fallocate_result(fd, KEEP_SIZE, 0, k * page_size) == "OK"
        assert counters(page_size) == (free - k, reserved + n - k), "allocated: k pages move from reserved to used"
        assert fallocate_result(fd, PUNCH, 0, k * page_size) == "OK"
        assert counters(page_size) == (free, reserved + n), "punched: back in the file's subpool, still reserved"
    finally:
        os.close(fd)
    assert counters(page_size) == (free, reserved + n), "a linked file keeps its reservation when closed"
    os.unlink(gmem_dir / "gmem")
    after = wait_for_counters(page_size, reserved, free)
    assert (after.free, after.reserved) == (free, reserved), "evicted: the reservation is released"


def test_unlinked_open_file_keeps_its_pages_until_closed(gmem_dir, page_size):
    n, k = SHAPES[page_size]
    free, reserved = counters(page_size)
    fd = open_gmem(gmem_dir, size=n * page_size)
    assert fallocate_result(fd, KEEP_SIZE, 0, k * page_size) == "OK"
    os.unlink(gmem_dir / "gmem")
    try:
        assert counters(page_size) == (free - k, reserved + n - k)
    finally:
        os.close(fd)
    after = wait_for_counters(page_size, reserved, free)
    assert (after.free, after.reserved) == (free, reserved)


def test_enomem_when_the_pool_cannot_reserve_and_nothing_is_held(gmem_dir, page_size):
    free, reserved = counters(page_size)
    available = free - reserved
    fd = open_gmem(gmem_dir)
    try:
        assert errno_of(os.ftruncate, fd, (available + 1) * page_size) == "ENOMEM"
        assert counters(page_size) == (free, reserved)
        assert os.fstat(fd).st_size == 0, "the file stays unsized"
        assert os.getxattr(fd, "user.gmem.reserved") == b"0"
        os.ftruncate(fd, available * page_size)
        assert counters(page_size) == (free, reserved + available), "and can still be created"
    finally:
        os.close(fd)


def test_second_file_gets_enomem_when_the_first_holds_the_pool(gmem_dir, page_size):
    free, reserved = counters(page_size)
    available = free - reserved
    first = open_gmem(gmem_dir, "first", size=available * page_size)
    second = open_gmem(gmem_dir, "second")
    try:
        with pytest.raises(OSError) as info:
            os.ftruncate(second, page_size)
        assert info.value.errno == errno.ENOMEM
    finally:
        os.close(first)
        os.close(second)
