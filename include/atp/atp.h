/*
 * atp/atp.h - libatp, the client API of atp.
 *
 * libatp runs a command over a working directory inside a sandbox chosen
 * by configuration.  Typical use:
 *
 *     atp_config *cfg;  atp_backend *be;  atp_session *s;
 *     atp_config_load(&cfg, NULL);              // search the usual places
 *     atp_backend_open(&be, cfg, NULL);         // [atp] backend, or local
 *     atp_session_create(&s, be, &sopts);       // no I/O yet
 *     atp_session_start(s, &res);               // provision (+ push)
 *     atp_session_exec(s, "lake build", &eopts, &res);
 *     atp_session_close(s, &res);               // always; idempotent
 *     atp_session_free(s);
 *
 * atp_run() does the whole one-shot sequence.
 *
 * Conventions
 *   - Functions return 0 or a negative ATP_E_* code (atp/common.h);
 *     atp_last_error() gives the message of the calling thread's last
 *     failure.
 *   - Structs passed in and out start with struct_size.  Set it with the
 *     matching *_INIT macro or *_init() function; a struct from any
 *     earlier version of this header is accepted as it is (fields added
 *     since then take their defaults), and results are written only up to
 *     the caller's struct_size.  Zero means "default" in every field, so a
 *     zeroed struct whose struct_size is set asks for all the defaults.
 *   - Strings passed in are borrowed for the call.
 *   - The library writes nothing to stderr: diagnostics go to the log
 *     callback of the configuration (atp_config_set_log()), if any.
 *
 * Threads
 *   - A configuration and a backend may be shared by any number of
 *     threads, and sessions of one backend driven from different threads
 *     at the same time.  Free them after every session made from them.
 *   - A session is used by one thread at a time: a call made while another
 *     thread is inside a call on the same session fails with ATP_E_INVAL.
 *     atp_session_cancel() is the exception: any thread, or a signal
 *     handler, may call it at any time.
 *
 * Processes
 *   - Commands of host-process backends (local, and plugins that use the
 *     core's process runner) run in process groups of their own.  So that
 *     descendants that leave the group (setsid, double forks) are found
 *     and killed when the command ends, libatp makes the calling process
 *     a child subreaper (prctl PR_SET_CHILD_SUBREAPER) the first time it
 *     runs one, unless [atp] subreaper = false: orphaned descendants of
 *     any child of the process are then reparented to it rather than to
 *     init, and the process should reap children it does not know.
 *     libatp reaps only the processes it started or killed, and installs
 *     no signal handler.
 */
#ifndef ATP_ATP_H
#define ATP_ATP_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define ATP_EXTERN __attribute__((visibility("default")))
#else
#define ATP_EXTERN
#endif

/** libatp's version as text, e.g. "0.2.0". */
ATP_EXTERN const char *atp_version(void);

/** Message of the calling thread's most recent failure ("" if none). */
ATP_EXTERN const char *atp_last_error(void);

/** Short text for an ATP_E_* code. */
ATP_EXTERN const char *atp_strerror(int code);

/** The name of an ATP_E_* code ("ATP_E_TIMEOUT"), or "ATP_E_?". */
ATP_EXTERN const char *atp_err_name(int code);

/** Lower-case name of a status ("ok", "timeout", ...). */
ATP_EXTERN const char *atp_status_name(atp_status status);

/** The status class an ATP_E_* code maps to. */
ATP_EXTERN atp_status atp_status_from_error(int code);

/**
 * atp-run's exit status for a status class: 0, 124, 125, 2 or 130; -1
 * for ATP_STATUS_EXIT, whose exit status is the command's own (128+N
 * after signal N).
 */
ATP_EXTERN int atp_status_exit_code(atp_status status);

