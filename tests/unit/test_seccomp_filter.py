"""The seccomp filter of gmemfs run, executed by a tiny classic-BPF interpreter."""

import struct

import pytest

from gmemfs.kernel.uapi import KVM_CHECK_EXTENSION, KVM_CREATE_GUEST_MEMFD, KVM_SET_USER_MEMORY_REGION2
from gmemfs.run.seccomp import (
    AUDIT_ARCH_X86_64,
    SECCOMP_RET_ALLOW,
    SECCOMP_RET_KILL_PROCESS,
    SECCOMP_RET_USER_NOTIF,
    SYS_IOCTL,
    SYS_MMAP,
    ioctl_filter,
)


def run_bpf(program: bytes, nr: int, arch: int = AUDIT_ARCH_X86_64, args=(0,) * 6) -> int:
    """What the kernel would return for this struct seccomp_data (only LD W ABS, JEQ K, AND K, RET K)."""
    data = struct.pack("=iIQ6Q", nr, arch, 0, *args)
    instructions = [struct.unpack_from("=HBBI", program, offset) for offset in range(0, len(program), 8)]
    pc, accumulator = 0, 0
    while True:
        code, jt, jf, k = instructions[pc]
        if code == 0x20:
            accumulator = struct.unpack_from("=I", data, k)[0]
            pc += 1
        elif code == 0x15:
            pc += 1 + (jt if accumulator == k else jf)
        elif code == 0x54:
            accumulator &= k
            pc += 1
        elif code == 0x06:
            return k
        else:
            raise AssertionError(f"unexpected BPF instruction {code:#x}")


TRAPPED = [KVM_CHECK_EXTENSION, KVM_CREATE_GUEST_MEMFD, KVM_SET_USER_MEMORY_REGION2]
COOKIE = 0x8BADF00D_DEADBEEF
FILTER = ioctl_filter(TRAPPED, COOKIE)


@pytest.mark.parametrize("request_number", TRAPPED)
def test_trapped_ioctls_go_to_the_supervisor(request_number):
    assert run_bpf(FILTER, SYS_IOCTL, args=(3, request_number, 0, 0, 0, 0)) == SECCOMP_RET_USER_NOTIF


def test_only_the_low_32_bits_of_the_request_count():
    """The kernel's cmd is an unsigned int: a sign-extended number is the same ioctl."""
    sign_extended = KVM_CREATE_GUEST_MEMFD | 0xFFFFFFFF00000000
    assert run_bpf(FILTER, SYS_IOCTL, args=(3, sign_extended, 0, 0, 0, 0)) == SECCOMP_RET_USER_NOTIF


@pytest.mark.parametrize("request_number", [0xAE80, 0x5401, KVM_CREATE_GUEST_MEMFD + 1])  # KVM_RUN, TCGETS
def test_other_ioctls_run_natively(request_number):
    assert run_bpf(FILTER, SYS_IOCTL, args=(3, request_number, 0, 0, 0, 0)) == SECCOMP_RET_ALLOW


def test_other_syscalls_run_natively_even_with_a_trapped_number_as_argument():
    assert run_bpf(FILTER, 0, args=(3, KVM_CREATE_GUEST_MEMFD, 0, 0, 0, 0)) == SECCOMP_RET_ALLOW  # read(2)


def test_another_architecture_is_killed():
    assert run_bpf(FILTER, SYS_IOCTL, arch=0x40000003) == SECCOMP_RET_KILL_PROCESS  # i386


def test_the_supervisors_own_ioctls_carry_the_cookie_and_run_natively():
    """injection.ThreadTakeover runs KVM ioctls in the program's thread: they must not be trapped."""
    assert run_bpf(FILTER, SYS_IOCTL, args=(3, TRAPPED[0], 0, COOKIE, 0, 0)) == SECCOMP_RET_ALLOW
    assert run_bpf(FILTER, SYS_IOCTL, args=(3, TRAPPED[0], 0, COOKIE & 0xFFFFFFFF, 0, 0)) == SECCOMP_RET_USER_NOTIF
    assert run_bpf(FILTER, SYS_IOCTL, args=(3, TRAPPED[0], 0, COOKIE ^ 1 << 40, 0, 0)) == SECCOMP_RET_USER_NOTIF


def test_a_cookie_with_a_zero_half_is_refused():
    with pytest.raises(ValueError):
        ioctl_filter(TRAPPED, 0xDEADBEEF)


MAP_SHARED, MAP_PRIVATE, MAP_ANONYMOUS, MAP_FIXED = 0x01, 0x02, 0x20, 0x10


@pytest.mark.parametrize(
    "flags, fd, expected",
    [
        (MAP_PRIVATE, 3, SECCOMP_RET_USER_NOTIF),  # maybe a guest_memfd: the supervisor looks
        (MAP_PRIVATE | MAP_FIXED, 3, SECCOMP_RET_USER_NOTIF),
        (MAP_PRIVATE | MAP_ANONYMOUS, 0xFFFFFFFF, SECCOMP_RET_ALLOW),
        (MAP_PRIVATE | MAP_ANONYMOUS, 3, SECCOMP_RET_ALLOW),  # the fd is ignored
        (MAP_PRIVATE, 0xFFFFFFFF, SECCOMP_RET_ALLOW),  # the kernel's EBADF
        (MAP_SHARED, 3, SECCOMP_RET_ALLOW),
        (0x03, 3, SECCOMP_RET_ALLOW),  # MAP_SHARED_VALIDATE
    ],
)
def test_private_file_mappings_go_to_the_supervisor(flags, fd, expected):
    assert run_bpf(FILTER, SYS_MMAP, args=(0, 4096, 3, flags, fd, 0)) == expected
