"""Entering another mount namespace, as mount(8) -N asks of a mount helper."""

import os

from .libc import check, libc

CLONE_NEWNS = 0x00020000


def enter_mount_namespace(path: str) -> None:
    """Move this (still single-threaded) process into the mount namespace `path` names
    (/proc/PID/ns/mnt, or the fd mount(8) passes); setns(2) also moves root and cwd there.

    The process and its code stay the ones the host started: `nsenter` would look the program
    up again in the namespace, whose files (a container's) may differ, and run them as root."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        check(libc.setns(fd, CLONE_NEWNS), f"setns({path}, CLONE_NEWNS)")
    finally:
        os.close(fd)
