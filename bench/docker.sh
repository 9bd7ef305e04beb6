#!/usr/bin/env bash
#
# bench/docker.sh - the docker backend against the docker CLI and the
# Python docker package (Debian python3-docker), side by side in one run,
# against the same daemon and image.
#
#   bench/docker.sh [PATH/TO/atp-run | BUILDDIR]
#
#   (a) one-shot:  atp-run -b docker -- true   (network = none)
#                  vs  docker run --rm IMAGE true, and with --network none
#                  vs  python3: containers.run(IMAGE, "true", remove=True)
#                  (also atp's exec path, one_shot = exec, for comparison)
#                  target: atp at most 0.8x the docker CLI (medians), and
#                  never slower than the Python client
#   (b) session exec: one exec of `true` in an open atp session
#                  vs  docker exec CONTAINER true
#                  vs  python3: container.exec_run("true"), warm client
#                  same targets
#
# Every command runs BENCH_RUNS times (default 30), the alternatives
# interleaved round by round (the order rotates), so that a burst of other
# work on the machine hits all of them alike; the table shows medians and
# the 10th-90th percentiles.  Wall times come from bash's $EPOCHREALTIME
# around each run, without a fork in between.
#
# The daemon: $BENCH_DOCKER_HOST (unix:///PATH) when set, else a private
# dockerd started here like the tests' (tests/docker/dockerd.sh) with
# $BENCH_STORAGE (default overlay2, falling back to vfs), stopped at the
# end.  The image is busybox-static imported as atp-bench:1 (no registry
# is needed), or $BENCH_IMAGE on a given daemon.
#
# Exit status: 0 when every target is met, 1 when one is missed, 2 when
# the benchmark could not run.
set -euo pipefail
export LC_ALL=C

RUNS=${BENCH_RUNS:-30}

