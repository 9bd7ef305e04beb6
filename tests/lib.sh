# tests/lib.sh - TAP helpers for the shell tests (POSIX sh).
#
#   . "${ATP_TOP_SRCDIR:?}/tests/lib.sh"
#   run_atp -- true
#   rc_is 0 "true exits 0"
#   like "$err" 'no such directory' "the message names the problem"
#   done_testing
#
# Every check prints "ok N - DESC" or "not ok N - DESC" with diagnostics
# as "# ..." lines.  `todo REASON` marks the next check as TODO.  Each test
# gets a scratch directory $T (its working directory too) with its own
# XDG_CONFIG_HOME and XDG_STATE_HOME, removed on exit together with every
# process registered with track_pid.

tap_n=0
tap_failed=0
tap_todo=
tap_planned=
tap_pids=

ATP_RUN=${ATP_RUN:?ATP_RUN must name the atp-run to test}
PYTHON=${ATP_PYTHON:-/usr/bin/python3}
# How many times slower than native the programs under test run: 1, or
# the whole factor that build-aux/sanitize and build-aux/valgrind set.
# Every bound a test puts on elapsed time (slow N) and every wait for
# something to happen (wait_until) is that many times longer; what the
# programs are asked to do (budgets, graces) is not.
SLOWDOWN=${ATP_TEST_SLOWDOWN:-1}
case $SLOWDOWN in
'' | *[!0-9]* | 0) echo "Bail out! ATP_TEST_SLOWDOWN=$SLOWDOWN: a whole" \
    "factor of 1 or more"; exit 99 ;;
esac
# Longest any single atp-run may take before the test calls it hung.
GUARD_S=${ATP_TEST_GUARD_S:-$((20 * SLOWDOWN))}

T=$(mktemp -d "${TMPDIR:-/tmp}/atp-test.XXXXXX") || {
    echo "Bail out! cannot create a scratch directory"
    exit 99
}

tap_cleanup() {
    for p in $tap_pids; do
        kill -KILL "$p" 2>/dev/null
    done
    cd / && rm -rf "$T"
}
trap tap_cleanup EXIT
trap 'exit 99' INT TERM HUP

# Isolate each test from the caller's and from the others' configuration.
XDG_CONFIG_HOME=$T/xdg-config
XDG_STATE_HOME=$T/xdg-state
export XDG_CONFIG_HOME XDG_STATE_HOME
unset ATP_CONFIG ATP_PLUGIN_DEBUG ATP_LOG
cd "$T" || exit 99

plan() {
    tap_planned=$1
    echo "1..$1"
}

diag() {
    printf '%s\n' "$@" | sed 's/^/# /'
}

# Show a file as diagnostics, at most 40 lines.
diag_file() {
    if [ -s "$2" ]; then
        echo "# $1:"
        head -n 40 "$2" | sed 's/^/#   /'
    else
        echo "# $1: (empty)"
    fi
}

todo() {
    tap_todo=$1
}

# pass DESC / fail DESC: record a result.
pass() {
    tap_n=$((tap_n + 1))
    if [ -n "$tap_todo" ]; then
        echo "ok $tap_n - $1 # TODO $tap_todo"
    else
        echo "ok $tap_n - $1"
    fi
    tap_todo=
    return 0
}

fail() {
    tap_n=$((tap_n + 1))
    if [ -n "$tap_todo" ]; then
        echo "not ok $tap_n - $1 # TODO $tap_todo"
    else
        echo "not ok $tap_n - $1"
        tap_failed=$((tap_failed + 1))
    fi
    tap_todo=
    return 1
}

skip() {
    tap_n=$((tap_n + 1))
    echo "ok $tap_n - $1 # SKIP $2"
}

# under_valgrind: atp-run runs under valgrind (build-aux/valgrind), where
# what a few checks look at is valgrind's: its own /proc/PID/cmdline, and
# posix_spawn's report of a child that failed before its exec (valgrind
# runs glibc's CLONE_VFORK child apart from the parent's memory, so the
# child exits 127 unreported).  Those checks are skipped there, said so;
# the native run makes them.
under_valgrind() {
    [ -n "${ATP_UNDER_VALGRIND:-}" ]
}
VALGRIND_SPAWN="under valgrind, posix_spawn cannot report a failure before exec"
VALGRIND_CMDLINE="under valgrind, /proc/PID/cmdline is valgrind's"

