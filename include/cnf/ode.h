/* cnf/ode.h — the one ODE solver core of cnf.
 *
 * Training, sampling and density evaluation all integrate
 *
 *     dy/dt = f(t, y),   y(t0) given,   y in R^n,
 *
 * with explicit Runge-Kutta methods, forwards (t1 > t0) or backwards
 * (t1 < t0) in time. The state is one flat double array; a batch of B samples
 * of dimension D is simply n = B*D (plus any quadrature components) and shares
 * one step size.
 *
 * Methods (cnf_ode_method):
 *   adaptive: dopri5 (Dormand-Prince 5(4), FSAL; the default, as in FFJORD),
 *             and GSL odeiv2's rkf45, rkck, rk8pd through the same interface;
 *   fixed step: euler, midpoint, rk4 (step size opt.h0, the last step
 *             shortened to land on t1).
 *
 * Error control (adaptive methods). With e the stepper's error estimate and
 * the state partitioned into contiguous groups G_1 .. G_r, each in the norm
 * or not (cnf_ode_solver_set_norm_groups; a new solver has one group, the
 * whole state),
 *
 *     w_i   = e_i / (atol + rtol*max(|y_i|, |ynew_i|))
 *     S_g   = sum_{i in G_g} w_i^2,   N_g = |G_g|       (per-group sums)
 *     RMS_g = sqrt(S_g / N_g)                          (per-group RMS)
 *     err   = max over the groups in the norm of RMS_g
 *
 * With one group this is the usual RMS norm (Hairer-Norsett-Wanner, scipy);
 * with one group per tensor it is torchdiffeq's default, the largest
 * per-tensor RMS, under which a long group's small errors cannot dilute a
 * short group's large ones.
 *
 * An integral group (CNF_ODE_NORM_INTEGRAL) is judged against its own
 * size where that is below 1: for it, atol above becomes atol * min(1, R)
 * with
 *
 *     R = RMS_{i in G_g} max(|y_i|, |ynew_i|) * max(1, |t1 - t0| / |tnew - t0|),
 *
 * the integral's size so far projected linearly to the end of the solve's
 * interval [t0, t1] (tnew the attempt's end; the automatic first step and
 * cnf_ode_solver_error_norm take the projection as 1; R = 0, nothing
 * integrated yet, leaves atol). It is meant for an integral that starts at
 * 0, such as the adjoint's parameter gradient g: its entries may all be
 * far below 1 (an RMS of 5e-4 on an untrained flow), where an absolute
 * atol would allow a relative error of atol / |g| however tight the
 * tolerance, and the error would stop falling with it. With atol = rtol =
 * tol its RMS error per step is then about tol times its size. Never
 * looser than an ordinary group: from R = 1 up it is one. A state distributed over processes adds its
 * S_g and N_g across them between the first two stages
 * (cnf_ode_solver_set_reduction). A step is accepted when err <= 1; the next step is
 * h * clamp(safety * err^(-1/(q+1)), min_factor, max_factor) with q the lower
 * order of the pair, at most h right after a rejection; a rejected step is
 * retried with h * clamp(safety * err^(-1/(q+1)), min_factor, 0.9): it
 * always shrinks by 10% or more, even with safety near 1.
 *
 * Quadratures (CVODES's word): the last nq components of a state may be
 * declared integrals the right-hand side never reads (their derivatives
 * depend on the other components only), with cnf_ode_solver_set_quadratures.
 * The stepper then leaves their stage values unformed, and with
 * in_error_norm = 0 they stay out of the error norm (as CVodeSetQuadErrCon).
 * The adjoint's parameter gradient is such an integral: leaving it out of
 * the norm is the seminorm of Kidger, Chen and Lyons (2021).
 *
 * The right-hand side follows the CVODES contract:
 *     return 0   success;
 *     return > 0 recoverable: the step is rejected and retried with a smaller
 *                step (return it for NaN/Inf in the output, for example);
 *     return < 0 fatal: the solve stops with CNF_ERHS.
 * The solver also treats a non-finite f or non-finite new state as
 * recoverable. Ends other than success:
 *     CNF_ESTEP_UNDERFLOW  |h| fell below hmin (or below what t can resolve);
 *     CNF_EMAX_STEPS       more than max_steps steps (accepted + rejected);
 *     CNF_ENONFINITE       the state stayed non-finite through max_retries
 *                          consecutive step halvings;
 *     CNF_ERHS             the right-hand side returned < 0.
 * Each sets a message (cnf_last_error) with the time reached and the step.
 *
 * Dense output: when a cnf_ode_record is passed to cnf_ode_solve, every
 * accepted step's (t, y, f) is appended to it, and cnf_ode_record_eval()
 * interpolates y(t) anywhere inside the recorded span: by cubic Hermite
 * interpolation (third order; the default), or, for a record set to
 * CNF_ODE_INTERP_DENSE, by the stepper's own continuous extension where it
 * has one (dopri5: the fourth-order interpolant of Dormand-Prince and
 * Shampine, Hairer-Norsett-Wanner II.6, one more vector per step; other
 * methods fall back to Hermite). The checkpointed adjoint uses this to
 * recover z(t) while it integrates backwards.
 *
 * Typical call:
 *
 *     cnf_ode_options opt;
 *     cnf_ode_options_default(&opt);        // dopri5, rtol = atol = 1e-6
 *     opt.rtol = opt.atol = 1e-8;
 *     cnf_ode_solver *s = cnf_ode_solver_alloc(n, &opt);
 *     cnf_ode_stats st;
 *     cnf_status rc = cnf_ode_solve(s, rhs, params, 0.0, 1.0, y, NULL, &st);
 *     ...
 *     cnf_ode_solver_free(s);
 *
 * A solver holds all its workspaces (allocated once in _alloc), so a solve
 * does not allocate, except for growing a record. A solver is not
 * thread-safe; use one per thread.
 */
