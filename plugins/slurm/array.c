/*
 * plugins/slurm/array.c - a group of one-shot commands as job arrays
 * (ABI 1.3 group_open).
 *
 * The core hands the batch's ready attempts over as a group: each still
 * opens its own session and runs its own exec (job.c), on a thread of
 * its own, but instead of one sbatch each, the execs that arrive together
 * are submitted as one array, `--array=0-K%N` with N the group's
 * max_running, so that Slurm holds the rest in the queue.  A member's
 * script (its environment, its output files, its command) is a file in
 * its own run directory, like its output, never in the array's script
 * (which `scontrol write batch_script` shows); the array's script only
 * maps the task id to that file, and first writes the task's own job id
 * next to it, which is how the member learns that its command has begun
 * and which job to follow from then on.
 *
 * When to submit: once every member has arrived or withdrawn (its
 * session failed), or GATHER_MS (1 s) after the last arrival -- a member that
 * never comes must not hold the others.  Members that arrive after a
 * submission form the next array, which waits for the previous one
 * (--dependency=afterany) so that no more than N run at any time.
 *
 * Leases: the array carries the comment "atp:run=GROUP;array=K;pid=P";
 * each member's lease names its task "ARRAY_TASK" (kind "task"), and its
 * run id is "GROUP-INDEX", so that reap() can prove the task its own.
 */
#define _GNU_SOURCE
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sl.h"

#define GATHER_MS 1000

struct sl_member {
    const char *prefix;  /* RUNDIR/EXEC_ID: .sh, .jobid */
    int64_t time_limit_min;
    int done;            /* submitted, or failed: rc says */
    int rc;
    char err[512];
    long array;
    unsigned task;
    struct sl_member *next;
};

struct sl_group {
    struct sl_backend *be;
    struct sl_conn *conn;
    char *id;
    char *dir;           /* shared_dir/.atp/GROUP: the arrays' scripts */
    unsigned n, max_running;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned arrived, withdrawn;
    struct sl_member *waiting, **waiting_tail;
    size_t n_waiting;
    int64_t last_arrival_ns;
    int submitting;
    unsigned n_arrays;
    long last_array;     /* the one the next waits for */
};

int sl_group_open(atp_call *call, void *backend, const atp_group_spec *spec,
                  void **out)
{
    struct sl_backend *be = backend;
    struct sl_group *g;
    struct sl_buf d = {0};
    int rc;

    *out = NULL;
    if (spec->group_id == NULL || spec->n_members == 0)
        return sl_host->set_error(call, ATP_E_INVAL, "a group needs an id "
                                  "and members");
    g = calloc(1, sizeof(*g));
    if (g == NULL)
        return sl_host->set_error(call, ATP_E_NOMEM, "out of memory");
    g->be = be;
    g->n = spec->n_members;
    g->max_running = spec->max_running;
    g->waiting_tail = &g->waiting;
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->cond, NULL);
    g->id = strdup(spec->group_id);
    g->conn = sl_conn_new(be);
    if (g->id == NULL || g->conn == NULL ||
        sl_buf_fmt(&d, "%s/.atp/%s", be->shared_dir, spec->group_id) != 0) {
        sl_buf_free(&d);
        sl_group_free(g);
        return sl_host->set_error(call, ATP_E_NOMEM, "out of memory");
    }
    g->dir = d.s;
    if ((rc = sl_ping(g->conn, call)) != 0) {
        sl_group_free(g);
        return rc;
    }
    if (sl_mkdirs(g->dir, 0700) != 0) {
        int e = errno;

        sl_group_free(g);
        return sl_host->set_error(call, ATP_E_PROVISION, "cannot create "
                                  "%s/.atp/%s under shared_dir: %s",
                                  be->shared_dir, spec->group_id,
                                  strerror(e));
    }
    *out = g;
    return 0;
}

void sl_group_free(void *group)
{
    struct sl_group *g = group;

    if (g == NULL)
        return;
    if (g->dir)
        sl_remove_tree(g->dir);
    sl_conn_free(g->conn);
    pthread_mutex_destroy(&g->lock);
    pthread_cond_destroy(&g->cond);
    free(g->id);
    free(g->dir);
    free(g);
}

void sl_group_withdraw(struct sl_group *g)
{
    pthread_mutex_lock(&g->lock);
    g->withdrawn++;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
}

/* The array's script: the task's job id next to its member's script,
 * then that script. */
static char *array_script(struct sl_member *list)
{
    struct sl_buf b = {0};
    struct sl_member *m;
    int rc;

    rc = sl_buf_str(&b, "#!/bin/sh\ncase \"$SLURM_ARRAY_TASK_ID\" in\n");
    for (m = list; rc == 0 && m; m = m->next)
        rc = sl_buf_fmt(&b, "%u) p=", m->task) ||
             sl_buf_quote(&b, m->prefix) || sl_buf_str(&b, ";;\n");
    if (rc == 0)
        rc = sl_buf_str(&b, "*) echo \"atp: task $SLURM_ARRAY_TASK_ID has "
                            "no command\" >&2; exit 125;;\nesac\n"
                            "echo \"$SLURM_JOB_ID\" >\"$p.jobid.tmp\" && "
                            "mv -f \"$p.jobid.tmp\" \"$p.jobid\" || "
                            "exit 125\nexec /bin/sh \"$p.sh\"\n");
    if (rc) {
        sl_buf_free(&b);
        return NULL;
    }
    return b.s;
}

