/*
 * Unit tests of the transfer engine: tar round trips, excludes, and
 * hostile archives that must fail cleanly without writing outside.
 */
#define _GNU_SOURCE
#include "config.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../core/internal.h"
#include "../../core/transfer.h"

static const char *const no_excludes[] = {NULL};
static const struct atp__tar_limits big = {500000, INT64_C(1) << 36};

/* ---- helpers ----------------------------------------------------------- */

static char scratch[PATH_MAX];

static void mkpath(char *out, const char *a, const char *b)
{
    if (snprintf(out, PATH_MAX, "%s/%s", a, b) >= PATH_MAX)
        fail_msg("path too long");
}

static void write_file(const char *dir, const char *rel, const char *text,
                       mode_t mode)
{
    char p[PATH_MAX];
    FILE *f;

    mkpath(p, dir, rel);
    f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(p, mode), 0);
}

static void set_mtime(const char *dir, const char *rel, time_t sec, long ns)
{
    char p[PATH_MAX];
    struct timespec ts[2] = {{sec, ns}, {sec, ns}};

    mkpath(p, dir, rel);
    assert_int_equal(utimensat(AT_FDCWD, p, ts, AT_SYMLINK_NOFOLLOW), 0);
}

static char *new_dir(const char *name)
{
    char *p = malloc(PATH_MAX);

    mkpath(p, scratch, name);
    assert_int_equal(mkdir(p, 0755), 0);
    return p;
}

