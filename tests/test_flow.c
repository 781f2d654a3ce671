/* test_flow.c — flow evaluation and sampling: the closed form of a linear
 * flow (log-determinant T tr(W)), sample then encode, Hutchinson's estimate
 * against the exact trace, chunking, failure on NaN dynamics, and the
 * reference models (independent DOP853 values, tests/data/reference). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gsl/gsl_linalg.h>
#include <gsl/gsl_rng.h>
#include <hdf5.h>

#include "cnf/flow.h"
#include "cnf/io.h"
#include "testutil.h"

/* A flow of 2 blocks of 8-8 networks with random parameters. */
static cnf_flow *tiny_flow(size_t D, cnf_layer_type type, unsigned long seed)
{
    const double T[2] = { 0.5, 0.7 };
    gsl_rng *r = tu_rng(seed);
    cnf_flow *flow = tu_flow(D, 2, "8-8", type, CNF_ACT_TANH, T, r);
    for (size_t i = 0; i < D; i++) {
        cnf_flow_mean(flow)[i] = 0.3 - 0.2 * (double)i;
        cnf_flow_scale(flow)[i] = 0.8 + 0.3 * (double)i;
    }
    gsl_rng_free(r);
    return flow;
}

static void random_points(size_t N, size_t D, unsigned long seed, double *X)
{
    gsl_rng *r = tu_rng(seed);
    for (size_t i = 0; i < N * D; i++)
        X[i] = 2.0 * gsl_rng_uniform(r) - 1.0;
    gsl_rng_free(r);
}

static double max_abs_diff(const double *a, const double *b, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++)
        m = fmax(m, fabs(a[i] - b[i]));
    return m;
}

/* ---- closed form: f = W z + b ----------------------------------------- */

START_TEST(test_linear_flow_closed_form)
{
    enum { D = 3, N = 5 };
    cnf_net_config cfg[2];
    for (size_t k = 0; k < 2; k++) {
        cnf_net_config_default(&cfg[k], D);
        ck_assert_int_eq(cnf_net_config_parse_hidden(&cfg[k], ""), CNF_OK);
        cfg[k].layer_type = CNF_LAYER_IGNORE;
    }
    const double T[2] = { 0.7, 0.4 };
    cnf_flow *flow = cnf_flow_alloc(D, 2, cfg, T);
    ck_assert_ptr_nonnull(flow);
    gsl_rng *r = tu_rng(5);
    double *theta = cnf_flow_params(flow);
    double Wb[2][D * D + D];
    for (size_t k = 0; k < 2; k++) {
        const cnf_net *net = cnf_flow_block_net(flow, k);
        ck_assert_uint_eq(cnf_net_num_layers(net), 1);
        cnf_net_layer lv;
        ck_assert_int_eq(cnf_net_layer_view(net, 0, &lv), CNF_OK);
        double *th = theta + cnf_flow_block_offset(flow, k);
        for (size_t i = 0; i < D * D; i++)
            Wb[k][i] = th[lv.W + i] = 1.2 * (gsl_rng_uniform(r) - 0.5);
        for (size_t i = 0; i < D; i++)
            Wb[k][D * D + i] = th[lv.b + i] = gsl_rng_uniform(r) - 0.5;
    }
    gsl_rng_free(r);
    const double mean[D] = { 0.5, -1.0, 2.0 }, scale[D] = { 2.0, 0.5, 1.5 };
    memcpy(cnf_flow_mean(flow), mean, sizeof mean);
    memcpy(cnf_flow_scale(flow), scale, sizeof scale);

    double X[N * D];
    random_points(N, D, 11, X);
    /* expected: z_{k+1} = E_k z_k + c_k from expm([[W T, b T], [0, 0]]) */
    double zexp[N * D], llexp[N];
    for (size_t n = 0; n < N; n++) {
        double z[D];
        for (size_t i = 0; i < D; i++)
            z[i] = (X[n * D + i] - mean[i]) / scale[i];
        double ld = 0.0;
        for (size_t k = 0; k < 2; k++) {
            double M[(D + 1) * (D + 1)] = { 0 }, E[(D + 1) * (D + 1)];
            for (size_t i = 0; i < D; i++) {
                for (size_t j = 0; j < D; j++)
                    M[i * (D + 1) + j] = Wb[k][i * D + j] * T[k];
                M[i * (D + 1) + D] = Wb[k][D * D + i] * T[k];
                ld += Wb[k][i * D + i] * T[k];
            }
            gsl_matrix_view mv = gsl_matrix_view_array(M, D + 1, D + 1);
            gsl_matrix_view ev = gsl_matrix_view_array(E, D + 1, D + 1);
            ck_assert_int_eq(gsl_linalg_exponential_ss(&mv.matrix, &ev.matrix, GSL_PREC_DOUBLE), 0);
            double zn[D];
            for (size_t i = 0; i < D; i++) {
                zn[i] = E[i * (D + 1) + D];
                for (size_t j = 0; j < D; j++)
                    zn[i] += E[i * (D + 1) + j] * z[j];
            }
            memcpy(z, zn, sizeof z);
        }
        double sq = 0.0, lscale = 0.0;
        for (size_t i = 0; i < D; i++) {
            sq += z[i] * z[i];
            lscale += log(scale[i]);
        }
        memcpy(zexp + n * D, z, sizeof z);
        llexp[n] = -0.5 * sq - 0.5 * D * log(2.0 * 3.14159265358979323846) + ld - lscale;
    }

    cnf_flow_options opt;
    cnf_flow_options_default(&opt);
    tu_set_tol(&opt, 1e-11, 1e-11);
    cnf_flow_work *w = cnf_flow_work_alloc(flow, N, &opt);
    ck_assert_ptr_nonnull(w);
    double ll[N], Z[N * D], Xb[N * D];
    cnf_flow_stats st;
    ck_assert_int_eq(cnf_flow_log_likelihood(flow, w, X, N, NULL, ll, &st), CNF_OK);
    ck_assert_uint_gt(st.forward.nfe, 0);
    ck_assert_double_le(tu_max_rel_error("loglik", ll, llexp, N, 1.0, 1e-9), 1e-9);
    ck_assert_int_eq(cnf_flow_encode(flow, w, X, N, Z, NULL), CNF_OK);
    ck_assert_double_le(tu_max_rel_error("z", Z, zexp, N * D, 1.0, 1e-9), 1e-9);
    ck_assert_int_eq(cnf_flow_decode(flow, w, Z, N, Xb, NULL), CNF_OK);
    ck_assert_double_le(tu_max_rel_error("x", Xb, X, N * D, 1.0, 1e-9), 1e-9);
    cnf_flow_work_free(w);
    cnf_flow_free(flow);
}
END_TEST

