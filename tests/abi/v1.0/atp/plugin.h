/* The plugin ABI 1.0 header as published; frozen for the compatibility
 * fixtures.  Do not update it. */
/*
 * atp/plugin.h - the atp backend plugin ABI, version 1.
 *
 * This is the only header a backend plugin needs.  A plugin is a shared
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
 * Errors
 *   Every plugin function returns 0 or a negative ATP_E_* code.  The detail
 *   goes through host->set_error(); unknown negative codes are treated as
 *   ATP_E_BACKEND.
 */
#ifndef ATP_PLUGIN_H
#define ATP_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** ABI major version; part of the entry symbol's name. */
#define ATP_PLUGIN_ABI_MAJOR 1
/** ABI minor version this header describes. */
#define ATP_PLUGIN_ABI_MINOR 0
/** Oldest plugin minor the core still loads. */
#define ATP_PLUGIN_ABI_MINOR_FLOOR 0

/** Name of the entry symbol for ABI major 1. */
#define ATP_PLUGIN_ENTRY_SYMBOL "atp_plugin_entry_v1"

#if defined(__GNUC__) || defined(__clang__)
#define ATP_PLUGIN_EXPORT __attribute__((visibility("default")))
#define ATP_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define ATP_PLUGIN_EXPORT
#define ATP_PRINTF(f, a)
#endif

/**
 * True when struct @p s (whose struct_size says how big the sender's
 * version was) contains field @p f of type @p T.
 */
#define ATP_HAS_FIELD(s, T, f)                                               \
    ((s) != NULL &&                                                          \
     offsetof(T, f) + sizeof(((T *)0)->f) <= (size_t)(s)->struct_size)

/** Error codes: every ABI function returns 0 or one of these. */
enum {
    ATP_OK = 0,
    ATP_E_INVAL = -1,        /**< bad argument or request */
    ATP_E_NOMEM = -2,        /**< out of memory */
    ATP_E_IO = -3,           /**< local I/O failure */
    ATP_E_TIMEOUT = -4,      /**< a backend operation stalled (infra) */
    ATP_E_CANCELLED = -5,    /**< cancelled by the caller */
    ATP_E_UNSUPPORTED = -6,  /**< the backend lacks a capability */
    ATP_E_BACKEND = -7,      /**< infrastructure failure (daemon, API) */
    ATP_E_PROVISION = -8,    /**< the sandbox could not be created */
    ATP_E_IMAGE = -9,        /**< the image is missing or unusable */
    ATP_E_CREDENTIALS = -10, /**< no usable credentials */
    ATP_E_TRANSFER = -11,    /**< workdir push or pull failed */
    ATP_E_SANDBOX_DEAD = -12,/**< the sandbox died under us */
    ATP_E_CONFIG = -13,      /**< invalid configuration */
    ATP_E_NOTFOUND = -14,    /**< no such object */
    ATP_E_ABI = -15          /**< ABI negotiation failed */
};

/**
 * Capability bits a plugin advertises.  The core checks a request against
 * them before any sandbox is created.  Unknown bits are ignored.
 */
#define ATP_CAP_SHARED_FS (UINT64_C(1) << 0)   /**< workdir shared with host */
#define ATP_CAP_ISOLATED_FS (UINT64_C(1) << 1) /**< workdir pushed/pulled */
#define ATP_CAP_STREAMING (UINT64_C(1) << 2)   /**< output as it happens */
#define ATP_CAP_STDIN (UINT64_C(1) << 3)       /**< exec can take stdin */
#define ATP_CAP_SESSIONS (UINT64_C(1) << 4)    /**< many execs, one sandbox */
#define ATP_CAP_MOUNTS (UINT64_C(1) << 5)      /**< extra host mounts */
#define ATP_CAP_CPU_LIMIT (UINT64_C(1) << 6)   /**< cpu limit enforced */
#define ATP_CAP_MEMORY_LIMIT (UINT64_C(1) << 7) /**< memory limit enforced */
#define ATP_CAP_NETWORK_POLICY (UINT64_C(1) << 8) /**< network can be cut */
#define ATP_CAP_GC (UINT64_C(1) << 9)          /**< reap() of leaked sandboxes */
/**
 * The plugin itself kills the command's whole process tree when
 * atp_exec_spec.timeout_ms runs out, so the core need not wrap the command
 * in an in-sandbox timeout(1).
 */
#define ATP_CAP_KILLS_TREE (UINT64_C(1) << 10)

/** Output streams. */
enum { ATP_STDOUT = 1, ATP_STDERR = 2 };

/** Log levels for host->log(). */
enum { ATP_LOG_ERROR = 0, ATP_LOG_WARN = 1, ATP_LOG_INFO = 2, ATP_LOG_DEBUG = 3 };

/** Opaque per-operation context the core passes to every plugin call. */
typedef struct atp_call atp_call;