static void rm_rf(const char *path)
{
    char cmd[PATH_MAX + 16];
    const char *argv[] = {"/bin/rm", "-rf", path, NULL};
    pid_t pid = fork();

    (void)cmd;
    if (pid == 0) {
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
}

static int setup(void **state)
{
    (void)state;
    snprintf(scratch, sizeof(scratch), "/tmp/atp-xfer-XXXXXX");
    return mkdtemp(scratch) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    rm_rf(scratch);
    return 0;
}

/* A memory buffer as the transport. */
struct mem {
    char *p;
    size_t len, cap, pos;
};

static int mem_write(void *ctx, const void *buf, size_t len)
{
    struct mem *m = ctx;

    if (m->len + len > m->cap) {
        m->cap = (m->len + len) * 2;
        m->p = realloc(m->p, m->cap);
        assert_non_null(m->p);
    }
    memcpy(m->p + m->len, buf, len);
    m->len += len;
    return 0;
}

static long mem_read(void *ctx, void *buf, size_t len)
{
    struct mem *m = ctx;
    size_t n = m->len - m->pos < len ? m->len - m->pos : len;

    memcpy(buf, m->p + m->pos, n);
    m->pos += n;
    return (long)n;
}

struct warns {
    int n;
    char last[256];
};

static void note_warn(void *ctx, const char *path, const char *what)
{
    struct warns *w = ctx;

    w->n++;
    snprintf(w->last, sizeof(w->last), "%s: %s", path, what);
}

/* Scan @src, tar it to memory, extract into @dst. */
static int copy_tree(const char *src, const char *dst,
                     const char *const *excludes, struct atp__manifest *got)
{
    struct atp__manifest m = {0};
    struct atp__tar_stats st;
    struct mem mem = {0};
    int rc;

    assert_int_equal(atp__manifest_scan(&m, src, excludes), 0);
    assert_int_equal(atp__tar_create(src, &m, ATP__COMPRESS_NONE, mem_write,
                                     &mem, NULL, NULL, &st),
                     0);
    rc = atp__tar_extract(dst, excludes, &big, mem_read, &mem, got, &st);
    atp__manifest_free(&m);
    free(mem.p);
    return rc;
}

/*
 * The oracle of every extraction: no symbolic link under @dir resolves
 * outside it, as the kernel would resolve it.
 */
static const char *oracle_root;
static int oracle_rootfd;

static int oracle_visit(const char *path, const struct stat *sb, int flag,
                        struct FTW *ftw)
{
    const char *rel = path + strlen(oracle_root);

    (void)sb;
    (void)ftw;
    while (*rel == '/')
        rel++;
    if (flag == FTW_SL && atp__link_escapes(oracle_rootfd, rel))
        fail_msg("the link %s resolves outside %s", rel, oracle_root);
    return 0;
}

static void assert_no_link_escapes(const char *dir)
{
    oracle_root = dir;
    oracle_rootfd = open(dir, O_RDONLY | O_DIRECTORY);
    assert_true(oracle_rootfd >= 0);
    assert_int_equal(nftw(dir, oracle_visit, 16, FTW_PHYS), 0);
    close(oracle_rootfd);
}

/* ---- round trips -------------------------------------------------------- */

static void round_trip_keeps_everything(void **state)
{
    char *src = new_dir("src"), *dst = new_dir("dst"), p[PATH_MAX];
    struct atp__manifest a = {0}, b = {0}, got = {0};
    size_t i;

    (void)state;
    write_file(src, "plain.txt", "hello\n", 0644);
    write_file(src, "run.sh", "#!/bin/sh\necho hi\n", 0755);
    write_file(src, "secret", "s3cret", 0600);
    mkpath(p, src, "sub");
    assert_int_equal(mkdir(p, 0750), 0);
    mkpath(p, src, "sub/deeper");
    assert_int_equal(mkdir(p, 0755), 0);
    write_file(src, "sub/deeper/Main.lean", "theorem x : 1 = 1 := rfl\n",
               0644);
    mkpath(p, src, "empty");
    assert_int_equal(mkdir(p, 0700), 0);
    mkpath(p, src, "link");
    assert_int_equal(symlink("sub/deeper/Main.lean", p), 0);
    mkpath(p, src, "sub/up");
    assert_int_equal(symlink("../plain.txt", p), 0);
    set_mtime(src, "plain.txt", 1600000000, 123456789);
    set_mtime(src, "sub/deeper/Main.lean", 1500000000, 5);

    assert_int_equal(copy_tree(src, dst, no_excludes, &got), 0);
    assert_no_link_escapes(dst);
    assert_int_equal(atp__manifest_scan(&a, src, no_excludes), 0);
    assert_int_equal(atp__manifest_scan(&b, dst, no_excludes), 0);
    assert_int_equal(a.n, b.n);
    assert_int_equal(a.n, 9);
    for (i = 0; i < a.n; i++) {
        assert_string_equal(a.e[i].path, b.e[i].path);
        assert_int_equal(a.e[i].type, b.e[i].type);
        assert_int_equal(a.e[i].mode, b.e[i].mode);
        assert_int_equal(a.e[i].size, b.e[i].size);
        /* Tar keeps whole seconds (ustar headers, as tar(1) does). */
        if (a.e[i].type != ATP__T_DIR && a.e[i].type != ATP__T_LINK)
            assert_int_equal(a.e[i].mtime.sec, b.e[i].mtime.sec);
        if (a.e[i].type == ATP__T_LINK)
            assert_string_equal(a.e[i].target, b.e[i].target);
    }
    /* Hashes of what arrived are known, so that a later compare can use
     * them. */
    assert_true(atp__manifest_find(&got, "secret")->has_hash);
    {
        int fd = open(dst, O_RDONLY | O_DIRECTORY);
        uint64_t h;

        assert_int_equal(atp__hash_file(fd, "secret", &h), 0);
        assert_int_equal(h, atp__manifest_find(&got, "secret")->hash);
        close(fd);
    }
    atp__manifest_free(&a);
    atp__manifest_free(&b);
    atp__manifest_free(&got);
    free(src);
    free(dst);
}

static void excludes_hold(void **state)
{
    const char *const ex[] = {".lake", "build/tmp", "*.olean", NULL};
    char *src = new_dir("src"), *dst = new_dir("dst"), p[PATH_MAX];
    struct atp__manifest got = {0};

    (void)state;
    mkpath(p, src, ".lake");
    assert_int_equal(mkdir(p, 0755), 0);
    write_file(src, ".lake/big", "cache", 0644);
    mkpath(p, src, "build");
    assert_int_equal(mkdir(p, 0755), 0);
    mkpath(p, src, "build/tmp");
    assert_int_equal(mkdir(p, 0755), 0);
    write_file(src, "build/tmp/x", "x", 0644);
    write_file(src, "build/keep", "k", 0644);
    write_file(src, "A.olean", "o", 0644);
    write_file(src, "A.lean", "l", 0644);
    mkpath(p, src, "sub");
    assert_int_equal(mkdir(p, 0755), 0);
    mkpath(p, src, "sub/.lake");
    assert_int_equal(mkdir(p, 0755), 0);

    assert_int_equal(copy_tree(src, dst, ex, &got), 0);
    assert_non_null(atp__manifest_find(&got, "A.lean"));
    assert_non_null(atp__manifest_find(&got, "build/keep"));
    assert_null(atp__manifest_find(&got, ".lake"));
    assert_null(atp__manifest_find(&got, ".lake/big"));
    assert_null(atp__manifest_find(&got, "build/tmp"));
    assert_null(atp__manifest_find(&got, "A.olean"));
    assert_null(atp__manifest_find(&got, "sub/.lake"));
    mkpath(p, dst, ".lake");
    assert_int_equal(access(p, F_OK), -1);
    assert_int_equal(atp__excluded("x/y/.lake/z", ex), 1);
    assert_int_equal(atp__excluded("build/tmp/deep/file", ex), 1);
    assert_int_equal(atp__excluded("other/build/tmp", ex), 0);
    atp__manifest_free(&got);
    free(src);
    free(dst);
}

static void vanished_file_is_reported_not_fatal(void **state)
{
    char *src = new_dir("src");
    struct atp__manifest m = {0};
    struct atp__tar_stats st;
    struct mem mem = {0};
    struct warns w = {0, ""};
    char p[PATH_MAX];

    (void)state;
    write_file(src, "stays", "1", 0644);
    write_file(src, "goes", "2", 0644);
    assert_int_equal(atp__manifest_scan(&m, src, no_excludes), 0);
    mkpath(p, src, "goes");
    assert_int_equal(unlink(p), 0); /* gone between walk and send */
    assert_int_equal(atp__tar_create(src, &m, ATP__COMPRESS_NONE, mem_write,
                                     &mem, note_warn, &w, &st),
                     0);
    assert_int_equal(w.n, 1);
    assert_non_null(strstr(w.last, "goes: vanished"));
    assert_int_equal(st.files, 1);
    atp__manifest_free(&m);
    free(mem.p);
    free(src);
}

static void compression_round_trips(void **state)
{
    static const int kinds[] = {ATP__COMPRESS_GZIP, ATP__COMPRESS_ZSTD};
    char *src = new_dir("src"), text[8192];
    size_t k;

    (void)state;
    memset(text, 'a', sizeof(text) - 1);
    text[sizeof(text) - 1] = '\0';
    write_file(src, "a", text, 0644);
    for (k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
        char name[16], *dst;
        struct atp__manifest m = {0}, got = {0};
        struct atp__tar_stats st, st2;
        struct mem mem = {0};

        snprintf(name, sizeof(name), "dst%zu", k);
        dst = new_dir(name);
        assert_int_equal(atp__manifest_scan(&m, src, no_excludes), 0);
        if (atp__tar_create(src, &m, kinds[k], mem_write, &mem, NULL, NULL,
                            &st) != 0)
            fail_msg("compression %d: %s", kinds[k], atp_last_error());
        assert_true(mem.len < 1024); /* 8 KiB of 'a' compresses */
        /* The reader detects the compression by itself. */
        assert_int_equal(atp__tar_extract(dst, no_excludes, &big, mem_read,
                                          &mem, &got, &st2),
                         0);
        assert_int_equal(st2.bytes, sizeof(text) - 1);
        atp__manifest_free(&m);
        atp__manifest_free(&got);
        free(mem.p);
        free(dst);
    }
    free(src);
}

/* ---- hostile archives --------------------------------------------------- */

/* Build an archive in memory from a list of entry descriptions. */
struct fake {
    const char *name;
    int type;            /* AE_IF* */
    const char *link;    /* symlink target or hardlink name */
    int hard;
    const char *data;
    int64_t size;        /* -1: strlen(data) */
    mode_t perm;
};

static void build(struct mem *m, const struct fake *f, size_t n)
{
    struct archive *a = archive_write_new();
    struct archive_entry *e = archive_entry_new();
    size_t used = 0, i;

    m->cap = 1 << 20;
    m->p = malloc(m->cap);
    archive_write_set_format_pax_restricted(a);
    archive_write_open_memory(a, m->p, m->cap, &used);
    for (i = 0; i < n; i++) {
        archive_entry_clear(e);
        archive_entry_set_pathname(e, f[i].name);
        archive_entry_set_filetype(e, (unsigned)f[i].type);
        archive_entry_set_perm(e, f[i].perm ? f[i].perm : 0644);
        if (f[i].hard)
            archive_entry_set_hardlink(e, f[i].link);
        else if (f[i].link)
            archive_entry_set_symlink(e, f[i].link);
        if (f[i].type == AE_IFREG && !f[i].hard)
            archive_entry_set_size(e, f[i].size >= 0
                                          ? f[i].size
                                          : (int64_t)strlen(f[i].data));
        if (f[i].type == AE_IFCHR)
            archive_entry_set_rdev(e, makedev(1, 3));
        assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
        if (f[i].data)
            archive_write_data(a, f[i].data, strlen(f[i].data));
    }
    archive_write_close(a);
    archive_write_free(a);
    archive_entry_free(e);
    m->len = used;
    m->pos = 0;
}

/* A tree whose snapshot must not change. */
static char *outside_snapshot(const char *dir)
{
    char *buf = calloc(1, 65536);
    size_t len = 0;
    DIR *d = opendir(dir);
    struct dirent *de;

    while (d && (de = readdir(d)) != NULL)
        len += (size_t)snprintf(buf + len, 65536 - len, "%s;", de->d_name);
    if (d)
        closedir(d);
    return buf;
}

static void expect_refused(const struct fake *f, size_t n, const char *want)
{
    char *dst = new_dir("target"), *before, *after;
    struct atp__tar_stats st;
    struct mem m = {0};
    int rc;

    before = outside_snapshot(scratch);
    build(&m, f, n);
    rc = atp__tar_extract(dst, no_excludes, &big, mem_read, &m, NULL, &st);
    if (rc != ATP_E_TRANSFER)
        fail_msg("expected a refusal for '%s', got %d", want, rc);
    if (strstr(atp_last_error(), want) == NULL)
        fail_msg("message '%s' lacks '%s'", atp_last_error(), want);
    after = outside_snapshot(scratch);
    assert_string_equal(before, after); /* nothing new beside the target */
    assert_null(strstr(after, "escaped"));
    assert_no_link_escapes(dst);
    rm_rf(dst);
    free(m.p);
    free(before);
    free(after);
    free(dst);
}

static void absolute_path_refused(void **state)
{
    char name[PATH_MAX];
    const struct fake f[] = {{name, AE_IFREG, NULL, 0, "x", -1, 0}};

    (void)state;
    mkpath(name, scratch, "escaped");
    expect_refused(f, 1, "absolute path");
    assert_int_equal(access(name, F_OK), -1);
}

static void dotdot_refused(void **state)
{
    const struct fake f[] = {
        {"ok.txt", AE_IFREG, NULL, 0, "fine", -1, 0},
        {"../escaped", AE_IFREG, NULL, 0, "x", -1, 0},
    };

    (void)state;
    /* atp's own reason, not only libarchive's refusal of '..'. */
    expect_refused(f, 2, "'../escaped': a '..' or empty component");
}

/*
 * Names libarchive itself would extract ("sub/./x", "sub//x", "sub/x/."
 * clean up to sub/x) are refused by atp's own check: a manifest keyed by
 * such a name would not match the file, and the agreed state would break.
 */
static void unclean_names_refused(void **state)
{
    static const char *const names[] = {"sub/./x", "sub//x", "./sub/../x",
                                        "sub/x/."};
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        const struct fake f[] = {
            {"sub", AE_IFDIR, NULL, 0, NULL, 0, 0755},
            {names[i], AE_IFREG, NULL, 0, "x", -1, 0},
        };
        char want[64];

        snprintf(want, sizeof(want), "a '..' or empty component");
        expect_refused(f, 2, want);
    }
}

