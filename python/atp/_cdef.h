/*
 * The part of include/atp/atp.h and include/atp/common.h that the Python
 * package uses, in the form cffi reads.  The layouts must match the
 * headers exactly: tests/test_cdef.py compiles this text against the real
 * headers (cffi's API mode) and fails on any difference.
 */
typedef enum atp_status {
    ATP_STATUS_OK = 0,
    ATP_STATUS_EXIT = 1,
    ATP_STATUS_TIMEOUT = 2,
    ATP_STATUS_CANCELLED = 3,
    ATP_STATUS_INFRA_ERROR = 4,
    ATP_STATUS_INFRA_TIMEOUT = 5,
    ATP_STATUS_SANDBOX_DEAD = 6,
    ATP_STATUS_TRANSFER_ERROR = 7,
    ATP_STATUS_PROVISION_ERROR = 8,
    ATP_STATUS_IMAGE_UNAVAILABLE = 9,
    ATP_STATUS_MISSING_CREDENTIALS = 10,
    ATP_STATUS_UNSUPPORTED = 11,
    ATP_STATUS_CONFIG_ERROR = 12,
    ATP_STATUS__COUNT
} atp_status;

enum {
    ATP_OK = 0,
    ATP_E_INVAL = -1,
    ATP_E_NOMEM = -2,
    ATP_E_IO = -3,
    ATP_E_TIMEOUT = -4,
    ATP_E_CANCELLED = -5,
    ATP_E_UNSUPPORTED = -6,
    ATP_E_BACKEND = -7,
    ATP_E_PROVISION = -8,
    ATP_E_IMAGE = -9,
    ATP_E_CREDENTIALS = -10,
    ATP_E_TRANSFER = -11,
    ATP_E_SANDBOX_DEAD = -12,
    ATP_E_CONFIG = -13,
    ATP_E_NOTFOUND = -14,
    ATP_E_ABI = -15,
    ATP_E_RATE = -16
};

enum { ATP_STDOUT = 1, ATP_STDERR = 2 };
enum { ATP_LOG_ERROR = 0, ATP_LOG_WARN = 1, ATP_LOG_INFO = 2,
       ATP_LOG_DEBUG = 3 };

#define ATP_LINE_PARTIAL 1
#define ATP_LINE_NO_EOL 2
#define ATP_EXEC_OPT_STDIN 1
#define ATP_RESULT_SIZE_0_2 1312
#define ATP_RESULT_SIZE_0_3 1320
#define ATP_SESSION_OPTS_SIZE_0_1 56
#define ATP_EXEC_OPTS_SIZE_0_2 64
#define ATP_EVENT_SIZE_0_1 32
#define ATP_ATTEMPT_SIZE_0_2 72
#define ATP_BATCH_OPTS_SIZE_0_2 80
#define ATP_GC_ITEM_SIZE_0_1 64
#define ATP_PLUGIN_INFO_SIZE_0_1 88
#define ATP_PLUGIN_INFO_SIZE_0_2 96

typedef enum atp_field_type {
    ATP_FIELD_STR = 1,
    ATP_FIELD_INT = 2,
    ATP_FIELD_DOUBLE = 3,
    ATP_FIELD_BOOL = 4
} atp_field_type;

typedef struct atp_field {
    const char *key;
    int type;
    const char *s;
    int64_t i;
    double d;
} atp_field;

const char *atp_version(void);
const char *atp_last_error(void);
const char *atp_strerror(int code);
const char *atp_err_name(int code);
const char *atp_status_name(atp_status status);
atp_status atp_status_from_error(int code);
int atp_status_exit_code(atp_status status);

typedef struct atp_result {
    uint32_t struct_size;
    atp_status status;
    int exit_code;
    int signal;
    double duration_s;
    int stdout_truncated;
    int stderr_truncated;
    uint64_t stdout_bytes;
    uint64_t stderr_bytes;
    char message[1024];
    double provision_s;
    double push_s, pull_s;
    uint64_t push_bytes, pull_bytes;
    double exec_s;
    double sandbox_s;
    double cpu_s;
    int64_t max_rss_bytes;
    double cost_usd;
    char image_id[160];
    double queue_s;
} atp_result;

int atp_result_init(atp_result *res, size_t size);

typedef struct atp_config atp_config;
int atp_config_load(atp_config **out, const char *path);
int atp_config_load_string(atp_config **out, const char *text,
                           const char *name);
void atp_config_free(atp_config *cfg);
const char *atp_config_path(const atp_config *cfg);
const char *atp_config_backend(const atp_config *cfg);
const char *atp_config_get(const atp_config *cfg, const char *section,
                           const char *key);
typedef void (*atp_log_fn)(int level, const char *origin,
                           const char *message, void *payload);
void atp_config_set_log(atp_config *cfg, atp_log_fn fn, int max_level,
                        void *payload);

typedef struct atp_event {
    uint32_t struct_size;
    const char *type;
    const atp_field *fields;
    size_t n_fields;
} atp_event;
typedef void (*atp_event_fn)(const atp_event *event, void *payload);

