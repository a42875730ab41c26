"""Answer a program's guest_memfd ioctls with gmemfs files: the heart of `gmemfs run`.

The program's seccomp filter traps only the ioctls whose answer depends on guest_memfd
support: KVM_CREATE_VM, KVM_CHECK_EXTENSION, KVM_CREATE_GUEST_MEMFD, the memslot ioctls,
KVM_SET_MEMORY_ATTRIBUTES and the profile's conversion ioctls on a guest_memfd. Each trapped
call is answered here, in the order the kernel makes its checks, with the kernel's errno:

- KVM_CREATE_VM(KVM_X86_SW_PROTECTED_VM): the program's own thread creates a type-0 VM
  (injection.py: KVM binds a VM to its creator's mm); we remember that it has private memory.
- KVM_CHECK_EXTENSION on /dev/kvm or a VM fd: the profile's answers for that VM type.
- KVM_CREATE_GUEST_MEMFD on a VM fd: an anonymous gmemfs file, installed in the program.
- KVM_SET_USER_MEMORY_REGION(2): KVM's checks for a guest_memfd slot (memslots.py), then the
  program's thread makes the slot as KVM must see it, and only what KVM accepted is recorded.
  KVM never sees KVM_MEM_GUEST_MEMFD: a guest_memfd slot is ordinary memory to it. Where the
  guest must reach pages the host cannot (a private VM) or memory the program never mapped
  (userspace_addr 0), the slot is emulated (slot_layout.py): KVM gets one memslot per run of
  private or shared pages, the private ones over a mapping of the file's guest view.
- KVM_SET_MEMORY_ATTRIBUTES, and conversions of a bound file: the attributes (and RFC v1's
  conversion of the file's pages), then the emulated slots laid out anew.
- mmap(2) of a gmemfs file with MAP_PRIVATE: kvm_gmem_mmap()'s ENODEV or EINVAL (FUSE would
  map it; the filter traps every private file mapping, and the others continue).

Everything else, and every call on an fd that is not KVM's, continues into the kernel
untouched. The supervisor runs on its own trio loop and answers one call at a time;
the trapped thread waits, nobody else does.
"""

import errno
import fcntl
import logging
import mmap
import os
import stat
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import trio

from ..base.hugepages import HugePageSupport
from ..base.libc import fallocate
from ..base.ranges import parse_ranges
from ..client import ConversionError, convert_private, convert_shared, create_guest_memfd
from ..daemon.host_users import CheckIncomplete, first_mapped_page
from ..kernel.rules import GmemError, check_creation_size, file_geometry, parse_flags_value
from ..kernel.uapi import (
    FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE,
    GUEST_VIEW_PREFIX,
    KVM_CAP_MEMORY_ATTRIBUTES,
    KVM_CAP_MULTI_ADDRESS_SPACE,
    KVM_CAP_VM_TYPES,
    KVM_CHECK_EXTENSION,
    KVM_CREATE_GUEST_MEMFD,
    KVM_CREATE_GUEST_MEMFD_PAGE_ORDER_STRUCT,
    KVM_CREATE_GUEST_MEMFD_STRUCT,
    KVM_CREATE_VM,
    KVM_GMEM_CONVERT_PRIVATE,
    KVM_GMEM_CONVERT_SHARED,
    KVM_MEM_GUEST_MEMFD,
    KVM_MEMORY_ATTRIBUTE_PRIVATE,
    KVM_MEMORY_ATTRIBUTES_STRUCT,
    KVM_SET_MEMORY_ATTRIBUTES,
    KVM_SET_MEMORY_ATTRIBUTES2,
    KVM_SET_USER_MEMORY_REGION,
    KVM_SET_USER_MEMORY_REGION2,
    KVM_USER_MEMORY_REGION2_STRUCT,
    KVM_USER_MEMORY_REGION_STRUCT,
    KVM_X86_SW_PROTECTED_VM,
    XATTR_ALLOCATED,
    XATTR_FLAGS,
    AbiProfile,
)
from ..trace.events import TraceEvent
from .injection import SYS_CLOSE, SYS_MMAP, U64, ThreadTakeover
from .memslots import GmemFile, MemoryRegion, Memslots
from .seccomp import Listener, Notification
from .slot_layout import SlotLayout, overlaps
from .tracee import (
    VM_FD,
    KnownProcess,
    copy_fd,
    descendants,
    fd_stat,
    fd_target,
    held_files,
    mapped_file_offset,
    mount_and_inode,
    read_memory,
    same_file,
    same_mm,
    thread_group,
)
from .tracing import KERNEL_RAN, call_event, call_words
from .vms import Vm

