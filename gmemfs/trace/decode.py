"""Words for what the supervisor and the daemon see: flags, modes, ioctl arguments, capabilities.

Each function turns the kernel's numbers into the names its headers give them; a bit or a
number with no name stays a number (hex), so that nothing the caller passed is hidden.
"""

import struct
from collections.abc import Iterable

from ..base.units import format_size
from ..kernel.uapi import (
    BASE_PAGE_SIZE,
    FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE,
    FALLOC_FL_ZERO_RANGE,
    HUGETLB_2025_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES,
    HUGETLB_2025_CAP_MEMORY_ATTRIBUTES2,
    KVM_CAP_GMEM_CONVERSION,
    KVM_CAP_GMEM_HUGETLB,
    KVM_CAP_GMEM_SHARED_MEM,
    KVM_CAP_GUEST_MEMFD,
    KVM_CAP_GUEST_MEMFD_FLAGS,
    KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES,
    KVM_CAP_MEMORY_ATTRIBUTES,
    KVM_CAP_MULTI_ADDRESS_SPACE,
    KVM_CAP_VM_TYPES,
    KVM_CHECK_EXTENSION,
    KVM_CREATE_GUEST_MEMFD,
    KVM_CREATE_VM,
    KVM_GMEM_CONVERT_PRIVATE,
    KVM_GMEM_CONVERT_SHARED,
    KVM_GUEST_MEMFD_HUGE_MASK,
    KVM_MEM_GUEST_MEMFD,
    KVM_MEM_LOG_DIRTY_PAGES,
    KVM_MEM_READONLY,
    KVM_MEMORY_ATTRIBUTE_PRIVATE,
    KVM_MEMORY_ATTRIBUTES_STRUCT,
    KVM_RUN,
    KVM_SET_MEMORY_ATTRIBUTES,
    KVM_SET_MEMORY_ATTRIBUTES2,
    KVM_SET_USER_MEMORY_REGION,
    KVM_SET_USER_MEMORY_REGION2,
    KVM_USER_MEMORY_REGION2_STRUCT,
    KVM_USER_MEMORY_REGION_STRUCT,
    AbiProfile,
    ConversionRequest,
)

# linux/falloc.h
FALLOCATE_MODES = (
    (FALLOC_FL_KEEP_SIZE, "KEEP_SIZE"),
    (FALLOC_FL_PUNCH_HOLE, "PUNCH_HOLE"),
    (0x04, "NO_HIDE_STALE"),
    (0x08, "COLLAPSE_RANGE"),
    (FALLOC_FL_ZERO_RANGE, "ZERO_RANGE"),
    (0x20, "INSERT_RANGE"),
    (0x40, "UNSHARE_RANGE"),
    (0x80, "WRITE_ZEROES"),
)
MEMORY_REGION_FLAGS = (
    (KVM_MEM_LOG_DIRTY_PAGES, "LOG_DIRTY_PAGES"),
    (KVM_MEM_READONLY, "READONLY"),
    (KVM_MEM_GUEST_MEMFD, "GUEST_MEMFD"),
)
MEMORY_ATTRIBUTES = ((KVM_MEMORY_ATTRIBUTE_PRIVATE, "PRIVATE"),)

# arch/x86/include/uapi/asm/kvm.h
VM_TYPES = {
    0: "KVM_X86_DEFAULT_VM",
    1: "KVM_X86_SW_PROTECTED_VM",
    2: "KVM_X86_SEV_VM",
    3: "KVM_X86_SEV_ES_VM",
    4: "KVM_X86_SNP_VM",
    5: "KVM_X86_TDX_VM",
}

IOCTLS = {
    KVM_CREATE_VM: "KVM_CREATE_VM",
    KVM_CHECK_EXTENSION: "KVM_CHECK_EXTENSION",
    KVM_RUN: "KVM_RUN",
    KVM_CREATE_GUEST_MEMFD: "KVM_CREATE_GUEST_MEMFD",
    KVM_SET_USER_MEMORY_REGION: "KVM_SET_USER_MEMORY_REGION",
    KVM_SET_USER_MEMORY_REGION2: "KVM_SET_USER_MEMORY_REGION2",
    KVM_SET_MEMORY_ATTRIBUTES: "KVM_SET_MEMORY_ATTRIBUTES",
    KVM_SET_MEMORY_ATTRIBUTES2: "KVM_SET_MEMORY_ATTRIBUTES2",
    KVM_GMEM_CONVERT_SHARED: "KVM_GMEM_CONVERT_SHARED",
    KVM_GMEM_CONVERT_PRIVATE: "KVM_GMEM_CONVERT_PRIVATE",
}

