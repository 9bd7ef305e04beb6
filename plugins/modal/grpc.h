/*
 * plugins/modal/grpc.h - gRPC over libcurl: calls in flight on one curl
 * multi handle (grpc.c), and blocking unary calls with deadlines,
 * cancellation and Modal's retry policies on top (rpc.c).
 */
#ifndef MODAL_GRPC_H
#define MODAL_GRPC_H

#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>
#include <protobuf-c/protobuf-c.h>

#include <atp/plugin.h>

/* gRPC status codes (grpc/doc/statuscodes.md). */
enum {
    MODAL_OK = 0,
    MODAL_CANCELLED = 1,
    MODAL_UNKNOWN = 2,
    MODAL_INVALID_ARGUMENT = 3,
    MODAL_DEADLINE_EXCEEDED = 4,
    MODAL_NOT_FOUND = 5,
    MODAL_ALREADY_EXISTS = 6,
    MODAL_PERMISSION_DENIED = 7,
    MODAL_RESOURCE_EXHAUSTED = 8,
    MODAL_FAILED_PRECONDITION = 9,
    MODAL_ABORTED = 10,
    MODAL_OUT_OF_RANGE = 11,
    MODAL_UNIMPLEMENTED = 12,
    MODAL_INTERNAL = 13,
    MODAL_UNAVAILABLE = 14,
    MODAL_DATA_LOSS = 15,
    MODAL_UNAUTHENTICATED = 16,
    /* Not a gRPC code: no status came back (connection refused, reset,
     * stream error).  Retried like UNAVAILABLE. */
    MODAL_TRANSPORT = -1
};

/* How a call ended. */
typedef struct modal__status {
    int code;            /* a gRPC code, or MODAL_TRANSPORT */
    char message[512];   /* grpc-message (percent-decoded) or curl's error */
    double retry_after;  /* seconds, from an RPCRetryPolicy detail; -1 */
} modal__status;

/* Where a service lives. */
typedef struct modal__endpoint {
    char url[512];       /* scheme://host[:port], no trailing '/' */
    int plaintext;       /* http://: HTTP/2 with prior knowledge (h2c) */
    int verify;          /* https://: verify the peer and host name */
    const char *ca_file; /* https://: CA bundle instead of the system's */
} modal__endpoint;

/* A set of calls driven together; one curl multi handle. */
typedef struct modal__conn modal__conn;
/* One call in flight. */
typedef struct modal__rpc modal__rpc;

/*
 * Receives each response message as it is complete (server streaming
 * reads them incrementally).  Returns 0, or a negative ATP_E_* to abort
 * the call.
 */
typedef int (*modal__msg_fn)(void *ctx, const uint8_t *buf, size_t len);

typedef struct modal__rpc_req {
    const modal__endpoint *ep;
    const char *path;              /* "/modal.client.ModalClient/X" */
    const char *const *metadata;   /* "name: value", NULL-terminated */
    const ProtobufCMessage *msg;   /* the one request message */
    int64_t timeout_ms;            /* the client's cap on the call; 0 none */
    int wire_timeout;              /* also send timeout_ms as grpc-timeout
                                      (only where Modal's SDKs send one) */
    int64_t connect_timeout_ms;    /* to set up a connection; 0: 10 s */
    modal__msg_fn on_msg;
    void *ctx;
} modal__rpc_req;

/* Name of a gRPC status code, lower case ("unavailable"). */
const char *modal__code_name(int code);

/*
 * A new set of calls sharing connections.  @share (may be NULL) shares
 * DNS and TLS sessions with other sets.  Returns 0 or ATP_E_NOMEM.
 */
int modal__conn_new(modal__conn **out, CURLSH *share);

/* Abort whatever is in flight and free the set.  NULL is fine. */
void modal__conn_free(modal__conn *c);

/*
 * Start a call.  The request is packed at once, so @r and its message
 * may go when this returns (the endpoint must outlive the call).  Returns
 * 0, ATP_E_NOMEM or ATP_E_BACKEND (curl refused the handle).
 */
