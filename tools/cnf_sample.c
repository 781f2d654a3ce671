/* cnf_sample.c — `cnf sample`: points from a model, by drawing z from the
 * base N(0, I) and running the blocks in reverse (DESIGN.md section 1), or
 * by pushing given latent points (--latent) through the inverse flow. */
#include <stdio.h>
#include <stdlib.h>

#include <gsl/gsl_rng.h>

#include "cli.h"
#include "cnf/data.h"
#include "commands.h"
#include "model_cli.h"

int cnf_cmd_sample(int argc, char **argv)
{
    const char *model = NULL, *out = NULL, *latent = NULL;
    size_t n = 1000;
    unsigned long seed = 1;
    cli_solve_args sa;
    cli_solve_args_default(&sa);
    cli_option opts[] = {
        {"model", CLI_STRING, &model, "M.h5", "model file (required)", NULL, 0},
        {"n", CLI_COUNT, &n, "N", "number of samples (ignored with --latent)", NULL, 0},
        {"seed", CLI_SEED, &seed, "S", "seed of the latent draw (mt19937)", NULL, 0},
        {"latent", CLI_STRING, &latent, "F.h5:/z", "push these latent points instead of drawing", NULL, 0},
        {"out", CLI_STRING, &out, "S.h5", "output file: /samples (N x D) (required)", NULL, 0},
        CLI_SOLVE_OPTIONS(sa),
        {NULL, 0, NULL, NULL, NULL, NULL, 0}};
    const char *pos[1];
    size_t n_pos;
    cli_parse(argc, argv, opts, "sample --model M.h5 --n N [--seed S] --out S.h5",
              "Draw N points from a model (z ~ N(0, I) through the inverse flow), or map\n"
              "given latent points (--latent) to data space; writes /samples (N x D).",
              pos, 0, &n_pos);
    if (!model)
        cli_usage("--model is required");
    if (!out)
        cli_usage("--out is required");
    cli_check(cnf_data_check_output_path(out), "--out");

    cnf_model_extra ex;
    cnf_flow *flow = cli_load_model(model, &ex);
    cnf_flow_options fo;
    cli_solve_resolve(&sa, opts, &ex, &fo);
    const size_t D = cnf_flow_dim(flow);
    double *Z;   /* N x D */
    if (latent) {
        Z = cli_read_data(latent, NULL, D, &n, NULL);
    } else {
        gsl_rng *rng = gsl_rng_alloc(gsl_rng_mt19937);
        if (!rng)
            cli_die("out of memory");
        gsl_rng_set(rng, seed);
        Z = cli_malloc(n * D * sizeof *Z);
        cnf_flow_draw_latent(rng, n, D, Z);
        gsl_rng_free(rng);
    }
    size_t B = sa.batch < n ? sa.batch : n;
    cnf_flow_work *w = cli_flow_work(flow, B, &fo);
    double *X = cli_malloc(n * D * sizeof *X);   /* N x D */
    cnf_flow_stats st;
    double t0 = cli_now();
    cli_check(cnf_flow_decode(flow, w, Z, n, X, &st), "sampling");
    double secs = cli_now() - t0;

    cnf_h5_writer *hw = cnf_h5_writer_open(out);
    if (!hw)
        cli_die("%s", cnf_last_error());
    cnf_status s = cnf_h5_writer_write_2d(hw, "/samples", X, n, D);
    if (s == CNF_OK)
        s = cnf_h5_writer_attr_string(hw, "/", "format", "cnf-samples");
    if (s == CNF_OK)
        s = cnf_h5_writer_attr_int(hw, "/", "version", 1);
    if (s == CNF_OK)
        s = cnf_h5_writer_attr_string(hw, "/", "model", model);
    if (s == CNF_OK && latent)
        s = cnf_h5_writer_attr_string(hw, "/", "latent", latent);
    if (s == CNF_OK && !latent)
        s = cnf_h5_writer_attr_int(hw, "/", "seed", (long long)seed);
    if (s == CNF_OK)
        s = cnf_h5_writer_commit(hw);
    else
        cnf_h5_writer_abort(hw);
    cli_check(s, out);
    cli_info("wrote %s: /samples %zu x %zu (%zu function evaluations, %.2f s)\n", out, n, D,
             st.forward.nfe, secs);
    free(X);
    free(Z);
    cnf_flow_work_free(w);
    cnf_flow_free(flow);
    cnf_model_extra_clear(&ex);
    return 0;
}
