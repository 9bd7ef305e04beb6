/*
 * plugins/slurm/sl.h - declarations shared by the files of the slurm
 * backend plugin.  Nothing here crosses the plugin boundary: every symbol
 * is hidden, and only atp_plugin_entry_v1 is exported.
 *
 *   slurm.c    the plugin's ops: options, backend, sessions, gc
 *   job.c      a command as one batch job: submit, follow its output
 *              files, the schedule's signals, its end
 *   step.c     a session's allocation, and a command as a step in it
 *              (srun through the core's process runner)
 *   rest.c     slurmrestd over libcurl: requests, probing, the jobs API
 *   dialect.c  the JSON of each REST version: v0.0.38 and v0.0.40+
 *   cli.c      the same jobs API through sbatch, squeue, scancel, sacct
 *   jwt.c      the JSON web token: where it comes from, when it expires
 *   util.c     scripts, quoting, environments, paths, file tails
 */
#ifndef ATP_SLURM_SL_H
#define ATP_SLURM_SL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <curl/curl.h>
#include <json.h>

#include <atp/plugin.h>

/* The host table, set once by the entry point. */
extern const atp_host_api *sl_host;

/* ---- jobs, whatever the transport ------------------------------------- */

/* A batch job as atp submits it. */
struct sl_jobspec {
    const char *name;
    const char *comment;   /* the marker: "atp:run=RUN;exec=N;pid=P" */
    const char *script;    /* "#!/bin/sh ..." */
    const char *script_path; /* where the CLI writes it for sbatch */
    const char *workdir;   /* current_working_directory */
    const char *out_path;  /* standard_output */
    const char *err_path;  /* standard_error */
    const char *in_path;   /* standard_input, NULL: /dev/null */
    const char *const *env; /* the job's whole environment */
    long time_limit_min;   /* > 0 */
    const char *array;     /* "0-199%4" for a job array, or NULL */
    const char *dependency; /* "afterany:ID", or NULL */
};

/* What the controller says of a job. */
struct sl_jobinfo {
    long id;
    char state[24];    /* base state: "PENDING", "RUNNING", "COMPLETED" */
    int completing;    /* its processes are still being ended */
    char reason[64];   /* state_reason */
    int has_exit;      /* exit_code/signal below are known */
    int exit_code;     /* 0..255, or -1 when killed by a signal */
    int signal;        /* terminating signal, or 0 */
    char node[128];    /* batch_host */
    char comment[256];
    long time_limit_min;
    int gone;          /* the controller does not know the id (any more) */
};

/* Is @state (a base state) one a job never leaves? */
int sl_state_final(const char *state);

/*
 * Did the node under the job fail?  NODE_FAIL or BOOT_FAIL, or still
 * "completing" with the reason NodeDown: slurmctld set the node DOWN and
 * the job's end can never complete there (v0.0.38 and squeue then show
 * COMPLETING, not NODE_FAIL).
 */
int sl_node_failed(const struct sl_jobinfo *ji);

/* Is the job over: unknown, its node failed, or final and not completing? */
int sl_job_ended(const struct sl_jobinfo *ji);

/* Is it waiting to run (not started yet)? */
int sl_state_waiting(const char *state);

/* Decode a raw wait status (what Slurm calls exit_code) into @ji. */
void sl_decode_status(struct sl_jobinfo *ji, long status);

/* ---- dialect.c --------------------------------------------------------- */

enum { SL_D38 = 38, SL_D40 = 40 }; /* v0.0.38; v0.0.40 and later */

/*
 * The body of POST /slurm/VERSION/job/submit for @js in dialect @d, with
 * the partition, account and qos when not NULL.  Never an "argv" (it
 * crashes slurmrestd 22.05.8 after the job is made); the environment is
 * whole.  NULL when out of memory.
 */
json_object *sl_submit_body(int d, const struct sl_jobspec *js,
                            const char *partition, const char *account,
                            const char *qos);

/*
 * Read one element of a "jobs" array (GET /job/{id}, GET /jobs, squeue
 * --json) into @ji, in either dialect: job_state a string or an array of
 * flags, exit_code a raw wait status or an object.
 */
void sl_job_from_json(json_object *job, struct sl_jobinfo *ji);

/*
 * The first message of the "errors" array of a reply (either shape:
 * {"error","error_code"} or {"description","error_number",...}) into
 * @out, and its number into *@num (0 when none).  Returns 1 when there
 * was one.
 */
