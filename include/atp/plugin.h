/*
 * atp/plugin.h - the atp backend plugin ABI, version 1.3.
 *
 * This is the only header a backend plugin needs (it includes
 * atp/common.h, shared with the client API).  A plugin is a shared
 * object named "atp-NAME.so" that exports exactly one symbol,
 * atp_plugin_entry_v1(), and does not link against libatp: every core
 * service reaches it through the host API table passed to the entry point.
 *
 * Versioning
 *   - The major version is part of the entry symbol's name.  A core built
 *     for major N looks up atp_plugin_entry_vN only.
 *   - Minor versions are negotiated both ways: the host table carries the
 *     core's minor, the ops table the plugin's.  Either side may be newer.
 *     The core refuses a plugin only when its minor is below
 *     ATP_PLUGIN_ABI_MINOR_FLOOR.
 *   - Every struct that crosses the boundary starts with uint32_t
 *     struct_size and grows only at its end.  A field is present when
 *     ATP_HAS_FIELD() says so; a zero field means "old behaviour".
 *
 * Memory
 *   - Whatever the core passes to a plugin (strings, specs, arrays) is
 *     borrowed for the duration of that call.  Copy what you keep.
 *   - Whatever a plugin hands to the core through the host table (output
 *     bytes, events, error text, resource ids) is copied before the host
 *     function returns.
 *   - Objects a plugin creates (backend and session handles) are freed only
 *     by the plugin, through backend_free() and session_free().
 *
 * Threading
 *   - atp_plugin_entry_v1() and fini() are called once each, from one
 *     thread, while no other plugin call is running.  Process-wide library
 *     initialisation (curl_global_init) belongs there.
 *   - Calls on one session are serialised by the core.  Different sessions
 *     may be driven from different threads at the same time.
 *   - Cancellation arrives asynchronously: host->cancel_fd() becomes
 *     readable and host->cancelled() returns non-zero.  A plugin blocked in
 *     a call must watch one of them and return ATP_E_CANCELLED promptly.
 *   - Every host function may be called from any thread.
 *
 * Errors and logs
 *   Every plugin function returns 0 or a negative ATP_E_* code.  The detail
 *   goes through host->set_error(); unknown negative codes are treated as
 *   ATP_E_BACKEND.  host->log() lines reach the embedder's log callback
 *   with the plugin's name as their origin (atp-run prints them as
 *   "atp: NAME: LEVEL: message"); a plugin never writes to stdout or
 *   stderr itself.
 *
 * Processes, signals and descriptors
 *   A plugin installs no signal handler and changes no process-wide
 *   disposition or mask; the core's host functions never raise SIGPIPE
 *   in the process.  Descriptors a plugin opens are O_CLOEXEC: host
 *   processes started by the core get stdin, stdout and stderr and
 *   nothing else, but a plugin's own fork would leak them.  A backend
 *   of host processes uses host->spawn() rather than forking.
 *
 * Names
 *   The plugin's name is the NAME of its file atp-NAME.so; ops.name is
 *   for display.  A [backend.X] section picks a plugin with `plugin =`
 *   (default X) and may load it from a file with `path =` (a file, not a
 *   directory; relative to the configuration file).
 */
#ifndef ATP_PLUGIN_H
#define ATP_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** ABI major version; part of the entry symbol's name. */
#define ATP_PLUGIN_ABI_MAJOR 1
/** ABI minor version this header describes. */
#define ATP_PLUGIN_ABI_MINOR 3
/** Oldest plugin minor the core still loads. */
#define ATP_PLUGIN_ABI_MINOR_FLOOR 0

/** Name of the entry symbol for ABI major 1. */
#define ATP_PLUGIN_ENTRY_SYMBOL "atp_plugin_entry_v1"

#if defined(__GNUC__) || defined(__clang__)
#define ATP_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define ATP_PLUGIN_EXPORT
#endif

/** Opaque per-operation context the core passes to every plugin call. */
typedef struct atp_call atp_call;

