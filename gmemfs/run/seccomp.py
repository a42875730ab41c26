"""Seccomp user notification: the kernel asks us before a program's chosen ioctls run.

The filter traps only ioctl(2) calls whose request number is in a short list;
every other syscall runs natively (the filter costs it a few BPF instructions).
A trapped call waits until the supervisor answers: a result, an errno, an fd
installed (ADDFD) and returned as the result, or "continue" into the kernel.
Numbers from linux/seccomp.h, linux/filter.h and linux/audit.h (x86-64).
"""

import contextlib
import ctypes
import errno
import fcntl
import os
import select
import signal
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from ..base.libc import check, libc

SYS_MMAP = 9
SYS_IOCTL = 16
MAP_TYPE = 0x0F
MAP_PRIVATE = 0x02
MAP_ANONYMOUS = 0x20
SYS_SECCOMP = 317
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 1 << 5  # Linux 5.19
AUDIT_ARCH_X86_64 = 0xC000003E

SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_USER_NOTIF = 0x7FC00000
SECCOMP_RET_KILL_PROCESS = 0x80000000

# struct seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6]
_DATA_NR, _DATA_ARCH, _DATA_ARG1_LOW = 0, 4, 16 + 8  # args[1] low 32 bits (little-endian)
_DATA_ARG3_LOW, _DATA_ARG4_LOW = 16 + 3 * 8, 16 + 4 * 8  # mmap's flags and fd

BPF_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
BPF_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
BPF_AND_K = 0x54  # BPF_ALU | BPF_AND | BPF_K
BPF_RET_K = 0x06  # BPF_RET | BPF_K

SECCOMP_IOCTL_NOTIF_RECV = 0xC0502100
SECCOMP_IOCTL_NOTIF_SEND = 0xC0182101
SECCOMP_IOCTL_NOTIF_ID_VALID = 0x40082102
SECCOMP_IOCTL_NOTIF_ADDFD = 0x40182103
SECCOMP_IOCTL_NOTIF_SET_FLAGS = 0x40082104
SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP = 1
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1
SECCOMP_ADDFD_FLAG_SEND = 1 << 1

_NOTIF = struct.Struct("=QII iIQ6Q")  # id, pid, flags, then seccomp_data: 80 bytes
_RESP = struct.Struct("=QqiI")  # id, val, error, flags: 24 bytes
_ADDFD = struct.Struct("=QIIII")  # id, flags, srcfd, newfd, newfd_flags: 24 bytes


