"""Running programs under `gmemfs run` as users do, and what a run may leave behind."""

import json
import os
import subprocess

import pytest

from gmemfs.base.hugepages import pool_counters
from support.commands import GMEMFS
from support.kvm import why_no_kvm
from support.mount import wait_until
from support.pools import PAGE_2M

# Every gmemfs run test: skipped without KVM, and checked for leftovers afterwards.
RUN_TESTS = [
    pytest.mark.skipif(why_no_kvm() is not None, reason=f"gmemfs run needs KVM: {why_no_kvm()}"),
    pytest.mark.usefixtures("run_leaves_nothing"),
]


def gmemfs_run(*options: str, program: list[str], timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*GMEMFS, "run", *options, "--", *program], capture_output=True, text=True, timeout=timeout, **kwargs
    )


def run_json(*options: str, program: list[str]) -> dict:
    result = gmemfs_run(*options, program=program)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def gmemfs_processes() -> list[str]:
    """Command lines of gmemfs run daemons still alive."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                command = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "--private-for" in command:
            found.append(f"{pid}: {command}")
    return found


def leftovers(before) -> "list[str]":
    problems = []
    if not wait_until(lambda: not gmemfs_processes(), 10):
        problems.append(f"daemons: {gmemfs_processes()}")
    if not wait_until(lambda: pool_counters(PAGE_2M) == before, 10):
        problems.append(f"2 MiB pool {pool_counters(PAGE_2M)}, was {before}")
    with open("/proc/mounts") as mounts:
        problems += [line for line in mounts if "gmemfs-run-" in line]
    problems += [name for name in os.listdir("/tmp") if name.startswith("gmemfs-run-")]
    return problems
