/*
 * core/manifest.c - what a workdir holds: path, type, size, mtime, mode,
 * symlink target and (where known) a content hash, for the host side (a
 * libarchive disk walk) and for the sandbox side (a listing command's
 * output).  Incremental sync compares these.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "internal.h"
#include "transfer.h"

void atp__manifest_free(struct atp__manifest *m)
{
    size_t i;

    for (i = 0; i < m->n; i++) {
        free(m->e[i].path);
        free(m->e[i].target);
    }
    free(m->e);
    memset(m, 0, sizeof(*m));
}

int atp__manifest_add(struct atp__manifest *m, const struct atp__ment *src)
{
    struct atp__ment *e;

    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 256;
        struct atp__ment *grown = realloc(m->e, cap * sizeof(*grown));

        if (grown == NULL)
            return ATP_E_NOMEM;
        m->e = grown;
        m->cap = cap;
    }
    e = &m->e[m->n];
    *e = *src;
    e->path = strdup(src->path);
    e->target = src->target ? strdup(src->target) : NULL;
    if (e->path == NULL || (src->target && e->target == NULL)) {
        free(e->path);
        free(e->target);
        return ATP_E_NOMEM;
    }
    m->n++;
    return 0;
}

static int cmp_ment(const void *a, const void *b)
{
    const struct atp__ment *x = a, *y = b;
    int c = strcmp(x->path, y->path);

    if (c)
        return c;
    /* Stable for duplicates: later additions sort after. */
    return x < y ? -1 : x > y;
}

void atp__manifest_sort(struct atp__manifest *m)
{
    size_t i, o = 0;

    if (m->n == 0)
        return;
    qsort(m->e, m->n, sizeof(*m->e), cmp_ment);
    for (i = 0; i < m->n; i++) {
        if (i + 1 < m->n && strcmp(m->e[i].path, m->e[i + 1].path) == 0) {
            free(m->e[i].path);
            free(m->e[i].target);
            continue;
        }
        m->e[o++] = m->e[i];
    }
    m->n = o;
}

struct atp__ment *atp__manifest_find(const struct atp__manifest *m,
                                     const char *path)
{
    size_t lo = 0, hi = m->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(m->e[mid].path, path);

        if (c == 0)
            return &m->e[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

int atp__path_ok(const char *path)
{
    const char *p = path;

    if (*p == '\0' || *p == '/')
        return 0;
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);

        if (len == 0 || (len == 1 && p[0] == '.') ||
            (len == 2 && p[0] == '.' && p[1] == '.'))
            return 0;
        if (slash == NULL)
            break;
        p = slash + 1;
        if (*p == '\0')
            return 0; /* trailing slash */
    }
    return 1;
}

int atp__excluded(const char *path, const char *const *excludes)
{
    size_t i;

    for (i = 0; excludes && excludes[i]; i++) {
        const char *pat = excludes[i];

        if (strchr(pat, '/') == NULL) {
            const char *p = path;

            while (p) {
                const char *slash = strchr(p, '/');
                char comp[256];
                size_t len = slash ? (size_t)(slash - p) : strlen(p);

                if (len < sizeof(comp)) {
                    memcpy(comp, p, len);
                    comp[len] = '\0';
                    if (fnmatch(pat, comp, FNM_PERIOD) == 0)
                        return 1;
                }
                p = slash ? slash + 1 : NULL;
            }
        } else {
            /* Anchored: the path or one of its parents matches. */
            char buf[4096];
            size_t len = strlen(path), j;

            if (len >= sizeof(buf))
                continue;
            memcpy(buf, path, len + 1);
            for (j = len + 1; j-- > 0;) {
                if (buf[j] != '/' && buf[j] != '\0')
                    continue;
                buf[j] = '\0';
                if (fnmatch(pat, buf, FNM_PATHNAME | FNM_PERIOD) == 0)
                    return 1;
                if (j < len)
                    buf[j] = '/';
            }
        }
    }
    return 0;
}

/*
 * The listing is what `find . -mindepth 1 ... -printf '%y %s %T@ %m\0%P\0
 * %l\0'` prints: three NUL-terminated fields per entry.  It comes from
 * the sandbox, so every name is checked like any untrusted input.
 */
