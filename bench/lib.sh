# bench/lib.sh - what the bench scripts share: finding the atp-run to
# measure, and the docker daemon to measure it on.  Sourced by bash scripts that define die() (message, exit 2)
# and srcdir (the source tree).
# shellcheck shell=bash
# shellcheck disable=SC2034,SC2154 # sets ATP, builddir, ATP_FROM; reads srcdir

# bench_is_wrapper FILE: is FILE libtool's wrapper script of an
# uninstalled program (a shell script, not the program)?
bench_is_wrapper() {
    [ -f "$1" ] && head -c 512 "$1" 2>/dev/null | grep -q libtool
}

# bench_use_atp PATH: PATH is an atp-run, or a directory holding one.  Sets
# ATP to the binary to time (a build tree's real one, never libtool's
# wrapper, which costs a bash start per run), builddir (empty when
# installed) and ATP_FROM (for the report); for a build tree, exports
# LD_LIBRARY_PATH, ATP_PLUGIN_PATH and ATP_TRANSFER_MODULE into it.
bench_use_atp() {
    local p=$1 dir
    [ -d "$p" ] && p=$p/atp-run
    [ -e "$p" ] || die "no atp-run at $p"
    dir=$(cd "$(dirname "$p")" && pwd)
    builddir=
    ATP=$dir/$(basename "$p")
    if bench_is_wrapper "$p" && [ -x "$dir/.libs/atp-run" ]; then
        builddir=$dir
        ATP=$dir/.libs/atp-run
    elif [ "$(basename "$dir")" = .libs ] && [ -d "$dir/../plugins/.libs" ]; then
        builddir=$(cd "$dir/.." && pwd)
    elif [ -d "$dir/plugins/.libs" ]; then
        builddir=$dir # linked without libtool's wrapper
    fi
    if bench_is_wrapper "$ATP"; then
        echo "warning: no real binary beside $ATP: timing libtool's wrapper script" >&2
    fi
    ATP_FROM=installed
    if [ -n "$builddir" ]; then
        ATP_FROM="build tree $builddir"
        export LD_LIBRARY_PATH="$builddir/core/.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        export ATP_PLUGIN_PATH="$builddir/plugins/.libs${ATP_PLUGIN_PATH:+:$ATP_PLUGIN_PATH}"
        if [ -f "$builddir/core/.libs/atp-transfer.so" ]; then
            export ATP_TRANSFER_MODULE="$builddir/core/.libs/atp-transfer.so"
        fi
    fi
}

# bench_find_atp PLUGIN [PATH]: the atp-run to measure: PATH when given,
# else $ATP_RUN, else the first of SRCDIR, SRCDIR/_build and SRCDIR/_check
# that has a built PLUGIN (atp-local.so, ...), else atp-run on $PATH.
# Then as bench_use_atp.
bench_find_atp() {
    local plugin=$1 d
    if [ -n "${2:-}" ]; then
        bench_use_atp "$2"
        return
    fi
    if [ -n "${ATP_RUN:-}" ]; then
        bench_use_atp "$ATP_RUN"
        return
    fi
    for d in "$srcdir" "$srcdir/_build" "$srcdir/_check"; do
        if [ -x "$d/atp-run" ] && [ -f "$d/plugins/.libs/$plugin" ]; then
            bench_use_atp "$d/atp-run"
            return
        fi
    done
    d=$(command -v atp-run || true)
    [ -n "$d" ] || die "no atp-run with $plugin found: build atp, or give its path"
    bench_use_atp "$d"
}

# ---- a docker daemon to measure against -----------------------------------

# bench_docker_daemon TMP: the daemon of a docker benchmark.
# $BENCH_DOCKER_HOST (unix:///PATH) and $BENCH_IMAGE when set; else a
# private dockerd started under TMP/d like the tests' (tests/docker/
# dockerd.sh) with $BENCH_STORAGE (default overlay2, falling back to vfs)
# and busybox imported as atp-bench:1.  Sets DOCKER_SOCK, IMAGE, storage
# and own_daemon, and exports DOCKER_HOST.  The caller defines die() and
# note() and calls bench_docker_cleanup TMP on exit.
bench_docker_daemon() {
    local tmp=$1
    # shellcheck source=SCRIPTDIR/../tests/docker/dockerd.sh
    . "$srcdir/tests/docker/dockerd.sh"
    own_daemon=
    if [ -n "${BENCH_DOCKER_HOST:-}" ]; then
        DOCKER_SOCK=${BENCH_DOCKER_HOST#unix://}
        IMAGE=${BENCH_IMAGE:?set BENCH_IMAGE to an image of that daemon}
        storage="(given daemon)"
    else
        storage=${BENCH_STORAGE:-overlay2}
        if ! bench_dockerd_start "$tmp" "$storage"; then
            note "dockerd with $storage storage did not start; trying vfs"
            dockerd_stop; own_daemon=; rm -rf "$tmp/d"
            storage=vfs
            bench_dockerd_start "$tmp" vfs ||
                die "dockerd does not start: $(tail -n 3 "$tmp/d/dockerd.log")"
        fi
        IMAGE=atp-bench:1
        dockerd_image "$IMAGE" || die "importing the image failed"
    fi
    export DOCKER_HOST=unix://$DOCKER_SOCK
}

# bench_dockerd_start TMP DRIVER: a private dockerd under TMP/d.
bench_dockerd_start() {
    local i
    DOCKERD_DIR=$1/d
    mkdir -p "$DOCKERD_DIR"
    DOCKER_SOCK=$DOCKERD_DIR/docker.sock
    dockerd --host "unix://$DOCKER_SOCK" --data-root "$DOCKERD_DIR/root" \
        --exec-root "$DOCKERD_DIR/exec" --pidfile "$DOCKERD_DIR/docker.pid" \
        --iptables=false --ip6tables=false --bridge=none \
        --storage-driver="$2" >"$DOCKERD_DIR/dockerd.log" 2>&1 &
    own_daemon=1
    for i in $(seq 300); do
        curl -sf --unix-socket "$DOCKER_SOCK" http://localhost/_ping \
            >/dev/null 2>&1 && return 0
        kill -0 $! 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# bench_docker_cleanup TMP: stop the private daemon, and what it left
# mounted under TMP (dockerd keeps a bind mount of the host's network
# namespace under its exec root), before TMP goes.
bench_docker_cleanup() {
    [ -n "${own_daemon:-}" ] && dockerd_stop
    grep -o " $1/[^ ]*" /proc/mounts 2>/dev/null | sort -r |
        while read -r m; do umount -l "$m" 2>/dev/null; done
}
