/*
 * Loader tests: the ABI fixture plugins of tests/fixtures opened through
 * the public API, by a backend's `path` and through ATP_PLUGIN_PATH;
 * plugin scans, shadowing, unknown names and the ATP_PLUGIN_DEBUG trace.
 *
 * The loader opens every file at most once per process and remembers the
 * outcome.  Checks that need a process that has loaded nothing yet (which
 * files a run loads, the trace of a first load) run in a fresh copy of
 * this program, started as `test_loader --child SCENARIO`.
 */
#include "config.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <atp/atp.h>
#include <atp/plugin.h>

#define N_FIXTURES 14

/* What each fixture must come to, as a scan reports it. */
static const struct fixture {
    const char *name;
    int loaded;
    const char *version;  /* loaded ones */
    unsigned abi_major, abi_minor;
    const char *reason;   /* refused ones: part of the refusal */
} fixtures[N_FIXTURES] = {
    /* In the order a scan reports them: sorted by file name. */
    {"fx_badmajor", 0, NULL, 2, 0, "built for plugin ABI 2.0"},
    {"fx_blab", 1, "1.2-blab", 1, ATP_PLUGIN_ABI_MINOR, NULL},
    {"fx_future", 1, "1.99-future", 1, 99, NULL},
    {"fx_initfail", 0, NULL, 0, 0,
     "fx_initfail: libfake could not start (code 7)"},
    {"fx_launch", 1, "1.2-launch", 1, ATP_PLUGIN_ABI_MINOR, NULL},
    {"fx_leaky", 1, "1.1-leaky", 1, ATP_PLUGIN_ABI_MINOR, NULL},
    {"fx_major2", 0, NULL, 2, 0, "built for plugin ABI 2 "},
    {"fx_marker", 1, "1.0-marker", 1, ATP_PLUGIN_ABI_MINOR, NULL},
    {"fx_noentry", 0, NULL, 0, 0, "no entry point atp_plugin_entry_v1"},
    {"fx_nomandatory", 0, NULL, 1, ATP_PLUGIN_ABI_MINOR,
     "missing mandatory callback exec"},
    {"fx_oldest", 1, "1.0-oldest", 1, ATP_PLUGIN_ABI_MINOR_FLOOR, NULL},
    /* The local backends released with ABI 1.0, 1.1 and 1.2, as built then. */
    {"local10", 1, PACKAGE_VERSION, 1, 0, NULL},
    {"local11", 1, PACKAGE_VERSION, 1, 1, NULL},
    {"local12", 1, PACKAGE_VERSION, 1, 2, NULL},
};

static char fx_dir[2048];   /* $ATP_FIXTURES */
static char self[4096];     /* this program, for --child */
static char core_abi[2][64]; /* how refusals name the core's ABI */

/* ------------------------------------------------------------------ */
/* Helpers                                                              */

#define assert_contains(hay, needle)                                       \
    do {                                                                   \
        const char *h_ = (hay), *n_ = (needle);                            \
        if (h_ == NULL || strstr(h_, n_) == NULL)                          \
            fail_msg("'%s' lacks '%s'", h_ ? h_ : "(null)", n_);           \
    } while (0)

/* Fail unless @msg names the core's ABI version. */
static void assert_names_core_abi(const char *msg)
{
    if (strstr(msg, core_abi[0]) == NULL && strstr(msg, core_abi[1]) == NULL)
        fail_msg("'%s' names neither '%s' nor '%s'", msg, core_abi[0],
                 core_abi[1]);
}

/* A mkdtemp/mkstemp template under $TMPDIR (or /tmp). */
static void tmp_template(char *out, size_t len, const char *what)
{
    const char *dir = getenv("TMPDIR");

    snprintf(out, len, "%s/atp-%s-XXXXXX", dir && *dir ? dir : "/tmp", what);
}

static void fx_path(char *out, size_t len, const char *dir, const char *name)
{
    snprintf(out, len, "%s/atp-%s.so", dir, name);
}

/* Search only the fixtures, after a directory that does not exist. */
static void search_fixtures(void)
{
    char path[4096];

    snprintf(path, sizeof(path), "/nonexistent/atp-plugins:%s", fx_dir);
    setenv("ATP_PLUGIN_PATH", path, 1);
}

static atp_config *config(const char *text)
{
    atp_config *cfg = NULL;

    if (atp_config_load_string(&cfg, text, "test.ini") != 0)
        fail_msg("config should load: %s", atp_last_error());
    return cfg;
}

/*
 * Open backend @name from configuration @text; on failure the message goes
 * to @msg.  Returns the code; *be_out is NULL unless it is 0.
 */
static int open_backend(atp_config **cfg_out, atp_backend **be_out,
                        const char *text, const char *name, char *msg,
                        size_t msglen)
{
    int rc;

    *cfg_out = config(text);
    *be_out = (atp_backend *)&rc; /* must be reset by the call */
    rc = atp_backend_open(be_out, *cfg_out, name);
    snprintf(msg, msglen, "%s", rc ? atp_last_error() : "");
    if (rc)
        assert_null(*be_out);
    return rc;
}

