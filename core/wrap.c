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
 *
 * For a backend that cannot learn what a command used
 * (ATP_CAP_WRAPPER_USAGE) the command does not replace the wrapper but
 * runs as its child; after it an end record goes on stdout and what
 * wait4() says of it (its process tree's CPU time and peak memory) on
 * stderr, each one line after a record separator, which the core takes
 * off (exec.c, atp__exec_record_filter()); they also tell the core that
 * the output has come as far as the command's exit.
 * wait4() needs a program: Python's os.wait4(), when the sandbox has a
 * python3 in /usr/local/bin or /usr/bin; it ends as the command did, by
 * the same signal.  Without one the shell waits, and its children's CPU
 * time in /proc/$$/stat is the CPU time (no peak memory); its status is
 * then 128+N for a signal, which the report says.
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

/*
 * The measurer: $1... is the command's argv, run as a child with the
 * environment the wrapper was given (/proc/self/environ: Python may have
 * changed its own, LC_CTYPE), TERM and INT as they were (the group's
 * signals are the command's: this one waits on), SIGPIPE and SIGXFSZ back
 * to their defaults.  The records are "\036atp-end" on stdout and
 * "\036atp-usage CPU_NS PEAK_BYTES" on stderr.
 * No single quote: it goes in one.
 */
static const char measure_py[] =
    "import os,signal as S,resource as R,sys\n"
    "Z=S.signal\n"
    "e=os.environ\n"
    "try:\n"
    " with open(\"/proc/self/environ\",\"rb\") as f:\n"
    "  e=dict(v.split(b\"=\",1) for v in f.read().split(b\"\\0\") "
    "if b\"=\" in v)\n"
    "except OSError:\n"
    " pass\n"
    "h=[(n,S.getsignal(n)) for n in (S.SIGTERM,S.SIGINT)]\n"
    "for n,_ in h:\n"
    " Z(n,S.SIG_IGN)\n"
    "p=os.fork()\n"
    "if p==0:\n"
    " try:\n"
    "  for n,o in h:\n"
    "   Z(n,S.SIG_IGN if o==S.SIG_IGN else S.SIG_DFL)\n"
    "  Z(S.SIGPIPE,S.SIG_DFL)\n"
    "  Z(S.SIGXFSZ,S.SIG_DFL)\n"
    "  os.execvpe(sys.argv[1],sys.argv[1:],e)\n"
    " finally:\n"
    "  os._exit(127)\n"
    "w,u=os.wait4(p,0)[1:]\n"
    "try:\n"
    " os.write(1,b\"\\036atp-end\\n\")\n"
    "except OSError:\n"
    " pass\n"
    "try:\n"
    " os.write(2,b\"\\036atp-usage %d %d\\n\"%(round((u.ru_utime+"
    "u.ru_stime)*1e9),u.ru_maxrss*1024))\n"
    "except OSError:\n"
    " pass\n"
    "if os.WIFSIGNALED(w):\n"
    " n=os.WTERMSIG(w)\n"
    " R.setrlimit(R.RLIMIT_CORE,(0,0))\n"
    " if n!=S.SIGKILL:\n"
    "  Z(n,S.SIG_DFL)\n"
    " os.kill(os.getpid(),n)\n"
    " os._exit(128+n)\n"
    "os._exit(os.WEXITSTATUS(w))\n";

/*
 * Without python3: the shell's children's user and system time (fields
 * 16 and 17 of /proc/$$/stat, in USER_HZ, 100 on Linux) before and after
 * the command, whose argv follows; "x" says the status is the shell's.
 */
static const char measure_sh_head[] =
    "s=$1; a=; { read -r a </proc/$$/stat; } 2>/dev/null; "
    "trap : TERM INT; ";
static const char measure_sh_tail[] =
    "; c=$?; trap - TERM INT; b=; { read -r b </proc/$$/stat; } "
    "2>/dev/null; u=-1; if [ -n \"$a\" ] && [ -n \"$b\" ]; then "
    "set -- ${a##*) }; u=$((${14} + ${15})); set -- ${b##*) }; "
    "u=$(((${14} + ${15} - u) * 10000000)); fi; "
    "printf '\\036atp-end\\n'; printf '\\036atp-usage %s -1 x\\n' \"$u\" "
    ">&2; exit $c";

/* The command's argv in the script, for the measurer: "$1" is its text
 * (@cmd_ref: "$1", or "$s" once the shell's measure saved it). */
static int append_command(atp__buf *b, const struct atp__wrapped *w,
                          int with_timeout, const char *cmd_ref)
{
    if (with_timeout &&
        (atp__buf_puts(b, "timeout -k ") ||
         atp__buf_puts(b, w->grace_arg) || atp__buf_puts(b, " ") ||
         atp__buf_puts(b, w->timeout_arg) || atp__buf_puts(b, " ")))
        return ATP_E_NOMEM;
    if (atp__buf_puts(b, "/bin/sh -c \"") || atp__buf_puts(b, cmd_ref) ||
        atp__buf_puts(b, "\""))
        return ATP_E_NOMEM;
    return 0;
}

static int append_measured(atp__buf *b, const struct atp__wrapped *w,
                           int with_timeout)
{
    if (atp__buf_puts(b, "for p in /usr/local/bin/python3 /usr/bin/python3; "
                         "do [ -x \"$p\" ] && exec \"$p\" -I -S -c '") ||
        atp__buf_puts(b, measure_py) || atp__buf_puts(b, "' ") ||
        append_command(b, w, with_timeout, "$1") ||
        atp__buf_puts(b, "; done\n") || atp__buf_puts(b, measure_sh_head) ||
        append_command(b, w, with_timeout, "$s") ||
        atp__buf_puts(b, measure_sh_tail))
        return ATP_E_NOMEM;
    return 0;
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
    return atp__wrap_measured(w, command, warm_cache, in_sandbox_timeout,
                              announce_pgid, timeout_ms, grace_ms, no_stdin,
                              0);
}

int atp__wrap_measured(struct atp__wrapped *w, const char *command,
                       const char *warm_cache, int in_sandbox_timeout,
                       int announce_pgid, int64_t timeout_ms,
                       int64_t grace_ms, int no_stdin, int measure)
{
    atp__buf b = ATP__BUF_INIT;
    int n = 0;
    int with_timeout = in_sandbox_timeout && timeout_ms > 0;

    memset(w, 0, sizeof(*w));
    w->argv[n++] = "/bin/sh";
    w->argv[n++] = "-c";
    if (warm_cache == NULL && !with_timeout && !announce_pgid && !measure) {
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
        if (measure) {
            if (append_measured(&b, w, 1))
                goto nomem;
            goto done;
        }
        snprintf(line, sizeof(line),
                 "exec timeout -k %s %s /bin/sh -c \"$1\"", w->grace_arg,
                 w->timeout_arg);
        if (atp__buf_puts(&b, line))
            goto nomem;
    } else if (measure) {
        if (append_measured(&b, w, 0))
            goto nomem;
    } else if (atp__buf_puts(&b, "exec /bin/sh -c \"$1\"")) {
        goto nomem;
    }
done:
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
