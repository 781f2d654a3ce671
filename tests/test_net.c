/* test_net.c — the dynamics network: every derivative against central finite
 * differences (JVP, VJP in z, theta and t, gradients of the exact and
 * Hutchinson divergence and of the RNODE regularizers) for every layer type
 * and activation; exactness on a linear network; Hutchinson's statistics;
 * parameter layout, initialisation, batch invariance, configuration and
 * argument errors; the private activation kernels against libm. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gsl/gsl_randist.h>
#include <gsl/gsl_rng.h>

#include "cnf/net.h"
#include "testutil.h"

#include "../src/net_act.h"

/* Central differences with h = 1e-5 (scaled by max(1, |x|)) have truncation
 * error ~h^2 |S'''| ~ 1e-10 and rounding ~1e-16 |S| / h ~ 1e-11 on these O(1)
 * objectives, so 1e-6 relative is a real test with margin. The floor keeps
 * entries that are analytically zero (e.g. dS/dt for "ignore") from dividing
 * rounding noise by nothing. */
#define FD_STEP 1e-5
#ifndef FD_TOL
#define FD_TOL 1e-6
#endif
#define FD_FLOOR 1e-4

enum objective {
    OBJ_COT,        /* sum fbar.f + sum jvbar.jv, random directions */
    OBJ_F_ONLY,     /* sum fbar.f (jvbar NULL), tangents carried but unused */
    OBJ_JV_ONLY,    /* sum jvbar.jv (fbar NULL) */
    OBJ_EXACT,      /* sum_b c_b tr(J_b), unit directions */
    OBJ_HUTCH_G,    /* sum_b c_b eps_b^T J_b eps_b, Gaussian eps */
    OBJ_HUTCH_R,    /* same, Rademacher eps */
    OBJ_FROB,       /* sum_b c_b ||J_b eps_b||^2 */
    OBJ_FROB_UNIT,  /* sum_b c_b ||J_b||_F^2 */
    OBJ_KIN,        /* sum_b c_b ||f_b||^2 */
    OBJ_COUNT
};

static const char *const obj_names[] = {"cot", "f_only", "jv_only", "exact_div", "hutch_gauss",
                                        "hutch_rad", "frobenius", "frobenius_unit", "kinetic"};

typedef struct {
    cnf_net *net;
    cnf_net_work *w;
    size_t D, P, B, K;
    enum objective obj;
    const double *v;        /* K x B x D or NULL (unit) */
    const double *fbar;     /* B x D */
    const double *jvbar;    /* K x B x D */
    const double *c;        /* B weights */
    double *f, *jv, *div;   /* B x D, K x B x D, B */
} fd_ctx;

/* x = [z (B x D), theta (P), t] */
static double objective(const double *x, void *vctx)
{
    fd_ctx *c = vctx;
    size_t B = c->B, D = c->D, K = c->K;
    const double *z = x, *theta = x + B * D;
    double t = x[B * D + c->P];
    cnf_status st = cnf_net_forward(c->net, c->w, theta, t, z, B, K, c->v, c->f, c->jv);
    ck_assert_int_eq(st, CNF_OK);
    double S = 0.0;
    switch (c->obj) {
    case OBJ_COT:
    case OBJ_F_ONLY:
    case OBJ_JV_ONLY:
        if (c->fbar)
            for (size_t i = 0; i < B * D; i++)
                S += c->fbar[i] * c->f[i];
        if (c->jvbar)
            for (size_t i = 0; i < K * B * D; i++)
                S += c->jvbar[i] * c->jv[i];
        break;
    case OBJ_EXACT:
        cnf_net_trace_unit(c->jv, B, D, c->div);
        for (size_t b = 0; b < B; b++)
            S += c->c[b] * c->div[b];
        break;
    case OBJ_HUTCH_G:
    case OBJ_HUTCH_R:
        cnf_net_trace_hutchinson(c->v, c->jv, B, D, c->div);
        for (size_t b = 0; b < B; b++)
            S += c->c[b] * c->div[b];
        break;
    case OBJ_FROB:
    case OBJ_FROB_UNIT:
        cnf_net_sq_norm(c->jv, K, B, D, c->div);
        for (size_t b = 0; b < B; b++)
            S += c->c[b] * c->div[b];
        break;
    case OBJ_KIN:
        cnf_net_sq_norm(c->f, 1, B, D, c->div);
        for (size_t b = 0; b < B; b++)
            S += c->c[b] * c->div[b];
        break;
    case OBJ_COUNT:
        break;
    }
    return S;
}

typedef struct {
    cnf_net *net;
    cnf_net_work *w;
    double *theta;
    size_t D, P;
} net_fixture;

static net_fixture make_net(cnf_layer_type type, cnf_activation act, size_t D,
                            const char *hidden, size_t max_batch, size_t max_k,
                            unsigned long seed, double gain)
{
    net_fixture nf;
    cnf_net_config cfg;
    cnf_net_config_default(&cfg, D);
    ck_assert_int_eq(cnf_net_config_parse_hidden(&cfg, hidden), CNF_OK);
    cfg.layer_type = type;
    cfg.activation = act;
    nf.net = cnf_net_alloc(&cfg);
    ck_assert_ptr_nonnull(nf.net);
    nf.D = D;
    nf.P = cnf_net_num_params(nf.net);
    nf.theta = malloc(nf.P * sizeof *nf.theta);
    gsl_rng *r = tu_rng(seed);
    cnf_net_init(nf.net, nf.theta, r, 0);
    gsl_rng_free(r);
    for (size_t i = 0; i < nf.P; i++)
        nf.theta[i] *= gain;
    nf.w = cnf_net_work_alloc(nf.net, max_batch, max_k);
    ck_assert_ptr_nonnull(nf.w);
    return nf;
}

static void free_net(net_fixture *nf)
{
    cnf_net_work_free(nf->w);
    cnf_net_free(nf->net);
    free(nf->theta);
}

/* Checks dS/d[z, theta, t] of one objective against central differences;
 * returns the worst relative error. */
