"""gmemfs run keeps only what the kernel's answer confirms (issue 17, section 3).

Each case is a program the kernel answers one way natively, run under the real `gmemfs run`:
signals during trapped calls, calls from a process whose mm is not the VM's, structs in memory
the program may not read or write, VMs and files the program closed, children that outlive
the first process, /dev/kvm through another node, and how a run fails or is killed.
"""

import contextlib
import json
import os
import resource
import signal
import stat
import subprocess
import tempfile
import threading
from functools import partial

import pytest
from support.commands import GMEMFS
from support.kvm import KVM_CAP_GUEST_MEMFD_FLAGS, KVM_CAP_VM_TYPES
from support.mount import wait_until
from support.pools import PAGE_2M
from support.programs import kvm_client, static_program
from support.run import RUN_TESTS, gmemfs_processes, gmemfs_run, run_json
from support.users import AS_NOBODY, gmemfs_for_anyone

from gmemfs.kernel.uapi import GUEST_MEMFD_FLAG_HUGETLB_V2, GUESTMEM_HUGETLB_FLAG_2MB

pytestmark = RUN_TESTS


# ---- signals ------------------------------------------------------------------------------------


def test_a_timer_signal_during_memslot_calls_changes_no_answer():
    """Before: a 100 us SIGALRM (SA_RESTART) made hundreds of 2,000 create/delete pairs fail with
    EINVAL (the struct rewritten and the slot recorded before the call reached KVM, then the
    restarted call saw both); later, a thread held by ptrace when its call vanished hung the run.
    A KVM ioctl is never interrupted: once the supervisor has the call, only a fatal signal may
    take it away (SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV)."""
    program = [str(static_program("memslot_signals")), "2000", "100"]
    native = subprocess.run(program, capture_output=True, text=True, timeout=60)
    assert native.stdout.startswith("failed=0 "), native.stdout
    result = gmemfs_run("-o", "abi=upstream", program=program, timeout=120)
    assert result.returncode == 0, result.stderr
    failed, _first_errno, signals = result.stdout.split()
    assert failed == "failed=0", result.stdout
    assert int(signals.split("=")[1]) > 100, "the timer fired during the calls"


@pytest.mark.parametrize(
    "signals", [(signal.SIGUSR1,), (signal.SIGSTOP, signal.SIGCONT)], ids=["forwarded", "stop_and_continue"]
)
def test_signals_to_gmemfs_run_while_it_installs_fds_change_no_creation(signals, run_leaves_nothing):
    """Before: a signal to `gmemfs run` while its ADDFD with SEND waited for the program's
    thread made that KVM_CREATE_GUEST_MEMFD return 0 (the kernel had marked the call answered)
    and the supervisor die on EINPROGRESS, so every later call failed; a forwarded signal
    that came after PROGRAM's end killed `gmemfs run` itself (status -SIGUSR1, not PROGRAM's)."""
    command = [*GMEMFS, "run", "-o", "abi=upstream", "--", str(static_program("creation_signals")), "2000"]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert run.stdout.readline() == "ready\n"
    done = threading.Event()

    def send() -> None:
        while not done.wait(0.001):
            for signum in signals:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(run.pid, signum)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        output, errors = run.communicate(timeout=120)
    finally:
        done.set()
        sender.join()
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 0, errors
    assert output.split()[:3] == ["bad=0", "first_bad=0", "errors=0"], output
    if signals == (signal.SIGUSR1,):
        assert int(output.split()[3].split("=")[1]) > 100, "the signals came during the creations"


# ---- slots: what KVM did, not what was asked ----------------------------------------------------


FORKED_CHILD = {
    "child": {"check_extension": "EIO", "create_guest_memfd": "EIO", "set_region": "EIO", "set_attributes": "EIO"},
    "parent_binds": "OK",
}


