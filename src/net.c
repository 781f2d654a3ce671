/* net.c — the dynamics network f(z, t; theta): architecture, parameter
 * layout, initialisation, the batched forward pass with forward-mode
 * tangents, and one reverse sweep through both.
 *
 * Method. The MLP is FFJORD's (Grathwohl et al. 2019, "FFJORD: Free-form
 * continuous dynamics for scalable reversible generative models", layers
 * ConcatSquashLinear / ConcatLinear / IgnoreLinear of its diffeq_layers.py).
 * Derivatives are written by hand: the tangents J v_k are pushed forward
 * beside the values (forward mode, Griewank & Walther, "Evaluating
 * Derivatives", 2nd ed., ch. 3), and the reverse sweep is the adjoint of that
 * combined value-and-tangent computation (ch. 4). So one sweep gives the
 * gradient of any linear functional of f and J v, in particular of the
 * divergence, a second derivative of f.
 *
 * Layer j with input h (B x in), tangents dh_k (B x in), gate s and shift c
 * (out; s = 1, c = 0 unless concatsquash):
 *     u    = W h + beta         beta = b, or b + t W[:, in] for concat
 *     y    = u .* s + c         (concatsquash: s = logistic(g_w t + g_b), c = c_w t)
 *     du_k = W dh_k,  dy_k = du_k .* s
 *     hidden: h' = sigma(y), dh'_k = sigma'(y) .* dy_k
 * Values and tangents multiply the same W, so they are stacked into one
 * ((K+1)B x in) matrix, rows [h ; dh_1 ; ... ; dh_K], and one dgemm per layer
 * computes [u ; du_k]. With the unit directions the first layer's tangents
 * W e_k are W's columns: no product is needed for them.
 *
 * Reverse sweep for S = sum(fbar.f) + sum(jvbar.jv), with ybar, dybar_k the
 * cotangents of y, dy_k, going back through a hidden activation:
 *     dybar_k = sigma'(y) .* dhbar'_k
 *     ybar    = sigma'(y) .* hbar' + sum_k sigma''(y) .* dy_k .* dhbar'_k
 * and through the gated affine map (ubar = ybar .* s, dubar_k = dybar_k .* s):
 *     Wbar += [ubar ; dubar_k]^T [h ; dh_k]      (one dgemm)
 *     [hbar ; dhbar_k] = [ubar ; dubar_k] W       (one dgemm)
 *     bbar += sum_b ubar,   c_w bar += t sum_b ybar,
 *     gbar = s(1-s) .* sum over value AND tangent rows of (ybar .* u, dybar_k .* du_k),
 *     g_w bar += t gbar,  g_b bar += gbar,  tbar += g_w.gbar + c_w.sum_b ybar
 *     (concat: W[:, in] bar += t sum_b ybar, tbar += W[:, in].sum_b ybar).
 * The forward pass caches the stacked inputs, the products W h and W dh_k
 * (with beta, u for the gate gradient), sigma' and, when there are tangents,
 * sigma'' (each activation is evaluated once per forward pass). Without
 * tangent cotangents (jvbar = NULL) the sweep skips the tangent rows, which
 * stay zero.
 *
 * Speed: the element-wise work runs in block kernels that GCC vectorises
 * (restrict, out of line), with the activations of net_act.h instead of
 * scalar libm calls; at B = 1000 a 64-wide tanh layer otherwise costs more
 * than its dgemm. The products run in row blocks that OpenBLAS takes
 * through its small-matrix kernels (see row_gemm).
 *
 * Threads: the network is independent per sample, so a workspace made for
 * n threads (cnf_net_work_alloc_threads) gives each thread a contiguous
 * share of the B rows and its own caches (net_part); a persistent pool
 * (pool.c) runs the shares. Only the parameter and time gradients sum over
 * samples: part 0 adds into the caller's, the others into private sums,
 * which are then added in part order (split over the threads by entry).
 * So a given thread count gives the same bits every run, and one thread is
 * exactly the single-threaded code.
 */
#include "cnf/net.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "cnf/size.h"
#include "net_act.h"
#include "pool.h"

#define MAX_LAYERS (CNF_NET_MAX_HIDDEN + 1)
/* Widths beyond this are surely a typo; it also keeps every size product
 * far from overflow and every dgemm dimension within an int. */
#define MAX_WIDTH ((size_t)1 << 20)

struct cnf_net {
    cnf_net_config cfg;
    size_t n_layers;                      /* L */
    size_t n_params;                      /* P */
    size_t width[MAX_LAYERS + 1];         /* n_0 = D, hidden..., n_L = D */
    cnf_net_layer view[MAX_LAYERS];
};

/* The workspace of one thread: the forward caches and reverse-sweep buffers
 * for its rows of the batch. */
typedef struct {
    size_t width[MAX_LAYERS + 1];

    /* The last forward pass on these rows. */
    size_t B, K;               /* rows of this part, tangents */
    int unit;                  /* directions were the unit vectors (v == NULL) */
    double t;
    int per_row;               /* the pass had one time per row (cnf_net_forward_rows) */
    double *trow;              /* max_batch: those times */

    /* Stacked rows: values at rows 0..B-1, tangent k at rows (k+1)B..(k+2)B-1. */
    double *X[MAX_LAYERS];     /* layer j input, (K+1)B x n_j (unit: row 0 only for j = 0) */
    double *U[MAX_LAYERS];     /* W h and W dh_k, (K+1)B x n_{j+1} (unit, j = 0: values
                                  only); u = W h + beta */
    double *S1[MAX_LAYERS];    /* sigma'(y), B x n_{j+1}, hidden layers */
    double *S2[MAX_LAYERS];    /* sigma''(y), B x n_{j+1}, hidden layers, filled only if K > 0;
                                  NULL for tanh (whose sigma'' = -2 h sigma' comes from X[j+1]) */
    double *beta[MAX_LAYERS];  /* beta, n_{j+1} */
    double *gate[MAX_LAYERS];  /* s, n_{j+1} */
    double *shift[MAX_LAYERS]; /* c, n_{j+1} */
    double *WT[MAX_LAYERS];    /* the work's transposed weights (shared, read only) */

    /* Reverse sweep. */
    double *cot[2];            /* cotangents, (K+1)B x max width, ping-pong */
    double *colsum;            /* sum_b ybar, max width */
    double *gatesum;           /* sum of ybar.u over all rows, max width */
    double *tmp;               /* max width */
    double *tsum;              /* max width: sum_b t_b ybar_b (one time per row) */
    double *thetabar;          /* P: this part's private dS/dtheta (parts 1.. of a
                                  threaded workspace), NULL otherwise; zero between
                                  calls (the reduction clears what it takes) */
    double tbar;               /* this part's private dS/dt (likewise) */

    double *mem;               /* the one allocation behind every array above */
} net_part;

/* What the pool's threads run: one forward pass or reverse sweep, each
 * thread on its contiguous share of the B rows. */
typedef struct {
    const cnf_net *net;
    cnf_net_work *w;
    const double *theta;
    double t;
    const double *trow;        /* B per-row times, or NULL for t */
    const double *z, *v;
    double *f, *jv;
    const double *fbar, *jvbar;
    double *zbar, *thetabar, *tbar;
    size_t B, K;
    int backward;              /* 0 forward, 1 reverse sweep, 2 gradient reduction */
} net_job;

