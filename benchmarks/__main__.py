"""Time each operation three ways, in one run: gmemfs, the kernel directly, and a do-nothing
pyfuse3 filesystem (the floor). Prints medians and ratios; --json for comparing commits.

Usage: .venv/bin/python -m benchmarks [--quick] [--json]   (as root)
"""

import argparse
import contextlib
import json
import mmap
import os
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass

from gmemfs import (
    FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE,
    KVM_GUEST_MEMFD_HUGE_1GB,
    KVM_GUEST_MEMFD_HUGE_2MB,
    KVM_GUEST_MEMFD_HUGETLB,
    convert_private,
    convert_shared,
    create_guest_memfd,
    fallocate,
)
from gmemfs.base.hugepages import pool_counters, resize_pool, set_pool_pages
from gmemfs.daemon.backing import Backing

from . import daemons as daemons_module
from . import run_calls
from .daemons import Daemon

MiB, GiB = 1 << 20, 1 << 30
P2M, P1G = 2 * MiB, GiB
HUGE_2M = KVM_GUEST_MEMFD_HUGETLB | KVM_GUEST_MEMFD_HUGE_2MB
HUGE_1G = KVM_GUEST_MEMFD_HUGETLB | KVM_GUEST_MEMFD_HUGE_1GB
PUNCH = FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE
PARALLEL = 4


@dataclass
class Row:
    """One operation, three ways. `unit` says what the numbers are; lower is better unless `higher`."""

    operation: str
    unit: str
    gmemfs: "float | None"
    kernel: "float | None"
    floor: "float | None"
    target: str = ""
    met: "bool | None" = None
    higher: bool = False

    def ratio(self, other: "float | None") -> "float | None":
        """gmemfs's speed relative to `other` (1.0 = as fast; below 1 = slower)."""
        if not self.gmemfs or not other:
            return None
        return self.gmemfs / other if self.higher else other / self.gmemfs


@dataclass
class Scale:
    region: int  # bytes allocated/punched/mapped per operation
    repeat: int  # repetitions of the big operations (median reported)
    requests: int  # repetitions of per-request operations
    files: int  # files for the create/evict and memory cases
    scattered_pages: int  # allocated 4 KiB pages in the sparse 1 TiB file


FULL = Scale(region=GiB, repeat=5, requests=6000, files=1000, scattered_pages=10_000)
QUICK = Scale(region=16 * MiB, repeat=2, requests=50, files=20, scattered_pages=100)


def median_seconds(operation, repeat: int, between=None) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        operation()
        times.append(time.perf_counter() - start)
        if between:
            between()
    return statistics.median(times)


