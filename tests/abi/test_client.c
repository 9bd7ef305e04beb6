/*
 * The client API as a binding meets it: structs of every published size
 * (a program built against the 0.1 header), zeroed structs with only
 * their size set (what cffi's ffi.new gives), structs from a newer
 * header, results written no further than the caller's struct_size, the
 * *_init() functions, the one-thread rule of a session, and diagnostics
 * that go to the log callback, never to stderr.  Links the shared libatp
 * and runs real commands on the local backend.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <atp/atp.h>

static int n_test, failed;

static void check(int ok, const char *what)
{
    printf("%s %d - %s\n", ok ? "ok" : "not ok", ++n_test, what);
    if (!ok) {
        failed = 1;
        printf("# last error: %s\n", atp_last_error());
    }
}

/* atp_exec_opts as the 0.1 header laid it out: no flags. */
struct exec_opts_0_1 {
    uint32_t struct_size;
    double timeout_s;
    const char *const *env;
    atp_line_fn on_line;
    void *line_payload;
    int stdin_fd;
    void (*on_flush)(void *payload);
};

struct text {
    char buf[4096];
    size_t len;
};

static void collect(int stream, const char *line, size_t len, unsigned flags,
                    void *payload)
{
    struct text *t = payload;

    (void)flags;
    if (stream != ATP_STDOUT || t->len + len + 2 > sizeof(t->buf))
        return;
    memcpy(t->buf + t->len, line, len);
    t->len += len;
    t->buf[t->len++] = '\n';
    t->buf[t->len] = '\0';
}

static atp_config *cfg;
static atp_backend *be;

/* A pipe holding @text, closed for writing; its read end. */
static int pipe_with(const char *text)
{
    int p[2];

    if (pipe(p) != 0 || write(p[1], text, strlen(text)) < 0)
        abort();
    close(p[1]);
    return p[0];
}

static void sizes_0_1(void)
{
    struct exec_opts_0_1 old;
    atp_result res = ATP_RESULT_INIT;
    struct text out = {{0}, 0};
    int fd = pipe_with("from-the-0.1-struct\n");
    int rc;

    memset(&old, 0, sizeof(old));
    old.struct_size = ATP_EXEC_OPTS_SIZE_0_1;
    old.on_line = collect;
    old.line_payload = &out;
    old.stdin_fd = fd;
    rc = atp_run(be, NULL, "cat", (const atp_exec_opts *)&old, 1, &res);
    check(rc == 0 && res.status == ATP_STATUS_OK &&
              strcmp(out.buf, "from-the-0.1-struct\n") == 0,
          "an atp_exec_opts of the 0.1 size (no flags) forwards its stdin_fd");
    close(fd);
}

static void zeroed(void)
{
    atp_session_opts so;
    atp_exec_opts eo;
    atp_result res;
    struct text out = {{0}, 0};
    int saved = dup(0), fd = pipe_with("LEAKED-FROM-FD-0\n");
    int rc;

    /* What a binding gets from a zeroing allocator, with the size set. */
    memset(&so, 0, sizeof(so));
    so.struct_size = sizeof(so);
    memset(&eo, 0, sizeof(eo));
    eo.struct_size = sizeof(eo);
    eo.on_line = collect;
    eo.line_payload = &out;
    memset(&res, 0, sizeof(res));
    res.struct_size = sizeof(res);
    dup2(fd, 0); /* if fd 0 were forwarded, the command would read this */
    rc = atp_run(be, &so, "cat; echo done", &eo, 1, &res);
    dup2(saved, 0);
    close(saved);
    close(fd);
    check(rc == 0 && res.status == ATP_STATUS_OK &&
              strcmp(out.buf, "done\n") == 0,
          "zeroed options mean the defaults: stdin from /dev/null, not fd 0");
    check(res.exit_code == 0 && res.signal == 0 && res.duration_s > 0,
          "a zeroed result with its size set is filled");
}

