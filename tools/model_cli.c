/* model_cli.c — shared pieces of the model-using commands (model_cli.h). */
#define _POSIX_C_SOURCE 200809L
#include "model_cli.h"

#include <stdio.h>
#include <stdlib.h>

#include <cblas.h>
#include <string.h>

#include "cnf/csv.h"
#include "cnf/data.h"
#include "cnf/io.h"
#include "cnf/net.h"
#include "cnf/ode.h"

void cli_solve_args_default(cli_solve_args *a)
{
    cnf_flow_options fo;
    cnf_flow_options_default(&fo);
    a->solver = cnf_ode_method_name(fo.solver.method);
    a->rtol = fo.solver.rtol;
    a->atol = fo.solver.atol;
    a->max_steps = fo.solver.max_steps;
    a->step = CLI_FIXED_STEP_DEFAULT;
    a->divergence = cnf_divergence_name(fo.divergence);
    a->batch = 1000;
    a->threads = fo.threads;
    a->blas_threads = 1;
}

void cli_solve_resolve(cli_solve_args *a, const cli_option *opts, const cnf_model_extra *ex,
                       cnf_flow_options *opt)
{
    /* The model's own settings through the library's function, so that a
     * program using libcnf gets these commands' numbers. */
    if (ex) {
        cnf_flow_options rec;
        if (cnf_flow_options_from_model(ex, &rec) != CNF_OK)
            /* A damaged record should not stop a model that loads from being
             * used, but the user should know the default replaced it. */
            cli_info("cnf %s: warning: %s\n", cli_command, cnf_last_error());
        if (!cli_given(opts, "solver"))
            a->solver = cnf_ode_method_name(rec.solver.method);
        if (!cli_given(opts, "rtol"))
            a->rtol = rec.solver.rtol;
        if (!cli_given(opts, "atol"))
            a->atol = rec.solver.atol;
        if (!cli_given(opts, "max-steps"))
            a->max_steps = rec.solver.max_steps;
    }
    cnf_flow_options_default(opt);
    cnf_ode_method method;
    if (cnf_ode_method_from_name(a->solver, &method) != CNF_OK)
        cli_usage("--solver: %s", cnf_last_error());
    if (cnf_divergence_from_name(a->divergence, &opt->divergence) != CNF_OK)
        cli_usage("--divergence: %s", cnf_last_error());
    cli_solver_set(opt, method, a->rtol, a->atol, a->max_steps, a->step);
    cli_check_threads(a->threads);
    cli_set_blas_threads(a->blas_threads);
    opt->threads = a->threads;
}

void cli_solver_set(cnf_flow_options *o, cnf_ode_method method, double rtol, double atol,
                    size_t max_steps, double step)
{
    cnf_ode_options *solves[2] = {&o->solver, &o->adjoint.solver};
    for (int i = 0; i < 2; i++) {
        solves[i]->method = method;
        solves[i]->rtol = rtol;
        solves[i]->atol = atol;
        solves[i]->max_steps = max_steps;
        if (!cnf_ode_method_is_adaptive(method))
            solves[i]->h0 = step;
    }
}

void cli_set_blas_threads(size_t n)
{
    if (n > 1)
        openblas_set_num_threads((int)n);
}

void cli_check_threads(size_t n)
{
    if (n < 1 || n > CNF_NET_MAX_THREADS)
        cli_usage("--threads %zu: expected 1..%d", n, CNF_NET_MAX_THREADS);
}

void cli_solver_text(const cli_solve_args *a, const cnf_flow_options *o, char *buf, size_t n)
{
    if (cnf_ode_method_is_adaptive(o->solver.method))
        snprintf(buf, n, "%s rtol %g atol %g", a->solver, a->rtol, a->atol);
    else
        snprintf(buf, n, "%s step %g", a->solver, a->step);
}

cnf_flow *cli_load_model(const char *path, cnf_model_extra *extra)
{
    if (!path)
        cli_usage("--model is required");
    cnf_flow *flow = NULL;
    cli_check(cnf_model_load(path, &flow, extra), NULL);
    return flow;
}

