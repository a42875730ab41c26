"""One trace event, as a JSON line and as the line a person reads."""

import json
from dataclasses import dataclass, field, fields
from errno import errorcode
from typing import Any, ClassVar


@dataclass(frozen=True)
class TraceEvent:
    """Something that happened to guest_memfd memory: an intercepted ioctl, or what the daemon did.

    args, result, rule and file are words (decode.py makes them); detail holds JSON values
    (numbers, strings, lists, dicts with string keys) such as pages allocated or pool counters.
    """

    time: float  # time.monotonic() when it happened (an ioctl: when it returned)
    source: str  # "run" (the supervisor) or "daemon"
    what: str  # "KVM_CREATE_GUEST_MEMFD", "fallocate", "convert_private", "fault", "lost", ...
    pid: int = 0
    tid: int = 0
    args: str = ""
    result: str = ""  # "fd 7", "0", "EINVAL"
    duration: "float | None" = None  # seconds the call took, None for what is not a call
    errno: int = 0
    rule: str = ""  # the rule the call broke, in words
    function: str = ""  # the series' function that makes that refusal
    file: str = ""
    detail: "dict[str, Any]" = field(default_factory=dict, hash=False)

    _FIELDS: ClassVar["frozenset[str]"]
    _ORDER: ClassVar["tuple[str, ...]"]

    def to_json(self) -> str:
        """One line, no newline. The fields by name, not dataclasses.asdict(): that deep-copies
        detail first, 4x the cost of encoding, paid at every event while someone reads."""
        return json.dumps({name: getattr(self, name) for name in self._ORDER}, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: "str | bytes") -> "TraceEvent":
        """The event of a JSON line; keys this version does not know are ignored. ValueError if not one."""
        try:
            record = json.loads(line)
            return cls(**{key: value for key, value in record.items() if key in cls._FIELDS})
        except (TypeError, AttributeError) as error:  # not an object, or without time/source/what
            raise ValueError(f"not a trace event: {line[:80]!r}") from error

    @property
    def error_name(self) -> str:
        return errorcode.get(self.errno, f"errno {self.errno}") if self.errno else ""

    def text(self, start: float) -> str:
        """The human line: time since start, source, pid/tid, what, file, args, -> result, detail, <duration>."""
        caller = f"{self.pid}/{self.tid}" if self.tid and self.tid != self.pid else str(self.pid)
        words = [f"{self.time - start:11.6f}", f"{self.source:<6}", caller, self.what]
        if self.file:
            words.append(f"file={self.file}")
        if self.args:
            words.append(self.args)
        result = self.result or self.error_name
        if result:
            if self.errno and self.rule:
                result += f": {self.rule}"
            if self.errno and self.function:
                result += f" ({self.function})"
            words.append(f"-> {result}")
        if self.detail:
            words.append(
                "[" + " ".join(f"{key}={_detail_words(key, value)}" for key, value in self.detail.items()) + "]"
            )
        if self.duration is not None:
            words.append(f"<{self.duration:.6f}>")
        return " ".join(words)


TraceEvent._ORDER = tuple(item.name for item in fields(TraceEvent))
OFFSETS = frozenset({"page", "error_offset"})  # file offsets: hex, as the ioctls' arguments are written


def _detail_words(key: str, value: Any) -> str:
    if isinstance(value, dict):  # the pool's counters: {total=8,free=6,reserved=2,surplus=0}
        return "{" + ",".join(f"{name}={_detail_words(name, item)}" for name, item in value.items()) + "}"
    return f"{value:#x}" if key in OFFSETS and isinstance(value, int) else str(value)


TraceEvent._FIELDS = frozenset(TraceEvent._ORDER)
