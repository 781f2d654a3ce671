/* cnf_eval.c — `cnf eval`: per-sample log-likelihood of data under a model
 * (docs/mathematics.md, data space, preprocessing included), its mean NLL in
 * nats with the standard error of the mean, and bits per dimension
 * nll / (D ln 2), beside the median NLL and the count of rows more than
 * --outlier nats above it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cnf/data.h"
#include "commands.h"
#include "model_cli.h"
#include "mpi_cli.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int cmd_eval(int argc, char **argv)
{
    const char *model = NULL, *data = NULL, *out = NULL;
    int json = 0;
    unsigned long seed = 1;
    double outlier = 20.0;
    cli_solve_args sa;
    cli_solve_args_default(&sa);
    cli_option opts[] = {
        {"model", CLI_STRING, &model, "M.h5", "model file", CLI_REQUIRED, 0},
        {"data", CLI_STRING, &data, "F.h5[:/path]|F.csv",
         "data set (path default /test), or a CSV file", CLI_REQUIRED, 0},
        {"out", CLI_STRING, &out, "L.h5|L.csv",
         "write the per-row log-likelihood as /loglik (N), or as a CSV column", NULL, 0},
        {"json", CLI_FLAG, &json, NULL, "print one JSON object with the results on stdout", NULL, 0},
        {"seed", CLI_SEED, &seed, "S", "seed of the Hutchinson noise (unused when exact)", NULL, 0},
        {"outlier", CLI_NONNEG, &outlier, "NATS", "count the rows whose NLL exceeds the median "
         "by more than NATS", NULL, 0},
        CLI_SOLVE_OPTIONS(sa),
        CLI_DIVERGENCE_OPTION(sa),
        {NULL, 0, NULL, NULL, NULL, NULL, 0}};
    const char *pos[1];
    size_t n_pos;
    cli_parse(argc, argv, opts, "eval --model M.h5 --data F.h5[:/test] [options]",
              "Log-likelihood of every row of a data set under a model (nats, data space),\n"
              "the mean negative log-likelihood with its standard error, and bits/dim.",
              pos, 0, &n_pos);
    if (out) {
        cnf_data_address a;
        const char *inputs[] = {model, cli_address_file(data, &a)};
        cli_check_output(out, inputs, 2);
    }

    cli_model m;
    cli_model_open(&m, model, &sa, opts, 1);
    const size_t D = m.D;
    size_t N;
    double *X = cli_read_data(data, "/test", D, &N, NULL);   /* N x D */
    /* Under mpirun every rank solves its part of each chunk of --batch rows
     * (with the reduction, in the steps of one process) and rank 0 gathers
     * the values in the rows' order; every rank reads the data itself. */
    cnf_train_parallel par;
    cli_mpi_parallel(&par);
    m.fo.reduce = par.sum;
    m.fo.reduce_ctx = par.ctx;
    cli_model_prepare(&m, &sa, N, seed);
    double *ll = cli_malloc_array(N, 1, sizeof *ll, "the log-likelihoods");   /* N */
    cnf_flow_stats st;
    double t0 = cli_now();
    if (par.size > 1) {
        size_t chunk = sa.batch < N ? sa.batch : N, mine = cli_mpi_my_rows(N, chunk);
        double *part = cli_malloc_array(mine ? mine : 1, 1, sizeof *part, "the rank's rows");
        cnf_status s = cnf_flow_log_likelihood_part(m.flow, m.w, X, N, chunk, par.rank, par.size,
                                                    m.rng, part, &st);
        cli_mpi_agreed();   /* the status is the same on every rank, or a rank's own */
        cli_check(s, data);
        if (cli_mpi_gather_rows(part, mine, 1, N, chunk, ll) != 0)
            cli_die("gathering the ranks' log-likelihoods failed (MPI)");
        free(part);
        if (par.rank != 0) {
            free(ll);
            free(X);
            cli_model_close(&m);
            return 0;
        }
    } else {
        cli_check(cnf_flow_log_likelihood(m.flow, m.w, X, N, m.rng, ll, &st), data);
    }
    double secs = cli_now() - t0;

    /* Finite rows far outside the model (|x| ~ 1e200) have a log-density
     * that overflows: the mean would print as "inf +- -nan", so name them
     * instead of reporting a number. */
    size_t n_bad = 0;
    char bad[256] = "";
    for (size_t i = 0; i < N; i++)
        if (!isfinite(ll[i]) && n_bad++ < 5) {
            size_t used = strlen(bad);
            snprintf(bad + used, sizeof bad - used, "%srow %zu (%g)", used ? ", " : "", i, ll[i]);
        }
    if (n_bad)
        cli_die("%s: %zu of %zu rows have a log-likelihood that is not finite: %s%s (counted "
                "from 0; values this far outside the model overflow); nothing written", data,
                n_bad, N, bad, n_bad > 5 ? ", ..." : "");

    /* Mean and standard error of the NLL (sample standard deviation / sqrt N). */
    double sum = 0.0;
    for (size_t i = 0; i < N; i++)
        sum += -ll[i];
    double nll = sum / (double)N, ss = 0.0;
    for (size_t i = 0; i < N; i++)
        ss += (-ll[i] - nll) * (-ll[i] - nll);
    double se = N > 1 ? sqrt(ss / (double)(N - 1) / (double)N) : NAN;
    double bpd = nll / ((double)D * log(2.0));
    /* A few rows far outside the training range can dominate the mean (one
     * row of -25,662 nats moved a 9-D set's mean from 1.5 to 5.1): the
     * median and the count of such rows say whether it did. */
    double *sorted = cli_malloc(N * sizeof *sorted);
    for (size_t i = 0; i < N; i++)
        sorted[i] = -ll[i];
    qsort(sorted, N, sizeof *sorted, cmp_double);
    double median = N % 2 ? sorted[N / 2] : 0.5 * (sorted[N / 2 - 1] + sorted[N / 2]);
    double worst = sorted[N - 1];
    size_t n_out = 0;
    for (size_t i = 0; i < N; i++)
        n_out += sorted[i] > median + outlier;
    free(sorted);

    if (out) {
        const cli_attr attrs[] = {{"model", model, 0}, {"data", data, 0},
                                  {"divergence", sa.divergence, 0}};
        cli_write_table(out, "/loglik", ll, N, 0, NULL, "cnf-loglik", attrs, 3);
    }
    if (json) {
        printf("{\"n\": %zu, \"nll\": ", N);
        cli_json_double(stdout, nll);
        printf(", \"nll_se\": ");
        cli_json_double(stdout, se);
        printf(", \"bits_per_dim\": ");
        cli_json_double(stdout, bpd);
        printf(", \"nll_median\": ");
        cli_json_double(stdout, median);
        printf(", \"nll_max\": ");
        cli_json_double(stdout, worst);
        printf(", \"outlier_nats\": ");
        cli_json_double(stdout, outlier);
        printf(", \"n_outliers\": %zu", n_out);
        printf(", \"nfe\": %zu, \"dim\": %zu, \"divergence\": \"%s\", \"seconds\": %.3f}\n",
               st.forward.nfe, D, sa.divergence, secs);
    } else {
        char name[CNF_DATA_FILE_MAX + CNF_DATA_PATH_MAX + 2];
        cli_data_name(data, "/test", name, sizeof name);
        printf("%s: n = %zu, nll = %.6f +- %.6f nats (standard error), bits/dim = %.6f\n", name,
               N, nll, se, bpd);
        printf("  median nll = %.6f; %zu row%s more than %g nats above it (largest nll %.6f)\n",
               median, n_out, n_out == 1 ? "" : "s", outlier, worst);
        char solver[128];
        cli_solver_text(&sa, &m.fo, solver, sizeof solver);
        cli_info("(%s divergence, %s, %zu function evaluations, %.2f s)\n", sa.divergence, solver,
                 st.forward.nfe, secs);
        if (out)
            cli_info("wrote %s (/loglik, %zu values)\n", out, N);
    }
    free(ll);
    free(X);
    cli_model_close(&m);
    return 0;
}
