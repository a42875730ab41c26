"""-o fail=OPERATION:ERRNO[:N]: chosen failures for VMM error paths, with the daemon's state kept exact."""

import errno
import os

import pytest
from support.files import open_gmem
from support.pools import PAGE_2M
from support.syscalls import KEEP_SIZE, PUNCH, convert, errno_of, fallocate_result

from gmemfs.base.hugepages import pool_counters


def test_enomem_on_the_nth_allocation_keeps_state_exact(start_gmemfs):
    daemon = start_gmemfs("-o", "pagesize=2M,fail=allocate:ENOMEM:2")
    fd = open_gmem(daemon.mountpoint, size=8 * PAGE_2M)
    try:
        before = pool_counters(PAGE_2M)
        assert fallocate_result(fd, KEEP_SIZE, 0, 2 * PAGE_2M) == "OK"
        assert fallocate_result(fd, KEEP_SIZE, 2 * PAGE_2M, 4 * PAGE_2M) == "ENOMEM"
        assert os.getxattr(fd, "user.gmem.allocated") == b"0x0-0x800000", "half of the failed range stays"
        assert os.fstat(fd).st_blocks * 512 == 4 * PAGE_2M
        assert pool_counters(PAGE_2M).free == before.free - 4, "and the kernel holds exactly that"
        assert fallocate_result(fd, KEEP_SIZE, 0, 8 * PAGE_2M) == "OK", "only the 2nd call fails"
        assert fallocate_result(fd, PUNCH, 0, 8 * PAGE_2M) == "OK"
        assert pool_counters(PAGE_2M).free == before.free
    finally:
        os.close(fd)
    assert "injected fault: allocate" in daemon.output()


def test_eintr_in_the_middle_of_a_large_allocation(start_gmemfs):
    daemon = start_gmemfs("-o", "pagesize=2M,fail=allocate:EINTR")
    fd = open_gmem(daemon.mountpoint, size=16 * PAGE_2M)
    try:
        assert fallocate_result(fd, KEEP_SIZE, 0, 16 * PAGE_2M) == "EINTR"
        assert os.fstat(fd).st_blocks * 512 == 8 * PAGE_2M, "pages done so far stay"
        assert fallocate_result(fd, KEEP_SIZE, 0, 16 * PAGE_2M) == "EINTR", "every call, without N"
        assert os.fstat(fd).st_blocks * 512 == 8 * PAGE_2M
    finally:
        os.close(fd)


def test_eagain_on_conversion_to_private_reports_error_offset(start_gmemfs):
    daemon = start_gmemfs("-o", "pagesize=2M,fail=convert_private:EAGAIN:1")
    fd = open_gmem(daemon.mountpoint, size=2 * PAGE_2M)
    try:
        assert convert(fd, "shared", 0, 2 * PAGE_2M) == ("OK", 0)
        assert convert(fd, "private", PAGE_2M, 4096) == ("EAGAIN", PAGE_2M)
        assert os.getxattr(fd, "user.gmem.shared") == b"0x0-0x400000", "nothing converted"
        assert convert(fd, "private", PAGE_2M, 4096) == ("OK", 0)
    finally:
        os.close(fd)


@pytest.mark.parametrize("operation", ["size", "punch", "convert_shared"])
def test_other_operations_fail_with_the_chosen_errno(start_gmemfs, operation):
    daemon = start_gmemfs("-o", f"pagesize=2M,fail={operation}:EIO:1")
    fd = open_gmem(daemon.mountpoint)
    try:
        if operation == "size":
            assert errno_of(os.ftruncate, fd, PAGE_2M) == "EIO"
            assert os.fstat(fd).st_size == 0
        os.ftruncate(fd, PAGE_2M)
        if operation == "punch":
            assert fallocate_result(fd, PUNCH, 0, PAGE_2M) == "EIO"
        if operation == "convert_shared":
            assert convert(fd, "shared", 0, PAGE_2M) == ("EIO", 0)
            assert os.getxattr(fd, "user.gmem.shared") == b""
    finally:
        os.close(fd)
    assert errno.errorcode[errno.EIO] in daemon.output()


@pytest.mark.parametrize("bad", ["fail=allocate", "fail=teleport:EIO", "fail=allocate:ENOPE", "fail=allocate:EIO:x"])
def test_bad_fault_options_are_one_line(tmp_path, bad):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "gmemfs", "-o", bad, str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "fail=" in result.stderr
