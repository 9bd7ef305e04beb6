/*
 * plugins/modal/grpc.c - gRPC calls over libcurl's HTTP/2.
 *
 * Every call is one HTTP/2 POST on a curl multi handle, so that a stdout
 * stream, a stderr stream, stdin writes and a wait run side by side on
 * one connection per host (CURLOPT_PIPEWAIT keeps curl from opening a
 * second one while the first is being set up).  https:// is HTTP/2 over
 * TLS (ALPN), verified unless the endpoint says otherwise; http:// is h2c
 * with prior knowledge.  Request: one length-prefixed message.  Response:
 * length-prefixed messages framed incrementally from the write callback,
 * handed to the caller as each is complete; the status comes from the
 * trailers or from a trailers-only response, both of which curl passes to
 * the header callback.  A call without a status is an error made here.
 */
#include "config.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "api.pb-c.h"
#include "grpc.h"
#include "util.h"

/* Largest response message accepted (Modal's Go client caps at 100 MB). */
#define MAX_MESSAGE (100u * 1024 * 1024)
#define CONNECT_TIMEOUT_MS 10000L
/*
 * Keepalive with the SDKs' timing (a probe after 30 s of silence, 10 s
 * to answer; grpc_utils.py create_channel_config, go/client.go), so that
 * a long quiet stream keeps its NAT and load-balancer state and a dead
 * peer is noticed.  libcurl's multi interface cannot send HTTP/2 PING
 * frames (curl_easy_upkeep() reaches only the easy interface's
 * connections), so these are TCP keepalive probes.
 */
#define KEEPALIVE_IDLE_S 30L
#define KEEPALIVE_INTVL_S 10L
#define KEEPALIVE_COUNT 3

struct modal__conn {
    CURLM *multi;
    CURLSH *share;
    int64_t throttle_max_ms;
    int h2c_no_reuse; /* this libcurl breaks reused h2c connections */
};

struct modal__rpc {
    modal__conn *c;
    CURL *easy;
    struct curl_slist *hdrs;
    unsigned char *body;
    size_t body_len;
    unsigned char hdr[5];    /* the prefix of the message being read */
    size_t hdr_len;
    unsigned char *msg;      /* a message split across writes */
    size_t msg_len, msg_cap, msg_want;
    modal__msg_fn on_msg;
    void *ctx;
    int abort_rc;
    int done;
    int have_status;
    int grpc_status;
    char grpc_message[512];
    char *details;           /* grpc-status-details-bin, base64 */
    char errbuf[CURL_ERROR_SIZE];
    char abort_why[160];
    modal__status st;
};

const char *modal__code_name(int code)
{
    static const char *const names[] = {
        "ok", "cancelled", "unknown", "invalid argument",
        "deadline exceeded", "not found", "already exists",
        "permission denied", "resource exhausted", "failed precondition",
        "aborted", "out of range", "unimplemented", "internal",
        "unavailable", "data loss", "unauthenticated"};

    if (code == MODAL_TRANSPORT)
        return "transport error";
    if (code < 0 || code > 16)
        return "unknown status";
    return names[code];
}

