/*
 * fuzz/tar_extract_fuzzer.c - safe extraction of a tar stream from a
 * sandbox (atp__x_tar_extract, core/tarstream.c) into a fresh workdir.
 *
 * Input: one byte of set-up, then the stream.  The set-up byte says how
 * the stream is cut into reads and what the workdir holds beforehand (a
 * directory, a file, links that stay inside), since extraction must also
 * be safe through what is already there.
 *
 * The oracle, after every extraction, failed or not:
 *   - no symbolic link under the workdir resolves outside it, judged by
 *     atp__link_escapes() through the links on disk;
 *   - nothing appeared outside the workdir: it sits at T/a/b/root, and T,
 *     T/a and T/a/b hold only the next step down;
 *   - no device, fifo or socket, no set-user-id or set-group-id bit;
 *   - on success, every entry reported written is on disk as its type.
 *
 * As root, an escape would write anywhere on this machine: extraction and
 * the checks run with the file-system identity of nobody (setfsuid), so
 * that one can only reach what everyone may write; the checks that follow
 * only look, with root's identity back.
 */
#define _GNU_SOURCE
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/internal.h"
#include "../core/transfer.h"
#include "fuzz.h"

#define NOBODY 65534

static char top[PATH_MAX], root[PATH_MAX];
static int drop; /* running as root: use nobody's file-system identity */
static int debug; /* ATP_FUZZ_DEBUG set: say how each extraction ended */

struct feed {
    const uint8_t *p;
    size_t n, step;
};

static long feed_read(void *ctx, void *buf, size_t len)
{
    struct feed *f = ctx;
    size_t n = f->n < f->step ? f->n : f->step;

    if (n > len)
        n = len;
    memcpy(buf, f->p, n);
    f->p += n;
    f->n -= n;
    return (long)n;
}

static void as_nobody(int on)
{
    if (!drop)
        return;
    if (on) {
        setfsgid(NOBODY);
        setfsuid(NOBODY);
    } else {
        setfsuid(0);
        setfsgid(0);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *base = fuzz_tmpdir();

    (void)argc;
    (void)argv;
    drop = geteuid() == 0;
    debug = getenv("ATP_FUZZ_DEBUG") != NULL;
    if (drop && chown(base, NOBODY, NOBODY) != 0)
        fuzz_fail("cannot give %s to nobody: %s", base, strerror(errno));
    snprintf(top, sizeof(top), "%s/t", base);
    snprintf(root, sizeof(root), "%s/t/a/b/root", base);
    return 0;
}

/* @dir holds exactly one entry, @only. */
static void holds_only(const char *dir, const char *only)
{
    DIR *d = opendir(dir);
    struct dirent *de;

    if (d == NULL)
        fuzz_fail("%s is gone: %s", dir, strerror(errno));
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
            strcmp(de->d_name, only) == 0)
            continue;
        fuzz_fail("'%s' appeared in %s, outside the workdir", de->d_name,
                  dir);
    }
    closedir(d);
}

