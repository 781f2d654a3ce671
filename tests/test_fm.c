/* test_fm.c — flow matching (cnf/fm.h) and its training (cnf/train.h with
 * CNF_OBJ_FM): the loss against a hand computation, its gradient against
 * central differences for every layer type and activation, the draw
 * (stratified times, optimal pairing), the refusals, a trained flow's exact
 * NLL against a Gaussian's closed-form density, and bit-for-bit resume. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>
#include <gsl/gsl_randist.h>

#include "cnf/fm.h"
#include "cnf/train.h"
#include "testutil.h"

#define PI_VALUE 3.14159265358979323846

/* A fixture batch: data rows X (B x D) away from the origin, noise, and
 * times including both ends of the path and repeated ones. */
typedef struct {
    size_t B, D;
    double X[7 * 3], eps[7 * 3], t[7];
} batch;

static void make_batch(batch *b, gsl_rng *r)
{
    static const double times[7] = {0.0, 0.1, 0.1, 0.5, 0.5, 0.5, 1.0};
    b->B = 7;
    b->D = 3;
    for (size_t i = 0; i < 7 * 3; i++) {
        b->X[i] = 2.0 + gsl_ran_gaussian(r, 1.5);
        b->eps[i] = gsl_ran_gaussian(r, 1.0);
    }
    memcpy(b->t, times, sizeof times);
}

/* A flow of one block ending at 1 with a non-trivial preprocessing. */
static cnf_flow *fm_flow(size_t D, const char *hidden, cnf_layer_type type, cnf_activation act,
                         gsl_rng *r)
{
    double T = 1.0;
    cnf_flow *flow = tu_flow(D, 1, hidden, type, act, &T, r);
    for (size_t i = 0; i < D; i++) {
        cnf_flow_mean(flow)[i] = 1.5 + 0.25 * (double)i;
        cnf_flow_scale(flow)[i] = 0.7 + 0.4 * (double)i;
    }
    return flow;
}

typedef struct {
    cnf_flow *flow;
    cnf_fm_work *w;
    const batch *b;
} loss_ctx;

static double loss_at(const double *theta, void *vctx)
{
    loss_ctx *c = vctx;
    size_t P = cnf_flow_num_params(c->flow);
    double *p = cnf_flow_params(c->flow);
    double *save = malloc(P * sizeof *save);
    memcpy(save, p, P * sizeof *p);
    memcpy(p, theta, P * sizeof *p);
    double l = NAN;
    ck_assert_int_eq(cnf_fm_loss_grad_at(c->flow, c->w, c->b->X, c->b->eps, c->b->t, c->b->B, &l,
                                         NULL), CNF_OK);
    memcpy(p, save, P * sizeof *p);
    free(save);
    return l;
}

/* With zero parameters f = 0 (and with concatsquash's c_w t also zero), so
 * the loss is the mean of ||eps - y||^2 with y the preprocessed rows. */
START_TEST(test_loss_of_zero_field)
{
    gsl_rng *r = tu_rng(3);
    batch b;
    make_batch(&b, r);
    cnf_flow *flow = fm_flow(3, "8-8", CNF_LAYER_CONCATSQUASH, CNF_ACT_TANH, r);
    memset(cnf_flow_params(flow), 0, (cnf_flow_num_params(flow) - 1) * sizeof(double));
    cnf_fm_options fo;
    cnf_fm_options_default(&fo);
    cnf_fm_work *w = cnf_fm_work_alloc(flow, 16, &fo);
    ck_assert_ptr_nonnull(w);
    double loss, expect = 0.0;
    for (size_t n = 0; n < b.B; n++)
        for (size_t i = 0; i < 3; i++) {
            double y = (b.X[n * 3 + i] - cnf_flow_mean(flow)[i]) / cnf_flow_scale(flow)[i];
            double u = b.eps[n * 3 + i] - y;
            expect += u * u;
        }
    expect /= (double)b.B;
    ck_assert_int_eq(cnf_fm_loss_grad_at(flow, w, b.X, b.eps, b.t, b.B, &loss, NULL), CNF_OK);
    ck_assert_msg(fabs(loss - expect) <= 1e-13 * expect, "loss %.17g, by hand %.17g", loss,
                  expect);
    cnf_fm_work_free(w);
    cnf_flow_free(flow);
    gsl_rng_free(r);
}
END_TEST

/* The loss's gradient against central differences, for every layer type
 * and activation; the T entry is zero, as the path fixes T. */
