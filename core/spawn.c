/*
 * core/spawn.c - the host process runner (host->spawn()).
 *
 * A process is started with posix_spawn in a process group of its own,
 * stdin from /dev/null or a pipe fed from the exec's input, CLOEXEC pipes
 * for stdout and stderr, every other descriptor closed, signal
 * dispositions and mask reset.  One poll loop moves output to the core's
 * framing, feeds stdin, watches a pidfd for the exit and the cancel
 * descriptor, and does what the kill schedule (exec.c) says, to the whole
 * group.  Output still buffered when it ends is delivered.  The group is
 * killed before its leader is reaped, so its id cannot have been reused;
 * descendants that left the group (setsid, double forks) were reparented
 * to this process, a child subreaper, and are found by the exec's marker
 * in their environment and killed.  No signal handler is installed and
 * only processes this file started or killed are reaped.
 */
#define _GNU_SOURCE
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

extern char **environ;

/* One read per wake-up: small enough that a slow consumer does not keep
 * the loop from the schedule for long, big enough for throughput. */
#define READ_CHUNK (64 * 1024)
#define PIPE_SIZE (256 * 1024) /* fewer wakeups when output floods */
#define SWEEP_CHUNKS 64        /* 4 MiB: more than a pipe holds */

static pthread_once_t subreaper_once = PTHREAD_ONCE_INIT;

static void become_subreaper(void)
{
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
}

static int pidfd_of(pid_t pid)
{
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    (void)pid;
    errno = ENOSYS;
    return -1;
#endif
}

/*
 * The environment: the host's own (optional) < @over < the marker, into
 * @e (keys hashed: a hundred thousand variables merge in linear time).
 */
static int build_envp(atp__env *e, int host_env, const char *const *over,
                      const char *marker)
{
    const char *const one[] = {marker, NULL};
    size_t i;

    for (i = 0; host_env && environ[i]; i++) {
        const char *eq = strchr(environ[i], '=');

        if (eq && eq > environ[i] &&
            atp__env_set(e, environ[i], (size_t)(eq - environ[i]),
                         eq + 1) != 0)
            return ATP_E_NOMEM;
    }
    if (atp__env_merge(e, over) != 0 || atp__env_merge(e, one) != 0)
        return ATP_E_NOMEM;
    return 0;
}

/* Does process @pid carry the environment entry @marker?  The whole
 * environment is read, however large.  -1: nothing could be read (a
 * process in the middle of an execve shows no environment for a moment;
 * one gone, or with none at all, shows the same). */
