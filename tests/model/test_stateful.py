"""Random sequences of guest_memfd calls on a real mount and on the spec's model, compared step by step.

Every call's result (errno) must match the model, and after every step the
2 MiB pool's counters in sysfs must be what the model predicts. CI runs a
bounded number of sequences; for a longer run:

    GMEMFS_MODEL_EXAMPLES=2000 .venv/bin/python -m pytest tests/model -p no:cacheprovider
"""

import os
import uuid

import pytest
from hypothesis import HealthCheck, Verbosity, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from spec_model import K4, M2, ModelFile
from support.pools import PAGE_2M, wait_for_counters
from support.syscalls import convert, errno_name, errno_of, fallocate_result, set_flags

from gmemfs.base.hugepages import pool_counters

EXAMPLES = int(os.environ.get("GMEMFS_MODEL_EXAMPLES", "200"))
STEPS = int(os.environ.get("GMEMFS_MODEL_STEPS", "40"))

FLAGS = st.sampled_from([0, 1 << 1, 1 << 1 | 21 << 26, 1 << 1 | 30 << 26, 1 << 0, 1 << 2, 21 << 26, 1 << 1 | 16 << 26])
# Offsets and lengths in units that hit the rules' edges: 4 KiB steps, whole 2 MiB pages, odd bytes.
UNITS = st.sampled_from([0, 1, K4, 2 * K4, M2 - K4, M2, 2 * M2, 3 * M2, 4 * M2, 8 * M2])
MODES = st.sampled_from([0, 0x1, 0x2, 0x3, 0x11])
STATS = {"sequences": 0, "steps": 0}