/** Outcome of an operation. */
typedef struct atp_result {
    uint32_t struct_size;
    atp_status status;
    int exit_code;          /**< 0..255, or -1 (signal, or never ran) */
    int signal;             /**< terminating signal, or 0 */
    double duration_s;      /**< wall time of the operation */
    int stdout_truncated;   /**< some stdout did not reach the caller */
    int stderr_truncated;   /**< some stderr did not reach the caller */
    uint64_t stdout_bytes;  /**< bytes the command wrote to stdout */
    uint64_t stderr_bytes;  /**< bytes the command wrote to stderr */
    char message[1024];     /**< detail when status is not ok/exit;
                               with ok/exit, why output is truncated
                               when that was not a limit (the output's
                               end never came through the backend) */
    /* ---- 0.2: what it cost.  Seconds and bytes are 0, and the
     * measurements -1, where they do not apply or are unknown. ---- */
    double provision_s;     /**< creating the sandbox (start) */
    double push_s, pull_s;  /**< workdir transfers in and out */
    uint64_t push_bytes, pull_bytes;
    double exec_s;          /**< the command itself */
    double sandbox_s;       /**< the sandbox's lifetime, start to close */
    double cpu_s;           /**< cpu time of the command, -1 unknown */
    int64_t max_rss_bytes;  /**< its peak memory, -1 unknown */
    double cost_usd;        /**< from [price], -1 without prices */
    char image_id[160];     /**< the immutable image id it ran on, or "" */
    /* ---- 0.3 ---- */
    double queue_s;         /**< time the command waited in a scheduler's
                               queue before it began (Slurm); not part of
                               exec_s, nor of the budget */
} atp_result;

#define ATP_RESULT_INIT {sizeof(atp_result), ATP_STATUS_OK, -1, 0, 0.0, \
                         0, 0, 0, 0, {0}, 0.0, 0.0, 0.0, 0, 0, 0.0, 0.0, \
                         -1.0, -1, -1.0, {0}, 0.0}

/**
 * Set up @p res, a struct of @p size bytes (its sizeof where the caller
 * was built), as ATP_RESULT_INIT does.  Returns 0, or ATP_E_INVAL when
 * @p size is smaller than the first published atp_result.
 */
ATP_EXTERN int atp_result_init(atp_result *res, size_t size);

/* ---------------------------------------------------------------------- */
/* Configuration                                                            */

typedef struct atp_config atp_config;

/**
 * Load the configuration.  With @p path NULL the search order is
 * $ATP_CONFIG, ./atp.ini, $XDG_CONFIG_HOME/atp/atp.ini (or
 * ~/.config/atp/atp.ini), /etc/atp/atp.ini; when none exists the built-in
 * defaults select the local backend.  A set-id program ignores the
 * environment here (ATP_CONFIG, XDG_CONFIG_HOME, HOME), as it ignores
 * ATP_PLUGIN_PATH, ATP_LOG and ATP_TRANSFER_MODULE.  Unknown sections and keys, and
 * values of the wrong type, fail with ATP_E_CONFIG and a message naming
 * the file, the line and the nearest valid key.
 */
ATP_EXTERN int atp_config_load(atp_config **out, const char *path);

/** Parse configuration from memory (@p name is used in messages). */
ATP_EXTERN int atp_config_load_string(atp_config **out, const char *text,
                                      const char *name);

/** Free a configuration (after every backend opened from it). */
ATP_EXTERN void atp_config_free(atp_config *cfg);

/** The file the configuration came from, or NULL for built-in defaults. */
ATP_EXTERN const char *atp_config_path(const atp_config *cfg);

/** The backend [atp] backend names ("local" by default). */
ATP_EXTERN const char *atp_config_backend(const atp_config *cfg);

/**
 * Raw value of @p key in @p section, or NULL.  Sections are named as in the
 * file: "atp", "image", "env", "backend.docker".
 */
ATP_EXTERN const char *atp_config_get(const atp_config *cfg,
                                      const char *section, const char *key);

/**
 * Receives a diagnostic line: @p level an ATP_LOG_*, @p origin "core", a
 * plugin's name, or "plugin-loader"; @p message without a newline, secret
 * values already redacted.  Called from whichever thread logs.
 */
typedef void (*atp_log_fn)(int level, const char *origin,
                           const char *message, void *payload);

/**
 * Send the diagnostics of everything made from @p cfg (backends, sessions,
 * plugin loading) to @p fn, up to @p max_level (ATP_LOG_WARN shows errors
 * and warnings).  $ATP_LOG (error, warn, info, debug) raises or lowers
 * the level; ATP_PLUGIN_DEBUG=1 adds the plugin search, as "plugin-loader"
 * at ATP_LOG_DEBUG.  Without a callback nothing is logged.  Set it before
 * opening backends.
 */
