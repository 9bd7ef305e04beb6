/*
 * core/sync_stream.c - the moving half of the workdir sync: running
 * commands in the sandbox through the plugin's exec (with their progress
 * events and the transfer timeout), and the tar streams both ways.
 *
 * Streams run through pipes between the plugin's exec and a thread that
 * writes (tar out, atp__sync_send()) or reads (tar in,
 * atp__sync_receive()), so memory does not grow with the workdir.  What
 * is sent, fetched or deleted is decided in core/sync_plan.c.
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
#include "sync_int.h"
#include "transfer.h"

/* ---- running helper commands in the sandbox ---------------------------- */

#define PROGRESS_EVERY_NS 500000000

/*
 * Count the bytes of a transfer and, twice a second, say how far it got
 * (a "transfer_progress" event; atp-run draws it on a terminal).  Runs on
 * the thread that drives the plugin's exec, which delivers events.
 */
static void raw_progress(void *ctx, size_t len)
{
    struct atp__sync_cmd *r = ctx;
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
    struct atp__sync_cmd *r = ctx;

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

/* The contract is in sync_int.h. */
int atp__sync_run(struct atp_session *s, const char *script, int stdin_fd,
                  struct atp__sync_cmd *r, int *code)
{
    static const char announce[] = "printf '\\036atp-pgid %s\\n' $$; ";
    static const char trailer[] = "; s=$?; printf '\\036atp-end\\n'; exit $s";
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
    int rc, group = p->abi_minor >= 2 &&
                    (atp_backend_caps(s->be) & ATP_CAP_GROUP_SIGNALS);

    s->n_exec++;
    snprintf(exec_id, sizeof(exec_id), "%s.%u", s->run_id, s->n_exec);
    if (script) {
        /* The group, for a kill from outside, announced as the core's
         * wrapper announces it for commands; the script in a subshell (it
         * may exec), and the end record after its output: the output is
         * known to be whole when the record ends it, however long it
         * trails the exit's news. */
        size_t len = strlen(announce) + strlen(script) + strlen(trailer) + 8;

        if ((announced = malloc(len)) == NULL)
            return atp__error(ATP_E_NOMEM, "out of memory");
        snprintf(announced, len, "%s( %s\n)%s", group ? announce : "", script,
                 trailer);
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
    plan.announce_pgid = script != NULL && group;
    plan.trailer = script != NULL;
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
    else if (!x.tail_is_end && !x.consumer_gone && !out.signal)
        /* The stream ended without the record the script writes last:
         * the transport lost what followed. */
        rc = atp__error(ATP_E_TRANSFER, "the transfer command's output "
                        "ended before the command's end: the transfer "
                        "may be incomplete");
    else
        *code = out.signal ? -1 : out.exit_code;
out:
    atp__exec_release(&x);
    free(announced);
    return rc;
}

/* Trim a message from the sandbox for one line of an error. */
const char *atp__sync_first_line(char *s)
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

#define MAX_WARNED (sizeof(((struct atp__sync_producer *)0)->warned) / \
                    sizeof(((struct atp__sync_producer *)0)->warned[0]))

/* Runs on the producer thread: keep the note for the caller's thread,
 * which alone delivers events. */
static void warn_entry(void *ctx, const char *path, const char *what)
{
    struct atp__sync_producer *pr = ctx;

    if (pr->warnings < MAX_WARNED)
        snprintf(pr->warned[pr->warnings], sizeof(pr->warned[0]), "%s: %s",
                 path, what);
    pr->warnings++;
}

/* After the join: one event per note kept, and a count of the rest. */
static void report_warnings(struct atp__sync_producer *pr)
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
    struct atp__sync_producer *pr = arg;

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
    struct atp__manifest *got;  /* what was written, the caller's */
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
                             c->got, &c->st);
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

/* Start a thread; 0 or ATP_E_IO. */
static int start_thread(pthread_t *t, void *(*fn)(void *), void *arg)
{
    int e = pthread_create(t, NULL, fn, arg);

    return e ? atp__error(ATP_E_IO, "cannot start a thread: %s",
                          strerror(e))
             : 0;
}

/* ---- the two directions ----------------------------------------------- */

int atp__sync_send(struct atp_session *s, const char *script,
                   struct atp__sync_producer *pr, struct atp__sync_cmd *r,
                   int *code)
{
    int rc, p[2] = {-1, -1};

    if (pipe2(p, O_CLOEXEC) != 0)
        return atp__error(ATP_E_IO, "pipe: %s", strerror(errno));
    pr->fd = p[1];
    pr->s = s;
    if ((rc = start_thread(&pr->thread, produce, pr)) != 0) {
        close(pr->fd);
        close(p[0]);
        return rc;
    }
    rc = atp__sync_run(s, script, p[0], r, code);
    close(p[0]); /* a producer still writing gets EPIPE */
    pthread_join(pr->thread, NULL);
    report_warnings(pr);
    return rc;
}

int atp__sync_receive(struct atp_session *s, const atp__buf *want,
                      struct atp__manifest *got, struct atp__tar_stats *st)
{
    const struct atp__settings *set = &s->be->cfg->set;
    struct consumer c;
    struct atp__sync_producer names;
    struct pull_io io;
    struct atp__sync_cmd r;
    int full = want == NULL, rc, code = 0, names_started = 0;
    int q[2] = {-1, -1}, n[2] = {-1, -1};

    memset(&c, 0, sizeof(c));
    memset(&names, 0, sizeof(names));
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
    c.got = got;
    if ((rc = start_thread(&c.thread, consume, &c)) != 0) {
        close(c.fd);
        goto out;
    }
    if (!full) {
        names.fd = n[1];
        n[1] = -1;
        names.data = want->p;
        names.data_len = want->len;
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
        rc = atp__sync_run(s, NULL, -1, &r, &code);
    else
        rc = atp__sync_run(s, full ? "exec tar -c -f - ."
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
    *st = c.st;
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
                        "(exit %d): %s%s", code, atp__sync_first_line(r.err),
                        code == 127 ? " (the sandbox needs tar)" : "");
        goto out;
    }
    if (code == 1) {
        /* GNU tar: some file changed or vanished while read. */
        atp_field f[1] = {{"message", ATP_FIELD_STR,
                           atp__sync_first_line(r.err), 0, 0.0}};

        atp__session_event(s, "transfer_warning", f, 1);
    }
out:
    if (q[0] >= 0)
        close(q[0]);
    if (q[1] >= 0)
        close(q[1]);
    if (n[0] >= 0)
        close(n[0]);
    if (n[1] >= 0)
        close(n[1]);
    return rc;
}
