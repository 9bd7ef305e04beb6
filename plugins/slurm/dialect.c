/*
 * plugins/slurm/dialect.c - the JSON of slurmrestd's versions.
 *
 * v0.0.38 (Slurm 22.05 and 23.02; tested against Debian 12's 22.05.8):
 * the script at the top of the submit body, "environment" an object,
 * "time_limit" an integer; in replies "job_state" a string and
 * "exit_code" the raw wait status.
 *
 * v0.0.40 and later (Slurm 23.11 onward, from the data_parser plugins;
 * tested against replies made from their OpenAPI schema): the script in
 * "job", "environment" an array of "KEY=VALUE", integer limits the object
 * {"set","infinite","number"}; in replies "job_state" an array of flags
 * (the base state and, say, "COMPLETING") and "exit_code" the object
 * {"status":[...],"return_code":{...},"signal":{"id":{...},"name"}}.
 *
 * The decoders read both shapes whatever the version, so that squeue
 * --json (the v0.0.38 schema on 22.05) and a server between versions
 * parse alike.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sl.h"

/* ---- encoding ----------------------------------------------------------- */

static void add_str(json_object *o, const char *k, const char *v)
{
    if (v)
        json_object_object_add(o, k, json_object_new_string(v));
}

/* A v0.0.40+ integer that may be unset or infinite. */
static json_object *no_val_number(long long v)
{
    json_object *o = json_object_new_object();

    if (o == NULL)
        return NULL;
    json_object_object_add(o, "set", json_object_new_boolean(1));
    json_object_object_add(o, "infinite", json_object_new_boolean(0));
    json_object_object_add(o, "number", json_object_new_int64(v));
    return o;
}

/* The environment: an object (v0.0.38) or an array of "K=V" (v0.0.40+). */
static json_object *environment(int d, const char *const *env)
{
    json_object *o = d == SL_D38 ? json_object_new_object()
                                 : json_object_new_array();
    size_t i;

    for (i = 0; o && env && env[i]; i++) {
        const char *eq = strchr(env[i], '=');

        if (eq == NULL)
            continue;
        if (d == SL_D38) {
            char key[256];
            size_t klen = (size_t)(eq - env[i]);

            if (klen == 0 || klen >= sizeof(key))
                continue;
            memcpy(key, env[i], klen);
            key[klen] = '\0';
            json_object_object_add(o, key, json_object_new_string(eq + 1));
        } else {
            json_object_array_add(o, json_object_new_string(env[i]));
        }
    }
    return o;
}

json_object *sl_submit_body(int d, const struct sl_jobspec *js,
                            const char *partition, const char *account,
                            const char *qos)
{
    json_object *body = json_object_new_object();
    json_object *job = json_object_new_object();
    json_object *env = environment(d, js->env);

    if (body == NULL || job == NULL || env == NULL) {
        json_object_put(body);
        json_object_put(job);
        json_object_put(env);
        return NULL;
    }
    /* The command is in the script: never an "argv" (slurmrestd 22.05.8
     * frees it wrongly and dies after the job was made). */
    if (d == SL_D38)
        add_str(body, "script", js->script);
    else
        add_str(job, "script", js->script); /* top-level one deprecated */
    add_str(job, "name", js->name);
    add_str(job, "comment", js->comment);
    add_str(job, "current_working_directory", js->workdir);
    add_str(job, "standard_output", js->out_path);
    add_str(job, "standard_error", js->err_path);
    add_str(job, "standard_input", js->in_path ? js->in_path : "/dev/null");
    add_str(job, "partition", partition);
    add_str(job, "account", account);
    add_str(job, "qos", qos);
    add_str(job, "array", js->array);
    add_str(job, "dependency", js->dependency);
    /* Mandatory, and whole: nothing is inherited. */
    json_object_object_add(job, "environment", env);
    if (js->time_limit_min > 0)
        json_object_object_add(job, "time_limit",
                               d == SL_D38
                                   ? json_object_new_int64(js->time_limit_min)
                                   : no_val_number(js->time_limit_min));
    /* An attempt must not run twice behind our back. */
    json_object_object_add(job, "requeue", json_object_new_boolean(0));
    json_object_object_add(body, "job", job);
    return body;
}

/* ---- decoding ----------------------------------------------------------- */

