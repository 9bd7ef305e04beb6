/*
 * plugins/modal/exec.c - one command through the sandbox's
 * TaskCommandRouter (modal-protocol.md §3.1).
 *
 * TaskExecStart with an exec id of our choosing (the start is idempotent
 * under retries), stdout and stderr piped, the command's whole
 * environment.  Then, side by side on one connection: a
 * TaskExecStdioRead stream per descriptor, its bytes handed to
 * host->output() as they arrive and, when a stream drops, re-opened at
 * the byte offset already received, so nothing is lost or repeated;
 * TaskExecWait for the exit code or signal; and stdin written with
 * TaskExecStdinWrite as host->stdin_peek() offers it, then EOF.  A
 * command given no stdin reads /dev/null (the core's wrapper sees to it)
 * and its pipe gets EOF at once; a write the router refuses while the
 * command still reads its stdin fails the exec, since the command would
 * wait for it forever.
 *
 * The output ends when the router ends both streams with an OK status
 * after the last byte (as Modal's own clients read it), however long
 * after the exit that is.  The exit starts the core's drain: its KILL
 * ends what still holds the pipes (sent once the group is announced,
 * the announcement being on its way in stdout), and its STOP leaves the
 * streams to run on while bytes still come.  Only a stream silent for
 * drain_ms after that is given up on, and the outcome says which stream
 * may be incomplete (ATP_OUTCOME_STDOUT_CUT / _STDERR_CUT).
 *
 * When to signal the command is the core's kill schedule
 * (host->exec_due()); how is this file's: a second TaskExecStart of the
 * command host->group_kill_argv() gives, aimed at the process group the
 * core's wrapper announced.  When that cannot work (the group is not
 * known, the router does not answer) a KILL ends the sandbox.  A router
 * that stops answering, or a sandbox that died (SandboxWait says it
 * finished), ends the exec with ATP_E_TIMEOUT or ATP_E_SANDBOX_DEAD.
 */
#include "config.h"

#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "modal.h"

typedef Modal__TaskCommandRouter__TaskExecStartRequest start_req;
typedef Modal__TaskCommandRouter__TaskExecStartRequest__EnvEntry env_entry;
typedef Modal__TaskCommandRouter__TaskExecStdioReadRequest read_req;
typedef Modal__TaskCommandRouter__TaskExecStdioReadResponse read_resp;
typedef Modal__TaskCommandRouter__TaskExecWaitRequest wait_req;
typedef Modal__TaskCommandRouter__TaskExecWaitResponse wait_resp;
typedef Modal__TaskCommandRouter__TaskExecStdinWriteRequest stdin_req;
typedef Modal__TaskCommandRouter__TaskExecStdinStatusRequest status_req;
typedef Modal__TaskCommandRouter__TaskExecStdinStatusResponse status_resp;
typedef Modal__TaskCommandRouter__TaskExecPollRequest poll_req;
typedef Modal__TaskCommandRouter__TaskExecPollResponse poll_resp;

#define WAIT_CODE MODAL_TCR(TASK_EXEC_WAIT_RESPONSE__EXIT_STATUS_CODE)
#define WAIT_SIGNAL MODAL_TCR(TASK_EXEC_WAIT_RESPONSE__EXIT_STATUS_SIGNAL)

#define ROUTER "/modal.task_command_router.TaskCommandRouter/"
#define STDIN_CHUNK (1024 * 1024) /* bytes per TaskExecStdinWrite */
#define STREAM_RETRIES 10         /* consecutive, reset by data */
#define WAIT_CALL_MS 60000        /* one TaskExecWait long-poll */
#define WAIT_RETRY_MS 1000
#define CHECK_MS 10000            /* a liveness check */
#define TTL_SLACK_MS 30000        /* past the TTL, the sandbox is gone */

struct exec;

struct stream {
    struct exec *x;
    int fd;          /* the router's descriptor: 0 stdout, 1 stderr */
    int out;         /* ATP_STDOUT, ATP_STDERR */
    uint64_t offset; /* bytes received */
    int eof;
    int failures;    /* consecutive failed attempts */
    modal__status last; /* why the last attempt failed */
    int refreshed;   /* JWT renewed since the last data */
    int64_t retry_at;
    modal__rpc *k;
};

