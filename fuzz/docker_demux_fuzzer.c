/*
 * fuzz/docker_demux_fuzzer.c - the docker plugin's demultiplexer of exec
 * and attach streams (plugins/docker/demux.c).  The first byte picks how
 * the rest is cut into reads, as a transport could cut it; the oracle
 * feeds the same stream whole and byte by byte too, and every way must
 * deliver the same payload to the same streams and end the same.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>

#include "../plugins/docker/dk.h"
#include "fuzz.h"

const atp_host_api *dk_host; /* demux.c needs no host services */

struct sink {
    unsigned char *buf; /* (stream, byte) pairs, as delivered */
    size_t len, cap;
    int stop_at;        /* > 0: the emit call that says stop */
    int calls;
};

static int emit(void *ctx, int stream, const void *p, size_t len)
{
    struct sink *k = ctx;
    const unsigned char *b = p;
    size_t i;

    if (len == 0)
        fuzz_fail("an empty piece of payload");
    if (stream != ATP_STDOUT && stream != ATP_STDERR)
        fuzz_fail("payload for stream %d", stream);
    if (k->len + 2 * len > k->cap) {
        size_t cap = k->cap ? k->cap : 4096;
        unsigned char *grown;

        while (cap < k->len + 2 * len)
            cap *= 2;
        grown = realloc(k->buf, cap);
        if (grown == NULL)
            fuzz_fail("out of memory");
        k->buf = grown;
        k->cap = cap;
    }
    for (i = 0; i < len; i++) {
        k->buf[k->len++] = (unsigned char)stream;
        k->buf[k->len++] = b[i];
    }
    return ++k->calls == k->stop_at ? 42 : 0;
}

/* Feed @data in pieces of @step bytes (0: whole); the feed's result. */
static int run(const uint8_t *data, size_t size, size_t step,
               struct sink *k, int *end)
{
    struct dk_demux d;
    size_t off = 0;
    int rc = 0;

    dk_demux_init(&d);
    while (off < size && rc == 0) {
        size_t n = step == 0 || size - off < step ? size - off : step;

        rc = dk_demux_feed(&d, data + off, n, emit, k);
        off += n;
    }
    *end = dk_demux_end(&d);
    return rc;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sink a = {NULL, 0, 0, 0, 0}, b = {NULL, 0, 0, 0, 0};
    struct sink c = {NULL, 0, 0, 0, 0};
    size_t step;
    int ra, rb, rc, ea, eb, ec;

    if (size == 0)
        return 0;
    step = data[0] % 17;
    data++;
    size--;
    ra = run(data, size, 0, &a, &ea);
    rb = run(data, size, 1, &b, &eb);
    rc = run(data, size, step, &c, &ec);
    if (ra != rb || ra != rc)
        fuzz_fail("feeding whole, bytewise and by %zu: %d, %d, %d", step, ra,
                  rb, rc);
    if (ra == 0 && (ea != eb || ea != ec))
        fuzz_fail("ends differ: %d, %d, %d", ea, eb, ec);
    if (a.len != b.len || a.len != c.len ||
        (a.len && (memcmp(a.buf, b.buf, a.len) != 0 ||
                   memcmp(a.buf, c.buf, a.len) != 0)))
        fuzz_fail("the payload differs with the cuts");
    free(a.buf);
    free(b.buf);
    free(c.buf);
    /* A consumer that stops: the feed says so and delivers no more. */
    if (a.calls > 1) {
        struct sink s = {NULL, 0, 0, 0, 0};
        int e;

        s.stop_at = 1 + (int)(data[0] % (unsigned)a.calls);
        if (run(data, size, step, &s, &e) != 42 || s.calls != s.stop_at)
            fuzz_fail("a stop at call %d was not kept (%d calls)",
                      s.stop_at, s.calls);
        free(s.buf);
    }
    return 0;
}
