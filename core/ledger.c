/*
 * core/ledger.c - the leak ledger.
 *
 * Before a backend that creates remote resources provisions anything, the
 * core writes a lease, STATE_DIR/leases/RUN_ID.json: backend, owner pid
 * (with its start time, so a reused pid is not mistaken for the owner),
 * creation time, deadline, and - as the plugin reports them - the ids of
 * what it created.  Closing a session removes the lease.  A lease whose
 * owner is gone marks a leak, which `atp-run gc` (atp_gc) reaps through
 * the plugin's reap().
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <json.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

static int mkdir_p(char *path)
{
    char *p;

    for (p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0700) != 0 && errno != EEXIST) {
            *p = '/';
            return -1;
        }
        *p = '/';
    }
    return mkdir(path, 0700) != 0 && errno != EEXIST ? -1 : 0;
}

int atp__state_dir(const atp_config *cfg, char *out, size_t outlen)
{
    const char *e;

    if (cfg->set.state_dir)
        snprintf(out, outlen, "%s", cfg->set.state_dir);
    else if ((e = getenv("XDG_STATE_HOME")) != NULL && *e == '/')
        snprintf(out, outlen, "%s/atp", e);
    else if ((e = getenv("HOME")) != NULL && *e == '/')
        snprintf(out, outlen, "%s/.local/state/atp", e);
    else
        snprintf(out, outlen, "/tmp/atp-%ld", (long)geteuid());
    return 0;
}

/*
 * A ledger directory must be this user's alone: a lease names what `gc`
 * removes, so whoever can write one can make gc remove something.  It
 * must be a directory (not a symbolic link), owned by the effective user
 * and writable by nobody else.
 */
static int private_dir(const char *path)
{
    struct stat sb;

    if (lstat(path, &sb) != 0)
        return atp__error(ATP_E_IO, "cannot use the state directory %s: %s; "
                          "set [atp] state_dir", path, strerror(errno));
    if (S_ISLNK(sb.st_mode))
        return atp__error(ATP_E_CONFIG, "the state directory %s is a "
                          "symbolic link; set [atp] state_dir to the "
                          "directory itself", path);
    if (!S_ISDIR(sb.st_mode))
        return atp__error(ATP_E_CONFIG, "the state directory %s is not a "
                          "directory; set [atp] state_dir", path);
    if (sb.st_uid != geteuid())
        return atp__error(ATP_E_CONFIG, "the state directory %s belongs to "
                          "uid %ld, not to you (uid %ld): its leases could "
                          "be forged; remove it, or set [atp] state_dir to "
                          "a directory of your own", path, (long)sb.st_uid,
                          (long)geteuid());
    if (sb.st_mode & (S_IWGRP | S_IWOTH))
        return atp__error(ATP_E_CONFIG, "the state directory %s is writable "
                          "by others (mode %03o): its leases could be "
                          "forged; chmod 700 it, or set [atp] state_dir",
                          path, (unsigned)(sb.st_mode & 0777));
    return 0;
}

static int leases_dir(const atp_config *cfg, char *out, size_t outlen)
{
    char base[PATH_MAX];
    int rc;

    atp__state_dir(cfg, base, sizeof(base));
    if (snprintf(out, outlen, "%s/leases", base) >= (int)outlen)
        return atp__error(ATP_E_CONFIG, "state_dir %s is too long", base);
    if (mkdir_p(out) != 0)
        return atp__error(ATP_E_IO, "cannot create the ledger directory "
                          "%s: %s; set [atp] state_dir", out,
                          strerror(errno));
    if ((rc = private_dir(base)) != 0 || (rc = private_dir(out)) != 0)
        return rc;
    return 0;
}

/* Start time of process @pid in clock ticks since boot, or 0. */
static unsigned long long proc_start(long pid)
{
    char path[64], buf[1024];
    unsigned long long start = 0;
    const char *p;
    ssize_t n;
    int fd, field;

    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    p = strrchr(buf, ')'); /* the command name may contain spaces */
    if (p == NULL)
        return 0;
    /* Field 3 (state) follows ") "; start time is field 22. */
    for (field = 2; *p && field < 22; p++)
        if (*p == ' ')
            field++;
    sscanf(p, "%llu", &start);
    return start;
}