/* A CSV file is one table: "x.csv" itself, never "x.csv:/path". */
static int csv_spec(const char *spec, const cnf_data_address *a)
{
    if (cnf_csv_is_csv_path(spec))
        return 1;
    if (a && cnf_csv_is_csv_path(a->file))
        cli_usage("%s: a CSV file holds one table; give it without ':%s'", spec, a->path);
    return 0;
}

/* The column names a data file keeps (root attribute columns, cnf/csv.h),
 * malloc'd, when they are D names; NULL otherwise (a user's file has none). */
static char *file_columns(const char *file, size_t D)
{
    enum { MAX = 1 << 20 };
    char *buf = cli_malloc(MAX);
    int found = 0;
    char **names = NULL;
    size_t n = 0;
    if (cnf_data_read_attr_string(file, "/", "columns", buf, MAX, &found) != CNF_OK || !found
        || strlen(buf) + 1 >= MAX || cnf_csv_split_names(buf, &names, &n) != CNF_OK || n != D) {
        free(buf);
        buf = NULL;
    }
    cnf_csv_names_free(names, n);
    return buf;
}

double *cli_read_table(const char *spec, const char *dflt, size_t D, size_t *N, size_t *Dout,
                       char **columns)
{
    cnf_data_address a;
    double *X = NULL;
    size_t n = 0, d = 0;
    char name[CNF_DATA_FILE_MAX + CNF_DATA_PATH_MAX + 2];
    char **names = NULL;
    if (columns)
        *columns = NULL;
    if (csv_spec(spec, NULL)) {
        cli_check(cnf_csv_read(spec, NULL, &X, &n, &d, columns ? &names : NULL), NULL);
        snprintf(name, sizeof name, "%s", spec);
        if (names) {
            *columns = cnf_csv_join_names(names, d);
            if (!*columns)
                cli_die("%s", cnf_last_error());
            cnf_csv_names_free(names, d);
        }
    } else {
        if (cnf_data_address_parse(spec, dflt, &a) != CNF_OK)
            cli_usage("%s", cnf_last_error());
        csv_spec(spec, &a);
        cli_check(cnf_data_read(a.file, a.path, &X, &n, &d), NULL);
        snprintf(name, sizeof name, "%s:%s", a.file, a.path);
        cli_check(cnf_data_check_finite(X, n, d, name), NULL);
        if (columns)
            *columns = file_columns(a.file, d);
    }
    if (D && d != D)
        cli_die("%s has %zu columns but the model's dimension is %zu", name, d, D);
    *N = n;
    if (Dout)
        *Dout = d;
    return X;
}

double *cli_read_data(const char *spec, const char *dflt, size_t D, size_t *N, size_t *Dout)
{
    return cli_read_table(spec, dflt, D, N, Dout, NULL);
}

void cli_data_name(const char *spec, const char *dflt, char *buf, size_t n)
{
    cnf_data_address a;
    if (csv_spec(spec, NULL)) {
        snprintf(buf, n, "%s", spec);
        return;
    }
    if (cnf_data_address_parse(spec, dflt, &a) != CNF_OK)
        cli_usage("%s", cnf_last_error());
    snprintf(buf, n, "%s:%s", a.file, a.path);
}

const char *cli_basename(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash && slash[1] ? slash + 1 : path;
}

void cli_data_short_name(const char *spec, const char *dflt, char *buf, size_t n)
{
    cnf_data_address a;
    if (cnf_data_address_parse(spec, dflt, &a) != CNF_OK)
        cli_usage("%s", cnf_last_error());
    snprintf(buf, n, "%s:%s", cli_basename(a.file), a.path);
}

cnf_flow_work *cli_flow_work(const cnf_flow *flow, size_t max_batch, const cnf_flow_options *o)
{
    cnf_flow_work *w = cnf_flow_work_alloc(flow, max_batch, o);
    if (!w)
        cli_die("%s", cnf_last_error());
    return w;
}

