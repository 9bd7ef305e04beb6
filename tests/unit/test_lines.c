/*
 * Unit tests of line framing: chunks cut anywhere, long lines, a last line
 * without newline, NUL bytes, bounded memory.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../core/internal.h"

struct capture {
    char text[8192]; /* lines joined as "<flags>|line\n" */
    size_t len;
    size_t longest;
    int calls;
};

static void collect(int stream, const char *line, size_t len, unsigned flags,
                    void *payload)
{
    struct capture *c = payload;

    (void)stream;
    c->calls++;
    if (len > c->longest)
        c->longest = len;
    c->text[c->len++] = (char)('0' + flags);
    c->text[c->len++] = '|';
    memcpy(c->text + c->len, line, len);
    c->len += len;
    c->text[c->len++] = '\n';
}

/* Frame @in cut into pieces at the positions in @cuts. */
static void frame(struct capture *c, const char *in, size_t len,
                  size_t max, const size_t *cuts, size_t n_cuts)
{
    atp__framer f;
    size_t pos = 0, i;

    memset(c, 0, sizeof(*c));
    atp__framer_init(&f, ATP_STDOUT, max, collect, c);
    for (i = 0; i <= n_cuts; i++) {
        size_t end = i < n_cuts ? cuts[i] : len;

        assert_int_equal(atp__framer_feed(&f, in + pos, end - pos), 0);
        pos = end;
    }
    atp__framer_finish(&f);
    atp__framer_release(&f);
}

static void whole_lines(void **state)
{
    struct capture c;

    (void)state;
    frame(&c, "a\nbb\n\nccc\n", 10, 1024, NULL, 0);
    assert_int_equal(c.calls, 4);
    assert_memory_equal(c.text, "0|a\n0|bb\n0|\n0|ccc\n", c.len);
}

static void split_anywhere(void **state)
{
    const char *in = "first line\nsecond\n\nlast without newline";
    size_t len = strlen(in), a, b;
    struct capture ref, c;

    (void)state;
    frame(&ref, in, len, 1024, NULL, 0);
    assert_memory_equal(ref.text, "0|first line\n0|second\n0|\n"
                                  "2|last without newline\n", ref.len);
    /* Every way to cut the input in three gives the same lines. */
    for (a = 0; a <= len; a++) {
        for (b = a; b <= len; b++) {
            size_t cuts[2] = {a, b};

            frame(&c, in, len, 1024, cuts, 2);
            assert_int_equal(c.len, ref.len);
            assert_memory_equal(c.text, ref.text, ref.len);
        }
    }
}

static void byte_at_a_time(void **state)
{
    const char *in = "x\nyy\nzzz";
    size_t len = strlen(in), cuts[16], i;
    struct capture c;

    (void)state;
    for (i = 0; i + 1 < len; i++)
        cuts[i] = i + 1;
    frame(&c, in, len, 1024, cuts, len - 1);
    assert_memory_equal(c.text, "0|x\n0|yy\n2|zzz\n", c.len);
}

static void nul_bytes_are_data(void **state)
{
    const char in[] = {'a', '\0', 'b', '\n', '\0', '\n'};
    const char want[] = {'0', '|', 'a', '\0', 'b', '\n', '0', '|', '\0', '\n'};
    struct capture c;

    (void)state;
    frame(&c, in, sizeof(in), 1024, NULL, 0);
    assert_int_equal(c.len, sizeof(want));
    assert_memory_equal(c.text, want, sizeof(want));
}

