"""gmemfs run's words for a trapped call, read from the caller's memory, and the event of its answer."""

import ctypes
import errno
import io
import os
import struct

from gmemfs.kernel.rules import GmemError
from gmemfs.kernel.uapi import (
    KVM_CAP_GUEST_MEMFD_FLAGS,
    KVM_CHECK_EXTENSION,
    KVM_CREATE_GUEST_MEMFD,
    KVM_CREATE_GUEST_MEMFD_STRUCT,
    KVM_CREATE_VM,
    KVM_GMEM_CONVERT_PRIVATE,
    KVM_GMEM_CONVERT_STRUCT,
    KVM_MEM_GUEST_MEMFD,
    KVM_SET_USER_MEMORY_REGION2,
    KVM_USER_MEMORY_REGION2_STRUCT,
    KVM_X86_SW_PROTECTED_VM,
    RFC_V2,
    UPSTREAM,
)
from gmemfs.run.seccomp import Notification
from gmemfs.run.tracing import KERNEL_RAN, RunTrace, call_event, call_words
from gmemfs.trace.events import TraceEvent

SYS_IOCTL = 16
SYS_MMAP = 9


def ioctl_of_ours(request: int, argument: int, fd: int = 7) -> Notification:
    """A trapped ioctl as if this very thread had made it: its struct is read from our memory."""
    return Notification(id=1, pid=os.getpid(), nr=SYS_IOCTL, args=(fd, request, argument, 0, 0, 0))


def struct_in_memory(layout: str, *values) -> ctypes.Array:
    return ctypes.create_string_buffer(struct.pack(layout, *values))


def test_create_guest_memfd_in_words_from_the_callers_struct():
    data = struct_in_memory(KVM_CREATE_GUEST_MEMFD_STRUCT, 1 << 30, UPSTREAM.mmap, *[0] * 6)
    what, args = call_words(ioctl_of_ours(KVM_CREATE_GUEST_MEMFD, ctypes.addressof(data)), UPSTREAM)
    assert (what, args) == ("KVM_CREATE_GUEST_MEMFD", "size=1G flags=MMAP")


def test_memory_region2_in_words():
    data = struct_in_memory(
        KVM_USER_MEMORY_REGION2_STRUCT, 1, KVM_MEM_GUEST_MEMFD, 1 << 32, 2 << 20, 0, 0, 7, 0, *[0] * 14
    )
    _what, args = call_words(ioctl_of_ours(KVM_SET_USER_MEMORY_REGION2, ctypes.addressof(data)), UPSTREAM)
    assert args == "slot=1 gpa=0x100000000 size=2M uaddr=0x0 flags=GUEST_MEMFD gmem=7+0x0"


def test_conversion_in_words():
    data = struct_in_memory(KVM_GMEM_CONVERT_STRUCT, 0x200000, 0x1000, *[0] * 6)
    what, args = call_words(ioctl_of_ours(KVM_GMEM_CONVERT_PRIVATE, ctypes.addressof(data), fd=5), RFC_V2)
    assert (what, args) == ("KVM_GMEM_CONVERT_PRIVATE", "fd=5 range=0x200000+4K to private")


def test_a_struct_the_caller_cannot_read_is_said_so_not_a_failure():
    _what, args = call_words(ioctl_of_ours(KVM_CREATE_GUEST_MEMFD, 8), UPSTREAM)
    assert args.endswith("(unreadable)")


def test_vm_types_and_capabilities_in_words():
    assert (
        call_words(ioctl_of_ours(KVM_CREATE_VM, KVM_X86_SW_PROTECTED_VM), UPSTREAM)[1] == "type=KVM_X86_SW_PROTECTED_VM"
    )
    call = ioctl_of_ours(KVM_CHECK_EXTENSION, KVM_CAP_GUEST_MEMFD_FLAGS)
    assert call_words(call, UPSTREAM) == ("KVM_CHECK_EXTENSION", "KVM_CAP_GUEST_MEMFD_FLAGS")
    event = call_event(call, ("KVM_CHECK_EXTENSION", "KVM_CAP_GUEST_MEMFD_FLAGS"), UPSTREAM.mmap, None, 0.0, UPSTREAM)
    assert event.result == "MMAP"


def test_an_fd_result_and_the_callers_pid_and_thread():
    event = call_event(ioctl_of_ours(KVM_CREATE_VM, 0), ("KVM_CREATE_VM", "type=0"), 9, None, 0.0, UPSTREAM)
    assert (event.result, event.pid, event.tid, event.source) == ("fd 9", os.getpid(), os.getpid(), "run")
    assert event.duration is not None and event.duration >= 0


def test_a_refusal_carries_errno_rule_and_function():
    refusal = GmemError(errno.EINVAL, "size 0x1000 is not a multiple of 2M", function="kvm_gmem_create")
    event = call_event(
        ioctl_of_ours(KVM_CREATE_GUEST_MEMFD, 0), ("KVM_CREATE_GUEST_MEMFD", ""), -errno.EINVAL, refusal, 0.0, UPSTREAM
    )
    assert (event.errno, event.result, event.rule, event.function) == (
        errno.EINVAL,
        "EINVAL",
        "size 0x1000 is not a multiple of 2M",
        "kvm_gmem_create",
    )
    assert "-> EINVAL: size 0x1000 is not a multiple of 2M (kvm_gmem_create)" in event.text(0.0)


def test_what_the_kernel_answered_and_a_thread_that_went_away():
    call = ioctl_of_ours(KVM_CREATE_VM, 0)
    assert call_event(call, ("KVM_CREATE_VM", ""), KERNEL_RAN, None, 0.0, UPSTREAM).result == "the kernel's answer"
    assert call_event(call, ("KVM_CREATE_VM", ""), None, None, 0.0, UPSTREAM).result.startswith("none")


def test_a_shared_mounts_daemon_events_about_other_files_are_left_out():
    output = io.StringIO()
    trace = RunTrace(output, json_lines=True, hold=0)
    trace.files = {12}
    for file in ("12:/vm", "13:/theirs", ""):
        trace.emit(TraceEvent(time=1.0, source="daemon", what="fallocate", file=file))
    trace.emit(TraceEvent(time=1.5, source="daemon", what="lost", detail={"lost": 3}))
    trace.emit(TraceEvent(time=2.0, source="run", what="KVM_CREATE_VM"))
    trace.finish()
    kept = [TraceEvent.from_json(line) for line in output.getvalue().splitlines()]
    assert [(event.what, event.file) for event in kept] == [
        ("fallocate", "12:/vm"),
        ("lost", ""),
        ("KVM_CREATE_VM", ""),
    ]
