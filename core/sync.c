/*
 * core/sync.c - pushing the workdir into an isolated sandbox and pulling
 * it back, incrementally and with deletions, through commands run in the
 * sandbox:
 *
 *   listing   find . -mindepth 1 ... -printf '%y %s %T@ %C@ %m\0%P\0%l\0'
 *   push      tar -x -f -            (the core's tar stream on stdin)
 *   pull      tar -c -f - --no-recursion --null -T -   (names on stdin)
 *   delete    rm -rf -- NAME...
 *
 * Per session the core keeps the manifest both sides last agreed on (the
 * "base").  A push sends what changed on the host since then and deletes
 * in the sandbox what the host deleted; a pull does the reverse.  A path
 * changed on both sides is a conflict: the host wins on push, the sandbox
 * on pull, and the conflict is reported.  Without GNU find in the sandbox
 * the transfer is full (and says so in its event).
 *
 * Streams run through pipes between the plugin's exec and a thread that
 * writes (tar out) or reads (tar in), so memory does not grow with the
 * workdir.
 */
#define _GNU_SOURCE
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "transfer.h"

/* Exit status of the listing script when the sandbox has no GNU find. */
#define NO_GNU_FIND 111

struct atp__xfer_state {
    struct atp__manifest base;
    int listed_once;   /* the sandbox side was listed at least once */
};

void atp__xfer_free(struct atp__xfer_state *x)
{
    if (x == NULL)
        return;
    atp__manifest_free(&x->base);
    free(x);
}

/* ---- running helper commands in the sandbox ---------------------------- */

struct raw {
    int (*out)(void *ctx, const void *buf, size_t len); /* stdout bytes */
    void *out_ctx;
    const char *dest;  /* push_archive's destination (NULL: workdir) */
    char err[512];    /* the first stderr bytes, for messages */
    size_t err_len;
    uint64_t out_bytes;
    /* Progress of a push or pull ("push", "pull"), or NULL. */
    const char *what;
    struct atp_session *s;
    uint64_t moved;
    int64_t t0, last;
};

#define PROGRESS_EVERY_NS 500000000

/*
 * Count the bytes of a transfer and, twice a second, say how far it got
 * (a "transfer_progress" event; atp-run draws it on a terminal).  Runs on
 * the thread that drives the plugin's exec, which delivers events.
 */
static void raw_progress(void *ctx, size_t len)
{
    struct raw *r = ctx;
    int64_t now;

    if (r->what == NULL)
        return;
    r->moved += len;
    now = atp__now_ns();
    if (r->t0 == 0)
        r->t0 = r->last = now;
    if (now - r->last >= PROGRESS_EVERY_NS) {
        atp_field f[3] = {
            {"direction", ATP_FIELD_STR, r->what, 0, 0.0},
            {"bytes", ATP_FIELD_INT, NULL, (int64_t)r->moved, 0.0},
            {"seconds", ATP_FIELD_DOUBLE, NULL, 0,
             (double)(now - r->t0) / 1e9},
        };

        r->last = now;
        atp__session_event(r->s, "transfer_progress", f, 3);
    }
}

static int raw_output(void *ctx, int stream, const void *buf, size_t len)
{
    struct raw *r = ctx;

    if (stream == ATP_STDERR) {
        size_t room = sizeof(r->err) - 1 - r->err_len;

        if (len > room)
            len = room;
        memcpy(r->err + r->err_len, buf, len);
        r->err_len += len;
        r->err[r->err_len] = '\0';
        return 0;
    }
    r->out_bytes += len;
    raw_progress(r, len);
    return r->out ? r->out(r->out_ctx, buf, len) : 0;
}

/*
 * Run the shell script @script in the sandbox's workdir, with stdin from
 * @stdin_fd (-1: none) and stdout to r->out.  Returns the plugin's code;
 * on 0, @code is the script's exit code (-1 for a signal).  With @script
 * NULL the plugin's push_archive (stdin given) or pull_archive runs.
 */
