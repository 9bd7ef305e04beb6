/*
 * fuzz/fake_curl.c - the part of libcurl's API the modal plugin uses
 * (easy, multi, share, slist, version), answering every call from a
 * script instead of a network, on the stub host's virtual clock.
 *
 * A call gets the next answer of the script when it is added to a multi
 * handle, and the first curl_multi_perform() after that delivers it the
 * way libcurl does over HTTP/2: the head line by line to the header
 * callback, the body in writes to the write callback (a write that
 * returns less ends the call with CURLE_WRITE_ERROR), the trailers to
 * the header callback, then a CURLMSG_DONE.  A call without an answer,
 * or told to hang, ends with CURLE_OPERATION_TIMEDOUT once its
 * CURLOPT_TIMEOUT_MS has passed on the virtual clock, or never.
 * curl_multi_poll() waits by moving the virtual clock on.
 *
 * An answer:
 *   flags   1 byte  bits 0-1  http status: 200, 200, 503, 400
 *                   bit 2     end with a transport error
 *                   bit 3     hang: never answer
 *                   bit 4     trailers-only: the status in the head
 *                   bit 5     raw body: sent as it is, no framing added
 *                   bit 6     a grpc-message trailer follows
 *                   bit 7     a grpc-status-details-bin trailer follows
 *   status  1 byte  grpc-status (255: none sent; 254: not a number)
 *   cut     1 byte  the body goes in writes of this many bytes (0: one)
 *   body    raw: length (2 bytes, big endian) and bytes; else a count
 *                   (1 byte) of messages, each a length (2 bytes) and the
 *                   bytes of one protobuf message, framed here
 *   message (bit 6) length (1 byte) and bytes, sent as they are
 *   details (bit 7) length (2 bytes) and bytes of a protobuf message,
 *                   base64-encoded here
 *
 * What the plugin sends is checked as libcurl would use it: the request
 * body (CURLOPT_POSTFIELDS, which libcurl does not copy) must still be
 * there and be one framed message when the call runs, and every header
 * line readable.
 */
#define CURL_DISABLE_TYPECHECK
#include "config.h"

#include <curl/curl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "fake_curl.h"
#include "fuzz.h"

enum { A_HANG = 0x08, A_TRANSPORT = 0x04, A_TRAILERS_ONLY = 0x10,
       A_RAW = 0x20, A_MESSAGE = 0x40, A_DETAILS = 0x80 };

struct fake_multi;

struct fake_easy {
    curl_write_callback write, header;
    void *write_data, *header_data;
    char *priv;
    char *url;
    const char *post;
    curl_off_t post_len;
    struct curl_slist *hdrs;
    long timeout_ms;
    struct fake_multi *multi;
    int64_t added_ns;
    int has_answer, done;
    long http;
    CURLcode result;
    /* the answer */
    unsigned flags, status, cut;
    const uint8_t *body;   /* raw: the bytes; else the message list */
    size_t body_len;
    unsigned n_msgs;
    const uint8_t *message, *details;
    size_t message_len, details_len;
};

struct fake_multi {
    struct fake_easy **e;
    size_t n, cap;
    CURLMsg *msgs;
    size_t n_msgs, cap_msgs, next_msg;
};

static struct fz script;
static unsigned calls;
static long live_easy, live_multi;
static volatile unsigned sink;

void fake_curl_begin(const uint8_t *data, size_t size)
{
    script.p = data;
    script.n = size;
    calls = 0;
}

void fake_curl_end(void)
{
    if (live_easy != 0 || live_multi != 0)
        fuzz_fail("%ld easy and %ld multi handles left behind", live_easy,
                  live_multi);
    script.n = 0;
}

unsigned fake_curl_calls(void)
{
    return calls;
}

/* ---- global, version, share, slist ------------------------------------- */

CURLcode curl_global_init(long flags)
{
    (void)flags;
    return CURLE_OK;
}

void curl_global_cleanup(void)
{
}

