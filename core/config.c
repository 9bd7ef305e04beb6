/*
 * core/config.c - the INI configuration, parsed with inih.
 *
 * The core validates its own sections ([atp], [image], [env]) when the
 * file is loaded; a [backend.NAME] section is validated against its
 * plugin's option table when that backend is opened.  Every message names
 * the file and the line.
 */
#define _GNU_SOURCE
#include "config.h"

#include <errno.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

static const atp_option atp_keys[] = {
    {"backend", ATP_OPT_STRING, "local", NULL,
     "backend instance to use: local, or NAME of a [backend.NAME]"},
    {"timeout_s", ATP_OPT_DURATION, "0", NULL,
     "per-command budget; 0 for none"},
    {"kill_grace_s", ATP_OPT_DURATION, "10", NULL,
     "time between SIGTERM and SIGKILL when the budget runs out"},
    {"drain_grace_s", ATP_OPT_DURATION, "2", NULL,
     "after a command exits, how long descendants may hold its output"},
    {"exec_margin_s", ATP_OPT_DURATION, "30", NULL,
     "host backstop beyond budget and grace for a remote command"},
    {"provision_timeout_s", ATP_OPT_DURATION, "600", NULL,
     "deadline to create a sandbox (image pulls included)"},
    {"close_timeout_s", ATP_OPT_DURATION, "60", NULL,
     "deadline to tear a sandbox down"},
    {"ttl_s", ATP_OPT_DURATION, "3600", NULL,
     "provider-side lifetime of a session's sandbox when no budget bounds it"},
    {"max_line", ATP_OPT_SIZE, "1MiB", NULL,
     "longer output lines arrive in pieces"},
    {"stdout_limit", ATP_OPT_SIZE, "0", NULL,
     "stdout bytes delivered per command, 0 for no limit"},
    {"stderr_limit", ATP_OPT_SIZE, "0", NULL,
     "stderr bytes delivered per command, 0 for no limit"},
    {"spill_dir", ATP_OPT_STRING, NULL, NULL,
     "write each command's full output to files here"},
    {"plugin_path", ATP_OPT_STRING, NULL, NULL,
     "extra plugin directories, ':'-separated"},
    {"state_dir", ATP_OPT_STRING, NULL, NULL,
     "where the leak ledger lives (default ~/.local/state/atp)"},
    {"transfer_exclude", ATP_OPT_STRING, ".lake", NULL,
     "patterns never transferred, space-separated (name, or path with /)"},
    {"transfer_compression", ATP_OPT_CHOICE, "none", "none|gzip|zstd",
     "compression of workdir tar streams"},
    {"transfer_max_entries", ATP_OPT_INT, "500000", NULL,
     "an archive with more entries is refused"},
    {"transfer_max_bytes", ATP_OPT_SIZE, "64GiB", NULL,
     "an archive with more content is refused"},
    {"transfer_timeout_s", ATP_OPT_DURATION, "600", NULL,
     "deadline of each workdir push, pull or listing"},
    {"subreaper", ATP_OPT_BOOL, "true", NULL,
     "make this process a child subreaper so that host commands' escaped "
     "descendants can be killed"},
    {NULL, 0, NULL, NULL, NULL},
};

static const atp_option image_keys[] = {
    {"name", ATP_OPT_STRING, NULL, NULL, "image to run sandboxes from"},
    {"workdir", ATP_OPT_STRING, "/workspace/wd", NULL,
     "where the workdir lives inside an isolated sandbox"},
    {"warm_cache", ATP_OPT_STRING, NULL, NULL,
     "cache baked into the image, linked as .lake in the workdir"},
    {"lean_toolchain", ATP_OPT_STRING, NULL, NULL,
     "Lean toolchain the image carries"},
    {"mathlib_rev", ATP_OPT_STRING, NULL, NULL,
     "Mathlib revision the image carries"},
    {"require_pinned", ATP_OPT_BOOL, "false", NULL,
     "refuse an image the backend cannot resolve to an immutable id, and "
     "a name that is a floating tag"},
    {NULL, 0, NULL, NULL, NULL},
};

/* What a sandbox costs, for cost_usd in results. */
static const atp_option price_keys[] = {
    {"cpu_core_s", ATP_OPT_NUMBER, NULL, NULL,
     "US dollars per second of one CPU core the command used"},
    {"mem_gib_s", ATP_OPT_NUMBER, NULL, NULL,
     "US dollars per second of one GiB of peak memory, over the command"},
    {"sandbox_s", ATP_OPT_NUMBER, NULL, NULL,
     "US dollars per second a sandbox lives"},
    {NULL, 0, NULL, NULL, NULL},
};

