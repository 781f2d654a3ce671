/* adjoint.c — the adjoint method over the solver core: the backward state
 * [a, z, g] (z only when backsolving), jumps at observation times, the end-time
 * gradients. Derivation and sign conventions in include/cnf/adjoint.h
 * (docs/mathematics.md, "The adjoint"; Chen et al. 2018; the checkpointed variant after
 * CVODES' adjoint module, the seminorm after Kidger, Chen and Lyons 2021). */
#include "cnf/adjoint.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnf/size.h"
#include "names.h"

struct cnf_adjoint {
    size_t n, p;               /* state, parameters */
    size_t nb;                 /* backward state: n (+ n when backsolving) + p */
    size_t g_off;              /* where -g starts: n, or 2n when backsolving */
    cnf_adjoint_options opt;
    cnf_ode_solver *solver;    /* state nb; -g its quadratures */
    double *y;                 /* nb: [a | z | -g] (see adjoint_rhs) */
    double *z;                 /* n: z(t) interpolated from the record */
    double *f;                 /* n: f(z(t_i)) for the end-time gradients */
    double *gsum;              /* p: -g added up over the intervals between
                                  observations, each integrated from 0 */
    /* set per solve for the right-hand side */
    const cnf_adjoint_problem *prob;
    const cnf_ode_record *record;
    cnf_status inner;          /* a failure inside the rhs (interpolation) */
    double inner_t;
};

void cnf_adjoint_options_default(cnf_adjoint_options *opt)
{
    cnf_ode_options_default(&opt->solver);
    opt->backsolve = 0;
    opt->seminorm = 0;
    /* the more accurate gradient at the same backward evaluations on every
     * model measured (bench_grad_accuracy, bench/README.md) */
    opt->norm = CNF_ADJOINT_NORM_GROUPS;
    /* the error then falls with the tolerance on untrained flows too, at
     * the backward evaluations of the trained ones' (bench/README.md) */
    opt->gradient_tol = CNF_ADJOINT_GTOL_RELATIVE;
    opt->checkpoints = CNF_ODE_INTERP_DENSE;
    opt->reduce = NULL;
    opt->reduce_ctx = NULL;
}

static const char *const norm_names[] = {"rms", "groups"};
static const char *const gtol_names[] = {"entrywise", "relative"};

CNF_ENUM_NAMES(cnf_adjoint_norm, cnf_adjoint_norm_name, cnf_adjoint_norm_from_name,
               "adjoint norm", norm_names)
CNF_ENUM_NAMES(cnf_adjoint_gtol, cnf_adjoint_gtol_name, cnf_adjoint_gtol_from_name,
               "gradient tolerance", gtol_names)

/* (Re)build the solver for the current options: the backward state's size
 * depends on backsolve, the quadratures' place in the norm on seminorm. */