int modal__conn_new(modal__conn **out, CURLSH *share)
{
    modal__conn *c = calloc(1, sizeof(*c));
    curl_version_info_data *vi;

    *out = NULL;
    if (c == NULL)
        return ATP_E_NOMEM;
    c->multi = curl_multi_init();
    if (c->multi == NULL) {
        free(c);
        return ATP_E_NOMEM;
    }
    curl_multi_setopt(c->multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
    c->share = share;
    c->throttle_max_ms = -1;
    vi = curl_version_info(CURLVERSION_NOW);
    c->h2c_no_reuse = vi == NULL || vi->version_num < 0x080000;
    *out = c;
    return 0;
}

void modal__conn_free(modal__conn *c)
{
    if (c == NULL)
        return;
    curl_multi_cleanup(c->multi);
    free(c);
}

void modal__conn_set_throttle(modal__conn *c, int64_t max_ms)
{
    c->throttle_max_ms = max_ms;
}

int64_t modal__conn_throttle(const modal__conn *c)
{
    return c->throttle_max_ms;
}

/* ---- reading responses ------------------------------------------------ */

static int deliver(modal__rpc *k, const unsigned char *p, size_t len)
{
    int rc = k->on_msg ? k->on_msg(k->ctx, p, len) : 0;

    if (rc) {
        k->abort_rc = rc;
        snprintf(k->abort_why, sizeof(k->abort_why),
                 "the response could not be used");
    }
    return rc;
}

/* A message prefix is complete: check it. */
static int prefix_done(modal__rpc *k)
{
    uint32_t n = ((uint32_t)k->hdr[1] << 24) | ((uint32_t)k->hdr[2] << 16) |
                 ((uint32_t)k->hdr[3] << 8) | (uint32_t)k->hdr[4];

    if (k->hdr[0] != 0) {
        k->abort_rc = ATP_E_BACKEND;
        snprintf(k->abort_why, sizeof(k->abort_why),
                 "the server sent a compressed message, which was not "
                 "negotiated");
        return -1;
    }
    if (n > MAX_MESSAGE) {
        k->abort_rc = ATP_E_BACKEND;
        snprintf(k->abort_why, sizeof(k->abort_why),
                 "the server sent a %u-byte message, more than the %u "
                 "accepted", n, MAX_MESSAGE);
        return -1;
    }
    k->msg_want = n;
    k->msg_len = 0;
    return 0;
}

/*
 * Frame the bytes of one write: whole messages are handed over straight
 * from curl's buffer; only a message split across writes is copied.
 */
static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    modal__rpc *k = ud;
    const unsigned char *p = (const unsigned char *)data;
    size_t total = size * nmemb, off = 0;

    if (k->abort_rc)
        return 0;
    while (off < total) {
        size_t avail = total - off, take;

        if (k->hdr_len < 5) {
            take = 5 - k->hdr_len < avail ? 5 - k->hdr_len : avail;
            memcpy(k->hdr + k->hdr_len, p + off, take);
            k->hdr_len += take;
            off += take;
            if (k->hdr_len == 5 && prefix_done(k) != 0)
                return 0;
            if (k->hdr_len == 5 && k->msg_want == 0) {
                k->hdr_len = 0;
                if (deliver(k, (const unsigned char *)"", 0))
                    return 0;
            }
            continue;
        }
        if (k->msg_len == 0 && avail >= k->msg_want) {
            take = k->msg_want;
            k->hdr_len = 0;
            off += take;
            if (deliver(k, p + off - take, take))
                return 0;
            continue;
        }
        if (k->msg_cap < k->msg_want) {
            unsigned char *grown = realloc(k->msg, k->msg_want);

            if (grown == NULL) {
                k->abort_rc = ATP_E_NOMEM;
                snprintf(k->abort_why, sizeof(k->abort_why),
                         "out of memory");
                return 0;
            }
            k->msg = grown;
            k->msg_cap = k->msg_want;
        }
        take = k->msg_want - k->msg_len < avail ? k->msg_want - k->msg_len
                                                : avail;
        memcpy(k->msg + k->msg_len, p + off, take);
        k->msg_len += take;
        off += take;
        if (k->msg_len == k->msg_want) {
            k->hdr_len = 0;
            k->msg_len = 0;
            if (deliver(k, k->msg, k->msg_want))
                return 0;
        }
    }
    return total;
}

