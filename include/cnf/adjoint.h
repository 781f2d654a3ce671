/* cnf/adjoint.h — gradients of ODE solutions by the adjoint method, over the
 * solver core (cnf/ode.h). docs/mathematics.md, "The adjoint"; derivation
 * after Pontryagin, Chen et al. (2018, "Neural ODEs") and the Lagrange-multiplier walk-through
 * of seeds 000/002 (whose signs differ: the ones below are the project's).
 *
 * Problem. A state z in R^n follows dz/dt = f(z, t; theta), theta in R^p,
 * from z(t0) to the last observation time T = t_n. The loss is
 *
 *     L = sum_{i=1..n_obs} Loss_i(z(t_i))  +  int_{t0}^{T} l(z, t, theta) dt
 *
 * with t0 <= t_1 < t_2 < ... < t_n = T. It covers the three shapes of seed 000:
 *     final-state loss   n_obs = 1, t_1 = T, Phi = Loss_1, l = 0;
 *     integral loss      l != 0 (the CNF likelihood: l = -(1/B) sum div + ...),
 *                        possibly with a final-state term as well;
 *     observations       n_obs > 1 (fitting a trajectory), l = 0 or not.
 *
 * Derivation (summary). Add a multiplier a(t) on the constraint dz/dt - f = 0:
 *     L = sum_i Loss_i + int (l - a^T (dz/dt - f)) dt.
 * Differentiate w.r.t. theta with s = dz/dtheta and integrate a^T ds/dt by
 * parts on each interval (t_{i-1}, t_i). The terms in s vanish when
 *     da/dt = -a^T df/dz - dl/dz         between observations,
 *     a(T)  = dLoss_n/dz(T),
 *     a(t_i^-) = a(t_i^+) + dLoss_i/dz(t_i)   (a jump at each observation),
 * leaving
 *     dL/dtheta = int_{t0}^{T} ( a^T df/dtheta + dl/dtheta ) dt,
 *     dL/dz(t0) = a(t0),
 *     dL/dT     = a(T)^T f(z(T), T) + l(z(T), T),
 *     dL/dt_i   = dLoss_i/dz(t_i)^T f(z(t_i), t_i)     (i < n; l is continuous).
 * Backwards in time the solver integrates the state [a, z, g] (z only when
 * backsolving) from T down to t0 with the derivatives (in t, so the solver's
 * negative steps do the reversal):
 *     da/dt = -(a^T df/dz + dl/dz)
 *     dz/dt =  f(z, t)                        (backsolve only)
 *     dg/dt = -(a^T df/dtheta + dl/dtheta),   g(T) = 0, so g(t0) = dL/dtheta
 * g is a quadrature of the backward solve (cnf_ode_solver_set_quadratures):
 * nothing reads it, so its stage values are never formed.
 *
 * z(t) on the way back comes either
 *   - from the checkpoints of the forward solve (default): the caller passes
 *     the cnf_ode_record its forward cnf_ode_solve filled, and z(t) is its
 *     interpolant (cnf_ode_record_eval: cubic Hermite, or the forward
 *     stepper's own fourth-order continuous extension when the record was
 *     made with CNF_ODE_INTERP_DENSE, see checkpoints below; only the first n
 *     components of the recorded state are read, so an augmented forward
 *     state [z, q, ...] is fine); accurate, memory ~ steps kept;
 *   - or by backsolving z alongside a (torchdiffeq's way: no memory, but
 *     inaccurate for contracting dynamics, whose reversal is expanding). At
 *     each observation z is reset to the forward z(t_i) (as torchdiffeq does).
 *
 * The backward error norm is one RMS over the state (CNF_ADJOINT_NORM_RMS)
 * or the largest RMS of its groups a, z, g (CNF_ADJOINT_NORM_GROUPS,
 * torchdiffeq's choice; cnf_ode_solver_set_norm_groups). Under one RMS the
 * p entries of g outnumber a's n and their small errors dilute a's: a's
 * error may be sqrt((n+p)/n) times the tolerance. Under the groups, g's
 * absolute tolerance is by default relative to g's own size where that is
 * below 1 (gradient_tol, CNF_ODE_NORM_INTEGRAL). g starts at 0 on each
 * interval between observations and is added up over them outside the
 * solver, so that with several observations each interval's share is
 * judged against its own size (shares that cancel across intervals are
 * not controlled relative to their total), and the entrywise and one-RMS
 * norms too see the interval's g rather than the running total (with one
 * observation, all cnf_flow uses, nothing changes). The seminorm option
 * (Kidger, Chen and Lyons 2021) leaves g out of the norm: g never feeds back
 * into the dynamics, so its error need not limit the step size.
 *
 * The dynamics enter through one callback, the vector-Jacobian product:
 *
 *   int vjp(double t, const double *z, const double *a,
 *           double *f, double *l, double *zbar, double *thetabar, void *ctx)
 *     z: n, a: n (may be NULL: treat as zero)
 *     f: n          if non-NULL, write f(z, t)
 *     l: 1          if non-NULL, write l(z, t) (0 without an integral loss)
 *     zbar: n       if non-NULL, ADD a^T df/dz + dl/dz
 *     thetabar: p   if non-NULL, ADD a^T df/dtheta + dl/dtheta
 *   returns 0 ok, > 0 recoverable (non-finite values: the step is retried
 *   smaller), < 0 fatal — the solver core's contract. The adjoint zeroes
 *   zbar and thetabar before each call. One call per backward right-hand side
 *   evaluation: a network does one forward and one reverse sweep.
 *
 * Typical call (final-state loss, checkpoints):
 *
 *     cnf_ode_solve(fwd, rhs, ctx, 0, T, y, rec, &st);    // y = z(T)
 *     // a = dPhi/dz(T)
 *     cnf_adjoint_options ao;  cnf_adjoint_options_default(&ao);
 *     cnf_adjoint *adj = cnf_adjoint_alloc(n, p, &ao);
 *     cnf_adjoint_problem pb = { n, p, vjp, ctx };
 *     double tT = T;
 *     cnf_adjoint_solve(adj, &pb, rec, 0.0, 1, &tT, y, a, a, grad, dT, &bst);
 *     // a = dL/dz(0), grad = dL/dtheta, dT[0] = dL/dT
 *
 * Shapes: n state, p parameters, n_obs observations.
 */
