"""Issue 17 section 1: the in-use check of a conversion to private, against hostile users.

The check reads /proc of the file's users only (who opened it for writing, and their
descendants), matches mappings by their device and inode fields, counts only mappings that may
write the file, and refuses (EAGAIN) when it cannot finish. Each case here broke the check that
scanned every process's /proc as text.
"""

import concurrent.futures
import ctypes
import mmap
import os
import shutil
import subprocess
import sys
import tempfile

import pytest
from support.files import open_gmem
from support.host import touch
from support.syscalls import convert, xattr

NOBODY = 65534
K4 = 4096
SYSTEM_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

# Runs as nobody: map argv[1] (a path, opened O_RDWR or O_RDONLY as argv[2] says) argv[3] times,
# mlock the first mapping, say "ready" and wait for stdin to close.
MAP_AND_LOCK = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
writable = sys.argv[2] == "rw"
fd = os.open(sys.argv[1], os.O_RDWR if writable else os.O_RDONLY)
prot = 3 if writable else 1  # PROT_READ | PROT_WRITE, or PROT_READ
addresses = [libc.mmap(None, 4096, prot, 1, fd, 0) for _ in range(int(sys.argv[3]))]  # MAP_SHARED
assert all(address != ctypes.c_void_p(-1).value for address in addresses), ctypes.get_errno()
ctypes.c_char.from_address(addresses[0]).value  # fault it in
assert libc.mlock(ctypes.c_void_p(addresses[0]), ctypes.c_size_t(4096)) == 0, ctypes.get_errno()
os.write(1, b"ready\\n")
sys.stdin.read()
"""


class MappingProcess:
    """A process that maps a file (many times, if asked) and keeps the first mapping mlock()ed."""

    def __init__(self, path: str, *, writable: bool = True, mappings: int = 1, as_nobody: bool = True) -> None:
        user = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"] if as_nobody else []
        command = [*user, SYSTEM_PYTHON, "-c", MAP_AND_LOCK, path, "rw" if writable else "ro", str(mappings)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        ready = self.process.stdout.readline()
        if ready != b"ready\n":
            self.stop()
            raise AssertionError(f"the mapping process did not start: {ready!r}")

    def stop(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.fixture
def world_directory():
    """A directory on tmpfs that nobody may write (its own files, for spoofing)."""
    path = tempfile.mkdtemp(prefix="gmemfs-test-world-", dir="/dev/shm")
    os.chmod(path, 0o777)
    yield path
    shutil.rmtree(path)


def nobodys_file(directory: str, name: str) -> str:
    path = os.path.join(directory, name)
    subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "truncate", "-s", "4096", path],
        check=True,
    )
    return path


def mapped_shared_file(mountpoint, name: str) -> int:
    """Root's 2-page file, shared and faulted in by the host (so the check has to look)."""
    fd = open_gmem(mountpoint, name, size=2 * K4)
    assert convert(fd, "shared", 0, 2 * K4) == ("OK", 0)
    assert touch(fd, 0, 4, write=b"host") == "OK:host"
    return fd


def test_a_path_that_spells_the_files_device_and_inode_is_not_a_mapping_of_it(start_gmemfs, world_directory):
    """Before: nobody's mlock()ed file named 'spoof DEV INO x' made root's conversion EAGAIN."""
    daemon = start_gmemfs("-o", "allow_other")
    fd = mapped_shared_file(daemon.mountpoint, "roots-vm")
    st = os.fstat(fd)
    spoof = nobodys_file(world_directory, f"spoof {os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x} {st.st_ino} x")
    spoofer = MappingProcess(spoof)
    try:
        assert convert(fd, "private", 0, 2 * K4) == ("OK", 0)
        assert xattr(fd, "shared") == ""
    finally:
        spoofer.stop()
        os.close(fd)


def test_a_reader_who_mlocks_a_read_only_mapping_cannot_hold_the_owners_pages(start_gmemfs):
    """Before: nobody, who may only read a 0644 file, made every conversion of it EAGAIN."""
    daemon = start_gmemfs("-o", "allow_other")
    fd = mapped_shared_file(daemon.mountpoint, "readable-vm")
    os.fchmod(fd, 0o644)
    reader = MappingProcess(str(daemon.mountpoint / "readable-vm"), writable=False)
    try:
        assert convert(fd, "private", 0, 2 * K4) == ("OK", 0)
        assert xattr(fd, "shared") == ""
    finally:
        reader.stop()
        os.close(fd)


