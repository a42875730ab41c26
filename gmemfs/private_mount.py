"""A mount only one process tree sees: how `gmemfs run` keeps its mount from leaking.

The daemon moves itself into a new mount namespace before mounting, so the
mount exists only there: when the daemon ends, however it ends, the namespace
and the mount go with it, and no other process ever saw it in its mount table.
The supervisor reaches it through /proc/DAEMON/root. The daemon also dies with
the supervisor (PR_SET_PDEATHSIG), so a killed supervisor leaves no daemon.
"""

import os
import signal

from .libc import check, libc

CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
PR_SET_PDEATHSIG = 1


def enter_private_mount_namespace(supervisor: int) -> None:
    """Mount namespace of our own (nothing propagates back), and die with the supervisor."""
    check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "mount(/, MS_REC|MS_PRIVATE)")
    check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != supervisor:  # it died before the death signal was armed
        raise SystemExit(1)


def root_is_a_mount_point() -> bool:
    """Whether / is the root of a mount. In a plain chroot it is a directory inside one, whose
    propagation cannot be changed from there (mount(/, MS_REC|MS_PRIVATE) is EINVAL)."""
    with open("/proc/self/mountinfo") as mountinfo:
        return any(line.split()[4] == "/" for line in mountinfo)


def path_in(pid: int, path: str) -> str:
    """path as process pid sees it, from any mount namespace."""
    return f"/proc/{pid}/root{path}"
