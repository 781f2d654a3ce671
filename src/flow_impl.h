/* flow_impl.h — private: the parts of the flow module (cnf/flow.h) and the
 * seams between its files.
 *
 *   flow.c          the flow object: blocks, parameter layout, preprocessing
 *   flow_work.c     the workspace: per-block solve state, solver cache,
 *                   growth of the tangent and training buffers, options,
 *                   step hints, the checks every call starts with
 *   flow_dynamics.c the CNF dynamics, the one place where the network meets
 *                   the ODE solver and the adjoint: the augmented right-hand
 *                   side, its vector-Jacobian product, the divergence, and
 *                   the solves of one chunk through the blocks (forwards,
 *                   in reverse, and one block's adjoint)
 *   flow_eval.c     log-likelihood, encode, decode: loops over chunks
 *   flow_grad.c     the mean-NLL objective (its value, its cotangents, the
 *                   weights of its integrand) and its gradient by the
 *                   adjoint over the blocks in reverse order
 *
 * The forward state of a chunk of B rows is y = [z (B x D) | q (B) | rK rJ]
 * with dq_b/dt = div_b, drK/dt = lambda_K sum_b ||f_b||^2 and
 * drJ/dt = lambda_J sum_b ||J eps_b||^2 (the last two only when training).
 * q carries on from block to block, so after the last block
 * log p(x_std) = log N(z) + q. */
#ifndef CNF_FLOW_IMPL_H
#define CNF_FLOW_IMPL_H

#include <stddef.h>

#include <gsl/gsl_rng.h>

#include "cnf/adjoint.h"
#include "cnf/flow.h"
#include "cnf/net.h"
#include "cnf/ode.h"

#define FLOW_SOLVER_SLOTS 6       /* cached forward solvers, keyed by state size */
#define FLOW_FIXED_SOLVER_SLOTS 3 /* the first three (max_batch sizes) are kept */

/* What a forward solve carries besides z: nothing (encode), the
 * log-determinant (log-likelihood), or that and the regularizers
 * (training). */
typedef enum { FLOW_STATE_Z = 0, FLOW_STATE_LOGLIK, FLOW_STATE_TRAIN } flow_state_kind;

/* One block's solve state: what its forward and backward solves keep from
 * solve to solve. */
typedef struct {
    size_t np;                 /* P_k of the flow the work was made for */
    cnf_net_work *nw;          /* network workspace for Kc tangents */
    double *eps;               /* max_batch x D (in the work's eps): the noise
                                  of the block's latest solve, held for its
                                  backward pass */
    double h_fwd, h_bwd;       /* warm first steps of the gradient's forward
                                  and backward solves (warm_start), 0 = none */
    double h_chunk;            /* the first step handed from chunk to chunk
                                  within one evaluation call */
    /* training only (flow_work_ensure_train) */
    cnf_ode_record *rec;       /* the forward checkpoints */
    cnf_adjoint *adj;          /* the backward solve, for batches of adj_B */
} flow_block;

typedef struct {
    size_t n;
    cnf_ode_solver *solver;
} flow_solver_slot;

struct cnf_flow_work {
    size_t D, n_blocks, max_batch;
    cnf_flow_options opt;
    flow_block *blocks;        /* n_blocks */
    size_t kt;                 /* tangent capacity Kc of the network
                                  workspaces, jv, jvbar, jvbar0: D (exact) or
                                  1 (Hutchinson), grown on demand */
    double *y;                 /* max_batch*(D+1) + 2: forward state */
    double *zs;                /* (n_blocks+1) x B x D: block inputs/outputs */
    double *eps;               /* n_blocks x max_batch x D: the blocks' noise */
    double *jv;                /* Kc x max_batch x D */
    double *sq;                /* max_batch */
    flow_solver_slot slots[FLOW_SOLVER_SLOTS];
    size_t next_slot;
    /* training only, allocated by the first cnf_flow_nll_grad */
    int train;
    double *fbuf;              /* max_batch x D */
    double *fbar;              /* max_batch x D */
    double *jvbar;             /* Kc x max_batch x D */
    double *jvbar0;            /* Kc x max_batch x D */
    double *a;                 /* max_batch x D: adjoint handed between blocks */
    size_t rec_n;              /* state length of the blocks' records */
    size_t adj_B;              /* batch the blocks' adjoints were made for */
};