static double check_objective(net_fixture *nf, enum objective obj, gsl_rng *r, const char *tag)
{
    const size_t B = 3, D = nf->D, P = nf->P;
    size_t K;
    switch (obj) {
    case OBJ_COT: case OBJ_F_ONLY: case OBJ_JV_ONLY: K = 2; break;
    case OBJ_EXACT: case OBJ_FROB_UNIT: K = D; break;
    case OBJ_KIN: K = 0; break;
    default: K = 1; break;
    }
    size_t n = B * D + P + 1;
    double *x = malloc(n * sizeof *x);
    double *fd = malloc(n * sizeof *fd), *an = calloc(n, sizeof *an);
    double *v = malloc((K + 1) * B * D * sizeof *v);
    double *fbar = malloc(B * D * sizeof *fbar), *jvbar = malloc((K + 1) * B * D * sizeof *jvbar);
    double *f = malloc(B * D * sizeof *f), *jv = malloc((K + 1) * B * D * sizeof *jv);
    double c[3], div[3];

    for (size_t i = 0; i < B * D; i++)
        x[i] = gsl_ran_gaussian(r, 1.0);
    memcpy(x + B * D, nf->theta, P * sizeof *x);
    x[B * D + P] = 0.37;
    for (size_t b = 0; b < B; b++)
        c[b] = 0.5 + gsl_rng_uniform(r);

    fd_ctx ctx = {nf->net, nf->w, D, P, B, K, obj, NULL, NULL, NULL, c, f, jv, div};
    const double *unit_or_v = v;
    if (obj == OBJ_EXACT || obj == OBJ_FROB_UNIT)
        unit_or_v = NULL;
    else if (obj == OBJ_HUTCH_R)
        cnf_net_noise_draw(CNF_DIV_RADEMACHER, r, K * B * D, v);
    else
        cnf_net_noise_draw(CNF_DIV_GAUSSIAN, r, K * B * D, v);
    ctx.v = unit_or_v;

    /* the analytic gradient: one forward and one reverse sweep */
    const double *z = x, *theta = x + B * D;
    double t = x[B * D + P];
    ck_assert_int_eq(cnf_net_forward(nf->net, nf->w, theta, t, z, B, K, unit_or_v, f, jv),
                     CNF_OK);
    const double *fb = NULL, *jb = NULL;
    switch (obj) {
    case OBJ_COT:
    case OBJ_F_ONLY:
    case OBJ_JV_ONLY:
        for (size_t i = 0; i < B * D; i++)
            fbar[i] = gsl_ran_gaussian(r, 1.0);
        for (size_t i = 0; i < K * B * D; i++)
            jvbar[i] = gsl_ran_gaussian(r, 1.0);
        fb = obj == OBJ_JV_ONLY ? NULL : fbar;
        jb = obj == OBJ_F_ONLY ? NULL : jvbar;
        ctx.fbar = fb;
        ctx.jvbar = jb;
        break;
    case OBJ_EXACT:
        for (size_t k = 0; k < K; k++)
            for (size_t b = 0; b < B; b++)
                for (size_t d = 0; d < D; d++)
                    jvbar[(k * B + b) * D + d] = d == k ? c[b] : 0.0;
        jb = jvbar;
        break;
    case OBJ_HUTCH_G:
    case OBJ_HUTCH_R:
        for (size_t b = 0; b < B; b++)
            for (size_t d = 0; d < D; d++)
                jvbar[b * D + d] = c[b] * v[b * D + d];
        jb = jvbar;
        break;
    case OBJ_FROB:
    case OBJ_FROB_UNIT:
        for (size_t k = 0; k < K; k++)
            for (size_t b = 0; b < B; b++)
                for (size_t d = 0; d < D; d++)
                    jvbar[(k * B + b) * D + d] = 2.0 * c[b] * jv[(k * B + b) * D + d];
        jb = jvbar;
        break;
    case OBJ_KIN:
        for (size_t b = 0; b < B; b++)
            for (size_t d = 0; d < D; d++)
                fbar[b * D + d] = 2.0 * c[b] * f[b * D + d];
        fb = fbar;
        break;
    case OBJ_COUNT:
        break;
    }
    ck_assert_int_eq(cnf_net_backward(nf->net, nf->w, theta, fb, jb, an, an + B * D,
                                      an + B * D + P), CNF_OK);

    tu_fd_gradient(objective, &ctx, x, n, FD_STEP, fd);

    char name[128];
    double worst = 0.0, e;
    snprintf(name, sizeof name, "%s %s dz", tag, obj_names[obj]);
    e = tu_max_rel_error(name, an, fd, B * D, FD_FLOOR, FD_TOL);
    worst = fmax(worst, e);
    snprintf(name, sizeof name, "%s %s dtheta", tag, obj_names[obj]);
    e = tu_max_rel_error(name, an + B * D, fd + B * D, P, FD_FLOOR, FD_TOL);
    worst = fmax(worst, e);
    snprintf(name, sizeof name, "%s %s dt", tag, obj_names[obj]);
    e = tu_max_rel_error(name, an + B * D + P, fd + B * D + P, 1, FD_FLOOR, FD_TOL);
    worst = fmax(worst, e);

    free(x); free(fd); free(an); free(v); free(fbar); free(jvbar); free(f); free(jv);
    return worst;
}

/* J v_k against (f(z + h v_k) - f(z - h v_k)) / 2h. */
static double check_jvp(net_fixture *nf, gsl_rng *r, const char *tag)
{
    const size_t B = 3, D = nf->D, K = 2;
    const double h = 1e-5;
    double z[3 * 8], v[2 * 3 * 8], f[3 * 8], jv[2 * 3 * 8], zp[3 * 8], fp[3 * 8], fm[3 * 8];
    double fdjv[2 * 3 * 8];
    ck_assert_uint_le(D, 8);
    for (size_t i = 0; i < B * D; i++)
        z[i] = gsl_ran_gaussian(r, 1.0);
    cnf_net_noise_draw(CNF_DIV_GAUSSIAN, r, K * B * D, v);
    ck_assert_int_eq(cnf_net_forward(nf->net, nf->w, nf->theta, 0.6, z, B, K, v, f, jv), CNF_OK);
    for (size_t k = 0; k < K; k++) {
        for (size_t i = 0; i < B * D; i++)
            zp[i] = z[i] + h * v[k * B * D + i];
        ck_assert_int_eq(cnf_net_forward(nf->net, nf->w, nf->theta, 0.6, zp, B, 0, NULL, fp,
                                         NULL), CNF_OK);
        for (size_t i = 0; i < B * D; i++)
            zp[i] = z[i] - h * v[k * B * D + i];
        ck_assert_int_eq(cnf_net_forward(nf->net, nf->w, nf->theta, 0.6, zp, B, 0, NULL, fm,
                                         NULL), CNF_OK);
        for (size_t i = 0; i < B * D; i++)
            fdjv[k * B * D + i] = (fp[i] - fm[i]) / (2.0 * h);
    }
    char name[96];
    snprintf(name, sizeof name, "%s jvp", tag);
    double e1 = tu_max_rel_error(name, jv, fdjv, K * B * D, FD_FLOOR, FD_TOL);
    /* unit directions give the Jacobian's columns: the same numbers */
    double jvu[3 * 3 * 8], fu[3 * 8];
    ck_assert_int_eq(cnf_net_forward(nf->net, nf->w, nf->theta, 0.6, z, B, D, NULL, fu, jvu),
                     CNF_OK);
    double jcol[3 * 3 * 8];
    for (size_t k = 0; k < D; k++) {
        for (size_t i = 0; i < B * D; i++)
            zp[i] = z[i] + ((i % D) == k ? h : 0.0);
        cnf_net_forward(nf->net, nf->w, nf->theta, 0.6, zp, B, 0, NULL, fp, NULL);
        for (size_t i = 0; i < B * D; i++)
            zp[i] = z[i] - ((i % D) == k ? h : 0.0);
        cnf_net_forward(nf->net, nf->w, nf->theta, 0.6, zp, B, 0, NULL, fm, NULL);
        for (size_t i = 0; i < B * D; i++)
            jcol[k * B * D + i] = (fp[i] - fm[i]) / (2.0 * h);
    }
    snprintf(name, sizeof name, "%s jvp unit", tag);
    double e2 = tu_max_rel_error(name, jvu, jcol, D * B * D, FD_FLOOR, FD_TOL);
    ck_assert_double_eq_tol(tu_max_rel_error("f unit vs f", fu, f, B * D, 1e-300, 1e-14), 0.0,
                            1e-14);
    return fmax(e1, e2);
}

