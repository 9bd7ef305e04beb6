/*
 * core/tarstream.c - tar streams in and out with libarchive.
 *
 * Built as the module atp-transfer.so, loaded by libatp on first use.
 *
 * Out: the entries of a manifest are written as a pax tar stream through
 * a callback, so that a backend pipes it straight into its transport;
 * nothing is buffered beyond libarchive's block.  In: a stream read from a
 * callback is extracted with libarchive's ARCHIVE_EXTRACT_SECURE_NODOTDOT
 * plus checks of our own (names, link targets, parent directories, types,
 * limits), so that a hostile archive fails with ATP_E_TRANSFER, names the
 * entry, and writes nothing outside the target.
 */
#define _GNU_SOURCE
#include "config.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "internal.h"
#include "transfer.h"

#define COPY_CHUNK 65536

/* ---- writing ---------------------------------------------------------- */

struct wctx {
    atp__write_fn write;
    void *ctx;
    int failed_rc;
    uint64_t bytes;
};

static la_ssize_t write_cb(struct archive *a, void *data, const void *buf,
                           size_t len)
{
    struct wctx *w = data;
    int rc = w->write(w->ctx, buf, len);

    if (rc != 0) {
        w->failed_rc = rc;
        archive_set_error(a, EIO, "the receiving side stopped");
        return -1;
    }
    w->bytes += len;
    return (la_ssize_t)len;
}

static int add_filter(struct archive *a, int compression)
{
    switch (compression) {
    case ATP__COMPRESS_GZIP:
        return archive_write_add_filter_gzip(a);
    case ATP__COMPRESS_ZSTD:
        return archive_write_add_filter_zstd(a);
    default:
        return archive_write_add_filter_none(a);
    }
}

/* Stream one regular file's content; updates @me from what was read. */
static int send_file(struct archive *a, struct archive_entry *ae, int rootfd,
                     struct atp__ment *me, char *buf, atp__warn_fn warn,
                     void *warn_ctx, struct atp__tar_stats *st)
{
    XXH3_state_t hs;
    struct stat sb;
    int64_t left;
    int fd = openat(rootfd, me->path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    int changed = 0;

    if (fd < 0) {
        if (warn)
            warn(warn_ctx, me->path, errno == ENOENT ? "vanished before it "
                 "was sent" : strerror(errno));
        me->type = 0; /* not sent */
        return 0;
    }
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        if (warn)
            warn(warn_ctx, me->path, "is no longer a regular file");
        me->type = 0;
        return 0;
    }
    me->size = sb.st_size;
    me->mtime = (struct atp__time){sb.st_mtim.tv_sec, sb.st_mtim.tv_nsec};
    me->ctime = (struct atp__time){sb.st_ctim.tv_sec, sb.st_ctim.tv_nsec};
    me->mode = sb.st_mode & 07777;
    archive_entry_clear(ae);
    archive_entry_set_pathname(ae, me->path);
    archive_entry_set_filetype(ae, AE_IFREG);
    archive_entry_set_perm(ae, me->mode);
    archive_entry_set_size(ae, me->size);
    archive_entry_set_mtime(ae, sb.st_mtim.tv_sec, sb.st_mtim.tv_nsec);
    if (archive_write_header(a, ae) != ARCHIVE_OK)
        goto fail;
    XXH3_64bits_reset(&hs);
    for (left = me->size; left > 0;) {
        size_t want = left > COPY_CHUNK ? COPY_CHUNK : (size_t)left;
        ssize_t n = read(fd, buf, want);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            /* Shrank while read: pad, so the stream stays valid. */
            memset(buf, 0, want);
            n = (ssize_t)want;
            changed = 1;
        } else {
            XXH3_64bits_update(&hs, buf, (size_t)n);
        }
        if (archive_write_data(a, buf, (size_t)n) < 0)
            goto fail;
        left -= n;
        st->bytes += (uint64_t)n;
    }
    /* Grew, shrank or was rewritten while read: fstat tells (no extra
     * read at the end of every file). */
    if (!changed &&
        (fstat(fd, &sb) != 0 || sb.st_size != me->size ||
         !atp__time_eq((struct atp__time){sb.st_mtim.tv_sec,
                                          sb.st_mtim.tv_nsec},
                       me->mtime)))
        changed = 1;
    close(fd);
    if (changed) {
        if (warn)
            warn(warn_ctx, me->path, "changed while it was sent; the next "
                 "sync sends it again");
        me->has_hash = 0;
        me->mtime = ATP__TIME_NONE; /* seen as changed next time */
    } else {
        me->hash = XXH3_64bits_digest(&hs);
        me->has_hash = 1;
    }
    st->files++;
    return 0;
