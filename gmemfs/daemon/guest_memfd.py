"""One gmem file: its flags, size, pages and backing, from unsized to evicted.

The rules module decides; this class applies the decision to the kernel memory
and keeps the page bookkeeping (runs, never pages) in step with it.
"""

import errno
import threading
from collections.abc import Callable

import trio

from ..base.hugepages import HugePageSupport
from ..base.ranges import RangeSet
from ..kernel.inspection import range_page
from ..kernel.rules import (
    BASE_GEOMETRY,
    FallocatePlan,
    Geometry,
    GmemError,
    check_creation_size,
    check_flag_bits,
    check_flags_change,
    check_guest_access,
    check_host_access,
    file_geometry,
    plan_fallocate,
)
from ..kernel.uapi import (
    BASE_PAGE_SIZE,
    XATTR_ALLOCATED,
    XATTR_FLAGS,
    XATTR_PAGE_ORDER,
    XATTR_PAGE_SIZE,
    XATTR_RESERVED,
    AbiProfile,
)
from .backing import Backing
from .host_users import FileUsers
from .limits import MountQuota

ALLOCATION_CHUNK = 2 << 20  # a signal to the caller is noticed between chunks


class GuestMemfd:
    """The state of one gmem file, as the kernel's gmem_inode holds it.

    Concurrency: the daemon's trio loop makes every change, except allocations large
    enough to run in a worker thread and the kernel's cache invalidation. Hence:
    - `lock` (a threading.Lock) guards the bookkeeping (`allocated`, `shared`,
      `draining`) for a few list operations at a time, so the loop and a worker
      never see it half-changed; nobody blocks while holding it.
    - `change_lock` (a trio.Lock) serializes page changes that wait (a threaded allocation,
      a conversion waiting for the kernel's writeback). It is taken only by them and
      by changes that arrive while one is under way. writepage never takes it: a
      conversion holds it while the kernel writes dirty pages back through writepage.
    """

    __slots__ = (
        "allocated",
        "backing",
        "backing_page_size",
        "change_lock",
        "draining",
        "flags",
        "geometry",
        "host_mapped",
        "lock",
        "page_order",
        "profile",
        "quota",
        "shared",
        "size",
        "support",
        "users",
        "view",
    )

    def __init__(
        self,
        flags: int,
        profile: AbiProfile,
        support: HugePageSupport,
        quota: "MountQuota | None" = None,
        page_order: int = 0,
        backing_page_size: int = BASE_PAGE_SIZE,
    ) -> None:
        self.quota = quota or MountQuota()
        self.profile = profile
        self.support = support
        self.backing_page_size = backing_page_size  # a 4 KiB ABI's mount of huge pages (upstream,pagesize=2M)
        self.geometry = self._geometry(flags, page_order)
        self.flags = flags
        self.page_order = page_order
        self.size = 0
        self.backing: Backing | None = None
        self.allocated = RangeSet()
        self.shared = RangeSet()
        self.draining = RangeSet()  # turning private: faults refused, writeback of dirty data still taken
        self.host_mapped = False  # the host has faulted pages in (so /proc may show it using them)
        self.users = FileUsers()  # who opened it for writing: whose /proc the in-use check reads
        self.view = 0  # the inode of its guest view while one exists (gmemfs run's private VMs)
        self.lock = threading.Lock()
        self.change_lock = trio.Lock()

    @property
    def page_size(self) -> int:
        return self.geometry.page_size

    @property
    def hugetlb(self) -> bool:
        return self.geometry.hugetlb

    @property
    def backing_size(self) -> int:
        """The size rounded up to whole pages: what the subpool reserves (the seed's rounding up)."""
        return -(-self.size // self.page_size) * self.page_size

    @property
    def reserved_pages(self) -> int:
        """Huge pages the file's subpool holds: all of them, from creation to eviction."""
        return self.backing_size // self.page_size if self.hugetlb and self.backing else 0

    def _geometry(self, flags: int, page_order: int, strict: bool = True) -> Geometry:
        """The pages these flags make. An ABI with page_order (hugetlb-2025) checks the two together
        when the size completes creation, as kvm_gmem_create() does: until then only the bits."""
        try:
            return file_geometry(
                flags, page_order, self.profile, self.support.sizes, self.support.default_size, self.backing_page_size
            )
        except GmemError:
            if strict or not self.profile.page_order:
                raise
            check_flag_bits(flags, self.profile)
            return BASE_GEOMETRY

    def set_flags(self, flags: int) -> None:
        check_flags_change(self.size)
        self.geometry = self._geometry(flags, self.page_order, strict=False)
        self.flags = flags

    def set_page_order(self, page_order: int) -> None:
        """hugetlb-2025's page_order (user.gmem.page_order), checked with the flags at creation."""
        check_flags_change(self.size)
        self.geometry = self._geometry(self.flags, page_order, strict=False)
        self.page_order = page_order

    def complete_creation(self, size: int) -> None:
        """The first size completes creation (KVM_CREATE_GUEST_MEMFD's size): hugetlb files reserve every page now."""
        geometry = self._geometry(self.flags, self.page_order)
        check_creation_size(self.size, size, geometry.size_alignment)
        self.geometry = geometry
        backing_size = -(-size // self.page_size) * self.page_size
        self.quota.claim(backing_size, self.page_size)
        try:
            if self.hugetlb:
                self.backing = Backing.reserve_subpool(self.page_size, backing_size)
            else:
                self.backing = Backing.memfd(size)
        except BaseException:
            self.quota.release(backing_size, self.page_size)
            raise
        self.size = size
        if self.profile.starts_shared(self.flags):
            self.shared.add(0, size)

    def plan_fallocate(self, mode: int, offset: int, length: int) -> FallocatePlan:
        return plan_fallocate(mode, offset, length, self.page_size, self.size, self.geometry)

    def has_attributes(self, start: int, end: int, private: bool) -> bool:
        """Whether [start, end) is already all private (or all shared): kvm_gmem_range_has_attributes()."""
        with self.lock:
            return not any(self.shared.overlapping(start, end)) if private else self.shared.covers(start, end)

    def allocate(self, start: int, end: int, interrupted: "Callable[[], bool] | None" = None) -> None:
        """Allocate (zeroed) the holes of [start, end); allocated pages keep their contents.

        As kvm_gmem_allocate(), checks for a signal to the caller between chunks: then the
        pages done so far stay and the call fails with EINTR.
        """
        chunk = max(self.page_size, ALLOCATION_CHUNK)
        with self.lock:
            gaps = list(self.allocated.gaps(start, end))
        for gap_start, gap_end in gaps:
            for chunk_start in range(gap_start, gap_end, chunk):
                if interrupted and interrupted():
                    raise GmemError(
                        errno.EINTR,
                        f"allocation interrupted by a signal at {chunk_start:#x}",
                        function="kvm_gmem_allocate",
                    )
                chunk_end = min(chunk_start + chunk, gap_end)
                try:
                    self.backing.allocate(chunk_start, chunk_end)
                except OSError:
                    self._account_partial_allocation(chunk_start)
                    raise
                with self.lock:
                    self.allocated.add(chunk_start, chunk_end)

    def _account_partial_allocation(self, gap_start: int) -> None:
        """The kernel fills a hole from its start, so the st_blocks growth says how far it got."""
        with self.lock:
            done = self.backing.allocated_bytes() - self.allocated.total
            self.allocated.add(gap_start, gap_start + max(done, 0))

    def allocated_within(self, start: int, end: int) -> int:
        """Allocated bytes in [start, end): what a punch of it frees or zeroes."""
        with self.lock:
            return sum(run_end - run_start for run_start, run_end in self.allocated.overlapping(start, end))

    def punch(self, start: int, end: int) -> None:
        """Free the whole pages of [start, end) (huge pages go back to the file's subpool) and zero
        the covered bytes of partly covered huge pages, which stay allocated: hugetlbfs's punch rule,
        which the backing applies itself. (RFC v1's kvm_gmem_hugetlb_truncate_range() zeroes the whole
        huge page when the range lies inside one: a bug not copied.)"""
        if end >= self.size:  # the pages past the size belong to no one but the file's last huge page
            end = self.backing_size
        with self.lock:
            runs = list(self.allocated.overlapping(start, end))
            self.allocated.remove(-(-start // self.page_size) * self.page_size, end - end % self.page_size)
        for run_start, run_end in runs:
            self.backing.punch(run_start, run_end)

    def read_shared(self, offset: int, length: int) -> bytes:
        """What the host sees of shared pages (mmap faults); private pages are EINVAL (SIGBUS)."""
        return self._read(offset, length, lambda start, end: check_host_access(self.shared, start, end, "read"))

    def write_shared(self, offset: int, data: bytes) -> int:
        """Take the host's writes to shared pages (mmap writeback); the pages are allocated as needed."""
        return self._write(
            offset, data, lambda start, end: check_host_access(self.shared, start, end, "write back", self.draining)
        )

    def read_for_guest(self, offset: int, length: int) -> bytes:
        """What the guest's view sees (gmemfs run maps it where a private VM's guest reaches
        private pages): private pages only."""
        return self._read(offset, length, lambda start, end: check_guest_access(self.shared, start, end, "read"))

    def write_for_guest(self, offset: int, data: bytes) -> int:
        """Writeback of what the guest wrote to private pages through its view."""
        return self._write(offset, data, lambda start, end: check_guest_access(self.shared, start, end, "write back"))

    def _read(self, offset: int, length: int, check: "Callable[[int, int], None]") -> bytes:
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        with self.lock:
            check(offset, end)
        return self.backing.read(offset, end - offset)

    def _write(self, offset: int, data: bytes, check: "Callable[[int, int], None]") -> int:
        end = min(offset + len(data), self.size)
        if offset >= end:
            return len(data)
        with self.lock:
            check(offset, end)
        self.allocate(offset - offset % self.page_size, -(-end // self.page_size) * self.page_size)
        self.backing.write(offset, data[: end - offset])
        return len(data)

    def convert_to_shared(self, start: int, end: int) -> None:
        """In place: the host now reaches the pages with what the guest left in them (RFC v2)."""
        with self.lock:
            self.shared.add(start, end)

    def convert_to_private(self, start: int, end: int) -> None:
        """In place, when the host never mapped the file: no copy of it to drop, no writeback to take."""
        with self.lock:
            self.shared.remove(start, end)

    def begin_private(self, start: int, end: int) -> None:
        """Refuse host faults on [start, end) from now on, but still take the writeback of
        what the host wrote while the pages were shared (the kernel is about to flush it)."""
        with self.lock:
            self.shared.remove(start, end)
            self.draining.add(start, end)

    def end_private(self, start: int, end: int) -> None:
        """The kernel holds no copy of [start, end) any more: the pages are the guest's alone."""
        with self.lock:
            self.draining.remove(start, end)

    def evict(self) -> None:
        """Release every page and the whole reservation at once (evict_inode)."""
        self.release_backing(self.detach_backing())

    def detach_backing(self) -> "Backing | None":
        """Eviction's first step, on the event loop: from now on the file holds no pages, and
        another eviction of it (the FORGET after the last close) finds nothing to release."""
        backing, self.backing = self.backing, None
        self.allocated = RangeSet()
        self.shared = RangeSet()
        return backing

    def release_backing(self, backing: "Backing | None") -> None:
        """Eviction's second step, in a worker thread for a large file: the kernel frees the
        pages and the reservation, then the mount's quota takes the file's share back."""
        if backing:
            backing.close()
            self.quota.release(self.backing_size, self.page_size)

    def attribute(self, name: bytes, offset: int = 0) -> bytes:
        """One read-only inspection attribute (user.gmem.*): only the one asked for is formatted,
        and of a range list (which can be long) only the page from `offset` on."""
        if name == XATTR_FLAGS:
            return f"{self.flags:#x}".encode()
        if name == XATTR_PAGE_SIZE:
            return str(self.page_size).encode()
        if name == XATTR_PAGE_ORDER:
            return str(self.page_order).encode()
        if name == XATTR_RESERVED:
            return str(self.reserved_pages).encode()
        with self.lock:
            return range_page(self.allocated if name == XATTR_ALLOCATED else self.shared, offset)