/* Headers and trailers: keep the gRPC status fields. */
static size_t on_header(char *data, size_t size, size_t nmemb, void *ud)
{
    modal__rpc *k = ud;
    size_t len = size * nmemb, nlen;
    const char *colon = memchr(data, ':', len), *v, *end = data + len;

    if (colon == NULL || colon == data)
        return len;
    nlen = (size_t)(colon - data);
    v = colon + 1;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' ||
                       end[-1] == ' ' || end[-1] == '\t'))
        end--;
    if (nlen == 11 && strncasecmp(data, "grpc-status", 11) == 0) {
        int code = 0;
        const char *q;

        for (q = v; q < end && *q >= '0' && *q <= '9' && code < 1000; q++)
            code = code * 10 + (*q - '0');
        k->grpc_status = q == v ? MODAL_UNKNOWN : code;
        k->have_status = 1;
    } else if (nlen == 12 && strncasecmp(data, "grpc-message", 12) == 0) {
        size_t n = (size_t)(end - v);

        if (n >= sizeof(k->grpc_message))
            n = sizeof(k->grpc_message) - 1;
        memcpy(k->grpc_message, v, n);
        k->grpc_message[n] = '\0';
        modal__percent_decode(k->grpc_message);
    } else if (nlen == 23 &&
               strncasecmp(data, "grpc-status-details-bin", 23) == 0) {
        free(k->details);
        k->details = strndup(v, (size_t)(end - v));
    }
    return len;
}

/* ---- starting and ending calls ----------------------------------------- */

/* Unanswered probes before the kernel drops the connection. */
static int on_socket(void *ud, curl_socket_t fd, curlsocktype purpose)
{
    int n = KEEPALIVE_COUNT;

    (void)ud;
    if (purpose == CURLSOCKTYPE_IPCXN)
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &n, sizeof(n));
    return CURL_SOCKOPT_OK;
}

static void format_timeout(char *out, size_t len, int64_t ms)
{
    if (ms <= 99999999)
        snprintf(out, len, "grpc-timeout: %lldm", (long long)ms);
    else if (ms / 1000 <= 99999999)
        snprintf(out, len, "grpc-timeout: %lldS", (long long)(ms / 1000));
    else
        snprintf(out, len, "grpc-timeout: %lldH",
                 (long long)(ms / 3600000 > 99999999 ? 99999999
                                                     : ms / 3600000));
}

static int pack_request(modal__rpc *k, const ProtobufCMessage *msg)
{
    size_t n = protobuf_c_message_get_packed_size(msg);

    k->body = malloc(n + 5);
    if (k->body == NULL)
        return ATP_E_NOMEM;
    k->body[0] = 0;
    k->body[1] = (unsigned char)(n >> 24);
    k->body[2] = (unsigned char)(n >> 16);
    k->body[3] = (unsigned char)(n >> 8);
    k->body[4] = (unsigned char)n;
    if (protobuf_c_message_pack(msg, k->body + 5) != n)
        return ATP_E_BACKEND;
    k->body_len = n + 5;
    return 0;
}

static int add_header(modal__rpc *k, const char *line)
{
    struct curl_slist *l = curl_slist_append(k->hdrs, line);

    if (l == NULL)
        return ATP_E_NOMEM;
    k->hdrs = l;
    return 0;
}

static int build_headers(modal__rpc *k, const modal__rpc_req *r)
{
    static const char *const fixed[] = {
        "content-type: application/grpc", "te: trailers", "Accept:",
        "Expect:", NULL};
    char line[64];
    size_t i;

    for (i = 0; fixed[i]; i++)
        if (add_header(k, fixed[i]))
            return ATP_E_NOMEM;
    if (r->wire_timeout && r->timeout_ms > 0) {
        format_timeout(line, sizeof(line), r->timeout_ms);
        if (add_header(k, line))
            return ATP_E_NOMEM;
    }
    for (i = 0; r->metadata && r->metadata[i]; i++)
        if (add_header(k, r->metadata[i]))
            return ATP_E_NOMEM;
    return 0;
}