static void symlink_then_file_through_it_refused(void **state)
{
    const struct fake f1[] = {
        {"a", AE_IFLNK, "..", 0, NULL, 0, 0777},
        {"a/escaped", AE_IFREG, NULL, 0, "x", -1, 0},
    };
    const struct fake f2[] = {
        {"b", AE_IFLNK, ".", 0, NULL, 0, 0777},
        {"b/inside", AE_IFREG, NULL, 0, "x", -1, 0},
    };
    char abs[PATH_MAX + 8];
    const struct fake f3[] = {{"c", AE_IFLNK, abs, 0, NULL, 0, 0777}};

    (void)state;
    expect_refused(f1, 2, "'a': symbolic link leading outside");
    /* A link that stays inside is fine, but nothing is written through
     * it. */
    expect_refused(f2, 2, "b/inside");
    snprintf(abs, sizeof(abs), "%s", scratch);
    expect_refused(f3, 1, "'c': symbolic link leading outside");
}

static void hardlink_to_outside_refused(void **state)
{
    const struct fake f1[] = {{"h", AE_IFREG, "../../etc/passwd", 1, NULL, 0,
                               0}};
    const struct fake f2[] = {{"h", AE_IFREG, "/etc/passwd", 1, NULL, 0, 0}};
    const struct fake f3[] = {{"h", AE_IFREG, "not-in-archive", 1, NULL, 0,
                               0}};

    (void)state;
    expect_refused(f1, 1, "hard link");
    expect_refused(f2, 1, "hard link");
    expect_refused(f3, 1, "hard link");
}

