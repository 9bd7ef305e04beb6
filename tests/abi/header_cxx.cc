/*
 * <atp/plugin.h> and <atp/atp.h> as C++11: compiled with -std=c++11
 * -pedantic -Wall -Wextra -Werror.  A client and a plugin are written in
 * C++ against them; the plugin's entry point takes its C linkage from the
 * declaration in the header's extern "C" block.
 */
#include <atp/plugin.h>
#include <atp/atp.h>

#include <cstdio>

namespace {

const atp_host_api *host;

int be_open(atp_call *, void **backend_out)
{
    *backend_out = nullptr;
    return 0;
}

void be_free(void *) {}

int s_open(atp_call *call, void *, const atp_session_spec *, void **)
{
    return host->set_error(call, ATP_E_UNSUPPORTED, "no sandbox here");
}

int s_exec(atp_call *, void *, const atp_exec_spec *, atp_exec_outcome *out)
{
    out->exit_code = 0;
    return 0;
}

int s_close(atp_call *, void *)
{
    return 0;
}

void s_free(void *) {}

const atp_option options[] = {
    {"image", ATP_OPT_STRING, nullptr, nullptr, "image to run"},
    {nullptr, 0, nullptr, nullptr, nullptr},
};

const atp_plugin_ops ops = {
    sizeof(atp_plugin_ops), ATP_PLUGIN_ABI_MAJOR, ATP_PLUGIN_ABI_MINOR,
    "cxx", "0", "a C++ plugin", ATP_CAP_SHARED_FS, options,
    be_open, be_free, s_open, s_exec, s_close, s_free,
    nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
    nullptr, nullptr,
};

int n_test;
int failed;

void check(bool ok, const char *what)
{
    std::printf("%s %d - %s\n", ok ? "ok" : "not ok", ++n_test, what);
    if (!ok)
        failed = 1;
}

} // namespace

ATP_PLUGIN_EXPORT int atp_plugin_entry_v1(const atp_host_api *api,
                                          atp_call *,
                                          const atp_plugin_ops **ops_out)
{
    if (api == nullptr || api->abi_major != ATP_PLUGIN_ABI_MAJOR)
        return ATP_E_ABI;
    host = api;
    *ops_out = &ops;
    return 0;
}

int main()
{
    atp_result res = ATP_RESULT_INIT;
    atp_session_opts sopts = ATP_SESSION_OPTS_INIT;
    atp_exec_opts eopts = ATP_EXEC_OPTS_INIT;
    atp_host_api fake = atp_host_api();
    const atp_plugin_ops *got = nullptr;
    atp_plugin_entry_fn entry = atp_plugin_entry_v1;
    unsigned char tail[8] = {0, 0, 0, 0, 0, 0, 0, 0};

    std::puts("1..4");
    fake.struct_size = sizeof(fake);
    fake.abi_major = ATP_PLUGIN_ABI_MAJOR;
    check(entry(&fake, nullptr, &got) == 0 && got == &ops &&
              ATP_HAS_FIELD(got, atp_plugin_ops, fini),
          "a C++ plugin's entry point has the ABI's type");
    check(res.struct_size == sizeof(res) && res.exit_code == -1 &&
              sopts.struct_size == sizeof(sopts) &&
              eopts.struct_size == sizeof(eopts) && eopts.stdin_fd == -1,
          "the *_INIT macros are valid C++ initialisers");
    check(atp_struct_tail_is_zero(tail, sizeof(tail), 2),
          "atp_struct_tail_is_zero works from C++");
    check(ATP_PLUGIN_ABI_MAJOR == 1 &&
              ATP_PLUGIN_ABI_MINOR >= ATP_PLUGIN_ABI_MINOR_FLOOR,
          "the ABI version macros are C++ constants");
    return failed;
}
