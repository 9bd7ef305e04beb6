/*
 * plugins/docker/exec.c - running one command in a container.
 *
 * Two paths, one pump:
 *   - exec path (sessions): POST /containers/{id}/exec, then the exec's
 *     start request hijacked; the exit code from GET /exec/{id}/json.
 *   - run path (one-shot): the command is the container's own process;
 *     create, attach (hijacked) before start, start, and the exit code
 *     from a wait for the self-removing container's removal sent before
 *     the start (Docker), or from the container's state (Podman).  One
 *     container start, no idle process
 *     to kill afterwards and no log driver: the fastest sequence that
 *     keeps every guarantee (measured against logs?follow and against the
 *     exec path, bench/README.md).
 *
 * Every command runs under a small sh wrapper that first writes its
 * process group id on stdout, behind a marker this file strips, then execs
 * the command: a timeout or a cancel then kills exactly that group with a
 * second exec (`kill -s SIG -- -PGID`, as root), and the container and the
 * session stay usable.  The run path's wrapper also starts a watchdog
 * that kills the group when the session's TTL runs out, should atp die.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dk.h"

#define MARK "\036atp-pgid "
#define MARK_LEN (sizeof(MARK) - 1)
#define SNIFF_MAX 40
#define READ_CHUNK 65536
#define READS_PER_WAKE 16         /* then look at the clocks again */
#define GIVE_UP_NS 5000000000LL   /* after SIGKILL, wait this for the end */

/* $1: TTL seconds (0: no watchdog); the rest: the command. */
static const char wrapper[] =
    "printf '\\036atp-pgid %s\\n' $$; t=$1; shift; "
    "if [ \"$t\" -gt 0 ]; then (sleep \"$t\"; kill -s KILL -- -$$ || "
    "kill -s KILL -$$) </dev/null >/dev/null 2>&1 & fi; exec \"$@\"";

/* $0: signal name, $1: group id.  busybox wants no "--", dash needs it. */
static const char killer[] =
    "kill -s \"$0\" -- -\"$1\" 2>/dev/null || kill -s \"$0\" -\"$1\"";

const char **dk_wrap_argv(const char *const *argv, long long ttl_s)
{
    size_t n = 0, i, head;
    const char **v;
    char *ttl;

    while (argv && argv[n])
        n++;
    /* The pointers, then the TTL's text, in one block. */
    head = (n + 6) * sizeof(*v);
    v = calloc(1, head + 32);
    if (v == NULL)
        return NULL;
    ttl = (char *)v + head;
    snprintf(ttl, 32, "%lld", ttl_s > 0 ? ttl_s : 0);
    v[0] = "/bin/sh";
    v[1] = "-c";
    v[2] = wrapper;
    v[3] = "atp";
    v[4] = ttl;
    for (i = 0; i < n; i++)
        v[5 + i] = argv[i];
    v[5 + n] = NULL;
    return v;
}

struct run {
    atp_call *call;
    struct dk_session *s;
    const atp_exec_spec *spec;
    struct dk_hijack hj;
    struct dk_demux dm;
    char *buf;
    char eid[72];          /* exec path: the exec's id */
    int run_path;
    /* the marker */
    char sniff[SNIFF_MAX];
    size_t sniff_len;
    int sniffing;
    long pgid;
    /* stdin */
    int with_stdin, input_fd, input_eof;
    char in_buf[16384];
    size_t in_len, in_off;
    /* run path: the wait for the container's removal (its exit code) */
    struct dk_http wt;
    struct dk_resp wrs;
    char wt_path[128];
    int wt_init, waiting;
    /* the end */
    int eof, broken, consumer_gone;
    int timed_out, cancelled, term_pending, kill_sent;
    int64_t term_at, kill_at, host_deadline, give_up_at;
};

static int deliver(struct run *r, int stream, const void *buf, size_t len)
{
    if (r->consumer_gone || len == 0)
        return 0;
    if (dk_host->output(r->call, stream, buf, len) == ATP_E_CANCELLED)
        r->consumer_gone = 1;
    return 0;
}

