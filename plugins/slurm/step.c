/*
 * plugins/slurm/step.c - a session as one allocation, its commands as
 * steps in it.
 *
 * The allocation is a batch job that only sleeps (for the session's TTL,
 * and time_limit bounds it too), submitted like any job and waited for
 * until it runs: the queue wait is part of provisioning, not of a
 * command's budget.  A command is then `srun --jobid=ALLOC --overlap`,
 * run through the core's process runner (host->spawn()): srun forwards
 * stdin, brings stdout and stderr back live and apart, and exits with the
 * command's status (128+N after signal N, which atp reports as the
 * signal).  The core's schedule signals the process group of a small
 * shell around srun (srun_sh): srun would turn a TERM into a SIGKILL of
 * the step, so the shell passes it to the step with scancel; a KILL of
 * srun leaves the step running, so after a kill the step, found by its
 * name (the exec id), is cancelled too.  srun runs with -QQ so that its
 * own "task 0: Exited with exit code N" does not land in the command's
 * stderr.
 */
#define _GNU_SOURCE
#include "config.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sl.h"

/*
 * Around srun, on this host.  srun turns a SIGTERM into a SIGKILL of the
 * step, so srun runs in a session of its own, out of the process group
 * that the core's schedule signals; this shell traps the schedule's TERM
 * and passes it to the step itself with `scancel --signal=TERM JOB.STEP`,
 * and waits for srun (whose status it exits with).  The step writes its
 * id into a file on the shared filesystem as it starts, so that the TERM
 * costs one request; before that, the step is found by its name.  A
 * KILL ends this shell; srun, left behind, is killed by the core's sweep
 * of escaped processes, and the step is cancelled after it.  srun's stdin
 * stays the command's (through fd 3: sh gives a background command
 * /dev/null before its own redirections).  $1 allocation, $2 step name,
 * $3 squeue, $4 scancel, $5 setsid, $6 the step id file, then srun's
 * argv.
 */
static const char srun_sh[] =
    "a=$1 n=$2 q=$3 c=$4 s=$5 f=$6; shift 6; "
    "term() { if [ -s \"$f\" ]; then read -r i <\"$f\" && "
    "\"$c\" --signal=TERM \"$i\" 2>/dev/null; return; fi; "
    "\"$q\" -h -s -j \"$a\" -o '%i %j' 2>/dev/null | "
    "while read -r i j; do [ \"$j\" = \"$n\" ] && "
    "\"$c\" --signal=TERM \"$i\" 2>/dev/null; done; }; "
    "trap term TERM; exec 3<&0; \"$s\" \"$@\" <&3 3<&- & p=$!; "
    "while :; do wait \"$p\"; r=$?; kill -0 \"$p\" 2>/dev/null || break; "
    "done; exit \"$r\"";

/*
 * The step: its id into the file $1, cd to $0 or exit 125, then the
 * command under stdbuf when there.
 */
#define STEP_ID "echo \"$SLURM_JOB_ID.$SLURM_STEP_ID\" >\"$1\" 2>/dev/null; shift; "
static const char step_sh[] =
    STEP_ID "cd -- \"$0\" || { echo \"atp: step $SLURM_STEP_ID cannot enter its "
    "directory on $(hostname)\" >&2; exit 125; }; "
    "command -v stdbuf >/dev/null 2>&1 && exec stdbuf -oL -eL \"$@\"; "
    "exec \"$@\"";
static const char step_sh_plain[] =
    STEP_ID "cd -- \"$0\" || { echo \"atp: step $SLURM_STEP_ID cannot enter its "
    "directory on $(hostname)\" >&2; exit 125; }; exec \"$@\"";