static int setup_easy(modal__rpc *k, const modal__rpc_req *r)
{
    CURL *e = k->easy;
    size_t ulen = strlen(r->ep->url) + strlen(r->path) + 1;
    char *url = malloc(ulen);
    CURLcode rc;

    if (url == NULL)
        return ATP_E_NOMEM;
    snprintf(url, ulen, "%s%s", r->ep->url, r->path);
    rc = curl_easy_setopt(e, CURLOPT_URL, url);
    free(url); /* curl keeps its own copy */
    if (rc != CURLE_OK)
        return ATP_E_BACKEND;
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(e, CURLOPT_PROTOCOLS, CURLPROTO_HTTP | CURLPROTO_HTTPS);
#endif
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION,
                     r->ep->plaintext ? CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE
                                      : CURL_HTTP_VERSION_2TLS);
    if (r->ep->plaintext && k->c->h2c_no_reuse) {
        /* libcurl before 8.0 cannot reuse an h2c prior-knowledge
         * connection (curl/curl#10634): one connection per call. */
        curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
        curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
    }
    if (!r->ep->plaintext && r->ep->ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, r->ep->ca_file);
    if (!r->ep->plaintext && !r->ep->verify) {
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, (char *)k->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
                     (curl_off_t)k->body_len);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, k->hdrs);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "atp-modal/" PACKAGE_VERSION);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, k);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, k);
    curl_easy_setopt(e, CURLOPT_PRIVATE, k);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, k->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPIDLE, KEEPALIVE_IDLE_S);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPINTVL, KEEPALIVE_INTVL_S);
    curl_easy_setopt(e, CURLOPT_SOCKOPTFUNCTION, on_socket);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     r->connect_timeout_ms > 0 ? (long)r->connect_timeout_ms
                                               : CONNECT_TIMEOUT_MS);
    /* The client's cap; a little after the server's deadline, if sent. */
    if (r->timeout_ms > 0)
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS,
                         (long)r->timeout_ms + (r->wire_timeout ? 500L : 0L));
    if (k->c->share)
        curl_easy_setopt(e, CURLOPT_SHARE, k->c->share);
    return 0;
}

int modal__rpc_start(modal__conn *c, const modal__rpc_req *r,
                     modal__rpc **out)
{
    modal__rpc *k = calloc(1, sizeof(*k));
    int rc;

    *out = NULL;
    if (k == NULL)
        return ATP_E_NOMEM;
    k->c = c;
    k->on_msg = r->on_msg;
    k->ctx = r->ctx;
    k->easy = curl_easy_init();
    if (k->easy == NULL) {
        free(k);
        return ATP_E_NOMEM;
    }
    if ((rc = pack_request(k, r->msg)) != 0 ||
        (rc = build_headers(k, r)) != 0 || (rc = setup_easy(k, r)) != 0)
        goto fail;
    if (curl_multi_add_handle(c->multi, k->easy) != CURLM_OK) {
        rc = ATP_E_BACKEND;
        goto fail;
    }
    *out = k;
    return 0;
fail:
    curl_easy_cleanup(k->easy);
    k->easy = NULL;
    modal__rpc_free(k);
    return rc;
}

int modal__rpc_done(const modal__rpc *k)
{
    return k->done;
}

const modal__status *modal__rpc_status(const modal__rpc *k)
{
    return &k->st;
}

int modal__rpc_abort_rc(const modal__rpc *k)
{
    return k->abort_rc;
}

void modal__rpc_free(modal__rpc *k)
{
    if (k == NULL)
        return;
    if (k->easy) {
        curl_multi_remove_handle(k->c->multi, k->easy);
        curl_easy_cleanup(k->easy);
    }
    curl_slist_free_all(k->hdrs);
    free(k->body);
    free(k->msg);
    free(k->details);
    free(k);
}

/* gRPC's mapping of HTTP statuses to codes (doc/http-grpc-status-mapping). */
static int http_to_grpc(long http)
{
    switch (http) {
    case 400:
        return MODAL_INTERNAL;
    case 401:
        return MODAL_UNAUTHENTICATED;
    case 403:
        return MODAL_PERMISSION_DENIED;
    case 404:
        return MODAL_UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
        return MODAL_UNAVAILABLE;
    default:
        return MODAL_UNKNOWN;
    }
}

