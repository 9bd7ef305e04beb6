/*
 * tests/unit/local_fds.c - print the descriptors this process was started
 * with, one "FD TARGET" line each, in ascending order.
 *
 * test_local runs it through the local backend to check that nothing but
 * stdin, stdout and stderr leaks into a command.  The descriptor used to
 * read /proc/self/fd is left out.
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;

    return (x > y) - (x < y);
}

int main(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int fds[4096];
    size_t n = 0, i;

    if (d == NULL) {
        perror("local_fds: /proc/self/fd");
        return 2;
    }
    while ((e = readdir(d)) != NULL && n < sizeof(fds) / sizeof(fds[0])) {
        char *end;
        long fd = strtol(e->d_name, &end, 10);

        if (e->d_name[0] == '.' || *end != '\0' || fd == dirfd(d))
            continue;
        fds[n++] = (int)fd;
    }
    qsort(fds, n, sizeof(fds[0]), cmp_int);
    for (i = 0; i < n; i++) {
        char link[64], target[4096];
        ssize_t len;

        snprintf(link, sizeof(link), "/proc/self/fd/%d", fds[i]);
        len = readlink(link, target, sizeof(target) - 1);
        target[len < 0 ? 0 : len] = '\0';
        printf("%d %s\n", fds[i], target);
    }
    closedir(d);
    return 0;
}
