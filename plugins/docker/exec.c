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
 *     container start, no idle process to kill afterwards and no log
 *     driver: the fastest sequence that keeps every guarantee (measured
 *     against logs?follow and against the exec path, bench/README.md).
 *
 * What to do when is the core's kill schedule (host->exec_due()); how is
 * this file's: the core's wrapper announces the command's process group
 * (ATP_CAP_GROUP_SIGNALS), and a signal is a second exec, as root, of the
 * command host->group_kill_argv() gives; a KILL of a one-shot command
 * kills its container.  The container's stdin is the core's, moved to the
 * hijacked socket by host->stdin_to_fd().  Docker reports a death by
 * signal N as exit code 128+N, and says so (ATP_OUTCOME_SIGNAL_AS_EXIT).
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

#define READ_CHUNK 65536
#define READS_PER_WAKE 16         /* then look at the schedule again */

/*
 * The run path's container has no TTL of its own, and outlives atp if atp
 * dies: this watchdog, in front of the core's wrapper, kills the
 * command's group when the session's TTL runs out ($1: seconds; the rest:
 * the command).  It execs the command, so the group is the one the core's
 * wrapper announces.  The sleeper ignores TERM: the command's TERM
 * (run_killer) reaches the whole group, and the TTL outlives it.
 */
static const char watchdog[] =
    "t=$1; shift; (trap '' TERM; sleep \"$t\"; kill -s KILL -- -$$ || "
    "kill -s KILL -$$) </dev/null >/dev/null 2>&1 & exec \"$@\"";

/*
 * What the container's cgroup says it used so far: u, CPU in ns, and m,
 * the peak memory in bytes, empty when unknown (v1: cpuacct.usage and
 * memory.max_usage_in_bytes, the numbers GET /containers/{id}/stats
 * reports; v2: cpu.stat and memory.peak).
 */
#define READ_USAGE                                                          \
    "u=; m=; g=/sys/fs/cgroup; if { read u <$g/cpuacct/cpuacct.usage; } "  \
    "2>/dev/null; then { read m <$g/memory/memory.max_usage_in_bytes; } "   \
    "2>/dev/null; elif [ -r $g/cpu.stat ]; then while read k v; do "        \
    "[ \"$k\" = usage_usec ] && u=${v}000; done <$g/cpu.stat; "             \
    "{ read m <$g/memory.peak; } 2>/dev/null; fi; "

/*
 * The same for a container whose cgroup goes with its command (the run
 * path): after the command, the shell reads what the container used and
 * writes it on stderr after a record separator, where filter_stderr()
 * takes it off; then it exits with the command's status.  A TERM for the
 * command's group reaches this shell too: it leaves it be, the command
 * decides its end.
 */
static const char watchdog_usage[] =
    "t=$1; shift; (trap '' TERM; sleep \"$t\"; kill -s KILL -- -$$ || "
    "kill -s KILL -$$) </dev/null >/dev/null 2>&1 & trap : TERM; \"$@\"; "
    "c=$?; " READ_USAGE
    "printf '\\036atp-usage %s %s\\n' \"${u:--1}\" \"${m:--1}\" >&2; "
    "exit $c";

/*
 * A session's command, when it comes in the core's wrapper
 * (/bin/sh -c SCRIPT atp COMMAND): this shell runs SCRIPT in a subshell,
 * where $$ is still this shell's pid, the group leader the daemon's exec
 * makes (so the group the core's wrapper announces is the exec's own),
 * and after it KILLs what the command left running in that group or with
 * its ATP_EXEC_ID, in the same exec: no second exec (a second runc start,
 * as long as the command's own on a busy daemon) after every command.
 * What still holds the command's output is left to the core's drain, and
 * said on stderr after a record separator (filter_stderr() takes the
 * line off): the plugin's sweep then follows.  A TERM or INT for the
 * group leaves this shell be: the command decides its end, and its
 * status is this exec's.  The scan runs twice: a process caught between
 * its setsid and its exec on the first pass shows its marker on the
 * second.  The command shares its container's cgroup with
 * the commands before it: the shell reads the cgroup before and after
 * the command and reports both (usage_flush() takes the difference).
 */
