"""Touching gmem pages from the host, in a child process so a SIGBUS cannot hurt the test."""

import faulthandler
import mmap
import os
import signal


def touch(fd: int, offset: int, length: int, write: bytes = b"") -> str:
    """'OK:<first bytes>' or 'SIGBUS': map [offset, offset+length) shared in a child and read (or write) it."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        faulthandler.disable()  # the SIGBUS is the expected outcome, not a crash to report
        try:
            os.close(read_end)
            start = offset - offset % mmap.PAGESIZE
            mapping = mmap.mmap(fd, offset - start + length, mmap.MAP_SHARED, offset=start)
            at = offset - start
            if write:
                mapping[at : at + len(write)] = write
                try:
                    mapping.flush()  # write back now (the kernel's own guest_memfd refuses msync)
                except OSError:
                    pass
            os.write(write_end, b"OK:" + mapping[at : at + 8])
        finally:
            os._exit(0)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as pipe:
        output = pipe.read()
    if os.WIFSIGNALED(status):
        return signal.Signals(os.WTERMSIG(status)).name
    return output.decode("latin-1")
