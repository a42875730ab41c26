"""status's walk of a tree that changes under it: one fd at a time, back up through '..', checked.

A directory's files come before its subdirectories' (mount_status sorts them afterwards).
"""

import os

from gmemfs.status import Unreadable, walk


def make_tree(root, *paths):
    for path in paths:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text("")


def test_the_walk_lists_every_file_depth_first(tmp_path):
    """Files outside gmemfs have no inspection attributes, so each is an Unreadable: enough to follow the walk."""
    make_tree(tmp_path, "a/b/c/f", "a/z/g", "y/h", "top")
    assert [(entry.path, entry.reason) for entry in walk(str(tmp_path))] == [
        ("/top", "No data available"),
        ("/a/b/c/f", "No data available"),
        ("/a/z/g", "No data available"),
        ("/y/h", "No data available"),
    ]


def test_a_directory_moved_away_mid_walk_is_reached_again_by_name(tmp_path):
    make_tree(tmp_path, "a/b/c/f", "a/z/g", "y/h")
    entries = walk(str(tmp_path))
    assert next(entries).path == "/a/b/c/f"  # the walk is in /a/b/c
    os.rename(tmp_path / "a/b/c", tmp_path / "y/c")  # '..' now leads to /y, not /a/b
    assert [entry.path for entry in entries] == ["/a/z/g", "/y/h", "/y/c/f"]


def test_a_directory_whose_name_is_gone_too_is_one_unreadable_and_the_walk_goes_on(tmp_path):
    make_tree(tmp_path, "a/b/c/f", "a/z/g", "y/h")
    entries = walk(str(tmp_path))
    assert next(entries).path == "/a/b/c/f"
    os.rename(tmp_path / "a/b/c", tmp_path / "y/c")
    os.rename(tmp_path / "a/b", tmp_path / "a/b2")
    rest = list(entries)
    assert rest[0] == Unreadable("/a/b/", "moved while status read it")
    assert [entry.path for entry in rest[1:]] == ["/a/z/g", "/y/h", "/y/c/f"]


def test_the_walk_holds_one_directory_fd(tmp_path):
    make_tree(tmp_path, *(f"d{number}/e/f" for number in range(50)))
    before = len(os.listdir("/proc/self/fd"))
    entries = walk(str(tmp_path))
    most = max(len(os.listdir("/proc/self/fd")) - before for _ in entries)
    assert most <= 1
