"""Spec section 3.5: create_guest_memfd mirrors KVM_CREATE_GUEST_MEMFD for VMM code."""

import errno
import os

import pytest
from support.pools import PAGE_2M, wait_for_counters

from gmemfs import KVM_GUEST_MEMFD_HUGE_2MB, KVM_GUEST_MEMFD_HUGETLB, create_guest_memfd
from gmemfs.base.hugepages import pool_counters

HUGE_2M = KVM_GUEST_MEMFD_HUGETLB | KVM_GUEST_MEMFD_HUGE_2MB


@pytest.fixture
def mount4k(shared_mounts):
    mountpoint = shared_mounts(4096).mountpoint
    yield mountpoint
    assert os.listdir(mountpoint) == [] or all(not n.startswith(".guest_memfd") for n in os.listdir(mountpoint))


def test_returns_an_anonymous_sized_fd_holding_its_reservation(mount4k):
    before = pool_counters(PAGE_2M)
    fd = create_guest_memfd(mount4k, 4 * PAGE_2M, HUGE_2M)
    try:
        assert not [name for name in os.listdir(mount4k) if name.startswith(".guest_memfd")]
        st = os.fstat(fd)
        assert (st.st_size, st.st_blksize, st.st_nlink) == (4 * PAGE_2M, PAGE_2M, 0)
        assert pool_counters(PAGE_2M).reserved == before.reserved + 4
    finally:
        os.close(fd)
    after = wait_for_counters(PAGE_2M, before.reserved, before.free)
    assert after.reserved == before.reserved


@pytest.mark.parametrize(
    "size, flags, expected",
    [
        (0, 0, errno.EINVAL),
        (4095, 0, errno.EINVAL),
        (4096, 1 << 0, errno.EINVAL),
        (4096, HUGE_2M, errno.EINVAL),  # not a multiple of the huge page size
        (PAGE_2M, KVM_GUEST_MEMFD_HUGE_2MB, errno.EINVAL),  # size field without HUGETLB
        (4096 * PAGE_2M, HUGE_2M, errno.ENOMEM),  # 8 GiB: more than the pool
    ],
)
def test_kernel_errors_leave_nothing_behind(mount4k, size, flags, expected):
    before = pool_counters(PAGE_2M)
    with pytest.raises(OSError) as info:
        create_guest_memfd(mount4k, size, flags)
    assert info.value.errno == expected
    assert not [name for name in os.listdir(mount4k) if name.startswith(".guest_memfd")]
    after = wait_for_counters(PAGE_2M, before.reserved, before.free)
    assert (after.reserved, after.free) == (before.reserved, before.free)


def test_the_fd_has_no_close_on_exec_as_the_kernels(mount4k):
    """get_unused_fd_flags(0) in __kvm_gmem_create: a VMM's children inherit guest memory."""
    import fcntl

    fd = create_guest_memfd(mount4k, 4096)
    try:
        assert not fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    finally:
        os.close(fd)
