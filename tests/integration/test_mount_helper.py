"""mount(8) and fstab reach gmemfs through /sbin/mount.fuse.gmemfs (installed by ./bootstrap install).

The host's /sbin/mount.fuse.gmemfs is whichever checkout ran ./bootstrap last: these tests run
mount(8) in a mount namespace where this checkout's mount_helper/install put its own links.
"""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from support.mount import new_mountpoint, remove_mountpoint, wait_until
from support.pools import PAGE_2M
from support.syscalls import xattr

from gmemfs.base.mounts import mounts

REPO = Path(__file__).parents[2]
HELPER = REPO / "mount_helper" / "mount.fuse.gmemfs"

# In a mount namespace of its own: /sbin and /usr/local/bin made writable by overlays (upper
# directories under $1, unseen by the host), then this checkout's install script ($2).
INSTALL_IN_A_NAMESPACE = """
set -e
for dir in "$(readlink -f /sbin)" /usr/local/bin; do
    mkdir -p "$1$dir/upper" "$1$dir/work"
    mount -t overlay overlay -o "lowerdir=$dir,upperdir=$1$dir/upper,workdir=$1$dir/work" "$dir"
done
"$2" >/dev/null
echo installed
exec cat
"""


class HelperNamespace:
    """A mount namespace with this checkout's helper installed; it ends when its stdin closes."""

    def __init__(self) -> None:
        self.scratch = tempfile.mkdtemp(prefix="gmemfs-test-install-")
        self.process = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", INSTALL_IN_A_NAMESPACE, "sh"]
            + [self.scratch, str(REPO / "mount_helper" / "install")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if self.process.stdout.readline() != "installed\n":
            self.close()
            raise AssertionError("mount_helper/install failed in a mount namespace of its own")

    def run(self, *command: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["nsenter", f"--target={self.process.pid}", "--mount", *command], capture_output=True, text=True, timeout=30
        )

    def path(self, path) -> Path:
        """path as the namespace sees it."""
        return Path(f"/proc/{self.process.pid}/root{path}")

    def mount_type(self, path) -> "str | None":
        return next((kind for _, at, kind, _ in self._mounts() if at == str(path)), None)

    def mount_options(self, path) -> "str | None":
        return next((options for _, at, _, options in self._mounts() if at == str(path)), None)

    def _mounts(self):
        return mounts(f"/proc/{self.process.pid}/mounts")

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=10)
        shutil.rmtree(self.scratch)


@pytest.fixture
def namespace():
    if not os.access(REPO / ".venv" / "bin" / "gmemfs", os.X_OK):
        pytest.fail(f"{REPO}/.venv/bin/gmemfs is missing: this checkout's helper has no gmemfs to run")
    namespace = HelperNamespace()
    yield namespace
    namespace.close()


@pytest.fixture
def mountpoint(huge_pools, namespace):
    path = new_mountpoint()
    yield path
    if namespace.mount_type(path):
        namespace.run("umount", str(path))
    assert wait_until(lambda: not daemon_running(path), 10), "the daemon outlived its mount"
    remove_mountpoint(path)


def daemon_running(mountpoint) -> bool:
    return subprocess.run(["pgrep", "-f", f"gmemfs.* {mountpoint}$"], capture_output=True).returncode == 0


def test_install_links_this_checkouts_helper_and_gmemfs(namespace):
    links = namespace.run("readlink", "/sbin/mount.fuse.gmemfs", "/usr/local/bin/gmemfs").stdout.split()
    assert links == [str(HELPER), str(REPO / ".venv" / "bin" / "gmemfs")]


def test_mount_t_fuse_gmemfs_mounts_and_umount_ends_it(namespace, mountpoint):
    result = namespace.run("mount", "-t", "fuse.gmemfs", "gmemfs", str(mountpoint), "-o", "pagesize=2M")
    assert result.returncode == 0, result.stderr
    assert namespace.mount_type(mountpoint) == "fuse.gmemfs"
    (namespace.path(mountpoint) / "f").touch()
    assert int(xattr(namespace.path(mountpoint) / "f", "page_size")) == PAGE_2M
    assert namespace.run("umount", str(mountpoint)).returncode == 0
    assert namespace.mount_type(mountpoint) is None
    assert wait_until(lambda: not daemon_running(mountpoint), 10)