int sl_alloc_open(atp_call *call, struct sl_session *s)
{
    struct sl_backend *be = s->be;
    const char *no_env[] = {NULL};
    const char **env = NULL;
    struct sl_jobspec js;
    struct sl_jobinfo ji;
    struct sl_buf script = {0}, marker = {0}, path = {0};
    int64_t gap = 100, ttl_s = (s->ttl_ms + 999) / 1000;
    int rc;

    if (ttl_s <= 0)
        ttl_s = 3600;
    env = sl_job_env(be->inherit_env, no_env, NULL);
    if (env == NULL ||
        sl_buf_fmt(&script, "#!/bin/sh\n# atp session %s\nexec sleep %lld\n",
                   s->run_id, (long long)ttl_s + 60) ||
        sl_buf_fmt(&marker, "atp:run=%s;exec=alloc;pid=%ld", s->run_id,
                   (long)getpid()) ||
        sl_buf_fmt(&path, "%s/alloc.sh", s->rundir)) {
        rc = sl_host->set_error(call, ATP_E_NOMEM, "out of memory");
        goto out;
    }
    memset(&js, 0, sizeof(js));
    js.name = s->run_id;
    js.comment = marker.s;
    js.script = script.s;
    js.script_path = path.s;
    js.workdir = s->rundir;
    js.out_path = "/dev/null";
    js.err_path = "/dev/null";
    js.env = env;
    js.time_limit_min = be->time_limit_ms > 0
                            ? (long)((be->time_limit_ms + 59999) / 60000)
                            : (long)((ttl_s + 59) / 60);
    rc = sl_submit(s->conn, call, &js, &s->alloc);
    if (rc == ATP_E_BACKEND || rc == ATP_E_CANCELLED || rc == ATP_E_TIMEOUT)
        sl_sweep_marker(s->conn, call, marker.s);
    if (rc)
        goto out;
    snprintf(s->alloc_text, sizeof(s->alloc_text), "%ld", s->alloc);
    sl_host->resource_created(call, "job", s->alloc_text);
    /* Until it runs: in the queue as long as provision_timeout_s allows. */
    for (;;) {
        int64_t left = sl_ms_left(sl_host->deadline_ns(call));

        if ((rc = sl_query(s->conn, call, s->alloc, &ji, 0)) != 0)
            goto out;
        if (ji.gone || sl_state_final(ji.state)) {
            rc = sl_host->set_error(call, ATP_E_PROVISION, "the session's "
                                    "allocation (job %ld) ended before it "
                                    "ran: %s %s", s->alloc,
                                    ji.gone ? "unknown" : ji.state,
                                    ji.reason);
            goto out;
        }
        if (strcmp(ji.state, "RUNNING") == 0 && !ji.completing)
            break;
        if (left == 0) {
            rc = sl_host->set_error(call, ATP_E_TIMEOUT, "the session's "
                                    "allocation (job %ld) is still %s (%s) "
                                    "after provision_timeout_s", s->alloc,
                                    ji.state, ji.reason);
            goto out;
        }
        if (sl_host->cancelled(call)) {
            rc = sl_host->set_error(call, ATP_E_CANCELLED, "cancelled");
            goto out;
        }
        sl_wait(sl_host->cancel_fd(call), left >= 0 && left < gap ? left
                                                                  : gap);
        if (gap < be->poll_ms)
            gap = gap * 2 > be->poll_ms ? be->poll_ms : gap * 2;
    }
    snprintf(s->node, sizeof(s->node), "%s", ji.node);
    sl_host->log(call, ATP_LOG_INFO, "session allocation: job %ld on %s",
                 s->alloc, s->node);
out:
    unlink(path.s ? path.s : "");
    free(env);
    sl_buf_free(&script);
    sl_buf_free(&marker);
    sl_buf_free(&path);
    return rc;
}

int sl_alloc_close(atp_call *call, struct sl_session *s)
{
    struct sl_jobinfo ji;
    int64_t gap = 100;
    int rc;

    if (s->alloc <= 0)
        return 0;
    rc = sl_kill(s->conn, call, s->alloc, SIGKILL, 1);
    if (rc != 0 && rc != ATP_E_NOTFOUND)
        return rc;
    /* Gone from the queue before its record leaves the ledger. */
    for (;;) {
        int64_t left = sl_ms_left(sl_host->deadline_ns(call));

        if ((rc = sl_query(s->conn, call, s->alloc, &ji, 1)) != 0)
            return rc;
        if (sl_job_ended(&ji))
            break;
        if (left == 0)
            return sl_host->set_error(call, ATP_E_TIMEOUT, "the session's "
                                      "allocation (job %ld) is still %s "
                                      "after its cancel", s->alloc,
                                      ji.state);
        sl_wait(-1, left >= 0 && left < gap ? left : gap);
        if (gap < 1000)
            gap *= 2;
    }
    sl_host->resource_removed(call, s->alloc_text);
    s->alloc = 0;
    return 0;
}

/* Cancel what is left of the step named @name (srun died of a KILL). */
static void sweep_step(atp_call *call, struct sl_session *s,
                       const char *name)
{
    char jid[32];
    const char *list[] = {"squeue", "-h", "-s", "-j", jid, "-o", "%i|%j",
                          NULL};
    struct sl_capture cap;
    char *line, *next;
    int code = 0;

    snprintf(jid, sizeof(jid), "%ld", s->alloc);
    if (sl_cli_run(s->conn, call, list, NULL, 1, &cap, &code) != 0)
        return;
    for (line = cap.out; line && *line; line = next) {
        char *bar = strchr(line, '|');

        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if (bar == NULL || strcmp(bar + 1, name) != 0)
            continue;
        *bar = '\0';
        {
            const char *kill9[] = {"scancel", "--signal=KILL", line, NULL};
            struct sl_capture c2;
            int code2 = 0;

            sl_host->log(call, ATP_LOG_DEBUG, "cancelling step %s", line);
            if (sl_cli_run(s->conn, call, kill9, NULL, 1, &c2, &code2) == 0)
                sl_capture_free(&c2);
        }
    }
    sl_capture_free(&cap);
}

