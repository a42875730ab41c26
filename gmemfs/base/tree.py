"""A directory tree walked through one directory fd at a time, as fts(3) does.

Down by name, back up through '..' checked against the directory left, so a tree of any
depth works (Python's recursion limit and PATH_MAX stop os.walk) and neither a wide nor a
deep one costs more than one fd (an fd per directory waiting ran out at 20,500).
"""

import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

GONE = (errno.ENOTCONN, errno.ECONNABORTED)  # a FUSE mount whose daemon is gone: nothing more to read
_SUBDIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
_PARENT = os.O_PATH | os.O_DIRECTORY  # '..' needs no read permission, and O_PATH sends FUSE no open


@dataclass
class Unreadable:
    """An entry the caller could not read (another user's directory, say): shown, not fatal."""

    path: str  # from the top, starting with '/'; a directory's ends with '/'
    reason: str

    def to_dict(self) -> dict:
        return {"path": self.path, "error": self.reason}


def unreadable_entries(path: str, error: OSError) -> "Iterator[Unreadable]":
    """Nothing for an entry removed while we looked; the whole walk fails once the daemon is gone."""
    if error.errno in GONE:
        raise error
    if error.errno != errno.ENOENT:
        yield Unreadable(path, error.strerror)


@dataclass
class _Directory:
    name: str  # in its parent
    path: str  # from the top, ending with '/'
    identity: tuple[int, int]  # (st_dev, st_ino): how '..' is known to lead back to it
    subdirectories: list[str] = field(default_factory=list)  # still to visit, the next one last


def walk_files(top: str) -> "Iterator[tuple[int, str, str] | Unreadable]":
    """(its directory's fd, its name, its path from top) of every regular file, depth-first, a
    directory's files before its subdirectories; the fd is valid until the next item. An
    Unreadable for each entry that could not be read; OSError if top cannot be."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        frames = [_Directory("", "/", _identity(fd))]
        yield from _list(fd, frames[-1])
        while frames:
            here = frames[-1]
            if not here.subdirectories:
                frames.pop()
                if frames:
                    parent = yield from _back_up(fd, top, frames)
                    os.close(fd)
                    fd = parent
                continue
            name = here.subdirectories.pop()
            try:
                child = os.open(name, _SUBDIRECTORY, dir_fd=fd)
            except OSError as error:
                yield from unreadable_entries(f"{here.path}{name}/", error)
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


def _list(fd: int, here: _Directory) -> "Iterator[tuple[int, str, str] | Unreadable]":
    """One directory's files (now) and its subdirectories (to visit, onto `here`)."""
    try:
        with os.scandir(fd) as entries:
            listed = sorted(
                (entry.name, entry.is_dir(follow_symlinks=False), entry.is_file(follow_symlinks=False))
                for entry in entries
            )
    except OSError as error:
        yield from unreadable_entries(here.path, error)
        return
    here.subdirectories = [name for name, is_dir, _ in reversed(listed) if is_dir]
    for name, _, is_file in listed:
        if is_file:
            yield fd, name, here.path + name


def _back_up(fd: int, top: str, frames: "list[_Directory]") -> "Iterator[Unreadable]":
    """A new fd of frames[-1], reached through '..' from its child `fd`. A directory moved
    meanwhile is reached again from the top by name, as far as the names still lead; the
    first that does not is an Unreadable, and the walk goes on from its parent."""
    parent = os.open("..", _PARENT, dir_fd=fd)
    if _identity(parent) == frames[-1].identity:
        return parent
    os.close(parent)
    reached = os.open(top, _PARENT)
    try:
        for depth, frame in enumerate(frames[1:], 1):
            try:
                child = os.open(frame.name, _PARENT | os.O_NOFOLLOW, dir_fd=reached)
            except OSError as error:
                if error.errno in GONE:
                    raise
                child = None
            if child is None or _identity(child) != frame.identity:
                if child is not None:
                    os.close(child)
                del frames[depth:]
                yield Unreadable(frame.path, "moved while being read")
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