fail:
    close(fd);
    return -1;
}

int atp__x_tar_create(const char *root, struct atp__manifest *list,
                    int compression, atp__write_fn write, void *ctx,
                    atp__warn_fn warn, void *warn_ctx,
                    struct atp__tar_stats *st)
{
    struct archive *a = archive_write_new();
    struct archive_entry *ae = archive_entry_new();
    struct wctx w = {write, ctx, 0, 0};
    char *buf = malloc(COPY_CHUNK);
    int rootfd = -1, rc = 0;
    size_t i;

    memset(st, 0, sizeof(*st));
    if (a == NULL || ae == NULL || buf == NULL) {
        rc = atp__error(ATP_E_NOMEM, "out of memory");
        goto out;
    }
    rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0) {
        rc = atp__error(ATP_E_TRANSFER, "cannot open %s: %s", root,
                        strerror(errno));
        goto out;
    }
    archive_write_set_format_pax_restricted(a);
    archive_write_set_bytes_in_last_block(a, 1);
    if (add_filter(a, compression) != ARCHIVE_OK ||
        archive_write_open2(a, &w, NULL, write_cb, NULL, NULL) !=
            ARCHIVE_OK) {
        rc = atp__error(ATP_E_TRANSFER, "cannot start a tar stream: %s",
                        archive_error_string(a));
        goto out;
    }
    for (i = 0; i < list->n; i++) {
        struct atp__ment *me = &list->e[i];
        struct stat sb;

        if (me->type == ATP__T_FILE) {
            if (send_file(a, ae, rootfd, me, buf, warn, warn_ctx, st) != 0)
                goto write_failed;
            st->entries += me->type != 0;
            continue;
        }
        if (fstatat(rootfd, me->path, &sb, AT_SYMLINK_NOFOLLOW) != 0 ||
            (me->type == ATP__T_DIR && !S_ISDIR(sb.st_mode)) ||
            (me->type == ATP__T_LINK && !S_ISLNK(sb.st_mode))) {
            if (warn)
                warn(warn_ctx, me->path, "vanished or changed type before "
                     "it was sent");
            me->type = 0;
            continue;
        }
        archive_entry_clear(ae);
        archive_entry_set_pathname(ae, me->path);
        archive_entry_set_perm(ae, sb.st_mode & 07777);
        archive_entry_set_mtime(ae, sb.st_mtim.tv_sec, sb.st_mtim.tv_nsec);
        me->mode = sb.st_mode & 07777;
        me->mtime = (struct atp__time){sb.st_mtim.tv_sec,
                                       sb.st_mtim.tv_nsec};
        me->ctime = (struct atp__time){sb.st_ctim.tv_sec,
                                       sb.st_ctim.tv_nsec};
        if (me->type == ATP__T_DIR) {
            archive_entry_set_filetype(ae, AE_IFDIR);
        } else {
            char target[PATH_MAX];
            ssize_t n = readlinkat(rootfd, me->path, target,
                                   sizeof(target) - 1);

            if (n < 0) {
                if (warn)
                    warn(warn_ctx, me->path, "vanished before it was sent");
                me->type = 0;
                continue;
            }
            target[n] = '\0';
            archive_entry_set_filetype(ae, AE_IFLNK);
            archive_entry_set_symlink(ae, target);
            free(me->target);
            me->target = strdup(target);
        }
        if (archive_write_header(a, ae) != ARCHIVE_OK)
            goto write_failed;
        st->entries++;
    }
    if (archive_write_close(a) != ARCHIVE_OK)
        goto write_failed;
    st->stream_bytes = w.bytes;
    goto out;
