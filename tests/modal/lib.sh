# tests/modal/lib.sh - the Modal tests' helpers, over tests/lib.sh.
#
#   . "${ATP_TOP_SRCDIR:?}/tests/modal/lib.sh"
#   fake_start                      # the fake server, on free ports
#   run_modal -- echo hi            # atp-run -c $T/atp.ini -b modal ...
#   fake_ok 'alive == 0' "nothing is left"
#
# Each test starts its own fake server (tests/modal/fake_modal.py) with its
# state in $T/fake; it exits with the test (its --parent is this shell).
# The test's HOME is $T/home, so no ~/.modal.toml of the caller is read.

. "${ATP_TOP_SRCDIR:?}/tests/lib.sh"

FAKE=$ATP_TOP_SRCDIR/tests/modal/fake_modal.py
TOKEN_ID=ak-test
TOKEN_SECRET=as-test-$$-secret

if ! "$PYTHON" -c 'import grpc, google.protobuf' 2>/dev/null; then
    echo "1..0 # SKIP $PYTHON cannot import grpc and google.protobuf"
    exit 0
fi
if ! command -v "${PROTOC:-protoc}" >/dev/null 2>&1; then
    echo "1..0 # SKIP no protoc to build the fake server's messages"
    exit 0
fi

HOME=$T/home
mkdir -p "$HOME"
export HOME
unset MODAL_TOKEN_ID MODAL_TOKEN_SECRET MODAL_SERVER_URL MODAL_PROFILE \
    MODAL_ENVIRONMENT MODAL_CONFIG_PATH MODAL_MAX_THROTTLE_WAIT

# fake_start [SERVE-ARG...]: start the fake; sets CP_PORT, ROUTER_PORT,
# FAKE_PID and writes $T/atp.ini (backend modal pointing at it).
fake_start() {
    rm -rf "$T/fake"
    mkdir -p "$T/fake"
    "$PYTHON" "$FAKE" serve --state "$T/fake" --parent $$ \
        --token-id "$TOKEN_ID" --token-secret "$TOKEN_SECRET" "$@" \
        >"$T/fake/out" 2>&1 &
    FAKE_PID=$!
    if ! wait_until 20 test -s "$T/fake/ports"; then
        echo "Bail out! the fake modal server did not start"
        sed 's/^/# /' "$T/fake/out"
        exit 99
    fi
    read -r CP_PORT ROUTER_PORT _ <"$T/fake/ports"
    MODAL_TOKEN_ID=$TOKEN_ID
    MODAL_TOKEN_SECRET=$TOKEN_SECRET
    export MODAL_TOKEN_ID MODAL_TOKEN_SECRET
    write_config
}

# The fake ends gracefully, so that it terminates what it still runs.
fake_gone() {
    state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' \
        "/proc/$1/status" 2>/dev/null)
    [ -z "$state" ] || [ "$state" = Z ]
}

fake_stop() {
    [ -n "${FAKE_PID:-}" ] || return 0
    kill -TERM "$FAKE_PID" 2>/dev/null
    wait_until 10 fake_gone "$FAKE_PID" || kill -KILL "$FAKE_PID" 2>/dev/null
    wait "$FAKE_PID" 2>/dev/null
    FAKE_PID=
}
trap 'fake_stop; tap_cleanup' EXIT

# write_config [EXTRA-LINES-OF-[backend.modal]]: $T/atp.ini for the fake.
write_config() {
    mkdir -p "$T/wd"
    {
        printf '[atp]\nbackend = modal\n%s' "${ATP_EXTRA:-}"
        printf '[image]\nname = open-atp:latest\n'
        printf '[backend.modal]\nserver_url = http://127.0.0.1:%s\n' \
            "$CP_PORT"
        for line in "$@"; do
            printf '%s\n' "$line"
        done
    } >"$T/atp.ini"
}

# fake_ctl OP [ARG]: talk to the fake's control service; prints JSON.
fake_ctl() {
    "$PYTHON" "$FAKE" ctl --state "$T/fake" "$@"
}

# fake_set JSON: set knobs (faults, chunk, task_delay, router_delay, ...).
fake_set() {
    fake_ctl set "$1" >/dev/null
}

# fake_eval EXPR: a Python expression over the fake's stats (names:
# alive, procs, calls, keys, attempts, headers, deadlines, sandboxes,
# running_execs, refused_cwd, fired, images, image_lookups).
fake_eval() {
    fake_ctl stats | "$PYTHON" -c '
import json, sys
d = json.load(sys.stdin)
print(eval("(" + sys.argv[1] + "\n)", d))' "$1" 2>&1
}

fake_true() {
    [ "$(fake_eval "$1")" = True ]
}

# fake_ok EXPR DESC: EXPR over the stats is true.
fake_ok() {
    tap_v=$(fake_eval "$1")
    if [ "$tap_v" = True ]; then
        pass "$2"
    else
        fail "$2"
        diag "not true: $1" "got: $tap_v"
        return 1
    fi
}

# no_leak DESC: within 5 s no sandbox is alive and no process of one runs.
no_leak() {
    if wait_until 5 fake_true 'alive == 0 and procs == 0'; then
        pass "$1"
    else
        fail "$1"
        diag "$(fake_eval '[(s["id"], s["status"]) for s in sandboxes]')"
        diag "procs: $(fake_eval procs)"
        return 1
    fi
}

# run_modal ARG...: atp-run ARG... against the fake (the subcommand, if
# any, first: run_modal session ...).
run_modal() {
    case ${1:-} in
    session | check | gc | plugins)
        sub=$1
        shift
        run_atp "$sub" -c "$T/atp.ini" "$@"
        ;;
    *)
        run_atp -c "$T/atp.ini" "$@"
        ;;
    esac
}

# The same with the local backend, for comparisons.
run_local() {
    run_atp -b local "$@"
}

# The status of the last --json run's result line.
json_status() {
    json_eval "$T/out" 'last.get("status")'
}

# Is the core's workdir transfer wired into sessions yet?  (It says
# "workdir transfer is not available in this build" until then.)
core_syncs() {
    ! printf '%s\n' "$err" | grep -q 'transfer is not available in this build'
}
