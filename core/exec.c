/*
 * core/exec.c - what the core does for a command while a plugin runs it:
 * the kill schedule, the process group the wrapper announces, and the
 * command's stdin.
 *
 * The schedule is the one place that decides when a command gets
 * SIGTERM, when SIGKILL and when waiting for it stops (plugin.h,
 * atp_exec_spec).  Plugins ask it with host->exec_due() and deliver what
 * it says their own way; host->spawn() (spawn.c) asks it for host
 * processes.  The stdin buffer is the one pump between the caller's
 * descriptor and a plugin's transport, a descriptor or an RPC.
 */
#define _GNU_SOURCE
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define MS 1000000LL
/* After SIGKILL, how long a command may take to be seen ending. */
#define KILL_GIVE_UP_MS 5000
/* After the drain's SIGKILL: only output already buffered is left. */
#define DRAIN_GIVE_UP_MS 500
/* How long output written before the exit may trail the exit's news. */
#define CATCH_UP_MS 5000
#define STDIN_CHUNK (256 * 1024)

void atp__exec_init(struct atp__exec *x, const struct atp__exec_plan *p)
{
    memset(x, 0, sizeof(*x));
    x->plan = *p;
    x->start_ns = atp__now_ns();
    if (p->enforce_budget && p->timeout_ms > 0)
        x->term_at = x->start_ns + p->timeout_ms * MS;
    x->stdin_fd = p->stdin_fd;
    x->sniffing = p->announce_pgid;
}

void atp__exec_release(struct atp__exec *x)
{
    free(x->in_buf);
    x->in_buf = NULL;
}

/* ms from @now until @at (0: never), for a poll; -1 for never. */
static int64_t ms_until(int64_t now, int64_t at)
{
    if (at == 0)
        return -1;
    return at <= now ? 0 : (at - now + MS - 1) / MS;
}

static void take_min(int64_t *cur, int64_t v)
{
    if (v >= 0 && (*cur < 0 || v < *cur))
        *cur = v;
}

/*
 * Has the output come as far as the exit?  A transport may deliver the
 * exit status before output that was written earlier (a loaded router),
 * and the drain is for what holds the output after the command, not for
 * output still on its way: it starts when what the wrapper wrote is in,
 * the group's announcement (its first line) and, from a measuring
 * wrapper, the records it writes after the command.  A KILL sent already
 * may have ended the wrapper before it wrote them.
 */
static int caught_up(const struct atp__exec *x, unsigned state)
{
    if ((state & ATP_EXEC_ENDED) || x->kill_sent)
        return 1;
    if (x->plan.announce_pgid && x->sniffing)
        return 0;
    if (x->plan.trailer)
        return x->tail_is_end;
    return !x->plan.usage || (x->rec_seen[0] && x->rec_seen[1]);
}

static int kill_now(struct atp__exec *x, int64_t now, int64_t give_up_ms)
{
    x->kill_sent = 1;
    x->stop_at = now + give_up_ms * MS;
    return ATP_DUE_KILL;
}