int modal__rpc_start(modal__conn *c, const modal__rpc_req *r,
                     modal__rpc **out);

/* Non-zero once the call has ended; its status is then final. */
int modal__rpc_done(const modal__rpc *k);

/* The status of an ended call. */
const modal__status *modal__rpc_status(const modal__rpc *k);

/*
 * The code an on_msg callback aborted the call with, or 0.  A call so
 * aborted ends with status INTERNAL.
 */
int modal__rpc_abort_rc(const modal__rpc *k);

/* Remove a call (aborting it when still running) and free it. */
void modal__rpc_free(modal__rpc *k);

/*
 * Move the transfers on: returns at once when a call ended, else after
 * activity, after one of @fds (may be NULL) polled ready, or after
 * @wait_ms.  Returns 0, or ATP_E_BACKEND when curl failed.
 */
int modal__conn_step(modal__conn *c, struct curl_waitfd *fds, unsigned n,
                     int wait_ms);

/* ---- rpc.c: blocking calls ------------------------------------------- */

/* What a blocking call watches. */
typedef struct modal__ctl {
    atp_call *call;
    int64_t deadline_ns; /* CLOCK_MONOTONIC; 0: none */
    int cancellable;     /* watch host->cancel_fd()/cancelled() */
    /* Optional: asked before a retry after a transient failure; 0 means
     * the other side is gone for good (a dead sandbox), so stop. */
    int (*alive)(void *ctx);
    void *alive_ctx;
} modal__ctl;

/* A retry policy (modal-protocol.md §5.2). */
typedef struct modal__retry {
    int max_retries;            /* attempts = 1 + max_retries */
    int64_t base_ms;            /* first delay, doubled each time */
    int64_t cap_ms;             /* largest delay; 0: no cap */
    int keyed;                  /* x-idempotency-key and x-retry-* */
    int throttle;               /* obey RPCRetryPolicy details */
    int64_t attempt_timeout_ms; /* per attempt; 0: only the deadline */
} modal__retry;

/* Control plane: 3 retries, 100 ms doubling to 1 s, keyed, throttled. */
extern const modal__retry modal__retry_control;
/* TaskCommandRouter: 10 retries, 10 ms doubling, no cap. */
extern const modal__retry modal__retry_router;

/* The ctl of a plugin call: its host deadline, cancellable. */
modal__ctl modal__ctl_of(atp_call *call);

/*
 * The same ctl with the deadline lowered to now + @ms (when that is
 * sooner, or there was none), cancellation as @cancellable says, and no
 * alive() check.
 */
modal__ctl modal__ctl_within(const modal__ctl *ctl, int64_t ms,
                             int cancellable);

/* Non-zero for the codes a unary call is retried on. */
int modal__retryable(int code);

/*
 * Wait @ms, moving the transfers of @c (may be NULL) on meanwhile.
 * Returns 0, ATP_E_TIMEOUT when the deadline comes first, or
 * ATP_E_CANCELLED.
 */
int modal__sleep(modal__conn *c, const modal__ctl *ctl, int64_t ms);

/*
 * Server-directed throttling: -1 waits as long as the server asks
 * (MODAL_MAX_THROTTLE_WAIT unset), 0 disables it, else a bound in ms.
 */
void modal__conn_set_throttle(modal__conn *c, int64_t max_ms);

/* The bound set with modal__conn_set_throttle(). */
int64_t modal__conn_throttle(const modal__conn *c);

/*
 * A unary call with retries.  On 0, *@resp is the decoded response (free
 * it with protobuf_c_message_free_unpacked(*resp, NULL)).  Otherwise
 * returns ATP_E_TIMEOUT (the deadline passed), ATP_E_CANCELLED, or
 * ATP_E_BACKEND with @st saying how the last attempt ended.
 */
int modal__unary(modal__conn *c, const modal__ctl *ctl,
                 const modal__retry *pol, const modal__rpc_req *r,
                 const ProtobufCMessageDescriptor *resp_desc,
                 ProtobufCMessage **resp, modal__status *st);

#endif /* MODAL_GRPC_H */