struct cnf_net_work {
    size_t n_layers;
    size_t width[MAX_LAYERS + 1];
    size_t max_batch, max_tangents;
    size_t n_threads;
    net_part *part[CNF_NET_MAX_THREADS];   /* n_threads; part i takes rows
                                              [B i / n, B (i+1) / n) */
    cnf_pool *pool;            /* NULL with one thread */
    double *WT[MAX_LAYERS];    /* W^T without a concat time column, n_j x n_{j+1}: the
                                  forward products run as X WT (see row_gemm); with the
                                  unit directions, du_k = W e_k is row k of WT[0] */
    double *wt_mem;            /* the one allocation behind WT */
    const double *bound;       /* the theta whose W^T is in WT (cnf_net_work_bind) */
    int ready;
    size_t B;                  /* batch of the last forward pass */
    net_job job;
};

/* ---------------------------------------------------------------- config */

void cnf_net_config_default(cnf_net_config *cfg, size_t dim)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->dim = dim;
    cfg->n_hidden = 3;
    cfg->hidden[0] = cfg->hidden[1] = cfg->hidden[2] = 64;
    cfg->layer_type = CNF_LAYER_CONCATSQUASH;
    cfg->activation = CNF_ACT_TANH;
}

static cnf_status check_config(const cnf_net_config *cfg)
{
    if (!cfg)
        return cnf_error(CNF_EINVAL, "network configuration is NULL");
    if (cfg->dim < 1 || cfg->dim > MAX_WIDTH)
        return cnf_error(CNF_EINVAL, "network dim %zu is out of range (1..%zu)", cfg->dim,
                         MAX_WIDTH);
    if (cfg->n_hidden > CNF_NET_MAX_HIDDEN)
        return cnf_error(CNF_EINVAL, "network has %zu hidden layers, at most %d allowed",
                         cfg->n_hidden, CNF_NET_MAX_HIDDEN);
    for (size_t i = 0; i < cfg->n_hidden; i++)
        if (cfg->hidden[i] < 1 || cfg->hidden[i] > MAX_WIDTH)
            return cnf_error(CNF_EINVAL, "network hidden width %zu (layer %zu) is out of range "
                             "(1..%zu)", cfg->hidden[i], i, MAX_WIDTH);
    if ((unsigned)cfg->layer_type > CNF_LAYER_IGNORE)
        return cnf_error(CNF_EINVAL, "network layer_type %d is not a known layer type",
                         (int)cfg->layer_type);
    if ((unsigned)cfg->activation > CNF_ACT_SWISH)
        return cnf_error(CNF_EINVAL, "network activation %d is not a known activation",
                         (int)cfg->activation);
    return CNF_OK;
}

/* ---------------------------------------------------------------- network */

cnf_net *cnf_net_alloc(const cnf_net_config *cfg)
{
    if (check_config(cfg) != CNF_OK)
        return NULL;
    cnf_net *net = calloc(1, sizeof *net);
    if (!net) {
        cnf_error(CNF_ENOMEM, "cannot allocate the network");
        return NULL;
    }
    net->cfg = *cfg;
    net->n_layers = cfg->n_hidden + 1;
    net->width[0] = cfg->dim;
    for (size_t i = 0; i < cfg->n_hidden; i++)
        net->width[i + 1] = cfg->hidden[i];
    net->width[net->n_layers] = cfg->dim;

    size_t off = 0;
    for (size_t j = 0; j < net->n_layers; j++) {
        cnf_net_layer *v = &net->view[j];
        v->in = net->width[j];
        v->out = net->width[j + 1];
        v->W_cols = v->in + (cfg->layer_type == CNF_LAYER_CONCAT ? 1 : 0);
        v->W = off;
        off += v->out * v->W_cols;
        v->b = off;
        off += v->out;
        if (cfg->layer_type == CNF_LAYER_CONCATSQUASH) {
            v->g_w = off;
            v->g_b = off + v->out;
            v->c_w = off + 2 * v->out;
            off += 3 * v->out;
        } else {
            v->g_w = v->g_b = v->c_w = CNF_NET_ABSENT;
        }
    }
    net->n_params = off;
    return net;
}

void cnf_net_free(cnf_net *net)
{
    free(net);
}

const cnf_net_config *cnf_net_get_config(const cnf_net *net)
{
    return &net->cfg;
}

size_t cnf_net_num_params(const cnf_net *net)
{
    return net->n_params;
}

size_t cnf_net_num_layers(const cnf_net *net)
{
    return net->n_layers;
}

cnf_status cnf_net_layer_view(const cnf_net *net, size_t j, cnf_net_layer *view)
{
    if (j >= net->n_layers)
        return cnf_error(CNF_EINVAL, "layer %zu does not exist (the network has %zu layers)", j,
                         net->n_layers);
    *view = net->view[j];
    return CNF_OK;
}

static void fill_uniform(double *x, size_t n, double bound, gsl_rng *rng)
{
    for (size_t i = 0; i < n; i++)
        x[i] = bound * (2.0 * gsl_rng_uniform(rng) - 1.0);
}

void cnf_net_init(const cnf_net *net, double *theta, gsl_rng *rng, int zero_last_layer)
{
    /* Draws in theta order, so a seed fixes the parameters. */
    for (size_t j = 0; j < net->n_layers; j++) {
        const cnf_net_layer *v = &net->view[j];
        size_t end = (j + 1 < net->n_layers) ? net->view[j + 1].W : net->n_params;
        if (zero_last_layer && j + 1 == net->n_layers) {
            memset(theta + v->W, 0, (end - v->W) * sizeof *theta);
            continue;
        }
        double bound = 1.0 / sqrt((double)v->W_cols);
        fill_uniform(theta + v->W, v->out * v->W_cols, bound, rng);
        fill_uniform(theta + v->b, v->out, bound, rng);
        if (v->g_w != CNF_NET_ABSENT)
            fill_uniform(theta + v->g_w, 3 * v->out, 1.0, rng);   /* g_w, g_b, c_w */
    }
}

double cnf_net_flops_per_sample(const cnf_net *net, size_t K)
{
    /* Multiply-adds of the dgemms: every layer multiplies 1 + K rows per
     * sample, except that the unit directions (K == D) need none in layer 0. */
    int unit = (K == net->cfg.dim);
    double total = 0.0;
    for (size_t j = 0; j < net->n_layers; j++) {
        double rows = 1.0 + ((unit && j == 0) ? 0.0 : (double)K);
        total += rows * (double)net->view[j].in * (double)net->view[j].out;
    }
    return total;
}

/* ---------------------------------------------------------------- workspace */

static size_t max_width(const cnf_net *net)
{
    size_t maxw = 0;
    for (size_t j = 0; j <= net->n_layers; j++)
        maxw = net->width[j] > maxw ? net->width[j] : maxw;
    return maxw;
}

/* One thread's workspace for up to max_batch rows (sizes checked by the
 * caller); with_grad: also a private parameter-gradient buffer. */
