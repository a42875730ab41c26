"""Private-memory VMs under gmemfs run: KVM_X86_SW_PROTECTED_VM on a KVM that has only type 0.

A guest runs on private gmemfs pages, which the host's own mappings fault on (SIGBUS); shared
pages stay the host's and the guest's at once. The cases follow the series' selftests (RFC v2's
guest_memfd_conversions_test "sharing", RFC v1's guest_memfd_test faultability steps), written
anew against a guest of our own (tests/programs/kvm_client.py).
"""

import json
import subprocess
import sys

import pytest
from support.pools import PAGE_2M
from support.programs import kvm_client
from support.run import RUN_TESTS, gmemfs_run, run_json

from gmemfs.base.hugepages import pool_counters
from gmemfs.kernel.uapi import (
    GUEST_MEMFD_FLAG_HUGETLB_V2,
    GUEST_MEMFD_FLAG_INIT_PRIVATE,
    GUEST_MEMFD_FLAG_INIT_SHARED,
    GUEST_MEMFD_FLAG_MMAP,
    GUEST_MEMFD_FLAG_SUPPORT_SHARED,
    GUESTMEM_HUGETLB_FLAG_2MB,
    KVM_GUEST_MEMFD_HUGE_2MB,
    KVM_GUEST_MEMFD_HUGETLB,
)

pytestmark = RUN_TESTS

KVM_EXIT_IO = 2
KVM_EXIT_INTERNAL_ERROR = 17


@pytest.mark.parametrize(
    "flags, size",
    [
        (GUEST_MEMFD_FLAG_SUPPORT_SHARED, 0x10000),
        (GUEST_MEMFD_FLAG_SUPPORT_SHARED | GUEST_MEMFD_FLAG_HUGETLB_V2 | GUESTMEM_HUGETLB_FLAG_2MB, PAGE_2M),
    ],
    ids=["4K", "2M"],
)
def test_rfc_v2_a_guest_writes_a_private_page_the_host_faults_on_and_reads_once_shared(flags, size):
    """RFC v2 conversions selftest, "sharing": the host writes, the page turns private (the host
    gets SIGBUS, the guest reads what the host wrote and writes), then shared: the host reads
    what the guest wrote. Conversions at 4 KiB inside a 2 MiB page too."""
    before = pool_counters(PAGE_2M).reserved
    run = run_json("-o", "abi=rfc-v2", program=kvm_client("private_guest", "rfc-v2", flags, size))
    assert run == {
        "bind": "OK",
        "to_private": 0,
        "host_while_private": "SIGBUS",
        "guest_read_first": [KVM_EXIT_IO, 0x11, 0x11],  # in place: what the host wrote while shared
        "guest_read_its_write": [KVM_EXIT_IO, 0x10, 0x42],
        "host_after_guest": "SIGBUS",
        "to_shared": 0,
        "host_reads": 0x42,
        "code_page": True,
    }
    assert pool_counters(PAGE_2M).reserved == before


def test_rfc_v1_private_through_memory_attributes_after_madv_dontneed_and_cleared_both_ways():
    """RFC v1 guest_memfd_test: PRIVATE is EINVAL while the host still maps the page (29/39);
    after MADV_DONTNEED it converts, the host faults (SIGBUS), the guest runs on it; every
    conversion prepares the page anew (30/39): the guest reads 0, so does the host after."""
    run = run_json("-o", "abi=rfc-v1", program=kvm_client("private_guest", "rfc-v1", 0))
    assert run == {
        "bind": "OK",
        "private_while_mapped": "EINVAL",
        "madvise": "OK",
        "to_private": "OK",
        "host_while_private": "SIGBUS",
        "guest_read_first": [KVM_EXIT_IO, 0x11, 0],
        "guest_read_its_write": [KVM_EXIT_IO, 0x10, 0x42],
        "host_after_guest": "SIGBUS",
        "to_shared": "OK",
        "host_reads": 0,
        "code_page": True,
    }


def test_rfc_v1_hugetlb_private_guest():
    flags = KVM_GUEST_MEMFD_HUGETLB | KVM_GUEST_MEMFD_HUGE_2MB
    run = run_json("-o", "abi=rfc-v1", program=kvm_client("private_guest", "rfc-v1", flags, PAGE_2M))
    assert run["guest_read_its_write"] == [KVM_EXIT_IO, 0x10, 0x42]
    assert (run["host_while_private"], run["host_after_guest"]) == ("SIGBUS", "SIGBUS")


SET_ATTRIBUTES = """
import errno, fcntl, os, struct, sys
vm = fcntl.ioctl(os.open('/dev/kvm', os.O_RDWR), 0xAE01, int(sys.argv[1]))
def attributes(address, size, value, flags=0):
    try:
        fcntl.ioctl(vm, 0x4020AED2, struct.pack('=QQQQ', address, size, value, flags))
    except OSError as error:
        return errno.errorcode[error.errno]
    return 'OK'
cases = [(0, 4096, 8), (0, 4096, 8), (0, 4096, 0), (0, 4096, 8, 1), (0, 4096, 16), (0, 0, 8), (1 << 63, 1 << 63, 8),
         (512, 4096, 8)]
print(' '.join(attributes(*case) for case in cases))
"""


