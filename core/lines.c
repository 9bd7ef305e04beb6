/*
 * core/lines.c - line framing of command output.
 *
 * Bytes arrive in chunks cut anywhere; lines leave newline-stripped, as
 * soon as they are complete.  Memory is bounded by max_line per stream: a
 * longer line leaves in pieces flagged ATP_LINE_PARTIAL, so nothing is
 * dropped.  NUL bytes are data like any other.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "internal.h"

void atp__framer_init(atp__framer *f, int stream, size_t max_line,
                      atp__line_cb cb, void *payload)
{
    memset(f, 0, sizeof(*f));
    f->stream = stream;
    f->max = max_line;
    atp__buf_init(&f->buf, max_line);
    f->cb = cb;
    f->payload = payload;
}

/* Keep @len bytes of a line that is not complete yet (never past max:
 * the callers deliver a full piece first). */
static int keep(atp__framer *f, const char *data, size_t len)
{
    return atp__buf_append(&f->buf, data, len) ? ATP_E_NOMEM : 0;
}

int atp__framer_feed(atp__framer *f, const char *data, size_t len)
{
    while (len > 0) {
        const char *nl = memchr(data, '\n', len);
        size_t take = nl ? (size_t)(nl - data) : len;

        if (f->buf.len + take > f->max) {
            /* The line outgrows the bound: deliver a full piece. */
            size_t fill = f->max - f->buf.len;

            if (f->buf.len == 0) {
                f->cb(f->stream, data, fill, ATP_LINE_PARTIAL, f->payload);
            } else {
                if (keep(f, data, fill))
                    return ATP_E_NOMEM;
                f->cb(f->stream, f->buf.p, f->buf.len, ATP_LINE_PARTIAL,
                      f->payload);
                atp__buf_clear(&f->buf);
            }
            data += fill;
            len -= fill;
            continue;
        }
        if (nl == NULL)
            return keep(f, data, len);
        if (f->buf.len == 0) {
            /* The common case: a whole line inside the chunk. */
            f->cb(f->stream, data, take, 0, f->payload);
        } else {
            if (keep(f, data, take))
                return ATP_E_NOMEM;
            f->cb(f->stream, f->buf.p, f->buf.len, 0, f->payload);
            atp__buf_clear(&f->buf);
        }
        data += take + 1;
        len -= take + 1;
    }
    return 0;
}

void atp__framer_finish(atp__framer *f)
{
    if (f->buf.len > 0) {
        f->cb(f->stream, f->buf.p, f->buf.len, ATP_LINE_NO_EOL, f->payload);
        atp__buf_clear(&f->buf);
    }
}

void atp__framer_release(atp__framer *f)
{
    atp__buf_release(&f->buf);
}
