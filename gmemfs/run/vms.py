"""What the supervisor knows of each of the program's VMs, and of the slots it emulates in them."""

from dataclasses import dataclass, field

from ..base.ranges import RangeSet
from .memslots import MemoryRegion, Memslots, Piece
from .tracee import KnownProcess


@dataclass
class EmulatedSlot:
    """A guest_memfd slot KVM holds as several memslots: private runs over our mapping of the
    file's guest view, shared runs over the program's own memory (or our mapping of the file)."""

    region: MemoryRegion
    ino: int  # the gmemfs file it binds
    shared_base: int
    private_base: int
    mappings: list[tuple[int, int]]  # (address, length) we mapped in the program, to unmap
    pieces: dict[Piece, int] = field(default_factory=dict)  # each piece's KVM slot id

    @property
    def gpa_range(self) -> tuple[int, int]:
        return self.region.guest_phys_addr, self.region.guest_phys_addr + self.region.memory_size


@dataclass
class Vm:
    """One of the program's VMs, known by our copy of its fd (kcmp compares open files).

    creator: the process whose thread made it. KVM binds a VM to its creator's mm and answers
    EIO to a VM ioctl from any other (kvm_vm_ioctl()); None for a VM we did not see created
    (the program was traced, so its thread could not make it for us): anyone may use it."""

    fd: int
    memslots: Memslots
    creator: "KnownProcess | None" = None
    private: bool = False  # created as a VM type with private memory, emulated on a type-0 VM
    bound_files: dict[int, int] = field(default_factory=dict)  # gmemfs inode -> our fd, while a slot binds it
    private_gpas: RangeSet = field(default_factory=RangeSet)  # KVM_SET_MEMORY_ATTRIBUTES(PRIVATE)
    emulated: dict[tuple[int, int], EmulatedSlot] = field(default_factory=dict)

    def piece_ids(self) -> "set[tuple[int, int]]":
        return {(key[0], slot_id) for key, slot in self.emulated.items() for slot_id in slot.pieces.values()}