static net_part *part_alloc(const cnf_net *net, size_t max_batch, size_t max_tangents,
                            int with_grad)
{
    net_part *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    size_t L = net->n_layers, maxw = max_width(net);
    int s2 = net->cfg.activation != CNF_ACT_TANH;
    memcpy(w->width, net->width, sizeof w->width);

    size_t rows = (max_tangents + 1) * max_batch;
    /* Carve every array from one block; sizes first, then pointers. */
    size_t total = 0;
    for (size_t j = 0; j < L; j++) {
        total += rows * net->width[j] + rows * net->width[j + 1];
        if (j + 1 < L)
            total += (s2 ? 2 : 1) * max_batch * net->width[j + 1];
        total += 3 * net->width[j + 1];
    }
    total += 2 * rows * maxw + 4 * maxw + max_batch;
    if (with_grad)
        total += net->n_params;
    w->mem = calloc(total, sizeof *w->mem);
    if (!w->mem) {
        free(w);
        return NULL;
    }
    double *p = w->mem;
    for (size_t j = 0; j < L; j++) {
        w->X[j] = p;
        p += rows * net->width[j];
        w->U[j] = p;
        p += rows * net->width[j + 1];
        if (j + 1 < L) {
            w->S1[j] = p;
            p += max_batch * net->width[j + 1];
            if (s2) {
                w->S2[j] = p;
                p += max_batch * net->width[j + 1];
            }
        }
        w->gate[j] = p;
        p += net->width[j + 1];
        w->shift[j] = p;
        p += net->width[j + 1];
        w->beta[j] = p;
        p += net->width[j + 1];
    }
    w->cot[0] = p;
    p += rows * maxw;
    w->cot[1] = p;
    p += rows * maxw;
    w->colsum = p;
    p += maxw;
    w->gatesum = p;
    p += maxw;
    w->tmp = p;
    p += maxw;
    w->tsum = p;
    p += maxw;
    w->trow = p;
    p += max_batch;
    if (with_grad)
        w->thetabar = p;
    return w;
}

static void part_free(net_part *w)
{
    if (!w)
        return;
    free(w->mem);
    free(w);
}

cnf_net_work *cnf_net_work_alloc(const cnf_net *net, size_t max_batch, size_t max_tangents)
{
    return cnf_net_work_alloc_threads(net, max_batch, max_tangents, 1);
}

cnf_net_work *cnf_net_work_alloc_threads(const cnf_net *net, size_t max_batch,
                                         size_t max_tangents, size_t n_threads)
{
    if (!net) {
        cnf_error(CNF_EINVAL, "cnf_net_work_alloc: network is NULL");
        return NULL;
    }
    if (max_batch < 1 || max_batch > (size_t)INT_MAX / (max_tangents + 1)
        || max_tangents > MAX_WIDTH) {
        cnf_error(CNF_EINVAL, "cnf_net_work_alloc: max_batch %zu with max_tangents %zu is out "
                  "of range", max_batch, max_tangents);
        return NULL;
    }
    if (n_threads < 1 || n_threads > CNF_NET_MAX_THREADS) {
        cnf_error(CNF_EINVAL, "cnf_net_work_alloc: %zu threads is out of range (1..%d)",
                  n_threads, CNF_NET_MAX_THREADS);
        return NULL;
    }
    size_t maxw = max_width(net);
    size_t rows = (max_tangents + 1) * max_batch;
    /* an upper bound of part_alloc's total over the threads, in bytes */
    size_t per_rows, grads, bound;
    if (cnf_size_mul3(rows, maxw, 4 * net->n_layers + 2, &per_rows)
        || cnf_size_mul(n_threads, net->n_params, &grads) || cnf_size_add(per_rows, grads, &bound)
        || cnf_size_mul(bound, 16, &bound)) {
        cnf_error(CNF_ENOMEM, "network workspace for max_batch %zu is too large", max_batch);
        return NULL;
    }
    cnf_net_work *w = calloc(1, sizeof *w);
    if (!w) {
        cnf_error(CNF_ENOMEM, "cannot allocate the network workspace");
        return NULL;
    }
    w->n_layers = net->n_layers;
    memcpy(w->width, net->width, sizeof w->width);
    w->max_batch = max_batch;
    w->max_tangents = max_tangents;
    w->n_threads = n_threads;
    size_t wt_total = 0;
    for (size_t j = 0; j < net->n_layers; j++)
        wt_total += net->width[j] * net->width[j + 1];
    w->wt_mem = malloc(wt_total * sizeof *w->wt_mem);
    if (!w->wt_mem) {
        cnf_net_work_free(w);
        cnf_error(CNF_ENOMEM, "cannot allocate the network workspace's %zu weights", wt_total);
        return NULL;
    }
    double *wt = w->wt_mem;
    for (size_t j = 0; j < net->n_layers; j++) {
        w->WT[j] = wt;
        wt += net->width[j] * net->width[j + 1];
    }
    /* Part i gets at most ceil(max_batch / n) rows. */
    size_t part_rows = (max_batch + n_threads - 1) / n_threads;
    for (size_t i = 0; i < n_threads; i++) {
        w->part[i] = part_alloc(net, part_rows, max_tangents, i > 0);
        if (!w->part[i]) {
            cnf_net_work_free(w);
            cnf_error(CNF_ENOMEM, "cannot allocate the network workspace for %zu rows (thread "
                      "%zu of %zu)", part_rows, i + 1, n_threads);
            return NULL;
        }
        memcpy(w->part[i]->WT, w->WT, sizeof w->WT);
    }
    if (n_threads > 1) {
        w->pool = cnf_pool_alloc(n_threads);
        if (!w->pool) {
            cnf_error(CNF_ENOMEM, "network workspace: %s", cnf_last_error());
            cnf_net_work_free(w);
            return NULL;
        }
    }
    return w;
}

void cnf_net_work_free(cnf_net_work *work)
{
    if (!work)
        return;
    cnf_pool_free(work->pool);
    for (size_t i = 0; i < work->n_threads; i++)
        part_free(work->part[i]);
    free(work->wt_mem);
    free(work);
}

size_t cnf_net_work_threads(const cnf_net_work *work)
{
    return work->n_threads;
}

static cnf_status check_work(const cnf_net *net, const cnf_net_work *w, const char *fn)
{
    if (w->n_layers != net->n_layers
        || memcmp(w->width, net->width, (net->n_layers + 1) * sizeof w->width[0]) != 0)
        return cnf_error(CNF_EDIM, "%s: the workspace was made for a network of other widths",
                         fn);
    return CNF_OK;
}

/* ---------------------------------------------------------------- products */

/* The products run in blocks of rows small enough (M N K <= GEMM_SMALL_MNK)
 * for OpenBLAS's small-matrix kernels (0.3.16 on, AVX-512 cores), which
 * skip the packing of both operands and the separate zeroing pass of
 * beta = 0: on (300 x 64) x (64 x 64), 48 us against 60 in one call. Only
 * the non-transposed A qualifies fully, so the forward pass multiplies by a
 * transposed copy of W (X W^T as X WT; 4096 copies against 12 us saved per
 * layer, and none at all while the weights are bound, cnf_net_work_bind).
 * Blocks below GEMM_MIN_ROWS would lose more than they gain (wide layers):
 * those products stay whole. */
#define GEMM_SMALL_MNK 1000000.0
#define GEMM_MIN_ROWS 32

static size_t row_block(size_t rows, size_t m, size_t n)
{
    double per_row = (double)m * (double)n;
    size_t blocks = (size_t)ceil((double)rows * per_row / GEMM_SMALL_MNK);
    if (blocks <= 1)
        return rows;
    size_t blk = (rows + blocks - 1) / blocks;
    return blk < GEMM_MIN_ROWS ? rows : blk;
}

/* C = A B + beta C: A rows x k, B k x n, C rows x n (row-major, leading
 * dimensions given). */
static void row_gemm(size_t rows, size_t n, size_t k, const double *A, size_t lda,
                     const double *B, size_t ldb, double beta, double *C, size_t ldc)
{
    size_t blk = row_block(rows, n, k);
    for (size_t r0 = 0; r0 < rows; r0 += blk) {
        size_t m = rows - r0 < blk ? rows - r0 : blk;
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)n, (int)k, 1.0,
                    A + r0 * lda, (int)lda, B, (int)ldb, beta, C + r0 * ldc, (int)ldc);
    }
}

