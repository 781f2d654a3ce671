/* cnf/fm.h — flow matching: training a flow's velocity field by regression,
 * without solving the ODE (conditional flow matching, Lipman et al. 2023,
 * "Flow matching for generative modeling"; the linear path of rectified
 * flow, Liu et al. 2023; minibatch optimal-transport couplings, Tong et al.
 * 2023, "Improving and generalizing flow-based generative models with
 * minibatch optimal transport").
 *
 * The model is the same CNF as maximum-likelihood training's (cnf/flow.h):
 * one block whose network f(z, t) carries data (t = 0) to the base N(0, I)
 * (t = T = 1). cnf_flow_log_likelihood, encode, decode and everything built
 * on them evaluate a flow-matched model through the ODE solver unchanged, so
 * its likelihoods are exact (up to the solver's tolerance).
 *
 * The objective. For a data row x, y = the preprocessed row (the blocks'
 * space, cnf_flow_preprocess_rows), eps ~ N(0, I) and a time t in [0, 1]:
 *
 *     z_t = (1 - t) y + t eps,       u = eps - y     (= dz_t/dt),
 *     loss = (1/B) sum_b || f(z_t,b, t_b) - u_b ||^2
 *
 * a mean over the batch of the squared Euclidean norm over the D components
 * (a sum over d, not a mean: the loss of f = 0 is about 2D). Its
 * minimiser over all fields is f*(z, t) = E[u | z_t = z], whose flow carries
 * the data distribution exactly to N(0, I) (the marginal path); a finite
 * network approximates it. The parameter gradient is one reverse sweep
 * through the network with the cotangent (2/B)(f - u) on f and none on its
 * tangents (cnf_net_backward with jvbar = NULL): one batched forward pass
 * with a time per row (cnf_net_forward_rows) and one sweep, no solve.
 *
 * Couplings. CNF_FM_INDEPENDENT pairs each row with its own fresh noise
 * draw. CNF_FM_OT pairs the rows of each block of ot_block rows with the
 * block's noise draws by an exact optimal assignment for the squared
 * Euclidean cost (cnf/assign.h): straighter paths, so the trained field
 * needs fewer solver steps to evaluate. The assignment is O(n^3) in the
 * block size, which is why it works in blocks.
 *
 * Times. Every row has its own time, drawn stratified over the batch:
 * t_b = F^-1((b + U_b) / B) with U_b uniform on (0, 1) and F the time
 * distribution's CDF (uniform, or logit-normal: t = logistic(m + s n),
 * Esser et al. 2024). The rows of a training batch are drawn at random, so
 * the strata cost no bias; they spread each batch's times over the whole
 * path, which lowers the gradient's variance against independent draws.
 *
 * Randomness, in this order from the caller's rng: the B x D noise draws
 * (Gaussian, gsl_ran_gaussian_ziggurat, row by row), then the B times. The
 * assignment is deterministic. So a seed fixes a batch's every number.
 *
 * End times. The path is defined on [0, 1]: a flow trained this way has one
 * block and T = 1 (cnf_fm_check_flow refuses anything else).
 *
 * Typical call (cnf_train_run does all this when opt.objective is CNF_OBJ_FM):
 *
 *     cnf_fm_options fo;
 *     cnf_fm_options_default(&fo);
 *     cnf_fm_work *w = cnf_fm_work_alloc(flow, B, &fo);
 *     cnf_fm_loss_grad(flow, w, Xbatch, B, rng, &loss, grad);   // grad: P
 *     cnf_fm_work_free(w);
 *
 * Shapes: B batch rows, D dimension, P the flow's parameter count.
 */
#ifndef CNF_FM_H
#define CNF_FM_H

#include <stddef.h>

#include <gsl/gsl_rng.h>

#include "cnf/flow.h"
#include "cnf/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    CNF_FM_INDEPENDENT = 0,   /* fresh noise per row (plain conditional flow matching) */
    CNF_FM_OT                 /* exact minibatch optimal-transport pairing */
} cnf_fm_coupling;

typedef enum {
    CNF_FM_TIME_UNIFORM = 0,  /* t ~ U(0, 1) */
    CNF_FM_TIME_LOGIT_NORMAL  /* t = logistic(m + s n), n ~ N(0, 1) */
} cnf_fm_time;

/* "uniform", "logit-normal"; CNF_EINVAL with a message listing the names. */
const char *cnf_fm_time_name(cnf_fm_time kind);
cnf_status cnf_fm_time_from_name(const char *name, cnf_fm_time *kind);

typedef struct {
    cnf_fm_coupling coupling;   /* default CNF_FM_INDEPENDENT */
    cnf_fm_time time;           /* default CNF_FM_TIME_UNIFORM */
    double logit_mean;          /* m of the logit-normal, default 0 */
    double logit_std;           /* s of the logit-normal, default 1 */
    size_t ot_block;            /* rows per assignment under CNF_FM_OT, default
                                   256 (the last block takes the remainder) */
    size_t threads;             /* threads of every network pass (as
                                   cnf_flow_options.threads); 0 counts as 1 */
} cnf_fm_options;

void cnf_fm_options_default(cnf_fm_options *opt);
/* CNF_EINVAL naming the field at fault. */
cnf_status cnf_fm_options_check(const cnf_fm_options *opt);

/* CNF_EINVAL unless the flow has one block with T = 1: the message says
 * what the flow has and what flow matching needs. */
cnf_status cnf_fm_check_flow(const cnf_flow *flow);

typedef struct cnf_fm_work cnf_fm_work;

/* Buffers for batches of up to max_batch rows (the network workspace with
 * opt->threads threads, noise, times, the assignment). Options are copied.
 * NULL on failure (message says why; a size that overflows is CNF_EINVAL).
 * Calls never allocate. A work serves flows of the same architecture. */
cnf_fm_work *cnf_fm_work_alloc(const cnf_flow *flow, size_t max_batch, const cnf_fm_options *opt);
void cnf_fm_work_free(cnf_fm_work *work);           /* NULL is fine */

/* Draw a batch's noise and times from rng (the order above) for data rows X
 * (B x D, data space), pair them as the coupling says, and evaluate: the
 * loss (*loss) and, unless grad is NULL, its gradient with respect to every
 * entry of the flow's parameter vector (grad: P, overwritten; the T entry is
 * 0, as the path fixes T). B <= max_batch. */
cnf_status cnf_fm_loss_grad(const cnf_flow *flow, cnf_fm_work *work, const double *X, size_t B,
                            gsl_rng *rng, double *loss, double *grad);

/* The same for given noise and times, with no drawing and no coupling:
 * row b of X is paired with row b of eps (B x D) at time t[b] in [0, 1].
 * This is the function the gradient is checked on. */
cnf_status cnf_fm_loss_grad_at(const cnf_flow *flow, cnf_fm_work *work, const double *X,
                               const double *eps, const double *t, size_t B, double *loss,
                               double *grad);

/* The draw of cnf_fm_loss_grad alone: eps (B x D, paired with the rows of X
 * as the coupling says) and t (B, stratified as above). For tests and for
 * callers that keep the draw. */
cnf_status cnf_fm_draw(const cnf_flow *flow, cnf_fm_work *work, const double *X, size_t B,
                       gsl_rng *rng, double *eps, double *t);

#ifdef __cplusplus
}
#endif

#endif /* CNF_FM_H */
