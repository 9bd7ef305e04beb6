/*
 * core/sync.c - pushing the workdir into an isolated sandbox and pulling
 * it back, incrementally and with deletions, through commands run in the
 * sandbox:
 *
 *   listing   find . -mindepth 1 ... -printf '%y %s %T@ %C@ %m\0%P\0%l\0'
 *   push      tar -x -f -            (the core's tar stream on stdin)
 *   pull      tar -c -f - --no-recursion --null -T -   (names on stdin)
 *   delete    rm -rf -- NAME...
 *
 * Per session the core keeps the manifest both sides last agreed on (the
 * "base").  A push sends what changed on the host since then and deletes
 * in the sandbox what the host deleted; a pull does the reverse.  A path
 * changed on both sides is a conflict: the host wins on push, the sandbox
 * on pull, and the conflict is reported.  Without GNU find in the sandbox
 * the transfer is full (and says so in its event).
 *
 * This file holds the entry points and the per-session state; each reads
 * as its steps.  Listing, comparing and deciding are in core/sync_plan.c,
 * the commands and the tar streams in core/sync_stream.c.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "sync_int.h"
#include "transfer.h"

struct atp__xfer_state {
    struct atp__manifest base;
    int listed_once;   /* the sandbox side was listed at least once */
};

void atp__xfer_free(struct atp__xfer_state *x)
{
    if (x == NULL)
        return;
    atp__manifest_free(&x->base);
    free(x);
}

static void emit_done(struct atp_session *s, const char *type, int full,
                      uint64_t files, uint64_t bytes, uint64_t deleted,
                      uint64_t conflicts, double seconds,
                      const struct atp__sync_names *conflict_names)
{
    atp_field f[8];
    char first[1024] = "";
    size_t off = 0, used = 0;

    if (strcmp(type, "pushed") == 0)
        s->push_bytes += bytes;
    else
        s->pull_bytes += bytes;

    while (conflict_names && off < conflict_names->b.len && used + 2 <
                                                              sizeof(first)) {
        int w = snprintf(first + used, sizeof(first) - used, "%s%s",
                         used ? "," : "", conflict_names->b.p + off);

        if (w < 0)
            break;
        used += (size_t)w;
        off += strlen(conflict_names->b.p + off) + 1;
    }
    f[0] = (atp_field){"mode", ATP_FIELD_STR, full ? "full" : "incremental",
                       0, 0.0};
    f[1] = (atp_field){"files", ATP_FIELD_INT, NULL, (int64_t)files, 0.0};
    f[2] = (atp_field){"bytes", ATP_FIELD_INT, NULL, (int64_t)bytes, 0.0};
    f[3] = (atp_field){"deleted", ATP_FIELD_INT, NULL, (int64_t)deleted, 0.0};
    f[4] = (atp_field){"conflicts", ATP_FIELD_INT, NULL, (int64_t)conflicts,
                       0.0};
    f[5] = (atp_field){"seconds", ATP_FIELD_DOUBLE, NULL, 0, seconds};
    f[6] = (atp_field){"conflict_paths", ATP_FIELD_STR, first, 0, 0.0};
    atp__session_event(s, type, f, conflicts ? 7 : 6);
}

static struct atp__xfer_state *xfer_state(struct atp_session *s)
{
    if (s->xfer == NULL)
        s->xfer = calloc(1, sizeof(*s->xfer));
    return s->xfer;
}

static int push(struct atp_session *s, int mirror);

int atp__sync_push(struct atp_session *s)
{
    return push(s, 0);
}

int atp__sync_push_mirror(struct atp_session *s)
{
    return push(s, 1);
}

/*
 * The push.  Normally a three-way merge: what the host changed since the
 * base goes in, and what the sandbox changed at the same paths is a
 * conflict the host wins.  @mirror: what the sandbox changed on its own
 * is replaced too and what only it has is removed, so that it ends up
 * holding the host's tree exactly (a warm sandbox given to its next
 * session).
 */
