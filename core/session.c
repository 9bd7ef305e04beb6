/*
 * core/session.c - session lifecycle, command execution and result
 * classification.
 *
 * A session is created (no I/O), started (the plugin provisions a
 * sandbox), used for any number of commands, and closed - on every path,
 * idempotently, even after cancellation.  The core owns everything that
 * does not depend on the backend: wrapping, deadlines, line framing,
 * output limits and spill files, and the status class of each result.
 */
#define _GNU_SOURCE
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "transfer.h"

#define MS_TO_S(ms) ((double)(ms) / 1000.0)

static double since_s(int64_t t0)
{
    return (double)(atp__now_ns() - t0) / 1e9;
}

void atp__session_event(struct atp_session *s, const char *type,
                        const atp_field *fields, size_t n)
{
    atp_field copy[16];
    char text[16][512];
    atp_event ev;
    size_t i;

    if (s->on_event == NULL)
        return;
    if (n > ATP__ARRAY_SIZE(copy))
        n = ATP__ARRAY_SIZE(copy);
    for (i = 0; i < n; i++) {
        copy[i] = fields[i];
        if (fields[i].type == ATP_FIELD_STR && fields[i].s) {
            atp__format_redacted(text[i], sizeof(text[i]), &s->secrets,
                                 &s->be->secrets, "%s", fields[i].s);
            copy[i].s = text[i];
        }
    }
    ev.struct_size = sizeof(ev);
    ev.type = type;
    ev.fields = copy;
    ev.n_fields = n;
    s->on_event(&ev, s->event_payload);
}

static atp_field fstr(const char *key, const char *v)
{
    atp_field f = {key, ATP_FIELD_STR, v, 0, 0.0};

    return f;
}

static atp_field fdbl(const char *key, double v)
{
    atp_field f = {key, ATP_FIELD_DOUBLE, NULL, 0, v};

    return f;
}

/* Record a failure in @res, redacted, and as the thread's last error. */
static int fail(struct atp_session *s, atp_result *res, int rc,
                const char *fmt, ...) ATP_PRINTF(4, 5);

static int fail(struct atp_session *s, atp_result *res, int rc,
                const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    atp__vformat_redacted(msg, sizeof(msg), s ? &s->secrets : NULL,
                          s ? &s->be->secrets : NULL, fmt, ap);
    va_end(ap);
    atp__error_set_text(msg);
    atp__result_fail(res, rc, msg);
    return rc;
}

static void result_reset(atp_result *res)
{
    if (res == NULL)
        return;
    res->status = ATP_STATUS_OK;
    res->exit_code = -1;
    res->signal = 0;
    res->duration_s = 0;
    res->stdout_truncated = res->stderr_truncated = 0;
    res->stdout_bytes = res->stderr_bytes = 0;
    res->message[0] = '\0';
    res->provision_s = res->push_s = res->pull_s = 0;
    res->push_bytes = res->pull_bytes = 0;
    res->exec_s = res->sandbox_s = 0;
    res->cpu_s = -1;
    res->max_rss_bytes = -1;
    res->cost_usd = -1;
    res->image_id[0] = '\0';
}

/*
 * Fill what @res cost from the session's record: its creation and
 * transfers when @whole (a one-shot run: the sandbox's whole life), and
 * the price of it all where [price] says.  An unknown measurement that
 * has a price leaves the cost unknown.
 */
static void account(struct atp_session *s, atp_result *res, int whole)
{
    const double *price = s->be->cfg->set.price;
    double cost = 0;
    int priced = 0, unknown = 0;

    if (res == NULL)
        return;
    if (s->image_id[0] == '\0' && s->be->image_id[0]) {
        pthread_mutex_lock(&s->be->pin_lock);
        snprintf(s->image_id, sizeof(s->image_id), "%s", s->be->image_id);
        pthread_mutex_unlock(&s->be->pin_lock);
    }
    snprintf(res->image_id, sizeof(res->image_id), "%s", s->image_id);
    if (whole) {
        res->provision_s = s->provision_s;
        res->push_s = s->push_s;
        res->pull_s = s->pull_s;
        res->push_bytes = s->push_bytes;
        res->pull_bytes = s->pull_bytes;
        if (s->opened_ns)
            res->sandbox_s = since_s(s->opened_ns);
    }
    if (price[0] >= 0) {
        priced = 1;
        if (res->cpu_s < 0)
            unknown = 1;
        else
            cost += price[0] * res->cpu_s;
    }
    if (price[1] >= 0) {
        priced = 1;
        if (res->max_rss_bytes < 0)
            unknown = 1;
        else
            cost += price[1] * ((double)res->max_rss_bytes /
                                (1024.0 * 1024 * 1024)) * res->exec_s;
    }
    if (price[2] >= 0 && whole) {
        priced = 1;
        cost += price[2] * res->sandbox_s;
    }
    res->cost_usd = priced && !unknown ? cost : -1;
}

/* ---- structs from the caller: any published size ------------------------ */

ATP_EXTERN int atp_result_init(atp_result *res, size_t size)
{
    atp_result full = ATP_RESULT_INIT;

    if (res == NULL || size < ATP_RESULT_SIZE_0_1)
        return atp__error(ATP_E_INVAL, "atp_result of %zu bytes: the "
                          "smallest is %u", size, ATP_RESULT_SIZE_0_1);
    memset(res, 0, size);
    memcpy(res, &full, size < sizeof(full) ? size : sizeof(full));
    res->struct_size = (uint32_t)size;
    return 0;
}

ATP_EXTERN int atp_session_opts_init(atp_session_opts *opts, size_t size)
{
    atp_session_opts full = ATP_SESSION_OPTS_INIT;

    if (opts == NULL || size < ATP_SESSION_OPTS_SIZE_0_1)
        return atp__error(ATP_E_INVAL, "atp_session_opts of %zu bytes: the "
                          "smallest is %u", size,
                          ATP_SESSION_OPTS_SIZE_0_1);
    memset(opts, 0, size);
    memcpy(opts, &full, size < sizeof(full) ? size : sizeof(full));
    opts->struct_size = (uint32_t)size;
    return 0;
}

ATP_EXTERN int atp_exec_opts_init(atp_exec_opts *opts, size_t size)
{
    atp_exec_opts full = ATP_EXEC_OPTS_INIT;

    if (opts == NULL || size < ATP_EXEC_OPTS_SIZE_0_1)
        return atp__error(ATP_E_INVAL, "atp_exec_opts of %zu bytes: the "
                          "smallest is %u", size, ATP_EXEC_OPTS_SIZE_0_1);
    memset(opts, 0, size);
    memcpy(opts, &full, size < sizeof(full) ? size : sizeof(full));
    opts->struct_size = (uint32_t)size;
    return 0;
}

/*
 * Copy a caller's struct of any published size into @full (of @fullsize
 * bytes, already holding the defaults): fields it lacks keep them.  A
 * struct from a newer header is accepted when what this library does not
 * know of it is zero.
 */
static int copy_in(void *full, size_t fullsize, const void *in,
                   uint32_t insize, size_t smallest, const char *what,
                   const char *init)
{
    if (insize < smallest)
        return atp__error(ATP_E_INVAL, "%s.struct_size is %u (the smallest "
                          "is %zu): set it with %s", what, (unsigned)insize,
                          smallest, init);
    if (insize > fullsize && !atp_struct_tail_is_zero(in, insize, fullsize))
        return atp__error(ATP_E_INVAL, "%s of %u bytes sets fields this "
                          "libatp %s does not know (it has %zu bytes): "
                          "update libatp", what, (unsigned)insize,
                          atp_version(), fullsize);
    memcpy(full, in, insize < fullsize ? insize : fullsize);
    *(uint32_t *)full = (uint32_t)fullsize;
    return 0;
}