#ifndef CNF_ODE_H
#define CNF_ODE_H

#include <stddef.h>

#include "cnf/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    CNF_ODE_DOPRI5 = 0, /* Dormand-Prince 5(4), FSAL, adaptive (default) */
    CNF_ODE_RKF45,      /* GSL odeiv2 Runge-Kutta-Fehlberg 4(5), adaptive */
    CNF_ODE_RKCK,       /* GSL odeiv2 Cash-Karp 4(5), adaptive */
    CNF_ODE_RK8PD,      /* GSL odeiv2 Prince-Dormand 8(9), adaptive */
    CNF_ODE_EULER,      /* explicit Euler, fixed step, order 1 */
    CNF_ODE_MIDPOINT,   /* explicit midpoint, fixed step, order 2 */
    CNF_ODE_RK4,        /* classical Runge-Kutta, fixed step, order 4 */
    CNF_ODE_NUM_METHODS
} cnf_ode_method;

/* Name of a method ("dopri5", "rkf45", "rkck", "rk8pd", "euler", "midpoint",
 * "rk4") and the reverse look-up (CNF_EINVAL with a message listing the valid
 * names for an unknown one). */
const char *cnf_ode_method_name(cnf_ode_method method);
cnf_status cnf_ode_method_from_name(const char *name, cnf_ode_method *method);
/* 1 for adaptive methods, 0 for fixed-step ones. */
int cnf_ode_method_is_adaptive(cnf_ode_method method);
/* Order of the method (the higher order of an embedded pair: 5 for dopri5). */
int cnf_ode_method_order(cnf_ode_method method);

/* Right-hand side: write f(t, y) into dydt (both length n). See the return
 * contract above. */
typedef int (*cnf_ode_rhs)(double t, const double *y, double *dydt, void *params);

