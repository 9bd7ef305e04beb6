/*
 * plugins/docker/api.c - the Engine API endpoints the backend uses, with
 * their JSON bodies built and read by json-c.
 *
 * Each endpoint is a method, what it does, and a list of verdicts that
 * judge its status the way Docker and Podman's compat API answer it
 * (docker-api.md sections 4 and 10): a success, or a failure as an ATP_E_*
 * code with the daemon's own message and a hint.  dk_call() makes the
 * request and applies them; each function adds only its path, its body
 * and what it reads from the answer.  The version probe and the pull's
 * progress stream make their requests themselves.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "dk.h"

#define PULL_EVENT_NS 500000000 /* at most two pull events a second */

void dk_strv_free(char **v)
{
    size_t i;

    for (i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

json_object *dk_strv_json(const char *const *v)
{
    json_object *arr = json_object_new_array();
    size_t i;

    for (i = 0; arr && v && v[i]; i++)
        json_object_array_add(arr, json_object_new_string(v[i]));
    return arr;
}

static json_object *parse_body(const struct dk_resp *rs)
{
    json_tokener *tok;
    json_object *obj;

    if (rs->body == NULL || rs->len == 0)
        return NULL;
    tok = json_tokener_new_ex(64);
    if (tok == NULL)
        return NULL;
    obj = json_tokener_parse_ex(tok, rs->body, (int)rs->len);
    json_tokener_free(tok);
    return obj;
}

static const char *get_str(json_object *obj, const char *key)
{
    json_object *v;

    if (obj && json_object_object_get_ex(obj, key, &v) &&
        json_object_is_type(v, json_type_string))
        return json_object_get_string(v);
    return NULL;
}

/* Copy the "Id" of a 201 answer's @obj into @out (65 bytes). */
static int take_id(atp_call *call, json_object *obj, char *out,
                   const char *what)
{
    const char *id = get_str(obj, "Id");
    int rc = 0;

    if (id == NULL || strlen(id) == 0 || strlen(id) > 64)
        rc = dk_host->set_error(call, ATP_E_BACKEND, "cannot %s: the docker "
                                "daemon's answer has no id", what);
    else
        snprintf(out, 65, "%s", id);
    json_object_put(obj);
    return rc;
}

/* ---- one call ----------------------------------------------------------- */

/* What a verdict's status matches, besides one HTTP status. */
#define ANY_OTHER 0 /* every status: the last verdict of a list */
#define ANY_5XX 1   /* 500 and up */
#define RATED 2     /* a refusal for rate or quota (dk_http_rate) */

/* A verdict's flags. */
#define QUIET 1 /* a failure whose message the caller writes */
#define AGAIN 2 /* a passing refusal: ask again, 100 ms later, up to 50
                 * times while the call's deadline allows */

/* What one kind of answer means. */
struct verdict {
    long status;      /* an HTTP status, ANY_5XX, RATED or ANY_OTHER */
    int code;         /* 0: a success; else the failure's ATP_E_* code */
    int flags;        /* QUIET, AGAIN */
    const char *hint; /* what to do, after the daemon's message */
    const char *has;  /* only when the daemon's message contains this */
};

/* How the verdicts of a list are written. */
#define OK(st) {st, 0, 0, NULL, NULL}
#define FAIL(st, code) {st, code, 0, NULL, NULL}
#define FAIL_HINT(st, code, hint) {st, code, 0, hint, NULL}
#define OWN(st, code) {st, code, QUIET, NULL, NULL}
#define RETRY(st, code) {st, code, AGAIN, NULL, NULL}

/* An endpoint: its method, what it does ("cannot create the container:
 * ..."), and its verdicts, the first that matches wins; the last is
 * ANY_OTHER's (a verdict left out is a zeroed one: a success). */
struct api_call {
    const char *method;
    const char *what;
    struct verdict v[6];
};

static const struct verdict *judge(const struct api_call *api,
                                   const struct dk_resp *rs)
{
    const struct verdict *v;

    for (v = api->v; v->status != ANY_OTHER; v++)
        if ((v->status == rs->status ||
             (v->status == ANY_5XX && rs->status >= 500) ||
             (v->status == RATED && dk_http_rate(rs))) &&
            (v->has == NULL || strstr(rs->msg, v->has) != NULL))
            return v;
    return v;
}

/*
 * One request of @api to the path that @path_fmt makes, with the JSON
 * @body (or none), judged by @api's verdicts.  Returns 0 for a success,
 * with the answer's JSON in *@obj when @obj is not NULL (NULL when there
 * is none; put it); the code of a QUIET failure, with no error set; else
 * the failure's code, with the daemon's message and the verdict's hint
 * as the call's error (or the transport's error).  @rs, when not NULL,
 * keeps the status (0: no answer) and the daemon's message; never a body.
 */
static ATP_PRINTF(8, 9) int dk_call(struct dk_http *h, atp_call *call,
                                     const struct api_call *api,
                                     const char *body, int uncancellable,
                                     struct dk_resp *rs, json_object **obj,
                                     const char *path_fmt, ...)
{
    struct dk_req rq = {0};
    struct dk_resp own;
    const struct verdict *v;
    char path[2048];
    va_list ap;
    int rc, tries;

    if (rs == NULL)
        rs = &own;
    if (obj)
        *obj = NULL;
    va_start(ap, path_fmt);
    vsnprintf(path, sizeof(path), path_fmt, ap);
    va_end(ap);
    rq.method = api->method;
    rq.path = path;
    rq.body = body;
    rq.uncancellable = uncancellable;
    for (tries = 0;; tries++) {
        struct timespec ts = {0, 100000000};

        if ((rc = dk_http_do(h, call, &rq, rs)) != 0)
            return rc;
        v = judge(api, rs);
        if (!(v->flags & AGAIN) || tries >= 50 ||
            dk_ms_left(dk_host->deadline_ns(call)) == 0)
            break;
        dk_resp_free(rs);
        nanosleep(&ts, NULL);
    }
    if (v->code == 0 && obj)
        *obj = parse_body(rs);
    else if (v->code != 0 && !(v->flags & QUIET))
        rc = dk_http_fail(call, v->code, rs, api->what, v->hint);
    else
        rc = v->code;
    dk_resp_free(rs);
    return rc;
}

/* ---- versions ----------------------------------------------------------- */

struct ping {
    char api[16];
    int podman;
};

static void trim_value(const char *line, size_t len, size_t skip, char *out,
                       size_t outlen)
{
    size_t n;

    while (skip < len && (line[skip] == ' ' || line[skip] == '\t'))
        skip++;
    n = len - skip;
    while (n > 0 && (line[skip + n - 1] == '\r' || line[skip + n - 1] == '\n' ||
                     line[skip + n - 1] == ' '))
        n--;
    if (n >= outlen)
        n = outlen - 1;
    memcpy(out, line + skip, n);
    out[n] = '\0';
}

static void on_ping_header(void *ctx, const char *line, size_t len)
{
    struct ping *p = ctx;
    char v[64];

    if (len > 12 && strncasecmp(line, "Api-Version:", 12) == 0)
        trim_value(line, len, 12, p->api, sizeof(p->api));
    else if (len > 19 && strncasecmp(line, "Libpod-Api-Version:", 19) == 0)
        p->podman = 1;
    else if (len > 7 && strncasecmp(line, "Server:", 7) == 0) {
        trim_value(line, len, 7, v, sizeof(v));
        if (strncmp(v, "Libpod", 6) == 0)
            p->podman = 1;
    }
}

/* "1.41" -> 141; 0 when malformed. */
static int version_num(const char *v)
{
    unsigned major, minor;

    if (sscanf(v, "%u.%u", &major, &minor) != 2 || minor > 99)
        return 0;
    return (int)(major * 100 + minor);
}

int dk_api_negotiate(struct dk_http *h, atp_call *call)
{
    struct dk_daemon *d = h->daemon;
    struct dk_req rq = {0};
    struct dk_resp rs;
    struct ping p;
    int rc = 0, v;

    pthread_mutex_lock(&d->lock);
    if (d->negotiated)
        goto out;
    memset(&p, 0, sizeof(p));
    rq.method = "GET";
    rq.path = "/_ping";
    rq.unversioned = 1;
    rq.header = on_ping_header;
    rq.header_ctx = &p;
    if ((rc = dk_http_do(h, call, &rq, &rs)) != 0)
        goto out;
    dk_resp_free(&rs);
    if (p.api[0] == '\0') {
        /* Old or odd daemons: GET /version has ApiVersion. */
        json_object *obj;
        const char *api;

        memset(&rq, 0, sizeof(rq));
        rq.method = "GET";
        rq.path = "/version";
        rq.unversioned = 1;
        if ((rc = dk_http_do(h, call, &rq, &rs)) != 0)
            goto out;
        obj = parse_body(&rs);
        api = get_str(obj, "ApiVersion");
        if (rs.status == 200 && api)
            snprintf(p.api, sizeof(p.api), "%s", api);
        json_object_put(obj);
        dk_resp_free(&rs);
    }
    v = version_num(p.api);
    if (v == 0) {
        rc = dk_host->set_error(call, ATP_E_BACKEND, "the daemon at %s does "
                                "not say which API version it speaks: is it "
                                "a docker daemon?", h->ep->display);
        goto out;
    }
    if (v < version_num(DK_API_FLOOR) && !p.podman) {
        rc = dk_host->set_error(call, ATP_E_BACKEND, "the docker daemon at "
                                "%s speaks API %s, older than %s (Docker "
                                "19.03): upgrade it", h->ep->display, p.api,
                                DK_API_FLOOR);
        goto out;
    }
    if (v > version_num(DK_API_MAX) || (p.podman && v < version_num(
                                                        DK_API_FLOOR)))
        snprintf(d->version, sizeof(d->version), "%s",
                 v > version_num(DK_API_MAX) ? DK_API_MAX : DK_API_FLOOR);
    else
        snprintf(d->version, sizeof(d->version), "%u.%u", v / 100, v % 100);
    d->podman = p.podman;
    d->negotiated = 1;
    dk_host->log(call, ATP_LOG_DEBUG, "%s: api %s (daemon %s%s)",
                 h->ep->display, d->version, p.api,
                 p.podman ? ", podman" : "");
out:
    pthread_mutex_unlock(&d->lock);
    return rc;
}

/* ---- images ------------------------------------------------------------- */

int dk_api_image_exists(struct dk_http *h, atp_call *call, const char *image)
{
    return dk_api_image_inspect(h, call, image, NULL, NULL);
}

/* The first of "RepoDigests" that names @image's repository, else the
 * first of them; NULL when there is none (a local build or import). */
static const char *repo_digest(json_object *obj, const char *image)
{
    json_object *arr;
    const char *first = NULL;
    size_t i, n, rlen = strcspn(image, "@");
    const char *colon = memchr(image, ':', rlen);
    const char *slash = strrchr(image, '/');

    if (colon && (slash == NULL || colon > slash))
        rlen = (size_t)(colon - image);
    if (!json_object_object_get_ex(obj, "RepoDigests", &arr) ||
        !json_object_is_type(arr, json_type_array))
        return NULL;
    n = json_object_array_length(arr);
    for (i = 0; i < n; i++) {
        json_object *v = json_object_array_get_idx(arr, i);
        const char *d = json_object_is_type(v, json_type_string)
                            ? json_object_get_string(v)
                            : NULL;

        if (d == NULL || strstr(d, "@sha256:") == NULL)
            continue;
        if (first == NULL)
            first = d;
        if (strncmp(d, image, rlen) == 0 && d[rlen] == '@')
            return d;
    }
    return first;
}

static const struct api_call image_inspect = {
    "GET", "inspect the image",
    {OK(200), OWN(404, ATP_E_NOTFOUND), FAIL(RATED, ATP_E_RATE),
     FAIL(ANY_OTHER, ATP_E_BACKEND)}};

int dk_api_image_inspect(struct dk_http *h, atp_call *call, const char *image,
                         char *id_out, char *digest_out)
{
    json_object *obj;
    const char *id, *digest;
    int rc;

    if ((rc = dk_call(h, call, &image_inspect, NULL, 0, NULL, &obj,
                      "/images/%s/json", image)) != 0)
        return rc;
    id = get_str(obj, "Id");
    digest = obj ? repo_digest(obj, image) : NULL;
    /* Docker says "sha256:HEX"; some versions of Podman HEX alone. */
    if (id_out && id && strlen(id) == 64 && strchr(id, ':') == NULL)
        snprintf(id_out, 72, "sha256:%s", id);
    else if (id_out && (id == NULL || strncmp(id, "sha256:", 7) != 0 ||
                        strlen(id) > 71))
        rc = dk_host->set_error(call, ATP_E_BACKEND, "the docker daemon "
                                "described image %s without a usable Id",
                                image);
    else if (id_out)
        snprintf(id_out, 72, "%s", id);
    if (digest_out)
        snprintf(digest_out, 256, "%s",
                 digest && strlen(digest) < 256 ? digest : "");
    json_object_put(obj);
    return rc;
}

struct pull {
    atp_call *call;
    const char *image;
    json_tokener *tok;
    char error[512];
    char last_status[128];
    int64_t last_event;
    int mid; /* inside an object that began in an earlier chunk */
};

static void pull_object(struct pull *p, json_object *obj)
{
    json_object *detail, *v;
    const char *status = get_str(obj, "status");
    const char *err = get_str(obj, "error");
    int64_t now = dk_host->now_ns();
    atp_field f[5];
    size_t n = 0;

    if (json_object_object_get_ex(obj, "errorDetail", &detail) &&
        get_str(detail, "message"))
        err = get_str(detail, "message");
    if (err) {
        if (p->error[0] == '\0')
            snprintf(p->error, sizeof(p->error), "%s", err);
        return;
    }
    if (status == NULL)
        return;
    /* A new kind of status always; progress at most every 0.5 s. */
    if (strcmp(status, p->last_status) == 0 &&
        now - p->last_event < PULL_EVENT_NS)
        return;
    snprintf(p->last_status, sizeof(p->last_status), "%s", status);
    p->last_event = now;
    f[n++] = (atp_field){"image", ATP_FIELD_STR, p->image, 0, 0.0};
    f[n++] = (atp_field){"status", ATP_FIELD_STR, status, 0, 0.0};
    if (get_str(obj, "id"))
        f[n++] = (atp_field){"layer", ATP_FIELD_STR, get_str(obj, "id"), 0,
                             0.0};
    if (json_object_object_get_ex(obj, "progressDetail", &detail)) {
        if (json_object_object_get_ex(detail, "current", &v))
            f[n++] = (atp_field){"current", ATP_FIELD_INT, NULL,
                                 json_object_get_int64(v), 0.0};
        if (json_object_object_get_ex(detail, "total", &v))
            f[n++] = (atp_field){"total", ATP_FIELD_INT, NULL,
                                 json_object_get_int64(v), 0.0};
    }
    dk_host->event(p->call, "image_pull", f, n);
}

/* The pull's progress stream: JSON objects one after another. */
static int pull_chunk(void *ctx, const void *buf, size_t len)
{
    struct pull *p = ctx;
    const char *s = buf;

    while (len > 0) {
        json_object *obj;
        size_t used;

        if (!p->mid && (*s == '\r' || *s == '\n' || *s == ' ')) {
            s++;
            len--;
            continue;
        }
        obj = json_tokener_parse_ex(p->tok, s,
                                    (int)(len > 1 << 20 ? 1 << 20 : len));
        used = json_tokener_get_parse_end(p->tok);
        if (obj == NULL && json_tokener_get_error(p->tok) ==
                               json_tokener_continue) {
            p->mid = 1;
            s += used;
            len -= used;
            continue; /* the object goes on in the next chunk */
        }
        p->mid = 0;
        json_tokener_reset(p->tok);
        if (obj == NULL)
            return dk_host->set_error(p->call, ATP_E_IMAGE, "pulling %s: "
                                      "the docker daemon sent progress that "
                                      "is not JSON", p->image);
        pull_object(p, obj);
        json_object_put(obj);
        if (used == 0)
            used = 1;
        s += used;
        len -= used;
    }
    return 0;
}

int dk_api_image_pull(struct dk_http *h, atp_call *call, const char *image)
{
    struct dk_req rq = {0};
    struct dk_resp rs;
    struct pull p;
    char name[512], tag[256], path[1200];
    const char *at = strchr(image, '@');
    const char *slash = strrchr(image, '/');
    const char *colon = strrchr(image, ':');
    char *ename, *etag;
    size_t nlen;
    int rc;

    /* name[:tag] or name@digest; always a tag, or every tag is pulled. */
    if (at) {
        nlen = (size_t)(at - image);
        snprintf(tag, sizeof(tag), "%s", at + 1);
    } else if (colon && (slash == NULL || colon > slash)) {
        nlen = (size_t)(colon - image);
        snprintf(tag, sizeof(tag), "%s", colon + 1);
    } else {
        nlen = strlen(image);
        snprintf(tag, sizeof(tag), "latest");
    }
    if (nlen >= sizeof(name))
        return dk_host->set_error(call, ATP_E_CONFIG, "image name too long");
    memcpy(name, image, nlen);
    name[nlen] = '\0';
    ename = curl_easy_escape(h->easy, name, 0);
    etag = curl_easy_escape(h->easy, tag, 0);
    if (ename == NULL || etag == NULL) {
        curl_free(ename);
        curl_free(etag);
        return dk_host->set_error(call, ATP_E_NOMEM, "out of memory");
    }
    snprintf(path, sizeof(path), "/images/create?fromImage=%s&tag=%s", ename,
             etag);
    curl_free(ename);
    curl_free(etag);
    memset(&p, 0, sizeof(p));
    p.call = call;
    p.image = image;
    p.tok = json_tokener_new();
    if (p.tok == NULL)
        return dk_host->set_error(call, ATP_E_NOMEM, "out of memory");
    dk_host->event(call, "image_pull",
                   (atp_field[]){{"image", ATP_FIELD_STR, image, 0, 0.0},
                                 {"status", ATP_FIELD_STR, "pulling", 0,
                                  0.0}},
                   2);
    rq.method = "POST";
    rq.path = path;
    rq.streaming = 1;
    rq.download = pull_chunk;
    rq.download_ctx = &p;
    rc = dk_http_do(h, call, &rq, &rs);
    json_tokener_free(p.tok);
    if (rc)
        return rc;
    if (rs.status != 200)
        rc = dk_host->set_error(call, ATP_E_IMAGE, "cannot pull image %s: "
                                "the docker daemon answered %ld: %s",
                                image, rs.status,
                                rs.msg[0] ? rs.msg : "(no message)");
    else if (p.error[0] && (strstr(p.error, "toomanyrequests") ||
                            strstr(p.error, "rate limit")))
        rc = dk_host->set_error(call, ATP_E_RATE, "cannot pull image %s: "
                                "the registry refused for now: %s", image,
                                p.error);
    else if (p.error[0])
        rc = dk_host->set_error(call, ATP_E_IMAGE, "cannot pull image %s: "
                                "%s", image, p.error);
    dk_resp_free(&rs);
    return rc;
}

/* ---- networks ----------------------------------------------------------- */

static const struct api_call network_inspect = {
    "GET", "inspect a network",
    {OK(200), OWN(404, ATP_E_NOTFOUND), FAIL(ANY_OTHER, ATP_E_BACKEND)}};

int dk_api_network_exists(struct dk_http *h, atp_call *call,
                          const char *name)
{
    return dk_call(h, call, &network_inspect, NULL, 0, NULL, NULL,
                   "/networks/%s", name);
}

/* ---- containers --------------------------------------------------------- */

/* Over a limit of the daemon or of what stands in front of it, or short
 * of a resource for now: the batch slows its creations down and tries
 * again. */
#define REFUSING                                                            \
    "the daemon is refusing new containers for now: lower -j or --rate, "   \
    "or [backend.docker] max_concurrent / create_rate"

static const struct api_call container_create = {
    "POST", "create the container",
    {OK(201),
     OWN(404, ATP_E_NOTFOUND),
     FAIL_HINT(429, ATP_E_RATE, REFUSING),
     FAIL_HINT(ANY_5XX, ATP_E_RATE, REFUSING),
     FAIL_HINT(400, ATP_E_PROVISION, "check cpus, memory_mib, network and "
                                     "the mounts of [backend.docker]"),
     FAIL(ANY_OTHER, ATP_E_PROVISION)}};

int dk_api_create(struct dk_http *h, atp_call *call, const char *name,
                  const char *body, char *id_out)
{
    struct dk_resp rs;
    json_object *obj;
    int rc = dk_call(h, call, &container_create, body, 0, &rs, &obj,
                     "/containers/create?name=%s", name);

    if (rc == 0)
        return take_id(call, obj, id_out, container_create.what);
    if (rs.status == 404) /* the daemon names the missing image */
        return dk_host->set_error(call, ATP_E_NOTFOUND, "%s", rs.msg);
    return rc;
}

/* A hint for a start failure, from the daemon's message. */
static const char *start_hint(const char *msg)
{
    if (strstr(msg, "init binary") || strstr(msg, "catatonit"))
        return "the daemon has no init binary: set [backend.docker] init = "
               "false, or install catatonit for podman";
    if (strstr(msg, "unable to find user") || strstr(msg, "no matching "
                                                          "entries in passwd"))
        return "set [backend.docker] user to a numeric uid:gid or a user of "
               "the image";
    if (strstr(msg, "executable file not found") ||
        strstr(msg, "no such file or directory"))
        return "the image needs /bin/sh and sleep";
    return NULL;
}

static const struct api_call container_start = {
    "POST", "start the container",
    {OK(204), OK(304), OWN(ANY_OTHER, ATP_E_PROVISION)}};

int dk_api_start(struct dk_http *h, atp_call *call, const char *id,
                 char *why, size_t whylen)
{
    struct dk_resp rs;
    const char *hint;
    int rc;

    if (why && whylen)
        why[0] = '\0'; /* nothing to add when the daemon did not answer */
    rc = dk_call(h, call, &container_start, NULL, 0, &rs, NULL,
                 "/containers/%s/start", id);
    if (rc == 0 || rs.status == 0)
        return rc;
    hint = start_hint(rs.msg);
    if (why)
        snprintf(why, whylen, "cannot start the container: the docker "
                 "daemon answered %ld: %s%s%s", rs.status, rs.msg,
                 hint ? "; " : "", hint ? hint : "");
    return dk_http_fail(call, rc, &rs, container_start.what, hint);
}

/* 409 "removal already in progress", or a passing 5xx: the daemon
 * finishes on its own; ask again until it is gone. */
static const struct api_call container_remove = {
    "DELETE", "remove the container",
    {OK(204), OK(200), OK(404), RETRY(409, ATP_E_BACKEND),
     RETRY(ANY_5XX, ATP_E_BACKEND), FAIL(ANY_OTHER, ATP_E_BACKEND)}};

int dk_api_remove(struct dk_http *h, atp_call *call, const char *id)
{
    return dk_call(h, call, &container_remove, NULL, 1, NULL, NULL,
                   "/containers/%s?force=1&v=1", id);
}

static const struct api_call container_kill = {
    "POST", "kill the container",
    {OK(204), OK(404), OK(409), {500, 0, 0, NULL, "not running"},
     FAIL(ANY_OTHER, ATP_E_BACKEND)}};

int dk_api_kill(struct dk_http *h, atp_call *call, const char *id,
                const char *sig)
{
    return dk_call(h, call, &container_kill, NULL, 1, NULL, NULL,
                   "/containers/%s/kill?signal=%s", id, sig);
}

static const struct api_call container_inspect = {
    "GET", "inspect the container",
    {OK(200), OWN(404, ATP_E_SANDBOX_DEAD), FAIL(ANY_OTHER, ATP_E_BACKEND)}};

int dk_api_container_state(struct dk_http *h, atp_call *call,
                           const char *id, int *running, int *code)
{
    struct dk_resp rs;
    json_object *obj, *state, *v;
    int rc = dk_call(h, call, &container_inspect, NULL, 1, &rs, &obj,
                     "/containers/%s/json", id);

    if (rc && rs.status == 404)
        return dk_host->set_error(call, ATP_E_SANDBOX_DEAD, "the container "
                                  "%.12s is gone: its exit status is lost",
                                  id);
    if (rc)
        return rc;
    if (json_object_object_get_ex(obj, "State", &state) &&
        json_object_object_get_ex(state, "Running", &v)) {
        *running = json_object_get_boolean(v);
        *code = json_object_object_get_ex(state, "ExitCode", &v)
                    ? json_object_get_int(v)
                    : -1;
        if (!*running && (*code < 0 || *code > 255))
            rc = dk_host->set_error(call, ATP_E_BACKEND, "the docker daemon "
                                    "says container %.12s stopped but gives "
                                    "no exit code for it", id);
    } else {
        rc = dk_http_fail(call, ATP_E_BACKEND, &rs, container_inspect.what,
                          NULL);
    }
    json_object_put(obj);
    return rc;
}

int dk_api_wait_result(atp_call *call, const struct dk_resp *rs, int *code,
                       int *removed)
{
    json_object *obj = parse_body(rs), *v, *msg;
    int rc = 0;

    *removed = 0;
    if (json_object_object_get_ex(obj, "StatusCode", &v) &&
        json_object_is_type(v, json_type_int)) {
        *code = json_object_get_int(v);
        if (json_object_object_get_ex(obj, "Error", &v) && v != NULL &&
            json_object_object_get_ex(v, "Message", &msg) &&
            json_object_get_string_len(msg) > 0)
            dk_host->log(call, ATP_LOG_WARN, "the docker daemon: %s",
                         json_object_get_string(msg));
        else
            *removed = 1;
    } else {
        rc = dk_host->set_error(call, ATP_E_BACKEND, "the docker daemon's "
                                "answer to a container wait has no exit "
                                "code: %.200s", rs->body ? rs->body : "");
    }
    json_object_put(obj);
    return rc;
}

static const struct api_call container_list = {
    "GET", "list containers", {OK(200), FAIL(ANY_OTHER, ATP_E_BACKEND)}};

int dk_api_list(struct dk_http *h, atp_call *call, const char *filters,
                char ***ids)
{
    struct dk_resp rs;
    json_object *arr;
    char *ef;
    size_t i, n, k = 0;
    int rc;

    *ids = NULL;
    ef = curl_easy_escape(h->easy, filters, 0);
    if (ef == NULL)
        return dk_host->set_error(call, ATP_E_NOMEM, "out of memory");
    rc = dk_call(h, call, &container_list, NULL, 1, &rs, &arr,
                 "/containers/json?all=1&filters=%s", ef);
    curl_free(ef);
    if (rc)
        return rc;
    if (!json_object_is_type(arr, json_type_array)) {
        rc = dk_http_fail(call, ATP_E_BACKEND, &rs, container_list.what,
                          NULL);
        goto out;
    }
    n = json_object_array_length(arr);
    *ids = calloc(n + 1, sizeof(**ids));
    if (*ids == NULL) {
        rc = dk_host->set_error(call, ATP_E_NOMEM, "out of memory");
        goto out;
    }
    for (i = 0; i < n; i++) {
        const char *id = get_str(json_object_array_get_idx(arr, i), "Id");

        /* An entry without an id names nothing, and must not end the
         * vector early: the ids after it would be lost (and leak). */
        if (id && ((*ids)[k++] = strdup(id)) == NULL) {
            dk_strv_free(*ids);
            *ids = NULL;
            rc = dk_host->set_error(call, ATP_E_NOMEM, "out of memory");
            goto out;
        }
    }
out:
    json_object_put(arr);
    return rc;
}

/* ---- exec --------------------------------------------------------------- */

/* The container stopped or went away (404, 409, or a 500 that says it is
 * not running). */
static const struct api_call exec_create = {
    "POST", "create an exec",
    {OK(201), OWN(404, ATP_E_SANDBOX_DEAD), OWN(409, ATP_E_SANDBOX_DEAD),
     {500, ATP_E_SANDBOX_DEAD, QUIET, NULL, "running"},
     FAIL(ANY_OTHER, ATP_E_BACKEND)}};

int dk_api_exec_create(struct dk_http *h, atp_call *call, const char *cid,
                       const char *const *argv, const char *const *env,
                       const char *cwd, const char *user, int with_stdin,
                       int uncancellable, char *id_out)
{
    struct dk_resp rs;
    json_object *o = json_object_new_object(), *obj;
    int rc;

    if (o == NULL)
        return dk_host->set_error(call, ATP_E_NOMEM, "out of memory");
    json_object_object_add(o, "Cmd", dk_strv_json(argv));
    json_object_object_add(o, "AttachStdin",
                           json_object_new_boolean(with_stdin));
    json_object_object_add(o, "AttachStdout", json_object_new_boolean(1));
    json_object_object_add(o, "AttachStderr", json_object_new_boolean(1));
    json_object_object_add(o, "Tty", json_object_new_boolean(0));
    if (env && env[0])
        json_object_object_add(o, "Env", dk_strv_json(env));
    if (cwd)
        json_object_object_add(o, "WorkingDir", json_object_new_string(cwd));
    if (user)
        json_object_object_add(o, "User", json_object_new_string(user));
    rc = dk_call(h, call, &exec_create,
                 json_object_to_json_string_ext(
                     o, JSON_C_TO_STRING_PLAIN |
                            JSON_C_TO_STRING_NOSLASHESCAPE),
                 uncancellable, &rs, &obj, "/containers/%s/exec", cid);
    json_object_put(o);
    if (rc == 0)
        return take_id(call, obj, id_out, exec_create.what);
    if (rs.status != 0 && rc == ATP_E_SANDBOX_DEAD)
        return dk_host->set_error(call, rc, "the container %.12s is not "
                                  "running any more (its ttl ran out, or it "
                                  "was stopped or removed): %s", cid,
                                  rs.msg);
    return rc;
}

static const struct api_call exec_start = {
    "POST", "start an exec",
    {OK(200), OK(204), FAIL(404, ATP_E_SANDBOX_DEAD),
     FAIL(409, ATP_E_SANDBOX_DEAD), FAIL(ANY_OTHER, ATP_E_BACKEND)}};

int dk_api_exec_start_detached(struct dk_http *h, atp_call *call,
                               const char *eid)
{
    return dk_call(h, call, &exec_start, "{\"Detach\":true,\"Tty\":false}",
                   1, NULL, NULL, "/exec/%s/start", eid);
}

static const struct api_call exec_inspect = {
    "GET", "inspect the exec",
    {OK(200), OWN(404, ATP_E_SANDBOX_DEAD), FAIL(ANY_OTHER, ATP_E_BACKEND)}};

int dk_api_exec_inspect(struct dk_http *h, atp_call *call, const char *eid,
                        int *running, int *code)
{
    struct dk_resp rs;
    json_object *obj, *v;
    int rc = dk_call(h, call, &exec_inspect, NULL, 1, &rs, &obj,
                     "/exec/%s/json", eid);

    if (rc && rs.status == 404)
        return dk_host->set_error(call, ATP_E_SANDBOX_DEAD, "the command's "
                                  "exec record is gone: the container "
                                  "stopped or was removed while it ran");
    if (rc)
        return rc;
    if (json_object_object_get_ex(obj, "Running", &v)) {
        *running = json_object_get_boolean(v);
        *code = -1;
        if (json_object_object_get_ex(obj, "ExitCode", &v) && v != NULL)
            *code = json_object_get_int(v);
        /* An end without an exit status would reach the core as "exit
         * -1, no signal", which no command can produce. */
        if (!*running && (*code < 0 || *code > 255))
            rc = dk_host->set_error(call, ATP_E_BACKEND, "the docker daemon "
                                    "says the command ended but gives no "
                                    "exit code for it");
    } else {
        rc = dk_http_fail(call, ATP_E_BACKEND, &rs, exec_inspect.what, NULL);
    }
    json_object_put(obj);
    return rc;
}
