/*
 * core/internal.h - declarations shared by the files of libatp.
 *
 * Nothing here is public: names are atp__*, and the symbols are hidden by
 * -fvisibility=hidden.
 */
#ifndef ATP_INTERNAL_H
#define ATP_INTERNAL_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "atp/atp.h"
#include "atp/plugin.h"

#define ATP__ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* ---- error.c ---------------------------------------------------------- */

/*
 * Set the calling thread's last error message (printf format) and return
 * @code, so that `return atp__error(ATP_E_X, "...")` reads naturally.
 */
int atp__error(int code, const char *fmt, ...) ATP_PRINTF(2, 3);
int atp__verror(int code, const char *fmt, va_list ap) ATP_PRINTF(2, 0);

/* Copy a message into the calling thread's last error (no formatting). */
void atp__error_set_text(const char *msg);

/* Monotonic clock in nanoseconds. */
int64_t atp__now_ns(void);

/* ---- buf.c: the growable buffer ---------------------------------------- */

/*
 * A growable byte buffer.  p is NULL until the first append, then holds
 * len bytes followed by a NUL (so text can be used as a C string); the
 * capacity doubles, never past max + 1 bytes.  Zeroed and then
 * atp__buf_init()ed, or ATP__BUF_INIT.
 */
typedef struct atp__buf {
    char *p;
    size_t len;
    size_t cap;
    size_t max;        /* most bytes it may hold */
} atp__buf;

#define ATP__BUF_INIT {NULL, 0, 0, (size_t)-2}
#define ATP__BUF_FIRST 64 /* bytes allocated at the first append */
#define ATP__BUF_FULL 1   /* returned when an append would pass max */

/* Start an empty buffer holding at most @max bytes (0: no limit). */
void atp__buf_init(atp__buf *b, size_t max);
/*
 * Make room for @more bytes beyond len (and the NUL).  0; ATP__BUF_FULL
 * when len + more would pass max (the buffer is unchanged); ATP_E_NOMEM
 * when memory or size_t runs out.
 */
int atp__buf_reserve(atp__buf *b, size_t more);
/*
 * The capacity to grow @cap to for @need bytes under @max: doubled from
 * ATP__BUF_FIRST, at least @need, at most max + 1 and PTRDIFF_MAX, never
 * wrapped around; 0 when @need is over those bounds.
 */
size_t atp__buf_next_cap(size_t cap, size_t need, size_t max);
/* Append @n bytes of @data (may hold NULs); returns as atp__buf_reserve. */
int atp__buf_append(atp__buf *b, const void *data, size_t n);
/* Append the C string @s. */
int atp__buf_puts(atp__buf *b, const char *s);
/*
 * Hand the contents over: returns the NUL-terminated bytes (an empty
 * string when nothing was appended; NULL only when that cannot be
 * allocated), which the caller frees, and leaves the buffer empty.
 */
char *atp__buf_detach(atp__buf *b);
/* Empty the buffer, keeping its memory for what comes next. */
void atp__buf_clear(atp__buf *b);
/* Free the contents; the buffer is empty and may be used again. */
void atp__buf_release(atp__buf *b);

/* ---- value.c: strict parsing of configuration values ------------------ */

int atp__parse_bool(const char *s, int *out);
int atp__parse_int(const char *s, int64_t *out);
int atp__parse_number(const char *s, double *out);
/* "30", "1.5s", "500ms", "5m", "2h" into milliseconds: 0, or at least 1
 * (a smaller positive duration would round to 0, "none"); else
 * ATP_E_INVAL. */
int atp__parse_duration_ms(const char *s, int64_t *out);
int atp__parse_size(const char *s, int64_t *out);
/* The index of @s among the '|'-separated @choices, or ATP_E_INVAL. */
int atp__parse_choice(const char *s, const char *choices);

/*
 * Check @value against an option type.  On failure writes a message that
 * says what is expected into @why and returns ATP_E_CONFIG.
 */
int atp__check_value(int type, const char *choices, const char *value,
                     char *why, size_t whylen);

/*
 * The candidate nearest to @word by edit distance, or NULL when none is
 * close enough to be a likely typo.
 */
