/*
 * plugins/slurm/util.c - what the other files share: growing strings and
 * sh quoting, the batch script, a job's environment, paths, and the tail
 * of an output file that a job writes on the shared filesystem.
 */
#define _GNU_SOURCE
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sl.h"

extern char **environ;

/* ---- job states --------------------------------------------------------- */

int sl_node_failed(const struct sl_jobinfo *ji)
{
    return strcmp(ji->state, "NODE_FAIL") == 0 ||
           strcmp(ji->state, "BOOT_FAIL") == 0 ||
           (ji->completing && strcmp(ji->reason, "NodeDown") == 0);
}

int sl_job_ended(const struct sl_jobinfo *ji)
{
    return ji->gone || sl_node_failed(ji) ||
           (sl_state_final(ji->state) && !ji->completing);
}

int sl_state_final(const char *state)
{
    static const char *const final[] = {
        "COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL",
        "PREEMPTED", "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY", NULL};
    size_t i;

    for (i = 0; final[i]; i++)
        if (strcmp(state, final[i]) == 0)
            return 1;
    return 0;
}

int sl_state_waiting(const char *state)
{
    return strcmp(state, "PENDING") == 0 || strcmp(state, "REQUEUED") == 0 ||
           strcmp(state, "CONFIGURING") == 0;
}

void sl_decode_status(struct sl_jobinfo *ji, long status)
{
    int st = (int)status;

    ji->has_exit = 1;
    if (WIFEXITED(st)) {
        ji->exit_code = WEXITSTATUS(st);
        ji->signal = 0;
    } else if (WIFSIGNALED(st)) {
        ji->exit_code = -1;
        ji->signal = WTERMSIG(st);
    } else {
        ji->has_exit = 0;
    }
}

/* ---- strings ------------------------------------------------------------ */

int sl_buf_add(struct sl_buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        char *grown;

        while (cap < b->len + n + 1)
            cap *= 2;
        grown = realloc(b->s, cap);
        if (grown == NULL)
            return ATP_E_NOMEM;
        b->s = grown;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
    return 0;
}

int sl_buf_str(struct sl_buf *b, const char *s)
{
    return sl_buf_add(b, s, strlen(s));
}

int sl_buf_fmt(struct sl_buf *b, const char *fmt, ...)
{
    char small[512];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return ATP_E_NOMEM;
    if ((size_t)n < sizeof(small))
        return sl_buf_add(b, small, (size_t)n);
    {
        char *big = malloc((size_t)n + 1);
        int rc;

        if (big == NULL)
            return ATP_E_NOMEM;
        va_start(ap, fmt);
        vsnprintf(big, (size_t)n + 1, fmt, ap);
        va_end(ap);
        rc = sl_buf_add(b, big, (size_t)n);
        free(big);
        return rc;
    }
}

int sl_buf_quote(struct sl_buf *b, const char *s)
{
    const char *p;

    if (sl_buf_add(b, "'", 1))
        return ATP_E_NOMEM;
    for (p = s; *p; p++) {
        if (*p == '\'' ? sl_buf_add(b, "'\\''", 4) : sl_buf_add(b, p, 1))
            return ATP_E_NOMEM;
    }
    return sl_buf_add(b, "'", 1);
}

void sl_buf_free(struct sl_buf *b)
{
    free(b->s);
    memset(b, 0, sizeof(*b));
}

/* ---- the batch script --------------------------------------------------- */

/* `WORD WORD ...` of @argv, each quoted. */
static int add_words(struct sl_buf *b, const char *const *argv)
{
    size_t i;

    for (i = 0; argv[i]; i++)
        if ((i && sl_buf_add(b, " ", 1)) || sl_buf_quote(b, argv[i]))
            return ATP_E_NOMEM;
    return 0;
}

char *sl_script(const char *dir, const char *const *argv, int line_buffered)
{
    struct sl_buf b = {0};
    int rc;

    /* The command goes in the script, never in an "argv" of the request;
     * the environment (the secrets) goes in the request, never here: a
     * job's script can be read back with `scontrol write batch_script`. */
    rc = sl_buf_str(&b, "#!/bin/sh\ncd -- ") || sl_buf_quote(&b, dir) ||
         sl_buf_str(&b, " || { echo \"atp: job $SLURM_JOB_ID cannot enter "
                        "its directory on $(hostname)\" >&2; exit 125; }\n");
    if (rc == 0 && line_buffered)
        rc = sl_buf_str(&b, "command -v stdbuf >/dev/null 2>&1 && "
                            "exec stdbuf -oL -eL ") ||
             add_words(&b, argv) || sl_buf_str(&b, "\n");
    if (rc == 0)
        rc = sl_buf_str(&b, "exec ") || add_words(&b, argv) ||
             sl_buf_str(&b, "\n");
    if (rc) {
        sl_buf_free(&b);
        return NULL;
    }
    return b.s;
}

/* ---- environments -------------------------------------------------------- */

/* Does "KEY=VALUE" @kv name key @key (of @klen bytes)? */
static int same_key(const char *kv, const char *key, size_t klen)
{
    return strncmp(kv, key, klen) == 0 && kv[klen] == '=';
}

/* Put @kv into @v (@n entries), replacing its key if present. */
static void env_put(const char **v, size_t *n, const char *kv)
{
    const char *eq = strchr(kv, '=');
    size_t klen = eq ? (size_t)(eq - kv) : strlen(kv), i;

    if (eq == NULL)
        return;
    for (i = 0; i < *n; i++) {
        if (same_key(v[i], kv, klen)) {
            v[i] = kv;
            return;
        }
    }
    v[(*n)++] = kv;
}