# Capabilities every profile's kernel names alike (linux/kvm.h).
CAPABILITIES = {
    KVM_CAP_MULTI_ADDRESS_SPACE: "KVM_CAP_MULTI_ADDRESS_SPACE",
    KVM_CAP_MEMORY_ATTRIBUTES: "KVM_CAP_MEMORY_ATTRIBUTES",
    KVM_CAP_GUEST_MEMFD: "KVM_CAP_GUEST_MEMFD",
    KVM_CAP_VM_TYPES: "KVM_CAP_VM_TYPES",
    KVM_CAP_GUEST_MEMFD_FLAGS: "KVM_CAP_GUEST_MEMFD_FLAGS",
}
# Numbers the series give different meanings (and mainline 7.2 gives to ARM and s390 features):
# named only for a profile that answers them.
SERIES_CAPABILITIES = {
    KVM_CAP_GMEM_SHARED_MEM: "KVM_CAP_GMEM_SHARED_MEM",
    KVM_CAP_GMEM_CONVERSION: "KVM_CAP_GMEM_CONVERSION",
    KVM_CAP_GMEM_HUGETLB: "KVM_CAP_GMEM_HUGETLB",
    HUGETLB_2025_CAP_MEMORY_ATTRIBUTES2: "KVM_CAP_MEMORY_ATTRIBUTES2",
    HUGETLB_2025_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES: "KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES",
    KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES: "KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES",
}


def bits(value: int, names: "Iterable[tuple[int, str]]") -> str:
    """'KEEP_SIZE|PUNCH_HOLE'; bits without a name as one hex number at the end; '0' for none."""
    words = []
    for bit, name in names:
        if value & bit:
            words.append(name)
            value &= ~bit
    if value:
        words.append(f"{value:#x}")
    return "|".join(words) or "0"


def size_words(size: int) -> str:
    """2097152 -> '2M', as people write sizes."""
    return format_size(size)


def range_words(offset: int, size: int) -> str:
    """'0x200000+2M': where a range starts, and how long it is."""
    return f"{offset:#x}+{format_size(size)}"


def guest_memfd_flags(flags: int, profile: AbiProfile) -> str:
    """kvm_create_guest_memfd's flags in the profile's names: 'HUGETLB|2M|INIT_SHARED'.

    The same bit means different things in different ABIs (1<<1 is RFC v1's HUGETLB, RFC v2's
    INIT_PRIVATE and mainline's INIT_SHARED), so the words depend on the profile."""
    names = [
        (profile.hugetlb, "HUGETLB"),
        (profile.mmap, "SUPPORT_SHARED" if profile.init_private else "MMAP"),
        (profile.init_shared, "INIT_SHARED"),
        (profile.init_private, "INIT_PRIVATE"),
    ]
    words = []
    rest = flags
    for bit, name in names:
        if bit and rest & bit:
            words.append(name)
            rest &= ~bit
    if profile.hugetlb and not profile.page_order:
        field = KVM_GUEST_MEMFD_HUGE_MASK << profile.huge_shift
        log2 = (rest & field) >> profile.huge_shift
        if log2:
            words.insert(1 if flags & profile.hugetlb else 0, format_size(1 << log2))
            rest &= ~field
    if rest:
        words.append(f"{rest:#x}")
    return "|".join(words) or "0"


def page_order_words(page_order: int) -> str:
    """hugetlb-2025's page_order: '9 (2M)'."""
    return f"{page_order} ({format_size(BASE_PAGE_SIZE << page_order)})" if page_order < 64 else str(page_order)


def create_guest_memfd_args(size: int, flags: int, profile: AbiProfile, page_order: int = 0) -> str:
    """KVM_CREATE_GUEST_MEMFD's arguments: 'size=1G flags=HUGETLB|2M' (hugetlb-2025: and page_order)."""
    words = f"size={format_size(size)} flags={guest_memfd_flags(flags, profile)}"
    return f"{words} page_order={page_order_words(page_order)}" if profile.page_order else words


def fallocate_mode(mode: int) -> str:
    return bits(mode, FALLOCATE_MODES)


def fallocate_args(mode: int, offset: int, length: int) -> str:
    """'mode=KEEP_SIZE|PUNCH_HOLE range=0x0+2M'."""
    return f"mode={fallocate_mode(mode)} range={range_words(offset, length)}"


def memory_region_flags(flags: int) -> str:
    return bits(flags, MEMORY_REGION_FLAGS)


