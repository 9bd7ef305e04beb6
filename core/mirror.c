/*
 * core/mirror.c - make one host directory like another, incrementally.
 *
 * What the incremental sync does between the host and a sandbox, done
 * between two host directories: a batch's fresh copy of a template, and a
 * warm sandbox of a shared-filesystem backend whose directory is reset to
 * the next attempt's workdir and brought back after it.  Both trees are
 * listed (the transfer's scanner, with its excludes); an entry that is
 * the same (type, size, mtime, mode, link target) stays, one that differs
 * is replaced, one only in the destination is removed.
 *
 * The destination may have been written by a command that is done but
 * was hostile: every name is reached from a descriptor of the root one
 * component at a time, never through a symbolic link, so that a link
 * planted where the source has a directory cannot redirect a write.  A
 * source that is untrusted (a sandbox's directory coming back) has its
 * links judged as the tar extractor judges them.
 */
#define _GNU_SOURCE
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "transfer.h"

/* A directory reached without following links, kept while the next
 * entries (sorted, so siblings come together) live in it too. */
struct dircache {
    int root;
    char path[PATH_MAX]; /* relative; "" for the root */
    int fd;
};

static void dircache_drop(struct dircache *c)
{
    if (c->fd >= 0 && c->fd != c->root)
        close(c->fd);
    c->fd = -1;
    c->path[0] = '\0';
}

/*
 * The parent directory of @rel under the cache's root, and in *@base the
 * last component; -1 with errno when a component is not a directory (or
 * is a link).
 */
static int parent_of(struct dircache *c, const char *rel, const char **base)
{
    const char *slash = strrchr(rel, '/');
    size_t plen = slash ? (size_t)(slash - rel) : 0;
    const char *p, *end;
    int fd;

    *base = slash ? slash + 1 : rel;
    if (plen == 0)
        return c->root;
    if (plen >= sizeof(c->path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    if (c->fd >= 0 && strlen(c->path) == plen &&
        memcmp(c->path, rel, plen) == 0)
        return c->fd;
    dircache_drop(c);
    fd = c->root;
    for (p = rel, end = rel + plen; p < end;) {
        const char *q = memchr(p, '/', (size_t)(end - p));
        char comp[NAME_MAX + 1];
        size_t n = (q ? q : end) - p;
        int next;

        if (n == 0 || n > NAME_MAX) {
            errno = ENAMETOOLONG;
            goto fail;
        }
        memcpy(comp, p, n);
        comp[n] = '\0';
        next = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
                                    O_CLOEXEC);
        if (fd != c->root)
            close(fd);
        if (next < 0)
            return -1;
        fd = next;
        p += n + (q ? 1 : 0);
    }
    memcpy(c->path, rel, plen);
    c->path[plen] = '\0';
    c->fd = fd;
    return fd;
fail:
    if (fd != c->root)
        close(fd);
    return -1;
}

/* Remove @name in @dirfd, a whole tree when it is a directory. */
static int remove_at(int at, const char *name)
{
    struct dirent *d;
    DIR *dir;
    int fd;

    if (unlinkat(at, name, 0) == 0 || errno == ENOENT)
        return 0;
    if (errno != EISDIR && errno != EPERM)
        return -1;
    fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
                                 O_CLOEXEC);
    if (fd < 0)
        return -1;
    /* A directory without write or search permission for us. */
    fchmod(fd, 0700);
    dir = fdopendir(fd);
    if (dir == NULL) {
        close(fd);
        return -1;
    }
    while ((d = readdir(dir)) != NULL) {
        if (strcmp(d->d_name, ".") == 0 || strcmp(d->d_name, "..") == 0)
            continue;
        if (remove_at(dirfd(dir), d->d_name) != 0) {
            closedir(dir);
            return -1;
        }
    }
    closedir(dir);
    return unlinkat(at, name, AT_REMOVEDIR) == 0 || errno == ENOENT
               ? 0
               : -1;
}

void atp__remove_tree(const char *path)
{
    char parent[PATH_MAX];
    const char *slash = strrchr(path, '/');
    int fd;

    if (slash == NULL || slash[1] == '\0' ||
        (size_t)(slash - path) >= sizeof(parent))
        return;
    memcpy(parent, path, (size_t)(slash - path));
    parent[slash - path] = '\0';
    fd = open(slash == path ? "/" : parent, O_RDONLY | O_DIRECTORY |
                                               O_CLOEXEC);
    if (fd < 0)
        return;
    remove_at(fd, slash + 1);
    close(fd);
}

/* Copy @size bytes (what the scan saw: a file that grows meanwhile is
 * not chased). */
