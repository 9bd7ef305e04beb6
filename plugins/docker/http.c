/*
 * plugins/docker/http.c - HTTP/1.1 to the Docker daemon with libcurl,
 * over its unix socket (CURLOPT_UNIX_SOCKET_PATH) or plain tcp.
 *
 * Every request runs on a multi handle and waits in curl_multi_poll()
 * with the call's cancel descriptor among the watched ones, so that a
 * cancel is seen at once, and against a deadline: the call's (the host
 * backstop) and, for requests that answer promptly, api_timeout too.
 * Streaming requests (pull, archive) have no cap of their own: a bare
 * CURLOPT_TIMEOUT would cut a long pull or copy.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dk.h"

#define ERR_BODY_MAX 65536             /* error responses kept */
#define OK_BODY_MAX (64 * 1024 * 1024) /* collected 2xx bodies */
#define CLEANUP_FLOOR_NS 10000000000LL  /* see dk_http_do */

int64_t dk_ms_left(int64_t deadline_ns)
{
    int64_t now;

    if (deadline_ns == 0)
        return -1;
    now = dk_host->now_ns();
    return deadline_ns <= now ? 0 : (deadline_ns - now + 999999) / 1000000;
}

/* ---- endpoints ---------------------------------------------------------- */

/* @a then @b, in a new string. */
static char *dup_cat(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 1);

    if (s) {
        memcpy(s, a, la);
        memcpy(s + la, b, lb + 1);
    }
    return s;
}

int dk_endpoint_parse(struct dk_endpoint *ep, const char *spec, char *err,
                      size_t errlen)
{
    const char *rest;

    memset(ep, 0, sizeof(*ep));
    if (strncmp(spec, "unix://", 7) == 0 || spec[0] == '/') {
        rest = spec[0] == '/' ? spec : spec + 7;
        if (rest[0] != '/') {
            snprintf(err, errlen, "socket %s: the path must be absolute, "
                     "as in unix:///var/run/docker.sock", spec);
            return ATP_E_CONFIG;
        }
        if (strlen(rest) >= 108) {
            snprintf(err, errlen, "socket %s: unix socket paths are limited "
                     "to 107 bytes", spec);
            return ATP_E_CONFIG;
        }
        ep->unix_path = strdup(rest);
        ep->base_url = strdup("http://localhost");
        ep->host_hdr = strdup("localhost");
        ep->display = dup_cat("unix://", rest);
    } else if (strncmp(spec, "tcp://", 6) == 0 ||
               strncmp(spec, "http://", 7) == 0) {
        char host[256];
        size_t n;

        rest = spec + (spec[0] == 't' ? 6 : 7);
        n = strcspn(rest, "/");
        if (n == 0 || n >= sizeof(host) || (rest[n] && strcmp(rest + n, "/"))) {
            snprintf(err, errlen, "socket %s: write tcp://HOST:PORT", spec);
            return ATP_E_CONFIG;
        }
        memcpy(host, rest, n);
        host[n] = '\0';
        if (strchr(host, ':') == NULL || host[n - 1] == ']')
            ep->host_hdr = dup_cat(host, ":2375");
        else
            ep->host_hdr = strdup(host);
        if (ep->host_hdr) {
            ep->base_url = dup_cat("http://", ep->host_hdr);
            ep->display = dup_cat("tcp://", ep->host_hdr);
        }
        ep->remote = 1;
    } else {
        snprintf(err, errlen, "socket %s: use unix:///PATH, /PATH or "
                 "tcp://HOST:PORT (ssh:// and TLS are not supported: "
                 "forward the socket with ssh -L instead)", spec);
        return ATP_E_CONFIG;
    }
    if (ep->base_url == NULL || ep->host_hdr == NULL || ep->display == NULL ||
        (!ep->remote && ep->unix_path == NULL)) {
        dk_endpoint_free(ep);
        snprintf(err, errlen, "out of memory");
        return ATP_E_NOMEM;
    }
    return 0;
}

void dk_endpoint_free(struct dk_endpoint *ep)
{
    free(ep->unix_path);
    free(ep->base_url);
    free(ep->host_hdr);
    free(ep->display);
    memset(ep, 0, sizeof(*ep));
}

/* ---- connections -------------------------------------------------------- */

