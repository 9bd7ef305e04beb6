#!/usr/bin/env bash
#
# bench/transfer.sh - the workdir transfer engine against tar | tar and
# Python's tarfile, side by side, in one run (issue 4).
#
#   bench/transfer.sh [BUILDDIR]
#
#   (a) full transfer of a Lean-like tree (~5,200 files, ~200 MB: small
#       .lean sources, .olean-like blobs of 8 KB to 4 MB, a few symlinks
#       and an empty directory), into a new directory:
#         atp     bench/atp-xfer SRC DST: scan, tar stream from one thread
#                 through a pipe into the extractor in another, as a push
#                 or pull does minus the sandbox
#         tar     tar -cf - -C SRC . | tar -xf - -C DST
#         python  tarfile: a gzip archive built in a BytesIO, then
#                 extractall(filter="data") (what atp replaced)
#       target: atp within 1.2x of tar | tar (medians)
#   (b) the same with 50,000 files of 2-6 KB (~200 MB)
#   (c) incremental sync over the 50,000-file tree, through the real user
#       path: `atp-run --json session` with [backend.local] workdir_mode =
#       copy, commands from a fifo.  The session's start pushes
#       everything; one host file changes, then `:sync-in`; a command
#       changes one file in the sandbox, then `:sync-out`.  Targets: each
#       incremental sync moves under 1% of the tree's bytes and takes under
#       10% of the full push's seconds (the events' own numbers).  For
#       context, a one-shot `atp-run -- CMD` (push, command, pull,
#       teardown) against the median tar | tar of (b).
#   (d) peak RSS of atp-xfer on trees of 256 MiB, 512 MiB and 1 GiB (8 MiB
#       files), and on the trees of (a) and (b): under 32 MiB, and flat (at
#       most 1 MiB more at 1 GiB than at 256 MiB)
#
# BUILDDIR (default: $ATP_BUILDDIR, else SRCDIR, SRCDIR/_build or
# SRCDIR/_check, the first with a built core/.libs/atp-transfer.so) is
# where `make bench/atp-xfer` builds the driver ($BENCH_MAKE, default
# make, runs it: e.g. BENCH_MAKE="flock /tmp/atp-build.lock make").  The
# driver and atp-run run with ATP_TRANSFER_MODULE, ATP_PLUGIN_PATH and
# LD_LIBRARY_PATH pointing into the build tree.
#
# Every timed run starts from the same state: a new, empty DST, `sync`
# (so that writing back the previous run's output does not land in this
# one), and a source tree in the page cache (each tree is read once,
# untimed, before its first run).  Nothing is deleted until the end: on
# ext4 without a journal, creating files within a minute or more of
# deleting many is several times slower (the inode allocator skips
# recently deleted inodes), so a run after a deletion pays for it.
# Contenders take turns, the order rotating each round.  Times are wall
# clock of the whole command (process start, loading, scan, transfer,
# exit), with GNU time around every contender for peak RSS and CPU time.
#
# Knobs: BENCH_RUNS (5) runs per contender in (a) and (b), the median
# counts; BENCH_PY_RUNS (3) and BENCH_PY_SMALL_RUNS (1) runs of Python in
# (a) and (b) (it is context, and slow); BENCH_RSS_RUNS (1) runs per size
# in (d), the highest peak counts; BENCH_TMPDIR (default $TMPDIR or /tmp;
# needs ~7 GB, removed at the end); BENCH_SKIP (letters of sections to
# skip, e.g. "cd").  See bench/README.md.
#
# Exit status: 0 when every target is met, 1 when one is missed, 2 when
# the benchmark itself could not run.
set -euo pipefail
export LC_ALL=C

RUNS=${BENCH_RUNS:-5}
PY_RUNS=${BENCH_PY_RUNS:-3}
PY_SMALL_RUNS=${BENCH_PY_SMALL_RUNS:-1}
RSS_RUNS=${BENCH_RSS_RUNS:-1}
SKIP=${BENCH_SKIP:-}
MAKE_CMD=${BENCH_MAKE:-make}
RSS_SIZES_MIB="256 512 1024"
BLOB_MIB=8
RSS_LIMIT_KIB=$((32 * 1024))
FLAT_KIB=1024

die() { echo "transfer.sh: $*" >&2; exit 2; }
skip() { case $SKIP in *"$1"*) return 0 ;; esac; return 1; }

[ -n "${EPOCHREALTIME:-}" ] || die "needs bash 5 (\$EPOCHREALTIME)"
for t in tar sync find awk sort; do
    command -v "$t" >/dev/null || die "needs $t"
done

# ------------------------------------------------------------ build tree

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
srcdir=$(cd "$here/.." && pwd)

