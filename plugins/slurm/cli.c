/*
 * plugins/slurm/cli.c - the jobs API through the Slurm commands, for
 * sites that run no slurmrestd: sbatch --parsable to submit, squeue for
 * the state (with the raw exit status: -O exit_code), sacct for a job
 * the controller has purged, scancel to signal and cancel.  Every command
 * runs through the core's process runner (host->spawn()), its output
 * captured, within api_timeout_s.
 *
 * A job's environment travels in sbatch's own environment (--export=ALL),
 * which is the job's and nothing else: never on its command line.
 */
#define _GNU_SOURCE
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sl.h"

#define OUT_MAX (64 * 1024 * 1024) /* squeue of a big cluster */
#define ERR_MAX 8192

void sl_capture_free(struct sl_capture *cap)
{
    free(cap->out);
    free(cap->err);
    memset(cap, 0, sizeof(*cap));
}

static int append(char **buf, size_t *len, size_t max, const void *p,
                  size_t n)
{
    char *grown;

    if (*len + n > max)
        n = max > *len ? max - *len : 0;
    if (n == 0)
        return 0;
    grown = realloc(*buf, *len + n + 1);
    if (grown == NULL)
        return -1;
    memcpy(grown + *len, p, n);
    *len += n;
    grown[*len] = '\0';
    *buf = grown;
    return 0;
}

static int on_output(void *ctx, int stream, const void *buf, size_t len)
{
    struct sl_capture *cap = ctx;

    if (stream == ATP_STDOUT)
        return append(&cap->out, &cap->out_len, OUT_MAX, buf, len);
    return append(&cap->err, &cap->err_len, ERR_MAX, buf, len);
}

/* The environment of the Slurm commands: the host's, SLURM_* included. */
static const char *const no_env[] = {NULL};

int sl_cli_run(struct sl_conn *c, atp_call *call, const char *const *argv,
               const char *const *envp, int cleanup, struct sl_capture *cap,
               int *code)
{
    atp_spawn_spec sp;
    atp_exec_outcome out;
    int rc;

    memset(cap, 0, sizeof(*cap));
    memset(&sp, 0, sizeof(sp));
    memset(&out, 0, sizeof(out));
    sp.struct_size = sizeof(sp);
    sp.flags = (envp ? 0 : ATP_SPAWN_HOST_ENV) |
               (cleanup ? ATP_SPAWN_CLEANUP : 0);
    sp.argv = argv;
    sp.envp = envp ? envp : no_env;
    sp.cwd = "/";
    sp.timeout_ms = c->be->api_timeout_ms;
    sp.on_output = on_output;
    sp.ctx = cap;
    out.struct_size = sizeof(out);
    rc = sl_host->spawn(call, &sp, &out);
    if (rc)
        return rc;
    if (out.flags & ATP_OUTCOME_TIMED_OUT)
        return sl_host->set_error(call, ATP_E_TIMEOUT, "%s did not finish "
                                  "within %lld s (api_timeout_s)", argv[0],
                                  (long long)(c->be->api_timeout_ms / 1000));
    if (out.flags & ATP_OUTCOME_CANCELLED)
        return sl_host->set_error(call, ATP_E_CANCELLED, "cancelled");
    *code = out.signal ? -1 : out.exit_code;
    sl_host->log(call, ATP_LOG_DEBUG, "%s %s -> %d", argv[0],
                 argv[1] ? argv[1] : "", *code);
    return 0;
}

/* The last line a command wrote on stderr, for a message. */
static const char *last_line(struct sl_capture *cap)
{
    char *p;

    if (cap->err == NULL || cap->err_len == 0)
        return "(no message)";
    while (cap->err_len > 0 && (cap->err[cap->err_len - 1] == '\n' ||
                                cap->err[cap->err_len - 1] == '\r'))
        cap->err[--cap->err_len] = '\0';
    p = strrchr(cap->err, '\n');
    return p ? p + 1 : cap->err;
}

/* scancel refused: an unknown id is ATP_E_NOTFOUND, the rest a backend
 * error; @what names the job or task it was asked to cancel. */
static int scancel_failed(atp_call *call, struct sl_capture *cap,
                          const char *what)
{
    const char *line = last_line(cap);

    return sl_host->set_error(call, strstr(line, "Invalid job id")
                                        ? ATP_E_NOTFOUND
                                        : ATP_E_BACKEND,
                              "scancel could not cancel %s: %s", what, line);
}

