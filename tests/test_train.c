/* test_train.c — training (cnf/train.h): the Adam step against a hand
 * computation, learned end times through T = s^2, clipping, the learning-rate
 * schedule, the rng state round trip, option and data checks; then training
 * itself: a correlated 2-D Gaussian learned to within 0.02 nats of its
 * entropy, bit-for-bit repetition with one seed, resume equivalence, fixed
 * T, early stopping and the stopping callback. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <gsl/gsl_randist.h>
#include <gsl/gsl_rng.h>

#include "cnf/flow.h"
#include "cnf/train.h"
#include "testutil.h"

#define PI_VALUE 3.14159265358979323846

/* ---- Optimizer pieces --------------------------------------------------- */

/* Two Adam steps, checked against Kingma and Ba's textbook form
 * m_hat / (sqrt(v_hat) + eps) written out by hand, and the first step's
 * values as literals: with m = v = 0 the first step is lr * g / (|g| + eps). */
START_TEST(test_adam_hand)
{
    double p[3] = {1.0, -2.0, 0.5};
    double m[3] = {0}, v[3] = {0};
    const double g1[3] = {0.1, -0.3, 0.0}, g2[3] = {-0.05, 0.2, 0.4};
    const double lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.1;

    /* step 1 by hand: g = g1 + wd p = (0.2, -0.5, 0.05) */
    double e1[3] = {1.0 - lr * 0.2 / (0.2 + eps), -2.0 + lr * 0.5 / (0.5 + eps),
                    0.5 - lr * 0.05 / (0.05 + eps)};
    cnf_train_adam_step(p, g1, m, v, 3, 1, lr, b1, b2, eps, wd);
    ck_assert(tu_max_rel_error("adam step 1", p, e1, 3, 0.0, 1e-14) < 1e-14);
    ck_assert(fabs(p[0] - 0.9900000005) < 1e-12);   /* 1 - 0.01 (1 - 5e-8) */

    /* step 2 by hand from the moments of step 1 */
    double ga[3], ma[3], va[3], e2[3];
    for (int i = 0; i < 3; i++) {
        double gi = g1[i] + wd * (i == 0 ? 1.0 : i == 1 ? -2.0 : 0.5);
        ma[i] = (1 - b1) * gi;
        va[i] = (1 - b2) * gi * gi;
        ga[i] = g2[i] + wd * e1[i];
        ma[i] = b1 * ma[i] + (1 - b1) * ga[i];
        va[i] = b2 * va[i] + (1 - b2) * ga[i] * ga[i];
        double mh = ma[i] / (1 - b1 * b1), vh = va[i] / (1 - b2 * b2);
        e2[i] = e1[i] - lr * mh / (sqrt(vh) + eps);
    }
    cnf_train_adam_step(p, g2, m, v, 3, 2, lr, b1, b2, eps, wd);
    ck_assert(tu_max_rel_error("adam step 2", p, e2, 3, 0.0, 1e-13) < 1e-13);
    ck_assert(tu_max_rel_error("adam m", m, ma, 3, 0.0, 1e-14) < 1e-14);
    ck_assert(tu_max_rel_error("adam v", v, va, 3, 0.0, 1e-14) < 1e-14);
}
END_TEST

/* A flow: D, one block of the given hidden widths (concatsquash tanh),
 * end time T, parameters from seed. */
static cnf_flow *make_flow(size_t D, size_t K, const char *hidden, double T, unsigned long seed)
{
    double Ts[4];
    ck_assert_uint_le(K, 4);
    for (size_t k = 0; k < K; k++)
        Ts[k] = T;
    gsl_rng *rng = tu_rng(seed);
    cnf_flow *flow = tu_flow(D, K, hidden, CNF_LAYER_CONCATSQUASH, CNF_ACT_TANH, Ts, rng);
    gsl_rng_free(rng);
    return flow;
}

/* The optimizer step on a synthetic gradient: network entries get plain
 * Adam; end times move through s = sqrt(T) with dL/ds = 2 s dL/dT; with
 * learn_T = 0 the T entries stay bit for bit and their moments at zero. */
