/*
 * core/transfer.h - the workdir transfer engine: manifests, tar streams,
 * safe extraction and incremental two-way sync.
 *
 * Internal to libatp.  Plugins reach the tar services through the host
 * table (atp/plugin.h), never through this header.
 */
#ifndef ATP_TRANSFER_H
#define ATP_TRANSFER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "atp/plugin.h"

/* ---- manifest.c ------------------------------------------------------- */

enum { ATP__T_FILE = 'f', ATP__T_DIR = 'd', ATP__T_LINK = 'l' };

/*
 * A file time as the kernel keeps it: seconds and nanoseconds, compared
 * apart (their sum in nanoseconds overflows 64 bits past 2262 and before
 * 1677).  An nsec of -1 is a time that equals no other, itself included.
 */
struct atp__time {
    int64_t sec;
    long nsec;
};

#define ATP__TIME_NONE ((struct atp__time){0, -1})

static inline int atp__time_eq(struct atp__time a, struct atp__time b)
{
    return a.nsec >= 0 && a.sec == b.sec && a.nsec == b.nsec;
}

/* What one side has at one path, relative to the workdir. */
struct atp__ment {
    char *path;       /* "a/b.lean", never "", "/..." or with ".." */
    char *target;     /* symlink target, or NULL */
    int64_t size;
    struct atp__time mtime;
    uint32_t mode;    /* permission bits, 07777 */
    char type;        /* ATP__T_* */
    uint8_t has_hash;
    uint64_t hash;    /* XXH3-64 of the content, when has_hash */
    /* The inode change time, which no tool sets back: an edit whose mtime
     * was restored still moves it.  (Host scans and the sandbox listing
     * give it; ATP__TIME_NONE where unknown.) */
    struct atp__time ctime;
    /* The agreed state also remembers the sandbox's own times. */
    struct atp__time sb_mtime, sb_ctime;
};

/* A set of entries, sorted by path (byte order) once frozen. */
struct atp__manifest {
    struct atp__ment *e;
    size_t n, cap;
};

void atp__manifest_free(struct atp__manifest *m);
/* Append a copy of @src (path and target duplicated). */
int atp__manifest_add(struct atp__manifest *m, const struct atp__ment *src);
/* Sort by path; duplicate paths keep the last one added. */
void atp__manifest_sort(struct atp__manifest *m);
/* Binary search in a sorted manifest. */
struct atp__ment *atp__manifest_find(const struct atp__manifest *m,
                                     const char *path);

/* Exclude patterns: a pattern without '/' matches any path component
 * (".lake", "*.olean"), one with '/' the path from the root ("build/x"). */
int atp__excluded(const char *path, const char *const *excludes);

/* A relative path safe to use under a root: non-empty, not absolute, no
 * "." or ".." component, no empty component, no NUL. */
int atp__path_ok(const char *path);

/*
 * Why symbolic link @target may not be created at @name (a path_ok name
 * whose parents are real directories), or NULL when it may.  Judged from
 * the text alone, so that no later entry can change the verdict: the
 * target is relative, and its ".." components all come first (a ".."
 * after a name climbs from wherever that name leads when it is itself a
 * link: with "a -> .", "u -> a/.." is the root's parent), no more of them
 * than the link is deep.
 */
const char *atp__link_refusal(const char *name, const char *target);

/*
 * Resolve @name under the directory @rootfd as the kernel would, following
 * every symbolic link on the way and at the end, and return 1 when the
 * resolution leaves the root (a ".." above it, an absolute target), else
 * 0.  Past a name that does not exist the rest is judged by its text; a
 * loop of links resolves nowhere and counts as inside.
 */
int atp__link_escapes(int rootfd, const char *name);

/*
 * (These three load the transfer module on first use.)
 *
 * Walk @root with libarchive's disk reader and list every entry (files,
 * directories, symlinks; excluded subtrees pruned).  Other types (fifos,
 * devices, sockets) are skipped.  Fails with ATP_E_TRANSFER.
 */
int atp__manifest_scan(struct atp__manifest *m, const char *root,
                       const char *const *excludes);

