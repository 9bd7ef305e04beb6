#!/usr/bin/env bash
#
# bench/foundation.sh - the foundation benchmark: atp-run against the
# plain-shell alternatives, side by side, in one run.
#
#   bench/foundation.sh [PATH/TO/atp-run | BUILDDIR]
#
#   (a) startup:  atp-run -b local -- true   vs  sh -c true
#                 target: atp-run under 2x (medians)
#   (b) stream:   atp-run -- GEN >/dev/null  vs  GEN | cat >/dev/null
#                 GEN writes 1 GiB of 100-byte lines; target: atp-run's
#                 throughput at least half the pipe's (medians)
#   (c) memory:   peak RSS of atp-run streaming 64 MiB, 256 MiB, 1 GiB
#                 target: under 16 MiB and flat as the output grows
#   (d) startup:  atp-run -b local -- true  vs  bench/spawnwait true (a
#                 minimal posix_spawn + pipes + waitpid supervisor)
#                 target: at most 1.10x (medians)
#
# Without an argument it uses, in order: $ATP_RUN, the build trees
# SRCDIR, SRCDIR/_build and SRCDIR/_check, then atp-run on $PATH.  A build
# tree's libtool wrapper is bypassed (it costs a bash start per run): the
# real binary BUILDDIR/.libs/atp-run runs with LD_LIBRARY_PATH set to
# BUILDDIR/core/.libs and ATP_PLUGIN_PATH to BUILDDIR/plugins/.libs.
#
# Timing uses hyperfine when installed (apt-get install -y hyperfine),
# else a loop timed with bash's $EPOCHREALTIME; either way the two sides
# of a comparison alternate.  Peak RSS uses GNU time (/usr/bin/time,
# apt-get install -y time), else python3's os.wait4.
#
# Knobs (environment): BENCH_STARTUP_RUNS (default 1000),
# BENCH_STREAM_RUNS (7), BENCH_RSS_RUNS (3), BENCH_ROUNDS (5),
# BENCH_TMPDIR (default $TMPDIR or /tmp; needs 1 GiB free, else the
# generator falls back to `yes | head -c`), BENCH_NO_HYPERFINE=1,
# BENCH_NO_GNU_TIME=1.  See bench/README.md.
#
# Exit status: 0 when every target is met, 1 when one is missed, 2 when
# the benchmark itself could not run.
set -euo pipefail
export LC_ALL=C

STARTUP_RUNS=${BENCH_STARTUP_RUNS:-1000}
STREAM_RUNS=${BENCH_STREAM_RUNS:-7}
RSS_RUNS=${BENCH_RSS_RUNS:-3}

LINE_LEN=100                              # bytes per line, newline included
GIB=$((1024 * 1024 * 1024))
BIG=$((GIB / LINE_LEN * LINE_LEN))        # 1 GiB of whole lines
RSS_SIZES_MIB="64 256 1024"

die() { echo "foundation.sh: $*" >&2; exit 2; }

# ------------------------------------------------------------ find atp-run

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
srcdir=$(cd "$here/.." && pwd)

# shellcheck source=SCRIPTDIR/lib.sh
. "$here/lib.sh"
bench_find_atp atp-local.so "${1:-}"
[ -x "$ATP" ] || die "$ATP is not executable"

# ---------------------------------------------------------------- scratch

