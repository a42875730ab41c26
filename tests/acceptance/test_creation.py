"""Spec sections 2 and 3: flags and creation, for 4 KiB, 2 MiB and 1 GiB page files."""

import os

import pytest
from support.files import open_gmem
from support.syscalls import errno_of, set_flags, xattr

from gmemfs import (
    KVM_GUEST_MEMFD_HUGE_1GB,
    KVM_GUEST_MEMFD_HUGE_2MB,
    KVM_GUEST_MEMFD_HUGE_16GB,
    KVM_GUEST_MEMFD_HUGETLB,
)

FLAGS_FOR = {
    4096: 0,
    2 << 20: KVM_GUEST_MEMFD_HUGETLB | KVM_GUEST_MEMFD_HUGE_2MB,
    1 << 30: KVM_GUEST_MEMFD_HUGETLB | KVM_GUEST_MEMFD_HUGE_1GB,
}


@pytest.fixture
def unsized(gmem_dir):
    fd = open_gmem(gmem_dir)
    yield fd
    os.close(fd)


def test_new_file_is_unsized_with_the_mount_default_flags(unsized, page_size):
    assert os.fstat(unsized).st_size == 0
    assert int(xattr(unsized, "flags"), 0) == FLAGS_FOR[page_size]
    assert int(xattr(unsized, "page_size")) == page_size
    assert xattr(unsized, "reserved") == "0"


@pytest.mark.parametrize(
    "size_in_pages, expected",
    [(0, "EINVAL"), (0.5, "EINVAL"), (1.5, "EINVAL"), (1, "OK")],
    ids=["zero", "half_page", "page_and_a_half", "one_page"],
)
def test_creation_size_must_be_a_positive_multiple_of_the_page_size(unsized, page_size, size_in_pages, expected):
    assert errno_of(os.ftruncate, unsized, int(size_in_pages * page_size)) == expected
    assert os.fstat(unsized).st_size == (page_size if expected == "OK" else 0)


@pytest.mark.parametrize("size", [1, 4095], ids=["one_byte", "4095_bytes"])
def test_sizes_below_a_base_page_are_einval(unsized, size):
    assert errno_of(os.ftruncate, unsized, size) == "EINVAL"


def test_negative_size_is_einval(unsized):
    assert errno_of(os.ftruncate, unsized, -4096) == "EINVAL"


@pytest.mark.parametrize("new_size_in_pages", [0, 1, 2], ids=["to_zero", "to_same", "to_double"])
def test_size_is_fixed_after_creation(unsized, page_size, new_size_in_pages):
    os.ftruncate(unsized, page_size)
    assert errno_of(os.ftruncate, unsized, new_size_in_pages * page_size) == "EINVAL"
    assert os.fstat(unsized).st_size == page_size


def test_flags_are_fixed_after_creation(unsized, page_size):
    os.ftruncate(unsized, page_size)
    assert errno_of(set_flags, unsized, FLAGS_FOR[page_size]) == "EINVAL"
    assert errno_of(set_flags, unsized, 0) == "EINVAL"


@pytest.mark.parametrize(
    "flags", [0, KVM_GUEST_MEMFD_HUGETLB | KVM_GUEST_MEMFD_HUGE_2MB, KVM_GUEST_MEMFD_HUGETLB | KVM_GUEST_MEMFD_HUGE_1GB]
)
def test_flags_choose_the_page_size_while_unsized(unsized, flags):
    set_flags(unsized, flags)
    page = {0: 4096, KVM_GUEST_MEMFD_HUGE_2MB: 2 << 20, KVM_GUEST_MEMFD_HUGE_1GB: 1 << 30}[
        flags & ~KVM_GUEST_MEMFD_HUGETLB
    ]
    assert int(xattr(unsized, "page_size")) == page
    assert os.fstat(unsized).st_blksize == page


def test_hugetlb_without_a_size_field_means_the_default_huge_page_size(unsized):
    set_flags(unsized, KVM_GUEST_MEMFD_HUGETLB)
    assert int(xattr(unsized, "page_size")) == 2 << 20


@pytest.mark.parametrize(
    "flags",
    [
        1 << 0,
        1 << 2,
        1 << 63,
        KVM_GUEST_MEMFD_HUGE_2MB,
        KVM_GUEST_MEMFD_HUGETLB | 1 << 0,
        KVM_GUEST_MEMFD_HUGETLB | KVM_GUEST_MEMFD_HUGE_16GB,
    ],
    ids=["bit0", "bit2", "bit63", "size_without_hugetlb", "hugetlb_plus_bit0", "size_the_machine_lacks"],
)
def test_bad_flags_are_einval_and_change_nothing(unsized, page_size, flags):
    assert errno_of(set_flags, unsized, flags) == "EINVAL"
    assert int(xattr(unsized, "flags"), 0) == FLAGS_FOR[page_size]


@pytest.mark.parametrize("value", [b"", b"huge", b"-2", b"0x"])
def test_malformed_flags_text_is_einval(unsized, value):
    assert errno_of(os.setxattr, unsized, "user.gmem.flags", value) == "EINVAL"


def test_hex_flags_text_is_accepted(unsized):
    os.setxattr(unsized, "user.gmem.flags", b"0x54000002")
    assert int(xattr(unsized, "page_size")) == 2 << 20
