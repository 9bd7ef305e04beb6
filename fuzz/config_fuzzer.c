/*
 * fuzz/config_fuzzer.c - the INI configuration: atp_config_load_string()
 * on the input as text, atp_config_load() on it as a file when it holds a
 * NUL byte, and on a loaded configuration every getter and the check of
 * each [backend.NAME] section against an option table of every type.
 */
#include "config.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "../core/internal.h"
#include "fuzz.h"

static const atp_option opts[] = {
    {"image", ATP_OPT_STRING, NULL, NULL, "s"},
    {"count", ATP_OPT_INT, "1", NULL, "i"},
    {"init", ATP_OPT_BOOL, "true", NULL, "b"},
    {"timeout_s", ATP_OPT_DURATION, "30", NULL, "d"},
    {"memory", ATP_OPT_SIZE, "1GiB", NULL, "z"},
    {"cpu", ATP_OPT_NUMBER, "2", NULL, "n"},
    {"network", ATP_OPT_CHOICE, "none", "none|bridge|host", "c"},
    {NULL, 0, NULL, NULL, NULL},
};

static char file[600];
static volatile size_t sink;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    snprintf(file, sizeof(file), "%s/atp.ini", fuzz_tmpdir());
    return 0;
}

static void use(atp_config *cfg)
{
    const struct atp__settings *set = &cfg->set;
    size_t i, j;

    sink += strlen(atp_config_backend(cfg));
    sink += strlen(set->sandbox_workdir);
    for (i = 0; set->excludes && set->excludes[i]; i++)
        sink += strlen(set->excludes[i]);
    for (i = 0; i < cfg->n_sec; i++) {
        const struct atp__section *sec = &cfg->sec[i];

        for (j = 0; j < sec->n_kv; j++) {
            const char *v = atp_config_get(cfg, sec->name, sec->kv[j].key);

            if (v != sec->kv[j].value)
                fuzz_fail("atp_config_get([%s] %s) is not the value read",
                          sec->name, sec->kv[j].key);
        }
        if (strncmp(sec->name, "backend.", 8) == 0)
            atp__config_check_backend(cfg, sec, opts);
    }
    sink += strlen(atp_last_error());
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    atp_config *cfg = NULL;

    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    if (atp_config_load_string(&cfg, text, "fuzz.ini") == 0) {
        use(cfg);
        atp_config_free(cfg);
    }
    sink += strlen(atp_last_error());
    free(text);
    if (memchr(data, '\0', size)) {
        int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

        if (fd < 0 || write(fd, data, size) != (ssize_t)size)
            fuzz_fail("cannot write %s", file);
        close(fd);
        cfg = NULL;
        if (atp_config_load(&cfg, file) == 0) {
            use(cfg);
            atp_config_free(cfg);
        }
    }
    return 0;
}