/* A hard link to a symbolic link is a symbolic link at another place. */
static void hardlink_to_symlink_checked_from_its_place(void **state)
{
    const struct fake f[] = {
        {"d", AE_IFDIR, NULL, 0, NULL, 0, 0755},
        {"d/l", AE_IFLNK, "../x", 0, NULL, 0, 0777}, /* inside, from d/ */
        {"l2", AE_IFREG, "d/l", 1, NULL, 0, 0},      /* outside, from / */
        {"l2/escaped", AE_IFREG, NULL, 0, "x", -1, 0},
    };

    (void)state;
    expect_refused(f, 4, "'l2': symbolic link leading outside");
}

static char *slurp(const char *path);

/*
 * Links that each stay inside by their text, but climb out through one
 * another once on disk: "a -> ." makes "a/.." the root's parent.
 */
static void chain_of_links_refused(void **state)
{
    const struct fake chain[] = {
        {"a", AE_IFLNK, ".", 0, NULL, 0, 0777},
        {"u0", AE_IFLNK, "a/..", 0, NULL, 0, 0777},
        {"u1", AE_IFLNK, "u0/..", 0, NULL, 0, 0777},
        {"pw", AE_IFLNK, "u1/etc/passwd", 0, NULL, 0, 0777},
    };
    /* The order cannot help: the name is a directory when the link is
     * written, and a link later. */
    const struct fake reorder[] = {
        {"d", AE_IFDIR, NULL, 0, NULL, 0, 0755},
        {"x", AE_IFLNK, "d/../../etc/passwd", 0, NULL, 0, 0777},
    };
    const struct fake later[] = {
        {"x", AE_IFLNK, "m/../y", 0, NULL, 0, 0777},
        {"m", AE_IFLNK, ".", 0, NULL, 0, 0777},
    };

    (void)state;
    expect_refused(chain, 4, "'u0': symbolic link with a '..' after a name");
    expect_refused(reorder, 2, "'x': symbolic link with a '..' after a name");
    expect_refused(later, 2, "'x': symbolic link with a '..' after a name");
}

/* Links that climb only as far as they are deep, then descend, are what
 * real trees hold: they extract, and resolve where they say. */
static void relative_links_that_stay_inside_extract(void **state)
{
    const struct fake f[] = {
        {"lib", AE_IFDIR, NULL, 0, NULL, 0, 0755},
        {"lib/x", AE_IFREG, NULL, 0, "x", -1, 0},
        {"a", AE_IFDIR, NULL, 0, NULL, 0, 0755},
        {"a/b", AE_IFDIR, NULL, 0, NULL, 0, 0755},
        {"a/b/up", AE_IFLNK, "../../lib/x", 0, NULL, 0, 0777},
        {"a/b/here", AE_IFLNK, "./../b/../../lib", 0, NULL, 0, 0777},
        {"cur", AE_IFLNK, ".", 0, NULL, 0, 0777},
        {"via", AE_IFLNK, "cur/cur/lib/x", 0, NULL, 0, 0777},
        {"dangling", AE_IFLNK, "not/yet/built", 0, NULL, 0, 0777},
    };
    char *dst = new_dir("target"), p[PATH_MAX];
    struct atp__tar_stats st;
    struct mem m = {0};

    (void)state;
    build(&m, f, 7);
    /* "a/b/here" has a '..' after "b": refused like any such target. */
    assert_int_equal(atp__tar_extract(dst, no_excludes, &big, mem_read, &m,
                                      NULL, &st),
                     ATP_E_TRANSFER);
    assert_non_null(strstr(atp_last_error(), "'a/b/here'"));
    free(m.p);
    rm_rf(dst);
    free(dst);

    dst = new_dir("target");
    memset(&m, 0, sizeof(m));
    {
        struct fake g[8];

        memcpy(g, f, 5 * sizeof(*f));
        memcpy(g + 5, f + 6, 3 * sizeof(*f));
        build(&m, g, 8);
    }
    if (atp__tar_extract(dst, no_excludes, &big, mem_read, &m, NULL, &st))
        fail_msg("%s", atp_last_error());
    mkpath(p, dst, "a/b/up");
    assert_string_equal(slurp(p), "x");
    mkpath(p, dst, "via");
    assert_string_equal(slurp(p), "x");
    assert_no_link_escapes(dst);
    free(m.p);
    free(dst);
}

/* A way out through a link the workdir already had (the host's own,
 * which may lead anywhere) is found on disk after the extraction. */
static void way_out_through_a_host_link_refused(void **state)
{
    const struct fake f[] = {
        {"pw", AE_IFLNK, "up/etc/passwd", 0, NULL, 0, 0777},
        {"ok", AE_IFREG, NULL, 0, "fine", -1, 0},
    };
    char *dst = new_dir("target"), p[PATH_MAX];
    struct atp__tar_stats st;
    struct mem m = {0};
    struct stat sb;

    (void)state;
    mkpath(p, dst, "up");
    assert_int_equal(symlink("/", p), 0);
    build(&m, f, 2);
    assert_int_equal(atp__tar_extract(dst, no_excludes, &big, mem_read, &m,
                                      NULL, &st),
                     ATP_E_TRANSFER);
    assert_non_null(strstr(atp_last_error(), "'pw': symbolic link "
                                             "resolving outside"));
    mkpath(p, dst, "pw");
    assert_int_equal(lstat(p, &sb), -1); /* removed */
    mkpath(p, dst, "up");
    assert_int_equal(unlink(p), 0); /* the host's own is not ours to judge */
    assert_no_link_escapes(dst);
    free(m.p);
    free(dst);
}

