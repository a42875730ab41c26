"""Spec section 6: stat, read/write, seeking, chmod/chown, ioctls and the inspection attributes."""

import fcntl
import os
import stat

import pytest
from support.files import open_gmem
from support.syscalls import KEEP_SIZE, errno_of, fallocate_result

PAGES = 2


def test_stat_shows_size_page_size_and_allocated_blocks(sized_gmem, page_size):
    assert fallocate_result(sized_gmem, KEEP_SIZE, 0, page_size) == "OK"
    st = os.fstat(sized_gmem)
    assert (st.st_size, st.st_blksize, st.st_blocks) == (PAGES * page_size, page_size, page_size // 512)
    assert stat.S_ISREG(st.st_mode)


def test_stat_by_path_sees_what_another_fd_allocated(gmem_dir, sized_gmem, page_size):
    assert fallocate_result(sized_gmem, KEEP_SIZE, page_size, page_size) == "OK"
    assert os.stat(gmem_dir / "gmem").st_blocks == page_size // 512


def test_read_and_write_are_einval(sized_gmem):
    assert errno_of(os.read, sized_gmem, 4096) == "EINVAL"
    assert errno_of(os.write, sized_gmem, b"x" * 4096) == "EINVAL"


def test_pread_pwrite_and_lseek_are_espipe(sized_gmem):
    assert errno_of(os.pread, sized_gmem, 4096, 0) == "ESPIPE"
    assert errno_of(os.pwrite, sized_gmem, b"x", 0) == "ESPIPE"
    for whence in (os.SEEK_SET, os.SEEK_CUR, os.SEEK_END, os.SEEK_DATA, os.SEEK_HOLE):
        assert errno_of(os.lseek, sized_gmem, 0, whence) == "ESPIPE"


def test_chmod_and_chown_are_allowed(gmem_dir, sized_gmem):
    os.fchmod(sized_gmem, 0o640)
    os.fchown(sized_gmem, 1234, 5678)
    st = os.stat(gmem_dir / "gmem")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 1234, 5678)


@pytest.mark.parametrize(
    "request_number",
    [0x80086601, 0x5401, 0xC040AF41 + 0x10],  # FS_IOC_GETFLAGS, TCGETS, an unknown KVM-type ioctl
    ids=["FS_IOC_GETFLAGS", "TCGETS", "unknown"],
)
def test_unknown_ioctls_are_enotty(sized_gmem, request_number):
    size = (request_number >> 16) & 0x3FFF
    assert errno_of(fcntl.ioctl, sized_gmem, request_number, bytes(size) if size else 0) == "ENOTTY"


def test_inspection_attributes_are_listed(sized_gmem):
    assert set(os.listxattr(sized_gmem)) == {
        f"user.gmem.{name}" for name in ("flags", "page_size", "reserved", "allocated", "shared")
    }


@pytest.mark.parametrize("name", ["page_size", "reserved", "allocated", "shared"])
def test_inspection_attributes_are_read_only(sized_gmem, name):
    before = os.getxattr(sized_gmem, f"user.gmem.{name}")
    assert errno_of(os.setxattr, sized_gmem, f"user.gmem.{name}", b"0") == "EPERM"
    assert errno_of(os.removexattr, sized_gmem, f"user.gmem.{name}") == "EPERM"
    assert os.getxattr(sized_gmem, f"user.gmem.{name}") == before


def test_other_attributes_are_not_supported(sized_gmem):
    assert errno_of(os.setxattr, sized_gmem, "user.other", b"1") == "EOPNOTSUPP"
    assert errno_of(os.getxattr, sized_gmem, "user.other") == "ENODATA"


@pytest.mark.parametrize("page_size", [4096, 2 << 20], ids=["4K", "2M"])  # 8 pages: more than the 1G pool
def test_allocated_ranges_attribute_on_a_sparse_file(gmem_dir, page_size):
    fd = open_gmem(gmem_dir, "sparse", size=8 * page_size)
    try:
        for page in (0, 1, 5):
            assert fallocate_result(fd, KEEP_SIZE, page * page_size, page_size) == "OK"
        expected = f"0x0-{2 * page_size:#x},{5 * page_size:#x}-{6 * page_size:#x}"
        assert os.getxattr(fd, "user.gmem.allocated").decode() == expected
    finally:
        os.close(fd)