base=${BENCH_TMPDIR:-${TMPDIR:-/tmp}}
tmp=$(mktemp -d "$base/atp-bench.XXXXXX") || die "cannot create a directory in $base"
# shellcheck disable=SC2317 # called by the trap
cleanup() { rm -rf "$tmp"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# Built-in defaults whatever the user's atp.ini says (a spill_dir there
# would turn (b) into a disk benchmark).
printf '; atp foundation benchmark: built-in defaults\n[atp]\nbackend = local\n' \
    >"$tmp/atp.ini"
export ATP_CONFIG="$tmp/atp.ini"
cd "$tmp"

if ! "$ATP" -b local -- true; then
    die "'$ATP -b local -- true' fails (from $ATP_FROM); try '$ATP check'"
fi
atp_version=$("$ATP" --version 2>&1 | head -n 1)

# ---------------------------------------------------------------- tools

have_hyperfine=
if [ -z "${BENCH_NO_HYPERFINE:-}" ] && command -v hyperfine >/dev/null &&
    hyperfine -N --runs 2 --export-csv "$tmp/probe.csv" true >/dev/null 2>&1; then
    have_hyperfine=1
fi
if [ -z "$have_hyperfine" ] && [ -z "${EPOCHREALTIME:-}" ]; then
    die "neither hyperfine (apt-get install -y hyperfine) nor bash 5's \$EPOCHREALTIME"
fi
gnu_time=
if [ -z "${BENCH_NO_GNU_TIME:-}" ] && [ -x /usr/bin/time ] &&
    /usr/bin/time -f %M -o "$tmp/probe.rss" true 2>/dev/null &&
    grep -qE '^[0-9]+$' "$tmp/probe.rss"; then
    gnu_time=1
elif ! command -v python3 >/dev/null; then
    die "neither GNU time (apt-get install -y time) nor python3 for peak RSS"
fi

# ---------------------------------------------------------------- helpers

# "busy total" jiffies of all CPUs, and the CPU seconds this script and
# its children used: the difference tells how busy other work kept the
# machine while we measured.
hz=$(getconf CLK_TCK 2>/dev/null || echo 100)
cpu_stat() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }
our_cpu() {  # VAR: not in a $(...), whose subshell has no children yet
    times >"$tmp/times"
    printf -v "$1" '%s' "$(awk '{ for (i = 1; i <= NF; i++) { split($i, p, "m"); s += p[1] * 60 + p[2] } } END { print s }' "$tmp/times")"
}

median() {  # numbers on stdin, one a line
    sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "nan"; exit }
        if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# "NAME seconds" for the span between two $EPOCHREALTIME readings, taken
# with no fork in between (a $(...) would time a subshell too).
span() {  # NAME T0 T1
    local us=$(( ${3/./} - ${2/./} ))
    printf '%s %d.%06d\n' "$1" $((us / 1000000)) $((us % 1000000))
}

hf_failed() { cat "$tmp/hf.err" >&2; die "hyperfine failed"; }

# Peak RSS in KiB of "$@" (stdin passed on, stdout to /dev/null), its
# waited-for children included (the generator under atp-run is cat or
# head, ~1-2 MiB).  Linux counts a launcher's own peak RSS in the maxrss
# of what it execs, which is harmless for GNU time (~1 MiB) but not for
# python3 (~10 MiB): the python3 fallback has a small sh fork the command
# and adopts it as a subreaper, so only sh's mm leaks in.
if [ -z "$gnu_time" ]; then
    cat >"$tmp/rss.py" <<'PY'
import ctypes, fcntl, os, sys
if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
    sys.exit("prctl(PR_SET_CHILD_SUBREAPER) failed")
fds = os.pipe()
r, w = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in fds)
for fd in fds:
    os.close(fd)
sh = os.posix_spawn("/bin/sh", ["sh", "-c", '"$@" <&4 4<&- 3>&- >/dev/null & echo $! >&3', "sh"] + sys.argv[1:], os.environ,
                    file_actions=[(os.POSIX_SPAWN_DUP2, 0, 4), (os.POSIX_SPAWN_DUP2, w, 3)])
os.close(w)
pid = int(os.read(r, 64))
os.waitpid(sh, 0)
_, status, ru = os.wait4(pid, 0)
if status != 0:
    sys.exit("%s failed: status %d" % (sys.argv[1], status))
print(ru.ru_maxrss)
PY
fi
peak_rss_kib() {
    if [ -n "$gnu_time" ]; then
        /usr/bin/time -f %M -o "$tmp/rss" "$@" >/dev/null
        cat "$tmp/rss"
    else
        python3 "$tmp/rss.py" "$@"
    fi
}