static const cnf_layer_type all_types[] = {CNF_LAYER_CONCATSQUASH, CNF_LAYER_CONCAT,
                                           CNF_LAYER_IGNORE};
static const cnf_activation all_acts[] = {CNF_ACT_TANH, CNF_ACT_SOFTPLUS, CNF_ACT_ELU,
                                          CNF_ACT_SWISH};

/* One test per layer type (loop tag _i) running every activation. */
START_TEST(test_derivatives_fd)
{
    cnf_layer_type type = all_types[_i];
    gsl_rng *r = tu_rng(1234 + (unsigned long)_i);
    for (size_t a = 0; a < 4; a++) {
        net_fixture nf = make_net(type, all_acts[a], 3, "5-4", 3, 3, 77 + a, 1.5);
        char tag[64];
        snprintf(tag, sizeof tag, "%s/%s", cnf_layer_type_name(type),
                 cnf_activation_name(all_acts[a]));
        double worst = check_jvp(&nf, r, tag);
        for (int o = 0; o < OBJ_COUNT; o++)
            worst = fmax(worst, check_objective(&nf, (enum objective)o, r, tag));
        fprintf(stderr, "%-22s worst relative error vs central differences %.2g\n", tag,
                worst);
        ck_assert_msg(worst <= FD_TOL, "%s: derivative check failed (worst rel. error %.3g)",
                      tag, worst);
        free_net(&nf);
    }
    gsl_rng_free(r);
}
END_TEST

/* No hidden layer: f = W z + b (ignore), div = tr(W) exactly. */
START_TEST(test_linear_trace_exact)
{
    const size_t D = 4, B = 3;
    net_fixture nf = make_net(CNF_LAYER_IGNORE, CNF_ACT_TANH, D, "", B, D, 5, 1.0);
    ck_assert_uint_eq(cnf_net_num_layers(nf.net), 1);
    ck_assert_uint_eq(nf.P, D * D + D);
    double z[12], f[12], jv[48], div[3];
    gsl_rng *r = tu_rng(9);
    for (size_t i = 0; i < B * D; i++)
        z[i] = gsl_ran_gaussian(r, 1.0);
    ck_assert_int_eq(cnf_net_forward(nf.net, nf.w, nf.theta, 0.3, z, B, D, NULL, f, jv), CNF_OK);
    cnf_net_trace_unit(jv, B, D, div);
    const double *W = nf.theta, *bias = nf.theta + D * D;
    double tr = 0.0;
    for (size_t i = 0; i < D; i++)
        tr += W[i * D + i];
    for (size_t b = 0; b < B; b++) {
        ck_assert_double_eq(div[b], tr);
        for (size_t o = 0; o < D; o++) {
            double y = bias[o];
            for (size_t i = 0; i < D; i++)
                y += W[o * D + i] * z[b * D + i];
            ck_assert_double_eq_tol(f[b * D + o], y, 1e-14);
        }
    }
    /* Hutchinson on a linear map: eps^T W eps, exact up to rounding */
    double eps[12];
    cnf_net_noise_draw(CNF_DIV_GAUSSIAN, r, B * D, eps);
    ck_assert_int_eq(cnf_net_forward(nf.net, nf.w, nf.theta, 0.3, z, B, 1, eps, f, jv), CNF_OK);
    cnf_net_trace_hutchinson(eps, jv, B, D, div);
    for (size_t b = 0; b < B; b++) {
        double q = 0.0;
        for (size_t o = 0; o < D; o++)
            for (size_t i = 0; i < D; i++)
                q += eps[b * D + o] * W[o * D + i] * eps[b * D + i];
        ck_assert_double_eq_tol(div[b], q, 1e-13);
    }
    gsl_rng_free(r);
    free_net(&nf);
}
END_TEST

/* Concatsquash without hidden layer: div = sum_i W_ii s_i. */
START_TEST(test_linear_concatsquash_trace)
{
    const size_t D = 3;
    net_fixture nf = make_net(CNF_LAYER_CONCATSQUASH, CNF_ACT_TANH, D, "", 1, D, 6, 1.0);
    cnf_net_layer lv;
    ck_assert_int_eq(cnf_net_layer_view(nf.net, 0, &lv), CNF_OK);
    double z[3] = {0.1, -0.2, 0.3}, f[3], jv[9], div;
    const double t = 0.8;
    ck_assert_int_eq(cnf_net_forward(nf.net, nf.w, nf.theta, t, z, 1, D, NULL, f, jv), CNF_OK);
    cnf_net_trace_unit(jv, 1, D, &div);
    double tr = 0.0;
    for (size_t i = 0; i < D; i++) {
        double s = 1.0 / (1.0 + exp(-(nf.theta[lv.g_w + i] * t + nf.theta[lv.g_b + i])));
        tr += nf.theta[lv.W + i * D + i] * s;
    }
    ck_assert_double_eq_tol(div, tr, 1e-15);
    free_net(&nf);
}
END_TEST

/* Hutchinson's estimate is unbiased: its mean over N draws is within 4
 * standard errors of the exact trace; Rademacher's variance is not above
 * Gaussian's, and both match their theory (2||J_s||_F^2 and 2(||J_s||_F^2 -
 * sum J_ii^2)) within sampling error. */
START_TEST(test_hutchinson_statistics)
{
    const size_t D = 4, N = 20000;
    net_fixture nf = make_net(CNF_LAYER_CONCATSQUASH, CNF_ACT_TANH, D, "16-16", N, D, 11, 2.0);
    double z1[4] = {0.3, -1.1, 0.7, 0.2};
    double *z = malloc(N * D * sizeof *z), *eps = malloc(N * D * sizeof *eps);
    double *f = malloc(N * D * sizeof *f), *jv = malloc(N * D * sizeof *jv);
    double *div = malloc(N * sizeof *div);
    for (size_t b = 0; b < N; b++)
        memcpy(z + b * D, z1, sizeof z1);

    double fu[4], jvu[16], exact;
    ck_assert_int_eq(cnf_net_forward(nf.net, nf.w, nf.theta, 0.5, z1, 1, D, NULL, fu, jvu),
                     CNF_OK);
    cnf_net_trace_unit(jvu, 1, D, &exact);
    /* jvu[k][0][i] = J[i][k] */
    double fro_s = 0.0, diag2 = 0.0;
    for (size_t i = 0; i < D; i++)
        for (size_t k = 0; k < D; k++) {
            double js = 0.5 * (jvu[k * D + i] + jvu[i * D + k]);
            fro_s += js * js;
        }
    for (size_t i = 0; i < D; i++)
        diag2 += jvu[i * D + i] * jvu[i * D + i];

    gsl_rng *r = tu_rng(2024);
    double var[2];
    const cnf_divergence kinds[2] = {CNF_DIV_GAUSSIAN, CNF_DIV_RADEMACHER};
    for (int q = 0; q < 2; q++) {
        cnf_net_noise_draw(kinds[q], r, N * D, eps);
        ck_assert_int_eq(cnf_net_forward(nf.net, nf.w, nf.theta, 0.5, z, N, 1, eps, f, jv),
                         CNF_OK);
        cnf_net_trace_hutchinson(eps, jv, N, D, div);
        double mean = 0.0, m2 = 0.0;
        for (size_t b = 0; b < N; b++)
            mean += div[b];
        mean /= (double)N;
        for (size_t b = 0; b < N; b++)
            m2 += (div[b] - mean) * (div[b] - mean);
        var[q] = m2 / (double)(N - 1);
        double se = sqrt(var[q] / (double)N);
        ck_assert_msg(fabs(mean - exact) <= 4.0 * se, "%s: mean %.6g vs exact %.6g (se %.3g)",
                      cnf_divergence_name(kinds[q]), mean, exact, se);
        double theory = q == 0 ? 2.0 * fro_s : 2.0 * (fro_s - diag2);
        ck_assert_msg(fabs(var[q] - theory) <= 0.1 * theory,
                      "%s: variance %.6g vs theory %.6g", cnf_divergence_name(kinds[q]), var[q],
                      theory);
    }
    ck_assert_msg(var[1] <= var[0], "Rademacher variance %.6g above Gaussian %.6g", var[1],
                  var[0]);
    ck_assert(diag2 > 0.1 * fro_s);   /* the comparison above is not vacuous */
    gsl_rng_free(r);
    free(z); free(eps); free(f); free(jv); free(div);
    free_net(&nf);
}
END_TEST

