/*
 * cli/batch.h - atp-run batch.
 */
#ifndef ATP_CLI_BATCH_H
#define ATP_CLI_BATCH_H

/* atp-run batch ARGS (argv[0] is "batch"): its exit status. */
int cli_batch(int argc, char **argv);

#endif