/* ---- sampling -------------------------------------------------------- */

START_TEST(test_sample_then_encode)
{
    enum { D = 2, N = 50 };
    cnf_flow *flow = tiny_flow(D, CNF_LAYER_CONCATSQUASH, 3);
    cnf_flow_options opt;
    cnf_flow_options_default(&opt);
    tu_set_tol(&opt, 1e-9, 1e-9);
    cnf_flow_work *w = cnf_flow_work_alloc(flow, 16, &opt);   /* chunks of 16 */
    double Z[N * D], Z2[N * D], X[N * D], Z3[N * D];
    gsl_rng *r = tu_rng(77);
    cnf_flow_draw_latent(r, N, D, Z);
    gsl_rng_set(r, 77);
    cnf_flow_draw_latent(r, N, D, Z2);
    ck_assert_double_eq(max_abs_diff(Z, Z2, N * D), 0.0);   /* a seed fixes the draw */
    cnf_flow_stats st;
    ck_assert_int_eq(cnf_flow_decode(flow, w, Z, N, X, &st), CNF_OK);
    ck_assert_uint_gt(st.forward.nfe, 0);
    ck_assert_int_eq(cnf_flow_encode(flow, w, X, N, Z3, NULL), CNF_OK);
    double err = max_abs_diff(Z, Z3, N * D);
    printf("sample then encode: max |z - encode(decode(z))| = %.2e\n", err);
    ck_assert_double_le(err, 1e-7);
    ck_assert_double_gt(max_abs_diff(X, Z, N * D), 1e-2);   /* the flow did something */
    gsl_rng_free(r);
    cnf_flow_work_free(w);
    cnf_flow_free(flow);
}
END_TEST

/* ---- Hutchinson ------------------------------------------------------ */

static void hutchinson_case(cnf_divergence kind)
{
    enum { D = 3, NP = 4, REP = 300 };
    cnf_flow *flow = tiny_flow(D, CNF_LAYER_CONCATSQUASH, 21);
    double Xp[NP * D];
    random_points(NP, D, 8, Xp);
    cnf_flow_options opt;
    cnf_flow_options_default(&opt);
    tu_set_tol(&opt, 1e-8, 1e-8);
    cnf_flow_work *w = cnf_flow_work_alloc(flow, NP * REP, &opt);
    double exact[NP];
    ck_assert_int_eq(cnf_flow_log_likelihood(flow, w, Xp, NP, NULL, exact, NULL), CNF_OK);
    /* each point repeated REP times: every row gets its own noise */
    double *X = malloc(NP * REP * D * sizeof *X), *ll = malloc(NP * REP * sizeof *ll);
    for (size_t i = 0; i < NP * REP; i++)
        memcpy(X + i * D, Xp + (i % NP) * D, D * sizeof *X);
    opt.divergence = kind;
    ck_assert_int_eq(cnf_flow_work_set_options(w, &opt), CNF_OK);
    ck_assert_int_eq(cnf_flow_log_likelihood(flow, w, X, NP * REP, NULL, ll, NULL), CNF_EINVAL);
    gsl_rng *r = tu_rng(99);
    ck_assert_int_eq(cnf_flow_log_likelihood(flow, w, X, NP * REP, r, ll, NULL), CNF_OK);
    for (size_t p = 0; p < NP; p++) {
        double m = 0.0, s2 = 0.0;
        for (size_t i = 0; i < REP; i++)
            m += ll[i * NP + p] / REP;
        for (size_t i = 0; i < REP; i++)
            s2 += (ll[i * NP + p] - m) * (ll[i * NP + p] - m) / (REP - 1);
        double se = sqrt(s2 / REP);
        printf("hutchinson %-10s point %zu: exact %.6f mean %.6f (se %.4f, sd %.4f)\n",
               cnf_divergence_name(kind), p, exact[p], m, se, sqrt(s2));
        ck_assert_double_gt(s2, 0.0);   /* it is an estimate */
        ck_assert_msg(fabs(m - exact[p]) < 4.0 * se, "point %zu: mean %g vs exact %g (se %g)", p, m,
                      exact[p], se);
    }
    gsl_rng_free(r);
    free(X);
    free(ll);
    cnf_flow_work_free(w);
    cnf_flow_free(flow);
}

