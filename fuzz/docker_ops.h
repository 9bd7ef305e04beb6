/*
 * fuzz/docker_ops.h - the docker plugin's API layer driven by a fuzz
 * input, shared by docker_http_fuzzer.c (answers from a fake daemon on a
 * unix socket, through libcurl) and docker_json_fuzzer.c (answers handed
 * straight to the JSON handling, no transport).
 */
#ifndef ATP_FUZZ_DOCKER_OPS_H
#define ATP_FUZZ_DOCKER_OPS_H

#include "../plugins/docker/dk.h"

/* How many operations fuzz_docker_op() knows (op is taken modulo this). */
#define FUZZ_DOCKER_OPS 16

/* Load the plugin (its entry point) against the stub host, once. */
void fuzz_docker_init(void);

/*
 * Run operation @op, an API call, against the daemon behind @h, setting
 * the stub host's deadline as the operation needs.  With @spec NULL the
 * daemon is real to libcurl (a socket): the wait for a removal goes
 * through dk_http_begin/poll, and the last two operations are the
 * hijacked stream of an exec and a whole command run by dk_exec() in a
 * session's container.  Otherwise only dk_http_do() answers
 * (docker_json): the wait's answer comes from it and the last two
 * operations parse @spec as a socket endpoint.
 */
void fuzz_docker_op(unsigned op, struct dk_http *h, const char *spec);

#endif /* ATP_FUZZ_DOCKER_OPS_H */
