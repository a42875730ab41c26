"""Which host processes hold a gmem file's pages locked in memory, from /proc.

FUSE tells the daemon nothing about mmap, so the only host use it can see is
what /proc shows: mappings of the file that are mlock()ed (VM_LOCKED), the
usual sign of memory a VMM keeps pinned. Pins without mlock (vfio DMA,
O_DIRECT in flight, io_uring fixed buffers) raise page refcounts that no
interface shows to another process; they cannot be detected.
"""

import os
from collections.abc import Iterator

from .mounts import mount_device
from .ranges import Range


def fuse_device(mountpoint: str) -> "str | None":
    """The mount's device as /proc/PID/maps prints it ('00:3a')."""
    device = mount_device(mountpoint)
    return f"{device[0]:02x}:{device[1]:02x}" if device else None


def locked_ranges(device: str, ino: int) -> Iterator[Range]:
    """File ranges [start, end) of the inode that some process maps with VM_LOCKED."""
    key = f" {device} {ino} "
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/maps") as maps:
                if key not in maps.read():
                    continue
            with open(f"/proc/{pid}/smaps") as smaps:
                yield from _locked_in_smaps(smaps, key)
        except OSError:  # the process exited, or hides its maps
            continue


def _locked_in_smaps(lines, key: str) -> Iterator[Range]:
    current = None
    for line in lines:
        if not line[0].isupper():  # a mapping's header line
            current = None
            if key in line:
                addresses, _, offset = line.split()[:3]
                start, end = (int(address, 16) for address in addresses.split("-"))
                current = (int(offset, 16), int(offset, 16) + end - start)
        elif current and line.startswith("VmFlags:") and "lo" in line.split()[1:]:
            yield current