int atp__manifest_parse_listing(struct atp__manifest *m, const char *buf,
                                size_t len, const char *const *excludes)
{
    const char *p = buf, *end = buf + len;

    while (p < end) {
        const char *f[3];
        struct atp__ment me;
        char tchar;
        long long size;
        double mtime;
        unsigned mode;
        int i;

        for (i = 0; i < 3; i++) {
            const char *nul = memchr(p, '\0', (size_t)(end - p));

            if (nul == NULL)
                return atp__error(ATP_E_TRANSFER, "sandbox listing is "
                                  "truncated");
            f[i] = p;
            p = nul + 1;
        }
        if (sscanf(f[0], "%c %lld %lf %o", &tchar, &size, &mtime, &mode) != 4)
            return atp__error(ATP_E_TRANSFER, "sandbox listing line '%.60s' "
                              "is malformed", f[0]);
        if (tchar != ATP__T_FILE && tchar != ATP__T_DIR &&
            tchar != ATP__T_LINK)
            continue;
        if (f[1][0] == '.' && f[1][1] == '/')
            f[1] += 2; /* find's %p of a name given as ./NAME */
        if (!atp__path_ok(f[1]) || atp__excluded(f[1], excludes))
            continue;
        memset(&me, 0, sizeof(me));
        me.path = (char *)f[1];
        me.type = tchar;
        me.target = tchar == ATP__T_LINK ? (char *)f[2] : NULL;
        me.size = tchar == ATP__T_FILE ? size : 0;
        {
            /* %T@ has nanosecond digits; parse them exactly.  A time the
             * cast cannot hold (or "nan") is pinned first; the result is
             * pinned to what int64 nanoseconds hold. */
            const char *dot = strchr(f[0] + 2, '.');
            long long sec = !(mtime <= 1e11)   ? 100000000000LL
                            : mtime < -1e11    ? -100000000000LL
                                               : (long long)mtime;
            long ns = 0;
            int digits = 0;

            if (dot) {
                const char *q = dot + 1;

                while (*q >= '0' && *q <= '9' && digits < 9) {
                    ns = ns * 10 + (*q++ - '0');
                    digits++;
                }
                while (digits++ < 9)
                    ns *= 10;
            }
            me.mtime_ns = atp__mtime_ns(sec, ns);
        }
        me.mode = mode & 07777;
        if (atp__manifest_add(m, &me) != 0)
            return atp__error(ATP_E_NOMEM, "out of memory");
    }
    atp__manifest_sort(m);
    return 0;
}

int64_t atp__mtime_ns(int64_t sec, long nsec)
{
    if (sec > (INT64_MAX - 999999999) / 1000000000)
        return INT64_MAX;
    if (sec < INT64_MIN / 1000000000 + 1)
        return INT64_MIN;
    return sec * 1000000000 + nsec;
}

int atp__hash_file(int rootfd, const char *path, uint64_t *hash)
{
    XXH3_state_t *st = XXH3_createState();
    char buf[65536];
    ssize_t n;
    int fd, rc = 0;

    if (st == NULL)
        return atp__error(ATP_E_NOMEM, "out of memory");
    fd = openat(rootfd, path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        XXH3_freeState(st);
        return atp__error(ATP_E_TRANSFER, "cannot read %s: %s", path,
                          strerror(errno));
    }
    XXH3_64bits_reset(st);
    while ((n = read(fd, buf, sizeof(buf))) > 0)
        XXH3_64bits_update(st, buf, (size_t)n);
    if (n < 0)
        rc = atp__error(ATP_E_TRANSFER, "cannot read %s: %s", path,
                        strerror(errno));
    else
        *hash = XXH3_64bits_digest(st);
    close(fd);
    XXH3_freeState(st);
    return rc;
}

/* ---- removal ----------------------------------------------------------- */

