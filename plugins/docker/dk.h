/*
 * plugins/docker/dk.h - declarations shared by the files of the docker
 * backend plugin.  Nothing here crosses the plugin boundary: every symbol
 * is hidden, and only atp_plugin_entry_v1 is exported.
 *
 *   http.c     libcurl transport over a unix socket or tcp, with the
 *              call's deadline and cancellation on every request
 *   hijack.c   hijacked connections (exec start, attach) over
 *              CURLOPT_CONNECT_ONLY, for output frames and stdin
 *   demux.c    the byte-wise state machine of the multiplexed stream
 *   api.c      Engine API endpoints and their JSON bodies
 *   exec.c     running one command: pump, the schedule's signals, exit
 *   archive.c  workdir in and out of a container (transfer = copy)
 *   docker.c   the plugin's ops: options, backend, sessions, gc
 */
#ifndef ATP_DOCKER_DK_H
#define ATP_DOCKER_DK_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>
#include <json.h>

#include <atp/plugin.h>

/* The host table, set once by the entry point. */
extern const atp_host_api *dk_host;

/* ---- demux.c ----------------------------------------------------------- */

/* Receives one piece of a frame's payload; non-zero stops the feed. */
typedef int (*dk_emit_fn)(void *ctx, int stream, const void *buf,
                          size_t len);

enum { DK_DEMUX_EBADTYPE = -100, DK_DEMUX_ETRUNC = -101 };

struct dk_demux {
    unsigned char hdr[8];
    unsigned hlen;      /* header bytes collected so far */
    uint32_t left;      /* payload bytes left in the current frame */
    int stream;         /* ATP_STDOUT or ATP_STDERR of the current frame */
    int bad_type;       /* the offending type byte after EBADTYPE */
    uint64_t sys_bytes; /* bytes of type-3 (daemon error) frames seen */
};

void dk_demux_init(struct dk_demux *d);

/*
 * Feed @len bytes of a multiplexed stream.  Calls @emit for every run of
 * payload bytes (types 0 and 1 as ATP_STDOUT, 2 and 3 as ATP_STDERR), as
 * they come, however the bytes are split.  Returns 0, the first non-zero
 * value @emit returned, or DK_DEMUX_EBADTYPE for an unknown type byte.
 */
int dk_demux_feed(struct dk_demux *d, const void *buf, size_t len,
                  dk_emit_fn emit, void *ctx);

/* At the end of the stream: 0 between frames, DK_DEMUX_ETRUNC inside one. */
int dk_demux_end(const struct dk_demux *d);

/* ---- http.c ------------------------------------------------------------ */

/* Where the daemon listens. */
struct dk_endpoint {
    char *unix_path; /* socket path, or NULL for tcp */
    char *base_url;  /* "http://localhost" or "http://HOST:PORT" */
    char *host_hdr;  /* the Host header of hijacked requests */
    char *display;   /* "unix:///run/docker.sock" or "tcp://h:p" */
    int remote;      /* tcp: a bind mount would name the wrong machine */
};

/*
 * Parse "unix:///path", "/path" or "tcp://host:port" into @ep.  Returns 0,
 * or ATP_E_CONFIG with a message in @err.
 */
int dk_endpoint_parse(struct dk_endpoint *ep, const char *spec, char *err,
                      size_t errlen);
void dk_endpoint_free(struct dk_endpoint *ep);

/* What the daemon said when versions were negotiated (backend-wide). */
struct dk_daemon {
    pthread_mutex_t lock;
    int negotiated;
    char version[16]; /* API version used in paths, "1.41" */
    int podman;       /* Libpod-Api-Version seen */
};

struct dk_flight;

/* One connection to the daemon: one request at a time. */
struct dk_http {
    const struct dk_endpoint *ep;
    struct dk_daemon *daemon;
    CURL *easy;
    CURLM *multi;
    int64_t api_timeout_ms; /* cap of a non-streaming request */
    struct dk_flight *fl;   /* the request in flight, or NULL */
};