/* C += A^T B summed over the rows: A rows x m, B rows x n, C m x n. */
static void row_gemm_tn(size_t rows, size_t m, size_t n, const double *A, size_t lda,
                        const double *B, size_t ldb, double *C, size_t ldc)
{
    size_t blk = row_block(rows, m, n);
    for (size_t r0 = 0; r0 < rows; r0 += blk) {
        size_t kk = rows - r0 < blk ? rows - r0 : blk;
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)m, (int)n, (int)kk, 1.0,
                    A + r0 * lda, (int)lda, B + r0 * ldb, (int)ldb, 1.0, C, (int)ldc);
    }
}

/* ---------------------------------------------------------------- layers
 *
 * A layer is three stages, each a forward and a backward side by side:
 * the affine product u = W h, the bias and time terms (beta, gate s, shift
 * c; one time for all rows, or one per row), and the activation of a hidden
 * layer (the last layer's output instead, whose backward is the identity:
 * fbar and jvbar are already the cotangents of y and dy_k). layer_backward
 * runs the stages' backwards in the exact reverse order of layer_forward,
 * and part_backward the layers in the reverse order of part_forward, so the
 * reverse sweep reads as the forward pass read backwards. */

/* The element-wise kernels below run over whole blocks of rows, restrict-
 * qualified and kept out of line: inlined into the caller the arrays lose
 * restrict, GCC gives up on the alias checks and the loop stays scalar; one
 * call per block rather than per row saves a call and a vector-loop
 * prologue per 64 values. */
#if defined(__GNUC__)
#define ROW_NOINLINE __attribute__((noinline))
#else
#define ROW_NOINLINE
#endif

/* First row of du_k in layer j (rows tangent_ld apart, n_{j+1} values). */
static inline const double *tangent_row(const net_part *w, size_t j, size_t k)
{
    size_t out = w->width[j + 1];
    if (w->unit && j == 0)
        return w->WT[0] + k * out;
    return w->U[j] + (k + 1) * w->B * out;
}

/* Row stride of the tangent products du_k of layer j: 0 when every sample
 * shares W e_k (the unit directions in layer 0). */
static inline size_t tangent_ld(const net_part *w, size_t j)
{
    return (w->unit && j == 0) ? 0 : w->width[j + 1];
}

/* X_b .* d_b in place (d rows d_ld apart: 0 for one shared row) */
ROW_NOINLINE static void scale_rows(size_t B, size_t n, double *restrict X,
                                    const double *restrict d, size_t d_ld)
{
    for (size_t b = 0; b < B; b++)
        for (size_t o = 0; o < n; o++)
            X[b * n + o] *= d[b * d_ld + o];
}

/* -------- the affine product u = W h */

/* U = X W^T over the stacked rows [h ; dh_k]; with the unit directions
 * layer 0 multiplies only the value rows (its W e_k are the rows of WT[0]). */
static void affine_forward(const cnf_net *net, net_part *w, size_t j)
{
    const cnf_net_layer *lv = &net->view[j];
    size_t rows = (w->unit && j == 0) ? w->B : (w->K + 1) * w->B;
    row_gemm(rows, lv->out, lv->in, w->X[j], lv->in, w->WT[j], lv->out, 0.0, w->U[j],
             lv->out);
}

/* From Y = [ubar ; dubar_k] (Kb tangents): Wbar += Y^T [h ; dh_k], and the
 * cotangents of the layer's input, Xb = Y W (layer j > 0) or, for layer 0,
 * zbar += those of the value rows (the directions v are constants). */
static void affine_backward(const cnf_net *net, net_part *w, size_t j, const double *theta,
                            const double *Y, size_t Kb, double *Xb, double *zbar,
                            double *thetabar)
{
    const cnf_net_layer *lv = &net->view[j];
    size_t in = lv->in, out = lv->out, ldw = lv->W_cols, B = w->B;
    size_t rows = (Kb + 1) * B;
    const double *W = theta + lv->W;
    int first_unit = w->unit && j == 0;
    if (thetabar) {
        size_t grows = first_unit ? B : rows;
        row_gemm_tn(grows, out, in, Y, out, w->X[j], in, thetabar + lv->W, ldw);
        if (first_unit) {
            /* dh_k = e_k: W[:, k] collects sum_b dubar_k */
            double *acc = w->tmp;
            for (size_t k = 0; k < Kb; k++) {
                for (size_t o = 0; o < out; o++)
                    acc[o] = 0.0;
                for (size_t b = 0; b < B; b++) {
                    const double *y = Y + ((k + 1) * B + b) * out;
                    for (size_t o = 0; o < out; o++)
                        acc[o] += y[o];
                }
                for (size_t o = 0; o < out; o++)
                    thetabar[lv->W + o * ldw + k] += acc[o];
            }
        }
    }
    if (j > 0)
        row_gemm(rows, in, out, Y, out, W, ldw, 0.0, Xb, in);
    else if (zbar)
        row_gemm(B, in, out, Y, out, W, ldw, 1.0, zbar, net->cfg.dim);
}

/* -------- bias and time terms, one time t for every row */

/* s, c and beta of layer j at the pass's time (s = 1, c = 0 unless
 * concatsquash; beta = b, plus t W[:, in] for concat). */
static void bias_time_forward(const cnf_net *net, net_part *w, size_t j, const double *theta)
{
    const cnf_net_layer *lv = &net->view[j];
    size_t in = lv->in, out = lv->out, ldw = lv->W_cols;
    const double *W = theta + lv->W, *bias = theta + lv->b;
    double *s = w->gate[j], *c = w->shift[j], *beta = w->beta[j];
    double t = w->t;
    switch (net->cfg.layer_type) {
    case CNF_LAYER_CONCATSQUASH: {
        const double *gw = theta + lv->g_w, *gb = theta + lv->g_b, *cw = theta + lv->c_w;
        for (size_t o = 0; o < out; o++) {
            s[o] = cnf_act_logistic(CNF_FMA(gw[o], t, gb[o]));
            c[o] = cw[o] * t;
            beta[o] = bias[o];
        }
        break;
    }
    case CNF_LAYER_CONCAT:
        for (size_t o = 0; o < out; o++) {
            s[o] = 1.0;
            c[o] = 0.0;
            beta[o] = CNF_FMA(t, W[o * ldw + in], bias[o]);
        }
        break;
    case CNF_LAYER_IGNORE:
        for (size_t o = 0; o < out; o++) {
            s[o] = 1.0;
            c[o] = 0.0;
            beta[o] = bias[o];
        }
        break;
    }
}

/* cs += sum_b Y_b, gs += sum_b Y_b .* (U_b + beta) */
ROW_NOINLINE static void value_sums_rows(size_t B, size_t n, const double *restrict Y,
                                         const double *restrict U, const double *restrict beta,
                                         double *restrict cs, double *restrict gs)
{
    for (size_t b = 0; b < B; b++)
        for (size_t o = 0; o < n; o++) {
            double y = Y[b * n + o];
            cs[o] += y;
            gs[o] += y * (U[b * n + o] + beta[o]);
        }
}

/* gs += sum_b Y_b .* A_b, then Y_b .* s in place (A rows a_ld apart) */
ROW_NOINLINE static void gate_rows(size_t B, size_t n, double *restrict Y,
                                   const double *restrict A, size_t a_ld,
                                   const double *restrict s, double *restrict gs)
{
    for (size_t b = 0; b < B; b++)
        for (size_t o = 0; o < n; o++) {
            gs[o] += Y[b * n + o] * A[b * a_ld + o];
            Y[b * n + o] *= s[o];
        }
}

