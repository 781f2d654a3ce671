/* test_threads.c — batch splitting over threads (cnf_net_work_alloc_threads,
 * cnf_flow_options.threads): the network's values, tangents and reverse
 * sweep, the flow's log-likelihood, sampling and NLL gradient agree with one
 * thread up to the order of the batch sums, repeat bit for bit with the same
 * thread count, and work for batches smaller than the thread count. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <gsl/gsl_rng.h>

#include "cnf/flow.h"
#include "cnf/net.h"
#include "testutil.h"

static void fill(double *x, size_t n, gsl_rng *r)
{
    for (size_t i = 0; i < n; i++)
        x[i] = 2.0 * gsl_rng_uniform(r) - 1.0;
}

static int same_bits(const double *a, const double *b, size_t n)
{
    return memcmp(a, b, n * sizeof *a) == 0;
}

/* ---- network ------------------------------------------------------------ */

/* One forward pass and one reverse sweep on a workspace of n_threads;
 * out = [f (BD) | jv (KBD) | zbar (BD) | thetabar (P) | tbar (1)]. */
static void net_pass(const cnf_net *net, const double *theta, size_t n_threads, size_t B,
                     size_t K, const double *z, const double *v, const double *fbar,
                     const double *jvbar, double *out)
{
    size_t D = cnf_net_get_config(net)->dim, P = cnf_net_num_params(net);
    cnf_net_work *w = cnf_net_work_alloc_threads(net, B > 0 ? B : 1, K, n_threads);
    ck_assert_ptr_nonnull(w);
    ck_assert_uint_eq(cnf_net_work_threads(w), n_threads);
    double *f = out, *jv = f + B * D, *zbar = jv + K * B * D, *tb = zbar + B * D;
    double *tbar = tb + P;
    memset(zbar, 0, (B * D + P + 1) * sizeof *zbar);
    tbar[0] = 0.25;   /* the sweep adds to what is there */
    tb[0] = -1.5;
    ck_assert_int_eq(cnf_net_forward(net, w, theta, 0.37, z, B, K, v, f, K ? jv : NULL), CNF_OK);
    ck_assert_int_eq(cnf_net_backward(net, w, theta, fbar, K ? jvbar : NULL, zbar, tb, tbar),
                     CNF_OK);
    cnf_net_work_free(w);
}

static void check_net(cnf_layer_type type, cnf_activation act, size_t D, size_t B, int unit)
{
    cnf_net_config cfg;
    cnf_net_config_default(&cfg, D);
    ck_assert_int_eq(cnf_net_config_parse_hidden(&cfg, "16-12"), CNF_OK);
    cfg.layer_type = type;
    cfg.activation = act;
    cnf_net *net = cnf_net_alloc(&cfg);
    ck_assert_ptr_nonnull(net);
    size_t P = cnf_net_num_params(net), K = unit ? D : 1;
    gsl_rng *r = tu_rng(11 + B + D);
    double *theta = malloc(P * sizeof *theta);
    cnf_net_init(net, theta, r, 0);
    size_t n = B * D, len = n + K * n + n + P + 1;
    double *z = malloc((n + 1) * sizeof *z), *v = malloc((K * n + 1) * sizeof *v);
    double *fbar = malloc((n + 1) * sizeof *fbar), *jvbar = malloc((K * n + 1) * sizeof *jvbar);
    fill(z, n, r);
    fill(v, K * n, r);
    fill(fbar, n, r);
    fill(jvbar, K * n, r);
    double *o1 = malloc(len * sizeof *o1), *o2 = malloc(len * sizeof *o2);
    double *o2b = malloc(len * sizeof *o2b), *o3 = malloc(len * sizeof *o3);
    const double *vv = unit ? NULL : v;
    net_pass(net, theta, 1, B, K, z, vv, fbar, jvbar, o1);
    net_pass(net, theta, 2, B, K, z, vv, fbar, jvbar, o2);
    net_pass(net, theta, 2, B, K, z, vv, fbar, jvbar, o2b);
    net_pass(net, theta, 3, B, K, z, vv, fbar, jvbar, o3);
    /* Per-row values and tangents, and zbar, depend on no batch sum. */
    ck_assert(tu_max_rel_error("f, jv, zbar (2 threads)", o1, o2, n + K * n + n, 1e-12, 1e-13)
              <= 1e-13);
    ck_assert(tu_max_rel_error("f, jv, zbar (3 threads)", o1, o3, n + K * n + n, 1e-12, 1e-13)
              <= 1e-13);
    /* thetabar and tbar: sums over the batch in another order */
    ck_assert(tu_max_rel_error("thetabar, tbar (2 threads)", o1 + 2 * n + K * n,
                               o2 + 2 * n + K * n, P + 1, 1e-10, 1e-12) <= 1e-12);
    ck_assert(tu_max_rel_error("thetabar, tbar (3 threads)", o1 + 2 * n + K * n,
                               o3 + 2 * n + K * n, P + 1, 1e-10, 1e-12) <= 1e-12);
    ck_assert_msg(same_bits(o2, o2b, len), "two runs with 2 threads differ");
    free(o1);
    free(o2);
    free(o2b);
    free(o3);
    free(z);
    free(v);
    free(fbar);
    free(jvbar);
    free(theta);
    gsl_rng_free(r);
    cnf_net_free(net);
}

