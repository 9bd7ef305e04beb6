/*
 * core/batch.c - thousands of attempts: atp_batch_run().
 *
 * The calling thread is the scheduler: it takes attempts from the
 * caller's source, hands them to a pool of worker threads when a slot is
 * free (the batch's jobs, the backend's max_concurrent) and the backend's
 * creation rate allows, and delivers every result, progress report and
 * event from itself.  A worker runs one try of one attempt from start to
 * end: a fresh copy of the template when there is one, a one-shot
 * session (start, exec, pull, close), its output to OUT/ID and into the
 * result up to a cap.  A try that failed for an infrastructure reason is
 * tried again, up to the retries; a provider's rate or quota refusal
 * halves the backend's creation rate, which then grows back step by
 * step.  A cancel stops taking attempts, cancels every running session
 * (each tears its sandbox down) and delivers those as cancelled.
 *
 * A backend whose plugin submits many commands as one unit (ABI 1.3
 * group_open: a Slurm job array) gets the ready first tries as a group
 * instead: up to GROUP_MAX attempts, with the batch's jobs as the number
 * that may run at once, which the backend then enforces (Slurm's %N).
 * Each member still runs the usual way, on a thread of its own so that
 * all can wait together; its result, retries (single attempts, the usual
 * way) and cancellation are the same as anyone's.  One group per backend
 * at a time, so that the limit holds across groups.
 */
#define _GNU_SOURCE
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define DEFAULT_JOBS 4
#define DEFAULT_RETRIES 2
#define PROGRESS_EVERY_NS 500000000LL
#define RATE_FLOOR 0.2         /* creations per second, at the worst */
#define RATE_STEP 0.1          /* regained after each creation that worked */
#define MAX_REFUSALS 20        /* rate refusals before it counts as a try */
#define GROUP_MAX 1000         /* attempts handed over as one group */
#define MEMBER_STACK (1024 * 1024)

/* A backend the batch uses: its pace and its share of the slots. */
struct lane {
    char *name;
    atp_backend *be;
    unsigned max_concurrent;   /* 0: no limit of its own */
    unsigned running;
    double rate_cap;           /* configured creations/s, 0: none */
    double rate;               /* current, 0: unlimited */
    int64_t next_create_ns;    /* earliest next creation */
    int groups;                /* its plugin takes groups (ABI 1.3) */
    struct group *live;        /* the group under way, or NULL */
    struct lane *next;
};

/* Attempts handed to a backend as one unit. */
struct group {
    struct atp_batch *b;
    struct lane *lane;
    void *handle;
    char id[32];
    unsigned left;             /* members not settled yet */
    pthread_t *threads;
    unsigned n_threads;
};

/* One attempt, from the source to its result. */
struct job {
    atp_attempt a;             /* strings owned below */
    char *id, *command, *workdir, *template_dir, *stdin_path, *backend;
    char **env;
    struct lane *lane;
    unsigned tries;            /* dispatched, rate refusals included */
    unsigned refusals;         /* tries the provider refused for rate */
    int64_t t0;                /* the first try's dispatch */
    /* the try under way, or the one just finished */
    atp_session *session;     /* while it runs (for a cancel) */
    atp_result res;
    char run_id[32];
    char *out, *err;           /* inlined output */
    size_t out_len, err_len;
    char *dir;                 /* OUT/ID, or NULL */
    int rate_limited;          /* the provider refused for rate/quota */
    struct group *grp;         /* its group, on a first try in one */
    int solo;                  /* its backend refused it a group */
    unsigned grp_index;
    struct job *next;          /* in todo, finished or a retry list */
    struct job *busy_next, **busy_prev; /* in the busy list */
};

struct atp_batch {
    atp_config *cfg;
    atp_batch_opts o;
    char *backend_name;
    char *out_dir;
    struct lane *lanes;
    /* between the scheduler and the workers */
    pthread_mutex_t lock;
    pthread_cond_t work, done; /* jobs to run; jobs finished */
    struct job *todo, *todo_tail;     /* handed to workers */
    struct job *finished, *finished_tail;
    struct job *busy;          /* with a worker (a cancel reaches them) */
    pthread_t *threads;
    unsigned n_threads;
    int quitting;
    volatile sig_atomic_t cancelled;
    int cancels_sent;          /* running sessions were cancelled */
    atp_batch_progress prog;
    int64_t t0;
};

