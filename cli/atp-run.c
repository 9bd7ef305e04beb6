/*
 * cli/atp-run.c - the atp command line.
 *
 *   atp-run [OPTIONS] [--] COMMAND [ARG...]   one-shot run
 *   atp-run session [OPTIONS]                 commands from stdin, one sandbox
 *   atp-run plugins [--json]                  what plugins are installed
 *   atp-run check [OPTIONS]                   is the configured backend usable
 *   atp-run gc [--all] [--dry-run] [--json]   reap leaked sandboxes
 *   atp-run batch [OPTIONS] ATTEMPTS.jsonl    thousands of attempts
 *
 * Exit status: the command's own; 128+N when it died of signal N; 124 on
 * timeout; 125 when the backend failed; 2 on a usage or configuration
 * error; 130 (or 128+N for signal N) when interrupted.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <atp/atp.h>
#include <atp/plugin.h>

#include "args.h"
#include "batch.h"
#include "output.h"

#define EXIT_USAGE 2
#define EXIT_BACKEND 125

struct opts {
    const char *config;
    const char *backend;
    const char *workdir;
    double timeout_s;
    int json;
    int no_pull;
    int stdin_fwd;
    int all, dry_run;
    const char **env;
    size_t n_env;
    const char **mounts;
    size_t n_mounts;
    const char **owned; /* strings to free */
    size_t n_owned;
};

static atp_session *volatile g_session;
static atp_config *g_cfg; /* for what results record of the image */
static volatile sig_atomic_t g_signal;

static void on_signal(int sig)
{
    atp_session *s = g_session;

    if (g_signal == 0)
        g_signal = sig;
    if (s)
        atp_session_cancel(s);
}

/* Catch @sig, unless it was ignored when we started (nohup, or a
 * background job of a script): that choice stays. */
static void catch_signal(int sig, const struct sigaction *sa)
{
    struct sigaction old;

    if (sigaction(sig, NULL, &old) == 0 && old.sa_handler == SIG_IGN)
        return;
    sigaction(sig, sa, NULL);
}

static void install_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    catch_signal(SIGINT, &sa);
    catch_signal(SIGTERM, &sa);
    catch_signal(SIGHUP, &sa);
    /* Ctrl-\ too: the command is in a process group of its own and would
     * outlive us. */
    catch_signal(SIGQUIT, &sa);
    /* A closed stdout must not kill us before the sandbox is torn down. */
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    /* An ignored SIGCHLD (inherited across exec) would let the kernel reap
     * our commands before we read their exit status. */
    sa.sa_handler = SIG_DFL;
    sigaction(SIGCHLD, &sa, NULL);
}

static void usage(FILE *f)
{
    fputs(
        "usage: atp-run [OPTIONS] [--] COMMAND [ARG...]\n"
        "       atp-run session [OPTIONS]   (one command per line on stdin)\n"
        "       atp-run plugins [--json]\n"
        "       atp-run check [OPTIONS]\n"
        "       atp-run gc [--all] [--dry-run] [--json]\n"
        "       atp-run batch [OPTIONS] ATTEMPTS.jsonl   (see batch --help)\n"
        "\n"
        "Runs COMMAND over a working directory in a sandbox of the configured\n"
        "backend (local by default), streaming its output as it happens.\n"
        "COMMAND and its ARGs run exactly as given (quoted for /bin/sh); use\n"
        "sh -c '...' for shell syntax.  Options may also come before\n"
        "session, plugins, check and gc; put -- before a COMMAND of one of\n"
        "those names.\n"
        "\n"
        "options:\n"
        "  -c, --config FILE     configuration file (default: $ATP_CONFIG,\n"
        "                        ./atp.ini, ~/.config/atp/atp.ini,\n"
        "                        /etc/atp/atp.ini, else built-in defaults)\n"
        "  -b, --backend NAME    backend instance ([atp] backend, or local)\n"
        "  -w, --workdir DIR     working directory (default: .)\n"
        "  -e, --env KEY=VALUE   set a variable for the command (VALUE is\n"
        "                        blanked from atp-run's command line); -e KEY\n"
        "                        passes KEY's value from this environment\n"
        "                        (keeps the value off every command line)\n"
        "  -m, --mount HOST:DEST[:rw]  make HOST visible at DEST (read-only\n"
        "                        unless :rw)\n"
        "  -t, --timeout SECS    budget per command (30, 1.5, 2m, 1h)\n"
        "  -i, --stdin           forward this stdin to the command\n"
        "                        (default: /dev/null)\n"
        "      --no-pull         do not pull the workdir back (isolated\n"
        "                        backends)\n"
        "      --json            JSON Lines on stdout: output lines, events,\n"
        "                        and last a result object\n"
        "  -h, --help            this text\n"
        "  -V, --version         version\n"
        "\n"
        "session input lines: a shell command, or :sync-in / :sync-out\n"
        "\n"
        "exit status: the command's own, 128+N after signal N, 124 timeout,\n"
        "125 backend failure, 2 usage or configuration error, 130 after\n"
        "Ctrl-C (the sandbox is torn down first)\n",
        f);
}