START_TEST(test_gradient_fd)
{
    static const cnf_layer_type types[] = {CNF_LAYER_CONCATSQUASH, CNF_LAYER_CONCAT,
                                           CNF_LAYER_IGNORE};
    static const cnf_activation acts[] = {CNF_ACT_TANH, CNF_ACT_SOFTPLUS, CNF_ACT_ELU,
                                          CNF_ACT_SWISH};
    for (size_t it = 0; it < 3; it++)
        for (size_t ia = 0; ia < 4; ia++) {
            gsl_rng *r = tu_rng(100 + 10 * it + ia);
            batch b;
            make_batch(&b, r);
            cnf_flow *flow = fm_flow(3, "8-6", types[it], acts[ia], r);
            size_t P = cnf_flow_num_params(flow);
            for (size_t threads = 1; threads <= 2; threads++) {
                cnf_fm_options fo;
                cnf_fm_options_default(&fo);
                fo.threads = threads;
                cnf_fm_work *w = cnf_fm_work_alloc(flow, 16, &fo);
                ck_assert_ptr_nonnull(w);
                double *g = malloc(P * sizeof *g), *fd = malloc(P * sizeof *fd);
                double *theta = malloc(P * sizeof *theta);
                double loss;
                ck_assert_int_eq(cnf_fm_loss_grad_at(flow, w, b.X, b.eps, b.t, b.B, &loss, g),
                                 CNF_OK);
                memcpy(theta, cnf_flow_params(flow), P * sizeof *theta);
                loss_ctx c = {flow, w, &b};
                ck_assert(fabs(loss_at(theta, &c) - loss) == 0.0);
                /* fourth-order differences: second-order ones at 1e-6 sit at
                 * ~1e-8 (rounding); these measure 2e-11 to 2e-10 */
                tu_fd_gradient4(loss_at, &c, theta, P - 1, 1e-4, fd);
                fd[P - 1] = 0.0;
                double num = 0.0, den = 0.0;
                for (size_t i = 0; i < P; i++) {
                    num += (g[i] - fd[i]) * (g[i] - fd[i]);
                    den += fd[i] * fd[i];
                }
                double rel = sqrt(num / den);
                ck_assert_msg(rel < 1e-8, "%s %s, %zu threads: gradient relative error %g",
                              cnf_layer_type_name(types[it]), cnf_activation_name(acts[ia]),
                              threads, rel);
                ck_assert(g[P - 1] == 0.0);
                free(g);
                free(fd);
                free(theta);
                cnf_fm_work_free(w);
            }
            cnf_flow_free(flow);
            gsl_rng_free(r);
        }
}
END_TEST

/* The draw: one stratified time per row, each inside its stratum;
 * logit-normal times inside (0, 1) and increasing with the strata; the same
 * rng state gives the same draw; and a loss evaluated at the drawn values
 * equals the loss of the drawing call. */
START_TEST(test_draw_times)
{
    gsl_rng *r = tu_rng(5);
    cnf_flow *flow = fm_flow(2, "8", CNF_LAYER_CONCAT, CNF_ACT_TANH, r);
    double X[2 * 40], eps[2 * 40], t[40], eps2[2 * 40], t2[40];
    for (size_t i = 0; i < 80; i++)
        X[i] = gsl_ran_gaussian(r, 1.0);
    cnf_fm_options fo;
    cnf_fm_options_default(&fo);
    cnf_fm_work *w = cnf_fm_work_alloc(flow, 40, &fo);
    gsl_rng *a = tu_rng(9);
    ck_assert_int_eq(cnf_fm_draw(flow, w, X, 40, a, eps, t), CNF_OK);
    for (size_t b = 0; b < 40; b++)
        ck_assert(t[b] > (double)b / 40.0 && t[b] < (double)(b + 1) / 40.0);
    gsl_rng_set(a, 9);
    ck_assert_int_eq(cnf_fm_draw(flow, w, X, 40, a, eps2, t2), CNF_OK);
    ck_assert(memcmp(eps, eps2, sizeof eps) == 0 && memcmp(t, t2, sizeof t) == 0);
    double l1, l2;
    gsl_rng_set(a, 9);
    ck_assert_int_eq(cnf_fm_loss_grad(flow, w, X, 40, a, &l1, NULL), CNF_OK);
    ck_assert_int_eq(cnf_fm_loss_grad_at(flow, w, X, eps, t, 40, &l2, NULL), CNF_OK);
    ck_assert(l1 == l2);
    cnf_fm_work_free(w);

    fo.time = CNF_FM_TIME_LOGIT_NORMAL;
    w = cnf_fm_work_alloc(flow, 40, &fo);
    ck_assert_int_eq(cnf_fm_draw(flow, w, X, 40, a, eps, t), CNF_OK);
    for (size_t b = 0; b < 40; b++) {
        ck_assert(t[b] > 0.0 && t[b] < 1.0);
        if (b > 0)   /* the strata are increasing in t */
            ck_assert(t[b] > t[b - 1]);
    }
    cnf_fm_work_free(w);
    gsl_rng_free(a);
    cnf_flow_free(flow);
    gsl_rng_free(r);
}
END_TEST

