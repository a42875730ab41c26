"""The pyfuse3 Operations: translate each FUSE request into the layers below.

Handlers stay thin. Rule violations arrive as GmemError and leave as the
kernel's errno, with one log line naming the file and the rule (rate-limited:
see ratelimit); nothing a request does can stop the daemon.
"""

import errno
import functools
import inspect
import json
import logging
import os
import select
import stat

import pyfuse3
import trio
from pyfuse3 import FUSEError

from ..base.hugepages import HugePageSupport, pool_counters
from ..base.ratelimit import RateLimitedLog
from ..kernel.inspection import parse_attribute_name
from ..kernel.rules import (
    GmemError,
    check_conversions,
    file_mode,
    inherited_group,
    parse_flags_value,
    parse_page_order,
)
from ..kernel.uapi import (
    BASE_PAGE_SIZE,
    GUEST_VIEW_PREFIX,
    TRACE_FILE,
    XATTR_ABI,
    XATTR_FLAGS,
    XATTR_NAMES,
    XATTR_PAGE_ORDER,
    XATTR_UNLINKED,
    ConversionRequest,
)
from ..trace import decode
from .backing import Backing
from .conversion import Conversions
from .faults import FaultInjector, halfway
from .guest_memfd import GuestMemfd
from .inodes import DOT_COOKIE, DOTDOT_COOKIE, ROOT_INO, TRACE_INO, Handle, Inode, InodeTable
from .limits import MountQuota, check_file_limit, huge_page_unit
from .options import MountOptions
from .page_changes import in_worker_thread, serialized
from .trace_file import TraceFile
from .tracing import conversion_what, pool_words, refused_request, request_context
from .tracing import event as trace_event

log = logging.getLogger(__name__)

NO_READ = "vfs_read (guest_memfd has no read)"  # the functions that make the daemon's own refusals
NO_WRITE = "vfs_write (guest_memfd has no write)"
INJECTED = "gmemfs: -o fail"
INSPECTION = "gmemfs: the user.gmem.* attributes"
THREADED_CHANGE = 64 << 20  # allocating, punching or evicting this many bytes runs off the event loop


def _request(target: str, quiet: bool = False):
    """Wrap a handler: errors become FUSEError; `target` says what identifies the file in log lines:
    "ino" the first argument, "fh" the argument named fh (fallocate and ioctl get an inode
    number first, which read as a handle number would name another file), "mount" none.

    quiet handlers log rule violations at debug level only: the kernel makes
    those requests itself (readahead next to a private page), not the user.
    """

    def decorate(handler):
        position = list(inspect.signature(handler).parameters).index("fh") - 1 if target == "fh" else 0

        @functools.wraps(handler)
        async def wrapper(self: "GmemOperations", *args):
            try:
                return await handler(self, *args)
            except FUSEError as error:
                if self.trace.readers and (handler.__name__, error.errno) not in PROBES:
                    refusal = _edge_refusal(handler.__name__, error.errno)
                    self._trace_refusal(handler.__name__, target, args[position], args, refusal)
                raise
            except GmemError as error:
                if self.trace.readers:
                    self._trace_refusal(handler.__name__, target, args[position], args, error)
                level = logging.DEBUG if quiet else logging.INFO
                if self.refusals.admit(level):
                    log.log(
                        level,
                        "%s: %s: %s (%s)",
                        self._describe(target, args[position]),
                        handler.__name__,
                        error.rule,
                        errno.errorcode.get(error.errno, error.errno),
                    )
                raise FUSEError(error.errno) from None
            except OSError as error:
                err = error.errno if error.errno not in (None, errno.ENOSYS) else errno.EIO
                if self.trace.readers:
                    failure = OSError(err, str(error))
                    failure.trace_detail = getattr(error, "trace_detail", {})
                    self._trace_refusal(handler.__name__, target, args[position], args, failure)
                if self.failures.admit(logging.WARNING):
                    log.warning("%s: %s failed: %s", self._describe(target, args[position]), handler.__name__, error)
                raise FUSEError(err) from None
            except Exception:
                if self.failures.admit(logging.ERROR):
                    log.exception("%s: %s: unexpected error", self._describe(target, args[position]), handler.__name__)
                raise FUSEError(errno.EIO) from None

        return wrapper

    return decorate


# Refusals at the FUSE edge (which handle, opened how, which kind of inode) are the VFS's in
# the kernel: the trace names the VFS function that makes them. Lookups of names that do not
# exist and questions for attributes a file lacks are how callers probe, and a trace reader's
# EAGAIN (nothing yet) and EINTR (its signal) how it waits: none of them is a refusal.
EDGE_FUNCTIONS = {
    "fallocate": "vfs_fallocate",
    "ioctl": "vfs_ioctl",
    "read": "vfs_read",
    "write": "vfs_write",
    "writepage": "vfs_write",
    "open": "do_dentry_open",
    "setattr": "notify_change",
    "setxattr": "vfs_setxattr",
    "removexattr": "vfs_removexattr",
}
PROBES = frozenset(
    {
        ("lookup", errno.ENOENT),
        ("getxattr", errno.ENODATA),
        ("getxattr", errno.ENOTSUP),
        ("read", errno.EAGAIN),  # only the trace file's read raises these two
        ("read", errno.EINTR),
    }
)


