/*
 * plugins/docker/exec.c - running one command in a container.
 *
 * Three paths, one pump:
 *   - runner path (a session's commands in the core's wrapper, without
 *     stdin): a line to the session's resident runner, an exec started
 *     with the session; output, exit code and end come in band on its
 *     stream (runner_script).  No request to the daemon, no runc exec.
 *   - exec path (other session commands, or an image where no runner
 *     starts): POST /containers/{id}/exec, then the exec's start request
 *     hijacked; the exit code from GET /exec/{id}/json.
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
 * writes it on stderr after a record separator, where filter()
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
 * said on stderr after a record separator (filter() takes the
 * line off): the plugin's sweep then follows.  A TERM or INT for the
 * group leaves this shell be: the command decides its end, and its
 * status is this exec's.  The scan runs twice: a process caught between
 * its setsid and its exec on the first pass shows its marker on the
 * second; one that started before this shell cannot carry its marker,
 * and its environment is not read (a tr and a grep each).  The command shares its container's cgroup with
 * the commands before it: the shell reads the cgroup before and after
 * the command and reports both (usage_flush() takes the difference).
 */
#define SWEEPING(skip)                                                     \
    "s=$1; shift; " READ_USAGE "u0=${u:--1}; m0=${m:--1}; "                \
    "trap : TERM INT; (eval \"$s\"); c=$?; " READ_USAGE "h=; "             \
    "x=${ATP_EXEC_ID:+ATP_EXEC_ID=$ATP_EXEC_ID}; t=0; "                     \
    "{ read -r st </proc/$$/stat; } 2>/dev/null && "                       \
    "{ set -- ${st##*) }; t=${20:-0}; }; "                                 \
    "for r in 1 2; do for p in /proc/[0-9]*; do q=${p#/proc/}; "           \
    "[ \"$q\" = $$ ] || [ \"$q\" = 1 ] && continue; "                      \
    "{ read -r st <\"$p/stat\"; } 2>/dev/null || continue; "               \
    "set -- ${st##*) }; " skip                                             \
    "if [ \"$3\" = $$ ] || { [ -n \"$x\" ] && [ \"${20:-0}\" -ge \"$t\" ] && "  \
    "{ tr '\\000' '\\n' "                                                  \
    "<\"$p/environ\"; } 2>/dev/null | grep -qx \"$x\"; }; then "           \
    "[ \"$p/fd/1\" -ef /proc/$$/fd/1 ] || [ \"$p/fd/2\" -ef /proc/$$/fd/2 ] "\
    "&& h=1 || kill -s KILL \"$q\" 2>/dev/null; fi; done; done; "          \
    "printf '\\036atp-usage %s %s %s %s\\n' \"${u:--1}\" \"${m:--1}\" "    \
    "\"$u0\" \"$m0\" >&2; "                                                \
    "[ -z \"$h\" ] || printf '\\036atp-held\\n' >&2; exit $c"

static const char sweeping[] = SWEEPING("");

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

/*
 * The session's command runner: one exec per session, started at its
 * first command (and again after one died), that runs every command of
 * the core's wrapper after it; a command then costs no request to the
 * daemon and no runc exec.  $1: the sweeping shell for its commands.
 * Its stdin takes a line with a nonce, then one line per command,
 *   c 'CWD' 'SCRIPT' 'COMMAND' 'KEY=VALUE'...
 * (newlines as '"$L"'); for each, it runs the sweeping shell under
 * setsid, with the environment and directory given and stdin from
 * /dev/null, its stdout and stderr on pipes of their own copied to the
 * runner's, and writes after a record separator and the nonce:
 *   on the command's stderr, when the sweeping shell (the group leader)
 *   has exited:  "exit CODE" (128+N for a death by signal N, as docker
 *   says it), after everything the command's own processes wrote there;
 *   on the runner's stdout and stderr, once nothing holds the command's
 *   output any more:  "end".
 * So stdout and stderr stay apart, the exit code is exact, the drain
 * applies once the exit is known, and nothing a command left writing can
 * reach the next one's output.  The runner is in a group of its own (the
 * exec's), which the sweeping shell's scan leaves alone ($k).  The
 * shell that waits for the command has its stderr on /dev/null: a shell
 * may say "Killed" there.  Without setsid in the image, the runner says
 * "unusable" and the session execs each command (start_exec_path()).
 */