/* Y (rows x out) holds [ybar ; dybar_k] of layer j's output. Sums what the
 * bias, time and gate gradients need (colsum = sum_b ybar, gatesum = sum of
 * Y .* [u ; du_k] over all rows) and turns Y into [ubar ; dubar_k] = Y .* s. */
static void gate_backward(const cnf_net *net, net_part *w, size_t j, size_t Kb, double *Y)
{
    size_t out = net->view[j].out, B = w->B;
    const double *s = w->gate[j], *U = w->U[j], *beta = w->beta[j];
    double *cs = w->colsum, *gs = w->gatesum;
    for (size_t o = 0; o < out; o++)
        cs[o] = gs[o] = 0.0;
    value_sums_rows(B, out, Y, U, beta, cs, gs);
    if (net->cfg.layer_type != CNF_LAYER_CONCATSQUASH)
        return;   /* s = 1 and no gate parameters */
    scale_rows(B, out, Y, s, 0);
    for (size_t k = 0; k < Kb; k++)
        gate_rows(B, out, Y + (k + 1) * B * out, tangent_row(w, j, k), tangent_ld(w, j), s,
                  gs);
}

/* Gradients of layer j's bias, gate and time parameters, and of t, from the
 * sums gate_backward left. */
static void bias_time_param_backward(const cnf_net *net, const net_part *w, size_t j,
                                     const double *theta, double *thetabar, double *tbar)
{
    const cnf_net_layer *lv = &net->view[j];
    size_t out = lv->out, in = lv->in, ldw = lv->W_cols;
    const double *cs = w->colsum, *gs = w->gatesum, *s = w->gate[j];
    double t = w->t, tb = 0.0;
    switch (net->cfg.layer_type) {
    case CNF_LAYER_CONCATSQUASH: {
        const double *gw = theta + lv->g_w, *cw = theta + lv->c_w;
        for (size_t o = 0; o < out; o++) {
            double g = s[o] * (1.0 - s[o]) * gs[o];
            if (thetabar) {
                thetabar[lv->b + o] += s[o] * cs[o];
                thetabar[lv->g_w + o] += t * g;
                thetabar[lv->g_b + o] += g;
                thetabar[lv->c_w + o] += t * cs[o];
            }
            tb += gw[o] * g + cw[o] * cs[o];
        }
        break;
    }
    case CNF_LAYER_CONCAT: {
        const double *W = theta + lv->W;
        for (size_t o = 0; o < out; o++) {
            if (thetabar) {
                thetabar[lv->b + o] += cs[o];
                thetabar[lv->W + o * ldw + in] += t * cs[o];
            }
            tb += W[o * ldw + in] * cs[o];
        }
        break;
    }
    case CNF_LAYER_IGNORE:
        if (thetabar)
            for (size_t o = 0; o < out; o++)
                thetabar[lv->b + o] += cs[o];
        break;
    }
    if (tbar)
        *tbar += tb;
}

/* Y: [ybar ; dybar_k] in, [ubar ; dubar_k] out; the parameter and time
 * gradients of the bias and time terms accumulated. */
static void bias_time_backward(const cnf_net *net, net_part *w, size_t j, const double *theta,
                               size_t Kb, double *Y, double *thetabar, double *tbar)
{
    gate_backward(net, w, j, Kb, Y);
    bias_time_param_backward(net, w, j, theta, thetabar, tbar);
}

/* -------- bias and time terms, one time t_b per row (no tangents) */

/* The gate of a concatsquash layer at one row's time. */
static inline double row_gate(const double *gw, const double *gb, size_t o, double t)
{
    return cnf_act_logistic(CNF_FMA(gw[o], t, gb[o]));
}

/* Layer j (concatsquash or concat) after its product U = X W^T: returns the
 * pre-activation less beta, and in *beta_out what the activation stage adds
 * to it (with s = 1, c = 0 for every row). concat folds t_b W[:, in] into U,
 * so that U + b is u as in the shared-time pass; concatsquash forms
 * y_b = (u_b + b) .* s(t_b) + c_w t_b in y_buf (and *beta_out = 0) and keeps
 * no gates: the reverse sweep recomputes them (the same bits). */
static const double *bias_time_rows_forward(const cnf_net *net, net_part *w, size_t j,
                                            const double *theta, double *y_buf,
                                            const double **beta_out)
{
    const cnf_net_layer *lv = &net->view[j];
    size_t in = lv->in, out = lv->out, ldw = lv->W_cols, B = w->B;
    const double *W = theta + lv->W, *bias = theta + lv->b, *t = w->trow;
    double *U = w->U[j], *s = w->gate[j], *c = w->shift[j], *beta = w->beta[j];
    for (size_t o = 0; o < out; o++) {
        s[o] = 1.0;
        c[o] = 0.0;
        beta[o] = bias[o];
    }
    if (net->cfg.layer_type == CNF_LAYER_CONCAT) {
        for (size_t b = 0; b < B; b++)
            for (size_t o = 0; o < out; o++)
                U[b * out + o] = CNF_FMA(t[b], W[o * ldw + in], U[b * out + o]);
        *beta_out = beta;
        return U;
    }
    const double *gw = theta + lv->g_w, *gb = theta + lv->g_b, *cw = theta + lv->c_w;
    for (size_t b = 0; b < B; b++)
        for (size_t o = 0; o < out; o++)
            y_buf[b * out + o] = CNF_FMA(U[b * out + o] + bias[o], row_gate(gw, gb, o, t[b]),
                                         cw[o] * t[b]);
    *beta_out = c;   /* y already holds the bias */
    return y_buf;
}

/* bias_time_backward for one time per row (no tangents, no dS/dt): the
 * sums over rows weight each row by its own gate s(t_b) and time t_b.
 * concatsquash:
 *     b bar += sum_b s_b ybar_b,     c_w bar += sum_b t_b ybar_b,
 *     g_b bar += sum_b g_b,  g_w bar += sum_b t_b g_b,  g_b = s_b (1 - s_b) ybar_b u_b,
 * and Y becomes ubar = ybar .* s_b; concat: b bar += sum_b ybar_b,
 * W[:, in] bar += sum_b t_b ybar_b. */
static void bias_time_rows_backward(const cnf_net *net, net_part *w, size_t j,
                                    const double *theta, double *Y, double *thetabar)
{
    const cnf_net_layer *lv = &net->view[j];
    size_t out = lv->out, in = lv->in, ldw = lv->W_cols, B = w->B;
    const double *t = w->trow, *U = w->U[j], *bias = theta + lv->b;
    double *cs = w->colsum, *ts = w->tsum, *gs = w->gatesum, *gts = w->tmp;
    for (size_t o = 0; o < out; o++)
        cs[o] = ts[o] = gs[o] = gts[o] = 0.0;
    if (net->cfg.layer_type == CNF_LAYER_CONCAT) {
        for (size_t b = 0; b < B; b++)
            for (size_t o = 0; o < out; o++) {
                double y = Y[b * out + o];
                cs[o] += y;
                ts[o] += t[b] * y;
            }
        if (thetabar)
            for (size_t o = 0; o < out; o++) {
                thetabar[lv->b + o] += cs[o];
                thetabar[lv->W + o * ldw + in] += ts[o];
            }
        return;
    }
    const double *gw = theta + lv->g_w, *gb = theta + lv->g_b;
    for (size_t b = 0; b < B; b++)
        for (size_t o = 0; o < out; o++) {
            size_t i = b * out + o;
            double sg = row_gate(gw, gb, o, t[b]), y = Y[i];
            double g = sg * (1.0 - sg) * y * (U[i] + bias[o]);
            gs[o] += g;
            gts[o] += t[b] * g;
            ts[o] += t[b] * y;
            Y[i] = y * sg;
            cs[o] += Y[i];
        }
    if (thetabar)
        for (size_t o = 0; o < out; o++) {
            thetabar[lv->b + o] += cs[o];
            thetabar[lv->g_w + o] += gts[o];
            thetabar[lv->g_b + o] += gs[o];
            thetabar[lv->c_w + o] += ts[o];
        }
}