const char *atp__nearest(const char *word, const char *const *cands,
                         size_t n);

/* ---- config.c ---------------------------------------------------------- */

struct atp__kv {
    char *key;
    char *value;
    int line;
};

struct atp__section {
    char *name;
    int line;
    struct atp__kv *kv;
    size_t n_kv, cap_kv;
};

/* Settings of [atp] and [image], parsed and defaulted. */
struct atp__settings {
    const char *backend;
    int64_t timeout_ms;           /* per-command budget, 0 none */
    int64_t grace_ms;             /* SIGTERM -> SIGKILL */
    int64_t drain_ms;             /* wait for descendants after exit */
    int64_t exec_margin_ms;       /* host backstop beyond timeout+grace */
    int64_t provision_timeout_ms; /* session start */
    int64_t close_timeout_ms;     /* session close */
    int64_t ttl_ms;               /* provider-side lifetime of sessions */
    int64_t max_line;             /* longest line delivered whole */
    int64_t stdout_limit;         /* bytes delivered, 0 unlimited */
    int64_t stderr_limit;
    const char *spill_dir;        /* full output files, or NULL */
    const char *plugin_path;      /* extra plugin dirs, ':'-separated */
    const char *state_dir;        /* ledger; NULL: default */
    const char *image;            /* [image] name */
    const char *sandbox_workdir;  /* [image] workdir */
    const char *warm_cache;       /* [image] warm_cache, or NULL */
    const char *const *excludes;  /* transfer_exclude patterns */
    int compression;              /* ATP__COMPRESS_* */
    int64_t transfer_max_entries;
    int64_t transfer_max_bytes;
    int64_t transfer_timeout_ms;
    int subreaper;                /* become a child subreaper */
    int require_pinned;           /* [image] require_pinned */
    double price[3];              /* [price] cpu_core_s, mem_gib_s,
                                     sandbox_s; -1 where unset */
};

struct atp_config {
    char *path;            /* NULL for built-in defaults */
    struct atp__section *sec;
    size_t n_sec;
    struct atp__settings set;
    char *search_path;     /* cached atp_plugin_search_path() */
    char **excludes;       /* storage of set.excludes */
    atp_log_fn log_fn;     /* atp_config_set_log() */
    void *log_payload;
    int log_level;
};

struct atp__section *atp__config_section(const atp_config *cfg,
                                         const char *name);
const struct atp__kv *atp__section_get(const struct atp__section *sec,
                                       const char *key);

/*
 * Validate section [backend.NAME] against the plugin's option table.
 * Core-owned keys (plugin, path, env.*) are accepted.  Fails with
 * ATP_E_CONFIG naming file, line and the nearest valid key.
 */
int atp__config_check_backend(const atp_config *cfg,
                              const struct atp__section *sec,
                              const atp_option *opts);

/* The file name to use in messages. */
const char *atp__config_name(const atp_config *cfg);

/*
 * The option table of the core's keys of @section: "atp", "image", or
 * "backend" (the keys the core owns in every [backend.NAME]); NULL for
 * another name.  What atp-confdoc writes atp.ini(5) from.
 */
const atp_option *atp__config_keys(const char *section);

/*
 * @path as given in the configuration, relative to the directory of the
 * configuration file when it is not absolute.  Returns a malloc'd string,
 * or NULL when out of memory.
 */
char *atp__config_resolve(const atp_config *cfg, const char *path);

/* ---- loader.c --------------------------------------------------------- */

struct atp__plugin {
    char *name;
    char *path;
    void *dl;
    const atp_plugin_ops *ops;
    uint32_t ops_size;      /* ops->struct_size as published */
    unsigned abi_minor;
    struct atp__plugin *next;
};

/* True when the plugin's ops table contains (and sets) member m. */
#define ATP__OPS_HAS(p, m)                                                 \
    (offsetof(atp_plugin_ops, m) + sizeof((p)->ops->m) <= (p)->ops_size && \
     (p)->ops->m != NULL)

/*
 * Find and load the plugin called @name: @explicit_path first when given,
 * else the search path.  A plugin already loaded in this process is
 * reused.  Fails with ATP_E_NOTFOUND (nowhere on the path) or ATP_E_ABI
 * (refused), the message naming the file and the reason.
 */
