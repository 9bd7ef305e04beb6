/*
 * Frozen sizes of the plugin ABI 1.x structs and of the client structs.
 *
 * The checks of the published sizes are compile-time: a layout change to
 * a struct that crosses the plugin boundary breaks the build of this
 * test, and so `make check`.  A struct may grow only at its end, with a
 * new ..._SIZE_V1_x constant; the 1.0 constants never change.  Beyond
 * them, every struct, field and constant of the frozen 1.2 header
 * (tests/abi/v1.2) is compared with include/atp at run time, and a
 * difference fails naming what moved.
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <atp/atp.h>
#include <atp/plugin.h>

#include "layout12.def"

/*
 * What ABI 1.2 froze, as include/atp lays it out today, row for row
 * against the frozen header's table (layout_v12.c): a struct keeps its
 * size or grows at its end (element types never grow), every field keeps
 * its offset and size, every constant its value.  Returns the number of
 * rows that differ, each named on a diagnostic line.
 */
static const struct atp_l12_row now[] = {ATP_L12_TABLE};

static int compare(int kind)
{
    size_t i, n_now = sizeof(now) / sizeof(now[0]);
    int bad = 0;

    if (n_now != atp_l12_frozen_n) {
        printf("# the tables differ in length (%zu, frozen %zu)\n", n_now,
               atp_l12_frozen_n);
        return 1;
    }
    for (i = 0; i < n_now; i++) {
        const struct atp_l12_row *f = &atp_l12_frozen[i], *c = &now[i];
        int is_type = strchr(f->name, '.') == NULL &&
                      strncmp(f->name, "atp_", 4) == 0;
        int is_field = strchr(f->name, '.') != NULL;

        if (strcmp(f->name, c->name) != 0) {
            printf("# row %zu is %s, frozen %s\n", i, c->name, f->name);
            return 1;
        }
        if (kind == 0 && is_type &&
            (f->b ? c->a < f->a : c->a != f->a)) {
            printf("# %s is %lld bytes; ABI 1.2 froze it at %lld%s\n",
                   c->name, c->a, f->a,
                   f->b ? " (it may grow, never shrink)"
                        : " (an array element: it never changes)");
            bad++;
        } else if (kind == 1 && is_field && (c->a != f->a || c->b != f->b)) {
            printf("# %s is at offset %lld, %lld bytes; ABI 1.2 froze it at "
                   "offset %lld, %lld bytes\n", c->name, c->a, c->b, f->a,
                   f->b);
            bad++;
        } else if (kind == 2 && !is_type && !is_field && c->a != f->a) {
            printf("# %s is %lld; ABI 1.2 froze it as %lld\n", c->name, c->a,
                   f->a);
            bad++;
        }
    }
    return bad;
}

#if defined(__LP64__) || defined(_LP64)

