"""`gmemfs run --trace`: the program's trapped calls in words, merged with its daemon's events.

The design of the stream is gmemfs.trace's. Here: the words for a trapped call (read from the
program's memory before it is answered, only while tracing), the event made when it returns,
and RunTrace, which follows the daemon's trace file and prints both streams in one order.
"""

import errno
import os
import select
import struct
import sys
import time
from typing import TextIO

import trio

from ..base.printable import printable
from ..kernel.rules import GmemError
from ..kernel.uapi import (
    KVM_CHECK_EXTENSION,
    KVM_CREATE_GUEST_MEMFD,
    KVM_CREATE_GUEST_MEMFD_PAGE_ORDER_STRUCT,
    KVM_CREATE_GUEST_MEMFD_STRUCT,
    KVM_CREATE_VM,
    KVM_GMEM_CONVERT_STRUCT,
    KVM_MEMORY_ATTRIBUTES_STRUCT,
    KVM_SET_MEMORY_ATTRIBUTES,
    KVM_SET_MEMORY_ATTRIBUTES2,
    KVM_SET_MEMORY_ATTRIBUTES2_STRUCT,
    KVM_SET_USER_MEMORY_REGION,
    KVM_SET_USER_MEMORY_REGION2,
    KVM_USER_MEMORY_REGION2_STRUCT,
    KVM_USER_MEMORY_REGION_STRUCT,
    TRACE_FILE,
    AbiProfile,
    ConversionRequest,
)
from ..trace import decode
from ..trace.events import TraceEvent
from ..trace.merge import DEFAULT_HOLD, LineDecoder, TraceMerger
from .seccomp import Notification
from .tracee import read_memory, thread_group

SYS_MMAP = 9
FLUSH_INTERVAL = 0.05  # seconds between looks for events old enough to print
STREAM_EVENTS = frozenset({"lost", "daemon-ended"})
POLL_TIMEOUT_MS = 250  # a poll of the daemon's stream returns this often, so that it can end
STRUCTS = {
    KVM_CREATE_GUEST_MEMFD: KVM_CREATE_GUEST_MEMFD_STRUCT,
    KVM_SET_USER_MEMORY_REGION: KVM_USER_MEMORY_REGION_STRUCT,
    KVM_SET_USER_MEMORY_REGION2: KVM_USER_MEMORY_REGION2_STRUCT,
    KVM_SET_MEMORY_ATTRIBUTES: KVM_MEMORY_ATTRIBUTES_STRUCT,
}


def call_words(call: Notification, profile: AbiProfile) -> "tuple[str, str]":
    """(what, args) of a trapped call, its struct read from the program as it stands now."""
    if call.nr == SYS_MMAP:
        _address, length, prot, flags, fd, offset = call.args
        return "mmap", f"fd={fd & 0xFFFFFFFF} len={decode.size_words(length)} prot={prot:#x} flags={flags:#x}"
    request = call.request
    what = decode.ioctl_name(request)
    if request == KVM_CREATE_VM:
        return what, f"type={decode.vm_type(call.argument & 0xFFFFFFFF)}"
    if request == KVM_CHECK_EXTENSION:
        return what, decode.capability_name(call.argument, profile)
    try:
        if request in profile.conversion_ioctls:
            attributes2 = request == KVM_SET_MEMORY_ATTRIBUTES2
            layout = KVM_SET_MEMORY_ATTRIBUTES2_STRUCT if attributes2 else KVM_GMEM_CONVERT_STRUCT
            data = read_memory(call.pid, call.argument, struct.calcsize(layout))
            return what, f"fd={call.fd} " + decode.conversion_args(ConversionRequest.decode(request, data))
        layout = STRUCTS.get(request)
        if layout is None:
            return what, f"fd={call.fd} arg={call.argument:#x}"
        data = read_memory(call.pid, call.argument, struct.calcsize(layout))
    except OSError:
        return what, f"fd={call.fd} arg={call.argument:#x} (unreadable)"
    if request == KVM_CREATE_GUEST_MEMFD:
        size, flags, page_order, *_ = struct.unpack(KVM_CREATE_GUEST_MEMFD_PAGE_ORDER_STRUCT, data)
        return what, decode.create_guest_memfd_args(size, flags, profile, page_order if profile.page_order else 0)
    if request == KVM_SET_MEMORY_ATTRIBUTES:
        return what, decode.memory_attributes_args(data)
    return what, decode.memory_region_args(request, data)


class KernelAnswers:
    """The call went on into the kernel, which answers it as it stands (we do not see how)."""


KERNEL_RAN = KernelAnswers()


