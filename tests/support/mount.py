"""Run gmemfs as a separate process, as users do, and always take it down."""

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MOUNT_TIMEOUT = 10.0


def is_mounted(path: "str | Path") -> bool:
    with open("/proc/self/mounts") as mounts:
        return any(line.split()[1] == str(path) for line in mounts)


def wait_until(predicate, timeout: float, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


class GmemfsProcess:
    """One gmemfs daemon in the foreground (-f), its log kept for failure reports."""

    def __init__(self, mountpoint: Path, options: "list[str]", wrapper: "list[str]" = ()) -> None:
        self.mountpoint = mountpoint
        self.log = tempfile.TemporaryFile()
        command = [*wrapper, sys.executable, "-m", "gmemfs", "-f", *options, str(mountpoint)]
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        mounted = wait_until(lambda: is_mounted(mountpoint) or self.process.poll() is not None, MOUNT_TIMEOUT)
        if not mounted or not is_mounted(mountpoint):
            output = self.output()
            self.stop()
            raise RuntimeError(f"gmemfs did not mount {mountpoint}:\n{output}")

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self, since: int = 0) -> str:
        self.log.seek(since)
        return self.log.read().decode(errors="replace")

    def log_position(self) -> int:
        return self.log.seek(0, os.SEEK_END)

    def complaints(self, since: int = 0, warnings_expected: bool = False) -> "list[str]":
        """Log lines that mean a handler failed (libfuse's test suite checks its daemons' output
        the same way): a traceback or an error, and warnings unless the test expects them."""
        signs = ("Traceback", ": ERROR: ", ": CRITICAL: ") + (() if warnings_expected else (": WARNING: ",))
        return [line for line in self.output(since).splitlines() if any(sign in line for sign in signs)]

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """Unmount (lazily if a test left something busy) and reap the daemon, whatever state it is in."""
        if is_mounted(self.mountpoint):
            result = subprocess.run(["fusermount3", "-u", str(self.mountpoint)], capture_output=True)
            if result.returncode != 0:
                subprocess.run(["fusermount3", "-u", "-z", str(self.mountpoint)], capture_output=True)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def new_mountpoint() -> Path:
    return Path(tempfile.mkdtemp(prefix="gmemfs-test-"))


def remove_mountpoint(path: Path) -> None:
    if not is_mounted(path):
        os.rmdir(path)
