/*
 * plugins/slurm/slurm.c - the slurm backend: options, backends, sessions
 * (a run directory on the shared filesystem, and an allocation when
 * commands are steps), the workdir in copy mode, teardown and gc.
 *
 * Commands run on a Slurm cluster through slurmrestd (mode = rest) or
 * the Slurm commands (mode = cli).  Slurm copies nothing and has no
 * output API: the workdir and the output files live on a filesystem the
 * compute nodes share with this host (shared_dir).  In workdir_mode =
 * shared the workdir itself must lie there, and commands run in it in
 * place; in copy mode each session works in a copy under the run
 * directory, which the core pushes and pulls (incrementally) like any
 * isolated sandbox's.
 *
 * A one-shot command in place is one batch job (job.c).  A session holds
 * one allocation and runs each command as a step in it (step.c), or,
 * without srun on this host, one job per command.
 *
 * Leaks: every job carries the comment "atp:run=RUN;exec=ID;pid=PID" and
 * is a lease in the core's ledger from the moment its id is known, and so
 * is the run directory; reap() cancels a run's jobs that are still in the
 * queue or running, after checking their comment, and removes the run
 * directory.  The job's time limit is the backstop when atp cannot.
 */
#define _GNU_SOURCE
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sl.h"

const atp_host_api *sl_host;

#define DEFAULT_URL "unix:///run/slurmrestd.sock"

static const atp_option options[] = {
    {"mode", ATP_OPT_CHOICE, "auto", "auto|rest|cli",
     "rest: slurmrestd at url; cli: sbatch, squeue, scancel, srun on this "
     "host; auto: rest when url is set, else cli"},
    {"url", ATP_OPT_STRING, NULL, NULL,
     "slurmrestd: unix:///PATH, /PATH or http(s)://HOST:PORT (default "
     DEFAULT_URL ")"},
    {"auth", ATP_OPT_CHOICE, "auto", "auto|local|jwt",
     "local: the unix socket's peer credentials; jwt: a token (auto: jwt "
     "over http, local over a socket)"},
    {"jwt_file", ATP_OPT_STRING, NULL, NULL,
     "file holding the token (default: $SLURM_JWT)"},
    {"user", ATP_OPT_STRING, NULL, NULL,
     "X-SLURM-USER-NAME (default: the token's user, else yours)"},
    {"api_version", ATP_OPT_STRING, NULL, NULL,
     "REST version, e.g. v0.0.38 or v0.0.41 (default: probed)"},
    {"partition", ATP_OPT_STRING, NULL, NULL,
     "partition of every job (default: the cluster's)"},
    {"account", ATP_OPT_STRING, NULL, NULL,
     "account jobs are charged to"},
    {"qos", ATP_OPT_STRING, NULL, NULL, "quality of service of every job"},
    {"time_limit", ATP_OPT_DURATION, NULL, NULL,
     "Slurm's limit of each job, in whole minutes (default: the budget "
     "plus the grace plus a minute; a session's: its TTL)"},
    {"shared_dir", ATP_OPT_STRING, NULL, NULL,
     "a directory this host and the compute nodes share: output files, "
     "copies, and (shared mode) the workdirs live under it"},
    {"workdir_mode", ATP_OPT_CHOICE, "shared", "shared|copy",
     "shared: commands run in the workdir, which must be under shared_dir; "
     "copy: in a copy under shared_dir, pushed and pulled"},
    {"session", ATP_OPT_CHOICE, "auto", "auto|steps|jobs",
     "a session: one allocation and a step per command (steps, needs srun "
     "here) or one job per command (auto: steps when srun is found)"},
    {"inherit_env", ATP_OPT_BOOL, NULL, NULL,
     "jobs get this host's environment under the configured one (default: "
     "true in cli mode, as sbatch does; false in rest mode)"},
    {"line_buffered", ATP_OPT_BOOL, "true", NULL,
     "run commands under stdbuf -oL -eL (when the node has it), so that "
     "their lines reach the output files as they are written"},
    {"poll_interval_s", ATP_OPT_DURATION, "1", NULL,
     "longest pause between two looks at a job's state"},
    {"api_timeout_s", ATP_OPT_DURATION, "30", NULL,
     "longest wait for slurmrestd or a Slurm command to answer"},
    {"queue_timeout", ATP_OPT_DURATION, "1h", NULL,
     "longest wait of a job in Slurm's queue before its command begins "
     "(then it is cancelled: infra_timeout); not part of the budget"},
    {NULL, 0, NULL, NULL, NULL},
};

