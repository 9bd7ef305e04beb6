/*
 * fuzz/fuzz.h - what the fuzz targets share: the libFuzzer entry points,
 * a cursor that takes typed pieces off an input, and the stub host table
 * that plugin targets run against (fuzz/host.c).
 *
 * Every target is built twice over: with clang's -fsanitize=fuzzer when
 * configured with --enable-fuzzing, else with the normal compiler and
 * fuzz/driver.c, which replays files through the same entry point so
 * that `make check` runs the corpus and the regression inputs.
 */
#ifndef ATP_FUZZ_H
#define ATP_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "atp/plugin.h"

/* Called once before the first input; may be a no-op. */
int LLVMFuzzerInitialize(int *argc, char ***argv);
/* Run one input; always returns 0. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Abort with a message: an oracle's verdict that libFuzzer records. */
void fuzz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2),
                                                    noreturn));

/*
 * An exec that returned 0 filled @out as the ABI says: an exit code of 0
 * to 255 and no signal, or -1 and the signal (1 to 64) that ended it.
 */
void fuzz_check_outcome(const atp_exec_outcome *out);

/* ---- taking an input apart ---------------------------------------------- */

struct fz {
    const uint8_t *p;
    size_t n;
};

static inline unsigned fz_u8(struct fz *f)
{
    if (f->n == 0)
        return 0;
    f->n--;
    return *f->p++;
}

static inline unsigned fz_u16(struct fz *f)
{
    unsigned hi = fz_u8(f);

    return hi << 8 | fz_u8(f);
}

/* Up to @want bytes; returns how many, *@out pointing at them. */
static inline size_t fz_bytes(struct fz *f, size_t want, const uint8_t **out)
{
    if (want > f->n)
        want = f->n;
    *out = f->p;
    f->p += want;
    f->n -= want;
    return want;
}

/*
 * The next piece up to the separator "\n~~~\n" (or the end), for inputs
 * that are a few texts one after another.  Returns 0 when nothing is left.
 */
static inline int fz_piece(struct fz *f, const uint8_t **out, size_t *len)
{
    static const char sep[] = "\n~~~\n";
    const size_t seplen = sizeof(sep) - 1;
    size_t i;

    if (f->n == 0)
        return 0;
    *out = f->p;
    for (i = 0; i + seplen <= f->n; i++)
        if (f->p[i] == '\n' && memcmp(f->p + i, sep, seplen) == 0)
            break;
    if (i + seplen > f->n) {
        *len = f->n;
        f->p += f->n;
        f->n = 0;
    } else {
        *len = i;
        f->p += i + seplen;
        f->n -= i + seplen;
    }
    return 1;
}

/* ---- the stub host (fuzz/host.c) ----------------------------------------- */

/* The table handed to plugins; its functions are fuzz_host_*. */
extern const atp_host_api fuzz_host;

/* What the stub answers; fuzz_host_reset() restores the defaults. */
struct fuzz_host_state {
    const char *const *config; /* "key", "value" pairs, NULL-terminated */
    int64_t deadline_ns;       /* deadline_ns() (0: none) */
    int virtual_clock;         /* now_ns() is clock_ns, moved by hand */
    int64_t clock_ns;
    int cancel_after_output;   /* output() n times, then ATP_E_CANCELLED */
    int due_step;              /* ABI 1.2 exec_due(): actions said so far */
    int64_t exited_ns;         /* ...and when the command was seen to exit */
    uint64_t output_bytes, events, created, removed;
    char error[1024];          /* the last set_error() text */
    int error_code;
};

extern struct fuzz_host_state fuzz_hs;

void fuzz_host_reset(void);

/* now_ns() as the host says it: virtual or CLOCK_MONOTONIC. */
int64_t fuzz_host_now(void);

/* Move the virtual clock on by @ns (when it is in use). */
void fuzz_clock_advance(int64_t ns);

/*
 * A directory under $TMPDIR (else /dev/shm, else /tmp) for this process,
 * made on first use and removed at exit.
 */
const char *fuzz_tmpdir(void);

/* Remove @path and everything below it without following links. */
void fuzz_rmtree(const char *path);

#endif /* ATP_FUZZ_H */
