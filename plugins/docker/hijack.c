/*
 * plugins/docker/hijack.c - hijacked connections: exec start and attach.
 *
 * The daemon answers these requests with a hand-made head (101 UPGRADED,
 * or 200 OK) and then uses the socket both ways: multiplexed frames out,
 * raw stdin in.  libcurl's request API cannot send body bytes after the
 * response has begun, so the connection is opened with
 * CURLOPT_CONNECT_ONLY and the request written with curl_easy_send(); the
 * response head is read here and everything after it is the stream.
 * Closing the write side (shutdown SHUT_WR) is how the command sees the end
 * of its stdin.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "dk.h"

#define HEAD_MAX 65536
#define ERR_WAIT_MS 5000 /* for the body of an error answer */

/* Wait until @fd is ready for @events, the deadline or a cancel. */
static int wait_fd(atp_call *call, curl_socket_t fd, short events,
                   int64_t deadline, int cancellable)
{
    int cfd = cancellable ? dk_host->cancel_fd(call) : -1;

    for (;;) {
        struct pollfd p[2];
        int64_t left = dk_ms_left(deadline);
        int n = 1;

        if (cancellable && dk_host->cancelled(call))
            return dk_host->set_error(call, ATP_E_CANCELLED, "cancelled");
        if (left == 0)
            return ATP_E_TIMEOUT;
        p[0].fd = fd;
        p[0].events = events;
        p[0].revents = 0;
        if (cfd >= 0) {
            p[1].fd = cfd;
            p[1].events = POLLIN;
            p[1].revents = 0;
            n = 2;
        }
        if (poll(p, (nfds_t)n, left < 0 || left > 1000 ? 1000 : (int)left) <
                0 &&
            errno != EINTR)
            return dk_host->set_error(call, ATP_E_BACKEND, "poll: %s",
                                      strerror(errno));
        if (p[0].revents)
            return 0;
    }
}

static int send_all(struct dk_hijack *hj, atp_call *call, const char *p,
                    size_t len, int64_t deadline)
{
    while (len > 0) {
        size_t n = 0;
        CURLcode res = curl_easy_send(hj->easy, p, len, &n);
        int rc;

        if (res == CURLE_AGAIN) {
            if ((rc = wait_fd(call, hj->fd, POLLOUT, deadline, 1)) != 0)
                return rc;
            continue;
        }
        if (res != CURLE_OK)
            return dk_host->set_error(call, ATP_E_BACKEND, "sending a "
                                      "request to the docker daemon: %s",
                                      curl_easy_strerror(res));
        p += n;
        len -= n;
    }
    return 0;
}

/* Receive more bytes into hj->buf; 0, or 1 at EOF, or an error. */
static int recv_more(struct dk_hijack *hj, atp_call *call, int64_t deadline,
                     size_t max)
{
    for (;;) {
        size_t n = 0;
        CURLcode res;
        int rc;

        if (hj->len + 1 >= max)
            return dk_host->set_error(call, ATP_E_BACKEND, "the docker "
                                      "daemon sent a response head over "
                                      "%zu bytes", max);
        res = curl_easy_recv(hj->easy, hj->buf + hj->len, max - 1 - hj->len,
                             &n);
        if (res == CURLE_AGAIN) {
            if ((rc = wait_fd(call, hj->fd, POLLIN, deadline, 1)) != 0)
                return rc;
            continue;
        }
        if (res != CURLE_OK)
            return dk_host->set_error(call, ATP_E_BACKEND, "reading from the "
                                      "docker daemon: %s",
                                      curl_easy_strerror(res));
        if (n == 0)
            return 1;
        hj->len += n;
        hj->buf[hj->len] = '\0';
        return 0;
    }
}

static const char *find_head_end(const char *buf, size_t len)
{
    size_t i;

    for (i = 0; i + 3 < len; i++)
        if (buf[i] == '\r' && buf[i + 1] == '\n' && buf[i + 2] == '\r' &&
            buf[i + 3] == '\n')
            return buf + i + 4;
    return NULL;
}

/* The value of header @name in the head @head (NUL-terminated), or -1. */
static long long header_number(const char *head, const char *name)
{
    size_t nl = strlen(name);
    const char *p = strstr(head, "\r\n");

    while (p && p[2] != '\r') {
        p += 2;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':')
            return strtoll(p + nl + 1, NULL, 10);
        p = strstr(p, "\r\n");
    }
    return -1;
}

/* After an error status: the rest of the body, for the daemon's message. */
static void read_error_body(struct dk_hijack *hj, atp_call *call,
                            size_t head_len, struct dk_resp *rs)
{
    int64_t deadline = dk_host->now_ns() + (int64_t)ERR_WAIT_MS * 1000000;
    long long clen;
    char saved;

    saved = hj->buf[head_len];
    hj->buf[head_len] = '\0';
    clen = header_number(hj->buf, "Content-Length");
    hj->buf[head_len] = saved;
    while (clen < 0 || (long long)(hj->len - head_len) < clen)
        if (recv_more(hj, call, deadline, HEAD_MAX) != 0)
            break;
    rs->status = hj->status;
    dk_http_message(hj->buf + head_len, hj->len - head_len, rs->msg,
                    sizeof(rs->msg));
}