struct exec {
    atp_call *call;
    struct modal_session *s;
    const atp_exec_spec *spec;
    modal__ctl ctl;
    char exec_id[37];
    struct stream io[2];
    /* TaskExecWait */
    modal__rpc *wk;
    unsigned char *wmsg;
    size_t wlen;
    int wn, exited, code, sig, wait_refreshed;
    int64_t wait_at;
    /* stdin: in_len bytes of the core's buffer on their way */
    int input_fd;
    size_t in_len;
    uint64_t in_off;
    int in_eof, in_done, in_failures, in_refreshed, in_sent_eof;
    int64_t in_at;
    modal__rpc *ik;
    /* the schedule's signals: second execs of the group's kill */
    modal__rpc *kill[2];
    int n_kill, term_pending, kill_pending, stopped, signalled;
    int term_slot; /* 1 + the slot of the TERM's request, 0: none */
    /* after the schedule's STOP, the output still coming in */
    int tail;
    int64_t tail_at, last_data;
    /* how it is going */
    int64_t checked_at; /* the last liveness check */
    int timed_out, failed;
    int ended_sandbox; /* give_up() terminated the sandbox */
    char fail_what[64];
    modal__status fail_st;
};

static void fail_with(struct exec *x, const char *what,
                      const modal__status *st)
{
    if (x->failed)
        return;
    x->failed = 1;
    modal__copy(x->fail_what, sizeof(x->fail_what), what);
    x->fail_st = *st;
}

/*
 * Is the sandbox still there?  (At most one SandboxWait a second; a
 * failed check counts as alive.)  The alive() hook of the exec's calls.
 */
static int still_alive(void *ctx)
{
    struct exec *x = ctx;
    modal__ctl ctl = modal__ctl_within(&x->ctl, CHECK_MS, 1);
    int64_t now = modal__host->now_ns();
    char why[256];

    if (x->checked_at && now - x->checked_at < 1000000000LL)
        return 1;
    x->checked_at = now;
    return modal__sandbox_finished(x->s, &ctl, why, sizeof(why)) != 1;
}

/* Is the sandbox gone?  Then fail the exec; 1 when it is. */
static int gone(struct exec *x, const char *what, const modal__status *st)
{
    if (still_alive(x))
        return 0;
    fail_with(x, what, st);
    return 1;
}

/* ---- the output streams ------------------------------------------------ */

static int on_chunk(void *ctx, const uint8_t *buf, size_t len)
{
    struct stream *sr = ctx;
    struct exec *x = sr->x;
    read_resp *r =
        modal__task_command_router__task_exec_stdio_read_response__unpack(
            NULL, len, buf);

    if (r == NULL)
        return ATP_E_BACKEND;
    if (r->data.len > 0) {
        /* A consumer that wants no more is a cancel: exec_due() says so. */
        modal__host->output(x->call, sr->out, r->data.data, r->data.len);
        sr->offset += r->data.len;
        sr->failures = 0;
        sr->refreshed = 0;
        x->last_data = modal__host->now_ns();
    }
    modal__task_command_router__task_exec_stdio_read_response__free_unpacked(
        r, NULL);
    return 0;
}

/* The cap of a call that may last as long as the exec. */
static int64_t left_ms(const struct exec *x)
{
    int64_t left;

    if (x->ctl.deadline_ns == 0)
        return 0;
    left = (x->ctl.deadline_ns - modal__host->now_ns()) / 1000000;
    return left > 0 ? left : 1;
}

static void router_req(struct exec *x, modal__rpc_req *r, const char *path,
                       const char **md, const ProtobufCMessage *msg)
{
    md[0] = modal__router_auth(x->s);
    md[1] = NULL;
    memset(r, 0, sizeof(*r));
    r->ep = &x->s->router;
    r->path = path;
    r->metadata = md;
    r->msg = msg;
}

static void stream_open(struct exec *x, struct stream *sr)
{
    read_req req = MODAL_TCR(TASK_EXEC_STDIO_READ_REQUEST__INIT);
    modal__rpc_req r;
    const char *md[2];
    modal__status st;

    req.task_id = x->s->task_id;
    req.exec_id = x->exec_id;
    req.offset = sr->offset;
    req.file_descriptor =
        (Modal__TaskCommandRouter__TaskExecStdioFileDescriptor)sr->fd;
    router_req(x, &r, ROUTER "TaskExecStdioRead", md, &req.base);
    r.timeout_ms = left_ms(x);
    r.wire_timeout = x->spec->timeout_ms > 0; /* as the SDK: with a budget */
    r.on_msg = on_chunk;
    r.ctx = sr;
    if (modal__rpc_start(x->s->conn, &r, &sr->k) != 0) {
        st.code = MODAL_INTERNAL;
        snprintf(st.message, sizeof(st.message), "cannot start a call");
        fail_with(x, "reading the output", &st);
    }
}

/* Renew the router's JWT once per failure streak; 1 when renewed. */
static int refresh_once(struct exec *x, int *flag, const modal__status *st)
{
    modal__status rst;

    if (st->code != MODAL_UNAUTHENTICATED || *flag)
        return 0;
    *flag = 1;
    if (modal__router_refresh(x->s, &x->ctl, &rst) != 0) {
        fail_with(x, "renewing the router token", &rst);
        return 0;
    }
    return 1;
}