int atp__plugin_get(atp_config *cfg, const char *name,
                    const char *explicit_path, struct atp__plugin **out);

/* Call every loaded plugin's fini() (at process exit). */
void atp__plugins_fini(void);

/* ---- host.c ----------------------------------------------------------- */

typedef struct atp__sink {
    /* Receives command output; returns 0 or ATP_E_CANCELLED. */
    int (*output)(void *ctx, int stream, const void *buf, size_t len);
    void *ctx;
    int stdin_fd;           /* -1: no stdin */
    /* Told of every chunk of stdin handed to the plugin, or NULL. */
    void (*progress)(void *ctx, size_t len);
} atp__sink;

struct atp_call {
    struct atp__plugin *plugin;
    struct atp_backend *backend;  /* NULL during load */
    struct atp_session *session;  /* NULL outside sessions */
    atp_config *cfg;              /* for logs; NULL when unknown */
    const char *run_id;           /* gc: the run id of the lease reaped */
    int64_t deadline_ns;          /* 0: none */
    int cancellable;              /* 0 for close: ignore cancellation */
    atp__sink *sink;              /* exec only */
    struct atp__exec *exec;       /* exec only: schedule, group, stdin */
    int err_code;
    char err[1024];
};

/* What the host functions of a call give the core's own code. */
int atp__call_error(atp_call *call, int code, const char *fmt, ...)
    ATP_PRINTF(3, 4);
int atp__call_output(atp_call *call, int stream, const void *buf,
                     size_t len);
int atp__call_cancel_fd(atp_call *call);
int atp__call_cancelled(atp_call *call);
int64_t atp__call_deadline(atp_call *call);
const char *atp__call_run_id(atp_call *call);
struct atp__exec *atp__call_exec(atp_call *call);
const char *const *atp__call_envp(atp_call *call);
int atp__call_subreaper(atp_call *call);

/* ---- log.c ------------------------------------------------------------ */

/*
 * Hand a diagnostic line to @cfg's log callback when @level is shown
 * ($ATP_LOG, else the level set with atp_config_set_log()).  @origin is
 * "core", a plugin name or "plugin-loader".  Nothing is written anywhere
 * else.
 */
void atp__log(const atp_config *cfg, int level, const char *origin,
              const char *fmt, ...) ATP_PRINTF(4, 5);
void atp__vlog(const atp_config *cfg, int level, const char *origin,
               const char *fmt, va_list ap) ATP_PRINTF(4, 0);
/* Would a line at @level reach the callback? */
int atp__log_on(const atp_config *cfg, int level);

/* ---- exec.c: the core's part of a running command ---------------------- */

/* The announcement of the core's wrapper on stdout: MARK PGID "\n". */
#define ATP__PGID_MARK "\036atp-pgid "
/* Every command's environment carries MARKER EXEC_ID, so that processes
 * that leave its group can still be found. */
#define ATP__MARKER "ATP_EXEC_ID="
/* The record that ends the wrapper's stdout, and a transfer script's. */
#define ATP__END_MARK "\036atp-end\n"

struct atp__exec_plan {
    int64_t timeout_ms;    /* budget, 0: none */
    int64_t grace_ms;      /* SIGTERM to SIGKILL */
    int64_t drain_ms;      /* after the first process's exit */
    int64_t backstop_ns;   /* absolute host deadline, 0: none */
    int enforce_budget;    /* the core sends TERM when the budget is spent */
    int announce_pgid;     /* the wrapper announces the group on stdout */
    int usage;             /* ...and reports what the command used on
                              stderr (atp__wrap_measured()) */
    int trailer;           /* the script ends stdout with the end record
                              (ATP__END_MARK), after output of any bytes:
                              a transfer's archive or listing */
    int stdin_fd;          /* the caller's stdin, -1: none */
    const char *exec_id;   /* "RUN_ID.N" */
};

