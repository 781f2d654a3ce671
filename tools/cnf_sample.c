/* cnf_sample.c — `cnf sample`: points from a model, by drawing z from the
 * base N(0, I) and running the blocks in reverse (docs/mathematics.md), or
 * by pushing given latent points (--latent) through the inverse flow. */
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "cnf/data.h"
#include "commands.h"
#include "model_cli.h"
#include "mpi_cli.h"

int cmd_sample(int argc, char **argv)
{
    const char *model = NULL, *out = NULL, *latent = NULL;
    size_t n = 1000;
    unsigned long seed = 1;
    cli_solve_args sa;
    cli_solve_args_default(&sa);
    cli_option opts[] = {
        {"model", CLI_STRING, &model, "M.h5", "model file", CLI_REQUIRED, 0},
        {"n", CLI_COUNT, &n, "N", "number of samples (ignored with --latent)", NULL, 0},
        {"seed", CLI_SEED, &seed, "S", "seed of the latent draw (mt19937)", NULL, 0},
        {"latent", CLI_STRING, &latent, "F.h5:/z", "push these latent points instead of drawing", NULL, 0},
        {"out", CLI_STRING, &out, "S.h5|S.csv",
         "output file: /samples (N x D), or a CSV file (by the extension .csv or .tsv)",
         CLI_REQUIRED, 0},
        CLI_SOLVE_OPTIONS(sa),
        {NULL, 0, NULL, NULL, NULL, NULL, 0}};
    const char *pos[1];
    size_t n_pos;
    cli_parse(argc, argv, opts, "sample --model M.h5 --n N [--seed S] --out S.h5",
              "Draw N points from a model (z ~ N(0, I) through the inverse flow), or map\n"
              "given latent points (--latent) to data space; writes /samples (N x D).",
              pos, 0, &n_pos);
    cnf_data_address a;
    const char *inputs[] = {model, cli_address_file(latent, &a)};
    cli_check_output(out, inputs, 2);

    cli_model m;
    cli_model_open(&m, model, &sa, opts, 1);
    const size_t D = m.D;
    double *Z = latent ? cli_read_data(latent, NULL, D, &n, NULL) : NULL;   /* N x D */
    /* Under mpirun every rank draws (or reads) all of Z, decodes its part
     * of each chunk of --batch rows (with the reduction, in the steps of one
     * process) and rank 0 gathers the samples in order. */
    cnf_train_parallel par;
    cli_mpi_parallel(&par);
    m.fo.reduce = par.sum;
    m.fo.reduce_ctx = par.ctx;
    cli_model_prepare(&m, &sa, n, seed);
    if (!latent) {
        Z = cli_malloc_array(n, D, sizeof *Z, "--n");
        cnf_flow_draw_latent(m.rng, n, D, Z);
    }
    double *X = cli_malloc_array(n, D, sizeof *X, "--n");   /* N x D */
    cnf_flow_stats st;
    double t0 = cli_now();
    if (par.size > 1) {
        size_t chunk = sa.batch < n ? sa.batch : n, mine = cli_mpi_my_rows(n, chunk);
        double *part = cli_malloc_array(mine ? mine : 1, D, sizeof *part, "the rank's samples");
        cnf_status s = cnf_flow_decode_part(m.flow, m.w, Z, n, chunk, par.rank, par.size, part,
                                            &st);
        cli_mpi_agreed();   /* the status is the same on every rank, or a rank's own */
        cli_check(s, "sampling");
        if (cli_mpi_gather_rows(part, mine, D, n, chunk, X) != 0)
            cli_die("gathering the ranks' samples failed (MPI)");
        free(part);
        if (par.rank != 0) {
            free(X);
            free(Z);
            cli_model_close(&m);
            return 0;
        }
    } else {
        cli_check(cnf_flow_decode(m.flow, m.w, Z, n, X, &st), "sampling");
    }
    double secs = cli_now() - t0;

    cli_attr attrs[2] = {{"model", model, 0}, {"latent", latent, 0}};
    if (!latent)
        attrs[1] = (cli_attr){"seed", NULL, (long long)seed};
    /* The training data's column names, when the model's record has them. */
    cli_write_table(out, "/samples", X, n, D, cnf_model_extra_get(&m.ex, "columns"),
                    "cnf-samples", attrs, 2);
    cli_info("wrote %s: /samples %zu x %zu (%zu function evaluations, %.2f s)\n", out, n, D,
             st.forward.nfe, secs);
    free(X);
    free(Z);
    cli_model_close(&m);
    return 0;
}
