/*
 * plugins/modal/util.h - small helpers of the Modal plugin: ids, base64,
 * percent-decoding, JWT expiry, string vectors.
 */
#ifndef MODAL_UTIL_H
#define MODAL_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Write a random (version 4) UUID, 36 characters and a NUL, to @out. */
void modal__uuid4(char out[37]);

/*
 * Decode base64 (standard or URL alphabet, padded or not) of @in (@len
 * bytes) into a new buffer; *@out_len gets its size.  NULL on bad input
 * or no memory.  The caller frees it.
 */
unsigned char *modal__base64_decode(const char *in, size_t len,
                                    size_t *out_len);

/* Decode %XX escapes of @s in place (grpc-message). */
void modal__percent_decode(char *s);

/*
 * The "exp" claim (seconds since the epoch) of a JWT, without verifying
 * it.  Returns 0 and sets *@exp; ATP_E_INVAL when @jwt is not three
 * base64url parts or its payload not a JSON object; 0 with *@exp = 0 when
 * the claim is missing.
 */
int modal__jwt_exp(const char *jwt, int64_t *exp);

/* Wall clock in seconds since the epoch. */
int64_t modal__wall_s(void);

/* Copy @src into @dst of @cap bytes, truncating; always terminated. */
void modal__copy(char *dst, size_t cap, const char *src);

/*
 * Copy an id Modal gave into @dst of @cap bytes.  Ids are opaque (V2
 * sandboxes have other shapes than V1's sb- + 22 characters): nothing is
 * assumed but that one fits.  Returns 0, or -1 with @dst empty when @src
 * is empty or too long; an id is never truncated.
 */
int modal__copy_id(char *dst, size_t cap, const char *src);

/* A NULL-terminated vector of strings that owns them. */
typedef struct modal__strv {
    char **v;
    size_t n, cap;
} modal__strv;

/* Append a copy of the formatted string; 0 or ATP_E_NOMEM. */
int modal__strv_addf(modal__strv *sv, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Free the strings and the vector, leaving it empty. */
void modal__strv_free(modal__strv *sv);

#endif /* MODAL_UTIL_H */
