/*
 * cli/output.c - atp-run's printing: command output passes through a
 * buffer flushed whenever the backend has nothing more pending, so output
 * is live without a write per line.  JSON is produced by json-c.
 */
#include "config.h"

#include <errno.h>
#include <stddef.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "output.h"

void out_init(struct out *o, int json)
{
    /* Everything but the buffers: touching 80 KiB of them at start costs
     * page faults on every run. */
    memset(o, 0, offsetof(struct out, buf));
    o->len = o->elen = 0;
    o->json = json;
}

/*
 * Once atp-run is interrupted, how long a reader that does not take our
 * output may hold up the teardown (per write).
 */
#define STALL_MS_AFTER_STOP 2000

/* Wait until @fd takes more output; 0 when it did not in @ms (-1: ever). */
static int wait_writable(int fd, int ms)
{
    struct pollfd pfd;

    pfd.fd = fd;
    pfd.events = POLLOUT;
    pfd.revents = 0;
    return poll(&pfd, 1, ms) > 0;
}

/*
 * Write it all, to a non-blocking descriptor too.  A reader that went
 * away breaks stdout, which stops the command.  After a signal a reader
 * that does not keep up is not waited for: the rest is dropped.
 */
static void write_all(struct out *o, int fd, const char *p, size_t len)
{
    int i = fd == STDERR_FILENO;

    while (len > 0 && !o->dropped[i] && !(i == 0 && o->broken)) {
        int stopping = o->stop && *o->stop;
        size_t n = len;
        ssize_t w;

        if (stopping) {
            /* At most PIPE_BUF once writable, so the write cannot block. */
            if (!wait_writable(fd, STALL_MS_AFTER_STOP)) {
                o->dropped[i] = 1;
                return;
            }
            if (n > PIPE_BUF)
                n = PIPE_BUF;
        }
        w = write(fd, p, n);
        if (w > 0) {
            p += w;
            len -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue; /* the signal is seen at the top */
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            /* A non-blocking descriptor: wait, as a blocking one would. */
            if (!stopping)
                wait_writable(fd, -1);
            continue;
        }
        if (i == 0) {
            /* Nobody reads us any more: stop the command. */
            o->broken = 1;
            if (o->session)
                atp_session_cancel(o->session);
        } else {
            o->dropped[i] = 1;
        }
        return;
    }
}

void out_flush(struct out *o)
{
    if (o->len) {
        write_all(o, STDOUT_FILENO, o->buf, o->len);
        o->len = 0;
    }
    if (o->elen) {
        write_all(o, STDERR_FILENO, o->ebuf, o->elen);
        o->elen = 0;
    }
}

static void put(struct out *o, int err, const char *p, size_t len)
{
    char *buf = err ? o->ebuf : o->buf;
    size_t cap = err ? sizeof(o->ebuf) : sizeof(o->buf);
    size_t *used = err ? &o->elen : &o->len;

    if (*used + len > cap) {
        out_flush(o);
        if (len > cap) {
            write_all(o, err ? STDERR_FILENO : STDOUT_FILENO, p, len);
            return;
        }
    }
    memcpy(buf + *used, p, len);
    *used += len;
}

void out_text(struct out *o, const char *text)
{
    put(o, 0, text, strlen(text));
}

void out_json(struct out *o, json_object *obj)
{
    size_t len;
    const char *text = json_object_to_json_string_length(
        obj, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);

    put(o, 0, text, len);
    put(o, 0, "\n", 1);
}