START_TEST(test_net_threads_match_one)
{
    /* B below, at and above the thread counts (empty parts for B = 1, 2) */
    const size_t Bs[] = { 1, 2, 7, 64 };
    for (size_t i = 0; i < sizeof Bs / sizeof Bs[0]; i++) {
        check_net(CNF_LAYER_CONCATSQUASH, CNF_ACT_TANH, 2, Bs[i], 1);
        check_net(CNF_LAYER_CONCATSQUASH, CNF_ACT_TANH, 3, Bs[i], 0);
    }
    check_net(CNF_LAYER_CONCAT, CNF_ACT_SOFTPLUS, 3, 7, 1);
    check_net(CNF_LAYER_IGNORE, CNF_ACT_ELU, 2, 7, 0);
    check_net(CNF_LAYER_CONCATSQUASH, CNF_ACT_SWISH, 4, 33, 1);
}
END_TEST

START_TEST(test_net_threads_bad_count)
{
    cnf_net_config cfg;
    cnf_net_config_default(&cfg, 2);
    cnf_net *net = cnf_net_alloc(&cfg);
    ck_assert_ptr_null(cnf_net_work_alloc_threads(net, 10, 2, 0));
    ck_assert_ptr_null(cnf_net_work_alloc_threads(net, 10, 2, CNF_NET_MAX_THREADS + 1));
    cnf_net_free(net);
}
END_TEST

/* ---- flow --------------------------------------------------------------- */

/* A 2-block flow of 16-16 concatsquash tanh networks, random parameters. */
static cnf_flow *small_flow(size_t D)
{
    const double T[2] = { 0.5, 0.4 };
    gsl_rng *r = tu_rng(5);
    cnf_flow *flow = tu_flow(D, 2, "16-16", CNF_LAYER_CONCATSQUASH, CNF_ACT_TANH, T, r);
    gsl_rng_free(r);
    return flow;
}

typedef struct {
    double *loglik;   /* N */
    double *x;        /* N x D: decoded from fixed latents */
    double nll, loss;
    double *grad;     /* P */
} flow_out;

static void flow_run(const cnf_flow *flow, const cnf_flow_options *base, size_t threads,
                     const double *X, const double *Z, size_t N, size_t B, flow_out *o)
{
    cnf_flow_options opt = *base;
    opt.threads = threads;
    cnf_flow_work *w = cnf_flow_work_alloc(flow, B, &opt);
    ck_assert_ptr_nonnull(w);
    gsl_rng *r = tu_rng(77);
    ck_assert_int_eq(cnf_flow_log_likelihood(flow, w, X, N, r, o->loglik, NULL), CNF_OK);
    ck_assert_int_eq(cnf_flow_decode(flow, w, Z, N, o->x, NULL), CNF_OK);
    ck_assert_int_eq(cnf_flow_nll_grad(flow, w, X, B, r, &o->nll, &o->loss, o->grad, NULL),
                     CNF_OK);
    gsl_rng_free(r);
    cnf_flow_work_free(w);
}