START_TEST(test_hutchinson_unbiased)
{
    hutchinson_case(CNF_DIV_RADEMACHER);
    hutchinson_case(CNF_DIV_GAUSSIAN);
}
END_TEST

/* ---- chunking, failures ---------------------------------------------- */

START_TEST(test_chunking_consistent)
{
    enum { D = 2, N = 11 };
    cnf_flow *flow = tiny_flow(D, CNF_LAYER_CONCAT, 4);
    double X[N * D], ll1[N], ll2[N], Z1[N * D], Z2[N * D];
    random_points(N, D, 12, X);
    cnf_flow_options opt;
    cnf_flow_options_default(&opt);
    tu_set_tol(&opt, 1e-10, 1e-10);
    cnf_flow_work *wa = cnf_flow_work_alloc(flow, N, &opt);
    cnf_flow_work *wb = cnf_flow_work_alloc(flow, 3, &opt);   /* 3+3+3+2 */
    ck_assert_uint_eq(cnf_flow_work_max_batch(wb), 3);
    ck_assert_int_eq(cnf_flow_log_likelihood(flow, wa, X, N, NULL, ll1, NULL), CNF_OK);
    ck_assert_int_eq(cnf_flow_log_likelihood(flow, wb, X, N, NULL, ll2, NULL), CNF_OK);
    /* the batch shares one step size, so chunks differ at the tolerance */
    ck_assert_double_le(max_abs_diff(ll1, ll2, N), 1e-8);
    ck_assert_int_eq(cnf_flow_encode(flow, wa, X, N, Z1, NULL), CNF_OK);
    ck_assert_int_eq(cnf_flow_encode(flow, wb, X, N, Z2, NULL), CNF_OK);
    ck_assert_double_le(max_abs_diff(Z1, Z2, N * D), 1e-8);
    /* a chunk after the first starts from the previous one's first step:
     * the same 3 points twice in one call cost fewer evaluations the second
     * time and give their values again to the tolerance */
    double X2[6 * D], ll6[6], ll3[3];
    memcpy(X2, X, 3 * D * sizeof *X);
    memcpy(X2 + 3 * D, X, 3 * D * sizeof *X);
    cnf_flow_stats st3, st6;
    ck_assert_int_eq(cnf_flow_log_likelihood(flow, wb, X2, 3, NULL, ll3, &st3), CNF_OK);
    ck_assert_int_eq(cnf_flow_log_likelihood(flow, wb, X2, 6, NULL, ll6, &st6), CNF_OK);
    ck_assert_uint_lt(st6.forward.nfe - st3.forward.nfe, st3.forward.nfe);
    for (size_t i = 0; i < 3; i++) {
        ck_assert(ll6[i] == ll3[i]);   /* the first chunk starts cold, as a lone call */
        ck_assert_double_eq_tol(ll6[3 + i], ll3[i], 1e-8);
    }
    /* repeated calls reuse the workspace and give the same numbers */
    ck_assert_int_eq(cnf_flow_log_likelihood(flow, wb, X, N, NULL, ll1, NULL), CNF_OK);
    ck_assert_double_eq(max_abs_diff(ll1, ll2, N), 0.0);
    /* the gradient refuses batches above max_batch */
    double *g = malloc(cnf_flow_num_params(flow) * sizeof *g);
    ck_assert_int_eq(cnf_flow_nll_grad(flow, wb, X, 4, NULL, NULL, NULL, g, NULL), CNF_EDIM);
    /* and accepts a smaller one than it was made for, then a full one */
    double nll_a, nll_b;
    ck_assert_int_eq(cnf_flow_nll_grad(flow, wb, X, 2, NULL, &nll_a, NULL, g, NULL), CNF_OK);
    ck_assert_int_eq(cnf_flow_nll_grad(flow, wb, X, 3, NULL, &nll_b, NULL, g, NULL), CNF_OK);
    ck_assert_double_eq_tol(nll_b, -(ll2[0] + ll2[1] + ll2[2]) / 3.0, 1e-8);
    free(g);
    cnf_flow_work_free(wa);
    cnf_flow_work_free(wb);
    cnf_flow_free(flow);
}
END_TEST

