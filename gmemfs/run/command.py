"""gmemfs run: an unchanged program (a VMM, a selftest) gets gmemfs memory from KVM's own ioctls.

    gmemfs run [-o OPTIONS] [--mount DIR] [--trace[=FILE]] [--trace-format=json] -- PROGRAM [ARGS...]

Like fakeroot or umockdev-run: PROGRAM runs with a seccomp filter that sends its
guest_memfd ioctls here (supervisor.py), and everything else to the kernel. Without
--mount, a gmemfs daemon serves the run from a mount namespace of its own
(private_mount.py), so its mount is seen by no one else and ends with it.
The run lasts as long as any process of PROGRAM: a daemonizing VMM (qemu -daemonize) leaves
its first process early and goes on in a child. We are the subreaper of PROGRAM's processes,
so orphans stay ours (reaped here, their fds in view of the supervisor).
PROGRAM's stdin, stdout and stderr are its own; the exit status of its first process becomes
ours (a death by signal is passed on as the same signal); SIGTERM, SIGHUP, SIGUSR1,
SIGUSR2 and SIGALRM sent to us are passed to it (once it is gone, to the processes it left).
Terminal signals (SIGINT, SIGQUIT) reach it from the terminal directly, so we ignore them,
as system(3) does.
--trace prints one line per guest_memfd event of the program (tracing.py): its trapped calls
and what its daemon did for them, in one order of time.
"""

import argparse
import contextlib
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from functools import partial

import trio

from ..base.libc import check, libc
from ..base.processes import children
from ..daemon.options import OptionError, parse_mount_options
from ..daemon.process import DaemonError, DaemonProcess
from ..kernel.uapi import ABI_PROFILES, XATTR_ABI
from .exec_trapped import TERMINAL_SIGNALS
from .private_mount import may_make_private_mounts, path_in, private_mountpoint, root_is_a_mount_point
from .seccomp import Listener
from .supervisor import GuestMemfdSupervisor
from .tracing import RunTrace, open_output

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM)
PR_SET_CHILD_SUBREAPER = 36
REAP_INTERVAL = 0.25  # seconds between looks for ended children of PROGRAM's
STREAM_END_TIMEOUT = 5.0  # seconds --trace waits for a stopped daemon's last events


class RunError(Exception):
    """Printed as one line; exit status 125 (the run itself failed, as env(1) and chroot(1) say)."""


RUN_FAILED = 125
NOT_A_MOUNT_POINT = (
    "/ is not a mount point (a chroot?), so the private mount cannot be kept from other mount namespaces: "
    "make the root a mount first (mount --bind DIR DIR; chroot DIR) or serve the run from a mount (--mount DIR)"
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="gmemfs run",
        usage="%(prog)s [-o OPT[=VAL],...] [--mount DIR] [--trace[=FILE]] [--trace-format=json] -- PROGRAM [ARGS...]",
        description="Run PROGRAM with KVM_CREATE_GUEST_MEMFD answered by gmemfs files "
        "(and the guest_memfd capabilities, memslot binding and, under abi=rfc-v1, "
        "KVM_SET_MEMORY_ATTRIBUTES conversions of the chosen ABI profile).",
        epilog="Without --mount, a private gmemfs mount serves the run and ends with it.",
    )
    parser.add_argument("-o", dest="options", action="append", default=[], metavar="OPT[=VAL],...")
    parser.add_argument("--mount", metavar="DIR", help="use this gmemfs mount (its own ABI profile)")
    parser.add_argument(
        "--trace",
        nargs="?",
        const="-",
        metavar="FILE",
        help="one line per guest_memfd event of the program: the ioctls decoded, what the daemon did, every "
        "refusal with its rule and the series' function (to FILE, or standard error)",
    )
    parser.add_argument("--trace-format", choices=("text", "json"), default="text", help="json: one object a line")
    parser.add_argument("program", nargs=argparse.REMAINDER, metavar="-- PROGRAM [ARGS...]")
    args = parser.parse_args(argv)
    if args.program[:1] == ["--"]:
        args.program = args.program[1:]
    if not args.program:
        parser.error("PROGRAM is missing (gmemfs run [-o OPTIONS] -- PROGRAM [ARGS...])")
    return args