struct atp__exec {
    struct atp__exec_plan plan;
    /* the kill schedule */
    int64_t start_ns, term_at, kill_at, drain_at, stop_at;
    int64_t queued_since;  /* waiting in a scheduler's queue since, or 0 */
    int64_t queue_ns;      /* time it waited there */
    int64_t exit_seen_at;  /* the transport said it exited, output to come */
    int exited, term_sent, kill_sent, stop_sent;
    int term_delivering;      /* the grace waits for the TERM's delivery */
    int timed_out, cancelled; /* why the core asked for a kill */
    int consumer_gone;        /* the output's consumer wants no more */
    /* the process group the wrapper announces */
    int sniffing;
    char sniff[48];
    size_t sniff_len;
    long pgid;
    /* the measuring wrapper's records, taken off stdout and stderr */
    char rec_held[2][64];  /* what may be the start of one, held back */
    size_t rec_len[2];
    int rec_seen[2];       /* stdout's end, stderr's usage report came */
    int usage_by_shell;    /* the status is a shell's: 128+N for signal N */
    /* the trailer: stdout's last bytes, held while they may be the record */
    char tail_held[16];
    size_t tail_len;
    int tail_is_end;       /* what is held is the whole record */
    int64_t usage_cpu_ns, usage_peak; /* each -1: not measured */
    char kill_pgid[24], kill_sig[8], kill_marker[80];
    const char *kill_argv[7];
    /* stdin */
    int stdin_fd;
    char *in_buf;
    size_t in_len, in_off;
    int in_eof;
    uint64_t in_total;
    void (*in_progress)(void *ctx, size_t len); /* told of what is read */
    void *in_progress_ctx;
    /* the merged environment of the command */
    const char *const *envp;
};

void atp__exec_init(struct atp__exec *x, const struct atp__exec_plan *p);
void atp__exec_release(struct atp__exec *x);
/* The schedule: what to do now (ATP_DUE_*); see host->exec_due(). */
/* host->exec_queued(): the budget and backstop wait with the command. */
void atp__exec_queued(struct atp__exec *x, atp_call *call, int queued);
int atp__exec_due(struct atp__exec *x, int cancelled, unsigned state,
                  int64_t *wait_ms);
/*
 * Take the wrapper's announcement off the front of stdout: advances *@buf
 * and *@len past what belongs to it.  Returns a count of bytes held back
 * in x->sniff that turned out to be output, to deliver before *@buf.
 */
size_t atp__exec_sniff(struct atp__exec *x, const char **buf, size_t *len);
/*
 * Output of stream @stream through @emit (@ctx's sink), with the
 * measuring wrapper's records taken off: the first "\036atp-end\n" of
 * stdout and the first "\036atp-usage CPU_NS PEAK_BYTES[ x]\n" of stderr,
 * wherever they are (each one write of the wrapper, but the transport
 * may split it), held back until each is known to be the record or not.
 * Returns @emit's first failure.  atp__exec_record_drop() drops what is
 * still held at the end (a record cut off with the stream);
 * atp__exec_usage_apply() puts the usage into @out.
 */
int atp__exec_record_filter(struct atp__exec *x, int stream, const char *buf,
                            size_t len,
                            int (*emit)(void *ctx, int stream,
                                        const void *buf, size_t len),
                            void *ctx);
void atp__exec_record_drop(struct atp__exec *x);
/*
 * Output of stream @stream through @emit, for a plan with a trailer: the
 * last bytes of stdout that may be the start of the end record, or the
 * whole of it, are held back, so that the record is taken off only where
 * the output ends, whatever the bytes before it (an archive may hold the
 * record's text).  x->tail_is_end says the output ends with it now.
 * What is held when the stream ends is dropped: the record, or a part of
 * it cut off with the stream.  Returns @emit's first failure.
 */
int atp__exec_trailer_filter(struct atp__exec *x, int stream,
                             const char *buf, size_t len,
                             int (*emit)(void *ctx, int stream,
                                         const void *buf, size_t len),
                             void *ctx);
void atp__exec_usage_apply(const struct atp__exec *x, atp_exec_outcome *out);
const char *const *atp__exec_kill_argv(struct atp__exec *x, int sig);
long atp__exec_stdin_peek(struct atp__exec *x, const void **data, int *eof);
void atp__exec_stdin_consume(struct atp__exec *x, size_t n);
void atp__exec_stdin_drop(struct atp__exec *x);
int atp__exec_stdin_to_fd(struct atp__exec *x, int fd, int *done);
/* write(2) that cannot raise SIGPIPE in the process. */
ssize_t atp__write_nosig(int fd, const void *buf, size_t len);

