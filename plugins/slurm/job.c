/*
 * plugins/slurm/job.c - a command as one batch job.
 *
 * The command goes into a script (sl_script: cd or exit 125, stdbuf,
 * exec), its environment into the request, its stdin (when it has one)
 * into a file on the shared filesystem; the job's stdout and stderr are
 * files there too, followed as they grow and handed to the core, which
 * frames the lines.  The job is in the ledger from the moment its id is
 * known and carries a comment marker with the run and exec ids, so that
 * a lost answer or a crash leaves nothing that cannot be found.
 *
 * What to do when is the core's kill schedule (host->exec_due()): a TERM
 * is a signal to every process of the job (the batch shell included), a
 * KILL ends the job; a job still waiting in the queue is simply
 * cancelled.  The state is polled, more slowly as the job goes on (up to
 * poll_interval_s); the output files every 100 ms.  Once the job is over
 * the files are read to their end, so that nothing written between two
 * reads is lost.  The result is the raw wait status Slurm records; a job
 * that the scheduler or the cluster ended (its own time limit, a node
 * failure, preemption, a cancel from outside) is a dead sandbox, not an
 * exit of the command.
 */
#define _GNU_SOURCE
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sl.h"

#define TAIL_MS 100
#define FIRST_POLL_MS 100

long sl_time_limit_min(const struct sl_backend *be, int64_t budget_ms,
                       int64_t grace_ms)
{
    int64_t ms;

    if (be->time_limit_ms > 0)
        ms = be->time_limit_ms;
    else if (budget_ms > 0)
        /* A backstop only: atp's own budget fires first.  Slurm counts
         * whole minutes and enforces them late. */
        ms = budget_ms + grace_ms + 60000;
    else
        return 0;
    return (long)((ms + 59999) / 60000);
}

void sl_sweep_marker(struct sl_conn *c, atp_call *call, const char *marker)
{
    struct sl_jobinfo *jobs = NULL;
    size_t n = 0, i;

    if (sl_list(c, call, &jobs, &n, 1) != 0) {
        sl_host->log(call, ATP_LOG_WARN, "cannot look for a job whose "
                     "submission failed: run `atp-run gc` later");
        return;
    }
    for (i = 0; i < n; i++) {
        if (strcmp(jobs[i].comment, marker) != 0 ||
            sl_state_final(jobs[i].state))
            continue;
        sl_host->log(call, ATP_LOG_WARN, "job %ld was made although its "
                     "submission failed: cancelling it", jobs[i].id);
        sl_kill(c, call, jobs[i].id, SIGKILL, 1);
    }
    free(jobs);
}

int sl_settle(atp_call *call, struct sl_session *s)
{
    int64_t gap = 100;

    while (s->n_unsettled > 0) {
        long id = s->unsettled[s->n_unsettled - 1];
        struct sl_jobinfo ji;
        char idtext[48];
        int64_t left;

        if (sl_query(s->conn, call, id, &ji, 1) == 0 &&
            sl_job_ended(&ji)) {
            snprintf(idtext, sizeof(idtext), "%ld", id);
            sl_host->resource_removed(call, idtext);
            s->n_unsettled--;
            continue;
        }
        left = sl_ms_left(sl_host->deadline_ns(call));
        if (left == 0)
            return sl_host->set_error(call, ATP_E_TIMEOUT, "job %ld was "
                                      "cancelled but has not ended yet: "
                                      "`atp-run gc` will see to it", id);
        sl_wait(-1, left > 0 && left < gap ? left : gap);
        if (gap < 1000)
            gap *= 2;
    }
    return 0;
}