/* A request.  Zero-initialise, then set what is needed. */
struct dk_req {
    const char *method;       /* GET, POST, PUT, DELETE, HEAD */
    const char *path;         /* API path with query, e.g. "/_ping" */
    int unversioned;          /* no "/vX.Y" prefix */
    const char *body;         /* JSON text, or NULL */
    const char *content_type; /* for body/upload; JSON by default */
    /* Streaming request body (PUT archive): returns a count, 0 at the
     * end, negative to abort. */
    long (*upload)(void *ctx, void *buf, size_t len);
    void *upload_ctx;
    /* Streaming 2xx response body; non-zero stops the transfer and
     * becomes the result. */
    int (*download)(void *ctx, const void *buf, size_t len);
    void *download_ctx;
    /* Every response header line. */
    void (*header)(void *ctx, const char *line, size_t len);
    void *header_ctx;
    int streaming;     /* no api_timeout: the call's deadline only */
    int uncancellable; /* cleanup: no cancel, and a few s past the deadline */
    int64_t timeout_ms; /* > 0: this deadline instead of the call's */
};

struct dk_resp {
    long status;
    char *body; /* NUL-terminated; error bodies, or 2xx without download */
    size_t len;
    char msg[512]; /* the daemon's message of an error response */
};

void dk_resp_free(struct dk_resp *rs);

int dk_http_init(struct dk_http *h, const struct dk_endpoint *ep,
                 struct dk_daemon *daemon, int64_t api_timeout_ms);
void dk_http_free(struct dk_http *h);

/*
 * Perform one request and fill @rs.  Returns 0 once a response arrived,
 * whatever its status (the caller judges it); else ATP_E_BACKEND (daemon
 * unreachable or gone), ATP_E_TIMEOUT, ATP_E_CANCELLED or the download
 * callback's code, with host->set_error() done.
 */
int dk_http_do(struct dk_http *h, atp_call *call, const struct dk_req *rq,
               struct dk_resp *rs);

/*
 * A request whose answer comes late (POST /containers/{id}/wait): send it
 * and return once the response head has arrived, with rs->status set and
 * *@pending = 1; the body follows through dk_http_poll().  When the whole
 * response came at once (an error, say), @rs is complete and *@pending is
 * 0.  Errors as dk_http_do().  @rs must stay valid while pending.
 */
int dk_http_begin(struct dk_http *h, atp_call *call, const struct dk_req *rq,
                  struct dk_resp *rs, int *pending);

/*
 * Wait up to @max_ms (< 0: no limit but the request's own deadline) for
 * the pending request to end: *@done = 1 and its response complete, or
 * *@done = 0 and still pending.  Errors as dk_http_do(), which end it.
 */
int dk_http_poll(struct dk_http *h, atp_call *call, int64_t max_ms,
                 int *done);

/*
 * Send a request whose answer nobody needs soon (a detached exec's
 * start): returns once it is on its way, *@pending = 1 while its answer
 * is still to come (collect it with dk_http_poll(), or dk_http_abandon()
 * it).  @rs must stay valid while pending.
 */
int dk_http_send(struct dk_http *h, atp_call *call, const struct dk_req *rq,
                 struct dk_resp *rs, int *pending);

/* Drop the pending request, if any (its connection closes). */
void dk_http_abandon(struct dk_http *h);

/*
 * Set the call's error for an unexpected HTTP answer to @what ("create
 * the container"): the daemon's own message, the status, and @hint when
 * given.  Returns @code.
 */
int dk_http_fail(atp_call *call, int code, const struct dk_resp *rs,
                 const char *what, const char *hint);

/*
 * Is @rs a refusal for rate or quota (429, or a message that says so)?
 * Those become ATP_E_RATE, on which a batch slows down and tries again.
 */
int dk_http_rate(const struct dk_resp *rs);

/* The daemon's message of an error body (JSON "message"), into @out. */
void dk_http_message(const char *body, size_t len, char *out, size_t outlen);

/*
 * Does the daemon take new connections?  0 yes, else ATP_E_BACKEND.  A
 * daemon shutting down closes its listener first and stops containers
 * after, while connections already open are still served.
 */
int dk_http_probe(const struct dk_endpoint *ep, int64_t timeout_ms);

