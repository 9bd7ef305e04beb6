/*
 * cli/batch.c - atp-run batch: thousands of attempts from JSON Lines.
 *
 *   atp-run batch [OPTIONS] ATTEMPTS.jsonl|-
 *
 * Every attempt of the file is checked before any runs (a typo at line
 * 900 costs nothing); then libatp's batch engine runs them, and each
 * result is one JSON line written with one write(2) the moment it is
 * known, so a crash loses only what was running.  --resume FILE skips
 * the ids FILE already has a final result for and appends to it.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <json.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <atp/atp.h>

#include "args.h"
#include "batch.h"
#include "output.h"

#define EXIT_USAGE 2
#define EXIT_BACKEND 125
#define DEFAULT_INLINE (64 * 1024)

/* One attempt as the file gives it. */
struct attempt {
    char *id, *command, *workdir, *template_dir, *stdin_path, *backend;
    char **env;
    double timeout_s;
    int line;
};

struct batch_cli {
    const char *config, *backend, *out_dir, *resume, *output;
    unsigned jobs;
    double rate;
    int retries;
    long long inline_limit; /* -1: the default */
    double timeout_s;
    int progress;           /* -1: when stderr is a terminal */
    char **env;             /* -e, for every attempt */
    size_t n_env;
    /* the run */
    struct attempt *a;
    size_t n, next;
    atp_config *cfg;
    int out_fd;
    int write_failed;
    size_t total;           /* to run this time */
    size_t by_status[ATP_STATUS_CONFIG_ERROR + 1];
    double sum_provision, sum_exec, sum_sandbox, sum_cpu, sum_cost;
    size_t n_cpu, n_cost;
    int progress_shown;
    char **merged;          /* env of the attempt being handed out */
};

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static atp_batch *volatile g_batch;
static volatile sig_atomic_t g_stop;

static void on_stop(int sig)
{
    atp_batch *b = g_batch;

    if (g_stop == 0)
        g_stop = sig;
    /* A second signal changes nothing: the teardown goes on. */
    if (b)
        atp_batch_cancel(b);
}

static void batch_usage(FILE *f)
{
    fputs(
        "usage: atp-run batch [OPTIONS] ATTEMPTS.jsonl   (or - for stdin)\n"
        "\n"
        "Runs every attempt of ATTEMPTS.jsonl, one JSON object a line:\n"
        "  {\"id\": \"a1\", \"command\": \"lake build\", \"template\": \"proj\"}\n"
        "  id        unique name (string or number)\n"
        "  command   POSIX sh text, or an argv array run as given\n"
        "  workdir   run over this directory, or\n"
        "  template  run over a fresh copy of this directory\n"
        "  env       {\"KEY\": \"VALUE\", ...}\n"
        "  timeout_s budget (number, or \"30s\", \"2m\")\n"
        "  stdin     file read as the command's stdin\n"
        "  backend   backend instance for this attempt\n"
        "and writes one JSON result a line: atp-run --json's result with id,\n"
        "attempt (tries it took) and elapsed_s.  Paths are relative to the\n"
        "current directory.\n"
        "\n"
        "options:\n"
        "  -c, --config FILE     configuration file\n"
        "  -b, --backend NAME    backend of attempts that name none\n"
        "  -j, --jobs N          attempts at once (default 4)\n"
        "      --rate N[/s|/m]   sandbox creations per second at most\n"
        "                        (default: [backend.NAME] create_rate)\n"
        "      --retries N       tries again after an infrastructure\n"
        "                        failure, never after the command's own\n"
        "                        exit or timeout (default 2)\n"
        "  -t, --timeout SECS    budget of attempts that give none\n"
        "  -e, --env KEY=VALUE   for every attempt (-e KEY: from here)\n"
        "      --out DIR         keep DIR/ID/stdout, DIR/ID/stderr and a\n"
        "                        template's copy as DIR/ID/wd\n"
        "      --inline BYTES    output kept in each result (default 64KiB,\n"
        "                        0 with --out)\n"
        "  -o, --output FILE     append results to FILE, not stdout\n"
        "      --resume FILE     skip attempts FILE has a final result for\n"
        "                        (not cancelled); append to FILE\n"
        "      --progress, --no-progress  the progress line on stderr\n"
        "                        (default: when stderr is a terminal)\n"
        "  -h, --help            this text\n"
        "\n"
        "exit status: 0 every attempt ok, 1 some command failed or timed\n"
        "out, 125 some attempt failed for an infrastructure reason after\n"
        "its retries, 2 usage or a bad attempt, 130 after Ctrl-C (every\n"
        "sandbox torn down, running attempts written as cancelled)\n",
        f);
}

