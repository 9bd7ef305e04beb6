/*
 * Tests of the local backend through the public libatp API: exit codes and
 * signals, line framing of real output, timeouts and cancellation that
 * kill the whole process tree, descriptor hygiene, stdin, the drain grace,
 * environment precedence and secrecy, workdirs, output limits and spill
 * files, and bounded memory on a gigabyte of output.
 *
 * Every test runs real commands under /bin/sh in a scratch directory.
 * Waiting is done by polling with deadlines; the only fixed delays are the
 * ones a scenario is about (a cancel "after 300 ms").
 */
#define _GNU_SOURCE
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <atp/atp.h>

#if !defined(LOCAL_FDS) || !defined(LOCAL_BURST)
#error "LOCAL_FDS and LOCAL_BURST must name the helper programs"
#endif

extern char **environ;

/* Grace periods every test config uses, short to keep the suite fast. */
#define GRACE_S 0.3
#define DRAIN_S 0.5
#define BASE_INI "[atp]\nkill_grace_s = 300ms\ndrain_grace_s = 500ms\n"

/* Slack for a busy two-core machine on top of what a bound promises,
 * times the slowdown of the program under a sanitizer. */
#define SLACK_S (1.5 * slowdown())

/* ---- helpers ------------------------------------------------------------- */

/* How many times slower than native this program runs: ATP_TEST_SLOWDOWN,
 * as tests/lib.sh reads it (1, or the factor build-aux/sanitize sets). */
static double slowdown(void)
{
    const char *s = getenv("ATP_TEST_SLOWDOWN");
    long v = s ? strtol(s, NULL, 10) : 1;

    return v >= 1 ? (double)v : 1.0;
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s)
{
    struct timespec ts;

    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* One line as the callback saw it. */
struct line {
    int stream;
    char *text; /* NUL-terminated copy; may hold NUL bytes before len */
    size_t len;
    unsigned flags;
};

/* Everything a command printed, in arrival order. */
struct capture {
    struct line *v;
    size_t n, cap;
    atomic_int ready; /* a stdout line "ready" arrived */
    double stall_s;   /* a slow consumer: pause this long at line 1 */
};

static void capture_line(int stream, const char *text, size_t len,
                         unsigned flags, void *payload)
{
    struct capture *c = payload;
    struct line *l;

    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 64;
        struct line *grown = realloc(c->v, cap * sizeof(*grown));

        assert_non_null(grown);
        c->v = grown;
        c->cap = cap;
    }
    if (c->n == 0 && c->stall_s > 0)
        sleep_s(c->stall_s);
    l = &c->v[c->n++];
    l->stream = stream;
    l->len = len;
    l->flags = flags;
    l->text = malloc(len + 1);
    assert_non_null(l->text);
    memcpy(l->text, text, len);
    l->text[len] = '\0';
    if (stream == ATP_STDOUT && len == 5 && memcmp(text, "ready", 5) == 0)
        atomic_store(&c->ready, 1);
}

static void capture_free(struct capture *c)
{
    size_t i;

    for (i = 0; i < c->n; i++)
        free(c->v[i].text);
    free(c->v);
    c->v = NULL;
    c->n = c->cap = 0;
}

/* Number of lines of @stream. */
static size_t n_lines(const struct capture *c, int stream)
{
    size_t i, n = 0;

    for (i = 0; i < c->n; i++)
        n += c->v[i].stream == stream;
    return n;
}

/* The @k-th line of @stream (the test fails when there is none). */
static const struct line *nth(const struct capture *c, int stream, size_t k)
{
    size_t i, left = k;

    for (i = 0; i < c->n; i++)
        if (c->v[i].stream == stream && left-- == 0)
            return &c->v[i];
    fail_msg("no line %zu on stream %d", k, stream);
    return NULL;
}

/* True when some line of any stream contains @needle. */
static int seen(const struct capture *c, const char *needle)
{
    size_t i;

    for (i = 0; i < c->n; i++)
        if (strstr(c->v[i].text, needle) != NULL)
            return 1;
    return 0;
}

/* Check the number of lines of @stream; show them all if it is wrong. */
static void expect_lines(const struct capture *c, int stream, size_t want)
{
    size_t i;

    if (n_lines(c, stream) == want)
        return;
    for (i = 0; i < c->n && i < 40; i++)
        print_message("# %s [%x] %s\n",
                      c->v[i].stream == ATP_STDOUT ? "out" : "err",
                      c->v[i].flags, c->v[i].text);
    fail_msg("%zu lines on stream %d, expected %zu", n_lines(c, stream),
             stream, want);
}

struct fx {
    char dir[PATH_MAX]; /* scratch workdir, realpath'd */
    atp_config *cfg;
    atp_backend *be;
};

static void be_close(struct fx *f)
{
    atp_backend_free(f->be);
    atp_config_free(f->cfg);
    f->be = NULL;
    f->cfg = NULL;
}

/* (Re)open the backend from configuration text. */
static void be_open(struct fx *f, const char *ini)
{
    int rc;

    be_close(f);
    rc = atp_config_load_string(&f->cfg, ini, "test.ini");
    if (rc)
        fail_msg("config: %s", atp_last_error());
    rc = atp_backend_open(&f->be, f->cfg, NULL);
    if (rc)
        fail_msg("backend: %s", atp_last_error());
    assert_string_equal(atp_backend_plugin(f->be), "local");
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    const char *tmp = getenv("TMPDIR");
    char tmpl[PATH_MAX];

    snprintf(tmpl, sizeof(tmpl), "%s/atp-test-local-XXXXXX",
             tmp && *tmp ? tmp : "/tmp");
    if (f == NULL || mkdtemp(tmpl) == NULL ||
        realpath(tmpl, f->dir) == NULL) {
        free(f);
        return -1;
    }
    *state = f;
    be_open(f, BASE_INI);
    return 0;
}

static int rm_entry(const char *path, const struct stat *st, int type,
                    struct FTW *ftw)
{
    (void)st;
    (void)type;
    (void)ftw;
    remove(path);
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;

    be_close(f);
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* @name inside the scratch directory. */
static const char *in_dir(const struct fx *f, const char *name)
{
    static char path[PATH_MAX + 64];

    snprintf(path, sizeof(path), "%s/%s", f->dir, name);
    return path;
}

/* One-shot run of @cmd over the scratch directory; lines into @cap. */
static int run_in(struct fx *f, const char *cmd, double timeout_s,
                  int stdin_fd, struct capture *cap, atp_result *res)
{
    atp_session_opts so = ATP_SESSION_OPTS_INIT;
    atp_exec_opts eo = ATP_EXEC_OPTS_INIT;

    so.workdir = f->dir;
    so.timeout_s = timeout_s;
    eo.on_line = capture_line;
    eo.line_payload = cap;
    eo.stdin_fd = stdin_fd;
    return atp_run(f->be, &so, cmd, &eo, 1, res);
}

static int run(struct fx *f, const char *cmd, double timeout_s,
               struct capture *cap, atp_result *res)
{
    return run_in(f, cmd, timeout_s, -1, cap, res);
}

/* The pid a command wrote into @name in the scratch directory. */
static pid_t read_pid(const struct fx *f, const char *name)
{
    char buf[32] = {0};
    FILE *fp = fopen(in_dir(f, name), "r");
    long v;

    if (fp == NULL)
        fail_msg("%s: %s", name, strerror(errno));
    if (fgets(buf, sizeof(buf), fp) == NULL)
        buf[0] = '\0';
    fclose(fp);
    v = strtol(buf, NULL, 10);
    assert_true(v > 1);
    return (pid_t)v;
}

/*
 * True when @pid is no longer running: gone, or a zombie waiting for an
 * init that may not reap.
 */
static int pid_dead(pid_t pid)
{
    char path[64], buf[512], *paren;
    FILE *fp;
    size_t n;

    if (kill(pid, 0) == -1 && errno == ESRCH)
        return 1;
    snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
    fp = fopen(path, "r");
    if (fp == NULL)
        return 1;
    n = fread(buf, 1, sizeof(buf) - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    paren = strrchr(buf, ')');
    return paren && paren[1] == ' ' && (paren[2] == 'Z' || paren[2] == 'X');
}

/*
 * Wait up to @within_s for @pid to be dead.  A killed process may take a
 * moment to be torn down; one still alive after that was not killed.
 */
static void assert_dead(pid_t pid, double within_s)
{
    double end = now_s() + within_s;

    while (!pid_dead(pid)) {
        if (now_s() > end) {
            kill(pid, SIGKILL);
            fail_msg("process %ld outlived its command", (long)pid);
        }
        sleep_s(0.01);
    }
}

/* True under valgrind, whose preload library is in LD_PRELOAD. */
static int under_valgrind(void)
{
    const char *p = getenv("LD_PRELOAD");

    return p != NULL && strstr(p, "vgpreload") != NULL;
}

static void write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, buf, len);