static int push(struct atp_session *s, int mirror)
{
    const struct atp__settings *set = &s->be->cfg->set;
    struct atp__xfer_state *x = xfer_state(s);
    struct atp__manifest H = {0}, S = {0}, nb = {0};
    struct atp__sync_plan pl = ATP__SYNC_PLAN_INIT;
    struct atp__sync_producer pr;
    int64_t t0 = atp__now_ns();
    int full = 0, rootfd = -1, rc, code = 0;

    memset(&pr, 0, sizeof(pr));
    if (x == NULL)
        return atp__error(ATP_E_NOMEM, "out of memory");
    if ((rc = atp__sync_scan_and_list(s, &H, &S, &full)) != 0)
        goto out;
    if (mirror && full && (rc = atp__sync_wipe(s)) != 0)
        goto out;
    if (mirror && full)
        atp__manifest_free(&x->base); /* it holds nothing now */
    rootfd = open(s->workdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0) {
        rc = atp__error(ATP_E_TRANSFER, "cannot open %s: %s", s->workdir,
                        strerror(errno));
        goto out;
    }
    if ((rc = atp__sync_plan_push(rootfd, &H, &x->base, full ? NULL : &S,
                                  mirror, &pl)) != 0)
        goto out;
    if (pl.del.n && (rc = atp__sync_delete(s, &pl.del)) != 0)
        goto out;
    if (pl.send.n) {
        struct atp__sync_cmd r;

        pr.root = s->workdir;
        pr.list = &pl.send;
        pr.compression = set->compression;
        memset(&r, 0, sizeof(r));
        r.what = "push";
        rc = atp__sync_send(s, ATP__OPS_HAS(s->be->plugin, push_archive)
                                   ? NULL
                                   : "exec tar -x -f -",
                            &pr, &r, &code);
        if (rc)
            goto out;
        if (pr.rc && pr.rc != ATP_E_CANCELLED) {
            rc = atp__error(pr.rc, "%s", pr.err);
            goto out;
        }
        if (code != 0) {
            rc = atp__error(ATP_E_TRANSFER, "extracting in the sandbox failed "
                            "(exit %d): %s%s", code,
                            atp__sync_first_line(r.err),
                            code == 127 ? " (the sandbox needs tar)" : "");
            goto out;
        }
        if (pr.rc) {
            rc = atp__error(ATP_E_TRANSFER, "%s", pr.err);
            goto out;
        }
    }
    /* The sandbox's own mtimes of what was sent, for the next compare. */
    if ((rc = atp__sync_sent_times(s, full, &pl.send)) != 0)
        goto out;
    atp__manifest_sort(&pl.gone);
    if ((rc = atp__sync_rebase(&x->base, &pl.gone, &pl.send, &nb)) != 0)
        goto out;
    atp__manifest_free(&x->base);
    x->base = nb;
    memset(&nb, 0, sizeof(nb));
    emit_done(s, "pushed", full, pr.st.files, pr.st.bytes, pl.del.n,
              pl.conf.n, (double)(atp__now_ns() - t0) / 1e9, &pl.conf);
out:
    if (rootfd >= 0)
        close(rootfd);
    atp__manifest_free(&H);
    atp__manifest_free(&S);
    atp__manifest_free(&nb);
    atp__sync_plan_release(&pl);
    return rc;
}

