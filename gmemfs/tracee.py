"""What a supervisor reads of a trapped process: its memory, its fds, and copies of them.

Through /proc and pidfds, as root or as the program's parent (ptrace access).
Every answer may be stale the moment it is read: the caller checks that the
trapped call is still waiting before acting on it.
"""

import errno
import os

from .libc import check, libc

SYS_KCMP = 312
SYS_PIDFD_OPEN = 434
SYS_PIDFD_GETFD = 438
KCMP_FILE = 0


def read_memory(pid: int, address: int, size: int) -> bytes:
    """size bytes at address in pid's memory; EFAULT where it is not mapped, as copy_from_user."""
    try:
        fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise OSError(errno.ESRCH, f"process {pid} is gone") from None
    try:
        data = os.pread(fd, size, address)
    except (OSError, OverflowError):
        data = b""
    finally:
        os.close(fd)
    if len(data) != size:
        raise OSError(errno.EFAULT, f"{size} bytes at {address:#x} of process {pid} are not readable")
    return data


def write_memory(pid: int, address: int, data: bytes) -> None:
    fd = os.open(f"/proc/{pid}/mem", os.O_WRONLY | os.O_CLOEXEC)
    try:
        if os.pwrite(fd, data, address) != len(data):
            raise OSError(errno.EFAULT, f"could not write {len(data)} bytes at {address:#x} of process {pid}")
    finally:
        os.close(fd)


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
