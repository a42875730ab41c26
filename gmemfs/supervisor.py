"""Answer a program's guest_memfd ioctls with gmemfs files: the heart of `gmemfs run`.

The program's seccomp filter traps only KVM_CHECK_EXTENSION, KVM_CREATE_GUEST_MEMFD,
the memslot ioctls and (RFC v1) KVM_SET_MEMORY_ATTRIBUTES. Each trapped call is
answered here, in the order the kernel makes its checks, with the kernel's errno:

- KVM_CREATE_GUEST_MEMFD on a VM fd: an anonymous gmemfs file, installed in the
  program as the ioctl's result (no close-on-exec, as the kernel's fds).
- KVM_CHECK_EXTENSION on /dev/kvm or a VM fd: the ABI profile's guest_memfd
  capabilities; every other capability is the kernel's.
- KVM_SET_USER_MEMORY_REGION(2): KVM's checks for a guest_memfd slot (memslots.py),
  then the slot goes to KVM without KVM_MEM_GUEST_MEMFD, so it is an ordinary slot
  over its userspace address: shared memory, which is all a VM of this kernel uses.
- KVM_SET_MEMORY_ATTRIBUTES (RFC v1): converts the file pages bound to those gfns.

Everything else, and every call on an fd that is not KVM's, continues into the kernel
untouched. The supervisor runs on its own trio loop and answers one call at a time;
the trapped thread waits, nobody else does.
"""

import errno
import fcntl
import logging
import os
import struct
from dataclasses import dataclass, field

import trio

from .client import ConversionError, convert_private, convert_shared, create_guest_memfd
from .hugepages import HugePageSupport
from .memslots import GmemFile, MemoryRegion, Memslots
from .rules import GmemError, check_creation_size, page_size_for_flags, parse_flags_value
from .seccomp import Listener, Notification
from .tracee import copy_fd, fd_stat, fd_target, mapped_file_offset, read_memory, same_file, write_memory
from .uapi import (
    KVM_CAP_MULTI_ADDRESS_SPACE,
    KVM_CHECK_EXTENSION,
    KVM_CREATE_GUEST_MEMFD,
    KVM_CREATE_GUEST_MEMFD_STRUCT,
    KVM_MEM_GUEST_MEMFD,
    KVM_MEMORY_ATTRIBUTES_STRUCT,
    KVM_SET_MEMORY_ATTRIBUTES,
    KVM_SET_USER_MEMORY_REGION,
    KVM_SET_USER_MEMORY_REGION2,
    KVM_USER_MEMORY_REGION2_STRUCT,
    KVM_USER_MEMORY_REGION_STRUCT,
    XATTR_FLAGS,
    AbiProfile,
)

log = logging.getLogger(__name__)

KVM_DEVICE = "/dev/kvm"
VM_FD = "anon_inode:kvm-vm"
LOFF_MAX = (1 << 63) - 1


class _KernelAnswers:
    """A handler's way of saying: let the kernel run the call as it stands."""


KERNEL = _KernelAnswers()


@dataclass
class InstallFd:
    """A handler's answer: this fd of ours becomes the call's result in the program."""

    fd: int


@dataclass
class Vm:
    """One of the program's VMs, known by our copy of its fd (kcmp compares open files)."""

    fd: int
    memslots: Memslots
    bound_files: dict[int, int] = field(default_factory=dict)  # gmemfs inode -> our fd, while a slot binds it


