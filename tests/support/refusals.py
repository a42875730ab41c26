"""The modules whose every GmemError names the function that makes the refusal (the trace prints it)."""

import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "gmemfs"
NAMING_MODULES = frozenset(
    str(PACKAGE / name)
    for name in (
        "kernel/rules.py",
        "daemon/limits.py",
        "daemon/backing.py",
        "daemon/guest_memfd.py",
        "run/memslots.py",
        "run/supervisor.py",
        "daemon/operations.py",
        "daemon/conversion.py",
        "daemon/faults.py",
    )
)
