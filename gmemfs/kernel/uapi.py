"""The kernel's numbers: guest_memfd flags, fallocate modes, ioctls, xattr names.

Pure constants and ABI profiles, so that every other layer (and VMM code) can
name the same bits as the hugetlb series' UAPI header.
"""

import errno
import struct
from dataclasses import dataclass, replace

# Flags of struct kvm_create_guest_memfd, in the seed's encoding (RFC v1, 2024).
KVM_GUEST_MEMFD_HUGETLB = 1 << 1
KVM_GUEST_MEMFD_HUGE_SHIFT = 26  # HUGETLB_FLAG_ENCODE_SHIFT
KVM_GUEST_MEMFD_HUGE_MASK = 0x3F  # HUGETLB_FLAG_ENCODE_MASK


def huge_flag(log2_page_size: int, shift: int = KVM_GUEST_MEMFD_HUGE_SHIFT) -> int:
    """The size field that selects a huge page of 2**log2_page_size bytes (RFC v1's field by default)."""
    return log2_page_size << shift


KVM_GUEST_MEMFD_HUGE_64KB = huge_flag(16)
KVM_GUEST_MEMFD_HUGE_512KB = huge_flag(19)
KVM_GUEST_MEMFD_HUGE_1MB = huge_flag(20)
KVM_GUEST_MEMFD_HUGE_2MB = huge_flag(21)
KVM_GUEST_MEMFD_HUGE_8MB = huge_flag(23)
KVM_GUEST_MEMFD_HUGE_16MB = huge_flag(24)
KVM_GUEST_MEMFD_HUGE_32MB = huge_flag(25)
KVM_GUEST_MEMFD_HUGE_256MB = huge_flag(28)
KVM_GUEST_MEMFD_HUGE_512MB = huge_flag(29)
KVM_GUEST_MEMFD_HUGE_1GB = huge_flag(30)
KVM_GUEST_MEMFD_HUGE_2GB = huge_flag(31)
KVM_GUEST_MEMFD_HUGE_16GB = huge_flag(34)

BASE_PAGE_SIZE = 4096
U64_MAX = (1 << 64) - 1

# fallocate(2) modes (linux/falloc.h).
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10

# Read-only inspection attributes, and the one writable while a file is unsized.
XATTR_FLAGS = b"user.gmem.flags"
XATTR_PAGE_SIZE = b"user.gmem.page_size"
XATTR_RESERVED = b"user.gmem.reserved"
XATTR_ALLOCATED = b"user.gmem.allocated"
XATTR_SHARED = b"user.gmem.shared"
XATTR_NAMES = (XATTR_FLAGS, XATTR_PAGE_SIZE, XATTR_RESERVED, XATTR_ALLOCATED, XATTR_SHARED)
XATTR_PAGE_ORDER = b"user.gmem.page_order"  # hugetlb-2025: kvm_create_guest_memfd's page_order, while unsized
XATTR_UNLINKED = b"user.gmem.unlinked"  # on the mount's root: files that only fds reach
XATTR_ABI = b"user.gmem.abi"  # on the mount's root: the ABI profile's name
GUEST_VIEW_PREFIX = b".gmemfs-guest-view-"  # + a file's inode number: its guest view, for root only
TRACE_FILE = b".gmemfs-trace"  # the daemon's event stream (gmemfs.trace), for root only
XATTR_SIZE_MAX = 65536  # linux/limits.h: the longest value getxattr(2) delivers (E2BIG beyond)


