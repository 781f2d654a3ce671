/* flow_eval.c — evaluating a continuous normalizing flow: the augmented
 * right-hand side [dz/dt, dq/dt, regularizers] over the dynamics network,
 * log-likelihood, encode, decode (sampling), and the mean-NLL gradient by
 * the integral-loss adjoint over the blocks in reverse order.
 *
 * Method: FFJORD (Grathwohl et al. 2019) — instantaneous change of variables
 * with exact or Hutchinson divergence, one noise draw per block solve;
 * regularizers of RNODE (Finlay et al. 2020) as integral losses; the adjoint
 * of Chen et al. (2018) in the form of DESIGN.md section 2 (cnf/adjoint.h),
 * z(t) from the forward checkpoints by default.
 *
 * The forward state of a chunk of B rows is y = [z (B x D) | q (B) | rK rJ]
 * with dq_b/dt = div_b, drK/dt = lambda_K sum_b ||f_b||^2 and
 * drJ/dt = lambda_J sum_b ||J eps_b||^2 (the last two only when training).
 * q carries on from block to block, so after the last block
 * log p(x_std) = log N(z) + q.
 */
#include "cnf/flow.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <gsl/gsl_randist.h>

#include "cnf/adjoint.h"

#define N_SLOTS 6       /* cached forward solvers, keyed by state size */
#define N_FIXED_SLOTS 3 /* the first three (max_batch sizes) are kept */

typedef enum { MODE_Z = 0, MODE_LOGLIK, MODE_TRAIN } fwd_mode;

/* What one block's right-hand side and vector-Jacobian product need. */
typedef struct {
    const cnf_net *net;
    cnf_net_work *nw;
    const double *theta;       /* P_k */
    size_t B, D, K;            /* K tangent directions: 0, 1 or D */
    const double *v;           /* K x B x D Hutchinson noise, NULL for unit vectors */
    int n_reg;                 /* 2 when the regularizer accumulators are in the state */
    double lam_k, lam_j;
    double *jv;                /* K x B x D */
    double *fbuf;              /* B x D */
    double *fbar;              /* B x D */
    double *jvbar;             /* K x B x D */
    const double *jvbar0;      /* K x B x D: cotangent of the divergence term of l */
    double *sq;                /* B */
    cnf_status net_status;
} block_ctx;

typedef struct {
    size_t n;
    cnf_ode_solver *solver;
} solver_slot;

struct cnf_flow_work {
    size_t D, n_blocks, max_batch;
    size_t *np;                /* n_blocks: P_k of the flow it was made for */
    cnf_flow_options opt;
    size_t kt;                 /* tangent capacity Kc of nw, jv, jvbar, jvbar0:
                                  D (exact) or 1 (Hutchinson), grown on demand */
    cnf_net_work **nw;         /* n_blocks, for Kc tangents */
    double *y;                 /* max_batch*(D+1) + 2: forward state */
    double *zs;                /* (n_blocks+1) x B x D: block inputs/outputs */
    double *eps;               /* n_blocks x max_batch x D: noise per block */
    double *jv;                /* Kc x max_batch x D */
    double *sq;                /* max_batch */
    double *h_warm;            /* 2 x n_blocks: first steps of the gradient's forward
                                  and backward solves (warm_start), 0 = automatic */
    double *h_chunk;           /* n_blocks: first steps handed from chunk to chunk
                                  within one evaluation call */
    /* training only, allocated by the first cnf_flow_nll_grad (train set) */
    int train;
    double *fbuf;              /* max_batch x D */
    double *fbar;              /* max_batch x D */
    double *jvbar;             /* Kc x max_batch x D */
    double *jvbar0;            /* Kc x max_batch x D */
    double *a;                 /* max_batch x D: adjoint handed between blocks */
    solver_slot slots[N_SLOTS];
    size_t next_slot;
    cnf_ode_record **rec;      /* n_blocks, state rec_n */
    size_t rec_n;
    cnf_adjoint **adj;         /* n_blocks, for batches of adj_B */
    size_t adj_B;
};

void cnf_flow_options_default(cnf_flow_options *opt)
{
    cnf_ode_options_default(&opt->solver);
    opt->solver.method = CNF_ODE_DOPRI5;
    opt->solver.rtol = 1e-5;
    opt->solver.atol = 1e-5;
    opt->adjoint_solver = opt->solver;
    opt->divergence = CNF_DIV_EXACT;
    opt->backsolve = 0;
    opt->seminorm = 0;
    opt->reg_kinetic = 0.0;
    opt->reg_jacobian = 0.0;
    opt->threads = 1;
    opt->warm_start = 0;
}

static size_t threads_of(const cnf_flow_options *opt)
{
    return opt->threads > 1 ? opt->threads : 1;
}

/* Tangent directions the options' divergence needs: D or 1. */
static size_t tangents_for(const cnf_flow_options *opt, size_t D)
{
    return opt->divergence == CNF_DIV_EXACT ? D : 1;
}