typedef struct {
    cnf_ode_method method;      /* default CNF_ODE_DOPRI5 */
    double rtol;                /* relative tolerance, default 1e-6 */
    double atol;                /* absolute tolerance, default 1e-6 */
    double h0;                  /* adaptive: first step (0 = automatic, the
                                   default); fixed-step: the step size
                                   (must be > 0) */
    double hmin;                /* smallest |h| allowed, default 0 (then only
                                   the resolution of t limits it) */
    double hmax;                /* largest |h|, default 0 = no limit */
    size_t max_steps;           /* accepted + rejected steps, default 100000 */
    int max_retries;            /* consecutive halvings on non-finite values
                                   before CNF_ENONFINITE, default 20 */
    double safety;              /* step controller safety factor, default 0.9 */
    double min_factor;          /* smallest step shrink, default 0.2 */
    double max_factor;          /* largest step growth, default 10 */
} cnf_ode_options;

void cnf_ode_options_default(cnf_ode_options *opt);

/* Statistics of one solve (cnf_ode_solve resets them at its start, and
 * fills them on failure too). nfe counts every call of the right-hand side:
 * f(t0, y0), the automatic initial step's one probe, the stages of every
 * attempted step (dopri5: 6, rkf45 and rkck: 5, rk8pd: 12, euler: 0,
 * midpoint: 1, rk4: 3, the first stage being known), and, for methods other
 * than dopri5 (FSAL), f at each accepted point that is needed next or
 * recorded. A rejected step costs no re-evaluation of f(t, y). */
typedef struct {
    size_t nfe;        /* right-hand side evaluations */
    size_t accepted;   /* accepted steps */
    size_t rejected;   /* rejected steps (error too large or non-finite) */
    double h_last;     /* the last accepted step size (signed) */
} cnf_ode_stats;

/* Add b's counters into a (h_last taken from b). */
void cnf_ode_stats_add(cnf_ode_stats *a, const cnf_ode_stats *b);

typedef struct cnf_ode_solver cnf_ode_solver;

/* A solver for states of length n with the given options (copied). NULL on failure (cnf_last_error says why:
 * invalid options or out of memory). */
cnf_ode_solver *cnf_ode_solver_alloc(size_t n, const cnf_ode_options *opt);
void cnf_ode_solver_free(cnf_ode_solver *solver);   /* NULL is fine */

/* Replace the options (same n; the quadratures stay). */
cnf_status cnf_ode_solver_set_options(cnf_ode_solver *solver, const cnf_ode_options *opt);
size_t cnf_ode_solver_dim(const cnf_ode_solver *solver);

/* Declare the last nq components of the state quadratures (see above): the
 * right-hand side reads only y[0 .. n - nq) and may see stale values in the
 * rest during a step; accepted states, records and error estimates stay
 * complete. It also resets the norm to one RMS: over the whole state, or
 * with in_error_norm = 0 over the first n - nq components, the quadratures
 * left out (nq = n with it is refused: the norm would be empty); call
 * cnf_ode_solver_set_norm_groups afterwards for groups. nq = 0 (a new
 * solver's setting) makes every component an ordinary one. CNF_EINVAL for
 * nq > n. */
cnf_status cnf_ode_solver_set_quadratures(cnf_ode_solver *solver, size_t nq, int in_error_norm);

/* How a norm group enters the error norm (see "Error control"). */
enum {
    CNF_ODE_NORM_OUT = 0,     /* left out */
    CNF_ODE_NORM_IN = 1,      /* scaled by atol + rtol*max(|y_i|, |ynew_i|) */
    CNF_ODE_NORM_INTEGRAL = 2 /* an integral from 0: atol relative to its
                                 projected size R */
};

/* The error norm's groups (see "Error control"): n_groups >= 1 contiguous
 * groups of sizes[0], sizes[1], ... components in state order, summing to
 * n (a size may be 0); group g enters the norm as in_norm[g] says (a
 * CNF_ODE_NORM_* mode; any other value is refused), and at least one
 * counting group must be non-empty. Under a reduction an integral group
 * must lie among the summed components. The step's error is the largest
 * RMS of the counting groups. Independent of the quadratures (which only
 * say what the right-hand side reads); the arrays are copied. CNF_EINVAL
 * (the solver unchanged) when the sizes do not sum to n or nothing
 * counts, CNF_ENOMEM. Example, the backsolve adjoint's state [a | z | g]
 * with g out (the seminorm):
 *     size_t sz[3] = { n, n, p };  int in[3] = { 1, 1, 0 };
 *     cnf_ode_solver_set_norm_groups(solver, 3, sz, in); */
