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
    case ATP_OK: return "success";
    case ATP_E_INVAL: return "invalid argument";
    case ATP_E_NOMEM: return "out of memory";
    case ATP_E_IO: return "input/output error";
    case ATP_E_TIMEOUT: return "backend operation timed out";
    case ATP_E_CANCELLED: return "cancelled";
    case ATP_E_UNSUPPORTED: return "not supported by the backend";
    case ATP_E_BACKEND: return "backend failure";
    case ATP_E_PROVISION: return "sandbox could not be provisioned";
    case ATP_E_IMAGE: return "image unavailable";
    case ATP_E_CREDENTIALS: return "missing credentials";
    case ATP_E_TRANSFER: return "workdir transfer failed";
    case ATP_E_SANDBOX_DEAD: return "sandbox died";
    case ATP_E_CONFIG: return "configuration error";
    case ATP_E_NOTFOUND: return "not found";
    case ATP_E_ABI: return "plugin ABI mismatch";
    default: return "unknown error";
    }
}

static const char *const status_names[] = {
    "ok", "exit", "timeout", "cancelled", "infra_error", "infra_timeout",
    "sandbox_dead", "transfer_error", "provision_error", "image_unavailable",
    "missing_credentials", "unsupported", "config_error",
};

ATP_EXTERN const char *atp_status_name(atp_status status)
{
    if ((unsigned)status < ATP__ARRAY_SIZE(status_names))
        return status_names[status];
    return "unknown";
}

ATP_EXTERN atp_status atp_status_from_error(int code)
{
    switch (code) {
    case ATP_OK: return ATP_STATUS_OK;
    case ATP_E_TIMEOUT: return ATP_STATUS_INFRA_TIMEOUT;
    case ATP_E_CANCELLED: return ATP_STATUS_CANCELLED;
    case ATP_E_UNSUPPORTED: return ATP_STATUS_UNSUPPORTED;
    case ATP_E_PROVISION: return ATP_STATUS_PROVISION_ERROR;
    case ATP_E_IMAGE: return ATP_STATUS_IMAGE_UNAVAILABLE;
    case ATP_E_CREDENTIALS: return ATP_STATUS_MISSING_CREDENTIALS;
    case ATP_E_TRANSFER: return ATP_STATUS_TRANSFER_ERROR;
    case ATP_E_SANDBOX_DEAD: return ATP_STATUS_SANDBOX_DEAD;
    case ATP_E_CONFIG:
    case ATP_E_INVAL:
    case ATP_E_NOTFOUND:
    case ATP_E_ABI: return ATP_STATUS_CONFIG_ERROR;
    default: return ATP_STATUS_INFRA_ERROR;
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