int atp__exec_due(struct atp__exec *x, int cancelled, unsigned state,
                  int64_t *wait_ms)
{
    int64_t now = atp__now_ns(), grace = x->plan.grace_ms > 0
                                             ? x->plan.grace_ms
                                             : 1;
    int64_t wait = -1;
    int due = ATP_DUE_NONE;

    if ((state & ATP_EXEC_EXITED) && !x->exited && !x->exit_seen_at)
        x->exit_seen_at = now;
    /* Output that never catches up (a stream that never answers) is
     * waited for CATCH_UP_MS, then the drain has it. */
    if ((state & ATP_EXEC_EXITED) && !x->exited &&
        (caught_up(x, state) || now >= x->exit_seen_at + CATCH_UP_MS * MS)) {
        x->exited = 1;
        x->drain_at = now + (x->plan.drain_ms > 0 ? x->plan.drain_ms : 0) *
                                MS;
        /* Seen ending after the SIGKILL: what still holds the output
         * escaped the group and the kill; only buffered output is left. */
        if (x->kill_sent && !x->stop_sent &&
            x->stop_at > now + DRAIN_GIVE_UP_MS * MS)
            x->stop_at = now + DRAIN_GIVE_UP_MS * MS;
    }
    if (x->term_delivering && !x->kill_sent) {
        /* The grace is the command's from the TERM's arrival, not from
         * the decision: a plugin delivers a TERM between the call that
         * asked for it and its next one (a request that can take
         * seconds), or says with ATP_EXEC_SIGNALLING that it is still on
         * its way. */
        x->kill_at = now + grace * MS;
        if (!(state & ATP_EXEC_SIGNALLING))
            x->term_delivering = 0;
    }
    if (!x->term_sent && !x->kill_sent) {
        if (cancelled && !x->exited) {
            x->cancelled = 1;
            x->term_sent = 1;
            x->term_delivering = 1;
            x->kill_at = now + grace * MS;
            due = ATP_DUE_TERM;
        } else if (x->term_at && now >= x->term_at && !x->exited &&
                   !x->exit_seen_at && !x->queued_since) {
            /* (A command known to have exited is not out of budget,
             * however late its output.) */
            x->timed_out = 1;
            x->term_sent = 1;
            x->term_delivering = 1;
            x->kill_at = now + grace * MS;
            due = ATP_DUE_TERM;
        }
    }
    if (due == ATP_DUE_NONE && !x->kill_sent) {
        if (x->kill_at && now >= x->kill_at)
            /* The command already ended: only what escaped its group
             * holds the output, and the group's SIGKILL cannot reach it. */
            due = kill_now(x, now, x->exited ? DRAIN_GIVE_UP_MS
                                             : KILL_GIVE_UP_MS);
        else if (x->drain_at && now >= x->drain_at && !x->term_sent)
            /* After a TERM the grace is the command's, whoever exits. */
            due = kill_now(x, now, DRAIN_GIVE_UP_MS);
        else if (state & ATP_EXEC_ENDED)
            /* What is left of it (background jobs) goes with it. */
            due = kill_now(x, now, DRAIN_GIVE_UP_MS);
        else if (x->plan.backstop_ns && now >= x->plan.backstop_ns &&
                 !x->queued_since) {
            /* Budget, grace, drain and margin all spent (by the command,
             * or by output that never caught up with its exit). */
            if (!x->cancelled && !x->exit_seen_at)
                x->timed_out = 1;
            due = kill_now(x, now, DRAIN_GIVE_UP_MS);
        } else if (cancelled && x->exited) {
            /* Cancelled while only descendants hold the output. */
            x->cancelled = 1;
            due = kill_now(x, now, DRAIN_GIVE_UP_MS);
        }
    }
    if (due == ATP_DUE_NONE && x->stop_at && now >= x->stop_at &&
        !x->stop_sent) {
        x->stop_sent = 1;
        due = ATP_DUE_STOP;
    }
    if (wait_ms) {
        if (!x->term_sent && !x->kill_sent && !x->exited &&
            !x->queued_since)
            take_min(&wait, ms_until(now, x->term_at));
        if (x->exit_seen_at && !x->exited)
            take_min(&wait,
                     ms_until(now, x->exit_seen_at + CATCH_UP_MS * MS));
        if (!x->kill_sent) {
            take_min(&wait, ms_until(now, x->kill_at));
            if (!x->term_sent)
                take_min(&wait, ms_until(now, x->drain_at));
            if (!x->queued_since)
                take_min(&wait, ms_until(now, x->plan.backstop_ns));
        }
        if (!x->stop_sent)
            take_min(&wait, ms_until(now, x->stop_at));
        if (due != ATP_DUE_NONE)
            wait = 0; /* ask again at once: more may be due */
        *wait_ms = wait;
    }
    return due;
}

