# tests/slurm/cluster.sh - a private single-node Slurm cluster for the tests
# and the benchmark (Debian 12: Slurm 22.05): munged, slurmctld, slurmd and
# two slurmrestd, everything under one scratch directory, nothing read or
# written in /etc, stopped by the pids in their pid files.  Source it, then:
#
#   slurm_up DIR     start the cluster under DIR (keep DIR short: unix
#                    socket paths are limited to 108 bytes); waits until the
#                    node is idle and both REST servers answer; exports
#                    SLURM_CONF, SLURM_REST_UNIX (root, rest_auth/local),
#                    SLURM_REST_URL (loopback TCP, rest_auth/jwt) and
#                    SLURM_JWT_KEY; returns non-zero with the reason on
#                    stderr when it cannot
#   slurm_down       cancel every job, wait for them to end, stop the
#                    daemons, remove what proctrack/cgroup left
#   slurm_stop_slurmd / slurm_start_slurmd
#                    the node's daemon alone (node failure tests)
#
# Only one such cluster runs at a time on a machine (they would share the
# node's cgroups): slurm_up takes a lock that the process holds until it
# exits.  Recipe: shared/reference/cluster-engines.md, section 4.

SLURM_LOCK=${ATP_SLURM_LOCK:-/tmp/atp-slurm-cluster.lock}

# A free TCP port on the loopback, from 20000 up, starting at an offset
# of the pid so that concurrent programs try different ones first; below
# 32768, where the kernel's ephemeral ports (32768-60999) start, so that
# no outgoing connection takes it between this look and the bind.
slurm_free_port() {
    sfp_p=$((20000 + ($$ * 7 + ${1:-0}) % 12500))
    sfp_i=0
    while [ $sfp_i -lt 200 ]; do
        if ! ss -Hltn "sport = :$sfp_p" 2>/dev/null | grep -q .; then
            echo "$sfp_p"
            return 0
        fi
        sfp_p=$((sfp_p + 1))
        sfp_i=$((sfp_i + 1))
    done
    return 1
}

slurm_alive() { # a zombie counts as gone (kill -0 would say alive)
    [ -d "/proc/$1" ] && ! grep -q ') Z ' "/proc/$1/stat" 2>/dev/null
}

# slurm_stop_pid NAME: TERM the pid of $SLURM_DIR/run/NAME.pid, then KILL.
slurm_stop_pid() {
    ssp_f=$SLURM_DIR/run/$1.pid
    [ -f "$ssp_f" ] || return 0
    ssp_pid=$(cat "$ssp_f")
    [ -n "$ssp_pid" ] || return 0
    slurm_alive "$ssp_pid" || return 0
    kill "$ssp_pid" 2>/dev/null
    ssp_i=0
    while [ $ssp_i -lt 100 ]; do
        slurm_alive "$ssp_pid" || return 0
        sleep 0.1
        ssp_i=$((ssp_i + 1))
    done
    kill -KILL "$ssp_pid" 2>/dev/null
}

slurm_missing() {
    for sm_cmd in munged mungekey slurmctld slurmd slurmrestd sbatch srun \
        squeue scancel scontrol sinfo; do
        command -v "$sm_cmd" >/dev/null 2>&1 || {
            echo "$sm_cmd is not installed (build-aux/install-deps installs" \
                "slurm-wlm slurmrestd munge slurm-wlm-jwt-plugin)"
            return 0
        }
    done
    [ -e /usr/lib/x86_64-linux-gnu/slurm-wlm/auth_jwt.so ] ||
        [ -n "$(find /usr/lib -name auth_jwt.so 2>/dev/null | head -n 1)" ] || {
        echo "auth_jwt.so is missing (apt-get install slurm-wlm-jwt-plugin)"
        return 0
    }
    return 1
}