static const char sweeping[] =
    "s=$1; shift; " READ_USAGE "u0=${u:--1}; m0=${m:--1}; "
    "trap : TERM INT; (eval \"$s\"); c=$?; " READ_USAGE "h=; "
    "x=${ATP_EXEC_ID:+ATP_EXEC_ID=$ATP_EXEC_ID}; "
    "for r in 1 2; do for p in /proc/[0-9]*; do q=${p#/proc/}; "
    "[ \"$q\" = $$ ] || [ \"$q\" = 1 ] && continue; "
    "{ read -r st <\"$p/stat\"; } 2>/dev/null || continue; "
    "set -- ${st##*) }; "
    "if [ \"$3\" = $$ ] || { [ -n \"$x\" ] && { tr '\\000' '\\n' "
    "<\"$p/environ\"; } 2>/dev/null | grep -qx \"$x\"; }; then "
    "[ \"$p/fd/1\" -ef /proc/$$/fd/1 ] || [ \"$p/fd/2\" -ef /proc/$$/fd/2 ] "
    "&& h=1 || kill -s KILL \"$q\" 2>/dev/null; fi; done; done; "
    "printf '\\036atp-usage %s %s %s %s\\n' \"${u:--1}\" \"${m:--1}\" "
    "\"$u0\" \"$m0\" >&2; "
    "[ -z \"$h\" ] || printf '\\036atp-held\\n' >&2; exit $c";

/* argv with the sweep above around it, or NULL when argv is not the
 * core's wrapper (then the sweep is a second exec, sweep()). */
static const char **sweeping_argv(const char *const *argv, const char **v)
{
    if (argv[0] == NULL || strcmp(argv[0], "/bin/sh") != 0 ||
        argv[1] == NULL || strcmp(argv[1], "-c") != 0 || argv[2] == NULL ||
        argv[3] == NULL || strcmp(argv[3], "atp") != 0 || argv[4] == NULL ||
        argv[5] != NULL)
        return NULL;
    v[0] = "/bin/sh";
    v[1] = "-c";
    v[2] = sweeping;
    v[3] = "atp";
    v[4] = argv[2];
    v[5] = argv[4];
    v[6] = NULL;
    return v;
}

/*
 * Any other session command (not in the core's wrapper) is measured the
 * same way by this shell.  The command runs under setsid, so that a
 * group announced for it is its own and this shell is out of it; an
 * image without setsid runs the command as it is, unmeasured.
 */
static const char session_usage[] =
    "command -v setsid >/dev/null 2>&1 || exec \"$@\"; " READ_USAGE
    "u0=${u:--1}; m0=${m:--1}; trap : TERM INT; setsid \"$@\"; c=$?; "
    READ_USAGE
    "printf '\\036atp-usage %s %s %s %s\\n' \"${u:--1}\" \"${m:--1}\" "
    "\"$u0\" \"$m0\" >&2; exit $c";

const char **dk_wrap_argv(const char *const *argv, long long ttl_s,
                          int usage)
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
    if (ttl_s <= 0) {
        for (i = 0; i < n; i++)
            v[i] = argv[i];
        return v;
    }
    ttl = (char *)v + head;
    snprintf(ttl, 32, "%lld", ttl_s);
    v[0] = "/bin/sh";
    v[1] = "-c";
    v[2] = usage ? watchdog_usage : watchdog;
    v[3] = "atp";
    v[4] = ttl;
    for (i = 0; i < n; i++)
        v[5 + i] = argv[i];
    v[5 + n] = NULL;
    return v;
}

