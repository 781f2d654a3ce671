/* train.c — training a flow: minibatch gradients from cnf_flow_nll_grad
 * (maximum likelihood by the integral-loss adjoint, docs/mathematics.md) or
 * cnf_fm_loss_grad (flow matching, cnf/fm.h), Adam
 * (Kingma and Ba 2015) with L2 weight decay exactly as torch.optim.Adam,
 * which FFJORD (Grathwohl et al. 2019, train_toy.py / train_tabular.py)
 * uses, learned end times through T = s^2 as FFJORD's sqrt_end_time,
 * gradient clipping as torch.nn.utils.clip_grad_norm_, validation with
 * best-parameter keeping and early stopping. The optimizer step is its own
 * function so that a data-parallel run can reduce gradients before it
 * (docs/architecture.md, "Room for data-parallel training"). Everything random comes from the state's gsl_rng. */
#include "cnf/train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cnf/size.h"
#include "finite.h"
#include "names.h"

/* Mean of the last minibatch NLLs reported as the final training NLL. */
#define TRAIN_NLL_WINDOW 50

void cnf_train_options_default(cnf_train_options *opt)
{
    memset(opt, 0, sizeof *opt);
    opt->iters = 1000;
    opt->batch = 100;
    opt->lr = 1e-3;
    opt->weight_decay = 1e-5;
    opt->beta1 = 0.9;
    opt->beta2 = 0.999;
    opt->eps = 1e-8;
    opt->learn_T = 1;
    opt->objective = CNF_OBJ_MLE;
    cnf_fm_options_default(&opt->fm);
    opt->lr_schedule = CNF_LR_STEP;
    opt->warmup = 0;
    opt->lr_min = 0.0;
    opt->lr_decay = 1.0;
    opt->lr_decay_every = 0;
    opt->clip_norm = 0.0;
    opt->val_every = 100;
    opt->patience = 0;
    opt->seed = 1;
    opt->val_divergence = CNF_TRAIN_VAL_AUTO;
    opt->max_val_rows = 0;
    opt->val_batch = 1000;
    cnf_flow_options_default(&opt->flow);
    /* successive batches: each gradient's solves start with the step the
     * last one suggested (cnf_flow_options.warm_start) */
    opt->flow.warm_start = 1;
    /* The forward solves of a trained CNF meet a sharp rise of the error
     * constant along t, where the controller's usual 0.9 rejects about one
     * step in three; 0.7 (CVODE's error bias of 6 at order 5 amounts to the
     * same) removes most rejections: 20% fewer forward evaluations on the
     * toy configuration, the same test NLL (bench/README.md). The backward
     * solves reject almost nothing and keep 0.9. */
    opt->flow.solver.safety = 0.7;
    opt->callback = NULL;
    opt->callback_ctx = NULL;
}

