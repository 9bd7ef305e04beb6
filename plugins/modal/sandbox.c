/*
 * plugins/modal/sandbox.c - a Modal sandbox's life: provision, liveness,
 * terminate.
 *
 * Provision (modal-protocol.md §2): AppGetOrCreate, ImageGetByTag (or
 * ImageFromId), SecretGetOrCreate with the session's environment,
 * SandboxCreate (an idle entrypoint; milli-CPU, MiB; timeout_secs = the
 * session's TTL; tagged with the run id), then
 * SandboxGetTaskId every 0.5 s until the task is scheduled, then
 * TaskGetCommandRouterAccess for the worker's exec endpoint and its JWT,
 * then (ready.c) that router reached as the sandbox starts and the
 * workdir made.
 *
 * Never leak: SandboxCreate, once sent, is waited for even when the run
 * is cancelled; its id goes to the core's ledger the moment it is known;
 * any failure after it terminates the sandbox before returning; close
 * terminates it, once, and runs after cancellation too.
 */
#define _GNU_SOURCE
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "modal.h"

#define TASK_POLL_MS 500
#define TERMINATE_MS 30000
#define MAX_TTL_S 86400

int modal__cp_call(struct modal_backend *be, modal__conn *c,
                   const modal__ctl *ctl, const char *rpc,
                   const ProtobufCMessage *req,
                   const ProtobufCMessageDescriptor *rd,
                   ProtobufCMessage **resp, modal__status *st)
{
    char path[128];
    modal__rpc_req r;

    snprintf(path, sizeof(path), "/modal.client.ModalClient/%s", rpc);
    memset(&r, 0, sizeof(r));
    r.ep = &be->cp;
    r.path = path;
    r.metadata = (const char *const *)be->cp_meta.v;
    r.msg = req;
    r.timeout_ms = be->call_timeout_ms;
    return modal__unary(c, ctl, &modal__retry_control, &r, rd, resp, st);
}

int modal__fail(atp_call *call, int rc, const modal__status *st, int code,
                const char *what)
{
    const char *msg = st->message[0] ? st->message : "no message";

    if (rc == ATP_E_CANCELLED)
        return modal__error(call, ATP_E_CANCELLED, "cancelled "
                            "while %s", what);
    if (rc == ATP_E_NOMEM)
        return modal__error(call, ATP_E_NOMEM, "out of memory "
                            "while %s", what);
    if (rc == ATP_E_TIMEOUT)
        return modal__error(call, ATP_E_TIMEOUT, "%s timed out: "
                            "modal did not answer in time (%s); "
                            "check the network, or raise "
                            "call_timeout_s", what, msg);
    if (st->code == MODAL_UNAUTHENTICATED ||
        st->code == MODAL_PERMISSION_DENIED)
        return modal__error(call, ATP_E_CREDENTIALS, "%s: modal "
                            "rejected the credentials (%s: %s); "
                            "check MODAL_TOKEN_ID and "
                            "MODAL_TOKEN_SECRET or the profile in "
                            "~/.modal.toml (`modal token new`)",
                            what, modal__code_name(st->code),
                            msg);
    if (st->code == MODAL_TRANSPORT)
        return modal__error(call, ATP_E_BACKEND, "%s: cannot reach modal: "
                            "%s", what, msg);
    if (st->code == MODAL_RESOURCE_EXHAUSTED)
        /* A rate or quota limit of the workspace: a batch slows its
         * creations down and tries again. */
        return modal__error(call, ATP_E_RATE, "%s: modal refused for now "
                            "(RESOURCE_EXHAUSTED: %s): lower -j or --rate, "
                            "or [backend.modal] max_concurrent / "
                            "create_rate", what, msg);
    if (modal__retryable(st->code))
        code = ATP_E_BACKEND; /* transient, and still failing: infra */
    return modal__error(call, code, "%s failed: %s: %s", what,
                        modal__code_name(st->code), msg);
}

/* ---- app, image, secret ------------------------------------------------- */