static int carries(pid_t pid, const char *marker)
{
    char path[64], buf[65536];
    size_t mlen = strlen(marker), have = 0;
    int fd, found = 0, got = 0;

    snprintf(path, sizeof(path), "/proc/%d/environ", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    for (;;) {
        ssize_t n = read(fd, buf + have, sizeof(buf) - have);
        size_t off = 0, end;

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got = 1;
        end = have + (size_t)n;
        /* Whole entries in buf[0..end); keep a partial one for later. */
        while (off < end) {
            char *nul = memchr(buf + off, '\0', end - off);

            if (nul == NULL)
                break;
            if ((size_t)(nul - (buf + off)) == mlen &&
                memcmp(buf + off, marker, mlen) == 0) {
                found = 1;
                goto out;
            }
            off = (size_t)(nul - buf) + 1;
        }
        have = end - off;
        if (have == sizeof(buf))
            have = 0; /* an entry longer than the buffer: not ours */
        memmove(buf, buf + off, have);
    }
out:
    close(fd);
    return found ? 1 : got ? 0 : -1;
}

/* State and process group of process @pid, from /proc; 0 when gone. */
static int proc_stat(pid_t pid, char *state, long *pgrp)
{
    char path[64], buf[512], *p;
    ssize_t n;
    int fd;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    p = strrchr(buf, ')'); /* the command name may hold anything */
    if (p == NULL || sscanf(p + 1, " %c %*d %ld", state, pgrp) != 2)
        return 0;
    return 1;
}

/*
 * Reap what of the command was reparented to this process (a child
 * subreaper): children in its process group @pgid, whether running
 * (killed first) or already dead, and running children that left the
 * group but carry the exec's @marker.  Killing one may reparent its own
 * children to us: repeat until none.  Other children are not ours to
 * touch.
 */
static void reap_escaped(pid_t pgid, const char *marker)
{
    int subreaper = 0, round, found = 1, unsure = 0, looks = 0;

    if (prctl(PR_GET_CHILD_SUBREAPER, &subreaper, 0, 0, 0) != 0 ||
        !subreaper)
        return;
    for (round = 0; (found || unsure) && round < 64; round++) {
        DIR *tasks = opendir("/proc/self/task");
        struct dirent *t;

        if (!found && unsure) {
            /* A child whose environment could not be read (in the
             * middle of an execve: a setsid(1) on its way to the
             * daemon): look again shortly, 40 times at most. */
            struct timespec pause = {0, 5 * 1000000};

            if (++looks > 40)
                break;
            nanosleep(&pause, NULL);
        }
        found = 0;
        unsure = 0;
        while (tasks && (t = readdir(tasks)) != NULL) {
            char path[300], list[8192], *p, *end;
            ssize_t n;
            int fd;

            if (t->d_name[0] == '.')
                continue;
            snprintf(path, sizeof(path), "/proc/self/task/%s/children",
                     t->d_name);
            fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd < 0)
                continue;
            n = read(fd, list, sizeof(list) - 1);
            close(fd);
            if (n <= 0)
                continue;
            list[n] = '\0';
            for (p = list; *p; p = end) {
                long pid = strtol(p, &end, 10), pgrp;
                char state;

                if (end == p)
                    break;
                if (pid <= 0 || !proc_stat((pid_t)pid, &state, &pgrp))
                    continue;
                if (pgrp != (long)pgid && state != 'Z') {
                    int c = carries((pid_t)pid, marker);

                    unsure |= c < 0;
                    if (c <= 0)
                        continue;
                } else if (pgrp != (long)pgid) {
                    continue;
                }
                kill((pid_t)pid, SIGKILL);
                while (waitpid((pid_t)pid, NULL, 0) < 0 && errno == EINTR)
                    ;
                found = 1;
            }
        }
        if (tasks)
            closedir(tasks);
    }
}

/*
 * True when children are reaped automatically (SIGCHLD ignored, or
 * SA_NOCLDWAIT): waitpid() could not give the exit status.
 */
static int sigchld_ignored(void)
{
    struct sigaction sa;

    if (sigaction(SIGCHLD, NULL, &sa) != 0)
        return 0;
    return sa.sa_handler == SIG_IGN || (sa.sa_flags & SA_NOCLDWAIT);
}

struct proc {
    atp_call *call;
    const atp_spawn_spec *spec;
    struct atp__exec *x;     /* the schedule */
    int out_r, err_r, in_w, pidfd;
    pid_t pid;
    int exited, stopped_by_sink, in_done;
    int cleanup; /* ATP_SPAWN_CLEANUP: the call's cancel does not apply */
    char *buf;
};

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

static int deliver(struct proc *p, int stream, const void *buf, size_t len)
{
    if (p->spec->on_output)
        return p->spec->on_output(p->spec->ctx, stream, buf, len) != 0;
    return atp__call_output(p->call, stream, buf, len) == ATP_E_CANCELLED;
}

/*
 * Read one chunk of what a pipe has.  One only: a command that refills
 * the pipe faster than the consumer takes its output must not keep the
 * loop from its deadlines.
 */