#ifndef CNF_ADJOINT_H
#define CNF_ADJOINT_H

#include <stddef.h>

#include "cnf/ode.h"
#include "cnf/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef int (*cnf_adjoint_vjp)(double t, const double *z, const double *a, double *f,
                               double *l, double *zbar, double *thetabar, void *ctx);

typedef struct {
    size_t n;               /* state dimension */
    size_t p;               /* parameter count */
    cnf_adjoint_vjp vjp;    /* see above */
    void *ctx;              /* passed to vjp, borrowed */
} cnf_adjoint_problem;

/* The backward solve's error norm (cnf/ode.h, "Error control"). */
typedef enum {
    CNF_ADJOINT_NORM_RMS = 0, /* one RMS over the whole backward state [a, z, g]
                                 (g out under the seminorm): g's p entries,
                                 usually many more than a's n, dilute a's
                                 error (p/n = 46 on the toy flow) */
    CNF_ADJOINT_NORM_GROUPS   /* the largest of the RMS norms of the groups a,
                                 z (backsolve only) and g (out under the
                                 seminorm), as torchdiffeq's per-tensor max */
} cnf_adjoint_norm;

/* "rms", "groups"; from_name gives CNF_EINVAL with a message listing the
 * names. */
const char *cnf_adjoint_norm_name(cnf_adjoint_norm norm);
cnf_status cnf_adjoint_norm_from_name(const char *name, cnf_adjoint_norm *norm);

/* How the grouped norm judges the error of g, the parameter gradient. */
typedef enum {
    CNF_ADJOINT_GTOL_ENTRYWISE = 0, /* each entry against atol + rtol*|g_i|, as
                                       any state: where the gradient's entries
                                       are far below atol (an untrained flow's
                                       are ~5e-4) the relative error allowed is
                                       atol / |g| and stops falling with the
                                       tolerance */
    CNF_ADJOINT_GTOL_RELATIVE       /* g as an integral group
                                       (CNF_ODE_NORM_INTEGRAL): atol relative to
                                       the size g is heading for where that is
                                       below 1 (never looser than ENTRYWISE), so
                                       that its relative error follows the
                                       tolerance */
} cnf_adjoint_gtol;

/* "entrywise", "relative"; from_name gives CNF_EINVAL with a message
 * listing the names. */
