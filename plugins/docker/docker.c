/*
 * plugins/docker/docker.c - the docker backend: options, backends,
 * sessions (one container each), teardown and gc.
 *
 * A session's container is labelled with the run id, the owner's pid, its
 * creation time and its deadline, named after the run, and recorded in
 * the core's ledger the moment create returns.  Its workdir is the host
 * workdir bind-mounted at [image] workdir (transfer = bind), or a copy
 * pushed and pulled through the archive endpoints (transfer = copy, for a
 * daemon on another machine).  A session container idles in `sleep TTL`
 * with AutoRemove, so it goes away on its own should atp die; commands run
 * in it through exec.  A one-shot session creates nothing until its
 * command: the command becomes the container's own process (exec.c).
 * Closing removes the container with DELETE ?force=1&v=1 on every path.
 */
#define _GNU_SOURCE
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dk.h"

const atp_host_api *dk_host;

#define DEFAULT_SOCKET "unix:///var/run/docker.sock"
#define DEFAULT_TTL_S 3600

static const atp_option options[] = {
    {"image", ATP_OPT_STRING, NULL, NULL,
     "image to run, any with /bin/sh (default: [image] name)"},
    {"socket", ATP_OPT_STRING, NULL, NULL,
     "daemon address: unix:///PATH, /PATH or tcp://HOST:PORT (default: "
     "$DOCKER_HOST, else /var/run/docker.sock)"},
    {"cpus", ATP_OPT_NUMBER, NULL, NULL,
     "cpu limit, e.g. 2 or 0.5 (default: none)"},
    {"memory_mib", ATP_OPT_INT, NULL, NULL,
     "memory limit in MiB, swap included (default: none)"},
    {"pids_limit", ATP_OPT_INT, NULL, NULL,
     "most processes in the container (default: none)"},
    {"network", ATP_OPT_CHOICE, "none", "none|bridge|host",
     "network of the container"},
    {"pull", ATP_OPT_CHOICE, "missing", "never|missing|always",
     "when to pull the image from its registry"},
    {"user", ATP_OPT_STRING, NULL, NULL,
     "uid:gid (or a user of the image) to run as (default: the workdir "
     "owner's uid:gid)"},
    {"transfer", ATP_OPT_CHOICE, "auto", "auto|bind|copy",
     "workdir bind-mounted, or copied in and out through the daemon "
     "(auto: copy for tcp://)"},
    {"init", ATP_OPT_BOOL, "true", NULL,
     "run an init as pid 1 that reaps zombies and forwards signals"},
    {"one_shot", ATP_OPT_CHOICE, "run", "run|exec",
     "a one-shot command runs as the container's own process (run, the "
     "fastest) or through exec in an idle container (exec)"},
    {"api_timeout_s", ATP_OPT_DURATION, "60", NULL,
     "longest wait for an answer of the daemon (pulls, copies and "
     "commands excepted)"},
    {NULL, 0, NULL, NULL, NULL},
};

/* ---- backends ----------------------------------------------------------- */

static int dup_opt(atp_call *call, const char *key, char **out)
{
    const char *v = dk_host->config_string(call, key);

    *out = NULL;
    if (v == NULL || v[0] == '\0')
        return 0;
    *out = strdup(v);
    return *out ? 0 : dk_host->set_error(call, ATP_E_NOMEM, "out of memory");
}

static int choice(atp_call *call, const char *key, const char *const *words)
{
    const char *v = dk_host->config_string(call, key);
    int i;

    for (i = 0; v && words[i]; i++)
        if (strcmp(v, words[i]) == 0)
            return i;
    return 0;
}

/* Image references are plain: no characters that would need escaping. */
static int image_ok(const char *s)
{
    if (s == NULL || s[0] == '\0' || strlen(s) > 255)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
              (*s >= '0' && *s <= '9') || strchr("._/:@-", *s)))
            return 0;
    return 1;
}

static void backend_free(void *backend)
{
    struct dk_backend *b = backend;

    if (b == NULL)
        return;
    dk_http_free(&b->ctl);
    dk_endpoint_free(&b->ep);
    pthread_mutex_destroy(&b->daemon.lock);
    pthread_mutex_destroy(&b->ctl_lock);
    pthread_mutex_destroy(&b->pin_lock);
    free(b->pinned_name);
    free(b->image);
    free(b->user);
    free(b);
}

