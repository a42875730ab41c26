"""Spec section 7: a gmem file's memory lives exactly as long as something can reach it."""

import contextlib
import errno
import os
import signal
import subprocess

import pytest
from support.files import open_gmem
from support.mount import is_mounted, wait_until
from support.pools import PAGE_2M, wait_for_counters
from support.syscalls import KEEP_SIZE, fallocate_result

from gmemfs import KVM_GUEST_MEMFD_HUGE_2MB, KVM_GUEST_MEMFD_HUGETLB, create_guest_memfd
from gmemfs.base.hugepages import pool_counters
from gmemfs.daemon.operations import THREADED_CHANGE

N = 4


@pytest.fixture
def baseline(huge_pools):
    return pool_counters(PAGE_2M)


def assert_pool_back(baseline, timeout=5.0):
    after = wait_for_counters(PAGE_2M, baseline.reserved, baseline.free, timeout)
    assert (after.free, after.reserved) == (baseline.free, baseline.reserved)


def fill(mountpoint, name, allocated_pages=1):
    fd = open_gmem(mountpoint, name, size=N * PAGE_2M)
    assert fallocate_result(fd, KEEP_SIZE, 0, allocated_pages * PAGE_2M) == "OK"
    return fd


def test_unmount_releases_every_file(start_gmemfs, baseline):
    daemon = start_gmemfs("-o", "pagesize=2M")
    for name in ("a", "b"):
        os.close(fill(daemon.mountpoint, name))
    assert pool_counters(PAGE_2M).reserved == baseline.reserved + 2 * N - 2
    subprocess.run(["fusermount3", "-u", str(daemon.mountpoint)], check=True)
    assert daemon.process.wait(timeout=10) == 0
    assert_pool_back(baseline)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_unmounts_cleanly_and_releases(start_gmemfs, baseline, sig):
    daemon = start_gmemfs("-o", "pagesize=2M")
    os.close(fill(daemon.mountpoint, "a"))
    daemon.process.send_signal(sig)
    assert daemon.process.wait(timeout=10) == 0, daemon.output()
    assert not is_mounted(daemon.mountpoint)
    assert_pool_back(baseline)
    assert "unmounted" in daemon.output()


def test_sigkill_leaks_nothing(start_gmemfs, baseline):
    daemon = start_gmemfs("-o", "pagesize=2M")
    fd = fill(daemon.mountpoint, "a", allocated_pages=2)  # still open while the daemon dies
    try:
        daemon.kill()
        assert_pool_back(baseline, timeout=1.0)
        assert fallocate_result(fd, KEEP_SIZE, 0, PAGE_2M) == "ENOTCONN"
    finally:
        with contextlib.suppress(ConnectionAbortedError, OSError):
            os.close(fd)  # closes the fd, though the flush reports ENOTCONN
    with pytest.raises(OSError) as info:
        os.listdir(daemon.mountpoint)  # a request (a cached stat of the root could still answer)
    assert info.value.errno == errno.ENOTCONN
    subprocess.run(["fusermount3", "-u", str(daemon.mountpoint)], check=True)
    assert not is_mounted(daemon.mountpoint)


def test_eviction_waits_for_the_last_fd(start_gmemfs, baseline):
    daemon = start_gmemfs("-o", "pagesize=2M")
    fd = fill(daemon.mountpoint, "a")
    second = os.open(daemon.mountpoint / "a", os.O_RDWR)
    os.unlink(daemon.mountpoint / "a")
    os.close(fd)
    assert not wait_until(lambda: pool_counters(PAGE_2M).reserved == baseline.reserved, timeout=0.3)
    os.close(second)
    assert_pool_back(baseline)


def test_renamed_and_hard_linked_file_keeps_its_memory(start_gmemfs, baseline):
    daemon = start_gmemfs("-o", "pagesize=2M")
    os.close(fill(daemon.mountpoint, "a"))
    (daemon.mountpoint / "dir").mkdir()
    os.rename(daemon.mountpoint / "a", daemon.mountpoint / "dir" / "b")
    os.link(daemon.mountpoint / "dir" / "b", daemon.mountpoint / "c")
    os.unlink(daemon.mountpoint / "dir" / "b")
    assert not wait_until(lambda: pool_counters(PAGE_2M).reserved == baseline.reserved, timeout=0.3)
    assert os.stat(daemon.mountpoint / "c").st_blocks == PAGE_2M // 512
    os.unlink(daemon.mountpoint / "c")
    assert_pool_back(baseline)


def test_rename_over_a_file_evicts_the_replaced_one(start_gmemfs, baseline):
    daemon = start_gmemfs("-o", "pagesize=2M")
    os.close(fill(daemon.mountpoint, "a"))
    os.close(fill(daemon.mountpoint, "b"))
    os.rename(daemon.mountpoint / "a", daemon.mountpoint / "b")
    after = wait_for_counters(PAGE_2M, baseline.reserved + N - 1, baseline.free - 1)
    assert (after.free, after.reserved) == (baseline.free - 1, baseline.reserved + N - 1)


def refused_recreations(mountpoint, tries: int, allocate: bool) -> int:
    """How many of `tries` creations of a pool-sized file, each right after closing the last
    (its pages allocated first if asked), found the pool still reserved (ENOMEM)."""
    pages = pool_counters(PAGE_2M).available
    huge_2m = KVM_GUEST_MEMFD_HUGETLB | KVM_GUEST_MEMFD_HUGE_2MB
    refused = 0
    for _ in range(tries):
        try:
            fd = create_guest_memfd(mountpoint, pages * PAGE_2M, huge_2m)
        except OSError as error:
            assert error.errno == errno.ENOMEM
            refused += 1
            continue
        if allocate:
            assert fallocate_result(fd, KEEP_SIZE, 0, pages * PAGE_2M) == "OK"
        os.close(fd)
    return refused


def test_a_pool_sized_file_can_be_created_right_after_the_last_one_was_closed(start_gmemfs):
    """The reservation goes back at the last close's RELEASE, not at the FORGET after it: the next
    creation (queued behind that RELEASE) always finds the pool free. Before: ENOMEM in 6 and 13
    of 3,000 tries."""
    daemon = start_gmemfs("-o", "pagesize=2M")
    assert refused_recreations(daemon.mountpoint, 3000, allocate=False) == 0


def test_a_pool_sized_file_can_be_created_right_after_the_last_one_was_closed_with_its_pages_allocated(
    start_gmemfs,
):
    """Allocated pages that many are freed in a worker thread, while the loop goes on to the next
    creation: sizing waits for that release, as it would have been done by the last close."""
    daemon = start_gmemfs("-o", "pagesize=2M")
    assert pool_counters(PAGE_2M).available * PAGE_2M >= THREADED_CHANGE
    assert refused_recreations(daemon.mountpoint, 300, allocate=True) == 0