/* Submit the members in @list (b->lock not held) as one array. */
static void submit_array(struct sl_group *g, atp_call *call,
                         struct sl_member *list, size_t n,
                         const struct sl_member *self)
{
    struct sl_buf spath = {0}, range = {0}, dep = {0};
    char marker[256], name[64];
    const char **env = NULL;
    struct sl_jobspec js;
    struct sl_member *m;
    char *script = NULL;
    long id = 0, limit = 0;
    unsigned k, i = 0;
    int rc;

    pthread_mutex_lock(&g->lock);
    k = g->n_arrays++;
    if (g->last_array > 0)
        sl_buf_fmt(&dep, "afterany:%ld", g->last_array);
    pthread_mutex_unlock(&g->lock);
    for (m = list; m; m = m->next) {
        m->task = i++;
        if (m->time_limit_min > limit)
            limit = (long)m->time_limit_min;
    }
    snprintf(marker, sizeof(marker), "atp:run=%s;array=%u;pid=%ld", g->id,
             k, (long)getpid());
    snprintf(name, sizeof(name), "%s.a%u", g->id, k);
    script = array_script(list);
    env = sl_job_env(g->be->inherit_env, NULL, NULL);
    if (script == NULL || env == NULL ||
        sl_buf_fmt(&spath, "%s/a%u.sh", g->dir, k) != 0 ||
        sl_buf_fmt(&range, "0-%zu", n - 1) != 0 ||
        (g->max_running > 0 &&
         sl_buf_fmt(&range, "%%%u", g->max_running) != 0)) {
        rc = sl_host->set_error(call, ATP_E_NOMEM, "out of memory");
        goto out;
    }
    memset(&js, 0, sizeof(js));
    js.name = name;
    js.comment = marker;
    js.script = script;
    js.script_path = spath.s;
    js.workdir = g->dir;
    js.out_path = "/dev/null";
    js.err_path = "/dev/null";
    js.env = env;
    js.time_limit_min = limit > 0 ? limit : 60;
    js.array = range.s;
    js.dependency = dep.s;
    rc = sl_submit(g->conn, call, &js, &id);
    if (rc == ATP_E_BACKEND || rc == ATP_E_CANCELLED || rc == ATP_E_TIMEOUT)
        sl_sweep_marker(g->conn, call, marker);
    if (rc == 0)
        sl_host->log(call, ATP_LOG_DEBUG, "submitted array %ld: %zu tasks "
                     "(%s)", id, n, range.s);
out:
    pthread_mutex_lock(&g->lock);
    if (rc == 0)
        g->last_array = id;
    for (m = list; m; m = m->next) {
        m->rc = rc;
        m->array = id;
        m->done = 1;
        if (rc && m != self)
            snprintf(m->err, sizeof(m->err), "the job array of this "
                     "attempt (%u, %zu tasks) could not be submitted: the "
                     "first error of the batch says why", k, n);
    }
    g->submitting = 0;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
    free(script);
    free(env);
    sl_buf_free(&spath);
    sl_buf_free(&range);
    sl_buf_free(&dep);
}

int sl_group_join(struct sl_group *g, atp_call *call, const char *prefix,
                  long time_limit_min, long *array, unsigned *task)
{
    struct sl_member me;
    int cancel_fd = sl_host->cancel_fd(call);

    memset(&me, 0, sizeof(me));
    me.prefix = prefix;
    me.time_limit_min = time_limit_min;
    pthread_mutex_lock(&g->lock);
    *g->waiting_tail = &me;
    g->waiting_tail = &me.next;
    g->n_waiting++;
    g->arrived++;
    g->last_arrival_ns = sl_host->now_ns();
    pthread_cond_broadcast(&g->cond);
    while (!me.done) {
        int64_t now = sl_host->now_ns();
        int64_t quiet = now - g->last_arrival_ns;
        int all = g->arrived + g->withdrawn >= g->n;

        if (g->waiting && !g->submitting &&
            (all || quiet >= (int64_t)GATHER_MS * 1000000)) {
            struct sl_member *list = g->waiting;
            size_t n = g->n_waiting;

            g->waiting = NULL;
            g->waiting_tail = &g->waiting;
            g->n_waiting = 0;
            g->submitting = 1;
            pthread_mutex_unlock(&g->lock);
            submit_array(g, call, list, n, &me);
            pthread_mutex_lock(&g->lock);
            continue;
        }
        if (sl_host->cancelled(call) && !me.done && !g->submitting) {
            /* Not submitted yet: out of the queue to be. */
            struct sl_member **p;

            for (p = &g->waiting; *p && *p != &me; p = &(*p)->next)
                ;
            if (*p == &me) {
                *p = me.next;
                if (g->waiting_tail == &me.next)
                    g->waiting_tail = p;
                g->n_waiting--;
                g->arrived--;
                g->withdrawn++;
                pthread_cond_broadcast(&g->cond);
                pthread_mutex_unlock(&g->lock);
                return sl_host->set_error(call, ATP_E_CANCELLED,
                                          "cancelled before it was "
                                          "submitted");
            }
        }
        {
            struct timespec until;
            int64_t at;

            (void)cancel_fd;
            clock_gettime(CLOCK_REALTIME, &until);
            at = (int64_t)until.tv_sec * 1000000000 + until.tv_nsec +
                 50 * 1000000;
            until.tv_sec = at / 1000000000;
            until.tv_nsec = at % 1000000000;
            pthread_cond_timedwait(&g->cond, &g->lock, &until);
        }
    }
    pthread_mutex_unlock(&g->lock);
    if (me.rc)
        return me.err[0] ? sl_host->set_error(call, me.rc, "%s", me.err)
                         : me.rc;
    *array = me.array;
    *task = me.task;
    return 0;
}

const char *sl_group_id(const struct sl_group *g)
{
    return g->id;
}
