#!/usr/bin/python3
"""A fake Modal server for atp's tests: the control plane (ModalClient)
and a worker's TaskCommandRouter, over h2c on loopback, built from the
same .proto files as the plugin (compiled here with protoc --python_out).

It follows ../shared/reference/modal-protocol.md §6:

* every ModalClient call must carry x-modal-token-id/-secret (else
  UNAUTHENTICATED); router calls a Bearer JWT it minted (HS256, integer
  exp) for that task;
* ids are V1-shaped (sb- + 22 base62; ta-... never ending in V), unless
  the knobs "id_style" ("v2") or "id_len" say otherwise;
* SandboxCreate keeps its definition, is idempotent per x-idempotency-key,
  starts the entrypoint as a real process and enforces timeout_secs;
  SandboxGetTaskId answers empty for a while (task_delay), SandboxWait
  long-polls and leaves `result` out while the sandbox runs, terminate is
  idempotent;
* images are published as [ENV/]NAME[:TAG] (environment "main", tag
  "latest" when not given) and looked up the same way, or by id;
* each sandbox has its own root directory; an exec runs a real process
  with its workdir mapped under that root (WORKDIR -> ROOT/WORKDIR), so
  the core's push and pull move real bytes; output is kept after the exit
  and served from any offset, the exit code or signal always set.

Faults are injected with `ctl set` (a JSON object): "faults" is a list
of {"rpc": NAME, "argv": TEXT (router calls: only for an exec whose
command line contains TEXT), "eof": BOOL (TaskExecStdinWrite: only a
write that does or does not close stdin), "nth": N (the Nth matching
call since the faults were set), "times": K, "code": "UNAVAILABLE",
"message": ..., "after": true (fail after doing the work), "delay":
SECONDS, "retry_after": SECONDS (an RPCRetryPolicy detail),
"drop_after": BYTES (TaskExecStdioRead: drop the stream after so many
bytes), "cut_tail": BYTES (TaskExecStdioRead: end the stream as if whole
without its last BYTES, once the command has ended), "fd": 0|1, "kill_after": SECONDS (TaskExecStart: kill the
sandbox that long after)}.

Knobs: "chunk" (bytes per stdio message), "task_delay", "jwt_ttl",
"list_page", "hello_warnings" (a list of {"type": N, "message": TEXT}
that ClientHello answers with), "min_client_version" (older
x-modal-client-version headers get FAILED_PRECONDITION "Old client", as
Modal's own test server answers; the identity headers must be there and
the client type one Modal knows), "router_delay" (seconds after a
sandbox is scheduled before its router answers: until then its router
url resets every connection), "sandbox_quota" (at most that many
sandboxes alive: SandboxCreate beyond it fails with RESOURCE_EXHAUSTED,
as a workspace's limit does; counted in the stats' "quota_refused"),
"stdio_lag" (seconds by which TaskExecStdioRead trails the command's
pipes, its bytes and its end alike, as a loaded router's may; the exit
status is not delayed), "missing_cwd" ("refuse", the default: an
exec whose working directory does not exist fails with INVALID_ARGUMENT
and is listed in the stats' "refused_cwd"; "create": made on the fly).

`ctl stats` says what is alive ("alive", and "peak_alive": the most
sandboxes alive at once since the server started) and what was called (and from which
client connection: "peers"; with which grpc-timeout: "deadlines", None
for none). With --tls-cert/--tls-key the control plane speaks TLS (the
router stays h2c, as a local test server's may).

    fake_modal.py serve --state DIR [--image [ENV/]NAME[:TAG]]... [--set JSON]
    fake_modal.py ctl --state DIR stats|set JSON|kill ID|wait-ready
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import secrets
import shutil
import signal
import socket
import string
import struct
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
BASE62 = string.digits + string.ascii_letters
CODES = {c.name: c for c in grpc.StatusCode}


def new_id(prefix):
    """A V1-shaped id: PREFIX- and 22 base62 characters, never ending in V
    (a task id ending in V means a V2 task to the SDKs)."""
    while True:
        s = "".join(secrets.choice(BASE62) for _ in range(22))
        if not s.endswith("V"):
            return prefix + "-" + s


def relay(src, dst):
    """Copy bytes from SRC to DST until SRC ends."""
    try:
        while True:
            b = src.recv(65536)
            if not b:
                break
            dst.sendall(b)
    except OSError:
        pass
    for sock, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
        try:
            sock.shutdown(how)
        except OSError:
            pass


def version(text):
    """"1.5.4" as (1, 5, 4); what is not a number counts as 0."""
    return tuple(int(p) if p.isdigit() else 0 for p in text.split("."))


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


class Abort(Exception):
    """A status to end the call with."""

    def __init__(self, code, message, retry_after=None):
        super().__init__(message)
        self.code = code if isinstance(code, grpc.StatusCode) else CODES[code]
        self.message = message
        self.retry_after = retry_after


# --------------------------------------------------------------------------
# sandboxes and execs


class Exec:
    def __init__(self, sb, exec_id, req):
        self.sb = sb
        self.id = exec_id
        self.argv = list(req.command_args)
        self.workdir = (req.workdir if req.WhichOneof("opt_workdir")
                        else None)
        self.cond = threading.Condition()
        self.out = [bytearray(), bytearray()]
        self.closed = [False, False]
        # when each piece was read from the pipe: (end offset, time), and
        # when the pipe closed (for the "stdio_lag" knob)
        self.stamps = [[], []]
        self.closed_at = [0.0, 0.0]
        self.code = None
        self.signal = None
        self.stdin_written = 0
        self.stdin_closed = False
        self.stdin_lock = threading.Lock()
        self.proc = None

    def start(self, req, api, tcr):
        sb = self.sb
        workdir = req.workdir if req.WhichOneof("opt_workdir") else sb.workdir
        if not workdir.startswith("/"):
            raise Abort("INVALID_ARGUMENT", "workdir must be absolute")
        cwd = sb.path(workdir)
        if not os.path.isdir(cwd):
            if sb.server.knobs.get("missing_cwd", "refuse") == "create":
                os.makedirs(cwd, exist_ok=True)
            else:
                with sb.server.lock:
                    sb.server.refused_cwd.append(
                        {"sandbox": sb.id, "argv": self.argv,
                         "workdir": workdir})
                raise Abort("INVALID_ARGUMENT", "workdir %s does not exist "
                            "in the sandbox" % workdir)
        env = dict(sb.env)
        env.update(dict(req.env))
        pipe = tcr.TASK_EXEC_STDOUT_CONFIG_PIPE
        out = subprocess.PIPE if req.stdout_config == pipe else subprocess.DEVNULL
        if req.stderr_config == tcr.TASK_EXEC_STDERR_CONFIG_PIPE:
            err = subprocess.PIPE
        elif req.stderr_config == tcr.TASK_EXEC_STDERR_CONFIG_STDOUT:
            err = subprocess.STDOUT
        else:
            err = subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                self.argv, cwd=cwd, env=env, stdin=subprocess.PIPE,
                stdout=out, stderr=err, start_new_session=True, bufsize=0)
        except OSError as e:
            # As a container runtime would: the exec exists and fails.
            self.out[1] += ("exec: %s: %s\n" % (self.argv[0], e.strerror)).encode()
            self.closed = [True, True]
            self.code = 127 if isinstance(e, FileNotFoundError) else 126
            self.stdin_closed = True
            return
        pipes = [self.proc.stdout, self.proc.stderr]
        for i in range(2):
            if pipes[i] is None:
                self.closed[i] = True
            else:
                threading.Thread(target=self.reader, args=(i, pipes[i]),
                                 daemon=True).start()
        threading.Thread(target=self.waiter, daemon=True).start()
        if req.WhichOneof("opt_timeout_secs"):
            t = threading.Timer(req.timeout_secs, self.kill)
            t.daemon = True
            t.start()

    def reader(self, i, f):
        fd = f.fileno()
        while True:
            try:
                b = os.read(fd, 65536)
            except OSError:
                b = b""
            with self.cond:
                if b:
                    self.out[i] += b
                    self.stamps[i].append((len(self.out[i]),
                                           time.monotonic()))
                else:
                    self.closed[i] = True
                    self.closed_at[i] = time.monotonic()
                self.cond.notify_all()
            if not b:
                f.close()
                return

    def served(self, i, lag):
        """What of stream I the router has caught up with, LAG seconds
        behind the pipe: (bytes, whether its end too).  Under ex.cond."""
        if lag <= 0:
            return len(self.out[i]), self.closed[i]
        seen = time.monotonic() - lag
        n = 0
        for end, t in self.stamps[i]:
            if t > seen:
                break
            n = end
        return n, (self.closed[i] and n == len(self.out[i])
                   and self.closed_at[i] <= seen)

    def waiter(self):
        rc = self.proc.wait()
        with self.cond:
            if rc < 0:
                self.signal = -rc
            else:
                self.code = rc
            self.cond.notify_all()
        with self.sb.cond:
            self.sb.cond.notify_all()

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass

    def write_stdin(self, offset, data, eof):
        with self.stdin_lock:
            if self.stdin_closed:
                if not data:
                    return  # a repeated EOF is ignored
                raise Abort("FAILED_PRECONDITION", "stdin is closed")
            if offset > self.stdin_written:
                raise Abort("FAILED_PRECONDITION",
                            "offset %d is past the %d bytes written"
                            % (offset, self.stdin_written))
            data = data[self.stdin_written - offset:]
            view = memoryview(data)
            try:
                while view:
                    n = os.write(self.proc.stdin.fileno(), view)
                    view = view[n:]
                    self.stdin_written += n
            except (OSError, ValueError):
                self.stdin_closed = True
                raise Abort("FAILED_PRECONDITION",
                            "the process closed its stdin")
            if eof:
                self.stdin_closed = True
                try:
                    self.proc.stdin.close()
                except OSError:
                    pass


class Sandbox:
    def __init__(self, server, req, api):
        d = req.definition
        self.server = server
        self.id, self.task_id = server.new_sandbox_ids()
        self.app_id = req.app_id
        self.definition = d
        self.tags = {t.tag_name: t.tag_value for t in req.tags}
        self.created = time.time()
        self.timeout_secs = d.timeout_secs or 300
        self.deadline = time.monotonic() + self.timeout_secs
        self.ready_at = time.monotonic() + server.knobs.get("task_delay", 0.3)
        # The router answers only this long after the task is scheduled.
        self.router_at = self.ready_at + server.knobs.get("router_delay", 0)
        self.router_refused = 0
        self.proxy = None
        self.def_workdir = (d.workdir if d.WhichOneof("opt_workdir")
                            else None)
        self.workdir = self.def_workdir or "/"
        self.cond = threading.Condition()
        self.result = None
        self.dead = False
        self.execs = {}
        self.root = tempfile.mkdtemp(prefix=self.id + ".",
                                     dir=server.sandbox_dir)
        for sub in (self.workdir, "/tmp", "/root"):
            os.makedirs(self.path(sub), exist_ok=True)
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "HOME": self.path("/root"), "TMPDIR": self.path("/tmp"),
                    "LC_ALL": "C"}
        for sid in d.secret_ids:
            self.env.update(server.secrets[sid])
        self.entry = None
        if d.entrypoint_args:
            self.entry = subprocess.Popen(
                list(d.entrypoint_args), cwd=self.path(self.workdir),
                env=self.env, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True)
            threading.Thread(target=self.watch_entry, daemon=True).start()
        self.api = api

    def path(self, p):
        """Where sandbox path P lives on the host."""
        return os.path.join(self.root, os.path.normpath(p).lstrip("/"))

    def watch_entry(self):
        rc = self.entry.wait()
        api = self.api
        if rc == 0:
            self.finish(api.GenericResult.GENERIC_STATUS_SUCCESS, 0)
        elif rc > 0:
            self.finish(api.GenericResult.GENERIC_STATUS_FAILURE, rc)

    def finish(self, status, exitcode, exception=""):
        """The sandbox ends: every process goes, its root too."""
        with self.cond:
            if self.result is not None:
                return False
            self.result = self.api.GenericResult(
                status=status, exitcode=exitcode, exception=exception)
            self.dead = True
            self.cond.notify_all()
        procs = [self.entry] + [e.proc for e in self.execs.values()]
        for p in procs:
            if p is not None and p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except OSError:
                    pass
        for p in procs:
            if p is not None:
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        for e in list(self.execs.values()):
            with e.cond:
                e.cond.notify_all()
        if self.proxy is not None:
            self.proxy.close()  # a dead worker's router refuses
        shutil.rmtree(self.root, ignore_errors=True)
        return True

    def router_url(self, port):
        """The url of this sandbox's router: with a router_delay, a port
        of its own that resets every connection until the router is up,
        then relays to the real router at PORT."""
        if self.router_at <= self.ready_at:
            return "http://127.0.0.1:%d" % port
        with self.cond:
            if self.proxy is None:
                ls = socket.socket()
                ls.bind(("127.0.0.1", 0))
                ls.listen(64)
                self.proxy = ls
                threading.Thread(target=self.relay_loop, args=(ls, port),
                                 daemon=True).start()
            return "http://127.0.0.1:%d" % self.proxy.getsockname()[1]

    def relay_loop(self, ls, port):
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            if time.monotonic() < self.router_at:
                # Not up yet: the connection is reset.
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                             struct.pack("ii", 1, 0))
                c.close()
                self.router_refused += 1
                continue
            try:
                up = socket.create_connection(("127.0.0.1", port))
            except OSError:
                c.close()
                continue
            for a, b in ((c, up), (up, c)):
                threading.Thread(target=relay, args=(a, b),
                                 daemon=True).start()

    def live_procs(self):
        procs = [self.entry] + [e.proc for e in self.execs.values()]
        return sum(1 for p in procs if p is not None and p.poll() is None)


# --------------------------------------------------------------------------
# the server


class Fake:
    def __init__(self, args, api, tcr):
        self.api = api
        self.tcr = tcr
        self.lock = threading.RLock()
        self.token_id = args.token_id
        self.token_secret = args.token_secret
        self.jwt_key = secrets.token_bytes(32)
        self.sandbox_dir = os.path.join(args.state, "sandboxes")
        os.makedirs(self.sandbox_dir, exist_ok=True)
        self.images = {}
        for name in args.image:
            self.images[self.norm_tag(name, "")] = new_id("im")
        self.image_lookups = []
        self.apps = {}
        self.secrets = {}
        self.sandboxes = {}
        self.tasks = {}
        self.by_key = {}
        self.calls = {}
        self.keys = {}
        self.attempts = {}
        self.headers = {}
        self.peers = {}
        self.deadlines = {}
        self.refused_cwd = []
        self.fired = {}
        self.knobs = {"faults": []}
        self.peak_alive = 0
        self.quota_refused = 0
        self.knobs_gen = 0
        self.fault_hits = {}
        self.router_port = 0
        self.log = open(os.path.join(args.state, "fake.log"), "a",
                        buffering=1)

    def new_sandbox_ids(self):
        """A sandbox id and its task's: V1-shaped, or with "id_style":
        "v2" of another shape (sb- and 40 characters; a task id ending in
        V, as the SDKs tell a V2 task), or "id_len" characters long."""
        sid, tid = new_id("sb"), new_id("ta")
        if self.knobs.get("id_style") == "v2":
            sid = "sb-" + "".join(secrets.choice(BASE62) for _ in range(40))
            tid = tid[:-1] + "V"
        if self.knobs.get("id_len"):
            n = int(self.knobs["id_len"])
            sid = (sid + "".join(secrets.choice(BASE62)
                                 for _ in range(n)))[:n]
        return sid, tid

    @staticmethod
    def norm_tag(tag, environment):
        """"[env/]name[:tag]" as "env/name:tag": the prefix, else
        ENVIRONMENT, else the default environment "main"; ":latest" when
        no tag is given (py/modal/_image.py _parse_image_name)."""
        name_part, sep, tag_part = tag.partition(":")
        env, slash, name = name_part.rpartition("/")
        env = env if slash else (environment or "main")
        return "%s/%s:%s" % (env, name, tag_part if sep else "latest")

    # ---- bookkeeping, auth, faults

    def enter(self, rpc, req, context, router):
        md = {}
        for k, v in context.invocation_metadata():
            md[k] = v
        with self.lock:
            n = self.calls.get(rpc, 0) + 1
            self.calls[rpc] = n
            if "x-idempotency-key" in md:
                self.keys.setdefault(rpc, []).append(md["x-idempotency-key"])
                self.attempts.setdefault(rpc, []).append(
                    md.get("x-retry-attempt", ""))
            self.headers[rpc] = {k: v for k, v in md.items()
                                 if k not in ("x-modal-token-secret",
                                              "authorization")}
            self.peers.setdefault(rpc, []).append(context.peer())
            # The grpc-timeout the call came with (None: none), the last
            # 100 per method.
            left = context.time_remaining()
            dl = self.deadlines.setdefault(rpc, [])
            dl.append(None if left is None or left > 1e9 else round(left, 3))
            del dl[:-100]
        self.log.write("%s %s #%d\n" % (time.strftime("%T"), rpc, n))
        if router:
            self.check_jwt(md)
        else:
            self.check_client(md)
            tid = md.get("x-modal-token-id")
            tsec = md.get("x-modal-token-secret")
            if not tid or not tsec:
                raise Abort("UNAUTHENTICATED", "token missing: could not "
                            "authenticate the client")
            if tid != self.token_id or tsec != self.token_secret:
                raise Abort("UNAUTHENTICATED", "invalid token id or secret")
        return md, self.match_faults(rpc, req)

    def check_client(self, md):
        """As Modal's own test server does (py/test/conftest.py): the
        identity headers must be there, the client type known, and the
        client version not older than "min_client_version"."""
        for h in ("x-modal-client-type", "x-modal-client-version"):
            if h not in md:
                raise Abort("FAILED_PRECONDITION", "Missing %s header" % h)
        if md["x-modal-client-type"] not in ("1", "7", "8", "9"):
            raise Abort("FAILED_PRECONDITION", "Unknown client type")
        least = self.knobs.get("min_client_version")
        if least and version(md["x-modal-client-version"]) < version(least):
            raise Abort("FAILED_PRECONDITION", "Old client")

    def argv_of(self, rpc, req):
        """The command line of the exec a router call is about."""
        if rpc == "TaskExecStart":
            return " ".join(req.command_args)
        with self.lock:
            sb = self.tasks.get(getattr(req, "task_id", ""))
        ex = sb.execs.get(getattr(req, "exec_id", "")) if sb else None
        return " ".join(ex.argv) if ex else ""

    def match_faults(self, rpc, req):
        """The faults due for this call.  A fault counts the calls it
        matches (its rpc, and with "argv" the exec's command line
        containing that text) from when it was set: "nth" is the first
        it hits, "times" how many in a row (all when no "nth")."""
        out = []
        with self.lock:
            faults = list(enumerate(self.knobs.get("faults", [])))
            gen = self.knobs_gen
        for i, f in faults:
            if f.get("rpc") != rpc:
                continue
            if "argv" in f and (req is None
                                or f["argv"] not in self.argv_of(rpc, req)):
                continue
            if "eof" in f and (req is None
                               or bool(getattr(req, "eof", False))
                               != f["eof"]):
                continue
            with self.lock:
                n = self.fault_hits.get((gen, i), 0) + 1
                self.fault_hits[(gen, i)] = n
            if self.fault_due(f, n):
                out.append(f)
                with self.lock:
                    self.fired[rpc] = self.fired.get(rpc, 0) + 1
        return out

    def fault_due(self, f, n):
        nth = f.get("nth")
        if nth is None:
            return True
        return nth <= n < nth + f.get("times", 1)

    def check_jwt(self, md):
        auth = md.get("authorization", "")
        if not auth.startswith("Bearer "):
            raise Abort("UNAUTHENTICATED", "missing bearer token")
        parts = auth[7:].split(".")
        if len(parts) != 3:
            raise Abort("UNAUTHENTICATED", "malformed token")
        want = b64url(hmac.new(self.jwt_key, (parts[0] + "." + parts[1])
                               .encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(want, parts[2]):
            raise Abort("UNAUTHENTICATED", "bad token signature")
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=="))
        if claims.get("exp", 0) < time.time():
            raise Abort("UNAUTHENTICATED", "token expired")
        return claims

    def mint_jwt(self, task_id):
        now = int(time.time())
        head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = b64url(json.dumps({"sub": task_id, "iat": now,
                                  "exp": now + int(self.knobs.get("jwt_ttl",
                                                                  3600))})
                      .encode())
        sig = b64url(hmac.new(self.jwt_key, (head + "." + body).encode(),
                              hashlib.sha256).digest())
        return head + "." + body + "." + sig

    def apply_before(self, faults, context):
        for f in faults:
            if f.get("delay"):
                end = time.monotonic() + f["delay"]
                while time.monotonic() < end and context.is_active():
                    time.sleep(0.02)
            if f.get("code") and not f.get("after"):
                raise Abort(f["code"], f.get("message", "injected fault"),
                            f.get("retry_after"))

    def apply_after(self, faults):
        for f in faults:
            if f.get("code") and f.get("after"):
                raise Abort(f["code"], f.get("message", "injected fault"),
                            f.get("retry_after"))

    def abort(self, context, e):
        if e.retry_after is not None:
            pol = self.api.RPCRetryPolicy(retry_after_secs=e.retry_after)
            st = self.api.RPCStatus(code=e.code.value[0], message=e.message)
            d = st.details.add()
            d.type_url = "type.modal.com/modal.client.RPCRetryPolicy"
            d.value = pol.SerializeToString()
            context.set_trailing_metadata(
                (("grpc-status-details-bin", st.SerializeToString()),))
        context.abort(e.code, e.message)

    def wrap(self, rpc, fn, router, streaming):
        if streaming:
            def handler(req, context):
                try:
                    md, faults = self.enter(rpc, req, context, router)
                    self.apply_before(faults, context)
                    yield from fn(req, context, md, faults)
                except Abort as e:
                    self.abort(context, e)
        else:
            def handler(req, context):
                try:
                    streamed = not hasattr(req, "DESCRIPTOR")
                    md, faults = self.enter(rpc, None if streamed else req,
                                            context, router)
                    self.apply_before(faults, context)
                    md["_faults"] = faults
                    resp = fn(req, context, md)
                    self.apply_after(faults)
                    return resp
                except Abort as e:
                    self.abort(context, e)
        return handler

    # ---- lookups

    def sandbox(self, sid):
        with self.lock:
            sb = self.sandboxes.get(sid)
        if sb is None:
            raise Abort("NOT_FOUND", "sandbox %s not found" % sid)
        return sb

    def task(self, task_id):
        with self.lock:
            sb = self.tasks.get(task_id)
        if sb is None:
            raise Abort("NOT_FOUND", "task %s not found" % task_id)
        if sb.dead:
            raise Abort("UNAVAILABLE", "the worker of task %s is gone"
                        % task_id)
        return sb

    def exec_of(self, req):
        sb = self.task(req.task_id)
        ex = sb.execs.get(req.exec_id)
        if ex is None:
            raise Abort("NOT_FOUND", "exec %s not found" % req.exec_id)
        return sb, ex

    def idempotent(self, rpc, md, make):
        key = md.get("x-idempotency-key")
        with self.lock:
            if key and (rpc, key) in self.by_key:
                return self.by_key[(rpc, key)]
            resp = make()
            if key:
                self.by_key[(rpc, key)] = resp
            return resp

    # ---- ModalClient

    def AppGetOrCreate(self, req, context, md):
        api = self.api
        k = (req.environment_name, req.app_name)
        with self.lock:
            if k not in self.apps:
                if req.object_creation_type == api.OBJECT_CREATION_TYPE_UNSPECIFIED:
                    raise Abort("NOT_FOUND", "app '%s' not found"
                                % req.app_name)
                self.apps[k] = new_id("ap")
            return api.AppGetOrCreateResponse(app_id=self.apps[k])

    def ClientHello(self, req, context, md):
        resp = self.api.ClientHelloResponse()
        for w in self.knobs.get("hello_warnings", []):
            resp.server_warnings.add(type=w.get("type", 1),
                                     message=w["message"])
        return resp

    def AuthTokenGet(self, req, context, md):
        return self.api.AuthTokenGetResponse(token=self.mint_jwt("client"))

    def ImageGetByTag(self, req, context, md):
        with self.lock:
            self.image_lookups.append(
                {"tag": req.tag, "environment": req.environment_name})
        image_id = self.images.get(self.norm_tag(req.tag,
                                                 req.environment_name))
        if image_id is None:
            raise Abort("NOT_FOUND", "Image '%s' not found" % req.tag)
        return self.api.ImageGetByTagResponse(image_id=image_id)

    def ImageFromId(self, req, context, md):
        if req.image_id not in self.images.values():
            raise Abort("NOT_FOUND", "Could not find image with ID %s"
                        % req.image_id)
        return self.api.ImageFromIdResponse(image_id=req.image_id)

    def SecretGetOrCreate(self, req, context, md):
        api = self.api
        t = req.object_creation_type
        if t == api.OBJECT_CREATION_TYPE_ANONYMOUS_OWNED_BY_APP and not req.app_id:
            raise Abort("INVALID_ARGUMENT", "an app-owned secret needs app_id")
        if t not in (api.OBJECT_CREATION_TYPE_ANONYMOUS_OWNED_BY_APP,
                     api.OBJECT_CREATION_TYPE_EPHEMERAL):
            raise Abort("NOT_FOUND", "secret '%s' not found"
                        % req.deployment_name)

        def make():
            sid = new_id("st")
            self.secrets[sid] = dict(req.env_dict)
            return api.SecretGetOrCreateResponse(secret_id=sid)
        return self.idempotent("SecretGetOrCreate", md, make)

    def SandboxCreate(self, req, context, md):
        api = self.api
        with self.lock:
            if req.app_id not in self.apps.values():
                raise Abort("NOT_FOUND", "app %s not found" % req.app_id)
            if req.definition.image_id not in self.images.values():
                raise Abort("NOT_FOUND", "image %s not found"
                            % req.definition.image_id)
            for sid in req.definition.secret_ids:
                if sid not in self.secrets:
                    raise Abort("NOT_FOUND", "secret %s not found" % sid)

        def make():
            quota = self.knobs.get("sandbox_quota")
            if quota is not None:
                with self.lock:
                    alive = sum(1 for s in self.sandboxes.values()
                                if s.result is None)
                if alive >= int(quota):
                    with self.lock:
                        self.quota_refused += 1
                    raise Abort("RESOURCE_EXHAUSTED",
                                "sandbox limit reached: %d running"
                                % alive)
            sb = Sandbox(self, req, api)
            self.sandboxes[sb.id] = sb
            self.tasks[sb.task_id] = sb
            with self.lock:
                alive = sum(1 for s in self.sandboxes.values()
                            if s.result is None)
                self.peak_alive = max(self.peak_alive, alive)
            self.log.write("created %s root %s\n" % (sb.id, sb.root))
            return api.SandboxCreateResponse(sandbox_id=sb.id)
        return self.idempotent("SandboxCreate", md, make)

    def SandboxGetTaskId(self, req, context, md):
        sb = self.sandbox(req.sandbox_id)
        resp = self.api.SandboxGetTaskIdResponse()
        if sb.result is not None:
            resp.task_result.CopyFrom(sb.result)
        elif time.monotonic() >= sb.ready_at:
            resp.task_id = sb.task_id
        return resp

    def SandboxWait(self, req, context, md):
        sb = self.sandbox(req.sandbox_id)
        end = time.monotonic() + min(max(req.timeout, 0), 55)
        with sb.cond:
            while (sb.result is None and time.monotonic() < end
                   and context.is_active()):
                sb.cond.wait(min(0.2, max(end - time.monotonic(), 0)))
            resp = self.api.SandboxWaitResponse()
            if sb.result is not None:
                resp.result.CopyFrom(sb.result)
            return resp

    def SandboxTerminate(self, req, context, md):
        api = self.api
        sb = self.sandbox(req.sandbox_id)
        resp = api.SandboxTerminateResponse()
        if sb.result is not None:
            resp.existing_result.CopyFrom(sb.result)
            return resp
        sb.finish(api.GenericResult.GENERIC_STATUS_TERMINATED, -1)
        return resp

    def SandboxList(self, req, context, md):
        want = {t.tag_name: t.tag_value for t in req.tags}
        with self.lock:
            sbs = sorted(self.sandboxes.values(), key=lambda s: -s.created)
        page = int(self.knobs.get("list_page", 100))
        resp = self.api.SandboxListResponse()
        for sb in sbs:
            if req.app_id and sb.app_id != req.app_id:
                continue
            if req.before_timestamp and sb.created >= req.before_timestamp:
                continue
            if not req.include_finished and sb.result is not None:
                continue
            if any(sb.tags.get(k) != v for k, v in want.items()):
                continue
            info = resp.sandboxes.add(id=sb.id, created_at=sb.created,
                                      app_id=sb.app_id,
                                      timeout_secs=sb.timeout_secs)
            for k, v in sb.tags.items():
                info.tags.add(tag_name=k, tag_value=v)
            if len(resp.sandboxes) >= page:
                break
        return resp

    def TaskGetCommandRouterAccess(self, req, context, md):
        with self.lock:
            sb = self.tasks.get(req.task_id)
        if sb is None:
            raise Abort("NOT_FOUND", "task %s not found" % req.task_id)
        if sb.result is not None:
            raise Abort("FAILED_PRECONDITION", "the sandbox has finished")
        return self.api.TaskGetCommandRouterAccessResponse(
            jwt=self.mint_jwt(sb.task_id),
            url=sb.router_url(self.router_port))

    # ---- TaskCommandRouter

    def TaskExecStart(self, req, context, md):
        sb = self.task(req.task_id)
        with sb.cond:
            if req.exec_id in sb.execs:
                return self.tcr.TaskExecStartResponse()  # idempotent
            ex = Exec(sb, req.exec_id, req)
            ex.start(req, self.api, self.tcr)
            sb.execs[req.exec_id] = ex
        for f in md["_faults"]:
            if "kill_after" in f:
                t = threading.Timer(f["kill_after"], sb.finish,
                                    (self.api.GenericResult
                                     .GENERIC_STATUS_INTERNAL_FAILURE, 0,
                                     "the worker was lost"))
                t.daemon = True
                t.start()
        return self.tcr.TaskExecStartResponse()

    def TaskExecStdioRead(self, req, context, md, faults):
        sb, ex = self.exec_of(req)
        fd = int(req.file_descriptor)
        pos = req.offset
        sent = 0
        chunk = int(self.knobs.get("chunk", 65536)) or 65536
        drop = cut = None
        for f in faults:
            if "drop_after" in f and f.get("fd", fd) == fd:
                drop = f["drop_after"]
            # The stream ends as if whole, its last CUT bytes never sent.
            if "cut_tail" in f and f.get("fd", fd) == fd:
                cut = int(f["cut_tail"])
        lag = float(self.knobs.get("stdio_lag", 0))
        while True:
            with ex.cond:
                while True:
                    have, end = ex.served(fd, lag)
                    if cut is not None:
                        # The end must be known to leave its bytes out.
                        have = max(pos, have - cut) if end else pos
                    if (have > pos or end or sb.dead
                            or not context.is_active()):
                        break
                    ex.cond.wait(0.05 if lag > 0 else 0.2)
                if sb.dead:
                    raise Abort("UNAVAILABLE", "the worker is gone")
                if not context.is_active():
                    return
                data = bytes(ex.out[fd][pos:min(have, pos + max(chunk,
                                                                65536))])
                if not data and end:
                    return
            while data:
                piece = data[:chunk]
                if drop is not None and sent + len(piece) > drop:
                    piece = piece[:drop - sent]
                    if piece:
                        yield self.tcr.TaskExecStdioReadResponse(data=piece)
                    raise Abort("UNAVAILABLE", "stream reset (injected)")
                yield self.tcr.TaskExecStdioReadResponse(data=piece)
                sent += len(piece)
                pos += len(piece)
                data = data[len(piece):]

    def exit_status(self, ex, resp):
        if ex.code is not None:
            resp.code = ex.code
        elif ex.signal is not None:
            resp.signal = ex.signal
        return resp

    def TaskExecWait(self, req, context, md):
        sb, ex = self.exec_of(req)
        with ex.cond:
            while (ex.code is None and ex.signal is None and not sb.dead
                   and context.is_active()):
                ex.cond.wait(0.2)
        if sb.dead:
            raise Abort("UNAVAILABLE", "the worker is gone")
        if not context.is_active():
            raise Abort("DEADLINE_EXCEEDED", "deadline exceeded")
        return self.exit_status(ex, self.tcr.TaskExecWaitResponse())

    def TaskExecPoll(self, req, context, md):
        sb, ex = self.exec_of(req)
        return self.exit_status(ex, self.tcr.TaskExecPollResponse())

    def TaskExecStdinWrite(self, req, context, md):
        sb, ex = self.exec_of(req)
        ex.write_stdin(req.offset, req.data, req.eof)
        return self.tcr.TaskExecStdinWriteResponse()

    def TaskExecStdinStatus(self, req, context, md):
        sb, ex = self.exec_of(req)
        return self.tcr.TaskExecStdinStatusResponse(
            num_bytes_written=ex.stdin_written, closed=ex.stdin_closed)

    def TaskExecStdinWriteStream(self, reqs, context, md):
        ex = None
        off = 0
        for r in reqs:
            kind = r.WhichOneof("payload")
            if ex is None:
                if kind != "start":
                    raise Abort("INVALID_ARGUMENT", "the first message must "
                                "be start")
                sb, ex = self.exec_of(r.start)
                off = r.start.offset
                if off != ex.stdin_written:
                    raise Abort("FAILED_PRECONDITION", "offset mismatch")
            elif kind == "data":
                ex.write_stdin(off, r.data, False)
                off += len(r.data)
            elif kind == "end":
                ex.write_stdin(off, b"", True)
        return self.tcr.TaskExecStdinWriteStreamResponse()

    # ---- TTL and control

    def reaper(self):
        api = self.api
        while True:
            time.sleep(0.1)
            now = time.monotonic()
            with self.lock:
                sbs = list(self.sandboxes.values())
            for sb in sbs:
                if sb.result is None and now >= sb.deadline:
                    sb.finish(api.GenericResult.GENERIC_STATUS_TIMEOUT, 0)

    def stats(self):
        with self.lock:
            sbs = list(self.sandboxes.values())
            out = {"calls": dict(self.calls), "keys": dict(self.keys),
                   "attempts": dict(self.attempts),
                   "headers": dict(self.headers), "peers": dict(self.peers),
                   "deadlines": dict(self.deadlines),
                   "refused_cwd": list(self.refused_cwd),
                   "fired": dict(self.fired),
                   "images": dict(self.images),
                   "image_lookups": list(self.image_lookups)}
        out["alive"] = sum(1 for s in sbs if s.result is None)
        out["peak_alive"] = self.peak_alive
        out["quota_refused"] = self.quota_refused
        out["procs"] = sum(s.live_procs() for s in sbs)
        out["sandboxes"] = [{
            "id": s.id, "task_id": s.task_id,
            "status": None if s.result is None else int(s.result.status),
            "timeout_secs": s.timeout_secs, "tags": s.tags,
            "image_id": s.definition.image_id,
            "milli_cpu": s.definition.resources.milli_cpu,
            "memory_mb": s.definition.resources.memory_mb,
            "workdir": s.def_workdir,
            "router_refused": s.router_refused,
            "entrypoint": list(s.definition.entrypoint_args),
            "regions": list(s.definition.scheduler_placement.regions),
            "env_keys": sorted(k for sid in s.definition.secret_ids
                               for k in self.secrets[sid]),
            "execs": [{"id": e.id, "argv": e.argv, "workdir": e.workdir,
                       "running": e.running()}
                      for e in s.execs.values()],
        } for s in sbs]
        out["running_execs"] = sum(1 for s in sbs for e in s.execs.values()
                                   if e.running())
        return out

    def control(self, raw, context):
        cmd = json.loads(raw.decode())
        op = cmd.get("op")
        if op == "stats":
            res = self.stats()
        elif op == "set":
            with self.lock:
                self.knobs.update(cmd.get("knobs", {}))
                self.knobs_gen += 1
            res = {"ok": True}
        elif op == "kill":
            sb = self.sandboxes.get(cmd.get("id"))
            ok = sb is not None and sb.finish(
                self.api.GenericResult.GENERIC_STATUS_INTERNAL_FAILURE, 0,
                "killed by the test")
            res = {"ok": bool(ok)}
        else:
            res = {"error": "unknown op %r" % op}
        return json.dumps(res).encode()

    def shutdown(self):
        with self.lock:
            sbs = list(self.sandboxes.values())
        for sb in sbs:
            sb.finish(self.api.GenericResult.GENERIC_STATUS_TERMINATED, -1)


def handlers(fake, module, service, router):
    sd = module.DESCRIPTOR.services_by_name[service]
    table = {}
    for m in sd.methods:
        req_cls = getattr(module, m.input_type.name)
        resp_cls = getattr(module, m.output_type.name)
        fn = fake.wrap(m.name, getattr(fake, m.name), router,
                       m.server_streaming)
        if m.client_streaming:
            table[m.name] = grpc.stream_unary_rpc_method_handler(
                fn, req_cls.FromString, resp_cls.SerializeToString)
        elif m.server_streaming:
            table[m.name] = grpc.unary_stream_rpc_method_handler(
                fn, req_cls.FromString, resp_cls.SerializeToString)
        else:
            table[m.name] = grpc.unary_unary_rpc_method_handler(
                fn, req_cls.FromString, resp_cls.SerializeToString)
    full = sd.full_name
    return grpc.method_handlers_generic_handler(full, table)


def gen_messages(args):
    """protoc --python_out from the plugin's own .proto files."""
    out = os.path.join(args.state, "gen")
    os.makedirs(out, exist_ok=True)
    protos = ["api.proto", "task_command_router.proto"]
    subprocess.run([args.protoc, "--python_out=" + out, "-I" + args.proto_dir]
                   + [os.path.join(args.proto_dir, p) for p in protos],
                   check=True)
    sys.path.insert(0, out)
    import api_pb2  # noqa: E402
    import task_command_router_pb2  # noqa: E402
    return api_pb2, task_command_router_pb2


