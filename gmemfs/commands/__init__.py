"""The operator's commands: gmemfs pool | status | map | convert | trace, read from outside the daemon
through a mount's inspection attributes and sysfs, and drawn for a terminal.

Owns: nothing that outlives a command. May import: gmemfs.base, gmemfs.kernel,
gmemfs.trace, gmemfs.client; never the daemon or run (a command works on any mount, whoever
serves it).
"""