curl_version_info_data *curl_version_info(CURLversion v)
{
    static curl_version_info_data vi;

    (void)v;
    vi.age = CURLVERSION_FIRST;
    vi.version = "8.5.0-fake";
    vi.version_num = 0x080500;
    vi.host = "fuzz";
    vi.features = CURL_VERSION_HTTP2 | CURL_VERSION_SSL;
    return &vi;
}

CURLSH *curl_share_init(void)
{
    static int share;

    return &share;
}

CURLSHcode curl_share_setopt(CURLSH *sh, CURLSHoption option, ...)
{
    (void)sh;
    (void)option;
    return CURLSHE_OK;
}

CURLSHcode curl_share_cleanup(CURLSH *sh)
{
    (void)sh;
    return CURLSHE_OK;
}

struct curl_slist *curl_slist_append(struct curl_slist *list,
                                     const char *data)
{
    struct curl_slist *n = calloc(1, sizeof(*n)), *l = list;

    if (n == NULL || (n->data = strdup(data)) == NULL) {
        free(n);
        return NULL;
    }
    if (list == NULL)
        return n;
    while (l->next)
        l = l->next;
    l->next = n;
    return list;
}

void curl_slist_free_all(struct curl_slist *list)
{
    while (list) {
        struct curl_slist *next = list->next;

        free(list->data);
        free(list);
        list = next;
    }
}

/* ---- easy ------------------------------------------------------------- */

CURL *curl_easy_init(void)
{
    struct fake_easy *e = calloc(1, sizeof(*e));

    if (e) {
        e->post_len = -1;
        live_easy++;
    }
    return e;
}

void curl_easy_cleanup(CURL *curl)
{
    struct fake_easy *e = curl;

    if (e == NULL)
        return;
    if (e->multi)
        fuzz_fail("curl_easy_cleanup() of a handle still in a multi");
    free(e->url);
    free(e);
    live_easy--;
}

CURLcode curl_easy_setopt(CURL *curl, CURLoption option, ...)
{
    struct fake_easy *e = curl;
    va_list ap;
    long l = 0;
    void *p = NULL;
    curl_off_t o = 0;
    CURLcode rc = CURLE_OK;

    va_start(ap, option);
    if (option >= CURLOPTTYPE_OFF_T && option < CURLOPTTYPE_BLOB)
        o = va_arg(ap, curl_off_t);
    else if (option >= CURLOPTTYPE_FUNCTIONPOINT &&
             option < CURLOPTTYPE_OFF_T)
        p = (void *)va_arg(ap, curl_write_callback);
    else if (option >= CURLOPTTYPE_OBJECTPOINT)
        p = va_arg(ap, void *);
    else
        l = va_arg(ap, long);
    va_end(ap);
    switch (option) {
    case CURLOPT_URL:
        free(e->url);
        e->url = strdup(p); /* libcurl copies strings */
        if (e->url == NULL)
            rc = CURLE_OUT_OF_MEMORY;
        break;
    case CURLOPT_WRITEFUNCTION:
        e->write = (curl_write_callback)p;
        break;
    case CURLOPT_WRITEDATA:
        e->write_data = p;
        break;
    case CURLOPT_HEADERFUNCTION:
        e->header = (curl_write_callback)p;
        break;
    case CURLOPT_HEADERDATA:
        e->header_data = p;
        break;
    case CURLOPT_PRIVATE:
        e->priv = p;
        break;
    case CURLOPT_POSTFIELDS:
        e->post = p; /* not copied, as libcurl does not */
        break;
    case CURLOPT_POSTFIELDSIZE_LARGE:
        e->post_len = o;
        break;
    case CURLOPT_POSTFIELDSIZE:
        e->post_len = l;
        break;
    case CURLOPT_HTTPHEADER:
        e->hdrs = p;
        break;
    case CURLOPT_TIMEOUT_MS:
        e->timeout_ms = l;
        break;
    case CURLOPT_ERRORBUFFER:
        if (p)
            ((char *)p)[0] = '\0';
        break;
    default:
        break;
    }
    return rc;
}

