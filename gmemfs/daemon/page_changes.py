"""The order of a file's page changes: behind the one under way, in a worker thread when long.

Allocation, punching and conversion all change a file's pages; GuestMemfd.change_lock (trio)
keeps them in the order they arrive once one of them has left the event loop.
"""

import trio

from .guest_memfd import GuestMemfd


async def in_worker_thread(gmem: GuestMemfd, change, *args):
    """Run a long page change in a worker thread, after the file's page changes under way and
    before those that arrive meanwhile (change_lock); the loop answers everyone else."""
    async with gmem.change_lock:
        return await trio.to_thread.run_sync(change, *args)


async def serialized(gmem: GuestMemfd, change, *args):
    """Run a page change after any that is under way in a thread (a large allocation,
    a conversion waiting for the kernel). Without one, no lock: taking a trio lock is
    two scheduler checkpoints, more than most changes cost."""
    if gmem.change_lock.locked():
        async with gmem.change_lock:
            return change(*args)
    return change(*args)