START_TEST(test_nan_dynamics_fail_clearly)
{
    enum { D = 2, N = 5 };
    cnf_flow *flow = tiny_flow(D, CNF_LAYER_CONCATSQUASH, 6);
    /* a NaN weight in block 1 */
    cnf_flow_params(flow)[cnf_flow_block_offset(flow, 1) + 3] = NAN;
    double X[N * D], ll[N], Z[N * D];
    random_points(N, D, 1, X);
    for (size_t i = 0; i < N; i++)
        ll[i] = 123.0;
    cnf_flow_work *w = cnf_flow_work_alloc(flow, N, NULL);
    cnf_status s = cnf_flow_log_likelihood(flow, w, X, N, NULL, ll, NULL);
    printf("NaN dynamics: %s: %s\n", cnf_strerror(s), cnf_last_error());
    ck_assert_int_ne(s, CNF_OK);
    ck_assert_ptr_nonnull(strstr(cnf_last_error(), "block 1"));
    ck_assert_ptr_nonnull(strstr(cnf_last_error(), "rows 0-4"));
    ck_assert_int_ne(cnf_flow_encode(flow, w, X, N, Z, NULL), CNF_OK);
    ck_assert_int_ne(cnf_flow_decode(flow, w, X, N, Z, NULL), CNF_OK);
    double *g = malloc(cnf_flow_num_params(flow) * sizeof *g);
    ck_assert_int_ne(cnf_flow_nll_grad(flow, w, X, N, NULL, NULL, NULL, g, NULL), CNF_OK);
    /* a negative end time is refused before any solve */
    cnf_flow_params(flow)[cnf_flow_block_offset(flow, 1) + 3] = 0.1;
    cnf_flow_params(flow)[cnf_flow_T_index(flow, 0)] = -1.0;
    ck_assert_int_eq(cnf_flow_log_likelihood(flow, w, X, N, NULL, ll, NULL), CNF_EINVAL);
    free(g);
    cnf_flow_work_free(w);
    cnf_flow_free(flow);
}
END_TEST

/* A work made for another flow is refused (CNF_EDIM, message naming the
 * mismatch) by every entry point before it touches anything. */
static void expect_mismatch(const cnf_flow *flow, cnf_flow_work *w, const char *needle)
{
    enum { N = 3, Dmax = 3 };
    double X[N * Dmax], out[N * Dmax], ll[N], g[2048];
    random_points(N, cnf_flow_dim(flow), 2, X);
    ck_assert_uint_le(cnf_flow_num_params(flow), 2048);
    for (size_t i = 0; i < N; i++)
        ll[i] = 123.0;
    ck_assert_int_eq(cnf_flow_log_likelihood(flow, w, X, N, NULL, ll, NULL), CNF_EDIM);
    ck_assert_ptr_nonnull(strstr(cnf_last_error(), "cnf_flow_log_likelihood"));
    ck_assert_ptr_nonnull(strstr(cnf_last_error(), needle));
    ck_assert_double_eq(ll[0], 123.0);
    ck_assert_int_eq(cnf_flow_encode(flow, w, X, N, out, NULL), CNF_EDIM);
    ck_assert_ptr_nonnull(strstr(cnf_last_error(), needle));
    ck_assert_int_eq(cnf_flow_decode(flow, w, X, N, out, NULL), CNF_EDIM);
    ck_assert_ptr_nonnull(strstr(cnf_last_error(), needle));
    ck_assert_int_eq(cnf_flow_nll_grad(flow, w, X, N, NULL, NULL, NULL, g, NULL), CNF_EDIM);
    ck_assert_ptr_nonnull(strstr(cnf_last_error(), "cnf_flow_nll_grad"));
    ck_assert_ptr_nonnull(strstr(cnf_last_error(), needle));
}

START_TEST(test_work_of_another_flow_refused)
{
    cnf_flow *two = tiny_flow(2, CNF_LAYER_CONCATSQUASH, 7);   /* 2 blocks of 8-8 */
    cnf_net_config cfg;
    cnf_net_config_default(&cfg, 2);
    ck_assert_int_eq(cnf_net_config_parse_hidden(&cfg, "8-8"), CNF_OK);
    const double T1 = 0.5;
    cnf_flow *one = cnf_flow_alloc(2, 1, &cfg, &T1);            /* 1 block */
    cnf_net_config cfg3;
    cnf_net_config_default(&cfg3, 3);
    ck_assert_int_eq(cnf_net_config_parse_hidden(&cfg3, "8-8"), CNF_OK);
    cnf_flow *d3 = cnf_flow_alloc(3, 1, &cfg3, &T1);            /* D = 3 */
    ck_assert_int_eq(cnf_net_config_parse_hidden(&cfg, "4-4"), CNF_OK);
    cnf_flow *small = cnf_flow_alloc(2, 1, &cfg, &T1);          /* smaller network */
    ck_assert_ptr_nonnull(one);
    ck_assert_ptr_nonnull(d3);
    ck_assert_ptr_nonnull(small);
    cnf_flow_work *w1 = cnf_flow_work_alloc(one, 4, NULL);
    cnf_flow_work *ws = cnf_flow_work_alloc(small, 4, NULL);
    ck_assert_ptr_nonnull(w1);
    ck_assert_ptr_nonnull(ws);
    expect_mismatch(two, w1, "with 1 block(s), not for this flow of dimension 2 with 2 block(s)");
    expect_mismatch(d3, w1, "dimension 2 with 1 block(s), not for this flow of dimension 3");
    expect_mismatch(one, ws, "block 0's network has");
    /* and the right work still works */
    double X[4 * 2], ll[4];
    random_points(4, 2, 3, X);
    ck_assert_int_eq(cnf_flow_log_likelihood(one, w1, X, 4, NULL, ll, NULL), CNF_OK);
    cnf_flow_work_free(w1);
    cnf_flow_work_free(ws);
    cnf_flow_free(two);
    cnf_flow_free(one);
    cnf_flow_free(d3);
    cnf_flow_free(small);
}
END_TEST

