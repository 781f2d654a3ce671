/* flow_dynamics.c — the CNF dynamics: the one place where the dynamics
 * network (cnf/net.h) meets the ODE solver (cnf/ode.h) and the adjoint
 * (cnf/adjoint.h).
 *
 * Method: FFJORD (Grathwohl et al. 2019) — the instantaneous change of
 * variables, dq/dt = tr(df/dz), with the exact trace or Hutchinson's
 * estimate eps^T (df/dz) eps, one noise draw per block solve held for its
 * backward pass; the regularizers of RNODE (Finlay et al. 2020) as
 * integrals in the state; the adjoint of Chen et al. (2018) with z(t) from
 * the forward checkpoints by default. State layout in flow_impl.h. */
#include <math.h>
#include <string.h>

#include "finite.h"
#include "flow_impl.h"

/* What one block's right-hand side and vector-Jacobian product need. */
typedef struct {
    const cnf_net *net;
    cnf_net_work *nw;
    const double *theta;       /* P_k */
    size_t B, D, K;            /* K tangent directions: 0, 1 or D */
    const double *v;           /* K x B x D Hutchinson noise, NULL for unit vectors */
    int n_reg;                 /* 2 when the regularizer accumulators are in the state */
    double lam_k, lam_j;       /* their weights */
    const flow_integrand *l;   /* backward: the integral loss differentiated */
    double *jv;                /* K x B x D */
    double *fbuf;              /* B x D */
    double *fbar;              /* B x D */
    double *jvbar;             /* K x B x D */
    const double *jvbar0;      /* K x B x D: cotangent of the divergence term of l */
    double *sq;                /* B */
    cnf_status net_status;
} block_ctx;