def call_event(
    call: Notification,
    words: "tuple[str, str]",
    result: "int | KernelAnswers | None",
    error: "BaseException | None",
    started: float,
    profile: AbiProfile,
) -> TraceEvent:
    """The event of a trapped call that returned: result a value, -errno, KERNEL_RAN, or None
    when the thread went away before it could be given one."""
    what, args = words
    errno_value, rule, function = 0, "", ""
    if isinstance(error, GmemError):
        errno_value, rule, function = error.errno, error.rule, getattr(error, "function", "")
    elif isinstance(error, OSError):
        errno_value, rule = error.errno or errno.EIO, error.strerror or ""
    if result is KERNEL_RAN:
        answer = "the kernel's answer"
    elif result is None:
        answer = "none: the thread went away"
    elif result < 0:
        errno_value = errno_value or -result
        answer = errno.errorcode.get(errno_value, str(errno_value))
    elif call.nr != SYS_MMAP and call.request in (KVM_CREATE_VM, KVM_CREATE_GUEST_MEMFD):
        answer = f"fd {result}"
    elif call.nr != SYS_MMAP and call.request == KVM_CHECK_EXTENSION:
        answer = decode.capability_answer(call.argument, result, profile)
    else:
        answer = str(result)
    try:
        pid = thread_group(call.pid)
    except OSError:
        pid = call.pid
    return TraceEvent(
        time=time.monotonic(),
        source="run",
        what=what,
        pid=pid,
        tid=call.pid,
        args=args,
        result=answer,
        duration=time.monotonic() - started,
        errno=errno_value,
        rule=rule,
        function=function,
    )


class RunTrace:
    """One run's trace: the supervisor's events and the daemon's, printed in time order.

    `files`: with --mount, the mount serves others too; only the daemon's events about the
    inodes this run created (and those that name no file) are the program's."""

    def __init__(self, output: TextIO, json_lines: bool, hold: float = DEFAULT_HOLD) -> None:
        self.output = output
        self.json_lines = json_lines
        self.merger = TraceMerger(hold)
        self.start = time.monotonic()
        self.files: set[int] | None = None  # None: every daemon event is the program's
        self.ended = trio.Event()  # the daemon's stream has ended
        self.output_failed = False

    def emit(self, event: TraceEvent) -> None:
        self.merger.add(event)

    def open_daemon_stream(self, mount_path: str) -> int:
        """The daemon's trace file, opened before the program starts so no event is missed."""
        path = os.path.join(mount_path, os.fsdecode(TRACE_FILE))
        return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)

    async def follow(self, fd: int) -> None:
        """Read the daemon's events until its stream ends, then say so.

        Read only once poll(2) says there is something: a read the daemon holds cannot be
        interrupted (pyfuse3 gives read no request context), so a waiting read would keep even
        a killed run from exiting until the daemon's next event. poll can be left."""
        lines = LineDecoder()
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        ended = "the daemon's trace ended"
        try:
            while True:
                if not await trio.to_thread.run_sync(poller.poll, POLL_TIMEOUT_MS, abandon_on_cancel=True):
                    continue
                try:
                    data = os.read(fd, 1 << 16)
                except BlockingIOError:
                    continue
                if not data:
                    break
                for event in lines.feed(data):
                    self.emit(event)
        except OSError as error:
            ended = f"the daemon's trace ended: {error.strerror}"
        except ValueError as error:
            ended = f"the daemon's trace could not be read: {error}"
        self.emit(TraceEvent(time=time.monotonic(), source="daemon", what="daemon-ended", args=ended))
        self.ended.set()

    async def print_as_they_age(self) -> None:
        while True:
            self.print(self.merger.ready(time.monotonic()))
            await trio.sleep(FLUSH_INTERVAL)

    def finish(self) -> None:
        self.print(self.merger.drain())

    def print(self, events: "list[TraceEvent]") -> None:
        """Write the program's events; once the output fails (a pipe whose reader left, a full
        disk), the trace stops and the run goes on: PROGRAM must not pay for its trace."""
        lines = [self.line(event) for event in events if self.is_the_programs(event)]
        if not lines or self.output_failed:
            return
        try:
            self.output.write("".join(lines))
            self.output.flush()
        except (OSError, ValueError) as error:  # ValueError: the file is closed
            self.output_failed = True
            print(f"gmemfs run: --trace stopped: {error}", file=sys.stderr)

    def line(self, event: TraceEvent) -> str:
        return (event.to_json() if self.json_lines else printable(event.text(self.start))) + "\n"

    def is_the_programs(self, event: TraceEvent) -> bool:
        """With --mount: the daemon's events about files this run created, and those about the
        stream itself (lost events, its end); another user's are none of the program's."""
        if event.source != "daemon" or self.files is None or event.what in STREAM_EVENTS:
            return True
        ino = event.file.partition(":")[0]
        return ino.isdigit() and int(ino) in self.files


def open_output(target: str) -> TextIO:
    """--trace's FILE ('-': standard error), line-buffered text."""
    if target == "-":
        return sys.stderr
    return open(target, "w", buffering=1)  # closed at the run's end
