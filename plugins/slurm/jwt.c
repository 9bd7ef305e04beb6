/*
 * plugins/slurm/jwt.c - the token slurmrestd's rest_auth/jwt wants: read
 * from a file (jwt_file) or the environment (SLURM_JWT, as `scontrol
 * token` prints it), never from a command line.  Its claims are decoded,
 * without checking the signature, for two things only: the user name the
 * X-SLURM-USER-NAME header must carry ("sun"), and the expiry ("exp"),
 * because an expired token makes slurmrestd 22.05 answer 500 "Zero Bytes
 * were transmitted or received", which tells a user nothing.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sl.h"

#define TOKEN_MAX 16384

/* Value of a base64url digit, or -1. */
static int b64url(int c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-' || c == '+')
        return 62;
    if (c == '_' || c == '/')
        return 63;
    return -1;
}

/* Decode @len base64url characters (no padding needed); malloc'ed. */
static char *b64url_decode(const char *s, size_t len, size_t *outlen)
{
    char *out = malloc(len * 3 / 4 + 4);
    unsigned acc = 0;
    size_t n = 0, i;
    int bits = 0;

    if (out == NULL)
        return NULL;
    for (i = 0; i < len; i++) {
        int v = b64url((unsigned char)s[i]);

        if (s[i] == '=')
            break;
        if (v < 0) {
            free(out);
            return NULL;
        }
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (char)((acc >> bits) & 0xff);
        }
    }
    out[n] = '\0';
    *outlen = n;
    return out;
}

int sl_token_claims(const char *token, char **user, long long *exp)
{
    const char *dot1 = strchr(token, '.'), *dot2;
    json_tokener *tok;
    json_object *claims = NULL, *v;
    size_t len;
    char *json;

    *user = NULL;
    *exp = 0;
    if (dot1 == NULL || (dot2 = strchr(dot1 + 1, '.')) == NULL)
        return -1;
    json = b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), &len);
    if (json == NULL)
        return -1;
    tok = json_tokener_new();
    if (tok) {
        claims = json_tokener_parse_ex(tok, json, (int)len);
        json_tokener_free(tok);
    }
    free(json);
    if (claims == NULL || !json_object_is_type(claims, json_type_object)) {
        json_object_put(claims);
        return -1;
    }
    if (json_object_object_get_ex(claims, "exp", &v))
        *exp = json_object_get_int64(v);
    if (json_object_object_get_ex(claims, "sun", &v) &&
        json_object_is_type(v, json_type_string))
        *user = strdup(json_object_get_string(v));
    json_object_put(claims);
    return 0;
}

/* Trim @s in place: spaces, newlines, and a leading "SLURM_JWT=". */
static char *trim_token(char *s)
{
    char *end;

    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
        s++;
    if (strncmp(s, "SLURM_JWT=", 10) == 0)
        s += 10;
    end = s + strlen(s);
    while (end > s && (end[-1] == ' ' || end[-1] == '\t' ||
                       end[-1] == '\n' || end[-1] == '\r'))
        *--end = '\0';
    return s;
}

/* Read the token file @path (a secret: it must not be readable by others). */
static int read_file(atp_call *call, const char *path, char **out)
{
    char buf[TOKEN_MAX + 1];
    struct stat st;
    ssize_t n;
    size_t got = 0;
    int fd;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return sl_host->set_error(call, ATP_E_CREDENTIALS, "cannot read the "
                                  "Slurm token file %s (jwt_file): %s; "
                                  "write one with `scontrol token "
                                  "lifespan=SECONDS > %s`", path,
                                  strerror(errno), path);
    if (fstat(fd, &st) == 0 && (st.st_mode & 0077))
        sl_host->log(call, ATP_LOG_WARN, "the Slurm token file %s can be "
                     "read by others (mode %03o): chmod 600 it", path,
                     (unsigned)(st.st_mode & 0777));
    while (got < TOKEN_MAX &&
           (n = read(fd, buf + got, TOKEN_MAX - got)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    buf[got] = '\0';
    *out = strdup(trim_token(buf));
    return *out ? 0 : sl_host->set_error(call, ATP_E_NOMEM, "out of memory");
}

void sl_token_free(struct sl_token *t)
{
    free(t->value);
    free(t->source);
    free(t->user);
    memset(t, 0, sizeof(*t));
}

int sl_token_load(atp_call *call, const char *file, struct sl_token *t)
{
    char *value = NULL;
    int rc;

    sl_token_free(t);
    if (file) {
        if ((rc = read_file(call, file, &value)) != 0)
            return rc;
    } else {
        const char *env = getenv("SLURM_JWT");
        char *trimmed;

        if (env == NULL || *env == '\0')
            return sl_host->set_error(call, ATP_E_CREDENTIALS, "slurmrestd "
                                      "over http needs a token: set "
                                      "SLURM_JWT (eval $(scontrol token)) "
                                      "or [backend] jwt_file");
        if ((value = strdup(env)) == NULL)
            return sl_host->set_error(call, ATP_E_NOMEM, "out of memory");
        trimmed = trim_token(value); /* within the copy, never longer */
        memmove(value, trimmed, strlen(trimmed) + 1);
    }
    if (value[0] == '\0') {
        free(value);
        return sl_host->set_error(call, ATP_E_CREDENTIALS, "the Slurm token "
                                  "in %s is empty", file ? file : "SLURM_JWT");
    }
    t->value = value;
    t->source = strdup(file ? file : "SLURM_JWT");
    sl_host->add_secret(call, value);
    if (sl_token_claims(value, &t->user, &t->exp) != 0)
        sl_host->log(call, ATP_LOG_DEBUG, "the Slurm token is not a JWT: "
                     "its expiry cannot be checked here");
    return t->source ? 0 : sl_host->set_error(call, ATP_E_NOMEM,
                                              "out of memory");
}

int sl_token_check(atp_call *call, struct sl_token *t, const char *file)
{
    long long now = (long long)time(NULL);
    char when[64] = "";
    struct tm tm;
    time_t exp;

    if (t->value == NULL || t->exp == 0 || t->exp > now)
        return 0;
    if (file) {
        /* Renewed in place, as a cron job or a wrapper would? */
        struct sl_token fresh = {0};

        if (sl_token_load(call, file, &fresh) == 0 &&
            (fresh.exp == 0 || fresh.exp > now)) {
            sl_token_free(t);
            *t = fresh;
            return 0;
        }
        sl_token_free(&fresh);
    }
    exp = (time_t)t->exp;
    if (gmtime_r(&exp, &tm))
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    return sl_host->set_error(call, ATP_E_CREDENTIALS, "the Slurm token from "
                              "%s expired at %s (%lld s ago): get a new one "
                              "with `scontrol token lifespan=SECONDS`%s",
                              t->source ? t->source : "SLURM_JWT", when,
                              now - t->exp,
                              file ? " into that file" : " and set SLURM_JWT");
}
