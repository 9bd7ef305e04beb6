/*
 * bench/spawnwait.c - the least a command supervisor does: posix_spawn
 * the command with stdout and stderr on pipes and stdin from /dev/null,
 * copy both pipes to its own until they close, wait for the command and
 * exit with its status.  bench/foundation.sh times atp-run against it.
 *
 *   spawnwait COMMAND [ARG...]
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv)
{
    posix_spawn_file_actions_t fa;
    int out[2], err[2], status, open_n = 2;
    struct pollfd p[2];
    char buf[65536];
    pid_t pid;

    if (argc < 2) {
        fprintf(stderr, "usage: spawnwait COMMAND [ARG...]\n");
        return 2;
    }
    if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0)
        return 125;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, err[1], 2);
    if (posix_spawnp(&pid, argv[1], &fa, NULL, argv + 1, environ) != 0)
        return 127;
    close(out[1]);
    close(err[1]);
    p[0] = (struct pollfd){out[0], POLLIN, 0};
    p[1] = (struct pollfd){err[0], POLLIN, 0};
    while (open_n > 0) {
        int i;

        if (poll(p, 2, -1) < 0)
            continue;
        for (i = 0; i < 2; i++) {
            ssize_t n;

            if (p[i].fd < 0 || !p[i].revents)
                continue;
            n = read(p[i].fd, buf, sizeof(buf));
            if (n <= 0) {
                close(p[i].fd);
                p[i].fd = -1;
                open_n--;
            } else if (write(i + 1, buf, (size_t)n) != n) {
                return 125;
            }
        }
    }
    if (waitpid(pid, &status, 0) < 0)
        return 125;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
