"""The guest_memfd rules: every check, in the kernel's order, and its errno.

Pure functions with no I/O. Each refusal raises GmemError carrying the errno
the kernel would return, the rule that was broken, and the series' function that
refuses (or "gmemfs: ..." for gmemfs's own limits), for the daemon's log and the trace.
"""

import errno
import re
import stat
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from ..base.ranges import Range, RangeSet
from .uapi import (
    BASE_PAGE_SIZE,
    CONVERSION_GRANULE,
    FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE,
    KVM_GUEST_MEMFD_HUGE_MASK,
    KVM_MEMORY_ATTRIBUTE_PRIVATE,
    KVM_SET_MEMORY_ATTRIBUTES2_STRUCT,
    U64_MAX,
    AbiProfile,
    ConversionRequest,
)

# The functions that refuse, as the series name them (hugetlb-2025's virt/kvm/guest_memfd.c, RFC v2's
# kvm_gmem_ioctl_convert_range); gmemfs's own rules name themselves "gmemfs: ...".
CREATE = "kvm_gmem_create"
FALLOCATE = "kvm_gmem_fallocate"
CONVERT_RANGE = "kvm_gmem_ioctl_convert_range"  # RFC v2's KVM_GMEM_CONVERT_SHARED/PRIVATE
SET_ATTRIBUTES = "kvm_gmem_set_attributes"  # KVM_SET_MEMORY_ATTRIBUTES2 on the guest_memfd (v7, hugetlb-2025)
XATTR_FLAGS_RULE = "gmemfs: user.gmem.flags"
XATTR_PAGE_ORDER_RULE = "gmemfs: user.gmem.page_order"


class GmemError(OSError):
    """A request the kernel would refuse: errno, the broken rule, and the function (the series'
    or the kernel's) that makes the refusal."""

    def __init__(self, err: int, rule: str, *, function: str = "") -> None:
        super().__init__(err, rule)
        self.rule = rule
        self.function = function


def check_flag_bits(flags: int, profile: AbiProfile) -> None:
    """kvm_gmem_create()'s first check: every bit is one the ABI knows (with HUGETLB, its size field)."""
    if not 0 <= flags <= U64_MAX:
        raise GmemError(errno.EINVAL, f"flags {flags} do not fit in 64 bits", function=CREATE)
    hugetlb = flags & profile.hugetlb
    valid = profile.plain_bits | (profile.hugetlb | profile.huge_size_field if hugetlb else 0)
    if flags & ~valid:
        raise GmemError(
            errno.EINVAL,
            f"flags {flags:#x}: bits {flags & ~valid:#x} are not valid in the {profile.name} ABI",
            function=CREATE,
        )


def page_size_for_flags(
    flags: int, profile: AbiProfile, huge_page_sizes: Collection[int], default_huge_page_size: int
) -> int:
    """The page size that creation flags select, or EINVAL for flags the kernel refuses."""
    if profile.page_order:  # the flags alone: page_order 0
        return page_size_for_page_order(flags, 0, profile, huge_page_sizes)
    check_flag_bits(flags, profile)
    hugetlb = flags & profile.hugetlb
    for bit, needed in profile.requires:
        if flags & bit and not flags & needed:
            raise GmemError(
                errno.EINVAL,
                f"flags {flags:#x}: bit {bit:#x} needs bit {needed:#x} ({profile.name} ABI)",
                function=CREATE,
            )
    if not hugetlb:
        return BASE_PAGE_SIZE
    log2 = (flags >> profile.huge_shift) & KVM_GUEST_MEMFD_HUGE_MASK
    page_size = default_huge_page_size if log2 == 0 else 1 << log2
    if page_size not in huge_page_sizes:
        if profile.name == "rfc-v1":  # 14/39 uses hstate_sizelog()'s NULL unchecked (an oops): answered as v2
            rule, function = "; RFC v1 does not check this, RFC v2 answers EINVAL", "kvm_gmem_hugetlb_setup"
        else:
            rule, function = "", "guestmem_hugetlb_setup"
        raise GmemError(
            errno.EINVAL, f"flags {flags:#x}: this machine has no {page_size}-byte huge pages{rule}", function=function
        )
    return page_size


