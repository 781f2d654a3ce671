/* ode_fixed.c — fixed-step explicit Runge-Kutta: euler, midpoint, rk4.
 *
 * Textbook methods (Hairer, Norsett and Wanner, Solving ODEs I, section II.1):
 * explicit Euler (order 1), the explicit midpoint rule (order 2) and the
 * classical fourth-order Runge-Kutta method. They make no error estimate; the
 * driver steps with opt.h0 and shortens the last step to land on t1. The first
 * stage is f(t, y), which the driver supplies, so a step costs 0, 1 and 3
 * further evaluations respectively (plus f at the new point, which the driver
 * evaluates as the next step's first stage). */
#include <stdlib.h>

#include "cnf/size.h"

#include "ode_impl.h"

typedef struct {
    double *k; /* up to 3 x n stage values */
} fixed_state;

static void *fixed_alloc_k(size_t nk)
{
    fixed_state *s = malloc(sizeof *s);
    if (!s)
        return NULL;
    size_t bytes;
    s->k = cnf_size_mul(nk ? nk : 1, sizeof(double), &bytes) ? NULL : malloc(bytes);
    if (!s->k) {
        free(s);
        return NULL;
    }
    return s;
}

static void *euler_alloc(size_t n)
{
    (void)n;
    return fixed_alloc_k(1);
}

static void *midpoint_alloc(size_t n)
{
    return fixed_alloc_k(n);
}

static void *rk4_alloc(size_t n)
{
    size_t nk;
    return cnf_size_mul(3, n, &nk) ? NULL : fixed_alloc_k(nk);
}

static void fixed_free(void *state)
{
    fixed_state *s = state;
    if (s)
        free(s->k);
    free(s);
}

static int euler_apply(void *state, size_t n, const cnf_ode_eval *ev, double t, double h,
                       const double *y, const double *f0, double *ynew, double *yerr,
                       double *fnew)
{
    (void)state, (void)ev, (void)t, (void)yerr, (void)fnew;
    for (size_t i = 0; i < n; i++)
        ynew[i] = y[i] + h * f0[i];
    return 0;
}

static int midpoint_apply(void *state, size_t n, const cnf_ode_eval *ev, double t, double h,
                          const double *y, const double *f0, double *ynew, double *yerr,
                          double *fnew)
{
    (void)yerr, (void)fnew;
    double *k2 = ((fixed_state *)state)->k;
    for (size_t i = 0; i < n; i++)
        ynew[i] = y[i] + 0.5 * h * f0[i];
    int rc = cnf_ode_eval_call(ev, t + 0.5 * h, ynew, k2);
    if (rc)
        return rc;
    for (size_t i = 0; i < n; i++)
        ynew[i] = y[i] + h * k2[i];
    return 0;
}

static int rk4_apply(void *state, size_t n, const cnf_ode_eval *ev, double t, double h,
                     const double *y, const double *f0, double *ynew, double *yerr,
                     double *fnew)
{
    (void)yerr, (void)fnew;
    double *k2 = ((fixed_state *)state)->k, *k3 = k2 + n, *k4 = k3 + n;
    int rc;
    for (size_t i = 0; i < n; i++)
        ynew[i] = y[i] + 0.5 * h * f0[i];
    if ((rc = cnf_ode_eval_call(ev, t + 0.5 * h, ynew, k2)))
        return rc;
    for (size_t i = 0; i < n; i++)
        ynew[i] = y[i] + 0.5 * h * k2[i];
    if ((rc = cnf_ode_eval_call(ev, t + 0.5 * h, ynew, k3)))
        return rc;
    for (size_t i = 0; i < n; i++)
        ynew[i] = y[i] + h * k3[i];
    if ((rc = cnf_ode_eval_call(ev, t + h, ynew, k4)))
        return rc;
    for (size_t i = 0; i < n; i++)
        ynew[i] = y[i] + h / 6.0 * (f0[i] + 2.0 * (k2[i] + k3[i]) + k4[i]);
    return 0;
}

const cnf_ode_stepper_type cnf_ode_euler_type = {
    .name = "euler", .order = 1, .err_order = 0, .fsal = 0,
    .alloc = euler_alloc, .free = fixed_free, .apply = euler_apply,
};

const cnf_ode_stepper_type cnf_ode_midpoint_type = {
    .name = "midpoint", .order = 2, .err_order = 0, .fsal = 0,
    .alloc = midpoint_alloc, .free = fixed_free, .apply = midpoint_apply,
};

const cnf_ode_stepper_type cnf_ode_rk4_type = {
    .name = "rk4", .order = 4, .err_order = 0, .fsal = 0,
    .alloc = rk4_alloc, .free = fixed_free, .apply = rk4_apply,
};
