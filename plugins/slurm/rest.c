/*
 * plugins/slurm/rest.c - slurmrestd over libcurl: over its unix socket
 * (rest_auth/local: the kernel says who we are) or http(s) with a JSON
 * web token in X-SLURM-USER-NAME / X-SLURM-USER-TOKEN.
 *
 * Each request runs on a multi handle that waits with the call's cancel
 * descriptor among the watched ones, against api_timeout_s and the
 * call's deadline; a cleanup request (a cancel) ignores both the cancel
 * and the call's deadline.  One connection per session, kept alive.
 *
 * There is no version negotiation: the version is found by probing
 * GET /slurm/vX/ping from the newest atp speaks down to v0.0.38 (a
 * version the server has not loaded answers 404), once per backend,
 * unless api_version pins one.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sl.h"

#define BODY_MAX (256 * 1024 * 1024) /* GET /jobs on a big cluster */

/* Newest first; each is the v0.0.40+ dialect but the last. */
static const char *const versions[] = {
    "v0.0.46", "v0.0.45", "v0.0.44", "v0.0.43", "v0.0.42",
    "v0.0.41", "v0.0.40", "v0.0.38", NULL};

struct reply {
    long status;
    char *body;
    size_t len, cap;
    int too_big;
    json_object *json; /* the body parsed, when it is JSON */
    char msg[512];     /* the first error of "errors", or the text */
    long errnum;       /* its Slurm error number */
};

static void reply_free(struct reply *r)
{
    free(r->body);
    json_object_put(r->json);
    memset(r, 0, sizeof(*r));
}

static size_t on_write(char *p, size_t size, size_t n, void *ud)
{
    struct reply *r = ud;
    size_t len = size * n;

    if (r->len + len + 1 > BODY_MAX) {
        r->too_big = 1;
        return 0;
    }
    if (r->len + len + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 16384;
        char *grown;

        while (cap < r->len + len + 1)
            cap *= 2;
        grown = realloc(r->body, cap);
        if (grown == NULL)
            return 0;
        r->body = grown;
        r->cap = cap;
    }
    memcpy(r->body + r->len, p, len);
    r->len += len;
    r->body[r->len] = '\0';
    return len;
}

/* Parse the body and find its error message. */
static void reply_digest(struct reply *r)
{
    json_tokener *tok;

    if (r->body == NULL || r->len == 0)
        return;
    tok = json_tokener_new();
    if (tok) {
        r->json = json_tokener_parse_ex(tok, r->body, (int)r->len);
        json_tokener_free(tok);
    }
    if (r->json && !json_object_is_type(r->json, json_type_object)) {
        json_object_put(r->json);
        r->json = NULL;
    }
    if (r->json == NULL || !sl_reply_error(r->json, r->msg, sizeof(r->msg),
                                           &r->errnum)) {
        if (r->status >= 300 && r->json == NULL) {
            /* Not JSON ("Authentication failure"): its first line. */
            size_t n = strcspn(r->body, "\r\n");

            if (n >= sizeof(r->msg))
                n = sizeof(r->msg) - 1;
            memcpy(r->msg, r->body, n);
            r->msg[n] = '\0';
        }
    }
}

struct sl_conn *sl_conn_new(struct sl_backend *be)
{
    struct sl_conn *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    c->be = be;
    if (be->mode == SL_MODE_REST) {
        c->easy = curl_easy_init();
        c->multi = curl_multi_init();
        if (c->easy == NULL || c->multi == NULL) {
            sl_conn_free(c);
            return NULL;
        }
    }
    return c;
}

void sl_conn_free(struct sl_conn *c)
{
    if (c == NULL)
        return;
    if (c->easy)
        curl_easy_cleanup(c->easy);
    if (c->multi)
        curl_multi_cleanup(c->multi);
    free(c);
}

