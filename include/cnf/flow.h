/* cnf/flow.h — a continuous normalizing flow: preprocessing, K CNF blocks,
 * standard normal base (docs/mathematics.md).
 *
 * A data point x in R^D is preprocessed, x_std = (x - mean) / scale (or
 * whitened, see "Preprocessing" below), and pushed through blocks
 * k = 0..K-1; block k integrates dz/dt = f_k(z, t) over [0, T_k] with f_k a
 * dynamics network (cnf/net.h). Then
 *
 *   log p(x) = log N(z_K; 0, I) + sum_k int_0^{T_k} tr(df_k/dz) dt
 *              + log|dx_std/dx|,
 *
 * log|dx_std/dx| = -sum_i log scale_i when standardising.
 *
 * Parameters. The flow owns one vector of P = sum_k P_k + K doubles:
 *   [ theta_0 | theta_1 | ... | theta_{K-1} | T_0 ... T_{K-1} ]
 * theta_k is block k's network vector (layout in cnf/net.h), followed by the
 * K end times. Gradients and optimizer moments use the same layout.
 *
 * Typical call:
 *
 *     cnf_flow_options opt;
 *     cnf_flow_options_default(&opt);
 *     cnf_flow_work *w = cnf_flow_work_alloc(flow, 1000, &opt);
 *     cnf_flow_log_likelihood(flow, w, X, N, rng, loglik, &stats);
 */
#ifndef CNF_FLOW_H
#define CNF_FLOW_H

#include <stddef.h>

#include <gsl/gsl_rng.h>

#include "cnf/adjoint.h"
#include "cnf/net.h"
#include "cnf/ode.h"
#include "cnf/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cnf_flow cnf_flow;

/* A flow of n_blocks blocks of dimension dim; block k has network nets[k]
 * (nets[k].dim must equal dim) and end time T[k] > 0. Parameters start at
 * zero, mean at 0 and scale at 1 (standardising). NULL on failure (message
 * says why). */
cnf_flow *cnf_flow_alloc(size_t dim, size_t n_blocks, const cnf_net_config *nets,
                         const double *T);
void cnf_flow_free(cnf_flow *flow);                     /* NULL is fine */

size_t cnf_flow_dim(const cnf_flow *flow);               /* D */
size_t cnf_flow_num_blocks(const cnf_flow *flow);        /* K */
const cnf_net *cnf_flow_block_net(const cnf_flow *flow, size_t k);  /* borrowed */

size_t cnf_flow_num_params(const cnf_flow *flow);        /* P */
double *cnf_flow_params(cnf_flow *flow);                 /* P, borrowed */
const double *cnf_flow_params_const(const cnf_flow *flow);
size_t cnf_flow_block_offset(const cnf_flow *flow, size_t k);  /* theta_k start */
size_t cnf_flow_T_index(const cnf_flow *flow, size_t k);       /* index of T_k */

double *cnf_flow_mean(cnf_flow *flow);                   /* D, borrowed */
double *cnf_flow_scale(cnf_flow *flow);                  /* D, borrowed */
const double *cnf_flow_mean_const(const cnf_flow *flow);
const double *cnf_flow_scale_const(const cnf_flow *flow);

/* Initialise every block's network (cnf_net_init) from rng; leaves T. */
void cnf_flow_init_params(cnf_flow *flow, gsl_rng *rng, int zero_last_layer);

/* ---- Preprocessing -----------------------------------------------------
 *
 * Two kinds, stored with the model (cnf/io.h):
 *
 *   standardize  x_std = (x - mean) / scale
 *                log|dx_std/dx| = -sum_i log scale_i
 *   whiten       x_std = L^{-1} ((x - mean) / scale)
 *                log|dx_std/dx| = -sum_i log scale_i - sum_i log L_ii
 *                inverse: x = mean + scale .* (L x_std)
 *
 * mean and scale (D) are the training data's column means and standard
 * deviations (N - 1 normalisation); L (D x D, lower-triangular, positive
 * diagonal) is the Cholesky factor of the standardised data's covariance,
 * the sample correlation matrix with the same N - 1 normalisation:
 * L L^T = corr (corr + r I when a ridge r was needed, below). Whitening
 * makes the density of a flow with zero dynamics the Gaussian with the
 * training data's mean and full covariance
 * (standardising: with its diagonal covariance), so the blocks need to
 * learn only what is not Gaussian. Keeping mean and scale and factoring the
 * correlation rather than the covariance keeps mean and scale meaningful
 * (cnf info, plots) and conditions the factorisation (a unit diagonal).
 * The flow owns L; without one (NULL) it standardises. */
typedef enum { CNF_PREPROCESS_STANDARDIZE = 0, CNF_PREPROCESS_WHITEN } cnf_preprocess;