/* a x b x c doubles in bytes; 0 when that overflows size_t. */
static size_t doubles_bytes(size_t a, size_t b, size_t c)
{
    size_t n = a;
    if (b && n > SIZE_MAX / b)
        return 0;
    n *= b;
    if (c && n > SIZE_MAX / c)
        return 0;
    n *= c;
    return n > SIZE_MAX / sizeof(double) ? 0 : n * sizeof(double);
}

static size_t state_size(fwd_mode mode, size_t B, size_t D)
{
    switch (mode) {
    case MODE_Z: return B * D;
    case MODE_LOGLIK: return B * (D + 1);
    default: return B * (D + 1) + 2;
    }
}

static void adjoint_options_of(const cnf_flow_options *opt, cnf_adjoint_options *ao)
{
    ao->solver = opt->adjoint_solver;
    ao->backsolve = opt->backsolve;
    ao->seminorm = opt->seminorm;
}

/* The forward solver for a state of n, from the cache; allocating only when
 * a new size turns up (a short last chunk, a different training batch). */
static cnf_ode_solver *get_solver(cnf_flow_work *w, size_t n)
{
    for (size_t i = 0; i < N_SLOTS; i++)
        if (w->slots[i].solver && w->slots[i].n == n)
            return w->slots[i].solver;
    size_t i;
    for (i = 0; i < N_SLOTS; i++)
        if (!w->slots[i].solver)
            break;
    if (i == N_SLOTS) {
        i = N_FIXED_SLOTS + w->next_slot;
        w->next_slot = (w->next_slot + 1) % (N_SLOTS - N_FIXED_SLOTS);
        cnf_ode_solver_free(w->slots[i].solver);
        w->slots[i].solver = NULL;
    }
    cnf_ode_solver *s = cnf_ode_solver_alloc(n, &w->opt.solver);
    if (!s)
        return NULL;
    w->slots[i].n = n;
    w->slots[i].solver = s;
    return s;
}

/* Grow the tangent buffers and network workspaces to the tangents the
 * current options need (set_options may have switched to the exact
 * divergence). Called before any solve of a call; never shrinks. The work
 * is unchanged on failure. */
static cnf_status ensure_tangents(cnf_flow_work *w, const cnf_flow *flow)
{
    size_t kt = tangents_for(&w->opt, w->D), K = w->n_blocks;
    if (kt <= w->kt)
        return CNF_OK;
    size_t bytes = doubles_bytes(kt, w->max_batch, w->D);   /* checked at allocation */
    double *jv = malloc(bytes);
    double *jvbar = w->train ? malloc(bytes) : NULL, *jvbar0 = w->train ? malloc(bytes) : NULL;
    cnf_net_work **nw = calloc(K, sizeof *nw);
    int ok = jv && nw && (!w->train || (jvbar && jvbar0));
    for (size_t k = 0; ok && k < K; k++) {
        nw[k] = cnf_net_work_alloc_threads(cnf_flow_block_net(flow, k), w->max_batch, kt,
                                           threads_of(&w->opt));
        ok = nw[k] != NULL;
    }
    double *old[3] = { jv, jvbar, jvbar0 };
    cnf_net_work **old_nw = nw;
    if (ok) {
        old[0] = w->jv;
        old[1] = w->jvbar;
        old[2] = w->jvbar0;
        old_nw = w->nw;
        w->jv = jv;
        w->jvbar = jvbar;
        w->jvbar0 = jvbar0;
        w->nw = nw;
        w->kt = kt;
    }
    for (size_t i = 0; i < 3; i++)
        free(old[i]);
    for (size_t k = 0; old_nw && k < K; k++)
        cnf_net_work_free(old_nw[k]);
    free(old_nw);
    if (!ok)
        return cnf_error(CNF_ENOMEM, "flow work: out of memory growing the workspace to %zu "
                         "tangents of %zu rows (%s divergence)", kt, w->max_batch,
                         cnf_divergence_name(w->opt.divergence));
    return CNF_OK;
}

/* The training parts: gradient buffers (once, for max_batch rows),
 * checkpoint records and adjoints sized for batches of B rows. Allocated
 * by the gradient call, not by cnf_flow_work_alloc, so that evaluation and
 * sampling works do not carry them. */
