"""gmemfs run --trace: one line per guest_memfd event of the program, from the supervisor and
the daemon in one order, every refusal with its errno, rule and the series' function."""

import json
import os
import re
import signal
import subprocess

from support.commands import GMEMFS
from support.mount import wait_until
from support.pools import PAGE_2M
from support.programs import kernel_selftest, kvm_client
from support.run import RUN_TESTS, gmemfs_processes, gmemfs_run

from gmemfs.kernel.uapi import GUEST_MEMFD_FLAG_HUGETLB_V2, GUEST_MEMFD_FLAG_SUPPORT_SHARED, GUESTMEM_HUGETLB_FLAG_2MB
from gmemfs.trace.events import TraceEvent

pytestmark = RUN_TESTS

RFC_V2_HUGE_2M = GUEST_MEMFD_FLAG_HUGETLB_V2 | GUEST_MEMFD_FLAG_SUPPORT_SHARED | GUESTMEM_HUGETLB_FLAG_2MB
TRACED = kvm_client("traced", RFC_V2_HUGE_2M, 2 * PAGE_2M)
TEXT_LINE = re.compile(r"^ *\d+\.\d{6} (run   |daemon) \d+(/\d+)? \S+( .*)?$")


def traced_run(tmp_path, *options: str, program: "list[str]") -> "tuple[dict | str, list[TraceEvent]]":
    """The program's output and its trace, as JSON events."""
    trace = tmp_path / "trace.json"
    result = gmemfs_run(f"--trace={trace}", "--trace-format=json", *options, program=program)
    assert result.returncode == 0, result.stdout + result.stderr
    events = [TraceEvent.from_json(line) for line in trace.read_text().splitlines()]
    return result.stdout, events


def steps(events: "list[TraceEvent]") -> "list[tuple[str, str, str]]":
    """(source, what, result) of each event, a fault the kernel asked again for counted once."""
    found: list[tuple[str, str, str]] = []
    for event in events:
        step = (event.source, event.what, "fd" if event.result.startswith("fd ") else event.result)
        if not found or found[-1] != step:
            found.append(step)
    return found


def one(events: "list[TraceEvent]", source: str, what: str, result: str) -> TraceEvent:
    matching = [event for event in events if (event.source, event.what, event.result) == (source, what, result)]
    assert matching, f"no {source} {what} -> {result} in {steps(events)}"
    return matching[0]


def test_a_private_vm_program_shows_every_step_in_order_with_its_rule(tmp_path):
    output, events = traced_run(tmp_path, "-o", "abi=rfc-v2", program=TRACED)
    assert json.loads(output) == {
        "cap": 1,
        "bad_size": "EINVAL",
        "allocate": "OK",
        "bind": "OK",
        "to_private": 0,
        "host_while_private": "SIGBUS",
        "guest": [[2, 0x11, 0x11], [2, 0x10, 0x42]],
        "to_shared": 0,
        "host_reads": 0x42,
        "punch": "OK",
        "bad_fallocate": "EINVAL",
    }
    order = [step for step in steps(events) if step[1] != "guest_fault"]  # the kernel's readahead decides those
    assert order == [
        ("run", "KVM_CREATE_VM", "fd"),
        ("run", "KVM_CHECK_EXTENSION", "1"),
        ("run", "KVM_CREATE_GUEST_MEMFD", "EINVAL"),
        ("daemon", "create", "0"),
        ("daemon", "set_flags", "0"),
        ("daemon", "size", "0"),
        ("run", "KVM_CREATE_GUEST_MEMFD", "fd"),
        ("daemon", "fallocate", "0"),
        ("run", "KVM_SET_USER_MEMORY_REGION2", "0"),
        ("daemon", "convert_private", "0"),
        ("run", "KVM_GMEM_CONVERT_PRIVATE", "0"),
        ("daemon", "host_fault", "EINVAL"),
        ("daemon", "convert_shared", "0"),
        ("run", "KVM_GMEM_CONVERT_SHARED", "0"),
        ("daemon", "fallocate", "0"),
        ("daemon", "fallocate", "EINVAL"),
        ("daemon", "evict", "0"),
        ("daemon", "daemon-ended", ""),
    ]
    assert [event.time for event in events] == sorted(event.time for event in events)

    assert one(events, "run", "KVM_CREATE_VM", events[0].result).args == "type=KVM_X86_SW_PROTECTED_VM"
    refused = one(events, "run", "KVM_CREATE_GUEST_MEMFD", "EINVAL")
    assert (refused.errno, refused.function) == (22, "kvm_gmem_create")
    assert refused.args == "size=4100K flags=HUGETLB|2M|SUPPORT_SHARED" and "multiple" in refused.rule
    sized = one(events, "daemon", "size", "0")
    assert sized.detail["reserved_pages"] == 2 and sized.detail["pool"]["reserved"] >= 2
    allocated, punched = [event for event in events if event.what == "fallocate" and event.result == "0"]
    assert (allocated.args, allocated.detail["pages_allocated"]) == ("mode=KEEP_SIZE range=0x0+4M", 2)
    assert (punched.args, punched.detail["pages_freed"]) == ("mode=KEEP_SIZE|PUNCH_HOLE range=0x200000+2M", 1)
    bound = one(events, "run", "KVM_SET_USER_MEMORY_REGION2", "0")
    assert bound.args.startswith("slot=0 gpa=0x0 size=4M uaddr=0x") and bound.args.endswith(
        "flags=GUEST_MEMFD gmem=4+0x0"
    )
    fault = one(events, "daemon", "host_fault", "EINVAL")
    assert (fault.detail["page"], fault.function) == (0x2000, "kvm_gmem_fault_user_mapping")
    bad = one(events, "daemon", "fallocate", "EINVAL")
    assert (bad.args, bad.function) == ("mode=KEEP_SIZE range=0x1000+2K", "kvm_gmem_fallocate")
    evicted = one(events, "daemon", "evict", "0")
    assert (evicted.detail["pages_freed"], evicted.detail["reserved_pages_released"]) == (1, 1)  # 2 reserved, 1 in use
    calls = [event for event in events if event.source == "run"]
    assert all(event.duration is not None and event.tid for event in calls)