/* Remaining milliseconds until @deadline_ns (0: none -> -1). */
int64_t dk_ms_left(int64_t deadline_ns);

/* ---- hijack.c ---------------------------------------------------------- */

enum { DK_AGAIN = -200 };

struct dk_hijack {
    CURL *easy;
    curl_socket_t fd;
    long status;
    char *buf;          /* bytes after the response head, not yet read */
    size_t off, len;
    int wr_closed;
};

/*
 * Open a hijacked connection: connect, send POST @path with JSON @body,
 * read the response head.  Returns 0 when the daemon answered 101 or 200
 * and the connection now carries the raw stream; else fills @rs with the
 * error response (status and message) and returns ATP_E_BACKEND with the
 * error set, or a transport/deadline/cancel code.
 */
int dk_hijack_open(struct dk_hijack *hj, struct dk_http *h, atp_call *call,
                   const char *path, const char *body, struct dk_resp *rs);

/* Read what is there: a count, 0 at EOF, DK_AGAIN, or ATP_E_BACKEND. */
long dk_hijack_recv(struct dk_hijack *hj, void *buf, size_t len);

/* Write: a count, DK_AGAIN, or ATP_E_BACKEND (the stream is gone). */
long dk_hijack_send(struct dk_hijack *hj, const void *buf, size_t len);

/* Half-close: the command sees the end of its stdin. */
void dk_hijack_shut_wr(struct dk_hijack *hj);

void dk_hijack_close(struct dk_hijack *hj);

/* ---- api.c ------------------------------------------------------------- */

#define DK_API_MAX "1.47"   /* newest API whose semantics were checked */
#define DK_API_FLOOR "1.40" /* oldest API the plugin speaks */

#define DK_LABEL_RUN "org.atp.run"
#define DK_LABEL_OWNER "org.atp.owner"
#define DK_LABEL_PID "org.atp.pid"
#define DK_LABEL_CREATED "org.atp.created"
#define DK_LABEL_DEADLINE "org.atp.deadline"

/*
 * Negotiate the API version once per daemon (GET /_ping): the server's
 * maximum capped at DK_API_MAX; refused below DK_API_FLOOR unless the
 * daemon is Podman, which accepts any prefix.
 */
int dk_api_negotiate(struct dk_http *h, atp_call *call);

/* Is @image on the daemon?  0 yes, ATP_E_NOTFOUND no, or an error. */
int dk_api_image_exists(struct dk_http *h, atp_call *call, const char *image);

/*
 * What @image is on the daemon: its immutable Id ("sha256:...", into
 * @id_out, 72 bytes) and a registry digest reference ("NAME@sha256:...",
 * into @digest_out, 256 bytes; "" for an image that never came from a
 * registry).  Either may be NULL.  0, ATP_E_NOTFOUND, or an error.
 */
int dk_api_image_inspect(struct dk_http *h, atp_call *call, const char *image,
                         char *id_out, char *digest_out);

/* Pull @image, reporting "image_pull" events.  ATP_E_IMAGE on failure,
 * ATP_E_RATE when the registry refused for rate. */
int dk_api_image_pull(struct dk_http *h, atp_call *call, const char *image);

/* Does the daemon have network @name?  0 yes, ATP_E_NOTFOUND no. */
int dk_api_network_exists(struct dk_http *h, atp_call *call,
                          const char *name);

/*
 * Create a container named @name from the JSON @body; the id goes to
 * @id_out (65 bytes).  ATP_E_NOTFOUND when the image is missing (message
 * set), ATP_E_RATE for 429 and 5xx (a limit, or a resource short for
 * now), ATP_E_PROVISION for other refusals.
 */
int dk_api_create(struct dk_http *h, atp_call *call, const char *name,
                  const char *body, char *id_out);

/*
 * Start a created container.  ATP_E_PROVISION with the daemon's reason,
 * also copied to @why when not NULL; @why is "" after any other failure
 * (the daemon did not answer: the call's error says so).
 */
int dk_api_start(struct dk_http *h, atp_call *call, const char *id,
                 char *why, size_t whylen);

/*
 * Remove a container, killing it first (force=1&v=1).  Gone already (404)
 * counts as done.  Uncancellable; 0 or an error.
 */