/* ---- backends ------------------------------------------------------------ */

static int dup_opt(atp_call *call, const char *key, char **out)
{
    const char *v = sl_host->config_string(call, key);

    *out = NULL;
    if (v == NULL || v[0] == '\0')
        return 0;
    *out = strdup(v);
    return *out ? 0 : sl_host->set_error(call, ATP_E_NOMEM, "out of memory");
}

static void backend_free(void *backend)
{
    struct sl_backend *b = backend;

    if (b == NULL)
        return;
    sl_conn_free(b->ctl);
    sl_token_free(&b->token);
    pthread_mutex_destroy(&b->lock);
    pthread_mutex_destroy(&b->ctl_lock);
    free(b->unix_path);
    free(b->base_url);
    free(b->display);
    free(b->jwt_file);
    free(b->user);
    free(b->pinned);
    free(b->partition);
    free(b->account);
    free(b->qos);
    free(b->shared_dir);
    free(b->slurm_conf);
    free(b);
}

/* url: "unix:///PATH", "/PATH", "http://HOST:PORT", "https://..." */
static int parse_url(atp_call *call, struct sl_backend *b, const char *url)
{
    size_t len;

    b->display = strdup(url);
    if (strncmp(url, "unix://", 7) == 0 || url[0] == '/') {
        const char *path = url[0] == '/' ? url : url + 7;

        if (path[0] != '/')
            return sl_host->set_error(call, ATP_E_CONFIG, "url = %s: the "
                                      "socket path must be absolute, as in "
                                      DEFAULT_URL, url);
        if (strlen(path) >= 108)
            return sl_host->set_error(call, ATP_E_CONFIG, "url = %s: unix "
                                      "socket paths are limited to 107 "
                                      "bytes", url);
        b->unix_path = strdup(path);
        b->base_url = strdup("http://localhost");
    } else if (strncmp(url, "http://", 7) == 0 ||
               strncmp(url, "https://", 8) == 0) {
        b->base_url = strdup(url);
        if (b->base_url) {
            len = strlen(b->base_url);
            while (len > 8 && b->base_url[len - 1] == '/')
                b->base_url[--len] = '\0';
        }
    } else {
        return sl_host->set_error(call, ATP_E_CONFIG, "url = %s: write "
                                  "unix:///PATH or http://HOST:PORT", url);
    }
    if (b->display == NULL || b->base_url == NULL ||
        (url[0] == '/' || strncmp(url, "unix://", 7) == 0 ? !b->unix_path
                                                          : 0))
        return sl_host->set_error(call, ATP_E_NOMEM, "out of memory");
    return 0;
}

static int open_rest(atp_call *call, struct sl_backend *b)
{
    static const char *const known[] = {"v0.0.38", "v0.0.40", "v0.0.41",
                                        "v0.0.42", "v0.0.43", "v0.0.44",
                                        "v0.0.45", "v0.0.46", NULL};
    const char *url = sl_host->config_string(call, "url");
    int auth = sl_host->config_choice(call, "auth"), rc;
    size_t i;

    if ((rc = parse_url(call, b, url && *url ? url : DEFAULT_URL)) != 0 ||
        (rc = dup_opt(call, "jwt_file", &b->jwt_file)) != 0 ||
        (rc = dup_opt(call, "user", &b->user)) != 0 ||
        (rc = dup_opt(call, "api_version", &b->pinned)) != 0)
        return rc;
    for (i = 0; b->pinned && known[i]; i++)
        if (strcmp(b->pinned, known[i]) == 0)
            break;
    if (b->pinned && known[i] == NULL)
        return sl_host->set_error(call, ATP_E_CONFIG, "api_version = %s: atp "
                                  "speaks v0.0.38 and v0.0.40 to v0.0.46",
                                  b->pinned);
    b->jwt = auth == 2 || (auth == 0 && b->unix_path == NULL);
    if (b->jwt) {
        if ((rc = sl_token_load(call, b->jwt_file, &b->token)) != 0)
            return rc;
        if (b->user == NULL && b->token.user == NULL) {
            struct passwd *pw = getpwuid(getuid());

            if (pw && (b->user = strdup(pw->pw_name)) == NULL)
                return sl_host->set_error(call, ATP_E_NOMEM,
                                          "out of memory");
        }
    }
    return 0;
}

