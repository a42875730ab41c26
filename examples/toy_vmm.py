#!/usr/bin/env python3
"""A toy VMM: guest memory from gmemfs, used the way a confidential-VM VMM uses guest_memfd.

It creates the memory with create_guest_memfd, loads a payload through a shared
mapping, converts it private for the guest, serves the guest's request to share
a page back (conversions are in place: it keeps its contents), and releases everything, printing the
hugetlb counters at each step. Its own checks make it exit non-zero if gmemfs
misbehaves.

Usage: examples/toy_vmm.py MOUNTPOINT   (a gmemfs mount; needs 8 free 2 MiB huge pages)
"""

import mmap
import os
import signal
import sys
import time

from gmemfs import (
    FALLOC_FL_KEEP_SIZE,
    KVM_GUEST_MEMFD_HUGE_2MB,
    KVM_GUEST_MEMFD_HUGETLB,
    convert_private,
    convert_shared,
    create_guest_memfd,
    fallocate,
)
from gmemfs.base.hugepages import pool_counters

PAGE = 2 << 20
GUEST_MEMORY = 8 * PAGE
PAYLOAD = b"\x7fELF toy guest kernel " * 1000


def wait_for_release(before, timeout: float = 2.0) -> None:
    """Poll, bounded, until the pool is back where it was: eviction follows the last close closely."""
    deadline = time.monotonic() + timeout
    while pool_counters(PAGE) != before and time.monotonic() < deadline:
        time.sleep(0.005)


def counters(step: str) -> None:
    pool = pool_counters(PAGE)
    print(f"[vmm] {step:<58} free={pool.free:<4} reserved={pool.reserved}")


def host_can_read(fd: int, offset: int) -> bool:
    """Touch a page from a child process: a private page kills it with SIGBUS."""
    pid = os.fork()
    if pid == 0:
        import faulthandler

        faulthandler.disable()
        with mmap.mmap(fd, mmap.PAGESIZE, mmap.MAP_SHARED, offset=offset) as view:
            view[0]
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    return not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGBUS)


def check(condition: bool, what: str) -> None:
    if not condition:
        sys.exit(f"[vmm] FAILED: {what}")


def main(mountpoint: str) -> None:
    start = pool_counters(PAGE)
    counters("start")
    memory = create_guest_memfd(mountpoint, GUEST_MEMORY, KVM_GUEST_MEMFD_HUGETLB | KVM_GUEST_MEMFD_HUGE_2MB)
    counters("guest memory created: 8 huge pages reserved")

    fallocate(memory, FALLOC_FL_KEEP_SIZE, 0, GUEST_MEMORY)
    counters("all guest memory allocated up front")

    convert_shared(memory, 0, PAGE)
    with mmap.mmap(memory, GUEST_MEMORY, mmap.MAP_SHARED) as guest:
        guest[: len(PAYLOAD)] = PAYLOAD
        guest.flush()
        counters("payload loaded through the shared mapping")

        convert_private(memory, 0, PAGE)
        check(not host_can_read(memory, 0), "the host still reads private memory")
        counters("payload converted private: the guest owns it")

        shared_buffer = 7 * PAGE + 4096  # the guest asks to share one 4 KiB page for I/O
        convert_shared(memory, shared_buffer, 4096)
        check(guest[shared_buffer : shared_buffer + 16] == bytes(16), "a never-written page does not read as zeros")
        guest[shared_buffer : shared_buffer + 11] = b"virtio: ok\n"
        check(host_can_read(memory, shared_buffer), "the host cannot reach a shared page")
        check(not host_can_read(memory, shared_buffer + 4096), "the next 4 KiB page should stay private")
        counters("guest shared a 4 KiB I/O page back (never written: zeros; conversions keep contents)")

    os.close(memory)
    wait_for_release(start)  # the kernel's forget reaches the daemon just after the close
    counters("VM torn down: every page and reservation released")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
