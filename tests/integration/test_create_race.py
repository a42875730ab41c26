"""Issue 17 section 2: create_guest_memfd() must never hand a VMM another user's file."""

import os
import subprocess
import sys

from gmemfs import create_guest_memfd

NOBODY = 65534

# Runs as nobody: on every creation of a temporary name, rename a file of its own over it.
RENAME_OVER_NEW_NAMES = """
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
directory = sys.argv[1]
events = libc.inotify_init1(0)
assert libc.inotify_add_watch(events, directory.encode(), 0x100) >= 0  # IN_CREATE
count = 0
def bait():
    global count
    count += 1
    path = os.path.join(directory, f"bait-{os.getpid()}-{count}")
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o666))
    return path
ready = bait()
os.write(1, b"watching\\n")
while True:
    buffer = os.read(events, 65536)
    at = 0
    while at < len(buffer):
        _wd, _mask, _cookie, length = struct.unpack_from("iIII", buffer, at)
        name = buffer[at + 16 : at + 16 + length].rstrip(b"\\0").decode()
        at += 16 + length
        if name.startswith(".guest_memfd"):
            try:
                os.rename(ready, os.path.join(directory, name))
            except OSError:
                continue
            ready = bait()
"""


def test_a_name_swapped_during_creation_never_reaches_the_caller(start_gmemfs):
    """In a world-writable directory without the sticky bit a user renamed its own file over the
    temporary name; within a few hundred creations root's VMM received the attacker's file."""
    daemon = start_gmemfs("-o", "allow_other,mode=0777")
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    attacker = subprocess.Popen(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", python, "-c", RENAME_OVER_NEW_NAMES]
        + [str(daemon.mountpoint)],
        stdout=subprocess.PIPE,
    )
    try:
        assert attacker.stdout.readline() == b"watching\n"
        foreign = 0
        for _ in range(1000):
            fd = create_guest_memfd(daemon.mountpoint, 4096, 0)
            try:
                st = os.fstat(fd)
                foreign += st.st_uid != 0 or st.st_size != 4096
            finally:
                os.close(fd)
        assert foreign == 0, f"{foreign} of 1000 creations returned the attacker's file"
    finally:
        attacker.kill()
        attacker.wait()
