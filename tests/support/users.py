"""gmemfs as another user (nobody) runs it, whatever the permissions of this checkout.

A clone under a 0700 home is unreadable to nobody, and so are its venv and everything the
venv's editable install points to: nobody's gmemfs runs from copies in a world-readable
directory instead, with an interpreter nobody may execute.
"""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

NOBODY = 65534
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]

# Prints the file of every top-level package that importing gmemfs's commands loads from outside
# the interpreter's own library (sys.base_prefix): gmemfs itself and the venv's packages.
TOP_LEVEL_FILES = """
import json, os, sys
before = set(sys.modules)
import gmemfs.cli, gmemfs.commands.dispatch
files = {getattr(sys.modules[name.partition(".")[0]], "__file__", None) for name in set(sys.modules) - before}
print(json.dumps(sorted(file for file in files if file and not file.startswith(sys.base_prefix + os.sep))))
"""


@contextlib.contextmanager
def gmemfs_for_anyone():
    """The gmemfs command for any user, run from copies in a world-readable directory that lasts
    as long as the with block."""
    directory = Path(tempfile.mkdtemp(prefix="gmemfs-test-for-anyone-"))
    try:
        files = subprocess.run([sys.executable, "-c", TOP_LEVEL_FILES], capture_output=True, check=True).stdout
        for file in map(Path, json.loads(files)):
            if file.stem.partition(".")[0] == "__init__":  # a package (pyfuse3's __init__ is its module)
                shutil.copytree(file.parent, directory / file.parent.name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(file, directory)
        for path in (directory, *directory.rglob("*")):
            path.chmod(0o755 if path.is_dir() else 0o644)
        yield ["env", f"PYTHONPATH={directory}", _python_for_anyone(), "-m", "gmemfs"]
    finally:
        shutil.rmtree(directory)


def _python_for_anyone() -> str:
    """This interpreter if the user nobody may run it, else the system's: the same Python version
    either way, so the copied pyfuse3 module loads."""
    version = str(sys.version_info[:2])
    for python in (os.path.realpath(sys.executable), "/usr/bin/python3"):
        probe = [*AS_NOBODY, "env", python, "-c", "import sys; print(sys.version_info[:2])"]
        if subprocess.run(probe, capture_output=True, text=True).stdout.strip() == version:
            return python
    raise AssertionError(f"no Python {sys.version_info.major}.{sys.version_info.minor} that nobody may run")
