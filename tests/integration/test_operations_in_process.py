"""The Operations layer in this very process, on trio (pytest-trio): the daemon's loop and the
test share one event loop, so the test's file I/O goes through trio.to_thread, never blocking it."""

import os

import pyfuse3
import pytest
import trio
from support.mount import new_mountpoint, remove_mountpoint
from support.pools import PAGE_2M

from gmemfs import KVM_GUEST_MEMFD_HUGE_2MB, KVM_GUEST_MEMFD_HUGETLB, create_guest_memfd, fallocate
from gmemfs.base.hugepages import pool_counters
from gmemfs.base.mounts import is_mounted
from gmemfs.daemon.operations import GmemOperations
from gmemfs.daemon.options import MountOptions
from gmemfs.kernel.uapi import FALLOC_FL_KEEP_SIZE


@pytest.fixture
async def in_process_mount(huge_pools):
    """gmemfs served by this process's trio loop, unmounted and evicted afterwards."""
    mountpoint = new_mountpoint()
    operations = GmemOperations(MountOptions(), str(mountpoint))
    pyfuse3.init(operations, str(mountpoint), MountOptions().fuse_options())
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pyfuse3.main)
            yield mountpoint, operations
            nursery.cancel_scope.cancel()
    finally:
        pyfuse3.close(unmount=is_mounted(mountpoint))
        operations.release_all()
        remove_mountpoint(mountpoint)


async def test_a_file_made_through_the_mount_is_the_operations_state(in_process_mount):
    mountpoint, operations = in_process_mount
    before = pool_counters(PAGE_2M).reserved

    def make_and_allocate() -> int:
        fd = create_guest_memfd(mountpoint, 2 * PAGE_2M, KVM_GUEST_MEMFD_HUGETLB | KVM_GUEST_MEMFD_HUGE_2MB)
        fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, PAGE_2M)
        return fd

    fd = await trio.to_thread.run_sync(make_and_allocate)
    try:
        (gmem,) = [inode.gmem for inode in operations.inodes.files()]
        assert (gmem.size, gmem.reserved_pages, gmem.allocated.total) == (2 * PAGE_2M, 2, PAGE_2M)
        assert pool_counters(PAGE_2M).reserved == before + 1, "one page reserved, one in use"
    finally:
        await trio.to_thread.run_sync(os.close, fd)
    with trio.fail_after(5):
        while operations.inodes.files():  # the kernel's forget evicts it a moment later
            await trio.sleep(0.005)
    assert pool_counters(PAGE_2M).reserved == before
