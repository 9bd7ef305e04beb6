/*
 * plugins/modal/ready.c - the first contact with a new sandbox's command
 * router: wait until it answers, then make the workdir.
 *
 * Cold start.  SandboxGetTaskId names the sandbox's task as soon as it is
 * scheduled, but its router may answer only much later: the worker pages
 * a large image (Lean and Mathlib) in first.  The Python SDK retries the
 * connection to the router for about 5 minutes "because the sandbox may
 * take a long time to start on the worker": 34 attempts of 10 s at most,
 * 1 s apart doubling to 10 s, 310 s in all (_connect_channel in
 * py/modal/_utils/task_command_router_client.py).  Here that window is
 * router_ready_timeout_s (310 s by default), inside the session's
 * provision deadline; every attempt that finds the router not answering
 * is a "sandbox_waiting" event, a warning says so once after 30 s, and a
 * sandbox that died meanwhile ends the wait at once.  Past the window the
 * open fails with ATP_E_TIMEOUT (infra_timeout), and session_open
 * terminates the sandbox.
 *
 * The workdir.  The sandbox definition names no workdir (nothing says
 * Modal creates one), so the first command is `mkdir -p -- WORKDIR` run
 * from "/", as the seed did before its push; every later command runs in
 * the workdir, which then exists.  That command is also the probe of the
 * router: TaskExecStart with one exec id for every attempt, so a start
 * that worked but whose answer was lost is not repeated.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "modal.h"

#define ATTEMPT_MS 10000   /* one try to reach the router (the SDK's) */
#define FIRST_DELAY_MS 1000
#define MAX_DELAY_MS 10000
#define NOTICE_AFTER_S 30  /* then a warning says what is going on */
#define WAIT_CALL_MS 60000 /* one TaskExecWait long-poll */

typedef Modal__TaskCommandRouter__TaskExecStartRequest start_req;
typedef Modal__TaskCommandRouter__TaskExecWaitRequest wait_req;
typedef Modal__TaskCommandRouter__TaskExecWaitResponse wait_resp;

static const modal__retry one_try = {0, 0, 0, 0, 0, 0};

/*
 * Start `mkdir -p -- WORKDIR` from "/": one attempt.  The path is given
 * relative to "/", where it runs: the same directory, and a test server
 * that runs commands under a root of its own makes it there too.
 */