class PrivateDaemon(DaemonProcess):
    """A gmemfs daemon in its own mount namespace, mounted on the directory of private mounts."""

    def __init__(self, option_strings: list[str]) -> None:
        if not may_make_private_mounts():
            raise RunError("a private mount needs root (CAP_SYS_ADMIN): run as root, or use --mount DIR")
        try:
            mountpoint = private_mountpoint()
        except OSError as error:
            raise RunError(f"no directory for the private mount: {error}") from None
        options = [item for option in option_strings for item in ("-o", option)]
        command = [sys.executable, "-m", "gmemfs", "-f", "--private-for", str(os.getpid()), *options, mountpoint]
        try:
            super().__init__(command, mountpoint, private=True, stdin=subprocess.DEVNULL, start_new_session=True)
        except DaemonError as error:  # its last line says why (a usage error is its only one)
            lines = error.output.strip().splitlines() or ["no output"]
            raise RunError(f"the gmemfs daemon did not mount: {lines[-1]}") from None

    @property
    def path(self) -> str:
        """The mount as seen from here: through the daemon's root, in its namespace."""
        return path_in(self.pid, str(self.mountpoint))

    def stop(self) -> None:
        """SIGTERM unmounts and releases every file; afterwards nothing is reserved."""
        super().stop()
        self.log.close()


def mount_profile(path: str):
    try:
        name = os.getxattr(path, XATTR_ABI).decode()
    except OSError:
        raise RunError(f"{path} is not a gmemfs mount") from None
    return ABI_PROFILES[name]


def start_program(program: list[str], abi: str, **popen_options) -> tuple[subprocess.Popen, Listener]:
    """PROGRAM, trapped from its first instruction; the listener its filter reports to."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    cookie = secrets.randbits(64) | 1 << 63 | 1  # both halves nonzero: no ioctl passes it by chance
    command = [sys.executable, "-m", "gmemfs.run.exec_trapped", str(theirs.fileno()), abi, str(cookie), *program]
    with ours, theirs:
        process = subprocess.Popen(command, pass_fds=(theirs.fileno(),), **popen_options)
        theirs.close()
        waits, fds, _, _ = socket.recv_fds(ours, 64, 1)
    if not fds:
        process.wait()
        raise RunError("the seccomp filter could not be installed (is gmemfs run inside another supervisor?)")
    return process, Listener(fds[0], cookie, killable=waits == b"killable")


class ProgramProcesses:
    """PROGRAM's first process and, when we are their subreaper, the orphans it left us: the
    children we reap (every child but those in `others`, such as the private daemon)."""

    def __init__(self, first: int, *, orphans: bool = False, others: "tuple[int, ...]" = ()) -> None:
        self.first = first
        self.orphans = orphans
        self.others = others
        self.first_status: int | None = None

    def ours(self) -> "list[int]":
        if not self.orphans:
            return [] if self.first_status is not None else [self.first]
        return [pid for pid in children(os.getpid()) if pid not in self.others]

    def reap(self, *, wait: bool = False) -> None:
        """Collect the children of PROGRAM's that have ended (wait: for all of them to end)."""
        for pid in self.ours():
            try:
                done, status = os.waitpid(pid, 0 if wait else os.WNOHANG)
            except ChildProcessError:
                continue
            if done and pid == self.first:
                self.first_status = status

    def signal_targets(self) -> "list[int]":
        """PROGRAM's first process while it lives, then what it left behind."""
        return [self.first] if self.first_status is None else self.ours()


async def supervise(
    process: subprocess.Popen,
    supervisor: GuestMemfdSupervisor,
    *,
    orphans: bool = False,
    others=(),
    trace: "Tracing | None" = None,
) -> int:
    """Answer trapped calls, pass signals on and reap until no process of PROGRAM uses the filter
    any more (its listener's POLLHUP); the wait status of PROGRAM's first process.

    orphans: we are the subreaper of PROGRAM's processes (main() is), so we reap every child of
    ours but `others`. trace: the run's trace and the daemon's stream, printed as they come."""
    program = ProgramProcesses(process.pid, orphans=orphans, others=tuple(others))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_reap, program)
        nursery.start_soon(_forward_signals, program)
        if trace:
            nursery.start_soon(trace.run.follow, trace.daemon_stream)
            nursery.start_soon(trace.run.print_as_they_age)
        await supervisor.serve()
        if trace:
            await trace.wind_down(supervisor)
        nursery.cancel_scope.cancel()
    program.reap(wait=True)  # each has let go of the filter on its way out: their ends are near
    return program.first_status