const char *cnf_adjoint_gtol_name(cnf_adjoint_gtol gtol);
cnf_status cnf_adjoint_gtol_from_name(const char *name, cnf_adjoint_gtol *gtol);

typedef struct {
    cnf_ode_options solver; /* backward solves (own tolerances).
                               Default: cnf_ode_options_default */
    int backsolve;          /* 0 (default): z from the forward record;
                               1: integrate z backwards with a */
    int seminorm;           /* 1: g left out of the error norm; default 0 */
    cnf_adjoint_norm norm;  /* default CNF_ADJOINT_NORM_GROUPS */
    cnf_adjoint_gtol gradient_tol; /* default CNF_ADJOINT_GTOL_RELATIVE;
                               for the grouped norm only (one RMS over
                               [a, z, g] has no group of g's own and stays
                               entrywise) and moot under the seminorm */
    cnf_ode_interp checkpoints; /* checkpoint mode: the interpolation the
                               forward record is to be made with
                               (cnf_ode_record_set_interp; cnf_flow sets its
                               records from this). The adjoint reads a record
                               as it was recorded. Default DENSE. */
    cnf_ode_sum reduce;     /* the backward solves' reduction across the
                               processes that each hold some of the rows
                               of a and z (cnf_ode_solver_set_reduction),
                               g being each one's partial sum: its last p
                               components are summed. Default NULL (one
                               process); cnf_flow sets it from its own */
    void *reduce_ctx;       /* reduce's ctx (borrowed) */
} cnf_adjoint_options;

void cnf_adjoint_options_default(cnf_adjoint_options *opt);

/* The backward solver and its buffers for a state of n and p parameters.
 * NULL on failure (message says why). */
typedef struct cnf_adjoint cnf_adjoint;

cnf_adjoint *cnf_adjoint_alloc(size_t n, size_t p, const cnf_adjoint_options *opt);
void cnf_adjoint_free(cnf_adjoint *adj);       /* NULL is fine */
/* Replace the options; reallocates the backward state and its solver only
 * when backsolve changes (a new method replaces the stepper's workspaces). */
cnf_status cnf_adjoint_set_options(cnf_adjoint *adj, const cnf_adjoint_options *opt);
size_t cnf_adjoint_dim(const cnf_adjoint *adj);      /* n */
size_t cnf_adjoint_num_params(const cnf_adjoint *adj); /* p */

/* The backward pass.
 *   record  the forward solve's record from t0 to T (checkpoint mode; may be
 *           NULL with backsolve), borrowed
 *   t0      start time of the forward solve
 *   t_obs   n_obs increasing observation times, t0 <= t_obs[0], T = last
 *   z_obs   n_obs x n: z(t_i) from the forward solve (backsolve starts from
 *           the last and resets at each; the end-time gradients use them)
 *   dz_obs  n_obs x n: dLoss_i/dz(t_i), or NULL for none (integral loss only)
 * Outputs:
 *   a       n: dL/dz(t0) (may alias dz_obs: written last)
 *   grad    p: dL/dtheta (overwritten)
 *   dt_obs  n_obs: dL/dt_i, the last one dL/dT (may be NULL)
 *   stats   the backward solves' counters summed (may be NULL)
 * A failed backward solve returns its status with a message naming the
 * interval. */
cnf_status cnf_adjoint_solve(cnf_adjoint *adj, const cnf_adjoint_problem *prob,
                             const cnf_ode_record *record, double t0, size_t n_obs,
                             const double *t_obs, const double *z_obs, const double *dz_obs,
                             double *a, double *grad, double *dt_obs, cnf_ode_stats *stats);

/* The backward pass with a warm first step, the counterpart of CVODES's
 * CVodeSetInitStepB: h_start (in/out, may be NULL = cnf_adjoint_solve) is
 * handed to the backward solves as cnf_ode_solve_warm's, interval after
 * interval from the last observation down to t0, so that on return it
 * holds the first step the next backward pass of a nearby problem should
 * try. */
cnf_status cnf_adjoint_solve_warm(cnf_adjoint *adj, const cnf_adjoint_problem *prob,
                                  const cnf_ode_record *record, double t0, size_t n_obs,
                                  const double *t_obs, const double *z_obs, const double *dz_obs,
                                  double *h_start, double *a, double *grad, double *dt_obs,
                                  cnf_ode_stats *stats);

#ifdef __cplusplus
}
#endif

#endif /* CNF_ADJOINT_H */