log = logging.getLogger(__name__)

KVM_DEVICE = "/dev/kvm"
KVM_DEVICE_NUMBER = os.makedev(10, 232)  # misc device "kvm", whatever node or path reaches it
LOFF_MAX = (1 << 63) - 1
EMULATED_VM_TYPES = (KVM_X86_SW_PROTECTED_VM,)
# RFC v1 29/39: kvm_vm_set_mem_attributes() -> kvm_gmem_should_set_attributes() finds a page
# folio_mapped() or folio_maybe_dma_pinned() (kvm_gmem_no_mappings_range()) and refuses.
PRIVATE_WHILE_MAPPED = "kvm_gmem_should_set_attributes_private"
CREATIONS = frozenset({KVM_CREATE_VM, KVM_CREATE_GUEST_MEMFD, KVM_SET_USER_MEMORY_REGION, KVM_SET_USER_MEMORY_REGION2})


class _KernelAnswers:
    """A handler's way of saying: let the kernel run the call as it stands."""


KERNEL = _KernelAnswers()


@dataclass
class InstallFd:
    """A handler's answer: this fd of ours becomes the call's result in the program."""

    fd: int


@dataclass
class InThread:
    """A handler's answer: `work` runs in the trapped thread (injection.ThreadTakeover) and its
    result (a value or -errno) is the call's. `install`: fds of ours put into the program first;
    work gets their numbers there, and they are closed there afterwards."""

    work: Callable[[ThreadTakeover, "list[int]"], int]
    install: tuple[int, ...] = ()
    close_after_install: tuple[int, ...] = ()  # ours, needed no more once the program has its copy
    or_kernel: bool = False  # if the thread cannot be taken over (traced already), the kernel runs the call