static void attempt_free(struct attempt *a)
{
    size_t i;

    free(a->id);
    free(a->command);
    free(a->workdir);
    free(a->template_dir);
    free(a->stdin_path);
    free(a->backend);
    for (i = 0; a->env && a->env[i]; i++)
        free(a->env[i]);
    free(a->env);
}

static int fail_line(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail_line(const char *file, int line, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "atp-run batch: %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return -1;
}

/* A string field, or NULL; -1 when it is there but not a string. */
static int get_str(json_object *o, const char *key, char **out)
{
    json_object *v;

    *out = NULL;
    if (!json_object_object_get_ex(o, key, &v) || v == NULL)
        return 0;
    if (!json_object_is_type(v, json_type_string))
        return -1;
    *out = strdup(json_object_get_string(v));
    return *out ? 0 : -1;
}

static const char *const fields[] = {"id", "command", "workdir", "template",
                                     "env", "timeout_s", "stdin", "backend"};

/* Parse line @line of @file into @a; -1 after saying why. */
static int parse_attempt(const char *file, int line, const char *text,
                         struct attempt *a)
{
    enum json_tokener_error jerr;
    json_object *o = json_tokener_parse_verbose(text, &jerr), *v;
    int rc = -1;
    size_t i;

    memset(a, 0, sizeof(*a));
    a->line = line;
    if (o == NULL)
        return fail_line(file, line, "not JSON: %s",
                         json_tokener_error_desc(jerr));
    if (!json_object_is_type(o, json_type_object)) {
        fail_line(file, line, "an attempt is a JSON object, such as "
                  "{\"id\": \"a1\", \"command\": \"make\"}");
        goto out;
    }
    {
        json_object_object_foreach(o, key, val) {
            (void)val;
            for (i = 0; i < sizeof(fields) / sizeof(*fields); i++)
                if (strcmp(key, fields[i]) == 0)
                    break;
            if (i == sizeof(fields) / sizeof(*fields)) {
                fail_line(file, line, "unknown field \"%s\"; an attempt has "
                          "id, command, workdir, template, env, timeout_s, "
                          "stdin and backend", key);
                goto out;
            }
        }
    }
    /* id: a string or an integer */
    if (!json_object_object_get_ex(o, "id", &v) || v == NULL ||
        !(json_object_is_type(v, json_type_string) ||
          json_object_is_type(v, json_type_int)) ||
        json_object_get_string(v)[0] == '\0') {
        fail_line(file, line, "an attempt needs an \"id\", a non-empty "
                  "string or an integer");
        goto out;
    }
    if ((a->id = strdup(json_object_get_string(v))) == NULL)
        goto out;
    /* command: sh text, or argv */
    if (!json_object_object_get_ex(o, "command", &v) || v == NULL) {
        fail_line(file, line, "attempt %s has no \"command\"", a->id);
        goto out;
    }
    if (json_object_is_type(v, json_type_string) &&
        json_object_get_string_len(v) > 0) {
        a->command = strdup(json_object_get_string(v));
    } else if (json_object_is_type(v, json_type_array) &&
               json_object_array_length(v) > 0) {
        size_t n = json_object_array_length(v);
        const char **argv = calloc(n + 1, sizeof(*argv));

        for (i = 0; argv && i < n; i++) {
            json_object *w = json_object_array_get_idx(v, i);

            if (!json_object_is_type(w, json_type_string)) {
                free(argv);
                fail_line(file, line, "attempt %s: every word of an argv "
                          "\"command\" is a string", a->id);
                goto out;
            }
            argv[i] = json_object_get_string(w);
        }
        a->command = argv ? atp_shell_exec_join(argv) : NULL;
        free(argv);
    } else {
        fail_line(file, line, "attempt %s: \"command\" is sh text or an "
                  "argv array, not empty", a->id);
        goto out;
    }
    if (a->command == NULL)
        goto out;
    if (get_str(o, "workdir", &a->workdir) || get_str(o, "template",
                                                      &a->template_dir) ||
        get_str(o, "stdin", &a->stdin_path) ||
        get_str(o, "backend", &a->backend)) {
        fail_line(file, line, "attempt %s: workdir, template, stdin and "
                  "backend are strings", a->id);
        goto out;
    }
    if (a->workdir && a->template_dir) {
        fail_line(file, line, "attempt %s has both \"workdir\" and "
                  "\"template\": give one (template runs over a copy)",
                  a->id);
        goto out;
    }
    {
        const char *dir = a->workdir ? a->workdir : a->template_dir;
        struct stat st;

        if (dir && (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))) {
            fail_line(file, line, "attempt %s: %s %s is not a directory",
                      a->id, a->workdir ? "workdir" : "template", dir);
            goto out;
        }
        if (a->stdin_path && access(a->stdin_path, R_OK) != 0) {
            fail_line(file, line, "attempt %s: stdin %s: %s", a->id,
                      a->stdin_path, strerror(errno));
            goto out;
        }
    }
    if (json_object_object_get_ex(o, "timeout_s", &v) && v) {
        if (json_object_is_type(v, json_type_int) ||
            json_object_is_type(v, json_type_double)) {
            a->timeout_s = json_object_get_double(v);
            if (!(a->timeout_s >= 0 && a->timeout_s <= CLI_MAX_SECONDS) ||
                (a->timeout_s > 0 && a->timeout_s < CLI_MIN_SECONDS)) {
                fail_line(file, line, "attempt %s: timeout_s %s is not a "
                          "budget from 0.001 s", a->id,
                          json_object_get_string(v));
                goto out;
            }
        } else if (!json_object_is_type(v, json_type_string) ||
                   cli_parse_seconds(json_object_get_string(v),
                                     &a->timeout_s) != 0) {
            fail_line(file, line, "attempt %s: timeout_s is seconds, such "
                      "as 30, 1.5, \"2m\" or \"1h\"", a->id);
            goto out;
        }
    }
    if (json_object_object_get_ex(o, "env", &v) && v) {
        size_t n = 0, len;

        if (!json_object_is_type(v, json_type_object)) {
            fail_line(file, line, "attempt %s: \"env\" is an object, such "
                      "as {\"KEY\": \"VALUE\"}", a->id);
            goto out;
        }
        a->env = calloc((size_t)json_object_object_length(v) + 1,
                        sizeof(*a->env));
        if (a->env == NULL)
            goto out;
        {
            json_object_object_foreach(v, key, val) {
                const char *s;

                if (!cli_env_name_ok(key) ||
                    json_object_is_type(val, json_type_object) ||
                    json_object_is_type(val, json_type_array) ||
                    json_object_is_type(val, json_type_null)) {
                    fail_line(file, line, "attempt %s: env \"%s\": a "
                              "variable name, and a string value", a->id,
                              key);
                    goto out;
                }
                s = json_object_get_string(val);
                len = strlen(key) + strlen(s) + 2;
                a->env[n] = malloc(len);
                if (a->env[n] == NULL)
                    goto out;
                snprintf(a->env[n++], len, "%s=%s", key, s);
            }
        }
    }
    rc = 0;
out:
    json_object_put(o);
    if (rc)
        attempt_free(a);
    return rc;
}

