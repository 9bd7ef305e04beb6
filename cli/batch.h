/*
 * cli/batch.h - atp-run batch.
 */
#ifndef ATP_CLI_BATCH_H
#define ATP_CLI_BATCH_H

#include <stddef.h>
#include <stdio.h>

/* The options of atp-run batch, as cli/commands.def names them. */
struct cli_batch_args {
    const char *config, *backend;
    const char *out_dir;         /* --out */
    const char *output;          /* -o */
    const char *resume;          /* --resume */
    unsigned jobs;               /* 0: the default */
    double rate;                 /* 0: the backend's create_rate */
    int retries;                 /* 0: the default; -1: none */
    long long inline_limit;      /* -1: the default */
    double timeout_s;            /* 0: the configured budget */
    int progress;                /* -1: when stderr is a terminal */
    const char *const *env;      /* -e KEY=VALUE strings, borrowed */
    size_t n_env;
};

/*
 * The values of -j, --rate, --retries and --inline into @out: 0, or -1
 * after saying on stderr what is expected.
 */
int cli_batch_jobs(const char *arg, unsigned *out);
int cli_batch_rate(const char *arg, double *out);
int cli_batch_retries(const char *arg, int *out);
int cli_batch_inline(const char *arg, long long *out);

/* What atp-run batch --help adds to the options: the attempts file, the
 * result lines and the exit status. */
void cli_batch_notes(FILE *f);

/*
 * atp-run batch with @args over @operands (NULL-terminated: the attempts
 * file, or "-"): its exit status.
 */
int cli_batch(const struct cli_batch_args *args, char **operands);

#endif
