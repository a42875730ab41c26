"""./bootstrap installs everything the suite needs beyond a minimal Debian root.

A minimal root (debootstrap --variant=minbase) has the packages of priority required and apt,
nothing else: a program the suite runs from any other package must come from bootstrap's lists.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

BOOTSTRAP = Path(__file__).parents[2] / "bootstrap"

# The programs the tests, gmemfs, the examples and the selftest build run, outside Python.
PROGRAMS = (
    "apt-get bash chroot dpkg-deb env fallocate fusermount3 gcc getfattr make mount nsenter patch pgrep "
    "pkg-config prlimit readlink setpriv sh stat tar taskset touch truncate umount unshare unzip xz"
).split()

pytestmark = pytest.mark.skipif(shutil.which("dpkg") is None, reason="bootstrap installs Debian packages")


def bootstrap_packages() -> "set[str]":
    text = BOOTSTRAP.read_text()
    lists = re.findall(r"^(?:TEST_)?APT_PACKAGES=\(([^)]*)\)", text, re.MULTILINE)
    assert len(lists) == 2, "bootstrap's APT_PACKAGES and TEST_APT_PACKAGES"
    return {package for packages in lists for package in packages.split()}


def package_of(program: str) -> "str | None":
    """The Debian package that installed this program (in any bin or sbin directory)."""
    found = subprocess.run(["dpkg", "-S", f"bin/{program}"], capture_output=True, text=True).stdout
    for line in found.splitlines():
        packages, _, path = line.partition(": ")
        directory, _, name = path.rpartition("/")
        if name == program and directory.endswith("bin") and not packages.startswith("diversion by"):
            return packages.split(", ")[0].split(":")[0]  # the first package, without :arch
    return None


def in_a_minimal_root(package: str) -> bool:
    fields = subprocess.run(
        ["dpkg-query", "-W", "-f=${Essential} ${Priority}", package], capture_output=True, text=True
    ).stdout.split()
    return fields[:1] == ["yes"] or fields[1:2] == ["required"]


def with_dependencies(packages: "set[str]") -> "set[str]":
    """packages and everything apt installed with them (Depends and Pre-Depends, as installed here)."""
    table = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package}\t${Depends}, ${Pre-Depends}\n"], capture_output=True, text=True, check=True
    ).stdout
    depends = {}
    for line in table.splitlines():
        package, _, relations = line.partition("\t")
        depends[package] = set(re.findall(r"(?:^|[,|])\s*([a-z0-9][a-z0-9+.-]*)", relations))
    found, todo = set(), set(packages)
    while todo:
        package = todo.pop()
        if package in depends and package not in found:
            found.add(package)
            todo |= depends[package]
    return found


def test_every_program_the_suite_runs_comes_from_a_minimal_root_or_bootstrap():
    installed_by_bootstrap = with_dependencies(bootstrap_packages())
    packages = {program: package_of(program) for program in PROGRAMS}
    assert [program for program, package in packages.items() if package is None] == [], "not installed here"
    missing = {
        program: package
        for program, package in packages.items()
        if package not in installed_by_bootstrap and not in_a_minimal_root(package)
    }
    assert missing == {}, "bootstrap does not install these packages"
