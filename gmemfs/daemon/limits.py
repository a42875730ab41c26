"""What one mount may take, as hugetlbfs bounds a mount with size= and nr_inodes=.

On a shared (allow_other) mount, any user who may create files may otherwise reserve
the whole huge page pool or size 4 KiB files beyond the machine's memory. Exceeding a
limit is what the kernel answers for its own limits: ENOMEM for memory, ENOSPC for files.
"""

import errno
import threading
from dataclasses import dataclass, field

from ..base.units import format_size
from ..kernel.rules import GmemError
from ..kernel.uapi import BASE_PAGE_SIZE


@dataclass
class MountQuota:
    """Huge page bytes and 4 KiB-file bytes the mount's files hold, against their limits (None: none).

    max_huge_pages counts pages of one size, huge_page_unit, and a file's huge pages count by
    their bytes in it: on a 2M mount a 1 GiB page is 512 pages. (Counted as one, a user who
    chose 1 GiB flags took 512 times what the limit meant.)
    """

    max_huge_pages: "int | None" = None
    max_bytes: "int | None" = None
    huge_page_unit: int = 2 << 20
    huge_bytes: int = 0
    bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def claim(self, size: int, page_size: int) -> None:
        """Count a file being sized, or ENOMEM if it would pass the mount's limit."""
        with self._lock:
            if page_size == BASE_PAGE_SIZE:
                if self.max_bytes is not None and self.bytes + size > self.max_bytes:
                    raise GmemError(
                        errno.ENOMEM,
                        f"the mount's max_size={self.max_bytes} would be passed",
                        function="gmemfs: -o max_size",
                    )
                self.bytes += size
            else:
                limit = self.max_huge_pages
                if limit is not None and self.huge_bytes + size > limit * self.huge_page_unit:
                    unit = format_size(self.huge_page_unit)
                    raise GmemError(
                        errno.ENOMEM,
                        f"the mount's max_huge_pages={limit} ({unit} pages) would be passed",
                        function="gmemfs: -o max_huge_pages",
                    )
                self.huge_bytes += size

    def release(self, size: int, page_size: int) -> None:
        with self._lock:
            if page_size == BASE_PAGE_SIZE:
                self.bytes -= size
            else:
                self.huge_bytes -= size


def huge_page_unit(mount_page_size: int, default_huge_page_size: int) -> int:
    """The page size max_huge_pages counts in: the mount's, or on a 4 KiB mount the default huge
    page size (what HUGETLB without a size field chooses, and hugetlbfs without pagesize=)."""
    return default_huge_page_size if mount_page_size == BASE_PAGE_SIZE else mount_page_size


def check_file_limit(files: int, max_files: "int | None") -> None:
    """ENOSPC when the mount holds max_files already (tmpfs's nr_inodes=: see InodeTable.charged)."""
    if max_files is not None and files >= max_files:
        raise GmemError(errno.ENOSPC, f"the mount's max_files={max_files} is reached", function="gmemfs: -o max_files")
