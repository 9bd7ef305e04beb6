#!/usr/bin/env bash
#
# bench/modal.sh - the modal backend through the fake Modal server on
# loopback (tests/modal/fake_modal.py), side by side with plain tools, in
# one run.
#
#   bench/modal.sh [PATH/TO/atp-run | BUILDDIR]
#
#   (a) push + pull of a Lean-like tree (5,000 files, ~200 MB: .olean-like
#       blobs and small sources in nested directories)
#         atp: push = `atp-run --no-pull -w TREE -- true` (the "pushed"
#              event's seconds, and the whole run's wall time);
#              pull = `:sync-out` of a session over an empty directory
#              whose sandbox holds the tree (the "pulled" event's seconds)
#         vs   `tar -cf - . | tar -xf -` into a fresh directory, each way
#   (b) the same with 50,000 small files (~4 KiB, ~200 MB)
#   (c) peak RSS of atp-run pushing and pulling Lean-like trees of ~50,
#       ~100 and ~200 MB (GNU time, %M): it must stay flat
#   (d) the added latency of one exec in an open session: `true`, BENCH_EXECS
#       times in one `atp-run session`, modal (h2c, and TLS when openssl can
#       make a certificate) vs local (each result's duration_s; medians and
#       90th percentiles)
#
# Every timed transfer starts after `sync`, because writing back what the
# previous one wrote (hundreds of MB) otherwise lands in the next one's
# time; file creation on a VM disk still varies run to run, hence medians.
#
# The fake keeps each exec's output in memory and runs commands as host
# processes in a per-sandbox directory, so (a) and (b) measure the
# plugin, the gRPC path and the core's tar streams against a Python server
# on the same 2 CPUs - an upper bound on atp's own cost.  Putting the tree
# into a sandbox for the pull (`cp -a` from the host path, which the
# fake's sandboxes can see) is set-up and not timed.
#
# Knobs: BENCH_RUNS (3) runs per transfer, the median counts;
# BENCH_EXECS (200); BENCH_TMPDIR (default $TMPDIR or /tmp) for the trees
# (~800 MB, removed at the end); BENCH_SCALE (1) divides the trees' file
# counts, for a quick look.
#
# Exit status: 0 when peak RSS is flat (at most 4 MiB more at 200 MB than
# at 50 MB, and under 64 MiB), 1 when not, 2 when the benchmark could not
# run.
set -euo pipefail
export LC_ALL=C

RUNS=${BENCH_RUNS:-3}
SCALE=${BENCH_SCALE:-1}
EXECS=${BENCH_EXECS:-200}
PY=/usr/bin/python3

