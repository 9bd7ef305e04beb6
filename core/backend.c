/*
 * core/backend.c - backend instances: a plugin plus its config section.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static const char *const cap_names[] = {
    "shared_fs", "isolated_fs", "streaming", "stdin", "sessions", "mounts",
    "cpu_limit", "memory_limit", "network_policy", "gc", "kills_tree",
    "group_signals", "wrapper_usage",
};

ATP_EXTERN const char *atp_cap_name(uint64_t bit)
{
    size_t i;

    for (i = 0; i < ATP__ARRAY_SIZE(cap_names); i++)
        if (bit == (UINT64_C(1) << i))
            return cap_names[i];
    return NULL;
}

const char *atp__backend_key(const atp_backend *be, const char *key)
{
    const struct atp__kv *kv = atp__section_get(be->sec, key);
    const atp_option *o;

    if (kv)
        return kv->value;
    for (o = be->plugin->ops->options; o && o->name; o++)
        if (strcmp(o->name, key) == 0)
            return o->defval;
    return NULL;
}

const char *atp__backend_warm_cache(const atp_backend *be)
{
    const struct atp__kv *kv = atp__section_get(be->sec, "warm_cache");
    const char *v;

    if (kv == NULL)
        kv = atp__section_get(atp__config_section(be->cfg, "image"),
                              "warm_cache");
    v = kv ? kv->value : atp__backend_key(be, "warm_cache");
    return v && *v ? v : NULL;
}

ATP_EXTERN int atp_backend_open(atp_backend **out, atp_config *cfg,
                                const char *name)
{
    char secname[160];
    const struct atp__kv *kv;
    const char *plugin_name;
    char *explicit_path = NULL;
    atp_backend *be;
    atp_call call;
    size_t i;
    int rc;

    *out = NULL;
    if (name == NULL)
        name = cfg->set.backend;
    if (strlen(name) > 120)
        return atp__error(ATP_E_CONFIG, "backend name '%.40s...' is too "
                          "long", name);
    snprintf(secname, sizeof(secname), "backend.%s", name);
    be = calloc(1, sizeof(*be));
    if (be == NULL || (be->name = strdup(name)) == NULL) {
        free(be);
        return atp__error(ATP_E_NOMEM, "out of memory");
    }
    atp__secrets_init(&be->secrets);
    pthread_mutex_init(&be->pin_lock, NULL);
    be->cfg = cfg;
    be->sec = atp__config_section(cfg, secname);
    kv = atp__section_get(be->sec, "plugin");
    plugin_name = kv ? kv->value : name;
    kv = atp__section_get(be->sec, "path");
    if (kv && (explicit_path = atp__config_resolve(cfg, kv->value)) == NULL) {
        rc = atp__error(ATP_E_NOMEM, "out of memory");
        goto fail;
    }
    rc = atp__plugin_get(cfg, plugin_name, explicit_path, &be->plugin);
    free(explicit_path);
    if (rc) {
        if (rc == ATP_E_NOTFOUND && be->sec == NULL) {
            char why[1024];

            snprintf(why, sizeof(why), "%s", atp_last_error());
            atp__error(ATP_E_CONFIG, "unknown backend '%s': %s has no [%s] "
                       "section, and %s", name, atp__config_name(cfg),
                       secname, why);
        }
        if (rc == ATP_E_NOTFOUND)
            rc = ATP_E_CONFIG;
        goto fail;
    }
    rc = atp__config_check_backend(cfg, be->sec, be->plugin->ops->options);
    if (rc)
        goto fail;
    if (cfg->set.require_pinned && atp__backend_pins(be)) {
        const char *image = atp__backend_key(be, "image");

        if (image == NULL || *image == '\0')
            image = cfg->set.image;
        if (image && *image && !atp__image_is_pinned(image)) {
            rc = atp__error(ATP_E_CONFIG, "%s: [image] require_pinned is set "
                            "and backend '%s' would run '%s', a name that "
                            "can move: name the image by digest "
                            "(NAME@sha256:...) or by its id",
                            atp__config_name(cfg), name, image);
            goto fail;
        }
    }
    for (i = 0; be->sec && i < be->sec->n_kv; i++)
        if (strncmp(be->sec->kv[i].key, "env.", 4) == 0)
            atp__secrets_add(&be->secrets, be->sec->kv[i].value);
    atp__call_init(&call, be->plugin, be, NULL, 0);
    rc = be->plugin->ops->backend_open(&call, &be->handle);
    if (rc) {
        atp__error(rc, "backend '%s' (plugin %s): %s", name,
                   be->plugin->path, atp__call_message(&call, rc));
        goto fail;
    }
    /* Read once: they depend on the configuration, not on time. */
    be->caps = ATP__OPS_HAS(be->plugin, backend_caps)
                   ? be->plugin->ops->backend_caps(be->handle)
                   : be->plugin->ops->caps;
    be->plugin_caps = be->caps;
    if ((rc = atp__pool_new(be, &be->pool)) != 0) {
        be->plugin->ops->backend_free(be->handle);
        goto fail;
    }
    if (be->pool && (be->caps & ATP_CAP_SHARED_FS))
        /* A warm sandbox works over a copy of the session's workdir,
         * brought back when it pulls: as an isolated one does. */
        be->caps = (be->caps & ~ATP_CAP_SHARED_FS) | ATP_CAP_ISOLATED_FS;
    *out = be;
    return 0;