write_failed:
    if (w.failed_rc == ATP_E_CANCELLED)
        rc = atp__error(ATP_E_CANCELLED, "cancelled during the transfer");
    else
        rc = atp__error(ATP_E_TRANSFER, "writing the tar stream failed: %s",
                        archive_error_string(a));
out:
    if (a)
        archive_write_free(a);
    archive_entry_free(ae);
    if (rootfd >= 0)
        close(rootfd);
    free(buf);
    return rc;
}

/* ---- reading ---------------------------------------------------------- */

struct rctx {
    atp__read_fn read;
    void *ctx;
    char buf[COPY_CHUNK];
    uint64_t bytes;
};

static la_ssize_t read_cb(struct archive *a, void *data, const void **out)
{
    struct rctx *r = data;
    long n = r->read(r->ctx, r->buf, sizeof(r->buf));

    if (n < 0) {
        archive_set_error(a, EIO, "the sending side failed");
        return -1;
    }
    r->bytes += (uint64_t)n;
    *out = r->buf;
    return n;
}

/* A small set of strings (the names extracted so far, for hardlinks). */
struct strset {
    char **slot;
    size_t cap, n;
};

static uint64_t str_hash(const char *s)
{
    return XXH3_64bits(s, strlen(s));
}

static int strset_add(struct strset *set, const char *s)
{
    size_t i;

    if ((set->n + 1) * 2 > set->cap) {
        size_t cap = set->cap ? set->cap * 2 : 1024, j;
        char **slot = calloc(cap, sizeof(*slot));

        if (slot == NULL)
            return -1;
        for (j = 0; j < set->cap; j++) {
            if (set->slot[j] == NULL)
                continue;
            for (i = str_hash(set->slot[j]) & (cap - 1); slot[i];
                 i = (i + 1) & (cap - 1))
                ;
            slot[i] = set->slot[j];
        }
        free(set->slot);
        set->slot = slot;
        set->cap = cap;
    }
    for (i = str_hash(s) & (set->cap - 1); set->slot[i];
         i = (i + 1) & (set->cap - 1))
        if (strcmp(set->slot[i], s) == 0)
            return 0;
    set->slot[i] = strdup(s);
    if (set->slot[i] == NULL)
        return -1;
    set->n++;
    return 0;
}

static int strset_has(const struct strset *set, const char *s)
{
    size_t i;

    if (set->cap == 0)
        return 0;
    for (i = str_hash(s) & (set->cap - 1); set->slot[i];
         i = (i + 1) & (set->cap - 1))
        if (strcmp(set->slot[i], s) == 0)
            return 1;
    return 0;
}

static void strset_free(struct strset *set)
{
    size_t i;

    for (i = 0; i < set->cap; i++)
        free(set->slot[i]);
    free(set->slot);
}

/* Strip "./" prefixes and trailing slashes into @out. */
static int normalize(const char *in, char *out, size_t outlen)
{
    size_t len;

    while (in[0] == '.' && in[1] == '/')
        in += 2;
    while (in[0] == '/' && in[1] == '/')
        in++;
    len = strlen(in);
    while (len > 1 && in[len - 1] == '/')
        len--;
    if (len >= outlen)
        return -1;
    memcpy(out, in, len);
    out[len] = '\0';
    return 0;
}

/*
 * Refuse to write @name when one of its parent directories under @root is
 * a symbolic link (or not a directory): writing through it could land
 * outside.  Directories found real are remembered in @dirs.
 */
static int parents_are_dirs(const char *root, const char *name,
                            struct strset *dirs, char *bad, size_t badlen)
{
    char path[PATH_MAX * 2];
    size_t rootlen = strlen(root);
    const char *p = name;

    if (rootlen + strlen(name) + 2 > sizeof(path))
        return -1;
    memcpy(path, root, rootlen);
    path[rootlen] = '/';
    while ((p = strchr(p, '/')) != NULL) {
        size_t len = (size_t)(p - name);
        struct stat sb;

        memcpy(path + rootlen + 1, name, len);
        path[rootlen + 1 + len] = '\0';
        p++;
        if (strset_has(dirs, path + rootlen + 1))
            continue;
        if (lstat(path, &sb) != 0) {
            if (errno == ENOENT)
                return 0; /* created as a directory from here on */
            snprintf(bad, badlen, "%s", path + rootlen + 1);
            return -1;
        }
        if (!S_ISDIR(sb.st_mode)) {
            snprintf(bad, badlen, "%s", path + rootlen + 1);
            return -1;
        }
        if (strset_add(dirs, path + rootlen + 1) != 0)
            return -1;
    }
    return 0;
}

