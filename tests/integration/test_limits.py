"""Limits for shared mounts, as hugetlbfs's size= and nr_inodes=, and the daemon's own limits."""

import errno
import os
import subprocess
import tempfile

import pytest
from support.files import open_gmem
from support.mount import wait_until
from support.pools import PAGE_1G, PAGE_2M
from support.users import AS_NOBODY, gmemfs_for_anyone

from gmemfs import KVM_GUEST_MEMFD_HUGE_1GB, KVM_GUEST_MEMFD_HUGE_2MB, KVM_GUEST_MEMFD_HUGETLB, create_guest_memfd

HUGE_2M = KVM_GUEST_MEMFD_HUGETLB | KVM_GUEST_MEMFD_HUGE_2MB
HUGE_1G = KVM_GUEST_MEMFD_HUGETLB | KVM_GUEST_MEMFD_HUGE_1GB
NOBODY = 65534


def errno_of_creation(mountpoint, size, flags=0) -> str:
    try:
        os.close(create_guest_memfd(mountpoint, size, flags))
    except OSError as error:
        return errno.errorcode[error.errno]
    return "OK"


def test_max_huge_pages_bounds_what_all_files_reserve(start_gmemfs):
    daemon = start_gmemfs("-o", "max_huge_pages=4")
    first = create_guest_memfd(daemon.mountpoint, 3 * PAGE_2M, HUGE_2M)
    try:
        assert errno_of_creation(daemon.mountpoint, 2 * PAGE_2M, HUGE_2M) == "ENOMEM"
        assert errno_of_creation(daemon.mountpoint, PAGE_2M, HUGE_2M) == "OK"
    finally:
        os.close(first)
    assert errno_of_creation(daemon.mountpoint, 4 * PAGE_2M, HUGE_2M) == "OK", "evicted files give their share back"


def test_max_huge_pages_counts_a_1g_page_as_512_pages_of_a_2m_mount(start_gmemfs):
    daemon = start_gmemfs("-o", "pagesize=2M,max_huge_pages=2")
    assert errno_of_creation(daemon.mountpoint, PAGE_1G, HUGE_1G) == "ENOMEM", "1 GiB flags passed a 4 MiB limit"
    assert errno_of_creation(daemon.mountpoint, 2 * PAGE_2M, HUGE_2M) == "OK"
    assert errno_of_creation(daemon.mountpoint, 3 * PAGE_2M, HUGE_2M) == "ENOMEM"


def test_max_size_bounds_what_4k_files_hold(start_gmemfs):
    daemon = start_gmemfs("-o", "max_size=64M")
    assert errno_of_creation(daemon.mountpoint, 64 << 30) == "ENOMEM", "a 64 GiB file on a 64 MiB mount"
    assert errno_of_creation(daemon.mountpoint, 64 << 20) == "OK"


def test_max_files_is_enospc(start_gmemfs):
    daemon = start_gmemfs("-o", "max_files=3")
    os.mkdir(daemon.mountpoint / "d")
    os.close(open_gmem(daemon.mountpoint, "a"))
    os.close(open_gmem(daemon.mountpoint, "b"))
    with pytest.raises(OSError) as refused:
        os.close(open_gmem(daemon.mountpoint, "c"))
    assert refused.value.errno == errno.ENOSPC
    assert os.statvfs(daemon.mountpoint).f_ffree == 0
    os.unlink(daemon.mountpoint / "a")  # evicted once the kernel forgets it, a moment later
    assert wait_until(lambda: os.statvfs(daemon.mountpoint).f_ffree == 1, 5)
    os.close(open_gmem(daemon.mountpoint, "c"))


def test_hard_links_count_against_max_files_as_in_tmpfs(start_gmemfs):
    daemon = start_gmemfs("-o", "max_files=10")
    os.close(open_gmem(daemon.mountpoint, "f"))
    outcome = None
    for number in range(20):
        try:
            os.link(daemon.mountpoint / "f", daemon.mountpoint / f"link{number}")
        except OSError as error:
            outcome = (number, errno.errorcode[error.errno])
            break
    assert outcome == (9, "ENOSPC"), "the file and 9 more names"
    assert os.statvfs(daemon.mountpoint).f_ffree == 0
    os.rename(daemon.mountpoint / "link0", daemon.mountpoint / "renamed")  # a rename at the limit takes nothing
    os.unlink(daemon.mountpoint / "link1")
    assert os.statvfs(daemon.mountpoint).f_ffree == 1, "an unlinked name gives its share back at once"
    os.link(daemon.mountpoint / "f", daemon.mountpoint / "again")


def test_owner_and_mode_of_the_root(start_gmemfs):
    daemon = start_gmemfs("-o", f"allow_other,uid={NOBODY},gid={NOBODY},mode=1777")
    status = os.stat(daemon.mountpoint)
    assert (status.st_uid, status.st_gid, status.st_mode & 0o7777) == (NOBODY, NOBODY, 0o1777)


def test_past_the_daemons_open_file_limit_sizing_is_enospc_with_a_log_line(start_gmemfs):
    daemon = start_gmemfs(wrapper=["prlimit", "--nofile=64:64", "--"])
    fds, outcome = [], None
    try:
        for number in range(100):
            try:
                fds.append(open_gmem(daemon.mountpoint, f"f{number}", size=4096))
            except OSError as error:
                outcome = errno.errorcode[error.errno]
                break
    finally:
        for fd in fds:
            os.close(fd)
    assert outcome == "ENOSPC" and 30 < len(fds) < 64
    assert "one fd per sized file" in daemon.output()


def test_the_daemon_raises_its_soft_open_file_limit_to_the_hard_one(start_gmemfs):
    daemon = start_gmemfs(wrapper=["prlimit", "--nofile=64:128", "--"])
    with open(f"/proc/{daemon.pid}/limits") as limits:
        line = next(line for line in limits if line.startswith("Max open files"))
    assert line.split()[3:5] == ["128", "128"]


def test_a_non_root_daemon_refuses_huge_pages_at_mount_time():
    tmp_path = tempfile.mkdtemp(prefix="gmemfs-test-nobody-")
    os.chmod(tmp_path, 0o777)
    with gmemfs_for_anyone() as gmemfs_command:
        result = subprocess.run(
            [*AS_NOBODY, *gmemfs_command, "-f", "-o", "pagesize=2M", tmp_path],
            capture_output=True,
            text=True,
            timeout=30,
        )
    os.rmdir(tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "gmemfs: pagesize=2M: hugetlb files need root (each reserves its pages with a hugetlbfs superblock of its own)"
    ]
