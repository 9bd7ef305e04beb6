/*
 * core/env.c - environment arrays for commands, and secret redaction.
 *
 * Values of variables reach a sandbox only through environment arrays,
 * never through a command line.  Every value the core passes on is also
 * remembered as a secret so that log lines, error messages and events can
 * be redacted.
 */
#include "config.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

int atp__env_name_ok(const char *s, size_t len)
{
    size_t i;

    if (len == 0 || (s[0] >= '0' && s[0] <= '9'))
        return 0;
    for (i = 0; i < len; i++)
        /* ASCII, whatever the locale (a binding's host may set one). */
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return 0;
    return 1;
}

/* FNV-1a of @n bytes at @s. */
static size_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 14695981039346656037u;

    while (n--)
        h = (h ^ (unsigned char)*s++) * 1099511628211u;
    return (size_t)(h ^ (h >> 32));
}

/*
 * Grow a hash of indices (1 + index into @v, 0 free) to twice the size,
 * or to 64 slots, rehashing the @n strings of @v by their first
 * @key_len(string) bytes.  0 or ATP_E_NOMEM.
 */
static int rehash(size_t **slot, size_t *n_slot, char *const *v, size_t n,
                  size_t (*key_len)(const char *))
{
    size_t cap = *n_slot ? *n_slot * 2 : 64, i, j;
    size_t *grown = calloc(cap, sizeof(*grown));

    if (grown == NULL)
        return ATP_E_NOMEM;
    for (j = 0; j < n; j++) {
        for (i = hash_bytes(v[j], key_len(v[j])) & (cap - 1); grown[i];
             i = (i + 1) & (cap - 1))
            ;
        grown[i] = j + 1;
    }
    free(*slot);
    *slot = grown;
    *n_slot = cap;
    return 0;
}

static size_t env_key_len(const char *kv)
{
    return strcspn(kv, "=");
}

static size_t whole_len(const char *s)
{
    return strlen(s);
}

/* The slot of @key in @e: the one holding it, or the free one where it
 * goes.  @e has a free slot. */
static size_t *env_slot(const atp__env *e, const char *key, size_t keylen)
{
    size_t i, mask = e->n_slot - 1;

    for (i = hash_bytes(key, keylen) & mask; e->slot[i]; i = (i + 1) & mask) {
        const char *kv = e->v[e->slot[i] - 1];

        if (strncmp(kv, key, keylen) == 0 && kv[keylen] == '=')
            break;
    }
    return &e->slot[i];
}

int atp__env_set(atp__env *e, const char *key, size_t keylen,
                 const char *value)
{
    size_t vlen = strlen(value), *slot;
    char *kv = malloc(keylen + vlen + 2);

    if (kv == NULL)
        return ATP_E_NOMEM;
    memcpy(kv, key, keylen);
    kv[keylen] = '=';
    memcpy(kv + keylen + 1, value, vlen + 1);
    if ((e->n + 1) * 2 > e->n_slot &&
        rehash(&e->slot, &e->n_slot, e->v, e->n, env_key_len) != 0) {
        free(kv);
        return ATP_E_NOMEM;
    }
    slot = env_slot(e, key, keylen);
    if (*slot) {
        free(e->v[*slot - 1]);
        e->v[*slot - 1] = kv;
        return 0;
    }
    if (e->n + 2 > e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 16;
        char **grown = realloc(e->v, cap * sizeof(*grown));

        if (grown == NULL) {
            free(kv);
            return ATP_E_NOMEM;
        }
        e->v = grown;
        e->cap = cap;
    }
    e->v[e->n++] = kv;
    e->v[e->n] = NULL;
    *slot = e->n;
    return 0;
}

int atp__env_merge(atp__env *e, const char *const *list)
{
    size_t i;

    for (i = 0; list && list[i]; i++) {
        const char *eq = strchr(list[i], '=');
        int rc;

        if (eq == NULL || !atp__env_name_ok(list[i], (size_t)(eq - list[i]))) {
            size_t n = eq ? (size_t)(eq - list[i]) : strlen(list[i]);

            /* The part before '=' is a name, never a value: echo it; an
             * entry without '=' only when it looks like a bare name. */
            if (eq && n <= 64)
                return atp__error(ATP_E_INVAL, "'%.*s' in '%.*s=...' is not "
                                  "a valid variable name (letters, digits "
                                  "and _, not starting with a digit)",
                                  (int)n, list[i], (int)n, list[i]);
            if (!eq && n > 0 && n <= 64 && atp__env_name_ok(list[i], n))
                return atp__error(ATP_E_INVAL, "environment entry '%.*s' is "
                                  "not KEY=VALUE", (int)n, list[i]);
            return atp__error(ATP_E_INVAL, "environment entry %zu is not "
                              "KEY=VALUE with a valid variable name",
                              i + 1);
        }
        rc = atp__env_set(e, list[i], (size_t)(eq - list[i]), eq + 1);
        if (rc)
            return atp__error(rc, "out of memory");
    }
    return 0;
}

void atp__env_free(atp__env *e)
{
    size_t i;

    for (i = 0; i < e->n; i++)
        free(e->v[i]);
    free(e->v);
    free(e->slot);
    memset(e, 0, sizeof(*e));
}

void atp__secrets_init(atp__secrets *s)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->lock, NULL);
}

