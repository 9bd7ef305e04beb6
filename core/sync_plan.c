/*
 * core/sync_plan.c - the deciding half of the workdir sync: listing the
 * sandbox's workdir (GNU find, its output parsed by
 * atp__manifest_parse_listing()) while the host's is scanned, comparing
 * both with the base (the manifest both sides last agreed on), deciding
 * what a push or pull sends, fetches and deletes and which paths are
 * conflicts, the deletions and the wipe run in the sandbox, and the new
 * base once a transfer is done.
 *
 * The listing:
 *
 *   find . -mindepth 1 ... -printf '%y %s %T@ %C@ %m\0%P\0%l\0'
 *
 * with the excludes pruned by find itself; exit 111 when the sandbox has
 * no GNU find (the transfer is then full).
 */
#include "config.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "sync_int.h"
#include "transfer.h"

/* Exit status of the listing script when the sandbox has no GNU find. */
#define NO_GNU_FIND 111

/* ---- listing ----------------------------------------------------------- */

/* A raw output sink into an atp__buf: past its limit, the run stops. */
static int grow_append(void *ctx, const void *buf, size_t len)
{
    return atp__buf_append(ctx, buf, len) ? ATP_E_CANCELLED : 0;
}

/* Append ' ' and './@rel', quoted for sh. */
static int append_dot_word(atp__buf *b, const char *rel)
{
    size_t n = strlen(rel);
    char *word = malloc(n + 3);
    int rc;

    if (word == NULL)
        return ATP_E_NOMEM;
    word[0] = '.';
    word[1] = '/';
    memcpy(word + 2, rel, n + 1);
    rc = atp__buf_puts(b, " ");
    if (rc == 0)
        rc = atp__sh_quote_append(b, word);
    free(word);
    return rc;
}

/* The listing script, with the excludes pruned by find itself. */
static char *listing_script(const char *const *excludes)
{
    atp__buf b = ATP__BUF_INIT;
    size_t i;
    int rc = atp__buf_puts(&b,
                        "find . -maxdepth 0 -printf '' >/dev/null 2>&1 || "
                        "exit 111; exec find . -mindepth 1 ");

    for (i = 0; rc == 0 && excludes && excludes[i]; i++) {
        const char *pat = excludes[i];

        if (strchr(pat, '/') != NULL) {
            /* Anchored at the root: -path './PATTERN'. */
            rc = atp__buf_puts(&b, "-path");
            if (rc == 0)
                rc = append_dot_word(&b, pat);
        } else {
            rc = atp__buf_puts(&b, "-name ");
            if (rc == 0)
                rc = atp__sh_quote_append(&b, pat);
        }
        if (rc == 0)
            rc = atp__buf_puts(&b, " -prune -o ");
    }
    if (rc == 0)
        rc = atp__buf_puts(&b,
                        "-printf '%y %s %T@ %C@ %m\\0%P\\0%l\\0'");
    if (rc) {
        atp__buf_release(&b);
        return NULL;
    }
    return b.p;
}

/*
 * List the sandbox's workdir into @m.  Returns 0; sets *@full when the
 * sandbox cannot list (no GNU find).
 */
static int list_sandbox(struct atp_session *s, struct atp__manifest *m,
                        int *full)
{
    const struct atp__settings *set = &s->be->cfg->set;
    atp__buf g;
    struct atp__sync_cmd r;
    char *script = listing_script(set->excludes);
    int rc, code = 0;

    *full = 0;
    if (script == NULL)
        return atp__error(ATP_E_NOMEM, "out of memory");
    atp__buf_init(&g, (size_t)set->transfer_max_entries * 512 + 65536);
    memset(&r, 0, sizeof(r));
    r.out = grow_append;
    r.out_ctx = &g;
    rc = atp__sync_run(s, script, -1, &r, &code);
    free(script);
    if (rc == 0 && code == NO_GNU_FIND) {
        *full = 1;
    } else if (rc == 0 && code != 0) {
        rc = atp__error(ATP_E_TRANSFER, "listing the sandbox workdir failed "
                        "(exit %d): %s", code, atp__sync_first_line(r.err));
    } else if (rc == 0) {
        rc = atp__manifest_parse_listing(m, g.p ? g.p : "", g.len,
                                         set->excludes);
    }
    atp__buf_release(&g);
    return rc;
}

/*
 * List only the paths of @which in the sandbox (for the mtimes tar gave
 * what was just sent): find on those names, in batches, instead of a walk
 * of the whole workdir.
 */
static int list_paths(struct atp_session *s, const struct atp__manifest *which,
                      struct atp__manifest *m)
{
    const struct atp__settings *set = &s->be->cfg->set;
    atp__buf g;
    size_t i = 0;
    int rc = 0;

