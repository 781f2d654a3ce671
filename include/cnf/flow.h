/* cnf/flow.h — a continuous normalizing flow: preprocessing, K CNF blocks,
 * standard normal base (DESIGN.md section 1).
 *
 * A data point x in R^D is standardised, x_std = (x - mean) / scale, and
 * pushed through blocks k = 0..K-1; block k integrates dz/dt = f_k(z, t) over
 * [0, T_k] with f_k a dynamics network (cnf/net.h). Then
 *
 *   log p(x) = log N(z_K; 0, I) + sum_k int_0^{T_k} tr(df_k/dz) dt
 *              - sum_i log scale_i.
 *
 * Parameters. The flow owns one vector of P = sum_k P_k + K doubles:
 *   [ theta_0 | theta_1 | ... | theta_{K-1} | T_0 ... T_{K-1} ]
 * theta_k is block k's network vector (layout in cnf/net.h), followed by the
 * K end times. Gradients and optimizer moments use the same layout.
 *
 * This part of the header is the flow's structure; evaluation, sampling and
 * the adjoint gradient follow below it.
 */
#ifndef CNF_FLOW_H
#define CNF_FLOW_H

#include <stddef.h>

#include <gsl/gsl_rng.h>

#include "cnf/net.h"
#include "cnf/ode.h"
#include "cnf/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cnf_flow cnf_flow;

/* A flow of n_blocks blocks of dimension dim; block k has network nets[k]
 * (nets[k].dim must equal dim) and end time T[k] > 0. Parameters start at
 * zero, mean at 0 and scale at 1. NULL on failure (message says why). */
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

/* Set mean and scale from data X (N x D): column means and standard
 * deviations (a zero deviation becomes 1). CNF_EDATA if X has N < 2. */
cnf_status cnf_flow_fit_preprocess(cnf_flow *flow, const double *X, size_t N);

#ifdef __cplusplus
}
#endif

#endif /* CNF_FLOW_H */