static int read_limits(atp_call *call, struct dk_backend *b)
{
    const char *cpus = dk_host->config_string(call, "cpus");
    int64_t v;

    if (cpus && cpus[0]) {
        char *end;
        double c = strtod(cpus, &end);

        if (*end != '\0' || !(c > 0) || c > 1e6)
            return dk_host->set_error(call, ATP_E_CONFIG, "cpus = %s: give "
                                      "a positive number such as 2 or 0.5",
                                      cpus);
        b->nano_cpus = (int64_t)llround(c * 1e9);
    }
    if (dk_host->config_int(call, "memory_mib", &v) == 0) {
        if (v < 6 || v > INT64_MAX / 1048576)
            return dk_host->set_error(call, ATP_E_CONFIG, "memory_mib = %lld:"
                                      " docker needs at least 6 MiB",
                                      (long long)v);
        b->memory = v * 1048576;
    }
    if (dk_host->config_int(call, "pids_limit", &v) == 0) {
        if (v < 1)
            return dk_host->set_error(call, ATP_E_CONFIG, "pids_limit = %lld:"
                                      " give a positive count",
                                      (long long)v);
        b->pids_limit = v;
    }
    return 0;
}

static int backend_open(atp_call *call, void **out)
{
    static const char *const nets[] = {"none", "bridge", "host", NULL};
    static const char *const pulls[] = {"never", "missing", "always", NULL};
    static const char *const transfers[] = {"auto", "bind", "copy", NULL};
    static const char *const one_shots[] = {"run", "exec", NULL};
    struct dk_backend *b = calloc(1, sizeof(*b));
    const char *sock;
    char err[512];
    int64_t v = 1;
    int rc, transfer;

    *out = NULL;
    if (b == NULL)
        return dk_host->set_error(call, ATP_E_NOMEM, "out of memory");
    pthread_mutex_init(&b->daemon.lock, NULL);
    pthread_mutex_init(&b->ctl_lock, NULL);
    pthread_mutex_init(&b->pin_lock, NULL);
    sock = dk_host->config_string(call, "socket");
    if (sock == NULL || sock[0] == '\0')
        sock = secure_getenv("DOCKER_HOST"); /* not in set-id programs */
    if (sock == NULL || sock[0] == '\0')
        sock = DEFAULT_SOCKET;
    if ((rc = dk_endpoint_parse(&b->ep, sock, err, sizeof(err))) != 0) {
        dk_host->set_error(call, rc, "%s", err);
        goto fail;
    }
    if ((rc = dup_opt(call, "image", &b->image)) != 0 ||
        (rc = dup_opt(call, "user", &b->user)) != 0 ||
        (rc = read_limits(call, b)) != 0)
        goto fail;
    if (b->image && !image_ok(b->image)) {
        rc = dk_host->set_error(call, ATP_E_CONFIG, "image = %s is not an "
                                "image reference", b->image);
        goto fail;
    }
    b->network = choice(call, "network", nets);
    b->pull = choice(call, "pull", pulls);
    transfer = choice(call, "transfer", transfers);
    b->copy = transfer == 2 || (transfer == 0 && b->ep.remote);
    b->one_shot_exec = choice(call, "one_shot", one_shots) == 1;
    dk_host->config_int(call, "init", &v);
    b->init = (int)v;
    b->api_timeout_ms = 60000;
    if (dk_host->config_int(call, "api_timeout_s", &v) == 0 && v > 0)
        b->api_timeout_ms = v;
    if (dk_http_init(&b->ctl, &b->ep, &b->daemon, b->api_timeout_ms) != 0) {
        rc = dk_host->set_error(call, ATP_E_NOMEM, "out of memory");
        goto fail;
    }
    *out = b;
    return 0;
fail:
    backend_free(b);
    return rc;
}

static uint64_t backend_caps(void *backend)
{
    const struct dk_backend *b = backend;
    uint64_t caps = ATP_CAP_STREAMING | ATP_CAP_STDIN | ATP_CAP_SESSIONS |
                    ATP_CAP_CPU_LIMIT | ATP_CAP_MEMORY_LIMIT |
                    ATP_CAP_NETWORK_POLICY | ATP_CAP_GC | ATP_CAP_KILLS_TREE |
                    ATP_CAP_GROUP_SIGNALS;

    if (b && b->copy)
        return caps | ATP_CAP_ISOLATED_FS;
    return caps | ATP_CAP_SHARED_FS | ATP_CAP_MOUNTS;
}

