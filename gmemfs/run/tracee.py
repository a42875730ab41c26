"""What a supervisor reads of a trapped process: its memory, its fds, and copies of them.

Through /proc, process_vm_readv/writev (the program's own access rules) and pidfds, as root
or as the program's parent (ptrace access).
Every answer may be stale the moment it is read: the caller checks that the
trapped call is still waiting before acting on it.
"""

import ctypes
import errno
import os
from collections.abc import Collection
from dataclasses import dataclass

from ..base.libc import check, libc
from ..base.processes import children

SYS_KCMP = 312
SYS_PIDFD_OPEN = 434
SYS_PIDFD_GETFD = 438
KCMP_FILE = 0
KCMP_VM = 1
VM_FD = "anon_inode:kvm-vm"  # what /proc/PID/fd shows of a KVM VM fd


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("length", ctypes.c_size_t)]


libc.process_vm_readv.restype = ctypes.c_ssize_t
libc.process_vm_writev.restype = ctypes.c_ssize_t


def _process_vm(call, pid: int, address: int, buffer) -> int:
    local = _IoVec(ctypes.cast(buffer, ctypes.c_void_p), len(buffer))
    remote = _IoVec(address, len(buffer))
    done = call(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    if done < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{len(buffer)} bytes at {address:#x} of process {pid}: {os.strerror(err)}")
    return done


def read_memory(pid: int, address: int, size: int) -> bytes:
    """size bytes of pid's memory, with the kernel's own access rules (copy_from_user: EFAULT where
    the program could not read them, PROT_NONE included). Not /proc/PID/mem, which ignores them."""
    buffer = ctypes.create_string_buffer(size)
    if address + size >= 1 << 64 or _process_vm(libc.process_vm_readv, pid, address, buffer) != size:
        raise OSError(errno.EFAULT, f"{size} bytes at {address:#x} of process {pid} are not readable")
    return buffer.raw


def write_memory(pid: int, address: int, data: bytes) -> None:
    """Write pid's memory where the program itself could (EFAULT in read-only memory)."""
    buffer = ctypes.create_string_buffer(data, len(data))
    if _process_vm(libc.process_vm_writev, pid, address, buffer) != len(data):
        raise OSError(errno.EFAULT, f"{len(data)} bytes at {address:#x} of process {pid} are not writable")


def fd_target(pid: int, fd: int) -> "str | None":
    """What /proc/PID/fd/FD points to ('anon_inode:kvm-vm', '/dev/kvm', a path); None if not open."""
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return None


def fd_stat(pid: int, fd: int) -> "os.stat_result | None":
    try:
        return os.stat(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return None


def thread_group(tid: int) -> int:
    """The process a thread belongs to (pidfd_open wants a process)."""
    with open(f"/proc/{tid}/status") as status:
        for line in status:
            if line.startswith("Tgid:"):
                return int(line.split()[1])
    raise OSError(errno.ESRCH, f"thread {tid} is gone")


def descendants(pid: int, leaving_out: "Collection[int]" = ()) -> "set[int]":
    """pid's children, theirs and so on (not pid itself), without those in leaving_out and theirs."""
    found: set[int] = set()
    pending = children(pid)
    while pending:
        child = pending.pop()
        if child not in leaving_out and child not in found:
            found.add(child)
            pending.extend(children(child))
    return found


def copy_fd(tid: int, fd: int) -> int:
    """Our own fd for the open file behind a thread's fd (pidfd_getfd: close-on-exec, same file)."""
    pidfd = check(libc.syscall(SYS_PIDFD_OPEN, thread_group(tid), 0), "pidfd_open")
    try:
        return check(libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0), "pidfd_getfd")
    finally:
        os.close(pidfd)


def same_file(our_fd: int, pid: int, fd: int) -> bool:
    """Whether pid's fd is the very open file behind our_fd (kcmp KCMP_FILE)."""
    result = libc.syscall(SYS_KCMP, os.getpid(), pid, KCMP_FILE, our_fd, fd)
    return result == 0


def same_mm(pid: int, other: int) -> bool:
    """Whether two threads share one address space (kcmp KCMP_VM): KVM's test for a VM's owner."""
    return libc.syscall(SYS_KCMP, pid, other, KCMP_VM, 0, 0) == 0


def start_time(pid: int) -> "int | None":
    """When the process started (clock ticks since boot; None if it is gone): a reused pid has another."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return int(stat.read().rsplit(b")", 1)[1].split()[19])  # field 22, counted after the comm
    except (FileNotFoundError, ProcessLookupError):
        return None


@dataclass(frozen=True)
class KnownProcess:
    """A process as we met it: its pid and its start time, which a later owner of the pid lacks."""

    pid: int
    started: int

    @classmethod
    def of_thread(cls, tid: int) -> "KnownProcess":
        pid = thread_group(tid)
        started = start_time(pid)
        if started is None:
            raise OSError(errno.ESRCH, f"process {pid} is gone")
        return cls(pid, started)

    def alive(self) -> bool:
        return start_time(self.pid) == self.started


def mount_and_inode(pid: int, fd: int) -> "tuple[int, int] | None":
    """(mount id, inode number) of an open file, from /proc/PID/fdinfo: no stat, so no FUSE request."""
    mount = ino = None
    try:
        with open(f"/proc/{pid}/fdinfo/{fd}", "rb") as fdinfo:
            for line in fdinfo:
                if line.startswith(b"mnt_id:"):
                    mount = int(line.split()[1])
                elif line.startswith(b"ino:"):
                    ino = int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None if mount is None or ino is None else (mount, ino)


@dataclass
class HeldFiles:
    """What some processes hold of KVM and of one mount, at one moment."""

    vm_fds: "list[tuple[int, int]]"  # (pid, fd) of every KVM VM fd
    inodes: "set[int]"  # inodes of the mount that an fd or a mapping holds


def held_files(pids: "Collection[int]", mount: int, device: int, wanted: "Collection[int]" = ()) -> HeldFiles:
    """The VM fds of pids, and the inodes of `mount` (its mount id; st_dev `device`) they hold open
    or mapped. Mappings are read only while some inode in `wanted` is not found open."""
    held = HeldFiles([], set())
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except (FileNotFoundError, ProcessLookupError):
            continue
        for name in fds:
            target = fd_target(pid, int(name))
            if target == VM_FD:
                held.vm_fds.append((pid, int(name)))
            elif target and target.startswith("/") and (found := mount_and_inode(pid, int(name))):
                if found[0] == mount:
                    held.inodes.add(found[1])
    if set(wanted) - held.inodes:
        dev = f"{os.major(device):02x}:{os.minor(device):02x}".encode()
        for pid in pids:
            try:
                with open(f"/proc/{pid}/maps", "rb") as maps:
                    held.inodes.update(int(fields[4]) for fields in map(bytes.split, maps) if fields[3] == dev)
            except (FileNotFoundError, ProcessLookupError):
                continue
    return held


def mapped_file_offset(pid: int, address: int, file: os.stat_result) -> "int | None":
    """The offset in `file` that address maps in pid (None: not a mapping of that file)."""
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            fields = line.split()
            start, end = (int(value, 16) for value in fields[0].split("-"))
            if start <= address < end:
                major, minor = (int(value, 16) for value in fields[3].split(":"))
                if os.makedev(major, minor) != file.st_dev or int(fields[4]) != file.st_ino:
                    return None
                return int(fields[2], 16) + address - start
    return None