def page_size_for_page_order(flags: int, page_order: int, profile: AbiProfile, huge_page_sizes: Collection[int]) -> int:
    """hugetlb-2025's kvm_gmem_create(): the flags, page_order only with HUGETLB, HUGETLB without
    INIT_SHARED, then gmem_hugetlb_valid_order() (not 0, an order the machine has an hstate for)."""
    check_flag_bits(flags, profile)
    hugetlb = flags & profile.hugetlb
    if page_order and not hugetlb:
        raise GmemError(errno.EINVAL, f"page_order {page_order} without HUGETLB ({profile.name} ABI)", function=CREATE)
    if not hugetlb:
        return BASE_PAGE_SIZE
    for bit, other in profile.excludes:
        if flags & bit and flags & other:
            raise GmemError(
                errno.EINVAL, f"flags {flags:#x}: bits {bit:#x} and {other:#x} exclude each other", function=CREATE
            )
    page_size = BASE_PAGE_SIZE << page_order
    if not page_order or page_size not in huge_page_sizes:
        raise GmemError(
            errno.EINVAL,
            f"page_order {page_order}: this machine has no {page_size}-byte huge pages",
            function=CREATE,
        )
    return page_size


@dataclass(frozen=True)
class Geometry:
    """A file's pages: the size of those allocated and reserved, and the alignment each rule asks for."""

    page_size: int  # what the backing allocates, reserves and reports as st_blksize
    size_alignment: int  # the creation size's (KVM_CREATE_GUEST_MEMFD)
    fallocate_alignment: int  # kvm_gmem_fallocate()'s offset and len
    round_out: bool = False  # allocations cover every page they touch (huge pages behind a 4 KiB ABI)

    @property
    def hugetlb(self) -> bool:
        return self.page_size != BASE_PAGE_SIZE


BASE_GEOMETRY = Geometry(BASE_PAGE_SIZE, BASE_PAGE_SIZE, BASE_PAGE_SIZE)


def file_geometry(
    flags: int,
    page_order: int,
    profile: AbiProfile,
    huge_page_sizes: Collection[int],
    default_huge_page_size: int,
    backing_page_size: int = BASE_PAGE_SIZE,
) -> Geometry:
    """What creation with these flags (and page_order) makes, in the ABI's order of checks.

    backing_page_size is a mount's huge page size for an ABI without hugetlb (upstream,pagesize=2M):
    its files keep the ABI's 4 KiB rules and get huge pages, a subpool per file as the seed's."""
    if profile.page_order:
        page_size = page_size_for_page_order(flags, page_order, profile, huge_page_sizes)
    else:
        page_size = page_size_for_flags(flags, profile, huge_page_sizes, default_huge_page_size)
    if page_size != BASE_PAGE_SIZE:
        return Geometry(page_size, page_size, page_size if profile.huge_fallocate_alignment else BASE_PAGE_SIZE)
    if backing_page_size != BASE_PAGE_SIZE:
        return Geometry(backing_page_size, BASE_PAGE_SIZE, BASE_PAGE_SIZE, round_out=True)
    return BASE_GEOMETRY


def parse_page_order(value: bytes) -> int:
    """The number in a user.gmem.page_order value: kvm_create_guest_memfd's __u8."""
    order = parse_flags_value(value)
    if order > 0xFF:
        raise GmemError(errno.EINVAL, f"page_order {order} does not fit in a byte", function=XATTR_PAGE_ORDER_RULE)
    return order


_FLAGS_TEXT = re.compile(rb"\s*(0[xX][0-9a-fA-F]+|[0-9]+)\s*\x00?")


def parse_flags_value(value: bytes) -> int:
    """The number in a user.gmem.flags value: decimal or 0x-hex text."""
    match = _FLAGS_TEXT.fullmatch(value) if len(value) <= 64 else None  # u64 needs at most 20 digits
    if not match:
        raise GmemError(
            errno.EINVAL, f"flags value {value[:40]!r} is not a decimal or 0x-hex number", function=XATTR_FLAGS_RULE
        )
    number = match.group(1)
    return int(number[2:], 16) if number[:2] in (b"0x", b"0X") else int(number, 10)


def check_flags_change(size: int) -> None:
    """Flags are part of creation: they may change only while the file is unsized."""
    if size:
        raise GmemError(errno.EINVAL, "flags cannot change after the file is sized", function=XATTR_FLAGS_RULE)


def check_creation_size(current_size: int, new_size: int, alignment: int) -> None:
    """The first size completes creation; after that the size is fixed."""
    if current_size:
        raise GmemError(errno.EINVAL, f"size is fixed at {current_size:#x} once set", function="kvm_gmem_setattr")
    if new_size <= 0 or new_size % alignment:
        raise GmemError(
            errno.EINVAL,
            f"size {new_size:#x} is not a positive multiple of the page size {alignment:#x}",
            function=CREATE,
        )


