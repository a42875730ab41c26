"""The process tree as /proc shows it now: what the in-use check and `gmemfs run` both walk,
and the signals a thread has waiting."""

import os
import signal

# Signals whose default action does not end the process: it stops (to be continued) or does
# nothing. Only a caught signal or a fatal one should end a waiting call.
_HARMLESS_BY_DEFAULT = {
    signal.SIGCHLD, signal.SIGCONT, signal.SIGURG, signal.SIGWINCH,
    signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU,
}  # fmt: skip
_HARMLESS_MASK = sum(1 << (signum - 1) for signum in _HARMLESS_BY_DEFAULT)


def children(pid: int) -> "list[int]":
    """The processes that pid's threads forked (or, for a subreaper, inherited), as they are now."""
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", "rb") as listing:
                found += map(int, listing.read().split())
    except (FileNotFoundError, ProcessLookupError):  # exited meanwhile: its children were reparented
        pass
    return found


def has_interrupting_signal(tid: int) -> bool:
    """Whether thread tid has a signal pending that a wait of its should end for: one it catches
    or one that kills it. A stop (^Z, strace's SIGSTOP) is not: the kernel's own waits restart
    after it (ERESTARTSYS), which a FUSE reply cannot ask for. True if tid is gone."""
    fields = {}
    try:
        with open(f"/proc/{tid}/status") as status:
            for line in status:
                name, _, value = line.partition(":")
                if name in ("SigPnd", "ShdPnd", "SigBlk", "SigCgt"):
                    fields[name] = int(value, 16)
    except (FileNotFoundError, ProcessLookupError):
        return True
    pending = (fields["SigPnd"] | fields["ShdPnd"]) & ~fields["SigBlk"]
    return bool(pending & (fields["SigCgt"] | ~_HARMLESS_MASK))