int dk_http_init(struct dk_http *h, const struct dk_endpoint *ep,
                 struct dk_daemon *daemon, int64_t api_timeout_ms)
{
    memset(h, 0, sizeof(*h));
    h->ep = ep;
    h->daemon = daemon;
    h->api_timeout_ms = api_timeout_ms;
    h->easy = curl_easy_init();
    h->multi = curl_multi_init();
    if (h->easy == NULL || h->multi == NULL) {
        dk_http_free(h);
        return ATP_E_NOMEM;
    }
    return 0;
}

void dk_http_free(struct dk_http *h)
{
    dk_http_abandon(h);
    if (h->easy)
        curl_easy_cleanup(h->easy);
    if (h->multi)
        curl_multi_cleanup(h->multi);
    h->easy = NULL;
    h->multi = NULL;
}

void dk_resp_free(struct dk_resp *rs)
{
    free(rs->body);
    rs->body = NULL;
    rs->len = 0;
}

/* ---- messages ----------------------------------------------------------- */

void dk_http_message(const char *body, size_t len, char *out, size_t outlen)
{
    json_tokener *tok;
    json_object *obj = NULL, *m;
    size_t n;

    out[0] = '\0';
    if (body == NULL || len == 0)
        return;
    tok = json_tokener_new();
    if (tok) {
        obj = json_tokener_parse_ex(tok, body, (int)(len > 1 << 20 ? 1 << 20
                                                                    : len));
        json_tokener_free(tok);
    }
    if (obj && json_object_is_type(obj, json_type_object) &&
        json_object_object_get_ex(obj, "message", &m) &&
        json_object_is_type(m, json_type_string)) {
        snprintf(out, outlen, "%s", json_object_get_string(m));
        json_object_put(obj);
        return;
    }
    json_object_put(obj);
    /* Not JSON: the first line of the text. */
    n = strcspn(body, "\r\n");
    if (n > len)
        n = len;
    if (n >= outlen)
        n = outlen - 1;
    memcpy(out, body, n);
    out[n] = '\0';
}

int dk_http_rate(const struct dk_resp *rs)
{
    return rs->status == 429 || strstr(rs->msg, "toomanyrequests") != NULL ||
           strstr(rs->msg, "rate limit") != NULL ||
           strstr(rs->msg, "quota") != NULL;
}

int dk_http_fail(atp_call *call, int code, const struct dk_resp *rs,
                 const char *what, const char *hint)
{
    return dk_host->set_error(call, code, "cannot %s: the docker daemon "
                              "answered %ld: %s%s%s", what, rs->status,
                              rs->msg[0] ? rs->msg : "(no message)",
                              hint ? "; " : "", hint ? hint : "");
}

/* ---- one request -------------------------------------------------------- */

struct xfer {
    const struct dk_req *rq;
    struct dk_resp *rs;
    CURL *easy;
    size_t cap;
    int cb_rc;
    int headers_done; /* the final response's head has arrived */
};

/* The request in flight on a connection (struct dk_http's fl). */
struct dk_flight {
    struct dk_req rq;
    struct xfer x;
    struct curl_slist *hdrs;
    char url[2048];
    char errbuf[CURL_ERROR_SIZE];
    int64_t deadline, t0;
    int cancel_fd;
    int done; /* the transfer ended (well or not) */
};

static int body_append(struct xfer *x, const char *p, size_t n, size_t max)
{
    struct dk_resp *rs = x->rs;

    if (rs->len + n > max)
        n = max > rs->len ? max - rs->len : 0; /* keep what fits */
    if (n == 0)
        return 0;
    if (rs->len + n + 1 > x->cap) {
        size_t cap = x->cap ? x->cap : 4096;
        char *grown;

        while (cap < rs->len + n + 1)
            cap *= 2;
        grown = realloc(rs->body, cap);
        if (grown == NULL)
            return ATP_E_NOMEM;
        rs->body = grown;
        x->cap = cap;
    }
    memcpy(rs->body + rs->len, p, n);
    rs->len += n;
    rs->body[rs->len] = '\0';
    return 0;
}