/* -------- the activation of a hidden layer */

/* The value rows of a hidden layer: y = (u + beta) s + c, h' = sigma(y)
 * and its derivatives (B rows of n each); the second only where tangents
 * need it. One function per activation (see ROW_NOINLINE). */
#define ACT_ROWS2(name, kernel)                                                                  \
    ROW_NOINLINE static void name##_rows2(size_t B, size_t n, const double *restrict U,       \
                                          const double *restrict beta,                         \
                                          const double *restrict s, const double *restrict c, \
                                          double *restrict H, double *restrict D1,             \
                                          double *restrict D2)                                 \
    {                                                                                           \
        for (size_t b = 0; b < B; b++)                                                          \
            for (size_t o = 0; o < n; o++) {                                                    \
                size_t i = b * n + o;                                                           \
                kernel(CNF_FMA(U[i] + beta[o], s[o], c[o]), &H[i], &D1[i], &D2[i]);             \
            }                                                                                   \
    }
#define ACT_ROWS1(name, kernel)                                                                 \
    ROW_NOINLINE static void name##_rows1(size_t B, size_t n, const double *restrict U,       \
                                          const double *restrict beta,                         \
                                          const double *restrict s, const double *restrict c, \
                                          double *restrict H, double *restrict D1)             \
    {                                                                                           \
        for (size_t b = 0; b < B; b++)                                                          \
            for (size_t o = 0; o < n; o++) {                                                    \
                size_t i = b * n + o;                                                           \
                double unused;                                                                  \
                kernel(CNF_FMA(U[i] + beta[o], s[o], c[o]), &H[i], &D1[i], &unused);            \
            }                                                                                   \
    }
/* tanh needs no rows2: its sigma'' comes from the activations in the
 * reverse sweep (second_order_rows_tanh) */
ACT_ROWS1(tanh, cnf_act_tanh)
ACT_ROWS1(softplus_d, cnf_act_softplus_d)
ACT_ROWS2(softplus_d, cnf_act_softplus_d)
ACT_ROWS1(elu, cnf_act_elu)
ACT_ROWS2(elu, cnf_act_elu)
ACT_ROWS1(swish, cnf_act_swish)
ACT_ROWS2(swish, cnf_act_swish)
#undef ACT_ROWS1
#undef ACT_ROWS2

/* The value rows of a hidden layer (U, H, D1, D2: B x n; D2 may be NULL). */
static void activate_values(cnf_activation act, size_t B, size_t n, const double *U,
                            const double *beta, const double *s, const double *c, double *H,
                            double *D1, double *D2)
{
    switch (act) {
    case CNF_ACT_TANH:   /* D2 is NULL: the workspace has no sigma'' for tanh */
        tanh_rows1(B, n, U, beta, s, c, H, D1);
        break;
    case CNF_ACT_SOFTPLUS:
        if (D2)
            softplus_d_rows2(B, n, U, beta, s, c, H, D1, D2);
        else
            softplus_d_rows1(B, n, U, beta, s, c, H, D1);
        /* log1p has no vector kernel here; softplus is not the default. */
        for (size_t b = 0; b < B; b++)
            for (size_t o = 0; o < n; o++) {
                double y = CNF_FMA(U[b * n + o] + beta[o], s[o], c[o]);
                H[b * n + o] = log1p(H[b * n + o]) + (y > 0.0 ? y : 0.0);
            }
        break;
    case CNF_ACT_ELU:
        if (D2)
            elu_rows2(B, n, U, beta, s, c, H, D1, D2);
        else
            elu_rows1(B, n, U, beta, s, c, H, D1);
        break;
    case CNF_ACT_SWISH:
        if (D2)
            swish_rows2(B, n, U, beta, s, c, H, D1, D2);
        else
            swish_rows1(B, n, U, beta, s, c, H, D1);
        break;
    }
}

/* dh'_b = d1_b .* du_b .* s for the B rows of one tangent (d1 NULL: the
 * last layer, no activation; du rows du_ld apart). */
ROW_NOINLINE static void tangent_rows_forward(size_t B, size_t n, double *restrict dh,
                                              const double *restrict d1,
                                              const double *restrict du, size_t du_ld,
                                              const double *restrict s)
{
    if (d1)
        for (size_t b = 0; b < B; b++)
            for (size_t o = 0; o < n; o++)
                dh[b * n + o] = d1[b * n + o] * du[b * du_ld + o] * s[o];
    else
        for (size_t b = 0; b < B; b++)
            for (size_t o = 0; o < n; o++)
                dh[b * n + o] = du[b * du_ld + o] * s[o];
}

/* Hidden layer j's output rows [h' ; dh'_k] into X[j + 1] from its
 * pre-activation y = (pre + beta) .* s + c, with sigma' (and sigma'' when
 * there are tangents) kept for the reverse sweep. */
static void activation_forward(const cnf_net *net, net_part *w, size_t j, const double *pre,
                               const double *beta)
{
    size_t out = w->width[j + 1], B = w->B, K = w->K;
    const double *s = w->gate[j], *c = w->shift[j];
    double *Xn = w->X[j + 1], *D1 = w->S1[j];
    activate_values(net->cfg.activation, B, out, pre, beta, s, c, Xn, D1,
                    K > 0 ? w->S2[j] : NULL);   /* NULL for tanh */
    for (size_t k = 0; k < K; k++)
        tangent_rows_forward(B, out, Xn + (k + 1) * B * out, D1, tangent_row(w, j, k),
                             tangent_ld(w, j), s);
}

/* X_b += D2_b .* du_b .* s .* dX_b, then dX_b .* D1_b in place (X: the
 * value rows, dX: the rows of one tangent, du rows du_ld apart) */
ROW_NOINLINE static void second_order_rows(size_t B, size_t n, double *restrict X,
                                           double *restrict dX, const double *restrict D1,
                                           const double *restrict D2,
                                           const double *restrict du, size_t du_ld,
                                           const double *restrict s)
{
    for (size_t b = 0; b < B; b++)
        for (size_t o = 0; o < n; o++) {
            size_t i = b * n + o;
            X[i] += D2[i] * du[b * du_ld + o] * s[o] * dX[i];
            dX[i] *= D1[i];
        }
}

/* second_order_rows for tanh, whose sigma'' = -2 h sigma' comes from the
 * cached activations H instead of a stored array */
ROW_NOINLINE static void second_order_rows_tanh(size_t B, size_t n, double *restrict X,
                                                double *restrict dX, const double *restrict D1,
                                                const double *restrict H,
                                                const double *restrict du, size_t du_ld,
                                                const double *restrict s)
{
    for (size_t b = 0; b < B; b++)
        for (size_t o = 0; o < n; o++) {
            size_t i = b * n + o;
            double d2 = -2.0 * H[i] * D1[i];
            X[i] += d2 * du[b * du_ld + o] * s[o] * dX[i];
            dX[i] *= D1[i];
        }
}

/* From the cotangents Y = [hbar' ; dhbar'_k] of hidden layer j's output
 * (rows x n), in place, the cotangents [ybar ; dybar_k] of its
 * pre-activation. */