int sl_cli_ping(struct sl_conn *c, atp_call *call)
{
    static const char *const tools[] = {"sbatch", "squeue", "scancel",
                                        "srun", "scontrol", NULL};
    const char *argv[] = {"scontrol", "ping", NULL};
    struct sl_capture cap;
    size_t i;
    int rc, code = 0;

    for (i = 0; tools[i]; i++)
        if (!sl_have_command(tools[i]))
            return sl_host->set_error(call, ATP_E_BACKEND, "%s is not in "
                                      "PATH: mode = cli needs the Slurm "
                                      "commands (or use mode = rest with a "
                                      "url)", tools[i]);
    if ((rc = sl_cli_run(c, call, argv, NULL, 0, &cap, &code)) != 0)
        return rc;
    if (code != 0 || cap.out == NULL || strstr(cap.out, "is UP") == NULL)
        rc = sl_host->set_error(call, ATP_E_BACKEND, "slurmctld does not "
                                "answer (scontrol ping: %s)",
                                cap.out && code == 0 ? cap.out
                                                     : last_line(&cap));
    sl_capture_free(&cap);
    return rc;
}

/* Write the script where sbatch reads it (on the shared filesystem). */
static int write_script(atp_call *call, const char *path, const char *text)
{
    size_t len = strlen(text), off = 0;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0700);

    if (fd < 0)
        return sl_host->set_error(call, ATP_E_PROVISION, "cannot write the "
                                  "job script %s: %s", path,
                                  strerror(errno));
    while (off < len) {
        ssize_t n = write(fd, text + off, len - off);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int e = errno;

            close(fd);
            return sl_host->set_error(call, ATP_E_PROVISION, "cannot write "
                                      "the job script %s: %s", path,
                                      strerror(e));
        }
        off += (size_t)n;
    }
    close(fd);
    return 0;
}

/* "--KEY=VALUE" into @b, as one argument. */
static char *opt(const char *key, const char *value)
{
    struct sl_buf b = {0};

    if (sl_buf_fmt(&b, "--%s=%s", key, value) != 0) {
        sl_buf_free(&b);
        return NULL;
    }
    return b.s;
}

int sl_cli_submit(struct sl_conn *c, atp_call *call,
                  const struct sl_jobspec *js, long *id)
{
    struct sl_backend *be = c->be;
    const char *extra[3] = {NULL, NULL, NULL};
    const char **env = NULL;
    char *args[16], tl[32], conf[4200];
    const char *argv[24];
    struct sl_capture cap = {0};
    size_t n = 0, a = 0, i;
    int rc, code = 0;

    *id = 0;
    if ((rc = write_script(call, js->script_path, js->script)) != 0)
        return rc;
    snprintf(tl, sizeof(tl), "%ld", js->time_limit_min);
    memset(args, 0, sizeof(args));
    args[a++] = opt("job-name", js->name);
    args[a++] = opt("comment", js->comment);
    args[a++] = opt("chdir", js->workdir);
    args[a++] = opt("output", js->out_path);
    args[a++] = opt("error", js->err_path);
    args[a++] = opt("input", js->in_path ? js->in_path : "/dev/null");
    args[a++] = opt("time", tl);
    if (be->partition)
        args[a++] = opt("partition", be->partition);
    if (be->account)
        args[a++] = opt("account", be->account);
    if (be->qos)
        args[a++] = opt("qos", be->qos);
    if (js->array)
        args[a++] = opt("array", js->array);
    if (js->dependency)
        args[a++] = opt("dependency", js->dependency);
    for (i = 0; i < a; i++)
        if (args[i] == NULL) {
            rc = sl_host->set_error(call, ATP_E_NOMEM, "out of memory");
            goto out;
        }
    argv[n++] = "sbatch";
    argv[n++] = "--parsable";
    argv[n++] = "--no-requeue";
    argv[n++] = "--export=ALL"; /* sbatch's environment is the job's */
    for (i = 0; i < a; i++)
        argv[n++] = args[i];
    argv[n++] = js->script_path;
    argv[n] = NULL;
    if (be->slurm_conf) {
        snprintf(conf, sizeof(conf), "SLURM_CONF=%s", be->slurm_conf);
        extra[0] = conf;
    }
    env = sl_job_env(0, js->env, extra);
    if (env == NULL) {
        rc = sl_host->set_error(call, ATP_E_NOMEM, "out of memory");
        goto out;
    }
    if ((rc = sl_cli_run(c, call, argv, env, 0, &cap, &code)) != 0)
        goto out; /* it may have been made: the caller sweeps */
    if (code == 0 && cap.out)
        *id = strtol(cap.out, NULL, 10); /* "ID" or "ID;CLUSTER" */
    if (*id <= 0)
        rc = sl_host->set_error(call, code == 0 ? ATP_E_BACKEND
                                                : ATP_E_PROVISION,
                                "sbatch could not submit the job (exit %d): "
                                "%s", code, last_line(&cap));
out:
    sl_capture_free(&cap);
    free(env);
    for (i = 0; i < a; i++)
        free(args[i]);
    return rc;
}

