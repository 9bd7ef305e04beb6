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
 *
 * The subcommands and options are one table, cli/commands.def, which also
 * gives --help (cli/usage.h, generated) and the atp-run(1) page.
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
#include "usage.h"

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
    struct cli_batch_args batch; /* batch's own options */
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

/* --help of the one-shot run ("run": every subcommand and option) or of
 * subcommand @name: generated from cli/commands.def by build-aux/managen. */
static void usage(FILE *f, const char *name)
{
    size_t i;

    for (i = 0; i < sizeof(atp_run_usages) / sizeof(atp_run_usages[0]); i++)
        if (strcmp(atp_run_usages[i].name, name) == 0)
            fputs(atp_run_usages[i].text, f);
    if (strcmp(name, "run") != 0)
        fputs("\n", f);
    if (strcmp(name, "batch") == 0) {
        cli_batch_notes(f);
        fputs("\n", f);
    }
    if (strcmp(name, "run") != 0)
        fputs("see atp-run --help and atp-run(1)\n", f);
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

/* ---- the table: options and subcommands ----------------------------- */

/* Option ids, in the order of cli/commands.def. */
enum {
#define ATP_RUN_OPTION(id, name, letter, arg, scope, help) OPT_##id,
#define ATP_RUN_COMMAND(name, operands, options, help)
#include "commands.def"
#undef ATP_RUN_OPTION
#undef ATP_RUN_COMMAND
    OPT__COUNT
};

#define O(id) (1u << OPT_##id)
#define ANY 1
#define OWN 0

struct option_def {
    const char *name;
    int letter;      /* 0: long only */
    int has_arg;
    int any;         /* ANY: accepted by every subcommand */
};

static const struct option_def option_defs[OPT__COUNT] = {
#define ATP_RUN_OPTION(id, name, letter, arg, scope, help)                  \
    {name, letter, arg != NULL, scope},
#define ATP_RUN_COMMAND(name, operands, options, help)
#include "commands.def"
#undef ATP_RUN_OPTION
#undef ATP_RUN_COMMAND
};

struct command {
    const char *name;
    int operands;    /* takes COMMAND ARG... */
    unsigned options; /* O(...) set it uses */
    int (*handler)(const struct opts *o, char **argv);
    const char *help;
};

static int cmd_run(const struct opts *o, char **argv);
static int cmd_session(const struct opts *o, char **argv);
static int cmd_plugins(const struct opts *o, char **argv);
static int cmd_check(const struct opts *o, char **argv);
static int cmd_gc(const struct opts *o, char **argv);
static int cmd_batch(const struct opts *o, char **argv);

static const struct command commands[] = {
#define ATP_RUN_OPTION(id, name, letter, arg, scope, help)
#define ATP_RUN_COMMAND(name, operands, options, help)                      \
    {#name, operands[0] != '\0', options, cmd_##name, help},
#include "commands.def"
#undef ATP_RUN_OPTION
#undef ATP_RUN_COMMAND
};

/* The one-shot run: the entry named "run". */
static const struct command *run_command(void)
{
    size_t i;

    for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(commands[i].name, "run") == 0)
            return &commands[i];
    abort(); /* cli/commands.def has no run */
}

/* The subcommand named @word (never the one-shot run), or NULL. */
static const struct command *find_command(const char *word)
{
    size_t i;

    for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(commands[i].name, "run") != 0 &&
            strcmp(commands[i].name, word) == 0)
            return &commands[i];
    return NULL;
}

/* The first subcommand that takes option @id, for messages. */
static const char *owner_of(int id)
{
    size_t i;

    for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (commands[i].options & (1u << id))
            return commands[i].name;
    return "?";
}

/* Is option @id taken by @cmd?  batch takes only its own set: each
 * attempt names its workdir, and its output is JSON already. */
static int takes(const struct command *cmd, int id)
{
    if (strcmp(cmd->name, "batch") == 0)
        return (cmd->options & (1u << id)) != 0 || id == OPT_HELP ||
               id == OPT_VERSION;
    return option_defs[id].any || (cmd->options & (1u << id));
}

/*
 * Parse the options of @cmd; returns the index of the first operand, or
 * -1 after a message.
 */
