#!/usr/bin/env bash
#
# bench/python.sh - execs in one Docker session through the Python package
# against what open-atp does: subprocess.run(["docker", "exec", ...]) into a
# running container, once for each command.
#
#   bench/python.sh [BUILDDIR]
#
# Both sides run BENCH_N (default 1000) commands of `true` in one container
# of the same daemon and image, in blocks of 50 that alternate between the
# contenders so that a burst of other work on the machine hits all of them
# alike.  Contenders:
#   atp          Session.exec("true").wait() through libatp (python/)
#   docker exec  subprocess.run(["docker", "exec", CTR, "sh", "-c",
#                "timeout -k 30 600 sh -c 'cd /tmp && true'"]), open-atp's
#                form (sh for bash: the image is busybox)
#   docker exec (bare)   subprocess.run(["docker", "exec", CTR, "true"])
# The table shows each one's total, median and 90th percentile per exec,
# and the ratio to atp.  Target: atp at least 2x faster than open-atp's
# form (medians).
#
# The daemon is a private dockerd started here like the tests' (vfs
# storage, no network), stopped at the end; the image is busybox-static
# imported as atp-bench:1.  Exit status: 0 when the target is met, 1 when
# it is missed, 2 when the benchmark could not run.
set -euo pipefail
export LC_ALL=C

N=${BENCH_N:-1000}
PY=${ATP_PYTHON:-/usr/bin/python3}

die() { echo "python.sh: $*" >&2; exit 2; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
srcdir=$(cd "$here/.." && pwd)
build=${1:-}
if [ -z "$build" ]; then
    for d in "$srcdir" "$srcdir/_build" "$srcdir/_check" "$srcdir/_b"; do
        [ -f "$d/core/.libs/libatp.so" ] && { build=$d; break; }
    done
fi
if [ -n "$build" ]; then
    build=$(cd "$build" && pwd)
    [ -f "$build/core/.libs/libatp.so" ] || die "no libatp in $build/core/.libs"
    export ATP_LIBRARY=$build/core/.libs/libatp.so
    export ATP_PLUGIN_PATH=$build/plugins/.libs
    export ATP_TRANSFER_MODULE=$build/core/.libs/atp-transfer.so
fi
export PYTHONPATH=$srcdir/python${PYTHONPATH:+:$PYTHONPATH}
"$PY" -c 'import atp' || die "the package does not import (see above)"
command -v docker >/dev/null || die "no docker CLI (apt-get install docker.io)"

tmp=$(mktemp -d /tmp/atp-bpy.XXXXXX) || die "cannot create a directory"
cleanup() {
    set +e
    [ -n "${DOCKERD_PID:-}" ] && dockerd_stop
    grep -o " $tmp/[^ ]*" /proc/mounts 2>/dev/null | sort -r |
        while read -r m; do umount -l "$m" 2>/dev/null; done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=../tests/docker/dockerd.sh
. "$srcdir/tests/docker/dockerd.sh"
dockerd_start "$tmp/d" || die "dockerd does not start"
IMAGE=atp-bench:1
dockerd_image "$IMAGE" || die "importing the image failed"
export DOCKER_HOST=unix://$DOCKER_SOCK

cat >"$tmp/atp.ini" <<INI
[atp]
backend = docker
[backend.docker]
image = $IMAGE
socket = unix://$DOCKER_SOCK
network = none
INI
export ATP_CONFIG=$tmp/atp.ini
mkdir -p "$tmp/wd"

"$PY" - "$N" "$IMAGE" "$tmp/wd" <<'PYEOF'
import statistics, subprocess, sys, time
import atp

n, image, wd = int(sys.argv[1]), sys.argv[2], sys.argv[3]
block = 50
ctr = subprocess.run(["docker", "run", "-d", "--network", "none", image,
                      "sleep", "3600"], capture_output=True, text=True,
                     check=True).stdout.strip()
wrapped = "timeout -k 30 600 sh -c 'cd /tmp && true'"
try:
    with atp.open(backend="docker") as be, be.session(wd) as s:
        def via_atp():
            r = s.exec("true").wait()
            assert r.ok, r

        def docker_exec():
            p = subprocess.run(["docker", "exec", ctr, "sh", "-c", wrapped],
                               capture_output=True, text=True)
            assert p.returncode == 0, p.stderr

        def docker_exec_bare():
            p = subprocess.run(["docker", "exec", ctr, "true"],
                               capture_output=True, text=True)
            assert p.returncode == 0, p.stderr

        contenders = [("atp (python, one session)", via_atp),
                      ("docker exec, open-atp's form", docker_exec),
                      ("docker exec CTR true", docker_exec_bare)]
        for _, fn in contenders:            # warm up
            for _ in range(5):
                fn()
        times = {name: [] for name, _ in contenders}
        done = 0
        rnd = 0
        while done < n:
            k = min(block, n - done)
            order = contenders[rnd % 3:] + contenders[:rnd % 3]
            for name, fn in order:
                for _ in range(k):
                    t0 = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - t0)
            done += k
            rnd += 1
            print(f"  {done}/{n}: " + ", ".join(
                f"{name.split(' ')[0]}{'' if i == 0 else i} "
                f"{statistics.median(times[name]) * 1000:.1f} ms"
                for i, (name, _) in enumerate(contenders)),
                file=sys.stderr, flush=True)
finally:
    subprocess.run(["docker", "rm", "-f", ctr], capture_output=True)

base = statistics.median(times["atp (python, one session)"])
print(f"{n} execs of `true` in one container, blocks of {block} "
      "interleaved")
print(f"{'contender':32} {'total s':>8} {'median ms':>10} {'p90 ms':>8} "
      f"{'x atp':>6}")
for name, ts in times.items():
    ts_sorted = sorted(ts)
    med = statistics.median(ts)
    p90 = ts_sorted[int(len(ts) * 0.9) - 1]
    print(f"{name:32} {sum(ts):8.2f} {med * 1000:10.2f} {p90 * 1000:8.2f} "
          f"{med / base:6.2f}")
ratio = statistics.median(times["docker exec, open-atp's form"]) / base
ok = ratio >= 2.0
print(f"target: atp >= 2x faster than open-atp's docker exec: "
      f"{ratio:.2f}x {'met' if ok else 'MISSED'}")
sys.exit(0 if ok else 1)
PYEOF
