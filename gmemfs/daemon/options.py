"""Mount options (-o name[=value],...), checked before anything is mounted."""

from dataclasses import dataclass

from ..base.units import format_size, parse_size
from ..kernel.uapi import (
    ABI_PROFILES,
    BASE_PAGE_SIZE,
    DEFAULT_ABI,
    U64_MAX,
    AbiProfile,
    flags_for_page_size,
    page_order_for_page_size,
)
from .faults import FaultRule, parse_fault

PAGE_SIZES = {"4K": BASE_PAGE_SIZE, "2M": 2 << 20, "1G": 1 << 30}

# Options of mount(8) and fuse(8) that gmemfs passes to the kernel unchanged.
FUSE_OPTIONS = frozenset({"allow_other", "default_permissions", "rw", "nosuid", "nodev", "noexec", "noatime"})
# Options mount(8) hands to every helper, meaningless here. relatime and nodiratime hold already
# (FUSE leaves atime to the daemon, which sets it only when asked), and libfuse 3.14 refuses them.
IGNORED_OPTIONS = frozenset(
    {"suid", "dev", "exec", "auto", "noauto", "user", "nouser", "users", "_netdev", "nofail", "defaults"}
    | {"relatime", "nodiratime"}
)
# The largest valid value of each count: uid_t and gid_t without (uid_t)-1, which means "no id"
# (tmpfs refuses it as uid=); statfs carries max_files in 64 bits.
COUNT_MAXIMUM = {"uid": (1 << 32) - 2, "gid": (1 << 32) - 2, "max_files": U64_MAX, "max_huge_pages": U64_MAX}


class OptionError(ValueError):
    """A mount option that gmemfs cannot honour; the message is for the user."""


# After answering a request, look for the next one this long before sleeping: waking a sleeping
# daemon costs a VM tens of microseconds per request (pyfuse3's main(busy_poll=)).
DEFAULT_BUSY_POLL_US = 50
MAX_BUSY_POLL_US = 10_000


@dataclass
class MountOptions:
    page_size: int = BASE_PAGE_SIZE  # the page size of new files
    abi: AbiProfile = DEFAULT_ABI
    default_permissions: bool = True
    allow_other: bool = False
    debug: bool = False
    cache_timeout: float = 1.0  # seconds the kernel may cache names and attributes
    busy_poll_us: int = DEFAULT_BUSY_POLL_US
    faults: tuple[FaultRule, ...] = ()  # failures to inject (-o fail=...)
    max_huge_pages: "int | None" = None  # huge pages the mount's files may reserve in all
    max_size: "int | None" = None  # bytes the mount's 4 KiB files may hold in all
    max_files: "int | None" = None  # files and directories the mount may hold
    root_uid: "int | None" = None  # owner and mode of the mount's root (default: the daemon's, 0755)
    root_gid: "int | None" = None
    root_mode: int = 0o755
    extra_fuse_options: tuple[str, ...] = ()

    @property
    def default_flags(self) -> int:
        """The creation flags a new file starts with."""
        return flags_for_page_size(self.page_size, self.abi)

    @property
    def default_page_order(self) -> int:
        """The page_order a new file starts with (hugetlb-2025; 0 elsewhere)."""
        return page_order_for_page_size(self.page_size, self.abi)

    @property
    def backing_page_size(self) -> int:
        """Huge pages behind every file of an ABI without hugetlb (upstream,pagesize=2M); else 4 KiB."""
        return BASE_PAGE_SIZE if self.abi.hugetlb else self.page_size

    def fuse_options(self) -> set[str]:
        # noexec as the kernel's internal guest_memfd mount (MNT_NOEXEC): PROT_EXEC mappings are EPERM.
        options = {"fsname=gmemfs", "subtype=gmemfs", "noexec", *self.extra_fuse_options}
        if self.default_permissions:
            options.add("default_permissions")
        if self.allow_other:
            options.add("allow_other")
        if self.debug:
            options.add("debug")
        return options

    def describe(self) -> str:
        faults = "".join(f", injecting failures: {rule}" for rule in self.faults)
        return f"pagesize={format_size(self.page_size)},abi={self.abi.name}{faults}"


