# tests/docker/proxy.sh - tests/docker/dkproxy.py in front of the test's
# daemon.  Source it after lib-docker.sh, then:
#
#   proxy_start           the proxy on $PROXY_SOCK, passing everything
#   rules JSON            its rules from now on (see dkproxy.py)
#   proxy_saw ERE         a request matching ERE was seen
#
# Its log is $PLOG; the daemon it passes to is $DOCKER_SOCK at the start.

PROXY_SOCK=$dk_dir/p.sock
RULES=$T/rules.json
PLOG=$T/proxy.log

proxy_start() {
    printf '[]\n' >"$RULES"
    "$PYTHON" "$ATP_TOP_SRCDIR/tests/docker/dkproxy.py" \
        --listen "$PROXY_SOCK" --upstream "$DOCKER_SOCK" --rules "$RULES" \
        --log "$PLOG" 2>"$T/proxy.err" &
    track_pid $!
    if ! wait_until 60 test -S "$PROXY_SOCK"; then
        echo "Bail out! the test proxy did not start"
        sed 's/^/# /' "$T/proxy.err"
        exit 99
    fi
}

# rules JSON: written whole, then moved, so the proxy never reads half.
rules() {
    printf '%s\n' "$1" >"$RULES.new" && mv "$RULES.new" "$RULES"
}

proxy_saw() {
    grep -Eq -- "$1" "$PLOG"
}