/* Configuration selecting fixture @name by its backend's path. */
static void path_config(char *out, size_t len, const char *name)
{
    char path[sizeof(fx_dir) + 128];

    fx_path(path, sizeof(path), fx_dir, name);
    snprintf(out, len, "[backend.%s]\npath = %s\n", name, path);
}

/* What atp_run delivered: "out: LINE" and "err: LINE", one a line. */
struct transcript {
    char text[4096];
    size_t len;
};

static void on_line(int stream, const char *line, size_t len, unsigned flags,
                    void *payload)
{
    struct transcript *t = payload;
    int n;

    n = snprintf(t->text + t->len, sizeof(t->text) - t->len, "%s: %.*s%s\n",
                 stream == ATP_STDOUT ? "out" : "err", (int)len, line,
                 flags ? " [flags]" : "");
    if (n > 0 && (size_t)n < sizeof(t->text) - t->len)
        t->len += (size_t)n;
}

/* atp_run() @command on @be; the lines land in @t. */
static int run(atp_backend *be, const char *command, struct transcript *t,
               atp_result *res)
{
    atp_session_opts sopts = ATP_SESSION_OPTS_INIT;
    atp_exec_opts eopts = ATP_EXEC_OPTS_INIT;

    memset(t, 0, sizeof(*t));
    eopts.on_line = on_line;
    eopts.line_payload = t;
    return atp_run(be, &sopts, command, &eopts, 1, res);
}

/* The refusal of fixture @name, opened both ways, must be @code with a
 * message naming the file, the core's ABI and every one of @why. */
static void expect_refused(const char *name, int code,
                           const char *const *why)
{
    char text[4096], msg[2048], path[4096], prefix[4200];
    atp_config *cfg;
    atp_backend *be;
    int pass, rc;
    size_t i;

    fx_path(path, sizeof(path), fx_dir, name);
    snprintf(prefix, sizeof(prefix), "plugin %s: ", path);
    for (pass = 0; pass < 2; pass++) {
        if (pass == 0) {
            path_config(text, sizeof(text), name);
        } else {
            text[0] = '\0';
            search_fixtures();
        }
        rc = open_backend(&cfg, &be, text, name, msg, sizeof(msg));
        if (rc != code)
            fail_msg("%s (%s): code %d, not %d: %s", name,
                     pass ? "ATP_PLUGIN_PATH" : "path =", rc, code, msg);
        if (strncmp(msg, prefix, strlen(prefix)) != 0)
            fail_msg("'%s' does not start with '%s'", msg, prefix);
        assert_names_core_abi(msg);
        for (i = 0; why[i]; i++)
            assert_contains(msg, why[i]);
        atp_config_free(cfg);
    }
}

/* ------------------------------------------------------------------ */
/* Working fixtures                                                      */

static void oldest_runs(void **state)
{
    char text[4096], msg[2048], path[4096];
    atp_result res = ATP_RESULT_INIT;
    struct transcript t;
    atp_config *cfg;
    atp_backend *be;

    (void)state;
    fx_path(path, sizeof(path), fx_dir, "fx_oldest");
    path_config(text, sizeof(text), "fx_oldest");
    if (open_backend(&cfg, &be, text, "fx_oldest", msg, sizeof(msg)))
        fail_msg("fx_oldest should load: %s", msg);
    assert_string_equal(atp_backend_plugin(be), "fx_oldest");
    assert_string_equal(atp_backend_plugin_version(be), "1.0-oldest");
    assert_string_equal(atp_backend_plugin_path(be), path);
    /* check() lies past its struct_size: absent, so the backend is
     * usable; calling it would fail with "read past struct_size". */
    if (atp_backend_check(be, &res) != 0)
        fail_msg("check of fx_oldest: %s", res.message);
    assert_int_equal(res.status, ATP_STATUS_OK);

    assert_int_equal(run(be, "echo hello", &t, &res), 0);
    assert_string_equal(t.text, "out: fx_oldest: ran echo hello\n"
                                "err: fx_oldest: on stderr\n");
    assert_int_equal(res.status, ATP_STATUS_EXIT);
    assert_int_equal(res.exit_code, 42);
    assert_int_equal(res.signal, 0);
    assert_int_equal(res.stdout_bytes, strlen("fx_oldest: ran echo hello\n"));
    assert_int_equal(res.stderr_bytes, strlen("fx_oldest: on stderr\n"));
    atp_backend_free(be);
    atp_config_free(cfg);
}

/* An instance with a name of its own selects fx_oldest by `plugin =`,
 * found on ATP_PLUGIN_PATH. */