ATP_EXTERN void atp_config_set_log(atp_config *cfg, atp_log_fn fn,
                                   int max_level, void *payload);

/* ---------------------------------------------------------------------- */
/* Events                                                                   */

/** A lifecycle event: a type ("provisioned", "pulled", ...) and fields. */
typedef struct atp_event {
    uint32_t struct_size;
    const char *type;
    const atp_field *fields;
    size_t n_fields;
} atp_event;

/** Receives events; everything it gets is borrowed for the call. */
typedef void (*atp_event_fn)(const atp_event *event, void *payload);

/* ---------------------------------------------------------------------- */
/* Backends and plugins                                                     */

typedef struct atp_backend atp_backend;

/**
 * Open backend @p name (NULL: the configured one) from @p cfg: find its
 * plugin, load it, negotiate the ABI and let it read its section.  Only
 * that plugin is loaded.
 */
ATP_EXTERN int atp_backend_open(atp_backend **out, atp_config *cfg,
                                const char *name);

/** Free a backend (after all its sessions are freed). */
ATP_EXTERN void atp_backend_free(atp_backend *backend);

/** The backend instance's name, e.g. "local" or "modal-big". */
ATP_EXTERN const char *atp_backend_name(const atp_backend *backend);

/** Its plugin's name, version and capabilities. */
ATP_EXTERN const char *atp_backend_plugin(const atp_backend *backend);
ATP_EXTERN const char *atp_backend_plugin_version(const atp_backend *b);
ATP_EXTERN const char *atp_backend_plugin_path(const atp_backend *b);
ATP_EXTERN uint64_t atp_backend_caps(const atp_backend *backend);

/**
 * Check that the backend is usable without creating a sandbox.  Fills
 * @p res (status and message) and returns 0 when usable.
 */
ATP_EXTERN int atp_backend_check(atp_backend *backend, atp_result *res);

/** Names of the capability bits, for display: "sessions", "stdin", ... */
ATP_EXTERN const char *atp_cap_name(uint64_t bit);

/** What the plugin scan found about one file. */
typedef struct atp_plugin_info {
    uint32_t struct_size;
    const char *name;        /**< plugin name (from the file name) */
    const char *path;        /**< file */
    int loaded;              /**< 1: usable, 0: refused */
    const char *refusal;     /**< why it was refused, or NULL */
    const char *version;     /**< the plugin's own version */
    const char *description;
    unsigned abi_major, abi_minor; /**< what the plugin was built for */
    uint64_t caps;
    const atp_option *options;
    int shadowed;            /**< 1: an earlier directory has this name */
    /* ---- 0.2 ---- */
    /**
     * The backend whose `path =` names the file, for a file found that
     * way rather than on the search path; NULL otherwise.  Present when
     * ATP_HAS_FIELD(info, atp_plugin_info, backend).
     */
    const char *backend;
} atp_plugin_info;

typedef void (*atp_plugin_info_fn)(const atp_plugin_info *info,
                                   void *payload);

/**
 * Load every plugin on the search path and report each, usable or not,
 * in search order; then the files that the `path =` of [backend.NAME]
 * sections name and the search path did not list (with info->backend
 * set).
 */
ATP_EXTERN int atp_plugins_scan(atp_config *cfg, atp_plugin_info_fn fn,
                                void *payload);

/** The directories searched for plugins, ':'-separated (for messages). */
ATP_EXTERN const char *atp_plugin_search_path(atp_config *cfg);

/* ---------------------------------------------------------------------- */
/* Sessions                                                                 */

typedef struct atp_session atp_session;

/** How to create a session. */
typedef struct atp_session_opts {
    uint32_t struct_size;
    const char *workdir;         /**< host directory; NULL: current dir */
    const char *const *env;      /**< "KEY=VALUE", NULL-terminated, over
                                    [env] and the backend's */
    const char *const *mounts;   /**< "HOST:DEST" or "HOST:DEST:rw" */
    double timeout_s;            /**< per-command budget; 0: [atp] */
    atp_event_fn on_event;       /**< lifecycle events, or NULL */
    void *event_payload;
} atp_session_opts;

