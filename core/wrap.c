/*
 * core/wrap.c - command wrapping: what actually runs in the sandbox.
 *
 * A command is POSIX sh text.  The core runs it as
 *     /bin/sh -c SCRIPT atp COMMAND
 * where SCRIPT announces the shell's process group on stdout (for a
 * backend that signals the group from outside, ATP_CAP_GROUP_SIGNALS),
 * points stdin at /dev/null when the command gets no stdin (a backend
 * whose exec always opens a pipe, as Modal's does, cannot then leave it
 * waiting for an EOF that never comes), links the warm cache (when
 * configured) and, unless the backend delivers the kill schedule itself,
 * runs
 *     exec timeout -k GRACE SECS /bin/sh -c "$1"
 * so that the command text is passed as one argument and never re-quoted.
 * `timeout -k` is the form both GNU coreutils and BusyBox accept.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int atp__sh_plain_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || strchr("_@%+=:,./-", c) != NULL;
}

int atp__sh_quote_append(atp__buf *b, const char *s)
{
    const char *p;
    int plain = *s != '\0';

    for (p = s; *p && plain; p++)
        plain = atp__sh_plain_char(*p);
    if (plain)
        return atp__buf_puts(b, s);
    if (atp__buf_puts(b, "'"))
        return ATP_E_NOMEM;
    for (p = s; *p; p++) {
        if (*p == '\'') {
            if (atp__buf_puts(b, "'\\''"))
                return ATP_E_NOMEM;
        } else if (atp__buf_append(b, p, 1)) {
            return ATP_E_NOMEM;
        }
    }
    return atp__buf_puts(b, "'");
}

ATP_EXTERN char *atp_shell_join(const char *const *argv)
{
    atp__buf b = ATP__BUF_INIT;
    size_t i;

    for (i = 0; argv && argv[i]; i++) {
        if ((i && atp__buf_puts(&b, " ")) ||
            atp__sh_quote_append(&b, argv[i])) {
            atp__buf_release(&b);
            return NULL;
        }
    }
    return atp__buf_detach(&b);
}

/* Words the shell runs itself: `exec WORD` would not find them. */
static int shell_only(const char *word)
{
    static const char *const words[] = {
        "!", ".", ":", "[[", "{", "}", "alias", "bg", "break", "case", "cd",
        "command", "continue", "do", "done", "elif", "else", "esac", "eval",
        "exec", "exit", "export", "fc", "fg", "fi", "for", "getopts", "hash",
        "if", "jobs", "local", "read", "readonly", "return", "set", "shift",
        "source", "then", "times", "trap", "type", "ulimit", "umask",
        "unalias", "unset", "until", "wait", "while",
    };
    size_t i;

    for (i = 0; i < ATP__ARRAY_SIZE(words); i++)
        if (strcmp(word, words[i]) == 0)
            return 1;
    return strchr(word, '=') != NULL; /* an assignment */
}

ATP_EXTERN char *atp_shell_exec_join(const char *const *argv)
{
    char *joined = atp_shell_join(argv), *out;
    size_t len;

    if (joined == NULL || argv == NULL || argv[0] == NULL ||
        shell_only(argv[0]))
        return joined;
    len = strlen(joined) + sizeof("exec ");
    out = malloc(len);
    if (out)
        snprintf(out, len, "exec %s", joined);
    free(joined);
    return out;
}

/* Whole seconds, rounded up, at least 1. */
static long long ceil_s(int64_t ms)
{
    long long s = (ms + 999) / 1000;

    return s < 1 ? 1 : s;
}

int atp__wrap(struct atp__wrapped *w, const char *command,
              const char *warm_cache, int in_sandbox_timeout,
              int announce_pgid, int64_t timeout_ms, int64_t grace_ms,
              int no_stdin)
{
    atp__buf b = ATP__BUF_INIT;
    int n = 0;
    int with_timeout = in_sandbox_timeout && timeout_ms > 0;

    memset(w, 0, sizeof(*w));
    w->argv[n++] = "/bin/sh";
    w->argv[n++] = "-c";
    if (warm_cache == NULL && !with_timeout && !announce_pgid) {
        w->argv[n++] = command;
        w->argv[n] = NULL;
        return 0;
    }
    if (atp__buf_puts(&b, no_stdin ? "exec </dev/null\n" : ""))
        goto nomem;
    /* The group to signal, for a backend that signals it from outside;
     * the core takes this line off stdout (exec.c). */
    if (announce_pgid &&
        atp__buf_puts(&b, "printf '\\036atp-pgid %s\\n' $$\n"))
        goto nomem;
    if (warm_cache) {
        if (atp__buf_puts(&b, "if [ -e ") ||
            atp__sh_quote_append(&b, warm_cache) ||
            atp__buf_puts(&b,
                   " ] && { [ -L .lake ] || [ ! -e .lake ]; }; then "
                   "ln -sfn ") ||
            atp__sh_quote_append(&b, warm_cache))
            goto nomem;
        if (atp__buf_puts(&b, " .lake; fi\n"))
            goto nomem;
    }
    if (with_timeout) {
        char line[192];

        snprintf(w->timeout_arg, sizeof(w->timeout_arg), "%lld",
                 ceil_s(timeout_ms));
        snprintf(w->grace_arg, sizeof(w->grace_arg), "%lld",
                 ceil_s(grace_ms));
        if (atp__buf_puts(&b,
                   "command -v timeout >/dev/null 2>&1 || { echo 'atp: the "
                   "sandbox has no timeout(1): install coreutils or busybox "
                   "in the image' >&2; exit 125; }\n"))
            goto nomem;
        snprintf(line, sizeof(line),
                 "exec timeout -k %s %s /bin/sh -c \"$1\"", w->grace_arg,
                 w->timeout_arg);
        if (atp__buf_puts(&b, line))
            goto nomem;
    } else if (atp__buf_puts(&b, "exec /bin/sh -c \"$1\"")) {
        goto nomem;
    }
    w->script = b.p;
    w->argv[n++] = w->script;
    w->argv[n++] = "atp";
    w->argv[n++] = command;
    w->argv[n] = NULL;
    return 0;
nomem:
    atp__buf_release(&b);
    return ATP_E_NOMEM;
}

void atp__wrapped_release(struct atp__wrapped *w)
{
    free(w->script);
    w->script = NULL;
}