/* A session's command, measured (session_usage). */
static const char **wrap_session(const char *const *argv)
{
    size_t n = 0, i;
    const char **v;

    while (argv && argv[n])
        n++;
    v = calloc(n + 5, sizeof(*v));
    if (v == NULL)
        return NULL;
    v[0] = "/bin/sh";
    v[1] = "-c";
    v[2] = session_usage;
    v[3] = "atp";
    for (i = 0; i < n; i++)
        v[4 + i] = argv[i];
    v[4 + n] = NULL;
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
    /* stdin */
    int with_stdin, input_fd;
    unsigned stdin_wait;   /* ATP_STDIN_WAIT_*, 0: done */
    /* run path: the wait for the container's removal (its exit code) */
    struct dk_http wt;
    struct dk_resp wrs;
    char wt_path[128];
    int wt_init, waiting;
    int usage;             /* the wrapper reports usage on stderr */
    char tail[128];        /* stderr held back: maybe that report */
    size_t tail_len;
    int64_t cpu_ns, peak;  /* what it reported, -1: nothing */
    int64_t cpu0, peak0;   /* a session's: the same before the command */
    /* the end */
    int eof, broken, term_pending, stopped;
    int signalled; /* a TERM or KILL of the schedule was delivered */
    /* exec path: the command's own process seen to exit while something
     * it started still holds its output (exec inspect, now and then) */
    int exited, code;
    int64_t next_inspect;
    int swept;     /* the exec KILLs what the command leaves (sweeping) */
    int held;      /* ...but something held the output then */
};

#define INSPECT_AFTER_NS 1000000000LL /* a first look after 1 s */
#define INSPECT_EVERY_NS 500000000LL

#define USAGE_MARK "\036atp-usage "
#define HELD_MARK "\036atp-held\n"

/*
 * The run path's stderr, as it comes: everything goes on at once but a
 * piece that starts with a record separator, held back (r->tail) until
 * it is known to be the wrapper's usage report, which is taken off, or
 * not, which goes on.
 */
static void filter_stderr(struct run *r, const char *buf, size_t len)
{
    while (len > 0) {
        if (r->tail_len == 0) {
            const char *rs = memchr(buf, '\036', len);
            size_t n = rs ? (size_t)(rs - buf) : len;

            if (n > 0)
                dk_host->output(r->call, ATP_STDERR, buf, n);
            buf += n;
            len -= n;
            if (len == 0)
                return;
        }
        while (len > 0 && r->tail_len < sizeof(r->tail) - 1) {
            char c = *buf++;

            len--;
            r->tail[r->tail_len++] = c;
            if (c == '\n')
                break;
        }
        r->tail[r->tail_len] = '\0';
        if (r->swept && strncmp(r->tail, HELD_MARK, r->tail_len) == 0) {
            /* The sweeping shell's word (all of it, or a start of it) */
            if (r->tail_len == strlen(HELD_MARK)) {
                r->held = 1;
                r->tail_len = 0;
            }
        } else if (!r->usage ||
                   strncmp(r->tail, USAGE_MARK,
                           r->tail_len <= strlen(USAGE_MARK)
                               ? r->tail_len
                               : strlen(USAGE_MARK)) != 0 ||
                   r->tail_len == sizeof(r->tail) - 1) {
            /* Not the report: the command's own bytes. */
            dk_host->output(r->call, ATP_STDERR, r->tail, r->tail_len);
            r->tail_len = 0;
        } else if (r->tail[r->tail_len - 1] == '\n') {
            long long cpu, peak, cpu0 = -1, peak0 = -1;
            int n = sscanf(r->tail + strlen(USAGE_MARK), "%lld %lld %lld %lld",
                           &cpu, &peak, &cpu0, &peak0);

            if (n == 2 || n == 4) {
                r->cpu_ns = cpu;
                r->peak = peak;
                r->cpu0 = cpu0;
                r->peak0 = peak0;
            } else {
                dk_host->output(r->call, ATP_STDERR, r->tail, r->tail_len);
            }
            r->tail_len = 0;
        }
    }
}

/*
 * The end of the stream: what was held back, and the usage.  A session's
 * command used the difference of the cgroup's CPU time; its peak is the
 * cgroup's only when the command raised it (else it stayed below what an
 * earlier command of the container reached, by an unknown amount).
 */
static void usage_flush(struct run *r, atp_exec_outcome *out)
{
    if (r->tail_len > 0)
        dk_host->output(r->call, ATP_STDERR, r->tail, r->tail_len);
    r->tail_len = 0;
    if (!r->run_path && r->cpu_ns >= 0) {
        r->cpu_ns = r->cpu0 >= 0 && r->cpu_ns >= r->cpu0
                        ? r->cpu_ns - r->cpu0
                        : -1;
        r->peak = r->peak0 >= 0 && r->peak > r->peak0 ? r->peak : -1;
    }
    if ((r->cpu_ns >= 0 || r->peak >= 0) &&
        ATP_HAS_FIELD(out, atp_exec_outcome, max_rss_bytes)) {
        out->flags |= ATP_OUTCOME_USAGE;
        out->cpu_ns = r->cpu_ns;
        out->max_rss_bytes = r->peak;
    }
}