class GuestMemfdSupervisor:
    """Answers the trapped calls of one program (its threads and children) from one gmemfs mount.

    The program's processes are our descendants (gmemfs run is their subreaper), but for
    `others`: children of ours that are not the program's, such as the private daemon.
    """

    def __init__(
        self, listener: Listener, mount_path: str, profile: AbiProfile, others: "tuple[int, ...]" = ()
    ) -> None:
        self.listener = listener
        listener.fast_wakeups()
        self.mount_path = mount_path
        self.mount_device = os.stat(mount_path).st_dev
        self.mount_id = _mount_id(mount_path)
        self.profile = profile
        self.layout = SlotLayout(profile)
        self.others = others
        self.support = HugePageSupport.probe()
        self.address_spaces = _kvm_address_spaces()
        self.vms: list[Vm] = []
        self.file_owner: dict[int, Vm] = {}  # gmemfs inode -> the VM that created it
        self.handlers = {
            KVM_CREATE_VM: self.create_vm,
            KVM_CHECK_EXTENSION: self.check_extension,
            KVM_CREATE_GUEST_MEMFD: self.create_guest_memfd,
            KVM_SET_USER_MEMORY_REGION: self.set_memory_region,
            KVM_SET_USER_MEMORY_REGION2: self.set_memory_region,
            KVM_SET_MEMORY_ATTRIBUTES: self.set_memory_attributes,
            KVM_GMEM_CONVERT_SHARED: self.convert_file,
            KVM_GMEM_CONVERT_PRIVATE: self.convert_file,
            KVM_SET_MEMORY_ATTRIBUTES2: self.convert_file,
        }
        self.calls = 0
        self.trace: Callable[[TraceEvent], None] | None = None  # gmemfs run --trace: where events go
        self.traced_files: set[int] | None = None  # and the inodes it created, where the mount serves others too

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
        """Exactly one answer per trapped call, whatever the handler does; with a trace, its event."""
        self.calls += 1
        started = time.monotonic()
        words = self._traced_words(notification) if self.trace else ("", "")
        handler = self.private_mapping if notification.nr == SYS_MMAP else self.handlers.get(notification.request)
        if notification.nr != SYS_MMAP and notification.request in CREATIONS:
            try:
                self._forget_closed()
            except OSError as error:  # the program's /proc could not be read: look again next time
                log.info("gmemfs run: the program's open files could not be read: %s", error)
        failure = None
        try:
            result = handler(notification) if handler else KERNEL
        except OSError as error:
            failure, result = error, -(error.errno or errno.EIO)
            self.listener.reply(notification, err=-result)
        except Exception:
            log.exception("gmemfs run: answering ioctl %#x failed", notification.request)
            result = -errno.EIO
            self.listener.reply(notification, err=errno.EIO)
        else:
            if result is KERNEL:
                self.listener.let_kernel_run(notification)
                result = KERNEL_RAN
            elif isinstance(result, InstallFd):
                result = self._install(notification, result.fd)
            elif isinstance(result, InThread):
                result = self._run_in_thread(notification, result)
            else:
                self.listener.reply(notification, value=result)
        if self.trace and not (notification.nr == SYS_MMAP and result is KERNEL_RAN):  # every other file's mmap
            try:
                self.trace(call_event(notification, words, result, failure, started, self.profile))
            except Exception:  # the call is answered; a trace must never cost the run
                log.exception("gmemfs run: tracing ioctl %#x failed", notification.request)

    def _traced_words(self, notification: Notification) -> "tuple[str, str]":
        """The call in words, before it is answered; whatever goes wrong, the call is answered."""
        try:
            return call_words(notification, self.profile)
        except Exception:
            log.exception("gmemfs run: decoding ioctl %#x for the trace failed", notification.request)
            return f"{notification.request:#x}", "(not decoded)"

    def _install(self, notification: Notification, fd: int) -> "int | None":
        """The fd's number in the program, -errno, or None if the caller is gone."""
        try:
            return self.listener.reply_with_fd(notification, fd)
        except OSError as error:
            if error.errno == errno.ENOENT:  # the caller is gone, and so is the file with our fd
                return None
            self.listener.reply(notification, err=error.errno)
            return -error.errno
        finally:
            os.close(fd)

    def _run_in_thread(self, notification: Notification, job: InThread) -> "int | _KernelAnswers | None":
        """Take the trapped thread over, run the job in it, and let it return the job's result:
        that result, KERNEL_RAN, or None if the thread could not be taken over."""
        try:
            theirs = [self.listener.add_fd(notification, fd) for fd in job.install]
            takeover = ThreadTakeover(notification.pid, thread_group(notification.pid), self.listener.cookie)
            takeover.seize()
        except OSError as error:
            if error.errno == errno.EPERM and job.or_kernel:
                self.listener.let_kernel_run(notification)
                return KERNEL_RAN
            log.warning("gmemfs run: ioctl %#x of thread %d: %s", notification.request, notification.pid, error)
            self.listener.reply(notification, err=error.errno or errno.EIO)
            return -(error.errno or errno.EIO)
        finally:
            for fd in job.close_after_install:
                os.close(fd)
        try:
            self.listener.restart(notification)  # the call leaves seccomp and the thread stops for us
            takeover.stopped()
        except OSError as error:
            log.info("gmemfs run: thread %d could not be taken over: %s", notification.pid, error)
            takeover.abandon()
            return None
        result = -errno.EIO
        try:
            result = job.work(takeover, theirs)
        except OSError as error:
            result = -(error.errno or errno.EIO)
        except Exception:
            log.exception("gmemfs run: work in thread %d failed", notification.pid)
        finally:
            try:
                for fd in theirs:
                    takeover.syscall(SYS_CLOSE, fd)
                takeover.finish(result)
            except OSError as error:
                log.info("gmemfs run: thread %d went away while taken over: %s", notification.pid, error)
        return result

    # ---- the trapped ioctls ---------------------------------------------------------

    def create_vm(self, call: Notification):
        """KVM_CREATE_VM, made by the program's own thread, so that we know the VM and its creator
        (KVM ties a VM to its creator's mm). A type with private memory becomes a type-0 VM, which
        we remember as private."""
        if not self._is_kvm_device(call.pid, call.fd):
            return KERNEL
        private = call.argument & 0xFFFFFFFF in EMULATED_VM_TYPES

        def create(takeover: ThreadTakeover, _theirs) -> int:
            fd = takeover.ioctl(call.fd, KVM_CREATE_VM, 0 if private else call.argument)
            if fd >= 0:
                creator = KnownProcess.of_thread(call.pid)
                self.vms.append(Vm(copy_fd(call.pid, fd), self._memslots(private), creator, private=private))
            return fd

        return InThread(create, or_kernel=not private)

    def check_extension(self, call: Notification):
        if self._is_kvm_device(call.pid, call.fd):
            vm_private = None
        elif fd_target(call.pid, call.fd) == VM_FD:
            vm = self._known_vm(call)
            if vm and not self._in_vms_mm(vm, call):
                return KERNEL  # EIO
            vm_private = bool(vm and vm.private)
        else:
            return KERNEL
        if call.argument == KVM_CAP_VM_TYPES:
            return self._native_vm_types() | sum(1 << vm_type for vm_type in EMULATED_VM_TYPES)
        answer = self.profile.capability(call.argument, vm_private)
        return KERNEL if answer is None else answer

    def create_guest_memfd(self, call: Notification):
        """kvm_gmem_create(): flags (and hugetlb-2025's page_order) first, then the size, then a file of this VM."""
        vm = self._callers_vm(call)
        if vm is None:
            return KERNEL
        size, flags, page_order, *_reserved = struct.unpack(
            KVM_CREATE_GUEST_MEMFD_PAGE_ORDER_STRUCT, self._read(call, struct.calcsize(KVM_CREATE_GUEST_MEMFD_STRUCT))
        )
        if vm.private and flags & self.profile.private_vm_invalid_flags:
            raise GmemError(
                errno.EINVAL, f"flags {flags:#x} are not valid for a VM with private memory", function="kvm_gmem_create"
            )
        page_order = page_order if self.profile.page_order else 0  # reserved, and unchecked, elsewhere
        geometry = file_geometry(flags, page_order, self.profile, self.support.sizes, self.support.default_size)
        check_creation_size(0, size if size <= LOFF_MAX else -1, geometry.size_alignment)  # loff_t: negative if above
        fd = create_guest_memfd(self.mount_path, size, flags, page_order)
        ino = os.fstat(fd).st_ino
        self.file_owner[ino] = vm
        if self.traced_files is not None:
            self.traced_files.add(ino)
        return InstallFd(fd)

    def set_memory_region(self, call: Notification):
        vm = self._callers_vm(call)
        if vm is None:
            return KERNEL
        version = 2 if call.request == KVM_SET_USER_MEMORY_REGION2 else 1
        layout = KVM_USER_MEMORY_REGION2_STRUCT if version == 2 else KVM_USER_MEMORY_REGION_STRUCT
        try:
            fields = struct.unpack(layout, self._read(call, struct.calcsize(layout)))
        except OSError as error:
            if error.errno == errno.ESRCH:
                raise
            return KERNEL  # EFAULT, from the kernel itself
        region = MemoryRegion(*fields[:7])
        binds = version == 2 and region.flags & KVM_MEM_GUEST_MEMFD and self._creates_slot(vm, region)
        gmem = self._gmem_file(call.pid, region, vm) if binds else None
        if gmem is KERNEL:
            return KERNEL  # a guest_memfd that is not ours: the kernel's own business
        involved = vm.memslots.involves_guest_memfd(region)
        try:
            slot = vm.memslots.check(region, gmem, version=version, guest_memfd=self._takes_guest_memfd(vm))
        except GmemError:
            if involved:
                raise
            return KERNEL  # the kernel refuses it in the same words
        install, view = (), ()
        if slot is not None and slot.binding and self._emulates(vm, region):
            ino = slot.binding.file
            if ino not in vm.bound_files:
                vm.bound_files[ino] = copy_fd(call.pid, region.guest_memfd)
            install = (vm.bound_files[ino],)
            if vm.private:
                view = (self._open_guest_view(ino),)
        work = partial(self._set_region_in_thread, vm, region, slot, version, call)
        return InThread(work, install + view, close_after_install=view)

    def _set_region_in_thread(self, vm: Vm, region: MemoryRegion, slot, version: int, call, takeover, theirs):
        """The slot as KVM must hold it, made by the program's thread; recorded once KVM took it."""
        self.layout.make_room_for(takeover, call.fd, vm, region)
        old = vm.memslots.slots.get(region.slot_key)
        emulated = vm.emulated.get(region.slot_key)
        if emulated is not None:
            result = self.layout.remove(takeover, call.fd, vm, emulated)
        elif slot is not None and slot.binding and self._emulates(vm, region):
            result = self.layout.add(takeover, call.fd, vm, region, slot.binding, theirs)
        else:
            result = takeover.ioctl_with(call.fd, call.request, _region_struct(region, version))
        if result == 0:
            vm.memslots.apply(region, slot)
            if slot is not None and slot.binding and not (old and old.binding):
                self._bound(call, vm, region, slot.binding)
        self._forget_unbound_files(vm)
        return result

    def _bound(self, call, vm: Vm, region: MemoryRegion, binding) -> None:
        if binding.file not in vm.bound_files:
            vm.bound_files[binding.file] = copy_fd(call.pid, region.guest_memfd)
        if vm.private and self.profile.bind_makes_shared:  # RFC v1 28/39
            convert_shared(vm.bound_files[binding.file], binding.offset, binding.size)

    def set_memory_attributes(self, call: Notification):
        """kvm_vm_ioctl_set_mem_attributes(), then RFC v1's conversion of the bound file pages,
        then the emulated slots laid out anew."""
        vm = self._callers_vm(call)
        if vm is None:
            return KERNEL
        if KVM_SET_MEMORY_ATTRIBUTES2 in self.profile.conversion_ioctls:  # v7 with kvm.vm_memory_attributes=0
            raise GmemError(
                errno.ENOTTY, "KVM_SET_MEMORY_ATTRIBUTES: attributes live on the guest_memfd", function="kvm_vm_ioctl"
            )
        address, size, attributes, flags = struct.unpack(KVM_MEMORY_ATTRIBUTES_STRUCT, self._read(call, 32))
        supported = self.profile.capability(KVM_CAP_MEMORY_ATTRIBUTES, vm.private) or 0
        if flags or attributes & ~supported:
            raise GmemError(
                errno.EINVAL,
                "memory attributes: unknown flags or attributes",
                function="kvm_vm_ioctl_set_mem_attributes",
            )
        if not size or address + size > U64 or address % 4096 or size % 4096:
            raise GmemError(
                errno.EINVAL,
                "memory attributes: empty, overflowing or unaligned range",
                function="kvm_vm_ioctl_set_mem_attributes",
            )
        to_private = bool(attributes & KVM_MEMORY_ATTRIBUTE_PRIVATE)
        end = address + size
        if vm.private_gpas.covers(address, end) if to_private else not any(vm.private_gpas.overlapping(address, end)):
            return 0  # the range has these attributes already: nothing is done
        if self.profile.memory_attributes:
            self._convert_bound_pages(vm, address, end, to_private)
        (vm.private_gpas.add if to_private else vm.private_gpas.remove)(address, end)
        if not any(overlaps(slot.gpa_range, (address, end)) for slot in vm.emulated.values()):
            return 0
        return InThread(lambda takeover, _theirs: self.layout.lay_out(takeover, call.fd, vm, (address, end)))

    def _convert_bound_pages(self, vm: Vm, start: int, end: int, to_private: bool) -> None:
        """RFC v1 29/39: the bound file pages follow; PRIVATE is EINVAL while the host maps one."""
        bound = list(vm.memslots.bound_ranges(start, end))
        if to_private and self.profile.refuses_mapped_private:
            for ino, offset, length in bound:
                if self._first_mapped(ino, offset, offset + length) is not None:
                    raise GmemError(
                        errno.EINVAL,
                        f"memory attributes: the host still maps a page of inode {ino}",
                        function=PRIVATE_WHILE_MAPPED,
                    )
        convert = convert_private if to_private else convert_shared
        for ino, offset, length in bound:
            try:
                convert(vm.bound_files[ino], offset, length)
            except ConversionError:
                raise GmemError(
                    errno.EINVAL,
                    "memory attributes: a page is still in use by the host",
                    function=PRIVATE_WHILE_MAPPED,
                ) from None
            if self.profile.clears_on_conversion:
                _prepare_anew(vm.bound_files[ino], offset, offset + length)

    def _first_mapped(self, ino: int, start: int, end: int) -> "int | None":
        device = (os.major(self.mount_device), os.minor(self.mount_device))
        try:
            return first_mapped_page(os.getpid(), device, ino, start, end)  # the program descends from us
        except CheckIncomplete:
            return start  # could not look: refuse, as the kernel's check would

    def convert_file(self, call: Notification):
        """A conversion on a guest_memfd (RFC v2, v7): the daemon answers it; where the file is
        bound in an emulated slot that takes private pages from the file, the program's thread
        asks it, and the slots are laid out anew once it succeeded."""
        status = fd_stat(call.pid, call.fd)
        if status is None or status.st_dev != self.mount_device:
            return KERNEL
        vm = self.file_owner.get(status.st_ino)
        if vm is None or not any(slot.ino == status.st_ino for slot in vm.emulated.values()):
            return KERNEL

        def convert(takeover: ThreadTakeover, theirs: "list[int]") -> int:
            result = takeover.ioctl(call.fd, call.request, call.argument)  # the program's own struct, in and out
            if result == 0:
                self.layout.lay_out(takeover, theirs[0], vm, None)
            return result

        return InThread(convert, install=(vm.fd,))

    # ---- emulated slots ---------------------------------------------------------------

    def _takes_guest_memfd(self, vm: Vm) -> bool:
        return vm.private or self.profile.guest_memfd_in_plain_vms

    def _emulates(self, vm: Vm, region: MemoryRegion) -> bool:
        """A private VM's guest_memfd slots, and slots without userspace memory, are emulated."""
        return vm.private or not region.userspace_addr

    def _open_guest_view(self, ino: int) -> int:
        """The file's guest view, checked to be the daemon's (root's 0600 regular file on our mount)."""
        path = os.path.join(self.mount_path, os.fsdecode(GUEST_VIEW_PREFIX) + str(ino))
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        status = os.fstat(fd)
        if (status.st_uid, status.st_mode, status.st_dev) != (0, stat.S_IFREG | 0o600, self.mount_device):
            os.close(fd)
            raise OSError(errno.EACCES, f"{path} is not the daemon's guest view")
        return fd

    def private_mapping(self, call: Notification):
        """kvm_gmem_mmap(): a file without MMAP is ENODEV, a mapping that is not shared EINVAL.

        The VFS's own refusals come first (PROT_EXEC on the noexec mount is EPERM, length 0
        EINVAL), so those calls, and every mapping of another file, go to the kernel."""
        _address, length, prot, _flags, fd, _offset = call.args
        fd &= 0xFFFFFFFF
        status = fd_stat(call.pid, fd)
        if status is None or status.st_dev != self.mount_device or not stat.S_ISREG(status.st_mode):
            return KERNEL
        if not length or prot & mmap.PROT_EXEC:
            return KERNEL
        flags = parse_flags_value(os.getxattr(f"/proc/{call.pid}/fd/{fd}", XATTR_FLAGS))
        if not self.profile.mmap_allowed(flags):
            raise GmemError(errno.ENODEV, "mmap of a guest_memfd that may not be mapped", function="kvm_gmem_mmap")
        raise GmemError(errno.EINVAL, "MAP_PRIVATE mapping of a guest_memfd", function="kvm_gmem_mmap")

    # ---- helpers ----------------------------------------------------------------------

    def _read(self, call: Notification, size: int) -> bytes:
        """The call's struct, read as the kernel would (EFAULT where the program could not read it)."""
        data = read_memory(call.pid, call.argument, size)
        if not self.listener.still_waiting(call):
            raise OSError(errno.ESRCH, "the call went away")
        return data

    def _is_kvm_device(self, pid: int, fd: int) -> bool:
        status = fd_stat(pid, fd)
        return status is not None and stat.S_ISCHR(status.st_mode) and status.st_rdev == KVM_DEVICE_NUMBER

    def _native_vm_types(self) -> int:
        kvm = os.open(KVM_DEVICE, os.O_RDWR | os.O_CLOEXEC)
        try:
            return fcntl.ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_VM_TYPES)
        finally:
            os.close(kvm)

    def _known_vm(self, call: Notification) -> "Vm | None":
        return next((vm for vm in self.vms if same_file(vm.fd, call.pid, call.fd)), None)

    def _callers_vm(self, call: Notification) -> "Vm | None":
        """The VM a VM ioctl is made on, or None where the kernel answers as it stands: the fd is
        no VM's, or the caller is not in the VM's mm (kvm_vm_ioctl()'s EIO)."""
        if fd_target(call.pid, call.fd) != VM_FD:
            return None
        vm = self._vm(call)
        return vm if self._in_vms_mm(vm, call) else None

    def _vm(self, call: Notification) -> Vm:
        """The VM behind the call's fd; one we did not see created is taken as it comes."""
        vm = self._known_vm(call)
        if vm is None:
            vm = Vm(copy_fd(call.pid, call.fd), self._memslots(private=False))
            self.vms.append(vm)
        return vm

    def _memslots(self, private: bool) -> Memslots:
        """A new VM's memslots: private VMs and the profile's plain ones have one address space."""
        one = private or self.profile.single_address_space_in_plain_vms
        return Memslots(1 if one else self.address_spaces, self.profile.bound_range_errno)

    @staticmethod
    def _in_vms_mm(vm: Vm, call: Notification) -> bool:
        """Whether the caller runs in the mm the VM was created in (kvm_vm_ioctl(): EIO if not).
        A creator that is gone took its mm along; a thread group whose leader exited keeps it."""
        creator = vm.creator
        if creator is None:
            return True
        if not creator.alive():
            return False
        return same_mm(creator.pid, call.pid) or thread_group(call.pid) == creator.pid

    @staticmethod
    def _creates_slot(vm: Vm, region: MemoryRegion) -> bool:
        """Only a new slot binds a file (kvm_gmem_bind() for KVM_MR_CREATE): a deletion or a change
        never looks at guest_memfd, whatever that number names by now."""
        return bool(region.memory_size) and region.slot_key not in vm.memslots.slots

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

    def _forget_closed(self) -> None:
        """Let go of the VMs and files the program has let go of.

        Our copies (a VM's fd, a bound file's fd) would keep them alive, with the huge pages they
        reserve and an fd of ours each, until the run ends. The kernel keeps a VM while its fd or
        a guest_memfd of it is open (a vCPU keeps it too, but no trapped call can name it through
        one), and a guest_memfd while an fd or a mapping holds it (a binding does not). So at each
        trapped creation (VM, guest_memfd, memslot: what the held-back memory and fds would be
        missing for), the program's processes are looked at: their VM fds (kcmp against ours)
        and the inodes of our mount they hold open (fdinfo: no FUSE request) or mapped (maps,
        only if a file is not found open). An emulated slot keeps its file, as KVM holds the
        memory it maps. Exact for every fd in a process of the program; an fd on its way through
        a unix socket (SCM_RIGHTS) or held only outside the program is not seen.
        """
        if not self.vms:
            return
        processes = descendants(os.getpid(), leaving_out=self.others)
        held = held_files(processes, self.mount_id, self.mount_device, wanted=set(self.file_owner))
        for vm in list(self.vms):
            for ino in [ino for ino in vm.bound_files if ino not in held.inodes and not self._emulated_binds(vm, ino)]:
                os.close(vm.bound_files.pop(ino))
            files = {ino for ino, owner in self.file_owner.items() if owner is vm}
            for ino in files - held.inodes - set(vm.bound_files):
                del self.file_owner[ino]
            if not files & held.inodes and not any(same_file(vm.fd, pid, fd) for pid, fd in held.vm_fds):
                self._forget_vm(vm)

    @staticmethod
    def _emulated_binds(vm: Vm, ino: int) -> bool:
        return any(slot.ino == ino for slot in vm.emulated.values())

    def _forget_vm(self, vm: Vm) -> None:
        self.vms.remove(vm)
        for ino in [ino for ino, owner in self.file_owner.items() if owner is vm]:
            del self.file_owner[ino]
        for fd in vm.bound_files.values():
            os.close(fd)
        os.close(vm.fd)

    def close(self) -> None:
        for vm in list(self.vms):
            self._forget_vm(vm)


