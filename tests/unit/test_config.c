/*
 * Unit tests of configuration parsing and strict values.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../core/internal.h"

static int64_t dur(const char *s)
{
    int64_t v = -1;

    assert_int_equal(atp__parse_duration_ms(s, &v), 0);
    return v;
}

static int64_t size(const char *s)
{
    int64_t v = -1;

    assert_int_equal(atp__parse_size(s, &v), 0);
    return v;
}

static void durations(void **state)
{
    int64_t v;

    (void)state;
    assert_int_equal(dur("30"), 30000);
    assert_int_equal(dur("1.5s"), 1500);
    assert_int_equal(dur("500ms"), 500);
    assert_int_equal(dur("5m"), 300000);
    assert_int_equal(dur("2h"), 7200000);
    assert_int_equal(dur("0"), 0);
    assert_int_not_equal(atp__parse_duration_ms("", &v), 0);
    assert_int_not_equal(atp__parse_duration_ms("-1", &v), 0);
    assert_int_not_equal(atp__parse_duration_ms("10 s", &v), 0);
    assert_int_not_equal(atp__parse_duration_ms("10sec", &v), 0);
    assert_int_not_equal(atp__parse_duration_ms("1e3", &v), 0);
    assert_int_not_equal(atp__parse_duration_ms("s", &v), 0);
    /* A positive budget that would round to 0 ("none") is refused. */
    assert_int_equal(dur("1ms"), 1);
    assert_int_equal(dur("0.0"), 0);
    assert_int_equal(dur("0ms"), 0);
    assert_int_not_equal(atp__parse_duration_ms("0.0004", &v), 0);
    assert_int_not_equal(atp__parse_duration_ms("0.1ms", &v), 0);
    assert_int_not_equal(atp__parse_duration_ms("0.9ms", &v), 0);
    assert_int_not_equal(atp__parse_duration_ms("0.0000001h", &v), 0);
}

static void sizes(void **state)
{
    int64_t v;

    (void)state;
    assert_int_equal(size("4096"), 4096);
    assert_int_equal(size("64KiB"), 65536);
    assert_int_equal(size("4MiB"), 4194304);
    assert_int_equal(size("1GiB"), 1073741824);
    assert_int_equal(size("10MB"), 10000000);
    assert_int_equal(size("1.5KiB"), 1536);
    assert_int_not_equal(atp__parse_size("1.3", &v), 0);
    assert_int_not_equal(atp__parse_size("12 MiB", &v), 0);
    assert_int_not_equal(atp__parse_size("12mib", &v), 0);
    assert_int_not_equal(atp__parse_size("-1", &v), 0);
}

static void booleans_and_ints(void **state)
{
    int b = -1;
    int64_t v;

    (void)state;
    assert_int_equal(atp__parse_bool("yes", &b), 0);
    assert_int_equal(b, 1);
    assert_int_equal(atp__parse_bool("off", &b), 0);
    assert_int_equal(b, 0);
    assert_int_not_equal(atp__parse_bool("True", &b), 0);
    assert_int_not_equal(atp__parse_bool("", &b), 0);
    assert_int_equal(atp__parse_int("-42", &v), 0);
    assert_int_equal(v, -42);
    assert_int_not_equal(atp__parse_int("42x", &v), 0);
    assert_int_not_equal(atp__parse_int(" 42", &v), 0);
    assert_int_not_equal(atp__parse_int("99999999999999999999", &v), 0);
    assert_int_equal(atp__parse_choice("none", "none|bridge|host"), 0);
    assert_int_equal(atp__parse_choice("bridge", "none|bridge|host"), 1);
    assert_int_equal(atp__parse_choice("host", "none|bridge|host"), 2);
    assert_int_equal(atp__parse_choice("brid", "none|bridge|host"),
                     ATP_E_INVAL);
    assert_int_equal(atp__parse_choice("", "none|bridge|host"), ATP_E_INVAL);
}