cnf_status cnf_train_options_check(const cnf_train_options *opt)
{
    if (!opt)
        return cnf_error(CNF_EINVAL, "training options are NULL");
    if (opt->batch == 0)
        return cnf_error(CNF_EINVAL, "batch size must be at least 1");
    if (!(opt->lr > 0.0) || !isfinite(opt->lr))
        return cnf_error(CNF_EINVAL, "learning rate lr = %g must be positive and finite", opt->lr);
    if (!(opt->weight_decay >= 0.0) || !isfinite(opt->weight_decay))
        return cnf_error(CNF_EINVAL, "weight_decay = %g must be >= 0 and finite", opt->weight_decay);
    if (!(opt->beta1 >= 0.0 && opt->beta1 < 1.0))
        return cnf_error(CNF_EINVAL, "Adam beta1 = %g must be in [0, 1)", opt->beta1);
    if (!(opt->beta2 >= 0.0 && opt->beta2 < 1.0))
        return cnf_error(CNF_EINVAL, "Adam beta2 = %g must be in [0, 1)", opt->beta2);
    if (!(opt->eps > 0.0) || !isfinite(opt->eps))
        return cnf_error(CNF_EINVAL, "Adam eps = %g must be positive and finite", opt->eps);
    if (!(opt->lr_decay > 0.0) || !isfinite(opt->lr_decay))
        return cnf_error(CNF_EINVAL, "lr_decay = %g must be positive and finite", opt->lr_decay);
    if (!(opt->clip_norm >= 0.0) || !isfinite(opt->clip_norm))
        return cnf_error(CNF_EINVAL, "clip_norm = %g must be >= 0 (0 = off) and finite",
                         opt->clip_norm);
    if (!(opt->max_seconds >= 0.0) || !isfinite(opt->max_seconds))
        return cnf_error(CNF_EINVAL, "max_seconds = %g must be >= 0 (0 = no limit) and finite",
                         opt->max_seconds);
    if (opt->objective != CNF_OBJ_MLE && opt->objective != CNF_OBJ_FM)
        return cnf_error(CNF_EINVAL, "objective = %d is not a valid choice", (int)opt->objective);
    if (opt->lr_schedule != CNF_LR_STEP && opt->lr_schedule != CNF_LR_COSINE)
        return cnf_error(CNF_EINVAL, "lr_schedule = %d is not a valid choice",
                         (int)opt->lr_schedule);
    if (!(opt->lr_min >= 0.0 && opt->lr_min <= opt->lr))
        return cnf_error(CNF_EINVAL, "lr_min = %g must be in [0, lr = %g]", opt->lr_min, opt->lr);
    if (opt->objective == CNF_OBJ_FM) {
        cnf_status s = cnf_fm_options_check(&opt->fm);
        if (s != CNF_OK)
            return s;
        if (opt->learn_T)
            return cnf_error(CNF_EINVAL, "flow matching's path fixes the end time at T = 1: "
                             "learn_T must be 0");
    }
    if (opt->val_divergence != CNF_TRAIN_VAL_AUTO && opt->val_divergence != CNF_TRAIN_VAL_EXACT
        && opt->val_divergence != CNF_TRAIN_VAL_AS_TRAINING)
        return cnf_error(CNF_EINVAL, "val_divergence = %d is not a valid choice",
                         (int)opt->val_divergence);
    return CNF_OK;
}

/* ---- State ------------------------------------------------------------- */

cnf_train_state *cnf_train_state_alloc(size_t n_params, unsigned long seed)
{
    if (n_params == 0) {
        cnf_error(CNF_EINVAL, "a training state needs at least one parameter");
        return NULL;
    }
    cnf_train_state *st = calloc(1, sizeof *st);
    if (!st)
        goto nomem;
    st->n_params = n_params;
    st->seed = seed;
    st->params = calloc(n_params, sizeof *st->params);
    st->adam_m = calloc(n_params, sizeof *st->adam_m);
    st->adam_v = calloc(n_params, sizeof *st->adam_v);
    st->best_params = calloc(n_params, sizeof *st->best_params);
    st->rng = gsl_rng_alloc(gsl_rng_mt19937);
    if (!st->params || !st->adam_m || !st->adam_v || !st->best_params || !st->rng)
        goto nomem;
    gsl_rng_set(st->rng, seed);
    st->best_val_nll = INFINITY;
    st->last_val_nll = NAN;
    return st;

nomem:
    cnf_train_state_free(st);
    cnf_error(CNF_ENOMEM, "out of memory allocating a training state of %zu parameters", n_params);
    return NULL;
}

void cnf_train_state_free(cnf_train_state *state)
{
    if (!state)
        return;
    free(state->params);
    free(state->adam_m);
    free(state->adam_v);
    free(state->best_params);
    free(state->step_hints);
    if (state->rng)
        gsl_rng_free(state->rng);
    free(state);
}

const double *cnf_train_state_best_so_far(const cnf_train_state *state)
{
    return state->has_best ? state->best_params : state->params;
}

/* Size the warm first steps for n values (contents undefined); the only
 * place that allocates them. */