/* ---- flow_work.c ---- */

/* Tangent directions the work's divergence needs: D or 1. */
size_t flow_work_tangents(const cnf_flow_work *w);
/* Length of a forward state of B rows of the given kind. */
size_t flow_state_size(flow_state_kind kind, size_t B, size_t D);
/* The forward solver for a state of n, from the cache (allocating only when
 * a new size turns up); NULL with a message on failure. */
cnf_ode_solver *flow_work_solver(cnf_flow_work *w, size_t n);
/* What every entry point does first: check that the work fits the flow and
 * the end times are valid, grow the tangent buffers if the options now need
 * more, bind the parameters, start the chunk hints cold; stats zeroed. */
cnf_status flow_work_begin_call(const cnf_flow *flow, cnf_flow_work *w, cnf_flow_stats *stats,
                                const char *what);
/* The training parts for batches of B rows (gradient buffers, checkpoints,
 * adjoints, the training state's solver), so that no solve allocates. */
cnf_status flow_work_ensure_train(cnf_flow_work *w, const cnf_flow *flow, size_t B);

/* ---- flow_eval.c ---- */

/* log N(z; 0, I) of one row of D. */
double flow_log_normal(const double *z, size_t D);

/* ---- flow_dynamics.c ---- */

/* Where a chunk's B rows sit: rows row0 .. row0 + B - 1 of the call or the
 * batch (for messages); and, for a part of a larger batch
 * (cnf_flow_nll_grad_part), the batch's rows before and after it, whose
 * Hutchinson noise is drawn and discarded so that the part sees the noise
 * of its rows in the whole batch. */
typedef struct {
    size_t row0, rows_before, rows_after;
} flow_rows;

/* The weights of the integral loss l = w_div sum_b div_b
 * + w_kin sum_b ||f_b||^2 + w_jac sum_b ||J eps_b||^2 that a backward solve
 * differentiates (flow_grad.c chooses them). */
typedef struct {
    double w_div, w_kin, w_jac;
} flow_integrand;

/* Forward through every block for one chunk X (B x D, data space) placed
 * as rows says. On success w->zs holds the block
 * boundaries (zs[k] = input of block k) and w->y the final augmented state
 * of the given kind; training solves fill the blocks' records when
 * checkpointing and keep their warm first steps when warm_start is on,
 * evaluation solves hand first steps from chunk to chunk. */
cnf_status flow_forward_chunk(const cnf_flow *flow, cnf_flow_work *w, const double *X, size_t B,
                              flow_rows rows, flow_state_kind kind, gsl_rng *rng,
                              cnf_flow_stats *stats);
/* In reverse through every block (K-1..0, T_k down to 0) for the chunk
 * whose base-space rows are in w->y (B x D); leaves the result in w->y. */
cnf_status flow_reverse_chunk(const cnf_flow *flow, cnf_flow_work *w, size_t B, size_t row0,
                              cnf_flow_stats *stats);
/* Block k's backward pass for the training batch of B rows just solved
 * forwards (flow_forward_chunk with FLOW_STATE_TRAIN): a (B x D) holds
 * dL/dz at the block's output on entry and at its input on return; grad_k
 * (P_k) receives dL/dtheta_k and *dT dL/dT_k. */
cnf_status flow_block_backward(const cnf_flow *flow, cnf_flow_work *w, size_t k, size_t B,
                               size_t row0, const flow_integrand *l, double *a, double *grad_k,
                               double *dT, cnf_flow_stats *stats);

#endif