void cli_model_open(cli_model *m, const char *path, cli_solve_args *sa, const cli_option *opts,
                    int use_record)
{
    memset(m, 0, sizeof *m);
    m->flow = cli_load_model(path, &m->ex);
    cli_solve_resolve(sa, opts, use_record ? &m->ex : NULL, &m->fo);
    m->D = cnf_flow_dim(m->flow);
}

void cli_model_prepare(cli_model *m, const cli_solve_args *sa, size_t rows, unsigned long seed)
{
    size_t B = sa->batch < rows ? sa->batch : rows;
    m->w = cli_flow_work(m->flow, B ? B : 1, &m->fo);
    m->rng = gsl_rng_alloc(gsl_rng_mt19937);
    if (!m->rng)
        cli_die("out of memory");
    gsl_rng_set(m->rng, seed);
}

void cli_model_close(cli_model *m)
{
    if (m->rng)
        gsl_rng_free(m->rng);
    cnf_flow_work_free(m->w);
    cnf_flow_free(m->flow);
    cnf_model_extra_clear(&m->ex);
    memset(m, 0, sizeof *m);
}

void cli_write_result(const char *out, const char *dset, const double *X, size_t N, size_t D,
                      const char *format, const cli_attr *attrs, size_t n_attrs)
{
    cnf_h5_writer *hw = cnf_h5_writer_open(out);
    if (!hw)
        cli_die("%s", cnf_last_error());
    cnf_status s = D ? cnf_h5_writer_write_2d(hw, dset, X, N, D)
                     : cnf_h5_writer_write_1d(hw, dset, X, N);
    if (s == CNF_OK)
        s = cnf_h5_writer_attr_string(hw, "/", "format", format);
    if (s == CNF_OK)
        s = cnf_h5_writer_attr_int(hw, "/", "version", 1);
    for (size_t i = 0; i < n_attrs && s == CNF_OK; i++)
        s = attrs[i].text ? cnf_h5_writer_attr_string(hw, "/", attrs[i].name, attrs[i].text)
                          : cnf_h5_writer_attr_int(hw, "/", attrs[i].name, attrs[i].value);
    if (s == CNF_OK)
        s = cnf_h5_writer_commit(hw);
    else
        cnf_h5_writer_abort(hw);
    cli_check(s, NULL);   /* the writer's messages name the file */
}

void cli_write_table(const char *out, const char *dset, const double *X, size_t N, size_t D,
                     const char *columns, const char *format, const cli_attr *attrs,
                     size_t n_attrs)
{
    if (!cnf_csv_is_csv_path(out)) {
        cli_attr all[16];
        if (n_attrs + 1 > sizeof all / sizeof *all)
            cli_die("internal: too many attributes");
        memcpy(all, attrs, n_attrs * sizeof *attrs);
        if (columns)
            all[n_attrs++] = (cli_attr){"columns", columns, 0};
        cli_write_result(out, dset, X, N, D, format, all, n_attrs);
        return;
    }
    size_t cols = D ? D : 1, n_names = 0;
    char **names = NULL;
    if (columns && cnf_csv_split_names(columns, &names, &n_names) == CNF_OK && n_names != cols) {
        cnf_csv_names_free(names, n_names);
        names = NULL;
    }
    if (!names) {
        /* No names known: the data set's name for one column, x1..xD else. */
        names = cli_malloc_array(cols, 1, sizeof *names, "the column names");
        for (size_t j = 0; j < cols; j++) {
            char buf[32];
            if (cols == 1)
                snprintf(buf, sizeof buf, "%s", dset[0] == '/' ? dset + 1 : dset);
            else
                snprintf(buf, sizeof buf, "x%zu", j + 1);
            if (!(names[j] = strdup(buf)))
                cli_die("out of memory");
        }
        n_names = cols;
    }
    cnf_status s = cnf_csv_write(out, X, N, cols, names, cnf_csv_delimiter_for_path(out));
    cnf_csv_names_free(names, n_names);
    cli_check(s, out);
}
