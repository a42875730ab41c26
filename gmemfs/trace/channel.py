"""The daemon's side of the stream: events to every reader of the trace file, as trace_pipe does.

Trio only, no threads: emit() and the readers live on the daemon's event loop.
"""

import os
from collections import deque
from collections.abc import Callable

import trio

from .events import TraceEvent

DEFAULT_CAPACITY = 4096  # lines a reader keeps before it loses the oldest
BYTES_KEPT = 4 << 20  # and bytes: the lines are the callers' words, names included


class TraceChannel:
    """Where the daemon's events go. Nobody reading is the fast path: `readers` is an empty
    tuple, and call sites test it before they build an event:

        if channel.readers:
            channel.emit(TraceEvent(...))
    """

    def __init__(self, source: str = "daemon", capacity: int = DEFAULT_CAPACITY) -> None:
        self.source = source
        self.capacity = capacity
        self.readers: tuple[TraceReader, ...] = ()  # replaced, never changed, so emit() may iterate it
        self.closed = False

    def emit(self, event: TraceEvent) -> None:
        """Give the event to every reader (encoded once); nothing is kept while nobody reads."""
        if not self.readers:
            return
        line = event.to_json().encode() + b"\n"
        for reader in self.readers:
            reader.put(event.time, line)

    def subscribe(self) -> "TraceReader":
        """A reader of the events from now on (an open of the trace file)."""
        reader = TraceReader(self, self.capacity)
        if self.closed:  # the daemon is going: the reader's first read is the end
            reader.closed = True
        else:
            self.readers = (*self.readers, reader)
        return reader

    def unsubscribe(self, reader: "TraceReader") -> None:
        self.readers = tuple(other for other in self.readers if other is not reader)

    def close(self) -> None:
        """The daemon is going: every reader reads what it has, then end of file."""
        self.closed = True
        for reader in self.readers:
            reader.close()


class TraceReader:
    """One reader's bounded buffer of whole lines. When it is full the oldest line goes (the
    reader sees the newest, as trace_pipe's overwrite does), and the next read begins with
    one "lost" event that counts what went."""

    def __init__(self, channel: TraceChannel, capacity: int) -> None:
        self.channel = channel
        self.lines: deque[tuple[float, bytes]] = deque()
        self.capacity = capacity
        self.bytes = 0  # of the lines kept
        self.lost = 0
        self.lost_time = 0.0  # the time of the last event lost
        self.closed = False
        self.ended = False  # closed, and its end of file was read: nothing of it is left
        self._partial = b""  # the rest of a line longer than a read's size
        self._arrived = trio.Event()
        self._wake: Callable[[], None] | None = None

    @property
    def readable(self) -> bool:
        """Whether a read would return at once (poll's POLLIN): a line, a loss to report, or the end."""
        return bool(self._partial or self.lost or self.lines or self.closed)

    def wake_when_readable(self, wake: "Callable[[], None]") -> None:
        """Call wake() once, at the next event or at the end: a poll(2) that waits (its FUSE
        notification). A later call replaces an earlier one's."""
        self._wake = wake

    def _woken(self) -> None:
        wake, self._wake = self._wake, None
        if wake is not None:
            wake()

    def put(self, time: float, line: bytes) -> None:
        while self.lines and (len(self.lines) >= self.capacity or self.bytes + len(line) > BYTES_KEPT):
            self.lost_time, lost = self.lines.popleft()
            self.bytes -= len(lost)
            self.lost += 1
        self.lines.append((time, line))
        self.bytes += len(line)
        self._arrived.set()
        if self._wake is not None:
            self._woken()

    def _lost_line(self) -> bytes:
        event = TraceEvent(
            time=self.lost_time,
            source=self.channel.source,
            what="lost",
            pid=os.getpid(),
            args=f"{self.lost} events",
            detail={"lost": self.lost},
        )
        self.lost = 0
        return event.to_json().encode() + b"\n"

    async def read(self, size: int) -> bytes:
        """Whole lines, at most size bytes, waiting until there is one; b"" once closed and empty.

        Only a line longer than size itself comes in pieces, over as many reads as it needs."""
        while not (self._partial or self.lost or self.lines or self.closed):
            await self._arrived.wait()
            self._arrived = trio.Event()
        if self._partial:
            piece, self._partial = self._partial[:size], self._partial[size:]
            return piece
        out = bytearray()
        if self.lost:
            lost = self._lost_line()
            if len(lost) > size:
                self._partial = lost
                return await self.read(size)
            out += lost
        while self.lines and len(out) + len(self.lines[0][1]) <= size:
            line = self.lines.popleft()[1]
            self.bytes -= len(line)
            out += line
        if not out and self.lines:  # a single line longer than size
            self._partial = self.lines.popleft()[1]
            self.bytes -= len(self._partial)
            return await self.read(size)
        self.ended = not out
        return bytes(out)

    def close(self) -> None:
        """Stop reading (the file's release): unsubscribe, and wake a read that waits."""
        self.closed = True
        self.channel.unsubscribe(self)
        self._arrived.set()
        self._woken()
