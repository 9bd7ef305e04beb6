/*
 * plugins/modal/modal.h - what the files of the Modal plugin share.
 *
 *   modal.c    entry point, options, backend, check, reap
 *   client.c   identity, server urls, ClientHello
 *   sandbox.c  session open/close: app, image, secret, sandbox, router
 *   ready.c    a new sandbox's router reached, its workdir made
 *   exec.c     commands through the TaskCommandRouter
 *   creds.c    credentials and profiles
 *   grpc.c     gRPC calls over libcurl; rpc.c blocking calls and retries
 */
#ifndef MODAL_MODAL_H
#define MODAL_MODAL_H

#include <pthread.h>
#include <stdint.h>

#include <curl/curl.h>

#include <atp/plugin.h>

#include "api.pb-c.h"
#include "creds.h"
#include "grpc.h"
#include "task_command_router.pb-c.h"
#include "util.h"

/* Short names for what protoc-c generates. */
#define MODAL_CP_DESC(m) (&modal__client__##m##__descriptor)
#define MODAL_TCR_DESC(m) (&modal__task_command_router__##m##__descriptor)
#define MODAL_CREATION(t) \
    MODAL__CLIENT__OBJECT_CREATION_TYPE__OBJECT_CREATION_TYPE_##t
#define MODAL_STATUS(s) \
    MODAL__CLIENT__GENERIC_RESULT__GENERIC_STATUS__GENERIC_STATUS_##s
#define MODAL_TCR(name) MODAL__TASK_COMMAND_ROUTER__##name

/* The host table, kept by the entry point. */
extern const atp_host_api *modal__host;

/* Where the workdir lives in the sandbox when the core does not say. */
#define MODAL_SANDBOX_WORKDIR "/workspace/wd"

/* Room for an id Modal gives (app, image, secret, sandbox, task). */
#define MODAL_ID_MAX 128

/* The tag that labels every sandbox with the atp run id. */
#define MODAL_RUN_TAG "atp_run_id"

/* Most server urls tried in turn ("URL,URL,..."). */
#define MODAL_MAX_SERVERS 4
/* Kills of what earlier commands left, in flight at once. */
#define MODAL_MAX_SWEEPS 4

struct modal_backend {
    pthread_mutex_t mu; /* guards ready_rc, cp_meta and app_id */
    pthread_mutex_t hello_mu; /* held while the server is chosen */
    /* options */
    char *app, *image, *region, *environment, *server_url, *profile;
    char *ca_file;
    char *client_version;   /* x-modal-client-version */
    char *libmodal_version; /* x-modal-libmodal-version; NULL: not sent */
    int64_t client_type;    /* x-modal-client-type */
    double cpu;
    int64_t lean_threads;   /* LEAN_NUM_THREADS pinned; 0: not set */
    int64_t memory_mib;
    int64_t call_timeout_ms; /* per control-plane attempt */
    int64_t router_ready_ms; /* for a new sandbox's router to answer */
    int tls_verify;          /* [backend.modal] tls_verify: 0 only when
                                explicitly set (and logged) */
    int64_t task_wait_ms;    /* for the sandbox to be scheduled */
    /* DNS and TLS sessions shared by every session of this backend */
    CURLSH *share;
    pthread_mutex_t share_mu[CURL_LOCK_DATA_LAST];
    /* resolved at open (no network), then read-only */
    int ready_rc;         /* how that went: 0 or an ATP_E_* */
    modal__creds creds;
    modal__endpoint servers[MODAL_MAX_SERVERS]; /* the urls to try */
    size_t n_servers;
    modal__strv cp_meta;  /* its metadata lines, tokens included */
    /* set by the first ClientHello (hello_mu), then read-only */
    int hello_done;
    modal__endpoint cp;   /* the control plane: the server that answered */
    char app_id[MODAL_ID_MAX]; /* cached AppGetOrCreate */
    /* The image resolved once (pin_mu, held while it is looked up):
     * every sandbox of the backend runs this im- id, whatever its tag
     * points at later. */
    pthread_mutex_t pin_mu;
    char *pinned_name;
    char pinned_id[MODAL_ID_MAX];
};