static cnf_status ensure_train(cnf_flow_work *w, const cnf_flow *flow, size_t B)
{
    if (!w->train) {
        size_t bd = doubles_bytes(1, w->max_batch, w->D), kbd = doubles_bytes(w->kt, w->max_batch, w->D);
        w->fbuf = malloc(bd);
        w->fbar = malloc(bd);
        w->a = malloc(bd);
        w->jvbar = malloc(kbd);
        w->jvbar0 = malloc(kbd);
        w->rec = calloc(w->n_blocks, sizeof *w->rec);
        w->adj = calloc(w->n_blocks, sizeof *w->adj);
        if (!w->fbuf || !w->fbar || !w->a || !w->jvbar || !w->jvbar0 || !w->rec || !w->adj) {
            free(w->fbuf);
            free(w->fbar);
            free(w->a);
            free(w->jvbar);
            free(w->jvbar0);
            free(w->rec);
            free(w->adj);
            w->fbuf = w->fbar = w->a = w->jvbar = w->jvbar0 = NULL;
            w->rec = NULL;
            w->adj = NULL;
            return cnf_error(CNF_ENOMEM, "flow work: out of memory for the gradient buffers of "
                             "%zu rows", w->max_batch);
        }
        w->train = 1;
    }
    size_t rn = state_size(MODE_TRAIN, B, w->D);
    if (w->rec_n != rn) {
        for (size_t k = 0; k < w->n_blocks; k++) {
            cnf_ode_record_free(w->rec[k]);
            w->rec[k] = cnf_ode_record_alloc(rn);
            if (!w->rec[k]) {
                w->rec_n = 0;
                return cnf_error(CNF_ENOMEM, "out of memory for the checkpoints of block %zu", k);
            }
        }
        w->rec_n = rn;
    }
    if (w->adj_B != B) {
        cnf_adjoint_options ao;
        adjoint_options_of(&w->opt, &ao);
        for (size_t k = 0; k < w->n_blocks; k++) {
            cnf_adjoint_free(w->adj[k]);
            w->adj[k] = cnf_adjoint_alloc(B * w->D, cnf_net_num_params(cnf_flow_block_net(flow, k)), &ao);
            if (!w->adj[k]) {
                w->adj_B = 0;
                return cnf_error(CNF_ENOMEM, "block %zu: cannot set up the adjoint: %s", k,
                                 cnf_last_error());
            }
        }
        w->adj_B = B;
    }
    /* the training state's solver too, so that no solve allocates */
    return get_solver(w, state_size(MODE_TRAIN, B, w->D)) ? CNF_OK : CNF_ENOMEM;
}

cnf_flow_work *cnf_flow_work_alloc(const cnf_flow *flow, size_t max_batch,
                                   const cnf_flow_options *opt)
{
    if (max_batch == 0) {
        cnf_error(CNF_EINVAL, "flow work: max_batch must be at least 1");
        return NULL;
    }
    size_t D = cnf_flow_dim(flow), K = cnf_flow_num_blocks(flow), Bm = max_batch;
    /* the largest buffers: the block boundaries and D tangents (which
     * set_options may switch on later); the rest are smaller */
    if (!doubles_bytes(K + 1, Bm, D) || !doubles_bytes(D, Bm, D) || !doubles_bytes(Bm, D + 1, 1)) {
        cnf_error(CNF_EINVAL, "flow work: %zu rows of dimension %zu with %zu block(s) are too "
                  "many for this machine's size_t (the workspace size overflows)", Bm, D, K);
        return NULL;
    }
    cnf_flow_work *w = calloc(1, sizeof *w);
    if (!w) {
        cnf_error(CNF_ENOMEM, "out of memory allocating a flow workspace");
        return NULL;
    }
    w->D = D;
    w->n_blocks = K;
    w->max_batch = Bm;
    if (opt)
        w->opt = *opt;
    else
        cnf_flow_options_default(&w->opt);
    w->kt = tangents_for(&w->opt, D);
    w->np = malloc((K ? K : 1) * sizeof *w->np);
    w->nw = calloc(K, sizeof *w->nw);
    w->y = malloc((Bm * (D + 1) + 2) * sizeof *w->y);
    w->zs = malloc(doubles_bytes(K + 1, Bm, D));
    w->eps = malloc(doubles_bytes(K, Bm, D));
    w->jv = malloc(doubles_bytes(w->kt, Bm, D));
    w->sq = malloc(Bm * sizeof *w->sq);
    w->h_warm = calloc(2 * (K ? K : 1), sizeof *w->h_warm);
    w->h_chunk = calloc(K ? K : 1, sizeof *w->h_chunk);
    if (!w->np || !w->nw || !w->y || !w->zs || !w->eps || !w->jv || !w->sq || !w->h_warm
        || !w->h_chunk) {
        cnf_flow_work_free(w);
        cnf_error(CNF_ENOMEM, "out of memory allocating a flow workspace for %zu rows", max_batch);
        return NULL;
    }
    for (size_t k = 0; k < K; k++) {
        w->np[k] = cnf_net_num_params(cnf_flow_block_net(flow, k));
        w->nw[k] = cnf_net_work_alloc_threads(cnf_flow_block_net(flow, k), Bm, w->kt,
                                              threads_of(&w->opt));
        if (!w->nw[k]) {
            cnf_flow_work_free(w);
            return NULL;
        }
    }
    /* the evaluation solvers of a full chunk, so that solves do not
     * allocate (the training one comes with the first gradient call) */
    for (int m = MODE_Z; m <= MODE_LOGLIK; m++) {
        if (!get_solver(w, state_size((fwd_mode)m, Bm, D))) {
            cnf_flow_work_free(w);
            return NULL;
        }
    }
    return w;
}