static int exec_opts_in(atp_exec_opts *o, const atp_exec_opts *in)
{
    int rc;

    atp_exec_opts_init(o, sizeof(*o));
    if (in == NULL)
        return 0;
    rc = copy_in(o, sizeof(*o), in, in->struct_size, ATP_EXEC_OPTS_SIZE_0_1,
                 "atp_exec_opts", "ATP_EXEC_OPTS_INIT or atp_exec_opts_init()");
    if (rc)
        return rc;
    /* 0.1 had no flags: a descriptor >= 0 was forwarded.  Now 0, which
     * a zeroed struct holds, needs the flag. */
    if ((!ATP_HAS_FIELD(in, atp_exec_opts, flags) && in->stdin_fd >= 0) ||
        o->stdin_fd > 0)
        o->flags |= ATP_EXEC_OPT_STDIN;
    if (!(o->flags & ATP_EXEC_OPT_STDIN))
        o->stdin_fd = -1;
    return 0;
}

/* A result the caller gave: at least the first published size. */
static int result_ok(const atp_result *res)
{
    if (res && res->struct_size < ATP_RESULT_SIZE_0_1)
        return atp__error(ATP_E_INVAL, "atp_result.struct_size is %u (the "
                          "smallest is %u): set it with ATP_RESULT_INIT or "
                          "atp_result_init()", (unsigned)res->struct_size,
                          ATP_RESULT_SIZE_0_1);
    return 0;
}

/* Write @r back to the caller's @res, no further than its struct_size. */
static void result_out(atp_result *res, const atp_result *r)
{
    uint32_t size;

    if (res == NULL)
        return;
    size = res->struct_size;
    memcpy(res, r, size < sizeof(*r) ? size : sizeof(*r));
    res->struct_size = size;
}

/* ---- one thread at a time ------------------------------------------------ */

static int enter(struct atp_session *s)
{
    if (atomic_exchange(&s->busy, 1))
        return atp__error(ATP_E_INVAL, "session %s is in use by another "
                          "thread: a session takes one call at a time "
                          "(only atp_session_cancel() may come from "
                          "elsewhere)", s->run_id);
    return 0;
}

static void leave(struct atp_session *s)
{
    atomic_store(&s->busy, 0);
}

static void make_run_id(char *out, size_t len)
{
    unsigned char r[6];
    size_t i;

    if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
        uint64_t t = (uint64_t)atp__now_ns() ^ ((uint64_t)getpid() << 32);

        memcpy(r, &t, sizeof(r));
    }
    snprintf(out, len, "atp-");
    for (i = 0; i < sizeof(r); i++)
        snprintf(out + 4 + 2 * i, len - 4 - 2 * i, "%02x", r[i]);
}

void atp__make_run_id(char *out, size_t len)
{
    make_run_id(out, len);
}

void atp__session_join(struct atp_session *s, void *group,
                       const char *group_id, unsigned index)
{
    s->group = group;
    snprintf(s->run_id, sizeof(s->run_id), "%s-%u", group_id, index);
}

/* Parse "HOST:DEST[:rw|:ro]" mounts into s->mounts. */
static int parse_mounts(struct atp_session *s, const char *const *list)
{
    size_t n = 0, i, bytes = 0;
    char *p;

    for (i = 0; list && list[i]; i++) {
        n++;
        bytes += strlen(list[i]) + PATH_MAX + 2;
    }
    if (n == 0)
        return 0;
    s->mounts = calloc(n, sizeof(*s->mounts));
    s->mount_buf = malloc(bytes);
    if (s->mounts == NULL || s->mount_buf == NULL)
        return atp__error(ATP_E_NOMEM, "out of memory");
    p = s->mount_buf;
    for (i = 0; i < n; i++) {
        const char *spec = list[i];
        const char *colon = strchr(spec, ':');
        const char *dest, *mode;
        char host[PATH_MAX];
        size_t hlen, dlen;

        if (colon == NULL || colon == spec)
            return atp__error(ATP_E_CONFIG, "mount '%s' is not HOST:DEST "
                              "(optionally :ro or :rw)", spec);
        hlen = (size_t)(colon - spec);
        if (hlen >= sizeof(host))
            return atp__error(ATP_E_CONFIG, "mount '%s': path too long",
                              spec);
        memcpy(host, spec, hlen);
        host[hlen] = '\0';
        dest = colon + 1;
        mode = strchr(dest, ':');
        dlen = mode ? (size_t)(mode - dest) : strlen(dest);
        if (mode && strcmp(mode, ":rw") != 0 && strcmp(mode, ":ro") != 0)
            return atp__error(ATP_E_CONFIG, "mount '%s': the mode after DEST "
                              "must be :ro or :rw", spec);
        if (dlen == 0 || dest[0] != '/')
            return atp__error(ATP_E_CONFIG, "mount '%s': DEST must be an "
                              "absolute path in the sandbox", spec);
        if (realpath(host, p) == NULL)
            return atp__error(ATP_E_CONFIG, "mount '%s': host path %s: %s",
                              spec, host, strerror(errno));
        s->mounts[i].host = p;
        p += strlen(p) + 1;
        memcpy(p, dest, dlen);
        p[dlen] = '\0';
        s->mounts[i].dest = p;
        p += dlen + 1;
        s->mounts[i].writable = mode && strcmp(mode, ":rw") == 0;
    }
    s->n_mounts = n;
    return 0;
}

/* Environment: [env] < [backend.NAME] env.* < session options. */
static int build_env(struct atp_session *s, const char *const *extra)
{
    const struct atp__section *sec = atp__config_section(s->be->cfg, "env");
    size_t i;
    int rc;

    for (i = 0; sec && i < sec->n_kv; i++) {
        rc = atp__env_set(&s->env, sec->kv[i].key, strlen(sec->kv[i].key),
                          sec->kv[i].value);
        if (rc)
            return atp__error(rc, "out of memory");
    }
    sec = s->be->sec;
    for (i = 0; sec && i < sec->n_kv; i++) {
        const char *k = sec->kv[i].key;

        if (strncmp(k, "env.", 4) != 0)
            continue;
        rc = atp__env_set(&s->env, k + 4, strlen(k + 4), sec->kv[i].value);
        if (rc)
            return atp__error(rc, "out of memory");
    }
    rc = atp__env_merge(&s->env, extra);
    if (rc)
        return rc;
    atp__secrets_add_env(&s->secrets, &s->env);
    return 0;
}

