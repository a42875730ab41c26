import pytest

from gmemfs.base.units import format_size, parse_size
from gmemfs.daemon.options import OptionError, parse_mount_options
from gmemfs.kernel.uapi import KVM_GUEST_MEMFD_HUGE_1GB, KVM_GUEST_MEMFD_HUGE_2MB, KVM_GUEST_MEMFD_HUGETLB


def test_defaults():
    options = parse_mount_options([])
    assert options.page_size == 4096 and options.default_flags == 0
    assert options.default_permissions and not options.allow_other
    assert {"default_permissions", "fsname=gmemfs", "subtype=gmemfs"} <= options.fuse_options()


@pytest.mark.parametrize(
    "value, flags",
    [
        ("2M", KVM_GUEST_MEMFD_HUGETLB | KVM_GUEST_MEMFD_HUGE_2MB),
        ("1G", KVM_GUEST_MEMFD_HUGETLB | KVM_GUEST_MEMFD_HUGE_1GB),
        ("4k", 0),
    ],
)
def test_pagesize_sets_the_flags_of_new_files(value, flags):
    assert parse_mount_options([f"pagesize={value}"]).default_flags == flags


def test_options_combine_across_several_o():
    options = parse_mount_options(["allow_other,pagesize=2M", "default_permissions", "noatime,auto"])
    assert options.allow_other and options.default_permissions
    assert options.page_size == 2 << 20
    assert "noatime" in options.fuse_options() and "auto" not in options.fuse_options()


def test_the_largest_ids_and_counts():
    options = parse_mount_options(["uid=4294967294,gid=4294967294,max_files=18446744073709551615"])
    assert (options.root_uid, options.root_gid, options.max_files) == (4294967294, 4294967294, (1 << 64) - 1)


def test_atime_options_mount8_passes_on_are_accepted():
    assert "relatime" not in parse_mount_options(["relatime,nodiratime"]).fuse_options(), "libfuse 3.14 refuses them"


def test_busy_poll():
    assert parse_mount_options([]).busy_poll_us == 50
    assert parse_mount_options(["busy_poll=0"]).busy_poll_us == 0
    assert parse_mount_options(["busy_poll=10000"]).busy_poll_us == 10_000


def test_cache_timeout():
    assert parse_mount_options([]).cache_timeout == 1.0
    assert parse_mount_options(["cache_timeout=0"]).cache_timeout == 0.0


@pytest.mark.parametrize(
    "bad",
    [
        *("pagesize=3M", "pagesize=", "pagesize", "abi=v9", "colour=blue", "allow_other=1", "cache_timeout=-1"),
        *("busy_poll=-1", "busy_poll=10001", "busy_poll=1.5", "busy_poll"),
        *("busy_poll=²", "max_files=²", "max_huge_pages=²", "uid=²", "max_size=٣M", "max_files=18446744073709551616"),
        *("uid=4294967296", "uid=4294967295", "gid=4294967296", "gid=-1"),
    ],
)
def test_bad_options_name_themselves(bad):
    with pytest.raises(OptionError, match=bad.split("=")[0]):
        parse_mount_options([bad])


@pytest.mark.parametrize(
    "text, size", [("4K", 4096), ("2M", 2 << 20), ("1g", 1 << 30), ("2MiB", 2 << 20), ("512", 512)]
)
def test_parse_size(text, size):
    assert parse_size(text) == size


def test_format_size():
    assert [format_size(s) for s in (4096, 2 << 20, 1 << 30, 1 << 40, 1000)] == ["4K", "2M", "1G", "1T", "1000"]


def test_the_daemon_does_not_import_rich():
    """rich costs ~45 modules and ~34 ms per start: only the commands that draw import it."""
    import subprocess
    import sys

    code = "import sys, gmemfs.cli, gmemfs.daemon.operations, gmemfs.run.command; print('rich' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_other_users_never_reach_a_mount_without_permission_checks():
    """The daemon checks no mode bits itself: on a shared mount the kernel must."""
    with pytest.raises(OptionError, match="allow_other with nodefault_permissions"):
        parse_mount_options(["allow_other,nodefault_permissions"])
    assert not parse_mount_options(["nodefault_permissions"]).default_permissions, "fine for the owner alone"
