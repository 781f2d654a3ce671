/* test_preprocess.c — the preprocessing map (cnf/flow.h, "Preprocessing"):
 * whitening's factor against an independently computed sample correlation,
 * whitened training data with identity covariance, the inverse and the
 * log-determinant; the defining property that a flow with zero dynamics has
 * the density of the training data's Gaussian (full covariance when
 * whitening, diagonal when standardising), checked against a density
 * computed here with GSL; the ridge of singular correlations; the checks of
 * set_whitening; and sampling then encoding through a whitened flow. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gsl/gsl_linalg.h>
#include <gsl/gsl_randist.h>
#include <gsl/gsl_rng.h>

#include "cnf/flow.h"
#include "testutil.h"

#define LOG_2PI 1.83787706640934548356

static double max_abs_diff(const double *a, const double *b, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++)
        m = fmax(m, fabs(a[i] - b[i]));
    return m;
}

/* N rows of x = mu + A g, g ~ N(0, I): a correlated 3-D Gaussian. */
static void correlated_gaussian(size_t N, unsigned long seed, double *X)
{
    static const double mu[3] = { 1.0, -2.0, 0.5 };
    static const double A[9] = { 2.0, 0.0, 0.0, 1.5, 0.5, 0.0, -0.8, 0.6, 0.3 };
    gsl_rng *r = tu_rng(seed);
    for (size_t n = 0; n < N; n++) {
        double g[3];
        for (size_t i = 0; i < 3; i++)
            g[i] = gsl_ran_gaussian(r, 1.0);
        for (size_t i = 0; i < 3; i++) {
            double v = mu[i];
            for (size_t j = 0; j < 3; j++)
                v += A[i * 3 + j] * g[j];
            X[n * 3 + i] = v;
        }
    }
    gsl_rng_free(r);
}

/* The sample mean (D) and (N - 1)-normalised covariance (D x D) of X,
 * computed here without the library. */
static void sample_moments(const double *X, size_t N, size_t D, double *m, double *S)
{
    for (size_t i = 0; i < D; i++) {
        double s = 0.0;
        for (size_t n = 0; n < N; n++)
            s += X[n * D + i];
        m[i] = s / (double)N;
    }
    for (size_t i = 0; i < D; i++)
        for (size_t j = 0; j < D; j++) {
            double s = 0.0;
            for (size_t n = 0; n < N; n++)
                s += (X[n * D + i] - m[i]) * (X[n * D + j] - m[j]);
            S[i * D + j] = s / (double)(N - 1);
        }
}

/* log det S by GSL's LU (S: D x D, copied). */
static double lu_log_det(const double *S, size_t D)
{
    gsl_matrix *M = gsl_matrix_alloc(D, D);
    gsl_permutation *p = gsl_permutation_alloc(D);
    memcpy(M->data, S, D * D * sizeof *S);
    int sign = 0;
    ck_assert_int_eq(gsl_linalg_LU_decomp(M, p, &sign), 0);
    ck_assert_int_eq(gsl_linalg_LU_sgndet(M, sign), 1);
    double ld = gsl_linalg_LU_lndet(M);
    gsl_permutation_free(p);
    gsl_matrix_free(M);
    return ld;
}

/* log N(x; m, S) for each of the N rows of X, by GSL's Cholesky of S. */
static void gaussian_log_density(const double *X, size_t N, size_t D, const double *m,
                                 const double *S, double *out)
{
    gsl_matrix *C = gsl_matrix_alloc(D, D);
    memcpy(C->data, S, D * D * sizeof *S);
    ck_assert_int_eq(gsl_linalg_cholesky_decomp1(C), 0);
    double ld = 0.0;
    for (size_t i = 0; i < D; i++)
        ld += 2.0 * log(gsl_matrix_get(C, i, i));
    gsl_vector *b = gsl_vector_alloc(D), *x = gsl_vector_alloc(D);
    for (size_t n = 0; n < N; n++) {
        for (size_t i = 0; i < D; i++)
            gsl_vector_set(b, i, X[n * D + i] - m[i]);
        ck_assert_int_eq(gsl_linalg_cholesky_solve(C, b, x), 0);
        double q = 0.0;
        for (size_t i = 0; i < D; i++)
            q += gsl_vector_get(b, i) * gsl_vector_get(x, i);
        out[n] = -0.5 * q - 0.5 * ld - 0.5 * (double)D * LOG_2PI;
    }
    gsl_vector_free(x);
    gsl_vector_free(b);
    gsl_matrix_free(C);
}

