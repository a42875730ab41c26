"""The examples run end to end, so they cannot rot."""

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parents[2] / "examples"


def test_guest_memory_example(start_gmemfs):
    daemon = start_gmemfs()
    result = subprocess.run(
        [sys.executable, EXAMPLES / "guest_memory.py", str(daemon.mountpoint)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    reserved = [int(line.split("reserved=")[1]) for line in lines]
    free = [int(line.split("free=")[1].split()[0]) for line in lines]
    assert [r - reserved[0] for r in reserved] == [0, 8, 4, 6, 0]
    assert [f - free[0] for f in free] == [0, 0, -4, -2, 0]
