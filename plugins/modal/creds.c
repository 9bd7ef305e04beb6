/*
 * plugins/modal/creds.c - Modal credentials from the environment and the
 * profile file.
 *
 * ~/.modal.toml (or $MODAL_CONFIG_PATH) holds one table per profile:
 *
 *     [work]
 *     token_id = "ak-..."
 *     token_secret = "as-..."
 *     active = true
 *
 * It is read with inih, which knows INI, not TOML, so only the subset the
 * modal CLI writes is accepted: [name] or ["name"] tables, and keys whose
 * values are "basic strings" without escapes, 'literal strings',
 * booleans or integers, each optionally followed by a # comment.
 * Anything else is an error naming the file and the line, never a guess.
 */
#define _GNU_SOURCE
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "creds.h"
#include "modal.h"
#include "util.h"

#define MAX_PROFILES 64

struct profile {
    char name[128];
    char token_id[256];
    char token_secret[256];
    char server_url[1024];
    char environment[128];
    int active;
};

struct toml {
    struct profile p[MAX_PROFILES];
    size_t n;
    FILE *f;
    int line;          /* of the line last read */
    int err_line;      /* first error */
    char err[256];
};

/* The inih reader: one line at a time, leading blanks dropped, so that an
 * indented TOML key is never taken for an INI continuation line. */
static char *read_line(char *buf, int len, void *stream)
{
    struct toml *t = stream;
    char *p;
    size_t skip;

    if (fgets(buf, len, t->f) == NULL)
        return NULL;
    t->line++;
    for (p = buf; *p == ' ' || *p == '\t'; p++)
        ;
    skip = (size_t)(p - buf);
    if (skip)
        memmove(buf, p, strlen(p) + 1);
    return buf;
}

static int toml_error(struct toml *t, const char *fmt, ...)
    ATP_PRINTF(2, 3);

static int toml_error(struct toml *t, const char *fmt, ...)
{
    va_list ap;

    if (t->err_line == 0) {
        t->err_line = t->line;
        va_start(ap, fmt);
        vsnprintf(t->err, sizeof(t->err), fmt, ap);
        va_end(ap);
    }
    return 0; /* tells inih this line is an error */
}

/* Strip matching quotes of a table or key name; 0 when it is plain. */
static int unquote_name(const char *in, char *out, size_t cap)
{
    size_t n = strlen(in);

    if (n >= 2 && (in[0] == '"' || in[0] == '\'') && in[n - 1] == in[0]) {
        if (n - 2 >= cap || memchr(in + 1, '\\', n - 2))
            return -1;
        memcpy(out, in + 1, n - 2);
        out[n - 2] = '\0';
        return 0;
    }
    if (n >= cap || strpbrk(in, ".[]\"' ") != NULL)
        return -1;
    memcpy(out, in, n + 1);
    return 0;
}

/*
 * A value: "text" (no escapes), 'text', true/false (as "1"/"0") or an
 * integer, optionally followed by a # comment.  0 or -1.
 */
static int parse_value(const char *v, char *out, size_t cap)
{
    const char *end;
    size_t n;

    if (v[0] == '"' || v[0] == '\'') {
        if (strncmp(v, "\"\"\"", 3) == 0 || strncmp(v, "'''", 3) == 0)
            return -1; /* multi-line strings */
        end = strchr(v + 1, v[0]);
        if (end == NULL || (v[0] == '"' && memchr(v + 1, '\\',
                                                  (size_t)(end - v - 1))))
            return -1;
        n = (size_t)(end - v - 1);
        if (n >= cap)
            return -1;
        memcpy(out, v + 1, n);
        out[n] = '\0';
        end++;
    } else {
        const char *p = v;

        if (*p == '-' || *p == '+')
            p++;
        if (strncmp(v, "true", 4) == 0 && !isalnum((unsigned char)v[4])) {
            modal__copy(out, cap, "1");
            end = v + 4;
        } else if (strncmp(v, "false", 5) == 0 &&
                   !isalnum((unsigned char)v[5])) {
            modal__copy(out, cap, "0");
            end = v + 5;
        } else if (isdigit((unsigned char)*p)) {
            for (end = p; isdigit((unsigned char)*end) || *end == '_'; end++)
                ;
            n = (size_t)(end - v);
            if (n >= cap)
                return -1;
            memcpy(out, v, n);
            out[n] = '\0';
        } else {
            return -1;
        }
    }
    while (*end == ' ' || *end == '\t')
        end++;
    return *end == '\0' || *end == '#' ? 0 : -1;
}

