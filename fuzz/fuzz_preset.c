/* fuzz_preset.c — libFuzzer target: the preset parser of `cnf train`
 * (tools/config.c) on arbitrary bytes, then the resolution of the settings
 * into the library's structures as `cnf train` does for D = 2 when the
 * parse succeeded and the settings are valid. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FILE *f = fmemopen((void *)data, size ? size : 1, "r");
    if (!f)
        abort();
    if (size == 0) {
        fclose(f);
        return 0;
    }
    run_config cfg;
    run_config_default(&cfg);
    char err[1400];
    int rc = run_config_parse(&cfg, f, "fuzz.cfg", NULL, err, sizeof err);
    fclose(f);
    if (rc == 0) {
        /* every value as text, as the model's record stores it */
        char buf[4096];
        for (size_t i = 0; i < config_num_keys; i++)
            run_config_format(&cfg, &config_keys[i], buf, sizeof buf);
        cnf_net_config net;
        cnf_net_config_default(&net, 2);
        (void)cnf_net_config_parse_hidden(&net, cfg.hidden);
    } else if (!err[0]) {
        abort();
    }
    run_config_clear(&cfg);
    return 0;
}