static int all_finite(const double *x, size_t n)
{
    return cnf_first_nonfinite(x, n) == n;
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
 * l = w_div sum div + w_kin sum ||f||^2 + w_jac sum ||J eps||^2: one forward
 * pass with tangents and one reverse sweep for S = a.f + l, i.e.
 * fbar = a + 2 w_kin f and jvbar = jvbar0 + 2 w_jac jv, with jvbar0 =
 * w_div e_k (exact) or w_div eps (Hutchinson). */
static int block_vjp(double t, const double *z, const double *a, double *f, double *l,
                     double *zbar, double *thetabar, void *params)
{
    block_ctx *c = params;
    const flow_integrand *w = c->l;
    size_t B = c->B, D = c->D, K = c->K, BD = B * D;
    double *fo = f ? f : c->fbuf;
    cnf_status s = cnf_net_forward(c->net, c->nw, c->theta, t, z, B, K, c->v, fo, c->jv);
    if (s != CNF_OK) {
        c->net_status = s;
        return -1;
    }
    if (!all_finite(fo, BD) || !all_finite(c->jv, K * BD))
        return 1;
    if (l) {
        divergence(c, c->sq);
        double sdiv = 0.0;
        for (size_t b = 0; b < B; b++)
            sdiv += c->sq[b];
        double v = w->w_div * sdiv;
        if (w->w_kin > 0.0)
            v += w->w_kin * sum_sq_norm(fo, 1, B, D, c->sq);
        if (w->w_jac > 0.0)
            v += w->w_jac * sum_sq_norm(c->jv, K, B, D, c->sq);
        *l = v;
    }
    if (!zbar && !thetabar)
        return 0;
    const double *fbar = a;
    if (w->w_kin > 0.0) {
        double ck = 2.0 * w->w_kin;
        for (size_t i = 0; i < BD; i++)
            c->fbar[i] = (a ? a[i] : 0.0) + ck * fo[i];
        fbar = c->fbar;
    }
    const double *jvbar = c->jvbar0;
    if (w->w_jac > 0.0) {
        double cj = 2.0 * w->w_jac;
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
    c->nw = w->blocks[k].nw;
    c->theta = cnf_flow_params_const(flow) + cnf_flow_block_offset(flow, k);
    c->B = B;
    c->D = w->D;
    c->K = K;
    c->v = (K == 1) ? w->blocks[k].eps : NULL;
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

/* Which first step a block's forward solve starts from and keeps: training
 * keeps its own from call to call (warm_start), evaluation hands it from
 * chunk to chunk within a call. */
static double *forward_hint(cnf_flow_work *w, size_t k, flow_state_kind kind)
{
    flow_block *blk = &w->blocks[k];
    if (kind != FLOW_STATE_TRAIN)
        return &blk->h_chunk;
    return w->opt.warm_start ? &blk->h_fwd : NULL;
}

/* A block's Hutchinson noise for the chunk's B rows (B x D), drawn as the
 * whole batch's would be: the rows around the chunk are drawn and
 * discarded. The noise kinds draw value by value, with no state of their
 * own, so drawing in pieces continues the stream as one draw would. */
static void draw_block_noise(const cnf_flow_work *w, gsl_rng *rng, size_t B, flow_rows rows,
                             double *eps)
{
    double discard[256];
    size_t around[2] = { rows.rows_before * w->D, rows.rows_after * w->D };
    for (int side = 0; side < 2; side++) {
        if (side == 1)
            cnf_net_noise_draw(w->opt.divergence, rng, B * w->D, eps);
        for (size_t left = around[side], m; left > 0; left -= m) {
            m = left < 256 ? left : 256;
            cnf_net_noise_draw(w->opt.divergence, rng, m, discard);
        }
    }
}

/* The blocks on the state y (n) of B rows, y starting with z (B x D):
 * forwards, blocks 0..K-1 from 0 to T_k, or backwards, blocks K-1..0 from
 * T_k to 0. Kt tangents, n_reg regularizer accumulators. Each block draws
 * its noise (Kt = 1); forwards, a training solve fills the block's record
 * when record is set, and every block leaves its output in w->zs[k+1]. */
static cnf_status solve_blocks(const cnf_flow *flow, cnf_flow_work *w, double *y, size_t n,
                               size_t B, size_t Kt, flow_state_kind kind, int backward,
                               int record, gsl_rng *rng, flow_rows rows, cnf_flow_stats *stats)
{
    size_t BD = B * w->D;
    int n_reg = kind == FLOW_STATE_TRAIN ? 2 : 0;
    cnf_ode_solver *solver = flow_work_solver(w, n);
    if (!solver)
        return CNF_ENOMEM;
    /* the rows z, q are each process's own; the regularizers' accumulators
     * its partial sums (a cached solver of this n may have served another
     * kind, so the setting is made for every solve; it allocates only when
     * it changes) */
    cnf_status rs = cnf_ode_solver_set_reduction(solver, w->opt.reduce, w->opt.reduce_ctx,
                                                 (size_t)n_reg);
    if (rs != CNF_OK)
        return rs;
    for (size_t i = 0; i < w->n_blocks; i++) {
        size_t k = backward ? w->n_blocks - 1 - i : i;
        flow_block *blk = &w->blocks[k];
        block_ctx c;
        block_ctx_init(&c, flow, w, k, B, Kt, n_reg);
        if (Kt == 1)
            draw_block_noise(w, rng, B, rows, blk->eps);
        cnf_ode_record *rec = record ? blk->rec : NULL;
        if (rec) {
            cnf_ode_record_clear(rec);
            cnf_ode_record_set_interp(rec, w->opt.adjoint.checkpoints);
        }
        double T = block_end_time(flow, k);
        if (T > 0.0) {
            cnf_ode_stats st;
            cnf_status s = cnf_ode_solve_warm(solver, block_rhs, &c, backward ? T : 0.0,
                                              backward ? 0.0 : T, y, forward_hint(w, k, kind),
                                              rec, &st);
            if (stats)
                cnf_ode_stats_add(&stats->forward, &st);
            if (s != CNF_OK)
                return block_failure(s, &c, backward ? "reverse solve" : "forward solve", k,
                                     rows.row0, B);
        }
        if (!backward)
            memcpy(w->zs + (k + 1) * BD, y, BD * sizeof *y);
    }
    return CNF_OK;
}

cnf_status flow_forward_chunk(const cnf_flow *flow, cnf_flow_work *w, const double *X, size_t B,
                              flow_rows rows, flow_state_kind kind, gsl_rng *rng,
                              cnf_flow_stats *stats)
{
    size_t D = w->D, BD = B * D;
    size_t n = flow_state_size(kind, B, D);
    size_t K = kind == FLOW_STATE_Z ? 0 : flow_work_tangents(w);
    if (K == 1 && !rng)
        return cnf_error(CNF_EINVAL, "the %s divergence estimate needs a random number generator (rng is NULL)",
                         cnf_divergence_name(w->opt.divergence));
    double *y = w->y;
    cnf_flow_preprocess_rows(flow, X, B, y);
    memset(y + BD, 0, (n - BD) * sizeof *y);
    memcpy(w->zs, y, BD * sizeof *y);
    int record = kind == FLOW_STATE_TRAIN && !w->opt.adjoint.backsolve;
    return solve_blocks(flow, w, y, n, B, K, kind, 0, record, rng, rows, stats);
}

cnf_status flow_reverse_chunk(const cnf_flow *flow, cnf_flow_work *w, size_t B, size_t row0,
                              cnf_flow_stats *stats)
{
    flow_rows rows = { row0, 0, 0 };
    return solve_blocks(flow, w, w->y, B * w->D, B, 0, FLOW_STATE_Z, 1, 0, NULL, rows, stats);
}

cnf_status flow_block_backward(const cnf_flow *flow, cnf_flow_work *w, size_t k, size_t B,
                               size_t row0, const flow_integrand *l, double *a, double *grad_k,
                               double *dT, cnf_flow_stats *stats)
{
    size_t D = w->D, BD = B * D, Kt = flow_work_tangents(w);
    flow_block *blk = &w->blocks[k];
    block_ctx c;
    block_ctx_init(&c, flow, w, k, B, Kt, 2);
    c.l = l;
    /* the divergence term's constant cotangent on the tangent outputs:
     * w_div e_k (exact), or w_div eps of the block's noise (Hutchinson) */
    if (Kt == 1) {
        for (size_t i = 0; i < BD; i++)
            w->jvbar0[i] = l->w_div * c.v[i];
    } else {
        memset(w->jvbar0, 0, Kt * BD * sizeof *w->jvbar0);
        for (size_t kk = 0; kk < Kt; kk++)
            for (size_t b = 0; b < B; b++)
                w->jvbar0[(kk * B + b) * D + kk] = l->w_div;
    }
    double T = block_end_time(flow, k);
    cnf_adjoint_problem pb = { BD, blk->np, block_vjp, &c };
    /* the kept first step moves on only when the solve succeeds */
    double h = blk->h_bwd;
    double *h_start = w->opt.warm_start ? &h : NULL;
    cnf_ode_stats st;
    cnf_status s = cnf_adjoint_solve_warm(blk->adj, &pb, blk->rec, 0.0, 1, &T, w->zs + (k + 1) * BD,
                                          a, h_start, a, grad_k, dT, &st);
    if (stats)
        cnf_ode_stats_add(&stats->backward, &st);
    if (s != CNF_OK)
        return block_failure(s, &c, "adjoint solve", k, row0, B);
    blk->h_bwd = h;
    return CNF_OK;
}