/* Parse the output of the sandbox listing command (see sync_plan.c). */
int atp__manifest_parse_listing(struct atp__manifest *m, const char *buf,
                                size_t len, const char *const *excludes);

/* Hash a regular file under @rootfd; 0 or ATP_E_TRANSFER. */
int atp__hash_file(int rootfd, const char *path, uint64_t *hash);

/* ---- tarstream.c ------------------------------------------------------ */

enum { ATP__COMPRESS_NONE = 0, ATP__COMPRESS_GZIP, ATP__COMPRESS_ZSTD };

typedef int (*atp__write_fn)(void *ctx, const void *buf, size_t len);
typedef long (*atp__read_fn)(void *ctx, void *buf, size_t len);
/* A note about one entry ("vanished", "changed while read"). */
typedef void (*atp__warn_fn)(void *ctx, const char *path, const char *what);

struct atp__tar_stats {
    uint64_t files;    /* regular files */
    uint64_t entries;  /* all entries */
    uint64_t bytes;    /* file content bytes */
    uint64_t stream_bytes; /* bytes of the tar stream itself */
};

struct atp__tar_limits {
    int64_t max_entries;
    int64_t max_bytes;
};

/*
 * Write a tar stream of the entries of @list (paths under @root) to
 * @write.  Directories are added as single entries (no recursion).  Each
 * sent regular file's hash is stored in its list entry; entries that
 * vanished or changed while being read are reported through @warn and
 * flagged by clearing has_hash.  Returns 0, or ATP_E_TRANSFER /
 * ATP_E_CANCELLED (from @write) with the thread's error set.
 */
int atp__tar_create(const char *root, struct atp__manifest *list,
                    int compression, atp__write_fn write, void *ctx,
                    atp__warn_fn warn, void *warn_ctx,
                    struct atp__tar_stats *st);

/*
 * Read a tar stream (any compression libarchive detects) from @read and
 * extract it under @root, safely: no absolute names, no "..", nothing
 * written through a symlink, no symlink or hardlink leading outside, no
 * device, fifo or socket, set-id bits dropped, @lim enforced, excluded
 * paths skipped.  Every entry written is added to @got (with its hash)
 * when @got is not NULL.  A hostile or broken stream fails with
 * ATP_E_TRANSFER naming the entry; nothing is written outside @root.
 */
int atp__tar_extract(const char *root, const char *const *excludes,
                     const struct atp__tar_limits *lim, atp__read_fn read,
                     void *ctx, struct atp__manifest *got,
                     struct atp__tar_stats *st);

/*
 * Remove @path (file, symlink or whole directory) under @root without
 * following any symlink.  A missing path is not an error.
 */
int atp__remove_under(const char *root, const char *path);

/* ---- the transfer module (tarstream.c, loaded by xfer_load.c) ---------- */

struct atp__xfer_module {
    size_t struct_size;
    int (*manifest_scan)(struct atp__manifest *m, const char *root,
                         const char *const *excludes);
    int (*tar_create)(const char *root, struct atp__manifest *list,
                      int compression, atp__write_fn write, void *ctx,
                      atp__warn_fn warn, void *warn_ctx,
                      struct atp__tar_stats *st);
    int (*tar_extract)(const char *root, const char *const *excludes,
                       const struct atp__tar_limits *lim, atp__read_fn read,
                       void *ctx, struct atp__manifest *got,
                       struct atp__tar_stats *st);
    const char *(*last_error)(void);
};

/* The implementations inside the module. */
int atp__x_manifest_scan(struct atp__manifest *m, const char *root,
                         const char *const *excludes);
int atp__x_tar_create(const char *root, struct atp__manifest *list,
                      int compression, atp__write_fn write, void *ctx,
                      atp__warn_fn warn, void *warn_ctx,
                      struct atp__tar_stats *st);
int atp__x_tar_extract(const char *root, const char *const *excludes,
                       const struct atp__tar_limits *lim, atp__read_fn read,
                       void *ctx, struct atp__manifest *got,
                       struct atp__tar_stats *st);

#endif /* ATP_TRANSFER_H */