/* Keys the core owns in every [backend.NAME] section. */
static const atp_option backend_core_keys[] = {
    {"plugin", ATP_OPT_STRING, NULL, NULL,
     "plugin implementing this backend (default: NAME)"},
    {"path", ATP_OPT_STRING, NULL, NULL, "plugin file to load"},
    {"warmup", ATP_OPT_STRING, NULL, NULL,
     "command run in each new sandbox after the workdir is in place"},
    {"warmup_timeout_s", ATP_OPT_DURATION, "300", NULL,
     "budget of the warm-up command"},
    {"max_concurrent", ATP_OPT_INT, "0", NULL,
     "sandboxes of this backend at once in a batch; 0 for no limit of "
     "its own"},
    {"create_rate", ATP_OPT_NUMBER, "0", NULL,
     "sandbox creations per second in a batch; 0 for no limit"},
    {"pool", ATP_OPT_INT, "0", NULL,
     "warm sandboxes kept ready for a batch; 0 for none"},
    {"pool_max_uses", ATP_OPT_INT, "100", NULL,
     "attempts a warm sandbox serves before it is replaced"},
    {"pool_max_age_s", ATP_OPT_DURATION, "3600", NULL,
     "age after which a warm sandbox is replaced"},
    {NULL, 0, NULL, NULL, NULL},
};

struct parse_state {
    atp_config *cfg;
    const char *name;     /* file name for messages */
    const char *text;
    size_t pos, size;
    int line;             /* line last handed to inih */
    int leading_space;    /* that line started with blank space */
    int err_line;
    char err[768];
    const char *last_sec; /* previous key, to join continuations */
    const char *last_key;
    int ini_has_key;      /* inih would take an indented line as more */
    char *long_value;     /* the value of a line too long for inih */
    /* Keys seen, hashed: (section index + 1, key index); sec 0 is free. */
    struct key_slot {
        size_t sec, kv;
    } *slot;
    size_t n_slot, n_keys;
};

static void fail_at(struct parse_state *st, int line, const char *fmt, ...)
    ATP_PRINTF(3, 4);

static void fail_at(struct parse_state *st, int line, const char *fmt, ...)
{
    va_list ap;

    if (st->err_line)
        return; /* keep the first error */
    st->err_line = line;
    va_start(ap, fmt);
    vsnprintf(st->err, sizeof(st->err), fmt, ap);
    va_end(ap);
}

static const char *const section_kinds[] = {"atp", "image", "env", "price",
                                            "backend.NAME"};

static int section_name_ok(const char *name)
{
    const char *p;

    if (strcmp(name, "atp") == 0 || strcmp(name, "image") == 0 ||
        strcmp(name, "env") == 0 || strcmp(name, "price") == 0)
        return 1;
    if (strncmp(name, "backend.", 8) != 0 || name[8] == '\0')
        return 0;
    for (p = name + 8; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
            return 0;
    return 1;
}

static struct atp__section *add_section(atp_config *cfg, const char *name,
                                        int line)
{
    struct atp__section *sec = atp__config_section(cfg, name), *grown;

    if (sec)
        return sec;
    grown = realloc(cfg->sec, (cfg->n_sec + 1) * sizeof(*grown));
    if (grown == NULL)
        return NULL;
    cfg->sec = grown;
    sec = &cfg->sec[cfg->n_sec];
    memset(sec, 0, sizeof(*sec));
    sec->name = strdup(name);
    if (sec->name == NULL)
        return NULL;
    sec->line = line;
    cfg->n_sec++;
    return sec;
}

/* Section headers are recorded here, so that empty ones exist too. */
static void note_section_line(struct parse_state *st, const char *line,
                              size_t len)
{
    const char *close;
    char name[128];
    size_t n;

    while (len && (*line == ' ' || *line == '\t')) {
        line++;
        len--;
    }
    if (len == 0 || *line != '[')
        return;
    close = memchr(line, ']', len);
    if (close == NULL)
        return; /* inih reports the syntax error */
    n = (size_t)(close - line - 1);
    if (n >= sizeof(name)) {
        fail_at(st, st->line, "section name too long");
        return;
    }
    memcpy(name, line + 1, n);
    name[n] = '\0';
    if (!section_name_ok(name)) {
        const char *near = atp__nearest(name, section_kinds, 4);

        if (near == NULL && strncmp(name, "backend", 7) == 0)
            near = "backend.NAME";
        if (near)
            fail_at(st, st->line, "unknown section [%s]; did you mean [%s]?",
                    name, near);
        else
            fail_at(st, st->line, "unknown section [%s]; valid sections are "
                    "[atp], [image], [env] and [backend.NAME]", name);
        return;
    }
    if (add_section(st->cfg, name, st->line) == NULL)
        fail_at(st, st->line, "out of memory");
}

static int is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' ||
           c == '\f';
}

