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
    call->cfg = backend ? backend->cfg : NULL;
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

static atp__secrets *session_secrets(atp_call *call)
{
    return call->session ? &call->session->secrets : NULL;
}

static atp__secrets *backend_secrets(atp_call *call)
{
    return call->backend ? &call->backend->secrets : NULL;
}

static int host_verror(atp_call *call, int code, const char *fmt,
                       va_list ap) ATP_PRINTF(3, 0);
static int host_set_error(atp_call *call, int code, const char *fmt, ...)
    ATP_PRINTF(3, 4);
static void host_log(atp_call *call, int level, const char *fmt, ...)
    ATP_PRINTF(3, 4);

static int host_verror(atp_call *call, int code, const char *fmt,
                       va_list ap)
{
    if (call == NULL)
        return code;
    atp__vformat_redacted(call->err, sizeof(call->err),
                          session_secrets(call), backend_secrets(call), fmt,
                          ap);
    call->err_code = code;
    return code;
}

static int host_set_error(atp_call *call, int code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    host_verror(call, code, fmt, ap);
    va_end(ap);
    return code;
}

int atp__call_error(atp_call *call, int code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    host_verror(call, code, fmt, ap);
    va_end(ap);
    return code;
}

static void host_log(atp_call *call, int level, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;

    if (call == NULL || !atp__log_on(call->cfg, level))
        return;
    va_start(ap, fmt);
    atp__vformat_redacted(msg, sizeof(msg), session_secrets(call),
                          backend_secrets(call), fmt, ap);
    va_end(ap);
    atp__log(call->cfg, level < 0 ? 0 : level > 3 ? 3 : level,
             call->plugin ? call->plugin->name : "core", "%s", msg);
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
    struct atp__exec *x;
    int rc = 0;

    if (call == NULL || call->sink == NULL || call->sink->output == NULL)
        return ATP_E_INVAL;
    x = call->exec;
    if (x && x->sniffing && stream == ATP_STDOUT) {
        const char *p = buf;
        size_t held = atp__exec_sniff(x, &p, &len);

        if (held)
            rc = call->sink->output(call->sink->ctx, stream, x->sniff, held);
        buf = p;
    }
    if (len > 0 && rc == 0 && x && x->plan.trailer)
        rc = atp__exec_trailer_filter(x, stream, buf, len,
                                      call->sink->output, call->sink->ctx);
    else if (len > 0 && rc == 0 && x && x->plan.usage)
        rc = atp__exec_record_filter(x, stream, buf, len, call->sink->output,
                                     call->sink->ctx);
    else if (len > 0 && rc == 0)
        rc = call->sink->output(call->sink->ctx, stream, buf, len);
    if (rc == ATP_E_CANCELLED && x)
        x->consumer_gone = 1;
    return rc;
}

