/* flow.c — the structure of a continuous normalizing flow: K blocks of
 * dynamics networks with their end times, the preprocessing and one
 * parameter vector [theta_0 | ... | theta_{K-1} | T_0 ... T_{K-1}]
 * (DESIGN.md section 1). Evaluation, sampling and gradients live in
 * flow_eval.c and adjoint.c; this file only owns the layout. */
#include "cnf/flow.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct cnf_flow {
    size_t dim;           /* D */
    size_t n_blocks;      /* K */
    cnf_net **nets;       /* K, owned */
    size_t *offset;       /* K + 1: start of theta_k; offset[K] = index of T_0 */
    size_t n_params;      /* P = offset[K] + K */
    double *params;       /* P, owned */
    double *mean;         /* D, owned */
    double *scale;        /* D, owned */
};

cnf_flow *cnf_flow_alloc(size_t dim, size_t n_blocks, const cnf_net_config *nets,
                         const double *T)
{
    if (dim == 0 || n_blocks == 0) {
        cnf_error(CNF_EINVAL, "a flow needs dim >= 1 and at least one block (got dim %zu, %zu blocks)",
                  dim, n_blocks);
        return NULL;
    }
    for (size_t k = 0; k < n_blocks; k++) {
        if (nets[k].dim != dim) {
            cnf_error(CNF_EDIM, "block %zu: network dimension %zu differs from the flow's %zu",
                      k, nets[k].dim, dim);
            return NULL;
        }
        if (!(T[k] > 0.0) || !isfinite(T[k])) {
            cnf_error(CNF_EINVAL, "block %zu: end time T = %g must be positive and finite", k, T[k]);
            return NULL;
        }
    }
    cnf_flow *flow = calloc(1, sizeof *flow);
    if (!flow)
        goto nomem;
    flow->dim = dim;
    flow->n_blocks = n_blocks;
    flow->nets = calloc(n_blocks, sizeof *flow->nets);
    flow->offset = calloc(n_blocks + 1, sizeof *flow->offset);
    if (!flow->nets || !flow->offset)
        goto nomem;
    for (size_t k = 0; k < n_blocks; k++) {
        flow->nets[k] = cnf_net_alloc(&nets[k]);
        if (!flow->nets[k]) {
            cnf_flow_free(flow);   /* keeps the network's own message */
            return NULL;
        }
        flow->offset[k + 1] = flow->offset[k] + cnf_net_num_params(flow->nets[k]);
    }
    flow->n_params = flow->offset[n_blocks] + n_blocks;
    flow->params = calloc(flow->n_params, sizeof *flow->params);
    flow->mean = calloc(dim, sizeof *flow->mean);
    flow->scale = malloc(dim * sizeof *flow->scale);
    if (!flow->params || !flow->mean || !flow->scale)
        goto nomem;
    for (size_t i = 0; i < dim; i++)
        flow->scale[i] = 1.0;
    for (size_t k = 0; k < n_blocks; k++)
        flow->params[flow->offset[n_blocks] + k] = T[k];
    return flow;

nomem:
    cnf_flow_free(flow);
    cnf_error(CNF_ENOMEM, "out of memory allocating a flow of %zu blocks", n_blocks);
    return NULL;
}

void cnf_flow_free(cnf_flow *flow)
{
    if (!flow)
        return;
    if (flow->nets)
        for (size_t k = 0; k < flow->n_blocks; k++)
            cnf_net_free(flow->nets[k]);
    free(flow->nets);
    free(flow->offset);
    free(flow->params);
    free(flow->mean);
    free(flow->scale);
    free(flow);
}

size_t cnf_flow_dim(const cnf_flow *flow) { return flow->dim; }
size_t cnf_flow_num_blocks(const cnf_flow *flow) { return flow->n_blocks; }
const cnf_net *cnf_flow_block_net(const cnf_flow *flow, size_t k) { return flow->nets[k]; }
size_t cnf_flow_num_params(const cnf_flow *flow) { return flow->n_params; }
double *cnf_flow_params(cnf_flow *flow) { return flow->params; }
const double *cnf_flow_params_const(const cnf_flow *flow) { return flow->params; }
size_t cnf_flow_block_offset(const cnf_flow *flow, size_t k) { return flow->offset[k]; }
size_t cnf_flow_T_index(const cnf_flow *flow, size_t k) { return flow->offset[flow->n_blocks] + k; }
double *cnf_flow_mean(cnf_flow *flow) { return flow->mean; }
double *cnf_flow_scale(cnf_flow *flow) { return flow->scale; }
const double *cnf_flow_mean_const(const cnf_flow *flow) { return flow->mean; }
const double *cnf_flow_scale_const(const cnf_flow *flow) { return flow->scale; }

void cnf_flow_init_params(cnf_flow *flow, gsl_rng *rng, int zero_last_layer)
{
    for (size_t k = 0; k < flow->n_blocks; k++)
        cnf_net_init(flow->nets[k], flow->params + flow->offset[k], rng, zero_last_layer);
}

cnf_status cnf_flow_fit_preprocess(cnf_flow *flow, const double *X, size_t N)
{
    const size_t D = flow->dim;
    if (N < 2)
        return cnf_error(CNF_EDATA, "standardisation needs at least 2 rows of data (got %zu)", N);
    for (size_t i = 0; i < D; i++) {
        /* Two passes: the mean first, then the spread about it, which keeps
         * precision for data far from the origin. */
        double sum = 0.0;
        for (size_t n = 0; n < N; n++)
            sum += X[n * D + i];
        double mean = sum / (double)N;
        double ss = 0.0;
        for (size_t n = 0; n < N; n++) {
            double d = X[n * D + i] - mean;
            ss += d * d;
        }
        double sd = sqrt(ss / (double)(N - 1));
        flow->mean[i] = mean;
        flow->scale[i] = (sd > 0.0 && isfinite(sd)) ? sd : 1.0;
    }
    return CNF_OK;
}

void cnf_flow_preprocess_rows(const cnf_flow *flow, const double *X, size_t N, double *Y)
{
    const size_t D = flow->dim;
    for (size_t n = 0; n < N; n++)
        for (size_t i = 0; i < D; i++)
            Y[n * D + i] = (X[n * D + i] - flow->mean[i]) / flow->scale[i];
}

void cnf_flow_unpreprocess_rows(const cnf_flow *flow, const double *Y, size_t N, double *X)
{
    const size_t D = flow->dim;
    for (size_t n = 0; n < N; n++)
        for (size_t i = 0; i < D; i++)
            X[n * D + i] = Y[n * D + i] * flow->scale[i] + flow->mean[i];
}

double cnf_flow_preprocess_log_det(const cnf_flow *flow)
{
    double s = 0.0;
    for (size_t i = 0; i < flow->dim; i++)
        s += log(flow->scale[i]);
    return -s;
}
