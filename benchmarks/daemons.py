"""The two FUSE daemons a benchmark compares, run as separate processes as users run them."""

import os
import sys
import tempfile

from gmemfs.base.mounts import is_mounted
from gmemfs.daemon.process import DaemonProcess

PINNED_CPU: "int | None" = None  # set by the runner: daemons share the benchmark's core


class Daemon(DaemonProcess):
    """A FUSE daemon in the foreground, pinned with the benchmark where asked; stop() also removes
    its mountpoint."""

    def __init__(self, command: list[str], mountpoint: str) -> None:
        if PINNED_CPU is not None:
            command = ["taskset", "-c", str(PINNED_CPU), *command]
        super().__init__(command, mountpoint)

    @classmethod
    def gmemfs(cls, options: str) -> "Daemon":
        mountpoint = tempfile.mkdtemp(prefix="gmemfs-bench-")
        return cls([sys.executable, "-m", "gmemfs", "-f", "-o", options, mountpoint], mountpoint)

    @classmethod
    def nullfs(cls, cache_timeout: float, busy_poll_us: "int | None" = None) -> "Daemon":
        """The floor; busy_poll_us as gmemfs's option (None: gmemfs's default)."""
        mountpoint = tempfile.mkdtemp(prefix="nullfs-bench-")
        command = [sys.executable, "-m", "benchmarks.nullfs", mountpoint, str(cache_timeout)]
        if busy_poll_us is not None:
            command.append(str(busy_poll_us))
        return cls(command, mountpoint)

    def cpu_ns(self) -> int:
        """CPU time the daemon has used, all threads, in ns (schedstat: finer than utime's ticks)."""
        total = 0
        for task in os.listdir(f"/proc/{self.pid}/task"):
            with open(f"/proc/{self.pid}/task/{task}/schedstat") as schedstat:
                total += int(schedstat.read().split()[0])
        return total

    def rss_mib(self) -> float:
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        super().stop()
        if not is_mounted(self.mountpoint):
            os.rmdir(self.mountpoint)
        self.log.close()
