"""Spec section 10: the same calls on the kernel's own guest_memfd and on a 4 KiB gmemfs file.

Every result and errno must match. The kernel here is mainline (no hugetlb),
so this checks the 4 KiB rules; the hugetlb rules are stated in the other tests.
"""

import mmap
import os

import pytest
from support.host import touch
from support.kvm import KvmVm, why_no_kvm
from support.syscalls import convert, errno_name, errno_of, fallocate_result

from gmemfs import create_guest_memfd
from gmemfs.kernel.uapi import GUEST_MEMFD_FLAG_INIT_SHARED, GUEST_MEMFD_FLAG_MMAP

REASON = why_no_kvm()
pytestmark = [pytest.mark.kvm, pytest.mark.skipif(REASON is not None, reason=f"no reference kernel: {REASON}")]

SIZE = 16 * 4096


@pytest.fixture(scope="module")
def vm():
    vm = KvmVm()
    yield vm
    vm.close()


@pytest.fixture(scope="module")
def mount4k(shared_mounts):
    """The upstream ABI profile: the flag bits of the kernel on this machine."""
    return shared_mounts(4096, "upstream").mountpoint


@pytest.fixture
def pair(vm, mount4k):
    """A kernel guest_memfd and a gmemfs one, both SIZE bytes."""
    fds = (vm.create_guest_memfd(SIZE), create_guest_memfd(mount4k, SIZE))
    yield fds
    for fd in fds:
        os.close(fd)


def outcome_of_creation(create, size):
    try:
        fd = create(size)
    except OSError as error:
        return errno_name(error.errno)
    size_seen = os.fstat(fd).st_size
    os.close(fd)
    return f"OK size={size_seen}"


@pytest.mark.parametrize("size", [0, 1, 512, 4095, 4096, 4097, 8192, 3 * 4096, 2 << 20, 1 << 40, 1 << 62, -4096])
def test_creation_size(vm, mount4k, size):
    kernel = outcome_of_creation(vm.create_guest_memfd, size)
    ours = outcome_of_creation(lambda s: create_guest_memfd(mount4k, s), size)
    assert ours == kernel


MODES = {
    "0": 0x0,
    "KEEP_SIZE": 0x1,
    "PUNCH_HOLE": 0x2,
    "KEEP_SIZE|PUNCH_HOLE": 0x3,
    "ZERO_RANGE": 0x10,
    "KEEP_SIZE|ZERO_RANGE": 0x11,
    "KEEP_SIZE|PUNCH_HOLE|ZERO_RANGE": 0x13,
    "COLLAPSE_RANGE": 0x8,
    "INSERT_RANGE": 0x20,
    "KEEP_SIZE|UNSHARE_RANGE": 0x41,
    "KEEP_SIZE|0x100": 0x101,
}
RANGES = {
    "first_page": (0, 4096),
    "second_page": (4096, 4096),
    "whole": (0, SIZE),
    "at_end": (SIZE, 4096),
    "after_end": (SIZE + 4096, 4096),
    "across_end": (SIZE - 4096, 8192),
    "len_zero": (0, 0),
    "negative_offset": (-4096, 4096),
    "negative_len": (0, -4096),
    "unaligned_offset": (1, 4096),
    "unaligned_len": (0, 4097),
    "sub_page": (2048, 1024),
    "huge_len": (0, 1 << 62),
    "overflowing_end": ((1 << 63) - 4096, 8192),
}


@pytest.mark.parametrize("mode", MODES.values(), ids=MODES.keys())
@pytest.mark.parametrize("offset, length", RANGES.values(), ids=RANGES.keys())
def test_fallocate(pair, mode, offset, length):
    kernel_fd, our_fd = pair
    kernel = (fallocate_result(kernel_fd, mode, offset, length), os.fstat(kernel_fd).st_size)
    ours = (fallocate_result(our_fd, mode, offset, length), os.fstat(our_fd).st_size)
    assert ours == kernel


def test_fallocate_sequence_allocate_punch_reallocate(pair):
    steps = [(0x1, 0, SIZE), (0x3, 4096, 8192), (0x1, 0, SIZE), (0x3, 0, 4 * SIZE), (0x3, 0, SIZE)]
    for mode, offset, length in steps:
        assert [fallocate_result(fd, mode, offset, length) for fd in pair] == ["OK", "OK"]