static const char runner_sweeping[] =
    "k=$1; shift; " SWEEPING("[ \"$3\" = \"$k\" ] && continue; ");

static const char runner_script[] =
    "W=$1; L='\n'; k=; { read -r st </proc/$$/stat; } 2>/dev/null && "
    "{ set -- ${st##*) }; k=$3; }; IFS= read -r n || exit 0; "
    "command -v setsid >/dev/null 2>&1 || "
    "{ printf '\\036atp-%s unusable\\n' \"$n\"; exit 0; }; "
    "c() { d=$1 s=$2 x=$3; shift 3; { { { { ( cd -- \"$d\" 2>/dev/null || "
    "{ printf 'atp: cannot change to directory %s in the container: no "
    "such directory\\n' \"$d\" >&2; exit 126; }; "
    "for e; do export \"$e\"; done; "
    "exec setsid /bin/sh -c \"$W\" atp \"$k\" \"$s\" \"$x\" ) "
    "</dev/null 2>&5 5>&-; printf '\\036atp-%s exit %s\\n' \"$n\" $? >&5; "
    "} 5>&2 2>/dev/null; } 2>&1 1>&3 3>&- | cat >&2; } 3>&1 | cat; }; "
    "printf '\\036atp-%s end\\n' \"$n\"; "
    "printf '\\036atp-%s end\\n' \"$n\" >&2; }; "
    "printf '\\036atp-%s ready\\n' \"$n\"; "
    "while IFS= read -r l; do eval \"$l\"; done";

#define RUNNER_HELLO_MAX 128
/* An end this long after the exit: something outlived the command (as
 * INSPECT_AFTER_NS for an exec's own end). */
#define RUNNER_LATE_NS 1000000000LL

/* Close the runner's connection: it reads the end of its input and exits
 * after the command it runs, if any. */
static void runner_drop(struct dk_session *s)
{
    if (s->runner.hj.easy)
        dk_hijack_close(&s->runner.hj);
    s->runner.up = 0;
}

void dk_runner_stop(struct dk_session *s)
{
    runner_drop(s);
}

static int runner_start(atp_call *call, struct dk_session *s);

int dk_runner_prepare(atp_call *call, struct dk_session *s)
{
    int rc;

    if (s->runner.up || s->runner.off || s->one_shot)
        return 0;
    rc = runner_start(call, s);
    return rc == 1 ? 0 : rc;
}

/* Between two commands the runner says nothing: anything there (its end,
 * or bytes out of turn) means it cannot be trusted with the next one. */
static int runner_gone(struct dk_session *s)
{
    struct dk_hijack *hj = &s->runner.hj;
    struct pollfd p = {hj->fd, POLLIN, 0};
    char c;

    if (hj->off < hj->len)
        return 1;
    if (poll(&p, 1, 0) <= 0)
        return 0;
    return dk_hijack_recv(hj, &c, 1) != DK_AGAIN;
}