static int on_payload(void *ctx, int stream, const void *buf, size_t len)
{
    struct run *r = ctx;

    /* A consumer that wants no more is a cancel: exec_due() says so. */
    if (len > 0 && (r->usage || r->swept) && stream == ATP_STDERR)
        filter_stderr(r, buf, len);
    else if (len > 0)
        dk_host->output(r->call, stream, buf, len);
    return 0;
}

/* ---- signals ------------------------------------------------------------ */

/*
 * A one-shot container holds the command and nothing else: a signal for
 * the command goes to every process in it but its init ($0: the signal).
 * The run path's wrappers stay: the watchdog's shell traps TERM and its
 * sleeper ignores it.  (The group the core's wrapper announces is not the
 * command's whole tree there: the watchdog's shell runs it as a child.)
 * One kill, once: busybox's kill signals -1 and then fails on "--", so
 * "kill -- -1 || kill -1" would signal everything twice.  Signal 0 finds
 * which form this kill takes.
 */
static const char run_killer[] =
    "if kill -s 0 -- -1 2>/dev/null; then kill -s \"$0\" -- -1; "
    "else kill -s \"$0\" -1; fi 2>/dev/null; exit 0";

/* Signal the command's process group with a second exec, as root. */
static int signal_group(struct run *r, int sig)
{
    struct dk_session *s = r->s;
    const char *run_argv[] = {"/bin/sh", "-c", run_killer,
                              sig == SIGKILL ? "KILL" : "TERM", NULL};
    const char *const *argv = r->run_path
                                  ? run_argv
                                  : dk_host->group_kill_argv(r->call, sig);
    char eid[72];
    int rc;

    if (argv == NULL)
        return ATP_E_NOTFOUND; /* the group is not known yet */
    rc = dk_api_exec_create(&s->http, r->call, s->id, argv, NULL, "/", "0",
                            0, 1, eid);
    if (rc == 0)
        rc = dk_api_exec_start_detached(&s->http, r->call, eid);
    if (rc)
        dk_host->log(r->call, ATP_LOG_WARN, "sending SIG%s to the command "
                     "failed", sig == SIGKILL ? "KILL" : "TERM");
    return rc;
}

/*
 * After a session's command: KILL what it left running (background jobs,
 * setsid or not), with a detached exec whose start goes on while the
 * caller does what comes next; one from the command before is finished
 * first.
 */
static void sweep(struct run *r)
{
    struct dk_session *s = r->s;
    const char *const *argv = dk_host->group_kill_argv(r->call, SIGKILL);
    struct dk_req rq = {0};
    char eid[72];
    int pending, done;

    if (argv == NULL)
        return;
    if (s->sweep.fl) {
        if (dk_http_poll(&s->sweep, r->call, 2000, &done) != 0 || !done)
            dk_http_abandon(&s->sweep);
    }
    dk_resp_free(&s->sweep_rs);
    if (dk_api_exec_create(&s->http, r->call, s->id, argv, NULL, "/", "0", 0,
                           1, eid) != 0)
        return;
    snprintf(s->sweep_path, sizeof(s->sweep_path), "/exec/%s/start", eid);
    rq.method = "POST";
    rq.path = s->sweep_path;
    rq.body = "{\"Detach\":true,\"Tty\":false}";
    rq.uncancellable = 1;
    dk_http_send(&s->sweep, r->call, &rq, &s->sweep_rs, &pending);
}

