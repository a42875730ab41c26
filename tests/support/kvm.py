"""The real kernel's guest_memfd (mainline, via /dev/kvm): the reference for 4 KiB rules."""

import fcntl
import os
import struct

KVMIO = 0xAE
KVM_CREATE_VM = (KVMIO << 8) | 0x01
KVM_CHECK_EXTENSION = (KVMIO << 8) | 0x03
KVM_CAP_GUEST_MEMFD = 234
KVM_CAP_VM_TYPES = 235
KVM_CAP_GUEST_MEMFD_FLAGS = 244
KVM_CREATE_GUEST_MEMFD = (3 << 30) | (64 << 16) | (KVMIO << 8) | 0xD4  # _IOWR(KVMIO, 0xd4, 64 bytes)


def why_no_kvm() -> "str | None":
    """None if this machine can make mainline guest_memfds, else the reason."""
    if not os.path.exists("/dev/kvm"):
        return "/dev/kvm is missing"
    try:
        kvm = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as error:
        return f"/dev/kvm: {error.strerror}"
    try:
        if fcntl.ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_GUEST_MEMFD) != 1:
            return "the kernel lacks KVM_CAP_GUEST_MEMFD"
    finally:
        os.close(kvm)
    return None


class KvmVm:
    """A VM fd, which is all KVM_CREATE_GUEST_MEMFD needs."""

    def __init__(self) -> None:
        kvm = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
        try:
            self.fd = fcntl.ioctl(kvm, KVM_CREATE_VM, 0)
        finally:
            os.close(kvm)

    def create_guest_memfd(self, size: int, flags: int = 0) -> int:
        request = bytearray(struct.pack("=QQ6Q", size & (2**64 - 1), flags, *[0] * 6))
        return fcntl.ioctl(self.fd, KVM_CREATE_GUEST_MEMFD, request, True)

    def close(self) -> None:
        os.close(self.fd)
