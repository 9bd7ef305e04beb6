"""Configurations, backends, sessions and commands over libatp."""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
import weakref
from typing import (Any, AsyncIterator, Callable, Dict, Iterator, List, Mapping, Optional,
                    Sequence, Set, Tuple, Union)

from . import errors
from ._ffi import callback, ffi, lib, opt_text, text
from ._types import Event, Result, Status, new_c_result

PathLike = Union[str, "os.PathLike[str]"]
Command_ = Union[str, Sequence[str]]
LineCallback = Callable[[str], Any]
LOG_LEVELS = {"error": 0, "warn": 1, "info": 2, "debug": 3}


# --------------------------------------------------------------- errors

def _raise_last(rc: int, what: str) -> "errors.Error":
    """The exception for a failed call that has no atp_result."""
    msg = text(lib.atp_last_error()) or text(lib.atp_strerror(rc))
    status = text(lib.atp_status_name(lib.atp_status_from_error(rc)))
    raise errors.for_status(status)(
        msg if what in msg else f"{what}: {msg}" if what else msg,
        code=text(lib.atp_err_name(rc)))


def _error_for(rc: int, res: Any, result: Result) -> errors.Error:
    """The exception for a failed call that filled an atp_result."""
    status = result.status
    if status in (Status.OK, Status.EXIT) and rc != 0:
        status = Status(text(lib.atp_status_name(
            lib.atp_status_from_error(rc))))
        result.status = status
    msg = result.message or (text(lib.atp_last_error()) if rc else "") or \
        (text(lib.atp_strerror(rc)) if rc else str(status))
    return errors.for_status(str(status))(
        msg, result=result, code=text(lib.atp_err_name(rc)) if rc else None)


def _strv(items: Optional[Sequence[str]], keep: List[Any]) -> Any:
    """A NULL-terminated char *[] of @items (NULL for None); the cdata
    that must stay alive go into @keep."""
    if items is None:
        return ffi.NULL
    cs = [ffi.new("char[]", os.fsencode(s)) for s in items]
    keep.extend(cs)
    arr = ffi.new("char *[]", cs + [ffi.NULL])
    keep.append(arr)
    return arr


def _env_list(env: Optional[Mapping[str, str]]) -> Optional[List[str]]:
    if env is None:
        return None
    out = []
    for k, v in env.items():
        if not k or "=" in k:
            raise errors.ConfigError(
                f"environment variable name {k!r} is empty or has '='")
        out.append(f"{k}={v}")
    return out


def _mount_list(mounts: Optional[Sequence[Any]]) -> Optional[List[str]]:
    """Mounts as "HOST:DEST[:rw]": strings as they are, or (host, dest)
    and (host, dest, "rw") tuples."""
    if mounts is None:
        return None
    out = []
    for m in mounts:
        if isinstance(m, str):
            out.append(m)
        else:
            out.append(":".join(os.fspath(p) for p in m))
    return out


def shell_join(argv: Sequence[str]) -> str:
    """The command text that runs @argv as the sandbox's process itself
    (quoted for POSIX sh), as ``exec()`` does for a list."""
    if isinstance(argv, (str, bytes)):
        raise TypeError("shell_join takes a list of words, not a string")
    if not argv:
        raise errors.ConfigError("an argv command needs at least one word")
    keep: List[Any] = []
    p = lib.atp_shell_exec_join(_strv(list(argv), keep))
    if p == ffi.NULL:
        raise MemoryError("atp_shell_exec_join")
    try:
        s: str = ffi.string(p).decode("utf-8", "surrogateescape")
        return s
    finally:
        lib.free(p)


def _command_text(command: Command_) -> str:
    if isinstance(command, str):
        if not command:
            raise errors.ConfigError("the command is empty")
        return command
    return shell_join(command)


# --------------------------------------------------------------- C objects

_owner_lock = threading.RLock()


