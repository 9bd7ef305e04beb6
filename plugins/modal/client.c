/*
 * plugins/modal/client.c - who this client says it is, which server it
 * talks to, and the first word with that server.
 *
 * Identity (modal-protocol.md §1.3): Modal's SDKs that are not Python
 * send their own client type, the Python SDK version whose behaviour they
 * follow as x-modal-client-version, and their own name and version in
 * x-modal-libmodal-version (the Go SDK: 9, "1.0.0", "modal-go/0.9.0").
 * This plugin does the same, with "atp-modal/VERSION" in the last header;
 * all three can be changed in the backend's section, for the day Modal
 * stops accepting the defaults.
 *
 * Servers: the url may be a comma-separated list, as the Python SDK's
 * default is (api.modal.com, then api.modal2.com).  The SDK races them,
 * the next starting after 3 s or when the one before failed; here they
 * are tried in turn, each but the last given 3 s to connect, in up to 4
 * rounds.  The first that answers at all serves every later call.
 *
 * Hello: ClientHello once per backend, and on every `atp-run check`.
 * Its warnings (deprecations of this client) are shown to the user; a
 * FAILED_PRECONDITION, how Modal refuses a client it no longer supports,
 * becomes a configuration error that says what to change.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "modal.h"

#define STAGGER_MS 3000 /* a fallback's turn comes after this, at most */

/* One attempt per url and round; the rounds back off as retries do. */
static const modal__retry once = {0, 0, 0, 1, 0, 0};

/* A header value must not carry line breaks or other controls. */
static int header_safe(const char *v)
{
    for (; *v; v++)
        if ((unsigned char)*v < 0x20 || *v == 0x7f)
            return 0;
    return 1;
}

static int add_server(atp_call *call, struct modal_backend *be,
                      const char *url, size_t n)
{
    modal__endpoint *ep;

    while (n > 0 && (*url == ' ' || *url == '\t'))
        url++, n--;
    while (n > 0 && (url[n - 1] == ' ' || url[n - 1] == '\t' ||
                     url[n - 1] == '/'))
        n--;
    if (n == 0)
        return 0; /* "a,,b" or a trailing comma */
    if (be->n_servers == MODAL_MAX_SERVERS)
        return modal__error(call, ATP_E_CONFIG, "modal server url '%s' "
                            "lists more than %d servers",
                            be->creds.server_url, MODAL_MAX_SERVERS);
    ep = &be->servers[be->n_servers];
    memset(ep, 0, sizeof(*ep));
    if (n >= 7 && strncmp(url, "http://", 7) == 0) {
        ep->plaintext = 1;
    } else if (n >= 8 && strncmp(url, "https://", 8) == 0) {
        ep->verify = be->tls_verify;
    } else {
        return modal__error(call, ATP_E_CONFIG, "modal server url "
                            "'%.*s' must start with https:// (or "
                            "http:// for a local test server)",
                            (int)n, url);
    }
    if (n >= sizeof(ep->url))
        return modal__error(call, ATP_E_CONFIG, "modal server url "
                            "'%.60s...' is too long", url);
    memcpy(ep->url, url, n);
    ep->url[n] = '\0';
    ep->ca_file = be->ca_file;
    be->n_servers++;
    return 0;
}

int modal__client_setup(atp_call *call, struct modal_backend *be)
{
    const char *p = be->creds.server_url, *comma;
    int rc = 0;

    be->n_servers = 0;
    while (rc == 0 && p) {
        comma = strchr(p, ',');
        rc = add_server(call, be, p, comma ? (size_t)(comma - p)
                                           : strlen(p));
        p = comma ? comma + 1 : NULL;
    }
    if (rc)
        return rc;
    if (be->n_servers == 0)
        return modal__error(call, ATP_E_CONFIG, "the modal server url is "
                            "empty");
    be->cp = be->servers[0]; /* until a hello says which one answers */
    if (!header_safe(be->client_version) ||
        (be->libmodal_version && !header_safe(be->libmodal_version)))
        return modal__error(call, ATP_E_CONFIG, "client_version and "
                            "libmodal_version must be plain text");
    modal__strv_free(&be->cp_meta);
    if (modal__strv_addf(&be->cp_meta, "x-modal-client-type: %lld",
                         (long long)be->client_type) ||
        modal__strv_addf(&be->cp_meta, "x-modal-client-version: %s",
                         be->client_version) ||
        (be->libmodal_version &&
         modal__strv_addf(&be->cp_meta, "x-modal-libmodal-version: %s",
                          be->libmodal_version)) ||
        modal__strv_addf(&be->cp_meta, "x-modal-token-id: %s",
                         be->creds.token_id) ||
        modal__strv_addf(&be->cp_meta, "x-modal-token-secret: %s",
                         be->creds.token_secret))
        return modal__error(call, ATP_E_NOMEM, "out of memory");
    return 0;
}