static int bad_entry(const char *name, const char *why)
{
    return atp__error(ATP_E_TRANSFER, "refused archive entry '%s': %s",
                      name, why);
}

/*
 * The last word on the symbolic links an extraction wrote: each is
 * resolved through what is now on disk, links the workdir already had
 * included, and one that leads outside is removed and fails the
 * extraction.  (atp__link_refusal() keeps archive links from climbing out
 * through each other; this catches a way out through the host's own.)
 */
static int verify_links(const char *root, const struct strset *links)
{
    int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;
    size_t i;

    if (fd < 0)
        return atp__error(ATP_E_TRANSFER, "cannot open %s: %s", root,
                          strerror(errno));
    for (i = 0; i < links->cap; i++) {
        const char *name = links->slot[i];

        if (name == NULL || !atp__link_escapes(fd, name))
            continue;
        unlinkat(fd, name, 0);
        if (rc == 0)
            rc = bad_entry(name, "symbolic link resolving outside the "
                           "workdir through a link already there; it was "
                           "removed");
    }
    close(fd);
    return rc;
}

/* One extraction: the two archives, what was seen, and the entry at hand. */
struct xtract {
    struct archive *a, *w;  /* the stream read, the disk written */
    struct rctx *r;
    char *buf;
    int opened;             /* a was opened (an empty stream is not) */
    const char *const *excludes;
    const struct atp__tar_limits *lim;
    struct atp__manifest *got;
    struct atp__tar_stats *st;
    struct strset seen, dirs;
    struct strset links;    /* symbolic links written */
    char realroot[PATH_MAX];
    uid_t uid;
    gid_t gid;
    int64_t total;          /* file bytes so far, for max_bytes */
    /* The entry at hand. */
    char name[PATH_MAX];    /* relative, normalized */
    char full[PATH_MAX * 2];
    const char *link;       /* its hard link target, or NULL */
    int ft;                 /* its AE_IF* type */
};

/* Return of vet(): the entry is not written (the root, an exclude). */
#define SKIP_ENTRY 1

/* Set up both archives and open the stream; an empty one stays closed. */
static int begin(struct xtract *x, const char *root,
                 const char *const *excludes,
                 const struct atp__tar_limits *lim, atp__read_fn read,
                 void *ctx, struct atp__manifest *got,
                 struct atp__tar_stats *st)
{
    memset(x, 0, sizeof(*x));
    x->a = archive_read_new();
    x->w = archive_write_disk_new();
    x->r = malloc(sizeof(*x->r));
    x->buf = malloc(COPY_CHUNK);
    x->excludes = excludes;
    x->lim = lim;
    x->got = got;
    x->st = st;
    x->uid = getuid();
    x->gid = getgid();
    memset(st, 0, sizeof(*st));
    if (x->a == NULL || x->w == NULL || x->r == NULL || x->buf == NULL)
        return atp__error(ATP_E_NOMEM, "out of memory");
    if (realpath(root, x->realroot) == NULL)
        return atp__error(ATP_E_TRANSFER, "cannot extract into %s: %s", root,
                          strerror(errno));
    x->r->read = read;
    x->r->ctx = ctx;
    x->r->bytes = 0;
    archive_read_support_filter_all(x->a);
    archive_read_support_format_tar(x->a);
    /*
     * No ARCHIVE_EXTRACT_SECURE_SYMLINKS: it walks every component of the
     * absolute path from / (an openat, an fstatat and a close each) for
     * every entry, half the extraction's time on small files.
     * parents_are_dirs() in vet() refuses writing through a symlinked
     * parent, checking each new directory once.  No ARCHIVE_EXTRACT_UNLINK:
     * an existing file, symlink or hard link at the name is still replaced
     * (O_EXCL fails, then libarchive unlinks and creates), never opened.
     */
    archive_write_disk_set_options(
        x->w, ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM |
                  ARCHIVE_EXTRACT_SECURE_NODOTDOT);
    if (archive_read_open2(x->a, x->r, NULL, read_cb, NULL, NULL) !=
        ARCHIVE_OK) {
        /* An empty stream is an empty archive. */
        if (x->r->bytes == 0)
            return 0;
        return atp__error(ATP_E_TRANSFER, "not a tar stream: %s",
                          archive_error_string(x->a));
    }
    x->opened = 1;
    return 0;
}