static int copy_content(int in, int out, int64_t size)
{
    int64_t left = size;

    while (left > 0) {
        ssize_t n = copy_file_range(in, NULL, out, NULL,
                                    left < (1 << 30) ? (size_t)left
                                                     : (size_t)1 << 30, 0);

        if (n == 0)
            return 0;
        if (n > 0) {
            left -= n;
            continue;
        }
        if (errno == EINTR)
            continue;
        break; /* across filesystems that cannot: read and write */
    }
    while (left > 0) {
        char buf[65536];
        ssize_t r = read(in, buf, left < (int64_t)sizeof(buf)
                                      ? (size_t)left
                                      : sizeof(buf)),
                off = 0;

        if (r == 0)
            return 0;
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        while (off < r) {
            ssize_t w = write(out, buf + off, (size_t)(r - off));

            if (w < 0) {
                if (errno == EINTR)
                    continue;
                return -1;
            }
            off += w;
        }
        left -= r;
    }
    return 0;
}

static int same(const struct atp__ment *s, const struct atp__ment *d)
{
    if (d == NULL || s->type != d->type)
        return 0;
    if (s->type == ATP__T_LINK)
        return strcmp(s->target ? s->target : "",
                      d->target ? d->target : "") == 0;
    if (s->mode != d->mode)
        return 0;
    if (s->type == ATP__T_DIR)
        return 1;
    return s->size == d->size && atp__time_eq(s->mtime, d->mtime);
}

struct mirror {
    const char *src, *dst;
    struct dircache sc, dc;
    int untrusted;
    struct atp__mirror_stats *st;
    /* Directories made or changed, for their modes at the end (a mode
     * without write permission would stop their children). */
    struct atp__manifest dirs;
};

static int fail_at(const struct mirror *m, const char *what,
                   const char *rel)
{
    return atp__error(ATP_E_TRANSFER, "cannot %s %s/%s: %s", what, m->dst,
                      rel, strerror(errno));
}

