"""Who reaches a gmemfs mount: default_permissions, allow_other, file modes."""

import os

import pytest
from support.commands import as_nobody, assert_one_line_error, run_gmemfs
from support.files import open_gmem

from gmemfs import create_guest_memfd
from gmemfs.kernel.uapi import GUEST_VIEW_PREFIX


def test_without_allow_other_no_other_user_reaches_the_mount(start_gmemfs):
    daemon = start_gmemfs()
    result = as_nobody("stat", str(daemon.mountpoint))
    assert result.returncode != 0 and "Permission denied" in result.stderr


def test_with_allow_other_default_permissions_checks_modes(start_gmemfs):
    daemon = start_gmemfs("-o", "allow_other")
    os.close(open_gmem(daemon.mountpoint, "private-file"))  # 0600, root's
    path = str(daemon.mountpoint / "private-file")
    assert as_nobody("stat", path).returncode == 0
    denied = as_nobody("getfattr", "-n", "user.gmem.flags", path)
    assert denied.returncode != 0 and "Permission denied" in denied.stderr
    os.chmod(path, 0o644)
    assert as_nobody("getfattr", "-n", "user.gmem.flags", path).returncode == 0
    assert "Permission denied" in as_nobody("touch", str(daemon.mountpoint / "new")).stderr, "root's 0755 root dir"


def test_allow_other_without_default_permissions_is_refused(tmp_path):
    result = run_gmemfs("-o", "allow_other,nodefault_permissions", str(tmp_path))
    assert_one_line_error(result, "allow_other with nodefault_permissions")


def test_without_default_permissions_only_the_owner_reaches_the_mount(start_gmemfs):
    daemon = start_gmemfs("-o", "nodefault_permissions")
    os.close(open_gmem(daemon.mountpoint, "private-file"))
    denied = as_nobody("getfattr", "-n", "user.gmem.flags", str(daemon.mountpoint / "private-file"))
    assert denied.returncode != 0 and "Permission denied" in denied.stderr


@pytest.mark.parametrize("umask, mode, expected", [(0o077, 0o666, 0o600), (0o022, 0o640, 0o640), (0, 0o600, 0o600)])
def test_files_get_the_mode_they_ask_for(start_gmemfs, umask, mode, expected):
    daemon = start_gmemfs()
    old = os.umask(umask)
    try:
        os.close(os.open(daemon.mountpoint / "f", os.O_CREAT | os.O_RDWR, mode))
    finally:
        os.umask(old)
    assert os.stat(daemon.mountpoint / "f").st_mode & 0o777 == expected


def test_guest_memfds_from_the_library_are_0600(start_gmemfs):
    daemon = start_gmemfs()
    fd = create_guest_memfd(daemon.mountpoint, 4096)
    try:
        assert os.fstat(fd).st_mode & 0o777 == 0o600
    finally:
        os.close(fd)


def test_non_root_cannot_grow_pools_through_sysfs_either():
    result = as_nobody("sh", "-c", "echo 1 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages")
    assert result.returncode != 0 and "Permission denied" in result.stderr


def test_a_guest_view_is_found_by_root_only_even_right_after_root_did(start_gmemfs):
    """A file's guest view (gmemfs run's window on its private pages) answers root's lookup only:
    the dentry that lookup leaves in the kernel's cache must not show the name to anyone else."""
    daemon = start_gmemfs("-o", "allow_other,mode=1777")
    fd = open_gmem(daemon.mountpoint, "vm", size=4096)
    try:
        view = daemon.mountpoint / f"{os.fsdecode(GUEST_VIEW_PREFIX)}{os.fstat(fd).st_ino}"
        assert os.stat(view).st_uid == 0  # root: looked up, and the cache may keep it
        stat = as_nobody("stat", "-c", "%i", str(view))
        assert stat.returncode != 0 and "No such file" in stat.stderr, stat.stdout
    finally:
        os.close(fd)


def test_a_user_s_file_named_like_a_guest_view_is_not_what_root_opens(start_gmemfs):
    """Anyone may create `.gmemfs-guest-view-<ino>` in a mode=1777 root: their lookup leaves that
    dentry cached (cache_timeout), and root's path walk (gmemfs run opening the view it maps as
    the guest's private memory) then reaches the user's file, not the daemon's guest view."""
    daemon = start_gmemfs("-o", "allow_other,mode=1777")
    fd = open_gmem(daemon.mountpoint, "vm", size=4096)
    try:
        view = daemon.mountpoint / f"{os.fsdecode(GUEST_VIEW_PREFIX)}{os.fstat(fd).st_ino}"
        made = as_nobody("touch", str(view))
        view_fd = os.open(view, os.O_RDWR)  # as _open_guest_view does
        try:
            assert os.fstat(view_fd).st_uid == 0, f"root opened nobody's file (touch: {made.returncode})"
        finally:
            os.close(view_fd)
    finally:
        os.close(fd)
