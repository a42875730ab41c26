"""The filesystem daemon: pyfuse3's Operations and everything behind them (the inode table,
each gmem file from unsized to evicted, its kernel memory, the conversion protocol and its
in-use check, mount options, limits, injected failures), and the process that runs a daemon.

Owns: every gmem file's state; one trio event loop serves it. May import: gmemfs.base,
gmemfs.kernel, gmemfs.trace.
"""
