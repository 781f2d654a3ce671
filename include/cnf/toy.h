/* cnf/toy.h — the 2-D toy densities of FFJORD (Grathwohl et al. 2019,
 * lib/toy_data.py), drawn from a seeded gsl_rng instead of NumPy's global
 * generator, so that a seed fixes a data set. datasets/README.md documents
 * each one (its definition, scale and, where known, its entropy).
 *
 * Names: 8gaussians, pinwheel, checkerboard, 2spirals, moons, circles,
 * rings, swissroll.
 *
 * Typical call:
 *
 *     gsl_rng *rng = gsl_rng_alloc(gsl_rng_mt19937);
 *     gsl_rng_set(rng, seed);
 *     double *X = malloc(2 * n * sizeof *X);            // n x 2
 *     if (cnf_toy_generate("8gaussians", n, rng, X) != CNF_OK)
 *         fprintf(stderr, "%s\n", cnf_last_error());
 */
#ifndef CNF_TOY_H
#define CNF_TOY_H

#include <stddef.h>

#include <gsl/gsl_rng.h>

#include "cnf/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CNF_TOY_DIM 2

/* Draw n points of the named set into X (n x 2, row-major) from rng.
 * CNF_EINVAL for an unknown name (the message lists the valid ones). */
cnf_status cnf_toy_generate(const char *name, size_t n, gsl_rng *rng, double *X);

/* The sets: count, i-th name (NULL past the end), all names as one
 * comma-separated string for --help ("8gaussians, pinwheel, ..."). */
size_t cnf_toy_count(void);
const char *cnf_toy_name(size_t i);
const char *cnf_toy_names(void);

/* 1 if name is a toy set, 0 otherwise. */
int cnf_toy_exists(const char *name);

/* A one-line description of the set (NULL for an unknown name). */
const char *cnf_toy_description(const char *name);

#ifdef __cplusplus
}
#endif

#endif /* CNF_TOY_H */
