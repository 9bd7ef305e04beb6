/*
 * cli/args.h - what atp-run's subcommands parse alike.
 */
#ifndef ATP_CLI_ARGS_H
#define ATP_CLI_ARGS_H

/* Longest budget accepted: far beyond any run, and safe in milliseconds
 * and nanoseconds as 64-bit integers. */
#define CLI_MAX_SECONDS 1e9

/* Shortest budget accepted: under 1 ms it would round to 0, "none". */
#define CLI_MIN_SECONDS 0.001

/*
 * A budget ("30", "1.5", "500ms", "2m", "1h") into seconds: 0 (the
 * configured budget), or CLI_MIN_SECONDS to CLI_MAX_SECONDS.  Returns 0;
 * -1 for something else, -2 for a budget too small to enforce.
 */
int cli_parse_seconds(const char *s, double *out);

/* The same, with the message atp-run prints for option @opt. */
int cli_seconds_arg(const char *opt, const char *arg, double *out);

/* A variable name: [A-Za-z_][A-Za-z0-9_]*. */
int cli_env_name_ok(const char *s);

/*
 * -e KEY=VALUE as given, or -e KEY with KEY's value from atp-run's
 * environment: a new "KEY=VALUE" string, or NULL after saying why.  The
 * VALUE of KEY=VALUE is copied, then blanked in @arg (atp-run's argv):
 * every user can read /proc/PID/cmdline for as long as atp-run runs.
 */
char *cli_env_arg(char *arg);

#endif