int dk_api_remove(struct dk_http *h, atp_call *call, const char *id);

/* Send @sig ("SIGKILL") to a container; not running (409) is fine. */
int dk_api_kill(struct dk_http *h, atp_call *call, const char *id,
                const char *sig);

/*
 * State of a container: *running, and *code (State.ExitCode, 0 to 255)
 * once it is not running.  ATP_E_SANDBOX_DEAD when it is gone,
 * ATP_E_BACKEND when it stopped without a usable exit code.
 */
int dk_api_container_state(struct dk_http *h, atp_call *call,
                           const char *id, int *running, int *code);

/*
 * The answer of POST /containers/{id}/wait?condition=removed in @rs: the
 * exit code into *@code, and *@removed = 1 unless the daemon reported an
 * error (the removal failed: the container may still be there).
 */
int dk_api_wait_result(atp_call *call, const struct dk_resp *rs, int *code,
                       int *removed);

/*
 * Ids of the containers matching the JSON filter @filters, e.g.
 * {"label":["org.atp.run=X"]}; a NULL-terminated array to free with
 * dk_strv_free.
 */
int dk_api_list(struct dk_http *h, atp_call *call, const char *filters,
                char ***ids);

/*
 * Create an exec of @argv in container @cid (env pairs over the
 * container's, working directory, user, stdin attached or not); the exec
 * id goes to @id_out (65 bytes).  ATP_E_SANDBOX_DEAD when the container
 * is gone or stopped.
 */
int dk_api_exec_create(struct dk_http *h, atp_call *call, const char *cid,
                       const char *const *argv, const char *const *env,
                       const char *cwd, const char *user, int with_stdin,
                       int uncancellable, char *id_out);

/* Start an exec detached (nobody reads it): for kill commands. */
int dk_api_exec_start_detached(struct dk_http *h, atp_call *call,
                               const char *eid);

/*
 * State of an exec: *running, and *code (0 to 255) once it is not
 * running.  ATP_E_SANDBOX_DEAD when the exec (so its container) is gone,
 * ATP_E_BACKEND when it ended without a usable exit code.
 */
int dk_api_exec_inspect(struct dk_http *h, atp_call *call, const char *eid,
                        int *running, int *code);

/* A JSON array of the strings of the NULL-terminated @v (NULL: empty). */
json_object *dk_strv_json(const char *const *v);

void dk_strv_free(char **v);

/* ---- exec.c ------------------------------------------------------------ */

struct dk_session;

/*
 * A session's resident command runner (exec.c): one exec, started at the
 * first command, whose stdin takes the commands and whose stream carries
 * their output and, after a record separator and the runner's nonce,
 * their exit codes and ends.
 */
struct dk_runner {
    struct dk_hijack hj;
    struct dk_demux dm;
    char mark[32]; /* "\036atp-NONCE " */
    char eid[72];  /* its exec's id */
    int up;        /* hj is a live runner between two commands */
    int off;       /* the container cannot host one: an exec per command */
};

/* Start the session's runner now (at the session's start), so that its
 * first command does not wait for it.  0 also when the container cannot
 * host one. */
int dk_runner_prepare(atp_call *call, struct dk_session *s);

/* Stop the session's runner, if any (before the container goes). */
void dk_runner_stop(struct dk_session *s);

/* The ops' exec(): see atp_plugin_ops.exec. */
int dk_exec(atp_call *call, void *session, const atp_exec_spec *spec,
            atp_exec_outcome *out);

/*
 * The argv that runs @argv (NULL-terminated) with, when @ttl_s > 0, a
 * watchdog that kills its process group after that many seconds; with
 * @usage, the wrapper then reports the container's cgroup usage on
 * stderr.  The strings are borrowed; free the array.
 *
 * Why exec.c has shells of its own (this one, the session's sweeping and
 * measuring shells) besides the core's wrapper: the command's process
 * group is announced by the core's wrapper (ATP_CAP_GROUP_SIGNALS), and
 * the plugin has no marker of its own for it.  What these shells do is
 * what only a container needs, and the core's wrapper, the same on every
 * backend, has no place for a backend's steps before or after the
 * command: a run path's container has no TTL and outlives an atp that
 * dies, so a watchdog in it ends the command; what a session command
 * leaves running in its container is killed from the command's own exec
 * (a second exec would cost a runc start after every command); and the
 * container's cgroup usage is read inside it after the command (a
 * one-shot container's cgroup is gone by the time the API could be
 * asked).  They report on stderr after a record separator
 * ("\036atp-usage", "\036atp-held"), the only way back from inside an
 * exec without another request, and filter_stderr() takes that off.
 */
