/*
 * ABI 1.0 compatibility fixture: the local backend as released with plugin
 * ABI 1.0 (commit 29dd2ab), kept as it was and built against the header of that
 * release (tests/abi/v1.0/atp/plugin.h), the way a third party built
 * its plugin then.  Every later core must load it and run commands
 * through it.  Do not update it.
 */
/*
 * plugins/local/local.c - the local backend: commands run as host
 * processes, in the workdir itself.
 *
 * Each command is spawned with posix_spawn in a process group of its own,
 * with stdin from /dev/null (or a pipe when asked), CLOEXEC pipes for
 * stdout and stderr, every other descriptor closed, signal dispositions
 * and mask reset.  One poll loop watches the pipes, a pidfd for the exit,
 * the cancel descriptor and the deadlines.  On timeout or cancel the group
 * gets SIGTERM, then SIGKILL after the grace.  After the command exits,
 * descendants that still hold its output open get drain_ms, then the group
 * is killed - before the leader is reaped, so its id cannot have been
 * reused.  The library installs no signal handler and reaps only its own
 * pid.
 */
#define _GNU_SOURCE
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atp/plugin.h>

extern char **environ;

#define READ_CHUNK 65536

static const atp_host_api *host;

struct local_backend {
    int inherit_env;
};

struct local_session {
    char *workdir;
    char **env;       /* "KEY=VALUE" copies */
    int inherit_env;
    int closed;
};

static const atp_option options[] = {
    {"inherit_env", ATP_OPT_BOOL, "true", NULL,
     "pass atp-run's own environment to commands (under the configured env)"},
    {NULL, 0, NULL, NULL, NULL},
};

