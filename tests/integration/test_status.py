"""gmemfs status and map: what a mount holds, for people and for scripts."""

import json
import os
import resource
import subprocess
import tempfile

from support.commands import GMEMFS, as_nobody, assert_one_line_error
from support.commands import run_gmemfs as gmemfs
from support.files import open_gmem
from support.pools import PAGE_2M
from support.syscalls import KEEP_SIZE, fallocate_result

from gmemfs import create_guest_memfd
from gmemfs.client import convert_shared


def test_status_json_describes_the_files_created(start_gmemfs):
    daemon = start_gmemfs("-o", "pagesize=2M")
    mnt = daemon.mountpoint
    fd = open_gmem(mnt, "vm0", size=8 * PAGE_2M)
    assert fallocate_result(fd, KEEP_SIZE, PAGE_2M, 2 * PAGE_2M) == "OK"
    os.close(fd)
    (mnt / "d").mkdir()
    os.close(open_gmem(mnt / "d", "small", flags=0, size=3 * 4096))
    anonymous = create_guest_memfd(mnt, 2 * PAGE_2M, 0x54000002)
    try:
        result = gmemfs("status", "--json", str(mnt))
        assert result.returncode == 0, result.stderr
        (mount,) = json.loads(result.stdout)["mounts"]
        assert mount["mountpoint"] == str(mnt)
        files = {file["path"]: file for file in mount["files"]}
        assert set(files) == {"/vm0", "/d/small"}
        assert files["/vm0"] | {"flags": 0} == {
            "path": "/vm0",
            "size": 8 * PAGE_2M,
            "page_size": PAGE_2M,
            "flags": 0,
            "reserved_pages": 8,
            "allocated_bytes": 2 * PAGE_2M,
            "shared_bytes": 0,
            "allocated": [[PAGE_2M, 3 * PAGE_2M]],
            "shared": [],
        }
        assert (files["/d/small"]["size"], files["/d/small"]["page_size"], files["/d/small"]["reserved_pages"]) == (
            3 * 4096,
            4096,
            0,
        )
        assert mount["unlinked"] == {"files": 1, "reserved_pages": 2, "allocated_bytes": 0}
    finally:
        os.close(anonymous)


def test_status_table_names_files_and_pools(start_gmemfs):
    daemon = start_gmemfs("-o", "pagesize=2M")
    os.close(open_gmem(daemon.mountpoint, "vm0", size=2 * PAGE_2M))
    result = gmemfs("status", str(daemon.mountpoint))
    assert result.returncode == 0
    assert "/vm0" in result.stdout and "2 pages" in result.stdout and "huge page pools" in result.stdout


def test_status_of_a_path_that_is_not_gmemfs(tmp_path):
    result = gmemfs("status", str(tmp_path))
    assert result.returncode == 1 and "is not a gmemfs mount" in result.stderr


def test_a_dead_mount_is_one_line_and_every_other_mount_is_still_shown(start_gmemfs):
    alive, dead = start_gmemfs("-o", "pagesize=4K"), start_gmemfs("-o", "pagesize=4K")
    os.close(open_gmem(alive.mountpoint, "vm0", size=4096))
    dead.kill()
    result = gmemfs("status")
    assert_one_line_error(result, str(dead.mountpoint), "not connected", command="status")
    assert str(alive.mountpoint) in result.stdout and "/vm0" in result.stdout and "huge page pools" in result.stdout
    result = gmemfs("status", "--json")
    assert result.returncode == 1 and str(dead.mountpoint) in result.stderr
    report = json.loads(result.stdout)
    assert str(alive.mountpoint) in [mount["mountpoint"] for mount in report["mounts"]]
    assert [mount["mountpoint"] for mount in report["unreadable_mounts"]] == [str(dead.mountpoint)]