static void activation_backward(const cnf_net *net, net_part *w, size_t j, size_t Kb,
                                double *Y)
{
    size_t n = w->width[j + 1], B = w->B;
    const double *D1 = w->S1[j], *D2 = w->S2[j], *s = w->gate[j];
    int tanh_act = net->cfg.activation == CNF_ACT_TANH;
    scale_rows(B, n, Y, D1, n);
    for (size_t k = 0; k < Kb; k++) {
        if (tanh_act)
            second_order_rows_tanh(B, n, Y, Y + (k + 1) * B * n, D1, w->X[j + 1],
                                   tangent_row(w, j, k), tangent_ld(w, j), s);
        else
            second_order_rows(B, n, Y, Y + (k + 1) * B * n, D1, D2, tangent_row(w, j, k),
                              tangent_ld(w, j), s);
    }
}

/* -------- the last layer's output (its backward is the identity) */

/* f = y = (u + beta) .* s + c and jv_k = dy_k = du_k .* s, direction k
 * starting Bs rows after direction k - 1. */
static void output_forward(const cnf_net *net, net_part *w, size_t j, double *f, double *jv,
                           size_t Bs)
{
    size_t out = net->view[j].out, B = w->B;
    const double *U = w->U[j], *s = w->gate[j], *c = w->shift[j], *beta = w->beta[j];
    for (size_t b = 0; b < B; b++) {
        const double *u = U + b * out;
        double *fb = f + b * out;
        for (size_t o = 0; o < out; o++)
            fb[o] = CNF_FMA(u[o] + beta[o], s[o], c[o]);
    }
    for (size_t k = 0; k < w->K; k++)
        tangent_rows_forward(B, out, jv + k * Bs * out, NULL, tangent_row(w, j, k),
                             tangent_ld(w, j), s);
}

/* -------- whole layers */

/* Layer j on a part's rows, one time for all of them; the last layer writes
 * f (B x D) and jv, whose direction k starts Bs rows after direction k - 1. */
static void layer_forward(const cnf_net *net, net_part *w, size_t j, const double *theta,
                          double *f, double *jv, size_t Bs)
{
    affine_forward(net, w, j);
    bias_time_forward(net, w, j, theta);
    if (j + 1 < net->n_layers)
        activation_forward(net, w, j, w->U[j], w->beta[j]);
    else
        output_forward(net, w, j, f, jv, Bs);
}

/* Y: the cotangents of layer j's output, [hbar' ; dhbar'_k] (Kb tangents),
 * overwritten; Xb gets those of its input (see affine_backward). */
static void layer_backward(const cnf_net *net, net_part *w, size_t j, const double *theta,
                           size_t Kb, double *Y, double *Xb, double *zbar, double *thetabar,
                           double *tbar)
{
    if (j + 1 < net->n_layers)
        activation_backward(net, w, j, Kb, Y);
    bias_time_backward(net, w, j, theta, Kb, Y, thetabar, tbar);
    affine_backward(net, w, j, theta, Y, Kb, Xb, zbar, thetabar);
}

/* Layer j with one time per row (no tangents); the last layer writes f. */
static void layer_forward_rows(const cnf_net *net, net_part *w, size_t j, const double *theta,
                               double *f)
{
    int last = j + 1 == net->n_layers;
    affine_forward(net, w, j);
    const double *beta;
    const double *pre = bias_time_rows_forward(net, w, j, theta, last ? f : w->cot[0], &beta);
    if (!last) {
        activation_forward(net, w, j, pre, beta);
        return;
    }
    if (pre == f)
        return;   /* concatsquash formed y in f itself */
    size_t out = net->view[j].out;
    for (size_t b = 0; b < w->B; b++)
        for (size_t o = 0; o < out; o++)
            f[b * out + o] = pre[b * out + o] + beta[o];
}

static void layer_backward_rows(const cnf_net *net, net_part *w, size_t j, const double *theta,
                                double *Y, double *Xb, double *zbar, double *thetabar)
{
    if (j + 1 < net->n_layers)
        activation_backward(net, w, j, 0, Y);
    bias_time_rows_backward(net, w, j, theta, Y, thetabar);
    affine_backward(net, w, j, theta, Y, 0, Xb, zbar, thetabar);
}

/* A pass with one time per row takes the per-row layers, except that a
 * network of ignore layers has no time terms to differ by row. */
static int rows_time(const cnf_net *net, const net_part *w)
{
    return w->per_row && net->cfg.layer_type != CNF_LAYER_IGNORE;
}

/* -------- the network on one part's rows */

/* The forward pass on one part's B rows. z, f: B x D at the part's first
 * row; v, jv: direction k of row b at [(k Bs + b) D], Bs the whole batch. */
static void part_forward(const cnf_net *net, net_part *w, const double *theta, double t,
                         const double *trow, const double *z, size_t B, size_t Bs, size_t K,
                         const double *v, double *f, double *jv)
{
    size_t D = net->cfg.dim;
    w->B = B;
    w->K = K;
    w->unit = (K > 0 && !v);
    w->t = t;
    w->per_row = trow != NULL;
    if (B == 0)
        return;
    if (trow)
        memcpy(w->trow, trow, B * sizeof *trow);
    memcpy(w->X[0], z, B * D * sizeof *z);
    if (K > 0 && v)
        for (size_t k = 0; k < K; k++)
            memcpy(w->X[0] + (k + 1) * B * D, v + k * Bs * D, B * D * sizeof *v);
    int per_row = rows_time(net, w);
    for (size_t j = 0; j < net->n_layers; j++) {
        if (per_row)
            layer_forward_rows(net, w, j, theta, f);
        else
            layer_forward(net, w, j, theta, f, jv, Bs);
    }
}

/* The reverse sweep on one part's rows (after its part_forward). fbar,
 * zbar: B x D at the part's first row; jvbar: direction k of row b at
 * [(k Bs + b) D]. */
static void part_backward(const cnf_net *net, net_part *work, const double *theta,
                          const double *fbar, const double *jvbar, size_t Bs, double *zbar,
                          double *thetabar, double *tbar)
{
    if (work->B == 0)
        return;
    size_t B = work->B, D = net->cfg.dim;
    /* Zero tangent cotangents stay zero all the way back: skip those rows. */
    size_t Kb = jvbar ? work->K : 0;
    double *Y = work->cot[0], *Xb = work->cot[1];

    if (fbar)
        memcpy(Y, fbar, B * D * sizeof *Y);
    else
        memset(Y, 0, B * D * sizeof *Y);
    for (size_t k = 0; k < Kb; k++)
        memcpy(Y + (k + 1) * B * D, jvbar + k * Bs * D, B * D * sizeof *Y);

    int per_row = rows_time(net, work);
    for (size_t j = net->n_layers; j-- > 0;) {
        if (per_row)
            layer_backward_rows(net, work, j, theta, Y, Xb, zbar, thetabar);
        else
            layer_backward(net, work, j, theta, Kb, Y, Xb, zbar, thetabar, tbar);
        double *swap = Y;
        Y = Xb;
        Xb = swap;
    }
}

/* ---------------------------------------------------------------- passes */

/* Part i of the pool's job: rows [B i / n, B (i+1) / n). Parts i > 0 sum
 * their parameter and time gradients privately (reduced afterwards in part
 * order); part 0 adds to the caller's, as a one-thread workspace does. */
