"""The values the package hands out: results, events, batch results."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Union

from ._ffi import ffi, lib, text


class Status(str, enum.Enum):
    """How an operation ended: the core's status classes.  A member equals
    its name as a string (``Status.OK == "ok"``)."""

    OK = "ok"
    EXIT = "exit"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    INFRA_ERROR = "infra_error"
    INFRA_TIMEOUT = "infra_timeout"
    SANDBOX_DEAD = "sandbox_dead"
    TRANSFER_ERROR = "transfer_error"
    PROVISION_ERROR = "provision_error"
    IMAGE_UNAVAILABLE = "image_unavailable"
    MISSING_CREDENTIALS = "missing_credentials"
    UNSUPPORTED = "unsupported"
    CONFIG_ERROR = "config_error"

    def __str__(self) -> str:
        return self.value

    @property
    def exit_status(self) -> int:
        """atp-run's exit status for this class (-1 for "exit": the
        command's own)."""
        return int(lib.atp_status_exit_code(_STATUS_C[self]))


_STATUS_C: Dict[Status, int] = {}
_STATUS_PY: Dict[int, Status] = {}
for _v in range(int(lib.ATP_STATUS__COUNT)):
    _s = Status(text(lib.atp_status_name(_v)))
    _STATUS_C[_s] = _v
    _STATUS_PY[_v] = _s


def status_from_c(v: int) -> Status:
    return _STATUS_PY.get(int(v), Status.INFRA_ERROR)


@dataclass
class Result:
    """The outcome of a command or an operation: every field of the C
    ``atp_result`` plus, for a command, the output it printed.

    Fields that do not apply are 0 (seconds, bytes) or -1 (``cpu_s``,
    ``max_rss_bytes``, ``cost_usd``: unknown)."""

    status: Status = Status.OK
    exit_code: int = -1
    signal: int = 0
    duration_s: float = 0.0
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    message: str = ""
    provision_s: float = 0.0
    push_s: float = 0.0
    pull_s: float = 0.0
    push_bytes: int = 0
    pull_bytes: int = 0
    exec_s: float = 0.0
    sandbox_s: float = 0.0
    cpu_s: float = -1.0
    max_rss_bytes: int = -1
    cost_usd: float = -1.0
    image_id: str = ""
    queue_s: float = 0.0

    @property
    def ok(self) -> bool:
        """The command ran and exited 0."""
        return self.status == Status.OK

    @property
    def returncode(self) -> int:
        """The exit status as subprocess reports it: the exit code, or
        minus the signal that ended the command."""
        return -self.signal if self.signal else self.exit_code

    @classmethod
    def _from_c(cls, res: Any, stdout: str = "", stderr: str = "") -> "Result":
        return cls(
            status=status_from_c(res.status),
            exit_code=int(res.exit_code),
            signal=int(res.signal),
            duration_s=float(res.duration_s),
            stdout=stdout,
            stderr=stderr,
            stdout_truncated=bool(res.stdout_truncated),
            stderr_truncated=bool(res.stderr_truncated),
            stdout_bytes=int(res.stdout_bytes),
            stderr_bytes=int(res.stderr_bytes),
            message=text(res.message),
            provision_s=float(res.provision_s),
            push_s=float(res.push_s),
            pull_s=float(res.pull_s),
            push_bytes=int(res.push_bytes),
            pull_bytes=int(res.pull_bytes),
            exec_s=float(res.exec_s),
            sandbox_s=float(res.sandbox_s),
            cpu_s=float(res.cpu_s),
            max_rss_bytes=int(res.max_rss_bytes),
            cost_usd=float(res.cost_usd),
            image_id=text(res.image_id),
            queue_s=float(res.queue_s),
        )


def new_c_result() -> Any:
    """A fresh atp_result, set up as ATP_RESULT_INIT does."""
    res = ffi.new("atp_result *")
    lib.atp_result_init(res, ffi.sizeof("atp_result"))
    return res


FieldValue = Union[str, int, float, bool, None]


@dataclass
class Event:
    """A lifecycle event of a session ("starting", "provisioned", "exec",
    "closed", ...) and its fields."""

    type: str
    fields: Dict[str, FieldValue] = field(default_factory=dict)

    @classmethod
    def _from_c(cls, ev: Any) -> "Event":
        fields: Dict[str, FieldValue] = {}
        for i in range(int(ev.n_fields)):
            f = ev.fields[i]
            key = text(f.key)
            if f.type == lib.ATP_FIELD_STR:
                fields[key] = None if f.s == ffi.NULL else text(f.s)
            elif f.type == lib.ATP_FIELD_INT:
                fields[key] = int(f.i)
            elif f.type == lib.ATP_FIELD_DOUBLE:
                fields[key] = float(f.d)
            elif f.type == lib.ATP_FIELD_BOOL:
                fields[key] = bool(f.i)
        return cls(text(ev.type), fields)


@dataclass
class BatchResult:
    """One finished attempt of a batch."""

    id: str
    result: Result
    backend: str = ""
    attempts: int = 1
    out_dir: Optional[str] = None
    run_id: str = ""
    elapsed_s: float = 0.0

    @property
    def status(self) -> Status:
        return self.result.status

    @property
    def stdout(self) -> str:
        return self.result.stdout

    @property
    def stderr(self) -> str:
        return self.result.stderr


@dataclass
class BatchProgress:
    """Counts of a running batch."""

    done: int
    running: int
    failed: int
    retried: int
    elapsed_s: float
    rate: float