static size_t on_write(char *p, size_t size, size_t n, void *ud)
{
    struct xfer *x = ud;
    size_t len = size * n;
    long status = 0;

    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    if (status >= 200 && status < 300 && x->rq->download) {
        int rc = x->rq->download(x->rq->download_ctx, p, len);

        if (rc) {
            x->cb_rc = rc;
            return 0; /* CURLE_WRITE_ERROR */
        }
        return len;
    }
    if (body_append(x, p, len, status >= 200 && status < 300 ? OK_BODY_MAX
                                                             : ERR_BODY_MAX)) {
        x->cb_rc = ATP_E_NOMEM;
        return 0;
    }
    return len;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    struct xfer *x = ud;
    size_t len = size * n;

    if (x->rq->header)
        x->rq->header(x->rq->header_ctx, p, len);
    if (len > 0 && (p[0] == '\r' || p[0] == '\n')) {
        long status = 0;

        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
        if (status >= 200)
            x->headers_done = 1; /* not a 1xx head */
    }
    return len;
}

static size_t on_read(char *p, size_t size, size_t n, void *ud)
{
    struct xfer *x = ud;
    long got = x->rq->upload(x->rq->upload_ctx, p, size * n);

    if (got < 0) {
        x->cb_rc = (int)got;
        return CURL_READFUNC_ABORT;
    }
    return (size_t)got;
}

/* A transport failure, said so that a user knows what to do. */
static int transport_error(struct dk_http *h, atp_call *call, CURLcode res,
                           const char *errbuf, const char *method,
                           const char *path)
{
    const char *where = h->ep->display;
    long oserr = 0;

    curl_easy_getinfo(h->easy, CURLINFO_OS_ERRNO, &oserr);
    if (res == CURLE_COULDNT_CONNECT || res == CURLE_COULDNT_RESOLVE_HOST) {
        const char *why = oserr ? strerror((int)oserr)
                                : errbuf[0] ? errbuf : curl_easy_strerror(res);

        if (oserr == EACCES)
            return dk_host->set_error(call, ATP_E_BACKEND, "cannot connect "
                                      "to the docker daemon at %s: %s; add "
                                      "yourself to the docker group or set "
                                      "[backend.docker] socket", where, why);
        return dk_host->set_error(call, ATP_E_BACKEND, "cannot connect to "
                                  "the docker daemon at %s: %s; is dockerd "
                                  "running? (set [backend.docker] socket or "
                                  "DOCKER_HOST)", where, why);
    }
    return dk_host->set_error(call, ATP_E_BACKEND, "the docker daemon at %s "
                              "failed %s %s: %s; is dockerd still running?",
                              where, method, path,
                              errbuf[0] ? errbuf : curl_easy_strerror(res));
}

static void build_url(const struct dk_http *h, const struct dk_req *rq,
                      char *url, size_t len)
{
    if (rq->unversioned || h->daemon == NULL || !h->daemon->negotiated)
        snprintf(url, len, "%s%s", h->ep->base_url, rq->path);
    else
        snprintf(url, len, "%s/v%s%s", h->ep->base_url, h->daemon->version,
                 rq->path);
}

static void setup(struct dk_http *h, const struct dk_req *rq, struct xfer *x,
                  struct curl_slist **hdrs, const char *url, char *errbuf,
                  int64_t deadline)
{
    CURL *e = h->easy;
    int64_t left = dk_ms_left(deadline);

    curl_easy_reset(e);
    curl_easy_setopt(e, CURLOPT_URL, url);
    if (h->ep->unix_path)
        curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, h->ep->unix_path);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "atp-docker/" PACKAGE_VERSION);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    if (left > 0)
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)left);
    /* An upload waits for the daemon's 100 Continue: a daemon refusing it
     * answers before the body is sent, and that answer is what the user
     * sees, not a broken pipe under a body it never read. */
    *hdrs = curl_slist_append(NULL, rq->upload ? "Expect: 100-continue"
                                               : "Expect:");
    if (rq->body || rq->upload) {
        char ct[128];

        snprintf(ct, sizeof(ct), "Content-Type: %s",
                 rq->content_type ? rq->content_type : "application/json");
        *hdrs = curl_slist_append(*hdrs, ct);
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, *hdrs);
    if (strcmp(rq->method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (strcmp(rq->method, "POST") == 0) {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, rq->body ? rq->body : "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE,
                         (long)(rq->body ? strlen(rq->body) : 0));
    } else if (strcmp(rq->method, "PUT") == 0 && rq->upload) {
        curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(e, CURLOPT_READDATA, x);
    } else if (strcmp(rq->method, "GET") != 0) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, rq->method);
    }
}

