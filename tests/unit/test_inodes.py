import stat

from gmemfs.guest_memfd import GuestMemfd
from gmemfs.hugepages import HugePageSupport
from gmemfs.inodes import ROOT_INO, InodeTable
from gmemfs.uapi import RFC_V1

SUPPORT = HugePageSupport(sizes=frozenset({2 << 20}), default_size=2 << 20)


def make_file(table, name=b"f"):
    gmem = GuestMemfd(0, RFC_V1, SUPPORT)
    gmem.complete_creation(8192)  # a real memfd: eviction must close it
    inode = table.new(stat.S_IFREG | 0o600, 0, 0, name, gmem)
    table.link(table[ROOT_INO], name, inode)
    return inode, gmem


def test_an_unlinked_files_memory_goes_back_at_its_last_release_and_its_inode_at_forget():
    """evict_inode runs during the last close; FUSE's FORGET comes later and only ends the entry."""
    table = InodeTable(0o755, 0, 0)
    inode, gmem = make_file(table)
    table.add_lookup(inode)
    fh = table.open(inode)
    assert table.unlink(table[ROOT_INO], b"f") is None, "still open and looked up"
    assert table.release(fh) is gmem, "nothing can reach it any more: its memory is the caller's to release"
    assert table[inode.ino] is inode, "the kernel still holds a lookup"
    gmem.evict()
    table.forget(inode.ino, 1)
    assert inode.ino not in [i.ino for i in table.files()]


def test_forget_before_release_waits_for_release():
    table = InodeTable(0o755, 0, 0)
    inode, gmem = make_file(table)
    table.add_lookup(inode)
    fh = table.open(inode)
    table.unlink(table[ROOT_INO], b"f")
    assert table.forget(inode.ino, 1) is None
    assert table.release(fh) is gmem
    gmem.evict()


def test_linked_file_survives_close_and_forget():
    table = InodeTable(0o755, 0, 0)
    inode, gmem = make_file(table)
    table.add_lookup(inode)
    assert table.release(table.open(inode)) is None
    assert table.forget(inode.ino, 1) is None
    assert table[inode.ino] is inode
    table.evict_all()


def test_hard_link_keeps_the_file():
    table = InodeTable(0o755, 0, 0)
    inode, gmem = make_file(table)
    table.link(table[ROOT_INO], b"g", inode)
    assert table.unlink(table[ROOT_INO], b"f") is None
    assert inode.nlink == 1 and table[inode.ino] is inode
    assert table.unlink(table[ROOT_INO], b"g") is gmem
    gmem.evict()


def test_directory_link_counts():
    table = InodeTable(0o755, 0, 0)
    root = table[ROOT_INO]
    sub = table.new(stat.S_IFDIR | 0o755, 0, 0, b"d")
    table.link(root, b"d", sub)
    assert (root.nlink, sub.nlink) == (3, 2)
    table.unlink(root, b"d")
    assert (root.nlink, sub.nlink) == (2, 0)


def test_evict_all_releases_every_file():
    table = InodeTable(0o755, 0, 0)
    (_, first), (_, second) = make_file(table, b"a"), make_file(table, b"b")
    table.evict_all()
    assert first.backing is None and second.backing is None
    assert len(table) == 1


def test_every_name_of_a_file_beyond_its_first_is_charged_as_tmpfs_does():
    table = InodeTable(0o755, 0, 0)
    root = table[ROOT_INO]
    inode, _ = make_file(table)
    sub = table.new(stat.S_IFDIR | 0o755, 0, 0, b"d")
    table.link(root, b"d", sub)
    assert table.charged == 2, "the root is not charged"
    table.link(root, b"g", inode)
    table.link(sub, b"h", inode)
    assert table.charged == 4
    table.link(root, b"renamed", inode)  # a rename links the new name, then unlinks the old one
    table.unlink(root, b"f")
    assert table.charged == 4
    table.unlink(root, b"g")
    table.unlink(sub, b"h")
    assert table.charged == 2
    table.link(root, b"e", sub)
    table.unlink(root, b"d")
    assert table.charged == 2, "renaming a directory charges nothing"
    table.evict_all()