static char *slurp(const char *path)
{
    static char buf[256];
    FILE *f = fopen(path, "r");
    size_t n;

    if (f == NULL)
        return NULL;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* What is already in the target at a name is replaced, never written
 * through; a symlinked directory on disk is never entered. */
static void existing_links_replaced_not_followed(void **state)
{
    const struct fake f[] = {
        {"f", AE_IFREG, NULL, 0, "new-f", -1, 0},
        {"g", AE_IFREG, NULL, 0, "new-g", -1, 0},
    };
    const struct fake through[] = {{"sub/escaped", AE_IFREG, NULL, 0, "x", -1,
                                    0}};
    char *dst = new_dir("target"), *out = new_dir("out"), p[PATH_MAX],
         q[PATH_MAX];
    struct atp__tar_stats st;
    struct mem m = {0};
    struct stat sb;

    (void)state;
    write_file(scratch, "victim-f", "orig-f", 0644);
    write_file(scratch, "victim-g", "orig-g", 0644);
    mkpath(p, dst, "f");
    mkpath(q, scratch, "victim-f");
    assert_int_equal(symlink(q, p), 0);
    mkpath(p, dst, "g");
    mkpath(q, scratch, "victim-g");
    assert_int_equal(link(q, p), 0);
    mkpath(p, dst, "sub");
    assert_int_equal(symlink(out, p), 0);

    build(&m, f, 2);
    assert_int_equal(atp__tar_extract(dst, no_excludes, &big, mem_read, &m,
                                      NULL, &st),
                     0);
    mkpath(q, scratch, "victim-f");
    assert_string_equal(slurp(q), "orig-f");
    mkpath(q, scratch, "victim-g");
    assert_string_equal(slurp(q), "orig-g");
    mkpath(p, dst, "f");
    assert_int_equal(lstat(p, &sb), 0);
    assert_true(S_ISREG(sb.st_mode));
    assert_string_equal(slurp(p), "new-f");
    mkpath(p, dst, "g");
    assert_int_equal(lstat(p, &sb), 0);
    assert_int_equal(sb.st_nlink, 1);
    assert_string_equal(slurp(p), "new-g");
    free(m.p);

    memset(&m, 0, sizeof(m));
    build(&m, through, 1);
    assert_int_equal(atp__tar_extract(dst, no_excludes, &big, mem_read, &m,
                                      NULL, &st),
                     ATP_E_TRANSFER);
    assert_non_null(strstr(atp_last_error(), "written through 'sub'"));
    mkpath(q, out, "escaped");
    assert_int_equal(lstat(q, &sb), -1);
    free(m.p);
    free(dst);
    free(out);
}

static void device_node_refused(void **state)
{
    const struct fake f[] = {{"null", AE_IFCHR, NULL, 0, NULL, 0, 0666}};
    const struct fake g[] = {{"pipe", AE_IFIFO, NULL, 0, NULL, 0, 0666}};

    (void)state;
    expect_refused(f, 1, "device node");
    expect_refused(g, 1, "fifo");
}

static void setuid_bit_dropped(void **state)
{
    const struct fake f[] = {
        {"suid", AE_IFREG, NULL, 0, "#!/bin/sh\n", -1, 06755},
        {"hard", AE_IFREG, "suid", 1, NULL, 0, 06755},
    };
    char *dst = new_dir("target"), p[PATH_MAX];
    struct atp__tar_stats st;
    struct mem m = {0};
    struct stat sb;

    (void)state;
    build(&m, f, 2);
    assert_int_equal(atp__tar_extract(dst, no_excludes, &big, mem_read, &m,
                                      NULL, &st),
                     0);
    mkpath(p, dst, "suid");
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0755);
    mkpath(p, dst, "hard");
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0755);
    free(m.p);
    free(dst);
}

/* A stream of @n empty files, generated as it is read (never in memory). */
struct many {
    uint64_t n, i;
    char block[512 * 2];
    size_t have, pos;
    int ended;
};

static void ustar_header(char *h, const char *name, const char *size_octal)
{
    unsigned sum = 0;
    size_t i;

    memset(h, 0, 512);
    snprintf(h, 100, "%s", name);
    memcpy(h + 100, "0000644", 8);
    memcpy(h + 108, "0000000", 8);
    memcpy(h + 116, "0000000", 8);
    memcpy(h + 124, size_octal, 12);
    memcpy(h + 136, "00000000000", 12);
    h[156] = '0';
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    memset(h + 148, ' ', 8);
    for (i = 0; i < 512; i++)
        sum += (unsigned char)h[i];
    snprintf(h + 148, 8, "%06o", sum);
}

static long many_read(void *ctx, void *buf, size_t len)
{
    struct many *m = ctx;

    if (m->pos == m->have) {
        if (m->i < m->n) {
            char name[32];

            snprintf(name, sizeof(name), "f%llu", (unsigned long long)m->i++);
            ustar_header(m->block, name, "00000000000");
            m->have = 512;
        } else if (!m->ended) {
            memset(m->block, 0, sizeof(m->block));
            m->have = sizeof(m->block);
            m->ended = 1;
        } else {
            return 0;
        }
        m->pos = 0;
    }
    if (len > m->have - m->pos)
        len = m->have - m->pos;
    memcpy(buf, m->block + m->pos, len);
    m->pos += len;
    return (long)len;
}