struct jrun {
    atp_call *call;
    struct sl_session *s;
    const atp_exec_spec *spec;
    long id;
    char idtext[48];
    char marker[256];
    char *out_path, *err_path, *in_path, *script_path;
    struct sl_tail out, err;
    struct sl_jobinfo ji;
    int seen_running;  /* seen RUNNING or later */
    int acting;        /* a TERM or KILL was delivered: requests are
                          cleanup from now on */
    int term_sent, kill_sent;
    int unstarted_term; /* cancelled in the queue on a TERM */
    int requeued;      /* back in the queue after it ran: cancelled */
    char requeue_reason[64];
    int stopped;
    int64_t next_poll, gap;
    int64_t failing_since; /* the first of failed polls in a row, or 0 */
    int64_t queued_at;     /* submitted, not seen to begin: since */
    int queue_expired;     /* cancelled for queue_timeout */
    /* a task of a job array (the session is in a group) */
    char *prefix;      /* RUNDIR/EXEC_ID: .sh, .jobid */
    char task[48];     /* "ARRAY_TASK" */
};

/* Paths of the exec's side files, in the run's directory. */
static char *side_path(struct sl_session *s, const char *exec_id,
                       const char *ext)
{
    struct sl_buf b = {0};

    if (sl_buf_fmt(&b, "%s/%s.%s", s->rundir, exec_id, ext) != 0) {
        sl_buf_free(&b);
        return NULL;
    }
    return b.s;
}

/*
 * A batch job has no stdin but a file: the command's stdin, to its end,
 * into one on the shared filesystem.
 */
static int stage_stdin(struct jrun *r)
{
    char buf[65536];
    int fd = open(r->in_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                  0600);
    int rc = 0;

    if (fd < 0)
        return sl_host->set_error(r->call, ATP_E_BACKEND, "cannot write the "
                                  "command's stdin to %s: %s", r->in_path,
                                  strerror(errno));
    for (;;) {
        long n = sl_host->input(r->call, buf, sizeof(buf));
        long off = 0;

        if (n == 0)
            break;
        if (n < 0) {
            rc = (int)n;
            break;
        }
        while (off < n) {
            ssize_t w = write(fd, buf + off, (size_t)(n - off));

            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0) {
                rc = sl_host->set_error(r->call, ATP_E_BACKEND, "cannot "
                                        "write the command's stdin to %s: "
                                        "%s", r->in_path, strerror(errno));
                break;
            }
            off += w;
        }
        if (rc)
            break;
    }
    close(fd);
    return rc;
}

static void queued(struct jrun *r, int yes);

static int submit(struct jrun *r)
{
    struct sl_session *s = r->s;
    const atp_exec_spec *spec = r->spec;
    const char *dir = spec->cwd ? spec->cwd : s->workdir;
    const char **env;
    struct sl_jobspec js;
    char *script;
    int rc;

    script = sl_script(dir, spec->argv, s->be->line_buffered);
    env = sl_job_env(s->be->inherit_env, spec->envp, NULL);
    if (script == NULL || env == NULL) {
        free(script);
        free(env);
        return sl_host->set_error(r->call, ATP_E_NOMEM, "out of memory");
    }
    memset(&js, 0, sizeof(js));
    js.name = spec->exec_id;
    js.comment = r->marker;
    js.script = script;
    js.script_path = r->script_path;
    js.workdir = dir;
    js.out_path = r->out_path;
    js.err_path = r->err_path;
    js.in_path = r->in_path;
    js.env = env;
    js.time_limit_min = sl_time_limit_min(s->be, spec->timeout_ms,
                                          spec->grace_ms);
    if (js.time_limit_min <= 0)
        js.time_limit_min = (long)((s->ttl_ms + 59999) / 60000);
    rc = sl_submit(s->conn, r->call, &js, &r->id);
    free(script);
    free(env);
    if (rc == ATP_E_BACKEND || rc == ATP_E_CANCELLED || rc == ATP_E_TIMEOUT)
        /* The answer may have been lost after the job was made. */
        sl_sweep_marker(s->conn, r->call, r->marker);
    if (rc)
        return rc;
    snprintf(r->idtext, sizeof(r->idtext), "%ld", r->id);
    sl_host->resource_created(r->call, "job", r->idtext);
    queued(r, 1);
    sl_host->log(r->call, ATP_LOG_DEBUG, "submitted job %ld", r->id);
    return 0;
}

