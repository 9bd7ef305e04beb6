/*
 * Unit tests of the core's pure parts: result classification, command
 * wrapping and quoting, environment merging, secret redaction.
 */
#include "config.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../core/internal.h"

atp_status atp__classify(const atp_exec_outcome *o, int64_t timeout_ms,
                         int64_t elapsed_ms);

static atp_status cls(int code, int sig, unsigned flags, int64_t budget,
                      int64_t elapsed)
{
    atp_exec_outcome o = {sizeof(o), flags, code, sig, -1, -1};

    return atp__classify(&o, budget, elapsed);
}

static void classification(void **state)
{
    (void)state;
    assert_int_equal(cls(0, 0, 0, 0, 5), ATP_STATUS_OK);
    assert_int_equal(cls(3, 0, 0, 0, 5), ATP_STATUS_EXIT);
    assert_int_equal(cls(-1, SIGSEGV, 0, 0, 5), ATP_STATUS_EXIT);
    /* 124/137/143 are a timeout only once the budget is spent. */
    assert_int_equal(cls(124, 0, 0, 1000, 10), ATP_STATUS_EXIT);
    assert_int_equal(cls(124, 0, 0, 0, 10), ATP_STATUS_EXIT);
    assert_int_equal(cls(124, 0, 0, 1000, 1000), ATP_STATUS_TIMEOUT);
    assert_int_equal(cls(143, 0, 0, 1000, 1500), ATP_STATUS_TIMEOUT);
    assert_int_equal(cls(137, 0, 0, 1000, 2000), ATP_STATUS_TIMEOUT);
    assert_int_equal(cls(137, 0, 0, 1000, 999), ATP_STATUS_EXIT);
    assert_int_equal(cls(-1, SIGTERM, 0, 1000, 1001), ATP_STATUS_TIMEOUT);
    assert_int_equal(cls(-1, SIGTERM, 0, 1000, 10), ATP_STATUS_EXIT);
    assert_int_equal(cls(1, 0, 0, 1000, 2000), ATP_STATUS_EXIT);
    /* What the backend says it did wins. */
    assert_int_equal(cls(-1, SIGTERM, ATP_OUTCOME_TIMED_OUT, 1000, 10),
                     ATP_STATUS_TIMEOUT);
    assert_int_equal(cls(-1, SIGTERM, ATP_OUTCOME_CANCELLED, 1000, 10),
                     ATP_STATUS_CANCELLED);
}

static void status_names_and_errors(void **state)
{
    (void)state;
    assert_string_equal(atp_status_name(ATP_STATUS_OK), "ok");
    assert_string_equal(atp_status_name(ATP_STATUS_INFRA_TIMEOUT),
                        "infra_timeout");
    assert_string_equal(atp_status_name(ATP_STATUS_CONFIG_ERROR),
                        "config_error");
    assert_int_equal(atp_status_from_error(ATP_E_IMAGE),
                     ATP_STATUS_IMAGE_UNAVAILABLE);
    assert_int_equal(atp_status_from_error(ATP_E_CREDENTIALS),
                     ATP_STATUS_MISSING_CREDENTIALS);
    assert_int_equal(atp_status_from_error(ATP_E_TIMEOUT),
                     ATP_STATUS_INFRA_TIMEOUT);
    assert_int_equal(atp_status_from_error(-999), ATP_STATUS_INFRA_ERROR);
}

