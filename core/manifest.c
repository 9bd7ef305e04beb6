/*
 * core/manifest.c - what a workdir holds: path, type, size, mtime, mode,
 * symlink target and (where known) a content hash, for the host side (a
 * libarchive disk walk) and for the sandbox side (a listing command's
 * output).  Incremental sync compares these.
 */
#include "config.h"

#include <archive.h>
#include <archive_entry.h>
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

static char type_of(mode_t mode)
{
    if (S_ISREG(mode))
        return ATP__T_FILE;
    if (S_ISDIR(mode))
        return ATP__T_DIR;
    if (S_ISLNK(mode))
        return ATP__T_LINK;
    return 0;
}

int atp__manifest_scan(struct atp__manifest *m, const char *root,
                       const char *const *excludes)
{
    struct archive *d = archive_read_disk_new();
    struct archive_entry *e = archive_entry_new();
    size_t rootlen = strlen(root);
    int r, rc = 0;

    if (d == NULL || e == NULL) {
        rc = atp__error(ATP_E_NOMEM, "out of memory");
        goto out;
    }
    while (rootlen > 1 && root[rootlen - 1] == '/')
        rootlen--;
    archive_read_disk_set_symlink_physical(d);
    archive_read_disk_set_behavior(d, ARCHIVE_READDISK_NO_XATTR |
                                          ARCHIVE_READDISK_NO_ACL |
                                          ARCHIVE_READDISK_NO_FFLAGS |
                                          ARCHIVE_READDISK_NO_SPARSE);
    if (archive_read_disk_open(d, root) != ARCHIVE_OK) {
        rc = atp__error(ATP_E_TRANSFER, "cannot read %s: %s", root,
                        archive_error_string(d));
        goto out;
    }
    for (;;) {
        struct atp__ment me;
        const char *path, *rel;
        char type;

        r = archive_read_next_header2(d, e);
        if (r == ARCHIVE_EOF)
            break;
        if (r == ARCHIVE_FATAL) {
            rc = atp__error(ATP_E_TRANSFER, "cannot walk %s: %s", root,
                            archive_error_string(d));
            goto out;
        }
        if (r < ARCHIVE_WARN)
            continue; /* vanished under us: the next sync sees it */
        path = archive_entry_pathname(e);
        if (path == NULL || strncmp(path, root, rootlen) != 0)
            continue;
        rel = path + rootlen;
        while (*rel == '/')
            rel++;
        if (*rel == '\0') {
            archive_read_disk_descend(d); /* the root itself */
            continue;
        }
        if (atp__excluded(rel, excludes) || !atp__path_ok(rel))
            continue; /* not descended into either */
        type = type_of(archive_entry_filetype(e) == AE_IFDIR   ? S_IFDIR
                       : archive_entry_filetype(e) == AE_IFLNK ? S_IFLNK
                       : archive_entry_filetype(e) == AE_IFREG ? S_IFREG
                                                               : 0);
        if (type == ATP__T_DIR)
            archive_read_disk_descend(d);
        if (type == 0)
            continue; /* fifos, devices, sockets do not travel */
        memset(&me, 0, sizeof(me));
        me.path = (char *)rel;
        me.target = type == ATP__T_LINK ? (char *)archive_entry_symlink(e)
                                        : NULL;
        if (type == ATP__T_LINK && me.target == NULL)
            me.target = (char *)"";
        me.type = type;
        me.size = type == ATP__T_FILE ? archive_entry_size(e) : 0;
        me.mtime_ns = (int64_t)archive_entry_mtime(e) * 1000000000 +
                      archive_entry_mtime_nsec(e);
        me.mode = archive_entry_perm(e) & 07777;
        if (atp__manifest_add(m, &me) != 0) {
            rc = atp__error(ATP_E_NOMEM, "out of memory");
            goto out;
        }
    }
    atp__manifest_sort(m);
out:
    if (d) {
        archive_read_close(d);
        archive_read_free(d);
    }
    archive_entry_free(e);
    return rc;
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
        if (!atp__path_ok(f[1]) || atp__excluded(f[1], excludes))
            continue;
        memset(&me, 0, sizeof(me));
        me.path = (char *)f[1];
        me.type = tchar;
        me.target = tchar == ATP__T_LINK ? (char *)f[2] : NULL;
        me.size = tchar == ATP__T_FILE ? size : 0;
        {
            /* %T@ has nanosecond digits; parse them exactly. */
            const char *dot = strchr(f[0] + 2, '.');
            long long sec = (long long)mtime, ns = 0;
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
            me.mtime_ns = sec * 1000000000 + ns;
        }
        me.mode = mode & 07777;
        if (atp__manifest_add(m, &me) != 0)
            return atp__error(ATP_E_NOMEM, "out of memory");
    }
    atp__manifest_sort(m);
    return 0;
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