    /* a name and a link target of up to PATH_MAX each, per entry */
    atp__buf_init(&g, which->n * (2 * 4096 + 64) + 65536);
    while (rc == 0 && i < which->n) {
        atp__buf script = ATP__BUF_INIT;
        struct atp__sync_cmd r;
        int code = 0;

        rc = atp__buf_puts(&script, "exec find");
        while (rc == 0 && i < which->n && script.len < 65536)
            rc = append_dot_word(&script, which->e[i++].path);
        if (rc == 0)
            rc = atp__buf_puts(&script, " -maxdepth 0 -printf "
                            "'%y %s %T@ %C@ %m\\0%p\\0%l\\0'");
        if (rc) {
            atp__buf_release(&script);
            rc = atp__error(ATP_E_NOMEM, "out of memory");
            break;
        }
        memset(&r, 0, sizeof(r));
        r.out = grow_append;
        r.out_ctx = &g;
        rc = atp__sync_run(s, script.p, -1, &r, &code);
        atp__buf_release(&script);
        /* find exits 1 when a name vanished: what it printed still counts */
        if (rc == 0 && code != 0 && code != 1)
            rc = atp__error(ATP_E_TRANSFER, "listing in the sandbox failed "
                            "(exit %d): %s", code,
                            atp__sync_first_line(r.err));
    }
    if (rc == 0)
        rc = atp__manifest_parse_listing(m, g.p ? g.p : "", g.len,
                                         set->excludes);
    atp__buf_release(&g);
    return rc;
}

/* The host scan, in a thread while the sandbox is listed. */
struct scan_job {
    pthread_t thread;
    struct atp__manifest *m;
    const char *root;
    const char *const *excludes;
    int rc;
    char err[1024];
};

static void *scan_main(void *arg)
{
    struct scan_job *j = arg;

    j->rc = atp__manifest_scan(j->m, j->root, j->excludes);
    if (j->rc)
        snprintf(j->err, sizeof(j->err), "%s", atp_last_error());
    return NULL;
}

/* Scan the host and list the sandbox at the same time. */
int atp__sync_scan_and_list(struct atp_session *s, struct atp__manifest *H,
                            struct atp__manifest *S, int *full)
{
    const struct atp__settings *set = &s->be->cfg->set;
    struct scan_job j;
    int rc;

    memset(&j, 0, sizeof(j));
    j.m = H;
    j.root = s->workdir;
    j.excludes = set->excludes;
    if (pthread_create(&j.thread, NULL, scan_main, &j) != 0)
        return (rc = atp__manifest_scan(H, s->workdir, set->excludes)) != 0
                   ? rc
                   : list_sandbox(s, S, full);
    rc = list_sandbox(s, S, full);
    pthread_join(j.thread, NULL);
    if (rc == 0 && j.rc)
        rc = atp__error(j.rc, "%s", j.err);
    return rc;
}

/* ---- comparing --------------------------------------------------------- */

/*
 * What the entries' kinds alone say of a change: 1 changed (one missing,
 * another type or mode, another link target), 0 the same (directories),
 * -1 the file's size, times or content decide.
 */
static int kind_changed(const struct atp__ment *a, const struct atp__ment *b)
{
    if (a == NULL || b == NULL)
        return a != b;
    if (a->type != b->type || a->mode != b->mode)
        return 1;
    if (a->type == ATP__T_LINK)
        return strcmp(a->target ? a->target : "",
                      b->target ? b->target : "") != 0;
    if (a->type == ATP__T_DIR)
        return 0;
    return -1;
}

/* Did the host side change @path since the base? (@h, @b may be NULL.) */
static int host_changed(int rootfd, struct atp__ment *h, struct atp__ment *b)
{
    uint64_t hash;
    int kind = kind_changed(h, b);

    if (kind >= 0)
        return kind;
    if (h->size != b->size)
        return 1;
    if (atp__time_eq(h->mtime, b->mtime) && atp__time_eq(h->ctime, b->ctime))
        return 0;
    /* Same size, a time moved (the ctime too when the mtime was set
     * back): the content decides. */
    if (b->has_hash && atp__hash_file(rootfd, h->path, &hash) == 0 &&
        hash == b->hash) {
        b->mtime = h->mtime; /* remember: no need to hash again */
        b->ctime = h->ctime;
        return 0;
    }
    return 1;
}

/*
 * Did the sandbox side change @path since the base?  A file whose size and
 * mtime are as agreed may still have been edited, its mtime set back
 * (touch -d, cp -p, tar x, rsync -t): its ctime moved all the same.
 */
static int sandbox_changed(const struct atp__ment *x,
                           const struct atp__ment *b)
{
    int kind = kind_changed(x, b);

    if (kind >= 0)
        return kind;
    return x->size != b->size || !atp__time_eq(x->mtime, b->sb_mtime) ||
           !atp__time_eq(x->ctime, b->sb_ctime);
}

