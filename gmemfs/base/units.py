"""Byte sizes as people write them ("4K", "2M", "1G") and as the kernel prints them."""

import re

_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"(\d+)\s*([KMGT]?)(?:I?B)?", re.IGNORECASE | re.ASCII)


def parse_size(text: str) -> int:
    """'2M' -> 2097152; ValueError for anything else."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a size (examples: 4K, 2M, 1G)")
    return int(match.group(1)) * _SUFFIXES[match.group(2).upper()]


def format_size(size: int) -> str:
    """2097152 -> '2M': the largest unit that divides the size."""
    for suffix in ("T", "G", "M", "K"):
        unit = _SUFFIXES[suffix]
        if size >= unit and size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)