static void stdin_zero_with_flag(void)
{
    atp_exec_opts eo = ATP_EXEC_OPTS_INIT;
    atp_result res = ATP_RESULT_INIT;
    struct text out = {{0}, 0};
    int saved = dup(0), fd = pipe_with("fd-zero-on-purpose\n");
    int rc;

    eo.on_line = collect;
    eo.line_payload = &out;
    eo.stdin_fd = 0;
    eo.flags = ATP_EXEC_OPT_STDIN;
    dup2(fd, 0);
    rc = atp_run(be, NULL, "cat", &eo, 1, &res);
    dup2(saved, 0);
    close(saved);
    close(fd);
    check(rc == 0 && strcmp(out.buf, "fd-zero-on-purpose\n") == 0,
          "descriptor 0 is forwarded with ATP_EXEC_OPT_STDIN");
}

static void newer_and_smaller(void)
{
    unsigned char big[sizeof(atp_exec_opts) + 16];
    atp_exec_opts *eo = (atp_exec_opts *)big;
    atp_result res = ATP_RESULT_INIT;
    int rc;

    memset(big, 0, sizeof(big));
    eo->struct_size = sizeof(big);
    rc = atp_run(be, NULL, "true", eo, 1, &res);
    check(rc == 0 && res.status == ATP_STATUS_OK,
          "a struct from a newer header is accepted when what is new is "
          "zero");
    big[sizeof(atp_exec_opts) + 3] = 1;
    rc = atp_run(be, NULL, "true", eo, 1, &res);
    check(rc == ATP_E_INVAL && strstr(atp_last_error(), "update libatp"),
          "... and refused, saying to update libatp, when it sets a field "
          "this library does not know");
    eo->struct_size = 8;
    rc = atp_run(be, NULL, "true", eo, 1, &res);
    check(rc == ATP_E_INVAL && strstr(atp_last_error(), "struct_size is 8"),
          "a struct smaller than any published one is refused");
}

static void result_up_to_its_size(void)
{
    /* A 0.1 caller's result, in memory that a 0.2 result would fill. */
    static union {
        atp_result r;
        unsigned char b[sizeof(atp_result) + 64];
    } u;
    unsigned char *buf = u.b;
    atp_result *res = &u.r;
    size_t i;
    int rc, clean = 1;

    memset(buf, 0xAB, sizeof(u));
    check(atp_result_init(res, ATP_RESULT_SIZE_0_1) == 0 &&
              res->struct_size == ATP_RESULT_SIZE_0_1 &&
              res->exit_code == -1,
          "atp_result_init() sets up a result of the size given");
    rc = atp_run(be, NULL, "exit 3", NULL, 1, res);
    for (i = ATP_RESULT_SIZE_0_1; i < sizeof(u); i++)
        clean &= buf[i] == 0xAB;
    check(rc == 0 && res->exit_code == 3 && clean,
          "a result is written no further than its struct_size");
    check(atp_result_init(res, 16) == ATP_E_INVAL,
          "atp_result_init() refuses a size below the first published one");
}

static void opts_init(void)
{
    atp_exec_opts eo;
    atp_session_opts so;

    memset(&eo, 0xFF, sizeof(eo));
    memset(&so, 0xFF, sizeof(so));
    check(atp_exec_opts_init(&eo, sizeof(eo)) == 0 &&
              eo.struct_size == sizeof(eo) && eo.stdin_fd == -1 &&
              eo.flags == 0 && eo.env == NULL &&
              atp_session_opts_init(&so, sizeof(so)) == 0 &&
              so.workdir == NULL && so.timeout_s == 0.0,
          "the *_init() functions give the defaults of the _INIT macros");
}

struct racer {
    atp_session *s;
    int rc;
};

static char started[64];

static void *exec_in_thread(void *arg)
{
    struct racer *r = arg;
    atp_result res = ATP_RESULT_INIT;
    char cmd[128];

    snprintf(cmd, sizeof(cmd), "touch %s; sleep 1", started);
    r->rc = atp_session_exec(r->s, cmd, NULL, &res);
    return NULL;
}

