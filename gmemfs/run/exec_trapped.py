"""Become PROGRAM with gmemfs's seccomp filter installed: the first step of `gmemfs run`.

Run as `python -m gmemfs.run.exec_trapped SOCKET_FD ABI COOKIE PROGRAM [ARGS...]` by the
supervisor (COOKIE: the ioctl argument that marks the supervisor's own calls). The filter is
installed here, in the child, just before exec, so that it covers PROGRAM, all its threads and
all its children, static binaries included; the listener fd goes back over SOCKET_FD.
"""

import os
import signal
import socket
import sys

from ..kernel.uapi import (
    ABI_PROFILES,
    KVM_CHECK_EXTENSION,
    KVM_CREATE_GUEST_MEMFD,
    KVM_CREATE_VM,
    KVM_SET_MEMORY_ATTRIBUTES,
    KVM_SET_USER_MEMORY_REGION,
    KVM_SET_USER_MEMORY_REGION2,
    AbiProfile,
)
from .seccomp import install_filter, ioctl_filter

EXEC_FAILED = 127  # as env(1) and the shells
TERMINAL_SIGNALS = (signal.SIGINT, signal.SIGQUIT)  # gmemfs run ignores them (the terminal sends them to PROGRAM)


def trapped_requests(profile: AbiProfile) -> list[int]:
    """The ioctls whose answer depends on guest_memfd support or on private memory: the
    supervisor sees these, and only these (conversions on a file: to lay out private VMs' slots)."""
    return [
        KVM_CREATE_VM,
        KVM_CHECK_EXTENSION,
        KVM_CREATE_GUEST_MEMFD,
        KVM_SET_USER_MEMORY_REGION,
        KVM_SET_USER_MEMORY_REGION2,
        KVM_SET_MEMORY_ATTRIBUTES,
        *profile.conversion_ioctls,
    ]


def main(argv: list[str]) -> int:
    socket_fd, abi, cookie, program = int(argv[0]), argv[1], int(argv[2]), argv[3:]
    try:
        listener, killable = install_filter(ioctl_filter(trapped_requests(ABI_PROFILES[abi]), cookie))
    except OSError as error:  # EBUSY: already under a seccomp notifier (gmemfs run in gmemfs run)
        print(f"gmemfs run: {error.strerror}", file=sys.stderr)
        return EXEC_FAILED
    with socket.socket(fileno=socket_fd) as channel:
        socket.send_fds(channel, [b"killable" if killable else b"interruptible"], [listener])
    os.close(listener)
    for signum in TERMINAL_SIGNALS:  # PROGRAM starts with the signal state of a fresh process
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    try:
        os.execvp(program[0], program)
    except OSError as error:
        print(f"gmemfs run: {program[0]}: {error.strerror}", file=sys.stderr)
        return EXEC_FAILED


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
