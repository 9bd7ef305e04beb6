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
};
