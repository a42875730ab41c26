"""The inode table: names, link counts, lookup counts, open handles, eviction.

A gmem file is evicted (its memory released) exactly when nothing can reach it
any more: no name links it, no handle has it open, and the kernel has dropped
every lookup (forget). This is the filesystem's evict_inode. The table decides
when; the caller releases the memory (GuestMemfd.evict), since freeing gigabytes
takes the kernel long enough to be done off the event loop.
"""

import itertools
import stat
import time
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..kernel.uapi import TRACE_FILE
from .guest_memfd import GuestMemfd

ROOT_INO = 1  # FUSE_ROOT_ID
TRACE_INO = (1 << 63) - 1  # the trace file: far above any number the counter gives, so files keep theirs
DOT_COOKIE, DOTDOT_COOKIE, FIRST_ENTRY_COOKIE = 1, 2, 3  # readdir offsets: '.', '..', then the entries


class ReaddirCookies:
    """The readdir position of each name in one directory: a cookie given when the name is
    linked and never reused, so that a reader paging through while others unlink neither skips
    nor repeats an entry. A reader resumes from its cookie by bisection: scanning from the start
    for every chunk made listing 60,000 entries take a second.
    """

    __slots__ = ("_cookie_of", "_name_at", "_next", "_order")

    def __init__(self) -> None:
        self._cookie_of: dict[bytes, int] = {}
        self._name_at: dict[int, bytes] = {}
        self._order: list[int] = []  # the cookies given, ascending; those of unlinked names until compacted
        self._next = FIRST_ENTRY_COOKIE

    def add(self, name: bytes) -> None:
        self._cookie_of[name] = self._next
        self._name_at[self._next] = name
        self._order.append(self._next)
        self._next += 1

    def remove(self, name: bytes) -> None:
        del self._name_at[self._cookie_of.pop(name)]
        if len(self._order) > 2 * len(self._name_at) + 64:  # amortized: at most every other entry is dead
            self._order = [cookie for cookie in self._order if cookie in self._name_at]

    def after(self, cookie: int) -> Iterator[tuple[int, bytes]]:
        """(cookie, name) of the names after position `cookie`, in link order."""
        order = self._order
        for index in range(bisect_right(order, cookie), len(order)):
            name = self._name_at.get(order[index])
            if name is not None:
                yield order[index], name


@dataclass(eq=False)
class Inode:
    ino: int
    mode: int
    uid: int
    gid: int
    name: bytes  # the latest name it was linked under, for log lines
    nlink: int = 0
    lookups: int = 0
    handles: int = 0
    atime_ns: int = field(default_factory=time.time_ns)
    mtime_ns: int = 0
    ctime_ns: int = 0
    entries: "dict[bytes, int] | None" = None  # directories only
    cookies: "ReaddirCookies | None" = None  # directories only
    parent: int = ROOT_INO  # the directory it was last linked into
    gmem: "GuestMemfd | None" = None  # regular files only
    view_of: int = 0  # a guest view: the inode of the file it shows (see InodeTable.guest_view)
    views: int = 0  # a file: its guest views alive (each keeps the file from eviction)

    def __post_init__(self) -> None:
        self.mtime_ns = self.ctime_ns = self.atime_ns

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    def touch(self, *, modified: bool = True) -> None:
        now = time.time_ns()
        self.ctime_ns = now
        if modified:
            self.mtime_ns = now


@dataclass(frozen=True, eq=False)
class Handle:
    """One open file or directory: what it reaches and whether it was opened for writing.

    Files and directories draw numbers from one counter, so a handle can never be
    mistaken for a handle of another kind (or another user's file).
    """

    inode: Inode
    writable: bool


