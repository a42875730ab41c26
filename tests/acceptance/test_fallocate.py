"""Spec section 5: fallocate, case by case, for 4 KiB, 2 MiB and 1 GiB page files."""

import os

import pytest
from support.files import blocks_in_bytes, open_gmem
from support.syscalls import KEEP_SIZE, PUNCH, fallocate_result

PAGES = 2  # file size in pages: the 1 GiB case then uses the whole 2-page pool


def unaligned(page_size: int) -> int:
    """A step that is not a multiple of 4 KiB: EINVAL for every file (PAGE_ALIGNED, even with huge pages)."""
    return 512


# (case, mode, offset, length, errno) with offset and length as functions of the page size P.
CASES = [
    ("mode_0_lacks_keep_size", 0, lambda P: 0, lambda P: P, "EOPNOTSUPP"),
    ("punch_without_keep_size", 0x2, lambda P: 0, lambda P: P, "EOPNOTSUPP"),
    ("zero_range", 0x10 | KEEP_SIZE, lambda P: 0, lambda P: P, "EOPNOTSUPP"),
    ("mode_checked_before_alignment", 0, lambda P: 1, lambda P: 1, "EOPNOTSUPP"),
    ("allocate_unaligned_offset", KEEP_SIZE, unaligned, lambda P: P, "EINVAL"),
    ("allocate_unaligned_length", KEEP_SIZE, lambda P: 0, lambda P: P + unaligned(P), "EINVAL"),
    ("punch_unaligned_offset", PUNCH, unaligned, lambda P: P, "EINVAL"),
    ("punch_unaligned_length", PUNCH, lambda P: 0, lambda P: unaligned(P), "EINVAL"),
    ("allocate_at_end", KEEP_SIZE, lambda P: PAGES * P, lambda P: P, "EINVAL"),
    ("allocate_after_end", KEEP_SIZE, lambda P: 8 * PAGES * P, lambda P: P, "EINVAL"),
    ("allocate_across_end", KEEP_SIZE, lambda P: (PAGES - 1) * P, lambda P: 2 * P, "EINVAL"),
    ("allocate_length_zero", KEEP_SIZE, lambda P: 0, lambda P: 0, "EINVAL"),
    ("allocate_negative_offset", KEEP_SIZE, lambda P: -P, lambda P: P, "EINVAL"),
    ("allocate_whole_file", KEEP_SIZE, lambda P: 0, lambda P: PAGES * P, "OK"),
    ("allocate_last_page", KEEP_SIZE, lambda P: (PAGES - 1) * P, lambda P: P, "OK"),
    ("punch_at_end_succeeds", PUNCH, lambda P: PAGES * P, lambda P: P, "OK"),
    ("punch_after_end_succeeds", PUNCH, lambda P: 8 * PAGES * P, lambda P: P, "OK"),
    ("punch_across_end_succeeds", PUNCH, lambda P: (PAGES - 1) * P, lambda P: 4 * P, "OK"),
    ("punch_never_allocated_succeeds", PUNCH, lambda P: 0, lambda P: P, "OK"),
]


@pytest.mark.parametrize("case, mode, offset, length, expected", CASES, ids=[case[0] for case in CASES])
def test_fallocate_case(gmem_dir, page_size, case, mode, offset, length, expected):
    fd = open_gmem(gmem_dir, size=PAGES * page_size)
    try:
        assert fallocate_result(fd, mode, offset(page_size), length(page_size)) == expected
    finally:
        os.close(fd)


@pytest.mark.parametrize("mode", [KEEP_SIZE, PUNCH], ids=["allocate", "punch"])
def test_fallocate_on_unsized_file_is_einval(gmem_dir, page_size, mode):
    fd = open_gmem(gmem_dir)
    try:
        assert fallocate_result(fd, mode, 0, page_size) == "EINVAL"
    finally:
        os.close(fd)


def test_allocate_counts_blocks_and_keeps_size(gmem_dir, page_size):
    fd = open_gmem(gmem_dir, size=PAGES * page_size)
    try:
        assert blocks_in_bytes(fd) == 0
        assert fallocate_result(fd, KEEP_SIZE, page_size, page_size) == "OK"
        assert blocks_in_bytes(fd) == page_size
        assert fallocate_result(fd, KEEP_SIZE, 0, PAGES * page_size) == "OK", "already allocated pages are fine"
        assert blocks_in_bytes(fd) == PAGES * page_size
        assert os.fstat(fd).st_size == PAGES * page_size
    finally:
        os.close(fd)


def test_punch_frees_only_the_range_inside_the_file(gmem_dir, page_size):
    fd = open_gmem(gmem_dir, size=PAGES * page_size)
    try:
        assert fallocate_result(fd, KEEP_SIZE, 0, PAGES * page_size) == "OK"
        assert fallocate_result(fd, PUNCH, (PAGES - 1) * page_size, 8 * page_size) == "OK"
        assert blocks_in_bytes(fd) == (PAGES - 1) * page_size
        assert os.getxattr(fd, "user.gmem.allocated") == f"0x0-{(PAGES - 1) * page_size:#x}".encode()
    finally:
        os.close(fd)


def test_refused_fallocate_changes_nothing(gmem_dir, page_size):
    fd = open_gmem(gmem_dir, size=PAGES * page_size)
    try:
        assert fallocate_result(fd, KEEP_SIZE, 0, page_size) == "OK"
        assert fallocate_result(fd, KEEP_SIZE, 0, (PAGES + 1) * page_size) == "EINVAL"
        assert fallocate_result(fd, PUNCH, 0, unaligned(page_size)) == "EINVAL"
        assert blocks_in_bytes(fd) == page_size
    finally:
        os.close(fd)


def test_fallocate_needs_a_writable_fd(gmem_dir, page_size):
    os.close(open_gmem(gmem_dir, size=PAGES * page_size))
    fd = os.open(gmem_dir / "gmem", os.O_RDONLY)
    try:
        assert fallocate_result(fd, KEEP_SIZE, 0, page_size) == "EBADF"
    finally:
        os.close(fd)