static cnf_status resize_step_hints(cnf_train_state *state, size_t n)
{
    if (state->n_step_hints == n)
        return CNF_OK;
    double *h = NULL;
    if (n > 0 && !(h = malloc(n * sizeof *h)))
        return cnf_error(CNF_ENOMEM, "out of memory for %zu step hints", n);
    free(state->step_hints);
    state->step_hints = h;
    state->n_step_hints = n;
    return CNF_OK;
}

cnf_status cnf_train_state_set_step_hints(cnf_train_state *state, const double *hints,
                                          size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!(hints[i] >= 0.0) || !isfinite(hints[i]))
            return cnf_error(CNF_EINVAL, "step hint %zu is %g (step sizes are finite and >= 0)",
                             i, hints[i]);
    cnf_status s = resize_step_hints(state, n);
    if (s == CNF_OK && n > 0)
        memcpy(state->step_hints, hints, n * sizeof *hints);
    return s;
}

const void *cnf_train_state_rng_bytes(const cnf_train_state *state, size_t *size)
{
    if (size)
        *size = gsl_rng_size(state->rng);
    return gsl_rng_state(state->rng);
}

const char *cnf_train_state_rng_type(const cnf_train_state *state)
{
    return gsl_rng_name(state->rng);
}

cnf_status cnf_train_state_set_rng_bytes(cnf_train_state *state, const void *bytes, size_t size)
{
    size_t want = gsl_rng_size(state->rng);
    if (!bytes || size != want)
        return cnf_error(CNF_EFORMAT,
                         "random number generator state has %zu bytes, %s needs %zu", size,
                         gsl_rng_name(state->rng), want);
    memcpy(gsl_rng_state(state->rng), bytes, size);
    return CNF_OK;
}

/* ---- Optimizer ---------------------------------------------------------- */

void cnf_train_adam_step(double *p, const double *grad, double *m, double *v, size_t n, size_t t,
                   double lr, double beta1, double beta2, double eps, double weight_decay)
{
    /* torch.optim.Adam's arithmetic, in its order, so that runs can be
     * compared with FFJORD's. */
    double bc1 = 1.0 - pow(beta1, (double)t);
    double bc2_sqrt = sqrt(1.0 - pow(beta2, (double)t));
    double step = lr / bc1;
    for (size_t i = 0; i < n; i++) {
        double g = grad[i] + weight_decay * p[i];
        m[i] = beta1 * m[i] + (1.0 - beta1) * g;
        v[i] = beta2 * v[i] + (1.0 - beta2) * g * g;
        double denom = sqrt(v[i]) / bc2_sqrt + eps;
        p[i] -= step * m[i] / denom;
    }
}

static const char *const objective_names[] = {"mle", "fm"};
static const char *const schedule_names[] = {"step", "cosine"};
static const char *const val_divergence_names[] = {"auto", "exact", "training"};

CNF_ENUM_NAMES(cnf_train_objective, cnf_train_objective_name, cnf_train_objective_from_name,
               "objective", objective_names)
CNF_ENUM_NAMES(cnf_lr_schedule, cnf_lr_schedule_name, cnf_lr_schedule_from_name,
               "learning-rate schedule", schedule_names)
CNF_ENUM_NAMES(cnf_train_val_divergence, cnf_train_val_divergence_name,
               cnf_train_val_divergence_from_name, "validation divergence",
               val_divergence_names)

double cnf_train_lr(const cnf_train_options *opt, size_t iteration)
{
    if (iteration == 0)
        return opt->lr;
    if (iteration <= opt->warmup)
        return opt->lr * (double)iteration / (double)opt->warmup;
    size_t i = iteration - 1 - opt->warmup;   /* 0 at the first step after warm-up */
    if (opt->lr_schedule == CNF_LR_COSINE) {
        size_t span = opt->iters > opt->warmup + 1 ? opt->iters - opt->warmup - 1 : 1;
        double p = i < span ? (double)i / (double)span : 1.0;
        return opt->lr_min + 0.5 * (opt->lr - opt->lr_min) * (1.0 + cos(3.14159265358979323846 * p));
    }
    if (opt->lr_decay_every == 0)
        return opt->lr;
    return opt->lr * pow(opt->lr_decay, (double)(i / opt->lr_decay_every));
}