/* A server-directed throttle in grpc-status-details-bin. */
static double retry_after(const char *details)
{
    Modal__Client__RPCStatus *st;
    unsigned char *raw;
    double secs = -1;
    size_t n, i;

    if (details == NULL)
        return -1;
    raw = modal__base64_decode(details, strlen(details), &n);
    if (raw == NULL)
        return -1;
    st = modal__client__rpcstatus__unpack(NULL, n, raw);
    free(raw);
    if (st == NULL)
        return -1;
    for (i = 0; i < st->n_details; i++) {
        const char *url = st->details[i]->type_url;
        const char *suffix = "/modal.client.RPCRetryPolicy";
        size_t ul = strlen(url), sl = strlen(suffix);
        Modal__Client__RPCRetryPolicy *p;

        if (ul < sl || strcmp(url + ul - sl, suffix) != 0)
            continue;
        p = modal__client__rpcretry_policy__unpack(
            NULL, st->details[i]->value.len, st->details[i]->value.data);
        if (p) {
            secs = p->retry_after_secs;
            modal__client__rpcretry_policy__free_unpacked(p, NULL);
        }
    }
    modal__client__rpcstatus__free_unpacked(st, NULL);
    return secs;
}

static void finish(modal__rpc *k, CURLcode res)
{
    modal__status *st = &k->st;
    long http = 0;

    k->done = 1;
    st->retry_after = -1;
    curl_easy_getinfo(k->easy, CURLINFO_RESPONSE_CODE, &http);
    if (k->abort_rc) {
        st->code = MODAL_INTERNAL;
        modal__copy(st->message, sizeof(st->message), k->abort_why);
    } else if (res == CURLE_OPERATION_TIMEDOUT) {
        st->code = MODAL_DEADLINE_EXCEEDED;
        snprintf(st->message, sizeof(st->message), "no answer in time (%s)",
                 k->errbuf[0] ? k->errbuf : curl_easy_strerror(res));
    } else if (res != CURLE_OK && !(k->have_status && k->grpc_status)) {
        st->code = MODAL_TRANSPORT;
        snprintf(st->message, sizeof(st->message), "%s",
                 k->errbuf[0] ? k->errbuf : curl_easy_strerror(res));
    } else if (http != 200) {
        st->code = http_to_grpc(http);
        snprintf(st->message, sizeof(st->message),
                 "the server answered with http status %ld", http);
    } else if (!k->have_status) {
        st->code = MODAL_INTERNAL;
        snprintf(st->message, sizeof(st->message),
                 "the server ended the call without a grpc-status");
    } else {
        st->code = k->grpc_status;
        modal__copy(st->message, sizeof(st->message), k->grpc_message);
        if (st->code == MODAL_OK && k->hdr_len != 0) {
            st->code = MODAL_INTERNAL;
            snprintf(st->message, sizeof(st->message),
                     "the response ended inside a message");
        }
        if (st->code != MODAL_OK)
            st->retry_after = retry_after(k->details);
    }
}

/* Mark the calls curl has finished; returns how many. */
static int collect(modal__conn *c)
{
    CURLMsg *m;
    int left, ended = 0;

    while ((m = curl_multi_info_read(c->multi, &left)) != NULL) {
        modal__rpc *k = NULL;

        if (m->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&k);
        if (k && !k->done) {
            finish(k, m->data.result);
            ended++;
        }
    }
    return ended;
}

int modal__conn_step(modal__conn *c, struct curl_waitfd *fds, unsigned n,
                     int wait_ms)
{
    int running;

    if (curl_multi_perform(c->multi, &running) != CURLM_OK)
        return ATP_E_BACKEND;
    if (collect(c))
        return 0;
    if (curl_multi_poll(c->multi, fds, n, wait_ms < 0 ? 0 : wait_ms,
                        NULL) != CURLM_OK)
        return ATP_E_BACKEND;
    if (curl_multi_perform(c->multi, &running) != CURLM_OK)
        return ATP_E_BACKEND;
    collect(c);
    return 0;
}