/* Stdout's first bytes: the wrapper's marker, if it is there. */
static int sniff_stdout(struct run *r, const char *p, size_t len)
{
    while (len > 0 && r->sniffing) {
        char *nl;

        r->sniff[r->sniff_len++] = *p++;
        len--;
        if (r->sniff[0] != MARK[0] ||
            (r->sniff_len <= MARK_LEN &&
             r->sniff[r->sniff_len - 1] != MARK[r->sniff_len - 1])) {
            /* Not ours (the exec failed to start, say): pass it on. */
            r->sniffing = 0;
            deliver(r, ATP_STDOUT, r->sniff, r->sniff_len);
            break;
        }
        nl = memchr(r->sniff, '\n', r->sniff_len);
        if (nl) {
            *nl = '\0';
            r->pgid = strtol(r->sniff + MARK_LEN, NULL, 10);
            r->sniffing = 0;
            break;
        }
        if (r->sniff_len == sizeof(r->sniff)) {
            r->sniffing = 0;
            deliver(r, ATP_STDOUT, r->sniff, r->sniff_len);
        }
    }
    return deliver(r, ATP_STDOUT, p, len);
}

static int on_payload(void *ctx, int stream, const void *buf, size_t len)
{
    struct run *r = ctx;

    if (stream == ATP_STDOUT && r->sniffing)
        return sniff_stdout(r, buf, len);
    return deliver(r, stream, buf, len);
}

/* ---- signals ------------------------------------------------------------ */

/* Signal the command's process group with a second exec, as root. */
static int signal_group(struct run *r, const char *sig)
{
    struct dk_session *s = r->s;
    char pg[32], eid[72];
    const char *argv[] = {"/bin/sh", "-c", killer, sig, pg, NULL};
    int rc;

    snprintf(pg, sizeof(pg), "%ld", r->pgid);
    rc = dk_api_exec_create(&s->http, r->call, s->id, argv, NULL, "/", "0",
                            0, 1, eid);
    if (rc == 0)
        rc = dk_api_exec_start_detached(&s->http, r->call, eid);
    if (rc)
        dk_host->log(r->call, ATP_LOG_WARN, "sending SIG%s to the command "
                     "failed", sig);
    return rc;
}

/* Kill the command: its group, or the whole (one-shot) container. */
static void kill_command(struct run *r, int hard)
{
    struct dk_session *s = r->s;
    const char *sig = hard ? "KILL" : "TERM";

    if (r->run_path && hard) {
        dk_api_kill(&s->http, r->call, s->id, "SIGKILL");
        return;
    }
    if (r->pgid > 0 && signal_group(r, sig) == 0)
        return;
    if (!hard) {
        r->term_pending = r->pgid <= 0; /* when the marker arrives */
        return;
    }
    /* No group to aim at: the container has to go.  A session is then
     * dead, and says so at its next command. */
    dk_host->log(r->call, ATP_LOG_WARN, "the command's process group is "
                 "unknown: killing container %.12s", s->id);
    dk_api_kill(&s->http, r->call, s->id, "SIGKILL");
    s->dead = 1;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};

    nanosleep(&ts, NULL);
}

/* ---- the pump ----------------------------------------------------------- */

static void read_stream(struct run *r)
{
    int i;

    for (i = 0; i < READS_PER_WAKE && !r->eof; i++) {
        long n = dk_hijack_recv(&r->hj, r->buf, READ_CHUNK);
        int rc;

        if (n == DK_AGAIN)
            return;
        if (n <= 0) {
            r->eof = 1;
            r->broken = n < 0;
            return;
        }
        rc = dk_demux_feed(&r->dm, r->buf, (size_t)n, on_payload, r);
        if (rc == DK_DEMUX_EBADTYPE) {
            dk_host->log(r->call, ATP_LOG_WARN, "the docker daemon sent a "
                         "frame of unknown type %d: stream dropped",
                         r->dm.bad_type);
            r->eof = 1;
            r->broken = 1;
            return;
        }
    }
}

