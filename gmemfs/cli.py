"""The gmemfs command: check the options and the machine, mount, serve, clean up."""

import argparse
import gc
import logging
import logging.handlers
import os
import resource
import signal
import stat
import sys
from pathlib import Path

import pyfuse3
import trio

from .base.hugepages import HugePageSupport, pool_counters
from .base.mounts import is_mounted, mount_device
from .base.namespaces import enter_mount_namespace
from .base.units import format_size
from .commands.dispatch import COMMANDS, run_command
from .daemon.operations import GmemOperations
from .daemon.options import MountOptions, OptionError, parse_mount_options
from .kernel.uapi import ABI_PROFILES, DEFAULT_ABI
from .run.private_mount import enter_private_mount_namespace

log = logging.getLogger("gmemfs")


class UsageError(Exception):
    """Something the user can fix; printed as one line, exit status 1."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="gmemfs",
        usage="%(prog)s [-o OPT[=VAL],...] [-f] [-d] [SOURCE] MOUNTPOINT\n"
        "       %(prog)s pool [SIZE=PAGES ...] [--json]\n"
        "       %(prog)s status [MOUNTPOINT] [--json]\n"
        "       %(prog)s map FILE\n"
        "       %(prog)s convert FILE shared|private [-o OFFSET] [-l LENGTH]\n"
        "       %(prog)s trace MOUNTPOINT [--format=text|json]\n"
        "       %(prog)s run [-o OPT[=VAL],...] [--mount DIR] [--trace[=FILE]] [--trace-format=json]\n"
        "                  -- PROGRAM [ARGS...]",
        description="Mount a filesystem whose every regular file is a KVM guest_memfd "
        "backed by real hugetlb (or shared) memory.",
        epilog="Mount options: pagesize=4K|2M|1G (page size of new files, default 4K), "
        f"abi={'|'.join(ABI_PROFILES)} (which flag bits mean what, default {DEFAULT_ABI.name}), "
        "allow_other, default_permissions (on; nodefault_permissions turns it off), "
        "cache_timeout=SECONDS (how long the kernel caches names and attributes, default 1), "
        "busy_poll=MICROSECONDS (how long the daemon looks for the next request before it sleeps, "
        "default 50; 0 never polls), debug, "
        "fail=OPERATION:ERRNO[:N] (inject a failure: OPERATION allocate|punch|size|convert_shared|"
        "convert_private; only the Nth call, or every call; repeatable). "
        "Limits for shared mounts: max_huge_pages=N, max_size=SIZE (4 KiB files), max_files=N, "
        "uid=, gid=, mode= (owner and mode of the root). "
        "SOURCE is ignored (mount(8) and fstab pass one).",
    )
    parser.add_argument("paths", nargs="+", metavar="[SOURCE] MOUNTPOINT")
    parser.add_argument("-o", dest="options", action="append", default=[], metavar="OPT[=VAL],...")
    parser.add_argument("-f", "--foreground", action="store_true", help="do not daemonize")
    parser.add_argument("-d", "--debug", action="store_true", help="debug logging (implies -f)")
    parser.add_argument("--private-for", type=int, metavar="PID", help=argparse.SUPPRESS)  # gmemfs run's daemon
    parser.add_argument(
        "--mount-namespace",
        metavar="NS",
        help="mount in the mount namespace NS (/proc/PID/ns/mnt); mount.fuse.gmemfs passes mount -N's",
    )
    return parser.parse_args(argv)


def check_machine(mountpoint: str, options: MountOptions, support: HugePageSupport) -> None:
    """Refuse, with one clear line, what would make the mount fail or be useless."""
    if options.page_size != 4096 and os.geteuid() != 0:
        raise UsageError(
            f"pagesize={format_size(options.page_size)}: hugetlb files need root "
            "(each reserves its pages with a hugetlbfs superblock of its own)"
        )
    try:
        is_dir = stat.S_ISDIR(os.stat(mountpoint).st_mode)
    except FileNotFoundError:
        raise UsageError(f"mountpoint {mountpoint} does not exist") from None
    except OSError as error:
        raise UsageError(
            f"mountpoint {mountpoint}: {error.strerror} (a dead mount? try: fusermount3 -u {mountpoint})"
        ) from None
    if not is_dir:
        raise UsageError(f"mountpoint {mountpoint} is not a directory")
    if is_mounted(mountpoint):
        raise UsageError(f"mountpoint {mountpoint} is already mounted")
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        raise UsageError("cannot open /dev/fuse: load the fuse module and run as root (or a member of its group)")
    if options.page_size != 4096:
        size = format_size(options.page_size)
        if options.page_size not in support.sizes:
            raise UsageError(f"pagesize={size}: this machine has no {size} huge pages")
        if pool_counters(options.page_size).total == 0:
            log.warning(
                "the %s huge page pool is empty: sizing a file will fail with ENOMEM until it grows "
                "(mount_helper/hugepages %s=N)",
                size,
                size,
            )


READAHEAD_KB = 2048  # a host touching a shared mapping page by page faults 2 MiB at a time


def widen_readahead(mountpoint: str) -> None:
    """FUSE mounts read ahead 128 KiB: every first touch of a shared page is a READ round trip,
    so a host writing through a mapping waits on one per 128 KiB (3x slower, measured)."""
    device = mount_device(mountpoint)
    try:
        Path(f"/sys/class/bdi/{device[0]}:{device[1]}/read_ahead_kb").write_text(f"{READAHEAD_KB}\n")
    except (OSError, TypeError) as error:  # not root, or no such bdi: the default stands
        log.debug("read-ahead stays at the kernel's default: %s", error)


def allow_one_fd_per_file() -> None:
    """Each sized file holds one daemon fd: the hard limit, not the soft one, bounds the mount."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    log.debug("open-file limit %d: about that many sized files fit on this mount", hard)