int sl_reply_error(json_object *reply, char *out, size_t outlen, long *num);

/* The Slurm release a reply's meta names ("22.05.8"), or NULL. */
const char *sl_reply_release(json_object *reply);

/* ---- jwt.c ------------------------------------------------------------- */

struct sl_token {
    char *value;     /* the token, a secret */
    char *source;    /* "SLURM_JWT" or the file's path, for messages */
    char *user;      /* its "sun" claim, or NULL */
    long long exp;   /* its "exp" claim (epoch s), 0 when unknown */
};

/*
 * Load the token from @file (when not NULL) or the environment variable
 * SLURM_JWT.  ATP_E_CREDENTIALS, with the reason, when there is none or
 * it cannot be read.  The claims are decoded without checking the
 * signature (the server does that): only to say "expired" ourselves.
 */
int sl_token_load(atp_call *call, const char *file, struct sl_token *t);
void sl_token_free(struct sl_token *t);

/*
 * ATP_E_CREDENTIALS with atp's own message when the token has expired
 * (the server only says "Zero Bytes were transmitted or received"), after
 * reading the file again in case it was renewed; else 0.
 */
int sl_token_check(atp_call *call, struct sl_token *t, const char *file);

/* Decode the claims of a token; 0, or -1 when it is not a JWT. */
int sl_token_claims(const char *token, char **user, long long *exp);

/* ---- the backend ------------------------------------------------------- */

enum { SL_MODE_REST, SL_MODE_CLI };
enum { SL_SESS_AUTO, SL_SESS_STEPS, SL_SESS_JOBS };

struct sl_backend {
    int mode;
    /* rest */
    char *unix_path;   /* socket path, or NULL for http(s) */
    char *base_url;    /* "http://localhost" or "http://HOST:PORT" */
    char *display;     /* the url as configured, for messages */
    int jwt;           /* send X-SLURM-USER-NAME/-TOKEN */
    char *jwt_file;
    char *user;        /* X-SLURM-USER-NAME */
    struct sl_token token;
    char *pinned;      /* api_version, or NULL to probe */
    pthread_mutex_t lock; /* probing, the token */
    int probed;
    char version[16];  /* "v0.0.38" */
    int dialect;       /* SL_D38 or SL_D40 */
    /* jobs */
    char *partition, *account, *qos;
    int64_t time_limit_ms;  /* 0: from the budget */
    char *shared_dir;       /* realpath */
    int copy;               /* workdir_mode = copy */
    int sessions;           /* SL_SESS_* */
    int inherit_env;
    int line_buffered;
    int64_t poll_ms;        /* longest pause between two state polls */
    int64_t api_timeout_ms; /* longest wait for one request or command */
    int64_t queue_timeout_ms; /* longest wait in the queue, 0: none */
    char *slurm_conf;       /* the host's SLURM_CONF, for the CLI */
    struct sl_conn *ctl;    /* check() and reap(), under ctl_lock */
    pthread_mutex_t ctl_lock;
};

/* One channel to the cluster: a connection to slurmrestd, or the CLI. */
struct sl_conn {
    struct sl_backend *be;
    CURL *easy;
    CURLM *multi;
};

struct sl_conn *sl_conn_new(struct sl_backend *be);
void sl_conn_free(struct sl_conn *c);

/* ---- the jobs API (rest.c or cli.c, as the mode says) ------------------- */

/*
 * Every call below takes @cleanup: non-zero for what ends a job (its
 * cancellation and the look that follows), which neither the call's
 * cancellation nor its deadline may stop.  Each returns 0 or a negative
 * ATP_E_* with the error set.
 */

/* Is the cluster there?  (ping; the REST version is probed once.) */
int sl_ping(struct sl_conn *c, atp_call *call);

/*
 * Submit @js; the job id into *@id.  A transport failure after the
 * request was sent leaves it unknown whether the job exists:
 * ATP_E_BACKEND then, and the caller sweeps by the comment marker.
 */
int sl_submit(struct sl_conn *c, atp_call *call, const struct sl_jobspec *js,
              long *id);

/* The job's state; ji->gone when the controller does not know the id. */
int sl_query(struct sl_conn *c, atp_call *call, long id,
             struct sl_jobinfo *ji, int cleanup);

/*
 * SIGTERM: send it to every process of the job (the batch shell
 * included); ATP_E_NOTFOUND when the job is not running (pending, or
 * over).  SIGKILL: end the job now, whatever its state.
 */
