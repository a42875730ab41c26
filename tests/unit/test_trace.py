"""The trace core: events as JSON and as text, the words for flags and arguments, the daemon's
stream (bounded, whole lines) and the merge of two processes' events."""

import errno
import json
import struct

import pytest
import trio

from gmemfs.kernel.uapi import (
    FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE,
    GUEST_MEMFD_FLAG_HUGETLB,
    GUEST_MEMFD_FLAG_HUGETLB_V2,
    GUEST_MEMFD_FLAG_INIT_PRIVATE,
    GUEST_MEMFD_FLAG_INIT_SHARED,
    GUEST_MEMFD_FLAG_MMAP,
    GUEST_MEMFD_FLAG_SUPPORT_SHARED,
    GUESTMEM_HUGETLB_FLAG_1GB,
    GUESTMEM_HUGETLB_FLAG_2MB,
    HUGETLB_2025,
    HUGETLB_2025_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES,
    INPLACE_V7,
    KVM_CAP_GMEM_HUGETLB,
    KVM_CAP_GUEST_MEMFD,
    KVM_CAP_GUEST_MEMFD_FLAGS,
    KVM_CAP_VM_TYPES,
    KVM_CREATE_GUEST_MEMFD,
    KVM_GMEM_CONVERT_PRIVATE,
    KVM_GUEST_MEMFD_HUGE_1GB,
    KVM_GUEST_MEMFD_HUGE_2MB,
    KVM_GUEST_MEMFD_HUGETLB,
    KVM_MEM_GUEST_MEMFD,
    KVM_SET_MEMORY_ATTRIBUTES2,
    KVM_SET_USER_MEMORY_REGION,
    KVM_SET_USER_MEMORY_REGION2,
    KVM_USER_MEMORY_REGION2_STRUCT,
    KVM_USER_MEMORY_REGION_STRUCT,
    LINUX_6_8,
    RFC_V1,
    RFC_V2,
    UPSTREAM,
    ConversionRequest,
)
from gmemfs.trace import decode
from gmemfs.trace.channel import TraceChannel
from gmemfs.trace.events import TraceEvent
from gmemfs.trace.merge import LineDecoder, TraceMerger

MiB, GiB = 1 << 20, 1 << 30


def event(time=1.0, source="daemon", what="fallocate", **fields):
    return TraceEvent(time=time, source=source, what=what, **fields)


# Events


def test_json_round_trip_is_exact():
    original = TraceEvent(
        time=12345.678901234567,
        source="run",
        what="KVM_CREATE_GUEST_MEMFD",
        pid=41,
        tid=42,
        args="size=1G flags=HUGETLB|2M",
        result="EINVAL",
        duration=8.5e-05,
        errno=errno.EINVAL,
        rule="size not a multiple of the huge page size",
        function="kvm_gmem_create",
        file="7",
        detail={"allocated": 3, "pools": {"2M": [10, 4]}, "note": "é"},
    )
    line = original.to_json()
    assert "\n" not in line
    assert TraceEvent.from_json(line) == original
    assert TraceEvent.from_json(line.encode()) == original


def test_json_from_a_newer_writer_keeps_what_this_reader_knows():
    record = json.loads(event(pid=3, args="mode=KEEP_SIZE").to_json())
    record["cgroup"] = "/vm.slice"
    assert TraceEvent.from_json(json.dumps(record)) == event(pid=3, args="mode=KEEP_SIZE")


def test_json_from_an_older_writer_takes_defaults():
    assert TraceEvent.from_json('{"time": 2.5, "source": "run", "what": "KVM_CREATE_VM"}') == TraceEvent(
        2.5, "run", "KVM_CREATE_VM"
    )


@pytest.mark.parametrize("line", ["[1, 2]", '{"time": 1.0}', "not json", '"text"'])
def test_json_that_is_no_event_is_a_value_error(line):
    with pytest.raises(ValueError):
        TraceEvent.from_json(line)


def test_text_of_a_successful_ioctl_reads_like_strace():
    line = TraceEvent(
        time=10.25,
        source="run",
        what="KVM_CREATE_GUEST_MEMFD",
        pid=100,
        tid=101,
        args="size=1G flags=HUGETLB|2M",
        result="fd 7",
        duration=0.000085,
    ).text(start=10.0)
    assert line == "   0.250000 run    100/101 KVM_CREATE_GUEST_MEMFD size=1G flags=HUGETLB|2M -> fd 7 <0.000085>"


