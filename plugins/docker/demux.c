/*
 * plugins/docker/demux.c - the multiplexed stream of a non-TTY exec or
 * attach, taken apart byte by byte.
 *
 * Each frame is an 8-byte header {type, 0, 0, 0, size (big endian)} and
 * then size payload bytes.  Frames follow the daemon's reads of the
 * command's pipes, not lines, and the transport splits them anywhere, so
 * the parser keeps its place across calls: header bytes collected so far,
 * payload bytes left.  Payload is handed on as it comes, never copied;
 * lines are the core's business.
 */
#include "config.h"

#include <string.h>

#include "dk.h"

void dk_demux_init(struct dk_demux *d)
{
    memset(d, 0, sizeof(*d));
}

static int stream_of(unsigned char type)
{
    switch (type) {
    case 0: /* stdin echoed back: shown as stdout, like the docker CLI */
    case 1:
        return ATP_STDOUT;
    case 2:
    case 3: /* the daemon's own error text */
        return ATP_STDERR;
    default:
        return 0;
    }
}

int dk_demux_feed(struct dk_demux *d, const void *buf, size_t len,
                  dk_emit_fn emit, void *ctx)
{
    const unsigned char *p = buf;

    while (len > 0) {
        if (d->left == 0) {
            size_t take = 8 - d->hlen;

            if (take > len)
                take = len;
            memcpy(d->hdr + d->hlen, p, take);
            d->hlen += (unsigned)take;
            p += take;
            len -= take;
            if (d->hlen < 8)
                break;
            d->hlen = 0;
            d->stream = stream_of(d->hdr[0]);
            if (d->stream == 0) {
                d->bad_type = d->hdr[0];
                return DK_DEMUX_EBADTYPE;
            }
            d->left = (uint32_t)d->hdr[4] << 24 | (uint32_t)d->hdr[5] << 16 |
                      (uint32_t)d->hdr[6] << 8 | (uint32_t)d->hdr[7];
            continue; /* an empty frame is legal: next header */
        }
        {
            size_t take = d->left < len ? d->left : len;
            int rc;

            if (d->hdr[0] == 3)
                d->sys_bytes += take;
            d->left -= (uint32_t)take;
            rc = emit(ctx, d->stream, p, take);
            p += take;
            len -= take;
            if (rc)
                return rc;
        }
    }
    return 0;
}

int dk_demux_end(const struct dk_demux *d)
{
    return d->hlen == 0 && d->left == 0 ? 0 : DK_DEMUX_ETRUNC;
}