        if (w < 0 && errno == EINTR)
            continue;
        assert_true(w > 0);
        buf += w;
        len -= (size_t)w;
    }
}

static size_t count_fds(void)
{
    char path[64];
    size_t n = 0;
    int fd;

    for (fd = 0; fd < 4096; fd++) {
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        n += access(path, F_OK) == 0;
    }
    return n;
}

/* ---- exit status --------------------------------------------------------- */

static void exit_codes(void **state)
{
    static const int codes[] = {0, 3, 255};
    struct fx *f = *state;
    size_t i;

    for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        struct capture cap = {0};
        atp_result res = ATP_RESULT_INIT;
        char cmd[32];

        snprintf(cmd, sizeof(cmd), "exit %d", codes[i]);
        assert_int_equal(run(f, cmd, 0, &cap, &res), 0);
        assert_int_equal(res.exit_code, codes[i]);
        assert_int_equal(res.signal, 0);
        assert_int_equal(res.status,
                         codes[i] ? ATP_STATUS_EXIT : ATP_STATUS_OK);
        assert_int_equal(cap.n, 0);
        capture_free(&cap);
    }
}

static void signal_death(void **state)
{
    struct fx *f = *state;
    struct capture cap = {0};
    atp_result res = ATP_RESULT_INIT;

    assert_int_equal(run(f, "kill -SEGV $$", 10, &cap, &res), 0);
    assert_int_equal(res.signal, SIGSEGV);
    assert_int_equal(res.exit_code, -1);
    assert_int_equal(res.status, ATP_STATUS_EXIT);
    /* SIGTERM within the budget is the command's own doing. */
    assert_int_equal(run(f, "kill -TERM $$", 10, &cap, &res), 0);
    assert_int_equal(res.signal, SIGTERM);
    assert_int_equal(res.status, ATP_STATUS_EXIT);
    capture_free(&cap);
}

static void exit_124_by_itself_is_not_a_timeout(void **state)
{
    static const int codes[] = {124, 137, 143};
    struct fx *f = *state;
    size_t i;

    for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        struct capture cap = {0};
        atp_result res = ATP_RESULT_INIT;
        char cmd[32];

        snprintf(cmd, sizeof(cmd), "exit %d", codes[i]);
        assert_int_equal(run(f, cmd, 5, &cap, &res), 0);
        assert_int_equal(res.exit_code, codes[i]);
        assert_int_equal(res.status, ATP_STATUS_EXIT);
        capture_free(&cap);
    }
}

/*
 * A caller that ignores SIGCHLD gets its children reaped by the kernel:
 * exit statuses would be lost, so a run fails clearly instead of passing
 * off a failing command as "ok".
 */
static void ignored_sigchld_is_an_error_not_success(void **state)
{
    struct fx *f = *state;
    struct capture cap = {0};
    atp_result res = ATP_RESULT_INIT;
    struct sigaction ign, old;
    int rc;

    memset(&ign, 0, sizeof(ign));
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    assert_int_equal(sigaction(SIGCHLD, &ign, &old), 0);
    rc = run(f, "touch ran; exit 3", 0, &cap, &res);
    sigaction(SIGCHLD, &old, NULL);
    assert_int_equal(rc, ATP_E_BACKEND);
    assert_int_equal(res.status, ATP_STATUS_INFRA_ERROR);
    assert_non_null(strstr(res.message, "SIGCHLD"));
    assert_int_not_equal(access(in_dir(f, "ran"), F_OK), 0);
    /* With the default disposition back, the status is right again. */
    assert_int_equal(run(f, "exit 3", 0, &cap, &res), 0);
    assert_int_equal(res.exit_code, 3);
    capture_free(&cap);
}

static void command_not_found(void **state)
{
    struct fx *f = *state;
    struct capture cap = {0};
    atp_result res = ATP_RESULT_INIT;

    assert_int_equal(run(f, "atp-no-such-command-here", 0, &cap, &res), 0);
    assert_int_equal(res.exit_code, 127);
    assert_int_equal(res.status, ATP_STATUS_EXIT);
    assert_true(n_lines(&cap, ATP_STDERR) >= 1);
    assert_true(seen(&cap, "atp-no-such-command-here"));
    capture_free(&cap);
}

/* ---- output framing ------------------------------------------------------ */

static void stdout_and_stderr_apart_in_order(void **state)
{
    struct fx *f = *state;
    struct capture cap = {0};
    atp_result res = ATP_RESULT_INIT;
    uint64_t out_bytes = 0, err_bytes = 0;
    char want[32];
    size_t i;

    assert_int_equal(run(f, "i=1; while [ $i -le 300 ]; do echo out$i; "
                            "echo err$i >&2; i=$((i+1)); done", 0, &cap,
                         &res), 0);
    assert_int_equal(res.status, ATP_STATUS_OK);
    assert_int_equal(n_lines(&cap, ATP_STDOUT), 300);
    assert_int_equal(n_lines(&cap, ATP_STDERR), 300);
    for (i = 0; i < 300; i++) {
        const struct line *o = nth(&cap, ATP_STDOUT, i);
        const struct line *e = nth(&cap, ATP_STDERR, i);

        snprintf(want, sizeof(want), "out%zu", i + 1);
        assert_string_equal(o->text, want);
        assert_int_equal(o->len, strlen(want));
        assert_int_equal(o->flags, 0);
        out_bytes += o->len + 1;
        snprintf(want, sizeof(want), "err%zu", i + 1);
        assert_string_equal(e->text, want);
        assert_int_equal(e->flags, 0);
        err_bytes += e->len + 1;
    }
    assert_int_equal(res.stdout_bytes, out_bytes);
    assert_int_equal(res.stderr_bytes, err_bytes);
    assert_false(res.stdout_truncated);
    assert_false(res.stderr_truncated);
    capture_free(&cap);
}

static void last_line_without_newline(void **state)
{
    struct fx *f = *state;
    struct capture cap = {0};
    atp_result res = ATP_RESULT_INIT;
    const struct line *l;

    assert_int_equal(run(f, "printf 'one\\n\\nx\\000y\\ntwo'; "
                            "printf 'e1\\ne2' >&2", 0, &cap, &res), 0);
    assert_int_equal(res.status, ATP_STATUS_OK);
    assert_int_equal(n_lines(&cap, ATP_STDOUT), 4);
    assert_string_equal(nth(&cap, ATP_STDOUT, 0)->text, "one");
    assert_int_equal(nth(&cap, ATP_STDOUT, 0)->flags, 0);
    /* An empty line is a line. */
    assert_int_equal(nth(&cap, ATP_STDOUT, 1)->len, 0);
    assert_int_equal(nth(&cap, ATP_STDOUT, 1)->flags, 0);
    /* NUL bytes are data. */
    l = nth(&cap, ATP_STDOUT, 2);
    assert_int_equal(l->len, 3);
    assert_memory_equal(l->text, "x\0y", 3);
    l = nth(&cap, ATP_STDOUT, 3);
    assert_string_equal(l->text, "two");
    assert_int_equal(l->flags, ATP_LINE_NO_EOL);
    assert_int_equal(n_lines(&cap, ATP_STDERR), 2);
    assert_string_equal(nth(&cap, ATP_STDERR, 0)->text, "e1");
    assert_int_equal(nth(&cap, ATP_STDERR, 0)->flags, 0);
    assert_string_equal(nth(&cap, ATP_STDERR, 1)->text, "e2");
    assert_int_equal(nth(&cap, ATP_STDERR, 1)->flags, ATP_LINE_NO_EOL);
    assert_int_equal(res.stdout_bytes, 12);
    assert_int_equal(res.stderr_bytes, 5);
    capture_free(&cap);
}

/*
 * Reassemble the pieces of the lines of @stream starting at line @k into
 * @len bytes of @ch; returns the index of the next line.
 */
static size_t check_pieces(const struct capture *c, int stream, size_t k,
                           char ch, size_t len, size_t max,
                           unsigned last_flags)
{
    size_t got = 0, i;

    for (;;) {
        const struct line *l = nth(c, stream, k++);

        assert_true(l->len <= max);
        for (i = 0; i < l->len; i++)
            assert_int_equal(l->text[i], ch);
        got += l->len;
        if (!(l->flags & ATP_LINE_PARTIAL)) {
            assert_int_equal(l->flags, last_flags);
            break;
        }
        assert_int_equal(l->len, max); /* only the last piece is short */
    }
    assert_int_equal(got, len);
    return k;
}

