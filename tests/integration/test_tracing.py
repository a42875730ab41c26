"""gmemfs trace: the daemon's events, read by root from a real mount as they happen."""

import ctypes
import errno
import fcntl
import mmap
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from support.commands import as_nobody, assert_one_line_error, run_gmemfs
from support.files import open_gmem
from support.pools import PAGE_2M
from support.trace import TraceCommand, of_file
from support.users import gmemfs_for_anyone

from gmemfs import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, convert_private, convert_shared, fallocate
from gmemfs.kernel.uapi import KVM_GMEM_CONVERT_SHARED, TRACE_FILE
from gmemfs.trace.channel import DEFAULT_CAPACITY
from gmemfs.trace.events import TraceEvent

PUNCH = FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE
SYSTEM_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


@pytest.fixture
def traced(start_gmemfs):
    """A 2 MiB mount (the default ABI, rfc-v1, converts) and `gmemfs trace --format=json` reading it."""
    daemon = start_gmemfs("-o", "pagesize=2M")
    trace = TraceCommand(daemon.mountpoint)
    yield daemon, trace
    trace.stop()


def test_a_hugetlb_file_s_life_is_traced_in_order_with_exact_pages(traced):
    daemon, trace = traced
    fd = open_gmem(daemon.mountpoint, "vm", size=4 * PAGE_2M)
    try:
        fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 2 * PAGE_2M)
        fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 3 * PAGE_2M)  # one more page: the first two stay
        fallocate(fd, PUNCH, 0, PAGE_2M)
        fallocate(fd, PUNCH, PAGE_2M + 4096, 8192)  # inside a huge page: zeroed, nothing freed
        convert_shared(fd, 0, PAGE_2M)
        convert_private(fd, 0, PAGE_2M)
        with pytest.raises(OSError) as refused:
            fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 5 * PAGE_2M)  # past the size
        assert refused.value.errno == errno.EINVAL
    finally:
        os.close(fd)
    os.unlink(daemon.mountpoint / "vm")
    assert trace.wait_for(lambda line: '"what":"evict"' in line)
    events = of_file(trace.events(), "vm")
    assert [event.what for event in events] == [
        "create",
        "size",
        "fallocate",
        "fallocate",
        "fallocate",
        "fallocate",
        "convert_shared",
        "convert_private",
        "fallocate",
        "evict",
    ]
    create, size, first, second, punch, zeroed, shared, private, bad, evict = events
    assert create.args.startswith("name=vm flags=HUGETLB|2M") and create.detail["abi"] == "rfc-v1"
    assert size.args == "size=8M flags=HUGETLB|2M" and size.detail["reserved_pages"] == 4
    assert size.detail["page_size"] == PAGE_2M and set(size.detail["pool"]) == {"total", "free", "reserved", "surplus"}
    assert (first.detail["pages_allocated"], second.detail["pages_allocated"]) == (2, 1)
    assert first.args == "mode=KEEP_SIZE range=0x0+4M"
    assert (punch.detail["pages_freed"], zeroed.detail["pages_freed"]) == (1, 0)
    assert punch.args == "mode=KEEP_SIZE|PUNCH_HOLE range=0x0+2M"
    assert (shared.args, shared.result) == ("range=0x0+2M to shared", "0")
    assert (private.args, private.result) == ("range=0x0+2M to private", "0")
    assert (bad.errno, bad.result, bad.args) == (errno.EINVAL, "EINVAL", "mode=KEEP_SIZE range=0x0+10M")
    assert bad.rule
    assert evict.args == "at=unlink" and evict.file.endswith("(unlinked) vm")
    assert (evict.detail["pages_freed"], evict.detail["reserved_pages_released"]) == (2, 2)  # 2 of 4 in use
    assert all(event.source == "daemon" and event.file.split(":")[0].isdigit() for event in events)
    assert all((event.pid, event.tid) == (os.getpid(), threading.get_native_id()) for event in events[:-1])
    assert [event.time for event in events] == sorted(event.time for event in events)


def test_a_4k_file_counts_4k_pages_and_reserves_none(traced):
    daemon, trace = traced
    fd = open_gmem(daemon.mountpoint, "small", size=16384, flags=0)
    try:
        fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 8192)
        fallocate(fd, PUNCH, 4096, 8192)
    finally:
        os.close(fd)
    os.unlink(daemon.mountpoint / "small")
    assert trace.wait_for(lambda line: '"what":"evict"' in line)
    events = of_file(trace.events(), "small")
    assert [event.what for event in events] == ["create", "set_flags", "size", "fallocate", "fallocate", "evict"]
    _, flags, size, allocate, punch, evict = events
    assert flags.args == "flags=0"
    assert (size.args, size.detail) == ("size=16K flags=0", {"page_size": 4096, "reserved_pages": 0})
    assert (allocate.detail["pages_allocated"], punch.detail["pages_freed"]) == (2, 1)
    assert (evict.detail["pages_freed"], evict.detail["reserved_pages_released"]) == (1, 0)