def per_call_us(operations: list, calls: int, rounds: int = 60, daemons: "list | None" = None):
    """Median wall time of one call of each operation, and the daemon's CPU time per call, in us.

    The operations take turns in rounds, so that drift on a busy machine (frequency, the other
    core's load) falls on all of them alike. CPU time (from the daemon's schedstat, per round,
    median over rounds) is steadier than wall time on a 2-core VM: it leaves out the wake-ups.
    """
    samples: list[list[int]] = [[] for _ in operations]
    cpu: list[list[float]] = [[] for _ in operations]
    daemons = daemons or [None] * len(operations)
    per_round = max(calls // rounds, 1)
    for _ in range(rounds):
        for operation, times, used, daemon in zip(operations, samples, cpu, daemons):
            before = daemon.cpu_ns() if daemon else 0
            for _ in range(per_round):
                start = time.perf_counter_ns()
                operation()
                times.append(time.perf_counter_ns() - start)
            if daemon:
                used.append((daemon.cpu_ns() - before) / per_round)
    wall = [statistics.median(times) / 1000 for times in samples]
    return wall, [statistics.median(used) / 1000 if used else None for used in cpu]


# ---- the three ways to get a 2 MiB-page file -------------------------------------------------


@contextlib.contextmanager
def gmem_file(mountpoint: str, size: int, flags: int = HUGE_2M):
    fd = create_guest_memfd(mountpoint, size, flags)
    try:
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def kernel_file(size: int, page_size: int = P2M):
    """What gmemfs does underneath, done directly: a hugetlbfs subpool file."""
    backing = Backing.reserve_subpool(page_size, size)
    try:
        yield backing.fd
    finally:
        backing.close()


def wait_for_reserved(page_size: int, reserved: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while pool_counters(page_size).reserved != reserved and time.monotonic() < deadline:
        time.sleep(0.001)


# ---- operations ------------------------------------------------------------------------------


def allocation_rows(scale: Scale, gmemfs_mnt: str, null_mnt: str, page_size: int, label: str) -> list[Row]:
    region, step = scale.region, page_size
    flags = HUGE_2M if page_size == P2M else HUGE_1G

    def measure(fd: int) -> tuple[float, float, float]:
        def allocate_all():
            fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, region)

        def punch_all():
            fallocate(fd, PUNCH, 0, region)

        def allocate_in_steps():
            for offset in range(0, region, step):
                fallocate(fd, FALLOC_FL_KEEP_SIZE, offset, step)

        def punch_in_steps():
            for offset in range(0, region, step):
                fallocate(fd, PUNCH, offset, step)

        def allocate_in_parallel():
            """PARALLEL threads, each allocating every PARALLEL-th page (a VMM's vCPU threads)."""

            def share(first: int) -> None:
                for offset in range(first * step, region, PARALLEL * step):
                    fallocate(fd, FALLOC_FL_KEEP_SIZE, offset, step)

            threads = [threading.Thread(target=share, args=(index,)) for index in range(PARALLEL)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

        one_call = median_seconds(allocate_all, scale.repeat, between=punch_all)
        in_steps = median_seconds(allocate_in_steps, scale.repeat, between=punch_all)
        punched = median_seconds(punch_in_steps, scale.repeat, between=allocate_all)
        parallel = median_seconds(allocate_in_parallel, scale.repeat, between=punch_all)
        punch_all()
        return one_call * 1000, in_steps * 1000, punched * 1000, parallel * 1000

    with kernel_file(region, page_size) as fd:
        fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, region)  # warm-up: the first touch of new pool pages is slow
        fallocate(fd, PUNCH, 0, region)
        kernel = measure(fd)
    with gmem_file(gmemfs_mnt, region, flags) as fd:
        ours = measure(fd)
    with gmem_file(null_mnt, region, flags) as fd:
        floor = measure(fd)
    size = f"{region // MiB} MiB" if region < GiB else f"{region // GiB} GiB"
    names = [
        f"allocate {size} in one call",
        f"allocate {size} in {label} calls",
        f"punch {size} in {label} calls",
        f"allocate {size} in {label} calls, {PARALLEL} threads",
    ]
    targets = [(">= 0.95 x kernel", 0.95), (">= 0.75 x kernel", 0.75), ("", None), (">= 0.8 x kernel", 0.8)]
    rows = []
    for index, name in enumerate(names):
        row = Row(f"{name} ({label} pages)", "ms", ours[index], kernel[index], floor[index])
        text, minimum = targets[index]
        if page_size == P2M and minimum:
            row.target, row.met = text, row.ratio(row.kernel) >= minimum
        rows.append(row)
    return rows


def create_evict_row(scale: Scale, gmemfs_mnt: str, null_mnt: str) -> Row:
    baseline = pool_counters(P2M).reserved

    def gmemfs_files():
        for _ in range(scale.files):
            os.close(create_guest_memfd(gmemfs_mnt, P2M, HUGE_2M))
        wait_for_reserved(P2M, baseline)  # evicted: the forget has come and gone

    def kernel_files():
        for _ in range(scale.files):
            Backing.reserve_subpool(P2M, P2M).close()

    def null_files():
        for _ in range(scale.files):
            os.close(create_guest_memfd(null_mnt, P2M, HUGE_2M))

    rates = [scale.files / median_seconds(run, scale.repeat) for run in (gmemfs_files, kernel_files, null_files)]
    return Row("create + size + unlink + evict, 2 MiB-page file", "files/s", *rates, higher=True)


def request_rows(scale: Scale, polling: "tuple[Daemon, Daemon]", sleeping: "tuple[Daemon, Daemon]") -> list[Row]:
    """Per-request operations: wall time per call (daemons as mounted: polling for the next request),
    and the daemon's CPU time per call against the floor, from daemons that do not poll (busy_poll=0):
    a polling daemon's CPU time is mostly the wait for the next request, not the work on this one."""
    walls = [wall for _, (wall, _) in _per_request(scale, *polling)]
    rows = []
    for (name, (_, cpu)), wall in zip(_per_request(scale, *sleeping), walls):
        rows.append(Row(name, "us", *wall))
        row = Row(f"  daemon CPU per call: {name.split(' (')[0]}", "us", cpu[0], None, cpu[2], "<= 1.1 x floor")
        row.met = row.gmemfs <= 1.1 * row.floor
        rows.append(row)
    return rows


def _per_request(scale: Scale, gmemfs_daemon: Daemon, null_daemon: Daemon) -> list:
    """[(operation, (wall us per call, daemon CPU us per call))], each as [gmemfs, kernel, floor]."""
    gmemfs_mnt, null_mnt = str(gmemfs_daemon.mountpoint), str(null_daemon.mountpoint)
    measured = []
    with gmem_file(gmemfs_mnt, P2M) as ours, gmem_file(null_mnt, P2M) as floor:
        convert_shared(ours, 0, P2M)  # a linked file for stat, and a file for conversions
        path = os.path.join(gmemfs_mnt, "stat-me")
        null_path = os.path.join(null_mnt, "stat-me")
        for created in (path, null_path):
            os.close(os.open(created, os.O_CREAT | os.O_RDWR))
        kernel_path = "/dev/shm/gmemfs-bench-stat"
        open(kernel_path, "w").close()
        daemons = [gmemfs_daemon, None, null_daemon]
        try:
            stats = per_call_us(
                [lambda p=p: os.stat(p) for p in (path, kernel_path, null_path)], scale.requests, daemons=daemons
            )
        finally:
            os.unlink(kernel_path)
        measured.append(("stat (lookup + getattr, uncached)", stats))

        def round_trip(fd):
            def convert():
                convert_private(fd, 0, P2M)
                convert_shared(fd, 0, P2M)

            return convert

        wall, cpu = per_call_us(
            [round_trip(ours), round_trip(floor)], scale.requests, daemons=[gmemfs_daemon, null_daemon]
        )
        measured.append(("convert 2 MiB shared->private->shared", ([wall[0], None, wall[1]], [cpu[0], None, cpu[1]])))
        with kernel_file(P2M) as direct:
            punches = [lambda fd=fd: fallocate(fd, PUNCH, 0, P2M) for fd in (ours, direct, floor)]
            punch = per_call_us(punches, scale.requests, daemons=daemons)
        measured.append(("punch a 2 MiB hole (nothing allocated)", punch))
    return measured


@contextlib.contextmanager
def trace_reader(mountpoint: str):
    """`gmemfs trace MOUNTPOINT --format=json` draining the stream, subscribed before this yields."""
    reader = subprocess.Popen(
        [sys.executable, "-m", "gmemfs", "trace", mountpoint, "--format=json"], stdout=subprocess.PIPE
    )
    lines = []
    drain = threading.Thread(target=lambda: lines.extend(1 for _ in reader.stdout), daemon=True)
    drain.start()
    try:
        deadline = time.monotonic() + 10
        while not lines and time.monotonic() < deadline:  # a file's creation shows it reads
            os.close(create_guest_memfd(mountpoint, P2M, HUGE_2M))
            time.sleep(0.05)
        if not lines:
            raise RuntimeError("gmemfs trace never read an event")
        yield
    finally:
        reader.terminate()
        reader.wait(timeout=10)
        drain.join(5)


def trace_rows(scale: Scale, gmemfs_daemon: Daemon, traced_daemon: Daemon, null_daemon: Daemon) -> list[Row]:
    """The cost of tracing: the same allocate + punch loop on a mount nobody traces and on one
    whose stream `gmemfs trace` drains (two events per loop), taking turns in rounds."""
    with contextlib.ExitStack() as stack:
        ours = stack.enter_context(gmem_file(str(gmemfs_daemon.mountpoint), P2M))
        traced = stack.enter_context(gmem_file(str(traced_daemon.mountpoint), P2M))
        floor = stack.enter_context(gmem_file(str(null_daemon.mountpoint), P2M))
        direct = stack.enter_context(kernel_file(P2M))
        stack.enter_context(trace_reader(str(traced_daemon.mountpoint)))

        def loop(fd: int):
            def allocate_and_punch():
                fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, P2M)
                fallocate(fd, PUNCH, 0, P2M)

            return allocate_and_punch

        for fd in (ours, traced, floor, direct):  # warm-up: the first touch of new pool pages is slow
            loop(fd)()
        wall, cpu = per_call_us(
            [loop(fd) for fd in (ours, traced, direct, floor)],
            max(scale.requests // 2, 1),
            daemons=[gmemfs_daemon, traced_daemon, None, null_daemon],
        )
    name = "allocate + punch 2 MiB"
    return [
        Row(f"{name}, no trace reader", "us", wall[0], wall[2], wall[3]),
        Row(f"{name}, one trace reader draining", "us", wall[1], wall[2], wall[3]),
        Row(f"  daemon CPU per loop: {name}, no trace reader", "us", cpu[0], None, cpu[3]),
        Row(f"  daemon CPU per loop: {name}, one trace reader", "us", cpu[1], None, cpu[3]),
    ]


def mmap_rows(scale: Scale, gmemfs_mnt: str, null_mnt: str) -> list[Row]:
    region, chunk = scale.region // 4, bytes(MiB)

    def throughput(fd: int, through_fuse: bool) -> tuple[float, float]:
        with mmap.mmap(fd, region, mmap.MAP_SHARED) as view:

            def write():
                for offset in range(0, region, MiB):
                    view[offset : offset + MiB] = chunk
                if through_fuse:
                    view.flush()  # writeback reaches the daemon

            def read():
                if through_fuse:
                    os.posix_fadvise(fd, 0, region, os.POSIX_FADV_DONTNEED)  # drop the cache: fault again
                for offset in range(0, region, MiB):
                    view[offset : offset + MiB]

            write_s = median_seconds(write, scale.repeat)
            read_s = median_seconds(read, scale.repeat)
        return region / MiB / write_s, region / MiB / read_s

    with gmem_file(gmemfs_mnt, region) as fd:
        convert_shared(fd, 0, region)
        ours = throughput(fd, True)
    hugetlb_memfd = os.memfd_create("bench", os.MFD_HUGETLB | os.MFD_HUGE_2MB)
    try:
        os.ftruncate(hugetlb_memfd, region)
        kernel = throughput(hugetlb_memfd, False)
    finally:
        os.close(hugetlb_memfd)
    with gmem_file(null_mnt, region) as fd:
        floor = throughput(fd, True)
    return [
        Row(
            "sequential write to shared memory via mmap",
            "MiB/s",
            ours[0],
            kernel[0],
            floor[0],
            higher=True,
            target=">= 0.25 x kernel",
            met=ours[0] >= 0.25 * kernel[0],
        ),
        Row("sequential read of shared memory via mmap", "MiB/s", ours[1], kernel[1], floor[1], higher=True),
    ]


def memory_rows(scale: Scale, null_rss: float) -> list[Row]:
    rows = []
    daemon = Daemon.gmemfs("pagesize=4K")
    try:
        idle = daemon.rss_mib()
        directory = os.path.join(daemon.mountpoint, "many")
        os.mkdir(directory)
        for index in range(scale.files):
            fd = os.open(os.path.join(directory, f"f{index}"), os.O_CREAT | os.O_RDWR)
            os.ftruncate(fd, P2M)
            os.close(fd)
        rows.append(
            Row(f"daemon RSS with {scale.files} files", "MiB", daemon.rss_mib(), None, null_rss, target="< 64 MiB")
        )
        rows[-1].met = rows[-1].gmemfs < 64
        fd = os.open(os.path.join(daemon.mountpoint, "sparse"), os.O_CREAT | os.O_RDWR)
        try:
            os.ftruncate(fd, 1 << 40)
            pages = random.Random(0).sample(range((1 << 40) // 4096), scale.scattered_pages)
            for page in pages:
                fallocate(fd, FALLOC_FL_KEEP_SIZE, page * 4096, 4096)
            rows.append(
                Row(
                    f"daemon RSS, 1 TiB file with {scale.scattered_pages} scattered pages",
                    "MiB",
                    daemon.rss_mib(),
                    None,
                    null_rss,
                    target="< 64 MiB",
                )
            )
            rows[-1].met = rows[-1].gmemfs < 64
        finally:
            os.close(fd)
        rows.append(Row("daemon RSS, idle (for reference)", "MiB", idle, None, null_rss))
    finally:
        daemon.stop()
    return rows


# ---- report ----------------------------------------------------------------------------------


def run_rows(scale: Scale) -> list[Row]:
    """Trapped calls under `gmemfs run` (its own private mount), without and with --trace, beside
    the same calls made to the kernel directly; no floor (pyfuse3 traps nothing)."""
    calls = max(scale.requests // 10, 20)
    gmemfs_run = [sys.executable, "-m", "gmemfs", "run"]
    kernel = run_calls.under(None, calls)
    untraced = run_calls.under(gmemfs_run, calls)
    traced = run_calls.under([*gmemfs_run, "--trace=/dev/null"], calls)
    rows = []
    for key, label in (
        ("check_extension", "gmemfs run: KVM_CHECK_EXTENSION (answered by the supervisor)"),
        ("create_guest_memfd", "gmemfs run: KVM_CREATE_GUEST_MEMFD 64K + close"),
    ):
        rows.append(Row(label, "us/call", untraced[key], kernel[key], None))
        rows.append(Row(f"{label}, --trace", "us/call", traced[key], kernel[key], None))
    return rows


def machine(pinned: bool) -> dict:
    with open("/proc/cpuinfo") as cpuinfo:
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pinned_to_one_cpu": pinned,
    }


def print_table(rows: list[Row], info: dict, quick: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    def number(value):
        return "n/a" if value is None else f"{value:,.1f}" if value >= 10 else f"{value:.2f}"

    title = f"gmemfs benchmarks{' (quick mode: tiny sizes, not for comparison)' if quick else ''}"
    table = Table(title=title, title_justify="left")
    for column in ("operation", "unit", "gmemfs", "kernel", "pyfuse3 floor", "vs kernel", "vs floor", "target"):
        table.add_column(column, justify="left" if column in ("operation", "target") else "right")
    for row in rows:
        mark = "" if row.met is None else (" ok" if row.met else " MISSED")
        table.add_row(
            row.operation,
            row.unit,
            number(row.gmemfs),
            number(row.kernel),
            number(row.floor),
            number(row.ratio(row.kernel)),
            number(row.ratio(row.floor)),
            row.target + mark,
        )
    console = Console(width=160)
    console.print(table)
    pinning = "all processes on CPU 0" if info["pinned_to_one_cpu"] else "not pinned"
    console.print(
        f"Machine: {info['cpu']}, {info['cores']} cores, Linux {info['kernel']}, Python {info['python']}, {pinning}. "
        "Medians; per-request operations alternate between the filesystems in rounds. 'vs' columns are gmemfs's "
        "speed relative to the other (1.00 = as fast). Huge pages were allocated and punched once before timing "
        "(warm-up)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check that the benchmark runs")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="run the benchmark and every daemon on CPU 0 (no cross-core wake-ups; on the 2-core machine "
        "the README's table comes from, this did not make round trips faster or steadier)",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("benchmarks: run as root (they size huge page pools and mount filesystems)")
    scale = QUICK if args.quick else FULL
    if args.pin:
        os.sched_setaffinity(0, {0})
        daemons_module.PINNED_CPU = 0
    pools = {size: pool_counters(size).total for size in (P2M, P1G)}
    daemons = []
    rows: list[Row] = []
    try:
        resize_pool(P2M, pools[P2M] + scale.region // P2M + 8)
        gmemfs_daemon = Daemon.gmemfs("pagesize=2M,cache_timeout=0")
        daemons.append(gmemfs_daemon)
        null_daemon = Daemon.nullfs(0)
        daemons.append(null_daemon)
        sleeping = (Daemon.gmemfs("pagesize=2M,cache_timeout=0,busy_poll=0"), Daemon.nullfs(0, busy_poll_us=0))
        daemons += sleeping
        rows += allocation_rows(scale, gmemfs_daemon.mountpoint, null_daemon.mountpoint, P2M, "2 MiB")
        rows.append(create_evict_row(scale, gmemfs_daemon.mountpoint, null_daemon.mountpoint))
        rows += request_rows(scale, (gmemfs_daemon, null_daemon), sleeping)
        traced_daemon = Daemon.gmemfs("pagesize=2M,cache_timeout=0")
        daemons.append(traced_daemon)
        rows += trace_rows(scale, gmemfs_daemon, traced_daemon, null_daemon)
        rows += mmap_rows(scale, gmemfs_daemon.mountpoint, null_daemon.mountpoint)
        if not args.quick and resize_pool(P1G, pools[P1G] + 1) > pools[P1G]:
            one_page = Scale(region=P1G, repeat=3, requests=0, files=0, scattered_pages=0)
            one_gib = allocation_rows(one_page, gmemfs_daemon.mountpoint, null_daemon.mountpoint, P1G, "1 GiB")
            rows += [one_gib[0], one_gib[2]]  # with one page, "in steps" is the one call again (and no threads)
        rows += memory_rows(scale, null_daemon.rss_mib())
        rows += run_rows(scale)
    finally:
        for daemon in daemons:
            daemon.stop()
        for size, total in pools.items():
            set_pool_pages(size, total)
    info = machine(pinned=args.pin)
    if args.json:
        print(json.dumps({"machine": info, "quick": args.quick, "rows": [asdict(row) for row in rows]}, indent=2))
    else:
        print_table(rows, info, args.quick)


if __name__ == "__main__":
    main()