ATP_EXTERN int atp_session_create(atp_session **out, atp_backend *be,
                                  const atp_session_opts *in)
{
    atp_session_opts o, *opts = &o;
    struct atp_session *s;
    const char *wd;
    char real[PATH_MAX];
    struct stat st;
    int rc;

    *out = NULL;
    atp_session_opts_init(&o, sizeof(o));
    if (in && (rc = copy_in(&o, sizeof(o), in, in->struct_size,
                            ATP_SESSION_OPTS_SIZE_0_1, "atp_session_opts",
                            "ATP_SESSION_OPTS_INIT or "
                            "atp_session_opts_init()")) != 0)
        return rc;
    wd = opts->workdir ? opts->workdir : ".";
    if (realpath(wd, real) == NULL)
        return atp__error(ATP_E_CONFIG, "workdir %s: %s", wd,
                          errno == ENOENT ? "no such directory"
                                          : strerror(errno));
    if (stat(real, &st) != 0 || !S_ISDIR(st.st_mode))
        return atp__error(ATP_E_CONFIG, "workdir %s is not a directory", wd);
    if (faccessat(AT_FDCWD, real, R_OK | X_OK, AT_EACCESS) != 0)
        return atp__error(ATP_E_CONFIG, "workdir %s cannot be read and "
                          "entered (%s); fix its permissions or pick "
                          "another directory", wd, strerror(errno));
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return atp__error(ATP_E_NOMEM, "out of memory");
    s->be = be;
    s->cancel_pipe[0] = s->cancel_pipe[1] = -1;
    atp__secrets_init(&s->secrets);
    make_run_id(s->run_id, sizeof(s->run_id));
    if ((s->workdir = strdup(real)) == NULL) {
        rc = atp__error(ATP_E_NOMEM, "out of memory");
        goto fail;
    }
    if ((rc = build_env(s, opts->env)) != 0)
        goto fail;
    if ((rc = parse_mounts(s, opts->mounts)) != 0)
        goto fail;
    if (s->n_mounts && !(atp_backend_caps(be) & (ATP_CAP_MOUNTS |
                                                 ATP_CAP_ISOLATED_FS))) {
        rc = atp__error(ATP_E_UNSUPPORTED, "backend '%s' (plugin %s) does "
                        "not support mounts; drop -m or use a backend that "
                        "has the mounts capability (atp-run plugins)",
                        be->name, be->plugin->name);
        goto fail;
    }
    if (pipe2(s->cancel_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
        rc = atp__error(ATP_E_IO, "pipe: %s", strerror(errno));
        goto fail;
    }
    s->timeout_ms = opts->timeout_s > 0
                        ? (int64_t)(opts->timeout_s * 1000.0 + 0.5)
                        : be->cfg->set.timeout_ms;
    s->on_event = opts->on_event;
    s->event_payload = opts->event_payload;
    s->state = ATP__CREATED;
    *out = s;
    return 0;
fail:
    atp_session_free(s);
    return rc;
}

ATP_EXTERN const char *atp_session_run_id(const atp_session *s)
{
    return s->run_id;
}

ATP_EXTERN void atp_session_cancel(atp_session *s)
{
    /* Async-signal-safe: a flag and a write(2). */
    if (s == NULL)
        return;
    s->cancelled = 1;
    if (s->cancel_pipe[1] >= 0) {
        ssize_t w = write(s->cancel_pipe[1], "x", 1);

        (void)w;
    }
}

/* Provider-side lifetime: the budget plus every overhead, or ttl_s. */
static int64_t session_ttl(const struct atp_session *s, int one_shot)
{
    const struct atp__settings *set = &s->be->cfg->set;
    int64_t bound = s->timeout_ms + set->grace_ms + set->drain_ms +
                    set->exec_margin_ms + set->provision_timeout_ms +
                    set->close_timeout_ms;

    if (s->is_member && s->be->pool)
        /* Idle up to its age, then held by one more session. */
        return atp__pool_max_age_ms(s->be->pool) + set->ttl_ms;

    if (one_shot && s->timeout_ms > 0)
        return bound;
    return s->timeout_ms > 0 && bound > set->ttl_ms ? bound : set->ttl_ms;
}

/* The last lines of the warm-up's output, for its error message. */
struct tail {
    char buf[1024];
    size_t len;
};

static void keep_tail(int stream, const char *line, size_t len,
                      unsigned flags, void *payload)
{
    struct tail *t = payload;
    size_t room = sizeof(t->buf) - 1;

    (void)stream;
    (void)flags;
    if (len + 1 > room) {
        line += len + 1 - room;
        len = room - 1;
    }
    if (t->len + len + 1 > room) {
        size_t drop = t->len + len + 1 - room;

        memmove(t->buf, t->buf + drop, t->len - drop);
        t->len -= drop;
    }
    memcpy(t->buf + t->len, line, len);
    t->len += len;
    t->buf[t->len++] = '\n';
    t->buf[t->len] = '\0';
}

static int exec_impl(struct atp_session *s, const char *command,
                     const atp_exec_opts *opts, atp_result *res);
static int close_impl(struct atp_session *s, atp_result *res);

/*
 * Run the backend's `warmup` command, if configured, under its own
 * budget; a failure is a provision_error carrying the output's tail.
 */
static int warm_up(struct atp_session *s)
{
    const char *cmd = atp__backend_key(s->be, "warmup");
    const char *budget = atp__backend_key(s->be, "warmup_timeout_s");
    atp_exec_opts eo = ATP_EXEC_OPTS_INIT;
    atp_result r = ATP_RESULT_INIT;
    struct tail t;
    atp_field f[3];
    int64_t ms = 300000;
    int rc;

    if (cmd == NULL || cmd[0] == '\0')
        return 0;
    if (budget)
        atp__parse_duration_ms(budget, &ms);
    memset(&t, 0, sizeof(t));
    eo.timeout_s = (double)ms / 1000.0;
    eo.on_line = keep_tail;
    eo.line_payload = &t;
    rc = exec_impl(s, cmd, &eo, &r);
    f[0] = fstr("command", cmd);
    f[1] = (atp_field){"exit_code", ATP_FIELD_INT, NULL, r.exit_code, 0.0};
    f[2] = fdbl("seconds", r.duration_s);
    atp__session_event(s, "warmed_up", f, 3);
    if (rc)
        return atp__error(rc, "warm-up failed: %s", r.message);
    if (r.status == ATP_STATUS_TIMEOUT)
        return atp__error(ATP_E_PROVISION, "warm-up `%s` ran out of its %lld s "
                          "budget (warmup_timeout_s); last output:\n%s",
                          cmd, (long long)(ms / 1000), t.buf);
    if (r.status != ATP_STATUS_OK)
        return atp__error(ATP_E_PROVISION, "warm-up `%s` exited %d; last "
                          "output:\n%s", cmd, r.exit_code, t.buf);
    return 0;
}

static int nonblank(const char *s)
{
    return s && *s;
}

static void dir_base_free(struct atp_session *s);
static struct atp__manifest *dir_base(struct atp_session *s);

/* How the workdir reaches the sandbox of @s. */
enum { XFER_NONE, XFER_SYNC, XFER_MIRROR };

static int transfers(const struct atp_session *s)
{
    if (s->member_dir)
        return XFER_MIRROR; /* a warm sandbox of a shared-fs backend */
    return (s->be->plugin_caps & ATP_CAP_ISOLATED_FS) ? XFER_SYNC
                                                       : XFER_NONE;
}

/*
 * Bring the workdir in (@in) or back out.  A warm sandbox is made like
 * the workdir exactly (what an earlier session left is gone); a shared-fs
 * member's directory is mirrored on the host.
 */
static int move_workdir(struct atp_session *s, int in)
{
    const struct atp__settings *set = &s->be->cfg->set;
    struct atp__mirror_stats st;
    int64_t t0 = atp__now_ns();
    atp_field f[4];
    int rc;

    switch (transfers(s)) {
    case XFER_SYNC:
        if (!in)
            return atp__sync_pull(s);
        return s->member ? atp__sync_push_mirror(s) : atp__sync_push(s);
    case XFER_MIRROR:
        /* In: the directory is reset to the workdir exactly.  Out: what
         * the command changed there since comes back, and what changed
         * in the workdir meanwhile stays. */
        if (dir_base(s) == NULL)
            return atp__error(ATP_E_NOMEM, "out of memory");
        rc = in ? atp__tree_mirror(s->workdir, s->member_dir, set->excludes,
                                   0, set, NULL, s->dir_base, &st)
                : atp__tree_mirror(s->member_dir, s->workdir, set->excludes,
                                   1, set, s->dir_base, s->dir_base, &st);
        if (rc)
            return rc;
        if (in)
            s->push_bytes += st.bytes;
        else
            s->pull_bytes += st.bytes;
        f[0] = fstr("mode", "mirror");
        f[1] = (atp_field){"files", ATP_FIELD_INT, NULL, (int64_t)st.files,
                           0.0};
        f[2] = (atp_field){"bytes", ATP_FIELD_INT, NULL, (int64_t)st.bytes,
                           0.0};
        f[3] = fdbl("seconds", since_s(t0));
        atp__session_event(s, in ? "pushed" : "pulled", f, 4);
        return 0;
    default:
        return 0;
    }
}

/* The ledger names @s's own directory, for gc after a crash. */
static void lease_directory(struct atp_session *s)
{
    if (atp__lease_open_with(s, "directory", s->member_dir) != 0)
        atp__log(s->be->cfg, ATP_LOG_WARN, "core", "cannot record %s in "
                 "the ledger: %s", s->member_dir, atp_last_error());
}

/*
 * A session of a pooled shared-fs backend that provisions its own sandbox
 * works, as the pool's do, over a directory of its own: a copy of its
 * workdir, brought back when it pulls.
 */
static int own_directory(struct atp_session *s)
{
    const struct atp__settings *set = &s->be->cfg->set;
    const char *tmp = getenv("TMPDIR");
    struct atp__mirror_stats st;
    char dir[PATH_MAX];
    int rc;

    snprintf(dir, sizeof(dir), "%s/atp-pool-XXXXXX",
             tmp && *tmp ? tmp : "/tmp");
    if (mkdtemp(dir) == NULL)
        return atp__error(ATP_E_IO, "cannot create a directory for the "
                          "sandbox in %s: %s", tmp && *tmp ? tmp : "/tmp",
                          strerror(errno));
    if ((s->member_dir = strdup(dir)) == NULL) {
        atp__remove_tree(dir);
        return atp__error(ATP_E_NOMEM, "out of memory");
    }
    lease_directory(s);
    if (dir_base(s) == NULL)
        return atp__error(ATP_E_NOMEM, "out of memory");
    rc = atp__tree_mirror(s->workdir, dir, set->excludes, 0, set, NULL,
                          s->dir_base, &st);
    if (rc == 0)
        s->push_bytes += st.bytes;
    return rc;
}

/* A warm sandbox from the pool: reset to this session's workdir. */
static int start_pooled(struct atp_session *s, atp_result *res, int64_t t0)
{
    const struct atp__member *m = s->member;
    atp_field f[5];
    int64_t tp;
    int rc;

    s->state = ATP__OPEN;
    s->opened_ns = atp__now_ns();
    s->provision_s = since_s(t0);
    f[0] = fstr("run_id", s->run_id);
    f[1] = fdbl("seconds", s->provision_s);
    f[2] = (atp_field){"pool_uses", ATP_FIELD_INT, NULL, (int64_t)m->uses,
                       0.0};
    f[3] = fstr("image_id", s->image_id);
    atp__session_event(s, "provisioned", f, s->image_id[0] ? 4 : 3);
    tp = atp__now_ns();
    rc = move_workdir(s, 1);
    s->push_s += since_s(tp);
    if (rc) {
        char msg[1024];

        snprintf(msg, sizeof(msg), "%s", atp_last_error());
        s->infra_failed = 1;
        close_impl(s, NULL);
        if (res)
            res->duration_s = since_s(t0);
        return fail(s, res, s->cancelled ? ATP_E_CANCELLED : rc,
                    "resetting warm sandbox %s: %s", s->run_id, msg);
    }
    if (res) {
        res->duration_s = since_s(t0);
        account(s, res, 1);
        res->sandbox_s = 0;
    }
    return 0;
}

static int start(struct atp_session *s, atp_result *res, int one_shot)
{
    const struct atp__settings *set = &s->be->cfg->set;
    struct atp__plugin *p = s->be->plugin;
    atp_session_spec spec;
    atp_field f[4];
    atp_call call;
    int64_t t0 = atp__now_ns();
    int rc;

    result_reset(res);
    if (s->state != ATP__CREATED)
        return fail(s, res, ATP_E_INVAL, "session %s was already started",
                    s->run_id);
    if (s->cancelled)
        return fail(s, res, ATP_E_CANCELLED, "cancelled before the sandbox "
                    "was created");
    f[0] = fstr("backend", s->be->name);
    f[1] = fstr("plugin", p->name);
    f[2] = fstr("run_id", s->run_id);
    f[3] = fstr("workdir", s->workdir);
    atp__session_event(s, "starting", f, 4);
    if (s->be->pool && !s->is_member && s->n_mounts == 0) {
        int got = 0;

        rc = atp__pool_take(s->be->pool, s, &got);
        if (rc)
            return fail(s, res, rc, "%s", atp_last_error());
        if (got)
            return start_pooled(s, res, t0);
    }
    if ((atp_backend_caps(s->be) & ATP_CAP_GC) &&
        (rc = atp__lease_open(s)) != 0)
        return fail(s, res, rc, "%s", atp_last_error());

    if (s->be->pool && atp__pool_shared(s->be->pool) && !s->member_dir &&
        (rc = own_directory(s)) != 0) {
        atp__lease_close(s);
        s->state = ATP__CLOSED;
        return fail(s, res, rc, "%s", atp_last_error());
    }
    memset(&spec, 0, sizeof(spec));
    spec.struct_size = sizeof(spec);
    spec.run_id = s->run_id;
    spec.workdir = s->member_dir ? s->member_dir : s->workdir;
    spec.sandbox_workdir = set->sandbox_workdir;
    spec.image = set->image;
    spec.env = (const char *const *)s->env.v;
    spec.mounts = s->mounts;
    spec.n_mounts = s->n_mounts;
    spec.timeout_ms = s->timeout_ms;
    spec.ttl_ms = session_ttl(s, one_shot);
    if (one_shot && ATP__OPS_HAS(p, group_open))
        spec.group = s->group;
    /* A warm-up is an exec of its own: then more than one follows. */
    spec.flags = one_shot && !nonblank(atp__backend_key(s->be, "warmup"))
                     ? ATP_SESSION_ONE_SHOT
                     : 0;

    atp__call_init(&call, p, s->be, s, set->provision_timeout_ms);
    rc = p->ops->session_open(&call, s->be->handle, &spec, &s->handle);
    if (rc) {
        /* The plugin removed what it made; a lease with resources left
         * in it stays behind for `atp-run gc`. */
        atp__lease_close(s);
        s->state = ATP__CLOSED;
        if (res)
            res->duration_s = since_s(t0);
        if (rc == ATP_E_CANCELLED || s->cancelled)
            return fail(s, res, ATP_E_CANCELLED, "cancelled while creating "
                        "the sandbox");
        return fail(s, res, rc, "backend '%s': %s", s->be->name,
                    atp__call_message(&call, rc));
    }
    s->state = ATP__OPEN;
    s->opened_ns = t0;
    s->provision_s = since_s(t0);
    if (s->image_id[0] == '\0' && s->be->image_id[0]) {
        pthread_mutex_lock(&s->be->pin_lock);
        snprintf(s->image_id, sizeof(s->image_id), "%s", s->be->image_id);
        pthread_mutex_unlock(&s->be->pin_lock);
    }
    if (set->require_pinned && s->image_id[0] == '\0' &&
        atp__backend_pins(s->be)) {
        close_impl(s, NULL);
        if (res)
            res->duration_s = since_s(t0);
        return fail(s, res, ATP_E_CONFIG, "backend '%s' did not resolve its "
                    "image to an immutable id, and [image] require_pinned "
                    "is set: use a plugin that reports image ids, or unset "
                    "require_pinned", s->be->name);
    }
    {
        /* What the image carries, as the configuration says, goes with
         * the run's record. */
        const char *tc = atp_config_get(s->be->cfg, "image",
                                        "lean_toolchain");
        const char *mr = atp_config_get(s->be->cfg, "image", "mathlib_rev");
        atp_field g[6];
        size_t n = 0;

        g[n++] = fstr("run_id", s->run_id);
        g[n++] = fdbl("seconds", s->provision_s);
        if (s->image_id[0])
            g[n++] = fstr("image_id", s->image_id);
        if (s->be->image_digest[0])
            g[n++] = fstr("image_digest", s->be->image_digest);
        if (tc && *tc)
            g[n++] = fstr("lean_toolchain", tc);
        if (mr && *mr)
            g[n++] = fstr("mathlib_rev", mr);
        atp__session_event(s, "provisioned", g, n);
    }
    if (transfers(s) == XFER_SYNC) {
        int64_t tp = atp__now_ns();
        size_t i;

        /* The sandbox cannot see the host: push the mounts, then the
         * workdir. */
        for (i = 0, rc = 0; rc == 0 && i < s->n_mounts; i++)
            rc = atp__sync_push_dir(s, s->mounts[i].host, s->mounts[i].dest);
        if (rc == 0)
            rc = atp__sync_push(s);
        s->push_s += since_s(tp);
        if (rc) {
            char msg[1024];

            snprintf(msg, sizeof(msg), "%s", atp_last_error());
            close_impl(s, NULL);
            if (res)
                res->duration_s = since_s(t0);
            return fail(s, res, s->cancelled ? ATP_E_CANCELLED : rc, "%s",
                        msg);
        }
    }
    if ((rc = warm_up(s)) != 0) {
        char msg[1024];

        snprintf(msg, sizeof(msg), "%s", atp_last_error());
        close_impl(s, NULL);
        if (res)
            res->duration_s = since_s(t0);
        return fail(s, res, s->cancelled ? ATP_E_CANCELLED : rc, "%s", msg);
    }
    if (res) {
        res->duration_s = since_s(t0);
        account(s, res, 1);
        res->sandbox_s = 0; /* it has only begun */
    }
    return 0;
}

ATP_EXTERN int atp_session_start(atp_session *s, atp_result *res)
{
    atp_result r = ATP_RESULT_INIT;
    int rc;

    if ((rc = result_ok(res)) != 0 || (rc = enter(s)) != 0)
        return rc;
    rc = start(s, &r, 0);
    leave(s);
    result_out(res, &r);
    return rc;
}

/* ---- exec ------------------------------------------------------------ */

struct exec_ctx {
    struct atp_session *s;
    const atp_exec_opts *opts;
    atp__framer fr[2];
    int64_t limit[2];
    uint64_t delivered[2];
    uint64_t bytes[2];
    int stopped[2];
    int spill_fd[2];
    char spill_path[2][PATH_MAX];
    int spill_failed;
};

static void deliver(int stream, const char *line, size_t len, unsigned flags,
                    void *payload)
{
    struct exec_ctx *x = payload;
    int i = stream == ATP_STDERR;

    if (x->stopped[i])
        return;
    if (x->limit[i] > 0 && x->delivered[i] + len > (uint64_t)x->limit[i]) {
        /* Over the limit: deliver no more of this stream. */
        x->stopped[i] = 1;
        return;
    }
    x->delivered[i] += len + ((flags & ATP_LINE_PARTIAL) ? 0 : 1);
    if (x->opts && x->opts->on_line)
        x->opts->on_line(stream, line, len, flags, x->opts->line_payload);
}

static void spill(struct exec_ctx *x, int i, const void *buf, size_t len)
{
    const char *dir = x->s->be->cfg->set.spill_dir;
    const char *p = buf;

    if (dir == NULL || x->spill_failed)
        return;
    if (x->spill_fd[i] < 0) {
        snprintf(x->spill_path[i], sizeof(x->spill_path[i]), "%s/%s-%u.%s",
                 dir, x->s->run_id, x->s->n_cmd, i ? "stderr" : "stdout");
        /* Created here, 0600 whatever the umask: never a file or a link
         * that was there before (the run id is fresh). */
        x->spill_fd[i] = open(x->spill_path[i],
                              O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
                                  O_CLOEXEC,
                              0600);
        if (x->spill_fd[i] < 0) {
            x->spill_failed = 1;
            atp__log(x->s->be->cfg, ATP_LOG_WARN, "core", "cannot write "
                     "spill file %s: %s", x->spill_path[i], strerror(errno));
            return;
        }
    }
    while (len > 0) {
        ssize_t w = write(x->spill_fd[i], p, len);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            x->spill_failed = 1;
            return;
        }
        p += w;
        len -= (size_t)w;
    }
}

