/*
 * core/pool.c - warm pools: sandboxes provisioned ahead and reused.
 *
 * [backend.NAME] pool = N keeps up to N sandboxes of the backend alive:
 * warmed (provisioned, the workdir of the first session that asked
 * pushed, the warm-up run) by background threads, handed to sessions
 * when they start, and taken back when they close unless they are past
 * pool_max_uses or pool_max_age_s, or a command or transfer of theirs
 * failed for the infrastructure, or they were cancelled: those are torn
 * down and replaced.  A session that takes a member has its workdir
 * mirrored in (what the last session left is gone) and back when it
 * pulls.  Every member is a lease in the ledger from its creation to its
 * teardown, so `atp-run gc` reaps a pool after a crash like any sandbox.
 *
 * A session that finds no member idle and none coming (all N in use)
 * provisions a sandbox of its own, as without a pool.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

#define MAX_WARMERS 8
#define BACKOFF_MAX_MS 30000

struct atp__pool {
    atp_backend *be;
    unsigned size, max_uses;
    int64_t max_age_ms;
    int shared;                  /* the plugin's sandboxes share our fs */
    pthread_mutex_t lock;
    pthread_cond_t changed;      /* a member became idle, or left */
    pthread_cond_t need;         /* the warmers have work, or stop */
    struct atp__member *idle;
    unsigned n_idle, n_busy, n_warming;
    char *base;                  /* workdir the members are warmed with */
    pthread_t warmers[MAX_WARMERS];
    unsigned n_warmers;
    int started, closing;
    int failures;                /* warm-ups failed in a row */
    char last_error[1024];
};

int atp__pool_new(atp_backend *be, struct atp__pool **out)
{
    struct atp__pool *p;
    const char *v;
    int64_t n = 0, uses = 100, age = 3600000;

    *out = NULL;
    if ((v = atp__backend_key(be, "pool")) != NULL)
        atp__parse_int(v, &n);
    if (n <= 0)
        return 0;
    if (be->plugin->abi_minor < 2)
        return atp__error(ATP_E_CONFIG, "%s: [backend.%s] pool: plugin %s "
                          "was built for plugin ABI 1.%u; warm pools need "
                          "1.2 (the environment given to each command)",
                          atp__config_name(be->cfg), be->name,
                          be->plugin->name, be->plugin->abi_minor);
    if (!(be->plugin_caps & (ATP_CAP_ISOLATED_FS | ATP_CAP_SHARED_FS)) ||
        !(be->plugin_caps & ATP_CAP_SESSIONS))
        return atp__error(ATP_E_CONFIG, "%s: [backend.%s] pool: plugin %s "
                          "does not keep sandboxes for several commands",
                          atp__config_name(be->cfg), be->name,
                          be->plugin->name);
    if ((v = atp__backend_key(be, "pool_max_uses")) != NULL)
        atp__parse_int(v, &uses);
    if ((v = atp__backend_key(be, "pool_max_age_s")) != NULL)
        atp__parse_duration_ms(v, &age);
    if (uses < 1 || age < 1)
        return atp__error(ATP_E_CONFIG, "%s: [backend.%s] pool_max_uses and "
                          "pool_max_age_s must be at least 1",
                          atp__config_name(be->cfg), be->name);
    p = calloc(1, sizeof(*p));
    if (p == NULL)
        return atp__error(ATP_E_NOMEM, "out of memory");
    p->be = be;
    p->size = n > 4096 ? 4096 : (unsigned)n;
    p->max_uses = uses > 1000000 ? 1000000 : (unsigned)uses;
    p->max_age_ms = age;
    p->shared = !(be->plugin_caps & ATP_CAP_ISOLATED_FS);
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->changed, NULL);
    pthread_cond_init(&p->need, NULL);
    *out = p;
    return 0;
}

int64_t atp__pool_max_age_ms(const struct atp__pool *p)
{
    return p->max_age_ms;
}

int atp__pool_shared(const struct atp__pool *p)
{
    return p->shared;
}

static int too_old(const struct atp__pool *p, const struct atp__member *m)
{
    return (atp__now_ns() - m->born_ns) / 1000000 >= p->max_age_ms;
}

/* Members the warmers should add now (under the lock). */
static unsigned wanted(const struct atp__pool *p)
{
    unsigned have = p->n_idle + p->n_busy + p->n_warming;

    return p->closing || have >= p->size ? 0 : p->size - have;
}

static void timed_wait(pthread_cond_t *c, pthread_mutex_t *l, int64_t ms)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(c, l, &ts);
}

