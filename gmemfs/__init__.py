"""gmemfs: KVM guest_memfd files, with the hugetlb series' semantics, on a FUSE mount.

The parts, each a folder, from the ground up; a part imports only the parts below it:

- base:     plumbing that knows nothing of guest_memfd (libc, sizes, ranges, pools, /proc)
- kernel:   the kernel's numbers, ABI profiles and rules, pure
- trace:    trace events, their words, the daemon's event stream and the merge of streams
- client:   what VMM code imports (create_guest_memfd, conversions), this module's names
- daemon:   the FUSE filesystem: operations, inodes, files, backing memory, conversions
- run:      `gmemfs run`: seccomp, supervisor, injection into the program, memslots
- commands: the operator's pool | status | map | convert | trace
- cli:      the `gmemfs` command, which mounts a daemon or hands over to run or a command

tests/unit/test_layout.py holds the code to this order.
"""

from .base.libc import fallocate
from .client import ConversionError, convert_private, convert_shared, create_guest_memfd, set_memory_attributes
from .kernel.uapi import (
    FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE,
    GUEST_MEMFD_FLAG_HUGETLB,
    GUEST_MEMFD_FLAG_HUGETLB_V2,
    GUEST_MEMFD_FLAG_INIT_PRIVATE,
    GUEST_MEMFD_FLAG_INIT_SHARED,
    GUEST_MEMFD_FLAG_MMAP,
    GUEST_MEMFD_FLAG_SUPPORT_SHARED,
    KVM_GMEM_CONVERT_PRIVATE,
    KVM_GMEM_CONVERT_SHARED,
    KVM_GUEST_MEMFD_HUGE_1GB,
    KVM_GUEST_MEMFD_HUGE_1MB,
    KVM_GUEST_MEMFD_HUGE_2GB,
    KVM_GUEST_MEMFD_HUGE_2MB,
    KVM_GUEST_MEMFD_HUGE_8MB,
    KVM_GUEST_MEMFD_HUGE_16GB,
    KVM_GUEST_MEMFD_HUGE_16MB,
    KVM_GUEST_MEMFD_HUGE_32MB,
    KVM_GUEST_MEMFD_HUGE_64KB,
    KVM_GUEST_MEMFD_HUGE_256MB,
    KVM_GUEST_MEMFD_HUGE_512KB,
    KVM_GUEST_MEMFD_HUGE_512MB,
    KVM_GUEST_MEMFD_HUGE_MASK,
    KVM_GUEST_MEMFD_HUGE_SHIFT,
    KVM_GUEST_MEMFD_HUGETLB,
    KVM_MEMORY_ATTRIBUTE_PRIVATE,
)

__all__ = [
    "ConversionError",
    "convert_private",
    "convert_shared",
    "create_guest_memfd",
    "fallocate",
    "set_memory_attributes",
    "GUEST_MEMFD_FLAG_HUGETLB",
    "GUEST_MEMFD_FLAG_HUGETLB_V2",
    "GUEST_MEMFD_FLAG_INIT_PRIVATE",
    "GUEST_MEMFD_FLAG_INIT_SHARED",
    "GUEST_MEMFD_FLAG_MMAP",
    "GUEST_MEMFD_FLAG_SUPPORT_SHARED",
    "KVM_GMEM_CONVERT_PRIVATE",
    "KVM_GMEM_CONVERT_SHARED",
    "KVM_MEMORY_ATTRIBUTE_PRIVATE",
    "FALLOC_FL_KEEP_SIZE",
    "FALLOC_FL_PUNCH_HOLE",
    "KVM_GUEST_MEMFD_HUGE_1GB",
    "KVM_GUEST_MEMFD_HUGE_1MB",
    "KVM_GUEST_MEMFD_HUGE_2GB",
    "KVM_GUEST_MEMFD_HUGE_2MB",
    "KVM_GUEST_MEMFD_HUGE_8MB",
    "KVM_GUEST_MEMFD_HUGE_16GB",
    "KVM_GUEST_MEMFD_HUGE_16MB",
    "KVM_GUEST_MEMFD_HUGE_32MB",
    "KVM_GUEST_MEMFD_HUGE_64KB",
    "KVM_GUEST_MEMFD_HUGE_256MB",
    "KVM_GUEST_MEMFD_HUGE_512KB",
    "KVM_GUEST_MEMFD_HUGE_512MB",
    "KVM_GUEST_MEMFD_HUGE_MASK",
    "KVM_GUEST_MEMFD_HUGE_SHIFT",
    "KVM_GUEST_MEMFD_HUGETLB",
]
