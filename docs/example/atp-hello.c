/*
 * atp-hello.c - a complete third-party atp backend plugin, built against
 * <atp/plugin.h> alone:
 *
 *   cc -std=c99 -shared -fPIC -fvisibility=hidden -Wl,--no-undefined \
 *      $(pkg-config --cflags atp-plugin) -o atp-hello.so atp-hello.c
 *   install -m 644 atp-hello.so $(pkg-config --variable=plugindir atp-plugin)
 *   atp-run -b hello -- anything
 *
 * It "runs" every command by greeting it: the command's argv is written
 * back as output lines and the exit code is the configured `code`.  It
 * shows the whole contract: options validated by the core, the host table
 * for output, errors and cancellation, and idempotent close.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <atp/plugin.h>

static const atp_host_api *host;

struct hello_backend {
    char greeting[64];
    int code;
};

struct hello_session {
    struct hello_backend cfg; /* a copy: sessions outlive nothing */
    int closed;
};

static const atp_option options[] = {
    {"greeting", ATP_OPT_STRING, "hello", NULL, "word to greet with"},
    {"code", ATP_OPT_INT, "0", NULL, "exit code of every command"},
    {NULL, 0, NULL, NULL, NULL},
};

static int backend_open(atp_call *call, void **out)
{
    struct hello_backend *b = calloc(1, sizeof(*b));
    int64_t code = 0;

    if (b == NULL)
        return host->set_error(call, ATP_E_NOMEM, "out of memory");
    snprintf(b->greeting, sizeof(b->greeting), "%s",
             host->config_string(call, "greeting"));
    host->config_int(call, "code", &code);
    b->code = (int)code;
    *out = b;
    return 0;
}

static void backend_free(void *backend)
{
    free(backend);
}

static int session_open(atp_call *call, void *backend,
                        const atp_session_spec *spec, void **out)
{
    struct hello_session *s = calloc(1, sizeof(*s));

    (void)spec; /* workdir, env, mounts: nothing to create here */
    if (s == NULL)
        return host->set_error(call, ATP_E_NOMEM, "out of memory");
    s->cfg = *(const struct hello_backend *)backend;
    *out = s;
    return 0;
}

static int exec(atp_call *call, void *session, const atp_exec_spec *spec,
                atp_exec_outcome *out)
{
    struct hello_session *s = session;
    const char *const *a;
    char line[512];
    int n;

    if (s->closed)
        return host->set_error(call, ATP_E_INVAL, "session is closed");
    if (host->cancelled(call)) {
        out->flags = ATP_OUTCOME_CANCELLED;
        out->exit_code = -1;
        return 0;
    }
    /* argv is what the core built: /bin/sh -c [wrapper] ... COMMAND. */
    for (a = spec->argv; *a; a++) {
        n = snprintf(line, sizeof(line), "%s, %s\n", s->cfg.greeting, *a);
        if (n > 0 && host->output(call, ATP_STDOUT, line, (size_t)n) != 0)
            break; /* the consumer wants no more */
    }
    out->exit_code = s->cfg.code;
    out->signal = 0;
    return 0;
}

static int session_close(atp_call *call, void *session)
{
    struct hello_session *s = session;

    (void)call;
    s->closed = 1; /* idempotent: closing twice is fine */
    return 0;
}

static void session_free(void *session)
{
    free(session);
}

/* Designated initialisers: fields added by later ABI minors stay zero. */
static const atp_plugin_ops ops = {
    .struct_size = sizeof(atp_plugin_ops),
    .abi_major = ATP_PLUGIN_ABI_MAJOR,
    .abi_minor = ATP_PLUGIN_ABI_MINOR,
    .name = "hello",
    .version = "1.0",
    .description = "greets every command instead of running it",
    .caps = ATP_CAP_SESSIONS | ATP_CAP_STREAMING,
    .options = options,
    .backend_open = backend_open,
    .backend_free = backend_free,
    .session_open = session_open,
    .exec = exec,
    .session_close = session_close,
    .session_free = session_free,
};

ATP_PLUGIN_EXPORT int atp_plugin_entry_v1(const atp_host_api *api,
                                          atp_call *call,
                                          const atp_plugin_ops **ops_out)
{
    if (api->abi_major != ATP_PLUGIN_ABI_MAJOR)
        return ATP_E_ABI;
    host = api;
    (void)call;
    *ops_out = &ops;
    return 0;
}