int modal__find_app(struct modal_backend *be, modal__conn *c,
                    const modal__ctl *ctl, int create, char *id, size_t len,
                    modal__status *st)
{
    Modal__Client__AppGetOrCreateRequest req =
        MODAL__CLIENT__APP_GET_OR_CREATE_REQUEST__INIT;
    Modal__Client__AppGetOrCreateResponse *resp = NULL;
    int rc;

    pthread_mutex_lock(&be->mu);
    modal__copy(id, len, be->app_id);
    pthread_mutex_unlock(&be->mu);
    if (id[0])
        return 0;
    req.app_name = be->app;
    req.environment_name = be->creds.environment;
    req.object_creation_type =
        create ? MODAL_CREATION(CREATE_IF_MISSING)
               : MODAL_CREATION(UNSPECIFIED);
    rc = modal__cp_call(be, c, ctl, "AppGetOrCreate", &req.base,
                        MODAL_CP_DESC(app_get_or_create_response),
                        (ProtobufCMessage **)&resp, st);
    if (rc == ATP_E_BACKEND && st->code == MODAL_NOT_FOUND && !create)
        return ATP_E_NOTFOUND;
    if (rc)
        return rc;
    rc = modal__copy_id(id, len, resp->app_id);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    if (rc != 0) {
        st->code = MODAL_INTERNAL;
        snprintf(st->message, sizeof(st->message), "no usable app id came "
                 "back (empty, or longer than %zu bytes)", len - 1);
        return ATP_E_BACKEND;
    }
    pthread_mutex_lock(&be->mu);
    modal__copy(be->app_id, sizeof(be->app_id), id);
    pthread_mutex_unlock(&be->mu);
    return 0;
}

/* "[env/]name:tag" as ImageGetByTag wants it. */
static void image_tag(const struct modal_backend *be, const char *name,
                      char *out, size_t len)
{
    const char *slash = strrchr(name, '/');
    int tagged = strchr(slash ? slash : name, ':') != NULL;
    int prefix = be->creds.environment[0] && strchr(name, '/') == NULL;

    snprintf(out, len, "%s%s%s%s", prefix ? be->creds.environment : "",
             prefix ? "/" : "", name, tagged ? "" : ":latest");
}

int modal__find_image(struct modal_backend *be, modal__conn *c,
                      const modal__ctl *ctl, const char *name, char *id,
                      size_t len, modal__status *st)
{
    ProtobufCMessage *resp = NULL;
    int rc;

    if (strncmp(name, "im-", 3) == 0) {
        Modal__Client__ImageFromIdRequest req =
            MODAL__CLIENT__IMAGE_FROM_ID_REQUEST__INIT;

        req.image_id = (char *)name;
        rc = modal__cp_call(be, c, ctl, "ImageFromId", &req.base,
                            MODAL_CP_DESC(image_from_id_response),
                            &resp, st);
        if (rc == 0)
            modal__copy_id(id, len, ((Modal__Client__ImageFromIdResponse *)
                                         resp)->image_id);
    } else {
        Modal__Client__ImageGetByTagRequest req =
            MODAL__CLIENT__IMAGE_GET_BY_TAG_REQUEST__INIT;
        char tag[512];

        image_tag(be, name, tag, sizeof(tag));
        req.tag = tag;
        rc = modal__cp_call(be, c, ctl, "ImageGetByTag", &req.base,
                            MODAL_CP_DESC(image_get_by_tag_response),
                            &resp, st);
        if (rc == 0)
            modal__copy_id(id, len, ((Modal__Client__ImageGetByTagResponse *)
                                         resp)->image_id);
    }
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    if (rc == 0 && id[0] == '\0') {
        st->code = MODAL_INTERNAL;
        snprintf(st->message, sizeof(st->message), "no usable image id came "
                 "back (empty, or longer than %zu bytes)", len - 1);
        return ATP_E_BACKEND;
    }
    return rc;
}

int modal__fail_image(atp_call *call, struct modal_backend *be, int rc,
                      const modal__status *st, const char *name)
{
    const char *slash = strrchr(name, '/'), *said;
    char tag[512], where[192];
    const char *bare = slash ? slash + 1 : name;

    if (rc != ATP_E_BACKEND ||
        !(st->code == MODAL_NOT_FOUND ||
          (st->code == MODAL_FAILED_PRECONDITION &&
           strstr(st->message, "not find image") != NULL)))
        return modal__fail(call, rc, st, ATP_E_BACKEND,
                           "looking up the image");
    said = st->message[0] ? st->message : "no message";
    if (strncmp(name, "im-", 3) == 0)
        return modal__error(
            call, ATP_E_IMAGE, "modal image id '%s' was not found "
            "(ImageFromId): check the id (`modal image names list` shows "
            "the ids of published images), or set [image] name (or image "
            "in the modal backend's section) to a published name[:tag]; "
            "modal said: %s: %s", name, modal__code_name(st->code), said);
    image_tag(be, name, tag, sizeof(tag));
    if (slash)
        snprintf(where, sizeof(where), "environment '%.*s'",
                 (int)(slash - name), name);
    else if (be->creds.environment[0])
        snprintf(where, sizeof(where), "environment '%s'",
                 be->creds.environment);
    else
        snprintf(where, sizeof(where), "the workspace's default environment");
    return modal__error(
        call, ATP_E_IMAGE, "modal image '%s' was not found: looked up as "
        "'%s' (ImageGetByTag) in %s.  Publish it there with Modal's "
        "Python SDK (image.build(app), then image.publish(\"%s\")%s%s), "
        "see what is published with `modal image names list`, or set "
        "[image] name (or image in the modal backend's section) to a "
        "published name[:tag] or an im- id; modal said: %s: %s",
        name, tag, where, bare,
        !slash && be->creds.environment[0] ? " with MODAL_ENVIRONMENT="
                                             : "",
        !slash && be->creds.environment[0] ? be->creds.environment : "",
        modal__code_name(st->code), said);
}

