"""-o busy_poll: the daemon looks for the next request before it sleeps (pyfuse3 patch 0006).

Counted by the daemon's voluntary context switches: each is one sleep, and on a VM every sleep
costs the next request a cross-CPU wake-up through the hypervisor.
"""

import os

from support.syscalls import PUNCH

from gmemfs import create_guest_memfd, fallocate

REQUESTS = 300


def sleeps_per_request(daemon) -> float:
    def sleeps() -> int:
        with open(f"/proc/{daemon.pid}/status") as status:
            return sum(int(line.split()[1]) for line in status if line.startswith("voluntary_ctxt_switches"))

    fd = create_guest_memfd(str(daemon.mountpoint), 1 << 20)
    try:
        fallocate(fd, PUNCH, 0, 1 << 20)
        before = sleeps()
        for _ in range(REQUESTS):
            fallocate(fd, PUNCH, 0, 1 << 20)
        return (sleeps() - before) / REQUESTS
    finally:
        os.close(fd)


def test_back_to_back_requests_find_the_daemon_awake(start_gmemfs):
    assert sleeps_per_request(start_gmemfs()) < 0.05  # measured: 0.003


def test_busy_poll_0_sleeps_between_requests(start_gmemfs):
    """Without polling the daemon sleeps whenever no request waits. Back to back on two CPUs,
    the caller's next request is sometimes queued already: measured 0.96-1.0 on a quiet machine,
    0.48-0.50 in full-suite runs; the default's 0.003 is two orders of magnitude below."""
    assert sleeps_per_request(start_gmemfs("-o", "busy_poll=0")) > 0.2