/* Length of the valid UTF-8 sequence at @s (1..4), or 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t len)
{
    size_t n, i;
    unsigned cp;

    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        n = 2;
        cp = s[0] & 0x1f;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        n = 3;
        cp = s[0] & 0x0f;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        n = 4;
        cp = s[0] & 0x07;
    } else {
        return 0;
    }
    if (len < n)
        return 0;
    for (i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return n;
}

json_object *out_string(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, n, o = 0;
    json_object *obj;
    char *fixed;

    while (i < len && (n = utf8_seq(p + i, len - i)) != 0)
        i += n;
    if (i == len)
        return json_object_new_string_len(s, (int)len);
    fixed = malloc(len * 3 + 1);
    if (fixed == NULL)
        return json_object_new_string_len(s, (int)i);
    for (i = 0; i < len;) {
        n = utf8_seq(p + i, len - i);
        if (n == 0) {
            memcpy(fixed + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        } else {
            memcpy(fixed + o, s + i, n);
            o += n;
            i += n;
        }
    }
    obj = json_object_new_string_len(fixed, (int)o);
    free(fixed);
    return obj;
}

void out_line(int stream, const char *line, size_t len, unsigned flags,
              void *payload)
{
    struct out *o = payload;

    if (o->json) {
        json_object *obj = json_object_new_object();

        json_object_object_add(obj, "type",
                               json_object_new_string(stream == ATP_STDERR
                                                          ? "stderr"
                                                          : "stdout"));
        json_object_object_add(obj, "line", out_string(line, len));
        if (flags & ATP_LINE_PARTIAL)
            json_object_object_add(obj, "partial",
                                   json_object_new_boolean(1));
        if (flags & ATP_LINE_NO_EOL)
            json_object_object_add(obj, "eol", json_object_new_boolean(0));
        out_json(o, obj);
        json_object_put(obj);
        return;
    }
    put(o, stream == ATP_STDERR, line, len);
    if (!(flags & (ATP_LINE_PARTIAL | ATP_LINE_NO_EOL)))
        put(o, stream == ATP_STDERR, "\n", 1);
}

void out_on_flush(void *payload)
{
    out_flush(payload);
}

/* A field of an event, or NULL. */
static const atp_field *field(const atp_event *ev, const char *key)
{
    size_t i;

    for (i = 0; i < ev->n_fields; i++)
        if (ev->fields[i].key && strcmp(ev->fields[i].key, key) == 0)
            return &ev->fields[i];
    return NULL;
}

/*
 * Plain mode on a terminal: a long transfer shows one progress line on
 * stderr, redrawn in place and erased when the transfer ends.
 */
static void draw_progress(struct out *o, const atp_event *ev)
{
    const atp_field *dir = field(ev, "direction");
    const atp_field *bytes = field(ev, "bytes");
    const atp_field *secs = field(ev, "seconds");
    char line[160];
    double mib, rate;
    int n;

    if (strcmp(ev->type, "transfer_progress") != 0) {
        if (o->progress_shown && (strcmp(ev->type, "pushed") == 0 ||
                                  strcmp(ev->type, "pulled") == 0 ||
                                  strcmp(ev->type, "closed") == 0)) {
            out_flush(o);
            write_all(o, STDERR_FILENO, "\r\033[K", 4);
            o->progress_shown = 0;
        }
        return;
    }
    if (!isatty(STDERR_FILENO) || !dir || !bytes || !secs)
        return;
    mib = (double)bytes->i / 1048576.0;
    rate = secs->d > 0 ? mib / secs->d : 0;
    n = snprintf(line, sizeof(line), "\r\033[Katp-run: %s %.1f MiB, "
                 "%.1f MiB/s, %.0f s", strcmp(dir->s, "pull") == 0
                                          ? "pulling"
                                          : "pushing",
                 mib, rate, secs->d);
    if (n > 0) {
        out_flush(o);
        write_all(o, STDERR_FILENO, line, (size_t)n);
        o->progress_shown = 1;
    }
}

void out_event(const atp_event *ev, void *payload)
{
    struct out *o = payload;
    json_object *obj;
    size_t i;

    if (!o->json) {
        draw_progress(o, ev);
        return;
    }
    obj = json_object_new_object();
    json_object_object_add(obj, "type", json_object_new_string(ev->type));
    for (i = 0; i < ev->n_fields; i++) {
        const atp_field *f = &ev->fields[i];
        json_object *v = NULL;

        switch (f->type) {
        case ATP_FIELD_STR:
            v = f->s ? out_string(f->s, strlen(f->s)) : NULL;
            break;
        case ATP_FIELD_INT:
            v = json_object_new_int64(f->i);
            break;
        case ATP_FIELD_DOUBLE:
            v = json_object_new_double(f->d);
            break;
        case ATP_FIELD_BOOL:
            v = json_object_new_boolean(f->i != 0);
            break;
        default:
            continue;
        }
        if (f->key && strcmp(f->key, "type") != 0)
            json_object_object_add(obj, f->key, v);
        else
            json_object_put(v);
    }
    out_json(o, obj);
    json_object_put(obj);
    out_flush(o);
}