static int open_shared_dir(atp_call *call, struct sl_backend *b)
{
    const char *dir = sl_host->config_string(call, "shared_dir");
    char real[PATH_MAX];
    struct stat st;

    if (dir == NULL || dir[0] == '\0')
        return sl_host->set_error(call, ATP_E_CONFIG, "shared_dir is not "
                                  "set: name a directory that this host and "
                                  "the compute nodes share (your home or "
                                  "scratch directory on the cluster, say)");
    if (realpath(dir, real) == NULL || stat(real, &st) != 0 ||
        !S_ISDIR(st.st_mode))
        return sl_host->set_error(call, ATP_E_CONFIG, "shared_dir = %s: %s",
                                  dir, errno == ENOENT ? "no such directory"
                                  : errno ? strerror(errno)
                                          : "not a directory");
    b->shared_dir = strdup(real);
    return b->shared_dir ? 0 : sl_host->set_error(call, ATP_E_NOMEM,
                                                  "out of memory");
}

static int backend_open(atp_call *call, void **out)
{
    struct sl_backend *b = calloc(1, sizeof(*b));
    const char *url, *conf;
    int mode, rc, v;
    int64_t ms;

    *out = NULL;
    if (b == NULL)
        return sl_host->set_error(call, ATP_E_NOMEM, "out of memory");
    pthread_mutex_init(&b->lock, NULL);
    pthread_mutex_init(&b->ctl_lock, NULL);
    mode = sl_host->config_choice(call, "mode");
    url = sl_host->config_string(call, "url");
    b->mode = mode == 1 || (mode == 0 && url && *url) ? SL_MODE_REST
                                                      : SL_MODE_CLI;
    if ((rc = dup_opt(call, "partition", &b->partition)) != 0 ||
        (rc = dup_opt(call, "account", &b->account)) != 0 ||
        (rc = dup_opt(call, "qos", &b->qos)) != 0 ||
        (rc = open_shared_dir(call, b)) != 0)
        goto fail;
    if (b->mode == SL_MODE_REST && (rc = open_rest(call, b)) != 0)
        goto fail;
    if (sl_host->config_int(call, "time_limit", &ms) == 0) {
        if (ms < 60000) {
            rc = sl_host->set_error(call, ATP_E_CONFIG, "time_limit: Slurm "
                                    "counts whole minutes; give 1m or more");
            goto fail;
        }
        b->time_limit_ms = ms;
    }
    b->copy = sl_host->config_choice(call, "workdir_mode") == 1;
    b->sessions = sl_host->config_choice(call, "session");
    b->inherit_env = b->mode == SL_MODE_CLI;
    if (sl_host->config_bool(call, "inherit_env", &v) == 0)
        b->inherit_env = v;
    b->line_buffered = 1;
    if (sl_host->config_bool(call, "line_buffered", &v) == 0)
        b->line_buffered = v;
    b->poll_ms = 1000;
    if (sl_host->config_int(call, "poll_interval_s", &ms) == 0 && ms > 0)
        b->poll_ms = ms < 100 ? 100 : ms;
    b->queue_timeout_ms = 3600000;
    if (sl_host->config_int(call, "queue_timeout", &ms) == 0 && ms >= 0)
        b->queue_timeout_ms = ms;
    b->api_timeout_ms = 30000;
    if (sl_host->config_int(call, "api_timeout_s", &ms) == 0 && ms > 0)
        b->api_timeout_ms = ms;
    conf = getenv("SLURM_CONF");
    if (conf && *conf && (b->slurm_conf = strdup(conf)) == NULL) {
        rc = sl_host->set_error(call, ATP_E_NOMEM, "out of memory");
        goto fail;
    }
    if ((b->ctl = sl_conn_new(b)) == NULL) {
        rc = sl_host->set_error(call, ATP_E_NOMEM, "out of memory");
        goto fail;
    }
    *out = b;
    return 0;
fail:
    backend_free(b);
    return rc;
}

