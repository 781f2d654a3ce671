/* flow_grad.c — the training objective of maximum likelihood and its
 * gradient (cnf_flow_nll_grad, cnf/flow.h): the mean negative
 * log-likelihood of a batch plus the regularizers' integrals, differentiated
 * by the integral-loss adjoint (cnf/adjoint.h) over the blocks in reverse
 * order. The whole loss is written down here once: its value from the
 * forward state, its terminal cotangent, and the weights of its integrand,
 * which flow_dynamics.c differentiates along the way. */
#include <math.h>
#include <string.h>

#include "flow_impl.h"

/* For a batch of B rows,
 *
 *   loss = Phi(z(T)) + int l dt - log|det|,
 *   Phi  = -(1/B) sum_b log N(z_b(T)),
 *   l    = -(1/B) sum_b div_b + (lambda_K/B) sum_b ||f_b||^2
 *          + (lambda_J/B) sum_b ||J eps_b||^2,
 *
 * whose divergence integral is -(1/B) sum_b q_b and whose regularizer
 * integrals are (rK + rJ)/B in the forward state. A part of the batch
 * (cnf_flow_nll_grad_part) keeps the batch's B in every weight and sums
 * over its own rows only. */
static flow_integrand nll_integrand(const cnf_flow_options *opt, size_t B)
{
    double invB = 1.0 / (double)B;
    flow_integrand l = { -invB, opt->reg_kinetic * invB, opt->reg_jacobian * invB };
    return l;
}

cnf_status cnf_flow_nll_grad(const cnf_flow *flow, cnf_flow_work *w, const double *X, size_t B,
                             gsl_rng *rng, double *nll, double *loss, double *grad,
                             cnf_flow_stats *stats)
{
    return cnf_flow_nll_grad_part(flow, w, X, B, 0, B, rng, nll, loss, grad, stats);
}

cnf_status cnf_flow_nll_grad_part(const cnf_flow *flow, cnf_flow_work *w, const double *X,
                                  size_t B, size_t row0, size_t batch_rows, gsl_rng *rng,
                                  double *nll, double *loss, double *grad,
                                  cnf_flow_stats *stats)
{
    cnf_status s = flow_work_begin_call(flow, w, stats, "cnf_flow_nll_grad");
    if (s != CNF_OK)
        return s;
    if (B == 0 || B > w->max_batch)
        return cnf_error(CNF_EDIM, "gradient batch of %zu rows: must be between 1 and the workspace's max_batch %zu",
                         B, w->max_batch);
    if (row0 > batch_rows || batch_rows - row0 < B)
        return cnf_error(CNF_EDIM, "gradient batch part: rows %zu-%zu are not inside a batch of "
                         "%zu rows", row0, row0 + B - 1, batch_rows);
    s = flow_work_ensure_train(w, flow, B);
    if (s != CNF_OK)
        return s;
    size_t D = w->D, BD = B * D;
    flow_rows rows = { row0, row0, batch_rows - row0 - B };
    s = flow_forward_chunk(flow, w, X, B, rows, FLOW_STATE_TRAIN, rng, stats);
    if (s != CNF_OK)
        return s;

    /* the value: this part's share of the batch mean (all of it for the
     * whole batch, where B / batch_rows is exactly 1) */
    const double *zT = w->zs + w->n_blocks * BD, *q = w->y + BD;
    double invB = 1.0 / (double)batch_rows, snll = 0.0;
    for (size_t b = 0; b < B; b++)
        snll -= flow_log_normal(zT + b * D, D) + q[b];
    double share = (double)B / (double)batch_rows;
    double mean_nll = snll * invB - cnf_flow_preprocess_log_det(flow) * share;
    if (nll)
        *nll = mean_nll;
    if (loss)
        *loss = mean_nll + (w->y[BD + B] + w->y[BD + B + 1]) * invB;

    /* the terminal cotangent dPhi/dz(T), then the blocks in reverse */
    memset(grad, 0, cnf_flow_num_params(flow) * sizeof *grad);
    double *a = w->a;
    for (size_t i = 0; i < BD; i++)
        a[i] = zT[i] * invB;
    flow_integrand l = nll_integrand(&w->opt, batch_rows);
    for (size_t k = w->n_blocks; k-- > 0;) {
        s = flow_block_backward(flow, w, k, B, row0, &l, a, grad + cnf_flow_block_offset(flow, k),
                                &grad[cnf_flow_T_index(flow, k)], stats);
        if (s != CNF_OK)
            return s;
    }
    return CNF_OK;
}