# Peak RSS in KiB of `cat` reading a pipe fed by the generator.
cat_rss_kib() {  # BYTES
    gen "$1" | peak_rss_kib cat
}

# ------------------------------------------------------------ machine

cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo 2>/dev/null || true)
echo "atp foundation benchmark"
echo "  atp-run:  $atp_version"
echo "            $ATP ($ATP_FROM)"
load0=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')
echo "  machine:  nproc $(nproc), $(uname -srm), ${cpu:-unknown cpu}, ${mem:-? GiB}"
echo "  load:     $load0 (1, 5, 15 min) at the start"
if [ -n "$have_hyperfine" ]; then
    echo "  timing:   $(hyperfine --version | head -n 1), medians"
else
    echo "  timing:   bash \$EPOCHREALTIME loop (hyperfine not installed), medians"
fi
if [ -n "$gnu_time" ]; then
    echo "  peak RSS: GNU time -f %M"
else
    echo "  peak RSS: python3 os.wait4 (GNU time not installed)"
fi

# ------------------------------------------------------------ generator

line=$(printf 'atp-bench-%089d' 0)      # 99 characters, plus the newline
free_kib=$(df -Pk "$tmp" | awk 'NR == 2 { print $4 }')
# gen BYTES: the generator, run here.  gen_argv BYTES: the same generator
# as an argv, in the array GEN, for atp-run.
if [ "${free_kib:-0}" -gt $((BIG / 1024 + 65536)) ]; then
    { yes "$line" || true; } | head -c "$BIG" >"$tmp/lines"   # yes dies of SIGPIPE
    cat "$tmp/lines" >/dev/null            # into the page cache
    GEN_DESC="cat FILE, a 1 GiB file of 100-byte lines in $base (head -c N FILE for (c))"
    gen_argv() {
        if [ "$1" = "$BIG" ]; then GEN=(cat "$tmp/lines"); else GEN=(head -c "$1" "$tmp/lines"); fi
    }
else
    GEN_DESC="yes LINE | head -c N (no room for a 1 GiB file in $base)"
    gen_argv() { GEN=(sh -c "yes $line | head -c $1"); }
fi
gen() { gen_argv "$1"; "${GEN[@]}"; }
echo "  data:     $((BIG / LINE_LEN)) lines of $LINE_LEN bytes = $BIG bytes; generator: $GEN_DESC"
echo

# ------------------------------------------------------------ (a) startup

ours0='' ours1='' a_res='' b_res='' c_res='' flat_res=''   # set through printf -v
read -r busy0 total0 < <(cpu_stat)
our_cpu ours0

# hf_rounds OUT ROUNDS RUNS WARMUP HFOPT NAME1 CMD1 NAME2 CMD2: ROUNDS
# hyperfine calls of RUNS runs of each command, the order swapped every
# round so that drift on a shared machine hits both alike; appends
# "NAME seconds" per run to OUT, and "NAME.cpu seconds" per round: the
# mean user + system time of NAME and everything it ran.
hf_rounds() {
    local out=$1 rounds=$2 runs=$3 warmup=$4 hfopt=$5 r
    local -a one=("$6" "$7") two=("$8" "$9") order
    for ((r = 0; r < rounds; r++)); do
        if ((r % 2 == 0)); then order=("${one[@]}" "${two[@]}"); else order=("${two[@]}" "${one[@]}"); fi
        # shellcheck disable=SC2086 # $hfopt is -N or nothing
        hyperfine $hfopt --warmup "$warmup" --runs "$runs" \
            --export-json "$tmp/hf.json" --style none \
            -n "${order[0]}" "${order[1]}" -n "${order[2]}" "${order[3]}" \
            >/dev/null 2>"$tmp/hf.err" || hf_failed
        awk '/"command":/ { gsub(/[",]/, "", $2); name = $2 }
             /"user":/ { gsub(/,/, "", $2); user = $2 }
             /"system":/ { gsub(/,/, "", $2); print name ".cpu", user + $2 }
             /"times":/ { t = 1; next }
             t && /\]/ { t = 0 }
             t { gsub(/,/, ""); print name, $1 }' "$tmp/hf.json" >>"$out"
    done
}