def test_the_caller_is_the_thread_and_its_process(traced):
    """FUSE names the calling thread (its in.h.pid is the kernel's task pid): tid, and pid is its process."""
    daemon, trace = traced
    fd = open_gmem(daemon.mountpoint, "threaded", size=PAGE_2M)
    threads = []

    def allocate():
        threads.append(threading.get_native_id())
        fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, PAGE_2M)

    try:
        worker = threading.Thread(target=allocate)
        worker.start()
        worker.join()
    finally:
        os.close(fd)
    os.unlink(daemon.mountpoint / "threaded")
    assert trace.wait_for(lambda line: '"what":"evict"' in line)
    (allocated,) = [event for event in of_file(trace.events(), "threaded") if event.what == "fallocate"]
    assert (allocated.pid, allocated.tid) == (os.getpid(), threads[0]) and threads[0] != os.getpid()


def test_text_is_one_line_per_event_and_ctrl_c_exits_0(start_gmemfs):
    daemon = start_gmemfs("-o", "pagesize=2M")
    as_json, as_text = TraceCommand(daemon.mountpoint), TraceCommand(daemon.mountpoint, "text")
    fd = open_gmem(daemon.mountpoint, "vm", size=PAGE_2M)
    fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, PAGE_2M)
    os.close(fd)
    os.unlink(daemon.mountpoint / "vm")
    for trace in (as_json, as_text):
        assert trace.wait_for(lambda line: "evict" in line)
    (status, stderr), _ = as_text.stop(signal.SIGINT), as_json.stop()
    assert status == 0 and stderr == ""
    events = of_file(as_json.events(), "vm")
    lines = [line for line in as_text.lines if "vm" in line and ".probe-" not in line]
    assert len(lines) == len(events) == 4
    for line, event in zip(lines, events, strict=True):
        assert line.split()[1:4] == ["daemon", str(event.pid), event.what], line
    assert "-> 0 [pages_allocated=1 page_size=2097152]" in lines[2]


def test_two_readers_each_get_every_event(start_gmemfs):
    daemon = start_gmemfs("-o", "pagesize=2M")
    first, second = TraceCommand(daemon.mountpoint), TraceCommand(daemon.mountpoint)
    fd = open_gmem(daemon.mountpoint, "vm", size=PAGE_2M)
    for _ in range(20):
        fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, PAGE_2M)
        fallocate(fd, PUNCH, 0, PAGE_2M)
    os.close(fd)
    os.unlink(daemon.mountpoint / "vm")
    for trace in (first, second):
        assert trace.wait_for(lambda line: "evict" in line)
        trace.stop()
    assert len(of_file(first.events(), "vm")) == 2 + 40 + 1
    assert of_file(first.events(), "vm") == of_file(second.events(), "vm")


def test_a_reader_that_does_not_read_loses_the_oldest_and_is_told(start_gmemfs):
    daemon = start_gmemfs("-o", "pagesize=2M")
    fd = open_gmem(daemon.mountpoint, "vm", size=PAGE_2M)
    trace = os.open(daemon.mountpoint / os.fsdecode(TRACE_FILE), os.O_RDONLY | os.O_NONBLOCK)
    refused = DEFAULT_CAPACITY + 100
    try:
        for _ in range(refused):
            with pytest.raises(OSError):
                fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 2 * PAGE_2M)  # past the size
        data = b""
        while True:
            try:
                data += os.read(trace, 1 << 20)
            except BlockingIOError:
                break
    finally:
        os.close(trace)
        os.close(fd)
    events = [TraceEvent.from_json(line) for line in data.splitlines()]
    assert events[0].what == "lost" and events[0].detail == {"lost": 100}
    assert len(events) == 1 + DEFAULT_CAPACITY
    assert all(event.what == "fallocate" and event.errno == errno.EINVAL for event in events[1:])


@pytest.mark.parametrize("death", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "killed"])
def test_the_daemon_ending_ends_gmemfs_trace_with_status_0(start_gmemfs, death):
    daemon = start_gmemfs("-o", "pagesize=2M")
    trace = TraceCommand(daemon.mountpoint)
    os.kill(daemon.pid, death)
    status, stderr = trace.finish()
    assert (status, stderr) == (0, "")
    assert TraceEvent.from_json(trace.lines[-1]).what == "daemon-ended"
    daemon.process.wait(timeout=10)