void cnf_flow_work_free(cnf_flow_work *w)
{
    if (!w)
        return;
    for (size_t k = 0; k < w->n_blocks; k++) {
        if (w->nw)
            cnf_net_work_free(w->nw[k]);
        if (w->rec)
            cnf_ode_record_free(w->rec[k]);
        if (w->adj)
            cnf_adjoint_free(w->adj[k]);
    }
    for (size_t i = 0; i < N_SLOTS; i++)
        cnf_ode_solver_free(w->slots[i].solver);
    free(w->np);
    free(w->nw);
    free(w->rec);
    free(w->adj);
    free(w->y);
    free(w->zs);
    free(w->eps);
    free(w->jv);
    free(w->fbuf);
    free(w->fbar);
    free(w->jvbar);
    free(w->jvbar0);
    free(w->sq);
    free(w->a);
    free(w->h_warm);
    free(w->h_chunk);
    free(w);
}

/* A switch to the exact divergence grows the tangent buffers at the start of
 * the next call (ensure_tangents), which has the flow's networks at hand. */
cnf_status cnf_flow_work_set_options(cnf_flow_work *w, const cnf_flow_options *opt)
{
    if (threads_of(opt) != threads_of(&w->opt))
        return cnf_error(CNF_EINVAL, "flow work: the thread count (%zu) cannot change after "
                         "allocation (was %zu); allocate a new work", threads_of(opt),
                         threads_of(&w->opt));
    w->opt = *opt;
    for (size_t i = 0; i < N_SLOTS; i++)
        if (w->slots[i].solver) {
            cnf_status s = cnf_ode_solver_set_options(w->slots[i].solver, &w->opt.solver);
            if (s != CNF_OK)
                return s;
        }
    cnf_adjoint_options ao;
    adjoint_options_of(&w->opt, &ao);
    for (size_t k = 0; w->adj && k < w->n_blocks; k++)
        if (w->adj[k]) {
            cnf_status s = cnf_adjoint_set_options(w->adj[k], &ao);
            if (s != CNF_OK)
                return s;
        }
    return CNF_OK;
}

size_t cnf_flow_work_max_batch(const cnf_flow_work *w) { return w->max_batch; }

size_t cnf_flow_work_step_hints(const cnf_flow_work *w, double *hints)
{
    size_t n = 2 * w->n_blocks;
    if (hints)
        memcpy(hints, w->h_warm, n * sizeof *hints);
    return n;
}

cnf_status cnf_flow_work_set_step_hints(cnf_flow_work *w, const double *hints, size_t n)
{
    if (n != 2 * w->n_blocks)
        return cnf_error(CNF_EDIM, "flow work: %zu step hints given, the work's %zu block(s) "
                         "keep %zu", n, w->n_blocks, 2 * w->n_blocks);
    for (size_t i = 0; i < n; i++)
        if (!(hints[i] >= 0.0) || !isfinite(hints[i]))
            return cnf_error(CNF_EINVAL, "flow work: step hint %zu is %g; hints are finite "
                             "sizes >= 0", i, hints[i]);
    memcpy(w->h_warm, hints, n * sizeof *hints);
    return CNF_OK;
}

/* Warm first steps: a solve of the adaptive methods starts with a kept
 * step (0 = none yet: the options' own h0, automatic or the user's) and
 * leaves the step it suggests in its place. The gradient keeps them from
 * call to call (warm_start, h_warm); the evaluation calls from chunk to
 * chunk within the call (h_chunk). */
static double warm_h0(double hint, double h0)
{
    return hint > 0.0 ? hint : h0;
}

static void warm_keep(double *hint, const cnf_ode_stats *st)
{
    if (st->accepted > 0)
        *hint = fabs(st->h_warm);
}

/* ---- right-hand sides ------------------------------------------------ */

static int all_finite(const double *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return 0;
    return 1;
}

static double sum_sq_norm(const double *x, size_t K, size_t B, size_t D, double *tmp)
{
    cnf_net_sq_norm(x, K, B, D, tmp);
    double s = 0.0;
    for (size_t b = 0; b < B; b++)
        s += tmp[b];
    return s;
}

static void divergence(const block_ctx *c, double *div)
{
    if (c->v)
        cnf_net_trace_hutchinson(c->v, c->jv, c->B, c->D, div);
    else
        cnf_net_trace_unit(c->jv, c->B, c->D, div);
}