/* A transport failure, said so that a user knows what to do. */
static int transport_error(struct sl_conn *c, atp_call *call, CURLcode res,
                           const char *errbuf, const char *method,
                           const char *path)
{
    struct sl_backend *be = c->be;
    long oserr = 0;
    const char *why = errbuf[0] ? errbuf : curl_easy_strerror(res);

    curl_easy_getinfo(c->easy, CURLINFO_OS_ERRNO, &oserr);
    if (res == CURLE_COULDNT_CONNECT || res == CURLE_COULDNT_RESOLVE_HOST)
        return sl_host->set_error(call, ATP_E_BACKEND, "cannot connect to "
                                  "slurmrestd at %s: %s; is it running? (set "
                                  "[backend] url, or mode = cli)", be->display,
                                  oserr ? strerror((int)oserr) : why);
    return sl_host->set_error(call, ATP_E_BACKEND, "slurmrestd at %s failed "
                              "%s %s: %s", be->display, method, path, why);
}

/* The authentication headers, when the backend uses a token. */
static int auth_headers(struct sl_conn *c, atp_call *call,
                        struct curl_slist **hdrs)
{
    struct sl_backend *be = c->be;
    struct sl_buf b = {0};
    int rc;

    if (!be->jwt)
        return 0;
    pthread_mutex_lock(&be->lock);
    rc = sl_token_check(call, &be->token, be->jwt_file);
    if (rc == 0) {
        const char *user = be->user ? be->user : be->token.user;

        if (sl_buf_fmt(&b, "X-SLURM-USER-TOKEN: %s", be->token.value) == 0)
            *hdrs = curl_slist_append(*hdrs, b.s);
        if (user) {
            b.len = 0;
            if (sl_buf_fmt(&b, "X-SLURM-USER-NAME: %s", user) == 0)
                *hdrs = curl_slist_append(*hdrs, b.s);
        }
    }
    pthread_mutex_unlock(&be->lock);
    if (b.s)
        memset(b.s, 0, b.cap); /* the token */
    sl_buf_free(&b);
    return rc;
}

/*
 * One request: @path after the base URL, @body JSON or NULL.  Returns 0
 * once an answer came (whatever its status: the caller judges), else an
 * error with the message set.
 */
static int request(struct sl_conn *c, atp_call *call, const char *method,
                   const char *path, const char *body, int cleanup,
                   struct reply *r)
{
    struct sl_backend *be = c->be;
    struct curl_slist *hdrs = NULL;
    char url[2048], errbuf[CURL_ERROR_SIZE] = "";
    int64_t t0 = sl_host->now_ns(), deadline, call_deadline;
    int cancel_fd = cleanup ? -1 : sl_host->cancel_fd(call);
    CURLcode res = CURLE_OK;
    CURLMsg *msg;
    int running = 1, left, rc;
    CURL *e = c->easy;

    memset(r, 0, sizeof(*r));
    if ((rc = auth_headers(c, call, &hdrs)) != 0)
        return rc;
    snprintf(url, sizeof(url), "%s%s", be->base_url, path);
    deadline = t0 + be->api_timeout_ms * 1000000;
    call_deadline = sl_host->deadline_ns(call);
    if (!cleanup && call_deadline && call_deadline < deadline)
        deadline = call_deadline;
    curl_easy_reset(e);
    curl_easy_setopt(e, CURLOPT_URL, url);
    if (be->unix_path)
        curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, be->unix_path);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "atp-slurm/" PACKAGE_VERSION);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    hdrs = curl_slist_append(hdrs, "Expect:");
    hdrs = curl_slist_append(hdrs, "Accept: application/json");
    if (body) {
        /* A form type (curl's default) is refused with 400. */
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0)
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdrs);
    if (curl_multi_add_handle(c->multi, e) != CURLM_OK) {
        curl_slist_free_all(hdrs);
        return sl_host->set_error(call, ATP_E_BACKEND, "libcurl refused a "
                                  "transfer handle");
    }
    rc = 0;
    for (;;) {
        struct curl_waitfd wfd;
        int64_t wait;

        if (curl_multi_perform(c->multi, &running) != CURLM_OK) {
            rc = sl_host->set_error(call, ATP_E_BACKEND, "libcurl failed "
                                    "driving %s %s", method, path);
            break;
        }
        if (!running)
            break;
        if (!cleanup && sl_host->cancelled(call)) {
            rc = sl_host->set_error(call, ATP_E_CANCELLED, "cancelled");
            break;
        }
        wait = sl_ms_left(deadline);
        if (wait == 0) {
            rc = sl_host->set_error(call, ATP_E_TIMEOUT, "slurmrestd at %s "
                                    "did not answer %s %s within %.1f s "
                                    "(api_timeout_s)", be->display, method,
                                    path, (double)(sl_host->now_ns() - t0) /
                                              1e9);
            break;
        }
        wfd.fd = cancel_fd;
        wfd.events = CURL_WAIT_POLLIN;
        wfd.revents = 0;
        curl_multi_poll(c->multi, cancel_fd >= 0 ? &wfd : NULL,
                        cancel_fd >= 0 ? 1 : 0,
                        (int)(wait < 0 || wait > 1000 ? 1000 : wait), NULL);
    }
    while (rc == 0 && (msg = curl_multi_info_read(c->multi, &left)))
        if (msg->msg == CURLMSG_DONE)
            res = msg->data.result;
    curl_multi_remove_handle(c->multi, e);
    curl_slist_free_all(hdrs);
    if (rc == 0 && res != CURLE_OK)
        rc = r->too_big ? sl_host->set_error(call, ATP_E_BACKEND, "the "
                                             "answer of slurmrestd to %s %s "
                                             "is larger than %d MiB", method,
                                             path, BODY_MAX >> 20)
                        : transport_error(c, call, res, errbuf, method, path);
    if (rc) {
        reply_free(r);
        return rc;
    }
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &r->status);
    reply_digest(r);
    sl_host->log(call, ATP_LOG_DEBUG, "%s %s -> %ld (%.1f ms)", method, path,
                 r->status, (double)(sl_host->now_ns() - t0) / 1e6);
    return 0;
}

