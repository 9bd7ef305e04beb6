/*
 * atp/common.h - what the client API (atp/atp.h) and the plugin ABI
 * (atp/plugin.h) share: versions, error codes, status classes, capability
 * bits, output streams, log levels, event fields and option tables.
 *
 * Both headers include this one; neither includes the other.  Error codes
 * and status classes are each generated from one list (ATP_ERRNO_MAP,
 * ATP_STATUS_MAP), which also gives their names, their messages, the
 * status class of every error and atp-run's exit status of every class:
 * a new code is one line here.
 */
#ifndef ATP_COMMON_H
#define ATP_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The version of atp these headers belong to. */
#define ATP_VERSION_MAJOR 0
#define ATP_VERSION_MINOR 2
#define ATP_VERSION_PATCH 0
/** As one number, for #if: 0x000200 for 0.2.0. */
#define ATP_VERSION_NUM                                                     \
    ((ATP_VERSION_MAJOR << 16) | (ATP_VERSION_MINOR << 8) | ATP_VERSION_PATCH)

#if defined(__GNUC__) || defined(__clang__)
#define ATP_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define ATP_PRINTF(f, a)
#endif

/**
 * True when struct @p s (whose struct_size says how big the sender's
 * version was) contains field @p f of type @p T.
 */
#define ATP_HAS_FIELD(s, T, f)                                               \
    ((s) != NULL &&                                                          \
     offsetof(T, f) + sizeof(((T *)0)->f) <= (size_t)(s)->struct_size)

/**
 * Every error code: XX(NAME, value, message, status class).  Functions
 * return 0 (ATP_OK) or one of the negative values; the class is the
 * status a result gets when an operation fails with the code.
 */
#define ATP_ERRNO_MAP(XX)                                                    \
    XX(INVAL, -1, "invalid argument", CONFIG_ERROR)                          \
    XX(NOMEM, -2, "out of memory", INFRA_ERROR)                              \
    XX(IO, -3, "input/output error", INFRA_ERROR)                            \
    XX(TIMEOUT, -4, "backend operation timed out", INFRA_TIMEOUT)            \
    XX(CANCELLED, -5, "cancelled", CANCELLED)                                \
    XX(UNSUPPORTED, -6, "not supported by the backend", UNSUPPORTED)         \
    XX(BACKEND, -7, "backend failure", INFRA_ERROR)                          \
    XX(PROVISION, -8, "sandbox could not be provisioned", PROVISION_ERROR)   \
    XX(IMAGE, -9, "image unavailable", IMAGE_UNAVAILABLE)                    \
    XX(CREDENTIALS, -10, "missing credentials", MISSING_CREDENTIALS)         \
    XX(TRANSFER, -11, "workdir transfer failed", TRANSFER_ERROR)             \
    XX(SANDBOX_DEAD, -12, "sandbox died", SANDBOX_DEAD)                      \
    XX(CONFIG, -13, "configuration error", CONFIG_ERROR)                     \
    XX(NOTFOUND, -14, "not found", CONFIG_ERROR)                             \
    XX(ABI, -15, "plugin ABI mismatch", CONFIG_ERROR)                        \
    XX(RATE, -16, "the provider refused: over a rate or quota limit",       \
       INFRA_ERROR)

/** Error codes: every function returns 0 or one of these. */
enum {
    ATP_OK = 0,
#define ATP__XX(name, value, msg, status) ATP_E_##name = value,
    ATP_ERRNO_MAP(ATP__XX)
#undef ATP__XX
};

/**
 * Every status class: XX(NAME, value, name, atp-run exit status).  The
 * exit status -1 stands for the command's own (128+N after signal N);
 * atp-run exits 128+N for CANCELLED when signal N stopped it.
 */
#define ATP_STATUS_MAP(XX)                                                   \
    XX(OK, 0, "ok", 0)                                                       \
    XX(EXIT, 1, "exit", -1)                                                  \
    XX(TIMEOUT, 2, "timeout", 124)                                           \
    XX(CANCELLED, 3, "cancelled", 130)                                       \
    XX(INFRA_ERROR, 4, "infra_error", 125)                                   \
    XX(INFRA_TIMEOUT, 5, "infra_timeout", 125)                               \
    XX(SANDBOX_DEAD, 6, "sandbox_dead", 125)                                 \
    XX(TRANSFER_ERROR, 7, "transfer_error", 125)                             \
    XX(PROVISION_ERROR, 8, "provision_error", 125)                           \
    XX(IMAGE_UNAVAILABLE, 9, "image_unavailable", 125)                       \
    XX(MISSING_CREDENTIALS, 10, "missing_credentials", 125)                  \
    XX(UNSUPPORTED, 11, "unsupported", 2)                                    \
    XX(CONFIG_ERROR, 12, "config_error", 2)