cnf_status cnf_train_apply_gradient(cnf_flow *flow, cnf_train_state *state,
                                    const cnf_train_options *opt, double lr, double *grad,
                                    double *grad_norm)
{
    size_t P = cnf_flow_num_params(flow);
    size_t K = cnf_flow_num_blocks(flow);
    if (state->n_params != P)
        return cnf_error(CNF_EDIM, "training state has %zu parameters, the flow %zu",
                         state->n_params, P);
    double *p = cnf_flow_params(flow);             /* P */
    size_t nth = cnf_flow_T_index(flow, 0);        /* network parameters before T_0 */

    /* End times through s = sqrt(T): dL/ds = 2 s dL/dT. Fixed ones get no
     * gradient and, below, no update at all (not even weight decay). */
    for (size_t k = 0; k < K; k++) {
        size_t i = cnf_flow_T_index(flow, k);
        grad[i] = opt->learn_T ? 2.0 * sqrt(p[i]) * grad[i] : 0.0;
    }
    double ss = 0.0;
    for (size_t i = 0; i < P; i++)
        ss += grad[i] * grad[i];
    double norm = sqrt(ss);
    if (grad_norm)
        *grad_norm = norm;
    if (!isfinite(norm))
        return cnf_error(CNF_ENONFINITE, "iteration %zu: the gradient is not finite",
                         state->iteration + 1);
    if (opt->clip_norm > 0.0) {
        /* clip_grad_norm_: scale by max_norm / (norm + 1e-6) when below 1 */
        double coef = opt->clip_norm / (norm + 1e-6);
        if (coef < 1.0)
            for (size_t i = 0; i < P; i++)
                grad[i] *= coef;
    }

    size_t t = state->iteration + 1;
    cnf_train_adam_step(p, grad, state->adam_m, state->adam_v, nth, t, lr, opt->beta1, opt->beta2,
                  opt->eps, opt->weight_decay);
    if (opt->learn_T) {
        /* The T entries are contiguous after the networks (cnf/flow.h). */
        for (size_t k = 0; k < K; k++)
            p[nth + k] = sqrt(p[nth + k]);
        cnf_train_adam_step(p + nth, grad + nth, state->adam_m + nth, state->adam_v + nth, K, t, lr,
                      opt->beta1, opt->beta2, opt->eps, opt->weight_decay);
        /* s = sqrt(T) carries no sign, so a step through s = 0 would be
         * undone; T = 0 has zero gradient forever and cannot be loaded:
         * keep T at least CNF_TRAIN_T_MIN. */
        for (size_t k = 0; k < K; k++) {
            double T = p[nth + k] * p[nth + k];
            p[nth + k] = T > CNF_TRAIN_T_MIN ? T : CNF_TRAIN_T_MIN;
        }
    }
    state->iteration = t;
    state->lr = lr;
    memcpy(state->params, p, P * sizeof *p);
    return CNF_OK;
}

/* ---- The loop ----------------------------------------------------------- */