class _Owned:
    """A C object and what must be freed before it: a configuration owns
    its backends, a backend its sessions.  free() frees the children
    first, so that the core's order holds whatever order Python collects
    the wrappers in."""

    def __init__(self, ptr: Any, kind: str, name: str,
                 parent: "Optional[_Owned]" = None) -> None:
        self.ptr = ptr
        self.kind = kind
        self.name = name
        self.parent = parent
        self.children: Set[_Owned] = set()
        if parent is not None:
            with _owner_lock:
                parent.children.add(self)

    def _free_c(self) -> None:  # overridden
        raise NotImplementedError

    def free(self, warn: bool = False) -> None:
        with _owner_lock:
            if self.ptr is None:
                return
            children = list(self.children)
        for c in children:
            c.free(warn)
        with _owner_lock:
            if self.ptr is None:
                return
            if warn:
                warnings.warn(f"atp {self.kind} {self.name} was not closed; "
                              "closing it now (use a with block or close())",
                              ResourceWarning, stacklevel=2)
            self._free_c()
            self.ptr = None
            if self.parent is not None:
                self.parent.children.discard(self)

    def __hash__(self) -> int:
        return id(self)


class _ConfigH(_Owned):
    def _free_c(self) -> None:
        lib.atp_config_free(self.ptr)


class _BackendH(_Owned):
    def _free_c(self) -> None:
        lib.atp_backend_free(self.ptr)


