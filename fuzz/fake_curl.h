/*
 * fuzz/fake_curl.h - a libcurl that answers from a script (fake_curl.c),
 * linked into the modal targets instead of the real one.
 */
#ifndef ATP_FUZZ_FAKE_CURL_H
#define ATP_FUZZ_FAKE_CURL_H

#include <stddef.h>
#include <stdint.h>

/*
 * Answer the calls started from now on with the answers in @data (the
 * format is in fake_curl.c); a call past the last answer never completes.
 * The bytes must stay valid until fake_curl_end().
 */
void fake_curl_begin(const uint8_t *data, size_t size);

/* The script is done with: check that every call was cleaned up. */
void fake_curl_end(void);

/* How many calls were started since fake_curl_begin(). */
unsigned fake_curl_calls(void);

#endif /* ATP_FUZZ_FAKE_CURL_H */