static void poll_soon(struct jrun *r);

/* Poll the job's state; transient failures are retried for a while. */
static int poll_state(struct jrun *r)
{
    struct sl_jobinfo ji;
    int64_t now = sl_host->now_ns();
    int rc;

    rc = sl_query(r->s->conn, r->call, r->id, &ji, r->acting);
    if (rc == ATP_E_CANCELLED)
        return 0; /* the schedule turns it into a TERM */
    if (rc) {
        if (r->failing_since == 0)
            r->failing_since = now;
        if (now - r->failing_since > r->s->be->api_timeout_ms * 1000000)
            return rc;
        sl_host->log(r->call, ATP_LOG_WARN, "cannot read the state of job "
                     "%ld (retrying)", r->id);
        r->next_poll = now + (int64_t)1000 * 1000000;
        return 0;
    }
    r->failing_since = 0;
    r->ji = ji;
    if (r->seen_running && !ji.gone && sl_state_waiting(ji.state) &&
        !r->requeued) {
        /* Slurm put it back in the queue (its node failed, or it was
         * preempted): an attempt must not run twice. */
        r->requeued = 1;
        r->acting = 1;
        snprintf(r->requeue_reason, sizeof(r->requeue_reason), "%s",
                 ji.reason[0] && strcmp(ji.reason, "None") != 0
                     ? ji.reason
                     : "Slurm gave no reason");
        sl_host->log(r->call, ATP_LOG_WARN, "job %ld went back to the queue "
                     "(%s): cancelling it", r->id, ji.reason);
        sl_kill(r->s->conn, r->call, r->id, SIGKILL, 1);
        poll_soon(r);
        return 0;
    }
    if (!ji.gone && !sl_state_waiting(ji.state)) {
        r->seen_running = 1;
        queued(r, 0);
    }
    if (r->gap < r->s->be->poll_ms)
        r->gap = r->gap * 2 > r->s->be->poll_ms ? r->s->be->poll_ms
                                                 : r->gap * 2;
    r->next_poll = now + r->gap * 1000000;
    return 0;
}

/* The command waits in the queue (its time is not the budget's). */
static void queued(struct jrun *r, int yes)
{
    if (yes && r->queued_at == 0)
        r->queued_at = sl_host->now_ns();
    else if (!yes && r->queued_at)
        r->queued_at = 0;
    else
        return;
    if (ATP_HAS_FIELD(sl_host, atp_host_api, exec_queued))
        sl_host->exec_queued(r->call, yes);
}

/* Past queue_timeout in the queue: cancel it, say so.  1 when it was. */
static int queue_expired(struct jrun *r, const char *what)
{
    int64_t limit = r->s->be->queue_timeout_ms;

    if (r->queued_at == 0 || limit <= 0 || r->acting ||
        sl_host->now_ns() - r->queued_at < limit * 1000000)
        return 0;
    r->acting = 1;
    r->queue_expired = 1;
    sl_host->log(r->call, ATP_LOG_WARN, "%s waited %.0f s in the queue "
                 "(queue_timeout): cancelling it", what, (double)limit / 1000);
    return 1;
}

static int job_over(const struct jrun *r)
{
    return sl_job_ended(&r->ji);
}

/* Soon after a signal: its effect is what the next poll is about. */
static void poll_soon(struct jrun *r)
{
    r->gap = FIRST_POLL_MS;
    r->next_poll = sl_host->now_ns() + FIRST_POLL_MS * 1000000;
}

