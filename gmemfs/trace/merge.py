"""`gmemfs run`'s side: its own events and the daemon's, in one order of time."""

import heapq
import itertools

from .events import TraceEvent

DEFAULT_HOLD = 0.1  # seconds an event waits for a late one of the other process


class TraceMerger:
    """Events from several sources, given out in time order once `hold` seconds old.

    Each source's events arrive in its own order; another's may arrive up to `hold` late.
    Equal times keep the order they arrived in."""

    def __init__(self, hold: float = DEFAULT_HOLD) -> None:
        self.hold = hold
        self._heap: list[tuple[float, int, TraceEvent]] = []
        self._arrival = itertools.count()

    def add(self, event: TraceEvent) -> None:
        heapq.heappush(self._heap, (event.time, next(self._arrival), event))

    def ready(self, now: float) -> "list[TraceEvent]":
        """The events older than now - hold, oldest first; they leave the merger."""
        out = []
        while self._heap and self._heap[0][0] < now - self.hold:
            out.append(heapq.heappop(self._heap)[2])
        return out

    def drain(self) -> "list[TraceEvent]":
        """Every event left, oldest first (the end of the run)."""
        out = [item[2] for item in sorted(self._heap)]
        self._heap.clear()
        return out

    def __len__(self) -> int:
        return len(self._heap)


class LineDecoder:
    """Events from a stream of bytes read in pieces (the daemon's trace file): a line cut
    between two reads waits for its end."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> "list[TraceEvent]":
        """The events of the lines data completes; ValueError for a line that is not one."""
        *lines, self._pending = (self._pending + data).split(b"\n")
        return [TraceEvent.from_json(line) for line in lines if line.strip()]
