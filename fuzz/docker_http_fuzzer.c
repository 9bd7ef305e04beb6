/*
 * fuzz/docker_http_fuzzer.c - the docker plugin's HTTP side (http.c over
 * libcurl, the hand-read response head of hijack.c, the JSON of api.c,
 * the demultiplexer behind a hijacked stream) against a fake daemon: a
 * thread on a unix socket that answers each connection with the next
 * piece of the input, byte for byte, and closes it.
 *
 * Input: one byte, the operation (see docker_ops.c); then the raw answers
 * ("HTTP/1.1 200 OK\r\n..."), separated by "\n~~~\n".  A request that
 * finds no answer left is closed unanswered: a daemon that went away.  A
 * connection that sends nothing (dk_http_probe) takes no answer.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "docker_ops.h"
#include "fuzz.h"

#define MAX_ANSWERS 16

static struct dk_endpoint ep;
static int lfd = -1;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t idle = PTHREAD_COND_INITIALIZER;
static int in_flight; /* answers being sent: they point into the input */
static struct {
    const uint8_t *p;
    size_t n;
} answers[MAX_ANSWERS];
static size_t n_answers, next_answer;

/*
 * Read a request: its head, then Content-Length bytes of body.  Returns
 * how many bytes came: none for a probe that only connects.
 */
static size_t read_request(int c)
{
    char buf[65536];
    size_t len = 0;
    long long want = -1;

    for (;;) {
        struct pollfd p = {c, POLLIN, 0};
        ssize_t n;

        if (want < 0) {
            const char *end;

            buf[len] = '\0';
            end = strstr(buf, "\r\n\r\n");
            if (end) {
                const char *cl = strstr(buf, "Content-Length:");

                want = (long long)(end + 4 - buf) +
                       (cl && cl < end ? strtoll(cl + 15, NULL, 10) : 0);
            }
        }
        if (want >= 0 && (long long)len >= want)
            return len;
        if (len + 1 >= sizeof(buf) || poll(&p, 1, 2000) <= 0)
            return len;
        n = read(c, buf + len, sizeof(buf) - 1 - len);
        if (n <= 0)
            return len;
        len += (size_t)n;
    }
}

static void *serve(void *arg)
{
    (void)arg;
    for (;;) {
        int c = accept(lfd, NULL, NULL);
        const uint8_t *p = NULL;
        size_t n = 0;
        int took = 0;

        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return NULL;
        }
        if (read_request(c) == 0) { /* a probe (dk_http_probe) */
            close(c);
            continue;
        }
        pthread_mutex_lock(&mu);
        if (next_answer < n_answers) {
            p = answers[next_answer].p;
            n = answers[next_answer].n;
            next_answer++;
            in_flight++;
            took = 1;
        }
        pthread_mutex_unlock(&mu);
        while (n > 0) {
            ssize_t w = send(c, p, n, MSG_NOSIGNAL);

            if (w <= 0)
                break;
            p += w;
            n -= (size_t)w;
        }
        close(c);
        pthread_mutex_lock(&mu);
        if (took) {
            in_flight--;
            pthread_cond_signal(&idle);
        }
        pthread_mutex_unlock(&mu);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct sockaddr_un sa;
    pthread_t t;
    char spec[200], err[256];

    (void)argc;
    (void)argv;
    fuzz_docker_init();
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/d.sock", fuzz_tmpdir());
    lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        listen(lfd, 16) != 0)
        fuzz_fail("cannot listen on %s: %s", sa.sun_path, strerror(errno));
    if (pthread_create(&t, NULL, serve, NULL) != 0)
        fuzz_fail("cannot start the fake daemon");
    pthread_detach(t);
    snprintf(spec, sizeof(spec), "unix://%s", sa.sun_path);
    if (dk_endpoint_parse(&ep, spec, err, sizeof(err)) != 0)
        fuzz_fail("%s", err);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz in = {data, size};
    struct dk_daemon daemon;
    struct dk_http h;
    const uint8_t *p;
    unsigned op;
    size_t n;

    if (size == 0)
        return 0;
    op = fz_u8(&in);
    pthread_mutex_lock(&mu);
    n_answers = next_answer = 0;
    while (n_answers < MAX_ANSWERS && fz_piece(&in, &p, &n)) {
        answers[n_answers].p = p;
        answers[n_answers].n = n;
        n_answers++;
    }
    pthread_mutex_unlock(&mu);
    fuzz_host_reset();
    memset(&daemon, 0, sizeof(daemon));
    pthread_mutex_init(&daemon.lock, NULL);
    /* The hijacked stream needs a negotiated version for its path. */
    if (op % FUZZ_DOCKER_OPS >= 14) {
        daemon.negotiated = 1;
        snprintf(daemon.version, sizeof(daemon.version), "1.41");
    }
    if (dk_http_init(&h, &ep, &daemon, 3000) != 0)
        fuzz_fail("dk_http_init");
    fuzz_docker_op(op, &h, NULL);
    dk_http_free(&h);
    pthread_mutex_destroy(&daemon.lock);
    /* The input goes when this returns: no answer may still be sent from
     * it, nor reach the next input. */
    pthread_mutex_lock(&mu);
    while (in_flight > 0)
        pthread_cond_wait(&idle, &mu);
    n_answers = next_answer = 0;
    pthread_mutex_unlock(&mu);
    return 0;
}
