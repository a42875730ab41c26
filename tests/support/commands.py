"""Running the gmemfs command as a user does, and what its errors must look like."""

import subprocess
import sys

GMEMFS = [sys.executable, "-m", "gmemfs"]
NOBODY = 65534


def as_nobody(*command: str, **kwargs) -> subprocess.CompletedProcess:
    """Run a command as an unprivileged user with no groups."""
    setpriv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    return subprocess.run([*setpriv, *command], capture_output=True, text=True, timeout=30, **kwargs)


def run_gmemfs(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*GMEMFS, *args], capture_output=True, text=True, timeout=30, **kwargs)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str, command: str = "") -> None:
    """Exit status 1 and exactly one line on stderr, 'gmemfs: ...' (or 'gmemfs COMMAND: ...' from
    gmemfs pool, status, map and convert), naming every fragment."""
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    prefix = f"gmemfs {command}: " if command else "gmemfs: "
    assert len(lines) == 1 and lines[0].startswith(prefix), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