#define SL_CAPS                                                            \
    (ATP_CAP_STREAMING | ATP_CAP_STDIN | ATP_CAP_SESSIONS | ATP_CAP_GC |    \
     ATP_CAP_KILLS_TREE)

/* In copy mode the workdir is isolated: the core pushes and pulls it. */
static uint64_t backend_caps(void *backend)
{
    const struct sl_backend *b = backend;

    return SL_CAPS | (b && b->copy ? ATP_CAP_ISOLATED_FS : ATP_CAP_SHARED_FS);
}

static int check(atp_call *call, void *backend)
{
    struct sl_backend *b = backend;
    int rc;

    pthread_mutex_lock(&b->ctl_lock);
    rc = sl_ping(b->ctl, call);
    pthread_mutex_unlock(&b->ctl_lock);
    return rc;
}

/* ---- sessions -------------------------------------------------------------- */

/* shared_dir/.atp/RUN_ID: where a run keeps its files on the cluster. */
static char *run_dir(const struct sl_backend *b, const char *run_id)
{
    struct sl_buf p = {0};

    if (sl_buf_fmt(&p, "%s/.atp/%s", b->shared_dir, run_id) != 0) {
        sl_buf_free(&p);
        return NULL;
    }
    return p.s;
}

/* A run id names a directory: nothing but what atp's run ids hold. */
static int run_id_ok(const char *id)
{
    if (id == NULL || id[0] == '\0' || id[0] == '.' || strlen(id) > 64)
        return 0;
    for (; *id; id++)
        if (!((*id >= 'a' && *id <= 'z') || (*id >= 'A' && *id <= 'Z') ||
              (*id >= '0' && *id <= '9') || *id == '-' || *id == '_' ||
              *id == '.'))
            return 0;
    return 1;
}

static void session_free(void *session)
{
    struct sl_session *s = session;

    if (s == NULL)
        return;
    sl_conn_free(s->conn);
    free(s->run_id);
    free(s->workdir);
    free(s->rundir);
    free(s);
}

static int session_close(atp_call *call, void *session);

/* Does this session run its commands as steps of one allocation? */
static int use_steps(atp_call *call, struct sl_session *s, int *steps)
{
    struct sl_backend *b = s->be;
    int srun = sl_have_command("srun");

    /* A one-shot command in place is one job; a copy has transfer
     * commands around it, and a session many commands. */
    *steps = 0;
    if ((s->one_shot && !b->copy) || s->group)
        return 0; /* a group's member is a task of an array */
    if (b->sessions == SL_SESS_JOBS)
        return 0;
    if (b->sessions == SL_SESS_STEPS && !srun)
        return sl_host->set_error(call, ATP_E_CONFIG, "session = steps runs "
                                  "commands with srun, which is not in PATH "
                                  "here: install the Slurm client or set "
                                  "session = jobs");
    *steps = srun;
    return 0;
}