class _SessionH(_Owned):
    """A session's C handle, plus what closing needs to know: the command
    running on it (its thread), so that teardown cancels and waits for it
    before the core sees a second call on the session."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        # The session's event proxy handle: alive as long as C is.
        self.proxy_handle: Any = None
        # One call on the session at a time, in the order they were asked
        # for: a ticket each, served in turn.
        self._turn = threading.Condition()
        self._next_ticket = 0
        self._serving = 0
        # Threads of the commands started and not ended, in order.
        self.threads: List[threading.Thread] = []
        self.close_result: Optional[Result] = None
        self.close_error: Optional[errors.Error] = None
        # Set by cancel(): a command waiting for its reader gives up.
        self.cancelled = False

    def ticket(self) -> int:
        with self._turn:
            t = self._next_ticket
            self._next_ticket += 1
            return t

    @contextlib.contextmanager
    def serve(self, ticket: Optional[int] = None) -> Iterator[None]:
        """Wait for @ticket's turn (a new ticket: after every call asked
        for so far), hold the session during the block."""
        if ticket is None:
            ticket = self.ticket()
        try:
            with self._turn:
                while self._serving != ticket:
                    self._turn.wait()
            yield
        finally:
            with self._turn:
                self._serving += 1
                self._turn.notify_all()

    def cancel(self) -> None:
        self.cancelled = True
        with _owner_lock:
            if self.ptr is not None:
                lib.atp_session_cancel(self.ptr)

    def close(self) -> None:
        """atp_session_close once, after cancelling a running command."""
        me = threading.current_thread()
        pending = [t for t in list(self.threads) if t is not me]
        if any(t.is_alive() for t in pending):
            self.cancel()
        for t in pending:
            t.join()
        with self.serve():
            if self.ptr is None or self.close_result is not None:
                return
            res = new_c_result()
            rc = lib.atp_session_close(self.ptr, res)
            r = Result._from_c(res)
            self.close_result = r
            if rc != 0:
                self.close_error = _error_for(rc, res, r)

    def _free_c(self) -> None:
        # free() holds _owner_lock: close first, outside of it, when this
        # is the collector's call (close() was not called).
        lib.atp_session_free(self.ptr)

    def free(self, warn: bool = False) -> None:
        if self.ptr is None:
            return
        if warn and self.close_result is None:
            warnings.warn(f"atp session {self.name} was not closed; closing "
                          "it now (use a with block or close())",
                          ResourceWarning, stacklevel=2)
        self.close()
        super().free(False)


# --------------------------------------------------------------- config

@callback("void(int, const char *, const char *, void *)")
def _log_cb(level: int, origin: Any, message: Any, payload: Any) -> None:
    try:
        fn = ffi.from_handle(payload)
        fn(int(level), text(origin), text(message))
    except BaseException:  # never into C
        pass


class Config:
    """A loaded configuration (an atp.ini, or the built-in defaults).

    ``Config()`` searches as atp-run does: $ATP_CONFIG, ./atp.ini,
    $XDG_CONFIG_HOME/atp/atp.ini, /etc/atp/atp.ini; with none the local
    backend is used.  ``Config(path)`` reads that file and
    ``Config.from_string(text)`` parses text."""

    def __init__(self, path: Optional[PathLike] = None, *,
                 _text: Optional[str] = None, _name: str = "<string>",
                 log: Optional[Callable[[int, str, str], Any]] = None,
                 log_level: Union[int, str] = "warn") -> None:
        out = ffi.new("atp_config **")
        if _text is not None:
            rc = lib.atp_config_load_string(out, _text.encode(),
                                            _name.encode())
        else:
            rc = lib.atp_config_load(
                out, ffi.NULL if path is None else os.fsencode(path))
        if rc != 0:
            _raise_last(rc, "")
        self._h = _ConfigH(out[0], "configuration",
                           str(path) if path else _name)
        self._log_handle: Any = None
        weakref.finalize(self, self._h.free)
        if log is not None:
            self.set_log(log, log_level)

    @classmethod
    def from_string(cls, text_: str, name: str = "<string>",
                    **kw: Any) -> "Config":
        """Parse configuration text (@name is used in messages)."""
        return cls(_text=text_, _name=name, **kw)

    def _ptr(self) -> Any:
        if self._h.ptr is None:
            raise errors.ConfigError("the configuration was closed")
        return self._h.ptr

    @property
    def path(self) -> Optional[str]:
        """The file it came from, or None for the built-in defaults."""
        return opt_text(lib.atp_config_path(self._ptr()))

    @property
    def backend(self) -> str:
        """The backend [atp] backend names ("local" by default)."""
        return text(lib.atp_config_backend(self._ptr()))

    def get(self, section: str, key: str) -> Optional[str]:
        """The raw value of @key in @section ("atp", "backend.docker"...)."""
        return opt_text(lib.atp_config_get(self._ptr(), section.encode(),
                                           key.encode()))

    def set_log(self, fn: Callable[[int, str, str], Any],
                level: Union[int, str] = "warn") -> None:
        """Send diagnostics to fn(level, origin, message), up to @level
        ("error", "warn", "info", "debug").  Set it before opening
        backends; fn may be called from any thread."""
        lvl = LOG_LEVELS[level] if isinstance(level, str) else int(level)
        self._log_handle = ffi.new_handle(fn)
        lib.atp_config_set_log(self._ptr(), _log_cb, lvl, self._log_handle)

    def open(self, backend: Optional[str] = None) -> "Backend":
        """Open backend @backend (None: the configured one)."""
        return Backend(self, backend)

    def close(self) -> None:
        """Free the configuration and everything opened from it."""
        self._h.free()

    def __enter__(self) -> "Config":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# --------------------------------------------------------------- backend

class Backend:
    """An open backend: local, docker, modal or any installed plugin.

    Open one with :func:`atp.open`.  Sessions made from it are closed
    when it is closed."""

    def __init__(self, config: Config, name: Optional[str] = None, *,
                 _owns_config: bool = False) -> None:
        out = ffi.new("atp_backend **")
        rc = lib.atp_backend_open(out, config._ptr(),
                                  ffi.NULL if name is None else name.encode())
        if rc != 0:
            _raise_last(rc, f"backend {name or config.backend}")
        self.config = config
        self._owns_config = _owns_config
        self._h = _BackendH(out[0], "backend",
                            text(lib.atp_backend_name(out[0])), config._h)
        weakref.finalize(self, self._h.free)

    def _ptr(self) -> Any:
        if self._h.ptr is None:
            raise errors.ConfigError(f"backend {self._h.name} was closed")
        return self._h.ptr

    @property
    def name(self) -> str:
        """The instance's name: "local", "docker", "modal-big"..."""
        return self._h.name

    @property
    def plugin(self) -> str:
        return text(lib.atp_backend_plugin(self._ptr()))

    @property
    def plugin_version(self) -> str:
        return text(lib.atp_backend_plugin_version(self._ptr()))

    @property
    def plugin_path(self) -> str:
        return text(lib.atp_backend_plugin_path(self._ptr()))

    @property
    def capabilities(self) -> Set[str]:
        """Names of the plugin's capabilities ("sessions", "stdin"...)."""
        caps = int(lib.atp_backend_caps(self._ptr()))
        out = set()
        for bit in range(64):
            if caps & (1 << bit):
                n = opt_text(lib.atp_cap_name(1 << bit))
                if n:
                    out.add(n)
        return out

    def check(self) -> Result:
        """Check that the backend is usable without creating a sandbox;
        raises the failure's exception when it is not."""
        res = new_c_result()
        rc = lib.atp_backend_check(self._ptr(), res)
        r = Result._from_c(res)
        if rc != 0:
            raise _error_for(rc, res, r)
        return r

    def session(self, workdir: Optional[PathLike] = None, *,
                env: Optional[Mapping[str, str]] = None,
                mounts: Optional[Sequence[Any]] = None,
                timeout: Optional[float] = None,
                on_event: Optional[Callable[[Event], Any]] = None,
                start: bool = True) -> "Session":
        """A session over @workdir (None: the current directory): one
        sandbox, many commands.  @env and @mounts are pinned now;
        @timeout is the default budget of each command (None: [atp]
        timeout_s).  The sandbox is provisioned (and the workdir pushed)
        before this returns unless start=False."""
        return Session(self, workdir, env=env, mounts=mounts,
                       timeout=timeout, on_event=on_event, start=start)

    def run(self, command: Command_, workdir: Optional[PathLike] = None, *,
            timeout: Optional[float] = None,
            env: Optional[Mapping[str, str]] = None,
            mounts: Optional[Sequence[Any]] = None, pull: bool = True,
            on_stdout: Optional[LineCallback] = None,
            on_stderr: Optional[LineCallback] = None,
            check: bool = False) -> Result:
        """One-shot: a session over @workdir, the command, the workdir
        pulled back (isolated backends; pull=False skips it), the sandbox
        torn down on every path.  Returns the Result; raises as
        :meth:`Command.wait` does."""
        with self.session(workdir, env=env, mounts=mounts, timeout=timeout,
                          start=False) as s:
            return s._run_oneshot(command, timeout=timeout, pull=pull,
                                  on_stdout=on_stdout, on_stderr=on_stderr,
                                  check=check)

    def close(self) -> None:
        """Close every session of this backend and free it (and its
        configuration, when :func:`atp.open` made it).  Idempotent."""
        self._h.free()
        if self._owns_config:
            self.config.close()

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<atp.Backend {self.name!r} plugin={self.plugin!r}>" \
            if self._h.ptr is not None else f"<atp.Backend {self.name!r} closed>"