@pytest.mark.parametrize(
    "abi, vm_type, expected",
    [
        ("rfc-v1", 1, "OK OK OK EINVAL EINVAL EINVAL EINVAL EINVAL"),
        ("rfc-v1", 0, "EINVAL EINVAL OK EINVAL EINVAL EINVAL EINVAL EINVAL"),  # no private memory: PRIVATE unsupported
        ("rfc-v2", 0, "OK OK OK EINVAL EINVAL EINVAL EINVAL EINVAL"),  # supports_gmem VMs have it
        ("linux-6.8", 1, "OK OK OK EINVAL EINVAL EINVAL EINVAL EINVAL"),
    ],
)
def test_set_memory_attributes_checks_per_vm_type(abi, vm_type, expected):
    """kvm_vm_ioctl_set_mem_attributes(): no memslot needed; flags, attributes the VM supports,
    empty or overflowing ranges, alignment; a range that has the attributes already is 0."""
    result = gmemfs_run("-o", f"abi={abi}", program=[sys.executable, "-c", SET_ATTRIBUTES, str(vm_type)])
    assert result.stdout.strip() == expected, result.stderr


def test_a_slot_without_userspace_addr_runs_a_guest_on_the_files_pages():
    """Mainline 6.18's test_guest_memfd_guest: a guest_memfd slot with userspace_addr 0 on a
    type-0 VM. On this kernel such a slot exits as MMIO; under gmemfs run the guest writes the
    file, and the host reads it through its own mapping."""
    flags = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED
    guest = run_json("-o", "abi=upstream", program=kvm_client("guest", flags, False, 0, False))
    assert (guest["exit_reason"], guest["port"], guest["out_byte"]) == (KVM_EXIT_IO, 0x10, 0x41)
    assert (guest["guest_wrote"], guest["file_allocated"]) == (0x42, "0x1000-0x3000")
    native = json.loads(subprocess.run(kvm_client("guest", flags, False, 0, False), capture_output=True).stdout)
    assert native["exit_reason"] == KVM_EXIT_INTERNAL_ERROR, "this kernel's own slot cannot run the guest"


def test_without_gmemfs_run_this_kvm_has_no_private_vm():
    native = subprocess.run(kvm_client("caps", [235]), capture_output=True, text=True)
    assert json.loads(native.stdout) == {"235": [1, 1, "EINVAL"]}


TRACED_BY_ITS_CHILD = """
import ctypes, errno, fcntl, os, signal, time
libc = ctypes.CDLL(None, use_errno=True)
parent = os.getpid()
tracer = os.fork()
if tracer == 0:
    assert libc.ptrace(0x4206, parent, None, None) == 0, ctypes.get_errno()  # PTRACE_SEIZE
    os.write(1, b"")
    time.sleep(30)
    os._exit(0)
time.sleep(0.3)
try:
    fcntl.ioctl(os.open('/dev/kvm', os.O_RDWR), 0xAE01, 1)
except OSError as error:
    print(errno.errorcode[error.errno])
os.kill(tracer, signal.SIGKILL)
"""


def test_a_program_traced_already_gets_eperm_and_a_line_saying_why():
    result = gmemfs_run(program=[sys.executable, "-c", TRACED_BY_ITS_CHILD])
    assert result.stdout.strip() == "EPERM", result.stderr
    assert "traced already" in result.stderr


RFC_V2_2M = GUEST_MEMFD_FLAG_SUPPORT_SHARED | GUEST_MEMFD_FLAG_HUGETLB_V2 | GUESTMEM_HUGETLB_FLAG_2MB
PAGE_SIZES = pytest.mark.parametrize("huge, size", [(0, 0x10000), (RFC_V2_2M, PAGE_2M)], ids=["4K", "2M"])


@PAGE_SIZES
def test_a_conversion_with_a_running_guest_does_not_affect_the_surrounding_pages(huge, size):
    """RFC v2 conversions selftest, should_not_affect_surrounding_pages: four 4 KiB pages (inside
    one huge page for 2M); page 2 turns private and back while the guest uses all four."""
    run = run_json("-o", "abi=rfc-v2", program=kvm_client("conversions", huge | GUEST_MEMFD_FLAG_SUPPORT_SHARED, size))
    assert run == {
        "guest_sees_host": ["A", "A", "A", "A"],
        "page_2_private": 0,
        "host_sees": [ord("B"), ord("B"), "SIGBUS", ord("B")],
        "guest_on_private_page": ["B", "D"],
        "guest_sees_neighbours": ["D", "D", "D"],
        "page_2_shared": 0,
        "host_reads": ["E", "E", "D", "E"],
    }


@PAGE_SIZES
def test_a_file_created_private_is_the_guests_until_shared(huge, size):
    """RFC v2 conversions selftest, init_mappable_false (SUPPORT_SHARED | INIT_PRIVATE)."""
    flags = huge | GUEST_MEMFD_FLAG_SUPPORT_SHARED | GUEST_MEMFD_FLAG_INIT_PRIVATE
    run = run_json("-o", "abi=rfc-v2", program=kvm_client("conversions", flags, size))
    assert run == {
        "init_private_host": "SIGBUS",
        "init_private_guest": [0, ord("A")],  # never allocated: zeroes
        "init_private_to_shared": 0,
        "init_private_host_reads": "A",
    }