/* One ClientHello to @ep; as modal__unary(). */
static int hello_to(struct modal_backend *be, modal__conn *c,
                    const modal__ctl *ctl, const modal__endpoint *ep,
                    const modal__retry *pol, int64_t connect_ms,
                    Modal__Client__ClientHelloResponse **resp,
                    modal__status *st)
{
    Modal__Client__Empty req = MODAL__CLIENT__EMPTY__INIT;
    modal__rpc_req r;

    memset(&r, 0, sizeof(r));
    r.ep = ep;
    r.path = "/modal.client.ModalClient/ClientHello";
    r.metadata = (const char *const *)be->cp_meta.v;
    r.msg = &req.base;
    r.timeout_ms = be->call_timeout_ms;
    r.connect_timeout_ms = connect_ms;
    return modal__unary(c, ctl, pol, &r,
                        MODAL_CP_DESC(client_hello_response),
                        (ProtobufCMessage **)resp, st);
}

/*
 * The first hello: try the servers in turn until one answers, and keep
 * it as be->cp.  As modal__unary().
 */
static int choose_server(struct modal_backend *be, modal__conn *c,
                         const modal__ctl *ctl,
                         Modal__Client__ClientHelloResponse **resp,
                         modal__status *st)
{
    int64_t delay = modal__retry_control.base_ms;
    int round, rc = ATP_E_BACKEND;
    size_t i;

    if (be->n_servers == 1) {
        be->cp = be->servers[0];
        return hello_to(be, c, ctl, &be->cp, &modal__retry_control, 0, resp,
                        st);
    }
    for (round = 0; round <= modal__retry_control.max_retries; round++) {
        for (i = 0; i < be->n_servers; i++) {
            int last = i + 1 == be->n_servers;

            rc = hello_to(be, c, ctl, &be->servers[i], &once,
                          last ? 0 : STAGGER_MS, resp, st);
            if (rc == ATP_E_CANCELLED || rc == ATP_E_NOMEM ||
                (rc == ATP_E_TIMEOUT && ctl->deadline_ns &&
                 modal__host->now_ns() >= ctl->deadline_ns))
                return rc;
            if (rc == 0 || (rc == ATP_E_BACKEND &&
                            st->code != MODAL_TRANSPORT)) {
                /* It answered: it is the server from now on. */
                be->cp = be->servers[i];
                modal__host->log(ctl->call, ATP_LOG_DEBUG, "using modal "
                                 "server %s", be->cp.url);
                if (rc && modal__retryable(st->code))
                    rc = hello_to(be, c, ctl, &be->cp, &modal__retry_control,
                                  0, resp, st);
                return rc;
            }
            modal__host->log(ctl->call, ATP_LOG_INFO, "modal server %s did "
                             "not answer (%s)%s", be->servers[i].url,
                             st->message, last ? "" : "; trying the next");
        }
        if (round < modal__retry_control.max_retries &&
            (rc = modal__sleep(c, ctl, delay)) != 0)
            return rc;
        delay *= 2;
        if (delay > modal__retry_control.cap_ms)
            delay = modal__retry_control.cap_ms;
    }
    st->code = MODAL_TRANSPORT;
    return ATP_E_BACKEND;
}