def _edge_refusal(handler: str, err: int) -> GmemError:
    return GmemError(err, os.strerror(err), function=EDGE_FUNCTIONS.get(handler, f"the VFS ({handler})"))


NAME_MAX = 255  # what statfs says, as tmpfs


def _reserved(parent: int, name: bytes) -> bool:
    """Names in the root that only root's lookup finds (the trace file, guest views), for everyone:
    a file of a user's under such a name would be what root's path walk reaches while that
    user's lookup of it stays in the kernel's cache."""
    return parent == ROOT_INO and (name == TRACE_FILE or name.startswith(GUEST_VIEW_PREFIX))


def _check_name(name: bytes) -> None:
    if len(name) > NAME_MAX:
        raise FUSEError(errno.ENAMETOOLONG)


def _xattr_names(gmem: GuestMemfd) -> "tuple[bytes, ...]":
    """A file's attributes: page_order only where the ABI has it (hugetlb-2025)."""
    return (*XATTR_NAMES, XATTR_PAGE_ORDER) if gmem.profile.page_order else XATTR_NAMES


def _in_page_cache(gmem: GuestMemfd) -> bool:
    """Files that may be mapped go through the kernel's page cache; the others use direct I/O."""
    return gmem.profile.mmap_allowed(gmem.flags)


def _opened_for_writing(flags: int) -> bool:
    return flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)


