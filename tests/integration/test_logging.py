"""A daemonized gmemfs logs to syslog/journald: one line per error a user caused."""

import os
import re
import socket
import subprocess
import sys

import pytest
from support.files import open_gmem
from support.mount import is_mounted, new_mountpoint, remove_mountpoint
from support.syscalls import KEEP_SIZE, errno_of, fallocate_result

from gmemfs.base.ratelimit import RATELIMIT_BURST

REFUSALS = 2000  # about 0.2 s of refused requests from one user


@pytest.fixture
def syslog(tmp_path):
    """A datagram socket standing in for /dev/log."""
    path = tmp_path / "log"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(path))
    receiver.settimeout(5)
    yield path, receiver
    receiver.close()


def test_user_errors_reach_syslog_with_path_and_rule(syslog, huge_pools):
    address, receiver = syslog
    mountpoint = new_mountpoint()
    env = {**os.environ, "GMEMFS_SYSLOG": str(address)}
    subprocess.run([sys.executable, "-m", "gmemfs", "-o", "pagesize=2M", str(mountpoint)], env=env, check=True)
    try:
        (mountpoint / "dir").mkdir()
        fd = os.open(mountpoint / "dir" / "vm0", os.O_CREAT | os.O_RDWR)
        assert errno_of(os.ftruncate, fd, 4096) == "EINVAL"
        os.close(fd)
        messages = []
        while not any("EINVAL" in message for message in messages):
            messages.append(receiver.recv(4096).decode())
    finally:
        subprocess.run(["fusermount3", "-u", str(mountpoint)])
    assert any(m.startswith("<30>gmemfs[") and "mounted" in m for m in messages), messages  # daemon.info
    (error,) = [m for m in messages if "EINVAL" in m]
    assert "file /dir/vm0 (inode 3): setattr: size 0x1000 is not a positive multiple of the page size 0x200000" in error
    assert not is_mounted(mountpoint)
    remove_mountpoint(mountpoint)


def test_a_refused_fallocate_names_its_own_file(start_gmemfs):
    """fallocate gets the inode number first: read as a handle number, it named whichever
    file had that handle open (here bob's, handle 2, for alice's inode 2)."""
    daemon = start_gmemfs()
    os.close(open_gmem(daemon.mountpoint, "alice-vm", size=4096))  # inode 2, handle 1
    bob = open_gmem(daemon.mountpoint, "bob-vm")  # inode 3, handle 2
    alice = os.open(daemon.mountpoint / "alice-vm", os.O_RDWR)
    try:
        assert fallocate_result(alice, KEEP_SIZE, 0, 2 * 4096) == "EINVAL"
        inode = os.fstat(alice).st_ino
    finally:
        os.close(alice)
        os.close(bob)
    (line,) = [line for line in daemon.output().splitlines() if "passes the size" in line]
    assert f"file /alice-vm (inode {inode}): fallocate: allocating 0x0+0x2000" in line, line


def test_a_flood_of_refusals_logs_its_first_lines_then_how_many_were_left_out(start_gmemfs):
    daemon = start_gmemfs()
    fd = open_gmem(daemon.mountpoint, "vm", size=4096)
    try:
        for _ in range(REFUSALS):
            assert fallocate_result(fd, KEEP_SIZE, 0, 2 * 4096) == "EINVAL"
    finally:
        os.close(fd)
    logged = [line for line in daemon.output().splitlines() if "passes the size" in line]
    assert RATELIMIT_BURST <= len(logged) <= 3 * RATELIMIT_BURST, f"{len(logged)} lines for {REFUSALS} refusals"
    assert logged[0].endswith("file /vm (inode 2): fallocate: allocating 0x0+0x2000 passes the size 0x1000 (EINVAL)")
    daemon.stop()  # the last count is logged at unmount
    counts = re.findall(r"INFO: (\d+) more refusals suppressed", daemon.output())
    assert counts and len(logged) + sum(map(int, counts)) == REFUSALS, counts
