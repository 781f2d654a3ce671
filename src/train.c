/* train.c — training a flow: minibatch gradients from cnf_flow_nll_grad_part
 * (the whole batch, or this process's part under cnf_train_parallel;
 * maximum likelihood by the integral-loss adjoint, docs/mathematics.md) or
 * cnf_fm_loss_grad (flow matching, cnf/fm.h), Adam
 * (Kingma and Ba 2015) with L2 weight decay exactly as torch.optim.Adam,
 * which FFJORD (Grathwohl et al. 2019, train_toy.py / train_tabular.py)
 * uses, learned end times through T = s^2 as FFJORD's sqrt_end_time,
 * gradient clipping as torch.nn.utils.clip_grad_norm_, validation with
 * best-parameter keeping and early stopping. Data parallel, the parts'
 * sums meet before the optimizer step (docs/architecture.md, "Data
 * parallelism"). Everything random comes from the state's gsl_rng. */
#include "cnf/train.h"

#include <math.h>
#include <stdio.h>
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
    const cnf_train_parallel *par = &opt->parallel;
    if (par->size > 1) {
        if (!par->sum || par->rank >= par->size)
            return cnf_error(CNF_EINVAL, "data-parallel training: rank %zu of %zu%s", par->rank,
                             par->size, par->sum ? "" : " without a sum");
        if (opt->objective == CNF_OBJ_FM)
            return cnf_error(CNF_ENOTIMPL, "flow matching does not train data parallel yet (its "
                             "optimal-transport blocks would have to be split alike): run it "
                             "as one process, with --threads");
        if (opt->batch < par->size)
            return cnf_error(CNF_EINVAL, "a batch of %zu rows cannot be split over %zu "
                             "processes", opt->batch, par->size);
    }
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
    double *agg;              /* data parallel: P + 2 values and a flag per process */
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
    free(m->agg);
}

/* Data parallelism: sum the n values of buf (this process's shares) over
 * the processes, with every process's verdict s. After it every process
 * has the sums and the same answer: CNF_OK when all succeeded; else this
 * process's own status and message when it failed, or CNF_ERHS naming the
 * first rank that did. One process: s. buf has room for n + size. */
static cnf_status agree_sum(const cnf_train_parallel *par, double *buf, size_t n, cnf_status s,
                            const char *what)
{
    if (par->size <= 1)
        return s;
    if (s != CNF_OK)
        memset(buf, 0, n * sizeof *buf); /* a failed share must not turn others' sums NaN */
    double *flags = buf + n;
    memset(flags, 0, par->size * sizeof *flags);
    flags[par->rank] = s != CNF_OK;
    if (par->sum(buf, n + par->size, par->ctx) != 0)
        return s != CNF_OK ? s : cnf_error(CNF_ERHS, "%s: the sum across processes failed", what);
    if (s != CNF_OK)
        return s;
    for (size_t r = 0; r < par->size; r++)
        if (flags[r] != 0.0)
            return cnf_error(CNF_ERHS, "%s: stopped because rank %zu failed (that rank reports "
                             "why)", what, r);
    return CNF_OK;
}

/* Mean validation NLL; the noise generator (if any) restarts from the
 * state's seed each time so that every validation sees the same noise. */