/* Same entry on both sides, as far as metadata can tell. */
static int same_entry(const struct atp__ment *h, const struct atp__ment *x)
{
    if (h == NULL || x == NULL)
        return h == x;
    if (h->type != x->type)
        return 0;
    if (h->type == ATP__T_LINK)
        return strcmp(h->target ? h->target : "",
                      x->target ? x->target : "") == 0;
    if (h->type == ATP__T_DIR)
        return 1;
    return h->size == x->size && atp__time_eq(h->mtime, x->mtime);
}

/* Walk the union of up to three sorted manifests in path order. */
struct walk3 {
    struct atp__manifest *m[3];
    size_t i[3];
};

static const char *walk3_next(struct walk3 *w, struct atp__ment *out[3])
{
    const char *min = NULL;
    int k;

    for (k = 0; k < 3; k++)
        if (w->m[k] && w->i[k] < w->m[k]->n &&
            (min == NULL || strcmp(w->m[k]->e[w->i[k]].path, min) < 0))
            min = w->m[k]->e[w->i[k]].path;
    for (k = 0; k < 3; k++) {
        out[k] = NULL;
        if (min && w->m[k] && w->i[k] < w->m[k]->n &&
            strcmp(w->m[k]->e[w->i[k]].path, min) == 0)
            out[k] = &w->m[k]->e[w->i[k]++];
    }
    return min;
}

/* ---- deciding ---------------------------------------------------------- */

int atp__sync_names_add(struct atp__sync_names *nm, const char *path)
{
    int rc = atp__buf_append(&nm->b, path, strlen(path) + 1);

    if (rc == 0)
        nm->n++;
    return rc;
}

void atp__sync_plan_release(struct atp__sync_plan *pl)
{
    atp__manifest_free(&pl->send);
    atp__manifest_free(&pl->gone);
    atp__buf_release(&pl->want.b);
    atp__buf_release(&pl->del.b);
    atp__buf_release(&pl->conf.b);
}

int atp__sync_plan_push(int rootfd, struct atp__manifest *H,
                        struct atp__manifest *base, struct atp__manifest *S,
                        int mirror, struct atp__sync_plan *pl)
{
    struct walk3 w;
    struct atp__ment *m[3];

    memset(&w, 0, sizeof(w));
    w.m[0] = H;
    w.m[1] = base;
    w.m[2] = S;
    while (walk3_next(&w, m)) {
        struct atp__ment *h = m[0], *b = m[1], *sx = m[2];
        int sc;

        if (S == NULL) {
            /* The sandbox could not be listed: everything goes. */
            if (h && atp__manifest_add(&pl->send, h))
                goto nomem;
            continue;
        }
        sc = sandbox_changed(sx, b);
        if (!host_changed(rootfd, h, b) && !(mirror && sc))
            continue;
        if (!mirror && sc && !same_entry(h, sx) &&
            atp__sync_names_add(&pl->conf, (h ? h : b ? b : sx)->path))
            goto nomem;
        if (h == NULL) {
            /* Deleted on the host (or made in the sandbox alone, when
             * mirroring): delete in the sandbox. */
            if ((sx && atp__sync_names_add(&pl->del, sx->path)) ||
                (b && atp__manifest_add(&pl->gone, b)))
                goto nomem;
            continue;
        }
        if (sx && sx->type != h->type &&
            atp__sync_names_add(&pl->del, sx->path))
            goto nomem;
        if (atp__manifest_add(&pl->send, h))
            goto nomem;
    }
    return 0;
nomem:
    return atp__error(ATP_E_NOMEM, "out of memory");
}

int atp__sync_plan_pull(int rootfd, struct atp__manifest *H,
                        struct atp__manifest *base, struct atp__manifest *S,
                        struct atp__sync_plan *pl)
{
    struct walk3 w;
    struct atp__ment *m[3];

    memset(&w, 0, sizeof(w));
    w.m[0] = H;
    w.m[1] = base;
    w.m[2] = S;
    while (walk3_next(&w, m)) {
        struct atp__ment *h = m[0], *b = m[1], *sx = m[2];

        if (!sandbox_changed(sx, b))
            continue;
        if (host_changed(rootfd, h, b) && !same_entry(h, sx) &&
            atp__sync_names_add(&pl->conf, (sx ? sx : h ? h : b)->path))
            goto nomem;
        if (sx == NULL) {
            /* Deleted in the sandbox: delete on the host. */
            if ((h && atp__sync_names_add(&pl->del, h->path)) ||
                atp__manifest_add(&pl->gone, b))
                goto nomem;
            continue;
        }
        if (h && h->type != sx->type &&
            atp__sync_names_add(&pl->del, h->path))
            goto nomem;
        if (atp__sync_names_add(&pl->want, sx->path))
            goto nomem;
    }
    return 0;
nomem:
    return atp__error(ATP_E_NOMEM, "out of memory");
}

