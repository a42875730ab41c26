"""Failures on purpose, so VMM authors can test their error paths: -o fail=OPERATION:ERRNO[:N].

N counts the operation's calls from 1 and fails only that one; without N,
every call fails. An injected allocation failure lands halfway, as a real one
would: the first half of the pages are allocated (and stay), then the errno.
The daemon's state stays exactly what the kernel holds.
"""

import errno
from collections import Counter
from dataclasses import dataclass

from ..kernel.rules import GmemError

OPERATIONS = ("allocate", "punch", "size", "convert_shared", "convert_private")


@dataclass(frozen=True)
class FaultRule:
    operation: str
    err: int
    nth: int = 0  # 0: every call

    def __str__(self) -> str:
        which = f"call {self.nth}" if self.nth else "every call"
        return f"{self.operation}:{errno.errorcode[self.err]} ({which})"


def parse_fault(text: str) -> FaultRule:
    """'allocate:ENOMEM:3' -> FaultRule; ValueError with a message for the user."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or parts[0] not in OPERATIONS:
        raise ValueError(f"fail={text}: expected OPERATION:ERRNO[:N], OPERATION one of {', '.join(OPERATIONS)}")
    err = getattr(errno, parts[1], None) if parts[1].startswith("E") else None
    if not isinstance(err, int):
        raise ValueError(f"fail={text}: {parts[1]!r} is not an errno name (ENOMEM, EINTR, EAGAIN...)")
    nth = parts[2] if len(parts) == 3 else "0"
    if not nth.isdigit():
        raise ValueError(f"fail={text}: N must be a call number (1 for the first call)")
    return FaultRule(parts[0], err, int(nth))


class FaultInjector:
    """Counts each operation's calls and says which one must fail."""

    def __init__(self, rules: "tuple[FaultRule, ...]" = ()) -> None:
        self.rules = rules
        self.calls: Counter[str] = Counter()

    def trip(self, operation: str) -> "int | None":
        """The errno this call of `operation` must fail with, or None."""
        if not self.rules:
            return None
        self.calls[operation] += 1
        for rule in self.rules:
            if rule.operation == operation and rule.nth in (0, self.calls[operation]):
                return rule.err
        return None

    def fail_if_tripped(self, operation: str) -> None:
        """Raise the injected errno where this call of `operation` must fail."""
        fault = self.trip(operation)
        if fault:
            raise GmemError(fault, f"injected fault: {operation}", function="gmemfs: -o fail")


def halfway(start: int, end: int, page_size: int) -> int:
    """Where an injected allocation failure lands: after the first half of the pages."""
    return start + (end - start) // page_size // 2 * page_size