/* The next entry's header into *@ae; NULL at the end of the stream. */
static int next_entry(struct xtract *x, struct archive_entry **ae)
{
    int h;

    *ae = NULL;
    if (!x->opened)
        return 0;
    h = archive_read_next_header(x->a, ae);
    if (h == ARCHIVE_EOF) {
        *ae = NULL;
        return 0;
    }
    if (h != ARCHIVE_OK && h != ARCHIVE_WARN)
        return atp__error(ATP_E_TRANSFER, "the tar stream is broken: %s",
                          archive_error_string(x->a));
    return 0;
}

/* Vet the entry's kind: hard links to names already extracted (and, when
 * to a symbolic link, staying inside from here), symbolic links staying
 * inside, no device, fifo or socket. */
static int vet_kind(struct xtract *x, struct archive_entry *ae)
{
    const char *name = x->name;

    if (x->link) {
        char tname[PATH_MAX];

        if (normalize(x->link, tname, sizeof(tname)) != 0 ||
            !atp__path_ok(tname) || !strset_has(&x->seen, tname))
            return bad_entry(name, "hard link to a file outside the "
                             "archive");
        snprintf(x->full, sizeof(x->full), "%s/%s", x->realroot, tname);
        {
            /* A hard link to a symbolic link is that link again, at
             * another place: it must stay inside from there too. */
            struct stat lsb;
            char t[PATH_MAX];
            ssize_t tl;

            if (lstat(x->full, &lsb) == 0 && S_ISLNK(lsb.st_mode)) {
                const char *why = "unreadable symbolic link";

                if ((tl = readlink(x->full, t, sizeof(t) - 1)) >= 0) {
                    t[tl] = '\0';
                    why = atp__link_refusal(name, t);
                }
                if (why)
                    return bad_entry(name, why);
                if (strset_add(&x->links, name) != 0)
                    return atp__error(ATP_E_NOMEM, "out of memory");
            }
        }
        archive_entry_set_hardlink(ae, x->full);
    } else if (x->ft == AE_IFLNK) {
        const char *t = archive_entry_symlink(ae);
        const char *why = t ? atp__link_refusal(name, t)
                            : "a symbolic link without a target";

        if (why)
            return bad_entry(name, why);
        if (strset_add(&x->links, name) != 0)
            return atp__error(ATP_E_NOMEM, "out of memory");
    } else if (x->ft != AE_IFREG && x->ft != AE_IFDIR) {
        return bad_entry(name, x->ft == AE_IFCHR || x->ft == AE_IFBLK
                                   ? "device node"
                               : x->ft == AE_IFIFO ? "fifo"
                                                   : "special file");
    }
    return 0;
}

/* Vet the entry: its name, its kind, the limits, and that nothing is
 * written through a link; 0 to write it, SKIP_ENTRY, or the refusal. */