int sl_kill(struct sl_conn *c, atp_call *call, long id, int sig,
            int cleanup);

/*
 * Every job the controller holds (GET /jobs cannot filter; squeue can,
 * by user), for a sweep by comment marker: a malloc'ed array into *@jobs.
 */
int sl_list(struct sl_conn *c, atp_call *call, struct sl_jobinfo **jobs,
            size_t *n, int cleanup);

/* ---- rest.c ------------------------------------------------------------- */

int sl_rest_ping(struct sl_conn *c, atp_call *call);
int sl_rest_submit(struct sl_conn *c, atp_call *call,
                   const struct sl_jobspec *js, long *id);
int sl_rest_query(struct sl_conn *c, atp_call *call, long id,
                  struct sl_jobinfo *ji, int cleanup);
int sl_rest_kill(struct sl_conn *c, atp_call *call, long id, int sig,
                 int cleanup);
int sl_rest_list(struct sl_conn *c, atp_call *call, struct sl_jobinfo **jobs,
                 size_t *n, int cleanup);
int sl_rest_kill_task(struct sl_conn *c, atp_call *call, const char *task,
                      int cleanup);

/* ---- cli.c -------------------------------------------------------------- */

int sl_cli_ping(struct sl_conn *c, atp_call *call);
int sl_cli_submit(struct sl_conn *c, atp_call *call,
                  const struct sl_jobspec *js, long *id);
int sl_cli_query(struct sl_conn *c, atp_call *call, long id,
                 struct sl_jobinfo *ji, int cleanup);
int sl_cli_kill(struct sl_conn *c, atp_call *call, long id, int sig,
                int cleanup);
int sl_cli_list(struct sl_conn *c, atp_call *call, struct sl_jobinfo **jobs,
                size_t *n, int cleanup);
int sl_cli_kill_task(struct sl_conn *c, atp_call *call, const char *task,
                     int cleanup);

/* What a helper command printed. */
struct sl_capture {
    char *out, *err; /* NUL-terminated, bounded */
    size_t out_len, err_len;
};

void sl_capture_free(struct sl_capture *cap);

/*
 * Run a Slurm command on this host through the core's process runner,
 * within api_timeout_s (a cleanup one past cancellation and deadline),
 * its stdout and stderr into @cap, its environment @envp (NULL: the
 * tools' own, sl_tool_env()).  Returns 0 with *@code its exit status (-1
 * when it died of a signal), or an error when it could not run.
 */
int sl_cli_run(struct sl_conn *c, atp_call *call, const char *const *argv,
               const char *const *envp, int cleanup, struct sl_capture *cap,
               int *code);

/* ---- sessions ----------------------------------------------------------- */

struct sl_session {
    struct sl_backend *be;
    struct sl_conn *conn;
    char *run_id;
    char *workdir;     /* where commands run: the workdir, or rundir/wd */
    char *rundir;      /* shared_dir/.atp/RUN_ID: output files, the copy */
    int64_t ttl_ms;
    int one_shot;
    long alloc;        /* the allocation's job id (steps), 0: none */
    char alloc_text[24];
    char node[128];    /* where the allocation runs */
    int dead;          /* the allocation is gone */
    long unsettled[16]; /* jobs killed but not yet seen to end */
    size_t n_unsettled;
    unsigned n_exec;
    int closed;
    struct sl_group *group; /* its exec goes into a job array, or NULL */
    int joined;             /* ...and it went (else: withdraw at close) */
};

/* ---- job.c -------------------------------------------------------------- */

/* The ops' exec() for a command that is a batch job of its own. */
int sl_job_exec(atp_call *call, struct sl_session *s,
                const atp_exec_spec *spec, atp_exec_outcome *out);

/*
 * Cancel, after a failed or lost submission, whatever job carries the
 * comment @marker exactly (the answer may have been lost while the job
 * was made).
 */
void sl_sweep_marker(struct sl_conn *c, atp_call *call, const char *marker);

/*
 * Wait, within the call's deadline, for the session's killed jobs that
 * were not seen to end (a v0.0.38 cancel takes KillWait seconds), and
 * take those that ended out of the ledger.  0, or ATP_E_TIMEOUT when some
 * are still there (their leases stay for `atp-run gc`).
 */
int sl_settle(atp_call *call, struct sl_session *s);

/* The job's time limit in minutes for a command of @budget_ms. */
long sl_time_limit_min(const struct sl_backend *be, int64_t budget_ms,
                       int64_t grace_ms);