/* Deliver what the schedule says. */
static void act(struct jrun *r, int due)
{
    struct sl_conn *c = r->s->conn;
    int rc;

    if (due == ATP_DUE_STOP) {
        r->stopped = 1;
        return;
    }
    if (due != ATP_DUE_TERM && due != ATP_DUE_KILL)
        return;
    r->acting = 1;
    if (due == ATP_DUE_KILL) {
        r->kill_sent = 1;
        if (sl_kill(c, r->call, r->id, SIGKILL, 1) != 0)
            sl_host->log(r->call, ATP_LOG_WARN, "cancelling job %ld failed",
                         r->id);
        poll_soon(r);
        return;
    }
    r->term_sent = 1;
    rc = sl_kill(c, r->call, r->id, SIGTERM, 1);
    if (rc != 0) {
        /* Still in the queue (a signal cannot reach it), or over. */
        struct sl_jobinfo ji;

        if (sl_query(c, r->call, r->id, &ji, 1) == 0) {
            r->ji = ji;
            if (sl_state_waiting(ji.state)) {
                r->unstarted_term = 1;
                sl_kill(c, r->call, r->id, SIGKILL, 1);
            } else if (!job_over(r)) {
                sl_kill(c, r->call, r->id, SIGTERM, 1); /* it just began */
            }
        }
    }
    poll_soon(r);
}

static int wait_job(struct jrun *r)
{
    int cancel_fd = sl_host->cancel_fd(r->call);
    int rc;

    r->gap = FIRST_POLL_MS;
    r->next_poll = sl_host->now_ns() + FIRST_POLL_MS * 1000000;
    for (;;) {
        int64_t wait = -1, until_poll;
        int due;

        sl_tail_pump(&r->out, r->call, 0);
        sl_tail_pump(&r->err, r->call, 0);
        if (!r->seen_running && queue_expired(r, "the job")) {
            sl_kill(r->s->conn, r->call, r->id, SIGKILL, 1);
            poll_soon(r);
        }
        if (sl_host->now_ns() >= r->next_poll) {
            if ((rc = poll_state(r)) != 0)
                return rc;
            if (job_over(r))
                return 0;
        }
        do {
            due = sl_host->exec_due(r->call, 0, &wait);
            act(r, due);
        } while (due == ATP_DUE_TERM || due == ATP_DUE_KILL);
        if (r->stopped)
            return 0;
        until_poll = sl_ms_left(r->next_poll);
        if (wait < 0 || wait > TAIL_MS)
            wait = TAIL_MS;
        if (until_poll >= 0 && until_poll < wait)
            wait = until_poll;
        sl_wait(r->acting ? -1 : cancel_fd, wait);
    }
}