def test_a_dead_mount_a_foreign_one_and_a_user_are_each_one_line(start_gmemfs, tmp_path):
    daemon = start_gmemfs()
    assert_one_line_error(run_gmemfs("trace", str(tmp_path)), "is not a gmemfs mount", command="trace")
    with gmemfs_for_anyone() as gmemfs:
        assert_one_line_error(as_nobody(*gmemfs, "trace", str(daemon.mountpoint)), "only root", command="trace")
    daemon.kill()
    assert_one_line_error(
        run_gmemfs("trace", str(daemon.mountpoint)), "Transport endpoint is not connected", command="trace"
    )


def raw_mmap(fd: int, flags: int) -> None:
    """mmap(2) itself: Python's refuses a mapping longer than the file's size (0) before asking."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    address = libc.mmap(None, 4096, mmap.PROT_READ, flags, fd, 0)
    if address in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "mmap")
    libc.munmap(ctypes.c_void_p(address), 4096)


# Who may reach the trace file: root, to read it, and nothing else.

STAT_AS_NOBODY = """
import os, sys
try:
    os.stat(sys.argv[1])
except OSError as error:
    print(error.errno)
else:
    print(0)
"""


def nobody_errno(code: str, *args: str) -> int:
    result = as_nobody(SYSTEM_PYTHON, "-c", code, *args)
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


def test_no_one_but_root_finds_it_even_right_after_root_did(start_gmemfs):
    daemon = start_gmemfs("-o", "allow_other,mode=1777")
    path = daemon.mountpoint / os.fsdecode(TRACE_FILE)
    assert os.stat(path).st_mode == 0o100400 and os.stat(path).st_uid == 0  # root: looked up, so cached
    assert nobody_errno(STAT_AS_NOBODY, str(path)) == errno.ENOENT
    with open(path, "rb", buffering=0):  # even while root has it open
        assert nobody_errno(STAT_AS_NOBODY, str(path)) == errno.ENOENT
    assert os.fsdecode(TRACE_FILE) not in os.listdir(daemon.mountpoint)
    assert nobody_errno(STAT_AS_NOBODY.replace("stat", "mkdir"), str(path)) == errno.EPERM  # nor take the name


def read_of_a_fresh_reader(path) -> bytes:
    """A read with nothing to read: a new reader's, as the refusals before it are events too."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


def test_root_can_only_read_it(start_gmemfs):
    daemon = start_gmemfs("-o", "pagesize=2M")
    path = daemon.mountpoint / os.fsdecode(TRACE_FILE)
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC):
        with pytest.raises(PermissionError):
            os.open(path, flags)
    refusals = {
        "chmod": (lambda: os.chmod(path, 0o644), errno.EPERM),
        "truncate": (lambda: os.truncate(path, 4096), errno.EPERM),
        "unlink": (lambda: os.unlink(path), errno.EPERM),
        "rename away": (lambda: os.rename(path, daemon.mountpoint / "mine"), errno.EPERM),
        "link": (lambda: os.link(path, daemon.mountpoint / "mine"), errno.EPERM),
        "setxattr": (lambda: os.setxattr(path, "user.gmem.flags", b"0"), errno.EOPNOTSUPP),
    }
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        refusals["fallocate"] = (lambda: fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 4096), errno.EBADF)
        refusals["ioctl"] = (lambda: fcntl.ioctl(fd, KVM_GMEM_CONVERT_SHARED, bytearray(64)), errno.ENOTTY)
        refusals["mmap"] = (lambda: raw_mmap(fd, mmap.MAP_SHARED), errno.ENODEV)
        refusals["read with nothing"] = (lambda: read_of_a_fresh_reader(path), errno.EAGAIN)
        for name, (attempt, expected) in refusals.items():
            with pytest.raises(OSError) as refused:
                attempt()
            assert refused.value.errno == expected, name
    finally:
        os.close(fd)
    mine = open_gmem(daemon.mountpoint, "mine")
    os.close(mine)
    with pytest.raises(PermissionError):
        os.rename(daemon.mountpoint / "mine", path)
    assert os.listdir(daemon.mountpoint) == ["mine"]
    assert os.statvfs(daemon.mountpoint).f_files - os.statvfs(daemon.mountpoint).f_ffree == 1


def test_a_trace_reader_s_eagain_is_no_event(start_gmemfs):
    """A reader finding nothing is how it waits, not a refusal: another reader sees no event of it."""
    daemon = start_gmemfs("-o", "pagesize=2M")
    path = daemon.mountpoint / os.fsdecode(TRACE_FILE)
    watcher = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        for _ in range(3):
            with pytest.raises(BlockingIOError):
                read_of_a_fresh_reader(path)
        with pytest.raises(BlockingIOError):
            os.read(watcher, 65536)
    finally:
        os.close(watcher)


