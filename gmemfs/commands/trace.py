"""gmemfs trace MOUNTPOINT: a mount's guest_memfd events as the daemon makes them, for root."""

import argparse
import contextlib
import errno
import os
import select
import sys
import time

from ..base.printable import printable
from ..kernel.uapi import TRACE_FILE
from ..trace.events import TraceEvent
from ..trace.merge import LineDecoder
from .errors import CommandError
from .status import gmemfs_mounts

READ_SIZE = 1 << 16
BATCH_WAIT = 0.005  # after poll wakes: the events of the next 5 ms come in the same read, not one poll + read each
DEAD_MOUNT = (errno.ENOTCONN, errno.ECONNABORTED)  # the daemon died: its stream ends too


def trace_command(argv: "list[str]") -> int:
    parser = argparse.ArgumentParser(
        prog="gmemfs trace",
        description="Print a mount's events as the daemon makes them (root only): files created, "
        "sized, allocated, punched, converted, faults refused, evictions, every refused request "
        "with its errno and rule. One line each, until Ctrl-C or the daemon ends.",
    )
    parser.add_argument("mountpoint")
    parser.add_argument("--format", choices=("text", "json"), default="text", help="text (default) or JSON lines")
    args = parser.parse_args(argv)
    shown = printable(args.mountpoint)
    if os.geteuid() != 0:
        raise CommandError("trace: only root can read a mount's events (they name every user's files)")
    mountpoint = os.path.abspath(args.mountpoint)
    if mountpoint not in gmemfs_mounts():
        raise CommandError(f"trace: {shown} is not a gmemfs mount")
    try:
        fd = os.open(os.path.join(mountpoint, os.fsdecode(TRACE_FILE)), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        hint = " (its daemon is gone)" if error.errno in DEAD_MOUNT else ""
        raise CommandError(f"trace: {shown}: {error.strerror}{hint}") from None
    try:
        follow(fd, args.format == "json", time.monotonic())
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # `| head`: whoever read the lines has enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        with contextlib.suppress(OSError):  # a dead mount's close() is ENOTCONN
            os.close(fd)
    return 0


def follow(fd: int, as_json: bool, start: float) -> None:
    """Print each event, a line at a time, until the stream ends (then one "daemon-ended" line).

    The file is read only once poll(2) says it is readable: a read the daemon holds could not
    be interrupted by Ctrl-C (see daemon/trace_file.py); poll can. Each poll costs the
    daemon two requests and a notification, so a busy stream is read in batches."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    decoder = LineDecoder()
    while True:
        poller.poll()
        time.sleep(BATCH_WAIT)
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            continue
        except OSError as error:
            if error.errno not in DEAD_MOUNT:
                raise
            data = b""
        if not data:
            ended = TraceEvent(time=time.monotonic(), source="daemon", what="daemon-ended")
            _print(ended, as_json, start)
            return
        for event in decoder.feed(data):
            _print(event, as_json, start)


def _print(event: TraceEvent, as_json: bool, start: float) -> None:
    """JSON is escaped by the encoder; the text line may hold names any user chose, escaped as ls -b."""
    print(event.to_json() if as_json else printable(event.text(start)), flush=True)
