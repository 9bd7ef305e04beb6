# tests/docker/dockerd.sh - start a private dockerd for the tests, and make
# the busybox test image (no registry is reachable).  Source it, then:
#
#   dockerd_start DIR     starts dockerd with everything under DIR, waits
#                         until it answers, exports DOCKER_SOCK; returns
#                         non-zero (with the reason on stderr) when it can't;
#                         with DOCKERD_TCP=HOST:PORT set it listens there too;
#                         it waits DOCKERD_START_S seconds (30) for an answer
#   dockerd_image NAME    imports a busybox rootfs as image NAME
#   dockerd_stop          stops it (and its containerd)
#   containerd_start DIR  starts a containerd of its own under DIR, waits
#                         until it answers, and exports DOCKERD_CONTAINERD:
#                         a dockerd started while it is set uses that
#                         containerd instead of starting one, so that a
#                         SIGKILL of dockerd leaves containerd and the
#                         containers' shims running (as a packaged docker,
#                         with containerd a service apart, does)
#   containerd_stop DIR   stops it
#
# The daemon runs as root with vfs storage, no bridge and no iptables, as
# verified on this kind of machine.

# await_answer NAME PID LOG SECONDS SOCKET PROBE...: run PROBE every
# 0.1 s until it succeeds (0).  1: the daemon (PID) exited; 2: SECONDS
# passed; either way the end of its LOG is shown.
await_answer() {
    aa_name=$1 aa_pid=$2 aa_log=$3 aa_s=$4 aa_sock=$5
    shift 5
    aa_i=0
    while [ $aa_i -lt $((aa_s * 10)) ]; do
        "$@" >/dev/null 2>&1 && return 0
        if ! kill -0 "$aa_pid" 2>/dev/null; then
            echo "$aa_name exited at start; its log:" >&2
            tail -n 20 "$aa_log" >&2
            return 1
        fi
        sleep 0.1
        aa_i=$((aa_i + 1))
    done
    echo "$aa_name did not answer on $aa_sock within $aa_s s; its log:" >&2
    tail -n 20 "$aa_log" >&2
    return 2
}

dockerd_start() {
    DOCKERD_DIR=$1
    mkdir -p "$DOCKERD_DIR" || return 1
    if ! command -v dockerd >/dev/null 2>&1; then
        echo "dockerd is not installed (apt-get install docker.io)" >&2
        return 1
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "dockerd needs root here; the tests run as uid $(id -u)" >&2
        return 1
    fi
    DOCKER_SOCK=$DOCKERD_DIR/docker.sock
    export DOCKER_SOCK
    # Keep the paths short: unix socket paths are limited to 108 bytes.
    dockerd --host "unix://$DOCKER_SOCK" \
        ${DOCKERD_TCP:+--host "tcp://$DOCKERD_TCP"} \
        ${DOCKERD_CONTAINERD:+--containerd "$DOCKERD_CONTAINERD"} \
        --data-root "$DOCKERD_DIR/root" \
        --exec-root "$DOCKERD_DIR/exec" --pidfile "$DOCKERD_DIR/docker.pid" \
        --iptables=false --ip6tables=false --bridge=none \
        --storage-driver=vfs >"$DOCKERD_DIR/dockerd.log" 2>&1 8>&- &
    DOCKERD_PID=$!
    await_answer dockerd "$DOCKERD_PID" "$DOCKERD_DIR/dockerd.log" \
        "${DOCKERD_START_S:-30}" "$DOCKER_SOCK" \
        curl -sf --unix-socket "$DOCKER_SOCK" http://localhost/_ping
    case $? in
    0) return 0 ;;
    2) dockerd_stop ;;
    esac
    return 1
}

dockerd_image() {
    name=$1
    rootfs=$DOCKERD_DIR/rootfs
    rm -rf "$rootfs"
    mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/workspace"
    chmod 1777 "$rootfs/tmp"
    bb=$(command -v busybox) || { echo "busybox is not installed" >&2; return 1; }
    cp "$bb" "$rootfs/bin/busybox"
    for app in $("$rootfs/bin/busybox" --list); do
        [ -e "$rootfs/bin/$app" ] || ln -s busybox "$rootfs/bin/$app"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' \
        >"$rootfs/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
    tar -C "$rootfs" -cf "$DOCKERD_DIR/rootfs.tar" . || return 1
    repo=${name%%:*}
    tag=${name#*:}
    [ "$tag" = "$name" ] && tag=latest
    curl -sf --unix-socket "$DOCKER_SOCK" -X POST \
        -H 'Content-Type: application/x-tar' \
        --data-binary "@$DOCKERD_DIR/rootfs.tar" \
        "http://localhost/images/create?fromSrc=-&repo=$repo&tag=$tag&changes=ENV%20PATH%3D%2Fbin" \
        >/dev/null || { echo "importing the test image failed" >&2; return 1; }
}

dockerd_stop() {
    if [ -n "${DOCKERD_DIR:-}" ] && [ -f "$DOCKERD_DIR/docker.pid" ]; then
        pid=$(cat "$DOCKERD_DIR/docker.pid")
        kill "$pid" 2>/dev/null
        i=0
        while kill -0 "$pid" 2>/dev/null && [ $i -lt 150 ]; do
            sleep 0.1
            i=$((i + 1))
        done
        kill -9 "$pid" 2>/dev/null
    fi
}

containerd_start() {
    cd_dir=$1
    mkdir -p "$cd_dir" || return 1
    if ! command -v containerd >/dev/null 2>&1; then
        echo "containerd is not installed (apt-get install containerd)" >&2
        return 1
    fi
    printf '%s\n' 'version = 2' "root = \"$cd_dir/root\"" \
        "state = \"$cd_dir/state\"" \
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]' \
        '[grpc]' "  address = \"$cd_dir/c.sock\"" \
        '[ttrpc]' "  address = \"$cd_dir/c.sock.ttrpc\"" \
        '[plugins."io.containerd.internal.v1.opt"]' \
        "  path = \"$cd_dir/opt\"" >"$cd_dir/config.toml" || return 1
    containerd --config "$cd_dir/config.toml" >"$cd_dir/containerd.log" \
        2>&1 8>&- &
    echo $! >"$cd_dir/containerd.pid"
    await_answer containerd "$(cat "$cd_dir/containerd.pid")" \
        "$cd_dir/containerd.log" "${CONTAINERD_START_S:-60}" "$cd_dir/c.sock" \
        ctr --address "$cd_dir/c.sock" version
    case $? in
    0)
        DOCKERD_CONTAINERD=$cd_dir/c.sock
        export DOCKERD_CONTAINERD
        return 0
        ;;
    2) containerd_stop "$cd_dir" ;;
    esac
    return 1
}

containerd_stop() {
    [ -f "$1/containerd.pid" ] || return 0
    pid=$(cat "$1/containerd.pid")
    kill "$pid" 2>/dev/null
    i=0
    while kill -0 "$pid" 2>/dev/null && [ $i -lt 150 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    kill -9 "$pid" 2>/dev/null
    rm -f "$1/containerd.pid"
}
