/*
 * plugins/modal/rpc.c - blocking gRPC calls: deadlines, cancellation and
 * the retry policies of modal-protocol.md §5.2.
 *
 * Control plane: up to 3 retries on CANCELLED, UNKNOWN,
 * DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE and transport errors, 100 ms
 * doubling up to 1 s, every attempt carrying the same x-idempotency-key
 * and its x-retry-attempt / x-retry-delay.  An error whose details carry
 * an RPCRetryPolicy is a throttle: wait what it says (at least 100 ms),
 * without counting an attempt, while MODAL_MAX_THROTTLE_WAIT allows.
 * Router: 10 retries, 10 ms doubling, no keys.  Every wait watches the
 * call's deadline and cancel descriptor.
 */
#include "config.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "modal.h"

const modal__retry modal__retry_control = {3, 100, 1000, 1, 1, 0};
const modal__retry modal__retry_router = {10, 10, 0, 0, 0, 0};

modal__ctl modal__ctl_of(atp_call *call)
{
    modal__ctl ctl;

    memset(&ctl, 0, sizeof(ctl));
    ctl.call = call;
    ctl.deadline_ns = modal__host->deadline_ns(call);
    ctl.cancellable = 1;
    return ctl;
}

modal__ctl modal__ctl_within(const modal__ctl *ctl, int64_t ms,
                             int cancellable)
{
    modal__ctl c = *ctl;
    int64_t d = modal__host->now_ns() + ms * 1000000;

    if (c.deadline_ns == 0 || d < c.deadline_ns)
        c.deadline_ns = d;
    c.cancellable = cancellable;
    c.alive = NULL;
    c.alive_ctx = NULL;
    return c;
}

int modal__retryable(int code)
{
    return code == MODAL_CANCELLED || code == MODAL_UNKNOWN ||
           code == MODAL_DEADLINE_EXCEEDED || code == MODAL_INTERNAL ||
           code == MODAL_UNAVAILABLE || code == MODAL_TRANSPORT;
}

static int cancelled(const modal__ctl *ctl)
{
    return ctl->cancellable && modal__host->cancelled(ctl->call);
}

/*
 * Wait until call @k has ended (when given) or time @until_ns (when
 * non-zero), moving the transfers on.  0, ATP_E_TIMEOUT, ATP_E_CANCELLED
 * or ATP_E_BACKEND.
 */
static int wait_for(modal__conn *c, const modal__ctl *ctl, modal__rpc *k,
                    int64_t until_ns)
{
    int cfd = ctl->cancellable ? modal__host->cancel_fd(ctl->call) : -1;

    for (;;) {
        struct curl_waitfd w = {cfd, CURL_WAIT_POLLIN, 0};
        int64_t now = modal__host->now_ns(), wait_ms = 1000;

        if (k && modal__rpc_done(k))
            return 0;
        if (cancelled(ctl))
            return ATP_E_CANCELLED;
        if (ctl->deadline_ns && now >= ctl->deadline_ns)
            return ATP_E_TIMEOUT;
        if (until_ns && now >= until_ns)
            return 0;
        if (ctl->deadline_ns && (ctl->deadline_ns - now) / 1000000 < wait_ms)
            wait_ms = (ctl->deadline_ns - now + 999999) / 1000000;
        if (until_ns && (until_ns - now) / 1000000 < wait_ms)
            wait_ms = (until_ns - now + 999999) / 1000000;
        if (c) {
            if (modal__conn_step(c, cfd >= 0 ? &w : NULL, cfd >= 0 ? 1 : 0,
                                 (int)wait_ms) != 0)
                return ATP_E_BACKEND;
        } else {
            struct pollfd p = {cfd, POLLIN, 0};

            poll(&p, cfd >= 0 ? 1 : 0, (int)wait_ms);
        }
    }
}

int modal__sleep(modal__conn *c, const modal__ctl *ctl, int64_t ms)
{
    return wait_for(c, ctl, NULL, modal__host->now_ns() + ms * 1000000);
}

/* Keeps the one message of a unary response. */
struct one {
    unsigned char *buf;
    size_t len;
    int n;
};

static int keep_one(void *ctx, const uint8_t *buf, size_t len)
{
    struct one *o = ctx;

    if (o->n++ > 0)
        return ATP_E_BACKEND; /* a unary call answers with one message */
    o->buf = malloc(len ? len : 1);
    if (o->buf == NULL)
        return ATP_E_NOMEM;
    memcpy(o->buf, buf, len);
    o->len = len;
    return 0;
}

/* The metadata of one attempt: the caller's, plus the retry headers. */
static int attempt_metadata(modal__strv *md, const modal__rpc_req *r,
                            const modal__retry *pol, const char *key,
                            int attempt, int throttled, double since_s)
{
    size_t i;
    int rc = 0;

    for (i = 0; r->metadata && r->metadata[i] && rc == 0; i++)
        rc = modal__strv_addf(md, "%s", r->metadata[i]);
    if (!pol->keyed || rc)
        return rc;
    rc = modal__strv_addf(md, "x-idempotency-key: %s", key);
    if (rc == 0)
        rc = modal__strv_addf(md, "x-retry-attempt: %d", attempt);
    if (rc == 0)
        rc = modal__strv_addf(md, "x-throttle-retry-attempt: %d", throttled);
    /* Both delays count from the first attempt, as the SDKs send them
     * (grpc_utils.py _retry_transient_errors; go/client.go). */
    if (rc == 0 && attempt > 0)
        rc = modal__strv_addf(md, "x-retry-delay: %.3f", since_s);
    if (rc == 0 && throttled > 0)
        rc = modal__strv_addf(md, "x-throttle-retry-delay: %.3f", since_s);
    return rc;
}