static void long_lines_come_in_pieces(void **state)
{
    char in[300];
    size_t cuts[] = {7, 100, 101, 250};
    struct capture c;
    size_t i;

    (void)state;
    /* 200 bytes of line, a newline, then a 99-byte line without one. */
    for (i = 0; i < 200; i++)
        in[i] = (char)('a' + i % 26);
    in[200] = '\n';
    for (i = 201; i < 300; i++)
        in[i] = 'z';
    frame(&c, in, sizeof(in), 64, cuts, 4);
    /* 64 + 64 + 64 partial, then the last 8 bytes end the line. */
    assert_int_equal(c.longest, 64);
    assert_int_equal(c.calls, 4 + 2);
    assert_int_equal(c.text[0], '0' + ATP_LINE_PARTIAL);
    /* Nothing is lost: the bytes come out in order. */
    {
        char joined[300];
        size_t j = 0, k = 0;

        while (k < c.len) {
            k += 2; /* flags and '|' */
            while (c.text[k] != '\n')
                joined[j++] = c.text[k++];
            k++;
        }
        assert_int_equal(j, 299);
        assert_memory_equal(joined, in, 200);
        assert_memory_equal(joined + 200, in + 201, 99);
    }
}

static void exactly_max_is_whole(void **state)
{
    char in[65];
    struct capture c;

    (void)state;
    memset(in, 'q', 64);
    in[64] = '\n';
    frame(&c, in, sizeof(in), 64, NULL, 0);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.text[0], '0');
    assert_int_equal(c.longest, 64);
}

/*
 * Lines of exactly max_line and max_line + 1 bytes, however the chunks
 * cut them: the first is one whole line, the second a full piece and a
 * 1-byte rest, and no piece is ever longer than max_line.
 */
static void max_and_one_more(void **state)
{
    static const size_t at[] = {1, 2, 32, 63, 64, 65};
    char in[66];
    size_t n, k, i, cuts[66];
    struct capture c;

    (void)state;
    for (n = 64; n <= 65; n++) {
        memset(in, n == 64 ? 'q' : 'r', n);
        in[n] = '\n';
        for (k = 0; k <= sizeof(at) / sizeof(at[0]) + 1; k++) {
            size_t n_cuts = 0;

            if (k == sizeof(at) / sizeof(at[0]) + 1) {
                for (i = 1; i <= n; i++) /* a byte at a time */
                    cuts[n_cuts++] = i;
            } else if (k > 0 && at[k - 1] <= n) {
                cuts[n_cuts++] = at[k - 1];
            }
            frame(&c, in, n + 1, 64, cuts, n_cuts);
            assert_int_equal(c.longest, 64);
            if (n == 64) {
                assert_int_equal(c.calls, 1);
                assert_int_equal(c.len, 2 + 64 + 1);
                assert_int_equal(c.text[0], '0');
            } else {
                assert_int_equal(c.calls, 2);
                assert_int_equal(c.text[0], '0' + ATP_LINE_PARTIAL);
                assert_int_equal(c.len, (2 + 64 + 1) + (2 + 1 + 1));
                assert_memory_equal(c.text + 2 + 64 + 1, "0|r\n", 4);
            }
        }
    }
}

static void memory_stays_bounded(void **state)
{
    atp__framer f;
    struct capture c;
    char chunk[4096];
    int i;

    (void)state;
    memset(&c, 0, sizeof(c));
    memset(chunk, 'x', sizeof(chunk));
    atp__framer_init(&f, ATP_STDERR, 1000, collect, &c);
    for (i = 0; i < 256; i++) { /* 1 MiB without a single newline */
        c.len = 0;              /* only the bound matters here */
        assert_int_equal(atp__framer_feed(&f, chunk, sizeof(chunk)), 0);
        assert_true(f.buf.cap <= 1000 + 1); /* the line and a NUL */
    }
    atp__framer_release(&f);
    assert_int_equal(c.longest, 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(whole_lines),
        cmocka_unit_test(split_anywhere),
        cmocka_unit_test(byte_at_a_time),
        cmocka_unit_test(nul_bytes_are_data),
        cmocka_unit_test(long_lines_come_in_pieces),
        cmocka_unit_test(exactly_max_is_whole),
        cmocka_unit_test(max_and_one_more),
        cmocka_unit_test(memory_stays_bounded),
    };

    return cmocka_run_group_tests_name("lines", tests, NULL, NULL);
}
