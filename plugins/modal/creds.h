/*
 * plugins/modal/creds.h - where the Modal plugin's credentials and server
 * come from: MODAL_* environment variables and ~/.modal.toml profiles
 * (modal-protocol.md §1.5).
 */
#ifndef MODAL_CREDS_H
#define MODAL_CREDS_H

#include <stdint.h>

#include <atp/plugin.h>

/* The Python SDK's default (py/modal/config.py): a primary and a
 * fallback, tried in turn. */
#define MODAL_DEFAULT_SERVER "https://api.modal.com,https://api.modal2.com"

typedef struct modal__creds {
    char token_id[256];
    char token_secret[256];
    char server_url[1024];    /* one URL, or several separated by ',' */
    char environment[128];
    char profile[128];        /* the profile used, or "" */
    char file[512];           /* the profile file read, or "" */
    int64_t max_throttle_ms;  /* MODAL_MAX_THROTTLE_WAIT; -1: no bound */
} modal__creds;

/* Values from the backend's configuration section, which win. */
typedef struct modal__creds_opts {
    const char *server_url;  /* or NULL */
    const char *environment; /* or NULL */
    const char *profile;     /* or NULL */
} modal__creds_opts;

/*
 * Resolve the credentials: for each value the option, else the MODAL_*
 * variable, else the chosen profile of the profile file, else the
 * default.  The profile is the option's, else MODAL_PROFILE, else the one
 * marked `active = true`, else "default".  No network.  Returns 0;
 * ATP_E_CREDENTIALS when no token is found or a named profile is missing;
 * ATP_E_CONFIG when the file is not the simple TOML it should be.  The
 * message (set_error) names the file and line and never a token.
 */
int modal__creds_load(atp_call *call, const modal__creds_opts *o,
                      modal__creds *out);

#endif /* MODAL_CREDS_H */