static const char *opt_type_name(int t)
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

static json_object *caps_array(uint64_t caps)
{
    json_object *arr = json_object_new_array();
    int bit;

    for (bit = 0; bit < 64; bit++) {
        const char *name = atp_cap_name(UINT64_C(1) << bit);

        if ((caps & (UINT64_C(1) << bit)) && name)
            json_object_array_add(arr, json_object_new_string(name));
    }
    return arr;
}

static void caps_text(uint64_t caps, char *buf, size_t len)
{
    size_t used = 0;
    int bit;

    buf[0] = '\0';
    for (bit = 0; bit < 64; bit++) {
        const char *name = atp_cap_name(UINT64_C(1) << bit);

        if ((caps & (UINT64_C(1) << bit)) && name && used < len) {
            int w = snprintf(buf + used, len - used, "%s%s",
                             used ? "," : "", name);
            if (w > 0)
                used += (size_t)w;
        }
    }
}

/*
 * The keys of a plugin's [backend.NAME] section, wrapped under the
 * plugin's entry: "options: image, socket, cpus, ...".
 */
static void option_keys(struct out *o, const atp_option *opt)
{
    const char *indent = "           ";
    size_t col;

    put(o, 0, indent, strlen(indent));
    put(o, 0, "options:", 8);
    col = strlen(indent) + 8;
    if (opt == NULL || opt->name == NULL) {
        put(o, 0, " (none)\n", 8);
        return;
    }
    for (; opt->name; opt++) {
        size_t len = strlen(opt->name);
        int last = opt[1].name == NULL;

        if (col + 1 + len + !last > 79) {
            put(o, 0, "\n", 1);
            put(o, 0, indent, strlen(indent));
            put(o, 0, "        ", 8);
            col = strlen(indent) + 8;
        }
        put(o, 0, " ", 1);
        put(o, 0, opt->name, len);
        put(o, 0, last ? "\n" : ",", 1);
        col += 1 + len + !last;
    }
}

void out_plugin(const atp_plugin_info *info, void *payload)
{
    struct out *o = payload;

    o->count++;
    if (o->json) {
        json_object *obj = json_object_new_object(), *opts;
        char abi[32];
        const atp_option *opt;

        json_object_object_add(obj, "name", json_object_new_string(info->name));
        json_object_object_add(obj, "path", json_object_new_string(info->path));
        json_object_object_add(obj, "loaded",
                               json_object_new_boolean(info->loaded));
        json_object_object_add(obj, "version",
                               info->version
                                   ? json_object_new_string(info->version)
                                   : NULL);
        if (info->abi_major || info->loaded) {
            snprintf(abi, sizeof(abi), "%u.%u", info->abi_major,
                     info->abi_minor);
            json_object_object_add(obj, "abi", json_object_new_string(abi));
        } else {
            json_object_object_add(obj, "abi", NULL);
        }
        snprintf(abi, sizeof(abi), "%d.%d", ATP_PLUGIN_ABI_MAJOR,
                 ATP_PLUGIN_ABI_MINOR);
        json_object_object_add(obj, "core_abi", json_object_new_string(abi));
        json_object_object_add(obj, "capabilities", caps_array(info->caps));
        if (info->description)
            json_object_object_add(obj, "description",
                                   json_object_new_string(info->description));
        opts = json_object_new_array();
        for (opt = info->options; opt && opt->name; opt++) {
            json_object *oo = json_object_new_object();

            json_object_object_add(oo, "name", json_object_new_string(opt->name));
            json_object_object_add(oo, "type",
                                   json_object_new_string(opt_type_name(opt->type)));
            json_object_object_add(oo, "default",
                                   opt->defval
                                       ? json_object_new_string(opt->defval)
                                       : NULL);
            if (opt->choices)
                json_object_object_add(oo, "choices",
                                       json_object_new_string(opt->choices));
            if (opt->help)
                json_object_object_add(oo, "help",
                                       json_object_new_string(opt->help));
            json_object_array_add(opts, oo);
        }
        json_object_object_add(obj, "options", opts);
        json_object_object_add(obj, "refusal",
                               info->refusal
                                   ? json_object_new_string(info->refusal)
                                   : NULL);
        json_object_object_add(obj, "shadowed",
                               json_object_new_boolean(info->shadowed));
        if (ATP_HAS_FIELD(info, atp_plugin_info, backend) && info->backend)
            json_object_object_add(obj, "backend",
                                   json_object_new_string(info->backend));
        out_json(o, obj);
        json_object_put(obj);
        return;
    }
    {
        char line[4096], caps[512], via[160] = "";

        if (ATP_HAS_FIELD(info, atp_plugin_info, backend) && info->backend)
            snprintf(via, sizeof(via), "  (the path of [backend.%s])",
                     info->backend);
        if (info->loaded) {
            caps_text(info->caps, caps, sizeof(caps));
            snprintf(line, sizeof(line),
                     "%-10s %-8s ABI %u.%u  %s%s%s\n           %s\n"
                     "           capabilities: %s\n",
                     info->name, info->version, info->abi_major,
                     info->abi_minor, info->path,
                     info->shadowed ? "  (shadowed by an earlier one)" : "",
                     via, info->description ? info->description : "", caps);
        } else {
            snprintf(line, sizeof(line),
                     "%-10s refused  %s%s\n           %s\n", info->name,
                     info->path, via,
                     info->refusal ? info->refusal : "refused");
        }
        put(o, 0, line, strlen(line));
        if (info->loaded)
            option_keys(o, info->options);
    }
}