static void long_lines_arrive_in_pieces(void **state)
{
    struct fx *f = *state;
    struct capture cap = {0};
    atp_result res = ATP_RESULT_INIT;
    size_t k;

    be_open(f, BASE_INI "max_line = 4096\n");
    assert_int_equal(run(f, "head -c 10000 /dev/zero | tr '\\0' a; echo; "
                            "head -c 8192 /dev/zero | tr '\\0' c; echo; "
                            "echo short; "
                            "head -c 5000 /dev/zero | tr '\\0' b >&2",
                         0, &cap, &res), 0);
    assert_int_equal(res.status, ATP_STATUS_OK);
    k = check_pieces(&cap, ATP_STDOUT, 0, 'a', 10000, 4096, 0);
    assert_int_equal(k, 3); /* 4096 + 4096 + 1808 */
    k = check_pieces(&cap, ATP_STDOUT, k, 'c', 8192, 4096, 0);
    assert_string_equal(nth(&cap, ATP_STDOUT, k)->text, "short");
    assert_int_equal(n_lines(&cap, ATP_STDOUT), k + 1);
    k = check_pieces(&cap, ATP_STDERR, 0, 'b', 5000, 4096, ATP_LINE_NO_EOL);
    assert_int_equal(n_lines(&cap, ATP_STDERR), k);
    assert_int_equal(res.stdout_bytes, 10001 + 8193 + 6);
    assert_int_equal(res.stderr_bytes, 5000);
    capture_free(&cap);
}

/* ---- timeouts ------------------------------------------------------------ */

static void timeout_kills_the_whole_tree(void **state)
{
    struct fx *f = *state;
    struct capture cap = {0};
    atp_result res = ATP_RESULT_INIT;
    double t0, wall;

    t0 = now_s();
    assert_int_equal(run(f, "sh -c 'echo started; printf half; "
                            "sleep 100 & echo $! > bg.pid; sleep 100'",
                         1.0, &cap, &res), 0);
    wall = now_s() - t0;
    assert_int_equal(res.status, ATP_STATUS_TIMEOUT);
    assert_true(res.message[0] != '\0');
    /* Partial output is kept, the unfinished line too. */
    expect_lines(&cap, ATP_STDOUT, 2);
    assert_string_equal(nth(&cap, ATP_STDOUT, 0)->text, "started");
    assert_string_equal(nth(&cap, ATP_STDOUT, 1)->text, "half");
    assert_int_equal(nth(&cap, ATP_STDOUT, 1)->flags, ATP_LINE_NO_EOL);
    assert_true(res.duration_s >= 0.95);
    assert_true(wall < 1.0 + GRACE_S + SLACK_S);
    assert_dead(read_pid(f, "bg.pid"), 0.5);
    capture_free(&cap);
}

static void sigterm_ignored_gets_sigkill_after_grace(void **state)
{
    struct fx *f = *state;
    struct capture cap = {0};
    atp_result res = ATP_RESULT_INIT;
    double t0, wall;

    t0 = now_s();
    assert_int_equal(run(f, "trap '' TERM; sleep 100 & echo $! > bg.pid; "
                            "sleep 100; echo survived", 1.0, &cap, &res), 0);
    wall = now_s() - t0;
    assert_int_equal(res.status, ATP_STATUS_TIMEOUT);
    assert_int_equal(res.signal, SIGKILL);
    assert_int_equal(res.exit_code, -1);
    assert_false(seen(&cap, "survived"));
    /* SIGKILL came after the grace, not with the SIGTERM. */
    assert_true(res.duration_s >= 1.0 + GRACE_S - 0.05);
    assert_true(wall < 1.0 + GRACE_S + SLACK_S);
    assert_dead(read_pid(f, "bg.pid"), 0.5);
    capture_free(&cap);
}

/*
 * When the budget runs out, a descendant that ignores SIGTERM and holds
 * the output open after the leader died still gets SIGKILL after the
 * grace, not only once the (longer) drain grace is over.
 */
static void timeout_kills_descendants_that_outlive_the_leader(void **state)
{
    struct fx *f = *state;
    struct capture cap = {0};
    atp_result res = ATP_RESULT_INIT;
    double t0, wall;

    be_open(f, "[atp]\nkill_grace_s = 300ms\ndrain_grace_s = 20\n");
    t0 = now_s();
    assert_int_equal(run(f, "(trap '' TERM; sleep 100; echo survived) & "
                            "echo $! > bg.pid; sleep 100", 1.0, &cap, &res),
                     0);
    wall = now_s() - t0;
    assert_int_equal(res.status, ATP_STATUS_TIMEOUT);
    assert_false(seen(&cap, "survived"));
    assert_true(wall < 1.0 + GRACE_S + SLACK_S);
    assert_dead(read_pid(f, "bg.pid"), 0.5);
    capture_free(&cap);
}

/* The budget comes from the exec, else the session, else [atp]. */
static void budget_precedence(void **state)
{
    struct fx *f = *state;
    atp_session_opts so = ATP_SESSION_OPTS_INIT;
    atp_exec_opts eo = ATP_EXEC_OPTS_INIT;
    atp_result res = ATP_RESULT_INIT;
    atp_session *s;

    be_open(f, BASE_INI "timeout_s = 400ms\n");
    so.workdir = f->dir;
    assert_int_equal(atp_run(f->be, &so, "sleep 30", NULL, 1, &res), 0);
    assert_int_equal(res.status, ATP_STATUS_TIMEOUT);
    assert_true(res.duration_s >= 0.35 && res.duration_s < 0.4 + SLACK_S);

    so.timeout_s = 30;
    assert_int_equal(atp_session_create(&s, f->be, &so), 0);
    assert_int_equal(atp_session_start(s, &res), 0);
    assert_int_equal(atp_session_exec(s, "sleep 0.6", NULL, &res), 0);
    assert_int_equal(res.status, ATP_STATUS_OK);
    eo.timeout_s = 0.2;
    assert_int_equal(atp_session_exec(s, "sleep 30", &eo, &res), 0);
    assert_int_equal(res.status, ATP_STATUS_TIMEOUT);
    assert_true(res.duration_s < 0.2 + SLACK_S);
    /* A timeout does not end the session. */
    assert_int_equal(atp_session_exec(s, "exit 4", NULL, NULL), 0);
    assert_int_equal(atp_session_exec(s, "exit 5", NULL, &res), 0);
    assert_int_equal(res.exit_code, 5);
    atp_session_free(s);
}

/* A consumer slower than the command's output. */
struct slow {
    atp_session *s;
    double give_up; /* cancel then, so that a failing test still ends */
    unsigned long lines;
};

static void slow_line(int stream, const char *line, size_t len,
                      unsigned flags, void *payload)
{
    struct slow *w = payload;

    (void)stream;
    (void)line;
    (void)len;
    (void)flags;
    if (++w->lines % 256 == 0)
        sleep_s(0.001);
    if (now_s() > w->give_up)
        atp_session_cancel(w->s);
}

/*
 * A command that floods stdout faster than the caller takes it must still
 * be stopped when its budget runs out.
 */
static void timeout_while_flooding_a_slow_consumer(void **state)
{
    struct fx *f = *state;
    atp_session_opts so = ATP_SESSION_OPTS_INIT;
    atp_exec_opts eo = ATP_EXEC_OPTS_INIT;
    atp_result res = ATP_RESULT_INIT;
    struct slow w;
    double t0, wall;

    so.workdir = f->dir;
    so.timeout_s = 1.0;
    memset(&w, 0, sizeof(w));
    assert_int_equal(atp_session_create(&w.s, f->be, &so), 0);
    eo.on_line = slow_line;
    eo.line_payload = &w;
    t0 = now_s();
    w.give_up = t0 + 10;
    atp_session_run(w.s, "yes", &eo, 1, &res);
    wall = now_s() - t0;
    atp_session_free(w.s);
    assert_int_equal(res.status, ATP_STATUS_TIMEOUT);
    assert_true(w.lines > 0);
    assert_true(wall < 1.0 + GRACE_S + SLACK_S);
}

/* ---- cancellation -------------------------------------------------------- */

struct canceller {
    atp_session *s;
    struct capture *cap; /* cancel once it saw "ready" ... */
    double not_before;   /* ... and not before this time */
    double at;           /* when it cancelled */
};

static void *cancel_thread(void *arg)
{
    struct canceller *c = arg;
    double end = now_s() + 10;

    while ((c->cap && !atomic_load(&c->cap->ready)) ||
           now_s() < c->not_before) {
        if (now_s() > end)
            break;
        sleep_s(0.01);
    }
    c->at = now_s();
    atp_session_cancel(c->s);
    return NULL;
}

