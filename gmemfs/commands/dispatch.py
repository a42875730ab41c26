"""gmemfs pool | status | map | convert | trace: see and size what gmemfs uses, from the shell."""

import argparse
import json
import os
import shutil
import sys

from ..base.hugepages import PoolError, resize_pool
from ..base.printable import printable
from ..base.units import format_size, parse_size
from ..client import ConversionError, convert_private, convert_shared, set_memory_attributes
from ..kernel.uapi import ABI_PROFILES, KVM_MEMORY_ATTRIBUTE_PRIVATE, KVM_SET_MEMORY_ATTRIBUTES2, U64_MAX, XATTR_ABI
from .errors import CommandError
from .status import InspectionValueError, MountError, file_status, gmemfs_mounts, mount_status, pools, pools_to_dict


def pool_command(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="gmemfs pool",
        description="Show the huge page pools, or size them (SIZE=PAGES, e.g. 2M=512 1G=2).",
    )
    parser.add_argument("requests", nargs="*", metavar="SIZE=PAGES")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--compact",
        action="store_true",
        help="if the kernel grants fewer pages, drop clean caches and compact memory, then ask again "
        "(1 GiB pages need contiguous memory; this affects the whole machine)",
    )
    args = parser.parse_args(argv)
    granted = {}
    for request in args.requests:
        size_text, has_equals, pages_text = request.partition("=")
        try:
            page_size, pages = parse_size(size_text), int(pages_text)
        except ValueError:
            raise CommandError(f"pool: {request!r} is not SIZE=PAGES (example: 2M=512)") from None
        if not has_equals:
            raise CommandError(f"pool: {request!r} is not SIZE=PAGES (example: 2M=512)")
        if os.geteuid() != 0:
            raise CommandError("pool: only root can size huge page pools")
        try:
            granted[request] = (page_size, pages, resize_pool(page_size, pages, compact=args.compact))
        except PoolError as error:
            raise CommandError(f"pool: {error}") from None
    counters = pools()
    if args.json:
        print(json.dumps({"pools": pools_to_dict(counters)}, indent=2))
        return
    for page_size, asked, got in granted.values():
        hint = "" if args.compact else "; --compact may find more"
        note = "" if got == asked else f" (the kernel could not find more: asked for {asked}{hint})"
        print(f"{format_size(page_size)} pool: {got} pages{note}")
    from .views import pool_table

    _console().print(pool_table(counters))


def status_command(argv: list[str]) -> int:
    """Every mount that can be read is shown; each that cannot is one line on stderr, and exit status 1."""
    parser = argparse.ArgumentParser(prog="gmemfs status", description="Show a mount's files and the pools.")
    parser.add_argument("mountpoint", nargs="?", help="default: every gmemfs mount")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    mounted = gmemfs_mounts()
    if args.mountpoint:
        mountpoint = os.path.abspath(args.mountpoint)
        if mountpoint not in mounted:
            raise CommandError(f"status: {printable(args.mountpoint)} is not a gmemfs mount")
        mounted = [mountpoint]
    statuses, failures = [], []
    for mountpoint in mounted:
        try:
            statuses.append(mount_status(mountpoint))
        except MountError as error:
            failures.append(error)
    counters = pools()
    if args.json:
        report = {"mounts": [s.to_dict() for s in statuses], "unreadable_mounts": [f.to_dict() for f in failures]}
        print(json.dumps(report | {"pools": pools_to_dict(counters)}, indent=2))
    else:
        from .views import pool_table, status_table

        console = _console()
        if not mounted:
            console.print("no gmemfs mounts")
        for status in statuses:
            console.print(status_table(status))
        console.print(pool_table(counters))
    for failure in failures:
        print(f"gmemfs status: {failure}", file=sys.stderr)
    return 1 if failures else 0


def map_command(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="gmemfs map", description="Draw a gmem file's pages: allocated or hole, shared or private."
    )
    parser.add_argument("file")
    args = parser.parse_args(argv)
    try:
        status = file_status(args.file, args.file)
    except (OSError, InspectionValueError) as error:
        problem = error.strerror if isinstance(error, OSError) else error
        raise CommandError(f"map: {printable(args.file)}: {problem} (is it a file on a gmemfs mount?)") from None
    from .views import map_lines

    console = _console()
    width = max(10, min(60, shutil.get_terminal_size().columns - 50))
    for line in map_lines(status, width):
        console.print(line)


def convert_command(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="gmemfs convert",
        description="Convert a gmem file's pages to shared or private, with its ABI's ioctl "
        "(KVM_GMEM_CONVERT_* of RFC v2, KVM_SET_MEMORY_ATTRIBUTES2 of inplace-v7 and hugetlb-2025).",
    )
    parser.add_argument("file")
    parser.add_argument("to", choices=("shared", "private"))
    parser.add_argument("-o", "--offset", default="0", help="start (bytes, or 4K, 2M...); default 0")
    parser.add_argument("-l", "--length", help="bytes (or 4K, 2M...); default: to the end of the file")
    args = parser.parse_args(argv)
    try:
        offset = parse_size(args.offset)
        length = parse_size(args.length) if args.length else None
    except ValueError as error:
        raise CommandError(f"convert: {error}") from None
    for name, text, value in (("offset", args.offset, offset), ("length", args.length, length)):
        if value is not None and value > U64_MAX:
            raise CommandError(f"convert: {name} {printable(text)} does not fit in the ioctl's 64 bits")
    try:
        fd = os.open(args.file, os.O_RDWR)
    except OSError as error:
        raise CommandError(f"convert: {printable(args.file)}: {error.strerror}") from None
    try:
        if length is None:
            length = max(os.fstat(fd).st_size - offset, 0)
        _convert(fd, args.to == "private", offset, length)
    except ConversionError as error:
        raise CommandError(
            f"convert: {printable(args.file)}: page {error.error_offset:#x} is still in use by the host"
        ) from None
    except OSError as error:
        raise CommandError(f"convert: {printable(args.file)}: {error.strerror}") from None
    finally:
        os.close(fd)


def _convert(fd: int, to_private: bool, offset: int, length: int) -> None:
    """The conversion ioctl of the file's ABI profile (the file names it in user.gmem.abi)."""
    profile = ABI_PROFILES.get(os.getxattr(fd, XATTR_ABI).decode())
    if profile and KVM_SET_MEMORY_ATTRIBUTES2 in profile.conversion_ioctls:
        set_memory_attributes(fd, offset, length, KVM_MEMORY_ATTRIBUTE_PRIVATE if to_private else 0)
    else:
        (convert_private if to_private else convert_shared)(fd, offset, length)


def trace_command(argv: list[str]) -> int:
    """The trace reader's modules (select, the event decoder) load only for it."""
    from .trace import trace_command as follow_mount

    return follow_mount(argv)


def _console():
    """rich costs ~45 modules and ~34 ms: imported by the commands that draw, never by the daemon."""
    from rich.console import Console

    return Console()


COMMANDS = {
    "pool": pool_command,
    "status": status_command,
    "map": map_command,
    "convert": convert_command,
    "trace": trace_command,
}


def run_command(name: str, argv: list[str]) -> int:
    try:
        return COMMANDS[name](argv) or 0
    except CommandError as error:
        print(f"gmemfs {error}", file=sys.stderr)
        return 1
