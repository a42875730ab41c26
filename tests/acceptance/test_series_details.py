"""Smaller rules of the series' code that a filesystem must take care to keep."""

import errno
import mmap
import os

import pytest
from support.pools import PAGE_2M

from gmemfs import KVM_GUEST_MEMFD_HUGE_2MB, KVM_GUEST_MEMFD_HUGETLB, create_guest_memfd
from gmemfs.base.hugepages import pool_counters, pool_dir

HUGE_2M = KVM_GUEST_MEMFD_HUGETLB | KVM_GUEST_MEMFD_HUGE_2MB


def test_an_executable_mapping_is_eperm_as_on_the_kernels_noexec_mount(shared_mounts):
    fd = create_guest_memfd(shared_mounts(4096).mountpoint, 4096)
    try:
        with pytest.raises(PermissionError):
            mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_EXEC)
    finally:
        os.close(fd)


@pytest.fixture
def overcommit_allowed():
    """nr_overcommit_hugepages > 0 for the 2 MiB pool while the test runs."""
    setting = pool_dir(PAGE_2M) / "nr_overcommit_hugepages"
    before = setting.read_text()
    setting.write_text("64")
    yield
    setting.write_text(before)


def test_a_reservation_never_takes_surplus_pages(shared_mounts, overcommit_allowed):
    """The seed's hugepage_new_subpool(h, n, n, false): beyond the free pool is ENOMEM even when
    the pool could overcommit."""
    counters = pool_counters(PAGE_2M)
    with pytest.raises(OSError) as refused:
        create_guest_memfd(shared_mounts(4096).mountpoint, (counters.available + 1) * PAGE_2M, HUGE_2M)
    assert refused.value.errno == errno.ENOMEM
    assert pool_counters(PAGE_2M) == counters, "nothing reserved, no surplus page made"


def _resident(mapping: mmap.mmap, pages: int) -> list[bool]:
    """mincore(2): which pages of the mapping the kernel's page cache holds."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    vector = (ctypes.c_ubyte * pages)()
    buffer = ctypes.c_char.from_buffer(mapping)
    assert libc.mincore(ctypes.c_void_p(ctypes.addressof(buffer)), ctypes.c_size_t(pages * 4096), vector) == 0
    del buffer
    return [bool(v & 1) for v in vector]


def test_conversion_to_private_drops_only_the_converted_range_from_the_cache(shared_mounts):
    from support.syscalls import convert

    fd = create_guest_memfd(shared_mounts(4096).mountpoint, 2 * 4096)
    try:
        assert convert(fd, "shared", 0, 2 * 4096) == ("OK", 0)
        with mmap.mmap(fd, 2 * 4096, mmap.MAP_SHARED) as mapping:
            assert mapping[0] == mapping[4096] == 0  # both pages now in the page cache
            assert _resident(mapping, 2) == [True, True]
            assert convert(fd, "private", 0, 4096) == ("OK", 0)
            assert _resident(mapping, 2) == [False, True]
    finally:
        os.close(fd)