static int cmp_attempt_id(const void *x, const void *y)
{
    const struct attempt *const *a = x, *const *b = y;

    return strcmp((*a)->id, (*b)->id);
}

/* Read every attempt of @file; -1 after saying what is wrong. */
static int read_attempts(struct batch_cli *c, const char *file)
{
    FILE *f = strcmp(file, "-") == 0 ? stdin : fopen(file, "r");
    struct attempt **sorted = NULL;
    char *line = NULL;
    size_t cap = 0, i;
    int no = 0, rc = 0;
    ssize_t len;

    if (f == NULL) {
        fprintf(stderr, "atp-run batch: cannot read %s: %s\n", file,
                strerror(errno));
        return -1;
    }
    while ((len = getline(&line, &cap, f)) >= 0) {
        struct attempt *grown;
        const char *p = line;

        no++;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\n' || *p == '\r' || *p == '\0' || *p == '#')
            continue;
        grown = realloc(c->a, (c->n + 1) * sizeof(*grown));
        if (grown == NULL) {
            rc = -1;
            break;
        }
        c->a = grown;
        if (parse_attempt(strcmp(file, "-") ? file : "stdin", no, line,
                          &c->a[c->n]) != 0) {
            rc = -1;
            break;
        }
        c->n++;
    }
    free(line);
    if (f != stdin)
        fclose(f);
    if (rc)
        return rc;
    if (c->n == 0) {
        fprintf(stderr, "atp-run batch: %s has no attempts\n", file);
        return -1;
    }
    /* Ids are unique: results and --resume go by them. */
    sorted = malloc(c->n * sizeof(*sorted));
    if (sorted == NULL)
        return -1;
    for (i = 0; i < c->n; i++)
        sorted[i] = &c->a[i];
    qsort(sorted, c->n, sizeof(*sorted), cmp_attempt_id);
    for (i = 1; i < c->n; i++)
        if (strcmp(sorted[i - 1]->id, sorted[i]->id) == 0) {
            fail_line(file, sorted[i]->line > sorted[i - 1]->line
                                ? sorted[i]->line
                                : sorted[i - 1]->line,
                      "id %s is given twice (also at line %d); ids are "
                      "unique", sorted[i]->id,
                      sorted[i]->line > sorted[i - 1]->line
                          ? sorted[i - 1]->line
                          : sorted[i]->line);
            rc = -1;
            break;
        }
    free(sorted);
    return rc;
}

