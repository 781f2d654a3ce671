/* cnf/train.h — maximum-likelihood training of a flow (DESIGN.md section 2):
 * Adam with L2 weight decay over the one parameter vector, minibatches drawn
 * with a seeded gsl_rng, validation, best-parameter keeping, early stopping,
 * step learning-rate decay, gradient clipping and a per-iteration callback.
 *
 * One iteration (iteration i = state->iteration + 1):
 *   1. draw B row indices uniformly WITH replacement from the training rows
 *      (gsl_rng_uniform_int on the state's rng, in order) and gather them;
 *   2. cnf_flow_nll_grad on that batch, with the state's rng for the
 *      Hutchinson noise (drawn after the indices); grad: P;
 *   3. cnf_train_apply_gradient: end times through s = sqrt(T) (FFJORD's
 *      T = s^2, so T stays positive): dL/ds = 2 s dL/dT; with learn_T = 0
 *      the T entries are left exactly as they are; then clipping of the
 *      global L2 norm to clip_norm; then one Adam step at the learning rate
 *      lr = opt.lr * lr_decay^floor((i-1) / lr_decay_every);
 *   4. when i is a multiple of val_every, or i == opt.iters: validation (mean
 *      NLL of the validation rows, at most max_val_rows of them, the first
 *      ones); a new best is copied to state->best_params, otherwise the
 *      patience counter grows and training stops when it reaches patience;
 *   5. the callback, which may ask to stop.
 * Everything random comes from the state's rng (batch indices, then noise),
 * so the same seed, data and options give the same numbers bit for bit, and
 * a run of 2N iterations equals a run of N followed by a resumed run of N
 * with the same state (validation noise, when validation is not exact, comes
 * from a separate generator reseeded from state->seed at every validation,
 * so that every validation sees the same noise and the training stream is
 * untouched).
 *
 * Adam is PyTorch's torch.optim.Adam (as FFJORD uses it): weight decay is L2
 * added to the gradient, g += weight_decay * p, applied to every parameter
 * (network weights and the s = sqrt(T) entries), before the moments; then
 *     m = b1 m + (1 - b1) g,  v = b2 v + (1 - b2) g^2,
 *     p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
 * The T_k entries of the moments are moments of s_k, not of T_k.
 *
 * Typical call:
 *
 *     cnf_train_options opt;
 *     cnf_train_options_default(&opt);
 *     opt.iters = 3000;
 *     cnf_train_state *st = cnf_train_state_alloc(cnf_flow_num_params(flow), opt.seed);
 *     cnf_train_result res;
 *     cnf_status s = cnf_train(flow, Xtr, Ntr, Xval, Nval, &opt, st, &res);
 *     // flow now holds the best parameters; st can be saved and resumed
 *     cnf_train_state_free(st);
 *
 * Shapes: B batch, D data dimension, N rows, P parameters (cnf/flow.h).
 */
#ifndef CNF_TRAIN_H
#define CNF_TRAIN_H

#include <stddef.h>

#include <gsl/gsl_rng.h>

#include "cnf/flow.h"
#include "cnf/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The smallest end time training produces: after the Adam step on
 * s = sqrt(T), T = max(s^2, CNF_TRAIN_T_MIN). T = 0 would have a zero
 * gradient through s forever (and a model with T <= 0 cannot be saved or
 * loaded); the floor keeps every trained T strictly positive. */
#define CNF_TRAIN_T_MIN 1e-8

/* Which divergence validation uses. */
typedef enum {
    CNF_TRAIN_VAL_AUTO = 0,   /* exact when D <= 4, otherwise as training (default) */
    CNF_TRAIN_VAL_EXACT,      /* always exact */
    CNF_TRAIN_VAL_AS_TRAINING /* always flow.divergence */
} cnf_train_val_divergence;

/* Handed to the callback after every iteration. Borrowed, valid during the
 * call only. */
