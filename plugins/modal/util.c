/*
 * plugins/modal/util.c - small helpers of the Modal plugin.
 */
#define _GNU_SOURCE
#include "config.h"

#include <errno.h>
#include <json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <atp/plugin.h>

#include "util.h"

void modal__uuid4(char out[37])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char r[16];
    size_t got = 0, i, o = 0;

    while (got < sizeof(r)) {
        ssize_t n = getrandom(r + got, sizeof(r) - got, 0);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            /* No entropy source: mix the clock, the pid and an address. */
            uint64_t t = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20) ^
                         (uint64_t)(uintptr_t)&r;
            struct timespec ts;

            clock_gettime(CLOCK_MONOTONIC, &ts);
            t ^= (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15u;
            for (i = got; i < sizeof(r); i++, t = t * 6364136223846793005u +
                                                      1442695040888963407u)
                r[i] = (unsigned char)(t >> 56);
            break;
        }
        got += (size_t)n;
    }
    r[6] = (unsigned char)((r[6] & 0x0f) | 0x40);
    r[8] = (unsigned char)((r[8] & 0x3f) | 0x80);
    for (i = 0; i < sizeof(r); i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[r[i] >> 4];
        out[o++] = hex[r[i] & 15];
    }
    out[o] = '\0';
}

static int b64_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

unsigned char *modal__base64_decode(const char *in, size_t len,
                                    size_t *out_len)
{
    unsigned char *out = malloc(len / 4 * 3 + 3);
    uint32_t acc = 0;
    size_t i, o = 0;
    int bits = 0;

    if (out == NULL)
        return NULL;
    while (len > 0 && (in[len - 1] == '=' || in[len - 1] == '\r' ||
                       in[len - 1] == '\n' || in[len - 1] == ' '))
        len--;
    for (i = 0; i < len; i++) {
        int v = b64_value(in[i]);

        if (v < 0) {
            free(out);
            return NULL;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    *out_len = o;
    return out;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

void modal__percent_decode(char *s)
{
    char *w = s;

    for (; *s; s++) {
        int hi, lo;

        if (*s == '%' && (hi = hex_value(s[1])) >= 0 &&
            (lo = hex_value(s[2])) >= 0) {
            *w++ = (char)(hi * 16 + lo);
            s += 2;
        } else {
            *w++ = *s;
        }
    }
    *w = '\0';
}

int modal__jwt_exp(const char *jwt, int64_t *exp)
{
    const char *dot1 = strchr(jwt, '.'), *dot2;
    unsigned char *payload;
    json_tokener *tok;
    json_object *obj, *v;
    size_t n;

    *exp = 0;
    if (dot1 == NULL || (dot2 = strchr(dot1 + 1, '.')) == NULL ||
        strchr(dot2 + 1, '.') != NULL || dot1 == jwt || dot2 == dot1 + 1)
        return ATP_E_INVAL;
    payload = modal__base64_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), &n);
    if (payload == NULL)
        return ATP_E_INVAL;
    tok = json_tokener_new();
    obj = tok ? json_tokener_parse_ex(tok, (const char *)payload, (int)n)
              : NULL;
    if (tok)
        json_tokener_free(tok);
    free(payload);
    if (obj == NULL || !json_object_is_type(obj, json_type_object)) {
        json_object_put(obj);
        return ATP_E_INVAL;
    }
    if (json_object_object_get_ex(obj, "exp", &v) &&
        (json_object_is_type(v, json_type_int) ||
         json_object_is_type(v, json_type_double)))
        *exp = json_object_get_int64(v);
    json_object_put(obj);
    return 0;
}

int64_t modal__wall_s(void)
{
    return (int64_t)time(NULL);
}

int modal__copy_id(char *dst, size_t cap, const char *src)
{
    size_t n = src ? strlen(src) : 0;

    dst[0] = '\0';
    if (n == 0 || n >= cap)
        return -1;
    memcpy(dst, src, n + 1);
    return 0;
}

void modal__copy(char *dst, size_t cap, const char *src)
{
    size_t n = src ? strlen(src) : 0;

    if (cap == 0)
        return;
    if (n >= cap)
        n = cap - 1;
    if (n)
        memcpy(dst, src, n);
    dst[n] = '\0';
}

int modal__strv_addf(modal__strv *sv, const char *fmt, ...)
{
    va_list ap;
    char *s;
    int n;

    if (sv->n + 2 > sv->cap) {
        size_t cap = sv->cap ? sv->cap * 2 : 8;
        char **grown = realloc(sv->v, cap * sizeof(*grown));

        if (grown == NULL)
            return ATP_E_NOMEM;
        sv->v = grown;
        sv->cap = cap;
    }
    va_start(ap, fmt);
    n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0)
        return ATP_E_NOMEM;
    sv->v[sv->n++] = s;
    sv->v[sv->n] = NULL;
    return 0;
}

void modal__strv_free(modal__strv *sv)
{
    size_t i;

    for (i = 0; i < sv->n; i++)
        free(sv->v[i]);
    free(sv->v);
    sv->v = NULL;
    sv->n = sv->cap = 0;
}
