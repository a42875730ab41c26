"""A KVM client as a VMM writes one: raw ioctls, no gmemfs import for its calls.

Run under `gmemfs run` by the tests: `python kvm_client.py SCENARIO [ARGS]`.
Prints one JSON object: what each call returned, or its errno's name.
"""

import errno
import fcntl
import json
import mmap
import os
import struct
import sys
import time

KVMIO = 0xAE
KVM_CREATE_VM = 0xAE01
KVM_CHECK_EXTENSION = 0xAE03
KVM_GET_VCPU_MMAP_SIZE = 0xAE04
KVM_CREATE_VCPU = 0xAE41
KVM_RUN = 0xAE80
KVM_SET_REGS = 0x4090AE82
KVM_GET_SREGS = 0x8138AE83
KVM_SET_SREGS = 0x4138AE84
KVM_CREATE_GUEST_MEMFD = 0xC040AED4
KVM_SET_USER_MEMORY_REGION2 = 0x40A0AE49
KVM_SET_MEMORY_ATTRIBUTES = 0x4020AED2
KVM_MEM_READONLY = 1 << 1
KVM_MEM_GUEST_MEMFD = 1 << 2
KVM_MEMORY_ATTRIBUTE_PRIVATE = 1 << 3
KVM_EXIT_IO = 2


def result(call, *args):
    """The call's return value, or the name of its errno."""
    try:
        value = call(*args)
    except OSError as error:
        return errno.errorcode[error.errno]
    return "OK" if isinstance(value, bytes) else value


def kvm(device: str = "/dev/kvm") -> int:
    return os.open(device, os.O_RDWR | os.O_CLOEXEC)


KVM_X86_SW_PROTECTED_VM = 1
KVM_GMEM_CONVERT_SHARED = 0xC040AF41
KVM_GMEM_CONVERT_PRIVATE = 0xC040AF42
MADV_DONTNEED = 4


def create_vm(vm_type: int = 0, device: str = "/dev/kvm") -> int:
    system = kvm(device)
    try:
        return fcntl.ioctl(system, KVM_CREATE_VM, vm_type)
    finally:
        os.close(system)


def create_guest_memfd(vm: int, size: int, flags: int = 0, page_order: int = 0) -> int:
    """page_order: the hugetlb series' __u8 at offset 16 (Dec 2025); reserved in mainline."""
    argument = bytearray(struct.pack("=QQBBHI5Q", size, flags, page_order, 0, 0, 0, *[0] * 5))
    return fcntl.ioctl(vm, KVM_CREATE_GUEST_MEMFD, argument, True)


def set_region(vm, slot, flags, gpa, size, uaddr=0, offset=0, gmem=0):
    region = struct.pack("=IIQQQQII14Q", slot, flags, gpa, size, uaddr, offset, gmem, 0, *[0] * 14)
    return fcntl.ioctl(vm, KVM_SET_USER_MEMORY_REGION2, region)


def set_attributes(vm, address, size, attributes, flags=0):
    return fcntl.ioctl(vm, KVM_SET_MEMORY_ATTRIBUTES, struct.pack("=QQQQ", address, size, attributes, flags))


def check_extension(fd, capability):
    return fcntl.ioctl(fd, KVM_CHECK_EXTENSION, capability)


def scenario_caps(capabilities, device="/dev/kvm"):
    """Each capability on /dev/kvm (or another node of it), a type-0 VM and a SW_PROTECTED VM
    (or why that VM is missing)."""
    system, vm = kvm(device), create_vm(0, device)
    private_vm = result(create_vm, KVM_X86_SW_PROTECTED_VM, device)
    answers = {}
    for cap in capabilities:
        answers[str(cap)] = [result(check_extension, system, cap), result(check_extension, vm, cap)]
        on_private = private_vm if isinstance(private_vm, str) else result(check_extension, private_vm, cap)
        answers[str(cap)].append(on_private)
    return answers