/* ---- small helpers ---------------------------------------------------- */

static char *dup_or_null(const char *s, int *nomem)
{
    char *d;

    if (s == NULL)
        return NULL;
    if ((d = strdup(s)) == NULL)
        *nomem = 1;
    return d;
}

static void job_free(struct job *j)
{
    size_t i;

    if (j == NULL)
        return;
    free(j->id);
    free(j->command);
    free(j->workdir);
    free(j->template_dir);
    free(j->stdin_path);
    free(j->backend);
    for (i = 0; j->env && j->env[i]; i++)
        free(j->env[i]);
    free(j->env);
    free(j->out);
    free(j->err);
    free(j->dir);
    free(j);
}

/* A copy of the attempt the source gave, strings and all. */
static struct job *job_new(const atp_attempt *in)
{
    atp_attempt a = ATP_ATTEMPT_INIT;
    struct job *j = calloc(1, sizeof(*j));
    size_t n = 0, i;
    int nomem = 0;

    if (j == NULL)
        return NULL;
    memcpy(&a, in, in->struct_size < sizeof(a) ? in->struct_size
                                               : sizeof(a));
    j->id = dup_or_null(a.id, &nomem);
    j->command = dup_or_null(a.command, &nomem);
    j->workdir = dup_or_null(a.workdir, &nomem);
    j->template_dir = dup_or_null(a.template_dir, &nomem);
    j->stdin_path = dup_or_null(a.stdin_path, &nomem);
    j->backend = dup_or_null(a.backend, &nomem);
    while (a.env && a.env[n])
        n++;
    if (n && (j->env = calloc(n + 1, sizeof(*j->env))) == NULL)
        nomem = 1;
    for (i = 0; j->env && i < n; i++)
        j->env[i] = dup_or_null(a.env[i], &nomem);
    if (nomem) {
        job_free(j);
        return NULL;
    }
    j->a = a;
    j->a.id = j->id;
    j->a.command = j->command;
    j->a.workdir = j->workdir;
    j->a.template_dir = j->template_dir;
    j->a.stdin_path = j->stdin_path;
    j->a.backend = j->backend;
    j->a.env = (const char *const *)j->env;
    return j;
}

static void push(struct job **head, struct job **tail, struct job *j)
{
    j->next = NULL;
    if (*tail)
        (*tail)->next = j;
    else
        *head = j;
    *tail = j;
}

static struct job *pop(struct job **head, struct job **tail)
{
    struct job *j = *head;

    if (j) {
        *head = j->next;
        if (*head == NULL)
            *tail = NULL;
        j->next = NULL;
    }
    return j;
}

static int infra_class(atp_status s)
{
    return s == ATP_STATUS_INFRA_ERROR || s == ATP_STATUS_INFRA_TIMEOUT ||
           s == ATP_STATUS_SANDBOX_DEAD || s == ATP_STATUS_PROVISION_ERROR ||
           s == ATP_STATUS_TRANSFER_ERROR;
}

/*
 * A name safe as one directory component: the id, or when it has other
 * characters than [A-Za-z0-9._-], those replaced and a hash of the id
 * appended (so that "a/b" and "a_b" stay apart).
 */
