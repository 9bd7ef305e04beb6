/*
 * core/log.c - diagnostics, handed to the embedder.
 *
 * libatp writes nothing to stderr: every diagnostic line goes to the log
 * callback set on the configuration (atp_config_set_log()), and nowhere
 * when there is none.  $ATP_LOG (read with secure_getenv) sets the level
 * shown, over the level the embedder chose.
 */
#define _GNU_SOURCE
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static int env_level(void)
{
    const char *e = secure_getenv("ATP_LOG");

    if (e == NULL || *e == '\0')
        return -1;
    if (strcmp(e, "debug") == 0)
        return ATP_LOG_DEBUG;
    if (strcmp(e, "info") == 0)
        return ATP_LOG_INFO;
    if (strcmp(e, "error") == 0)
        return ATP_LOG_ERROR;
    return ATP_LOG_WARN;
}

ATP_EXTERN void atp_config_set_log(atp_config *cfg, atp_log_fn fn,
                                   int max_level, void *payload)
{
    if (cfg == NULL)
        return;
    cfg->log_fn = fn;
    cfg->log_payload = payload;
    cfg->log_level = max_level;
}

int atp__log_on(const atp_config *cfg, int level)
{
    int max;

    if (cfg == NULL || cfg->log_fn == NULL)
        return 0;
    max = env_level();
    if (max < 0)
        max = cfg->log_level;
    return level <= max;
}

void atp__vlog(const atp_config *cfg, int level, const char *origin,
               const char *fmt, va_list ap)
{
    char msg[2048];

    if (!atp__log_on(cfg, level))
        return;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    cfg->log_fn(level, origin, msg, cfg->log_payload);
}

void atp__log(const atp_config *cfg, int level, const char *origin,
              const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    atp__vlog(cfg, level, origin, fmt, ap);
    va_end(ap);
}