class GmemOperations(pyfuse3.Operations):
    """Every regular file is a guest_memfd; directories behave like tmpfs.

    Concurrency, in one place:
    - Every handler runs on the daemon's one trio loop and must never wait on anything a
      client may hold (its mmap_lock, a page lock): the kernel may hold those while it
      waits for this very daemon, nor be held by one user's large work. So these run in
      worker threads: allocations, punches and evictions of THREADED_CHANGE bytes or more
      (the kernel frees 3 GiB of 4 KiB pages in ~0.4 s), the kernel's cache invalidation when a
      range turns private (it writes dirty pages back through writepage), and the in-use check's
      reading of the file users' /proc (conversion: IN_USE_CHECKS_AT_ONCE threads at most,
      each bounded by its deadline; one that cannot finish refuses the conversion).
    - GuestMemfd.lock (threading) guards a file's page runs for a few list operations;
      GuestMemfd.change_lock (trio) orders page changes behind one that is under way in a
      thread. writepage takes neither the second nor waits: see GuestMemfd.
    - The inode table is touched by the loop only.
    - Between requests the loop polls the FUSE fd for up to -o busy_poll (without the GIL,
      so worker threads run on) before it sleeps: see pyfuse3 patch 0006.
    - Tracing: every decision emits an event to `self.trace` (gmemfs.trace) on the loop, after
      any worker thread it waited for, and only `if self.trace.readers:` (tracing off costs that
      test). The trace file (TRACE_FILE, root's only) is read like trace_pipe; see trace_file.py.
    Known limits: a request is answered in the order the loop gets to it; a signal to the
    caller stops only threaded allocations (between 2 MiB chunks) and waiting trace reads.
    """

    enable_writeback_cache = False
    handle_killpriv_v2 = True  # see rules.file_mode
    read_takes_context = True  # a waiting read of the trace file must see its caller's signal

    def __init__(self, options: MountOptions, mountpoint: str, support: "HugePageSupport | None" = None) -> None:
        super().__init__()
        self.options = options
        self.mountpoint = mountpoint
        self.support = support or HugePageSupport.probe()
        self.inodes = InodeTable(
            options.root_mode,
            os.getuid() if options.root_uid is None else options.root_uid,
            os.getgid() if options.root_gid is None else options.root_gid,
        )
        unit = huge_page_unit(options.page_size, self.support.default_size)
        self.quota = MountQuota(options.max_huge_pages, options.max_size, unit)
        self.faults = FaultInjector(options.faults)
        self.conversions = Conversions(mountpoint, self.faults, functools.partial(self._describe, "ino"))
        self.initialized = trio.Event()  # FUSE's INIT is answered
        self.refusals = RateLimitedLog(log, "refusals")  # the lines of requests the kernel would refuse
        self.failures = RateLimitedLog(log, "failures")  # and of those that failed: a flood of one hides no other
        self._releases: trio.Nursery | None = None  # where large evicted files are freed (see serve)
        self._releasing: set[trio.Event] = set()  # those frees under way
        self.trace_file = TraceFile()  # its readers: every open of TRACE_FILE
        self.trace = self.trace_file.channel  # the daemon's events

    def init(self) -> None:
        self.initialized.set()

    # ---- helpers -------------------------------------------------------------

    def _inode(self, ino: int) -> Inode:
        try:
            return self.inodes[ino]
        except KeyError:
            raise FUSEError(errno.ENOENT) from None

    def _directory(self, ino: int) -> Inode:
        inode = self._inode(ino)
        if not inode.is_dir:
            raise FUSEError(errno.ENOTDIR)
        return inode

    def _handle(self, fh: int) -> Handle:
        try:
            return self.inodes.handle(fh)
        except KeyError:
            raise FUSEError(errno.EBADF) from None

    def _file(self, fh: int) -> Inode:
        """The gmem file (or guest view) an open handle reaches; a directory's handle is EBADF here."""
        inode = self._handle(fh).inode
        if inode.gmem is None:
            raise FUSEError(errno.EBADF)
        return inode

    def _writable_file(self, fh: int) -> Inode:
        """The gmem file a handle may change: EBADF without write access, as fallocate(2), and
        through a guest view (it only lets the guest reach private pages)."""
        handle = self._handle(fh)
        if handle.inode.gmem is None or not handle.writable or handle.inode.view_of:
            raise FUSEError(errno.EBADF)
        return handle.inode

    def _describe(self, target: str, value: int) -> str:
        """'file vm0 (inode 5)', for log lines; only called on error paths."""
        if target == "mount":
            return "mount"
        try:
            inode = self.inodes.handle(value).inode if target == "fh" else self.inodes[value]
        except KeyError:
            return f"{target} {value}"
        kind = "directory" if inode.is_dir else "file"
        return f"{kind} {self.inodes.path_of(inode)} (inode {inode.ino})"

    def _emit(self, what: str, inode: "Inode | None" = None, ctx=None, **fields) -> None:
        """One event to the trace readers (callers test self.trace.readers first)."""
        self.trace.emit(trace_event(what, self.inodes, inode, ctx, **fields))

    def _trace_refusal(self, name: str, target: str, value: int, args: tuple, error: OSError) -> None:
        """A refused request as an event: its errno, rule and function; never fails the request."""
        try:
            inode = None
            if target == "ino":
                inode = self.inodes[value]
            elif target == "fh":
                inode = self.inodes.handle(value).inode
        except KeyError:
            pass
        try:
            what, words, detail = refused_request(name, inode, args)
            detail.update(getattr(error, "trace_detail", {}))  # what a failure left done
            self._emit(what, inode, request_context(args), args=words, error=error, detail=detail)
        except Exception:
            log.exception("tracing a refused %s failed", name)

    def _entry(self, inode: Inode) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = inode.ino
        entry.st_mode = inode.mode
        entry.st_nlink = inode.nlink
        entry.st_uid = inode.uid
        entry.st_gid = inode.gid
        gmem = inode.gmem
        if gmem:
            entry.st_size = gmem.size
            entry.st_blksize = gmem.page_size
            entry.st_blocks = gmem.allocated.total // 512
        else:
            entry.st_blksize = BASE_PAGE_SIZE
        entry.st_atime_ns = inode.atime_ns
        entry.st_mtime_ns = inode.mtime_ns
        entry.st_ctime_ns = inode.ctime_ns
        entry.entry_timeout = self.options.cache_timeout
        # A mappable file's attributes are never cached: then every read(2) asks for them
        # first (auto_inval_data), naming its file handle, and getattr can refuse it.
        entry.attr_timeout = 0 if gmem and _in_page_cache(gmem) else self.options.cache_timeout
        if inode.ino == TRACE_INO or inode.view_of:  # looked up at every path walk: only root's finds it
            entry.entry_timeout = entry.attr_timeout = 0
        return entry

    def _file_info(self, fh: int, gmem: GuestMemfd, guest_view: bool = False) -> pyfuse3.FileInfo:
        """How the kernel treats an open file, decided by the flags it has when opened.

        Not seekable, as the kernel's guest_memfd: pread/pwrite/lseek give ESPIPE.
        Files that may be mmapped go through the page cache (faults become READ,
        writeback becomes writepage); the others use direct I/O, for which the
        kernel refuses shared mmap with ENODEV, as guest_memfd without MMAP does.
        """
        direct_io = not guest_view and not _in_page_cache(gmem)  # a view is only ever mapped
        return pyfuse3.FileInfo(fh=fh, direct_io=direct_io, keep_cache=True, nonseekable=True)

    def _new_name(self, parent: int, name: bytes) -> Inode:
        directory = self._directory(parent)
        _check_name(name)
        if name in directory.entries:
            raise FUSEError(errno.EEXIST)
        if _reserved(parent, name):
            raise FUSEError(errno.EPERM)
        return directory

    def _room_for_another_name(self) -> None:
        """Before a new file, directory or hard link (see InodeTable.charged)."""
        check_file_limit(self.inodes.charged, self.options.max_files)

    async def serve(self, busy_poll: float) -> None:
        """Answer requests (pyfuse3.main) until unmounted, beside the frees of large evicted files
        (see _evict), which outlive their request: this returns once those are done too."""
        async with trio.open_nursery() as releases:
            self._releases = releases
            try:
                async with trio.open_nursery() as watch:
                    watch.start_soon(self.trace_file.end_with_the_session)
                    await pyfuse3.main(busy_poll=busy_poll)
                    watch.cancel_scope.cancel()
            finally:
                self._releases = None
                self.trace.close()  # unmounted: any reader left reads to its end

    def release_all(self) -> None:
        """The end of the session evicts every file."""
        self.inodes.evict_all()

    def report_suppressed(self) -> None:
        """The end of the session: log how many lines the rate limits left out last."""
        self.refusals.report_suppressed()
        self.failures.report_suppressed()

    # ---- names and attributes -------------------------------------------------

    @_request("ino")
    async def lookup(self, parent_inode, name, ctx):
        directory = self._directory(parent_inode)
        _check_name(name)
        if name == b".":
            inode = directory
        elif name == b"..":
            inode = self._inode(directory.parent)
        elif parent_inode == ROOT_INO and name.startswith(GUEST_VIEW_PREFIX) and ctx.uid == 0:
            inode = self._guest_view(name)
        elif parent_inode == ROOT_INO and name == TRACE_FILE and ctx.uid == 0:
            inode = self.inodes.trace_file
        else:
            ino = directory.entries.get(name)
            if ino is None:
                raise FUSEError(errno.ENOENT)
            inode = self.inodes[ino]
        return self._entry(self.inodes.add_lookup(inode))

    def _guest_view(self, name: bytes) -> Inode:
        """A file's guest view, looked up by root only (gmemfs run's supervisor): for anyone
        else the name does not exist, and readdir never lists it."""
        number = name[len(GUEST_VIEW_PREFIX) :]
        try:
            file = self.inodes[int(number)] if number.isdigit() else None
        except KeyError:
            file = None
        if file is None or file.gmem is None or file.view_of or not file.gmem.size:
            raise FUSEError(errno.ENOENT)
        return self.inodes.guest_view(file)

    async def forget(self, inode_list):
        for ino, count in inode_list:
            try:
                inode = self.inodes.find(ino) if self.trace.readers else None
                self._evict(self.inodes.forget(ino, count), inode, "forget")
            except Exception:  # forget has no reply to carry an error; the daemon must live on
                log.exception("inode %d: releasing its memory failed", ino)

    @_request("ino")
    async def getattr(self, inode, ctx):
        fh = getattr(ctx, "fh", None)  # pyfuse3 patch 0007; None for stat(2) and fstat(2)
        if fh is not None and inode != TRACE_INO:
            raise GmemError(
                errno.EINVAL, "read(2) of a guest_memfd", function=NO_READ
            )  # the only GETATTR of an open file
        return self._entry(self._inode(inode))

    @_request("ino")
    async def setattr(self, ino, attr, fields, fh, ctx):
        inode = self._inode(ino)
        if ino == TRACE_INO:
            raise FUSEError(errno.EPERM)
        if fields.update_size:  # first, so that a refused size changes nothing
            if inode.gmem is None:
                raise FUSEError(errno.EISDIR)
            self.faults.fail_if_tripped("size")
            if self._releasing:
                await self._memory_released()
            await serialized(inode.gmem, inode.gmem.complete_creation, attr.st_size)
            inode.touch()
            if self.trace.readers:
                self._trace_sizing(inode, ctx)
        if fields.update_mode:
            bits = stat.S_IMODE(attr.st_mode) if inode.is_dir else file_mode(attr.st_mode)
            inode.mode = stat.S_IFMT(inode.mode) | bits
        if fields.update_uid:
            inode.uid = attr.st_uid
        if fields.update_gid:
            inode.gid = attr.st_gid
        if fields.update_atime:
            inode.atime_ns = attr.st_atime_ns
        if fields.update_mtime:
            inode.mtime_ns = attr.st_mtime_ns
        inode.touch(modified=False)
        return self._entry(inode)

    @_request("ino")
    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        raise FUSEError(errno.EPERM)

    @_request("ino")
    async def symlink(self, parent_inode, name, target, ctx):
        raise FUSEError(errno.EPERM)

    @_request("ino")
    async def mkdir(self, parent_inode, name, mode, ctx):
        directory = self._new_name(parent_inode, name)
        self._room_for_another_name()
        gid, mode = inherited_group(stat.S_IFDIR | stat.S_IMODE(mode), directory.mode, directory.gid, ctx.gid)
        inode = self.inodes.new(mode, ctx.uid, gid, name)
        self.inodes.link(directory, name, inode)
        return self._entry(self.inodes.add_lookup(inode))

    @_request("ino")
    async def create(self, parent_inode, name, mode, flags, ctx):
        directory = self._new_name(parent_inode, name)
        self._room_for_another_name()
        options = self.options
        gmem = GuestMemfd(
            options.default_flags, options.abi, self.support, self.quota, options.default_page_order,
            options.backing_page_size,
        )  # fmt: skip
        gid, mode = inherited_group(stat.S_IFREG | file_mode(mode), directory.mode, directory.gid, ctx.gid)
        inode = self.inodes.new(mode, ctx.uid, gid, name, gmem)
        self.inodes.link(directory, name, inode)
        self.inodes.add_lookup(inode)
        fh = self._open_file(inode, flags, ctx)
        if self.trace.readers:
            flags_words = decode.guest_memfd_flags(gmem.flags, gmem.profile)
            words = f"name={name.decode(errors='backslashreplace')} flags={flags_words}"
            self._emit("create", inode, ctx, args=words, detail={"abi": gmem.profile.name})
        return self._file_info(fh, gmem), self._entry(inode)

    @_request("ino")
    async def link(self, inode, new_parent_inode, new_name, ctx):
        target = self._inode(inode)
        directory = self._new_name(new_parent_inode, new_name)
        if target.is_dir or target.ino == TRACE_INO:
            raise FUSEError(errno.EPERM)
        self._room_for_another_name()
        self.inodes.link(directory, new_name, target)
        return self._entry(self.inodes.add_lookup(target))

    @_request("ino")
    async def unlink(self, parent_inode, name, ctx):
        directory = self._directory(parent_inode)
        if _reserved(parent_inode, name):
            raise FUSEError(errno.EPERM)
        if name not in directory.entries:
            raise FUSEError(errno.ENOENT)
        inode = self.inodes[directory.entries[name]]
        if inode.is_dir:
            raise FUSEError(errno.EISDIR)
        self._evict(self.inodes.unlink(directory, name), inode, "unlink")

    @_request("ino")
    async def rmdir(self, parent_inode, name, ctx):
        directory = self._directory(parent_inode)
        if name not in directory.entries:
            raise FUSEError(errno.ENOENT)
        target = self.inodes[directory.entries[name]]
        if not target.is_dir:
            raise FUSEError(errno.ENOTDIR)
        if target.entries:
            raise FUSEError(errno.ENOTEMPTY)
        self.inodes.unlink(directory, name)

    @_request("ino")
    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        old_directory = self._directory(parent_inode_old)
        new_directory = self._directory(parent_inode_new)
        if _reserved(parent_inode_old, name_old) or _reserved(parent_inode_new, name_new):
            raise FUSEError(errno.EPERM)
        if name_old not in old_directory.entries:
            raise FUSEError(errno.ENOENT)
        _check_name(name_new)
        if flags & ~pyfuse3.RENAME_NOREPLACE:  # RENAME_EXCHANGE, and RENAME_WHITEOUT: no device nodes here
            raise FUSEError(errno.EINVAL)
        moving = self.inodes[old_directory.entries[name_old]]
        replaced_ino = new_directory.entries.get(name_new)
        if replaced_ino == moving.ino:
            return
        evicted = replaced = None
        if replaced_ino is not None:
            if flags & pyfuse3.RENAME_NOREPLACE:
                raise FUSEError(errno.EEXIST)
            replaced = self.inodes[replaced_ino]
            if replaced.is_dir and not moving.is_dir:
                raise FUSEError(errno.EISDIR)
            if moving.is_dir and not replaced.is_dir:
                raise FUSEError(errno.ENOTDIR)
            if replaced.entries:
                raise FUSEError(errno.ENOTEMPTY)
            evicted = self.inodes.unlink(new_directory, name_new)
        self.inodes.link(new_directory, name_new, moving)
        self.inodes.unlink(old_directory, name_old)  # still linked under the new name
        self._evict(evicted, replaced, "rename")

    # ---- directories ------------------------------------------------------------

    @_request("ino")
    async def opendir(self, inode, ctx):
        return self.inodes.open(self._directory(inode))

    @_request("fh")
    async def readdir(self, fh, start_id, token):
        directory = self._handle(fh).inode
        if not directory.is_dir:
            raise FUSEError(errno.ENOTDIR)
        for name, cookie in ((b".", DOT_COOKIE), (b"..", DOTDOT_COOKIE)):
            if start_id < cookie:  # no lookup reference for these two
                target = directory if name == b"." else self._inode(directory.parent)
                if not pyfuse3.readdir_reply(token, name, self._entry(target), cookie):
                    return
        for name, inode, cookie in self.inodes.entries_after(directory, start_id):
            if not pyfuse3.readdir_reply(token, name, self._entry(inode), cookie):
                break
            self.inodes.add_lookup(inode)  # readdirplus hands the kernel a reference

    @_request("fh")
    async def releasedir(self, fh):
        self.inodes.release(fh)

    @_request("mount")
    async def statfs(self, ctx):
        result = pyfuse3.StatvfsData()
        page_size = self.options.page_size
        if page_size == BASE_PAGE_SIZE:
            total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // page_size
            free = available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // page_size
        else:
            pool = pool_counters(page_size)
            total, free, available = pool.total, pool.free, pool.available
        result.f_bsize = result.f_frsize = page_size
        result.f_blocks, result.f_bfree, result.f_bavail = total, free, available
        files = self.options.max_files or self.inodes.charged + (1 << 20)
        result.f_files = files
        result.f_ffree = result.f_favail = max(files - self.inodes.charged, 0)
        result.f_namemax = NAME_MAX
        return result

    # ---- open files -----------------------------------------------------------------

    @_request("ino")
    async def open(self, inode, flags, ctx):
        target = self._inode(inode)
        if target.gmem is None:
            if target is self.inodes.trace_file:
                return self.trace_file.open(flags, ctx, functools.partial(self.inodes.open, target))
            raise FUSEError(errno.EISDIR)
        if flags & os.O_TRUNC and target.gmem.size:  # atomic O_TRUNC: the kernel would believe size 0
            raise GmemError(
                errno.EINVAL, "open(O_TRUNC): the size of a guest_memfd is fixed", function="kvm_gmem_setattr"
            )
        return self._file_info(self._open_file(target, flags, ctx), target.gmem, guest_view=bool(target.view_of))

    def _open_file(self, inode: Inode, flags: int, ctx) -> int:
        """A handle; an opener for writing becomes one of the file's users (see host_users)."""
        writable = _opened_for_writing(flags)
        if writable:
            inode.gmem.users.record(ctx.pid)
        return self.inodes.open(inode, writable=writable)

    @_request("fh", quiet=True)
    async def read(self, fh, off, size, ctx):
        """Page faults of shared pages (and of a guest view). read(2) never gets here: a mappable
        file's is refused in getattr, and the only READ of a file that cannot be mapped (direct
        I/O) is a read(2)."""
        inode = self._handle(fh).inode
        if inode.gmem is None:
            if inode is self.inodes.trace_file:
                return await self.trace_file.read(fh, size, ctx)
            raise FUSEError(errno.EBADF)
        if inode.view_of:
            data = inode.gmem.read_for_guest(off, size)
            if self.trace.readers:
                self._emit("guest_fault", inode, args=f"read range={decode.range_words(off, size)}")
            return data
        if not _in_page_cache(inode.gmem):
            raise GmemError(errno.EINVAL, "read(2) of a guest_memfd", function=NO_READ)
        inode.gmem.host_mapped = True
        return inode.gmem.read_shared(off, size)

    @_request("fh")
    async def write(self, fh, off, buf):
        raise GmemError(errno.EINVAL, "write(2) to a guest_memfd", function=NO_WRITE)

    @_request("fh")
    async def writepage(self, fh, off, buf):
        """Writeback of the host's writes through a shared mapping (never waits: see GuestMemfd)."""
        inode = self._file(fh)
        if inode.view_of:
            written = inode.gmem.write_for_guest(off, buf)
            if self.trace.readers:
                self._emit("guest_fault", inode, args=f"write back range={decode.range_words(off, len(buf))}")
            return written
        inode.gmem.host_mapped = True
        return inode.gmem.write_shared(off, buf)

    async def flush(self, fh):
        pass

    async def fsync(self, fh, datasync):
        """Succeeds, unlike the kernel's EINVAL: fallocate(1) fsyncs and would report failure [fs]."""

    @_request("fh")
    async def release(self, fh):
        self.trace_file.release(fh)
        inode = self._handle(fh).inode
        self._evict(self.inodes.release(fh), inode, "release")

    @_request("fh")
    async def poll(self, inode, fh, poll_handle, ctx):
        """The trace file's readers say when they are readable. gmem files, as the kernel's
        guest_memfd (no poll): always ready, never ENOSYS, which would make the kernel stop
        asking for the whole mount, the trace file too."""
        events = self.trace_file.poll(fh, poll_handle)
        if events is None:
            return select.POLLIN | select.POLLOUT | select.POLLRDNORM | select.POLLWRNORM
        return events

    async def end_trace(self) -> None:
        """The daemon is going: every trace reader reads what it has, then end of file; the loop
        stops once each has read its end (a second at most). The files still holding memory
        are evicted at the end of the session (release_all): their evictions are the stream's
        last events, made now, while readers are still there to get them."""
        if self.trace.readers:
            for inode in self.inodes.files_holding_memory():
                gmem = inode.gmem
                pages = gmem.allocated.total // gmem.page_size
                detail = {
                    "pages_freed": pages,
                    "reserved_pages_released": max(gmem.reserved_pages - pages, 0),
                    "page_size": gmem.page_size,
                }
                self._emit("evict", inode, args="at=session end", detail=detail)
        await self.trace_file.end()

    @_request("fh")
    async def fallocate(self, ino, fh, mode, offset, length, ctx):
        inode = self._writable_file(fh)
        gmem = inode.gmem
        plan = gmem.plan_fallocate(mode, offset, length)
        allocated = gmem.allocated.total
        if plan.punch:
            self.faults.fail_if_tripped("punch")
            if gmem.profile.punch_in_use_eagain and gmem.hugetlb and plan.start < plan.end:
                held = await self.conversions.held_by_host(inode, plan.start, plan.end)
                if held is not None:  # merge_truncate_range(): no safe refcount, nothing truncated
                    raise GmemError(
                        errno.EAGAIN, f"punch: page {held:#x} is in use by the host", function="merge_truncate_range"
                    )
            await self._punch(gmem, plan.start, plan.end)
        else:
            try:
                await self._allocate(gmem, plan.start, plan.end, ctx)
            except OSError as error:
                # Pages done so far stay; the kernel keeps its cached st_blocks after a failed
                # fallocate, so tell it to ask again (and the trace, what stayed).
                pyfuse3.invalidate_inode(inode.ino, attr_only=True)
                error.trace_detail = {
                    "pages_allocated": (gmem.allocated.total - allocated) // gmem.page_size,
                    "page_size": gmem.page_size,
                }
                raise
        if self.trace.readers:
            changed = (gmem.allocated.total - allocated) // gmem.page_size  # what this call changed
            detail = {"pages_freed": -changed} if plan.punch else {"pages_allocated": changed}
            detail["page_size"] = gmem.page_size
            self._emit("fallocate", inode, ctx, args=decode.fallocate_args(mode, offset, length), detail=detail)

    async def _allocate(self, gmem: GuestMemfd, start: int, end: int, ctx) -> None:
        """Large allocations run in a worker thread and stop with EINTR when the caller gets a signal."""
        fault = self.faults.trip("allocate")
        stop = halfway(start, end, gmem.page_size) if fault else end
        if stop - start >= THREADED_CHANGE:
            await in_worker_thread(gmem, gmem.allocate, start, stop, lambda: ctx.interrupted)
        else:
            await serialized(gmem, gmem.allocate, start, stop)
        if fault:
            raise GmemError(fault, f"injected fault: allocate (pages up to {stop:#x} allocated)", function=INJECTED)

    async def _punch(self, gmem: GuestMemfd, start: int, end: int) -> None:
        """Many allocated pages in range run in a worker thread: the kernel takes ~0.4 s to punch
        3 GiB of 4 KiB pages (huge pages are freed fast, but zeroing part of one is not)."""
        if gmem.allocated_within(start, end) >= THREADED_CHANGE:
            await in_worker_thread(gmem, gmem.punch, start, end)
        else:
            await serialized(gmem, gmem.punch, start, end)

    def _trace_sizing(self, inode: Inode, ctx) -> None:
        """The size completes creation: the flags in the ABI's words, the pages reserved, the pool after."""
        gmem = inode.gmem
        detail = {"page_size": gmem.page_size, "reserved_pages": gmem.reserved_pages}
        pool = pool_words(gmem)
        if pool is not None:
            detail["pool"] = pool
        args = decode.create_guest_memfd_args(gmem.size, gmem.flags, gmem.profile, gmem.page_order)
        self._emit("size", inode, ctx, args=args, detail=detail)

    def _evict(self, gmem: "GuestMemfd | None", inode: "Inode | None" = None, when: str = "") -> None:
        """Release the memory of a file the inode table let go (None: none did). A large one is
        freed in a worker thread after the request is answered (the kernel takes ~0.4 s for 3 GiB
        of 4 KiB pages; a RELEASE still unanswered at unmount would fail), and sizing waits for
        it (see _memory_released). Without serve's nursery (in-process tests), on the loop.
        inode and when ("release", "forget", "unlink", "rename") name the eviction in the trace."""
        if gmem is None:
            return
        large = gmem.allocated.total >= THREADED_CHANGE
        pages = gmem.allocated.total // gmem.page_size
        freed = (pages, max(gmem.reserved_pages - pages, 0))  # a page in use has used its reservation up
        backing = gmem.detach_backing()
        if not large or backing is None or self._releases is None:
            gmem.release_backing(backing)
            if backing is not None and self.trace.readers:
                self._trace_eviction(gmem, inode, when, *freed)
            return
        released = trio.Event()
        self._releasing.add(released)
        self._releases.start_soon(self._release_in_thread, gmem, backing, released, (inode, when, *freed))

    async def _release_in_thread(
        self, gmem: GuestMemfd, backing: Backing, released: trio.Event, traced: tuple = (None, "", 0, 0)
    ) -> None:
        try:
            await trio.to_thread.run_sync(gmem.release_backing, backing)
            if self.trace.readers:  # back on the loop
                self._trace_eviction(gmem, *traced)
        except Exception:  # no request is left to carry the error; the daemon must live on
            log.exception("releasing the memory of an evicted file failed")
        finally:
            self._releasing.discard(released)
            released.set()

    def _trace_eviction(self, gmem: GuestMemfd, inode: "Inode | None", when: str, pages: int, reserved: int) -> None:
        """evict_inode: the pages and the reservation the file gave back, and the pool after."""
        detail = {"pages_freed": pages, "reserved_pages_released": reserved, "page_size": gmem.page_size}
        pool = pool_words(gmem)
        if pool is not None:
            detail["pool"] = pool
        self._emit("evict", inode, args=f"at={when}", detail=detail)

    async def _memory_released(self) -> None:
        """Wait for the evictions under way in worker threads: a file being sized may need the
        pages they free, which the kernel's close() would have freed before the caller's next
        call (FUSE sends RELEASE after close() returns, but before that next call)."""
        for released in list(self._releasing):
            await released.wait()

    @_request("fh")
    async def ioctl(self, ino, fh, cmd, arg, in_buf, out_size, flags, ctx):
        handle = self._handle(fh)
        gmem = handle.inode.gmem
        if gmem is None or flags & pyfuse3.FUSE_IOCTL_DIR or handle.inode.view_of:
            raise FUSEError(errno.ENOTTY)
        check_conversions(gmem.profile, cmd)
        if not handle.writable:  # a conversion changes the file, as fallocate does
            raise FUSEError(errno.EBADF)
        result, out_buf = await self.conversions.convert(handle.inode, cmd, in_buf)
        if self.trace.readers:
            request = ConversionRequest.decode(cmd, in_buf)
            if result:
                words, detail = (
                    errno.errorcode.get(-result, str(-result)),
                    {"error_offset": ConversionRequest.decode(cmd, out_buf).error_offset},
                )
            else:
                words, detail = "0", {}
            args = decode.conversion_args(request)
            self._emit(conversion_what(request), handle.inode, ctx, args=args, result=words, detail=detail)
        return result, out_buf

    # ---- inspection attributes ----------------------------------------------------------

    @_request("ino")
    async def setxattr(self, ino, name, value, ctx):
        inode = self._inode(ino)
        gmem = inode.gmem
        if gmem is None or name not in _xattr_names(gmem):
            raise FUSEError(errno.ENOTSUP)
        if name == XATTR_FLAGS:
            gmem.set_flags(parse_flags_value(value))
            if self.trace.readers:
                self._emit("set_flags", inode, ctx, args=f"flags={decode.guest_memfd_flags(gmem.flags, gmem.profile)}")
        elif name == XATTR_PAGE_ORDER:
            gmem.set_page_order(parse_page_order(value))
            if self.trace.readers:
                self._emit("set_page_order", inode, ctx, args=f"page_order={decode.page_order_words(gmem.page_order)}")
        else:
            raise GmemError(errno.EPERM, f"{os.fsdecode(name)} is read-only", function=INSPECTION)

    @_request("ino")
    async def getxattr(self, ino, name, ctx):
        if ino == ROOT_INO and name == XATTR_UNLINKED:
            return self._unlinked_summary()
        if ino == ROOT_INO and name == XATTR_ABI:
            return self.options.abi.name.encode()
        gmem = self._inode(ino).gmem
        if gmem is not None and name == XATTR_ABI:  # not listed: for gmemfs convert, which picks the ioctl
            return gmem.profile.name.encode()
        attribute = parse_attribute_name(name)
        if attribute is None and gmem is not None and name in _xattr_names(gmem):
            attribute = (name, 0)  # page_order, where the ABI has it
        if gmem is None or attribute is None:
            raise FUSEError(pyfuse3.ENOATTR)
        return gmem.attribute(*attribute)

    @_request("ino")
    async def listxattr(self, ino, ctx):
        if ino == ROOT_INO:
            return [XATTR_UNLINKED, XATTR_ABI]
        gmem = self._inode(ino).gmem
        return list(_xattr_names(gmem)) if gmem else []

    def _unlinked_summary(self) -> bytes:
        return json.dumps(self.inodes.unlinked_summary()).encode()

    @_request("ino")
    async def removexattr(self, ino, name, ctx):
        gmem = self._inode(ino).gmem
        if gmem is None or name not in _xattr_names(gmem):
            raise FUSEError(pyfuse3.ENOATTR)
        raise GmemError(errno.EPERM, f"{os.fsdecode(name)} cannot be removed", function=INSPECTION)
