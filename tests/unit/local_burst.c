/*
 * tests/unit/local_burst.c - write BYTES (default 1 MiB) of 64-byte lines
 * to stdout in one go and exit at once.
 *
 * stdout, a pipe, is first enlarged to hold it all, so that the whole
 * burst is still unread when the process is gone: test_local checks that
 * a command's last output is not lost when it exits.  Exits 3 when the
 * pipe cannot be enlarged.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    long bytes = argc > 1 ? strtol(argv[1], NULL, 10) : 1L << 20;
    char *buf;
    long i, off = 0;

    if (bytes <= 0 || bytes % 64 != 0)
        return 2;
    if (fcntl(1, F_SETPIPE_SZ, (int)bytes) < bytes) {
        perror("local_burst: F_SETPIPE_SZ");
        return 3;
    }
    buf = malloc((size_t)bytes);
    if (buf == NULL)
        return 2;
    for (i = 0; i < bytes; i += 64) {
        memset(buf + i, 'a' + (int)(i / 64 % 26), 63);
        buf[i + 63] = '\n';
    }
    while (off < bytes) {
        ssize_t w = write(1, buf + off, (size_t)(bytes - off));

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return 4;
        off += w;
    }
    free(buf);
    return 0;
}
