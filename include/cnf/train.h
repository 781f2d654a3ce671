/* cnf/train.h — training a flow (docs/mathematics.md, "Training") by maximum likelihood
 * or by flow matching (cnf/fm.h): Adam with L2 weight decay over the one
 * parameter vector, minibatches drawn with a seeded gsl_rng, validation,
 * best-parameter keeping, early stopping, step or cosine learning-rate
 * schedules with warm-up, gradient clipping and a per-iteration callback.
 *
 * Objectives (opt.objective):
 *   CNF_OBJ_MLE  the mean negative log-likelihood, its gradient by the
 *                integral-loss adjoint (cnf_flow_nll_grad): a forward and a
 *                backward ODE solve per iteration; any flow;
 *   CNF_OBJ_FM   the flow-matching regression loss (cnf_fm_loss_grad, with
 *                opt.fm's coupling and times): one network pass and one
 *                sweep per iteration, no solve; a flow of one block with
 *                T = 1 and learn_T = 0 (refused otherwise, CNF_EINVAL).
 * Both train the same model, so a flow-matched model can be fine-tuned by
 * maximum likelihood (start a fresh state from its parameters) and the other
 * way round.
 *
 * One iteration (iteration i = state->iteration + 1):
 *   1. draw B row indices uniformly WITH replacement from the training rows
 *      (gsl_rng_uniform_int on the state's rng, in order) and gather them;
 *   2. the objective's loss and gradient on that batch: cnf_flow_nll_grad
 *      with the state's rng for the Hutchinson noise (drawn after the
 *      indices), or cnf_fm_loss_grad with it for the path's noise and
 *      times; grad: P;
 *   3. cnf_train_apply_gradient: end times through s = sqrt(T) (FFJORD's
 *      T = s^2, so T stays positive): dL/ds = 2 s dL/dT; with learn_T = 0
 *      the T entries are left exactly as they are; then clipping of the
 *      global L2 norm to clip_norm; then one Adam step at the learning rate
 *      of the schedule (cnf_train_lr);
 *   4. when i is a multiple of val_every, or i == opt.iters: validation on
 *      the validation rows (at most max_val_rows of them, the first ones).
 *      Maximum likelihood validates the mean NLL. Flow matching validates
 *      its loss (cheap: no solve, with draws from a generator reseeded from
 *      the state's seed each time, so every validation sees the same ones);
 *      and, when i is a multiple of val_nll_every (or i == opt.iters and
 *      val_nll_every > 0), its loss and the mean NLL through the solver. The kept
 *      model is the best by NLL whenever NLL is validated, otherwise (flow
 *      matching with val_nll_every = 0) the best by validation loss: a new
 *      best is copied to state->best_params, otherwise the patience counter
 *      grows and training stops when it reaches patience;
 *   5. the callback, which may ask to stop; then the clock (max_seconds).
 *      A run cut short by either validates its last parameters (unless
 *      this iteration just did) and keeps them if they beat the best so
 *      far, so that the stretch since the last validation is not lost.
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
 *     cnf_status s = cnf_train_run(flow, Xtr, Ntr, Xval, Nval, &opt, st, &res);
 *     // flow now holds cnf_train_state_best_so_far(st); st can be saved
 *     // (cnf_model_save with it in cnf_model_extra) and resumed
 *     cnf_train_state_free(st);
 *
 * Shapes: B batch, D data dimension, N rows, P parameters (cnf/flow.h).
 */
#ifndef CNF_TRAIN_H
#define CNF_TRAIN_H

#include <stddef.h>

#include <gsl/gsl_rng.h>

#include "cnf/fm.h"
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

typedef enum {
    CNF_OBJ_MLE = 0,   /* maximum likelihood through the adjoint (default) */
    CNF_OBJ_FM         /* flow matching (cnf/fm.h; opt.fm.coupling chooses OT) */
} cnf_train_objective;

/* "mle", "fm"; CNF_EINVAL with a message listing the names. */
const char *cnf_train_objective_name(cnf_train_objective obj);
cnf_status cnf_train_objective_from_name(const char *name, cnf_train_objective *obj);

