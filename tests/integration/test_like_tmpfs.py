"""Directories and names behave like tmpfs: each case runs on /dev/shm too, and the answers must agree."""

import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
from support.syscalls import errno_of

from gmemfs.base.libc import check, libc

GROUP = 65534
AT_FDCWD = -100
SYS_RENAMEAT2 = 316  # x86-64
RENAME_WHITEOUT = 1 << 2


@pytest.fixture
def tmpfs_dir():
    with open("/proc/mounts") as mounts:
        if not any(line.split()[1:3] == ["/dev/shm", "tmpfs"] for line in mounts):
            pytest.skip("no tmpfs at /dev/shm to compare with")
    path = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="gmemfs-test-"))
    yield path
    shutil.rmtree(path)


def renameat2(old, new, flags) -> None:
    check(libc.syscall(SYS_RENAMEAT2, AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags), "renameat2")


def in_a_set_group_id_directory(root: Path):
    directory = root / "shared"
    directory.mkdir()
    os.chown(directory, -1, GROUP)
    os.chmod(directory, 0o2775)
    os.close(os.open(directory / "file", os.O_CREAT | os.O_RDWR, 0o640))
    (directory / "sub").mkdir(0o755)
    os.mkdir(directory / "sub" / "deeper", 0o700)
    return [_group_and_mode(directory / name) for name in ("file", "sub", "sub/deeper")]


def _group_and_mode(path: Path) -> "tuple[int, str]":
    status = os.stat(path)
    return status.st_gid, oct(stat.S_IMODE(status.st_mode))


def test_a_set_group_id_directory_hands_its_group_down_and_its_bit_to_subdirectories(start_gmemfs, tmpfs_dir):
    daemon = start_gmemfs()
    old_umask = os.umask(0o022)
    try:
        expected = in_a_set_group_id_directory(tmpfs_dir)
        assert expected == [(GROUP, "0o640"), (GROUP, "0o2755"), (GROUP, "0o2700")], "tmpfs, as the kernel's rule"
        assert in_a_set_group_id_directory(daemon.mountpoint) == expected
    finally:
        os.umask(old_umask)


def rename_with_whiteout(root: Path) -> "tuple[str, list[str]]":
    (root / "a").mkdir()
    os.close(os.open(root / "a" / "f", os.O_CREAT | os.O_RDWR, 0o600))
    result = errno_of(renameat2, root / "a" / "f", root / "a" / "g", RENAME_WHITEOUT)
    return result, sorted(os.listdir(root / "a"))


def test_rename_with_a_whiteout_is_einval_and_renames_nothing(start_gmemfs, tmpfs_dir):
    """tmpfs leaves a whiteout (a 0:0 character device) behind; gmemfs makes no device nodes, so it
    refuses, as FUSE filesystems without whiteouts do, instead of renaming as if no flag were given."""
    assert rename_with_whiteout(tmpfs_dir) == ("OK", ["f", "g"])
    assert stat.S_ISCHR(os.lstat(tmpfs_dir / "a" / "f").st_mode), "the whiteout"
    daemon = start_gmemfs()
    assert rename_with_whiteout(daemon.mountpoint) == ("EINVAL", ["f"])