static int check(atp_call *call, void *backend)
{
    struct dk_backend *b = backend;
    int rc;

    pthread_mutex_lock(&b->ctl_lock);
    rc = dk_api_negotiate(&b->ctl, call);
    if (rc == 0 && b->image) {
        rc = dk_api_image_exists(&b->ctl, call, b->image);
        /* Whether a pull would work is known only by pulling: until the
         * image is there, the backend is not known to be usable. */
        if (rc == ATP_E_NOTFOUND && b->pull == 0)
            rc = dk_host->set_error(call, ATP_E_IMAGE, "image %s is not on "
                                    "the docker daemon at %s and pull = "
                                    "never: run `docker pull %s`", b->image,
                                    b->ep.display, b->image);
        else if (rc == ATP_E_NOTFOUND)
            rc = dk_host->set_error(call, ATP_E_IMAGE, "image %s is not on "
                                    "the docker daemon at %s yet; the first "
                                    "session will try to pull it, or run "
                                    "`docker pull %s` now", b->image,
                                    b->ep.display, b->image);
    }
    pthread_mutex_unlock(&b->ctl_lock);
    return rc;
}

/* ---- containers --------------------------------------------------------- */

static void session_free(void *session);

static void add_str(json_object *o, const char *k, const char *v)
{
    json_object_object_add(o, k, json_object_new_string(v));
}

static void add_label_int(json_object *labels, const char *k, long long v)
{
    char text[32];

    snprintf(text, sizeof(text), "%lld", v);
    add_str(labels, k, text);
}

/* The body of POST /containers/create; NULL when out of memory. */
static json_object *create_body(struct dk_session *s, const char *const *cmd,
                                const char *const *exec_env, const char *cwd,
                                int with_stdin)
{
    struct dk_backend *b = s->be;
    json_object *o = json_object_new_object();
    json_object *hc = json_object_new_object();
    json_object *labels = json_object_new_object();
    json_object *log = json_object_new_object();
    long long now = (long long)time(NULL);
    char ttl[32];

    if (o == NULL || hc == NULL || labels == NULL || log == NULL) {
        json_object_put(o);
        json_object_put(hc);
        json_object_put(labels);
        json_object_put(log);
        return NULL;
    }
    add_str(o, "Image", s->image_id[0] ? s->image_id : s->image);
    if (cmd) {
        json_object_object_add(o, "Entrypoint", dk_strv_json(cmd));
    } else {
        const char *idle[] = {"sleep", ttl, NULL};

        snprintf(ttl, sizeof(ttl), "%lld", s->ttl_s);
        json_object_object_add(o, "Entrypoint", dk_strv_json(idle));
    }
    json_object_object_add(o, "Cmd", json_object_new_array());
    /* A command's environment is whole (the core merged it); an idle
     * container's is the session's. */
    json_object_object_add(o, "Env", exec_env ? dk_strv_json(exec_env)
                                              : json_object_get(s->env));
    add_str(o, "WorkingDir", cwd ? cwd : s->sb_workdir);
    add_str(o, "User", s->user);
    json_object_object_add(o, "Tty", json_object_new_boolean(0));
    json_object_object_add(o, "OpenStdin",
                           json_object_new_boolean(with_stdin));
    json_object_object_add(o, "StdinOnce",
                           json_object_new_boolean(with_stdin));
    json_object_object_add(o, "AttachStdin",
                           json_object_new_boolean(with_stdin));
    json_object_object_add(o, "AttachStdout", json_object_new_boolean(1));
    json_object_object_add(o, "AttachStderr", json_object_new_boolean(1));
    add_str(labels, DK_LABEL_OWNER, "atp");
    add_str(labels, DK_LABEL_RUN, s->run_id);
    add_label_int(labels, DK_LABEL_PID, (long long)getpid());
    add_label_int(labels, DK_LABEL_CREATED, now);
    if (s->ttl_s > 0)
        add_label_int(labels, DK_LABEL_DEADLINE, now + s->ttl_s);
    json_object_object_add(o, "Labels", labels);
    if (s->binds)
        json_object_object_add(hc, "Binds", json_object_get(s->binds));
    if (b->nano_cpus)
        json_object_object_add(hc, "NanoCpus",
                               json_object_new_int64(b->nano_cpus));
    if (b->memory) {
        json_object_object_add(hc, "Memory", json_object_new_int64(b->memory));
        json_object_object_add(hc, "MemorySwap",
                               json_object_new_int64(b->memory));
    }
    if (b->pids_limit)
        json_object_object_add(hc, "PidsLimit",
                               json_object_new_int64(b->pids_limit));
    add_str(hc, "NetworkMode", s->net_mode);
    json_object_object_add(hc, "Init", json_object_new_boolean(b->init));
    /* An idle container removes itself when its TTL ends; a one-shot one
     * when its command ends, its exit code read by a wait sent before its
     * start (else it is kept until its exit code has been read). */
    json_object_object_add(hc, "AutoRemove",
                           json_object_new_boolean(!cmd || s->self_removing));
    add_str(log, "Type", "none"); /* output is read live, never logged */
    json_object_object_add(hc, "LogConfig", log);
    json_object_object_add(o, "HostConfig", hc);
    return o;
}