/*
 * Option tables (atp_option), event fields (atp_field), capability bits
 * (ATP_CAP_*), error codes (ATP_E_*), output streams and log levels are in
 * atp/common.h.  Option values: config_int() gives INT, BOOL (0/1),
 * DURATION (milliseconds) and SIZE (bytes); config_double() NUMBER and
 * DURATION (seconds); config_choice() the index of a CHOICE;
 * config_string() the text of any key.
 */

/** One extra path made visible in the sandbox. */
typedef struct atp_mount {
    const char *host; /**< absolute host path */
    const char *dest; /**< absolute path in the sandbox */
    int writable;     /**< 0: read-only */
} atp_mount;

/**
 * What session_open() must create.  Passed by the core, borrowed.
 */
/** Flags of atp_session_spec (ABI 1.1; older cores pass 0). */
#define ATP_SESSION_ONE_SHOT 0x1u /**< exactly one exec follows, then close:
                                     a backend may fold sandbox creation
                                     into that exec */

typedef struct atp_session_spec {
    uint32_t struct_size;
    uint32_t flags;              /**< ATP_SESSION_*; unknown bits are hints
                                    a plugin may ignore */
    const char *run_id;          /**< label every resource with it */
    const char *workdir;         /**< absolute host path of the workdir */
    const char *sandbox_workdir; /**< where an isolated sandbox keeps it,
                                    e.g. "/workspace/wd" */
    const char *image;           /**< [image] name, or NULL */
    const char *const *env;      /**< "KEY=VALUE", NULL-terminated; merged
                                    [env] < backend < session; values are
                                    secrets: never put them on a command
                                    line or in a log */
    const atp_mount *mounts;     /**< extra mounts, n_mounts long */
    size_t n_mounts;
    int64_t timeout_ms;          /**< default per-command budget */
    int64_t ttl_ms;              /**< provider-side time to live to set on
                                    the sandbox so it dies on its own */
    /* ---- ABI 1.3 ---------------------------------------------------- */
    /**
     * The group this one-shot session belongs to (a handle group_open()
     * returned), or NULL.  Its one exec may be submitted together with
     * the other members' (see group_open).
     */
    void *group;
} atp_session_spec;

/**
 * A group of attempts the core hands over together (ABI 1.3): what
 * group_open() gets.  Borrowed.
 */
typedef struct atp_group_spec {
    uint32_t struct_size;
    uint32_t flags;          /**< none defined yet: 0 */
    const char *group_id;    /**< label the group's resources with it */
    uint32_t n_members;      /**< how many one-shot sessions will name the
                                group in their session spec */
    uint32_t max_running;    /**< how many of its commands may run at
                                once, 0: no limit */
} atp_group_spec;

/** Flags of atp_exec_spec. */
#define ATP_EXEC_STDIN 0x1u /**< the command reads stdin from the caller:
                               host->input() / stdin_peek(); without it
                               the command's stdin is empty (EOF) */

/**
 * One command to run in a session.  The core has already wrapped it: argv
 * is complete and runs as given.
 *
 * Who ends a command, and when (ABI 1.2).  The core owns the schedule;
 * the plugin owns the mechanism.
 *   - A plugin with ATP_CAP_KILLS_TREE calls host->exec_due() at every
 *     turn of its wait loop and does what it says: ATP_DUE_TERM and
 *     ATP_DUE_KILL mean "deliver SIGTERM / SIGKILL to every process of the
 *     command now", ATP_DUE_STOP "stop waiting and return what you have".
 *     The core derives TERM (budget spent, or cancelled), KILL (grace_ms
 *     after the TERM's delivery, see ATP_EXEC_SIGNALLING; after drain_ms
 *     once the first process has exited while
 *     others still hold its output) and STOP (the host backstop, or a
 *     command that does not end after its KILL), and classifies the
 *     result from what it asked for.  Plugins built for 1.0/1.1 that
 *     claim KILLS_TREE enforce timeout_ms, grace_ms and drain_ms below
 *     themselves, as they always did.
 *   - Without ATP_CAP_KILLS_TREE the core wraps the command in
 *     `timeout -k GRACE SECS` inside the sandbox; cancellation and the
 *     host backstop still come through exec_due(), and a plugin that
 *     cannot signal the command then ends the sandbox.
 *   - With ATP_CAP_GROUP_SIGNALS the core's wrapper announces the
 *     command's process group (host->exec_pgid()) and
 *     host->group_kill_argv() gives a command that signals it.
 *   - A plugin that runs host processes uses host->spawn(), which does
 *     all of this itself.
 */
