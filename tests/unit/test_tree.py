"""The walk status makes: one directory fd at a time, back up through '..', checked, on a tree
that may change under it."""

import os

from gmemfs.base.tree import Unreadable, walk_files


def make_tree(root, *paths):
    for path in paths:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text("")


def paths(entries):
    return [entry.path if isinstance(entry, Unreadable) else entry[2] for entry in entries]


def test_every_file_depth_first_a_directorys_files_before_its_subdirectories(tmp_path):
    make_tree(tmp_path, "a/b/c/f", "a/z/g", "y/h", "top")
    (tmp_path / "link").symlink_to("a")
    assert paths(walk_files(str(tmp_path))) == ["/top", "/a/b/c/f", "/a/z/g", "/y/h"]


def test_each_file_comes_with_its_directorys_fd(tmp_path):
    make_tree(tmp_path, "a/f")
    entries = walk_files(str(tmp_path))
    directory_fd, name, path = next(entries)  # the fd is valid until the next item
    assert (name, path) == ("f", "/a/f")
    assert os.path.samestat(os.stat(name, dir_fd=directory_fd), os.stat(tmp_path / "a/f"))


def test_a_directory_moved_away_mid_walk_is_reached_again_by_name(tmp_path):
    make_tree(tmp_path, "a/b/c/f", "a/z/g", "y/h")
    entries = walk_files(str(tmp_path))
    assert next(entries)[2] == "/a/b/c/f"  # the walk is in /a/b/c
    os.rename(tmp_path / "a/b/c", tmp_path / "y/c")  # '..' now leads to /y, not /a/b
    assert paths(entries) == ["/a/z/g", "/y/h", "/y/c/f"]


def test_a_directory_whose_name_is_gone_too_is_one_unreadable_and_the_walk_goes_on(tmp_path):
    make_tree(tmp_path, "a/b/c/f", "a/z/g", "y/h")
    entries = walk_files(str(tmp_path))
    assert next(entries)[2] == "/a/b/c/f"
    os.rename(tmp_path / "a/b/c", tmp_path / "y/c")
    os.rename(tmp_path / "a/b", tmp_path / "a/b2")
    rest = list(entries)
    assert rest[0] == Unreadable("/a/b/", "moved while being read")
    assert paths(rest[1:]) == ["/a/z/g", "/y/h", "/y/c/f"]


def test_the_walk_holds_one_directory_fd_however_wide_or_deep(tmp_path):
    make_tree(tmp_path, *(f"d{number}/e/f" for number in range(50)), "deep/" * 50 + "f")
    before = len(os.listdir("/proc/self/fd"))
    most = max(len(os.listdir("/proc/self/fd")) - before for _ in walk_files(str(tmp_path)))
    assert most == 1
