"""The mount table as the kernel escapes it."""

from gmemfs.base.mounts import is_mounted, mounts, unescape


def test_octal_escapes_are_undone():
    assert unescape(r"/mnt/my\040gmem\011x\134y") == "/mnt/my gmem\tx\\y"


def test_a_mountpoint_with_a_space_is_found(tmp_path):
    table = tmp_path / "mounts"
    table.write_text("gmemfs /mnt/my\\040gmem fuse.gmemfs rw,nosuid 0 0\n")
    assert mounts(str(table)) == [("gmemfs", "/mnt/my gmem", "fuse.gmemfs", "rw,nosuid")]
    assert is_mounted("/mnt/my gmem", str(table))
    assert not is_mounted("/mnt/my\\040gmem", str(table))