/* d/dt [z, q, rK, rJ] (the tail as far as the state reaches). */
static int block_rhs(double t, const double *y, double *dy, void *params)
{
    block_ctx *c = params;
    size_t B = c->B, D = c->D, BD = B * D;
    cnf_status s = cnf_net_forward(c->net, c->nw, c->theta, t, y, B, c->K, c->v, dy,
                                   c->K ? c->jv : NULL);
    if (s != CNF_OK) {
        c->net_status = s;
        return -1;
    }
    size_t n = BD;
    if (c->K) {
        divergence(c, dy + BD);
        n += B;
    }
    if (c->n_reg) {
        dy[BD + B] = c->lam_k > 0.0 ? c->lam_k * sum_sq_norm(dy, 1, B, D, c->sq) : 0.0;
        dy[BD + B + 1] = c->lam_j > 0.0 ? c->lam_j * sum_sq_norm(c->jv, c->K, B, D, c->sq) : 0.0;
        n += 2;
    }
    return all_finite(dy, n) ? 0 : 1;   /* non-finite: retry with a smaller step */
}

/* The CNF's vector-Jacobian product for the adjoint (cnf/adjoint.h), with
 * l = -(1/B) sum div + (lambda_K/B) sum ||f||^2 + (lambda_J/B) sum ||J eps||^2:
 * one forward pass with tangents and one reverse sweep for
 * S = a.f + l, i.e. fbar = a + 2 lambda_K f / B and
 * jvbar = jvbar0 + 2 lambda_J jv / B, jvbar0 = -e_k/B (exact) or -eps/B. */
static int block_vjp(double t, const double *z, const double *a, double *f, double *l,
                     double *zbar, double *thetabar, void *params)
{
    block_ctx *c = params;
    size_t B = c->B, D = c->D, K = c->K, BD = B * D;
    double *fo = f ? f : c->fbuf;
    cnf_status s = cnf_net_forward(c->net, c->nw, c->theta, t, z, B, K, c->v, fo, c->jv);
    if (s != CNF_OK) {
        c->net_status = s;
        return -1;
    }
    if (!all_finite(fo, BD) || !all_finite(c->jv, K * BD))
        return 1;
    double invB = 1.0 / (double)B;
    if (l) {
        divergence(c, c->sq);
        double sdiv = 0.0;
        for (size_t b = 0; b < B; b++)
            sdiv += c->sq[b];
        double v = -sdiv * invB;
        if (c->lam_k > 0.0)
            v += c->lam_k * invB * sum_sq_norm(fo, 1, B, D, c->sq);
        if (c->lam_j > 0.0)
            v += c->lam_j * invB * sum_sq_norm(c->jv, K, B, D, c->sq);
        *l = v;
    }
    if (!zbar && !thetabar)
        return 0;
    const double *fbar = a;
    if (c->lam_k > 0.0) {
        double ck = 2.0 * c->lam_k * invB;
        for (size_t i = 0; i < BD; i++)
            c->fbar[i] = (a ? a[i] : 0.0) + ck * fo[i];
        fbar = c->fbar;
    }
    const double *jvbar = c->jvbar0;
    if (c->lam_j > 0.0) {
        double cj = 2.0 * c->lam_j * invB;
        for (size_t i = 0; i < K * BD; i++)
            c->jvbar[i] = c->jvbar0[i] + cj * c->jv[i];
        jvbar = c->jvbar;
    }
    s = cnf_net_backward(c->net, c->nw, c->theta, fbar, jvbar, zbar, thetabar, NULL);
    if (s != CNF_OK) {
        c->net_status = s;
        return -1;
    }
    return 0;
}

static void block_ctx_init(block_ctx *c, const cnf_flow *flow, cnf_flow_work *w, size_t k,
                           size_t B, size_t K, int n_reg)
{
    memset(c, 0, sizeof *c);
    c->net = cnf_flow_block_net(flow, k);
    c->nw = w->nw[k];
    c->theta = cnf_flow_params_const(flow) + cnf_flow_block_offset(flow, k);
    c->B = B;
    c->D = w->D;
    c->K = K;
    c->v = (K == 1) ? w->eps + k * w->max_batch * w->D : NULL;
    c->n_reg = n_reg;
    c->lam_k = n_reg ? w->opt.reg_kinetic : 0.0;
    c->lam_j = n_reg ? w->opt.reg_jacobian : 0.0;
    c->jv = w->jv;
    c->fbuf = w->fbuf;
    c->fbar = w->fbar;
    c->jvbar = w->jvbar;
    c->jvbar0 = w->jvbar0;
    c->sq = w->sq;
    c->net_status = CNF_OK;
}

/* A failed block solve: keep the solver's (or the network's) message and
 * say where. */
static cnf_status block_failure(cnf_status s, const block_ctx *c, const char *what, size_t k,
                                size_t row0, size_t B)
{
    if (c->net_status != CNF_OK)
        s = c->net_status;
    return cnf_error(s, "%s of block %zu failed on the chunk of rows %zu-%zu: %s", what, k, row0,
                     row0 + B - 1, cnf_last_error());
}