START_TEST(test_layout)
{
    struct {
        cnf_layer_type type;
        size_t P;
        size_t off[3][5];   /* W, b, g_w, g_b, c_w */
        size_t wcols[3];
    } cases[3] = {
        {CNF_LAYER_CONCATSQUASH, 95,
         {{0, 15, 20, 25, 30}, {35, 55, 59, 63, 67}, {71, 83, 86, 89, 92}}, {3, 5, 4}},
        {CNF_LAYER_CONCAT, 71,
         {{0, 20, CNF_NET_ABSENT, CNF_NET_ABSENT, CNF_NET_ABSENT},
          {25, 49, CNF_NET_ABSENT, CNF_NET_ABSENT, CNF_NET_ABSENT},
          {53, 68, CNF_NET_ABSENT, CNF_NET_ABSENT, CNF_NET_ABSENT}}, {4, 6, 5}},
        {CNF_LAYER_IGNORE, 59,
         {{0, 15, CNF_NET_ABSENT, CNF_NET_ABSENT, CNF_NET_ABSENT},
          {20, 40, CNF_NET_ABSENT, CNF_NET_ABSENT, CNF_NET_ABSENT},
          {44, 56, CNF_NET_ABSENT, CNF_NET_ABSENT, CNF_NET_ABSENT}}, {3, 5, 4}},
    };
    const size_t widths[4] = {3, 5, 4, 3};
    for (int c = 0; c < 3; c++) {
        cnf_net_config cfg;
        cnf_net_config_default(&cfg, 3);
        ck_assert_int_eq(cnf_net_config_parse_hidden(&cfg, "5-4"), CNF_OK);
        cfg.layer_type = cases[c].type;
        cnf_net *net = cnf_net_alloc(&cfg);
        ck_assert_ptr_nonnull(net);
        ck_assert_uint_eq(cnf_net_num_params(net), cases[c].P);
        ck_assert_uint_eq(cnf_net_num_layers(net), 3);
        ck_assert_int_eq(cnf_net_get_config(net)->layer_type, cases[c].type);
        for (size_t j = 0; j < 3; j++) {
            cnf_net_layer lv;
            ck_assert_int_eq(cnf_net_layer_view(net, j, &lv), CNF_OK);
            ck_assert_uint_eq(lv.in, widths[j]);
            ck_assert_uint_eq(lv.out, widths[j + 1]);
            ck_assert_uint_eq(lv.W_cols, cases[c].wcols[j]);
            ck_assert_uint_eq(lv.W, cases[c].off[j][0]);
            ck_assert_uint_eq(lv.b, cases[c].off[j][1]);
            ck_assert_uint_eq(lv.g_w, cases[c].off[j][2]);
            ck_assert_uint_eq(lv.g_b, cases[c].off[j][3]);
            ck_assert_uint_eq(lv.c_w, cases[c].off[j][4]);
        }
        cnf_net_layer lv;
        ck_assert_int_eq(cnf_net_layer_view(net, 3, &lv), CNF_EINVAL);
        cnf_net_free(net);
    }
    /* the default network: D = 2, 64-64-64, concatsquash, tanh */
    cnf_net_config cfg;
    cnf_net_config_default(&cfg, 2);
    cnf_net *net = cnf_net_alloc(&cfg);
    ck_assert_uint_eq(cnf_net_num_params(net),
                      (2 * 64 + 4 * 64) + 2 * (64 * 64 + 4 * 64) + (64 * 2 + 4 * 2));
    ck_assert_double_eq(cnf_net_flops_per_sample(net, 0), 2 * 64 + 2 * 64 * 64 + 64 * 2);
    ck_assert_double_eq(cnf_net_flops_per_sample(net, 1), 2 * (2 * 64 + 2 * 64 * 64 + 64 * 2));
    ck_assert_double_eq(cnf_net_flops_per_sample(net, 2),
                        (2 * 64) + 3 * (2 * 64 * 64 + 64 * 2));
    cnf_net_free(net);
}
END_TEST

START_TEST(test_init)
{
    for (int c = 0; c < 3; c++) {
        cnf_net_config cfg;
        cnf_net_config_default(&cfg, 3);
        ck_assert_int_eq(cnf_net_config_parse_hidden(&cfg, "20-30"), CNF_OK);
        cfg.layer_type = all_types[c];
        cnf_net *net = cnf_net_alloc(&cfg);
        size_t P = cnf_net_num_params(net);
        double *th = malloc(P * sizeof *th), *th2 = malloc(P * sizeof *th2);
        gsl_rng *r = tu_rng(42);
        cnf_net_init(net, th, r, 0);
        gsl_rng_set(r, 42);
        cnf_net_init(net, th2, r, 0);
        ck_assert_int_eq(memcmp(th, th2, P * sizeof *th), 0);
        for (size_t j = 0; j < 3; j++) {
            cnf_net_layer lv;
            cnf_net_layer_view(net, j, &lv);
            double bound = 1.0 / sqrt((double)lv.W_cols), mx = 0.0;
            for (size_t i = 0; i < lv.out * lv.W_cols + lv.out; i++) {
                ck_assert(fabs(th[lv.W + i]) <= bound);
                mx = fmax(mx, fabs(th[lv.W + i]));
            }
            ck_assert(mx > 0.8 * bound);   /* uses the whole range */
            if (lv.g_w != CNF_NET_ABSENT) {
                mx = 0.0;
                for (size_t i = 0; i < 3 * lv.out; i++) {
                    ck_assert(fabs(th[lv.g_w + i]) <= 1.0);
                    mx = fmax(mx, fabs(th[lv.g_w + i]));
                }
                ck_assert(mx > 0.8);
            }
        }
        /* zero last layer: those parameters are 0, the rest unchanged, f = 0 */
        gsl_rng_set(r, 42);
        cnf_net_init(net, th2, r, 1);
        cnf_net_layer last;
        cnf_net_layer_view(net, 2, &last);
        ck_assert_int_eq(memcmp(th, th2, last.W * sizeof *th), 0);
        for (size_t i = last.W; i < P; i++)
            ck_assert(th2[i] == 0.0);
        cnf_net_work *w = cnf_net_work_alloc(net, 2, 3);
        double z[6] = {1, 2, 3, -1, 0.5, 2}, f[6], jv[18], div[2];
        ck_assert_int_eq(cnf_net_forward(net, w, th2, 0.4, z, 2, 3, NULL, f, jv), CNF_OK);
        cnf_net_trace_unit(jv, 2, 3, div);
        for (size_t i = 0; i < 6; i++)
            ck_assert(f[i] == 0.0);
        ck_assert(div[0] == 0.0 && div[1] == 0.0);
        cnf_net_work_free(w);
        gsl_rng_free(r);
        free(th);
        free(th2);
        cnf_net_free(net);
    }
}
END_TEST