#define ATP_SESSION_OPTS_INIT {sizeof(atp_session_opts), NULL, NULL, NULL, \
                               0.0, NULL, NULL}

/** Set up @p opts (@p size bytes) as ATP_SESSION_OPTS_INIT does. */
ATP_EXTERN int atp_session_opts_init(atp_session_opts *opts, size_t size);

/**
 * Create a session handle over a backend.  No sandbox exists yet;
 * atp_session_cancel() may already be used on it.
 */
ATP_EXTERN int atp_session_create(atp_session **out, atp_backend *backend,
                                  const atp_session_opts *opts);

/**
 * Provision the sandbox (and push the workdir for isolated backends).  On
 * failure whatever was created is gone, @p res says why (status,
 * message) and the return value is the ATP_E_* code.
 */
ATP_EXTERN int atp_session_start(atp_session *s, atp_result *res);

/** Flags of atp_line_fn. */
#define ATP_LINE_PARTIAL 0x1u /**< a piece of a longer line; more follows */
#define ATP_LINE_NO_EOL 0x2u  /**< the last line; it had no newline */

/**
 * Receives output a line at a time as it arrives, newline stripped.  A
 * line longer than [atp] max_line arrives in pieces, each but the last
 * flagged ATP_LINE_PARTIAL.  @p line is not NUL-terminated and may contain
 * NUL bytes; it is borrowed for the call.
 */
typedef void (*atp_line_fn)(int stream, const char *line, size_t len,
                            unsigned flags, void *payload);

/** How to run one command. */
/** Flags of atp_exec_opts (from 0.2). */
#define ATP_EXEC_OPT_STDIN 0x1u /**< the command reads stdin_fd */

typedef struct atp_exec_opts {
    uint32_t struct_size;
    double timeout_s;          /**< budget; 0: the session's */
    const char *const *env;    /**< "KEY=VALUE" over the session's */
    atp_line_fn on_line;       /**< output lines, or NULL */
    void *line_payload;
    /**
     * The command's stdin is read from this descriptor until EOF when it
     * is above 0, or when flags has ATP_EXEC_OPT_STDIN (which descriptor
     * 0 needs: a zeroed struct holds 0 and means no stdin).  Otherwise
     * the command's stdin is empty (/dev/null).  (A struct of the 0.1
     * size, which has no flags, forwards any descriptor >= 0.)
     */
    int stdin_fd;
    /**
     * Called after the lines of each chunk of output were delivered, when
     * no more output is pending: a consumer that buffers flushes here.
     * Gets line_payload.  May be NULL.
     */
    void (*on_flush)(void *payload);
    /* ---- 0.2 ---- */
    uint32_t flags;            /**< ATP_EXEC_OPT_* */
} atp_exec_opts;

#define ATP_EXEC_OPTS_INIT {sizeof(atp_exec_opts), 0.0, NULL, NULL, NULL, -1, \
                            NULL, 0}

/** Set up @p opts (@p size bytes) as ATP_EXEC_OPTS_INIT does. */
ATP_EXTERN int atp_exec_opts_init(atp_exec_opts *opts, size_t size);

/**
 * Run @p command (POSIX sh syntax) in the session's workdir.  Output is
 * delivered through opts->on_line as it arrives; @p res gets exit code or
 * signal, status class, duration and truncation flags.  Returns 0 when the
 * command ran to an end (ok, exit, timeout), else the ATP_E_* code with
 * @p res describing the failure.  Output already delivered stays
 * delivered on every path.
 */
ATP_EXTERN int atp_session_exec(atp_session *s, const char *command,
                                const atp_exec_opts *opts, atp_result *res);

/** Push the host workdir into the sandbox (no-op on a shared fs). */
ATP_EXTERN int atp_session_sync_in(atp_session *s, atp_result *res);

/** Pull the sandbox workdir back to the host (no-op on a shared fs). */
ATP_EXTERN int atp_session_sync_out(atp_session *s, atp_result *res);

/**
 * Tear the sandbox down.  Idempotent; works after any failure and after
 * cancellation.  @p res may be NULL.
 */
ATP_EXTERN int atp_session_close(atp_session *s, atp_result *res);

/** Close if needed, then free. */
ATP_EXTERN void atp_session_free(atp_session *s);