/*
 * The error of an unexpected answer to @what ("submit the job").  401 and
 * the 500 of a token slurmctld refused are credentials; the rest @code.
 */
static int reply_fail(struct sl_conn *c, atp_call *call, int code,
                      const struct reply *r, const char *what)
{
    struct sl_backend *be = c->be;
    const char *m = r->msg[0] ? r->msg : "(no message)";

    if (r->status == 401 || r->status == 403)
        return sl_host->set_error(call, ATP_E_CREDENTIALS, "slurmrestd at %s "
                                  "refused to %s (%ld %s): %s", be->display,
                                  what, r->status, m,
                                  be->jwt ? "check the token (SLURM_JWT or "
                                            "jwt_file) and user"
                                          : "over its unix socket it takes "
                                            "only its own user and root; use "
                                            "http with a token otherwise");
    if (be->jwt && r->status >= 500 &&
        (strstr(m, "Zero Bytes were transmitted") ||
         strcmp(m, "Unspecified error") == 0))
        /* What an expired or foreign token looks like in 22.05. */
        return sl_host->set_error(call, ATP_E_CREDENTIALS, "slurmrestd at %s "
                                  "could not %s (%ld %s): slurmctld refused "
                                  "the token from %s; it has expired or was "
                                  "signed with another key: get a new one "
                                  "with `scontrol token`", be->display, what,
                                  r->status, m,
                                  be->token.source ? be->token.source
                                                   : "SLURM_JWT");
    if (be->jwt && r->status >= 500 && strstr(m, "unable to load"))
        /* What a refused token looks like on a ping in 22.05: slurmrestd
         * cannot read slurmctld's configuration with it. */
        return sl_host->set_error(call, code, "slurmrestd at %s could not %s "
                                  "(%ld %s): it cannot reach slurmctld with "
                                  "the token from %s; the token may have "
                                  "expired or be signed with another key "
                                  "(get a new one with `scontrol token`), "
                                  "or slurmctld is down", be->display, what,
                                  r->status, m,
                                  be->token.source ? be->token.source
                                                   : "SLURM_JWT");
    return sl_host->set_error(call, code, "slurmrestd at %s could not %s "
                              "(%ld): %s", be->display, what, r->status, m);
}

/* ---- versions ------------------------------------------------------------ */

static int dialect_of(const char *version)
{
    return strcmp(version, "v0.0.38") == 0 ? SL_D38 : SL_D40;
}