/*
 * inih's end of a field in [@s, @e): the first of @chars, or a ';' that
 * follows a blank (an inline comment).
 */
static const char *field_end(const char *s, const char *e, const char *chars)
{
    int was_space = 0;

    for (; s < e; s++) {
        if ((chars && *s && strchr(chars, *s)) || (was_space && *s == ';'))
            break;
        was_space = is_blank(*s);
    }
    return s;
}

/* Keep [@s, @e) without its blanks at both ends as st->long_value. */
static int keep_value(struct parse_state *st, const char *s, const char *e)
{
    while (s < e && is_blank(*s))
        s++;
    while (e > s && is_blank(e[-1]))
        e--;
    free(st->long_value);
    st->long_value = strndup(s, (size_t)(e - s));
    return st->long_value ? 0 : -1;
}

/*
 * inih reads a line into a buffer of @num bytes, fixed when inih is built
 * (INI_MAX_LINE: 200 in Debian's build).  A longer line (@len bytes at
 * @line, without its newline) reaches inih as a short one of the same
 * kind, written into @str: a key line as "KEY=-", a continuation as " -",
 * a comment as ";".  The value, cut out by inih's own rules (after the
 * first '=' or ':', up to an inline "; comment", blanks trimmed), waits
 * in st->long_value for the handler.  Returns @str, or NULL when out of
 * memory or the key is too long (reported).
 */
static char *shorten(struct parse_state *st, const char *line, size_t len,
                     char *str, int num)
{
    const char *s = line, *e = line + len, *sep;
    size_t n;

    if (st->line == 1 && len >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0)
        s += 3;
    while (s < e && is_blank(*s))
        s++;
    if (s == e || *s == ';' || *s == '#') {
        snprintf(str, (size_t)num, ";\n"); /* a comment stays one */
        return str;
    }
    if (st->ini_has_key && s > line) {
        sep = field_end(s, e, NULL);
        if (keep_value(st, s, sep) != 0)
            return NULL;
        snprintf(str, (size_t)num, " -\n");
        return str;
    }
    if (*s == '[') {
        sep = field_end(s + 1, e, "]");
        n = (size_t)(sep - s) + 1;
        if (sep == e || n + 2 > (size_t)num)
            n = 1; /* no ']' near: inih reports the syntax error */
        snprintf(str, (size_t)num, "%.*s\n", (int)n, s);
        return str;
    }
    sep = field_end(s, e, "=:");
    if (sep == e || (*sep != '=' && *sep != ':')) {
        snprintf(str, (size_t)num, "-\n"); /* no '=': a syntax error */
        return str;
    }
    n = (size_t)(sep - s);
    if (n + 4 > (size_t)num) {
        fail_at(st, st->line, "key of %zu characters is too long", n);
        return NULL;
    }
    if (keep_value(st, sep + 1, field_end(sep + 1, e, NULL)) != 0)
        return NULL;
    snprintf(str, (size_t)num, "%.*s=-\n", (int)n, s);
    return str;
}

/* What inih will make of @line: does it start or continue a key? */
static void track_kind(struct parse_state *st, const char *line, size_t len)
{
    const char *s = line, *e = line + len, *sep;

    while (s < e && is_blank(*s))
        s++;
    if (s == e || *s == ';' || *s == '#' || (st->ini_has_key && s > line))
        return;
    if (*s == '[') {
        if (*field_end(s + 1, e, "]") == ']')
            st->ini_has_key = 0;
        return;
    }
    sep = field_end(s, e, "=:");
    if (sep < e && (*sep == '=' || *sep == ':'))
        st->ini_has_key = 1;
}

/* An fgets() over the text that counts lines for the handler. */
static char *reader(char *str, int num, void *stream)
{
    struct parse_state *st = stream;
    const char *start, *nl;
    size_t len;
    char *ret = str;

    free(st->long_value);
    st->long_value = NULL;
    if (st->pos >= st->size)
        return NULL;
    start = st->text + st->pos;
    nl = memchr(start, '\n', st->size - st->pos);
    len = nl ? (size_t)(nl - start) + 1 : st->size - st->pos;
    st->pos += len;
    st->line++;
    st->leading_space = len > 0 && (start[0] == ' ' || start[0] == '\t');
    if (memchr(start, '\0', len))
        fail_at(st, st->line, "NUL byte in the file");
    if (len > (size_t)num - 1) {
        ret = shorten(st, start, nl ? len - 1 : len, str, num);
        if (ret == NULL) {
            fail_at(st, st->line, "out of memory");
            snprintf(str, (size_t)num, ";\n");
            ret = str;
        }
    } else {
        memcpy(str, start, len);
        str[len] = '\0';
    }
    track_kind(st, start, nl ? len - 1 : len);
    note_section_line(st, start, nl ? len - 1 : len);
    return ret;
}