static void cancel_from_another_thread(void **state)
{
    struct fx *f = *state;
    struct capture cap = {0};
    atp_session_opts so = ATP_SESSION_OPTS_INIT;
    atp_exec_opts eo = ATP_EXEC_OPTS_INIT;
    atp_result res = ATP_RESULT_INIT;
    struct canceller c;
    atp_session *s;
    pthread_t th;
    double back;

    so.workdir = f->dir;
    so.timeout_s = 60;
    assert_int_equal(atp_session_create(&s, f->be, &so), 0);
    assert_int_equal(atp_session_start(s, &res), 0);
    eo.on_line = capture_line;
    eo.line_payload = &cap;
    memset(&c, 0, sizeof(c));
    c.s = s;
    c.cap = &cap;
    c.not_before = now_s() + 0.3;
    assert_int_equal(pthread_create(&th, NULL, cancel_thread, &c), 0);
    assert_int_equal(atp_session_exec(s, "sleep 100 & echo $! > bg.pid; "
                                         "echo ready; sleep 100; "
                                         "echo survived", &eo, &res),
                     ATP_E_CANCELLED);
    back = now_s();
    pthread_join(th, NULL);
    assert_int_equal(res.status, ATP_STATUS_CANCELLED);
    assert_true(seen(&cap, "ready"));
    assert_false(seen(&cap, "survived"));
    assert_true(back - c.at < GRACE_S + SLACK_S);
    assert_dead(read_pid(f, "bg.pid"), 0.5);

    /* The session stays cancelled; closing still works, twice. */
    assert_int_equal(atp_session_exec(s, "touch ran", NULL, &res),
                     ATP_E_CANCELLED);
    assert_int_equal(res.status, ATP_STATUS_CANCELLED);
    assert_int_not_equal(access(in_dir(f, "ran"), F_OK), 0);
    assert_int_equal(atp_session_close(s, &res), 0);
    assert_int_equal(atp_session_close(s, &res), 0);
    atp_session_free(s);
    capture_free(&cap);
}

static void cancel_one_shot_run(void **state)
{
    struct fx *f = *state;
    struct capture cap = {0};
    atp_session_opts so = ATP_SESSION_OPTS_INIT;
    atp_exec_opts eo = ATP_EXEC_OPTS_INIT;
    atp_result res = ATP_RESULT_INIT;
    struct canceller c;
    atp_session *s;
    pthread_t th;

    so.workdir = f->dir;
    assert_int_equal(atp_session_create(&s, f->be, &so), 0);
    eo.on_line = capture_line;
    eo.line_payload = &cap;
    memset(&c, 0, sizeof(c));
    c.s = s;
    c.cap = &cap;
    c.not_before = now_s() + 0.3;
    assert_int_equal(pthread_create(&th, NULL, cancel_thread, &c), 0);
    /* A stubborn command: SIGKILL after the grace is what stops it. */
    assert_int_equal(atp_session_run(s, "trap '' TERM; echo ready; "
                                        "sleep 100", &eo, 1, &res),
                     ATP_E_CANCELLED);
    pthread_join(th, NULL);
    assert_int_equal(res.status, ATP_STATUS_CANCELLED);
    assert_true(now_s() - c.at < GRACE_S + SLACK_S);
    atp_session_free(s);
    capture_free(&cap);
}

struct stopper {
    atp_session *s;
    unsigned long lines;
};

static void stop_at_ready(int stream, const char *line, size_t len,
                          unsigned flags, void *payload)
{
    struct stopper *st = payload;

    (void)stream;
    (void)flags;
    st->lines++;
    if (len == 5 && memcmp(line, "ready", 5) == 0)
        atp_session_cancel(st->s);
}

/* A consumer that has seen enough cancels from its line callback. */
static void cancel_from_the_line_callback(void **state)
{
    struct fx *f = *state;
    atp_session_opts so = ATP_SESSION_OPTS_INIT;
    atp_exec_opts eo = ATP_EXEC_OPTS_INIT;
    atp_result res = ATP_RESULT_INIT;
    struct stopper st;
    double t0;

    so.workdir = f->dir;
    memset(&st, 0, sizeof(st));
    assert_int_equal(atp_session_create(&st.s, f->be, &so), 0);
    eo.on_line = stop_at_ready;
    eo.line_payload = &st;
    t0 = now_s();
    assert_int_equal(atp_session_run(st.s, "echo ready; sleep 100; "
                                           "echo survived", &eo, 1, &res),
                     ATP_E_CANCELLED);
    assert_int_equal(res.status, ATP_STATUS_CANCELLED);
    assert_int_equal(st.lines, 1);
    assert_true(now_s() - t0 < GRACE_S + SLACK_S);
    atp_session_free(st.s);
}

static void cancel_before_start(void **state)
{
    struct fx *f = *state;
    atp_session_opts so = ATP_SESSION_OPTS_INIT;
    atp_result res = ATP_RESULT_INIT;
    atp_session *s;

    so.workdir = f->dir;
    assert_int_equal(atp_session_create(&s, f->be, &so), 0);
    atp_session_cancel(s);
    assert_int_equal(atp_session_run(s, "touch ran", NULL, 1, &res),
                     ATP_E_CANCELLED);
    assert_int_equal(res.status, ATP_STATUS_CANCELLED);
    assert_int_not_equal(access(in_dir(f, "ran"), F_OK), 0);
    assert_int_equal(atp_session_close(s, NULL), 0);
    atp_session_free(s);
}

/* ---- descriptors and stdin ----------------------------------------------- */

static void no_descriptor_leaks_into_the_command(void **state)
{
    struct fx *f = *state;
    struct capture cap = {0};
    atp_result res = ATP_RESULT_INIT;
    char *const argv[] = {(char *)LOCAL_FDS, NULL};
    int nul, p[2], in[2], out[2], hi = 900;
    posix_spawn_file_actions_t fa;
    char buf[8192];
    size_t got = 0;
    ssize_t n;
    pid_t pid;
    int st;

    /* Descriptors a careless library would pass on: no O_CLOEXEC. */
    nul = open("/dev/null", O_RDONLY);
    assert_true(nul >= 0);
    assert_int_equal(pipe(p), 0);
    assert_int_equal(dup2(p[0], hi), hi);

    /* The helper does see inherited descriptors (or this test is moot). */
    assert_int_equal(pipe(out), 0);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    assert_int_equal(posix_spawn(&pid, LOCAL_FDS, &fa, NULL, argv, environ),
                     0);
    posix_spawn_file_actions_destroy(&fa);
    close(out[1]);
    while ((n = read(out[0], buf + got, sizeof(buf) - 1 - got)) > 0)
        got += (size_t)n;
    buf[got] = '\0';
    close(out[0]);
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_non_null(strstr(buf, "\n900 pipe:"));

    assert_int_equal(run(f, LOCAL_FDS, 0, &cap, &res), 0);
    assert_int_equal(res.status, ATP_STATUS_OK);
    expect_lines(&cap, ATP_STDOUT, 3);
    assert_string_equal(nth(&cap, ATP_STDOUT, 0)->text, "0 /dev/null");
    assert_memory_equal(nth(&cap, ATP_STDOUT, 1)->text, "1 pipe:", 7);
    assert_memory_equal(nth(&cap, ATP_STDOUT, 2)->text, "2 pipe:", 7);
    capture_free(&cap);

    /* With stdin from a pipe: still nothing but 0, 1 and 2. */
    assert_int_equal(pipe(in), 0);
    close(in[1]);
    assert_int_equal(run_in(f, LOCAL_FDS, 0, in[0], &cap, &res), 0);
    close(in[0]);
    expect_lines(&cap, ATP_STDOUT, 3);
    assert_memory_equal(nth(&cap, ATP_STDOUT, 0)->text, "0 pipe:", 7);
    capture_free(&cap);

    close(hi);
    close(p[0]);
    close(p[1]);
    close(nul);
}

/* Runs on every path leave no descriptor and no child behind. */
static void no_leaks_in_the_caller(void **state)
{
    struct fx *f = *state;
    struct capture cap = {0};
    atp_session_opts so = ATP_SESSION_OPTS_INIT;
    atp_result res = ATP_RESULT_INIT;
    atp_session *s;
    size_t before = count_fds();
    siginfo_t si;
    int in[2];

    assert_int_equal(run(f, "echo hi; exit 3", 0, &cap, &res), 0);
    assert_int_equal(run(f, "sleep 100", 0.3, &cap, &res), 0);
    assert_int_equal(res.status, ATP_STATUS_TIMEOUT);
    assert_int_equal(pipe(in), 0);
    write_all(in[1], "x\n", 2);
    close(in[1]);
    assert_int_equal(run_in(f, "cat", 0, in[0], &cap, &res), 0);
    close(in[0]);
    /* The workdir vanishes under a started session: spawning fails
     * (workdir_gone_before_exec checks how). */
    assert_int_equal(mkdir(in_dir(f, "gone"), 0700), 0);
    so.workdir = in_dir(f, "gone");
    assert_int_equal(atp_session_create(&s, f->be, &so), 0);
    assert_int_equal(atp_session_start(s, &res), 0);
    assert_int_equal(rmdir(in_dir(f, "gone")), 0);
    atp_session_exec(s, "true", NULL, &res);
    atp_session_free(s);

    assert_int_equal(count_fds(), before);
    memset(&si, 0, sizeof(si));
    assert_int_equal(waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT), -1);
    assert_int_equal(errno, ECHILD);
    capture_free(&cap);
}

