/*
 * fuzz/host.c - the host table that plugin targets run against: no core,
 * no ledger, answers taken from fuzz_hs.  Every string a plugin hands over
 * is read in full (formatted, summed), so that a dangling or unterminated
 * one shows up under the sanitizers as it would in the real core.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "fuzz.h"

struct fuzz_host_state fuzz_hs;
static volatile unsigned sink; /* keeps the reads of handed-over bytes */

void fuzz_host_reset(void)
{
    memset(&fuzz_hs, 0, sizeof(fuzz_hs));
    fuzz_hs.cancel_after_output = -1;
}

int64_t fuzz_host_now(void)
{
    struct timespec ts;

    if (fuzz_hs.virtual_clock)
        return fuzz_hs.clock_ns;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void fuzz_clock_advance(int64_t ns)
{
    if (fuzz_hs.virtual_clock && ns > 0)
        fuzz_hs.clock_ns += ns;
}

static int h_set_error(atp_call *call, int code, const char *fmt, ...)
    ATP_PRINTF(3, 4);
static void h_log(atp_call *call, int level, const char *fmt, ...)
    ATP_PRINTF(3, 4);

static int h_set_error(atp_call *call, int code, const char *fmt, ...)
{
    va_list ap;

    (void)call;
    va_start(ap, fmt);
    vsnprintf(fuzz_hs.error, sizeof(fuzz_hs.error), fmt, ap);
    va_end(ap);
    fuzz_hs.error_code = code;
    return code;
}

static void h_log(atp_call *call, int level, const char *fmt, ...)
{
    char line[2048];
    va_list ap;

    (void)call;
    (void)level;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
}

static void h_event(atp_call *call, const char *type, const atp_field *f,
                    size_t n)
{
    size_t i, sum = strlen(type);

    (void)call;
    for (i = 0; i < n; i++) {
        sum += strlen(f[i].key);
        if (f[i].type == ATP_FIELD_STR)
            sum += strlen(f[i].s);
    }
    fuzz_hs.events += sum > 0;
}

static const char *h_config_string(atp_call *call, const char *key)
{
    const char *const *c = fuzz_hs.config;

    (void)call;
    for (; c && c[0]; c += 2)
        if (strcmp(c[0], key) == 0)
            return c[1];
    return NULL;
}

static int h_config_int(atp_call *call, const char *key, int64_t *out)
{
    const char *v = h_config_string(call, key);
    char *end;
    long long n;

    if (v == NULL)
        return ATP_E_NOTFOUND;
    n = strtoll(v, &end, 10);
    if (*end != '\0')
        return ATP_E_NOTFOUND;
    *out = n;
    return 0;
}

static int h_output(atp_call *call, int stream, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    size_t i;
    unsigned sum = 0;

    (void)call;
    if (stream != ATP_STDOUT && stream != ATP_STDERR)
        fuzz_fail("output() on stream %d", stream);
    for (i = 0; i < len; i++) /* every byte handed over must be readable */
        sum += p[i];
    sink += sum;
    fuzz_hs.output_bytes += len;
    if (fuzz_hs.cancel_after_output >= 0 &&
        fuzz_hs.cancel_after_output-- == 0)
        return ATP_E_CANCELLED;
    return 0;
}

static long h_input(atp_call *call, void *buf, size_t len)
{
    (void)call;
    (void)buf;
    (void)len;
    return 0;
}

static int h_minus_one(atp_call *call)
{
    (void)call;
    return -1;
}

static int h_cancelled(atp_call *call)
{
    (void)call;
    return 0;
}

static int64_t h_deadline_ns(atp_call *call)
{
    (void)call;
    return fuzz_hs.deadline_ns;
}

static const char *h_run_id(atp_call *call)
{
    (void)call;
    return "fuzzrun";
}

static int h_created(atp_call *call, const char *kind, const char *id)
{
    (void)call;
    fuzz_hs.created += strlen(kind) + strlen(id) > 0;
    return 0;
}

static int h_removed(atp_call *call, const char *id)
{
    (void)call;
    fuzz_hs.removed += strlen(id) > 0;
    return 0;
}

static void h_add_secret(atp_call *call, const char *value)
{
    (void)call;
    (void)value;
}

static int h_tar_create(atp_call *call, const char *dir,
                        int (*write)(void *ctx, const void *buf, size_t len),
                        void *ctx)
{
    (void)call;
    (void)dir;
    (void)write;
    (void)ctx;
    return ATP_E_UNSUPPORTED;
}

static int h_tar_extract(atp_call *call, const char *dir,
                         long (*read)(void *ctx, void *buf, size_t len),
                         void *ctx)
{
    (void)call;
    (void)dir;
    (void)read;
    (void)ctx;
    return ATP_E_UNSUPPORTED;
}

#if ATP_PLUGIN_ABI_MINOR >= 2
/*
 * ABI 1.2, compiled when the header has it: typed config values read from
 * the same strings, a kill schedule that says TERM, KILL, then STOP once
 * the call's deadline has passed (and STOP 200 ms after an exit whose
 * output stays open), no process group known, no stdin, no host processes.
 */
static int h_config_bool(atp_call *call, const char *key, int *out)
{
    const char *v = h_config_string(call, key);

    if (v == NULL)
        return ATP_E_NOTFOUND;
    if (strcmp(v, "true") == 0 || strcmp(v, "yes") == 0 ||
        strcmp(v, "on") == 0 || strcmp(v, "1") == 0)
        *out = 1;
    else if (strcmp(v, "false") == 0 || strcmp(v, "no") == 0 ||
             strcmp(v, "off") == 0 || strcmp(v, "0") == 0)
        *out = 0;
    else
        return ATP_E_INVAL;
    return 0;
}

static int h_config_double(atp_call *call, const char *key, double *out)
{
    const char *v = h_config_string(call, key);
    char *end;

    if (v == NULL)
        return ATP_E_NOTFOUND;
    *out = strtod(v, &end);
    return end == v || *end != '\0' ? ATP_E_INVAL : 0;
}

static int h_config_choice(atp_call *call, const char *key)
{
    int64_t n;

    return h_config_int(call, key, &n) == 0 ? (int)n : ATP_E_NOTFOUND;
}

static int h_exec_due(atp_call *call, unsigned state, int64_t *wait_ms)
{
    int64_t now = fuzz_host_now();

    (void)call;
    if (wait_ms)
        *wait_ms = -1;
    if (state & ATP_EXEC_ENDED)
        return ATP_DUE_NONE;
    if (fuzz_hs.deadline_ns && now >= fuzz_hs.deadline_ns)
        switch (fuzz_hs.due_step++) {
        case 0:
            return ATP_DUE_TERM;
        case 1:
            return ATP_DUE_KILL;
        case 2:
            return ATP_DUE_STOP;
        default:
            return ATP_DUE_NONE;
        }
    if (state & ATP_EXEC_EXITED) {
        if (fuzz_hs.exited_ns == 0)
            fuzz_hs.exited_ns = now;
        if (now - fuzz_hs.exited_ns >= 200000000 && fuzz_hs.due_step < 3) {
            fuzz_hs.due_step = 3;
            return ATP_DUE_STOP;
        }
        if (wait_ms)
            *wait_ms = 200;
        return ATP_DUE_NONE;
    }
    if (wait_ms && fuzz_hs.deadline_ns)
        *wait_ms = (fuzz_hs.deadline_ns - now + 999999) / 1000000;
    return ATP_DUE_NONE;
}

static long h_exec_pgid(atp_call *call)
{
    (void)call;
    return 0;
}

static const char *const *h_group_kill_argv(atp_call *call, int sig)
{
    (void)call;
    (void)sig;
    return NULL;
}

static long h_stdin_peek(atp_call *call, const void **data, int *eof)
{
    (void)call;
    *data = NULL;
    *eof = 1;
    return 0;
}

static void h_stdin_consume(atp_call *call, size_t n)
{
    (void)call;
    (void)n;
}

static int h_stdin_to_fd(atp_call *call, int fd, int *done)
{
    (void)call;
    (void)fd;
    *done = 1;
    return 0;
}

static int h_spawn(atp_call *call, const atp_spawn_spec *spec,
                   atp_exec_outcome *out)
{
    (void)call;
    (void)spec;
    (void)out;
    return ATP_E_UNSUPPORTED;
}

static int h_image_pinned(atp_call *call, const char *id,
                          const char *digest)
{
    (void)call;
    if (id == NULL || *id == '\0')
        fuzz_fail("image_pinned without an id");
    (void)digest;
    return 0;
}
#endif

const atp_host_api fuzz_host = {
    .struct_size = sizeof(atp_host_api),
    .abi_major = ATP_PLUGIN_ABI_MAJOR,
    .abi_minor = ATP_PLUGIN_ABI_MINOR,
    .set_error = h_set_error,
    .log = h_log,
    .event = h_event,
    .config_string = h_config_string,
    .config_int = h_config_int,
    .output = h_output,
    .input = h_input,
    .input_fd = h_minus_one,
    .cancel_fd = h_minus_one,
    .cancelled = h_cancelled,
    .deadline_ns = h_deadline_ns,
    .now_ns = fuzz_host_now,
    .run_id = h_run_id,
    .resource_created = h_created,
    .resource_removed = h_removed,
    .add_secret = h_add_secret,
    .tar_create = h_tar_create,
    .tar_extract = h_tar_extract,
#if ATP_PLUGIN_ABI_MINOR >= 2
    .config_bool = h_config_bool,
    .config_double = h_config_double,
    .config_choice = h_config_choice,
    .exec_due = h_exec_due,
    .exec_pgid = h_exec_pgid,
    .group_kill_argv = h_group_kill_argv,
    .stdin_peek = h_stdin_peek,
    .stdin_consume = h_stdin_consume,
    .stdin_to_fd = h_stdin_to_fd,
    .spawn = h_spawn,
    .image_pinned = h_image_pinned,
#endif
};