/* ---- spawn.c: host->spawn() -------------------------------------------- */

int atp__spawn(atp_call *call, const atp_spawn_spec *spec,
               atp_exec_outcome *out);

extern const atp_host_api atp__host_api;

/* Prepare a call context for one plugin operation. */
void atp__call_init(atp_call *call, struct atp__plugin *plugin,
                    struct atp_backend *backend, struct atp_session *session,
                    int64_t timeout_ms);

/*
 * The message for a failed plugin call with code @rc: what set_error()
 * recorded, or a generic text when the plugin said nothing.
 */
const char *atp__call_message(atp_call *call, int rc);

/* ---- direct.c: sh -c 'exec WORD...' without the shell ---------------- */

struct atp__direct {
    int use;                 /* 1: run file with argv and envp */
    char file[4096];         /* the program found on PATH */
    char *store;             /* the unquoted words */
    char **argv;
    const char **envp;       /* NULL: the environment as given */
    char *pwd;
};

/*
 * Plan to run @argv, when it is `/bin/sh -c 'exec WORD...'` that needs no
 * shell, straight from the program found on @envp's PATH, with @cwd
 * (NULL: the current directory) as the working directory.  Returns 1 and
 * fills @d when it can (release it after), else 0 and @d is unused.
 */
int atp__direct_plan(struct atp__direct *d, const char *const *argv,
                     const char *const *envp, const char *cwd);
void atp__direct_release(struct atp__direct *d);

/* ---- lines.c: line framing -------------------------------------------- */

typedef void (*atp__line_cb)(int stream, const char *line, size_t len,
                             unsigned flags, void *payload);

typedef struct atp__framer {
    int stream;
    atp__buf buf;      /* partial line, at most max bytes */
    size_t max;        /* longest piece delivered */
    atp__line_cb cb;
    void *payload;
} atp__framer;

void atp__framer_init(atp__framer *f, int stream, size_t max_line,
                      atp__line_cb cb, void *payload);
/* Frame @len bytes; calls cb for every complete line.  ATP_E_NOMEM. */
int atp__framer_feed(atp__framer *f, const char *data, size_t len);
/* Deliver the last partial line (flagged ATP_LINE_NO_EOL) and free. */
void atp__framer_finish(atp__framer *f);
void atp__framer_release(atp__framer *f);

/* ---- wrap.c ----------------------------------------------------------- */

/* Is @c a character that sh takes literally outside quotes? */
int atp__sh_plain_char(char c);
/* Append @s quoted for POSIX sh to @b.  0 or ATP_E_NOMEM. */
int atp__sh_quote_append(atp__buf *b, const char *s);

struct atp__wrapped {
    const char *argv[7];
    char *script;     /* owned */
    char timeout_arg[32];
    char grace_arg[32];
};

/*
 * Build the argv that runs @command: POSIX sh, the announcement of the
 * process group with @announce_pgid, the warm-cache link when
 * @warm_cache is set, `timeout -k GRACE SECS` unless the backend enforces
 * the budget itself (@in_sandbox_timeout 0), and stdin from /dev/null
 * when @no_stdin and a script is built anyway (a command run directly by
 * the host has /dev/null already).
 */
int atp__wrap(struct atp__wrapped *w, const char *command,
              const char *warm_cache, int in_sandbox_timeout,
              int announce_pgid, int64_t timeout_ms, int64_t grace_ms,
              int no_stdin);
/*
 * The same, and with @measure the command runs as the wrapper's child and
 * what it used is reported on stderr (ATP_CAP_WRAPPER_USAGE; the report
 * is atp__exec_usage_filter()'s to take off).
 */
int atp__wrap_measured(struct atp__wrapped *w, const char *command,
                       const char *warm_cache, int in_sandbox_timeout,
                       int announce_pgid, int64_t timeout_ms,
                       int64_t grace_ms, int no_stdin, int measure);
void atp__wrapped_release(struct atp__wrapped *w);