static int vet(struct xtract *x, struct archive_entry *ae)
{
    const char *name = x->name;
    int rc;

    if (archive_entry_pathname(ae) == NULL ||
        normalize(archive_entry_pathname(ae), x->name, sizeof(x->name)) != 0)
        return bad_entry("?", "no usable name");
    if (strcmp(name, ".") == 0 || name[0] == '\0')
        return SKIP_ENTRY; /* the root itself */
    if (name[0] == '/')
        return bad_entry(name, "absolute path");
    if (!atp__path_ok(name))
        return bad_entry(name, "a '..' or empty component");
    if (atp__excluded(name, x->excludes)) {
        archive_read_data_skip(x->a);
        return SKIP_ENTRY;
    }
    if (++x->st->entries > (uint64_t)x->lim->max_entries)
        return atp__error(ATP_E_TRANSFER, "the archive has more than %lld "
                          "entries (transfer_max_entries); refused at '%s'",
                          (long long)x->lim->max_entries, name);
    x->ft = archive_entry_filetype(ae);
    x->link = archive_entry_hardlink(ae);
    if ((rc = vet_kind(x, ae)) != 0)
        return rc;
    if (x->ft == AE_IFREG && !x->link) {
        int64_t size = archive_entry_size(ae);

        if (size < 0 || size > x->lim->max_bytes - x->total)
            return atp__error(ATP_E_TRANSFER, "archive entry '%s' "
                              "(%lld bytes) exceeds the transfer limit of "
                              "%lld bytes (transfer_max_bytes)", name,
                              (long long)size,
                              (long long)x->lim->max_bytes);
        x->total += size;
    }
    {
        char bad[PATH_MAX];

        if (parents_are_dirs(x->realroot, name, &x->dirs, bad, sizeof(bad)))
            return atp__error(ATP_E_TRANSFER, "refused archive entry '%s': "
                              "it would be written through '%s', which is "
                              "not a directory", name, bad);
    }
    if (x->ft == AE_IFLNK || x->link) {
        /* A new link may replace a directory checked before (a hard
         * link may be one to a symbolic link). */
        strset_free(&x->dirs);
        memset(&x->dirs, 0, sizeof(x->dirs));
    }
    return 0;
}

/* Write the vetted entry to disk (owned by us, set-id bits dropped) and
 * its data, hashing a regular file's content into @me. */
static int write_entry(struct xtract *x, struct archive_entry *ae,
                       struct atp__ment *me)
{
    const char *name = x->name;
    XXH3_state_t hs;

    /* Modes travel; set-user-id and set-group-id bits do not. */
    archive_entry_set_perm(ae, archive_entry_perm(ae) & 01777);
    archive_entry_set_uid(ae, x->uid);
    archive_entry_set_gid(ae, x->gid);
    snprintf(x->full, sizeof(x->full), "%s/%s", x->realroot, name);
    archive_entry_set_pathname(ae, x->full);
    if (archive_write_header(x->w, ae) != ARCHIVE_OK)
        return atp__error(ATP_E_TRANSFER, "cannot extract '%s': %s", name,
                          archive_error_string(x->w));
    memset(me, 0, sizeof(*me));
    XXH3_64bits_reset(&hs);
    if (x->ft == AE_IFREG && !x->link) {
        for (;;) {
            la_ssize_t n = archive_read_data(x->a, x->buf, COPY_CHUNK);

            if (n == 0)
                break;
            if (n < 0)
                return atp__error(ATP_E_TRANSFER, "reading '%s' from the "
                                  "tar stream: %s", name,
                                  archive_error_string(x->a));
            if (archive_write_data(x->w, x->buf, (size_t)n) < 0)
                return atp__error(ATP_E_TRANSFER, "writing '%s': %s", name,
                                  archive_error_string(x->w));
            XXH3_64bits_update(&hs, x->buf, (size_t)n);
            x->st->bytes += (uint64_t)n;
        }
        x->st->files++;
        me->hash = XXH3_64bits_digest(&hs);
        me->has_hash = 1;
    }
    if (archive_write_finish_entry(x->w) != ARCHIVE_OK)
        return atp__error(ATP_E_TRANSFER, "cannot finish '%s': %s", name,
                          archive_error_string(x->w));
    return 0;
}

/* Record the written entry: among those seen (for hard links) and, with
 * a manifest to fill, as an entry with its times as written. */
static int record(struct xtract *x, struct archive_entry *ae,
                  struct atp__ment *me)
{
    int ft = x->ft;

