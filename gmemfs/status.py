"""What a gmemfs mount holds, read from outside the daemon through the inspection attributes."""

import json
import os
import resource
from dataclasses import dataclass

from .hugepages import PoolCounters, huge_page_sizes, pool_counters
from .inspection import paged_name, parse_range_page
from .mounts import mounts
from .ranges import RangeSet
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
        allocated=read_ranges(path, XATTR_ALLOCATED),
        shared=read_ranges(path, XATTR_SHARED),
    )


def read_ranges(path: "str | os.PathLike[str]", attribute: bytes) -> RangeSet:
    """A whole range list, page by page (one value holds at most 64 KiB: gmemfs.inspection)."""
    ranges, offset = RangeSet(), 0
    while True:
        runs, rest = parse_range_page(os.getxattr(path, paged_name(attribute, offset)).decode())
        for start, end in runs:
            ranges.add(start, end)
        if rest is None:
            return ranges
        if rest <= offset:
            raise ValueError(f"{attribute.decode()}@{offset:#x} does not lead past {offset:#x}")
        offset = rest


def gmemfs_mounts() -> list[str]:
    return [mountpoint for _, mountpoint, kind, _ in mounts() if kind == "fuse.gmemfs"]


def mount_status(mountpoint: str) -> MountStatus:
    files = [file_status(path, display) for path, display in _regular_files(mountpoint)]
    unlinked = json.loads(os.getxattr(mountpoint, XATTR_UNLINKED))
    return MountStatus(mountpoint=mountpoint, files=sorted(files, key=lambda f: f.path), unlinked=unlinked)


def _regular_files(mountpoint: str):
    """(a path that reaches it, its path in the mount) of every regular file.

    Depth-first without recursion and through directory fds (/proc/self/fd/N/name), so a
    tree of any depth works: Python's recursion limit and PATH_MAX stop os.walk.
    """
    _allow_many_open_files()
    stack = [(os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY), "/")]
    while stack:
        directory_fd, display = stack.pop()
        try:
            with os.scandir(directory_fd) as entries:
                listed = sorted(
                    (entry.name, entry.is_dir(follow_symlinks=False), entry.is_file(follow_symlinks=False))
                    for entry in entries
                )
            for name, is_dir, is_file in reversed(listed):
                if is_dir:
                    child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=directory_fd)
                    stack.append((child, f"{display}{name}/"))
            for name, _, is_file in listed:
                if is_file:
                    yield f"/proc/self/fd/{directory_fd}/{name}", display + name
        finally:
            os.close(directory_fd)


def _allow_many_open_files() -> None:
    """A deep tree holds one fd per directory waiting on the stack."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


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
