/* model_cli.c — shared pieces of the model-using commands (model_cli.h). */
#include "model_cli.h"

#include <stdio.h>
#include <stdlib.h>

#include <cblas.h>
#include <string.h>

#include "cnf/data.h"
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

static void from_record(const cnf_model_extra *ex, const cli_option *opts, const char *opt,
                        const char *key, cli_kind kind, void *dest)
{
    const char *v = ex ? cnf_model_extra_get(ex, key) : NULL;
    char err[256];
    if (!v || cli_given(opts, opt))
        return;
    if (kind == CLI_STRING)
        *(const char **)dest = v;   /* borrowed from ex, which outlives the command */
    else if (cli_parse_value(kind, v, dest, err, sizeof err))
        /* A damaged record should not stop a model that loads from being
         * used, but the user should know the default replaced it. */
        cli_info("cnf %s: warning: the model's training record has %s = '%s' (%s); using "
                 "--%s's default\n", cli_command, key, v, err, opt);
}

void cli_solve_resolve(cli_solve_args *a, const cli_option *opts, const cnf_model_extra *ex,
                       cnf_flow_options *opt)
{
    from_record(ex, opts, "solver", "solver", CLI_STRING, &a->solver);
    from_record(ex, opts, "rtol", "rtol", CLI_POS, &a->rtol);
    from_record(ex, opts, "atol", "atol", CLI_POS, &a->atol);
    from_record(ex, opts, "max-steps", "max_steps", CLI_COUNT, &a->max_steps);
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

double *cli_read_data(const char *spec, const char *dflt, size_t D, size_t *N, size_t *Dout)
{
    cnf_data_address a;
    if (cnf_data_address_parse(spec, dflt, &a) != CNF_OK)
        cli_usage("%s", cnf_last_error());
    double *X = NULL;
    size_t n = 0, d = 0;
    cli_check(cnf_data_read(a.file, a.path, &X, &n, &d), NULL);
    char name[CNF_DATA_FILE_MAX + CNF_DATA_PATH_MAX + 2];
    snprintf(name, sizeof name, "%s:%s", a.file, a.path);
    if (D && d != D)
        cli_die("%s has %zu columns but the model's dimension is %zu", name, d, D);
    cli_check(cnf_data_check_finite(X, n, d, name), NULL);
    *N = n;
    if (Dout)
        *Dout = d;
    return X;
}

void cli_data_name(const char *spec, const char *dflt, char *buf, size_t n)
{
    cnf_data_address a;
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
    cli_check(s, out);
}