/* Put KEY=VALUE into the entries, replacing KEY.  The core has checked
 * every name ([A-Za-z_][A-Za-z0-9_]*, as a secret's keys must be). */
static void env_put(Modal__Client__SecretGetOrCreateRequest__EnvDictEntry *e,
                    size_t *n, char *kv)
{
    char *eq = strchr(kv, '=');
    size_t i;

    *eq = '\0';
    for (i = 0; i < *n; i++)
        if (strcmp(e[i].key, kv) == 0)
            break;
    if (i == *n) {
        modal__client__secret_get_or_create_request__env_dict_entry__init(
            &e[i]);
        (*n)++;
    }
    e[i].key = kv;
    e[i].value = eq + 1;
}

int modal__pinned(const struct modal_backend *be, const char *kv)
{
    return strncmp(kv, "IS_SANDBOX=", 11) == 0 ||
           (be->lean_threads > 0 && strncmp(kv, "LEAN_NUM_THREADS=", 17) == 0);
}

/*
 * The sandbox's environment as an app-owned secret: the session's
 * variables ([env] < env.KEY < -e), then, pinned last as the seed did,
 * IS_SANDBOX=1 and LEAN_NUM_THREADS = lean_num_threads (by default the
 * cores), so that Lean does not oversubscribe whatever [env] says for
 * other machines.  lean_num_threads = 0 leaves LEAN_NUM_THREADS alone.
 */
static int make_secret(atp_call *call, struct modal_session *s,
                       const modal__ctl *ctl, const char *app_id,
                       const atp_session_spec *spec, char *id, size_t len)
{
    struct modal_backend *be = s->be;
    Modal__Client__SecretGetOrCreateRequest req =
        MODAL__CLIENT__SECRET_GET_OR_CREATE_REQUEST__INIT;
    Modal__Client__SecretGetOrCreateRequest__EnvDictEntry *e = NULL;
    Modal__Client__SecretGetOrCreateRequest__EnvDictEntry **ptrs = NULL;
    Modal__Client__SecretGetOrCreateResponse *resp = NULL;
    modal__strv kv = {NULL, 0, 0};
    modal__status st;
    size_t n = 0, i, total = 2;
    int rc = 0;

    for (i = 0; spec->env && spec->env[i]; i++) {
        total++;
        if (be->lean_threads > 0 &&
            strncmp(spec->env[i], "LEAN_NUM_THREADS=", 17) == 0)
            modal__host->log(call, ATP_LOG_INFO, "LEAN_NUM_THREADS of [env] "
                             "or -e is replaced by %lld in the modal "
                             "sandbox (lean_num_threads chooses it)",
                             (long long)be->lean_threads);
    }
    e = calloc(total, sizeof(*e));
    ptrs = calloc(total, sizeof(*ptrs));
    if (e == NULL || ptrs == NULL) {
        rc = modal__error(call, ATP_E_NOMEM, "out of memory");
        goto out;
    }
    for (i = 0; spec->env && spec->env[i] && rc == 0; i++)
        rc = modal__strv_addf(&kv, "%s", spec->env[i]);
    if (rc == 0)
        rc = modal__strv_addf(&kv, "IS_SANDBOX=1");
    if (rc == 0 && be->lean_threads > 0)
        rc = modal__strv_addf(&kv, "LEAN_NUM_THREADS=%lld",
                              (long long)be->lean_threads);
    if (rc) {
        rc = modal__error(call, ATP_E_NOMEM, "out of memory");
        goto out;
    }
    for (i = 0; i < kv.n; i++)
        env_put(e, &n, kv.v[i]);
    for (i = 0; i < n; i++)
        ptrs[i] = &e[i];
    req.environment_name = be->creds.environment;
    req.object_creation_type = MODAL_CREATION(ANONYMOUS_OWNED_BY_APP);
    req.app_id = (char *)app_id;
    req.env_dict = ptrs;
    req.n_env_dict = n;
    rc = modal__cp_call(be, s->conn, ctl, "SecretGetOrCreate", &req.base,
                        MODAL_CP_DESC(secret_get_or_create_response),
                        (ProtobufCMessage **)&resp, &st);
    if (rc) {
        rc = modal__fail(call, rc, &st, ATP_E_PROVISION,
                         "storing the sandbox environment");
        goto out;
    }
    if (modal__copy_id(id, len, resp->secret_id) != 0)
        rc = modal__error(call, ATP_E_PROVISION, "storing the sandbox "
                          "environment: no usable secret id came back "
                          "(empty, or longer than %zu bytes)", len - 1);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
out:
    free(e);
    free(ptrs);
    modal__strv_free(&kv);
    return rc;
}