static double pair_cost(const double *Y, const double *E, size_t n, size_t D)
{
    double s = 0.0;
    for (size_t i = 0; i < n * D; i++)
        s += (Y[i] - E[i]) * (Y[i] - E[i]);
    return s;
}

/* The OT coupling pairs each block's rows with a permutation of the same
 * noise draws the independent coupling uses, with the least total squared
 * distance: no worse than the independent pairing, and no pair swap
 * improves it. */
START_TEST(test_draw_ot)
{
    gsl_rng *r = tu_rng(6);
    const size_t B = 24, D = 2;
    cnf_flow *flow = fm_flow(D, "8", CNF_LAYER_CONCAT, CNF_ACT_TANH, r);
    double X[24 * 2], Y[24 * 2], e_ind[24 * 2], e_ot[24 * 2], t[24];
    for (size_t i = 0; i < B * D; i++)
        X[i] = gsl_ran_gaussian(r, 2.0);
    cnf_flow_preprocess_rows(flow, X, B, Y);
    cnf_fm_options fo;
    cnf_fm_options_default(&fo);
    cnf_fm_work *wi = cnf_fm_work_alloc(flow, B, &fo);
    fo.coupling = CNF_FM_OT;
    fo.ot_block = 10;   /* blocks of 10, 10 and 4 rows */
    cnf_fm_work *wo = cnf_fm_work_alloc(flow, B, &fo);
    gsl_rng *a = tu_rng(1), *b = tu_rng(1);
    ck_assert_int_eq(cnf_fm_draw(flow, wi, X, B, a, e_ind, t), CNF_OK);
    ck_assert_int_eq(cnf_fm_draw(flow, wo, X, B, b, e_ot, t), CNF_OK);
    static const size_t starts[] = {0, 10, 20, 24};
    for (size_t k = 0; k < 3; k++) {
        size_t r0 = starts[k], n = starts[k + 1] - r0;
        /* a permutation of the block's draws */
        int used[10] = {0};
        for (size_t i = 0; i < n; i++) {
            size_t j;
            for (j = 0; j < n; j++)
                if (!used[j] && !memcmp(e_ot + (r0 + i) * D, e_ind + (r0 + j) * D, D * sizeof(double)))
                    break;
            ck_assert_msg(j < n, "block %zu row %zu: not one of the block's draws", k, i);
            used[j] = 1;
        }
        double c_ot = pair_cost(Y + r0 * D, e_ot + r0 * D, n, D);
        ck_assert(c_ot <= pair_cost(Y + r0 * D, e_ind + r0 * D, n, D) + 1e-12);
        for (size_t i = 0; i < n; i++)
            for (size_t j = i + 1; j < n; j++) {
                const double *yi = Y + (r0 + i) * D, *yj = Y + (r0 + j) * D;
                const double *ei = e_ot + (r0 + i) * D, *ej = e_ot + (r0 + j) * D;
                double now = 0, swapped = 0;
                for (size_t d = 0; d < D; d++) {
                    now += (yi[d] - ei[d]) * (yi[d] - ei[d]) + (yj[d] - ej[d]) * (yj[d] - ej[d]);
                    swapped += (yi[d] - ej[d]) * (yi[d] - ej[d]) + (yj[d] - ei[d]) * (yj[d] - ei[d]);
                }
                ck_assert(now <= swapped + 1e-12);
            }
    }
    gsl_rng_free(a);
    gsl_rng_free(b);
    cnf_fm_work_free(wi);
    cnf_fm_work_free(wo);
    cnf_flow_free(flow);
    gsl_rng_free(r);
}
END_TEST

