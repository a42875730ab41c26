"""What a hostile user on a shared (allow_other) mount tried, each as the user ran it."""

import os
import subprocess
import sys

from support.files import open_gmem
from support.syscalls import convert, xattr

from gmemfs.uapi import KVM_GMEM_CONVERT_SHARED

NOBODY = 65534

# Runs as nobody, with the system's Python (the venv may not be readable to other users).
CONVERT_THROUGH = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | (os.O_DIRECTORY if sys.argv[2] == "dir" else 0))
try:
    fcntl.ioctl(fd, int(sys.argv[3]), bytearray(8) + (4096).to_bytes(8, "little") + bytearray(48), True)
except OSError as error:
    print(error.errno)
else:
    print(0)
"""


def as_nobody_convert(path: str, kind: str) -> int:
    """The errno (0 for success) of KVM_GMEM_CONVERT_SHARED [0, 4K) sent by nobody through path."""
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    result = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        + [python, "-c", CONVERT_THROUGH, path, kind, str(KVM_GMEM_CONVERT_SHARED)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


def test_ioctl_on_a_directory_is_enotty_and_reaches_no_file(start_gmemfs):
    daemon = start_gmemfs("-o", "allow_other")
    fd = open_gmem(daemon.mountpoint, "roots-file", size=2 * 4096)  # 0600, private pages
    try:
        assert as_nobody_convert(str(daemon.mountpoint), "dir") == 25  # ENOTTY
        assert xattr(fd, "shared") == "", "another user's ioctl on a directory converted root's file"
    finally:
        os.close(fd)


def test_ioctl_on_a_directory_is_enotty_for_root_too(start_gmemfs):
    daemon = start_gmemfs()
    fd = open_gmem(daemon.mountpoint, "f", size=4096)
    os.mkdir(daemon.mountpoint / "d")
    directory = os.open(daemon.mountpoint / "d", os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert convert(directory, "shared", 0, 4096)[0] == "ENOTTY"
        assert xattr(fd, "shared") == ""
    finally:
        os.close(directory)
        os.close(fd)


def test_a_read_only_fd_cannot_convert(start_gmemfs):
    daemon = start_gmemfs("-o", "allow_other")
    fd = open_gmem(daemon.mountpoint, "readable", size=2 * 4096)
    os.fchmod(fd, 0o644)
    try:
        assert as_nobody_convert(str(daemon.mountpoint / "readable"), "file") == 9  # EBADF
        read_only = os.open(daemon.mountpoint / "readable", os.O_RDONLY)
        try:
            assert convert(read_only, "shared", 0, 4096)[0] == "EBADF", "root's read-only fd, too"
        finally:
            os.close(read_only)
        assert xattr(fd, "shared") == ""
        assert convert(fd, "shared", 0, 4096)[0] == "OK", "a writable fd converts"
    finally:
        os.close(fd)
