"""A VM's memslots as KVM keeps them, and KVM's checks for binding a guest_memfd to one.

Under `gmemfs run`, KVM itself creates every memslot: a slot over a gmemfs file
reaches KVM as an ordinary slot over its userspace address. So what KVM would
refuse for a guest_memfd slot must be decided here first, with KVM's errno, in
the order of __kvm_set_memory_region() and kvm_gmem_bind() (Linux 6.12,
virt/kvm/kvm_main.c and guest_memfd.c; 7.2 answers EEXIST for a bound range). Pure: no I/O.
"""

import errno
from dataclasses import dataclass, replace

from ..kernel.rules import GmemError
from ..kernel.uapi import BASE_PAGE_SIZE, KVM_MEM_GUEST_MEMFD, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY, U64_MAX

KVM_MEM_SLOTS_NUM = 0x7FFF  # SHRT_MAX
KVM_USER_MEM_SLOTS = KVM_MEM_SLOTS_NUM - 3  # x86 keeps three for itself
KVM_MEM_MAX_NR_PAGES = (1 << 31) - 1
TASK_SIZE_MAX = (1 << 47) - BASE_PAGE_SIZE  # x86-64, 4-level paging: the end of user addresses
SET_USER_MEMORY_REGION_V1_FLAGS = KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY


@dataclass(frozen=True)
class MemoryRegion:
    """struct kvm_userspace_memory_region2, as the VMM passed it."""

    slot: int
    flags: int
    guest_phys_addr: int
    memory_size: int
    userspace_addr: int
    guest_memfd_offset: int = 0
    guest_memfd: int = 0

    @property
    def slot_key(self) -> tuple[int, int]:
        """(address space, slot id): slot's high and low 16 bits."""
        return self.slot >> 16, self.slot & 0xFFFF


@dataclass(frozen=True)
class GmemBinding:
    """A slot's pages are the file's [offset, offset + size)."""

    file: int  # the gmemfs inode number
    offset: int
    size: int

    def overlaps(self, other: "GmemBinding") -> bool:
        return (
            self.file == other.file
            and self.offset < other.offset + other.size
            and other.offset < self.offset + self.size
        )


@dataclass(frozen=True)
class Memslot:
    base_gfn: int
    npages: int
    flags: int
    userspace_addr: int
    binding: "GmemBinding | None" = None

    @property
    def guest_phys_range(self) -> tuple[int, int]:
        return self.base_gfn * BASE_PAGE_SIZE, (self.base_gfn + self.npages) * BASE_PAGE_SIZE


@dataclass(frozen=True)
class GmemFile:
    """What KVM knows of the fd a slot names: a gmemfs file of this VM or another, and its size."""

    ino: int
    size: int
    this_vm: bool
    maps_its_range: bool = True  # RFC v2, shared files: userspace_addr maps this file at this offset


NOT_OPEN = None  # the fd a slot names is not open: EBADF


# The kernel's functions that refuse (virt/kvm/kvm_main.c and guest_memfd.c).
VM_IOCTL = "kvm_vm_ioctl"
SET_REGION = "kvm_vm_ioctl_set_memory_region"
CHECK_FLAGS = "check_memory_region_flags"
SET_REGION_CHECKS = "kvm_set_memory_region"  # __kvm_set_memory_region before 6.12
BIND = "kvm_gmem_bind"


def _refuse(rule: str, function: str, err: int = errno.EINVAL) -> GmemError:
    return GmemError(err, f"memslot: {rule}", function=function)


