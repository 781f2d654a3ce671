/* model_cli.h — what the commands that run a saved model share: loading it
 * (exiting with the library's message on failure), the solver options
 * (--solver, --rtol, --atol, --max-steps, --divergence, --batch, --threads), whose
 * defaults come from the model's training record when it has one (a bad value
 * there gives a warning, unless --quiet, and the default), and data
 * reading with the checks every command makes. */
#ifndef CNF_TOOLS_MODEL_CLI_H
#define CNF_TOOLS_MODEL_CLI_H

#include <stddef.h>

#include <gsl/gsl_rng.h>

#include "cli.h"
#include "cnf/flow.h"
#include "cnf/io.h"
#include "cnf/ode.h"

typedef struct {
    const char *solver;
    double rtol, atol;
    size_t max_steps;
    double step;                  /* fixed-step solvers' step size */
    const char *divergence;
    size_t batch;                 /* rows per solve */
    size_t threads;               /* cnf's threads, splitting each solve's rows */
    size_t blas_threads;          /* OpenBLAS's threads (cnf_main sets 1) */
} cli_solve_args;

/* The library's defaults (cnf_flow_options_default; the divergence is
 * exact); 1000 rows per solve. */
void cli_solve_args_default(cli_solve_args *a);

/* Step of the fixed-step solvers (euler, midpoint, rk4) outside training. */
#define CLI_FIXED_STEP_DEFAULT 0.01

/* The solver's option entries for a (8 entries, to copy into a command's
 * table); commands whose solves use a divergence add CLI_DIVERGENCE_OPTION.
 * Their defaults come from the model's training record (cli_solve_resolve
 * with use_record); a command that ignores the record takes
 * CLI_SOLVE_OPTIONS_OWN, whose --help prints a's values. */
#define CLI_SOLVE_OPTIONS(a)                                                                   \
    CLI_SOLVE_OPTIONS_DEFAULTS(a, "the model's training solver, else dopri5",                  \
                               "the model's training rtol, else 1e-5",                         \
                               "the model's training atol, else 1e-5")
#define CLI_SOLVE_OPTIONS_OWN(a) CLI_SOLVE_OPTIONS_DEFAULTS(a, NULL, NULL, NULL)
#define CLI_SOLVE_OPTIONS_DEFAULTS(a, solver_default, rtol_default, atol_default)              \
    {"solver", CLI_STRING, &(a).solver, "NAME",                                                \
     "ODE solver: dopri5, rkf45, rkck, rk8pd (adaptive); euler, midpoint, rk4 (fixed step)",   \
     solver_default, 0},                                                                       \
    {"rtol", CLI_POS, &(a).rtol, "R", "relative tolerance (adaptive solvers)", rtol_default,   \
     0},                                                                                       \
    {"atol", CLI_POS, &(a).atol, "A", "absolute tolerance (adaptive solvers)", atol_default,   \
     0},                                                                                       \
    {"max-steps", CLI_COUNT, &(a).max_steps, "N", "step limit of one solve", NULL, 0},          \
    {"step", CLI_POS, &(a).step, "H", "step size of the fixed-step solvers (euler, midpoint, rk4)", \
     NULL, 0},                                                                                 \
    {"batch", CLI_COUNT, &(a).batch, "N", "rows per solve", NULL, 0},                          \
    {"threads", CLI_COUNT, &(a).threads, "N",                                                  \
     "threads (1..64), each computing its share of a solve's rows", NULL, 0},                 \
    CLI_BLAS_THREADS_OPTION((a).blas_threads)
/* --blas-threads, shared with cnf train. */
#define CLI_BLAS_THREADS_OPTION(dest)                                                          \
    {"blas-threads", CLI_COUNT, &(dest), "N",                                                  \
     "OpenBLAS threads (with --threads 1; more rarely pay, and change the last bits)", NULL, 0}
#define CLI_DIVERGENCE_OPTION(a)                                                               \
    {"divergence", CLI_STRING, &(a).divergence, "KIND", "exact, gaussian or rademacher", NULL, 0}

/* Exit with a usage error naming --threads unless 1 <= n <= the library's
 * limit (CNF_NET_MAX_THREADS). */
void cli_check_threads(size_t n);

/* Apply --blas-threads (n >= 1; with --threads > 1 the network keeps
 * OpenBLAS at one thread anyway). */
void cli_set_blas_threads(size_t n);