static int cmp_str(const void *x, const void *y)
{
    return strcmp(*(char *const *)x, *(char *const *)y);
}

/*
 * --resume: drop the attempts @file has a final result for.  A last line
 * cut short by a crash is not a result (and is cut off before appending).
 */
static int apply_resume(struct batch_cli *c, const char *file)
{
    FILE *f = fopen(file, "r");
    char **done = NULL, *line = NULL;
    size_t n_done = 0, cap = 0, i, kept = 0;
    ssize_t len;

    if (f == NULL) {
        if (errno == ENOENT)
            return 0; /* nothing ran yet */
        fprintf(stderr, "atp-run batch: --resume %s: %s\n", file,
                strerror(errno));
        return -1;
    }
    while ((len = getline(&line, &cap, f)) >= 0) {
        json_object *o, *v;

        if (len == 0 || line[len - 1] != '\n')
            break; /* cut short */
        o = json_tokener_parse(line);
        if (o && json_object_object_get_ex(o, "id", &v) && v &&
            json_object_object_get_ex(o, "status", &v) && v &&
            strcmp(json_object_get_string(v), "cancelled") != 0) {
            char **grown = realloc(done, (n_done + 1) * sizeof(*grown));

            json_object_object_get_ex(o, "id", &v);
            if (grown) {
                done = grown;
                done[n_done] = strdup(json_object_get_string(v));
                if (done[n_done])
                    n_done++;
            }
        }
        json_object_put(o);
    }
    free(line);
    fclose(f);
    if (n_done)
        qsort(done, n_done, sizeof(*done), cmp_str);
    for (i = 0; i < c->n; i++) {
        const char *id = c->a[i].id;

        if (n_done && bsearch(&id, done, n_done, sizeof(*done), cmp_str)) {
            attempt_free(&c->a[i]);
            continue;
        }
        c->a[kept++] = c->a[i];
    }
    fprintf(stderr, "atp-run batch: resuming from %s: %zu of %zu attempts "
                    "have a result there; running the other %zu\n",
            file, c->n - kept, c->n, kept);
    c->n = kept;
    for (i = 0; i < n_done; i++)
        free(done[i]);
    free(done);
    return 0;
}