def test_status_of_a_wide_tree_needs_an_fd_per_level_not_per_directory(start_gmemfs):
    """20,500 subdirectories ran out of the default 20,000 fds; 300 run out of 64 the same way."""
    daemon = start_gmemfs("-o", "pagesize=4K")
    for number in range(300):
        (daemon.mountpoint / f"d{number:03}").mkdir()
    os.close(open_gmem(daemon.mountpoint / "d299", "vm0", size=4096))

    def at_most_64_fds():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    result = subprocess.run(
        [*GMEMFS, "status", "--json", str(daemon.mountpoint)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=at_most_64_fds,
    )
    assert result.returncode == 0, result.stderr
    (mount,) = json.loads(result.stdout)["mounts"]
    assert [file["path"] for file in mount["files"]] == ["/d299/vm0"]


def test_status_as_another_user_shows_what_it_may_read(start_gmemfs):
    daemon = start_gmemfs("-o", "pagesize=4K,allow_other")
    (daemon.mountpoint / "private").mkdir(mode=0o700)
    os.close(open_gmem(daemon.mountpoint / "private", "vm0", size=4096))
    os.close(open_gmem(daemon.mountpoint, "root-only", size=4096))  # 0600
    os.close(open_gmem(daemon.mountpoint, "readable", size=4096))
    os.chmod(daemon.mountpoint / "readable", 0o644)
    result = as_nobody(*GMEMFS, "status", "--json", str(daemon.mountpoint))
    assert result.returncode == 0, result.stderr
    (mount,) = json.loads(result.stdout)["mounts"]
    assert [file["path"] for file in mount["files"]] == ["/readable"]
    assert mount["unreadable"] == [
        {"path": "/private/", "error": "Permission denied"},
        {"path": "/root-only", "error": "Permission denied"},
    ]
    table = as_nobody(*GMEMFS, "status", str(daemon.mountpoint))
    assert table.returncode == 0 and "/private/ (Permission" in table.stdout, "a row of its own, wrapped to fit"


def test_status_as_a_user_kept_out_of_a_mount_is_one_line(start_gmemfs):
    daemon = start_gmemfs("-o", "pagesize=4K")  # no allow_other: only root enters
    result = as_nobody(*GMEMFS, "status", str(daemon.mountpoint))
    assert_one_line_error(result, str(daemon.mountpoint), "Permission denied", command="status")


def test_status_of_every_mount_shows_names_that_look_like_markup(start_gmemfs):
    """Any user may name a directory '[' and a file in it ']': rich must not read '[/]' as a closing tag."""
    daemon = start_gmemfs("-o", "pagesize=4K")
    (daemon.mountpoint / "[").mkdir()
    os.close(open_gmem(daemon.mountpoint / "[", "]", size=4096))
    result = gmemfs("status")
    assert result.returncode == 0, result.stderr
    assert "/[/]" in result.stdout


NAME_WITH_CONTROLS = "vm\x1b[31mred\nrow"


def test_status_shows_names_escaped_one_row_each(start_gmemfs):
    daemon = start_gmemfs("-o", "pagesize=4K")
    os.close(open_gmem(daemon.mountpoint, NAME_WITH_CONTROLS, size=4096))
    result = gmemfs("status", str(daemon.mountpoint))
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout
    (row,) = [line for line in result.stdout.splitlines() if "/vm" in line]
    assert "/vm\\033[31mred\\nrow" in row and "4K" in row


def test_map_shows_the_name_escaped(start_gmemfs):
    daemon = start_gmemfs("-o", "pagesize=4K")
    os.close(open_gmem(daemon.mountpoint, NAME_WITH_CONTROLS, size=4096))
    result = gmemfs("map", NAME_WITH_CONTROLS, cwd=daemon.mountpoint)
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout
    assert result.stdout.splitlines()[0] == "vm\\033[31mred\\nrow: 4K, 4K pages, 0 reserved, 0 allocated"


def test_map_error_shows_the_name_escaped(tmp_path):
    (tmp_path / NAME_WITH_CONTROLS).write_text("x")
    result = gmemfs("map", str(tmp_path / NAME_WITH_CONTROLS))
    assert_one_line_error(result, "vm\\033[31mred\\nrow", "is it a file on a gmemfs mount?", command="map")


def test_map_of_a_tmpfs_file_with_inspection_attributes_set_by_hand_is_one_line():
    with tempfile.TemporaryDirectory(dir="/dev/shm") as directory:
        path = os.path.join(directory, "fake")
        open(path, "w").close()
        for name, value in (("flags", "0x0"), ("page_size", "abc"), ("reserved", "0")):
            os.setxattr(path, f"user.gmem.{name}", value.encode())
        result = gmemfs("map", path)
    assert_one_line_error(result, "user.gmem.page_size is 'abc'", "is it a file on a gmemfs mount?", command="map")


def test_map_draws_one_line_per_run(start_gmemfs):
    daemon = start_gmemfs("-o", "pagesize=2M")
    fd = open_gmem(daemon.mountpoint, "vm0", size=8 * PAGE_2M)
    for start, pages in ((PAGE_2M, 2), (5 * PAGE_2M, 1)):
        assert fallocate_result(fd, KEEP_SIZE, start, pages * PAGE_2M) == "OK"
    os.close(fd)
    result = gmemfs("map", str(daemon.mountpoint / "vm0"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].endswith("vm0: 16M, 2M pages, 8 reserved, 6M allocated")
    runs = [line.split()[:4] for line in lines[1:]]
    assert runs == [
        ["0x0000000-0x0200000", "2M", "hole", "private"],
        ["0x0200000-0x0600000", "4M", "allocated", "private"],
        ["0x0600000-0x0a00000", "4M", "hole", "private"],
        ["0x0a00000-0x0c00000", "2M", "allocated", "private"],
        ["0x0c00000-0x1000000", "4M", "hole", "private"],
    ]
    assert "█" in lines[2] and "░" in lines[1]


def test_map_of_a_file_elsewhere_is_one_clear_line(tmp_path):
    (tmp_path / "plain").write_text("x")
    result = gmemfs("map", str(tmp_path / "plain"))
    assert result.returncode == 1 and "is it a file on a gmemfs mount?" in result.stderr


def test_statfs_reports_the_pool_in_the_mount_page_size(start_gmemfs):
    from gmemfs.base.hugepages import pool_counters

    daemon = start_gmemfs("-o", "pagesize=2M")
    fd = open_gmem(daemon.mountpoint, size=4 * PAGE_2M)
    try:
        pool = pool_counters(PAGE_2M)
        st = os.statvfs(daemon.mountpoint)
        assert (st.f_bsize, st.f_blocks, st.f_bfree, st.f_bavail) == (
            PAGE_2M,
            pool.total,
            pool.free,
            pool.free - pool.reserved,
        )
        df = subprocess.run(["df", "-B2M", str(daemon.mountpoint)], capture_output=True, text=True).stdout
        assert df.splitlines()[1].split()[1:4] == [str(pool.total), str(pool.total - pool.free), str(st.f_bavail)]
    finally:
        os.close(fd)


def test_a_range_list_longer_than_an_xattr_value_is_read_in_pages(start_gmemfs):
    """8,192 shared runs take ~160 KB as text; the VFS delivers at most 64 KiB of one value."""
    daemon = start_gmemfs("-o", "pagesize=4K")
    path = daemon.mountpoint / "vm0"
    fd = open_gmem(daemon.mountpoint, "vm0", size=8192 * 2 * 4096)
    try:
        for page in range(8192):
            convert_shared(fd, 2 * page * 4096, 4096)
    finally:
        os.close(fd)
    expected = [[2 * page * 4096, (2 * page + 1) * 4096] for page in range(8192)]

    getfattr = subprocess.run(["getfattr", "--only-values", "-n", "user.gmem.shared", str(path)], capture_output=True)
    assert getfattr.returncode == 0, getfattr.stderr
    first, _, rest = getfattr.stdout.decode().rpartition(",more@")
    assert len(getfattr.stdout) <= 65536 and first and rest
    assert os.getxattr(path, f"user.gmem.shared@{rest}").startswith(f"{rest}-".encode())

    result = gmemfs("status", "--json", str(daemon.mountpoint))
    assert result.returncode == 0, result.stderr
    (file,) = json.loads(result.stdout)["mounts"][0]["files"]
    assert (file["shared"], file["shared_bytes"]) == (expected, 8192 * 4096)
    assert gmemfs("status", str(daemon.mountpoint)).returncode == 0

    result = gmemfs("map", str(path))
    assert result.returncode == 0, result.stderr
    runs = [line.split()[2:4] for line in result.stdout.splitlines()[1:]]
    assert runs == [["hole", "shared"], ["hole", "private"]] * 8192