static void stdin_from_a_pipe(void **state)
{
    struct fx *f = *state;
    struct capture cap = {0};
    atp_result res = ATP_RESULT_INIT;
    int in[2];

    assert_int_equal(pipe(in), 0);
    write_all(in[1], "hello\nworld\nlast", 16);
    close(in[1]);
    assert_int_equal(run_in(f, "cat", 10, in[0], &cap, &res), 0);
    close(in[0]);
    assert_int_equal(res.status, ATP_STATUS_OK);
    assert_int_equal(n_lines(&cap, ATP_STDOUT), 3);
    assert_string_equal(nth(&cap, ATP_STDOUT, 0)->text, "hello");
    assert_string_equal(nth(&cap, ATP_STDOUT, 1)->text, "world");
    assert_string_equal(nth(&cap, ATP_STDOUT, 2)->text, "last");
    assert_int_equal(nth(&cap, ATP_STDOUT, 2)->flags, ATP_LINE_NO_EOL);
    capture_free(&cap);
}

struct feeder {
    int fd;
    size_t bytes;
};

static void *feed_thread(void *arg)
{
    struct feeder *fd = arg;
    char block[4096];
    size_t left = fd->bytes;
    sigset_t pipe_set;

    /* A reader that goes away is an EPIPE here, not a dead test. */
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, NULL);

    memset(block, 'x', sizeof(block));
    block[sizeof(block) - 1] = '\n';
    while (left > 0) {
        size_t n = left < sizeof(block) ? left : sizeof(block);
        ssize_t w = write(fd->fd, block, n);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        left -= (size_t)w;
    }
    close(fd->fd);
    return NULL;
}

/* More stdin than a pipe holds, while the command also writes output. */
static void stdin_larger_than_a_pipe(void **state)
{
    struct fx *f = *state;
    struct capture cap = {0};
    atp_result res = ATP_RESULT_INIT;
    struct feeder fd;
    pthread_t th;
    int in[2];

    assert_int_equal(pipe(in), 0);
    fd.fd = in[1];
    fd.bytes = 4u << 20;
    assert_int_equal(pthread_create(&th, NULL, feed_thread, &fd), 0);
    assert_int_equal(run_in(f, "tee copy | wc -c | tr -d ' '", 30, in[0],
                            &cap, &res), 0);
    pthread_join(th, NULL);
    close(in[0]);
    assert_int_equal(res.status, ATP_STATUS_OK);
    assert_int_equal(n_lines(&cap, ATP_STDOUT), 1);
    assert_string_equal(nth(&cap, ATP_STDOUT, 0)->text, "4194304");
    capture_free(&cap);
}

/*
 * A command that closes its stdin while more is coming neither kills the
 * caller with SIGPIPE nor hangs.
 */
static void stdin_closed_early_by_the_command(void **state)
{
    struct fx *f = *state;
    struct capture cap = {0};
    atp_result res = ATP_RESULT_INIT;
    struct feeder fd;
    pthread_t th;
    int in[2];

    assert_int_equal(pipe(in), 0);
    fd.fd = in[1];
    fd.bytes = 8u << 20;
    assert_int_equal(pthread_create(&th, NULL, feed_thread, &fd), 0);
    assert_int_equal(run_in(f, "head -c 10 >/dev/null; exec 0<&-; "
                               "sleep 0.2; echo alive", 10, in[0], &cap,
                            &res), 0);
    close(in[0]); /* the feeder now fails with EPIPE and ends */
    pthread_join(th, NULL);
    assert_int_equal(res.status, ATP_STATUS_OK);
    expect_lines(&cap, ATP_STDOUT, 1);
    assert_string_equal(nth(&cap, ATP_STDOUT, 0)->text, "alive");
    capture_free(&cap);
}

/* A stdin_fd that is not open is refused before anything runs. */
static void bad_stdin_fd_is_refused(void **state)
{
    struct fx *f = *state;
    struct capture cap = {0};
    atp_result res = ATP_RESULT_INIT;

    close(987);
    assert_int_equal(run_in(f, "touch ran; cat", 5, 987, &cap, &res),
                     ATP_E_INVAL);
    assert_int_equal(res.status, ATP_STATUS_CONFIG_ERROR);
    assert_non_null(strstr(res.message, "987"));
    assert_int_not_equal(access(in_dir(f, "ran"), F_OK), 0);
    capture_free(&cap);
}

static void stdin_is_dev_null_by_default(void **state)
{
    struct fx *f = *state;
    struct capture cap = {0};
    atp_result res = ATP_RESULT_INIT;
    double t0 = now_s();

    assert_int_equal(run(f, "cat; echo done; readlink /proc/$$/fd/0", 10,
                         &cap, &res), 0);
    assert_int_equal(res.status, ATP_STATUS_OK);
    assert_true(now_s() - t0 < 5 * slowdown());
    assert_int_equal(n_lines(&cap, ATP_STDOUT), 2);
    assert_string_equal(nth(&cap, ATP_STDOUT, 0)->text, "done");
    assert_string_equal(nth(&cap, ATP_STDOUT, 1)->text, "/dev/null");
    capture_free(&cap);
}

/* A command that ignores its stdin ends without waiting for its EOF. */
static void unread_stdin_does_not_hold_the_command(void **state)
{
    struct fx *f = *state;
    struct capture cap = {0};
    atp_result res = ATP_RESULT_INIT;
    double t0 = now_s();
    int in[2];

    assert_int_equal(pipe(in), 0);
    assert_int_equal(run_in(f, "echo hi", 10, in[0], &cap, &res), 0);
    assert_int_equal(res.status, ATP_STATUS_OK);
    assert_true(now_s() - t0 < 5 * slowdown());
    assert_string_equal(nth(&cap, ATP_STDOUT, 0)->text, "hi");
    close(in[0]);
    close(in[1]);
    capture_free(&cap);
}

/* ---- the drain grace ----------------------------------------------------- */

static void drain_grace_bounds_a_lingering_child(void **state)
{
    struct fx *f = *state;
    struct capture cap = {0};
    atp_result res = ATP_RESULT_INIT;
    double t0 = now_s(), wall;

    assert_int_equal(run(f, "sh -c 'sleep 30 & echo $! > bg.pid'", 0, &cap,
                         &res), 0);
    wall = now_s() - t0;
    assert_int_equal(res.status, ATP_STATUS_OK);
    assert_int_equal(res.exit_code, 0);
    assert_true(wall >= DRAIN_S - 0.05);
    assert_true(wall < DRAIN_S + SLACK_S);
    assert_dead(read_pid(f, "bg.pid"), 0.5);

    /* One that does not hold the output is not waited for, but killed. */
    be_open(f, "[atp]\ndrain_grace_s = 10\n");
    t0 = now_s();
    assert_int_equal(run(f, "sh -c 'sleep 30 >/dev/null 2>&1 & "
                            "echo $! > bg2.pid'", 0, &cap, &res), 0);
    assert_int_equal(res.status, ATP_STATUS_OK);
    assert_true(now_s() - t0 < SLACK_S);
    assert_dead(read_pid(f, "bg2.pid"), 0.5);
    capture_free(&cap);
}

/* With no drain grace, what the command itself wrote still arrives. */
static void no_drain_grace_loses_nothing(void **state)
{
    struct fx *f = *state;
    struct capture cap = {0};
    atp_result res = ATP_RESULT_INIT;
    size_t i;
    int round;

    be_open(f, "[atp]\ndrain_grace_s = 0\n");
    for (round = 0; round < 2; round++) {
        /* The second time, the command is long gone when the caller comes
         * back for the rest of its output. */
        cap.stall_s = round ? 0.3 : 0;
        assert_int_equal(run(f, LOCAL_BURST, 0, &cap, &res), 0);
        assert_int_equal(res.status, ATP_STATUS_OK);
        assert_int_equal(res.stdout_bytes, 1 << 20);
        expect_lines(&cap, ATP_STDOUT, (1 << 20) / 64);
        for (i = 0; i < cap.n; i++) {
            assert_int_equal(cap.v[i].len, 63);
            assert_int_equal(cap.v[i].text[0], 'a' + (int)(i % 26));
        }
        capture_free(&cap);
    }
}