cnf_status cnf_ode_solver_set_norm_groups(cnf_ode_solver *solver, size_t n_groups,
                                          const size_t *sizes, const int *in_norm);

/* A reduction across processes: a state whose rows are spread over several
 * processes (threads, MPI ranks), each solving its own part with its own
 * solver, takes the steps one solver would take on the whole state.
 *
 *     int sum(double *buf, size_t n, void *ctx)
 *
 * must replace buf (n doubles) in place by the elementwise sum of every
 * process's buf, give all processes the same result, and return 0 (non-zero:
 * it failed, and the solve stops with CNF_ERHS). Every process calls it
 * the same number of times with the same n (MPI_Allreduce with MPI_SUM is
 * one; the solver itself knows nothing of processes).
 *
 * The state's components are of two kinds. The first n - n_summed are
 * distributed: each process holds other components (its rows), so the
 * groups' sums of squares S_g and counts N_g add across processes. The last
 * n_summed are partial sums: each process holds its share of components
 * whose value is the sum over processes (an adjoint's parameter gradient,
 * a regularizer's integral), so their e, y and ynew are summed elementwise
 * first and then scaled and counted once. Each error norm of a step attempt
 * (and the three of the automatic first step) is one call of sum; a method
 * without FSAL (rkf45, rkck, rk8pd) makes a second one for f at an
 * accepted point, as does a fixed-step method per step.
 *
 * The reduction also carries each process's verdict on the attempt, so
 * that all accept, reject or stop together: one process's non-finite
 * value (or right-hand side > 0) rejects the attempt everywhere; one's
 * fatal failure (right-hand side < 0, out of memory, a non-finite initial
 * state) stops every solve after that attempt's reduction — never leaving
 * the others waiting — the failing process with its own status and
 * message, the others with CNF_ERHS saying another process failed.
 * Accepted and rejected are then those of one solver on the whole state,
 * and so is nfe but in an attempt where a right-hand side returned > 0
 * (one solver stops evaluating that attempt's stages there; a process
 * whose rows did not fail evaluates all of its own); the states equal one
 * solver's up to the order of summation in the norms, the step sizes to
 * the rounding of the error estimates (about 1e-9 relative). sum = NULL
 * removes the reduction (a new solver has none); ctx is borrowed. CNF_EINVAL
 * for n_summed > n or an integral norm group not wholly among the summed
 * components, CNF_ENOMEM. Typical call, two
 * halves of a batch on two MPI ranks:
 *     cnf_ode_solver_set_reduction(solver, allreduce_sum, &comm, 0); */
typedef int (*cnf_ode_sum)(double *buf, size_t n, void *ctx);
cnf_status cnf_ode_solver_set_reduction(cnf_ode_solver *solver, cnf_ode_sum sum, void *ctx,
                                        size_t n_summed);

/* The error norm a step with error estimate e (n) from y to ynew (n each)
 * gets under the solver's tolerances and groups, as the step controller
 * computes it (err above; an integral group's projection taken as 1, a
 * step that ends its interval). NaN for a NULL argument. Not thread-safe on one
 * solver (it uses the solver's scratch). */
double cnf_ode_solver_error_norm(const cnf_ode_solver *solver, const double *e, const double *y,
                                 const double *ynew);

/* A growing list of accepted steps (t, y, f) for dense output. */
typedef struct cnf_ode_record cnf_ode_record;

/* How a record interpolates between its points. */
typedef enum {
    CNF_ODE_INTERP_HERMITE = 0, /* cubic Hermite of (y, f) at both ends
                                   (third order; a new record's setting) */
    CNF_ODE_INTERP_DENSE        /* the stepper's continuous extension
                                   (dopri5: fourth order), stored with each
                                   step; Hermite for steps of methods
                                   without one */
} cnf_ode_interp;

