"""A drop-in backend for harnesses written against open-atp's
``ComputeBackend`` contract.

    from atp.compat import open_atp
    backend = open_atp.AtpBackend(backend="docker")
    with backend.session(Path("proj"), timeout_s=600) as s:
        h = s.exec("lake build", timeout_s=600)
        for line in h.stream():
            print(line)
        result = h.wait()          # CommandResult(exit_code, stdout, ...)
        s.sync_out()

Method for method and exception for exception as open-atp's
``open_atp.backends.base``.  The package does not depend on open-atp: when
it is importable, the classes here subclass its ``ComputeBackend``,
``ComputeSession`` and ``CommandHandle``, results are its
``CommandResult``, and the exceptions subclass its exception types (and
atp's), so ``except open_atp.backends.base.ExecTimeout`` and
``except atp.InfraTimeout`` both catch a stalled backend operation.

============================  =====================================
atp status class              exception raised here
============================  =====================================
timeout                       CommandTimeout (``result``: the partial
                              CommandResult)
infra_timeout                 ExecTimeout
sandbox_dead                  SandboxDead
transfer_error                TransferError
provision_error               ProvisionError
image_unavailable             ImageUnavailable (a ProvisionError)
missing_credentials           MissingCredentials (a ComputeError)
infra_error                   ComputeError
cancelled                     Cancelled (a KeyboardInterrupt)
unsupported, config_error     atp.Unsupported, atp.ConfigError
============================  =====================================
"""

from __future__ import annotations

import abc
import re
from dataclasses import dataclass
from pathlib import Path
from typing import (Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple,
                    Type)

import atp
from atp import errors as _atp_errors

try:  # the real thing, when the harness has it
    from open_atp.backends import base as _oa
except ImportError:  # pragma: no cover - depends on the environment
    _oa = None

#: True when open-atp was importable and the classes below subclass its.
HAVE_OPEN_ATP = _oa is not None

WORKDIR_MOUNT = "/workspace/wd"
TIMEOUT_EXIT_CODE = 124


def _oa_type(name: str) -> Tuple[type, ...]:
    t = getattr(_oa, name, None) if _oa is not None else None
    return (t,) if isinstance(t, type) else ()


def _exc_init(self: BaseException, message: str = "", result: Any = None,
              code: Optional[str] = None) -> None:
    BaseException.__init__(self, message)
    self.message = message  # type: ignore[attr-defined]
    self.result = result  # type: ignore[attr-defined]
    self.code = code  # type: ignore[attr-defined]


def _make_exc(name: str, own_bases: Tuple[type, ...], atp_base: type,
              doc: str) -> type:
    bases = _oa_type(name) or own_bases
    # Several parents may already be in the MRO through another: keep the
    # order C3 accepts (open-atp's or ours first, then atp's).
    cls = type(name, bases + (atp_base,),
               {"__init__": _exc_init, "__doc__": doc,
                "__module__": __name__})
    return cls


ComputeError: Type[Exception] = _make_exc(
    "ComputeError", (RuntimeError,), _atp_errors.ComputeError,
    "An infrastructure failure (not the command's): parent of the others.")
ExecTimeout = _make_exc("ExecTimeout", (ComputeError,),
                        _atp_errors.InfraTimeout,
                        "A backend operation stalled past its deadline.")
SandboxDead = _make_exc("SandboxDead", (ComputeError,),
                        _atp_errors.SandboxDead,
                        "The sandbox was terminated mid-run.")
TransferError = _make_exc("TransferError", (ComputeError,),
                          _atp_errors.TransferError,
                          "Pushing or pulling the workdir failed.")
ProvisionError = _make_exc("ProvisionError", (ComputeError,),
                           _atp_errors.ProvisionError,
                           "The sandbox never came up.")
ImageUnavailable = _make_exc("ImageUnavailable", (ProvisionError,),
                             _atp_errors.ImageUnavailable,
                             "The image was not built or published.")
MissingCredentials = _make_exc("MissingCredentials", (ComputeError,),
                               _atp_errors.MissingCredentials,
                               "The backend's credentials are missing.")