const char **dk_wrap_argv(const char *const *argv, long long ttl_s,
                          int usage);

/*
 * Run @argv as root in the session's container (not a user's command: no
 * wrapper, no output) and wait for its exit code.
 */
int dk_exec_root(atp_call *call, struct dk_session *s,
                 const char *const *argv, int *code);

/* ---- docker.c ---------------------------------------------------------- */

enum { DK_NET_NONE, DK_NET_BRIDGE, DK_NET_HOST };

struct dk_backend {
    struct dk_endpoint ep;
    struct dk_daemon daemon;
    char *image;        /* NULL: the session's [image] name */
    char *user;         /* NULL: the workdir owner's uid:gid */
    int64_t nano_cpus;  /* 0: no limit */
    int64_t memory;     /* bytes, 0: no limit */
    int64_t pids_limit; /* 0: no limit */
    int network;        /* DK_NET_* */
    int pull;           /* 0 never, 1 missing, 2 always */
    int copy;           /* transfer = copy */
    int one_shot_exec;  /* one_shot = exec: no run path */
    int init;
    int64_t api_timeout_ms;
    struct dk_http ctl; /* for check() and reap(), under ctl_lock */
    pthread_mutex_t ctl_lock;
    /* The image resolved once for every session (pin_lock): what name
     * (NULL: none yet), to which Id and registry digest. */
    pthread_mutex_t pin_lock;
    char *pinned_name;
    char pinned_id[72];
    char pinned_digest[256];
};

struct dk_session {
    struct dk_backend *be;
    struct dk_http http;
    /* The KILL of what a command left, on its way while the next one
     * runs (exec.c) */
    struct dk_http sweep;
    struct dk_resp sweep_rs;
    char sweep_path[128];
    struct dk_runner runner; /* exec.c */
    char *run_id;
    char *image;       /* the name configured */
    char image_id[72]; /* what it resolved to: containers are made from it */
    char *workdir;     /* host path */
    char *sb_workdir;  /* path in the container */
    char *user;        /* "uid:gid" */
    json_object *env;  /* array of "KEY=VALUE" (the session's) */
    json_object *binds;
    long long ttl_s;
    int one_shot;      /* fold creation into exec (run path) */
    /* The run path's container removes itself (AutoRemove) and its exit
     * code comes from a wait for its removal sent before it starts, as
     * docker run --rm does (Docker; podman's AutoRemove is not relied
     * on). */
    int self_removing;
    const char *net_mode; /* NetworkMode sent */
    int n_created;     /* containers made so far (names) */
    char id[72];       /* the current container, "" when none */
    char name[96];     /* its name, as the ledger knows it */
    char unsure[96];   /* a container whose create was never answered */
    int dead;          /* the container went away */
    int closed;
};

/*
 * Create (and, unless @cmd is given, start) the session's container.
 * @cmd NULL: an idle container for execs; else the run path's container,
 * created only, running @cmd with stdin attached when @with_stdin, and
 * the whole environment @exec_env, in @cwd (NULL: the workdir).  The id
 * is recorded the moment create
 * returns; a failed create or start removes what it made.
 */
int dk_container_create(atp_call *call, struct dk_session *s,
                        const char *const *cmd, const char *const *exec_env,
                        const char *cwd, int with_stdin);

/* Remove the session's current container, if any (uncancellable). */
int dk_container_remove(atp_call *call, struct dk_session *s);

/* ---- archive.c --------------------------------------------------------- */

int dk_push_archive(atp_call *call, void *session, const char *dest);
int dk_pull_archive(atp_call *call, void *session);

#endif /* ATP_DOCKER_DK_H */