def serve(args):
    if args.tls_cert:  # for `ctl`, which must then speak TLS too
        shutil.copy(args.tls_cert, os.path.join(args.state, "tls.pem"))
    api, tcr = gen_messages(args)
    fake = Fake(args, api, tcr)
    if args.set:
        fake.knobs.update(json.loads(args.set))
    opts = [("grpc.max_receive_message_length", 128 << 20),
            ("grpc.max_send_message_length", 128 << 20)]
    pool = futures.ThreadPoolExecutor(max_workers=256)
    router = grpc.server(pool, options=opts)
    router.add_generic_rpc_handlers(
        (handlers(fake, tcr, "TaskCommandRouter", True),))
    fake.router_port = router.add_insecure_port("127.0.0.1:0")
    cp = grpc.server(pool, options=opts)
    cp.add_generic_rpc_handlers(
        (handlers(fake, api, "ModalClient", False),
         grpc.method_handlers_generic_handler("atpfake.Control", {
             "Call": grpc.unary_unary_rpc_method_handler(fake.control)})))
    if args.tls_cert:
        with open(args.tls_cert, "rb") as f:
            cert = f.read()
        with open(args.tls_key, "rb") as f:
            key = f.read()
        port = cp.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials(
            [(key, cert)]))
    else:
        port = cp.add_insecure_port("127.0.0.1:0")
    router.start()
    cp.start()
    threading.Thread(target=fake.reaper, daemon=True).start()
    stop = threading.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda *_: stop.set())
    tmp = os.path.join(args.state, "ports.tmp")
    with open(tmp, "w") as f:
        f.write("%d %d %d\n" % (port, fake.router_port, os.getpid()))
    os.rename(tmp, os.path.join(args.state, "ports"))
    while not stop.wait(0.5):
        if args.parent and not os.path.exists("/proc/%d" % args.parent):
            break  # the test that started us is gone
    cp.stop(0)
    router.stop(0)
    fake.shutdown()
    shutil.rmtree(fake.sandbox_dir, ignore_errors=True)