CommandTimeout = _make_exc(
    "CommandTimeout", (), _atp_errors.CommandTimeout,
    "The command used up its budget; ``result`` is the partial "
    "CommandResult.")
Cancelled = _make_exc("Cancelled", (KeyboardInterrupt,),
                      _atp_errors.Cancelled,
                      "The command or session was cancelled.")

_BY_STATUS: Dict[str, type] = {
    "timeout": CommandTimeout,
    "infra_timeout": ExecTimeout,
    "sandbox_dead": SandboxDead,
    "transfer_error": TransferError,
    "provision_error": ProvisionError,
    "image_unavailable": ImageUnavailable,
    "missing_credentials": MissingCredentials,
    "infra_error": ComputeError,
    "cancelled": Cancelled,
}


if _oa is not None and isinstance(getattr(_oa, "CommandResult", None), type):
    CommandResult = _oa.CommandResult
else:
    @dataclass
    class CommandResult:  # type: ignore[no-redef]
        """What a command left: exit code, its output, its wall time."""
        exit_code: int
        stdout: str
        stderr: str
        duration_s: float


def _to_command_result(r: "atp.Result") -> Any:
    # stdout without the last newline, as open-atp joins its lines.
    out = r.stdout[:-1] if r.stdout.endswith("\n") else r.stdout
    return CommandResult(exit_code=r.exit_code if r.exit_code >= 0
                         else 128 + r.signal if r.signal else -1,
                         stdout=out, stderr=r.stderr,
                         duration_s=r.duration_s)


def _translate(e: "atp.Error") -> BaseException:
    """The open-atp exception for an atp one (atp's own for the classes
    open-atp has no name for)."""
    cls = _BY_STATUS.get(e.status)
    if cls is None:
        return e
    result = _to_command_result(e.result) if e.result is not None else None
    if result is not None and e.status == "timeout":
        # open-atp's contract: a command stopped on its budget exits 124,
        # whatever signal the kill schedule took.
        result.exit_code = TIMEOUT_EXIT_CODE
    out: BaseException = cls(e.message, result, e.code)
    out.__cause__ = e
    return out


def _call(fn: Any, *a: Any, **kw: Any) -> Any:
    try:
        return fn(*a, **kw)
    except atp.Error as e:
        if e.status in _BY_STATUS and not isinstance(e, tuple(
                _BY_STATUS.values())):
            raise _translate(e) from e
        raise


def _abc_base(name: str) -> Tuple[type, ...]:
    return _oa_type(name) or (abc.ABC,)


class AtpCommandHandle(*_abc_base("CommandHandle")):  # type: ignore[misc]
    """A running command: ``stream()`` its stdout lines, ``wait()`` for the
    CommandResult.  The handle owns no teardown (the session does)."""

    def __init__(self, command: "atp.Command") -> None:
        self._cmd = command

    def stream(self) -> Iterator[str]:
        """stdout lines, newline stripped, as they arrive."""
        return self._cmd.stream()

    def wait(self) -> Any:
        """Drain to the end; the CommandResult.  Raises CommandTimeout
        (``result``: the partial output) when the budget ran out."""
        return _to_command_result(_call(self._cmd.wait))

    def cancel(self) -> None:
        """Stop the command (and the session's later ones)."""
        self._cmd.cancel()

    @property
    def atp_command(self) -> "atp.Command":
        return self._cmd


class AtpSession(*_abc_base("ComputeSession")):  # type: ignore[misc]
    """A persistent sandbox over a workdir, exec'd many times, torn down
    once."""

    def __init__(self, session: "atp.Session", timeout_s: Optional[float]
                 ) -> None:
        self._s = session
        self._timeout_s = timeout_s

    def exec(self, command: str, *, timeout_s: Optional[float] = None,
             env: Optional[Mapping[str, str]] = None) -> AtpCommandHandle:
        t = timeout_s if timeout_s is not None else self._timeout_s
        return AtpCommandHandle(_call(self._s.exec, command, timeout=t,
                                      env=dict(env) if env else None))

    def sync_out(self) -> None:
        """Pull the sandbox workdir to the host (no-op when shared)."""
        _call(self._s.sync_out)

    def sync_in(self) -> None:
        """Push the host workdir in (no-op when shared)."""
        _call(self._s.sync_in)

    def close(self) -> None:
        """Tear down; idempotent."""
        _call(self._s.close)

    def __enter__(self) -> "AtpSession":
        return self

    def __exit__(self, et: Any, ev: Any, tb: Any) -> None:
        if et is None:
            self.close()
        else:
            try:
                self.close()
            except Exception:
                pass

    @property
    def atp_session(self) -> "atp.Session":
        return self._s