def scenario_create(size, flags, page_order=0):
    """One creation: the fd and what fstat and fcntl say of it, or the errno."""
    vm = create_vm()
    fd = result(create_guest_memfd, vm, size, flags, page_order)
    if isinstance(fd, str):
        return {"error": fd}
    status = os.fstat(fd)
    reserved = int(open("/proc/meminfo").read().split("HugePages_Rsvd:")[1].split()[0])
    return {
        "fd": fd,
        "lowest_free_fd": fd == min(set(range(fd + 1)) - {int(n) for n in os.listdir("/proc/self/fd")} | {fd}),
        "cloexec": bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC),
        "size": status.st_size,
        "blksize": status.st_blksize,
        "nlink": status.st_nlink,
        "huge_pages_reserved_meanwhile": reserved,
    }


def scenario_hold(size, flags):
    """Create, say so (with our pid), then wait to be killed."""
    import signal

    created = scenario_create(size, flags)
    print(json.dumps({**created, "pid": os.getpid()}), flush=True)
    while True:
        signal.pause()


def scenario_bind(vm_type=0):
    """The binding rules, case by case, on one VM with two 16 KiB files and one of another VM."""
    vm, other_vm = create_vm(vm_type), create_vm(vm_type)
    gmem = create_guest_memfd(vm, 0x4000)
    gmem2 = create_guest_memfd(vm, 0x4000)
    foreign = create_guest_memfd(other_vm, 0x4000)
    memory = mmap.mmap(-1, 0x10000)
    uaddr = _address(memory)
    G = KVM_MEM_GUEST_MEMFD
    cases = {
        "offset_unaligned": (1, G, 0x100000, 0x1000, uaddr, 0x800, gmem),
        "range_past_size": (1, G, 0x100000, 0x2000, uaddr, 0x3000, gmem),
        "other_vms_file": (1, G, 0x100000, 0x1000, uaddr, 0, foreign),
        "closed_fd": (1, G, 0x100000, 0x1000, uaddr, 0, 999),
        "readonly_guest_memfd": (1, G | KVM_MEM_READONLY, 0x100000, 0x1000, uaddr, 0, gmem),
        "first_binding": (1, G, 0x100000, 0x2000, uaddr, 0, gmem),
        "same_range_again": (2, G, 0x200000, 0x1000, uaddr, 0x1000, gmem),
        "next_range": (2, G, 0x200000, 0x2000, uaddr, 0x2000, gmem),
        "modify_guest_memfd_slot": (1, G, 0x300000, 0x2000, uaddr, 0, gmem),
        "modify_without_flag": (1, 0, 0x300000, 0x2000, uaddr),
        "overlapping_gpa": (3, G, 0x101000, 0x1000, uaddr, 0, gmem2),
        "second_file": (3, G, 0x400000, 0x4000, uaddr, 0, gmem2),
        "delete_first": (1, G, 0x100000, 0, uaddr, 0, gmem),
        "rebind_after_delete": (4, G, 0x500000, 0x2000, uaddr, 0, gmem),
    }
    return {name: result(set_region, vm, *args) for name, args in cases.items()}