# shellcheck source=SCRIPTDIR/lib.sh
. "$here/lib.sh"

# A build tree is needed: the driver is built in it, the module comes from it.
target=${1:-${ATP_BUILDDIR:-}}
if [ -z "$target" ]; then
    for d in "$srcdir" "$srcdir/_build" "$srcdir/_check"; do
        if [ -f "$d/core/.libs/atp-transfer.so" ]; then target=$d; break; fi
    done
fi
[ -n "$target" ] || die "no build tree found: build atp, or give its directory"
[ -d "$target" ] || die "no directory $target"
bench_use_atp "$target"
[ -n "$builddir" ] || die "$target is not a build tree of atp"
MODULE=$builddir/core/.libs/atp-transfer.so
[ -f "$MODULE" ] || die "no $MODULE: build atp in $builddir first"

echo "building bench/atp-xfer in $builddir ..." >&2
# shellcheck disable=SC2086 # BENCH_MAKE may be a command with arguments
if ! make_out=$($MAKE_CMD -C "$builddir" bench/atp-xfer 2>&1); then
    printf '%s\n' "$make_out" >&2
    die "make bench/atp-xfer failed in $builddir"
fi
XFER=$builddir/bench/atp-xfer
if bench_is_wrapper "$XFER" && [ -x "$builddir/bench/.libs/atp-xfer" ]; then
    XFER=$builddir/bench/.libs/atp-xfer
fi
[ -x "$XFER" ] || die "no $XFER"
[ -x "$ATP" ] || die "no $ATP"

# ------------------------------------------------------------ tools

gnu_time=
if [ -x /usr/bin/time ] && /usr/bin/time -f '%M %U %S' -o /dev/null true 2>/dev/null; then
    gnu_time=1
fi
# Python for the generator (any python3) and for the tarfile contender
# (the first with tarfile's extraction filters, Python 3.12 or a 3.8+
# with the 2023 backport: Debian 12's /usr/bin/python3 3.11.2 has none).
# The interpreters themselves (sys.executable), not wrappers such as
# pyenv's shims, which cost a shell start per run.
GENPY=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null || true)
[ -n "$GENPY" ] || die "needs python3 (for the tree generator)"
PY='' PY_FILTER=''
for p in python3 /usr/bin/python3 python3.12 python3.13; do
    p=$("$p" -c 'import sys; print(sys.executable)' 2>/dev/null) || continue
    if "$p" -c 'import tarfile; tarfile.data_filter' 2>/dev/null; then
        PY=$p PY_FILTER=1; break
    fi
    [ -n "$PY" ] || PY=$p
done

# ---------------------------------------------------------------- scratch

base=${BENCH_TMPDIR:-${TMPDIR:-/tmp}}
tmp=$(mktemp -d "$base/atp-xbench.XXXXXX") || die "cannot create a directory in $base"
session_pid=
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    exec 3>&- 2>/dev/null || true
    if [ -n "$session_pid" ]; then kill "$session_pid" 2>/dev/null || true; wait "$session_pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
free_kib=$(df -Pk "$tmp" | awk 'NR == 2 { print $4 }')
[ "${free_kib:-0}" -gt $((7 * 1024 * 1024)) ] ||
    die "needs ~7 GB free in $base (BENCH_TMPDIR)"

# Built-in defaults, plus the copy mode that makes the local backend an
# isolated sandbox (its scratch copy goes under $TMPDIR: ours).
printf '; atp transfer benchmark\n[atp]\nbackend = local\n[backend.local]\nworkdir_mode = copy\n' \
    >"$tmp/atp.ini"
export ATP_CONFIG="$tmp/atp.ini"
mkdir "$tmp/scratch"

# ------------------------------------------------------------ helpers

hz=$(getconf CLK_TCK 2>/dev/null || echo 100)
cpu_stat() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }
our_cpu() {
    times >"$tmp/times"
    printf -v "$1" '%s' "$(awk '{ for (i = 1; i <= NF; i++) { split($i, p, "m"); s += p[1] * 60 + p[2] } } END { print s }' "$tmp/times")"
}

median() {
    sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "nan"; exit }
        if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
span_s() { local us=$(( ${2/./} - ${1/./} )); printf '%d.%06d' $((us / 1000000)) $((us % 1000000)); }
calc() { awk "BEGIN { $1 }"; }

# Without GNU time, python3 reports the command's peak RSS and CPU time
# (os.wait4 on it, adopted as a child subreaper from a small sh, so that
# python3's own peak is not charged to it), in GNU time's "%M %U %S".
if [ -z "$gnu_time" ]; then
    cat >"$tmp/rss.py" <<'PY'
import ctypes, os, sys
if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:
    sys.exit("prctl(PR_SET_CHILD_SUBREAPER) failed")
