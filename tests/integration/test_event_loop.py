"""One user's large page change leaves the daemon's loop to everyone else (issue 17: a 2 GiB
punch held it 272 ms, and another user's stat waited 258 ms)."""

import contextlib
import os
import threading
import time

from support.files import open_gmem
from support.mount import wait_until
from support.syscalls import KEEP_SIZE, PUNCH, fallocate_result

FILE = 3 << 30  # of 4 KiB pages: the kernel takes ~0.4 s to punch or free it
SLOW_WORK = 0.25  # the work must take this long for the test to show anything
STAT_ANSWERED_WITHIN = 0.1


class StatProbe(threading.Thread):
    """Another client stat()ing a file in a loop, timing the slowest answer (cache_timeout=0:
    every stat is a LOOKUP the daemon answers)."""

    def __init__(self, path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.slowest = 0.0
        self.stats = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            start = time.perf_counter()
            os.stat(self.path)
            self.slowest = max(self.slowest, time.perf_counter() - start)
            self.stats += 1


@contextlib.contextmanager
def stat_probe(path):
    probe = StatProbe(path)
    probe.start()
    try:
        yield probe
    finally:
        probe.done.set()
        probe.join(timeout=10)


def shmem_bytes() -> int:
    with open("/proc/meminfo") as meminfo:
        return next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("Shmem:"))


def mount_with_a_large_allocated_file(start_gmemfs):
    daemon = start_gmemfs("-o", "cache_timeout=0")
    os.close(open_gmem(daemon.mountpoint, "other"))
    fd = open_gmem(daemon.mountpoint, "large", size=FILE)
    assert fallocate_result(fd, KEEP_SIZE, 0, FILE) == "OK"
    return daemon, fd


def test_a_large_punch_leaves_the_loop_to_other_users(start_gmemfs):
    daemon, fd = mount_with_a_large_allocated_file(start_gmemfs)
    try:
        with stat_probe(daemon.mountpoint / "other") as probe:
            time.sleep(0.02)
            start = time.perf_counter()
            assert fallocate_result(fd, PUNCH, 0, FILE) == "OK"
            punch = time.perf_counter() - start
            time.sleep(0.02)
        assert os.fstat(fd).st_blocks == 0
    finally:
        os.close(fd)
    assert punch >= SLOW_WORK, f"the punch took {punch * 1000:.0f} ms: too fast to show a stall here"
    assert probe.slowest < STAT_ANSWERED_WITHIN, (
        f"a stat waited {probe.slowest * 1000:.0f} ms while the punch took {punch * 1000:.0f} ms"
    )


def test_evicting_a_large_file_leaves_the_loop_to_other_users(start_gmemfs):
    daemon, fd = mount_with_a_large_allocated_file(start_gmemfs)
    os.unlink(daemon.mountpoint / "large")
    held = shmem_bytes()
    with stat_probe(daemon.mountpoint / "other") as probe:
        time.sleep(0.02)
        start = time.perf_counter()
        os.close(fd)  # the last reference: the kernel's forget follows, then the eviction
        assert wait_until(lambda: shmem_bytes() < held - FILE * 9 // 10, 10, interval=0.001)
        eviction = time.perf_counter() - start
        time.sleep(0.02)
    assert eviction >= SLOW_WORK, f"the eviction took {eviction * 1000:.0f} ms: too fast to show a stall here"
    assert probe.slowest < STAT_ANSWERED_WITHIN, (
        f"a stat waited {probe.slowest * 1000:.0f} ms while the eviction took {eviction * 1000:.0f} ms"
    )
