"""The trace file under attack: what it shows against what happened, and what its readers can
do to the daemon. Each test states the behaviour the design promises."""

import errno
import fcntl
import os
import subprocess
import sys
import time

import pytest
from support.commands import as_nobody
from support.files import open_gmem
from support.pools import PAGE_2M
from support.trace import TraceCommand, of_file

from gmemfs import FALLOC_FL_KEEP_SIZE, fallocate
from gmemfs.kernel.uapi import KVM_GMEM_CONVERT_SHARED, TRACE_FILE

SYSTEM_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

BLOCKING_READERS = """
import os, sys, threading, time
path, count = sys.argv[1], int(sys.argv[2])
def read():
    fd = os.open(path, os.O_RDONLY)
    try:
        os.read(fd, 4096)
    except OSError:
        pass
for _ in range(count):
    threading.Thread(target=read, daemon=True).start()
print("started", flush=True)
time.sleep(600)
"""


def blocking_readers(path, count: int) -> subprocess.Popen:
    """A root process whose `count` threads each wait in a read(2) of the trace file."""
    process = subprocess.Popen(
        [sys.executable, "-c", BLOCKING_READERS, str(path), str(count)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "started"
    time.sleep(1)  # every thread's READ has reached the daemon
    return process


def answers(path, timeout: float = 5.0) -> bool:
    """Whether a stat(2) of path is answered within timeout (the request is never sent to a
    daemon that reads no request, so the probe can be killed)."""
    try:
        subprocess.run(["stat", str(path)], capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


def test_waiting_trace_readers_do_not_stop_the_mount_serving_others(start_gmemfs):
    """A trace reader waits for an event "while the loop serves on": however many wait, other
    users' requests are still answered (pyfuse3's worker tasks are 99 at most, and each waiting
    READ holds one until an event comes)."""
    daemon = start_gmemfs("-o", "pagesize=2M")
    os.close(open_gmem(daemon.mountpoint, "vm"))
    readers = blocking_readers(daemon.mountpoint / os.fsdecode(TRACE_FILE), 100)
    try:
        assert answers(daemon.mountpoint / "vm"), "the mount stopped answering while trace reads wait"
    finally:
        daemon.process.terminate()  # end_trace answers the waiting reads
        try:
            daemon.process.wait(timeout=20)
        finally:
            readers.kill()
            readers.wait(timeout=20)


def fuse_abort(mountpoint) -> None:
    """Abort the mount's FUSE connection, as umount -f does (fuse_umount_begin)."""
    subprocess.run(["umount", "-f", str(mountpoint)], capture_output=True)


def test_an_aborted_connection_ends_the_daemon_even_with_a_trace_read_waiting(start_gmemfs):
    """The kernel ends the connection (umount -f, or the fusectl abort file): a daemon whose trace
    file has a read waiting exits as one without readers does, not only after a SIGTERM."""
    daemon = start_gmemfs("-o", "pagesize=2M")
    readers = blocking_readers(daemon.mountpoint / os.fsdecode(TRACE_FILE), 1)
    try:
        fuse_abort(daemon.mountpoint)
        try:
            daemon.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail("the daemon still runs 10 s after its connection was aborted")
    finally:
        readers.kill()
        readers.wait(timeout=20)


def test_an_aborted_connection_without_trace_readers_ends_the_daemon(start_gmemfs):
    """The control for the test above: without a waiting trace read the daemon does end."""
    daemon = start_gmemfs("-o", "pagesize=2M")
    fuse_abort(daemon.mountpoint)
    daemon.process.wait(timeout=10)


def test_a_read_only_fds_refused_conversion_is_traced_with_the_callers_errno(start_gmemfs):
    """The daemon traces every request it refuses, those refused at the FUSE edge (a FUSEError:
    which handle, opened how) too. fallocate on a read-only fd never reaches it: the kernel's
    vfs_fallocate() refuses first, so that refusal is nobody's to trace."""
    daemon = start_gmemfs("-o", "pagesize=2M")
    os.close(open_gmem(daemon.mountpoint, "vm", size=PAGE_2M))
    trace = TraceCommand(daemon.mountpoint)
    try:
        fd = os.open(daemon.mountpoint / "vm", os.O_RDONLY)
        try:
            with pytest.raises(OSError) as refused:
                fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, PAGE_2M)
            assert refused.value.errno == errno.EBADF
            with pytest.raises(OSError) as refused:
                fcntl.ioctl(fd, KVM_GMEM_CONVERT_SHARED, bytearray(64))
            assert refused.value.errno == errno.EBADF
        finally:
            os.close(fd)
        os.close(open_gmem(daemon.mountpoint, "marker"))
        assert trace.wait_for(lambda line: "marker" in line)
    finally:
        trace.stop()
    refusals = [(event.what, event.errno) for event in of_file(trace.events(), "vm") if event.errno]
    assert refusals == [("convert_shared", errno.EBADF)]
    refused = next(event for event in of_file(trace.events(), "vm") if event.errno)
    assert (refused.rule, refused.function) == ("Bad file descriptor", "vfs_ioctl")


def test_an_allocation_that_fails_halfway_says_what_it_allocated(start_gmemfs):
    """A failed fallocate keeps the pages it made (the kernel's hugetlbfs_fallocate does not roll
    back, and the daemon says so: "pages up to ... allocated"); the trace's refusal event must
    carry them, or a reader summing pages_allocated - pages_freed is short of st_blocks."""
    daemon = start_gmemfs("-o", "pagesize=2M,fail=allocate:ENOMEM:1")
    fd = open_gmem(daemon.mountpoint, "vm", size=4 * PAGE_2M)
    trace = TraceCommand(daemon.mountpoint)
    try:
        with pytest.raises(OSError) as refused:
            fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 4 * PAGE_2M)
        assert refused.value.errno == errno.ENOMEM
        allocated_pages = os.fstat(fd).st_blocks * 512 // PAGE_2M
        assert allocated_pages == 2
        assert trace.wait_for(lambda line: '"errno":12' in line)
    finally:
        os.close(fd)
        trace.stop()
    (event,) = [event for event in of_file(trace.events(), "vm") if event.what == "fallocate"]
    assert event.errno == errno.ENOMEM
    assert event.detail.get("pages_allocated") == allocated_pages


DEEP_TREE = """
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
name = "d" * 255
for _ in range(int(sys.argv[2])):
    os.mkdir(name, dir_fd=fd)
    next_fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
    os.close(fd)
    fd = next_fd
for _ in range(int(sys.argv[3])):
    try:
        os.close(os.open("vm", os.O_RDONLY, dir_fd=fd))  # a directory's lookup: ENOENT
        os.unlink("vm", dir_fd=fd)
    except OSError:
        pass
    file = os.open("vm", os.O_RDWR | os.O_CREAT, 0o600, dir_fd=fd)
    os.close(file)
    os.unlink("vm", dir_fd=fd)
print("done", flush=True)
"""


def test_an_unprivileged_user_cannot_make_trace_lines_unbounded(start_gmemfs):
    """Any user of an allow_other mount can nest directories without end (openat needs no
    PATH_MAX-long path): an event names its file by its whole path, so one user's deep file makes
    every root reader's line, and its 4096-line buffer, as large as that user likes. A line should
    stay within what a path may be (PATH_MAX) plus the event's other fields."""
    daemon = start_gmemfs("-o", "allow_other,mode=1777,pagesize=2M")
    trace = TraceCommand(daemon.mountpoint)
    try:
        result = as_nobody(SYSTEM_PYTHON, "-c", DEEP_TREE, str(daemon.mountpoint), "200", "3")
        assert result.returncode == 0, result.stderr
        assert trace.wait_for(lambda line: '"what":"create"' in line and "ddd" in line)
    finally:
        trace.stop()
    longest = max(len(line) for line in trace.lines if "ddd" in line)
    assert longest <= 4096 + 1024, f"a trace line of {longest} bytes, made by nobody"


def test_the_trace_file_is_reached_by_name_only_in_the_root_directory(start_gmemfs):
    """Only ROOT_INO/.gmemfs-trace is the trace file; the same name elsewhere is an ordinary name."""
    daemon = start_gmemfs("-o", "pagesize=2M")
    (daemon.mountpoint / "dir").mkdir()
    os.close(open_gmem(daemon.mountpoint / "dir", os.fsdecode(TRACE_FILE), size=PAGE_2M))
    assert os.stat(daemon.mountpoint / "dir" / os.fsdecode(TRACE_FILE)).st_size == PAGE_2M
    assert os.stat(daemon.mountpoint / "dir" / ".." / os.fsdecode(TRACE_FILE)).st_mode == 0o100400


def test_sizing_and_eviction_events_match_the_pools_reservations(start_gmemfs):
    """A VMM reads reserved_pages and the pool from the trace: they must be what the kernel holds
    (HugePages_Rsvd moves by the reservation; the evict event's pool is the pool after)."""
    from gmemfs.base.hugepages import pool_counters

    daemon = start_gmemfs("-o", "pagesize=2M")
    trace = TraceCommand(daemon.mountpoint)
    try:
        before = pool_counters(PAGE_2M)
        fd = open_gmem(daemon.mountpoint, "vm", size=4 * PAGE_2M)
        sized = pool_counters(PAGE_2M)
        fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, PAGE_2M)
        allocated = pool_counters(PAGE_2M)  # the page took one reservation: 3 are left to release
        os.close(fd)
        os.unlink(daemon.mountpoint / "vm")
        assert trace.wait_for(lambda line: '"what":"evict"' in line)
        after = pool_counters(PAGE_2M)
    finally:
        trace.stop()
    events = {event.what: event for event in of_file(trace.events(), "vm")}
    assert events["size"].detail["reserved_pages"] == sized.reserved - before.reserved == 4
    assert events["size"].detail["pool"]["reserved"] == sized.reserved
    evict = events["evict"].detail
    assert allocated.reserved - before.reserved == 3
    assert (evict["pages_freed"], evict["reserved_pages_released"]) == (1, allocated.reserved - before.reserved)
    assert (evict["pool"]["reserved"], evict["pool"]["free"]) == (after.reserved, after.free)