static void dir_name(const char *id, char *out, size_t len)
{
    uint32_t h = 2166136261u;
    size_t i, n = 0;
    int changed = 0;

    for (i = 0; id[i] && n + 12 < len; i++) {
        char c = id[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                 (c >= '0' && c <= '9') || c == '-' || c == '_' ||
                 (c == '.' && i > 0);

        h = (h ^ (unsigned char)c) * 16777619u;
        out[n++] = ok ? c : '_';
        changed |= !ok;
    }
    changed |= id[i] != '\0' || n == 0;
    for (; id[i]; i++)
        h = (h ^ (unsigned char)id[i]) * 16777619u;
    out[n] = '\0';
    if (changed)
        snprintf(out + n, len - n, "-%08x", (unsigned)h);
}

/* ---- lanes ------------------------------------------------------------ */

static struct lane *lane_get(struct atp_batch *b, const char *name, int *rc)
{
    struct lane *l;
    const char *v;
    int64_t n;
    double d;

    for (l = b->lanes; l; l = l->next)
        if (strcmp(l->name, name) == 0)
            return l;
    l = calloc(1, sizeof(*l));
    if (l == NULL || (l->name = strdup(name)) == NULL) {
        free(l);
        *rc = atp__error(ATP_E_NOMEM, "out of memory");
        return NULL;
    }
    if ((*rc = atp_backend_open(&l->be, b->cfg, name)) != 0) {
        free(l->name);
        free(l);
        return NULL;
    }
    if ((v = atp__backend_key(l->be, "max_concurrent")) &&
        atp__parse_int(v, &n) == 0 && n > 0)
        l->max_concurrent = (unsigned)n;
    if ((v = atp__backend_key(l->be, "create_rate")) &&
        atp__parse_number(v, &d) == 0 && d > 0)
        l->rate_cap = d;
    if (b->o.rate > 0)
        l->rate_cap = b->o.rate;
    l->rate = l->rate_cap;
    l->groups = atp__backend_groups(l->be);
    l->next = b->lanes;
    b->lanes = l;
    return l;
}

/* A creation happened (or is about to): the next waits its turn. */
static void lane_pace(struct lane *l, int64_t now)
{
    if (l->rate > 0) {
        int64_t gap = (int64_t)(1e9 / l->rate);

        l->next_create_ns = (l->next_create_ns > now ? l->next_create_ns
                                                     : now) +
                            gap;
    }
}

/* A try ended: a rate refusal halves the pace, a creation that worked
 * wins some of it back. */
static void lane_learn(struct lane *l, const struct job *j)
{
    if (j->rate_limited) {
        double r = l->rate > 0 ? l->rate / 2
                               : (l->running > 0 ? l->running : 1) / 2.0;

        l->rate = r < RATE_FLOOR ? RATE_FLOOR : r;
    } else if (l->rate > 0 && j->res.status != ATP_STATUS_PROVISION_ERROR) {
        l->rate += RATE_STEP;
        if (l->rate_cap > 0 && l->rate > l->rate_cap)
            l->rate = l->rate_cap;
        else if (l->rate_cap == 0 && l->rate > 1000)
            l->rate = 0; /* back to no limit */
    }
}

/* ---- one try, on a worker --------------------------------------------- */

struct capture {
    char **buf;
    size_t *len;
    size_t limit;
    int fd;
};

struct try_out {
    struct capture c[2];
};

/*
 * A line as the command wrote it: with its newline, unless it is a piece
 * of a longer line or the last one, written without.  The same bytes go
 * to DIR/ID/stdout and, up to the cap, inline.
 */
static void keep(struct capture *c, const char *line, size_t len,
                 unsigned flags)
{
    int eol = !(flags & (ATP_LINE_PARTIAL | ATP_LINE_NO_EOL));
    size_t add = len + (eol ? 1 : 0);

    if (c->fd >= 0) {
        ssize_t w = write(c->fd, line, len);

        if (eol && w >= 0)
            w = write(c->fd, "\n", 1);
        (void)w;
    }
    if (c->limit == 0 || *c->len >= c->limit)
        return;
    if (*c->len + add > c->limit)
        add = c->limit - *c->len;
    if (*c->buf == NULL && (*c->buf = malloc(c->limit + 1)) == NULL)
        return;
    memcpy(*c->buf + *c->len, line, add < len ? add : len);
    if (add > len)
        (*c->buf)[*c->len + len] = '\n';
    *c->len += add;
    (*c->buf)[*c->len] = '\0';
}

static void on_line(int stream, const char *line, size_t len, unsigned flags,
                    void *payload)
{
    struct try_out *t = payload;

    keep(&t->c[stream == ATP_STDERR], line, len, flags);
}

static int make_dir(const char *path)
{
    return mkdir(path, 0755) == 0 || errno == EEXIST ? 0 : -1;
}

/* Run one try of @j; fills j->res (and the rest) on every path. */
static void run_try(struct atp_batch *b, struct job *j)
{
    atp_session_opts so = ATP_SESSION_OPTS_INIT;
    atp_exec_opts eo = ATP_EXEC_OPTS_INIT;
    struct try_out t;
    char scratch[PATH_MAX] = "", name[256], path[PATH_MAX];
    static const char *const no_excludes[] = {NULL};
    struct atp__mirror_stats st;
    const char *wd = j->workdir;
    atp_session *s = NULL;
    int in = -1, rc, i, pull = 1;

    j->res = (atp_result)ATP_RESULT_INIT;
    j->rate_limited = 0;
    j->run_id[0] = '\0';
    free(j->out);
    free(j->err);
    j->out = j->err = NULL;
    j->out_len = j->err_len = 0;
    memset(&t, 0, sizeof(t));
    t.c[0].buf = &j->out;
    t.c[0].len = &j->out_len;
    t.c[1].buf = &j->err;
    t.c[1].len = &j->err_len;
    t.c[0].limit = t.c[1].limit = b->o.inline_limit;
    t.c[0].fd = t.c[1].fd = -1;
    if (b->cancelled) {
        /* Handed out, never started. */
        atp__result_fail(&j->res, ATP_E_CANCELLED, "cancelled before it "
                         "started");
        return;
    }
    if (j->dir) {
        for (i = 0; i < 2; i++) {
            snprintf(path, sizeof(path), "%s/%s", j->dir,
                     i ? "stderr" : "stdout");
            t.c[i].fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                             0644);
        }
    }
    if (j->template_dir && j->dir == NULL &&
        (atp_backend_caps(j->lane->be) & ATP_CAP_ISOLATED_FS)) {
        /* The sandbox works on its own copy and nothing comes back: the
         * template itself is pushed. */
        wd = j->template_dir;
        pull = 0;
    } else if (j->template_dir) {
        /* A fresh copy: kept as OUT/ID/wd, else in a scratch directory
         * removed after the try. */
        if (j->dir) {
            snprintf(scratch, sizeof(scratch), "%s/wd", j->dir);
            atp__remove_tree(scratch);
            rc = make_dir(scratch) == 0
                     ? 0
                     : atp__error(ATP_E_IO, "cannot create %s: %s", scratch,
                                  strerror(errno));
        } else {
            const char *tmp = getenv("TMPDIR");

            dir_name(j->id, name, sizeof(name));
            snprintf(scratch, sizeof(scratch), "%s/atp-%s-XXXXXX",
                     tmp && *tmp ? tmp : "/tmp", name);
            rc = mkdtemp(scratch) ? 0
                                  : atp__error(ATP_E_IO, "cannot create a "
                                               "directory in %s: %s",
                                               tmp && *tmp ? tmp : "/tmp",
                                               strerror(errno));
        }
        if (rc == 0)
            rc = atp__tree_mirror(j->template_dir, scratch,
                                  no_excludes, 0, NULL, NULL, NULL, &st);
        if (rc) {
            atp__result_fail(&j->res, ATP_E_IO, atp_last_error());
            goto out;
        }
        wd = scratch;
    }
    if (j->stdin_path &&
        (in = open(j->stdin_path, O_RDONLY | O_CLOEXEC)) < 0) {
        atp__result_fail(&j->res, ATP_E_CONFIG, "");
        snprintf(j->res.message, sizeof(j->res.message), "stdin %s: %s",
                 j->stdin_path, strerror(errno));
        goto out;
    }
    so.workdir = wd;
    so.env = j->a.env;
    so.timeout_s = j->a.timeout_s;
    eo.on_line = on_line;
    eo.line_payload = &t;
    if (in >= 0) {
        eo.stdin_fd = in;
        eo.flags = ATP_EXEC_OPT_STDIN;
    }
    rc = atp_session_create(&s, j->lane->be, &so);
    if (rc) {
        atp__result_fail(&j->res, rc, atp_last_error());
        goto out;
    }
    if (j->grp)
        atp__session_join(s, j->grp->handle, j->grp->id, j->grp_index);
    pthread_mutex_lock(&b->lock);
    j->session = s;
    if (b->cancelled)
        atp_session_cancel(s);
    pthread_mutex_unlock(&b->lock);
    rc = atp_session_run(s, j->command, &eo, pull, &j->res);
    j->rate_limited = rc == ATP_E_RATE;
    snprintf(j->run_id, sizeof(j->run_id), "%s", atp_session_run_id(s));
    pthread_mutex_lock(&b->lock);
    j->session = NULL;
    pthread_mutex_unlock(&b->lock);
    atp_session_free(s);
out:
    for (i = 0; i < 2; i++)
        if (t.c[i].fd >= 0)
            close(t.c[i].fd);
    if (in >= 0)
        close(in);
    if (scratch[0] && j->dir == NULL)
        atp__remove_tree(scratch);
}