/* Is the controller up, by the ping reply?  (Either dialect.) */
static int ping_up(json_object *reply)
{
    json_object *pings, *p, *v;

    if (!json_object_object_get_ex(reply, "pings", &pings) ||
        !json_object_is_type(pings, json_type_array) ||
        json_object_array_length(pings) == 0)
        return 1; /* nothing said: the answer itself is the sign */
    p = json_object_array_get_idx(pings, 0);
    if ((json_object_object_get_ex(p, "ping", &v) ||
         json_object_object_get_ex(p, "pinged", &v)) &&
        json_object_is_type(v, json_type_string))
        return strcmp(json_object_get_string(v), "UP") == 0;
    return 1;
}

static int probe(struct sl_conn *c, atp_call *call)
{
    struct sl_backend *be = c->be;
    struct reply r;
    char path[64];
    size_t i;
    int rc = 0;

    pthread_mutex_lock(&be->lock);
    if (be->probed) {
        pthread_mutex_unlock(&be->lock);
        return 0;
    }
    pthread_mutex_unlock(&be->lock);
    for (i = 0; versions[i]; i++) {
        const char *v = be->pinned ? be->pinned : versions[i];

        snprintf(path, sizeof(path), "/slurm/%s/ping", v);
        if ((rc = request(c, call, "GET", path, NULL, 0, &r)) != 0)
            return rc;
        if (r.status == 200) {
            const char *rel = r.json ? sl_reply_release(r.json) : NULL;

            if (r.json && !ping_up(r.json)) {
                reply_free(&r);
                return sl_host->set_error(call, ATP_E_BACKEND, "slurmrestd "
                                          "at %s answers, but slurmctld is "
                                          "not up (ping)", be->display);
            }
            pthread_mutex_lock(&be->lock);
            snprintf(be->version, sizeof(be->version), "%s", v);
            be->dialect = dialect_of(v);
            be->probed = 1;
            pthread_mutex_unlock(&be->lock);
            sl_host->log(call, ATP_LOG_INFO, "slurmrestd at %s: Slurm %s, "
                         "API %s", be->display, rel ? rel : "(unknown)", v);
            reply_free(&r);
            return 0;
        }
        if (r.status == 404 && be->pinned) {
            reply_free(&r);
            return sl_host->set_error(call, ATP_E_CONFIG, "slurmrestd at %s "
                                      "does not serve api_version = %s (404): "
                                      "remove api_version to let atp find "
                                      "the version it serves, or start it "
                                      "with -s openapi/%s", be->display, v,
                                      v);
        }
        if (r.status != 404 || be->pinned) {
            rc = reply_fail(c, call, ATP_E_BACKEND, &r,
                            be->pinned ? "answer the pinned api_version"
                                       : "answer a ping");
            reply_free(&r);
            return rc;
        }
        reply_free(&r);
    }
    return sl_host->set_error(call, ATP_E_BACKEND, "slurmrestd at %s serves "
                              "none of the API versions atp speaks (v0.0.38, "
                              "v0.0.40 to v0.0.46): start it with -s "
                              "openapi/v0.0.38 or a newer one, or use mode = "
                              "cli", be->display);
}

int sl_rest_ping(struct sl_conn *c, atp_call *call)
{
    struct reply r;
    char path[64];
    int rc = probe(c, call);

    if (rc)
        return rc;
    snprintf(path, sizeof(path), "/slurm/%s/ping", c->be->version);
    if ((rc = request(c, call, "GET", path, NULL, 0, &r)) != 0)
        return rc;
    if (r.status != 200)
        rc = reply_fail(c, call, ATP_E_BACKEND, &r, "answer a ping");
    else if (r.json && !ping_up(r.json))
        rc = sl_host->set_error(call, ATP_E_BACKEND, "slurmctld is not up "
                                "(slurmrestd at %s says so)",
                                c->be->display);
    reply_free(&r);
    return rc;
}

/* ---- jobs ------------------------------------------------------------------- */