static void oldest_by_plugin_key(void **state)
{
    atp_result res = ATP_RESULT_INIT;
    struct transcript t;
    char path[4096], msg[2048];
    atp_config *cfg;
    atp_backend *be;

    (void)state;
    search_fixtures();
    fx_path(path, sizeof(path), fx_dir, "fx_oldest");
    if (open_backend(&cfg, &be, "[backend.old]\nplugin = fx_oldest\n", "old",
                     msg, sizeof(msg)))
        fail_msg("backend old should open: %s", msg);
    assert_string_equal(atp_backend_name(be), "old");
    assert_string_equal(atp_backend_plugin(be), "fx_oldest");
    assert_string_equal(atp_backend_plugin_path(be), path);
    assert_int_equal(run(be, "true", &t, &res), 0);
    assert_string_equal(t.text, "out: fx_oldest: ran true\n"
                                "err: fx_oldest: on stderr\n");
    assert_int_equal(res.exit_code, 42);
    atp_backend_free(be);
    atp_config_free(cfg);
}

static void future_runs(void **state)
{
    char text[4096], msg[2048], want[512];
    atp_result res = ATP_RESULT_INIT;
    struct transcript t;
    atp_config *cfg;
    atp_backend *be;
    int pass;

    (void)state;
    for (pass = 0; pass < 2; pass++) {
        if (pass == 0) {
            path_config(text, sizeof(text), "fx_future");
        } else {
            text[0] = '\0';
            search_fixtures();
        }
        if (open_backend(&cfg, &be, text, "fx_future", msg, sizeof(msg)))
            fail_msg("fx_future should load: %s", msg);
        assert_string_equal(atp_backend_plugin_version(be), "1.99-future");
        assert_true(atp_backend_caps(be) & ATP_CAP_SHARED_FS);

        /* Its check() is within the 1.0 table: the core calls it. */
        snprintf(want, sizeof(want), "fx_future: check called (host ABI "
                 "%d.%d)", ATP_PLUGIN_ABI_MAJOR, ATP_PLUGIN_ABI_MINOR);
        assert_int_equal(atp_backend_check(be, &res), ATP_E_BACKEND);
        assert_contains(res.message, want);

        assert_int_equal(run(be, "make test", &t, &res), 0);
        snprintf(want, sizeof(want),
                 "out: fx_future: ran make test\n"
                 "err: fx_future: on stderr\n"
                 "out: fx_future: host ABI %d.%d, %zu bytes, snapshot "
                 "service absent\n", ATP_PLUGIN_ABI_MAJOR,
                 ATP_PLUGIN_ABI_MINOR, sizeof(atp_host_api));
        assert_string_equal(t.text, want);
        assert_int_equal(res.status, ATP_STATUS_EXIT);
        assert_int_equal(res.exit_code, 43);
        atp_backend_free(be);
        atp_config_free(cfg);
    }
}

static void marker_runs(void **state)
{
    char text[4096], msg[2048];
    atp_result res = ATP_RESULT_INIT;
    struct transcript t;
    atp_config *cfg;
    atp_backend *be;

    (void)state;
    path_config(text, sizeof(text), "fx_marker");
    if (open_backend(&cfg, &be, text, "fx_marker", msg, sizeof(msg)))
        fail_msg("fx_marker should load: %s", msg);
    assert_int_equal(run(be, "exit 3", &t, &res), 0);
    assert_string_equal(t.text, "out: fx_marker: ran exit 3\n"
                                "err: fx_marker: on stderr\n");
    assert_int_equal(res.exit_code, 44);
    atp_backend_free(be);
    atp_config_free(cfg);
}

/* ------------------------------------------------------------------ */
/* Refused fixtures                                                      */

static void major2_refused(void **state)
{
    char speaks[64];
    const char *why[] = {"built for plugin ABI 2 ",
                         "it exports atp_plugin_entry_v2", speaks, NULL};

    (void)state;
    snprintf(speaks, sizeof(speaks), "this core speaks ABI %d.%d",
             ATP_PLUGIN_ABI_MAJOR, ATP_PLUGIN_ABI_MINOR);
    expect_refused("fx_major2", ATP_E_ABI, why);
}

static void noentry_refused(void **state)
{
    const char *why[] = {"no entry point atp_plugin_entry_v1", NULL};

    (void)state;
    expect_refused("fx_noentry", ATP_E_ABI, why);
}

static void badmajor_refused(void **state)
{
    char speaks[64];
    const char *why[] = {"built for plugin ABI 2.0", speaks, NULL};

    (void)state;
    snprintf(speaks, sizeof(speaks), "this core speaks ABI %d.%d",
             ATP_PLUGIN_ABI_MAJOR, ATP_PLUGIN_ABI_MINOR);
    expect_refused("fx_badmajor", ATP_E_ABI, why);
}

static void initfail_refused(void **state)
{
    const char *why[] = {"initialisation failed",
                         "fx_initfail: libfake could not start (code 7)",
                         NULL};

    (void)state;
    expect_refused("fx_initfail", ATP_E_ABI, why);
}

