"""Programs the `gmemfs run` tests run: built here from source, never committed as binaries."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROGRAMS = ROOT / "tests" / "programs"
BUILD = ROOT / "build" / "test-programs"
KVM_CLIENT = PROGRAMS / "kvm_client.py"
# Debian 12 packages linux-source-6.12 (apt installs it); Linux 7.2 is packaged in Debian sid only,
# so its package file is fetched with apt-get's own sources list and state under build/, never
# added to the machine's apt sources.
DEBIAN_SID = "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main"
SID_PACKAGES = BUILD.parent / "debian-sid"


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


def linux_source(version: str) -> Path:
    """/usr/src/linux-source-VERSION.tar.xz, installed, or for 7.2 taken from Debian sid's package file.

    Skips, with the reason, where neither can be had.
    """
    installed = Path(f"/usr/src/linux-source-{version}.tar.xz")
    if installed.exists():
        return installed
    if version == "6.12":
        pytest.skip(f"{installed} is missing: apt-get install linux-source-6.12 (./bootstrap test does)")
    tarball = SID_PACKAGES / installed.name
    if not tarball.exists():
        _unpack_tarball(_download_from_sid(f"linux-source-{version}"), installed.name, tarball)
    return tarball


def _download_from_sid(package: str) -> Path:
    """The package's .deb from Debian sid, with a sources list and apt state of our own."""
    found = sorted(SID_PACKAGES.glob(f"{package}_*.deb"))
    if found:
        return found[-1]
    for directory in ("state/lists/partial", "cache/archives/partial"):
        (SID_PACKAGES / directory).mkdir(parents=True, exist_ok=True)
    (SID_PACKAGES / "sources.list").write_text(DEBIAN_SID + "\n")
    apt = [
        "apt-get",
        "-q",
        "-o", f"Dir::Etc::sourcelist={SID_PACKAGES / 'sources.list'}",
        "-o", "Dir::Etc::sourceparts=-",
        "-o", f"Dir::State={SID_PACKAGES / 'state'}",
        "-o", f"Dir::Cache={SID_PACKAGES / 'cache'}",
        "-o", "APT::Sandbox::User=root",
    ]  # fmt: skip
    for step in (["update"], ["download", package]):
        done = subprocess.run([*apt, *step], cwd=SID_PACKAGES, capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"apt-get {' '.join(step)} from Debian sid failed: {done.stderr.strip()[-300:]}")
    return sorted(SID_PACKAGES.glob(f"{package}_*.deb"))[-1]


def _unpack_tarball(deb: Path, name: str, tarball: Path) -> None:
    """The source tarball inside the package file (dpkg-deb, not dpkg: nothing is installed)."""
    unpacked = SID_PACKAGES / "unpacked"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
    (unpacked / "usr" / "src" / name).rename(tarball)
    shutil.rmtree(unpacked)


def kernel_selftest(name: str, version: str = "6.12") -> Path:
    """tools/testing/selftests/kvm/NAME of Linux VERSION, built unmodified from its source tarball.

    The extracted tree and the binary are kept under build/ (a tarball is ~150 MB; a build
    takes ~30 s). Skips, with the reason, where the source cannot be had.
    """
    source = linux_source(version)
    binary = BUILD / f"selftests-{version}" / name
    if binary.exists():
        return binary
    tree = BUILD / f"linux-source-{version}"
    if not (tree / "Makefile").exists():
        BUILD.mkdir(parents=True, exist_ok=True)
        subprocess.run(["tar", "-xJf", str(source), "-C", str(BUILD)], check=True)
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


def selftest_source(name: str, version: str) -> Path:
    """The C source a selftest binary was built from."""
    return BUILD / f"linux-source-{version}" / "tools" / "testing" / "selftests" / "kvm" / f"{name}.c"