int sl_rest_submit(struct sl_conn *c, atp_call *call,
                   const struct sl_jobspec *js, long *id)
{
    struct sl_backend *be = c->be;
    json_object *body, *v;
    struct reply r;
    char path[64];
    int rc;

    *id = 0;
    if ((rc = probe(c, call)) != 0)
        return rc;
    body = sl_submit_body(be->dialect, js, be->partition, be->account,
                          be->qos);
    if (body == NULL)
        return sl_host->set_error(call, ATP_E_NOMEM, "out of memory");
    snprintf(path, sizeof(path), "/slurm/%s/job/submit", be->version);
    rc = request(c, call, "POST", path,
                 json_object_to_json_string_ext(body,
                                                JSON_C_TO_STRING_PLAIN |
                                                    JSON_C_TO_STRING_NOSLASHESCAPE),
                 0, &r);
    json_object_put(body);
    if (rc)
        return rc; /* the job may exist: the caller sweeps */
    if (r.status == 200 && r.json &&
        json_object_object_get_ex(r.json, "job_id", &v)) {
        if (json_object_is_type(v, json_type_int))
            *id = (long)json_object_get_int64(v);
        else if (json_object_is_type(v, json_type_string))
            *id = strtol(json_object_get_string(v), NULL, 10);
    }
    if (*id <= 0)
        rc = reply_fail(c, call, ATP_E_PROVISION, &r, "submit the job");
    reply_free(&r);
    return rc;
}

/* The job @id among the "jobs" of a reply (an array job lists them all). */
static json_object *find_job(json_object *reply, long id)
{
    json_object *jobs, *j, *v;
    size_t i, n;

    if (reply == NULL || !json_object_object_get_ex(reply, "jobs", &jobs) ||
        !json_object_is_type(jobs, json_type_array))
        return NULL;
    n = json_object_array_length(jobs);
    for (i = 0; i < n; i++) {
        j = json_object_array_get_idx(jobs, i);
        if (json_object_object_get_ex(j, "job_id", &v) &&
            json_object_is_type(v, json_type_int) &&
            json_object_get_int64(v) == id)
            return j;
    }
    return n == 1 ? json_object_array_get_idx(jobs, 0) : NULL;
}

/* "Invalid job id": the job never existed or was purged (MinJobAge). */
static int unknown_job(const struct reply *r)
{
    return r->errnum == 2017 || strstr(r->msg, "Invalid job id") != NULL ||
           strstr(r->msg, "Unable to find") != NULL;
}

int sl_rest_query(struct sl_conn *c, atp_call *call, long id,
                  struct sl_jobinfo *ji, int cleanup)
{
    struct reply r;
    json_object *job;
    char path[96];
    int rc;

    memset(ji, 0, sizeof(*ji));
    if ((rc = probe(c, call)) != 0)
        return rc;
    snprintf(path, sizeof(path), "/slurm/%s/job/%ld", c->be->version, id);
    if ((rc = request(c, call, "GET", path, NULL, cleanup, &r)) != 0)
        return rc;
    /* An unknown id is a 500 (v0.0.38), not a 404. */
    if (r.status >= 400 && unknown_job(&r)) {
        ji->id = id;
        ji->gone = 1;
    } else if (r.status != 200 || (job = find_job(r.json, id)) == NULL) {
        rc = reply_fail(c, call, ATP_E_BACKEND, &r, "report the job");
    } else {
        sl_job_from_json(job, ji);
        ji->id = id;
    }
    reply_free(&r);
    return rc;
}

int sl_rest_kill(struct sl_conn *c, atp_call *call, long id, int sig,
                 int cleanup)
{
    struct reply r;
    char path[96];
    int rc;

    if ((rc = probe(c, call)) != 0)
        return rc;
    /* TERM: every process of the job, the batch shell included (which
     * may trap it and go on).  KILL: v0.0.38 can only cancel the whole
     * job (its default, SIGKILL with KILL_FULL_JOB), and slurmd then
     * sends TERM and, KillWait seconds later, KILL; v0.0.40+ can send
     * SIGKILL to the batch step at once (flags=BATCH_JOB).  Either
     * cancels a job still in the queue. */
    snprintf(path, sizeof(path), "/slurm/%s/job/%ld%s", c->be->version, id,
             sig == 15 ? "?signal=TERM"
             : c->be->dialect == SL_D38 ? ""
                                        : "?signal=KILL&flags=BATCH_JOB");
    if ((rc = request(c, call, "DELETE", path, NULL, cleanup, &r)) != 0)
        return rc;
    if (r.status >= 400)
        rc = unknown_job(&r)
                 ? sl_host->set_error(call, ATP_E_NOTFOUND, "job %ld is not "
                                      "known to slurmctld", id)
                 : reply_fail(c, call, sig == 15 ? ATP_E_NOTFOUND
                                                 : ATP_E_BACKEND,
                              &r, sig == 15 ? "signal the job"
                                            : "cancel the job");
    reply_free(&r);
    return rc;
}