/* "standardize", "whiten"; from_name gives CNF_EINVAL listing the names. */
const char *cnf_preprocess_name(cnf_preprocess kind);
cnf_status cnf_preprocess_from_name(const char *name, cnf_preprocess *kind);

/* CNF_PREPROCESS_WHITEN if the flow holds a whitening factor L. */
cnf_preprocess cnf_flow_preprocess_kind(const cnf_flow *flow);
/* L (D x D row-major, the part above the diagonal zero; borrowed), or NULL
 * when standardising. */
const double *cnf_flow_whitening_const(const cnf_flow *flow);
/* Copy L (D x D row-major) into the flow, which then whitens with its
 * current mean and scale; NULL goes back to standardising. CNF_EDATA
 * (naming the entry) unless every entry is finite, every entry above the
 * diagonal is 0 and every diagonal entry is positive; the flow is then
 * unchanged. */
cnf_status cnf_flow_set_whitening(cnf_flow *flow, const double *L);

/* Standardise: mean and scale from data X (N x D), column means and
 * standard deviations (a zero deviation becomes 1); drops any whitening
 * factor. CNF_EDATA if X has N < 2. */
cnf_status cnf_flow_fit_preprocess(cnf_flow *flow, const double *X, size_t N);

/* Whiten: mean and scale as cnf_flow_fit_preprocess, then L = chol(corr).
 * A correlation matrix that is not numerically positive definite
 * (collinear or constant columns, N <= D) gets a ridge, corr + r I with the
 * smallest r = 1e-10 * 10^k (k = 0, 1, ...) for which the factorisation
 * succeeds; *ridge (may be NULL) gets r (0 if none). "Succeeds" is decided
 * before factorising, from the smallest eigenvalue of the matrix scaled to
 * a unit diagonal, with Demmel's bound for Cholesky in floating point
 * (Higham, Accuracy and Stability of Numerical Algorithms, Thm 10.7), so
 * GSL's error handler is never invoked for it. CNF_EDATA if N < 2 or the
 * data give a non-finite correlation (NaN or Inf in X); on error the flow
 * is unchanged. O(N D^2 + D^3). */
cnf_status cnf_flow_fit_whitening(cnf_flow *flow, const double *X, size_t N, double *ridge);

/* The preprocessing as a map: X (N x D, data space) -> Y (N x D, the space
 * the blocks see, x_std above), its inverse, and log|det dY/dX| = the
 * constant that every data-space log-likelihood adds. Every evaluation,
 * sampling and training objective goes through these, so that a new
 * preprocessing changes one place. X and Y may not overlap. O(N D) when
 * standardising, O(N D^2) when whitening. */
void cnf_flow_preprocess_rows(const cnf_flow *flow, const double *X, size_t N, double *Y);
void cnf_flow_unpreprocess_rows(const cnf_flow *flow, const double *Y, size_t N, double *X);
double cnf_flow_preprocess_log_det(const cnf_flow *flow);

/* ---- Evaluation, sampling and the likelihood gradient ------------------
 *
 * All functions take data-space points (N x D row-major) and work through
 * them in chunks of at most the work's max_batch rows. Each solve of a chunk
 * draws its Hutchinson noise once from rng (held fixed for the whole solve
 * and for its backward pass); rng may be NULL with the exact divergence.
 * The chunks of a call share the dynamics, so every chunk after the first
 * starts each block's solve with the first step the previous chunk's solve
 * suggested (cnf_ode_solve_warm) rather than the automatic one. A call does
 * not depend on earlier calls; a point's result depends, within the
 * tolerances, on the chunk it falls in, as it does through the chunk's
 * shared step sizes anyway.
 */

