/* fuzz_data.c — libFuzzer target: the data reader (cnf_data_shape,
 * cnf_data_read, cnf_data_read_vector) on arbitrary bytes as an HDF5 file
 * read at /train and /loglik. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "cnf/data.h"
#include "cnf/status.h"
#include "fuzz_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* where the values read go, so that reading them is not optimised away */
static volatile double fuzz_sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file(data, size);
    size_t N = 0, D = 0;
    cnf_status s = cnf_data_shape(path, "/train", &N, &D);
    double *X = NULL;
    size_t N2 = 0, D2 = 0;
    cnf_status r = cnf_data_read(path, "/train", &X, &N2, &D2);
    if (r == CNF_OK) {
        if (s != CNF_OK || N != N2 || D != D2 || N2 == 0 || D2 == 0)
            abort();   /* the shape and the read must agree */
        double sum = 0;
        for (size_t i = 0; i < N2 * D2; i++)
            sum += X[i];
        (void)cnf_data_check_finite(X, N2, D2, "fuzz");
        fuzz_sink = sum;
        free(X);
    } else if (!cnf_last_error()[0]) {
        abort();
    }
    double *v = NULL;
    size_t n = 0;
    if (cnf_data_read_vector(path, "/loglik", &v, &n) == CNF_OK) {
        double sum = 0;
        for (size_t i = 0; i < n; i++)
            sum += v[i];
        fuzz_sink = sum;
        free(v);
    }
    return 0;
}
