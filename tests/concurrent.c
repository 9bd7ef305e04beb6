/*
 * concurrent - many sessions of one backend at once, from threads of one
 * process, through the public libatp API.
 *
 *   concurrent [-n THREADS] [-r ROUNDS] DIR
 *
 * The configuration is the one atp_config_load(NULL) finds ($ATP_CONFIG
 * in the tests); one configuration and one backend are shared by every
 * thread, as atp.h allows.  In each round every thread, over a workdir of
 * its own under DIR:
 *
 *   - creates and starts a session (env ATP_T_ID=<thread>), then waits
 *     until every thread has started one: all the sandboxes exist at once;
 *   - runs a command that reads a file of the workdir, writes one, and
 *     prints 200 lines of its own on stdout and one on stderr, and checks
 *     each line, in order, and the exit status;
 *   - runs a second command in the same sandbox that reads the file the
 *     first wrote and exits 3;
 *   - pulls the workdir back and finds that file on the host;
 *   - waits for the others again, then closes the session.
 *
 * Meanwhile it reads what the header says is shareable (the backend's
 * name and caps, the configuration's values) and its own last error.
 *
 * It prints one line per round, the most sessions that were started at
 * once, the lines of the first commands that never reached their
 * session, and the process's descriptors and threads after the first and
 * the last round; every failure goes to stderr naming the thread, the
 * round and the step.  Exit status: 0 when every session of every round
 * did what it should and the last round ended with no more descriptors
 * and threads than the first; 1 otherwise; 2 on a usage error.
 */
#define _GNU_SOURCE
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <atp/atp.h>

#define LINES 200
#define BLOB 16384

struct worker {
    int id;
    int round;
    const char *root;
    atp_backend *be;
    atp_config *cfg;
    pthread_barrier_t *bar;
    char *out;       /* stdout lines, each followed by '\n' */
    size_t len, cap;
    int err_lines;   /* stderr lines */
    int bad_err;     /* a stderr line that was not ours */
    char why[8400];  /* the first failure, or "" */
};

static atomic_int started_now;
static atomic_int started_max;
static atomic_int lines_lost; /* of the first commands, all rounds */

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Entries of a /proc/self directory, or -1. */
static int count_entries(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *e;
    int n = 0;

    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - (strcmp(path, "/proc/self/fd") == 0); /* opendir's own */
}

static void on_line(int stream, const char *line, size_t len,
                    unsigned flags, void *payload)
{
    struct worker *w = payload;
    char want[32];

    (void)flags;
    if (stream == ATP_STDERR) {
        snprintf(want, sizeof(want), "err%d", w->id);
        if (len == strlen(want) && memcmp(line, want, len) == 0)
            w->err_lines++;
        else
            w->bad_err = 1;
        return;
    }
    if (w->len + len + 1 >= w->cap) {
        size_t cap = (w->cap + len + 1) * 2;
        char *p = realloc(w->out, cap);

        if (p == NULL) {
            w->bad_err = 1;
            return;
        }
        w->out = p;
        w->cap = cap;
    }
    memcpy(w->out + w->len, line, len);
    w->len += len;
    w->out[w->len++] = '\n';
    w->out[w->len] = '\0';
}

static void failf(struct worker *w, const char *step, const atp_result *res,
                  int rc)
{
    if (w->why[0])
        return;
    snprintf(w->why, sizeof(w->why), "%s: rc %d (%s), status %s, exit %d: "
             "%s", step, rc, atp_err_name(rc),
             res ? atp_status_name(res->status) : "-",
             res ? res->exit_code : -1,
             res && res->message[0] ? res->message : atp_last_error());
}

static int write_file(const char *path, const char *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int rc = 0;

    if (fd < 0)
        return -1;
    if (write(fd, data, len) != (ssize_t)len)
        rc = -1;
    if (close(fd) != 0)
        rc = -1;
    return rc;
}

/* The lines the first command prints, as on_line keeps them. */
static char *expected_out(int id, int round)
{
    size_t cap = 64 + LINES * 24, n;
    char *s = malloc(cap);
    int i;

    if (s == NULL)
        return NULL;
    n = (size_t)snprintf(s, cap, "payload %d %d\n%d\n", id, round, BLOB);
    for (i = 0; i < LINES; i++)
        n += (size_t)snprintf(s + n, cap - n, "%d.%d\n", id, i);
    return s;
}

