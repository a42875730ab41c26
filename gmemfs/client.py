"""What VMM code imports: create a guest_memfd on a gmemfs mount, as the kernel ioctl does."""

import os
import secrets

from .uapi import XATTR_FLAGS


def create_guest_memfd(mountpoint: "str | os.PathLike[str]", size: int, flags: int = 0) -> int:
    """Return an anonymous gmem fd of `size` bytes, like KVM_CREATE_GUEST_MEMFD.

    Creates a file, sets its flags, sizes it (which reserves its huge pages)
    and unlinks the name, so the memory lives exactly as long as the fd (and
    its dups and mappings). Raises OSError with the kernel's errno: EINVAL for
    bad flags or size, ENOMEM when the huge page pool cannot reserve it.
    """
    path = os.path.join(mountpoint, f".guest_memfd-{os.getpid()}-{secrets.token_hex(6)}")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.unlink(path)
        os.setxattr(fd, XATTR_FLAGS, str(flags).encode())
        os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        raise
    return fd