static void nearest(void **state)
{
    const char *const keys[] = {"timeout_s", "backend", "max_line"};

    (void)state;
    assert_string_equal(atp__nearest("timout_s", keys, 3), "timeout_s");
    assert_string_equal(atp__nearest("backnd", keys, 3), "backend");
    assert_null(atp__nearest("zzzzzzzz", keys, 3));
}

static atp_config *load_ok(const char *text)
{
    atp_config *cfg = NULL;
    int rc = atp_config_load_string(&cfg, text, "test.ini");

    if (rc)
        fail_msg("config should load: %s", atp_last_error());
    return cfg;
}

/* Load must fail with ATP_E_CONFIG and a message containing @want. */
static void load_bad(const char *text, const char *want)
{
    atp_config *cfg = NULL;
    int rc = atp_config_load_string(&cfg, text, "test.ini");

    assert_int_equal(rc, ATP_E_CONFIG);
    assert_null(cfg);
    if (strstr(atp_last_error(), want) == NULL)
        fail_msg("message '%s' lacks '%s'", atp_last_error(), want);
}

static void tiny_durations_refused_in_config(void **state)
{
    atp_config *cfg = load_ok("[atp]\ntimeout_s = 0\n");

    (void)state;
    assert_int_equal(cfg->set.timeout_ms, 0); /* 0: no budget */
    atp_config_free(cfg);
    load_bad("[atp]\ntimeout_s = 0.0004\n",
             "test.ini:2: bad value '0.0004' for timeout_s in [atp]: a "
             "duration under 1ms would round to 0");
    load_bad("[atp]\nkill_grace_s = 0.1ms\n", "under 1ms");
}

static void defaults(void **state)
{
    atp_config *cfg = load_ok("");

    (void)state;
    assert_string_equal(atp_config_backend(cfg), "local");
    assert_int_equal(cfg->set.timeout_ms, 0);
    assert_int_equal(cfg->set.max_line, 1 << 20);
    assert_string_equal(cfg->set.sandbox_workdir, "/workspace/wd");
    assert_null(cfg->set.warm_cache);
    atp_config_free(cfg);
}

static void full_file(void **state)
{
    atp_config *cfg = load_ok(
        "; a comment\n"
        "# another\n"
        "[atp]\n"
        "backend = docker\n"
        "timeout_s = 2m\n"
        "max_line = 64KiB\n"
        "[image]\n"
        "name = open-atp:latest\n"
        "warm_cache = /workspace/.lake\n"
        "[env]\n"
        "LEAN_PATH = /x\n"
        "[backend.docker]\n"
        "image = busybox\n"
        "cpus = 2\n"
        "[backend.modal-big]\n"
        "plugin = modal\n"
        "warmup = lake build\n"
        "  && echo done\n");

    (void)state;
    assert_string_equal(atp_config_backend(cfg), "docker");
    assert_int_equal(cfg->set.timeout_ms, 120000);
    assert_int_equal(cfg->set.max_line, 65536);
    assert_string_equal(cfg->set.image, "open-atp:latest");
    assert_string_equal(cfg->set.warm_cache, "/workspace/.lake");
    assert_string_equal(atp_config_get(cfg, "env", "LEAN_PATH"), "/x");
    assert_string_equal(atp_config_get(cfg, "backend.docker", "cpus"), "2");
    assert_string_equal(atp_config_get(cfg, "backend.modal-big", "plugin"),
                        "modal");
    /* An indented line continues the value. */
    assert_string_equal(atp_config_get(cfg, "backend.modal-big", "warmup"),
                        "lake build\n&& echo done");
    assert_non_null(atp__config_section(cfg, "backend.modal-big"));
    atp_config_free(cfg);
}

static void empty_backend_section_exists(void **state)
{
    atp_config *cfg = load_ok("[backend.docker]\n");

    (void)state;
    assert_non_null(atp__config_section(cfg, "backend.docker"));
    atp_config_free(cfg);
}