/* A flow of 2 concatsquash blocks whose parameters are all zero (as
 * cnf_flow_alloc leaves them): f = 0, so z = x_std. */
static cnf_flow *zero_flow(size_t D)
{
    cnf_net_config cfg[2];
    for (size_t k = 0; k < 2; k++) {
        cnf_net_config_default(&cfg[k], D);
        ck_assert_int_eq(cnf_net_config_parse_hidden(&cfg[k], "8-8"), CNF_OK);
    }
    const double T[2] = { 0.5, 1.0 };
    cnf_flow *flow = cnf_flow_alloc(D, 2, cfg, T);
    ck_assert_ptr_nonnull(flow);
    const double *p = cnf_flow_params_const(flow);
    for (size_t i = 0; i < cnf_flow_T_index(flow, 0); i++)
        ck_assert(p[i] == 0.0);
    return flow;
}

/* ---- names -------------------------------------------------------------- */

START_TEST(test_names)
{
    cnf_preprocess k = CNF_PREPROCESS_WHITEN;
    ck_assert_str_eq(cnf_preprocess_name(CNF_PREPROCESS_STANDARDIZE), "standardize");
    ck_assert_str_eq(cnf_preprocess_name(CNF_PREPROCESS_WHITEN), "whiten");
    ck_assert_int_eq(cnf_preprocess_from_name("standardize", &k), CNF_OK);
    ck_assert_int_eq(k, CNF_PREPROCESS_STANDARDIZE);
    ck_assert_int_eq(cnf_preprocess_from_name("whiten", &k), CNF_OK);
    ck_assert_int_eq(k, CNF_PREPROCESS_WHITEN);
    ck_assert_int_eq(cnf_preprocess_from_name("pca", &k), CNF_EINVAL);
    ck_assert_ptr_nonnull(strstr(cnf_last_error(), "'pca' (valid: standardize, whiten)"));
    ck_assert_int_eq(cnf_preprocess_from_name(NULL, &k), CNF_EINVAL);
    ck_assert_int_eq(k, CNF_PREPROCESS_WHITEN);   /* untouched on error */
}
END_TEST

/* ---- the fitted factor and the map ---------------------------------------- */

