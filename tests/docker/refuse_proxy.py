#!/usr/bin/python3
"""A unix-socket proxy in front of the test dockerd that refuses some
container creations the way a loaded daemon, or a registry or an API
gateway in front of one, does: with an HTTP error status and a JSON
message.  Everything else is passed through byte for byte.

    refuse_proxy.py LISTEN_SOCK DAEMON_SOCK STATE_DIR

STATE_DIR/refuse holds what to do, read at every creation: "STATUS N"
refuses the next N creations with STATUS (429, 500, 503); a missing or
empty file refuses nothing.  Each refusal appends a line to
STATE_DIR/refused, and every creation "STATUS SECONDS" (0 when passed on,
SECONDS of the monotonic clock) to STATE_DIR/creates.  Every connection carries one request (the proxy asks
the daemon to close after it), so each request is seen.
"""

import json
import os
import socket
import sys
import threading
import time

LISTEN, DAEMON, STATE = sys.argv[1], sys.argv[2], sys.argv[3]
lock = threading.Lock()


def recv_head(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None, b""
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    return head.decode("latin-1"), rest


def log_create(status):
    with open(os.path.join(STATE, "creates"), "a") as f:
        f.write("%d %.6f\n" % (status or 0, time.monotonic()))


def take_refusal():
    """The status to refuse this creation with, or None."""
    path = os.path.join(STATE, "refuse")
    with lock:
        status = refusal(path)
        log_create(status)
        return status


def refusal(path):
    """Take one refusal off the count in @path; its status, or None."""
    try:
        with open(path) as f:
            words = f.read().split()
    except OSError:
        return None
    if len(words) != 2 or int(words[1]) <= 0:
        return None
    status, left = int(words[0]), int(words[1]) - 1
    with open(path + ".tmp", "w") as f:
        f.write("%d %d\n" % (status, left))
    os.rename(path + ".tmp", path)
    with open(os.path.join(STATE, "refused"), "a") as f:
        f.write("%d\n" % status)
    return status


def pipe(src, dst):
    try:
        while True:
            b = src.recv(65536)
            if not b:
                break
            dst.sendall(b)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def serve(conn):
    head, rest = recv_head(conn)
    if head is None:
        conn.close()
        return
    lines = head.split("\r\n")
    method, path = lines[0].split(" ")[:2]
    headers = [h for h in lines[1:] if h]
    upgrade = any(h.lower().startswith("upgrade:") for h in headers)
    if method == "POST" and "/containers/create" in path:
        status = take_refusal()
        if status is not None:
            n = 0
            for h in headers:
                if h.lower().startswith("content-length:"):
                    n = int(h.split(":", 1)[1])
            while len(rest) < n:
                b = conn.recv(65536)
                if not b:
                    break
                rest += b
            body = json.dumps({"message": "test proxy: refused (%d)"
                               % status}).encode()
            reason = {429: "Too Many Requests", 500: "Internal Server Error",
                      503: "Service Unavailable"}.get(status, "Error")
            conn.sendall(("HTTP/1.1 %d %s\r\nContent-Type: application/json"
                          "\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                          % (status, reason, len(body))).encode() + body)
            conn.close()
            return
    if not upgrade:
        headers = [h for h in headers
                   if not h.lower().startswith("connection:")]
        headers.append("Connection: close")
    up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        up.connect(DAEMON)
    except OSError:
        conn.close()
        return
    up.sendall(("\r\n".join([lines[0]] + headers) + "\r\n\r\n")
               .encode("latin-1") + rest)
    t = threading.Thread(target=pipe, args=(up, conn), daemon=True)
    t.start()
    pipe(conn, up)
    t.join()
    conn.close()
    up.close()


def main():
    try:
        os.unlink(LISTEN)
    except OSError:
        pass
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ls.bind(LISTEN)
    ls.listen(128)
    while True:
        conn, _ = ls.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


main()