static int sink_output(void *ctx, int stream, const void *buf, size_t len)
{
    struct exec_ctx *x = ctx;
    int i;

    if (stream != ATP_STDOUT && stream != ATP_STDERR)
        return ATP_E_INVAL;
    i = stream == ATP_STDERR;
    x->bytes[i] += len;
    spill(x, i, buf, len);
    if (atp__framer_feed(&x->fr[i], buf, len) != 0)
        return ATP_E_NOMEM;
    if (x->opts && x->opts->on_flush)
        x->opts->on_flush(x->opts->line_payload);
    return x->s->cancelled ? ATP_E_CANCELLED : 0;
}

/*
 * The status class of a finished command.  Exit codes 124, 137 and 143
 * (and deaths by SIGTERM or SIGKILL) are a timeout only when the budget
 * was really spent: a command may exit 124 on its own.
 */
static atp_status classify(const atp_exec_outcome *o, int64_t timeout_ms,
                           int64_t elapsed_ms)
{
    int budget_spent = timeout_ms > 0 && elapsed_ms >= timeout_ms;

    if (o->flags & ATP_OUTCOME_CANCELLED)
        return ATP_STATUS_CANCELLED;
    if (o->flags & ATP_OUTCOME_TIMED_OUT)
        return ATP_STATUS_TIMEOUT;
    if (budget_spent &&
        (o->exit_code == 124 || o->exit_code == 137 || o->exit_code == 143 ||
         o->signal == SIGTERM || o->signal == SIGKILL))
        return ATP_STATUS_TIMEOUT;
    if (o->signal == 0 && o->exit_code == 0)
        return ATP_STATUS_OK;
    return ATP_STATUS_EXIT;
}