/* ---- the sandbox --------------------------------------------------------- */

int modal__terminate_id(struct modal_backend *be, modal__conn *c,
                        const modal__ctl *ctl, const char *id,
                        modal__status *st)
{
    Modal__Client__SandboxTerminateRequest req =
        MODAL__CLIENT__SANDBOX_TERMINATE_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    int rc;

    req.sandbox_id = (char *)id;
    rc = modal__cp_call(be, c, ctl, "SandboxTerminate", &req.base,
                        MODAL_CP_DESC(sandbox_terminate_response),
                        &resp, st);
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    if (rc == ATP_E_BACKEND && st->code == MODAL_NOT_FOUND)
        return 0; /* gone already */
    return rc;
}

/* A deadline for teardown: the call's when it leaves time, else 30 s. */
static modal__ctl teardown_ctl(atp_call *call)
{
    modal__ctl ctl = modal__ctl_of(call);
    int64_t now = modal__host->now_ns();

    if (ctl.deadline_ns && ctl.deadline_ns - now < 5000000000LL)
        ctl.deadline_ns = 0; /* spent (a timed-out exec): take our own */
    ctl = modal__ctl_within(&ctl, TERMINATE_MS, 0);
    return ctl;
}

int modal__session_terminate(atp_call *call, struct modal_session *s,
                             const char *why)
{
    modal__ctl ctl = teardown_ctl(call);
    modal__status st;
    int rc = 0;

    if (why && !s->dead) {
        s->dead = 1;
        modal__copy(s->dead_why, sizeof(s->dead_why), why);
    }
    if (!s->created || s->terminated)
        return 0;
    rc = modal__terminate_id(s->be, s->conn, &ctl, s->sandbox_id, &st);
    if (rc)
        return modal__fail(call, rc, &st, ATP_E_BACKEND,
                           "terminating the sandbox");
    s->terminated = 1;
    modal__host->resource_removed(call, s->sandbox_id);
    return 0;
}

static void describe_result(const Modal__Client__GenericResult *r,
                            int64_t ttl_s, char *why, size_t len)
{
    const char *exc = r->exception && r->exception[0] ? r->exception : NULL;

    switch (r->status) {
    case MODAL_STATUS(TERMINATED):
        snprintf(why, len, "it was terminated");
        break;
    case MODAL_STATUS(TIMEOUT):
        snprintf(why, len, "its time to live (%lld s) ran out",
                 (long long)ttl_s);
        break;
    case MODAL_STATUS(SUCCESS):
        snprintf(why, len, "its entrypoint exited");
        break;
    default:
        snprintf(why, len, "it ended with status %d, exit code %d%s%s",
                 (int)r->status, (int)r->exitcode, exc ? ": " : "",
                 exc ? exc : "");
    }
}

int modal__sandbox_finished(struct modal_session *s, const modal__ctl *ctl,
                            char *why, size_t len)
{
    Modal__Client__SandboxWaitRequest req =
        MODAL__CLIENT__SANDBOX_WAIT_REQUEST__INIT;
    Modal__Client__SandboxWaitResponse *resp = NULL;
    modal__status st;
    int rc, done;

    req.sandbox_id = s->sandbox_id;
    req.timeout = 0; /* poll */
    rc = modal__cp_call(s->be, s->conn, ctl, "SandboxWait", &req.base,
                        MODAL_CP_DESC(sandbox_wait_response),
                        (ProtobufCMessage **)&resp, &st);
    if (rc == ATP_E_BACKEND && st.code == MODAL_NOT_FOUND) {
        snprintf(why, len, "modal no longer knows it");
        return 1;
    }
    if (rc)
        return rc;
    done = resp->result != NULL;
    if (done)
        describe_result(resp->result,
                        (s->expires_ns - s->created_ns) / 1000000000, why,
                        len);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return done;
}