START_TEST(test_fit_whitening_moments)
{
    enum { D = 3, N = 2000 };
    double *X = malloc(N * D * sizeof *X), *Y = malloc(N * D * sizeof *Y);
    double *Xb = malloc(N * D * sizeof *Xb);
    correlated_gaussian(N, 11, X);
    cnf_flow *flow = zero_flow(D), *std = zero_flow(D);
    ck_assert_int_eq(cnf_flow_preprocess_kind(flow), CNF_PREPROCESS_STANDARDIZE);
    ck_assert_ptr_null(cnf_flow_whitening_const(flow));
    double ridge = -1.0;
    ck_assert_int_eq(cnf_flow_fit_whitening(flow, X, N, &ridge), CNF_OK);
    ck_assert(ridge == 0.0);
    ck_assert_int_eq(cnf_flow_preprocess_kind(flow), CNF_PREPROCESS_WHITEN);
    const double *L = cnf_flow_whitening_const(flow);
    ck_assert_ptr_nonnull(L);

    /* mean and scale are exactly standardisation's */
    ck_assert_int_eq(cnf_flow_fit_preprocess(std, X, N), CNF_OK);
    ck_assert_int_eq(memcmp(cnf_flow_mean_const(flow), cnf_flow_mean_const(std), sizeof(double) * D), 0);
    ck_assert_int_eq(memcmp(cnf_flow_scale_const(flow), cnf_flow_scale_const(std), sizeof(double) * D), 0);

    /* L lower-triangular with a positive diagonal, L L^T = the sample correlation */
    double m[D], S[D * D], corr[D * D], LLt[D * D];
    sample_moments(X, N, D, m, S);
    for (size_t i = 0; i < D; i++) {
        ck_assert(L[i * D + i] > 0.0);
        for (size_t j = i + 1; j < D; j++)
            ck_assert(L[i * D + j] == 0.0);
        for (size_t j = 0; j < D; j++) {
            corr[i * D + j] = S[i * D + j] / sqrt(S[i * D + i] * S[j * D + j]);
            double v = 0.0;
            for (size_t k = 0; k < D; k++)
                v += L[i * D + k] * L[j * D + k];
            LLt[i * D + j] = v;
        }
    }
    double e_corr = max_abs_diff(LLt, corr, D * D);
    ck_assert_double_gt(fabs(corr[1 * D + 0]), 0.5);   /* the data are correlated */

    /* whitened training rows: sample covariance I */
    cnf_flow_preprocess_rows(flow, X, N, Y);
    double my[D], Sy[D * D], I[D * D] = { 1, 0, 0, 0, 1, 0, 0, 0, 1 };
    sample_moments(Y, N, D, my, Sy);
    double e_cov = max_abs_diff(Sy, I, D * D);
    double zero[D] = { 0 };
    double e_mean = max_abs_diff(my, zero, D);

    /* the inverse */
    cnf_flow_unpreprocess_rows(flow, Y, N, Xb);
    double e_inv = tu_max_rel_error("unpreprocess(preprocess(x))", Xb, X, N * D, 1.0, 1e-12);

    /* log|det| = -0.5 log det(sample covariance) */
    double ld = cnf_flow_preprocess_log_det(flow), ld_exp = -0.5 * lu_log_det(S, D);
    double e_ld = fabs(ld - ld_exp);
    /* standardising: -0.5 log of the covariance's diagonal */
    double ld_std = 0.0;
    for (size_t i = 0; i < D; i++)
        ld_std -= 0.5 * log(S[i * D + i]);
    double e_ld_std = fabs(cnf_flow_preprocess_log_det(std) - ld_std);

    printf("fit_whitening: |L L^T - corr| %.2e, |cov(whitened) - I| %.2e, |mean| %.2e, "
           "inverse rel %.2e, log det %.2e (standardise %.2e)\n",
           e_corr, e_cov, e_mean, e_inv, e_ld, e_ld_std);
    ck_assert_double_le(e_corr, 1e-12);
    ck_assert_double_le(e_cov, 1e-10);
    ck_assert_double_le(e_mean, 1e-12);
    ck_assert_double_le(e_inv, 1e-12);
    ck_assert_double_le(e_ld, 1e-10);
    ck_assert_double_le(e_ld_std, 1e-10);

    /* fit_preprocess goes back to standardising */
    ck_assert_int_eq(cnf_flow_fit_preprocess(flow, X, N), CNF_OK);
    ck_assert_int_eq(cnf_flow_preprocess_kind(flow), CNF_PREPROCESS_STANDARDIZE);
    ck_assert_ptr_null(cnf_flow_whitening_const(flow));
    ck_assert(cnf_flow_preprocess_log_det(flow) == cnf_flow_preprocess_log_det(std));

    cnf_flow_free(std);
    cnf_flow_free(flow);
    free(Xb);
    free(Y);
    free(X);
}
END_TEST

/* The defining property: with zero dynamics the flow's density is the
 * Gaussian of the training rows (mean, (N - 1)-normalised covariance), full
 * when whitening and diagonal when standardising. */
