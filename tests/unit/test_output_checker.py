"""The fixtures' check of a daemon's log: a test whose daemon complained must fail."""

import tempfile

from support.mount import GmemfsProcess


def daemon_that_logged(text: str) -> GmemfsProcess:
    daemon = GmemfsProcess.__new__(GmemfsProcess)
    daemon.log = tempfile.TemporaryFile()
    daemon.log.write(text.encode())
    return daemon


def test_tracebacks_errors_and_warnings_are_complaints():
    daemon = daemon_that_logged(
        "gmemfs: INFO: mounted\n"
        "gmemfs: WARNING: file /f (inode 2): fallocate failed: No space\n"
        "Traceback (most recent call last):\n"
        "gmemfs: ERROR: file /g (inode 3): read: unexpected error\n"
    )
    assert len(daemon.complaints()) == 3
    assert len(daemon.complaints(warnings_expected=True)) == 2


def test_only_what_was_logged_since_counts():
    daemon = daemon_that_logged("gmemfs: WARNING: before the test\n")
    position = daemon.log_position()
    daemon.log.write(b"gmemfs: INFO: during the test\n")
    assert daemon.complaints(position) == []
