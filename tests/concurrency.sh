# tests/concurrency.sh - many sessions of one backend at once, for the
# concurrency tests of each backend (tests/concurrency.test for local,
# tests/docker/concurrency.test, tests/modal/concurrency.test), sourced
# after the backend's own lib with $ATP_CONFIG (or -c) pointing at it.
#
#   cc_threads N ROUNDS     tests/concurrent: N threads of one process     5 checks
#   cc_processes N GATE     N atp-run processes at once                    3 checks
#
# GATE is 1 when the commands can see the host workdir (shared
# filesystem): each then waits until all N have started, so that the N
# commands provably run at once.

# $ATP_CONCURRENT: the program under a wrapper (build-aux/valgrind).
CONCURRENT=${ATP_CONCURRENT:-${ATP_TOP_BUILDDIR:?}/tests/concurrent}

# The command processes of this test, if any still run.
cc_procs_left() {
    pgrep -f "atp-cc-$$" 2>/dev/null
}
cc_none_running() {
    [ -z "$(cc_procs_left)" ]
}

# cc_threads N ROUNDS [WHAT]
cc_threads() {
    cc_n=$1
    cc_r=$2
    rm -rf "$T/cc"
    mkdir -p "$T/cc"
    "$CONCURRENT" -n "$cc_n" -r "$cc_r" "$T/cc" >"$T/cc.out" 2>"$T/cc.err"
    cc_rc=$?
    diag "$(cat "$T/cc.out")"
    is "$cc_rc" 0 "$cc_n sessions from $cc_n threads of one process, \
$cc_r rounds: all did what they should"
    [ "$cc_rc" -eq 0 ] || diag_file "failures" "$T/cc.err"
    is "$(grep -c "^round [0-9]*: $cc_n sessions, 0 failed, $cc_n at once" \
        "$T/cc.out")" "$cc_r" "... all $cc_n sandboxes existed at once, \
every round, none failed"
    is "$(sed -n 's/^fd growth //p' "$T/cc.out")" 0 \
        "... no descriptor more after round $cc_r than after round 1"
    is "$(sed -n 's/^thread growth //p' "$T/cc.out")" 0 \
        "... no thread more either"
    is "$(cat "$T"/cc/r*-t*/out 2>/dev/null | wc -l | tr -d ' ')" \
        "$((cc_n * cc_r))" "... every session's file came back to its workdir"
}

# cc_processes N GATE [ATP-RUN-OPTION...]
cc_processes() {
    cc_n=$1
    cc_gate=$2
    shift 2
    rm -rf "$T/cp"
    mkdir -p "$T/cp"
    cc_pids=
    i=0
    while [ "$i" -lt "$cc_n" ]; do
        mkdir "$T/cp/w$i"
        echo "payload $i" >"$T/cp/w$i/in"
        if [ "$cc_gate" = 1 ]; then
            # Blocks until the test opens the fifo, after all have started.
            mkfifo "$T/cp/w$i/go"
            cc_cmd='echo started >started; read -r x <go'
        else
            cc_cmd=:
        fi
        "$ATP_RUN" "$@" -w "$T/cp/w$i" -e "ATP_T_ID=$i" -- sh -c \
            "$cc_cmd; cat in; echo \"id=\$ATP_T_ID\" | tee out; : atp-cc-$$" \
            >"$T/cp/$i.out" 2>"$T/cp/$i.err" &
        cc_pids="$cc_pids $!"
        track_pid $!
        i=$((i + 1))
    done
    if [ "$cc_gate" = 1 ]; then
        if wait_until "$GUARD_S" cc_all_started "$cc_n"; then
            pass "$cc_n atp-run processes ran their commands at once"
        else
            fail "$cc_n atp-run processes ran their commands at once"
            diag "only $(ls "$T"/cp/w*/started 2>/dev/null | wc -l) started"
        fi
        for d in "$T"/cp/w*; do
            echo go >"$d/go" &
            cc_openers="${cc_openers:-} $!"
        done
    else
        pass "$cc_n atp-run processes started at once"
    fi
    cc_bad=0
    i=0
    for p in $cc_pids; do
        wait "$p"
        rc=$?
        want=$(printf 'payload %s\nid=%s' "$i" "$i")
        if [ "$rc" -ne 0 ] || [ "$(cat "$T/cp/$i.out")" != "$want" ] ||
            [ "$(cat "$T/cp/w$i/out" 2>/dev/null)" != "id=$i" ]; then
            cc_bad=$((cc_bad + 1))
            [ "$cc_bad" -gt 3 ] || {
                diag "process $i exited $rc"
                diag_file "its stdout" "$T/cp/$i.out"
                diag_file "its stderr" "$T/cp/$i.err"
            }
        fi
        i=$((i + 1))
    done
    is "$cc_bad" 0 "... each exited 0 with its own output and its own file"
    for p in ${cc_openers:-}; do
        kill "$p" 2>/dev/null # a fifo whose command never opened it
        wait "$p" 2>/dev/null
    done
    cc_openers=
    if wait_until 10 cc_none_running; then
        pass "... no command process is left"
    else
        fail "... no command process is left"
        diag "$(cc_procs_left)"
    fi
}

cc_all_started() {
    [ "$(ls "$T"/cp/w*/started 2>/dev/null | wc -l)" -ge "$1" ]
}