/* Open the results file for appending, its torn last line cut off. */
static int open_results(const char *file)
{
    int fd = open(file, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    struct stat st;

    if (fd < 0) {
        fprintf(stderr, "atp-run batch: cannot write results to %s: %s\n",
                file, strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) == 0 && st.st_size > 0) {
        off_t end = st.st_size;
        char buf[4096];

        /* Back to just after the last newline. */
        while (end > 0) {
            size_t want = end > (off_t)sizeof(buf) ? sizeof(buf)
                                                   : (size_t)end;
            ssize_t r = pread(fd, buf, want, end - (off_t)want);
            ssize_t k;

            if (r != (ssize_t)want)
                break;
            for (k = r - 1; k >= 0 && buf[k] != '\n'; k--)
                ;
            if (k >= 0) {
                end = end - (off_t)want + k + 1;
                break;
            }
            end -= (off_t)want;
        }
        if (end != st.st_size && ftruncate(fd, end) == 0)
            fprintf(stderr, "atp-run batch: %s ended in a line cut short "
                            "(a crash); it was removed\n", file);
    }
    return fd;
}

/* ---- the engine's callbacks ------------------------------------------- */

static int next_attempt(atp_attempt *out, void *payload)
{
    struct batch_cli *c = payload;
    struct attempt *a;
    size_t n = 0, i;

    if (c->next >= c->n || g_stop)
        return 0;
    a = &c->a[c->next++];
    /* -e for all, the attempt's own over them. */
    free(c->merged);
    while (a->env && a->env[n])
        n++;
    c->merged = calloc(c->n_env + n + 1, sizeof(*c->merged));
    if (c->merged == NULL)
        return ATP_E_NOMEM;
    for (i = 0; i < c->n_env; i++)
        c->merged[i] = c->env[i];
    for (i = 0; i < n; i++)
        c->merged[c->n_env + i] = a->env[i];
    out->id = a->id;
    out->command = a->command;
    out->workdir = a->workdir;
    out->template_dir = a->template_dir;
    out->stdin_path = a->stdin_path;
    out->backend = a->backend;
    out->env = (const char *const *)c->merged;
    out->timeout_s = a->timeout_s > 0 ? a->timeout_s : c->timeout_s;
    return 1;
}

static void clear_progress(struct batch_cli *c)
{
    if (c->progress_shown) {
        fputs("\r\033[K", stderr);
        c->progress_shown = 0;
    }
}

static void put_json_line(struct batch_cli *c, json_object *o)
{
    size_t len;
    const char *text = json_object_to_json_string_length(
        o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
    char *line = malloc(len + 1);
    size_t off = 0;

    if (line == NULL) {
        c->write_failed = 1;
        return;
    }
    memcpy(line, text, len);
    line[len] = '\n';
    /* One write, so that a line is never torn by anything but a crash. */
    while (off < len + 1) {
        ssize_t w = write(c->out_fd, line + off, len + 1 - off);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (!c->write_failed)
                fprintf(stderr, "\natp-run batch: cannot write a result: "
                                "%s; stopping the batch\n",
                        strerror(errno));
            c->write_failed = 1;
            if (g_batch)
                atp_batch_cancel(g_batch);
            break;
        }
        off += (size_t)w;
    }
    free(line);
}

static void on_result(const atp_batch_result *r, void *payload)
{
    struct batch_cli *c = payload;
    const atp_result *res = r->result;
    json_object *o = json_object_new_object();
    json_object *ro = out_result_object(res, r->backend, r->run_id, c->cfg);

    json_object_object_add(o, "id", json_object_new_string(r->id));
    json_object_object_add(o, "attempt", json_object_new_int((int)r->attempt));
    {
        json_object_object_foreach(ro, key, val) {
            if (strcmp(key, "type") != 0)
                json_object_object_add(o, key, json_object_get(val));
        }
    }
    json_object_put(ro);
    json_object_object_add(o, "elapsed_s",
                           json_object_new_double(r->elapsed_s));
    if (r->stdout_text)
        json_object_object_add(o, "stdout",
                               out_string(r->stdout_text, r->stdout_len));
    if (r->stderr_text)
        json_object_object_add(o, "stderr",
                               out_string(r->stderr_text, r->stderr_len));
    if (r->out_dir)
        json_object_object_add(o, "out_dir",
                               json_object_new_string(r->out_dir));
    clear_progress(c);
    put_json_line(c, o);
    json_object_put(o);

    if ((size_t)res->status < sizeof(c->by_status) / sizeof(*c->by_status))
        c->by_status[res->status]++;
    c->sum_provision += res->provision_s;
    c->sum_exec += res->exec_s;
    c->sum_sandbox += res->sandbox_s;
    if (res->cpu_s >= 0) {
        c->sum_cpu += res->cpu_s;
        c->n_cpu++;
    }
    if (res->cost_usd >= 0) {
        c->sum_cost += res->cost_usd;
        c->n_cost++;
    }
}

static void on_progress(const atp_batch_progress *p, void *payload)
{
    struct batch_cli *c = payload;
    char eta[32] = "?";

    if (!c->progress)
        return;
    if (p->rate > 0 && p->done < c->total) {
        double s = (double)(c->total - p->done) / p->rate;

        if (s < 120)
            snprintf(eta, sizeof(eta), "%.0fs", s);
        else if (s < 7200)
            snprintf(eta, sizeof(eta), "%dm%02ds", (int)s / 60,
                     (int)s % 60);
        else
            snprintf(eta, sizeof(eta), "%.1fh", s / 3600);
    }
    fprintf(stderr, "\r\033[K%llu/%zu done, %llu running, %llu failed, "
                    "%llu retried, %.1f/s, ETA %s",
            (unsigned long long)p->done, c->total,
            (unsigned long long)p->running, (unsigned long long)p->failed,
            (unsigned long long)p->retried, p->rate, eta);
    c->progress_shown = 1;
}

static void summary(struct batch_cli *c, double seconds)
{
    size_t done = 0, i;
    char line[1024];
    int n = 0;

    for (i = 0; i < sizeof(c->by_status) / sizeof(*c->by_status); i++)
        done += c->by_status[i];
    n += snprintf(line + n, sizeof(line) - (size_t)n,
                  "atp-run batch: %zu of %zu attempts in %.1f s (%.1f/s):",
                  done, c->total, seconds,
                  seconds > 0 ? (double)done / seconds : 0.0);
    for (i = 0; i < sizeof(c->by_status) / sizeof(*c->by_status); i++)
        if (c->by_status[i] && n < (int)sizeof(line))
            n += snprintf(line + n, sizeof(line) - (size_t)n, " %zu %s,",
                          c->by_status[i], atp_status_name((atp_status)i));
    if (n > 0 && line[n - 1] == ',')
        line[n - 1] = '\0';
    fprintf(stderr, "%s\n", line);
    fprintf(stderr, "atp-run batch: provisioning %.1f s, commands %.1f s, "
                    "sandboxes %.1f s",
            c->sum_provision, c->sum_exec, c->sum_sandbox);
    if (c->n_cpu)
        fprintf(stderr, ", cpu %.1f s", c->sum_cpu);
    if (c->n_cost)
        fprintf(stderr, ", cost $%.4f%s", c->sum_cost,
                c->n_cost < done ? " (of the attempts priced)" : "");
    fputc('\n', stderr);
}

/* ---- options ---------------------------------------------------------- */

enum { OPT_RATE = 256, OPT_RETRIES, OPT_OUT, OPT_INLINE, OPT_RESUME,
       OPT_PROGRESS, OPT_NO_PROGRESS };

static int parse_count(const char *opt, const char *arg, long long max,
                       long long *out)
{
    char *end;
    long long v;

    errno = 0;
    v = strtoll(arg, &end, 10);
    if (end == arg || *end || errno || v < 0 || v > max) {
        fprintf(stderr, "atp-run batch: %s %s: expected a whole number from "
                        "0 to %lld\n", opt, arg, max);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_rate(const char *arg, double *out)
{
    char *end;
    double v;

    v = strtod(arg, &end);
    if (end == arg || !(v > 0 && v < 1e6))
        goto bad;
    if (strcmp(end, "/m") == 0 || strcmp(end, "/min") == 0)
        v /= 60;
    else if (*end && strcmp(end, "/s") != 0)
        goto bad;
    *out = v;
    return 0;
bad:
    fprintf(stderr, "atp-run batch: --rate %s: expected creations per "
                    "second, such as 5, 5/s or 30/m\n", arg);
    return -1;
}

static int parse_batch_opts(int argc, char **argv, struct batch_cli *c)
{
    static const struct option longs[] = {
        {"config", required_argument, NULL, 'c'},
        {"backend", required_argument, NULL, 'b'},
        {"jobs", required_argument, NULL, 'j'},
        {"timeout", required_argument, NULL, 't'},
        {"env", required_argument, NULL, 'e'},
        {"output", required_argument, NULL, 'o'},
        {"rate", required_argument, NULL, OPT_RATE},
        {"retries", required_argument, NULL, OPT_RETRIES},
        {"out", required_argument, NULL, OPT_OUT},
        {"inline", required_argument, NULL, OPT_INLINE},
        {"resume", required_argument, NULL, OPT_RESUME},
        {"progress", no_argument, NULL, OPT_PROGRESS},
        {"no-progress", no_argument, NULL, OPT_NO_PROGRESS},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    long long v;
    int ch;

    opterr = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "+:c:b:j:t:e:o:h", longs, NULL)) !=
           -1) {
        switch (ch) {
        case 'c': c->config = optarg; break;
        case 'b': c->backend = optarg; break;
        case 'j':
            if (parse_count("-j", optarg, 4096, &v))
                return -1;
            if (v == 0) {
                fprintf(stderr, "atp-run batch: -j 0: give at least 1\n");
                return -1;
            }
            c->jobs = (unsigned)v;
            break;
        case 't':
            if (cli_seconds_arg("-t", optarg, &c->timeout_s))
                return -1;
            break;
        case 'e': {
            char *kv = cli_env_arg(optarg);
            char **grown;

            if (kv == NULL)
                return -1;
            grown = realloc(c->env, (c->n_env + 2) * sizeof(*grown));
            if (grown == NULL) {
                free(kv);
                return -1;
            }
            c->env = grown;
            c->env[c->n_env++] = kv;
            c->env[c->n_env] = NULL;
            break;
        }
        case 'o': c->output = optarg; break;
        case OPT_RATE:
            if (parse_rate(optarg, &c->rate))
                return -1;
            break;
        case OPT_RETRIES:
            if (parse_count("--retries", optarg, 100, &v))
                return -1;
            c->retries = v == 0 ? -1 : (int)v;
            break;
        case OPT_OUT: c->out_dir = optarg; break;
        case OPT_INLINE:
            if (parse_count("--inline", optarg, 1LL << 30, &v))
                return -1;
            c->inline_limit = v;
            break;
        case OPT_RESUME: c->resume = optarg; break;
        case OPT_PROGRESS: c->progress = 1; break;
        case OPT_NO_PROGRESS: c->progress = 0; break;
        case 'h':
            batch_usage(stdout);
            exit(0);
        case ':':
            fprintf(stderr, "atp-run batch: option %s needs a value\n",
                    argv[optind - 1]);
            return -1;
        default:
            fprintf(stderr, "atp-run batch: unknown option %s; see atp-run "
                            "batch --help\n", argv[optind - 1]);
            return -1;
        }
    }
    return optind;
}

static void catch(int sig)
{
    struct sigaction sa, old;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    if (sigaction(sig, NULL, &old) == 0 && old.sa_handler == SIG_IGN)
        return;
    sigaction(sig, &sa, NULL);
}

int cli_batch(int argc, char **argv)
{
    struct batch_cli c;
    atp_batch_opts bo = ATP_BATCH_OPTS_INIT;
    atp_batch *b = NULL;
    int first, rc, status = 0;
    double t0;
    size_t i;

    memset(&c, 0, sizeof(c));
    c.inline_limit = -1;
    c.progress = -1;
    c.out_fd = STDOUT_FILENO;
    first = parse_batch_opts(argc, argv, &c);
    if (first < 0) {
        status = EXIT_USAGE;
        goto done;
    }
    if (first != argc - 1) {
        fprintf(stderr, first >= argc
                            ? "atp-run batch: no attempts file given (- for "
                              "stdin); see atp-run batch --help\n"
                            : "atp-run batch: one attempts file, not more; "
                              "see atp-run batch --help\n");
        status = EXIT_USAGE;
        goto done;
    }
    if (c.output && c.resume && strcmp(c.output, c.resume) != 0)
        fprintf(stderr, "atp-run batch: note: results go to %s, not to "
                        "the --resume file %s\n", c.output, c.resume);
    if (read_attempts(&c, argv[first]) != 0 ||
        (c.resume && apply_resume(&c, c.resume) != 0)) {
        status = EXIT_USAGE;
        goto done;
    }
    c.total = c.n;
    if (c.output || c.resume) {
        c.out_fd = open_results(c.output ? c.output : c.resume);
        if (c.out_fd < 0) {
            status = EXIT_USAGE;
            goto done;
        }
    }
    if (c.progress < 0)
        c.progress = isatty(STDERR_FILENO);
    if (c.n == 0) {
        fprintf(stderr, "atp-run batch: nothing left to run\n");
        goto done;
    }
    if ((rc = atp_config_load(&c.cfg, c.config)) != 0) {
        fprintf(stderr, "atp-run batch: %s\n", atp_last_error());
        status = EXIT_USAGE;
        goto done;
    }
    bo.backend = c.backend;
    bo.jobs = c.jobs;
    bo.rate = c.rate;
    bo.retries = c.retries;
    bo.out_dir = c.out_dir;
    bo.inline_limit = c.inline_limit >= 0 ? (size_t)c.inline_limit
                      : c.out_dir        ? 0
                                         : DEFAULT_INLINE;
    bo.on_result = on_result;
    bo.on_progress = on_progress;
    bo.payload = &c;
    if ((rc = atp_batch_new(&b, c.cfg, &bo)) != 0) {
        fprintf(stderr, "atp-run batch: %s\n", atp_last_error());
        status = rc == ATP_E_NOMEM ? EXIT_BACKEND : EXIT_USAGE;
        goto done;
    }
    g_batch = b;
    catch(SIGINT);
    catch(SIGTERM);
    catch(SIGHUP);
    if (g_stop)
        atp_batch_cancel(b);
    t0 = now_s();
    rc = atp_batch_run(b, next_attempt, &c);
    clear_progress(&c);
    if (rc && rc != ATP_E_CANCELLED)
        fprintf(stderr, "atp-run batch: %s\n", atp_last_error());
    summary(&c, now_s() - t0);
    if (g_stop) {
        fprintf(stderr, "atp-run batch: interrupted; running attempts were "
                        "cancelled and their sandboxes torn down; --resume "
                        "runs the rest\n");
        status = 128 + g_stop;
    } else if (c.write_failed) {
        status = 128 + SIGPIPE;
    } else if (rc && rc != ATP_E_CANCELLED) {
        status = EXIT_BACKEND;
    } else {
        for (i = 0; i < sizeof(c.by_status) / sizeof(*c.by_status); i++) {
            if (c.by_status[i] == 0 || i == ATP_STATUS_OK)
                continue;
            if (i == ATP_STATUS_EXIT || i == ATP_STATUS_TIMEOUT) {
                if (status == 0)
                    status = 1;
            } else {
                status = EXIT_BACKEND;
            }
        }
    }
done:
    g_batch = NULL;
    atp_batch_free(b);
    atp_config_free(c.cfg);
    if (c.out_fd != STDOUT_FILENO && c.out_fd >= 0)
        close(c.out_fd);
    for (i = 0; i < c.n; i++)
        attempt_free(&c.a[i]);
    free(c.a);
    free(c.merged);
    for (i = 0; i < c.n_env; i++)
        free(c.env[i]);
    free(c.env);
    return status;
}