void atp__secrets_add(atp__secrets *s, const char *value)
{
    size_t len, i, mask;

    if (value == NULL || (len = strlen(value)) < 3)
        return; /* too short to hide without mangling every message */
    pthread_mutex_lock(&s->lock);
    if ((s->n + 1) * 2 > s->n_slot &&
        rehash(&s->slot, &s->n_slot, s->v, s->n, whole_len) != 0)
        goto out;
    mask = s->n_slot - 1;
    for (i = hash_bytes(value, len) & mask; s->slot[i]; i = (i + 1) & mask)
        if (strcmp(s->v[s->slot[i] - 1], value) == 0)
            goto out;
    if ((s->n & (s->n - 1)) == 0) { /* 0, 1, 2, 4...: grow to 2n */
        char **grown = realloc(s->v, (s->n ? s->n * 2 : 1) * sizeof(*grown));

        if (grown == NULL)
            goto out;
        s->v = grown;
    }
    if ((s->v[s->n] = strdup(value)) != NULL)
        s->slot[i] = ++s->n;
out:
    pthread_mutex_unlock(&s->lock);
}

/* Names that announce a secret whatever the length of their value. */
static int secret_name(const char *kv, size_t keylen)
{
    static const char *const words[] = {"TOKEN", "SECRET", "PASSW", "KEY",
                                        "AUTH", "CREDENTIAL", "COOKIE"};
    char name[128];
    size_t i;

    if (keylen >= sizeof(name))
        keylen = sizeof(name) - 1;
    for (i = 0; i < keylen; i++)
        name[i] = (char)toupper((unsigned char)kv[i]);
    name[keylen] = '\0';
    for (i = 0; i < ATP__ARRAY_SIZE(words); i++)
        if (strstr(name, words[i]))
            return 1;
    return 0;
}

void atp__secrets_add_env(atp__secrets *s, const atp__env *e)
{
    size_t i;

    for (i = 0; i < e->n; i++) {
        const char *eq = strchr(e->v[i], '=');
        size_t vlen = strlen(eq + 1);

        /* Long values and values of secret-sounding names are hidden. */
        if (vlen >= 8 || secret_name(e->v[i], (size_t)(eq - e->v[i])))
            atp__secrets_add(s, eq + 1);
    }
}

/* Mark in @cover each byte of @text (@len bytes) that an occurrence of
 * a secret of @s spans, overlapping occurrences included. */
static void cover_secrets(atp__secrets *s, const char *text, size_t len,
                          unsigned char *cover)
{
    size_t i;

    pthread_mutex_lock(&s->lock);
    for (i = 0; i < s->n; i++) {
        const char *secret = s->v[i], *hit = text;
        size_t slen = strlen(secret);

        if (slen > len)
            continue;
        while ((hit = strstr(hit, secret)) != NULL) {
            memset(cover + (hit - text), 1, slen);
            hit++;
        }
    }
    pthread_mutex_unlock(&s->lock);
}

void atp__secrets_redact(char *text, atp__secrets *a, atp__secrets *b)
{
    unsigned char stack[2048], *cover = stack;
    size_t len = strlen(text), i = 0, o = 0;

    if (len > sizeof(stack) && (cover = malloc(len)) == NULL) {
        /* No memory to tell secrets from the rest: show none of it. */
        snprintf(text, len + 1, "%s", len >= 3 ? "***" : "");
        return;
    }
    memset(cover, 0, len);
    if (a)
        cover_secrets(a, text, len, cover);
    if (b)
        cover_secrets(b, text, len, cover);
    /* Each run of secret bytes, however its secrets overlap or nest,
     * becomes one "***": a shorter secret that is part of a longer one
     * cannot leave the rest of the longer one in view.  A run is at
     * least 3 bytes long (no shorter secret is kept), so the text only
     * shrinks. */
    while (i < len) {
        if (!cover[i]) {
            text[o++] = text[i++];
            continue;
        }
        while (i < len && cover[i])
            i++;
        memcpy(text + o, "***", 3);
        o += 3;
    }
    text[o] = '\0';
    if (cover != stack)
        free(cover);
}

void atp__vformat_redacted(char *out, size_t cap, atp__secrets *a,
                           atp__secrets *b, const char *fmt, va_list ap)
{
    char *whole;
    va_list again;
    int n;

    va_copy(again, ap);
    n = vsnprintf(out, cap, fmt, ap);
    if (n >= 0 && (size_t)n < cap) {
        atp__secrets_redact(out, a, b);
    } else if (n >= 0 && (whole = malloc((size_t)n + 1)) != NULL) {
        /* Redact the whole text, then cut it: cut first, a secret that
         * straddled the end would leave its beginning in view. */
        vsnprintf(whole, (size_t)n + 1, fmt, again);
        atp__secrets_redact(whole, a, b);
        snprintf(out, cap, "%s", whole);
        free(whole);
    } else {
        snprintf(out, cap, "(message withheld: out of memory)");
    }
    va_end(again);
}

void atp__format_redacted(char *out, size_t cap, atp__secrets *a,
                          atp__secrets *b, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    atp__vformat_redacted(out, cap, a, b, fmt, ap);
    va_end(ap);
}

void atp__secrets_free(atp__secrets *s)
{
    size_t i;

    for (i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    free(s->slot);
    s->v = NULL;
    s->slot = NULL;
    s->n = s->n_slot = 0;
    pthread_mutex_destroy(&s->lock);
}
