"""Programs the `gmemfs run` tests run: built here from source, never committed as binaries."""

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROGRAMS = ROOT / "tests" / "programs"
BUILD = ROOT / "build" / "test-programs"
KVM_CLIENT = PROGRAMS / "kvm_client.py"
LINUX_SOURCE = Path("/usr/src/linux-source-6.12.tar.xz")  # Debian 12's linux-source-6.12 package


def kvm_client(*args) -> list[str]:
    """The command line of a raw-ioctl KVM client scenario (tests/programs/kvm_client.py)."""
    import json

    return [sys.executable, str(KVM_CLIENT), args[0], *(json.dumps(arg) for arg in args[1:])]


def static_program(name: str) -> Path:
    """tests/programs/NAME.c, linked statically (as Firecracker and cloud-hypervisor ship)."""
    source, binary = PROGRAMS / f"{name}.c", BUILD / name
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        BUILD.mkdir(parents=True, exist_ok=True)
        subprocess.run(["gcc", "-static", "-O2", "-Wall", "-o", str(binary), str(source)], check=True)
    return binary


def kernel_selftest(name: str) -> Path:
    """tools/testing/selftests/kvm/NAME of Linux 6.12, built from the linux-source-6.12 tarball.

    Skips, with the reason, where the package is not installed. The extracted tree and the
    binary are kept under build/ (the tarball is ~150 MB; a build takes ~30 s).
    """
    if not LINUX_SOURCE.exists():
        pytest.skip(f"{LINUX_SOURCE} is missing: apt-get install linux-source-6.12 (./bootstrap test does)")
    binary = BUILD / "selftests" / name
    if binary.exists():
        return binary
    tree = BUILD / "linux-source-6.12"
    if not (tree / "Makefile").exists():
        BUILD.mkdir(parents=True, exist_ok=True)
        with tarfile.open(LINUX_SOURCE) as tarball:
            tarball.extractall(BUILD, filter="tar")
    jobs = f"-j{os.cpu_count() or 1}"
    subprocess.run(["make", jobs, "headers"], cwd=tree, check=True, capture_output=True)
    output = binary.parent
    subprocess.run(
        ["make", jobs, "-C", "tools/testing/selftests/kvm", f"OUTPUT={output}", str(binary)],
        cwd=tree,
        check=True,
        capture_output=True,
    )
    shutil.rmtree(tree / "tools" / "testing" / "selftests" / "kvm" / "x86_64", ignore_errors=True)
    return binary