static size_t key_hash(size_t sec, const char *key)
{
    uint64_t h = 14695981039346656037u ^ sec; /* FNV-1a */

    while (*key)
        h = (h ^ (unsigned char)*key++) * 1099511628211u;
    return (size_t)(h ^ (h >> 32));
}

/* The key @key of section number @sec seen so far, or NULL. */
static struct atp__kv *find_key(const struct parse_state *st, size_t sec,
                                const char *key)
{
    size_t i, mask = st->n_slot - 1;
    struct atp__section *s = &st->cfg->sec[sec];

    if (st->n_slot == 0)
        return NULL;
    for (i = key_hash(sec, key) & mask; st->slot[i].sec; i = (i + 1) & mask)
        if (st->slot[i].sec == sec + 1 &&
            strcmp(s->kv[st->slot[i].kv].key, key) == 0)
            return &s->kv[st->slot[i].kv];
    return NULL;
}

/* Remember key number @kv of section number @sec; 0 or ATP_E_NOMEM. */
static int index_key(struct parse_state *st, size_t sec, size_t kv)
{
    size_t i, mask;

    if ((st->n_keys + 1) * 2 > st->n_slot) {
        size_t n = st->n_slot ? st->n_slot * 2 : 64, j;
        struct key_slot *grown = calloc(n, sizeof(*grown));

        if (grown == NULL)
            return ATP_E_NOMEM;
        for (j = 0; j < st->n_slot; j++) {
            const struct key_slot *o = &st->slot[j];

            if (o->sec == 0)
                continue;
            for (i = key_hash(o->sec - 1, st->cfg->sec[o->sec - 1]
                                              .kv[o->kv].key) & (n - 1);
                 grown[i].sec; i = (i + 1) & (n - 1))
                ;
            grown[i] = *o;
        }
        free(st->slot);
        st->slot = grown;
        st->n_slot = n;
    }
    mask = st->n_slot - 1;
    for (i = key_hash(sec, st->cfg->sec[sec].kv[kv].key) & mask;
         st->slot[i].sec; i = (i + 1) & mask)
        ;
    st->slot[i].sec = sec + 1;
    st->slot[i].kv = kv;
    st->n_keys++;
    return 0;
}

static int append_kv(struct atp__section *sec, const char *key,
                     const char *value, int line)
{
    struct atp__kv *grown = sec->kv;

    if (sec->n_kv == sec->cap_kv) {
        size_t cap = sec->cap_kv ? sec->cap_kv * 2 : 8;

        grown = realloc(sec->kv, cap * sizeof(*grown));
        if (grown == NULL)
            return ATP_E_NOMEM;
        sec->cap_kv = cap;
    }
    sec->kv = grown;
    grown[sec->n_kv].key = strdup(key);
    grown[sec->n_kv].value = strdup(value);
    grown[sec->n_kv].line = line;
    if (!grown[sec->n_kv].key || !grown[sec->n_kv].value) {
        free(grown[sec->n_kv].key);
        free(grown[sec->n_kv].value);
        return ATP_E_NOMEM;
    }
    sec->n_kv++;
    return 0;
}

static int handler(void *user, const char *section, const char *name,
                   const char *value)
{
    struct parse_state *st = user;
    struct atp__section *sec;
    struct atp__kv *kv;

    if (st->long_value)
        value = st->long_value; /* the line inih could not hold */
    if (*section == '\0') {
        fail_at(st, st->line, "key '%s' is outside any section; put it "
                "under [atp], [image], [env] or [backend.NAME]", name);
        return 0;
    }
    sec = atp__config_section(st->cfg, section);
    if (sec == NULL)
        return 0; /* unknown section, already reported */
    kv = find_key(st, (size_t)(sec - st->cfg->sec), name);
    if (kv && st->leading_space && st->last_sec &&
        strcmp(st->last_sec, section) == 0 && st->last_key &&
        strcmp(st->last_key, name) == 0) {
        /* An indented continuation line of a multi-line value. */
        size_t a = strlen(kv->value), b = strlen(value);
        char *joined = realloc(kv->value, a + b + 2);

        if (joined == NULL)
            return 0;
        joined[a] = '\n';
        memcpy(joined + a + 1, value, b + 1);
        kv->value = joined;
        return 1;
    }
    if (kv) {
        fail_at(st, st->line, "key '%s' in [%s] is already set on line %d",
                name, section, kv->line);
        return 0;
    }
    if (append_kv(sec, name, value, st->line) != 0 ||
        index_key(st, (size_t)(sec - st->cfg->sec), sec->n_kv - 1) != 0) {
        fail_at(st, st->line, "out of memory");
        return 0;
    }
    kv = &sec->kv[sec->n_kv - 1];
    st->last_sec = sec->name;
    st->last_key = kv->key;
    return 1;
}