static void *warmer(void *arg)
{
    struct atp__pool *p = arg;

    pthread_mutex_lock(&p->lock);
    for (;;) {
        struct atp__member *m = NULL;
        int rc;

        while (!p->closing && wanted(p) == 0)
            pthread_cond_wait(&p->need, &p->lock);
        if (p->closing)
            break;
        if (p->failures > 0) {
            /* The backend is failing: do not hammer it. */
            int64_t ms = 500LL << (p->failures < 6 ? p->failures : 6);

            timed_wait(&p->need, &p->lock,
                       ms > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : ms);
            if (p->closing)
                break;
            if (wanted(p) == 0)
                continue;
        }
        p->n_warming++;
        pthread_mutex_unlock(&p->lock);
        rc = atp__member_warm(p->be, p->base, &m);
        pthread_mutex_lock(&p->lock);
        p->n_warming--;
        if (rc == 0) {
            p->failures = 0;
            if (p->closing) {
                pthread_mutex_unlock(&p->lock);
                atp__member_discard(p->be, m);
                pthread_mutex_lock(&p->lock);
                break;
            }
            m->next = p->idle;
            p->idle = m;
            p->n_idle++;
        } else {
            p->failures++;
            snprintf(p->last_error, sizeof(p->last_error), "%s",
                     atp_last_error());
            atp__log(p->be->cfg, ATP_LOG_WARN, "core", "backend '%s': a "
                     "warm sandbox could not be made: %s", p->be->name,
                     p->last_error);
        }
        pthread_cond_broadcast(&p->changed);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

/* First use: warm over @workdir (under the lock). */
static int pool_start(struct atp__pool *p, const char *workdir)
{
    unsigned i, n = p->size < MAX_WARMERS ? p->size : MAX_WARMERS;

    if ((p->base = strdup(workdir)) == NULL)
        return atp__error(ATP_E_NOMEM, "out of memory");
    for (i = 0; i < n; i++) {
        if (pthread_create(&p->warmers[i], NULL, warmer, p) != 0)
            break;
        p->n_warmers++;
    }
    if (p->n_warmers == 0)
        return atp__error(ATP_E_IO, "cannot start a thread to warm "
                          "sandboxes");
    p->started = 1;
    pthread_cond_broadcast(&p->need);
    return 0;
}

int atp__pool_take(struct atp__pool *p, struct atp_session *s, int *got)
{
    struct atp__member *m, *old = NULL;
    int rc = 0;

    *got = 0;
    pthread_mutex_lock(&p->lock);
    if (!p->started && (rc = pool_start(p, s->workdir)) != 0) {
        pthread_mutex_unlock(&p->lock);
        return rc;
    }
    for (;;) {
        while ((m = p->idle) != NULL) {
            p->idle = m->next;
            p->n_idle--;
            if (!too_old(p, m))
                break;
            m->next = old; /* torn down below, outside the lock */
            old = m;
        }
        if (old)
            pthread_cond_broadcast(&p->need);
        if (m != NULL || s->cancelled || p->closing)
            break;
        /* None idle: wait for one being warmed, unless the warm-ups fail
         * (then the session's own provisioning says why, in its time). */
        if ((p->n_warming == 0 && wanted(p) == 0) || p->failures > 0)
            break;
        timed_wait(&p->changed, &p->lock, 100);
    }
    if (m) {
        m->next = NULL;
        p->n_busy++;
    }
    pthread_mutex_unlock(&p->lock);
    while (old) {
        struct atp__member *next = old->next;

        atp__member_discard(p->be, old);
        old = next;
    }
    if (m) {
        atp__member_attach(s, m);
        *got = 1;
    }
    return 0;
}

int atp__pool_put(struct atp__pool *p, struct atp_session *s)
{
    struct atp__member *m = s->member;
    int keep;

    pthread_mutex_lock(&p->lock);
    keep = !p->closing && !s->cancelled && !s->infra_failed &&
           m->uses < p->max_uses && !too_old(p, m);
    if (keep) {
        atp__member_detach(s, m);
        m->next = p->idle;
        p->idle = m;
        p->n_idle++;
        p->n_busy--;
        pthread_cond_broadcast(&p->changed);
    } else {
        /* The session tears the sandbox down; a warmer replaces it. */
        s->member = NULL;
        free(m);
        p->n_busy--;
        pthread_cond_broadcast(&p->need);
    }
    pthread_mutex_unlock(&p->lock);
    return keep;
}

void atp__pool_free(struct atp__pool *p)
{
    struct atp__member *m;
    unsigned i;

    if (p == NULL)
        return;
    pthread_mutex_lock(&p->lock);
    p->closing = 1;
    pthread_cond_broadcast(&p->need);
    pthread_cond_broadcast(&p->changed);
    pthread_mutex_unlock(&p->lock);
    for (i = 0; i < p->n_warmers; i++)
        pthread_join(p->warmers[i], NULL);
    while ((m = p->idle) != NULL) {
        p->idle = m->next;
        atp__member_discard(p->be, m);
    }
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->changed);
    pthread_cond_destroy(&p->need);
    free(p->base);
    free(p);
}