static int start_mkdir(struct modal_session *s, const modal__ctl *ctl,
                       const char *exec_id, modal__status *st)
{
    char *rel = s->workdir + strspn(s->workdir, "/");
    char *argv[] = {"mkdir", "-p", "--", rel[0] ? rel : "."};
    start_req req = MODAL_TCR(TASK_EXEC_START_REQUEST__INIT);
    modal__router_opts o = {&one_try, ATTEMPT_MS, 0};
    ProtobufCMessage *resp = NULL;
    int rc;

    req.task_id = s->task_id;
    req.exec_id = (char *)exec_id;
    req.command_args = argv;
    req.n_command_args = 4;
    req.opt_workdir_case =
        MODAL_TCR(TASK_EXEC_START_REQUEST__OPT_WORKDIR_WORKDIR);
    req.workdir = "/";
    rc = modal__router_call_with(s, ctl, &o, "TaskExecStart", &req.base,
                                 MODAL_TCR_DESC(task_exec_start_response),
                                 &resp, st);
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

/* Its exit status: 0 with *@code (128 + N for a signal), or a failure. */
static int wait_mkdir(struct modal_session *s, const modal__ctl *ctl,
                      const char *exec_id, int *code, modal__status *st)
{
    wait_req req = MODAL_TCR(TASK_EXEC_WAIT_REQUEST__INIT);
    modal__router_opts o = {&modal__retry_router, WAIT_CALL_MS, 1};

    req.task_id = s->task_id;
    req.exec_id = (char *)exec_id;
    for (;;) {
        wait_resp *w = NULL;
        int rc = modal__router_call_with(
            s, ctl, &o, "TaskExecWait", &req.base,
            MODAL_TCR_DESC(task_exec_wait_response), (ProtobufCMessage **)&w,
            st);

        if (rc == ATP_E_TIMEOUT && ctl->deadline_ns &&
            modal__host->now_ns() < ctl->deadline_ns)
            continue; /* the long-poll ran out: ask again */
        if (rc)
            return rc;
        rc = 0;
        if (w->exit_status_case ==
            MODAL_TCR(TASK_EXEC_WAIT_RESPONSE__EXIT_STATUS_CODE)) {
            *code = w->code;
        } else if (w->exit_status_case ==
                   MODAL_TCR(TASK_EXEC_WAIT_RESPONSE__EXIT_STATUS_SIGNAL)) {
            *code = 128 + w->signal;
        } else {
            st->code = MODAL_INTERNAL;
            snprintf(st->message, sizeof(st->message),
                     "the router sent no exit status");
            rc = ATP_E_BACKEND;
        }
        protobuf_c_message_free_unpacked(&w->base, NULL);
        return rc;
    }
}

/* Tell the user, and the events, that the router does not answer yet. */
static void report_wait(atp_call *call, struct modal_session *s, int attempt,
                        double waited_s, int64_t delay_ms,
                        const modal__status *st, int *noticed)
{
    double window_s = (double)s->be->router_ready_ms / 1000.0;
    atp_field f[5] = {
        {"sandbox_id", ATP_FIELD_STR, s->sandbox_id, 0, 0.0},
        {"attempt", ATP_FIELD_INT, NULL, attempt, 0.0},
        {"seconds", ATP_FIELD_DOUBLE, NULL, 0, waited_s},
        {"window_s", ATP_FIELD_DOUBLE, NULL, 0, window_s},
        {"reason", ATP_FIELD_STR, st->message, 0, 0.0},
    };

    modal__host->event(call, "sandbox_waiting", f, 5);
    modal__host->log(call, ATP_LOG_INFO, "sandbox %s: its command router "
                     "does not answer yet (%s: %s); trying again in %lld ms",
                     s->sandbox_id, modal__code_name(st->code), st->message,
                     (long long)delay_ms);
    if (!*noticed && waited_s >= NOTICE_AFTER_S) {
        *noticed = 1;
        modal__host->log(call, ATP_LOG_WARN, "sandbox %s is still starting "
                         "after %.0f s (a large image takes minutes the "
                         "first time); waiting up to %.0f s "
                         "(router_ready_timeout_s)", s->sandbox_id,
                         waited_s, window_s);
    }
}

/* Could the router come up still?  Then 0; else a failure reported. */
static int not_ready(atp_call *call, struct modal_session *s,
                     const modal__ctl *ctl, int rc, const modal__status *st)
{
    char why[256];

    if (rc == ATP_E_CANCELLED || rc == ATP_E_NOMEM)
        return modal__fail(call, rc, st, ATP_E_PROVISION,
                           "waiting for the sandbox's command router");
    if (rc == ATP_E_TIMEOUT && ctl->deadline_ns &&
        modal__host->now_ns() >= ctl->deadline_ns)
        return rc; /* the window: the caller says so */
    if (rc != ATP_E_TIMEOUT && !modal__retryable(st->code))
        return modal__fail(call, rc, st, ATP_E_PROVISION,
                           "reaching the sandbox's command router");
    if (modal__sandbox_finished(s, ctl, why, sizeof(why)) == 1)
        return modal__error(call, ATP_E_PROVISION, "sandbox %s ended "
                            "before its command router answered: %s",
                            s->sandbox_id, why);
    return 0;
}

int modal__sandbox_ready(atp_call *call, struct modal_session *s,
                         const modal__ctl *ctl)
{
    modal__ctl wctl = modal__ctl_within(ctl, s->be->router_ready_ms, 1);
    int64_t t0 = modal__host->now_ns(), delay = FIRST_DELAY_MS;
    int attempt, noticed = 0, code = 0, rc;
    char exec_id[37];
    modal__status st;

    memset(&st, 0, sizeof(st));
    modal__uuid4(exec_id);
    for (attempt = 1;; attempt++) {
        int64_t now;

        rc = start_mkdir(s, &wctl, exec_id, &st);
        if (rc == 0)
            break;
        if ((rc = not_ready(call, s, &wctl, rc, &st)) != 0)
            break;
        now = modal__host->now_ns();
        if (wctl.deadline_ns && now + delay * 1000000 >= wctl.deadline_ns) {
            rc = ATP_E_TIMEOUT;
            break;
        }
        report_wait(call, s, attempt, (double)(now - t0) / 1e9, delay, &st,
                    &noticed);
        if ((rc = modal__sleep(s->conn, &wctl, delay)) != 0)
            break;
        delay = delay * 2 > MAX_DELAY_MS ? MAX_DELAY_MS : delay * 2;
    }
    if (rc == ATP_E_TIMEOUT) {
        int window = ctl->deadline_ns == 0 ||
                     t0 + s->be->router_ready_ms * 1000000 <= ctl->deadline_ns;

        return modal__error(call, ATP_E_TIMEOUT, "sandbox %s did not become "
                            "reachable: its command router still did not "
                            "answer after %.0f s (%s: %s), %s; a large "
                            "image can take minutes to start: raise "
                            "router_ready_timeout_s", s->sandbox_id,
                            (double)(modal__host->now_ns() - t0) / 1e9,
                            modal__code_name(st.code),
                            st.message[0] ? st.message : "no answer",
                            window ? "the router_ready_timeout_s window"
                                   : "the provision deadline "
                                     "(provision_timeout_s)");
    }
    if (rc)
        return rc == ATP_E_CANCELLED ? modal__error(call, rc, "cancelled "
                                                    "while waiting for the "
                                                    "sandbox to start")
                                     : rc;
    if (attempt > 1) {
        atp_field f[2] = {
            {"sandbox_id", ATP_FIELD_STR, s->sandbox_id, 0, 0.0},
            {"seconds", ATP_FIELD_DOUBLE, NULL, 0,
             (double)(modal__host->now_ns() - t0) / 1e9},
        };

        modal__host->event(call, "sandbox_reachable", f, 2);
    }
    rc = wait_mkdir(s, ctl, exec_id, &code, &st);
    if (rc)
        return modal__fail(call, rc, &st, ATP_E_PROVISION,
                           "creating the workdir in the sandbox");
    if (code != 0)
        return modal__error(call, ATP_E_PROVISION, "creating the workdir "
                            "%s in sandbox %s failed: `mkdir -p` exited "
                            "%d%s", s->workdir, s->sandbox_id, code,
                            code == 127 ? " (the image has no mkdir)"
                                        : " (can the image's user write "
                                          "there?)");
    return 0;
}