@pytest.mark.parametrize("abi, vm_type", [("upstream", 0), ("rfc-v1", 1)])
def test_a_forked_child_gets_eio_for_its_parents_vm(abi, vm_type):
    """KVM answers EIO to every VM ioctl from another mm (this kernel, type 0: the same table).
    Before: the child got the profile's capabilities, a guest_memfd and (RFC v1) a conversion,
    and its refused slot was recorded, so the parent's valid binding failed."""
    native = subprocess.run(kvm_client("forked_child"), capture_output=True, text=True, timeout=60)
    assert json.loads(native.stdout) == FORKED_CHILD
    assert run_json("-o", f"abi={abi}", program=kvm_client("forked_child", vm_type)) == FORKED_CHILD


def test_a_slot_deleted_after_its_guest_memfd_number_was_reused_is_gone():
    """Before: the deletion named a number that was /dev/null by then, so it went to KVM
    unrecorded; the slot stayed in the books and a new slot at its place failed with EEXIST."""
    expected = {"bind": "OK", "number_reused": True, "delete": "OK", "new_slot_same_range": "OK"}
    assert json.loads(subprocess.run(kvm_client("reused_fd_number"), capture_output=True, text=True).stdout) == expected
    assert run_json("-o", "abi=upstream", program=kvm_client("reused_fd_number")) == expected


def test_a_region_struct_the_program_cannot_read_is_efault_and_leaves_no_slot():
    """Before: the struct was read through /proc/PID/mem (which ignores PROT_NONE) and recorded,
    KVM answered EFAULT, and the valid call that followed failed with EINVAL."""
    expected = {"unreadable": "EFAULT", "readable": "OK"}
    assert json.loads(subprocess.run(kvm_client("prot_none_region"), capture_output=True, text=True).stdout) == expected
    assert run_json("-o", "abi=upstream", program=kvm_client("prot_none_region")) == expected


# ---- the program's memory, with the program's rights -------------------------------------------


def test_structs_are_read_with_the_programs_rights_and_never_written():
    """The kernel copies a struct in as the program could read it and writes back only what the
    ioctl returns. Before (/proc/PID/mem ignores protections): a creation struct in PROT_NONE
    memory succeeded, a region struct in read-only memory was rewritten, and one in a read-only
    shared file mapping failed with EIO."""
    expected = {
        "create_in_prot_none": "EFAULT",
        "region_in_read_only_memory": 0,
        "read_only_region_unchanged": True,
        "region_in_read_only_file_mapping": 0,
    }
    assert json.loads(subprocess.run(kvm_client("protections"), capture_output=True, text=True).stdout) == expected
    assert run_json("-o", "abi=upstream", program=kvm_client("protections")) == expected


# ---- /dev/kvm by what it is ---------------------------------------------------------------------


def test_kvm_through_another_device_node_gets_the_profiles_answers(tmp_path):
    """A jail's mknod of /dev/kvm is the same device (10:232). Before, it was recognised by its
    path: through another node the host kernel's capabilities came back, and no private VM."""
    node = tmp_path / "kvm"
    os.mknod(node, stat.S_IFCHR | 0o600, os.makedev(10, 232))
    caps = [KVM_CAP_GUEST_MEMFD_FLAGS, KVM_CAP_VM_TYPES]
    through_dev_kvm = run_json("-o", "abi=rfc-v1", program=kvm_client("caps", caps))
    assert through_dev_kvm[str(KVM_CAP_GUEST_MEMFD_FLAGS)][0] == 0, "RFC v1 has no such capability (the host: 3)"
    assert run_json("-o", "abi=rfc-v1", program=kvm_client("caps", caps, str(node))) == through_dev_kvm


# ---- what the program closed ---------------------------------------------------------------------

HUGE_2M_RFC_V2 = GUEST_MEMFD_FLAG_HUGETLB_V2 | GUESTMEM_HUGETLB_FLAG_2MB  # no SUPPORT_SHARED: binds anonymous memory


