/* ode_impl.h — private: the stepper table behind cnf/ode.h.
 *
 * The solver is built from small parts, as GSL's odeiv2 is: a stepper makes
 * one trial step (and, for embedded pairs, an error estimate); ode.c owns the
 * error norm, the accept/reject loop with its counters, the step controller
 * and the driver. A new method is one new file defining one
 * cnf_ode_stepper_type and one line in the table in ode.c. */
#ifndef CNF_ODE_IMPL_H
#define CNF_ODE_IMPL_H

#include <stddef.h>

#include "cnf/ode.h"

/* The right-hand side as the steppers see it: every call goes through
 * cnf_ode_eval_call so that the solve's nfe counter is exact. */
typedef struct {
    cnf_ode_rhs rhs;
    void *params;
    size_t *nfe;
    size_t nread; /* stages need only y[0 .. nread) formed (<= n; the rest are
                     quadratures, see cnf_ode_solver_set_quadratures) */
} cnf_ode_eval;

static inline int cnf_ode_eval_call(const cnf_ode_eval *ev, double t, const double *y,
                                    double *dydt)
{
    ++*ev->nfe;
    return ev->rhs(t, y, dydt, ev->params);
}

typedef struct {
    const char *name;
    int order;     /* order of the propagated solution */
    int err_order; /* q, order of the embedded (lower) solution; 0 = no error
                      estimate (fixed-step method) */
    int fsal;      /* 1: apply also returns fnew = f(t+h, ynew) */
    /* Private state for states of length n (workspaces); NULL on failure. */
    void *(*alloc)(size_t n);
    void (*free)(void *state);
    /* One trial step from (t, y) with step h (signed), given f0 = f(t, y).
     * Writes ynew (n), yerr (n, absolute error estimate; only when err_order
     * > 0) and fnew (n, only when fsal). Never writes y or f0. Returns the
     * first non-zero right-hand side code (the step is then void) or 0. */
    int (*apply)(void *state, size_t n, const cnf_ode_eval *ev, double t, double h,
                 const double *y, const double *f0, double *ynew, double *yerr,
                 double *fnew);
    /* Optional (NULL: none): after an accepted apply, the step's dense-output
     * coefficient d (n) such that y(t + s h) = cubic Hermite of (y, f0, ynew,
     * fnew) + s^2 (1-s)^2 d is the method's own continuous extension. */
    void (*dense)(const void *state, size_t n, double h, const double *f0, const double *fnew,
                  double *d);
} cnf_ode_stepper_type;

extern const cnf_ode_stepper_type cnf_ode_dopri5_type;
extern const cnf_ode_stepper_type cnf_ode_rkf45_type;
extern const cnf_ode_stepper_type cnf_ode_rkck_type;
extern const cnf_ode_stepper_type cnf_ode_rk8pd_type;
extern const cnf_ode_stepper_type cnf_ode_euler_type;
extern const cnf_ode_stepper_type cnf_ode_midpoint_type;
extern const cnf_ode_stepper_type cnf_ode_rk4_type;

#endif