START_TEST(test_apply_gradient_T)
{
    for (int learn = 0; learn <= 1; learn++) {
        cnf_flow *flow = make_flow(2, 2, "4", 0.5, 1);
        size_t P = cnf_flow_num_params(flow);
        cnf_train_options opt;
        cnf_train_options_default(&opt);
        opt.learn_T = learn;
        opt.weight_decay = 1e-3;
        cnf_train_state *st = cnf_train_state_alloc(P, 3);
        double *p0 = malloc(P * sizeof *p0), *g = malloc(P * sizeof *g);
        memcpy(p0, cnf_flow_params(flow), P * sizeof *p0);
        cnf_flow_params(flow)[cnf_flow_T_index(flow, 1)] = 0.8;
        p0[cnf_flow_T_index(flow, 1)] = 0.8;
        for (size_t i = 0; i < P; i++)
            g[i] = 0.01 * sin(1.0 + (double)i);
        double gT[2] = {g[cnf_flow_T_index(flow, 0)], g[cnf_flow_T_index(flow, 1)]};
        double norm = 0;
        ck_assert_int_eq(cnf_train_apply_gradient(flow, st, &opt, 0.01, g, &norm), CNF_OK);
        ck_assert_uint_eq(st->iteration, 1);
        ck_assert(st->lr == 0.01);
        const double *p = cnf_flow_params(flow);
        ck_assert(memcmp(p, st->params, P * sizeof *p) == 0);
        /* first Adam step moves each network entry by lr * g/(|g| + eps) */
        size_t nth = cnf_flow_T_index(flow, 0);
        for (size_t i = 0; i < nth; i++) {
            double gi = 0.01 * sin(1.0 + (double)i) + 1e-3 * p0[i];
            double e = p0[i] - 0.01 * gi / (fabs(gi) + 1e-8);
            ck_assert_msg(fabs(p[i] - e) <= 1e-15 * fabs(e) + 1e-18, "entry %zu", i);
        }
        for (int k = 0; k < 2; k++) {
            size_t i = cnf_flow_T_index(flow, (size_t)k);
            if (!learn) {
                ck_assert(p[i] == p0[i]);
                ck_assert(st->adam_m[i] == 0.0 && st->adam_v[i] == 0.0 && g[i] == 0.0);
            } else {
                double s = sqrt(p0[i]);
                double gs = 2.0 * s * gT[k];
                ck_assert(fabs(g[i] - gs) <= 1e-16);
                double gsw = gs + 1e-3 * s;
                double s1 = s - 0.01 * gsw / (fabs(gsw) + 1e-8);
                ck_assert_msg(fabs(p[i] - s1 * s1) < 1e-15, "T_%d = %.17g, want %.17g", k, p[i],
                              s1 * s1);
            }
        }
        free(p0);
        free(g);
        cnf_train_state_free(st);
        cnf_flow_free(flow);
    }
}
END_TEST

/* An Adam step that drives s = sqrt(T) to (nearly) zero leaves T at the
 * floor CNF_TRAIN_T_MIN, never 0 (whose gradient through s is 0 forever and
 * which a model file cannot hold); a T above the floor is untouched by it. */
START_TEST(test_T_floor)
{
    cnf_flow *flow = make_flow(2, 2, "4", 0.5, 1);
    size_t P = cnf_flow_num_params(flow);
    cnf_train_options opt;
    cnf_train_options_default(&opt);
    opt.weight_decay = 0.0;
    cnf_train_state *st = cnf_train_state_alloc(P, 3);
    double *g = calloc(P, sizeof *g);
    size_t i0 = cnf_flow_T_index(flow, 0), i1 = cnf_flow_T_index(flow, 1);
    cnf_flow_params(flow)[i0] = 1e-20;   /* s = 1e-10 */
    cnf_flow_params(flow)[i1] = 0.25;    /* s = 0.5 */
    g[i0] = 1.0;                         /* dL/dT > 0: the step shrinks s */
    g[i1] = 1.0;
    /* the first Adam step moves s by lr: 1e-10 - 1e-10 -> about 0 */
    ck_assert_int_eq(cnf_train_apply_gradient(flow, st, &opt, 1e-10, g, NULL), CNF_OK);
    const double *p = cnf_flow_params(flow);
    ck_assert_msg(p[i0] == CNF_TRAIN_T_MIN, "T_0 = %g, want the floor %g", p[i0], CNF_TRAIN_T_MIN);
    ck_assert(p[i1] > 0.2 && p[i1] < 0.25);
    ck_assert(st->params[i0] == CNF_TRAIN_T_MIN);
    /* and from the floor the gradient through s is not zero */
    g[i0] = -1.0;
    g[i1] = 0.0;
    double norm = 0.0;
    ck_assert_int_eq(cnf_train_apply_gradient(flow, st, &opt, 1e-3, g, &norm), CNF_OK);
    ck_assert(norm > 0.0);
    ck_assert(cnf_flow_params(flow)[i0] > CNF_TRAIN_T_MIN);
    free(g);
    cnf_train_state_free(st);
    cnf_flow_free(flow);
}
END_TEST