def test_text_of_an_error_names_the_errno_the_rule_and_the_function():
    line = event(
        time=3.0,
        source="run",
        what="KVM_CREATE_GUEST_MEMFD",
        pid=100,
        tid=100,
        args="size=3M flags=HUGETLB|2M",
        errno=errno.EINVAL,
        rule="size not a multiple of the huge page size",
        function="kvm_gmem_create",
        duration=0.00001,
    ).text(start=1.0)
    assert line.endswith(
        " 100 KVM_CREATE_GUEST_MEMFD size=3M flags=HUGETLB|2M"
        " -> EINVAL: size not a multiple of the huge page size (kvm_gmem_create) <0.000010>"
    )


def test_text_of_daemon_work_shows_its_file_and_detail_without_a_duration():
    line = event(file="12", args="mode=KEEP_SIZE range=0x0+2M", result="0", detail={"allocated": 1}).text(0.5)
    assert line == "   0.500000 daemon 0 fallocate file=12 mode=KEEP_SIZE range=0x0+2M -> 0 [allocated=1]"


# Words


@pytest.mark.parametrize(
    ("profile", "flags", "words"),
    [
        (RFC_V1, 0, "0"),
        (RFC_V1, KVM_GUEST_MEMFD_HUGETLB | KVM_GUEST_MEMFD_HUGE_2MB, "HUGETLB|2M"),
        (RFC_V1, KVM_GUEST_MEMFD_HUGETLB | KVM_GUEST_MEMFD_HUGE_1GB, "HUGETLB|1G"),
        (RFC_V1, KVM_GUEST_MEMFD_HUGETLB, "HUGETLB"),
        (RFC_V1, KVM_GUEST_MEMFD_HUGETLB | 1, "HUGETLB|0x1"),
        (RFC_V1, KVM_GUEST_MEMFD_HUGE_2MB, "2M"),  # the size field without HUGETLB still reads as a size
        (
            RFC_V2,
            GUEST_MEMFD_FLAG_HUGETLB_V2 | GUESTMEM_HUGETLB_FLAG_1GB | GUEST_MEMFD_FLAG_SUPPORT_SHARED,
            "HUGETLB|1G|SUPPORT_SHARED",
        ),
        (RFC_V2, GUEST_MEMFD_FLAG_SUPPORT_SHARED | GUEST_MEMFD_FLAG_INIT_PRIVATE, "SUPPORT_SHARED|INIT_PRIVATE"),
        (RFC_V2, GUEST_MEMFD_FLAG_HUGETLB_V2 | GUESTMEM_HUGETLB_FLAG_2MB | 1 << 8, "HUGETLB|2M|0x100"),
        (UPSTREAM, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED, "MMAP|INIT_SHARED"),
        (UPSTREAM, GUEST_MEMFD_FLAG_MMAP | 1 << 2, "MMAP|0x4"),
        (UPSTREAM, KVM_GUEST_MEMFD_HUGE_2MB, f"{KVM_GUEST_MEMFD_HUGE_2MB:#x}"),  # no size field in mainline
        (HUGETLB_2025, GUEST_MEMFD_FLAG_HUGETLB | GUEST_MEMFD_FLAG_MMAP, "HUGETLB|MMAP"),
        (HUGETLB_2025, GUEST_MEMFD_FLAG_HUGETLB | 1 << 63, "HUGETLB|0x8000000000000000"),
        (LINUX_6_8, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED, "0x3"),
    ],
)
def test_guest_memfd_flags_in_the_profiles_words(profile, flags, words):
    assert decode.guest_memfd_flags(flags, profile) == words


def test_create_arguments_carry_page_order_where_the_abi_has_it():
    assert decode.create_guest_memfd_args(GiB, KVM_GUEST_MEMFD_HUGETLB | KVM_GUEST_MEMFD_HUGE_2MB, RFC_V1) == (
        "size=1G flags=HUGETLB|2M"
    )
    assert decode.create_guest_memfd_args(GiB, GUEST_MEMFD_FLAG_HUGETLB, HUGETLB_2025, page_order=9) == (
        "size=1G flags=HUGETLB page_order=9 (2M)"
    )


@pytest.mark.parametrize(
    ("mode", "words"),
    [
        (FALLOC_FL_KEEP_SIZE, "KEEP_SIZE"),
        (FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, "KEEP_SIZE|PUNCH_HOLE"),
        (0, "0"),
        (0x10 | 0x100, "ZERO_RANGE|0x100"),
    ],
)
def test_fallocate_modes(mode, words):
    assert decode.fallocate_mode(mode) == words


def test_fallocate_arguments():
    assert decode.fallocate_args(3, 2 * MiB, 4 * MiB) == "mode=KEEP_SIZE|PUNCH_HOLE range=0x200000+4M"


