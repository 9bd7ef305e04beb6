/*
 * core/buf.c - the core's growable byte buffer.
 *
 * One type for every text or byte string built up piece by piece: a sh
 * script, a list of names, a command's captured output, a file read whole.
 * The contents stay NUL-terminated (one byte beyond len) so that text can
 * be handed on as a C string, and growth doubles the capacity, guarded
 * against size_t overflow and capped by an optional limit.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

void atp__buf_init(atp__buf *b, size_t max)
{
    b->p = NULL;
    b->len = b->cap = 0;
    b->max = max ? max : SIZE_MAX - 1;
}

size_t atp__buf_next_cap(size_t cap, size_t need, size_t max)
{
    if (need > max + 1 || need > (size_t)PTRDIFF_MAX)
        return 0;
    if (cap == 0)
        cap = ATP__BUF_FIRST;
    while (cap < need)
        cap = cap > (size_t)PTRDIFF_MAX / 2 ? (size_t)PTRDIFF_MAX : cap * 2;
    return cap > max + 1 ? max + 1 : cap;
}

int atp__buf_reserve(atp__buf *b, size_t more)
{
    size_t need, cap;
    char *grown;

    if (more > SIZE_MAX - 1 - b->len)
        return ATP_E_NOMEM; /* no size_t can hold it */
    if (b->len + more > b->max)
        return ATP__BUF_FULL;
    need = b->len + more + 1; /* the terminating NUL */
    if (need <= b->cap)
        return 0;
    if ((cap = atp__buf_next_cap(b->cap, need, b->max)) == 0)
        return ATP_E_NOMEM; /* larger than any object can be */
    if ((grown = realloc(b->p, cap)) == NULL)
        return ATP_E_NOMEM;
    b->p = grown;
    b->cap = cap;
    return 0;
}

int atp__buf_append(atp__buf *b, const void *data, size_t n)
{
    int rc = atp__buf_reserve(b, n);

    if (rc)
        return rc;
    if (n)
        memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

int atp__buf_puts(atp__buf *b, const char *s)
{
    return atp__buf_append(b, s, strlen(s));
}

char *atp__buf_detach(atp__buf *b)
{
    char *p = b->p;

    if (p == NULL && (p = calloc(1, 1)) == NULL)
        return NULL;
    b->p = NULL;
    b->len = b->cap = 0;
    return p;
}

void atp__buf_clear(atp__buf *b)
{
    b->len = 0;
    if (b->p)
        b->p[0] = '\0';
}

void atp__buf_release(atp__buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}
