/*
 * core/xfer_load.c - loading the transfer module.
 *
 * The tar engine (core/tarstream.c) links libarchive, whose dependencies
 * (libxml2, ICU, libstdc++, ...) cost milliseconds at every process start.
 * libatp therefore keeps it in a module of its own, atp-transfer.so in
 * PKGLIBDIR (or $ATP_TRANSFER_MODULE, read with secure_getenv), opened
 * with dlopen the first time a transfer is needed and never closed.
 */
#define _GNU_SOURCE
#include "config.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "transfer.h"

#ifndef PKGLIBDIR
#error "PKGLIBDIR must be defined by the build"
#endif

static pthread_once_t once = PTHREAD_ONCE_INIT;
static struct atp__xfer_module mod;
static int loaded;
static char load_error[1024];

static void load(void)
{
    const char *path = secure_getenv("ATP_TRANSFER_MODULE");
    int (*entry)(struct atp__xfer_module *);
    void *dl;

    if (path == NULL || *path == '\0')
        path = PKGLIBDIR "/atp-transfer.so";
    dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (dl == NULL) {
        snprintf(load_error, sizeof(load_error), "cannot load the transfer "
                 "module: %s; reinstall atp (or set ATP_TRANSFER_MODULE)",
                 dlerror());
        return;
    }
    *(void **)&entry = dlsym(dl, "atp_transfer_module_v1");
    memset(&mod, 0, sizeof(mod));
    mod.struct_size = sizeof(mod);
    if (entry == NULL || entry(&mod) != 0) {
        snprintf(load_error, sizeof(load_error), "%s is not this libatp's "
                 "transfer module; reinstall atp", path);
        return;
    }
    loaded = 1;
}

/* The module, or NULL with the thread's error set. */
static const struct atp__xfer_module *module(void)
{
    pthread_once(&once, load);
    if (!loaded) {
        atp__error(ATP_E_TRANSFER, "%s", load_error);
        return NULL;
    }
    return &mod;
}

/* Carry the module's message over to libatp's thread-local error. */
static int relay(const struct atp__xfer_module *m, int rc)
{
    if (rc)
        atp__error(rc, "%s", m->last_error());
    return rc;
}

int atp__manifest_scan(struct atp__manifest *man, const char *root,
                       const char *const *excludes)
{
    const struct atp__xfer_module *m = module();

    return m ? relay(m, m->manifest_scan(man, root, excludes))
             : ATP_E_TRANSFER;
}

int atp__tar_create(const char *root, struct atp__manifest *list,
                    int compression, atp__write_fn write, void *ctx,
                    atp__warn_fn warn, void *warn_ctx,
                    struct atp__tar_stats *st)
{
    const struct atp__xfer_module *m = module();

    if (m == NULL) {
        memset(st, 0, sizeof(*st));
        return ATP_E_TRANSFER;
    }
    return relay(m, m->tar_create(root, list, compression, write, ctx, warn,
                                  warn_ctx, st));
}

int atp__tar_extract(const char *root, const char *const *excludes,
                     const struct atp__tar_limits *lim, atp__read_fn read,
                     void *ctx, struct atp__manifest *got,
                     struct atp__tar_stats *st)
{
    const struct atp__xfer_module *m = module();

    if (m == NULL) {
        memset(st, 0, sizeof(*st));
        return ATP_E_TRANSFER;
    }
    return relay(m, m->tar_extract(root, excludes, lim, read, ctx, got, st));
}
