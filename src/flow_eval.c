/* flow_eval.c — evaluating a flow (cnf/flow.h): per-row log-likelihood,
 * encode (x -> z) and decode (z -> x, sampling), each a loop over chunks of
 * at most max_batch rows through the solves of flow_dynamics.c. */
#include <math.h>
#include <string.h>

#include <gsl/gsl_randist.h>

#include "flow_impl.h"

typedef enum { EVAL_LOGLIK, EVAL_ENCODE, EVAL_DECODE } eval_kind;

double flow_log_normal(const double *z, size_t D)
{
    double s = 0.0;
    for (size_t i = 0; i < D; i++)
        s += z[i] * z[i];
    return -0.5 * s - 0.5 * (double)D * log(2.0 * 3.14159265358979323846);
}

/* One chunk of B rows, in (B x D) -> out (B rows of the kind's output). */
static cnf_status eval_chunk(const cnf_flow *flow, cnf_flow_work *w, eval_kind kind,
                             const double *in, size_t B, flow_rows rows, gsl_rng *rng,
                             double *out, cnf_flow_stats *stats)
{
    size_t D = w->D, row0 = rows.row0;
    cnf_status s;
    switch (kind) {
    case EVAL_LOGLIK: {
        s = flow_forward_chunk(flow, w, in, B, rows, FLOW_STATE_LOGLIK, rng, stats);
        if (s != CNF_OK)
            return s;
        double log_det = cnf_flow_preprocess_log_det(flow);
        const double *z = w->y, *q = w->y + B * D;
        for (size_t b = 0; b < B; b++)
            out[b] = flow_log_normal(z + b * D, D) + q[b] + log_det;
        return CNF_OK;
    }
    case EVAL_ENCODE:
        s = flow_forward_chunk(flow, w, in, B, rows, FLOW_STATE_Z, NULL, stats);
        if (s == CNF_OK)
            memcpy(out, w->y, B * D * sizeof *out);
        return s;
    default:
        memcpy(w->y, in, B * D * sizeof *w->y);
        s = flow_reverse_chunk(flow, w, B, row0, stats);
        if (s == CNF_OK)
            cnf_flow_unpreprocess_rows(flow, w->y, B, out);
        return s;
    }
}

size_t cnf_flow_part_rows(size_t B, size_t rank, size_t size, size_t *row0)
{
    if (size == 0 || rank >= size) {
        if (row0)
            *row0 = 0;
        return 0;
    }
    /* rank * B fits: B is a row count held in memory, size a process count */
    size_t b0 = rank * B / size, b1 = (rank + 1) * B / size;
    if (row0)
        *row0 = b0;
    return b1 - b0;
}

/* eval_rows as process rank of size: its part of every chunk of
 * chunk_rows, the outputs of its rows one after the other. */
static cnf_status eval_rows_part(const cnf_flow *flow, cnf_flow_work *w, eval_kind kind,
                                 const double *in, size_t N, size_t chunk_rows, size_t rank,
                                 size_t size, gsl_rng *rng, double *out, cnf_flow_stats *stats,
                                 const char *what)
{
    cnf_status s = flow_work_begin_call(flow, w, stats, what);
    if (s != CNF_OK)
        return s;
    if (size == 0 || rank >= size)
        return cnf_error(CNF_EINVAL, "%s: process %zu of %zu", what, rank, size);
    if (chunk_rows < size || (N % chunk_rows != 0 && N % chunk_rows < size))
        return cnf_error(CNF_EINVAL, "%s: %zu rows in chunks of %zu leave a chunk of fewer rows "
                         "than the %zu processes (every process needs a row of every chunk)",
                         what, N, chunk_rows, size);
    size_t part_max = cnf_flow_part_rows(chunk_rows, size - 1, size, NULL);
    if (cnf_flow_part_rows(chunk_rows, 0, size, NULL) > part_max)
        part_max = cnf_flow_part_rows(chunk_rows, 0, size, NULL);
    if (part_max > w->max_batch)
        return cnf_error(CNF_EDIM, "%s: a part of %zu rows exceeds the workspace's max_batch %zu",
                         what, part_max, w->max_batch);
    size_t D = w->D, done = 0, out_width = kind == EVAL_LOGLIK ? 1 : D;
    for (size_t c0 = 0; s == CNF_OK && c0 < N;) {
        size_t cb = N - c0 < chunk_rows ? N - c0 : chunk_rows, b0;
        size_t B = cnf_flow_part_rows(cb, rank, size, &b0);
        flow_rows rows = { c0 + b0, b0, cb - b0 - B };
        s = eval_chunk(flow, w, kind, in + (c0 + b0) * D, B, rows, rng,
                       out + done * out_width, stats);
        done += B;
        c0 += cb;
    }
    return s;
}

/* The whole call as one process: chunks of max_batch rows. */
static cnf_status eval_rows(const cnf_flow *flow, cnf_flow_work *w, eval_kind kind,
                            const double *in, size_t N, gsl_rng *rng, double *out,
                            cnf_flow_stats *stats, const char *what)
{
    return eval_rows_part(flow, w, kind, in, N, w->max_batch, 0, 1, rng, out, stats, what);
}

cnf_status cnf_flow_log_likelihood_part(const cnf_flow *flow, cnf_flow_work *w, const double *X,
                                        size_t N, size_t chunk_rows, size_t rank, size_t size,
                                        gsl_rng *rng, double *loglik, cnf_flow_stats *stats)
{
    return eval_rows_part(flow, w, EVAL_LOGLIK, X, N, chunk_rows, rank, size, rng, loglik,
                          stats, "cnf_flow_log_likelihood_part");
}

cnf_status cnf_flow_decode_part(const cnf_flow *flow, cnf_flow_work *w, const double *Z,
                                size_t N, size_t chunk_rows, size_t rank, size_t size,
                                double *X, cnf_flow_stats *stats)
{
    return eval_rows_part(flow, w, EVAL_DECODE, Z, N, chunk_rows, rank, size, NULL, X, stats,
                          "cnf_flow_decode_part");
}

cnf_status cnf_flow_log_likelihood(const cnf_flow *flow, cnf_flow_work *w, const double *X,
                                   size_t N, gsl_rng *rng, double *loglik, cnf_flow_stats *stats)
{
    return eval_rows(flow, w, EVAL_LOGLIK, X, N, rng, loglik, stats, "cnf_flow_log_likelihood");
}

cnf_status cnf_flow_encode(const cnf_flow *flow, cnf_flow_work *w, const double *X, size_t N,
                           double *Z, cnf_flow_stats *stats)
{
    return eval_rows(flow, w, EVAL_ENCODE, X, N, NULL, Z, stats, "cnf_flow_encode");
}

cnf_status cnf_flow_decode(const cnf_flow *flow, cnf_flow_work *w, const double *Z, size_t N,
                           double *X, cnf_flow_stats *stats)
{
    return eval_rows(flow, w, EVAL_DECODE, Z, N, NULL, X, stats, "cnf_flow_decode");
}

void cnf_flow_draw_latent(gsl_rng *rng, size_t N, size_t D, double *Z)
{
    for (size_t i = 0; i < N * D; i++)
        Z[i] = gsl_ran_gaussian(rng, 1.0);
}