/* Exposed for the unit tests. */
atp_status atp__classify(const atp_exec_outcome *o, int64_t timeout_ms,
                         int64_t elapsed_ms);
atp_status atp__classify(const atp_exec_outcome *o, int64_t timeout_ms,
                         int64_t elapsed_ms)
{
    return classify(o, timeout_ms, elapsed_ms);
}

/*
 * One shape per outcome on every backend: what ended the command is
 * reported as exit_code -1 and the signal, whichever way the backend
 * learnt it.  A backend that reports deaths by signal as 128+N says so
 * (ATP_OUTCOME_SIGNAL_AS_EXIT); a command under timeout(1) (@wrapped)
 * that ran out of its budget died of timeout's TERM (124, or 143 for
 * BusyBox) or KILL (137).  The core's own kills set the flags.
 */
void atp__outcome_normalize(atp_exec_outcome *o, const struct atp__exec *x,
                            int wrapped, int64_t elapsed_ms)
{
    if (x->timed_out)
        o->flags |= ATP_OUTCOME_TIMED_OUT;
    if (x->cancelled)
        o->flags |= ATP_OUTCOME_CANCELLED;
    if (o->signal == 0 && (o->flags & ATP_OUTCOME_SIGNAL_AS_EXIT) &&
        o->exit_code > 128 && o->exit_code <= 128 + 64) {
        o->signal = o->exit_code - 128;
        o->exit_code = -1;
    }
    if (wrapped && o->signal == 0 && x->plan.timeout_ms > 0 &&
        elapsed_ms >= x->plan.timeout_ms &&
        (o->exit_code == 124 || o->exit_code == 137 ||
         o->exit_code == 143)) {
        o->signal = o->exit_code == 137 ? SIGKILL : SIGTERM;
        o->exit_code = -1;
        o->flags |= ATP_OUTCOME_TIMED_OUT;
    }
}

void atp__exec_call(struct atp_session *s, atp_call *call,
                    struct atp__exec *x, const struct atp__exec_plan *plan,
                    atp__sink *sink, int64_t call_timeout_ms)
{
    atp__call_init(call, s->be->plugin, s->be, s, call_timeout_ms);
    atp__exec_init(x, plan);
    x->plan.backstop_ns = call->deadline_ns;
    x->in_progress = sink->progress;
    x->in_progress_ctx = sink->ctx;
    call->sink = sink;
    call->exec = x;
}