typedef struct {
    size_t iteration;      /* iterations done, counting earlier (resumed) ones */
    size_t iters;          /* opt.iters, the target */
    double loss;           /* this iteration's training loss (NLL + regularizers) */
    double nll;            /* this iteration's minibatch mean NLL */
    double grad_norm;      /* L2 norm of the gradient (after the T chain rule,
                              before clipping) */
    double lr;             /* learning rate used in this iteration */
    size_t nfe_forward;    /* function evaluations of this iteration's forward solves */
    size_t nfe_backward;   /* ... and of its backward (adjoint) solves */
    double elapsed;        /* seconds since cnf_train was called */
    int validated;         /* 1 if validation ran in this iteration */
    double val_nll;        /* last validation NLL (NaN if none yet) */
    double best_val_nll;   /* best validation NLL so far (NaN if none) */
    size_t best_iteration; /* its iteration (0 if none) */
    size_t n_blocks;       /* K */
    const double *T;       /* K current end times */
} cnf_train_progress;

/* Nonzero return: stop after this iteration (cnf_train then returns CNF_OK
 * with result->interrupted = 1, the flow holding the best parameters). */
typedef int (*cnf_train_callback)(const cnf_train_progress *p, void *ctx);

typedef struct {
    size_t iters;            /* total iterations to reach (a resumed state
                                continues from state->iteration), default 1000 */
    size_t batch;            /* B, default 100 */
    double lr;               /* default 1e-3 */
    double weight_decay;     /* L2, added to the gradient; default 1e-5 */
    double beta1, beta2;     /* default 0.9, 0.999 */
    double eps;              /* default 1e-8 */
    int learn_T;             /* 1 (default): train the end times through T = s^2 */
    double lr_decay;         /* step decay factor, default 1 (none) */
    size_t lr_decay_every;   /* iterations between decays, 0 = off (default) */
    double clip_norm;        /* clip the gradient's global L2 norm, 0 = off (default) */
    size_t val_every;        /* validate every this many iterations, default 100;
                                0 = never (then the flow keeps the last parameters) */
    size_t patience;         /* stop after this many validations without a new
                                best, 0 = off (default) */
    unsigned long seed;      /* default 1; for cnf_train_state_alloc (cnf_train
                                itself uses the state's seed and rng) */
    cnf_train_val_divergence val_divergence;  /* default CNF_TRAIN_VAL_AUTO */
    size_t max_val_rows;     /* validate on at most this many (first) rows,
                                0 = all (default) */
    size_t val_batch;        /* chunk size of validation solves, 0 = 1000 (default) */
    cnf_flow_options flow;   /* solver, tolerances, divergence, regularizers:
                                cnf_flow_options_default, but warm_start = 1
                                and the forward solver's safety = 0.7 (the
                                adjoint's stays 0.9, and validation uses the
                                evaluation's 0.9); see src/train.c */
    cnf_train_callback callback;  /* may be NULL (default) */
    void *callback_ctx;
} cnf_train_options;

void cnf_train_options_default(cnf_train_options *opt);

/* CNF_EINVAL with a message naming the option at fault (checked by cnf_train
 * before any work). */
cnf_status cnf_train_options_check(const cnf_train_options *opt);

/* What --resume needs. Transparent so that the file-format code can save
 * and restore every field; all arrays have the parameter vector's layout
 * [theta_0 | ... | theta_{K-1} | T_0 ... T_{K-1}]. Owned by the state. */
typedef struct {
    size_t n_params;         /* P */
    unsigned long seed;      /* seed given to cnf_train_state_alloc */
    size_t iteration;        /* iterations done (= Adam's step count) */
    double *params;          /* P: the current (last) parameters, not the best;
                                cnf_train copies them into the flow when
                                iteration > 0, so a resumed run continues
                                from them */
    double *adam_m;          /* P: Adam first moment (T entries: of s = sqrt(T)) */
    double *adam_v;          /* P: Adam second moment */
    gsl_rng *rng;            /* gsl_rng_mt19937; batches and training noise */
    double lr;               /* learning rate of the last iteration (0 before any) */
    int has_best;            /* 1 once a validation has run */
    double *best_params;     /* P: parameters of the best validation */
    double best_val_nll;     /* +inf if none */
    size_t best_iteration;   /* 0 if none */
    double last_val_nll;     /* NaN if none */
    size_t bad_validations;  /* validations since the best (patience counter) */
    size_t n_step_hints;     /* 2K once an iteration has run, 0 before */
    double *step_hints;      /* n_step_hints: the warm first steps of the
                                gradient's solves after the last iteration
                                (cnf_flow_work_step_hints); allocated by
                                cnf_train (or the file reader), freed with
                                the state */
} cnf_train_state;

