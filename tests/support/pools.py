"""Huge page pools for tests: reserve what a test needs, give it back after."""

import contextlib
import time

from gmemfs.base.hugepages import PoolCounters, pool_counters, resize_pool

MiB = 1 << 20
GiB = 1 << 30
PAGE_2M = 2 * MiB
PAGE_1G = GiB


@contextlib.contextmanager
def pool_of(page_size: int, pages: int):
    """Make the pool hold at least `pages` pages; restore its size on the way out."""
    original = pool_counters(page_size).total
    if original < pages:
        granted = resize_pool(page_size, pages, compact=True)  # the suite needs them: it asks for compaction
        if granted < pages:
            resize_pool(page_size, original)
            raise RuntimeError(f"the kernel granted {granted} of {pages} pages of {page_size} bytes")
    try:
        yield
    finally:
        resize_pool(page_size, original)  # refuses, loudly, if a test leaked a reservation


def wait_for_counters(page_size: int, expected_reserved: int, expected_free: int, timeout: float = 5.0) -> PoolCounters:
    """Poll until the pool shows the expected counters (forget arrives asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        counters = pool_counters(page_size)
        if (counters.reserved, counters.free) == (expected_reserved, expected_free):
            return counters
        if time.monotonic() > deadline:
            return counters
        time.sleep(0.005)
