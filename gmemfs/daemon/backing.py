"""Kernel memory behind a gmem file: a hugetlbfs superblock or a memfd.

Each hugetlb file gets its own detached hugetlbfs superblock with
size = min_size = the file's size: the kernel then keeps exactly the subpool
the hugetlb series creates (every page reserved at creation). The backing fd
is the only reference, so closing it, or the daemon dying, releases it all.
"""

import contextlib
import errno
import mmap
import os
import resource

from ..base.hugepages import pool_counters
from ..base.libc import check, fallocate, libc
from ..kernel.rules import GmemError
from ..kernel.uapi import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE

# x86-64 and arm64 share these numbers (the new mount API came after the split).
SYS_FSOPEN = 430
SYS_FSCONFIG = 431
SYS_FSMOUNT = 432
FSOPEN_CLOEXEC = 0x1
FSMOUNT_CLOEXEC = 0x1
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)  # Python < 3.12 lacks the name


def _check(result: int, what: str) -> int:
    try:
        return check(result, what)
    except OSError as error:
        raise _out_of_fds(error.errno) or error from None


def _out_of_fds(err: int) -> "GmemError | None":
    """Every sized file holds one daemon fd: past the daemon's limit the mount is full (ENOSPC),
    not the caller's fd table (EMFILE would read as the caller's own problem)."""
    if err not in (errno.EMFILE, errno.ENFILE):
        return None
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return GmemError(
        errno.ENOSPC,
        f"the daemon holds one fd per sized file and has no more (limit {limit})",
        function="gmemfs: the daemon's fd limit",
    )