slurm_up() {
    SLURM_DIR=$1
    if [ "$(id -u)" -ne 0 ]; then
        echo "the private cluster needs root (it runs slurmd); uid $(id -u)" >&2
        return 1
    fi
    if sm_why=$(slurm_missing); then
        echo "$sm_why" >&2
        return 1
    fi
    # Held by this shell (fd 9) until it exits; never by the daemons.
    exec 9>"$SLURM_LOCK"
    if ! flock -w 900 9; then
        echo "another private cluster held $SLURM_LOCK for 15 minutes" >&2
        return 1
    fi
    mkdir -p "$SLURM_DIR"/munge "$SLURM_DIR"/etc "$SLURM_DIR"/ctld \
        "$SLURM_DIR"/spool "$SLURM_DIR"/log "$SLURM_DIR"/run \
        "$SLURM_DIR"/rest "$SLURM_DIR"/rest-jwt || return 1
    chmod 755 "$SLURM_DIR" "$SLURM_DIR/munge" # munged: o+x on its socket dir
    chown daemon:daemon "$SLURM_DIR/rest-jwt"
    mungekey --create --keyfile="$SLURM_DIR/munge/munge.key" 2>&1 >&2 ||
        return 1
    head -c 32 /dev/urandom >"$SLURM_DIR/etc/jwt.key"
    chmod 600 "$SLURM_DIR/etc/jwt.key"
    munged --socket="$SLURM_DIR/munge/munge.sock" \
        --key-file="$SLURM_DIR/munge/munge.key" \
        --pid-file="$SLURM_DIR/run/munged.pid" \
        --log-file="$SLURM_DIR/log/munged.log" \
        --seed-file="$SLURM_DIR/munge/munged.seed" 9>&- >&2 || return 1

    su_ctld=$(slurm_free_port 1) && su_slurmd=$(slurm_free_port 3) &&
        su_rest=$(slurm_free_port 5) || {
        echo "no free port on the loopback" >&2
        return 1
    }
    su_host=$(hostname -s)
    if [ -d /sys/fs/cgroup/freezer ]; then
        # cgroup v1: proctrack/cgroup kills what left the group too.
        su_proctrack=proctrack/cgroup
        printf '%s\n' CgroupPlugin=cgroup/v1 CgroupMountpoint=/sys/fs/cgroup \
            ConstrainCores=no ConstrainRAMSpace=no ConstrainDevices=no \
            >"$SLURM_DIR/etc/cgroup.conf"
    else
        su_proctrack=proctrack/linuxproc
    fi
    SLURM_PROCTRACK=$su_proctrack
    cat >"$SLURM_DIR/etc/slurm.conf" <<EOC
ClusterName=atptest
SlurmctldHost=$su_host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$su_ctld
SlurmdPort=$su_slurmd
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SLURM_DIR/munge/munge.sock
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key=$SLURM_DIR/etc/jwt.key
StateSaveLocation=$SLURM_DIR/ctld
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=$SLURM_DIR/run/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/run/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_DIR/log/slurmd.log
ProctrackType=$su_proctrack
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
JobRequeue=0
KillWait=5
MinJobAge=300
SlurmdTimeout=${ATP_SLURMD_TIMEOUT:-300}
NodeName=$su_host NodeAddr=127.0.0.1 CPUs=16 Sockets=1 CoresPerSocket=16 ThreadsPerCore=1 RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes=$su_host Default=YES MaxTime=INFINITE State=UP
EOC
    SLURM_CONF=$SLURM_DIR/etc/slurm.conf
    export SLURM_CONF SLURM_DIR SLURM_PROCTRACK
    # Neutral working directories: a job without one would write there.
    (cd "$SLURM_DIR/run" && slurmctld -f "$SLURM_CONF" 9>&-) >&2 || return 1
    slurm_start_slurmd || return 1
    su_i=0
    until [ "$(sinfo -h -o %T 2>/dev/null)" = idle ]; do
        su_i=$((su_i + 1))
        if [ $su_i -gt 300 ]; then
            echo "the node never became idle:" >&2
            tail -n 5 "$SLURM_DIR"/log/*.log >&2
            return 1
        fi
        sleep 0.1
    done
    # REST 1: root over a unix socket, rest_auth/local (a test-only
    # posture: production slurmrestd runs as a user of its own).
    # (The pid of slurmrestd itself: `&` on the command alone.)
    (cd "$SLURM_DIR/run" || exit 1
        SLURMRESTD_SECURITY=disable_user_check \
            setsid slurmrestd -f "$SLURM_CONF" -a rest_auth/local \
            -s openapi/v0.0.38 "unix:$SLURM_DIR/rest/slurmrestd.sock" \
            >"$SLURM_DIR/log/slurmrestd.log" 2>&1 </dev/null 9>&- &
        echo $! >"$SLURM_DIR/run/slurmrestd.pid")
    # REST 2: unprivileged, loopback TCP, rest_auth/jwt.
    (cd "$SLURM_DIR/run" || exit 1
        SLURM_JWT=daemon setsid slurmrestd -f "$SLURM_CONF" -u daemon \
            -a rest_auth/jwt -s openapi/v0.0.38 "127.0.0.1:$su_rest" \
            >"$SLURM_DIR/log/slurmrestd-jwt.log" 2>&1 </dev/null 9>&- &
        echo $! >"$SLURM_DIR/run/slurmrestd-jwt.pid")
    SLURM_REST_UNIX=$SLURM_DIR/rest/slurmrestd.sock
    SLURM_REST_URL=http://127.0.0.1:$su_rest
    SLURM_JWT_KEY=$SLURM_DIR/etc/jwt.key
    export SLURM_REST_UNIX SLURM_REST_URL SLURM_JWT_KEY
    su_i=0
    until curl -sf --unix-socket "$SLURM_REST_UNIX" -o /dev/null \
        http://localhost/slurm/v0.0.38/ping 2>/dev/null &&
        [ "$(curl -s -o /dev/null -w '%{http_code}' \
            "$SLURM_REST_URL/slurm/v0.0.38/ping")" = 401 ]; do
        su_i=$((su_i + 1))
        if [ $su_i -gt 300 ]; then
            echo "slurmrestd does not answer:" >&2
            tail -n 5 "$SLURM_DIR"/log/slurmrestd*.log >&2
            return 1
        fi
        sleep 0.1
    done
    return 0
}

slurm_start_slurmd() {
    (cd "$SLURM_DIR/run" && slurmd -f "$SLURM_CONF" 9>&-) >&2
}

slurm_stop_slurmd() {
    slurm_stop_pid slurmd
}

slurm_down() {
    [ -n "${SLURM_DIR:-}" ] && [ -d "$SLURM_DIR" ] || return 0
    # Jobs first: stopping slurmd does not stop slurmstepd and the jobs.
    if [ -f "$SLURM_DIR/run/slurmctld.pid" ] &&
        slurm_alive "$(cat "$SLURM_DIR/run/slurmctld.pid")"; then
        if [ -f "$SLURM_DIR/run/slurmd.pid" ] &&
            ! slurm_alive "$(cat "$SLURM_DIR/run/slurmd.pid")"; then
            slurm_start_slurmd 2>/dev/null
        fi
        scancel --full --partition=debug 2>/dev/null
        sd_i=0
        while [ $sd_i -lt 150 ] &&
            [ -n "$(squeue -h -t PD,R,CG,S 2>/dev/null)" ]; do
            sleep 0.2
            sd_i=$((sd_i + 1))
        done
    fi
    for sd_d in slurmrestd slurmrestd-jwt slurmd slurmctld munged; do
        slurm_stop_pid $sd_d
    done
    # Anything of this cluster that outlived its pid file (a daemon that
    # forked anew), found by the cluster's directory on its command line.
    for sd_f in /proc/[0-9]*/cmdline; do
        if (tr '\000' ' ' <"$sd_f") 2>/dev/null | grep -q "$SLURM_DIR/"
        then
            sd_p=${sd_f#/proc/}
            sd_p=${sd_p%/cmdline}
            [ "$sd_p" != $$ ] && kill -KILL "$sd_p" 2>/dev/null
        fi
    done
    for sd_c in /sys/fs/cgroup/*/slurm_"$(hostname -s)"; do
        [ -d "$sd_c" ] && find "$sd_c" -depth -type d -exec rmdir {} \; \
            2>/dev/null
    done
    rm -rf "$SLURM_DIR"
    SLURM_DIR=
}