static void nomandatory_refused(void **state)
{
    char abi[64];
    const char *why[] = {"missing mandatory callback exec", abi, NULL};

    (void)state;
    snprintf(abi, sizeof(abi), "plugin ABI %d.%d", ATP_PLUGIN_ABI_MAJOR,
             ATP_PLUGIN_ABI_MINOR);
    expect_refused("fx_nomandatory", ATP_E_ABI, why);
}

/* ------------------------------------------------------------------ */
/* Search path                                                           */

static void unknown_backend(void **state)
{
    char msg[2048], *search;
    const char *held;
    atp_config *cfg;
    atp_backend *be;
    size_t len;

    (void)state;
    search_fixtures();
    assert_int_equal(open_backend(&cfg, &be,
                                  "[atp]\nplugin_path = /opt/atp-extra\n",
                                  "fx_nosuch", msg, sizeof(msg)),
                     ATP_E_CONFIG);
    assert_contains(msg, "unknown backend 'fx_nosuch'");
    assert_contains(msg, "test.ini has no [backend.fx_nosuch] section");
    assert_contains(msg, "no plugin atp-fx_nosuch.so in ");
    assert_contains(msg, "ATP_PLUGIN_PATH");
    /* The search path, in order: environment, [atp] plugin_path, then
     * the built-in directory. */
    held = atp_plugin_search_path(cfg);
    search = strdup(held);
    assert_non_null(search);
    /* What a caller holds stays valid while the path is unchanged. */
    assert_int_equal(atp_backend_open(&be, cfg, "fx_nosuch"), ATP_E_CONFIG);
    assert_ptr_equal(atp_plugin_search_path(cfg), held);
    assert_string_equal(held, search);
    assert_contains(msg, search);
    len = strlen(getenv("ATP_PLUGIN_PATH"));
    assert_int_equal(strncmp(search, getenv("ATP_PLUGIN_PATH"), len), 0);
    if (strncmp(search + len, ":/opt/atp-extra:", 16) != 0)
        fail_msg("search path '%s': [atp] plugin_path should follow "
                 "$ATP_PLUGIN_PATH", search);
    assert_true(strlen(search + len + 16) > 0);
    free(search);
    atp_config_free(cfg);
}

static void missing_path(void **state)
{
    char msg[2048];
    atp_config *cfg;
    atp_backend *be;

    (void)state;
    assert_int_equal(open_backend(&cfg, &be, "[backend.ghost]\npath = "
                                  "/nonexistent/atp-ghost.so\n", "ghost",
                                  msg, sizeof(msg)),
                     ATP_E_CONFIG);
    assert_contains(msg, "/nonexistent/atp-ghost.so");
    assert_contains(msg, "does not exist");
    atp_config_free(cfg);
}

struct seen {
    atp_plugin_info info[64];
    char *name[64], *path[64], *refusal[64], *version[64];
    size_t n;
};

static void collect(const atp_plugin_info *info, void *payload)
{
    struct seen *s = payload;
    size_t i = s->n;

    if (i >= 64)
        return;
    s->info[i] = *info;
    s->name[i] = strdup(info->name);
    s->path[i] = strdup(info->path);
    s->refusal[i] = info->refusal ? strdup(info->refusal) : NULL;
    s->version[i] = info->version ? strdup(info->version) : NULL;
    s->n++;
}

static void seen_free(struct seen *s)
{
    size_t i;

    for (i = 0; i < s->n; i++) {
        free(s->name[i]);
        free(s->path[i]);
        free(s->refusal[i]);
        free(s->version[i]);
    }
    s->n = 0;
}

/* Entries of @s whose file is in @dir, in report order. */
static size_t in_dir(const struct seen *s, const char *dir, size_t *idx)
{
    size_t i, n = 0, len = strlen(dir);

    for (i = 0; i < s->n; i++)
        if (strncmp(s->path[i], dir, len) == 0 && s->path[i][len] == '/' &&
            strchr(s->path[i] + len + 1, '/') == NULL)
            idx[n++] = i;
    return n;
}

static void scan_reports_every_fixture(void **state)
{
    struct seen *s = calloc(1, sizeof(*s));
    size_t idx[64], n, i;
    char path[4096];
    atp_config *cfg;

    (void)state;
    assert_non_null(s);
    search_fixtures();
    cfg = config("");
    assert_int_equal(atp_plugins_scan(cfg, collect, s), 0);
    n = in_dir(s, fx_dir, idx);
    if (n != N_FIXTURES)
        fail_msg("scan reported %zu files in %s, not %d", n, fx_dir,
                 N_FIXTURES);
    for (i = 0; i < n; i++) {
        const struct fixture *f = &fixtures[i];
        const atp_plugin_info *info = &s->info[idx[i]];

        fx_path(path, sizeof(path), fx_dir, f->name);
        assert_string_equal(s->name[idx[i]], f->name);
        assert_string_equal(s->path[idx[i]], path);
        assert_int_equal(info->struct_size, sizeof(atp_plugin_info));
        assert_int_equal(info->shadowed, 0);
        if (info->loaded != f->loaded)
            fail_msg("%s: loaded %d, not %d (%s)", f->name, info->loaded,
                     f->loaded, s->refusal[idx[i]]);
        assert_int_equal(info->abi_major, f->abi_major);
        if (f->loaded) {
            assert_null(s->refusal[idx[i]]);
            assert_string_equal(s->version[idx[i]], f->version);
            assert_int_equal(info->abi_minor, f->abi_minor);
        } else {
            assert_contains(s->refusal[idx[i]], f->reason);
            assert_names_core_abi(s->refusal[idx[i]]);
        }
    }
    seen_free(s);
    free(s);
    atp_config_free(cfg);
}