int atp__call_output(atp_call *call, int stream, const void *buf,
                     size_t len)
{
    return host_output(call, stream, buf, len);
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

int atp__call_cancel_fd(atp_call *call)
{
    return host_cancel_fd(call);
}

int atp__call_cancelled(atp_call *call)
{
    return host_cancelled(call);
}

int64_t atp__call_deadline(atp_call *call)
{
    return host_deadline_ns(call);
}

struct atp__exec *atp__call_exec(atp_call *call)
{
    return call ? call->exec : NULL;
}

const char *const *atp__call_envp(atp_call *call)
{
    if (call && call->exec)
        return call->exec->envp;
    return NULL;
}

int atp__call_subreaper(atp_call *call)
{
    return call && call->cfg ? call->cfg->set.subreaper : 1;
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

const char *atp__call_run_id(atp_call *call)
{
    return host_run_id(call);
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
    atp__format_redacted(call->err, sizeof(call->err), session_secrets(call),
                         backend_secrets(call), "%s", atp_last_error());
    call->err_code = rc;
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

/* ---- ABI 1.2 ------------------------------------------------------------ */

/* The option of the backend's plugin named @key, or NULL. */
static const atp_option *option_of(atp_call *call, const char *key)
{
    const atp_option *o;

    for (o = call->plugin->ops->options; o && o->name; o++)
        if (strcmp(o->name, key) == 0)
            return o;
    return NULL;
}

static int host_config_bool(atp_call *call, const char *key, int *out)
{
    const char *v = host_config_string(call, key);

    if (v == NULL)
        return ATP_E_NOTFOUND;
    return atp__parse_bool(v, out) == 0 ? 0 : ATP_E_INVAL;
}

static int host_config_double(atp_call *call, const char *key, double *out)
{
    const atp_option *o;
    const char *v = host_config_string(call, key);
    int64_t ms;

    if (v == NULL)
        return ATP_E_NOTFOUND;
    o = option_of(call, key);
    if (o && o->type == ATP_OPT_DURATION) {
        if (atp__parse_duration_ms(v, &ms) != 0)
            return ATP_E_INVAL;
        *out = (double)ms / 1000.0;
        return 0;
    }
    return atp__parse_number(v, out) == 0 ? 0 : ATP_E_INVAL;
}

static int host_config_choice(atp_call *call, const char *key)
{
    const atp_option *o;
    const char *v = host_config_string(call, key);

    if (v == NULL || (o = option_of(call, key)) == NULL ||
        o->type != ATP_OPT_CHOICE || o->choices == NULL)
        return ATP_E_NOTFOUND;
    return atp__parse_choice(v, o->choices);
}

static int host_exec_due(atp_call *call, unsigned state, int64_t *wait_ms)
{
    struct atp__exec *x = call ? call->exec : NULL;

    if (x == NULL) {
        if (wait_ms)
            *wait_ms = -1;
        return ATP_DUE_NONE;
    }
    return atp__exec_due(x, host_cancelled(call) || x->consumer_gone, state,
                         wait_ms);
}

static long host_exec_pgid(atp_call *call)
{
    return call && call->exec ? call->exec->pgid : 0;
}

static const char *const *host_group_kill_argv(atp_call *call, int sig)
{
    return call && call->exec ? atp__exec_kill_argv(call->exec, sig) : NULL;
}

static long host_stdin_peek(atp_call *call, const void **data, int *eof)
{
    if (call == NULL || call->exec == NULL) {
        *data = NULL;
        *eof = 1;
        return 0;
    }
    return atp__exec_stdin_peek(call->exec, data, eof);
}

static void host_stdin_consume(atp_call *call, size_t n)
{
    if (call && call->exec)
        atp__exec_stdin_consume(call->exec, n);
}

static int host_stdin_to_fd(atp_call *call, int fd, int *done)
{
    if (call == NULL || call->exec == NULL) {
        *done = 1;
        return 0;
    }
    return atp__exec_stdin_to_fd(call->exec, fd, done);
}

static int host_spawn(atp_call *call, const atp_spawn_spec *spec,
                      atp_exec_outcome *out)
{
    atp_spawn_spec full;

    if (call == NULL || spec == NULL || out == NULL)
        return ATP_E_INVAL;
    /* A spec from an older plugin: the fields it lacks are zero. */
    memset(&full, 0, sizeof(full));
    memcpy(&full, spec, spec->struct_size < sizeof(full) ? spec->struct_size
                                                         : sizeof(full));
    return atp__spawn(call, &full, out);
}

static int host_image_pinned(atp_call *call, const char *id,
                             const char *digest)
{
    atp_backend *be;

    if (call == NULL || id == NULL || *id == '\0' || strlen(id) >= 160 ||
        (digest && strlen(digest) >= 256))
        return ATP_E_INVAL;
    if (call->session)
        snprintf(call->session->image_id, sizeof(call->session->image_id),
                 "%s", id);
    if ((be = call->backend) == NULL && call->session)
        be = call->session->be;
    if (be) {
        pthread_mutex_lock(&be->pin_lock);
        snprintf(be->image_id, sizeof(be->image_id), "%s", id);
        if (digest)
            snprintf(be->image_digest, sizeof(be->image_digest), "%s",
                     digest);
        pthread_mutex_unlock(&be->pin_lock);
    }
    return 0;
}

static void host_exec_queued(atp_call *call, int queued)
{
    if (call && call->exec)
        atp__exec_queued(call->exec, call, queued);
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
    host_config_bool,
    host_config_double,
    host_config_choice,
    host_exec_due,
    host_exec_pgid,
    host_group_kill_argv,
    host_stdin_peek,
    host_stdin_consume,
    host_stdin_to_fd,
    host_spawn,
    host_image_pinned,
    host_exec_queued,
};