static void a_million_empty_entries_refused(void **state)
{
    struct many *m = calloc(1, sizeof(*m));
    char *dst = new_dir("target");
    struct atp__tar_stats st;
    DIR *d;
    size_t count = 0;

    (void)state;
    m->n = 1000000;
    /* Default limit: transfer_max_entries = 500000. */
    assert_int_equal(atp__tar_extract(dst, no_excludes, &big, many_read, m,
                                      NULL, &st),
                     ATP_E_TRANSFER);
    assert_non_null(strstr(atp_last_error(), "more than 500000 entries"));
    d = opendir(dst);
    while (readdir(d))
        count++;
    closedir(d);
    assert_int_equal(count, 500000 + 2); /* stopped at the limit */
    rm_rf(dst);
    free(m);
    free(dst);
}

static void huge_size_refused_before_writing(void **state)
{
    char *dst = new_dir("target"), p[PATH_MAX];
    char stream[512 * 3];
    struct mem m = {stream, sizeof(stream), sizeof(stream), 0};
    struct atp__tar_stats st;

    (void)state;
    /* 1 TiB claimed (GNU base-256 size field), no data behind it. */
    ustar_header(stream, "sparse-huge", "00000000000");
    memset(stream + 124, 0, 12);
    stream[124] = (char)0x80;
    stream[124 + 6] = 0x01; /* 2^40 */
    {
        unsigned sum = 0;
        size_t i;

        memset(stream + 148, ' ', 8);
        for (i = 0; i < 512; i++)
            sum += (unsigned char)stream[i];
        snprintf(stream + 148, 8, "%06o", sum);
    }
    memset(stream + 512, 0, 1024);
    assert_int_equal(atp__tar_extract(dst, no_excludes, &big, mem_read, &m,
                                      NULL, &st),
                     ATP_E_TRANSFER);
    assert_non_null(strstr(atp_last_error(), "'sparse-huge'"));
    assert_non_null(strstr(atp_last_error(), "transfer_max_bytes"));
    mkpath(p, dst, "sparse-huge");
    assert_int_equal(access(p, F_OK), -1);
    free(dst);
}

static void garbage_is_not_a_tar_stream(void **state)
{
    char *dst = new_dir("target");
    char junk[4096];
    struct mem m = {junk, sizeof(junk), sizeof(junk), 0};
    struct atp__tar_stats st;

    (void)state;
    memset(junk, 'z', sizeof(junk));
    assert_int_equal(atp__tar_extract(dst, no_excludes, &big, mem_read, &m,
                                      NULL, &st),
                     ATP_E_TRANSFER);
    free(dst);
}

static void remove_under_never_follows_symlinks(void **state)
{
    char *root = new_dir("root"), *outside = new_dir("outside");
    char p[PATH_MAX];

    (void)state;
    write_file(outside, "precious", "keep me", 0644);
    mkpath(p, root, "dir");
    assert_int_equal(symlink(outside, p), 0);
    /* "dir/precious" goes through a symlink: left alone. */
    assert_int_equal(atp__remove_under(root, "dir/precious"), 0);
    mkpath(p, outside, "precious");
    assert_int_equal(access(p, F_OK), 0);
    /* Removing the link removes the link, not its target. */
    assert_int_equal(atp__remove_under(root, "dir"), 0);
    assert_int_equal(access(p, F_OK), 0);
    mkpath(p, root, "dir");
    assert_int_equal(access(p, F_OK), -1);
    assert_int_equal(atp__remove_under(root, "../outside"), ATP_E_TRANSFER);
    free(root);
    free(outside);
}

static void listing_parse(void **state)
{
    static const char listing[] =
        "f 5 1700000000.1234567890 1700000002.0000000010 644\0a/b.lean\0\0"
        "d 4096 1700000000.0000000000 1.0 755\0a\0\0"
        "l 3 1700000001.5 1.0 777\0ln\0a/b.lean\0"
        "f 1 1.0 1.0 644\0../evil\0\0"
        "p 0 1.0 1.0 644\0fifo\0\0"
        "f 1 1.0 1.0 644\0.lake/x\0\0";
    const char *const ex[] = {".lake", NULL};
    struct atp__manifest m = {0};

    (void)state;
    assert_int_equal(atp__manifest_parse_listing(&m, listing,
                                                 sizeof(listing) - 1, ex),
                     0);
    assert_int_equal(m.n, 3);
    assert_string_equal(m.e[0].path, "a");
    assert_string_equal(m.e[1].path, "a/b.lean");
    assert_int_equal(m.e[1].mtime.sec, 1700000000);
    assert_int_equal(m.e[1].mtime.nsec, 123456789);
    assert_int_equal(m.e[1].ctime.sec, 1700000002);
    assert_int_equal(m.e[1].ctime.nsec, 1);
    assert_int_equal(m.e[1].size, 5);
    assert_int_equal(m.e[1].mode, 0644);
    assert_string_equal(m.e[2].target, "a/b.lean");
    assert_int_equal(m.e[2].mtime.sec, 1700000001);
    assert_int_equal(m.e[2].mtime.nsec, 500000000);
    atp__manifest_free(&m);
    assert_int_equal(atp__manifest_parse_listing(&m, "f 1 1.0 1.0 644\0x",
                                                 17, ex),
                     ATP_E_TRANSFER);
    atp__manifest_free(&m);
    /* A listing without the ctime is malformed. */
    assert_int_equal(atp__manifest_parse_listing(&m, "f 1 1.0 644\0x\0\0",
                                                 15, ex),
                     ATP_E_TRANSFER);
    atp__manifest_free(&m);
}

/*
 * File times past 2262 and before 1970 are kept exactly (seconds and
 * nanoseconds apart: in nanoseconds alone they overflow 64 bits), so a
 * change among them is seen.
 */