/* A work made for Hutchinson (1 tangent) switched to the exact divergence
 * by cnf_flow_work_set_options grows its tangent buffers and then gives
 * exactly what a work made for exact gives; an evaluation work takes a
 * gradient call (its training parts come then); a workspace size that
 * overflows size_t is refused. */
START_TEST(test_work_grows_with_options)
{
    enum { D = 3, N = 7 };
    cnf_flow *flow = tiny_flow(D, CNF_LAYER_CONCATSQUASH, 9);
    double X[N * D], ll_a[N], ll_b[N];
    random_points(N, D, 4, X);
    cnf_flow_options ex, hu;
    cnf_flow_options_default(&ex);
    hu = ex;
    hu.divergence = CNF_DIV_GAUSSIAN;
    cnf_flow_work *wa = cnf_flow_work_alloc(flow, 4, &ex);
    cnf_flow_work *wb = cnf_flow_work_alloc(flow, 4, &hu);
    ck_assert_ptr_nonnull(wa);
    ck_assert_ptr_nonnull(wb);
    gsl_rng *r = tu_rng(5);
    ck_assert_int_eq(cnf_flow_log_likelihood(flow, wb, X, N, r, ll_b, NULL), CNF_OK);
    ck_assert_int_eq(cnf_flow_work_set_options(wb, &ex), CNF_OK);
    ck_assert_int_eq(cnf_flow_log_likelihood(flow, wa, X, N, NULL, ll_a, NULL), CNF_OK);
    ck_assert_int_eq(cnf_flow_log_likelihood(flow, wb, X, N, NULL, ll_b, NULL), CNF_OK);
    for (size_t i = 0; i < N; i++)
        ck_assert_double_eq(ll_a[i], ll_b[i]);
    /* gradients: exact on both, then back to Hutchinson with the same noise */
    size_t P = cnf_flow_num_params(flow);
    double *ga = malloc(P * sizeof *ga), *gb = malloc(P * sizeof *gb);
    double nll_a, nll_b;
    ck_assert_int_eq(cnf_flow_nll_grad(flow, wa, X, 4, NULL, &nll_a, NULL, ga, NULL), CNF_OK);
    ck_assert_int_eq(cnf_flow_nll_grad(flow, wb, X, 4, NULL, &nll_b, NULL, gb, NULL), CNF_OK);
    ck_assert_double_eq(nll_a, nll_b);
    ck_assert_double_eq(max_abs_diff(ga, gb, P), 0.0);
    ck_assert_int_eq(cnf_flow_work_set_options(wa, &hu), CNF_OK);
    ck_assert_int_eq(cnf_flow_work_set_options(wb, &hu), CNF_OK);
    gsl_rng_set(r, 11);
    ck_assert_int_eq(cnf_flow_nll_grad(flow, wa, X, 4, r, &nll_a, NULL, ga, NULL), CNF_OK);
    gsl_rng_set(r, 11);
    ck_assert_int_eq(cnf_flow_nll_grad(flow, wb, X, 4, r, &nll_b, NULL, gb, NULL), CNF_OK);
    ck_assert_double_eq(nll_a, nll_b);
    ck_assert_double_eq(max_abs_diff(ga, gb, P), 0.0);
    /* sizes that overflow */
    ck_assert_ptr_null(cnf_flow_work_alloc(flow, SIZE_MAX / 2, &hu));
    ck_assert_ptr_nonnull(strstr(cnf_last_error(), "overflows"));
    free(ga);
    free(gb);
    gsl_rng_free(r);
    cnf_flow_work_free(wa);
    cnf_flow_work_free(wb);
    cnf_flow_free(flow);
}
END_TEST

/* warm_start: the gradient's solves start from the first steps the last
 * call suggested. Off, repeated calls are bit for bit the same; on, the
 * second call on the same batch spends fewer evaluations (no probes, no
 * undershooting first steps) and agrees with the cold gradient to the
 * solves' accuracy; the hints are readable, restorable and checked. */
