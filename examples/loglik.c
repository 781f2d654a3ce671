/* loglik.c — the library's typical use, and the README's example: load a
 * model, evaluate the log-likelihood of every row of a data set with the
 * solver settings the model was trained with, print one value per line.
 * It gives `cnf eval`'s numbers bit for bit (the install test checks that),
 * because both take the settings from cnf_flow_options_from_model and
 * evaluate in chunks of 1000 rows.
 *
 * Usage: loglik MODEL.h5 DATA.h5[:/path]    (path default /test)
 *
 * Build against an installed cnf:
 *     cc loglik.c $(pkg-config --cflags --libs cnf) -o loglik
 * or with CMake: find_package(cnf) and target_link_libraries(... cnf::cnf). */
#include <stdio.h>
#include <stdlib.h>

#include <gsl/gsl_errno.h>

#include <cnf/data.h>
#include <cnf/flow.h>
#include <cnf/io.h>

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL.h5 DATA.h5[:/path]\n", argv[0]);
        return 2;
    }
    /* GSL reports errors as return codes instead of aborting; a process-wide
     * setting, so the program makes it, not the library. */
    gsl_set_error_handler_off();

    cnf_flow *flow;
    cnf_model_extra ex;
    if (cnf_model_load(argv[1], &flow, &ex) != CNF_OK) {
        fprintf(stderr, "%s\n", cnf_last_error());
        return 1;
    }
    double *X;   /* N x D */
    size_t N, D;
    if (cnf_data_read_address(argv[2], "/test", &X, &N, &D) != CNF_OK
        || cnf_data_check_finite(X, N, D, argv[2]) != CNF_OK || D != cnf_flow_dim(flow)) {
        fprintf(stderr, "%s\n", D != cnf_flow_dim(flow) ? "data and model differ in dimension"
                                                         : cnf_last_error());
        return 1;
    }

    /* The model's solver and tolerances (the defaults for a model without a
     * training record); a damaged record leaves the defaults and says so. */
    cnf_flow_options opt;
    if (cnf_flow_options_from_model(&ex, &opt) != CNF_OK)
        fprintf(stderr, "warning: %s\n", cnf_last_error());
    cnf_model_extra_clear(&ex);

    cnf_flow_work *w = cnf_flow_work_alloc(flow, N < 1000 ? N : 1000, &opt);
    double *loglik = malloc(N * sizeof *loglik);   /* N */
    cnf_flow_stats st;
    int rc = 0;
    /* The exact divergence needs no random numbers: rng NULL. */
    if (!w || !loglik || cnf_flow_log_likelihood(flow, w, X, N, NULL, loglik, &st) != CNF_OK) {
        fprintf(stderr, "%s\n", loglik ? cnf_last_error() : "out of memory");
        rc = 1;
    } else {
        for (size_t i = 0; i < N; i++)
            printf("%.17g\n", loglik[i]);   /* 17 digits: the double itself */
    }
    free(loglik);
    free(X);
    cnf_flow_work_free(w);
    cnf_flow_free(flow);
    return rc;
}