def parse_mount_options(option_strings: list[str]) -> MountOptions:
    """Turn the values of every -o into MountOptions; OptionError names the bad one."""
    options = MountOptions()
    extra = []
    for option_string in option_strings:
        for item in filter(None, option_string.split(",")):
            name, has_value, value = item.partition("=")
            if name == "pagesize":
                options.page_size = _parse_page_size(value)
            elif name == "abi":
                if value not in ABI_PROFILES:
                    raise OptionError(f"abi={value}: choose one of {', '.join(ABI_PROFILES)}")
                options.abi = ABI_PROFILES[value]
            elif name == "default_permissions" and not has_value:
                options.default_permissions = True
            elif name == "nodefault_permissions" and not has_value:
                options.default_permissions = False
            elif name == "allow_other" and not has_value:
                options.allow_other = True
            elif name == "fail":
                try:
                    options.faults += (parse_fault(value),)
                except ValueError as error:
                    raise OptionError(str(error)) from None
            elif name == "cache_timeout":
                options.cache_timeout = _parse_timeout(value)
            elif name == "busy_poll":
                options.busy_poll_us = _parse_busy_poll(value)
            elif name in ("max_huge_pages", "max_files", "uid", "gid"):
                number = _parse_count(item, value, COUNT_MAXIMUM[name])
                if name in ("uid", "gid"):
                    setattr(options, f"root_{name}", number)
                else:
                    setattr(options, name, number)
            elif name == "max_size":
                options.max_size = _parse_byte_count(item, value)
            elif name == "mode":
                options.root_mode = _parse_mode(value)
            elif name == "debug" and not has_value:
                options.debug = True
            elif name in FUSE_OPTIONS and not has_value:
                extra.append(name)
            elif name in IGNORED_OPTIONS and not has_value:
                continue
            else:
                raise OptionError(f"unknown mount option {item!r}")
    options.extra_fuse_options = tuple(extra)
    if options.allow_other and not options.default_permissions:
        raise OptionError(
            "allow_other with nodefault_permissions: gmemfs checks no mode bits itself, so every user "
            "could change every file; keep default_permissions"
        )
    return options


def _parse_page_size(value: str) -> int:
    try:
        size = parse_size(value)
    except ValueError:
        size = None
    if size not in PAGE_SIZES.values():
        raise OptionError(f"pagesize={value}: choose one of {', '.join(PAGE_SIZES)}")
    return size


def _decimal(value: str) -> bool:
    """Digits 0-9 only: str.isdigit() also takes '²', which int() refuses."""
    return value.isascii() and value.isdigit()


def _parse_count(item: str, value: str, maximum: int) -> int:
    if not _decimal(value) or int(value) > maximum:
        raise OptionError(f"{item}: expected a whole number from 0 to {maximum}")
    return int(value)


def _parse_byte_count(item: str, value: str) -> int:
    try:
        return parse_size(value)
    except ValueError:
        raise OptionError(f"{item}: expected a size (bytes, or 512M, 4G...)") from None


def _parse_mode(value: str) -> int:
    try:
        mode = int(value, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o7777:
        raise OptionError(f"mode={value}: expected octal permission bits (1777, 755...)")
    return mode


def _parse_timeout(value: str) -> float:
    try:
        timeout = float(value)
    except ValueError:
        timeout = -1.0
    if not 0 <= timeout <= 3600:
        raise OptionError(f"cache_timeout={value}: seconds, from 0 to 3600")
    return timeout


def _parse_busy_poll(value: str) -> int:
    if not _decimal(value) or int(value) > MAX_BUSY_POLL_US:
        raise OptionError(f"busy_poll={value}: microseconds, from 0 (never poll) to {MAX_BUSY_POLL_US}")
    return int(value)