def _prepare_anew(fd: int, start: int, end: int) -> None:
    """RFC v1 30/39 (kvm_gmem_clear_prepared_vm): a converted page is prepared anew at its next
    use, i.e. zeroed, its allocation kept: punched, then what was allocated is allocated again."""
    allocated = parse_ranges(os.getxattr(fd, XATTR_ALLOCATED).decode())
    fallocate(fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, start, end - start)
    for low, high in allocated.overlapping(start, end):
        low, high = max(low, start), min(high, end)
        fallocate(fd, FALLOC_FL_KEEP_SIZE, low, high - low)


def _region_struct(region: MemoryRegion, version: int) -> bytes:
    """The region as KVM must get it: a guest_memfd slot is ordinary memory to KVM."""
    flags = region.flags & ~KVM_MEM_GUEST_MEMFD
    if version == 1:
        return struct.pack(
            KVM_USER_MEMORY_REGION_STRUCT,
            region.slot,
            flags,
            region.guest_phys_addr,
            region.memory_size,
            region.userspace_addr,
        )
    return struct.pack(
        KVM_USER_MEMORY_REGION2_STRUCT,
        region.slot,
        flags,
        region.guest_phys_addr,
        region.memory_size,
        region.userspace_addr,
        region.guest_memfd_offset,
        region.guest_memfd,
        0,
        *[0] * 14,
    )


def _mount_id(path: str) -> int:
    fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return mount_and_inode(os.getpid(), fd)[0]
    finally:
        os.close(fd)


def _kvm_address_spaces() -> int:
    try:
        kvm = os.open(KVM_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return 1
    try:
        return max(fcntl.ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_MULTI_ADDRESS_SPACE), 1)
    finally:
        os.close(kvm)
