/*
 * tests/abi/layout_v12.c - the layout that plugin ABI 1.2 published, read
 * from the frozen header itself (tests/abi/v1.2/atp/plugin.h, found
 * beside this file, never include/atp), for test_abi_sizes to compare
 * with the header of today.
 */
#include <stddef.h>

#include "v1.2/atp/plugin.h"
#include "layout12.def"

#if ATP_PLUGIN_ABI_MAJOR != 1 || ATP_PLUGIN_ABI_MINOR != 2
#error "tests/abi/v1.2/atp/plugin.h is not the frozen 1.2 header"
#endif

/* Each struct's list names all of its fields: their sizes and its
 * padding (as on LP64) add up to its size. */
#if defined(__LP64__) || defined(_LP64)
#define L12_SUM(T, f) +sizeof(((T *)0)->f)
#define L12_COMPLETE(T, pad, grows)                                          \
    _Static_assert(0 ATP_L12_##T(L12_SUM) + (pad) == sizeof(T),              \
                   #T ": tests/abi/layout12.def misses one of its fields");
ATP_L12_STRUCTS(L12_COMPLETE)
#endif

const struct atp_l12_row atp_l12_frozen[] = {ATP_L12_TABLE};
const size_t atp_l12_frozen_n =
    sizeof(atp_l12_frozen) / sizeof(atp_l12_frozen[0]);