static int add_str(const char ***v, size_t *n, const char *s)
{
    const char **grown = realloc(*v, (*n + 2) * sizeof(*grown));

    if (grown == NULL)
        return -1;
    *v = grown;
    grown[(*n)++] = s;
    grown[*n] = NULL;
    return 0;
}

/* -e KEY=VALUE, or -e KEY taking KEY's value from our environment. */
static int add_env(struct opts *o, char *arg)
{
    char *kv = cli_env_arg(arg);

    if (kv == NULL || add_str(&o->owned, &o->n_owned, kv)) {
        free(kv);
        return -1;
    }
    return add_str(&o->env, &o->n_env, kv);
}

enum { OPT_NO_PULL = 256, OPT_JSON, OPT_ALL, OPT_DRY_RUN };

/* Parse options; returns the index of the first operand, or -1. */
static int parse_opts(int argc, char **argv, struct opts *o, int for_gc)
{
    static const struct option longs[] = {
        {"config", required_argument, NULL, 'c'},
        {"backend", required_argument, NULL, 'b'},
        {"workdir", required_argument, NULL, 'w'},
        {"env", required_argument, NULL, 'e'},
        {"mount", required_argument, NULL, 'm'},
        {"timeout", required_argument, NULL, 't'},
        {"stdin", no_argument, NULL, 'i'},
        {"no-pull", no_argument, NULL, OPT_NO_PULL},
        {"json", no_argument, NULL, OPT_JSON},
        {"all", no_argument, NULL, OPT_ALL},
        {"dry-run", no_argument, NULL, OPT_DRY_RUN},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    int c;

    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+:c:b:w:e:m:t:ihV", longs, NULL)) !=
           -1) {
        if ((c == 'c' || c == 'b' || c == 'w') && optarg[0] == '\0') {
            fprintf(stderr, "atp-run: option -%c needs a non-empty value\n",
                    c);
            return -1;
        }
        switch (c) {
        case 'c': o->config = optarg; break;
        case 'b': o->backend = optarg; break;
        case 'w': o->workdir = optarg; break;
        case 'e':
            if (add_env(o, optarg))
                return -1;
            break;
        case 'm':
            if (add_str(&o->mounts, &o->n_mounts, optarg))
                return -1;
            break;
        case 't':
            if (cli_seconds_arg("-t", optarg, &o->timeout_s))
                return -1;
            break;
        case 'i': o->stdin_fwd = 1; break;
        case OPT_NO_PULL: o->no_pull = 1; break;
        case OPT_JSON: o->json = 1; break;
        case OPT_ALL:
        case OPT_DRY_RUN:
            if (!for_gc) {
                fprintf(stderr, "atp-run: %s is an option of `atp-run gc`\n",
                        argv[optind - 1]);
                return -1;
            }
            if (c == OPT_ALL)
                o->all = 1;
            else
                o->dry_run = 1;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        case 'V':
            printf("atp-run %s (libatp %s, plugin ABI %d.%d)\n",
                   PACKAGE_VERSION, atp_version(), ATP_PLUGIN_ABI_MAJOR,
                   ATP_PLUGIN_ABI_MINOR);
            exit(0);
        case ':':
            fprintf(stderr, "atp-run: option %s needs a value\n",
                    argv[optind - 1]);
            return -1;
        default:
            fprintf(stderr, "atp-run: unknown option %s; see atp-run --help\n",
                    argv[optind - 1]);
            return -1;
        }
    }
    return optind;
}