def test_the_text_form_is_one_line_per_event_on_standard_error_by_default():
    result = gmemfs_run("--trace", "-o", "abi=rfc-v2", program=TRACED)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["bad_fallocate"] == "EINVAL"  # the program's output is its own
    lines = result.stderr.splitlines()
    assert lines and all(TEXT_LINE.match(line) for line in lines), lines
    refused = next(line for line in lines if " KVM_CREATE_GUEST_MEMFD " in line and "EINVAL" in line)
    assert refused.split(" -> ")[1].startswith("EINVAL: size 0x401000 is not a positive multiple")
    assert "(kvm_gmem_create) <" in refused
    fault = next(line for line in lines if " host_fault " in line)
    assert "[page=0x2000]" in fault


def test_the_kernels_612_selftest_is_traced_with_a_rule_for_every_refusal(tmp_path):
    _output, events = traced_run(tmp_path, "-o", "abi=linux-6.8", program=[str(kernel_selftest("guest_memfd_test"))])
    refusals = [event for event in events if event.errno]
    assert len(refusals) > 20, steps(events)  # the selftest's invalid flags, sizes and fallocates
    assert [event for event in refusals if not (event.rule and event.function)] == []
    kinds = {(event.source, event.what) for event in events}
    assert {
        ("run", "KVM_CREATE_VM"),
        ("run", "KVM_CREATE_GUEST_MEMFD"),
        ("daemon", "size"),
        ("daemon", "fallocate"),
        ("daemon", "evict"),
    } <= kinds, sorted(kinds)
    functions = {event.function for event in refusals}
    assert {"kvm_gmem_create", "kvm_gmem_fallocate"} <= functions, functions


def test_without_trace_nothing_is_printed():
    result = gmemfs_run("-o", "abi=rfc-v2", program=TRACED)
    assert result.returncode == 0 and json.loads(result.stdout)["bad_fallocate"] == "EINVAL"
    assert result.stderr == ""


def test_a_trace_file_that_cannot_be_written_is_one_line_and_125(tmp_path):
    target = tmp_path / "no" / "such" / "trace"
    result = gmemfs_run(f"--trace={target}", program=["true"])
    assert result.returncode == 125
    assert result.stderr.splitlines() == [f"gmemfs run: --trace={target}: No such file or directory"]


def start_traced_holder(trace_path) -> "tuple[subprocess.Popen, int]":
    """gmemfs run --trace of a program that holds a 2 MiB-page file and waits; (the run, its pid)."""
    program = kvm_client("hold", PAGE_2M, RFC_V2_HUGE_2M)
    command = [*GMEMFS, "run", f"--trace={trace_path}", "--trace-format=json", "-o", "abi=rfc-v2", "--", *program]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    created = json.loads(run.stdout.readline())
    assert created["size"] == PAGE_2M, created
    return run, created["pid"]


def test_kill_9_of_the_program_ends_the_trace_with_its_files_eviction(tmp_path):
    run, pid = start_traced_holder(tmp_path / "trace")
    os.kill(pid, signal.SIGKILL)
    assert run.wait(timeout=30) == -signal.SIGKILL
    events = [TraceEvent.from_json(line) for line in (tmp_path / "trace").read_text().splitlines()]
    assert [event.what for event in events[-2:]] == ["evict", "daemon-ended"], steps(events)
    assert events[-2].detail["reserved_pages_released"] == 1


def test_kill_9_of_the_private_daemon_ends_the_trace_and_not_the_run(tmp_path):
    run, pid = start_traced_holder(tmp_path / "trace")
    try:
        daemon = int(gmemfs_processes()[0].split(":")[0])
        os.kill(daemon, signal.SIGKILL)
        assert wait_until(lambda: "daemon-ended" in (tmp_path / "trace").read_text(), 10)
    finally:
        os.kill(pid, signal.SIGKILL)
    assert run.wait(timeout=30) == -signal.SIGKILL
    ended = TraceEvent.from_json((tmp_path / "trace").read_text().splitlines()[-1])
    assert ended.what == "daemon-ended" and ended.args.startswith("the daemon's trace ended")


def test_a_trace_whose_reader_went_away_stops_and_the_program_runs_on(tmp_path):
    """--trace=/dev/stdout into `head -1`: once head is gone the trace stops, and PROGRAM's
    calls are still answered by gmemfs (a SIGBUS on a private page is gmemfs's alone)."""
    output = tmp_path / "program.json"
    program = ["sh", "-c", f"{' '.join(TRACED)} >{output}"]
    run = " ".join([*GMEMFS, "run", "--trace=/dev/stdout", "-o", "abi=rfc-v2", "--", *map(repr, program)])
    shown = subprocess.run(
        ["bash", "-c", f'{run} | head -1; exit "${{PIPESTATUS[0]}}"'], capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0, shown.stderr
    assert len(shown.stdout.splitlines()) == 1 and " KVM_CREATE_VM " in shown.stdout, shown
    answers = json.loads(output.read_text())
    assert (answers["host_while_private"], answers["bad_fallocate"]) == ("SIGBUS", "EINVAL"), answers