/* ---- the router ---------------------------------------------------------- */

static int is_local(const char *url)
{
    const char *h = strstr(url, "://");

    h = h ? h + 3 : url;
    return strncmp(h, "localhost", 9) == 0 || strncmp(h, "127.", 4) == 0 ||
           strncmp(h, "[::1]", 5) == 0;
}

/* Take a router url and JWT from TaskGetCommandRouterAccess. */
static int take_access(struct modal_session *s, const char *url,
                       const char *jwt, modal__status *st)
{
    modal__endpoint ep;
    char *line;
    size_t n;
    int64_t exp;

    memset(&ep, 0, sizeof(ep));
    st->code = MODAL_INTERNAL;
    if (strncmp(url, "https://", 8) == 0) {
        /* Verified as the control plane is: only tls_verify = false
         * (explicit, and logged) turns that off. */
        ep.verify = s->be->tls_verify;
        ep.ca_file = s->be->ca_file;
    } else if (strncmp(url, "http://", 7) == 0 && is_local(s->be->cp.url) &&
               is_local(url)) {
        /* A local test server's own router, on this machine. */
        ep.plaintext = 1;
    } else {
        snprintf(st->message, sizeof(st->message), "the router url '%.200s' "
                 "is not https", url);
        return ATP_E_BACKEND;
    }
    if (modal__jwt_exp(jwt, &exp) != 0) {
        snprintf(st->message, sizeof(st->message), "the router token is not "
                 "a well-formed jwt");
        return ATP_E_BACKEND;
    }
    modal__copy(ep.url, sizeof(ep.url), url);
    n = strlen(ep.url);
    while (n > 0 && ep.url[n - 1] == '/')
        ep.url[--n] = '\0';
    if (asprintf(&line, "authorization: Bearer %s", jwt) < 0)
        return ATP_E_NOMEM;
    free(s->jwt);
    s->jwt = line;
    s->jwt_exp = exp;
    s->router = ep;
    st->code = MODAL_OK;
    return 0;
}

int modal__router_refresh(struct modal_session *s, const modal__ctl *ctl,
                          modal__status *st)
{
    Modal__Client__TaskGetCommandRouterAccessRequest req =
        MODAL__CLIENT__TASK_GET_COMMAND_ROUTER_ACCESS_REQUEST__INIT;
    Modal__Client__TaskGetCommandRouterAccessResponse *resp = NULL;
    int rc;

    req.task_id = s->task_id;
    rc = modal__cp_call(
        s->be, s->conn, ctl, "TaskGetCommandRouterAccess", &req.base,
        MODAL_CP_DESC(task_get_command_router_access_response),
        (ProtobufCMessage **)&resp, st);
    if (rc)
        return rc;
    rc = take_access(s, resp->url, resp->jwt, st);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return rc;
}

const char *modal__router_auth(struct modal_session *s)
{
    return s->jwt;
}

int modal__router_call(struct modal_session *s, const modal__ctl *ctl,
                       const char *rpc, const ProtobufCMessage *req,
                       const ProtobufCMessageDescriptor *rd,
                       ProtobufCMessage **resp, modal__status *st)
{
    modal__router_opts o = {&modal__retry_router, 0, 0};

    return modal__router_call_with(s, ctl, &o, rpc, req, rd, resp, st);
}

int modal__router_call_with(struct modal_session *s, const modal__ctl *ctl,
                            const modal__router_opts *o, const char *rpc,
                            const ProtobufCMessage *req,
                            const ProtobufCMessageDescriptor *rd,
                            ProtobufCMessage **resp, modal__status *st)
{
    char path[128];
    int refreshed = 0, rc;

    snprintf(path, sizeof(path),
             "/modal.task_command_router.TaskCommandRouter/%s", rpc);
    /* A token about to expire is renewed first (as the SDKs do).  The
     * exp claim is the server's: compared, never subtracted from. */
    if (s->jwt_exp && s->jwt_exp < modal__wall_s() + 30) {
        if ((rc = modal__router_refresh(s, ctl, st)) != 0)
            return rc;
        refreshed = 1;
    }
    for (;;) {
        const char *md[2] = {s->jwt, NULL};
        modal__rpc_req r;

        memset(&r, 0, sizeof(r));
        r.ep = &s->router;
        r.path = path;
        r.metadata = md;
        r.msg = req;
        r.timeout_ms = o->timeout_ms ? o->timeout_ms : s->be->call_timeout_ms;
        r.wire_timeout = o->wire_timeout;
        rc = modal__unary(s->conn, ctl, o->pol, &r, rd, resp, st);
        if (rc != ATP_E_BACKEND || st->code != MODAL_UNAUTHENTICATED ||
            refreshed)
            return rc;
        if ((rc = modal__router_refresh(s, ctl, st)) != 0)
            return rc;
        refreshed = 1;
    }
}