# Median seconds of NAME's runs in a file of "NAME seconds" lines.
median_of() { awk -v n="$2" '$1 == n { print $2 }' "$1" | median; }

ROUNDS=${BENCH_ROUNDS:-5}
: >"$tmp/a.times"
echo "(a) startup: $STARTUP_RUNS runs each ..." >&2
if [ -n "$have_hyperfine" ]; then
    per=$(( (STARTUP_RUNS + ROUNDS - 1) / ROUNDS ))
    hf_rounds "$tmp/a.times" "$ROUNDS" "$per" 20 -N \
        atp "$(printf '%q ' "$ATP" -b local -- true)" sh "sh -c true"
else
    for ((i = 0; i < 50; i++)); do "$ATP" -b local -- true; sh -c true; done
    for ((i = 0; i < STARTUP_RUNS; i++)); do   # interleaved
        t0=$EPOCHREALTIME; "$ATP" -b local -- true; t1=$EPOCHREALTIME
        sh -c true; t2=$EPOCHREALTIME
        span atp "$t0" "$t1" >>"$tmp/a.times"
        span sh "$t1" "$t2" >>"$tmp/a.times"
    done
fi
a_atp=$(median_of "$tmp/a.times" atp)
a_sh=$(median_of "$tmp/a.times" sh)

# ------------------------------------------------------------ (d) supervisor

# The same startup against the least a supervisor does (bench/spawnwait.c:
# posix_spawn, two pipes copied through, waitpid).
d_atp='' d_sup=''
if cc -O2 -o "$tmp/spawnwait" "$here/spawnwait.c" 2>"$tmp/cc.err"; then
    echo "(d) startup against a minimal supervisor: $STARTUP_RUNS runs each ..." >&2
    : >"$tmp/d.times"
    if [ -n "$have_hyperfine" ]; then
        hf_rounds "$tmp/d.times" "$ROUNDS" "$per" 20 -N \
            atp "$(printf '%q ' "$ATP" -b local -- true)" \
            sup "$(printf '%q ' "$tmp/spawnwait" true)"
    else
        for ((i = 0; i < STARTUP_RUNS; i++)); do
            t0=$EPOCHREALTIME; "$ATP" -b local -- true; t1=$EPOCHREALTIME
            "$tmp/spawnwait" true; t2=$EPOCHREALTIME
            span atp "$t0" "$t1" >>"$tmp/d.times"
            span sup "$t1" "$t2" >>"$tmp/d.times"
        done
    fi
    d_atp=$(median_of "$tmp/d.times" atp)
    d_sup=$(median_of "$tmp/d.times" sup)
else
    echo "(d) skipped: no C compiler could build bench/spawnwait.c" >&2
fi

# ------------------------------------------------------------ (b) stream

echo "(b) streaming 1 GiB: $STREAM_RUNS runs each ..." >&2
gen_argv "$BIG"
atp_cmd="$(printf '%q ' "$ATP" -- "${GEN[@]}")>/dev/null"
pipe_cmd="$(printf '%q ' "${GEN[@]}")| cat >/dev/null"
: >"$tmp/b.times"
sh -c "$atp_cmd"; sh -c "$pipe_cmd"     # warm-up
if [ -n "$have_hyperfine" ]; then
    hf_rounds "$tmp/b.times" "$STREAM_RUNS" 1 0 "" atp "$atp_cmd" pipe "$pipe_cmd"
else
    for ((i = 0; i < STREAM_RUNS; i++)); do
        t0=$EPOCHREALTIME; sh -c "$atp_cmd"; t1=$EPOCHREALTIME
        sh -c "$pipe_cmd"; t2=$EPOCHREALTIME
        span atp "$t0" "$t1" >>"$tmp/b.times"
        span pipe "$t1" "$t2" >>"$tmp/b.times"
    done
