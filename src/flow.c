/* flow.c — the structure of a continuous normalizing flow: K blocks of
 * dynamics networks with their end times, the preprocessing and one
 * parameter vector [theta_0 | ... | theta_{K-1} | T_0 ... T_{K-1}]
 * (docs/mathematics.md). Evaluation, sampling and gradients live in the
 * files flow_impl.h lists; this file owns the layout and the
 * preprocessing map (standardise or whiten, cnf/flow.h). */
#include "cnf/flow.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <gsl/gsl_eigen.h>
#include <gsl/gsl_linalg.h>

#include "cnf/size.h"
#include "names.h"

struct cnf_flow {
    size_t dim;           /* D */
    size_t n_blocks;      /* K */
    cnf_net **nets;       /* K, owned */
    size_t *offset;       /* K + 1: start of theta_k; offset[K] = index of T_0 */
    size_t n_params;      /* P = offset[K] + K */
    double *params;       /* P, owned */
    double *mean;         /* D, owned */
    double *scale;        /* D, owned */
    double *chol;         /* D x D lower-triangular whitening factor L, owned;
                             NULL = standardise */
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
        if (cnf_size_add(flow->offset[k], cnf_net_num_params(flow->nets[k]),
                         &flow->offset[k + 1]))
            goto nomem;
    }
    if (cnf_size_add(flow->offset[n_blocks], n_blocks, &flow->n_params))
        goto nomem;
    flow->params = calloc(flow->n_params, sizeof *flow->params);
    flow->mean = calloc(dim, sizeof *flow->mean);
    flow->scale = calloc(dim, sizeof *flow->scale);
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
    free(flow->chol);
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

static const char *const preprocess_names[] = {"standardize", "whiten"};

CNF_ENUM_NAMES(cnf_preprocess, cnf_preprocess_name, cnf_preprocess_from_name, "preprocessing",
               preprocess_names)

cnf_preprocess cnf_flow_preprocess_kind(const cnf_flow *flow)
{
    return flow->chol ? CNF_PREPROCESS_WHITEN : CNF_PREPROCESS_STANDARDIZE;
}

const double *cnf_flow_whitening_const(const cnf_flow *flow) { return flow->chol; }

cnf_status cnf_flow_set_whitening(cnf_flow *flow, const double *L)
{
    const size_t D = flow->dim;
    if (!L) {
        free(flow->chol);
        flow->chol = NULL;
        return CNF_OK;
    }
    for (size_t i = 0; i < D; i++)
        for (size_t j = 0; j < D; j++) {
            double v = L[i * D + j];
            if (!isfinite(v))
                return cnf_error(CNF_EDATA, "whitening factor L entry (%zu, %zu) is %g; L must "
                                 "be finite", i, j, v);
            if (j > i && v != 0.0)
                return cnf_error(CNF_EDATA, "whitening factor L entry (%zu, %zu) is %g, above the "
                                 "diagonal; L must be lower-triangular", i, j, v);
            if (j == i && !(v > 0.0))
                return cnf_error(CNF_EDATA, "whitening factor L diagonal entry (%zu, %zu) is %g; "
                                 "it must be positive", i, j, v);
        }
    size_t bytes;
    if (cnf_size_mul3(D, D, sizeof *flow->chol, &bytes))
        return cnf_error(CNF_ENOMEM, "a %zu x %zu whitening factor does not fit in memory", D, D);
    if (!flow->chol) {
        flow->chol = malloc(bytes);
        if (!flow->chol)
            return cnf_error(CNF_ENOMEM, "out of memory for a %zu x %zu whitening factor", D, D);
    }
    memcpy(flow->chol, L, bytes);
    return CNF_OK;
}

/* Column means and standard deviations of X (N x D, N >= 2) into mean and
 * scale (D); a zero or non-finite deviation becomes 1. */
static void fit_standardisation(const double *X, size_t N, size_t D, double *mean_out,
                                double *scale_out)
{
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
        mean_out[i] = mean;
        scale_out[i] = (sd > 0.0 && isfinite(sd)) ? sd : 1.0;
    }
}

