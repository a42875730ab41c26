"""The two FUSE daemons a benchmark compares, run as separate processes as users run them."""

import os
import subprocess
import sys
import tempfile
import time


def is_mounted(path: str) -> bool:
    with open("/proc/self/mounts") as mounts:
        return any(line.split()[1] == path for line in mounts)


PINNED_CPU: "int | None" = None  # set by the runner: daemons share the benchmark's core


class Daemon:
    """A FUSE daemon in the foreground; stop() unmounts and reaps it whatever happened."""

    def __init__(self, command: list[str], mountpoint: str) -> None:
        self.mountpoint = mountpoint
        if PINNED_CPU is not None:
            command = ["taskset", "-c", str(PINNED_CPU), *command]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while not is_mounted(mountpoint):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{command[2:]} did not mount {mountpoint}")
            time.sleep(0.01)

    @classmethod
    def gmemfs(cls, options: str) -> "Daemon":
        mountpoint = tempfile.mkdtemp(prefix="gmemfs-bench-")
        return cls([sys.executable, "-m", "gmemfs", "-f", "-o", options, mountpoint], mountpoint)

    @classmethod
    def nullfs(cls, cache_timeout: float) -> "Daemon":
        mountpoint = tempfile.mkdtemp(prefix="nullfs-bench-")
        return cls([sys.executable, "-m", "benchmarks.nullfs", mountpoint, str(cache_timeout)], mountpoint)

    def rss_mib(self) -> float:
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        if is_mounted(self.mountpoint):
            subprocess.run(["fusermount3", "-u", self.mountpoint], capture_output=True)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if not is_mounted(self.mountpoint):
            os.rmdir(self.mountpoint)