/*
 * The filters of GET /containers/json for atp's own containers of run
 * @run (its labels: a lease is a file, and what it names is removed only
 * when the daemon says the container carries them), only container @id
 * among them (an id, or a name atp gave) when @id is not NULL.  NULL when
 * out of memory, or when @id can be neither.
 */
static json_object *ours_filter(const char *run, const char *id)
{
    json_object *f = json_object_new_object();
    json_object *labels = json_object_new_array();
    char owner[64], label[256];

    if (f == NULL || labels == NULL) {
        json_object_put(f);
        json_object_put(labels);
        return NULL;
    }
    snprintf(owner, sizeof(owner), "%s=atp", DK_LABEL_OWNER);
    snprintf(label, sizeof(label), "%s=%s", DK_LABEL_RUN, run);
    json_object_array_add(labels, json_object_new_string(owner));
    json_object_array_add(labels, json_object_new_string(label));
    json_object_object_add(f, "label", labels);
    if (id) {
        json_object *one = json_object_new_array();
        size_t n = strspn(id, "0123456789abcdef");
        char re[256], *o = re;
        const char *p;

        if (one == NULL) {
            json_object_put(f);
            return NULL;
        }
        if (n >= 12 && id[n] == '\0') {
            json_object_array_add(one, json_object_new_string(id));
            json_object_object_add(f, "id", one);
            return f;
        }
        /* A name: matched whole (the filter is a regular expression;
         * docker's names begin with '/', podman's do not). */
        o += snprintf(re, sizeof(re), "^/?");
        for (p = id; *p && o < re + sizeof(re) - 4; p++) {
            if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                  (*p >= '0' && *p <= '9') || strchr("_.-", *p))) {
                json_object_put(one);
                json_object_put(f);
                return NULL;
            }
            if (*p == '.')
                *o++ = '\\';
            *o++ = *p;
        }
        if (*p) {
            json_object_put(one);
            json_object_put(f);
            return NULL;
        }
        *o++ = '$';
        *o = '\0';
        json_object_array_add(one, json_object_new_string(re));
        json_object_object_add(f, "name", one);
    }
    return f;
}

/*
 * After a create whose answer was lost: remove the container of that
 * name, atp's and of this run, should the daemon have made it.  1 when
 * one was found and removed, 0 when none is there (yet: a create the
 * daemon has not finished may still make it), -1 when the daemon could
 * not say.
 */
static int remove_by_name(atp_call *call, struct dk_session *s,
                          const char *name)
{
    json_object *f = ours_filter(s->run_id, name);
    char **ids = NULL;
    size_t i;
    int found = -1;

    if (f && dk_api_list(&s->http, call,
                         json_object_to_json_string_ext(
                             f, JSON_C_TO_STRING_PLAIN),
                         &ids) == 0) {
        found = ids && ids[0] ? 1 : 0;
        for (i = 0; ids && ids[i]; i++)
            if (dk_api_remove(&s->http, call, ids[i]) != 0)
                found = -1;
    }
    dk_strv_free(ids);
    json_object_put(f);
    return found;
}