/* ---- array.c ------------------------------------------------------------ */

struct sl_group;

/* The ops' group_open() and group_free(). */
int sl_group_open(atp_call *call, void *backend, const atp_group_spec *spec,
                  void **out);
void sl_group_free(void *group);

/* A member that will never join (its session failed or closed first). */
void sl_group_withdraw(struct sl_group *g);

/*
 * Join the group's next array with the member whose files are
 * @prefix.sh (its script) and @prefix.jobid (written when its task
 * begins); returns when the array is submitted, with its id and the
 * member's task, or an error.
 */
int sl_group_join(struct sl_group *g, atp_call *call, const char *prefix,
                  long time_limit_min, long *array, unsigned *task);

const char *sl_group_id(const struct sl_group *g);

/* Cancel array task @task ("ARRAY_TASK"), pending or running. */
int sl_kill_task(struct sl_conn *c, atp_call *call, const char *task,
                 int cleanup);

/* ---- step.c ------------------------------------------------------------- */

/* Submit the session's allocation and wait until it runs. */
int sl_alloc_open(atp_call *call, struct sl_session *s);

/* Cancel it (uncancellable); 0 when it is gone. */
int sl_alloc_close(atp_call *call, struct sl_session *s);

/* The ops' exec() for a command that is a step of the allocation. */
int sl_step_exec(atp_call *call, struct sl_session *s,
                 const atp_exec_spec *spec, atp_exec_outcome *out);

/* ---- util.c ------------------------------------------------------------- */

/* A growing string; every append returns 0 or ATP_E_NOMEM. */
struct sl_buf {
    char *s;
    size_t len, cap;
};

int sl_buf_add(struct sl_buf *b, const char *s, size_t n);
int sl_buf_str(struct sl_buf *b, const char *s);
int sl_buf_fmt(struct sl_buf *b, const char *fmt, ...) ATP_PRINTF(2, 3);
/* @s as one sh word, single-quoted ('\'' for a quote). */
int sl_buf_quote(struct sl_buf *b, const char *s);
void sl_buf_free(struct sl_buf *b);

/*
 * The batch script of a command: #!/bin/sh, then `cd -- DIR || exit 125`
 * (slurmstepd runs a job whose directory is missing in /tmp instead),
 * then `exec` of @argv, under `stdbuf -oL -eL` when @line_buffered and
 * the node has it.  Malloc'ed; NULL when out of memory.
 */
char *sl_script(const char *dir, const char *const *argv, int line_buffered);

/*
 * A job's whole environment: the host's own (when @inherit, without the
 * variables that steer the Slurm tools or name another job: SLURM_*,
 * SBATCH_*, SRUN_*, SALLOC_*) under @envp, with a PATH when neither has
 * one; then, for the Slurm tools, @extra (NULL-terminated, may be NULL).
 * A NULL-terminated array of borrowed strings (free the array only).
 */
const char **sl_job_env(int inherit, const char *const *envp,
                        const char *const *extra);

/* Does @path lie under directory @dir (both absolute, canonical)? */
int sl_path_under(const char *path, const char *dir);

/* mkdir -p with @mode; 0 or -1 with errno. */
int sl_mkdirs(const char *path, mode_t mode);

/* rm -rf that never follows a symlink; 0 or -1 with errno. */
int sl_remove_tree(const char *path);

/* Is @name an executable in this process's PATH? */
int sl_have_command(const char *name);

/* Its full path (malloc'ed), or NULL. */
char *sl_which(const char *name);

/* A file a job writes, followed as it grows. */
struct sl_tail {
    const char *path;
    int stream;     /* ATP_STDOUT or ATP_STDERR */
    int fd;
    off_t off;
};

void sl_tail_init(struct sl_tail *t, const char *path, int stream);

/*
 * Hand what was appended since the last call to host->output(); with
 * @final, reopen the file first (an NFS client then sees its last size)
 * and read to its end.  Returns the bytes delivered.
 */
size_t sl_tail_pump(struct sl_tail *t, atp_call *call, int final);
void sl_tail_close(struct sl_tail *t);

/* Milliseconds until @deadline_ns (0: none -> -1). */
int64_t sl_ms_left(int64_t deadline_ns);

/* Sleep up to @ms, waking early when @fd (if >= 0) becomes readable. */
void sl_wait(int fd, int64_t ms);

#endif /* ATP_SLURM_SL_H */
