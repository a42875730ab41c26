"""Run system calls in a trapped thread of the program, as if the program had made them.

KVM ties a VM to the mm of the process that created it: VM ioctls from any other process fail
with EIO. So what `gmemfs run` must ask of KVM for the program (a VM of another type than the
one it asked for, memslots laid out differently from its own) has to be asked by the program's
own thread. The trapped thread is taken over with ptrace while seccomp holds it:

1. PTRACE_SEIZE and PTRACE_INTERRUPT the thread, then answer its trapped call with
   -ERESTARTNOINTR: the call leaves seccomp and the thread stops for us before it returns.
2. For each call of ours: registers set to the call, the `syscall` instruction it came in by
   executed once (PTRACE_SINGLESTEP), the result read back. Our ioctls carry a cookie in an
   argument ioctl ignores, which the program's filter lets through (seccomp.ioctl_filter).
3. The registers put back with the trapped call's result in rax and no restart, then
   PTRACE_DETACH (with any signal that arrived meanwhile): the program sees its call return.

About 0.1-0.3 ms. A program that is already traced (gdb, strace) cannot be taken over (EPERM).
"""

import ctypes
import errno
import os
import signal

from ..base.libc import libc
from .tracee import read_memory, write_memory

PTRACE_CONT = 7
PTRACE_SINGLESTEP = 9
PTRACE_GETREGS = 12
PTRACE_SETREGS = 13
PTRACE_DETACH = 17
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_EVENT_STOP = 128
WALL = 0x40000000
ERESTARTNOINTR = 513

SYS_MMAP = 9
SYS_MUNMAP = 11
SYS_IOCTL = 16
SYS_MADVISE = 28
SYS_CLOSE = 3
PROT_READ_WRITE = 0x3
MAP_SHARED = 0x01
MAP_PRIVATE_ANONYMOUS = 0x02 | 0x20
MAP_FIXED = 0x10
SCRATCH_SIZE = 4096

libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]


class Registers(ctypes.Structure):
    """struct user_regs_struct (x86-64)."""

    _fields_ = [
        (name, ctypes.c_ulonglong)
        for name in (
            "r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax rip cs eflags rsp ss "
            "fs_base gs_base ds es fs gs"
        ).split()
    ]


ARGUMENT_REGISTERS = ("rdi", "rsi", "rdx", "r10", "r8", "r9")
U64 = (1 << 64) - 1


def _ptrace(request: int, tid: int, address: int = 0, data: int = 0) -> None:
    if libc.ptrace(request, tid, ctypes.c_void_p(address), ctypes.c_void_p(data)) < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"ptrace({request:#x}) of thread {tid}: {os.strerror(err)}")


SYSCALL_INSTRUCTION = b"\x0f\x05"
SYS_TGKILL = 234