/* After a failure of srun: is the allocation still there? */
static int alloc_gone(atp_call *call, struct sl_session *s)
{
    struct sl_jobinfo ji;

    if (sl_query(s->conn, call, s->alloc, &ji, 1) != 0)
        return 0; /* cannot tell: the command's status stands */
    if (!sl_job_ended(&ji) && !ji.completing)
        return 0;
    s->dead = 1;
    return sl_host->set_error(call, ATP_E_SANDBOX_DEAD, "the session's "
                              "allocation (job %ld on %s) ended: %s%s%s",
                              s->alloc, s->node[0] ? s->node : "its node",
                              ji.gone ? "unknown to slurmctld" : ji.state,
                              ji.reason[0] ? " " : "", ji.reason);
}

int sl_step_exec(atp_call *call, struct sl_session *s,
                 const atp_exec_spec *spec, atp_exec_outcome *out)
{
    struct sl_backend *be = s->be;
    const char *exec_id = spec->exec_id ? spec->exec_id : s->run_id;
    const char *extra[2] = {NULL, NULL};
    const char **argv = NULL, **env = NULL;
    char *srun = sl_which("srun"), *squeue = sl_which("squeue");
    char *scancel = sl_which("scancel"), *setsid = sl_which("setsid");
    char jobid[40], name[160], conf[4200], alloc[24];
    struct sl_buf idfile = {0};
    atp_spawn_spec sp;
    size_t n = 0, i;
    int rc;

    if (s->dead)
        return sl_host->set_error(call, ATP_E_SANDBOX_DEAD, "the session's "
                                  "allocation (job %ld) has ended: start a "
                                  "new session", s->alloc);
    for (i = 0; spec->argv[i]; i++)
        ;
    argv = calloc(i + 24, sizeof(*argv));
    if (be->slurm_conf) {
        snprintf(conf, sizeof(conf), "SLURM_CONF=%s", be->slurm_conf);
        extra[0] = conf;
    }
    env = sl_job_env(be->inherit_env, spec->envp, extra);
    if (argv == NULL || env == NULL) {
        rc = sl_host->set_error(call, ATP_E_NOMEM, "out of memory");
        goto out;
    }
    if (srun == NULL || squeue == NULL || scancel == NULL ||
        setsid == NULL) {
        rc = sl_host->set_error(call, ATP_E_BACKEND, "srun, squeue, scancel "
                                "and setsid must be in PATH to run a step: "
                                "install the Slurm client and util-linux, "
                                "or set session = jobs");
        goto out;
    }
    if (sl_buf_fmt(&idfile, "%s/%s.step", s->rundir, exec_id) != 0) {
        rc = sl_host->set_error(call, ATP_E_NOMEM, "out of memory");
        goto out;
    }
    snprintf(alloc, sizeof(alloc), "%ld", s->alloc);
    snprintf(jobid, sizeof(jobid), "--jobid=%ld", s->alloc);
    snprintf(name, sizeof(name), "--job-name=%s", exec_id);
    argv[n++] = "/bin/sh";
    argv[n++] = "-c";
    argv[n++] = srun_sh;
    argv[n++] = "atp-srun"; /* $0 */
    argv[n++] = alloc;
    argv[n++] = exec_id;
    argv[n++] = squeue;
    argv[n++] = scancel;
    argv[n++] = setsid;
    argv[n++] = idfile.s;
    argv[n++] = srun;
    argv[n++] = jobid;
    argv[n++] = "--overlap";
    argv[n++] = "-QQ";
    argv[n++] = "-N1";
    argv[n++] = "-n1";
    argv[n++] = name;
    argv[n++] = "--export=ALL"; /* srun's environment is the command's */
    argv[n++] = "/bin/sh";
    argv[n++] = "-c";
    argv[n++] = be->line_buffered ? step_sh : step_sh_plain;
    argv[n++] = spec->cwd ? spec->cwd : s->workdir;
    argv[n++] = idfile.s;
    for (i = 0; spec->argv[i]; i++)
        argv[n++] = spec->argv[i];
    argv[n] = NULL;
    memset(&sp, 0, sizeof(sp));
    sp.struct_size = sizeof(sp);
    sp.flags = spec->flags & ATP_EXEC_STDIN ? ATP_SPAWN_STDIN : 0;
    sp.argv = argv;
    sp.envp = env;
    sp.cwd = "/";
    rc = sl_host->spawn(call, &sp, out);
    if (rc)
        goto out;
    if (out->signal != 0 || (out->flags & (ATP_OUTCOME_TIMED_OUT |
                                           ATP_OUTCOME_CANCELLED)))
        /* srun died of a KILL, or the command was ended: nothing of the
         * step may stay. */
        sweep_step(call, s, exec_id);
    /* Whatever srun says (it exits 0 when the node under it fails), the
     * command's status stands only if the allocation is still there. */
    if (!(out->flags & ATP_OUTCOME_CANCELLED) &&
        (rc = alloc_gone(call, s)) != 0)
        goto out;
    /* srun says 128+N for a task killed by signal N. */
    out->flags |= ATP_OUTCOME_SIGNAL_AS_EXIT;
out:
    free(argv);
    free(env);
    free(srun);
    free(squeue);
    free(scancel);
    free(setsid);
    if (idfile.s)
        unlink(idfile.s);
    sl_buf_free(&idfile);
    return rc;
}