die() { echo "modal.sh: $*" >&2; exit 2; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
srcdir=$(cd "$here/.." && pwd)
[ -n "${EPOCHREALTIME:-}" ] || die "needs bash 5 (\$EPOCHREALTIME)"
[ -x /usr/bin/time ] || die "needs GNU time: apt-get install time"
"$PY" -c 'import grpc, google.protobuf' 2>/dev/null ||
    die "needs $PY with grpc and protobuf: apt-get install python3-grpcio python3-protobuf"
command -v protoc >/dev/null || die "needs protoc: apt-get install protobuf-compiler"

# ------------------------------------------------------------ find atp-run

# shellcheck source=SCRIPTDIR/lib.sh
. "$here/lib.sh"
bench_find_atp atp-modal.so "${1:-}"

tmp=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/atp-bench-modal.XXXXXX")
fake_pid=
cleanup() {
    [ -n "$fake_pid" ] && kill "$fake_pid" 2>/dev/null && wait "$fake_pid" 2>/dev/null
    for p in $(cat "$tmp"/fake-tls/ports 2>/dev/null | cut -d' ' -f3); do
        kill "$p" 2>/dev/null
    done
    rm -rf "$tmp"
}
trap cleanup EXIT

# ------------------------------------------------------------ the fake

mkdir -p "$tmp/fake" "$tmp/home"
"$PY" "$srcdir/tests/modal/fake_modal.py" serve --state "$tmp/fake" \
    --token-id ak-bench --token-secret as-bench --parent $$ \
    >"$tmp/fake/out" 2>&1 &
fake_pid=$!
for _ in $(seq 200); do [ -s "$tmp/fake/ports" ] && break; sleep 0.05; done
[ -s "$tmp/fake/ports" ] || die "the fake server did not start: $(cat "$tmp/fake/out")"
read -r cp_port _ <"$tmp/fake/ports"
cat >"$tmp/atp.ini" <<EOF
[atp]
backend = modal
[image]
name = open-atp:latest
[backend.modal]
server_url = http://127.0.0.1:$cp_port
EOF
export HOME=$tmp/home MODAL_TOKEN_ID=ak-bench MODAL_TOKEN_SECRET=as-bench
export ATP_CONFIG=$tmp/atp.ini XDG_STATE_HOME=$tmp/state
"$PY" "$srcdir/tests/modal/fake_modal.py" ctl --state "$tmp/fake" set \
    '{"task_delay": 0}' >/dev/null

# ------------------------------------------------------------ trees

# gen KIND FILES DIR: a deterministic tree of incompressible files.
gen() {
    "$PY" - "$@" <<'EOF'
import os, random, sys
kind, n, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rnd = random.Random(42)
blob = os.urandom(1 << 20)
def put(path, size):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        while size > 0:
            k = min(size, len(blob))
            o = rnd.randrange(0, len(blob) - k + 1)
            f.write(blob[o:o + k])
            size -= k
for i in range(n):
    if kind == "lean":
        d = "%s/.lake/build/lib/Mathlib/M%02d/S%02d" % (root, i % 40, i % 7)
        if i % 4 == 0:   # .olean-like: most of the bytes
            put("%s/F%05d.olean" % (d, i), rnd.randrange(40000, 280000))
        else:            # sources, .ilean, traces
            ext = (".lean", ".ilean", ".trace")[i % 3]
            put("%s/F%05d%s" % (d.replace("/.lake/build/lib", ""), i, ext),
                rnd.randrange(500, 7000))
    else:
        put("%s/d%03d/f%05d.txt" % (root, i % 500, i), rnd.randrange(3000, 5200))
EOF
}

echo "modal.sh: generating trees in $tmp" >&2
gen lean $((5000 / SCALE)) "$tmp/lean" && gen small $((50000 / SCALE)) "$tmp/small"
gen lean $((1250 / SCALE)) "$tmp/lean50" && gen lean $((2500 / SCALE)) "$tmp/lean100"
tree_desc() { echo "$(find "$1" -type f | wc -l) files, $(du -sm --apparent-size "$1" | cut -f1) MB"; }

# The core never transfers .lake by default; the benchmark moves it all.
printf '[atp]\nbackend = modal\ntransfer_exclude = .nothing\n' >"$tmp/x.ini"
sed -n '/^\[image\]/,$p' "$tmp/atp.ini" >>"$tmp/x.ini"
export ATP_CONFIG=$tmp/x.ini

now() { echo "$EPOCHREALTIME"; }
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
event_s() { "$PY" -c 'import json, sys
for l in sys.stdin:
    o = json.loads(l)
    if o.get("type") == sys.argv[1]: print(o["seconds"])' "$1"; }

# push TREE: sets push_s (the "pushed" event's seconds), push_wall (the
# whole run) and push_rss.
push() {
    local t0 out
    sync
    t0=$(now)
    out=$(/usr/bin/time -f %M -o "$tmp/rss" "$ATP" --json --no-pull -w "$1" -- true)
    push_wall=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }')
    push_rss=$(cat "$tmp/rss")
    push_s=$(echo "$out" | event_s pushed)
    [ -n "$push_s" ] || die "no push of $1: $out"
}

# pull TREE: a session over an empty dir, the sandbox filled with TREE;
# sets pull_s (the "pulled" event's seconds) and pull_rss.
pull() {
    local dst=$tmp/pulled out
    rm -rf "$dst" && mkdir -p "$dst"
    sync
    out=$(printf 'cp -a %s/. . && sync\n:sync-out\n' "$1" |
        /usr/bin/time -f %M -o "$tmp/rss" "$ATP" session --json -w "$dst")
    pull_rss=$(cat "$tmp/rss")
    [ "$(find "$dst" -type f | wc -l)" = "$(find "$1" -type f | wc -l)" ] ||
        die "the pull of $1 is incomplete"
    pull_s=$(echo "$out" | event_s pulled)
}

# tarcp SRC: sets tar_s, the seconds of tar -c | tar -x into a fresh
# directory.
tarcp() {
    local dst=$tmp/tarcopy t0
    rm -rf "$dst" && mkdir -p "$dst"
    sync
    t0=$(now)
    tar -C "$1" -cf - . | tar -C "$dst" -xf -
    tar_s=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }')
}

# transfer NAME TREE: rows for (a)/(b).
transfer() {
    local name=$1 tree=$2 i p=() w=() l=() t=()
    for ((i = 0; i < RUNS; i++)); do
        push "$tree"; p+=("$push_s"); w+=("$push_wall")
        pull "$tree"; l+=("$pull_s")
        tarcp "$tree"; t+=("$tar_s")
    done
    local pm wm lm tm
    pm=$(printf '%s\n' "${p[@]}" | median); wm=$(printf '%s\n' "${w[@]}" | median)
    lm=$(printf '%s\n' "${l[@]}" | median); tm=$(printf '%s\n' "${t[@]}" | median)
    printf '| %s (%s) | %.2f s (run %.2f s) | %.2f s | %.2f s | %.2f s | %.2f s | %.1fx |\n' \
        "$name" "$(tree_desc "$tree")" "$pm" "$wm" "$lm" \
        "$(awk -v a="$pm" -v b="$lm" 'BEGIN { print a + b }')" "$tm" \
        "$(awk -v a="$tm" 'BEGIN { print 2 * a }')" \
        "$(awk -v a="$pm" -v b="$lm" -v t="$tm" 'BEGIN { printf "%.1f", (a + b) / (2 * t) }')"
}