static void start_output(struct out *out, int json)
{
    out_init(out, json);
    out->stop = &g_signal;
}

/* ---- results and exit status ----------------------------------------- */

static int exit_status(const atp_result *r)
{
    switch (r->status) {
    case ATP_STATUS_EXIT:
        if (r->signal > 0)
            return 128 + r->signal;
        return r->exit_code >= 0 && r->exit_code <= 255 ? r->exit_code : 1;
    case ATP_STATUS_CANCELLED:
        return g_signal ? 128 + g_signal : atp_status_exit_code(r->status);
    default:
        return atp_status_exit_code(r->status);
    }
}

static void emit_result(struct out *out, const atp_result *r,
                        const char *backend, const char *run_id)
{
    if (out->json) {
        json_object *o = out_result_object(r, backend, run_id, g_cfg);

        out_json(out, o);
        json_object_put(o);
        out_flush(out);
    }
    if (r->status == ATP_STATUS_CANCELLED && (g_signal || out->broken))
        return; /* said once, by report_stop() */
    if (r->status != ATP_STATUS_OK && r->status != ATP_STATUS_EXIT &&
        r->message[0]) {
        out_flush(out);
        fprintf(stderr, "atp-run: %s: %s\n", atp_status_name(r->status),
                r->message);
    }
    if (!out->json && (r->stdout_truncated || r->stderr_truncated)) {
        out_flush(out);
        if (r->stdout_truncated)
            fprintf(stderr, "atp-run: stdout truncated: the command wrote "
                            "%llu bytes, more than [atp] stdout_limit\n",
                    (unsigned long long)r->stdout_bytes);
        if (r->stderr_truncated)
            fprintf(stderr, "atp-run: stderr truncated: the command wrote "
                            "%llu bytes, more than [atp] stderr_limit\n",
                    (unsigned long long)r->stderr_bytes);
    }
}

static const char *signal_name(int sig)
{
    switch (sig) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    case SIGHUP: return "SIGHUP";
    case SIGQUIT: return "SIGQUIT";
    default: return "a signal";
    }
}

/*
 * The exit status when atp-run was stopped from outside: 128+N after
 * signal N (saying so on stderr), 128+SIGPIPE, quietly, when nobody reads
 * its stdout any more; else @status.
 */
static int report_stop(struct out *out, int status)
{
    if (out->broken)
        return 128 + SIGPIPE;
    if (g_signal == 0)
        return status;
    out_flush(out);
    fprintf(stderr, "atp-run: interrupted by %s; the command was stopped "
                    "and the sandbox torn down\n", signal_name(g_signal));
    return 128 + g_signal;
}

/* A failure before any command ran (config, plugin, workdir). */
static int early_failure(struct out *out, int rc, const char *backend)
{
    atp_result r = ATP_RESULT_INIT;

    r.status = atp_status_from_error(rc);
    snprintf(r.message, sizeof(r.message), "%s", atp_last_error());
    emit_result(out, &r, backend, NULL);
    return exit_status(&r);
}

/* libatp's diagnostics, on stderr. */
static void print_log(int level, const char *origin, const char *message,
                      void *payload)
{
    static const char *const names[] = {"error", "warning", "info",
                                        "debug"};

    (void)payload;
    if (strcmp(origin, "plugin-loader") == 0)
        fprintf(stderr, "atp: plugin: %s\n", message);
    else
        fprintf(stderr, "atp: %s: %s: %s\n", origin,
                names[level < 0 ? 0 : level > 3 ? 3 : level], message);
}