def test_fstab_line(namespace, mountpoint, tmp_path):
    fstab = tmp_path / "fstab"
    fstab.write_text(f"gmemfs {mountpoint} fuse.gmemfs pagesize=2M,noauto,nofail,x-systemd.after=hugepages 0 0\n")
    result = namespace.run("mount", "--fstab", str(fstab), str(mountpoint))
    assert result.returncode == 0, result.stderr
    assert namespace.mount_type(mountpoint) == "fuse.gmemfs"
    (namespace.path(mountpoint) / "f").touch()
    assert int(xattr(namespace.path(mountpoint) / "f", "page_size")) == PAGE_2M


@pytest.mark.parametrize("option", ["pagesize=3M", "bogus"])
def test_bad_option_mounts_nothing(namespace, mountpoint, option):
    result = namespace.run("mount", "-t", "fuse.gmemfs", "gmemfs", str(mountpoint), "-o", option)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [f"gmemfs: {_message(option)}"]
    assert namespace.mount_type(mountpoint) is None


def _message(option: str) -> str:
    return "pagesize=3M: choose one of 4K, 2M, 1G" if option.startswith("pagesize") else "unknown mount option 'bogus'"


def test_systemd_units_name_the_helper_type():
    unit = (REPO / "examples" / "systemd" / "mnt-gmem.mount").read_text()
    assert "Type=fuse.gmemfs" in unit and "Where=/mnt/gmem" in unit
    assert os.access(REPO / "mount_helper" / "hugepages", os.X_OK)


@pytest.mark.parametrize("source", ["-oallow_other", "-d", "--foreground"])
def test_the_source_is_never_read_as_an_option(namespace, mountpoint, source):
    """A hostile fstab line or mount(8) call must not smuggle options in through SOURCE."""
    result = namespace.run(str(HELPER), source, str(mountpoint), "-o", "pagesize=2M")
    assert result.returncode == 0, result.stderr
    assert namespace.mount_type(mountpoint) == "fuse.gmemfs"
    assert "allow_other" not in namespace.mount_options(mountpoint)


def test_mount_n_mounts_in_the_namespace_it_names(namespace, mountpoint):
    """mount(8) runs a helper in its own namespace and passes `-N NS`: the helper enters NS itself."""
    target = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "cat"], stdin=subprocess.PIPE)
    target_ns = f"/proc/{target.pid}/ns/mnt"
    try:
        assert wait_until(lambda: os.readlink(target_ns) != os.readlink("/proc/self/ns/mnt"), 5)
        result = namespace.run("mount", "-N", target_ns, "-t", "fuse.gmemfs", "gmemfs", str(mountpoint))
        assert result.returncode == 0, result.stderr
        assert dict((at, kind) for _, at, kind, _ in mounts(f"/proc/{target.pid}/mounts")).get(str(mountpoint)) == (
            "fuse.gmemfs"
        )
        assert namespace.mount_type(mountpoint) is None, "mounted where mount(8) ran, not in -N's namespace"
    finally:
        subprocess.run(["umount", "-N", target_ns, str(mountpoint)], capture_output=True)
        target.stdin.close()
        target.wait(timeout=10)


# A namespace (a container's, say) whose files differ from the host's at gmemfs's path.
PLANTED = """
set -e
mount --bind "$1" "$2"
echo planted
exec cat
"""


def test_mount_n_runs_the_gmemfs_it_checked_not_the_namespace_s(namespace, mountpoint, tmp_path):
    """The helper checks $here/../.venv/bin/gmemfs in mount(8)'s namespace, then `nsenter
    --mount=NS` looks the path up again in NS: whatever NS has there runs as root with every
    capability of the host (only the mount namespace changes)."""
    marker = tmp_path / "ran"
    fake = tmp_path / "gmemfs"
    fake.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    fake.chmod(0o755)
    gmemfs = os.path.realpath(REPO / ".venv" / "bin" / "gmemfs")
    target = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", PLANTED, "sh", str(fake), gmemfs],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    target_ns = f"/proc/{target.pid}/ns/mnt"
    try:
        assert target.stdout.readline() == "planted\n"
        namespace.run("mount", "-N", target_ns, "-t", "fuse.gmemfs", "gmemfs", str(mountpoint))
        assert not marker.exists(), "NS's own file at gmemfs's path ran as root"
    finally:
        subprocess.run(["umount", "-N", target_ns, str(mountpoint)], capture_output=True)
        target.stdin.close()
        target.wait(timeout=10)