static void feed_stdin(struct run *r, short sock_rev, short in_rev)
{
    if (r->in_off == r->in_len && !r->input_eof &&
        (in_rev & (POLLIN | POLLHUP | POLLERR | POLLNVAL))) {
        long n = dk_host->input(r->call, r->in_buf, sizeof(r->in_buf));

        if (n <= 0)
            r->input_eof = 1;
        r->in_len = n > 0 ? (size_t)n : 0;
        r->in_off = 0;
    }
    if (r->in_off < r->in_len && (sock_rev & (POLLOUT | POLLERR | POLLHUP))) {
        long w = dk_hijack_send(&r->hj, r->in_buf + r->in_off,
                                r->in_len - r->in_off);

        if (w > 0) {
            r->in_off += (size_t)w;
        } else if (w != DK_AGAIN) {
            /* The command is gone or closed its stdin: drop the rest. */
            r->in_off = r->in_len = 0;
            r->input_eof = 1;
        }
    }
    if (r->input_eof && r->in_off == r->in_len)
        dk_hijack_shut_wr(&r->hj);
}

static int64_t earliest(int64_t a, int64_t b)
{
    if (a == 0)
        return b;
    if (b == 0)
        return a;
    return a < b ? a : b;
}

/* Check the clocks and the cancel; act on what is due. */
static void on_time(struct run *r)
{
    int64_t now = dk_host->now_ns(), grace;

    if (r->spec == NULL)
        return; /* a setup command: no budget of its own */
    grace = (r->spec->grace_ms > 0 ? r->spec->grace_ms : 1) * 1000000;

    if (!r->cancelled && !r->kill_sent &&
        (dk_host->cancelled(r->call) || r->consumer_gone)) {
        /* Stop at once: whoever cancels wants the sandbox back. */
        r->cancelled = 1;
        kill_command(r, 1);
        r->kill_sent = 1;
        r->give_up_at = now + GIVE_UP_NS;
    }
    if (r->term_at && now >= r->term_at && !r->timed_out) {
        r->timed_out = 1;
        kill_command(r, 0);
        r->kill_at = now + grace;
    }
    if (r->term_pending && r->pgid > 0) {
        r->term_pending = 0;
        signal_group(r, "TERM");
    }
    if (r->kill_at && now >= r->kill_at && !r->kill_sent) {
        kill_command(r, 1);
        r->kill_sent = 1;
        r->give_up_at = now + GIVE_UP_NS;
    }
    if (r->host_deadline && now >= r->host_deadline && !r->kill_sent) {
        /* The host backstop: budget, grace and drain all spent. */
        r->timed_out = 1;
        kill_command(r, 1);
        r->kill_sent = 1;
        r->give_up_at = now + GIVE_UP_NS / 2;
    }
}

static int pump(struct run *r)
{
    int cancel_fd = dk_host->cancel_fd(r->call);

    r->buf = malloc(READ_CHUNK);
    if (r->buf == NULL)
        return dk_host->set_error(r->call, ATP_E_NOMEM, "out of memory");
    if (r->spec->timeout_ms > 0)
        r->term_at = dk_host->now_ns() + r->spec->timeout_ms * 1000000;
    r->host_deadline = dk_host->deadline_ns(r->call);
    if (r->with_stdin)
        r->input_fd = dk_host->input_fd(r->call);
    read_stream(r); /* bytes that came with the response head */
    while (!r->eof) {
        struct pollfd p[3];
        int n = 0, i_in = -1;
        int64_t now, next, wait;

        on_time(r);
        now = dk_host->now_ns();
        if (r->give_up_at && now >= r->give_up_at)
            break;
        p[n].fd = r->hj.fd;
        p[n].events = POLLIN;
        if (r->with_stdin && r->in_off < r->in_len)
            p[n].events |= POLLOUT;
        p[n++].revents = 0;
        if (r->with_stdin && !r->input_eof && r->in_off == r->in_len &&
            r->input_fd >= 0) {
            i_in = n;
            p[n].fd = r->input_fd;
            p[n].events = POLLIN;
            p[n++].revents = 0;
        }
        if (cancel_fd >= 0 && !r->cancelled) {
            p[n].fd = cancel_fd;
            p[n].events = POLLIN;
            p[n++].revents = 0;
        }
        next = r->timed_out ? 0 : r->term_at;
        next = earliest(next, r->kill_sent ? 0 : r->kill_at);
        next = earliest(next, r->kill_sent ? 0 : r->host_deadline);
        next = earliest(next, r->give_up_at);
        wait = next ? (next > now ? (next - now + 999999) / 1000000 : 0)
                    : 1000;
        if (wait > 1000)
            wait = 1000;
        if (r->with_stdin && r->input_fd < 0 && !r->input_eof)
            wait = 0; /* no descriptor to wait on: read input directly */
        if (poll(p, (nfds_t)n, (int)wait) < 0 && errno != EINTR)
            return dk_host->set_error(r->call, ATP_E_BACKEND, "poll: %s",
                                      strerror(errno));
        if (p[0].revents & (POLLIN | POLLHUP | POLLERR))
            read_stream(r);
        if (r->with_stdin && !r->hj.wr_closed)
            feed_stdin(r, p[0].revents,
                       i_in >= 0 ? p[i_in].revents
                                 : (r->input_fd < 0 ? POLLIN : 0));
    }
    if (r->sniffing && r->sniff_len)
        deliver(r, ATP_STDOUT, r->sniff, r->sniff_len);
    r->sniffing = 0;
    return 0;
}