fi
b_atp=$(median_of "$tmp/b.times" atp)
b_pipe=$(median_of "$tmp/b.times" pipe)

# Check that atp-run really delivered every byte (once, not timed).
got=$("$ATP" -- "${GEN[@]}" | wc -c)
[ "$got" = "$BIG" ] || die "atp-run delivered $got bytes of $BIG"

# ------------------------------------------------------------ (c) RSS

echo "(c) peak RSS at $RSS_SIZES_MIB MiB: $RSS_RUNS runs each ..." >&2
declare -A rss_atp rss_cat
for mib in $RSS_SIZES_MIB; do
    bytes=$((mib * 1024 * 1024 / LINE_LEN * LINE_LEN))
    gen_argv "$bytes"
    : >"$tmp/c.atp"; : >"$tmp/c.cat"
    for ((i = 0; i < RSS_RUNS; i++)); do
        peak_rss_kib "$ATP" -- "${GEN[@]}" >>"$tmp/c.atp"
        cat_rss_kib "$bytes" >>"$tmp/c.cat"
    done
    rss_atp[$mib]=$(sort -g "$tmp/c.atp" | tail -n 1)   # peak of the runs
    rss_cat[$mib]=$(sort -g "$tmp/c.cat" | tail -n 1)
done

# ------------------------------------------------------------ the table

misses=0
verdict() {  # VAR OK: VAR=PASS when OK is 1, else MISS (and count it)
    if [ "$2" = 1 ]; then printf -v "$1" PASS; else printf -v "$1" MISS; misses=$((misses + 1)); fi
}
row() { printf '%-34s %14s %16s %9s %-16s %s\n' "$@"; }

a_ratio=$(awk -v x="$a_atp" -v y="$a_sh" 'BEGIN { printf "%.2f", x / y }')
a_ok=$(awk -v r="$a_ratio" 'BEGIN { print (r < 2) ? 1 : 0 }')
tp_atp=$(awk -v s="$b_atp" -v n="$BIG" 'BEGIN { printf "%.0f", n / s / 1048576 }')
tp_pipe=$(awk -v s="$b_pipe" -v n="$BIG" 'BEGIN { printf "%.0f", n / s / 1048576 }')
b_ratio=$(awk -v x="$b_pipe" -v y="$b_atp" 'BEGIN { printf "%.2f", x / y }')
b_ok=$(awk -v r="$b_ratio" 'BEGIN { print (r >= 0.5) ? 1 : 0 }')

echo
row "what" "atp" "alternative" "ratio" "target" "result"
row "----" "---" "-----------" "-----" "------" "------"
verdict a_res "$a_ok"
verdict b_res "$b_ok"
row "(a) startup, median" \
    "$(awk -v s="$a_atp" 'BEGIN { printf "%.3f ms", s * 1000 }')" \
    "$(awk -v s="$a_sh" 'BEGIN { printf "%.3f ms", s * 1000 }')" \
    "${a_ratio}x" "< 2x" "$a_res"
if [ -n "$d_sup" ]; then
    d_ratio=$(awk -v x="$d_atp" -v y="$d_sup" 'BEGIN { printf "%.2f", x / y }')
    verdict d_res "$(awk -v r="$d_ratio" 'BEGIN { print (r <= 1.10) ? 1 : 0 }')"
    row "(d) startup vs supervisor, median" \
        "$(awk -v s="$d_atp" 'BEGIN { printf "%.3f ms", s * 1000 }')" \
        "$(awk -v s="$d_sup" 'BEGIN { printf "%.3f ms", s * 1000 }')" \
        "${d_ratio}x" "<= 1.10x" "$d_res"
fi
row "(b) stream 1 GiB, median" "$tp_atp MiB/s" "$tp_pipe MiB/s" \
    "${b_ratio}x" ">= 0.5x" "$b_res"