static int write_lease(const char *path, json_object *obj)
{
    static unsigned serial;
    char tmp[PATH_MAX];
    const char *text = json_object_to_json_string_ext(obj,
                                                      JSON_C_TO_STRING_PLAIN);
    size_t len = strlen(text);
    int fd, rc = 0;

    /* A name of our own, created here and now: never an existing file or
     * a link someone left at a predictable name. */
    snprintf(tmp, sizeof(tmp), "%s.%ld.%u.tmp", path, (long)getpid(),
             __atomic_add_fetch(&serial, 1, __ATOMIC_RELAXED));
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
              0600);
    if (fd < 0)
        return atp__error(ATP_E_IO, "cannot write lease %s: %s", tmp,
                          strerror(errno));
    if (write(fd, text, len) != (ssize_t)len || write(fd, "\n", 1) != 1)
        rc = atp__error(ATP_E_IO, "cannot write lease %s: %s", tmp,
                        strerror(errno));
    if (close(fd) != 0 && rc == 0)
        rc = atp__error(ATP_E_IO, "cannot write lease %s: %s", tmp,
                        strerror(errno));
    if (rc == 0 && rename(tmp, path) != 0)
        rc = atp__error(ATP_E_IO, "cannot write lease %s: %s", path,
                        strerror(errno));
    if (rc)
        unlink(tmp);
    return rc;
}

/* A lease file: a regular file of this user's, not a link; else NULL. */
static json_object *read_lease(const char *path)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    json_object *obj;
    struct stat sb;

    if (fd < 0)
        return NULL;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) ||
        sb.st_uid != geteuid()) {
        close(fd);
        return NULL;
    }
    obj = json_object_from_fd(fd);
    close(fd);
    if (obj && !json_object_is_type(obj, json_type_object)) {
        json_object_put(obj);
        return NULL;
    }
    return obj;
}

int atp__lease_open(struct atp_session *s)
{
    return atp__lease_open_with(s, NULL, NULL);
}

int atp__lease_open_with(struct atp_session *s, const char *kind,
                         const char *id)
{
    const atp_config *cfg = s->be->cfg;
    char dir[PATH_MAX], path[PATH_MAX];
    json_object *obj, *arr;
    time_t now = time(NULL);
    int rc;

    if (s->lease)
        return kind ? atp__lease_note(s, kind, id) : 0;
    if ((rc = leases_dir(cfg, dir, sizeof(dir))) != 0)
        return rc;
    if (snprintf(path, sizeof(path), "%s/%s.json", dir, s->run_id) >=
        (int)sizeof(path))
        return atp__error(ATP_E_CONFIG, "state_dir %s is too long", dir);
    obj = json_object_new_object();
    if (obj == NULL)
        return atp__error(ATP_E_NOMEM, "out of memory");
    json_object_object_add(obj, "run_id", json_object_new_string(s->run_id));
    json_object_object_add(obj, "backend", json_object_new_string(s->be->name));
    json_object_object_add(obj, "plugin",
                           json_object_new_string(s->be->plugin->name));
    if (cfg->path)
        json_object_object_add(obj, "config",
                               json_object_new_string(cfg->path));
    json_object_object_add(obj, "pid", json_object_new_int64(getpid()));
    json_object_object_add(obj, "pid_start",
                           json_object_new_uint64(proc_start(getpid())));
    json_object_object_add(obj, "created", json_object_new_int64(now));
    arr = json_object_new_array();
    if (kind && arr) {
        json_object *item = json_object_new_object();

        json_object_object_add(item, "kind", json_object_new_string(kind));
        json_object_object_add(item, "id", json_object_new_string(id));
        json_object_array_add(arr, item);
    }
    json_object_object_add(obj, "resources", arr);
    rc = write_lease(path, obj);
    json_object_put(obj);
    if (rc == 0 && (s->lease = strdup(path)) == NULL)
        rc = atp__error(ATP_E_NOMEM, "out of memory");
    return rc;
}

int atp__lease_note(struct atp_session *s, const char *kind, const char *id)
{
    json_object *obj, *arr, *item;
    int rc;

    if (s->lease == NULL)
        return 0;
    obj = read_lease(s->lease);
    if (obj == NULL || !json_object_object_get_ex(obj, "resources", &arr))
        return atp__error(ATP_E_IO, "lease %s is unreadable", s->lease);
    item = json_object_new_object();
    json_object_object_add(item, "kind", json_object_new_string(kind));
    json_object_object_add(item, "id", json_object_new_string(id));
    json_object_array_add(arr, item);
    rc = write_lease(s->lease, obj);
    json_object_put(obj);
    return rc;
}