void out_gc(const atp_gc_item *item, void *payload)
{
    struct out *o = payload;

    o->count++;
    if (!item->removed && item->error)
        o->failed++;
    if (o->json) {
        json_object *obj = json_object_new_object();

        json_object_object_add(obj, "type", json_object_new_string("leak"));
        json_object_object_add(obj, "backend",
                               item->backend
                                   ? json_object_new_string(item->backend)
                                   : NULL);
        json_object_object_add(obj, "kind",
                               item->kind ? json_object_new_string(item->kind)
                                          : NULL);
        json_object_object_add(obj, "id",
                               item->id ? json_object_new_string(item->id)
                                        : NULL);
        json_object_object_add(obj, "run_id",
                               item->run_id
                                   ? json_object_new_string(item->run_id)
                                   : NULL);
        json_object_object_add(obj, "owner_pid",
                               json_object_new_int64(item->owner_pid));
        json_object_object_add(obj, "removed",
                               json_object_new_boolean(item->removed));
        if (item->error)
            json_object_object_add(obj, "error",
                                   json_object_new_string(item->error));
        out_json(o, obj);
        json_object_put(obj);
        return;
    }
    {
        char line[2048];

        snprintf(line, sizeof(line), "%s %s %s (run %s, owner pid %ld): %s\n",
                 item->backend ? item->backend : "?",
                 item->kind ? item->kind : "resource",
                 item->id ? item->id : "?", item->run_id ? item->run_id : "?",
                 item->owner_pid,
                 item->removed ? "removed"
                 : item->error ? item->error
                               : "leaked (dry run)");
        put(o, 0, line, strlen(line));
    }
}

void out_check(struct out *o, atp_config *cfg, atp_backend *be,
               const atp_result *r)
{
    const char *cpath = atp_config_path(cfg);

    if (o->json) {
        json_object *obj = json_object_new_object();
        char caps[512];

        caps_text(atp_backend_caps(be), caps, sizeof(caps));
        json_object_object_add(obj, "type", json_object_new_string("check"));
        json_object_object_add(obj, "config",
                               cpath ? json_object_new_string(cpath) : NULL);
        json_object_object_add(obj, "backend",
                               json_object_new_string(atp_backend_name(be)));
        json_object_object_add(obj, "plugin",
                               json_object_new_string(atp_backend_plugin(be)));
        json_object_object_add(obj, "version",
                               json_object_new_string(
                                   atp_backend_plugin_version(be)));
        json_object_object_add(obj, "path",
                               json_object_new_string(
                                   atp_backend_plugin_path(be)));
        json_object_object_add(obj, "capabilities",
                               caps_array(atp_backend_caps(be)));
        json_object_object_add(obj, "status",
                               json_object_new_string(atp_status_name(r->status)));
        json_object_object_add(obj, "duration_s",
                               json_object_new_double(r->duration_s));
        if (r->message[0])
            json_object_object_add(obj, "message",
                                   json_object_new_string(r->message));
        out_json(o, obj);
        json_object_put(obj);
        return;
    }
    {
        char line[4096];

        snprintf(line, sizeof(line),
                 "config:  %s: ok\nplugin:  %s %s from %s: loaded\n"
                 "backend: %s: %s%s%s\n",
                 cpath ? cpath : "(built-in defaults)", atp_backend_plugin(be),
                 atp_backend_plugin_version(be), atp_backend_plugin_path(be),
                 atp_backend_name(be),
                 r->status == ATP_STATUS_OK ? "usable"
                                            : atp_status_name(r->status),
                 r->message[0] ? ": " : "", r->message);
        put(o, 0, line, strlen(line));
    }
}