static void stream_ended(struct exec *x, struct stream *sr, int64_t now)
{
    modal__status st = *modal__rpc_status(sr->k);

    modal__rpc_free(sr->k);
    sr->k = NULL;
    if (st.code == MODAL_OK) {
        sr->eof = 1;
    } else if (refresh_once(x, &sr->refreshed, &st)) {
        sr->retry_at = now;
    } else if (modal__retryable(st.code) && sr->failures < STREAM_RETRIES &&
               (sr->failures < 2 || !gone(x, "reading the output", &st))) {
        /* Dropped: re-open where it stopped, 10 ms doubling. */
        sr->retry_at = now + (10LL << sr->failures) * 1000000;
        sr->failures++;
        sr->last = st;
        modal__host->log(x->call, ATP_LOG_DEBUG, "%s stream of exec %s "
                         "dropped at byte %llu (%s: %s); resuming",
                         sr->out == ATP_STDOUT ? "stdout" : "stderr",
                         x->exec_id, (unsigned long long)sr->offset,
                         modal__code_name(st.code), st.message);
    } else {
        fail_with(x, "reading the output", &st);
    }
}

/* ---- the exit status ----------------------------------------------------- */

static int on_wait(void *ctx, const uint8_t *buf, size_t len)
{
    struct exec *x = ctx;

    if (x->wn++ > 0)
        return ATP_E_BACKEND;
    x->wmsg = malloc(len ? len : 1);
    if (x->wmsg == NULL)
        return ATP_E_NOMEM;
    memcpy(x->wmsg, buf, len);
    x->wlen = len;
    return 0;
}

static void wait_open(struct exec *x)
{
    wait_req req = MODAL_TCR(TASK_EXEC_WAIT_REQUEST__INIT);
    modal__rpc_req r;
    const char *md[2];
    modal__status st;
    int64_t left = left_ms(x);

    req.task_id = x->s->task_id;
    req.exec_id = x->exec_id;
    router_req(x, &r, ROUTER "TaskExecWait", md, &req.base);
    r.timeout_ms = left && left < WAIT_CALL_MS ? left : WAIT_CALL_MS;
    r.wire_timeout = 1;
    r.on_msg = on_wait;
    r.ctx = x;
    free(x->wmsg);
    x->wmsg = NULL;
    x->wn = 0;
    if (modal__rpc_start(x->s->conn, &r, &x->wk) != 0) {
        st.code = MODAL_INTERNAL;
        snprintf(st.message, sizeof(st.message), "cannot start a call");
        fail_with(x, "waiting for the command", &st);
    }
}

static void wait_ended(struct exec *x, int64_t now)
{
    modal__status st = *modal__rpc_status(x->wk);
    wait_resp *w;

    modal__rpc_free(x->wk);
    x->wk = NULL;
    if (st.code == MODAL_OK) {
        w = x->wn != 1 ? NULL
                       : (wait_resp *)protobuf_c_message_unpack(
                             MODAL_TCR_DESC(task_exec_wait_response), NULL,
                             x->wlen, x->wmsg);
        /* What a process can end with, as the ABI passes it on: an
         * exit code 0-255, or a signal 1-64 (0 would read as success). */
        if (w && w->exit_status_case == WAIT_CODE && w->code >= 0 &&
            w->code <= 255) {
            x->exited = 1;
            x->code = w->code;
        } else if (w && w->exit_status_case == WAIT_SIGNAL &&
                   w->signal >= 1 && w->signal <= 64) {
            x->exited = 1;
            x->sig = w->signal;
        } else {
            st.code = MODAL_INTERNAL;
            snprintf(st.message, sizeof(st.message),
                     "the router sent no usable exit status");
            fail_with(x, "waiting for the command", &st);
        }
        if (w)
            protobuf_c_message_free_unpacked(&w->base, NULL);
    } else if (st.code == MODAL_DEADLINE_EXCEEDED) {
        x->wait_at = now; /* the long-poll ran out: ask again */
    } else if (refresh_once(x, &x->wait_refreshed, &st)) {
        x->wait_at = now;
    } else if (modal__retryable(st.code)) {
        if (!gone(x, "waiting for the command", &st))
            x->wait_at = now + WAIT_RETRY_MS * 1000000LL;
    } else {
        fail_with(x, "waiting for the command", &st);
    }
}

/* ---- stdin --------------------------------------------------------------- */

/* What of stdin is ready to go: 0 when nothing (yet), or at its end. */
static void take_input(struct exec *x, const void **data)
{
    long n = modal__host->stdin_peek(x->call, data, &x->in_eof);

    x->in_len = n > 0 ? (size_t)n : 0;
    if (x->in_len > STDIN_CHUNK)
        x->in_len = STDIN_CHUNK;
    if (n < 0)
        x->in_eof = 1; /* it failed: close the command's stdin */
}