/* One attempt; 0 with @o filled and @st set, or a local failure. */
static int attempt_once(modal__conn *c, const modal__ctl *ctl,
                        const modal__rpc_req *r, const char *const *md,
                        int64_t timeout_ms, struct one *o, modal__status *st)
{
    modal__rpc_req req = *r;
    modal__rpc *k;
    int rc;

    req.metadata = md;
    req.timeout_ms = timeout_ms;
    req.on_msg = keep_one;
    req.ctx = o;
    if ((rc = modal__rpc_start(c, &req, &k)) != 0) {
        st->code = MODAL_INTERNAL;
        snprintf(st->message, sizeof(st->message), "cannot start the call");
        return rc;
    }
    rc = wait_for(c, ctl, k, 0);
    if (rc == 0)
        *st = *modal__rpc_status(k);
    modal__rpc_free(k);
    return rc;
}

int modal__unary(modal__conn *c, const modal__ctl *ctl,
                 const modal__retry *pol, const modal__rpc_req *r,
                 const ProtobufCMessageDescriptor *resp_desc,
                 ProtobufCMessage **resp, modal__status *st)
{
    int64_t t0 = modal__host->now_ns(), delay = pol->base_ms;
    int64_t throttle_max = modal__conn_throttle(c);
    int attempt = 0, throttled = 0, rc;
    char key[37];

    *resp = NULL;
    memset(st, 0, sizeof(*st));
    modal__uuid4(key);
    for (;;) {
        modal__strv md = {NULL, 0, 0};
        struct one o = {NULL, 0, 0};
        int64_t now = modal__host->now_ns(), timeout_ms = r->timeout_ms;

        if (pol->attempt_timeout_ms &&
            (timeout_ms == 0 || pol->attempt_timeout_ms < timeout_ms))
            timeout_ms = pol->attempt_timeout_ms;
        if (ctl->deadline_ns) {
            int64_t left = (ctl->deadline_ns - now) / 1000000;

            if (left <= 0) {
                if (st->code == 0)
                    snprintf(st->message, sizeof(st->message),
                             "the deadline passed");
                return ATP_E_TIMEOUT;
            }
            if (timeout_ms == 0 || left < timeout_ms)
                timeout_ms = left;
        }
        if (cancelled(ctl))
            return ATP_E_CANCELLED;
        rc = attempt_metadata(&md, r, pol, key, attempt, throttled,
                              (double)(now - t0) / 1e9);
        if (rc == 0)
            rc = attempt_once(c, ctl, r, (const char *const *)md.v,
                              timeout_ms, &o, st);
        modal__strv_free(&md);
        if (rc == 0 && st->code == MODAL_OK) {
            if (o.n != 1) {
                st->code = MODAL_INTERNAL;
                snprintf(st->message, sizeof(st->message),
                         "the server answered a unary call with %d "
                         "messages", o.n);
                free(o.buf);
                return ATP_E_BACKEND;
            }
            *resp = protobuf_c_message_unpack(resp_desc, NULL, o.len, o.buf);
            free(o.buf);
            if (*resp == NULL) {
                st->code = MODAL_INTERNAL;
                snprintf(st->message, sizeof(st->message),
                         "the response is not a valid %s",
                         resp_desc->short_name);
                return ATP_E_BACKEND;
            }
            return 0;
        }
        free(o.buf);
        if (rc == ATP_E_TIMEOUT && st->message[0] == '\0')
            snprintf(st->message, sizeof(st->message), "no answer from %s "
                     "before the deadline", r->path);
        if (rc)
            return rc;
        if (pol->throttle && st->retry_after >= 0 && throttle_max != 0) {
            /* The server's float, bounded before it becomes an int64:
             * 1e30 or inf would not fit, and a day outlasts any deadline. */
            int64_t wait_ns = st->retry_after < 0.1 ? 100000000
                              : st->retry_after > 86400.0
                                  ? 86400 * 1000000000LL
                                  : (int64_t)(st->retry_after * 1e9);

            if (throttle_max < 0 ||
                (modal__host->now_ns() - t0 + wait_ns) / 1000000 <
                    throttle_max) {
                if ((rc = modal__sleep(c, ctl, wait_ns / 1000000)) != 0)
                    return rc;
                throttled++;
                continue;
            }
        }
        if (!modal__retryable(st->code) || attempt >= pol->max_retries ||
            (attempt >= 1 && ctl->alive && !ctl->alive(ctl->alive_ctx)))
            return st->code == MODAL_DEADLINE_EXCEEDED ? ATP_E_TIMEOUT
                                                       : ATP_E_BACKEND;
        if ((rc = modal__sleep(c, ctl, delay)) != 0)
            return rc;
        attempt++;
        delay *= 2;
        if (pol->cap_ms && delay > pol->cap_ms)
            delay = pol->cap_ms;
    }
}
