"""The gmemfs command: its errors are one clear line, its mounts come and go cleanly."""

import os
import subprocess

import pytest
from support.commands import GMEMFS, assert_one_line_error
from support.commands import run_gmemfs as run
from support.files import open_gmem
from support.mount import is_mounted, new_mountpoint, remove_mountpoint, wait_until

from gmemfs.kernel.uapi import ABI_PROFILES


@pytest.fixture
def mountpoint():
    path = new_mountpoint()
    yield path
    if is_mounted(path):
        subprocess.run(["fusermount3", "-u", str(path)])
    remove_mountpoint(path)


def test_missing_mountpoint(tmp_path):
    assert_one_line_error(run(str(tmp_path / "nowhere")), "does not exist")


def test_already_mounted(start_gmemfs):
    daemon = start_gmemfs()
    assert_one_line_error(run(str(daemon.mountpoint)), "already mounted")


@pytest.mark.parametrize(
    "option", ["pagesize=3M", "abi=v9", "colour=blue", "uid=4294967296", "max_files=²", "busy_poll=²"]
)
def test_bad_option_mounts_nothing(mountpoint, option):
    assert_one_line_error(run("-o", option, str(mountpoint)), option.split("=")[0])
    assert not is_mounted(mountpoint)


def test_no_dev_fuse(mountpoint):
    script = f"mount -t tmpfs none /dev && exec {' '.join(GMEMFS)} {mountpoint}"
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=30)
    assert_one_line_error(result, "/dev/fuse")


def test_page_size_without_a_pool(mountpoint):
    # Hide the 1 GiB pool from gmemfs in a private mount namespace.
    script = (
        "mount -t tmpfs none /sys/kernel/mm/hugepages && mkdir /sys/kernel/mm/hugepages/hugepages-2048kB"
        f" && exec {' '.join(GMEMFS)} -o pagesize=1G {mountpoint}"
    )
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=30)
    assert_one_line_error(result, "no 1G huge pages")


def test_daemonizes_once_mounted_and_exits_on_unmount(mountpoint, huge_pools):
    result = run("-o", "pagesize=2M", str(mountpoint))
    assert result.returncode == 0, result.stderr
    assert is_mounted(mountpoint), "the command returns only once the mount exists"
    fd = os.open(mountpoint / "f", os.O_CREAT | os.O_RDWR)
    os.ftruncate(fd, 2 << 20)
    os.close(fd)
    subprocess.run(["fusermount3", "-u", str(mountpoint)], check=True)
    assert wait_until(lambda: subprocess.run(["pgrep", "-f", f"gmemfs .*{mountpoint}"]).returncode != 0, 10)


# Every option gmemfs itself reads (options.parse_mount_options), as --help must name it.
OWN_OPTIONS = (
    "pagesize=4K|2M|1G",
    f"abi={'|'.join(ABI_PROFILES)}",
    "allow_other",
    "default_permissions",
    "nodefault_permissions",
    "cache_timeout=",
    "busy_poll=",
    "debug",
    "fail=",
    "max_huge_pages=",
    "max_size=",
    "max_files=",
    "uid=",
    "gid=",
    "mode=",
)


def test_help_lists_the_mount_options():
    result = run("--help")
    assert result.returncode == 0
    text = "".join(result.stdout.split())  # argparse wraps the epilog at spaces and hyphens
    assert [option for option in OWN_OPTIONS if option not in text] == []


def test_the_daemon_keeps_no_directory_busy(mountpoint, huge_pools, tmp_path):
    result = subprocess.run([*GMEMFS, str(mountpoint)], capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    try:
        pid = subprocess.run(["pgrep", "-f", f"gmemfs {mountpoint}$"], capture_output=True, text=True).stdout.split()
        assert [os.readlink(f"/proc/{p}/cwd") for p in pid] == ["/"]
    finally:
        subprocess.run(["fusermount3", "-u", str(mountpoint)], check=True)


def test_the_mount_reads_ahead_2_mib(start_gmemfs):
    """A host touching a shared mapping faults 2 MiB per READ, not FUSE's default 128 KiB."""
    daemon = start_gmemfs()
    device = os.stat(daemon.mountpoint).st_dev
    path = f"/sys/class/bdi/{os.major(device)}:{os.minor(device)}/read_ahead_kb"
    assert wait_until(lambda: open(path).read().strip() == "2048", 5)


@pytest.mark.parametrize("option", ["-l", "-o"])
def test_convert_with_a_number_past_64_bits_is_one_line(start_gmemfs, option):
    daemon = start_gmemfs("-o", "pagesize=4K")
    os.close(open_gmem(daemon.mountpoint, "vm0", size=4096))
    result = run("convert", option, "99999999999999999999999", str(daemon.mountpoint / "vm0"), "shared")
    assert_one_line_error(result, "99999999999999999999999", "64 bits", command="convert")


def test_atime_options_from_fstab_mount(start_gmemfs):
    daemon = start_gmemfs("-o", "relatime,nodiratime")
    assert os.listdir(daemon.mountpoint) == []