echo
echo "atp-run: $("$ATP" --version 2>/dev/null | head -1) ($ATP)"
echo "machine: $(nproc) cpus, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "curl: $(curl-config --version 2>/dev/null), python $("$PY" -c 'import grpc, sys; print(sys.version.split()[0], "grpcio", grpc.__version__)')"
echo "runs per transfer: $RUNS (medians)"
echo
echo "(a, b) workdir transfer through the fake, vs tar | tar on the same disk"
echo
echo "| tree | atp push | atp pull | atp push+pull | tar \\| tar one way | tar \\| tar both ways | atp / tar |"
echo "|---|---|---|---|---|---|---|"
transfer "Lean-like" "$tmp/lean"
transfer "small files" "$tmp/small"

echo
echo "(c) peak RSS of atp-run (KiB)"
echo
echo "| tree | push | pull |"
echo "|---|---|---|"
rss_min=999999999 rss_max=0
for t in lean50 lean100 lean; do
    push "$tmp/$t"; pr=$push_rss
    pull "$tmp/$t"; lr=$pull_rss
    echo "| $(tree_desc "$tmp/$t") | $pr | $lr |"
    for v in "$pr" "$lr"; do
        [ "$v" -lt "$rss_min" ] && rss_min=$v
        [ "$v" -gt "$rss_max" ] && rss_max=$v
    done
done
rm -rf "$tmp/pulled" "$tmp/tarcopy"

# A second fake whose control plane speaks TLS: libcurl shares one
# connection there (h2c connections cannot be reused by libcurl 7.x).
tls_ini=
if command -v openssl >/dev/null &&
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
        -addext "subjectAltName=IP:127.0.0.1" -keyout "$tmp/key.pem" \
        -out "$tmp/cert.pem" >/dev/null 2>&1; then
    mkdir -p "$tmp/fake-tls"
    "$PY" "$srcdir/tests/modal/fake_modal.py" serve --state "$tmp/fake-tls" \
        --token-id ak-bench --token-secret as-bench --parent $$ \
        --tls-cert "$tmp/cert.pem" --tls-key "$tmp/key.pem" \
        --set '{"task_delay": 0}' >"$tmp/fake-tls/out" 2>&1 &
    for _ in $(seq 200); do [ -s "$tmp/fake-tls/ports" ] && break; sleep 0.05; done
    if [ -s "$tmp/fake-tls/ports" ]; then
        read -r tls_port _ <"$tmp/fake-tls/ports"
        tls_ini=$tmp/tls.ini
        sed -e "s|^server_url = .*|server_url = https://127.0.0.1:$tls_port|" \
            "$tmp/atp.ini" >"$tls_ini"
        echo "ca_file = $tmp/cert.pem" >>"$tls_ini"
    fi
fi

echo
echo "(d) one exec of \`true\` in an open session ($EXECS execs, ms)"
echo
echo "| backend | median | p90 |"
echo "|---|---|---|"
mkdir -p "$tmp/empty"
declare -A med
for b in local modal modal-tls; do
    cfg=$ATP_CONFIG
    case $b in
    modal-tls) [ -n "$tls_ini" ] || continue; cfg=$tls_ini ;;
    esac
    read -r m p < <(yes true | head -n "$EXECS" |
        ATP_CONFIG=$cfg "$ATP" session -b "${b%-tls}" --json -w "$tmp/empty" |
        "$PY" -c '
import json, statistics, sys
d = sorted(json.loads(l)["duration_s"] * 1000 for l in sys.stdin
           if json.loads(l).get("type") == "result")
print("%.2f %.2f" % (statistics.median(d), d[int(len(d) * 0.9)]))')
    med[$b]=$m
    case $b in
    modal) echo "| modal (h2c, a connection per call) | $m | $p |" ;;
    modal-tls) echo "| modal (TLS, one shared connection) | $m | $p |" ;;
    *) echo "| $b | $m | $p |" ;;
    esac
done
echo
for b in modal modal-tls; do
    [ -n "${med[$b]:-}" ] || continue
    echo "added latency of one $b session exec: $(awk -v a="${med[$b]}" -v b="${med[local]}" 'BEGIN { printf "%.2f", a - b }') ms (median), $(awk -v a="${med[$b]}" -v b="${med[local]}" 'BEGIN { printf "%.1f", a / b }')x local"
done

echo
status=0
if [ $((rss_max - rss_min)) -le 4096 ] && [ "$rss_max" -lt 65536 ]; then
    echo "peak RSS flat: $rss_min..$rss_max KiB across 50..200 MB trees (target: within 4 MiB, under 64 MiB): met"
else
    echo "peak RSS flat: $rss_min..$rss_max KiB across 50..200 MB trees (target: within 4 MiB, under 64 MiB): MISSED"
    status=1
fi
exit $status