static void drain_grace_lets_late_output_arrive(void **state)
{
    struct fx *f = *state;
    struct capture cap = {0};
    atp_result res = ATP_RESULT_INIT;
    double t0, wall;

    be_open(f, "[atp]\ndrain_grace_s = 5\n");
    t0 = now_s();
    assert_int_equal(run(f, "(sleep 0.3; echo late) & echo early", 0, &cap,
                         &res), 0);
    wall = now_s() - t0;
    assert_int_equal(res.status, ATP_STATUS_OK);
    assert_int_equal(n_lines(&cap, ATP_STDOUT), 2);
    assert_string_equal(nth(&cap, ATP_STDOUT, 0)->text, "early");
    assert_string_equal(nth(&cap, ATP_STDOUT, 1)->text, "late");
    /* Done when the last holder closed its output, not at the grace end. */
    assert_true(wall < 3.0);
    capture_free(&cap);
}

/* ---- environment --------------------------------------------------------- */

static void environment_precedence(void **state)
{
    struct fx *f = *state;
    struct capture cap = {0};
    atp_session_opts so = ATP_SESSION_OPTS_INIT;
    atp_exec_opts eo = ATP_EXEC_OPTS_INIT;
    atp_result res = ATP_RESULT_INIT;
    const char *senv[] = {"ATP_T_C=session", "ATP_T_D=session", NULL};
    const char *xenv[] = {"ATP_T_D=exec", NULL};
    static const char ini[] =
        BASE_INI
        "[env]\nATP_T_A = env\nATP_T_B = env\nATP_T_C = env\n"
        "ATP_T_D = env\nATP_T_E = env\n"
        "[backend.local]\nenv.ATP_T_B = backend\nenv.ATP_T_C = backend\n"
        "env.ATP_T_D = backend\n";
    static const char cmd[] =
        "echo \"$ATP_T_A $ATP_T_B $ATP_T_C $ATP_T_D $ATP_T_E "
        "${ATP_T_HOST-unset}\"";

    setenv("ATP_T_HOST", "host", 1);
    setenv("ATP_T_E", "host", 1);
    be_open(f, ini);
    so.workdir = f->dir;
    so.env = senv;
    eo.env = xenv;
    eo.on_line = capture_line;
    eo.line_payload = &cap;
    assert_int_equal(atp_run(f->be, &so, cmd, &eo, 1, &res), 0);
    assert_int_equal(n_lines(&cap, ATP_STDOUT), 1);
    assert_string_equal(nth(&cap, ATP_STDOUT, 0)->text,
                        "env backend session exec env host");
    capture_free(&cap);

    /* Without the exec env, the session's value shows. */
    eo.env = NULL;
    assert_int_equal(atp_run(f->be, &so, cmd, &eo, 1, &res), 0);
    assert_string_equal(nth(&cap, ATP_STDOUT, 0)->text,
                        "env backend session session env host");
    capture_free(&cap);

    /* inherit_env = false: the host's own variables stay out. */
    {
        char ini2[1024];

        snprintf(ini2, sizeof(ini2), "%sinherit_env = false\n", ini);
        be_open(f, ini2);
    }
    assert_int_equal(atp_run(f->be, &so, cmd, &eo, 1, &res), 0);
    assert_string_equal(nth(&cap, ATP_STDOUT, 0)->text,
                        "env backend session session env unset");
    capture_free(&cap);
    unsetenv("ATP_T_HOST");
    unsetenv("ATP_T_E");
}

/* A malformed variable is refused, naming it; nothing runs. */
static void malformed_environment_is_refused(void **state)
{
    struct fx *f = *state;
    atp_session_opts so = ATP_SESSION_OPTS_INIT;
    atp_exec_opts eo = ATP_EXEC_OPTS_INIT;
    atp_result res = ATP_RESULT_INIT;
    const char *bad_name[] = {"1BAD=x", NULL};
    const char *no_value[] = {"NOVALUE", NULL};
    atp_session *s;

    so.workdir = f->dir;
    so.env = bad_name;
    assert_int_equal(atp_session_create(&s, f->be, &so), ATP_E_INVAL);
    assert_non_null(strstr(atp_last_error(), "1BAD"));
    so.env = NULL;
    assert_int_equal(atp_session_create(&s, f->be, &so), 0);
    assert_int_equal(atp_session_start(s, &res), 0);
    eo.env = no_value;
    assert_int_equal(atp_session_exec(s, "touch ran", &eo, &res),
                     ATP_E_INVAL);
    assert_int_equal(res.status, ATP_STATUS_CONFIG_ERROR);
    assert_non_null(strstr(res.message, "NOVALUE"));
    assert_int_not_equal(access(in_dir(f, "ran"), F_OK), 0);
    /* The session is still usable. */
    assert_int_equal(atp_session_exec(s, "touch ran", NULL, &res), 0);
    assert_int_equal(access(in_dir(f, "ran"), F_OK), 0);
    atp_session_free(s);
}

/* Values reach the command but no process's command line. */
static void secrets_never_on_a_command_line(void **state)
{
    struct fx *f = *state;
    struct capture cap = {0};
    atp_session_opts so = ATP_SESSION_OPTS_INIT;
    atp_exec_opts eo = ATP_EXEC_OPTS_INIT;
    atp_result res = ATP_RESULT_INIT;
    const char *senv[] = {"ATP_T_TOKEN=s3cr3t-session-value-1234", NULL};
    char stop[64], reached[64];
    size_t i;
    const char *xenv[] = {"ATP_T_PASS=s3cr3t-exec-value-5678", stop, NULL};
    static const char cmd[] =
        ": cmdline-marker-42\n"
        "echo \"len ${#ATP_T_TOKEN} ${#ATP_T_PASS} ${#ATP_T_CFG} "
        "${#ATP_T_BE}\"\n"
        "sleep 60 &\n" /* killed below, once the walk is done */
        "field() { sed 's/.*) [A-Za-z] //' \"/proc/$1/stat\" 2>/dev/null |"
        " cut -d' ' -f\"$2\"; }\n"
        "p=$$\n"
        "while [ \"${p:-0}\" -gt 1 ] && [ \"$p\" != \"$ATP_T_STOP\" ]; do\n"
        "  echo \"anc $p $(tr '\\000' ' ' < /proc/$p/cmdline)\"\n"
        "  p=$(field $p 1)\n"
        "done\n"
        "echo \"reached $p\"\n"
        "g=$(field $$ 2)\n"
        "for d in /proc/[0-9]*; do\n"
        "  [ \"$(field ${d#/proc/} 2)\" = \"$g\" ] || continue\n"
        "  echo \"grp ${d#/proc/} $({ tr '\\000' ' ' < $d/cmdline; } "
        "2>/dev/null)\"\n"
        "done\n"
        "kill $!\n";

    /* Walk the ancestors up to this test process, not beyond. */
    snprintf(stop, sizeof(stop), "ATP_T_STOP=%ld", (long)getpid());
    snprintf(reached, sizeof(reached), "reached %ld", (long)getpid());
    be_open(f, BASE_INI "[env]\nATP_T_CFG = s3cr3t-config-value-9012\n"
                        "[backend.local]\n"
                        "env.ATP_T_BE = s3cr3t-backend-value-3456\n");
    so.workdir = f->dir;
    so.env = senv;
    eo.env = xenv;
    eo.on_line = capture_line;
    eo.line_payload = &cap;
    assert_int_equal(atp_run(f->be, &so, cmd, &eo, 1, &res), 0);
    assert_int_equal(res.status, ATP_STATUS_OK);
    assert_string_equal(nth(&cap, ATP_STDOUT, 0)->text, "len 25 22 24 25");
    /* The method works: the command's own line and its child show. */
    assert_true(seen(&cap, "cmdline-marker-42"));
    assert_true(seen(&cap, "sleep 60"));
    assert_true(seen(&cap, "anc "));
    assert_true(seen(&cap, reached));
    for (i = 0; i < cap.n; i++)
        if (strstr(cap.v[i].text, "s3cr3t") != NULL)
            fail_msg("a secret on a command line: %s", cap.v[i].text);
    for (i = 0; i < cap.n; i++)
        if (cap.v[i].stream == ATP_STDERR)
            fail_msg("the command wrote to stderr: %s", cap.v[i].text);
    capture_free(&cap);
}

/* ---- workdir and mounts -------------------------------------------------- */

static void runs_in_the_workdir(void **state)
{
    struct fx *f = *state;
    struct capture cap = {0};
    atp_result res = ATP_RESULT_INIT;

    assert_int_equal(run(f, "pwd -P; echo hi > made-here", 0, &cap, &res), 0);
    assert_string_equal(nth(&cap, ATP_STDOUT, 0)->text, f->dir);
    assert_int_equal(access(in_dir(f, "made-here"), F_OK), 0);
    capture_free(&cap);
}