CURLcode curl_easy_getinfo(CURL *curl, CURLINFO info, ...)
{
    struct fake_easy *e = curl;
    va_list ap;
    CURLcode rc = CURLE_OK;

    va_start(ap, info);
    if (info == CURLINFO_RESPONSE_CODE)
        *va_arg(ap, long *) = e->http;
    else if (info == CURLINFO_PRIVATE)
        *va_arg(ap, char **) = e->priv;
    else
        rc = CURLE_UNKNOWN_OPTION;
    va_end(ap);
    return rc;
}

const char *curl_easy_strerror(CURLcode code)
{
    switch (code) {
    case CURLE_OK:
        return "No error";
    case CURLE_OPERATION_TIMEDOUT:
        return "Timeout was reached";
    case CURLE_WRITE_ERROR:
        return "Failed writing received data to disk/application";
    default:
        return "Stream error in the HTTP/2 framing layer";
    }
}

/* ---- the script -------------------------------------------------------- */

/* Take the next answer for @e; none left: it hangs. */
static void take_answer(struct fake_easy *e)
{
    const uint8_t *p;
    unsigned i;

    if (script.n == 0) {
        e->flags = A_HANG;
        return;
    }
    e->has_answer = 1;
    e->flags = fz_u8(&script);
    e->status = fz_u8(&script);
    e->cut = fz_u8(&script);
    if (e->flags & A_RAW) {
        e->body_len = fz_bytes(&script, fz_u16(&script), &e->body);
    } else {
        e->n_msgs = fz_u8(&script);
        e->body = script.p;
        for (i = 0; i < e->n_msgs && script.n > 0; i++)
            fz_bytes(&script, fz_u16(&script), &p);
        e->n_msgs = i;
        e->body_len = (size_t)(script.p - e->body);
    }
    if (e->flags & A_MESSAGE)
        e->message_len = fz_bytes(&script, fz_u8(&script), &e->message);
    if (e->flags & A_DETAILS)
        e->details_len = fz_bytes(&script, fz_u16(&script), &e->details);
}

static int hdr(struct fake_easy *e, const char *line, size_t len)
{
    return e->header == NULL ||
           e->header((char *)line, 1, len, e->header_data) == len;
}

static int body(struct fake_easy *e, const uint8_t *p, size_t len)
{
    while (len > 0) {
        size_t n = e->cut == 0 || e->cut > len ? len : e->cut;

        if (e->write == NULL || e->write((char *)p, 1, n, e->write_data) != n)
            return 0;
        p += n;
        len -= n;
    }
    return 1;
}

static void send_status(struct fake_easy *e)
{
    char line[600];
    int n;

    if (e->status == 255)
        return;
    if (e->status == 254)
        n = snprintf(line, sizeof(line), "grpc-status: x%u\r\n", e->status);
    else
        n = snprintf(line, sizeof(line), "grpc-status: %u\r\n", e->status);
    hdr(e, line, (size_t)n);
    if (e->flags & A_MESSAGE) {
        n = snprintf(line, sizeof(line), "grpc-message: %.*s\r\n",
                     (int)e->message_len, (const char *)e->message);
        hdr(e, line, (size_t)n);
    }
    if (e->flags & A_DETAILS) {
        static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmn"
                                  "opqrstuvwxyz0123456789+/";
        size_t cap = 32 + e->details_len * 4 / 3 + 8, o, i;
        char *out = malloc(cap);

        if (out == NULL)
            return;
        o = (size_t)snprintf(out, cap, "grpc-status-details-bin: ");
        for (i = 0; i < e->details_len; i += 3) {
            uint32_t v = (uint32_t)e->details[i] << 16;
            size_t left = e->details_len - i;

            if (left > 1)
                v |= (uint32_t)e->details[i + 1] << 8;
            if (left > 2)
                v |= e->details[i + 2];
            out[o++] = b64[v >> 18 & 63];
            out[o++] = b64[v >> 12 & 63];
            if (left > 1)
                out[o++] = b64[v >> 6 & 63];
            if (left > 2)
                out[o++] = b64[v & 63];
        }
        out[o++] = '\r';
        out[o++] = '\n';
        hdr(e, out, o);
        free(out);
    }
}