void atp__exec_spec_fit(const struct atp__plugin *p, atp_exec_spec *spec)
{
    if (p->abi_minor < 2) {
        spec->struct_size = ATP_EXEC_SPEC_SIZE_V1_0;
        spec->envp = NULL;
        spec->exec_id = NULL;
    }
}

/*
 * The backend stopped waiting before a stream's end came through its
 * transport (the drain ran out after the command exited): what followed
 * the bytes delivered may be missing.  Said in the result, never silently.
 */
static void output_cut(atp_result *res, uint32_t flags, int64_t drain_ms)
{
    int out = (flags & ATP_OUTCOME_STDOUT_CUT) != 0;
    int err = (flags & ATP_OUTCOME_STDERR_CUT) != 0;
    size_t n = strlen(res->message);

    res->stdout_truncated |= out;
    res->stderr_truncated |= err;
    snprintf(res->message + n, sizeof(res->message) - n,
             "%soutput may be incomplete: %s had not ended %.3g s after "
             "the command exited ([atp] drain_grace_s), when atp stopped "
             "waiting for it", n ? "; " : "",
             out && err ? "stdout and stderr" : out ? "stdout" : "stderr",
             MS_TO_S(drain_ms));
}

static int exec_impl(struct atp_session *s, const char *command,
                     const atp_exec_opts *opts, atp_result *res)
{
    const struct atp__settings *set = &s->be->cfg->set;
    struct atp__plugin *p = s->be->plugin;
    uint64_t caps = atp_backend_caps(s->be);
    int v12 = p->abi_minor >= 2;
    int kills_tree = (caps & ATP_CAP_KILLS_TREE) != 0;
    int announce = v12 && (caps & ATP_CAP_GROUP_SIGNALS) != 0;
    int measure = v12 && (caps & ATP_CAP_WRAPPER_USAGE) != 0;
    struct atp__exec_plan plan;
    struct atp__exec run;
    struct atp__wrapped w;
    struct exec_ctx x;
    atp_exec_spec spec;
    atp_exec_outcome out;
    atp__env env = {0}, all = {0};
    atp__sink sink;
    atp_call call;
    atp_field f[2];
    char exec_id[48];
    int64_t timeout_ms, backstop_ms, t0;
    int rc, i, stdin_fd = opts->stdin_fd;

    result_reset(res);
    if (command == NULL)
        return fail(s, res, ATP_E_INVAL, "no command given");
    if (s->state != ATP__OPEN)
        return fail(s, res, ATP_E_INVAL, "session %s is %s", s->run_id,
                    s->state == ATP__CREATED ? "not started"
                                             : "already closed");
    if (s->cancelled)
        return fail(s, res, ATP_E_CANCELLED, "session %s was cancelled",
                    s->run_id);
    if (stdin_fd >= 0 && !(caps & ATP_CAP_STDIN))
        return fail(s, res, ATP_E_UNSUPPORTED, "backend '%s' cannot feed "
                    "stdin to a command", s->be->name);
    if (stdin_fd >= 0 && fcntl(stdin_fd, F_GETFD) < 0)
        return fail(s, res, ATP_E_INVAL, "stdin_fd %d is not an open "
                    "descriptor", stdin_fd);
    /* The command's environment, merged and checked once: the session's
     * under this call's. */
    if ((rc = atp__env_merge(&env, opts->env)) != 0 ||
        (rc = atp__env_merge(&all, (const char *const *)s->env.v)) != 0 ||
        (rc = atp__env_merge(&all, (const char *const *)env.v)) != 0) {
        atp__env_free(&env);
        atp__env_free(&all);
        return fail(s, res, rc, "%s", atp_last_error());
    }
    atp__secrets_add_env(&s->secrets, &env);

    timeout_ms = opts->timeout_s > 0
                     ? (int64_t)(opts->timeout_s * 1000.0 + 0.5)
                     : s->timeout_ms;
    rc = atp__wrap_measured(&w, command, atp__backend_warm_cache(s->be),
                            !kills_tree, announce, timeout_ms, set->grace_ms,
                            stdin_fd < 0, measure);
    if (rc) {
        atp__env_free(&env);
        atp__env_free(&all);
        return fail(s, res, rc, "out of memory");
    }

    memset(&x, 0, sizeof(x));
    x.s = s;
    x.opts = opts;
    x.limit[0] = set->stdout_limit;
    x.limit[1] = set->stderr_limit;
    x.spill_fd[0] = x.spill_fd[1] = -1;
    atp__framer_init(&x.fr[0], ATP_STDOUT, (size_t)set->max_line, deliver,
                     &x);
    atp__framer_init(&x.fr[1], ATP_STDERR, (size_t)set->max_line, deliver,
                     &x);

    s->n_cmd++;
    s->n_exec++;
    snprintf(exec_id, sizeof(exec_id), "%s.%u", s->run_id, s->n_exec);
    /* The mark that finds what leaves the command's process group. */
    if (atp__env_set(&all, "ATP_EXEC_ID", 11, exec_id) != 0) {
        atp__wrapped_release(&w);
        atp__env_free(&env);
        atp__env_free(&all);
        return fail(s, res, ATP_E_NOMEM, "out of memory");
    }
    memset(&spec, 0, sizeof(spec));
    spec.struct_size = sizeof(spec);
    spec.flags = stdin_fd >= 0 ? ATP_EXEC_STDIN : 0;
    spec.argv = w.argv;
    spec.env = (const char *const *)env.v;
    spec.timeout_ms = timeout_ms;
    spec.grace_ms = set->grace_ms > 0 ? set->grace_ms : 1;
    spec.drain_ms = set->drain_ms;
    spec.envp = (const char *const *)all.v;
    spec.exec_id = exec_id;
    memset(&out, 0, sizeof(out));
    out.struct_size = sizeof(out);
    out.exit_code = -1;
    out.cpu_ns = out.max_rss_bytes = -1;

    sink.output = sink_output;
    sink.ctx = &x;
    sink.stdin_fd = stdin_fd;
    sink.progress = NULL;
    /* The host backstop: budget, grace, drain and a margin. */
    backstop_ms = timeout_ms > 0 ? timeout_ms + set->grace_ms +
                                       set->drain_ms + set->exec_margin_ms
                                 : 0;
    memset(&plan, 0, sizeof(plan));
    plan.timeout_ms = timeout_ms;
    plan.grace_ms = spec.grace_ms;
    plan.drain_ms = set->drain_ms;
    plan.enforce_budget = kills_tree;
    plan.announce_pgid = announce;
    plan.usage = measure;
    plan.stdin_fd = stdin_fd;
    plan.exec_id = exec_id;
    atp__exec_call(s, &call, &run, &plan, &sink, backstop_ms);
    run.envp = spec.envp;
    atp__exec_spec_fit(p, &spec);
    f[0] = fstr("command", command);
    f[1] = fdbl("timeout_s", MS_TO_S(timeout_ms));
    atp__session_event(s, "exec", f, 2);

    t0 = atp__now_ns();
    rc = p->ops->exec(&call, s->handle, &spec, &out);
    if (run.sniffing && run.sniff_len > 0)
        sink_output(&x, ATP_STDOUT, run.sniff, run.sniff_len);
    atp__exec_record_drop(&run);
    if (rc == 0)
        atp__exec_usage_apply(&run, &out);
    for (i = 0; i < 2; i++) {
        atp__framer_finish(&x.fr[i]);
        atp__framer_release(&x.fr[i]);
        if (x.spill_fd[i] >= 0)
            close(x.spill_fd[i]);
    }
    if (opts->on_flush)
        opts->on_flush(opts->line_payload);
    atp__wrapped_release(&w);
    atp__env_free(&env);
    atp__env_free(&all);

    if (res) {
        int64_t queued = run.queue_ns + (run.queued_since
                                             ? atp__now_ns() - run.queued_since
                                             : 0);

        res->duration_s = since_s(t0);
        res->queue_s = (double)queued / 1e9;
        res->exec_s = res->duration_s - res->queue_s;
        res->stdout_bytes = x.bytes[0];
        res->stderr_bytes = x.bytes[1];
        res->stdout_truncated = x.stopped[0];
        res->stderr_truncated = x.stopped[1];
    }
    for (i = 0; i < 2; i++) {
        if (x.spill_fd[i] >= 0) {
            f[0] = fstr("stream", i ? "stderr" : "stdout");
            f[1] = fstr("path", x.spill_path[i]);
            atp__session_event(s, "spilled", f, 2);
        }
    }
    atp__exec_release(&run);
    if (rc && rc != ATP_E_CANCELLED)
        s->infra_failed = 1;
    if (rc) {
        if (rc == ATP_E_CANCELLED || s->cancelled)
            return fail(s, res, ATP_E_CANCELLED, "cancelled");
        return fail(s, res, rc, "backend '%s': %s", s->be->name,
                    atp__call_message(&call, rc));
    }
    {
        int64_t elapsed_ms = (atp__now_ns() - t0 - run.queue_ns) / 1000000;

        if (v12)
            atp__outcome_normalize(&out, &run, !kills_tree, elapsed_ms);
        else
            atp__outcome_normalize(&out, &(struct atp__exec){.plan = plan},
                                   !kills_tree, elapsed_ms);
        if (res) {
            res->exit_code = out.exit_code;
            res->signal = out.signal;
            res->status = classify(&out, timeout_ms, elapsed_ms);
            if (res->status == ATP_STATUS_TIMEOUT)
                snprintf(res->message, sizeof(res->message),
                         "the command ran out of its %.3g s budget",
                         MS_TO_S(timeout_ms));
            else if (res->status == ATP_STATUS_CANCELLED)
                snprintf(res->message, sizeof(res->message), "cancelled");
            if (out.flags & (ATP_OUTCOME_STDOUT_CUT | ATP_OUTCOME_STDERR_CUT))
                output_cut(res, out.flags, set->drain_ms);
            if ((out.flags & ATP_OUTCOME_USAGE) &&
                out.struct_size >= ATP_EXEC_OUTCOME_SIZE_V1_2 && v12) {
                res->cpu_s = out.cpu_ns >= 0 ? (double)out.cpu_ns / 1e9
                                             : -1;
                res->max_rss_bytes = out.max_rss_bytes >= 0
                                         ? out.max_rss_bytes
                                         : -1;
            }
            account(s, res, 0);
        }
    }
    if (out.flags & ATP_OUTCOME_CANCELLED)
        return atp__error(ATP_E_CANCELLED, "cancelled");
    return 0;
}