/**
 * Cancel what the session is doing and everything it would do next, except
 * closing.  Safe from any thread and from a signal handler.
 */
ATP_EXTERN void atp_session_cancel(atp_session *s);

/** The session's run id (labels its resources). */
ATP_EXTERN const char *atp_session_run_id(const atp_session *s);

/**
 * One-shot run on a session just created: start, exec, pull back
 * (isolated backends, unless @p pull is 0), close.  @p res describes the
 * command, or the first failure.  The session is closed on every path;
 * free it afterwards.  Another thread or a signal handler can cancel it
 * with atp_session_cancel() meanwhile.
 */
ATP_EXTERN int atp_session_run(atp_session *s, const char *command,
                               const atp_exec_opts *eopts, int pull,
                               atp_result *res);

/** atp_session_create() + atp_session_run() + atp_session_free(). */
ATP_EXTERN int atp_run(atp_backend *backend, const atp_session_opts *sopts,
                       const char *command, const atp_exec_opts *eopts,
                       int pull, atp_result *res);

/* ---------------------------------------------------------------------- */
/* Batches: thousands of attempts                                           */

/**
 * One attempt of a batch: a command over its own directory.  Strings are
 * copied when the batch takes the attempt.
 */
typedef struct atp_attempt {
    uint32_t struct_size;
    const char *id;              /**< unique in the batch; results carry it */
    const char *command;         /**< POSIX sh text */
    const char *workdir;         /**< run over this directory, or NULL */
    const char *template_dir;    /**< run over a fresh copy of this one
                                    (never seen by another attempt) */
    const char *const *env;      /**< "KEY=VALUE" over the configured */
    double timeout_s;            /**< budget; 0: the configured */
    const char *stdin_path;      /**< file read as stdin, or NULL */
    const char *backend;         /**< backend instance; NULL: the batch's */
} atp_attempt;

#define ATP_ATTEMPT_INIT {sizeof(atp_attempt), NULL, NULL, NULL, NULL, \
                          NULL, 0.0, NULL, NULL}

/**
 * The source of a batch's attempts: fill @p a (its strings need live
 * only until the call returns) and return 1, or return 0 when there are
 * no more, or a negative ATP_E_* to stop the batch.
 */
typedef int (*atp_attempt_fn)(atp_attempt *a, void *payload);

/** A finished attempt, as atp_batch() delivers it. */
typedef struct atp_batch_result {
    uint32_t struct_size;
    const char *id;
    const char *backend;      /**< the backend instance it ran on */
    unsigned attempt;         /**< tries it took (retries + 1) */
    const atp_result *result; /**< how it ended, and what it cost */
    const char *stdout_text;  /**< its output, up to inline_limit bytes
                                 (NULL when inline_limit is 0) */
    size_t stdout_len;
    const char *stderr_text;
    size_t stderr_len;
    const char *out_dir;      /**< OUT_DIR/ID, where its output and its
                                 workdir (a template's copy) are kept; or
                                 NULL */
    const char *run_id;       /**< of the sandbox of its last try */
    double elapsed_s;         /**< from its first try's start to its end,
                                 every try and the template's copy */
} atp_batch_result;

typedef void (*atp_batch_result_fn)(const atp_batch_result *r,
                                    void *payload);

/** Counts of a running batch, for a progress line. */
typedef struct atp_batch_progress {
    uint32_t struct_size;
    uint64_t done;            /**< results delivered */
    uint64_t running;
    uint64_t failed;          /**< results not ok */
    uint64_t retried;         /**< tries run again */
    double elapsed_s;
    double rate;              /**< results per second so far */
} atp_batch_progress;

typedef void (*atp_batch_progress_fn)(const atp_batch_progress *p,
                                      void *payload);

typedef struct atp_batch_opts {
    uint32_t struct_size;
    const char *backend;      /**< NULL: [atp] backend */
    unsigned jobs;            /**< attempts at once; 0: 4 */
    double rate;              /**< sandbox creations per second over all
                                 backends; 0: [backend.NAME] create_rate,
                                 else no limit */
    int retries;              /**< tries again after an infra failure;
                                 -1: none, 0: 2.  A provider's refusal
                                 for rate or quota is not a try: such an
                                 attempt waits and goes again */
    const char *out_dir;      /**< keep OUT_DIR/ID/{stdout,stderr,wd} */
    size_t inline_limit;      /**< output bytes kept in each result */
    atp_batch_result_fn on_result;   /**< from the thread of atp_batch() */
    atp_batch_progress_fn on_progress; /**< twice a second, same thread */
    void *payload;
} atp_batch_opts;