/* One try of @j, busy (a cancel reaches it) while it runs; b->lock is
 * held on entry and on return. */
static void run_one(struct atp_batch *b, struct job *j)
{
    j->busy_next = b->busy;
    j->busy_prev = &b->busy;
    if (b->busy)
        b->busy->busy_prev = &j->busy_next;
    b->busy = j;
    pthread_mutex_unlock(&b->lock);
    run_try(b, j);
    pthread_mutex_lock(&b->lock);
    *j->busy_prev = j->busy_next;
    if (j->busy_next)
        j->busy_next->busy_prev = j->busy_prev;
    push(&b->finished, &b->finished_tail, j);
    pthread_cond_signal(&b->done);
}

static void *worker(void *arg)
{
    struct atp_batch *b = arg;

    pthread_mutex_lock(&b->lock);
    for (;;) {
        struct job *j;

        while (b->todo == NULL && !b->quitting)
            pthread_cond_wait(&b->work, &b->lock);
        if (b->todo == NULL)
            break;
        j = pop(&b->todo, &b->todo_tail);
        run_one(b, j);
    }
    pthread_mutex_unlock(&b->lock);
    return NULL;
}

/* A group's member: its one try, on a thread of its own. */
static void *member(void *arg)
{
    struct job *j = arg;
    struct atp_batch *b = j->grp->b;

    pthread_mutex_lock(&b->lock);
    run_one(b, j);
    pthread_mutex_unlock(&b->lock);
    return NULL;
}

