"""Which FUSE requests the kernel sends a mount: its own tracepoint (fuse:fuse_request_send, 6.15+).

The requests a system call costs are behaviour a VMM pays for on its hot path, so tests count them
where the kernel counts them rather than trusting the daemon's own account.
"""

import contextlib
import os
import re
import subprocess
from collections import Counter
from pathlib import Path

TRACEFS = Path("/sys/kernel/tracing")
EVENT = TRACEFS / "events/fuse/fuse_request_send"


@contextlib.contextmanager
def _tracefs():
    mounted_here = not (TRACEFS / "trace").exists()
    if mounted_here:
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)], check=True)
    try:
        yield
    finally:
        if mounted_here:
            subprocess.run(["umount", str(TRACEFS)], check=True)


@contextlib.contextmanager
def fuse_requests(mountpoint: Path):
    """Yield a function returning a Counter of the opcodes (FUSE_GETXATTR, ...) sent to
    `mountpoint`'s connection since the block began."""
    device = os.stat(mountpoint).st_dev
    connection = os.major(device) << 20 | os.minor(device)  # the kernel's dev_t, as the event prints it
    with _tracefs():
        (EVENT / "filter").write_text(f"connection == {connection}\n")
        (TRACEFS / "trace").write_text("")
        (EVENT / "enable").write_text("1\n")
        try:

            def sent() -> Counter:
                return Counter(re.findall(r"opcode \d+ \((\w+)\)", (TRACEFS / "trace").read_text()))

            yield sent
        finally:
            (EVENT / "enable").write_text("0\n")
            (EVENT / "filter").write_text("0\n")
            (TRACEFS / "trace").write_text("")