static void far_dates_compare_exactly(void **state)
{
    /* find prints the seconds and the nanoseconds apart: "-2.25..." is
     * 1969-12-31 23:59:58.25. */
    static const char listing[] =
        "f 5 10413792000.7500000000 1.0 644\0y2300\0\0"
        "f 5 -2.2500000000 1.0 644\0y1969\0\0"
        "f 5 0.0000000000 1.0 644\0epoch\0\0"
        /* 2^64 ns after the epoch: the same as the epoch in 64-bit
         * nanoseconds that wrap. */
        "f 5 18446744073.7095516160 1.0 644\0y2554\0\0";
    static const char *const bad[] = {
        "f 1 99999999999999999999.0 1.0 644", "f 1 1e30 1.0 644",
        "f 1 -99999999999999999999.5 1.0 644",
        "f 99999999999999999999 1.0 1.0 644",
        "f 1 1.0 99999999999999999999.0 644",
    };
    char *src = new_dir("src"), *dst = new_dir("dst"), lst[128];
    struct atp__manifest m = {0}, a = {0}, got = {0};
    struct atp__ment *e;
    size_t i;

    (void)state;
    assert_int_equal(atp__manifest_parse_listing(&m, listing,
                                                 sizeof(listing) - 1,
                                                 no_excludes),
                     0);
    e = atp__manifest_find(&m, "y2300");
    assert_int_equal(e->mtime.sec, INT64_C(10413792000));
    assert_int_equal(e->mtime.nsec, 750000000);
    e = atp__manifest_find(&m, "y1969");
    assert_int_equal(e->mtime.sec, -2);
    assert_int_equal(e->mtime.nsec, 250000000);
    assert_false(atp__time_eq(atp__manifest_find(&m, "epoch")->mtime,
                              atp__manifest_find(&m, "y2554")->mtime));
    assert_false(atp__time_eq(atp__manifest_find(&m, "y2300")->mtime,
                              atp__manifest_find(&m, "y2554")->mtime));
    atp__manifest_free(&m);
    /* Times no file can have are a malformed listing, not a guess. */
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        size_t n = (size_t)snprintf(lst, sizeof(lst), "%s%cx%c%c", bad[i],
                                    0, 0, 0);

        assert_int_equal(atp__manifest_parse_listing(&m, lst, n,
                                                     no_excludes),
                         ATP_E_TRANSFER);
        atp__manifest_free(&m);
    }

    /* Host files: scanned, sent and extracted with their dates. */
    write_file(src, "y2300", "later", 0644);
    write_file(src, "y1969", "early", 0644);
    set_mtime(src, "y2300", (time_t)INT64_C(10413792000), 750000000);
    set_mtime(src, "y1969", -2, 250000000);
    assert_int_equal(atp__manifest_scan(&a, src, no_excludes), 0);
    e = atp__manifest_find(&a, "y2300");
    assert_int_equal(e->mtime.sec, INT64_C(10413792000));
    assert_int_equal(e->mtime.nsec, 750000000);
    e = atp__manifest_find(&a, "y1969");
    assert_int_equal(e->mtime.sec, -2);
    assert_int_equal(e->mtime.nsec, 250000000);
    assert_int_equal(copy_tree(src, dst, no_excludes, &got), 0);
    assert_int_equal(atp__manifest_find(&got, "y2300")->mtime.sec,
                     INT64_C(10413792000));
    assert_int_equal(atp__manifest_find(&got, "y1969")->mtime.sec, -2);
    {
        struct stat sb;
        char p[PATH_MAX];

        mkpath(p, dst, "y2300");
        assert_int_equal(stat(p, &sb), 0);
        assert_int_equal(sb.st_mtim.tv_sec, INT64_C(10413792000));
        mkpath(p, dst, "y1969");
        assert_int_equal(stat(p, &sb), 0);
        assert_true(sb.st_mtim.tv_sec == -2 || sb.st_mtim.tv_sec == -1);
    }
    atp__manifest_free(&a);
    atp__manifest_free(&got);
    free(src);
    free(dst);
}

/* ---- mirroring (warm sandboxes of shared-filesystem backends) ------------ */

static const struct atp__settings *mirror_limits(void)
{
    static struct atp__settings set;

    set.transfer_max_entries = 1000;
    set.transfer_max_bytes = 1 << 20;
    return &set;
}

/* Without a baseline the destination becomes the source exactly: stale
 * entries go, links are recreated, content and modes follow. */
static void mirror_makes_dst_like_src(void **state)
{
    char *src = new_dir("src"), *dst = new_dir("dst"), p[PATH_MAX],
         t[PATH_MAX];
    struct atp__mirror_stats st;
    struct stat sb;
    ssize_t n;

    (void)state;
    write_file(src, "f", "new", 0750);
    mkpath(p, src, "sub");
    assert_int_equal(mkdir(p, 0755), 0);
    write_file(src, "sub/deep", "deep", 0644);
    mkpath(p, src, "ln");
    assert_int_equal(symlink("sub/deep", p), 0);
    write_file(dst, "f", "old content", 0644);
    write_file(dst, "stale", "x", 0644);
    assert_int_equal(atp__tree_mirror(src, dst, no_excludes, 0, NULL, NULL,
                                      NULL, &st),
                     0);
    mkpath(p, dst, "f");
    assert_string_equal(slurp(p), "new");
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0750);
    mkpath(p, dst, "sub/deep");
    assert_string_equal(slurp(p), "deep");
    mkpath(p, dst, "stale");
    assert_int_equal(access(p, F_OK), -1);
    mkpath(p, dst, "ln");
    n = readlink(p, t, sizeof(t) - 1);
    assert_true(n > 0);
    t[n] = '\0';
    assert_string_equal(t, "sub/deep");
    assert_int_equal(st.deleted, 1);
    free(src);
    free(dst);
}

