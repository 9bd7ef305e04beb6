/*
 * Unit tests of the core's growable buffer: contents kept whole and
 * NUL-terminated through growth, the limit, and the size_t overflow
 * guards.
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

/* Pieces of every size from 1 to 257 bytes: the bytes come out in order,
 * NULs included, with a NUL after the last. */
static void test_grows_and_keeps_bytes(void **state)
{
    atp__buf b = ATP__BUF_INIT;
    unsigned char piece[257];
    size_t n, i, total = 0;

    (void)state;
    for (n = 1; n <= sizeof(piece); n++) {
        for (i = 0; i < n; i++)
            piece[i] = (unsigned char)(total + i);
        assert_int_equal(atp__buf_append(&b, piece, n), 0);
        total += n;
        assert_int_equal(b.len, total);
        assert_true(b.cap > b.len);
        assert_int_equal(b.p[b.len], '\0');
    }
    for (i = 0; i < total; i++)
        assert_int_equal((unsigned char)b.p[i], (unsigned char)i);
    atp__buf_release(&b);
    assert_null(b.p);
    assert_int_equal(b.len, 0);
}

static void test_text(void **state)
{
    atp__buf b;
    char *s;

    (void)state;
    atp__buf_init(&b, 0);
    assert_int_equal(atp__buf_puts(&b, "exec"), 0);
    assert_int_equal(atp__buf_puts(&b, " "), 0);
    assert_int_equal(atp__sh_quote_append(&b, "it's here"), 0);
    assert_string_equal(b.p, "exec 'it'\\''s here'");
    atp__buf_clear(&b);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.p, "");
    assert_int_equal(atp__buf_puts(&b, "again"), 0);
    s = atp__buf_detach(&b);
    assert_string_equal(s, "again");
    assert_null(b.p);
    free(s);
    /* nothing appended: an empty string, not NULL */
    s = atp__buf_detach(&b);
    assert_non_null(s);
    assert_string_equal(s, "");
    free(s);
}

/* Past max an append is refused whole and the buffer is left as it was;
 * the memory never grows past max + 1 bytes. */
static void test_limit(void **state)
{
    atp__buf b;

    (void)state;
    atp__buf_init(&b, 100);
    assert_int_equal(atp__buf_append(&b, "0123456789", 10), 0);
    while (b.len + 10 <= 100)
        assert_int_equal(atp__buf_append(&b, "0123456789", 10), 0);
    assert_int_equal(b.len, 100);
    assert_true(b.cap <= 101);
    assert_int_equal(atp__buf_append(&b, "x", 1), ATP__BUF_FULL);
    assert_int_equal(b.len, 100);
    assert_int_equal(b.p[100], '\0');
    assert_int_equal(atp__buf_append(&b, "", 0), 0);
    atp__buf_release(&b);

    atp__buf_init(&b, 5);
    assert_int_equal(atp__buf_append(&b, "123456", 6), ATP__BUF_FULL);
    assert_null(b.p);
    assert_int_equal(atp__buf_reserve(&b, 5), 0);
    assert_int_equal(atp__buf_reserve(&b, 6), ATP__BUF_FULL);
    atp__buf_release(&b);
}

/* A size that len + more + 1 cannot hold in a size_t is refused, not
 * wrapped around into a small allocation. */
static void test_length_overflow(void **state)
{
    atp__buf b = ATP__BUF_INIT;

    (void)state;
    assert_int_equal(atp__buf_reserve(&b, SIZE_MAX), ATP_E_NOMEM);
    assert_int_equal(atp__buf_reserve(&b, SIZE_MAX - 1), ATP_E_NOMEM);
    assert_null(b.p);

    assert_int_equal(atp__buf_append(&b, "abc", 3), 0);
    assert_int_equal(atp__buf_reserve(&b, SIZE_MAX - 3), ATP_E_NOMEM);
    assert_int_equal(atp__buf_append(&b, "abc", SIZE_MAX - 2), ATP_E_NOMEM);
    assert_int_equal(b.len, 3);
    assert_string_equal(b.p, "abc");
    atp__buf_release(&b);
}

/* Doubling a capacity past SIZE_MAX / 2 must not wrap around into a
 * small allocation: the next capacity is bounded, or the growth refused. */
static void test_doubling_overflow(void **state)
{
    const size_t big = SIZE_MAX / 2 + 2, most = (size_t)PTRDIFF_MAX;

    (void)state;
    assert_int_equal(atp__buf_next_cap(0, 1, SIZE_MAX - 1), ATP__BUF_FIRST);
    assert_int_equal(atp__buf_next_cap(64, 65, SIZE_MAX - 1), 128);
    assert_int_equal(atp__buf_next_cap(64, 1000, SIZE_MAX - 1), 1024);
    assert_int_equal(atp__buf_next_cap(64, 65, 99), 100);
    assert_int_equal(atp__buf_next_cap(most / 2 + 2, most / 2 + 20,
                                       SIZE_MAX - 1), most);
    assert_int_equal(atp__buf_next_cap(big, big + 16, SIZE_MAX - 1), 0);
    assert_int_equal(atp__buf_next_cap(64, most + 1, SIZE_MAX - 1), 0);
    assert_int_equal(atp__buf_next_cap(64, 101, 99), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grows_and_keeps_bytes),
        cmocka_unit_test(test_text),
        cmocka_unit_test(test_limit),
        cmocka_unit_test(test_length_overflow),
        cmocka_unit_test(test_doubling_overflow),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
