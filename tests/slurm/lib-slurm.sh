# tests/slurm/lib-slurm.sh - what every slurm test needs: tests/lib.sh, a
# private single-node cluster started for the test program (cluster.sh:
# munged, slurmctld, slurmd, slurmrestd over a unix socket and over TCP
# with JWT) and stopped at its end, a shared directory, a configuration
# with one backend per transport, and helpers that ask Slurm directly
# what a user would see with squeue.
#
#   . "${ATP_TOP_SRCDIR:?}/tests/slurm/lib-slurm.sh"
#
# A cluster that cannot start is a failure (Bail out!), never a skip: the
# slurm tests are part of make check.

. "${ATP_TOP_SRCDIR:?}/tests/lib.sh"
. "$ATP_TOP_SRCDIR/tests/slurm/cluster.sh"

# Jobs start about a second after their submission; more when loaded.
GUARD_S=${ATP_TEST_GUARD_S:-90}

# Short paths: unix socket paths are limited to 108 bytes.
sl_dir=$(mktemp -d /tmp/atp-sl.XXXXXX) || {
    echo "Bail out! cannot create a directory for the cluster"
    exit 99
}
chmod 755 "$sl_dir"

sl_cleanup() {
    slurm_down
    rm -rf "$sl_dir" 2>/dev/null
}
trap 'sl_cleanup; tap_cleanup' EXIT

if ! slurm_up "$sl_dir/c" 2>"$sl_dir/start.err"; then
    echo "Bail out! the private Slurm cluster cannot start: $(tr '\n' ' ' \
        <"$sl_dir/start.err")"
    exit 1
fi

# The filesystem "the compute nodes share" (one machine: any directory).
SHARED=$sl_dir/shared
mkdir -p "$SHARED/wd"
WD=$SHARED/wd

# sl_config [LINE...]: a configuration with backends
#   slurm  mode = rest, slurmrestd over its unix socket (root, local auth)
#   scli   mode = cli (sbatch, squeue, scancel, srun)
#   sjwt   mode = rest, slurmrestd over TCP with a token (SLURM_JWT)
# each LINE added to [backend.slurm].  Sets and exports ATP_CONFIG.
# kill_grace_s is 3, not 1 as for the other backends: a TERM reaches a job
# or a step through scancel or slurmrestd, slurmctld and slurmd, which on
# a loaded 2-core machine takes more than a second, and the KILL would
# then come first.
sl_config() {
    {
        printf '[atp]\nbackend = slurm\nkill_grace_s = 3\n'
        printf '[backend.slurm]\nmode = rest\nurl = unix://%s\n' \
            "$SLURM_REST_UNIX"
        printf 'shared_dir = %s\npoll_interval_s = 500ms\n' "$SHARED"
        for l in "$@"; do
            printf '%s\n' "$l"
        done
        printf '[backend.scli]\nplugin = slurm\nmode = cli\n'
        printf 'shared_dir = %s\npoll_interval_s = 500ms\n' "$SHARED"
        printf '[backend.sjwt]\nplugin = slurm\nurl = %s\n' "$SLURM_REST_URL"
        printf 'shared_dir = %s\npoll_interval_s = 500ms\n' "$SHARED"
    } >"$T/atp.ini"
    ATP_CONFIG=$T/atp.ini
    export ATP_CONFIG
}

# ---- asking Slurm --------------------------------------------------------

# Jobs that are queued, running, completing or suspended.
sl_live() {
    squeue -h -t PD,R,CG,S,CF -o '%i %T %j %k' 2>/dev/null
}

sl_live_count() {
    sl_live | wc -l | tr -d ' '
}

sl_live_is() {
    [ "$(sl_live_count)" = "$1" ]
}

# Run directories left under the shared directory.
sl_rundirs() {
    ls "$SHARED/.atp" 2>/dev/null | wc -l | tr -d ' '
}

sl_clean() {
    sl_live_is 0 && [ "$(sl_rundirs)" = 0 ]
}

# sl_none_left DESC: no job is queued or running and no run directory is
# left (polled: a cancel takes a moment to show).
sl_none_left() {
    if wait_until 30 sl_clean; then
        pass "$1"
    else
        fail "$1"
        diag "jobs left:" "$(sl_live)" "run directories: $(ls "$SHARED/.atp" 2>/dev/null)"
        sl_reset
        return 1
    fi
}

# Cancel everything, so that one failure does not cascade.
sl_reset() {
    scancel --full --partition=debug 2>/dev/null
    wait_until 30 sl_live_is 0
    rm -rf "$SHARED/.atp"
}

# sl_token [LIFESPAN_S]: a fresh token for root.
sl_token() {
    scontrol token username=root lifespan="${1:-600}" 2>/dev/null |
        sed -n 's/^SLURM_JWT=//p'
}

# The foreground dispositions of a terminal for a background atp-run (see
# tests/cli/signals.test): a background job starts with SIGINT ignored.
if env --default-signal=INT,QUIT true 2>/dev/null; then
    SL_FG="env --default-signal=INT,QUIT"
else
    SL_FG=
fi

# sl_bg TAG ARG...: start atp-run ARG... in the background, its stdin
# from $SL_BG_STDIN (default /dev/null); sets $bgpid.
sl_bg() {
    tap_tag=$1
    shift
    $SL_FG "$ATP_RUN" "$@" <"${SL_BG_STDIN:-/dev/null}" >"$T/$tap_tag.out" \
        2>"$T/$tap_tag.err" &
    bgpid=$!
    track_pid "$bgpid"
}

sl_gone_or_zombie() {
    tap_state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' \
        "/proc/$1/status" 2>/dev/null)
    [ -z "$tap_state" ] || [ "$tap_state" = Z ]
}

# sl_wait_bg SECONDS: wait for the background atp-run; sets $bgrc
# ("hung" when it did not end in time, and kills it).
sl_wait_bg() {
    if wait_until "$1" sl_gone_or_zombie "$bgpid"; then
        wait "$bgpid"
        bgrc=$?
    else
        kill -KILL "$bgpid" 2>/dev/null
        wait "$bgpid" 2>/dev/null
        bgrc=hung
    fi
}
