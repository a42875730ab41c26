"""The machine's hugetlb pools, read from (and sized through) sysfs."""

import os
from dataclasses import dataclass
from pathlib import Path

from .units import format_size

SYSFS_HUGEPAGES = Path("/sys/kernel/mm/hugepages")


def pool_dir(page_size: int) -> Path:
    return SYSFS_HUGEPAGES / f"hugepages-{page_size // 1024}kB"


def huge_page_sizes() -> frozenset[int]:
    """The huge page sizes this kernel and CPU support."""
    if not SYSFS_HUGEPAGES.is_dir():
        return frozenset()
    return frozenset(
        int(entry.name.removeprefix("hugepages-").removesuffix("kB")) * 1024
        for entry in SYSFS_HUGEPAGES.iterdir()
        if entry.name.startswith("hugepages-")
    )


def default_huge_page_size() -> int:
    """The size that HUGETLB with an empty size field means (Hugepagesize)."""
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("Hugepagesize:"):
                return int(line.split()[1]) * 1024
    return 0


@dataclass(frozen=True)
class PoolCounters:
    """One pool's counters, in pages, as /sys/kernel/mm/hugepages shows them."""

    total: int
    free: int
    reserved: int
    surplus: int

    @property
    def available(self) -> int:
        """Free pages no reservation has claimed: what a new subpool may take without surplus pages."""
        return max(self.free - self.reserved, 0)


def pool_counters(page_size: int) -> PoolCounters:
    directory = pool_dir(page_size)

    def read(name: str) -> int:
        return int((directory / name).read_text())

    return PoolCounters(
        total=read("nr_hugepages"),
        free=read("free_hugepages"),
        reserved=read("resv_hugepages"),
        surplus=read("surplus_hugepages"),
    )


def set_pool_pages(page_size: int, pages: int) -> int:
    """Ask the kernel for a pool of `pages` pages; return what it granted."""
    (pool_dir(page_size) / "nr_hugepages").write_text(f"{pages}\n")
    return pool_counters(page_size).total


class PoolError(ValueError):
    """A pool request gmemfs refuses; the message is for the user."""


def memory_total() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/meminfo has no MemTotal")


def resize_pool(page_size: int, pages: int, *, compact: bool = False) -> int:
    """Set a pool's size, refusing the absurd and the harmful; return what the kernel granted.

    Never shrinks below the pages in use plus those reserved: the kernel would
    keep them as surplus pages, and files' reservations must stay whole. With
    compact (only when the user asks: it drops every clean cache on the machine),
    a short grant is retried after making memory contiguous.
    """
    label = format_size(page_size)
    if page_size not in huge_page_sizes():
        raise PoolError(f"this machine has no {label} huge pages")
    if pages < 0:
        raise PoolError(f"{label}={pages}: a pool cannot be negative")
    if pages * page_size > memory_total():
        raise PoolError(
            f"{label}={pages} asks for {pages * page_size >> 20} MiB, more than this machine's "
            f"{memory_total() >> 20} MiB of memory"
        )
    current = pool_counters(page_size)
    held = current.total - current.free + current.reserved
    if pages < held:
        raise PoolError(f"{label}={pages}: {held} pages are in use or reserved; the pool cannot shrink below that")
    granted = set_pool_pages(page_size, pages)
    if granted < pages and compact:
        make_contiguous_memory()
        granted = set_pool_pages(page_size, pages)
    return granted


def make_contiguous_memory() -> None:
    """Free memory is often there but fragmented (1 GiB pages need it contiguous): drop clean
    caches, give back the slab pages that only freed objects kept (many processes' worth of
    mappings leave them scattered over every gigabyte), and let the kernel compact, as one
    does by hand before growing a 1 GiB pool."""
    os.sync()
    for knob in Path("/sys/kernel/slab").glob("*/shrink"):
        try:
            knob.write_text("1\n")
        except OSError:
            pass
    for knob, value in (("drop_caches", "3"), ("compact_memory", "1")):
        try:
            Path("/proc/sys/vm", knob).write_text(f"{value}\n")
        except OSError:
            pass  # a kernel without the knob: the first answer stands


@dataclass(frozen=True)
class HugePageSupport:
    """What the flag rules need to know about the machine's huge pages."""

    sizes: frozenset[int]
    default_size: int

    @classmethod
    def probe(cls) -> "HugePageSupport":
        return cls(sizes=huge_page_sizes(), default_size=default_huge_page_size())