/* The next '|'-separated field of *@p, NUL-terminated in place. */
static char *field(char **p)
{
    char *f = *p, *bar;

    if (f == NULL)
        return NULL;
    bar = strchr(f, '|');
    if (bar) {
        *bar = '\0';
        *p = bar + 1;
    } else {
        f[strcspn(f, "\n")] = '\0';
        *p = NULL;
    }
    return f;
}

static void set_text(char *dst, size_t cap, const char *src)
{
    if (src == NULL || strcmp(src, "(null)") == 0 || strcmp(src, "n/a") == 0)
        src = "";
    snprintf(dst, cap, "%s", src);
}

/* State words of squeue and sacct: COMPLETING, "CANCELLED by 0". */
static void set_state(struct sl_jobinfo *ji, const char *word)
{
    char s[sizeof(ji->state)];

    set_text(s, sizeof(s), word);
    s[strcspn(s, " +")] = '\0';
    if (strcmp(s, "COMPLETING") == 0) {
        ji->completing = 1;
        set_text(ji->state, sizeof(ji->state), "RUNNING");
    } else {
        set_text(ji->state, sizeof(ji->state), s);
    }
}

/*
 * Is @f, the JobID squeue (-O JobID) or sacct (JobIDRaw) print, job @id?
 * Exactly: `-j ID` of an array's own id lists every task of the array,
 * and the task that kept that id (the last one to start) is just one
 * line among them, in no particular order.
 */
static int same_job(const char *f, long id)
{
    char *end;
    long v = strtol(f, &end, 10);

    return v == id && *end == '\0';
}

/* The line of @out whose first field is job @id, NUL-terminated in
 * place, or NULL. */
static char *job_line(char *out, long id)
{
    char *line = out;

    while (line && *line) {
        char *nl = strchr(line, '\n');
        char *bar = strchr(line, '|');
        char *end;

        if (bar && (nl == NULL || bar < nl) &&
            strtol(line, &end, 10) == id && end == bar) {
            if (nl)
                *nl = '\0';
            return line;
        }
        line = nl ? nl + 1 : NULL;
    }
    return NULL;
}

/* The job in sacct (its record outlives MinJobAge), when there is one. */
static int from_sacct(struct sl_conn *c, atp_call *call, long id,
                      struct sl_jobinfo *ji, int cleanup)
{
    char jid[32];
    const char *argv[] = {"sacct", "-n", "-X", "-P", "-j", jid, "-o",
                          "JobIDRaw,State,ExitCode,NodeList,Comment", NULL};
    struct sl_capture cap;
    char *p, *f;
    int rc, code = 0;

    snprintf(jid, sizeof(jid), "%ld", id);
    if ((rc = sl_cli_run(c, call, argv, NULL, cleanup, &cap, &code)) != 0)
        return rc;
    if (code == 0 && cap.out && (p = job_line(cap.out, id)) != NULL &&
        (f = field(&p)) != NULL && same_job(f, id)) {
        char *state = field(&p), *ec = field(&p), *node = field(&p);
        int ex = 0, sig = 0;

        set_state(ji, state);
        /* ExitCode is "EXIT:SIGNAL", already decoded */
        if (ec && sscanf(ec, "%d:%d", &ex, &sig) == 2) {
            ji->has_exit = 1;
            ji->exit_code = sig ? -1 : ex;
            ji->signal = sig;
        }
        set_text(ji->node, sizeof(ji->node), node);
        set_text(ji->comment, sizeof(ji->comment), p);
        ji->gone = ji->state[0] == '\0';
    }
    sl_capture_free(&cap);
    return 0;
}

int sl_cli_query(struct sl_conn *c, atp_call *call, long id,
                 struct sl_jobinfo *ji, int cleanup)
{
    char jid[32];
    const char *argv[] = {"squeue", "-h", "-t", "all", "-j", jid, "-O",
                          "JobID:|,State:|,Reason:|,exit_code:|,"
                          "BatchHost:|,Comment:|",
                          NULL};
    struct sl_capture cap;
    char *p, *f;
    int rc, code = 0;