/* How it ended, from the job's last state. */
static int outcome(struct jrun *r, atp_exec_outcome *out)
{
    const struct sl_jobinfo *ji = &r->ji;
    const char *st = ji->state;
    int ours = r->term_sent || r->kill_sent;
    const char *node = ji->node[0] ? ji->node : "its node";

    if (r->queue_expired && !r->seen_running)
        return sl_host->set_error(r->call, ATP_E_TIMEOUT, "%s waited more "
                                  "than queue_timeout (%.0f s) in Slurm's "
                                  "queue and was cancelled before it began: "
                                  "the cluster is busy; raise queue_timeout "
                                  "or use a less loaded partition",
                                  r->task[0] ? "the attempt's array task"
                                             : "the job",
                                  (double)r->s->be->queue_timeout_ms / 1000);
    if (r->requeued)
        return sl_host->set_error(r->call, ATP_E_SANDBOX_DEAD, "job %ld was "
                                  "put back in the queue after it ran (%s: "
                                  "its node failed, or it was preempted); "
                                  "atp cancelled it so that the command "
                                  "does not run twice", r->id,
                                  r->requeue_reason);
    if (sl_node_failed(ji))
        return sl_host->set_error(r->call, ATP_E_SANDBOX_DEAD, "%s failed "
                                  "while it ran job %ld (%s%s%s): slurmctld "
                                  "set it DOWN", node, r->id,
                                  ji->completing ? "COMPLETING" : st,
                                  ji->reason[0] ? ", " : "", ji->reason);
    if (r->stopped || (!ji->gone && !sl_state_final(st))) {
        /* Killed, and not seen to end in time: say what we asked. */
        out->exit_code = -1;
        out->signal = SIGKILL;
        return 0;
    }
    if (ji->gone)
        return sl_host->set_error(r->call, ATP_E_SANDBOX_DEAD, "job %ld is "
                                  "no longer known to slurmctld, and no "
                                  "record of its end was found", r->id);
    if (strcmp(st, "PREEMPTED") == 0)
        return sl_host->set_error(r->call, ATP_E_SANDBOX_DEAD, "job %ld was "
                                  "preempted by the scheduler", r->id);
    if (strcmp(st, "DEADLINE") == 0)
        return sl_host->set_error(r->call, ATP_E_SANDBOX_DEAD, "job %ld "
                                  "reached its deadline in the queue",
                                  r->id);
    if (strcmp(st, "TIMEOUT") == 0 && !ours)
        return sl_host->set_error(r->call, ATP_E_SANDBOX_DEAD, "Slurm ended "
                                  "job %ld at its time limit (%ld min) before "
                                  "atp's budget ran out: raise time_limit",
                                  r->id, ji->time_limit_min);
    if (strcmp(st, "CANCELLED") == 0 && !ours)
        return sl_host->set_error(r->call, ATP_E_SANDBOX_DEAD, "job %ld was "
                                  "cancelled outside atp (scancel, or an "
                                  "administrator)", r->id);
    if (strcmp(st, "OUT_OF_MEMORY") == 0)
        sl_host->log(r->call, ATP_LOG_WARN, "job %ld ran out of memory",
                     r->id);
    if (ours && !r->seen_running &&
        (!ji->has_exit || (ji->exit_code == 0 && ji->signal == 0))) {
        /* Ended in the queue: it never ran. */
        out->exit_code = -1;
        out->signal = r->unstarted_term || !r->kill_sent ? SIGTERM : SIGKILL;
        return 0;
    }
    if (strcmp(st, "FAILED") == 0 && strcmp(ji->reason, "JobLaunchFailure")
                                             == 0 &&
        !(ji->has_exit && ji->signal > 0 && ji->signal < 32))
        return sl_host->set_error(r->call, ATP_E_BACKEND, "job %ld could not "
                                  "start on %s (JobLaunchFailure): its "
                                  "output files or directory may be missing "
                                  "there; see the slurmd log", r->id, node);
    if (!ji->has_exit)
        return sl_host->set_error(r->call, ATP_E_BACKEND, "job %ld ended "
                                  "(%s) without an exit status", r->id, st);
    out->exit_code = ji->exit_code;
    out->signal = ji->signal;
    return 0;
}

/* ---- a task of a job array ---------------------------------------- */

/*
 * The member's script, read by its array task: where its output goes,
 * its environment (over the array's, which is the host's when
 * inherit_env), then the command as a job's script runs it.  It holds
 * the environment's secrets: mode 0600, in the run directory (0700).
 */
