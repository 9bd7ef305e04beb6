/*
 * tests/docker/test_demux.c - the docker plugin's frame demultiplexer on
 * canned byte streams, split at every place a transport could split them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../plugins/docker/dk.h"

const atp_host_api *dk_host; /* demux.c needs no host services */

struct sink {
    char out[262144];
    size_t out_len;
    char err[262144];
    size_t err_len;
    int calls;
    int stop_after; /* > 0: return 42 on that call */
};

static int collect(void *ctx, int stream, const void *buf, size_t len)
{
    struct sink *k = ctx;

    assert_true(len > 0);
    assert_true(stream == ATP_STDOUT || stream == ATP_STDERR);
    if (stream == ATP_STDOUT) {
        assert_true(k->out_len + len <= sizeof(k->out));
        memcpy(k->out + k->out_len, buf, len);
        k->out_len += len;
    } else {
        assert_true(k->err_len + len <= sizeof(k->err));
        memcpy(k->err + k->err_len, buf, len);
        k->err_len += len;
    }
    if (++k->calls == k->stop_after)
        return 42;
    return 0;
}

/* Append a frame of @type with @len bytes of @data to @buf. */
static size_t frame(unsigned char *buf, int type, const void *data,
                    uint32_t len)
{
    buf[0] = (unsigned char)type;
    buf[1] = buf[2] = buf[3] = 0;
    buf[4] = (unsigned char)(len >> 24);
    buf[5] = (unsigned char)(len >> 16);
    buf[6] = (unsigned char)(len >> 8);
    buf[7] = (unsigned char)len;
    memcpy(buf + 8, data, len);
    return 8 + len;
}

static unsigned char canned[512];
static size_t canned_len;
static const char want_out[] = "hello\nworld\nlast\0bin" "echoed";
static const char want_err[] = "err1\nxdaemon says no\n";

static void build_canned(void)
{
    size_t n = 0;

    n += frame(canned + n, 1, "hello\n", 6);
    n += frame(canned + n, 2, "err1\n", 5);
    n += frame(canned + n, 1, "wor", 3);
    n += frame(canned + n, 1, "ld\nlast\0bin", 11); /* NUL is payload */
    n += frame(canned + n, 1, "", 0);              /* empty frame */
    n += frame(canned + n, 2, "x", 1);
    n += frame(canned + n, 0, "echoed", 6);  /* stdin type: stdout */
    n += frame(canned + n, 3, "daemon says no\n", 15); /* systemerr */
    canned_len = n;
}

static void check_sink(const struct sink *k)
{
    assert_int_equal(k->out_len, sizeof(want_out) - 1);
    assert_memory_equal(k->out, want_out, k->out_len);
    assert_int_equal(k->err_len, sizeof(want_err) - 1);
    assert_memory_equal(k->err, want_err, k->err_len);
}

/* Feed @len bytes in pieces cut at @cuts (sorted, @n of them). */
static void feed_cut(struct dk_demux *d, struct sink *k,
                     const unsigned char *buf, size_t len,
                     const size_t *cuts, size_t n)
{
    size_t at = 0, i;

    for (i = 0; i <= n; i++) {
        size_t end = i < n ? cuts[i] : len;

        assert_int_equal(dk_demux_feed(d, buf + at, end - at, collect, k), 0);
        at = end;
    }
}

static void test_whole(void **state)
{
    struct dk_demux d;
    struct sink *k = calloc(1, sizeof(*k));

    (void)state;
    build_canned();
    dk_demux_init(&d);
    feed_cut(&d, k, canned, canned_len, NULL, 0);
    assert_int_equal(dk_demux_end(&d), 0);
    check_sink(k);
    assert_int_equal(d.sys_bytes, 15);
    free(k);
}

static void test_split_once_anywhere(void **state)
{
    struct sink *k = malloc(sizeof(*k));
    size_t cut;

    (void)state;
    build_canned();
    for (cut = 0; cut <= canned_len; cut++) {
        struct dk_demux d;

        memset(k, 0, sizeof(*k));
        dk_demux_init(&d);
        feed_cut(&d, k, canned, canned_len, &cut, 1);
        assert_int_equal(dk_demux_end(&d), 0);
        check_sink(k);
    }
    free(k);
}

static void test_split_twice_anywhere(void **state)
{
    struct sink *k = malloc(sizeof(*k));
    size_t cuts[2];

    (void)state;
    build_canned();
    for (cuts[0] = 0; cuts[0] <= canned_len; cuts[0]++) {
        for (cuts[1] = cuts[0]; cuts[1] <= canned_len; cuts[1]++) {
            struct dk_demux d;

            memset(k, 0, sizeof(*k));
            dk_demux_init(&d);
            feed_cut(&d, k, canned, canned_len, cuts, 2);
            assert_int_equal(dk_demux_end(&d), 0);
            check_sink(k);
        }
    }
    free(k);
}