typedef struct atp_backend atp_backend;
int atp_backend_open(atp_backend **out, atp_config *cfg, const char *name);
void atp_backend_free(atp_backend *backend);
const char *atp_backend_name(const atp_backend *backend);
const char *atp_backend_plugin(const atp_backend *backend);
const char *atp_backend_plugin_version(const atp_backend *b);
const char *atp_backend_plugin_path(const atp_backend *b);
uint64_t atp_backend_caps(const atp_backend *backend);
int atp_backend_check(atp_backend *backend, atp_result *res);
const char *atp_cap_name(uint64_t bit);

typedef struct atp_option {
    const char *name;
    int type;
    const char *defval;
    const char *choices;
    const char *help;
} atp_option;

typedef struct atp_plugin_info {
    uint32_t struct_size;
    const char *name;
    const char *path;
    int loaded;
    const char *refusal;
    const char *version;
    const char *description;
    unsigned abi_major, abi_minor;
    uint64_t caps;
    const atp_option *options;
    int shadowed;
    const char *backend;
} atp_plugin_info;
typedef void (*atp_plugin_info_fn)(const atp_plugin_info *info,
                                   void *payload);
int atp_plugins_scan(atp_config *cfg, atp_plugin_info_fn fn, void *payload);
const char *atp_plugin_search_path(atp_config *cfg);

typedef struct atp_session atp_session;
typedef struct atp_session_opts {
    uint32_t struct_size;
    const char *workdir;
    const char *const *env;
    const char *const *mounts;
    double timeout_s;
    atp_event_fn on_event;
    void *event_payload;
} atp_session_opts;

int atp_session_opts_init(atp_session_opts *opts, size_t size);
int atp_session_create(atp_session **out, atp_backend *backend,
                       const atp_session_opts *opts);
int atp_session_start(atp_session *s, atp_result *res);

typedef void (*atp_line_fn)(int stream, const char *line, size_t len,
                            unsigned flags, void *payload);

typedef struct atp_exec_opts {
    uint32_t struct_size;
    double timeout_s;
    const char *const *env;
    atp_line_fn on_line;
    void *line_payload;
    int stdin_fd;
    void (*on_flush)(void *payload);
    uint32_t flags;
} atp_exec_opts;

int atp_exec_opts_init(atp_exec_opts *opts, size_t size);
int atp_session_exec(atp_session *s, const char *command,
                     const atp_exec_opts *opts, atp_result *res);
int atp_session_sync_in(atp_session *s, atp_result *res);
int atp_session_sync_out(atp_session *s, atp_result *res);
int atp_session_close(atp_session *s, atp_result *res);
void atp_session_free(atp_session *s);
void atp_session_cancel(atp_session *s);
const char *atp_session_run_id(const atp_session *s);
int atp_run(atp_backend *backend, const atp_session_opts *sopts,
            const char *command, const atp_exec_opts *eopts, int pull,
            atp_result *res);
int atp_session_run(atp_session *s, const char *command,
                    const atp_exec_opts *eopts, int pull, atp_result *res);

typedef struct atp_attempt {
    uint32_t struct_size;
    const char *id;
    const char *command;
    const char *workdir;
    const char *template_dir;
    const char *const *env;
    double timeout_s;
    const char *stdin_path;
    const char *backend;
} atp_attempt;
typedef int (*atp_attempt_fn)(atp_attempt *a, void *payload);

typedef struct atp_batch_result {
    uint32_t struct_size;
    const char *id;
    const char *backend;
    unsigned attempt;
    const atp_result *result;
    const char *stdout_text;
    size_t stdout_len;
    const char *stderr_text;
    size_t stderr_len;
    const char *out_dir;
    const char *run_id;
    double elapsed_s;
} atp_batch_result;
typedef void (*atp_batch_result_fn)(const atp_batch_result *r,
                                    void *payload);

typedef struct atp_batch_progress {
    uint32_t struct_size;
    uint64_t done;
    uint64_t running;
    uint64_t failed;
    uint64_t retried;
    double elapsed_s;
    double rate;
} atp_batch_progress;
typedef void (*atp_batch_progress_fn)(const atp_batch_progress *p,
                                      void *payload);

typedef struct atp_batch_opts {
    uint32_t struct_size;
    const char *backend;
    unsigned jobs;
    double rate;
    int retries;
    const char *out_dir;
    size_t inline_limit;
    atp_batch_result_fn on_result;
    atp_batch_progress_fn on_progress;
    void *payload;
} atp_batch_opts;

typedef struct atp_batch atp_batch;
int atp_batch_new(atp_batch **out, atp_config *cfg,
                  const atp_batch_opts *opts);
int atp_batch_run(atp_batch *b, atp_attempt_fn next, void *payload);
void atp_batch_cancel(atp_batch *b);
void atp_batch_free(atp_batch *b);

typedef struct atp_gc_item {
    uint32_t struct_size;
    const char *backend;
    const char *kind;
    const char *id;
    const char *run_id;
    long owner_pid;
    int removed;
    const char *error;
} atp_gc_item;
typedef void (*atp_gc_fn)(const atp_gc_item *item, void *payload);
int atp_gc(atp_config *cfg, int all, int dry_run, atp_gc_fn fn,
           void *payload);

char *atp_shell_join(const char *const *argv);
char *atp_shell_exec_join(const char *const *argv);
void free(void *ptr);
