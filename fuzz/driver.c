/*
 * fuzz/driver.c - main() of the fuzz targets when they are not built with
 * libFuzzer: runs each file named on the command line (each file of a
 * named directory) once through LLVMFuzzerTestOneInput, as a libFuzzer
 * binary does with file arguments.  Built with any compiler, so that
 * `make check` replays the corpus and the regression inputs everywhere.
 * With -DATP_LIBFUZZER (--enable-fuzzing) libFuzzer brings main().
 */
#include "config.h"

#ifndef ATP_LIBFUZZER

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

/* Run the file at @path; 0, or -1 when it cannot be read. */
static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;

    if (f == NULL) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return -1;
    }
    for (;;) {
        size_t got;

        if (len == cap) {
            uint8_t *grown;

            cap = cap ? cap * 2 : 65536;
            grown = realloc(buf, cap);
            if (grown == NULL) {
                fprintf(stderr, "%s: out of memory\n", path);
                free(buf);
                fclose(f);
                return -1;
            }
            buf = grown;
        }
        got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        fprintf(stderr, "%s: read error\n", path);
        free(buf);
        fclose(f);
        return -1;
    }
    fclose(f);
    {
        /* The input in a block of its exact size, as libFuzzer hands it
         * over, so that a read past its end is caught by the sanitizers. */
        uint8_t *exact = malloc(len ? len : 1);

        if (exact == NULL) {
            free(buf);
            return -1;
        }
        if (len)
            memcpy(exact, buf, len);
        free(buf);
        LLVMFuzzerTestOneInput(exact, len);
        free(exact);
    }
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Run every regular file of directory @dir, in name order. */
static int run_dir(const char *dir, unsigned *count)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char **names = NULL;
    size_t n = 0, cap = 0, i;
    int rc = 0;

    if (d == NULL) {
        fprintf(stderr, "%s: %s\n", dir, strerror(errno));
        return -1;
    }
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(dir) + strlen(de->d_name) + 2;
        struct stat sb;
        char *path;

        if (de->d_name[0] == '.')
            continue;
        path = malloc(len);
        if (path == NULL)
            break;
        snprintf(path, len, "%s/%s", dir, de->d_name);
        if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) {
            free(path);
            continue;
        }
        if (n == cap) {
            char **grown = realloc(names, (cap = cap ? cap * 2 : 64) *
                                              sizeof(*grown));

            if (grown == NULL) {
                free(path);
                break;
            }
            names = grown;
        }
        names[n++] = path;
    }
    closedir(d);
    if (n)
        qsort(names, n, sizeof(*names), by_name);
    for (i = 0; i < n; i++) {
        if (run_file(names[i]) != 0)
            rc = -1;
        else
            (*count)++;
        free(names[i]);
    }
    free(names);
    return rc;
}

int main(int argc, char **argv)
{
    unsigned count = 0;
    int i, rc = 0;

    LLVMFuzzerInitialize(&argc, &argv);
    for (i = 1; i < argc; i++) {
        struct stat sb;

        if (argv[i][0] == '-')
            continue; /* libFuzzer's flags mean nothing here */
        if (stat(argv[i], &sb) == 0 && S_ISDIR(sb.st_mode)) {
            if (run_dir(argv[i], &count) != 0)
                rc = 1;
        } else if (run_file(argv[i]) != 0) {
            rc = 1;
        } else {
            count++;
        }
    }
    fprintf(stderr, "%s: ran %u inputs\n", argv[0], count);
    return rc;
}

#else
/* ISO C wants a translation unit to declare something. */
typedef int atp_fuzz_driver_unused;
#endif
