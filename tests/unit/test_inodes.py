import itertools
import stat
import time

from gmemfs.base.hugepages import HugePageSupport
from gmemfs.daemon.guest_memfd import GuestMemfd
from gmemfs.daemon.inodes import FIRST_ENTRY_COOKIE, ROOT_INO, TRACE_INO, InodeTable
from gmemfs.kernel.uapi import RFC_V1

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
    assert len(table) == 2  # the root and the trace file


def test_the_trace_file_is_permanent_uncharged_and_named_in_no_directory():
    table = InodeTable(0o755, 0, 0)
    trace = table[TRACE_INO]
    assert (trace.mode, trace.uid, trace.gid, trace.gmem) == (stat.S_IFREG | 0o400, 0, 0, None)
    assert table.charged == 0 and table[ROOT_INO].entries == {}
    assert table.path_of(trace) == "/.gmemfs-trace"
    table.add_lookup(trace)
    fh = table.open(trace)
    assert table.release(fh) is None and table.forget(TRACE_INO, 1) is None
    table.evict_all()
    assert table[TRACE_INO] is trace


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


def page_through(table, directory, chunk, between=lambda names: None):
    """Read a directory as the kernel does: `chunk` entries per readdir, resuming from the last cookie."""
    names, cookie = [], FIRST_ENTRY_COOKIE - 1
    while True:
        page = list(itertools.islice(table.entries_after(directory, cookie), chunk))
        if not page:
            return names
        names += [name for name, _, _ in page]
        cookie = page[-1][2]
        between(names)


def directory_of(table, count):
    root = table[ROOT_INO]
    sub = table.new(stat.S_IFDIR | 0o755, 0, 0, b"d")
    table.link(root, b"d", sub)
    for number in range(count):
        table.link(sub, b"%d" % number, table.new(stat.S_IFDIR | 0o755, 0, 0, b"%d" % number))
    return sub


def test_readdir_resumes_from_its_cookie_while_names_come_and_go():
    table = InodeTable(0o755, 0, 0)
    directory = directory_of(table, 1000)

    def churn(names):  # unlink a name not yet read and one already read; link a new one
        for name in (b"%d" % (len(names) + 5), names[len(names) // 2]):
            if name in directory.entries:
                table.unlink(directory, name)
        if len(names) < 1000:
            table.link(directory, b"new%d" % len(names), table.new(stat.S_IFDIR | 0o755, 0, 0, b"n"))

    names = page_through(table, directory, 25, churn)
    assert len(names) == len(set(names)), "nothing twice"
    assert set(directory.entries) <= set(names), "every name linked all along, and every new one, is read"
    assert len(names) > 1000


def test_readdir_reads_what_remains_after_most_names_are_gone():
    table = InodeTable(0o755, 0, 0)
    directory = directory_of(table, 500)
    for number in range(0, 500):
        if number % 7:
            table.unlink(directory, b"%d" % number)
    assert page_through(table, directory, 3) == [b"%d" % number for number in range(0, 500, 7)]


def test_readdir_of_a_large_directory_does_not_rescan_it_for_every_chunk():
    """100,000 entries 25 at a time: about 50 ms here; rescanning from the start for every chunk
    (4,000 scans of 50,000 entries on average), about 8 s."""
    table = InodeTable(0o755, 0, 0)
    directory = directory_of(table, 100_000)
    deadline = time.monotonic() + 3.0

    def in_time(names):
        assert time.monotonic() < deadline, f"only {len(names)} entries read in 3 s"

    assert len(page_through(table, directory, 25, in_time)) == 100_000