/* "hermite", "dense" (as the checkpoints key of `cnf train` spells them);
 * from_name gives CNF_EINVAL with a message listing the names. */
const char *cnf_ode_interp_name(cnf_ode_interp interp);
cnf_status cnf_ode_interp_from_name(const char *name, cnf_ode_interp *interp);

cnf_ode_record *cnf_ode_record_alloc(size_t n);
void cnf_ode_record_free(cnf_ode_record *record);   /* NULL is fine */
/* Forget the points but keep the memory, so that repeated solves of the same
 * size stop allocating once the record has grown. */
void cnf_ode_record_clear(cnf_ode_record *record);
size_t cnf_ode_record_size(const cnf_ode_record *record);   /* points kept */
/* Set before a solve records: steps recorded under CNF_ODE_INTERP_DENSE keep
 * their stepper's dense coefficient (a third vector per point), and
 * cnf_ode_record_eval uses it while the record stays set to DENSE.
 * CNF_EINVAL for an unknown value. */
cnf_status cnf_ode_record_set_interp(cnf_ode_record *record, cnf_ode_interp interp);
cnf_ode_interp cnf_ode_record_interp(const cnf_ode_record *record);
/* Point i: time, state and derivative (borrowed, valid until the record next
 * changes). */
double cnf_ode_record_time(const cnf_ode_record *record, size_t i);
const double *cnf_ode_record_state(const cnf_ode_record *record, size_t i);
const double *cnf_ode_record_deriv(const cnf_ode_record *record, size_t i);
/* y(t) by the record's interpolation between the two recorded points that
 * bracket t (either direction of integration; the recorded times must be
 * monotone, so append consecutive solves in one direction only, and clear the
 * record before recording a solve in the other). t outside the recorded span
 * (beyond a relative slack of 1e-12) gives CNF_EINVAL. Only the first m
 * components are written (m <= n), so a caller can interpolate just z out of
 * an augmented state [z, q]. */
cnf_status cnf_ode_record_eval(const cnf_ode_record *record, double t, size_t m, double *y);

/* Integrate from t0 to t1 (t1 < t0 integrates backwards). y holds y(t0) on
 * entry and y(t1) on success; on failure it holds the last accepted state.
 * record (may be NULL) receives the initial point and every accepted step;
 * it is not cleared first, so that consecutive solves can append to it (a
 * repeated time point at a junction is kept once). stats (may be NULL) gets
 * this solve's counters. */
cnf_status cnf_ode_solve(cnf_ode_solver *solver, cnf_ode_rhs rhs, void *params,
                         double t0, double t1, double *y,
                         cnf_ode_record *record, cnf_ode_stats *stats);

/* Warm first steps. cnf_ode_solve_warm is cnf_ode_solve with an in/out
 * first step, as gsl_odeiv2_evolve_apply takes its h: on entry *h_start > 0
 * is the size of the first step to try (0: the options' h0, automatic or
 * the user's); once a step has been accepted it receives the first step a
 * solve of a nearby problem should try next (the same one with slightly
 * changed parameters, as in successive training iterations): the size of
 * the first accepted step times the controller's factor for its error
 * (without the no-growth rule after a rejection), at most
 * CNF_ODE_WARM_GROWTH. Handing it from solve to solve skips the automatic
 * first step's probe and its usual undershoot. h_start = NULL is
 * cnf_ode_solve; fixed-step methods ignore it and leave it unchanged. */
cnf_status cnf_ode_solve_warm(cnf_ode_solver *solver, cnf_ode_rhs rhs, void *params,
                              double t0, double t1, double *y, double *h_start,
                              cnf_ode_record *record, cnf_ode_stats *stats);

/* The largest growth of a warm first step over the first accepted step: a
 * solve tries larger first steps gradually, each too large one costing a
 * rejected step. */
#define CNF_ODE_WARM_GROWTH 2.0

#ifdef __cplusplus
}
#endif

#endif /* CNF_ODE_H */