def waiting_reader(path) -> subprocess.Popen:
    """`cat` of the trace file, its read(2) waiting in the daemon (no event comes)."""
    reader = subprocess.Popen(["cat", str(path)], stdout=subprocess.DEVNULL)
    assert wait_for_wchan(reader.pid, "request_wait_answer"), "cat's read never reached the daemon"
    return reader


def wait_for_wchan(pid: int, function: str, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/wchan") as wchan:
            if wchan.read() == function:
                return True
        time.sleep(0.01)
    return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl_c", "term"])
def test_a_waiting_read_ends_when_its_caller_is_signalled(start_gmemfs, sig):
    """^C on `cat .gmemfs-trace` ends cat at once: the kernel waits for the answer to a READ that
    reached the daemon (uninterruptibly, for a fatal signal), so the daemon must answer it."""
    daemon = start_gmemfs("-o", "pagesize=2M")
    reader = waiting_reader(daemon.mountpoint / os.fsdecode(TRACE_FILE))
    try:
        reader.send_signal(sig)
        assert reader.wait(timeout=2) == -sig
    finally:
        if reader.poll() is None:
            reader.kill()
            daemon.stop()  # answers the waiting read (its end): only then can cat die
            reader.wait(timeout=10)


def test_a_waiting_read_outlives_a_stop_and_continue(start_gmemfs):
    """^Z then fg (or strace -p's SIGSTOP) must not fail a waiting read of the trace file: the stop
    makes the kernel send FUSE_INTERRUPT too, and an EINTR answer is what read(2) returns once
    the reader continues (coreutils' cat retries EINTR; a plain read loop does not). Before
    read_takes_context the read just went on waiting."""
    daemon = start_gmemfs("-o", "pagesize=2M")
    once = (  # one read(2), as a C program that does not retry EINTR makes it
        "import ctypes, os, sys; libc = ctypes.CDLL(None, use_errno=True); fd = os.open(sys.argv[1], os.O_RDONLY);"
        "n = libc.read(fd, ctypes.create_string_buffer(4096), 4096); sys.exit(ctypes.get_errno() if n < 0 else 0)"
    )
    path = daemon.mountpoint / os.fsdecode(TRACE_FILE)
    reader = subprocess.Popen([sys.executable, "-c", once, str(path)])
    assert wait_for_wchan(reader.pid, "request_wait_answer"), "the read never reached the daemon"
    try:
        reader.send_signal(signal.SIGSTOP)
        time.sleep(0.5)  # the interrupt reaches the daemon (checked every 50 ms)
        reader.send_signal(signal.SIGCONT)
        time.sleep(0.5)
        assert reader.poll() is None, f"the read ended (errno {reader.returncode}) after a stop and continue"
    finally:
        reader.kill()
        if not wait_for_exit(reader, 2):
            daemon.stop()
            reader.wait(timeout=10)


def wait_for_exit(process, timeout: float) -> bool:
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


def test_a_waiting_read_fails_with_eintr_for_a_caught_signal(start_gmemfs):
    """A caller with a signal handler gets EINTR (libc's read, which Python's os.read would retry)."""
    daemon = start_gmemfs("-o", "pagesize=2M")
    path = daemon.mountpoint / os.fsdecode(TRACE_FILE)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.read.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
    libc.read.restype = ctypes.c_ssize_t
    fd = os.open(path, os.O_RDONLY)
    results = []

    def read() -> None:
        buffer = ctypes.create_string_buffer(4096)
        results.append(ctypes.get_errno() if libc.read(fd, buffer, 4096) < 0 else 0)

    previous = signal.signal(signal.SIGUSR1, lambda *_: None)
    caller = threading.Thread(target=read)
    try:
        caller.start()
        assert wait_for_wchan(caller.native_id, "request_wait_answer")
        signal.pthread_kill(caller.ident, signal.SIGUSR1)
        caller.join(2)
        assert results == [errno.EINTR]
    finally:
        if caller.is_alive():
            os.close(open_gmem(daemon.mountpoint, "an-event"))  # the event answers the read
            caller.join(10)
        signal.signal(signal.SIGUSR1, previous)
        os.close(fd)


def test_a_blocking_read_waits_for_the_next_event(start_gmemfs):
    """Without O_NONBLOCK a read waits (the loop serves on meanwhile) and returns whole lines."""
    daemon = start_gmemfs("-o", "pagesize=2M")
    path = daemon.mountpoint / os.fsdecode(TRACE_FILE)
    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys; print(os.read(os.open(sys.argv[1], os.O_RDONLY), 65536).decode())",
            path,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    for number in range(500):  # until the reader has opened and read (each file is served meanwhile)
        os.close(open_gmem(daemon.mountpoint, f"vm{number}"))
        if reader.poll() is not None:
            break
        time.sleep(0.01)
    output, _ = reader.communicate(timeout=10)
    assert TraceEvent.from_json(output.splitlines()[0]).what == "create"
