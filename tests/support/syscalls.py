"""System calls as tests state them: 'this call, these arguments, this errno'."""

import errno
import os

from gmemfs.base.libc import fallocate
from gmemfs.kernel.uapi import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE

KEEP_SIZE = FALLOC_FL_KEEP_SIZE
PUNCH = FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE


def errno_name(err: int) -> str:
    """EOPNOTSUPP, not its Linux alias ENOTSUP: the name the spec uses."""
    return "EOPNOTSUPP" if err == errno.EOPNOTSUPP else errno.errorcode.get(err, str(err))


def errno_of(call, *args) -> str:
    """'OK' or the errno's name, so that a failed assertion reads like the spec."""
    try:
        call(*args)
    except OSError as error:
        return errno_name(error.errno)
    return "OK"


def fallocate_result(fd: int, mode: int, offset: int, length: int) -> str:
    return errno_of(fallocate, fd, mode, offset, length)


def set_flags(fd: int, flags: int) -> None:
    os.setxattr(fd, b"user.gmem.flags", str(flags).encode())


def xattr(fd_or_path, name: str) -> str:
    return os.getxattr(fd_or_path, f"user.gmem.{name}").decode()


def convert(fd: int, to: str, offset: int, size: int, error_offset: int = 0) -> "tuple[str, int]":
    """Issue KVM_GMEM_CONVERT_SHARED/PRIVATE with the kernel's struct; (errno name, error_offset after)."""
    import fcntl
    import struct

    from gmemfs.kernel.uapi import KVM_GMEM_CONVERT_PRIVATE, KVM_GMEM_CONVERT_SHARED

    request = {"shared": KVM_GMEM_CONVERT_SHARED, "private": KVM_GMEM_CONVERT_PRIVATE}[to]
    argument = bytearray(struct.pack("=QQQ5Q", offset, size, error_offset, *[0] * 5))
    result = errno_of(fcntl.ioctl, fd, request, argument, True)
    return result, struct.unpack("=QQQ5Q", argument)[2]


def set_attributes2(fd, offset, size, attributes, flags=0, error_offset=0, reserved=(0,) * 11) -> "tuple[str, int]":
    """KVM_SET_MEMORY_ATTRIBUTES2 (in-place conversion v7) on a guest_memfd: (errno name, error_offset after)."""
    import fcntl
    import struct

    from gmemfs.kernel.uapi import KVM_SET_MEMORY_ATTRIBUTES2, KVM_SET_MEMORY_ATTRIBUTES2_STRUCT

    fields = (offset, size, attributes, flags, error_offset, *reserved)
    argument = bytearray(struct.pack(KVM_SET_MEMORY_ATTRIBUTES2_STRUCT, *fields))
    result = errno_of(fcntl.ioctl, fd, KVM_SET_MEMORY_ATTRIBUTES2, argument, True)
    return result, struct.unpack(KVM_SET_MEMORY_ATTRIBUTES2_STRUCT, argument)[4]