/* Deliver what the schedule says: to the group, or the whole container. */
static void act(struct run *r, int due)
{
    struct dk_session *s = r->s;

    if (due == ATP_DUE_TERM || due == ATP_DUE_KILL)
        r->signalled = 1;
    if (due == ATP_DUE_TERM) {
        /* Without a group yet, the TERM waits for its announcement. */
        r->term_pending = signal_group(r, SIGTERM) == ATP_E_NOTFOUND;
    } else if (due == ATP_DUE_KILL) {
        r->term_pending = 0;
        if (r->run_path) {
            dk_api_kill(&s->http, r->call, s->id, "SIGKILL");
        } else if (signal_group(r, SIGKILL) != 0) {
            /* No group to aim at: the container has to go.  The session
             * is then dead, and says so at its next command. */
            dk_host->log(r->call, ATP_LOG_WARN, "the command's process "
                         "group is unknown: killing container %.12s", s->id);
            dk_api_kill(&s->http, r->call, s->id, "SIGKILL");
            s->dead = 1;
        }
    } else if (due == ATP_DUE_STOP) {
        r->stopped = 1;
    } else if (r->term_pending && dk_host->exec_pgid(r->call) > 0) {
        r->term_pending = 0;
        signal_group(r, SIGTERM);
    }
}

/*
 * A session's command whose output stays open: has its own process
 * exited?  Then only what it left holds the output, and the core's drain
 * applies, not its budget.
 */
static void look_for_exit(struct run *r)
{
    int64_t now = dk_host->now_ns();
    int running = 1, code = -1;

    if (r->run_path || r->exited)
        return;
    if (r->next_inspect == 0)
        r->next_inspect = now + INSPECT_AFTER_NS;
    if (now < r->next_inspect)
        return;
    r->next_inspect = now + INSPECT_EVERY_NS;
    if (dk_api_exec_inspect(&r->s->http, r->call, r->eid, &running,
                            &code) == 0 &&
        !running) {
        r->exited = 1;
        r->code = code;
    }
}