/* Clipping scales the whole gradient to clip_norm (torch's
 * max_norm / (norm + 1e-6)); a small gradient is left alone. */
START_TEST(test_clip)
{
    cnf_flow *flow = make_flow(2, 1, "4", 0.5, 1);
    size_t P = cnf_flow_num_params(flow);
    cnf_train_options opt;
    cnf_train_options_default(&opt);
    opt.clip_norm = 1.0;
    cnf_train_state *st = cnf_train_state_alloc(P, 3);
    double *g = calloc(P, sizeof *g), *g0 = calloc(P, sizeof *g0);
    for (size_t i = 0; i < P; i++)
        g0[i] = g[i] = 3.0 * cos((double)i);
    size_t iT = cnf_flow_T_index(flow, 0);
    g0[iT] *= 2.0 * sqrt(0.5);   /* what the T entry becomes before clipping */
    double n0 = 0, n1 = 0, norm = 0;
    for (size_t i = 0; i < P; i++)
        n0 += g0[i] * g0[i];
    n0 = sqrt(n0);
    ck_assert_int_eq(cnf_train_apply_gradient(flow, st, &opt, 1e-3, g, &norm), CNF_OK);
    ck_assert(fabs(norm - n0) < 1e-12 * n0);
    for (size_t i = 0; i < P; i++) {
        n1 += g[i] * g[i];
        ck_assert(fabs(g[i] - g0[i] / (n0 + 1e-6)) < 1e-15);
    }
    ck_assert(fabs(sqrt(n1) - n0 / (n0 + 1e-6)) < 1e-12);
    for (size_t i = 0; i < P; i++)
        g[i] = 1e-3 * cos((double)i);
    double keep = g[0];
    ck_assert_int_eq(cnf_train_apply_gradient(flow, st, &opt, 1e-3, g, &norm), CNF_OK);
    ck_assert(g[0] == keep);
    free(g);
    free(g0);
    cnf_train_state_free(st);
    cnf_flow_free(flow);
}
END_TEST

START_TEST(test_lr_schedule)
{
    cnf_train_options opt;
    cnf_train_options_default(&opt);
    ck_assert(cnf_train_lr(&opt, 1) == 1e-3 && cnf_train_lr(&opt, 100000) == 1e-3);
    opt.lr_decay = 0.5;
    opt.lr_decay_every = 10;
    ck_assert(cnf_train_lr(&opt, 1) == 1e-3);
    ck_assert(cnf_train_lr(&opt, 10) == 1e-3);
    ck_assert(cnf_train_lr(&opt, 11) == 5e-4);
    ck_assert(cnf_train_lr(&opt, 30) == 2.5e-4);
    ck_assert(cnf_train_lr(&opt, 31) == 1.25e-4);
}
END_TEST

/* The rng's raw bytes restore its stream exactly; a wrong size is refused. */
START_TEST(test_rng_bytes)
{
    cnf_train_state *a = cnf_train_state_alloc(5, 77);
    ck_assert_ptr_nonnull(a);
    ck_assert_str_eq(cnf_train_state_rng_type(a), "mt19937");
    for (int i = 0; i < 100; i++)
        gsl_rng_get(a->rng);
    size_t n = 0;
    const void *bytes = cnf_train_state_rng_bytes(a, &n);
    ck_assert_uint_eq(n, gsl_rng_size(a->rng));
    unsigned char *copy = malloc(n);
    memcpy(copy, bytes, n);
    unsigned long x[10];
    for (int i = 0; i < 10; i++)
        x[i] = gsl_rng_get(a->rng);
    cnf_train_state *b = cnf_train_state_alloc(5, 1);
    ck_assert_int_eq(cnf_train_state_set_rng_bytes(b, copy, n - 1), CNF_EFORMAT);
    ck_assert_int_eq(cnf_train_state_set_rng_bytes(b, copy, n), CNF_OK);
    for (int i = 0; i < 10; i++)
        ck_assert(gsl_rng_get(b->rng) == x[i]);
    ck_assert(isinf(b->best_val_nll) && isnan(b->last_val_nll) && b->iteration == 0);
    ck_assert_ptr_null(cnf_train_state_alloc(0, 1));
    cnf_train_state_free(NULL);
    free(copy);
    cnf_train_state_free(a);
    cnf_train_state_free(b);
}
END_TEST

