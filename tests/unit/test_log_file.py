"""Where no syslog runs, the daemon writes a file of its own, and nothing else may be there to bound it."""

import os
import subprocess
import sys

from gmemfs.cli import FALLBACK_LOG_BYTES

LINES = 3000  # about 1.1 KiB each: 3.3 MiB, a debugging session's worth or weeks of rate-limited refusals

# The daemon's logging as setup_logging() makes it for a daemonized mount, in a process of its own.
LOG_AS_A_DAEMON = f"""
import logging
from gmemfs.cli import setup_logging
setup_logging(debug=False, daemon=True)
for number in range({LINES}):
    logging.getLogger("gmemfs.daemon.operations").info("file /%s (inode %d): fallocate: a refusal", "d" * 1000, number)
"""


def test_a_daemon_without_syslog_keeps_its_log_file_bounded(tmp_path):
    log_file = tmp_path / "gmemfs.log"
    env = {**os.environ, "GMEMFS_SYSLOG": str(tmp_path / "no-syslog"), "GMEMFS_LOG_FILE": str(log_file)}
    subprocess.run([sys.executable, "-c", LOG_AS_A_DAEMON], env=env, check=True, timeout=60)
    files = sorted(path for path in tmp_path.iterdir() if path.name.startswith("gmemfs.log"))
    sizes = {path.name: path.stat().st_size for path in files}
    assert list(sizes) == ["gmemfs.log", "gmemfs.log.1"], sizes
    assert all(size <= FALLBACK_LOG_BYTES for size in sizes.values()), sizes
    kept = sum(path.read_text().count("a refusal") for path in files)
    assert kept < LINES and f"(inode {LINES - 1})" in log_file.read_text(), "the oldest lines went, the newest stay"