class InodeTable:
    """Owns every inode and decides when one dies.

    unlink, forget and release return the GuestMemfd of a file nobody can reach any more
    (else None): the caller must release its memory (GuestMemfd.evict). A file is returned
    again when its entry goes at the FORGET after its last close; evicting it twice is harmless.
    """

    def __init__(self, root_mode: int, uid: int, gid: int) -> None:
        self._inodes: dict[int, Inode] = {}
        self._next_ino = itertools.count(ROOT_INO + 1)
        self._handles: dict[int, Handle] = {}
        self._next_fh = itertools.count(1)
        self._extra_links = 0  # names of files beyond each one's first
        root = Inode(
            ino=ROOT_INO,
            mode=stat.S_IFDIR | root_mode,
            uid=uid,
            gid=gid,
            name=b"/",
            nlink=2,
            entries={},
            cookies=ReaddirCookies(),
        )
        self._inodes[ROOT_INO] = root
        # The daemon's event stream (operations: TRACE_FILE), as permanent as the root: no name
        # links it (readdir never lists it, unlink and rename never find it), no GuestMemfd, and
        # max_files does not count it.
        self.trace_file = Inode(ino=TRACE_INO, mode=stat.S_IFREG | 0o400, uid=0, gid=0, name=TRACE_FILE, nlink=1)
        self._inodes[TRACE_INO] = self.trace_file

    def __getitem__(self, ino: int) -> Inode:
        """KeyError when the inode does not exist (any more)."""
        return self._inodes[ino]

    def find(self, ino: int) -> "Inode | None":
        return self._inodes.get(ino)

    def __len__(self) -> int:
        return len(self._inodes)

    @property
    def charged(self) -> int:
        """What max_files counts, as tmpfs's nr_inodes: every inode but the root and the trace file, and
        every name of a file beyond its first (shmem_link charges one: each name pins kernel memory for good)."""
        return len(self._inodes) - 2 + self._extra_links

    def files(self) -> list[Inode]:
        return [inode for inode in self._inodes.values() if inode.gmem and not inode.view_of]

    def unlinked_summary(self) -> dict:
        """Files only fds reach (create_guest_memfd's): no path shows them, so the root does."""
        unlinked = [inode.gmem for inode in self.files() if inode.nlink == 0 and (inode.handles or inode.views)]
        return {
            "files": len(unlinked),
            "reserved_pages": sum(gmem.reserved_pages for gmem in unlinked),
            "allocated_bytes": sum(gmem.allocated.total for gmem in unlinked),
        }

    def path_of(self, inode: Inode) -> str:
        """'/dir/vm0' from the root; '(unlinked) vm0' for a file only fds still reach."""
        if inode.nlink == 0:
            return f"(unlinked) {inode.name.decode(errors='replace')}"
        parts = []
        while inode.ino != ROOT_INO:
            parts.append(inode.name.decode(errors="replace"))
            inode = self._inodes.get(inode.parent) or self._inodes[ROOT_INO]
        return "/" + "/".join(reversed(parts))

    def new(self, mode: int, uid: int, gid: int, name: bytes, gmem: "GuestMemfd | None" = None) -> Inode:
        inode = Inode(ino=next(self._next_ino), mode=mode, uid=uid, gid=gid, name=name, gmem=gmem)
        if inode.is_dir:
            inode.entries = {}
            inode.cookies = ReaddirCookies()
        self._inodes[inode.ino] = inode
        return inode

    def link(self, directory: Inode, name: bytes, inode: Inode) -> None:
        if inode.nlink and not inode.is_dir:
            self._extra_links += 1
        directory.entries[name] = inode.ino
        directory.cookies.add(name)
        inode.nlink += 1
        inode.name = name
        inode.parent = directory.ino
        if inode.is_dir:
            inode.nlink += 1  # its own '.'
            directory.nlink += 1  # its '..'
        directory.touch()
        inode.touch(modified=False)

    def unlink(self, directory: Inode, name: bytes) -> "GuestMemfd | None":
        inode = self._inodes[directory.entries.pop(name)]
        directory.cookies.remove(name)
        if inode.nlink > 1 and not inode.is_dir:
            self._extra_links -= 1
        inode.nlink -= 1
        if inode.is_dir:
            inode.nlink -= 1
            directory.nlink -= 1
        directory.touch()
        inode.touch(modified=False)
        return self._evict_if_unused(inode)

    def entries_after(self, directory: Inode, cookie: int) -> Iterator[tuple[bytes, Inode, int]]:
        """(name, inode, cookie) of the entries after the readdir position `cookie`, in order."""
        for entry_cookie, name in directory.cookies.after(cookie):
            yield name, self._inodes[directory.entries[name]], entry_cookie

    def guest_view(self, inode: Inode) -> Inode:
        """The file's guest view: a second inode of the same gmem file, so a second page cache.

        `gmemfs run` maps it where a private VM's guest reaches the file's private pages, which
        the host's own mappings of the file (this inode's page cache) must never hold. It has no
        name, answers private pages only, and keeps the file alive while the kernel knows it.
        """
        if inode.gmem.view:
            return self._inodes[inode.gmem.view]
        view = self.new(stat.S_IFREG | 0o600, 0, 0, inode.name, inode.gmem)
        view.view_of = inode.ino
        inode.views += 1
        inode.gmem.view = view.ino
        return view

    def add_lookup(self, inode: Inode) -> Inode:
        """The kernel got a reference to the inode (lookup, create, readdirplus...)."""
        inode.lookups += 1
        return inode

    def forget(self, ino: int, count: int) -> "GuestMemfd | None":
        inode = self._inodes.get(ino)
        if inode is None:
            return None
        inode.lookups = max(inode.lookups - count, 0)
        return self._evict_if_unused(inode)

    def open(self, inode: Inode, *, writable: bool = False) -> int:
        """A new handle for a file or directory (open, create, opendir)."""
        fh = next(self._next_fh)
        self._handles[fh] = Handle(inode, writable)
        inode.handles += 1
        return fh

    def handle(self, fh: int) -> Handle:
        """KeyError for a number no open handle has."""
        return self._handles[fh]

    def release(self, fh: int) -> "GuestMemfd | None":
        inode = self._handles.pop(fh).inode
        inode.handles -= 1
        return self._evict_if_unused(inode)

    def _evict_if_unused(self, inode: Inode) -> "GuestMemfd | None":
        """The file whose memory nobody can reach any more, which the caller releases, once the
        inode is unlinked and closed; the entry itself goes once the kernel has forgotten it too."""
        if inode.nlink or inode.handles or inode.views or inode.ino in (ROOT_INO, TRACE_INO):
            return None
        if inode.lookups:
            # Unlinked and closed (mappings hold a handle too): nothing can reach its pages any
            # more, so they go back now, as in evict_inode during the last close, not at the
            # FORGET that follows (~0.3 ms later). The entry stays until the kernel forgets it.
            return inode.gmem if inode.gmem and not inode.view_of else None
        del self._inodes[inode.ino]
        if inode.view_of:
            inode.gmem.view = 0
            shown = self._inodes[inode.view_of]
            shown.views -= 1
            return self._evict_if_unused(shown)
        return inode.gmem

    def files_holding_memory(self) -> "list[Inode]":
        """The files that have a backing still: what the end of the session will evict."""
        return [inode for inode in self._inodes.values() if inode.gmem and not inode.view_of and inode.gmem.backing]

    def evict_all(self) -> None:
        """The end of the session: every file's memory goes back at once."""
        for inode in self._inodes.values():
            if inode.gmem:
                inode.gmem.evict()
        self._inodes = {ROOT_INO: self._inodes[ROOT_INO], TRACE_INO: self.trace_file}
        self._handles.clear()