class ThreadTakeover:
    """A trapped thread under our control until finish(): see the module's docstring."""

    def __init__(self, tid: int, tgid: int, cookie: int) -> None:
        self.tid = tid
        self.tgid = tgid
        self.cookie = cookie
        self.signals: list[int] = []  # arrived while we held the thread: delivered when we let go
        self.saved = Registers()
        self.scratch = 0
        self.attached = False
        self.held = False  # stopped for us: registers read, nothing of ours run yet or done

    def seize(self) -> None:
        """Before the trapped call is answered: attach and ask for a stop."""
        try:
            _ptrace(PTRACE_SEIZE, self.tid)
        except OSError as error:
            if error.errno == errno.EPERM:
                raise OSError(
                    errno.EPERM, "the program is traced already (gdb, strace?): gmemfs run cannot take its thread over"
                ) from None
            raise
        self.attached = True
        _ptrace(PTRACE_INTERRUPT, self.tid)

    def stopped(self) -> None:
        """After answering the trapped call with -ERESTARTNOINTR: wait for the thread's stop."""
        _, status = os.waitpid(self.tid, WALL)
        if not os.WIFSTOPPED(status):
            self.attached = False
            raise OSError(errno.ESRCH, f"thread {self.tid} ended while gmemfs run held it")
        self.held = True
        _ptrace(PTRACE_GETREGS, self.tid, 0, ctypes.addressof(self.saved))
        if read_memory(self.tgid, self.saved.rip - 2, 2) != SYSCALL_INSTRUCTION:
            raise OSError(errno.ENOSYS, "the trapped call did not come in by a syscall instruction")

    def syscall(self, number: int, *args: int) -> int:
        """Run one system call in the thread; its result (a negative errno on failure)."""
        regs = Registers.from_buffer_copy(self.saved)
        regs.rip = self.saved.rip - 2
        regs.rax, regs.orig_rax = number, U64  # orig_rax -1: no restart of the trapped call meanwhile
        for name, value in zip(ARGUMENT_REGISTERS, args):
            setattr(regs, name, value & U64)
        _ptrace(PTRACE_SETREGS, self.tid, 0, ctypes.addressof(regs))
        _ptrace(PTRACE_SINGLESTEP, self.tid)
        while True:  # until the step over the syscall instruction traps
            _, status = os.waitpid(self.tid, WALL)
            if not os.WIFSTOPPED(status):
                self.attached = False
                raise OSError(errno.ESRCH, f"thread {self.tid} ended while gmemfs run held it")
            if os.WSTOPSIG(status) == signal.SIGTRAP and status >> 16 == 0:
                break
            if status >> 16 == 0:  # a signal for the program: it gets it when we let go
                self._hold_back(os.WSTOPSIG(status))
            _ptrace(PTRACE_SINGLESTEP, self.tid)
        _ptrace(PTRACE_GETREGS, self.tid, 0, ctypes.addressof(regs))
        result = regs.rax
        return result - (1 << 64) if result >= 1 << 63 else result

    def _hold_back(self, signum: int) -> None:
        """A standard signal is pending once however often it came, as it would have been natively."""
        if signum >= signal.SIGRTMIN or signum not in self.signals:
            self.signals.append(signum)

    def ioctl(self, fd: int, request: int, argument: int) -> int:
        """An ioctl the program's filter lets through (the cookie rides in the unused fourth argument)."""
        return self.syscall(SYS_IOCTL, fd, request, argument, self.cookie)

    def ioctl_with(self, fd: int, request: int, data: bytes) -> int:
        """An ioctl whose argument is a struct, written to a scratch page of ours in the program:
        the program's own memory is never written."""
        if not self.scratch:
            address = self.syscall(SYS_MMAP, 0, SCRATCH_SIZE, PROT_READ_WRITE, MAP_PRIVATE_ANONYMOUS, U64, 0)
            if address < 0:
                raise OSError(-address, "mmap of a scratch page in the program")
            self.scratch = address
        write_memory(self.tgid, self.scratch, data)
        return self.ioctl(fd, request, self.scratch)

    def abandon(self) -> None:
        """Let the thread go untouched, after a failure before any call of ours ran in it."""
        if not self.attached:
            return
        self.attached = False
        if not self.held:  # the stop we asked for is still to come, or the thread's end
            _, status = os.waitpid(self.tid, WALL)
            if not os.WIFSTOPPED(status):
                return
        try:
            _ptrace(PTRACE_DETACH, self.tid)
        except OSError:  # killed meanwhile
            pass

    def finish(self, result: int) -> None:
        """Let the thread go: its trapped call returns `result` (a value, or -errno)."""
        if not self.attached:
            return
        self.attached = False
        if self.scratch:
            self.syscall(SYS_MUNMAP, self.scratch, SCRATCH_SIZE)
        regs = Registers.from_buffer_copy(self.saved)
        regs.rax, regs.orig_rax = result & U64, U64
        _ptrace(PTRACE_SETREGS, self.tid, 0, ctypes.addressof(regs))
        first, *others = self.signals or [0]
        _ptrace(PTRACE_DETACH, self.tid, 0, first)
        for signum in others:
            libc.syscall(SYS_TGKILL, self.tgid, self.tid, signum)