static double block_end_time(const cnf_flow *flow, size_t k)
{
    return cnf_flow_params_const(flow)[cnf_flow_T_index(flow, k)];
}

static cnf_status check_end_times(const cnf_flow *flow)
{
    for (size_t k = 0; k < cnf_flow_num_blocks(flow); k++) {
        double T = block_end_time(flow, k);
        if (!(T >= 0.0) || !isfinite(T))
            return cnf_error(CNF_EINVAL, "block %zu: end time T = %g must be finite and >= 0", k, T);
    }
    return CNF_OK;
}

/* A work made for another flow (fewer blocks, a smaller D or smaller
 * networks) would be read and written out of bounds: refuse it up front.
 * Cheap checks only: D, the block count and every block's P_k. */
static cnf_status check_work(const cnf_flow *flow, const cnf_flow_work *w, const char *what)
{
    size_t D = cnf_flow_dim(flow), K = cnf_flow_num_blocks(flow);
    if (D != w->D || K != w->n_blocks)
        return cnf_error(CNF_EDIM, "%s: the workspace was made for a flow of dimension %zu with %zu "
                         "block(s), not for this flow of dimension %zu with %zu block(s)",
                         what, w->D, w->n_blocks, D, K);
    for (size_t k = 0; k < K; k++) {
        size_t P = cnf_net_num_params(cnf_flow_block_net(flow, k));
        if (P != w->np[k])
            return cnf_error(CNF_EDIM, "%s: block %zu's network has %zu parameters but the "
                             "workspace was made for one of %zu", what, k, P, w->np[k]);
    }
    return CNF_OK;
}

static size_t tangents_of(const cnf_flow_work *w)
{
    return tangents_for(&w->opt, w->D);
}

/* The blocks on the state y of B rows (y starts with z, B x D): forwards,
 * blocks 0..K-1 from 0 to T_k, or backwards, blocks K-1..0 from T_k to 0.
 * Kt tangents, n_reg regularizer accumulators. Forwards, each block draws
 * its noise (Kt = 1), fills its record when record is set and leaves its
 * output in w->zs[k+1]; warm (n_blocks, may be NULL): the first steps, kept
 * and updated (see warm_keep). */
static cnf_status solve_blocks(const cnf_flow *flow, cnf_flow_work *w, double *y, size_t n,
                               size_t B, size_t Kt, int n_reg, int backward, int record,
                               double *warm, gsl_rng *rng, size_t row0, cnf_flow_stats *stats)
{
    size_t BD = B * w->D;
    cnf_ode_solver *solver = get_solver(w, n);
    if (!solver)
        return CNF_ENOMEM;
    for (size_t i = 0; i < w->n_blocks; i++) {
        size_t k = backward ? w->n_blocks - 1 - i : i;
        block_ctx c;
        block_ctx_init(&c, flow, w, k, B, Kt, n_reg);
        if (Kt == 1)
            cnf_noise_draw(w->opt.divergence, rng, BD, w->eps + k * w->max_batch * w->D);
        cnf_ode_record *rec = record ? w->rec[k] : NULL;
        if (rec)
            cnf_ode_record_clear(rec);
        double T = block_end_time(flow, k);
        if (T > 0.0) {
            int warm_k = warm && cnf_ode_method_is_adaptive(w->opt.solver.method);
            cnf_ode_options so = w->opt.solver;
            so.h0 = warm_k ? warm_h0(warm[k], so.h0) : so.h0;
            if (warm_k && cnf_ode_solver_set_options(solver, &so) != CNF_OK)
                return cnf_error(CNF_EINVAL, "block %zu: warm first step: %s", k, cnf_last_error());
            cnf_ode_stats st;
            cnf_status s = cnf_ode_solve(solver, block_rhs, &c, backward ? T : 0.0,
                                         backward ? 0.0 : T, y, rec, &st);
            if (warm_k) {
                warm_keep(&warm[k], &st);
                /* the evaluation solves may share this solver */
                cnf_ode_solver_set_options(solver, &w->opt.solver);
            }
            if (stats)
                cnf_ode_stats_add(&stats->forward, &st);
            if (s != CNF_OK)
                return block_failure(s, &c, backward ? "reverse solve" : "forward solve", k,
                                     row0, B);
        }
        if (!backward)
            memcpy(w->zs + (k + 1) * BD, y, BD * sizeof *y);
    }
    return CNF_OK;
}

/* Forward through every block for one chunk X (B x D, data space). On
 * success w->zs holds the block boundaries (zs[k] = input of block k) and
 * w->y the final augmented state. Records are filled in MODE_TRAIN when
 * checkpointing. */