SYSLOG_ADDRESS = os.environ.get("GMEMFS_SYSLOG", "/dev/log")  # journald listens here too
FALLBACK_LOG = os.environ.get("GMEMFS_LOG_FILE", "/var/log/gmemfs.log")
FALLBACK_LOG_BYTES = 1 << 20  # then it becomes FALLBACK_LOG.1, replacing the previous one


def setup_logging(debug: bool, daemon: bool) -> None:
    """Foreground: stderr. Daemon: syslog/journald, or a file where neither runs, which the
    daemon rotates itself: nothing else may be there to bound it (no journald, maybe no logrotate)."""
    if not daemon:
        handler: logging.Handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("gmemfs: %(levelname)s: %(message)s"))
    elif os.path.exists(SYSLOG_ADDRESS):
        handler = logging.handlers.SysLogHandler(address=SYSLOG_ADDRESS, facility="daemon")
        handler.setFormatter(logging.Formatter(f"gmemfs[{os.getpid()}]: %(message)s"))
    else:
        handler = logging.handlers.RotatingFileHandler(FALLBACK_LOG, maxBytes=FALLBACK_LOG_BYTES, backupCount=1)
        handler.setFormatter(logging.Formatter(f"%(asctime)s gmemfs[{os.getpid()}]: %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    logging.getLogger("pyfuse3").addFilter(_interrupted_replies_are_no_errors)


def _interrupted_replies_are_no_errors(record: logging.LogRecord) -> bool:
    """pyfuse3 logs every failed reply as an error; ENOENT means the kernel no longer waits for
    the request (interrupted, or the connection aborted), which libfuse itself passes over."""
    if record.levelno == logging.ERROR and record.getMessage().endswith("failed with No such file or directory"):
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)
    return True


def daemonize() -> None:
    """Detach after the mount exists, so the caller's exit status means 'mounted'."""
    if os.fork():
        os._exit(0)
    os.setsid()
    os.chdir("/")  # keep no directory busy (the one gmemfs was started from could not be unmounted)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


async def serve(operations: GmemOperations, mountpoint: str) -> None:
    """Answer requests until unmounted (fusermount3 -u) or told to stop (SIGINT/SIGTERM)."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signal, operations, nursery.cancel_scope)
        nursery.start_soon(_widen_readahead_once_initialized, operations, mountpoint)
        gc.freeze()  # what startup made lives as long as the daemon: keep it out of every collection
        await operations.serve(busy_poll=operations.options.busy_poll_us / 1e6)
        nursery.cancel_scope.cancel()


async def _widen_readahead_once_initialized(operations: GmemOperations, mountpoint: str) -> None:
    """The kernel sets the read-ahead from FUSE's INIT reply: widen it only after that."""
    await operations.initialized.wait()
    await trio.sleep(0)  # the reply went out right after init() returned
    widen_readahead(mountpoint)


async def _stop_on_signal(operations: GmemOperations, scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info("%s: unmounting", signal.Signals(signum).name)
            await operations.end_trace()  # trace readers get their end of file, not ENOTCONN
            scope.cancel()
            return


def mount(
    mountpoint: str,
    options: MountOptions,
    foreground: bool,
    private_for: "int | None" = None,
    namespace: "str | None" = None,
) -> None:
    """Mount and serve until unmounted; private_for: in a mount namespace of our own, for that
    process; namespace: in that mount namespace (mount -N)."""
    if private_for:
        try:
            enter_private_mount_namespace(private_for)
        except OSError as error:
            raise UsageError(f"no mount namespace of our own: {error.strerror}") from None
    support = HugePageSupport.probe()
    if namespace:  # late: every module is loaded by now, and none is read from NS's files
        try:
            enter_mount_namespace(namespace)
        except OSError as error:
            raise UsageError(f"--mount-namespace={namespace}: {error.strerror}") from None
    check_machine(mountpoint, options, support)
    allow_one_fd_per_file()
    operations = GmemOperations(options, mountpoint, support)
    if not (hasattr(pyfuse3.Operations, "fallocate") and hasattr(pyfuse3.RequestContext, "interrupted")):
        raise UsageError("this pyfuse3 lacks gmemfs's patch series: install the patched build (./bootstrap install)")
    pyfuse3.init(operations, mountpoint, options.fuse_options())
    try:
        if not foreground:
            daemonize()
            setup_logging(options.debug, daemon=True)
        log.info("mounted %s (%s)", mountpoint, options.describe())
        trio.run(serve, operations, mountpoint)
    finally:
        pyfuse3.close(unmount=is_mounted(mountpoint))
        operations.release_all()
        operations.report_suppressed()
        log.info("unmounted %s; every file released", mountpoint)


def main(argv: "list[str] | None" = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "run":
        from .run.command import main as run_main  # the supervisor's modules stay out of the daemon

        return run_main(argv[1:])
    if argv and argv[0] in COMMANDS:
        return run_command(argv[0], argv[1:])
    args = parse_args(argv)
    if len(args.paths) > 2:
        print("gmemfs: expected [SOURCE] MOUNTPOINT", file=sys.stderr)
        return 2
    foreground = args.foreground or args.debug
    setup_logging(args.debug, daemon=False)
    try:
        options = parse_mount_options(args.options)
        options.debug = options.debug or args.debug
        mount(os.path.abspath(args.paths[-1]), options, foreground, args.private_for, args.mount_namespace)
    except (OptionError, UsageError) as error:
        print(f"gmemfs: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