/* A file of the destination that is a link is replaced, never written
 * through. */
static void mirror_never_writes_through_a_link(void **state)
{
    char *src = new_dir("src"), *dst = new_dir("dst"), *out = new_dir("out"),
         p[PATH_MAX], q[PATH_MAX];
    struct atp__mirror_stats st;
    struct stat sb;

    (void)state;
    write_file(out, "victim", "safe", 0644);
    write_file(src, "f", "from-src", 0644);
    mkpath(p, dst, "f");
    mkpath(q, out, "victim");
    assert_int_equal(symlink(q, p), 0);
    assert_int_equal(atp__tree_mirror(src, dst, no_excludes, 0, NULL, NULL,
                                      NULL, &st),
                     0);
    assert_string_equal(slurp(q), "safe");
    assert_int_equal(lstat(p, &sb), 0);
    assert_true(S_ISREG(sb.st_mode));
    free(src);
    free(dst);
    free(out);
}

/* From a baseline: what the source changed comes over (new, edited,
 * removed, an edit whose mtime was set back too), what the destination
 * changed meanwhile stays. */
static void mirror_since_brings_only_changes(void **state)
{
    char *host = new_dir("host"), *box = new_dir("box"), p[PATH_MAX];
    struct atp__manifest base = {0};
    struct atp__mirror_stats st;
    struct stat sb;
    struct timespec ts[2];

    (void)state;
    write_file(host, "h.txt", "1\n", 0644);
    write_file(host, "k.txt", "keep?", 0644);
    write_file(host, "same", "aaaa", 0644);
    assert_int_equal(atp__tree_mirror(host, box, no_excludes, 0, NULL, NULL,
                                      &base, &st),
                     0);
    assert_true(base.n >= 3);
    /* The command, in the sandbox's directory. */
    write_file(box, "made", "made", 0644);
    mkpath(p, box, "k.txt");
    assert_int_equal(unlink(p), 0);
    mkpath(p, box, "same");
    assert_int_equal(stat(p, &sb), 0);
    ts[0] = sb.st_atim;
    ts[1] = sb.st_mtim;
    usleep(20000); /* a ctime the rewrite moves, on coarse clocks too */
    write_file(box, "same", "bbbb", 0644);
    assert_int_equal(utimensat(AT_FDCWD, p, ts, 0), 0);
    /* The host, meanwhile. */
    write_file(host, "h.txt", "1\n2\n", 0644);
    write_file(host, "host-new", "h", 0644);
    assert_int_equal(atp__tree_mirror(box, host, no_excludes, 1,
                                      mirror_limits(), &base, &base, &st),
                     0);
    mkpath(p, host, "made");
    assert_string_equal(slurp(p), "made");
    mkpath(p, host, "k.txt");
    assert_int_equal(access(p, F_OK), -1);
    mkpath(p, host, "same");
    assert_string_equal(slurp(p), "bbbb");
    mkpath(p, host, "h.txt");
    assert_string_equal(slurp(p), "1\n2\n");
    mkpath(p, host, "host-new");
    assert_string_equal(slurp(p), "h");
    atp__manifest_free(&base);
    free(host);
    free(box);
}

/* From a sandbox, a link that leads out is refused, and the limits hold. */
static void mirror_untrusted_links_and_limits(void **state)
{
    char *box = new_dir("box"), *host = new_dir("host"), p[PATH_MAX];
    struct atp__mirror_stats st;
    struct atp__settings tight = *mirror_limits();
    int i;

    (void)state;
    mkpath(p, box, "pw");
    assert_int_equal(symlink("../../../../etc/passwd", p), 0);
    assert_int_equal(atp__tree_mirror(box, host, no_excludes, 1,
                                      mirror_limits(), NULL, NULL, &st),
                     ATP_E_TRANSFER);
    assert_non_null(strstr(atp_last_error(), "pw"));
    mkpath(p, host, "pw");
    assert_int_equal(access(p, F_OK), -1);
    mkpath(p, box, "pw");
    assert_int_equal(unlink(p), 0);
    for (i = 0; i < 5; i++) {
        char name[16];

        snprintf(name, sizeof(name), "f%d", i);
        write_file(box, name, "x", 0644);
    }
    tight.transfer_max_entries = 3;
    assert_int_equal(atp__tree_mirror(box, host, no_excludes, 1, &tight,
                                      NULL, NULL, &st),
                     ATP_E_TRANSFER);
    assert_non_null(strstr(atp_last_error(), "transfer_max_entries"));
    free(box);
    free(host);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(round_trip_keeps_everything, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(excludes_hold, setup, teardown),
        cmocka_unit_test_setup_teardown(vanished_file_is_reported_not_fatal,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(compression_round_trips, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(absolute_path_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(dotdot_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(unclean_names_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(symlink_then_file_through_it_refused,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(hardlink_to_outside_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            hardlink_to_symlink_checked_from_its_place, setup, teardown),
        cmocka_unit_test_setup_teardown(existing_links_replaced_not_followed,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(chain_of_links_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            relative_links_that_stay_inside_extract, setup, teardown),
        cmocka_unit_test_setup_teardown(way_out_through_a_host_link_refused,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(device_node_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(setuid_bit_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(a_million_empty_entries_refused,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(huge_size_refused_before_writing,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(garbage_is_not_a_tar_stream, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(remove_under_never_follows_symlinks,
                                        setup, teardown),
        cmocka_unit_test(listing_parse),
        cmocka_unit_test_setup_teardown(mirror_makes_dst_like_src, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(mirror_never_writes_through_a_link,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(mirror_since_brings_only_changes,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(mirror_untrusted_links_and_limits,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(far_dates_compare_exactly, setup,
                                        teardown),
    };

    return cmocka_run_group_tests_name("transfer", tests, NULL, NULL);
}