static cnf_status adjoint_setup(cnf_adjoint *adj)
{
    size_t n = adj->n, p = adj->p;
    size_t nb, bytes;
    if (cnf_size_add(n, p, &nb) || cnf_size_add(nb, adj->opt.backsolve ? n : 0, &nb)
        || cnf_size_mul(nb, sizeof *adj->y, &bytes))
        return cnf_error(CNF_ENOMEM, "an adjoint state of %zu + %zu values does not fit in memory",
                         n, p);
    if (nb != adj->nb || !adj->solver) {
        cnf_ode_solver_free(adj->solver);
        adj->solver = NULL;
        free(adj->y);
        adj->nb = nb;
        adj->g_off = nb - p;
        adj->y = malloc(bytes);
        if (!adj->y)
            return cnf_error(CNF_ENOMEM, "out of memory for an adjoint state of %zu", nb);
    }
    cnf_status s = adj->solver ? cnf_ode_solver_set_options(adj->solver, &adj->opt.solver)
                               : CNF_OK;
    if (!adj->solver) {
        adj->solver = cnf_ode_solver_alloc(nb, &adj->opt.solver);
        if (!adj->solver)
            return cnf_error(CNF_EINVAL, "adjoint solver for a state of %zu: %s", nb,
                             cnf_last_error());
    }
    /* g is an integral the rhs never reads: the stepper may skip its stage
     * inputs, and the seminorm leaves it out of the error norm (a and z
     * always enter it) */
    if (s == CNF_OK)
        s = cnf_ode_solver_set_quadratures(adj->solver, p, !adj->opt.seminorm);
    if (s == CNF_OK && adj->opt.norm == CNF_ADJOINT_NORM_GROUPS) {
        /* a, then z (backsolve; an empty group otherwise), then g */
        size_t sizes[3] = { n, adj->opt.backsolve ? n : 0, p };
        int g_mode = adj->opt.seminorm ? CNF_ODE_NORM_OUT
                     : adj->opt.gradient_tol == CNF_ADJOINT_GTOL_RELATIVE ? CNF_ODE_NORM_INTEGRAL
                                                                         : CNF_ODE_NORM_IN;
        int in[3] = { CNF_ODE_NORM_IN, CNF_ODE_NORM_IN, g_mode };
        s = cnf_ode_solver_set_norm_groups(adj->solver, 3, sizes, in);
    }
    /* every process holds its own rows of a and z, and its share of the
     * sum over rows that g integrates */
    if (s == CNF_OK)
        s = cnf_ode_solver_set_reduction(adj->solver, adj->opt.reduce, adj->opt.reduce_ctx, p);
    return s;
}

static cnf_status check_options(const cnf_adjoint_options *opt)
{
    if (opt->norm != CNF_ADJOINT_NORM_RMS && opt->norm != CNF_ADJOINT_NORM_GROUPS)
        return cnf_error(CNF_EINVAL, "adjoint options: unknown norm %d", (int)opt->norm);
    if (opt->gradient_tol != CNF_ADJOINT_GTOL_ENTRYWISE
        && opt->gradient_tol != CNF_ADJOINT_GTOL_RELATIVE)
        return cnf_error(CNF_EINVAL, "adjoint options: unknown gradient tolerance %d",
                         (int)opt->gradient_tol);
    if (opt->checkpoints != CNF_ODE_INTERP_HERMITE && opt->checkpoints != CNF_ODE_INTERP_DENSE)
        return cnf_error(CNF_EINVAL, "adjoint options: unknown checkpoint interpolation %d",
                         (int)opt->checkpoints);
    return CNF_OK;
}

cnf_adjoint *cnf_adjoint_alloc(size_t n, size_t p, const cnf_adjoint_options *opt)
{
    if (n == 0) {
        cnf_error(CNF_EINVAL, "adjoint: the state dimension n must be at least 1");
        return NULL;
    }
    cnf_adjoint *adj = calloc(1, sizeof *adj);
    if (!adj) {
        cnf_error(CNF_ENOMEM, "out of memory allocating an adjoint");
        return NULL;
    }
    adj->n = n;
    adj->p = p;
    if (opt && check_options(opt) != CNF_OK) {
        free(adj);
        return NULL;
    }
    if (opt)
        adj->opt = *opt;
    else
        cnf_adjoint_options_default(&adj->opt);
    size_t bytes;
    adj->z = cnf_size_mul(n, sizeof *adj->z, &bytes) ? NULL : malloc(bytes);
    adj->f = adj->z ? malloc(bytes) : NULL;
    /* one more than p, so that p = 0 still allocates */
    adj->gsum = cnf_size_mul(p + 1, sizeof *adj->gsum, &bytes) ? NULL : malloc(bytes);
    if (!adj->z || !adj->f || !adj->gsum) {
        cnf_adjoint_free(adj);
        cnf_error(CNF_ENOMEM, "out of memory allocating an adjoint of n = %zu, p = %zu", n, p);
        return NULL;
    }
    if (adjoint_setup(adj) != CNF_OK) {
        cnf_adjoint_free(adj);
        return NULL;
    }
    return adj;
}