    if (strset_add(&x->seen, x->name) != 0)
        return atp__error(ATP_E_NOMEM, "out of memory");
    if (x->got == NULL)
        return 0;
    me->path = x->name;
    me->type = ft == AE_IFDIR   ? ATP__T_DIR
               : ft == AE_IFLNK ? ATP__T_LINK
                                : ATP__T_FILE;
    me->target = ft == AE_IFLNK ? (char *)archive_entry_symlink(ae) : NULL;
    me->size = me->type == ATP__T_FILE ? archive_entry_size(ae) : 0;
    me->mtime = (struct atp__time){archive_entry_mtime(ae),
                                   archive_entry_mtime_nsec(ae)};
    me->ctime = ATP__TIME_NONE;
    if (me->type == ATP__T_FILE) {
        /* The times of the file as written, for the next scan to
         * compare with. */
        struct stat sb;

        if (fstatat(AT_FDCWD, x->full, &sb, AT_SYMLINK_NOFOLLOW) == 0) {
            me->mtime = (struct atp__time){sb.st_mtim.tv_sec,
                                           sb.st_mtim.tv_nsec};
            me->ctime = (struct atp__time){sb.st_ctim.tv_sec,
                                           sb.st_ctim.tv_nsec};
        }
    }
    me->mode = archive_entry_perm(ae) & 07777;
    if (x->link)
        me->has_hash = 0;
    if (atp__manifest_add(x->got, me) != 0)
        return atp__error(ATP_E_NOMEM, "out of memory");
    return 0;
}

/* Finish, whatever @rc: deferred directory modes and times, the last
 * check of the symbolic links written, counts, and the cleanup. */
static int finish(struct xtract *x, int rc)
{
    if (x->w) {
        /* Applies deferred directory modes and times. */
        if (archive_write_close(x->w) != ARCHIVE_OK && rc == 0)
            rc = atp__error(ATP_E_TRANSFER, "finishing the extraction: %s",
                            archive_error_string(x->w));
        archive_write_free(x->w);
    }
    if (x->links.n > 0 && x->realroot[0]) {
        int vrc = verify_links(x->realroot, &x->links);

        if (rc == 0)
            rc = vrc;
    }
    if (x->a) {
        if (x->opened)
            archive_read_close(x->a);
        archive_read_free(x->a);
    }
    if (x->r)
        x->st->stream_bytes = x->r->bytes;
    if (x->got)
        atp__manifest_sort(x->got);
    strset_free(&x->seen);
    strset_free(&x->dirs);
    strset_free(&x->links);
    free(x->r);
    free(x->buf);
    return rc;
}

int atp__x_tar_extract(const char *root, const char *const *excludes,
                     const struct atp__tar_limits *lim, atp__read_fn read,
                     void *ctx, struct atp__manifest *got,
                     struct atp__tar_stats *st)
{
    struct xtract x;
    struct archive_entry *ae;
    int rc = begin(&x, root, excludes, lim, read, ctx, got, st);

    while (rc == 0 && (rc = next_entry(&x, &ae)) == 0 && ae != NULL) {
        struct atp__ment me;
        int v = vet(&x, ae);

        if (v == SKIP_ENTRY)
            continue;
        if ((rc = v) != 0 || (rc = write_entry(&x, ae, &me)) != 0 ||
            (rc = record(&x, ae, &me)) != 0)
            break;
    }
    return finish(&x, rc);
}

/* ---- walking ------------------------------------------------------- */

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

int atp__x_manifest_scan(struct atp__manifest *m, const char *root,
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
        me.mtime = (struct atp__time){archive_entry_mtime(e),
                                      archive_entry_mtime_nsec(e)};
        me.ctime = (struct atp__time){archive_entry_ctime(e),
                                      archive_entry_ctime_nsec(e)};
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

/* ---- the module's entry point ----------------------------------------- */

/*
 * libatp loads this file on first use of a transfer (core/xfer_load.c),
 * so that programs that never transfer do not pay for libarchive and its
 * dependencies at startup.  Errors are read back with last_error().
 */
__attribute__((visibility("default"))) int
atp_transfer_module_v1(struct atp__xfer_module *m);

__attribute__((visibility("default"))) int
atp_transfer_module_v1(struct atp__xfer_module *m)
{
    if (m == NULL || m->struct_size < sizeof(*m))
        return ATP_E_ABI;
    m->manifest_scan = atp__x_manifest_scan;
    m->tar_create = atp__x_tar_create;
    m->tar_extract = atp__x_tar_extract;
    m->last_error = atp_last_error;
    return 0;
}
