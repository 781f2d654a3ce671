/* flow_work.c — the flow's workspace (cnf/flow.h): one solve state per
 * block, the cache of forward solvers, the tangent and training buffers and
 * their growth, options and step hints, and the checks every evaluation or
 * gradient call starts with. Layout and seams in flow_impl.h. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cnf/size.h"

#include "flow_impl.h"

void cnf_flow_options_default(cnf_flow_options *opt)
{
    cnf_ode_options_default(&opt->solver);
    opt->solver.method = CNF_ODE_DOPRI5;
    opt->solver.rtol = 1e-5;
    opt->solver.atol = 1e-5;
    cnf_adjoint_options_default(&opt->adjoint);
    opt->adjoint.solver = opt->solver;
    opt->divergence = CNF_DIV_EXACT;
    opt->reg_kinetic = 0.0;
    opt->reg_jacobian = 0.0;
    opt->threads = 1;
    opt->warm_start = 0;
    opt->reduce = NULL;
    opt->reduce_ctx = NULL;
}

static size_t threads_of(const cnf_flow_options *opt)
{
    return opt->threads > 1 ? opt->threads : 1;
}

static size_t tangents_for(const cnf_flow_options *opt, size_t D)
{
    return opt->divergence == CNF_DIV_EXACT ? D : 1;
}

size_t flow_work_tangents(const cnf_flow_work *w)
{
    return tangents_for(&w->opt, w->D);
}

/* a x b x c doubles in bytes; 0 when that overflows size_t. */
static size_t doubles_bytes(size_t a, size_t b, size_t c)
{
    size_t n;
    return cnf_size_mul3(a, b, c, &n) || cnf_size_mul(n, sizeof(double), &n) ? 0 : n;
}

size_t flow_state_size(flow_state_kind kind, size_t B, size_t D)
{
    switch (kind) {
    case FLOW_STATE_Z: return B * D;
    case FLOW_STATE_LOGLIK: return B * (D + 1);
    default: return B * (D + 1) + 2;
    }
}