int dk_container_create(atp_call *call, struct dk_session *s,
                        const char *const *cmd, const char *const *exec_env,
                        const char *cwd, int with_stdin)
{
    json_object *body = create_body(s, cmd, exec_env, cwd, with_stdin);
    char name[96], id[72], why[1024];
    int rc;

    if (body == NULL)
        return dk_host->set_error(call, ATP_E_NOMEM, "out of memory");
    if (s->n_created++ == 0)
        snprintf(name, sizeof(name), "%s", s->run_id);
    else
        snprintf(name, sizeof(name), "%s-%d", s->run_id, s->n_created);
    /* In the ledger before the daemon hears of it, by the name it is
     * given: a create whose answer never comes may still have made it,
     * and gc finds it by that name and the run's labels. */
    if (dk_host->resource_created(call, "container", name) != 0) {
        json_object_put(body);
        return dk_host->set_error(call, ATP_E_IO, "cannot record container "
                                  "%s in atp's leak ledger before creating "
                                  "it: check the state directory ([atp] "
                                  "state_dir) has room and is writable",
                                  name);
    }
    snprintf(s->name, sizeof(s->name), "%s", name);
    rc = dk_api_create(&s->http, call, name,
                       json_object_to_json_string_ext(
                           body, JSON_C_TO_STRING_PLAIN |
                                     JSON_C_TO_STRING_NOSLASHESCAPE),
                       id);
    json_object_put(body);
    if (rc == ATP_E_BACKEND || rc == ATP_E_TIMEOUT || rc == ATP_E_CANCELLED) {
        /* The daemon may have made it before the answer was lost, or
         * make it yet.  Removed: out of the ledger; else it stays there
         * for the session's close to look again, and for gc. */
        if (remove_by_name(call, s, name) == 1)
            dk_host->resource_removed(call, name);
        else
            snprintf(s->unsure, sizeof(s->unsure), "%s", name);
        s->name[0] = '\0';
        return rc;
    }
    if (rc) {
        /* The daemon answered: it made nothing. */
        dk_host->resource_removed(call, name);
        s->name[0] = '\0';
    }
    if (rc == ATP_E_NOTFOUND)
        return dk_host->set_error(call, ATP_E_IMAGE, "image %s is not on the "
                                  "docker daemon at %s: run `docker pull "
                                  "%s`, or set pull = missing", s->image,
                                  s->be->ep.display, s->image);
    if (rc)
        return rc;
    snprintf(s->id, sizeof(s->id), "%s", id);
    dk_host->resource_created(call, "container", s->id);
    if (cmd)
        return 0; /* the run path attaches before it starts */
    rc = dk_api_start(&s->http, call, s->id, why, sizeof(why));
    if (rc) {
        if (dk_container_remove(call, s) == 0 && why[0])
            dk_host->set_error(call, rc, "%s", why);
        return rc;
    }
    return 0;
}

int dk_container_remove(atp_call *call, struct dk_session *s)
{
    int rc;

    if (s->id[0] == '\0')
        return 0;
    rc = dk_api_remove(&s->http, call, s->id);
    if (rc)
        return rc;
    dk_host->resource_removed(call, s->name);
    s->id[0] = '\0';
    s->name[0] = '\0';
    return 0;
}

/* ---- sessions ----------------------------------------------------------- */

/* "HOST:DEST:MODE" for Binds; paths with ':' cannot be said that way. */
static int add_bind(atp_call *call, json_object *binds, const char *host,
                    const char *dest, int writable)
{
    char text[8200];

    if (strchr(host, ':') || strchr(dest, ':'))
        return dk_host->set_error(call, ATP_E_UNSUPPORTED, "cannot bind-mount"
                                  " %s at %s: docker's bind syntax cannot "
                                  "hold a ':' in a path; rename it",
                                  host, dest);
    if (snprintf(text, sizeof(text), "%s:%s:%s", host, dest,
                 writable ? "rw" : "ro") >= (int)sizeof(text))
        return dk_host->set_error(call, ATP_E_CONFIG, "mount path too long");
    json_object_array_add(binds, json_object_new_string(text));
    return 0;
}

