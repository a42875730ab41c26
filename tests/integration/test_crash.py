"""SIGKILL in the middle of work: the kernel gets every huge page back, and the mountpoint recovers."""

import errno
import multiprocessing
import os
import subprocess
import time

import pytest
from support.mount import GmemfsProcess, is_mounted, wait_until
from support.pools import PAGE_2M, wait_for_counters

from gmemfs import (
    KVM_GUEST_MEMFD_HUGE_2MB,
    KVM_GUEST_MEMFD_HUGETLB,
    convert_private,
    convert_shared,
    create_guest_memfd,
    fallocate,
)
from gmemfs.base.hugepages import pool_counters

HUGE_2M = KVM_GUEST_MEMFD_HUGETLB | KVM_GUEST_MEMFD_HUGE_2MB


def allocate_forever(mountpoint):
    fd = create_guest_memfd(mountpoint, 32 * PAGE_2M, HUGE_2M)
    while True:
        fallocate(fd, 0x1, 0, 32 * PAGE_2M)  # large: runs in the daemon's worker thread
        fallocate(fd, 0x3, 0, 32 * PAGE_2M)


def convert_forever(mountpoint):
    fd = create_guest_memfd(mountpoint, 8 * PAGE_2M, HUGE_2M)
    fallocate(fd, 0x1, 0, 8 * PAGE_2M)
    while True:
        convert_shared(fd, 0, 8 * PAGE_2M)
        convert_private(fd, 0, 8 * PAGE_2M)


def evict_forever(mountpoint):
    while True:
        fd = create_guest_memfd(mountpoint, 4 * PAGE_2M, HUGE_2M)
        fallocate(fd, 0x1, 0, 2 * PAGE_2M)
        os.close(fd)


@pytest.mark.parametrize("work", [allocate_forever, convert_forever, evict_forever], ids=lambda w: w.__name__)
def test_sigkill_during_work_returns_every_page_within_a_second(start_gmemfs, work):
    baseline = pool_counters(PAGE_2M)
    daemon = start_gmemfs("-o", "pagesize=2M")
    worker = multiprocessing.get_context("fork").Process(target=work, args=(str(daemon.mountpoint),))
    worker.start()
    try:

        def held() -> int:
            now = pool_counters(PAGE_2M)
            return (baseline.free - now.free) + (now.reserved - baseline.reserved)

        assert wait_until(lambda: held() > 0, 5), "the daemon holds pages when it dies"
        assert worker.is_alive(), "the workload itself failed before the kill"
        killed_at = time.monotonic()
        daemon.kill()
        after = wait_for_counters(PAGE_2M, baseline.reserved, baseline.free, timeout=1.0)
        assert (after.free, after.reserved) == (baseline.free, baseline.reserved)
        assert time.monotonic() - killed_at <= 1.5
    finally:
        worker.kill()
        worker.join(10)
    with pytest.raises(OSError) as info:
        os.listdir(daemon.mountpoint)  # a request (a cached stat of the root could still answer)
    assert info.value.errno == errno.ENOTCONN
    subprocess.run(["fusermount3", "-u", str(daemon.mountpoint)], check=True)
    assert not is_mounted(daemon.mountpoint)
    again = GmemfsProcess(daemon.mountpoint, ["-o", "pagesize=2M"])
    try:
        fd = create_guest_memfd(daemon.mountpoint, 2 * PAGE_2M, HUGE_2M)
        assert pool_counters(PAGE_2M).reserved == baseline.reserved + 2, "a new mount works"
        os.close(fd)
    finally:
        again.stop()
