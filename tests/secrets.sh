# tests/secrets.sh - what the secrets tests share: the secret values, and
# a scan of /proc for them.  Source it after tests/lib.sh.
#
# Each value has a head of 8 characters found nowhere else, so that a piece
# of one is found as surely as the whole.  Only files and the scanner's
# own memory ever hold them: never a command line of the test.

SECRET_NAMES="FROM_ENV_SECTION FROM_BACKEND CLI_TOKEN CALLER_SECRET"
printf '%s\n' \
    "sEnvSect-4b1c9e27d0a1" \
    "sBackend-77aa01f3e2b4" \
    "sCliArgs-5d0e8c3b9a66" \
    "sCallerE-1f2e3d4c5b7c" >"$T/secret-values"
# Read back into variables (still off every command line: the shell
# expands them only into files, environments and here-documents).
{
    read -r V_ENV
    read -r V_BACKEND
    read -r V_CLI
    read -r V_CALLER
} <"$T/secret-values"

# secrets_scan ATP_PID MODE: look for every value (and every head of one)
# in /proc/*/cmdline and /proc/*/environ of every process this test can
# read.  MODE "local": the descendants of ATP_PID are the command, which
# has the values in its environment by design; MODE "netns": processes in
# another pid namespace than ours are the sandbox's (a container).  ATP_PID
# itself may carry CALLER_SECRET in its environment, where `-e KEY` takes
# it from.  Prints one line per leak ("PID COMM cmdline|environ NAME"),
# then "scanned N atp-run=yes|no command-with-values=K".
secrets_scan() {
    "$PYTHON" - "$T/secret-values" "$1" "$2" "$SECRET_NAMES" <<'PY'
import os, sys

values = [l.rstrip("\n") for l in open(sys.argv[1]) if l.strip()]
atp_pid, mode = int(sys.argv[2]), sys.argv[3]
names = sys.argv[4].split()
me = os.getpid()

def read(pid, what):
    try:
        with open("/proc/%d/%s" % (pid, what), "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return None

def ppid(pid):
    s = read(pid, "stat")
    return int(s[s.rindex(")") + 2:].split()[1]) if s else 0

pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
parent = {p: ppid(p) for p in pids}

def below_atp(p):
    seen = 0
    while p > 1 and seen < 64:
        p = parent.get(p, 0)
        if p == atp_pid:
            return True
        seen += 1
    return False

try:
    my_ns = os.readlink("/proc/self/ns/pid")
except OSError:
    my_ns = None

def in_sandbox(p):
    if mode == "local":
        return below_atp(p)
    try:
        return os.readlink("/proc/%d/ns/pid" % p) != my_ns
    except OSError:
        return False

scanned, atp_seen, command_has = 0, False, 0
for p in pids:
    if p == me:
        continue
    cmdline, environ = read(p, "cmdline"), read(p, "environ")
    if cmdline is None and environ is None:
        continue
    scanned += 1
    comm = (read(p, "comm") or "?").strip()
    if p == atp_pid:
        atp_seen = True
    sandbox = in_sandbox(p)
    if sandbox and environ and all(v in environ for v in values):
        command_has += 1
    for i, v in enumerate(values):
        for what, text in (("cmdline", cmdline), ("environ", environ)):
            if not text or v[:8] not in text:
                continue
            if what == "environ" and sandbox:
                continue  # the command's own environment, by design
            if what == "environ" and p == atp_pid and \
                    names[i] == "CALLER_SECRET":
                continue  # -e KEY takes it from atp-run's environment
            print("%d %s %s %s" % (p, comm, what, names[i]))
print("scanned %d atp-run=%s command-with-values=%d"
      % (scanned, "yes" if atp_seen else "no", command_has))
PY
}

# secrets_absent FILE...: no value, nor the head of one, in FILEs.
secrets_absent() {
    "$PYTHON" - "$T/secret-values" "$@" <<'PY'
import sys
values = [l.rstrip("\n") for l in open(sys.argv[1]) if l.strip()]
bad = 0
for path in sys.argv[2:]:
    text = open(path, "rb").read().decode("utf-8", "replace")
    for v in values:
        if v[:8] in text:
            i = text.index(v[:8])
            print("# %s: %r" % (path, text[max(0, i - 40):i + 40]))
            bad += 1
sys.exit(1 if bad else 0)
PY
}