START_TEST(test_option_and_data_checks)
{
    cnf_train_options opt;
    cnf_train_options_default(&opt);
    ck_assert_int_eq(cnf_train_options_check(&opt), CNF_OK);
    opt.batch = 0;
    ck_assert_int_eq(cnf_train_options_check(&opt), CNF_EINVAL);
    ck_assert_ptr_nonnull(strstr(cnf_last_error(), "batch"));
    cnf_train_options_default(&opt);
    opt.lr = -1;
    ck_assert_int_eq(cnf_train_options_check(&opt), CNF_EINVAL);
    cnf_train_options_default(&opt);
    opt.beta2 = 1.0;
    ck_assert_int_eq(cnf_train_options_check(&opt), CNF_EINVAL);
    cnf_train_options_default(&opt);
    opt.clip_norm = NAN;
    ck_assert_int_eq(cnf_train_options_check(&opt), CNF_EINVAL);

    cnf_flow *flow = make_flow(2, 1, "4", 0.5, 1);
    size_t P = cnf_flow_num_params(flow);
    cnf_train_state *st = cnf_train_state_alloc(P, 1);
    cnf_train_options_default(&opt);
    opt.batch = 4;
    opt.iters = 2;
    double X[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    ck_assert_int_eq(cnf_train_run(flow, X, 3, NULL, 0, &opt, st, NULL), CNF_EDATA);  /* 3 < 4 */
    X[7] = NAN;
    ck_assert_int_eq(cnf_train_run(flow, X, 5, NULL, 0, &opt, st, NULL), CNF_EDATA);
    ck_assert_ptr_nonnull(strstr(cnf_last_error(), "row 3"));
    X[7] = 7;
    cnf_train_state *wrong = cnf_train_state_alloc(P + 1, 1);
    ck_assert_int_eq(cnf_train_run(flow, X, 5, NULL, 0, &opt, wrong, NULL), CNF_EDIM);
    ck_assert_uint_eq(st->iteration, 0);
    cnf_train_state_free(wrong);
    cnf_train_state_free(st);
    cnf_flow_free(flow);
}
END_TEST

/* ---- Training ------------------------------------------------------------ */

/* x = L z with L = [[1.5, 0], [1.2, 0.6]]: covariance [[2.25, 1.8], [1.8, 1.8]],
 * det 0.81, entropy log(2 pi e) + 0.5 log 0.81. Shifted by (1, -2). */
#define GAUSS_L00 1.5
#define GAUSS_L10 1.2
#define GAUSS_L11 0.6

static double *gaussian_data(size_t n, unsigned long seed)
{
    gsl_rng *rng = tu_rng(seed);
    double *X = malloc(2 * n * sizeof *X);
    for (size_t i = 0; i < n; i++) {
        double a = gsl_ran_gaussian(rng, 1.0), b = gsl_ran_gaussian(rng, 1.0);
        X[2 * i] = 1.0 + GAUSS_L00 * a;
        X[2 * i + 1] = -2.0 + GAUSS_L10 * a + GAUSS_L11 * b;
    }
    gsl_rng_free(rng);
    return X;
}

/* -log N(x; mu, L L^T) of one point. */
static double gaussian_nll(const double *x)
{
    double a = (x[0] - 1.0) / GAUSS_L00;
    double b = (x[1] + 2.0 - GAUSS_L10 * a) / GAUSS_L11;
    return 0.5 * (a * a + b * b) + log(2 * PI_VALUE) + log(GAUSS_L00 * GAUSS_L11);
}

static double mean_nll(cnf_flow *flow, const double *X, size_t N)
{
    cnf_flow_options fo;
    cnf_flow_options_default(&fo);
    cnf_flow_work *w = cnf_flow_work_alloc(flow, 1000, &fo);
    double *ll = malloc(N * sizeof *ll);
    ck_assert_int_eq(cnf_flow_log_likelihood(flow, w, X, N, NULL, ll, NULL), CNF_OK);
    double s = 0;
    for (size_t i = 0; i < N; i++)
        s -= ll[i];
    free(ll);
    cnf_flow_work_free(w);
    return s / (double)N;
}

START_TEST(test_gaussian_fit)
{
    const size_t Ntr = 5000, Nva = 1000, Nte = 20000;
    double *Xtr = gaussian_data(Ntr, 11), *Xva = gaussian_data(Nva, 12),
           *Xte = gaussian_data(Nte, 13);
    cnf_flow *flow = make_flow(2, 1, "16-16", 0.5, 5);
    ck_assert_int_eq(cnf_flow_fit_preprocess(flow, Xtr, Ntr), CNF_OK);
    cnf_train_options opt;
    cnf_train_options_default(&opt);
    opt.iters = 400;
    opt.batch = 200;
    opt.lr = 1e-2;
    opt.lr_decay = 0.3;
    opt.lr_decay_every = 200;
    opt.val_every = 50;
    opt.weight_decay = 0.0;
    cnf_train_state *st = cnf_train_state_alloc(cnf_flow_num_params(flow), 21);
    cnf_train_result res;
    ck_assert_int_eq(cnf_train_run(flow, Xtr, Ntr, Xva, Nva, &opt, st, &res), CNF_OK);

    double H = log(2 * PI_VALUE * exp(1.0)) + 0.5 * log(0.81);
    double truth = 0;
    for (size_t i = 0; i < Nte; i++)
        truth += gaussian_nll(Xte + 2 * i);
    truth /= (double)Nte;
    double nll = mean_nll(flow, Xte, Nte);
    fprintf(stderr,
            "gaussian fit: test NLL %.4f, true density on the test set %.4f, entropy %.4f; "
            "best val %.4f at %zu; %.1f s, nfe %.1f fwd %.1f bwd per iteration, T = %.3f\n",
            nll, truth, H, res.best_val_nll, res.best_iteration, res.seconds,
            res.nfe_forward_mean, res.nfe_backward_mean,
            cnf_flow_params(flow)[cnf_flow_T_index(flow, 0)]);
    ck_assert_uint_eq(res.iters, 400);
    ck_assert_uint_eq(res.iters_run, 400);
    ck_assert(!res.stopped_early && !res.interrupted);
    ck_assert(fabs(truth - H) < 0.02);            /* the test set is large enough */
    ck_assert_msg(fabs(nll - H) < 0.02, "test NLL %g vs entropy %g", nll, H);
    ck_assert_msg(nll - truth < 0.02, "test NLL %g vs true density %g", nll, truth);
    /* the flow holds the best validated parameters */
    ck_assert(memcmp(cnf_flow_params(flow), st->best_params,
                     st->n_params * sizeof(double)) == 0);
    free(Xtr);
    free(Xva);
    free(Xte);
    cnf_train_state_free(st);
    cnf_flow_free(flow);
}
END_TEST

/* A short run with Hutchinson noise in training and validation, so that
 * every random stream is exercised. */
static void short_run(cnf_flow *flow, cnf_train_state *st, size_t iters, cnf_train_result *res)
{
    static double *X = NULL, *V = NULL;
    if (!X) {
        X = gaussian_data(500, 31);
        V = gaussian_data(200, 32);
    }
    cnf_train_options opt;
    cnf_train_options_default(&opt);
    opt.iters = iters;
    opt.batch = 32;
    opt.lr = 5e-3;
    opt.val_every = 5;
    opt.flow.divergence = CNF_DIV_RADEMACHER;
    opt.val_divergence = CNF_TRAIN_VAL_AS_TRAINING;
    opt.clip_norm = 10.0;
    opt.lr_decay = 0.9;
    opt.lr_decay_every = 7;
    ck_assert_int_eq(cnf_train_run(flow, X, 500, V, 200, &opt, st, res), CNF_OK);
}

/* Validation evaluates as cnf_flow_log_likelihood does with the flow's
 * default options (the safety factor of evaluation, not the training
 * forward solves' 0.7), so the best model is picked by the numbers a user
 * gets from cnf eval afterwards. */
START_TEST(test_validation_as_evaluation)
{
    double *X = gaussian_data(300, 41), *V = gaussian_data(150, 42);
    cnf_flow *flow = make_flow(2, 1, "8-8", 0.5, 9);
    size_t P = cnf_flow_num_params(flow);
    cnf_train_state *st = cnf_train_state_alloc(P, 4);
    cnf_train_options opt;
    cnf_train_options_default(&opt);
    ck_assert(opt.flow.solver.safety == 0.7);
    opt.iters = 6;
    opt.batch = 32;
    opt.val_every = 6;      /* one validation, after the last step: best = last */
    /* tolerances that take several steps, so that the safety factor matters */
    tu_set_tol(&opt.flow, 1e-9, 1e-9);
    cnf_train_result res;
    ck_assert_int_eq(cnf_train_run(flow, X, 300, V, 150, &opt, st, &res), CNF_OK);
    ck_assert_uint_eq(res.best_iteration, 6);
    cnf_flow_options eo;
    cnf_flow_options_default(&eo);
    tu_set_tol(&eo, 1e-9, 1e-9);
    cnf_flow_work *w = cnf_flow_work_alloc(flow, 1000, &eo);
    double ll[150], nll = 0.0;
    ck_assert_int_eq(cnf_flow_log_likelihood(flow, w, V, 150, NULL, ll, NULL), CNF_OK);
    for (size_t i = 0; i < 150; i++)
        nll -= ll[i];
    nll /= 150.0;
    ck_assert_msg(fabs(nll - res.val_nll) <= 1e-13, "validation %.17g, evaluation %.17g",
                  res.val_nll, nll);
    cnf_flow_work_free(w);
    cnf_train_state_free(st);
    cnf_flow_free(flow);
    free(X);
    free(V);
}
END_TEST

START_TEST(test_same_seed_bitwise)
{
    cnf_flow *a = make_flow(2, 2, "8-8", 0.5, 9), *b = make_flow(2, 2, "8-8", 0.5, 9);
    size_t P = cnf_flow_num_params(a);
    cnf_train_state *sa = cnf_train_state_alloc(P, 4), *sb = cnf_train_state_alloc(P, 4);
    cnf_train_result ra, rb;
    short_run(a, sa, 20, &ra);
    short_run(b, sb, 20, &rb);
    ck_assert(memcmp(cnf_flow_params(a), cnf_flow_params(b), P * sizeof(double)) == 0);
    ck_assert(memcmp(sa->params, sb->params, P * sizeof(double)) == 0);
    ck_assert(memcmp(sa->adam_v, sb->adam_v, P * sizeof(double)) == 0);
    ck_assert(ra.train_nll == rb.train_nll && ra.best_val_nll == rb.best_val_nll);
    ck_assert(ra.nfe_forward == rb.nfe_forward && ra.nfe_backward == rb.nfe_backward);
    /* and the parameters did move, T included */
    cnf_flow *c = make_flow(2, 2, "8-8", 0.5, 9);
    ck_assert(memcmp(sa->params, cnf_flow_params(c), P * sizeof(double)) != 0);
    ck_assert(sa->params[cnf_flow_T_index(a, 1)] != 0.5);
    /* another seed, another run */
    cnf_train_state *sc = cnf_train_state_alloc(P, 5);
    short_run(c, sc, 20, NULL);
    ck_assert(memcmp(sa->params, sc->params, P * sizeof(double)) != 0);
    cnf_train_state_free(sa);
    cnf_train_state_free(sb);
    cnf_train_state_free(sc);
    cnf_flow_free(a);
    cnf_flow_free(b);
    cnf_flow_free(c);
}
END_TEST

/* 2N iterations in one call equal N, then N more from a copy of the state
 * rebuilt field by field (as a model file would restore it) into a flow
 * whose parameters are something else. */
START_TEST(test_resume)
{
    cnf_flow *a = make_flow(2, 2, "8-8", 0.5, 9), *b = make_flow(2, 2, "8-8", 0.5, 9);
    size_t P = cnf_flow_num_params(a);
    cnf_train_state *sa = cnf_train_state_alloc(P, 4), *sb = cnf_train_state_alloc(P, 4);
    cnf_train_result ra, rb;
    short_run(a, sa, 30, &ra);
    short_run(b, sb, 15, &rb);
    ck_assert_uint_eq(sb->iteration, 15);

    cnf_flow *c = make_flow(2, 2, "8-8", 0.5, 123);   /* other parameters */
    /* the warm first steps of the 2 blocks' forward and backward solves */
    ck_assert_uint_eq(sb->n_step_hints, 4);
    for (size_t i = 0; i < 4; i++)
        ck_assert(sb->step_hints[i] > 0.0);
    cnf_train_state *sc = tu_state_copy(sb);
    cnf_train_state_free(sb);

    cnf_train_result rc;
    short_run(c, sc, 30, &rc);
    ck_assert_uint_eq(rc.iters, 30);
    ck_assert_uint_eq(rc.iters_run, 15);
    ck_assert(memcmp(sa->params, sc->params, P * sizeof(double)) == 0);
    ck_assert(memcmp(sa->adam_m, sc->adam_m, P * sizeof(double)) == 0);
    ck_assert(memcmp(cnf_flow_params(a), cnf_flow_params(c), P * sizeof(double)) == 0);
    ck_assert(sa->best_val_nll == sc->best_val_nll && sa->best_iteration == sc->best_iteration);
    ck_assert(ra.best_val_nll == rc.best_val_nll);
    /* a state already at its target does nothing */
    cnf_train_result rd;
    short_run(c, sc, 30, &rd);
    ck_assert_uint_eq(rd.iters_run, 0);
    ck_assert(memcmp(sa->params, sc->params, P * sizeof(double)) == 0);
    cnf_train_state_free(sa);
    cnf_train_state_free(sc);
    cnf_flow_free(a);
    cnf_flow_free(b);
    cnf_flow_free(c);
}
END_TEST

START_TEST(test_fixed_T)
{
    cnf_flow *flow = make_flow(2, 2, "8", 0.7, 9);
    size_t P = cnf_flow_num_params(flow);
    double *p0 = malloc(P * sizeof *p0);
    memcpy(p0, cnf_flow_params(flow), P * sizeof *p0);
    double *X = gaussian_data(300, 41);
    cnf_train_options opt;
    cnf_train_options_default(&opt);
    opt.iters = 10;
    opt.batch = 50;
    opt.learn_T = 0;
    opt.lr = 1e-2;
    cnf_train_state *st = cnf_train_state_alloc(P, 2);
    ck_assert_int_eq(cnf_train_run(flow, X, 300, NULL, 0, &opt, st, NULL), CNF_OK);
    const double *p = cnf_flow_params(flow);
    for (size_t k = 0; k < 2; k++)
        ck_assert(p[cnf_flow_T_index(flow, k)] == 0.7);
    ck_assert(memcmp(p, p0, cnf_flow_T_index(flow, 0) * sizeof *p) != 0);
    /* no validation: the flow holds the last parameters */
    ck_assert(memcmp(p, st->params, P * sizeof *p) == 0);
    free(p0);
    free(X);
    cnf_train_state_free(st);
    cnf_flow_free(flow);
}
END_TEST

/* Training data near the origin, validation data far from it: each
 * validation is worse than the first, so patience 2 with validation every
 * 5 iterations stops at iteration 15 and keeps iteration 5's parameters. */
START_TEST(test_early_stopping)
{
    cnf_flow *flow = make_flow(2, 1, "8", 0.5, 9);
    size_t P = cnf_flow_num_params(flow);
    double *X = gaussian_data(300, 41), *V = gaussian_data(100, 42);
    for (size_t i = 0; i < 300 * 2; i++)
        X[i] *= 0.2;
    for (size_t i = 0; i < 100 * 2; i++)
        V[i] = V[i] + 6.0;
    cnf_train_options opt;
    cnf_train_options_default(&opt);
    opt.iters = 100;
    opt.batch = 50;
    opt.lr = 2e-2;
    opt.val_every = 5;
    opt.patience = 2;
    cnf_train_state *st = cnf_train_state_alloc(P, 2);
    cnf_train_result res;
    ck_assert_int_eq(cnf_train_run(flow, X, 300, V, 100, &opt, st, &res), CNF_OK);
    ck_assert(res.stopped_early);
    ck_assert_uint_eq(res.iters, 15);
    ck_assert_uint_eq(res.best_iteration, 5);
    ck_assert_uint_eq(st->bad_validations, 2);
    ck_assert(res.val_nll > res.best_val_nll);
    ck_assert(memcmp(cnf_flow_params(flow), st->best_params, P * sizeof(double)) == 0);
    ck_assert(memcmp(st->params, st->best_params, P * sizeof(double)) != 0);
    free(X);
    free(V);
    cnf_train_state_free(st);
    cnf_flow_free(flow);
}
END_TEST

typedef struct {
    size_t calls;
    size_t last_iteration;
    int saw_validation;
    int ok;
} cb_record;

static int stop_at_7(const cnf_train_progress *p, void *ctx)
{
    cb_record *r = ctx;
    r->calls++;
    if (p->iteration != r->last_iteration + 1 || p->iters != 50 || !isfinite(p->loss)
        || p->nfe_forward == 0 || p->nfe_backward == 0 || p->n_blocks != 1 || !(p->T[0] > 0))
        r->ok = 0;
    if (p->validated) {
        r->saw_validation = 1;
        if (!(p->val_nll == p->best_val_nll) || p->best_iteration != p->iteration)
            r->ok = 0;
    } else if (p->iteration < 3 && !isnan(p->val_nll)) {
        r->ok = 0;
    }
    r->last_iteration = p->iteration;
    return p->iteration == 7;
}

START_TEST(test_callback_stop)
{
    cnf_flow *flow = make_flow(2, 1, "8", 0.5, 9);
    size_t P = cnf_flow_num_params(flow);
    double *X = gaussian_data(300, 41);
    cnf_train_options opt;
    cnf_train_options_default(&opt);
    opt.iters = 50;
    opt.batch = 50;
    opt.val_every = 3;
    cb_record rec = {0, 0, 0, 1};
    opt.callback = stop_at_7;
    opt.callback_ctx = &rec;
    cnf_train_state *st = cnf_train_state_alloc(P, 2);
    cnf_train_result res;
    ck_assert_int_eq(cnf_train_run(flow, X, 300, X, 100, &opt, st, &res), CNF_OK);
    ck_assert(res.interrupted && !res.stopped_early);
    ck_assert_uint_eq(res.iters, 7);
    ck_assert_uint_eq(rec.calls, 7);
    ck_assert(rec.ok && rec.saw_validation);
    ck_assert(res.nfe_forward_mean > 0 && res.nfe_validation > 0 && isfinite(res.train_nll));
    /* the interrupted run validated its last parameters (iteration 7 is no
     * multiple of 3) and kept them if better than iteration 6's */
    ck_assert(isfinite(st->last_val_nll));
    ck_assert(st->best_iteration == 6 || st->best_iteration == 7);
    ck_assert_uint_eq(st->bad_validations, 0);   /* the last one counts no patience */
    free(X);
    cnf_train_state_free(st);
    cnf_flow_free(flow);
}
END_TEST

/* max_seconds: a limit shorter than one iteration stops after the first;
 * the last parameters are validated and kept (the only candidates); the
 * run is not "interrupted" and patience is untouched. */
START_TEST(test_max_seconds)
{
    cnf_flow *flow = make_flow(2, 1, "8", 0.5, 9);
    size_t P = cnf_flow_num_params(flow);
    double *X = gaussian_data(300, 41);
    cnf_train_options opt;
    cnf_train_options_default(&opt);
    opt.iters = 50;
    opt.batch = 50;
    opt.val_every = 100;
    opt.max_seconds = 1e-9;
    cnf_train_state *st = cnf_train_state_alloc(P, 2);
    cnf_train_result res;
    ck_assert_int_eq(cnf_train_run(flow, X, 300, X, 100, &opt, st, &res), CNF_OK);
    ck_assert(res.timed_out && !res.interrupted && !res.stopped_early);
    ck_assert_uint_eq(res.iters_run, 1);
    ck_assert(st->has_best && st->best_iteration == 1 && isfinite(st->best_val_nll));
    ck_assert(memcmp(cnf_flow_params(flow), st->params, P * sizeof(double)) == 0);
    opt.max_seconds = -1.0;
    ck_assert_int_eq(cnf_train_options_check(&opt), CNF_EINVAL);
    free(X);
    cnf_train_state_free(st);
    cnf_flow_free(flow);
}
END_TEST

int main(void)
{
    tu_program_setup();
    Suite *s = suite_create("train");
    TCase *tc = tcase_create("optimizer");
    tcase_add_test(tc, test_adam_hand);
    tcase_add_test(tc, test_apply_gradient_T);
    tcase_add_test(tc, test_T_floor);
    tcase_add_test(tc, test_clip);
    tcase_add_test(tc, test_lr_schedule);
    tcase_add_test(tc, test_rng_bytes);
    tcase_add_test(tc, test_option_and_data_checks);
    suite_add_tcase(s, tc);
    TCase *tt = tcase_create("training");
    tcase_set_timeout(tt, 120);
    tcase_add_test(tt, test_gaussian_fit);
    tcase_add_test(tt, test_same_seed_bitwise);
    tcase_add_test(tt, test_validation_as_evaluation);
    tcase_add_test(tt, test_resume);
    tcase_add_test(tt, test_fixed_T);
    tcase_add_test(tt, test_early_stopping);
    tcase_add_test(tt, test_callback_stop);
    tcase_add_test(tt, test_max_seconds);
    suite_add_tcase(s, tt);
    return tu_run_suite(s);
}
