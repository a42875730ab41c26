"""A FUSE daemon in a process of its own, always taken down: the lifecycle that `gmemfs run`,
the tests and the benchmarks share (mount with a bounded wait, unmount, reap, keep the log)."""

import os
import subprocess
import tempfile
import time
from pathlib import Path

from ..base.mounts import is_mounted

MOUNT_TIMEOUT = 10.0


class DaemonError(RuntimeError):
    """The daemon did not mount; the message carries its output (and so does `output`)."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


class DaemonProcess:
    """Starts `command` (a daemon staying in the foreground) and waits until `mountpoint` is mounted.

    private: the daemon mounts in a mount namespace of its own (gmemfs run), so the mount is
    looked for in its table, and stopping it (SIGTERM) is what unmounts it.
    """

    def __init__(self, command: "list[str]", mountpoint: "str | Path", *, private: bool = False, **popen) -> None:
        self.mountpoint = Path(mountpoint)
        self.private = private
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, **popen)
        if not self._wait_for_mount():
            output = self.output()
            self.stop()
            raise DaemonError(
                f"{' '.join(command)} did not mount {mountpoint}: {output.strip() or 'no output'}", output
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def _mounted(self) -> bool:
        table = f"/proc/{self.pid}/mounts" if self.private else "/proc/self/mounts"
        try:
            return is_mounted(self.mountpoint, table)
        except OSError:  # the daemon is gone
            return False

    def _wait_for_mount(self) -> bool:
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not self._mounted():
            if self.process.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def output(self, since: int = 0) -> str:
        self.log.seek(since)
        return self.log.read().decode(errors="replace")

    def log_position(self) -> int:
        return self.log.seek(0, os.SEEK_END)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """Unmount (lazily if something is still busy) and reap the daemon, whatever state it is in."""
        if self.private:
            if self.process.poll() is None:
                self.process.terminate()
        elif is_mounted(self.mountpoint):
            if subprocess.run(["fusermount3", "-u", str(self.mountpoint)], capture_output=True).returncode:
                subprocess.run(["fusermount3", "-u", "-z", str(self.mountpoint)], capture_output=True)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