/* "dopri5 rtol 1e-05 atol 1e-05" or, for a fixed-step solver, "rk4 step 0.01". */
void cli_solver_text(const cli_solve_args *a, const cnf_flow_options *o, char *buf, size_t n);

/* The solver settings every command resolves in this one place: method,
 * tolerances and step limit of the forward and the adjoint solves alike,
 * and for a fixed-step method its step (h0). The rest of o (the forward
 * solves' safety factor in training, ...) is left as it is. */
void cli_solver_set(cnf_flow_options *o, cnf_ode_method method, double rtol, double atol,
                    size_t max_steps, double step);

/* Fill the options not given on the command line from the model's record
 * (solver, rtol, atol, max_steps) and resolve to flow options. */
void cli_solve_resolve(cli_solve_args *a, const cli_option *opts, const cnf_model_extra *ex,
                       cnf_flow_options *opt);

/* Load a model or exit with the message. extra may be NULL. */
cnf_flow *cli_load_model(const char *path, cnf_model_extra *extra);

/* Read a data set ("file.h5:/path", default path dflt; or a whole CSV file,
 * "x.csv" or "x.tsv", delimiter and header detected, cnf/csv.h), check it
 * is finite and, when D > 0, that it has D columns (model/data mismatch).
 * Exits on failure. *N gets the rows. Returns N x D (caller frees). */
double *cli_read_data(const char *spec, const char *dflt, size_t D, size_t *N, size_t *Dout);

/* cli_read_data that also gives the table's column names as one CSV line
 * (cnf/csv.h) in *columns, malloc'd: a CSV file's header, or an HDF5 file's
 * root attribute columns; NULL when there are none (or not D of them). */
double *cli_read_table(const char *spec, const char *dflt, size_t D, size_t *N, size_t *Dout,
                       char **columns);
/* The address spec resolves to ("toy.h5" with default "/test": "toy.h5:/test"). */
void cli_data_name(const char *spec, const char *dflt, char *buf, size_t n);

/* The same with the file's directory left out ("data.h5:/test"), for
 * pictures' titles. */
void cli_data_short_name(const char *spec, const char *dflt, char *buf, size_t n);
/* The last component of a path. */
const char *cli_basename(const char *path);

/* A work space for the flow or exit. */
cnf_flow_work *cli_flow_work(const cnf_flow *flow, size_t max_batch, const cnf_flow_options *o);

/* What a command that runs a saved model holds: the model and its record,
 * the resolved flow options and, after cli_model_prepare, a work space and
 * a seeded generator. Owned; cli_model_close frees it all. */
typedef struct {
    cnf_flow *flow;
    cnf_model_extra ex;
    cnf_flow_options fo;
    size_t D;
    cnf_flow_work *w;     /* min(batch, rows) rows per solve */
    gsl_rng *rng;         /* mt19937 seeded with the command's seed */
} cli_model;

/* Load the model (exit on failure) and resolve the solver options sa
 * against it (the training record fills the options not given when
 * use_record is set). */
void cli_model_open(cli_model *m, const char *path, cli_solve_args *sa, const cli_option *opts,
                    int use_record);
/* A work space for solves of up to min(sa->batch, rows) rows and the rng
 * seeded with seed. Exits on failure. */
void cli_model_prepare(cli_model *m, const cli_solve_args *sa, size_t rows, unsigned long seed);
void cli_model_close(cli_model *m);

/* One attribute of a result file. */
typedef struct {
    const char *name;
    const char *text;     /* a string attribute, or NULL for ... */
    long long value;      /* ... an integer one */
} cli_attr;

/* Write a result file atomically: data set dset (N values when D == 0, else
 * N x D), root attributes format and version = 1, then attrs (n_attrs).
 * Exits with the message on failure (the target untouched). */
void cli_write_result(const char *out, const char *dset, const double *X, size_t N, size_t D,
                      const char *format, const cli_attr *attrs, size_t n_attrs);

/* cli_write_result, or a CSV file when out ends in .csv or .tsv (cnf/csv.h):
 * a header line, then N rows of D values (one when D == 0). columns (the
 * column names as one CSV line, or NULL) names the CSV's columns and is
 * stored as the HDF5 file's root attribute "columns"; without it a CSV's
 * header is x1..xD, or the data set's name for one column. A CSV file has
 * no attributes: format and attrs go to HDF5 only. */
void cli_write_table(const char *out, const char *dset, const double *X, size_t N, size_t D,
                     const char *columns, const char *format, const cli_attr *attrs,
                     size_t n_attrs);

#endif /* CNF_TOOLS_MODEL_CLI_H */