def test_memory_region2_with_guest_memfd():
    data = struct.pack(KVM_USER_MEMORY_REGION2_STRUCT, 1, KVM_MEM_GUEST_MEMFD, 1 << 32, 2 * MiB, 0, 0, 7, 0, *[0] * 14)
    assert decode.memory_region_args(KVM_SET_USER_MEMORY_REGION2, data) == (
        "slot=1 gpa=0x100000000 size=2M uaddr=0x0 flags=GUEST_MEMFD gmem=7+0x0"
    )


def test_memory_region_v1_in_another_address_space():
    data = struct.pack(KVM_USER_MEMORY_REGION_STRUCT, 1 << 16 | 3, 2, 0, 4096, 0x7F0000000000)
    assert decode.memory_region_args(KVM_SET_USER_MEMORY_REGION, data) == (
        "slot=3 as=1 gpa=0x0 size=4K uaddr=0x7f0000000000 flags=READONLY"
    )


def test_conversion_names_what_should_have_been_zero():
    request = ConversionRequest.decode(
        KVM_SET_MEMORY_ATTRIBUTES2, struct.pack("=5Q11Q", 0, 2 * MiB, 8, 1, 0, *[0] * 11)
    )
    assert decode.conversion_args(request) == "range=0x0+2M to private flags=0x1"
    shared = ConversionRequest.decode(KVM_GMEM_CONVERT_PRIVATE - 1, struct.pack("=QQQ5Q", 4096, 4096, 0, *[0] * 5))
    assert decode.conversion_args(shared) == "range=0x1000+4K to shared"


def test_capability_names_depend_on_the_profile_where_the_series_disagree():
    assert decode.capability_name(KVM_CAP_GUEST_MEMFD) == "KVM_CAP_GUEST_MEMFD"
    assert decode.capability_name(KVM_CAP_GMEM_HUGETLB, RFC_V2) == "KVM_CAP_GMEM_HUGETLB"
    assert decode.capability_name(KVM_CAP_GMEM_HUGETLB, UPSTREAM) == str(KVM_CAP_GMEM_HUGETLB)
    assert decode.capability_name(HUGETLB_2025_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES, HUGETLB_2025) == (
        "KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES"
    )
    assert decode.capability_name(249, INPLACE_V7) == "KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES"
    assert decode.capability_name(249, HUGETLB_2025) == "249"


def test_capability_answers_in_words():
    assert decode.capability_answer(KVM_CAP_VM_TYPES, 0b11, UPSTREAM) == "KVM_X86_DEFAULT_VM|KVM_X86_SW_PROTECTED_VM"
    assert decode.capability_answer(KVM_CAP_GUEST_MEMFD_FLAGS, 0x7, HUGETLB_2025) == "HUGETLB|MMAP|INIT_SHARED"
    assert decode.capability_answer(HUGETLB_2025_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES, 8, HUGETLB_2025) == "PRIVATE"
    assert decode.capability_answer(KVM_CAP_GUEST_MEMFD, 1, UPSTREAM) == "1"


def test_vm_types_and_ioctl_names():
    assert decode.vm_type(1) == "KVM_X86_SW_PROTECTED_VM"
    assert decode.vm_type(99) == "99"
    assert decode.ioctl_name(KVM_CREATE_GUEST_MEMFD) == "KVM_CREATE_GUEST_MEMFD"
    assert decode.ioctl_name(KVM_CREATE_GUEST_MEMFD | 1 << 32) == "KVM_CREATE_GUEST_MEMFD"  # cmd is 32 bits
    assert decode.ioctl_name(0x5401) == "0x5401"


# The daemon's stream


def test_a_channel_nobody_reads_keeps_nothing():
    channel = TraceChannel()
    assert not channel.readers
    channel.emit(event())
    reader = channel.subscribe()
    assert channel.readers
    assert not reader.lines and not reader.lost


async def test_a_reader_gets_whole_lines_in_order():
    channel = TraceChannel()
    reader = channel.subscribe()
    sent = [event(time=float(i), pid=i) for i in range(3)]
    for item in sent:
        channel.emit(item)
    data = await reader.read(65536)
    assert data.endswith(b"\n")
    assert [TraceEvent.from_json(line) for line in data.splitlines()] == sent


async def test_a_read_returns_whole_lines_no_longer_than_size():
    channel = TraceChannel()
    reader = channel.subscribe()
    for i in range(10):
        channel.emit(event(time=float(i)))
    length = len(event(time=0.0).to_json()) + 1
    size = 2 * length + length // 2
    got = []
    while reader.lines:
        data = await reader.read(size)
        assert 0 < len(data) <= size and data.endswith(b"\n")
        got += [TraceEvent.from_json(line).time for line in data.splitlines()]
    assert got == [float(i) for i in range(10)]


