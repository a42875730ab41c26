"""The kernel's mount table, read as the kernel escapes it (space, tab, newline, backslash)."""

import re
from pathlib import Path

_ESCAPE = re.compile(r"\\([0-7]{3})")


def unescape(field: str) -> str:
    r"""'/mnt/my\040gmem' -> '/mnt/my gmem'."""
    return _ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), field)


def mounts(table: str = "/proc/self/mounts") -> "list[tuple[str, str, str, str]]":
    """(source, mountpoint, type, options) of every mount in the table."""
    with open(table) as lines:
        return [tuple(unescape(field) for field in line.split()[:4]) for line in lines]


def mount_device(mountpoint: str) -> "tuple[int, int] | None":
    """(major, minor) of the mount at mountpoint, from mountinfo (no stat: it may be our own mount,
    not yet served)."""
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            if unescape(fields[4]) == mountpoint:
                major, minor = (int(number) for number in fields[2].split(":"))
                return major, minor
    return None


def is_mounted(path: "str | Path", table: str = "/proc/self/mounts") -> bool:
    """Whether something is mounted at path (no stat: the mount may be our own, or dead)."""
    return any(mountpoint == str(path) for _, mountpoint, _, _ in mounts(table))