static void free_strv(char **v)
{
    size_t i;

    for (i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

static char **dup_strv(const char *const *v)
{
    size_t n = 0, i;
    char **out;

    while (v && v[n])
        n++;
    out = calloc(n + 1, sizeof(*out));
    if (out == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        out[i] = strdup(v[i]);
        if (out[i] == NULL) {
            free_strv(out);
            return NULL;
        }
    }
    return out;
}

static int local_backend_open(atp_call *call, void **out)
{
    struct local_backend *b = calloc(1, sizeof(*b));
    int64_t v = 1;

    if (b == NULL)
        return host->set_error(call, ATP_E_NOMEM, "out of memory");
    host->config_int(call, "inherit_env", &v);
    b->inherit_env = (int)v;
    *out = b;
    return 0;
}

static void local_backend_free(void *backend)
{
    free(backend);
}

static int local_check(atp_call *call, void *backend)
{
    (void)backend;
    if (access("/bin/sh", X_OK) != 0)
        return host->set_error(call, ATP_E_BACKEND, "/bin/sh is not "
                               "executable: %s", strerror(errno));
    return 0;
}

static int local_session_open(atp_call *call, void *backend,
                              const atp_session_spec *spec, void **out)
{
    struct local_backend *b = backend;
    struct local_session *s;
    struct stat st;

    if (spec->n_mounts > 0)
        return host->set_error(call, ATP_E_UNSUPPORTED, "the local backend "
                               "runs in the host filesystem and cannot mount");
    if (stat(spec->workdir, &st) != 0 || !S_ISDIR(st.st_mode))
        return host->set_error(call, ATP_E_PROVISION, "workdir %s is not a "
                               "directory", spec->workdir);
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return host->set_error(call, ATP_E_NOMEM, "out of memory");
    s->workdir = strdup(spec->workdir);
    s->env = dup_strv(spec->env);
    s->inherit_env = b->inherit_env;
    if (s->workdir == NULL || s->env == NULL) {
        free(s->workdir);
        free_strv(s->env);
        free(s);
        return host->set_error(call, ATP_E_NOMEM, "out of memory");
    }
    *out = s;
    return 0;
}

static int local_session_close(atp_call *call, void *session)
{
    struct local_session *s = session;

    (void)call;
    s->closed = 1; /* every command's processes are gone already */
    return 0;
}

static void local_session_free(void *session)
{
    struct local_session *s = session;

    free(s->workdir);
    free_strv(s->env);
    free(s);
}

/* Put "KEY=VALUE" into @envp (n entries), replacing KEY if present. */
static void env_put(const char **envp, size_t *n, const char *kv)
{
    const char *eq = strchr(kv, '=');
    size_t klen = eq ? (size_t)(eq - kv) : strlen(kv), i;

    for (i = 0; i < *n; i++) {
        if (strncmp(envp[i], kv, klen) == 0 && envp[i][klen] == '=') {
            envp[i] = kv;
            return;
        }
    }
    envp[(*n)++] = kv;
}

/* The environment of a command: host (optional) < session < call. */
static const char **build_envp(const struct local_session *s,
                               const char *const *call_env)
{
    size_t cap = 1, n = 0, i;
    const char **envp;

    for (i = 0; s->inherit_env && environ[i]; i++)
        cap++;
    for (i = 0; s->env[i]; i++)
        cap++;
    for (i = 0; call_env && call_env[i]; i++)
        cap++;
    envp = calloc(cap, sizeof(*envp));
    if (envp == NULL)
        return NULL;
    for (i = 0; s->inherit_env && environ[i]; i++)
        envp[n++] = environ[i];
    for (i = 0; s->env[i]; i++)
        env_put(envp, &n, s->env[i]);
    for (i = 0; call_env && call_env[i]; i++)
        env_put(envp, &n, call_env[i]);
    envp[n] = NULL;
    return envp;
}

static int spawn(atp_call *call, const struct local_session *s,
                 const atp_exec_spec *spec, const char **envp, int out_w,
                 int err_w, int in_r, pid_t *pid)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t all, none;
    const char *cwd = spec->cwd ? spec->cwd : s->workdir;
    int rc;

    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    sigfillset(&all);
    sigemptyset(&none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP |
                                        POSIX_SPAWN_SETSIGDEF |
                                        POSIX_SPAWN_SETSIGMASK);
    posix_spawn_file_actions_addchdir_np(&fa, cwd);
    if (in_r >= 0)
        posix_spawn_file_actions_adddup2(&fa, in_r, 0);
    else
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, out_w, 1);
    posix_spawn_file_actions_adddup2(&fa, err_w, 2);
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    rc = posix_spawn(pid, spec->argv[0], &fa, &attr,
                     (char *const *)spec->argv, (char *const *)envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (rc == ENOENT && access(cwd, F_OK) != 0)
        return host->set_error(call, ATP_E_BACKEND, "cannot change into %s: "
                               "%s", cwd, strerror(rc));
    if (rc)
        return host->set_error(call, ATP_E_BACKEND, "cannot run %s in %s: %s",
                               spec->argv[0], cwd, strerror(rc));
    return 0;
}

static int64_t ms_until(int64_t now, int64_t at)
{
    int64_t ms;

    if (at == 0)
        return -1;
    if (at <= now)
        return 0;
    ms = (at - now + 999999) / 1000000;
    return ms;
}

static void take_min(int64_t *cur, int64_t v)
{
    if (v >= 0 && (*cur < 0 || v < *cur))
        *cur = v;
}

/* Write to the command's stdin without dying of SIGPIPE. */
static ssize_t write_nosig(int fd, const void *buf, size_t len)
{
    sigset_t pipe_set, old;
    ssize_t n;
    int saved;

    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    n = write(fd, buf, len);
    saved = errno;
    if (n < 0 && saved == EPIPE) {
        struct timespec zero = {0, 0};

        sigtimedwait(&pipe_set, NULL, &zero); /* consume our SIGPIPE */
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    errno = saved;
    return n;
}

struct run {
    int out_r, err_r, in_w, pidfd, cancel_fd, input_fd;
    pid_t pid;
    int exited, timed_out, cancelled, input_eof;
    int64_t start, term_at, kill_at, drain_at, host_deadline;
    char *buf;
    char in_buf[16384];
    size_t in_len, in_off;
};

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

static void terminate(struct run *r, int64_t now, int64_t grace_ms)
{
    if (r->kill_at)
        return;
    kill(-r->pid, SIGTERM);
    r->kill_at = now + (grace_ms > 0 ? grace_ms : 1) * 1000000;
}

/* Read what a pipe has; returns 0, or ATP_E_CANCELLED from the host. */
static int pump(atp_call *call, struct run *r, int *fd, int stream)
{
    for (;;) {
        ssize_t n = read(*fd, r->buf, READ_CHUNK);

        if (n > 0) {
            if (host->output(call, stream, r->buf, (size_t)n) ==
                ATP_E_CANCELLED)
                return ATP_E_CANCELLED;
            if (n < READ_CHUNK)
                return 0;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return 0;
        close_fd(fd); /* EOF or error */
        return 0;
    }
}

static void feed_stdin(atp_call *call, struct run *r, short in_rev,
                       short input_rev)
{
    if (r->in_len == r->in_off && !r->input_eof &&
        (r->input_fd < 0 || (input_rev & (POLLIN | POLLHUP | POLLERR)))) {
        long n = host->input(call, r->in_buf, sizeof(r->in_buf));

        if (n <= 0) {
            r->input_eof = 1;
        } else {
            r->in_len = (size_t)n;
            r->in_off = 0;
        }
    }
    if (r->in_off < r->in_len && (in_rev & (POLLOUT | POLLERR | POLLHUP))) {
        ssize_t w = write_nosig(r->in_w, r->in_buf + r->in_off,
                                r->in_len - r->in_off);

        if (w > 0) {
            r->in_off += (size_t)w;
        } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
            /* The command closed its stdin: the rest is not wanted. */
            r->input_eof = 1;
            r->in_off = r->in_len = 0;
        }
    }
    if (r->input_eof && r->in_off == r->in_len)
        close_fd(&r->in_w);
}

static int local_exec(atp_call *call, void *session,
                      const atp_exec_spec *spec, atp_exec_outcome *out)
{
    struct local_session *s = session;
    const char **envp = NULL;
    int out_p[2] = {-1, -1}, err_p[2] = {-1, -1}, in_p[2] = {-1, -1};
    int want_stdin = (spec->flags & ATP_EXEC_STDIN) != 0;
    struct run r;
    int status = 0, rc;

    memset(&r, 0, sizeof(r));
    r.out_r = r.err_r = r.in_w = r.pidfd = r.input_fd = -1;
    if (s->closed)
        return host->set_error(call, ATP_E_INVAL, "session is closed");
    if (spec->argv == NULL || spec->argv[0] == NULL)
        return host->set_error(call, ATP_E_INVAL, "empty argv");
    envp = build_envp(s, spec->env);
    r.buf = malloc(READ_CHUNK);
    if (envp == NULL || r.buf == NULL) {
        rc = host->set_error(call, ATP_E_NOMEM, "out of memory");
        goto out;
    }
    if (pipe2(out_p, O_CLOEXEC) || pipe2(err_p, O_CLOEXEC) ||
        (want_stdin && pipe2(in_p, O_CLOEXEC))) {
        rc = host->set_error(call, ATP_E_BACKEND, "pipe: %s",
                             strerror(errno));
        goto out;
    }
    rc = spawn(call, s, spec, envp, out_p[1], err_p[1], in_p[0], &r.pid);
    close_fd(&out_p[1]);
    close_fd(&err_p[1]);
    close_fd(&in_p[0]);
    if (rc)
        goto out;
    r.start = host->now_ns();
    r.out_r = out_p[0];
    r.err_r = err_p[0];
    r.in_w = in_p[1];
    out_p[0] = err_p[0] = in_p[1] = -1;
    fcntl(r.out_r, F_SETFL, O_NONBLOCK);
    fcntl(r.err_r, F_SETFL, O_NONBLOCK);
    if (r.in_w >= 0) {
        fcntl(r.in_w, F_SETFL, O_NONBLOCK);
        r.input_fd = host->input_fd(call);
    }
    r.pidfd = pidfd_open(r.pid, 0);
    r.cancel_fd = host->cancel_fd(call);
    r.host_deadline = host->deadline_ns(call);
    if (spec->timeout_ms > 0)
        r.term_at = r.start + spec->timeout_ms * 1000000;

    while (!(r.exited && r.out_r < 0 && r.err_r < 0)) {
        struct pollfd pfd[6];
        int n = 0, i_out = -1, i_err = -1, i_pid = -1;
        int i_in = -1, i_input = -1;
        int64_t now = host->now_ns(), wait = -1;

        if (!r.cancelled && host->cancelled(call)) {
            r.cancelled = 1;
            terminate(&r, now, spec->grace_ms);
        }
        if (r.term_at && now >= r.term_at && !r.timed_out && !r.exited) {
            r.timed_out = 1;
            terminate(&r, now, spec->grace_ms);
        }
        if (r.kill_at && now >= r.kill_at) {
            kill(-r.pid, SIGKILL);
            r.kill_at = now + 100000000; /* again, should it linger */
        }
        if (r.host_deadline && now >= r.host_deadline) {
            /* Backstop: the command overran budget, grace and drain. */
            kill(-r.pid, SIGKILL);
            r.timed_out = 1;
            if (r.exited)
                break;
            r.host_deadline = now + 100000000;
        }
        if (r.exited && r.drain_at && now >= r.drain_at)
            break; /* descendants hold the pipes: stop waiting */

        if (r.out_r >= 0) {
            i_out = n;
            pfd[n].fd = r.out_r;
            pfd[n++].events = POLLIN;
        }
        if (r.err_r >= 0) {
            i_err = n;
            pfd[n].fd = r.err_r;
            pfd[n++].events = POLLIN;
        }
        if (!r.exited && r.pidfd >= 0) {
            i_pid = n;
            pfd[n].fd = r.pidfd;
            pfd[n++].events = POLLIN;
        }
        if (r.cancel_fd >= 0 && !r.cancelled) {
            /* Only to wake up: the flag is read at the top. */
            pfd[n].fd = r.cancel_fd;
            pfd[n++].events = POLLIN;
        }
        if (r.in_w >= 0 && r.in_off < r.in_len) {
            i_in = n;
            pfd[n].fd = r.in_w;
            pfd[n++].events = POLLOUT;
        } else if (r.in_w >= 0 && !r.input_eof && r.input_fd >= 0) {
            i_input = n;
            pfd[n].fd = r.input_fd;
            pfd[n++].events = POLLIN;
        }
        if (!r.exited) {
            take_min(&wait, ms_until(now, r.timed_out ? 0 : r.term_at));
            take_min(&wait, ms_until(now, r.kill_at));
            if (r.pidfd < 0)
                take_min(&wait, 20); /* no pidfd: poll for the exit */
        } else {
            take_min(&wait, ms_until(now, r.drain_at));
        }
        take_min(&wait, ms_until(now, r.host_deadline));
        if (r.in_w >= 0 && r.input_fd < 0 && !r.input_eof)
            take_min(&wait, 0);

        if (poll(pfd, (nfds_t)n, (int)(wait > 60000 ? 60000 : wait)) < 0) {
            if (errno == EINTR)
                continue;
            rc = host->set_error(call, ATP_E_BACKEND, "poll: %s",
                                 strerror(errno));
            kill(-r.pid, SIGKILL);
            break;
        }
        if (i_out >= 0 && pfd[i_out].revents &&
            pump(call, &r, &r.out_r, ATP_STDOUT) == ATP_E_CANCELLED &&
            !r.cancelled) {
            r.cancelled = 1;
            terminate(&r, host->now_ns(), spec->grace_ms);
        }
        if (i_err >= 0 && pfd[i_err].revents &&
            pump(call, &r, &r.err_r, ATP_STDERR) == ATP_E_CANCELLED &&
            !r.cancelled) {
            r.cancelled = 1;
            terminate(&r, host->now_ns(), spec->grace_ms);
        }
        if (r.in_w >= 0)
            feed_stdin(call, &r, i_in >= 0 ? pfd[i_in].revents : 0,
                       i_input >= 0 ? pfd[i_input].revents : 0);
        if (!r.exited) {
            int done;

            if (r.pidfd >= 0) {
                done = i_pid >= 0 && (pfd[i_pid].revents & POLLIN);
            } else {
                siginfo_t si;

                memset(&si, 0, sizeof(si));
                /* Peek without reaping: the zombie pins the group id. */
                done = waitid(P_PID, (id_t)r.pid, &si,
                              WEXITED | WNOHANG | WNOWAIT) == 0 &&
                       si.si_pid == r.pid;
            }
            if (done) {
                r.exited = 1;
                r.drain_at = host->now_ns() +
                             (spec->drain_ms > 0 ? spec->drain_ms : 0) *
                                 1000000;
                if (spec->drain_ms <= 0)
                    r.drain_at = host->now_ns();
            }
        }
    }

    /* Nothing of the command outlives it; the zombie leader still holds
     * the group id, so this cannot hit a stranger. */
    kill(-r.pid, SIGKILL);
    while (waitpid(r.pid, &status, 0) < 0 && errno == EINTR)
        ;
    r.pid = 0;
    if (rc == 0) {
        out->exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        out->signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
        out->flags = (r.timed_out ? ATP_OUTCOME_TIMED_OUT : 0) |
                     (r.cancelled ? ATP_OUTCOME_CANCELLED : 0);
    }
out:
    close_fd(&r.out_r);
    close_fd(&r.err_r);
    close_fd(&r.in_w);
    close_fd(&r.pidfd);
    close_fd(&out_p[0]);
    close_fd(&out_p[1]);
    close_fd(&err_p[0]);
    close_fd(&err_p[1]);
    close_fd(&in_p[0]);
    close_fd(&in_p[1]);
    free(r.buf);
    free(envp);
    return rc;
}

static const atp_plugin_ops local_ops = {
    sizeof(atp_plugin_ops),
    ATP_PLUGIN_ABI_MAJOR,
    ATP_PLUGIN_ABI_MINOR,
    "local",
    PACKAGE_VERSION,
    "runs commands as host processes in the workdir itself",
    ATP_CAP_SHARED_FS | ATP_CAP_STREAMING | ATP_CAP_STDIN |
        ATP_CAP_SESSIONS | ATP_CAP_KILLS_TREE,
    options,
    local_backend_open,
    local_backend_free,
    local_session_open,
    local_exec,
    local_session_close,
    local_session_free,
    local_check,
    NULL, /* reap: nothing outlives a command */
    NULL, /* fini */
};

ATP_PLUGIN_EXPORT int atp_plugin_entry_v1(const atp_host_api *api,
                                          atp_call *call,
                                          const atp_plugin_ops **ops_out)
{
    if (api == NULL || api->abi_major != ATP_PLUGIN_ABI_MAJOR)
        return ATP_E_ABI;
    host = api;
    (void)call;
    *ops_out = &local_ops;
    return 0;
}
