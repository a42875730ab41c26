"""What a gmemfs mount holds, read from outside the daemon through the inspection attributes."""

import json
import operator
import os
from dataclasses import dataclass, field

from ..base.hugepages import PoolCounters, huge_page_sizes, pool_counters
from ..base.mounts import mounts
from ..base.printable import printable
from ..base.ranges import RangeSet
from ..base.tree import GONE, Unreadable, unreadable_entries, walk_files
from ..kernel.inspection import paged_name, parse_range_page
from ..kernel.uapi import XATTR_ALLOCATED, XATTR_FLAGS, XATTR_PAGE_SIZE, XATTR_RESERVED, XATTR_SHARED, XATTR_UNLINKED


@dataclass
class FileStatus:
    path: str  # relative to the mountpoint, starting with '/'
    size: int
    page_size: int
    flags: int
    reserved_pages: int
    allocated: RangeSet
    shared: RangeSet

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "size": self.size,
            "page_size": self.page_size,
            "flags": self.flags,
            "reserved_pages": self.reserved_pages,
            "allocated_bytes": self.allocated.total,
            "shared_bytes": self.shared.total,
            "allocated": [list(run) for run in self.allocated],
            "shared": [list(run) for run in self.shared],
        }


@dataclass
class MountStatus:
    mountpoint: str
    files: list[FileStatus]
    unlinked: dict  # files only fds reach: counts from the daemon
    unreadable: list[Unreadable] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "mountpoint": self.mountpoint,
            "files": [file.to_dict() for file in self.files],
            "unlinked": self.unlinked,
            "unreadable": [entry.to_dict() for entry in self.unreadable],
        }


class MountError(Exception):
    """A mount that cannot be read at all: its daemon is gone, or the caller may not enter it."""

    def __init__(self, mountpoint: str, reason: str) -> None:
        super().__init__(f"{printable(mountpoint)}: {reason}")
        self.mountpoint = mountpoint
        self.reason = reason

    def to_dict(self) -> dict:
        return {"mountpoint": self.mountpoint, "error": self.reason}


class InspectionValueError(ValueError):
    """An inspection attribute holding what gmemfs never writes (set by hand on a file elsewhere)."""


def file_status(path: "str | os.PathLike[str]", display_path: str, dir_fd: "int | None" = None) -> FileStatus:
    """Read through one O_PATH fd, so that every value is the same file's even if its name
    changes meanwhile; with dir_fd, a name swapped for a symlink leads nowhere else."""
    fd = os.open(path, os.O_PATH | (os.O_NOFOLLOW if dir_fd is not None else 0), dir_fd=dir_fd)
    try:
        reached = f"/proc/self/fd/{fd}"
        return FileStatus(
            path=display_path,
            size=os.fstat(fd).st_size,
            page_size=_read_value(reached, XATTR_PAGE_SIZE, int),
            flags=_read_value(reached, XATTR_FLAGS, lambda text: int(text, 0)),
            reserved_pages=_read_value(reached, XATTR_RESERVED, int),
            allocated=read_ranges(reached, XATTR_ALLOCATED),
            shared=read_ranges(reached, XATTR_SHARED),
        )
    finally:
        os.close(fd)


def read_ranges(path: "str | os.PathLike[str]", attribute: bytes) -> RangeSet:
    """A whole range list, page by page (one value holds at most 64 KiB: gmemfs.kernel.inspection)."""
    ranges, offset = RangeSet(), 0
    while True:
        runs, rest = _read_value(path, paged_name(attribute, offset), parse_range_page)
        for start, end in runs:
            ranges.add(start, end)
        if rest is None:
            return ranges
        if rest <= offset:
            raise InspectionValueError(f"{attribute.decode()}@{offset:#x} does not lead past {offset:#x}")
        offset = rest


def _read_value(path: "str | os.PathLike[str]", name: bytes, parse):
    text = os.getxattr(path, name).decode(errors="surrogateescape")
    try:
        return parse(text)
    except ValueError:
        raise InspectionValueError(f"{name.decode()} is '{printable(text[:40])}', not a value gmemfs writes") from None


def gmemfs_mounts() -> list[str]:
    return [mountpoint for _, mountpoint, kind, _ in mounts() if kind == "fuse.gmemfs"]


def mount_status(mountpoint: str) -> MountStatus:
    """Every file of the mount, and what could not be read; MountError if the mount itself cannot be."""
    files, unreadable = [], []
    try:
        for entry in walk_files(mountpoint):
            if isinstance(entry, Unreadable):
                unreadable.append(entry)
                continue
            directory_fd, name, path = entry
            try:
                files.append(file_status(name, path, dir_fd=directory_fd))
            except OSError as error:
                unreadable.extend(unreadable_entries(path, error))
            except InspectionValueError as error:
                unreadable.append(Unreadable(path, str(error)))
        unlinked = json.loads(os.getxattr(mountpoint, XATTR_UNLINKED))
    except OSError as error:
        hint = " (its daemon is gone: fusermount3 -u unmounts it)" if error.errno in GONE else ""
        raise MountError(mountpoint, error.strerror + hint) from None
    by_path = operator.attrgetter("path")
    return MountStatus(mountpoint, sorted(files, key=by_path), unlinked, sorted(unreadable, key=by_path))


def pools() -> dict[int, PoolCounters]:
    return {size: pool_counters(size) for size in sorted(huge_page_sizes())}


def pools_to_dict(counters: dict[int, PoolCounters]) -> list[dict]:
    return [{"page_size": size, **vars(pool)} for size, pool in counters.items()]


@dataclass(frozen=True)
class Segment:
    """A run of pages in one state, for the map."""

    start: int
    end: int
    allocated: bool
    shared: bool


def segments(size: int, allocated: RangeSet, shared: RangeSet) -> list[Segment]:
    """Split [0, size) where allocation or shareability changes; one entry per run."""
    boundaries = sorted({0, size, *(edge for run in (*allocated, *shared) for edge in run if edge < size)})
    result: list[Segment] = []
    for start, end in zip(boundaries, boundaries[1:]):
        state = (allocated.covers(start, end), shared.covers(start, end))
        if result and (result[-1].allocated, result[-1].shared) == state:
            result[-1] = Segment(result[-1].start, end, *state)
        else:
            result.append(Segment(start, end, *state))
    return result