static void bad_inputs(void **state)
{
    (void)state;
    load_bad("[atp]\ntimout_s = 5\n",
             "test.ini:2: unknown key 'timout_s' in [atp]; did you mean "
             "'timeout_s'?");
    load_bad("[atp]\nfrobnicate = 5\n", "valid keys: backend, timeout_s");
    load_bad("[atp]\ntimeout_s = soon\n",
             "test.ini:2: bad value 'soon' for timeout_s in [atp]");
    load_bad("[atp]\nmax_line = big\n", "expected a size");
    load_bad("[imag]\nname = x\n",
             "test.ini:1: unknown section [imag]; did you mean [image]?");
    load_bad("[backends.docker]\n", "unknown section [backends.docker]");
    load_bad("[backend.]\n", "unknown section [backend.]");
    load_bad("[backend.a b]\n", "unknown section");
    load_bad("backend = x\n", "test.ini:1: key 'backend' is outside any "
                              "section");
    load_bad("[atp]\nbackend = a\nbackend = b\n",
             "test.ini:3: key 'backend' in [atp] is already set on line 2");
    load_bad("[atp]\nthis line has no equals sign\n",
             "test.ini:2: syntax error");
    load_bad("[env]\n1BAD = x\n", "test.ini:2: '1BAD' in [env] is not a valid");
    load_bad("[image]\nworkdir = relative\n", "must be an absolute path");
    load_bad("[atp]\nmax_line = 10\n", "max_line must be at least 64");
}

/*
 * Lines of any length (inih's own buffer holds 199 bytes): a 64 KiB value,
 * with the inline comment and blanks cut as on a short line, on a key
 * line, on a continuation line and beside long comments.
 */
static void long_lines_work(void **state)
{
    size_t big = 65536, cap = 4 * big + 4096, used = 0;
    char *text = malloc(cap), *want = malloc(big + 1), *two;
    const char *v;
    atp_config *cfg;

    (void)state;
    memset(want, 'v', big);
    want[big] = '\0';
    want[0] = 'a';
    want[big / 2] = ';'; /* not after a blank: no comment */
    want[big / 2 + 1] = '=';
    want[big - 1] = 'z';
    used += (size_t)snprintf(text + used, cap - used,
                             "; %0300d\n[env]   ; %0300d\n"
                             "LONG = %s   ; an inline comment %0300d\n"
                             "AFTER:after\n", 0, 0, want, 0);
    used += (size_t)snprintf(text + used, cap - used,
                             "MULTI = first\n    %s\n  # %0300d\n"
                             "[atp]\nbackend = local\n", want, 0);
    (void)used;
    cfg = load_ok(text);
    v = atp_config_get(cfg, "env", "LONG");
    assert_non_null(v);
    assert_int_equal(strlen(v), big);
    assert_string_equal(v, want);
    assert_string_equal(atp_config_get(cfg, "env", "AFTER"), "after");
    two = malloc(big + 8);
    snprintf(two, big + 8, "first\n%s", want);
    assert_string_equal(atp_config_get(cfg, "env", "MULTI"), two);
    assert_string_equal(atp_config_backend(cfg), "local");
    atp_config_free(cfg);

    /* Errors on a long line still name that line. */
    snprintf(text, cap, "[atp]\nno equals sign %0300d\n", 0);
    load_bad(text, "test.ini:2: syntax error");
    snprintf(text, cap, "[atp]\nbackend = %0300d\n", 1);
    cfg = load_ok(text);
    assert_int_equal(strlen(atp_config_backend(cfg)), 300);
    atp_config_free(cfg);
    snprintf(text, cap, "[env]\nX = 1\n[%0300d]\n", 0);
    load_bad(text, "test.ini:3: section name too long");
    snprintf(text, cap, "[env]\n%0300d = 1\n", 0);
    load_bad(text, "test.ini:2:");
    free(text);
    free(want);
    free(two);
}

