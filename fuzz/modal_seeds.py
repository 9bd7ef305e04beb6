#!/usr/bin/python3
"""fuzz/modal_seeds.py - write the seed corpus of the modal targets
(fuzz/corpus/modal_flow, fuzz/corpus/modal_grpc) and the crafted inputs
of fuzz/regress/modal_flow and fuzz/regress/modal_grpc.

The answers are protobuf messages, encoded here with `protoc --encode`
from plugins/modal/proto, in the script format of fuzz/fake_curl.c, one
answer per call in the order the plugin makes its calls.  When that
order changes (a new call in session open, say), change SESSION below
and run this again from the top of the source tree:

    python3 fuzz/modal_seeds.py
"""
import base64
import json
import os
import struct
import subprocess

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTO = os.path.join(TOP, "plugins", "modal", "proto")


def enc(msg, text=""):
    """The bytes of message MSG (a short name) written in text format."""
    router = msg.startswith("TaskExec")
    full = ("modal.task_command_router." if router else "modal.client.") + msg
    proto = "task_command_router.proto" if router else "api.proto"
    return subprocess.run(["protoc", "--encode=" + full, "-I" + PROTO, proto],
                          input=text.encode(), capture_output=True,
                          check=True).stdout


def octal_escape(b):
    return "".join("\\x%02x" % c for c in b)


def ans(msgs=(), status=0, http=0, transport=False, hang=False,
        trailers_only=False, raw=None, message=None, details=None, cut=0):
    """One answer of fake_curl.c's script (see the format there)."""
    flags = (http | (4 if transport else 0) | (8 if hang else 0) |
             (16 if trailers_only else 0) | (32 if raw is not None else 0) |
             (64 if message is not None else 0) |
             (128 if details is not None else 0))
    out = bytes([flags, status, cut])
    if raw is not None:
        out += struct.pack(">H", len(raw)) + raw
    else:
        out += bytes([len(msgs)])
        out += b"".join(struct.pack(">H", len(m)) + m for m in msgs)
    if message is not None:
        out += bytes([len(message)]) + message
    if details is not None:
        out += struct.pack(">H", len(details)) + details
    return out


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jwt(payload):
    return (b64u(b'{"alg":"HS256","typ":"JWT"}') + "." + b64u(payload) +
            "." + b64u(b"sig"))


def write(path, data):
    with open(os.path.join(TOP, "fuzz", path), "wb") as f:
        f.write(data)


GOOD_JWT = jwt(json.dumps({"task_id": "ta-1", "exp": 4102444800}).encode())

app = ans([enc("AppGetOrCreateResponse", 'app_id: "ap-1"')])
img = ans([enc("ImageGetByTagResponse", 'image_id: "im-1"')])
img_id = ans([enc("ImageFromIdResponse", 'image_id: "im-0123456789abcdef"')])
sec = ans([enc("SecretGetOrCreateResponse", 'secret_id: "st-1"')])
sbx = ans([enc("SandboxCreateResponse", 'sandbox_id: "sb-1"')])
notyet = ans([enc("SandboxGetTaskIdResponse")])
task = ans([enc("SandboxGetTaskIdResponse", 'task_id: "ta-1"')])


def router(token):
    return ans([enc("TaskGetCommandRouterAccessResponse",
                    'jwt: "%s" url: "http://localhost:2/"' % token)])


start = ans([enc("TaskExecStartResponse")])
out = ans([enc("TaskExecStdioReadResponse", 'data: "hi\\n"'),
           enc("TaskExecStdioReadResponse", 'data: "there\\n"')], cut=7)
err = ans([enc("TaskExecStdioReadResponse", 'data: "err\\n"')])
wait0 = ans([enc("TaskExecWaitResponse", "code: 0")])
sig9 = ans([enc("TaskExecWaitResponse", "signal: 9")])
stdin = ans([enc("TaskExecStdinWriteResponse")])
term = ans([enc("SandboxTerminateResponse")])
unav = ans(status=14, trailers_only=True)


def retry_policy(secs):
    pol = enc("RPCRetryPolicy", "retry_after_secs: %s" % secs)
    return enc("RPCStatus", 'code: 8 message: "slow down" details { '
               'type_url: "type.googleapis.com/modal.client.RPCRetryPolicy" '
               'value: "%s" }' % octal_escape(pol))


throttled = ans(status=8, trailers_only=True, message=b"slow%20down",
                details=retry_policy("0.5"))

# The calls of a session, in the plugin's order: open (app, image,
# secret, sandbox, task id until scheduled, router access), one exec
# (start; stdout, stderr and the wait side by side; the stdin EOF),
# close (terminate).
OPEN = app + img + sec + sbx + notyet + task + router(GOOD_JWT)
EXEC = start + out + err + wait0 + stdin
SESSION = OPEN + EXEC + term

lst = ans([enc("SandboxListResponse",
               'sandboxes { id: "sb-0123" created_at: 1700000000.5 '
               'app_id: "ap-1" tags { tag_name: "atp_run_id" '
               'tag_value: "fuzzrun" } } sandboxes { id: "sb-9" '
               'created_at: 1700000001 }')])