struct atp__section *atp__config_section(const atp_config *cfg,
                                         const char *name)
{
    size_t i;

    for (i = 0; i < cfg->n_sec; i++)
        if (strcmp(cfg->sec[i].name, name) == 0)
            return &cfg->sec[i];
    return NULL;
}

const struct atp__kv *atp__section_get(const struct atp__section *sec,
                                       const char *key)
{
    size_t i;

    if (sec == NULL)
        return NULL;
    for (i = 0; i < sec->n_kv; i++)
        if (strcmp(sec->kv[i].key, key) == 0)
            return &sec->kv[i];
    return NULL;
}

const char *atp__config_name(const atp_config *cfg)
{
    return cfg->path ? cfg->path : "(built-in defaults)";
}

const atp_option *atp__config_keys(const char *section)
{
    if (strcmp(section, "atp") == 0)
        return atp_keys;
    if (strcmp(section, "image") == 0)
        return image_keys;
    if (strcmp(section, "backend") == 0)
        return backend_core_keys;
    return NULL;
}

char *atp__config_resolve(const atp_config *cfg, const char *path)
{
    const char *slash;
    size_t dirlen;
    char *out;

    if (path[0] == '/' || cfg->path == NULL ||
        (slash = strrchr(cfg->path, '/')) == NULL)
        return strdup(path);
    dirlen = (size_t)(slash - cfg->path);
    out = malloc(dirlen + strlen(path) + 2);
    if (out)
        snprintf(out, dirlen + strlen(path) + 2, "%.*s/%s", (int)dirlen,
                 cfg->path, path);
    return out;
}

/*
 * Report key @kv of @sec as unknown, suggesting the nearest of @opts
 * (and of @more).
 */
static int unknown_key(const atp_config *cfg, const struct atp__section *sec,
                       const struct atp__kv *kv, const atp_option *opts,
                       const atp_option *more)
{
    const char *cands[128];
    size_t n = 0, i;
    const char *near;
    char list[512] = "";
    size_t used = 0;

    for (i = 0; opts && opts[i].name && n < ATP__ARRAY_SIZE(cands); i++)
        cands[n++] = opts[i].name;
    for (i = 0; more && more[i].name && n < ATP__ARRAY_SIZE(cands); i++)
        cands[n++] = more[i].name;
    near = atp__nearest(kv->key, cands, n);
    if (near)
        return atp__error(ATP_E_CONFIG, "%s:%d: unknown key '%s' in [%s]; "
                          "did you mean '%s'?", atp__config_name(cfg),
                          kv->line, kv->key, sec->name, near);
    for (i = 0; i < n && used + 1 < sizeof(list); i++) {
        int w = snprintf(list + used, sizeof(list) - used, "%s%s",
                         i ? ", " : "", cands[i]);
        if (w < 0)
            break;
        used += (size_t)w;
    }
    return atp__error(ATP_E_CONFIG, "%s:%d: unknown key '%s' in [%s]; "
                      "valid keys: %s", atp__config_name(cfg), kv->line,
                      kv->key, sec->name, n ? list : "(none)");
}

static const atp_option *find_opt(const atp_option *opts, const char *key)
{
    size_t i;

    for (i = 0; opts && opts[i].name; i++)
        if (strcmp(opts[i].name, key) == 0)
            return &opts[i];
    return NULL;
}

/* Check every key of @sec against @opts (and @more). */
static int check_section(const atp_config *cfg, const struct atp__section *sec,
                         const atp_option *opts, const atp_option *more)
{
    size_t i;

    for (i = 0; i < sec->n_kv; i++) {
        const struct atp__kv *kv = &sec->kv[i];
        const atp_option *o = find_opt(opts, kv->key);
        char why[256];

        if (o == NULL)
            o = find_opt(more, kv->key);
        if (o == NULL)
            return unknown_key(cfg, sec, kv, opts, more);
        if (atp__check_value(o->type, o->choices, kv->value, why,
                             sizeof(why)) != 0)
            return atp__error(ATP_E_CONFIG, "%s:%d: bad value '%s' for %s "
                              "in [%s]: %s", atp__config_name(cfg), kv->line,
                              kv->value, kv->key, sec->name, why);
    }
    return 0;
}