void cnf_adjoint_free(cnf_adjoint *adj)
{
    if (!adj)
        return;
    cnf_ode_solver_free(adj->solver);
    free(adj->y);
    free(adj->z);
    free(adj->f);
    free(adj->gsum);
    free(adj);
}

cnf_status cnf_adjoint_set_options(cnf_adjoint *adj, const cnf_adjoint_options *opt)
{
    cnf_status s = check_options(opt);
    if (s != CNF_OK)
        return s;
    adj->opt = *opt;
    return adjoint_setup(adj);
}

size_t cnf_adjoint_dim(const cnf_adjoint *adj) { return adj->n; }
size_t cnf_adjoint_num_params(const cnf_adjoint *adj) { return adj->p; }

/* d/dt [a, z, -g] = [-(a^T f_z + l_z), f, a^T f_theta + l_theta]. The state
 * holds -g, so the P-long vjp output needs no negation per evaluation; the
 * solve is sign-symmetric (negation is exact and the error norm uses |.|),
 * so the result is bit for bit that of integrating g. */
static int adjoint_rhs(double t, const double *y, double *dy, void *params)
{
    cnf_adjoint *adj = params;
    const cnf_adjoint_problem *pb = adj->prob;
    size_t n = adj->n, p = adj->p;
    const double *a = y;
    const double *z;
    double *dz = NULL, *dg = dy + adj->g_off;
    if (adj->opt.backsolve) {
        z = y + n;
        dz = dy + n;
    } else {
        cnf_status s = cnf_ode_record_eval(adj->record, t, n, adj->z);
        if (s != CNF_OK) {
            adj->inner = s;
            adj->inner_t = t;
            return -1;
        }
        z = adj->z;
    }
    memset(dy, 0, n * sizeof *dy);
    memset(dg, 0, p * sizeof *dg);
    int rc = pb->vjp(t, z, a, dz, NULL, dy, p ? dg : NULL, pb->ctx);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < n; i++)
        dy[i] = -dy[i];
    return 0;
}

cnf_status cnf_adjoint_solve(cnf_adjoint *adj, const cnf_adjoint_problem *prob,
                             const cnf_ode_record *record, double t0, size_t n_obs,
                             const double *t_obs, const double *z_obs, const double *dz_obs,
                             double *a, double *grad, double *dt_obs, cnf_ode_stats *stats)
{
    return cnf_adjoint_solve_warm(adj, prob, record, t0, n_obs, t_obs, z_obs, dz_obs, NULL, a,
                                  grad, dt_obs, stats);
}

