# tests/docker/lib-docker.sh - what every docker test needs: tests/lib.sh,
# a private daemon started once for the test program, the busybox test
# image, a configuration pointing at both, and helpers that ask the daemon
# directly (curl on its socket) what a user would see with `docker ps`.
#
#   . "${ATP_TOP_SRCDIR:?}/tests/docker/lib-docker.sh"
#
# ATP_DK_ENGINE=podman runs the same tests against `podman system service`
# (docker-api.md section 11.2) when it can start; without podman they are
# skipped, saying why.  dockerd that cannot start is a failure (Bail out!),
# never a skip: the docker tests are part of make check.

. "${ATP_TOP_SRCDIR:?}/tests/lib.sh"
. "$ATP_TOP_SRCDIR/tests/docker/dockerd.sh"

# Docker is slower than a local process, more so on a loaded machine.
GUARD_S=${ATP_TEST_GUARD_S:-90}
DK_IMAGE=atp-bb:1
DK_ENGINE=${ATP_DK_ENGINE:-docker}
if [ "$DK_ENGINE" = podman ]; then
    DK_IMAGE=docker.io/library/atp-bb:latest # podman's name for an import
fi

# Short paths: unix socket paths are limited to 108 bytes.
dk_dir=$(mktemp -d /tmp/atp-dk.XXXXXX) || {
    echo "Bail out! cannot create a directory for the daemon"
    exit 99
}

dk_cleanup() {
    if [ "$DK_ENGINE" = podman ]; then
        podman_stop
    else
        dockerd_stop
    fi
    # What the daemon left mounted under its directory (dockerd keeps a
    # bind mount of the host's network namespace in exec/netns/default)
    # must go before the directory does.
    grep -o " $dk_dir/[^ ]*" /proc/mounts 2>/dev/null | sort -r |
        while read -r m; do umount -l "$m" 2>/dev/null; done
    rm -rf "$dk_dir" 2>/dev/null
}
trap 'dk_cleanup; tap_cleanup' EXIT

# ---- podman (docker-api.md 11.2) -----------------------------------------

podman_start() {
    if ! command -v podman >/dev/null 2>&1; then
        echo "podman is not installed (apt-get install podman catatonit)"
        return 1
    fi
    mkdir -p "$dk_dir/pm"
    cat >"$dk_dir/pm/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
EOF
    DOCKER_SOCK=$dk_dir/pm/podman.sock
    export DOCKER_SOCK
    CONTAINERS_CONF=$dk_dir/pm/containers.conf podman --root "$dk_dir/pm/root" \
        --runroot "$dk_dir/pm/run" --storage-driver vfs system service \
        --time=0 "unix://$DOCKER_SOCK" >"$dk_dir/pm/podman.log" 2>&1 8>&- &
    PODMAN_PID=$!
    i=0
    while [ $i -lt 300 ]; do
        if curl -sf --unix-socket "$DOCKER_SOCK" http://localhost/_ping \
            >/dev/null 2>&1; then
            DOCKERD_DIR=$dk_dir/pm
            return 0
        fi
        if ! kill -0 "$PODMAN_PID" 2>/dev/null; then
            echo "podman system service exited: $(tail -n 3 \
                "$dk_dir/pm/podman.log" | tr '\n' ' ')"
            return 1
        fi
        sleep 0.1
        i=$((i + 1))
    done
    echo "podman system service did not answer within 30 s"
    return 1
}