struct modal_session {
    struct modal_backend *be;
    modal__conn *conn;
    char sandbox_id[MODAL_ID_MAX];
    char task_id[MODAL_ID_MAX];
    char *workdir;         /* in the sandbox */
    modal__endpoint router;
    char *jwt;             /* router access token */
    int64_t jwt_exp;       /* its expiry, seconds since the epoch; 0 */
    int64_t created_ns;    /* monotonic time of creation */
    int64_t expires_ns;    /* monotonic time the TTL runs out */
    int created;           /* sandbox_id names a sandbox of ours */
    int terminated;
    int dead;              /* no more commands: dead_why says why */
    char dead_why[512];
    /* The kills of what the last commands left, still in flight: each
     * runs on with the next commands' calls until it is answered. */
    modal__rpc *sweep[MODAL_MAX_SWEEPS];
    size_t n_sweep;
    int one_shot;          /* one command, then the sandbox goes */
};

/* ---- modal.c ----------------------------------------------------------- */

/*
 * Record the failure of @call (host->set_error) and keep its text for
 * this thread, so that a later message can build on it.  Returns @code.
 */
int modal__error(atp_call *call, int code, const char *fmt, ...)
    ATP_PRINTF(3, 4);

/* The text of this thread's last modal__error(). */
const char *modal__error_text(void);

/*
 * Are the credentials and the control-plane endpoint there?  (They are
 * resolved at open, without network.)  Returns 0, or ATP_E_CREDENTIALS /
 * ATP_E_CONFIG with set_error() done for @call.
 */
int modal__backend_ready(atp_call *call, struct modal_backend *be);

/* ---- client.c ---------------------------------------------------------- */

/*
 * Parse the server url (one, or several separated by ',') into
 * be->servers and build the metadata of control-plane calls: the client's
 * identity and the tokens.  No network.  0, or ATP_E_CONFIG / ATP_E_NOMEM
 * with set_error() done.
 */
int modal__client_setup(atp_call *call, struct modal_backend *be);

/*
 * Say hello to Modal (ClientHello), once per backend unless @always: the
 * first time, the server urls are tried in turn and the first that
 * answers becomes be->cp for every later call.  The server's warnings
 * (deprecations) are logged as warnings and sent as "modal_warning"
 * events.  Returns 0, or an ATP_E_* with set_error() done:
 * ATP_E_CONFIG when Modal refuses this client (an old client version),
 * saying which setting to change.
 */
int modal__hello(atp_call *call, struct modal_backend *be, modal__conn *c,
                 const modal__ctl *ctl, int always);

/* ---- sandbox.c --------------------------------------------------------- */

/*
 * The app's id: AppGetOrCreate, creating it when @create (cached in the
 * backend).  Returns 0, ATP_E_NOTFOUND when it does not exist and
 * !@create, or as modal__unary().
 */
int modal__find_app(struct modal_backend *be, modal__conn *c,
                    const modal__ctl *ctl, int create, char *id, size_t len,
                    modal__status *st);

/*
 * The id of image @name: ImageFromId for "im-...", else ImageGetByTag of
 * name[:tag] (":latest" added), in the backend's environment.  Returns 0
 * or as modal__unary().
 */
int modal__find_image(struct modal_backend *be, modal__conn *c,
                      const modal__ctl *ctl, const char *name, char *id,
                      size_t len, modal__status *st);

/* Report a failed modal__find_image(): ATP_E_IMAGE when it is missing. */
int modal__fail_image(atp_call *call, struct modal_backend *be, int rc,
                      const modal__status *st, const char *name);

/* ops->session_open: create the sandbox and reach its router. */
int modal__session_open(atp_call *call, void *backend,
                        const atp_session_spec *spec, void **out);

/* ops->session_close: terminate the sandbox; idempotent. */
int modal__session_close(atp_call *call, void *session);

/* ops->session_free. */
void modal__session_free(void *session);

/*
 * A unary control-plane call of ModalClient method @rpc, with the
 * backend's metadata and the control-plane retry policy.  As
 * modal__unary().
 */
int modal__cp_call(struct modal_backend *be, modal__conn *c,
                   const modal__ctl *ctl, const char *rpc,
                   const ProtobufCMessage *req,
                   const ProtobufCMessageDescriptor *rd,
                   ProtobufCMessage **resp, modal__status *st);