static int on_entry(void *user, const char *section, const char *name,
                    const char *value)
{
    struct toml *t = user;
    struct profile *p = NULL;
    char sec[128], key[64], val[1024];
    size_t i;

    if (section[0] == '\0')
        return toml_error(t, "key '%s' is outside a [profile] table", name);
    if (unquote_name(section, sec, sizeof(sec)) != 0)
        return toml_error(t, "table [%s] is not a simple profile name "
                          "(nested or array tables are not supported)",
                          section);
    if (unquote_name(name, key, sizeof(key)) != 0)
        return toml_error(t, "key '%s' is not a simple name", name);
    if (parse_value(value, val, sizeof(val)) != 0)
        return toml_error(t, "the value of '%s' is not a simple string, "
                          "boolean or integer (only `key = \"value\"` "
                          "entries are supported)", key);
    for (i = 0; i < t->n && p == NULL; i++)
        if (strcmp(t->p[i].name, sec) == 0)
            p = &t->p[i];
    if (p == NULL) {
        if (t->n == MAX_PROFILES)
            return toml_error(t, "more than %d profiles", MAX_PROFILES);
        p = &t->p[t->n++];
        modal__copy(p->name, sizeof(p->name), sec);
    }
    if (strcmp(key, "token_id") == 0)
        modal__copy(p->token_id, sizeof(p->token_id), val);
    else if (strcmp(key, "token_secret") == 0)
        modal__copy(p->token_secret, sizeof(p->token_secret), val);
    else if (strcmp(key, "server_url") == 0)
        modal__copy(p->server_url, sizeof(p->server_url), val);
    else if (strcmp(key, "environment") == 0)
        modal__copy(p->environment, sizeof(p->environment), val);
    else if (strcmp(key, "active") == 0)
        p->active = strcmp(val, "1") == 0;
    return 1; /* other keys (loglevel, image_builder_version...) unused */
}

static const char *env(const char *name)
{
    const char *v = secure_getenv(name);

    return v && *v ? v : NULL;
}

/* The profile file's path: $MODAL_CONFIG_PATH or ~/.modal.toml. */
static int config_path(char *out, size_t cap)
{
    const char *p = env("MODAL_CONFIG_PATH"), *home = env("HOME");

    if (p) {
        modal__copy(out, cap, p);
        return 0;
    }
    if (home == NULL) {
        struct passwd pw, *res = NULL;
        char buf[4096];

        if (getpwuid_r(getuid(), &pw, buf, sizeof(buf), &res) != 0 ||
            res == NULL)
            return -1;
        snprintf(out, cap, "%s/.modal.toml", pw.pw_dir);
        return 0;
    }
    snprintf(out, cap, "%s/.modal.toml", home);
    return 0;
}

static int read_file(atp_call *call, const char *path, struct toml *t)
{
    int line;

    t->f = fopen(path, "re");
    if (t->f == NULL) {
        if (errno == ENOENT)
            return 1; /* no file: no profiles */
        return modal__error(call, ATP_E_CONFIG, "cannot read the "
                            "modal profile file %s: %s", path,
                            strerror(errno));
    }
    line = ini_parse_stream(read_line, t, on_entry, t);
    fclose(t->f);
    t->f = NULL;
    if (line < 0)
        return modal__error(call, ATP_E_CONFIG, "cannot read the "
                            "modal profile file %s", path);
    if (t->err_line)
        return modal__error(call, ATP_E_CONFIG, "%s line %d: %s",
                            path, t->err_line, t->err);
    if (line > 0)
        return modal__error(call, ATP_E_CONFIG, "%s line %d: not "
                            "a `key = \"value\"` line or a "
                            "[profile] header (only simple TOML "
                            "is supported)", path, line);
    return 0;
}

/* Pick the profile; NULL for none.  Sets an error and *rc on failure. */
static const struct profile *choose(atp_call *call, const struct toml *t,
                                    const char *path, const char *named,
                                    int *rc)
{
    const struct profile *active = NULL;
    size_t i;

    *rc = 0;
    if (named) {
        for (i = 0; i < t->n; i++)
            if (strcmp(t->p[i].name, named) == 0)
                return &t->p[i];
        *rc = modal__error(call, ATP_E_CREDENTIALS, "modal "
                           "profile '%s' is not in %s: create it "
                           "with `modal token set --profile %s` "
                           "or choose another profile", named,
                           path, named);
        return NULL;
    }
    for (i = 0; i < t->n; i++) {
        if (!t->p[i].active)
            continue;
        if (active) {
            *rc = modal__error(call, ATP_E_CONFIG, "%s marks "
                               "more than one profile active "
                               "('%s' and '%s'): keep one "
                               "`active = true`", path,
                               active->name, t->p[i].name);
            return NULL;
        }
        active = &t->p[i];
    }
    if (active)
        return active;
    for (i = 0; i < t->n; i++)
        if (strcmp(t->p[i].name, "default") == 0)
            return &t->p[i];
    return NULL;
}

