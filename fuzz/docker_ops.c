/*
 * fuzz/docker_ops.c - one call of the docker plugin's API layer per
 * input, whatever answers it (see docker_ops.h).  Every result the plugin
 * hands back (ids, lists, codes, messages) is read in full, so that a
 * dangling or unterminated one shows up under the sanitizers.
 */
#include "config.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>

#include "docker_ops.h"
#include "fuzz.h"

int atp_plugin_entry_v1(const atp_host_api *api, atp_call *call,
                        const atp_plugin_ops **ops_out);

static volatile size_t sink;

void fuzz_docker_init(void)
{
    const atp_plugin_ops *ops;

    if (atp_plugin_entry_v1(&fuzz_host, NULL, &ops) != 0)
        fuzz_fail("the docker plugin refused the host: %s", fuzz_hs.error);
}

static int to_output(void *ctx, int stream, const void *buf, size_t len)
{
    (void)ctx;
    return fuzz_host.output(NULL, stream, buf, len);
}

/* The hijacked stream of an exec start, demultiplexed to output(). */
static void hijacked(struct dk_http *h)
{
    struct dk_hijack hj;
    struct dk_resp rs;
    struct dk_demux d;
    char buf[4096];

    if (dk_hijack_open(&hj, h, NULL, "/exec/0123456789ab/start",
                       "{\"Detach\":false,\"Tty\":false}", &rs) != 0)
        return;
    sink += strlen(rs.msg);
    if (rs.status != 101 && rs.status != 200) {
        dk_hijack_close(&hj);
        return;
    }
    dk_demux_init(&d);
    for (;;) {
        long n = dk_hijack_recv(&hj, buf, sizeof(buf));

        if (n == DK_AGAIN) {
            struct pollfd p = {(int)hj.fd, POLLIN, 0};

            if (poll(&p, 1, 2000) <= 0)
                break;
            continue;
        }
        if (n <= 0 || dk_demux_feed(&d, buf, (size_t)n, to_output, NULL))
            break;
    }
    dk_demux_end(&d);
    dk_hijack_close(&hj);
}

/* A command in a session's container (the exec path), start to end. */
static void command(struct dk_http *h)
{
    static const char *const argv[] = {"sh", "-c", "echo hi", NULL};
    struct dk_backend be;
    struct dk_session s;
    atp_exec_spec spec;
    atp_exec_outcome out;

    memset(&be, 0, sizeof(be));
    be.ep = *h->ep;
    memset(&s, 0, sizeof(s));
    s.be = &be;
    s.http = *h;
    s.run_id = (char *)"fuzzrun";
    s.sb_workdir = (char *)"/workspace/wd";
    snprintf(s.id, sizeof(s.id), "0123456789ab");
    memset(&spec, 0, sizeof(spec));
    spec.struct_size = sizeof(spec);
    spec.argv = argv;
    spec.grace_ms = 100;
    spec.drain_ms = 100;
    memset(&out, 0, sizeof(out));
    out.struct_size = sizeof(out);
    out.exit_code = -7;
    fuzz_hs.due_step = 0; /* a new exec: a new kill schedule */
    fuzz_hs.exited_ns = 0;
    if (dk_exec(NULL, &s, &spec, &out) == 0)
        fuzz_check_outcome(&out);
    /* The connection is the caller's again (its handle may be new). */
    *h = s.http;
}