static int session_open(atp_call *call, void *backend,
                        const atp_session_spec *spec, void **out)
{
    struct sl_backend *b = backend;
    struct sl_session *s = NULL;
    struct sl_group *group = ATP_HAS_FIELD(spec, atp_session_spec, group)
                                 ? spec->group
                                 : NULL;
    char real[PATH_MAX];
    int rc, steps = 0;

    *out = NULL;
    rc = 0;
    if (spec->n_mounts > 0)
        rc = sl_host->set_error(call, ATP_E_UNSUPPORTED, "the slurm "
                                "backend cannot mount: put what the "
                                "command needs under shared_dir %s",
                                b->shared_dir);
    else if (realpath(spec->workdir, real) == NULL)
        rc = sl_host->set_error(call, ATP_E_PROVISION, "workdir %s: %s",
                                spec->workdir, strerror(errno));
    else if (!b->copy && !sl_path_under(real, b->shared_dir))
        rc = sl_host->set_error(call, ATP_E_CONFIG, "workdir %s is not "
                                "under shared_dir %s, so the compute nodes "
                                "would not see it: move it there, or set "
                                "workdir_mode = copy", real, b->shared_dir);
    else if ((s = calloc(1, sizeof(*s))) == NULL)
        rc = sl_host->set_error(call, ATP_E_NOMEM, "out of memory");
    if (rc) {
        if (group)
            sl_group_withdraw(group); /* the others need not wait */
        return rc;
    }
    s->be = b;
    s->group = group;
    s->run_id = strdup(spec->run_id ? spec->run_id : sl_host->run_id(call));
    s->ttl_ms = spec->ttl_ms > 0 ? spec->ttl_ms : 3600000;
    s->one_shot = ATP_HAS_FIELD(spec, atp_session_spec, flags) &&
                  (spec->flags & ATP_SESSION_ONE_SHOT);
    s->conn = sl_conn_new(b);
    if (s->run_id == NULL || s->conn == NULL) {
        rc = sl_host->set_error(call, ATP_E_NOMEM, "out of memory");
        goto fail;
    }
    if (!run_id_ok(s->run_id)) {
        rc = sl_host->set_error(call, ATP_E_INVAL, "run id %s cannot name a "
                                "directory", s->run_id);
        goto fail;
    }
    /* A group's member: the group asked once (hundreds of pings at the
     * same moment would swamp slurmrestd). */
    if ((rc = use_steps(call, s, &steps)) != 0 ||
        (!group && (rc = sl_ping(s->conn, call)) != 0))
        goto fail;
    s->rundir = run_dir(b, s->run_id);
    if (s->rundir == NULL) {
        rc = sl_host->set_error(call, ATP_E_NOMEM, "out of memory");
        goto fail;
    }
    if (sl_mkdirs(s->rundir, 0700) != 0) {
        rc = sl_host->set_error(call, ATP_E_PROVISION, "cannot create %s "
                                "under shared_dir: %s", s->rundir,
                                strerror(errno));
        goto fail;
    }
    sl_host->resource_created(call, "dir", s->rundir);
    if (b->copy) {
        struct sl_buf wd = {0};

        if (sl_buf_fmt(&wd, "%s/wd", s->rundir) != 0) {
            sl_buf_free(&wd);
            rc = sl_host->set_error(call, ATP_E_NOMEM, "out of memory");
            goto fail;
        }
        s->workdir = wd.s;
        if (sl_mkdirs(s->workdir, 0700) != 0) {
            rc = sl_host->set_error(call, ATP_E_PROVISION, "cannot create "
                                    "%s: %s", s->workdir, strerror(errno));
            goto fail;
        }
    } else if ((s->workdir = strdup(real)) == NULL) {
        rc = sl_host->set_error(call, ATP_E_NOMEM, "out of memory");
        goto fail;
    }
    if (steps && (rc = sl_alloc_open(call, s)) != 0)
        goto fail;
    *out = s;
    return 0;
fail:
    session_close(call, s);
    session_free(s);
    return rc;
}

static int session_close(atp_call *call, void *session)
{
    struct sl_session *s = session;
    int rc = 0;

    if (s == NULL || s->closed)
        return 0;
    if (s->group && !s->joined) {
        s->joined = 1;
        sl_group_withdraw(s->group);
    }
    if ((rc = sl_settle(call, s)) != 0)
        return rc;
    if (s->alloc > 0 && (rc = sl_alloc_close(call, s)) != 0)
        return rc;
    if (s->rundir) {
        if (sl_remove_tree(s->rundir) != 0)
            return sl_host->set_error(call, ATP_E_BACKEND, "cannot remove "
                                      "the run directory %s: %s", s->rundir,
                                      strerror(errno));
        sl_host->resource_removed(call, s->rundir);
    }
    s->closed = 1;
    return 0;
}

static int exec(atp_call *call, void *session, const atp_exec_spec *spec,
                atp_exec_outcome *out)
{
    struct sl_session *s = session;

    if (s->closed)
        return sl_host->set_error(call, ATP_E_INVAL, "session is closed");
    if (spec->argv == NULL || spec->argv[0] == NULL)
        return sl_host->set_error(call, ATP_E_INVAL, "empty argv");
    s->n_exec++;
    return s->alloc > 0 ? sl_step_exec(call, s, spec, out)
                        : sl_job_exec(call, s, spec, out);
}