CALLS = {
    "read": lambda fd: os.read(fd, 4096),
    "write": lambda fd: os.write(fd, b"x" * 4096),
    "pread": lambda fd: os.pread(fd, 4096, 0),
    "pwrite": lambda fd: os.pwrite(fd, b"x", 0),
    "lseek_set": lambda fd: os.lseek(fd, 0, os.SEEK_SET),
    "lseek_cur": lambda fd: os.lseek(fd, 0, os.SEEK_CUR),
    "lseek_end": lambda fd: os.lseek(fd, 0, os.SEEK_END),
    "lseek_data": lambda fd: os.lseek(fd, 0, os.SEEK_DATA),
    "lseek_hole": lambda fd: os.lseek(fd, 0, os.SEEK_HOLE),
    "ftruncate_zero": lambda fd: os.ftruncate(fd, 0),
    "ftruncate_same": lambda fd: os.ftruncate(fd, SIZE),
    "ftruncate_grow": lambda fd: os.ftruncate(fd, 2 * SIZE),
    "ftruncate_shrink": lambda fd: os.ftruncate(fd, 4096),
    "ftruncate_negative": lambda fd: os.ftruncate(fd, -1),
}


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_file_call(pair, call):
    kernel_fd, our_fd = pair
    assert errno_of(call, our_fd) == errno_of(call, kernel_fd)
    assert os.fstat(our_fd).st_size == os.fstat(kernel_fd).st_size == SIZE


def test_zero_byte_read_and_write_are_a_fuse_difference(pair):
    """The kernel answers EINVAL; FUSE returns 0 for an empty read/write of a file it does not
    cache without asking the daemon."""
    kernel_fd, our_fd = pair
    for call in (lambda fd: len(os.read(fd, 0)), lambda fd: os.write(fd, b"")):
        assert errno_of(call, kernel_fd) == "EINVAL"
        assert call(our_fd) == 0


@pytest.fixture
def mapped_pair(vm, mount4k):
    """A kernel guest_memfd and a gmemfs one with MMAP | INIT_SHARED, the first page faulted in."""
    flags = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED
    fds = (vm.create_guest_memfd(SIZE, flags), create_guest_memfd(mount4k, SIZE, flags))
    for fd in fds:
        assert touch(fd, 0, 4, write=b"data") == "OK:data"
    yield fds
    for fd in fds:
        os.close(fd)


@pytest.mark.parametrize(
    "call",
    [lambda fd: os.read(fd, 64), lambda fd: os.read(fd, 0), lambda fd: os.write(fd, b"x" * 64)],
    ids=["read", "read_zero_bytes", "write"],
)
def test_read_and_write_of_a_mapped_file_fail_as_the_kernels(mapped_pair, call):
    """Linux 7.2's guest_memfd_test (test_file_read_write) on an MMAP file: the page is in the
    host's page cache, and read(2) must still be EINVAL (it used to return the page)."""
    kernel_fd, our_fd = mapped_pair
    assert errno_of(call, our_fd) == errno_of(call, kernel_fd) == "EINVAL"
    assert touch(our_fd, 0, 4) == "OK:data", "page faults are still served"


@pytest.mark.parametrize(
    "call",
    [lambda fd: os.fchmod(fd, 0o600), os.fsync, os.fdatasync],
    ids=["fchmod", "fsync", "fdatasync"],
)
def test_deliberate_differences(pair, call):
    """The kernel's anonymous inode refuses these; a file on a filesystem allows them [fs].

    chmod is part of being a file; fsync must succeed because fallocate(1) and
    other tools fsync after their work and would otherwise report failure.
    """
    kernel_fd, our_fd = pair
    assert errno_of(call, kernel_fd) == "EINVAL"
    assert errno_of(call, our_fd) == "OK"


FLAGS = [0, 1 << 0, 1 << 1, (1 << 0) | (1 << 1), 1 << 2, 1 << 3, 1 << 26, 21 << 26 | 1 << 1, 1 << 63]


@pytest.mark.parametrize("flags", FLAGS, ids=[f"{flags:#x}" for flags in FLAGS])
def test_creation_flags_and_what_mmap_gives(vm, mount4k, flags):
    """Flags validity, then mmap (ENODEV without MMAP) and a touch (SIGBUS unless INIT_SHARED)."""

    def observe(create):
        try:
            fd = create()
        except OSError as error:
            return errno_name(error.errno)
        try:
            mapped = errno_of(lambda: mmap.mmap(fd, 4096, mmap.MAP_SHARED).close())
            touched = touch(fd, 0, 4, write=b"data") if mapped == "OK" else "-"
            converted = convert(fd, "shared", 0, 4096)
            return f"created, mmap {mapped}, touch {touched}, convert {converted}"
        finally:
            os.close(fd)

    kernel = observe(lambda: vm.create_guest_memfd(2 * 4096, flags))
    ours = observe(lambda: create_guest_memfd(mount4k, 2 * 4096, flags))
    assert ours == kernel


def test_private_mappings_are_a_fuse_difference(vm, mount4k):
    """The kernel refuses MAP_PRIVATE of a guest_memfd (EINVAL); FUSE cannot refuse it [fs]."""
    kernel_fd = vm.create_guest_memfd(4096, 1 << 0 | 1 << 1)
    our_fd = create_guest_memfd(mount4k, 4096, 1 << 0 | 1 << 1)
    try:
        assert errno_of(lambda: mmap.mmap(kernel_fd, 4096, mmap.MAP_PRIVATE)) == "EINVAL"
        assert errno_of(lambda: mmap.mmap(our_fd, 4096, mmap.MAP_PRIVATE).close()) == "OK"
    finally:
        os.close(kernel_fd)
        os.close(our_fd)
