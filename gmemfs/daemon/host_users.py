"""Whether the host still holds a gmem file's pages: the in-use check of a conversion to private.

The kernel decides from a folio's references, after unmapping it. A FUSE daemon sees no
references; it sees what /proc shows of the processes that may use the file, and only of them:
- the file's users: every process that opened it for writing (FUSE names the opening thread;
  the start time tells a reused thread id apart), and their descendants (fork passes the
  mappings on);
- in each, the shared mappings of exactly this file (the device and inode fields of
  /proc/PID/maps, never a substring of the line) that may write it (VmFlags `mw`: a read-only
  open cannot make one) and that are mlock()ed (`lo`): the usual sign of memory a VMM keeps
  pinned.
So nobody without write access to the file can slow the check, spoof a user or hide one, and its
cost and memory grow with the users' own mappings, read a line at a time. A check that cannot
finish in time (a user's /proc too large or stuck, or unreadable) refuses, as the kernel's
EAGAIN would: it never converts without having looked.

It cannot see pins without mlock (vfio DMA, O_DIRECT in flight, io_uring fixed buffers), which
raise page references no interface shows to another process, nor mappings made from an fd that
was passed (SCM_RIGHTS) to a process that never opened the file and descends from no user.
"""

import os
import time
from collections.abc import Iterator

from ..base.processes import children
from ..base.ranges import Range

CHECK_DEADLINE = 2.0  # seconds one check may read /proc for
KNOWN_OPENERS = 1024  # past this many recorded openers, the ones gone are forgotten when another opens


class CheckIncomplete(Exception):
    """The check could not look at every user in time: the conversion must be refused."""


def _start_time(tid: int) -> "int | None":
    """The thread's start time (field 22 of /proc/TID/stat): with the id, who it is."""
    try:
        with open(f"/proc/{tid}/stat", "rb") as stat:
            line = stat.read()
    except OSError:
        return None
    return int(line[line.rindex(b")") + 2 :].split()[19])  # the name may hold spaces and ')'


class FileUsers:
    """The threads that opened one gmem file for writing, by id and start time.

    record() runs on the daemon's loop at open: /proc/TID/stat takes no lock a client may hold.
    """

    __slots__ = ("openers",)

    def __init__(self) -> None:
        self.openers: dict[int, int] = {}

    def record(self, tid: int) -> None:
        start = _start_time(tid)
        if start is None:
            return
        if tid not in self.openers and len(self.openers) >= KNOWN_OPENERS:
            self.forget(gone_openers(self.openers))
        self.openers[tid] = start

    def forget(self, tids: "list[int]") -> None:
        for tid in tids:
            self.openers.pop(tid, None)


def gone_openers(openers: "dict[int, int]") -> "list[int]":
    return [tid for tid, start in openers.items() if _start_time(tid) != start]


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def check(self) -> None:
        if time.monotonic() > self.at:
            raise CheckIncomplete(f"reading the users' /proc took over {CHECK_DEADLINE} s")


def locked_ranges(
    openers: "dict[int, int]", device: "tuple[int, int]", ino: int, seconds: float = CHECK_DEADLINE
) -> "list[Range]":
    """File ranges [start, end) of the inode that a user of the file keeps mlock()ed in a mapping
    that may write it. CheckIncomplete if that cannot be known in time. Runs in a worker thread."""
    deadline = _Deadline(seconds)
    key = (f"{device[0]:02x}:{device[1]:02x}".encode(), str(ino).encode())  # as maps prints them
    try:
        return [
            locked
            for pid in _users_processes(openers, deadline)
            if _maps_the_file(pid, key, deadline)
            for locked in _locked_in_smaps(pid, key, deadline)
        ]
    except OSError as error:  # EMFILE, EACCES...: what cannot be read was not looked at
        raise CheckIncomplete(f"/proc could not be read: {error}") from None


def _users_processes(openers: "dict[int, int]", deadline: _Deadline) -> "set[int]":
    """The live openers' processes and all their descendants, without the daemon itself."""
    return _with_descendants(
        [pid for tid, start in openers.items() if _start_time(tid) == start and (pid := _tgid(tid))], deadline
    )