/* ---- the copy: the run directory is on this host too ------------------ */

static long read_input(void *ctx, void *buf, size_t len)
{
    return sl_host->input(ctx, buf, len);
}

static int write_output(void *ctx, const void *buf, size_t len)
{
    return sl_host->output(ctx, ATP_STDOUT, buf, len);
}

static int push_archive(atp_call *call, void *session, const char *dest)
{
    struct sl_session *s = session;

    if (dest && strcmp(dest, s->workdir) != 0)
        return sl_host->set_error(call, ATP_E_UNSUPPORTED, "the slurm "
                                  "backend copies the workdir only, not %s",
                                  dest);
    return sl_host->tar_extract(call, s->workdir, read_input, call);
}

static int pull_archive(atp_call *call, void *session)
{
    struct sl_session *s = session;

    return sl_host->tar_create(call, s->workdir, write_output, call);
}

/* ---- gc ----------------------------------------------------------------------- */

/* Does comment @c carry the marker of run @run? */
static int ours(const char *c, const char *run)
{
    size_t n = strlen(run);

    return strncmp(c, "atp:run=", 8) == 0 && strncmp(c + 8, run, n) == 0 &&
           c[8 + n] == ';';
}

static int reap_jobs(atp_call *call, struct sl_backend *b, const char *run)
{
    struct sl_jobinfo *jobs = NULL;
    size_t n = 0, i;
    int rc;

    /* GET /jobs cannot filter: the comment marker decides. */
    if ((rc = sl_list(b->ctl, call, &jobs, &n, 1)) != 0)
        return rc;
    for (i = 0; i < n && rc == 0; i++) {
        if (!ours(jobs[i].comment, run) || sl_state_final(jobs[i].state))
            continue;
        rc = sl_kill(b->ctl, call, jobs[i].id, SIGKILL, 1);
        if (rc == ATP_E_NOTFOUND)
            rc = 0;
    }
    free(jobs);
    return rc;
}

static int reap_job(atp_call *call, struct sl_backend *b, const char *run,
                    const char *id)
{
    struct sl_jobinfo ji;
    char *end;
    long jid = strtol(id, &end, 10);
    int rc;

    if (jid <= 0 || *end != '\0')
        return sl_host->set_error(call, ATP_E_NOTFOUND, "'%.64s' is not a "
                                  "job id", id);
    if ((rc = sl_query(b->ctl, call, jid, &ji, 1)) != 0)
        return rc;
    if (sl_job_ended(&ji))
        return 0; /* over: nothing to reap */
    if (!ours(ji.comment, run))
        return sl_host->set_error(call, ATP_E_NOTFOUND, "job %ld is not a "
                                  "job of run %s (its comment is '%s')", jid,
                                  run, ji.comment);
    rc = sl_kill(b->ctl, call, jid, SIGKILL, 1);
    return rc == ATP_E_NOTFOUND ? 0 : rc;
}

/*
 * A task "ARRAY_TASK" of a group's array: the lease's run id is
 * "GROUP-INDEX", and the array's comment must carry GROUP.
 */
static int reap_task(atp_call *call, struct sl_backend *b, const char *run,
                     const char *id)
{
    struct sl_jobinfo ji;
    char group[80], *end;
    const char *dash = strrchr(run, '-');
    long array = strtol(id, &end, 10);
    int rc;

    if (array <= 0 || *end != '_' || end[1] < '0' || end[1] > '9')
        return sl_host->set_error(call, ATP_E_NOTFOUND, "'%.64s' is not an "
                                  "array task", id);
    if (dash == NULL || (size_t)(dash - run) >= sizeof(group))
        return sl_host->set_error(call, ATP_E_NOTFOUND, "run %s is not a "
                                  "member of a group", run);
    snprintf(group, sizeof(group), "%.*s", (int)(dash - run), run);
    if ((rc = sl_query(b->ctl, call, array, &ji, 1)) != 0)
        return rc;
    if (ji.gone)
        return 0; /* over: nothing to reap */
    if (strncmp(ji.comment, "atp:run=", 8) != 0 ||
        strncmp(ji.comment + 8, group, strlen(group)) != 0 ||
        strncmp(ji.comment + 8 + strlen(group), ";array=", 7) != 0)
        return sl_host->set_error(call, ATP_E_NOTFOUND, "array %ld is not "
                                  "one of group %s (its comment is '%s')",
                                  array, group, ji.comment);
    rc = sl_kill_task(b->ctl, call, id, 1);
    return rc == ATP_E_NOTFOUND ? 0 : rc;
}