/*
 * A unary TaskCommandRouter call with the session's JWT, refreshed once
 * when the router says UNAUTHENTICATED.  As modal__unary().
 */
int modal__router_call(struct modal_session *s, const modal__ctl *ctl,
                       const char *rpc, const ProtobufCMessage *req,
                       const ProtobufCMessageDescriptor *rd,
                       ProtobufCMessage **resp, modal__status *st);

/* How modal__router_call_with() calls. */
typedef struct modal__router_opts {
    const modal__retry *pol; /* retries (JWT renewal comes on top) */
    int64_t timeout_ms;      /* per attempt; 0: call_timeout_s */
    int wire_timeout;        /* send it as grpc-timeout too */
} modal__router_opts;

/* modal__router_call() with another retry policy or time limit. */
int modal__router_call_with(struct modal_session *s, const modal__ctl *ctl,
                            const modal__router_opts *o, const char *rpc,
                            const ProtobufCMessage *req,
                            const ProtobufCMessageDescriptor *rd,
                            ProtobufCMessage **resp, modal__status *st);

/* The "authorization: Bearer ..." line for router calls (owned by @s). */
const char *modal__router_auth(struct modal_session *s);

/* Fetch a fresh router JWT (and URL).  0 or as modal__unary(). */
int modal__router_refresh(struct modal_session *s, const modal__ctl *ctl,
                          modal__status *st);

/*
 * Terminate every running sandbox tagged with run id @run (only sandbox
 * @only among them, when not NULL), as Modal lists them; *@found is the
 * count matched.  0, or a negative ATP_E_* with the call's error set.
 */
int modal__reap_run(atp_call *call, struct modal_backend *be,
                    modal__conn *c, const modal__ctl *ctl, const char *run,
                    const char *only, int *found);

/*
 * Terminate sandbox @id (not cancellable; bounded by @ctl's deadline, or
 * 30 s).  NOT_FOUND counts as done.  Returns 0 or as modal__unary().
 */
int modal__terminate_id(struct modal_backend *be, modal__conn *c,
                        const modal__ctl *ctl, const char *id,
                        modal__status *st);

/*
 * Terminate the session's sandbox once, tell the ledger, mark the session
 * dead with @why.  Returns 0 or an ATP_E_* with set_error() done.
 */
/* Is "KEY=VALUE" @kv a variable the sandbox pins (IS_SANDBOX,
 * LEAN_NUM_THREADS), which a command's environment must not override? */
int modal__pinned(const struct modal_backend *be, const char *kv);

/*
 * Free the kills of what earlier commands left behind that have been
 * answered (the others run on with the next command's calls).
 */
void modal__sweep_collect(struct modal_session *s);
/* Free them all, answered or not (the sandbox is gone). */
void modal__sweep_free(struct modal_session *s);

int modal__session_terminate(atp_call *call, struct modal_session *s,
                             const char *why);

/*
 * Has the sandbox finished?  One SandboxWait with timeout 0: returns 1
 * and describes the result in @why, 0 when it runs, negative when that
 * could not be told.
 */
int modal__sandbox_finished(struct modal_session *s, const modal__ctl *ctl,
                            char *why, size_t len);

/*
 * Report a failed call: the message says what was being done (@what)
 * and what the server said.  Cancellation, deadlines and rejected
 * credentials get their own codes; any other failure @code.  Returns the
 * ATP_E_* code.
 */
int modal__fail(atp_call *call, int rc, const modal__status *st, int code,
                const char *what);

/* ---- ready.c ----------------------------------------------------------- */

/*
 * Reach the router of a sandbox just scheduled, retrying for
 * router_ready_timeout_s as it starts (with "sandbox_waiting" events),
 * and create the session's workdir in it.  Returns 0, or an ATP_E_* with
 * set_error() done: ATP_E_TIMEOUT when the router did not answer in time,
 * ATP_E_PROVISION when the sandbox ended or the workdir could not be
 * made.  The caller terminates the sandbox on failure.
 */
int modal__sandbox_ready(atp_call *call, struct modal_session *s,
                         const modal__ctl *ctl);

/* ---- exec.c ------------------------------------------------------------ */

/* ops->exec. */
int modal__exec(atp_call *call, void *session, const atp_exec_spec *spec,
                atp_exec_outcome *out);

#endif /* MODAL_MODAL_H */