out, argv = sys.argv[1], sys.argv[2:]
r, w = os.pipe()
sh = os.posix_spawn("/bin/sh", ["sh", "-c", '"$@" 3>&- & echo $! >&3', "sh"] + argv, os.environ,
                    file_actions=[(os.POSIX_SPAWN_DUP2, w, 3), (os.POSIX_SPAWN_CLOSE, r)])
os.close(w)
pid = int(os.read(r, 64))
os.waitpid(sh, 0)
_, status, ru = os.wait4(pid, 0)
with open(out, "w") as f:
    f.write("%d %.2f %.2f\n" % (ru.ru_maxrss, ru.ru_utime, ru.ru_stime))
sys.exit(os.waitstatus_to_exitcode(status))
PY
fi
# measure OUT CMD...: runs CMD (stdout to OUT.stdout, stderr to OUT.stderr)
# and appends "seconds rss_kib cpu_seconds" to OUT.
measure() {
    local out=$1 t0 t1 rc=0
    shift
    t0=$EPOCHREALTIME
    if [ -n "$gnu_time" ]; then
        /usr/bin/time -f '%M %U %S' -o "$out.rss" "$@" >"$out.stdout" 2>"$out.stderr" || rc=$?
    else
        "$GENPY" "$tmp/rss.py" "$out.rss" "$@" >"$out.stdout" 2>"$out.stderr" || rc=$?
    fi
    t1=$EPOCHREALTIME
    if [ "$rc" -ne 0 ]; then
        cat "$out.stderr" >&2
        die "failed (exit $rc): $*"
    fi
    tail -n 1 "$out.rss" | awk -v s="$(span_s "$t0" "$t1")" '{ print s, $1, $2 + $3 }' >>"$out"
}