/* ---- the two paths ------------------------------------------------------ */

/*
 * After the stream: the exit code, once the daemon has recorded the end.
 * Usually at once; but a command that closed its stdout and stderr runs
 * on, so the budget, the cancel and the backstop still apply.  Sets
 * *@ended to 0 when the command could not be seen to end.
 */
static int await_removal(struct run *r, int *code, int *ended);

static int await_exit(struct run *r, int *code, int *ended)
{
    long pause = 1;
    int running = 1, rc;

    if (r->waiting)
        return await_removal(r, code, ended);
    *ended = 1;
    for (;;) {
        if (r->run_path)
            rc = dk_api_container_state(&r->s->http, r->call, r->s->id,
                                        &running, code);
        else
            rc = dk_api_exec_inspect(&r->s->http, r->call, r->eid, &running,
                                     code);
        if (rc || !running)
            return rc;
        on_time(r);
        if (r->give_up_at && dk_host->now_ns() >= r->give_up_at) {
            *ended = 0;
            return 0;
        }
        sleep_ms(pause);
        if (pause < 100)
            pause *= 2;
    }
}

/*
 * The run path of a self-removing container: the wait for its removal,
 * sent before it starts (so that its end cannot be missed), answers with
 * its exit code once the daemon has removed it.
 */
static int send_wait(struct run *r)
{
    struct dk_session *s = r->s;
    struct dk_req rq = {0};
    int pending = 0, rc;

    if (dk_http_init(&r->wt, s->http.ep, s->http.daemon,
                     s->http.api_timeout_ms) != 0)
        return dk_host->set_error(r->call, ATP_E_NOMEM, "out of memory");
    r->wt_init = 1;
    snprintf(r->wt_path, sizeof(r->wt_path),
             "/containers/%s/wait?condition=removed", s->id);
    rq.method = "POST";
    rq.path = r->wt_path;
    rq.uncancellable = 1; /* a cancel kills the command: its end follows */
    /* The TTL's watchdog ends the command; the loop in await_removal()
     * keeps the budget and the cancel meanwhile. */
    rq.timeout_ms = ((s->ttl_s > 0 ? s->ttl_s : 86400) + 60) * 1000LL;
    rc = dk_http_begin(&r->wt, r->call, &rq, &r->wrs, &pending);
    if (rc)
        return rc;
    if (!pending || r->wrs.status != 200)
        return dk_http_fail(r->call, ATP_E_BACKEND, &r->wrs, "wait for the "
                            "container", NULL);
    r->waiting = 1;
    return 0;
}

