/*
 * <atp/atp.h> alone, as strict C99: compiled with -std=c99 -pedantic
 * -Wall -Wextra -Werror, with the header first so that it cannot lean on
 * anything included before it.  The initialiser macros and callback types
 * are used as a client would use them.
 */
#include <atp/atp.h>

#include <stdio.h>

static void on_line(int stream, const char *line, size_t len, unsigned flags,
                    void *payload)
{
    (void)stream;
    (void)line;
    (void)len;
    (void)flags;
    (void)payload;
}

static void on_event(const atp_event *event, void *payload)
{
    (void)event;
    (void)payload;
}

static void on_flush(void *payload)
{
    (void)payload;
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
    atp_result res = ATP_RESULT_INIT;
    atp_session_opts sopts = ATP_SESSION_OPTS_INIT;
    atp_exec_opts eopts = ATP_EXEC_OPTS_INIT;
    atp_plugin_info info = {sizeof(atp_plugin_info), NULL, NULL, 0, NULL,
                            NULL, NULL, 0, 0, 0, NULL, 0, NULL};
    atp_line_fn lf = on_line;
    atp_event_fn ef = on_event;

    puts("1..5");
    sopts.on_event = ef;
    eopts.on_line = lf;
    eopts.on_flush = on_flush;
    check(res.struct_size == sizeof(res) && res.exit_code == -1 &&
              res.status == ATP_STATUS_OK && res.message[0] == '\0',
          "ATP_RESULT_INIT: size set, exit code -1, no message");
    check(sopts.struct_size == sizeof(sopts) && sopts.workdir == NULL &&
              sopts.timeout_s == 0.0 && info.struct_size == sizeof(info),
          "ATP_SESSION_OPTS_INIT sets the size and leaves the rest zero");
    check(eopts.struct_size == sizeof(eopts) && eopts.stdin_fd == -1 &&
              eopts.env == NULL,
          "ATP_EXEC_OPTS_INIT sets the size and stdin_fd -1");
#ifdef ATP_PLUGIN_H
    check(0, "<atp/atp.h> does not pull in the plugin ABI");
#else
    check(1, "<atp/atp.h> does not pull in the plugin ABI");
#endif
    check(ATP_VERSION_NUM == ((ATP_VERSION_MAJOR << 16) |
                              (ATP_VERSION_MINOR << 8) | ATP_VERSION_PATCH) &&
              ATP_E_TIMEOUT == -4 && ATP_STATUS_CONFIG_ERROR == 12,
          "versions, error codes and status classes come from "
          "<atp/common.h>");
    return failed;
}