/* Forward of B rows equals the rows one at a time; the reverse sweep's zbar
 * too, and thetabar is the sum of the rows' contributions. */
START_TEST(test_batch_split)
{
    const size_t D = 3, B = 5, K = 2;
    net_fixture nf = make_net(CNF_LAYER_CONCATSQUASH, CNF_ACT_SWISH, D, "7-6", B, D, 3, 1.5);
    gsl_rng *r = tu_rng(8);
    double z[15], v[30], f[15], jv[45], fbar[15], jvbar[45];
    for (size_t i = 0; i < B * D; i++)
        z[i] = gsl_ran_gaussian(r, 1.0);
    cnf_net_noise_draw(CNF_DIV_GAUSSIAN, r, K * B * D, v);
    cnf_net_noise_draw(CNF_DIV_GAUSSIAN, r, B * D, fbar);
    cnf_net_noise_draw(CNF_DIV_GAUSSIAN, r, D * B * D, jvbar);
    size_t P = nf.P;
    double *tb_all = calloc(P, sizeof *tb_all), *tb_sum = calloc(P, sizeof *tb_sum);
    for (int unit = 0; unit < 2; unit++) {
        size_t Kc = unit ? D : K;
        const double *vc = unit ? NULL : v;
        double zb_all[15] = {0}, zb_one[15] = {0}, t_all = 0.0, t_sum = 0.0;
        memset(tb_all, 0, P * sizeof *tb_all);
        memset(tb_sum, 0, P * sizeof *tb_sum);
        ck_assert_int_eq(cnf_net_forward(nf.net, nf.w, nf.theta, 0.2, z, B, Kc, vc, f, jv),
                         CNF_OK);
        ck_assert_int_eq(cnf_net_backward(nf.net, nf.w, nf.theta, fbar, jvbar, zb_all, tb_all,
                                          &t_all), CNF_OK);
        for (size_t b = 0; b < B; b++) {
            double v1[3 * 3], f1[3], jv1[3 * 3], jvb1[3 * 3];
            for (size_t k = 0; k < Kc; k++) {
                if (!unit)
                    memcpy(v1 + k * D, v + (k * B + b) * D, D * sizeof *v1);
                memcpy(jvb1 + k * D, jvbar + (k * B + b) * D, D * sizeof *v1);
            }
            ck_assert_int_eq(cnf_net_forward(nf.net, nf.w, nf.theta, 0.2, z + b * D, 1, Kc,
                                             unit ? NULL : v1, f1, jv1), CNF_OK);
            ck_assert_int_eq(cnf_net_backward(nf.net, nf.w, nf.theta, fbar + b * D, jvb1,
                                              zb_one + b * D, tb_sum, &t_sum), CNF_OK);
            for (size_t d = 0; d < D; d++)
                ck_assert_double_eq_tol(f1[d], f[b * D + d], 1e-14);
            for (size_t k = 0; k < Kc; k++)
                for (size_t d = 0; d < D; d++)
                    ck_assert_double_eq_tol(jv1[k * D + d], jv[(k * B + b) * D + d], 1e-14);
        }
        ck_assert_double_le(tu_max_rel_error("zbar split", zb_one, zb_all, B * D, 1e-12, 1e-13),
                            1e-13);
        ck_assert_double_le(tu_max_rel_error("thetabar split", tb_sum, tb_all, P, 1e-12, 1e-13),
                            1e-13);
        ck_assert_double_le(tu_max_rel_error("tbar split", &t_sum, &t_all, 1, 1e-12, 1e-13),
                            1e-13);
    }
    free(tb_all);
    free(tb_sum);
    gsl_rng_free(r);
    free_net(&nf);
}
END_TEST

/* One time per row (cnf_net_forward_rows): every row equals a shared-time
 * pass of that row alone at its time (values to 1e-14), and the reverse
 * sweep's zbar and thetabar equal the sums of the single-row sweeps, for
 * every layer type and activation, at one and two threads; with the sums
 * checked, the sweep also matches central differences of S = sum fbar . f
 * over theta. tbar and jvbar are refused after a per-row pass. */
typedef struct {
    net_fixture *nf;
    const double *t, *z, *fbar;
    size_t B;
    cnf_net_work *w;
} rows_ctx;

static double rows_objective(const double *theta, void *vctx)
{
    rows_ctx *c = vctx;
    size_t D = c->nf->D;
    double f[6 * 3], S = 0.0;
    ck_assert_int_eq(cnf_net_forward_rows(c->nf->net, c->w, theta, c->t, c->z, c->B, f), CNF_OK);
    for (size_t i = 0; i < c->B * D; i++)
        S += c->fbar[i] * f[i];
    return S;
}

