"""How status, pools and maps look in a terminal (rich does the tables and colour)."""

from rich.table import Table
from rich.text import Text

from ..base.hugepages import PoolCounters
from ..base.printable import printable
from ..base.units import format_size
from .status import FileStatus, MountStatus, Segment, segments


def pool_table(counters: dict[int, PoolCounters]) -> Table:
    table = Table(title="huge page pools", title_justify="left")
    for column in ("page size", "total", "free", "reserved", "surplus", "available"):
        table.add_column(column, justify="right")
    for size, pool in counters.items():
        available = pool.available
        table.add_row(
            format_size(size), *(str(n) for n in (pool.total, pool.free, pool.reserved, pool.surplus, available))
        )
    return table


def status_table(status: MountStatus) -> Table:
    """Names go in as Text, escaped: a str cell is rich markup, and any user names the files."""
    table = Table(title=Text(f"gmemfs at {printable(status.mountpoint)}"), title_justify="left")
    table.add_column("path")
    for column in ("size", "page size", "reserved", "allocated", "shared"):
        table.add_column(column, justify="right")
    for file in status.files:
        table.add_row(
            Text(printable(file.path)),
            format_size(file.size) if file.size else "unsized",
            format_size(file.page_size),
            f"{file.reserved_pages} pages" if file.page_size > 4096 else "-",
            format_size(file.allocated.total),
            format_size(file.shared.total),
        )
    for entry in status.unreadable:
        table.add_row(Text(f"{printable(entry.path)} ({entry.reason})", style="italic"), "", "", "", "", "")
    unlinked = status.unlinked
    if unlinked["files"]:
        table.add_row(
            Text(f"({unlinked['files']} unlinked, reached by fds)", style="italic"),
            "",
            "",
            f"{unlinked['reserved_pages']} pages",
            format_size(unlinked["allocated_bytes"]),
            "",
        )
    return table


STATES = {
    (True, True): ("allocated shared", "green"),
    (True, False): ("allocated private", "magenta"),
    (False, True): ("hole      shared", "dim green"),
    (False, False): ("hole      private", "dim"),
}


def map_lines(file: FileStatus, width: int = 40) -> list[Text]:
    """One line per run of pages: its range, length, state, and a bar to scale."""
    header = Text(
        f"{printable(file.path)}: {format_size(file.size)}, {format_size(file.page_size)} pages, "
        f"{file.reserved_pages} reserved, {format_size(file.allocated.total)} allocated"
    )
    if not file.size:
        return [header, Text("  (unsized: no pages yet)")]
    digits = len(f"{file.size:x}")
    lines = [header]
    for segment in segments(file.size, file.allocated, file.shared):
        lines.append(_map_line(segment, file.size, digits, width))
    return lines


def _map_line(segment: Segment, size: int, digits: int, width: int) -> Text:
    label, style = STATES[(segment.allocated, segment.shared)]
    length = segment.end - segment.start
    bar = (
        "█" * max(1, round(width * length / size)) if segment.allocated else "░" * max(1, round(width * length / size))
    )
    line = Text(f"  {segment.start:#0{digits + 2}x}-{segment.end:#0{digits + 2}x} {format_size(length):>6}  ")
    line.append(f"{label:<17}  ", style=style)
    line.append(bar, style=style)
    return line