/* ---- the scheduler ---------------------------------------------------- */

ATP_EXTERN int atp_batch_new(atp_batch **out, atp_config *cfg,
                             const atp_batch_opts *opts)
{
    struct atp_batch *b;
    int rc = 0;

    *out = NULL;
    b = calloc(1, sizeof(*b));
    if (b == NULL)
        return atp__error(ATP_E_NOMEM, "out of memory");
    b->o = (atp_batch_opts)ATP_BATCH_OPTS_INIT;
    if (opts) {
        if (opts->struct_size < ATP_BATCH_OPTS_SIZE_0_2) {
            free(b);
            return atp__error(ATP_E_INVAL, "atp_batch_opts.struct_size is "
                              "%u: set it with ATP_BATCH_OPTS_INIT",
                              (unsigned)opts->struct_size);
        }
        memcpy(&b->o, opts, sizeof(b->o) < opts->struct_size
                                ? sizeof(b->o)
                                : opts->struct_size);
    }
    b->cfg = cfg;
    if (b->o.jobs == 0)
        b->o.jobs = DEFAULT_JOBS;
    if (b->o.retries == 0)
        b->o.retries = DEFAULT_RETRIES;
    else if (b->o.retries < 0)
        b->o.retries = 0;
    b->backend_name = strdup(b->o.backend ? b->o.backend
                                          : atp_config_backend(cfg));
    b->out_dir = b->o.out_dir ? strdup(b->o.out_dir) : NULL;
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->work, NULL);
    pthread_cond_init(&b->done, NULL);
    if (b->backend_name == NULL || (b->o.out_dir && b->out_dir == NULL))
        rc = atp__error(ATP_E_NOMEM, "out of memory");
    else if (b->out_dir && make_dir(b->out_dir) != 0)
        rc = atp__error(ATP_E_CONFIG, "cannot create the output directory "
                        "%s: %s", b->out_dir, strerror(errno));
    else
        lane_get(b, b->backend_name, &rc); /* its errors now, not later */
    if (rc) {
        atp_batch_free(b);
        return rc;
    }
    *out = b;
    return 0;
}

ATP_EXTERN void atp_batch_cancel(atp_batch *b)
{
    if (b == NULL)
        return;
    /* A flag only (async-signal-safe): the scheduler, which looks at it
     * at least twice a second, cancels the running sessions. */
    b->cancelled = 1;
}

