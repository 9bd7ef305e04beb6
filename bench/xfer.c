/*
 * bench/xfer.c - atp-xfer, the transfer engine end to end without a
 * sandbox, for bench/transfer.sh: scan SRC, write its tar stream into a
 * pipe from one thread and extract it into DST from another, as a push or
 * a pull does (core/sync_stream.c), with both ends ours.
 *
 *   atp-xfer [-z | -Z] [-x EXCLUDE]... SRC DST
 *
 *   -z, -Z      gzip or zstd the stream (default: none, as configured)
 *   -x EXCLUDE  transfer_exclude pattern (default: .lake); -x '' for none
 *
 * DST must exist.  The transfer module comes from $ATP_TRANSFER_MODULE
 * (BUILDDIR/core/.libs/atp-transfer.so for a build tree).  On success it
 * prints one line on stdout:
 *
 *   files N entries N bytes N stream_bytes N scan_s S transfer_s S
 *
 * and exits 0; on failure a message on stderr and exit 1 (2 for usage).
 * Built on demand only: make bench/atp-xfer.
 */
#define _GNU_SOURCE
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/internal.h"
#include "../core/transfer.h"

#define MAX_EXCLUDES 64

/* The sending side: the producer thread of core/sync_stream.c. */
struct sender {
    pthread_t thread;
    int fd;
    const char *root;
    struct atp__manifest *list;
    int compression;
    struct atp__tar_stats st;
    int rc;
    char err[1024];
    unsigned warnings;
};

static int write_all(void *ctx, const void *buf, size_t len)
{
    int fd = *(int *)ctx;
    const char *p = buf;

    while (len > 0) {
        ssize_t n = write(fd, p, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return ATP_E_CANCELLED; /* the reader is gone */
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static long read_fd(void *ctx, void *buf, size_t len)
{
    ssize_t n;

    do
        n = read(*(int *)ctx, buf, len);
    while (n < 0 && errno == EINTR);
    return n < 0 ? ATP_E_IO : (long)n;
}

static void warn_entry(void *ctx, const char *path, const char *what)
{
    struct sender *s = ctx;

    if (++s->warnings <= 20)
        fprintf(stderr, "atp-xfer: warning: %s: %s\n", path, what);
}

static void *send_main(void *arg)
{
    struct sender *s = arg;
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    s->rc = atp__tar_create(s->root, s->list, s->compression, write_all,
                            &s->fd, warn_entry, s, &s->st);
    if (s->rc)
        snprintf(s->err, sizeof(s->err), "%s", atp_last_error());
    close(s->fd);
    s->fd = -1;
    return NULL;
}

static void usage(void)
{
    fprintf(stderr, "usage: atp-xfer [-z | -Z] [-x EXCLUDE]... SRC DST\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *excludes[MAX_EXCLUDES + 1] = {NULL};
    const struct atp__tar_limits lim = {500000, INT64_C(64) << 30};
    struct atp__manifest list = {0}, got = {0};
    struct atp__tar_stats rst;
    struct sender s;
    int n_ex = 0, user_ex = 0, compression = ATP__COMPRESS_NONE, opt, rc,
        p[2];
    int64_t t0, t1, t2;
    char sink[4096];

    while ((opt = getopt(argc, argv, "zZx:")) != -1) {
        switch (opt) {
        case 'z':
            compression = ATP__COMPRESS_GZIP;
            break;
        case 'Z':
            compression = ATP__COMPRESS_ZSTD;
            break;
        case 'x':
            user_ex = 1;
            if (*optarg == '\0')
                break;
            if (n_ex == MAX_EXCLUDES)
                usage();
            excludes[n_ex++] = optarg;
            break;
        default:
            usage();
        }
    }
    if (argc - optind != 2)
        usage();
    if (!user_ex)
        excludes[n_ex++] = ".lake"; /* transfer_exclude's default */
    excludes[n_ex] = NULL;

    t0 = atp__now_ns();
    if (atp__manifest_scan(&list, argv[optind], excludes) != 0) {
        fprintf(stderr, "atp-xfer: %s\n", atp_last_error());
        return 1;
    }
    t1 = atp__now_ns();
    if (pipe2(p, O_CLOEXEC) != 0) {
        perror("atp-xfer: pipe");
        return 1;
    }
    memset(&s, 0, sizeof(s));
    s.fd = p[1];
    s.root = argv[optind];
    s.list = &list;
    s.compression = compression;
    if ((errno = pthread_create(&s.thread, NULL, send_main, &s)) != 0) {
        perror("atp-xfer: pthread_create");
        return 1;
    }
    /* The receiving side: the consumer thread of core/sync_stream.c. */
    rc = atp__tar_extract(argv[optind + 1], excludes, &lim, read_fd, &p[0],
                          &got, &rst);
    if (rc)
        fprintf(stderr, "atp-xfer: extracting: %s\n", atp_last_error());
    while (read(p[0], sink, sizeof(sink)) > 0)
        ;
    close(p[0]);
    pthread_join(s.thread, NULL);
    t2 = atp__now_ns();
    if (s.rc) {
        fprintf(stderr, "atp-xfer: sending: %s\n", s.err);
        rc = 1;
    }
    if (rc == 0 && (rst.files != s.st.files || rst.bytes != s.st.bytes)) {
        fprintf(stderr, "atp-xfer: sent %llu files (%llu bytes), received "
                "%llu (%llu bytes)\n", (unsigned long long)s.st.files,
                (unsigned long long)s.st.bytes,
                (unsigned long long)rst.files,
                (unsigned long long)rst.bytes);
        rc = 1;
    }
    if (rc == 0)
        printf("files %llu entries %llu bytes %llu stream_bytes %llu "
               "scan_s %.3f transfer_s %.3f\n",
               (unsigned long long)rst.files,
               (unsigned long long)rst.entries,
               (unsigned long long)rst.bytes,
               (unsigned long long)s.st.stream_bytes, (double)(t1 - t0) / 1e9,
               (double)(t2 - t1) / 1e9);
    atp__manifest_free(&list);
    atp__manifest_free(&got);
    return rc ? 1 : 0;
}