/* A fresh state for P parameters: iteration 0, zero moments, rng seeded
 * with seed. NULL on failure. */
cnf_train_state *cnf_train_state_alloc(size_t n_params, unsigned long seed);
void cnf_train_state_free(cnf_train_state *state);    /* NULL is fine */

/* The rng's raw state, for saving: a pointer to its bytes (borrowed) and
 * their count; the type's name ("mt19937"). */
const void *cnf_train_state_rng_bytes(const cnf_train_state *state, size_t *size);
const char *cnf_train_state_rng_type(const cnf_train_state *state);
/* Restore the rng from saved bytes; CNF_EFORMAT if size does not match the
 * generator's state size. */
cnf_status cnf_train_state_set_rng_bytes(cnf_train_state *state, const void *bytes,
                                         size_t size);

/* The outcome of one cnf_train call. */
typedef struct {
    size_t iters;            /* state->iteration at the end (total) */
    size_t iters_run;        /* iterations run in this call */
    double train_nll;        /* mean minibatch NLL over the last up to 50
                                iterations of this call (NaN if none) */
    double val_nll;          /* last validation NLL (NaN if none) */
    double best_val_nll;     /* NaN if no validation */
    size_t best_iteration;   /* 0 if no validation */
    double seconds;          /* wall-clock time of this call */
    size_t nfe_forward;      /* totals over this call's training iterations */
    size_t nfe_backward;
    double nfe_forward_mean; /* per iteration */
    double nfe_backward_mean;
    size_t nfe_validation;   /* function evaluations spent validating */
    int stopped_early;       /* 1 if patience ran out */
    int interrupted;         /* 1 if the callback asked to stop */
} cnf_train_result;

/* Train flow on Xtrain (Ntrain x D) until state->iteration reaches
 * opt->iters, validating on Xval (Nval x D; may be NULL with Nval = 0).
 * state is fresh (iteration 0: starts from the flow's parameters) or resumed
 * (iteration > 0: starts from state->params). On return (CNF_OK) the flow
 * holds the best parameters by validation NLL (the last ones if there was no
 * validation) and state holds everything needed to continue. On a failed
 * solve or a non-finite loss, the error is returned, the flow holds the best
 * (or last good) parameters and state the last completed iteration.
 * result may be NULL. */
cnf_status cnf_train(cnf_flow *flow, const double *Xtrain, size_t Ntrain,
                     const double *Xval, size_t Nval, const cnf_train_options *opt,
                     cnf_train_state *state, cnf_train_result *result);

/* The optimizer step alone (DESIGN.md section 7: a data-parallel run sums or
 * averages the ranks' gradients, then every rank calls this). grad (P) holds
 * dloss/dparams of the flow's layout (T entries: dloss/dT) and is
 * overwritten with the gradient actually used (T entries: dloss/ds, zero when
 * not learned; clipped). Updates the flow's parameters, the state's moments,
 * iteration (+1) and lr. *grad_norm (may be NULL) gets the norm before
 * clipping. lr is the learning rate to use (cnf_train_lr gives the
 * schedule's). */
cnf_status cnf_train_apply_gradient(cnf_flow *flow, cnf_train_state *state,
                                    const cnf_train_options *opt, double lr,
                                    double *grad, double *grad_norm);

/* The step schedule's learning rate for iteration i (1-based). */
double cnf_train_lr(const cnf_train_options *opt, size_t iteration);

/* One torch.optim.Adam step over n entries (t = step number, >= 1):
 *   g = grad + weight_decay * p; m, v updated; p updated (see the top). */
void cnf_adam_step(double *p, const double *grad, double *m, double *v, size_t n,
                   size_t t, double lr, double beta1, double beta2, double eps,
                   double weight_decay);

#ifdef __cplusplus
}
#endif

#endif /* CNF_TRAIN_H */
