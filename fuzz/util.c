/*
 * fuzz/util.c - helpers of every fuzz target: the oracle's abort and a
 * scratch directory.
 */
#include "config.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"

void fuzz_fail(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fputs("fuzz oracle: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

void fuzz_check_outcome(const atp_exec_outcome *out)
{
    int code = out->exit_code, sig = out->signal;

    if ((code >= 0 && code <= 255 && sig == 0) ||
        (code == -1 && sig >= 1 && sig <= 64))
        return;
    fuzz_fail("exec succeeded with exit code %d and signal %d", code, sig);
}

/*
 * Remove @name under @dfd and all below it, never following a link;
 * 0 when it is gone.
 */
static int rm_at(int dfd, const char *name)
{
    struct stat sb;
    int fd;

    if (fstatat(dfd, name, &sb, AT_SYMLINK_NOFOLLOW) != 0)
        return 0;
    if (!S_ISDIR(sb.st_mode))
        return unlinkat(dfd, name, 0);
    fchmodat(dfd, name, 0700, 0); /* an extracted 0000 directory */
    fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
        DIR *d = fdopendir(fd);
        struct dirent *de;
        int removed;

        if (d == NULL) {
            close(fd);
        } else {
            do { /* again while it shrinks: removal while reading may
                  * skip names */
                removed = 0;
                rewinddir(d);
                while ((de = readdir(d)) != NULL) {
                    if (strcmp(de->d_name, ".") == 0 ||
                        strcmp(de->d_name, "..") == 0)
                        continue;
                    if (rm_at(dirfd(d), de->d_name) == 0)
                        removed = 1;
                }
            } while (removed);
            closedir(d);
        }
    }
    return unlinkat(dfd, name, AT_REMOVEDIR);
}

void fuzz_rmtree(const char *path)
{
    rm_at(AT_FDCWD, path);
}

static void tmpdir_cleanup(void)
{
    fuzz_rmtree(fuzz_tmpdir());
}

const char *fuzz_tmpdir(void)
{
    static char dir[512];
    const char *t;

    if (dir[0])
        return dir;
    /* tmpfs when there is one: the tar target makes and removes a tree
     * per input, several times faster there than on a disk. */
    t = getenv("TMPDIR");
    if (t == NULL || *t == '\0')
        t = access("/dev/shm", W_OK | X_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(dir, sizeof(dir), "%s/atp-fuzz-XXXXXX", t);
    if (mkdtemp(dir) == NULL)
        fuzz_fail("cannot make a temporary directory under %s", dir);
    atexit(tmpdir_cleanup);
    return dir;
}
