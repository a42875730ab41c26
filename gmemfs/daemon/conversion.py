"""The conversion protocol: what KVM_GMEM_CONVERT_* (and ATTRIBUTES2) do to one file's pages.

The kernel keeps this with the file (kvm_gmem_convert_*): a range turns shared at once; a
range turns private only after the in-use check found no host user keeping a page of it
mlock()ed, and then host faults are refused first and the kernel's cached copies (the file's
and its guest view's) are dropped, so none outlives the pages' time as shared. The FUSE edge
(which handle, opened how) stays in operations; the checks in the kernel's order in rules.
"""

import errno
import functools
import logging
from collections.abc import Callable

import pyfuse3
import trio

from ..base.mounts import mount_device
from ..kernel.rules import GmemError, converted_before_refusal, converts_anything, first_page_in_use, plan_conversion
from ..kernel.uapi import ConversionRequest
from .faults import FaultInjector
from .guest_memfd import GuestMemfd
from .host_users import CHECK_DEADLINE, CheckIncomplete, locked_ranges
from .inodes import Inode
from .page_changes import serialized

log = logging.getLogger(__name__)

IN_USE_CHECKS_AT_ONCE = 2  # worker threads reading /proc for conversions, however many ask


class Conversions:
    """One mount's conversions: the in-use check's bounded threads and the mount's device,
    which /proc/PID/maps names the file's mappings by."""

    def __init__(self, mountpoint: str, faults: FaultInjector, describe: "Callable[[int], str]") -> None:
        self.mountpoint = mountpoint
        self.faults = faults
        self.describe = describe  # 'file vm0 (inode 5)' for an inode number, in log lines
        self._device: tuple[int, int] | None = None  # the mount's (major, minor), for /proc/PID/maps
        self._in_use_checks = trio.CapacityLimiter(IN_USE_CHECKS_AT_ONCE)

    async def convert(self, inode: Inode, cmd: int, in_buf: bytes) -> "tuple[int, bytes]":
        """A conversion ioctl's (result, out buffer): -EAGAIN with error_offset at the first
        page still in use."""
        gmem = inode.gmem
        request = ConversionRequest.decode(cmd, in_buf)
        plan = plan_conversion(request, gmem.size, gmem.profile.attributes2_reserved_checked)
        if plan is None or not converts_anything(gmem.profile, gmem.flags):
            return 0, in_buf
        if gmem.profile.attributes2_batches and gmem.has_attributes(*plan, private=request.to_private):
            return 0, in_buf  # kvm_gmem_range_has_attributes(): nothing to do, not even the in-use check
        if not request.to_private:
            self.faults.fail_if_tripped("convert_shared")
            await self.to_shared(gmem, *plan)
            return 0, in_buf
        in_use = await self.page_in_use(inode, *plan) if gmem.host_mapped or self.faults.rules else None
        if in_use is not None:
            log.info(
                "%s: conversion to private: page %#x is in use by the host (EAGAIN)",
                self.describe(inode.ino),
                in_use,
            )
            if gmem.profile.attributes2_batches:  # the huge pages before the refused one stay converted
                done = converted_before_refusal(plan[0], in_use, gmem.page_size)
                if done > plan[0]:
                    await self.to_private(inode, plan[0], done)
            return -errno.EAGAIN, request.encode(error_offset=in_use)
        await self.to_private(inode, *plan)
        return 0, in_buf

    async def page_in_use(self, inode: Inode, start: int, end: int) -> "int | None":
        """The first page of [start, end) a user of the file keeps mlock()ed ('still in use': EAGAIN),
        or `start` when that cannot be known: the check never converts without having looked.

        Read from /proc in a worker thread, bounded: a client stuck in the kernel while it
        holds its mmap_lock must not stall the event loop, nor a conversion forever.
        """
        fault = self.faults.trip("convert_private")
        if fault == errno.EAGAIN:
            return start
        if fault:
            raise GmemError(fault, "injected fault: convert_private", function="gmemfs: -o fail")
        return await self.held_by_host(inode, start, end)

    async def held_by_host(self, inode: Inode, start: int, end: int) -> "int | None":
        """The first page of [start, end) a host process keeps mlock()ed, from /proc (bounded)."""
        if not inode.gmem.host_mapped:
            return None  # never faulted in, so nobody can hold it
        if self._device is None:
            self._device = mount_device(self.mountpoint)
        openers = dict(inode.gmem.users.openers)
        try:
            with trio.fail_after(CHECK_DEADLINE + 1):  # also if /proc blocks the thread itself
                locked = await trio.to_thread.run_sync(
                    locked_ranges, openers, self._device, inode.ino, abandon_on_cancel=True, limiter=self._in_use_checks
                )
        except (CheckIncomplete, trio.TooSlowError) as error:
            log.info(
                "%s: conversion to private refused (EAGAIN): the in-use check could not finish: %s",
                self.describe(inode.ino),
                error or "it did not return in time",
            )
            return start
        return first_page_in_use(locked, start, end)

    async def to_shared(self, gmem: GuestMemfd, start: int, end: int) -> None:
        """What the guest wrote through its view reaches the file first (the view's cache is
        written back and dropped while the pages are still private), then the host may map them."""
        if not gmem.view:
            await serialized(gmem, gmem.convert_to_shared, start, end)
        else:
            async with gmem.change_lock:
                await drop_cached(gmem.view, start, end)
                gmem.convert_to_shared(start, end)

    async def to_private(self, inode: Inode, start: int, end: int) -> None:
        """Refuse host faults first, then drop the kernel's copies of the range (writing dirty
        pages back, which writepage still takes), so no fault can bring a copy back. A guest
        view drops its copies too: none may outlive the pages' time as shared."""
        gmem = inode.gmem
        if not gmem.host_mapped and not gmem.view:  # no copy to drop
            await serialized(gmem, gmem.convert_to_private, start, end)
        else:
            async with gmem.change_lock:
                gmem.begin_private(start, end)
                try:
                    if gmem.host_mapped:
                        await drop_cached(inode.ino, start, end)
                    if gmem.view:
                        await drop_cached(gmem.view, start, end)
                finally:
                    gmem.end_private(start, end)


async def drop_cached(ino: int, start: int, end: int) -> None:
    """The kernel's cache of [start, end) of an inode, written back and dropped (in a worker
    thread: writeback comes back to this daemon as writepage)."""
    invalidate = functools.partial(pyfuse3.invalidate_inode, ino, offset=start, length=end - start)
    await trio.to_thread.run_sync(invalidate)