static void stdin_send(struct exec *x, const void *data)
{
    stdin_req req = MODAL_TCR(TASK_EXEC_STDIN_WRITE_REQUEST__INIT);
    modal__rpc_req r;
    const char *md[2];
    modal__status st;

    req.task_id = x->s->task_id;
    req.exec_id = x->exec_id;
    req.offset = x->in_off;
    req.data.data = (uint8_t *)data;
    req.data.len = x->in_len;
    req.eof = x->in_eof;
    router_req(x, &r, ROUTER "TaskExecStdinWrite", md, &req.base);
    r.timeout_ms = x->s->be->call_timeout_ms;
    x->in_sent_eof = x->in_eof;
    if (modal__rpc_start(x->s->conn, &r, &x->ik) != 0) {
        st.code = MODAL_INTERNAL;
        snprintf(st.message, sizeof(st.message), "cannot start a call");
        fail_with(x, "writing stdin", &st);
    }
}

/*
 * The router refused a write: is that because nothing reads stdin any
 * more (the command closed it, or ended), as a pipe would say EPIPE?
 * TaskExecStdinStatus says whether the router closed it, TaskExecPoll
 * whether the command ended; neither answering counts as no.
 */
static int stdin_unread(struct exec *x)
{
    modal__ctl ctl = modal__ctl_within(&x->ctl, CHECK_MS, 1);
    status_req sq = MODAL_TCR(TASK_EXEC_STDIN_STATUS_REQUEST__INIT);
    poll_req pq = MODAL_TCR(TASK_EXEC_POLL_REQUEST__INIT);
    status_resp *sr = NULL;
    poll_resp *pr = NULL;
    modal__status st;
    int unread = x->exited;

    sq.task_id = pq.task_id = x->s->task_id;
    sq.exec_id = pq.exec_id = x->exec_id;
    if (!unread &&
        modal__router_call(x->s, &ctl, "TaskExecStdinStatus", &sq.base,
                           MODAL_TCR_DESC(task_exec_stdin_status_response),
                           (ProtobufCMessage **)&sr, &st) == 0) {
        unread = sr->closed;
        protobuf_c_message_free_unpacked(&sr->base, NULL);
    }
    if (!unread &&
        modal__router_call(x->s, &ctl, "TaskExecPoll", &pq.base,
                           MODAL_TCR_DESC(task_exec_poll_response),
                           (ProtobufCMessage **)&pr, &st) == 0) {
        unread = pr->exit_status_case !=
                 MODAL_TCR(TASK_EXEC_POLL_RESPONSE__EXIT_STATUS__NOT_SET);
        protobuf_c_message_free_unpacked(&pr->base, NULL);
    }
    return unread;
}

static void stdin_ended(struct exec *x, int64_t now)
{
    modal__status st = *modal__rpc_status(x->ik);

    modal__rpc_free(x->ik);
    x->ik = NULL;
    if (st.code == MODAL_OK) {
        modal__host->stdin_consume(x->call, x->in_len);
        x->in_off += x->in_len;
        x->in_len = 0;
        x->in_failures = 0;
        x->in_refreshed = 0;
        x->in_done = x->in_sent_eof;
    } else if (refresh_once(x, &x->in_refreshed, &st)) {
        x->in_at = now;
    } else if (modal__retryable(st.code) && x->in_failures < STREAM_RETRIES &&
               (x->in_failures < 2 || !gone(x, "writing stdin", &st))) {
        x->in_at = now + (10LL << x->in_failures) * 1000000;
        x->in_failures++;
    } else if (!(x->spec->flags & ATP_EXEC_STDIN)) {
        /* Nothing forwarded: the EOF only frees the router's pipe, and
         * the command reads /dev/null (the core's wrapper). */
        modal__host->log(x->call, ATP_LOG_DEBUG, "exec %s: the router "
                         "refused the EOF of an unused stdin (%s: %s)",
                         x->exec_id, modal__code_name(st.code), st.message);
        x->in_done = 1;
    } else if ((st.code == MODAL_FAILED_PRECONDITION ||
                st.code == MODAL_ABORTED) && stdin_unread(x)) {
        /* The command closed its stdin or exited: the rest is not
         * wanted (as a pipe would say EPIPE). */
        x->in_done = 1;
        x->in_len = 0;
    } else {
        /* Refused while the command still reads: it would wait forever
         * for what was refused. */
        modal__status why = st;

        snprintf(why.message, sizeof(why.message), "the router refused %s "
                 "while the command still reads its stdin (%s: %.300s)",
                 x->in_sent_eof ? "the end of input" : "input",
                 modal__code_name(st.code), st.message);
        fail_with(x, "writing stdin", &why);
    }
}

/* ---- starting ----------------------------------------------------------- */