/* Check everything under directory @dfd (at @rel, "" for the root). */
static void walk(int rootfd, int dfd, const char *rel, int depth)
{
    DIR *d = fdopendir(dfd);
    struct dirent *de;

    if (d == NULL) {
        close(dfd);
        return;
    }
    while ((de = readdir(d)) != NULL) {
        char path[PATH_MAX];
        struct stat sb;

        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if ((size_t)snprintf(path, sizeof(path), "%s%s%s", rel,
                             rel[0] ? "/" : "", de->d_name) >= sizeof(path))
            continue;
        if (fstatat(dirfd(d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0)
            continue;
        if (S_ISLNK(sb.st_mode) && atp__link_escapes(rootfd, path))
            fuzz_fail("symbolic link '%s' resolves outside the workdir",
                      path);
        if (!S_ISLNK(sb.st_mode) && !S_ISREG(sb.st_mode) &&
            !S_ISDIR(sb.st_mode))
            fuzz_fail("'%s' of type %o was created", path,
                      (unsigned)(sb.st_mode & S_IFMT));
        if (!S_ISLNK(sb.st_mode) && (sb.st_mode & (S_ISUID | S_ISGID)) &&
            !S_ISDIR(sb.st_mode))
            fuzz_fail("'%s' has mode %o", path, (unsigned)sb.st_mode);
        if (S_ISDIR(sb.st_mode) && depth < 64) {
            int sub;

            /* An extracted directory may be mode 0: walk it anyway. */
            fchmodat(dirfd(d), de->d_name, sb.st_mode | 0700, 0);
            sub = openat(dirfd(d), de->d_name,
                         O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub >= 0)
                walk(rootfd, sub, path, depth + 1);
        }
    }
    closedir(d);
}

/* Each entry @got says was written is there, as its type. */
static void check_got(int rootfd, const struct atp__manifest *got)
{
    size_t i;

    for (i = 0; i < got->n; i++) {
        const struct atp__ment *e = &got->e[i];
        struct stat sb;
        int ok;

        if (!atp__path_ok(e->path))
            fuzz_fail("reported '%s', which is no safe path", e->path);
        if (fstatat(rootfd, e->path, &sb, AT_SYMLINK_NOFOLLOW) != 0)
            fuzz_fail("reported '%s', which is not there: %s", e->path,
                      strerror(errno));
        ok = e->type == ATP__T_FILE   ? S_ISREG(sb.st_mode)
             : e->type == ATP__T_DIR  ? S_ISDIR(sb.st_mode)
             : e->type == ATP__T_LINK ? S_ISLNK(sb.st_mode)
                                      : 0;
        if (!ok)
            fuzz_fail("reported '%s' as %c, on disk mode %o", e->path,
                      e->type, (unsigned)sb.st_mode);
    }
}

/* What the workdir holds before, by the bits of @setup. */
static void prepare(unsigned setup)
{
    char p[PATH_MAX + 16];

    snprintf(p, sizeof(p), "%s/t", fuzz_tmpdir());
    if (mkdir(p, 0700) != 0)
        fuzz_fail("mkdir %s: %s", p, strerror(errno));
    snprintf(p, sizeof(p), "%s/t/a", fuzz_tmpdir());
    mkdir(p, 0700);
    snprintf(p, sizeof(p), "%s/t/a/b", fuzz_tmpdir());
    mkdir(p, 0700);
    if (mkdir(root, 0700) != 0)
        fuzz_fail("mkdir %s: %s", root, strerror(errno));
    if (setup & 0x10) {
        snprintf(p, sizeof(p), "%s/d", root);
        mkdir(p, 0755);
    }
    if (setup & 0x20) {
        snprintf(p, sizeof(p), "%s/f", root);
        close(open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
    }
    if (setup & 0x40) {
        snprintf(p, sizeof(p), "%s/l", root);
        if (symlink("d", p) != 0)
            fuzz_fail("symlink %s: %s", p, strerror(errno));
    }
    if (setup & 0x80) {
        snprintf(p, sizeof(p), "%s/self", root);
        if (symlink(".", p) != 0)
            fuzz_fail("symlink %s: %s", p, strerror(errno));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const excludes[] = {".lake", "*.olean", "build/tmp",
                                           NULL};
    struct atp__tar_limits lim = {256, 1 << 20};
    struct atp__manifest got = {NULL, 0, 0};
    struct atp__tar_stats st;
    struct feed f;
    char p[PATH_MAX + 16];
    int rc, rootfd;

    if (size == 0)
        return 0;
    f.step = (size_t)1 << (data[0] & 15);
    f.p = data + 1;
    f.n = size - 1;
    fuzz_rmtree(top);
    as_nobody(1);
    prepare(data[0]);
    rc = atp__x_tar_extract(root, excludes, &lim, feed_read, &f, &got, &st);
    as_nobody(0); /* the checks only look, and must see everything */
    if (debug)
        fprintf(stderr, "extract: %d %s (%zu entries reported)\n", rc,
                rc ? atp_last_error() : "", got.n);
    rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0)
        fuzz_fail("the workdir %s is gone: %s", root, strerror(errno));
    walk(rootfd, dup(rootfd), "", 0);
    if (rc == 0)
        check_got(rootfd, &got);
    close(rootfd);
    holds_only(fuzz_tmpdir(), "t");
    holds_only(top, "a");
    snprintf(p, sizeof(p), "%s/a", top);
    holds_only(p, "b");
    snprintf(p, sizeof(p), "%s/a/b", top);
    holds_only(p, "root");
    atp__manifest_free(&got);
    fuzz_rmtree(top);
    return 0;
}