/* Run argv with /bin/sh and return what it printed. */
static char *run_argv(const char *const *argv)
{
    static char out[4096];
    int p[2];
    pid_t pid;
    ssize_t n;
    size_t len = 0;

    assert_int_equal(pipe(p), 0);
    pid = fork();
    if (pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(p[1]);
    while ((n = read(p[0], out + len, sizeof(out) - 1 - len)) > 0)
        len += (size_t)n;
    close(p[0]);
    waitpid(pid, NULL, 0);
    out[len] = '\0';
    return out;
}

static void quoting_round_trips(void **state)
{
    const char *const args[] = {"printf", "%s|", "plain", "two words",
                                "it's", "$HOME", "`id`", "a\"b", "", "*",
                                "new\nline", NULL};
    char *joined = atp_shell_join(args);
    const char *argv[] = {"/bin/sh", "-c", joined, NULL};

    (void)state;
    assert_non_null(joined);
    assert_string_equal(run_argv(argv), "plain|two words|it's|$HOME|`id`|"
                                        "a\"b||*|new\nline|");
    free(joined);
}

static void wrap_plain(void **state)
{
    struct atp__wrapped w;

    (void)state;
    assert_int_equal(atp__wrap(&w, "echo hi", NULL, 0, 0, 5000, 1000, 1), 0);
    assert_string_equal(w.argv[0], "/bin/sh");
    assert_string_equal(w.argv[1], "-c");
    assert_string_equal(w.argv[2], "echo hi");
    assert_null(w.argv[3]);
    atp__wrapped_release(&w);
}

static void wrap_with_timeout_runs_the_command_verbatim(void **state)
{
    struct atp__wrapped w;
    const char *cmd = "printf '%s' \"it's $((1+1))\"";

    (void)state;
    assert_int_equal(atp__wrap(&w, cmd, NULL, 1, 0, 1500, 2500, 0), 0);
    assert_non_null(strstr(w.argv[2], "timeout -k 3 2 /bin/sh -c \"$1\""));
    assert_string_equal(w.argv[4], cmd);
    assert_string_equal(run_argv(w.argv), "it's 2");
    atp__wrapped_release(&w);
}

/* For a backend that signals the group from outside, the wrapper's first
 * output is the announcement of its process group, then the command. */
static void wrap_announces_the_process_group(void **state)
{
    struct atp__wrapped w;
    const char *out;
    long pgid;

    (void)state;
    assert_int_equal(atp__wrap(&w, "echo ran", NULL, 0, 1, 0, 0, 0), 0);
    out = run_argv(w.argv);
    assert_memory_equal(out, ATP__PGID_MARK, strlen(ATP__PGID_MARK));
    pgid = strtol(out + strlen(ATP__PGID_MARK), NULL, 10);
    assert_true(pgid > 1);
    assert_non_null(strstr(out, "\nran\n"));
    atp__wrapped_release(&w);
}

/* Without stdin the command reads /dev/null, whatever it inherited, when
 * the command runs under a script at all (here: the group's
 * announcement, as for a backend that signals from outside). */
static void wrap_without_stdin_reads_dev_null(void **state)
{
    struct atp__wrapped w;
    int p[2], saved;

    (void)state;
    saved = dup(0);
    assert_true(saved >= 0);
    assert_int_equal(pipe(p), 0);
    assert_int_equal(write(p[1], "leaked\n", 7), 7);
    close(p[1]);
    assert_int_equal(dup2(p[0], 0), 0);
    close(p[0]);
    assert_int_equal(atp__wrap(&w, "cat; echo end", NULL, 0, 1, 0, 0, 1), 0);
    assert_non_null(strstr(run_argv(w.argv), "\nend\n"));
    assert_null(strstr(run_argv(w.argv), "leaked"));
    atp__wrapped_release(&w);
    assert_int_equal(dup2(saved, 0), 0);
    close(saved);
    /* With stdin (no_stdin 0) the command reads what it is given. */
    assert_int_equal(pipe(p), 0);
    assert_int_equal(write(p[1], "given\n", 6), 6);
    close(p[1]);
    saved = dup(0);
    assert_int_equal(dup2(p[0], 0), 0);
    close(p[0]);
    assert_int_equal(atp__wrap(&w, "cat; echo end", NULL, 0, 1, 0, 0, 0), 0);
    assert_non_null(strstr(run_argv(w.argv), "\ngiven\nend\n"));
    atp__wrapped_release(&w);
    assert_int_equal(dup2(saved, 0), 0);
    close(saved);
}

static void wrap_warm_cache(void **state)
{
    char dir[] = "/tmp/atp-wrap-XXXXXX", cache[64], link[128], cwd[4096];
    struct atp__wrapped w;
    char target[256];
    ssize_t n;

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(cache, sizeof(cache), "%s/cache dir", dir);
    assert_int_equal(mkdir(cache, 0700), 0);
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(chdir(dir), 0);
    assert_int_equal(atp__wrap(&w, "echo ran", cache, 0, 0, 0, 0, 0), 0);
    assert_string_equal(run_argv(w.argv), "ran\n");
    snprintf(link, sizeof(link), "%s/.lake", dir);
    n = readlink(link, target, sizeof(target) - 1);
    assert_true(n > 0);
    target[n] = '\0';
    assert_string_equal(target, cache);
    /* A real .lake directory is left alone. */
    unlink(link);
    assert_int_equal(mkdir(link, 0700), 0);
    assert_string_equal(run_argv(w.argv), "ran\n");
    assert_int_equal(readlink(link, target, sizeof(target)), -1);
    atp__wrapped_release(&w);
    rmdir(link);
    rmdir(cache);
    assert_int_equal(chdir(cwd), 0);
    rmdir(dir);
}

static void env_merge_order(void **state)
{
    atp__env e = {0};
    const char *const base[] = {"A=1", "B=2", NULL};
    const char *const over[] = {"B=3", "C=x=y", NULL};
    const char *const bad[] = {"NOEQUALS", NULL};
    const char *const bad2[] = {"9A=1", NULL};
    /* Names are ASCII whatever the locale: a plugin passes them on as
     * they are (a modal secret's keys, a docker container's Env). */
    const char *const bad3[] = {"CAF\xc9=1", NULL};
    const char *const bad4[] = {"A-B=1", NULL};

    (void)state;
    assert_int_equal(atp__env_merge(&e, base), 0);
    assert_int_equal(atp__env_merge(&e, over), 0);
    assert_int_equal(e.n, 3);
    assert_string_equal(e.v[0], "A=1");
    assert_string_equal(e.v[1], "B=3");
    assert_string_equal(e.v[2], "C=x=y");
    assert_null(e.v[3]);
    assert_int_equal(atp__env_merge(&e, bad), ATP_E_INVAL);
    assert_int_equal(atp__env_merge(&e, bad2), ATP_E_INVAL);
    assert_int_equal(atp__env_merge(&e, bad3), ATP_E_INVAL);
    assert_int_equal(atp__env_merge(&e, bad4), ATP_E_INVAL);
    atp__env_free(&e);
}

static void redaction(void **state)
{
    atp__secrets s;
    atp__env e = {0};
    const char *const vars[] = {"API_TOKEN=abc", "HOME_DIR=/very/long/path",
                                "N=1", NULL};
    char msg[256];

    (void)state;
    atp__secrets_init(&s);
    assert_int_equal(atp__env_merge(&e, vars), 0);
    atp__secrets_add_env(&s, &e);
    snprintf(msg, sizeof(msg), "token abc at /very/long/path, n=1, abc");
    atp__secrets_redact(msg, &s, NULL);
    assert_string_equal(msg, "token *** at ***, n=1, ***");
    /* A secret equal to the mask does not loop. */
    atp__secrets_add(&s, "***");
    atp__secrets_redact(msg, &s, NULL);
    assert_string_equal(msg, "token *** at ***, n=1, ***");
    atp__env_free(&e);
    atp__secrets_free(&s);
}

/*
 * A secret that is part of another (a prefix, a suffix, an overlap), in
 * the same set or in the other one, and whichever was added first, leaves
 * nothing of the longer one in view.
 */
static void redaction_longest_match(void **state)
{
    atp__secrets a, b;
    char msg[256];

    (void)state;
    atp__secrets_init(&a);
    atp__secrets_init(&b);
    atp__secrets_add(&a, "hunter2");
    atp__secrets_add(&a, "hunter2-and-more");
    snprintf(msg, sizeof(msg), "pw=hunter2-and-more; short=hunter2.");
    atp__secrets_redact(msg, &a, NULL);
    assert_string_equal(msg, "pw=***; short=***.");
    /* The shorter in one set, the longer in the other. */
    atp__secrets_add(&b, "tok-0123456789");
    atp__secrets_add(&a, "tok-01");
    snprintf(msg, sizeof(msg), "[tok-0123456789]");
    atp__secrets_redact(msg, &a, &b);
    assert_string_equal(msg, "[***]");
    snprintf(msg, sizeof(msg), "[tok-0123456789]");
    atp__secrets_redact(msg, &b, &a);
    assert_string_equal(msg, "[***]");
    /* A suffix, and two secrets that overlap without either containing
     * the other. */
    atp__secrets_add(&a, "and-more");
    atp__secrets_add(&b, "xyzhun");
    snprintf(msg, sizeof(msg), "xyzhunter2-and-more!");
    atp__secrets_redact(msg, &a, &b);
    assert_string_equal(msg, "***!");
    /* Repeated, overlapping occurrences of one secret. */
    atp__secrets_add(&a, "aba");
    snprintf(msg, sizeof(msg), "-ababa-aba-");
    atp__secrets_redact(msg, &a, NULL);
    assert_string_equal(msg, "-***-***-");
    atp__secrets_free(&a);
    atp__secrets_free(&b);
}

/* A text longer than the redactor's stack buffer is redacted alike. */
static void redaction_long_text(void **state)
{
    atp__secrets s;
    char *msg = malloc(10000);
    size_t i;

    (void)state;
    assert_non_null(msg);
    atp__secrets_init(&s);
    atp__secrets_add(&s, "s3cr3t");
    atp__secrets_add(&s, "s3cr3t-longer");
    for (i = 0; i + 1 < 10000; i++)
        msg[i] = 'x';
    msg[i] = '\0';
    memcpy(msg + 9000, "s3cr3t-longer", 13);
    atp__secrets_redact(msg, &s, NULL);
    assert_int_equal(strlen(msg), 9999 - 13 + 3);
    assert_memory_equal(msg + 9000, "***x", 4);
    assert_null(strstr(msg, "longer"));
    atp__secrets_free(&s);
    free(msg);
}

/*
 * 100k variables: each set once, then every seventh set again, keeps one
 * entry per name, in first-set order, with the last value; 100k long
 * values are each remembered once as secrets.
 */
static void env_many_keys(void **state)
{
    enum { N = 100000 };
    atp__env e = {0};
    atp__secrets s;
    char key[32], val[64], want[96];
    size_t i;

    (void)state;
    for (i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "K%zu", i);
        snprintf(val, sizeof(val), "first-value-%zu", i);
        assert_int_equal(atp__env_set(&e, key, strlen(key), val), 0);
    }
    for (i = 0; i < N; i += 7) {
        snprintf(key, sizeof(key), "K%zu", i);
        snprintf(val, sizeof(val), "second-value-%zu", i);
        assert_int_equal(atp__env_set(&e, key, strlen(key), val), 0);
    }
    assert_int_equal(e.n, N);
    assert_null(e.v[N]);
    for (i = 0; i < N; i++) {
        snprintf(want, sizeof(want), "K%zu=%s-value-%zu", i,
                 i % 7 ? "first" : "second", i);
        assert_string_equal(e.v[i], want);
    }
    atp__secrets_init(&s);
    atp__secrets_add_env(&s, &e);
    atp__secrets_add_env(&s, &e);
    assert_int_equal(s.n, N);
    snprintf(want, sizeof(want), "got first-value-%d here", 1);
    atp__secrets_redact(want, &s, NULL);
    assert_string_equal(want, "got *** here");
    atp__secrets_free(&s);
    atp__env_free(&e);
}