/** How an operation ended. */
typedef enum atp_status {
#define ATP__XX(name, value, text, exit) ATP_STATUS_##name = value,
    ATP_STATUS_MAP(ATP__XX)
#undef ATP__XX
    ATP_STATUS__COUNT
} atp_status;

/**
 * Capability bits a plugin advertises and atp_backend_caps() reports.
 * The core checks a request against them before any sandbox is created.
 * Unknown bits are ignored.
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
 * The plugin delivers the core's kill schedule to the command's whole
 * process tree itself (see plugin.h), so the core does not wrap the
 * command in an in-sandbox timeout(1).
 */
#define ATP_CAP_KILLS_TREE (UINT64_C(1) << 10)
/**
 * ABI 1.2: the plugin signals the command's process group in the sandbox
 * by the group id that the core's wrapper reports (host->exec_pgid()),
 * typically with host->group_kill_argv() run as a second command.  The
 * core's wrapper then announces the group id on stdout, and the core
 * removes that announcement before anything reaches the caller.
 */
#define ATP_CAP_GROUP_SIGNALS (UINT64_C(1) << 11)
/**
 * ABI 1.3: the plugin has no way of its own to learn what a command used
 * (no wait4(), no cgroup of the command's own): the core's wrapper
 * measures it in the sandbox, the command's CPU time and peak memory as
 * wait4() reports them for its process tree, and reports them on stderr,
 * where the core takes the report off before the caller sees it.  The
 * plugin must deliver the command's stderr as ATP_STDERR, unmerged.
 */
#define ATP_CAP_WRAPPER_USAGE (UINT64_C(1) << 12)

/** Output streams. */
enum { ATP_STDOUT = 1, ATP_STDERR = 2 };

/** Log levels. */
enum { ATP_LOG_ERROR = 0, ATP_LOG_WARN = 1, ATP_LOG_INFO = 2, ATP_LOG_DEBUG = 3 };

/** A field of an event: key plus one typed value. */
typedef enum atp_field_type {
    ATP_FIELD_STR = 1,
    ATP_FIELD_INT = 2,
    ATP_FIELD_DOUBLE = 3,
    ATP_FIELD_BOOL = 4
} atp_field_type;

/** The element layout is frozen for ABI major 1 (arrays are walked). */
typedef struct atp_field {
    const char *key;
    int type;      /**< an atp_field_type */
    const char *s; /**< ATP_FIELD_STR */
    int64_t i;     /**< ATP_FIELD_INT and ATP_FIELD_BOOL */
    double d;      /**< ATP_FIELD_DOUBLE */
} atp_field;

/** Types of configuration keys; the core parses them strictly. */
typedef enum atp_option_type {
    ATP_OPT_STRING = 1, /**< any text */
    ATP_OPT_INT = 2,    /**< decimal integer */
    ATP_OPT_BOOL = 3,   /**< true/false/yes/no/on/off/1/0 */
    ATP_OPT_DURATION = 4, /**< "30", "1.5s", "500ms", "5m", "2h" (ms) */
    ATP_OPT_SIZE = 5,   /**< "4096", "64KiB", "4MiB", "1GiB", "10MB" */
    ATP_OPT_NUMBER = 6, /**< decimal number such as "2" or "0.5" */
    ATP_OPT_CHOICE = 7  /**< one of the '|'-separated words in choices */
} atp_option_type;

/**
 * One configuration key of a [backend.NAME] section.  An option table is
 * an array of these ending with an entry whose name is NULL.  The element
 * layout is frozen for ABI major 1.
 */
typedef struct atp_option {
    const char *name;     /**< key name, e.g. "image" */
    int type;             /**< an atp_option_type */
    const char *defval;   /**< default as text, or NULL for none */
    const char *choices;  /**< for ATP_OPT_CHOICE: "none|bridge|host" */
    const char *help;     /**< one line for `atp-run plugins` */
} atp_option;

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
#endif /* ATP_COMMON_H */