class Memslots:
    """Every memslot of one VM, in every address space."""

    def __init__(self, address_spaces: int = 2, bound_range_errno: int = errno.EINVAL) -> None:
        self.address_spaces = address_spaces
        self.bound_range_errno = bound_range_errno  # the ABI profile's: EINVAL to 6.18, EEXIST since 7.2
        self.slots: dict[tuple[int, int], Memslot] = {}

    def involves_guest_memfd(self, region: MemoryRegion) -> bool:
        """Whether KVM's answer depends on guest_memfd state that KVM itself will not see."""
        old = self.slots.get(region.slot_key)
        return bool(region.flags & KVM_MEM_GUEST_MEMFD or (old and old.binding))

    def check(
        self, region: MemoryRegion, gmem: "GmemFile | None" = None, *, version: int = 2, guest_memfd: bool = True
    ) -> "Memslot | None":
        """The slot KVM would leave at region.slot (None: deleted), or GmemError with KVM's errno.

        gmem describes the gmemfs file a KVM_MEM_GUEST_MEMFD region names (NOT_OPEN: no such fd);
        guest_memfd: whether this VM takes guest_memfd slots at all (6.8-6.17 and the series: only
        VMs with private memory).
        """
        if version == 1 and region.flags & ~SET_USER_MEMORY_REGION_V1_FLAGS:
            raise _refuse(f"flags {region.flags:#x} are not valid for KVM_SET_USER_MEMORY_REGION", VM_IOCTL)
        as_id, slot_id = region.slot_key
        if slot_id >= KVM_USER_MEM_SLOTS:
            raise _refuse(f"slot id {slot_id} is not below {KVM_USER_MEM_SLOTS}", SET_REGION)
        self._check_flags(region.flags, guest_memfd)
        self._check_sanity(region)
        old = self.slots.get(region.slot_key)
        if not region.memory_size:
            if old is None:
                raise _refuse(f"slot {region.slot:#x} does not exist, so cannot be deleted", SET_REGION_CHECKS)
            return None
        base_gfn, npages = region.guest_phys_addr // BASE_PAGE_SIZE, region.memory_size // BASE_PAGE_SIZE
        new = Memslot(base_gfn, npages, region.flags, region.userspace_addr)
        if old is not None:
            self._check_modification(region, old, new)
            if base_gfn == old.base_gfn:
                return replace(new, binding=old.binding)  # a flags-only change, or none
        if any(
            key[0] == as_id
            and key != region.slot_key
            and slot.base_gfn < base_gfn + npages
            and base_gfn < slot.base_gfn + slot.npages
            for key, slot in self.slots.items()
        ):
            raise _refuse(
                f"guest physical range of slot {region.slot:#x} overlaps another slot", SET_REGION_CHECKS, errno.EEXIST
            )
        if old is not None:
            return replace(new, binding=old.binding)  # a move keeps no guest_memfd (refused above)
        if region.flags & KVM_MEM_GUEST_MEMFD:
            return replace(new, binding=self._check_binding(region, gmem))
        return new

    def apply(self, region: MemoryRegion, slot: "Memslot | None") -> None:
        """Record what check() decided, once KVM is let to do it."""
        if slot is None:
            self.slots.pop(region.slot_key, None)
        else:
            self.slots[region.slot_key] = slot

    def bound_ranges(self, start: int, end: int):
        """(file inode, file offset, length) of every guest_memfd page that guest physical [start, end) covers."""
        for slot in self.slots.values():
            if slot.binding is None:
                continue
            slot_start, slot_end = slot.guest_phys_range
            low, high = max(start, slot_start), min(end, slot_end)
            if low < high:
                yield slot.binding.file, slot.binding.offset + low - slot_start, high - low

    @staticmethod
    def _check_flags(flags: int, guest_memfd: bool) -> None:
        """check_memory_region_flags(): KVM_MEM_GUEST_MEMFD where the VM type takes it."""
        valid = KVM_MEM_LOG_DIRTY_PAGES | (KVM_MEM_GUEST_MEMFD if guest_memfd else 0)
        if flags & KVM_MEM_GUEST_MEMFD:
            valid &= ~KVM_MEM_LOG_DIRTY_PAGES  # no dirty logging of private memory
        else:
            valid |= KVM_MEM_READONLY  # read-only guest_memfd slots would be MMIO
        if flags & ~valid:
            raise _refuse(f"flags {flags:#x} are not valid together", CHECK_FLAGS)

    def _check_sanity(self, region: MemoryRegion) -> None:
        """The 'general sanity checks' of __kvm_set_memory_region()."""
        size = region.memory_size
        if size % BASE_PAGE_SIZE:
            raise _refuse(f"memory_size {size:#x} is not page aligned", SET_REGION_CHECKS)
        if region.guest_phys_addr % BASE_PAGE_SIZE:
            raise _refuse(f"guest_phys_addr {region.guest_phys_addr:#x} is not page aligned", SET_REGION_CHECKS)
        if region.userspace_addr % BASE_PAGE_SIZE or region.userspace_addr + size > TASK_SIZE_MAX:
            raise _refuse(
                f"userspace_addr {region.userspace_addr:#x} is not a page-aligned user address", SET_REGION_CHECKS
            )
        if region.flags & KVM_MEM_GUEST_MEMFD and (
            region.guest_memfd_offset % BASE_PAGE_SIZE or region.guest_memfd_offset + size > U64_MAX
        ):
            raise _refuse(
                f"guest_memfd_offset {region.guest_memfd_offset:#x} is not page aligned or overflows", SET_REGION_CHECKS
            )
        as_id, slot_id = region.slot_key
        if as_id >= self.address_spaces or slot_id >= KVM_MEM_SLOTS_NUM:
            raise _refuse(f"address space {as_id} does not exist", SET_REGION_CHECKS)
        if region.guest_phys_addr + size > U64_MAX:
            raise _refuse("guest_phys_addr + memory_size overflows", SET_REGION_CHECKS)
        if size // BASE_PAGE_SIZE > KVM_MEM_MAX_NR_PAGES:
            raise _refuse(f"memory_size {size:#x} is larger than a slot may be", SET_REGION_CHECKS)

    @staticmethod
    def _check_modification(region: MemoryRegion, old: Memslot, new: Memslot) -> None:
        if region.flags & KVM_MEM_GUEST_MEMFD:
            raise _refuse(
                f"slot {region.slot:#x} exists: guest_memfd slots can only be created and deleted", SET_REGION_CHECKS
            )
        if (
            new.userspace_addr != old.userspace_addr
            or new.npages != old.npages
            or (new.flags ^ old.flags) & KVM_MEM_READONLY
            or old.binding
        ):
            raise _refuse(
                f"slot {region.slot:#x} exists and this change is not a move or a flags change", SET_REGION_CHECKS
            )

    def _check_binding(self, region: MemoryRegion, gmem: "GmemFile | None") -> GmemBinding:
        """kvm_gmem_bind(): the fd is a guest_memfd of this VM, the range fits and is bound once."""
        if gmem is NOT_OPEN:
            raise _refuse(f"guest_memfd {region.guest_memfd} is not an open fd", BIND, errno.EBADF)
        if not gmem.this_vm:
            raise _refuse(f"fd {region.guest_memfd} is not a guest_memfd of this VM", BIND)
        binding = GmemBinding(gmem.ino, region.guest_memfd_offset, region.memory_size)
        if binding.offset + binding.size > gmem.size:
            raise _refuse(
                f"guest_memfd range {binding.offset:#x}+{binding.size:#x} passes its size {gmem.size:#x}", BIND
            )
        if not gmem.maps_its_range:  # RFC v2 (mmap v9 08/17): kvm_gmem_bind() asks kvm_gmem_is_same_range()
            raise _refuse(
                f"userspace_addr {region.userspace_addr:#x} does not map the file at {binding.offset:#x}"
                " (kvm_gmem_is_same_range)",
                BIND,
            )
        if any(slot.binding and slot.binding.overlaps(binding) for slot in self.slots.values()):
            raise _refuse(
                f"guest_memfd range {binding.offset:#x}+{binding.size:#x} is already bound",
                BIND,
                self.bound_range_errno,
            )
        return binding


@dataclass(frozen=True)
class Piece:
    """One memslot KVM holds for part of an emulated slot: guest physical [gpa, gpa + size)
    backed by the program's memory at uaddr."""

    gpa: int
    size: int
    uaddr: int


def pieces(gpa: int, size: int, private: "list[tuple[int, int]]", shared_base: int, private_base: int) -> "list[Piece]":
    """How KVM's memslots cover a guest_memfd slot of a VM whose private pages come from the
    file's guest view (at private_base) and whose shared pages come from shared_base: one piece
    per run of private or shared pages, in order. `private`: sorted guest physical runs."""
    result, at = [], gpa
    for start, end in private:
        start, end = max(start, gpa), min(end, gpa + size)
        if start >= end:
            continue
        if at < start:
            result.append(Piece(at, start - at, shared_base + at - gpa))
        result.append(Piece(start, end - start, private_base + start - gpa))
        at = end
    if at < gpa + size:
        result.append(Piece(at, gpa + size - at, shared_base + at - gpa))
    return result