ATP_EXTERN int atp_session_exec(atp_session *s, const char *command,
                                const atp_exec_opts *opts, atp_result *res)
{
    atp_result r = ATP_RESULT_INIT;
    atp_exec_opts o;
    int rc;

    if ((rc = result_ok(res)) != 0 || (rc = enter(s)) != 0)
        return rc;
    rc = exec_opts_in(&o, opts);
    if (rc)
        fail(s, &r, rc, "%s", atp_last_error());
    else
        rc = exec_impl(s, command, &o, &r);
    leave(s);
    result_out(res, &r);
    return rc;
}

/* Push (in) or pull (out) the workdir of an isolated session. */
static int sync_dir(atp_session *s, atp_result *res, int in)
{
    int64_t t0 = atp__now_ns();
    uint64_t bytes0;
    int rc;

    result_reset(res);
    if (s->state != ATP__OPEN)
        return fail(s, res, ATP_E_INVAL, "session %s is not open",
                    s->run_id);
    if (s->cancelled)
        return fail(s, res, ATP_E_CANCELLED, "session %s was cancelled",
                    s->run_id);
    if (transfers(s) == XFER_NONE)
        return 0; /* shared filesystem: nothing to do */
    bytes0 = in ? s->push_bytes : s->pull_bytes;
    rc = move_workdir(s, in);
    if (rc && rc != ATP_E_CANCELLED)
        s->infra_failed = 1;
    if (in)
        s->push_s += since_s(t0);
    else
        s->pull_s += since_s(t0);
    if (res) {
        res->duration_s = since_s(t0);
        if (in) {
            res->push_s = res->duration_s;
            res->push_bytes = s->push_bytes - bytes0;
        } else {
            res->pull_s = res->duration_s;
            res->pull_bytes = s->pull_bytes - bytes0;
        }
    }
    if (rc)
        return fail(s, res, s->cancelled ? ATP_E_CANCELLED : rc, "%s",
                    atp_last_error());
    return 0;
}

static int sync_public(atp_session *s, atp_result *res, int in)
{
    atp_result r = ATP_RESULT_INIT;
    int rc;

    if ((rc = result_ok(res)) != 0 || (rc = enter(s)) != 0)
        return rc;
    rc = sync_dir(s, &r, in);
    leave(s);
    result_out(res, &r);
    return rc;
}

ATP_EXTERN int atp_session_sync_in(atp_session *s, atp_result *res)
{
    return sync_public(s, res, 1);
}

ATP_EXTERN int atp_session_sync_out(atp_session *s, atp_result *res)
{
    return sync_public(s, res, 0);
}

static int close_impl(struct atp_session *s, atp_result *res)
{
    struct atp__plugin *p;
    atp_call call;
    atp_field f[2];
    int64_t t0 = atp__now_ns();
    int rc;

    if (s->state != ATP__OPEN) {
        s->state = ATP__CLOSED;
        return 0;
    }
    if (s->member && atp__pool_put(s->be->pool, s)) {
        /* Back to the pool, warm. */
        s->state = ATP__CLOSED;
        f[0] = fstr("run_id", s->run_id);
        f[1] = fdbl("seconds", since_s(t0));
        atp__session_event(s, "closed", f, 2);
        return 0;
    }
    p = s->be->plugin;
    atp__call_init(&call, p, s->be, s, s->be->cfg->set.close_timeout_ms);
    call.cancellable = 0; /* teardown runs even after cancellation */
    rc = p->ops->session_close(&call, s->handle);
    s->state = ATP__CLOSED;
    f[0] = fstr("run_id", s->run_id);
    f[1] = fdbl("seconds", since_s(t0));
    atp__session_event(s, "closed", f, 2);
    if (rc) {
        /* The lease stays: `atp-run gc` will find what is left. */
        char msg[1024];

        atp__format_redacted(msg, sizeof(msg), &s->secrets, &s->be->secrets,
                             "backend '%s': teardown of %s failed: %s; run "
                             "`atp-run gc` to reap what is left",
                             s->be->name, s->run_id,
                             atp__call_message(&call, rc));
        if (res) {
            result_reset(res);
            atp__result_fail(res, rc, msg);
        }
        atp__error_set_text(msg);
        return rc;
    }
    atp__lease_close(s);
    return 0;
}

ATP_EXTERN int atp_session_close(atp_session *s, atp_result *res)
{
    atp_result r = ATP_RESULT_INIT;
    int rc;

    if (s == NULL)
        return 0;
    if ((rc = result_ok(res)) != 0 || (rc = enter(s)) != 0)
        return rc;
    rc = close_impl(s, &r);
    leave(s);
    if (res && rc)
        result_out(res, &r);
    return rc;
}