int atp__config_check_backend(const atp_config *cfg,
                              const struct atp__section *sec,
                              const atp_option *opts)
{
    size_t i;

    if (sec == NULL)
        return 0;
    for (i = 0; i < sec->n_kv; i++) {
        const struct atp__kv *kv = &sec->kv[i];

        if (strncmp(kv->key, "env.", 4) == 0) {
            if (!atp__env_name_ok(kv->key + 4, strlen(kv->key + 4)))
                return atp__error(ATP_E_CONFIG, "%s:%d: '%s' is not a valid "
                                  "environment variable name",
                                  atp__config_name(cfg), kv->line,
                                  kv->key + 4);
            continue;
        }
        if (find_opt(backend_core_keys, kv->key)) {
            const atp_option *o = find_opt(backend_core_keys, kv->key);
            char why[256];

            if (atp__check_value(o->type, o->choices, kv->value, why,
                                 sizeof(why)) != 0)
                return atp__error(ATP_E_CONFIG, "%s:%d: bad value '%s' for "
                                  "%s in [%s]: %s", atp__config_name(cfg),
                                  kv->line, kv->value, kv->key, sec->name,
                                  why);
            continue;
        }
        {
            struct atp__section one = *sec;
            int rc;

            one.kv = (struct atp__kv *)kv;
            one.n_kv = 1;
            rc = check_section(cfg, &one, opts, backend_core_keys);
            if (rc)
                return rc;
        }
    }
    return 0;
}

static const char *opt_value(const atp_config *cfg, const char *section,
                             const atp_option *opts, const char *key)
{
    const struct atp__kv *kv =
        atp__section_get(atp__config_section(cfg, section), key);
    const atp_option *o = find_opt(opts, key);

    if (kv)
        return kv->value;
    return o ? o->defval : NULL;
}

static int64_t opt_duration(const atp_config *cfg, const char *key)
{
    int64_t v = 0;

    atp__parse_duration_ms(opt_value(cfg, "atp", atp_keys, key), &v);
    return v;
}

static int64_t opt_size(const atp_config *cfg, const char *key)
{
    int64_t v = 0;

    atp__parse_size(opt_value(cfg, "atp", atp_keys, key), &v);
    return v;
}

static const char *nonempty(const char *s)
{
    return s && *s ? s : NULL;
}

/* Split @s at blanks into a NULL-terminated array. */
static int split_words(const char *s, char ***out)
{
    size_t n = 0;
    char **v = calloc(strlen(s ? s : "") / 2 + 2, sizeof(*v));

    if (v == NULL)
        return ATP_E_NOMEM;
    while (s && *s) {
        size_t len;

        while (*s == ' ' || *s == '\t' || *s == '\n')
            s++;
        len = strcspn(s, " \t\n");
        if (len == 0)
            break;
        v[n] = strndup(s, len);
        if (v[n] == NULL) {
            while (n > 0)
                free(v[--n]);
            free(v);
            return ATP_E_NOMEM;
        }
        n++;
        s += len;
    }
    *out = v;
    return 0;
}

