#!/usr/bin/env python3
"""A slurmrestd that speaks only v0.0.41, for the v0.0.40+ dialect.

Debian 12's Slurm serves v0.0.38 alone, so the newer dialect is tested
against this server: its replies are the recorded ones in
tests/slurm/v0.0.41/ (made from the data_parser v0.0.41 OpenAPI schema),
with the job's fields filled in.  It runs a submitted job's script on this
host as slurmstepd would (its working directory, its environment and
nothing else, stdout/stderr/stdin files), so the plugin's whole flow runs
against it: probing, submit, state polls, signals, cancel, listing.

It refuses what the real server refuses: a body with "argv", an
"environment" that is not a list of "K=V", a "time_limit" that is not a
{set, infinite, number} object, a script outside "job".  Every request is
appended to LOG as one JSON line.

    rest41.py SOCKET DIR LOG    (SOCKET: the unix socket to serve)
"""
import http.server
import json
import os
import signal
import socketserver
import subprocess
import sys
import threading
import urllib.parse

SOCKET, DIR, LOG = sys.argv[1], sys.argv[2], sys.argv[3]
VERSION = "v0.0.41"
JOBS = {}
LOCK = threading.Lock()
NEXT = [100]


def load(name):
    with open(os.path.join(DIR, name)) as f:
        return json.load(f)


def number(n, is_set=True):
    return {"set": is_set, "infinite": False, "number": n}


class Job:
    def __init__(self, jid, job):
        self.id, self.job = jid, job
        self.cancelled = False
        env = dict(e.split("=", 1) for e in job["environment"])
        cwd = job.get("current_working_directory") or "/tmp"
        if not os.path.isdir(cwd):
            cwd = "/tmp"  # what slurmstepd does
        script = os.path.join(os.path.dirname(LOG), "job-%d.sh" % jid)
        with open(script, "w") as f:
            f.write(job["script"])
        self.script = script
        out = open(job.get("standard_output", "/dev/null"), "ab")
        err = open(job.get("standard_error", "/dev/null"), "ab")
        inp = open(job.get("standard_input") or "/dev/null", "rb")
        self.proc = subprocess.Popen(["/bin/sh", script], cwd=cwd, env=env,
                                     stdout=out, stderr=err, stdin=inp,
                                     start_new_session=True)
        for f in (out, err, inp):
            f.close()

    def signal(self, sig):
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def info(self):
        j = load("job.json")
        rc = self.proc.poll()
        j["job_id"] = self.id
        j["name"] = self.job.get("name", "")
        j["comment"] = self.job.get("comment", "")
        j["current_working_directory"] = self.job.get(
            "current_working_directory", "")
        j["standard_output"] = self.job.get("standard_output", "")
        j["standard_error"] = self.job.get("standard_error", "")
        j["time_limit"] = self.job.get("time_limit", number(0, False))
        ec = j["exit_code"]
        if rc is None:
            j["job_state"] = ["RUNNING"]
            ec["status"] = ["PENDING"]
        elif rc >= 0:
            j["job_state"] = ["COMPLETED"] if rc == 0 else ["FAILED"]
            j["state_reason"] = "None" if rc == 0 else "NonZeroExitCode"
            ec["status"] = ["SUCCESS"] if rc == 0 else ["ERROR"]
            ec["return_code"] = number(rc)
        else:
            j["job_state"] = ["CANCELLED"] if self.cancelled else ["FAILED"]
            ec["status"] = ["SIGNALED"]
            ec["return_code"] = number(0, False)
            ec["signal"] = {"id": number(-rc),
                            "name": signal.Signals(-rc).name[3:]}
        if self.cancelled and rc is not None:
            j["job_state"] = ["CANCELLED"]
        return j


def refuse(body):
    """What slurmrestd v0.0.41 would reject in a submit body, or None."""
    if "script" in body:
        return "the top-level script is deprecated: put it in job"
    job = body.get("job")
    if not isinstance(job, dict):
        return "no job"
    if "argv" in job:
        return "argv"
    if not isinstance(job.get("script"), str):
        return "job.script is missing"
    env = job.get("environment")
    if not isinstance(env, list) or not all(
            isinstance(e, str) and "=" in e for e in env):
        return "environment must be a list of K=V strings"
    tl = job.get("time_limit")
    if tl is not None and not (isinstance(tl, dict) and
                               set(tl) == {"set", "infinite", "number"}):
        return "time_limit must be {set, infinite, number}"
    return None


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def address_string(self):
        return "unix"

    def reply(self, code, obj):
        if isinstance(obj, dict):
            obj.setdefault("meta", None)
            if obj["meta"] is None:
                obj["meta"] = load("meta.json")
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def handle_any(self, method):
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query)
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        body = json.loads(raw) if raw else None
        with open(LOG, "a") as f:
            f.write(json.dumps({"method": method, "path": url.path,
                                "query": url.query, "body": body}) + "\n")
        parts = url.path.strip("/").split("/")
        if len(parts) < 3 or parts[0] != "slurm" or parts[1] != VERSION:
            return self.reply(404, load("error-not-found.json"))
        what = parts[2:]
        with LOCK:
            if method == "GET" and what == ["ping"]:
                return self.reply(200, load("ping.json"))
            if method == "POST" and what == ["job", "submit"]:
                why = refuse(body or {})
                if why:
                    return self.reply(400, {"errors": [{
                        "description": why, "error_number": 9001,
                        "error": "Failure to parse", "source": "submit"}]})
                NEXT[0] += 1
                JOBS[NEXT[0]] = Job(NEXT[0], body["job"])
                r = load("submit.json")
                r["job_id"] = NEXT[0]
                return self.reply(200, r)
            if method == "GET" and what == ["jobs"]:
                r = load("error-unknown-job.json")
                r["errors"] = []
                r["jobs"] = [j.info() for j in JOBS.values()]
                return self.reply(200, r)
            if len(what) == 2 and what[0] == "job" and what[1].isdigit():
                job = JOBS.get(int(what[1]))
                if job is None:
                    return self.reply(500, load("error-unknown-job.json"))
                if method == "GET":
                    r = load("error-unknown-job.json")
                    r["errors"] = []
                    r["jobs"] = [job.info()]
                    return self.reply(200, r)
                if method == "DELETE":
                    sig = query.get("signal", ["KILL"])[0]
                    num = getattr(signal, "SIG" + sig, None)
                    if num is None:
                        return self.reply(400, {"errors": [{
                            "description": "bad signal", "error_number": 9001,
                            "error": "Failure to parse", "source": "signal"}]})
                    if num == signal.SIGKILL:
                        job.cancelled = True
                    job.signal(num)
                    return self.reply(200, {"errors": [], "warnings": []})
        return self.reply(404, load("error-not-found.json"))

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_DELETE(self):
        self.handle_any("DELETE")


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def reap(*_):
    with LOCK:
        for j in JOBS.values():
            j.signal(signal.SIGKILL)
            try:
                os.unlink(j.script)
            except OSError:
                pass
    os._exit(0)


if os.path.exists(SOCKET):
    os.unlink(SOCKET)
signal.signal(signal.SIGTERM, reap)
with Server(SOCKET, Handler) as srv:
    srv.serve_forever()