static int session_fill(atp_call *call, struct dk_session *s,
                        const atp_session_spec *spec)
{
    struct dk_backend *b = s->be;
    const char *image = b->image ? b->image : spec->image;
    const char *sbwd = spec->sandbox_workdir ? spec->sandbox_workdir
                                             : "/workspace/wd";
    char user[64];
    struct stat st;
    size_t i;
    int rc;

    if (image == NULL || image[0] == '\0')
        return dk_host->set_error(call, ATP_E_CONFIG, "no image to run: set "
                                  "[backend.docker] image or [image] name");
    if (!image_ok(image))
        return dk_host->set_error(call, ATP_E_CONFIG, "image %s is not an "
                                  "image reference", image);
    if (stat(spec->workdir, &st) != 0 || !S_ISDIR(st.st_mode))
        return dk_host->set_error(call, ATP_E_PROVISION, "workdir %s is not "
                                  "a directory", spec->workdir);
    snprintf(user, sizeof(user), "%lu:%lu", (unsigned long)st.st_uid,
             (unsigned long)st.st_gid);
    s->run_id = strdup(spec->run_id ? spec->run_id : dk_host->run_id(call));
    s->image = strdup(image);
    s->workdir = strdup(spec->workdir);
    s->sb_workdir = strdup(sbwd);
    s->user = strdup(b->user ? b->user : user);
    s->env = dk_strv_json(spec->env);
    if (!s->run_id || !s->image || !s->workdir || !s->sb_workdir ||
        !s->user || !s->env)
        return dk_host->set_error(call, ATP_E_NOMEM, "out of memory");
    if (sbwd[0] != '/')
        return dk_host->set_error(call, ATP_E_CONFIG, "[image] workdir %s "
                                  "must be an absolute path", sbwd);
    if (!b->copy) {
        if ((s->binds = json_object_new_array()) == NULL)
            return dk_host->set_error(call, ATP_E_NOMEM, "out of memory");
        if ((rc = add_bind(call, s->binds, s->workdir, sbwd, 1)) != 0)
            return rc;
        for (i = 0; i < spec->n_mounts; i++)
            if ((rc = add_bind(call, s->binds, spec->mounts[i].host,
                               spec->mounts[i].dest,
                               spec->mounts[i].writable)) != 0)
                return rc;
    }
    s->ttl_s = spec->ttl_ms > 0 ? (spec->ttl_ms + 999) / 1000 : DEFAULT_TTL_S;
    s->one_shot = ATP_HAS_FIELD(spec, atp_session_spec, flags) &&
                  (spec->flags & ATP_SESSION_ONE_SHOT) && !b->copy &&
                  !b->one_shot_exec;
    return 0;
}

/* Pull as the policy says; ATP_E_IMAGE when the image cannot be had. */
static int preflight_image(atp_call *call, struct dk_session *s)
{
    struct dk_backend *b = s->be;
    int rc;

    if (b->pull == 2)
        return dk_api_image_pull(&s->http, call, s->image);
    rc = dk_api_image_exists(&s->http, call, s->image);
    if (rc != ATP_E_NOTFOUND)
        return rc;
    if (b->pull == 0)
        return dk_host->set_error(call, ATP_E_IMAGE, "image %s is not on the "
                                  "docker daemon at %s and pull = never: run "
                                  "`docker pull %s`, or set pull = missing",
                                  s->image, b->ep.display, s->image);
    return dk_api_image_pull(&s->http, call, s->image);
}

/*
 * The image of every session of the backend, resolved once: pulled as
 * the policy says, then its Id and registry digest, which the core
 * reports with every result.  Containers are created from the Id, so a
 * tag moved by a push or a pull while a batch runs changes nothing in
 * it.  A session of another image name resolves its own each time.
 */
static int pin_image(atp_call *call, struct dk_session *s)
{
    struct dk_backend *b = s->be;
    char digest[256] = "";
    int rc = 0;

    pthread_mutex_lock(&b->pin_lock);
    if (b->pinned_name && strcmp(b->pinned_name, s->image) == 0) {
        snprintf(s->image_id, sizeof(s->image_id), "%s", b->pinned_id);
        snprintf(digest, sizeof(digest), "%s", b->pinned_digest);
    } else {
        rc = preflight_image(call, s);
        if (rc == 0)
            rc = dk_api_image_inspect(&s->http, call, s->image, s->image_id,
                                      digest);
        if (rc == ATP_E_NOTFOUND)
            rc = dk_host->set_error(call, ATP_E_IMAGE, "image %s went away "
                                    "from the docker daemon at %s while it "
                                    "was being resolved", s->image,
                                    b->ep.display);
        if (rc == 0 && b->pinned_name == NULL &&
            (b->pinned_name = strdup(s->image)) != NULL) {
            snprintf(b->pinned_id, sizeof(b->pinned_id), "%s", s->image_id);
            snprintf(b->pinned_digest, sizeof(b->pinned_digest), "%s",
                     digest);
        }
    }
    pthread_mutex_unlock(&b->pin_lock);
    if (rc == 0 && ATP_HAS_FIELD(dk_host, atp_host_api, image_pinned))
        dk_host->image_pinned(call, s->image_id, digest[0] ? digest : NULL);
    return rc;
}