def ctl(args):
    with open(os.path.join(args.state, "ports")) as f:
        port = int(f.read().split()[0])
    op = args.op
    req = {"op": op}
    if op == "set":
        req["knobs"] = json.loads(args.arg)
    elif op == "kill":
        req["id"] = args.arg
    cert = os.path.join(args.state, "tls.pem")
    if os.path.exists(cert):
        with open(cert, "rb") as f:
            creds = grpc.ssl_channel_credentials(f.read())
        ch = grpc.secure_channel("127.0.0.1:%d" % port, creds)
    else:
        ch = grpc.insecure_channel("127.0.0.1:%d" % port)
    with ch:
        call = ch.unary_unary("/atpfake.Control/Call")
        res = call(json.dumps(req).encode(), timeout=10)
    print(res.decode())


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--state", required=True)
    s.add_argument("--proto-dir",
                   default=os.path.join(HERE, "..", "..", "plugins", "modal",
                                        "proto"))
    s.add_argument("--protoc", default=os.environ.get("PROTOC") or "protoc")
    s.add_argument("--token-id", default="ak-test")
    s.add_argument("--token-secret", default="as-test")
    s.add_argument("--image", action="append", default=[])
    s.add_argument("--set", help="initial knobs (JSON)")
    s.add_argument("--parent", type=int, help="exit when this pid is gone")
    s.add_argument("--tls-cert", help="serve the control plane over TLS "
                   "with this certificate (PEM)")
    s.add_argument("--tls-key", help="... and this key")
    c = sub.add_parser("ctl")
    c.add_argument("--state", required=True)
    c.add_argument("op", choices=["stats", "set", "kill"])
    c.add_argument("arg", nargs="?")
    args = p.parse_args()
    if args.cmd == "serve":
        if not args.image:
            args.image = ["open-atp:latest"]
        serve(args)
    else:
        ctl(args)


if __name__ == "__main__":
    main()