static double now_seconds(void)
{
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Everything cnf_train_run allocates, freed in one place. */
typedef struct {
    cnf_flow_work *work;      /* maximum likelihood: training chunks of B rows */
    cnf_fm_work *fm;          /* flow matching: training and validation batches */
    cnf_flow_work *vwork;     /* NLL validation chunks (NULL if NLL is never validated) */
    gsl_rng *vrng;            /* validation noise (NULL with exact validation) */
    gsl_rng *fmrng;           /* flow matching's validation draws */
    double *Xb;               /* B x D minibatch */
    double *grad;             /* P */
    double *loglik;           /* Nv validation log-likelihoods */
} train_mem;

static void train_mem_free(train_mem *m)
{
    cnf_flow_work_free(m->work);
    cnf_fm_work_free(m->fm);
    cnf_flow_work_free(m->vwork);
    if (m->vrng)
        gsl_rng_free(m->vrng);
    if (m->fmrng)
        gsl_rng_free(m->fmrng);
    free(m->Xb);
    free(m->grad);
    free(m->loglik);
}

/* Mean validation NLL; the noise generator (if any) restarts from the
 * state's seed each time so that every validation sees the same noise. */
static cnf_status validate(const cnf_flow *flow, train_mem *m, const cnf_train_state *st,
                           const double *Xval, size_t Nv, double *nll, size_t *nfe)
{
    if (m->vrng)
        gsl_rng_set(m->vrng, st->seed ^ 0x5a17c0deUL);
    cnf_flow_stats stats;
    memset(&stats, 0, sizeof stats);
    cnf_status s = cnf_flow_log_likelihood(flow, m->vwork, Xval, Nv, m->vrng, m->loglik, &stats);
    if (s != CNF_OK)
        return s;
    double sum = 0.0;
    for (size_t i = 0; i < Nv; i++)
        sum += m->loglik[i];
    *nll = -sum / (double)Nv;
    *nfe += stats.forward.nfe;
    return CNF_OK;
}

/* Flow matching's mean loss over the validation rows, in batches of the
 * training batch's size, with the same draws every time. */
static cnf_status validate_fm(const cnf_flow *flow, train_mem *m, const cnf_train_state *st,
                             const double *Xval, size_t Nv, size_t B, double *loss)
{
    gsl_rng_set(m->fmrng, st->seed ^ 0xf10a7c0dUL);
    double sum = 0.0;
    for (size_t r0 = 0; r0 < Nv; r0 += B) {
        size_t n = Nv - r0 < B ? Nv - r0 : B;
        double l;
        cnf_status s = cnf_fm_loss_grad(flow, m->fm, Xval + r0 * cnf_flow_dim(flow), n,
                                        m->fmrng, &l, NULL);
        if (s != CNF_OK)
            return s;
        sum += l * (double)n;
    }
    *loss = sum / (double)Nv;
    return CNF_OK;
}

/* Validation after iteration it: flow matching's loss, and the NLL when
 * with_nll (always under maximum likelihood); the selection criterion (the
 * NLL when validated, the loss when NLL never is) replaces the best if
 * lower, otherwise counts a validation without improvement when count_bad.
 * An iteration of flow matching whose NLL is not due selects nothing. */
static cnf_status validate_and_select(const cnf_flow *flow, train_mem *m, cnf_train_state *st,
                                      const cnf_train_options *opt, const double *Xval,
                                      size_t Nv, size_t it, int with_nll, int count_bad,
                                      cnf_train_result *res, size_t *nfe_val, int *validated_nll)
{
    int fm = opt->objective == CNF_OBJ_FM;
    double crit = NAN;
    int selects = 0;
    cnf_status s;
    *validated_nll = 0;
    if (fm) {
        if ((s = validate_fm(flow, m, st, Xval, Nv, opt->batch, &res->val_loss)) != CNF_OK)
            return s;
        crit = res->val_loss;
        selects = opt->val_nll_every == 0;
    }
    if (with_nll) {
        if ((s = validate(flow, m, st, Xval, Nv, &st->last_val_nll, nfe_val)) != CNF_OK)
            return s;
        crit = st->last_val_nll;
        selects = *validated_nll = 1;
    }
    if (!selects)
        return CNF_OK;
    if (crit < st->best_val_nll) {
        st->best_val_nll = crit;
        st->best_iteration = it;
        st->has_best = 1;
        st->bad_validations = 0;
        memcpy(st->best_params, cnf_flow_params_const(flow), st->n_params * sizeof(double));
    } else if (count_bad) {
        st->bad_validations++;
    }
    return CNF_OK;
}

/* A workspace allocation failed: keep the flow's message (invalid solver
 * options or no memory), say which workspace. */
static cnf_status work_failure(const char *what, size_t rows)
{
    cnf_status s = strstr(cnf_last_error(), "memory") ? CNF_ENOMEM : CNF_EINVAL;
    return cnf_error(s, "%s workspace for %zu rows: %s", what, rows, cnf_last_error());
}

static void restore_best(cnf_flow *flow, const cnf_train_state *st)
{
    memcpy(cnf_flow_params(flow), cnf_train_state_best_so_far(st),
           st->n_params * sizeof(double));
}

cnf_status cnf_train_run(cnf_flow *flow, const double *Xtrain, size_t Ntrain, const double *Xval,
                     size_t Nval, const cnf_train_options *opt, cnf_train_state *state,
                     cnf_train_result *result)
{
    double t_start = now_seconds();
    cnf_train_result res;
    memset(&res, 0, sizeof res);
    res.train_nll = NAN;
    res.train_loss = NAN;
    res.val_loss = NAN;
    res.val_nll = NAN;
    res.best_val_nll = NAN;
    if (result)
        *result = res;

    if (!flow || !state)
        return cnf_error(CNF_EINVAL, "cnf_train_run: flow and state must not be NULL");
    cnf_status s = cnf_train_options_check(opt);
    if (s != CNF_OK)
        return s;
    size_t D = cnf_flow_dim(flow), P = cnf_flow_num_params(flow), K = cnf_flow_num_blocks(flow);
    size_t B = opt->batch;
    if (state->n_params != P)
        return cnf_error(CNF_EDIM, "training state has %zu parameters, the flow %zu",
                         state->n_params, P);
    if (!Xtrain || Ntrain == 0)
        return cnf_error(CNF_EDATA, "no training data");
    if (Ntrain < B)
        return cnf_error(CNF_EDATA, "%zu training rows are fewer than a batch of %zu", Ntrain, B);
    if (Nval > 0 && !Xval)
        return cnf_error(CNF_EINVAL, "validation data are NULL but Nval = %zu", Nval);
    int fm = opt->objective == CNF_OBJ_FM;
    if (fm && (s = cnf_fm_check_flow(flow)) != CNF_OK)
        return s;
    if ((s = cnf_rows_check_finite(Xtrain, Ntrain, D, "training data")) != CNF_OK)
        return s;
    size_t Nv = Nval;
    if (opt->max_val_rows > 0 && Nv > opt->max_val_rows)
        Nv = opt->max_val_rows;
    if ((s = cnf_rows_check_finite(Xval, Nv, D, "validation data")) != CNF_OK)
        return s;
    int do_val = opt->val_every > 0 && Nv > 0;
    /* NLL validation: always under maximum likelihood, at its own interval
     * under flow matching */
    int val_nll = do_val && (!fm || opt->val_nll_every > 0);

    train_mem m;
    memset(&m, 0, sizeof m);
    size_t bytes;
    m.Xb = cnf_size_mul3(B, D, sizeof *m.Xb, &bytes) ? NULL : malloc(bytes);
    m.grad = cnf_size_mul(P, sizeof *m.grad, &bytes) ? NULL : malloc(bytes);
    if (fm) {
        cnf_fm_options fo = opt->fm;
        fo.threads = opt->flow.threads;
        m.fm = cnf_fm_work_alloc(flow, B, &fo);
        m.fmrng = gsl_rng_alloc(gsl_rng_mt19937);
        if (!m.fm) {
            train_mem_free(&m);
            return work_failure("flow-matching", B);
        }
        if (!m.fmrng) {
            train_mem_free(&m);
            return cnf_error(CNF_ENOMEM, "out of memory for flow matching's validation draws");
        }
    } else {
        m.work = cnf_flow_work_alloc(flow, B, &opt->flow);
        if (!m.work) {
            train_mem_free(&m);
            return work_failure("training", B);
        }
    }
    if (val_nll) {
        cnf_flow_options vopt = opt->flow, eval_default;
        /* validate as cnf eval evaluates: the usual safety factor, not the
         * training forward solves' 0.7, so that the best model is chosen
         * by the numbers a user gets afterwards */
        cnf_flow_options_default(&eval_default);
        vopt.solver.safety = eval_default.solver.safety;
        int exact = opt->val_divergence == CNF_TRAIN_VAL_EXACT
                    || (opt->val_divergence == CNF_TRAIN_VAL_AUTO && D <= 4);
        if (exact)
            vopt.divergence = CNF_DIV_EXACT;
        size_t chunk = opt->val_batch > 0 ? opt->val_batch : 1000;
        if (chunk > Nv)
            chunk = Nv;
        m.vwork = cnf_flow_work_alloc(flow, chunk, &vopt);
        m.loglik = cnf_size_mul(Nv, sizeof *m.loglik, &bytes) ? NULL : malloc(bytes);
        if (vopt.divergence != CNF_DIV_EXACT)
            m.vrng = gsl_rng_alloc(gsl_rng_mt19937);
        if (!m.vwork) {
            train_mem_free(&m);
            return work_failure("validation", chunk);
        }
        if (!m.loglik || (vopt.divergence != CNF_DIV_EXACT && !m.vrng)) {
            train_mem_free(&m);
            return cnf_error(CNF_ENOMEM, "out of memory for validation of %zu rows", Nv);
        }
    }
    if (!m.Xb || !m.grad) {
        train_mem_free(&m);
        return cnf_error(CNF_ENOMEM, "out of memory for a batch of %zu rows", B);
    }

    double *p = cnf_flow_params(flow);             /* P */
    if (state->iteration > 0)
        memcpy(p, state->params, P * sizeof *p);   /* resume */
    else
        memcpy(state->params, p, P * sizeof *p);
    /* the warm first steps, so that a resumed run continues bit for bit
     * (flow matching solves nothing and keeps none) */
    if (m.work && state->n_step_hints > 0
        && (s = cnf_flow_work_set_step_hints(m.work, state->step_hints, state->n_step_hints))
               != CNF_OK) {
        train_mem_free(&m);
        return cnf_error(s, "resuming: the training state's step hints: %s", cnf_last_error());
    }
    if (m.work && (s = resize_step_hints(state, cnf_flow_work_step_hints(m.work, NULL)))
                      != CNF_OK) {
        train_mem_free(&m);
        return s;
    }
    if (m.work)
        cnf_flow_work_step_hints(m.work, state->step_hints);

    double window[TRAIN_NLL_WINDOW], lwindow[TRAIN_NLL_WINDOW];
    size_t n_window = 0;
    size_t nfe_val = 0;
    int stop = 0;
    while (!stop && state->iteration < opt->iters) {
        size_t it = state->iteration + 1;
        for (size_t b = 0; b < B; b++) {
            size_t r = (size_t)gsl_rng_uniform_int(state->rng, (unsigned long)Ntrain);
            memcpy(m.Xb + b * D, Xtrain + r * D, D * sizeof *m.Xb);
        }
        double nll = NAN, loss = NAN;
        cnf_flow_stats stats;
        memset(&stats, 0, sizeof stats);
        if (fm)
            s = cnf_fm_loss_grad(flow, m.fm, m.Xb, B, state->rng, &loss, m.grad);
        else
            s = cnf_flow_nll_grad(flow, m.work, m.Xb, B, state->rng, &nll, &loss, m.grad,
                                  &stats);
        if (s == CNF_OK && !(isfinite(loss) && (fm || isfinite(nll))))
            s = cnf_error(CNF_ENONFINITE, "iteration %zu: the training loss is not finite (%g)",
                          it, loss);
        if (s != CNF_OK)
            break;
        double lr = cnf_train_lr(opt, it);
        double gnorm = 0.0;
        s = cnf_train_apply_gradient(flow, state, opt, lr, m.grad, &gnorm);
        if (s != CNF_OK) {
            memcpy(p, state->params, P * sizeof *p);   /* undo nothing half-done */
            break;
        }
        if (m.work)
            cnf_flow_work_step_hints(m.work, state->step_hints);
        res.iters_run++;
        res.nfe_forward += stats.forward.nfe;
        res.nfe_backward += stats.backward.nfe;
        window[n_window % TRAIN_NLL_WINDOW] = nll;
        lwindow[n_window % TRAIN_NLL_WINDOW] = loss;
        n_window++;

        int validated = 0, validated_nll = 0;
        int nll_due = val_nll && (!fm || it % opt->val_nll_every == 0 || it == opt->iters);
        if (do_val && (it % opt->val_every == 0 || it == opt->iters || (fm && nll_due))) {
            size_t bad_before = state->bad_validations;
            s = validate_and_select(flow, &m, state, opt, Xval, Nv, it, nll_due, 1, &res,
                                    &nfe_val, &validated_nll);
            if (s != CNF_OK)
                break;
            validated = 1;
            if (opt->patience > 0 && state->bad_validations > bad_before
                && state->bad_validations >= opt->patience) {
                res.stopped_early = 1;
                stop = 1;
            }
        }

        if (opt->callback) {
            cnf_train_progress pr;
            pr.iteration = it;
            pr.iters = opt->iters;
            pr.loss = loss;
            pr.nll = nll;
            pr.grad_norm = gnorm;
            pr.lr = lr;
            pr.nfe_forward = stats.forward.nfe;
            pr.nfe_backward = stats.backward.nfe;
            pr.elapsed = now_seconds() - t_start;
            pr.validated = validated;
            pr.validated_nll = validated_nll;
            pr.val_nll = state->last_val_nll;
            pr.val_loss = res.val_loss;
            pr.best_val_nll = state->has_best ? state->best_val_nll : NAN;
            pr.best_iteration = state->best_iteration;
            pr.n_blocks = K;
            pr.T = p + cnf_flow_T_index(flow, 0);
            if (opt->callback(&pr, opt->callback_ctx)) {
                res.interrupted = 1;
                stop = 1;
            }
        }
        if (!stop && opt->max_seconds > 0.0 && now_seconds() - t_start >= opt->max_seconds) {
            res.timed_out = 1;
            stop = 1;
        }
        /* Cut short by the callback or the clock: the current parameters
         * compete with the best so far (an unvalidated last stretch would
         * otherwise be lost). Not a patience validation: it counts no
         * validation without improvement. */
        if ((res.interrupted || res.timed_out) && do_val && !validated) {
            int unused;
            s = validate_and_select(flow, &m, state, opt, Xval, Nv, it, val_nll, 0, &res,
                                    &nfe_val, &unused);
            if (s != CNF_OK)
                break;
        }
    }

    restore_best(flow, state);
    train_mem_free(&m);

    res.iters = state->iteration;
    size_t nw = n_window < TRAIN_NLL_WINDOW ? n_window : TRAIN_NLL_WINDOW;
    if (nw > 0) {
        double sum = 0.0, lsum = 0.0;
        for (size_t i = 0; i < nw; i++) {
            sum += window[i];
            lsum += lwindow[i];
        }
        res.train_nll = sum / (double)nw;   /* NaN under flow matching */
        res.train_loss = lsum / (double)nw;
    }
    res.val_nll = state->last_val_nll;
    res.best_val_nll = state->has_best ? state->best_val_nll : NAN;
    res.best_iteration = state->best_iteration;
    res.seconds = now_seconds() - t_start;
    if (res.iters_run > 0) {
        res.nfe_forward_mean = (double)res.nfe_forward / (double)res.iters_run;
        res.nfe_backward_mean = (double)res.nfe_backward / (double)res.iters_run;
    }
    res.nfe_validation = nfe_val;
    if (result)
        *result = res;
    return s;
}