/*
 * The NetworkMode for the session.  network = none is "none", except on a
 * docker daemon that has no "bridge" network (dockerd --bridge=none, as
 * in CI): there "default" gives the container the very same isolation -
 * a network namespace of its own with only the loopback interface, since
 * no user may create a network called "bridge" - without the "none"
 * network's endpoint, which the daemon creates, persists and deletes for
 * every container (a third of a container's start here).  Podman's
 * default is a real network: never there.
 */
static int choose_network(atp_call *call, struct dk_session *s)
{
    static const char *const nets[] = {"none", "bridge", "host"};
    struct dk_backend *b = s->be;
    int rc;

    s->net_mode = nets[b->network];
    if (b->network != DK_NET_NONE || b->daemon.podman)
        return 0;
    rc = dk_api_network_exists(&s->http, call, "bridge");
    if (rc == ATP_E_NOTFOUND)
        s->net_mode = "default";
    return rc == ATP_E_NOTFOUND ? 0 : rc;
}

/* Copy mode: the workdir exists in the container and belongs to the user. */
static int prepare_copy_workdir(atp_call *call, struct dk_session *s)
{
    const char *argv[] = {"/bin/sh", "-c",
                          "mkdir -p -- \"$0\" && chown -- \"$1\" \"$0\"",
                          s->sb_workdir, s->user, NULL};
    int code = -1, rc = dk_exec_root(call, s, argv, &code);

    if (rc == 0 && code != 0)
        rc = dk_host->set_error(call, ATP_E_PROVISION, "cannot prepare %s "
                                "for user %s in the container (exit %d)",
                                s->sb_workdir, s->user, code);
    return rc;
}

static int session_open(atp_call *call, void *backend,
                        const atp_session_spec *spec, void **out)
{
    struct dk_backend *b = backend;
    struct dk_session *s = calloc(1, sizeof(*s));
    int rc;

    *out = NULL;
    if (s == NULL)
        return dk_host->set_error(call, ATP_E_NOMEM, "out of memory");
    s->be = b;
    if ((rc = session_fill(call, s, spec)) != 0)
        goto fail;
    if (dk_http_init(&s->http, &b->ep, &b->daemon, b->api_timeout_ms) != 0 ||
        dk_http_init(&s->sweep, &b->ep, &b->daemon, b->api_timeout_ms) != 0) {
        rc = dk_host->set_error(call, ATP_E_NOMEM, "out of memory");
        goto fail;
    }
    if ((rc = dk_api_negotiate(&s->http, call)) != 0 ||
        (rc = pin_image(call, s)) != 0 ||
        (rc = choose_network(call, s)) != 0)
        goto fail;
    s->self_removing = s->one_shot && !b->daemon.podman;
    if (!s->one_shot) {
        if ((rc = dk_container_create(call, s, NULL, NULL, NULL, 0)) != 0)
            goto fail;
        if (b->copy && (rc = prepare_copy_workdir(call, s)) != 0)
            goto fail;
        if ((rc = dk_runner_prepare(call, s)) != 0)
            goto fail;
    }
    *out = s;
    return 0;
fail:
    dk_container_remove(call, s);
    session_free(s);
    return rc;
}

static int session_close(atp_call *call, void *session)
{
    struct dk_session *s = session;
    int rc;

    if (s->closed)
        return 0;
    dk_runner_stop(s);
    rc = dk_container_remove(call, s);
    if (rc == 0 && s->unsure[0]) {
        /* A create whose answer was lost: made since, it goes now; not
         * there, it may still come, and the ledger keeps its name. */
        int found = remove_by_name(call, s, s->unsure);

        if (found == 1)
            dk_host->resource_removed(call, s->unsure);
        else
            rc = dk_host->set_error(call, ATP_E_BACKEND, "the docker daemon "
                                    "at %s never answered the create of "
                                    "container %s, which it may still "
                                    "make", s->be->ep.display, s->unsure);
        if (found == 1)
            s->unsure[0] = '\0';
    }
    if (rc == 0)
        s->closed = 1;
    return rc;
}

static void session_free(void *session)
{
    struct dk_session *s = session;

    if (s == NULL)
        return;
    dk_runner_stop(s);
    dk_http_abandon(&s->sweep); /* the container is gone: so is the sweep */
    dk_http_free(&s->sweep);
    dk_resp_free(&s->sweep_rs);
    dk_http_free(&s->http);
    json_object_put(s->env);
    json_object_put(s->binds);
    free(s->run_id);
    free(s->image);
    free(s->workdir);
    free(s->sb_workdir);
    free(s->user);
    free(s);
}

