"""gmemfs run: unchanged programs reach gmemfs through KVM's own ioctls.

Every test runs the real command as users do and checks, afterwards, that the
run left no mount, daemon or huge page reservation behind.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from support.commands import GMEMFS
from support.mount import wait_until
from support.pools import PAGE_2M
from support.programs import kernel_selftest, kvm_client, selftest_source, static_program
from support.run import RUN_TESTS, gmemfs_processes, gmemfs_run, run_json

from gmemfs.base.hugepages import pool_counters
from gmemfs.kernel.uapi import (
    GUEST_MEMFD_FLAG_HUGETLB_V2,
    GUEST_MEMFD_FLAG_INIT_SHARED,
    GUEST_MEMFD_FLAG_MMAP,
    GUEST_MEMFD_FLAG_SUPPORT_SHARED,
    GUESTMEM_HUGETLB_FLAG_2MB,
    HUGETLB_2025_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES,
    KVM_CAP_GUEST_MEMFD,
    KVM_CAP_GUEST_MEMFD_FLAGS,
    KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES,
    KVM_CAP_MEMORY_ATTRIBUTES,
    KVM_CAP_VM_TYPES,
    KVM_GUEST_MEMFD_HUGE_2MB,
    KVM_GUEST_MEMFD_HUGETLB,
    KVM_MEMORY_ATTRIBUTE_PRIVATE,
)

pytestmark = RUN_TESTS

RFC_V1_HUGE_2M = KVM_GUEST_MEMFD_HUGETLB | KVM_GUEST_MEMFD_HUGE_2MB
RFC_V2_HUGE_2M = GUEST_MEMFD_FLAG_HUGETLB_V2 | GUEST_MEMFD_FLAG_SUPPORT_SHARED | GUESTMEM_HUGETLB_FLAG_2MB


# ---- the kernel's own selftest -------------------------------------------------------------


def test_kernel_guest_memfd_selftest_passes_under_linux_6_8():
    selftest = kernel_selftest("guest_memfd_test")
    result = gmemfs_run("-o", "abi=linux-6.8", program=[str(selftest)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_same_selftest_fails_on_this_kernel_directly_because_6_18_made_flag_0x1_valid():
    selftest = kernel_selftest("guest_memfd_test")
    result = subprocess.run([str(selftest)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "guest_memfd() with flag '0x1' should fail with EINVAL" in result.stdout + result.stderr


def first_failure(output: str, source) -> str:
    """The selftest function whose TEST_ASSERT failed first: the one around the line it reports."""
    match = re.search(r"==== Test Assertion Failure ====\n\s+guest_memfd_test\.c:(\d+):", output)
    assert match, output
    line, function = int(match.group(1)), None
    for number, text in enumerate(source.read_text().splitlines(), 1):
        found = re.match(r"static void (test_\w+)\(", text)
        if found:
            function = found.group(1)
        if number == line:
            return function
    raise AssertionError(f"line {line} is not in {source}")


def test_linux_7_2_selftest_passes_under_upstream():
    """Linux 7.2's own guest_memfd_test (Debian sid's linux-source-7.2), unmodified: every file
    test (test_mmap_cow and test_file_read_write once failed) and the guest test."""
    selftest = kernel_selftest("guest_memfd_test", "7.2")
    result = gmemfs_run("-o", "abi=upstream", program=[str(selftest)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_linux_7_2_selftest_fails_on_this_kernel_directly_at_test_invalid_binding():
    """6.18 accepts a binding whose offset + size overflows; 7.2 and gmemfs refuse it (EINVAL)."""
    selftest = kernel_selftest("guest_memfd_test", "7.2")
    result = subprocess.run([str(selftest)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert first_failure(output, selftest_source("guest_memfd_test", "7.2")) == "test_invalid_binding", output


# ---- creation, capabilities -----------------------------------------------------------------

CAPS = [
    KVM_CAP_MEMORY_ATTRIBUTES,
    KVM_CAP_GUEST_MEMFD,
    KVM_CAP_GUEST_MEMFD_FLAGS,
    KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES,
    HUGETLB_2025_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES,
]


# Each capability on /dev/kvm, a type-0 VM and a KVM_X86_SW_PROTECTED_VM, per series (see the
# research notes in the README: kvm_vm_ioctl_check_extension_generic() of each text).
CAPABILITIES = {
    "rfc-v1": {233: [8, 0, 8], 234: [1, 0, 1], 240: [0, 0, 0], 241: [0, 0, 0], 242: [0, 0, 0], 244: [0, 0, 0]},
    "rfc-v2": {233: [8, 8, 8], 234: [1, 1, 1], 240: [1, 1, 1], 241: [1, 1, 1], 242: [1, 1, 1], 244: [0, 0, 0]},
    "linux-6.8": {233: [8, 0, 8], 234: [1, 0, 1], 240: [0, 0, 0], 241: [0, 0, 0], 242: [0, 0, 0], 244: [0, 0, 0]},
    "linux-6.18": {233: [8, 0, 8], 234: [1, 1, 1], 240: [0, 0, 0], 241: [0, 0, 0], 242: [0, 0, 0], 244: [3, 3, 1]},
    "upstream": {233: [8, 0, 8], 234: [1, 1, 1], 240: [0, 0, 0], 241: [0, 0, 0], 242: [0, 0, 0], 244: [3, 3, 1]},
    "inplace-v7": {233: [0, 0, 0], 234: [1, 1, 1], 244: [3, 3, 3], 249: [8, 8, 8]},
    "hugetlb-2025": {233: [0, 0, 0], 234: [1, 1, 1], 244: [7, 7, 7], 248: [8, 8, 8]},  # 7: MMAP|INIT_SHARED|HUGETLB
}


@pytest.mark.parametrize("abi", CAPABILITIES)
def test_capabilities_per_profile_and_vm_type(abi):
    expected = {str(cap): answers for cap, answers in CAPABILITIES[abi].items()}
    assert run_json("-o", f"abi={abi}", program=kvm_client("caps", list(CAPABILITIES[abi]))) == expected


def test_vm_types_include_sw_protected_beside_the_kernels():
    native = json.loads(subprocess.run(kvm_client("caps", [KVM_CAP_VM_TYPES]), capture_output=True, text=True).stdout)
    assert native[str(KVM_CAP_VM_TYPES)][:2] == [1, 1], "this machine's KVM: type 0 only"
    assert run_json(program=kvm_client("caps", [KVM_CAP_VM_TYPES])) == {str(KVM_CAP_VM_TYPES): [3, 3, 3]}


def test_other_capabilities_are_the_kernels():
    native = json.loads(subprocess.run(kvm_client("caps", [1, 118]), capture_output=True, text=True).stdout)
    under_run = run_json("-o", "abi=rfc-v1", program=kvm_client("caps", [1, 118]))
    assert {cap: answers[:2] for cap, answers in under_run.items()} == {cap: a[:2] for cap, a in native.items()}


@pytest.mark.parametrize("abi, flags", [("rfc-v1", RFC_V1_HUGE_2M), ("rfc-v2", RFC_V2_HUGE_2M)])
def test_hugetlb_creation_reserves_for_the_programs_lifetime(abi, flags):
    before = pool_counters(PAGE_2M).reserved
    created = run_json("-o", f"abi={abi}", program=kvm_client("create", 2 * PAGE_2M, flags))
    assert created["blksize"] == PAGE_2M and created["size"] == 2 * PAGE_2M
    assert created["huge_pages_reserved_meanwhile"] == before + 2
    assert created["nlink"] == 0, "anonymous, as the kernel's"
    assert not created["cloexec"], "the kernel's guest_memfd fds have no close-on-exec"
    assert created["lowest_free_fd"], "the fd number is the ioctl's result, the lowest free one"


@pytest.mark.parametrize(
    "abi, size, flags, err",
    [
        ("rfc-v1", 4096, 1 << 0, "EINVAL"),
        ("rfc-v1", 4096 + 1, 0, "EINVAL"),
        ("rfc-v1", 0, 0, "EINVAL"),
        ("rfc-v1", 1 << 63, 0, "EINVAL"),
        ("rfc-v1", PAGE_2M + 4096, RFC_V1_HUGE_2M, "EINVAL"),
        ("rfc-v1", 1 << 40, RFC_V1_HUGE_2M, "ENOMEM"),
        ("linux-6.8", 4096, GUEST_MEMFD_FLAG_MMAP, "EINVAL"),
        ("upstream", 4096, 1 << 2, "EINVAL"),
    ],
)
def test_creation_errors_are_the_kernels(abi, size, flags, err):
    assert run_json("-o", f"abi={abi}", program=kvm_client("create", size, flags)) == {"error": err}


MAPPINGS = {
    "flags_0_private": "ENODEV",
    "flags_0_shared": "ENODEV",
    "flags_1_private": "EINVAL",
    "flags_1_shared": None,
    "flags_3_private": "EINVAL",
    "flags_3_shared": None,
    "another_file_private": None,
}


@pytest.mark.parametrize("abi", ["upstream", "linux-6.18"])
def test_a_private_mapping_of_a_guest_memfd_is_einval(abi):
    """kvm_gmem_mmap(): ENODEV without MMAP, EINVAL unless VM_SHARED (Linux 7.2's test_mmap_cow);
    a FUSE file would be mapped, so gmemfs run answers it. The same calls on this kernel agree."""
    native = subprocess.run(kvm_client("mappings"), capture_output=True, text=True, timeout=60)
    assert json.loads(native.stdout) == MAPPINGS
    assert run_json("-o", f"abi={abi}", program=kvm_client("mappings")) == MAPPINGS


H25_HUGETLB_MMAP = 1 << 2 | GUEST_MEMFD_FLAG_MMAP


@pytest.mark.parametrize(
    "size, flags, page_order, expected",
    [
        (2 * PAGE_2M, H25_HUGETLB_MMAP, 9, {"blksize": PAGE_2M, "reserved": 2}),
        (PAGE_2M, H25_HUGETLB_MMAP, 0, "EINVAL"),  # gmem_hugetlb_valid_order(0)
        (PAGE_2M, GUEST_MEMFD_FLAG_MMAP, 9, "EINVAL"),  # page_order without HUGETLB
        (PAGE_2M + 4096, H25_HUGETLB_MMAP, 9, "EINVAL"),
        (4096, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED, 0, {"blksize": 4096, "reserved": 0}),
    ],
)
def test_hugetlb_2025_page_order_at_offset_16_of_kvm_create_guest_memfd(size, flags, page_order, expected):
    """The series' struct kvm_create_guest_memfd: __u8 page_order after size and flags."""
    before = pool_counters(PAGE_2M).reserved
    created = run_json("-o", "abi=hugetlb-2025", program=kvm_client("create", size, flags, page_order))
    if isinstance(expected, str):
        assert created == {"error": expected}
    else:
        assert created["blksize"] == expected["blksize"]
        assert created["huge_pages_reserved_meanwhile"] == before + expected["reserved"]


def test_mainline_ignores_the_byte_hugetlb_2025_calls_page_order():
    """Reserved in 6.18 and 7.2, and unchecked: the same call makes a 4 KiB file there."""
    created = run_json("-o", "abi=upstream", program=kvm_client("create", 4096, GUEST_MEMFD_FLAG_MMAP, 9))
    assert created["blksize"] == 4096


def test_an_unchanged_program_gets_2m_pages_under_upstream_with_pagesize_2m():
    """MMAP | INIT_SHARED, as 7.2 and Firecracker's guest_memfd branch create them: 2 MiB pages behind
    them, each file's reservation in /proc/meminfo while the program runs."""
    before = pool_counters(PAGE_2M).reserved
    flags = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED
    created = run_json("-o", "abi=upstream,pagesize=2M", program=kvm_client("create", 4 * PAGE_2M, flags))
    assert created["blksize"] == PAGE_2M
    assert created["huge_pages_reserved_meanwhile"] == before + 4


def test_a_minimal_guest_runs_on_2m_pages_under_upstream():
    flags = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED
    guest = run_json("-o", "abi=upstream,pagesize=2M", program=kvm_client("guest", flags, False))
    assert (guest["exit_reason"], guest["guest_wrote"]) == (2, 0x42)
    assert guest["file_allocated"] == "0x0-0x200000", "one huge page behind the guest's two 4 KiB pages"


def test_upstream_flags_create_a_mappable_file():
    flags = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED
    assert run_json("-o", "abi=upstream", program=kvm_client("create", 8192, flags))["size"] == 8192


# ---- memslots ---------------------------------------------------------------------------------

BINDING_RULES = {
    "offset_unaligned": "EINVAL",
    "range_past_size": "EINVAL",
    "other_vms_file": "EINVAL",
    "closed_fd": "EBADF",
    "readonly_guest_memfd": "EINVAL",
    "first_binding": "OK",
    "same_range_again": "EINVAL",
    "next_range": "OK",
    "modify_guest_memfd_slot": "EINVAL",
    "modify_without_flag": "EINVAL",
    "overlapping_gpa": "EEXIST",
    "second_file": "OK",
    "delete_first": "OK",
    "rebind_after_delete": "OK",
}


@pytest.mark.parametrize(
    "abi, vm_type", [("rfc-v1", 1), ("rfc-v2", 1), ("rfc-v2", 0), ("linux-6.18", 0), ("linux-6.18", 1)]
)
def test_memslot_binding_rules(abi, vm_type):
    assert run_json("-o", f"abi={abi}", program=kvm_client("bind", vm_type)) == BINDING_RULES


@pytest.mark.parametrize("abi", ["rfc-v1", "linux-6.8"])
def test_guest_memfd_slots_need_a_vm_with_private_memory_before_6_18(abi):
    """check_memory_region_flags(): KVM_MEM_GUEST_MEMFD only if kvm_arch_has_private_mem()."""
    answers = run_json("-o", f"abi={abi}", program=kvm_client("bind", 0))
    assert {name for name, answer in answers.items() if answer != "EINVAL"} == {"modify_without_flag"}


@pytest.mark.parametrize("vm_type", [0, 1])
def test_linux_7_2_binds_a_bound_range_again_with_eexist(vm_type):
    """7.2's kvm_gmem_bind(): r = -EEXIST when xa_find() finds the range bound (6.18: EINVAL)."""
    answers = run_json("-o", "abi=upstream", program=kvm_client("bind", vm_type))
    assert answers == {**BINDING_RULES, "same_range_again": "EEXIST"}


def test_rfc_v2_binds_a_shared_file_only_where_userspace_addr_maps_it():
    """kvm_gmem_bind() of RFC v2: kvm_gmem_supports_shared() && userspace_addr && !kvm_gmem_is_same_range()."""
    answers = run_json("-o", "abi=rfc-v2", program=kvm_client("bind_mapping", GUEST_MEMFD_FLAG_SUPPORT_SHARED))
    assert answers == {
        "anonymous_memory": "EINVAL",
        "its_own_mapping": "OK",
        "mapping_at_another_offset": "EINVAL",
        "mapping_at_its_offset": "OK",
        "no_userspace_addr": "OK",
        "plain_file_anonymous_memory": "OK",
    }


def test_memslot_binding_rules_match_this_kernels_guest_memfd():
    """6.18 binds guest_memfd to this machine's VMs: the same calls, the same answers as linux-6.18."""
    native = subprocess.run(kvm_client("bind"), capture_output=True, text=True, timeout=60)
    assert json.loads(native.stdout) == BINDING_RULES


def test_rfc_v1_converts_bound_pages_with_set_memory_attributes():
    answers = run_json("-o", "abi=rfc-v1", program=kvm_client("attributes"))
    assert answers == {
        "initially": "0x0-0x4000",  # RFC v1 28/39: binding to a SW_PROTECTED VM makes the range shared
        "private_all": "OK",
        "after_private_all": "",
        "share_gfns_0x11_0x12": "OK",
        "after_share": "0x1000-0x3000",
        "private_gfn_0x12": "OK",
        "after_private": "0x1000-0x2000",
        "flags_nonzero": "EINVAL",
        "unknown_attribute": "EINVAL",
        "size_zero": "EINVAL",
        "unaligned": "EINVAL",
        "unbound_gfns": "OK",
    }
    assert KVM_MEMORY_ATTRIBUTE_PRIVATE == 8


def test_inplace_v7_has_no_per_vm_memory_attributes():
    code = (
        "import errno, fcntl, os, struct\n"
        "vm = fcntl.ioctl(os.open('/dev/kvm', os.O_RDWR), 0xAE01, 0)\n"
        "try: fcntl.ioctl(vm, 0x4020AED2, struct.pack('=QQQQ', 0, 4096, 8, 0))\n"
        "except OSError as error: print(errno.errorcode[error.errno])\n"
    )
    result = gmemfs_run("-o", "abi=inplace-v7", program=[sys.executable, "-c", code])
    assert result.stdout.strip() == "ENOTTY", result.stderr


@pytest.mark.parametrize(
    "abi, flags, share_with_attributes",
    [("rfc-v1", 0, True), ("upstream", GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED, False)],
)
def test_a_minimal_guest_runs_on_gmemfs_memory(abi, flags, share_with_attributes):
    vm_type = 1 if abi == "rfc-v1" else 0  # RFC v1 binds guest_memfd to VMs with private memory only
    guest = run_json("-o", f"abi={abi}", program=kvm_client("guest", flags, share_with_attributes, vm_type))
    assert (guest["exit_reason"], guest["port"], guest["out_byte"]) == (2, 0x10, 0x41), "KVM_EXIT_IO on port 0x10"
    assert guest["guest_wrote"] == 0x42
    assert guest["file_allocated"] == "0x1000-0x3000", "the code and data pages live in the gmemfs file"


# ---- static binaries, the process ---------------------------------------------------------


def test_a_static_binary_gets_gmemfs_memory():
    program = static_program("static_create")
    result = gmemfs_run("-o", "abi=rfc-v1", program=[str(program), hex(2 * PAGE_2M), str(RFC_V1_HUGE_2M)])
    assert result.stdout.strip() == f"fd=5 blksize={PAGE_2M} size={2 * PAGE_2M}", result.stderr
    native = subprocess.run([str(program), hex(2 * PAGE_2M), str(RFC_V1_HUGE_2M)], capture_output=True, text=True)
    assert native.stdout.strip() == "errno=22", "this kernel has no hugetlb guest_memfd"


def test_exit_status_stdin_and_stdout_pass_through():
    result = gmemfs_run(program=["sh", "-c", "read line; echo got $line; echo oops >&2; exit 7"], input="hello\n")
    assert (result.returncode, result.stdout, result.stderr) == (7, "got hello\n", "oops\n")


def test_death_by_signal_passes_through():
    assert gmemfs_run(program=["sh", "-c", "kill -USR1 $$"]).returncode == -signal.SIGUSR1


def test_a_missing_program_is_127_and_bad_options_125():
    assert gmemfs_run(program=["/nonexistent/program"]).returncode == 127
    result = gmemfs_run("-o", "abi=nonsense", program=["true"])
    assert result.returncode == 125 and "abi=nonsense" in result.stderr


# A plain chroot of this machine: every top-level directory bound under ROOT, which itself is
# not a mount point (unless asked to be: ROOT bound onto itself, as the refusal suggests).
CHROOT_OF_THIS_MACHINE = """
set -e
root=$1 bind_root=$2
shift 2
mkdir -p "$root"
[ "$bind_root" = no ] || mount --bind "$root" "$root"
for dir in /*; do
    name=${dir#/}
    if [ -L "$dir" ]; then ln -s "$(readlink "$dir")" "$root/$name"
    elif [ -d "$dir" ]; then mkdir "$root/$name" && mount --rbind "$dir" "$root/$name"
    fi
done
exec chroot "$root" "$@"
"""


def in_a_chroot(root, *command: str, root_is_a_mount: bool = False) -> subprocess.CompletedProcess:
    """command in a chroot of this machine, in a mount namespace that ends with it."""
    script = ["sh", "-c", CHROOT_OF_THIS_MACHINE, "sh", str(root), "yes" if root_is_a_mount else "no"]
    return subprocess.run(["unshare", "--mount", *script, *command], capture_output=True, text=True, timeout=120)


def test_in_a_chroot_whose_root_is_no_mount_point_the_refusal_is_one_line(tmp_path):
    """Before: tracebacks of mount(/, MS_REC|MS_PRIVATE): EINVAL and exit status 1."""
    result = in_a_chroot(tmp_path / "root", *GMEMFS, "run", "--", "true")
    assert result.returncode == 125, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gmemfs run: / is not a mount point"), result.stderr


def test_in_a_chroot_whose_root_is_a_mount_the_run_works(tmp_path):
    result = in_a_chroot(tmp_path / "root", *GMEMFS, "run", "--", "true", root_is_a_mount=True)
    assert result.returncode == 0, result.stderr


def test_a_daemon_that_cannot_mount_is_one_line_and_125():
    """Before: the daemon's one line, then a FileNotFoundError traceback (its mountpoint removed
    twice) and exit status 1."""
    hide_1g_pool = "mount -t tmpfs none /sys/kernel/mm/hugepages && mkdir /sys/kernel/mm/hugepages/hugepages-2048kB"
    script = f"{hide_1g_pool} && exec {' '.join(GMEMFS)} run -o pagesize=1G -- true"
    result = subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 125, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].endswith("gmemfs: pagesize=1G: this machine has no 1G huge pages"), lines