static int run_script(struct atp_session *s, const char *script,
                      int stdin_fd, struct raw *r, int *code)
{
    static const char announce[] = "printf '\\036atp-pgid %s\\n' $$; ";
    struct atp__plugin *p = s->be->plugin;
    const struct atp__settings *set = &s->be->cfg->set;
    const char *argv[] = {"/bin/sh", "-c", script, NULL};
    struct atp__exec_plan plan;
    struct atp__exec x;
    atp_exec_spec spec;
    atp_exec_outcome out;
    atp__sink sink;
    atp_call call;
    char *announced = NULL, exec_id[48];
    int rc;

    s->n_exec++;
    snprintf(exec_id, sizeof(exec_id), "%s.%u", s->run_id, s->n_exec);
    if (script && p->abi_minor >= 2 &&
        (atp_backend_caps(s->be) & ATP_CAP_GROUP_SIGNALS)) {
        /* The group, for a kill from outside, announced as the core's
         * wrapper announces it for commands. */
        size_t len = strlen(announce) + strlen(script) + 1;

        if ((announced = malloc(len)) == NULL)
            return atp__error(ATP_E_NOMEM, "out of memory");
        snprintf(announced, len, "%s%s", announce, script);
        argv[2] = announced;
    }
    memset(&spec, 0, sizeof(spec));
    spec.struct_size = sizeof(spec);
    spec.flags = stdin_fd >= 0 ? ATP_EXEC_STDIN : 0;
    spec.argv = argv;
    spec.timeout_ms = set->transfer_timeout_ms;
    spec.grace_ms = 1000;
    spec.drain_ms = set->drain_ms;
    spec.envp = (const char *const *)s->env.v;
    spec.exec_id = exec_id;
    memset(&out, 0, sizeof(out));
    out.struct_size = sizeof(out);
    sink.output = raw_output;
    sink.ctx = r;
    sink.stdin_fd = stdin_fd;
    sink.progress = raw_progress;
    r->s = s;
    memset(&plan, 0, sizeof(plan));
    plan.timeout_ms = spec.timeout_ms;
    plan.grace_ms = spec.grace_ms;
    plan.drain_ms = spec.drain_ms;
    plan.enforce_budget = 1; /* no timeout(1) around transfer commands */
    plan.announce_pgid = announced != NULL;
    plan.stdin_fd = stdin_fd;
    plan.exec_id = exec_id;
    atp__exec_call(s, &call, &x, &plan, &sink,
                   set->transfer_timeout_ms + set->exec_margin_ms);
    x.envp = spec.envp;
    atp__exec_spec_fit(p, &spec);
    if (script == NULL) {
        /* The plugin's own archive transport instead of tar(1). */
        rc = stdin_fd >= 0 ? p->ops->push_archive(&call, s->handle,
                                                  r->dest)
                           : p->ops->pull_archive(&call, s->handle);
        if (rc == 0)
            *code = 0;
        else if (rc == ATP_E_CANCELLED || s->cancelled)
            rc = atp__error(ATP_E_CANCELLED, "cancelled during the "
                            "transfer");
        else
            rc = atp__error(rc, "%s", atp__call_message(&call, rc));
        goto out;
    }
    rc = p->ops->exec(&call, s->handle, &spec, &out);
    if (x.sniffing && x.sniff_len > 0)
        raw_output(r, ATP_STDOUT, x.sniff, x.sniff_len);
    if (rc) {
        if (rc == ATP_E_CANCELLED || s->cancelled)
            rc = atp__error(ATP_E_CANCELLED, "cancelled during the "
                            "transfer");
        else
            rc = atp__error(rc == ATP_E_TIMEOUT ? ATP_E_TIMEOUT : rc,
                            "transfer command failed: %s",
                            atp__call_message(&call, rc));
        goto out;
    }
    if (p->abi_minor >= 2)
        atp__outcome_normalize(&out, &x, 0, 0);
    if (out.flags & ATP_OUTCOME_CANCELLED)
        rc = atp__error(ATP_E_CANCELLED, "cancelled during the transfer");
    else if (out.flags & (ATP_OUTCOME_STDOUT_CUT | ATP_OUTCOME_STDERR_CUT))
        /* What came may be a part: a listing that misses a change, an
         * archive that ends early.  Never taken for the whole. */
        rc = atp__error(ATP_E_TRANSFER, "the transfer command's output "
                        "had not ended %.3g s after it exited ([atp] "
                        "drain_grace_s): the transfer may be incomplete",
                        (double)set->drain_ms / 1000.0);
    else if (out.flags & ATP_OUTCOME_TIMED_OUT)
        rc = atp__error(ATP_E_TIMEOUT, "the transfer did not finish "
                        "within transfer_timeout_s (%lld s)",
                        (long long)(set->transfer_timeout_ms / 1000));
    else
        *code = out.signal ? -1 : out.exit_code;
out:
    atp__exec_release(&x);
    free(announced);
    return rc;
}

/* Trim a message from the sandbox for one line of an error. */
static const char *first_line(char *s)
{
    char *nl = strchr(s, '\n');

    if (nl)
        *nl = '\0';
    return s[0] ? s : "(no message)";
}

/* ---- producer and consumer threads ------------------------------------ */

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = write(fd, p, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return ATP_E_CANCELLED; /* the reader is gone */
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int write_fd(void *ctx, const void *buf, size_t len)
{
    return write_all(*(int *)ctx, buf, len);
}

static long read_fd(void *ctx, void *buf, size_t len)
{
    ssize_t n;

    do
        n = read(*(int *)ctx, buf, len);
    while (n < 0 && errno == EINTR);
    return n < 0 ? ATP_E_IO : (long)n;
}

/* Writes a tar stream of a list into a pipe. */
struct producer {
    pthread_t thread;
    int fd;                      /* write end, closed by the thread */
    const char *root;
    struct atp__manifest *list;  /* tar these... */
    const char *data;            /* ...or write these bytes */
    size_t data_len;
    int compression;
    struct atp_session *s;
    struct atp__tar_stats st;
    int rc;
    char err[1024];
    unsigned warnings;
    char warned[8][512]; /* "path: what", reported after the join */
};

#define MAX_WARNED (sizeof(((struct producer *)0)->warned) / \
                    sizeof(((struct producer *)0)->warned[0]))

/* Runs on the producer thread: keep the note for the caller's thread,
 * which alone delivers events. */
static void warn_entry(void *ctx, const char *path, const char *what)
{
    struct producer *pr = ctx;

    if (pr->warnings < MAX_WARNED)
        snprintf(pr->warned[pr->warnings], sizeof(pr->warned[0]), "%s: %s",
                 path, what);
    pr->warnings++;
}

/* After the join: one event per note kept, and a count of the rest. */
static void report_warnings(struct producer *pr)
{
    unsigned i;

    for (i = 0; i < pr->warnings && i < MAX_WARNED; i++) {
        atp_field f[1] = {{"message", ATP_FIELD_STR, pr->warned[i], 0, 0.0}};

        atp__session_event(pr->s, "transfer_warning", f, 1);
    }
    if (pr->warnings > MAX_WARNED) {
        atp_field f[1] = {{"more", ATP_FIELD_INT, NULL,
                           (int64_t)(pr->warnings - MAX_WARNED), 0.0}};

        atp__session_event(pr->s, "transfer_warning", f, 1);
    }
}

