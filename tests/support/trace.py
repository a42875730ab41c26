"""`gmemfs trace` in the background, its lines collected as they come."""

import itertools
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from gmemfs.trace.events import TraceEvent
from support.commands import GMEMFS

_probes = itertools.count()


class TraceCommand:
    """`gmemfs trace MOUNTPOINT --format=...` running until stop(); `lines` grow as it prints."""

    def __init__(self, mountpoint: Path, output: str = "json") -> None:
        self.mountpoint = mountpoint
        self.process = subprocess.Popen(
            [*GMEMFS, "trace", str(mountpoint), f"--format={output}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._collector = threading.Thread(target=self._collect, daemon=True)
        self._collector.start()
        self.subscribed()

    def _collect(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def events(self) -> "list[TraceEvent]":
        return [TraceEvent.from_json(line) for line in list(self.lines)]

    def wait_for(self, predicate, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(predicate(line) for line in list(self.lines)):
                return True
            if self.process.poll() is not None:
                self._collector.join(5)
                return any(predicate(line) for line in list(self.lines))
            time.sleep(0.01)
        return False

    def subscribed(self) -> None:
        """Return once the command reads the stream: a probe file's creation has reached it."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            probe = self.mountpoint / f".probe-{os.getpid()}-{next(_probes)}"
            os.close(os.open(probe, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
            os.unlink(probe)
            if self.wait_for(lambda line, name=probe.name: name in line and "create" in line, 0.2):
                return
            assert self.process.poll() is None, self.process.stderr.read()
        raise AssertionError("gmemfs trace never saw a file created")

    def stop(self, sig: int = signal.SIGINT) -> "tuple[int, str]":
        """(exit status, stderr) after sig (Ctrl-C's, by default)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.finish()

    def finish(self, timeout: float = 10) -> "tuple[int, str]":
        returncode = self.process.wait(timeout=timeout)
        self._collector.join(5)
        return returncode, self.process.stderr.read()


def of_file(events: "list[TraceEvent]", name: str) -> "list[TraceEvent]":
    """The events about the file whose path ends in /name."""
    return [event for event in events if event.file.endswith(f"/{name}") or event.file.endswith(f" {name}")]