# Later ABIs' bits, selectable as profiles (-o abi=...).
GUEST_MEMFD_FLAG_SUPPORT_SHARED = 1 << 0  # RFC v2
GUEST_MEMFD_FLAG_INIT_PRIVATE = 1 << 1  # RFC v2
GUEST_MEMFD_FLAG_HUGETLB_V2 = 1 << 2  # RFC v2
GUESTMEM_HUGETLB_FLAG_SHIFT = 58  # RFC v2 (include/uapi/linux/guestmem.h): the size field is bits 58..63
GUESTMEM_HUGETLB_FLAG_2MB = huge_flag(21, GUESTMEM_HUGETLB_FLAG_SHIFT)
GUESTMEM_HUGETLB_FLAG_1GB = huge_flag(30, GUESTMEM_HUGETLB_FLAG_SHIFT)
GUEST_MEMFD_FLAG_MMAP = 1 << 0  # mainline
GUEST_MEMFD_FLAG_INIT_SHARED = 1 << 1  # mainline
GUEST_MEMFD_FLAG_HUGETLB = 1 << 2  # the hugetlb restructuring series (Dec 2025), page size in page_order

# RFC v2 conversion ioctls: _IOWR(0xAF, 0x41/0x42, struct kvm_gmem_convert).
KVM_GMEM_CONVERT_STRUCT = "=QQQ5Q"  # offset, size, error_offset, reserved[5]: 64 bytes
KVM_GMEM_CONVERT_SIZE = 64
KVM_GMEM_CONVERT_SHARED = (3 << 30) | (KVM_GMEM_CONVERT_SIZE << 16) | (0xAF << 8) | 0x41
KVM_GMEM_CONVERT_PRIVATE = (3 << 30) | (KVM_GMEM_CONVERT_SIZE << 16) | (0xAF << 8) | 0x42
CONVERSION_GRANULE = 4096  # conversions work on 4 KiB pages, even inside a huge page

# In-place conversion series v7 (May 2026): KVM_SET_MEMORY_ATTRIBUTES2 on the guest_memfd fd.
KVM_SET_MEMORY_ATTRIBUTES2_STRUCT = "=5Q11Q"  # offset, size, attributes, flags, error_offset (out), reserved[11]
KVM_SET_MEMORY_ATTRIBUTES2_SIZE = 128
KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES = 249
# The hugetlb restructuring series (linux-cc wip-gmem-conversions-hugetlb-restructuring-12-08-25, Dec
# 2025) publishes no uapi header of its own; the hugetlb-2025 profile pins AMDESE/linux-kvm 07fb82367304
# include/uapi/linux/kvm.h, the one text with its create struct: `__u8 page_order` at offset 16 of
# kvm_create_guest_memfd, GUEST_MEMFD_FLAG_HUGETLB 1 << 2, KVM_SET_MEMORY_ATTRIBUTES2 = 0xd2 with the
# 128-byte struct, and these two capabilities (numbers that Linux 7.2 gives to s390 features).
HUGETLB_2025_CAP_MEMORY_ATTRIBUTES2 = 247
HUGETLB_2025_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES = 248


# KVM's own ioctls and capabilities, which `gmemfs run` answers for a program (linux/kvm.h).
KVMIO = 0xAE