int atp__sync_sent_times(struct atp_session *s, int full,
                         struct atp__manifest *send)
{
    struct atp__manifest S2 = {0};
    int again = 0, rc;
    size_t i;

    if (full || send->n == 0) {
        for (i = 0; i < send->n; i++) { /* full: so are the pulls */
            send->e[i].sb_mtime = send->e[i].mtime;
            send->e[i].sb_ctime = ATP__TIME_NONE;
        }
        return 0;
    }
    if (send->n > 4096)
        rc = list_sandbox(s, &S2, &again);
    else
        rc = list_paths(s, send, &S2);
    for (i = 0; rc == 0 && i < send->n; i++) {
        struct atp__ment *sx = atp__manifest_find(&S2, send->e[i].path);

        send->e[i].sb_mtime = sx ? sx->mtime : ATP__TIME_NONE;
        send->e[i].sb_ctime = sx ? sx->ctime : ATP__TIME_NONE;
    }
    atp__manifest_free(&S2);
    return rc;
}

/* The contract is in sync_int.h. */
int atp__sync_rebase(struct atp__manifest *old,
                     const struct atp__manifest *drop,
                     const struct atp__manifest *put,
                     struct atp__manifest *out)
{
    size_t i;

    for (i = 0; i < old->n; i++) {
        const char *p = old->e[i].path;

        if ((drop && atp__manifest_find(drop, p)) ||
            (put && atp__manifest_find(put, p)))
            continue;
        if (atp__manifest_add(out, &old->e[i]) != 0)
            return atp__error(ATP_E_NOMEM, "out of memory");
    }
    for (i = 0; put && i < put->n; i++)
        if (put->e[i].type != 0 && atp__manifest_add(out, &put->e[i]) != 0)
            return atp__error(ATP_E_NOMEM, "out of memory");
    atp__manifest_sort(out);
    return 0;
}

/* ---- commands in the sandbox ------------------------------------------ */

/* Delete NUL-separated @nm paths in the sandbox, in batches. */
int atp__sync_delete(struct atp_session *s, const struct atp__sync_names *nm)
{
    size_t off = 0;

    while (off < nm->b.len) {
        atp__buf script = ATP__BUF_INIT;
        struct atp__sync_cmd r;
        int rc = atp__buf_puts(&script, "exec rm -rf --"), code = 0;

        /* Batches stay under 60 KiB of argv: some providers refuse more
         * than 64 KiB per command. */
        while (rc == 0 && off < nm->b.len &&
               script.len + 4 * strlen(nm->b.p + off) + 3 < 60000) {
            rc = atp__buf_puts(&script, " ");
            if (rc == 0)
                rc = atp__sh_quote_append(&script, nm->b.p + off);
            off += strlen(nm->b.p + off) + 1;
        }
        if (rc) {
            atp__buf_release(&script);
            return atp__error(ATP_E_NOMEM, "out of memory");
        }
        memset(&r, 0, sizeof(r));
        rc = atp__sync_run(s, script.p, -1, &r, &code);
        atp__buf_release(&script);
        if (rc)
            return rc;
        if (code != 0)
            return atp__error(ATP_E_TRANSFER, "deleting in the sandbox "
                              "failed (exit %d): %s", code,
                              atp__sync_first_line(r.err));
    }
    return 0;
}

/* Empty the sandbox's workdir but for the excludes at its top. */
int atp__sync_wipe(struct atp_session *s)
{
    const char *const *ex = s->be->cfg->set.excludes;
    atp__buf script = ATP__BUF_INIT;
    size_t i;
    struct atp__sync_cmd r;
    int rc = atp__buf_puts(&script,
                           "exec find . -mindepth 1 -maxdepth 1"), code = 0;

    for (i = 0; rc == 0 && ex && ex[i]; i++) {
        if (strchr(ex[i], '/'))
            continue;
        rc = atp__buf_puts(&script, " ! -name ");
        if (rc == 0)
            rc = atp__sh_quote_append(&script, ex[i]);
    }
    if (rc == 0)
        rc = atp__buf_puts(&script, " -exec rm -rf -- {} +");
    if (rc) {
        atp__buf_release(&script);
        return atp__error(ATP_E_NOMEM, "out of memory");
    }
    memset(&r, 0, sizeof(r));
    rc = atp__sync_run(s, script.p, -1, &r, &code);
    atp__buf_release(&script);
    if (rc == 0 && code != 0)
        rc = atp__error(ATP_E_TRANSFER, "emptying the warm sandbox's workdir "
                        "failed (exit %d): %s", code,
                        atp__sync_first_line(r.err));
    return rc;
}
