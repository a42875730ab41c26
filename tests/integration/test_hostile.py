"""What a hostile user on a shared (allow_other) mount tried, each as the user ran it."""

import os
import signal
import subprocess
import sys
import time

from support.files import open_gmem
from support.host import touch
from support.programs import static_program
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


READ_FOREVER = """
import mmap, os, sys
fd = int(sys.argv[1])
view = mmap.mmap(fd, 4096, mmap.MAP_SHARED)
reads = 0
while True:
    assert view[0:4] == b"old!"
    reads += 1
    if reads == 1000:
        os.write(1, b"reading\\n")
"""


def test_conversion_to_private_wins_against_a_host_reading_in_a_loop(start_gmemfs):
    """40 of 40 times the reader kept reading the old data after convert_private returned."""
    daemon = start_gmemfs()
    fd = open_gmem(daemon.mountpoint, "racy", size=4096)
    try:
        for trial in range(10):
            assert convert(fd, "shared", 0, 4096) == ("OK", 0)
            assert touch(fd, 0, 4, write=b"old!") == "OK:old!"
            reader = subprocess.Popen(
                [sys.executable, "-c", READ_FOREVER, str(fd)], pass_fds=(fd,), stdout=subprocess.PIPE
            )
            try:
                assert reader.stdout.readline() == b"reading\n"
                assert convert(fd, "private", 0, 4096) == ("OK", 0)
                assert reader.wait(timeout=5) == -signal.SIGBUS, f"trial {trial}: the host still reads a private page"
            finally:
                reader.kill()
                reader.wait()
    finally:
        os.close(fd)


def test_host_writes_racing_conversions_never_fail_writeback(start_gmemfs):
    """A host writing while the page is converted back and forth: its writes reach gmemfs or
    fault (SIGBUS), and no writeback is refused after the fact (lost data, EIO elsewhere)."""
    daemon = start_gmemfs()
    fd = open_gmem(daemon.mountpoint, "racy", size=2 * 4096)
    try:
        assert convert(fd, "shared", 0, 2 * 4096) == ("OK", 0)
        writer = subprocess.Popen(
            [str(static_program("race_writer")), str(fd), "4"], pass_fds=(fd,), stdout=subprocess.PIPE, text=True
        )
        try:
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline:
                assert convert(fd, "private", 0, 4096) == ("OK", 0)
                time.sleep(0.01)
                assert convert(fd, "private", 4096, 4096) == ("OK", 0)  # drops what the kernel caches
                assert convert(fd, "shared", 0, 2 * 4096) == ("OK", 0)
        finally:
            report = writer.communicate(timeout=30)[0]
        assert writer.returncode == 0, report
    finally:
        os.close(fd)
    log = daemon.output()
    assert "private page" not in log and "EIO" not in log, f"{report}\n{log[-3000:]}"