/*
 * 100k keys in [env] are read whole and in order; a key set twice among
 * them is still found, naming both lines.  (Each key used to be compared
 * with every key before it: 100k took tens of seconds.)
 */
static void many_env_keys(void **state)
{
    enum { N = 100000 };
    size_t cap = (size_t)N * 32 + 64, used = 0, i;
    char *text = malloc(cap), key[32], val[32];
    const struct atp__section *env;
    atp_config *cfg;

    (void)state;
    used += (size_t)snprintf(text + used, cap - used, "[env]\n");
    for (i = 0; i < N; i++)
        used += (size_t)snprintf(text + used, cap - used, "K%zu = v%zu\n",
                                 i, i * 7);
    snprintf(text + used, cap - used, "  more\n[atp]\nbackend = local\n");
    cfg = load_ok(text);
    env = atp__config_section(cfg, "env");
    assert_non_null(env);
    assert_int_equal(env->n_kv, N);
    for (i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "K%zu", i);
        assert_string_equal(env->kv[i].key, key);
        assert_int_equal(env->kv[i].line, (int)i + 2);
    }
    for (i = 0; i < N; i += 997) {
        snprintf(key, sizeof(key), "K%zu", i);
        snprintf(val, sizeof(val), "v%zu", i * 7);
        assert_string_equal(atp_config_get(cfg, "env", key), val);
    }
    assert_string_equal(atp_config_get(cfg, "env", "K99999"),
                        "v699993\nmore");
    assert_null(atp_config_get(cfg, "env", "K100000"));
    atp_config_free(cfg);

    snprintf(text + used, cap - used, "K54321 = again\n");
    load_bad(text, "test.ini:100002: key 'K54321' in [env] is already set "
                   "on line 54323");
    free(text);
}

static void backend_section_checked_against_plugin(void **state)
{
    static const atp_option opts[] = {
        {"image", ATP_OPT_STRING, NULL, NULL, NULL},
        {"cpus", ATP_OPT_NUMBER, "1", NULL, NULL},
        {"network", ATP_OPT_CHOICE, "none", "none|bridge|host", NULL},
        {NULL, 0, NULL, NULL, NULL},
    };
    atp_config *cfg = load_ok("[backend.d]\nplugin = docker\nimage = x\n"
                              "cpus = 1.5\nnetwork = host\nenv.FOO = bar\n");
    atp_config *bad1 = load_ok("[backend.d]\nimgae = x\n");
    atp_config *bad2 = load_ok("[backend.d]\nnetwork = wifi\n");
    atp_config *bad3 = load_ok("[backend.d]\nenv.9X = 1\n");

    (void)state;
    assert_int_equal(atp__config_check_backend(
                         cfg, atp__config_section(cfg, "backend.d"), opts),
                     0);
    assert_int_equal(atp__config_check_backend(
                         bad1, atp__config_section(bad1, "backend.d"), opts),
                     ATP_E_CONFIG);
    assert_non_null(strstr(atp_last_error(), "test.ini:2: unknown key "
                                             "'imgae' in [backend.d]; did "
                                             "you mean 'image'?"));
    assert_int_equal(atp__config_check_backend(
                         bad2, atp__config_section(bad2, "backend.d"), opts),
                     ATP_E_CONFIG);
    assert_non_null(strstr(atp_last_error(), "expected one of "
                                             "none|bridge|host"));
    assert_int_equal(atp__config_check_backend(
                         bad3, atp__config_section(bad3, "backend.d"), opts),
                     ATP_E_CONFIG);
    atp_config_free(cfg);
    atp_config_free(bad1);
    atp_config_free(bad2);
    atp_config_free(bad3);
}