warm() { tar -cf - -C "$1" . | cat >/dev/null; }   # the tree into the page cache
# new_dst: a new empty directory in $DST, with nothing dirty in the page
# cache.  Never an old one emptied: see "recently deleted" above.
ndst=0
new_dst() { ndst=$((ndst + 1)); DST=$tmp/dst.$ndst; mkdir "$DST"; sync; }
tree_files() { find "$1" -type f | wc -l; }
tree_entries() { find "$1" -mindepth 1 | wc -l; }
tree_bytes() { find "$1" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'; }
# What must survive a transfer: type, size, path and link target (and
# modes, except for Python, whose "data" filter may change them).
fingerprint() {  # DIR [nomode]
    (cd "$1" && if [ "${2:-}" = nomode ]; then find . -mindepth 1 -printf '%y %s %P %l\n'
               else find . -mindepth 1 -printf '%y %m %s %P %l\n'; fi) | sort | cksum
}

cat >"$tmp/py_tarfile.py" <<'PY'
# What atp replaced: the whole workdir as a gzip tar in memory, then
# extracted.
import io, sys, tarfile
src, dst = sys.argv[1], sys.argv[2]
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w:gz") as t:
    t.add(src, arcname=".")
buf.seek(0)
with tarfile.open(fileobj=buf, mode="r:gz") as t:
    if hasattr(tarfile, "data_filter"):
        t.extractall(dst, filter="data")
    else:
        t.extractall(dst)
PY

cat >"$tmp/gen.py" <<'PY'
# Deterministic trees: the same seed gives the same bytes everywhere.
import os, random, sys

T0 = 1700000000
WORDS = ("theorem lemma def instance structure where fun by simp exact intro "
         "apply rw have show calc Nat List Finset Real := : ( ) → ∀ ∃ ⟨ ⟩ "
         "mul_comm add_assoc Finset.sum_le_sum h hx hy x y z n m k α β γ").split()

class Pools:
    """~5 MB of Lean-ish text, 32 MiB of half-random, half-repetitive
    bytes (olean-like: gzip gets about 2x); files are slices of them."""
    def __init__(self, rng):
        lines = [(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) + "\n").encode()
                 for _ in range(4096)]
        self.text = b"".join(rng.choice(lines) for _ in range(100000))
        parts = []
        for _ in range(8192):
            if rng.random() < 0.5:
                parts.append(rng.randbytes(4096))
            else:
                pat = rng.randbytes(rng.randint(4, 64))
                parts.append((pat * (4096 // len(pat) + 1))[:4096])
        self.bin = b"".join(parts)

    def take(self, rng, pool, n):
        if n >= len(pool):
            return (pool * (n // len(pool) + 1))[:n]
        o = rng.randrange(len(pool) - n)
        return pool[o:o + n]

def put(path, data, mtime, mode=None):
    with open(path, "wb") as f:
        f.write(data)
    if mode is not None:
        os.chmod(path, mode)
    os.utime(path, (mtime, mtime))

def lean(root, seed=1):
    """~5,200 files, ~200 MB, shaped like a Lean project and its build."""
    rng = random.Random(seed)
    P = Pools(rng)
    dirs = ["%s/Sub%02d/Area%02d" % (top, i, j)
            for top in ("Mathlib", "Proj", "Std")
            for i in range(12) for j in range(rng.randint(4, 8))]
    rng.shuffle(dirs)
    srcs = ["%s/File%04d.lean" % (dirs[k % len(dirs)], k) for k in range(2000)]
    for name in srcs:  # sources: median ~4 KB
        os.makedirs(os.path.join(root, os.path.dirname(name)), exist_ok=True)
        n = max(200, min(int(rng.lognormvariate(8.3, 0.8)), 120000))
        put(os.path.join(root, name), P.take(rng, P.text, n), T0 + rng.randrange(10**6))
    for name in srcs[:1400]:  # .olean 8 KB..4 MB (median ~66 KB), .ilean
        base = os.path.join(root, ".build/lib", name[:-5])
        os.makedirs(os.path.dirname(base), exist_ok=True)
        n = max(8000, min(int(rng.lognormvariate(11.1, 1.1)), 4 << 20))
        put(base + ".olean", P.take(rng, P.bin, n), T0 + rng.randrange(10**6))
        m = max(500, int(n * rng.uniform(0.05, 0.2)))
        put(base + ".ilean", P.take(rng, P.text, m), T0 + rng.randrange(10**6))
    for name in srcs[:200]:
        base = os.path.join(root, ".build/ir", name[:-5])
        os.makedirs(os.path.dirname(base), exist_ok=True)
        put(base + ".trace", P.take(rng, P.text, 300), T0)
        put(base + ".hash", b"%016x\n" % rng.getrandbits(64), T0)
    for d in ("docs", "scripts", "test/empty", ".github/workflows"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    for i in range(20):
        put(os.path.join(root, "scripts/tool%02d.sh" % i), P.take(rng, P.text, 1500), T0, 0o755)
    put(os.path.join(root, ".github/workflows/ci.yml"), P.take(rng, P.text, 900), T0)
    put(os.path.join(root, "lakefile.lean"), P.take(rng, P.text, 2000), T0)
    put(os.path.join(root, "lean-toolchain"), b"leanprover/lean4:v4.28.0\n", T0)
    os.symlink("../Mathlib", os.path.join(root, "docs/src"))
    os.symlink("../lakefile.lean", os.path.join(root, "scripts/lakefile.lean"))
    os.symlink(srcs[0], os.path.join(root, "Main.lean"))

def small(root, seed=2):
    """50,000 files of 2-6 KB (~200 MB) in 50 x 10 directories."""
    rng = random.Random(seed)
    P = Pools(rng)
    k = 0
    for a in range(50):
        for b in range(10):
            d = os.path.join(root, "d%02d/e%d" % (a, b))
            os.makedirs(d)
            for c in range(100):
                put(os.path.join(d, "f%03d.txt" % c),
                    P.take(rng, P.text, rng.randint(2048, 6144)), T0 + k)
                k += 1

def big(root, count, mib, seed=3):
    """COUNT files of MIB MiB each."""
    rng = random.Random(seed)
    P = Pools(rng)
    os.makedirs(root, exist_ok=True)
    for i in range(int(count)):
        put(os.path.join(root, "blob%03d.bin" % i), P.take(rng, P.bin, int(mib) << 20), T0)

globals()[sys.argv[1]](*sys.argv[2:])
PY

# ------------------------------------------------------------ machine

cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo 2>/dev/null || true)
fs=$(df -PT "$tmp" 2>/dev/null | awk 'NR == 2 { print $2 " on " $1 }')
nojournal=
case $fs in
ext4\ on\ /dev/*)   # jbd2 lists the journals of mounted ext4 filesystems
    journal=
    for j in /proc/fs/jbd2/"${fs##*/dev/}"-*; do [ -e "$j" ] && journal=1; done
    if [ -z "$journal" ]; then
        nojournal=1
        fs="$fs, no journal: file creation is slow for a minute or more after mass deletion"
    fi ;;
esac
echo "atp transfer benchmark"
echo "  atp:      $("$ATP" --version 2>&1 | head -n 1) (build tree $builddir)"
echo "            driver $XFER"
echo "            module $MODULE"
echo "  machine:  nproc $(nproc), $(uname -srm), ${cpu:-unknown cpu}, ${mem:-? GiB}"
echo "  load:     $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?') (1, 5, 15 min) at the start"
echo "  disk:     $tmp (${fs:-?})"
if [ -z "$PY" ]; then
    py_desc="no python3 for the tarfile contender"
else
    py_desc="$("$PY" -c 'import sys; print("Python", sys.version.split()[0])') ($PY"
    if [ -n "$PY_FILTER" ]; then py_desc="$py_desc, extraction filter \"data\")"
    else py_desc="$py_desc, no extraction filters: extractall unfiltered)"; fi
fi
echo "  tools:    $(tar --version | head -n 1); $py_desc"
if [ -n "$gnu_time" ]; then
    echo "  measure:  wall time by bash \$EPOCHREALTIME; peak RSS and CPU by GNU time (-f '%M %U %S')"
else
    echo "  measure:  wall time by bash \$EPOCHREALTIME; peak RSS and CPU by python3 os.wait4 (no GNU time)"
fi
echo "  runs:     $RUNS per contender (Python: $PY_RUNS on the Lean-like tree, $PY_SMALL_RUNS on the 50,000 files); medians"
echo "  cache:    each source tree read once (tar -cf - | cat) before its runs: every"
echo "            contender reads it from the page cache; every run starts after sync"
echo

ours0='' ours1='' res='' rb='' rs=''   # set through printf -v
full_bytes='' full_seconds='' in_files='' out_files='' in_bytes='' in_seconds=''
in_mode='' out_bytes='' out_seconds='' out_mode=''
read -r busy0 total0 < <(cpu_stat)
our_cpu ours0
bench_t0=$EPOCHREALTIME

# ------------------------------------------------------------ trees

echo "generating trees in $tmp ..." >&2
mkdir "$tmp/lean" "$tmp/small"
"$GENPY" "$tmp/gen.py" lean "$tmp/lean"
"$GENPY" "$tmp/gen.py" small "$tmp/small"
sync
declare -A T_FILES T_ENTRIES T_BYTES T_DESC
for t in lean small; do
    T_FILES[$t]=$(tree_files "$tmp/$t")
    T_ENTRIES[$t]=$(tree_entries "$tmp/$t")
    T_BYTES[$t]=$(tree_bytes "$tmp/$t")
done
T_DESC[lean]="Lean-like"
T_DESC[small]="small files"
for t in lean small; do
    printf '  tree %-12s %6d files, %6d entries, %5.1f MB of content\n' "${T_DESC[$t]}:" \
        "${T_FILES[$t]}" "${T_ENTRIES[$t]}" "$(calc "print ${T_BYTES[$t]} / 1e6")"
done
echo

# ------------------------------------------------------------ (a), (b)

# shellcheck disable=SC2016 # $1 and $2 are sh's
TAR_PIPE='tar -cf - -C "$1" . | tar -xf - -C "$2"'
run_contender() {  # TREE NAME
    local src=$tmp/$1 out=$tmp/res.$1.$2 dst
    new_dst
    dst=$DST
    case $2 in
    atp) measure "$out" "$XFER" "$src" "$dst" ;;
    tar) measure "$out" sh -c "$TAR_PIPE" sh "$src" "$dst" ;;
    python) measure "$out" "$PY" "$tmp/py_tarfile.py" "$src" "$dst" ;;
    esac
}

full_section() {  # TREE LETTER PYRUNS
    local t=$1 r i c fp fp_nm
    local -a order=(atp tar python)
    echo "($2) full transfer, ${T_DESC[$t]} tree: $RUNS runs each ..." >&2
    warm "$tmp/$t"
    fp=$(fingerprint "$tmp/$t")
    fp_nm=$(fingerprint "$tmp/$t" nomode)
    for ((r = 0; r < RUNS; r++)); do
        for ((i = 0; i < 3; i++)); do
            c=${order[(i + r) % 3]}
            if [ "$c" = python ] && { [ -z "$PY" ] || [ "$r" -ge "$3" ]; }; then continue; fi
            run_contender "$t" "$c"
            # Check what arrived (untimed), once per contender.
            if [ "$r" -eq 0 ]; then
                if [ "$c" = python ]; then
                    [ "$(fingerprint "$DST" nomode)" = "$fp_nm" ] ||
                        die "python's copy of the ${T_DESC[$t]} tree differs from the source"
                else
                    [ "$(fingerprint "$DST")" = "$fp" ] ||
                        die "$c's copy of the ${T_DESC[$t]} tree differs from the source"
                fi
                if [ "$c" = atp ]; then
                    diff -r --no-dereference "$tmp/$t" "$DST" >/dev/null ||
                        die "atp-xfer's copy of the ${T_DESC[$t]} tree has other contents"
                fi
            fi
        done
    done
}

med() {  # FILE COLUMN
    if [ -s "$1" ]; then awk -v c="$2" '{ print $c }' "$1" | median; else echo nan; fi
}
maxcol() {
    if [ -s "$1" ]; then awk -v c="$2" '{ print $c }' "$1" | sort -g | tail -n 1; else echo nan; fi
}

skip a || full_section lean a "$PY_RUNS"
skip b || full_section small b "$PY_SMALL_RUNS"

# ------------------------------------------------------------ (c) sync

ev_field() {  # FILE TYPE N FIELD: FIELD of the Nth TYPE event
    awk -v t="\"type\":\"$2\"" -v n="$3" -v f="\"$4\":" '
        index($0, t) { if (++k == n) { i = index($0, f); if (!i) exit
            s = substr($0, i + length(f)); sub(/[,}].*/, "", s); gsub(/"/, "", s); print s; exit } }' "$1"
}
ev_count() { grep -c "\"type\":\"$2\"" "$1" || true; }
wait_event() {  # FILE TYPE N
    local deadline=$((SECONDS + 900))
    while [ "$(ev_count "$1" "$2")" -lt "$3" ]; do
        kill -0 "$session_pid" 2>/dev/null || { cat "$tmp/session.err" >&2; die "the session ended early"; }
        [ "$SECONDS" -lt "$deadline" ] || die "no '$2' event after 900 s"
        sleep 0.05
    done
}

c_done=''
if ! skip c; then
    echo "(c) incremental sync, 50,000-file tree: a session ..." >&2
    warm "$tmp/small"
    ev=$tmp/session.jsonl
    mkfifo "$tmp/in"
    sync
    TMPDIR=$tmp/scratch "$ATP" --json -w "$tmp/small" session <"$tmp/in" >"$ev" 2>"$tmp/session.err" &
    session_pid=$!
    exec 3>"$tmp/in"
    wait_event "$ev" pushed 1
    # One host file changes (it grows by a line).
    host_file=d07/e3/f042.txt
    printf 'one more line from the host\n' >>"$tmp/small/$host_file"
    sync
    echo ':sync-in' >&3
    wait_event "$ev" pushed 2
    sb_file=d21/e6/f013.txt
    printf '%s\n' "printf 'one more line from the sandbox\\n' >> $sb_file" >&3
    echo ':sync-out' >&3
    wait_event "$ev" pulled 1
    exec 3>&-
    wait "$session_pid" || { cat "$tmp/session.err" >&2; die "the session failed"; }
    session_pid=
    grep -q 'one more line from the sandbox' "$tmp/small/$sb_file" ||
        die ":sync-out did not bring the sandbox's change back"
    for k in mode files bytes seconds; do
        printf -v "full_$k" '%s' "$(ev_field "$ev" pushed 1 "$k")"
        printf -v "in_$k" '%s' "$(ev_field "$ev" pushed 2 "$k")"
        printf -v "out_$k" '%s' "$(ev_field "$ev" pulled 1 "$k")"
    done
    [ "$in_files" = 1 ] || die ":sync-in sent $in_files files, not 1"
    [ "$out_files" = 1 ] || die ":sync-out fetched $out_files files, not 1"
    # Context: a one-shot run (push, command, pull, teardown) and, just
    # before it, tar | tar of the same tree: both after the session's
    # teardown deleted its 50,000-file scratch copy, which on ext4
    # without a journal slows file creation for minutes.
    echo "(c) one-shot run, 50,000-file tree, and tar | tar just before it ..." >&2
    sync
    warm "$tmp/small"
    new_dst
    measure "$tmp/res.oneshot.tar" sh -c "$TAR_PIPE" sh "$tmp/small" "$DST"
    sync
    t0=$EPOCHREALTIME
    TMPDIR=$tmp/scratch "$ATP" --json -w "$tmp/small" -- sh -c "printf 'x\\n' >> d33/e1/f055.txt" \
        >"$tmp/oneshot.jsonl" 2>"$tmp/oneshot.err" || { cat "$tmp/oneshot.err" >&2; die "the one-shot run failed"; }
    t1=$EPOCHREALTIME
    one_wall=$(span_s "$t0" "$t1")
    one_push=$(ev_field "$tmp/oneshot.jsonl" pushed 1 seconds)
    one_pull=$(ev_field "$tmp/oneshot.jsonl" pulled 1 seconds)
    one_pull_files=$(ev_field "$tmp/oneshot.jsonl" pulled 1 files)
    : "${one_push:=nan}" "${one_pull:=nan}" "${one_pull_files:=?}"
    c_done=1
fi

# ------------------------------------------------------------ (d) RSS

declare -A rss_kib rss_s
if ! skip d; then
    echo "(d) peak RSS at $RSS_SIZES_MIB MiB: $RSS_RUNS run(s) each ..." >&2
    max_mib=0
    for mib in $RSS_SIZES_MIB; do [ "$mib" -gt "$max_mib" ] && max_mib=$mib; done
    "$GENPY" "$tmp/gen.py" big "$tmp/blobs" $((max_mib / BLOB_MIB)) "$BLOB_MIB"
    for mib in $RSS_SIZES_MIB; do   # hard links: one copy of the data on disk
        mkdir "$tmp/big$mib"
        for ((i = 0; i < mib / BLOB_MIB; i++)); do
            ln "$tmp/blobs/$(printf 'blob%03d.bin' "$i")" "$tmp/big$mib/"
        done
    done
    warm "$tmp/blobs"
    for mib in $RSS_SIZES_MIB; do
        : >"$tmp/res.big$mib"
        for ((i = 0; i < RSS_RUNS; i++)); do
            new_dst
            measure "$tmp/res.big$mib" "$XFER" "$tmp/big$mib" "$DST"
        done
        got=$(tree_bytes "$DST")
        [ "$got" = $((mib * 1024 * 1024)) ] || die "atp-xfer moved $got bytes of $((mib * 1024 * 1024))"
        rss_kib[$mib]=$(maxcol "$tmp/res.big$mib" 2)
        rss_s[$mib]=$(med "$tmp/res.big$mib" 1)
        rm -rf "$DST" "$tmp/big$mib"   # a few large files: cheap to delete
    done
    rm -rf "$tmp/blobs"
fi

# ------------------------------------------------------------ the table

misses=0
verdict() {  # VAR OK
    if [ "$2" = 1 ]; then printf -v "$1" PASS; else printf -v "$1" MISS; misses=$((misses + 1)); fi
}
row() { printf '%-38s %12s %12s %12s %8s %-11s %s\n' "$@"; }
secs() { if [ "$1" = nan ]; then echo -; else calc "printf \"%.2f s\", $1"; fi; }
mib() { if [ "$1" = nan ]; then echo -; else calc "printf \"%.1f MiB\", $1 / 1024"; fi; }

echo
echo "(a), (b): full transfer into a new directory, wall time (median)"
row "what" "atp" "tar | tar" "python" "ratio" "target" "result"
row "----" "---" "---------" "------" "-----" "------" "------"
for t in lean small; do
    l=a; [ "$t" = small ] && l=b
    skip "$l" && continue
    a=$(med "$tmp/res.$t.atp" 1); p=$(med "$tmp/res.$t.tar" 1); y=$(med "$tmp/res.$t.python" 1)
    ratio=$(calc "printf \"%.2f\", $a / $p")
    verdict res "$(calc "print ($ratio <= 1.2) ? 1 : 0")"
    row "($l) ${T_DESC[$t]}, $(calc "printf \"%d files %.0f MB\", ${T_FILES[$t]}, ${T_BYTES[$t]} / 1e6")" \
        "$(secs "$a")" "$(secs "$p")" "$(secs "$y")" "${ratio}x" "<= 1.2x" "$res"
    ac=$(med "$tmp/res.$t.atp" 3); pc=$(med "$tmp/res.$t.tar" 3)
    row "    CPU time (user + system)" "$(secs "$ac")" "$(secs "$pc")" \
        "$(secs "$(med "$tmp/res.$t.python" 3)")" "$(calc "printf \"%.2fx\", $ac / $pc")" "" ""
    row "    peak RSS (highest process)" "$(mib "$(maxcol "$tmp/res.$t.atp" 2)")" \
        "$(mib "$(maxcol "$tmp/res.$t.tar" 2)")" "$(mib "$(maxcol "$tmp/res.$t.python" 2)")" "" "" ""
    if [ "$y" != nan ]; then
        row "    python / atp (wall)" "" "" "$(calc "printf \"%.1fx\", $y / $a")" "" "" ""
    fi