static void run_part(void *ctx, size_t i)
{
    const net_job *j = ctx;
    cnf_net_work *w = j->w;
    net_part *p = w->part[i];
    size_t n = w->n_threads, D = j->net->cfg.dim;
    size_t b0 = j->B * i / n, b1 = j->B * (i + 1) / n, off = b0 * D;
    if (!j->backward) {
        part_forward(j->net, p, j->theta, j->t, j->trow ? j->trow + b0 : NULL, j->z + off,
                     b1 - b0, j->B, j->K, j->v ? j->v + off : NULL, j->f + off,
                     j->jv ? j->jv + off : NULL);
        return;
    }
    if (j->backward == 2) {
        /* thetabar += the other parts' sums, in part order, on this thread's
         * share of the P entries; the private sums are left zero */
        size_t P = j->net->n_params, q0 = P * i / n, q1 = P * (i + 1) / n;
        for (size_t k = 1; k < n; k++) {
            double *restrict src = w->part[k]->thetabar;
            double *restrict dst = j->thetabar;
            for (size_t q = q0; q < q1; q++) {
                dst[q] += src[q];
                src[q] = 0.0;
            }
        }
        return;
    }
    double *thetabar = j->thetabar, *tbar = j->tbar;
    if (i > 0) {
        if (thetabar)
            thetabar = p->thetabar;
        if (tbar) {
            p->tbar = 0.0;
            tbar = &p->tbar;
        }
    }
    part_backward(j->net, p, j->theta, j->fbar ? j->fbar + off : NULL,
                  j->jvbar ? j->jvbar + off : NULL, j->B, j->zbar ? j->zbar + off : NULL,
                  thetabar, tbar);
}

/* WT = W^T of every layer, once for all threads. */
static void transpose_weights(const cnf_net *net, cnf_net_work *work, const double *theta)
{
    for (size_t j = 0; j < net->n_layers; j++) {
        const cnf_net_layer *lv = &net->view[j];
        size_t in = lv->in, out = lv->out, ldw = lv->W_cols;
        const double *W = theta + lv->W;
        double *WT = work->WT[j];
        for (size_t i = 0; i < in; i++)
            for (size_t o = 0; o < out; o++)
                WT[i * out + o] = W[o * ldw + i];
    }
}

cnf_status cnf_net_work_bind(const cnf_net *net, cnf_net_work *work, const double *theta)
{
    if (!net || !work || !theta)
        return cnf_error(CNF_EINVAL, "cnf_net_work_bind: net, work and theta must be given");
    cnf_status st = check_work(net, work, "cnf_net_work_bind");
    if (st != CNF_OK)
        return st;
    transpose_weights(net, work, theta);
    work->bound = theta;
    return CNF_OK;
}

void cnf_net_work_unbind(cnf_net_work *work)
{
    if (work)
        work->bound = NULL;
}

/* cnf_net_forward and cnf_net_forward_rows: one time t for every row, or
 * (trow != NULL, K = 0) one per row. */
static cnf_status forward(const cnf_net *net, cnf_net_work *work, const double *theta, double t,
                          const double *trow, const double *z, size_t B, size_t K,
                          const double *v, double *f, double *jv)
{
    cnf_status st = check_work(net, work, "cnf_net_forward");
    if (st != CNF_OK)
        return st;
    size_t D = net->cfg.dim;
    if (B > work->max_batch)
        return cnf_error(CNF_EINVAL, "cnf_net_forward: batch B = %zu exceeds the workspace's "
                         "max_batch %zu", B, work->max_batch);
    if (K > work->max_tangents)
        return cnf_error(CNF_EINVAL, "cnf_net_forward: K = %zu tangents exceed the workspace's "
                         "max_tangents %zu", K, work->max_tangents);
    if (K > 0 && !jv)
        return cnf_error(CNF_EINVAL, "cnf_net_forward: jv must be given when K = %zu > 0", K);
    if (K > 0 && !v && K != D)
        return cnf_error(CNF_EINVAL, "cnf_net_forward: unit directions (v = NULL) need K = D = "
                         "%zu, got K = %zu", D, K);
    work->ready = 0;
    work->B = B;
    if (theta != work->bound) {
        /* the shared W^T now holds these weights, not the bound ones */
        transpose_weights(net, work, theta);
        work->bound = NULL;
    }
    if (work->n_threads == 1) {
        part_forward(net, work->part[0], theta, t, trow, z, B, B, K, v, f, jv);
    } else {
        work->job = (net_job){.net = net, .w = work, .theta = theta, .t = t, .trow = trow,
                              .z = z, .v = v, .f = f, .jv = K > 0 ? jv : NULL, .B = B, .K = K,
                              .backward = 0};
        cnf_pool_run(work->pool, run_part, &work->job);
    }
    work->ready = 1;
    return CNF_OK;
}

cnf_status cnf_net_forward(const cnf_net *net, cnf_net_work *work, const double *theta,
                           double t, const double *z, size_t B, size_t K, const double *v,
                           double *f, double *jv)
{
    if (!net || !work || !theta || !z || !f)
        return cnf_error(CNF_EINVAL, "cnf_net_forward: net, work, theta, z and f must be given");
    return forward(net, work, theta, t, NULL, z, B, K, v, f, jv);
}

cnf_status cnf_net_forward_rows(const cnf_net *net, cnf_net_work *work, const double *theta,
                                const double *t, const double *z, size_t B, double *f)
{
    if (!net || !work || !theta || !t || !z || !f)
        return cnf_error(CNF_EINVAL,
                         "cnf_net_forward_rows: net, work, theta, t, z and f must be given");
    for (size_t b = 0; b < B; b++)
        if (!isfinite(t[b]))
            return cnf_error(CNF_EINVAL, "cnf_net_forward_rows: time t[%zu] = %g is not finite",
                             b, t[b]);
    return forward(net, work, theta, 0.0, t, z, B, 0, NULL, f, NULL);
}


cnf_status cnf_net_backward(const cnf_net *net, cnf_net_work *work, const double *theta,
                            const double *fbar, const double *jvbar, double *zbar,
                            double *thetabar, double *tbar)
{
    if (!net || !work || !theta)
        return cnf_error(CNF_EINVAL, "cnf_net_backward: net, work and theta must be given");
    cnf_status st = check_work(net, work, "cnf_net_backward");
    if (st != CNF_OK)
        return st;
    if (!work->ready)
        return cnf_error(CNF_EINVAL, "cnf_net_backward: no forward pass on this workspace");
    if (work->part[0]->per_row && (tbar || jvbar))
        return cnf_error(CNF_EINVAL, "cnf_net_backward: after cnf_net_forward_rows, tbar and "
                         "jvbar must be NULL (one time per row has no single dS/dt)");
    if ((!zbar && !thetabar && !tbar) || (!fbar && !jvbar) || work->B == 0)
        return CNF_OK;
    if (work->n_threads == 1) {
        part_backward(net, work->part[0], theta, fbar, jvbar, work->B, zbar, thetabar, tbar);
        return CNF_OK;
    }
    net_job *j = &work->job;
    *j = (net_job){.net = net, .w = work, .theta = theta, .fbar = fbar, .jvbar = jvbar,
                   .zbar = zbar, .thetabar = thetabar, .tbar = tbar, .B = work->B,
                   .K = work->part[0]->K, .backward = 1};
    cnf_pool_run(work->pool, run_part, j);
    /* Fixed order, so a given thread count gives the same sums every time. */
    if (thetabar) {
        j->backward = 2;
        cnf_pool_run(work->pool, run_part, j);
    }
    if (tbar)
        for (size_t i = 1; i < work->n_threads; i++)
            *tbar += work->part[i]->tbar;
    return CNF_OK;
}
