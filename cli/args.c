/*
 * cli/args.c - what atp-run's subcommands parse alike.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"

int cli_parse_seconds(const char *s, double *out)
{
    char *end;
    double v, mult = 1;

    errno = 0;
    v = strtod(s, &end);
    /* Also refuses nan and inf, which strtod accepts. */
    if (end == s || !(v >= 0 && v <= CLI_MAX_SECONDS))
        return -1;
    if (errno == ERANGE)
        return -2; /* 1e-400: a positive number too small for a double */
    if (strcmp(end, "") == 0 || strcmp(end, "s") == 0)
        mult = 1;
    else if (strcmp(end, "ms") == 0)
        mult = 0.001;
    else if (strcmp(end, "m") == 0)
        mult = 60;
    else if (strcmp(end, "h") == 0)
        mult = 3600;
    else
        return -1;
    if (v * mult > CLI_MAX_SECONDS)
        return -1;
    if (v > 0 && v * mult < CLI_MIN_SECONDS)
        return -2;
    *out = v * mult;
    return 0;
}

int cli_seconds_arg(const char *opt, const char *arg, double *out)
{
    switch (cli_parse_seconds(arg, out)) {
    case 0:
        return 0;
    case -2:
        fprintf(stderr, "atp-run: %s %s: a budget under 1 ms cannot be "
                        "enforced; give at least 1ms\n", opt, arg);
        return -1;
    default:
        fprintf(stderr, "atp-run: %s %s: expected seconds, such as 30, 1.5, "
                        "2m or 1h\n", opt, arg);
        return -1;
    }
}

int cli_env_name_ok(const char *s)
{
    const char *p;

    if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || *s == '_'))
        return 0;
    for (p = s + 1; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
              (*p >= '0' && *p <= '9') || *p == '_'))
            return 0;
    return 1;
}

char *cli_env_arg(char *arg)
{
    const char *val;
    char *kv, *eq;
    size_t klen;

    if ((eq = strchr(arg, '=')) != NULL) {
        if ((kv = strdup(arg)) != NULL)
            memset(eq + 1, '*', strlen(eq + 1));
        return kv;
    }
    if (!cli_env_name_ok(arg)) {
        fprintf(stderr, "atp-run: -e '%s': expected KEY=VALUE, or KEY "
                        "naming a variable of atp-run's environment\n", arg);
        return NULL;
    }
    val = getenv(arg);
    if (val == NULL) {
        fprintf(stderr, "atp-run: -e %s: %s is not set in atp-run's "
                        "environment; export it or pass -e %s=VALUE\n",
                arg, arg, arg);
        return NULL;
    }
    klen = strlen(arg);
    kv = malloc(klen + strlen(val) + 2);
    if (kv == NULL)
        return NULL;
    memcpy(kv, arg, klen);
    kv[klen] = '=';
    memcpy(kv + klen + 1, val, strlen(val) + 1);
    return kv;
}