def _ioc(direction: int, kind: int, number: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (kind << 8) | number


_IOC_WRITE, _IOC_READ = 1, 2
KVM_CREATE_VM = _ioc(0, KVMIO, 0x01, 0)
KVM_CHECK_EXTENSION = _ioc(0, KVMIO, 0x03, 0)
KVM_RUN = _ioc(0, KVMIO, 0x80, 0)
KVM_X86_DEFAULT_VM = 0
KVM_X86_SW_PROTECTED_VM = 1  # private memory in software: what gmemfs run emulates on any KVM
KVM_CREATE_GUEST_MEMFD_STRUCT = "=QQ6Q"  # size, flags, reserved[6]
KVM_CREATE_GUEST_MEMFD_PAGE_ORDER_STRUCT = "=QQBBHI5Q"  # hugetlb-2025: size, flags, page_order, reserve8/16/32, [5]
KVM_CREATE_GUEST_MEMFD = _ioc(_IOC_READ | _IOC_WRITE, KVMIO, 0xD4, 64)
KVM_USER_MEMORY_REGION_STRUCT = "=IIQQQ"  # slot, flags, guest_phys_addr, memory_size, userspace_addr
KVM_USER_MEMORY_REGION2_STRUCT = "=IIQQQQII14Q"  # ... guest_memfd_offset, guest_memfd, pad1, pad2[14]
KVM_SET_USER_MEMORY_REGION = _ioc(_IOC_WRITE, KVMIO, 0x46, 32)
KVM_SET_USER_MEMORY_REGION2 = _ioc(_IOC_WRITE, KVMIO, 0x49, 160)
KVM_MEMORY_ATTRIBUTES_STRUCT = "=QQQQ"  # address, size, attributes, flags
KVM_SET_MEMORY_ATTRIBUTES = _ioc(_IOC_WRITE, KVMIO, 0xD2, 32)
KVM_MEMORY_ATTRIBUTE_PRIVATE = 1 << 3
KVM_MEM_LOG_DIRTY_PAGES = 1 << 0
KVM_MEM_READONLY = 1 << 1
KVM_MEM_GUEST_MEMFD = 1 << 2
KVM_CAP_MULTI_ADDRESS_SPACE = 118
KVM_CAP_MEMORY_ATTRIBUTES = 233
KVM_CAP_GUEST_MEMFD = 234
KVM_CAP_VM_TYPES = 235
KVM_CAP_GMEM_SHARED_MEM = 240  # RFC v2 (from the mmap series it builds on)
KVM_CAP_GMEM_CONVERSION = 241  # RFC v2 07/51
KVM_CAP_GMEM_HUGETLB = 242  # RFC v2 41/51
KVM_CAP_GUEST_MEMFD_FLAGS = 244
KVM_SET_MEMORY_ATTRIBUTES2 = _ioc(_IOC_READ | _IOC_WRITE, KVMIO, 0xD2, KVM_SET_MEMORY_ATTRIBUTES2_SIZE)


@dataclass(slots=True)  # not frozen: decoded on every conversion, and frozen init costs microseconds
class ConversionRequest:
    """A conversion as the caller's struct states it: RFC v2's kvm_gmem_convert or v7's
    kvm_memory_attributes2, decoded by one codec so the rules see one shape."""

    to_private: bool
    offset: int
    size: int
    error_offset: int
    attributes: int = 0
    flags: int = 0
    reserved: tuple[int, ...] = ()
    layout: str = KVM_GMEM_CONVERT_STRUCT

    @classmethod
    def decode(cls, request: int, data: bytes) -> "ConversionRequest":
        if request == KVM_SET_MEMORY_ATTRIBUTES2:
            offset, size, attributes, flags, error_offset, *reserved = struct.unpack(
                KVM_SET_MEMORY_ATTRIBUTES2_STRUCT, data
            )
            to_private = bool(attributes & KVM_MEMORY_ATTRIBUTE_PRIVATE)
            return cls(
                to_private,
                offset,
                size,
                error_offset,
                attributes,
                flags,
                tuple(reserved),
                KVM_SET_MEMORY_ATTRIBUTES2_STRUCT,
            )
        offset, size, error_offset, *reserved = struct.unpack(KVM_GMEM_CONVERT_STRUCT, data)
        return cls(request == KVM_GMEM_CONVERT_PRIVATE, offset, size, error_offset, reserved=tuple(reserved))

    def encode(self, error_offset: int) -> bytes:
        """The struct written back to the caller, error_offset filled in."""
        if self.layout == KVM_SET_MEMORY_ATTRIBUTES2_STRUCT:
            fields = (self.offset, self.size, self.attributes, self.flags, error_offset, *self.reserved)
        else:
            fields = (self.offset, self.size, error_offset, *self.reserved)
        return struct.pack(self.layout, *fields)


@dataclass(frozen=True)
class AbiProfile:
    """One generation of the guest_memfd flag ABI: which bits mean what. Rules are data here."""

    name: str
    hugetlb: int = 0  # the HUGETLB bit; 0 where the ABI has no hugetlb support
    huge_shift: int = KVM_GUEST_MEMFD_HUGE_SHIFT  # where the 6-bit log2 page size field starts
    mmap: int = 0  # the bit that allows mmap; 0 where mmap is always allowed
    init_shared: int = 0  # the bit that makes pages start shared
    init_private: int = 0  # the bit that makes pages start private (others start shared)
    requires: tuple[tuple[int, int], ...] = ()  # (bit, bit it needs): EINVAL without it
    conversion_ioctls: tuple[int, ...] = (KVM_GMEM_CONVERT_SHARED, KVM_GMEM_CONVERT_PRIVATE)  # on the file
    shareability_needs_mmap: bool = False  # only files that may be mapped keep shareability (RFC v2)
    mmap_supported: bool = True  # False where guest_memfd has no mmap at all (ENODEV)
    memory_attributes: int = 0  # KVM_SET_MEMORY_ATTRIBUTES converts the file's pages (RFC v1)
    capabilities: tuple[tuple[int, int], ...] = ()  # KVM_CHECK_EXTENSION answers on /dev/kvm and VM fds
    binds_mapping_only: bool = False  # a shared file's memslot must map it at its offset (RFC v2)
    clears_on_conversion: bool = False  # KVM_SET_MEMORY_ATTRIBUTES zeroes what it converts (RFC v1 30/39)
    # The VM side, per VM type (a plain type-0 VM, or a VM with private memory):
    plain_vm_capabilities: tuple[tuple[int, int], ...] = ()  # answers on a type-0 VM fd that differ
    private_vm_capabilities: tuple[tuple[int, int], ...] = ()  # answers on a private VM's fd that differ
    guest_memfd_in_plain_vms: bool = True  # type-0 VMs take guest_memfd slots (6.8-6.17, RFC v1: no)
    single_address_space_in_plain_vms: bool = False  # RFC v2: supports_gmem VMs have no SMM slots
    attributes_on_file: bool = False  # a bound file's shareability is what KVM maps as private (RFC v2, v7)
    refuses_mapped_private: bool = False  # PRIVATE is EINVAL while the host maps the page (RFC v1 29/39)
    bind_makes_shared: bool = False  # binding to a private VM makes the range shared (RFC v1 28/39)
    private_vm_invalid_flags: int = 0  # creation flags a private VM refuses (6.18: INIT_SHARED)
    bound_range_errno: int = errno.EINVAL  # kvm_gmem_bind() of a file range already bound (7.2: EEXIST)
    page_order: bool = False  # the huge page size is kvm_create_guest_memfd's page_order (hugetlb-2025)
    excludes: tuple[tuple[int, int], ...] = ()  # (bit, bit): EINVAL together (hugetlb-2025: HUGETLB, INIT_SHARED)
    huge_fallocate_alignment: bool = False  # fallocate's offset and len align to the huge page (hugetlb-2025)
    attributes2_reserved_checked: bool = True  # KVM_SET_MEMORY_ATTRIBUTES2 refuses nonzero reserved words (v7)
    attributes2_batches: bool = False  # hugetlb-2025: unchanged ranges are a no-op; one huge page at a time,
    #   so a refusal keeps the batches before it converted (no rollback)
    punch_in_use_eagain: bool = False  # hugetlb-2025: a punch of a hugetlb range the host holds is EAGAIN

    @property
    def plain_bits(self) -> int:
        """Flag bits valid with or without HUGETLB."""
        return self.mmap | self.init_shared | self.init_private

    @property
    def huge_size_field(self) -> int:
        return 0 if self.page_order else KVM_GUEST_MEMFD_HUGE_MASK << self.huge_shift

    def mmap_allowed(self, flags: int) -> bool:
        return self.mmap_supported and (not self.mmap or bool(flags & self.mmap))

    def private_from_file(self, flags: int) -> bool:
        """Whether KVM takes a bound page's private-ness from the file (else: the VM's attributes)."""
        return self.attributes_on_file and self.mmap_allowed(flags)

    def capability(self, capability: int, vm_private: "bool | None") -> "int | None":
        """KVM_CHECK_EXTENSION's answer on /dev/kvm (vm_private None) or a VM fd; None: the kernel's."""
        overrides = {None: (), False: self.plain_vm_capabilities, True: self.private_vm_capabilities}[vm_private]
        return dict(self.capabilities + overrides).get(capability)

    def starts_shared(self, flags: int) -> bool:
        if self.init_shared:
            return bool(flags & self.init_shared)
        if self.init_private:
            return self.mmap_allowed(flags) and not flags & self.init_private
        return False


# Capabilities each kernel answers; KVM_CAP_GUEST_MEMFD_FLAGS is 0 (unknown) before 6.18.
_BEFORE_GUEST_MEMFD_FLAGS = ((KVM_CAP_GUEST_MEMFD, 1), (KVM_CAP_GUEST_MEMFD_FLAGS, 0))

# 6.8 to 6.17 and RFC v1: guest_memfd and memory attributes only where the VM has private memory.
_PRIVATE_MEMORY_ONLY = ((KVM_CAP_GUEST_MEMFD, 0), (KVM_CAP_MEMORY_ATTRIBUTES, 0))

RFC_V1 = AbiProfile(
    name="rfc-v1",
    hugetlb=KVM_GUEST_MEMFD_HUGETLB,
    memory_attributes=KVM_MEMORY_ATTRIBUTE_PRIVATE,
    capabilities=(*_BEFORE_GUEST_MEMFD_FLAGS, (KVM_CAP_MEMORY_ATTRIBUTES, KVM_MEMORY_ATTRIBUTE_PRIVATE)),
    clears_on_conversion=True,
    plain_vm_capabilities=_PRIVATE_MEMORY_ONLY,
    guest_memfd_in_plain_vms=False,
    refuses_mapped_private=True,
    bind_makes_shared=True,
)
RFC_V2 = AbiProfile(
    name="rfc-v2",
    hugetlb=GUEST_MEMFD_FLAG_HUGETLB_V2,
    huge_shift=GUESTMEM_HUGETLB_FLAG_SHIFT,
    mmap=GUEST_MEMFD_FLAG_SUPPORT_SHARED,
    init_private=GUEST_MEMFD_FLAG_INIT_PRIVATE,
    requires=((GUEST_MEMFD_FLAG_INIT_PRIVATE, GUEST_MEMFD_FLAG_SUPPORT_SHARED),),
    capabilities=(
        *_BEFORE_GUEST_MEMFD_FLAGS,
        (KVM_CAP_MEMORY_ATTRIBUTES, KVM_MEMORY_ATTRIBUTE_PRIVATE),
        (KVM_CAP_GMEM_SHARED_MEM, 1),
        (KVM_CAP_GMEM_CONVERSION, 1),
        (KVM_CAP_GMEM_HUGETLB, 1),
    ),
    binds_mapping_only=True,
    shareability_needs_mmap=True,
    single_address_space_in_plain_vms=True,
    attributes_on_file=True,
)
LINUX_6_8 = AbiProfile(  # mainline 6.8 to 6.17: no creation flag, no mmap
    name="linux-6.8",
    mmap_supported=False,
    conversion_ioctls=(),
    capabilities=(*_BEFORE_GUEST_MEMFD_FLAGS, (KVM_CAP_MEMORY_ATTRIBUTES, KVM_MEMORY_ATTRIBUTE_PRIVATE)),
    plain_vm_capabilities=_PRIVATE_MEMORY_ONLY,
    guest_memfd_in_plain_vms=False,
)
UPSTREAM = AbiProfile(  # mainline 7.2 (Debian sid's linux-source-7.2): 6.18's flags, EEXIST for a bound range
    name="upstream",
    mmap=GUEST_MEMFD_FLAG_MMAP,
    init_shared=GUEST_MEMFD_FLAG_INIT_SHARED,
    conversion_ioctls=(),
    capabilities=(
        (KVM_CAP_GUEST_MEMFD, 1),
        (KVM_CAP_GUEST_MEMFD_FLAGS, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED),
        (KVM_CAP_MEMORY_ATTRIBUTES, KVM_MEMORY_ATTRIBUTE_PRIVATE),
    ),
    plain_vm_capabilities=((KVM_CAP_MEMORY_ATTRIBUTES, 0),),
    # kvm_gmem_get_supported_flags(): INIT_SHARED only where the VM has no private memory.
    private_vm_capabilities=((KVM_CAP_GUEST_MEMFD_FLAGS, GUEST_MEMFD_FLAG_MMAP),),
    private_vm_invalid_flags=GUEST_MEMFD_FLAG_INIT_SHARED,
    bound_range_errno=errno.EEXIST,
)
LINUX_6_18 = replace(UPSTREAM, name="linux-6.18", bound_range_errno=errno.EINVAL)  # this machine: 6.18
INPLACE_V7 = AbiProfile(  # in-place conversion series v7 on 6.18, kvm.vm_memory_attributes=0
    name="inplace-v7",
    mmap=GUEST_MEMFD_FLAG_MMAP,
    init_shared=GUEST_MEMFD_FLAG_INIT_SHARED,
    conversion_ioctls=(KVM_SET_MEMORY_ATTRIBUTES2,),
    capabilities=(
        (KVM_CAP_GUEST_MEMFD, 1),
        (KVM_CAP_GUEST_MEMFD_FLAGS, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED),
        (KVM_CAP_MEMORY_ATTRIBUTES, 0),  # no per-VM attributes: KVM_SET_MEMORY_ATTRIBUTES is ENOTTY
        (KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES, KVM_MEMORY_ATTRIBUTE_PRIVATE),
    ),
    attributes_on_file=True,
)

HUGETLB_2025 = AbiProfile(  # linux-cc wip-gmem-conversions-hugetlb-restructuring-12-08-25 (Dec 2025)
    name="hugetlb-2025",
    hugetlb=GUEST_MEMFD_FLAG_HUGETLB,
    page_order=True,
    mmap=GUEST_MEMFD_FLAG_MMAP,
    init_shared=GUEST_MEMFD_FLAG_INIT_SHARED,
    excludes=((GUEST_MEMFD_FLAG_HUGETLB, GUEST_MEMFD_FLAG_INIT_SHARED),),
    huge_fallocate_alignment=True,
    conversion_ioctls=(KVM_SET_MEMORY_ATTRIBUTES2,),
    attributes2_reserved_checked=False,
    attributes2_batches=True,
    punch_in_use_eagain=True,
    attributes_on_file=True,
    capabilities=(
        (KVM_CAP_GUEST_MEMFD, 1),
        (KVM_CAP_GUEST_MEMFD_FLAGS, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED | GUEST_MEMFD_FLAG_HUGETLB),
        (KVM_CAP_MEMORY_ATTRIBUTES, 0),  # vm_memory_attributes=0: the attributes live on the guest_memfd
        (HUGETLB_2025_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES, KVM_MEMORY_ATTRIBUTE_PRIVATE),
    ),
)

ABI_PROFILES = {
    profile.name: profile for profile in (RFC_V1, RFC_V2, LINUX_6_8, LINUX_6_18, UPSTREAM, INPLACE_V7, HUGETLB_2025)
}
DEFAULT_ABI = RFC_V1


def flags_for_page_size(page_size: int, profile: AbiProfile = DEFAULT_ABI) -> int:
    """The creation flags that ask for pages of page_size bytes (0 where the ABI has no hugetlb
    bit: a mount's huge pages then back its files whatever their flags)."""
    if page_size == BASE_PAGE_SIZE or not profile.hugetlb:
        return 0
    if profile.page_order:
        return profile.hugetlb
    return profile.hugetlb | huge_flag(page_size.bit_length() - 1, profile.huge_shift)


def page_order_for_page_size(page_size: int, profile: AbiProfile = DEFAULT_ABI) -> int:
    """kvm_create_guest_memfd's page_order for pages of page_size bytes (hugetlb-2025; else 0)."""
    if page_size == BASE_PAGE_SIZE or not profile.page_order:
        return 0
    return (page_size // BASE_PAGE_SIZE).bit_length() - 1