@dataclass
class Tracing:
    """--trace: the run's events and the daemon's trace file, opened before PROGRAM starts."""

    run: RunTrace
    daemon_stream: int
    daemon: "PrivateDaemon | None" = None

    async def wind_down(self, supervisor: GuestMemfdSupervisor) -> None:
        """The files the program left are released now, so that their eviction is in the trace;
        a private daemon is stopped here and its stream followed to its end."""
        supervisor.close()
        await trio.sleep(self.run.merger.hold)  # FUSE sends RELEASE after close() has returned
        if self.daemon is None:
            await trio.sleep(self.run.merger.hold)
            return
        await trio.to_thread.run_sync(self.daemon.stop)
        with trio.move_on_after(STREAM_END_TIMEOUT):
            await self.run.ended.wait()

    @classmethod
    def start(cls, args: argparse.Namespace, mount_path: str, daemon: "PrivateDaemon | None") -> "Tracing":
        try:
            output = open_output(args.trace)
        except OSError as error:
            raise RunError(f"--trace={args.trace}: {error.strerror}") from None
        run = RunTrace(output, json_lines=args.trace_format == "json")
        if daemon is None:  # a mount that others may use too
            run.files = set()
        try:
            return cls(run, run.open_daemon_stream(mount_path), daemon)
        except OSError as error:
            if output is not sys.stderr:
                output.close()
            raise RunError(f"the daemon's trace cannot be read: {error.strerror} (an older gmemfs?)") from None

    def close(self) -> None:
        self.run.finish()
        with contextlib.suppress(OSError):  # a daemon that is gone: ENOTCONN
            os.close(self.daemon_stream)
        if self.run.output is not sys.stderr:
            with contextlib.suppress(OSError):  # what a failed output still held is the trace's loss
                self.run.output.close()


async def _reap(program: ProgramProcesses) -> None:
    """Reap every little while, not on SIGCHLD: a signal handler of ours would interrupt the
    calls we make for the program (an ADDFD waiting for it), and each ptrace stop of a thread
    we take over sends one. Only kernels that release a filter at reaping (not at exit) wait
    for it before the listener reports POLLHUP."""
    while True:
        program.reap()
        await trio.sleep(REAP_INTERVAL)


async def _forward_signals(program: ProgramProcesses) -> None:
    with trio.open_signal_receiver(*FORWARDED_SIGNALS) as signals:
        held = signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)  # since before PROGRAM started
        try:
            async for signum in signals:
                for pid in program.signal_targets():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signum)
        finally:  # held back again before trio gives back their default (death): the run ends as PROGRAM did
            signal.pthread_sigmask(signal.SIG_SETMASK, held)


def exit_like(status: int) -> int:
    """Leave as PROGRAM left: its exit code, or death by its signal (no core dump of ours)."""
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if signum not in (signal.SIGKILL, signal.SIGSTOP):  # those two cannot be caught anyway
            signal.signal(signum, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
        os.kill(os.getpid(), signum)
        return 128 + signum
    return os.waitstatus_to_exitcode(status)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        options = parse_mount_options(args.options)
    except OptionError as error:
        print(f"gmemfs run: {error}", file=sys.stderr)
        return RUN_FAILED
    daemon = None
    try:
        if args.mount:
            if args.options:
                raise RunError("-o applies to the private mount: with --mount, the mount's own options hold")
            path, profile = os.path.abspath(args.mount), mount_profile(args.mount)
        else:
            if not root_is_a_mount_point():
                raise RunError(NOT_A_MOUNT_POINT)
            daemon = PrivateDaemon(args.options)
            path, profile = daemon.path, options.abi
        # From here on a signal must not kill us before PROGRAM can get it: held back until
        # the trio loop forwards it (exec_trapped gives PROGRAM a clean signal state).
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
        for signum in TERMINAL_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        check(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "prctl(PR_SET_CHILD_SUBREAPER)")
        trace = Tracing.start(args, path, daemon) if args.trace else None
        process, listener = start_program(args.program, profile.name)
        others = (daemon.pid,) if daemon else ()
        supervisor = GuestMemfdSupervisor(listener, path, profile, others)
        if trace:
            supervisor.trace, supervisor.traced_files = trace.run.emit, trace.run.files
        try:
            status = trio.run(partial(supervise, process, supervisor, orphans=True, others=others, trace=trace))
        finally:
            listener.close()
            supervisor.close()
            if trace:
                trace.close()
    except RunError as error:
        print(f"gmemfs run: {error}", file=sys.stderr)
        return RUN_FAILED
    finally:
        if daemon:
            daemon.stop()
    return exit_like(status)
