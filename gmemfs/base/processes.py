"""The process tree as /proc shows it now: what the in-use check and `gmemfs run` both walk."""

import os


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
