/*
 * <atp/plugin.h> alone, as strict C99: compiled with -std=c99 -pedantic
 * -Wall -Wextra -Werror, with the header first so that it cannot lean on
 * anything included before it.  A minimal plugin is written against it,
 * and its inline helpers are checked at run time.
 */
#include <atp/plugin.h>

#include <stdio.h>

static const atp_host_api *host;

static int be_open(atp_call *call, void **backend_out)
{
    (void)call;
    *backend_out = NULL;
    return 0;
}

static void be_free(void *backend)
{
    (void)backend;
}

static int s_open(atp_call *call, void *backend,
                  const atp_session_spec *spec, void **session_out)
{
    (void)backend;
    (void)spec;
    (void)session_out;
    return host->set_error(call, ATP_E_UNSUPPORTED, "no sandbox here");
}

static int s_exec(atp_call *call, void *session, const atp_exec_spec *spec,
                  atp_exec_outcome *out)
{
    (void)call;
    (void)session;
    (void)spec;
    out->exit_code = 0;
    return 0;
}

static int s_close(atp_call *call, void *session)
{
    (void)call;
    (void)session;
    return 0;
}

static void s_free(void *session)
{
    (void)session;
}

static const atp_option options[] = {
    {"image", ATP_OPT_STRING, NULL, NULL, "image to run"},
    {"network", ATP_OPT_CHOICE, "none", "none|bridge|host", "network"},
    {NULL, 0, NULL, NULL, NULL},
};

/* Designated initialisers, as plugin-guide.md recommends: fields of
 * later minors stay zero. */
static const atp_plugin_ops ops = {
    .struct_size = sizeof(atp_plugin_ops),
    .abi_major = ATP_PLUGIN_ABI_MAJOR,
    .abi_minor = ATP_PLUGIN_ABI_MINOR,
    .name = "c99",
    .version = "0",
    .description = "a C99 plugin",
    .caps = ATP_CAP_SHARED_FS | ATP_CAP_STREAMING,
    .options = options,
    .backend_open = be_open,
    .backend_free = be_free,
    .session_open = s_open,
    .exec = s_exec,
    .session_close = s_close,
    .session_free = s_free,
};

ATP_PLUGIN_EXPORT int atp_plugin_entry_v1(const atp_host_api *api,
                                          atp_call *call,
                                          const atp_plugin_ops **ops_out)
{
    (void)call;
    if (api == NULL || api->abi_major != ATP_PLUGIN_ABI_MAJOR)
        return ATP_E_ABI;
    host = api;
    *ops_out = &ops;
    return 0;
}

static int n_test;
static int failed;

static void check(int ok, const char *what)
{
    printf("%s %d - %s\n", ok ? "ok" : "not ok", ++n_test, what);
    if (!ok)
        failed = 1;
}

int main(void)
{
    atp_host_api fake;
    const atp_plugin_ops *got = NULL;
    atp_plugin_ops old = ops;
    unsigned char buf[16] = {0};

    puts("1..4");
    fake.struct_size = sizeof(fake);
    fake.abi_major = ATP_PLUGIN_ABI_MAJOR;
    fake.abi_minor = ATP_PLUGIN_ABI_MINOR;
    check(atp_plugin_entry_v1(&fake, NULL, &got) == 0 && got == &ops,
          "a C99 plugin built on <atp/plugin.h> alone hands out its table");
    old.struct_size = (uint32_t)(offsetof(atp_plugin_ops, session_free) +
                                 sizeof(old.session_free));
    check(ATP_HAS_FIELD(&old, atp_plugin_ops, session_free) &&
              !ATP_HAS_FIELD(&old, atp_plugin_ops, check) &&
              ATP_HAS_FIELD(&ops, atp_plugin_ops, fini),
          "ATP_HAS_FIELD follows struct_size");
    check(!ATP_HAS_FIELD((const atp_plugin_ops *)NULL, atp_plugin_ops,
                         struct_size),
          "ATP_HAS_FIELD of NULL is false");
    buf[12] = 1;
    check(atp_struct_tail_is_zero(buf, sizeof(buf), 13) &&
              !atp_struct_tail_is_zero(buf, sizeof(buf), 12),
          "atp_struct_tail_is_zero sees a non-zero byte past the known size");
    return failed;
}