typedef struct {
    cnf_ode_options solver;          /* forward solves; default dopri5,
                                        rtol = atol = 1e-5 */
    cnf_adjoint_options adjoint;     /* the gradient's backward solves
                                        (cnf/adjoint.h): adjoint.solver
                                        defaults to the same as solver;
                                        adjoint.backsolve 0 (default): z(t)
                                        on the way back from the forward
                                        solve's checkpoints, 1: integrated
                                        backwards alongside (torchdiffeq);
                                        adjoint.seminorm 1: the parameter
                                        gradient stays out of the backward
                                        error norm (default 0);
                                        adjoint.norm: the backward error
                                        norm, the largest RMS of the groups
                                        a, z, g (default) or one RMS;
                                        adjoint.checkpoints: the forward
                                        checkpoints' interpolation, dopri5's
                                        continuous extension (default) or
                                        cubic Hermite */
    cnf_divergence divergence;       /* default CNF_DIV_EXACT */
    double reg_kinetic;              /* lambda_K of lambda_K ||f||^2, default 0 */
    double reg_jacobian;             /* lambda_J of lambda_J ||J eps||^2, default 0 */
    size_t threads;                  /* threads of every network pass, each on
                                        its share of a chunk's rows
                                        (cnf_net_work_alloc_threads); default 1;
                                        0 counts as 1. With OpenBLAS at one
                                        thread, which is the caller's to set
                                        (cnf/net.h), results depend on it only
                                        through the order of the gradient's
                                        batch sums (about 1e-15 relative). */
    int warm_start;                  /* 1: cnf_flow_nll_grad starts each block's
                                        forward and backward solve with the
                                        first step the same solve of the
                                        previous call on this work suggested
                                        (cnf_ode_solve_warm,
                                        cnf_adjoint_solve_warm) instead of
                                        the automatic one. Successive
                                        training batches have nearly the
                                        same dynamics, so this saves the
                                        probe and most first-step
                                        rejections. The result then depends,
                                        within the tolerances, on the previous
                                        call. Default 0: each call stands
                                        alone, as a gradient check needs;
                                        cnf_train_run turns it on. Only the
                                        gradient's solves use it, and only
                                        when the adaptive methods run. */
    cnf_ode_sum reduce;              /* data parallelism: the sum across the
                                        processes among which every chunk's
                                        (or batch's) rows are split, each
                                        calling the same function on its
                                        contiguous part with the same
                                        options (cnf_flow_nll_grad_part, or
                                        the evaluation calls on its rows of
                                        each chunk). Installed on the forward
                                        solves (the regularizers' integrals
                                        summed, the rows distributed) and on
                                        the adjoints (adjoint.reduce is set
                                        from it, g summed), so that every
                                        process takes the steps one process
                                        takes on the whole chunk, and a
                                        failing solve stops all of them
                                        (cnf_ode_solver_set_reduction).
                                        Default NULL: one process. The
                                        processes' outputs (nll, loss, grad,
                                        per-row values) are theirs to add or
                                        gather. cnf/mpi.h fills it for
                                        MPI. */
    void *reduce_ctx;                /* reduce's ctx (borrowed) */
} cnf_flow_options;

void cnf_flow_options_default(cnf_flow_options *opt);

/* Statistics of the solves of one call, summed over blocks and chunks. */
typedef struct {
    cnf_ode_stats forward;
    cnf_ode_stats backward;
} cnf_flow_stats;

typedef struct cnf_flow_work cnf_flow_work;

/* Workspaces (solvers, network workspaces, checkpoints, noise) for chunks of
 * up to max_batch rows. Options are copied. NULL on failure. With
 * opt->threads > 1 the network workspaces start their threads here;
 * cnf_flow_work_set_options refuses another thread count (CNF_EINVAL).
 * The tangent buffers and network workspaces are sized for the options'
 * divergence (D tangents exact, 1 Hutchinson); after set_options switches
 * to the exact divergence the next call grows them (CNF_ENOMEM if it
 * cannot). The training parts (adjoints, checkpoints, gradient buffers) are
 * allocated by the first cnf_flow_nll_grad. Solves never allocate. A size
 * that overflows size_t is refused (NULL, CNF_EINVAL). Every call refuses a
 * work made for a flow of another D, block count or network size
 * (CNF_EDIM). */
cnf_flow_work *cnf_flow_work_alloc(const cnf_flow *flow, size_t max_batch,
                                   const cnf_flow_options *opt);
void cnf_flow_work_free(cnf_flow_work *work);            /* NULL is fine */
cnf_status cnf_flow_work_set_options(cnf_flow_work *work, const cnf_flow_options *opt);
/* The largest chunk the work was made for. */
size_t cnf_flow_work_max_batch(const cnf_flow_work *work);

/* The first steps warm_start keeps, 2 per block: [forward_0 ..
 * forward_{K-1}, backward_0 .. backward_{K-1}], as sizes; 0 = automatic (a
 * fresh work has only zeros). Returns their count 2K and copies them into
 * hints unless it is NULL. set_step_hints restores them, so that a resumed
 * training run continues bit for bit: n must be 2K (CNF_EDIM), every value
 * finite and >= 0 (CNF_EINVAL); the work is unchanged on error. */
size_t cnf_flow_work_step_hints(const cnf_flow_work *work, double *hints);
cnf_status cnf_flow_work_set_step_hints(cnf_flow_work *work, const double *hints, size_t n);

/* Per-row log-likelihood in data space (loglik: N), including the
 * preprocessing's log|det| (cnf_flow_preprocess_log_det). */
cnf_status cnf_flow_log_likelihood(const cnf_flow *flow, cnf_flow_work *work,
                                   const double *X, size_t N, gsl_rng *rng,
                                   double *loglik, cnf_flow_stats *stats);

/* Data parallelism (with opt.reduce set on every process's work): rows
 * [row0, row0 + n) of a batch or chunk of B rows are the part of process
 * rank of size, the contiguous split the parts' callers use (n returned;
 * row0 may be NULL; 0 for a bad rank or size). */