def test_closed_vms_give_their_huge_pages_back():
    """12 times a VM with a bound 2-page guest_memfd, both closed, on a mount of 16 pages. Before,
    our copies kept every VM and bound file to the end: the 9th creation failed with ENOMEM."""
    program = kvm_client("closed_vms", 12, 2 * PAGE_2M, HUGE_2M_RFC_V2)
    assert run_json("-o", "abi=rfc-v2,max_huge_pages=16", program=program) == {"worked": 12, "failed": None}


def test_closed_vms_give_their_fds_back():
    """1,500 VMs, each with a bound guest_memfd, made and closed under `ulimit -n 1024`: natively
    all work. Before, our copies (a VM and a bound file each) ran the supervisor out of fds: VM 506
    failed with EMFILE."""
    program = kvm_client("closed_vms", 1500, 4096, 0)
    limit = partial(resource.setrlimit, resource.RLIMIT_NOFILE, (1024, 1024))
    native = subprocess.run(program, capture_output=True, text=True, timeout=120, preexec_fn=limit)
    assert json.loads(native.stdout) == {"worked": 1500, "failed": None}
    result = gmemfs_run("-o", "abi=upstream", program=program, timeout=300, preexec_fn=limit)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"worked": 1500, "failed": None}


# ---- how long a run lasts -----------------------------------------------------------------------


def test_the_run_lasts_while_a_daemonized_child_holds_guest_memory():
    """As `qemu -daemonize`: the first process exits (status 3), its child goes on with the guest
    memory and makes more. Before, the run ended with the first process: the child's file gave
    ENOTCONN and its creations ENOSYS."""
    expected = {"fallocate": "OK", "size": 0x4000, "new_guest_memfd": 0x2000}
    native = subprocess.run(kvm_client("daemonize"), capture_output=True, text=True, timeout=60)
    assert (native.returncode, json.loads(native.stdout)) == (3, expected)
    result = gmemfs_run("-o", "abi=upstream", program=kvm_client("daemonize"))
    assert result.returncode == 3, "the status is the first process's"
    assert json.loads(result.stdout) == expected, result.stderr


def test_orphans_that_end_during_creations_change_no_answer():
    """gmemfs run reaps the orphans it inherits without a SIGCHLD handler: a signal interrupted
    its ADDFD of a new guest_memfd (EINTR, then EINPROGRESS), which ended the supervisor."""
    assert run_json("-o", "abi=upstream", program=kvm_client("orphans_end_meanwhile", 2000)) == {}


# ---- how a run fails, and what a killed one leaves -----------------------------------------------


def test_a_user_without_root_gets_one_line_and_125():
    """Before: three tracebacks (the daemon's, inside the supervisor's two) and exit status 1."""
    with gmemfs_for_anyone() as gmemfs:
        result = subprocess.run(
            [*AS_NOBODY, *gmemfs, "run", "--", "true"], capture_output=True, text=True, timeout=60, cwd="/"
        )
    assert result.returncode == 125, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gmemfs run: ") and "root" in lines[0], result.stderr


def test_kill_9_of_the_run_and_its_daemon_leaves_no_directory():
    """Before: the run's mountpoint (gmemfs-run-* in the temporary directory) stayed behind.
    Every private mount is made on one directory, each in its own namespace."""
    temporary = tempfile.gettempdir()
    before = set(os.listdir(temporary))
    run = subprocess.Popen([*GMEMFS, "run", "--", *kvm_client("hold", 4096, 0)], stdout=subprocess.PIPE, text=True)
    program = json.loads(run.stdout.readline())["pid"]
    daemons = [int(line.split(":")[0]) for line in gmemfs_processes() if f"--private-for {run.pid} " in line]
    try:
        assert len(daemons) == 1
        for pid in (run.pid, *daemons):
            os.kill(pid, signal.SIGKILL)
        run.wait(timeout=30)
        assert wait_until(lambda: not gmemfs_processes(), 10)
    finally:
        os.kill(program, signal.SIGKILL)  # orphaned by the run: its memory went with the daemon
    assert [name for name in set(os.listdir(temporary)) - before if "gmemfs-run" in name] == []
