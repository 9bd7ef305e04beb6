"""Batches: thousands of attempts through atp_batch_*()."""

from __future__ import annotations

import json
import os
import re
import threading
from typing import (Any, Callable, Dict, Iterable, Iterator, List, Mapping,
                    Optional, Sequence, Set, Union)

from . import errors
from ._core import Config, PathLike, _env_list, _raise_last, _strv, shell_join
from ._ffi import callback, ffi, lib, opt_text, text
from ._types import BatchProgress, BatchResult, Result

AttemptSpec = Mapping[str, Any]
_FIELDS = ("id", "command", "workdir", "template", "env", "timeout_s",
           "stdin", "backend")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}


def _seconds(v: Any, where: str) -> float:
    if isinstance(v, bool):
        raise errors.ConfigError(f"{where}: timeout_s is seconds, not {v!r}")
    if isinstance(v, (int, float)):
        return float(v)
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*(ms|s|m|h|)\s*", str(v))
    if not m:
        raise errors.ConfigError(f"{where}: timeout_s is seconds, such as 30, "
                                 "1.5, \"2m\" or \"1h\"")
    return float(m.group(1)) * _UNITS[m.group(2)]


def read_jsonl(path: PathLike) -> Iterator[Dict[str, Any]]:
    """The attempts of a JSONL file, as atp-run batch reads it: one object
    a line with "id", "command" (sh text or an argv list) and optionally
    "workdir" or "template", "env", "timeout_s", "stdin", "backend".
    Blank lines and lines starting with # are skipped."""
    with open(path, encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            try:
                o = json.loads(s)
            except json.JSONDecodeError as e:
                raise errors.ConfigError(f"{path}:{no}: not JSON: {e.msg}") \
                    from None
            if not isinstance(o, dict):
                raise errors.ConfigError(f"{path}:{no}: an attempt is a JSON "
                                         "object")
            o.setdefault("_where", f"{path}:{no}")
            yield o


class _Source:
    """Feeds attempts to the core one at a time, keeping each one's
    strings alive until the next call."""

    def __init__(self, attempts: Iterable[AttemptSpec]) -> None:
        self._it = iter(attempts)
        self._keep: List[Any] = []
        self.error: Optional[BaseException] = None
        self.seen: Set[str] = set()

    def fill(self, a: Any) -> int:
        self._keep = []
        try:
            spec = next(self._it)
        except StopIteration:
            return 0
        where = str(spec.get("_where", "attempt"))
        unknown = [k for k in spec if k not in _FIELDS and k != "_where"]
        if unknown:
            raise errors.ConfigError(
                f"{where}: unknown key {unknown[0]!r}; an attempt has "
                + ", ".join(_FIELDS))
        if "id" not in spec or "command" not in spec:
            raise errors.ConfigError(f"{where}: an attempt needs \"id\" and "
                                     "\"command\"")
        aid = str(spec["id"])
        if aid in self.seen:
            raise errors.ConfigError(f"{where}: attempt id {aid!r} is used "
                                     "twice; ids are unique in a batch")
        self.seen.add(aid)
        cmd = spec["command"]
        cmd = cmd if isinstance(cmd, str) else shell_join(list(cmd))
        if spec.get("workdir") and spec.get("template"):
            raise errors.ConfigError(f"{where}: attempt {aid} has both "
                                     "\"workdir\" and \"template\": give one")

        def s(v: Any) -> Any:
            if v is None:
                return ffi.NULL
            c = ffi.new("char[]", os.fsencode(v) if not isinstance(v, bytes)
                        else v)
            self._keep.append(c)
            return c
        a.id = s(aid)
        a.command = s(cmd)
        a.workdir = s(spec.get("workdir"))
        a.template_dir = s(spec.get("template"))
        a.stdin_path = s(spec.get("stdin"))
        a.backend = s(spec.get("backend"))
        a.env = _strv(_env_list(spec.get("env")), self._keep)
        a.timeout_s = _seconds(spec["timeout_s"], where) \
            if spec.get("timeout_s") is not None else 0.0
        return 1


@callback("int(atp_attempt *, void *)")
def _next_cb(a: Any, payload: Any) -> int:
    src = ffi.from_handle(payload)
    try:
        return int(src.fill(a))
    except BaseException as e:
        src.error = e
        return int(lib.ATP_E_CANCELLED)


class _Sink:
    def __init__(self, on_result: Optional[Callable[[BatchResult], Any]],
                 on_progress: Optional[Callable[[BatchProgress], Any]],
                 batch_ptr: List[Any]) -> None:
        self.results: List[BatchResult] = []
        self.on_result = on_result
        self.on_progress = on_progress
        self.error: Optional[BaseException] = None
        self.batch_ptr = batch_ptr

    def fail(self, e: BaseException) -> None:
        if self.error is None:
            self.error = e
            lib.atp_batch_cancel(self.batch_ptr[0])


@callback("void(const atp_batch_result *, void *)")
def _result_cb(r: Any, payload: Any) -> None:
    sink = ffi.from_handle(payload)
    try:
        def blob(p: Any, n: int) -> str:
            return str(ffi.buffer(p, n)[:].decode("utf-8", "replace")) \
                if p != ffi.NULL and n else ""
        res = Result._from_c(r.result, blob(r.stdout_text, r.stdout_len),
                             blob(r.stderr_text, r.stderr_len))
        br = BatchResult(id=text(r.id), result=res, backend=text(r.backend),
                         attempts=int(r.attempt), out_dir=opt_text(r.out_dir),
                         run_id=text(r.run_id), elapsed_s=float(r.elapsed_s))
        sink.results.append(br)
        if sink.on_result is not None:
            sink.on_result(br)
    except BaseException as e:
        sink.fail(e)


@callback("void(const atp_batch_progress *, void *)")
def _progress_cb(p: Any, payload: Any) -> None:
    sink = ffi.from_handle(payload)
    try:
        if sink.on_progress is not None:
            sink.on_progress(BatchProgress(int(p.done), int(p.running),
                                           int(p.failed), int(p.retried),
                                           float(p.elapsed_s), float(p.rate)))
    except BaseException as e:
        sink.fail(e)


class Batch:
    """A batch that can be cancelled from another thread while
    :meth:`run` works (``atp.batch()`` makes and runs one)."""

    def __init__(self, *, backend: Optional[str] = None,
                 config: Union[None, PathLike, Config] = None, jobs: int = 0,
                 rate: float = 0.0, retries: Optional[int] = None,
                 out_dir: Optional[PathLike] = None,
                 inline_limit: int = 64 * 1024,
                 on_result: Optional[Callable[[BatchResult], Any]] = None,
                 on_progress: Optional[Callable[[BatchProgress], Any]] = None
                 ) -> None:
        self.config = config if isinstance(config, Config) else Config(config)
        self._own_config = not isinstance(config, Config)
        self._keep: List[Any] = []
        self._ptr: List[Any] = [ffi.NULL]
        self._sink = _Sink(on_result, on_progress, self._ptr)
        self._sink_handle = ffi.new_handle(self._sink)
        o = ffi.new("atp_batch_opts *")
        o.struct_size = ffi.sizeof("atp_batch_opts")
        if backend is not None:
            b = ffi.new("char[]", backend.encode())
            self._keep.append(b)
            o.backend = b
        o.jobs = int(jobs)
        o.rate = float(rate)
        # retries: None the default (2), 0 none, N that many.
        o.retries = 0 if retries is None else (-1 if retries == 0
                                               else int(retries))
        if out_dir is not None:
            d = ffi.new("char[]", os.fsencode(out_dir))
            self._keep.append(d)
            o.out_dir = d
        o.inline_limit = int(inline_limit)
        o.on_result = _result_cb
        o.on_progress = _progress_cb
        o.payload = self._sink_handle
        out = ffi.new("atp_batch **")
        rc = lib.atp_batch_new(out, self.config._ptr(), o)
        if rc != 0:
            if self._own_config:
                self.config.close()
            _raise_last(rc, "batch")
        self._ptr[0] = out[0]
        self._lock = threading.Lock()

    def run(self, attempts: Union[PathLike, Iterable[AttemptSpec]]
            ) -> List[BatchResult]:
        """Run @attempts (a JSONL file, or dicts with the same keys) to the
        end; return every result in the order they finished.  An
        attempt's own failure is in its result, not raised; a bad
        attempt spec raises :class:`atp.ConfigError`; cancel() raises
        :class:`atp.Cancelled` (results so far in ``e.results``)."""
        if isinstance(attempts, (str, bytes, os.PathLike)):
            attempts = read_jsonl(attempts)
        src = _Source(attempts)
        h = ffi.new_handle(src)
        with self._lock:
            if self._ptr[0] == ffi.NULL:
                raise errors.ConfigError("the batch was closed")
            rc = lib.atp_batch_run(self._ptr[0], _next_cb, h)
        if src.error is not None:
            raise src.error
        if self._sink.error is not None:
            raise self._sink.error
        if rc == lib.ATP_E_CANCELLED:
            e = errors.Cancelled("the batch was cancelled", code="ATP_E_CANCELLED")
            e.results = self._sink.results  # type: ignore[attr-defined]
            raise e
        if rc != 0:
            _raise_last(rc, "batch")
        return self._sink.results

    def cancel(self) -> None:
        """Stop the batch: running attempts end as cancelled, their
        sandboxes torn down.  Safe from any thread."""
        if self._ptr[0] != ffi.NULL:
            lib.atp_batch_cancel(self._ptr[0])

    def close(self) -> None:
        with self._lock:
            if self._ptr[0] != ffi.NULL:
                lib.atp_batch_free(self._ptr[0])
                self._ptr[0] = ffi.NULL
        if self._own_config:
            self.config.close()

    def __enter__(self) -> "Batch":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def batch(attempts: Union[PathLike, Iterable[AttemptSpec]], *,
          backend: Optional[str] = None,
          config: Union[None, PathLike, Config] = None, jobs: int = 0,
          rate: float = 0.0, retries: Optional[int] = None,
          out_dir: Optional[PathLike] = None, inline_limit: int = 64 * 1024,
          on_result: Optional[Callable[[BatchResult], Any]] = None,
          on_progress: Optional[Callable[[BatchProgress], Any]] = None
          ) -> List[BatchResult]:
    """Run many attempts, each a command over its own directory, at most
    @jobs at once (0: 4), sandbox creations paced by @rate per second, an
    attempt tried again up to @retries times after an infrastructure
    failure (None: 2, 0: never).  @out_dir keeps OUT_DIR/ID/{stdout,
    stderr,wd}; each result keeps up to @inline_limit bytes of output.
    @on_result and @on_progress are called from this thread."""
    with Batch(backend=backend, config=config, jobs=jobs, rate=rate,
               retries=retries, out_dir=out_dir, inline_limit=inline_limit,
               on_result=on_result, on_progress=on_progress) as b:
        return b.run(attempts)