static void progress(struct atp_batch *b, int force)
{
    static int64_t last;
    int64_t now = atp__now_ns();

    if (b->o.on_progress == NULL || (!force && now - last < PROGRESS_EVERY_NS))
        return;
    last = now;
    b->prog.elapsed_s = (double)(now - b->t0) / 1e9;
    b->prog.rate = b->prog.elapsed_s > 0 ? b->prog.done / b->prog.elapsed_s
                                         : 0;
    b->o.on_progress(&b->prog, b->o.payload);
}

static void deliver(struct atp_batch *b, struct job *j)
{
    atp_batch_result r;

    memset(&r, 0, sizeof(r));
    r.struct_size = sizeof(r);
    r.id = j->id;
    r.backend = j->lane ? j->lane->name : b->backend_name;
    r.attempt = j->tries - j->refusals;
    r.elapsed_s = j->t0 ? (double)(atp__now_ns() - j->t0) / 1e9 : 0;
    r.result = &j->res;
    /* Inlined output is there, empty or not, whenever it is inlined. */
    r.stdout_text = j->out || b->o.inline_limit == 0 ? j->out : "";
    r.stdout_len = j->out_len;
    r.stderr_text = j->err || b->o.inline_limit == 0 ? j->err : "";
    r.stderr_len = j->err_len;
    r.out_dir = j->dir;
    r.run_id = j->run_id[0] ? j->run_id : NULL;
    b->prog.done++;
    if (j->res.status != ATP_STATUS_OK)
        b->prog.failed++;
    if (b->o.on_result)
        b->o.on_result(&r, b->o.payload);
}

/* Hand @j to a worker. */
static void dispatch(struct atp_batch *b, struct job *j)
{
    if (j->tries++ == 0)
        j->t0 = atp__now_ns();
    j->lane->running++;
    b->prog.running++;
    lane_pace(j->lane, atp__now_ns());
    pthread_mutex_lock(&b->lock);
    push(&b->todo, &b->todo_tail, j);
    pthread_cond_signal(&b->work);
    pthread_mutex_unlock(&b->lock);
}

static void group_end(struct group *g)
{
    unsigned i;

    for (i = 0; i < g->n_threads; i++)
        pthread_join(g->threads[i], NULL);
    if (g->lane->live == g)
        g->lane->live = NULL;
    atp__group_free(g->lane->be, g->handle);
    free(g->threads);
    free(g);
}

/*
 * Hand the @n first tries in @list (same lane) to their backend as one
 * group.  When the backend refuses the group they go the usual way, into
 * @retry (a first try there is not counted as a retry).
 */
static void dispatch_group(struct atp_batch *b, struct job *list, unsigned n,
                           struct job **retry, struct job **retry_tail)
{
    struct lane *l = list->lane;
    struct group *g = calloc(1, sizeof(*g));
    unsigned limit = b->o.jobs, i;
    pthread_attr_t attr;
    struct job *j;

    if (l->max_concurrent && l->max_concurrent < limit)
        limit = l->max_concurrent;
    if (g)
        atp__make_run_id(g->id, sizeof(g->id));
    if (g == NULL ||
        (g->threads = calloc(n, sizeof(*g->threads))) == NULL ||
        atp__group_open(l->be, g->id, n, limit, &g->handle) != 0) {
        if (g && g->threads)
            atp__log(b->cfg, ATP_LOG_WARN, "batch", "%s; its attempts go "
                     "one by one", atp_last_error());
        if (g)
            free(g->threads);
        free(g);
        while ((j = list) != NULL) {
            list = j->next;
            j->solo = 1;
            push(retry, retry_tail, j);
        }
        return;
    }
    g->b = b;
    g->lane = l;
    g->left = n;
    l->live = g;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, MEMBER_STACK);
    for (i = 0; (j = list) != NULL; i++) {
        list = j->next;
        j->next = NULL;
        j->tries++;
        j->t0 = atp__now_ns();
        j->grp = g;
        j->grp_index = i;
        l->running++;
        b->prog.running++;
        if (pthread_create(&g->threads[g->n_threads], &attr, member, j) ==
            0) {
            g->n_threads++;
        } else {
            /* No thread: the usual way (the group does not wait for a
             * member that never comes). */
            j->grp = NULL;
            g->left--;
            pthread_mutex_lock(&b->lock);
            push(&b->todo, &b->todo_tail, j);
            pthread_cond_signal(&b->work);
            pthread_mutex_unlock(&b->lock);
        }
    }
    pthread_attr_destroy(&attr);
    if (g->left == 0)
        group_end(g);
}