typedef struct atp_exec_spec {
    uint32_t struct_size;
    uint32_t flags;          /**< ATP_EXEC_* */
    const char *const *argv; /**< NULL-terminated; argv[0] is a path */
    const char *const *env;  /**< per-call "KEY=VALUE" over the session's
                                (session_spec.env); see envp */
    const char *cwd;         /**< where the command runs: NULL for the
                                session's workdir (the host path for a
                                shared filesystem, sandbox_workdir for an
                                isolated one); else a path in the sandbox
                                (on the host for host processes) */
    int64_t timeout_ms;      /**< the command's budget, 0 for none */
    int64_t grace_ms;        /**< SIGTERM to SIGKILL, > 0 */
    int64_t drain_ms;        /**< after the command's first process exits,
                                how long others may hold its output open
                                before they are killed; 0: kill at once */
    /* ---- ABI 1.2 ---------------------------------------------------- */
    /**
     * The command's whole environment, "KEY=VALUE", NULL-terminated:
     * [env] < [backend.NAME] env.* < session < this call, merged and
     * validated by the core.  A 1.2 plugin passes exactly this (plus, for
     * host processes, the host's own environment when its configuration
     * says so) and ignores env and session_spec.env.  Values are secrets.
     */
    const char *const *envp;
    /** Unique id of this exec ("RUN_ID.N"): name side files after it. */
    const char *exec_id;
} atp_exec_spec;

/** Flags of atp_exec_outcome. */
#define ATP_OUTCOME_TIMED_OUT 0x1u /**< killed because the budget ran out */
#define ATP_OUTCOME_CANCELLED 0x2u /**< killed because of cancellation */
/**
 * ABI 1.2: the backend reports a death by signal N as exit code 128+N
 * and cannot tell the two apart (Docker's ExitCode); the core reads an
 * exit code 129..192 as that signal, so that results look the same on
 * every backend.
 */
#define ATP_OUTCOME_SIGNAL_AS_EXIT 0x4u
/**
 * ABI 1.2: cpu_ns and max_rss_bytes hold what the command used (each -1
 * where that one is unknown).  A backend sets them only when it measured
 * the command alone (its processes, or a sandbox that ran nothing else).
 */
#define ATP_OUTCOME_USAGE 0x8u
/**
 * ABI 1.3: waiting stopped (ATP_DUE_STOP) before the transport said the
 * command's stdout / stderr had ended: the bytes after those delivered
 * may be missing.  The core reports the stream truncated and says why.
 */
#define ATP_OUTCOME_STDOUT_CUT 0x10u
#define ATP_OUTCOME_STDERR_CUT 0x20u

/** How a command ended.  Filled by exec(). */
typedef struct atp_exec_outcome {
    uint32_t struct_size;
    uint32_t flags;    /**< ATP_OUTCOME_* */
    int32_t exit_code; /**< 0..255, or -1 when killed by a signal */
    int32_t signal;    /**< terminating signal number, or 0 */
    /* ---- ABI 1.2 (present when struct_size reaches them) ---- */
    int64_t cpu_ns;        /**< user + system cpu time, ATP_OUTCOME_USAGE */
    int64_t max_rss_bytes; /**< peak resident memory, ATP_OUTCOME_USAGE */
} atp_exec_outcome;

/** What host->exec_due() asks of a running command (ABI 1.2). */
enum {
    ATP_DUE_NONE = 0, /**< nothing now */
    ATP_DUE_TERM = 1, /**< send SIGTERM to every process of the command */
    ATP_DUE_KILL = 2, /**< send SIGKILL to every process of the command */
    ATP_DUE_STOP = 3  /**< stop waiting for it; return what you have */
};

