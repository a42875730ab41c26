"""What a hostile user on a shared (allow_other) mount tried, each as the user ran it."""

import errno
import json
import mmap
import os
import signal
import subprocess
import sys
import time

import pytest
from support.files import open_gmem
from support.host import touch
from support.programs import static_program
from support.syscalls import convert, xattr

from gmemfs.kernel.uapi import KVM_GMEM_CONVERT_SHARED

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


def test_open_with_o_trunc_of_a_sized_file_is_einval_and_loses_nothing(start_gmemfs):
    daemon = start_gmemfs()
    fd = open_gmem(daemon.mountpoint, "vm0", size=2 * 4096)
    try:
        assert convert(fd, "shared", 0, 2 * 4096) == ("OK", 0)
        with mmap.mmap(fd, 2 * 4096, mmap.MAP_SHARED) as mapping:
            mapping[0:5] = b"dirty"  # not yet written back
            with pytest.raises(OSError) as refused:
                os.open(daemon.mountpoint / "vm0", os.O_RDWR | os.O_TRUNC)
            assert refused.value.errno == errno.EINVAL
            assert os.fstat(fd).st_size == 2 * 4096
            assert mapping[0:5] == b"dirty"
        assert touch(fd, 0, 5) == "OK:dirty"
    finally:
        os.close(fd)


def test_o_trunc_of_an_unsized_file_is_fine(start_gmemfs):
    daemon = start_gmemfs()
    os.close(open_gmem(daemon.mountpoint, "new"))
    os.close(os.open(daemon.mountpoint / "new", os.O_RDWR | os.O_TRUNC))


def test_unlinking_while_reading_a_directory_skips_nothing(start_gmemfs):
    daemon = start_gmemfs()
    directory = daemon.mountpoint / "many"
    directory.mkdir()
    for number in range(3000):
        os.close(os.open(directory / f"f{number}", os.O_CREAT | os.O_RDWR, 0o600))
    with os.scandir(directory) as entries:
        for entry in entries:
            os.unlink(entry.path)
    assert os.listdir(directory) == [], "entries skipped while the directory was read"


def test_ls_a_shows_dot_and_dotdot(start_gmemfs):
    daemon = start_gmemfs()
    os.mkdir(daemon.mountpoint / "d")
    listing = subprocess.run(["ls", "-a", str(daemon.mountpoint / "d")], capture_output=True, text=True).stdout
    assert listing.split() == [".", ".."]


@pytest.mark.parametrize("make", ["create", "mkdir", "rename"])
def test_names_over_255_bytes_are_enametoolong(start_gmemfs, make):
    daemon = start_gmemfs()
    long_name = daemon.mountpoint / ("x" * 256)
    with pytest.raises(OSError) as refused:
        if make == "create":
            os.close(os.open(long_name, os.O_CREAT | os.O_RDWR, 0o600))
        elif make == "mkdir":
            os.mkdir(long_name)
        else:
            os.close(open_gmem(daemon.mountpoint, "short"))
            os.rename(daemon.mountpoint / "short", long_name)
    assert refused.value.errno == errno.ENAMETOOLONG
    assert os.statvfs(daemon.mountpoint).f_namemax == 255


def test_status_walks_a_tree_5000_levels_deep(start_gmemfs):
    daemon = start_gmemfs()
    directory = os.open(daemon.mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(5000):
        os.mkdir("d", dir_fd=directory)
        deeper = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=directory)
        os.close(directory)
        directory = deeper
    os.close(os.open("bottom", os.O_CREAT | os.O_RDWR, 0o600, dir_fd=directory))
    os.close(directory)
    result = subprocess.run(
        [sys.executable, "-m", "gmemfs", "status", str(daemon.mountpoint), "--json"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-500:]
    (mount,) = json.loads(result.stdout)["mounts"]
    assert [file["path"] for file in mount["files"]] == ["/" + "d/" * 5000 + "bottom"]