/* Ask the schedule; returns how long to wait at most (ms). */
static int64_t schedule(struct run *r)
{
    int64_t wait = -1;
    int due;

    look_for_exit(r);
    do {
        due = dk_host->exec_due(r->call,
                                (r->exited ? ATP_EXEC_EXITED : 0) |
                                    (r->term_pending ? ATP_EXEC_SIGNALLING
                                                     : 0),
                                &wait);
        act(r, due);
    } while (due != ATP_DUE_NONE && due != ATP_DUE_STOP);
    if (!r->run_path && !r->exited && wait > 500)
        wait = 500;
    return wait < 0 || wait > 1000 ? 1000 : wait;
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

static void feed_stdin(struct run *r)
{
    int done = 0;
    int w = dk_host->stdin_to_fd(r->call, r->hj.fd, &done);

    r->stdin_wait = w > 0 ? (unsigned)w : 0;
    if (done || w < 0) {
        r->stdin_wait = 0;
        dk_hijack_shut_wr(&r->hj);
    }
}

static int pump(struct run *r)
{
    int cancel_fd = dk_host->cancel_fd(r->call);

    r->buf = malloc(READ_CHUNK);
    if (r->buf == NULL)
        return dk_host->set_error(r->call, ATP_E_NOMEM, "out of memory");
    if (r->with_stdin) {
        r->input_fd = dk_host->input_fd(r->call);
        feed_stdin(r);
    }
    read_stream(r); /* bytes that came with the response head */
    while (!r->eof) {
        struct pollfd p[3];
        int n = 0;
        int64_t wait = schedule(r);

        if (r->stopped)
            break;
        p[n].fd = r->hj.fd;
        p[n].events = POLLIN;
        if (r->stdin_wait & ATP_STDIN_WAIT_FD)
            p[n].events |= POLLOUT;
        p[n++].revents = 0;
        if ((r->stdin_wait & ATP_STDIN_WAIT_INPUT) && r->input_fd >= 0) {
            p[n].fd = r->input_fd;
            p[n].events = POLLIN;
            p[n++].revents = 0;
        } else if (r->stdin_wait & ATP_STDIN_WAIT_INPUT) {
            wait = 0; /* no descriptor to wait on: ask again at once */
        }
        if (cancel_fd >= 0) {
            p[n].fd = cancel_fd;
            p[n].events = POLLIN;
            p[n++].revents = 0;
        }
        if (poll(p, (nfds_t)n, (int)wait) < 0 && errno != EINTR)
            return dk_host->set_error(r->call, ATP_E_BACKEND, "poll: %s",
                                      strerror(errno));
        if (p[0].revents & (POLLIN | POLLHUP | POLLERR))
            read_stream(r);
        if (r->stdin_wait)
            feed_stdin(r);
    }
    return 0;
}

/* ---- the two paths ------------------------------------------------------ */

/*
 * After the stream: the exit code, once the daemon has recorded the end.
 * Usually at once; but a command that closed its stdout and stderr runs
 * on, so the schedule still applies.  Sets *@ended to 0 when the command
 * could not be seen to end.
 */
static int await_removal(struct run *r, int *code, int *ended);

static int await_exit(struct run *r, int *code, int *ended)
{
    long pause = 1;
    int running = 1, rc;

    if (r->waiting)
        return await_removal(r, code, ended);
    *ended = 1;
    if (r->exited && r->code >= 0) {
        *code = r->code;
        return 0;
    }
    for (;;) {
        int64_t wait;

        if (r->run_path)
            rc = dk_api_container_state(&r->s->http, r->call, r->s->id,
                                        &running, code);
        else
            rc = dk_api_exec_inspect(&r->s->http, r->call, r->eid, &running,
                                     code);
        if (rc || !running)
            return rc;
        wait = schedule(r);
        if (r->stopped) {
            *ended = 0;
            return 0;
        }
        if (pause > wait)
            pause = (long)wait;
        if (pause > 0) {
            struct timespec ts = {pause / 1000, (pause % 1000) * 1000000};

            nanosleep(&ts, NULL);
        }
        if (pause < 100)
            pause = pause ? pause * 2 : 1;
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
     * keeps the schedule meanwhile. */
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
        int64_t wait = schedule(r);

        if (r->stopped) {
            *ended = 0;
            return 0;
        }
        rc = dk_http_poll(&r->wt, r->call, wait < 100 ? wait : 100, &done);
        if (rc || done)
            break;
    }
    r->waiting = 0;
    if (rc == 0)
        rc = dk_api_wait_result(r->call, &r->wrs, code, &removed);
    if (rc == 0 && removed) {
        /* Gone with its end: nothing left to remove at close. */
        dk_host->resource_removed(r->call, s->name);
        s->id[0] = '\0';
    }
    return rc;
}

static int start_exec_path(struct run *r, const char *const *argv)
{
    struct dk_session *s = r->s;
    struct dk_resp rs;
    const char *swept[7];
    char path[128];
    const char **wrapped;
    int rc;

    if (s->dead)
        return dk_host->set_error(r->call, ATP_E_SANDBOX_DEAD, "the session's "
                                  "container %.12s was killed: start a new "
                                  "session", s->id);
    if (s->sweep.fl) {
        int done;

        /* The KILL of what the command before left: started before this
         * one, which should not meet what it kills. */
        if (dk_http_poll(&s->sweep, r->call, 2000, &done) != 0 || !done)
            dk_http_abandon(&s->sweep);
    }
    if (sweeping_argv(argv, swept) != NULL) {
        wrapped = NULL;
        argv = swept;
        r->swept = 1;
    } else {
        wrapped = wrap_session(argv);
        if (wrapped == NULL)
            return dk_host->set_error(r->call, ATP_E_NOMEM, "out of memory");
        argv = wrapped;
    }
    r->usage = 1;
    rc = dk_api_exec_create(&s->http, r->call, s->id, argv, r->spec->envp,
                            r->spec->cwd ? r->spec->cwd : s->sb_workdir,
                            NULL, r->with_stdin, 0, r->eid);
    free(wrapped);
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

static int start_run_path(struct run *r, const char *const *argv)
{
    struct dk_session *s = r->s;
    const char **wrapped = dk_wrap_argv(argv, s->ttl_s, s->self_removing);
    struct dk_resp rs;
    char path[200];
    int rc;

    if (wrapped == NULL)
        return dk_host->set_error(r->call, ATP_E_NOMEM, "out of memory");
    if (s->id[0] && (rc = dk_container_remove(r->call, s)) != 0)
        goto out; /* a one-shot session asked for a second command */
    rc = dk_container_create(r->call, s, wrapped, r->spec->envp,
                             r->spec->cwd, r->with_stdin);
    if (rc)
        goto out;
    if (s->self_removing && (rc = send_wait(r)) != 0)
        goto out;
    r->usage = s->self_removing && s->ttl_s > 0;
    snprintf(path, sizeof(path), "/containers/%s/attach?stream=1&stdout=1"
             "&stderr=1%s", s->id, r->with_stdin ? "&stdin=1" : "");
    rc = dk_hijack_open(&r->hj, &s->http, r->call, path, NULL, &rs);
    if (rc == 0 && rs.status != 101 && rs.status != 200)
        /* Podman prepares the container here: a bad user fails now. */
        rc = dk_http_fail(r->call, ATP_E_PROVISION, &rs, "attach to the "
                          "container", NULL);
    if (rc == 0)
        rc = dk_api_start(&s->http, r->call, s->id, NULL, 0);
out:
    free(wrapped);
    return rc;
}

int dk_exec(atp_call *call, void *session, const atp_exec_spec *spec,
            atp_exec_outcome *out)
{
    struct dk_session *s = session;
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
    r.with_stdin = (spec->flags & ATP_EXEC_STDIN) != 0;
    r.run_path = s->one_shot;
    r.cpu_ns = r.peak = r.cpu0 = r.peak0 = -1;
    dk_demux_init(&r.dm);
    rc = r.run_path ? start_run_path(&r, spec->argv)
                    : start_exec_path(&r, spec->argv);
    if (rc)
        goto out;
    rc = pump(&r);
    if (rc)
        goto out;
    dk_hijack_close(&r.hj);
    if (r.usage || r.swept)
        usage_flush(&r, out);
    if (r.eof && (rc = await_exit(&r, &code, &ended)) != 0)
        goto out;
    out->flags |= ATP_OUTCOME_SIGNAL_AS_EXIT;
    if (!r.eof || !ended) {
        /* Killed, and still no end after the grace: say what we know. */
        out->exit_code = -1;
        out->signal = SIGKILL;
    } else if (!r.signalled && (code == 137 || code == 143) &&
               dk_http_probe(&s->be->ep, 2000) != 0) {
        /* Killed, not by us, and the daemon takes no new connections: it
         * is shutting down and stopped the container. */
        rc = dk_host->set_error(call, ATP_E_BACKEND, "the docker daemon at "
                                "%s is shutting down: it stopped the "
                                "container while the command ran (exit %d)",
                                s->be->ep.display, code);
        goto out;
    } else {
        out->exit_code = code;
        out->signal = 0;
    }
    if (r.broken || (!r.signalled && dk_demux_end(&r.dm) != 0))
        dk_host->log(call, ATP_LOG_WARN, "the output stream of the command "
                     "ended in the middle of a frame: some output may be "
                     "lost");
    if (!r.run_path && !s->dead) {
        int64_t wait;

        /* What it left running in the session's container (background
         * jobs, setsid or not) goes with it; no need to wait.  The exec
         * itself did that when it was the only holder of its output to
         * the end: nothing held the output at its sweep (its word on
         * stderr) or outlived it there (seen by the exit coming first),
         * and no signal cut its own sweep short. */
        if (dk_host->exec_due(call, ATP_EXEC_EXITED | ATP_EXEC_ENDED,
                              &wait) == ATP_DUE_KILL &&
            (!r.swept || r.held || r.exited || r.signalled || r.broken))
            sweep(&r);
    }
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
    char eid[72], path[128], buf[4096];
    long pause = 1;
    int rc, running = 1;

    /* Attached, not detached: podman 4.3 reports a detached exec as
     * running for ever. */
    rc = dk_api_exec_create(&s->http, call, s->id, argv, NULL, "/", "0", 0,
                            0, eid);
    if (rc)
        return rc;
    snprintf(path, sizeof(path), "/exec/%s/start", eid);
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
    while (rc == 0) {
        rc = dk_api_exec_inspect(&s->http, call, eid, &running, code);
        if (rc || !running)
            break;
        if (dk_host->now_ns() >= until)
            rc = dk_host->set_error(call, ATP_E_TIMEOUT, "a setup command "
                                    "in container %.12s did not finish",
                                    s->id);
        else {
            struct timespec ts = {0, pause * 1000000};

            nanosleep(&ts, NULL);
            if (pause < 100)
                pause *= 2;
        }
    }
    return rc;
}