static void missing_workdir_is_a_config_error(void **state)
{
    struct fx *f = *state;
    atp_session_opts so = ATP_SESSION_OPTS_INIT;
    atp_result res = ATP_RESULT_INIT;
    static char dummy;
    atp_session *s = (atp_session *)(void *)&dummy;

    so.workdir = "/nonexistent-atp-dir/wd";
    assert_int_equal(atp_session_create(&s, f->be, &so), ATP_E_CONFIG);
    assert_null(s);
    assert_non_null(strstr(atp_last_error(), "/nonexistent-atp-dir/wd"));
    assert_non_null(strstr(atp_last_error(), "no such directory"));

    assert_int_equal(atp_run(f->be, &so, "true", NULL, 1, &res),
                     ATP_E_CONFIG);
    assert_int_equal(res.status, ATP_STATUS_CONFIG_ERROR);
    assert_non_null(strstr(res.message, "/nonexistent-atp-dir/wd"));

    /* A file is no workdir either. */
    assert_int_equal(close(open(in_dir(f, "file"), O_CREAT | O_WRONLY,
                                0600)), 0);
    so.workdir = in_dir(f, "file");
    assert_int_equal(atp_session_create(&s, f->be, &so), ATP_E_CONFIG);
    assert_non_null(strstr(atp_last_error(), "not a directory"));
}

/* Options not initialised with their _INIT macro are refused, clearly. */
static void uninitialised_options_are_refused(void **state)
{
    struct fx *f = *state;
    atp_session_opts so = ATP_SESSION_OPTS_INIT;
    atp_exec_opts eo = ATP_EXEC_OPTS_INIT;
    atp_result res = ATP_RESULT_INIT;
    atp_session *s;

    so.workdir = f->dir;
    so.struct_size = 0;
    assert_int_equal(atp_session_create(&s, f->be, &so), ATP_E_INVAL);
    assert_non_null(strstr(atp_last_error(), "ATP_SESSION_OPTS_INIT"));
    so.struct_size = sizeof(so);
    assert_int_equal(atp_session_create(&s, f->be, &so), 0);
    assert_int_equal(atp_session_start(s, &res), 0);
    eo.struct_size = 8;
    assert_int_equal(atp_session_exec(s, "touch ran", &eo, &res),
                     ATP_E_INVAL);
    assert_non_null(strstr(res.message, "ATP_EXEC_OPTS_INIT"));
    assert_int_not_equal(access(in_dir(f, "ran"), F_OK), 0);
    atp_session_free(s);
}

/* A workdir removed between create and start fails the start, clearly. */
static void workdir_gone_before_start(void **state)
{
    struct fx *f = *state;
    atp_session_opts so = ATP_SESSION_OPTS_INIT;
    atp_result res = ATP_RESULT_INIT;
    atp_session *s;

    assert_int_equal(mkdir(in_dir(f, "wd"), 0700), 0);
    so.workdir = in_dir(f, "wd");
    assert_int_equal(atp_session_create(&s, f->be, &so), 0);
    assert_int_equal(rmdir(in_dir(f, "wd")), 0);
    assert_int_not_equal(atp_session_start(s, &res), 0);
    assert_int_equal(res.status, ATP_STATUS_PROVISION_ERROR);
    assert_non_null(strstr(res.message, "/wd"));
    assert_int_equal(atp_session_close(s, NULL), 0);
    atp_session_free(s);
}

/*
 * A workdir removed under a started session fails the exec as a backend
 * error naming it.  (Not under valgrind, whose posix_spawn cannot report
 * the child's chdir failure: there the command exits 127.)
 */
static void workdir_gone_before_exec(void **state)
{
    struct fx *f = *state;
    atp_session_opts so = ATP_SESSION_OPTS_INIT;
    atp_result res = ATP_RESULT_INIT;
    atp_session *s;

    if (under_valgrind())
        skip();
    assert_int_equal(mkdir(in_dir(f, "wd"), 0700), 0);
    so.workdir = in_dir(f, "wd");
    assert_int_equal(atp_session_create(&s, f->be, &so), 0);
    assert_int_equal(atp_session_start(s, &res), 0);
    assert_int_equal(rmdir(in_dir(f, "wd")), 0);
    assert_int_equal(atp_session_exec(s, "true", NULL, &res), ATP_E_BACKEND);
    assert_int_equal(res.status, ATP_STATUS_INFRA_ERROR);
    assert_non_null(strstr(res.message, "/wd"));
    assert_int_equal(atp_session_close(s, &res), 0);
    atp_session_free(s);
}

static void mounts_are_refused(void **state)
{
    struct fx *f = *state;
    atp_session_opts so = ATP_SESSION_OPTS_INIT;
    atp_result res = ATP_RESULT_INIT;
    const char *mounts[] = {"/tmp:/mnt", NULL};
    atp_session *s;

    so.workdir = f->dir;
    so.mounts = mounts;
    assert_int_equal(atp_session_create(&s, f->be, &so), ATP_E_UNSUPPORTED);
    assert_non_null(strstr(atp_last_error(), "mounts"));
    assert_int_equal(atp_run(f->be, &so, "touch ran", NULL, 1, &res),
                     ATP_E_UNSUPPORTED);
    assert_int_equal(res.status, ATP_STATUS_UNSUPPORTED);
    assert_int_not_equal(access(in_dir(f, "ran"), F_OK), 0);
}

/* ---- output limits and spill files --------------------------------------- */

struct spills {
    char path[2][PATH_MAX];
};

static void on_event(const atp_event *ev, void *payload)
{
    struct spills *sp = payload;
    const char *stream = NULL, *path = NULL;
    size_t i;

    if (strcmp(ev->type, "spilled") != 0)
        return;
    for (i = 0; i < ev->n_fields; i++) {
        if (strcmp(ev->fields[i].key, "stream") == 0)
            stream = ev->fields[i].s;
        if (strcmp(ev->fields[i].key, "path") == 0)
            path = ev->fields[i].s;
    }
    assert_non_null(stream);
    assert_non_null(path);
    snprintf(sp->path[strcmp(stream, "stderr") == 0], PATH_MAX, "%s", path);
}

static char *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0, n;

    if (fp == NULL)
        fail_msg("%s: %s", path, strerror(errno));
    *len = 0;
    do {
        if (*len + 4096 > cap) {
            cap = cap ? 2 * cap : 65536;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        n = fread(buf + *len, 1, cap - *len, fp);
        *len += n;
    } while (n > 0);
    fclose(fp);
    return buf;
}

static void output_limit_and_spill(void **state)
{
    struct fx *f = *state;
    struct capture cap = {0};
    atp_session_opts so = ATP_SESSION_OPTS_INIT;
    atp_exec_opts eo = ATP_EXEC_OPTS_INIT;
    atp_result res = ATP_RESULT_INIT;
    struct spills sp;
    char ini[PATH_MAX + 256], want[8192], line[32], *got;
    size_t wlen = 0, glen, i, delivered = 0;

    assert_int_equal(mkdir(in_dir(f, "spill"), 0700), 0);
    snprintf(ini, sizeof(ini), "%sstdout_limit = 100\nspill_dir = %s\n",
             BASE_INI, in_dir(f, "spill"));
    be_open(f, ini);
    for (i = 1; i <= 200; i++) {
        snprintf(line, sizeof(line), "line-%zu\n", i);
        memcpy(want + wlen, line, strlen(line));
        wlen += strlen(line);
    }
    memset(&sp, 0, sizeof(sp));
    so.workdir = f->dir;
    so.on_event = on_event;
    so.event_payload = &sp;
    eo.on_line = capture_line;
    eo.line_payload = &cap;
    assert_int_equal(atp_run(f->be, &so, "i=1; while [ $i -le 200 ]; do "
                                         "echo line-$i; i=$((i+1)); done; "
                                         "echo err-only >&2",
                             &eo, 1, &res), 0);
    assert_int_equal(res.status, ATP_STATUS_OK);
    /* Delivery stops at the limit, in order, and says so. */
    assert_true(res.stdout_truncated);
    assert_false(res.stderr_truncated);
    assert_true(n_lines(&cap, ATP_STDOUT) > 5);
    for (i = 0; i < n_lines(&cap, ATP_STDOUT); i++) {
        const struct line *l = nth(&cap, ATP_STDOUT, i);

        snprintf(line, sizeof(line), "line-%zu", i + 1);
        assert_string_equal(l->text, line);
        delivered += l->len + 1;
    }
    assert_true(delivered <= 100);
    assert_true(delivered > 100 - sizeof("line-10"));
    assert_string_equal(nth(&cap, ATP_STDERR, 0)->text, "err-only");
    /* The count and the spill file have everything. */
    assert_int_equal(res.stdout_bytes, wlen);
    assert_int_equal(res.stderr_bytes, 9);
    assert_true(sp.path[0][0] != '\0');
    assert_memory_equal(sp.path[0], in_dir(f, "spill/"),
                        strlen(in_dir(f, "spill/")));
    got = slurp(sp.path[0], &glen);
    assert_int_equal(glen, wlen);
    assert_memory_equal(got, want, wlen);
    free(got);
    got = slurp(sp.path[1], &glen);
    assert_int_equal(glen, 9);
    assert_memory_equal(got, "err-only\n", 9);
    free(got);
    capture_free(&cap);
}