/* Set up the request and hand it to the multi handle. */
static int flight_start(struct dk_http *h, atp_call *call,
                        const struct dk_req *rq, struct dk_resp *rs)
{
    struct dk_flight *f = calloc(1, sizeof(*f));
    int64_t now = dk_host->now_ns();

    memset(rs, 0, sizeof(*rs));
    if (f == NULL)
        return dk_host->set_error(call, ATP_E_NOMEM, "out of memory");
    /*
     * A new handle for each request; the connection stays in the multi
     * handle's pool.  A reused handle in libcurl before 8.1.0 (Debian 12
     * has 7.88.1) keeps a pointer to the last header of the response
     * before, freed when the next request starts, and unfolds a folded
     * first header line of the next response onto it: a use after free
     * that any answer starting its headers with a space or tab set off
     * (curl issue 11101; fuzz/regress/docker_http/folded-first-header).
     */
    {
        CURL *fresh = curl_easy_init();

        if (fresh == NULL) {
            free(f);
            return dk_host->set_error(call, ATP_E_NOMEM, "out of memory");
        }
        curl_easy_cleanup(h->easy);
        h->easy = fresh;
    }
    f->rq = *rq;
    f->x.rq = &f->rq;
    f->x.rs = rs;
    f->x.easy = h->easy;
    f->t0 = now;
    f->cancel_fd = rq->uncancellable ? -1 : dk_host->cancel_fd(call);
    if (rq->timeout_ms > 0) {
        f->deadline = now + rq->timeout_ms * 1000000;
    } else {
        f->deadline = dk_host->deadline_ns(call);
        if (!rq->streaming && h->api_timeout_ms > 0 &&
            (f->deadline == 0 ||
             now + h->api_timeout_ms * 1000000 < f->deadline))
            f->deadline = now + h->api_timeout_ms * 1000000;
        /* Cleanup (kills, removal, the last inspect) runs when the call's
         * deadline has passed too: it always gets a few seconds, but never
         * more than api_timeout_s. */
        if (rq->uncancellable && f->deadline != 0) {
            int64_t floor = CLEANUP_FLOOR_NS;

            if (h->api_timeout_ms > 0 && h->api_timeout_ms * 1000000 < floor)
                floor = h->api_timeout_ms * 1000000;
            if (f->deadline < now + floor)
                f->deadline = now + floor;
        }
    }
    build_url(h, rq, f->url, sizeof(f->url));
    setup(h, &f->rq, &f->x, &f->hdrs, f->url, f->errbuf, f->deadline);
    if (curl_multi_add_handle(h->multi, h->easy) != CURLM_OK) {
        curl_slist_free_all(f->hdrs);
        free(f);
        return dk_host->set_error(call, ATP_E_BACKEND, "libcurl refused a "
                                  "transfer handle");
    }
    h->fl = f;
    return 0;
}

/*
 * Drive the request in flight until it ends, or (@until_head) until its
 * response head has arrived, or (@max_ms >= 0) for at most @max_ms.
 */
static int flight_drive(struct dk_http *h, atp_call *call, int until_head,
                        int64_t max_ms)
{
    struct dk_flight *f = h->fl;
    const struct dk_req *rq = &f->rq;
    int64_t stop = max_ms >= 0 ? dk_host->now_ns() + max_ms * 1000000 : 0;
    int running = 1;

    for (;;) {
        struct curl_waitfd wfd;
        int64_t left, slice;

        if (curl_multi_perform(h->multi, &running) != CURLM_OK)
            return dk_host->set_error(call, ATP_E_BACKEND, "libcurl failed "
                                      "driving %s %s", rq->method, rq->path);
        if (!running) {
            f->done = 1;
            return 0;
        }
        if (until_head && f->x.headers_done)
            return 0;
        if (!rq->uncancellable && dk_host->cancelled(call))
            return dk_host->set_error(call, ATP_E_CANCELLED, "cancelled");
        left = dk_ms_left(f->deadline);
        if (left == 0)
            return dk_host->set_error(call, ATP_E_TIMEOUT, "the docker "
                                      "daemon at %s did not answer %s %s "
                                      "within %.1f s", h->ep->display,
                                      rq->method, rq->path,
                                      (double)(dk_host->now_ns() - f->t0) /
                                          1e9);
        slice = left < 0 || left > 1000 ? 1000 : left;
        if (stop) {
            int64_t rest = dk_ms_left(stop);

            if (rest == 0)
                return 0;
            if (rest < slice)
                slice = rest;
        }
        wfd.fd = f->cancel_fd;
        wfd.events = CURL_WAIT_POLLIN;
        wfd.revents = 0;
        curl_multi_poll(h->multi, f->cancel_fd >= 0 ? &wfd : NULL,
                        f->cancel_fd >= 0 ? 1 : 0, (int)slice, NULL);
    }
}