cnf_status cnf_flow_fit_preprocess(cnf_flow *flow, const double *X, size_t N)
{
    if (N < 2)
        return cnf_error(CNF_EDATA, "standardisation needs at least 2 rows of data (got %zu)", N);
    fit_standardisation(X, N, flow->dim, flow->mean, flow->scale);
    free(flow->chol);
    flow->chol = NULL;
    return CNF_OK;
}

/* Whether Cholesky of A = C + r I (C: D x D symmetric, lower triangle read)
 * is certain to succeed in floating point, whatever the order of its sums
 * (GSL's recursive blocked variant, OpenBLAS kernels). Demmel's bound
 * (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed.,
 * Thm 10.7): with H = S A S, S = diag(A)^{-1/2}, the factorisation runs to
 * completion when lambda_min(H) > D g / (1 - D g), g = gamma_{D+1} =
 * (D+1) u / (1 - (D+1) u). We ask for twice that, the second half covering
 * the error of the computed eigenvalue (backward stable: O(D u ||H||)).
 * H and eval are D x D and D scratch. */
static int cholesky_certain(const double *C, double r, size_t D, double *H, double *eval,
                            gsl_eigen_symm_workspace *ws)
{
    for (size_t i = 0; i < D; i++)
        if (!(C[i * D + i] + r > 0.0))
            return 0;
    for (size_t i = 0; i < D; i++)
        for (size_t j = 0; j <= i; j++)
            H[i * D + j] = (C[i * D + j] + (i == j ? r : 0.0))
                           / sqrt((C[i * D + i] + r) * (C[j * D + j] + r));
    gsl_matrix_view Hv = gsl_matrix_view_array(H, D, D);
    gsl_vector_view ev = gsl_vector_view_array(eval, D);
    /* sizes agree, so no error path of GSL's; finite input (checked by the
     * caller), so the QR iteration converges */
    if (gsl_eigen_symm(&Hv.matrix, &ev.vector, ws) != GSL_SUCCESS)
        return 0;
    double lmin = eval[0];
    for (size_t i = 1; i < D; i++)
        lmin = fmin(lmin, eval[i]);
    const double u = DBL_EPSILON / 2.0, n = (double)D;
    double g = (n + 1.0) * u / (1.0 - (n + 1.0) * u);
    return lmin > 2.0 * n * g / (1.0 - n * g);
}

