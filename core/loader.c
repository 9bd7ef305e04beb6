/*
 * core/loader.c - finding, loading and negotiating with backend plugins.
 *
 * A plugin is a regular file named atp-NAME.so, searched in: the backend
 * section's `path`, then $ATP_PLUGIN_PATH (read with secure_getenv, so
 * ignored in set-id programs), then [atp] plugin_path, then the compiled-in
 * plugin directory.  Files are opened with RTLD_NOW | RTLD_LOCAL and never
 * unloaded: libraries such as libcurl and OpenSSL do not survive it.
 * Every refusal names the file, the reason and both ABI versions; with
 * ATP_PLUGIN_DEBUG=1 every candidate is traced to the configuration's
 * log callback.
 */
#define _GNU_SOURCE
#include "config.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#ifndef PLUGINDIR
#error "PLUGINDIR must be defined by the build"
#endif

/* Every file ever opened, usable or refused, so none is opened twice. */
struct loaded {
    char *path;
    struct atp__plugin *plugin; /* NULL when refused */
    char *refusal;
    unsigned abi_major, abi_minor; /* as the file declared, if it did */
    struct loaded *next;
};

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct loaded *registry;
static int fini_registered;

static int debug_on(void)
{
    const char *e = secure_getenv("ATP_PLUGIN_DEBUG");

    return e && *e && strcmp(e, "0") != 0;
}

static void trace(const char *fmt, ...) ATP_PRINTF(1, 2);

/* The configuration whose log callback the search of this thread uses. */
static _Thread_local const atp_config *trace_cfg;