static int start_exec(struct exec *x, modal__status *st)
{
    const atp_exec_spec *spec = x->spec;
    start_req req = MODAL_TCR(TASK_EXEC_START_REQUEST__INIT);
    env_entry *e = NULL, **ep = NULL;
    ProtobufCMessage *resp = NULL;
    size_t n = 0, i;
    int rc;

    while (spec->argv[req.n_command_args])
        req.n_command_args++;
    for (i = 0; spec->envp && spec->envp[i]; i++)
        ;
    e = calloc(i + 1, sizeof(*e));
    ep = calloc(i + 1, sizeof(*ep));
    if (e == NULL || ep == NULL) {
        free(e);
        free(ep);
        return ATP_E_NOMEM;
    }
    /* The command's whole environment, but for what the sandbox pins
     * (IS_SANDBOX, LEAN_NUM_THREADS: sandbox.c). */
    for (i = 0; spec->envp && spec->envp[i]; i++) {
        const char *kv = spec->envp[i], *eq = strchr(kv, '=');

        if (modal__pinned(x->s->be, kv))
            continue;
        modal__task_command_router__task_exec_start_request__env_entry__init(
            &e[n]);
        e[n].key = strndup(kv, eq ? (size_t)(eq - kv) : strlen(kv));
        e[n].value = (char *)(eq ? eq + 1 : "");
        ep[n] = &e[n];
        n++;
    }
    req.task_id = x->s->task_id;
    req.exec_id = x->exec_id;
    req.command_args = (char **)spec->argv;
    req.stdout_config =
        MODAL_TCR(TASK_EXEC_STDOUT_CONFIG__TASK_EXEC_STDOUT_CONFIG_PIPE);
    req.stderr_config =
        MODAL_TCR(TASK_EXEC_STDERR_CONFIG__TASK_EXEC_STDERR_CONFIG_PIPE);
    if (spec->timeout_ms > 0) {
        /* The router's own kill, a backstop behind the core's timeout. */
        req.opt_timeout_secs_case =
            MODAL_TCR(TASK_EXEC_START_REQUEST__OPT_TIMEOUT_SECS_TIMEOUT_SECS);
        req.timeout_secs = (uint32_t)((spec->timeout_ms + spec->grace_ms +
                                       spec->drain_ms + 999) / 1000 + 5);
    }
    req.opt_workdir_case =
        MODAL_TCR(TASK_EXEC_START_REQUEST__OPT_WORKDIR_WORKDIR);
    req.workdir = (char *)(spec->cwd ? spec->cwd : x->s->workdir);
    req.env = ep;
    req.n_env = n;
    rc = modal__router_call(
        x->s, &x->ctl, "TaskExecStart", &req.base,
        MODAL_TCR_DESC(task_exec_start_response),
        &resp, st);
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    for (i = 0; i < n; i++)
        free(e[i].key);
    free(e);
    free(ep);
    return rc;
}

/* ---- signals ------------------------------------------------------------ */

/*
 * Signal the command's group: a second exec of the core's kill command,
 * left to run while the loop goes on.  Returns 0 when it was sent, or
 * ATP_E_NOTFOUND while the group is not known.
 */
static int kill_exec(struct exec *x, int sig, modal__rpc **out)
{
    const char *const *argv = modal__host->group_kill_argv(x->call, sig);
    start_req req = MODAL_TCR(TASK_EXEC_START_REQUEST__INIT);
    modal__rpc_req r;
    const char *md[2];
    char id[37];

    if (argv == NULL)
        return ATP_E_NOTFOUND;
    while (argv[req.n_command_args])
        req.n_command_args++;
    modal__uuid4(id);
    req.task_id = x->s->task_id;
    req.exec_id = id;
    req.command_args = (char **)argv;
    req.stdout_config =
        MODAL_TCR(TASK_EXEC_STDOUT_CONFIG__TASK_EXEC_STDOUT_CONFIG_DEVNULL);
    req.stderr_config =
        MODAL_TCR(TASK_EXEC_STDERR_CONFIG__TASK_EXEC_STDERR_CONFIG_DEVNULL);
    req.opt_workdir_case =
        MODAL_TCR(TASK_EXEC_START_REQUEST__OPT_WORKDIR_WORKDIR);
    req.workdir = (char *)"/";
    router_req(x, &r, ROUTER "TaskExecStart", md, &req.base);
    r.timeout_ms = x->s->be->call_timeout_ms;
    return modal__rpc_start(x->s->conn, &r, out) == 0 ? 0 : ATP_E_BACKEND;
}

void modal__sweep_collect(struct modal_session *s)
{
    size_t i, n = 0;

    for (i = 0; i < s->n_sweep; i++) {
        if (modal__rpc_done(s->sweep[i]))
            modal__rpc_free(s->sweep[i]);
        else
            s->sweep[n++] = s->sweep[i];
    }
    s->n_sweep = n;
}

void modal__sweep_free(struct modal_session *s)
{
    while (s->n_sweep > 0)
        modal__rpc_free(s->sweep[--s->n_sweep]);
}