START_TEST(test_forward_rows)
{
    const size_t D = 3, B = 6;
    for (size_t it = 0; it < 3; it++)
        for (size_t ia = 0; ia < 4; ia++)
            for (size_t threads = 1; threads <= 2; threads++) {
                net_fixture nf = make_net(all_types[it], all_acts[ia], D, "7-5", B, D,
                                          40 + 4 * it + ia, 1.5);
                cnf_net_work *w = cnf_net_work_alloc_threads(nf.net, B, 0, threads);
                ck_assert_ptr_nonnull(w);
                gsl_rng *r = tu_rng(9 + it + ia);
                double z[18], f[18], fbar[18], t[6] = {0.0, 0.3, 0.3, 0.71, 1.0, -0.4};
                for (size_t i = 0; i < B * D; i++) {
                    z[i] = gsl_ran_gaussian(r, 1.0);
                    fbar[i] = gsl_ran_gaussian(r, 1.0);
                }
                size_t P = nf.P;
                double *tb = calloc(P, sizeof *tb), *tb_sum = calloc(P, sizeof *tb_sum);
                double zb[18] = {0}, zb_one[18] = {0};
                ck_assert_int_eq(cnf_net_forward_rows(nf.net, w, nf.theta, t, z, B, f), CNF_OK);
                ck_assert_int_eq(cnf_net_backward(nf.net, w, nf.theta, fbar, NULL, zb, tb, NULL),
                                 CNF_OK);
                double tbar = 0.0;
                ck_assert_int_eq(cnf_net_backward(nf.net, w, nf.theta, fbar, NULL, NULL, tb,
                                                  &tbar), CNF_EINVAL);
                for (size_t b = 0; b < B; b++) {
                    double f1[3], t_unused = 0.0;
                    ck_assert_int_eq(cnf_net_forward(nf.net, nf.w, nf.theta, t[b], z + b * D, 1,
                                                     0, NULL, f1, NULL), CNF_OK);
                    ck_assert_int_eq(cnf_net_backward(nf.net, nf.w, nf.theta, fbar + b * D, NULL,
                                                      zb_one + b * D, tb_sum, &t_unused),
                                     CNF_OK);
                    for (size_t d = 0; d < D; d++)
                        ck_assert_double_eq_tol(f1[d], f[b * D + d], 1e-14);
                }
                ck_assert_double_le(
                    tu_max_rel_error("zbar rows", zb_one, zb, B * D, 1e-12, 1e-13), 1e-13);
                /* the per-row sums run in another order than the single
                 * rows' (entries that cancel reach 5e-13 entrywise) */
                double dn = 0.0, nn = 0.0;
                for (size_t i = 0; i < P; i++) {
                    dn += (tb_sum[i] - tb[i]) * (tb_sum[i] - tb[i]);
                    nn += tb_sum[i] * tb_sum[i];
                }
                ck_assert_msg(sqrt(dn / nn) < 1e-14, "thetabar rows: %g", sqrt(dn / nn));
                rows_ctx c = {&nf, t, z, fbar, B, w};
                double *fd = malloc(P * sizeof *fd);
                tu_fd_gradient4(rows_objective, &c, nf.theta, P, 1e-4, fd);
                /* norm-wise: the differences' rounding (~1e-12 absolute)
                 * dominates the smallest entries */
                double num = 0.0, den = 0.0;
                for (size_t i = 0; i < P; i++) {
                    num += (fd[i] - tb[i]) * (fd[i] - tb[i]);
                    den += fd[i] * fd[i];
                }
                ck_assert_msg(sqrt(num / den) < 1e-9, "%s %s: thetabar against differences %g",
                              cnf_layer_type_name(all_types[it]), cnf_activation_name(all_acts[ia]),
                              sqrt(num / den));
                free(fd);
                free(tb);
                free(tb_sum);
                gsl_rng_free(r);
                cnf_net_work_free(w);
                free_net(&nf);
            }
    /* a non-finite time is refused */
    net_fixture nf = make_net(CNF_LAYER_CONCAT, CNF_ACT_TANH, 2, "4", 2, 0, 1, 1.0);
    double z[4] = {0}, f[4], t[2] = {0.5, NAN};
    ck_assert_int_eq(cnf_net_forward_rows(nf.net, nf.w, nf.theta, t, z, 2, f), CNF_EINVAL);
    ck_assert(strstr(cnf_last_error(), "t[1]"));
    free_net(&nf);
}
END_TEST

/* The reverse sweep adds to its outputs, and NULL outputs change nothing
 * in the others. */
START_TEST(test_backward_accumulates)
{
    const size_t D = 2, B = 4;
    net_fixture nf = make_net(CNF_LAYER_CONCAT, CNF_ACT_TANH, D, "6", B, D, 4, 1.0);
    double z[8] = {0.1, 0.2, -0.3, 0.4, 1.0, -1.0, 0.5, 0.0}, f[8], jv[16], fbar[8], jvbar[16];
    for (size_t i = 0; i < 8; i++)
        fbar[i] = 0.1 * (double)i - 0.3;
    for (size_t i = 0; i < 16; i++)
        jvbar[i] = 0.05 * (double)i - 0.4;
    size_t P = nf.P;
    double *g1 = calloc(P, sizeof *g1), *g2 = malloc(P * sizeof *g2);
    double zb1[8] = {0}, zb2[8], t1 = 0.0, t2 = 1.0;
    ck_assert_int_eq(cnf_net_forward(nf.net, nf.w, nf.theta, 0.9, z, B, D, NULL, f, jv), CNF_OK);
    ck_assert_int_eq(cnf_net_backward(nf.net, nf.w, nf.theta, fbar, jvbar, zb1, g1, &t1), CNF_OK);
    for (size_t i = 0; i < P; i++)
        g2[i] = 1.0;
    for (size_t i = 0; i < 8; i++)
        zb2[i] = 2.0;
    ck_assert_int_eq(cnf_net_backward(nf.net, nf.w, nf.theta, fbar, jvbar, NULL, g2, NULL),
                     CNF_OK);
    ck_assert_int_eq(cnf_net_backward(nf.net, nf.w, nf.theta, fbar, jvbar, zb2, NULL, NULL),
                     CNF_OK);
    ck_assert_int_eq(cnf_net_backward(nf.net, nf.w, nf.theta, fbar, jvbar, NULL, NULL, &t2),
                     CNF_OK);
    for (size_t i = 0; i < P; i++)
        ck_assert_double_eq_tol(g2[i], g1[i] + 1.0, 1e-14);
    for (size_t i = 0; i < 8; i++)
        ck_assert_double_eq_tol(zb2[i], zb1[i] + 2.0, 1e-14);
    ck_assert_double_eq_tol(t2, t1 + 1.0, 1e-14);
    /* nothing to propagate: outputs untouched */
    ck_assert_int_eq(cnf_net_backward(nf.net, nf.w, nf.theta, NULL, NULL, zb2, g2, &t2), CNF_OK);
    ck_assert_double_eq_tol(t2, t1 + 1.0, 1e-14);
    free(g1);
    free(g2);
    free_net(&nf);
}
END_TEST

/* Bound weights give the unbound results bit for bit; another theta pointer
 * is transposed afresh; after unbind, a changed theta is seen. */