#define FROZEN(T, size) \
    _Static_assert(sizeof(T) == (size), #T " changed size: ABI break")

FROZEN(atp_host_api, ATP_HOST_API_SIZE_V1_3);
FROZEN(atp_plugin_ops, ATP_PLUGIN_OPS_SIZE_V1_3);
FROZEN(atp_session_spec, ATP_SESSION_SPEC_SIZE_V1_3);
FROZEN(atp_group_spec, ATP_GROUP_SPEC_SIZE_V1_3);
FROZEN(atp_exec_spec, ATP_EXEC_SPEC_SIZE_V1_2);
FROZEN(atp_spawn_spec, ATP_SPAWN_SPEC_SIZE_V1_2);
FROZEN(atp_exec_outcome, ATP_EXEC_OUTCOME_SIZE_V1_2);
FROZEN(atp_option, ATP_OPTION_SIZE_V1_0);
FROZEN(atp_field, ATP_FIELD_SIZE_V1_0);
FROZEN(atp_mount, ATP_MOUNT_SIZE_V1_0);

#define AT(T, f, off) \
    _Static_assert(offsetof(T, f) == (off), #T "." #f " moved: ABI break")

/* The headers every side reads before it knows the other's version. */
AT(atp_host_api, struct_size, 0);
AT(atp_host_api, abi_major, 4);
AT(atp_host_api, abi_minor, 6);
AT(atp_plugin_ops, struct_size, 0);
AT(atp_plugin_ops, abi_major, 4);
AT(atp_plugin_ops, abi_minor, 6);
AT(atp_session_spec, struct_size, 0);
AT(atp_exec_spec, struct_size, 0);
AT(atp_exec_outcome, struct_size, 0);

/* Where callbacks and services sit; a 1.0 plugin's table ends after
 * session_free, at the first optional callback. */
AT(atp_host_api, set_error, 8);
AT(atp_host_api, output, 48);
AT(atp_host_api, add_secret, 128);
AT(atp_plugin_ops, caps, 32);
AT(atp_plugin_ops, options, 40);
AT(atp_plugin_ops, backend_open, 48);
AT(atp_plugin_ops, exec, 72);
AT(atp_plugin_ops, session_free, 88);
AT(atp_plugin_ops, check, 96);
AT(atp_plugin_ops, fini, 112);

/* The 1.1 tables are the 1.0 tables with fields appended. */
AT(atp_host_api, tar_create, ATP_HOST_API_SIZE_V1_0);
AT(atp_host_api, tar_extract, ATP_HOST_API_SIZE_V1_0 + 8);
AT(atp_plugin_ops, backend_caps, ATP_PLUGIN_OPS_SIZE_V1_0);
AT(atp_plugin_ops, push_archive, ATP_PLUGIN_OPS_SIZE_V1_0 + 8);
AT(atp_plugin_ops, pull_archive, ATP_PLUGIN_OPS_SIZE_V1_0 + 16);

/* The 1.2 host table is the 1.1 table with fields appended; so is the
 * exec spec. */
AT(atp_host_api, config_bool, ATP_HOST_API_SIZE_V1_1);
AT(atp_host_api, exec_due, ATP_HOST_API_SIZE_V1_1 + 24);
AT(atp_host_api, spawn, ATP_HOST_API_SIZE_V1_1 + 72);
AT(atp_host_api, image_pinned, ATP_HOST_API_SIZE_V1_1 + 80);
AT(atp_exec_spec, envp, ATP_EXEC_SPEC_SIZE_V1_0);
/* 1.3: the ops table and the session spec grew at their ends. */
AT(atp_plugin_ops, group_open, ATP_PLUGIN_OPS_SIZE_V1_1);
AT(atp_plugin_ops, group_free, ATP_PLUGIN_OPS_SIZE_V1_1 + 8);
AT(atp_session_spec, group, ATP_SESSION_SPEC_SIZE_V1_0);
AT(atp_host_api, exec_queued, ATP_HOST_API_SIZE_V1_2);
AT(atp_exec_spec, exec_id, ATP_EXEC_SPEC_SIZE_V1_0 + 8);
AT(atp_spawn_spec, on_output, 40);

/* Fields of requests and of the outcome. */
AT(atp_session_spec, env, 40);
AT(atp_session_spec, n_mounts, 56);
AT(atp_session_spec, ttl_ms, 72);
AT(atp_exec_spec, argv, 8);
AT(atp_exec_spec, timeout_ms, 32);
AT(atp_exec_spec, drain_ms, 48);
AT(atp_exec_outcome, exit_code, 8);
AT(atp_exec_outcome, signal, 12);
AT(atp_exec_outcome, cpu_ns, ATP_EXEC_OUTCOME_SIZE_V1_0);
AT(atp_exec_outcome, max_rss_bytes, ATP_EXEC_OUTCOME_SIZE_V1_0 + 8);

/* Elements of the arrays, walked with sizeof. */
AT(atp_option, type, 8);
AT(atp_option, help, 32);
AT(atp_field, i, 24);
AT(atp_field, d, 32);
AT(atp_mount, writable, 16);

/* The client structs: any published size is accepted, so each one's
 * layout up to it is frozen. */
FROZEN(atp_result, ATP_RESULT_SIZE_0_3);
FROZEN(atp_session_opts, ATP_SESSION_OPTS_SIZE_0_1);
FROZEN(atp_exec_opts, ATP_EXEC_OPTS_SIZE_0_2);
FROZEN(atp_event, ATP_EVENT_SIZE_0_1);
FROZEN(atp_gc_item, ATP_GC_ITEM_SIZE_0_1);
FROZEN(atp_plugin_info, ATP_PLUGIN_INFO_SIZE_0_2);
AT(atp_plugin_info, backend, ATP_PLUGIN_INFO_SIZE_0_1);
AT(atp_result, message, 48);
AT(atp_result, provision_s, ATP_RESULT_SIZE_0_1);
AT(atp_result, image_id, ATP_RESULT_SIZE_0_2 - 160);
FROZEN(atp_attempt, ATP_ATTEMPT_SIZE_0_2);
FROZEN(atp_batch_opts, ATP_BATCH_OPTS_SIZE_0_2);
AT(atp_session_opts, event_payload, 48);
AT(atp_exec_opts, stdin_fd, 40);
AT(atp_exec_opts, on_flush, 48);
AT(atp_exec_opts, flags, ATP_EXEC_OPTS_SIZE_0_1);

#endif /* LP64 */

int main(void)
{
    static const char *const what[] = {
        "every struct of ABI 1.2 keeps its size or grows at its end only",
        "every field of ABI 1.2 keeps its offset and size",
        "every constant of ABI 1.2 keeps its value",
    };
    int k, failed = 0;

    puts("1..4");
#if defined(__LP64__) || defined(_LP64)
    puts("ok 1 - plugin ABI 1.0, 1.1 and 1.2 and client struct sizes and "
         "offsets are frozen");
#else
    puts("ok 1 # SKIP the frozen sizes are published for LP64 only");
#endif
    for (k = 0; k < 3; k++) {
        int bad = compare(k);

        printf("%s %d - %s (include/atp against tests/abi/v1.2)\n",
               bad ? "not ok" : "ok", k + 2, what[k]);
        failed |= bad != 0;
    }
    return failed;
}