static const char *warning_kind(int type)
{
    switch (type) {
    case MODAL__CLIENT__WARNING__WARNING_TYPE__WARNING_TYPE_CLIENT_DEPRECATION:
        return "deprecation";
    case MODAL__CLIENT__WARNING__WARNING_TYPE__WARNING_TYPE_RESOURCE_LIMIT:
        return "resource limit";
    default:
        return "warning";
    }
}

static void warn(atp_call *call, const char *kind, const char *msg)
{
    atp_field f[2] = {
        {"kind", ATP_FIELD_STR, kind, 0, 0.0},
        {"message", ATP_FIELD_STR, msg, 0, 0.0},
    };

    modal__host->log(call, ATP_LOG_WARN, "modal says (%s): %s", kind, msg);
    modal__host->event(call, "modal_warning", f, 2);
}

static void show_warnings(atp_call *call,
                          const Modal__Client__ClientHelloResponse *r)
{
    size_t i;

    if (r->warning && r->warning[0])
        warn(call, "warning", r->warning);
    for (i = 0; i < r->n_server_warnings; i++) {
        const Modal__Client__Warning *w = r->server_warnings[i];

        if (w->message && w->message[0])
            warn(call, warning_kind((int)w->type), w->message);
    }
}

/* Modal refused this client: say what it was and what to change. */
static int refused(atp_call *call, struct modal_backend *be,
                   const modal__status *st)
{
    return modal__error(
        call, ATP_E_CONFIG, "modal refused this client (%s: %s): it "
        "identifies as client_type = %lld, client_version = %s%s%s; set "
        "client_version (and, if need be, client_type) in the modal "
        "backend's section of atp.ini to what a current Modal SDK sends "
        "(plugins/modal/README.md, \"Client identity\"), or upgrade atp",
        modal__code_name(st->code),
        st->message[0] ? st->message : "no message",
        (long long)be->client_type, be->client_version,
        be->libmodal_version ? ", libmodal_version = " : "",
        be->libmodal_version ? be->libmodal_version : "");
}

/* None of the servers answered. */
static int unreachable(atp_call *call, struct modal_backend *be,
                       const modal__status *st)
{
    char list[700] = "";
    size_t i, n = 0;

    if (be->n_servers == 1)
        return modal__fail(call, ATP_E_BACKEND, st, ATP_E_BACKEND,
                           "connecting to modal");
    for (i = 0; i < be->n_servers && n < sizeof(list); i++) {
        int w = snprintf(list + n, sizeof(list) - n, "%s%s", i ? ", " : "",
                         be->servers[i].url);

        n += w > 0 ? (size_t)w : 0;
    }
    return modal__error(call, ATP_E_BACKEND, "connecting to modal: cannot "
                        "reach modal at any of %s: %s", list,
                        st->message[0] ? st->message : "no answer");
}

int modal__hello(atp_call *call, struct modal_backend *be, modal__conn *c,
                 const modal__ctl *ctl, int always)
{
    Modal__Client__ClientHelloResponse *resp = NULL;
    modal__status st;
    int rc;

    memset(&st, 0, sizeof(st));
    pthread_mutex_lock(&be->hello_mu);
    if (be->hello_done && !always) {
        pthread_mutex_unlock(&be->hello_mu);
        return 0;
    }
    if (be->hello_done)
        rc = hello_to(be, c, ctl, &be->cp, &modal__retry_control, 0, &resp,
                      &st);
    else
        rc = choose_server(be, c, ctl, &resp, &st);
    if (rc == 0) {
        show_warnings(call, resp);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        be->hello_done = 1;
    } else if (rc == ATP_E_BACKEND && st.code == MODAL_UNIMPLEMENTED) {
        be->hello_done = 1; /* a server without it: nothing to say */
        rc = 0;
    } else if (rc == ATP_E_BACKEND && st.code == MODAL_FAILED_PRECONDITION) {
        rc = refused(call, be, &st);
    } else if (rc == ATP_E_BACKEND && st.code == MODAL_TRANSPORT) {
        rc = unreachable(call, be, &st);
    } else {
        rc = modal__fail(call, rc, &st, ATP_E_BACKEND, "connecting to modal");
    }
    pthread_mutex_unlock(&be->hello_mu);
    return rc;
}
