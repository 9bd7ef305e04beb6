/*
 * plugins/docker/archive.c - the workdir into and out of a container
 * through the daemon (transfer = copy), for a daemon whose filesystem is
 * not the host's.
 *
 * The core produces and consumes the tar streams (host->input() for a
 * push, host->output() for a pull); this file only carries them: PUT
 * /containers/{id}/archive streams the upload as it is read, GET streams
 * the download as it arrives.  Nothing is held whole in memory.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dk.h"

struct io {
    atp_call *call;
    int failed;
};

static long push_read(void *ctx, void *buf, size_t len)
{
    struct io *io = ctx;
    long n = dk_host->input(io->call, buf, len);

    if (n < 0) {
        io->failed = 1;
        return dk_host->set_error(io->call, (int)n == ATP_E_CANCELLED
                                                ? ATP_E_CANCELLED
                                                : ATP_E_TRANSFER,
                                  "reading the workdir's tar stream failed");
    }
    return n;
}

static int pull_write(void *ctx, const void *buf, size_t len)
{
    struct io *io = ctx;
    int rc = dk_host->output(io->call, ATP_STDOUT, buf, len);

    if (rc) {
        io->failed = 1;
        return dk_host->set_error(io->call, rc == ATP_E_CANCELLED
                                                ? ATP_E_CANCELLED
                                                : ATP_E_TRANSFER,
                                  "the core stopped taking the workdir's "
                                  "tar stream");
    }
    return 0;
}

static int archive_path(atp_call *call, struct dk_session *s,
                        const char *dir, const char *suffix, char *path,
                        size_t len, const char *extra)
{
    char full[4096];
    char *esc;

    snprintf(full, sizeof(full), "%s%s", dir, suffix);
    esc = curl_easy_escape(s->http.easy, full, 0);
    if (esc == NULL)
        return dk_host->set_error(call, ATP_E_NOMEM, "out of memory");
    snprintf(path, len, "/containers/%s/archive?path=%s%s", s->id, esc,
             extra);
    curl_free(esc);
    return 0;
}

/* A destination other than the workdir: make it, owned by the user. */
static int make_dest(atp_call *call, struct dk_session *s, const char *dest)
{
    const char *argv[] = {"/bin/sh", "-c",
                          "mkdir -p -- \"$0\" && chown -- \"$1\" \"$0\"", dest,
                          s->user, NULL};
    int code = -1, rc = dk_exec_root(call, s, argv, &code);

    if (rc == 0 && code != 0)
        rc = dk_host->set_error(call, ATP_E_TRANSFER, "cannot create %s in "
                                "the container (exit %d)", dest, code);
    return rc;
}

int dk_push_archive(atp_call *call, void *session, const char *dest)
{
    struct dk_session *s = session;
    struct dk_req rq = {0};
    struct dk_resp rs;
    struct io io = {call, 0};
    char path[8192];
    int rc;

    if (s->id[0] == '\0')
        return dk_host->set_error(call, ATP_E_INVAL, "the session has no "
                                  "container to copy into");
    if (dest && strcmp(dest, s->sb_workdir) != 0 &&
        (rc = make_dest(call, s, dest)) != 0)
        return rc;
    /* Owners come from the tar headers, as with a bind mount (not
     * copyUIDGID: docker 20.10 looks a uid:gid user up on the host). */
    if ((rc = archive_path(call, s, dest ? dest : s->sb_workdir, "", path,
                           sizeof(path), "")) != 0)
        return rc;
    rq.method = "PUT";
    rq.path = path;
    rq.content_type = "application/x-tar";
    rq.upload = push_read;
    rq.upload_ctx = &io;
    rq.streaming = 1;
    if ((rc = dk_http_do(&s->http, call, &rq, &rs)) != 0)
        return rc;
    if (rs.status != 200)
        rc = dk_http_fail(call, ATP_E_TRANSFER, &rs,
                          "copy the workdir into the container", NULL);
    dk_resp_free(&rs);
    return rc;
}

int dk_pull_archive(atp_call *call, void *session)
{
    struct dk_session *s = session;
    struct dk_req rq = {0};
    struct dk_resp rs;
    struct io io = {call, 0};
    char path[8192];
    int rc;

    if (s->id[0] == '\0')
        return dk_host->set_error(call, ATP_E_INVAL, "the session has no "
                                  "container to copy from");
    /* "DIR/." names the entries ./a, ./sub/b: relative to the workdir. */
    if ((rc = archive_path(call, s, s->sb_workdir, "/.", path, sizeof(path),
                           "")) != 0)
        return rc;
    rq.method = "GET";
    rq.path = path;
    rq.download = pull_write;
    rq.download_ctx = &io;
    rq.streaming = 1;
    if ((rc = dk_http_do(&s->http, call, &rq, &rs)) != 0)
        return rc;
    if (rs.status != 200)
        rc = dk_http_fail(call, ATP_E_TRANSFER, &rs,
                          "copy the workdir out of the container", NULL);
    dk_resp_free(&rs);
    return rc;
}
