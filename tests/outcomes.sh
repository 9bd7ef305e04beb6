# tests/outcomes.sh - one result shape per outcome, on every backend.
#
# Source it after tests/lib.sh (or a backend's lib), then call
#   outcome_table LABEL ATP-RUN-ARG...
# which runs the same commands through atp-run with the given arguments
# (configuration, backend) and checks that each ends with the same
# exit_code, signal and status, whatever the backend: a clean exit, an
# exit code of the command's own (124 included), a death by signal, a
# timeout (SIGTERM, and SIGKILL after the grace for a command that
# ignores TERM) and a cancel.  OUTCOME_CHECKS is how many checks a call
# makes, for the caller's plan.  The configuration must set
# kill_grace_s = 1.

OUTCOME_CHECKS=9

# outcome_row DESC EXIT_CODE SIGNAL STATUS ATP-RUN-ARG...: a one-shot
# run must end with EXIT_CODE SIGNAL STATUS (None for none).
outcome_row() {
    or_desc=$1 or_code=$2 or_sig=$3 or_status=$4
    shift 4
    run_atp "$@"
    json_ok "$T/out" "(last.get('exit_code'), last.get('signal'), last.get('status')) == ($or_code, $or_sig, '$or_status')" \
        "$or_desc: $or_status with exit_code $or_code and signal $or_sig"
}

outcome_table() {
    label=$1
    shift
    outcome_row "$label: exit 0" 0 None ok \
        "$@" --json -t 30 -- true
    outcome_row "$label: exit 3" 3 None exit \
        "$@" --json -t 30 -- sh -c 'exit 3'
    outcome_row "$label: its own exit 124" 124 None exit \
        "$@" --json -t 30 -- sh -c 'exit 124'
    outcome_row "$label: killed by SIGTERM" None 15 exit \
        "$@" --json -t 30 -- sh -c 'kill -TERM $$'
    outcome_row "$label: killed by SIGKILL" None 9 exit \
        "$@" --json -t 30 -- sh -c 'kill -KILL $$'
    outcome_row "$label: out of budget" None 15 timeout \
        "$@" --json -t 1 -- sleep 30
    # (The budget must outlast the command's start, or the TERM comes
    # before the trap: OUTCOME_START_S where a start takes seconds, and
    # $SLOWDOWN seconds under a sanitizer or valgrind.)
    outcome_row "$label: out of budget, TERM ignored" None 9 timeout \
        "$@" --json -t "${OUTCOME_START_S:-$SLOWDOWN}" -- \
        sh -c 'trap "" TERM; sleep 30'
    # A cancel: SIGINT to atp-run once the command runs.
    rm -f "$T/cancel.out"
    env --default-signal=INT "$ATP_RUN" "$@" --json -t 60 -- \
        sh -c 'echo ready; sleep 30' >"$T/cancel.out" 2>"$T/cancel.err" &
    outcome_pid=$!
    track_pid $outcome_pid
    if wait_until 60 grep -q '"line":"ready"' "$T/cancel.out"; then
        kill -INT $outcome_pid
        wait_until 30 pid_gone_or_zombie $outcome_pid
        wait $outcome_pid
        is "$?" 130 "$label: a cancel makes atp-run exit 130"
        json_ok "$T/cancel.out" "(last.get('exit_code'), last.get('signal'), last.get('status')) == (None, 15, 'cancelled')" \
            "$label: cancelled with exit_code None and signal 15"
    else
        kill -KILL $outcome_pid 2>/dev/null
        fail "$label: a cancel makes atp-run exit 130"
        fail "$label: cancelled with exit_code None and signal 15"
        diag_file stderr "$T/cancel.err"
    fi
}

pid_gone_or_zombie() {
    outcome_state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' \
        "/proc/$1/status" 2>/dev/null)
    [ -z "$outcome_state" ] || [ "$outcome_state" = Z ]
}