def _with_descendants(pending: "list[int]", deadline: _Deadline) -> "set[int]":
    seen: set[int] = set()
    while pending:
        deadline.check()
        pid = pending.pop()
        if pid not in seen:
            seen.add(pid)
            pending.extend(children(pid))
    seen.discard(os.getpid())
    return seen


def _tgid(tid: int) -> "int | None":
    try:
        with open(f"/proc/{tid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"Tgid:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return None


def _mapping_header(line: bytes, key: "tuple[bytes, bytes]") -> "tuple[int, int] | None":
    """The file range of a maps/smaps header line if it is a shared mapping of the file."""
    fields = line.split(maxsplit=5)  # address, perms, offset, dev, inode, then the path (any bytes)
    if len(fields) < 5 or (fields[3], fields[4]) != key or fields[1][3:4] != b"s":
        return None
    start, end = (int(address, 16) for address in fields[0].split(b"-"))
    offset = int(fields[2], 16)
    return offset, offset + end - start


def _lines(path: str, deadline: _Deadline) -> Iterator[bytes]:
    try:
        with open(path, "rb") as lines:
            for number, line in enumerate(lines):
                if number % 512 == 0:
                    deadline.check()
                yield line
    except (FileNotFoundError, ProcessLookupError):  # the process exited: it holds nothing now
        return


def _maps_the_file(pid: int, key: "tuple[bytes, bytes]", deadline: _Deadline) -> bool:
    return any(_mapping_header(line, key) for line in _lines(f"/proc/{pid}/maps", deadline))


def _locked_in_smaps(pid: int, key: "tuple[bytes, bytes]", deadline: _Deadline) -> Iterator[Range]:
    return locked_in_smaps(_lines(f"/proc/{pid}/smaps", deadline), key)


def locked_in_smaps(lines, key: "tuple[bytes, bytes]") -> Iterator[Range]:
    """The file ranges of the mappings of `key` that are locked (`lo`) and may write (`mw`)."""
    current = None
    for line in lines:
        if not line[:1].isupper():  # a mapping's header line starts with its hex address
            current = _mapping_header(line, key)
        elif current and line.startswith(b"VmFlags:"):
            flags = line.split()[1:]
            if b"lo" in flags and b"mw" in flags:
                yield current
            current = None


PAGEMAP_PRESENT = 1 << 63
PAGEMAP_ENTRY = 8


def first_mapped_page(
    root: int, device: "tuple[int, int]", ino: int, start: int, end: int, seconds: float = CHECK_DEADLINE
) -> "int | None":
    """The first file offset in [start, end) that process `root` or a descendant has faulted in
    (present in its page tables: /proc/PID/pagemap) through a shared mapping of the file; RFC v1
    refuses to make such a page private. CheckIncomplete if that cannot be known in time."""
    deadline = _Deadline(seconds)
    key = (f"{device[0]:02x}:{device[1]:02x}".encode(), str(ino).encode())
    found = []
    try:
        for pid in _with_descendants([root], deadline):
            for line in _lines(f"/proc/{pid}/maps", deadline):
                mapped = _mapping_header(line, key)
                if mapped and mapped[0] < end and start < mapped[1]:
                    address = int(line.split(b"-", 1)[0], 16)
                    low, high = max(start, mapped[0]), min(end, mapped[1])
                    offset = _first_present(pid, address + low - mapped[0], (high - low) // 4096)
                    if offset is not None:
                        found.append(low + offset)
    except OSError as error:
        raise CheckIncomplete(f"/proc could not be read: {error}") from None
    return min(found) if found else None


def _first_present(pid: int, address: int, pages: int) -> "int | None":
    """Byte offset from address of the first page present in pid's page tables."""
    try:
        with open(f"/proc/{pid}/pagemap", "rb") as pagemap:
            pagemap.seek(address // 4096 * PAGEMAP_ENTRY)
            entries = pagemap.read(pages * PAGEMAP_ENTRY)
    except (FileNotFoundError, ProcessLookupError):
        return None
    for index in range(len(entries) // PAGEMAP_ENTRY):
        if int.from_bytes(entries[index * PAGEMAP_ENTRY : (index + 1) * PAGEMAP_ENTRY], "little") & PAGEMAP_PRESENT:
            return index * 4096
    return None