/* ---- env.c ------------------------------------------------------------ */

/* A NULL-terminated "KEY=VALUE" array with its own storage (v, n), and
 * an index of its keys; {NULL, 0} is an empty one. */
typedef struct atp__env {
    char **v;
    size_t n;
    size_t cap;       /* room in v, NULL included */
    size_t *slot;     /* hash of the keys: 1 + index into v, 0 free */
    size_t n_slot;
} atp__env;

/* Set KEY=VALUE (replacing KEY). */
int atp__env_set(atp__env *e, const char *key, size_t keylen,
                 const char *value);
/* Add every "KEY=VALUE" of @list over what is there; ATP_E_INVAL on a
 * malformed entry. */
int atp__env_merge(atp__env *e, const char *const *list);
void atp__env_free(atp__env *e);
/* True for a valid variable name. */
int atp__env_name_ok(const char *s, size_t len);

/* Secret values to redact from messages. */
typedef struct atp__secrets {
    pthread_mutex_t lock;
    char **v;
    size_t n;
    size_t *slot;     /* hash of the values: 1 + index into v, 0 free */
    size_t n_slot;
} atp__secrets;

void atp__secrets_init(atp__secrets *s);
void atp__secrets_add(atp__secrets *s, const char *value);
/* Add the values of an env array (long enough to be worth hiding). */
void atp__secrets_add_env(atp__secrets *s, const atp__env *e);
/*
 * Replace, in place, every secret of @a and of @b (either may be NULL)
 * in the NUL-terminated @text by "***": each stretch of text that
 * secrets cover, overlapping or nested, becomes one "***", so the longest
 * match wins.  The text never grows.
 */
void atp__secrets_redact(char *text, atp__secrets *a, atp__secrets *b);
/*
 * Format into @out (@cap bytes) with the secrets of @a and @b redacted
 * (either may be NULL).  The whole text is redacted before it is cut to
 * @cap, so that no piece of a secret survives at the cut.
 */
void atp__vformat_redacted(char *out, size_t cap, atp__secrets *a,
                           atp__secrets *b, const char *fmt, va_list ap)
    ATP_PRINTF(5, 0);
void atp__format_redacted(char *out, size_t cap, atp__secrets *a,
                          atp__secrets *b, const char *fmt, ...)
    ATP_PRINTF(5, 6);
void atp__secrets_free(atp__secrets *s);

/* ---- backend.c / session.c -------------------------------------------- */

struct atp_backend {
    atp_config *cfg;
    char *name;                /* instance name */
    struct atp__section *sec;  /* may be NULL (defaults) */
    struct atp__plugin *plugin;
    void *handle;
    uint64_t caps;             /* read once at open; as a pool shows it */
    uint64_t plugin_caps;      /* ...as the plugin said */
    struct atp__pool *pool;    /* [backend.NAME] pool > 0, else NULL */
    atp__secrets secrets;      /* backend-wide secrets */
    pthread_mutex_t pin_lock;  /* image_id is set from any session */
    char image_id[160];        /* host->image_pinned(), or "" */
    char image_digest[256];
};

/*
 * The value of core key @key of the backend's section (warmup, ...): the
 * section's, else the default the plugin declares for a key of that name
 * in its option table (how a plugin gives its backend a default
 * warm-up), else NULL.  Borrowed from the config or the plugin.
 */
const char *atp__backend_key(const atp_backend *be, const char *key);

/*
 * The warm cache to link as .lake: warm_cache of the backend's section
 * (when the plugin takes that key), else [image] warm_cache, else the
 * plugin's default; an empty value at any level means none.  NULL: none.
 */
const char *atp__backend_warm_cache(const atp_backend *be);

/* The backend runs images (its plugin takes an `image` key). */
int atp__backend_pins(const atp_backend *be);

/* @name names one image forever: NAME@sha256:HEX, sha256:HEX or im-ID. */
int atp__image_is_pinned(const char *name);

enum atp__state { ATP__CREATED, ATP__OPEN, ATP__CLOSED };