static int load_config(const struct opts *o, atp_config **cfg)
{
    int rc = atp_config_load(cfg, o->config);

    if (rc == 0)
        atp_config_set_log(*cfg, print_log, ATP_LOG_WARN, NULL);
    return rc;
}

static int open_all(const struct opts *o, struct out *out, atp_config **cfg,
                    atp_backend **be)
{
    int rc;

    *cfg = NULL;
    *be = NULL;
    rc = load_config(o, cfg);
    if (rc)
        return early_failure(out, rc, o->backend);
    g_cfg = *cfg;
    rc = atp_backend_open(be, *cfg, o->backend);
    if (rc) {
        int status = early_failure(out, rc, o->backend ? o->backend
                                                       : atp_config_backend(*cfg));

        atp_config_free(*cfg);
        *cfg = g_cfg = NULL;
        return status;
    }
    return 0;
}

static void fill_session_opts(const struct opts *o, struct out *out,
                              atp_session_opts *so)
{
    so->workdir = o->workdir;
    so->env = o->env;
    so->mounts = o->mounts;
    so->timeout_s = o->timeout_s;
    so->on_event = out_event;
    so->event_payload = out;
}

static void fill_exec_opts(struct out *out, atp_exec_opts *eo, int stdin_fd)
{
    eo->on_line = out_line;
    eo->line_payload = out;
    eo->on_flush = out_on_flush;
    eo->stdin_fd = stdin_fd;
    if (stdin_fd >= 0)
        eo->flags |= ATP_EXEC_OPT_STDIN;
}

/* ---- one-shot ---------------------------------------------------------- */

static int cmd_run(const struct opts *o, char **argv)
{
    atp_session_opts so = ATP_SESSION_OPTS_INIT;
    atp_exec_opts eo = ATP_EXEC_OPTS_INIT;
    atp_result r = ATP_RESULT_INIT;
    struct out out;
    atp_config *cfg;
    atp_backend *be;
    atp_session *s;
    char *command;
    int rc, status;

    start_output(&out, o->json);
    /* The command is the sandbox's process itself: its exit status, or
     * the signal that ended it, is its own. */
    command = atp_shell_exec_join((const char *const *)argv);
    if (command == NULL) {
        fprintf(stderr, "atp-run: out of memory\n");
        return EXIT_BACKEND;
    }
    status = open_all(o, &out, &cfg, &be);
    if (status) {
        free(command);
        return status;
    }
    fill_session_opts(o, &out, &so);
    rc = atp_session_create(&s, be, &so);
    if (rc) {
        status = early_failure(&out, rc, atp_backend_name(be));
        goto done;
    }
    out.session = s;
    g_session = s;
    if (g_signal)
        atp_session_cancel(s);
    fill_exec_opts(&out, &eo, o->stdin_fwd ? STDIN_FILENO : -1);
    atp_session_run(s, command, &eo, !o->no_pull, &r);
    g_session = NULL;
    emit_result(&out, &r, atp_backend_name(be), atp_session_run_id(s));
    status = report_stop(&out, exit_status(&r));
    atp_session_free(s);
done:
    out_flush(&out);
    atp_backend_free(be);
    atp_config_free(cfg);
    free(command);
    return status;
}

/* ---- session ---------------------------------------------------------- */

static char *read_line(FILE *f)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, f);

    if (n < 0) {
        free(line);
        return NULL;
    }
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    return line;
}

/* Is @cmd the directive @name, maybe followed by blanks? */
static int is_directive(const char *cmd, const char *name)
{
    size_t n = strlen(name);

    if (strncmp(cmd, name, n) != 0)
        return 0;
    for (cmd += n; *cmd == ' ' || *cmd == '\t'; cmd++)
        ;
    return *cmd == '\0';
}

static int blank(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return *s == '\0' || *s == '#';
}