void fuzz_docker_op(unsigned op, struct dk_http *h, const char *spec)
{
    static const char *const argv[] = {"sh", "-c", "echo hi", NULL};
    static const char *const env[] = {"A=1", "B=two words", NULL};
    char id[72] = "", why[256], err[256];
    char **ids = NULL;
    int running = -1, code = -1, removed = -1, pending = 0, done = 0, i;
    struct dk_endpoint ep;
    struct dk_resp rs;
    struct dk_req rq;

    fuzz_hs.deadline_ns = fuzz_host_now() + 5000000000LL;
    switch (op % FUZZ_DOCKER_OPS) {
    case 0:
        dk_api_negotiate(h, NULL);
        sink += strlen(h->daemon->version);
        break;
    case 1:
        dk_api_image_exists(h, NULL, "docker.io/library/alpine:3.20");
        break;
    case 2:
        dk_api_image_pull(h, NULL, "ghcr.io/x/open-atp@sha256:0123");
        break;
    case 3:
        dk_api_network_exists(h, NULL, "atp-net");
        break;
    case 4:
        if (dk_api_create(h, NULL, "atp-fuzzrun-1", "{\"Image\":\"x\"}",
                          id) == 0 && strlen(id) > 64)
            fuzz_fail("a container id of %zu bytes", strlen(id));
        break;
    case 5:
        why[0] = '\0';
        dk_api_start(h, NULL, "0123456789ab", why, sizeof(why));
        sink += strlen(why);
        break;
    case 6:
        /* A deadline already past: one answer, no retries with sleeps. */
        fuzz_hs.deadline_ns = fuzz_host_now() - 1;
        dk_api_remove(h, NULL, "0123456789ab");
        break;
    case 7:
        dk_api_kill(h, NULL, "0123456789ab", "SIGKILL");
        break;
    case 8:
        dk_api_container_state(h, NULL, "0123456789ab", &running, &code);
        break;
    case 9:
        /* The late answer of a wait for the container's removal. */
        memset(&rq, 0, sizeof(rq));
        rq.method = "POST";
        rq.path = "/containers/0123456789ab/wait?condition=removed";
        rq.streaming = 1;
        if (spec) {
            if (dk_http_do(h, NULL, &rq, &rs) != 0)
                break;
            done = 1;
        } else {
            if (dk_http_begin(h, NULL, &rq, &rs, &pending) != 0)
                break;
            done = !pending;
            for (i = 0; !done && i < 100; i++)
                if (dk_http_poll(h, NULL, 50, &done) != 0)
                    break;
            if (!done) {
                dk_http_abandon(h);
                break;
            }
        }
        if (rs.status == 200)
            dk_api_wait_result(NULL, &rs, &code, &removed);
        dk_resp_free(&rs);
        break;
    case 10:
        if (dk_api_list(h, NULL, "{\"label\":[\"org.atp.run=fuzzrun\"]}",
                        &ids) == 0)
            for (i = 0; ids && ids[i]; i++)
                sink += strlen(ids[i]);
        dk_strv_free(ids);
        break;
    case 11:
        if (dk_api_exec_create(h, NULL, "0123456789ab", argv, env, "/w",
                               "1000:1000", 1, 0, id) == 0 &&
            strlen(id) > 64)
            fuzz_fail("an exec id of %zu bytes", strlen(id));
        break;
    case 12:
        dk_api_exec_start_detached(h, NULL, "0123456789ab");
        break;
    case 13:
        dk_api_exec_inspect(h, NULL, "0123456789ab", &running, &code);
        break;
    case 14:
        if (spec == NULL) {
            hijacked(h);
            break;
        }
        /* fall through */
    default:
        if (spec == NULL) {
            command(h);
            break;
        }
        err[0] = '\0';
        if (dk_endpoint_parse(&ep, spec, err, sizeof(err)) == 0) {
            sink += strlen(ep.base_url) + strlen(ep.host_hdr) +
                    strlen(ep.display);
            dk_endpoint_free(&ep);
        } else if (err[0] == '\0') {
            fuzz_fail("endpoint '%s' refused without a reason", spec);
        }
        break;
    }
    sink += strlen(fuzz_hs.error) + (size_t)(running + code + removed);
    if (getenv("ATP_FUZZ_DEBUG"))
        fprintf(stderr, "op %u: running %d code %d removed %d id '%s' "
                "output %llu: %s\n", op % FUZZ_DOCKER_OPS, running, code,
                removed, id, (unsigned long long)fuzz_hs.output_bytes,
                fuzz_hs.error);
}