# --------------------------------------------------------------- callbacks

@callback("void(const atp_event *, void *)")
def _event_cb(ev: Any, payload: Any) -> None:
    try:
        ffi.from_handle(payload)._on_event(Event._from_c(ev))
    except BaseException:
        pass


@callback("void(int, const char *, size_t, unsigned, void *)")
def _line_cb(stream: int, line: Any, n: int, flags: int, payload: Any) -> None:
    try:
        data = ffi.buffer(line, n)[:] if n else b""
        ffi.from_handle(payload)._on_line(stream, data, flags)
    except BaseException:
        pass


# --------------------------------------------------------------- session

class Session:
    """A sandbox over a working directory, running many commands, torn
    down once by :meth:`close` (or the ``with`` block's end).  A session
    that is garbage-collected unclosed is closed then, with a
    ResourceWarning.

    Commands of one session run one after another: :meth:`exec` returns at
    once, and a second command starts when the first one ends."""

    def __init__(self, backend: Backend, workdir: Optional[PathLike] = None,
                 *, env: Optional[Mapping[str, str]] = None,
                 mounts: Optional[Sequence[Any]] = None,
                 timeout: Optional[float] = None,
                 on_event: Optional[Callable[[Event], Any]] = None,
                 start: bool = True) -> None:
        self.backend = backend
        self.workdir = os.path.abspath(os.fspath(workdir)) \
            if workdir is not None else os.getcwd()
        self.timeout = timeout
        #: Every event of the session so far, in order.
        self.events: List[Event] = []
        keep: List[Any] = []
        opts = ffi.new("atp_session_opts *")
        opts.struct_size = ffi.sizeof("atp_session_opts")
        wd = ffi.new("char[]", os.fsencode(self.workdir))
        keep.append(wd)
        opts.workdir = wd
        opts.env = _strv(_env_list(env), keep)
        opts.mounts = _strv(_mount_list(mounts), keep)
        opts.timeout_s = float(timeout or 0)
        self._proxy = _EventProxy(self.events, on_event)
        self._proxy_handle = ffi.new_handle(self._proxy)
        opts.on_event = _event_cb
        opts.event_payload = self._proxy_handle
        out = ffi.new("atp_session **")
        rc = lib.atp_session_create(out, backend._ptr(), opts)
        if rc != 0:
            _raise_last(rc, "session")
        self.run_id = text(lib.atp_session_run_id(out[0]))
        self._h = _SessionH(out[0], "session", self.run_id, backend._h)
        self._h.proxy_handle = self._proxy_handle  # alive as long as C is
        self._finalizer = weakref.finalize(self, self._h.free, True)
        self.start_result: Optional[Result] = None
        if start:
            try:
                self.start()
            except BaseException:
                try:
                    self.close()
                except errors.Error:
                    pass          # the start's failure is the news
                raise

    def _ptr(self) -> Any:
        if self._h.ptr is None or self._h.close_result is not None:
            raise errors.ConfigError(f"session {self.run_id} is closed")
        return self._h.ptr

    def _call(self, fn: Any, what: str) -> Result:
        with self._h.serve():
            res = new_c_result()
            rc = fn(self._ptr(), res)
        r = Result._from_c(res)
        if rc != 0:
            raise _error_for(rc, res, r)
        return r

    def start(self) -> Result:
        """Provision the sandbox (and push the workdir to an isolated
        one).  On failure nothing is left behind and the exception says
        why."""
        self.start_result = self._call(lib.atp_session_start, "start")
        return self.start_result

    def exec(self, command: Command_, *, timeout: Optional[float] = None,
             env: Optional[Mapping[str, str]] = None,
             stdin: Union[None, bytes, str, int, Any] = None,
             on_stdout: Optional[LineCallback] = None,
             on_stderr: Optional[LineCallback] = None,
             check: bool = False, encoding: str = "utf-8",
             errors: str = "replace",
             keep_output: bool = True) -> "Command":
        """Start @command: POSIX sh text, or an argv list run as the
        sandbox's process itself.  Returns a :class:`Command` at once;
        its output is collected as it arrives.

        @timeout is the command's budget in seconds (None: the
        session's).  @env adds variables over the session's.  @stdin is
        bytes or str to feed, a file object or a descriptor to read until
        EOF, or None (the command's stdin is empty).  @encoding and
        @errors decode the output (as bytes.decode does).  @on_stdout and
        @on_stderr get each line as it arrives, from a thread of the
        package; an exception they raise cancels the session and is
        raised again by :meth:`Command.wait`.  With check=True a non-zero
        exit raises :class:`atp.CommandFailed`.

        With keep_output=False nothing of the output is kept: the result's
        stdout and stderr are empty, :meth:`Command.stream` yields each
        line once and drops it, and at most about 1 MiB of lines waits
        for the reader (then the command waits: its output is not read
        meanwhile); :meth:`Command.wait`, or leaving the stream's loop,
        drops what is not read.  For logs of any size."""
        self._ptr()                      # closed: say so now
        cmd = Command(self, _command_text(command), timeout=timeout, env=env,
                      stdin=stdin, on_stdout=on_stdout, on_stderr=on_stderr,
                      check=check, encoding=encoding, errors_=errors,
                      keep_output=keep_output)
        cmd._ticket = self._h.ticket()
        cmd._start_thread()
        return cmd

    def run(self, command: Command_, **kw: Any) -> Result:
        """``exec(command, **kw).wait()``."""
        return self.exec(command, **kw).wait()

    def _run_oneshot(self, command: Command_, *, timeout: Optional[float],
                     pull: bool, on_stdout: Optional[LineCallback],
                     on_stderr: Optional[LineCallback],
                     check: bool) -> Result:
        cmd = Command(self, _command_text(command), timeout=timeout, env=None,
                      stdin=None, on_stdout=on_stdout, on_stderr=on_stderr,
                      check=check, encoding="utf-8", errors_="replace")
        cmd._oneshot_pull = pull
        cmd._ticket = self._h.ticket()
        cmd._run()          # in this thread: start, exec, pull, close
        self._h.close_result = cmd._result
        return cmd.wait()

    def sync_in(self) -> Result:
        """Push the host workdir into the sandbox (only what changed; a
        no-op for a shared filesystem)."""
        return self._call(lib.atp_session_sync_in, "sync_in")

    def sync_out(self) -> Result:
        """Pull the sandbox's workdir back to the host (only what changed;
        a no-op for a shared filesystem)."""
        return self._call(lib.atp_session_sync_out, "sync_out")

    def cancel(self) -> None:
        """Cancel what the session is doing and everything it would do
        next except closing.  Safe from any thread."""
        self._h.cancel()

    @property
    def closed(self) -> bool:
        return self._h.ptr is None or self._h.close_result is not None

    def close(self) -> Optional[Result]:
        """Tear the sandbox down: a running command is cancelled first.
        Idempotent; returns how the teardown went (None when it never
        ran), raises when it failed."""
        self._finalizer.detach()
        self._h.free()
        if self._h.close_error is not None:
            e, self._h.close_error = self._h.close_error, None
            raise e
        return self._h.close_result

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, et: Any, ev: Any, tb: Any) -> None:
        if et is not None:
            # Leaving on an exception: teardown must not hide it.
            try:
                self.close()
            except errors.Error:
                pass
        else:
            self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<atp.Session {self.run_id} {state} on {self.backend.name}>"