class GuestMemfdMachine(RuleBasedStateMachine):
    directory = None  # set by the test: a fresh directory on a 2 MiB-page mount

    def __init__(self):
        super().__init__()
        self.files: list[dict] = []
        STATS["sequences"] += 1
        start = pool_counters(PAGE_2M)
        self.base_free, self.base_reserved = start.free, start.reserved

    # ---- helpers -----------------------------------------------------------------------

    def expected_counters(self) -> tuple[int, int]:
        used = sum(entry["model"].used_pages for entry in self.files if entry["model"].page_size == M2)
        held = sum(entry["model"].reserved_pages for entry in self.files if entry["model"].page_size == M2)
        return self.base_free - used, self.base_reserved + held

    def pool_available(self) -> int:
        free, reserved = self.expected_counters()
        return free - reserved

    def pick(self, index: int, need_fd: bool = True):
        candidates = [entry for entry in self.files if entry["fd"] is not None or not need_fd]
        return candidates[index % len(candidates)] if candidates else None

    def has_fd(self) -> bool:
        return any(entry["fd"] is not None for entry in self.files)

    # ---- rules -------------------------------------------------------------------------

    @initialize(huge_pages=st.sampled_from([2, 4, 8]), small_pages=st.sampled_from([4, 64, 1024]))
    def two_created_files(self, huge_pages, small_pages):
        """Start every sequence with a 2 MiB-page file and a 4 KiB-page file, so that calls reach the pages."""
        self.create()
        self.truncate(0, huge_pages * M2, 0)
        self.create()
        self.set_flags(1, 0)
        self.truncate(1, small_pages * K4, 0)

    @precondition(lambda self: len(self.files) < 6)
    @rule()
    def create(self):
        name = f"f{uuid.uuid4().hex[:6]}"
        fd = os.open(self.directory / name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        model = ModelFile(flags=1 << 1 | 21 << 26, open_fds=1)  # the mount's default: 2 MiB pages
        self.files.append({"name": name, "fd": fd, "model": model, "position": 0})

    @precondition(has_fd)
    @rule(index=st.integers(0, 5), flags=FLAGS)
    def set_flags(self, index, flags):
        entry = self.pick(index)
        assert errno_of(set_flags, entry["fd"], flags) == entry["model"].set_flags(flags)

    @precondition(has_fd)
    @rule(index=st.integers(0, 5), size=UNITS, extra=st.sampled_from([0, 0, K4, -2 * M2]))
    def truncate(self, index, size, extra):
        entry = self.pick(index)
        size += extra
        expected = entry["model"].truncate(size, self.pool_available())
        assert errno_of(os.ftruncate, entry["fd"], size) == expected, f"ftruncate({size:#x})"

    @precondition(has_fd)
    @rule(index=st.integers(0, 5), mode=MODES, offset=UNITS, length=UNITS)
    def fallocate(self, index, mode, offset, length):
        entry = self.pick(index)
        expected = entry["model"].fallocate(mode, offset, length)
        assert fallocate_result(entry["fd"], mode, offset, length) == expected, f"{mode:#x} {offset:#x}+{length:#x}"

    @precondition(has_fd)
    @rule(
        index=st.integers(0, 5),
        to_shared=st.booleans(),
        offset=UNITS,
        size=UNITS,
        error_offset=st.sampled_from([0, 0, 0, K4]),
    )
    def convert(self, index, to_shared, offset, size, error_offset):
        entry = self.pick(index)
        expected = entry["model"].convert(to_shared, offset, size, error_offset)
        result, _ = convert(entry["fd"], "shared" if to_shared else "private", offset, size, error_offset)
        assert result == expected, f"convert {'shared' if to_shared else 'private'} {offset:#x}+{size:#x}"

    @precondition(has_fd)
    @rule(index=st.integers(0, 5))
    def read(self, index):
        entry = self.pick(index)
        expected = entry["model"].read(entry["position"])
        try:
            data = os.read(entry["fd"], K4)
            result = "OK"
        except OSError as error:
            data, result = b"", errno_name(error.errno)
        assert result == expected, f"read at {entry['position']:#x}"
        entry["position"] += len(data)

    @precondition(has_fd)
    @rule(index=st.integers(0, 5))
    def write(self, index):
        assert errno_of(os.write, self.pick(index)["fd"], b"x" * K4) == "EINVAL"

    @precondition(has_fd)
    @rule(index=st.integers(0, 5))
    def close(self, index):
        entry = self.pick(index)
        os.close(entry["fd"])
        entry["fd"] = None
        entry["model"].open_fds -= 1
        if not entry["model"].alive:
            self.files.remove(entry)

    @precondition(lambda self: any(entry["fd"] is None for entry in self.files))
    @rule(index=st.integers(0, 5))
    def reopen(self, index):
        entry = [entry for entry in self.files if entry["fd"] is None][index % sum(e["fd"] is None for e in self.files)]
        entry["fd"] = os.open(self.directory / entry["name"], os.O_RDWR)
        entry["model"].open_fds += 1
        entry["position"] = 0

    @precondition(lambda self: any(entry["model"].linked for entry in self.files))
    @rule(index=st.integers(0, 5))
    def unlink(self, index):
        linked = [entry for entry in self.files if entry["model"].linked]
        entry = linked[index % len(linked)]
        os.unlink(self.directory / entry["name"])
        entry["model"].linked = False
        if not entry["model"].alive:
            self.files.remove(entry)

    # ---- after every step ------------------------------------------------------------------

    @invariant()
    def pool_matches_the_model(self):
        STATS["steps"] += 1
        free, reserved = self.expected_counters()
        seen = wait_for_counters(PAGE_2M, reserved, free, timeout=3.0)  # eviction follows the forget
        assert (seen.free, seen.reserved) == (free, reserved), "2 MiB pool (free, reserved)"

    @invariant()
    def sizes_and_blocks_match_the_model(self):
        for entry in self.files:
            if entry["fd"] is not None:
                st_ = os.fstat(entry["fd"])
                model = entry["model"]
                assert st_.st_size == model.size
                assert st_.st_blocks * 512 == len(model.allocated) * model.page_size

    def teardown(self):
        for entry in self.files:
            if entry["fd"] is not None:
                os.close(entry["fd"])
            if entry["model"].linked:
                os.unlink(self.directory / entry["name"])
        seen = wait_for_counters(PAGE_2M, self.base_reserved, self.base_free, timeout=3.0)
        assert (seen.free, seen.reserved) == (self.base_free, self.base_reserved), "pages left behind"


@pytest.mark.parametrize("page_size", [PAGE_2M], ids=["2M"])
def test_random_call_sequences_match_the_spec_model(gmem_dir, page_size):
    GuestMemfdMachine.directory = gmem_dir
    run_state_machine_as_test(
        GuestMemfdMachine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            verbosity=Verbosity.verbose if os.environ.get("GMEMFS_MODEL_VERBOSE") else Verbosity.normal,
        ),
    )
    print(f"model test: {STATS['sequences']} sequences, {STATS['steps']} steps checked against the model")
    assert STATS["steps"] > STATS["sequences"], "the sequences must reach the files"