static void block_sigpipe(void)
{
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

static void *produce(void *arg)
{
    struct producer *pr = arg;

    block_sigpipe();
    if (pr->list)
        pr->rc = atp__tar_create(pr->root, pr->list, pr->compression,
                                 write_fd, &pr->fd, warn_entry, pr, &pr->st);
    else
        pr->rc = write_all(pr->fd, pr->data, pr->data_len);
    if (pr->rc)
        snprintf(pr->err, sizeof(pr->err), "%s", atp_last_error());
    close(pr->fd);
    pr->fd = -1;
    return NULL;
}

/* Extracts a tar stream read from a pipe. */
struct consumer {
    pthread_t thread;
    int fd;                     /* read end, closed by the thread */
    const char *root;
    const char *const *excludes;
    struct atp__tar_limits lim;
    struct atp__manifest got;
    struct atp__tar_stats st;
    volatile int failed;
    int rc;
    char err[1024];
};

static void *consume(void *arg)
{
    struct consumer *c = arg;
    char sink[4096];

    c->rc = atp__tar_extract(c->root, c->excludes, &c->lim, read_fd, &c->fd,
                             &c->got, &c->st);
    if (c->rc) {
        snprintf(c->err, sizeof(c->err), "%s", atp_last_error());
        c->failed = 1;
    }
    /* Drain whatever is left, so the writer never blocks. */
    while (read(c->fd, sink, sizeof(sink)) > 0)
        ;
    close(c->fd);
    c->fd = -1;
    return NULL;
}

/* The pull side's stdout: into the extractor's pipe. */
struct pull_io {
    struct consumer *c;
    int wfd;
};

static int pull_write(void *ctx, const void *buf, size_t len)
{
    struct pull_io *io = ctx;

    if (io->c->failed)
        return ATP_E_CANCELLED; /* extraction failed: stop the sender */
    return write_all(io->wfd, buf, len);
}

/* ---- listing ----------------------------------------------------------- */

/* A raw output sink into an atp__buf: past its limit, the run stops. */
static int grow_append(void *ctx, const void *buf, size_t len)
{
    return atp__buf_append(ctx, buf, len) ? ATP_E_CANCELLED : 0;
}

/* Append ' ' and './@rel', quoted for sh. */
static int append_dot_word(atp__buf *b, const char *rel)
{
    size_t n = strlen(rel);
    char *word = malloc(n + 3);
    int rc;

    if (word == NULL)
        return ATP_E_NOMEM;
    word[0] = '.';
    word[1] = '/';
    memcpy(word + 2, rel, n + 1);
    rc = atp__buf_puts(b, " ");
    if (rc == 0)
        rc = atp__sh_quote_append(b, word);
    free(word);
    return rc;
}

/* The listing script, with the excludes pruned by find itself. */
static char *listing_script(const char *const *excludes)
{
    atp__buf b = ATP__BUF_INIT;
    size_t i;
    int rc = atp__buf_puts(&b,
                        "find . -maxdepth 0 -printf '' >/dev/null 2>&1 || "
                        "exit 111; exec find . -mindepth 1 ");

    for (i = 0; rc == 0 && excludes && excludes[i]; i++) {
        const char *pat = excludes[i];

        if (strchr(pat, '/') != NULL) {
            /* Anchored at the root: -path './PATTERN'. */
            rc = atp__buf_puts(&b, "-path");
            if (rc == 0)
                rc = append_dot_word(&b, pat);
        } else {
            rc = atp__buf_puts(&b, "-name ");
            if (rc == 0)
                rc = atp__sh_quote_append(&b, pat);
        }
        if (rc == 0)
            rc = atp__buf_puts(&b, " -prune -o ");
    }
    if (rc == 0)
        rc = atp__buf_puts(&b,
                        "-printf '%y %s %T@ %C@ %m\\0%P\\0%l\\0'");
    if (rc) {
        atp__buf_release(&b);
        return NULL;
    }
    return b.p;
}

/*
 * List the sandbox's workdir into @m.  Returns 0; sets *@full when the
 * sandbox cannot list (no GNU find).
 */
static int list_sandbox(struct atp_session *s, struct atp__manifest *m,
                        int *full)
{
    const struct atp__settings *set = &s->be->cfg->set;
    atp__buf g;
    struct raw r;
    char *script = listing_script(set->excludes);
    int rc, code = 0;

    *full = 0;
    if (script == NULL)
        return atp__error(ATP_E_NOMEM, "out of memory");
    atp__buf_init(&g, (size_t)set->transfer_max_entries * 512 + 65536);
    memset(&r, 0, sizeof(r));
    r.out = grow_append;
    r.out_ctx = &g;
    rc = run_script(s, script, -1, &r, &code);
    free(script);
    if (rc == 0 && code == NO_GNU_FIND) {
        *full = 1;
    } else if (rc == 0 && code != 0) {
        rc = atp__error(ATP_E_TRANSFER, "listing the sandbox workdir failed "
                        "(exit %d): %s", code, first_line(r.err));
    } else if (rc == 0) {
        rc = atp__manifest_parse_listing(m, g.p ? g.p : "", g.len,
                                         set->excludes);
    }
    atp__buf_release(&g);
    return rc;
}

/*
 * List only the paths of @which in the sandbox (for the mtimes tar gave
 * what was just sent): find on those names, in batches, instead of a walk
 * of the whole workdir.
 */
static int list_paths(struct atp_session *s, const struct atp__manifest *which,
                      struct atp__manifest *m)
{
    const struct atp__settings *set = &s->be->cfg->set;
    atp__buf g;
    size_t i = 0;
    int rc = 0;

    /* a name and a link target of up to PATH_MAX each, per entry */
    atp__buf_init(&g, which->n * (2 * 4096 + 64) + 65536);
    while (rc == 0 && i < which->n) {
        atp__buf script = ATP__BUF_INIT;
        struct raw r;
        int code = 0;

        rc = atp__buf_puts(&script, "exec find");
        while (rc == 0 && i < which->n && script.len < 65536)
            rc = append_dot_word(&script, which->e[i++].path);
        if (rc == 0)
            rc = atp__buf_puts(&script, " -maxdepth 0 -printf "
                            "'%y %s %T@ %C@ %m\\0%p\\0%l\\0'");
        if (rc) {
            atp__buf_release(&script);
            rc = atp__error(ATP_E_NOMEM, "out of memory");
            break;
        }
        memset(&r, 0, sizeof(r));
        r.out = grow_append;
        r.out_ctx = &g;
        rc = run_script(s, script.p, -1, &r, &code);
        atp__buf_release(&script);
        /* find exits 1 when a name vanished: what it printed still counts */
        if (rc == 0 && code != 0 && code != 1)
            rc = atp__error(ATP_E_TRANSFER, "listing in the sandbox failed "
                            "(exit %d): %s", code, first_line(r.err));
    }
    if (rc == 0)
        rc = atp__manifest_parse_listing(m, g.p ? g.p : "", g.len,
                                         set->excludes);
    atp__buf_release(&g);
    return rc;
}

/* The host scan, in a thread while the sandbox is listed. */
struct scan_job {
    pthread_t thread;
    struct atp__manifest *m;
    const char *root;
    const char *const *excludes;
    int rc;
    char err[1024];
};

static void *scan_main(void *arg)
{
    struct scan_job *j = arg;

    j->rc = atp__manifest_scan(j->m, j->root, j->excludes);
    if (j->rc)
        snprintf(j->err, sizeof(j->err), "%s", atp_last_error());
    return NULL;
}

/* Scan the host and list the sandbox at the same time. */
static int scan_and_list(struct atp_session *s, struct atp__manifest *H,
                         struct atp__manifest *S, int *full)
{
    const struct atp__settings *set = &s->be->cfg->set;
    struct scan_job j;
    int rc;

    memset(&j, 0, sizeof(j));
    j.m = H;
    j.root = s->workdir;
    j.excludes = set->excludes;
    if (pthread_create(&j.thread, NULL, scan_main, &j) != 0)
        return (rc = atp__manifest_scan(H, s->workdir, set->excludes)) != 0
                   ? rc
                   : list_sandbox(s, S, full);
    rc = list_sandbox(s, S, full);
    pthread_join(j.thread, NULL);
    if (rc == 0 && j.rc)
        rc = atp__error(j.rc, "%s", j.err);
    return rc;
}

/* ---- comparing --------------------------------------------------------- */

/* Did the host side change @path since the base? (@h, @b may be NULL.) */
static int host_changed(int rootfd, struct atp__ment *h, struct atp__ment *b)
{
    uint64_t hash;

    if (h == NULL || b == NULL)
        return h != b;
    if (h->type != b->type || h->mode != b->mode)
        return 1;
    if (h->type == ATP__T_LINK)
        return strcmp(h->target ? h->target : "",
                      b->target ? b->target : "") != 0;
    if (h->type == ATP__T_DIR)
        return 0;
    if (h->size != b->size)
        return 1;
    if (atp__time_eq(h->mtime, b->mtime) && atp__time_eq(h->ctime, b->ctime))
        return 0;
    /* Same size, a time moved (the ctime too when the mtime was set
     * back): the content decides. */
    if (b->has_hash && atp__hash_file(rootfd, h->path, &hash) == 0 &&
        hash == b->hash) {
        b->mtime = h->mtime; /* remember: no need to hash again */
        b->ctime = h->ctime;
        return 0;
    }
    return 1;
}

/*
 * Did the sandbox side change @path since the base?  A file whose size and
 * mtime are as agreed may still have been edited, its mtime set back
 * (touch -d, cp -p, tar x, rsync -t): its ctime moved all the same.
 */
static int sandbox_changed(const struct atp__ment *x,
                           const struct atp__ment *b)
{
    if (x == NULL || b == NULL)
        return x != b;
    if (x->type != b->type || x->mode != b->mode)
        return 1;
    if (x->type == ATP__T_LINK)
        return strcmp(x->target ? x->target : "",
                      b->target ? b->target : "") != 0;
    if (x->type == ATP__T_DIR)
        return 0;
    return x->size != b->size || !atp__time_eq(x->mtime, b->sb_mtime) ||
           !atp__time_eq(x->ctime, b->sb_ctime);
}

/* Same entry on both sides, as far as metadata can tell. */
static int same_entry(const struct atp__ment *h, const struct atp__ment *x)
{
    if (h == NULL || x == NULL)
        return h == x;
    if (h->type != x->type)
        return 0;
    if (h->type == ATP__T_LINK)
        return strcmp(h->target ? h->target : "",
                      x->target ? x->target : "") == 0;
    if (h->type == ATP__T_DIR)
        return 1;
    return h->size == x->size && atp__time_eq(h->mtime, x->mtime);
}

/* Walk the union of up to three sorted manifests in path order. */
struct walk3 {
    struct atp__manifest *m[3];
    size_t i[3];
};

static const char *walk3_next(struct walk3 *w, struct atp__ment *out[3])
{
    const char *min = NULL;
    int k;

    for (k = 0; k < 3; k++)
        if (w->m[k] && w->i[k] < w->m[k]->n &&
            (min == NULL || strcmp(w->m[k]->e[w->i[k]].path, min) < 0))
            min = w->m[k]->e[w->i[k]].path;
    for (k = 0; k < 3; k++) {
        out[k] = NULL;
        if (min && w->m[k] && w->i[k] < w->m[k]->n &&
            strcmp(w->m[k]->e[w->i[k]].path, min) == 0)
            out[k] = &w->m[k]->e[w->i[k]++];
    }
    return min;
}

/* NUL-separated or quoted lists of paths. */
struct names {
    atp__buf b;        /* the paths, each followed by its NUL */
    size_t n;
};

#define NAMES_INIT {ATP__BUF_INIT, 0}

static int names_add_nul(struct names *nm, const char *path)
{
    int rc = atp__buf_append(&nm->b, path, strlen(path) + 1);

    if (rc == 0)
        nm->n++;
    return rc;
}

/* Delete NUL-separated @nm paths in the sandbox, in batches. */
static int delete_in_sandbox(struct atp_session *s, const struct names *nm)
{
    size_t off = 0;

    while (off < nm->b.len) {
        atp__buf script = ATP__BUF_INIT;
        struct raw r;
        int rc = atp__buf_puts(&script, "exec rm -rf --"), code = 0;

        /* Batches stay under 60 KiB of argv: some providers refuse more
         * than 64 KiB per command. */
        while (rc == 0 && off < nm->b.len &&
               script.len + 4 * strlen(nm->b.p + off) + 3 < 60000) {
            rc = atp__buf_puts(&script, " ");
            if (rc == 0)
                rc = atp__sh_quote_append(&script, nm->b.p + off);
            off += strlen(nm->b.p + off) + 1;
        }
        if (rc) {
            atp__buf_release(&script);
            return atp__error(ATP_E_NOMEM, "out of memory");
        }
        memset(&r, 0, sizeof(r));
        rc = run_script(s, script.p, -1, &r, &code);
        atp__buf_release(&script);
        if (rc)
            return rc;
        if (code != 0)
            return atp__error(ATP_E_TRANSFER, "deleting in the sandbox "
                              "failed (exit %d): %s", code, first_line(r.err));
    }
    return 0;
}

static void emit_done(struct atp_session *s, const char *type, int full,
                      uint64_t files, uint64_t bytes, uint64_t deleted,
                      uint64_t conflicts, double seconds,
                      const struct names *conflict_names)
{
    atp_field f[8];
    char first[1024] = "";
    size_t off = 0, used = 0;

    if (strcmp(type, "pushed") == 0)
        s->push_bytes += bytes;
    else
        s->pull_bytes += bytes;

    while (conflict_names && off < conflict_names->b.len && used + 2 <
                                                              sizeof(first)) {
        int w = snprintf(first + used, sizeof(first) - used, "%s%s",
                         used ? "," : "", conflict_names->b.p + off);

        if (w < 0)
            break;
        used += (size_t)w;
        off += strlen(conflict_names->b.p + off) + 1;
    }
    f[0] = (atp_field){"mode", ATP_FIELD_STR, full ? "full" : "incremental",
                       0, 0.0};
    f[1] = (atp_field){"files", ATP_FIELD_INT, NULL, (int64_t)files, 0.0};
    f[2] = (atp_field){"bytes", ATP_FIELD_INT, NULL, (int64_t)bytes, 0.0};
    f[3] = (atp_field){"deleted", ATP_FIELD_INT, NULL, (int64_t)deleted, 0.0};
    f[4] = (atp_field){"conflicts", ATP_FIELD_INT, NULL, (int64_t)conflicts,
                       0.0};
    f[5] = (atp_field){"seconds", ATP_FIELD_DOUBLE, NULL, 0, seconds};
    f[6] = (atp_field){"conflict_paths", ATP_FIELD_STR, first, 0, 0.0};
    atp__session_event(s, type, f, conflicts ? 7 : 6);
}

/* Start a thread; 0 or ATP_E_IO. */
static int start_thread(pthread_t *t, void *(*fn)(void *), void *arg)
{
    int e = pthread_create(t, NULL, fn, arg);

    return e ? atp__error(ATP_E_IO, "cannot start a thread: %s",
                          strerror(e))
             : 0;
}

static struct atp__xfer_state *xfer_state(struct atp_session *s)
{
    if (s->xfer == NULL)
        s->xfer = calloc(1, sizeof(*s->xfer));
    return s->xfer;
}

/*
 * The new base: @old without the paths in @drop (sorted names) and with
 * the entries of @put (which win), all sorted.
 */
static int rebase(struct atp__manifest *old, const struct atp__manifest *drop,
                  const struct atp__manifest *put, struct atp__manifest *out)
{
    size_t i;

    for (i = 0; i < old->n; i++) {
        const char *p = old->e[i].path;

        if ((drop && atp__manifest_find(drop, p)) ||
            (put && atp__manifest_find(put, p)))
            continue;
        if (atp__manifest_add(out, &old->e[i]) != 0)
            return atp__error(ATP_E_NOMEM, "out of memory");
    }
    for (i = 0; put && i < put->n; i++)
        if (put->e[i].type != 0 && atp__manifest_add(out, &put->e[i]) != 0)
            return atp__error(ATP_E_NOMEM, "out of memory");
    atp__manifest_sort(out);
    return 0;
}

static int push(struct atp_session *s, int mirror);

/*
 * Empty the sandbox's workdir but for what the excludes keep at its top
 * (the warm cache): a warm sandbox that cannot be listed (no GNU find) is
 * reset this way, then pushed in full.
 */
static int wipe_sandbox(struct atp_session *s)
{
    const char *const *ex = s->be->cfg->set.excludes;
    atp__buf script = ATP__BUF_INIT;
    size_t i;
    struct raw r;
    int rc = atp__buf_puts(&script,
                           "exec find . -mindepth 1 -maxdepth 1"), code = 0;

    for (i = 0; rc == 0 && ex && ex[i]; i++) {
        if (strchr(ex[i], '/'))
            continue;
        rc = atp__buf_puts(&script, " ! -name ");
        if (rc == 0)
            rc = atp__sh_quote_append(&script, ex[i]);
    }
    if (rc == 0)
        rc = atp__buf_puts(&script, " -exec rm -rf -- {} +");
    if (rc) {
        atp__buf_release(&script);
        return atp__error(ATP_E_NOMEM, "out of memory");
    }
    memset(&r, 0, sizeof(r));
    rc = run_script(s, script.p, -1, &r, &code);
    atp__buf_release(&script);
    if (rc == 0 && code != 0)
        rc = atp__error(ATP_E_TRANSFER, "emptying the warm sandbox's workdir "
                        "failed (exit %d): %s", code, first_line(r.err));
    return rc;
}

int atp__sync_push(struct atp_session *s)
{
    return push(s, 0);
}

int atp__sync_push_mirror(struct atp_session *s)
{
    return push(s, 1);
}

/*
 * The push.  Normally a three-way merge: what the host changed since the
 * base goes in, and what the sandbox changed at the same paths is a
 * conflict the host wins.  @mirror: what the sandbox changed on its own
 * is replaced too and what only it has is removed, so that it ends up
 * holding the host's tree exactly (a warm sandbox given to its next
 * session).
 */
static int push(struct atp_session *s, int mirror)
{
    const struct atp__settings *set = &s->be->cfg->set;
    struct atp__xfer_state *x = xfer_state(s);
    struct atp__manifest H = {0}, S = {0}, send = {0}, gone = {0}, nb = {0};
    struct names del = NAMES_INIT, conf = NAMES_INIT;
    struct producer pr;
    struct walk3 w;
    struct atp__ment *m[3];
    int64_t t0 = atp__now_ns();
    int full = 0, rootfd = -1, rc, code = 0, p[2] = {-1, -1};
    size_t i;

    memset(&pr, 0, sizeof(pr));
    if (x == NULL)
        return atp__error(ATP_E_NOMEM, "out of memory");
    if ((rc = scan_and_list(s, &H, &S, &full)) != 0)
        goto out;
    if (mirror && full && (rc = wipe_sandbox(s)) != 0)
        goto out;
    if (mirror && full)
        atp__manifest_free(&x->base); /* it holds nothing now */
    rootfd = open(s->workdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0) {
        rc = atp__error(ATP_E_TRANSFER, "cannot open %s: %s", s->workdir,
                        strerror(errno));
        goto out;
    }
    memset(&w, 0, sizeof(w));
    w.m[0] = &H;
    w.m[1] = &x->base;
    w.m[2] = full ? NULL : &S;
    while (walk3_next(&w, m)) {
        struct atp__ment *h = m[0], *b = m[1], *sx = m[2];
        int sc;

        if (full) {
            if (h)
                rc = atp__manifest_add(&send, h);
            if (rc)
                goto nomem;
            continue;
        }
        sc = sandbox_changed(sx, b);
        if (!host_changed(rootfd, h, b) && !(mirror && sc))
            continue;
        if (!mirror && sc && !same_entry(h, sx) &&
            names_add_nul(&conf, (h ? h : b ? b : sx)->path))
            goto nomem;
        if (h == NULL) {
            /* Deleted on the host (or made in the sandbox alone, when
             * mirroring): delete in the sandbox. */
            if ((sx && names_add_nul(&del, sx->path)) ||
                (b && atp__manifest_add(&gone, b)))
                goto nomem;
            continue;
        }
        if (sx && sx->type != h->type && names_add_nul(&del, sx->path))
            goto nomem;
        if (atp__manifest_add(&send, h))
            goto nomem;
    }
    if (del.n && (rc = delete_in_sandbox(s, &del)) != 0)
        goto out;
    if (send.n) {
        struct raw r;

        if (pipe2(p, O_CLOEXEC) != 0) {
            rc = atp__error(ATP_E_IO, "pipe: %s", strerror(errno));
            goto out;
        }
        pr.fd = p[1];
        pr.root = s->workdir;
        pr.list = &send;
        pr.compression = set->compression;
        pr.s = s;
        p[1] = -1;
        if ((rc = start_thread(&pr.thread, produce, &pr)) != 0) {
            close(pr.fd);
            goto out;
        }
        memset(&r, 0, sizeof(r));
        r.what = "push";
        rc = run_script(s, ATP__OPS_HAS(s->be->plugin, push_archive)
                               ? NULL
                               : "exec tar -x -f -",
                        p[0], &r, &code);
        close(p[0]); /* a producer still writing gets EPIPE */
        p[0] = -1;
        pthread_join(pr.thread, NULL);
        report_warnings(&pr);
        if (rc)
            goto out;
        if (pr.rc && pr.rc != ATP_E_CANCELLED) {
            rc = atp__error(pr.rc, "%s", pr.err);
            goto out;
        }
        if (code != 0) {
            rc = atp__error(ATP_E_TRANSFER, "extracting in the sandbox failed "
                            "(exit %d): %s%s", code, first_line(r.err),
                            code == 127 ? " (the sandbox needs tar)" : "");
            goto out;
        }
        if (pr.rc) {
            rc = atp__error(ATP_E_TRANSFER, "%s", pr.err);
            goto out;
        }
    }
    /* The sandbox's own mtimes of what was sent, for the next compare. */
    if (!full && send.n) {
        struct atp__manifest S2 = {0};
        int again = 0;

        if (send.n > 4096)
            rc = list_sandbox(s, &S2, &again);
        else
            rc = list_paths(s, &send, &S2);
        for (i = 0; rc == 0 && i < send.n; i++) {
            struct atp__ment *sx = atp__manifest_find(&S2, send.e[i].path);

            send.e[i].sb_mtime = sx ? sx->mtime : ATP__TIME_NONE;
            send.e[i].sb_ctime = sx ? sx->ctime : ATP__TIME_NONE;
        }
        atp__manifest_free(&S2);
        if (rc)
            goto out;
    } else {
        for (i = 0; i < send.n; i++) { /* full: so are the pulls */
            send.e[i].sb_mtime = send.e[i].mtime;
            send.e[i].sb_ctime = ATP__TIME_NONE;
        }
    }
    atp__manifest_sort(&gone);
    if ((rc = rebase(&x->base, &gone, &send, &nb)) != 0)
        goto out;
    atp__manifest_free(&x->base);
    x->base = nb;
    memset(&nb, 0, sizeof(nb));
    emit_done(s, "pushed", full, pr.st.files, pr.st.bytes, del.n, conf.n,
              (double)(atp__now_ns() - t0) / 1e9, &conf);
    goto out;
nomem:
    rc = atp__error(ATP_E_NOMEM, "out of memory");
out:
    if (p[0] >= 0)
        close(p[0]);
    if (p[1] >= 0)
        close(p[1]);
    if (rootfd >= 0)
        close(rootfd);
    atp__manifest_free(&H);
    atp__manifest_free(&S);
    atp__manifest_free(&send);
    atp__manifest_free(&gone);
    atp__manifest_free(&nb);
    atp__buf_release(&del.b);
    atp__buf_release(&conf.b);
    return rc;
}

int atp__sync_pull(struct atp_session *s)
{
    const struct atp__settings *set = &s->be->cfg->set;
    struct atp__xfer_state *x = xfer_state(s);
    struct atp__manifest H = {0}, S = {0}, gone = {0},
                         nb = {0};
    struct names del = NAMES_INIT, conf = NAMES_INIT, want = NAMES_INIT;
    struct consumer c;
    struct producer names;
    struct pull_io io;
    struct walk3 w;
    struct atp__ment *m[3];
    int64_t t0 = atp__now_ns();
    int full = 0, rootfd = -1, rc, code = 0, q[2] = {-1, -1};
    int n[2] = {-1, -1}, names_started = 0;
    size_t i, off;

    memset(&c, 0, sizeof(c));
    memset(&names, 0, sizeof(names));
    if (x == NULL)
        return atp__error(ATP_E_NOMEM, "out of memory");
    if ((rc = scan_and_list(s, &H, &S, &full)) != 0)
        goto out;
    rootfd = open(s->workdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0) {
        rc = atp__error(ATP_E_TRANSFER, "cannot open %s: %s", s->workdir,
                        strerror(errno));
        goto out;
    }
    if (!full) {
        memset(&w, 0, sizeof(w));
        w.m[0] = &H;
        w.m[1] = &x->base;
        w.m[2] = &S;
        while (walk3_next(&w, m)) {
            struct atp__ment *h = m[0], *b = m[1], *sx = m[2];

            if (!sandbox_changed(sx, b))
                continue;
            if (host_changed(rootfd, h, b) && !same_entry(h, sx) &&
                names_add_nul(&conf, (sx ? sx : h ? h : b)->path))
                goto nomem;
            if (sx == NULL) {
                /* Deleted in the sandbox: delete on the host. */
                if ((h && names_add_nul(&del, h->path)) ||
                    atp__manifest_add(&gone, b))
                    goto nomem;
                continue;
            }
            if (h && h->type != sx->type && names_add_nul(&del, h->path))
                goto nomem;
            if (names_add_nul(&want, sx->path))
                goto nomem;
        }
    }
    for (off = 0; off < del.b.len; off += strlen(del.b.p + off) + 1)
        if ((rc = atp__remove_under(s->workdir, del.b.p + off)) != 0)
            goto out;
    if (full || want.n) {
        struct raw r;

        if (pipe2(q, O_CLOEXEC) != 0 || (!full && pipe2(n, O_CLOEXEC))) {
            rc = atp__error(ATP_E_IO, "pipe: %s", strerror(errno));
            goto out;
        }
        c.fd = q[0];
        q[0] = -1;
        c.root = s->workdir;
        c.excludes = set->excludes;
        c.lim.max_entries = set->transfer_max_entries;
        c.lim.max_bytes = set->transfer_max_bytes;
        if ((rc = start_thread(&c.thread, consume, &c)) != 0) {
            close(c.fd);
            goto out;
        }
        if (!full) {
            names.fd = n[1];
            n[1] = -1;
            names.data = want.b.p;
            names.data_len = want.b.len;
            if ((rc = start_thread(&names.thread, produce, &names)) != 0) {
                close(names.fd);
                close(q[1]);
                q[1] = -1;
                pthread_join(c.thread, NULL);
                goto out;
            }
            names_started = 1;
        }
        io.c = &c;
        io.wfd = q[1];
        memset(&r, 0, sizeof(r));
        r.what = "pull";
        r.out = pull_write;
        r.out_ctx = &io;
        if (full && ATP__OPS_HAS(s->be->plugin, pull_archive))
            rc = run_script(s, NULL, -1, &r, &code);
        else
            rc = run_script(s, full ? "exec tar -c -f - ."
                                    : "exec tar -c -f - --no-recursion "
                                      "--null -T -",
                            full ? -1 : n[0], &r, &code);
        close(q[1]);
        q[1] = -1;
        if (n[0] >= 0) {
            close(n[0]);
            n[0] = -1;
        }
        pthread_join(c.thread, NULL);
        if (names_started)
            pthread_join(names.thread, NULL);
        if (c.rc) {
            rc = atp__error(c.rc, "%s", c.err);
            goto out;
        }
        if (rc)
            goto out;
        if (code == 0 && c.st.stream_bytes == 0) {
            /* tar always writes an archive, of an empty list even: no
             * byte at all is a tar that did not run or a stream lost. */
            rc = atp__error(ATP_E_TRANSFER, "the sandbox sent no tar "
                            "stream for %s (0 bytes): the workdir on the "
                            "host was left as it was",
                            full ? "the whole workdir" : "its changes");
            goto out;
        }
        if (code != 0 && code != 1) {
            rc = atp__error(ATP_E_TRANSFER, "packing in the sandbox failed "
                            "(exit %d): %s%s", code, first_line(r.err),
                            code == 127 ? " (the sandbox needs tar)" : "");
            goto out;
        }
        if (code == 1) {
            /* GNU tar: some file changed or vanished while read. */
            atp_field f[1] = {{"message", ATP_FIELD_STR, first_line(r.err),
                               0, 0.0}};

            atp__session_event(s, "transfer_warning", f, 1);
        }
    }
    /* What was fetched: host mtime as extracted, sandbox times as
     * listed. */
    for (i = 0; i < c.got.n; i++) {
        struct atp__ment *sx = atp__manifest_find(&S, c.got.e[i].path);

        c.got.e[i].sb_mtime = sx ? sx->mtime : c.got.e[i].mtime;
        c.got.e[i].sb_ctime = sx ? sx->ctime : ATP__TIME_NONE;
    }
    atp__manifest_sort(&gone);
    if (full) {
        /* Everything the sandbox has is now the agreed state, and what
         * was agreed on but did not come back was deleted there. */
        struct atp__manifest empty = {0};

        for (i = 0; i < x->base.n; i++) {
            const char *path = x->base.e[i].path;

            if (atp__manifest_find(&c.got, path))
                continue;
            if ((rc = atp__remove_under(s->workdir, path)) != 0)
                goto out;
            if (names_add_nul(&del, path))
                goto nomem;
        }
        rc = rebase(&empty, NULL, &c.got, &nb);
    } else {
        rc = rebase(&x->base, &gone, &c.got, &nb);
    }
    if (rc)
        goto out;
    atp__manifest_free(&x->base);
    x->base = nb;
    memset(&nb, 0, sizeof(nb));
    emit_done(s, "pulled", full, c.st.files, c.st.bytes, del.n, conf.n,
              (double)(atp__now_ns() - t0) / 1e9, &conf);
    goto out;
nomem:
    rc = atp__error(ATP_E_NOMEM, "out of memory");
out:
    if (q[0] >= 0)
        close(q[0]);
    if (q[1] >= 0)
        close(q[1]);
    if (n[0] >= 0)
        close(n[0]);
    if (n[1] >= 0)
        close(n[1]);
    if (rootfd >= 0)
        close(rootfd);
    atp__manifest_free(&H);
    atp__manifest_free(&S);
    atp__manifest_free(&gone);
    atp__manifest_free(&nb);
    atp__manifest_free(&c.got);
    atp__buf_release(&del.b);
    atp__buf_release(&conf.b);
    atp__buf_release(&want.b);
    return rc;
}

int atp__sync_push_dir(struct atp_session *s, const char *host_dir,
                       const char *dest)
{
    const struct atp__settings *set = &s->be->cfg->set;
    struct atp__manifest all = {0};
    struct producer pr;
    struct raw r;
    atp__buf script = ATP__BUF_INIT;
    int rc, code = 0, p[2] = {-1, -1};
    int archive = ATP__OPS_HAS(s->be->plugin, push_archive);

    memset(&pr, 0, sizeof(pr));
    memset(&r, 0, sizeof(r));
    if ((rc = atp__manifest_scan(&all, host_dir, set->excludes)) != 0)
        return rc;
    if (!archive &&
        (atp__buf_puts(&script, "mkdir -p -- ") ||
         atp__sh_quote_append(&script, dest) ||
         atp__buf_puts(&script, " && cd -- ") ||
         atp__sh_quote_append(&script, dest) ||
         atp__buf_puts(&script, " && exec tar -x -f -"))) {
        rc = atp__error(ATP_E_NOMEM, "out of memory");
        goto out;
    }
    if (pipe2(p, O_CLOEXEC) != 0) {
        rc = atp__error(ATP_E_IO, "pipe: %s", strerror(errno));
        goto out;
    }
    pr.fd = p[1];
    p[1] = -1;
    pr.root = host_dir;
    pr.list = &all;
    pr.compression = set->compression;
    pr.s = s;
    if ((rc = start_thread(&pr.thread, produce, &pr)) != 0) {
        close(pr.fd);
        goto out;
    }
    r.dest = dest;
    r.what = "push";
    rc = run_script(s, archive ? NULL : script.p, p[0], &r, &code);
    close(p[0]);
    p[0] = -1;
    pthread_join(pr.thread, NULL);
    report_warnings(&pr);
    if (rc == 0 && pr.rc && pr.rc != ATP_E_CANCELLED)
        rc = atp__error(pr.rc, "%s", pr.err);
    else if (rc == 0 && code != 0)
        rc = atp__error(ATP_E_TRANSFER, "pushing %s to %s failed (exit %d): "
                        "%s", host_dir, dest, code, first_line(r.err));
    if (rc == 0) {
        atp_field f[4] = {
            {"path", ATP_FIELD_STR, host_dir, 0, 0.0},
            {"dest", ATP_FIELD_STR, dest, 0, 0.0},
            {"files", ATP_FIELD_INT, NULL, (int64_t)pr.st.files, 0.0},
            {"bytes", ATP_FIELD_INT, NULL, (int64_t)pr.st.bytes, 0.0},
        };

        s->push_bytes += pr.st.bytes;
        atp__session_event(s, "mount_pushed", f, 4);
    }
out:
    if (p[0] >= 0)
        close(p[0]);
    if (p[1] >= 0)
        close(p[1]);
    atp__buf_release(&script);
    atp__manifest_free(&all);
    return rc;
}
