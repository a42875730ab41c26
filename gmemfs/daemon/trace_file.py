"""The trace file: root's hidden TRACE_FILE in the mount's root, read like the kernel's trace_pipe.

Each open is a reader of the daemon's events from then on (gmemfs.trace.channel). This module
answers the file's open, read, poll and release, and ends the stream with the session; the
inode is the inode table's (TRACE_INO), and the events are made where the decisions are.
"""

import errno
import functools
import logging
import os
import select
from collections.abc import Callable

import pyfuse3
import trio
from pyfuse3 import FUSEError

from ..base.processes import has_interrupting_signal
from ..trace.channel import TraceChannel, TraceReader
from .tracing import session_device_fd

log = logging.getLogger(__name__)

TRACE_READERS = 32  # opens of the trace file at once (each keeps up to TraceChannel.capacity lines)
TRACE_READS_WAITING = 8  # of pyfuse3's 99 handler tasks, at most these wait for trace events
SESSION_CHECK_INTERVAL = 0.5  # seconds between looks at whether the FUSE connection has ended
INTERRUPT_CHECK_INTERVAL = 0.05  # seconds between looks at whether a waiting read's caller got a signal
END_WAIT = 1.0  # seconds a stopping daemon waits for its readers to read their end


class TraceFile:
    """The stream (`channel`, which the daemon's decisions emit to) and its open readers."""

    def __init__(self) -> None:
        self.channel = TraceChannel()
        self._readers: dict[int, tuple[TraceReader, bool]] = {}  # fh: (reader, opened O_NONBLOCK)
        self._waiting = 0  # reads waiting for an event (end() answers them)
        self._read = trio.Event()  # someone has the file open: the session is worth watching

    def open(self, flags: int, ctx, new_handle: "Callable[[], int]") -> pyfuse3.FileInfo:
        """Root's, read-only (root passes the kernel's check of mode 0400 for writing too): each open
        is a reader of the events from now on, under the handle new_handle() gives (the inode
        table's). Direct I/O (no page cache: every read asks, and its size 0 makes a private
        mapping's fault SIGBUS without asking), not seekable."""
        if ctx.uid != 0 or flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC:
            raise FUSEError(errno.EACCES)
        if len(self._readers) >= TRACE_READERS:
            raise FUSEError(errno.EMFILE)
        fh = new_handle()
        self._readers[fh] = (self.channel.subscribe(), bool(flags & os.O_NONBLOCK))
        self._read.set()
        return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False, nonseekable=True)

    async def read(self, fh: int, size: int, ctx) -> bytes:
        """Whole event lines, waiting (an awaited trio Event: the loop serves on) until there is
        one, or the end (b""); EAGAIN at once for a reader opened O_NONBLOCK.

        A waiting read ends with EINTR when its caller gets a signal it catches or dies of (^C on
        `cat`): the kernel passes the signal on as FUSE_INTERRUPT and then waits for the answer,
        uninterruptibly for a fatal signal, so without this a signalled reader would wait for the
        next event. A stop and continue (^Z, fg) is also an interrupt, but the read waits on, as
        trace_pipe's restarts; a caught signal with SA_RESTART gets EINTR (/proc does not say)."""
        reader, nonblocking = self._readers[fh]
        if nonblocking and not reader.readable:
            raise FUSEError(errno.EAGAIN)
        if not reader.readable and self._waiting >= TRACE_READS_WAITING:
            raise FUSEError(errno.EAGAIN)  # each waiting read holds one of pyfuse3's handler tasks
        self._waiting += 1
        try:
            while True:
                with trio.move_on_after(INTERRUPT_CHECK_INTERVAL):
                    return await reader.read(size)  # cancelled only while it waits: no line is lost
                if ctx.interrupted and has_interrupting_signal(ctx.pid):  # not for a stop
                    raise FUSEError(errno.EINTR)
        finally:
            self._waiting -= 1

    def poll(self, fh: int, poll_handle) -> "int | None":
        """The events poll(2) reports for a reader (None: fh is no reader of the trace file). It
        is readable once it has a line (or at the end); a waiting poll is notified then."""
        trace = self._readers.get(fh)
        if trace is None:
            return None
        reader = trace[0]
        if reader.readable:
            return select.POLLIN | select.POLLRDNORM
        if poll_handle is not None:
            reader.wake_when_readable(functools.partial(_notify_poll, poll_handle))
        return 0

    def release(self, fh: int) -> None:
        trace = self._readers.pop(fh, None)
        if trace is not None:
            trace[0].close()
            if not self._readers:
                self._read = trio.Event()

    async def end(self) -> None:
        """The daemon is going: every reader reads what it has, then end of file; this returns
        once each has read its end (END_WAIT at most: a reader that polls reads only after its
        notification)."""
        self.channel.close()
        with trio.move_on_after(END_WAIT):
            while self._waiting or any(not reader.ended for reader, _ in self._readers.values()):
                await trio.sleep(0.001)

    async def end_with_the_session(self) -> None:
        """A read waiting for an event holds one of pyfuse3's handler tasks, and pyfuse3.main()
        returns only once every handler has: when the connection ends (unmounted, or aborted
        through /sys/fs/fuse/connections) while one waits, the stream must end too. The
        session's /dev/fuse fd then polls POLLERR; it is looked at only while someone reads."""
        fuse = session_device_fd()
        if fuse is None:
            return
        poller = select.poll()
        poller.register(fuse, 0)  # errors only: POLLERR, POLLHUP, POLLNVAL are always reported
        try:
            while True:
                await self._read.wait()  # a daemon nobody traces never wakes for this
                await trio.sleep(SESSION_CHECK_INTERVAL)
                if self._readers and poller.poll(0):
                    self.channel.close()
                    return
        finally:
            os.close(fuse)


def _notify_poll(poll_handle) -> None:
    """Wake a poll(2) of the trace file; a reader gone meanwhile (ENOENT or the like) is no error."""
    try:
        poll_handle.notify()
    except OSError as error:
        log.debug("trace file: poll notification failed: %s", error)
