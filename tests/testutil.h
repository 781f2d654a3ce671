/* testutil.h — helpers shared by the Check suites: finite-difference
 * gradient checks (second and fourth order), seeded generators and the
 * random-flow fixture, array comparison that prints the first mismatches,
 * and paths to the repository's test data. */
#ifndef CNF_TESTUTIL_H
#define CNF_TESTUTIL_H

#include <stddef.h>

#include <check.h>
#include <gsl/gsl_rng.h>

#include "cnf/flow.h"
#include "cnf/train.h"

/* What a program embedding cnf does at start-up (include/cnf/net.h):
 * OpenBLAS at one thread, whatever OPENBLAS_NUM_THREADS says, so that the
 * suites compute what the cnf command computes. Every suite's main calls it
 * first. */
void tu_program_setup(void);

/* A scalar function of n parameters for gradient checks. */
typedef double (*tu_scalar_fn)(const double *x, void *ctx);

/* Central differences of fn at x (n values; x is perturbed and restored)
 * with step h * max(1, |x_i|), written to grad (n). */
void tu_fd_gradient(tu_scalar_fn fn, void *ctx, double *x, size_t n, double h, double *grad);

/* Fourth-order central differences, (8 (f(+1) - f(-1)) - (f(+2) - f(-2))) / 12
 * at offsets of the same step as tu_fd_gradient: truncation O(step^4), for
 * steps large enough to rise above noise in fn (e.g. adaptive solves). */
void tu_fd_gradient4(tu_scalar_fn fn, void *ctx, double *x, size_t n, double h, double *grad);

/* A Mersenne Twister seeded with seed (free with gsl_rng_free): every suite
 * draws its fixtures from one, so a seed fixes a test's data. */
gsl_rng *tu_rng(unsigned long seed);

/* A flow of K (<= 8) blocks, each a network of the hidden widths given as
 * text (e.g. "8-8"), layer type and activation, block k ending at T[k] (K);
 * network parameters from cnf_flow_init_params(flow, r, 0), so r moves on;
 * mean 0 and scale 1. Every suite's random-flow fixture. */
cnf_flow *tu_flow(size_t D, size_t K, const char *hidden, cnf_layer_type type, cnf_activation act,
                  const double *T, gsl_rng *r);

/* rtol = atol = fwd for the forward solves, = back for the adjoint's. */
void tu_set_tol(cnf_flow_options *opt, double fwd, double back);

/* Largest relative error |a - b| / max(|a|, |b|, floor) over n entries.
 * Prints the first few mismatches above tol (with name) to stderr. */
double tu_max_rel_error(const char *name, const double *a, const double *b, size_t n,
                        double floor, double tol);

/* A new state with every field of src copied one by one, as a model file
 * restores it (parameters, moments, best, counters, step hints, the rng's
 * bytes): what a resume test continues from. */
cnf_train_state *tu_state_copy(const cnf_train_state *src);

/* Runs a suite with CK_NORMAL output; returns the process exit status. */
int tu_run_suite(Suite *s);

/* Path of a file of the repository (relative to its root, CNF_SOURCE_DIR),
 * written into buf: the tests read only what the repository carries. */
const char *tu_repo_path(char *buf, size_t n, const char *relative);

/* A new empty directory /tmp/<prefix>.XXXXXX, its name in buf (n >= 64);
 * and the removal of such a directory with the files (and empty
 * directories) in it: every suite's scratch space. */
void tu_tmpdir_make(char *buf, size_t n, const char *prefix);
void tu_tmpdir_remove(const char *dir);

#endif