cnf_status cnf_adjoint_solve_warm(cnf_adjoint *adj, const cnf_adjoint_problem *prob,
                                  const cnf_ode_record *record, double t0, size_t n_obs,
                                  const double *t_obs, const double *z_obs, const double *dz_obs,
                                  double *h_start, double *a, double *grad, double *dt_obs,
                                  cnf_ode_stats *stats)
{
    size_t n = adj->n, p = adj->p;
    if (prob->n != n || prob->p != p)
        return cnf_error(CNF_EDIM, "adjoint: problem has n = %zu, p = %zu but the adjoint was made for n = %zu, p = %zu",
                         prob->n, prob->p, n, p);
    if (n_obs == 0 || !t_obs || !z_obs)
        return cnf_error(CNF_EINVAL, "adjoint: at least one observation time with its state is needed");
    if (!(t_obs[0] >= t0))
        return cnf_error(CNF_EINVAL, "adjoint: first observation time %g precedes the start time %g",
                         t_obs[0], t0);
    for (size_t i = 1; i < n_obs; i++)
        if (!(t_obs[i] > t_obs[i - 1]))
            return cnf_error(CNF_EINVAL, "adjoint: observation times must increase (t[%zu] = %g, t[%zu] = %g)",
                             i - 1, t_obs[i - 1], i, t_obs[i]);
    if (!adj->opt.backsolve && !record)
        return cnf_error(CNF_EINVAL, "adjoint: checkpoint mode needs the forward solve's record");

    if (stats)
        memset(stats, 0, sizeof *stats);
    adj->prob = prob;
    adj->record = record;
    adj->inner = CNF_OK;

    /* End-time gradients first, so that a may alias a row of dz_obs. */
    int end_rc = 0;
    double end_t = 0.0;
    for (size_t i = 0; dt_obs && i < n_obs && end_rc == 0; i++) {
        const double *zi = z_obs + i * n;
        const double *ai = dz_obs ? dz_obs + i * n : NULL;
        double l = 0.0;
        int last = (i + 1 == n_obs);
        end_rc = prob->vjp(t_obs[i], zi, ai, adj->f, last ? &l : NULL, NULL, NULL, prob->ctx);
        end_t = t_obs[i];
        double s = last ? l : 0.0;
        if (ai)
            for (size_t j = 0; j < n; j++)
                s += ai[j] * adj->f[j];
        dt_obs[i] = s;
    }
    /* Processes that share the solves (cnf_ode_solver_set_reduction) agree
     * on this verdict before any solve: one that stopped here alone would
     * leave the others waiting in the backward solve's first reduction. */
    if (dt_obs && adj->opt.reduce) {
        double failed = end_rc != 0;
        if (adj->opt.reduce(&failed, 1, adj->opt.reduce_ctx) != 0)
            return cnf_error(CNF_ERHS, "adjoint: the processes' reduction failed");
        if (failed > 0.0 && end_rc == 0)
            return cnf_error(CNF_ERHS, "adjoint: another process's dynamics failed at an "
                             "observation time");
    }
    if (end_rc != 0)
        return cnf_error(end_rc > 0 ? CNF_ENONFINITE : CNF_ERHS,
                         "adjoint: dynamics failed (%d) at observation time %g", end_rc, end_t);

    double *y = adj->y, *gsum = adj->gsum;
    memset(y, 0, adj->nb * sizeof *y);
    memset(gsum, 0, p * sizeof *gsum);
    for (size_t ii = n_obs; ii-- > 0;) {
        /* the jump at t_i, then the interval down to t_{i-1} (or t0) */
        if (dz_obs)
            for (size_t j = 0; j < n; j++)
                y[j] += dz_obs[ii * n + j];
        if (adj->opt.backsolve)
            memcpy(y + n, z_obs + ii * n, n * sizeof *y);
        double t_from = t_obs[ii];
        double t_to = ii > 0 ? t_obs[ii - 1] : t0;
        if (t_to == t_from)
            continue;
        cnf_ode_stats st;
        cnf_status s = cnf_ode_solve_warm(adj->solver, adjoint_rhs, adj, t_from, t_to, y, h_start,
                                          NULL, &st);
        if (stats)
            cnf_ode_stats_add(stats, &st);
        if (s != CNF_OK && adj->inner != CNF_OK)
            return cnf_error(adj->inner, "adjoint: z(t) at t = %.17g not available from the forward record: %s",
                             adj->inner_t, cnf_last_error());
        if (s != CNF_OK)
            return cnf_error(s, "adjoint: backward solve from t = %.17g to %.17g failed: %s", t_from, t_to,
                             cnf_last_error());
        /* each interval integrates g from 0 (what an integral group's
         * projection assumes) */
        for (size_t i = 0; i < p; i++)
            gsum[i] += y[adj->g_off + i];
        memset(y + adj->g_off, 0, p * sizeof *y);
    }
    memcpy(a, y, n * sizeof *a);
    /* the state held -g; 0.0 - x rather than -x keeps a zero +0 */
    for (size_t i = 0; i < p; i++)
        grad[i] = 0.0 - gsum[i];
    return CNF_OK;
}
