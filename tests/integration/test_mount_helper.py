"""mount(8) and fstab reach gmemfs through /sbin/mount.fuse.gmemfs (installed by ./bootstrap install)."""

import os
import subprocess
from pathlib import Path

import pytest
from support.mount import is_mounted, new_mountpoint, remove_mountpoint, wait_until
from support.pools import PAGE_2M
from support.syscalls import xattr

HELPER = Path("/sbin/mount.fuse.gmemfs")
REPO = Path(__file__).parents[2]


@pytest.fixture
def mountpoint(huge_pools):
    path = new_mountpoint()
    yield path
    if is_mounted(path):
        subprocess.run(["umount", str(path)])
    assert wait_until(lambda: not daemon_running(path), 10), "the daemon outlived its mount"
    remove_mountpoint(path)


def daemon_running(mountpoint) -> bool:
    return subprocess.run(["pgrep", "-f", f"gmemfs.* {mountpoint}$"], capture_output=True).returncode == 0


def mount_type(path) -> "str | None":
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if fields[1] == str(path):
                return fields[2]
    return None


def test_helper_is_installed_from_this_repository():
    assert HELPER.resolve() == REPO / "mount_helper" / "mount.fuse.gmemfs"


def test_mount_t_fuse_gmemfs_mounts_and_umount_ends_it(mountpoint):
    result = subprocess.run(
        ["mount", "-t", "fuse.gmemfs", "gmemfs", str(mountpoint), "-o", "pagesize=2M"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert mount_type(mountpoint) == "fuse.gmemfs"
    (mountpoint / "f").touch()
    assert int(xattr(mountpoint / "f", "page_size")) == PAGE_2M
    assert subprocess.run(["umount", str(mountpoint)]).returncode == 0
    assert not is_mounted(mountpoint)
    assert wait_until(lambda: not daemon_running(mountpoint), 10)


def test_fstab_line(mountpoint, tmp_path):
    fstab = tmp_path / "fstab"
    fstab.write_text(f"gmemfs {mountpoint} fuse.gmemfs pagesize=2M,noauto,nofail,x-systemd.after=hugepages 0 0\n")
    result = subprocess.run(["mount", "--fstab", str(fstab), str(mountpoint)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert mount_type(mountpoint) == "fuse.gmemfs"
    (mountpoint / "f").touch()
    assert int(xattr(mountpoint / "f", "page_size")) == PAGE_2M


@pytest.mark.parametrize("option", ["pagesize=3M", "bogus"])
def test_bad_option_mounts_nothing(mountpoint, option):
    result = subprocess.run(
        ["mount", "-t", "fuse.gmemfs", "gmemfs", str(mountpoint), "-o", option], capture_output=True, text=True
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [f"gmemfs: {_message(option)}"]
    assert not is_mounted(mountpoint)


def _message(option: str) -> str:
    return "pagesize=3M: choose one of 4K, 2M, 1G" if option.startswith("pagesize") else "unknown mount option 'bogus'"


def test_systemd_units_name_the_helper_type():
    unit = (REPO / "examples" / "systemd" / "mnt-gmem.mount").read_text()
    assert "Type=fuse.gmemfs" in unit and "Where=/mnt/gmem" in unit
    assert os.access(REPO / "mount_helper" / "hugepages", os.X_OK)


def mount_options(path) -> str:
    with open("/proc/self/mounts") as mounts:
        return next(line.split()[3] for line in mounts if line.split()[1] == str(path))


@pytest.mark.parametrize("source", ["-oallow_other", "-d", "--foreground"])
def test_the_source_is_never_read_as_an_option(mountpoint, source):
    """A hostile fstab line or mount(8) call must not smuggle options in through SOURCE."""
    result = subprocess.run(
        [str(HELPER), source, str(mountpoint), "-o", "pagesize=2M"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert is_mounted(mountpoint)
    assert "allow_other" not in mount_options(mountpoint)