/* ---- the end record a transfer script writes last -------------------- */

struct collected {
    char buf[256];
    size_t len;
};

static int collect(void *ctx, int stream, const void *buf, size_t len)
{
    struct collected *c = ctx;

    assert_int_equal(stream, ATP_STDOUT);
    assert_true(c->len + len <= sizeof(c->buf));
    memcpy(c->buf + c->len, buf, len);
    c->len += len;
    return 0;
}

/* Feed @in in the pieces that @cuts name; what came out, and whether the
 * output is known to have ended. */
static int trail(const char *in, size_t n, const size_t *cuts, size_t ncuts,
                 struct collected *c)
{
    struct atp__exec_plan plan;
    struct atp__exec x;
    size_t at = 0, i;

    memset(&plan, 0, sizeof(plan));
    plan.trailer = 1;
    plan.stdin_fd = -1;
    atp__exec_init(&x, &plan);
    memset(c, 0, sizeof(*c));
    for (i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : n;

        if (end > at)
            assert_int_equal(atp__exec_trailer_filter(&x, ATP_STDOUT, in + at,
                                                      end - at, collect, c),
                             0);
        at = end;
    }
    atp__exec_record_drop(&x);
    atp__exec_release(&x);
    return x.tail_is_end;
}

static void trailer_taken_off_only_at_the_end(void **state)
{
    /* Data holding the record's text, a part of it, and its first byte,
     * then the record. */
    static const char data[] = "a\036atp-end\nb\036atp-\036";
    static const char rec[] = ATP__END_MARK;
    char in[128];
    size_t n = strlen(data), m = strlen(rec), i, j;
    struct collected c;

    (void)state;
    memcpy(in, data, n);
    memcpy(in + n, rec, m);
    /* Every way of cutting the stream into three pieces. */
    for (i = 0; i <= n + m; i++)
        for (j = i; j <= n + m; j++) {
            size_t cuts[2] = {i, j};

            assert_true(trail(in, n + m, cuts, 2, &c));
            assert_int_equal(c.len, n);
            assert_memory_equal(c.buf, data, n);
        }
    /* Without the record: everything comes out but a cut-off start of it
     * at the very end, and the end is not known. */
    for (i = 0; i <= n; i++) {
        size_t cuts[1] = {i};

        assert_false(trail(data, n, cuts, 1, &c));
        assert_int_equal(c.len, n - 1); /* the last byte began a record */
        assert_memory_equal(c.buf, data, n - 1);
    }
    /* The record followed by more output is output. */
    memcpy(in, rec, m);
    memcpy(in + m, "x", 1);
    for (i = 0; i <= m + 1; i++) {
        size_t cuts[1] = {i};

        assert_false(trail(in, m + 1, cuts, 1, &c));
        assert_int_equal(c.len, m + 1);
        assert_memory_equal(c.buf, in, m + 1);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(classification),
        cmocka_unit_test(status_names_and_errors),
        cmocka_unit_test(quoting_round_trips),
        cmocka_unit_test(wrap_plain),
        cmocka_unit_test(env_many_keys),
        cmocka_unit_test(redaction_longest_match),
        cmocka_unit_test(redaction_long_text),
        cmocka_unit_test(wrap_with_timeout_runs_the_command_verbatim),
        cmocka_unit_test(wrap_without_stdin_reads_dev_null),
        cmocka_unit_test(wrap_warm_cache),
        cmocka_unit_test(wrap_announces_the_process_group),
        cmocka_unit_test(env_merge_order),
        cmocka_unit_test(redaction),
        cmocka_unit_test(trailer_taken_off_only_at_the_end),
    };

    return cmocka_run_group_tests_name("core", tests, NULL, NULL);
}