ATP_EXTERN void atp_session_free(atp_session *s)
{
    if (s == NULL)
        return;
    close_impl(s, NULL);
    if (s->handle)
        s->be->plugin->ops->session_free(s->handle);
    if (s->cancel_pipe[0] >= 0)
        close(s->cancel_pipe[0]);
    if (s->cancel_pipe[1] >= 0)
        close(s->cancel_pipe[1]);
    atp__xfer_free(s->xfer);
    if (s->member_dir) {
        atp__remove_tree(s->member_dir);
        free(s->member_dir);
    }
    dir_base_free(s);
    atp__env_free(&s->env);
    atp__secrets_free(&s->secrets);
    free(s->mounts);
    free(s->mount_buf);
    free(s->workdir);
    free(s->lease);
    free(s);
}

static int run_impl(struct atp_session *s, const char *command,
                    const atp_exec_opts *eopts, int pull, atp_result *res)
{
    atp_result closing = ATP_RESULT_INIT;
    int rc, crc;

    rc = start(s, res, 1);
    if (rc)
        return rc;
    rc = exec_impl(s, command, eopts, res);
    if (rc == 0 && pull && transfers(s) != XFER_NONE && !s->cancelled) {
        atp_result pres = ATP_RESULT_INIT;

        rc = sync_dir(s, &pres, 0);
        if (rc && res) {
            res->status = pres.status;
            memcpy(res->message, pres.message, sizeof(res->message));
        }
    }
    crc = close_impl(s, &closing);
    if (res && res->exec_s > 0)
        account(s, res, 1);
    if (crc && rc == 0) {
        if (res) {
            res->status = closing.status;
            memcpy(res->message, closing.message, sizeof(res->message));
        }
        rc = crc;
    }
    if (rc && s->cancelled && res)
        res->status = ATP_STATUS_CANCELLED;
    return rc;
}

ATP_EXTERN int atp_session_run(atp_session *s, const char *command,
                               const atp_exec_opts *eopts, int pull,
                               atp_result *res)
{
    atp_result r = ATP_RESULT_INIT;
    atp_exec_opts o;
    int rc;

    if ((rc = result_ok(res)) != 0 || (rc = enter(s)) != 0)
        return rc;
    rc = exec_opts_in(&o, eopts);
    if (rc)
        fail(s, &r, rc, "%s", atp_last_error());
    else
        rc = run_impl(s, command, &o, pull, &r);
    leave(s);
    result_out(res, &r);
    return rc;
}

ATP_EXTERN int atp_run(atp_backend *be, const atp_session_opts *sopts,
                       const char *command, const atp_exec_opts *eopts,
                       int pull, atp_result *res)
{
    atp_result r = ATP_RESULT_INIT;
    atp_session *s;
    int rc;

    if ((rc = result_ok(res)) != 0)
        return rc;
    rc = atp_session_create(&s, be, sopts);
    if (rc) {
        atp__result_fail(&r, rc, atp_last_error());
        result_out(res, &r);
        return rc;
    }
    rc = atp_session_run(s, command, eopts, pull, &r);
    atp_session_free(s);
    result_out(res, &r);
    return rc;
}

/* ---- warm pools: members ------------------------------------------------ */

static void dir_base_free(struct atp_session *s)
{
    if (s->dir_base) {
        atp__manifest_free(s->dir_base);
        free(s->dir_base);
        s->dir_base = NULL;
    }
}

/* The baseline of @s's next pull from its own directory. */
static struct atp__manifest *dir_base(struct atp_session *s)
{
    if (s->dir_base == NULL)
        s->dir_base = calloc(1, sizeof(*s->dir_base));
    return s->dir_base;
}

void atp__member_attach(struct atp_session *s, struct atp__member *m)
{
    s->member = m;
    s->handle = m->handle;
    atp__xfer_free(s->xfer);
    s->xfer = m->xfer;
    free(s->lease);
    s->lease = m->lease;
    snprintf(s->run_id, sizeof(s->run_id), "%s", m->run_id);
    s->processes_leased = m->processes_leased;
    s->n_exec = m->n_exec;
    snprintf(s->image_id, sizeof(s->image_id), "%s", m->image_id);
    s->member_dir = m->dir;
    dir_base_free(s);
    s->dir_base = m->dir_base;
    m->dir_base = NULL;
    m->handle = NULL;
    m->xfer = NULL;
    m->lease = NULL;
    m->dir = NULL;
    m->uses++;
}

void atp__member_detach(struct atp_session *s, struct atp__member *m)
{
    m->handle = s->handle;
    m->xfer = s->xfer;
    m->lease = s->lease;
    snprintf(m->run_id, sizeof(m->run_id), "%s", s->run_id);
    m->processes_leased = s->processes_leased;
    m->n_exec = s->n_exec;
    snprintf(m->image_id, sizeof(m->image_id), "%s", s->image_id);
    m->dir = s->member_dir;
    m->dir_base = s->dir_base;
    s->dir_base = NULL;
    s->handle = NULL;
    s->xfer = NULL;
    s->lease = NULL;
    s->member_dir = NULL;
    s->member = NULL;
}

int atp__member_warm(atp_backend *be, const char *base,
                     struct atp__member **out)
{
    const struct atp__settings *set = &be->cfg->set;
    atp_session_opts o = ATP_SESSION_OPTS_INIT;
    struct atp__member *m;
    struct atp__mirror_stats st;
    struct atp_session *w = NULL;
    char dir[PATH_MAX];
    int rc;

    *out = NULL;
    if ((m = calloc(1, sizeof(*m))) == NULL)
        return atp__error(ATP_E_NOMEM, "out of memory");
    dir[0] = '\0';
    if (atp__pool_shared(be->pool)) {
        /* A directory of its own, which the sandbox sees. */
        const char *tmp = getenv("TMPDIR");

        snprintf(dir, sizeof(dir), "%s/atp-pool-XXXXXX",
                 tmp && *tmp ? tmp : "/tmp");
        if (mkdtemp(dir) == NULL) {
            free(m);
            return atp__error(ATP_E_IO, "cannot create a directory for a "
                              "warm sandbox in %s: %s",
                              tmp && *tmp ? tmp : "/tmp", strerror(errno));
        }
        if ((rc = atp__tree_mirror(base, dir, set->excludes, 0, set, NULL,
                                   NULL, &st)) != 0)
            goto fail;
    }
    o.workdir = dir[0] ? dir : base;
    if ((rc = atp_session_create(&w, be, &o)) != 0)
        goto fail;
    w->is_member = 1;
    if (dir[0] && (w->member_dir = strdup(dir)) == NULL) {
        rc = atp__error(ATP_E_NOMEM, "out of memory");
        goto fail;
    }
    dir[0] = '\0'; /* w owns it now */
    lease_directory(w);
    if ((rc = start(w, NULL, 0)) != 0)
        goto fail;
    m->born_ns = w->opened_ns;
    m->provision_s = w->provision_s;
    atp__member_detach(w, m);
    w->state = ATP__CLOSED;
    atp_session_free(w);
    *out = m;
    return 0;
fail:
    if (w)
        atp_session_free(w); /* tears down what start made */
    if (dir[0])
        atp__remove_tree(dir);
    free(m);
    return rc;
}

void atp__member_discard(atp_backend *be, struct atp__member *m)
{
    atp_session_opts o = ATP_SESSION_OPTS_INIT;
    struct atp_session *w = NULL;

    if (m == NULL)
        return;
    o.workdir = "/";
    if (atp_session_create(&w, be, &o) == 0) {
        w->is_member = 1;
        atp__member_attach(w, m);
        w->member = NULL; /* a real close, not a return to the pool */
        w->state = ATP__OPEN;
        close_impl(w, NULL);
        atp_session_free(w);
    }
    /* What could not be torn down stays in the ledger for gc. */
    free(m->lease);
    atp__xfer_free(m->xfer);
    if (m->dir_base) {
        atp__manifest_free(m->dir_base);
        free(m->dir_base);
    }
    if (m->dir)
        atp__remove_tree(m->dir);
    free(m->dir);
    free(m);
}