/* Send the kill of what the command of @x left behind, to run on. */
static void sweep_start(struct exec *x)
{
    struct modal_session *s = x->s;
    modal__rpc *k;

    modal__sweep_collect(s);
    if (s->n_sweep == MODAL_MAX_SWEEPS) {
        /* Unanswered through as many commands: give up the oldest. */
        modal__rpc_free(s->sweep[0]);
        memmove(s->sweep, s->sweep + 1, --s->n_sweep * sizeof(*s->sweep));
    }
    if (kill_exec(x, SIGKILL, &k) == 0 && k != NULL)
        s->sweep[s->n_sweep++] = k;
}

/* Stop waiting for the output.  A kill still waiting for the group
 * would never go: what holds the output then goes with the sandbox. */
static void give_up(struct exec *x)
{
    if (x->kill_pending) {
        modal__session_terminate(x->call, x->s, "the output of a command "
                                 "that exited did not end, and its process "
                                 "group was never announced");
        x->ended_sandbox = 1;
    }
    x->kill_pending = 0;
    x->stopped = 1;
}

/* Deliver what the schedule says, to the group or the whole sandbox. */
static void act(struct exec *x, int due)
{
    int slot = x->n_kill < 2 ? x->n_kill : 1;

    if (due == ATP_DUE_TERM || due == ATP_DUE_KILL)
        x->signalled = 1;
    if (due == ATP_DUE_TERM || due == ATP_DUE_KILL ||
        (due != ATP_DUE_STOP && x->term_pending &&
         modal__host->exec_pgid(x->call) > 0)) {
        /* A kill goes into @slot: what the last slot held (a TERM before
         * this KILL) is answered or moot by now. */
        modal__rpc_free(x->kill[slot]);
        x->kill[slot] = NULL;
    }
    if (due == ATP_DUE_TERM) {
        x->term_pending = kill_exec(x, SIGTERM, &x->kill[slot]) ==
                          ATP_E_NOTFOUND;
        if (!x->term_pending) {
            x->n_kill = slot + 1;
            x->term_slot = slot + 1;
        }
    } else if (due == ATP_DUE_KILL) {
        int rc = kill_exec(x, SIGKILL, &x->kill[slot]);

        x->term_pending = 0;
        if (rc == 0) {
            x->n_kill = slot + 1;
        } else if (rc == ATP_E_NOTFOUND && x->exited) {
            /* The drain's kill, for what holds the output after the
             * exit: the group is announced first thing on stdout, which
             * is on its way.  It goes out when the group is known. */
            x->kill_pending = 1;
        } else {
            /* Nothing finer to aim at: the sandbox goes, and with it
             * every process of the command. */
            modal__session_terminate(x->call, x->s, "a command was killed "
                                     "before its process group was known");
            x->stopped = 1;
        }
    } else if (due == ATP_DUE_STOP) {
        if (x->exited && !x->tail) {
            /* What the router still streams is output the command made
             * (its holders were killed, or the kill waits for the group
             * announced in it): read on while it comes. */
            x->tail = 1;
            x->tail_at = modal__host->now_ns();
        } else {
            give_up(x);
        }
    } else if (x->kill_pending && modal__host->exec_pgid(x->call) > 0) {
        x->kill_pending = 0;
        modal__rpc_free(x->kill[slot]);
        x->kill[slot] = NULL;
        if (kill_exec(x, SIGKILL, &x->kill[slot]) == 0)
            x->n_kill = slot + 1;
    } else if (x->term_pending && modal__host->exec_pgid(x->call) > 0) {
        x->term_pending = 0;
        if (kill_exec(x, SIGTERM, &x->kill[slot]) == 0) {
            x->n_kill = slot + 1;
            x->term_slot = slot + 1;
        }
    }
}

/* The TERM is on its way: not sent yet, or its request not answered. */
static int term_on_its_way(const struct exec *x)
{
    const modal__rpc *k = x->term_slot ? x->kill[x->term_slot - 1] : NULL;

    return x->term_pending || (k != NULL && !modal__rpc_done(k));
}

/*
 * Ask the schedule and act; how long to wait at most (ms).  The output
 * ends when the router ends both streams (an OK end of TaskExecStdioRead
 * after the last byte, as Modal's clients read it), however late that
 * is; the exit starts the core's drain, whose KILL ends what still holds
 * the pipes and whose STOP, should the end still not come, is the
 * backstop that leaves the output marked incomplete.
 */