static int throttle_bound(atp_call *call, int64_t *out)
{
    const char *v = env("MODAL_MAX_THROTTLE_WAIT");
    long long n = 0;
    const char *p;

    *out = -1;
    if (v == NULL)
        return 0;
    for (p = v; *p >= '0' && *p <= '9' && n < 100000000; p++)
        n = n * 10 + (*p - '0');
    if (p == v || *p != '\0')
        return modal__error(call, ATP_E_CONFIG, "MODAL_MAX_"
                            "THROTTLE_WAIT must be a whole number "
                            "of seconds, not '%s'", v);
    *out = (int64_t)n * 1000;
    return 0;
}

/* Pick the first value that is set. */
static const char *first(const char *a, const char *b, const char *c)
{
    if (a && *a)
        return a;
    if (b && *b)
        return b;
    return c && *c ? c : NULL;
}

/* No token, or half of one: say what is missing and where we looked. */
static int missing_tokens(atp_call *call, const modal__creds *c,
                          const char *path, const struct profile *p)
{
    const char *which = "no modal credentials";
    char where[700];

    if (c->token_id[0] && !c->token_secret[0])
        which = "no modal token secret (the token id is set)";
    else if (!c->token_id[0] && c->token_secret[0])
        which = "no modal token id (the token secret is set)";
    if (c->file[0] == '\0')
        snprintf(where, sizeof(where), "%s does not exist", path);
    else if (p)
        snprintf(where, sizeof(where), "%s, profile %s, has none", path,
                 p->name);
    else
        snprintf(where, sizeof(where), "%s has no active profile: mark one "
                 "`active = true` or set MODAL_PROFILE", path);
    return modal__error(call, ATP_E_CREDENTIALS, "%s: set MODAL_TOKEN_ID "
                        "and MODAL_TOKEN_SECRET, or run `modal token new` "
                        "to write a profile (%s)", which, where);
}

int modal__creds_load(atp_call *call, const modal__creds_opts *o,
                      modal__creds *out)
{
    struct toml *t = calloc(1, sizeof(*t));
    const struct profile *p;
    const char *named = first(o->profile, env("MODAL_PROFILE"), NULL);
    const char *url;
    char path[512];
    int rc;

    memset(out, 0, sizeof(*out));
    if (t == NULL)
        return modal__error(call, ATP_E_NOMEM, "out of memory");
    if ((rc = throttle_bound(call, &out->max_throttle_ms)) != 0)
        goto done;
    if (config_path(path, sizeof(path)) == 0) {
        rc = read_file(call, path, t);
        if (rc < 0)
            goto done;
        if (rc == 0)
            modal__copy(out->file, sizeof(out->file), path);
    } else {
        modal__copy(path, sizeof(path), "~/.modal.toml");
    }
    p = choose(call, t, path, named, &rc);
    if (rc)
        goto done;
    if (p)
        modal__copy(out->profile, sizeof(out->profile), p->name);
    modal__copy(out->token_id, sizeof(out->token_id),
                first(env("MODAL_TOKEN_ID"), p ? p->token_id : NULL, NULL));
    modal__copy(out->token_secret, sizeof(out->token_secret),
                first(env("MODAL_TOKEN_SECRET"),
                      p ? p->token_secret : NULL, NULL));
    modal__copy(out->environment, sizeof(out->environment),
                first(o->environment, env("MODAL_ENVIRONMENT"),
                      p ? p->environment : NULL));
    url = first(o->server_url, env("MODAL_SERVER_URL"),
                p ? p->server_url : NULL);
    if (url == NULL)
        url = MODAL_DEFAULT_SERVER;
    /* "URL,URL,...": the fallbacks are kept, and tried in turn. */
    if (strlen(url) >= sizeof(out->server_url)) {
        rc = modal__error(call, ATP_E_CONFIG, "the modal server url is "
                          "longer than %zu bytes",
                          sizeof(out->server_url) - 1);
        goto done;
    }
    modal__copy(out->server_url, sizeof(out->server_url), url);
    if (out->token_id[0] == '\0' || out->token_secret[0] == '\0') {
        rc = missing_tokens(call, out, path, p);
        goto done;
    }
    rc = 0;
done:
    free(t);
    return rc;
}
