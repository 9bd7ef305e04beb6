/*
 * fuzz/modal_flow_fuzzer.c - the modal plugin whole, through its ops
 * table, against a control plane and a command router scripted by the
 * input (fake_curl.c) on a virtual clock: the protobuf replies go into
 * the handlers that use them (app, image, secret and sandbox creation,
 * task scheduling, the router's url and JWT, exec start, the stdout and
 * stderr streams, the exit status, liveness, termination, the listing of
 * a run's sandboxes for gc).
 *
 * Input: one byte of set-up, then the answers, one per call in the order
 * the plugin starts them.  Set-up bits 0-1: check, a session (open, exec,
 * close), a reap of one sandbox, a reap of a run; bit 2: the image is an
 * id (ImageFromId) rather than a tag; bit 3: the exec has stdin; bit 4: a
 * second exec; bit 5: an environment name; bit 6: the exec has a budget.
 *
 * Oracle: every plugin call returns by its deadline (each gets its own,
 * as from the core) plus the teardown's own bound; a session closed
 * without error leaves no sandbox unaccounted for in the ledger; an exec
 * that succeeds says how the command ended, as the ABI allows.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>

#include "fake_curl.h"
#include "fuzz.h"
#include "modal.h"

#define T0 1000000000000LL
/* Each call's deadline, as the core sets them by default: provision (and
 * check), an exec's backstop, close (and gc). */
#define OPEN_S 600
#define EXEC_S 120
#define CLOSE_S 60
#define TEARDOWN_S 40 /* sandbox.c's TERMINATE_MS and a poll */

int atp_plugin_entry_v1(const atp_host_api *api, atp_call *call,
                        const atp_plugin_ops **ops_out);

static const atp_plugin_ops *ops;
static volatile size_t sink;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char path[600];

    (void)argc;
    (void)argv;
    /* Credentials from the environment; no profile file is read. */
    snprintf(path, sizeof(path), "%s/no-modal.toml", fuzz_tmpdir());
    setenv("MODAL_CONFIG_PATH", path, 1);
    setenv("MODAL_TOKEN_ID", "ak-fuzz", 1);
    setenv("MODAL_TOKEN_SECRET", "as-fuzz", 1);
    unsetenv("MODAL_PROFILE");
    unsetenv("MODAL_SERVER_URL");
    unsetenv("MODAL_ENVIRONMENT");
    unsetenv("MODAL_MAX_THROTTLE_WAIT");
    if (atp_plugin_entry_v1(&fuzz_host, NULL, &ops) != 0)
        fuzz_fail("the modal plugin refused the host: %s", fuzz_hs.error);
    return 0;
}

/* A plugin call starts: the core gives each its own deadline. */
static void call_begins(int64_t budget_s)
{
    fuzz_hs.deadline_ns = fuzz_host_now() + budget_s * 1000000000LL;
}

/* The call must return by its deadline and a teardown's own bound. */
static void in_time(const char *what)
{
    int64_t late = fuzz_host_now() - fuzz_hs.deadline_ns;

    if (getenv("ATP_FUZZ_DEBUG"))
        fprintf(stderr, "%s: at %.3f s, %u calls: %s\n", what,
                (double)(fuzz_host_now() - T0) / 1e9, fake_curl_calls(),
                fuzz_hs.error);
    if (late > TEARDOWN_S * 1000000000LL)
        fuzz_fail("%s returned %lld s past its deadline", what,
                  (long long)(late / 1000000000));
}

static void exec_once(void *session, unsigned setup)
{
    static const char *const argv[] = {"sh", "-c", "echo hi; echo err >&2",
                                       NULL};
    static const char *const env[] = {"B=2", NULL};
    atp_exec_spec spec;
    atp_exec_outcome out;
    int rc;

    memset(&spec, 0, sizeof(spec));
    spec.struct_size = sizeof(spec);
    spec.flags = setup & 8 ? ATP_EXEC_STDIN : 0;
    spec.argv = argv;
    spec.env = env;
    spec.timeout_ms = setup & 64 ? 30000 : 0;
    spec.grace_ms = 1000;
    spec.drain_ms = 500;
    memset(&out, 0, sizeof(out));
    out.struct_size = sizeof(out);
    out.exit_code = -7;
    fuzz_hs.due_step = 0; /* a new exec: a new kill schedule */
    fuzz_hs.exited_ns = 0;
    call_begins(EXEC_S);
    rc = ops->exec(NULL, session, &spec, &out);
    in_time("exec");
    if (rc == 0)
        fuzz_check_outcome(&out);
}

static void session(void *be, unsigned setup)
{
    static const char *const env[] = {"A=1", "TOKEN=s3cret", NULL};
    atp_session_spec spec;
    void *s = NULL;

    memset(&spec, 0, sizeof(spec));
    spec.struct_size = sizeof(spec);
    spec.run_id = "fuzzrun";
    spec.workdir = "/nonexistent/wd";
    spec.sandbox_workdir = "/workspace/wd";
    spec.image = "open-atp:latest";
    spec.env = env;
    spec.ttl_ms = 3600000;
    call_begins(OPEN_S);
    if (ops->session_open(NULL, be, &spec, &s) != 0) {
        in_time("session_open");
        if (s != NULL)
            fuzz_fail("session_open failed and made a session");
        return;
    }
    in_time("session_open");
    exec_once(s, setup);
    if (setup & 16)
        exec_once(s, setup);
    call_begins(CLOSE_S);
    if (ops->session_close(NULL, s) == 0 &&
        fuzz_hs.created != fuzz_hs.removed)
        fuzz_fail("closed, with %llu sandboxes made and %llu removed",
                  (unsigned long long)fuzz_hs.created,
                  (unsigned long long)fuzz_hs.removed);
    in_time("session_close");
    call_begins(CLOSE_S);
    ops->session_close(NULL, s); /* idempotent */
    ops->session_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *config[] = {
        "server_url", "http://localhost:1",
        "call_timeout_s", "5000", /* milliseconds, as config_int says */
        "app", "atp-fuzz",
        "image", "open-atp:1",
        "environment", "main",
        NULL};
    unsigned setup;
    void *be = NULL;

    if (size == 0)
        return 0;
    setup = data[0];
    if (setup & 4)
        config[7] = "im-0123456789abcdef";
    if (!(setup & 32))
        config[8] = NULL;
    fuzz_host_reset();
    fuzz_hs.config = config;
    fuzz_hs.virtual_clock = 1;
    fuzz_hs.clock_ns = T0;
    fake_curl_begin(data + 1, size - 1);
    if (ops->backend_open(NULL, &be) != 0)
        fuzz_fail("backend_open: %s", fuzz_hs.error);
    switch (setup & 3) {
    case 0:
        call_begins(OPEN_S);
        ops->check(NULL, be);
        in_time("check");
        break;
    case 1:
        session(be, setup);
        break;
    case 2:
        call_begins(CLOSE_S);
        ops->reap(NULL, be, "sandbox", "sb-0123");
        in_time("reap");
        break;
    default:
        call_begins(CLOSE_S);
        ops->reap(NULL, be, "run", "fuzzrun");
        in_time("reap");
        break;
    }
    sink += strlen(fuzz_hs.error);
    if (getenv("ATP_FUZZ_DEBUG"))
        fprintf(stderr, "setup %#x: %u calls, %lld s, out %llu: %s\n", setup,
                fake_curl_calls(),
                (long long)((fuzz_host_now() - T0) / 1000000000),
                (unsigned long long)fuzz_hs.output_bytes, fuzz_hs.error);
    ops->backend_free(be);
    fake_curl_end();
    return 0;
}