struct atp_session {
    atp_backend *be;
    atomic_int busy;           /* a thread is inside a call */
    void *handle;
    enum atp__state state;
    char run_id[32];
    char *workdir;
    atp__env env;
    atp_mount *mounts;
    size_t n_mounts;
    char *mount_buf;
    int64_t timeout_ms;
    atp_event_fn on_event;
    void *event_payload;
    int cancel_pipe[2];
    volatile sig_atomic_t cancelled;
    atp__secrets secrets;
    char *lease;               /* ledger file, or NULL */
    int processes_leased;      /* the lease names its host processes */
    unsigned n_cmd;            /* commands run (names spill files) */
    unsigned n_exec;           /* execs, transfers included (exec ids) */
    struct atp__xfer_state *xfer; /* sync state (isolated backends) */
    /* What it cost: the sandbox's creation, its transfers, its life. */
    int64_t opened_ns;         /* the sandbox exists since, or 0 */
    double provision_s;
    double push_s, pull_s;     /* every transfer so far */
    uint64_t push_bytes, pull_bytes;
    char image_id[160];        /* host->image_pinned(), or the backend's */
    /* Warm pools. */
    int is_member;             /* a pool's own session, warming a member */
    struct atp__member *member;/* the warm sandbox it took, or NULL */
    char *member_dir;          /* shared-fs member: the directory the
                                  sandbox sees (removed at free) */
    struct atp__manifest *dir_base; /* what member_dir held after the
                                  last push or pull, or NULL */
    int infra_failed;          /* a command or transfer failed for the
                                  infrastructure: not to be reused */
    void *group;               /* the plugin's group it belongs to, or
                                  NULL (ABI 1.3, batch.c) */
};

/*
 * Groups (ABI 1.3): a backend whose plugin has group_open() gets the
 * batch's ready attempts as one unit.  atp__group_open() returns 0 with
 * *@out set, or an error; atp__session_join() makes a created session
 * member @index of the group with id @group_id (its run id becomes
 * "GROUP_ID-INDEX", which is how the plugin proves a lease's resource
 * its own).
 */
int atp__backend_groups(const atp_backend *be);
int atp__group_open(atp_backend *be, const char *group_id, unsigned n,
                    unsigned max_running, void **out);
void atp__group_free(atp_backend *be, void *group);
void atp__session_join(struct atp_session *s, void *group,
                       const char *group_id, unsigned index);
void atp__make_run_id(char *out, size_t len);

/*
 * A warm sandbox of a pool, between sessions: what a session that takes
 * it runs on.
 */
struct atp__member {
    void *handle;                  /* the plugin's session */
    struct atp__xfer_state *xfer;  /* what the sandbox holds */
    char *lease;
    char run_id[32];
    int processes_leased;
    unsigned n_exec;
    char image_id[160];
    char *dir;                     /* shared-fs: its host directory */
    struct atp__manifest *dir_base;/* ... and what it held last */
    unsigned uses;
    int64_t born_ns;
    double provision_s;
    struct atp__member *next;
};

/* Warm a member over @base (session.c): provisioned, pushed, warmed up. */
int atp__member_warm(atp_backend *be, const char *base,
                     struct atp__member **out);
/* Tear a member down and free it (its lease closed when that worked). */
void atp__member_discard(atp_backend *be, struct atp__member *m);
/* Move a member's sandbox into @s, or back out of it. */
void atp__member_attach(struct atp_session *s, struct atp__member *m);
void atp__member_detach(struct atp_session *s, struct atp__member *m);

/* ---- pool.c ------------------------------------------------------------ */

/* The pool of @be per its section (pool, pool_max_uses, pool_max_age_s);
 * *@out NULL when pool is 0. */
int atp__pool_new(atp_backend *be, struct atp__pool **out);
/* Tear down the idle members and stop warming; sessions are freed. */
void atp__pool_free(struct atp__pool *p);
/* Take a warm member for @s (attached on success, *@got set); *@got 0
 * when none is idle or coming: @s provisions its own.  Starts the pool
 * (warming over @s's workdir) on first use. */
int atp__pool_take(struct atp__pool *p, struct atp_session *s, int *got);
/* @s is done with its member: 1 when the pool keeps it (detached), 0
 * when @s must tear it down. */