/* Can @j start now?  0 yes; else the ns to wait (-1: for a slot). */
static int64_t ready_in(struct atp_batch *b, const struct job *j,
                        int64_t now)
{
    const struct lane *l = j->lane;

    if (b->prog.running >= b->o.jobs ||
        (l->max_concurrent && l->running >= l->max_concurrent))
        return -1;
    if (l->rate > 0 && l->next_create_ns > now)
        return l->next_create_ns - now;
    return 0;
}

/* Take a job off the finished list: deliver it, or queue it again. */
static void settle(struct atp_batch *b, struct job *j, struct job **retry,
                   struct job **retry_tail)
{
    j->lane->running--;
    b->prog.running--;
    lane_learn(j->lane, j);
    if (j->grp) {
        struct group *g = j->grp;

        j->grp = NULL;
        if (--g->left == 0)
            group_end(g);
    }
    if (!b->cancelled && j->rate_limited && j->refusals < MAX_REFUSALS) {
        /* Not a try: it goes again at the slower pace. */
        j->refusals++;
        push(retry, retry_tail, j);
        return;
    }
    if (!b->cancelled && infra_class(j->res.status) &&
        j->tries - j->refusals <= (unsigned)b->o.retries) {
        b->prog.retried++;
        push(retry, retry_tail, j);
        return;
    }
    deliver(b, j);
    job_free(j);
}

/* The next attempt of the source as a job, or NULL (then *done is set,
 * with *rc on a failure). */
static struct job *take(struct atp_batch *b, atp_attempt_fn next,
                        void *payload, int *rc, int *done)
{
    atp_attempt a = ATP_ATTEMPT_INIT;
    struct job *pending;
    int got = next(&a, payload);

    if (got <= 0) {
        if (got < 0)
            *rc = got;
        *done = 1;
        return NULL;
    }
    if (a.id == NULL || a.command == NULL) {
        *rc = atp__error(ATP_E_INVAL, "an attempt needs an id and a "
                         "command");
        *done = 1;
        return NULL;
    }
    if ((pending = job_new(&a)) == NULL) {
        *rc = atp__error(ATP_E_NOMEM, "out of memory");
        *done = 1;
        return NULL;
    }
    pending->lane = lane_get(b, pending->backend ? pending->backend
                                                 : b->backend_name,
                             rc);
    if (pending->lane && b->out_dir) {
        char name[256], dir[PATH_MAX];

        dir_name(pending->id, name, sizeof(name));
        snprintf(dir, sizeof(dir), "%s/%s", b->out_dir, name);
        if (make_dir(dir) == 0)
            pending->dir = strdup(dir);
    }
    if (pending->lane == NULL) {
        /* A backend that does not open fails every attempt alike: the
         * batch stops, before it costs more. */
        job_free(pending);
        *done = 1;
        return NULL;
    }
    return pending;
}

