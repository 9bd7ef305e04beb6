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
 *   - Functions return 0 or a negative ATP_E_* code (see atp/plugin.h);
 *     atp_last_error() gives the message of the calling thread's last
 *     failure.
 *   - Structs passed in start with struct_size; initialise them with the
 *     matching *_INIT macro so that fields added later are zero.
 *   - Strings passed in are borrowed for the call.
 *   - One session is used from one thread at a time, except
 *     atp_session_cancel(), which any thread or a signal handler may call.
 */
#ifndef ATP_ATP_H
#define ATP_ATP_H

#include <stddef.h>
#include <stdint.h>

#include "plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define ATP_EXTERN __attribute__((visibility("default")))
#else
#define ATP_EXTERN
#endif

/** libatp's version as text, e.g. "0.1.0". */
ATP_EXTERN const char *atp_version(void);

/** Message of the calling thread's most recent failure ("" if none). */
ATP_EXTERN const char *atp_last_error(void);

/** Short text for an ATP_E_* code. */
ATP_EXTERN const char *atp_strerror(int code);

/** How an operation ended. */
typedef enum atp_status {
    ATP_STATUS_OK = 0,             /**< the command exited 0 */
    ATP_STATUS_EXIT = 1,           /**< the command exited non-zero */
    ATP_STATUS_TIMEOUT = 2,        /**< the command spent its budget */
    ATP_STATUS_CANCELLED = 3,      /**< cancelled by the caller */
    ATP_STATUS_INFRA_ERROR = 4,    /**< the backend failed */
    ATP_STATUS_INFRA_TIMEOUT = 5,  /**< a backend operation stalled */
    ATP_STATUS_SANDBOX_DEAD = 6,   /**< the sandbox died mid-run */
    ATP_STATUS_TRANSFER_ERROR = 7, /**< workdir push or pull failed */
    ATP_STATUS_PROVISION_ERROR = 8, /**< the sandbox never came up */
    ATP_STATUS_IMAGE_UNAVAILABLE = 9, /**< the image is missing */
    ATP_STATUS_MISSING_CREDENTIALS = 10, /**< no credentials found */
    ATP_STATUS_UNSUPPORTED = 11,   /**< a capability the backend lacks */
    ATP_STATUS_CONFIG_ERROR = 12   /**< bad configuration or request */
} atp_status;

/** Lower-case name of a status ("ok", "timeout", ...). */
ATP_EXTERN const char *atp_status_name(atp_status status);

/** The status class an ATP_E_* code maps to. */
ATP_EXTERN atp_status atp_status_from_error(int code);

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
    char message[1024];     /**< detail when status is not ok/exit */
} atp_result;

#define ATP_RESULT_INIT {sizeof(atp_result), ATP_STATUS_OK, -1, 0, 0.0, \
                         0, 0, 0, 0, {0}}

/* ---------------------------------------------------------------------- */
/* Configuration                                                            */

typedef struct atp_config atp_config;

/**
 * Load the configuration.  With @p path NULL the search order is
 * $ATP_CONFIG, ./atp.ini, $XDG_CONFIG_HOME/atp/atp.ini (or
 * ~/.config/atp/atp.ini), /etc/atp/atp.ini; when none exists the built-in
 * defaults select the local backend.  Unknown sections and keys, and
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
} atp_plugin_info;

typedef void (*atp_plugin_info_fn)(const atp_plugin_info *info,
                                   void *payload);

/**
 * Load every plugin on the search path and report each, usable or not,
 * in search order.
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
typedef struct atp_exec_opts {
    uint32_t struct_size;
    double timeout_s;          /**< budget; 0: the session's */
    const char *const *env;    /**< "KEY=VALUE" over the session's */
    atp_line_fn on_line;       /**< output lines, or NULL */
    void *line_payload;
    int stdin_fd;              /**< read the command's stdin from this fd
                                  until EOF; -1: /dev/null */
    /**
     * Called after the lines of each chunk of output were delivered, when
     * no more output is pending: a consumer that buffers flushes here.
     * Gets line_payload.  May be NULL.
     */
    void (*on_flush)(void *payload);
} atp_exec_opts;

#define ATP_EXEC_OPTS_INIT {sizeof(atp_exec_opts), 0.0, NULL, NULL, NULL, -1, \
                            NULL}

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

/** Helpers to build shell command text. */

/**
 * Quote @p argv for POSIX sh and join with spaces.  Returns a malloc'd
 * string or NULL when out of memory.
 */
ATP_EXTERN char *atp_shell_join(const char *const *argv);

#ifdef __cplusplus
}
#endif
#endif /* ATP_ATP_H */