    memset(ji, 0, sizeof(*ji));
    ji->id = id;
    ji->exit_code = -1;
    snprintf(jid, sizeof(jid), "%ld", id);
    if ((rc = sl_cli_run(c, call, argv, NULL, cleanup, &cap, &code)) != 0)
        return rc;
    p = code == 0 && cap.out ? job_line(cap.out, id) : NULL;
    if (p && (f = field(&p)) != NULL && same_job(f, id)) {
        char *state = field(&p), *reason = field(&p), *ec = field(&p);
        char *node = field(&p), *comment = field(&p);

        set_state(ji, state);
        set_text(ji->reason, sizeof(ji->reason), reason);
        set_text(ji->node, sizeof(ji->node), node);
        set_text(ji->comment, sizeof(ji->comment), comment);
        /* the raw wait status; meaningful once the job has ended */
        if (ec && *ec >= '0' && *ec <= '9' && sl_state_final(ji->state))
            sl_decode_status(ji, strtol(ec, NULL, 10));
    } else if (cap.err && strstr(cap.err, "Invalid job id")) {
        ji->gone = 1;
    } else {
        rc = sl_host->set_error(call, ATP_E_BACKEND, "squeue could not "
                                "report job %ld (exit %d): %s", id, code,
                                last_line(&cap));
    }
    sl_capture_free(&cap);
    if (rc == 0 && ji->gone)
        rc = from_sacct(c, call, id, ji, cleanup);
    return rc;
}

int sl_cli_kill(struct sl_conn *c, atp_call *call, long id, int sig,
                int cleanup)
{
    char jid[32];
    /* --full: the batch shell too, which a bare --signal spares. */
    const char *term[] = {"scancel", "--full", "--signal=TERM", jid, NULL};
    /* --batch: SIGKILL to the batch step now (a pending job is
     * cancelled); a cancel of the whole job would send TERM first and
     * KILL only KillWait seconds later. */
    const char *kill9[] = {"scancel", "--batch", "--signal=KILL", jid, NULL};
    const char *cancel[] = {"scancel", jid, NULL};
    struct sl_capture cap;
    int rc, code = 0;

    snprintf(jid, sizeof(jid), "%ld", id);
    rc = sl_cli_run(c, call, sig == 15 ? term : kill9, NULL, cleanup, &cap,
                    &code);
    if (rc)
        return rc;
    if (code != 0 && sig == 15) {
        rc = sl_host->set_error(call, ATP_E_NOTFOUND, "scancel could not "
                                "signal job %ld: %s", id, last_line(&cap));
    } else if (code != 0) {
        /* No batch step to signal: cancel the job itself. */
        sl_capture_free(&cap);
        if ((rc = sl_cli_run(c, call, cancel, NULL, cleanup, &cap,
                             &code)) != 0)
            return rc;
        if (code != 0) {
            char what[48];

            snprintf(what, sizeof(what), "job %ld", id);
            rc = scancel_failed(call, &cap, what);
        }
    }
    sl_capture_free(&cap);
    return rc;
}

int sl_cli_list(struct sl_conn *c, atp_call *call, struct sl_jobinfo **jobs,
                size_t *n, int cleanup)
{
    /* squeue can filter by user, unlike GET /jobs: this user's jobs. */
    const char *argv[] = {"squeue", "-h", "-t", "all", "--me", "-o",
                          "%i|%T|%k", NULL};
    struct sl_capture cap;
    size_t lines = 0, i;
    char *p, *line;
    int rc, code = 0;

    *jobs = NULL;
    *n = 0;
    if ((rc = sl_cli_run(c, call, argv, NULL, cleanup, &cap, &code)) != 0)
        return rc;
    if (code != 0) {
        rc = sl_host->set_error(call, ATP_E_BACKEND, "squeue could not list "
                                "the jobs (exit %d): %s", code,
                                last_line(&cap));
        sl_capture_free(&cap);
        return rc;
    }
    for (p = cap.out; p && *p; p++)
        lines += *p == '\n';
    *jobs = calloc(lines + 1, sizeof(**jobs));
    if (*jobs == NULL) {
        sl_capture_free(&cap);
        return sl_host->set_error(call, ATP_E_NOMEM, "out of memory");
    }
    for (line = cap.out, i = 0; line && *line && i <= lines; i++) {
        char *nl = strchr(line, '\n'), *q = line;

        if (nl)
            *nl = '\0';
        (*jobs)[*n].id = strtol(field(&q), NULL, 10);
        set_state(&(*jobs)[*n], field(&q));
        set_text((*jobs)[*n].comment, sizeof((*jobs)[*n].comment), q);
        if ((*jobs)[*n].id > 0)
            (*n)++;
        line = nl ? nl + 1 : NULL;
    }
    sl_capture_free(&cap);
    return 0;
}

int sl_cli_kill_task(struct sl_conn *c, atp_call *call, const char *task,
                     int cleanup)
{
    const char *argv[] = {"scancel", task, NULL};
    struct sl_capture cap;
    int rc, code = 0;

    if ((rc = sl_cli_run(c, call, argv, NULL, cleanup, &cap, &code)) != 0)
        return rc;
    if (code != 0) {
        char what[96];

        snprintf(what, sizeof(what), "task %s", task);
        rc = scancel_failed(call, &cap, what);
    }
    sl_capture_free(&cap);
    return rc;
}