class GuestMemfdSupervisor:
    """Answers the trapped calls of one program (its threads and children) from one gmemfs mount."""

    def __init__(self, listener: Listener, mount_path: str, profile: AbiProfile) -> None:
        self.listener = listener
        listener.fast_wakeups()
        self.mount_path = mount_path
        self.mount_device = os.stat(mount_path).st_dev
        self.profile = profile
        self.support = HugePageSupport.probe()
        self.capabilities = dict(profile.capabilities)
        self.address_spaces = _kvm_address_spaces()
        self.vms: list[Vm] = []
        self.file_owner: dict[int, Vm] = {}  # gmemfs inode -> the VM that created it
        self.handlers = {
            KVM_CHECK_EXTENSION: self.check_extension,
            KVM_CREATE_GUEST_MEMFD: self.create_guest_memfd,
            KVM_SET_USER_MEMORY_REGION: self.set_memory_region,
            KVM_SET_USER_MEMORY_REGION2: self.set_memory_region,
            KVM_SET_MEMORY_ATTRIBUTES: self.set_memory_attributes,
        }
        self.calls = 0

    async def serve(self) -> None:
        """Answer trapped calls until cancelled (the program has ended) or nobody uses the filter.

        RECV blocks until a call is trapped, so it is issued only when poll says one waits:
        once every process of the program is gone, the listener is readable with POLLHUP alone.
        """
        while True:
            await trio.lowlevel.wait_readable(self.listener.fd)
            state = self.listener.state()
            if state == "orphaned":
                return
            if state == "idle":  # the call went away (its thread was killed) before we looked
                continue
            notification = self.listener.receive()
            if notification is not None:
                self.answer(notification)

    def answer(self, notification: Notification) -> None:
        """Exactly one answer per trapped call, whatever the handler does."""
        self.calls += 1
        handler = self.handlers.get(notification.request)
        try:
            result = handler(notification) if handler else KERNEL
        except OSError as error:
            self.listener.reply(notification, err=error.errno or errno.EIO)
            return
        except Exception:
            log.exception("gmemfs run: answering ioctl %#x failed", notification.request)
            self.listener.reply(notification, err=errno.EIO)
            return
        if result is KERNEL:
            self.listener.let_kernel_run(notification)
        elif isinstance(result, InstallFd):
            self._install(notification, result.fd)
        else:
            self.listener.reply(notification, value=result)

    def _install(self, notification: Notification, fd: int) -> None:
        try:
            self.listener.reply_with_fd(notification, fd)
        except OSError as error:
            if error.errno != errno.ENOENT:  # ENOENT: the caller is gone, and so is the file with our fd
                self.listener.reply(notification, err=error.errno)
        finally:
            os.close(fd)

    # ---- the trapped ioctls ---------------------------------------------------------

    def check_extension(self, call: Notification):
        if call.argument not in self.capabilities or fd_target(call.pid, call.fd) not in (KVM_DEVICE, VM_FD):
            return KERNEL
        return self.capabilities[call.argument]

    def create_guest_memfd(self, call: Notification):
        """kvm_gmem_create(): flags first, then the size, then a file of this VM."""
        if fd_target(call.pid, call.fd) != VM_FD:
            return KERNEL
        size, flags, *_reserved = struct.unpack(
            KVM_CREATE_GUEST_MEMFD_STRUCT, self._read(call, struct.calcsize(KVM_CREATE_GUEST_MEMFD_STRUCT))
        )
        page_size = page_size_for_flags(flags, self.profile, self.support.sizes, self.support.default_size)
        check_creation_size(0, size if size <= LOFF_MAX else -1, page_size)  # loff_t: negative if above
        vm = self._vm(call)
        fd = create_guest_memfd(self.mount_path, size, flags)
        self.file_owner[os.fstat(fd).st_ino] = vm
        return InstallFd(fd)

    def set_memory_region(self, call: Notification):
        if fd_target(call.pid, call.fd) != VM_FD:
            return KERNEL
        version = 2 if call.request == KVM_SET_USER_MEMORY_REGION2 else 1
        layout = KVM_USER_MEMORY_REGION2_STRUCT if version == 2 else KVM_USER_MEMORY_REGION_STRUCT
        try:
            fields = struct.unpack(layout, self._read(call, struct.calcsize(layout)))
        except OSError:
            return KERNEL  # EFAULT, from the kernel itself
        region = MemoryRegion(*fields[:7])
        vm = self._vm(call)
        gmem = self._gmem_file(call.pid, region, vm) if version == 2 and region.flags & KVM_MEM_GUEST_MEMFD else None
        if gmem is KERNEL:
            return KERNEL  # a guest_memfd that is not ours: the kernel's own business
        involved = vm.memslots.involves_guest_memfd(region)
        try:
            slot = vm.memslots.check(region, gmem, version=version)
        except GmemError:
            if involved:
                raise
            return KERNEL  # the kernel refuses it in the same words
        if involved and region.flags & KVM_MEM_GUEST_MEMFD:
            write_memory(call.pid, call.argument + 4, struct.pack("=I", region.flags & ~KVM_MEM_GUEST_MEMFD))
        if not self.listener.still_waiting(call):
            return KERNEL
        vm.memslots.apply(region, slot)
        if slot is not None and slot.binding and slot.binding.file not in vm.bound_files:
            vm.bound_files[slot.binding.file] = copy_fd(call.pid, region.guest_memfd)
        self._forget_unbound_files(vm)
        return KERNEL

    def set_memory_attributes(self, call: Notification):
        """kvm_vm_ioctl_set_mem_attributes(), then RFC v1's conversion of the bound file pages."""
        if fd_target(call.pid, call.fd) != VM_FD:
            return KERNEL
        if not self.profile.memory_attributes:  # v7 with kvm.vm_memory_attributes=0
            raise GmemError(errno.ENOTTY, "KVM_SET_MEMORY_ATTRIBUTES: attributes live on the guest_memfd")
        address, size, attributes, flags = struct.unpack(KVM_MEMORY_ATTRIBUTES_STRUCT, self._read(call, 32))
        if flags or attributes & ~self.profile.memory_attributes:
            raise GmemError(errno.EINVAL, "memory attributes: unknown flags or attributes")
        if not size or address + size > (1 << 64) - 1 or address % 4096 or size % 4096:
            raise GmemError(errno.EINVAL, "memory attributes: empty, overflowing or unaligned range")
        convert = convert_private if attributes & self.profile.memory_attributes else convert_shared
        vm = self._vm(call)
        for ino, offset, length in vm.memslots.bound_ranges(address, address + size):
            try:
                convert(vm.bound_files[ino], offset, length)
            except ConversionError as error:
                raise OSError(error.errno, "a page is still in use by the host") from None
        return 0

    # ---- helpers ----------------------------------------------------------------------

    def _read(self, call: Notification, size: int) -> bytes:
        data = read_memory(call.pid, call.argument, size)
        if not self.listener.still_waiting(call):
            raise OSError(errno.ESRCH, "the call went away")
        return data

    def _vm(self, call: Notification) -> Vm:
        for vm in self.vms:
            if same_file(vm.fd, call.pid, call.fd):
                return vm
        vm = Vm(copy_fd(call.pid, call.fd), Memslots(self.address_spaces))
        self.vms.append(vm)
        return vm

    def _gmem_file(self, pid: int, region: MemoryRegion, vm: Vm):
        """What KVM would find behind region.guest_memfd: ours (GmemFile), nothing (EBADF), or not ours."""
        status = fd_stat(pid, region.guest_memfd)
        if status is None:
            return None  # EBADF, after KVM's other checks (memslots.py)
        if status.st_dev != self.mount_device:
            return KERNEL
        maps_its_range = True
        if self.profile.binds_mapping_only and region.userspace_addr:
            flags = parse_flags_value(os.getxattr(f"/proc/{pid}/fd/{region.guest_memfd}", XATTR_FLAGS))
            if self.profile.mmap_allowed(flags):
                maps_its_range = mapped_file_offset(pid, region.userspace_addr, status) == region.guest_memfd_offset
        this_vm = self.file_owner.get(status.st_ino) is vm
        return GmemFile(status.st_ino, status.st_size, this_vm, maps_its_range)

    def _forget_unbound_files(self, vm: Vm) -> None:
        bound = {slot.binding.file for slot in vm.memslots.slots.values() if slot.binding}
        for ino in set(vm.bound_files) - bound:
            os.close(vm.bound_files.pop(ino))

    def close(self) -> None:
        for vm in self.vms:
            for fd in vm.bound_files.values():
                os.close(fd)
            os.close(vm.fd)
        self.vms.clear()


def _kvm_address_spaces() -> int:
    try:
        kvm = os.open(KVM_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return 1
    try:
        return max(fcntl.ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_MULTI_ADDRESS_SPACE), 1)
    finally:
        os.close(kvm)