START_TEST(test_refusals)
{
    gsl_rng *r = tu_rng(7);
    double T2[2] = {1.0, 1.0}, Th = 0.5;
    cnf_flow *two = tu_flow(2, 2, "8", CNF_LAYER_CONCAT, CNF_ACT_TANH, T2, r);
    cnf_flow *half = tu_flow(2, 1, "8", CNF_LAYER_CONCAT, CNF_ACT_TANH, &Th, r);
    cnf_flow *ok = fm_flow(2, "8", CNF_LAYER_CONCAT, CNF_ACT_TANH, r);
    ck_assert_int_eq(cnf_fm_check_flow(two), CNF_EINVAL);
    ck_assert(strstr(cnf_last_error(), "2 blocks"));
    ck_assert_int_eq(cnf_fm_check_flow(half), CNF_EINVAL);
    ck_assert(strstr(cnf_last_error(), "T = 0.5"));
    ck_assert_int_eq(cnf_fm_check_flow(ok), CNF_OK);

    cnf_fm_options fo;
    cnf_fm_options_default(&fo);
    fo.coupling = CNF_FM_OT;
    fo.ot_block = 0;
    ck_assert_ptr_null(cnf_fm_work_alloc(ok, 8, &fo));
    ck_assert(strstr(cnf_last_error(), "ot_block"));
    cnf_fm_options_default(&fo);
    fo.logit_std = 0.0;
    ck_assert_int_eq(cnf_fm_options_check(&fo), CNF_EINVAL);
    cnf_fm_options_default(&fo);
    cnf_fm_work *w = cnf_fm_work_alloc(ok, 8, &fo);
    double X[2 * 9] = {0}, eps[2 * 9] = {0}, t[9] = {0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5};
    double loss;
    ck_assert_int_eq(cnf_fm_loss_grad_at(ok, w, X, eps, t, 9, &loss, NULL), CNF_EINVAL);
    t[3] = 1.5;
    ck_assert_int_eq(cnf_fm_loss_grad_at(ok, w, X, eps, t, 8, &loss, NULL), CNF_EINVAL);
    ck_assert(strstr(cnf_last_error(), "t[3]"));
    ck_assert_int_eq(cnf_fm_loss_grad_at(half, w, X, eps, t, 2, &loss, NULL), CNF_EINVAL);
    ck_assert_int_eq(cnf_fm_draw(ok, w, X, 4, NULL, eps, t), CNF_EINVAL);
    X[5] = NAN;
    t[3] = 0.5;
    ck_assert_int_eq(cnf_fm_loss_grad_at(ok, w, X, eps, t, 8, &loss, NULL), CNF_ENONFINITE);
    cnf_fm_work_free(w);

    /* training: flow matching refuses learned end times and a flow of 2 blocks */
    cnf_train_options opt;
    cnf_train_options_default(&opt);
    opt.objective = CNF_OBJ_FM;
    ck_assert_int_eq(cnf_train_options_check(&opt), CNF_EINVAL);
    ck_assert(strstr(cnf_last_error(), "learn_T"));
    opt.learn_T = 0;
    ck_assert_int_eq(cnf_train_options_check(&opt), CNF_OK);
    double D2[20];
    for (size_t i = 0; i < 20; i++)
        D2[i] = (double)i;
    cnf_train_state *st = cnf_train_state_alloc(cnf_flow_num_params(two), 1);
    opt.batch = 4;
    ck_assert_int_eq(cnf_train_run(two, D2, 10, NULL, 0, &opt, st, NULL), CNF_EINVAL);
    ck_assert_uint_eq(st->iteration, 0);
    cnf_train_state_free(st);
    cnf_flow_free(two);
    cnf_flow_free(half);
    cnf_flow_free(ok);
    gsl_rng_free(r);
}
END_TEST

/* ---- Training ------------------------------------------------------------ */

/* The correlated Gaussian of test_train.c: x = mu + L n with
 * L = [[1.5, 0], [1.2, 0.6]], mu = (1, -2). */
static double *gaussian_data(size_t n, unsigned long seed)
{
    gsl_rng *rng = tu_rng(seed);
    double *X = malloc(2 * n * sizeof *X);
    for (size_t i = 0; i < n; i++) {
        double a = gsl_ran_gaussian(rng, 1.0), b = gsl_ran_gaussian(rng, 1.0);
        X[2 * i] = 1.0 + 1.5 * a;
        X[2 * i + 1] = -2.0 + 1.2 * a + 0.6 * b;
    }
    gsl_rng_free(rng);
    return X;
}

