"""gmemfs: KVM guest_memfd files, with the hugetlb series' semantics, on a FUSE mount."""

from .client import create_guest_memfd
from .uapi import (
    FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE,
    KVM_GUEST_MEMFD_HUGE_1GB,
    KVM_GUEST_MEMFD_HUGE_2MB,
    KVM_GUEST_MEMFD_HUGE_8MB,
    KVM_GUEST_MEMFD_HUGE_16GB,
    KVM_GUEST_MEMFD_HUGE_16MB,
    KVM_GUEST_MEMFD_HUGE_32MB,
    KVM_GUEST_MEMFD_HUGE_64KB,
    KVM_GUEST_MEMFD_HUGE_256MB,
    KVM_GUEST_MEMFD_HUGE_512KB,
    KVM_GUEST_MEMFD_HUGE_512MB,
    KVM_GUEST_MEMFD_HUGE_1MB,
    KVM_GUEST_MEMFD_HUGE_2GB,
    KVM_GUEST_MEMFD_HUGE_MASK,
    KVM_GUEST_MEMFD_HUGE_SHIFT,
    KVM_GUEST_MEMFD_HUGETLB,
)

__all__ = [name for name in dir() if name.isupper()] + ["create_guest_memfd"]
