#!/usr/bin/python3
"""A faulty proxy in front of a real Docker daemon, for the fault tests.

    dkproxy.py --listen SOCK --upstream SOCK --rules FILE --log FILE

Listens on the unix socket SOCK and passes every HTTP request to the
daemon's socket, one request per connection (it adds "Connection: close",
so that each request is seen), unless a rule of FILE says otherwise.  FILE
is JSON, read again for every request: a list of rules

    {"match": REGEX,        searched in "METHOD PATH" (the query included)
     "action": ...,         see below
     "nth": N,              the first matching request it applies to (1)
     "times": K,            how many in a row (all when absent)
     "status": 500,         "status": the answer's code
     "bytes": B,            "cut": how many bytes of the answer pass
     "after_s": S,          "cut": or for how many seconds it passes
     "marker": TEXT,        "cut": or until TEXT has passed
     "delay": S,            "slow": seconds before the answer passes;
                            "late": before the request passes
     "body": TEXT}          "replace": the answer's body (latin-1 text)

Actions:
  status    answer with that status and {"message": ...}; the daemon never
            sees the request
  stall     read the request and never answer (the connection stays open)
  lose      pass the request on (the daemon does the work) and never pass
            its answer back
  cut       pass B bytes of the answer (head included), S seconds of it or
            all up to TEXT, and close both ends (a hijacked stream cut in
            the middle)
  slow      hold the answer S seconds, then pass it on
  late      hold the request S seconds, then pass it on whole, whether
            the client is still there or not (a daemon that does the work
            after the client gave up), and its answer back if it is
  replace   pass the request on, then answer 200 with BODY instead of the
            daemon's answer (a tar stream of the proxy's choosing)
  truncate  pass on only B bytes of the request body, then close the
            connection to the daemon (an upload cut short)

Each request is logged to the log file as "METHOD PATH -> ACTION", so that
a test can wait for the moment a request is in flight.  Counting is per
rule and starts again when the rules file changes.
"""

import argparse
import json
import os
import re
import socket
import sys
import threading
import time

lock = threading.Lock()
state = {"mtime": None, "rules": [], "hits": {}}


def load_rules(path):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return []
    key = (st.st_mtime_ns, st.st_size, st.st_ino)
    with lock:
        if state["mtime"] != key:
            try:
                with open(path) as f:
                    state["rules"] = json.load(f)
            except ValueError:
                state["rules"] = []
            state["mtime"] = key
            state["hits"] = {}
        return list(enumerate(state["rules"]))


def pick(rules, line):
    for i, r in rules:
        if not re.search(r.get("match", "$^"), line):
            continue
        with lock:
            n = state["hits"].get(i, 0) + 1
            state["hits"][i] = n
        first = r.get("nth", 1)
        times = r.get("times")
        if n >= first and (times is None or n < first + times):
            return r
    return None


def read_head(sock):
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = sock.recv(65536)
        if not d:
            return None, buf
        buf += d
        if len(buf) > 1 << 20:
            return None, buf
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head, rest


def pump(src, dst, limit=None):
    """Copy src to dst until EOF (or LIMIT bytes); half-close dst."""
    sent = 0
    try:
        while True:
            want = 65536 if limit is None else min(65536, limit - sent)
            if want <= 0:
                break
            d = src.recv(want)
            if not d:
                break
            dst.sendall(d)
            sent += len(d)
    except OSError:
        pass
    if limit is None:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
    return sent


def pump_for(src, dst, seconds):
    """Copy src to dst for SECONDS (or until EOF)."""
    end = time.monotonic() + seconds
    try:
        while True:
            left = end - time.monotonic()
            if left <= 0:
                break
            src.settimeout(left)
            try:
                d = src.recv(65536)
            except socket.timeout:
                break
            if not d:
                break
            dst.sendall(d)
    except OSError:
        pass


def pump_until(src, dst, marker):
    """Copy src to dst until MARKER has passed (or EOF)."""
    seen = b""
    try:
        while marker not in seen:
            d = src.recv(65536)
            if not d:
                break
            dst.sendall(d)
            seen = (seen + d)[-(len(marker) + 65536):]
    except OSError:
        pass


def close_all(*socks):
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            s.close()
        except OSError:
            pass