/** Types of a plugin's configuration keys; the core parses them strictly. */
typedef enum atp_option_type {
    ATP_OPT_STRING = 1, /**< any text */
    ATP_OPT_INT = 2,    /**< decimal integer, read with config_int() */
    ATP_OPT_BOOL = 3,   /**< true/false/yes/no/on/off/1/0, config_int() */
    ATP_OPT_DURATION = 4, /**< "30", "1.5s", "500ms", "5m", "2h";
                             config_int() gives milliseconds */
    ATP_OPT_SIZE = 5,   /**< "4096", "64KiB", "4MiB", "1GiB", "10MB";
                           config_int() gives bytes */
    ATP_OPT_NUMBER = 6, /**< decimal number such as "2" or "0.5";
                           config_string() gives the text */
    ATP_OPT_CHOICE = 7  /**< one of the '|'-separated words in choices */
} atp_option_type;

/**
 * One configuration key of a plugin's [backend.NAME] section.  A plugin
 * publishes an array of these terminated by an entry whose name is NULL.
 * The element layout is frozen for ABI major 1.
 */
typedef struct atp_option {
    const char *name;     /**< key name, e.g. "image" */
    int type;             /**< an atp_option_type */
    const char *defval;   /**< default as text, or NULL for none */
    const char *choices;  /**< for ATP_OPT_CHOICE: "none|bridge|host" */
    const char *help;     /**< one line for `atp-run plugins` */
} atp_option;

/** A field of an event: key plus one typed value. */
typedef enum atp_field_type {
    ATP_FIELD_STR = 1,
    ATP_FIELD_INT = 2,
    ATP_FIELD_DOUBLE = 3,
    ATP_FIELD_BOOL = 4
} atp_field_type;

typedef struct atp_field {
    const char *key;
    int type;      /**< an atp_field_type */
    const char *s; /**< ATP_FIELD_STR */
    int64_t i;     /**< ATP_FIELD_INT and ATP_FIELD_BOOL */
    double d;      /**< ATP_FIELD_DOUBLE */
} atp_field;

/** One extra path made visible in the sandbox. */
typedef struct atp_mount {
    const char *host; /**< absolute host path */
    const char *dest; /**< absolute path in the sandbox */
    int writable;     /**< 0: read-only */
} atp_mount;

/**
 * What session_open() must create.  Passed by the core, borrowed.
 */
typedef struct atp_session_spec {
    uint32_t struct_size;
    uint32_t flags;              /**< reserved, 0 */
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
} atp_session_spec;

/** Flags of atp_exec_spec. */
#define ATP_EXEC_STDIN 0x1u /**< feed stdin from host->input() */

/**
 * One command to run in a session.  The core has already wrapped it: argv
 * is complete and runs as given.
 */
typedef struct atp_exec_spec {
    uint32_t struct_size;
    uint32_t flags;          /**< ATP_EXEC_* */
    const char *const *argv; /**< NULL-terminated; argv[0] is a path */
    const char *const *env;  /**< per-call "KEY=VALUE" over the session's */
    const char *cwd;         /**< NULL: the session's workdir */
    int64_t timeout_ms;      /**< the command's budget, 0 for none.  A
                                plugin with ATP_CAP_KILLS_TREE enforces it;
                                the core has already wrapped the command in
                                timeout(1) otherwise */
    int64_t grace_ms;        /**< SIGTERM to SIGKILL grace */
    int64_t drain_ms;        /**< after the command exits, how long to
                                wait for descendants still holding its
                                output open before killing them */
} atp_exec_spec;

/** Flags of atp_exec_outcome. */
#define ATP_OUTCOME_TIMED_OUT 0x1u /**< killed because the budget ran out */
#define ATP_OUTCOME_CANCELLED 0x2u /**< killed because of cancellation */

/** How a command ended.  Filled by exec(). */
typedef struct atp_exec_outcome {
    uint32_t struct_size;
    uint32_t flags;    /**< ATP_OUTCOME_* */
    int32_t exit_code; /**< 0..255, or -1 when killed by a signal */
    int32_t signal;    /**< terminating signal number, or 0 */
} atp_exec_outcome;

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

    /** The run id of the session (label resources with it). */
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
     * failed.  On any return no process of the command is left running.
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
     * whose owner is gone.  ATP_E_NOTFOUND counts as removed.
     */
    int (*reap)(atp_call *call, void *backend, const char *kind,
                const char *id);

    /** Optional.  Called once before the process exits. */
    void (*fini)(void);
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

/**
 * Non-zero when the bytes of @p s past @p known are all zero: a receiver
 * that understands only the first @p known bytes of a struct may then
 * safely ignore the rest.
 */
static inline int atp_struct_tail_is_zero(const void *s, size_t size,
                                          size_t known)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i;
    for (i = known; i < size; i++)
        if (p[i] != 0)
            return 0;
    return 1;
}

#ifdef __cplusplus
}
#endif
#endif /* ATP_PLUGIN_H */