static void pump(struct proc *p, int *fd, int stream)
{
    for (;;) {
        ssize_t n = read(*fd, p->buf, READ_CHUNK);

        if (n > 0) {
            if (deliver(p, stream, p->buf, (size_t)n))
                p->stopped_by_sink = 1;
            return;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        close_fd(fd); /* EOF or error */
        return;
    }
}

/*
 * After the group is killed: deliver what is still buffered in a pipe, up
 * to more than a pipe holds, so that output written before the end is not
 * lost.  Bounded: a writer that escaped the group could keep it full.
 */
static void sweep(struct proc *p, int *fd, int stream)
{
    int i;

    for (i = 0; *fd >= 0 && i < SWEEP_CHUNKS; i++) {
        ssize_t n = read(*fd, p->buf, READ_CHUNK);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (deliver(p, stream, p->buf, (size_t)n))
            break;
    }
}

static int start(struct proc *p, const char **envp, int out_w, int err_w,
                 int in_r)
{
    const atp_spawn_spec *spec = p->spec;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    struct atp__direct direct;
    sigset_t all, none;
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
    if (spec->cwd)
        posix_spawn_file_actions_addchdir_np(&fa, spec->cwd);
    if (in_r >= 0)
        posix_spawn_file_actions_adddup2(&fa, in_r, 0);
    else
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, out_w, 1);
    posix_spawn_file_actions_adddup2(&fa, err_w, 2);
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    rc = -1;
    if (atp__direct_plan(&direct, spec->argv, envp, spec->cwd)) {
        rc = posix_spawn(&p->pid, direct.file, &fa, &attr, direct.argv,
                         (char *const *)(direct.envp ? direct.envp : envp));
        atp__direct_release(&direct);
    }
    if (rc != 0) /* the shell, also when the program just went away */
        rc = posix_spawnp(&p->pid, spec->argv[0], &fa, &attr,
                          (char *const *)spec->argv, (char *const *)envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (rc == ENOENT && spec->cwd && access(spec->cwd, F_OK) != 0)
        return atp__call_error(p->call, ATP_E_BACKEND, "cannot change into "
                               "%s: %s", spec->cwd, strerror(rc));
    if (rc)
        return atp__call_error(p->call, ATP_E_BACKEND, "cannot run %s%s%s: "
                               "%s", spec->argv[0], spec->cwd ? " in " : "",
                               spec->cwd ? spec->cwd : "", strerror(rc));
    return 0;
}

/* Deliver what the schedule says to the whole group. */
static void act(struct proc *p, int due)
{
    if (due == ATP_DUE_TERM)
        kill(-p->pid, SIGTERM);
    else if (due == ATP_DUE_KILL)
        kill(-p->pid, SIGKILL);
}

static int run(struct proc *p)
{
    int cancel_fd = atp__call_cancel_fd(p->call);
    int input_fd = p->in_w >= 0 ? p->x->stdin_fd : -1;
    unsigned stdin_wait = p->in_w >= 0 ? ATP_STDIN_WAIT_FD : 0;

    for (;;) {
        struct pollfd pfd[6];
        int n = 0, i_out = -1, i_err = -1, i_pid = -1, due;
        int64_t wait = -1;

        due = atp__exec_due(p->x, p->stopped_by_sink ||
                                      (!p->cleanup &&
                                       atp__call_cancelled(p->call)),
                            p->exited ? ATP_EXEC_EXITED : 0, &wait);
        if (due == ATP_DUE_STOP)
            break; /* killed, and something escaped holds the pipes */
        act(p, due);
        if (p->exited && p->out_r < 0 && p->err_r < 0)
            break;
        if (p->out_r >= 0) {
            i_out = n;
            pfd[n].fd = p->out_r;
            pfd[n++].events = POLLIN;
        }
        if (p->err_r >= 0) {
            i_err = n;
            pfd[n].fd = p->err_r;
            pfd[n++].events = POLLIN;
        }
        if (!p->exited && p->pidfd >= 0) {
            i_pid = n;
            pfd[n].fd = p->pidfd;
            pfd[n++].events = POLLIN;
        }
        if (cancel_fd >= 0 && !p->cleanup && !p->x->term_sent &&
            !p->x->kill_sent) {
            /* Only to wake up: exec_due() reads the flag. */
            pfd[n].fd = cancel_fd;
            pfd[n++].events = POLLIN;
        }
        if (p->in_w >= 0 && (stdin_wait & ATP_STDIN_WAIT_FD)) {
            pfd[n].fd = p->in_w;
            pfd[n++].events = POLLOUT;
        } else if (p->in_w >= 0 && (stdin_wait & ATP_STDIN_WAIT_INPUT)) {
            if (input_fd >= 0) {
                pfd[n].fd = input_fd;
                pfd[n++].events = POLLIN;
            } else {
                wait = 0;
            }
        }
        if (!p->exited && p->pidfd < 0 && (wait < 0 || wait > 20))
            wait = 20; /* no pidfd: poll for the exit */
        if (poll(pfd, (nfds_t)n, (int)(wait < 0 || wait > 60000 ? 60000
                                                              : wait)) < 0) {
            if (errno == EINTR)
                continue;
            return atp__call_error(p->call, ATP_E_BACKEND, "poll: %s",
                                   strerror(errno));
        }
        if (i_out >= 0 && pfd[i_out].revents)
            pump(p, &p->out_r, ATP_STDOUT);
        if (i_err >= 0 && pfd[i_err].revents)
            pump(p, &p->err_r, ATP_STDERR);
        if (p->in_w >= 0) {
            int done = 0;
            int w = atp__exec_stdin_to_fd(p->x, p->in_w, &done);

            stdin_wait = w > 0 ? (unsigned)w : 0;
            if (done || w < 0)
                close_fd(&p->in_w);
        }
        if (!p->exited) {
            int done;

            if (p->pidfd >= 0) {
                done = i_pid >= 0 && (pfd[i_pid].revents & POLLIN);
            } else {
                siginfo_t si;

                memset(&si, 0, sizeof(si));
                /* Peek without reaping: the zombie pins the group id. */
                done = waitid(P_PID, (id_t)p->pid, &si,
                              WEXITED | WNOHANG | WNOWAIT) == 0 &&
                       si.si_pid == p->pid;
            }
            if (done)
                p->exited = 1;
        }
    }
    return 0;
}

/*
 * While a host process of a session runs, the session's lease names its
 * processes (by the run id of their ATP_EXEC_ID), so that after a crash
 * `atp-run gc` kills what is left.  Written once, after the first start
 * (beside the process's own start-up), and dropped when the session
 * closes.
 */
static void lease_processes(atp_call *call)
{
    struct atp_session *s = call ? call->session : NULL;

    if (s == NULL || s->processes_leased)
        return;
    if (atp__lease_open_with(s, "processes", s->run_id) == 0)
        s->processes_leased = 1;
    else
        atp__log(s->be->cfg, ATP_LOG_WARN, "core", "cannot record the "
                 "session's processes in the ledger: %s", atp_last_error());
}

int atp__spawn(atp_call *call, const atp_spawn_spec *spec,
               atp_exec_outcome *out)
{
    struct atp__exec own, *x = atp__call_exec(call);
    atp__env env = {0};
    int out_p[2] = {-1, -1}, err_p[2] = {-1, -1}, in_p[2] = {-1, -1};
    int want_stdin = (spec->flags & ATP_SPAWN_STDIN) != 0;
    struct proc p;
    char marker[128];
    struct rusage ru;
    int status = 0, rc;
    pid_t w;

    memset(&p, 0, sizeof(p));
    p.out_r = p.err_r = p.in_w = p.pidfd = -1;
    p.call = call;
    p.spec = spec;
    if (spec->argv == NULL || spec->argv[0] == NULL)
        return atp__call_error(call, ATP_E_INVAL, "spawn: empty argv");
    if (sigchld_ignored())
        return atp__call_error(call, ATP_E_BACKEND, "SIGCHLD is ignored in "
                               "this process, so the exit status of a "
                               "command would be lost: restore its default "
                               "disposition (SIG_DFL, no SA_NOCLDWAIT)");
    p.cleanup = (spec->flags & ATP_SPAWN_CLEANUP) != 0;
    if (p.cleanup && spec->timeout_ms <= 0)
        return atp__call_error(call, ATP_E_INVAL, "spawn: a cleanup helper "
                               "needs a timeout_ms of its own");
    if (x == NULL || spec->timeout_ms > 0) {
        /* Not the exec itself: a schedule of its own. */
        struct atp__exec_plan plan;

        memset(&plan, 0, sizeof(plan));
        plan.timeout_ms = spec->timeout_ms;
        plan.enforce_budget = 1;
        plan.grace_ms = x ? x->plan.grace_ms : 1000;
        plan.drain_ms = x ? x->plan.drain_ms : 0;
        /* A cleanup runs past the call's deadline: it is how a plugin
         * ends what the deadline ended. */
        plan.backstop_ns = p.cleanup ? 0 : atp__call_deadline(call);
        plan.stdin_fd = -1; /* the exec's input is the exec's */
        plan.exec_id = x ? x->plan.exec_id : atp__call_run_id(call);
        atp__exec_init(&own, &plan);
        x = &own;
    }
    p.x = x;
    if (want_stdin && x->stdin_fd < 0)
        want_stdin = 0; /* the exec has no stdin: /dev/null */
    if (atp__call_subreaper(call))
        pthread_once(&subreaper_once, become_subreaper);
    snprintf(marker, sizeof(marker), ATP__MARKER "%s",
             x->plan.exec_id ? x->plan.exec_id : "atp");
    p.buf = malloc(READ_CHUNK);
    if (build_envp(&env, (spec->flags & ATP_SPAWN_HOST_ENV) != 0,
                   spec->envp ? spec->envp : atp__call_envp(call),
                   marker) != 0 ||
        p.buf == NULL) {
        rc = atp__call_error(call, ATP_E_NOMEM, "out of memory");
        goto out;
    }
    if (pipe2(out_p, O_CLOEXEC) || pipe2(err_p, O_CLOEXEC) ||
        (want_stdin && pipe2(in_p, O_CLOEXEC))) {
        rc = atp__call_error(call, ATP_E_BACKEND, "pipe: %s",
                             strerror(errno));
        goto out;
    }
    rc = start(&p, (const char **)env.v, out_p[1], err_p[1], in_p[0]);
    if (rc == 0)
        lease_processes(call);
    close_fd(&out_p[1]);
    close_fd(&err_p[1]);
    close_fd(&in_p[0]);
    if (rc)
        goto out;
    p.out_r = out_p[0];
    p.err_r = err_p[0];
    p.in_w = in_p[1];
    out_p[0] = err_p[0] = in_p[1] = -1;
    fcntl(p.out_r, F_SETFL, O_NONBLOCK);
    fcntl(p.err_r, F_SETFL, O_NONBLOCK);
    fcntl(p.out_r, F_SETPIPE_SZ, PIPE_SIZE); /* best effort */
    fcntl(p.err_r, F_SETPIPE_SZ, PIPE_SIZE);
    if (p.in_w >= 0)
        fcntl(p.in_w, F_SETFL, O_NONBLOCK);
    p.pidfd = pidfd_of(p.pid);
    rc = run(&p);

    /* Nothing of it outlives it; the zombie leader still holds the group
     * id, so this cannot hit a stranger. */
    kill(-p.pid, SIGKILL);
    if (rc == 0) {
        sweep(&p, &p.out_r, ATP_STDOUT);
        sweep(&p, &p.err_r, ATP_STDERR);
    }
    memset(&ru, 0, sizeof(ru));
    while ((w = wait4(p.pid, &status, 0, &ru)) < 0 && errno == EINTR)
        ;
    if (w < 0 && rc == 0) /* reaped behind our back: no status to give */
        rc = atp__call_error(call, ATP_E_BACKEND, "the exit status of the "
                             "command is lost: %s", strerror(errno));
    reap_escaped(p.pid, marker);
    if (rc == 0) {
        out->exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        out->signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
        out->flags = (x->timed_out ? ATP_OUTCOME_TIMED_OUT : 0) |
                     (x->cancelled ? ATP_OUTCOME_CANCELLED : 0);
        if (out->struct_size >= ATP_EXEC_OUTCOME_SIZE_V1_2) {
            /* The process and the descendants it waited for. */
            out->flags |= ATP_OUTCOME_USAGE;
            out->cpu_ns = ((int64_t)ru.ru_utime.tv_sec +
                           ru.ru_stime.tv_sec) * 1000000000 +
                          ((int64_t)ru.ru_utime.tv_usec +
                           ru.ru_stime.tv_usec) * 1000;
            out->max_rss_bytes = (int64_t)ru.ru_maxrss * 1024;
        }
    }
out:
    if (x == &own)
        atp__exec_release(&own);
    close_fd(&p.out_r);
    close_fd(&p.err_r);
    close_fd(&p.in_w);
    close_fd(&p.pidfd);
    close_fd(&out_p[0]);
    close_fd(&out_p[1]);
    close_fd(&err_p[0]);
    close_fd(&err_p[1]);
    close_fd(&in_p[0]);
    close_fd(&in_p[1]);
    free(p.buf);
    atp__env_free(&env);
    return rc;
}
