/*
 * Frozen sizes of the plugin ABI 1.x structs and of the client structs.
 *
 * The checks are compile-time: a layout change to a struct that crosses
 * the plugin boundary breaks the build of this test, and so `make check`.
 * A struct may grow only at its end, with a new ..._SIZE_V1_x constant;
 * the 1.0 constants never change.
 */
#include <stddef.h>
#include <stdio.h>

#include <atp/atp.h>
#include <atp/plugin.h>

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

int main(void)
{
    puts("1..1");
    puts("ok 1 - plugin ABI 1.0, 1.1 and 1.2 and client struct sizes and "
         "offsets are frozen");
    return 0;
}

#else

int main(void)
{
    puts("1..0 # SKIP the frozen sizes are published for LP64 only");
    return 0;
}

#endif
