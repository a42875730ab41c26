"""A mount only one process tree sees: how `gmemfs run` keeps its mount from leaking.

The daemon moves itself into a new mount namespace before mounting, so the
mount exists only there: when the daemon ends, however it ends, the namespace
and the mount go with it, and no other process ever saw it in its mount table.
The supervisor reaches it through /proc/DAEMON/root. The daemon also dies with
the supervisor (PR_SET_PDEATHSIG), so a killed supervisor leaves no daemon.
Every private mount is made on the same directory, each in its own namespace
(private_mountpoint): no run makes a directory of its own to leave behind.
"""

import contextlib
import os
import signal
import stat
import tempfile

from ..base.libc import check, libc
from ..base.namespaces import CLONE_NEWNS

CAP_SYS_ADMIN = 21
MOUNTPOINT_NAME = "gmemfs-run"
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


def may_make_private_mounts() -> bool:
    """Whether we have CAP_SYS_ADMIN, which a mount namespace of our own (and mounting) needs."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_SYS_ADMIN & 1)
    return False


def private_mountpoint() -> str:
    """The directory that private mounts are made on, each in its own mount namespace: outside
    them it is always empty, so however a run ends (its daemon killed with it), nothing stays
    behind. Made once, under /run (or the temporary directory): a directory of ours, 0700."""
    base = "/run" if os.path.isdir("/run") else tempfile.gettempdir()
    path = os.path.join(base, MOUNTPOINT_NAME)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    status = os.lstat(path)
    if not stat.S_ISDIR(status.st_mode) or status.st_uid != os.geteuid() or status.st_mode & 0o077:
        raise OSError(f"{path} is not a directory of ours that only we may use: remove it")
    return path