static cnf_status forward_chunk(const cnf_flow *flow, cnf_flow_work *w, const double *X, size_t B,
                                size_t row0, fwd_mode mode, gsl_rng *rng, cnf_flow_stats *stats)
{
    size_t D = w->D, BD = B * D;
    size_t n = state_size(mode, B, D);
    size_t K = mode == MODE_Z ? 0 : tangents_of(w);
    if (K == 1 && !rng)
        return cnf_error(CNF_EINVAL, "the %s divergence estimate needs a random number generator (rng is NULL)",
                         cnf_divergence_name(w->opt.divergence));
    double *y = w->y;
    cnf_flow_preprocess_rows(flow, X, B, y);
    memset(y + BD, 0, (n - BD) * sizeof *y);
    memcpy(w->zs, y, BD * sizeof *y);
    double *warm = mode != MODE_TRAIN ? w->h_chunk : w->opt.warm_start ? w->h_warm : NULL;
    return solve_blocks(flow, w, y, n, B, K, mode == MODE_TRAIN ? 2 : 0, 0,
                        mode == MODE_TRAIN && !w->opt.backsolve, warm, rng, row0, stats);
}

static double log_normal(const double *z, size_t D)
{
    double s = 0.0;
    for (size_t i = 0; i < D; i++)
        s += z[i] * z[i];
    return -0.5 * s - 0.5 * (double)D * log(2.0 * 3.14159265358979323846);
}

/* ---- public entry points ---------------------------------------------- */

/* What every entry point does first: check that the work fits the flow and
 * the end times are valid, grow the tangent buffers if the options now need
 * more; stats start at zero. */
static cnf_status begin_call(const cnf_flow *flow, cnf_flow_work *w, cnf_flow_stats *stats,
                             const char *what)
{
    if (stats)
        memset(stats, 0, sizeof *stats);
    cnf_status s = check_work(flow, w, what);
    if (s == CNF_OK)
        s = check_end_times(flow);
    if (s == CNF_OK)
        s = ensure_tangents(w, flow);
    /* the parameters stay put for the whole call: transpose the weights
     * once here rather than in every evaluation of every solve */
    for (size_t k = 0; s == CNF_OK && k < w->n_blocks; k++)
        s = cnf_net_work_bind(cnf_flow_block_net(flow, k), w->nw[k],
                              cnf_flow_params_const(flow) + cnf_flow_block_offset(flow, k));
    /* a call's first chunk starts cold: calls do not depend on each other */
    if (s == CNF_OK)
        memset(w->h_chunk, 0, w->n_blocks * sizeof *w->h_chunk);
    return s;
}

/* Rows of the chunk starting at row0 of N: at most max_batch, 0 at the end.
 * Loop: for (size_t row0 = 0, B; (B = chunk_rows(w, N, row0)) > 0; row0 += B). */
static size_t chunk_rows(const cnf_flow_work *w, size_t N, size_t row0)
{
    return N - row0 < w->max_batch ? N - row0 : w->max_batch;
}

cnf_status cnf_flow_log_likelihood(const cnf_flow *flow, cnf_flow_work *w, const double *X,
                                   size_t N, gsl_rng *rng, double *loglik, cnf_flow_stats *stats)
{
    cnf_status s = begin_call(flow, w, stats, "cnf_flow_log_likelihood");
    if (s != CNF_OK)
        return s;
    size_t D = w->D;
    double log_det = cnf_flow_preprocess_log_det(flow);
    for (size_t row0 = 0, B; (B = chunk_rows(w, N, row0)) > 0; row0 += B) {
        s = forward_chunk(flow, w, X + row0 * D, B, row0, MODE_LOGLIK, rng, stats);
        if (s != CNF_OK)
            return s;
        const double *z = w->y, *q = w->y + B * D;
        for (size_t b = 0; b < B; b++)
            loglik[row0 + b] = log_normal(z + b * D, D) + q[b] + log_det;
    }
    return CNF_OK;
}

cnf_status cnf_flow_encode(const cnf_flow *flow, cnf_flow_work *w, const double *X, size_t N,
                           double *Z, cnf_flow_stats *stats)
{
    cnf_status s = begin_call(flow, w, stats, "cnf_flow_encode");
    if (s != CNF_OK)
        return s;
    size_t D = w->D;
    for (size_t row0 = 0, B; (B = chunk_rows(w, N, row0)) > 0; row0 += B) {
        s = forward_chunk(flow, w, X + row0 * D, B, row0, MODE_Z, NULL, stats);
        if (s != CNF_OK)
            return s;
        memcpy(Z + row0 * D, w->y, B * D * sizeof *Z);
    }
    return CNF_OK;
}

