/*
 * core/value.c - strict parsing of configuration values and the
 * "did you mean" suggestion for misspelt keys.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Parse a decimal number with an optional fraction; returns the end. */
static const char *scan_number(const char *s, double *out)
{
    const char *p = s;
    double v = 0, scale = 0.1;
    int digits = 0;

    while (*p >= '0' && *p <= '9') {
        v = v * 10 + (*p++ - '0');
        digits++;
    }
    if (*p == '.') {
        p++;
        while (*p >= '0' && *p <= '9') {
            v += (*p++ - '0') * scale;
            scale /= 10;
            digits++;
        }
    }
    if (digits == 0)
        return NULL;
    *out = v;
    return p;
}

int atp__parse_bool(const char *s, int *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    size_t i;

    for (i = 0; i < ATP__ARRAY_SIZE(yes); i++) {
        if (strcmp(s, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcmp(s, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return ATP_E_INVAL;
}

int atp__parse_int(const char *s, int64_t *out)
{
    char *end;
    long long v;

    if (*s == '\0' || (*s != '-' && (*s < '0' || *s > '9')))
        return ATP_E_INVAL;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return ATP_E_INVAL;
    *out = v;
    return 0;
}

int atp__parse_number(const char *s, double *out)
{
    const char *end = scan_number(s, out);

    return end != NULL && *end == '\0' ? 0 : ATP_E_INVAL;
}

/*
 * A duration in milliseconds, unrounded: 0, or ATP_E_INVAL when @s is not
 * a number with a known unit.
 */
static int duration_ms(const char *s, double *out)
{
    static const struct {
        const char *unit;
        double ms;
    } units[] = {
        {"", 1000}, {"s", 1000}, {"ms", 1}, {"m", 60000}, {"min", 60000},
        {"h", 3600000},
    };
    double v;
    const char *end = scan_number(s, &v);
    size_t i;

    if (end == NULL)
        return ATP_E_INVAL;
    for (i = 0; i < ATP__ARRAY_SIZE(units); i++) {
        if (strcmp(end, units[i].unit) == 0) {
            *out = v * units[i].ms;
            return 0;
        }
    }
    return ATP_E_INVAL;
}

int atp__parse_duration_ms(const char *s, int64_t *out)
{
    double v;

    /* Under 1 ms a budget would round to 0, which reads as "none". */
    if (duration_ms(s, &v) != 0 || v > 1e15 || (v > 0 && v < 1))
        return ATP_E_INVAL;
    *out = (int64_t)(v + 0.5); /* v >= 0: rounds to nearest */
    return 0;
}

int atp__parse_size(const char *s, int64_t *out)
{
    static const struct {
        const char *unit;
        double mult;
    } units[] = {
        {"", 1}, {"B", 1},
        {"K", 1024.0}, {"KiB", 1024.0}, {"k", 1024.0},
        {"M", 1048576.0}, {"MiB", 1048576.0},
        {"G", 1073741824.0}, {"GiB", 1073741824.0},
        {"T", 1099511627776.0}, {"TiB", 1099511627776.0},
        {"kB", 1e3}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
    };
    double v;
    const char *end = scan_number(s, &v);
    size_t i;

    if (end == NULL)
        return ATP_E_INVAL;
    for (i = 0; i < ATP__ARRAY_SIZE(units); i++) {
        if (strcmp(end, units[i].unit) == 0) {
            v *= units[i].mult;
            if (v > 9e18 || v != (double)(int64_t)v)
                return ATP_E_INVAL;
            *out = (int64_t)v;
            return 0;
        }
    }
    return ATP_E_INVAL;
}

int atp__parse_choice(const char *s, const char *choices)
{
    size_t n = strlen(s);
    const char *p = choices;
    int index = 0;

    if (n == 0)
        return ATP_E_INVAL;
    while (p && *p) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);

        if (len == n && memcmp(p, s, n) == 0)
            return index;
        p = bar ? bar + 1 : NULL;
        index++;
    }
    return ATP_E_INVAL;
}

int atp__check_value(int type, const char *choices, const char *value,
                     char *why, size_t whylen)
{
    int64_t i;
    double d;
    int b;

    switch (type) {
    case ATP_OPT_STRING:
        return 0;
    case ATP_OPT_INT:
        if (atp__parse_int(value, &i) == 0)
            return 0;
        snprintf(why, whylen, "expected an integer such as 4");
        break;
    case ATP_OPT_BOOL:
        if (atp__parse_bool(value, &b) == 0)
            return 0;
        snprintf(why, whylen, "expected true or false (yes/no, on/off, 1/0)");
        break;
    case ATP_OPT_DURATION:
        if (atp__parse_duration_ms(value, &i) == 0)
            return 0;
        if (duration_ms(value, &d) == 0 && d > 0 && d < 1)
            snprintf(why, whylen, "a duration under 1ms would round to 0; "
                                  "give 0 or at least 1ms");
        else
            snprintf(why, whylen, "expected a duration such as 30, 1.5s, "
                                  "500ms, 5m or 2h (plain numbers are "
                                  "seconds)");
        break;
    case ATP_OPT_SIZE:
        if (atp__parse_size(value, &i) == 0)
            return 0;
        snprintf(why, whylen, "expected a size such as 4096, 64KiB, 4MiB, "
                              "1GiB or 10MB (plain numbers are bytes)");
        break;
    case ATP_OPT_NUMBER:
        if (atp__parse_number(value, &d) == 0)
            return 0;
        snprintf(why, whylen, "expected a number such as 2 or 0.5");
        break;
    case ATP_OPT_CHOICE:
        if (atp__parse_choice(value, choices ? choices : "") >= 0)
            return 0;
        snprintf(why, whylen, "expected one of %s", choices ? choices : "");
        break;
    default:
        snprintf(why, whylen, "the option has an unknown type %d", type);
        break;
    }
    return ATP_E_CONFIG;
}

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), i, j;
    size_t row[64];

    if (lb >= ATP__ARRAY_SIZE(row) || la >= 64)
        return (size_t)-1;
    for (j = 0; j <= lb; j++)
        row[j] = j;
    for (i = 1; i <= la; i++) {
        size_t prev = row[0];

        row[0] = i;
        for (j = 1; j <= lb; j++) {
            size_t cur = row[j];
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t best = prev + cost;

            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            prev = cur;
        }
    }
    return row[lb];
}

const char *atp__nearest(const char *word, const char *const *cands,
                         size_t n)
{
    const char *best = NULL;
    size_t best_d = (size_t)-1, i, limit;

    for (i = 0; i < n; i++) {
        size_t d = edit_distance(word, cands[i]);

        if (d < best_d) {
            best_d = d;
            best = cands[i];
        }
    }
    /* A typo changes a few characters; anything further is a guess. */
    limit = strlen(word) / 3 + 1;
    if (limit > 3)
        limit = 3;
    return best_d <= limit ? best : NULL;
}