int dk_hijack_open(struct dk_hijack *hj, struct dk_http *h, atp_call *call,
                   const char *path, const char *body, struct dk_resp *rs)
{
    const struct dk_endpoint *ep = h->ep;
    int64_t now = dk_host->now_ns(), deadline = dk_host->deadline_ns(call);
    char errbuf[CURL_ERROR_SIZE] = "";
    char req[2048];
    const char *end;
    size_t blen = body ? strlen(body) : 0;
    CURLcode res;
    int n, rc;

    memset(hj, 0, sizeof(*hj));
    memset(rs, 0, sizeof(*rs));
    hj->fd = CURL_SOCKET_BAD;
    if (h->api_timeout_ms > 0 &&
        (deadline == 0 || now + h->api_timeout_ms * 1000000 < deadline))
        deadline = now + h->api_timeout_ms * 1000000;
    hj->buf = malloc(HEAD_MAX);
    hj->easy = curl_easy_init();
    if (hj->buf == NULL || hj->easy == NULL) {
        dk_hijack_close(hj);
        return dk_host->set_error(call, ATP_E_NOMEM, "out of memory");
    }
    curl_easy_setopt(hj->easy, CURLOPT_URL, ep->base_url);
    if (ep->unix_path)
        curl_easy_setopt(hj->easy, CURLOPT_UNIX_SOCKET_PATH, ep->unix_path);
    curl_easy_setopt(hj->easy, CURLOPT_CONNECT_ONLY, 1L);
    curl_easy_setopt(hj->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(hj->easy, CURLOPT_ERRORBUFFER, errbuf);
    if (dk_ms_left(deadline) > 0)
        curl_easy_setopt(hj->easy, CURLOPT_CONNECTTIMEOUT_MS,
                         (long)dk_ms_left(deadline));
    res = curl_easy_perform(hj->easy);
    if (res == CURLE_OK)
        res = curl_easy_getinfo(hj->easy, CURLINFO_ACTIVESOCKET, &hj->fd);
    if (res != CURLE_OK || hj->fd == CURL_SOCKET_BAD) {
        long oserr = 0;

        curl_easy_getinfo(hj->easy, CURLINFO_OS_ERRNO, &oserr);
        rc = dk_host->set_error(call, ATP_E_BACKEND, "cannot connect to the "
                                "docker daemon at %s: %s; is dockerd "
                                "running? (set [backend.docker] socket or "
                                "DOCKER_HOST)", ep->display,
                                oserr ? strerror((int)oserr)
                                      : errbuf[0] ? errbuf
                                                  : curl_easy_strerror(res));
        dk_hijack_close(hj);
        return rc;
    }
    n = snprintf(req, sizeof(req),
                 "POST /v%s%s HTTP/1.1\r\n"
                 "Host: %s\r\n"
                 "User-Agent: atp-docker/" PACKAGE_VERSION "\r\n"
                 "Content-Type: application/json\r\n"
                 "Connection: Upgrade\r\n"
                 "Upgrade: tcp\r\n"
                 "Content-Length: %zu\r\n\r\n",
                 h->daemon->version, path, ep->host_hdr, blen);
    if (n < 0 || (size_t)n >= sizeof(req)) {
        dk_hijack_close(hj);
        return dk_host->set_error(call, ATP_E_INVAL, "request path too long");
    }
    if ((rc = send_all(hj, call, req, (size_t)n, deadline)) != 0 ||
        (blen && (rc = send_all(hj, call, body, blen, deadline)) != 0))
        goto fail;
    while ((end = find_head_end(hj->buf, hj->len)) == NULL) {
        rc = recv_more(hj, call, deadline, HEAD_MAX);
        if (rc == 1)
            rc = dk_host->set_error(call, ATP_E_BACKEND, "the docker daemon "
                                    "at %s closed the connection before "
                                    "answering POST %s", ep->display, path);
        if (rc)
            goto fail;
    }
    if (sscanf(hj->buf, "HTTP/%*u.%*u %ld", &hj->status) != 1) {
        rc = dk_host->set_error(call, ATP_E_BACKEND, "the docker daemon at "
                                "%s answered POST %s with something that is "
                                "not HTTP", ep->display, path);
        goto fail;
    }
    if (hj->status != 101 && hj->status != 200) {
        read_error_body(hj, call, (size_t)(end - hj->buf), rs);
        return 0; /* an answer: the caller judges it */
    }
    rs->status = hj->status;
    hj->off = (size_t)(end - hj->buf); /* stream bytes already here */
    return 0;
fail:
    if (rc == ATP_E_TIMEOUT)
        rc = dk_host->set_error(call, ATP_E_TIMEOUT, "the docker daemon at "
                                "%s did not answer POST %s in time",
                                ep->display, path);
    dk_hijack_close(hj);
    return rc;
}

long dk_hijack_recv(struct dk_hijack *hj, void *buf, size_t len)
{
    size_t n = 0;
    CURLcode res;

    if (hj->off < hj->len) {
        n = hj->len - hj->off;
        if (n > len)
            n = len;
        memcpy(buf, hj->buf + hj->off, n);
        hj->off += n;
        return (long)n;
    }
    res = curl_easy_recv(hj->easy, buf, len, &n);
    if (res == CURLE_AGAIN)
        return DK_AGAIN;
    if (res != CURLE_OK)
        return ATP_E_BACKEND;
    return (long)n;
}

long dk_hijack_send(struct dk_hijack *hj, const void *buf, size_t len)
{
    size_t n = 0;
    CURLcode res = curl_easy_send(hj->easy, buf, len, &n);

    if (res == CURLE_AGAIN)
        return DK_AGAIN;
    if (res != CURLE_OK)
        return ATP_E_BACKEND;
    return (long)n;
}

void dk_hijack_shut_wr(struct dk_hijack *hj)
{
    if (!hj->wr_closed && hj->fd != CURL_SOCKET_BAD)
        shutdown(hj->fd, SHUT_WR);
    hj->wr_closed = 1;
}

void dk_hijack_close(struct dk_hijack *hj)
{
    if (hj->easy)
        curl_easy_cleanup(hj->easy);
    free(hj->buf);
    hj->easy = NULL;
    hj->buf = NULL;
    hj->fd = CURL_SOCKET_BAD;
}