def long_path(directory: str) -> str:
    """A path of about 3,800 bytes (the maps line of each mapping of it is that long)."""
    path = directory
    while len(path) < 3600:
        path = os.path.join(path, "d" * 200)
        os.mkdir(path)
    os.chmod(directory, 0o777)
    for parent in _parents(directory, path):
        os.chmod(parent, 0o777)
    return path


def _parents(top: str, path: str):
    while path != top:
        yield path
        path = os.path.dirname(path)


def test_a_stranger_with_a_huge_maps_file_cannot_switch_the_check_off(start_gmemfs, world_directory):
    """Before: nobody mapped its own file 60,000 times under a 3,800-byte path; reading every
    process's maps then passed the 2 s bound and root's mlock()ed page converted anyway."""
    daemon = start_gmemfs("-o", "allow_other")
    fd = mapped_shared_file(daemon.mountpoint, "locked-vm")
    locker = MappingProcess(str(daemon.mountpoint / "locked-vm"), as_nobody=False)  # root's own VMM
    stranger = MappingProcess(nobodys_file(long_path(world_directory), "f"), mappings=60_000)
    try:
        assert convert(fd, "private", 0, 2 * K4) == ("EAGAIN", 0)
        assert xattr(fd, "shared") == f"0x0-{2 * K4:#x}", "nothing converted"
    finally:
        stranger.stop()
        locker.stop()
        os.close(fd)


def peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


def test_a_users_own_proc_too_large_to_read_in_time_refuses_and_costs_little(start_gmemfs, tmp_path):
    """The check never converts without having looked: a user of the file whose maps cannot be
    read within the deadline gets EAGAIN. Eight conversions at once read with two threads, a
    line at a time (before: 41 threads, 2.2-2.7 GB in the daemon)."""
    daemon = start_gmemfs()
    fd = mapped_shared_file(daemon.mountpoint, "big-vm")
    big_user = MappingProcess(str(daemon.mountpoint / "big-vm"), as_nobody=False)  # the file's user, locking page 0
    path = long_path(str(tmp_path))
    with open(os.path.join(path, "f"), "wb") as file:
        file.truncate(K4)
    maps_hog = MappingProcess(os.path.join(path, "f"), mappings=64_000, as_nobody=False)  # a child: a user's descendant
    before = peak_rss_kib(daemon.pid)
    try:
        # Only page 1, which nobody locks: refused because the users' /proc could not be read in time.
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: convert(fd, "private", K4, K4), range(8)))
        assert results == [("EAGAIN", K4)] * 8
        assert peak_rss_kib(daemon.pid) - before < 100 * 1024
        assert "the in-use check could not finish" in daemon.output()
    finally:
        maps_hog.stop()
        big_user.stop()
    try:
        assert convert(fd, "private", K4, K4) == ("OK", 0), "once it can look, it converts"
    finally:
        os.close(fd)


def test_sized_files_cannot_take_the_fds_the_check_needs(start_gmemfs):
    """Before: a user sized 4 KiB files until the daemon had no fd left, and every conversion of
    a mapped file failed with EMFILE, an errno no conversion has."""
    daemon = start_gmemfs(wrapper=["prlimit", "--nofile=256:256", "--"])
    fd = mapped_shared_file(daemon.mountpoint, "vm")
    filler = []
    try:
        while True:
            try:
                filler.append(open_gmem(daemon.mountpoint, f"f{len(filler)}", size=K4))
            except OSError:
                break
        assert len(filler) < 256
        with mmap.mmap(fd, K4, mmap.MAP_SHARED) as mapping:
            libc = ctypes.CDLL(None, use_errno=True)
            address = ctypes.addressof(ctypes.c_char.from_buffer(mapping))
            assert libc.mlock(ctypes.c_void_p(address), ctypes.c_size_t(K4)) == 0
            try:
                assert convert(fd, "private", 0, 2 * K4) == ("EAGAIN", 0)
            finally:
                libc.munlock(ctypes.c_void_p(address), ctypes.c_size_t(K4))
            del address
        assert convert(fd, "private", 0, 2 * K4) == ("OK", 0)
    finally:
        for number in filler:
            os.close(number)
        os.close(fd)