empty = ans([enc("SandboxListResponse")])
drop = ans([enc("TaskExecStdioReadResponse", 'data: "par"')], status=14,
           message=b"stream%20reset")
resumed = ans([enc("TaskExecStdioReadResponse", 'data: "tial\\n"')])
dead = ans([enc("SandboxWaitResponse",
                'result { status: GENERIC_STATUS_TERMINATED exitcode: 137 '
                'exception: "killed" }')])
ended = ans([enc("SandboxGetTaskIdResponse",
                 'task_result { status: GENERIC_STATUS_FAILURE exitcode: 1 '
                 'exception: "image pull failed" }')])

flow = {
    "check": bytes([0]) + app + img,
    "check_no_app": bytes([0]) + ans(status=5, trailers_only=True,
                                     message=b"App%20not%20found") + img,
    "session": bytes([1]) + SESSION,
    "session_image_id": bytes([1 | 4 | 32]) + app + img_id + sec + sbx +
    task + router(GOOD_JWT) + EXEC + term,
    "session_two_execs": bytes([1 | 16 | 64]) + app + img + sec + sbx +
    task + router(GOOD_JWT) + start + out + err + sig9 + stdin + EXEC +
    term,
    "session_resume": bytes([1]) + app + img + sec + sbx + task +
    router(GOOD_JWT) + start + drop + err + wait0 + stdin + resumed + term,
    "session_throttled": bytes([1]) + app + throttled + img + sec + sbx +
    task + router(GOOD_JWT) + EXEC + term,
    "session_dead": bytes([1]) + app + img + sec + sbx + task +
    router(GOOD_JWT) + start + unav * 6 + dead + term,
    "session_task_failed": bytes([1]) + app + img + sec + sbx + ended + term,
    "session_refused_router": bytes([1]) + app + img + sec + sbx + task +
    ans([enc("TaskGetCommandRouterAccessResponse",
             'jwt: "x" url: "ftp://h"')]) + term,
    "reap_sandbox": bytes([2]) + app + lst + term + empty,
    "reap_run": bytes([3]) + app + lst + term + term + empty,
    "reap_not_found": bytes([2]) + app + empty,
}
for name, data in flow.items():
    write("corpus/modal_flow/" + name, data)

# Crafted regression inputs: a router JWT with an exp near INT64_MIN, and
# exit statuses no process can have.
for name, payload in [("jwt-exp-int64-min", b'{"exp":-9223372036854775808}'),
                      ("jwt-exp-minus-1e300", b'{"exp":-1e300}')]:
    write("regress/modal_flow/" + name, bytes([1]) + app + img + sec + sbx +
          task + router(jwt(payload)) + start +
          ans([enc("TaskExecStdioReadResponse", 'data: "x"')]) + ans() +
          wait0 + ans() + term)
write("regress/modal_flow/exit-code-300", bytes([1]) + OPEN + start + out +
      err + ans([enc("TaskExecWaitResponse", "code: 300")]) + stdin + term)

wres = enc("SandboxWaitResponse", "result { status: GENERIC_STATUS_SUCCESS }")
grpc = {
    "unary_ok": bytes([0]) + ans([wres]),
    "unary_retry_then_ok": bytes([0]) + unav +
    ans(status=13, message=b"oops") + ans([wres], cut=3),
    "unary_throttle": bytes([0x10]) + throttled + ans([wres]),
    "unary_two_messages": bytes([0]) + ans([wres, wres]),
    "unary_no_status": bytes([0]) + ans([wres], status=255) +
    ans([wres], http=2),
    "unary_router": bytes([1 | 4]) +
    ans([enc("TaskGetCommandRouterAccessResponse",
             'jwt: "a.b.c" url: "https://r"')]),
    "unary_list": bytes([2]) + lst,
    "unary_exec_wait": bytes([3 | 4]) + ans(status=14) +
    ans([enc("TaskExecWaitResponse", "code: 3")]),
    "stream_raw": bytes([8]) + ans(raw=b"\x00\x00\x00\x00\x05\x0a\x03abc" +
                                   b"\x00\x00\x00\x00\x00", cut=2),
    "stream_split": bytes([8]) +
    ans([enc("TaskExecStdioReadResponse", 'data: "%s"' % ("x" * 300))] * 3,
        cut=100),
    "stream_compressed": bytes([8]) + ans(raw=b"\x01\x00\x00\x00\x01\x00"),
    "stream_truncated": bytes([8]) + ans(raw=b"\x00\x00\x00\x00\x09\x0a\x03"),
    "hang_timeout": bytes([0]) + ans(hang=True) + ans([wres]),
    "transport": bytes([0]) + ans(transport=True) + ans([wres]),
}
for name, data in grpc.items():
    write("corpus/modal_grpc/" + name, data)
write("regress/modal_grpc/retry-after-inf", bytes([0x10]) +
      ans(status=8, trailers_only=True, message=b"slow%20down",
          details=retry_policy("inf")) + ans([wres]))
