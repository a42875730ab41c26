"""KVM's memslot checks for guest_memfd, case by case (virt/kvm/kvm_main.c, guest_memfd.c of 6.12)."""

import errno

import pytest

from gmemfs.kernel.rules import GmemError
from gmemfs.kernel.uapi import KVM_MEM_GUEST_MEMFD, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY
from gmemfs.run.memslots import NOT_OPEN, GmemFile, MemoryRegion, Memslots

G = KVM_MEM_GUEST_MEMFD
FILE = GmemFile(ino=7, size=0x4000, this_vm=True)


def errno_of(slots: Memslots, region: MemoryRegion, gmem=FILE, version=2) -> str:
    try:
        slots.apply(region, slots.check(region, gmem, version=version))
    except GmemError as error:
        return errno.errorcode[error.errno]
    return "OK"


def region(slot=0, flags=G, gpa=0x100000, size=0x2000, uaddr=0x7F0000000000, offset=0, fd=5) -> MemoryRegion:
    return MemoryRegion(slot, flags, gpa, size, uaddr, offset, fd)


@pytest.mark.parametrize(
    "case, expected",
    [
        (region(flags=G | KVM_MEM_READONLY), "EINVAL"),  # read-only guest_memfd would be MMIO
        (region(flags=G | KVM_MEM_LOG_DIRTY_PAGES), "EINVAL"),  # no dirty logging of private memory
        (region(flags=1 << 3), "EINVAL"),
        (region(size=0x1800), "EINVAL"),
        (region(gpa=0x100800), "EINVAL"),
        (region(uaddr=0x7F0000000800), "EINVAL"),
        (region(uaddr=1 << 47), "EINVAL"),  # not a user address
        (region(offset=0x800), "EINVAL"),
        (region(offset=(1 << 64) - 0x1000), "EINVAL"),  # offset + size overflows
        (region(slot=2 << 16), "EINVAL"),  # x86 has two address spaces
        (region(slot=0x7FFD), "EINVAL"),  # KVM_USER_MEM_SLOTS
        (region(gpa=(1 << 64) - 0x1000), "EINVAL"),
        (region(size=0), "EINVAL"),  # deleting a slot that does not exist
        (region(offset=0x3000), "EINVAL"),  # passes the file's size
        (region(), "OK"),
    ],
)
def test_one_region_on_an_empty_vm(case, expected):
    assert errno_of(Memslots(), case) == expected


def test_a_closed_fd_is_ebadf_after_every_other_check():
    assert errno_of(Memslots(), region(), gmem=NOT_OPEN) == "EBADF"
    assert errno_of(Memslots(), region(offset=0x800), gmem=NOT_OPEN) == "EINVAL"


def test_another_vms_file_is_einval():
    assert errno_of(Memslots(), region(), gmem=GmemFile(7, 0x4000, this_vm=False)) == "EINVAL"


def test_a_file_range_binds_once():
    slots = Memslots()
    assert errno_of(slots, region(slot=0)) == "OK"
    assert errno_of(slots, region(slot=1, gpa=0x200000, offset=0x1000)) == "EINVAL"
    assert errno_of(slots, region(slot=1, gpa=0x200000, offset=0x2000)) == "OK"
    assert errno_of(slots, region(slot=0, size=0)) == "OK"
    assert errno_of(slots, region(slot=2, gpa=0x300000, offset=0)) == "OK", "free again after the delete"


def test_a_bound_range_is_the_profiles_errno():
    """6.18's kvm_gmem_bind() says EINVAL for a range already bound, 7.2's EEXIST."""
    slots = Memslots(bound_range_errno=errno.EEXIST)
    assert errno_of(slots, region(slot=0)) == "OK"
    assert errno_of(slots, region(slot=1, gpa=0x200000, offset=0x1000)) == "EEXIST"
    assert errno_of(slots, region(slot=1, gpa=0x200000, offset=0x800)) == "EINVAL", "alignment comes first"


def test_guest_memfd_slots_cannot_be_modified_or_moved():
    slots = Memslots()
    errno_of(slots, region(slot=0))
    assert errno_of(slots, region(slot=0, gpa=0x400000)) == "EINVAL"
    assert errno_of(slots, region(slot=0, flags=0, gpa=0x400000)) == "EINVAL"
    assert errno_of(slots, region(slot=0, flags=0)) == "EINVAL", "even 'no change' without the flag"


def test_overlapping_guest_physical_ranges_are_eexist_per_address_space():
    slots = Memslots()
    errno_of(slots, region(slot=0, flags=0))
    assert errno_of(slots, region(slot=1, gpa=0x101000, offset=0x2000)) == "EEXIST"
    assert errno_of(slots, region(slot=(1 << 16) | 1, gpa=0x101000, offset=0x2000)) == "OK", "SMM address space"


def test_plain_slots_move_and_change_flags():
    slots = Memslots()
    errno_of(slots, region(slot=0, flags=0))
    assert errno_of(slots, region(slot=0, flags=KVM_MEM_LOG_DIRTY_PAGES)) == "OK"
    assert errno_of(slots, region(slot=0, flags=0, gpa=0x900000)) == "OK"
    assert errno_of(slots, region(slot=0, flags=KVM_MEM_READONLY)) == "EINVAL"
    assert errno_of(slots, region(slot=0, flags=0, uaddr=0x7F0000100000, gpa=0x900000)) == "EINVAL"


def test_the_v1_ioctl_knows_no_guest_memfd_flag():
    assert errno_of(Memslots(), region(), version=1) == "EINVAL"


def test_bound_ranges_map_guest_physical_to_file_offsets():
    slots = Memslots()
    errno_of(slots, region(slot=0, gpa=0x100000, size=0x2000, offset=0x1000))
    errno_of(slots, region(slot=1, flags=0, gpa=0x200000))
    assert list(slots.bound_ranges(0x101000, 0x300000)) == [(7, 0x2000, 0x1000)]


def test_rfc_v2_refuses_a_shared_file_that_userspace_addr_does_not_map():
    elsewhere = GmemFile(ino=7, size=0x4000, this_vm=True, maps_its_range=False)
    assert errno_of(Memslots(), region(), gmem=elsewhere) == "EINVAL"
