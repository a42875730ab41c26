"""Run gmemfs as a separate process, as users do, and always take it down."""

import os
import sys
import tempfile
import time
from pathlib import Path

from gmemfs.base.mounts import is_mounted
from gmemfs.daemon.process import DaemonProcess


def wait_until(predicate, timeout: float, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


class GmemfsProcess(DaemonProcess):
    """One gmemfs daemon in the foreground (-f), its log kept for failure reports."""

    def __init__(self, mountpoint: Path, options: "list[str]", wrapper: "list[str]" = ()) -> None:
        super().__init__([*wrapper, sys.executable, "-m", "gmemfs", "-f", *options, str(mountpoint)], mountpoint)

    def complaints(self, since: int = 0, warnings_expected: bool = False) -> "list[str]":
        """Log lines that mean a handler failed (libfuse's test suite checks its daemons' output
        the same way): a traceback or an error, and warnings unless the test expects them."""
        signs = ("Traceback", ": ERROR: ", ": CRITICAL: ") + (() if warnings_expected else (": WARNING: ",))
        return [line for line in self.output(since).splitlines() if any(sign in line for sign in signs)]


def new_mountpoint() -> Path:
    return Path(tempfile.mkdtemp(prefix="gmemfs-test-"))


def remove_mountpoint(path: Path) -> None:
    if not is_mounted(path):
        os.rmdir(path)
