/*
 * cli/output.h - how atp-run prints: plain text or JSON Lines.
 */
#ifndef ATP_CLI_OUTPUT_H
#define ATP_CLI_OUTPUT_H

#include <json.h>
#include <signal.h>
#include <stddef.h>

#include <atp/atp.h>
#include <atp/plugin.h>

struct out {
    int json;
    atp_session *session; /* cancelled when stdout breaks */
    int broken;           /* stdout was closed under us */
    int dropped[2];       /* stdout, stderr: given up on their reader */
    volatile sig_atomic_t *stop; /* nonzero once atp-run was interrupted */
    int count;            /* items printed (plugins, gc) */
    int failed;           /* items that failed (gc) */
    int progress_shown;   /* a transfer progress line is on stderr */
    char buf[1 << 16];    /* stdout */
    size_t len;
    char ebuf[1 << 14];   /* stderr (plain mode) */
    size_t elen;
};

void out_init(struct out *o, int json);
void out_flush(struct out *o);
void out_json(struct out *o, json_object *obj);
/* Plain text for stdout, in order with everything else printed. */
void out_text(struct out *o, const char *text);

/* Callbacks for libatp. */
void out_line(int stream, const char *line, size_t len, unsigned flags,
              void *payload);
void out_on_flush(void *payload);
void out_event(const atp_event *ev, void *payload);
void out_plugin(const atp_plugin_info *info, void *payload);
void out_gc(const atp_gc_item *item, void *payload);
void out_check(struct out *o, atp_config *cfg, atp_backend *be,
               const atp_result *r);

/*
 * The result object of `--json` and of `atp-run batch`: how it ended and
 * what it cost (measurements unknown are null); @cfg, when given, adds
 * what [image] says the image carries.
 */
json_object *out_result_object(const atp_result *r, const char *backend,
                               const char *run_id, atp_config *cfg);

/*
 * A JSON string for @len bytes of @s: invalid UTF-8 becomes U+FFFD, so
 * that every line printed is valid JSON text.
 */
json_object *out_string(const char *s, size_t len);

#endif
