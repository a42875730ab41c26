"""A pyfuse3 filesystem that answers every request gmemfs answers, doing nothing.

Its times are the floor any Python FUSE daemon pays for the same request.
Usage: python -m benchmarks.nullfs MOUNTPOINT CACHE_TIMEOUT [BUSY_POLL_US]   (foreground)
"""

import errno
import itertools
import os
import signal
import stat
import sys

import pyfuse3
import trio

from gmemfs.daemon.options import DEFAULT_BUSY_POLL_US

ROOT = pyfuse3.ROOT_INODE


class NullFs(pyfuse3.Operations):
    handle_killpriv_v2 = True  # as gmemfs: the floor pays the same round trips, no more

    def __init__(self, cache_timeout: float) -> None:
        super().__init__()
        self.cache_timeout = cache_timeout
        self.names: dict[bytes, int] = {}
        self.sizes: dict[int, int] = {}
        self.next_ino = itertools.count(ROOT + 1)

    def _entry(self, ino: int) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = ino
        entry.st_mode = (stat.S_IFDIR | 0o755) if ino == ROOT else (stat.S_IFREG | 0o600)
        entry.st_size = self.sizes.get(ino, 0)
        entry.attr_timeout = entry.entry_timeout = self.cache_timeout
        return entry

    async def lookup(self, parent_inode, name, ctx):
        if name not in self.names:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._entry(self.names[name])

    async def getattr(self, inode, ctx):
        return self._entry(inode)

    async def setattr(self, inode, attr, fields, fh, ctx):
        if fields.update_size:
            self.sizes[inode] = attr.st_size
        return self._entry(inode)

    async def create(self, parent_inode, name, mode, flags, ctx):
        ino = next(self.next_ino)
        self.names[name] = ino
        return pyfuse3.FileInfo(fh=ino, keep_cache=True, nonseekable=True), self._entry(ino)

    async def open(self, inode, flags, ctx):
        return pyfuse3.FileInfo(fh=inode, keep_cache=True, nonseekable=True)

    async def unlink(self, parent_inode, name, ctx):
        del self.names[name]

    async def forget(self, inode_list):
        pass

    async def release(self, fh):
        pass

    async def flush(self, fh):
        pass

    async def fsync(self, fh, datasync):
        pass

    async def setxattr(self, inode, name, value, ctx):
        pass

    async def getxattr(self, inode, name, ctx):
        # A filesystem with xattrs, as gmemfs: the kernel then asks for security.capability
        # before every modification (fallocate, truncate) of a FUSE file.
        raise pyfuse3.FUSEError(pyfuse3.ENOATTR)

    async def fallocate(self, inode, fh, mode, offset, length, ctx):
        pass

    async def ioctl(self, inode, fh, cmd, arg, in_buf, out_size, flags, ctx):
        return 0, in_buf

    async def read(self, fh, off, size):
        return bytes(size)

    async def writepage(self, fh, off, buf):
        return len(buf)

    async def opendir(self, inode, ctx):
        return inode

    async def readdir(self, fh, start_id, token):
        pass

    async def releasedir(self, fh):
        pass


async def serve(busy_poll_us: int) -> None:
    async with trio.open_nursery() as nursery:

        async def stop_on_signal():
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    nursery.cancel_scope.cancel()

        nursery.start_soon(stop_on_signal)
        await pyfuse3.main(busy_poll=busy_poll_us / 1e6)
        nursery.cancel_scope.cancel()


def main() -> None:
    mountpoint, cache_timeout = sys.argv[1], float(sys.argv[2])
    # The machinery gmemfs runs on: the same polling for the next request, unless told otherwise.
    busy_poll_us = int(sys.argv[3]) if len(sys.argv) > 3 else DEFAULT_BUSY_POLL_US
    # The same options gmemfs mounts with: default_permissions makes the kernel check (and fetch) attributes.
    pyfuse3.init(NullFs(cache_timeout), mountpoint, {"fsname=nullfs", "subtype=nullfs", "default_permissions"})
    try:
        trio.run(serve, busy_poll_us)
    finally:
        with open("/proc/self/mounts") as mounts:
            mounted = any(line.split()[1] == os.path.abspath(mountpoint) for line in mounts)
        pyfuse3.close(unmount=mounted)


if __name__ == "__main__":
    main()
