"""What a gmemfs mount holds, read from outside the daemon through the inspection attributes."""

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .hugepages import PoolCounters, huge_page_sizes, pool_counters
from .ranges import RangeSet, parse_ranges
from .uapi import XATTR_ALLOCATED, XATTR_FLAGS, XATTR_PAGE_SIZE, XATTR_RESERVED, XATTR_SHARED, XATTR_UNLINKED


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

    def to_dict(self) -> dict:
        return {
            "mountpoint": self.mountpoint,
            "files": [file.to_dict() for file in self.files],
            "unlinked": self.unlinked,
        }


def file_status(path: "str | os.PathLike[str]", display_path: str) -> FileStatus:
    def attribute(name: bytes) -> str:
        return os.getxattr(path, name).decode()

    return FileStatus(
        path=display_path,
        size=os.stat(path).st_size,
        page_size=int(attribute(XATTR_PAGE_SIZE)),
        flags=int(attribute(XATTR_FLAGS), 0),
        reserved_pages=int(attribute(XATTR_RESERVED)),
        allocated=parse_ranges(attribute(XATTR_ALLOCATED)),
        shared=parse_ranges(attribute(XATTR_SHARED)),
    )


def gmemfs_mounts() -> list[str]:
    with open("/proc/self/mounts") as mounts:
        return [
            fields[1].replace("\\040", " ")
            for fields in (line.split() for line in mounts)
            if fields[2] == "fuse.gmemfs"
        ]


def mount_status(mountpoint: str) -> MountStatus:
    files = []
    for directory, _, names in os.walk(mountpoint):
        for name in sorted(names):
            path = Path(directory, name)
            if stat.S_ISREG(os.lstat(path).st_mode):
                files.append(file_status(path, "/" + str(path.relative_to(mountpoint))))
    unlinked = json.loads(os.getxattr(mountpoint, XATTR_UNLINKED))
    return MountStatus(mountpoint=mountpoint, files=sorted(files, key=lambda f: f.path), unlinked=unlinked)


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