START_TEST(test_bind_weights)
{
    const size_t D = 2, B = 4;
    net_fixture nf = make_net(CNF_LAYER_CONCAT, CNF_ACT_TANH, D, "6-5", B, D, 5, 1.0);
    double z[8] = {0.1, 0.2, -0.3, 0.4, 1.0, -1.0, 0.5, 0.0};
    double f0[8], jv0[16], f1[8], jv1[16], f2[8], jv2[16];
    size_t P = nf.P;
    double *other = malloc(P * sizeof *other);
    for (size_t i = 0; i < P; i++)
        other[i] = 0.5 * nf.theta[i];
    ck_assert_int_eq(cnf_net_forward(nf.net, nf.w, nf.theta, 0.3, z, B, D, NULL, f0, jv0), CNF_OK);
    ck_assert_int_eq(cnf_net_work_bind(nf.net, nf.w, nf.theta), CNF_OK);
    ck_assert_int_eq(cnf_net_forward(nf.net, nf.w, nf.theta, 0.3, z, B, D, NULL, f1, jv1), CNF_OK);
    ck_assert_mem_eq(f0, f1, sizeof f0);
    ck_assert_mem_eq(jv0, jv1, sizeof jv0);
    /* another pointer while bound: its own weights, not the bound ones; and
     * back to the bound pointer: its weights again, not the other's */
    ck_assert_int_eq(cnf_net_forward(nf.net, nf.w, other, 0.3, z, B, D, NULL, f2, jv2), CNF_OK);
    ck_assert(memcmp(f2, f0, sizeof f0) != 0);
    ck_assert_int_eq(cnf_net_forward(nf.net, nf.w, nf.theta, 0.3, z, B, D, NULL, f1, jv1), CNF_OK);
    ck_assert_mem_eq(f0, f1, sizeof f0);
    ck_assert_mem_eq(jv0, jv1, sizeof jv0);
    cnf_net_work_unbind(nf.w);
    ck_assert_int_eq(cnf_net_forward(nf.net, nf.w, other, 0.3, z, B, D, NULL, f1, jv1), CNF_OK);
    ck_assert_mem_eq(f1, f2, sizeof f1);
    ck_assert_mem_eq(jv1, jv2, sizeof jv1);
    /* unbound, theta changed in place between passes: the change is seen */
    for (size_t i = 0; i < P; i++)
        nf.theta[i] *= 0.5;
    ck_assert_int_eq(cnf_net_forward(nf.net, nf.w, nf.theta, 0.3, z, B, D, NULL, f1, jv1), CNF_OK);
    ck_assert_mem_eq(f1, f2, sizeof f1);
    ck_assert_mem_eq(jv1, jv2, sizeof jv1);
    free(other);
    free_net(&nf);
}
END_TEST

START_TEST(test_argument_errors)
{
    net_fixture nf = make_net(CNF_LAYER_CONCATSQUASH, CNF_ACT_TANH, 2, "4", 3, 1, 1, 1.0);
    double z[8] = {0}, f[8], jv[16], v[16] = {0}, zb[8];
    /* backward before any forward */
    ck_assert_int_eq(cnf_net_backward(nf.net, nf.w, nf.theta, f, NULL, zb, NULL, NULL),
                     CNF_EINVAL);
    ck_assert_int_eq(cnf_net_forward(nf.net, nf.w, nf.theta, 0, z, 4, 0, NULL, f, NULL),
                     CNF_EINVAL);
    ck_assert_ptr_nonnull(strstr(cnf_last_error(), "max_batch"));
    ck_assert_int_eq(cnf_net_forward(nf.net, nf.w, nf.theta, 0, z, 3, 2, v, f, jv), CNF_EINVAL);
    ck_assert_ptr_nonnull(strstr(cnf_last_error(), "max_tangents"));
    ck_assert_int_eq(cnf_net_forward(nf.net, nf.w, nf.theta, 0, z, 3, 1, NULL, f, jv),
                     CNF_EINVAL);
    ck_assert_ptr_nonnull(strstr(cnf_last_error(), "K = D"));
    ck_assert_int_eq(cnf_net_forward(nf.net, nf.w, nf.theta, 0, z, 3, 1, v, f, NULL),
                     CNF_EINVAL);
    ck_assert_int_eq(cnf_net_forward(nf.net, nf.w, nf.theta, 0, z, 3, 1, v, f, jv), CNF_OK);
    /* a workspace of other widths is refused */
    net_fixture other = make_net(CNF_LAYER_CONCATSQUASH, CNF_ACT_TANH, 2, "5", 3, 1, 1, 1.0);
    ck_assert_int_eq(cnf_net_forward(nf.net, other.w, nf.theta, 0, z, 3, 1, v, f, jv), CNF_EDIM);
    /* bad configurations */
    cnf_net_config cfg;
    cnf_net_config_default(&cfg, 0);
    ck_assert_ptr_null(cnf_net_alloc(&cfg));
    ck_assert_ptr_nonnull(strstr(cnf_last_error(), "dim"));
    cnf_net_config_default(&cfg, 2);
    cfg.hidden[1] = 0;
    ck_assert_ptr_null(cnf_net_alloc(&cfg));
    ck_assert_ptr_nonnull(strstr(cnf_last_error(), "hidden width"));
    cnf_net_config_default(&cfg, 2);
    cfg.activation = (cnf_activation)9;
    ck_assert_ptr_null(cnf_net_alloc(&cfg));
    cnf_net_work_free(NULL);
    cnf_net_free(NULL);
    free_net(&other);
    free_net(&nf);
}
END_TEST

START_TEST(test_config_parse)
{
    cnf_net_config cfg;
    cnf_net_config_default(&cfg, 2);
    char buf[128];
    cnf_net_config_format_hidden(&cfg, buf, sizeof buf);
    ck_assert_str_eq(buf, "64-64-64");
    ck_assert_int_eq(cnf_net_config_parse_hidden(&cfg, "32-16"), CNF_OK);
    ck_assert_uint_eq(cfg.n_hidden, 2);
    ck_assert_uint_eq(cfg.hidden[0], 32);
    ck_assert_uint_eq(cfg.hidden[1], 16);
    cnf_net_config_format_hidden(&cfg, buf, sizeof buf);
    ck_assert_str_eq(buf, "32-16");
    ck_assert_int_eq(cnf_net_config_parse_hidden(&cfg, ""), CNF_OK);
    ck_assert_uint_eq(cfg.n_hidden, 0);
    cnf_net_config_format_hidden(&cfg, buf, sizeof buf);
    ck_assert_str_eq(buf, "");
    ck_assert_int_eq(cnf_net_config_parse_hidden(&cfg, "7"), CNF_OK);
    ck_assert_uint_eq(cfg.n_hidden, 1);

    const char *bad[] = {"64--3", "abc", "0", "64-0", "-64", "64-", "64x", "64 -64", " 64",
                         "+64", "64-64-", "99999999999999999999999", "1-1-1-1-1-1-1-1-1-1-1-1-1-1-1-1-1",
                         NULL};
    for (int i = 0; bad[i]; i++) {
        cnf_net_config before = cfg;
        cnf_clear_error();
        ck_assert_msg(cnf_net_config_parse_hidden(&cfg, bad[i]) == CNF_EINVAL, "accepted '%s'",
                      bad[i]);
        ck_assert_msg(strstr(cnf_last_error(), "hidden widths") != NULL, "message for '%s': %s",
                      bad[i], cnf_last_error());
        ck_assert_int_eq(memcmp(&before, &cfg, sizeof cfg), 0);
    }
    ck_assert_ptr_nonnull(strstr(cnf_last_error(), "more than 16"));
    ck_assert_int_eq(cnf_net_config_parse_hidden(&cfg, "1-1-1-1-1-1-1-1-1-1-1-1-1-1-1-1"),
                     CNF_OK);
    ck_assert_uint_eq(cfg.n_hidden, 16);
    cnf_net_config_format_hidden(&cfg, buf, 6);   /* truncates, stays terminated */
    ck_assert_uint_le(strlen(buf), 5);

    /* names both ways */
    for (int i = 0; i < 3; i++) {
        cnf_layer_type ty;
        ck_assert_int_eq(cnf_layer_type_from_name(cnf_layer_type_name(all_types[i]), &ty), CNF_OK);
        ck_assert_int_eq(ty, all_types[i]);
        cnf_divergence dk;
        ck_assert_int_eq(cnf_divergence_from_name(cnf_divergence_name((cnf_divergence)i), &dk),
                         CNF_OK);
        ck_assert_int_eq(dk, i);
    }
    for (int i = 0; i < 4; i++) {
        cnf_activation a;
        ck_assert_int_eq(cnf_activation_from_name(cnf_activation_name(all_acts[i]), &a), CNF_OK);
        ck_assert_int_eq(a, all_acts[i]);
    }
    cnf_layer_type ty;
    cnf_activation a;
    cnf_divergence dk;
    ck_assert_int_eq(cnf_layer_type_from_name("squash", &ty), CNF_EINVAL);
    ck_assert_ptr_nonnull(strstr(cnf_last_error(), "concatsquash"));
    ck_assert_int_eq(cnf_activation_from_name("relu", &a), CNF_EINVAL);
    ck_assert_ptr_nonnull(strstr(cnf_last_error(), "swish"));
    ck_assert_int_eq(cnf_divergence_from_name("hutch", &dk), CNF_EINVAL);
    ck_assert_ptr_nonnull(strstr(cnf_last_error(), "rademacher"));
    ck_assert_str_eq(cnf_layer_type_name(CNF_LAYER_CONCATSQUASH), "concatsquash");
    ck_assert_str_eq(cnf_activation_name(CNF_ACT_SOFTPLUS), "softplus");
    ck_assert_str_eq(cnf_divergence_name(CNF_DIV_EXACT), "exact");
}
END_TEST