static double gaussian_nll(const double *x)
{
    double a = (x[0] - 1.0) / 1.5;
    double b = (x[1] + 2.0 - 1.2 * a) / 0.6;
    return 0.5 * (a * a + b * b) + log(2 * PI_VALUE) + log(1.5 * 0.6);
}

static void fm_options(cnf_train_options *opt, size_t iters, cnf_fm_coupling coupling)
{
    cnf_train_options_default(opt);
    opt->objective = CNF_OBJ_FM;
    opt->fm.coupling = coupling;
    opt->fm.ot_block = 64;
    opt->learn_T = 0;
    opt->iters = iters;
    opt->batch = 256;
    opt->lr = 3e-3;
    opt->lr_schedule = CNF_LR_COSINE;
    opt->warmup = 20;
    opt->weight_decay = 0.0;
    opt->val_every = 100;
}

/* Flow matching on a correlated Gaussian (standardised only, so the flow
 * must learn the correlation): the exact NLL of the trained flow on a large
 * test set approaches the closed-form entropy and the true density's NLL
 * on the same points, for both couplings. The model selection by NLL keeps
 * the best validated parameters. */
START_TEST(test_gaussian_fit)
{
    const size_t Ntr = 5000, Nva = 1000, Nte = 10000;
    double *Xtr = gaussian_data(Ntr, 11), *Xva = gaussian_data(Nva, 12),
           *Xte = gaussian_data(Nte, 13);
    double H = log(2 * PI_VALUE * exp(1.0)) + 0.5 * log(0.81), truth = 0.0;
    for (size_t i = 0; i < Nte; i++)
        truth += gaussian_nll(Xte + 2 * i);
    truth /= (double)Nte;
    for (int c = 0; c < 2; c++) {
        gsl_rng *r = tu_rng(5);
        double T = 1.0;
        cnf_flow *flow = tu_flow(2, 1, "32-32", CNF_LAYER_CONCAT, CNF_ACT_SWISH, &T, r);
        ck_assert_int_eq(cnf_flow_fit_preprocess(flow, Xtr, Ntr), CNF_OK);
        cnf_train_options opt;
        fm_options(&opt, 1500, c ? CNF_FM_OT : CNF_FM_INDEPENDENT);
        opt.val_nll_every = 500;
        cnf_train_state *st = cnf_train_state_alloc(cnf_flow_num_params(flow), 21);
        cnf_train_result res;
        ck_assert_int_eq(cnf_train_run(flow, Xtr, Ntr, Xva, Nva, &opt, st, &res), CNF_OK);
        cnf_flow_options fo;
        cnf_flow_options_default(&fo);
        cnf_flow_work *w = cnf_flow_work_alloc(flow, 1000, &fo);
        double *ll = malloc(Nte * sizeof *ll), nll = 0.0;
        cnf_flow_stats stats;
        ck_assert_int_eq(cnf_flow_log_likelihood(flow, w, Xte, Nte, NULL, ll, &stats), CNF_OK);
        for (size_t i = 0; i < Nte; i++)
            nll -= ll[i];
        nll /= (double)Nte;
        fprintf(stderr, "fm gaussian fit (%s): test NLL %.4f, true density %.4f, entropy %.4f; "
                "best val NLL %.4f at %zu, val loss %.4f; %.2f s; %.1f evaluations per chunk\n",
                c ? "ot" : "independent", nll, truth, H, res.best_val_nll, res.best_iteration,
                res.val_loss, res.seconds, (double)stats.forward.nfe / 10.0);
        ck_assert(isnan(res.train_nll) && isfinite(res.train_loss) && isfinite(res.val_loss));
        ck_assert_uint_eq(res.nfe_forward + res.nfe_backward, 0);   /* no solve in training */
        ck_assert(res.best_iteration % 500 == 0);                    /* chosen by NLL */
        ck_assert_msg(nll - truth < 0.02 && nll - truth > -0.005,
                      "test NLL %g vs the true density's %g", nll, truth);
        ck_assert(fabs(nll - H) < 0.03);
        ck_assert(memcmp(cnf_flow_params(flow), st->best_params,
                         st->n_params * sizeof(double)) == 0);
        free(ll);
        cnf_flow_work_free(w);
        cnf_train_state_free(st);
        cnf_flow_free(flow);
        gsl_rng_free(r);
    }
    free(Xtr);
    free(Xva);
    free(Xte);
}
END_TEST

