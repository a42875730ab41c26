"""What a gmemfs mount holds, read from outside the daemon through the inspection attributes."""

import errno
import json
import operator
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from .hugepages import PoolCounters, huge_page_sizes, pool_counters
from .inspection import paged_name, parse_range_page
from .mounts import mounts
from .printable import printable
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
class Unreadable:
    """An entry the caller could not read (another user's directory, say): shown, not fatal."""

    path: str  # relative to the mountpoint; a directory's ends with '/'
    reason: str

    def to_dict(self) -> dict:
        return {"path": self.path, "error": self.reason}


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
    """A whole range list, page by page (one value holds at most 64 KiB: gmemfs.inspection)."""
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
        for entry in walk(mountpoint):
            (files if isinstance(entry, FileStatus) else unreadable).append(entry)
        unlinked = json.loads(os.getxattr(mountpoint, XATTR_UNLINKED))
    except OSError as error:
        hint = " (its daemon is gone: fusermount3 -u unmounts it)" if error.errno in _GONE else ""
        raise MountError(mountpoint, error.strerror + hint) from None
    by_path = operator.attrgetter("path")
    return MountStatus(mountpoint, sorted(files, key=by_path), unlinked, sorted(unreadable, key=by_path))


_GONE = (errno.ENOTCONN, errno.ECONNABORTED)  # the daemon is gone: nothing more of the mount to read
_SUBDIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
_PARENT = os.O_PATH | os.O_DIRECTORY  # '..' needs no read permission, and O_PATH sends the daemon no open


@dataclass
class _Directory:
    name: str  # in its parent
    path: str  # in the mount, ending with '/'
    identity: tuple[int, int]  # (st_dev, st_ino): how '..' is known to lead back to it
    subdirectories: list[str] = field(default_factory=list)  # still to visit, the next one last


def walk(mountpoint: str) -> "Iterator[FileStatus | Unreadable]":
    """Every regular file's status, and an Unreadable for each entry that could not be read.

    Depth-first without recursion, through one directory fd at a time: down by name, back up
    through '..' checked against the directory left, as fts(3) does. So a tree of any depth
    works (Python's recursion limit and PATH_MAX stop os.walk), and neither a wide nor a deep
    one costs more than one fd.
    """
    fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    try:
        frames = [_Directory("", "/", _identity(fd))]
        yield from _list(fd, frames[-1])
        while frames:
            here = frames[-1]
            if not here.subdirectories:
                frames.pop()
                if frames:
                    parent = yield from _back_up(fd, mountpoint, frames)
                    os.close(fd)
                    fd = parent
                continue
            name = here.subdirectories.pop()
            try:
                child = os.open(name, _SUBDIRECTORY, dir_fd=fd)
            except OSError as error:
                yield from _unreadable(f"{here.path}{name}/", error)
                continue
            if _identity(child)[0] != frames[0].identity[0]:  # another filesystem is mounted there
                os.close(child)
                continue
            os.close(fd)
            fd = child
            frames.append(_Directory(name, f"{here.path}{name}/", _identity(fd)))
            yield from _list(fd, frames[-1])
    finally:
        os.close(fd)


def _back_up(fd: int, mountpoint: str, frames: "list[_Directory]") -> "Iterator[Unreadable]":
    """A new fd of frames[-1], reached through '..' from its child `fd`. A directory renamed
    meanwhile is reached again from the root by name, as far as the names still lead; the
    first that does not is an Unreadable, and the walk goes on from its parent."""
    parent = os.open("..", _PARENT, dir_fd=fd)
    if _identity(parent) == frames[-1].identity:
        return parent
    os.close(parent)
    reached = os.open(mountpoint, _PARENT)
    try:
        for depth, frame in enumerate(frames[1:], 1):
            try:
                child = os.open(frame.name, _PARENT | os.O_NOFOLLOW, dir_fd=reached)
            except OSError as error:
                if error.errno in _GONE:
                    raise
                child = None
            if child is None or _identity(child) != frame.identity:
                if child is not None:
                    os.close(child)
                del frames[depth:]
                yield Unreadable(frame.path, "moved while status read it")
                return reached
            os.close(reached)
            reached = child
        return reached
    except BaseException:
        os.close(reached)
        raise


def _identity(fd: int) -> "tuple[int, int]":
    status = os.fstat(fd)
    return status.st_dev, status.st_ino


def _list(fd: int, here: _Directory) -> "Iterator[FileStatus | Unreadable]":
    """One directory's files (their status, now) and its subdirectories (to visit, onto `here`)."""
    try:
        with os.scandir(fd) as entries:
            listed = sorted(
                (entry.name, entry.is_dir(follow_symlinks=False), entry.is_file(follow_symlinks=False))
                for entry in entries
            )
    except OSError as error:
        yield from _unreadable(here.path, error)
        return
    here.subdirectories = [name for name, is_dir, _ in reversed(listed) if is_dir]
    for name, _, is_file in listed:
        if is_file:
            try:
                yield file_status(name, here.path + name, dir_fd=fd)
            except OSError as error:
                yield from _unreadable(here.path + name, error)
            except InspectionValueError as error:
                yield Unreadable(here.path + name, str(error))


def _unreadable(path: str, error: OSError) -> "Iterator[Unreadable]":
    """Nothing for an entry removed while we looked; the whole mount fails once its daemon is gone."""
    if error.errno in _GONE:
        raise error
    if error.errno != errno.ENOENT:
        yield Unreadable(path, error.strerror)


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