size_t cnf_flow_part_rows(size_t B, size_t rank, size_t size, size_t *row0);

/* cnf_flow_log_likelihood, as process rank of size: the N rows are cut
 * into chunks of chunk_rows (the last one shorter) as one process whose
 * work has max_batch = chunk_rows cuts them, every chunk is split by
 * cnf_flow_part_rows, and this process solves its part of each, drawing
 * the whole chunk's Hutchinson noise and keeping its rows'. With the
 * work's reduce summing across the processes, every process takes the
 * chunks' steps of one process, so that the values equal one process's up
 * to the order of summation in the error norms. loglik receives this
 * process's rows only, in order: its part of chunk 0, then of chunk 1, ...
 * Every chunk must give every process a row: CNF_EINVAL when chunk_rows or
 * the last chunk has fewer than size rows (the same answer on every
 * process, before any solve); CNF_EDIM when a part exceeds the work's
 * max_batch. */
cnf_status cnf_flow_log_likelihood_part(const cnf_flow *flow, cnf_flow_work *w, const double *X,
                                        size_t N, size_t chunk_rows, size_t rank, size_t size,
                                        gsl_rng *rng, double *loglik, cnf_flow_stats *stats);

/* cnf_flow_decode split the same way: this process's rows of Z (its part of
 * every chunk) into X (those rows x D, in the same order), with the same
 * conditions and return codes. */
cnf_status cnf_flow_decode_part(const cnf_flow *flow, cnf_flow_work *w, const double *Z,
                                size_t N, size_t chunk_rows, size_t rank, size_t size,
                                double *X, cnf_flow_stats *stats);

/* x -> z (preprocess, then blocks 0..K-1 forwards). Z: N x D. */
cnf_status cnf_flow_encode(const cnf_flow *flow, cnf_flow_work *work, const double *X,
                           size_t N, double *Z, cnf_flow_stats *stats);

/* z -> x (blocks K-1..0, each from T_k back to 0, then undo the
 * preprocessing). X: N x D. */
cnf_status cnf_flow_decode(const cnf_flow *flow, cnf_flow_work *work, const double *Z,
                           size_t N, double *X, cnf_flow_stats *stats);

/* Z (N x D) from the base N(0, I), drawn in index order from rng. */
void cnf_flow_draw_latent(gsl_rng *rng, size_t N, size_t D, double *Z);

/* For a minibatch X (B x D, B <= max_batch): the mean negative
 * log-likelihood in data space (*nll), the training loss (*loss = *nll plus
 * the regularizers' integrals) and its gradient with respect to every entry
 * of the flow's parameter vector (grad: P, overwritten; the T_k entries hold
 * dloss/dT_k) by the integral-loss adjoint over the blocks in reverse order.
 * Training and the gradient check share this function. Any of nll, loss,
 * stats may be NULL. Flow matching's loss and gradient, which train the
 * same flow without solving the ODE, are cnf_fm_loss_grad (cnf/fm.h). */
cnf_status cnf_flow_nll_grad(const cnf_flow *flow, cnf_flow_work *work, const double *X,
                             size_t B, gsl_rng *rng, double *nll, double *loss,
                             double *grad, cnf_flow_stats *stats);

/* Data parallelism: a batch of batch_rows rows solved in parts (one per
 * process, say), part by part. For rows [row0, row0 + B) of the batch
 * (X holds those B rows, B <= max_batch), this part's share of the
 * batch's objective: *nll, *loss and grad are the sums over the part's rows
 * of the terms of the batch's means (each divided by batch_rows; the
 * preprocessing constant in proportion B / batch_rows), so that the parts'
 * outputs add up to the whole batch's. Each part draws the whole batch's
 * Hutchinson noise from rng and keeps its rows' share, so every part must
 * be given a generator in the same state, and then sees the noise its rows
 * would see in the whole batch. With the work's reduce summing across the
 * processes that solve the parts (cnf_flow_options.reduce), every part
 * takes the steps of one solve of the whole batch, so the sum equals
 * cnf_flow_nll_grad's up to the order of summation; without it each part
 * chooses its own adaptive steps and the sum agrees within the solver's
 * tolerances (with fixed-step methods, up to rounding).
 * cnf_flow_nll_grad is the part (0, B, B). CNF_EDIM unless the rows lie
 * inside the batch. */
cnf_status cnf_flow_nll_grad_part(const cnf_flow *flow, cnf_flow_work *work, const double *X,
                                  size_t B, size_t row0, size_t batch_rows, gsl_rng *rng,
                                  double *nll, double *loss, double *grad,
                                  cnf_flow_stats *stats);

#ifdef __cplusplus
}
#endif

#endif /* CNF_FLOW_H */
