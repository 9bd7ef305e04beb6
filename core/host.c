/*
 * core/host.c - the host API table: the services the core offers plugins.
 *
 * Every function takes the atp_call the core passed into the plugin call,
 * and copies whatever it is given before it returns.
 */
#define _GNU_SOURCE
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "transfer.h"

void atp__call_init(atp_call *call, struct atp__plugin *plugin,
                    struct atp_backend *backend, struct atp_session *session,
                    int64_t timeout_ms)
{
    memset(call, 0, sizeof(*call));
    call->plugin = plugin;
    call->backend = backend;
    call->session = session;
    call->cancellable = 1;
    if (timeout_ms > 0)
        call->deadline_ns = atp__now_ns() + timeout_ms * 1000000;
}

const char *atp__call_message(atp_call *call, int rc)
{
    if (call->err[0])
        return call->err;
    snprintf(call->err, sizeof(call->err), "%s", atp_strerror(rc));
    return call->err;
}

static void redact(atp_call *call, char *text, size_t cap)
{
    if (call->session)
        atp__secrets_redact(&call->session->secrets, text, cap);
    if (call->backend)
        atp__secrets_redact(&call->backend->secrets, text, cap);
}

static int host_set_error(atp_call *call, int code, const char *fmt, ...)
    ATP_PRINTF(3, 4);
static void host_log(atp_call *call, int level, const char *fmt, ...)
    ATP_PRINTF(3, 4);

static int host_set_error(atp_call *call, int code, const char *fmt, ...)
{
    va_list ap;

    if (call == NULL)
        return code;
    va_start(ap, fmt);
    vsnprintf(call->err, sizeof(call->err), fmt, ap);
    va_end(ap);
    call->err_code = code;
    redact(call, call->err, sizeof(call->err));
    return code;
}

static int log_level(void)
{
    const char *e = secure_getenv("ATP_LOG");

    if (e == NULL || *e == '\0')
        return ATP_LOG_WARN;
    if (strcmp(e, "debug") == 0)
        return ATP_LOG_DEBUG;
    if (strcmp(e, "info") == 0)
        return ATP_LOG_INFO;
    if (strcmp(e, "error") == 0)
        return ATP_LOG_ERROR;
    return ATP_LOG_WARN;
}

static void host_log(atp_call *call, int level, const char *fmt, ...)
{
    static const char *const names[] = {"error", "warning", "info", "debug"};
    char msg[2048];
    va_list ap;

    if (level > log_level())
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (call)
        redact(call, msg, sizeof(msg));
    fprintf(stderr, "atp: %s: %s: %s\n",
            call && call->plugin ? call->plugin->name : "core",
            names[level < 0 ? 0 : level > 3 ? 3 : level], msg);
}

static void host_event(atp_call *call, const char *type,
                       const atp_field *fields, size_t n)
{
    if (call && call->session)
        atp__session_event(call->session, type, fields, n);
}

static const char *host_config_string(atp_call *call, const char *key)
{
    const struct atp__kv *kv;
    const atp_option *o;

    if (call == NULL || call->backend == NULL)
        return NULL;
    kv = atp__section_get(call->backend->sec, key);
    if (kv)
        return kv->value;
    for (o = call->plugin->ops->options; o && o->name; o++)
        if (strcmp(o->name, key) == 0)
            return o->defval;
    return NULL;
}

static int host_config_int(atp_call *call, const char *key, int64_t *out)
{
    const atp_option *o = NULL, *it;
    const char *v = host_config_string(call, key);
    int b, rc;

    if (v == NULL)
        return ATP_E_NOTFOUND;
    for (it = call->plugin->ops->options; it && it->name; it++)
        if (strcmp(it->name, key) == 0)
            o = it;
    switch (o ? o->type : ATP_OPT_INT) {
    case ATP_OPT_BOOL:
        rc = atp__parse_bool(v, &b);
        *out = b;
        return rc;
    case ATP_OPT_DURATION:
        return atp__parse_duration_ms(v, out);
    case ATP_OPT_SIZE:
        return atp__parse_size(v, out);
    default:
        return atp__parse_int(v, out);
    }
}

static int host_output(atp_call *call, int stream, const void *buf,
                       size_t len)
{
    if (call == NULL || call->sink == NULL || call->sink->output == NULL)
        return ATP_E_INVAL;
    return call->sink->output(call->sink->ctx, stream, buf, len);
}