static void one_thread_per_session(void)
{
    atp_session *s;
    atp_result res = ATP_RESULT_INIT;
    struct racer r;
    pthread_t t;
    int rc, i;

    if (atp_session_create(&s, be, NULL) != 0 ||
        atp_session_start(s, &res) != 0) {
        check(0, "a session starts");
        return;
    }
    snprintf(started, sizeof(started), "/tmp/atp-client-%ld",
             (long)getpid());
    unlink(started);
    r.s = s;
    pthread_create(&t, NULL, exec_in_thread, &r);
    /* Once the other thread's command runs, it is inside its call. */
    for (i = 0; i < 2000 && access(started, F_OK) != 0; i++)
        usleep(5000);
    rc = atp_session_exec(s, "true", NULL, &res);
    unlink(started);
    check(rc == ATP_E_INVAL && strstr(atp_last_error(), "another thread"),
          "a session used by a second thread at once says so and refuses");
    pthread_join(t, NULL);
    check(r.rc == 0, "the first thread's command ran undisturbed");
    check(atp_session_exec(s, "true", NULL, &res) == 0,
          "once it is done, the session takes calls again");
    atp_session_free(s);
}

struct logbook {
    int lines;
    char last[512];
};

static void on_log(int level, const char *origin, const char *message,
                   void *payload)
{
    struct logbook *lb = payload;

    (void)level;
    lb->lines++;
    snprintf(lb->last, sizeof(lb->last), "%s: %s", origin, message);
}

static void logs_to_the_callback(void)
{
    atp_config *c;
    atp_backend *b;
    atp_result res = ATP_RESULT_INIT;
    struct logbook lb = {0, ""};
    int err[2], saved = dup(2);
    char buf[256];
    ssize_t n;

    if (atp_config_load_string(&c, "[atp]\nspill_dir = /nonexistent/spill\n",
                               "log.ini") != 0 ||
        pipe(err) != 0) {
        check(0, "a configuration loads");
        return;
    }
    atp_config_set_log(c, on_log, ATP_LOG_WARN, &lb);
    fcntl(err[0], F_SETFL, O_NONBLOCK);
    dup2(err[1], 2);
    if (atp_backend_open(&b, c, NULL) == 0) {
        atp_run(b, NULL, "echo spilled", NULL, 1, &res);
        atp_backend_free(b);
    }
    dup2(saved, 2);
    close(saved);
    close(err[1]);
    n = read(err[0], buf, sizeof(buf));
    close(err[0]);
    atp_config_free(c);
    check(lb.lines >= 1 && strstr(lb.last, "spill"),
          "a warning goes to the log callback");
    check(n <= 0, "and nothing to stderr");
}

int main(void)
{
    puts("1..18");
    if (atp_config_load_string(&cfg, "", "client.ini") != 0 ||
        atp_backend_open(&be, cfg, "local") != 0) {
        printf("Bail out! the local backend does not open: %s\n",
               atp_last_error());
        return 1;
    }
    sizes_0_1();
    zeroed();
    stdin_zero_with_flag();
    newer_and_smaller();
    result_up_to_its_size();
    opts_init();
    one_thread_per_session();
    logs_to_the_callback();
    check(strcmp(atp_err_name(ATP_E_TIMEOUT), "ATP_E_TIMEOUT") == 0 &&
              atp_status_exit_code(ATP_STATUS_TIMEOUT) == 124 &&
              atp_status_exit_code(ATP_STATUS_EXIT) == -1 &&
              atp_status_from_error(ATP_E_SANDBOX_DEAD) ==
                  ATP_STATUS_SANDBOX_DEAD,
          "names, exit statuses and classes come from the one list each");
    {
        char v[32];

        snprintf(v, sizeof(v), "%d.%d.%d", ATP_VERSION_MAJOR,
                 ATP_VERSION_MINOR, ATP_VERSION_PATCH);
        check(strcmp(atp_version(), v) == 0,
              "the library is the version its headers say");
    }
    atp_backend_free(be);
    atp_config_free(cfg);
    return failed;
}
