"""Plumbing that knows nothing of guest_memfd: libc calls, sizes, byte-range sets, the mount
table, entering a mount namespace, the process tree and its pending signals, the machine's
hugetlb pools, rate-limited logs, names as a terminal shows them, a directory walk.

Owns: nothing stateful. May import: the standard library only, never another part of gmemfs.
"""
