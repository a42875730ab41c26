"""The C library, for the system calls Python's os module lacks (fsopen, fallocate with a mode,
seccomp, pidfd_getfd, kcmp, unshare), and one way to turn their failures into OSError."""

import ctypes
import os

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def check(result: int, what: str) -> int:
    """result, or OSError with the call's errno when it failed (a negative result)."""
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """fallocate(2) with any mode (os.posix_fallocate has none): KEEP_SIZE, PUNCH_HOLE."""
    check(libc.fallocate(fd, mode, offset, length), "fallocate")