int atp__pool_put(struct atp__pool *p, struct atp_session *s);
/* How long a member may live, for the provider's ttl. */
int64_t atp__pool_max_age_ms(const struct atp__pool *p);
/* The plugin's sandboxes share the host's filesystem: members have
 * directories of their own, reset by mirroring. */
int atp__pool_shared(const struct atp__pool *p);

/*
 * Prepare @call and @x to run one command of @s through the plugin's
 * exec(): the schedule of @plan (backstop: the call's deadline, @timeout
 * from now), the sink.
 */
void atp__exec_call(struct atp_session *s, atp_call *call,
                    struct atp__exec *x, const struct atp__exec_plan *plan,
                    atp__sink *sink, int64_t timeout_ms);

/*
 * Give @spec the size the plugin knows (its minor's), clearing what lies
 * beyond: a plugin may refuse fields it does not know when they are set.
 */
void atp__exec_spec_fit(const struct atp__plugin *p, atp_exec_spec *spec);

/*
 * One result shape per outcome: fold the core's kills (@x) into the
 * flags, and read a death by signal where the backend reported 128+N or
 * a command under timeout(1) (@wrapped) ran out of its budget.
 */
void atp__outcome_normalize(atp_exec_outcome *o, const struct atp__exec *x,
                            int wrapped, int64_t elapsed_ms);

/* Deliver an event to the session's listener. */
void atp__session_event(struct atp_session *s, const char *type,
                        const atp_field *fields, size_t n);

/* Fill @res from an error code and the calling thread's message. */
void atp__result_fail(atp_result *res, int code, const char *msg);

/* ---- mirror.c ----------------------------------------------------------- */

struct atp__mirror_stats {
    uint64_t files, bytes, deleted;
};

/*
 * Make directory @dst like directory @src: what differs is copied (files,
 * directories, links, with modes and mtimes), what @src lacks is removed;
 * paths matching @excludes are left alone on both sides.  Nothing is
 * written through a symbolic link.  @untrusted: @src came from a sandbox,
 * so its links are judged as the tar extractor judges them and the
 * transfer limits of @limits apply.  0 or ATP_E_TRANSFER.
 */
/* Remove @path and everything under it, never following a link. */
void atp__remove_tree(const char *path);

/* With @since (what @dst and @src both were at the last mirror), only
 * what @src changed since is brought: what @dst gained meanwhile stays.
 * @after, if given, receives what @dst now holds for the next @since. */
int atp__tree_mirror(const char *src, const char *dst,
                     const char *const *excludes, int untrusted,
                     const struct atp__settings *limits,
                     const struct atp__manifest *since,
                     struct atp__manifest *after,
                     struct atp__mirror_stats *st);

/* ---- sync.c ----------------------------------------------------------- */

struct atp__xfer_state;

/* Make a warm sandbox's workdir like the host's: what the sandbox
 * changed since the base is replaced too, what only it has removed. */
int atp__sync_push_mirror(struct atp_session *s);

/* Push the host workdir into the sandbox / pull it back, incrementally
 * with deletions; report a "pushed" / "pulled" event.  ATP_E_TRANSFER,
 * ATP_E_CANCELLED or the backend's code on failure. */
int atp__sync_push(struct atp_session *s);
int atp__sync_pull(struct atp_session *s);
/* Push host directory @host_dir (whole) to @dest in the sandbox. */
int atp__sync_push_dir(struct atp_session *s, const char *host_dir,
                       const char *dest);
void atp__xfer_free(struct atp__xfer_state *x);

/* ---- ledger.c --------------------------------------------------------- */

/* The directory holding leases (created on demand). */
int atp__state_dir(const atp_config *cfg, char *out, size_t outlen);

/* Write the lease of a session before anything is created. */
int atp__lease_open(struct atp_session *s);
/* The same with its first resource in it; a note when it exists. */
int atp__lease_open_with(struct atp_session *s, const char *kind,
                         const char *id);
/* Record or forget a resource of the session. */
int atp__lease_note(struct atp_session *s, const char *kind, const char *id);
int atp__lease_forget(struct atp_session *s, const char *id);
/* Drop the lease once everything is torn down. */
void atp__lease_close(struct atp_session *s);

#endif /* ATP_INTERNAL_H */
