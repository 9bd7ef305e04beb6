# tests/faults.sh - rows of the fault table (docs/faults.md).
#
# Source it after tests/lib.sh (or a backend's lib).  A fault test injects
# one fault, runs atp-run with --json (run_atp, or in the background with
# its output in a file), then calls
#
#   fault_row SECTION FAULT WANT_STATUS WANT_RC PARTIAL DEADLINE_S LEFT_FN
#
# which checks what a user would notice and records the row:
#   - the result's status class is WANT_STATUS;
#   - atp-run exited WANT_RC;
#   - PARTIAL, unless "-", is an ERE that a stdout line written before the
#     fault must match: the partial output was kept ("!ERE": a known loss,
#     no line may match; the row says so in bold);
#   - atp-run gave up within DEADLINE_S seconds (the configured deadlines
#     that apply, summed by the caller);
#   - LEFT_FN (a command printing a count) says no sandbox is left, polled
#     for a few seconds since a removal may still be finishing.
# That is 4 checks, 5 with PARTIAL: fault_checks PARTIAL says which.  The
# run's output is $FAULT_OUT (default $T/out), its exit status $rc and its
# time $elapsed_ms (as run_atp sets them).  $FAULT_RESET, when set, is
# run after a row that left something, so that the next row starts clean.
#
# Each row goes to $ATP_FAULTS_DIR/DIR-NAME.tsv (the test's directory and
# name), which
# build-aux/faults-table renders into docs/faults.md.  A row whose checks
# failed is recorded as failed, and the renderer refuses it.

FAULTS_DIR=${ATP_FAULTS_DIR:-${ATP_TOP_BUILDDIR:-$T}/tests/faults}
mkdir -p "$FAULTS_DIR" 2>/dev/null
FAULTS_TSV=$FAULTS_DIR/$(basename "$(dirname "$0")")-$(basename "$0" .test).tsv
: >"$FAULTS_TSV"

fault_checks() {
    if [ "$1" = - ]; then echo 4; else echo 5; fi
}

# fault_left_none: a LEFT_FN for a backend with nothing to count.
fault_zero() {
    echo 0
}

fault_left_is_zero() {
    [ "$("$@")" = 0 ]
}

fault_row() {
    fr_sec=$1 fr_fault=$2 fr_status=$3 fr_rc=$4 fr_partial=$5
    fr_deadline=$6 fr_left=$7
    fr_out=${FAULT_OUT:-$T/out}
    fr_bad=0
    fr_got=$(json_eval "$fr_out" 'last.get("status")')
    is "$fr_got" "$fr_status" "$fr_sec: $fr_fault: status $fr_status" ||
        { fr_bad=1; diag_file stderr "${FAULT_ERR:-$T/err}"; }
    is "$rc" "$fr_rc" "$fr_sec: $fr_fault: atp-run exits $fr_rc" || fr_bad=1
    fr_kept=-
    if [ "${fr_partial#!}" != "$fr_partial" ]; then
        # A known loss, asserted so that the row changes when it is mended.
        fr_partial=${fr_partial#!}
        if json_ok "$fr_out" "not any(__import__('re').search(r'''$fr_partial''', o.get('line', '')) for o in lines if o.get('type') == 'stdout')" \
            "$fr_sec: $fr_fault: the output before it is lost (known)"; then
            fr_kept="**no**"
        else
            fr_kept=yes fr_bad=1
        fi
    elif [ "$fr_partial" != - ]; then
        if json_ok "$fr_out" "any(__import__('re').search(r'''$fr_partial''', o.get('line', '')) for o in lines if o.get('type') == 'stdout')" \
            "$fr_sec: $fr_fault: the output before it is kept"; then
            fr_kept=yes
        else
            fr_kept=no fr_bad=1
        fi
    fi
    fr_s=$(awk -v ms="$elapsed_ms" 'BEGIN { printf "%.1f", ms / 1000 }')
    if [ "$elapsed_ms" -le $((fr_deadline * 1000)) ]; then
        pass "$fr_sec: $fr_fault: gave up in $fr_s s, within $fr_deadline s"
    else
        fail "$fr_sec: $fr_fault: gave up in $fr_s s, within $fr_deadline s"
        fr_bad=1
    fi
    if wait_until 10 fault_left_is_zero "$fr_left"; then
        fr_n=0
        pass "$fr_sec: $fr_fault: no sandbox is left"
    else
        fr_n=$("$fr_left")
        fail "$fr_sec: $fr_fault: no sandbox is left"
        diag "$fr_n left"
        # What they are, and what the run said, for the next look.
        [ -z "${FAULT_LEFT_DIAG:-}" ] || $FAULT_LEFT_DIAG
        diag_file "atp-run's stderr" "${FAULT_ERR:-$T/err}"
        fr_bad=1
    fi
    if [ "$fr_bad" = 0 ]; then fr_v=ok; else fr_v=FAILED; fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$fr_sec" "$fr_fault" \
        "$fr_got" "$rc" "$fr_kept" "$fr_s" "$fr_deadline" "$fr_n" "$fr_v" \
        >>"$FAULTS_TSV"
    # What a failed row left must not count against the next one.
    [ "$fr_n" = 0 ] || [ -z "${FAULT_RESET:-}" ] || $FAULT_RESET
}