START_TEST(test_zero_dynamics_is_training_gaussian)
{
    enum { D = 3, N = 500, M = 40 };
    double *X = malloc(N * D * sizeof *X), Xt[M * D];
    correlated_gaussian(N, 21, X);
    correlated_gaussian(M, 22, Xt);
    for (size_t i = 0; i < D; i++)   /* and a few points far out */
        Xt[(M - 1) * D + i] = 6.0 * (i % 2 ? -1.0 : 1.0), Xt[(M - 2) * D + i] = 0.1 * (double)i;
    double m[D], S[D * D], Sdiag[D * D] = { 0 };
    sample_moments(X, N, D, m, S);
    for (size_t i = 0; i < D; i++)
        Sdiag[i * D + i] = S[i * D + i];
    double full[M], diag[M], ll[M];
    gaussian_log_density(Xt, M, D, m, S, full);
    gaussian_log_density(Xt, M, D, m, Sdiag, diag);

    cnf_flow_options opt;
    cnf_flow_options_default(&opt);
    cnf_flow *flow = zero_flow(D);
    cnf_flow_work *w = cnf_flow_work_alloc(flow, 16, &opt);   /* chunks of 16 */
    ck_assert_ptr_nonnull(w);

    ck_assert_int_eq(cnf_flow_fit_whitening(flow, X, N, NULL), CNF_OK);
    ck_assert_int_eq(cnf_flow_log_likelihood(flow, w, Xt, M, NULL, ll, NULL), CNF_OK);
    double e_white = max_abs_diff(ll, full, M);
    double gap = max_abs_diff(full, diag, M);   /* the two Gaussians differ */

    ck_assert_int_eq(cnf_flow_fit_preprocess(flow, X, N), CNF_OK);
    ck_assert_int_eq(cnf_flow_log_likelihood(flow, w, Xt, M, NULL, ll, NULL), CNF_OK);
    double e_std = max_abs_diff(ll, diag, M);

    printf("zero dynamics: whiten vs full-covariance Gaussian %.2e, standardise vs diagonal "
           "%.2e (the two Gaussians differ by up to %.2f)\n", e_white, e_std, gap);
    ck_assert_double_le(e_white, 1e-9);
    ck_assert_double_le(e_std, 1e-9);
    ck_assert_double_gt(gap, 1.0);

    cnf_flow_work_free(w);
    cnf_flow_free(flow);
    free(X);
}
END_TEST

/* ---- singular correlations ---------------------------------------------- */

static void expect_ridge(const double *X, size_t N, size_t D, const char *what)
{
    cnf_flow *flow = zero_flow(D);
    double ridge = -1.0;
    cnf_status s = cnf_flow_fit_whitening(flow, X, N, &ridge);
    ck_assert_msg(s == CNF_OK, "%s: %s", what, cnf_last_error());
    double ld = cnf_flow_preprocess_log_det(flow);
    const double *L = cnf_flow_whitening_const(flow);
    double dmin = INFINITY;
    for (size_t i = 0; i < D; i++)
        dmin = fmin(dmin, L[i * D + i]);
    printf("%s: ridge %g, log det %.6g, smallest L_ii %.3g\n", what, ridge, ld, dmin);
    ck_assert_double_gt(ridge, 0.0);
    ck_assert_double_le(ridge, 1e-8);
    ck_assert(isfinite(ld));
    ck_assert_double_gt(dmin, 0.0);
    /* the whitened rows and their inverse stay finite and consistent */
    double *Y = malloc(N * D * sizeof *Y), *Xb = malloc(N * D * sizeof *Xb);
    cnf_flow_preprocess_rows(flow, X, N, Y);
    cnf_flow_unpreprocess_rows(flow, Y, N, Xb);
    for (size_t i = 0; i < N * D; i++)
        ck_assert(isfinite(Y[i]));
    ck_assert_double_le(tu_max_rel_error(what, Xb, X, N * D, 1.0, 1e-9), 1e-9);
    free(Xb);
    free(Y);
    cnf_flow_free(flow);
}

START_TEST(test_singular_gets_ridge)
{
    enum { D = 3, N = 200 };
    double *X = malloc(N * D * sizeof *X);
    correlated_gaussian(N, 31, X);
    for (size_t n = 0; n < N; n++)
        X[n * D + 2] = X[n * D + 0];   /* two identical columns */
    expect_ridge(X, N, D, "identical columns");
    for (size_t n = 0; n < N; n++)
        X[n * D + 2] = 3.0;            /* a constant column */
    expect_ridge(X, N, D, "constant column");
    correlated_gaussian(2, 32, X);      /* N = 2 <= D */
    expect_ridge(X, 2, D, "2 rows in 3-D");

    cnf_flow *flow = zero_flow(D);
    ck_assert_int_eq(cnf_flow_fit_whitening(flow, X, 1, NULL), CNF_EDATA);
    ck_assert_ptr_nonnull(strstr(cnf_last_error(), "at least 2 rows"));
    correlated_gaussian(N, 31, X);
    X[7 * D + 1] = NAN;
    ck_assert_int_eq(cnf_flow_fit_whitening(flow, X, N, NULL), CNF_EDATA);
    ck_assert_ptr_nonnull(strstr(cnf_last_error(), "correlation of columns"));
    /* on error the flow keeps its preprocessing */
    ck_assert_ptr_null(cnf_flow_whitening_const(flow));
    ck_assert(cnf_flow_mean_const(flow)[1] == 0.0 && cnf_flow_scale_const(flow)[1] == 1.0);
    cnf_flow_free(flow);
    free(X);
}
END_TEST