podman_stop() {
    [ -n "${PODMAN_PID:-}" ] || return 0
    kill "$PODMAN_PID" 2>/dev/null
    wait_until 10 pid_gone "$PODMAN_PID" || kill -KILL "$PODMAN_PID"
    # Podman 4.3's exec monitors (conmon) outlive their containers here:
    # stop those of this daemon, found by the paths on their command line.
    for f in /proc/[0-9]*/cmdline; do
        if tr '\0' ' ' <"$f" 2>/dev/null | grep -q "^/usr/bin/conmon .*$dk_dir/"
        then
            f=${f#/proc/}
            kill -KILL "${f%/cmdline}" 2>/dev/null
        fi
    done
}

# ---- a test that loads the machine on purpose -----------------------------

# The docker tests' timing checks (a TERM within the grace, a give-up
# within the deadlines) do not share the machine with a test that loads
# it on purpose (DK_LOAD=1 set before this file is sourced:
# concurrency.test): such a test takes this lock exclusively, every other
# docker test takes it shared, so neither starts while the other runs.
# Held by this shell (fd 8) until it exits; never by the daemons.
DK_LOAD_LOCK=${ATP_TOP_BUILDDIR:-/tmp}/tests/docker-load.lock
mkdir -p "${DK_LOAD_LOCK%/*}" 2>/dev/null
exec 8>"$DK_LOAD_LOCK"
if [ -n "${DK_LOAD:-}" ]; then dk_lock_mode=-x; else dk_lock_mode=-s; fi
if ! flock -w 3600 "$dk_lock_mode" 8; then
    echo "Bail out! $DK_LOAD_LOCK was held for an hour"
    exit 99
fi

if [ "$DK_ENGINE" = podman ]; then
    if ! podman_start >"$dk_dir/start.err" 2>&1; then
        echo "1..0 # SKIP podman system service cannot start: $(tr '\n' ' ' \
            <"$dk_dir/start.err")"
        exit 0
    fi
    if ! dockerd_image atp-bb:latest 2>"$dk_dir/start.err"; then
        echo "Bail out! importing the test image into podman failed: $(tr \
            '\n' ' ' <"$dk_dir/start.err")"
        exit 1
    fi
else
    if ! dockerd_start "$dk_dir/d" 2>"$dk_dir/start.err"; then
        echo "Bail out! dockerd cannot start: $(tr '\n' ' ' \
            <"$dk_dir/start.err")"
        exit 1
    fi
    if ! dockerd_image "$DK_IMAGE" 2>"$dk_dir/start.err"; then
        echo "Bail out! importing the test image failed: $(tr '\n' ' ' \
            <"$dk_dir/start.err")"
        exit 1
    fi
fi

# ---- configuration -------------------------------------------------------

# dk_config [LINE...]: a configuration for the test daemon; each LINE is
# added to [backend.docker].  Sets and exports ATP_CONFIG.
dk_config() {
    {
        printf '[atp]\nbackend = docker\nkill_grace_s = 2\n'
        printf '[backend.docker]\nimage = %s\nsocket = unix://%s\n' \
            "$DK_IMAGE" "$DOCKER_SOCK"
        for l in "$@"; do
            printf '%s\n' "$l"
        done
    } >"$T/atp.ini"
    ATP_CONFIG=$T/atp.ini
    export ATP_CONFIG
}

# ---- asking the daemon ---------------------------------------------------

# dk_get PATH: GET from the daemon (unversioned path).
dk_get() {
    curl -s --unix-socket "$DOCKER_SOCK" "http://localhost$1"
}

LABEL_FILTER='%7B%22label%22%3A%5B%22org.atp.run%22%5D%7D'

# Ids of every container atp labelled, in any state.
dk_ids() {
    dk_get "/containers/json?all=1&filters=$LABEL_FILTER" |
        "$PYTHON" -c 'import json,sys
for c in json.load(sys.stdin): print(c["Id"])'
}

dk_count() {
    dk_ids | wc -l | tr -d ' '
}

dk_count_is() {
    [ "$(dk_count)" = "$1" ]
}

# dk_none_left DESC: no atp container is left (polled for a while: a
# removal may still be finishing when atp-run has exited).
dk_none_left() {
    if wait_until 15 dk_count_is 0; then
        pass "$1"
    else
        fail "$1"
        diag "containers left:" "$(dk_get "/containers/json?all=1&filters=$LABEL_FILTER")"
        dk_reset
        return 1
    fi
}

# Remove every atp container, so that one failure does not cascade.
dk_reset() {
    for id in $(dk_ids); do
        curl -s --unix-socket "$DOCKER_SOCK" -X DELETE \
            "http://localhost/containers/$id?force=1" >/dev/null
    done
}

# dk_pyjson FILE EXPR: evaluate a Python expression over the JSON in FILE
# (bound to `j`); prints the result.
dk_pyjson() {
    "$PYTHON" -c 'import json,sys
j = json.load(open(sys.argv[1]))
v = eval(sys.argv[2])
print(v if not isinstance(v, (dict, list)) else json.dumps(v))' "$1" "$2" 2>&1
}

# dk_json_ok FILE EXPR DESC
dk_json_ok() {
    tap_v=$(dk_pyjson "$1" "$2")
    if [ "$tap_v" = True ]; then
        pass "$3"
    else
        fail "$3"
        diag "not true: $2" "got: $tap_v"
        return 1
    fi
}

# The foreground dispositions of a terminal for a background atp-run (see
# tests/cli/signals.test): a background job starts with SIGINT ignored.
if env --default-signal=INT,QUIT true 2>/dev/null; then
    DK_FG="env --default-signal=INT,QUIT"
else
    DK_FG=
fi

# dk_bg TAG ARG...: start atp-run ARG... in the background, its stdin
# from $DK_BG_STDIN (default /dev/null); sets $bgpid.
dk_bg() {
    tap_tag=$1
    shift
    $DK_FG "$ATP_RUN" "$@" <"${DK_BG_STDIN:-/dev/null}" >"$T/$tap_tag.out" \
        2>"$T/$tap_tag.err" &
    bgpid=$!
    track_pid "$bgpid"
}

# A child we have not waited for yet is a zombie, not gone.
dk_gone_or_zombie() {
    tap_state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' \
        "/proc/$1/status" 2>/dev/null)
    [ -z "$tap_state" ] || [ "$tap_state" = Z ]
}

# dk_wait_bg SECONDS: wait for the background atp-run; sets $bgrc
# ("hung" when it did not end in time, and kills it).
dk_wait_bg() {
    if wait_until "$1" dk_gone_or_zombie "$bgpid"; then
        wait "$bgpid"
        bgrc=$?
    else
        kill -KILL "$bgpid" 2>/dev/null
        wait "$bgpid" 2>/dev/null
        bgrc=hung
    fi
}
