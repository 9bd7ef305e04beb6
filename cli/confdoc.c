/*
 * cli/confdoc.c - atp-confdoc: the configuration keys of the core and of
 * each plugin, from their option tables, for build-aux/managen to write
 * atp.ini(5) from.  Not installed.
 *
 *   atp-confdoc PLUGIN.so...
 *
 * Prints tab-separated lines:
 *   key SECTION NAME TYPE DEFAULT CHOICES HELP
 *       (SECTION atp, image, backend: the core's; plugin.NAME: a plugin's)
 *   plugin NAME VERSION DESCRIPTION
 * Each PLUGIN.so is loaded the way atp-run plugins loads a backend's
 * `path =`; one that is refused is an error, so that a page is never
 * written without the keys of a plugin that was built.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <atp/atp.h>

#include "../core/internal.h"

static const char *type_name(int t)
{
    switch (t) {
    case ATP_OPT_STRING: return "string";
    case ATP_OPT_INT: return "integer";
    case ATP_OPT_BOOL: return "boolean";
    case ATP_OPT_DURATION: return "duration";
    case ATP_OPT_SIZE: return "size";
    case ATP_OPT_NUMBER: return "number";
    case ATP_OPT_CHOICE: return "choice";
    default: return "unknown";
    }
}

/* @s with tabs and newlines as spaces, so that a field stays one. */
static void field(const char *s)
{
    putchar('\t');
    for (; s && *s; s++)
        putchar(*s == '\t' || *s == '\n' ? ' ' : *s);
}

static void keys(const char *section, const atp_option *o)
{
    for (; o && o->name; o++) {
        fputs("key", stdout);
        field(section);
        field(o->name);
        field(type_name(o->type));
        field(o->defval);
        field(o->choices);
        field(o->help);
        putchar('\n');
    }
}

struct scan {
    int reported, refused;
};

static void on_plugin(const atp_plugin_info *info, void *payload)
{
    struct scan *sc = payload;
    char section[256];

    /* Only the files given: a plugin installed elsewhere is not ours. */
    if (!ATP_HAS_FIELD(info, atp_plugin_info, backend) ||
        info->backend == NULL)
        return;
    if (!info->loaded) {
        fprintf(stderr, "atp-confdoc: %s: %s\n", info->path,
                info->refusal ? info->refusal : "refused");
        sc->refused++;
        return;
    }
    sc->reported++;
    fputs("plugin", stdout);
    field(info->name);
    field(info->version);
    field(info->description);
    putchar('\n');
    snprintf(section, sizeof(section), "plugin.%s", info->name);
    keys(section, info->options);
}

int main(int argc, char **argv)
{
    struct scan sc = {0, 0};
    atp_config *cfg = NULL;
    char *text = NULL;
    size_t len = 0;
    FILE *f;
    int i, rc;

    keys("atp", atp__config_keys("atp"));
    keys("image", atp__config_keys("image"));
    keys("backend", atp__config_keys("backend"));
    f = open_memstream(&text, &len);
    if (f == NULL)
        return 1;
    for (i = 1; i < argc; i++)
        fprintf(f, "[backend.p%d]\npath = %s\n", i, argv[i]);
    fclose(f);
    rc = atp_config_load_string(&cfg, text, "atp-confdoc");
    free(text);
    if (rc) {
        fprintf(stderr, "atp-confdoc: %s\n", atp_last_error());
        return 1;
    }
    atp_plugins_scan(cfg, on_plugin, &sc);
    atp_config_free(cfg);
    if (sc.refused || sc.reported != argc - 1) {
        fprintf(stderr, "atp-confdoc: %d of %d plugins reported\n",
                sc.reported, argc - 1);
        return 1;
    }
    return 0;
}