for mib in $RSS_SIZES_MIB; do
    r=${rss_atp[$mib]}
    verdict c_res "$(awk -v k="$r" 'BEGIN { print (k < 16384) ? 1 : 0 }')"
    row "(c) peak RSS, $mib MiB streamed" \
        "$(awk -v k="$r" 'BEGIN { printf "%.1f MiB", k / 1024 }')" \
        "$(awk -v k="${rss_cat[$mib]}" 'BEGIN { printf "%.1f MiB", k / 1024 }')" \
        "$(awk -v x="$r" -v y="${rss_cat[$mib]}" 'BEGIN { printf "%.2fx", x / y }')" \
        "< 16 MiB" "$c_res"
done
lo=${rss_atp[64]}; hi=${rss_atp[1024]}
growth=$((hi - lo))
verdict flat_res "$(awk -v g="$growth" 'BEGIN { print (g <= 1024) ? 1 : 0 }')"
row "(c) RSS growth 64 MiB -> 1 GiB" "$growth KiB" "-" "-" "<= 1 MiB (flat)" \
    "$flat_res"
echo
if [ -n "$have_hyperfine" ]; then how="hyperfine -N, $ROUNDS rounds, order swapped each round"; else how="alternating"; fi
echo "(a) atp-run -b local -- true  vs  sh -c true, no shell around either; $STARTUP_RUNS runs each ($how)"
if grep -q '^atp\.cpu ' "$tmp/a.times"; then
    echo "    CPU time (user + system, children included): atp $(median_of "$tmp/a.times" atp.cpu | awk '{ printf "%.3f", $1 * 1000 }') ms, sh $(median_of "$tmp/a.times" sh.cpu | awk '{ printf "%.3f", $1 * 1000 }') ms"
fi
echo "(b) atp-run -- GEN >/dev/null  vs  GEN | cat >/dev/null; ratio = atp throughput / pipe throughput"
echo "    medians: atp $(awk -v s="$b_atp" 'BEGIN { printf "%.3f", s }') s, pipe $(awk -v s="$b_pipe" 'BEGIN { printf "%.3f", s }') s wall time"
if grep -q '^atp\.cpu ' "$tmp/b.times"; then
    b_atp_cpu=$(median_of "$tmp/b.times" atp.cpu)
    b_pipe_cpu=$(median_of "$tmp/b.times" pipe.cpu)
    echo "    CPU time (user + system, generator included): atp $(awk -v s="$b_atp_cpu" 'BEGIN { printf "%.3f", s }') s, pipe $(awk -v s="$b_pipe_cpu" 'BEGIN { printf "%.3f", s }') s"
fi
if [ -n "$d_sup" ] && grep -q '^atp\.cpu ' "$tmp/d.times"; then
    echo "(d) CPU time: atp $(median_of "$tmp/d.times" atp.cpu | awk '{ printf "%.3f", $1 * 1000 }') ms, supervisor $(median_of "$tmp/d.times" sup.cpu | awk '{ printf "%.3f", $1 * 1000 }') ms"
fi
echo "(c) atp: peak RSS of atp-run (with its generator child) over $RSS_RUNS runs; alternative: the pipe's cat"
read -r busy1 total1 < <(cpu_stat)
our_cpu ours1
other=$(awk -v b="$((busy1 - busy0))" -v t="$((total1 - total0))" -v o="$(awk -v a="$ours0" -v b="$ours1" 'BEGIN { print b - a }')" -v hz="$hz" \
    'BEGIN { if (t <= 0) { print 0; exit } x = (b / hz - o) / (t / hz) * 100; printf "%.0f", x < 0 ? 0 : x }')
echo "other processes used ${other}% of the machine's CPU time during the run"
if [ "$other" -gt 10 ]; then
    echo "warning: the machine was shared, so the times in (a) and (b) are noisy;"
    echo "         rerun on a quiet machine"
fi
echo
if [ "$misses" -eq 0 ]; then
    echo "all targets met"
    exit 0
fi
echo "$misses target(s) missed"
exit 1