static void add_measure(json_object *o, const char *key, double v)
{
    json_object_object_add(o, key, v >= 0 ? json_object_new_double(v)
                                          : NULL);
}

json_object *out_result_object(const atp_result *r, const char *backend,
                               const char *run_id, atp_config *cfg)
{
    json_object *o = json_object_new_object();
    const char *tc = cfg ? atp_config_get(cfg, "image", "lean_toolchain")
                         : NULL;
    const char *mr = cfg ? atp_config_get(cfg, "image", "mathlib_rev")
                         : NULL;

    json_object_object_add(o, "type", json_object_new_string("result"));
    json_object_object_add(o, "exit_code",
                           r->exit_code >= 0
                               ? json_object_new_int(r->exit_code)
                               : NULL);
    json_object_object_add(o, "signal", r->signal > 0
                                            ? json_object_new_int(r->signal)
                                            : NULL);
    json_object_object_add(o, "status",
                           json_object_new_string(atp_status_name(r->status)));
    json_object_object_add(o, "duration_s",
                           json_object_new_double(r->duration_s));
    json_object_object_add(o, "backend",
                           backend ? json_object_new_string(backend) : NULL);
    json_object_object_add(o, "stdout_truncated",
                           json_object_new_boolean(r->stdout_truncated));
    json_object_object_add(o, "stderr_truncated",
                           json_object_new_boolean(r->stderr_truncated));
    json_object_object_add(o, "stdout_bytes",
                           json_object_new_int64((int64_t)r->stdout_bytes));
    json_object_object_add(o, "stderr_bytes",
                           json_object_new_int64((int64_t)r->stderr_bytes));
    if (run_id)
        json_object_object_add(o, "run_id", json_object_new_string(run_id));
    if (r->message[0])
        json_object_object_add(o, "message",
                               json_object_new_string(r->message));
    if (r->struct_size < ATP_RESULT_SIZE_0_2)
        return o;
    /* What it cost. */
    json_object_object_add(o, "provision_s",
                           json_object_new_double(r->provision_s));
    json_object_object_add(o, "push_s", json_object_new_double(r->push_s));
    json_object_object_add(o, "push_bytes",
                           json_object_new_int64((int64_t)r->push_bytes));
    json_object_object_add(o, "exec_s", json_object_new_double(r->exec_s));
    json_object_object_add(o, "pull_s", json_object_new_double(r->pull_s));
    json_object_object_add(o, "pull_bytes",
                           json_object_new_int64((int64_t)r->pull_bytes));
    json_object_object_add(o, "sandbox_s",
                           json_object_new_double(r->sandbox_s));
    add_measure(o, "cpu_s", r->cpu_s);
    json_object_object_add(o, "max_rss_bytes",
                           r->max_rss_bytes >= 0
                               ? json_object_new_int64(r->max_rss_bytes)
                               : NULL);
    add_measure(o, "cost_usd", r->cost_usd);
    json_object_object_add(o, "image_id",
                           r->image_id[0]
                               ? json_object_new_string(r->image_id)
                               : NULL);
    if (r->struct_size >= ATP_RESULT_SIZE_0_3 && r->queue_s > 0)
        json_object_object_add(o, "queue_s",
                               json_object_new_double(r->queue_s));
    if (tc && *tc)
        json_object_object_add(o, "lean_toolchain",
                               json_object_new_string(tc));
    if (mr && *mr)
        json_object_object_add(o, "mathlib_rev", json_object_new_string(mr));
    return o;
}