/* The end of a self-removing container: as await_exit(). */
static int await_removal(struct run *r, int *code, int *ended)
{
    struct dk_session *s = r->s;
    int done = 0, removed = 0, rc;

    *ended = 1;
    for (;;) {
        rc = dk_http_poll(&r->wt, r->call, 100, &done);
        if (rc || done)
            break;
        on_time(r);
        if (r->give_up_at && dk_host->now_ns() >= r->give_up_at) {
            *ended = 0;
            return 0;
        }
    }
    r->waiting = 0;
    if (rc == 0)
        rc = dk_api_wait_result(r->call, &r->wrs, code, &removed);
    if (rc == 0 && removed) {
        /* Gone with its end: nothing left to remove at close. */
        dk_host->resource_removed(r->call, s->id);
        s->id[0] = '\0';
    }
    return rc;
}

static int start_exec_path(struct run *r, const char *const *wrapped)
{
    struct dk_session *s = r->s;
    struct dk_resp rs;
    char path[128];
    int rc;

    if (s->dead)
        return dk_host->set_error(r->call, ATP_E_SANDBOX_DEAD, "the session's "
                                  "container %.12s was killed: start a new "
                                  "session", s->id);
    rc = dk_api_exec_create(&s->http, r->call, s->id, wrapped,
                            r->spec->env, r->spec->cwd ? r->spec->cwd
                                                       : s->sb_workdir,
                            NULL, r->with_stdin, 0, r->eid);
    if (rc)
        return rc;
    snprintf(path, sizeof(path), "/exec/%s/start", r->eid);
    rc = dk_hijack_open(&r->hj, &s->http, r->call, path,
                        "{\"Detach\":false,\"Tty\":false}", &rs);
    if (rc == 0 && rs.status != 101 && rs.status != 200)
        rc = dk_http_fail(r->call, rs.status == 404 || rs.status == 409
                                       ? ATP_E_SANDBOX_DEAD
                                       : ATP_E_BACKEND,
                          &rs, "start the command", NULL);
    return rc;
}

static int start_run_path(struct run *r, const char *const *wrapped)
{
    struct dk_session *s = r->s;
    struct dk_resp rs;
    char path[200];
    int rc;

    if (s->id[0] && (rc = dk_container_remove(r->call, s)) != 0)
        return rc; /* a one-shot session asked for a second command */
    rc = dk_container_create(r->call, s, wrapped, r->spec->env,
                             r->spec->cwd, r->with_stdin);
    if (rc)
        return rc;
    if (s->self_removing && (rc = send_wait(r)) != 0)
        return rc;
    snprintf(path, sizeof(path), "/containers/%s/attach?stream=1&stdout=1"
             "&stderr=1%s", s->id, r->with_stdin ? "&stdin=1" : "");
    rc = dk_hijack_open(&r->hj, &s->http, r->call, path, NULL, &rs);
    if (rc == 0 && rs.status != 101 && rs.status != 200)
        /* Podman prepares the container here: a bad user fails now. */
        rc = dk_http_fail(r->call, ATP_E_PROVISION, &rs, "attach to the "
                          "container", NULL);
    if (rc == 0)
        rc = dk_api_start(&s->http, r->call, s->id, NULL, 0);
    return rc;
}

