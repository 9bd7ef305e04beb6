/*
 * core/direct.c - running `/bin/sh -c 'exec WORD...'` without the shell.
 *
 * atp-run hands a command over as sh text, `exec` followed by the words
 * quoted (atp_shell_exec_join), and a shell started only to exec the
 * first word costs a whole extra program start per command.  When the
 * text is nothing but `exec` and plain or single-quoted words, and the
 * first word is found on the command's PATH as an executable file that
 * the kernel can run (ELF or `#!`), the host runner executes it directly
 * with what the shell would have given it: the same argv, the same
 * environment with PWD set as sh sets it.  Anything else (expansions,
 * redirections, a PATH entry that is not absolute, a word with a slash,
 * a name not found, a file that sh would run as a script itself) runs
 * through the shell as before, so its behaviour and messages stay sh's.
 */
#define _GNU_SOURCE
#include "config.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

/* Split @text (after "exec ") into words, unquoted, into @d. */
static int split_words(const char *text, struct atp__direct *d)
{
    const char *p;
    size_t n = 0, cap = 1;
    char *out;

    for (p = text; *p; p++)
        cap += *p == ' ';
    if ((d->store = malloc(strlen(text) + 1)) == NULL ||
        (d->argv = calloc(cap + 1, sizeof(*d->argv))) == NULL)
        return -1;
    out = d->store;
    p = text;
    while (*p) {
        if (*p == ' ') {
            p++;
            continue;
        }
        d->argv[n++] = out;
        while (*p && *p != ' ') {
            if (*p == '\'') {
                const char *end = strchr(p + 1, '\'');

                if (end == NULL)
                    return -1;
                memcpy(out, p + 1, (size_t)(end - p - 1));
                out += end - p - 1;
                p = end + 1;
            } else if (p[0] == '\\' && p[1] == '\'') {
                *out++ = '\'';
                p += 2;
            } else if (atp__sh_plain_char(*p)) {
                *out++ = *p++;
            } else {
                return -1; /* something only a shell understands */
            }
        }
        *out++ = '\0';
    }
    d->argv[n] = NULL;
    return n > 0 ? 0 : -1;
}

static const char *env_get(const char *const *envp, const char *name)
{
    size_t l = strlen(name);

    for (; envp && *envp; envp++)
        if (strncmp(*envp, name, l) == 0 && (*envp)[l] == '=')
            return *envp + l + 1;
    return NULL;
}

/* Can execve() run @path as it is: a regular executable file that starts
 * with ELF's magic or `#!`? */
static int runnable(const char *path)
{
    struct stat st;
    char head[4];
    int fd, ok;

    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) ||
        access(path, X_OK) != 0)
        return 0;
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return 0;
    ok = read(fd, head, sizeof(head)) == (ssize_t)sizeof(head) &&
         (memcmp(head, "\177ELF", 4) == 0 || memcmp(head, "#!", 2) == 0);
    close(fd);
    return ok;
}

/* Find @word on @path as sh would; 1 found, 0 not eligible. */
static int lookup(const char *path, const char *word, char *out,
                  size_t outlen)
{
    const char *p = path;

    while (*p) {
        const char *end = strchr(p, ':');
        size_t dl = end ? (size_t)(end - p) : strlen(p);
        struct stat st;

        if (dl == 0 || *p != '/')
            return 0; /* the current directory: leave it to sh */
        if (dl + 1 + strlen(word) + 1 > outlen)
            return 0;
        memcpy(out, p, dl);
        out[dl] = '/';
        memcpy(out + dl + 1, word, strlen(word) + 1);
        if (stat(out, &st) == 0)
            return runnable(out); /* sh would stop at what it finds too */
        if (end == NULL)
            break;
        p = end + 1;
    }
    return 0;
}

/* The environment sh passes on: @envp with PWD naming @cwd the way sh
 * sets it (kept when it already names that directory). */
static int with_pwd(struct atp__direct *d, const char *const *envp,
                    const char *cwd)
{
    const char *pwd = env_get(envp, "PWD");
    struct stat a, b;
    char real[PATH_MAX];
    size_t n = 0, i = 0;

    if (stat(cwd, &a) != 0)
        return -1;
    if (pwd && *pwd == '/' && strstr(pwd, "/.") == NULL &&
        stat(pwd, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
        return 0; /* sh keeps it */
    if (realpath(cwd, real) == NULL)
        return -1;
    while (envp && envp[n])
        n++;
    if ((d->envp = calloc(n + 2, sizeof(*d->envp))) == NULL ||
        (d->pwd = malloc(strlen(real) + 5)) == NULL)
        return -1;
    snprintf(d->pwd, strlen(real) + 5, "PWD=%s", real);
    for (n = 0; envp && envp[n]; n++)
        if (strncmp(envp[n], "PWD=", 4) != 0)
            d->envp[i++] = envp[n];
    d->envp[i++] = d->pwd;
    d->envp[i] = NULL;
    return 0;
}

int atp__direct_plan(struct atp__direct *d, const char *const *argv,
                     const char *const *envp, const char *cwd)
{
    const char *path;

    memset(d, 0, sizeof(*d));
    if (argv[0] == NULL || strcmp(argv[0], "/bin/sh") != 0 ||
        argv[1] == NULL || strcmp(argv[1], "-c") != 0 || argv[2] == NULL ||
        argv[3] != NULL || strncmp(argv[2], "exec ", 5) != 0)
        return 0;
    if ((path = env_get(envp, "PATH")) == NULL)
        return 0;
    if (split_words(argv[2] + 5, d) != 0 || d->argv[0][0] == '-' ||
        strchr(d->argv[0], '/') != NULL ||
        !lookup(path, d->argv[0], d->file, sizeof(d->file)) ||
        with_pwd(d, envp, cwd ? cwd : ".") != 0) {
        atp__direct_release(d);
        return 0;
    }
    d->use = 1;
    return 1;
}

void atp__direct_release(struct atp__direct *d)
{
    free(d->store);
    free(d->argv);
    free(d->envp);
    free(d->pwd);
    memset(d, 0, sizeof(*d));
}