START_TEST(test_warm_start)
{
    enum { D = 2, N = 16 };
    cnf_flow *flow = tiny_flow(D, CNF_LAYER_CONCATSQUASH, 21);
    size_t P = cnf_flow_num_params(flow);
    double X[N * D];
    random_points(N, D, 8, X);
    double *g_cold = malloc(P * sizeof(double)), *g_again = malloc(P * sizeof(double));
    double *g_warm = malloc(P * sizeof(double));
    cnf_flow_options opt;
    cnf_flow_options_default(&opt);
    ck_assert_int_eq(opt.warm_start, 0);
    cnf_flow_work *w = cnf_flow_work_alloc(flow, N, &opt);
    ck_assert_ptr_nonnull(w);
    double hints[4], nll_cold, nll_warm;
    ck_assert_uint_eq(cnf_flow_work_step_hints(w, hints), 4);
    for (size_t i = 0; i < 4; i++)
        ck_assert(hints[i] == 0.0);

    cnf_flow_stats cold, again, warm;
    ck_assert_int_eq(cnf_flow_nll_grad(flow, w, X, N, NULL, &nll_cold, NULL, g_cold, &cold), CNF_OK);
    ck_assert_int_eq(cnf_flow_nll_grad(flow, w, X, N, NULL, NULL, NULL, g_again, &again), CNF_OK);
    ck_assert_int_eq(memcmp(g_cold, g_again, P * sizeof(double)), 0);
    ck_assert_uint_eq(again.forward.nfe, cold.forward.nfe);

    opt.warm_start = 1;
    ck_assert_int_eq(cnf_flow_work_set_options(w, &opt), CNF_OK);
    ck_assert_int_eq(cnf_flow_nll_grad(flow, w, X, N, NULL, NULL, NULL, g_again, NULL), CNF_OK);
    ck_assert_uint_eq(cnf_flow_work_step_hints(w, hints), 4);
    for (size_t i = 0; i < 4; i++)
        ck_assert_msg(hints[i] > 0.0, "hint %zu is %g", i, hints[i]);
    ck_assert_int_eq(cnf_flow_nll_grad(flow, w, X, N, NULL, &nll_warm, NULL, g_warm, &warm), CNF_OK);
    ck_assert_uint_lt(warm.forward.nfe + warm.backward.nfe, cold.forward.nfe + cold.backward.nfe);
    /* both solves hold rtol = atol = 1e-5 per step: the two gradients are
     * two approximations of one, about a tolerance apart (9e-6 measured) */
    double e = tu_max_rel_error("warm vs cold gradient", g_warm, g_cold, P, 1e-2, 1e-4);
    fprintf(stderr, "warm start: evaluations %zu+%zu cold, %zu+%zu warm; gradient rel diff %.2g\n",
            cold.forward.nfe, cold.backward.nfe, warm.forward.nfe, warm.backward.nfe, e);
    ck_assert_double_le(e, 1e-4);
    ck_assert_double_le(fabs(nll_warm - nll_cold), 1e-4 * fabs(nll_cold));

    /* restoring hints: a second work continues exactly as the first */
    cnf_flow_work *w2 = cnf_flow_work_alloc(flow, N, &opt);
    ck_assert_int_eq(cnf_flow_work_step_hints(w, hints), 4);
    ck_assert_int_eq(cnf_flow_work_set_step_hints(w2, hints, 4), CNF_OK);
    ck_assert_int_eq(cnf_flow_nll_grad(flow, w, X, N, NULL, NULL, NULL, g_warm, NULL), CNF_OK);
    ck_assert_int_eq(cnf_flow_nll_grad(flow, w2, X, N, NULL, NULL, NULL, g_again, NULL), CNF_OK);
    ck_assert_int_eq(memcmp(g_warm, g_again, P * sizeof(double)), 0);
    /* bad hints leave the work as it was */
    double bad[4] = { 0.1, -0.1, 0.1, 0.1 }, now[4], before[4];
    cnf_flow_work_step_hints(w2, before);
    ck_assert_int_eq(cnf_flow_work_set_step_hints(w2, bad, 3), CNF_EDIM);
    ck_assert_int_eq(cnf_flow_work_set_step_hints(w2, bad, 4), CNF_EINVAL);
    ck_assert_ptr_nonnull(strstr(cnf_last_error(), "step hint 1"));
    bad[1] = NAN;
    ck_assert_int_eq(cnf_flow_work_set_step_hints(w2, bad, 4), CNF_EINVAL);
    cnf_flow_work_step_hints(w2, now);
    ck_assert_int_eq(memcmp(now, before, sizeof now), 0);
    /* evaluation never uses them: the log-likelihood matches a fresh work */
    double ll_a[N], ll_b[N];
    cnf_flow_work *w3 = cnf_flow_work_alloc(flow, N, NULL);
    ck_assert_int_eq(cnf_flow_log_likelihood(flow, w, X, N, NULL, ll_a, NULL), CNF_OK);
    ck_assert_int_eq(cnf_flow_log_likelihood(flow, w3, X, N, NULL, ll_b, NULL), CNF_OK);
    ck_assert_int_eq(memcmp(ll_a, ll_b, sizeof ll_a), 0);
    /* a first step the user set still counts where no hint exists yet (the
     * first chunk of an evaluation, the first gradient on a warm work) */
    cnf_flow_options tiny = opt;
    tiny.solver.h0 = 1e-4;
    cnf_flow_work *w4 = cnf_flow_work_alloc(flow, N, &tiny);
    cnf_flow_stats s_auto, s_tiny;
    ck_assert_int_eq(cnf_flow_log_likelihood(flow, w3, X, N, NULL, ll_a, &s_auto), CNF_OK);
    ck_assert_int_eq(cnf_flow_log_likelihood(flow, w4, X, N, NULL, ll_b, &s_tiny), CNF_OK);
    ck_assert_uint_gt(s_tiny.forward.nfe, s_auto.forward.nfe);
    ck_assert_int_eq(cnf_flow_nll_grad(flow, w4, X, N, NULL, NULL, NULL, g_again, &s_tiny),
                     CNF_OK);
    ck_assert_uint_gt(s_tiny.forward.nfe, cold.forward.nfe);
    cnf_flow_work_free(w4);
    cnf_flow_work_free(w);
    cnf_flow_work_free(w2);
    cnf_flow_work_free(w3);
    free(g_cold);
    free(g_again);
    free(g_warm);
    cnf_flow_free(flow);
}
END_TEST