int atp__lease_forget(struct atp_session *s, const char *id)
{
    json_object *obj, *arr;
    size_t i;
    int rc;

    if (s->lease == NULL)
        return 0;
    obj = read_lease(s->lease);
    if (obj == NULL || !json_object_object_get_ex(obj, "resources", &arr))
        return atp__error(ATP_E_IO, "lease %s is unreadable", s->lease);
    for (i = json_object_array_length(arr); i-- > 0;) {
        json_object *it = json_object_array_get_idx(arr, i), *v;

        if (json_object_object_get_ex(it, "id", &v) &&
            strcmp(json_object_get_string(v), id) == 0)
            json_object_array_del_idx(arr, i, 1);
    }
    rc = write_lease(s->lease, obj);
    json_object_put(obj);
    return rc;
}

void atp__lease_close(struct atp_session *s)
{
    json_object *obj, *arr;

    if (s->lease == NULL)
        return;
    if (s->state != ATP__CLOSED) {
        /* Keep a lease that still lists resources: they may have leaked. */
        obj = read_lease(s->lease);
        if (obj && json_object_object_get_ex(obj, "resources", &arr) &&
            json_object_array_length(arr) > 0) {
            json_object_put(obj);
            return;
        }
        json_object_put(obj);
    }
    unlink(s->lease);
    free(s->lease);
    s->lease = NULL;
}

/*
 * Kill the host processes of run @run that outlived their owner: those
 * whose environment carries ATP_EXEC_ID=RUN.N (the core's runner puts it
 * in every command's), and their process groups.  Returns how many.
 */
static int reap_processes(const char *run)
{
    char prefix[96], path[64], buf[65536];
    size_t plen;
    struct dirent *de;
    DIR *d;
    int killed = 0;

    if (snprintf(prefix, sizeof(prefix), ATP__MARKER "%s.", run) >=
            (int)sizeof(prefix) ||
        (d = opendir("/proc")) == NULL)
        return 0;
    plen = strlen(prefix);
    while ((de = readdir(d)) != NULL) {
        long pid = strtol(de->d_name, NULL, 10);
        size_t off = 0;
        ssize_t n;
        int fd;

        if (pid <= 1 || pid == (long)getpid())
            continue;
        snprintf(path, sizeof(path), "/proc/%ld/environ", pid);
        if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
            continue;
        n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (n <= 0)
            continue;
        buf[n] = '\0';
        while (off < (size_t)n) {
            size_t len = strlen(buf + off);

            if (len > plen && strncmp(buf + off, prefix, plen) == 0) {
                kill(-(pid_t)pid, SIGKILL); /* its group, if it leads one */
                kill((pid_t)pid, SIGKILL);
                killed++;
                break;
            }
            off += len + 1;
        }
    }
    closedir(d);
    return killed;
}

/*
 * Remove a directory the core made for a warm sandbox (atp-pool-*, ours):
 * 1 when it is gone.  Anything else a lease names is left alone.
 */
static int reap_directory(const char *path, char *why, size_t whylen)
{
    const char *base = strrchr(path, '/');
    struct stat st;

    if (path[0] != '/' || base == NULL ||
        strncmp(base + 1, "atp-pool-", 9) != 0) {
        snprintf(why, whylen, "%s is not a directory atp made; left alone",
                 path);
        return 0;
    }
    if (lstat(path, &st) != 0)
        return errno == ENOENT;
    if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid()) {
        snprintf(why, whylen, "%s is not a directory of this user; left "
                 "alone", path);
        return 0;
    }
    atp__remove_tree(path);
    if (lstat(path, &st) == 0) {
        snprintf(why, whylen, "cannot remove %s entirely", path);
        return 0;
    }
    return 1;
}

static const char *jstr(json_object *obj, const char *key)
{
    json_object *v;

    if (!json_object_object_get_ex(obj, key, &v))
        return NULL;
    return json_object_get_string(v);
}

static int owner_alive(json_object *lease)
{
    json_object *v;
    long pid;
    unsigned long long start, recorded = 0;

    if (!json_object_object_get_ex(lease, "pid", &v))
        return 0;
    pid = (long)json_object_get_int64(v);
    if (pid <= 0)
        return 0;
    start = proc_start(pid);
    if (start == 0)
        return 0;
    if (json_object_object_get_ex(lease, "pid_start", &v))
        recorded = json_object_get_uint64(v);
    return recorded == 0 || recorded == start;
}

