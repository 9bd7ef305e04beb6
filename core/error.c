/*
 * core/error.c - error codes, status classes and the per-thread message.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "internal.h"

static _Thread_local char last_error[1024];

int atp__verror(int code, const char *fmt, va_list ap)
{
    vsnprintf(last_error, sizeof(last_error), fmt, ap);
    return code;
}

int atp__error(int code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    atp__verror(code, fmt, ap);
    va_end(ap);
    return code;
}

void atp__error_set_text(const char *msg)
{
    snprintf(last_error, sizeof(last_error), "%s", msg ? msg : "");
}

ATP_EXTERN const char *atp_last_error(void)
{
    return last_error;
}

int64_t atp__now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

ATP_EXTERN const char *atp_strerror(int code)
{
    switch (code) {
    case ATP_OK:
        return "success";
#define XX(name, value, msg, status)                                        \
    case ATP_E_##name:                                                       \
        return msg;
        ATP_ERRNO_MAP(XX)
#undef XX
    default:
        return "unknown error";
    }
}

ATP_EXTERN const char *atp_err_name(int code)
{
    switch (code) {
    case ATP_OK:
        return "ATP_OK";
#define XX(name, value, msg, status)                                        \
    case ATP_E_##name:                                                       \
        return "ATP_E_" #name;
        ATP_ERRNO_MAP(XX)
#undef XX
    default:
        return "ATP_E_?";
    }
}

ATP_EXTERN const char *atp_status_name(atp_status status)
{
    switch (status) {
#define XX(name, value, text, exit)                                         \
    case ATP_STATUS_##name:                                                  \
        return text;
        ATP_STATUS_MAP(XX)
#undef XX
    default:
        return "unknown";
    }
}

ATP_EXTERN int atp_status_exit_code(atp_status status)
{
    switch (status) {
#define XX(name, value, text, exit)                                         \
    case ATP_STATUS_##name:                                                  \
        return exit;
        ATP_STATUS_MAP(XX)
#undef XX
    default:
        return 125;
    }
}

ATP_EXTERN atp_status atp_status_from_error(int code)
{
    switch (code) {
    case ATP_OK:
        return ATP_STATUS_OK;
#define XX(name, value, msg, status)                                        \
    case ATP_E_##name:                                                       \
        return ATP_STATUS_##status;
        ATP_ERRNO_MAP(XX)
#undef XX
    default:
        return ATP_STATUS_INFRA_ERROR;
    }
}

void atp__result_fail(atp_result *res, int code, const char *msg)
{
    if (res == NULL)
        return;
    res->status = atp_status_from_error(code);
    snprintf(res->message, sizeof(res->message), "%s",
             msg && *msg ? msg : atp_strerror(code));
}

ATP_EXTERN const char *atp_version(void)
{
    return PACKAGE_VERSION;
}