# fail_all WHY DESC...: fail each DESC, saying WHY: the checks of a branch
# that could not run, so that every path counts the same checks.
fail_all() {
    tap_why=$1
    shift
    for tap_d in "$@"; do
        fail "$tap_d"
        diag "$tap_why"
    done
    return 1
}

# ok DESC COMMAND [ARG...]: passes when COMMAND succeeds.
ok() {
    tap_desc=$1
    shift
    if "$@"; then
        pass "$tap_desc"
    else
        fail "$tap_desc"
        diag "failed: $*"
        return 1
    fi
}

# is GOT EXPECTED DESC
is() {
    if [ "$1" = "$2" ]; then
        pass "$3"
    else
        fail "$3"
        diag "got:      '$1'" "expected: '$2'"
        return 1
    fi
}

# like TEXT ERE DESC / unlike TEXT ERE DESC
like() {
    if printf '%s\n' "$1" | grep -Eq -- "$2"; then
        pass "$3"
    else
        fail "$3"
        diag "expected to match: $2"
        printf '%s\n' "$1" | head -n 20 | sed 's/^/#   /'
        return 1
    fi
}

unlike() {
    if printf '%s\n' "$1" | grep -Eq -- "$2"; then
        fail "$3"
        diag "expected not to match: $2"
        printf '%s\n' "$1" | head -n 20 | sed 's/^/#   /'
        return 1
    else
        pass "$3"
    fi
}

done_testing() {
    if [ -z "$tap_planned" ]; then
        echo "1..$tap_n"
    elif [ "$tap_planned" -ne "$tap_n" ]; then
        diag "planned $tap_planned checks but ran $tap_n"
        exit 1
    fi
    # Failures are in the TAP stream; a non-zero exit would count again.
    exit 0
}

track_pid() {
    tap_pids="$tap_pids $1"
}

now_ms() {
    echo $(($(date +%s%N) / 1000000))
}

# run_atp ARG...: run atp-run (stdin from the caller's redirection, else
# the test's, which is /dev/null under make check), with a guard against
# hangs.  Sets rc, out, err (and the files $T/out, $T/err), elapsed_ms and
# hung.
run_atp() {
    tap_t0=$(now_ms)
    timeout -k 5 "$GUARD_S" "$ATP_RUN" "$@" >"$T/out" 2>"$T/err"
    rc=$?
    elapsed_ms=$(($(now_ms) - tap_t0))
    hung=0
    [ "$elapsed_ms" -ge $((GUARD_S * 1000 - 500)) ] && hung=1
    out=$(cat "$T/out")
    err=$(cat "$T/err")
}

# rc_is EXPECTED DESC: the exit status of the last run_atp.
rc_is() {
    if [ "$hung" = 1 ]; then
        fail "$2"
        diag "atp-run hung: killed after ${GUARD_S}s"
    elif [ "$rc" = "$1" ]; then
        pass "$2"
        return 0
    else
        fail "$2"
        diag "exit status $rc, expected $1"
    fi
    diag_file stdout "$T/out"
    diag_file stderr "$T/err"
    return 1
}

# no_crash DESC: the last run ended by itself, without a signal.
no_crash() {
    if [ "$hung" = 0 ] && [ "$rc" -lt 128 ]; then
        pass "$1"
    else
        fail "$1"
        diag "exit status $rc (hung: $hung)"
        diag_file stderr "$T/err"
        return 1
    fi
}

# Does the local plugin offer workdir_mode = copy (an isolated workdir
# that is pushed and pulled)?  Then $T/iso.ini selects it as backend iso.
have_local_copy() {
    [ -f "$T/iso.ini" ] && return 0
    timeout 20 "$ATP_RUN" plugins --json 2>/dev/null |
        grep '"name":"local"' | grep -q '"workdir_mode"' || return 1
    printf '[backend.iso]\nplugin = local\nworkdir_mode = copy\n' \
        >"$T/iso.ini"
}