static void check_flow(const cnf_flow_options *base, size_t D, size_t N, size_t B)
{
    cnf_flow *flow = small_flow(D);
    size_t P = cnf_flow_num_params(flow);
    gsl_rng *r = tu_rng(3);
    double *X = malloc(N * D * sizeof *X), *Z = malloc(N * D * sizeof *Z);
    fill(X, N * D, r);
    cnf_flow_draw_latent(r, N, D, Z);
    gsl_rng_free(r);
    flow_out o[3];
    for (int i = 0; i < 3; i++) {
        o[i].loglik = malloc(N * sizeof *o[i].loglik);
        o[i].x = malloc(N * D * sizeof *o[i].x);
        o[i].grad = malloc(P * sizeof *o[i].grad);
    }
    flow_run(flow, base, 1, X, Z, N, B, &o[0]);
    flow_run(flow, base, 2, X, Z, N, B, &o[1]);
    flow_run(flow, base, 2, X, Z, N, B, &o[2]);
    ck_assert(tu_max_rel_error("log-likelihood", o[0].loglik, o[1].loglik, N, 1e-3, 1e-12)
              <= 1e-12);
    ck_assert(tu_max_rel_error("samples", o[0].x, o[1].x, N * D, 1e-3, 1e-12) <= 1e-12);
    ck_assert(tu_max_rel_error("nll", &o[0].nll, &o[1].nll, 1, 1e-3, 1e-12) <= 1e-12);
    ck_assert(tu_max_rel_error("loss", &o[0].loss, &o[1].loss, 1, 1e-3, 1e-12) <= 1e-12);
    /* relative to the gradient's scale: entries near zero carry the same
     * absolute error as the rest */
    double gmax = 0.0;
    for (size_t i = 0; i < P; i++)
        gmax = fmax(gmax, fabs(o[0].grad[i]));
    ck_assert(tu_max_rel_error("gradient", o[0].grad, o[1].grad, P, 1e-3 * gmax, 1e-12)
              <= 1e-12);
    ck_assert_msg(same_bits(o[1].loglik, o[2].loglik, N) && same_bits(o[1].x, o[2].x, N * D)
                  && same_bits(o[1].grad, o[2].grad, P) && o[1].nll == o[2].nll
                  && o[1].loss == o[2].loss, "two runs with 2 threads differ");
    for (int i = 0; i < 3; i++) {
        free(o[i].loglik);
        free(o[i].x);
        free(o[i].grad);
    }
    free(X);
    free(Z);
    cnf_flow_free(flow);
}

START_TEST(test_flow_threads_exact)
{
    cnf_flow_options opt;
    cnf_flow_options_default(&opt);
    check_flow(&opt, 2, 40, 40);
    check_flow(&opt, 2, 15, 7);   /* odd chunks: 7, 7, 1 */
    check_flow(&opt, 2, 3, 1);    /* one row: one part is empty */
}
END_TEST

START_TEST(test_flow_threads_hutchinson_regularized)
{
    cnf_flow_options opt;
    cnf_flow_options_default(&opt);
    opt.divergence = CNF_DIV_GAUSSIAN;
    opt.reg_kinetic = 0.05;
    opt.reg_jacobian = 0.02;
    check_flow(&opt, 3, 21, 21);
    opt.adjoint.backsolve = 1;
    opt.adjoint.seminorm = 1;
    check_flow(&opt, 3, 9, 9);
}
END_TEST

START_TEST(test_flow_threads_fixed)
{
    cnf_flow *flow = small_flow(2);
    cnf_flow_options opt;
    cnf_flow_options_default(&opt);
    opt.threads = 2;
    cnf_flow_work *w = cnf_flow_work_alloc(flow, 8, &opt);
    ck_assert_ptr_nonnull(w);
    opt.solver.rtol = 1e-6;   /* other options may change */
    ck_assert_int_eq(cnf_flow_work_set_options(w, &opt), CNF_OK);
    opt.threads = 1;          /* the thread count may not */
    ck_assert_int_eq(cnf_flow_work_set_options(w, &opt), CNF_EINVAL);
    cnf_flow_work_free(w);
    cnf_flow_free(flow);
}
END_TEST

int main(void)
{
    tu_program_setup();
    Suite *s = suite_create("threads");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_net_threads_match_one);
    tcase_add_test(tc, test_net_threads_bad_count);
    tcase_add_test(tc, test_flow_threads_exact);
    tcase_add_test(tc, test_flow_threads_hutchinson_regularized);
    tcase_add_test(tc, test_flow_threads_fixed);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