static void exec_checked(struct worker *w, atp_session *s)
{
    atp_exec_opts eo = ATP_EXEC_OPTS_INIT;
    atp_result res = ATP_RESULT_INIT;
    char path[4096], buf[64];
    char *want;
    int rc, fd;
    ssize_t n;

    eo.on_line = on_line;
    eo.line_payload = w;
    rc = atp_session_exec(s, "cat in; echo \"id=$ATP_T_ID\" >out; "
                          "wc -c <blob | tr -d ' '; i=0; "
                          "while [ $i -lt 200 ]; do echo \"$ATP_T_ID.$i\"; "
                          "i=$((i+1)); done; echo \"err$ATP_T_ID\" >&2",
                          &eo, &res);
    {
        /* Its lines that never came: the payload, the size, LINES, and
         * one on stderr. */
        int got = w->err_lines, want_n = LINES + 3;
        size_t k;

        for (k = 0; k < w->len; k++)
            got += w->out[k] == '\n';
        if (got < want_n)
            atomic_fetch_add(&lines_lost, want_n - got);
    }
    if (rc != 0 || res.status != ATP_STATUS_OK || res.exit_code != 0) {
        failf(w, "first command", &res, rc);
        return;
    }
    want = expected_out(w->id, w->round);
    if (want == NULL || w->out == NULL || strcmp(want, w->out) != 0) {
        snprintf(w->why, sizeof(w->why), "first command: stdout is not "
                 "its own (%zu bytes, want %zu)", w->len,
                 want ? strlen(want) : 0);
        free(want);
        return;
    }
    free(want);
    if (w->err_lines != 1 || w->bad_err) {
        snprintf(w->why, sizeof(w->why), "first command: %d stderr lines "
                 "of its own%s", w->err_lines,
                 w->bad_err ? ", and one of another" : "");
        return;
    }

    w->len = 0;
    rc = atp_session_exec(s, "cat out; exit 3", &eo, &res);
    snprintf(buf, sizeof(buf), "id=%d\n", w->id);
    if (rc != 0 || res.status != ATP_STATUS_EXIT || res.exit_code != 3) {
        failf(w, "second command", &res, rc);
        return;
    }
    if (w->out == NULL || strcmp(w->out, buf) != 0) {
        snprintf(w->why, sizeof(w->why), "second command: saw \"%.40s\", "
                 "not the file the first one wrote", w->out ? w->out : "");
        return;
    }

    rc = atp_session_sync_out(s, &res);
    if (rc != 0) {
        failf(w, "pull", &res, rc);
        return;
    }
    snprintf(path, sizeof(path), "%s/r%d-t%d/out", w->root, w->round, w->id);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    n = fd >= 0 ? read(fd, path, sizeof(path) - 1) : -1;
    if (fd >= 0)
        close(fd);
    if (n < 0 || (size_t)n != strlen(buf) || memcmp(path, buf, (size_t)n))
        snprintf(w->why, sizeof(w->why), "after the pull the host has no "
                 "out file with \"%.*s\"", (int)strlen(buf) - 1, buf);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    atp_session_opts so = ATP_SESSION_OPTS_INIT;
    atp_result res = ATP_RESULT_INIT;
    atp_session *s = NULL;
    char dir[4096], path[4200], env[32], *blob;
    const char *envv[2] = {env, NULL};
    int rc, started = 0, cur, max;

    snprintf(dir, sizeof(dir), "%s/r%d-t%d", w->root, w->round, w->id);
    snprintf(env, sizeof(env), "ATP_T_ID=%d", w->id);
    snprintf(path, sizeof(path), "payload %d %d\n", w->id, w->round);
    blob = malloc(BLOB);
    if (mkdir(dir, 0755) != 0 || blob == NULL) {
        snprintf(w->why, sizeof(w->why), "mkdir %s: %s", dir,
                 strerror(errno));
    } else {
        char file[4200];

        memset(blob, 'a' + w->id % 26, BLOB);
        snprintf(file, sizeof(file), "%s/in", dir);
        if (write_file(file, path, strlen(path)) != 0)
            snprintf(w->why, sizeof(w->why), "cannot write %s", file);
        snprintf(file, sizeof(file), "%s/blob", dir);
        if (!w->why[0] && write_file(file, blob, BLOB) != 0)
            snprintf(w->why, sizeof(w->why), "cannot write %s", file);
    }
    free(blob);

    so.workdir = dir;
    so.env = envv;
    so.timeout_s = 300;
    if (!w->why[0]) {
        rc = atp_session_create(&s, w->be, &so);
        if (rc != 0)
            failf(w, "create", NULL, rc);
    }
    if (s != NULL) {
        rc = atp_session_start(s, &res);
        if (rc != 0) {
            failf(w, "start", &res, rc);
        } else {
            started = 1;
            cur = atomic_fetch_add(&started_now, 1) + 1;
            max = atomic_load(&started_max);
            while (cur > max &&
                   !atomic_compare_exchange_weak(&started_max, &max, cur))
                ;
        }
    }
    /* Every sandbox of the round exists now (or failed to). */
    pthread_barrier_wait(w->bar);

    /* What the header says is shareable, read from every thread. */
    if (atp_backend_name(w->be) == NULL || atp_backend_caps(w->be) == 0 ||
        atp_config_backend(w->cfg) == NULL)
        snprintf(w->why, sizeof(w->why), "the shared backend lost its "
                 "name or caps");
    if (started && !w->why[0])
        exec_checked(w, s);

    pthread_barrier_wait(w->bar);
    if (started)
        atomic_fetch_sub(&started_now, 1);
    if (s != NULL) {
        rc = atp_session_close(s, &res);
        if (rc != 0)
            failf(w, "close", &res, rc);
        atp_session_free(s);
    }
    free(w->out);
    w->out = NULL;
    w->len = w->cap = 0;
    return NULL;
}