/* Every validation's loss, as the callback sees it. */
typedef struct {
    size_t n, iteration[8];
    double loss[8];
} loss_log;

static int log_losses(const cnf_train_progress *p, void *ctx)
{
    loss_log *lg = ctx;
    ck_assert(!p->validated_nll);
    if (p->validated && lg->n < 8) {
        lg->iteration[lg->n] = p->iteration;
        lg->loss[lg->n++] = p->val_loss;
    }
    return 0;
}

/* Without NLL validation the kept model is the one of the lowest validation
 * loss: the state's best is the smallest logged loss at its iteration, and
 * the flow holds the parameters saved then. */
START_TEST(test_select_by_loss)
{
    double *X = gaussian_data(1000, 31), *V = gaussian_data(300, 32);
    gsl_rng *r = tu_rng(8);
    double T = 1.0;
    cnf_flow *flow = tu_flow(2, 1, "16", CNF_LAYER_CONCATSQUASH, CNF_ACT_TANH, &T, r);
    cnf_flow_fit_preprocess(flow, X, 1000);
    cnf_train_options opt;
    fm_options(&opt, 80, CNF_FM_INDEPENDENT);
    opt.batch = 64;
    opt.val_every = 10;
    /* a constant rate: the criterion is checked against the logged losses */
    opt.lr_schedule = CNF_LR_STEP;
    opt.warmup = 0;
    opt.lr = 5e-2;
    loss_log lg = {0};
    opt.callback = log_losses;
    opt.callback_ctx = &lg;
    cnf_train_state *st = cnf_train_state_alloc(cnf_flow_num_params(flow), 2);
    cnf_train_result res;
    ck_assert_int_eq(cnf_train_run(flow, X, 1000, V, 300, &opt, st, &res), CNF_OK);
    ck_assert_uint_eq(lg.n, 8);
    size_t best = 0;
    for (size_t i = 1; i < lg.n; i++)
        if (lg.loss[i] < lg.loss[best])
            best = i;
    ck_assert(st->has_best);
    ck_assert(st->best_val_nll == lg.loss[best]);
    ck_assert_uint_eq(st->best_iteration, lg.iteration[best]);
    ck_assert(isnan(st->last_val_nll));   /* no NLL was computed */
    ck_assert_uint_eq(res.nfe_validation, 0);
    ck_assert(memcmp(cnf_flow_params(flow), st->best_params,
                     st->n_params * sizeof(double)) == 0);
    fprintf(stderr, "select by loss: best %.4f at %zu of %zu validations (last %.4f)\n",
            lg.loss[best], lg.iteration[best], lg.n, lg.loss[lg.n - 1]);
    cnf_train_state_free(st);
    cnf_flow_free(flow);
    gsl_rng_free(r);
    free(X);
    free(V);
}
END_TEST

static int stop_at(const cnf_train_progress *p, void *ctx)
{
    return p->iteration == *(const size_t *)ctx;
}

/* A run towards 30 iterations (the cosine schedule's horizon) that stops
 * after iteration `until`, as an interrupted run does. */
static void fm_run(cnf_flow *flow, cnf_train_state *st, size_t until, cnf_fm_coupling c)
{
    static double *X = NULL, *V = NULL;
    if (!X) {
        X = gaussian_data(500, 31);
        V = gaussian_data(200, 32);
    }
    cnf_train_options opt;
    fm_options(&opt, 30, c);
    opt.warmup = 4;
    opt.batch = 48;
    opt.val_every = 5;
    opt.val_nll_every = 10;
    opt.fm.ot_block = 20;
    opt.fm.time = CNF_FM_TIME_LOGIT_NORMAL;
    opt.callback = stop_at;
    opt.callback_ctx = &until;
    ck_assert_int_eq(cnf_train_run(flow, X, 500, V, 200, &opt, st, NULL), CNF_OK);
}

/* 30 iterations equal 15, then 15 more from a copy of the state rebuilt
 * field by field (as a model file restores it), for both couplings. */