int sl_rest_kill_task(struct sl_conn *c, atp_call *call, const char *task,
                      int cleanup)
{
    struct reply r;
    char path[128];
    int rc;

    if ((rc = probe(c, call)) != 0)
        return rc;
    /* A task of an array, "ARRAY_TASK": the controller resolves it. */
    snprintf(path, sizeof(path), "/slurm/%s/job/%s", c->be->version, task);
    if ((rc = request(c, call, "DELETE", path, NULL, cleanup, &r)) != 0)
        return rc;
    if (r.status >= 400)
        rc = unknown_job(&r)
                 ? sl_host->set_error(call, ATP_E_NOTFOUND, "task %s is not "
                                      "known to slurmctld", task)
                 : reply_fail(c, call, ATP_E_BACKEND, &r, "cancel the task");
    reply_free(&r);
    return rc;
}

int sl_rest_list(struct sl_conn *c, atp_call *call, struct sl_jobinfo **jobs,
                 size_t *n, int cleanup)
{
    json_object *arr;
    struct reply r;
    char path[64];
    size_t i, len;
    int rc;

    *jobs = NULL;
    *n = 0;
    if ((rc = probe(c, call)) != 0)
        return rc;
    /* No filter exists: every job of every user the controller holds. */
    snprintf(path, sizeof(path), "/slurm/%s/jobs", c->be->version);
    if ((rc = request(c, call, "GET", path, NULL, cleanup, &r)) != 0)
        return rc;
    if (r.status != 200 || r.json == NULL ||
        !json_object_object_get_ex(r.json, "jobs", &arr) ||
        !json_object_is_type(arr, json_type_array)) {
        rc = reply_fail(c, call, ATP_E_BACKEND, &r, "list the jobs");
        reply_free(&r);
        return rc;
    }
    len = json_object_array_length(arr);
    *jobs = calloc(len ? len : 1, sizeof(**jobs));
    if (*jobs == NULL) {
        reply_free(&r);
        return sl_host->set_error(call, ATP_E_NOMEM, "out of memory");
    }
    for (i = 0; i < len; i++)
        sl_job_from_json(json_object_array_get_idx(arr, i), &(*jobs)[i]);
    *n = len;
    reply_free(&r);
    return 0;
}

/* ---- the jobs API, whichever the mode ------------------------------------- */

int sl_ping(struct sl_conn *c, atp_call *call)
{
    return c->be->mode == SL_MODE_REST ? sl_rest_ping(c, call)
                                       : sl_cli_ping(c, call);
}

int sl_submit(struct sl_conn *c, atp_call *call, const struct sl_jobspec *js,
              long *id)
{
    return c->be->mode == SL_MODE_REST ? sl_rest_submit(c, call, js, id)
                                       : sl_cli_submit(c, call, js, id);
}

int sl_query(struct sl_conn *c, atp_call *call, long id,
             struct sl_jobinfo *ji, int cleanup)
{
    return c->be->mode == SL_MODE_REST
               ? sl_rest_query(c, call, id, ji, cleanup)
               : sl_cli_query(c, call, id, ji, cleanup);
}

int sl_kill(struct sl_conn *c, atp_call *call, long id, int sig, int cleanup)
{
    return c->be->mode == SL_MODE_REST
               ? sl_rest_kill(c, call, id, sig, cleanup)
               : sl_cli_kill(c, call, id, sig, cleanup);
}

int sl_list(struct sl_conn *c, atp_call *call, struct sl_jobinfo **jobs,
            size_t *n, int cleanup)
{
    return c->be->mode == SL_MODE_REST
               ? sl_rest_list(c, call, jobs, n, cleanup)
               : sl_cli_list(c, call, jobs, n, cleanup);
}

int sl_kill_task(struct sl_conn *c, atp_call *call, const char *task,
                 int cleanup)
{
    return c->be->mode == SL_MODE_REST
               ? sl_rest_kill_task(c, call, task, cleanup)
               : sl_cli_kill_task(c, call, task, cleanup);
}