static void trace(const char *fmt, ...)
{
    char msg[2048];
    va_list ap;

    if (!debug_on() || trace_cfg == NULL || trace_cfg->log_fn == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    trace_cfg->log_fn(ATP_LOG_DEBUG, "plugin-loader", msg,
                      trace_cfg->log_payload);
}

static void fini_all(void)
{
    struct loaded *l;

    for (l = registry; l; l = l->next)
        if (l->plugin && ATP__OPS_HAS(l->plugin, fini))
            l->plugin->ops->fini();
}

void atp__plugins_fini(void)
{
    fini_all();
}

static int name_ok(const char *name)
{
    const char *p;

    if (*name == '\0')
        return 0;
    for (p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
            return 0;
    return 1;
}

/* The plugin name in "DIR/atp-NAME.so", or NULL. */
static char *name_from_path(const char *path)
{
    const char *base = strrchr(path, '/');
    size_t len;
    char *name;

    base = base ? base + 1 : path;
    len = strlen(base);
    if (strncmp(base, "atp-", 4) != 0 || len <= 7 ||
        strcmp(base + len - 3, ".so") != 0)
        return NULL;
    name = strndup(base + 4, len - 7);
    if (name && !name_ok(name)) {
        free(name);
        return NULL;
    }
    return name;
}

static struct loaded *remember(const char *path)
{
    struct loaded *l = calloc(1, sizeof(*l));

    if (l == NULL)
        return NULL;
    l->path = strdup(path);
    if (l->path == NULL) {
        free(l);
        return NULL;
    }
    l->next = registry;
    registry = l;
    return l;
}

static void refuse(struct loaded *l, const char *fmt, ...) ATP_PRINTF(2, 3);

static void refuse(struct loaded *l, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    free(l->refusal);
    l->refusal = strdup(msg);
    trace("%s: refused: %s", l->path, msg);
}

#define MANDATORY(m) {#m, offsetof(atp_plugin_ops, m)}

/* Open @path and negotiate; the outcome is recorded in @l. */
static void open_plugin(struct loaded *l)
{
    static const struct {
        const char *name;
        size_t off;
    } mandatory[] = {
        MANDATORY(backend_open), MANDATORY(backend_free),
        MANDATORY(session_open), MANDATORY(exec),
        MANDATORY(session_close), MANDATORY(session_free),
    };
    const size_t min_size = offsetof(atp_plugin_ops, session_free) +
                            sizeof(void (*)(void *));
    const atp_plugin_ops *ops = NULL;
    struct atp__plugin *p;
    atp_plugin_entry_fn entry;
    atp_call call;
    struct stat st;
    void *dl;
    size_t i;
    int rc;

    if (stat(l->path, &st) != 0) {
        refuse(l, "cannot stat: %s", strerror(errno));
        return;
    }
    if (!S_ISREG(st.st_mode)) {
        refuse(l, "not a regular file");
        return;
    }
    dl = dlopen(l->path, RTLD_NOW | RTLD_LOCAL);
    if (dl == NULL) {
        refuse(l, "dlopen failed: %s (check its dependencies with ldd)",
               dlerror());
        return;
    }
    *(void **)&entry = dlsym(dl, ATP_PLUGIN_ENTRY_SYMBOL);
    if (entry == NULL) {
        char sym[32];
        unsigned v;

        for (v = 0; v < 10; v++) {
            snprintf(sym, sizeof(sym), "atp_plugin_entry_v%u", v);
            if (v != ATP_PLUGIN_ABI_MAJOR && dlsym(dl, sym) != NULL) {
                l->abi_major = v;
                refuse(l, "built for plugin ABI %u (it exports %s); this "
                       "core speaks ABI %d.%d and needs %s", v, sym,
                       ATP_PLUGIN_ABI_MAJOR, ATP_PLUGIN_ABI_MINOR,
                       ATP_PLUGIN_ENTRY_SYMBOL);
                return;
            }
        }
        refuse(l, "no entry point %s: not an atp plugin, or built for "
               "another ABI (core ABI %d.%d)", ATP_PLUGIN_ENTRY_SYMBOL,
               ATP_PLUGIN_ABI_MAJOR, ATP_PLUGIN_ABI_MINOR);
        return;
    }
    p = calloc(1, sizeof(*p));
    if (p == NULL || (p->path = strdup(l->path)) == NULL ||
        (p->name = name_from_path(l->path)) == NULL) {
        if (p) {
            free(p->path);
            free(p);
        }
        refuse(l, "out of memory, or the file is not named atp-NAME.so");
        return;
    }
    p->dl = dl;
    atp__call_init(&call, p, NULL, NULL, 0);
    rc = entry(&atp__host_api, &call, &ops);
    if (rc != 0) {
        refuse(l, "initialisation failed in %s (core ABI %d.%d): %s",
               ATP_PLUGIN_ENTRY_SYMBOL, ATP_PLUGIN_ABI_MAJOR,
               ATP_PLUGIN_ABI_MINOR, atp__call_message(&call, rc));
        goto fail;
    }
    if (ops == NULL) {
        refuse(l, "the entry point returned no ops table (core ABI %d.%d)",
               ATP_PLUGIN_ABI_MAJOR, ATP_PLUGIN_ABI_MINOR);
        goto fail;
    }
    l->abi_major = ops->abi_major;
    if (ops->struct_size < offsetof(atp_plugin_ops, abi_minor) +
                               sizeof(ops->abi_minor)) {
        refuse(l, "ops table of %u bytes is too small to be ABI %d.x "
               "(core ABI %d.%d)", (unsigned)ops->struct_size,
               ATP_PLUGIN_ABI_MAJOR, ATP_PLUGIN_ABI_MAJOR,
               ATP_PLUGIN_ABI_MINOR);
        goto fail;
    }
    l->abi_minor = ops->abi_minor;
    if (ops->abi_major != ATP_PLUGIN_ABI_MAJOR) {
        refuse(l, "built for plugin ABI %u.%u; this core speaks ABI %d.%d",
               ops->abi_major, ops->abi_minor, ATP_PLUGIN_ABI_MAJOR,
               ATP_PLUGIN_ABI_MINOR);
        goto fail;
    }
    if ((int)ops->abi_minor - ATP_PLUGIN_ABI_MINOR_FLOOR < 0) {
        refuse(l, "built for plugin ABI %u.%u; this core (ABI %d.%d) "
               "supports minors %d and later", ops->abi_major,
               ops->abi_minor, ATP_PLUGIN_ABI_MAJOR, ATP_PLUGIN_ABI_MINOR,
               ATP_PLUGIN_ABI_MINOR_FLOOR);
        goto fail;
    }
    if (ops->struct_size < min_size) {
        refuse(l, "ops table of %u bytes lacks the mandatory callbacks of "
               "ABI %u.%u (needs %zu bytes; core ABI %d.%d)",
               (unsigned)ops->struct_size, ops->abi_major, ops->abi_minor,
               min_size, ATP_PLUGIN_ABI_MAJOR, ATP_PLUGIN_ABI_MINOR);
        goto fail;
    }
    for (i = 0; i < ATP__ARRAY_SIZE(mandatory); i++) {
        void *fp;

        memcpy(&fp, (const char *)ops + mandatory[i].off, sizeof(fp));
        if (fp == NULL) {
            refuse(l, "missing mandatory callback %s (plugin ABI %u.%u, "
                   "core ABI %d.%d)", mandatory[i].name, ops->abi_major,
                   ops->abi_minor, ATP_PLUGIN_ABI_MAJOR,
                   ATP_PLUGIN_ABI_MINOR);
            goto fail;
        }
    }
    if (ops->name == NULL || ops->version == NULL) {
        refuse(l, "ops table has no name or version (plugin ABI %u.%u, "
               "core ABI %d.%d)", ops->abi_major, ops->abi_minor,
               ATP_PLUGIN_ABI_MAJOR, ATP_PLUGIN_ABI_MINOR);
        goto fail;
    }
    p->ops = ops;
    p->ops_size = ops->struct_size;
    p->abi_minor = ops->abi_minor;
    l->plugin = p;
    if (!fini_registered) {
        fini_registered = 1;
        atexit(fini_all);
    }
    trace("%s: loaded %s %s (plugin ABI %u.%u, core ABI %d.%d)", l->path,
          ops->name, ops->version, ops->abi_major, ops->abi_minor,
          ATP_PLUGIN_ABI_MAJOR, ATP_PLUGIN_ABI_MINOR);
    return;
fail:
    /* Never dlclose: the library may have registered destructors. */
    free(p->name);
    free(p->path);
    free(p);
}

/* Look @path up in the registry, opening it on first use. */
static struct loaded *get_loaded(const char *path)
{
    struct loaded *l;

    for (l = registry; l; l = l->next) {
        if (strcmp(l->path, path) == 0) {
            trace("%s: %s earlier in this process", path,
                  l->plugin ? "loaded" : "refused");
            return l;
        }
    }
    l = remember(path);
    if (l)
        open_plugin(l);
    return l;
}

/* Directories to search, in order, as one ':'-separated string. */
ATP_EXTERN const char *atp_plugin_search_path(atp_config *cfg)
{
    const char *env = secure_getenv("ATP_PLUGIN_PATH");
    const char *extra = cfg ? cfg->set.plugin_path : NULL;
    size_t len = 2 + strlen(PLUGINDIR) + (env ? strlen(env) + 1 : 0) +
                 (extra ? strlen(extra) + 1 : 0);
    char *s;

    if (cfg == NULL)
        return PLUGINDIR;
    s = malloc(len);
    if (s == NULL)
        return PLUGINDIR;
    snprintf(s, len, "%s%s%s%s%s", env && *env ? env : "",
             env && *env ? ":" : "", extra ? extra : "", extra ? ":" : "",
             PLUGINDIR);
    /* Computed once: a string a caller holds stays valid for as long as
     * the configuration (ATP_PLUGIN_PATH is read once, too). */
    pthread_mutex_lock(&reg_lock);
    if (cfg->search_path == NULL) {
        cfg->search_path = s;
        s = NULL;
    }
    pthread_mutex_unlock(&reg_lock);
    free(s);
    return cfg->search_path;
}

/* Call @fn for each directory of the search path until it returns 1. */
static int each_dir(atp_config *cfg, int (*fn)(const char *dir, void *arg),
                    void *arg)
{
    const char *path = atp_plugin_search_path(cfg);
    const char *p = path;

    while (p && *p) {
        const char *colon = strchr(p, ':');
        size_t len = colon ? (size_t)(colon - p) : strlen(p);
        char dir[4096];

        if (len > 0 && len < sizeof(dir)) {
            memcpy(dir, p, len);
            dir[len] = '\0';
            if (fn(dir, arg))
                return 1;
        }
        p = colon ? colon + 1 : NULL;
    }
    return 0;
}

struct find_arg {
    const char *name;
    char found[4096];
};

static int find_in_dir(const char *dir, void *arg)
{
    struct find_arg *fa = arg;
    struct stat st;
    char path[4096];

    snprintf(path, sizeof(path), "%s/atp-%s.so", dir, fa->name);
    if (stat(path, &st) != 0) {
        trace("%s: not there", path);
        return 0;
    }
    if (!S_ISREG(st.st_mode)) {
        trace("%s: not a regular file, skipped", path);
        return 0;
    }
    trace("%s: candidate for '%s'", path, fa->name);
    snprintf(fa->found, sizeof(fa->found), "%s", path);
    return 1;
}

int atp__plugin_get(atp_config *cfg, const char *name,
                    const char *explicit_path, struct atp__plugin **out)
{
    struct find_arg fa;
    struct loaded *l;
    int rc = 0;

    *out = NULL;
    trace_cfg = cfg;
    if (!name_ok(name))
        return atp__error(ATP_E_CONFIG, "'%s' is not a valid plugin name "
                          "(letters, digits, '-' and '_')", name);
    memset(&fa, 0, sizeof(fa));
    fa.name = name;
    if (explicit_path) {
        trace("%s: candidate for '%s' (from the backend's path)",
              explicit_path, name);
        snprintf(fa.found, sizeof(fa.found), "%s", explicit_path);
        if (access(fa.found, F_OK) != 0)
            return atp__error(ATP_E_NOTFOUND, "plugin file %s (the path of "
                              "backend '%s') does not exist", explicit_path,
                              name);
    } else if (!each_dir(cfg, find_in_dir, &fa)) {
        return atp__error(ATP_E_NOTFOUND, "no plugin atp-%s.so in %s; set "
                          "ATP_PLUGIN_PATH or the backend's path, or run "
                          "`atp-run plugins` to see what is installed", name,
                          atp_plugin_search_path(cfg));
    }
    pthread_mutex_lock(&reg_lock);
    l = get_loaded(fa.found);
    if (l == NULL)
        rc = atp__error(ATP_E_NOMEM, "out of memory");
    else if (l->plugin == NULL)
        rc = atp__error(ATP_E_ABI, "plugin %s: %s", l->path,
                        l->refusal ? l->refusal : "refused");
    else
        *out = l->plugin;
    pthread_mutex_unlock(&reg_lock);
    return rc;
}

struct scan_arg {
    atp_plugin_info_fn fn;
    void *payload;
    char **seen;
    size_t n_seen;
    char **files;        /* real paths of the files reported */
    size_t n_files;
    const char *backend; /* the section whose path = names the file */
    int rc;
};

/* Remember that the file at @path was reported; 1 if it already was. */
static int reported(struct scan_arg *sa, const char *path)
{
    char *real = realpath(path, NULL), **grown;
    size_t i;

    if (real == NULL)
        real = strdup(path);
    if (real == NULL)
        return 0;
    for (i = 0; i < sa->n_files; i++) {
        if (strcmp(sa->files[i], real) == 0) {
            free(real);
            return 1;
        }
    }
    grown = realloc(sa->files, (sa->n_files + 1) * sizeof(*grown));
    if (grown == NULL) {
        free(real);
        return 0;
    }
    sa->files = grown;
    sa->files[sa->n_files++] = real;
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void report(struct scan_arg *sa, struct loaded *l, const char *name)
{
    atp_plugin_info info;
    size_t i;

    memset(&info, 0, sizeof(info));
    info.struct_size = sizeof(info);
    info.name = name;
    info.path = l->path;
    info.backend = sa->backend;
    for (i = 0; i < sa->n_seen && sa->backend == NULL; i++)
        if (strcmp(sa->seen[i], name) == 0)
            info.shadowed = 1;
    if (l->plugin) {
        const atp_plugin_ops *ops = l->plugin->ops;

        info.loaded = 1;
        info.version = ops->version;
        info.description = ops->description;
        info.abi_major = ops->abi_major;
        info.abi_minor = ops->abi_minor;
        info.caps = ops->caps;
        info.options = ops->options;
    } else {
        info.refusal = l->refusal;
        info.abi_major = l->abi_major;
        info.abi_minor = l->abi_minor;
    }
    sa->fn(&info, sa->payload);
    if (!info.shadowed && sa->backend == NULL) {
        char **grown = realloc(sa->seen, (sa->n_seen + 1) * sizeof(*grown));

        if (grown) {
            sa->seen = grown;
            sa->seen[sa->n_seen] = strdup(name);
            if (sa->seen[sa->n_seen])
                sa->n_seen++;
        }
    }
}

static int scan_dir(const char *dir, void *arg)
{
    struct scan_arg *sa = arg;
    DIR *d = opendir(dir);
    struct dirent *de;
    char **names = NULL;
    size_t n = 0, i;

    trace("scanning %s%s", dir, d ? "" : " (cannot open)");
    if (d == NULL)
        return 0;
    while ((de = readdir(d)) != NULL) {
        char *name = name_from_path(de->d_name), **grown;

        if (name == NULL)
            continue;
        free(name);
        grown = realloc(names, (n + 1) * sizeof(*grown));
        if (grown == NULL)
            break;
        names = grown;
        names[n] = strdup(de->d_name);
        if (names[n])
            n++;
    }
    closedir(d);
    if (n > 1)
        qsort(names, n, sizeof(*names), cmp_str);
    for (i = 0; i < n; i++) {
        char path[4096];
        char *name;
        struct loaded *l;
        struct stat st;

        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        /* As when a backend is opened: only regular files qualify. */
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
            trace("%s: not a regular file, skipped", path);
            free(names[i]);
            continue;
        }
        name = name_from_path(names[i]);
        pthread_mutex_lock(&reg_lock);
        l = get_loaded(path);
        pthread_mutex_unlock(&reg_lock);
        if (l && name && !reported(sa, path))
            report(sa, l, name);
        free(name);
        free(names[i]);
    }
    free(names);
    return 0;
}

/*
 * The files that the `path =` of [backend.NAME] sections name, in the
 * order of the sections, unless the search path already listed them.
 */
static void scan_paths(atp_config *cfg, struct scan_arg *sa)
{
    size_t i;

    for (i = 0; cfg && i < cfg->n_sec; i++) {
        const struct atp__section *sec = &cfg->sec[i];
        const struct atp__kv *path = atp__section_get(sec, "path");
        const struct atp__kv *plugin = atp__section_get(sec, "plugin");
        struct loaded *l;
        char *file, *name;

        if (strncmp(sec->name, "backend.", 8) != 0 || path == NULL)
            continue;
        file = atp__config_resolve(cfg, path->value);
        if (file == NULL)
            continue;
        trace("%s: named by the path of [%s]", file, sec->name);
        name = name_from_path(file);
        if (name == NULL)
            name = strdup(plugin ? plugin->value : sec->name + 8);
        pthread_mutex_lock(&reg_lock);
        l = get_loaded(file);
        pthread_mutex_unlock(&reg_lock);
        if (l && name && !reported(sa, file)) {
            sa->backend = sec->name + 8;
            report(sa, l, name);
            sa->backend = NULL;
        }
        free(name);
        free(file);
    }
}

ATP_EXTERN int atp_plugins_scan(atp_config *cfg, atp_plugin_info_fn fn,
                                void *payload)
{
    struct scan_arg sa;
    size_t i;

    memset(&sa, 0, sizeof(sa));
    sa.fn = fn;
    sa.payload = payload;
    trace_cfg = cfg;
    each_dir(cfg, scan_dir, &sa);
    scan_paths(cfg, &sa);
    for (i = 0; i < sa.n_seen; i++)
        free(sa.seen[i]);
    free(sa.seen);
    for (i = 0; i < sa.n_files; i++)
        free(sa.files[i]);
    free(sa.files);
    return sa.rc;
}