/* ---- gc ----------------------------------------------------------------- */

/*
 * The ids of atp's own containers of run @run, only container @id among
 * them when @id is not NULL: a lease is a file, and what it names is
 * removed only when the daemon says the container carries our labels.
 */
static int list_ours(struct dk_backend *b, atp_call *call, const char *run,
                     const char *id, char ***ids)
{
    json_object *f = ours_filter(run, id);
    int rc;

    *ids = NULL;
    if (f == NULL)
        return id ? 0 : dk_host->set_error(call, ATP_E_NOMEM,
                                           "out of memory");
    rc = dk_api_list(&b->ctl, call,
                     json_object_to_json_string_ext(f, JSON_C_TO_STRING_PLAIN),
                     ids);
    json_object_put(f);
    return rc;
}

static int reap(atp_call *call, void *backend, const char *kind,
                const char *id)
{
    struct dk_backend *b = backend;
    const char *run = dk_host->run_id(call);
    char **ids = NULL;
    size_t i;
    int rc;

    if (strcmp(kind, "run") == 0)
        run = id;
    if (run == NULL || run[0] == '\0')
        return dk_host->set_error(call, ATP_E_INVAL, "the lease names no "
                                  "run id: nothing can be proven ours");
    if (strcmp(kind, "container") != 0 && strcmp(kind, "run") != 0)
        return dk_host->set_error(call, ATP_E_NOTFOUND, "the docker backend "
                                  "makes no resource of kind '%s'", kind);
    pthread_mutex_lock(&b->ctl_lock);
    rc = dk_api_negotiate(&b->ctl, call);
    if (rc == 0)
        rc = list_ours(b, call, run, strcmp(kind, "run") ? id : NULL, &ids);
    if (rc == 0 && strcmp(kind, "container") == 0 && (ids == NULL ||
                                                      ids[0] == NULL))
        rc = dk_host->set_error(call, ATP_E_NOTFOUND, "no container %.64s "
                                "of run %s", id, run);
    for (i = 0; rc == 0 && ids && ids[i]; i++)
        rc = dk_api_remove(&b->ctl, call, ids[i]);
    pthread_mutex_unlock(&b->ctl_lock);
    dk_strv_free(ids);
    return rc;
}

/* ---- entry -------------------------------------------------------------- */

static void fini(void)
{
    curl_global_cleanup();
}

static const atp_plugin_ops docker_ops = {
    sizeof(atp_plugin_ops),
    ATP_PLUGIN_ABI_MAJOR,
    ATP_PLUGIN_ABI_MINOR,
    "docker",
    PACKAGE_VERSION,
    "runs commands in docker containers through the engine API, with the "
    "workdir bind-mounted (or copied, for a remote daemon)",
    ATP_CAP_SHARED_FS | ATP_CAP_STREAMING | ATP_CAP_STDIN |
        ATP_CAP_SESSIONS | ATP_CAP_MOUNTS | ATP_CAP_CPU_LIMIT |
        ATP_CAP_MEMORY_LIMIT | ATP_CAP_NETWORK_POLICY | ATP_CAP_GC |
        ATP_CAP_KILLS_TREE | ATP_CAP_GROUP_SIGNALS,
    options,
    backend_open,
    backend_free,
    session_open,
    dk_exec,
    session_close,
    session_free,
    check,
    reap,
    fini,
    backend_caps,
    dk_push_archive,
    dk_pull_archive,
    NULL, /* group_open */
    NULL, /* group_free */
};

ATP_PLUGIN_EXPORT int atp_plugin_entry_v1(const atp_host_api *api,
                                          atp_call *call,
                                          const atp_plugin_ops **ops_out)
{
    if (api == NULL || api->abi_major != ATP_PLUGIN_ABI_MAJOR)
        return ATP_E_ABI;
    if (!ATP_HAS_FIELD(api, atp_host_api, spawn))
        return api->set_error(call, ATP_E_ABI, "the docker plugin delivers "
                              "the core's kill schedule: it needs a core of "
                              "plugin ABI 1.2 or later (this one is %u.%u)",
                              api->abi_major, api->abi_minor);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return api->set_error(call, ATP_E_BACKEND, "libcurl failed to "
                              "initialise");
    dk_host = api;
    *ops_out = &docker_ops;
    return 0;
}
