"""What VMM code imports: create a guest_memfd on a gmemfs mount and convert its pages,
with the kernel's ioctl numbers and errors."""

import errno
import fcntl
import os
import secrets
import struct

from .uapi import KVM_GMEM_CONVERT_PRIVATE, KVM_GMEM_CONVERT_SHARED, KVM_GMEM_CONVERT_STRUCT, XATTR_FLAGS


def create_guest_memfd(mountpoint: "str | os.PathLike[str]", size: int, flags: int = 0) -> int:
    """Return an anonymous gmem fd of `size` bytes, like KVM_CREATE_GUEST_MEMFD.

    Creates a file, sets its flags, sizes it (which reserves its huge pages),
    reopens it (the kernel fixes mmap support when a file is opened) and unlinks
    the name, so the memory lives exactly as long as the fd (and its dups and
    mappings). Raises OSError with the kernel's errno: EINVAL for bad flags or
    size, ENOMEM when the huge page pool cannot reserve it.
    """
    path = os.path.join(mountpoint, f".guest_memfd-{os.getpid()}-{secrets.token_hex(6)}")
    creator = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.setxattr(creator, XATTR_FLAGS, str(flags).encode())
        os.ftruncate(creator, size)
        fd = os.open(path, os.O_RDWR)
        os.set_inheritable(fd, True)  # get_unused_fd_flags(0): the kernel's fd has no close-on-exec
        return fd
    finally:
        os.unlink(path)
        os.close(creator)


class ConversionError(OSError):
    """A refused conversion; error_offset is the page that stopped it (EAGAIN)."""

    def __init__(self, err: int, error_offset: int) -> None:
        super().__init__(err, f"{os.strerror(err)} (error_offset {error_offset:#x})")
        self.error_offset = error_offset


def _convert(fd: int, request: int, offset: int, size: int) -> None:
    argument = bytearray(struct.pack(KVM_GMEM_CONVERT_STRUCT, offset, size, 0, *[0] * 5))
    try:
        fcntl.ioctl(fd, request, argument, True)
    except OSError as error:
        error_offset = struct.unpack(KVM_GMEM_CONVERT_STRUCT, argument)[2]
        if error.errno == errno.EAGAIN:
            raise ConversionError(error.errno, error_offset) from None
        raise


def convert_shared(fd: int, offset: int, size: int) -> None:
    """KVM_GMEM_CONVERT_SHARED: the host may map [offset, offset+size); private pages read as zero."""
    _convert(fd, KVM_GMEM_CONVERT_SHARED, offset, size)


def convert_private(fd: int, offset: int, size: int) -> None:
    """KVM_GMEM_CONVERT_PRIVATE: the host loses access; EAGAIN (ConversionError) while it holds a page."""
    _convert(fd, KVM_GMEM_CONVERT_PRIVATE, offset, size)