/* Reap the resources of one dead lease; returns 1 when nothing is left. */
static int reap_lease(atp_config *cfg, const char *path, json_object *lease,
                      int dry_run, atp_gc_fn fn, void *payload)
{
    const char *backend = jstr(lease, "backend");
    const char *run_id = jstr(lease, "run_id");
    json_object *arr, *v;
    atp_backend *be = NULL;
    char err[1024] = "";
    long pid = 0;
    size_t i;
    int left = 0, changed = 0;

    if (json_object_object_get_ex(lease, "pid", &v))
        pid = (long)json_object_get_int64(v);
    if (!json_object_object_get_ex(lease, "resources", &arr))
        return 1;
    if (!dry_run && backend && atp_backend_open(&be, cfg, backend) != 0)
        snprintf(err, sizeof(err), "cannot open backend '%s': %s", backend,
                 atp_last_error());
    if (be && ATP__OPS_HAS(be->plugin, reap) && run_id) {
        atp_call call;

        /* Everything labelled with the run id, even what the ledger
         * never heard of because the owner died right after creating it. */
        atp__call_init(&call, be->plugin, be, NULL,
                       cfg->set.close_timeout_ms);
        call.run_id = run_id;
        be->plugin->ops->reap(&call, be->handle, "run", run_id);
    }
    for (i = json_object_array_length(arr); i-- > 0;) {
        json_object *it = json_object_array_get_idx(arr, i);
        atp_gc_item item;
        char why[1024] = "";
        int removed = 0;

        memset(&item, 0, sizeof(item));
        item.struct_size = sizeof(item);
        item.backend = backend;
        item.kind = jstr(it, "kind");
        item.id = jstr(it, "id");
        item.run_id = run_id;
        item.owner_pid = pid;
        if (item.kind && strcmp(item.kind, "directory") == 0) {
            /* A warm sandbox's host directory: the core's own. */
            if (!dry_run && item.id)
                removed = reap_directory(item.id, why, sizeof(why));
        } else if (item.kind && strcmp(item.kind, "processes") == 0) {
            /* Host commands of the run: the core's own to reap. */
            if (!dry_run && item.id) {
                reap_processes(item.id);
                removed = 1;
            }
        } else if (!dry_run && be && item.id) {
            if (!ATP__OPS_HAS(be->plugin, reap)) {
                snprintf(why, sizeof(why), "plugin %s cannot reap",
                         be->plugin->name);
            } else {
                atp_call call;
                int rc;

                atp__call_init(&call, be->plugin, be, NULL,
                               cfg->set.close_timeout_ms);
                call.run_id = run_id;
                rc = be->plugin->ops->reap(&call, be->handle,
                                           item.kind ? item.kind : "",
                                           item.id);
                if (rc == 0 || rc == ATP_E_NOTFOUND)
                    removed = 1;
                else
                    snprintf(why, sizeof(why), "%s",
                             atp__call_message(&call, rc));
            }
        } else if (!dry_run) {
            snprintf(why, sizeof(why), "%s", err);
        }
        item.removed = removed;
        item.error = why[0] ? why : NULL;
        if (fn)
            fn(&item, payload);
        if (removed) {
            json_object_array_del_idx(arr, i, 1);
            changed = 1;
        } else {
            left++;
        }
    }
    atp_backend_free(be);
    if (left == 0)
        return 1;
    if (changed)
        write_lease(path, lease);
    return 0;
}

ATP_EXTERN int atp_gc(atp_config *cfg, int all, int dry_run, atp_gc_fn fn,
                      void *payload)
{
    char dir[PATH_MAX];
    struct dirent *de;
    DIR *d;
    int rc;

    if ((rc = leases_dir(cfg, dir, sizeof(dir))) != 0)
        return rc;
    d = opendir(dir);
    if (d == NULL)
        return atp__error(ATP_E_IO, "cannot read %s: %s", dir,
                          strerror(errno));
    while ((de = readdir(d)) != NULL) {
        char path[PATH_MAX];
        size_t len = strlen(de->d_name);
        json_object *lease;

        if (len < 6 || strcmp(de->d_name + len - 5, ".json") != 0)
            continue;
        if (snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) >=
            (int)sizeof(path))
            continue;
        lease = read_lease(path);
        if (lease == NULL)
            continue;
        if (all || !owner_alive(lease)) {
            if (reap_lease(cfg, path, lease, dry_run, fn, payload) &&
                !dry_run)
                unlink(path);
        }
        json_object_put(lease);
    }
    closedir(d);
    return 0;
}