cnf_ode_solver *flow_work_solver(cnf_flow_work *w, size_t n)
{
    for (size_t i = 0; i < FLOW_SOLVER_SLOTS; i++)
        if (w->slots[i].solver && w->slots[i].n == n)
            return w->slots[i].solver;
    size_t i;
    for (i = 0; i < FLOW_SOLVER_SLOTS; i++)
        if (!w->slots[i].solver)
            break;
    if (i == FLOW_SOLVER_SLOTS) {
        i = FLOW_FIXED_SOLVER_SLOTS + w->next_slot;
        w->next_slot = (w->next_slot + 1) % (FLOW_SOLVER_SLOTS - FLOW_FIXED_SOLVER_SLOTS);
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
    size_t kt = flow_work_tangents(w), K = w->n_blocks;
    if (kt <= w->kt)
        return CNF_OK;
    size_t bytes = doubles_bytes(kt, w->max_batch, w->D);   /* checked at allocation */
    double *jv = malloc(bytes);
    double *jvbar = w->train ? malloc(bytes) : NULL, *jvbar0 = w->train ? malloc(bytes) : NULL;
    cnf_net_work **nw = calloc(K ? K : 1, sizeof *nw);
    int ok = jv && nw && (!w->train || (jvbar && jvbar0));
    for (size_t k = 0; ok && k < K; k++) {
        nw[k] = cnf_net_work_alloc_threads(cnf_flow_block_net(flow, k), w->max_batch, kt,
                                           threads_of(&w->opt));
        ok = nw[k] != NULL;
    }
    if (ok) {
        double *grown[3] = { jv, jvbar, jvbar0 };
        jv = w->jv;
        jvbar = w->jvbar;
        jvbar0 = w->jvbar0;
        w->jv = grown[0];
        w->jvbar = grown[1];
        w->jvbar0 = grown[2];
        for (size_t k = 0; k < K; k++) {
            cnf_net_work *old = w->blocks[k].nw;
            w->blocks[k].nw = nw[k];
            nw[k] = old;
        }
        w->kt = kt;
    }
    /* what is let go: the old buffers on success, the new ones on failure */
    free(jv);
    free(jvbar);
    free(jvbar0);
    for (size_t k = 0; nw && k < K; k++)
        cnf_net_work_free(nw[k]);
    free(nw);
    if (!ok)
        return cnf_error(CNF_ENOMEM, "flow work: out of memory growing the workspace to %zu "
                         "tangents of %zu rows (%s divergence)", kt, w->max_batch,
                         cnf_divergence_name(w->opt.divergence));
    return CNF_OK;
}

/* The gradient buffers, once, for max_batch rows. */
static cnf_status alloc_train_buffers(cnf_flow_work *w)
{
    size_t bd = doubles_bytes(1, w->max_batch, w->D), kbd = doubles_bytes(w->kt, w->max_batch, w->D);
    w->fbuf = malloc(bd);
    w->fbar = malloc(bd);
    w->a = malloc(bd);
    w->jvbar = malloc(kbd);
    w->jvbar0 = malloc(kbd);
    if (!w->fbuf || !w->fbar || !w->a || !w->jvbar || !w->jvbar0) {
        free(w->fbuf);
        free(w->fbar);
        free(w->a);
        free(w->jvbar);
        free(w->jvbar0);
        w->fbuf = w->fbar = w->a = w->jvbar = w->jvbar0 = NULL;
        return cnf_error(CNF_ENOMEM, "flow work: out of memory for the gradient buffers of "
                         "%zu rows", w->max_batch);
    }
    w->train = 1;
    return CNF_OK;
}

/* Allocated by the gradient call, not by cnf_flow_work_alloc, so that
 * evaluation and sampling works do not carry them. */
cnf_status flow_work_ensure_train(cnf_flow_work *w, const cnf_flow *flow, size_t B)
{
    cnf_status s = w->train ? CNF_OK : alloc_train_buffers(w);
    if (s != CNF_OK)
        return s;
    size_t rn = flow_state_size(FLOW_STATE_TRAIN, B, w->D);
    if (w->rec_n != rn) {
        for (size_t k = 0; k < w->n_blocks; k++) {
            flow_block *blk = &w->blocks[k];
            cnf_ode_record_free(blk->rec);
            blk->rec = cnf_ode_record_alloc(rn);
            if (!blk->rec) {
                w->rec_n = 0;
                return cnf_error(CNF_ENOMEM, "out of memory for the checkpoints of block %zu", k);
            }
        }
        w->rec_n = rn;
    }
    if (w->adj_B != B) {
        for (size_t k = 0; k < w->n_blocks; k++) {
            flow_block *blk = &w->blocks[k];
            cnf_adjoint_free(blk->adj);
            blk->adj = cnf_adjoint_alloc(B * w->D, blk->np, &w->opt.adjoint);
            if (!blk->adj) {
                w->adj_B = 0;
                return cnf_error(CNF_ENOMEM, "block %zu: cannot set up the adjoint: %s", k,
                                 cnf_last_error());
            }
        }
        w->adj_B = B;
    }
    /* the training state's solver too, so that no solve allocates */
    return flow_work_solver(w, flow_state_size(FLOW_STATE_TRAIN, B, w->D)) ? CNF_OK : CNF_ENOMEM;
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
    w->opt.adjoint.reduce = w->opt.reduce;
    w->opt.adjoint.reduce_ctx = w->opt.reduce_ctx;
    w->kt = flow_work_tangents(w);
    w->blocks = calloc(K ? K : 1, sizeof *w->blocks);
    w->y = malloc((Bm * (D + 1) + 2) * sizeof *w->y);
    w->zs = malloc(doubles_bytes(K + 1, Bm, D));
    w->eps = malloc(doubles_bytes(K, Bm, D));
    w->jv = malloc(doubles_bytes(w->kt, Bm, D));
    w->sq = malloc(Bm * sizeof *w->sq);
    if (!w->blocks || !w->y || !w->zs || !w->eps || !w->jv || !w->sq) {
        cnf_flow_work_free(w);
        cnf_error(CNF_ENOMEM, "out of memory allocating a flow workspace for %zu rows", max_batch);
        return NULL;
    }
    for (size_t k = 0; k < K; k++) {
        flow_block *blk = &w->blocks[k];
        blk->np = cnf_net_num_params(cnf_flow_block_net(flow, k));
        blk->eps = w->eps + k * Bm * D;
        blk->nw = cnf_net_work_alloc_threads(cnf_flow_block_net(flow, k), Bm, w->kt,
                                             threads_of(&w->opt));
        if (!blk->nw) {
            cnf_flow_work_free(w);
            return NULL;
        }
    }
    /* the evaluation solvers of a full chunk, so that solves do not
     * allocate (the training one comes with the first gradient call) */
    for (int kind = FLOW_STATE_Z; kind <= FLOW_STATE_LOGLIK; kind++) {
        if (!flow_work_solver(w, flow_state_size((flow_state_kind)kind, Bm, D))) {
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
    for (size_t k = 0; w->blocks && k < w->n_blocks; k++) {
        cnf_net_work_free(w->blocks[k].nw);
        cnf_ode_record_free(w->blocks[k].rec);
        cnf_adjoint_free(w->blocks[k].adj);
    }
    for (size_t i = 0; i < FLOW_SOLVER_SLOTS; i++)
        cnf_ode_solver_free(w->slots[i].solver);
    free(w->blocks);
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
    w->opt.adjoint.reduce = w->opt.reduce;
    w->opt.adjoint.reduce_ctx = w->opt.reduce_ctx;
    for (size_t i = 0; i < FLOW_SOLVER_SLOTS; i++)
        if (w->slots[i].solver) {
            cnf_status s = cnf_ode_solver_set_options(w->slots[i].solver, &w->opt.solver);
            if (s != CNF_OK)
                return s;
        }
    for (size_t k = 0; k < w->n_blocks; k++)
        if (w->blocks[k].adj) {
            cnf_status s = cnf_adjoint_set_options(w->blocks[k].adj, &w->opt.adjoint);
            if (s != CNF_OK)
                return s;
        }
    return CNF_OK;
}

size_t cnf_flow_work_max_batch(const cnf_flow_work *w) { return w->max_batch; }

size_t cnf_flow_work_step_hints(const cnf_flow_work *w, double *hints)
{
    size_t K = w->n_blocks;
    for (size_t k = 0; hints && k < K; k++) {
        hints[k] = w->blocks[k].h_fwd;
        hints[K + k] = w->blocks[k].h_bwd;
    }
    return 2 * K;
}

cnf_status cnf_flow_work_set_step_hints(cnf_flow_work *w, const double *hints, size_t n)
{
    size_t K = w->n_blocks;
    if (n != 2 * K)
        return cnf_error(CNF_EDIM, "flow work: %zu step hints given, the work's %zu block(s) "
                         "keep %zu", n, K, 2 * K);
    for (size_t i = 0; i < n; i++)
        if (!(hints[i] >= 0.0) || !isfinite(hints[i]))
            return cnf_error(CNF_EINVAL, "flow work: step hint %zu is %g; hints are finite "
                             "sizes >= 0", i, hints[i]);
    for (size_t k = 0; k < K; k++) {
        w->blocks[k].h_fwd = hints[k];
        w->blocks[k].h_bwd = hints[K + k];
    }
    return CNF_OK;
}

static cnf_status check_end_times(const cnf_flow *flow)
{
    const double *theta = cnf_flow_params_const(flow);
    for (size_t k = 0; k < cnf_flow_num_blocks(flow); k++) {
        double T = theta[cnf_flow_T_index(flow, k)];
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
        if (P != w->blocks[k].np)
            return cnf_error(CNF_EDIM, "%s: block %zu's network has %zu parameters but the "
                             "workspace was made for one of %zu", what, k, P, w->blocks[k].np);
    }
    return CNF_OK;
}

cnf_status flow_work_begin_call(const cnf_flow *flow, cnf_flow_work *w, cnf_flow_stats *stats,
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
        s = cnf_net_work_bind(cnf_flow_block_net(flow, k), w->blocks[k].nw,
                              cnf_flow_params_const(flow) + cnf_flow_block_offset(flow, k));
    /* a call's first chunk starts cold: calls do not depend on each other */
    for (size_t k = 0; s == CNF_OK && k < w->n_blocks; k++)
        w->blocks[k].h_chunk = 0.0;
    return s;
}