static int reap(atp_call *call, void *backend, const char *kind,
                const char *id)
{
    struct sl_backend *b = backend;
    const char *run = sl_host->run_id(call);
    char *dir;
    int rc = 0;

    if (strcmp(kind, "run") == 0)
        run = id;
    if (!run_id_ok(run))
        return sl_host->set_error(call, ATP_E_INVAL, "the lease names no "
                                  "run id: nothing can be proven ours");
    dir = run_dir(b, run);
    if (dir == NULL)
        return sl_host->set_error(call, ATP_E_NOMEM, "out of memory");
    pthread_mutex_lock(&b->ctl_lock);
    if (strcmp(kind, "run") == 0) {
        rc = reap_jobs(call, b, run);
        if (rc == 0 && sl_remove_tree(dir) != 0)
            rc = sl_host->set_error(call, ATP_E_BACKEND, "cannot remove %s: "
                                    "%s", dir, strerror(errno));
    } else if (strcmp(kind, "job") == 0) {
        rc = reap_job(call, b, run, id);
    } else if (strcmp(kind, "task") == 0) {
        rc = reap_task(call, b, run, id);
    } else if (strcmp(kind, "dir") == 0) {
        /* Only the run's own directory under shared_dir, never a path
         * on the lease's word alone. */
        if (strcmp(id, dir) != 0)
            rc = sl_host->set_error(call, ATP_E_NOTFOUND, "%.200s is not the "
                                    "run directory of run %s", id, run);
        else if (sl_remove_tree(dir) != 0)
            rc = sl_host->set_error(call, ATP_E_BACKEND, "cannot remove %s: "
                                    "%s", dir, strerror(errno));
    } else {
        rc = sl_host->set_error(call, ATP_E_NOTFOUND, "the slurm backend "
                                "makes no resource of kind '%s'", kind);
    }
    pthread_mutex_unlock(&b->ctl_lock);
    free(dir);
    return rc;
}

/* ---- entry ---------------------------------------------------------------------- */

static void fini(void)
{
    curl_global_cleanup();
}

static const atp_plugin_ops slurm_ops = {
    sizeof(atp_plugin_ops),
    ATP_PLUGIN_ABI_MAJOR,
    ATP_PLUGIN_ABI_MINOR,
    "slurm",
    PACKAGE_VERSION,
    "runs commands as Slurm jobs and steps, through slurmrestd or the "
    "Slurm commands, over a shared filesystem",
    SL_CAPS | ATP_CAP_SHARED_FS,
    options,
    backend_open,
    backend_free,
    session_open,
    exec,
    session_close,
    session_free,
    check,
    reap,
    fini,
    backend_caps,
    push_archive,
    pull_archive,
    sl_group_open,
    sl_group_free,
};

ATP_PLUGIN_EXPORT int atp_plugin_entry_v1(const atp_host_api *api,
                                          atp_call *call,
                                          const atp_plugin_ops **ops_out)
{
    if (api == NULL || api->abi_major != ATP_PLUGIN_ABI_MAJOR)
        return ATP_E_ABI;
    if (!ATP_HAS_FIELD(api, atp_host_api, spawn))
        return api->set_error(call, ATP_E_ABI, "the slurm plugin runs the "
                              "Slurm commands with the core's process "
                              "runner and delivers its kill schedule: it "
                              "needs a core of plugin ABI 1.2 or later "
                              "(this one is %u.%u)", api->abi_major,
                              api->abi_minor);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return api->set_error(call, ATP_E_BACKEND, "libcurl failed to "
                              "initialise");
    sl_host = api;
    *ops_out = &slurm_ops;
    return 0;
}