/* Validate the core's sections and fill cfg->set. */
static int finish(atp_config *cfg)
{
    struct atp__settings *set = &cfg->set;
    struct atp__section *sec;
    size_t i;
    int rc;

    if ((sec = atp__config_section(cfg, "atp")) != NULL &&
        (rc = check_section(cfg, sec, atp_keys, NULL)) != 0)
        return rc;
    if ((sec = atp__config_section(cfg, "image")) != NULL &&
        (rc = check_section(cfg, sec, image_keys, NULL)) != 0)
        return rc;
    if ((sec = atp__config_section(cfg, "price")) != NULL &&
        (rc = check_section(cfg, sec, price_keys, NULL)) != 0)
        return rc;
    if ((sec = atp__config_section(cfg, "env")) != NULL) {
        for (i = 0; i < sec->n_kv; i++)
            if (!atp__env_name_ok(sec->kv[i].key, strlen(sec->kv[i].key)))
                return atp__error(ATP_E_CONFIG, "%s:%d: '%s' in [env] is not "
                                  "a valid environment variable name",
                                  atp__config_name(cfg), sec->kv[i].line,
                                  sec->kv[i].key);
    }

    set->backend = opt_value(cfg, "atp", atp_keys, "backend");
    if (set->backend == NULL || *set->backend == '\0')
        set->backend = "local";
    set->timeout_ms = opt_duration(cfg, "timeout_s");
    set->grace_ms = opt_duration(cfg, "kill_grace_s");
    set->drain_ms = opt_duration(cfg, "drain_grace_s");
    set->exec_margin_ms = opt_duration(cfg, "exec_margin_s");
    set->provision_timeout_ms = opt_duration(cfg, "provision_timeout_s");
    set->close_timeout_ms = opt_duration(cfg, "close_timeout_s");
    set->ttl_ms = opt_duration(cfg, "ttl_s");
    set->max_line = opt_size(cfg, "max_line");
    set->stdout_limit = opt_size(cfg, "stdout_limit");
    set->stderr_limit = opt_size(cfg, "stderr_limit");
    set->spill_dir = nonempty(opt_value(cfg, "atp", atp_keys, "spill_dir"));
    set->plugin_path = nonempty(opt_value(cfg, "atp", atp_keys,
                                          "plugin_path"));
    set->state_dir = nonempty(opt_value(cfg, "atp", atp_keys, "state_dir"));
    set->image = nonempty(opt_value(cfg, "image", image_keys, "name"));
    set->sandbox_workdir = opt_value(cfg, "image", image_keys, "workdir");
    set->warm_cache = nonempty(opt_value(cfg, "image", image_keys,
                                         "warm_cache"));
    set->transfer_timeout_ms = opt_duration(cfg, "transfer_timeout_s");
    atp__parse_bool(opt_value(cfg, "image", image_keys, "require_pinned"),
                    &set->require_pinned);
    {
        static const char *const price[3] = {"cpu_core_s", "mem_gib_s",
                                              "sandbox_s"};
        const char *v;

        for (i = 0; i < 3; i++) {
            set->price[i] = -1;
            if ((v = opt_value(cfg, "price", price_keys, price[i])) != NULL)
                atp__parse_number(v, &set->price[i]);
        }
    }
    atp__parse_bool(opt_value(cfg, "atp", atp_keys, "subreaper"),
                    &set->subreaper);
    set->transfer_max_bytes = opt_size(cfg, "transfer_max_bytes");
    atp__parse_int(opt_value(cfg, "atp", atp_keys, "transfer_max_entries"),
                   &set->transfer_max_entries);
    {
        const char *c = opt_value(cfg, "atp", atp_keys,
                                  "transfer_compression");

        set->compression = strcmp(c, "gzip") == 0   ? 1
                           : strcmp(c, "zstd") == 0 ? 2
                                                    : 0;
    }
    if (split_words(opt_value(cfg, "atp", atp_keys, "transfer_exclude"),
                    &cfg->excludes) != 0)
        return atp__error(ATP_E_NOMEM, "out of memory");
    set->excludes = (const char *const *)cfg->excludes;
    if (set->transfer_max_entries < 1)
        return atp__error(ATP_E_CONFIG, "%s: transfer_max_entries must be "
                          "at least 1", atp__config_name(cfg));
    if (set->max_line < 64)
        return atp__error(ATP_E_CONFIG, "%s: max_line must be at least 64 "
                          "bytes", atp__config_name(cfg));
    if (set->sandbox_workdir == NULL || set->sandbox_workdir[0] != '/')
        return atp__error(ATP_E_CONFIG, "%s: [image] workdir must be an "
                          "absolute path", atp__config_name(cfg));
    return 0;
}

static int parse_text(atp_config *cfg, const char *text, size_t size)
{
    struct parse_state st;
    int rc;

    memset(&st, 0, sizeof(st));
    st.cfg = cfg;
    st.name = atp__config_name(cfg);
    st.text = text;
    st.size = size;
    rc = ini_parse_stream(reader, &st, handler, &st);
    free(st.long_value);
    free(st.slot);
    /* Report whichever error comes first in the file. */
    if (st.err_line && !(rc > 0 && rc < st.err_line))
        return atp__error(ATP_E_CONFIG, "%s:%d: %s", st.name, st.err_line,
                          st.err);
    if (rc > 0)
        return atp__error(ATP_E_CONFIG, "%s:%d: syntax error: expected "
                          "'[section]', 'key = value' or a comment",
                          st.name, rc);
    if (rc < 0)
        return atp__error(ATP_E_NOMEM, "%s: out of memory while parsing",
                          st.name);
    return finish(cfg);
}

ATP_EXTERN void atp_config_free(atp_config *cfg)
{
    size_t i, j;

    if (cfg == NULL)
        return;
    for (i = 0; i < cfg->n_sec; i++) {
        for (j = 0; j < cfg->sec[i].n_kv; j++) {
            free(cfg->sec[i].kv[j].key);
            free(cfg->sec[i].kv[j].value);
        }
        free(cfg->sec[i].kv);
        free(cfg->sec[i].name);
    }
    free(cfg->sec);
    for (i = 0; cfg->excludes && cfg->excludes[i]; i++)
        free(cfg->excludes[i]);
    free(cfg->excludes);
    free(cfg->path);
    free(cfg->search_path);
    free(cfg);
}