int atp__sync_pull(struct atp_session *s)
{
    struct atp__xfer_state *x = xfer_state(s);
    struct atp__manifest H = {0}, S = {0}, got = {0}, nb = {0};
    struct atp__sync_plan pl = ATP__SYNC_PLAN_INIT;
    struct atp__tar_stats st;
    int64_t t0 = atp__now_ns();
    int full = 0, rootfd = -1, rc;
    size_t i, off;

    memset(&st, 0, sizeof(st));
    if (x == NULL)
        return atp__error(ATP_E_NOMEM, "out of memory");
    if ((rc = atp__sync_scan_and_list(s, &H, &S, &full)) != 0)
        goto out;
    rootfd = open(s->workdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0) {
        rc = atp__error(ATP_E_TRANSFER, "cannot open %s: %s", s->workdir,
                        strerror(errno));
        goto out;
    }
    if (!full &&
        (rc = atp__sync_plan_pull(rootfd, &H, &x->base, &S, &pl)) != 0)
        goto out;
    for (off = 0; off < pl.del.b.len; off += strlen(pl.del.b.p + off) + 1)
        if ((rc = atp__remove_under(s->workdir, pl.del.b.p + off)) != 0)
            goto out;
    if ((full || pl.want.n) &&
        (rc = atp__sync_receive(s, full ? NULL : &pl.want.b, &got, &st)) != 0)
        goto out;
    /* What was fetched: host mtime as extracted, sandbox times as
     * listed. */
    for (i = 0; i < got.n; i++) {
        struct atp__ment *sx = atp__manifest_find(&S, got.e[i].path);

        got.e[i].sb_mtime = sx ? sx->mtime : got.e[i].mtime;
        got.e[i].sb_ctime = sx ? sx->ctime : ATP__TIME_NONE;
    }
    atp__manifest_sort(&pl.gone);
    if (full) {
        /* Everything the sandbox has is now the agreed state, and what
         * was agreed on but did not come back was deleted there. */
        struct atp__manifest empty = {0};

        for (i = 0; i < x->base.n; i++) {
            const char *path = x->base.e[i].path;

            if (atp__manifest_find(&got, path))
                continue;
            if ((rc = atp__remove_under(s->workdir, path)) != 0)
                goto out;
            if (atp__sync_names_add(&pl.del, path)) {
                rc = atp__error(ATP_E_NOMEM, "out of memory");
                goto out;
            }
        }
        rc = atp__sync_rebase(&empty, NULL, &got, &nb);
    } else {
        rc = atp__sync_rebase(&x->base, &pl.gone, &got, &nb);
    }
    if (rc)
        goto out;
    atp__manifest_free(&x->base);
    x->base = nb;
    memset(&nb, 0, sizeof(nb));
    emit_done(s, "pulled", full, st.files, st.bytes, pl.del.n, pl.conf.n,
              (double)(atp__now_ns() - t0) / 1e9, &pl.conf);
out:
    if (rootfd >= 0)
        close(rootfd);
    atp__manifest_free(&H);
    atp__manifest_free(&S);
    atp__manifest_free(&got);
    atp__manifest_free(&nb);
    atp__sync_plan_release(&pl);
    return rc;
}

int atp__sync_push_dir(struct atp_session *s, const char *host_dir,
                       const char *dest)
{
    const struct atp__settings *set = &s->be->cfg->set;
    struct atp__manifest all = {0};
    struct atp__sync_producer pr;
    struct atp__sync_cmd r;
    atp__buf script = ATP__BUF_INIT;
    int rc, code = 0;
    int archive = ATP__OPS_HAS(s->be->plugin, push_archive);

    memset(&pr, 0, sizeof(pr));
    memset(&r, 0, sizeof(r));
    if ((rc = atp__manifest_scan(&all, host_dir, set->excludes)) != 0)
        return rc;
    if (!archive &&
        (atp__buf_puts(&script, "mkdir -p -- ") ||
         atp__sh_quote_append(&script, dest) ||
         atp__buf_puts(&script, " && cd -- ") ||
         atp__sh_quote_append(&script, dest) ||
         atp__buf_puts(&script, " && exec tar -x -f -"))) {
        rc = atp__error(ATP_E_NOMEM, "out of memory");
        goto out;
    }
    pr.root = host_dir;
    pr.list = &all;
    pr.compression = set->compression;
    r.dest = dest;
    r.what = "push";
    rc = atp__sync_send(s, archive ? NULL : script.p, &pr, &r, &code);
    if (rc == 0 && pr.rc && pr.rc != ATP_E_CANCELLED)
        rc = atp__error(pr.rc, "%s", pr.err);
    else if (rc == 0 && code != 0)
        rc = atp__error(ATP_E_TRANSFER, "pushing %s to %s failed (exit %d): "
                        "%s", host_dir, dest, code,
                        atp__sync_first_line(r.err));
    if (rc == 0) {
        atp_field f[4] = {
            {"path", ATP_FIELD_STR, host_dir, 0, 0.0},
            {"dest", ATP_FIELD_STR, dest, 0, 0.0},
            {"files", ATP_FIELD_INT, NULL, (int64_t)pr.st.files, 0.0},
            {"bytes", ATP_FIELD_INT, NULL, (int64_t)pr.st.bytes, 0.0},
        };

        s->push_bytes += pr.st.bytes;
        atp__session_event(s, "mount_pushed", f, 4);
    }
out:
    atp__buf_release(&script);
    atp__manifest_free(&all);
    return rc;
}