fail:
    atp__secrets_free(&be->secrets);
    pthread_mutex_destroy(&be->pin_lock);
    free(be->name);
    free(be);
    return rc;
}

int atp__backend_pins(const atp_backend *be)
{
    const atp_option *o;

    /* A backend runs images when its plugin takes an image name. */
    for (o = be->plugin->ops->options; o && o->name; o++)
        if (strcmp(o->name, "image") == 0)
            return 1;
    return 0;
}

int atp__image_is_pinned(const char *name)
{
    const char *at = strstr(name, "@sha256:");

    if (at)
        return strlen(at + 8) == 64;
    if (strncmp(name, "sha256:", 7) == 0)
        return strlen(name + 7) == 64;
    return strncmp(name, "im-", 3) == 0 && name[3] != '\0';
}

ATP_EXTERN void atp_backend_free(atp_backend *be)
{
    if (be == NULL)
        return;
    atp__pool_free(be->pool);
    if (be->handle)
        be->plugin->ops->backend_free(be->handle);
    atp__secrets_free(&be->secrets);
    pthread_mutex_destroy(&be->pin_lock);
    free(be->name);
    free(be);
}

ATP_EXTERN const char *atp_backend_name(const atp_backend *be)
{
    return be->name;
}

ATP_EXTERN const char *atp_backend_plugin(const atp_backend *be)
{
    return be->plugin->name;
}

ATP_EXTERN const char *atp_backend_plugin_version(const atp_backend *be)
{
    return be->plugin->ops->version;
}

ATP_EXTERN const char *atp_backend_plugin_path(const atp_backend *be)
{
    return be->plugin->path;
}

ATP_EXTERN uint64_t atp_backend_caps(const atp_backend *be)
{
    return be->caps;
}

ATP_EXTERN int atp_backend_check(atp_backend *be, atp_result *res)
{
    atp_call call;
    int64_t t0 = atp__now_ns();
    int rc = 0;

    if (res) {
        res->status = ATP_STATUS_OK;
        res->message[0] = '\0';
    }
    if (ATP__OPS_HAS(be->plugin, check)) {
        atp__call_init(&call, be->plugin, be, NULL,
                       be->cfg->set.provision_timeout_ms);
        rc = be->plugin->ops->check(&call, be->handle);
        if (rc) {
            atp__error(rc, "backend '%s': %s", be->name,
                       atp__call_message(&call, rc));
            atp__result_fail(res, rc, atp_last_error());
        }
    }
    if (res)
        res->duration_s = (double)(atp__now_ns() - t0) / 1e9;
    return rc;
}

/* ---- groups (ABI 1.3) ------------------------------------------------ */

int atp__backend_groups(const atp_backend *be)
{
    return be && be->pool == NULL && ATP__OPS_HAS(be->plugin, group_open) &&
           ATP__OPS_HAS(be->plugin, group_free);
}

int atp__group_open(atp_backend *be, const char *group_id, unsigned n,
                    unsigned max_running, void **out)
{
    atp_group_spec spec;
    atp_call call;
    int rc;

    *out = NULL;
    memset(&spec, 0, sizeof(spec));
    spec.struct_size = sizeof(spec);
    spec.group_id = group_id;
    spec.n_members = n;
    spec.max_running = max_running;
    atp__call_init(&call, be->plugin, be, NULL, 0);
    rc = be->plugin->ops->group_open(&call, be->handle, &spec, out);
    if (rc)
        return atp__error(rc, "backend '%s': %s", be->name,
                          atp__call_message(&call, rc));
    return 0;
}

void atp__group_free(atp_backend *be, void *group)
{
    if (group)
        be->plugin->ops->group_free(group);
}