static int parse_opts(int argc, char **argv, struct opts *o,
                      const struct command *cmd)
{
    struct option longs[OPT__COUNT + 1];
    char shorts[2 * OPT__COUNT + 4];
    size_t ns = 0;
    int c, i;

    /* "+": stop at the first operand; ":": a missing value is ':'. */
    shorts[ns++] = '+';
    shorts[ns++] = ':';
    for (i = 0; i < OPT__COUNT; i++) {
        const struct option_def *d = &option_defs[i];

        longs[i].name = d->name;
        longs[i].has_arg = d->has_arg ? required_argument : no_argument;
        longs[i].flag = NULL;
        longs[i].val = d->letter ? d->letter : 256 + i;
        if (d->letter) {
            shorts[ns++] = (char)d->letter;
            if (d->has_arg)
                shorts[ns++] = ':';
        }
    }
    memset(&longs[OPT__COUNT], 0, sizeof(longs[OPT__COUNT]));
    shorts[ns] = '\0';

    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, shorts, longs, NULL)) != -1) {
        int id = -1;

        for (i = 0; i < OPT__COUNT && c != ':' && c != '?'; i++)
            if (longs[i].val == c)
                id = i;
        if (id >= 0 && !takes(cmd, id)) {
            if (option_defs[id].any)
                fprintf(stderr, "atp-run %s: --%s is not one of its options; "
                                "see atp-run %s --help\n",
                        cmd->name, option_defs[id].name, cmd->name);
            else
                fprintf(stderr, "atp-run: --%s is an option of `atp-run %s`\n",
                        option_defs[id].name, owner_of(id));
            return -1;
        }
        if (id >= 0 && option_defs[id].has_arg && optarg[0] == '\0' &&
            (id == OPT_CONFIG || id == OPT_BACKEND || id == OPT_WORKDIR)) {
            fprintf(stderr, "atp-run: option -%c needs a non-empty value\n",
                    c);
            return -1;
        }
        switch (id) {
        case OPT_CONFIG: o->config = optarg; break;
        case OPT_BACKEND: o->backend = optarg; break;
        case OPT_WORKDIR: o->workdir = optarg; break;
        case OPT_ENV:
            if (add_env(o, optarg))
                return -1;
            break;
        case OPT_MOUNT:
            if (add_str(&o->mounts, &o->n_mounts, optarg))
                return -1;
            break;
        case OPT_TIMEOUT:
            if (cli_seconds_arg("-t", optarg, &o->timeout_s))
                return -1;
            break;
        case OPT_STDIN: o->stdin_fwd = 1; break;
        case OPT_NO_PULL: o->no_pull = 1; break;
        case OPT_JSON: o->json = 1; break;
        case OPT_ALL: o->all = 1; break;
        case OPT_DRY_RUN: o->dry_run = 1; break;
        case OPT_JOBS:
            if (cli_batch_jobs(optarg, &o->batch.jobs))
                return -1;
            break;
        case OPT_RATE:
            if (cli_batch_rate(optarg, &o->batch.rate))
                return -1;
            break;
        case OPT_RETRIES:
            if (cli_batch_retries(optarg, &o->batch.retries))
                return -1;
            break;
        case OPT_INLINE:
            if (cli_batch_inline(optarg, &o->batch.inline_limit))
                return -1;
            break;
        case OPT_OUT: o->batch.out_dir = optarg; break;
        case OPT_OUTPUT: o->batch.output = optarg; break;
        case OPT_RESUME: o->batch.resume = optarg; break;
        case OPT_PROGRESS: o->batch.progress = 1; break;
        case OPT_NO_PROGRESS: o->batch.progress = 0; break;
        case OPT_HELP:
            usage(stdout, cmd->name);
            exit(0);
        case OPT_VERSION:
            printf("atp-run %s (libatp %s, plugin ABI %d.%d)\n",
                   PACKAGE_VERSION, atp_version(), ATP_PLUGIN_ABI_MAJOR,
                   ATP_PLUGIN_ABI_MINOR);
            exit(0);
        default:
            if (c == ':') {
                fprintf(stderr, "atp-run: option %s needs a value\n",
                        argv[optind - 1]);
                return -1;
            }
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
    if (!out->json && (r->stdout_truncated || r->stderr_truncated) &&
        r->message[0] &&
        (r->status == ATP_STATUS_OK || r->status == ATP_STATUS_EXIT)) {
        /* Not a limit: the backend stopped waiting for the output. */
        out_flush(out);
        fprintf(stderr, "atp-run: %s\n", r->message);
    } else if (!out->json && (r->stdout_truncated || r->stderr_truncated)) {
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

static int cmd_session(const struct opts *o, char **argv)
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

static int cmd_plugins(const struct opts *o, char **argv)
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

static int cmd_check(const struct opts *o, char **argv)
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

static int cmd_gc(const struct opts *o, char **argv)
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

/* atp-run batch: cli/batch.c, with the options and -e strings parsed
 * here, through the table. */
static int cmd_batch(const struct opts *o, char **argv)
{
    struct cli_batch_args a = o->batch;

    a.config = o->config;
    a.backend = o->backend;
    a.timeout_s = o->timeout_s;
    a.env = o->env;
    a.n_env = o->n_env;
    return cli_batch(&a, argv);
}

int main(int argc, char **argv)
{
    const struct command *cmd = run_command(), *sub = NULL;
    struct opts o;
    int first, status;

    memset(&o, 0, sizeof(o));
    o.batch.inline_limit = -1;
    o.batch.progress = -1;
    install_signals();
    /* Seconds in --json as 0.008397653, not 0.0083976529999999997. */
    json_c_set_serialization_double_format("%.9g", JSON_C_OPTION_GLOBAL);
    if (argc > 1 && (sub = find_command(argv[1])) != NULL) {
        argv++;
        argc--;
        first = parse_opts(argc, argv, &o, sub);
    } else {
        first = parse_opts(argc, argv, &o, cmd);
        /* Options may come first: atp-run -c FILE gc.  After "--" the
         * word is a command to run: atp-run -- gc. */
        if (first > 0 && first < argc &&
            (sub = find_command(argv[first])) != NULL &&
            strcmp(argv[first - 1], "--") != 0) {
            argv += first;
            argc -= first;
            first = parse_opts(argc, argv, &o, sub);
        } else {
            sub = NULL;
        }
    }
    if (first < 0)
        return EXIT_USAGE;
    if (sub)
        cmd = sub;
    if (!cmd->operands && first < argc) {
        fprintf(stderr, "atp-run %s: unexpected argument '%s'\n", cmd->name,
                argv[first]);
        return EXIT_USAGE;
    }
    if (cmd == run_command() && first >= argc) {
        fprintf(stderr, "atp-run: no command given\n\n");
        usage(stderr, "run");
        return EXIT_USAGE;
    }
    status = cmd->handler(&o, argv + first);
    while (o.n_owned > 0)
        free((char *)o.owned[--o.n_owned]);
    free(o.owned);
    free(o.mounts);
    free(o.env);
    return status;
}
