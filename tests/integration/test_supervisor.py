"""The gmemfs run supervisor in-process, on trio (pytest-trio): a trapped program, a real mount."""

import json
import subprocess

import pytest
import trio
from support.kvm import why_no_kvm
from support.programs import kvm_client

from gmemfs.kernel.uapi import KVM_CAP_GUEST_MEMFD_FLAGS, RFC_V1, UPSTREAM
from gmemfs.run.command import start_program, supervise
from gmemfs.run.supervisor import GuestMemfdSupervisor

pytestmark = pytest.mark.skipif(why_no_kvm() is not None, reason=f"needs KVM: {why_no_kvm()}")


async def run_supervised(mountpoint, profile, program) -> "tuple[int, str, int]":
    """(wait status, stdout, trapped ioctls) of program, supervised on this trio loop. (Its
    private file mappings are trapped too: a dynamically linked program maps its libraries.)"""
    process, listener = start_program(program, profile.name, stdout=subprocess.PIPE, text=True)
    supervisor = GuestMemfdSupervisor(listener, str(mountpoint), profile)
    mappings = 0
    answer_mapping = supervisor.private_mapping

    def count_mapping(call):
        nonlocal mappings
        mappings += 1
        return answer_mapping(call)

    supervisor.private_mapping = count_mapping
    try:
        status = await supervise(process, supervisor)
    finally:
        listener.close()
        supervisor.close()
    return status, process.stdout.read(), supervisor.calls - mappings


async def test_supervisor_answers_capabilities_from_the_profile(start_gmemfs):
    daemon = start_gmemfs("-o", "abi=upstream")
    status, output, calls = await run_supervised(
        daemon.mountpoint, UPSTREAM, kvm_client("caps", [KVM_CAP_GUEST_MEMFD_FLAGS])
    )
    assert status == 0
    assert json.loads(output) == {str(KVM_CAP_GUEST_MEMFD_FLAGS): [3, 3, 1]}
    assert calls == 5, "two KVM_CREATE_VM, one KVM_CHECK_EXTENSION per fd"


async def test_supervisor_creates_files_on_the_mount_it_is_given(start_gmemfs):
    daemon = start_gmemfs()
    status, output, _ = await run_supervised(daemon.mountpoint, RFC_V1, kvm_client("create", 8192, 0))
    assert status == 0
    assert json.loads(output)["size"] == 8192


async def test_supervisor_stops_when_the_program_ends_and_keeps_the_loop_free(start_gmemfs):
    daemon = start_gmemfs()
    ticks = 0

    async def tick():
        nonlocal ticks
        while True:
            ticks += 1
            await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(tick)
        status, _, _ = await run_supervised(daemon.mountpoint, RFC_V1, ["sleep", "0.3"])
        nursery.cancel_scope.cancel()
    assert status == 0
    assert ticks >= 10, "the supervisor blocked the trio loop while it waited"


async def test_serving_ends_by_itself_once_no_process_uses_the_filter(start_gmemfs):
    """RECV would block the loop forever after the last trapped process is gone: poll first."""
    daemon = start_gmemfs()
    process, listener = start_program(["true"], RFC_V1.name)
    supervisor = GuestMemfdSupervisor(listener, str(daemon.mountpoint), RFC_V1)
    try:
        with trio.fail_after(10):
            await supervisor.serve()
    finally:
        process.wait()
        listener.close()
        supervisor.close()
