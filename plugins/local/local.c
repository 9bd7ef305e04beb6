/*
 * plugins/local/local.c - the local backend: commands run as host
 * processes, in the workdir itself or in a private scratch copy of it.
 *
 * Running a command is the core's host process runner (host->spawn()):
 * its own process group, pipes, stdin, the kill schedule, escaped
 * descendants.  What is left here is where it runs and with which
 * environment.
 */
#define _GNU_SOURCE
#include "config.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atp/plugin.h>

static const atp_host_api *host;

struct local_backend {
    int inherit_env;
    int copy;         /* workdir_mode = copy */
};

struct local_session {
    char *workdir;    /* where commands run: the workdir or the scratch */
    char *scratch;    /* private copy (workdir_mode = copy), or NULL */
    int inherit_env;
    int closed;
};

static const atp_option options[] = {
    {"inherit_env", ATP_OPT_BOOL, "true", NULL,
     "pass atp-run's own environment to commands (under the configured env)"},
    {"workdir_mode", ATP_OPT_CHOICE, "inplace", "inplace|copy",
     "inplace: run in the workdir; copy: run in a private scratch copy that "
     "only a pull brings back"},
    {NULL, 0, NULL, NULL, NULL},
};

#define LOCAL_CAPS                                                         \
    (ATP_CAP_SHARED_FS | ATP_CAP_STREAMING | ATP_CAP_STDIN |                \
     ATP_CAP_SESSIONS | ATP_CAP_KILLS_TREE)

static int local_backend_open(atp_call *call, void **out)
{
    struct local_backend *b = calloc(1, sizeof(*b));

    if (b == NULL)
        return host->set_error(call, ATP_E_NOMEM, "out of memory");
    b->inherit_env = 1;
    host->config_bool(call, "inherit_env", &b->inherit_env);
    b->copy = host->config_choice(call, "workdir_mode") == 1;
    *out = b;
    return 0;
}

/* In copy mode the workdir is isolated: the core pushes and pulls it. */
static uint64_t local_backend_caps(void *backend)
{
    const struct local_backend *b = backend;

    return b->copy ? (LOCAL_CAPS & ~ATP_CAP_SHARED_FS) | ATP_CAP_ISOLATED_FS
                   : LOCAL_CAPS;
}

static int rm_entry(const char *path, const struct stat *sb, int flag,
                    struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

/* Remove the scratch copy; never follows a symlink out of it. */
static int remove_tree(const char *dir)
{
    return nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void local_backend_free(void *backend)
{
    free(backend);
}

static int local_check(atp_call *call, void *backend)
{
    (void)backend;
    if (access("/bin/sh", X_OK) != 0)
        return host->set_error(call, ATP_E_BACKEND, "/bin/sh is not "
                               "executable: %s", strerror(errno));
    return 0;
}

static int local_session_open(atp_call *call, void *backend,
                              const atp_session_spec *spec, void **out)
{
    struct local_backend *b = backend;
    struct local_session *s;
    struct stat st;

    if (spec->n_mounts > 0)
        return host->set_error(call, ATP_E_UNSUPPORTED, "the local backend "
                               "runs in the host filesystem and cannot mount");
    if (stat(spec->workdir, &st) != 0 || !S_ISDIR(st.st_mode))
        return host->set_error(call, ATP_E_PROVISION, "workdir %s is not a "
                               "directory", spec->workdir);
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return host->set_error(call, ATP_E_NOMEM, "out of memory");
    if (b->copy) {
        const char *tmp = getenv("TMPDIR");
        char templ[4096];

        snprintf(templ, sizeof(templ), "%s/%s-XXXXXX",
                 tmp && *tmp ? tmp : "/tmp", host->run_id(call));
        if (mkdtemp(templ) == NULL) {
            free(s);
            return host->set_error(call, ATP_E_PROVISION, "cannot create a "
                                   "scratch directory %s: %s; set TMPDIR",
                                   templ, strerror(errno));
        }
        s->scratch = strdup(templ);
        if (s->scratch == NULL) {
            rmdir(templ);
            free(s);
            return host->set_error(call, ATP_E_NOMEM, "out of memory");
        }
    }
    s->workdir = strdup(s->scratch ? s->scratch : spec->workdir);
    s->inherit_env = b->inherit_env;
    if (s->workdir == NULL) {
        if (s->scratch)
            rmdir(s->scratch);
        free(s->scratch);
        free(s);
        return host->set_error(call, ATP_E_NOMEM, "out of memory");
    }
    *out = s;
    return 0;
}

static int local_session_close(atp_call *call, void *session)
{
    struct local_session *s = session;

    s->closed = 1; /* every command's processes are gone already */
    if (s->scratch) {
        if (remove_tree(s->scratch) != 0 && errno != ENOENT)
            return host->set_error(call, ATP_E_BACKEND, "cannot remove the "
                                   "scratch copy %s: %s", s->scratch,
                                   strerror(errno));
        free(s->scratch);
        s->scratch = NULL;
    }
    return 0;
}

static void local_session_free(void *session)
{
    struct local_session *s = session;

    if (s->scratch)
        remove_tree(s->scratch);
    free(s->scratch);
    free(s->workdir);
    free(s);
}

/* A command: the core's host process runner does all of it. */
static int local_exec(atp_call *call, void *session,
                      const atp_exec_spec *spec, atp_exec_outcome *out)
{
    struct local_session *s = session;
    atp_spawn_spec sp;

    if (s->closed)
        return host->set_error(call, ATP_E_INVAL, "session is closed");
    memset(&sp, 0, sizeof(sp));
    sp.struct_size = sizeof(sp);
    sp.flags = ((spec->flags & ATP_EXEC_STDIN) ? ATP_SPAWN_STDIN : 0) |
               (s->inherit_env ? ATP_SPAWN_HOST_ENV : 0);
    sp.argv = spec->argv;
    sp.envp = spec->envp;
    sp.cwd = spec->cwd ? spec->cwd : s->workdir;
    return host->spawn(call, &sp, out);
}

static const atp_plugin_ops local_ops = {
    sizeof(atp_plugin_ops),
    ATP_PLUGIN_ABI_MAJOR,
    ATP_PLUGIN_ABI_MINOR,
    "local",
    PACKAGE_VERSION,
    "runs commands as host processes in the workdir itself",
    LOCAL_CAPS,
    options,
    local_backend_open,
    local_backend_free,
    local_session_open,
    local_exec,
    local_session_close,
    local_session_free,
    local_check,
    NULL, /* reap: the core's runner leaves nothing behind */
    NULL, /* fini */
    local_backend_caps,
    NULL, /* push_archive */
    NULL, /* pull_archive */
    NULL, /* group_open */
    NULL, /* group_free */
};

ATP_PLUGIN_EXPORT int atp_plugin_entry_v1(const atp_host_api *api,
                                          atp_call *call,
                                          const atp_plugin_ops **ops_out)
{
    if (api == NULL || api->abi_major != ATP_PLUGIN_ABI_MAJOR)
        return ATP_E_ABI;
    if (!ATP_HAS_FIELD(api, atp_host_api, spawn))
        return api->set_error(call, ATP_E_ABI, "the local plugin runs "
                              "commands with the core's process runner: it "
                              "needs a core of plugin ABI 1.2 or later "
                              "(this one is %u.%u)", api->abi_major,
                              api->abi_minor);
    host = api;
    *ops_out = &local_ops;
    return 0;
}