/* ---- set_whitening ------------------------------------------------------ */

static void expect_bad_factor(cnf_flow *flow, const double *L, const char *needle)
{
    const double *before = cnf_flow_whitening_const(flow);
    double keep[4];
    memcpy(keep, before, sizeof keep);
    ck_assert_int_eq(cnf_flow_set_whitening(flow, L), CNF_EDATA);
    ck_assert_msg(strstr(cnf_last_error(), needle) != NULL, "message '%s' lacks '%s'",
                  cnf_last_error(), needle);
    ck_assert_int_eq(memcmp(cnf_flow_whitening_const(flow), keep, sizeof keep), 0);
}

START_TEST(test_set_whitening_checks)
{
    cnf_flow *flow = zero_flow(2);
    const double good[4] = { 2.0, 0.0, -0.5, 0.25 };
    ck_assert_int_eq(cnf_flow_set_whitening(flow, good), CNF_OK);
    ck_assert_int_eq(cnf_flow_preprocess_kind(flow), CNF_PREPROCESS_WHITEN);
    ck_assert_ptr_ne(cnf_flow_whitening_const(flow), good);   /* copied */
    ck_assert_int_eq(memcmp(cnf_flow_whitening_const(flow), good, sizeof good), 0);
    ck_assert(cnf_flow_preprocess_log_det(flow) == -(log(2.0) + log(0.25)));

    const double upper[4] = { 2.0, 1e-300, -0.5, 0.25 };
    expect_bad_factor(flow, upper, "entry (0, 1) is 1e-300, above the diagonal");
    const double zero_diag[4] = { 2.0, 0.0, -0.5, 0.0 };
    expect_bad_factor(flow, zero_diag, "diagonal entry (1, 1) is 0");
    const double neg_diag[4] = { -2.0, 0.0, -0.5, 1.0 };
    expect_bad_factor(flow, neg_diag, "diagonal entry (0, 0) is -2");
    const double nan_entry[4] = { 2.0, 0.0, NAN, 1.0 };
    expect_bad_factor(flow, nan_entry, "entry (1, 0) is nan");
    const double inf_diag[4] = { INFINITY, 0.0, 0.0, 1.0 };
    expect_bad_factor(flow, inf_diag, "entry (0, 0) is inf");

    /* a 2 x 2 map by hand: x_std = L^{-1} ((x - mean) / scale) */
    cnf_flow_mean(flow)[0] = 1.0;
    cnf_flow_mean(flow)[1] = -1.0;
    cnf_flow_scale(flow)[0] = 2.0;
    cnf_flow_scale(flow)[1] = 4.0;
    const double x[2] = { 5.0, 3.0 };   /* standardised: (2, 1) */
    double y[2], xb[2];
    cnf_flow_preprocess_rows(flow, x, 1, y);
    ck_assert(y[0] == 1.0);                       /* 2 / 2 */
    ck_assert(y[1] == (1.0 + 0.5 * 1.0) / 0.25);  /* (1 + 0.5 y0) / 0.25 = 6 */
    cnf_flow_unpreprocess_rows(flow, y, 1, xb);
    ck_assert(xb[0] == x[0] && xb[1] == x[1]);

    ck_assert_int_eq(cnf_flow_set_whitening(flow, NULL), CNF_OK);
    ck_assert_int_eq(cnf_flow_preprocess_kind(flow), CNF_PREPROCESS_STANDARDIZE);
    ck_assert_ptr_null(cnf_flow_whitening_const(flow));
    cnf_flow_free(flow);
}
END_TEST

/* ---- with dynamics ------------------------------------------------------ */

/* A whitened flow with random small parameters: sampling then encoding gives
 * the latent points back; its log-likelihood is that of the same blocks on
 * the whitened points plus the log-determinant; the gradient's mean NLL
 * agrees. */