static int64_t schedule(struct exec *x)
{
    unsigned state = x->exited ? ATP_EXEC_EXITED : 0;
    int64_t wait = -1;
    int due;

    do {
        /* The grace counts from the TERM's arrival. */
        due = modal__host->exec_due(x->call,
                                    state | (term_on_its_way(x)
                                                 ? ATP_EXEC_SIGNALLING
                                                 : 0),
                                    &wait);
        act(x, due);
    } while (due != ATP_DUE_NONE && due != ATP_DUE_STOP && !x->stopped);
    if (x->tail && !x->stopped) {
        /* The backstop: a stream silent for the drain's length after
         * the STOP is not coming to its end. */
        int64_t quiet_ns = x->spec->drain_ms * 1000000LL;
        int64_t since = modal__host->now_ns() -
                        (x->last_data > x->tail_at ? x->last_data
                                                   : x->tail_at);

        if (since >= quiet_ns)
            give_up(x);
        else
            wait = (quiet_ns - since + 999999) / 1000000;
    }
    if (x->kill_pending)
        wait = 0 <= wait && wait < 100 ? wait : 100; /* for the group */
    return wait < 0 || wait > 1000 ? 1000 : wait;
}

/* ---- the loop ------------------------------------------------------------ */

static int64_t soonest(int64_t a, int64_t b)
{
    return a == 0 ? b : b == 0 ? a : a < b ? a : b;
}

/* Move everything on until the command has ended, or it must stop. */
static void run(struct exec *x)
{
    int cfd = modal__host->cancel_fd(x->call);
    int i;

    for (;;) {
        int64_t now, next = 0, wait_ms = schedule(x);
        struct curl_waitfd fds[2];
        unsigned nfds = 0;

        if (x->stopped || x->failed)
            return;
        now = modal__host->now_ns();
        if (x->ctl.deadline_ns && now >= x->ctl.deadline_ns) {
            x->timed_out = 1; /* the router said nothing in all this time */
            return;
        }
        for (i = 0; i < 2; i++)
            if (x->io[i].k && modal__rpc_done(x->io[i].k))
                stream_ended(x, &x->io[i], now);
        if (x->wk && modal__rpc_done(x->wk))
            wait_ended(x, now);
        if (x->ik && modal__rpc_done(x->ik))
            stdin_ended(x, now);
        if (x->failed)
            return;
        if (x->exited && x->io[0].eof && x->io[1].eof)
            return;
        for (i = 0; i < 2; i++) {
            struct stream *sr = &x->io[i];

            if (!sr->eof && sr->k == NULL) {
                if (sr->retry_at <= now)
                    stream_open(x, sr);
                else
                    next = soonest(next, sr->retry_at);
            }
        }
        if (!x->exited && x->wk == NULL) {
            if (x->wait_at <= now)
                wait_open(x);
            else
                next = soonest(next, x->wait_at);
        }
        if (!x->in_done && x->ik == NULL) {
            const void *data = NULL;

            take_input(x, &data);
            if (x->in_len > 0 || x->in_eof) {
                if (x->in_at <= now)
                    stdin_send(x, data);
                else
                    next = soonest(next, x->in_at);
            } else if (x->input_fd >= 0) {
                fds[nfds].fd = x->input_fd;
                fds[nfds].events = CURL_WAIT_POLLIN;
                fds[nfds++].revents = 0;
            } else {
                wait_ms = 0; /* nothing to wait on: ask again at once */
            }
        }
        next = soonest(next, x->ctl.deadline_ns);
        if (next) {
            int64_t until = (next - now + 999999) / 1000000;

            if (until < wait_ms)
                wait_ms = until;
        }
        if (cfd >= 0 && !x->signalled) {
            fds[nfds].fd = cfd;
            fds[nfds].events = CURL_WAIT_POLLIN;
            fds[nfds++].revents = 0;
        }
        if (modal__conn_step(x->s->conn, fds, nfds, (int)wait_ms) != 0) {
            modal__status st = {MODAL_INTERNAL, "curl failed", -1};

            fail_with(x, "running the command", &st);
        }
    }
}

static void exec_release(struct exec *x)
{
    int i;

    for (i = 0; i < 2; i++)
        modal__rpc_free(x->io[i].k);
    modal__rpc_free(x->wk);
    modal__rpc_free(x->ik);
    for (i = 0; i < 2; i++)
        modal__rpc_free(x->kill[i]);
    free(x->wmsg);
}

/* The exec could not go on: a dead sandbox, or the router's failure. */
static int report_failure(struct exec *x)
{
    modal__ctl ctl = modal__ctl_within(&x->ctl, CHECK_MS, 0);
    const modal__status *st = &x->fail_st;
    char why[256];
    int fin;

    if (ctl.deadline_ns <= modal__host->now_ns()) {
        modal__ctl fresh = modal__ctl_of(x->call);

        fresh.deadline_ns = 0; /* spent: give the check its own time */
        ctl = modal__ctl_within(&fresh, CHECK_MS, 0);
    }
    /* Ended here (give_up()): what failed is the reason, not its end. */
    fin = x->ended_sandbox ? 0
                           : modal__sandbox_finished(x->s, &ctl, why,
                                                     sizeof(why));
    if (fin == 1) {
        char msg[512];

        snprintf(msg, sizeof(msg), "sandbox %s died while running the "
                 "command: %s", x->s->sandbox_id, why);
        x->s->dead = 1;
        modal__copy(x->s->dead_why, sizeof(x->s->dead_why), msg);
        return modal__error(x->call, ATP_E_SANDBOX_DEAD, "%s; the output "
                            "up to then was delivered", msg);
    }
    return modal__error(x->call, ATP_E_BACKEND, "%s in sandbox %s failed: "
                        "%s: %s%s", x->fail_what, x->s->sandbox_id,
                        modal__code_name(st->code),
                        st->message[0] ? st->message : "no message",
                        x->ended_sandbox ? "; the sandbox was terminated "
                                           "with what it still ran" : "");
}