typedef enum {
    CNF_LR_STEP = 0,   /* lr * lr_decay^floor((i - 1 - warmup) / lr_decay_every) (default) */
    CNF_LR_COSINE      /* lr_min + (lr - lr_min) (1 + cos(pi p)) / 2 with p = (i - 1 -
                          warmup) / (iters - warmup - 1), capped at 1: lr at the first
                          iteration after warm-up, lr_min at iteration iters */
} cnf_lr_schedule;

/* "step", "cosine". */
const char *cnf_lr_schedule_name(cnf_lr_schedule sch);
cnf_status cnf_lr_schedule_from_name(const char *name, cnf_lr_schedule *sch);

/* Which divergence validation uses. */
typedef enum {
    CNF_TRAIN_VAL_AUTO = 0,   /* exact when D <= 4, otherwise as training (default) */
    CNF_TRAIN_VAL_EXACT,      /* always exact */
    CNF_TRAIN_VAL_AS_TRAINING /* always flow.divergence */
} cnf_train_val_divergence;

/* "auto", "exact", "training"; CNF_EINVAL with a message listing the names. */
const char *cnf_train_val_divergence_name(cnf_train_val_divergence v);
cnf_status cnf_train_val_divergence_from_name(const char *name, cnf_train_val_divergence *v);

/* Handed to the callback after every iteration. Borrowed, valid during the
 * call only. */
typedef struct {
    size_t iteration;      /* iterations done, counting earlier (resumed) ones */
    size_t iters;          /* opt.iters, the target */
    double loss;           /* this iteration's training loss (NLL + regularizers,
                              or the flow-matching loss) */
    double nll;            /* this iteration's minibatch mean NLL (NaN under
                              flow matching, which computes none) */
    double grad_norm;      /* L2 norm of the gradient (after the T chain rule,
                              before clipping) */
    double lr;             /* learning rate used in this iteration */
    size_t nfe_forward;    /* function evaluations of this iteration's forward solves */
    size_t nfe_backward;   /* ... and of its backward (adjoint) solves */
    double elapsed;        /* seconds since cnf_train_run was called */
    int validated;         /* 1 if validation ran in this iteration */
    int validated_nll;     /* 1 if it computed the NLL (always with validated
                              under maximum likelihood) */
    double val_nll;        /* last validation NLL (NaN if none yet) */
    double val_loss;       /* flow matching: last validation loss (NaN if none
                              yet, and always under maximum likelihood) */
    double best_val_nll;   /* best validation criterion so far (NaN if none):
                              the NLL, or the flow-matching loss when NLL is
                              not validated (see the top) */
    size_t best_iteration; /* its iteration (0 if none) */
    size_t n_blocks;       /* K */
    const double *T;       /* K current end times */
} cnf_train_progress;

/* Nonzero return: stop after this iteration (cnf_train_run then returns CNF_OK
 * with result->interrupted = 1, the flow holding the best parameters). */
typedef int (*cnf_train_callback)(const cnf_train_progress *p, void *ctx);

/* Data-parallel training: size processes (MPI ranks, threads) each run
 * cnf_train_run with the same flow, data, options and state, and this setting
 * naming their rank. Every iteration every process draws the same batch
 * (the state's generator is the same everywhere), solves its contiguous
 * part of it (cnf_flow_part_rows, cnf_flow_nll_grad_part) with sum
 * installed on its solves (so that the steps are one process's), and the
 * parts' NLL, loss and gradient are summed before every process takes the
 * same optimizer step; validation splits every chunk's rows alike
 * (cnf_flow_log_likelihood_part). The parameters then equal one process's
 * up to the order of summation. Every iteration the processes also agree
 * on whether any failed (a process that fails keeps its own status and
 * message; the others return CNF_ERHS naming its rank) and on whether to
 * stop (the callback's verdict and max_seconds, taken from the rank that
 * says stop), so that they stop together and none waits. sum follows
 * cnf_ode_sum (cnf/ode.h): in place, the same bits on every process; the
 * caller owns ctx. Maximum likelihood only (flow matching is refused with
 * CNF_ENOTIMPL); the batch needs at least size rows, and each validation
 * chunk (val_batch, and the last one) too. size 0 or 1: one process (the
 * default). cnf/mpi.h fills it for MPI. */
