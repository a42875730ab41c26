"""A signal to the caller stops a long allocation as the kernel's signal_pending() check does
(kvm_gmem_allocate, RFC v1 15/39): pages done so far stay, the call fails with EINTR."""

import errno
import os
import signal
import threading

from support.mount import wait_until
from support.syscalls import KEEP_SIZE, PUNCH, xattr

from gmemfs import create_guest_memfd
from gmemfs.base.libc import fallocate

GiB = 1 << 30


def test_a_signal_stops_a_long_allocation_with_eintr_and_keeps_its_pages(start_gmemfs):
    daemon = start_gmemfs()
    fd = create_guest_memfd(daemon.mountpoint, 8 * GiB, 0)
    outcome = []

    def allocate():
        try:
            fallocate(fd, KEEP_SIZE, 0, 8 * GiB)
            outcome.append("OK")
        except OSError as error:
            outcome.append(errno.errorcode[error.errno])

    previous = signal.signal(signal.SIGUSR1, lambda *args: None)  # not SA_RESTART: the call sees EINTR
    try:
        caller = threading.Thread(target=allocate)
        caller.start()
        assert wait_until(lambda: os.fstat(fd).st_blocks > 0, 10), "the allocation never started"
        signal.pthread_kill(caller.ident, signal.SIGUSR1)
        caller.join(60)
        done = os.fstat(fd).st_blocks * 512
        assert outcome == ["EINTR"]
        assert 0 < done < 8 * GiB, "the pages done before the signal stay allocated"
        assert xattr(fd, "allocated") == f"0x0-{done:#x}"
    finally:
        signal.signal(signal.SIGUSR1, previous)
        fallocate(fd, PUNCH, 0, 8 * GiB)
        os.close(fd)