/** State a plugin reports to host->exec_due() (ABI 1.2). */
#define ATP_EXEC_EXITED 0x1u /**< the command's first process has exited
                                (its output may still be open) */
#define ATP_EXEC_ENDED 0x2u  /**< ...and its output ended: the last call;
                                a KILL then is for what it left behind
                                (background jobs) and needs no wait */
/**
 * ABI 1.3: the TERM the schedule asked for is still on its way (a request
 * not yet answered, a group not yet announced).  The grace before the
 * KILL counts from the TERM's delivery: from the first call after the
 * one that said ATP_DUE_TERM, or, while a plugin passes this flag, from
 * the first call without it.  A core before 1.3 ignores it.
 */
#define ATP_EXEC_SIGNALLING 0x4u

/** What host->stdin_to_fd() waits for next (ABI 1.2). */
#define ATP_STDIN_WAIT_INPUT 0x1u /**< host->input_fd() readable */
#define ATP_STDIN_WAIT_FD 0x2u    /**< the descriptor writable */

/** Flags of atp_spawn_spec (ABI 1.2). */
#define ATP_SPAWN_STDIN 0x1u    /**< stdin from the exec's input; without
                                   it /dev/null */
#define ATP_SPAWN_HOST_ENV 0x2u /**< the host process's own environment
                                   under envp */
/**
 * A helper that cleans up (cancels a job, signals a command from outside):
 * neither the call's cancellation nor its deadline stops it, only its own
 * timeout_ms, which must be set.  Without it a helper run while its call
 * is being cancelled would be killed at once, before it could deliver the
 * cancel.  A core that predates the flag ignores it.
 */
#define ATP_SPAWN_CLEANUP 0x4u

/**
 * A host process for host->spawn() (ABI 1.2): what a backend that runs
 * commands on the host (directly, or under a launcher such as bwrap,
 * nsjail, firejail, `podman run` or Slurm's srun) asks the core to run.
 */
typedef struct atp_spawn_spec {
    uint32_t struct_size;
    uint32_t flags;           /**< ATP_SPAWN_* */
    const char *const *argv;  /**< argv[0] is a path, or a name searched
                                 in the PATH of the process */
    const char *const *envp;  /**< NULL: the exec's envp (exec calls) or
                                 none (other calls) */
    const char *cwd;          /**< host directory; NULL: the current one */
    int64_t timeout_ms;       /**< 0 within exec(): the exec's budget and
                                 kill schedule; 0 elsewhere: only the
                                 call's deadline.  Else its own budget */
    /**
     * Receives the process's output; NULL: host->output() (the exec's
     * output).  Returns 0, or non-zero to stop the process.
     */
    int (*on_output)(void *ctx, int stream, const void *buf, size_t len);
    void *ctx;
} atp_spawn_spec;

/**
 * Services the core offers every plugin.  Append-only: fields are never
 * reordered or removed, new ones come at the end and are present when
 * ATP_HAS_FIELD() says so.
 */