void atp__exec_queued(struct atp__exec *x, atp_call *call, int queued)
{
    int64_t now = atp__now_ns(), waited;

    if (queued) {
        if (!x->queued_since)
            x->queued_since = now;
        return;
    }
    if (!x->queued_since)
        return;
    /* Begun: everything that counts the command's time moves on by the
     * wait. */
    waited = now - x->queued_since;
    x->queued_since = 0;
    x->queue_ns += waited;
    if (x->term_at)
        x->term_at += waited;
    if (x->plan.backstop_ns)
        x->plan.backstop_ns += waited;
    if (call->deadline_ns)
        call->deadline_ns += waited;
}

/* ---- the process group the wrapper announces ---------------------------- */

size_t atp__exec_sniff(struct atp__exec *x, const char **buf, size_t *len)
{
    static const char mark[] = ATP__PGID_MARK;
    const size_t mlen = sizeof(mark) - 1;

    while (*len > 0 && x->sniffing) {
        char c = **buf;
        int ours;

        if (x->sniff_len < mlen)
            ours = c == mark[x->sniff_len];
        else
            ours = (c == '\n' || (c >= '0' && c <= '9')) &&
                   x->sniff_len < sizeof(x->sniff) - 1;
        if (!ours) {
            /* Not the announcement (the wrapper did not run as ours):
             * what was held back is output. */
            x->sniffing = 0;
            return x->sniff_len;
        }
        (*buf)++;
        (*len)--;
        if (c == '\n') {
            x->sniff[x->sniff_len] = '\0';
            x->pgid = strtol(x->sniff + mlen, NULL, 10);
            x->sniffing = 0;
            x->sniff_len = 0;
            return 0;
        }
        x->sniff[x->sniff_len++] = c;
    }
    return 0;
}

/* ---- the records the measuring wrapper ends its output with ------------- */

#define END_MARK ATP__END_MARK
#define USAGE_MARK "\036atp-usage "

/* The held stderr line, complete: the report, or 0 when it is not one. */
static int usage_parse(struct atp__exec *x)
{
    const char *p = x->rec_held[1] + strlen(USAGE_MARK);
    long long cpu, peak;
    int n = -1;

    x->rec_held[1][x->rec_len[1]] = '\0';
    if (sscanf(p, "%lld %lld%n", &cpu, &peak, &n) != 2 || n < 0)
        return 0;
    p += n;
    if (strcmp(p, " x\n") == 0)
        x->usage_by_shell = 1;
    else if (strcmp(p, "\n") != 0)
        return 0;
    x->usage_cpu_ns = cpu >= 0 ? cpu : -1;
    x->usage_peak = peak >= 0 ? peak : -1;
    return 1;
}

/* Can @c come next in stream @i's record, after what is held? */
static int record_char(const struct atp__exec *x, int i, char c)
{
    const char *mark = i ? USAGE_MARK : END_MARK;
    size_t mlen = strlen(mark), len = x->rec_len[i];

    if (len < mlen)
        return c == mark[len];
    return i == 1 && len < sizeof(x->rec_held[1]) - 1 &&
           (c == '\n' || c == ' ' || c == '-' || c == 'x' ||
            (c >= '0' && c <= '9'));
}

int atp__exec_record_filter(struct atp__exec *x, int stream, const char *buf,
                            size_t len,
                            int (*emit)(void *ctx, int stream,
                                        const void *buf, size_t len),
                            void *ctx)
{
    int i = stream == ATP_STDERR, rc = 0;
    char *held = x->rec_held[i];

    while (len > 0 && rc == 0) {
        char c;

        if (x->rec_len[i] == 0) {
            const char *rs = x->rec_seen[i] ? NULL : memchr(buf, '\036', len);
            size_t n = rs ? (size_t)(rs - buf) : len;

            if (n > 0)
                rc = emit(ctx, stream, buf, n);
            buf += n;
            len -= n;
            if (len > 0) {
                held[x->rec_len[i]++] = *buf++;
                len--;
            }
            continue;
        }
        c = *buf;
        if (!record_char(x, i, c)) {
            /* Not the record: the command's own bytes; @c is looked at
             * again (it may start the record itself). */
            rc = emit(ctx, stream, held, x->rec_len[i]);
            x->rec_len[i] = 0;
            continue;
        }
        held[x->rec_len[i]++] = c;
        buf++;
        len--;
        if (c == '\n') {
            if (i == 0 || usage_parse(x))
                x->rec_seen[i] = 1;
            else
                rc = emit(ctx, stream, held, x->rec_len[i]);
            x->rec_len[i] = 0;
        }
    }
    return rc;
}