typedef struct {
    size_t rank;             /* 0 .. size - 1 */
    size_t size;             /* processes; 0 or 1: one (default) */
    cnf_ode_sum sum;         /* required when size > 1 */
    void *ctx;
} cnf_train_parallel;

typedef struct {
    size_t iters;            /* total iterations to reach (a resumed state
                                continues from state->iteration), default 1000 */
    size_t batch;            /* B, default 100 */
    double lr;               /* default 1e-3 */
    double weight_decay;     /* L2, added to the gradient; default 1e-5 */
    double beta1, beta2;     /* default 0.9, 0.999 */
    double eps;              /* default 1e-8 */
    int learn_T;             /* 1 (default): train the end times through T = s^2 */
    cnf_train_objective objective;  /* default CNF_OBJ_MLE */
    cnf_fm_options fm;       /* flow matching's coupling and times
                                (cnf_fm_options_default; its threads field is
                                set from flow.threads) */
    cnf_lr_schedule lr_schedule;   /* default CNF_LR_STEP */
    size_t warmup;           /* linear warm-up over the first this many
                                iterations, lr i / warmup; 0 = none (default) */
    double lr_min;           /* cosine schedule's final rate, default 0 */
    double lr_decay;         /* step decay factor, default 1 (none) */
    size_t lr_decay_every;   /* iterations between decays, 0 = off (default) */
    double clip_norm;        /* clip the gradient's global L2 norm, 0 = off (default) */
    size_t val_every;        /* validate every this many iterations, default 100;
                                0 = never (then the flow keeps the last parameters) */
    size_t patience;         /* stop after this many validations without a new
                                best, 0 = off (default) */
    double max_seconds;      /* stop once this much wall-clock time has passed
                                (checked after each iteration); 0 = no limit
                                (default). The schedule keeps iters as its
                                horizon */
    size_t val_nll_every;    /* flow matching: also validate the NLL through
                                the solver every this many iterations (and
                                the flow-matching loss with it); 0 = never
                                (default), then the kept model is the best by
                                validation loss. Maximum likelihood always
                                validates the NLL */
    unsigned long seed;      /* default 1; for cnf_train_state_alloc (cnf_train_run
                                itself uses the state's seed and rng) */
    cnf_train_val_divergence val_divergence;  /* default CNF_TRAIN_VAL_AUTO */
    size_t max_val_rows;     /* validate on at most this many (first) rows,
                                0 = all (default) */
    size_t val_batch;        /* chunk size of validation solves, default 1000
                                (0 counts as 1000) */
    cnf_flow_options flow;   /* solver, tolerances, divergence, regularizers:
                                cnf_flow_options_default, but warm_start = 1
                                and the forward solver's safety = 0.7 (the
                                adjoint's stays 0.9, and validation uses the
                                evaluation's 0.9); see src/train.c */
    cnf_train_callback callback;  /* may be NULL (default) */
    void *callback_ctx;
    cnf_train_parallel parallel;  /* data parallelism; default one process */
} cnf_train_options;

void cnf_train_options_default(cnf_train_options *opt);

/* CNF_EINVAL with a message naming the option at fault (checked by cnf_train_run
 * before any work). */
cnf_status cnf_train_options_check(const cnf_train_options *opt);

/* What --resume needs. Transparent so that a program can read every field
 * and cnf/io.h can save and restore them (from a table of the fields); the
 * arrays are the state's own, and cnf_train_run and the functions below keep
 * them consistent. All arrays have the parameter vector's layout
 * [theta_0 | ... | theta_{K-1} | T_0 ... T_{K-1}]. */
