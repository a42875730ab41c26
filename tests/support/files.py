"""Making gmem files in a test directory."""

import os
from pathlib import Path

from support.syscalls import set_flags


def open_gmem(directory: Path, name: str = "gmem", size: "int | None" = None, flags: "int | None" = None) -> int:
    """Create a gmem file (flags first, then size, as creation requires) and return an O_RDWR fd."""
    fd = os.open(directory / name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        if flags is not None:
            set_flags(fd, flags)
        if size is not None:
            os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        raise
    return fd


def blocks_in_bytes(fd: int) -> int:
    return os.fstat(fd).st_blocks * 512
