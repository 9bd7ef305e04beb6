/*
 * fuzz/listing_fuzzer.c - the sandbox's listing for incremental sync
 * (atp__manifest_parse_listing, core/manifest.c), which comes from a
 * sandbox and so is hostile input.  Oracle: what comes out is sorted,
 * without duplicates, every path safe to use under a root and not
 * excluded, every link with a target and nothing else with one.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>

#include "../core/internal.h"
#include "../core/transfer.h"
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

static void check(const struct atp__manifest *m,
                  const char *const *excludes)
{
    size_t i;

    for (i = 0; i < m->n; i++) {
        const struct atp__ment *e = &m->e[i];

        if (!atp__path_ok(e->path))
            fuzz_fail("unsafe path '%s' listed", e->path);
        if (atp__excluded(e->path, excludes))
            fuzz_fail("excluded path '%s' listed", e->path);
        if (i > 0 && strcmp(m->e[i - 1].path, e->path) >= 0)
            fuzz_fail("'%s' then '%s': not sorted or repeated",
                      m->e[i - 1].path, e->path);
        if ((e->type == ATP__T_LINK) != (e->target != NULL))
            fuzz_fail("'%s' of type %c with target %p", e->path, e->type,
                      (const void *)e->target);
        if (e->type != ATP__T_FILE && e->type != ATP__T_DIR &&
            e->type != ATP__T_LINK)
            fuzz_fail("'%s' of type %d", e->path, e->type);
        if (e->mode & ~07777u)
            fuzz_fail("'%s' of mode %o", e->path, (unsigned)e->mode);
        if (atp__manifest_find(m, e->path) != e)
            fuzz_fail("'%s' not found by its own path", e->path);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const excludes[] = {".lake", "*.olean", "build/tmp",
                                           NULL};
    struct atp__manifest m = {NULL, 0, 0};
    /* A copy of exactly the input's size: no NUL past its end to lean on. */
    char *buf = malloc(size ? size : 1);

    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);
    if (atp__manifest_parse_listing(&m, buf, size, excludes) == 0)
        check(&m, excludes);
    atp__manifest_free(&m);
    free(buf);
    return 0;
}
