"""The emulated slots' layout: KVM gets one memslot per run of a slot's private or shared pages.

A private VM's guest_memfd slot, or a slot without userspace memory, is ordinary memory to
KVM: its private runs point at our mapping of the file's guest view (a FUSE inode that
serves private pages only), its shared runs at the VMM's userspace_addr (or our mapping of
the file). After every change of attributes or conversion, only the pieces that changed are
given to KVM again, in the program's own thread (injection.ThreadTakeover).
"""

import os
import struct

from ..base.ranges import parse_ranges
from ..kernel.rules import parse_flags_value
from ..kernel.uapi import (
    KVM_MEM_GUEST_MEMFD,
    KVM_SET_USER_MEMORY_REGION,
    KVM_USER_MEMORY_REGION_STRUCT,
    XATTR_FLAGS,
    XATTR_SHARED,
    AbiProfile,
)
from .injection import MAP_SHARED, PROT_READ_WRITE, SYS_MADVISE, SYS_MMAP, SYS_MUNMAP
from .memslots import KVM_USER_MEM_SLOTS, MemoryRegion, Piece, pieces
from .vms import EmulatedSlot, Vm

MADV_DONTDUMP = 16


class SlotLayout:
    """Adds, lays out anew and removes the emulated slots of one program's VMs, by its profile's
    rules for where private pages come from."""

    def __init__(self, profile: AbiProfile) -> None:
        self.profile = profile

    def add(self, takeover, vm_fd: int, vm: Vm, region: MemoryRegion, binding, theirs) -> int:
        mappings = []
        file_fd = theirs[0]
        shared_base = region.userspace_addr
        private_base = 0
        if not shared_base and self.profile.mmap_allowed(file_flags(vm.bound_files[binding.file])):
            shared_base = self._map(takeover, file_fd, binding.offset, binding.size, mappings)
        if vm.private:
            private_base = self._map(takeover, theirs[1], binding.offset, binding.size, mappings)
            takeover.syscall(SYS_MADVISE, private_base, binding.size, MADV_DONTDUMP)  # no core dump of it
        emulated = EmulatedSlot(region, binding.file, shared_base, private_base, mappings)
        vm.emulated[region.slot_key] = emulated
        result = self.lay_out(takeover, vm_fd, vm, emulated.gpa_range, only=emulated)
        if result:
            self.remove(takeover, vm_fd, vm, emulated)
        return result

    def _map(self, takeover, fd: int, offset: int, size: int, mappings: list) -> int:
        address = takeover.syscall(SYS_MMAP, 0, size, PROT_READ_WRITE, MAP_SHARED, fd, offset)
        if address < 0:
            raise OSError(-address, "mmap of guest memory in the program")
        mappings.append((address, size))
        return address

    def remove(self, takeover, vm_fd: int, vm: Vm, emulated: EmulatedSlot) -> int:
        for slot_id in emulated.pieces.values():
            takeover.ioctl_with(vm_fd, KVM_SET_USER_MEMORY_REGION, piece_struct(emulated, slot_id, None))
        emulated.pieces.clear()
        for address, length in emulated.mappings:
            takeover.syscall(SYS_MUNMAP, address, length)
        vm.emulated.pop(emulated.region.slot_key, None)
        return 0

    def lay_out(self, takeover, vm_fd: int, vm: Vm, gpa_range, only: "EmulatedSlot | None" = None) -> int:
        """Give KVM the memslots that the private and shared pages of emulated slots call for now
        (those overlapping gpa_range, every one if None): changed pieces only."""
        for emulated in [only] if only else list(vm.emulated.values()):
            if gpa_range and not overlaps(emulated.gpa_range, gpa_range):
                continue
            region = emulated.region
            wanted = pieces(
                region.guest_phys_addr,
                region.memory_size,
                self._private_runs(vm, emulated),
                emulated.shared_base,
                emulated.private_base,
            )
            for piece in [piece for piece in emulated.pieces if piece not in wanted]:
                slot_id = emulated.pieces.pop(piece)
                takeover.ioctl_with(vm_fd, KVM_SET_USER_MEMORY_REGION, piece_struct(emulated, slot_id, None))
            for piece in wanted:
                if piece in emulated.pieces:
                    continue
                slot_id = self._free_piece_id(vm, emulated)
                result = takeover.ioctl_with(vm_fd, KVM_SET_USER_MEMORY_REGION, piece_struct(emulated, slot_id, piece))
                if result:
                    return result
                emulated.pieces[piece] = slot_id
        return 0

    def _private_runs(self, vm: Vm, emulated: EmulatedSlot) -> "list[tuple[int, int]]":
        """Guest physical runs of the slot that KVM must map from the file's private pages."""
        if not vm.private:
            return []
        region = emulated.region
        start, end = emulated.gpa_range
        fd = vm.bound_files[emulated.ino]
        if not self.profile.private_from_file(file_flags(fd)):
            return list(vm.private_gpas.overlapping(start, end))
        shared = parse_ranges(os.getxattr(fd, XATTR_SHARED).decode())
        to_gpa = start - region.guest_memfd_offset
        return [
            (low + to_gpa, high + to_gpa)
            for low, high in shared.gaps(region.guest_memfd_offset, region.guest_memfd_offset + region.memory_size)
        ]

    def _free_piece_id(self, vm: Vm, emulated: EmulatedSlot) -> int:
        """The slot's own id for its first piece, then ids from the top, which VMMs rarely use."""
        as_id, own = emulated.region.slot_key
        taken = vm.piece_ids() | set(vm.memslots.slots)
        if (as_id, own) not in vm.piece_ids():
            return own
        return next(slot_id for slot_id in range(KVM_USER_MEM_SLOTS - 1, 0, -1) if (as_id, slot_id) not in taken)

    def make_room_for(self, takeover, vm_fd: int, vm: Vm, region: MemoryRegion) -> None:
        """A VMM's slot id that one of our pieces holds: the piece moves to another id first."""
        for emulated in vm.emulated.values():
            for piece, slot_id in list(emulated.pieces.items()):
                if (
                    emulated.region.slot_key[0],
                    slot_id,
                ) == region.slot_key and emulated.region.slot_key != region.slot_key:
                    takeover.ioctl_with(vm_fd, KVM_SET_USER_MEMORY_REGION, piece_struct(emulated, slot_id, None))
                    del emulated.pieces[piece]
                    new_id = self._free_piece_id(vm, emulated)
                    takeover.ioctl_with(vm_fd, KVM_SET_USER_MEMORY_REGION, piece_struct(emulated, new_id, piece))
                    emulated.pieces[piece] = new_id


def file_flags(fd: int) -> int:
    return parse_flags_value(os.getxattr(fd, XATTR_FLAGS))


def overlaps(a: "tuple[int, int]", b: "tuple[int, int]") -> bool:
    return a[0] < b[1] and b[0] < a[1]


def piece_struct(emulated: EmulatedSlot, slot_id: int, piece: "Piece | None") -> bytes:
    """KVM_SET_USER_MEMORY_REGION for one piece (None: delete the piece's slot)."""
    slot = emulated.region.slot_key[0] << 16 | slot_id
    if piece is None:
        return struct.pack(KVM_USER_MEMORY_REGION_STRUCT, slot, 0, 0, 0, 0)
    flags = emulated.region.flags & ~KVM_MEM_GUEST_MEMFD
    return struct.pack(KVM_USER_MEMORY_REGION_STRUCT, slot, flags, piece.gpa, piece.size, piece.uaddr)
