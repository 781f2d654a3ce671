/* cnf_toy.c — `cnf toy NAME`: one of FFJORD's 2-D toy densities
 * (Grathwohl et al. 2019, lib/toy_data.py; cnf/toy.h), drawn from a seeded
 * generator and split into /train, /val and /test of a data file. */
#include <stdio.h>
#include <stdlib.h>

#include <gsl/gsl_rng.h>

#include "cli.h"
#include "cnf/data.h"
#include "cnf/toy.h"
#include "commands.h"

int cmd_toy(int argc, char **argv)
{
    size_t n = 10000;
    unsigned long seed = 1;
    const char *out = NULL, *split = "0.8,0.1,0.1";
    cli_option opts[] = {
        {"n", CLI_COUNT, &n, "N", "number of points in all (split into train, val, test)", NULL, 0},
        {"seed", CLI_SEED, &seed, "S", "seed of the generator (mt19937)", NULL, 0},
        {"split", CLI_STRING, &split, "F,F,F", "fractions of train, val, test", NULL, 0},
        {"out", CLI_STRING, &out, "F.h5", "output data file", CLI_REQUIRED, 0},
        {NULL, 0, NULL, NULL, NULL, NULL, 0}};
    char about[512];
    snprintf(about, sizeof about,
             "Draw N points of a 2-D toy density (FFJORD's lib/toy_data.py, seeded) and\n"
             "write them as /train, /val and /test (float64, N x 2).\n"
             "NAME is one of: %s.", cnf_toy_names());
    const char *pos[1];
    size_t n_pos;
    cli_parse(argc, argv, opts, "toy NAME --n N [--seed S] --out F.h5", about, pos, 1, &n_pos);
    if (n_pos != 1)
        cli_usage("name the toy data set (one of: %s)", cnf_toy_names());
    if (!cnf_toy_exists(pos[0]))
        cli_usage("unknown toy data set '%s' (one of: %s)", pos[0], cnf_toy_names());
    size_t counts[3];
    cli_split_counts(split, n, counts);
    /* cnf train refuses an empty /train or /val: the rule convert follows */
    cli_check_split_rows(split, n, counts);
    cli_check_output(out, NULL, 0);

    gsl_rng *rng = gsl_rng_alloc(gsl_rng_mt19937);
    if (!rng)
        cli_die("out of memory");
    gsl_rng_set(rng, seed);
    double *X = cli_malloc_array(n, 2, sizeof *X, "--n");   /* n x 2 */
    cli_check(cnf_toy_generate(pos[0], n, rng, X), NULL);
    char source[256];
    snprintf(source, sizeof source, "cnf toy %s --n %zu --seed %lu, FFJORD lib/toy_data.py",
             pos[0], n, seed);
    cli_write_splits(out, X, counts, 2, source, NULL);
    free(X);
    gsl_rng_free(rng);
    return 0;
}