done

if [ -n "$c_done" ]; then
    echo
    echo "(c) incremental sync, 50,000-file tree, atp-run session (local, workdir_mode = copy)"
    row "what" "moved" "of the full" "fraction" "" "target" "result"
    row "----" "-----" "-----------" "--------" "" "------" "------"
    row "full push at session start" "$(calc "printf \"%.1f MB\", $full_bytes / 1e6")" "" "" "" "" ""
    row "" "$(secs "$full_seconds")" "" "" "" "" ""
    for d in in out; do
        if [ "$d" = in ]; then b=$in_bytes s=$in_seconds m=$in_mode
        else b=$out_bytes s=$out_seconds m=$out_mode; fi
        fb=$(calc "printf \"%.4f\", $b / $full_bytes * 100")
        fs=$(calc "printf \"%.2f\", $s / $full_seconds * 100")
        verdict rb "$(calc "print ($fb < 1) ? 1 : 0")"
        verdict rs "$(calc "print ($fs < 10) ? 1 : 0")"
        [ "$d" = in ] && what=":sync-in, 1 host file changed" || what=":sync-out, 1 sandbox file changed"
        row "$what" "$b B" "$(calc "printf \"%.1f MB\", $full_bytes / 1e6")" "${fb}%" "" "< 1%" "$rb"
        row "    ($m) seconds" "$(secs "$s")" "$(secs "$full_seconds")" "${fs}%" "" "< 10%" "$rs"
    done
    tarone=$(med "$tmp/res.oneshot.tar" 1)
    tarb=$(med "$tmp/res.small.tar" 1)
    if [ "$tarb" != nan ]; then
        row "one-shot run, wall (push+cmd+pull+rm)" "$(secs "$one_wall")" "$(secs "$tarb")" \
            "$(calc "printf \"%.2fx\", $one_wall / $tarb")" "" "(context)" ""
    else
        row "one-shot run, wall (push+cmd+pull+rm)" "$(secs "$one_wall")" "" "" "" "(context)" ""
    fi
    row "    its push, its pull ($one_pull_files file)" "$(secs "$one_push")" "$(secs "$one_pull")" "" "" "" ""
    row "    tar | tar just before it" "" "$(secs "$tarone")" "" "" "" ""
    echo "(the one-shot run is set against the median tar | tar of (b); it and the tar | tar just"
    if [ -n "$nojournal" ]; then
        echo " before it followed the session's teardown, which deleted 50,000 files: on ext4"
        echo " without a journal that slows creating files for minutes)"
    else
        echo " before it followed the session's teardown, which deleted 50,000 files)"
    fi