START_TEST(test_noise)
{
    gsl_rng *r = gsl_rng_alloc(gsl_rng_mt19937);
    double a[1000], b[1000];
    gsl_rng_set(r, 5);
    cnf_net_noise_draw(CNF_DIV_RADEMACHER, r, 1000, a);
    gsl_rng_set(r, 5);
    cnf_net_noise_draw(CNF_DIV_RADEMACHER, r, 1000, b);
    ck_assert_int_eq(memcmp(a, b, sizeof a), 0);
    int plus = 0;
    for (int i = 0; i < 1000; i++) {
        ck_assert(a[i] == 1.0 || a[i] == -1.0);
        plus += a[i] > 0;
    }
    ck_assert_int_gt(plus, 400);
    ck_assert_int_lt(plus, 600);
    cnf_net_noise_draw(CNF_DIV_GAUSSIAN, r, 1000, a);
    double m = 0, s2 = 0;
    for (int i = 0; i < 1000; i++) {
        m += a[i];
        s2 += a[i] * a[i];
    }
    ck_assert(fabs(m / 1000) < 4.0 / sqrt(1000.0));
    ck_assert(fabs(s2 / 1000 - 1.0) < 4.0 * sqrt(2.0 / 1000.0));
    /* exact: nothing drawn, eps untouched */
    unsigned long before = gsl_rng_get(r);
    gsl_rng_set(r, 5);
    gsl_rng_get(r);
    memcpy(b, a, sizeof a);
    cnf_net_noise_draw(CNF_DIV_EXACT, r, 1000, a);
    ck_assert_int_eq(memcmp(a, b, sizeof a), 0);
    (void)before;
    gsl_rng_free(r);
}
END_TEST

/* The vectorisable kernels against libm over a wide range, including the
 * regions where naive formulas cancel. */
START_TEST(test_activation_kernels)
{
    double worst[8] = {0};
    for (int i = -200000; i <= 200000; i++) {
        double x = (double)i * 2e-4;   /* [-40, 40] */
        if (i % 7 == 0)
            x = ldexp(1.0, -(abs(i) % 1000) / 7 - 1) * (i < 0 ? -1.0 : 1.0);   /* tiny */
        double a, d1, d2;
        cnf_act_tanh(x, &a, &d1, &d2);
        double th = tanh(x);
        double e2 = exp(-2.0 * fabs(x)), sech2 = 4.0 * e2 / ((1.0 + e2) * (1.0 + e2));
        worst[0] = fmax(worst[0], fabs(a - th) / fmax(fabs(th), 1e-300));
        worst[1] = fmax(worst[1], fabs(d1 - sech2) / fmax(sech2, 1e-300));
        double s = 1.0 / (1.0 + exp(-x)), sd;
        double s_k;
        cnf_act_sigmoid(x, &s_k, &sd);
        worst[2] = fmax(worst[2], fabs(s_k - s) / s);
        double xn = -fabs(x);   /* the exp kernels serve arguments <= 0 */
        double e = exp(xn);
        worst[3] = fmax(worst[3], fabs(cnf_act_exp(xn) - e) / e);
        double em = expm1(xn);
        worst[4] = fmax(worst[4], fabs(cnf_act_expm1(xn) - em) / fmax(fabs(em), 1e-300));
        double sw, sw1, sw2;
        cnf_act_swish(x, &sw, &sw1, &sw2);
        worst[5] = fmax(worst[5], fabs(sw - x * s) / fmax(fabs(x * s), 1e-300));
        double sp_e, sp1, sp2;
        cnf_act_softplus_d(x, &sp_e, &sp1, &sp2);
        worst[6] = fmax(worst[6], fabs(sp1 - s) / s);
        double el, el1, el2;
        cnf_act_elu(x, &el, &el1, &el2);
        double elx = x > 0 ? x : expm1(x);
        worst[7] = fmax(worst[7], fabs(el - elx) / fmax(fabs(elx), 1e-300));
    }
    /* exp over its whole range */
    for (int i = -7000; i <= 0; i++) {
        double x = (double)i * 0.1;
        double e = exp(x);
        worst[3] = fmax(worst[3], fabs(cnf_act_exp(x) - e) / e);
    }
    const char *names[8] = {"tanh", "tanh'", "sigmoid", "exp", "expm1", "swish", "softplus'",
                            "elu"};
    for (int k = 0; k < 8; k++)
        ck_assert_msg(worst[k] < 1e-15, "%s kernel: worst relative error %.3g", names[k],
                      worst[k]);
    /* NaN propagates */
    double a, d1, d2;
    cnf_act_tanh(NAN, &a, &d1, &d2);
    ck_assert(isnan(a));
}
END_TEST

int main(void)
{
    tu_program_setup();
    Suite *s = suite_create("net");
    TCase *tc = tcase_create("derivatives");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_derivatives_fd, 0, 3);
    tcase_add_test(tc, test_linear_trace_exact);
    tcase_add_test(tc, test_linear_concatsquash_trace);
    tcase_add_test(tc, test_hutchinson_statistics);
    tcase_add_test(tc, test_batch_split);
    tcase_add_test(tc, test_forward_rows);
    tcase_add_test(tc, test_backward_accumulates);
    tcase_add_test(tc, test_bind_weights);
    suite_add_tcase(s, tc);
    TCase *tc2 = tcase_create("structure");
    tcase_add_test(tc2, test_layout);
    tcase_add_test(tc2, test_init);
    tcase_add_test(tc2, test_argument_errors);
    tcase_add_test(tc2, test_config_parse);
    tcase_add_test(tc2, test_noise);
    tcase_add_test(tc2, test_activation_kernels);
    suite_add_tcase(s, tc2);
    return tu_run_suite(s);
}
