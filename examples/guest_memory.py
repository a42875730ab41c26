#!/usr/bin/env python3
"""Guest memory the way a VMM handles it, printing the hugetlb pool at each step.

Usage: examples/guest_memory.py MOUNTPOINT   (a gmemfs mount; needs 8 free 2 MiB pages)
"""

import os
import sys
import time

from gmemfs import (
    FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE,
    KVM_GUEST_MEMFD_HUGE_2MB,
    KVM_GUEST_MEMFD_HUGETLB,
    create_guest_memfd,
    fallocate,
)
from gmemfs.base.hugepages import pool_counters

PAGE = 2 << 20


def wait_for_release(before, timeout: float = 2.0) -> None:
    """Poll, bounded, until the pool is back where it was: eviction follows the last close closely."""
    deadline = time.monotonic() + timeout
    while pool_counters(PAGE) != before and time.monotonic() < deadline:
        time.sleep(0.005)


def show(step: str) -> None:
    pool = pool_counters(PAGE)
    print(f"{step:<44} free={pool.free:<5} reserved={pool.reserved}")


def main(mountpoint: str) -> None:
    start = pool_counters(PAGE)
    show("before")
    fd = create_guest_memfd(mountpoint, 8 * PAGE, KVM_GUEST_MEMFD_HUGETLB | KVM_GUEST_MEMFD_HUGE_2MB)
    show("created 16 MiB: 8 pages reserved")
    fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 4 * PAGE)
    show("allocated 4 pages: reserved -> in use")
    fallocate(fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, 0, 2 * PAGE)
    show("punched 2 pages: back in the file's subpool")
    os.close(fd)
    wait_for_release(start)  # the kernel's forget reaches the daemon just after the close
    show("closed the last fd: evicted, all released")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