def _keep_fds_free(fd: int) -> None:
    """Refuse a file the fd among the daemon's last few (fds are handed out lowest first, so every
    fd below it is taken): the in-use check and the daemon's own work need some even when one
    user has sized as many files as the limit allows, and EMFILE there would be everyone's."""
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if fd >= limit - min(64, limit // 4):
        os.close(fd)
        raise _out_of_fds(errno.EMFILE)


def _hugetlbfs_superblock(page_size: int, size: int) -> int:
    """A detached hugetlbfs mount whose subpool reserves size bytes of page_size pages."""
    fs_fd = _check(libc.syscall(SYS_FSOPEN, b"hugetlbfs", FSOPEN_CLOEXEC), "fsopen(hugetlbfs)")
    try:
        for key, value in (("pagesize", page_size), ("size", size), ("min_size", size)):
            _check(
                libc.syscall(SYS_FSCONFIG, fs_fd, FSCONFIG_SET_STRING, key.encode(), str(value).encode(), 0),
                f"fsconfig({key})",
            )
        _check(libc.syscall(SYS_FSCONFIG, fs_fd, FSCONFIG_CMD_CREATE, None, None, 0), "fsconfig(create)")
        return _check(libc.syscall(SYS_FSMOUNT, fs_fd, FSMOUNT_CLOEXEC, 0), "fsmount")
    finally:
        os.close(fs_fd)


class Backing:
    """The kernel file that holds a gmem file's pages."""

    __slots__ = ("fd", "size", "huge_page_size", "_mapping")

    def __init__(self, fd: int, size: int, huge_page_size: int = 0) -> None:
        self.fd = fd
        self.size = size
        self.huge_page_size = huge_page_size  # 0: a memfd of 4 KiB pages
        self._mapping: mmap.mmap | None = None

    @classmethod
    def reserve_subpool(cls, page_size: int, size: int) -> "Backing":
        """Reserve every huge page of the file now, as the seed's subpool does.

        Never from surplus pages (hugepage_new_subpool(h, n, n, false)): hugetlbfs would
        overcommit when nr_overcommit_hugepages allows it, so the pool is asked first.
        """
        pages = size // page_size
        if pool_counters(page_size).available < pages:
            raise GmemError(
                errno.ENOMEM,
                f"the {page_size}-byte huge page pool cannot reserve {pages} pages",
                function="hugepage_new_subpool",
            )
        try:
            mount_fd = _hugetlbfs_superblock(page_size, size)
        except OSError as error:
            if error.errno == errno.ENOMEM:
                raise GmemError(
                    errno.ENOMEM,
                    f"the {page_size}-byte huge page pool cannot reserve {size // page_size} pages",
                    function="hugepage_new_subpool",
                ) from None
            raise
        try:
            fd = os.open("guest_memfd", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600, dir_fd=mount_fd)
        except OSError as error:
            raise _out_of_fds(error.errno) or error from None
        finally:
            os.close(mount_fd)  # the open file keeps the superblock alive
        backing = cls._sized(fd, size)
        backing.huge_page_size = page_size
        try:
            backing._charge_reservation(0, size)
        except BaseException:
            backing.close()
            raise
        return backing

    def _charge_reservation(self, start: int, end: int) -> None:
        """Charge the reservation of [start, end) to this process's hugetlb cgroup (`rsvd`), as
        RFC v2 charges a whole file to its creator at creation (guestmem_hugetlb_setup).

        The subpool's min_size reserves the pages but charges no cgroup; a shared mapping that
        reserves (no MAP_NORESERVE) takes them from the subpool and charges `rsvd`, which stays
        after munmap for as long as the file keeps the reservation. A cgroup over its limit
        makes that mmap fail: ENOMEM, as the series' charge failure.
        """
        if start >= end:
            return
        try:
            mmap.mmap(self.fd, end - start, flags=mmap.MAP_SHARED, offset=start).close()
        except OSError as error:
            if error.errno == errno.ENOMEM:
                raise GmemError(
                    errno.ENOMEM,
                    "the hugetlb cgroup's reservation limit would be passed",
                    function="hugetlb_cgroup_charge_cgroup_rsvd_for_order",
                ) from None
            raise

    @classmethod
    def memfd(cls, size: int) -> "Backing":
        """4 KiB pages in a memfd (shared memory the kernel can punch and count)."""
        try:
            fd = os.memfd_create("guest_memfd", os.MFD_CLOEXEC)
        except OSError as error:
            raise _out_of_fds(error.errno) or error from None
        return cls._sized(fd, size)

    @classmethod
    def _sized(cls, fd: int, size: int) -> "Backing":
        _keep_fds_free(fd)
        try:
            os.ftruncate(fd, size)
        except OSError:
            os.close(fd)
            raise
        return cls(fd, size)

    def allocate(self, start: int, end: int) -> None:
        fallocate(self.fd, FALLOC_FL_KEEP_SIZE, start, end - start)

    def punch(self, start: int, end: int) -> None:
        """Punch; the freed huge pages go back to the subpool, and their reservation is charged
        again (hugetlbfs drops a punched range's reservation, RFC v2 keeps the file's charged)."""
        fallocate(self.fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, start, end - start)
        if self.huge_page_size:
            whole_start = -(-start // self.huge_page_size) * self.huge_page_size
            with contextlib.suppress(GmemError):  # the pages stay the file's in its subpool either way
                self._charge_reservation(whole_start, end - end % self.huge_page_size)

    def read(self, start: int, length: int) -> bytes:
        """Page contents; holes read as zeros and stay holes."""
        return os.pread(self.fd, length, start)

    def write(self, start: int, data: bytes) -> None:
        """Store data in allocated pages (hugetlbfs has no write(2), so through a mapping)."""
        self._mapped()[start : start + len(data)] = data

    def _mapped(self) -> mmap.mmap:
        if self._mapping is None:
            # MAP_NORESERVE: hugetlb reservations stay exactly what the subpool holds.
            self._mapping = mmap.mmap(self.fd, self.size, flags=mmap.MAP_SHARED | MAP_NORESERVE)
        return self._mapping

    def allocated_bytes(self) -> int:
        """What the kernel says is allocated (st_blocks), for recovering from a partial allocation."""
        return os.fstat(self.fd).st_blocks * 512

    def close(self) -> None:
        if self._mapping is not None:
            self._mapping.close()
            self._mapping = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