START_TEST(test_options_default)
{
    cnf_flow_options opt;
    cnf_flow_options_default(&opt);
    ck_assert_int_eq(opt.solver.method, CNF_ODE_DOPRI5);
    ck_assert_double_eq(opt.solver.rtol, 1e-5);
    ck_assert_double_eq(opt.solver.atol, 1e-5);
    ck_assert_double_eq(opt.adjoint.solver.rtol, 1e-5);
    ck_assert_int_eq(opt.divergence, CNF_DIV_EXACT);
    ck_assert_int_eq(opt.adjoint.backsolve, 0);
    ck_assert_int_eq(opt.adjoint.seminorm, 0);
    ck_assert_double_eq(opt.reg_kinetic, 0.0);
    ck_assert_double_eq(opt.reg_jacobian, 0.0);
}
END_TEST

/* ---- the reference models (tests/data/reference) --------------------- */

static double *read_h5(const char *path, const char *name, size_t *rows, size_t *cols)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    ck_assert_msg(f >= 0, "cannot open %s", path);
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    ck_assert_msg(d >= 0, "no %s in %s", name, path);
    hid_t sp = H5Dget_space(d);
    hsize_t dims[2] = { 1, 1 };
    int nd = H5Sget_simple_extent_dims(sp, dims, NULL);
    ck_assert_int_ge(nd, 1);
    *rows = dims[0];
    *cols = nd > 1 ? dims[1] : 1;
    double *buf = malloc(*rows * *cols * sizeof *buf);
    ck_assert_int_ge(H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf), 0);
    H5Sclose(sp);
    H5Dclose(d);
    H5Fclose(f);
    return buf;
}

START_TEST(test_reference_models)
{
    for (int c = 1; c <= 4; c++) {
        char mpath[1024], epath[1024], rel[64];
        snprintf(rel, sizeof rel, "tests/data/reference/case%d_model.h5", c);
        tu_repo_path(mpath, sizeof mpath, rel);
        snprintf(rel, sizeof rel, "tests/data/reference/case%d_expected.h5", c);
        tu_repo_path(epath, sizeof epath, rel);
        cnf_flow *flow = NULL;
        cnf_status s = cnf_model_load(mpath, &flow, NULL);
        ck_assert_msg(s == CNF_OK, "%s", cnf_last_error());
        size_t N, D, n2, d2, n3, d3;
        double *X = read_h5(epath, "/x", &N, &D);
        double *llref = read_h5(epath, "/loglik", &n2, &d2);
        double *Zin = read_h5(epath, "/z", &n3, &d3);
        double *Sref = read_h5(epath, "/samples", &n3, &d3);
        ck_assert_uint_eq(D, cnf_flow_dim(flow));
        size_t P = cnf_flow_num_params(flow);
        double *gref = malloc(P * sizeof *gref), *g = malloc(P * sizeof *g);
        ck_assert_int_eq(cnf_model_read_grad(epath, "/grad", flow, gref), CNF_OK);

        cnf_flow_options opt;
        cnf_flow_options_default(&opt);
        tu_set_tol(&opt, 1e-11, 1e-11);
        cnf_flow_work *w = cnf_flow_work_alloc(flow, N, &opt);
        double *ll = malloc(N * sizeof *ll), *S = malloc(n3 * D * sizeof *S);
        ck_assert_int_eq(cnf_flow_log_likelihood(flow, w, X, N, NULL, ll, NULL), CNF_OK);
        ck_assert_int_eq(cnf_flow_decode(flow, w, Zin, n3, S, NULL), CNF_OK);
        ck_assert_int_eq(cnf_flow_nll_grad(flow, w, X, 4, NULL, NULL, NULL, g, NULL), CNF_OK);
        double e_ll = tu_max_rel_error("loglik", ll, llref, N, 1.0, 1e-8);
        double e_s = tu_max_rel_error("samples", S, Sref, n3 * D, 1.0, 1e-8);
        double gmax = 0.0;
        for (size_t i = 0; i < P; i++)
            gmax = fmax(gmax, fabs(gref[i]));
        /* The reference gradient is central differences (h = 1e-6) of
         * rtol-1e-12 solves: good to ~1e-7 for smooth activations. elu is
         * only C^1, the solves' step selection then makes the likelihood
         * noisy at ~1e-10, and differences with h = 1e-6 are good to ~1e-4
         * only (test_adjoint checks elu with fourth-order differences). */
        int smooth = cnf_net_get_config(cnf_flow_block_net(flow, 0))->activation != CNF_ACT_ELU;
        double gtol = smooth ? 1e-5 : 2e-3;
        double e_g = tu_max_rel_error("grad", g, gref, P, 1e-2 * gmax, gtol);
        double num = 0.0, den = 0.0;
        for (size_t i = 0; i < P; i++) {
            num += (g[i] - gref[i]) * (g[i] - gref[i]);
            den += gref[i] * gref[i];
        }
        printf("reference case %d (D=%zu, K=%zu, %s, P=%zu): max rel err loglik %.2e samples %.2e "
               "grad %.2e (norm-wise %.2e)\n", c, D, cnf_flow_num_blocks(flow),
               cnf_activation_name(cnf_net_get_config(cnf_flow_block_net(flow, 0))->activation), P,
               e_ll, e_s, e_g, sqrt(num / den));
        fflush(stdout);
        ck_assert_double_le(e_ll, 1e-8);
        ck_assert_double_le(e_s, 1e-8);
        ck_assert_double_le(e_g, gtol);
        ck_assert_double_le(sqrt(num / den), smooth ? 1e-7 : 1e-4);
        free(ll);
        free(S);
        free(g);
        free(gref);
        free(X);
        free(llref);
        free(Zin);
        free(Sref);
        cnf_flow_work_free(w);
        cnf_flow_free(flow);
    }
}
END_TEST

