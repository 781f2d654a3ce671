/* testutil.c — see testutil.h. */
#define _XOPEN_SOURCE 700
#include "testutil.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>

void tu_program_setup(void)
{
    openblas_set_num_threads(1);
}

void tu_fd_gradient(tu_scalar_fn fn, void *ctx, double *x, size_t n, double h, double *grad)
{
    for (size_t i = 0; i < n; i++) {
        double xi = x[i];
        double step = h * fmax(1.0, fabs(xi));
        x[i] = xi + step;
        double fp = fn(x, ctx);
        x[i] = xi - step;
        double fm = fn(x, ctx);
        x[i] = xi;
        grad[i] = (fp - fm) / (2.0 * step);
    }
}

void tu_fd_gradient4(tu_scalar_fn fn, void *ctx, double *x, size_t n, double h, double *grad)
{
    static const double off[4] = { -2, -1, 1, 2 };
    for (size_t i = 0; i < n; i++) {
        double xi = x[i], step = h * fmax(1.0, fabs(xi)), f[4];
        for (int m = 0; m < 4; m++) {
            x[i] = xi + off[m] * step;
            f[m] = fn(x, ctx);
        }
        x[i] = xi;
        grad[i] = (8.0 * (f[2] - f[1]) - (f[3] - f[0])) / (12.0 * step);
    }
}

gsl_rng *tu_rng(unsigned long seed)
{
    gsl_rng *r = gsl_rng_alloc(gsl_rng_mt19937);
    ck_assert_ptr_nonnull(r);
    gsl_rng_set(r, seed);
    return r;
}

cnf_flow *tu_flow(size_t D, size_t K, const char *hidden, cnf_layer_type type, cnf_activation act,
                  const double *T, gsl_rng *r)
{
    cnf_net_config cfg[8];
    ck_assert_uint_le(K, 8);
    for (size_t k = 0; k < K; k++) {
        cnf_net_config_default(&cfg[k], D);
        ck_assert_int_eq(cnf_net_config_parse_hidden(&cfg[k], hidden), CNF_OK);
        cfg[k].layer_type = type;
        cfg[k].activation = act;
    }
    cnf_flow *flow = cnf_flow_alloc(D, K, cfg, T);
    ck_assert_msg(flow != NULL, "%s", cnf_last_error());
    cnf_flow_init_params(flow, r, 0);
    return flow;
}

void tu_set_tol(cnf_flow_options *opt, double fwd, double back)
{
    opt->solver.rtol = opt->solver.atol = fwd;
    opt->adjoint.solver.rtol = opt->adjoint.solver.atol = back;
}

double tu_max_rel_error(const char *name, const double *a, const double *b, size_t n,
                        double floor, double tol)
{
    double worst = 0.0;
    int shown = 0;
    for (size_t i = 0; i < n; i++) {
        double scale = fmax(fmax(fabs(a[i]), fabs(b[i])), floor);
        double rel = fabs(a[i] - b[i]) / scale;
        if (!(rel <= worst))
            worst = isnan(rel) ? INFINITY : rel;
        if (!(rel <= tol) && shown < 5) {
            fprintf(stderr, "%s[%zu]: %.12g vs %.12g (rel %.3g)\n", name, i, a[i], b[i], rel);
            shown++;
        }
    }
    return worst;
}

int tu_run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

const char *tu_repo_path(char *buf, size_t n, const char *relative)
{
    snprintf(buf, n, "%s/%s", CNF_SOURCE_DIR, relative);
    return buf;
}

cnf_train_state *tu_state_copy(const cnf_train_state *src)
{
    size_t P = src->n_params;
    cnf_train_state *st = cnf_train_state_alloc(P, src->seed);
    ck_assert_ptr_nonnull(st);
    st->iteration = src->iteration;
    memcpy(st->params, src->params, P * sizeof(double));
    memcpy(st->adam_m, src->adam_m, P * sizeof(double));
    memcpy(st->adam_v, src->adam_v, P * sizeof(double));
    memcpy(st->best_params, src->best_params, P * sizeof(double));
    st->lr = src->lr;
    st->has_best = src->has_best;
    st->best_val_nll = src->best_val_nll;
    st->best_iteration = src->best_iteration;
    st->last_val_nll = src->last_val_nll;
    st->bad_validations = src->bad_validations;
    if (src->n_step_hints > 0) {
        st->step_hints = malloc(src->n_step_hints * sizeof(double));
        ck_assert_ptr_nonnull(st->step_hints);
        memcpy(st->step_hints, src->step_hints, src->n_step_hints * sizeof(double));
        st->n_step_hints = src->n_step_hints;
    }
    size_t n;
    const void *bytes = cnf_train_state_rng_bytes(src, &n);
    ck_assert_int_eq(cnf_train_state_set_rng_bytes(st, bytes, n), CNF_OK);
    return st;
}

void tu_tmpdir_make(char *buf, size_t n, const char *prefix)
{
    snprintf(buf, n, "/tmp/%s.XXXXXX", prefix);
    ck_assert_ptr_nonnull(mkdtemp(buf));
}

void tu_tmpdir_remove(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char p[1024];
        while ((e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            if (unlink(p) != 0)
                rmdir(p);
        }
        closedir(d);
    }
    rmdir(dir);
}