/*
 * A SandboxCreate that failed without a definite answer (no answer in
 * time, the connection lost, a transient code after the retries): modal
 * may have made the sandbox all the same.
 */
static int create_may_have_happened(int rc, const modal__status *st)
{
    return rc == ATP_E_TIMEOUT || rc == ATP_E_CANCELLED ||
           st->code == MODAL_TRANSPORT || modal__retryable(st->code);
}

/* ---- open and close ---------------------------------------------------- */

static int create_sandbox(atp_call *call, struct modal_session *s,
                          const modal__ctl *ctl, const char *app_id,
                          const char *image_id, const char *secret_id,
                          const atp_session_spec *spec)
{
    static char *entrypoint[] = {"sleep", "infinity"};
    struct modal_backend *be = s->be;
    Modal__Client__SandboxCreateRequest req =
        MODAL__CLIENT__SANDBOX_CREATE_REQUEST__INIT;
    Modal__Client__Sandbox def = MODAL__CLIENT__SANDBOX__INIT;
    Modal__Client__Resources res = MODAL__CLIENT__RESOURCES__INIT;
    Modal__Client__PortSpecs ports = MODAL__CLIENT__PORT_SPECS__INIT;
    Modal__Client__NetworkAccess net = MODAL__CLIENT__NETWORK_ACCESS__INIT;
    Modal__Client__SchedulerPlacement place =
        MODAL__CLIENT__SCHEDULER_PLACEMENT__INIT;
    Modal__Client__SandboxTag tag = MODAL__CLIENT__SANDBOX_TAG__INIT;
    Modal__Client__SandboxTag *tags[1] = {&tag};
    Modal__Client__SandboxCreateResponse *resp = NULL;
    char *secrets[1] = {(char *)secret_id}, *regions[1] = {be->region};
    int64_t ttl_s = spec->ttl_ms > 0 ? (spec->ttl_ms + 999) / 1000 : 3600;
    modal__ctl create_ctl;
    modal__status st;
    int rc;

    if (ttl_s > MAX_TTL_S)
        ttl_s = MAX_TTL_S;
    def.n_entrypoint_args = 2;
    def.entrypoint_args = entrypoint;
    def.image_id = (char *)image_id;
    def.n_secret_ids = 1;
    def.secret_ids = secrets;
    res.milli_cpu = (uint32_t)(be->cpu * 1000.0 + 0.5); /* cpu > 0 */
    res.memory_mb = (uint32_t)be->memory_mib;
    def.resources = &res;
    def.timeout_secs = (uint32_t)ttl_s;
    /* No workdir here: modal__sandbox_ready() creates it (and every
     * command names it). */
    def.open_ports_oneof_case =
        MODAL__CLIENT__SANDBOX__OPEN_PORTS_ONEOF_OPEN_PORTS;
    def.open_ports = &ports;
    net.network_access_type =
        MODAL__CLIENT__NETWORK_ACCESS__NETWORK_ACCESS_TYPE__OPEN;
    def.network_access = &net;
    if (be->region) {
        place.n_regions = 1;
        place.regions = regions;
        def.opt_scheduler_placement_case =
            MODAL__CLIENT__SANDBOX__OPT_SCHEDULER_PLACEMENT_SCHEDULER_PLACEMENT;
        def.scheduler_placement = &place;
    }
    tag.tag_name = (char *)MODAL_RUN_TAG;
    tag.tag_value = (char *)spec->run_id;
    req.app_id = (char *)app_id;
    req.definition = &def;
    req.tags = tags;
    req.n_tags = spec->run_id ? 1 : 0;
    /* Once sent, the answer is awaited even on cancel: it may name a
     * sandbox that must then be terminated. */
    create_ctl = modal__ctl_within(ctl, 4 * be->call_timeout_ms + 2000, 0);
    rc = modal__cp_call(be, s->conn, &create_ctl, "SandboxCreate", &req.base,
                        MODAL_CP_DESC(sandbox_create_response),
                        (ProtobufCMessage **)&resp, &st);
    if (rc && spec->run_id && create_may_have_happened(rc, &st)) {
        /* No answer, but modal may have made it (late): what carries
         * this run's tag is this create's, and goes. */
        modal__ctl tctl = teardown_ctl(call);
        modal__status keep = st;
        int found = 0;

        if (modal__reap_run(call, be, s->conn, &tctl, spec->run_id, NULL,
                            &found) == 0 && found > 0)
            modal__host->log(call, ATP_LOG_DEBUG, "terminated %d sandboxes "
                             "of a create whose answer was lost", found);
        st = keep;
    }
    if (rc)
        return modal__fail(call, rc, &st, ATP_E_PROVISION,
                           "creating the sandbox");
    if (modal__copy_id(s->sandbox_id, sizeof(s->sandbox_id),
                       resp->sandbox_id) != 0) {
        /* Never lose a sandbox: terminate it by its id as given. */
        size_t n = resp->sandbox_id ? strlen(resp->sandbox_id) : 0;

        if (n > 0) {
            modal__ctl tctl = teardown_ctl(call);

            modal__terminate_id(be, s->conn, &tctl, resp->sandbox_id, &st);
        }
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return modal__error(call, ATP_E_PROVISION, "modal created a "
                            "sandbox %s (%zu bytes; at most %zu are "
                            "kept): it was terminated", n ? "whose id is "
                            "too long" : "without an id", n,
                            sizeof(s->sandbox_id) - 1);
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    s->created = 1;
    s->created_ns = modal__host->now_ns();
    s->expires_ns = s->created_ns + ttl_s * 1000000000LL;
    modal__host->resource_created(call, "sandbox", s->sandbox_id);
    modal__host->log(call, ATP_LOG_DEBUG, "sandbox %s created (ttl %lld s)",
                     s->sandbox_id, (long long)ttl_s);
    return 0;
}

/*
 * The image id for @name, looked up once per backend and kept: every
 * sandbox of a run then runs the same image, and the core reports its id
 * with every result.
 */
static int pin_image(atp_call *call, struct modal_backend *be,
                     modal__conn *c, const modal__ctl *ctl, const char *name,
                     char *id, size_t len)
{
    modal__status st;
    int rc = 0;

    /* Sessions that start together wait for the first one's lookup. */
    pthread_mutex_lock(&be->pin_mu);
    if (be->pinned_name && strcmp(be->pinned_name, name) == 0) {
        modal__copy(id, len, be->pinned_id);
    } else {
        rc = modal__find_image(be, c, ctl, name, id, len, &st);
        if (rc == 0 && be->pinned_name == NULL &&
            (be->pinned_name = strdup(name)) != NULL)
            modal__copy(be->pinned_id, sizeof(be->pinned_id), id);
    }
    pthread_mutex_unlock(&be->pin_mu);
    if (rc)
        return modal__fail_image(call, be, rc, &st, name);
    if (ATP_HAS_FIELD(modal__host, atp_host_api, image_pinned))
        modal__host->image_pinned(call, id, NULL);
    return 0;
}

/* Wait until the sandbox's task is scheduled; then reach its router. */
static int reach_task(atp_call *call, struct modal_session *s,
                      const modal__ctl *ctl)
{
    Modal__Client__SandboxGetTaskIdRequest req =
        MODAL__CLIENT__SANDBOX_GET_TASK_ID_REQUEST__INIT;
    modal__status st;
    int rc;

    req.sandbox_id = s->sandbox_id;
    for (;;) {
        Modal__Client__SandboxGetTaskIdResponse *resp = NULL;
        char why[256];

        rc = modal__cp_call(s->be, s->conn, ctl, "SandboxGetTaskId",
                            &req.base,
                            MODAL_CP_DESC(sandbox_get_task_id_response),
                            (ProtobufCMessage **)&resp, &st);
        if (rc)
            return modal__fail(call, rc, &st, ATP_E_PROVISION,
                               "waiting for the sandbox to start");
        if (resp->task_result) {
            describe_result(resp->task_result, 0, why, sizeof(why));
            protobuf_c_message_free_unpacked(&resp->base, NULL);
            return modal__error(call, ATP_E_PROVISION, "sandbox "
                                "%s ended before it started: %s",
                                s->sandbox_id, why);
        }
        if (resp->task_id && resp->task_id[0]) {
            rc = modal__copy_id(s->task_id, sizeof(s->task_id),
                                resp->task_id);
            protobuf_c_message_free_unpacked(&resp->base, NULL);
            if (rc != 0)
                return modal__error(call, ATP_E_PROVISION, "sandbox %s: "
                                    "its task id is longer than %zu bytes",
                                    s->sandbox_id, sizeof(s->task_id) - 1);
            break;
        }
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        if ((rc = modal__sleep(s->conn, ctl, TASK_POLL_MS)) != 0) {
            st.code = MODAL_OK;
            snprintf(st.message, sizeof(st.message), "the sandbox was not "
                     "scheduled in time");
            return modal__fail(call, rc, &st, ATP_E_PROVISION,
                               "waiting for the sandbox to start");
        }
    }
    rc = modal__router_refresh(s, ctl, &st);
    if (rc)
        return modal__fail(call, rc, &st, ATP_E_PROVISION,
                           "getting access to the sandbox's command router");
    return 0;
}

int modal__session_open(atp_call *call, void *backend,
                        const atp_session_spec *spec, void **out)
{
    struct modal_backend *be = backend;
    struct modal_session *s;
    modal__ctl ctl = modal__ctl_of(call);
    const char *image = be->image ? be->image : spec->image;
    char app_id[MODAL_ID_MAX], image_id[MODAL_ID_MAX];
    char secret_id[MODAL_ID_MAX];
    modal__status st;
    int rc;

    *out = NULL;
    if ((rc = modal__backend_ready(call, be)) != 0)
        return rc;
    if (image == NULL || image[0] == '\0')
        return modal__error(call, ATP_E_CONFIG, "no image for the "
                            "modal sandbox: set [image] name (or "
                            "image in the backend section) to a "
                            "published modal image");
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return modal__error(call, ATP_E_NOMEM, "out of memory");
    s->be = be;
    s->one_shot = (spec->flags & ATP_SESSION_ONE_SHOT) != 0;
    s->workdir = strdup(spec->sandbox_workdir && spec->sandbox_workdir[0]
                            ? spec->sandbox_workdir
                            : MODAL_SANDBOX_WORKDIR);
    if (s->workdir == NULL || modal__conn_new(&s->conn, be->share) != 0) {
        modal__session_free(s);
        return modal__error(call, ATP_E_NOMEM, "out of memory");
    }
    modal__conn_set_throttle(s->conn, be->creds.max_throttle_ms);
    if ((rc = modal__hello(call, be, s->conn, &ctl, 0)) != 0)
        goto fail;
    rc = modal__find_app(be, s->conn, &ctl, 1, app_id, sizeof(app_id), &st);
    if (rc) {
        rc = modal__fail(call, rc, &st, ATP_E_PROVISION, "getting the app");
        goto fail;
    }
    rc = pin_image(call, be, s->conn, &ctl, image, image_id,
                   sizeof(image_id));
    if (rc)
        goto fail;
    rc = make_secret(call, s, &ctl, app_id, spec, secret_id,
                     sizeof(secret_id));
    if (rc == 0)
        rc = create_sandbox(call, s, &ctl, app_id, image_id, secret_id,
                            spec);
    if (rc == 0 && modal__host->cancelled(call))
        rc = modal__error(call, ATP_E_CANCELLED, "cancelled while "
                          "creating the sandbox");
    if (rc == 0)
        rc = reach_task(call, s, &ctl);
    if (rc == 0)
        rc = modal__sandbox_ready(call, s, &ctl);
    if (rc)
        goto fail;
    *out = s;
    return 0;
fail:
    if (s->created) {
        modal__ctl tctl = teardown_ctl(call);
        modal__status tst;
        char first[1024];

        modal__copy(first, sizeof(first), modal__error_text());
        if (modal__terminate_id(be, s->conn, &tctl, s->sandbox_id, &tst) == 0)
            modal__host->resource_removed(call, s->sandbox_id);
        else
            modal__error(call, rc, "%s; terminating sandbox %s failed too "
                         "(%s): `atp-run gc` will reap it", first,
                         s->sandbox_id, tst.message);
    }
    modal__session_free(s);
    return rc;
}

int modal__session_close(atp_call *call, void *session)
{
    struct modal_session *s = session;

    return modal__session_terminate(call, s, "the session was closed");
}

void modal__session_free(void *session)
{
    struct modal_session *s = session;

    if (s == NULL)
        return;
    modal__sweep_free(s); /* the sandbox is gone: so is their target */
    modal__conn_free(s->conn);
    free(s->workdir);
    free(s->jwt);
    free(s);
}
