"""The spec (../shared/spec/guest_memfd.md) as a small executable model, written apart from gmemfs.

No FUSE, no kernel, nothing shared with gmemfs's own rules: pages are plain sets
(the model only ever sees small files), and every method returns the errno name
the spec promises ("OK" on success), so a test can compare it with the real mount.
"""

from dataclasses import dataclass, field

K4 = 4096
M2 = 2 << 20
G1 = 1 << 30
HUGETLB = 1 << 1
SIZE_SHIFT = 26
KEEP_SIZE, PUNCH_HOLE = 0x01, 0x02

# rfc-v1: without HUGETLB only 0; with it, a size field naming a page size this machine has.
PAGE_SIZE_OF_FLAGS = {0: K4, HUGETLB: M2, HUGETLB | 21 << SIZE_SHIFT: M2, HUGETLB | 30 << SIZE_SHIFT: G1}


@dataclass
class ModelFile:
    flags: int
    size: int = 0
    allocated: set = field(default_factory=set)  # page indices (of the file's page size)
    shared: set = field(default_factory=set)  # 4 KiB page indices
    linked: bool = True
    open_fds: int = 0

    @property
    def page_size(self) -> int:
        return PAGE_SIZE_OF_FLAGS[self.flags]

    @property
    def hugetlb(self) -> bool:
        return self.page_size != K4

    @property
    def alive(self) -> bool:
        return self.linked or self.open_fds > 0

    @property
    def reserved_pages(self) -> int:
        """Pages the file's subpool holds but has not handed out."""
        if not (self.hugetlb and self.size and self.alive):
            return 0
        return self.size // self.page_size - len(self.allocated)

    @property
    def used_pages(self) -> int:
        return len(self.allocated) if self.hugetlb and self.alive else 0

    def set_flags(self, flags: int) -> str:
        if self.size or flags not in PAGE_SIZE_OF_FLAGS:
            return "EINVAL"
        self.flags = flags
        return "OK"

    def truncate(self, size: int, pool_available: int) -> str:
        if size < 0 or self.size or size == 0 or size % self.page_size:
            return "EINVAL"
        if self.hugetlb and size // self.page_size > pool_available:
            return "ENOMEM"
        self.size = size
        return "OK"

    def fallocate(self, mode: int, offset: int, length: int) -> str:
        if offset < 0 or length <= 0:
            return "EINVAL"  # the VFS
        if not mode & KEEP_SIZE or mode & ~(KEEP_SIZE | PUNCH_HOLE):
            return "EOPNOTSUPP"
        if offset % K4 or length % K4 or not self.size:
            return "EINVAL"  # 4 KiB alignment, even in a huge page file
        if mode & PUNCH_HOLE:  # whole pages are freed; partly covered ones are zeroed and stay
            first_whole = -(-offset // self.page_size)
            self.allocated -= set(range(first_whole, min((offset + length) // self.page_size, self.pages)))
            return "OK"
        if offset + length > self.size:
            return "EINVAL"
        self.allocated |= set(range(offset // self.page_size, (offset + length) // self.page_size))  # rounded down
        return "OK"

    @property
    def pages(self) -> int:
        return self.size // self.page_size

    def convert(self, to_shared: bool, offset: int, size: int, error_offset: int = 0) -> str:
        if error_offset:
            return "EINVAL"
        if size == 0:
            return "OK"
        if offset + size > self.size or offset % K4 or size % K4:
            return "EINVAL"
        pages = set(range(offset // K4, (offset + size) // K4))
        if to_shared:
            self.shared |= pages
        else:
            self.shared -= pages
        return "OK"

    def read(self, position: int) -> str:
        """read(2) of 4 KiB at the fd's position: EINVAL, shared pages or private, as the kernel's
        guest_memfd (which has no read at all)."""
        return "EINVAL"