/* Empty directory @fd (not following symlinks) recursively. */
static int empty_dir(int fd)
{
    DIR *d = fdopendir(fd);
    struct dirent *de;
    int rc = 0;

    if (d == NULL) {
        close(fd);
        return -1;
    }
    while ((de = readdir(d)) != NULL) {
        struct stat sb;

        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (fstatat(dirfd(d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0)
            continue;
        if (S_ISDIR(sb.st_mode)) {
            int sub = openat(dirfd(d), de->d_name,
                             O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

            if (sub < 0 || empty_dir(sub) != 0 ||
                unlinkat(dirfd(d), de->d_name, AT_REMOVEDIR) != 0)
                rc = -1;
        } else if (unlinkat(dirfd(d), de->d_name, 0) != 0) {
            rc = -1;
        }
    }
    closedir(d);
    return rc;
}

int atp__remove_under(const char *root, const char *path)
{
    char buf[PATH_MAX], *p, *slash;
    struct stat sb;
    int fd, rc = 0;

    if (!atp__path_ok(path) || strlen(path) >= sizeof(buf))
        return atp__error(ATP_E_TRANSFER, "refused to remove '%s'", path);
    memcpy(buf, path, strlen(path) + 1);
    fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return atp__error(ATP_E_TRANSFER, "cannot open %s: %s", root,
                          strerror(errno));
    /* Walk the parents without following a symlink anywhere. */
    for (p = buf; (slash = strchr(p, '/')) != NULL; p = slash + 1) {
        int next;

        *slash = '\0';
        next = openat(fd, p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        close(fd);
        if (next < 0)
            return 0; /* a parent is gone or not a directory: done */
        fd = next;
    }
    if (fstatat(fd, p, &sb, AT_SYMLINK_NOFOLLOW) != 0) {
        close(fd);
        return 0;
    }
    if (S_ISDIR(sb.st_mode)) {
        int sub = openat(fd, p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
                                    O_CLOEXEC);

        if (sub < 0 || empty_dir(sub) != 0 ||
            unlinkat(fd, p, AT_REMOVEDIR) != 0)
            rc = atp__error(ATP_E_TRANSFER, "cannot remove %s/%s: %s", root,
                            path, strerror(errno));
    } else if (unlinkat(fd, p, 0) != 0 && errno != ENOENT) {
        rc = atp__error(ATP_E_TRANSFER, "cannot remove %s/%s: %s", root,
                        path, strerror(errno));
    }
    close(fd);
    return rc;
}

/* ---- symbolic links ------------------------------------------------------ */

const char *atp__link_refusal(const char *name, const char *target)
{
    const char *p;
    int depth = 0, named = 0;

    if (target[0] == '\0')
        return "an empty symbolic link target";
    if (target[0] == '/')
        return "symbolic link leading outside the workdir (an absolute "
               "target)";
    for (p = name; *p; p++) /* the link's directory depth */
        if (*p == '/')
            depth++;
    for (p = target; *p;) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);

        if (len == 2 && p[0] == '.' && p[1] == '.') {
            if (named)
                return "symbolic link with a '..' after a name: the name "
                       "may be a link, and '..' climbs from where it leads";
            if (--depth < 0)
                return "symbolic link leading outside the workdir";
        } else if (len > 0 && !(len == 1 && p[0] == '.')) {
            named = 1;
        }
        p = slash ? slash + 1 : p + len;
    }
    return NULL;
}

/* Append component @c (@len bytes) to the path @cur of @curlen bytes. */
static int push_component(char *cur, size_t *curlen, size_t cap,
                          const char *c, size_t len)
{
    if (*curlen + len + 2 > cap)
        return -1;
    if (*curlen)
        cur[(*curlen)++] = '/';
    memcpy(cur + *curlen, c, len);
    *curlen += len;
    cur[*curlen] = '\0';
    return 0;
}

int atp__link_escapes(int rootfd, const char *name)
{
    /* cur: where the walk is, a path of real directories under the root;
     * rest: what is left to walk. */
    char cur[PATH_MAX], rest[2 * PATH_MAX], target[PATH_MAX];
    size_t curlen = 0;
    int hops = 0, missing = 0;

    if (strlen(name) >= sizeof(rest))
        return 1;
    memcpy(rest, name, strlen(name) + 1);
    cur[0] = '\0';
    while (rest[0]) {
        char *slash = strchr(rest, '/');
        size_t len = slash ? (size_t)(slash - rest) : strlen(rest);
        const char *next = slash ? slash + 1 : rest + len;
        struct stat sb;
        ssize_t tl;

        if (len == 0 || (len == 1 && rest[0] == '.')) {
            memmove(rest, next, strlen(next) + 1);
            continue;
        }
        if (len == 2 && rest[0] == '.' && rest[1] == '.') {
            char *up;

            if (curlen == 0)
                return 1; /* above the root */
            up = strrchr(cur, '/');
            curlen = up ? (size_t)(up - cur) : 0;
            cur[curlen] = '\0';
            memmove(rest, next, strlen(next) + 1);
            continue;
        }
        if (push_component(cur, &curlen, sizeof(cur), rest, len) != 0)
            return 1;
        memmove(rest, next, strlen(next) + 1);
        if (missing)
            continue; /* past a missing name, only the text counts */
        if (fstatat(rootfd, cur, &sb, AT_SYMLINK_NOFOLLOW) != 0) {
            missing = 1;
            continue;
        }
        if (!S_ISLNK(sb.st_mode))
            continue;
        if (++hops > 40)
            return 0; /* a loop resolves nowhere, so not outside either */
        tl = readlinkat(rootfd, cur, target, sizeof(target) - 1);
        if (tl <= 0)
            return 1;
        target[tl] = '\0';
        if (target[0] == '/')
            return 1;
        /* The link's text replaces its name: walk it from its directory. */
        {
            char *up = strrchr(cur, '/');
            size_t restlen = strlen(rest);

            curlen = up ? (size_t)(up - cur) : 0;
            cur[curlen] = '\0';
            if ((size_t)tl + 1 + restlen + 1 > sizeof(rest))
                return 1;
            memmove(rest + tl + (restlen ? 1 : 0), rest, restlen + 1);
            memcpy(rest, target, (size_t)tl);
            if (restlen)
                rest[tl] = '/';
        }
    }
    return 0;
}