/* Batch parts (data parallelism): the parts of a batch, each drawing the
 * whole batch's Hutchinson noise and keeping its rows', add up to the whole
 * batch's NLL, loss and gradient. With a fixed-step method the parts take
 * the steps of the whole, so the sums agree to rounding; with dopri5 each
 * part chooses its own steps and they agree to the solves' accuracy. */
START_TEST(test_batch_parts_add_up)
{
    enum { D = 2, N = 10 };
    static const size_t cut[3] = { 0, 4, N };
    cnf_flow *flow = tiny_flow(D, CNF_LAYER_CONCATSQUASH, 31);
    size_t P = cnf_flow_num_params(flow);
    double X[N * D];
    random_points(N, D, 9, X);
    double *g_whole = malloc(P * sizeof(double)), *g_sum = malloc(P * sizeof(double));
    double *g_part = malloc(P * sizeof(double));
    for (int fixed = 1; fixed >= 0; fixed--) {
        cnf_flow_options opt;
        cnf_flow_options_default(&opt);
        opt.divergence = CNF_DIV_GAUSSIAN;
        opt.reg_kinetic = 0.1;
        opt.reg_jacobian = 0.05;
        if (fixed) {
            opt.solver.method = CNF_ODE_RK4;
            opt.solver.h0 = 0.05;
        } else {
            tu_set_tol(&opt, 1e-10, 1e-10);
        }
        opt.adjoint.solver = opt.solver;
        cnf_flow_work *w = cnf_flow_work_alloc(flow, N, &opt);
        ck_assert_ptr_nonnull(w);
        gsl_rng *r = tu_rng(77);
        double nll_whole, loss_whole, nll_sum = 0.0, loss_sum = 0.0;
        ck_assert_int_eq(cnf_flow_nll_grad(flow, w, X, N, r, &nll_whole, &loss_whole, g_whole,
                                           NULL), CNF_OK);
        memset(g_sum, 0, P * sizeof(double));
        for (int part = 0; part < 2; part++) {
            gsl_rng_set(r, 77);
            double nll_p, loss_p;
            size_t row0 = cut[part], B = cut[part + 1] - cut[part];
            ck_assert_int_eq(cnf_flow_nll_grad_part(flow, w, X + row0 * D, B, row0, N, r, &nll_p,
                                                    &loss_p, g_part, NULL), CNF_OK);
            nll_sum += nll_p;
            loss_sum += loss_p;
            for (size_t i = 0; i < P; i++)
                g_sum[i] += g_part[i];
        }
        double tol = fixed ? 1e-12 : 1e-7;
        ck_assert_msg(fabs(nll_sum - nll_whole) <= tol * fabs(nll_whole), "%s: nll %.17g vs %.17g",
                      fixed ? "rk4" : "dopri5", nll_sum, nll_whole);
        ck_assert(fabs(loss_sum - loss_whole) <= tol * fabs(loss_whole));
        double e = tu_max_rel_error(fixed ? "parts vs whole, rk4" : "parts vs whole, dopri5",
                                    g_sum, g_whole, P, 1e-2, tol);
        fprintf(stderr, "batch parts (%s): nll rel diff %.2g, gradient rel diff %.2g\n",
                fixed ? "rk4" : "dopri5 1e-10", fabs(nll_sum - nll_whole) / fabs(nll_whole), e);
        ck_assert_double_le(e, tol);
        /* rows outside the batch are refused */
        ck_assert_int_eq(cnf_flow_nll_grad_part(flow, w, X, 4, 8, N, r, NULL, NULL, g_part, NULL),
                         CNF_EDIM);
        ck_assert_ptr_nonnull(strstr(cnf_last_error(), "not inside a batch of 10"));
        gsl_rng_free(r);
        cnf_flow_work_free(w);
    }
    free(g_whole);
    free(g_sum);
    free(g_part);
    cnf_flow_free(flow);
}
END_TEST

int main(void)
{
    tu_program_setup();
    Suite *s = suite_create("flow");
    TCase *tc = tcase_create("eval");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_linear_flow_closed_form);
    tcase_add_test(tc, test_sample_then_encode);
    tcase_add_test(tc, test_hutchinson_unbiased);
    tcase_add_test(tc, test_chunking_consistent);
    tcase_add_test(tc, test_nan_dynamics_fail_clearly);
    tcase_add_test(tc, test_work_of_another_flow_refused);
    tcase_add_test(tc, test_work_grows_with_options);
    tcase_add_test(tc, test_options_default);
    tcase_add_test(tc, test_warm_start);
    tcase_add_test(tc, test_batch_parts_add_up);
    tcase_add_test(tc, test_reference_models);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