fi

if ! skip d; then
    echo
    echo "(d) peak RSS of atp-xfer (scan + tar out + extract, one process)"
    row "what" "atp" "seconds" "" "" "target" "result"
    row "----" "---" "-------" "" "" "------" "------"
    for mib in $RSS_SIZES_MIB; do
        verdict res "$(calc "print (${rss_kib[$mib]} < $RSS_LIMIT_KIB) ? 1 : 0")"
        row "$mib MiB tree ($((mib / BLOB_MIB)) files of $BLOB_MIB MiB)" "$(mib "${rss_kib[$mib]}")" \
            "$(secs "${rss_s[$mib]}")" "" "" "< 32 MiB" "$res"
    done
    read -r -a sizes <<<"$RSS_SIZES_MIB"
    lo=${sizes[0]}; hi=${sizes[${#sizes[@]} - 1]}
    growth=$((rss_kib[$hi] - rss_kib[$lo]))
    verdict res "$(calc "print ($growth <= $FLAT_KIB) ? 1 : 0")"
    row "growth $lo MiB -> $hi MiB" "$growth KiB" "" "" "" "<= 1 MiB" "$res"
    for t in lean small; do
        [ -s "$tmp/res.$t.atp" ] || continue
        r=$(maxcol "$tmp/res.$t.atp" 2)
        verdict res "$(calc "print ($r < $RSS_LIMIT_KIB) ? 1 : 0")"
        row "${T_DESC[$t]} tree (${T_ENTRIES[$t]} entries)" "$(mib "$r")" "" "" "" "< 32 MiB" "$res"
    done
fi

echo
echo "atp = bench/atp-xfer (both ends the engine); tar = tar -cf - -C SRC . | tar -xf - -C DST;"
echo "python = tarfile gzip into a BytesIO, then extractall$( [ -n "$PY_FILTER" ] && echo '(filter="data")' ); ratio = atp / tar."
echo "In (c) the sandbox side is GNU tar and find in the scratch copy; seconds are the events' own."
read -r busy1 total1 < <(cpu_stat)
our_cpu ours1
other=$(awk -v b="$((busy1 - busy0))" -v t="$((total1 - total0))" -v o="$(calc "print $ours1 - $ours0")" -v hz="$hz" \
    'BEGIN { if (t <= 0) { print 0; exit } x = (b / hz - o) / (t / hz) * 100; printf "%.0f", x < 0 ? 0 : x }')
echo "the run took $(calc "printf \"%.0f\", $(span_s "$bench_t0" "$EPOCHREALTIME")") s; other processes used ${other}% of the machine's CPU time meanwhile"
if [ "$other" -gt 10 ]; then
    echo "warning: the machine was shared, so wall times are noisy; read the CPU"
    echo "         times too, or rerun on a quiet machine"
fi
echo
if [ "$misses" -eq 0 ]; then
    echo "all targets met"
    exit 0
fi
echo "$misses target(s) missed"
exit 1