/* What libcurl would send: read it all, and it must be one message. */
static void check_request(const struct fake_easy *e)
{
    const unsigned char *b = (const unsigned char *)e->post;
    const struct curl_slist *h;
    size_t i, len = e->post_len < 0 ? 0 : (size_t)e->post_len;
    unsigned s = 0;

    if (e->url == NULL || b == NULL || len < 5)
        fuzz_fail("a call without a url or a framed body");
    for (i = 0; i < len; i++)
        s += b[i];
    for (h = e->hdrs; h; h = h->next)
        s += (unsigned)strlen(h->data);
    sink += s;
    if (b[0] != 0 || ((size_t)b[1] << 24 | (size_t)b[2] << 16 |
                      (size_t)b[3] << 8 | b[4]) != len - 5)
        fuzz_fail("%s: the request body is not one framed message",
                  e->url);
}

/* Deliver the answer of @e and end the call. */
static void run(struct fake_easy *e)
{
    static const long https[] = {200, 200, 503, 400};
    static const char *const texts[] = {"200", "200", "503", "400"};
    char line[64];
    int ok = 1;

    check_request(e);
    e->http = https[e->flags & 3];
    snprintf(line, sizeof(line), "HTTP/2 %s \r\n", texts[e->flags & 3]);
    ok = hdr(e, line, strlen(line)) &&
         hdr(e, "content-type: application/grpc\r\n", 32);
    if (ok && (e->flags & A_TRAILERS_ONLY)) {
        send_status(e);
        ok = hdr(e, "\r\n", 2);
    } else if (ok) {
        ok = hdr(e, "\r\n", 2);
        if (ok && (e->flags & A_RAW)) {
            ok = body(e, e->body, e->body_len);
        } else {
            struct fz m = {e->body, e->body_len};
            unsigned i;

            for (i = 0; ok && i < e->n_msgs; i++) {
                const uint8_t *p;
                size_t n = fz_bytes(&m, fz_u16(&m), &p);
                uint8_t *framed = malloc(n + 5);

                if (framed == NULL)
                    fuzz_fail("out of memory");
                framed[0] = 0;
                framed[1] = (uint8_t)(n >> 24);
                framed[2] = (uint8_t)(n >> 16);
                framed[3] = (uint8_t)(n >> 8);
                framed[4] = (uint8_t)n;
                memcpy(framed + 5, p, n);
                ok = body(e, framed, n + 5);
                free(framed);
            }
        }
        if (ok && !(e->flags & A_TRANSPORT)) /* a reset: no trailers */
            send_status(e);
    }
    e->result = !ok                         ? CURLE_WRITE_ERROR
                : e->flags & A_TRANSPORT ? CURLE_HTTP2_STREAM
                                         : CURLE_OK;
    e->done = 1;
}

/* ---- multi ------------------------------------------------------------ */

CURLM *curl_multi_init(void)
{
    struct fake_multi *m = calloc(1, sizeof(*m));

    if (m)
        live_multi++;
    return m;
}

CURLMcode curl_multi_setopt(CURLM *multi, CURLMoption option, ...)
{
    (void)multi;
    (void)option;
    return CURLM_OK;
}

CURLMcode curl_multi_add_handle(CURLM *multi, CURL *curl)
{
    struct fake_multi *m = multi;
    struct fake_easy *e = curl;

    if (e->multi)
        return CURLM_ADDED_ALREADY;
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 8;
        struct fake_easy **grown = realloc(m->e, cap * sizeof(*grown));

        if (grown == NULL)
            return CURLM_OUT_OF_MEMORY;
        m->e = grown;
        m->cap = cap;
    }
    m->e[m->n++] = e;
    e->multi = m;
    e->added_ns = fuzz_host_now();
    e->done = 0;
    e->http = 0;
    calls++;
    take_answer(e);
    return CURLM_OK;
}