_DUR = re.compile(r"\s*([0-9.]+)\s*(ms|s|m|h)?\s*")


def _seconds(v: Optional[str], default: float) -> float:
    m = _DUR.fullmatch(v) if v else None
    if not m:
        return default
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600,
                                None: 1}[m.group(2)]


class AtpBackend(*_abc_base("ComputeBackend")):  # type: ignore[misc]
    """open-atp's ComputeBackend over atp: ``backend`` names the atp
    backend instance ("local", "docker", "modal", ... ; None: the
    configured one), ``config`` an atp.ini (None: the usual search).
    ``env`` is merged under every session's.  ``image`` is accepted for
    signature compatibility; atp takes the image from [image] and the
    backend's section."""

    container_home = "/root"

    def __init__(self, *, backend: Optional[str] = None,
                 config: Optional[Any] = None, image: Any = None,
                 env: Optional[Mapping[str, str]] = None,
                 timeout_s: Optional[float] = None) -> None:
        self._be: atp.Backend = _call(atp.open, backend, config)
        self.image = image
        self.env = dict(env or {})
        self.timeout_s = timeout_s

    @property
    def name(self) -> str:
        return self._be.name

    @property
    def wallclock_overhead_s(self) -> float:
        """Time beyond a command's budget a call may take: provisioning,
        the kill grace, transfers and teardown, from the configuration."""
        cfg = self._be.config

        def get(key: str, default: float) -> float:
            return _seconds(cfg.get("atp", key), default)
        t = get("provision_timeout_s", 600) + get("close_timeout_s", 60) + \
            get("kill_grace_s", 10) + get("drain_grace_s", 2)
        if "isolated_fs" in self._be.capabilities:
            t += 2 * get("transfer_timeout_s", 600) + \
                get("warmup_timeout_s", 300)
        return float(t)

    def session(self, workdir: Path, *, timeout_s: Optional[float] = None,
                env: Optional[Mapping[str, str]] = None,
                mounts: Optional[Sequence[Tuple[Any, Any]]] = None
                ) -> AtpSession:
        """A session over @workdir; env and mounts are pinned now."""
        merged = dict(self.env)
        merged.update(env or {})
        t = timeout_s if timeout_s is not None else self.timeout_s
        s = _call(self._be.session, workdir, env=merged or None,
                  mounts=list(mounts) if mounts else None, timeout=t)
        return AtpSession(s, t)

    def run(self, workdir: Path, command: str, *,
            timeout_s: Optional[float] = None,
            env: Optional[Mapping[str, str]] = None,
            mounts: Optional[Sequence[Tuple[Any, Any]]] = None) -> Any:
        """One command in a fresh sandbox; the workdir's changes are
        pulled back before it is torn down."""
        merged = dict(self.env)
        merged.update(env or {})
        r = _call(self._be.run, command, workdir, timeout=timeout_s,
                  env=merged or None,
                  mounts=list(mounts) if mounts else None)
        return _to_command_result(r)

    def test(self) -> bool:
        """True when a trivial command runs end to end."""
        try:
            return bool(self._be.run("true", timeout=60).exit_code == 0)
        except atp.Error:
            return False

    def close(self) -> None:
        self._be.close()

    @property
    def atp_backend(self) -> "atp.Backend":
        return self._be


__all__ = ["AtpBackend", "AtpSession", "AtpCommandHandle", "CommandResult",
           "ComputeError", "ExecTimeout", "SandboxDead", "TransferError",
           "ProvisionError", "ImageUnavailable", "MissingCredentials",
           "CommandTimeout", "Cancelled", "HAVE_OPEN_ATP"]