cnf_status cnf_flow_fit_whitening(cnf_flow *flow, const double *X, size_t N, double *ridge)
{
    const size_t D = flow->dim;
    if (N < 2)
        return cnf_error(CNF_EDATA, "whitening needs at least 2 rows of data (got %zu)", N);
    /* mean, scale, z (D each); C, H, L (D x D each) */
    size_t dd, count, bytes;   /* 3 (D + D^2) doubles */
    double *buf = cnf_size_mul(D, D, &dd) || cnf_size_add(D, dd, &count)
                          || cnf_size_mul3(count, 3, sizeof *buf, &bytes)
                      ? NULL
                      : malloc(bytes);
    gsl_eigen_symm_workspace *ws = buf ? gsl_eigen_symm_alloc(D) : NULL;
    if (!ws) {
        free(buf);
        return cnf_error(CNF_ENOMEM, "out of memory whitening %zu dimensions", D);
    }
    double *mean = buf, *scale = mean + D, *z = scale + D;
    double *C = z + D, *H = C + D * D, *L = H + D * D;
    fit_standardisation(X, N, D, mean, scale);

    /* C = the covariance of the standardised rows (lower triangle), the
     * sample correlation with the N - 1 of the scales */
    memset(C, 0, D * D * sizeof *C);
    for (size_t n = 0; n < N; n++) {
        for (size_t i = 0; i < D; i++)
            z[i] = (X[n * D + i] - mean[i]) / scale[i];
        for (size_t i = 0; i < D; i++)
            for (size_t j = 0; j <= i; j++)
                C[i * D + j] += z[i] * z[j];
    }
    cnf_status s = CNF_OK;
    for (size_t i = 0; i < D && s == CNF_OK; i++)
        for (size_t j = 0; j <= i && s == CNF_OK; j++) {
            C[i * D + j] /= (double)(N - 1);
            if (!isfinite(C[i * D + j]))
                s = cnf_error(CNF_EDATA, "whitening: the correlation of columns %zu and %zu is "
                              "%g (NaN or Inf in the data?)", j, i, C[i * D + j]);
        }

    /* gsl_linalg_cholesky_decomp1 reports a matrix that is not positive
     * definite through GSL_ERROR, whose default handler aborts the program,
     * and a library must not switch the process-wide handler off (README,
     * "The library"). So each ridge is first certified to factorise
     * (cholesky_certain) and GSL is called only then; should it still
     * refuse (possible only with the handler off), the next ridge is
     * tried. corr + I is always certain, so the ladder ends at r = 1. */
    double r = 0.0;
    int done = 0;
    for (int k = -1; s == CNF_OK && !done && k <= 10; k++) {
        r = k < 0 ? 0.0 : 1e-10 * pow(10.0, (double)k);
        if (!cholesky_certain(C, r, D, H, z, ws))
            continue;
        for (size_t i = 0; i < D; i++)
            for (size_t j = 0; j <= i; j++)
                L[i * D + j] = C[i * D + j] + (i == j ? r : 0.0);
        gsl_matrix_view Lv = gsl_matrix_view_array(L, D, D);
        done = gsl_linalg_cholesky_decomp1(&Lv.matrix) == GSL_SUCCESS;
    }
    if (s == CNF_OK && !done)
        s = cnf_error(CNF_EDATA, "whitening: the correlation matrix cannot be factorised even "
                      "with a ridge of %g", r);
    if (s == CNF_OK) {
        for (size_t i = 0; i < D; i++)   /* decomp1 leaves A in the upper part */
            for (size_t j = i + 1; j < D; j++)
                L[i * D + j] = 0.0;
        s = cnf_flow_set_whitening(flow, L);
    }
    if (s == CNF_OK) {
        memcpy(flow->mean, mean, D * sizeof *mean);
        memcpy(flow->scale, scale, D * sizeof *scale);
        if (ridge)
            *ridge = r;
    }
    gsl_eigen_symm_free(ws);
    free(buf);
    return s;
}

void cnf_flow_preprocess_rows(const cnf_flow *flow, const double *X, size_t N, double *Y)
{
    const size_t D = flow->dim;
    for (size_t n = 0; n < N; n++)
        for (size_t i = 0; i < D; i++)
            Y[n * D + i] = (X[n * D + i] - flow->mean[i]) / flow->scale[i];
    const double *L = flow->chol;
    if (!L)
        return;
    /* y = L^{-1} y by forward substitution, row by row: a row's result does
     * not depend on the rows beside it (chunking) or on the BLAS */
    for (size_t n = 0; n < N; n++) {
        double *y = Y + n * D;
        for (size_t i = 0; i < D; i++) {
            double v = y[i];
            for (size_t j = 0; j < i; j++)
                v -= L[i * D + j] * y[j];
            y[i] = v / L[i * D + i];
        }
    }
}

void cnf_flow_unpreprocess_rows(const cnf_flow *flow, const double *Y, size_t N, double *X)
{
    const size_t D = flow->dim;
    const double *L = flow->chol;
    if (!L) {
        for (size_t n = 0; n < N; n++)
            for (size_t i = 0; i < D; i++)
                X[n * D + i] = Y[n * D + i] * flow->scale[i] + flow->mean[i];
        return;
    }
    for (size_t n = 0; n < N; n++) {
        const double *y = Y + n * D;
        for (size_t i = 0; i < D; i++) {
            double v = 0.0;
            for (size_t j = 0; j <= i; j++)
                v += L[i * D + j] * y[j];
            X[n * D + i] = v * flow->scale[i] + flow->mean[i];
        }
    }
}

double cnf_flow_preprocess_log_det(const cnf_flow *flow)
{
    double s = 0.0;
    for (size_t i = 0; i < flow->dim; i++)
        s += log(flow->scale[i]);
    if (flow->chol)
        for (size_t i = 0; i < flow->dim; i++)
            s += log(flow->chol[i * flow->dim + i]);
    return -s;
}