CURLMcode curl_multi_remove_handle(CURLM *multi, CURL *curl)
{
    struct fake_multi *m = multi;
    struct fake_easy *e = curl;
    size_t i;

    for (i = 0; i < m->n; i++) {
        if (m->e[i] != e)
            continue;
        m->e[i] = m->e[--m->n];
        e->multi = NULL;
        /* A message about it that was not read goes too. */
        for (i = m->next_msg; i < m->n_msgs; i++)
            if (m->msgs[i].easy_handle == curl)
                m->msgs[i].easy_handle = NULL;
        return CURLM_OK;
    }
    return CURLM_BAD_EASY_HANDLE;
}

static void queue_done(struct fake_multi *m, struct fake_easy *e)
{
    if (m->n_msgs == m->cap_msgs) {
        size_t cap = m->cap_msgs ? m->cap_msgs * 2 : 8;
        CURLMsg *grown = realloc(m->msgs, cap * sizeof(*grown));

        if (grown == NULL)
            fuzz_fail("out of memory");
        m->msgs = grown;
        m->cap_msgs = cap;
    }
    memset(&m->msgs[m->n_msgs], 0, sizeof(m->msgs[0]));
    m->msgs[m->n_msgs].msg = CURLMSG_DONE;
    m->msgs[m->n_msgs].easy_handle = e;
    m->msgs[m->n_msgs].data.result = e->result;
    m->n_msgs++;
}

CURLMcode curl_multi_perform(CURLM *multi, int *running)
{
    struct fake_multi *m = multi;
    int64_t now = fuzz_host_now();
    size_t i;

    *running = 0;
    /* A callback may start or end calls: walk by index, re-reading n. */
    for (i = 0; i < m->n; i++) {
        struct fake_easy *e = m->e[i];

        if (e->done)
            continue;
        if (!(e->flags & A_HANG)) {
            run(e);
            queue_done(m, e);
        } else if (e->timeout_ms > 0 &&
                   now - e->added_ns >= e->timeout_ms * 1000000LL) {
            e->result = CURLE_OPERATION_TIMEDOUT;
            e->done = 1;
            queue_done(m, e);
        } else {
            (*running)++;
        }
    }
    return CURLM_OK;
}

CURLMcode curl_multi_poll(CURLM *multi, struct curl_waitfd extra_fds[],
                          unsigned int extra_nfds, int timeout_ms, int *ret)
{
    struct fake_multi *m = multi;
    size_t i;

    (void)extra_fds;
    (void)extra_nfds;
    if (ret)
        *ret = 0;
    for (i = 0; i < m->n; i++)
        if (!m->e[i]->done && !(m->e[i]->flags & A_HANG))
            return CURLM_OK; /* something to do at once */
    /* Nothing will happen before the timeout: let it pass. */
    fuzz_clock_advance((int64_t)(timeout_ms > 0 ? timeout_ms : 1) *
                       1000000);
    return CURLM_OK;
}

CURLMsg *curl_multi_info_read(CURLM *multi, int *msgs_in_queue)
{
    struct fake_multi *m = multi;
    static CURLMsg out;

    while (m->next_msg < m->n_msgs &&
           m->msgs[m->next_msg].easy_handle == NULL)
        m->next_msg++;
    if (m->next_msg >= m->n_msgs) {
        m->next_msg = m->n_msgs = 0;
        *msgs_in_queue = 0;
        return NULL;
    }
    out = m->msgs[m->next_msg++];
    *msgs_in_queue = (int)(m->n_msgs - m->next_msg);
    return &out;
}

CURLMcode curl_multi_cleanup(CURLM *multi)
{
    struct fake_multi *m = multi;

    if (m == NULL)
        return CURLM_OK;
    while (m->n > 0) /* as libcurl: the easy handles are only detached */
        m->e[--m->n]->multi = NULL;
    free(m->e);
    free(m->msgs);
    free(m);
    live_multi--;
    return CURLM_OK;
}