typedef struct atp_host_api {
    uint32_t struct_size;
    uint16_t abi_major;
    uint16_t abi_minor;

    /**
     * Record the detail of a failure of the current call.  Returns @p code
     * so that a plugin can `return host->set_error(call, ATP_E_X, ...)`.
     * Secret values are redacted by the core.
     */
    int (*set_error)(atp_call *call, int code, const char *fmt, ...)
        ATP_PRINTF(3, 4);

    /** Diagnostic log line (shown with -v / ATP_LOG). */
    void (*log)(atp_call *call, int level, const char *fmt, ...)
        ATP_PRINTF(3, 4);

    /**
     * Report a lifecycle event (e.g. "image_pull" progress).  @p type and
     * the fields are copied.
     */
    void (*event)(atp_call *call, const char *type, const atp_field *fields,
                  size_t n_fields);

    /**
     * Raw value of key @p key of this backend's section, or its default;
     * NULL when neither exists.  The core has already validated it against
     * the plugin's option table.  Valid until the backend is freed.
     */
    const char *(*config_string)(atp_call *call, const char *key);

    /**
     * Value of an INT, BOOL, DURATION (ms) or SIZE (bytes) key.  Returns 0,
     * or ATP_E_NOTFOUND when the key is unset and has no default.
     */
    int (*config_int)(atp_call *call, const char *key, int64_t *value_out);

    /**
     * Hand output bytes of the running command to the core, which frames
     * lines.  @p stream is ATP_STDOUT or ATP_STDERR.  Returns 0, or
     * ATP_E_CANCELLED when the consumer wants no more.  May block
     * (back-pressure).
     */
    int (*output)(atp_call *call, int stream, const void *buf, size_t len);

    /**
     * Read up to @p len bytes of stdin for the command (ATP_EXEC_STDIN).
     * Returns the count, 0 at end of input, or a negative ATP_E_*.
     */
    long (*input)(atp_call *call, void *buf, size_t len);

    /**
     * A descriptor that polls readable when input() has bytes or end of
     * input for it, so that a plugin can wait for stdin in its own event
     * loop; -1 when the command has no stdin.
     */
    int (*input_fd)(atp_call *call);

    /** A descriptor that becomes readable when the call is cancelled. */
    int (*cancel_fd)(atp_call *call);

    /** Non-zero once the call is cancelled. */
    int (*cancelled)(atp_call *call);

    /**
     * The host deadline of this call on the CLOCK_MONOTONIC clock, in
     * nanoseconds, or 0 for none.  Past it the plugin gives up and
     * returns ATP_E_TIMEOUT.
     */
    int64_t (*deadline_ns)(atp_call *call);

    /** CLOCK_MONOTONIC now, in nanoseconds. */
    int64_t (*now_ns)(void);

    /** The run id of the session (label resources with it); during
     * reap(), the run id of the lease being reaped. */
    const char *(*run_id)(atp_call *call);

    /**
     * Record, in the core's leak ledger, a resource the plugin has just
     * created (call it the moment the provider returns the id), or forget
     * one it has removed.  @p kind names it ("container", "sandbox").
     */
    int (*resource_created)(atp_call *call, const char *kind,
                            const char *id);
    int (*resource_removed)(atp_call *call, const char *id);

    /** Mark @p value as secret so that logs and errors redact it. */
    void (*add_secret)(atp_call *call, const char *value);

    /* ---- ABI 1.1 ---------------------------------------------------- */

    /**
     * Write a tar stream of host directory @p dir (names relative to it;
     * [atp] transfer_exclude applied; modes, symlinks, empty directories
     * and mtimes kept) to @p write, as it is produced.  @p write returns 0,
     * or non-zero to stop.  Returns 0, or ATP_E_TRANSFER /
     * ATP_E_CANCELLED with set_error() done.
     */
    int (*tar_create)(atp_call *call, const char *dir,
                      int (*write)(void *ctx, const void *buf, size_t len),
                      void *ctx);

    /**
     * Read a tar stream from @p read (which returns a byte count, 0 at
     * the end, negative on failure) and extract it safely under host
     * directory @p dir: no absolute names, no "..", nothing written
     * through a symlink, no link leading outside, no devices or fifos,
     * set-id bits dropped, size and entry limits enforced.  A hostile
     * stream fails with ATP_E_TRANSFER naming the entry.
     */
    int (*tar_extract)(atp_call *call, const char *dir,
                       long (*read)(void *ctx, void *buf, size_t len),
                       void *ctx);

    /* ---- ABI 1.2 ---------------------------------------------------- */

    /**
     * Typed values of this backend's keys, parsed once when the backend
     * was opened: a BOOL as 0/1; a NUMBER, or a DURATION in seconds, as a
     * double.  Return 0, ATP_E_NOTFOUND when the key is unset without a
     * default, ATP_E_INVAL when it is not of a type that converts.
     */
    int (*config_bool)(atp_call *call, const char *key, int *value_out);
    int (*config_double)(atp_call *call, const char *key,
                         double *value_out);
    /**
     * The value of a CHOICE key as the index of its word in the option's
     * choices ("none|bridge|host": "bridge" is 1), or ATP_E_NOTFOUND.
     */
    int (*config_choice)(atp_call *call, const char *key);

    /**
     * The kill schedule of the running exec (see atp_exec_spec): what to
     * do now, an ATP_DUE_*, each action once, in order.  @p state is
     * ATP_EXEC_* (what the plugin knows of the command).  *@p wait_ms gets
     * how long until the schedule may say something else (-1: not before
     * an event); a plugin's poll waits no longer.  Outside exec()
     * it returns ATP_DUE_NONE.
     */
    int (*exec_due)(atp_call *call, unsigned state, int64_t *wait_ms);

    /**
     * ATP_CAP_GROUP_SIGNALS: the process group id of the running command
     * inside the sandbox, as the core's wrapper announced it, or 0 until
     * it has.
     */
    long (*exec_pgid)(atp_call *call);

    /**
     * ATP_CAP_GROUP_SIGNALS: the argv of a POSIX sh command that delivers
     * signal @p sig (SIGTERM, SIGKILL) to the running command's process
     * group inside the sandbox, and to its processes that left the group
     * (found by the ATP_EXEC_ID variable of envp in /proc); run it as a
     * second command, as a user allowed to signal the first.  NULL while
     * the group is unknown.  Borrowed until the exec returns.
     */
    const char *const *(*group_kill_argv)(atp_call *call, int sig);

    /**
     * The command's stdin (ATP_EXEC_STDIN), for transports that send it in
     * pieces: the bytes ready now, without blocking, in *@p data (borrowed
     * until the next stdin call) and their count as the result; 0 with
     * *@p eof set at the end of the input, 0 with it clear when nothing is
     * ready yet (wait for host->input_fd()).  Bytes stay ready until
     * stdin_consume() says they were sent.  Negative on failure.
     */
    long (*stdin_peek)(atp_call *call, const void **data, int *eof);
    void (*stdin_consume)(atp_call *call, size_t n);

    /**
     * The command's stdin, for transports that are a descriptor: move what
     * is ready to the non-blocking descriptor @p fd (without dying of
     * SIGPIPE).  Returns what to wait for before the next call
     * (ATP_STDIN_WAIT_*), 0 once done; sets *@p done when all input was
     * delivered or the reader went away (shut the descriptor's write side
     * then).  Negative on failure.
     */
    int (*stdin_to_fd)(atp_call *call, int fd, int *done);

    /**
     * Run a host process to its end, the core's way: its own process
     * group; stdin per ATP_SPAWN_STDIN; stdout and stderr to the spec's
     * callback or the exec's output, framed by the core; every other
     * descriptor closed; signal dispositions and mask reset; the kill
     * schedule of the exec (or the spec's timeout) delivered to the whole
     * group and to descendants that left it; output still buffered when
     * it ends delivered; reaped without a process-wide SIGCHLD handler.
     * Returns 0 with @p out filled when the process ran to an end (also
     * when killed, with the outcome flags saying why), or a negative code
     * with set_error() done when it could not run.  This is everything a
     * backend of host processes needs: no fork, poll or reap of its own.
     */
    int (*spawn)(atp_call *call, const atp_spawn_spec *spec,
                 atp_exec_outcome *out);

    /**
     * Say which immutable image this backend's sandboxes run: @p id the
     * provider's id of the image the configured name resolved to (a
     * Docker image Id "sha256:...", a Modal "im-..."), @p digest a
     * registry digest reference ("name@sha256:...") or NULL.  Call it
     * from backend_open() (once per backend, before any sandbox) or from
     * session_open(); the core reports it with every result and refuses
     * to run where [image] require_pinned is set and no id was given.
     */
    int (*image_pinned)(atp_call *call, const char *id, const char *digest);

    /* ---- ABI 1.3 ---------------------------------------------------- */

    /**
     * The running exec waits in a scheduler's queue (@p queued non-zero)
     * or its command has just begun (zero).  Time in the queue is not the
     * command's: the budget (timeout_ms) and the host backstop count from
     * the moment it begins, and the result reports the wait apart
     * (queue_s).  While queued, exec_due() still says TERM on cancel; the
     * plugin bounds the wait itself (a queue limit of its own).
     */
    void (*exec_queued)(atp_call *call, int queued);
} atp_host_api;