/* Copy file @from to @to. */
static void copy_file(const char *from, const char *to)
{
    char buf[65536];
    int in = open(from, O_RDONLY | O_CLOEXEC);
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
    ssize_t n;

    if (in < 0 || out < 0)
        fail_msg("copy %s to %s: %s", from, to, strerror(errno));
    while ((n = read(in, buf, sizeof(buf))) > 0)
        assert_int_equal(write(out, buf, (size_t)n), n);
    assert_int_equal(n, 0);
    close(in);
    close(out);
}

static void shadowed_by_first_dir(void **state)
{
    char tmpl[1024], a[1100], b[1100], pa[1200], pb[1200], da[1200];
    char db[1200];
    char search[2500], src[4096], msg[2048];
    atp_result res = ATP_RESULT_INIT;
    struct seen *s = calloc(1, sizeof(*s));
    struct transcript t;
    size_t idx[64], n;
    atp_config *cfg;
    atp_backend *be;
    char *top;

    (void)state;
    assert_non_null(s);
    tmp_template(tmpl, sizeof(tmpl), "loader");
    top = mkdtemp(tmpl);
    assert_non_null(top);
    snprintf(a, sizeof(a), "%s/a", top);
    snprintf(b, sizeof(b), "%s/b", top);
    assert_int_equal(mkdir(a, 0755), 0);
    assert_int_equal(mkdir(b, 0755), 0);
    /* The same name in both: fx_future in the first, fx_oldest later. */
    fx_path(pa, sizeof(pa), a, "fx_twice");
    fx_path(pb, sizeof(pb), b, "fx_twice");
    fx_path(src, sizeof(src), fx_dir, "fx_future");
    copy_file(src, pa);
    fx_path(src, sizeof(src), fx_dir, "fx_oldest");
    copy_file(src, pb);
    /* A directory named like a plugin is no candidate: the file of that
     * name in the next directory is. */
    fx_path(da, sizeof(da), a, "fx_dirent");
    fx_path(db, sizeof(db), b, "fx_dirent");
    assert_int_equal(mkdir(da, 0755), 0);
    copy_file(src, db);
    snprintf(search, sizeof(search), "%s:%s", a, b);
    setenv("ATP_PLUGIN_PATH", search, 1);

    if (open_backend(&cfg, &be, "", "fx_dirent", msg, sizeof(msg)))
        fail_msg("fx_dirent should load from %s: %s", b, msg);
    assert_string_equal(atp_backend_plugin_path(be), db);
    atp_backend_free(be);
    atp_config_free(cfg);

    if (open_backend(&cfg, &be, "", "fx_twice", msg, sizeof(msg)))
        fail_msg("fx_twice should load: %s", msg);
    assert_string_equal(atp_backend_plugin_path(be), pa);
    assert_string_equal(atp_backend_plugin_version(be), "1.99-future");
    assert_int_equal(run(be, "id", &t, &res), 0);
    assert_contains(t.text, "out: fx_future: ran id\n");
    assert_int_equal(res.exit_code, 43);
    atp_backend_free(be);

    assert_int_equal(atp_plugins_scan(cfg, collect, s), 0);
    /* Only fx_twice in the first directory; the directory is skipped. */
    assert_int_equal(in_dir(s, a, idx), 1);
    assert_string_equal(s->name[idx[0]], "fx_twice");
    assert_int_equal(s->info[idx[0]].shadowed, 0);
    assert_int_equal(s->info[idx[0]].loaded, 1);
    assert_string_equal(s->version[idx[0]], "1.99-future");
    /* fx_dirent, then the shadowed fx_twice, after the one that wins. */
    n = in_dir(s, b, idx + 1);
    assert_int_equal(n, 2);
    assert_string_equal(s->path[idx[1]], db);
    assert_int_equal(s->info[idx[1]].shadowed, 0);
    assert_int_equal(s->info[idx[1]].loaded, 1);
    assert_string_equal(s->name[idx[2]], "fx_twice");
    assert_string_equal(s->path[idx[2]], pb);
    assert_int_equal(s->info[idx[2]].shadowed, 1);
    assert_true(idx[2] > idx[0]);
    seen_free(s);
    free(s);
    atp_config_free(cfg);

    /* The loader keeps both mapped; the files can go. */
    assert_int_equal(unlink(pa), 0);
    assert_int_equal(unlink(pb), 0);
    assert_int_equal(unlink(db), 0);
    assert_int_equal(rmdir(da), 0);
    assert_int_equal(rmdir(a), 0);
    assert_int_equal(rmdir(b), 0);
    assert_int_equal(rmdir(top), 0);
}