typedef struct {
    size_t n_params;         /* P */
    unsigned long seed;      /* seed given to cnf_train_state_alloc */
    size_t iteration;        /* iterations done (= Adam's step count) */
    double *params;          /* P: the current (last) parameters, not the best;
                                cnf_train_run copies them into the flow when
                                iteration > 0, so a resumed run continues
                                from them */
    double *adam_m;          /* P: Adam first moment (T entries: of s = sqrt(T)) */
    double *adam_v;          /* P: Adam second moment */
    gsl_rng *rng;            /* gsl_rng_mt19937; batches and training noise */
    double lr;               /* learning rate of the last iteration (0 before any) */
    int has_best;            /* 1 once a validation has run */
    double *best_params;     /* P: parameters of the best validation */
    double best_val_nll;     /* the best validation criterion (the NLL, or
                                flow matching's loss when NLL is not
                                validated); +inf if none */
    size_t best_iteration;   /* 0 if none */
    double last_val_nll;     /* NaN if none */
    size_t bad_validations;  /* validations since the best (patience counter) */
    size_t n_step_hints;     /* 2K once a maximum-likelihood iteration has
                                run, 0 before (and under flow matching) */
    double *step_hints;      /* n_step_hints: the warm first steps of the
                                gradient's solves after the last iteration
                                (cnf_flow_work_step_hints); owned by the
                                state: set by cnf_train_run or through
                                cnf_train_state_set_step_hints */
} cnf_train_state;

/* A fresh state for P parameters: iteration 0, zero moments, rng seeded
 * with seed. NULL on failure. */
cnf_train_state *cnf_train_state_alloc(size_t n_params, unsigned long seed);
void cnf_train_state_free(cnf_train_state *state);    /* NULL is fine */

/* The best parameters so far (P, borrowed): best_params once a validation
 * has run, the current params before. This is what cnf_train_run leaves in the
 * flow and what a model saved during or after training should hold. */
const double *cnf_train_state_best_so_far(const cnf_train_state *state);

/* Replace the warm first steps with n values copied from hints (n = 0:
 * none), e.g. from a saved state. CNF_EINVAL unless every value is finite
 * and >= 0, CNF_ENOMEM; the state is unchanged on error. */
cnf_status cnf_train_state_set_step_hints(cnf_train_state *state, const double *hints,
                                          size_t n);

/* The rng's raw state, for saving: a pointer to its bytes (borrowed) and
 * their count; the type's name ("mt19937"). */
const void *cnf_train_state_rng_bytes(const cnf_train_state *state, size_t *size);
const char *cnf_train_state_rng_type(const cnf_train_state *state);
/* Restore the rng from saved bytes; CNF_EFORMAT if size does not match the
 * generator's state size. */
cnf_status cnf_train_state_set_rng_bytes(cnf_train_state *state, const void *bytes,
                                         size_t size);

/* The outcome of one cnf_train_run call. */
typedef struct {
    size_t iters;            /* state->iteration at the end (total) */
    size_t iters_run;        /* iterations run in this call */
    double train_nll;        /* mean minibatch NLL over the last up to 50
                                iterations of this call (NaN if none, and
                                under flow matching) */
    double train_loss;       /* mean training loss over the same iterations */
    double val_loss;         /* flow matching: last validation loss (NaN if none) */
    double val_nll;          /* last validation NLL (NaN if none) */
    double best_val_nll;     /* the best validation criterion; NaN if no validation */
    size_t best_iteration;   /* 0 if no validation */
    double seconds;          /* wall-clock time of this call */
    size_t nfe_forward;      /* totals over this call's training iterations */
    size_t nfe_backward;
    double nfe_forward_mean; /* per iteration */
    double nfe_backward_mean;
    size_t nfe_validation;   /* function evaluations spent validating */
    int stopped_early;       /* 1 if patience ran out */
    int interrupted;         /* 1 if the callback asked to stop */
    int timed_out;           /* 1 if max_seconds ran out */
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
cnf_status cnf_train_run(cnf_flow *flow, const double *Xtrain, size_t Ntrain,
                     const double *Xval, size_t Nval, const cnf_train_options *opt,
                     cnf_train_state *state, cnf_train_result *result);

/* The optimizer step alone (docs/architecture.md: a data-parallel run sums or
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

/* The schedule's learning rate for iteration i (1-based): warm-up, then
 * the step or cosine schedule (see cnf_lr_schedule). */
double cnf_train_lr(const cnf_train_options *opt, size_t iteration);

/* One torch.optim.Adam step over n entries (t = step number, >= 1):
 *   g = grad + weight_decay * p; m, v updated; p updated (see the top). */
void cnf_train_adam_step(double *p, const double *grad, double *m, double *v, size_t n,
                   size_t t, double lr, double beta1, double beta2, double eps,
                   double weight_decay);

#ifdef __cplusplus
}
#endif

#endif /* CNF_TRAIN_H */
