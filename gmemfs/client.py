"""What VMM code imports: create a guest_memfd on a gmemfs mount and convert its pages,
with the kernel's ioctl numbers and errors."""

import contextlib
import errno
import fcntl
import os
import secrets
import struct

from .kernel.uapi import (
    KVM_GMEM_CONVERT_PRIVATE,
    KVM_GMEM_CONVERT_SHARED,
    KVM_GMEM_CONVERT_STRUCT,
    KVM_SET_MEMORY_ATTRIBUTES2,
    KVM_SET_MEMORY_ATTRIBUTES2_STRUCT,
    XATTR_FLAGS,
    XATTR_PAGE_ORDER,
)


def create_guest_memfd(mountpoint: "str | os.PathLike[str]", size: int, flags: int = 0, page_order: int = 0) -> int:
    """Return an anonymous gmem fd of `size` bytes, like KVM_CREATE_GUEST_MEMFD.

    Creates a file, unlinks its name at once, sets its flags (and, on a hugetlb-2025 mount,
    kvm_create_guest_memfd's page_order: 9 for 2 MiB, 18 for 1 GiB), sizes it (which reserves its
    huge pages) and reopens it (the kernel fixes mmap support when a file is opened), so the
    memory lives exactly as long as the fd (and its dups and mappings). The kernel's file has
    no name: here the name is never used after the creation, and the reopening goes through
    the creating fd, so no other user who may write the directory can slip a file of theirs
    in. Raises OSError with the kernel's errno: EINVAL for bad flags or size, ENOMEM when the
    huge page pool cannot reserve it.
    """
    creator = _create_unnamed(mountpoint)
    try:
        os.setxattr(creator, XATTR_FLAGS, str(flags).encode())
        if page_order:
            os.setxattr(creator, XATTR_PAGE_ORDER, str(page_order).encode())
        os.ftruncate(creator, size)
        fd = os.open(f"/proc/self/fd/{creator}", os.O_RDWR)  # the same inode, never a name
        os.set_inheritable(fd, True)  # get_unused_fd_flags(0): the kernel's fd has no close-on-exec
        return fd
    finally:
        os.close(creator)


def _create_unnamed(mountpoint: "str | os.PathLike[str]") -> int:
    """An O_RDWR fd of a new file whose name is already gone (FUSE has no O_TMPFILE)."""
    while True:
        path = os.path.join(mountpoint, f".guest_memfd-{os.getpid()}-{secrets.token_hex(6)}")
        try:
            creator = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:  # someone else took the name first: ours must be new
            continue
        # If another user renamed a file over the name, theirs goes; if they moved ours away, it
        # keeps their name (0600: they cannot open it). Either way `creator` is ours.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return creator


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


def set_memory_attributes(fd: int, offset: int, size: int, attributes: int) -> None:
    """KVM_SET_MEMORY_ATTRIBUTES2 on the guest_memfd (inplace-v7, hugetlb-2025): PRIVATE (1 << 3)
    or 0 (shared) for [offset, offset+size); EAGAIN (ConversionError, with the page that stopped
    it) while the host holds a page."""
    argument = bytearray(struct.pack(KVM_SET_MEMORY_ATTRIBUTES2_STRUCT, offset, size, attributes, 0, 0, *[0] * 11))
    try:
        fcntl.ioctl(fd, KVM_SET_MEMORY_ATTRIBUTES2, argument, True)
    except OSError as error:
        if error.errno == errno.EAGAIN:
            raise ConversionError(error.errno, struct.unpack(KVM_SET_MEMORY_ATTRIBUTES2_STRUCT, argument)[4]) from None
        raise