ATP_EXTERN int atp_batch_run(atp_batch *b, atp_attempt_fn next,
                             void *payload)
{
    struct job *pending = NULL, *retry = NULL, *retry_tail = NULL;
    unsigned i;
    int rc = 0, source_done = 0;

    if (b == NULL || next == NULL)
        return atp__error(ATP_E_INVAL, "atp_batch_run: no batch or source");
    b->threads = calloc(b->o.jobs, sizeof(*b->threads));
    if (b->threads == NULL)
        return atp__error(ATP_E_NOMEM, "out of memory");
    for (i = 0; i < b->o.jobs; i++) {
        if (pthread_create(&b->threads[i], NULL, worker, b) != 0)
            break;
        b->n_threads++;
    }
    if (b->n_threads == 0)
        return atp__error(ATP_E_IO, "cannot start a worker thread");
    if (b->o.jobs > b->n_threads)
        b->o.jobs = b->n_threads;
    b->t0 = atp__now_ns();
    for (;;) {
        int64_t now = atp__now_ns(), wait_ns = PROGRESS_EVERY_NS;
        struct job *j;

        /* Finished tries first: they free slots. */
        pthread_mutex_lock(&b->lock);
        while ((j = pop(&b->finished, &b->finished_tail)) != NULL) {
            pthread_mutex_unlock(&b->lock);
            settle(b, j, &retry, &retry_tail);
            pthread_mutex_lock(&b->lock);
        }
        pthread_mutex_unlock(&b->lock);
        progress(b, 0);
        if (b->cancelled && b->prog.running == 0)
            break;
        /* Start what can start: retries before new attempts. */
        while (!b->cancelled) {
            int64_t in;

            if (pending == NULL && retry)
                pending = pop(&retry, &retry_tail);
            if (pending == NULL && !source_done)
                pending = take(b, next, payload, &rc, &source_done);
            if (pending && pending->lane->groups && pending->tries == 0 &&
                !pending->solo) {
                struct job *list = pending, *tail = pending, *m;
                unsigned n = 1;

                /* A group: once the backend has nothing under way, with
                 * every first try the source has for it (up to
                 * GROUP_MAX); an attempt for another backend waits. */
                if (pending->lane->running > 0)
                    break;
                pending = NULL;
                list->next = NULL;
                while (n < GROUP_MAX && !source_done &&
                       (m = take(b, next, payload, &rc, &source_done)) !=
                           NULL) {
                    if (m->lane != list->lane) {
                        pending = m;
                        break;
                    }
                    tail->next = m;
                    tail = m;
                    m->next = NULL;
                    n++;
                }
                dispatch_group(b, list, n, &retry, &retry_tail);
                continue;
            }
            if (pending == NULL)
                break;
            in = ready_in(b, pending, now);
            if (in != 0) {
                if (in > 0 && in < wait_ns)
                    wait_ns = in;
                break;
            }
            dispatch(b, pending);
            pending = NULL;
        }
        if (b->cancelled && !b->cancels_sent) {
            struct job *r;

            /* Stop what runs (every session tears its sandbox down) and
             * what was handed out but has not started. */
            pthread_mutex_lock(&b->lock);
            for (r = b->busy; r; r = r->busy_next)
                if (r->session)
                    atp_session_cancel(r->session);
            b->cancels_sent = 1;
            pthread_mutex_unlock(&b->lock);
        }
        if (source_done && pending == NULL && retry == NULL &&
            b->prog.running == 0)
            break;
        /* Wait for a finished try, a cancel or the next pace. */
        {
            struct timespec until;
            int64_t at;

            clock_gettime(CLOCK_REALTIME, &until);
            at = (int64_t)until.tv_sec * 1000000000 + until.tv_nsec +
                 wait_ns;
            until.tv_sec = at / 1000000000;
            until.tv_nsec = at % 1000000000;
            pthread_mutex_lock(&b->lock);
            if (b->finished == NULL && !b->cancelled)
                pthread_cond_timedwait(&b->done, &b->lock, &until);
            pthread_mutex_unlock(&b->lock);
        }
    }
    progress(b, 1);
    job_free(pending);
    while ((pending = pop(&retry, &retry_tail)) != NULL)
        job_free(pending);
    return rc ? rc : b->cancelled ? ATP_E_CANCELLED : 0;
}

ATP_EXTERN void atp_batch_free(atp_batch *b)
{
    struct lane *l;
    unsigned i;

    if (b == NULL)
        return;
    pthread_mutex_lock(&b->lock);
    b->quitting = 1;
    pthread_cond_broadcast(&b->work);
    pthread_mutex_unlock(&b->lock);
    for (i = 0; i < b->n_threads; i++)
        pthread_join(b->threads[i], NULL);
    free(b->threads);
    while ((l = b->lanes) != NULL) {
        b->lanes = l->next;
        atp_backend_free(l->be);
        free(l->name);
        free(l);
    }
    pthread_mutex_destroy(&b->lock);
    pthread_cond_destroy(&b->work);
    pthread_cond_destroy(&b->done);
    free(b->backend_name);
    free(b->out_dir);
    free(b);
}