static void test_byte_by_byte(void **state)
{
    struct sink *k = calloc(1, sizeof(*k));
    struct dk_demux d;
    size_t i;

    (void)state;
    build_canned();
    dk_demux_init(&d);
    for (i = 0; i < canned_len; i++)
        assert_int_equal(dk_demux_feed(&d, canned + i, 1, collect, k), 0);
    assert_int_equal(dk_demux_end(&d), 0);
    check_sink(k);
    free(k);
}

/* A frame bigger than 64 KiB: the size's high bytes count. */
static void test_large_frame_random_splits(void **state)
{
    size_t plen = 200000, len, at, i;
    unsigned char *buf = malloc(plen + 64), *payload = malloc(plen);
    struct sink *k = malloc(sizeof(*k));
    struct dk_demux d;
    unsigned seed = 12345;
    int round;

    (void)state;
    for (i = 0; i < plen; i++)
        payload[i] = (unsigned char)(i * 7 + (i >> 8));
    len = frame(buf, 1, payload, (uint32_t)plen);
    len += frame(buf + len, 2, "tail", 4);
    for (round = 0; round < 50; round++) {
        memset(k, 0, sizeof(*k));
        dk_demux_init(&d);
        for (at = 0; at < len;) {
            size_t n;

            seed = seed * 1103515245u + 12345u;
            n = 1 + (seed >> 8) % 9000;
            if (n > len - at)
                n = len - at;
            assert_int_equal(dk_demux_feed(&d, buf + at, n, collect, k), 0);
            at += n;
        }
        assert_int_equal(dk_demux_end(&d), 0);
        assert_int_equal(k->out_len, plen);
        assert_memory_equal(k->out, payload, plen);
        assert_int_equal(k->err_len, 4);
        assert_memory_equal(k->err, "tail", 4);
    }
    free(buf);
    free(payload);
    free(k);
}

/* The stream ends inside a header, or inside a payload. */
static void test_truncated(void **state)
{
    struct sink *k = malloc(sizeof(*k));
    size_t cut;

    (void)state;
    build_canned();
    for (cut = 1; cut < canned_len; cut++) {
        struct dk_demux d;
        int between = 0;
        size_t at = 0;

        /* Is @cut exactly at a frame boundary? */
        while (at < cut) {
            uint32_t n = (uint32_t)canned[at + 4] << 24 |
                         (uint32_t)canned[at + 5] << 16 |
                         (uint32_t)canned[at + 6] << 8 | canned[at + 7];

            at += 8 + n;
        }
        between = at == cut;
        memset(k, 0, sizeof(*k));
        dk_demux_init(&d);
        assert_int_equal(dk_demux_feed(&d, canned, cut, collect, k), 0);
        if (between)
            assert_int_equal(dk_demux_end(&d), 0);
        else
            assert_int_equal(dk_demux_end(&d), DK_DEMUX_ETRUNC);
        /* What arrived was delivered: a prefix of each stream. */
        assert_true(k->out_len <= sizeof(want_out) - 1);
        assert_memory_equal(k->out, want_out, k->out_len);
        assert_memory_equal(k->err, want_err, k->err_len);
    }
    free(k);
}

static void test_unknown_type(void **state)
{
    unsigned char buf[64];
    struct sink *k = calloc(1, sizeof(*k));
    struct dk_demux d;
    size_t n = 0;

    (void)state;
    n += frame(buf + n, 1, "ok\n", 3);
    n += frame(buf + n, 7, "bad", 3);
    dk_demux_init(&d);
    assert_int_equal(dk_demux_feed(&d, buf, n, collect, k),
                     DK_DEMUX_EBADTYPE);
    assert_int_equal(d.bad_type, 7);
    assert_int_equal(k->out_len, 3);
    assert_int_equal(k->err_len, 0);
    free(k);
}

/* The receiver says stop: the feed returns its code at once. */
static void test_emit_stops(void **state)
{
    struct sink *k = calloc(1, sizeof(*k));
    struct dk_demux d;

    (void)state;
    build_canned();
    k->stop_after = 2;
    dk_demux_init(&d);
    assert_int_equal(dk_demux_feed(&d, canned, canned_len, collect, k), 42);
    assert_int_equal(k->calls, 2);
    assert_int_equal(k->out_len, 6);
    assert_int_equal(k->err_len, 5);
    free(k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole),
        cmocka_unit_test(test_split_once_anywhere),
        cmocka_unit_test(test_split_twice_anywhere),
        cmocka_unit_test(test_byte_by_byte),
        cmocka_unit_test(test_large_frame_random_splits),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_unknown_type),
        cmocka_unit_test(test_emit_stops),
    };

    return cmocka_run_group_tests_name("docker demux", tests, NULL, NULL);
}