def _instruction(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


_DATA_ARG3_HIGH = _DATA_ARG3_LOW + 4


def ioctl_filter(requests: Iterable[int], cookie: int) -> bytes:
    """A classic BPF program: USER_NOTIF for ioctl(2) with one of `requests` and for
    mmap(2) of a file with MAP_PRIVATE, ALLOW for all else.

    The kernel's ioctl `cmd` is an unsigned int, so only the low 32 bits of the
    argument are compared. Another architecture (a 32-bit syscall) is killed:
    its numbers differ and would slip through. An ioctl whose fourth argument (which
    ioctl ignores) is `cookie` is the supervisor's own, run in the program's thread
    (injection.py): it is let through. A private file mapping is trapped because BPF
    cannot tell a gmemfs fd from another (guest_memfd refuses MAP_PRIVATE, FUSE cannot);
    anonymous ones and fd -1 are not.
    """
    if not cookie & 0xFFFFFFFF or not cookie >> 32:
        raise ValueError("the cookie needs both halves nonzero: an ioctl with 0 there is common")
    requests = sorted({request & 0xFFFFFFFF for request in requests})
    program = [
        (BPF_LD_W_ABS, _DATA_ARCH),
        (BPF_JEQ_K, AUDIT_ARCH_X86_64, None, "kill"),
        (BPF_LD_W_ABS, _DATA_NR),
        (BPF_JEQ_K, SYS_IOCTL, "ioctl", None),
        (BPF_JEQ_K, SYS_MMAP, None, "allow"),
        (BPF_LD_W_ABS, _DATA_ARG3_LOW),
        (BPF_AND_K, MAP_TYPE | MAP_ANONYMOUS),
        (BPF_JEQ_K, MAP_PRIVATE, None, "allow"),
        (BPF_LD_W_ABS, _DATA_ARG4_LOW),
        (BPF_JEQ_K, 0xFFFFFFFF, "allow", "notify"),  # fd -1: the kernel's EBADF
        "ioctl",
        (BPF_LD_W_ABS, _DATA_ARG3_LOW),
        (BPF_JEQ_K, cookie & 0xFFFFFFFF, None, "request"),
        (BPF_LD_W_ABS, _DATA_ARG3_HIGH),
        (BPF_JEQ_K, cookie >> 32, "allow", None),  # the supervisor's own
        "request",
        (BPF_LD_W_ABS, _DATA_ARG1_LOW),
        *((BPF_JEQ_K, request, "notify", None) for request in requests),
        "allow",
        (BPF_RET_K, SECCOMP_RET_ALLOW),
        "notify",
        (BPF_RET_K, SECCOMP_RET_USER_NOTIF),
        "kill",
        (BPF_RET_K, SECCOMP_RET_KILL_PROCESS),
    ]
    return _assemble(program)


def _assemble(program: list) -> bytes:
    """Classic BPF from (code, k[, jump if true, jump if false]) steps and label strings;
    a jump names a label, or None for the next instruction."""
    labels, position = {}, 0
    for step in program:
        if isinstance(step, str):
            labels[step] = position
        else:
            position += 1
    instructions, position = [], 0
    for step in program:
        if isinstance(step, str):
            continue
        code, k, *jumps = step
        jt, jf = (labels[jump] - position - 1 if jump else 0 for jump in (jumps or (None, None)))
        instructions.append(_instruction(code, k, jt, jf))
        position += 1
    return b"".join(instructions)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install_filter(program: bytes) -> "tuple[int, bool]":
    """Install the filter on this process (inherited by its threads, children and exec); the
    listener fd, and whether its waits are killable only (a Listener needs to know). Sets
    no_new_privs, which seccomp requires of non-root callers.

    WAIT_KILLABLE_RECV: once the supervisor has received a trapped call, only a fatal signal
    takes it away, as from a KVM ioctl, which no signal interrupts. Without it, a signal
    makes the call vanish mid-answer and come back (SA_RESTART) as a new one.
    """
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    buffer = ctypes.create_string_buffer(program)
    fprog = _SockFprog(len(program) // 8, ctypes.addressof(buffer))
    flags = SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
    listener = libc.syscall(SYS_SECCOMP, SECCOMP_SET_MODE_FILTER, flags, ctypes.byref(fprog))
    if listener < 0 and ctypes.get_errno() == errno.EINVAL:  # before 5.19: interruptible to the end
        flags &= ~SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
        listener = libc.syscall(SYS_SECCOMP, SECCOMP_SET_MODE_FILTER, flags, ctypes.byref(fprog))
    check(listener, "seccomp(SET_MODE_FILTER, NEW_LISTENER)")
    return listener, bool(flags & SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV)


@dataclass(frozen=True)
class Notification:
    """One trapped syscall: which thread, and its arguments."""

    id: int
    pid: int  # the thread's id, in the supervisor's pid namespace
    nr: int
    args: tuple[int, ...]

    @property
    def fd(self) -> int:
        return self.args[0] & 0xFFFFFFFF

    @property
    def request(self) -> int:
        return self.args[1] & 0xFFFFFFFF

    @property
    def argument(self) -> int:
        return self.args[2]


ERESTARTNOINTR = 513  # the kernel's "restart this call", never seen by the program


_SigSet = ctypes.c_ulong * (1024 // (8 * ctypes.sizeof(ctypes.c_ulong)))  # glibc's sigset_t
_EVERY_SIGNAL = _SigSet()
libc.sigfillset(_EVERY_SIGNAL)


@contextlib.contextmanager
def _signals_held():
    """Signals to us wait while an ADDFD waits for the trapped thread to take the fd: one that
    interrupted the wait would take the fd back and make the ioctl fail with EINTR, an errno
    the program's call never has (SIGSTOP, which cannot be held, restarts it harmlessly).
    libc's pthread_sigmask, not signal's: that one turns each of 64 signals into an enum, a
    hundred times the cost of the call (190 us against 1.2 us the pair, here)."""
    held = _SigSet()
    libc.pthread_sigmask(signal.SIG_BLOCK, _EVERY_SIGNAL, held)  # fails only for a bad `how`
    try:
        yield
    finally:
        libc.pthread_sigmask(signal.SIG_SETMASK, held, None)


class Listener:
    """The supervisor's end: receive trapped calls and answer each exactly once.

    cookie: the value the program's filter lets through as the supervisor's own ioctls
    (ioctl_filter), which injection.ThreadTakeover passes. killable: whether the filter's waits
    are killable only (install_filter; Linux 5.19+).
    """

    def __init__(self, fd: int, cookie: int = 0, killable: bool = True) -> None:
        self.fd = fd
        self.cookie = cookie
        self.killable = killable

    def fast_wakeups(self) -> None:
        """Wake the trapped thread on the supervisor's CPU (Linux 6.6+): ~18 us instead of ~60 us."""
        try:
            fcntl.ioctl(self.fd, SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)
        except OSError:
            pass

    def state(self) -> str:
        """'pending' (a trapped call waits), 'orphaned' (no process uses the filter any more), or 'idle'."""
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        events = sum(events for _, events in poller.poll(0))
        if events & select.POLLIN:
            return "pending"
        return "orphaned" if events & (select.POLLHUP | select.POLLERR) else "idle"

    def receive(self) -> "Notification | None":
        """The next trapped call; None if it vanished (the thread was killed or interrupted)."""
        buffer = bytearray(_NOTIF.size)  # RECV wants it zeroed
        try:
            fcntl.ioctl(self.fd, SECCOMP_IOCTL_NOTIF_RECV, buffer, True)
        except OSError as error:
            if error.errno in (errno.ENOENT, errno.EINTR):
                return None
            raise
        notification_id, pid, _flags, nr, _arch, _ip, *args = _NOTIF.unpack(buffer)
        return Notification(notification_id, pid, nr, tuple(args))

    def still_waiting(self, notification: Notification) -> bool:
        """Whether the call still waits (its pid has not been reused since we read its memory)."""
        try:
            fcntl.ioctl(self.fd, SECCOMP_IOCTL_NOTIF_ID_VALID, struct.pack("=Q", notification.id))
        except OSError:
            return False
        return True

    def reply(self, notification: Notification, value: int = 0, err: int = 0) -> None:
        """The call returns value, or fails with err."""
        self._send(_RESP.pack(notification.id, value if not err else 0, -err if err else 0, 0))

    def restart(self, notification: Notification) -> None:
        """The call leaves seccomp to be made again (after a ptrace stop: see injection.py).
        OSError (ENOENT) if it is gone: only a fatal signal takes a received call away."""
        fcntl.ioctl(self.fd, SECCOMP_IOCTL_NOTIF_SEND, _RESP.pack(notification.id, 0, -ERESTARTNOINTR, 0))

    def let_kernel_run(self, notification: Notification) -> None:
        """The call goes to the kernel as the program made it (or as we rewrote its memory)."""
        self._send(_RESP.pack(notification.id, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE))

    def add_fd(self, notification: Notification, fd: int, fd_flags: int = os.O_CLOEXEC) -> int:
        """Install a copy of our fd in the trapped program (close-on-exec unless fd_flags say
        otherwise); its number there. The call stays trapped (no SEND)."""
        request = bytearray(_ADDFD.pack(notification.id, 0, fd, 0, fd_flags))
        with _signals_held():
            return fcntl.ioctl(self.fd, SECCOMP_IOCTL_NOTIF_ADDFD, request, True)

    def reply_with_fd(self, notification: Notification, fd: int) -> int:
        """Install a copy of our fd in the program (no close-on-exec) and answer the call with its
        number. Two steps where the wait is killable only: seccomp_notify_addfd() marks a SEND's
        call answered before it waits, so a SEND that a stop signal interrupts (and restarts)
        leaves the program's call returning 0 and ours EINPROGRESS. Where any signal ends the
        wait (before 5.19), one between the steps would restart the call, leaving the first fd
        in the program unknown to it: there ADDFD's SEND does both at once."""
        if self.killable:
            theirs = self.add_fd(notification, fd, fd_flags=0)
            self.reply(notification, value=theirs)
            return theirs
        request = bytearray(_ADDFD.pack(notification.id, SECCOMP_ADDFD_FLAG_SEND, fd, 0, 0))
        with _signals_held():
            return fcntl.ioctl(self.fd, SECCOMP_IOCTL_NOTIF_ADDFD, request, True)

    def _send(self, response: bytes) -> None:
        try:
            fcntl.ioctl(self.fd, SECCOMP_IOCTL_NOTIF_SEND, response)
        except OSError as error:
            if error.errno != errno.ENOENT:  # the thread is gone: nobody to answer
                raise

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