/* Variables of the host that must not reach a job: they steer the
 * Slurm tools, or describe another job (when atp runs inside one). */
static int steers_slurm(const char *kv)
{
    return strncmp(kv, "SLURM_", 6) == 0 || strncmp(kv, "SBATCH_", 7) == 0 ||
           strncmp(kv, "SRUN_", 5) == 0 || strncmp(kv, "SALLOC_", 7) == 0;
}

const char **sl_job_env(int inherit, const char *const *envp,
                        const char *const *extra)
{
    static const char default_path[] = "PATH=/usr/local/bin:/usr/bin:/bin";
    size_t cap = 2, n = 0, i;
    const char **v;
    int has_path = 0;

    for (i = 0; inherit && environ[i]; i++)
        cap++;
    for (i = 0; envp && envp[i]; i++)
        cap++;
    for (i = 0; extra && extra[i]; i++)
        cap++;
    v = calloc(cap, sizeof(*v));
    if (v == NULL)
        return NULL;
    for (i = 0; inherit && environ[i]; i++)
        if (!steers_slurm(environ[i]))
            env_put(v, &n, environ[i]);
    for (i = 0; envp && envp[i]; i++)
        env_put(v, &n, envp[i]);
    for (i = 0; i < n; i++)
        has_path |= same_key(v[i], "PATH", 4);
    if (!has_path)
        v[n++] = default_path;
    for (i = 0; extra && extra[i]; i++)
        env_put(v, &n, extra[i]);
    v[n] = NULL;
    return v;
}

/* ---- paths --------------------------------------------------------------- */

int sl_path_under(const char *path, const char *dir)
{
    size_t n = strlen(dir);

    while (n > 1 && dir[n - 1] == '/')
        n--;
    if (n == 1 && dir[0] == '/')
        return path[0] == '/';
    return strncmp(path, dir, n) == 0 && (path[n] == '/' || path[n] == '\0');
}

int sl_mkdirs(const char *path, mode_t mode)
{
    char buf[4096];
    size_t len = strlen(path), i;

    if (len == 0 || len >= sizeof(buf)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(buf, path, len + 1);
    for (i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        buf[i] = '\0';
        if (mkdir(buf, mode) != 0 && errno != EEXIST)
            return -1;
        buf[i] = path[i];
    }
    return 0;
}

static int rm_entry(const char *path, const struct stat *sb, int flag,
                    struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    if (flag == FTW_DP)
        return rmdir(path);
    if (flag == FTW_DNR) {
        /* A directory we may not read (a command's chmod 000): open it. */
        if (chmod(path, 0700) == 0)
            return 1; /* walk again */
        return rmdir(path);
    }
    return unlink(path);
}

int sl_remove_tree(const char *path)
{
    int rc, round;
    struct stat st;

    for (round = 0; round < 8; round++) {
        if (lstat(path, &st) != 0)
            return errno == ENOENT ? 0 : -1;
        rc = nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        if (rc == 0)
            return 0;
        if (rc != 1)
            return -1;
    }
    return -1;
}

char *sl_which(const char *name)
{
    const char *path = getenv("PATH");
    char file[4096];

    if (strchr(name, '/'))
        return access(name, X_OK) == 0 ? strdup(name) : NULL;
    if (path == NULL || *path == '\0')
        path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        size_t n = strcspn(path, ":");

        if (n > 0 && n + strlen(name) + 2 <= sizeof(file)) {
            memcpy(file, path, n);
            file[n] = '/';
            memcpy(file + n + 1, name, strlen(name) + 1);
            if (access(file, X_OK) == 0)
                return strdup(file);
        }
        path += n;
        if (*path == ':')
            path++;
    }
    return NULL;
}

int sl_have_command(const char *name)
{
    char *path = sl_which(name);

    free(path);
    return path != NULL;
}

/* ---- output files -------------------------------------------------------- */

void sl_tail_init(struct sl_tail *t, const char *path, int stream)
{
    t->path = path;
    t->stream = stream;
    t->fd = -1;
    t->off = 0;
}

size_t sl_tail_pump(struct sl_tail *t, atp_call *call, int final)
{
    char buf[65536];
    size_t total = 0;

    if (final && t->fd >= 0) {
        close(t->fd);
        t->fd = -1;
    }
    if (t->fd < 0) {
        /* The file appears when the job starts. */
        t->fd = open(t->path, O_RDONLY | O_CLOEXEC);
        if (t->fd < 0)
            return 0;
    }
    for (;;) {
        ssize_t n = pread(t->fd, buf, sizeof(buf), t->off);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        t->off += n;
        total += (size_t)n;
        /* A consumer that wants no more is a cancel: exec_due() says so. */
        sl_host->output(call, t->stream, buf, (size_t)n);
        if (!final && total >= 4 * sizeof(buf))
            break; /* back to the schedule; the rest comes next turn */
    }
    return total;
}

void sl_tail_close(struct sl_tail *t)
{
    if (t->fd >= 0)
        close(t->fd);
    t->fd = -1;
}

/* ---- time ----------------------------------------------------------------- */

int64_t sl_ms_left(int64_t deadline_ns)
{
    int64_t now;

    if (deadline_ns == 0)
        return -1;
    now = sl_host->now_ns();
    return deadline_ns <= now ? 0 : (deadline_ns - now + 999999) / 1000000;
}

void sl_wait(int fd, int64_t ms)
{
    struct pollfd p = {fd, POLLIN, 0};

    if (ms <= 0)
        return;
    if (ms > 60000)
        ms = 60000;
    poll(&p, fd >= 0 ? 1 : 0, (int)ms);
}