def test_sigterm_to_gmemfs_run_reaches_the_program():
    run = subprocess.Popen(
        [*GMEMFS, "run", "--", "sh", "-c", "trap 'exit 42' TERM; echo ready; while :; do sleep 0.05; done"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert run.stdout.readline() == "ready\n"
    run.send_signal(signal.SIGTERM)
    assert run.wait(timeout=30) == 42


def _start_holding_pages() -> "tuple[subprocess.Popen, int]":
    """gmemfs run of a program that holds 2 huge pages and waits; (the run, the program's pid)."""
    program = kvm_client("hold", 2 * PAGE_2M, RFC_V1_HUGE_2M)
    run = subprocess.Popen([*GMEMFS, "run", "--", *program], stdout=subprocess.PIPE, text=True)
    created = json.loads(run.stdout.readline())
    assert created["size"] == 2 * PAGE_2M
    return run, created["pid"]


def test_kill_9_of_the_program_leaves_nothing():
    before = pool_counters(PAGE_2M).reserved
    run, pid = _start_holding_pages()
    assert pool_counters(PAGE_2M).reserved == before + 2
    os.kill(pid, signal.SIGKILL)
    assert run.wait(timeout=30) == -signal.SIGKILL


def test_kill_9_of_gmemfs_run_leaves_nothing():
    run, pid = _start_holding_pages()
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=30)
    try:
        assert wait_until(lambda: not gmemfs_processes(), 10), "the daemon outlived its supervisor"
    finally:
        os.kill(pid, signal.SIGKILL)  # the orphaned program: its memory is already gone


def test_threads_and_children_are_served():
    code = (
        "import subprocess, sys, threading\n"
        "out = []\n"
        "t = threading.Thread(target=lambda: out.append(subprocess.run(sys.argv[1:], capture_output=True,"
        " text=True).stdout))\n"
        "t.start(); t.join(); print(out[0], end='')\n"
    )
    child = kvm_client("create", 4096, 0)
    answer = run_json("-o", "abi=rfc-v1", program=[sys.executable, "-c", code, *child])
    assert answer["size"] == 4096


def test_an_existing_mount_serves_with_its_own_profile(start_gmemfs):
    daemon = start_gmemfs("-o", "abi=upstream")
    result = gmemfs_run("--mount", str(daemon.mountpoint), program=kvm_client("caps", [KVM_CAP_GUEST_MEMFD_FLAGS]))
    assert json.loads(result.stdout) == {str(KVM_CAP_GUEST_MEMFD_FLAGS): [3, 3, 1]}
    assert os.path.ismount(daemon.mountpoint), "gmemfs run leaves a mount it did not make"


def test_calls_cost_little_enough_to_run_a_real_selftest_quickly():
    """Not a timing assertion: the count of trapped calls of a 4,000-creation run is what it should be."""
    started = time.monotonic()
    code = (
        "import fcntl, os, struct\n"
        "vm = fcntl.ioctl(os.open('/dev/kvm', os.O_RDWR), 0xAE01, 0)\n"
        "errors = 0\n"
        "for size in range(1, 4096):\n"
        "    try: fcntl.ioctl(vm, 0xC040AED4, bytearray(struct.pack('=QQ6Q', size, 0, *[0]*6)), True)\n"
        "    except OSError: errors += 1\n"
        "print(errors)\n"
    )
    result = gmemfs_run("-o", "abi=linux-6.8", program=[sys.executable, "-c", code])
    assert result.stdout.strip() == "4095"
    assert time.monotonic() - started < 120


def test_nested_gmemfs_run_is_refused_with_a_clear_line():
    result = gmemfs_run(program=[*GMEMFS, "run", "--", "true"])
    assert result.returncode == 125
    assert "could not be installed" in result.stderr