/* Make @d's entry at @e->path what @e is in the source. */
static int put(struct mirror *m, const struct atp__ment *e,
               const struct atp__ment *d)
{
    const char *sbase, *dbase;
    int sdir, ddir, in, out, rc = 0;
    struct timespec ts[2];

    if ((ddir = parent_of(&m->dc, e->path, &dbase)) < 0)
        return fail_at(m, "reach", e->path);
    if (d && (d->type != e->type || e->type == ATP__T_LINK) &&
        remove_at(ddir, dbase) != 0)
        return fail_at(m, "replace", e->path);
    ts[0].tv_sec = e->mtime.sec;
    ts[0].tv_nsec = e->mtime.nsec >= 0 ? e->mtime.nsec : 0;
    ts[1] = ts[0];
    switch (e->type) {
    case ATP__T_DIR:
        if (mkdirat(ddir, dbase, 0700) != 0 && errno != EEXIST)
            return fail_at(m, "create", e->path);
        if (atp__manifest_add(&m->dirs, e) != 0)
            return atp__error(ATP_E_NOMEM, "out of memory");
        return 0;
    case ATP__T_LINK:
        if (m->untrusted && e->target) {
            const char *why = atp__link_refusal(e->path, e->target);

            if (why)
                return atp__error(ATP_E_TRANSFER, "%s/%s -> %s: %s", m->src,
                                  e->path, e->target, why);
        }
        if (symlinkat(e->target ? e->target : "", ddir, dbase) != 0)
            return fail_at(m, "create the link", e->path);
        utimensat(ddir, dbase, ts, AT_SYMLINK_NOFOLLOW);
        m->st->files++;
        return 0;
    default:
        break;
    }
    if ((sdir = parent_of(&m->sc, e->path, &sbase)) < 0 ||
        (in = openat(sdir, sbase, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) < 0)
        return atp__error(ATP_E_TRANSFER, "cannot read %s/%s: %s", m->src,
                          e->path, strerror(errno));
    /* A new file, not a write through whatever is there (a link, or a
     * hard link to a file elsewhere). */
    if (d && d->type == ATP__T_FILE && unlinkat(ddir, dbase, 0) != 0 &&
        errno != ENOENT) {
        close(in);
        return fail_at(m, "replace", e->path);
    }
    out = openat(ddir, dbase, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
                                  O_CLOEXEC, 0600);
    if (out < 0) {
        close(in);
        return fail_at(m, "write", e->path);
    }
    if (copy_content(in, out, e->size) != 0)
        rc = fail_at(m, "write", e->path);
    fchmod(out, e->mode & 07777);
    futimens(out, ts);
    if (close(out) != 0 && rc == 0)
        rc = fail_at(m, "write", e->path);
    close(in);
    m->st->files++;
    m->st->bytes += (uint64_t)e->size;
    return rc;
}

/* @s as the baseline @b knew it: an edit whose mtime was set back still
 * moved the inode's change time. */
static int unchanged(const struct atp__ment *s, const struct atp__ment *b)
{
    if (!same(s, b))
        return 0;
    if (s->type != ATP__T_FILE || s->ctime.nsec < 0 || b->ctime.nsec < 0)
        return 1;
    return atp__time_eq(s->ctime, b->ctime);
}

static int remove_entry(struct mirror *m, const char *path)
{
    const char *base;
    int dfd = parent_of(&m->dc, path, &base);

    if (dfd < 0)
        return 0; /* its directory is gone already */
    if (remove_at(dfd, base) != 0)
        return fail_at(m, "remove", path);
    m->st->deleted++;
    return 0;
}

/* Bring into @dst what changed in @src since @B: changed and new entries
 * are copied, entries @B had and @src lost are removed, and what @dst
 * gained meanwhile is kept. */
static int mirror_since(struct mirror *m, const struct atp__manifest *S,
                        const struct atp__manifest *B,
                        const struct atp__manifest *D)
{
    size_t i = 0, j = 0;
    int rc;

    while (i < S->n || j < B->n) {
        int c = i >= S->n   ? 1
                : j >= B->n ? -1
                            : strcmp(S->e[i].path, B->e[j].path);

        if (c > 0) {
            if (atp__manifest_find(D, B->e[j].path) &&
                (rc = remove_entry(m, B->e[j].path)) != 0)
                return rc;
            j++;
            continue;
        }
        if (c < 0 || !unchanged(&S->e[i], &B->e[j])) {
            const struct atp__ment *d = atp__manifest_find(D, S->e[i].path);

            /* Changed since: copied even when size and mtime match what
             * the destination has (an edit whose mtime was set back). */
            if (!(S->e[i].type == ATP__T_DIR && same(&S->e[i], d)) &&
                (rc = put(m, &S->e[i], d)) != 0)
                return rc;
        }
        i++;
        if (c == 0)
            j++;
    }
    return 0;
}

int atp__tree_mirror(const char *src, const char *dst,
                     const char *const *excludes, int untrusted,
                     const struct atp__settings *limits,
                     const struct atp__manifest *since,
                     struct atp__manifest *after,
                     struct atp__mirror_stats *st)
{
    struct atp__manifest S = {0}, D = {0};
    struct mirror m;
    size_t i = 0, j = 0, k;
    uint64_t total = 0;
    int rc;

    memset(&m, 0, sizeof(m));
    memset(st, 0, sizeof(*st));
    m.src = src;
    m.dst = dst;
    m.untrusted = untrusted;
    m.st = st;
    m.sc.fd = m.dc.fd = -1;
    m.sc.root = open(src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    m.dc.root = open(dst, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (m.sc.root < 0 || m.dc.root < 0) {
        rc = atp__error(ATP_E_TRANSFER, "cannot open %s: %s",
                        m.sc.root < 0 ? src : dst, strerror(errno));
        goto out;
    }
    if ((rc = atp__manifest_scan(&S, src, excludes)) != 0 ||
        (rc = atp__manifest_scan(&D, dst, excludes)) != 0)
        goto out;
    if (untrusted && limits) {
        for (k = 0; k < S.n; k++)
            total += (uint64_t)S.e[k].size;
        if ((int64_t)S.n > limits->transfer_max_entries ||
            (limits->transfer_max_bytes > 0 &&
             total > (uint64_t)limits->transfer_max_bytes)) {
            rc = atp__error(ATP_E_TRANSFER, "%s has %zu entries and %llu "
                            "bytes, more than transfer_max_entries or "
                            "transfer_max_bytes allow", src, S.n,
                            (unsigned long long)total);
            goto out;
        }
    }
    if (since) {
        if ((rc = mirror_since(&m, &S, since, &D)) != 0)
            goto out;
        i = S.n;
        j = D.n;
    }
    while (i < S.n || j < D.n) {
        int c = i >= S.n   ? 1
                : j >= D.n ? -1
                           : strcmp(S.e[i].path, D.e[j].path);

        if (c > 0) {
            /* Only in the destination: gone. */
            if ((rc = remove_entry(&m, D.e[j].path)) != 0)
                goto out;
            j++;
            continue;
        }
        if (c < 0 || !same(&S.e[i], &D.e[j])) {
            if ((rc = put(&m, &S.e[i], c == 0 ? &D.e[j] : NULL)) != 0)
                goto out;
        }
        i++;
        if (c == 0)
            j++;
    }
    /* Directory modes and times last, deepest first. */
    for (k = m.dirs.n; k-- > 0;) {
        const struct atp__ment *e = &m.dirs.e[k];
        struct timespec ts[2];
        const char *base;
        int dfd = parent_of(&m.dc, e->path, &base);

        if (dfd < 0)
            continue;
        ts[0].tv_sec = e->mtime.sec;
        ts[0].tv_nsec = e->mtime.nsec >= 0 ? e->mtime.nsec : 0;
        ts[1] = ts[0];
        fchmodat(dfd, base, e->mode & 07777, 0);
        utimensat(dfd, base, ts, AT_SYMLINK_NOFOLLOW);
    }
    rc = 0;
    if (after) {
        /* What @dst now holds, as the baseline of the next pull. */
        atp__manifest_free(after);
        if (since) {
            *after = S; /* @src as it was copied */
            memset(&S, 0, sizeof(S));
        } else {
            rc = atp__manifest_scan(after, dst, excludes);
        }
    }
out:
    dircache_drop(&m.sc);
    dircache_drop(&m.dc);
    if (m.sc.root >= 0)
        close(m.sc.root);
    if (m.dc.root >= 0)
        close(m.dc.root);
    atp__manifest_free(&S);
    atp__manifest_free(&D);
    atp__manifest_free(&m.dirs);
    return rc;
}