static void search_order(void **state)
{
    char dir[] = "/tmp/atp-cfg-XXXXXX";
    char path[256], cwd[4096];
    atp_config *cfg = NULL;
    FILE *f;

    (void)state;
    assert_non_null(mkdtemp(dir));
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(chdir(dir), 0);
    unsetenv("ATP_CONFIG");
    setenv("XDG_CONFIG_HOME", dir, 1);

    /* Nothing anywhere: built-in defaults. */
    assert_int_equal(atp_config_load(&cfg, NULL), 0);
    assert_null(atp_config_path(cfg));
    atp_config_free(cfg);

    /* $XDG_CONFIG_HOME/atp/atp.ini */
    snprintf(path, sizeof(path), "%s/atp", dir);
    assert_int_equal(mkdir(path, 0700), 0);
    snprintf(path, sizeof(path), "%s/atp/atp.ini", dir);
    f = fopen(path, "w");
    fputs("[atp]\nbackend = xdg\n", f);
    fclose(f);
    assert_int_equal(atp_config_load(&cfg, NULL), 0);
    assert_string_equal(atp_config_backend(cfg), "xdg");
    atp_config_free(cfg);

    /* ./atp.ini wins over it. */
    f = fopen("atp.ini", "w");
    fputs("[atp]\nbackend = here\n", f);
    fclose(f);
    assert_int_equal(atp_config_load(&cfg, NULL), 0);
    assert_string_equal(atp_config_backend(cfg), "here");
    atp_config_free(cfg);

    /* $ATP_CONFIG wins over both, and must exist. */
    setenv("ATP_CONFIG", path, 1);
    assert_int_equal(atp_config_load(&cfg, NULL), 0);
    assert_string_equal(atp_config_backend(cfg), "xdg");
    atp_config_free(cfg);
    setenv("ATP_CONFIG", "/nonexistent/atp.ini", 1);
    assert_int_equal(atp_config_load(&cfg, NULL), ATP_E_CONFIG);
    assert_non_null(strstr(atp_last_error(), "ATP_CONFIG names "
                                             "/nonexistent/atp.ini"));
    unsetenv("ATP_CONFIG");

    /* An explicit path wins over all and must exist. */
    assert_int_equal(atp_config_load(&cfg, "/nonexistent.ini"), ATP_E_CONFIG);
    assert_non_null(strstr(atp_last_error(), "/nonexistent.ini does not "
                                             "exist"));
    assert_int_equal(atp_config_load(&cfg, dir), ATP_E_CONFIG);
    assert_non_null(strstr(atp_last_error(), "is a directory"));

    unlink("atp.ini");
    unlink(path);
    snprintf(path, sizeof(path), "%s/atp", dir);
    rmdir(path);
    assert_int_equal(chdir(cwd), 0);
    rmdir(dir);
}

/* The shipped example documents every key: it must stay loadable. */
static void example_file_loads(void **state)
{
    const char *top = getenv("ATP_TOP_SRCDIR");
    char path[4096];
    atp_config *cfg = NULL;

    (void)state;
    assert_non_null(top);
    snprintf(path, sizeof(path), "%s/atp.ini.example", top);
    if (atp_config_load(&cfg, path) != 0)
        fail_msg("%s", atp_last_error());
    assert_string_equal(atp_config_backend(cfg), "local");
    assert_int_equal(cfg->set.grace_ms, 10000);
    assert_string_equal(atp_config_get(cfg, "backend.local", "inherit_env"),
                        "true");
    atp_config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(durations),
        cmocka_unit_test(tiny_durations_refused_in_config),
        cmocka_unit_test(sizes),
        cmocka_unit_test(booleans_and_ints),
        cmocka_unit_test(nearest),
        cmocka_unit_test(defaults),
        cmocka_unit_test(full_file),
        cmocka_unit_test(empty_backend_section_exists),
        cmocka_unit_test(bad_inputs),
        cmocka_unit_test(long_lines_work),
        cmocka_unit_test(many_env_keys),
        cmocka_unit_test(backend_section_checked_against_plugin),
        cmocka_unit_test(search_order),
        cmocka_unit_test(example_file_loads),
    };

    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