START_TEST(test_whitened_flow_with_dynamics)
{
    enum { D = 3, N = 300, M = 48 };
    const double T[2] = { 0.6, 0.9 };
    gsl_rng *r = tu_rng(41);
    cnf_flow *flow = tu_flow(D, 2, "8-8", CNF_LAYER_CONCATSQUASH, CNF_ACT_TANH, T, r);
    double *p = cnf_flow_params(flow);
    for (size_t i = 0; i < cnf_flow_T_index(flow, 0); i++)
        p[i] *= 0.5;
    double *X = malloc(N * D * sizeof *X);
    correlated_gaussian(N, 42, X);
    ck_assert_int_eq(cnf_flow_fit_whitening(flow, X, N, NULL), CNF_OK);

    cnf_flow_options opt;
    cnf_flow_options_default(&opt);
    tu_set_tol(&opt, 1e-10, 1e-10);
    cnf_flow_work *w = cnf_flow_work_alloc(flow, 16, &opt);
    double Z[M * D], Xs[M * D], Z2[M * D];
    cnf_flow_draw_latent(r, M, D, Z);
    ck_assert_int_eq(cnf_flow_decode(flow, w, Z, M, Xs, NULL), CNF_OK);
    ck_assert_int_eq(cnf_flow_encode(flow, w, Xs, M, Z2, NULL), CNF_OK);
    double e_rt = max_abs_diff(Z, Z2, M * D);
    /* the samples have the data's correlation, so they are not just z */
    ck_assert_double_gt(max_abs_diff(Z, Xs, M * D), 0.5);

    /* the same blocks on preprocessed points, without preprocessing */
    cnf_flow *bare = tu_flow(D, 2, "8-8", CNF_LAYER_CONCATSQUASH, CNF_ACT_TANH, T, r);
    memcpy(cnf_flow_params(bare), cnf_flow_params_const(flow),
           cnf_flow_num_params(flow) * sizeof(double));
    cnf_flow_work *wb = cnf_flow_work_alloc(bare, 16, &opt);
    double Y[M * D], ll[M], llb[M];
    cnf_flow_preprocess_rows(flow, Xs, M, Y);
    ck_assert_int_eq(cnf_flow_log_likelihood(flow, w, Xs, M, NULL, ll, NULL), CNF_OK);
    ck_assert_int_eq(cnf_flow_log_likelihood(bare, wb, Y, M, NULL, llb, NULL), CNF_OK);
    double ld = cnf_flow_preprocess_log_det(flow), e_ll = 0.0, mean_ll = 0.0;
    for (size_t n = 0; n < M; n++) {
        e_ll = fmax(e_ll, fabs(ll[n] - (llb[n] + ld)));
        mean_ll += ll[n] / M;
    }

    double nll = 0.0, *grad = malloc(cnf_flow_num_params(flow) * sizeof *grad);
    cnf_flow_work *wg = cnf_flow_work_alloc(flow, M, &opt);
    ck_assert_int_eq(cnf_flow_nll_grad(flow, wg, Xs, M, NULL, &nll, NULL, grad, NULL), CNF_OK);
    double e_nll = fabs(nll + mean_ll);

    printf("whitened flow: |z - encode(decode(z))| %.2e, loglik vs bare blocks + log det "
           "%.2e, gradient's nll vs -mean loglik %.2e\n", e_rt, e_ll, e_nll);
    ck_assert_double_le(e_rt, 1e-7);
    ck_assert_double_le(e_ll, 1e-12);
    ck_assert_double_le(e_nll, 1e-6);

    free(grad);
    cnf_flow_work_free(wg);
    cnf_flow_work_free(wb);
    cnf_flow_work_free(w);
    cnf_flow_free(bare);
    cnf_flow_free(flow);
    free(X);
    gsl_rng_free(r);
}
END_TEST

int main(void)
{
    tu_program_setup();
    Suite *s = suite_create("preprocess");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_names);
    tcase_add_test(tc, test_fit_whitening_moments);
    tcase_add_test(tc, test_zero_dynamics_is_training_gaussian);
    tcase_add_test(tc, test_singular_gets_ridge);
    tcase_add_test(tc, test_set_whitening_checks);
    tcase_add_test(tc, test_whitened_flow_with_dynamics);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