static const char *get_str(json_object *o, const char *k)
{
    json_object *v;

    if (!json_object_object_get_ex(o, k, &v) ||
        !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

/*
 * An integer that may come as a number or as {"set","infinite","number"};
 * returns 1 with *@out when it is set.
 */
static int get_number(json_object *v, long long *out)
{
    json_object *set, *num;

    if (v == NULL)
        return 0;
    if (json_object_is_type(v, json_type_int)) {
        *out = json_object_get_int64(v);
        return 1;
    }
    if (json_object_is_type(v, json_type_object) &&
        json_object_object_get_ex(v, "number", &num)) {
        if (json_object_object_get_ex(v, "set", &set) &&
            !json_object_get_boolean(set))
            return 0;
        *out = json_object_get_int64(num);
        return 1;
    }
    return 0;
}

static void copy_text(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

/* A base state among the flags of a v0.0.40+ "job_state". */
static int is_flag_only(const char *s)
{
    static const char *const flags[] = {
        "COMPLETING", "CONFIGURING", "LAUNCH_FAILED", "UPDATE_DB",
        "REQUEUED", "REQUEUE_HOLD", "SPECIAL_EXIT", "RESIZING", "STOPPED",
        "RECONFIG_FAIL", "POWER_UP_NODE", "REVOKED", "REQUEUE_FED",
        "RESV_DEL_HOLD", "SIGNALING", "STAGE_OUT", NULL};
    size_t i;

    for (i = 0; flags[i]; i++)
        if (strcmp(s, flags[i]) == 0)
            return 1;
    return 0;
}

static void read_state(json_object *v, struct sl_jobinfo *ji)
{
    size_t i, n;

    if (v == NULL)
        return;
    if (json_object_is_type(v, json_type_string)) {
        /* v0.0.38: one word; COMPLETING is a state of its own there. */
        const char *s = json_object_get_string(v);

        if (strcmp(s, "COMPLETING") == 0) {
            ji->completing = 1;
            copy_text(ji->state, sizeof(ji->state), "RUNNING");
        } else {
            copy_text(ji->state, sizeof(ji->state), s);
        }
        return;
    }
    if (!json_object_is_type(v, json_type_array))
        return;
    n = json_object_array_length(v);
    for (i = 0; i < n; i++) {
        const char *s = json_object_get_string(json_object_array_get_idx(v,
                                                                         i));

        if (s == NULL)
            continue;
        if (strcmp(s, "COMPLETING") == 0 || strcmp(s, "SIGNALING") == 0)
            ji->completing = 1;
        if (!is_flag_only(s) && ji->state[0] == '\0')
            copy_text(ji->state, sizeof(ji->state), s);
        else if (strcmp(s, "CONFIGURING") == 0 && ji->state[0] == '\0')
            copy_text(ji->state, sizeof(ji->state), "CONFIGURING");
    }
}

/* "exit_code": a raw wait status, or v0.0.40+'s object. */
static void read_exit(json_object *v, struct sl_jobinfo *ji)
{
    json_object *status, *sig, *id;
    long long n;

    if (v == NULL)
        return;
    if (json_object_is_type(v, json_type_int)) {
        sl_decode_status(ji, (long)json_object_get_int64(v));
        return;
    }
    if (!json_object_is_type(v, json_type_object))
        return;
    if (json_object_object_get_ex(v, "status", &status)) {
        const char *word = NULL;

        if (json_object_is_type(status, json_type_array) &&
            json_object_array_length(status) > 0)
            word = json_object_get_string(json_object_array_get_idx(status,
                                                                    0));
        else if (json_object_is_type(status, json_type_string))
            word = json_object_get_string(status);
        if (word && (strcmp(word, "SIGNALED") == 0 ||
                     strcmp(word, "CORE_DUMPED") == 0)) {
            if (json_object_object_get_ex(v, "signal", &sig) &&
                json_object_object_get_ex(sig, "id", &id) &&
                get_number(id, &n) && n > 0) {
                ji->has_exit = 1;
                ji->exit_code = -1;
                ji->signal = (int)n;
            }
            return;
        }
        if (word && (strcmp(word, "PENDING") == 0 ||
                     strcmp(word, "INVALID") == 0))
            return;
    }
    if (json_object_object_get_ex(v, "return_code", &id) &&
        get_number(id, &n)) {
        ji->has_exit = 1;
        ji->exit_code = (int)(n & 0xff);
        ji->signal = 0;
    }
}

void sl_job_from_json(json_object *job, struct sl_jobinfo *ji)
{
    json_object *v;
    long long n;

    memset(ji, 0, sizeof(*ji));
    ji->exit_code = -1;
    if (json_object_object_get_ex(job, "job_id", &v) && get_number(v, &n))
        ji->id = (long)n;
    if (json_object_object_get_ex(job, "job_state", &v))
        read_state(v, ji);
    if (json_object_object_get_ex(job, "exit_code", &v))
        read_exit(v, ji);
    copy_text(ji->reason, sizeof(ji->reason), get_str(job, "state_reason"));
    copy_text(ji->node, sizeof(ji->node), get_str(job, "batch_host"));
    copy_text(ji->comment, sizeof(ji->comment), get_str(job, "comment"));
    if (json_object_object_get_ex(job, "time_limit", &v) &&
        get_number(v, &n))
        ji->time_limit_min = (long)n;
}

int sl_reply_error(json_object *reply, char *out, size_t outlen, long *num)
{
    json_object *errors, *e, *v;
    const char *text;
    size_t i, n;

    out[0] = '\0';
    *num = 0;
    if (reply == NULL || !json_object_object_get_ex(reply, "errors", &errors) ||
        !json_object_is_type(errors, json_type_array))
        return 0;
    n = json_object_array_length(errors);
    for (i = 0; i < n; i++) {
        e = json_object_array_get_idx(errors, i);
        if (!json_object_is_type(e, json_type_object))
            continue;
        /* Handlers: description + error_number; the parser: error +
         * error_code.  The description says more when both exist. */
        text = get_str(e, "description");
        if (text == NULL || text[0] == '\0')
            text = get_str(e, "error");
        if ((json_object_object_get_ex(e, "error_number", &v) ||
             json_object_object_get_ex(e, "error_code", &v)) &&
            json_object_is_type(v, json_type_int))
            *num = (long)json_object_get_int64(v);
        if (text && text[0]) {
            snprintf(out, outlen, "%s", text);
            return 1;
        }
    }
    return *num != 0;
}

const char *sl_reply_release(json_object *reply)
{
    json_object *meta, *slurm;

    if (!json_object_object_get_ex(reply, "meta", &meta))
        return NULL;
    /* v0.0.38: meta.Slurm.release; v0.0.40+: meta.slurm.release */
    if (!json_object_object_get_ex(meta, "slurm", &slurm) &&
        !json_object_object_get_ex(meta, "Slurm", &slurm))
        return NULL;
    return get_str(slurm, "release");
}