int modal__exec(atp_call *call, void *session, const atp_exec_spec *spec,
                atp_exec_outcome *out)
{
    struct modal_session *s = session;
    struct exec x;
    modal__status st;
    int rc;

    if (s->dead)
        return modal__error(call, ATP_E_SANDBOX_DEAD, "%s", s->dead_why);
    if (spec->argv == NULL || spec->argv[0] == NULL)
        return modal__error(call, ATP_E_INVAL, "empty argv");
    memset(&x, 0, sizeof(x));
    x.call = call;
    x.s = s;
    x.spec = spec;
    x.ctl = modal__ctl_of(call);
    if (x.ctl.deadline_ns == 0) /* no budget: the TTL bounds it */
        x.ctl.deadline_ns = s->expires_ns + TTL_SLACK_MS * 1000000LL;
    x.ctl.alive = still_alive;
    x.ctl.alive_ctx = &x;
    x.io[0].x = x.io[1].x = &x;
    x.io[0].fd = 0;
    x.io[0].out = ATP_STDOUT;
    x.io[1].fd = 1;
    x.io[1].out = ATP_STDERR;
    x.input_fd = -1;
    if (spec->flags & ATP_EXEC_STDIN)
        x.input_fd = modal__host->input_fd(call);
    else
        x.in_eof = 1; /* EOF at once: nothing waits on an open stdin */
    modal__uuid4(x.exec_id);
    modal__sweep_collect(s);
    rc = start_exec(&x, &st);
    if (rc == ATP_E_CANCELLED || rc == ATP_E_TIMEOUT) {
        exec_release(&x);
        return modal__error(call, rc, "%s", rc == ATP_E_CANCELLED
                            ? "cancelled while the command was starting"
                            : "the router did not start the command in "
                              "time");
    } else if (rc == ATP_E_NOMEM) {
        exec_release(&x);
        return modal__error(call, rc, "out of memory");
    } else if (rc) {
        fail_with(&x, "starting the command", &st);
    } else {
        run(&x);
        if (x.kill_pending)
            give_up(&x); /* the deadline came first */
        /* A stream given up on while its calls kept failing was lost by
         * the transport, not held open by the command: a failure. */
        for (int i = 0; i < 2; i++)
            if (!x.io[i].eof && x.io[i].failures > 0)
                fail_with(&x, "reading the output", &x.io[i].last);
    }
    if (x.failed) {
        exec_release(&x);
        return report_failure(&x);
    }
    if (!x.exited && (x.stopped || x.timed_out)) {
        /* Killed, and no end seen (or the router went quiet): whatever
         * is left of it goes with the sandbox. */
        int quiet = x.timed_out || (x.io[0].eof && x.io[1].eof);

        exec_release(&x);
        modal__session_terminate(call, s, quiet
                                 ? "the sandbox was terminated when the "
                                   "router did not report a command's end"
                                 : "a killed command was not seen to end");
        if (quiet)
            /* Its output ended, but the router never said how. */
            return modal__error(call, ATP_E_TIMEOUT, "the command in sandbox "
                                "%s did not end by its deadline (budget, "
                                "grace and margin) and the router said "
                                "nothing more; the sandbox was terminated",
                                s->sandbox_id);
        out->flags = 0;
        out->exit_code = -1;
        out->signal = SIGKILL;
        return 0;
    }
    {
        int64_t wait;

        /* What it left running (background jobs) goes with it; the
         * kill runs on while the next command starts. */
        if (modal__host->exec_due(call, ATP_EXEC_EXITED | ATP_EXEC_ENDED,
                                  &wait) == ATP_DUE_KILL && !s->one_shot)
            sweep_start(&x);
    }
    exec_release(&x);
    out->flags = 0;
    /* Waiting stopped before the router ended a stream: say so. */
    if (!x.io[0].eof)
        out->flags |= ATP_OUTCOME_STDOUT_CUT;
    if (!x.io[1].eof)
        out->flags |= ATP_OUTCOME_STDERR_CUT;
    out->exit_code = x.sig ? -1 : x.code;
    out->signal = x.sig;
    return 0;
}
