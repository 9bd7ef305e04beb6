#!/usr/bin/env bash
#
# bench/slurm.sh - 200 one-second attempts on a private single-node Slurm
# cluster (tests/slurm/cluster.sh: 16 CPUs, so 16 run at a time), three
# ways, one after the other on the same cluster:
#
#   (a) atp:   atp-run batch -b slurm -j BENCH_PAR (default 16, the
#              node's CPUs) of 200 `sleep 1` attempts, which it submits
#              as job arrays (--array=...%16) through slurmrestd
#   (b) loop:  a shell loop of sbatch --wrap 'sleep 1'
#   (c) array: one sbatch --array=1-200 script written by hand
#
# For each: submissions per second (for (a) until the controller knew
# every attempt, polled; the loop's own time for (b); one call for (c)), the
# time from the start to the last result, and the jobs left queued or
# running afterwards (must be 0).
#
#   bench/slurm.sh [PATH/TO/atp-run | BUILDDIR]
#
# Needs root (it starts slurmd) and the packages of build-aux/install-deps.
# Exits 0 when no job is left, 1 otherwise, 2 when it could not run.
set -u

srcdir=$(cd "$(dirname "$0")/.." && pwd)
die() { echo "bench/slurm.sh: $*" >&2; exit 2; }
# shellcheck source=bench/lib.sh
. "$srcdir/bench/lib.sh"
N=${BENCH_N:-200}
PAR=${BENCH_PAR:-16}

target=${1:-}
if [ -z "$target" ]; then
    for d in "$srcdir/_build" "$srcdir/_check" "$srcdir"; do
        [ -e "$d/atp-run" ] && target=$d && break
    done
fi
[ -n "$target" ] || die "no atp-run found: give its path"
bench_use_atp "$target"

# shellcheck source=tests/slurm/cluster.sh
. "$srcdir/tests/slurm/cluster.sh"
dir=$(mktemp -d /tmp/atp-bs.XXXXXX) || die "mktemp failed"
chmod 755 "$dir"
trap 'slurm_down; rm -rf "$dir"' EXIT
slurm_up "$dir/c" 2>"$dir/start.err" ||
    die "the private Slurm cluster cannot start: $(cat "$dir/start.err")"
mkdir -p "$dir/shared/wd"
cat >"$dir/atp.ini" <<EOF
[atp]
backend = slurm
[backend.slurm]
mode = rest
url = unix://$SLURM_REST_UNIX
shared_dir = $dir/shared
poll_interval_s = 500ms
EOF
export ATP_CONFIG=$dir/atp.ini

now() { echo "$EPOCHREALTIME"; }
live() { squeue -h -t PD,R,CG,S,CF -n "$1" -o %i 2>/dev/null | wc -l; }
wait_none() {
    while [ "$(live "$1")" -gt 0 ]; do sleep 0.2; done
}
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.1f", (s > 0 ? n / s : n) }'; }
span() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

echo "# bench/slurm.sh: $N one-second attempts; atp-run: $ATP_FROM"
echo "# $(nproc) cores, $(uname -r), Slurm $(sinfo -V 2>/dev/null | cut -d' ' -f2), load $(cut -d' ' -f1-3 /proc/loadavg)"

# (a) atp: atp-run batch, -j BENCH_PAR attempts at once, which it
# submits as job arrays (--array=...%PAR).  Submissions per second: the
# attempts over the time until the controller knew all of them (polled);
# submissions: the distinct array job ids atp's jobs carry.
i=0
while [ "$i" -lt "$N" ]; do
    printf '{"id":"b%d","command":"sleep 1","workdir":"%s"}\n' "$i" \
        "$dir/shared/wd"
    i=$((i + 1))
done >"$dir/att.jsonl"
known() { squeue -h -t all -o '%k' | grep -c '^atp:run='; }
t0=$(now)
"$ATP" batch -b slurm -j "$PAR" --no-progress "$dir/att.jsonl" \
    >"$dir/atp.out" 2>"$dir/atp.err" &
apid=$!
tk=
while kill -0 "$apid" 2>/dev/null; do
    if [ -z "$tk" ] && [ "$(known)" -ge "$N" ]; then tk=$(now); fi
    sleep 0.05
done
wait "$apid"
t1=$(now)
[ -n "$tk" ] || tk=$t1
atp_ok=$(grep -c '"status":"ok"' "$dir/atp.out")
atp_jobs=$(known)
atp_subs=$(squeue -h -t all -o '%F %k' | grep ' atp:run=' | awk '{print $1}' |
    sort -u | wc -l)
atp_left=$(squeue -h -t PD,R,CG,S,CF -o %k | grep -c '^atp:run=')
printf '%-8s %6s %14s %16s %10s\n' way jobs submissions/s last_result_s jobs_left
printf '%-8s %6s %14s %16s %10s\n' atp "$atp_jobs" \
    "$(rate "$N" "$(span "$t0" "$tk")")" "$(span "$t0" "$t1")" "$atp_left"
echo "# atp-run batch: $atp_ok of $N ok, from $atp_subs submission(s)"
[ "$atp_ok" -eq "$N" ] || echo "# atp-run batch: $(tail -n 2 "$dir/atp.err")"

# (b) a loop of sbatch --wrap.
t0=$(now)
for _ in $(seq "$N"); do
    sbatch -Q --parsable -J bl -o /dev/null -e /dev/null --wrap 'sleep 1' \
        >/dev/null
done
t1=$(now)
wait_none bl
t2=$(now)
printf '%-8s %6s %14s %16s %10s\n' loop "$N" \
    "$(rate "$N" "$(span "$t0" "$t1")")" "$(span "$t0" "$t2")" "$(live bl)"

# (c) one array script.
cat >"$dir/array.sh" <<'EOF'
#!/bin/sh
sleep 1
EOF
t0=$(now)
sbatch -Q --parsable -J ba --array=1-"$N" -o /dev/null -e /dev/null \
    "$dir/array.sh" >/dev/null
t1=$(now)
wait_none ba
t2=$(now)
printf '%-8s %6s %14s %16s %10s\n' array "$N" \
    "$(rate "$N" "$(span "$t0" "$t1")")" "$(span "$t0" "$t2")" "$(live ba)"

left=$(squeue -h -t PD,R,CG,S,CF -o %i | wc -l)
echo "# jobs left on the cluster: $left"
[ "$left" -eq 0 ]