def answer(cli, status, body, ctype="application/json"):
    reason = {200: "OK", 404: "Not Found", 409: "Conflict",
              500: "Internal Server Error",
              503: "Service Unavailable"}.get(status, "Error")
    head = ("HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
            "Connection: close\r\n\r\n" % (status, reason, ctype, len(body)))
    try:
        cli.sendall(head.encode() + body)
    except OSError:
        pass


def late(cli, lines, rest, args):
    """Pass a request on, late: the body that came (a client that gave up
    sends no more), and the daemon's answer back while the client is
    there; the connection to the daemon stays open until it answers."""
    cli.settimeout(0.2)
    try:
        while True:
            d = cli.recv(65536)
            if not d:
                break
            rest += d
    except OSError:
        pass
    hdrs = [h for h in lines[1:] if not h.lower().startswith(b"connection:")]
    hdrs.append(b"Connection: close")
    up = socket.socket(socket.AF_UNIX)
    try:
        up.connect(args.upstream)
        up.sendall(b"\r\n".join([lines[0]] + hdrs) + b"\r\n\r\n" + rest)
        while True:
            d = up.recv(65536)
            if not d:
                break
            try:
                cli.sendall(d)
            except OSError:
                pass
    except OSError:
        pass
    finally:
        close_all(up)


def handle(cli, args):
    up = None
    try:
        head, rest = read_head(cli)
        if head is None:
            return
        lines = head.split(b"\r\n")
        reqline = lines[0].decode("latin-1")
        parts = reqline.split(" ")
        line = " ".join(parts[:2])
        rule = pick(load_rules(args.rules), line)
        action = rule.get("action") if rule else "pass"
        with open(args.log, "a") as f:
            f.write("%s -> %s\n" % (line, action))
        if action == "status":
            msg = rule.get("message", "injected by the test proxy")
            answer(cli, int(rule.get("status", 500)),
                   json.dumps({"message": msg}).encode())
            return
        if action == "stall":
            while cli.recv(65536):
                pass
            return
        if action == "late":
            time.sleep(float(rule.get("delay", 1)))
            late(cli, lines, rest, args)
            return
        # Pass the request on, one per connection.
        hdrs = [h for h in lines[1:]]
        upgrade = any(h.lower().startswith(b"upgrade:") for h in hdrs)
        if not upgrade:
            hdrs = [h for h in hdrs
                    if not h.lower().startswith(b"connection:")]
            hdrs.append(b"Connection: close")
        up = socket.socket(socket.AF_UNIX)
        try:
            up.connect(args.upstream)
        except OSError as e:
            answer(cli, 502, json.dumps(
                {"message": "the daemon cannot be reached: %s" % e}).encode())
            return
        up.sendall(b"\r\n".join([lines[0]] + hdrs) + b"\r\n\r\n")
        if action == "truncate":
            limit = int(rule.get("bytes", 0))
            body = rest[:limit]
            up.sendall(body)
            left = limit - len(body)
            if left > 0:
                pump(cli, up, left)
            close_all(up, cli)
            return
        if rest:
            up.sendall(rest)
        t = threading.Thread(target=pump, args=(cli, up), daemon=True)
        t.start()
        if action == "lose":
            while up.recv(65536):
                pass
            t.join()  # until the client gives up
            return
        if action == "replace":
            while up.recv(65536):
                pass
            answer(cli, 200, rule.get("body", "").encode("latin-1"),
                   "application/x-tar")
            return
        if action == "slow":
            d = up.recv(65536)
            time.sleep(float(rule.get("delay", 1)))
            if d:
                cli.sendall(d)
        if action == "cut":
            if "marker" in rule:
                pump_until(up, cli, rule["marker"].encode("latin-1"))
            elif "after_s" in rule:
                pump_for(up, cli, float(rule["after_s"]))
            else:
                pump(up, cli, int(rule.get("bytes", 0)))
            close_all(up, cli)
            return
        pump(up, cli)
        t.join()
    except OSError:
        pass
    finally:
        close_all(cli)
        if up is not None:
            close_all(up)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--rules", required=True)
    ap.add_argument("--log", required=True)
    args = ap.parse_args()
    srv = socket.socket(socket.AF_UNIX)
    try:
        os.unlink(args.listen)
    except FileNotFoundError:
        pass
    srv.bind(args.listen)
    srv.listen(64)
    open(args.log, "a").close()
    while True:
        cli, _ = srv.accept()
        threading.Thread(target=handle, args=(cli, args), daemon=True).start()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