/* ------------------------------------------------------------------ */
/* Fresh processes                                                       */

/*
 * Run `self --child @scenario` and fail with its output unless it exits
 * 0.  The child inherits the environment, so it sees ATP_FIXTURES.
 */
static void run_child(const char *scenario)
{
    char out[16384];
    size_t len = 0;
    ssize_t n;
    int fds[2], status;
    pid_t pid;

    assert_int_equal(pipe(fds), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char *argv[4];

        argv[0] = self;
        argv[1] = (char *)"--child";
        argv[2] = (char *)scenario;
        argv[3] = NULL;
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execv(self, argv);
        _exit(127);
    }
    close(fds[1]);
    while ((n = read(fds[0], out + len, sizeof(out) - 1 - len)) > 0)
        len += (size_t)n;
    out[len] = '\0';
    close(fds[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("child %s failed (status 0x%x):\n%s", scenario, status,
                 out);
}

static void only_selected_plugin_loads(void **state)
{
    (void)state;
    run_child("marker");
}

static void debug_traces_candidates(void **state)
{
    (void)state;
    run_child("debug");
}

/* In a child: print why and exit 1 unless @cond. */
#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        if (!(cond)) {                                                     \
            printf("%s:%d: %s: ", __FILE__, __LINE__, #cond);              \
            printf(__VA_ARGS__);                                           \
            putchar('\n');                                                 \
            fflush(stdout);                                                \
            _exit(1);                                                      \
        }                                                                  \
    } while (0)

/* Lines equal to @line in file @path (0 when it does not exist). */
static int count_lines(const char *path, const char *line)
{
    FILE *f = fopen(path, "r");
    char buf[256];
    int n = 0;

    if (f == NULL)
        return 0;
    while (fgets(buf, sizeof(buf), f))
        n += strcmp(buf, line) == 0;
    fclose(f);
    return n;
}

/* Whether this process has mapped fixture @name. */
static int is_loaded(const char *name)
{
    char path[4096];
    void *h;

    fx_path(path, sizeof(path), fx_dir, name);
    h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    if (h)
        dlclose(h);
    return h != NULL;
}

static void ignore_info(const atp_plugin_info *info, void *payload)
{
    (void)info;
    (void)payload;
}

static int child_open_and_run(const char *name, int want_exit)
{
    atp_session_opts sopts = ATP_SESSION_OPTS_INIT;
    atp_result res = ATP_RESULT_INIT;
    atp_config *cfg = NULL;
    atp_backend *be = NULL;
    int rc;

    CHECK(atp_config_load_string(&cfg, "", "child.ini") == 0, "%s",
          atp_last_error());
    rc = atp_backend_open(&be, cfg, name);
    CHECK(rc == 0, "open %s: %s", name, atp_last_error());
    rc = atp_run(be, &sopts, "true", NULL, 1, &res);
    CHECK(rc == 0 && res.exit_code == want_exit,
          "run on %s: rc %d, exit %d, %s", name, rc, res.exit_code,
          res.message);
    atp_backend_free(be);
    atp_config_free(cfg);
    return 0;
}

/*
 * Opening fx_future loads that file only; a scan loads every file.  Each
 * file is loaded, and its entry point called, once per process.
 */
static int child_marker(void)
{
    static const char loaded[] = "fx_marker loaded\n";
    static const char entry[] = "fx_marker entry\n";
    char marker[1024];
    atp_config *cfg = NULL;
    size_t i;
    int fd;

    tmp_template(marker, sizeof(marker), "marker");
    fd = mkstemp(marker);
    CHECK(fd >= 0, "mkstemp: %s", strerror(errno));
    close(fd);
    unlink(marker);
    setenv("ATP_FX_MARKER", marker, 1);
    setenv("ATP_PLUGIN_PATH", fx_dir, 1);

    for (i = 0; i < N_FIXTURES; i++)
        CHECK(!is_loaded(fixtures[i].name), "%s loaded at start",
              fixtures[i].name);
    child_open_and_run("fx_future", 43);
    CHECK(count_lines(marker, loaded) == 0, "opening fx_future loaded "
          "fx_marker");
    for (i = 0; i < N_FIXTURES; i++)
        CHECK(is_loaded(fixtures[i].name) ==
                  (strcmp(fixtures[i].name, "fx_future") == 0),
              "after opening fx_future, %s is%s loaded", fixtures[i].name,
              is_loaded(fixtures[i].name) ? "" : " not");

    CHECK(atp_config_load_string(&cfg, "", "child.ini") == 0, "%s",
          atp_last_error());
    CHECK(atp_plugins_scan(cfg, ignore_info, NULL) == 0, "scan failed");
    CHECK(count_lines(marker, loaded) == 1 && count_lines(marker, entry) == 1,
          "after a scan, fx_marker was loaded %d times, entered %d times",
          count_lines(marker, loaded), count_lines(marker, entry));
    for (i = 0; i < N_FIXTURES; i++)
        CHECK(is_loaded(fixtures[i].name), "the scan did not load %s",
              fixtures[i].name);
    CHECK(atp_plugins_scan(cfg, ignore_info, NULL) == 0, "scan failed");
    atp_config_free(cfg);
    child_open_and_run("fx_marker", 44);
    CHECK(count_lines(marker, loaded) == 1 && count_lines(marker, entry) == 1,
          "after two scans and a run, fx_marker was loaded %d times, "
          "entered %d times", count_lines(marker, loaded),
          count_lines(marker, entry));
    unlink(marker);
    return 0;
}

/* Run @fn with stderr going to a file; returns what was written. */
static char *capture_stderr(void (*fn)(void *), void *arg)
{
    static char text[16384];
    char tmpl[1024];
    ssize_t n;
    int fd, saved;

    tmp_template(tmpl, sizeof(tmpl), "stderr");
    fd = mkstemp(tmpl);
    CHECK(fd >= 0, "mkstemp: %s", strerror(errno));
    unlink(tmpl);
    fflush(stderr);
    saved = dup(2);
    dup2(fd, 2);
    fn(arg);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    lseek(fd, 0, SEEK_SET);
    n = read(fd, text, sizeof(text) - 1);
    text[n > 0 ? n : 0] = '\0';
    close(fd);
    return text;
}

/* The log callback atp-run installs: the loader's trace, on stderr. */
static void log_to_stderr(int level, const char *origin, const char *message,
                          void *payload)
{
    (void)level;
    (void)payload;
    if (strcmp(origin, "plugin-loader") == 0)
        fprintf(stderr, "atp: plugin: %s\n", message);
}

static int load_logging(atp_config **cfg, const char *text)
{
    int rc = atp_config_load_string(cfg, text, "child.ini");

    if (rc == 0)
        atp_config_set_log(*cfg, log_to_stderr, ATP_LOG_WARN, NULL);
    return rc;
}

static void open_quietly(void *arg)
{
    atp_config *cfg = NULL;
    atp_backend *be = NULL;

    if (load_logging(&cfg, "") != 0)
        return;
    if (atp_backend_open(&be, cfg, (const char *)arg) == 0)
        atp_backend_free(be);
    atp_config_free(cfg);
}

static void open_by_path(void *arg)
{
    char text[4096];
    atp_config *cfg = NULL;
    atp_backend *be = NULL;

    path_config(text, sizeof(text), (const char *)arg);
    if (load_logging(&cfg, text) != 0)
        return;
    if (atp_backend_open(&be, cfg, (const char *)arg) == 0)
        atp_backend_free(be);
    atp_config_free(cfg);
}

static void scan_quietly(void *arg)
{
    atp_config *cfg = NULL;

    (void)arg;
    if (load_logging(&cfg, "") != 0)
        return;
    atp_plugins_scan(cfg, ignore_info, NULL);
    atp_config_free(cfg);
}

#define CHECK_HAS(text, ...)                                               \
    do {                                                                   \
        char want_[8192];                                                  \
        snprintf(want_, sizeof(want_), __VA_ARGS__);                       \
        CHECK(strstr((text), want_) != NULL, "trace lacks '%s':\n%s",      \
              want_, (text));                                              \
    } while (0)

/* ATP_PLUGIN_DEBUG=1 traces every candidate file and its fate. */
static int child_debug(void)
{
    const char *none = "/nonexistent/atp-plugins";
    char search[4096];
    char *text;

    snprintf(search, sizeof(search), "%s:%s", none, fx_dir);
    setenv("ATP_PLUGIN_PATH", search, 1);

    /* Off by default, and with 0. */
    unsetenv("ATP_PLUGIN_DEBUG");
    text = capture_stderr(open_quietly, (void *)"fx_future");
    CHECK(text[0] == '\0', "trace without ATP_PLUGIN_DEBUG:\n%s", text);
    setenv("ATP_PLUGIN_DEBUG", "0", 1);
    text = capture_stderr(open_quietly, (void *)"fx_marker");
    CHECK(text[0] == '\0', "trace with ATP_PLUGIN_DEBUG=0:\n%s", text);

    setenv("ATP_PLUGIN_DEBUG", "1", 1);
    text = capture_stderr(open_quietly, (void *)"fx_oldest");
    CHECK_HAS(text, "atp: plugin: %s/atp-fx_oldest.so: not there\n", none);
    CHECK_HAS(text, "atp: plugin: %s/atp-fx_oldest.so: candidate for "
              "'fx_oldest'\n", fx_dir);
    CHECK_HAS(text, "atp: plugin: %s/atp-fx_oldest.so: loaded fx_oldest "
              "1.0-oldest (plugin ABI 1.%d, core ABI %d.%d)\n", fx_dir,
              ATP_PLUGIN_ABI_MINOR_FLOOR, ATP_PLUGIN_ABI_MAJOR,
              ATP_PLUGIN_ABI_MINOR);
    CHECK(strstr(text, "not there") < strstr(text, "candidate"),
          "candidates out of search order:\n%s", text);

    text = capture_stderr(open_quietly, (void *)"fx_noentry");
    CHECK_HAS(text, "atp: plugin: %s/atp-fx_noentry.so: refused: no entry "
              "point atp_plugin_entry_v1", fx_dir);

    text = capture_stderr(open_by_path, (void *)"fx_badmajor");
    CHECK_HAS(text, "atp: plugin: %s/atp-fx_badmajor.so: candidate for "
              "'fx_badmajor' (from the backend's path)\n", fx_dir);
    CHECK_HAS(text, "atp: plugin: %s/atp-fx_badmajor.so: refused: built for "
              "plugin ABI 2.0", fx_dir);
    CHECK(strstr(text, none) == NULL, "a backend's path is not searched "
          "for:\n%s", text);

    text = capture_stderr(open_quietly, (void *)"fx_nosuch");
    CHECK_HAS(text, "atp: plugin: %s/atp-fx_nosuch.so: not there\n", none);
    CHECK_HAS(text, "atp: plugin: %s/atp-fx_nosuch.so: not there\n",
              fx_dir);

    /* A scan traces every file: new ones with their fate, the others as
     * seen before. */
    text = capture_stderr(scan_quietly, NULL);
    CHECK_HAS(text, "atp: plugin: scanning %s (cannot open)\n", none);
    CHECK_HAS(text, "atp: plugin: scanning %s\n", fx_dir);
    CHECK_HAS(text, "atp: plugin: %s/atp-fx_major2.so: refused: built for "
              "plugin ABI 2", fx_dir);
    CHECK_HAS(text, "atp: plugin: %s/atp-fx_nomandatory.so: refused: "
              "missing mandatory callback exec", fx_dir);
    CHECK_HAS(text, "atp: plugin: %s/atp-fx_oldest.so: loaded earlier in "
              "this process\n", fx_dir);
    CHECK_HAS(text, "atp: plugin: %s/atp-fx_noentry.so: refused earlier in "
              "this process\n", fx_dir);
    CHECK_HAS(text, "atp: plugin: %s/atp-fx_future.so: loaded earlier in "
              "this process\n", fx_dir);
    return 0;
}

/* ------------------------------------------------------------------ */

static int setup(void **state)
{
    const char *dir = getenv("ATP_FIXTURES");
    ssize_t n;

    (void)state;
    if (dir == NULL || *dir == '\0') {
        fprintf(stderr, "ATP_FIXTURES is not set: run through make check\n");
        return -1;
    }
    snprintf(fx_dir, sizeof(fx_dir), "%s", dir);
    n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        return -1;
    self[n] = '\0';
    return 0;
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(oldest_runs),
        cmocka_unit_test(oldest_by_plugin_key),
        cmocka_unit_test(future_runs),
        cmocka_unit_test(marker_runs),
        cmocka_unit_test(major2_refused),
        cmocka_unit_test(noentry_refused),
        cmocka_unit_test(badmajor_refused),
        cmocka_unit_test(initfail_refused),
        cmocka_unit_test(nomandatory_refused),
        cmocka_unit_test(unknown_backend),
        cmocka_unit_test(missing_path),
        cmocka_unit_test(scan_reports_every_fixture),
        cmocka_unit_test(shadowed_by_first_dir),
        cmocka_unit_test(only_selected_plugin_loads),
        cmocka_unit_test(debug_traces_candidates),
    };

    snprintf(core_abi[0], sizeof(core_abi[0]), "core ABI %d.%d",
             ATP_PLUGIN_ABI_MAJOR, ATP_PLUGIN_ABI_MINOR);
    snprintf(core_abi[1], sizeof(core_abi[1]), "core speaks ABI %d.%d",
             ATP_PLUGIN_ABI_MAJOR, ATP_PLUGIN_ABI_MINOR);
    unsetenv("ATP_FX_MARKER");
    unsetenv("ATP_PLUGIN_DEBUG");
    if (argc == 3 && strcmp(argv[1], "--child") == 0) {
        if (setup(NULL) != 0)
            return 99;
        if (strcmp(argv[2], "marker") == 0)
            return child_marker();
        if (strcmp(argv[2], "debug") == 0)
            return child_debug();
        return 99;
    }
    return cmocka_run_group_tests_name("loader", tests, setup, NULL);
}
