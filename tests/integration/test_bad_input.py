"""Bad input at the edges, through a real mount: each gets its errno and one log line, and the daemon lives on."""

import fcntl
import os
import struct

import pytest
from support.files import open_gmem
from support.pools import PAGE_2M
from support.syscalls import KEEP_SIZE, PUNCH, convert, errno_of, fallocate_result, set_flags

BAD_FLAG_VALUES = [b"", b"-1", b"18446744073709551616", b"9" * 65536, b"\xff\xfe\x00", b"0x" + b"f" * 20, b"1e3"]


@pytest.fixture
def daemon(start_gmemfs):
    return start_gmemfs("-o", "pagesize=2M")


def log_lines_with(daemon, text):
    return [line for line in daemon.output().splitlines() if text in line]


def test_bad_xattr_values_are_einval_with_one_log_line_each(daemon):
    fd = open_gmem(daemon.mountpoint, "f")
    try:
        for value in BAD_FLAG_VALUES:
            assert errno_of(os.setxattr, fd, "user.gmem.flags", value) == "EINVAL", value[:20]
        assert os.getxattr(fd, "user.gmem.flags") == b"0x54000002", "nothing changed"
    finally:
        os.close(fd)
    assert len(log_lines_with(daemon, "is not a decimal or 0x-hex number")) + len(
        log_lines_with(daemon, "do not fit in 64 bits")
    ) == len(BAD_FLAG_VALUES)


@pytest.mark.parametrize(
    "size, expected",
    [
        (0, "EINVAL"),
        (-4096, "EINVAL"),
        (4096, "EINVAL"),
        (PAGE_2M + 1, "EINVAL"),
        ((1 << 63) - 1, "EINVAL"),
        ((1 << 63) - PAGE_2M, "ENOMEM"),
    ],
    ids=["zero", "negative", "unaligned", "page_plus_one", "max_off_t", "huge_aligned"],
)
def test_sizes_at_the_edges(daemon, size, expected):
    fd = open_gmem(daemon.mountpoint, "f")
    try:
        assert errno_of(os.ftruncate, fd, size) == expected
        assert os.fstat(fd).st_size == 0
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    "mode, offset, length, expected",
    [
        (KEEP_SIZE, (1 << 63) - PAGE_2M, 2 * PAGE_2M, "EFBIG"),  # offset + len overflows: the VFS answers
        (PUNCH, (1 << 63) - PAGE_2M, 2 * PAGE_2M, "EFBIG"),
        (KEEP_SIZE, 0, (1 << 63) - 1, "EINVAL"),
        (KEEP_SIZE, -PAGE_2M, PAGE_2M, "EINVAL"),
        (0xFF, 0, PAGE_2M, "EOPNOTSUPP"),
    ],
)
def test_fallocate_at_the_edges(daemon, mode, offset, length, expected):
    fd = open_gmem(daemon.mountpoint, "f", size=2 * PAGE_2M)
    try:
        assert fallocate_result(fd, mode, offset, length) == expected
    finally:
        os.close(fd)


def test_ioctl_payloads_at_the_edges(daemon):
    fd = open_gmem(daemon.mountpoint, "f", size=2 * PAGE_2M)
    try:
        assert convert(fd, "shared", (1 << 64) - 4096, 4096) == ("EINVAL", 0)
        assert convert(fd, "shared", 4096, (1 << 64) - 4096) == ("EINVAL", 0)
        assert convert(fd, "private", 0, 4096, error_offset=(1 << 64) - 1) == ("EINVAL", (1 << 64) - 1)
        wrong_size = (3 << 30) | (32 << 16) | (0xAF << 8) | 0x41  # the conversion number with a 32-byte struct
        assert errno_of(fcntl.ioctl, fd, wrong_size, bytes(32)) == "ENOTTY"
        garbage = struct.pack("=QQQ5Q", 0, 4096, 0, *[(1 << 64) - 1] * 5)  # reserved words are ignored
        assert errno_of(fcntl.ioctl, fd, (3 << 30) | (64 << 16) | (0xAF << 8) | 0x41, bytearray(garbage), True) == "OK"
    finally:
        os.close(fd)


def test_the_daemon_survives_every_bad_request(daemon):
    fd = open_gmem(daemon.mountpoint, "f")
    for value in BAD_FLAG_VALUES:
        errno_of(os.setxattr, fd, "user.gmem.flags", value)
    for flags in (1 << 63, (1 << 64) - 1, 1 << 5):
        errno_of(set_flags, fd, flags)
    errno_of(os.ftruncate, fd, (1 << 63) - 1)
    errno_of(fcntl.ioctl, fd, 0xDEADBEEF, 0)
    errno_of(os.read, fd, 1 << 20)
    errno_of(os.write, fd, b"x")
    os.close(fd)
    assert daemon.process.poll() is None, "the daemon died"
    fd = open_gmem(daemon.mountpoint, "g", size=PAGE_2M)
    os.close(fd)
    assert "Traceback" not in daemon.output()