def memory_region_args(request: int, data: bytes) -> str:
    """KVM_SET_USER_MEMORY_REGION(2)'s struct: 'slot=1 gpa=0x100000000 size=2M uaddr=0x0
    flags=GUEST_MEMFD gmem=7+0x0' (an address space other than 0 as 'slot=1 as=1')."""
    if request == KVM_SET_USER_MEMORY_REGION2:
        slot, flags, gpa, size, uaddr, gmem_offset, gmem_fd, *_pad = struct.unpack(
            KVM_USER_MEMORY_REGION2_STRUCT, data[: struct.calcsize(KVM_USER_MEMORY_REGION2_STRUCT)]
        )
    else:
        slot, flags, gpa, size, uaddr = struct.unpack(
            KVM_USER_MEMORY_REGION_STRUCT, data[: struct.calcsize(KVM_USER_MEMORY_REGION_STRUCT)]
        )
        gmem_fd = gmem_offset = 0
    address_space = f" as={slot >> 16}" if slot >> 16 else ""
    words = (
        f"slot={slot & 0xFFFF}{address_space} gpa={gpa:#x} size={format_size(size)} uaddr={uaddr:#x}"
        f" flags={memory_region_flags(flags)}"
    )
    if flags & KVM_MEM_GUEST_MEMFD and request == KVM_SET_USER_MEMORY_REGION2:
        words += f" gmem={gmem_fd}+{gmem_offset:#x}"
    return words


def memory_attributes(attributes: int) -> str:
    return bits(attributes, MEMORY_ATTRIBUTES)


def memory_attributes_args(data: bytes) -> str:
    """KVM_SET_MEMORY_ATTRIBUTES's struct (on the VM fd): 'gpa=0x0+2M attributes=PRIVATE'."""
    address, size, attributes, flags = struct.unpack(
        KVM_MEMORY_ATTRIBUTES_STRUCT, data[: struct.calcsize(KVM_MEMORY_ATTRIBUTES_STRUCT)]
    )
    words = f"gpa={range_words(address, size)} attributes={memory_attributes(attributes)}"
    return f"{words} flags={flags:#x}" if flags else words


def conversion_args(request: ConversionRequest) -> str:
    """A conversion on the guest_memfd fd: 'range=0x0+2M to private', with any flags, reserved
    words or error_offset the caller passed that should have been 0."""
    words = f"range={range_words(request.offset, request.size)} to {'private' if request.to_private else 'shared'}"
    if request.attributes & ~KVM_MEMORY_ATTRIBUTE_PRIVATE:
        words += f" attributes={memory_attributes(request.attributes)}"
    if request.flags:
        words += f" flags={request.flags:#x}"
    if request.error_offset:
        words += f" error_offset={request.error_offset:#x}"
    if any(request.reserved):
        words += " reserved=" + ",".join(f"{word:#x}" for word in request.reserved)
    return words


def capability_name(capability: int, profile: "AbiProfile | None" = None) -> str:
    """KVM_CHECK_EXTENSION's argument: 'KVM_CAP_GUEST_MEMFD'; a number the profile does not name stays one."""
    if capability in CAPABILITIES:
        return CAPABILITIES[capability]
    if profile is not None and capability in dict(profile.capabilities) and capability in SERIES_CAPABILITIES:
        return SERIES_CAPABILITIES[capability]
    return str(capability)


def capability_answer(capability: int, answer: int, profile: AbiProfile) -> str:
    """The answer in words where it is a set of bits: VM types, guest_memfd flags, memory attributes."""
    if capability == KVM_CAP_VM_TYPES:
        return vm_types(answer)
    if capability == KVM_CAP_GUEST_MEMFD_FLAGS:
        return guest_memfd_flags(answer, profile)
    name = capability_name(capability, profile)
    if name in ("KVM_CAP_MEMORY_ATTRIBUTES", "KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES"):
        return memory_attributes(answer)
    return str(answer)


def vm_type(number: int) -> str:
    return VM_TYPES.get(number, str(number))


def vm_types(mask: int) -> str:
    """KVM_CAP_VM_TYPES's bit mask: 'KVM_X86_DEFAULT_VM|KVM_X86_SW_PROTECTED_VM'."""
    return bits(mask, ((1 << number, name) for number, name in VM_TYPES.items()))


def ioctl_name(request: int) -> str:
    """The name of an ioctl the supervisor traps; others as hex. Only the low 32 bits count (cmd is an unsigned int)."""
    request &= 0xFFFFFFFF
    return IOCTLS.get(request, f"{request:#x}")