ATP_EXTERN int atp_config_load_string(atp_config **out, const char *text,
                                      const char *name)
{
    atp_config *cfg = calloc(1, sizeof(*cfg));
    int rc;

    *out = NULL;
    if (cfg == NULL)
        return atp__error(ATP_E_NOMEM, "out of memory");
    if (name && (cfg->path = strdup(name)) == NULL) {
        free(cfg);
        return atp__error(ATP_E_NOMEM, "out of memory");
    }
    rc = parse_text(cfg, text ? text : "", text ? strlen(text) : 0);
    if (rc) {
        atp_config_free(cfg);
        return rc;
    }
    *out = cfg;
    return 0;
}

/* Read a whole (small) file; ATP_E_NOTFOUND when it does not exist. */
static int slurp(const char *path, char **text, size_t *size)
{
    FILE *f = fopen(path, "rb");
    atp__buf b;
    struct stat st;
    int rc = 0;

    if (f == NULL)
        return errno == ENOENT ? ATP_E_NOTFOUND
                               : atp__error(ATP_E_CONFIG, "cannot read %s: %s",
                                            path, strerror(errno));
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(f);
        return atp__error(ATP_E_CONFIG, "%s is a directory, not a "
                          "configuration file", path);
    }
    atp__buf_init(&b, (1u << 20) + 4096);
    for (;;) {
        size_t got;

        rc = atp__buf_reserve(&b, 4096);
        if (rc == ATP__BUF_FULL) {
            rc = atp__error(ATP_E_CONFIG, "%s is larger than 1 MiB; "
                            "is it really a configuration file?", path);
            goto out;
        }
        if (rc) {
            rc = atp__error(ATP_E_NOMEM, "out of memory");
            goto out;
        }
        got = fread(b.p + b.len, 1, 4096, f);
        b.len += got;
        if (got < 4096)
            break;
    }
    if (ferror(f))
        rc = atp__error(ATP_E_CONFIG, "cannot read %s", path);
out:
    fclose(f);
    if (rc) {
        atp__buf_release(&b);
        return rc;
    }
    b.p[b.len] = '\0';
    *size = b.len;
    *text = b.p;
    return 0;
}

static int load_file(atp_config **out, const char *path)
{
    char *text = NULL;
    size_t size = 0;
    atp_config *cfg;
    int rc = slurp(path, &text, &size);

    if (rc)
        return rc;
    cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL || (cfg->path = strdup(path)) == NULL) {
        free(cfg);
        free(text);
        return atp__error(ATP_E_NOMEM, "out of memory");
    }
    rc = parse_text(cfg, text, size);
    free(text);
    if (rc) {
        atp_config_free(cfg);
        return rc;
    }
    *out = cfg;
    return 0;
}

ATP_EXTERN int atp_config_load(atp_config **out, const char *path)
{
    const char *env;
    char buf[4096];
    int rc;

    *out = NULL;
    if (path) {
        rc = load_file(out, path);
        if (rc == ATP_E_NOTFOUND)
            return atp__error(ATP_E_CONFIG, "configuration file %s does not "
                              "exist", path);
        return rc;
    }
    /* The environment is the invoking user's: a set-id program does not
     * take it (secure_getenv), and reads /etc/atp/atp.ini unless a
     * configuration file is given or is in the current directory. */
    env = secure_getenv("ATP_CONFIG");
    if (env && *env) {
        rc = load_file(out, env);
        if (rc == ATP_E_NOTFOUND)
            return atp__error(ATP_E_CONFIG, "ATP_CONFIG names %s, which does "
                              "not exist", env);
        return rc;
    }
    rc = load_file(out, "atp.ini");
    if (rc != ATP_E_NOTFOUND)
        return rc;
    env = secure_getenv("XDG_CONFIG_HOME");
    if (env && *env)
        snprintf(buf, sizeof(buf), "%s/atp/atp.ini", env);
    else if ((env = secure_getenv("HOME")) != NULL && *env)
        snprintf(buf, sizeof(buf), "%s/.config/atp/atp.ini", env);
    else
        buf[0] = '\0';
    if (buf[0]) {
        rc = load_file(out, buf);
        if (rc != ATP_E_NOTFOUND)
            return rc;
    }
    rc = load_file(out, "/etc/atp/atp.ini");
    if (rc != ATP_E_NOTFOUND)
        return rc;
    return atp_config_load_string(out, "", NULL);
}

ATP_EXTERN const char *atp_config_path(const atp_config *cfg)
{
    return cfg->path;
}

ATP_EXTERN const char *atp_config_backend(const atp_config *cfg)
{
    return cfg->set.backend;
}

ATP_EXTERN const char *atp_config_get(const atp_config *cfg,
                                      const char *section, const char *key)
{
    const struct atp__kv *kv =
        atp__section_get(atp__config_section(cfg, section), key);

    return kv ? kv->value : NULL;
}