START_TEST(test_resume)
{
    for (int c = 0; c < 2; c++) {
        cnf_fm_coupling coupling = c ? CNF_FM_OT : CNF_FM_INDEPENDENT;
        gsl_rng *r = tu_rng(9);
        double T = 1.0;
        cnf_flow *a = tu_flow(2, 1, "8-8", CNF_LAYER_CONCATSQUASH, CNF_ACT_TANH, &T, r);
        gsl_rng_set(r, 9);
        cnf_flow *b = tu_flow(2, 1, "8-8", CNF_LAYER_CONCATSQUASH, CNF_ACT_TANH, &T, r);
        size_t P = cnf_flow_num_params(a);
        cnf_train_state *sa = cnf_train_state_alloc(P, 4), *sb = cnf_train_state_alloc(P, 4);
        fm_run(a, sa, 30, coupling);
        fm_run(b, sb, 15, coupling);
        ck_assert_uint_eq(sb->n_step_hints, 0);
        cnf_train_state *sc = tu_state_copy(sb);
        gsl_rng_set(r, 77);
        cnf_flow *c2 = tu_flow(2, 1, "8-8", CNF_LAYER_CONCATSQUASH, CNF_ACT_TANH, &T, r);
        fm_run(c2, sc, 30, coupling);
        ck_assert(memcmp(sa->params, sc->params, P * sizeof(double)) == 0);
        ck_assert(memcmp(sa->adam_v, sc->adam_v, P * sizeof(double)) == 0);
        ck_assert(memcmp(cnf_flow_params(a), cnf_flow_params(c2), P * sizeof(double)) == 0);
        ck_assert(sa->best_val_nll == sc->best_val_nll && sa->best_iteration == sc->best_iteration);
        /* and training moved the parameters */
        ck_assert(memcmp(sa->params, cnf_flow_params(b), P * sizeof(double)) != 0);
        cnf_train_state_free(sa);
        cnf_train_state_free(sb);
        cnf_train_state_free(sc);
        cnf_flow_free(a);
        cnf_flow_free(b);
        cnf_flow_free(c2);
        gsl_rng_free(r);
    }
}
END_TEST

/* Warm-up and the cosine schedule at known points. */
START_TEST(test_cosine_schedule)
{
    cnf_train_options opt;
    cnf_train_options_default(&opt);
    opt.lr = 1e-2;
    opt.lr_min = 1e-4;
    opt.iters = 110;
    opt.warmup = 10;
    opt.lr_schedule = CNF_LR_COSINE;
    ck_assert(fabs(cnf_train_lr(&opt, 1) - 1e-3) < 1e-18);
    ck_assert(fabs(cnf_train_lr(&opt, 10) - 1e-2) < 1e-18);
    ck_assert(fabs(cnf_train_lr(&opt, 11) - 1e-2) < 1e-18);             /* p = 0 */
    ck_assert(fabs(cnf_train_lr(&opt, 110) - 1e-4) < 1e-17);            /* p = 1 */
    double mid = 1e-4 + 0.5 * (1e-2 - 1e-4) * (1.0 + cos(PI_VALUE * 49.0 / 99.0));
    ck_assert(fabs(cnf_train_lr(&opt, 60) - mid) < 1e-17);
    ck_assert(fabs(cnf_train_lr(&opt, 200) - 1e-4) < 1e-17);            /* past the end */
    /* the step schedule counts its decays after warm-up */
    opt.lr_schedule = CNF_LR_STEP;
    opt.lr_decay = 0.5;
    opt.lr_decay_every = 20;
    ck_assert(fabs(cnf_train_lr(&opt, 30) - 1e-2) < 1e-18);
    ck_assert(fabs(cnf_train_lr(&opt, 31) - 5e-3) < 1e-18);
    opt.lr_min = 1.0;
    ck_assert_int_eq(cnf_train_options_check(&opt), CNF_EINVAL);
}
END_TEST

int main(void)
{
    tu_program_setup();
    Suite *s = suite_create("fm");
    TCase *tc = tcase_create("objective");
    tcase_add_test(tc, test_loss_of_zero_field);
    tcase_add_test(tc, test_gradient_fd);
    tcase_add_test(tc, test_draw_times);
    tcase_add_test(tc, test_draw_ot);
    tcase_add_test(tc, test_refusals);
    tcase_add_test(tc, test_cosine_schedule);
    suite_add_tcase(s, tc);
    TCase *tt = tcase_create("training");
    tcase_set_timeout(tt, 300);
    tcase_add_test(tt, test_gaussian_fit);
    tcase_add_test(tt, test_select_by_loss);
    tcase_add_test(tt, test_resume);
    suite_add_tcase(s, tt);
    return tu_run_suite(s);
}