static int member_script(struct jrun *r)
{
    const atp_exec_spec *spec = r->spec;
    const char *dir = spec->cwd ? spec->cwd : r->s->workdir;
    struct sl_buf b = {0}, path = {0};
    char *cmd = sl_script(dir, spec->argv, r->s->be->line_buffered);
    size_t i, len, off = 0;
    int fd, rc;

    rc = cmd == NULL || sl_buf_fmt(&path, "%s.sh", r->prefix) ||
         sl_buf_str(&b, "exec >") || sl_buf_quote(&b, r->out_path) ||
         sl_buf_str(&b, " 2>") || sl_buf_quote(&b, r->err_path) ||
         sl_buf_str(&b, " <") ||
         sl_buf_quote(&b, r->in_path ? r->in_path : "/dev/null") ||
         sl_buf_str(&b, "\n");
    for (i = 0; rc == 0 && spec->envp && spec->envp[i]; i++) {
        const char *eq = strchr(spec->envp[i], '=');

        if (eq == NULL)
            continue;
        rc = sl_buf_str(&b, "export ") ||
             sl_buf_add(&b, spec->envp[i], (size_t)(eq - spec->envp[i])) ||
             sl_buf_str(&b, "=") || sl_buf_quote(&b, eq + 1) ||
             sl_buf_str(&b, "\n");
    }
    /* sl_script's own lines, after its "#!/bin/sh" */
    if (rc == 0)
        rc = sl_buf_str(&b, strchr(cmd, '\n') + 1);
    free(cmd);
    if (rc) {
        sl_buf_free(&b);
        sl_buf_free(&path);
        return sl_host->set_error(r->call, ATP_E_NOMEM, "out of memory");
    }
    fd = open(path.s, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    len = b.len;
    while (fd >= 0 && off < len) {
        ssize_t n = write(fd, b.s + off, len - off);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    rc = fd < 0 || off < len
             ? sl_host->set_error(r->call, ATP_E_PROVISION, "cannot write "
                                  "%s: %s", path.s, strerror(errno))
             : 0;
    if (fd >= 0)
        close(fd);
    sl_buf_free(&b);
    sl_buf_free(&path);
    return rc;
}

/* The task's job id, once its task has begun and written it; else 0. */
static long member_started(struct jrun *r)
{
    char path[4200], buf[32];
    ssize_t n;
    int fd;

    snprintf(path, sizeof(path), "%s.jobid", r->prefix);
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return 0;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    return strtol(buf, NULL, 10);
}

/* Join the group's array; the lease names the task. */
static int member_submit(struct jrun *r)
{
    struct sl_session *s = r->s;
    long array = 0;
    unsigned task = 0;
    long limit = sl_time_limit_min(s->be, r->spec->timeout_ms,
                                   r->spec->grace_ms);
    int rc;

    if ((rc = member_script(r)) != 0)
        return rc;
    s->joined = 1;
    queued(r, 1);
    if (limit <= 0)
        limit = (long)((s->ttl_ms + 59999) / 60000);
    rc = sl_group_join(s->group, r->call, r->prefix, limit, &array, &task);
    if (rc)
        return rc;
    snprintf(r->task, sizeof(r->task), "%ld_%u", array, task);
    snprintf(r->idtext, sizeof(r->idtext), "%s", r->task);
    sl_host->resource_created(r->call, "task", r->task);
    return 0;
}

/*
 * Wait for the task to begin (its job id appears), while the schedule
 * may end it in the queue.  0 with r->id set, or with r->ji saying it
 * ended in the queue; or an error.
 */
static int member_wait_start(struct jrun *r)
{
    int cancel_fd = sl_host->cancel_fd(r->call);
    int64_t cancelled_at = 0;

    for (;;) {
        int64_t wait = -1;
        int due;

        if ((r->id = member_started(r)) > 0) {
            r->seen_running = 1;
            queued(r, 0);
            return 0;
        }
        if (!cancelled_at && queue_expired(r, "the array task")) {
            if (sl_kill_task(r->s->conn, r->call, r->task, 1) != 0)
                sl_host->log(r->call, ATP_LOG_WARN, "cancelling task %s "
                             "failed", r->task);
            cancelled_at = sl_host->now_ns();
        }
        if (cancelled_at &&
            sl_host->now_ns() - cancelled_at > (int64_t)2000 * 1000000) {
            /* Cancelled in the queue: it never ran. */
            snprintf(r->ji.state, sizeof(r->ji.state), "CANCELLED");
            r->ji.completing = 0;
            r->ji.gone = 0;
            return 0;
        }
        due = sl_host->exec_due(r->call, 0, &wait);
        if (due == ATP_DUE_STOP) {
            r->stopped = 1;
            return 0;
        }
        if ((due == ATP_DUE_TERM || due == ATP_DUE_KILL) && !cancelled_at) {
            r->acting = 1;
            r->unstarted_term = due == ATP_DUE_TERM;
            r->term_sent |= due == ATP_DUE_TERM;
            r->kill_sent |= due == ATP_DUE_KILL;
            if (sl_kill_task(r->s->conn, r->call, r->task, 1) != 0)
                sl_host->log(r->call, ATP_LOG_WARN, "cancelling task %s "
                             "failed", r->task);
            cancelled_at = sl_host->now_ns();
        }
        if (wait < 0 || wait > TAIL_MS)
            wait = TAIL_MS;
        sl_wait(r->acting ? -1 : cancel_fd, wait);
    }
}

static void jrun_free(struct jrun *r)
{
    sl_tail_close(&r->out);
    sl_tail_close(&r->err);
    if (r->out_path)
        unlink(r->out_path);
    if (r->err_path)
        unlink(r->err_path);
    if (r->in_path)
        unlink(r->in_path);
    if (r->script_path)
        unlink(r->script_path);
    free(r->out_path);
    free(r->err_path);
    free(r->in_path);
    free(r->script_path);
    if (r->prefix) {
        char path[4200];

        snprintf(path, sizeof(path), "%s.sh", r->prefix);
        unlink(path);
        snprintf(path, sizeof(path), "%s.jobid", r->prefix);
        unlink(path);
        free(r->prefix);
    }
}

int sl_job_exec(atp_call *call, struct sl_session *s,
                const atp_exec_spec *spec, atp_exec_outcome *out)
{
    const char *exec_id = spec->exec_id ? spec->exec_id : s->run_id;
    struct jrun r;
    int rc;

    memset(&r, 0, sizeof(r));
    r.call = call;
    r.s = s;
    r.spec = spec;
    snprintf(r.marker, sizeof(r.marker), "atp:run=%s;exec=%s;pid=%ld",
             s->run_id, exec_id, (long)getpid());
    r.out_path = side_path(s, exec_id, "out");
    r.err_path = side_path(s, exec_id, "err");
    r.script_path = side_path(s, exec_id, "sh");
    if (spec->flags & ATP_EXEC_STDIN)
        r.in_path = side_path(s, exec_id, "in");
    if (s->group)
        r.prefix = side_path(s, exec_id, "task");
    if (!r.out_path || !r.err_path || !r.script_path ||
        ((spec->flags & ATP_EXEC_STDIN) && !r.in_path) ||
        (s->group && !r.prefix)) {
        jrun_free(&r);
        return sl_host->set_error(call, ATP_E_NOMEM, "out of memory");
    }
    sl_tail_init(&r.out, r.out_path, ATP_STDOUT);
    sl_tail_init(&r.err, r.err_path, ATP_STDERR);
    if ((r.in_path && (rc = stage_stdin(&r)) != 0) ||
        (rc = s->group ? member_submit(&r) : submit(&r)) != 0) {
        jrun_free(&r);
        return rc;
    }
    if (s->group && ((rc = member_wait_start(&r)) != 0 || r.id == 0)) {
        /* Ended in the queue (or stopped there): it never ran. */
        if (rc == 0)
            rc = outcome(&r, out);
        if (rc == 0 && r.stopped == 0)
            sl_host->resource_removed(call, r.idtext);
        jrun_free(&r);
        return rc;
    }
    if (s->group)
        sl_host->log(call, ATP_LOG_DEBUG, "task %s began as job %ld", r.task,
                     r.id);
    rc = wait_job(&r);
    /* Whatever it wrote before its end. */
    sl_tail_pump(&r.out, call, 1);
    sl_tail_pump(&r.err, call, 1);
    if (rc == 0)
        rc = outcome(&r, out);
    if (job_over(&r)) {
        sl_host->resource_removed(call, r.idtext);
    } else {
        /* Killed, not seen to end yet: the session's close waits for it;
         * it stays in the ledger until then. */
        if (!r.kill_sent)
            sl_kill(s->conn, call, r.id, SIGKILL, 1);
        if (s->n_unsettled < sizeof(s->unsettled) / sizeof(s->unsettled[0]))
            s->unsettled[s->n_unsettled++] = r.id;
    }
    jrun_free(&r);
    return rc;
}
