"""Several processes allocating, punching and converting, on shared and separate files, for a bounded time."""

import multiprocessing
import os
import random
import time

from support.pools import PAGE_2M, wait_for_counters
from support.syscalls import convert, fallocate_result

from gmemfs import KVM_GUEST_MEMFD_HUGE_2MB, KVM_GUEST_MEMFD_HUGETLB
from gmemfs.base.hugepages import pool_counters
from gmemfs.base.ranges import parse_ranges

PROCESSES = 4
SECONDS = 3.0
PAGES = 8
HUGE_2M = KVM_GUEST_MEMFD_HUGETLB | KVM_GUEST_MEMFD_HUGE_2MB


def hammer(paths, seed, results):
    """Random valid calls on every file; report each errno seen (only 'OK' is in the spec for these)."""
    rng = random.Random(seed)
    fds = [os.open(path, os.O_RDWR) for path in paths]
    seen = {}
    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline:
        fd = rng.choice(fds)
        first = rng.randrange(PAGES)
        count = rng.randint(1, PAGES - first)
        kind = rng.choice(["allocate", "punch", "shared", "private"])
        if kind in ("allocate", "punch"):
            mode = 0x1 if kind == "allocate" else 0x3
            result = fallocate_result(fd, mode, first * PAGE_2M, count * PAGE_2M)
        else:
            offset = first * PAGE_2M + rng.randrange(0, PAGE_2M, 4096)
            size = min(4096 * rng.randint(1, 64), PAGES * PAGE_2M - offset)
            result, _ = convert(fd, kind, offset, size)
        seen[result] = seen.get(result, 0) + 1
    for fd in fds:
        os.close(fd)
    results.put(seen)


def test_concurrent_processes_no_deadlock_exact_counters(start_gmemfs):
    daemon = start_gmemfs("-o", "pagesize=2M")
    baseline = pool_counters(PAGE_2M)  # taken before the files exist
    paths = []
    for name in ("shared-a", "shared-b", *[f"own-{i}" for i in range(PROCESSES)]):
        path = daemon.mountpoint / name
        fd = os.open(path, os.O_CREAT | os.O_RDWR)
        os.ftruncate(fd, PAGES * PAGE_2M)
        os.close(fd)
        paths.append(path)
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    workers = [
        context.Process(target=hammer, args=([paths[0], paths[1], paths[2 + i]], i, results)) for i in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(SECONDS + 30)
        assert worker.exitcode == 0, "a worker hung or died"
    seen = {}
    for _ in workers:
        for result, count in results.get(timeout=5).items():
            seen[result] = seen.get(result, 0) + count
    assert set(seen) == {"OK"}, seen
    print(f"concurrency: {PROCESSES} processes, {SECONDS} s, {sum(seen.values())} calls")
    allocated = sum(parse_ranges(os.getxattr(path, "user.gmem.allocated").decode()).total for path in paths)
    reserved = len(paths) * PAGES - allocated // PAGE_2M
    now = pool_counters(PAGE_2M)
    assert (now.free, now.reserved) == (baseline.free - allocated // PAGE_2M, baseline.reserved + reserved)
    for path in paths:
        os.unlink(path)
    after = wait_for_counters(PAGE_2M, baseline.reserved, baseline.free)
    assert (after.free, after.reserved) == (baseline.free, baseline.reserved)
