/*
 * fuzz/modal_grpc_fuzzer.c - the modal plugin's gRPC layer (grpc.c: the
 * length-prefixed framing of response bodies, the status and message
 * trailers, grpc-status-details-bin and its RPCRetryPolicy; rpc.c: unary
 * calls with the control-plane and router retry policies, throttling and
 * deadlines) against answers scripted by the input (fake_curl.c), on a
 * virtual clock.
 *
 * Input: one byte of set-up, then the answers.  Set-up bits 0-1: the
 * reply message a unary call decodes; bit 2: the router's retry policy
 * instead of the control plane's; bit 3: a server-streaming call instead
 * (every message handed over is decoded as a stdio chunk); bits 4-5: the
 * throttle bound (none, unlimited, 0, 5 s).
 *
 * Oracle: a call never ends past its deadline (one poll of slack), a
 * failure always says why, a success decodes.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>

#include "fake_curl.h"
#include "fuzz.h"
#include "modal.h"

const atp_host_api *modal__host = &fuzz_host;

#define T0 1000000000000LL  /* the virtual clock's start */
#define DEADLINE_S 120

static volatile size_t sink;

struct stream {
    unsigned msgs;
    size_t bytes;
};

static int on_msg(void *ctx, const uint8_t *buf, size_t len)
{
    struct stream *s = ctx;
    Modal__TaskCommandRouter__TaskExecStdioReadResponse *r =
        modal__task_command_router__task_exec_stdio_read_response__unpack(
            NULL, len, buf);

    s->msgs++;
    if (r == NULL)
        return ATP_E_BACKEND;
    s->bytes += r->data.len;
    modal__task_command_router__task_exec_stdio_read_response__free_unpacked(
        r, NULL);
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const ProtobufCMessageDescriptor *const replies[] = {
        MODAL_CP_DESC(sandbox_wait_response),
        MODAL_CP_DESC(task_get_command_router_access_response),
        MODAL_CP_DESC(sandbox_list_response),
        MODAL_TCR_DESC(task_exec_wait_response),
    };
    static const int64_t throttles[] = {-1, -1, 0, 5000};
    static const char *const md[] = {"x-modal-token-id: ak-fuzz", NULL};
    Modal__Client__SandboxWaitRequest req =
        MODAL__CLIENT__SANDBOX_WAIT_REQUEST__INIT;
    modal__endpoint ep;
    modal__rpc_req r;
    modal__conn *c;
    modal__status st;
    modal__ctl ctl;
    unsigned setup;
    int rc;

    if (size == 0)
        return 0;
    setup = data[0];
    fuzz_host_reset();
    fuzz_hs.virtual_clock = 1;
    fuzz_hs.clock_ns = T0;
    fuzz_hs.deadline_ns = T0 + DEADLINE_S * 1000000000LL;
    fake_curl_begin(data + 1, size - 1);
    memset(&ep, 0, sizeof(ep));
    snprintf(ep.url, sizeof(ep.url), "http://localhost:1");
    ep.plaintext = 1;
    req.sandbox_id = (char *)"sb-fuzz";
    memset(&r, 0, sizeof(r));
    r.ep = &ep;
    r.path = "/modal.client.ModalClient/SandboxWait";
    r.metadata = md;
    r.msg = &req.base;
    r.timeout_ms = 10000;
    if (modal__conn_new(&c, NULL) != 0)
        fuzz_fail("modal__conn_new");
    modal__conn_set_throttle(c, throttles[setup >> 4 & 3]);
    ctl = modal__ctl_of(NULL);
    if (setup & 8) {
        struct stream s = {0, 0};
        modal__rpc *k;

        r.on_msg = on_msg;
        r.ctx = &s;
        if (modal__rpc_start(c, &r, &k) != 0)
            fuzz_fail("modal__rpc_start");
        while (!modal__rpc_done(k) && fuzz_host_now() < ctl.deadline_ns)
            if (modal__conn_step(c, NULL, 0, 1000) != 0)
                break;
        if (modal__rpc_done(k)) {
            st = *modal__rpc_status(k);
            sink += strlen(st.message) + s.bytes;
            if (modal__rpc_abort_rc(k) && st.code == MODAL_OK)
                fuzz_fail("an aborted call ended well");
        }
        modal__rpc_free(k);
    } else {
        ProtobufCMessage *resp = NULL;

        rc = modal__unary(c, &ctl, setup & 4 ? &modal__retry_router
                                             : &modal__retry_control,
                          &r, replies[setup & 3], &resp, &st);
        if (rc == 0 && resp == NULL)
            fuzz_fail("a unary call succeeded without a reply");
        if (rc != 0 && resp != NULL)
            fuzz_fail("a unary call failed with a reply");
        if (rc == ATP_E_BACKEND && st.code == MODAL_OK)
            fuzz_fail("a unary call failed with status ok");
        if (resp)
            protobuf_c_message_free_unpacked(resp, NULL);
        sink += strlen(st.message);
    }
    if (fuzz_host_now() > ctl.deadline_ns + 1000000000LL)
        fuzz_fail("the call ended %lld ms past its deadline",
                  (long long)(fuzz_host_now() - ctl.deadline_ns) / 1000000);
    modal__conn_free(c);
    fake_curl_end();
    return 0;
}