static int cmd_session(const struct opts *o)
{
    atp_session_opts so = ATP_SESSION_OPTS_INIT;
    atp_result r = ATP_RESULT_INIT;
    struct out out;
    atp_config *cfg;
    atp_backend *be;
    atp_session *s;
    int rc, status = 0;
    char *line;

    if (o->stdin_fwd) {
        fprintf(stderr, "atp-run: session reads its commands from stdin, so "
                        "-i cannot forward it\n");
        return EXIT_USAGE;
    }
    start_output(&out, o->json);
    status = open_all(o, &out, &cfg, &be);
    if (status)
        return status;
    fill_session_opts(o, &out, &so);
    rc = atp_session_create(&s, be, &so);
    if (rc) {
        status = early_failure(&out, rc, atp_backend_name(be));
        goto done;
    }
    out.session = s;
    g_session = s;
    if (g_signal)
        atp_session_cancel(s);
    rc = atp_session_start(s, &r);
    if (rc) {
        emit_result(&out, &r, atp_backend_name(be), atp_session_run_id(s));
        status = exit_status(&r);
        goto close;
    }
    while (!g_signal && !out.broken && (line = read_line(stdin)) != NULL) {
        atp_exec_opts eo = ATP_EXEC_OPTS_INIT;
        const char *cmd = line;
        int directive = 0;

        while (*cmd == ' ' || *cmd == '\t')
            cmd++;
        if (blank(cmd)) {
            free(line);
            continue;
        }
        if (is_directive(cmd, ":sync-in")) {
            directive = 1;
            rc = atp_session_sync_in(s, &r);
        } else if (is_directive(cmd, ":sync-out")) {
            directive = 1;
            rc = atp_session_sync_out(s, &r);
        } else if (cmd[0] == ':') {
            /* A result too, so that a reader counting results keeps up. */
            directive = 1;
            rc = ATP_E_CONFIG;
            memset(&r, 0, sizeof(r));
            r.struct_size = sizeof(r);
            r.status = ATP_STATUS_CONFIG_ERROR;
            r.exit_code = -1;
            snprintf(r.message, sizeof(r.message), "unknown session "
                     "directive %.900s; use :sync-in or :sync-out", cmd);
        } else {
            fill_exec_opts(&out, &eo, -1);
            rc = atp_session_exec(s, cmd, &eo, &r);
        }
        free(line);
        emit_result(&out, &r, atp_backend_name(be), atp_session_run_id(s));
        if (!out.json && !directive && r.status != ATP_STATUS_OK) {
            char how[32];

            if (r.signal > 0)
                snprintf(how, sizeof(how), "signal=%d", r.signal);
            else
                snprintf(how, sizeof(how), "exit_code=%d", r.exit_code);
            fprintf(stderr, "atp-run: [%s] %s status=%s (%.3f s)\n",
                    atp_session_run_id(s), how, atp_status_name(r.status),
                    r.duration_s);
        }
        /* A directive that worked leaves the last command's status. */
        if (!directive || r.status != ATP_STATUS_OK)
            status = exit_status(&r);
        if (rc && r.status != ATP_STATUS_CONFIG_ERROR &&
            r.status != ATP_STATUS_UNSUPPORTED)
            break; /* the sandbox is unusable, or we were cancelled */
    }
close:
    rc = atp_session_close(s, &r);
    if (rc) {
        emit_result(&out, &r, atp_backend_name(be), atp_session_run_id(s));
        if (status == 0)
            status = exit_status(&r);
    }
    g_session = NULL;
    atp_session_free(s);
    status = report_stop(&out, status);
done:
    out_flush(&out);
    atp_backend_free(be);
    atp_config_free(cfg);
    return status;
}

/* ---- plugins, check, gc ----------------------------------------------- */

static int cmd_plugins(const struct opts *o)
{
    struct out out;
    atp_config *cfg;
    int rc;

    start_output(&out, o->json);
    rc = load_config(o, &cfg);
    if (rc)
        return early_failure(&out, rc, NULL);
    if (!o->json) {
        out_text(&out, "search path: ");
        out_text(&out, atp_plugin_search_path(cfg));
        out_text(&out, "\n");
    }
    out.count = 0;
    atp_plugins_scan(cfg, out_plugin, &out);
    if (!o->json && out.count == 0)
        out_text(&out, "no plugins found; set ATP_PLUGIN_PATH or [atp] "
                       "plugin_path\n");
    out_flush(&out);
    atp_config_free(cfg);
    return 0;
}