/* ---- sessions ------------------------------------------------------------ */

static void one_session_many_commands(void **state)
{
    struct fx *f = *state;
    struct capture cap = {0};
    atp_session_opts so = ATP_SESSION_OPTS_INIT;
    atp_exec_opts eo = ATP_EXEC_OPTS_INIT;
    atp_result res = ATP_RESULT_INIT;
    atp_session *s;

    so.workdir = f->dir;
    eo.on_line = capture_line;
    eo.line_payload = &cap;
    assert_int_equal(atp_session_create(&s, f->be, &so), 0);
    assert_int_equal(atp_session_exec(s, "true", &eo, &res), ATP_E_INVAL);
    assert_int_equal(atp_session_start(s, &res), 0);
    assert_int_equal(atp_session_exec(s, "echo kept > f", &eo, &res), 0);
    assert_int_equal(atp_session_exec(s, "exit 3", &eo, &res), 0);
    assert_int_equal(res.exit_code, 3);
    assert_int_equal(atp_session_exec(s, "cat f", &eo, &res), 0);
    assert_int_equal(res.status, ATP_STATUS_OK);
    assert_int_equal(res.exit_code, 0);
    assert_int_equal(atp_session_sync_out(s, &res), 0);
    assert_int_equal(n_lines(&cap, ATP_STDOUT), 1);
    assert_string_equal(nth(&cap, ATP_STDOUT, 0)->text, "kept");
    assert_int_equal(atp_session_close(s, &res), 0);
    assert_int_equal(atp_session_exec(s, "true", &eo, &res), ATP_E_INVAL);
    assert_int_equal(atp_session_close(s, &res), 0);
    atp_session_free(s);
    capture_free(&cap);
}

struct parallel {
    struct fx *f;
    const char *tag;
    struct capture cap;
    atp_result res;
    int rc;
};

static void *parallel_thread(void *arg)
{
    struct parallel *p = arg;
    char cmd[128];

    snprintf(cmd, sizeof(cmd), "i=1; while [ $i -le 500 ]; do echo %s$i; "
             "i=$((i+1)); done; exit 7", p->tag);
    p->rc = run(p->f, cmd, 30, &p->cap, &p->res);
    return NULL;
}

/* Sessions driven from two threads at once keep to themselves. */
static void sessions_in_parallel_threads(void **state)
{
    struct fx *f = *state;
    struct parallel p[2];
    pthread_t th[2];
    char want[32];
    size_t i, k;

    memset(p, 0, sizeof(p));
    for (k = 0; k < 2; k++) {
        p[k].f = f;
        p[k].tag = k ? "bee" : "ant";
        p[k].res.struct_size = sizeof(p[k].res);
        assert_int_equal(pthread_create(&th[k], NULL, parallel_thread,
                                        &p[k]), 0);
    }
    for (k = 0; k < 2; k++)
        pthread_join(th[k], NULL);
    for (k = 0; k < 2; k++) {
        assert_int_equal(p[k].rc, 0);
        assert_int_equal(p[k].res.exit_code, 7);
        expect_lines(&p[k].cap, ATP_STDOUT, 500);
        for (i = 0; i < 500; i++) {
            snprintf(want, sizeof(want), "%s%zu", p[k].tag, i + 1);
            assert_string_equal(nth(&p[k].cap, ATP_STDOUT, i)->text, want);
        }
        capture_free(&p[k].cap);
    }
}

/* ---- a gigabyte of output ------------------------------------------------ */

#define DIGITS "0123456789"

struct counter {
    uint64_t lines, bytes, odd;
    size_t last_len;
    unsigned last_flags;
};

static void count_line(int stream, const char *line, size_t len,
                       unsigned flags, void *payload)
{
    struct counter *c = payload;

    (void)line;
    if (stream != ATP_STDOUT)
        c->odd++;
    c->lines++;
    c->bytes += len + ((flags & (ATP_LINE_PARTIAL | ATP_LINE_NO_EOL)) ? 0
                                                                       : 1);
    if (flags == 0 && len != 99)
        c->odd++;
    c->last_len = len;
    c->last_flags = flags;
}

/* Peak resident set of this process, in KiB. */
static long vm_hwm_kib(void)
{
    FILE *fp = fopen("/proc/self/status", "r");
    char buf[256];
    long v = -1;

    assert_non_null(fp);
    while (fgets(buf, sizeof(buf), fp))
        if (strncmp(buf, "VmHWM:", 6) == 0)
            v = strtol(buf + 6, NULL, 10);
    fclose(fp);
    assert_true(v > 0);
    return v;
}

static void gigabyte_of_output_in_bounded_memory(void **state)
{
    struct fx *f = *state;
    atp_session_opts so = ATP_SESSION_OPTS_INIT;
    atp_exec_opts eo = ATP_EXEC_OPTS_INIT;
    atp_result res = ATP_RESULT_INIT;
    struct counter c;
    long before, after;
    FILE *fp;
    double t0;

    if (under_valgrind())
        skip(); /* minutes, and valgrind's own memory counts */
    /* Reset the peak to what is resident now, where the kernel can. */
    fp = fopen("/proc/self/clear_refs", "w");
    if (fp) {
        fputs("5", fp);
        fclose(fp);
    }
    before = vm_hwm_kib();
    memset(&c, 0, sizeof(c));
    so.workdir = f->dir;
    eo.on_line = count_line;
    eo.line_payload = &c;
    t0 = now_s();
    assert_int_equal(atp_run(f->be, &so,
                             "yes " DIGITS DIGITS DIGITS DIGITS DIGITS DIGITS
                             DIGITS DIGITS DIGITS "012345678"
                             " | head -c 1073741824", &eo, 1, &res), 0);
    after = vm_hwm_kib();
    print_message("# 1 GiB in %.1f s, peak RSS %ld -> %ld KiB\n",
                  now_s() - t0, before, after);
    assert_int_equal(res.status, ATP_STATUS_OK);
    assert_int_equal(res.stdout_bytes, UINT64_C(1073741824));
    assert_int_equal(c.bytes, UINT64_C(1073741824));
    /* 10737418 lines of 99 + newline, then 24 bytes without one. */
    assert_int_equal(c.lines, UINT64_C(10737419));
    assert_int_equal(c.odd, 0);
    assert_int_equal(c.last_len, 24);
    assert_int_equal(c.last_flags, ATP_LINE_NO_EOL);
    assert_true(after - before < 16 * 1024);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(exit_codes),
        T(signal_death),
        T(exit_124_by_itself_is_not_a_timeout),
        T(ignored_sigchld_is_an_error_not_success),
        T(command_not_found),
        T(stdout_and_stderr_apart_in_order),
        T(last_line_without_newline),
        T(long_lines_arrive_in_pieces),
        T(timeout_kills_the_whole_tree),
        T(sigterm_ignored_gets_sigkill_after_grace),
        T(timeout_kills_descendants_that_outlive_the_leader),
        T(budget_precedence),
        T(timeout_while_flooding_a_slow_consumer),
        T(cancel_from_another_thread),
        T(cancel_one_shot_run),
        T(cancel_from_the_line_callback),
        T(cancel_before_start),
        T(no_descriptor_leaks_into_the_command),
        T(no_leaks_in_the_caller),
        T(stdin_from_a_pipe),
        T(stdin_larger_than_a_pipe),
        T(stdin_closed_early_by_the_command),
        T(bad_stdin_fd_is_refused),
        T(stdin_is_dev_null_by_default),
        T(unread_stdin_does_not_hold_the_command),
        T(drain_grace_bounds_a_lingering_child),
        T(no_drain_grace_loses_nothing),
        T(drain_grace_lets_late_output_arrive),
        T(environment_precedence),
        T(malformed_environment_is_refused),
        T(secrets_never_on_a_command_line),
        T(runs_in_the_workdir),
        T(uninitialised_options_are_refused),
        T(missing_workdir_is_a_config_error),
        T(workdir_gone_before_start),
        T(workdir_gone_before_exec),
        T(mounts_are_refused),
        T(output_limit_and_spill),
        T(one_session_many_commands),
        T(sessions_in_parallel_threads),
        T(gigabyte_of_output_in_bounded_memory),
#undef T
    };
    const char *only = getenv("ATP_TEST_ONLY");
    const char *skip = getenv("ATP_TEST_SKIP");

    /* Glob patterns to pick tests by name, when debugging. */
    if (only && *only)
        cmocka_set_test_filter(only);
    if (skip && *skip)
        cmocka_set_skip_filter(skip);
    return cmocka_run_group_tests_name("local", tests, NULL, NULL);
}