/* Write all of @p to the runner, within the daemon's api timeout. */
static int runner_send(atp_call *call, struct dk_session *s, const char *p,
                       size_t len)
{
    int64_t until = dk_host->now_ns() + s->http.api_timeout_ms * 1000000;

    while (len > 0) {
        long n = dk_hijack_send(&s->runner.hj, p, len);
        struct pollfd pf = {s->runner.hj.fd, POLLOUT, 0};

        if (n == DK_AGAIN) {
            if (dk_host->now_ns() >= until)
                return ATP_E_TIMEOUT;
            poll(&pf, 1, 200);
            continue;
        }
        if (n < 0)
            return ATP_E_BACKEND;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

struct hello {
    char buf[RUNNER_HELLO_MAX];
    size_t len;
};

static int on_hello(void *ctx, int stream, const void *buf, size_t len)
{
    struct hello *h = ctx;

    if (stream != ATP_STDOUT)
        return 0;
    if (len > sizeof(h->buf) - 1 - h->len)
        len = sizeof(h->buf) - 1 - h->len;
    memcpy(h->buf + h->len, buf, len);
    h->len += len;
    h->buf[h->len] = '\0';
    return 0;
}

static void make_nonce(char *out, size_t n)
{
    unsigned char raw[8];
    FILE *f = fopen("/dev/urandom", "rb");
    size_t i, got = 0;

    if (f) {
        got = fread(raw, 1, sizeof(raw), f);
        fclose(f);
    }
    for (i = got; i < sizeof(raw); i++)
        raw[i] = (unsigned char)((uint64_t)dk_host->now_ns() >> (i * 5));
    for (i = 0; i < sizeof(raw) && 2 * i + 2 < n; i++)
        snprintf(out + 2 * i, 3, "%02x", raw[i]);
}

/*
 * Start the session's runner and wait for its word.  Returns 0 when it is
 * up, 1 when the container cannot host one (the session then execs each
 * command), or an error.
 */
static int runner_start(atp_call *call, struct dk_session *s)
{
    const char *argv[] = {"/bin/sh", "-c", runner_script, "atp",
                          runner_sweeping, NULL};
    int64_t until = dk_host->now_ns() + s->http.api_timeout_ms * 1000000;
    struct dk_runner *rn = &s->runner;
    struct hello h = {"", 0};
    struct dk_resp rs;
    char eid[72], path[128], nonce[24] = "", line[32], want[64];
    int rc;

    rc = dk_api_exec_create(&s->http, call, s->id, argv, NULL, "/", NULL, 1,
                            0, eid);
    if (rc)
        return rc;
    memcpy(rn->eid, eid, sizeof(rn->eid));
    snprintf(path, sizeof(path), "/exec/%s/start", eid);
    rc = dk_hijack_open(&rn->hj, &s->http, call, path,
                        "{\"Detach\":false,\"Tty\":false}", &rs);
    if (rc == 0 && rs.status != 101 && rs.status != 200) {
        rc = dk_http_fail(call, rs.status == 404 || rs.status == 409
                                    ? ATP_E_SANDBOX_DEAD
                                    : ATP_E_BACKEND,
                          &rs, "start the session's command runner", NULL);
        dk_hijack_close(&rn->hj);
    }
    if (rc)
        return rc;
    make_nonce(nonce, sizeof(nonce));
    snprintf(rn->mark, sizeof(rn->mark), "\036atp-%s ", nonce);
    dk_demux_init(&rn->dm);
    snprintf(line, sizeof(line), "%s\n", nonce);
    if (runner_send(call, s, line, strlen(line)) != 0)
        goto lost;
    while (memchr(h.buf, '\n', h.len) == NULL && h.len < sizeof(h.buf) - 1) {
        char buf[4096];
        long n = dk_hijack_recv(&rn->hj, buf, sizeof(buf));
        struct pollfd p = {rn->hj.fd, POLLIN, 0};

        if (n == DK_AGAIN) {
            if (dk_host->cancelled(call)) {
                runner_drop(s);
                return dk_host->set_error(call, ATP_E_CANCELLED,
                                          "cancelled");
            }
            if (dk_host->now_ns() >= until) {
                runner_drop(s);
                return dk_host->set_error(call, ATP_E_TIMEOUT, "the "
                                          "command runner in container "
                                          "%.12s did not start in time",
                                          s->id);
            }
            poll(&p, 1, 200);
            continue;
        }
        if (n <= 0 ||
            dk_demux_feed(&rn->dm, buf, (size_t)n, on_hello, &h) != 0)
            goto lost;
    }
    snprintf(want, sizeof(want), "%sready\n", rn->mark);
    if (strcmp(h.buf, want) == 0) {
        rn->up = 1;
        return 0;
    }
lost:
    /* Whatever stops it (no setsid in the image, a /bin/sh that is not a
     * POSIX shell), the commands then go the way that needs none of it. */
    snprintf(want, sizeof(want), "%sunusable\n", rn->mark);
    dk_host->log(call, ATP_LOG_DEBUG, "container %.12s %s: an exec per "
                 "command", s->id, strcmp(h.buf, want) == 0
                                       ? "has no setsid"
                                       : "cannot host a command runner");
    runner_drop(s);
    rn->off = 1;
    return 1;
}

/* @s single-quoted for the runner's shell, on one line. */
static int put_quoted(char **p, size_t *len, size_t *cap, const char *s)
{
    size_t need = *len + 4 + strlen(s) * 6; /* and a newline */
    char *o;

    if (need > *cap) {
        size_t ncap = need * 2;
        char *np = realloc(*p, ncap);

        if (np == NULL)
            return -1;
        *p = np;
        *cap = ncap;
    }
    o = *p + *len;
    *o++ = ' ';
    *o++ = '\'';
    for (; *s; s++) {
        if (*s == '\'') {
            memcpy(o, "'\\''", 4);
            o += 4;
        } else if (*s == '\n') {
            memcpy(o, "'\"$L\"'", 6);
            o += 6;
        } else {
            *o++ = *s;
        }
    }
    *o++ = '\'';
    *len = (size_t)(o - *p);
    return 0;
}

/* The runner's line for a command of the core's wrapper. */
static char *runner_line(const char *const *argv, const char *cwd,
                         const char *const *envp, size_t *len_out)
{
    size_t len = 1, cap = 256;
    char *p = malloc(cap);
    size_t i;

    if (p == NULL)
        return NULL;
    p[0] = 'c';
    if (put_quoted(&p, &len, &cap, cwd) || put_quoted(&p, &len, &cap, argv[2]) ||
        put_quoted(&p, &len, &cap, argv[4]))
        goto nomem;
    for (i = 0; envp && envp[i]; i++)
        if (put_quoted(&p, &len, &cap, envp[i]))
            goto nomem;
    p[len++] = '\n';
    *len_out = len;
    return p;
nomem:
    free(p);
    return NULL;
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
    char otail[128];       /* stdout held back: maybe the runner's end */
    size_t otail_len;
    int64_t cpu_ns, peak;  /* what it reported, -1: nothing */
    int64_t cpu0, peak0;   /* a session's: the same before the command */
    /* the end */
    int eof, broken, term_pending, stopped;
    int signalled; /* a TERM or KILL of the schedule was delivered */
    int last_sig;  /* ...the last of them */
    /* exec path: the command's own process seen to exit while something
     * it started still holds its output (exec inspect, now and then) */
    int exited, code;
    int64_t next_inspect;
    int swept;     /* the exec KILLs what the command leaves (sweeping) */
    /* the session's runner runs it: its "exit" record sets exited and
     * code, its "end" records (ends: 1 stdout, 2 stderr) the eof; lost:
     * the runner's stream ended before them */
    int runner, ends, lost;
    int late;          /* ...and the end came well after the exit */
    int64_t exit_ns;
    int held;      /* ...but something held the output then */
};

#define INSPECT_AFTER_NS 1000000000LL /* a first look after 1 s */
#define INSPECT_EVERY_NS 500000000LL

#define USAGE_MARK "\036atp-usage "
#define HELD_MARK "\036atp-held\n"

/* How the line @t (@n bytes) stands to record @mark: 1 it starts with
 * all of it, 0 it is a start of it, -1 it is not it. */
static int prefix_of(const char *t, size_t n, const char *mark)
{
    size_t m = strlen(mark);

    if (strncmp(t, mark, n < m ? n : m) != 0)
        return -1;
    return n >= m;
}

/* A line of the wrapper's usage report, from USAGE_MARK on: 1 if it is
 * one (and taken), 0 if not. */
static int take_usage(struct run *r, const char *t)
{
    long long cpu, peak, cpu0 = -1, peak0 = -1;
    int n = sscanf(t + strlen(USAGE_MARK), "%lld %lld %lld %lld", &cpu,
                   &peak, &cpu0, &peak0);

    if (n != 2 && n != 4)
        return 0;
    r->cpu_ns = cpu;
    r->peak = peak;
    r->cpu0 = cpu0;
    r->peak0 = peak0;
    return 1;
}

/* A record of the runner, after its mark: 1 if it is one (and taken). */
static int take_runner_record(struct run *r, int stream, const char *t)
{
    int code;
    char nl;

    if (strcmp(t, "end\n") == 0) {
        /* Something outlived the command's exit and held its output:
         * what the sweeping shell's scan missed, the plugin's sweep
         * gets. */
        if (r->exited && dk_host->now_ns() - r->exit_ns > RUNNER_LATE_NS)
            r->late = 1;
        r->ends |= stream == ATP_STDERR ? 2 : 1;
        if (r->ends == 3)
            r->eof = 1; /* the command's output ended, in band */
        return 1;
    }
    if (sscanf(t, "exit %d%c", &code, &nl) == 2 && nl == '\n' && code >= 0 &&
        code <= 255) {
        r->exited = 1;
        r->code = code;
        r->exit_ns = dk_host->now_ns();
        return 1;
    }
    return 0;
}

/*
 * The output, as it comes: everything goes on at once but a piece that
 * starts with a record separator, held back (r->tail, r->otail) until it
 * is known to be a record (the wrapper's usage report or word that
 * something held the output, on stderr; the runner's, on either), which
 * is taken off, or not, which goes on.
 */
static void filter(struct run *r, int stream, const char *buf, size_t len)
{
    int err = stream == ATP_STDERR;
    char *tail = err ? r->tail : r->otail;
    size_t *tl = err ? &r->tail_len : &r->otail_len;
    const size_t cap = sizeof(r->tail);

    while (len > 0) {
        int usage, held, rec, took = 0, cut = 0;

        if (*tl == 0) {
            const char *rs = memchr(buf, '\036', len);
            size_t n = rs ? (size_t)(rs - buf) : len;

            if (n > 0)
                dk_host->output(r->call, stream, buf, n);
            buf += n;
            len -= n;
            if (len == 0)
                return;
        }
        while (len > 0 && *tl < cap - 1) {
            char c = *buf;

            if (c == '\036' && *tl > 0) {
                cut = 1; /* no record holds one: what came before is not
                          * one, what follows may be */
                break;
            }
            buf++;
            len--;
            tail[(*tl)++] = c;
            if (c == '\n')
                break;
        }
        tail[*tl] = '\0';
        usage = err && r->usage ? prefix_of(tail, *tl, USAGE_MARK) : -1;
        held = err && r->swept ? prefix_of(tail, *tl, HELD_MARK) : -1;
        rec = r->runner ? prefix_of(tail, *tl, r->s->runner.mark) : -1;
        if (usage < 0 && held < 0 && rec < 0) {
            /* Not a record: the command's own bytes. */
        } else if (!cut && tail[*tl - 1] != '\n' && *tl < cap - 1) {
            continue; /* more to come */
        } else if (held == 1) {
            r->held = 1;
            took = 1;
        } else if (usage == 1) {
            took = take_usage(r, tail);
        } else if (rec == 1) {
            took = take_runner_record(r, stream,
                                      tail + strlen(r->s->runner.mark));
        }
        if (!took)
            dk_host->output(r->call, stream, tail, *tl);
        *tl = 0;
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
    if (r->otail_len > 0)
        dk_host->output(r->call, ATP_STDOUT, r->otail, r->otail_len);
    if (r->tail_len > 0)
        dk_host->output(r->call, ATP_STDERR, r->tail, r->tail_len);
    r->tail_len = r->otail_len = 0;
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
    if (len > 0 && (r->runner || ((r->usage || r->swept) &&
                                  stream == ATP_STDERR)))
        filter(r, stream, buf, len);
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

    if (due == ATP_DUE_TERM || due == ATP_DUE_KILL) {
        r->signalled = 1;
        r->last_sig = due == ATP_DUE_KILL ? SIGKILL : SIGTERM;
    }
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

    if (r->run_path || r->exited || r->runner)
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
            r->lost = r->runner;
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

/*
 * Between two looks at whether the command still runs: what the schedule
 * says, then a pause of @pause ms (doubling up to 100 ms, never past what
 * is due next).  1 when the schedule stopped the wait.
 */
static int poll_pause(struct run *r, long *pause)
{
    int64_t wait = schedule(r);

    if (r->stopped)
        return 1;
    if (*pause > wait)
        *pause = (long)wait;
    if (*pause > 0) {
        struct timespec ts = {*pause / 1000, (*pause % 1000) * 1000000};

        nanosleep(&ts, NULL);
    }
    if (*pause < 100)
        *pause = *pause ? *pause * 2 : 1;
    return 0;
}

/*
 * The runner's command: its exit record; or, when the runner's stream
 * ended before it, the runner's exec, watched under the schedule until
 * it ends (after the command: its input went with the stream), as an
 * exec's is.  Then: the schedule's signal ended the command; or the
 * container stopped (the session is dead); or something killed the
 * runner, and the command with it (the group's leader had the runner's
 * shell for a parent); or only the stream was cut, and the exit code
 * with it.
 */
static int runner_exit(struct run *r, int *code, int *ended)
{
    struct dk_session *s = r->s;
    int running = 1, rcode = -1, ccode = -1, rc;
    long pause = 1;

    *ended = 1;
    if (r->exited) {
        *code = r->code;
        return 0;
    }
    for (;;) {
        rc = dk_api_exec_inspect(&s->http, r->call, r->eid, &running, &rcode);
        if (rc || !running)
            break;
        if (poll_pause(r, &pause)) {
            *ended = 0;
            return 0;
        }
    }
    if (r->signalled && (rc == 0 || rc == ATP_E_SANDBOX_DEAD)) {
        *code = 128 + r->last_sig;
        return 0;
    }
    if (rc)
        return rc;
    rc = dk_api_container_state(&s->http, r->call, s->id, &running, &ccode);
    if (rc == 0 && !running)
        rc = dk_host->set_error(r->call, ATP_E_SANDBOX_DEAD, "the container "
                                "%.12s stopped while the command ran (exit "
                                "%d)", s->id, ccode);
    if (rc == ATP_E_SANDBOX_DEAD)
        s->dead = 1;
    if (rc)
        return rc;
    if (rcode < 128)
        return dk_host->set_error(r->call, ATP_E_BACKEND, "the output stream "
                                  "of the command in container %.12s was "
                                  "cut before its end: its exit code is "
                                  "lost", s->id);
    dk_host->log(r->call, ATP_LOG_WARN, "the command runner in container "
                 "%.12s was killed while the command ran: the command "
                 "counts as killed", s->id);
    *code = 128 + SIGKILL;
    return 0;
}

static int await_exit(struct run *r, int *code, int *ended)
{
    long pause = 1;
    int running = 1, rc;

    if (r->waiting)
        return await_removal(r, code, ended);
    if (r->runner)
        return runner_exit(r, code, ended);
    *ended = 1;
    if (r->exited && r->code >= 0) {
        *code = r->code;
        return 0;
    }
    for (;;) {
        if (r->run_path)
            rc = dk_api_container_state(&r->s->http, r->call, r->s->id,
                                        &running, code);
        else
            rc = dk_api_exec_inspect(&r->s->http, r->call, r->eid, &running,
                                     code);
        if (rc || !running)
            return rc;
        if (poll_pause(r, &pause)) {
            *ended = 0;
            return 0;
        }
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

/*
 * A command of the core's wrapper without stdin, in a session: to the
 * session's runner, started first when there is none (or it died since
 * the command before).  Returns 1 when the runner cannot take it (the
 * caller execs it), 0 when it runs, or an error.
 */
static int start_runner_path(struct run *r, const char *const *argv)
{
    struct dk_session *s = r->s;
    const char *swept[7];
    char *line;
    size_t len;
    int rc = 0, tries;

    if (s->runner.off || s->dead || r->with_stdin ||
        sweeping_argv(argv, swept) == NULL)
        return 1;
    if (s->sweep.fl) {
        int done;

        /* The KILL of what the command before left: as in
         * start_exec_path(). */
        if (dk_http_poll(&s->sweep, r->call, 2000, &done) != 0 || !done)
            dk_http_abandon(&s->sweep);
    }
    line = runner_line(argv, r->spec->cwd ? r->spec->cwd : s->sb_workdir,
                       r->spec->envp, &len);
    if (line == NULL)
        return dk_host->set_error(r->call, ATP_E_NOMEM, "out of memory");
    for (tries = 0; tries < 2; tries++) {
        if (s->runner.up && runner_gone(s))
            runner_drop(s);
        if (!s->runner.up && (rc = runner_start(r->call, s)) != 0)
            break;
        /* A runner that went after the command before takes nothing:
         * the command has not run, a new runner gets it. */
        if ((rc = runner_send(r->call, s, line, len)) == 0)
            break;
        runner_drop(s);
    }
    free(line);
    if (rc < 0 && (rc == ATP_E_BACKEND || rc == ATP_E_TIMEOUT) &&
        !s->runner.up)
        rc = dk_host->set_error(r->call, rc, "cannot hand the command to the "
                                "command runner in container %.12s", s->id);
    if (rc)
        return rc;
    /* The runner's connection is the command's until its end records. */
    r->hj = s->runner.hj;
    r->dm = s->runner.dm;
    memcpy(r->eid, s->runner.eid, sizeof(r->eid));
    memset(&s->runner.hj, 0, sizeof(s->runner.hj));
    s->runner.hj.fd = CURL_SOCKET_BAD;
    s->runner.up = 0;
    r->runner = 1;
    r->swept = 1;
    r->usage = 1;
    return 0;
}

/* The runner's connection back to the session, when the command's end
 * came in band; else it is closed (a new runner takes the next one). */
static void runner_return(struct run *r)
{
    struct dk_session *s = r->s;

    if (!r->runner || r->hj.easy == NULL)
        return;
    if (r->ends == 3 && !r->lost && !r->broken) {
        s->runner.hj = r->hj;
        s->runner.dm = r->dm;
        s->runner.up = 1;
    } else {
        dk_hijack_close(&r->hj);
    }
    memset(&r->hj, 0, sizeof(r->hj));
    r->hj.fd = CURL_SOCKET_BAD;
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
    if (r.run_path)
        rc = start_run_path(&r, spec->argv);
    else if ((rc = start_runner_path(&r, spec->argv)) == 1)
        rc = start_exec_path(&r, spec->argv);
    if (rc)
        goto out;
    rc = pump(&r);
    if (rc)
        goto out;
    runner_return(&r);
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
            (!r.swept || r.held || (r.exited && !r.runner) || r.late ||
             r.signalled || r.broken || r.lost))
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
    runner_return(&r);
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
