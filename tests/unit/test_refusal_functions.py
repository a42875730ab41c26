"""Each refusal names the series' function that makes it (the trace's "(kvm_gmem_create)"), and
gmemfs's own limits say they are gmemfs's."""

import ast
import errno
import struct

import pytest
from support.refusals import NAMING_MODULES

from gmemfs.daemon.limits import MountQuota, check_file_limit
from gmemfs.kernel.rules import (
    GmemError,
    check_conversions,
    check_creation_size,
    file_geometry,
    plan_conversion,
    plan_fallocate,
)
from gmemfs.kernel.uapi import (
    GUEST_MEMFD_FLAG_HUGETLB,
    GUEST_MEMFD_FLAG_INIT_SHARED,
    HUGETLB_2025,
    INPLACE_V7,
    KVM_GMEM_CONVERT_PRIVATE,
    KVM_MEMORY_ATTRIBUTE_PRIVATE,
    KVM_SET_MEMORY_ATTRIBUTES2,
    KVM_SET_MEMORY_ATTRIBUTES2_STRUCT,
    RFC_V1,
    RFC_V2,
    ConversionRequest,
)
from gmemfs.run.memslots import GmemFile, MemoryRegion, Memslots

MiB = 1 << 20
SIZES = frozenset({2 * MiB, 1 << 30})


def _gmem_error_calls(path: str):
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "GmemError":
            yield node


@pytest.mark.parametrize("path", sorted(NAMING_MODULES))
def test_every_gmem_error_in_the_rules_modules_passes_a_function(path):
    calls = list(_gmem_error_calls(path))
    assert calls
    missing = [call.lineno for call in calls if not any(keyword.arg == "function" for keyword in call.keywords)]
    assert not missing, f"{path}: GmemError( without function= at lines {missing}"


def attributes2(size=2 * MiB, flags=0):
    data = struct.pack(KVM_SET_MEMORY_ATTRIBUTES2_STRUCT, 0, size, KVM_MEMORY_ATTRIBUTE_PRIVATE, flags, 0, *[0] * 11)
    return ConversionRequest.decode(KVM_SET_MEMORY_ATTRIBUTES2, data)


@pytest.mark.parametrize(
    ("refuse", "err", "function"),
    [
        (lambda: file_geometry(1 << 40, 0, RFC_V1, SIZES, 2 * MiB), errno.EINVAL, "kvm_gmem_create"),
        (lambda: file_geometry(1 << 1, 0, RFC_V2, SIZES, 2 * MiB), errno.EINVAL, "kvm_gmem_create"),
        # a huge page size the machine lacks (16 MiB): RFC v1 never checks it, RFC v2 does
        (lambda: file_geometry(1 << 1 | 24 << 26, 0, RFC_V1, SIZES, 2 * MiB), errno.EINVAL, "kvm_gmem_hugetlb_setup"),
        (lambda: file_geometry(1 << 2 | 24 << 58, 0, RFC_V2, SIZES, 2 * MiB), errno.EINVAL, "guestmem_hugetlb_setup"),
        (
            lambda: file_geometry(GUEST_MEMFD_FLAG_HUGETLB | GUEST_MEMFD_FLAG_INIT_SHARED, 9, HUGETLB_2025, SIZES, 0),
            errno.EINVAL,
            "kvm_gmem_create",
        ),
        (lambda: file_geometry(GUEST_MEMFD_FLAG_HUGETLB, 3, HUGETLB_2025, SIZES, 0), errno.EINVAL, "kvm_gmem_create"),
        (lambda: check_creation_size(0, 3 * MiB, 2 * MiB), errno.EINVAL, "kvm_gmem_create"),
        (lambda: check_creation_size(2 * MiB, 4 * MiB, 2 * MiB), errno.EINVAL, "kvm_gmem_setattr"),
        (lambda: plan_fallocate(0, 0, 4096, 4096, MiB), errno.EOPNOTSUPP, "kvm_gmem_fallocate"),
        (lambda: plan_fallocate(1 | 0x10, 0, 4096, 4096, MiB), errno.EOPNOTSUPP, "kvm_gmem_fallocate"),
        (lambda: plan_fallocate(1, 100, 4096, 4096, MiB), errno.EINVAL, "kvm_gmem_fallocate"),
        (lambda: plan_fallocate(1, 0, 2 * MiB, 4096, MiB), errno.EINVAL, "kvm_gmem_allocate"),
        (lambda: plan_fallocate(1, 0, 0, 4096, MiB), errno.EINVAL, "vfs_fallocate"),
        (lambda: check_conversions(INPLACE_V7, KVM_GMEM_CONVERT_PRIVATE), errno.ENOTTY, "kvm_gmem_ioctl"),
        (lambda: plan_conversion(attributes2(flags=1), 4 * MiB), errno.EINVAL, "kvm_gmem_set_attributes"),
        (lambda: plan_conversion(attributes2(size=8 * MiB), 4 * MiB), errno.EINVAL, "kvm_gmem_set_attributes"),
        (
            lambda: plan_conversion(ConversionRequest(True, 0, 4096, error_offset=0x1000), 4 * MiB),
            errno.EINVAL,
            "kvm_gmem_ioctl_convert_range",
        ),
        (lambda: check_file_limit(3, 3), errno.ENOSPC, "gmemfs: -o max_files"),
        (lambda: MountQuota(max_bytes=MiB).claim(2 * MiB, 4096), errno.ENOMEM, "gmemfs: -o max_size"),
        (
            lambda: Memslots().check(MemoryRegion(0, 1 << 2, 0, 0x2000, 0, 0, 5), GmemFile(7, 0x1000, True)),
            errno.EINVAL,
            "kvm_gmem_bind",
        ),
        (
            lambda: Memslots().check(MemoryRegion(0, 1 << 3, 0, 0x2000, 0)),
            errno.EINVAL,
            "check_memory_region_flags",
        ),
        (lambda: Memslots().check(MemoryRegion(0, 0, 0, 0x1800, 0)), errno.EINVAL, "kvm_set_memory_region"),
    ],
)
def test_a_refusal_names_the_function_that_makes_it(refuse, err, function):
    with pytest.raises(GmemError) as raised:
        refuse()
    assert (raised.value.errno, raised.value.function) == (err, function)