cnf_status cnf_flow_decode(const cnf_flow *flow, cnf_flow_work *w, const double *Z, size_t N,
                           double *X, cnf_flow_stats *stats)
{
    cnf_status s = begin_call(flow, w, stats, "cnf_flow_decode");
    if (s != CNF_OK)
        return s;
    size_t D = w->D;
    for (size_t row0 = 0, B; (B = chunk_rows(w, N, row0)) > 0; row0 += B) {
        double *y = w->y;
        memcpy(y, Z + row0 * D, B * D * sizeof *y);
        s = solve_blocks(flow, w, y, B * D, B, 0, 0, 1, 0, w->h_chunk, NULL, row0, stats);
        if (s != CNF_OK)
            return s;
        cnf_flow_unpreprocess_rows(flow, y, B, X + row0 * D);
    }
    return CNF_OK;
}

void cnf_flow_draw_latent(gsl_rng *rng, size_t N, size_t D, double *Z)
{
    for (size_t i = 0; i < N * D; i++)
        Z[i] = gsl_ran_gaussian(rng, 1.0);
}

cnf_status cnf_flow_nll_grad(const cnf_flow *flow, cnf_flow_work *w, const double *X, size_t B,
                             gsl_rng *rng, double *nll, double *loss, double *grad,
                             cnf_flow_stats *stats)
{
    cnf_status s = begin_call(flow, w, stats, "cnf_flow_nll_grad");
    if (s != CNF_OK)
        return s;
    if (B == 0 || B > w->max_batch)
        return cnf_error(CNF_EDIM, "gradient batch of %zu rows: must be between 1 and the workspace's max_batch %zu",
                         B, w->max_batch);
    s = ensure_train(w, flow, B);
    if (s != CNF_OK)
        return s;
    size_t D = w->D, BD = B * D, Kt = tangents_of(w);
    s = forward_chunk(flow, w, X, B, 0, MODE_TRAIN, rng, stats);
    if (s != CNF_OK)
        return s;

    /* loss = Phi + int l: Phi = -(1/B) sum log N(z(T)), the integrals of
     * l are -(1/B) sum q + (rK + rJ)/B, minus the preprocessing's constant log|det|. */
    const double *zT = w->zs + w->n_blocks * BD, *q = w->y + BD;
    double invB = 1.0 / (double)B, snll = 0.0;
    for (size_t b = 0; b < B; b++)
        snll -= log_normal(zT + b * D, D) + q[b];
    double mean_nll = snll * invB - cnf_flow_preprocess_log_det(flow);
    if (nll)
        *nll = mean_nll;
    if (loss)
        *loss = mean_nll + (w->y[BD + B] + w->y[BD + B + 1]) * invB;

    memset(grad, 0, cnf_flow_num_params(flow) * sizeof *grad);
    double *a = w->a;
    for (size_t i = 0; i < BD; i++)
        a[i] = zT[i] * invB;   /* dPhi/dz(T) */
    /* the divergence term's constant cotangent on the tangent outputs:
     * -e_k/B, the same for every block (exact), or -eps/B of each block's
     * noise (Hutchinson, below) */
    if (Kt != 1) {
        memset(w->jvbar0, 0, Kt * BD * sizeof *w->jvbar0);
        for (size_t kk = 0; kk < Kt; kk++)
            for (size_t b = 0; b < B; b++)
                w->jvbar0[(kk * B + b) * D + kk] = -invB;
    }
    for (size_t k = w->n_blocks; k-- > 0;) {
        block_ctx c;
        block_ctx_init(&c, flow, w, k, B, Kt, 2);
        if (Kt == 1)
            for (size_t i = 0; i < BD; i++)
                w->jvbar0[i] = -c.v[i] * invB;
        double T = block_end_time(flow, k);
        size_t Tidx = cnf_flow_T_index(flow, k);
        cnf_adjoint_problem pb = { BD, cnf_net_num_params(c.net), block_vjp, &c };
        int warm_k = w->opt.warm_start && cnf_ode_method_is_adaptive(w->opt.adjoint_solver.method);
        if (warm_k) {
            cnf_adjoint_options ao;
            adjoint_options_of(&w->opt, &ao);
            ao.solver.h0 = warm_h0(w->h_warm[w->n_blocks + k], ao.solver.h0);
            s = cnf_adjoint_set_options(w->adj[k], &ao);
            if (s != CNF_OK)
                return cnf_error(s, "block %zu: warm first step: %s", k, cnf_last_error());
        }
        double dT = 0.0;
        cnf_ode_stats st;
        s = cnf_adjoint_solve(w->adj[k], &pb, w->rec[k], 0.0, 1, &T, w->zs + (k + 1) * BD, a, a,
                              grad + cnf_flow_block_offset(flow, k), &dT, &st);
        if (warm_k && s == CNF_OK)
            warm_keep(&w->h_warm[w->n_blocks + k], &st);
        if (stats)
            cnf_ode_stats_add(&stats->backward, &st);
        if (s != CNF_OK)
            return block_failure(s, &c, "adjoint solve", k, 0, B);
        grad[Tidx] = dT;
    }
    return CNF_OK;
}
