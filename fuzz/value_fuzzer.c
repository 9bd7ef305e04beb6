/*
 * fuzz/value_fuzzer.c - the configuration value parsers (core/value.c):
 * the input, as a string, through every type's parser and check, the
 * choice parser with a list from the input, and the "did you mean"
 * suggestion; with the invariants each parser promises.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>

#include "../core/internal.h"
#include "fuzz.h"

static volatile size_t sink;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const keys[] = {"timeout_s", "kill_grace_s",
                                       "max_line", "transfer_exclude",
                                       "backend", "a", ""};
    char *s = malloc(size + 1), *bar;
    char why[256];
    int64_t i64;
    double d;
    int b, t;

    if (s == NULL)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    if (atp__parse_bool(s, &b) == 0 && b != 0 && b != 1)
        fuzz_fail("bool '%s' parsed as %d", s, b);
    atp__parse_int(s, &i64);
    if (atp__parse_number(s, &d) == 0 && !(d >= 0))
        fuzz_fail("number '%s' parsed as %g", s, d);
    if (atp__parse_duration_ms(s, &i64) == 0 && i64 < 0)
        fuzz_fail("duration '%s' parsed as %lld ms", s, (long long)i64);
    if (atp__parse_size(s, &i64) == 0 && i64 < 0)
        fuzz_fail("size '%s' parsed as %lld", s, (long long)i64);
    for (t = ATP_OPT_STRING; t <= ATP_OPT_CHOICE + 1; t++) {
        why[0] = '\0';
        if (atp__check_value(t, "none|gzip|zstd", s, why, sizeof(why)) != 0 &&
            why[0] == '\0')
            fuzz_fail("a refused value without a reason");
    }
    sink += atp__nearest(s, keys, ATP__ARRAY_SIZE(keys)) != NULL;
    /* "word|choices": the word against a list the input makes up. */
    bar = strchr(s, '|');
    if (bar) {
        *bar = '\0';
        atp__parse_choice(s, bar + 1);
        atp__check_value(ATP_OPT_CHOICE, bar + 1, s, why, sizeof(why));
    }
    free(s);
    return 0;
}
