"""The daemon's events in words: who asked, which file, what a request said (see gmemfs.trace).

Only called while someone reads the trace file (operations tests `self.trace.readers` first),
so nothing here is on the path of a request when tracing is off.
"""

import dataclasses
import errno
import os
import time

import pyfuse3

from ..base.hugepages import pool_counters
from ..kernel.uapi import BASE_PAGE_SIZE, XATTR_FLAGS, XATTR_PAGE_ORDER, ConversionRequest
from ..trace import decode
from ..trace.events import TraceEvent
from .guest_memfd import GuestMemfd
from .inodes import Inode, InodeTable

PATH_SHOWN = 512  # the end of a longer path is shown, after "..."
_TGIDS_KEPT = 256  # threads whose process is remembered; the cache starts over when full
_tgids: "dict[int, int]" = {}


def caller(ctx) -> "tuple[int, int]":
    """(pid, tid) of a request's caller; (0, 0) for requests that carry none (READ, WRITE).

    FUSE's in.h.pid is the kernel's task pid of the calling thread, which user space calls
    its thread id (RequestContext.pid is that): the process is its Tgid in /proc, 0 if gone."""
    if ctx is None:
        return 0, 0
    tid = ctx.pid
    pid = _tgids.get(tid)
    if pid is None:
        if len(_tgids) >= _TGIDS_KEPT:
            _tgids.clear()
        pid = _tgids[tid] = _tgid(tid)
    return pid, tid


def _tgid(tid: int) -> int:
    try:
        with open(f"/proc/{tid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"Tgid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def file_words(inodes: InodeTable, inode: "Inode | None") -> str:
    """'5:/dir/vm0': the inode number and its path ('7:(unlinked) vm0'); a guest view names the
    file it shows ('5:/dir/vm0 (guest view)')."""
    if inode is None:
        return ""
    if inode.view_of:
        try:
            return f"{file_words(inodes, inodes[inode.view_of])} (guest view)"
        except KeyError:
            return f"{inode.ino}:(guest view)"
    path = inodes.path_of(inode)
    if len(path) > PATH_SHOWN:  # any user picks the names and the depth: a line stays a line
        path = "..." + path[-PATH_SHOWN:]
    return f"{inode.ino}:{path}"


def session_device_fd() -> "int | None":
    """Our own copy of this daemon's /dev/fuse fd (the FUSE session's), or None if there is none
    (an in-process test): its poll says when the connection has ended."""
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "/dev/fuse":
                return os.dup(int(name))
        except OSError:  # an fd that closed meanwhile
            continue
    return None


def pool_words(gmem: GuestMemfd) -> "dict[str, int] | None":
    """The huge page pool's counters now (pages), for a hugetlb file; None for the others."""
    if not gmem.hugetlb:
        return None
    try:
        return dataclasses.asdict(pool_counters(gmem.page_size))
    except (OSError, ValueError):
        return None


def event(
    what: str,
    inodes: InodeTable,
    inode: "Inode | None" = None,
    ctx=None,
    *,
    args: str = "",
    result: str = "0",
    error: "OSError | None" = None,
    detail: "dict | None" = None,
) -> TraceEvent:
    """One daemon event, now; with error, a refusal: its errno, rule and the series' function."""
    pid, tid = caller(ctx)
    err, rule, function = 0, "", ""
    if error is not None:
        err = error.errno or errno.EIO
        result = errno.errorcode.get(err, str(err))
        rule = getattr(error, "rule", "") or error.strerror or str(error)
        function = getattr(error, "function", "")
    return TraceEvent(
        time=time.monotonic(),
        source="daemon",
        what=what,
        pid=pid,
        tid=tid,
        args=args,
        result=result,
        errno=err,
        rule=rule,
        function=function,
        file=file_words(inodes, inode),
        detail=detail or {},
    )


def conversion_what(request: ConversionRequest) -> str:
    return "convert_private" if request.to_private else "convert_shared"


def first_refused_page(gmem: GuestMemfd, start: int, end: int, guest: bool) -> "int | None":
    """The page a fault of [start, end) was refused for: the first private one (the host's
    fault), or the first shared one (the guest view's)."""
    end = min(end, gmem.size)
    with gmem.lock:
        if guest:
            for run_start, _ in gmem.shared.overlapping(start, end):
                page = max(run_start, start)
                return page - page % BASE_PAGE_SIZE  # conversions are 4 KiB-grained, huge pages or not
        else:
            for gap_start, _ in gmem.shared.gaps(start, end):
                return gap_start - gap_start % BASE_PAGE_SIZE
    return None


def refused_request(name: str, inode: "Inode | None", args: tuple) -> "tuple[str, str, dict]":
    """A refused request's event: (what, args in words, detail), with the `what` its success
    would have had ('fallocate', 'size', 'host_fault', 'convert_private'...), else the handler's name."""
    if name == "fallocate":
        _ino, _fh, mode, offset, length, _ctx = args
        return "fallocate", decode.fallocate_args(mode, offset, length), {}
    if name in ("read", "writepage", "write"):
        _fh, offset, data = args[:3]  # read's fourth is its RequestContext
        length = data if name == "read" else len(data)
        gmem = inode.gmem if inode is not None else None
        words = f"{'write back' if name == 'writepage' else name} range={decode.range_words(offset, length)}"
        if gmem is None or (name != "writepage" and not gmem.profile.mmap_allowed(gmem.flags) and not inode.view_of):
            return name, words, {}  # read(2) or write(2), not a fault
        guest = bool(inode.view_of)
        page = first_refused_page(gmem, offset, offset + length, guest)
        return ("guest_fault" if guest else "host_fault"), words, ({} if page is None else {"page": page})
    if name == "getattr":
        return "read", "read(2)", {}
    if name == "setattr":
        _ino, attr, fields, _fh, _ctx = args
        return ("size", f"size={decode.size_words(attr.st_size)}", {}) if fields.update_size else ("setattr", "", {})
    if name == "setxattr":
        _ino, attribute, value, _ctx = args
        words = value.decode(errors="backslashreplace")[:64]
        if attribute == XATTR_FLAGS:
            return "set_flags", f"flags={words}", {}
        if attribute == XATTR_PAGE_ORDER:
            return "set_page_order", f"page_order={words}", {}
        return "setxattr", f"{os.fsdecode(attribute)}={words}", {}
    if name == "ioctl":
        _ino, _fh, cmd, _arg, in_buf, _out_size, _flags, _ctx = args
        try:
            request = ConversionRequest.decode(cmd, in_buf)
        except Exception:  # not a conversion, or a struct of the wrong size
            return "ioctl", decode.ioctl_name(cmd), {}
        return conversion_what(request), decode.conversion_args(request), {}
    if name == "open":
        _ino, flags, _ctx = args
        return "open", f"flags={flags:#o}", {}
    return name, "", {}


def request_context(args: tuple):
    """The RequestContext among a handler's arguments (the last), or None (write, release)."""
    return args[-1] if args and isinstance(args[-1], pyfuse3.RequestContext) else None