have_python() {
    [ -x "$PYTHON" ]
}

# json_valid FILE: every line of FILE is one JSON object; prints what is
# wrong otherwise.
json_valid() {
    "$PYTHON" -c '
import json, sys
bad = 0
with open(sys.argv[1], "rb") as f:
    data = f.read()
if data and not data.endswith(b"\n"):
    print("# the output does not end with a newline"); bad += 1
for n, raw in enumerate(data.split(b"\n")[:-1] if data else [], 1):
    try:
        obj = json.loads(raw.decode("utf-8"))
    except Exception as e:
        print("# line %d: %s: %r" % (n, e, raw[:200])); bad += 1
        continue
    if not isinstance(obj, dict):
        print("# line %d is not an object: %r" % (n, raw[:200])); bad += 1
sys.exit(1 if bad else 0)
' "$1"
}

# json_eval FILE EXPR: evaluate a Python expression over `lines` (the
# parsed objects of FILE, one per line; `last` is the last one; `types`
# the list of their "type" fields) and print the result (True/False,
# numbers, strings as they are).
json_eval() {
    "$PYTHON" -c '
import json, sys
lines = []
with open(sys.argv[1], "rb") as f:
    for raw in f.read().split(b"\n"):
        if raw.strip():
            try:
                lines.append(json.loads(raw.decode("utf-8")))
            except Exception:
                lines.append({"type": "<invalid json>"})
last = lines[-1] if lines else {}
types = [o.get("type") if isinstance(o, dict) else None for o in lines]
v = eval("(" + sys.argv[2] + "\n)")
print(v if not isinstance(v, (dict, list)) else json.dumps(v))
' "$1" "$2" 2>&1
}

# json_ok FILE EXPR DESC: EXPR over FILE's lines is true.
json_ok() {
    if ! have_python; then
        skip "$3" "no $PYTHON"
        return 0
    fi
    tap_v=$(json_eval "$1" "$2")
    if [ "$tap_v" = True ]; then
        pass "$3"
    else
        fail "$3"
        diag "not true: $2" "got: $tap_v"
        diag_file "$1" "$1"
        return 1
    fi
}

# json_valid_ok FILE DESC
json_valid_ok() {
    if ! have_python; then
        skip "$2" "no $PYTHON"
        return 0
    fi
    tap_v=$(json_valid "$1")
    if [ $? -eq 0 ] && [ -s "$1" ]; then
        pass "$2"
    else
        fail "$2"
        [ -n "$tap_v" ] && printf '%s\n' "$tap_v"
        [ -s "$1" ] || diag "no output at all"
        return 1
    fi
}

# slow N: N (seconds or milliseconds of a bound on elapsed time) times
# $SLOWDOWN.
slow() {
    echo $(($1 * SLOWDOWN))
}

# wait_until SECONDS COMMAND [ARG...]: poll COMMAND every 50 ms until it
# succeeds (0) or the time (SECONDS times $SLOWDOWN) is up (1).
wait_until() {
    tap_deadline=$(($(now_ms) + $1 * SLOWDOWN * 1000))
    shift
    while :; do
        "$@" && return 0
        [ "$(now_ms)" -ge "$tap_deadline" ] && return 1
        sleep 0.05
    done
}

# Is a process with exactly this command line (a regex for pgrep -f)
# alive?
proc_alive() {
    pgrep -f "$1" >/dev/null 2>&1
}

proc_gone() {
    ! pgrep -f "$1" >/dev/null 2>&1
}

# Kill, by pid, what a test left behind: processes whose command line
# matches a regex unique to this test.
kill_matching() {
    for p in $(pgrep -f "$1"); do
        kill -KILL "$p" 2>/dev/null
    done
}

pid_gone() {
    ! kill -0 "$1" 2>/dev/null
}

# blocked_in PID WHAT: process PID sleeps in the kernel function matching
# WHAT (pipe_read, pipe_write: /proc/PID/wchan).
blocked_in() {
    case $(cat "/proc/$1/wchan" 2>/dev/null) in
    *"$2"*) return 0 ;;
    esac
    return 1
}