def scenario_bind_mapping(shared_flags):
    """RFC v2: a SUPPORT_SHARED file binds only where userspace_addr maps it at guest_memfd_offset."""
    vm = create_vm()
    G = KVM_MEM_GUEST_MEMFD
    shared = create_guest_memfd(vm, 0x8000, shared_flags)
    plain = create_guest_memfd(vm, 0x8000, 0)
    anonymous = mmap.mmap(-1, 0x8000)
    view = mmap.mmap(shared, 0x8000, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    return {
        "anonymous_memory": result(set_region, vm, 1, G, 0x100000, 0x1000, _address(anonymous), 0, shared),
        "its_own_mapping": result(set_region, vm, 2, G, 0x200000, 0x1000, _address(view), 0, shared),
        "mapping_at_another_offset": result(set_region, vm, 3, G, 0x300000, 0x1000, _address(view), 0x2000, shared),
        "mapping_at_its_offset": result(
            set_region, vm, 4, G, 0x400000, 0x1000, _address(view) + 0x2000, 0x2000, shared
        ),
        "no_userspace_addr": result(set_region, vm, 5, G, 0x500000, 0x1000, 0, 0x4000, shared),
        "plain_file_anonymous_memory": result(set_region, vm, 6, G, 0x600000, 0x1000, _address(anonymous), 0, plain),
    }


def scenario_mappings():
    """mmap(2) of guest_memfds of each mainline flag set, shared and private (kvm_gmem_mmap())."""
    vm = create_vm()
    out = {}
    for flags in (0, 1, 3):
        fd = create_guest_memfd(vm, 0x4000, flags)
        for name, kind in (("private", mmap.MAP_PRIVATE), ("shared", mmap.MAP_SHARED)):
            out[f"flags_{flags}_{name}"] = result(lambda: mmap.mmap(fd, 0x1000, kind).close())
        os.close(fd)
    with open(sys.executable, "rb") as program:
        out["another_file_private"] = result(lambda: mmap.mmap(program.fileno(), 0x1000, mmap.MAP_PRIVATE).close())
    return out


def _address(buffer: mmap.mmap) -> int:
    import ctypes

    return ctypes.addressof(ctypes.c_char.from_buffer(buffer))


def scenario_attributes(vm_type=KVM_X86_SW_PROTECTED_VM):
    """RFC v1 conversions: KVM_SET_MEMORY_ATTRIBUTES over gfns bound to the file."""
    vm = create_vm(vm_type)
    gmem = create_guest_memfd(vm, 0x4000)
    memory = mmap.mmap(-1, 0x4000)
    set_region(vm, 0, KVM_MEM_GUEST_MEMFD, 0x10000, 0x4000, _address(memory), 0, gmem)
    shared = lambda: os.getxattr(gmem, "user.gmem.shared").decode()  # noqa: E731
    out = {"initially": shared()}
    out["private_all"] = result(set_attributes, vm, 0x10000, 0x4000, KVM_MEMORY_ATTRIBUTE_PRIVATE)
    out["after_private_all"] = shared()
    out["share_gfns_0x11_0x12"] = result(set_attributes, vm, 0x11000, 0x2000, 0)
    out["after_share"] = shared()
    out["private_gfn_0x12"] = result(set_attributes, vm, 0x12000, 0x1000, KVM_MEMORY_ATTRIBUTE_PRIVATE)
    out["after_private"] = shared()
    out["flags_nonzero"] = result(set_attributes, vm, 0x10000, 0x1000, 0, 1)
    out["unknown_attribute"] = result(set_attributes, vm, 0x10000, 0x1000, 1 << 4)
    out["size_zero"] = result(set_attributes, vm, 0x10000, 0, 0)
    out["unaligned"] = result(set_attributes, vm, 0x10800, 0x1000, 0)
    out["unbound_gfns"] = result(set_attributes, vm, 0x80000, 0x1000, 0)
    return out


# Real-mode code at guest physical 0x1000: mov byte [0x2000], 0x42; mov al, 0x41; out 0x10, al; hlt
GUEST_CODE = bytes.fromhex("c606002042b041e610f4")


def scenario_guest(flags, share_with_attributes, vm_type=0, userspace_addr=True):
    """A minimal guest on gmemfs memory: it writes a byte to bound memory, then exits on port 0x10.
    userspace_addr False: the slot has none (mainline's test_guest_memfd_guest), and the host
    reaches the memory only through a mapping of its own."""
    system, vm = kvm(), create_vm(vm_type)
    size = 0x10000
    gmem = create_guest_memfd(vm, size, flags)
    memory = mmap.mmap(gmem, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    set_region(vm, 0, KVM_MEM_GUEST_MEMFD, 0, size, _address(memory) if userspace_addr else 0, 0, gmem)
    if share_with_attributes:
        set_attributes(vm, 0, size, 0)  # RFC v1: the pages become shared, the host may touch them
    memory[0x1000 : 0x1000 + len(GUEST_CODE)] = GUEST_CODE
    vcpu, run = start_vcpu(system, vm)
    exit_reason, port, out_byte = run_until_exit(vcpu, run)
    try:
        memory.flush()
    except OSError:  # the kernel's own guest_memfd refuses msync
        pass
    return {
        "exit_reason": exit_reason,
        "port": port,
        "out_byte": out_byte,
        "guest_wrote": memory[0x2000],
        "file_allocated": result(lambda: os.getxattr(gmem, "user.gmem.allocated").decode()),
    }


def start_vcpu(system, vm):
    """A vCPU in real mode at guest physical 0x1000."""
    vcpu = fcntl.ioctl(vm, KVM_CREATE_VCPU, 0)
    run = mmap.mmap(
        vcpu, fcntl.ioctl(system, KVM_GET_VCPU_MMAP_SIZE, 0), mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
    )
    sregs = bytearray(312)
    fcntl.ioctl(vcpu, KVM_GET_SREGS, sregs, True)
    sregs[0:8] = bytes(8)  # cs.base
    sregs[12:14] = bytes(2)  # cs.selector
    fcntl.ioctl(vcpu, KVM_SET_SREGS, bytes(sregs))
    regs = [0] * 18
    regs[16], regs[17] = 0x1000, 0x2  # rip, rflags
    fcntl.ioctl(vcpu, KVM_SET_REGS, struct.pack("=18Q", *regs))
    return vcpu, run


def run_until_exit(vcpu, run):
    """KVM_RUN once: (exit reason, port, byte written) of the exit."""
    fcntl.ioctl(vcpu, KVM_RUN, 0)
    exit_reason = struct.unpack_from("=I", run, 8)[0]
    _direction, _io_size, port, _count, data_offset = struct.unpack_from("=BBHIQ", run, 32)
    return exit_reason, port, run[data_offset] if exit_reason == KVM_EXIT_IO else None


def host_touch(memory, offset):
    """What the host sees at offset: the byte, or 'SIGBUS' (in a child, as the series' selftests)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        os.write(write_end, bytes([memory[offset]]))
        os._exit(0)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    data = os.read(read_end, 1)
    os.close(read_end)
    if os.WIFSIGNALED(status):
        return "SIGBUS" if os.WTERMSIG(status) == 7 else f"signal {os.WTERMSIG(status)}"
    return data[0]


def convert(gmem, request, offset, size):
    argument = bytearray(struct.pack("=QQQ5Q", offset, size, 0, *[0] * 5))
    return result(fcntl.ioctl, gmem, request, argument, True)


def madvise(memory, offset, length, advice):
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.madvise(ctypes.c_void_p(_address(memory) + offset), ctypes.c_size_t(length), advice):
        return errno.errorcode[ctypes.get_errno()]
    return "OK"


# Real mode at 0x1000: mov al, [0x2000]; out 0x11, al; mov byte [0x2000], 0x42; mov al, [0x2000]; out 0x10, al; hlt
PRIVATE_GUEST_CODE = bytes.fromhex("a00020e611c606002042a00020e610f4")


def scenario_private_guest(profile, flags, size=0x10000):
    """A guest of a SW_PROTECTED VM writes a page while it is private; the host's own mapping
    faults on it; the page is converted back and the host reads it. RFC v2: KVM_GMEM_CONVERT on
    the file; RFC v1: KVM_SET_MEMORY_ATTRIBUTES on the VM (after MADV_DONTNEED, as its tests do)."""
    system, vm = kvm(), create_vm(KVM_X86_SW_PROTECTED_VM)
    gmem = create_guest_memfd(vm, size, flags)
    memory = mmap.mmap(gmem, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    out = {"bind": result(set_region, vm, 0, KVM_MEM_GUEST_MEMFD, 0, size, _address(memory), 0, gmem)}
    memory[0x1000 : 0x1000 + len(PRIVATE_GUEST_CODE)] = PRIVATE_GUEST_CODE
    memory[0x2000] = 0x11
    if profile == "rfc-v1":
        out["private_while_mapped"] = result(set_attributes, vm, 0x2000, 0x1000, KVM_MEMORY_ATTRIBUTE_PRIVATE)
        out["madvise"] = madvise(memory, 0x2000, 0x1000, MADV_DONTNEED)
        out["to_private"] = result(set_attributes, vm, 0x2000, 0x1000, KVM_MEMORY_ATTRIBUTE_PRIVATE)
    else:
        out["to_private"] = convert(gmem, KVM_GMEM_CONVERT_PRIVATE, 0x2000, 0x1000)
    out["host_while_private"] = host_touch(memory, 0x2000)
    vcpu, run = start_vcpu(system, vm)
    out["guest_read_first"] = run_until_exit(vcpu, run)
    out["guest_read_its_write"] = run_until_exit(vcpu, run)
    out["host_after_guest"] = host_touch(memory, 0x2000)
    if profile == "rfc-v1":
        out["to_shared"] = result(set_attributes, vm, 0x2000, 0x1000, 0)
    else:
        out["to_shared"] = convert(gmem, KVM_GMEM_CONVERT_SHARED, 0x2000, 0x1000)
    out["host_reads"] = memory[0x2000]
    out["code_page"] = memory[0x1000 : 0x1000 + len(PRIVATE_GUEST_CODE)] == PRIVATE_GUEST_CODE
    return out


def scenario_cgroup(cgroup, flags, size, page_size):
    """A hugetlb file's charges in the program's own hugetlb cgroup at each step (RFC v2:
    rsvd for the whole file from creation to release, usage for the pages in use)."""
    name = {2 << 20: "2MB", 1 << 30: "1GB"}[page_size]

    def charges():
        read = lambda kind: int(open(f"{cgroup}/hugetlb.{name}{kind}.current").read())  # noqa: E731
        return [read(".rsvd") // page_size, read("") // page_size]

    vm = create_vm(KVM_X86_SW_PROTECTED_VM)
    gmem = result(create_guest_memfd, vm, size, flags)
    if isinstance(gmem, str):
        return {"create": gmem, "charges": charges()}
    out = {"created": charges()}
    fcntl_fallocate(gmem, 1, 0, page_size)
    out["allocated"] = charges()
    fcntl_fallocate(gmem, 3, 0, page_size)
    out["punched"] = charges()
    os.close(gmem)
    import time

    deadline = time.monotonic() + 2
    while charges() != [0, 0] and time.monotonic() < deadline:
        time.sleep(0.01)
    out["closed"] = charges()
    return out


def fcntl_fallocate(fd, mode, offset, length):
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    if libc.fallocate(fd, mode, offset, length):
        raise OSError(ctypes.get_errno(), "fallocate")


# Real mode at 0x1000: mov al, [bx]; out 0x11, al; mov [bx], cl; mov al, [bx]; out 0x10, al; hlt
GUEST_USE_MEMORY = bytes.fromhex("8a07e611880f8a07e610f4")


def guest_use(vcpu, run, address, value):
    """The guest reads the byte at address, writes value there and reads it back: (first, after)."""
    regs = [0] * 18
    regs[1], regs[2], regs[16], regs[17] = address, value, 0x1000, 0x2  # rbx, rcx, rip, rflags
    fcntl.ioctl(vcpu, KVM_SET_REGS, struct.pack("=18Q", *regs))
    first, after = run_until_exit(vcpu, run), run_until_exit(vcpu, run)
    return [first[2], after[2]] if (first[1], after[1]) == (0x11, 0x10) else ["exit", first, after]


def scenario_conversions(flags, size):
    """RFC v2's guest_memfd_conversions_test cases, with a guest of our own: four 4 KiB pages at
    0x2000-0x6000 (inside one huge page when the file has them). Returns what host and guest saw."""
    system, vm = kvm(), create_vm(KVM_X86_SW_PROTECTED_VM)
    gmem = create_guest_memfd(vm, size, flags)
    memory = mmap.mmap(gmem, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    set_region(vm, 0, KVM_MEM_GUEST_MEMFD, 0, size, _address(memory), 0, gmem)
    if flags & 2:  # INIT_PRIVATE: the code page must be made shared first
        convert(gmem, KVM_GMEM_CONVERT_SHARED, 0x1000, 0x1000)
    memory[0x1000 : 0x1000 + len(GUEST_USE_MEMORY)] = GUEST_USE_MEMORY
    vcpu, run = start_vcpu(system, vm)
    pages = [0x2000, 0x3000, 0x4000, 0x5000]
    out = {}
    if flags & 2:  # init_mappable_false: private from creation
        out["init_private_host"] = host_touch(memory, 0x2000)
        out["init_private_guest"] = guest_use(vcpu, run, 0x2000, ord("A"))
        out["init_private_to_shared"] = convert(gmem, KVM_GMEM_CONVERT_SHARED, 0x2000, 0x1000)
        out["init_private_host_reads"] = chr(memory[0x2000])
        return out
    for page in pages:  # should_not_affect_surrounding_pages
        memory[page] = ord("A")
    out["guest_sees_host"] = [chr(guest_use(vcpu, run, page, ord("B"))[0]) for page in pages]
    out["page_2_private"] = convert(gmem, KVM_GMEM_CONVERT_PRIVATE, 0x4000, 0x1000)
    out["host_sees"] = [host_touch(memory, page) for page in pages]
    out["guest_on_private_page"] = [chr(byte) for byte in guest_use(vcpu, run, 0x4000, ord("D"))]
    for page in (0x2000, 0x3000, 0x5000):
        memory[page] = ord("D")
    out["guest_sees_neighbours"] = [chr(guest_use(vcpu, run, page, ord("E"))[0]) for page in (0x2000, 0x3000, 0x5000)]
    out["page_2_shared"] = convert(gmem, KVM_GMEM_CONVERT_SHARED, 0x4000, 0x1000)
    out["host_reads"] = [chr(memory[page]) for page in pages]
    return out


def scenario_traced(flags, size):
    """What `gmemfs run --trace` must show, one call of each kind: a capability, a VM with
    private memory, a refused and a good guest_memfd, an allocation, a binding, a conversion to
    private, the host's refused fault, the guest on the private page, the way back, a punch and
    a refused fallocate; the file is evicted when the run ends."""
    system, vm = kvm(), create_vm(KVM_X86_SW_PROTECTED_VM)
    out = {
        "cap": result(check_extension, vm, 234),  # KVM_CAP_GUEST_MEMFD
        "bad_size": result(create_guest_memfd, vm, size + 0x1000, flags),
    }
    gmem = create_guest_memfd(vm, size, flags)
    out["allocate"] = result(fcntl_fallocate, gmem, 1, 0, size) or "OK"  # KEEP_SIZE
    memory = mmap.mmap(gmem, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    out["bind"] = result(set_region, vm, 0, KVM_MEM_GUEST_MEMFD, 0, size, _address(memory), 0, gmem)
    memory[0x1000 : 0x1000 + len(PRIVATE_GUEST_CODE)] = PRIVATE_GUEST_CODE
    memory[0x2000] = 0x11
    out["to_private"] = convert(gmem, KVM_GMEM_CONVERT_PRIVATE, 0x2000, 0x1000)
    out["host_while_private"] = host_touch(memory, 0x2000)
    vcpu, run = start_vcpu(system, vm)
    out["guest"] = [run_until_exit(vcpu, run), run_until_exit(vcpu, run)]
    out["to_shared"] = convert(gmem, KVM_GMEM_CONVERT_SHARED, 0x2000, 0x1000)
    out["host_reads"] = memory[0x2000]
    memory.close()
    out["punch"] = result(fcntl_fallocate, gmem, 3, size - 0x200000, 0x200000) or "OK"  # PUNCH_HOLE|KEEP_SIZE
    out["bad_fallocate"] = result(fcntl_fallocate, gmem, 1, 0x1000, 0x800) or "OK"  # not page aligned
    return out


# ---- what the kernel's answer confirms (issue 17, section 3) -----------------------------------

CAP_GUEST_MEMFD = 234
PROT_NONE = 0


def scenario_forked_child(vm_type=0):
    """A forked child uses its parent's VM fd (KVM: EIO for every VM ioctl from another mm);
    then the parent binds the file as it always could."""
    vm = create_vm(vm_type)
    gmem = create_guest_memfd(vm, 0x4000)
    memory = mmap.mmap(-1, 0x4000)
    uaddr = _address(memory)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        child = {
            "check_extension": result(check_extension, vm, CAP_GUEST_MEMFD),
            "create_guest_memfd": result(create_guest_memfd, vm, 0x4000),
            "set_region": result(set_region, vm, 1, KVM_MEM_GUEST_MEMFD, 0x100000, 0x4000, uaddr, 0, gmem),
            "set_attributes": result(set_attributes, vm, 0x100000, 0x4000, KVM_MEMORY_ATTRIBUTE_PRIVATE),
        }
        os.write(write_end, json.dumps(child).encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    child = json.loads(os.read(read_end, 4096))
    parent = result(set_region, vm, 1, KVM_MEM_GUEST_MEMFD, 0x100000, 0x4000, uaddr, 0, gmem)
    return {"child": child, "parent_binds": parent}


def scenario_reused_fd_number(vm_type=0):
    """A slot is deleted after the number of the guest_memfd it bound went to another file
    (KVM ignores guest_memfd when deleting); then a new slot takes the same guest physical range."""
    vm = create_vm(vm_type)
    gmem = create_guest_memfd(vm, 0x4000)
    memory = mmap.mmap(-1, 0x4000)
    uaddr = _address(memory)
    out = {"bind": result(set_region, vm, 1, KVM_MEM_GUEST_MEMFD, 0x100000, 0x4000, uaddr, 0, gmem)}
    os.close(gmem)
    other = os.open("/dev/null", os.O_RDONLY)
    out["number_reused"] = other == gmem
    out["delete"] = result(set_region, vm, 1, KVM_MEM_GUEST_MEMFD, 0x100000, 0, uaddr, 0, other)
    second = create_guest_memfd(vm, 0x4000)
    out["new_slot_same_range"] = result(set_region, vm, 2, KVM_MEM_GUEST_MEMFD, 0x100000, 0x4000, uaddr, 0, second)
    return out


def _libc():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc


def _page_holding(data: bytes, prot: int) -> int:
    """The address of a private anonymous page that holds data and then gets protection prot."""
    import ctypes

    libc = _libc()
    address = libc.mmap(
        None, mmap.PAGESIZE, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0
    )
    ctypes.memmove(address, data, len(data))
    assert libc.mprotect(address, mmap.PAGESIZE, prot) == 0, ctypes.get_errno()
    return address


def _read_only_file_page_holding(data: bytes) -> int:
    """The address of a read-only shared mapping of a file that holds data."""
    import tempfile

    with tempfile.TemporaryFile() as file:
        file.write(data.ljust(mmap.PAGESIZE, b"\0"))
        file.flush()
        return _libc().mmap(None, mmap.PAGESIZE, mmap.PROT_READ, mmap.MAP_SHARED, file.fileno(), 0)


def raw_ioctl(fd: int, request: int, address: int) -> int:
    """ioctl(2) with a pointer the caller chose (fcntl.ioctl takes only a C int or a buffer)."""
    import ctypes

    libc = _libc()
    value = libc.ioctl(fd, ctypes.c_ulong(request), ctypes.c_void_p(address))
    if value < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return value


def _region(slot, flags, gpa, size, uaddr=0, offset=0, gmem=0) -> bytes:
    return struct.pack("=IIQQQQII14Q", slot, flags, gpa, size, uaddr, offset, gmem, 0, *[0] * 14)


def scenario_prot_none_region(vm_type=0):
    """A region struct the program cannot read: EFAULT, and nothing recorded; then the same slot
    from readable memory."""
    vm = create_vm(vm_type)
    gmem = create_guest_memfd(vm, 0x4000)
    memory = mmap.mmap(-1, 0x4000)
    region = _region(1, KVM_MEM_GUEST_MEMFD, 0x100000, 0x4000, _address(memory), 0, gmem)
    return {
        "unreadable": result(raw_ioctl, vm, KVM_SET_USER_MEMORY_REGION2, _page_holding(region, PROT_NONE)),
        "readable": result(fcntl.ioctl, vm, KVM_SET_USER_MEMORY_REGION2, region),
    }


def scenario_protections(vm_type=0):
    """The kernel reads the program's structs with the program's own rights (copy_from_user) and
    never writes a struct it only reads."""
    import ctypes

    vm = create_vm(vm_type)
    gmem = create_guest_memfd(vm, 0x8000)
    memory = mmap.mmap(-1, 0x8000)
    uaddr = _address(memory)
    creation = struct.pack("=QQ6Q", 0x4000, 0, *[0] * 6)
    region = _region(1, KVM_MEM_GUEST_MEMFD, 0x100000, 0x4000, uaddr, 0, gmem)
    read_only = _page_holding(region, mmap.PROT_READ)
    in_file = _read_only_file_page_holding(
        _region(2, KVM_MEM_GUEST_MEMFD, 0x200000, 0x4000, uaddr + 0x4000, 0x4000, gmem)
    )
    return {
        "create_in_prot_none": result(raw_ioctl, vm, KVM_CREATE_GUEST_MEMFD, _page_holding(creation, PROT_NONE)),
        "region_in_read_only_memory": result(raw_ioctl, vm, KVM_SET_USER_MEMORY_REGION2, read_only),
        "read_only_region_unchanged": ctypes.string_at(read_only, len(region)) == region,
        "region_in_read_only_file_mapping": result(raw_ioctl, vm, KVM_SET_USER_MEMORY_REGION2, in_file),
    }


def scenario_closed_vms(count, size, flags, vm_type=0):
    """count times: a VM, a guest_memfd bound to it, both closed. The answer of the first
    creation that failed, and how many worked."""
    memory = mmap.mmap(-1, size)
    for number in range(count):
        vm = result(create_vm, vm_type)
        if isinstance(vm, str):
            return {"worked": number, "failed": f"VM {number}: {vm}"}
        gmem = result(create_guest_memfd, vm, size, flags)
        if isinstance(gmem, str):
            return {"worked": number, "failed": f"guest_memfd {number}: {gmem}"}
        bound = result(set_region, vm, 0, KVM_MEM_GUEST_MEMFD, 0, size, _address(memory), 0, gmem)
        if bound != "OK":
            return {"worked": number, "failed": f"slot {number}: {bound}"}
        os.close(gmem)
        os.close(vm)
    return {"worked": count, "failed": None}


def scenario_orphans_end_meanwhile(count):
    """count guest_memfds made and closed while another thread makes orphans that end at once
    (under gmemfs run, each one's end is a SIGCHLD for the run, their subreaper): the errnos seen."""
    import threading

    done = threading.Event()

    def make_orphans():
        while not done.is_set():
            pid = os.fork()
            if pid == 0:
                if os.fork():
                    os._exit(0)
                os._exit(0)  # the grandchild, an orphan now
            os.waitpid(pid, 0)

    maker = threading.Thread(target=make_orphans)
    maker.start()
    vm, errors = create_vm(), {}
    for _ in range(count):
        fd = result(create_guest_memfd, vm, 4096)
        if isinstance(fd, str):
            errors[fd] = errors.get(fd, 0) + 1
        else:
            os.close(fd)
    done.set()
    maker.join()
    return errors


def scenario_daemonize(flags=0):
    """As `qemu -daemonize`: the first process makes guest memory, forks and exits; its child goes
    on using that memory and makes a VM and more memory of its own, then reports on stdout."""
    gmem = create_guest_memfd(create_vm(), 0x4000, flags)
    parent = os.getpid()
    if os.fork():
        os._exit(3)
    while os.getppid() == parent:
        time.sleep(0.01)
    time.sleep(0.2)  # the first process has been reaped: a run that ended with it is gone too
    out = {
        "fallocate": result(fcntl_fallocate, gmem, 1, 0, 0x1000) or "OK",  # KEEP_SIZE
        "size": result(lambda: os.fstat(gmem).st_size),
        "new_guest_memfd": result(lambda: os.fstat(create_guest_memfd(create_vm(), 0x2000, flags)).st_size),
    }
    print(json.dumps(out), flush=True)
    os._exit(0)


def main(argv):
    scenario = argv[0]
    args = [json.loads(arg) for arg in argv[1:]]
    print(json.dumps(globals()[f"scenario_{scenario}"](*args)))


if __name__ == "__main__":
    main(sys.argv[1:])
