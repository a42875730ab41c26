"""The examples run end to end, so they cannot rot."""

import os
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


def test_shell_tour(start_gmemfs):
    daemon = start_gmemfs()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", EXAMPLES / "shell-tour.sh", str(daemon.mountpoint)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    counters = [
        (int(line.split()[1]), int(line.split()[3])) for line in result.stdout.splitlines() if "HugePages_Free:" in line
    ]
    free, reserved = counters[0]
    assert [(f - free, r - reserved) for f, r in counters] == [
        (0, 0),
        (0, 0),
        (0, 4),
        (-2, 2),
        (-1, 3),
        (-1, 3),
        (-1, 3),
        (-1, 3),
        (-1, 3),
        (-1, 3),
        (0, 0),
    ]
    assert "Invalid argument" in result.stderr  # read(2), as in the kernel, and the second truncate
    assert "hole      shared" in result.stdout or "allocated shared" in result.stdout


def test_toy_vmm(start_gmemfs):
    daemon = start_gmemfs()
    result = subprocess.run(
        [sys.executable, EXAMPLES / "toy_vmm.py", str(daemon.mountpoint)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    reserved = [int(line.split("reserved=")[1]) for line in lines]
    free = [int(line.split("free=")[1].split()[0]) for line in lines]
    assert [r - reserved[0] for r in reserved] == [0, 8, 0, 0, 0, 0, 0]
    assert [f - free[0] for f in free] == [0, 0, -8, -8, -8, -8, 0]