class _EventProxy:
    """Receives a session's events.  It holds the list and the callback,
    not the session, so that a session can be collected and its "closed"
    event still reaches the callback."""

    def __init__(self, events: List[Event],
                 fn: Optional[Callable[[Event], Any]]) -> None:
        self.events = events
        self.fn = fn

    def _on_event(self, ev: Event) -> None:
        self.events.append(ev)
        if self.fn is not None:
            self.fn(ev)


# --------------------------------------------------------------- command

_END = object()


#: keep_output=False: how many characters of lines may wait for
#: Command.stream() before the command waits for it.
_PENDING_MAX = 1 << 20


class Command:
    """A command running in a session (made by :meth:`Session.exec`).

    Iterate :meth:`stream` for its stdout lines as they arrive, call
    :meth:`wait` for the :class:`Result`.  The output is kept as well, so
    ``wait()`` alone returns it all in ``result.stdout``/``.stderr``."""

    def __init__(self, session: Session, command: str, *,
                 timeout: Optional[float],
                 env: Optional[Mapping[str, str]], stdin: Any,
                 on_stdout: Optional[LineCallback],
                 on_stderr: Optional[LineCallback], check: bool,
                 encoding: str, errors_: str,
                 keep_output: bool = True) -> None:
        self.session = session
        self.command = command
        self.timeout = timeout
        self._env = _env_list(env)
        self._stdin = stdin
        self._on_stdout = on_stdout
        self._on_stderr = on_stderr
        self._check = check
        self._encoding = encoding
        self._errors = errors_
        self._lines: List[Tuple[int, str]] = []  # (1|2, line) in order
        # keep_output=False: _lines holds only what stream() has not
        # taken yet (_pending characters of it), or nothing once no one
        # will read it (_discard).
        self._keep = keep_output
        self._pending = 0
        self._discard = False
        self._out: List[str] = []
        self._err: List[str] = []
        self._out_no_eol = False
        self._err_no_eol = False
        self._partial = {1: b"", 2: b""}
        self._cond = threading.Condition()
        self._done = False
        self._result: Optional[Result] = None
        self._error: Optional[BaseException] = None
        self._callback_error: Optional[BaseException] = None
        self._thread: Optional[threading.Thread] = None
        self._oneshot_pull: Optional[bool] = None
        self._ticket: Optional[int] = None

    # ---- running (in the command's thread)

    def _start_thread(self) -> None:
        t = threading.Thread(target=self._run, daemon=True,
                             name=f"atp-exec-{self.session.run_id}")
        self._thread = t
        self.session._h.threads.append(t)
        t.start()

    def _stdin_fd(self, keep: List[Any]) -> Tuple[int, Optional[threading.Thread]]:
        """The descriptor the command reads, and the thread that feeds it
        (bytes and str are written through a pipe)."""
        s = self._stdin
        if s is None:
            return -1, None
        if isinstance(s, int):
            return s, None
        if hasattr(s, "fileno"):
            return s.fileno(), None
        data = s.encode(self._encoding) if isinstance(s, str) else bytes(s)
        r, w = os.pipe()
        keep.append(r)

        def feed() -> None:
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(w, view):]
            except OSError:  # the command did not read it all
                pass
            finally:
                os.close(w)
        t = threading.Thread(target=feed, daemon=True)
        t.start()
        return r, t

    def _run(self) -> None:
        h = self.session._h
        keep: List[Any] = []
        res = new_c_result()
        rc = 0
        feeder = None
        close_fd = -1
        try:
            with h.serve(self._ticket):
                if h.ptr is None or h.close_result is not None:
                    raise errors.Cancelled(
                        f"session {self.session.run_id} was closed before "
                        "the command started", code="ATP_E_CANCELLED")
                opts = ffi.new("atp_exec_opts *")
                opts.struct_size = ffi.sizeof("atp_exec_opts")
                opts.timeout_s = float(self.timeout or 0)
                opts.env = _strv(self._env, keep)
                opts.on_line = _line_cb
                payload = ffi.new_handle(self)
                keep.append(payload)
                opts.line_payload = payload
                fd, feeder = self._stdin_fd(keep)
                if feeder is not None:
                    close_fd = fd
                if fd >= 0:
                    opts.stdin_fd = fd
                    opts.flags = lib.ATP_EXEC_OPT_STDIN
                else:
                    opts.stdin_fd = -1
                cmd = self.command.encode(self._encoding, "surrogateescape")
                if self._oneshot_pull is not None:
                    rc = lib.atp_session_run(h.ptr, cmd, opts,
                                             1 if self._oneshot_pull else 0,
                                             res)
                else:
                    rc = lib.atp_session_exec(h.ptr, cmd, opts, res)
        except BaseException as e:  # noqa: B902 - handed to wait()
            self._error = e
        finally:
            if close_fd >= 0:
                os.close(close_fd)
            if feeder is not None:
                feeder.join()
            self._flush_partials()
            result = Result._from_c(res, self._text(self._out, self._out_no_eol),
                                    self._text(self._err, self._err_no_eol))
            if self._error is None:
                if self._callback_error is not None:
                    self._error = self._callback_error
                    try:
                        self._error.result = result  # type: ignore[attr-defined]
                    except AttributeError:
                        pass
                elif rc != 0 or result.status not in (Status.OK, Status.EXIT):
                    self._error = _error_for(rc, res, result)
                elif self._check and result.status == Status.EXIT:
                    self._error = errors.CommandFailed(
                        f"{self.command!r} exited {result.returncode}",
                        result=result)
            with self._cond:
                self._result = result
                self._done = True
                try:
                    h.threads.remove(threading.current_thread())
                except ValueError:
                    pass
                self._cond.notify_all()

    @staticmethod
    def _text(lines: List[str], no_eol: bool) -> str:
        if not lines:
            return ""
        return "\n".join(lines) + ("" if no_eol else "\n")

    def _on_line(self, stream: int, data: bytes, flags: int) -> None:
        if flags & lib.ATP_LINE_PARTIAL:
            self._partial[stream] += data
            return
        if self._partial[stream]:
            data = self._partial[stream] + data
            self._partial[stream] = b""
        self._deliver(stream, data, bool(flags & lib.ATP_LINE_NO_EOL))

    def _flush_partials(self) -> None:
        for stream in (1, 2):
            if self._partial[stream]:
                data, self._partial[stream] = self._partial[stream], b""
                self._deliver(stream, data, True)

    def _deliver(self, stream: int, data: bytes, no_eol: bool) -> None:
        line = data.decode(self._encoding, self._errors)
        with self._cond:
            if not self._keep:
                # The reader's turn first: the command waits for it (its
                # output then waits in the sandbox's pipe, not here).
                h = self.session._h
                while (self._pending >= _PENDING_MAX and not self._discard
                       and not h.cancelled):
                    self._cond.wait(0.1)
                if not self._discard:
                    self._lines.append((stream, line))
                    self._pending += len(line) + 1
            else:
                if stream == lib.ATP_STDERR:
                    self._err.append(line)
                    self._err_no_eol = no_eol
                else:
                    self._out.append(line)
                    self._out_no_eol = no_eol
                self._lines.append((stream, line))
            self._cond.notify_all()
        if self._callback_error is not None:
            return
        fn = self._on_stderr if stream == lib.ATP_STDERR else self._on_stdout
        if fn is None:
            return
        try:
            fn(line)
        except BaseException as e:
            self._callback_error = e
            self.session._h.cancel()

    # ---- the caller's side

    def stream(self, stderr: bool = False) -> Iterator[Any]:
        """Yield stdout lines (newline stripped) as they arrive, until the
        command ends.  With stderr=True yield ("stdout"|"stderr", line)
        pairs of both streams in the order they arrived.  Each call
        starts from the first line (with keep_output=False, each line goes
        to one reader, once, and ending the loop early drops the rest).
        Ending the loop early does not stop the command (use
        :meth:`cancel`)."""
        if not self._keep:
            return self._stream_once(stderr)
        return self._stream_kept(stderr)

    def _stream_kept(self, stderr: bool) -> Iterator[Any]:
        i = 0
        while True:
            with self._cond:
                while i >= len(self._lines) and not self._done:
                    self._wait_cond()
                batch = self._lines[i:]
                i = len(self._lines)
                done = self._done
            for stream, line in batch:
                if stderr:
                    yield ("stderr" if stream == 2 else "stdout", line)
                elif stream == 1:
                    yield line
            if done and i >= len(self._lines):
                return

    def _stream_once(self, stderr: bool) -> Iterator[Any]:
        finished = False
        try:
            while True:
                with self._cond:
                    while not self._lines and not self._done:
                        self._wait_cond()
                    batch, self._lines = self._lines, []
                    self._pending = 0
                    done = self._done
                    self._cond.notify_all()
                for stream, line in batch:
                    if stderr:
                        yield ("stderr" if stream == 2 else "stdout", line)
                    elif stream == 1:
                        yield line
                if done:
                    finished = True
                    return
        finally:
            if not finished:
                self._drop_unread()

    def _drop_unread(self) -> None:
        with self._cond:
            self._discard = True
            self._lines = []
            self._pending = 0
            self._cond.notify_all()

    def __iter__(self) -> Iterator[Any]:
        return self.stream()

    def _wait_cond(self, timeout: Optional[float] = None) -> None:
        try:
            # A bounded wait keeps Ctrl-C responsive.
            self._cond.wait(0.5 if timeout is None else min(timeout, 0.5))
        except KeyboardInterrupt:
            self.cancel()
            raise

    def wait(self, timeout: Optional[float] = None) -> Result:
        """Wait for the end; return the :class:`Result` (also for a
        non-zero exit, unless check=True), or raise the exception of its
        status class with the result attached (a timeout:
        :class:`atp.CommandTimeout`, its output so far in
        ``e.result``).  With @timeout, raise the builtin TimeoutError if
        it has not ended by then (the command keeps running)."""
        import time
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._keep:
            self._drop_unread()
        with self._cond:
            while not self._done:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"{self.command!r} still running after "
                                       f"{timeout} s")
                self._wait_cond(left)
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    async def wait_async(self) -> Result:
        """:meth:`wait` for asyncio: awaits the end without blocking the
        event loop."""
        import asyncio
        return await asyncio.get_running_loop().run_in_executor(
            None, self.wait)

    async def astream(self, stderr: bool = False) -> AsyncIterator[Any]:
        """:meth:`stream` for asyncio: ``async for line in
        cmd.astream()``."""
        import asyncio
        loop = asyncio.get_running_loop()
        it = self.stream(stderr)
        end = object()
        while True:
            item = await loop.run_in_executor(None, next, it, end)
            if item is end:
                return
            yield item

    def cancel(self) -> None:
        """Stop the command (its process tree is killed; the output so far
        is kept).  This cancels the session as well: its later commands
        fail with :class:`atp.Cancelled`; close it and open another."""
        self.session._h.cancel()

    def done(self) -> bool:
        """True when the command has ended."""
        return self._done

    @property
    def result(self) -> Optional[Result]:
        """The Result once the command has ended (whatever its status),
        else None."""
        return self._result

    @property
    def stdout(self) -> str:
        """The stdout seen so far."""
        with self._cond:
            return self._text(list(self._out), self._out_no_eol)

    @property
    def stderr(self) -> str:
        """The stderr seen so far."""
        with self._cond:
            return self._text(list(self._err), self._err_no_eol)

    def __repr__(self) -> str:
        state = f"{self._result.status}" if self._result else "running"
        return f"<atp.Command {self.command!r} {state}>"


# --------------------------------------------------------------- open

def open(backend: Optional[str] = None, config: Optional[PathLike] = None, *,
         config_text: Optional[str] = None,
         log: Optional[Callable[[int, str, str], Any]] = None,
         log_level: Union[int, str] = "warn") -> Backend:
    """Open a backend.  @config is an atp.ini (None: the usual search:
    $ATP_CONFIG, ./atp.ini, ~/.config/atp/atp.ini, /etc/atp/atp.ini, else
    the local backend); @config_text is INI text instead.  @backend names
    the instance (None: [atp] backend).  @log gets diagnostics
    fn(level, origin, message)."""
    if config_text is not None:
        cfg = Config.from_string(config_text, log=log, log_level=log_level)
    else:
        cfg = Config(config, log=log, log_level=log_level)
    try:
        return Backend(cfg, backend, _owns_config=True)
    except BaseException:
        cfg.close()
        raise