int atp__exec_trailer_filter(struct atp__exec *x, int stream,
                             const char *buf, size_t len,
                             int (*emit)(void *ctx, int stream,
                                         const void *buf, size_t len),
                             void *ctx)
{
    const size_t mlen = strlen(END_MARK);
    char last[sizeof(x->tail_held)];
    size_t n_last, keep, from_held, k;
    int rc = 0;

    if (stream != ATP_STDOUT)
        return len ? emit(ctx, stream, buf, len) : 0;
    /* The last bytes of what is held followed by @buf. */
    n_last = x->tail_len + len < mlen ? x->tail_len + len : mlen;
    for (k = 0; k < n_last; k++) {
        size_t at = x->tail_len + len - n_last + k;

        last[k] = at < x->tail_len ? x->tail_held[at]
                                   : buf[at - x->tail_len];
    }
    /* The longest end of them that begins the record. */
    for (keep = n_last; keep > 0; keep--)
        if (memcmp(last + n_last - keep, END_MARK, keep) == 0)
            break;
    from_held = keep > len ? keep - len : 0;
    if (x->tail_len > from_held)
        rc = emit(ctx, stream, x->tail_held, x->tail_len - from_held);
    if (rc == 0 && len > keep)
        rc = emit(ctx, stream, buf, len - keep);
    memcpy(x->tail_held, last + n_last - keep, keep);
    x->tail_len = keep;
    x->tail_is_end = keep == mlen;
    return rc;
}

void atp__exec_record_drop(struct atp__exec *x)
{
    /* What is held at the end is the start of a record by the filter's
     * rule: the wrapper's, cut off with the stream (a cancel, a
     * teardown), not the command's output.  A command whose own last
     * bytes were a record's first ones ("\036atp-..."), with its stream
     * cut right after them, loses those bytes. */
    x->rec_len[0] = x->rec_len[1] = 0;
    x->tail_len = 0;
}

void atp__exec_usage_apply(const struct atp__exec *x, atp_exec_outcome *out)
{
    if (!x->rec_seen[1])
        return;
    /* The shell's status: a signal N is 128+N there. */
    if (x->usage_by_shell)
        out->flags |= ATP_OUTCOME_SIGNAL_AS_EXIT;
    if ((out->flags & ATP_OUTCOME_USAGE) ||
        out->struct_size < ATP_EXEC_OUTCOME_SIZE_V1_2 ||
        (x->usage_cpu_ns < 0 && x->usage_peak < 0))
        return;
    out->flags |= ATP_OUTCOME_USAGE;
    out->cpu_ns = x->usage_cpu_ns;
    out->max_rss_bytes = x->usage_peak;
}

/*
 * $0: signal name, $1: group id, $2: the exec's marker.  The group first,
 * once: signal 0 finds the form this kill takes (dash's needs "--";
 * busybox's signals the group and then fails on "--", so trying one form
 * after the other would signal it twice); a group that is gone leaves its
 * leader to try.  Then whatever left the group but carries the marker in
 * its environment (the group's members, signalled already, are skipped).
 */
static const char group_killer[] =
    "s=$0 g=$1 m=$2; "
    "if kill -s 0 -- -\"$g\" 2>/dev/null; then kill -s \"$s\" -- -\"$g\"; "
    "else kill -s \"$s\" -\"$g\" || kill -s \"$s\" \"$g\"; fi 2>/dev/null; "
    "for p in /proc/[0-9]*; do "
    "{ read -r st <\"$p/stat\"; } 2>/dev/null || continue; "
    "set -- ${st##*) }; [ \"$3\" = \"$g\" ] && continue; "
    "{ tr '\\000' '\\n' <\"$p/environ\"; } 2>/dev/null | grep -qx \"$m\" && "
    "kill -s \"$s\" \"${p#/proc/}\" 2>/dev/null; done; exit 0";

