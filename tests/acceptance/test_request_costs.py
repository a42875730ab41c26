"""What a system call on a gmemfs file costs in FUSE requests, as the kernel's tracepoint counts them.

Unless the daemon handles killpriv itself (FUSE_HANDLE_KILLPRIV_V2), the kernel asks it for
security.capability before every fallocate: a second round trip on the VMM's hot path.
"""

import os
import stat

from support.files import open_gmem
from support.fuse_trace import fuse_requests
from support.syscalls import KEEP_SIZE, PUNCH

from gmemfs import fallocate


def test_fallocate_costs_one_request(gmem_dir, page_size):
    fd = open_gmem(gmem_dir, size=2 * page_size)
    try:
        with fuse_requests(gmem_dir) as sent:
            for _ in range(3):
                fallocate(fd, KEEP_SIZE, 0, 2 * page_size)
                fallocate(fd, PUNCH, 0, 2 * page_size)
            requests = sent()
    finally:
        os.close(fd)
    assert requests["FUSE_FALLOCATE"] == 6
    assert requests["FUSE_GETXATTR"] <= 1, requests  # the first look at a file may still ask


def test_files_never_keep_set_id_bits(gmem_dir):
    """The daemon keeps its killpriv promise by never storing what it would have to drop."""
    path = gmem_dir / "program"
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o6755))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o755
    os.chmod(path, 0o6700)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    directory = gmem_dir / "shared-group"
    os.mkdir(directory)
    os.chmod(directory, 0o2770)  # directories keep theirs: they are not what killpriv is about
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o2770