int dk_exec(atp_call *call, void *session, const atp_exec_spec *spec,
            atp_exec_outcome *out)
{
    struct dk_session *s = session;
    const char **wrapped = NULL;
    struct run r;
    int rc, code = -1, ended = 0;

    if (s->closed)
        return dk_host->set_error(call, ATP_E_INVAL, "session is closed");
    if (spec->argv == NULL || spec->argv[0] == NULL)
        return dk_host->set_error(call, ATP_E_INVAL, "empty argv");
    memset(&r, 0, sizeof(r));
    r.call = call;
    r.s = s;
    r.spec = spec;
    r.hj.fd = -1;
    r.input_fd = -1;
    r.sniffing = 1;
    r.with_stdin = (spec->flags & ATP_EXEC_STDIN) != 0;
    r.run_path = s->one_shot;
    dk_demux_init(&r.dm);
    wrapped = dk_wrap_argv(spec->argv, r.run_path ? s->ttl_s : 0);
    if (wrapped == NULL)
        return dk_host->set_error(call, ATP_E_NOMEM, "out of memory");
    rc = r.run_path ? start_run_path(&r, wrapped)
                    : start_exec_path(&r, wrapped);
    free(wrapped);
    if (rc)
        goto out;
    rc = pump(&r);
    if (rc)
        goto out;
    dk_hijack_close(&r.hj);
    if (r.eof && (rc = await_exit(&r, &code, &ended)) != 0)
        goto out;
    if (!r.eof || !ended) {
        /* Killed, and still no end after the grace: say what we know. */
        out->exit_code = -1;
        out->signal = SIGKILL;
    } else if (!r.timed_out && !r.cancelled && (code == 137 || code == 143) &&
               dk_http_probe(&s->be->ep, 2000) != 0) {
        /* Killed, not by us, and the daemon takes no new connections: it
         * is shutting down and stopped the container. */
        rc = dk_host->set_error(call, ATP_E_BACKEND, "the docker daemon at "
                                "%s is shutting down: it stopped the "
                                "container while the command ran (exit "
                                "%d)", s->be->ep.display, code);
        goto out;
    } else {
        out->exit_code = code;
        out->signal = 0;
    }
    if (r.broken || (!r.timed_out && !r.cancelled &&
                     dk_demux_end(&r.dm) != 0))
        dk_host->log(call, ATP_LOG_WARN, "the output stream of the command "
                     "ended in the middle of a frame: some output may be "
                     "lost");
    out->flags = (r.timed_out ? ATP_OUTCOME_TIMED_OUT : 0) |
                 (r.cancelled ? ATP_OUTCOME_CANCELLED : 0);
out:
    if (rc && rc != ATP_E_CANCELLED && r.eof &&
        (r.broken || rc == ATP_E_SANDBOX_DEAD) &&
        dk_http_probe(&s->be->ep, 2000) != 0)
        rc = dk_host->set_error(call, ATP_E_BACKEND, "the docker daemon at "
                                "%s went away while the command ran: is "
                                "dockerd still running?",
                                s->be->ep.display);
    dk_hijack_close(&r.hj);
    if (r.wt_init) {
        dk_http_free(&r.wt);
        dk_resp_free(&r.wrs);
    }
    free(r.buf);
    return rc;
}

int dk_exec_root(atp_call *call, struct dk_session *s,
                 const char *const *argv, int *code)
{
    int64_t until = dk_host->now_ns() + s->http.api_timeout_ms * 1000000;
    struct dk_hijack hj;
    struct dk_resp rs;
    struct run r;
    char path[128], buf[4096];
    int rc;

    /* Attached, not detached: podman 4.3 reports a detached exec as
     * running for ever. */
    memset(&r, 0, sizeof(r));
    r.call = call;
    r.s = s;
    rc = dk_api_exec_create(&s->http, call, s->id, argv, NULL, "/", "0", 0,
                            0, r.eid);
    if (rc)
        return rc;
    snprintf(path, sizeof(path), "/exec/%s/start", r.eid);
    rc = dk_hijack_open(&hj, &s->http, call, path,
                        "{\"Detach\":false,\"Tty\":false}", &rs);
    if (rc == 0 && rs.status != 101 && rs.status != 200)
        rc = dk_http_fail(call, ATP_E_BACKEND, &rs, "start a setup command",
                          NULL);
    while (rc == 0) {
        long n = dk_hijack_recv(&hj, buf, sizeof(buf));
        struct pollfd p = {hj.fd, POLLIN, 0};

        if (n == 0 || (n < 0 && n != DK_AGAIN))
            break; /* the end (its output is of no interest) */
        if (n > 0)
            continue;
        if (dk_host->cancelled(call))
            rc = dk_host->set_error(call, ATP_E_CANCELLED, "cancelled");
        else if (dk_host->now_ns() >= until)
            rc = dk_host->set_error(call, ATP_E_TIMEOUT, "a setup command "
                                    "in container %.12s did not finish",
                                    s->id);
        else
            poll(&p, 1, 200);
    }
    dk_hijack_close(&hj);
    if (rc == 0) {
        int ended;

        r.give_up_at = until;
        rc = await_exit(&r, code, &ended);
        if (rc == 0 && !ended)
            rc = dk_host->set_error(call, ATP_E_TIMEOUT, "a setup command "
                                    "in container %.12s did not finish",
                                    s->id);
    }
    return rc;
}