die() { echo "docker.sh: $*" >&2; exit 2; }
note() { echo "  $*" >&2; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
srcdir=$(cd "$here/.." && pwd)
[ -n "${EPOCHREALTIME:-}" ] || die "needs bash 5 (\$EPOCHREALTIME)"

# ------------------------------------------------------------ find atp-run

# shellcheck source=SCRIPTDIR/lib.sh
. "$here/lib.sh"
bench_find_atp atp-docker.so "${1:-}"

# ------------------------------------------------------------ the daemon

tmp=$(mktemp -d /tmp/atp-bdk.XXXXXX) || die "cannot create a directory"
own_daemon=
cleanup() {
    set +e
    [ -n "${ATP_W:-}" ] && exec {ATP_W}>&-
    [ -n "${PY_W:-}" ] && exec {PY_W}>&-
    if [ -n "${session_cid:-}" ]; then
        curl -s --unix-socket "$DOCKER_SOCK" -X DELETE \
            "http://localhost/containers/$session_cid?force=1" >/dev/null 2>&1
    fi
    bench_docker_cleanup "$tmp"
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bench_docker_daemon "$tmp"
docker_api() { curl -s --unix-socket "$DOCKER_SOCK" "$@"; }
docker_api_path() { local p=$1; shift; docker_api "$@" "http://localhost$p"; }

# ------------------------------------------------------------ contenders

cat >"$tmp/atp.ini" <<EOF
[atp]
backend = docker
[backend.docker]
image = $IMAGE
socket = unix://$DOCKER_SOCK
network = none
[backend.dockerexec]
plugin = docker
image = $IMAGE
socket = unix://$DOCKER_SOCK
network = none
one_shot = exec
EOF
export ATP_CONFIG=$tmp/atp.ini
mkdir -p "$tmp/wd"
cd "$tmp/wd"
"$ATP" -b docker -- true || die "'$ATP -b docker -- true' fails"

clis=()
for c in /usr/bin/docker "$(command -v docker || true)"; do
    [ -n "$c" ] && [ -x "$c" ] || continue
    c=$(readlink -f "$c")
    [[ " ${clis[*]} " == *" $c "* ]] || clis+=("$c")
done
[ ${#clis[@]} -gt 0 ] || die "no docker CLI (apt-get install docker.io)"

PY=/usr/bin/python3
have_py=
if "$PY" -c 'import docker' 2>/dev/null; then
    have_py=1
    py_version=$("$PY" -c 'import docker; print(docker.__version__)')
else
    note "no python3-docker (apt-get install python3-docker): Python columns skipped"
fi
cat >"$tmp/oneshot.py" <<'PY'
import sys, docker
c = docker.DockerClient(base_url=sys.argv[1])
c.containers.run(sys.argv[2], "true", remove=True)
PY
cat >"$tmp/worker.py" <<'PY'
# A warm client in one process, driven line by line from stdin: "run"
# runs a one-shot container, "exec" one exec in the given container;
# each answers "ok" when done.
import sys, docker
c = docker.DockerClient(base_url=sys.argv[1])
image, ct = sys.argv[2], c.containers.get(sys.argv[3])
for line in sys.stdin:
    if line.strip() == "exec":
        ct.exec_run("true")
    else:
        c.containers.run(image, "true", remove=True)
    print("ok", flush=True)
PY

# ------------------------------------------------------------ measuring

pct() {  # P: the P-th percentile of the numbers on stdin
    sort -g | awk -v p="$1" '{ v[NR] = $1 } END {
        if (NR == 0) { print "nan"; exit }
        i = int((NR - 1) * p / 100 + 0.5) + 1; print v[i] }'
}

# time_into FILE CMD...: one run of CMD, its wall ms appended to FILE.
time_into() {
    local f=$1 t0 t1 us
    shift
    t0=$EPOCHREALTIME
    "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; return 1; }
    t1=$EPOCHREALTIME
    us=$(( ${t1/./} - ${t0/./} ))
    printf '%d.%03d\n' $((us / 1000)) $((us % 1000)) >>"$f"
}

# Persistent contenders, asked one line at a time: an atp session (a
# command in, its JSON lines out until the result) and the Python worker.
ask_atp() {
    local l
    echo true >&"$ATP_W"
    while IFS= read -r -u "$ATP_R" l; do
        [[ $l == *'"type":"result"'* ]] && break
    done
    [[ $l == *'"status":"ok"'* ]]
}
ask_py() {  # WHAT
    local l
    echo "$1" >&"$PY_W"
    IFS= read -r -u "$PY_R" l && [ "$l" = ok ]
}

# rounds NAME...: RUNS rounds, each running every contender once in a
# rotating order, after one warm-up each.
declare -A CMD
rounds() {
    local names=("$@") n i k
    for n in "${names[@]}"; do
        : >"$tmp/$n.ms"
        eval "${CMD[$n]}" >/dev/null 2>&1 || die "warm-up of $n failed: ${CMD[$n]}"
    done
    for ((i = 0; i < RUNS; i++)); do
        for ((k = 0; k < ${#names[@]}; k++)); do
            n=${names[$(((i + k) % ${#names[@]}))]}
            eval "time_into '$tmp/$n.ms' ${CMD[$n]}" || die "$n failed"
        done
    done
}

# The container for docker exec and the Python worker.
session_cid=$(docker_api -H 'Content-Type: application/json' -X POST -d \
    "{\"Image\":\"$IMAGE\",\"Entrypoint\":[\"sleep\",\"3600\"],\"HostConfig\":{\"NetworkMode\":\"none\",\"Init\":true}}" \
    http://localhost/containers/create | sed -n 's/.*"Id":"\([0-9a-f]*\)".*/\1/p')
[ -n "$session_cid" ] || die "cannot create the container for docker exec"
docker_api -X POST "http://localhost/containers/$session_cid/start" >/dev/null
mkfifo "$tmp/atp.in" "$tmp/atp.out" "$tmp/py.in" "$tmp/py.out"
"$ATP" -b docker session --json <"$tmp/atp.in" >"$tmp/atp.out" 2>"$tmp/atp.err" &
workers=$!
exec {ATP_W}>"$tmp/atp.in" {ATP_R}<"$tmp/atp.out"
if [ -n "$have_py" ]; then
    "$PY" "$tmp/worker.py" "$DOCKER_HOST" "$IMAGE" "$session_cid" \
        <"$tmp/py.in" >"$tmp/py.out" &
    workers="$workers $!"
    exec {PY_W}>"$tmp/py.in" {PY_R}<"$tmp/py.out"
fi

load0=$(cut -d' ' -f1-3 /proc/loadavg)
echo "docker backend benchmark: $RUNS runs each, interleaved" >&2

# (a) one-shot
names=(atp atp_exec)
CMD[atp]="'$ATP' -b docker -- true"
CMD[atp_exec]="'$ATP' -b dockerexec -- true"
for i in "${!clis[@]}"; do
    names+=("cli$i" "clin$i")
    CMD[cli$i]="'${clis[$i]}' run --rm '$IMAGE' true"
    CMD[clin$i]="'${clis[$i]}' run --rm --network none '$IMAGE' true"
done
if [ -n "$have_py" ]; then
    names+=(py pywarm)
    CMD[py]="'$PY' '$tmp/oneshot.py' '$DOCKER_HOST' '$IMAGE'"
    CMD[pywarm]="ask_py run"
fi
note "(a) one-shot: ${names[*]}"
rounds "${names[@]}"

# (b) session exec
enames=(atp_exec1)
CMD[atp_exec1]="ask_atp"
for i in "${!clis[@]}"; do
    enames+=("exec$i")
    CMD[exec$i]="'${clis[$i]}' exec $session_cid true"
done
if [ -n "$have_py" ]; then
    enames+=(pyexec)
    CMD[pyexec]="ask_py exec"
fi
note "(b) session exec: ${enames[*]}"
rounds "${enames[@]}"
exec {ATP_W}>&-
ATP_W=
if [ -n "$have_py" ]; then
    exec {PY_W}>&-
    PY_W=
fi
# shellcheck disable=SC2086
wait $workers
load1=$(cut -d' ' -f1-3 /proc/loadavg)

# ------------------------------------------------------------ the table

med() { pct 50 <"$tmp/$1.ms"; }
row() {  # LABEL FILE REF
    local m p10 p90 ratio
    m=$(med "$2"); p10=$(pct 10 <"$tmp/$2.ms"); p90=$(pct 90 <"$tmp/$2.ms")
    ratio=$(awk -v a="$m" -v b="$3" 'BEGIN { printf "%.2f", a / b }')
    printf '| %-58s | %8.1f | %7.1f - %7.1f | %5sx |\n' "$1" "$m" "$p10" \
        "$p90" "$ratio"
}

cli_label() { echo "$1 ($("$1" --version 2>/dev/null | sed 's/Docker version //; s/,.*//'))"; }
ref=$(med cli0)
eref=$(med exec0)
status=0
{
    echo
    echo "atp: $("$ATP" --version 2>&1 | head -n 1) ($ATP)"
    echo "daemon: dockerd $(docker_api_path /version | "$PY" -c 'import json, sys
print(json.load(sys.stdin)["Version"])' 2>/dev/null), storage $storage, image $IMAGE"
    echo "machine: $(nproc) cpus, $(uname -r); load average $load0 -> $load1"
    echo "python3-docker: ${py_version:-absent}"
    echo
    echo "(a) one-shot \`true\`, wall ms (ratio to $(cli_label "${clis[0]}"))"
    echo
    printf '| %-58s | %8s | %17s | %6s |\n' "command" "median" "p10 - p90" "ratio"
    printf '|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..60})" "----------" \
        "-------------------" "--------"
    row "atp-run -b docker -- true (run path)" atp "$ref"
    row "atp-run, one_shot = exec (exec path)" atp_exec "$ref"
    for i in "${!clis[@]}"; do
        row "$(cli_label "${clis[$i]}") run --rm" "cli$i" "$ref"
        row "$(cli_label "${clis[$i]}") run --rm --network none" "clin$i" \
            "$ref"
    done
    if [ -n "$have_py" ]; then
        row "python3-docker containers.run, new process" py "$ref"
        row "python3-docker containers.run, warm client" pywarm "$ref"
    fi
    echo
    echo "(b) session exec of \`true\`, ms (ratio to $(cli_label "${clis[0]}") exec)"
    echo
    printf '| %-58s | %8s | %17s | %6s |\n' "command" "median" "p10 - p90" "ratio"
    printf '|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..60})" "----------" \
        "-------------------" "--------"
    row "atp-run session: one command" atp_exec1 "$eref"
    for i in "${!clis[@]}"; do
        row "$(cli_label "${clis[$i]}") exec" "exec$i" "$eref"
    done
    [ -n "$have_py" ] && row "python3-docker exec_run, warm client" pyexec "$eref"
    echo
} | tee "$tmp/table"

# ------------------------------------------------------------ targets

check() {  # DESC A B FACTOR: median(A) <= FACTOR * median(B)
    local a b
    a=$(med "$2"); b=$(med "$3")
    if awk -v a="$a" -v b="$b" -v f="$4" 'BEGIN { exit !(a <= f * b) }'; then
        echo "target met:    $1 ($a ms vs $b ms)"
    else
        echo "target missed: $1 ($a ms vs $b ms)"
        status=1
    fi
}
for i in "${!clis[@]}"; do
    check "one-shot at most 0.8x $(cli_label "${clis[$i]}") run --rm" atp "cli$i" 0.8
    check "one-shot at most 0.8x $(cli_label "${clis[$i]}") run --rm --network none" \
        atp "clin$i" 0.8
    check "session exec at most 0.8x $(cli_label "${clis[$i]}") exec" atp_exec1 "exec$i" 0.8
done
if [ -n "$have_py" ]; then
    check "one-shot not slower than python3-docker (new process)" atp py 1
    check "one-shot not slower than python3-docker (warm client)" atp pywarm 1
    check "session exec not slower than python3-docker exec_run" atp_exec1 pyexec 1
fi
exit $status
