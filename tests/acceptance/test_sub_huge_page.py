"""fallocate inside huge pages, as the series does it (RFC v1 15/39 kvm_gmem_allocate and
kvm_gmem_hugetlb_truncate_range; RFC v2 alike): 4 KiB alignment only, allocation rounds both
ends down to huge pages, a punch frees whole huge pages and zeroes the bytes it covers of
partly covered ones, which stay allocated."""

import mmap
import os

import pytest
from support.files import blocks_in_bytes, open_gmem
from support.host import touch
from support.pools import PAGE_1G, PAGE_2M
from support.syscalls import KEEP_SIZE, PUNCH, convert, fallocate_result, xattr

K4 = 4096
huge_pages = pytest.mark.parametrize("page_size", [PAGE_2M, PAGE_1G], ids=["2M", "1G"], indirect=True)


@huge_pages
def test_allocating_inside_one_huge_page_allocates_nothing(gmem_dir, page_size):
    fd = open_gmem(gmem_dir, size=2 * page_size)
    try:
        assert fallocate_result(fd, KEEP_SIZE, K4, K4) == "OK"
        assert blocks_in_bytes(fd) == 0
    finally:
        os.close(fd)


@huge_pages
def test_allocation_rounds_both_ends_down(gmem_dir, page_size):
    fd = open_gmem(gmem_dir, size=2 * page_size)
    try:
        assert fallocate_result(fd, KEEP_SIZE, K4, page_size) == "OK"  # [4K, P+4K)
        assert xattr(fd, "allocated") == f"0x0-{page_size:#x}"
        assert fallocate_result(fd, KEEP_SIZE, page_size + K4, page_size - K4) == "OK"  # [P+4K, 2P)
        assert xattr(fd, "allocated") == f"0x0-{2 * page_size:#x}"
    finally:
        os.close(fd)


@huge_pages
def test_allocation_past_the_size_is_checked_before_rounding(gmem_dir, page_size):
    fd = open_gmem(gmem_dir, size=page_size)
    try:
        assert fallocate_result(fd, KEEP_SIZE, page_size - K4, 2 * K4) == "EINVAL"
        assert blocks_in_bytes(fd) == 0
    finally:
        os.close(fd)


def _filled(fd: int, page_size: int) -> None:
    """Page 0 allocated, shared, and full of 0xAA in its first 16 KiB and last 4 KiB."""
    assert fallocate_result(fd, KEEP_SIZE, 0, page_size) == "OK"
    assert convert(fd, "shared", 0, page_size) == ("OK", 0)
    with mmap.mmap(fd, page_size, mmap.MAP_SHARED) as mapping:
        mapping[0 : 4 * K4] = b"\xaa" * 4 * K4
        mapping[page_size - K4 : page_size] = b"\xaa" * K4
        mapping.flush()


@huge_pages
def test_punching_inside_a_huge_page_zeroes_only_the_covered_bytes(gmem_dir, page_size):
    """Not RFC v1's whole-page zeroing: hugetlbfs's rule."""
    fd = open_gmem(gmem_dir, size=2 * page_size)
    try:
        _filled(fd, page_size)
        assert fallocate_result(fd, PUNCH, K4, K4) == "OK"
        assert xattr(fd, "allocated") == f"0x0-{page_size:#x}", "the partly covered page stays allocated"
        assert touch(fd, 0, 4) == "OK:" + "\xaa" * 4
        assert touch(fd, K4, 4) == "OK:" + "\0" * 4
        assert touch(fd, 2 * K4, 4) == "OK:" + "\xaa" * 4
    finally:
        os.close(fd)


@huge_pages
def test_punching_across_a_boundary_frees_whole_pages_and_zeroes_the_rest(gmem_dir, page_size):
    fd = open_gmem(gmem_dir, size=2 * page_size)
    try:
        _filled(fd, page_size)
        assert fallocate_result(fd, KEEP_SIZE, page_size, page_size) == "OK"
        assert fallocate_result(fd, PUNCH, page_size - K4, page_size + K4) == "OK"
        assert xattr(fd, "allocated") == f"0x0-{page_size:#x}"
        assert blocks_in_bytes(fd) == page_size
        assert touch(fd, page_size - K4, 4) == "OK:" + "\0" * 4
        assert touch(fd, 3 * K4, 4) == "OK:" + "\xaa" * 4
    finally:
        os.close(fd)


@huge_pages
def test_madv_remove_on_part_of_a_huge_page_zeroes_that_part(gmem_dir, page_size):
    fd = open_gmem(gmem_dir, size=page_size)
    try:
        _filled(fd, page_size)
        with mmap.mmap(fd, page_size, mmap.MAP_SHARED) as mapping:
            mapping.madvise(mmap.MADV_REMOVE, 2 * K4, K4)
            assert mapping[2 * K4 : 2 * K4 + 4] == b"\0" * 4
            assert mapping[0:4] == b"\xaa" * 4
        assert xattr(fd, "allocated") == f"0x0-{page_size:#x}"
    finally:
        os.close(fd)