/**
 * The plugin's table of functions and facts.  Returned by the entry point;
 * must stay valid until the process exits.
 */
typedef struct atp_plugin_ops {
    uint32_t struct_size;
    uint16_t abi_major; /**< ATP_PLUGIN_ABI_MAJOR the plugin was built for */
    uint16_t abi_minor; /**< ATP_PLUGIN_ABI_MINOR the plugin was built for */
    const char *name;        /**< short name, e.g. "docker" */
    const char *version;     /**< the plugin's own version */
    const char *description; /**< one line */
    uint64_t caps;           /**< ATP_CAP_* */
    const atp_option *options; /**< keys of [backend.NAME], NULL-terminated;
                                  NULL when the plugin takes none */

    /**
     * Mandatory.  Prepare a backend instance from its configuration
     * section (read with config_string/config_int).  No sandbox is created
     * here.  On success stores a plugin-owned handle in @p backend_out.
     */
    int (*backend_open)(atp_call *call, void **backend_out);

    /** Mandatory.  Free a backend handle.  Never fails. */
    void (*backend_free)(void *backend);

    /**
     * Mandatory.  Create a sandbox for @p spec and store a plugin-owned
     * session handle in @p session_out.  Whatever it created before a
     * failure it removes before it returns.  Honours the call's deadline
     * and cancellation.
     */
    int (*session_open)(atp_call *call, void *backend,
                        const atp_session_spec *spec, void **session_out);

    /**
     * Mandatory.  Run one command.  Bytes go to host->output() as they
     * arrive; stdin comes from host->input() with ATP_EXEC_STDIN and is
     * empty otherwise.  Returns 0 with @p out filled when the command ran
     * to an end (including being killed on timeout_ms or on cancel, with
     * the matching outcome flag), or a negative code when the backend
     * failed.  When the command was killed (timeout, cancel, deadline) no
     * process of it is left running on return; descendants that outlive a
     * normal exit by more than drain_ms should be killed too.
     */
    int (*exec)(atp_call *call, void *session, const atp_exec_spec *spec,
                atp_exec_outcome *out);

    /**
     * Mandatory.  Tear the sandbox down.  Idempotent; also called after a
     * failed exec and after cancellation, so it must not give up because
     * the call is cancelled.  Returns 0 when nothing is left running.
     */
    int (*session_close)(atp_call *call, void *session);

    /** Mandatory.  Free a session handle (after session_close). */
    void (*session_free)(void *session);

    /**
     * Optional.  Check that the backend can be used (daemon reachable,
     * credentials present, image known) without creating a sandbox.
     */
    int (*check)(atp_call *call, void *backend);

    /**
     * Optional (ATP_CAP_GC).  Remove a resource the ledger recorded and
     * whose owner is gone.  ATP_E_NOTFOUND counts as removed.  @kind
     * "run" asks for everything labelled with run id @id.  A lease is a
     * file and names what to remove: remove only what carries the
     * plugin's own label with the lease's run id (host->run_id() during
     * reap), never an id on the lease's word alone.
     */
    int (*reap)(atp_call *call, void *backend, const char *kind,
                const char *id);

    /** Optional.  Called once before the process exits. */
    void (*fini)(void);

    /* ---- ABI 1.1 ---------------------------------------------------- */

    /**
     * Optional.  The capabilities of this backend instance when they
     * depend on its configuration (a local backend in copy mode is
     * isolated); when absent, caps above apply.
     */
    uint64_t (*backend_caps)(void *backend);

    /**
     * Optional, isolated backends.  Store the tar stream read from
     * host->input() at @p dest in the sandbox (an absolute path, or NULL
     * for the session's workdir), creating it if needed.  When present the
     * core pushes with it instead of running `tar -x` in the sandbox.
     */
    int (*push_archive)(atp_call *call, void *session, const char *dest);

    /**
     * Optional, isolated backends.  Write a tar stream of the session's
     * whole workdir, names relative to it, to host->output(ATP_STDOUT).
     * When present the core uses it for full pulls instead of running
     * `tar -c` in the sandbox.
     */
    int (*pull_archive)(atp_call *call, void *session);

    /* ---- ABI 1.3 ---------------------------------------------------- */

    /**
     * Optional, with group_free.  A backend that can submit many commands
     * as one unit (a Slurm job array) gets a group of one-shot attempts
     * the core has ready: @p spec says how many will come and how many
     * may run at once.  Each member then goes through the usual path --
     * session_open() with spec->group set, one exec(), session_close() --
     * on a thread of its own, at the same time as the others; the plugin
     * may hold an exec back until the members have arrived (or a short
     * while has passed without a new one) and submit them together.  Each
     * exec still streams its own output, follows its own kill schedule
     * (a member cancelled or out of budget ends alone), records its own
     * leases and returns its own outcome.  A member may never arrive (its
     * session failed to open): the plugin must not wait for it forever.
     * The core stays the scheduler: the group's size and max_running are
     * its decisions, which the backend enforces (Slurm's %N throttle).
     */
    int (*group_open)(atp_call *call, void *backend,
                      const atp_group_spec *spec, void **group_out);

    /**
     * Free a group once every member's session is freed.  Never fails.
     */
    void (*group_free)(void *group);
} atp_plugin_ops;

