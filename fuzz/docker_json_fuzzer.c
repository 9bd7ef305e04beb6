/*
 * fuzz/docker_json_fuzzer.c - the docker plugin's reading of the daemon's
 * answers (plugins/docker/api.c with json-c, dk_http_message() of
 * http.c), with no transport in between: dk_http_do() is replaced at link
 * time (-Wl,--wrap=dk_http_do) by one that answers from the input, the
 * way http.c fills a response (header lines to rq->header, a 2xx body
 * streamed to rq->download in pieces or collected, the daemon's message
 * of an error).
 *
 * Input: one byte, the operation (low nibble) and the size of the pieces
 * a streamed body is cut into (high nibble); then one answer per request,
 * separated by "\n~~~\n".  An answer is "STATUS\n", header lines, an
 * empty line, then the body; an operation that asks more than there are
 * answers sees a daemon that went away.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>

#include "docker_ops.h"
#include "fuzz.h"

#define ERR_BODY_MAX 65536 /* as http.c keeps of an error body */

int __wrap_dk_http_do(struct dk_http *h, atp_call *call,
                      const struct dk_req *rq, struct dk_resp *rs);

static struct fz in;
static size_t cut;

/* Next line of @p (@n bytes): its length with the '\n', or @n. */
static size_t line_len(const uint8_t *p, size_t n)
{
    const uint8_t *nl = memchr(p, '\n', n);

    return nl ? (size_t)(nl - p) + 1 : n;
}

int __wrap_dk_http_do(struct dk_http *h, atp_call *call,
                      const struct dk_req *rq, struct dk_resp *rs)
{
    const uint8_t *p;
    size_t n, l;
    char head[64];
    long status = 0;

    (void)h;
    memset(rs, 0, sizeof(*rs));
    if (!fz_piece(&in, &p, &n))
        return dk_host->set_error(call, ATP_E_BACKEND, "the fake daemon "
                                  "has no more answers");
    l = line_len(p, n);
    for (size_t i = 0; i < l && p[i] >= '0' && p[i] <= '9' && status < 1000;
         i++)
        status = status * 10 + (p[i] - '0');
    p += l;
    n -= l;
    /* The head, as libcurl hands it over: status line, headers, blank. */
    snprintf(head, sizeof(head), "HTTP/1.1 %03ld Fuzz\r\n", status);
    if (rq->header)
        rq->header(rq->header_ctx, head, strlen(head));
    while (n > 0) {
        l = line_len(p, n);
        if (l == 1 || (l == 2 && p[0] == '\r')) {
            p += l;
            n -= l;
            break;
        }
        if (rq->header)
            rq->header(rq->header_ctx, (const char *)p, l);
        p += l;
        n -= l;
    }
    if (rq->header)
        rq->header(rq->header_ctx, "\r\n", 2);
    rs->status = status;
    if (status >= 200 && status < 300 && rq->download) {
        while (n > 0) {
            size_t take = n < cut ? n : cut;
            int rc = rq->download(rq->download_ctx, p, take);

            if (rc)
                return rc;
            p += take;
            n -= take;
        }
        return 0;
    }
    if (status >= 300 && n > ERR_BODY_MAX)
        n = ERR_BODY_MAX;
    if (n > 0) {
        rs->body = malloc(n + 1);
        if (rs->body == NULL)
            return ATP_E_NOMEM;
        memcpy(rs->body, p, n);
        rs->body[n] = '\0';
        rs->len = n;
    }
    if (status >= 300)
        dk_http_message(rs->body, rs->len, rs->msg, sizeof(rs->msg));
    return 0;
}

static struct dk_endpoint ep;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char err[256];

    (void)argc;
    (void)argv;
    fuzz_docker_init();
    if (dk_endpoint_parse(&ep, "unix:///nonexistent/docker.sock", err,
                          sizeof(err)) != 0)
        fuzz_fail("%s", err);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dk_daemon daemon;
    struct dk_http h;
    char *spec;
    unsigned op;

    if (size == 0)
        return 0;
    op = data[0] & 15; /* 14 and 15: an endpoint */
    cut = 1 + (size_t)(data[0] >> 4) * 7;
    in.p = data + 1;
    in.n = size - 1;
    fuzz_host_reset();
    memset(&daemon, 0, sizeof(daemon));
    pthread_mutex_init(&daemon.lock, NULL);
    if (dk_http_init(&h, &ep, &daemon, 3000) != 0)
        fuzz_fail("dk_http_init");
    /* The endpoint operation reads the input as a socket address. */
    spec = malloc(size);
    if (spec == NULL)
        fuzz_fail("out of memory");
    memcpy(spec, data + 1, size - 1);
    spec[size - 1] = '\0';
    fuzz_docker_op(op, &h, spec);
    free(spec);
    dk_http_free(&h);
    pthread_mutex_destroy(&daemon.lock);
    return 0;
}
