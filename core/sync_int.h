/*
 * core/sync_int.h - what the three files of the workdir sync share:
 * core/sync.c (the entry points: push, pull, push of a directory),
 * core/sync_plan.c (listing both sides, comparing them with the base,
 * deciding what moves and what is deleted) and core/sync_stream.c
 * (commands run in the sandbox and the tar streams both ways).
 *
 * Private to those three files.
 */
#ifndef ATP_SYNC_INT_H
#define ATP_SYNC_INT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "internal.h"
#include "transfer.h"

/* ---- sync_stream.c: commands in the sandbox --------------------------- */

/* One command run in the sandbox: where its stdout goes, what its stderr
 * said, and the progress of a push or pull. */
struct atp__sync_cmd {
    int (*out)(void *ctx, const void *buf, size_t len); /* stdout bytes */
    void *out_ctx;
    const char *dest;  /* push_archive's destination (NULL: workdir) */
    char err[512];    /* the first stderr bytes, for messages */
    size_t err_len;
    uint64_t out_bytes;
    /* Progress of a push or pull ("push", "pull"), or NULL. */
    const char *what;
    struct atp_session *s;
    uint64_t moved;
    int64_t t0, last;
};

/*
 * Run the shell script @script in the sandbox's workdir, with stdin from
 * @stdin_fd (-1: none) and stdout to r->out.  Returns the plugin's code;
 * on 0, @code is the script's exit code (-1 for a signal).  With @script
 * NULL the plugin's push_archive (stdin given) or pull_archive runs.
 */
int atp__sync_run(struct atp_session *s, const char *script, int stdin_fd,
                  struct atp__sync_cmd *r, int *code);

/* Trim a message from the sandbox (in place) for one line of an error. */
const char *atp__sync_first_line(char *s);

/* ---- sync_stream.c: tar streams --------------------------------------- */

/* Writes a tar stream of a list into a pipe, on a thread of its own. */
struct atp__sync_producer {
    pthread_t thread;
    int fd;                      /* write end, closed by the thread */
    const char *root;
    struct atp__manifest *list;  /* tar these... */
    const char *data;            /* ...or write these bytes */
    size_t data_len;
    int compression;
    struct atp_session *s;
    struct atp__tar_stats st;
    int rc;
    char err[1024];
    unsigned warnings;
    char warned[8][512]; /* "path: what", reported after the join */
};

/*
 * Push: run @script in the sandbox (NULL: the plugin's push_archive, to
 * r->dest) with a tar stream of pr->list under pr->root on its stdin,
 * written by a producer thread.  The caller fills root, list and
 * compression of @pr (zeroed otherwise) and r->what/r->dest.  Returns
 * the code of the run (see atp__sync_run()); pr->rc/pr->err say how the
 * stream went, pr->st what it held, *@code the script's exit.  The notes
 * the producer kept are reported as "transfer_warning" events.
 */
int atp__sync_send(struct atp_session *s, const char *script,
                   struct atp__sync_producer *pr, struct atp__sync_cmd *r,
                   int *code);

/*
 * Pull: have the sandbox tar the NUL-separated paths of @want (NULL: the
 * whole workdir) and extract the stream under the host workdir.  What
 * was written is added to @got (the caller frees it), the counts go to
 * @st.  ATP_E_TRANSFER when the sandbox sent nothing or its tar failed;
 * the extractor's code when the stream was refused.
 */
int atp__sync_receive(struct atp_session *s, const atp__buf *want,
                      struct atp__manifest *got, struct atp__tar_stats *st);

/* ---- sync_plan.c ------------------------------------------------------ */

/* NUL-separated lists of paths. */
struct atp__sync_names {
    atp__buf b;        /* the paths, each followed by its NUL */
    size_t n;
};

#define ATP__SYNC_NAMES_INIT {ATP__BUF_INIT, 0}

/* Add @path to @nm; 0 or nonzero when out of memory (no error set). */
int atp__sync_names_add(struct atp__sync_names *nm, const char *path);

/* What a push or a pull does, decided by comparing host, base, sandbox. */
struct atp__sync_plan {
    struct atp__manifest send;    /* push: host entries to send */
    struct atp__manifest gone;    /* base entries deleted on the far side */
    struct atp__sync_names want;  /* pull: sandbox paths to fetch */
    struct atp__sync_names del;   /* paths to delete on the near side */
    struct atp__sync_names conf;  /* paths changed on both sides */
};

#define ATP__SYNC_PLAN_INIT                                                  \
    {{0}, {0}, ATP__SYNC_NAMES_INIT, ATP__SYNC_NAMES_INIT,                 \
     ATP__SYNC_NAMES_INIT}

void atp__sync_plan_release(struct atp__sync_plan *pl);

/*
 * Scan the host workdir into @H and list the sandbox's into @S, at the
 * same time.  Sets *@full when the sandbox cannot list (no GNU find): @S
 * is empty then and the transfer is whole.
 */
int atp__sync_scan_and_list(struct atp_session *s, struct atp__manifest *H,
                            struct atp__manifest *S, int *full);

/*
 * Decide a push from host @H, @base and sandbox @S (NULL: it could not be
 * listed, everything is sent) into @pl: send, del (in the sandbox), gone,
 * conf.  @mirror: what the sandbox changed on its own is replaced too and
 * what only it has is deleted.  @rootfd is the host workdir, for hashing.
 * 0 or ATP_E_NOMEM.
 */
int atp__sync_plan_push(int rootfd, struct atp__manifest *H,
                        struct atp__manifest *base, struct atp__manifest *S,
                        int mirror, struct atp__sync_plan *pl);

/* Decide a pull: want, del (on the host), gone, conf; as above. */
int atp__sync_plan_pull(int rootfd, struct atp__manifest *H,
                        struct atp__manifest *base, struct atp__manifest *S,
                        struct atp__sync_plan *pl);

/*
 * After a push, record in @send the times the sandbox gave what was sent
 * (listed again; with @full, the host's own), for the next compare.
 */
int atp__sync_sent_times(struct atp_session *s, int full,
                         struct atp__manifest *send);

/*
 * The new base: @old without the paths in @drop (sorted names) and with
 * the entries of @put (which win), all sorted into @out.
 */
int atp__sync_rebase(struct atp__manifest *old,
                     const struct atp__manifest *drop,
                     const struct atp__manifest *put,
                     struct atp__manifest *out);

/* Delete the paths of @nm in the sandbox, in batches. */
int atp__sync_delete(struct atp_session *s, const struct atp__sync_names *nm);

/*
 * Empty the sandbox's workdir but for what the excludes keep at its top
 * (the warm cache): a warm sandbox that cannot be listed (no GNU find) is
 * reset this way, then pushed in full.
 */
int atp__sync_wipe(struct atp_session *s);

#endif /* ATP_SYNC_INT_H */