const char *const *atp__exec_kill_argv(struct atp__exec *x, int sig)
{
    if (x->pgid <= 0)
        return NULL;
    snprintf(x->kill_pgid, sizeof(x->kill_pgid), "%ld", x->pgid);
    snprintf(x->kill_sig, sizeof(x->kill_sig), "%s",
             sig == SIGKILL ? "KILL" : sig == SIGINT ? "INT" : "TERM");
    x->kill_argv[0] = "/bin/sh";
    x->kill_argv[1] = "-c";
    x->kill_argv[2] = group_killer;
    snprintf(x->kill_marker, sizeof(x->kill_marker), ATP__MARKER "%s",
             x->plan.exec_id ? x->plan.exec_id : "");
    x->kill_argv[3] = x->kill_sig;
    x->kill_argv[4] = x->kill_pgid;
    x->kill_argv[5] = x->kill_marker;
    x->kill_argv[6] = NULL;
    return x->kill_argv;
}

/* ---- stdin ------------------------------------------------------------------ */

long atp__exec_stdin_peek(struct atp__exec *x, const void **data, int *eof)
{
    *data = NULL;
    *eof = 0;
    if (x->in_off < x->in_len) {
        *data = x->in_buf + x->in_off;
        return (long)(x->in_len - x->in_off);
    }
    if (x->in_eof || x->stdin_fd < 0) {
        *eof = 1;
        return 0;
    }
    if (x->in_buf == NULL && (x->in_buf = malloc(STDIN_CHUNK)) == NULL)
        return ATP_E_NOMEM;
    for (;;) {
        struct pollfd p = {x->stdin_fd, POLLIN, 0};
        ssize_t n;

        /* Never block: a blocking descriptor is read only when ready. */
        if (poll(&p, 1, 0) == 0)
            return 0;
        n = read(x->stdin_fd, x->in_buf, STDIN_CHUNK);
        if (n > 0) {
            x->in_len = (size_t)n;
            x->in_off = 0;
            x->in_total += (uint64_t)n;
            if (x->in_progress)
                x->in_progress(x->in_progress_ctx, (size_t)n);
            *data = x->in_buf;
            return (long)n;
        }
        if (n == 0) {
            x->in_eof = 1;
            *eof = 1;
            return 0;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        x->in_eof = 1;
        return atp__error(ATP_E_IO, "reading the command's stdin: %s",
                          strerror(errno));
    }
}

void atp__exec_stdin_consume(struct atp__exec *x, size_t n)
{
    if (n > x->in_len - x->in_off)
        n = x->in_len - x->in_off;
    x->in_off += n;
}

void atp__exec_stdin_drop(struct atp__exec *x)
{
    x->in_off = x->in_len = 0;
    x->in_eof = 1;
}

ssize_t atp__write_nosig(int fd, const void *buf, size_t len)
{
    sigset_t pipe_set, old;
    ssize_t n;
    int saved;

    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    n = write(fd, buf, len);
    saved = errno;
    if (n < 0 && saved == EPIPE) {
        struct timespec zero = {0, 0};

        /* Consume the SIGPIPE this thread raised, if it is pending. */
        sigtimedwait(&pipe_set, NULL, &zero);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    errno = saved;
    return n;
}

int atp__exec_stdin_to_fd(struct atp__exec *x, int fd, int *done)
{
    *done = 0;
    for (;;) {
        const void *data;
        int eof;
        long n = atp__exec_stdin_peek(x, &data, &eof);
        ssize_t w;

        if (n < 0)
            return (int)n;
        if (n == 0) {
            if (eof) {
                *done = 1;
                return 0;
            }
            return ATP_STDIN_WAIT_INPUT;
        }
        w = atp__write_nosig(fd, data, (size_t)n);
        if (w > 0) {
            atp__exec_stdin_consume(x, (size_t)w);
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return ATP_STDIN_WAIT_FD;
        /* The command closed its stdin: the rest is not wanted, as a
         * pipe says with EPIPE. */
        atp__exec_stdin_drop(x);
        *done = 1;
        return 0;
    }
}