async def test_a_line_longer_than_size_comes_in_pieces():
    channel = TraceChannel()
    reader = channel.subscribe()
    channel.emit(event(args="x" * 300))
    pieces = [await reader.read(100)]
    while not pieces[-1].endswith(b"\n"):
        pieces.append(await reader.read(100))
    assert len(pieces) > 3 and all(len(piece) <= 100 for piece in pieces)
    assert TraceEvent.from_json(b"".join(pieces)).args == "x" * 300


async def test_an_overrun_drops_the_oldest_and_reads_one_lost_event_first():
    channel = TraceChannel(capacity=3)
    reader = channel.subscribe()
    for i in range(8):
        channel.emit(event(time=float(i)))
    events = [TraceEvent.from_json(line) for line in (await reader.read(65536)).splitlines()]
    assert events[0].what == "lost" and events[0].detail == {"lost": 5} and events[0].args == "5 events"
    assert events[0].time == 4.0  # the last one lost
    assert [item.time for item in events[1:]] == [5.0, 6.0, 7.0]
    channel.emit(event(time=9.0))
    assert [TraceEvent.from_json(line).what for line in (await reader.read(65536)).splitlines()] == ["fallocate"]


async def test_a_read_waits_for_an_event():
    channel = TraceChannel()
    reader = channel.subscribe()
    got = []

    async def read():
        got.append(await reader.read(4096))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        channel.emit(event(time=5.0))
    assert TraceEvent.from_json(got[0]).time == 5.0


async def test_closing_a_reader_unsubscribes_it_and_ends_its_read():
    channel = TraceChannel()
    reader = channel.subscribe()
    other = channel.subscribe()
    got = []

    async def read():
        got.append(await reader.read(4096))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        reader.close()
    assert got == [b""]
    assert channel.readers == (other,)
    channel.emit(event())
    assert not reader.lines and other.lines


async def test_closing_the_channel_lets_readers_finish_then_end():
    channel = TraceChannel()
    reader = channel.subscribe()
    channel.emit(event())
    channel.close()
    assert await reader.read(4096)
    assert await reader.read(4096) == b""
    assert not channel.readers


def test_a_reader_opened_after_the_channel_closed_reads_the_end_at_once():
    channel = TraceChannel()
    channel.close()
    reader = channel.subscribe()
    assert reader.readable and not channel.readers


async def test_a_waiting_poll_is_woken_once_by_the_next_event_and_by_the_end():
    channel = TraceChannel()
    reader = channel.subscribe()
    woken = []
    assert not reader.readable
    reader.wake_when_readable(lambda: woken.append("event"))
    channel.emit(event())
    channel.emit(event())
    assert woken == ["event"] and reader.readable
    await reader.read(4096)
    assert not reader.readable
    reader.wake_when_readable(lambda: woken.append("end"))
    channel.close()
    assert woken == ["event", "end"] and reader.readable


# The merge


def test_the_merger_orders_two_sources_that_arrive_out_of_order():
    merger = TraceMerger(hold=0.1)
    ioctl = event(time=1.050, source="run", what="KVM_CREATE_GUEST_MEMFD", duration=0.04)
    merger.add(ioctl)
    merger.add(event(time=1.020, what="create"))  # the daemon's, for that call, read later
    merger.add(event(time=1.030, what="size"))
    assert [item.what for item in merger.ready(now=1.2)] == ["create", "size", "KVM_CREATE_GUEST_MEMFD"]
    assert len(merger) == 0


def test_the_merger_holds_what_is_younger_than_hold():
    merger = TraceMerger(hold=0.1)
    merger.add(event(time=1.0, what="a"))
    merger.add(event(time=1.05, what="b"))
    assert merger.ready(now=1.05) == []
    assert [item.what for item in merger.ready(now=1.11)] == ["a"]
    merger.add(event(time=1.01, what="late"))  # late, but not too late: still before b
    assert [item.what for item in merger.ready(now=1.2)] == ["late", "b"]


def test_the_merger_keeps_arrival_order_for_equal_times_and_drains_everything():
    merger = TraceMerger(hold=10.0)
    for what in ("first", "second", "third"):
        merger.add(event(time=2.0, what=what))
    merger.add(event(time=1.0, what="zeroth"))
    assert merger.ready(now=2.0) == []
    assert [item.what for item in merger.drain()] == ["zeroth", "first", "second", "third"]
    assert merger.drain() == []


def test_a_line_cut_between_reads_waits_for_its_end():
    decoder = LineDecoder()
    data = event(time=1.0).to_json().encode() + b"\n" + event(time=2.0).to_json().encode() + b"\n"
    assert [item.time for item in decoder.feed(data[:-20])] == [1.0]
    assert [item.time for item in decoder.feed(data[-20:])] == [2.0]
