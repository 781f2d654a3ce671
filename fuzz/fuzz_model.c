/* fuzz_model.c — libFuzzer target: cnf_model_load on arbitrary bytes, with
 * the training record (what `cnf info`, `eval` and `train --resume` read).
 * A load either fails with a message or gives a flow whose every accessor
 * works; the sanitizers catch the rest. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <gsl/gsl_errno.h>
#include <hdf5.h>

#include "cnf/io.h"
#include "cnf/status.h"
#include "fuzz_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* where the values read go, so that reading them is not optimised away */
static volatile double fuzz_sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    if (!init) {
        gsl_set_error_handler_off();
        init = 1;
    }
    const char *path = fuzz_file(data, size);
    cnf_flow *flow = NULL;
    cnf_model_extra extra;
    cnf_status s = cnf_model_load(path, &flow, &extra);
    if (s == CNF_OK) {
        /* touch what `cnf info` prints */
        size_t D = cnf_flow_dim(flow), P = cnf_flow_num_params(flow);
        double sum = 0;
        const double *p = cnf_flow_params_const(flow);
        for (size_t i = 0; i < P; i++)
            sum += p[i];
        const double *m = cnf_flow_mean_const(flow);
        for (size_t i = 0; i < D; i++)
            sum += m[i];
        for (size_t i = 0; i < extra.n_config; i++)
            sum += (double)(extra.config_keys[i][0] + extra.config_values[i][0]);
        fuzz_sink = sum;
        cnf_model_extra_clear(&extra);
        cnf_flow_free(flow);
    } else if (!cnf_last_error()[0]) {
        abort();   /* every failure names its problem */
    }
    /* the loader closes what it opens, on every path */
    ssize_t open_ids = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
    if (open_ids != 0) {
        fprintf(stderr, "fuzz_model: %zd HDF5 objects left open\n", open_ids);
        abort();
    }
    return 0;
}