static cnf_status validate(const cnf_flow *flow, train_mem *m, const cnf_train_state *st,
                           const cnf_train_parallel *par, const double *Xval, size_t Nv,
                           size_t chunk, double *nll, size_t *nfe)
{
    if (m->vrng)
        gsl_rng_set(m->vrng, st->seed ^ 0x5a17c0deUL);
    cnf_flow_stats stats;
    memset(&stats, 0, sizeof stats);
    size_t mine = Nv;
    cnf_status s;
    if (par->size > 1) {
        /* this process's part of every chunk, counted as the parts fall */
        mine = 0;
        for (size_t c0 = 0; c0 < Nv; c0 += chunk)
            mine += cnf_flow_part_rows(Nv - c0 < chunk ? Nv - c0 : chunk, par->rank, par->size,
                                       NULL);
        s = cnf_flow_log_likelihood_part(flow, m->vwork, Xval, Nv, chunk, par->rank, par->size,
                                         m->vrng, m->loglik, &stats);
    } else {
        s = cnf_flow_log_likelihood(flow, m->vwork, Xval, Nv, m->vrng, m->loglik, &stats);
    }
    double sum = 0.0;
    for (size_t i = 0; s == CNF_OK && i < mine; i++)
        sum += m->loglik[i];
    m->agg[0] = sum;
    if ((s = agree_sum(par, m->agg, 1, s, "validation")) != CNF_OK)
        return s;
    sum = m->agg[0];
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
        size_t chunk = opt->val_batch > 0 ? opt->val_batch : 1000;
        if ((s = validate(flow, m, st, &opt->parallel, Xval, Nv, chunk < Nv ? chunk : Nv,
                          &st->last_val_nll, nfe_val)) != CNF_OK)
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

/* What cnf_train_run works with after its setup. */
typedef struct {
    size_t D, P, K, B, Nv;
    int fm, do_val, val_nll;
    size_t nproc;          /* processes (1 without data parallelism) */
    size_t b0, Bp;         /* this process's rows [b0, b0 + Bp) of every batch */
} train_plan;

/* Everything cnf_train_run checks and allocates before its first iteration;
 * on failure m holds what was allocated so far. */
static cnf_status train_prepare(cnf_flow *flow, const double *Xtrain, size_t Ntrain,
                                const double *Xval, size_t Nval, const cnf_train_options *opt,
                                cnf_train_state *state, train_mem *m, train_plan *pl)
{
    size_t D = cnf_flow_dim(flow), P = cnf_flow_num_params(flow), B = opt->batch;
    const cnf_train_parallel *par = &opt->parallel;
    size_t nproc = par->size > 1 ? par->size : 1;
    cnf_status s;
    pl->D = D;
    pl->P = P;
    pl->K = cnf_flow_num_blocks(flow);
    pl->B = B;
    pl->nproc = nproc;
    if (state->n_params != P)
        return cnf_error(CNF_EDIM, "training state has %zu parameters, the flow %zu",
                         state->n_params, P);
    if (!Xtrain || Ntrain == 0)
        return cnf_error(CNF_EDATA, "no training data");
    if (Ntrain < B)
        return cnf_error(CNF_EDATA, "%zu training rows are fewer than a batch of %zu", Ntrain, B);
    if (Nval > 0 && !Xval)
        return cnf_error(CNF_EINVAL, "validation data are NULL but Nval = %zu", Nval);
    int fm = pl->fm = opt->objective == CNF_OBJ_FM;
    if (fm && (s = cnf_fm_check_flow(flow)) != CNF_OK)
        return s;
    if ((s = cnf_rows_check_finite(Xtrain, Ntrain, D, "training data")) != CNF_OK)
        return s;
    size_t Nv = pl->Nv = Nval;
    if (opt->max_val_rows > 0 && Nv > opt->max_val_rows)
        Nv = pl->Nv = opt->max_val_rows;
    if ((s = cnf_rows_check_finite(Xval, Nv, D, "validation data")) != CNF_OK)
        return s;
    int do_val = pl->do_val = opt->val_every > 0 && Nv > 0;
    /* NLL validation: always under maximum likelihood, at its own interval
     * under flow matching */
    int val_nll = pl->val_nll = do_val && (!fm || opt->val_nll_every > 0);
    size_t vchunk = opt->val_batch > 0 ? opt->val_batch : 1000;
    if (vchunk > Nv)
        vchunk = Nv;
    if (val_nll && nproc > 1 && (vchunk < nproc || (Nv % vchunk && Nv % vchunk < nproc)))
        return cnf_error(CNF_EINVAL, "%zu validation rows in chunks of %zu leave a chunk of "
                         "fewer rows than the %zu processes (choose val_batch or the validation "
                         "rows so that every chunk has at least one row per process)", Nv,
                         vchunk, nproc);
    /* this process's rows of every batch: all of them as one process */
    pl->b0 = 0;
    size_t Bp = pl->Bp = nproc > 1 ? cnf_flow_part_rows(B, par->rank, nproc, &pl->b0) : B;
    cnf_flow_options fopt = opt->flow;
    if (nproc > 1) {
        fopt.reduce = par->sum;
        fopt.reduce_ctx = par->ctx;
    }

    size_t bytes;
    m->Xb = cnf_size_mul3(B, D, sizeof *m->Xb, &bytes) ? NULL : malloc(bytes);
    m->grad = cnf_size_mul(P, sizeof *m->grad, &bytes) ? NULL : malloc(bytes);
    if (fm) {
        cnf_fm_options fo = opt->fm;
        fo.threads = opt->flow.threads;
        m->fm = cnf_fm_work_alloc(flow, B, &fo);
        m->fmrng = gsl_rng_alloc(gsl_rng_mt19937);
        if (!m->fm) 
            return work_failure("flow-matching", B);
        if (!m->fmrng) 
            return cnf_error(CNF_ENOMEM, "out of memory for flow matching's validation draws");
    } else {
        m->work = cnf_flow_work_alloc(flow, Bp, &fopt);
        if (!m->work) 
            return work_failure("training", Bp);
    }
    if (val_nll) {
        cnf_flow_options vopt = fopt, eval_default;
        /* validate as cnf eval evaluates: the usual safety factor, not the
         * training forward solves' 0.7, so that the best model is chosen
         * by the numbers a user gets afterwards */
        cnf_flow_options_default(&eval_default);
        vopt.solver.safety = eval_default.solver.safety;
        int exact = opt->val_divergence == CNF_TRAIN_VAL_EXACT
                    || (opt->val_divergence == CNF_TRAIN_VAL_AUTO && D <= 4);
        if (exact)
            vopt.divergence = CNF_DIV_EXACT;
        /* a part of a chunk: at most the first rank's share rounded up */
        size_t chunk = nproc > 1 ? (vchunk + nproc - 1) / nproc : vchunk;
        m->vwork = cnf_flow_work_alloc(flow, chunk, &vopt);
        m->loglik = cnf_size_mul(Nv, sizeof *m->loglik, &bytes) ? NULL : malloc(bytes);
        if (vopt.divergence != CNF_DIV_EXACT)
            m->vrng = gsl_rng_alloc(gsl_rng_mt19937);
        if (!m->vwork) 
            return work_failure("validation", chunk);
        if (!m->loglik || (vopt.divergence != CNF_DIV_EXACT && !m->vrng)) 
            return cnf_error(CNF_ENOMEM, "out of memory for validation of %zu rows", Nv);
    }
    /* P + 2 + nproc cannot overflow where P doubles were allocated */
    m->agg = m->grad ? malloc((P + 2 + nproc) * sizeof *m->agg) : NULL;
    if (!m->Xb || !m->grad || !m->agg) 
        return cnf_error(CNF_ENOMEM, "out of memory for a batch of %zu rows", B);

    double *p = cnf_flow_params(flow);             /* P */
    if (state->iteration > 0)
        memcpy(p, state->params, P * sizeof *p);   /* resume */
    else
        memcpy(state->params, p, P * sizeof *p);
    /* the warm first steps, so that a resumed run continues bit for bit
     * (flow matching solves nothing and keeps none) */
    if (m->work && state->n_step_hints > 0
        && (s = cnf_flow_work_set_step_hints(m->work, state->step_hints, state->n_step_hints))
               != CNF_OK) 
        return cnf_error(s, "resuming: the training state's step hints: %s", cnf_last_error());
    if (m->work && (s = resize_step_hints(state, cnf_flow_work_step_hints(m->work, NULL)))
                      != CNF_OK) 
        return s;
    if (m->work)
        cnf_flow_work_step_hints(m->work, state->step_hints);
    return CNF_OK;
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
    /* Setup failures (data, memory) can be one process's alone: under data
     * parallelism every process first agrees that all are ready, so that
     * none goes on to wait for one that has returned. */
    const cnf_train_parallel *par = &opt->parallel;
    train_mem m;
    memset(&m, 0, sizeof m);
    train_plan pl;
    memset(&pl, 0, sizeof pl);
    s = train_prepare(flow, Xtrain, Ntrain, Xval, Nval, opt, state, &m, &pl);
    if (par->size > 1) {
        double *flags = calloc(par->size, sizeof *flags);
        if (!flags && s == CNF_OK)
            s = cnf_error(CNF_ENOMEM, "out of memory for the processes' agreement");
        if (flags) {
            s = agree_sum(par, flags, 0, s, "training setup");
            free(flags);
        }
    }
    if (s != CNF_OK) {
        train_mem_free(&m);
        return s;
    }
    const size_t D = pl.D, P = pl.P, K = pl.K, B = pl.B, Nv = pl.Nv, nproc = pl.nproc;
    const size_t b0 = pl.b0, Bp = pl.Bp;
    const int fm = pl.fm, do_val = pl.do_val, val_nll = pl.val_nll;
    double *p = cnf_flow_params(flow);             /* P */

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
            s = cnf_flow_nll_grad_part(flow, m.work, m.Xb + b0 * D, Bp, b0, B, state->rng,
                                       &nll, &loss, m.grad, &stats);
        if (nproc > 1) {
            /* the parts' shares add up to the batch's */
            double *agg = m.agg;
            agg[0] = nll;
            agg[1] = loss;
            memcpy(agg + 2, m.grad, P * sizeof *agg);
            char what[48];
            snprintf(what, sizeof what, "iteration %zu", it);
            s = agree_sum(par, agg, P + 2, s, what);
            nll = agg[0];
            loss = agg[1];
            memcpy(m.grad, agg + 2, P * sizeof *agg);
        }
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
        if (nproc > 1) {
            /* the callback (Ctrl-C) and the clock speak for one process:
             * all stop when any says so, or they would part ways */
            m.agg[0] = res.interrupted;
            m.agg[1] = res.timed_out;
            if ((s = agree_sum(par, m.agg, 2, CNF_OK, "stopping")) != CNF_OK)
                break;
            res.interrupted = m.agg[0] > 0.0;
            res.timed_out = !res.interrupted && m.agg[1] > 0.0;
            stop = stop || res.interrupted || res.timed_out;
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