static int cmd_check(const struct opts *o)
{
    atp_result r = ATP_RESULT_INIT;
    struct out out;
    atp_config *cfg;
    atp_backend *be;
    int status;

    start_output(&out, o->json);
    status = open_all(o, &out, &cfg, &be);
    if (status)
        return status;
    atp_backend_check(be, &r);
    out_check(&out, cfg, be, &r);
    status = r.status == ATP_STATUS_OK ? 0 : exit_status(&r);
    out_flush(&out);
    atp_backend_free(be);
    atp_config_free(cfg);
    return status;
}

static int cmd_gc(const struct opts *o)
{
    struct out out;
    atp_config *cfg;
    int rc;

    start_output(&out, o->json);
    rc = load_config(o, &cfg);
    if (rc)
        return early_failure(&out, rc, NULL);
    out.count = 0;
    rc = atp_gc(cfg, o->all, o->dry_run, out_gc, &out);
    if (rc)
        fprintf(stderr, "atp-run: gc: %s\n", atp_last_error());
    else if (!o->json && out.count == 0)
        out_text(&out, "nothing to reap\n");
    out_flush(&out);
    atp_config_free(cfg);
    if (rc) {
        atp_result r = ATP_RESULT_INIT;

        r.status = atp_status_from_error(rc);
        return exit_status(&r);
    }
    return out.failed ? EXIT_BACKEND : 0;
}

static int is_subcommand(const char *word)
{
    return strcmp(word, "session") == 0 || strcmp(word, "plugins") == 0 ||
           strcmp(word, "check") == 0 || strcmp(word, "gc") == 0;
}

int main(int argc, char **argv)
{
    struct opts o;
    const char *sub = NULL;
    int first, status;

    memset(&o, 0, sizeof(o));
    install_signals();
    /* Seconds in --json as 0.008397653, not 0.0083976529999999997. */
    json_c_set_serialization_double_format("%.9g", JSON_C_OPTION_GLOBAL);
    if (argc > 1 && strcmp(argv[1], "batch") == 0)
        return cli_batch(argc - 1, argv + 1);
    if (argc > 1 && is_subcommand(argv[1])) {
        sub = argv[1];
        argv++;
        argc--;
        first = parse_opts(argc, argv, &o, strcmp(sub, "gc") == 0);
    } else {
        first = parse_opts(argc, argv, &o, 0);
        /* Options may come first: atp-run -c FILE gc.  After "--" the
         * word is a command to run: atp-run -- gc. */
        if (first > 0 && first < argc && is_subcommand(argv[first]) &&
            strcmp(argv[first - 1], "--") != 0) {
            sub = argv[first];
            argv += first;
            argc -= first;
            first = parse_opts(argc, argv, &o, strcmp(sub, "gc") == 0);
        }
    }
    if (first < 0)
        return EXIT_USAGE;
    if (sub && first < argc) {
        fprintf(stderr, "atp-run %s: unexpected argument '%s'\n", sub,
                argv[first]);
        return EXIT_USAGE;
    }
    if (sub == NULL && first >= argc) {
        fprintf(stderr, "atp-run: no command given\n\n");
        usage(stderr);
        return EXIT_USAGE;
    }
    if (sub == NULL)
        status = cmd_run(&o, argv + first);
    else if (strcmp(sub, "session") == 0)
        status = cmd_session(&o);
    else if (strcmp(sub, "plugins") == 0)
        status = cmd_plugins(&o);
    else if (strcmp(sub, "check") == 0)
        status = cmd_check(&o);
    else
        status = cmd_gc(&o);
    while (o.n_owned > 0)
        free((char *)o.owned[--o.n_owned]);
    free(o.owned);
    free(o.mounts);
    free(o.env);
    return status;
}