/* Take the request off the connection; with @rc == 0, fill its response. */
static int flight_end(struct dk_http *h, atp_call *call, int rc)
{
    struct dk_flight *f = h->fl;
    struct dk_resp *rs = f->x.rs;
    CURLcode res = CURLE_OK;
    CURLMsg *msg;
    int left_msgs;

    while (rc == 0 && (msg = curl_multi_info_read(h->multi, &left_msgs)))
        if (msg->msg == CURLMSG_DONE)
            res = msg->data.result;
    curl_multi_remove_handle(h->multi, h->easy);
    curl_slist_free_all(f->hdrs);
    if (rc == 0 && res != CURLE_OK) {
        if (f->x.cb_rc)
            rc = f->x.cb_rc; /* the callback said why */
        else
            rc = transport_error(h, call, res, f->errbuf, f->rq.method,
                                 f->rq.path);
    }
    if (rc == 0 && f->x.cb_rc)
        rc = f->x.cb_rc;
    if (rc == 0) {
        curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &rs->status);
        if (rs->status >= 300)
            dk_http_message(rs->body, rs->len, rs->msg, sizeof(rs->msg));
        dk_host->log(call, ATP_LOG_DEBUG, "%s %s -> %ld (%.1f ms)",
                     f->rq.method, f->rq.path, rs->status,
                     (double)(dk_host->now_ns() - f->t0) / 1e6);
    } else {
        dk_resp_free(rs);
    }
    h->fl = NULL;
    free(f);
    return rc;
}

/* How long dk_http_send() drives a request: enough to send it. */
#define SEND_SLICE_MS 20

int dk_http_do(struct dk_http *h, atp_call *call, const struct dk_req *rq,
               struct dk_resp *rs)
{
    int rc = flight_start(h, call, rq, rs);

    if (rc)
        return rc;
    return flight_end(h, call, flight_drive(h, call, 0, -1));
}

int dk_http_begin(struct dk_http *h, atp_call *call, const struct dk_req *rq,
                  struct dk_resp *rs, int *pending)
{
    int rc = flight_start(h, call, rq, rs);

    *pending = 0;
    if (rc)
        return rc;
    rc = flight_drive(h, call, 1, -1);
    if (rc || h->fl->done)
        return flight_end(h, call, rc);
    curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &rs->status);
    *pending = 1;
    return 0;
}

int dk_http_send(struct dk_http *h, atp_call *call, const struct dk_req *rq,
                 struct dk_resp *rs, int *pending)
{
    int rc = flight_start(h, call, rq, rs);

    *pending = 0;
    if (rc)
        return rc;
    rc = flight_drive(h, call, 0, SEND_SLICE_MS);
    if (rc || h->fl->done)
        return flight_end(h, call, rc);
    *pending = 1;
    return 0;
}

int dk_http_poll(struct dk_http *h, atp_call *call, int64_t max_ms,
                 int *done)
{
    int rc;

    *done = 0;
    if (h->fl == NULL)
        return dk_host->set_error(call, ATP_E_INVAL, "no request in flight");
    rc = flight_drive(h, call, 0, max_ms);
    if (rc || h->fl->done) {
        *done = rc == 0;
        return flight_end(h, call, rc);
    }
    return 0;
}

void dk_http_abandon(struct dk_http *h)
{
    if (h->fl == NULL)
        return;
    curl_multi_remove_handle(h->multi, h->easy);
    curl_slist_free_all(h->fl->hdrs);
    dk_resp_free(h->fl->x.rs);
    free(h->fl);
    h->fl = NULL;
}

int dk_http_probe(const struct dk_endpoint *ep, int64_t timeout_ms)
{
    CURL *e = curl_easy_init();
    CURLcode res;

    if (e == NULL)
        return ATP_E_NOMEM;
    curl_easy_setopt(e, CURLOPT_URL, ep->base_url);
    if (ep->unix_path)
        curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, ep->unix_path);
    curl_easy_setopt(e, CURLOPT_CONNECT_ONLY, 1L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)timeout_ms);
    res = curl_easy_perform(e);
    curl_easy_cleanup(e);
    return res == CURLE_OK ? 0 : ATP_E_BACKEND;
}
