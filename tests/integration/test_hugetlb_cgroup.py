"""A VMM in a hugetlb cgroup is held to it: RFC v2 charges a file's whole reservation to its
creator's cgroup at creation (guestmem_hugetlb_setup) and keeps it until the file is freed;
pages in use charge `usage` to the allocating task's cgroup.

Under gmemfs run the private daemon is a child of the run, so it lives in the cgroup the run
was started in: that cgroup is the one charged.
"""

import json
import os
import subprocess
import uuid

import pytest
from support.commands import GMEMFS
from support.kvm import why_no_kvm
from support.pools import PAGE_2M
from support.programs import kvm_client

from gmemfs.kernel.uapi import GUEST_MEMFD_FLAG_HUGETLB_V2, GUEST_MEMFD_FLAG_SUPPORT_SHARED, GUESTMEM_HUGETLB_FLAG_2MB

pytestmark = pytest.mark.skipif(why_no_kvm() is not None, reason=f"gmemfs run needs KVM: {why_no_kvm()}")

RFC_V2_HUGE_2M = GUEST_MEMFD_FLAG_HUGETLB_V2 | GUEST_MEMFD_FLAG_SUPPORT_SHARED | GUESTMEM_HUGETLB_FLAG_2MB


def hugetlb_cgroup2_root() -> "str | None":
    with open("/proc/mounts") as mounts:
        for line in mounts:
            _, path, kind = line.split()[:3]
            if kind == "cgroup2" and "hugetlb" in open(f"{path}/cgroup.controllers").read().split():
                return path
    return None


@pytest.fixture
def hugetlb_cgroup(huge_pools):
    """A fresh cgroup v2 with the hugetlb controller; everything restored afterwards."""
    root = hugetlb_cgroup2_root()
    if root is None:
        pytest.skip("no cgroup v2 hierarchy offers the hugetlb controller here")
    enabled = "hugetlb" in open(f"{root}/cgroup.subtree_control").read().split()
    if not enabled:
        with open(f"{root}/cgroup.subtree_control", "w") as control:
            control.write("+hugetlb")
    path = f"{root}/gmemfs-test-{uuid.uuid4().hex[:8]}"
    os.mkdir(path)
    yield path
    os.rmdir(path)
    if not enabled:
        with open(f"{root}/cgroup.subtree_control", "w") as control:
            control.write("-hugetlb")


def run_in(cgroup: str, *program: str) -> subprocess.CompletedProcess:
    move_then_exec = f'echo $$ > {cgroup}/cgroup.procs && exec "$@"'
    return subprocess.run(
        ["sh", "-c", move_then_exec, "sh", *GMEMFS, "run", "-o", "abi=rfc-v2", "--", *program],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_creators_cgroup_holds_the_whole_reservation_from_creation_to_release(hugetlb_cgroup):
    """Before: rsvd was charged only by allocation, dropped by a punch, and to the daemon."""
    result = run_in(hugetlb_cgroup, *kvm_client("cgroup", hugetlb_cgroup, RFC_V2_HUGE_2M, 2 * PAGE_2M, PAGE_2M))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "created": [2, 0],  # [rsvd pages, usage pages]
        "allocated": [2, 1],
        "punched": [2, 0],
        "closed": [0, 0],
    }


def test_creation_past_the_cgroups_reservation_limit_is_enomem(hugetlb_cgroup):
    with open(f"{hugetlb_cgroup}/hugetlb.2MB.rsvd.max", "w") as limit:
        limit.write(str(PAGE_2M))
    result = run_in(hugetlb_cgroup, *kvm_client("cgroup", hugetlb_cgroup, RFC_V2_HUGE_2M, 2 * PAGE_2M, PAGE_2M))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"create": "ENOMEM", "charges": [0, 0]}