static void usage(FILE *f)
{
    fputs("usage: concurrent [-n THREADS] [-r ROUNDS] DIR\n", f);
}

int main(int argc, char **argv)
{
    int n = 64, rounds = 2, opt, r, i, failed = 0, rc;
    int fds1 = -1, fds = -1, thr1 = -1, thr = -1;
    atp_config *cfg = NULL;
    atp_backend *be = NULL;
    struct worker *w;
    pthread_t *th;
    pthread_barrier_t bar;
    double t0;

    while ((opt = getopt(argc, argv, "n:r:h")) != -1) {
        switch (opt) {
        case 'n': n = (int)strtol(optarg, NULL, 10); break;
        case 'r': rounds = (int)strtol(optarg, NULL, 10); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc - 1 || n < 1 || n > 1024 || rounds < 1) {
        usage(stderr);
        return 2;
    }
    if ((rc = atp_config_load(&cfg, NULL)) != 0 ||
        (rc = atp_backend_open(&be, cfg, NULL)) != 0) {
        fprintf(stderr, "concurrent: %s\n", atp_last_error());
        atp_config_free(cfg);
        return 1;
    }
    w = calloc((size_t)n, sizeof(*w));
    th = calloc((size_t)n, sizeof(*th));
    if (w == NULL || th == NULL) {
        fprintf(stderr, "concurrent: out of memory\n");
        return 1;
    }
    printf("backend %s, %d threads, %d rounds\n", atp_backend_name(be), n,
           rounds);
    for (r = 1; r <= rounds; r++) {
        int bad = 0;

        atomic_store(&started_max, 0);
        pthread_barrier_init(&bar, NULL, (unsigned)n);
        t0 = now_s();
        for (i = 0; i < n; i++) {
            memset(&w[i], 0, sizeof(w[i]));
            w[i].id = i;
            w[i].round = r;
            w[i].root = argv[optind];
            w[i].be = be;
            w[i].cfg = cfg;
            w[i].bar = &bar;
            if (pthread_create(&th[i], NULL, worker_main, &w[i]) != 0) {
                fprintf(stderr, "concurrent: cannot start thread %d\n", i);
                return 1; /* the barrier would never open */
            }
        }
        for (i = 0; i < n; i++)
            pthread_join(th[i], NULL);
        pthread_barrier_destroy(&bar);
        for (i = 0; i < n; i++) {
            if (w[i].why[0]) {
                fprintf(stderr, "thread %d round %d: %s\n", i, r, w[i].why);
                bad++;
            }
        }
        failed += bad;
        fds = count_entries("/proc/self/fd");
        thr = count_entries("/proc/self/task");
        if (r == 1) {
            fds1 = fds;
            thr1 = thr;
        }
        printf("round %d: %d sessions, %d failed, %d at once, %.1f s, "
               "%d fds, %d threads\n", r, n, bad,
               atomic_load(&started_max), now_s() - t0, fds, thr);
        fflush(stdout);
    }
    printf("failed %d\n", failed);
    printf("lines lost %d\n", atomic_load(&lines_lost));
    printf("fd growth %d\n", fds - fds1);
    printf("thread growth %d\n", thr - thr1);
    atp_backend_free(be);
    atp_config_free(cfg);
    free(w);
    free(th);
    return failed == 0 && fds <= fds1 && thr <= thr1 ? 0 : 1;
}