@dataclass(frozen=True)
class FallocatePlan:
    """What a valid fallocate does: allocate the pages of [start, end), or punch its bytes
    (whole pages freed, the covered bytes of partly covered huge pages zeroed)."""

    punch: bool
    start: int
    end: int


def plan_fallocate(
    mode: int, offset: int, length: int, page_size: int, size: int, geometry: "Geometry | None" = None
) -> FallocatePlan:
    """Check a fallocate in the kernel's order and say which pages it touches."""
    alignment = geometry.fallocate_alignment if geometry else BASE_PAGE_SIZE
    if offset < 0 or length <= 0:  # the VFS answers these before any filesystem sees them
        raise GmemError(
            errno.EINVAL, f"fallocate range {offset:#x}+{length:#x} is negative or empty", function="vfs_fallocate"
        )
    if not mode & FALLOC_FL_KEEP_SIZE:
        raise GmemError(errno.EOPNOTSUPP, f"fallocate mode {mode:#x} lacks FALLOC_FL_KEEP_SIZE", function=FALLOCATE)
    if mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE):
        raise GmemError(
            errno.EOPNOTSUPP,
            f"fallocate mode {mode:#x} has bits other than KEEP_SIZE and PUNCH_HOLE",
            function=FALLOCATE,
        )
    if offset % alignment or length % alignment:  # PAGE_ALIGNED (RFC v1/v2 hugetlb files too), or the huge page
        raise GmemError(
            errno.EINVAL,
            f"fallocate range {offset:#x}+{length:#x} is not aligned to {alignment:#x}",
            function=FALLOCATE,
        )
    if not size:
        raise GmemError(errno.EINVAL, "fallocate on a file that has no size yet", function="gmemfs: an unsized file")
    end = offset + length
    if mode & FALLOC_FL_PUNCH_HOLE:
        return FallocatePlan(punch=True, start=min(offset, size), end=min(end, size))
    if end > size:
        raise GmemError(
            errno.EINVAL, f"allocating {offset:#x}+{length:#x} passes the size {size:#x}", function="kvm_gmem_allocate"
        )
    if geometry and geometry.round_out:  # huge pages behind 4 KiB rules: every 4 KiB page asked for exists
        return FallocatePlan(punch=False, start=offset - offset % page_size, end=-(-end // page_size) * page_size)
    # kvm_gmem_allocate(): both ends round down to huge pages ([4K, 8K) allocates nothing).
    return FallocatePlan(punch=False, start=offset - offset % page_size, end=end - end % page_size)


def check_conversions(profile: AbiProfile, request: int) -> None:
    """A conversion ioctl exists where the ABI has it (ENOTTY elsewhere, as for any unknown ioctl)."""
    if request not in profile.conversion_ioctls:
        raise GmemError(
            errno.ENOTTY, f"the {profile.name} ABI has no conversion ioctl {request:#x}", function="kvm_gmem_ioctl"
        )


def plan_conversion(request: ConversionRequest, file_size: int, reserved_checked: bool = True) -> "Range | None":
    """Check a conversion in its ABI's order; None when there is nothing to do."""
    if request.layout == KVM_SET_MEMORY_ATTRIBUTES2_STRUCT:
        return _plan_attributes2(request, file_size, reserved_checked)
    if request.error_offset:  # RFC v2 kvm_gmem_ioctl_convert_range()
        raise GmemError(
            errno.EINVAL,
            f"conversion: error_offset must be 0 on input, not {request.error_offset:#x}",
            function=CONVERT_RANGE,
        )
    if not request.size:
        return None
    return _checked_range(request, file_size, CONVERT_RANGE)


def _plan_attributes2(request: ConversionRequest, file_size: int, reserved_checked: bool) -> Range:
    """kvm_gmem_set_attributes(): flags, reserved (v7; not hugetlb-2025), attributes, then the range
    (error_offset is output only)."""
    if request.flags:
        raise GmemError(errno.EINVAL, f"attributes2: flags {request.flags:#x} must be 0", function=SET_ATTRIBUTES)
    if reserved_checked and any(request.reserved):
        raise GmemError(errno.EINVAL, "attributes2: reserved fields must be 0", function=SET_ATTRIBUTES)
    if request.attributes & ~KVM_MEMORY_ATTRIBUTE_PRIVATE:
        raise GmemError(
            errno.EINVAL, f"attributes2: attributes {request.attributes:#x} are not supported", function=SET_ATTRIBUTES
        )
    if not request.size:
        raise GmemError(errno.EINVAL, "attributes2: size must not be 0", function=SET_ATTRIBUTES)
    return _checked_range(request, file_size, SET_ATTRIBUTES)


def _checked_range(request: ConversionRequest, file_size: int, function: str) -> Range:
    offset, size = request.offset, request.size
    end = offset + size
    if end > U64_MAX or end > file_size:
        raise GmemError(
            errno.EINVAL, f"conversion of {offset:#x}+{size:#x} passes the size {file_size:#x}", function=function
        )
    if offset % CONVERSION_GRANULE or size % CONVERSION_GRANULE:
        raise GmemError(
            errno.EINVAL, f"conversion range {offset:#x}+{size:#x} is not aligned to 4 KiB", function=function
        )
    return offset, end


def converted_before_refusal(start: int, in_use: int, page_size: int) -> int:
    """hugetlb-2025's __kvm_gmem_set_attributes() converts one huge page at a time and stops at the
    first batch with a page in use: the batches before it stay converted (no rollback). A 4 KiB
    file is one batch (i_size), so nothing is converted."""
    if page_size == BASE_PAGE_SIZE:
        return start
    return max(start, in_use - in_use % page_size)


def converts_anything(profile: AbiProfile, flags: int) -> bool:
    """Whether a valid conversion changes the file: RFC v2 keeps shareability only for files
    with SUPPORT_SHARED (kvm_gmem_inode_make_secure_inode); on the others its conversion finds
    no work and succeeds (kvm_gmem_convert_range)."""
    return not profile.shareability_needs_mmap or profile.mmap_allowed(flags)


def first_page_in_use(locked: "Iterable[Range]", start: int, end: int) -> "int | None":
    """The first 4 KiB page of [start, end) inside a range the host keeps locked: the
    error_offset of a refused conversion to private (EAGAIN)."""
    starts = [
        max(start, locked_start) for locked_start, locked_end in locked if locked_start < end and locked_end > start
    ]
    return min(starts) - min(starts) % CONVERSION_GRANULE if starts else None


def check_host_access(shared: "RangeSet", start: int, end: int, what: str, draining: "RangeSet | None" = None) -> None:
    """The host reaches shared pages only; a private one is EINVAL (a fault on it is SIGBUS).
    Pages in `draining` are turning private: their writeback is still taken."""
    for private_start, private_end in shared.gaps(start, end):
        if draining is None or not draining.covers(private_start, private_end):
            raise GmemError(
                errno.EINVAL, f"{what} of private page {private_start:#x}", function="kvm_gmem_fault_user_mapping"
            )


def check_guest_access(shared: "RangeSet", start: int, end: int, what: str) -> None:
    """The guest's view of a file reaches private pages only: shared ones are the host's, and a
    copy of them in the view's cache would not stay coherent with the host's (EINVAL: SIGBUS)."""
    for shared_start, _ in shared.overlapping(start, end):
        raise GmemError(
            errno.EINVAL,
            f"{what} of shared page {max(shared_start, start):#x} through the guest's view",
            function="gmemfs: the guest's view",
        )


def file_mode(mode: int) -> int:
    """A regular file's permission bits, without set-user-ID and set-group-ID.

    Guest memory is no program (the mount is noexec), and the daemon has taken killpriv over
    from the kernel (FUSE_HANDLE_KILLPRIV_V2, which spares every write and fallocate a
    security.capability lookup): it keeps that promise by never storing the bits it would
    have to drop. security.capability itself cannot be set (setxattr takes only user.gmem.*).
    """
    return stat.S_IMODE(mode) & ~(stat.S_ISUID | stat.S_ISGID)


def inherited_group(mode: int, directory_mode: int, directory_gid: int, caller_gid: int) -> "tuple[int, int]":
    """The group and mode of a new file or directory, as the kernel's inode_init_owner() decides:
    in a set-group-ID directory it takes the directory's group, and a new directory the bit too
    (so that a group-shared tree stays the group's, as on tmpfs)."""
    if not directory_mode & stat.S_ISGID:
        return caller_gid, mode
    return directory_gid, mode | stat.S_ISGID if stat.S_ISDIR(mode) else mode