/**
 * Published sizes of the ABI 1.0 structs (x86-64 / LP64), in bytes.  They
 * never change: a struct that grows gets a new constant (..._V1_1) and
 * keeps this one.  The test suite asserts them against sizeof.
 */
#define ATP_HOST_API_SIZE_V1_0 136u
#define ATP_PLUGIN_OPS_SIZE_V1_0 120u
#define ATP_SESSION_SPEC_SIZE_V1_0 80u
#define ATP_EXEC_SPEC_SIZE_V1_0 56u
#define ATP_EXEC_OUTCOME_SIZE_V1_0 16u

/**
 * Sizes of the array element types (x86-64 / LP64).  Their layout is
 * frozen for ABI major 1: arrays of them are walked with sizeof, so they
 * can never grow.
 */
#define ATP_OPTION_SIZE_V1_0 40u
#define ATP_FIELD_SIZE_V1_0 40u
#define ATP_MOUNT_SIZE_V1_0 24u

/** Sizes of the tables that grew in ABI 1.1. */
#define ATP_HOST_API_SIZE_V1_1 152u
#define ATP_PLUGIN_OPS_SIZE_V1_1 144u

/** Sizes of what grew in ABI 1.2. */
#define ATP_HOST_API_SIZE_V1_2 240u
#define ATP_EXEC_SPEC_SIZE_V1_2 72u
#define ATP_SPAWN_SPEC_SIZE_V1_2 56u
#define ATP_EXEC_OUTCOME_SIZE_V1_2 32u

/** Sizes of what grew in ABI 1.3. */
#define ATP_PLUGIN_OPS_SIZE_V1_3 160u
#define ATP_HOST_API_SIZE_V1_3 248u
#define ATP_SESSION_SPEC_SIZE_V1_3 88u
#define ATP_GROUP_SPEC_SIZE_V1_3 24u

/**
 * The entry point every plugin exports.  Called once, right after the
 * core has loaded the file.  The plugin keeps @p host for later calls,
 * checks host->abi_major, may use any host function present for
 * host->abi_minor, and stores its ops table in @p ops_out.  A non-zero
 * return refuses the load; set_error() says why.
 */
typedef int (*atp_plugin_entry_fn)(const atp_host_api *host, atp_call *call,
                                   const atp_plugin_ops **ops_out);

/** The one symbol a plugin defines (with ATP_PLUGIN_EXPORT). */
ATP_PLUGIN_EXPORT int atp_plugin_entry_v1(const atp_host_api *host,
                                          atp_call *call,
                                          const atp_plugin_ops **ops_out);

#ifdef __cplusplus
}
#endif
#endif /* ATP_PLUGIN_H */