#define ATP_BATCH_OPTS_INIT {sizeof(atp_batch_opts), NULL, 0, 0.0, 0, \
                             NULL, 0, NULL, NULL, NULL}

typedef struct atp_batch atp_batch;

/**
 * Create a batch over @p cfg.  Nothing runs until atp_batch_run().
 */
ATP_EXTERN int atp_batch_new(atp_batch **out, atp_config *cfg,
                             const atp_batch_opts *opts);

/**
 * Run the attempts @p next gives until there are no more (or the batch
 * is cancelled): at most jobs at once and as many per backend as its
 * max_concurrent allows, sandbox creations paced by the rate (halved
 * when a provider says it is over a rate or quota, raised again step by
 * step), an attempt tried again up to retries times when it failed for
 * an infrastructure reason (never for its own exit or timeout).  Every
 * result and progress callback comes from the calling thread.  Returns
 * 0, ATP_E_CANCELLED when cancelled (every running attempt then ends as
 * cancelled, its sandbox torn down), or the error @p next returned.
 */
ATP_EXTERN int atp_batch_run(atp_batch *b, atp_attempt_fn next,
                             void *payload);

/** Stop a running batch: safe from any thread and a signal handler. */
ATP_EXTERN void atp_batch_cancel(atp_batch *b);

ATP_EXTERN void atp_batch_free(atp_batch *b);

/* ---------------------------------------------------------------------- */
/* Leak ledger                                                              */

/** One leftover resource found by atp_gc(). */
typedef struct atp_gc_item {
    uint32_t struct_size;
    const char *backend;
    const char *kind;
    const char *id;
    const char *run_id;
    long owner_pid;
    int removed;            /**< 1: reaped now */
    const char *error;      /**< why it could not be reaped, or NULL */
} atp_gc_item;

typedef void (*atp_gc_fn)(const atp_gc_item *item, void *payload);

/**
 * Reap resources recorded in the ledger whose owner process is gone (all
 * of them with @p all).  With @p dry_run only report.
 */
ATP_EXTERN int atp_gc(atp_config *cfg, int all, int dry_run, atp_gc_fn fn,
                      void *payload);

/**
 * Published sizes of the client structs (x86-64 / LP64).  A struct of any
 * of these sizes is accepted; the test suite asserts them.
 */
#define ATP_RESULT_SIZE_0_1 1072u
#define ATP_RESULT_SIZE_0_2 1312u
#define ATP_RESULT_SIZE_0_3 1320u
#define ATP_SESSION_OPTS_SIZE_0_1 56u
#define ATP_EXEC_OPTS_SIZE_0_1 56u
#define ATP_EXEC_OPTS_SIZE_0_2 64u
#define ATP_EVENT_SIZE_0_1 32u
#define ATP_GC_ITEM_SIZE_0_1 64u
#define ATP_PLUGIN_INFO_SIZE_0_1 88u
#define ATP_PLUGIN_INFO_SIZE_0_2 96u
#define ATP_ATTEMPT_SIZE_0_2 72u
#define ATP_BATCH_OPTS_SIZE_0_2 80u

/** Helpers to build shell command text. */

/**
 * Quote @p argv for POSIX sh and join with spaces.  Returns a malloc'd
 * string or NULL when out of memory.
 */
ATP_EXTERN char *atp_shell_join(const char *const *argv);

/**
 * The command text that runs @p argv as the sandbox's process itself
 * (`exec ARGV...`, quoted), so that its exit status, or the signal that
 * ended it, is reported as its own and not through a shell in between.
 * An argv[0] the shell runs itself (cd, exit, export, an assignment...)
 * is left to the shell.  Returns a malloc'd string, or NULL when out of
 * memory.
 */
ATP_EXTERN char *atp_shell_exec_join(const char *const *argv);

#ifdef __cplusplus
}
#endif
#endif /* ATP_ATP_H */