static long host_input(atp_call *call, void *buf, size_t len)
{
    ssize_t n;

    if (call == NULL || call->sink == NULL || call->sink->stdin_fd < 0)
        return 0;
    for (;;) {
        struct pollfd p = {call->sink->stdin_fd, POLLIN, 0};

        n = read(call->sink->stdin_fd, buf, len);
        if (n > 0 && call->sink->progress)
            call->sink->progress(call->sink->ctx, (size_t)n);
        if (n >= 0)
            return (long)n;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return ATP_E_IO;
        /* A non-blocking stdin: wait for it (or for cancellation). */
        if (call->cancellable && call->session && call->session->cancelled)
            return ATP_E_CANCELLED;
        poll(&p, 1, 100);
    }
}

static int host_input_fd(atp_call *call)
{
    if (call == NULL || call->sink == NULL)
        return -1;
    return call->sink->stdin_fd;
}

static int host_cancel_fd(atp_call *call)
{
    if (call == NULL || call->session == NULL || !call->cancellable)
        return -1;
    return call->session->cancel_pipe[0];
}

static int host_cancelled(atp_call *call)
{
    return call && call->session && call->cancellable &&
           call->session->cancelled;
}

static int64_t host_deadline_ns(atp_call *call)
{
    return call ? call->deadline_ns : 0;
}

static int64_t host_now_ns(void)
{
    return atp__now_ns();
}

static const char *host_run_id(atp_call *call)
{
    if (call && call->session)
        return call->session->run_id;
    return call && call->run_id ? call->run_id : "";
}

static int host_resource_created(atp_call *call, const char *kind,
                                 const char *id)
{
    if (call == NULL || call->session == NULL || id == NULL)
        return ATP_E_INVAL;
    return atp__lease_note(call->session, kind ? kind : "resource", id);
}

static int host_resource_removed(atp_call *call, const char *id)
{
    if (call == NULL || call->session == NULL || id == NULL)
        return ATP_E_INVAL;
    return atp__lease_forget(call->session, id);
}

static void host_add_secret(atp_call *call, const char *value)
{
    if (call == NULL || value == NULL)
        return;
    if (call->session)
        atp__secrets_add(&call->session->secrets, value);
    else if (call->backend)
        atp__secrets_add(&call->backend->secrets, value);
}

/* Copy the thread's last error into the call for the plugin. */
static int call_fail(atp_call *call, int rc)
{
    snprintf(call->err, sizeof(call->err), "%s", atp_last_error());
    call->err_code = rc;
    redact(call, call->err, sizeof(call->err));
    return rc;
}

static int host_tar_create(atp_call *call, const char *dir,
                           int (*write)(void *ctx, const void *buf,
                                        size_t len),
                           void *ctx)
{
    const struct atp__settings *set;
    struct atp__manifest m = {0};
    struct atp__tar_stats st;
    int rc;

    if (call == NULL || call->backend == NULL || dir == NULL || !write)
        return ATP_E_INVAL;
    set = &call->backend->cfg->set;
    rc = atp__manifest_scan(&m, dir, set->excludes);
    if (rc == 0)
        rc = atp__tar_create(dir, &m, set->compression, write, ctx, NULL,
                             NULL, &st);
    atp__manifest_free(&m);
    return rc ? call_fail(call, rc) : 0;
}

static int host_tar_extract(atp_call *call, const char *dir,
                            long (*read)(void *ctx, void *buf, size_t len),
                            void *ctx)
{
    const struct atp__settings *set;
    struct atp__tar_limits lim;
    struct atp__tar_stats st;
    int rc;

    if (call == NULL || call->backend == NULL || dir == NULL || !read)
        return ATP_E_INVAL;
    set = &call->backend->cfg->set;
    lim.max_entries = set->transfer_max_entries;
    lim.max_bytes = set->transfer_max_bytes;
    rc = atp__tar_extract(dir, set->excludes, &lim, read, ctx, NULL, &st);
    return rc ? call_fail(call, rc) : 0;
}

const atp_host_api atp__host_api = {
    sizeof(atp_host_api),
    ATP_PLUGIN_ABI_MAJOR,
    ATP_PLUGIN_ABI_MINOR,
    host_set_error,
    host_log,
    host_event,
    host_config_string,
    host_config_int,
    host_output,
    host_input,
    host_input_fd,
    host_cancel_fd,
    host_cancelled,
    host_deadline_ns,
    host_now_ns,
    host_run_id,
    host_resource_created,
    host_resource_removed,
    host_add_secret,
    host_tar_create,
    host_tar_extract,
};
