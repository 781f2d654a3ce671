/* ode_dopri5.c — Dormand-Prince 5(4) with FSAL, the default stepper.
 *
 * Coefficients from J. R. Dormand and P. J. Prince, "A family of embedded
 * Runge-Kutta formulae", J. Comput. Appl. Math. 6 (1980) 19-26, as tabulated in
 * Hairer, Norsett and Wanner, Solving ODEs I (2nd ed.), Table II.5.2. The
 * fifth-order solution is propagated (local extrapolation); the seventh stage
 * is evaluated at (t+h, ynew), so it is f at the new point: "first same as
 * last", and an accepted step hands it to the next step as its first stage.
 * A rejected step leaves f(t, y) untouched, so nothing is recomputed.
 * Quadrature components (cnf_ode_solver_set_quadratures) skip the stage inputs:
 * for a backward adjoint pass they are the P-long parameter gradient, most of
 * the state. */
#include <stdlib.h>

#include "cnf/size.h"

#include "ode_impl.h"

typedef struct {
    double *k; /* 5 x n: stages k2..k6 (k1 = f0, k7 = fnew are the caller's) */
} dopri5_state;

static void *dopri5_alloc(size_t n)
{
    dopri5_state *s = malloc(sizeof *s);
    if (!s)
        return NULL;
    size_t bytes;
    s->k = cnf_size_mul3(5, n ? n : 1, sizeof(double), &bytes) ? NULL : malloc(bytes);
    if (!s->k) {
        free(s);
        return NULL;
    }
    return s;
}

static void dopri5_free(void *state)
{
    dopri5_state *s = state;
    if (s)
        free(s->k);
    free(s);
}

static const double c2 = 1.0 / 5, c3 = 3.0 / 10, c4 = 4.0 / 5, c5 = 8.0 / 9;
static const double a21 = 1.0 / 5;
static const double a31 = 3.0 / 40, a32 = 9.0 / 40;
static const double a41 = 44.0 / 45, a42 = -56.0 / 15, a43 = 32.0 / 9;
static const double a51 = 19372.0 / 6561, a52 = -25360.0 / 2187, a53 = 64448.0 / 6561,
                    a54 = -212.0 / 729;
static const double a61 = 9017.0 / 3168, a62 = -355.0 / 33, a63 = 46732.0 / 5247,
                    a64 = 49.0 / 176, a65 = -5103.0 / 18656;
/* fifth-order weights (b2 = b7 = 0) */
static const double b1 = 35.0 / 384, b3 = 500.0 / 1113, b4 = 125.0 / 192,
                    b5 = -2187.0 / 6784, b6 = 11.0 / 84;
/* b - bhat: the difference to the embedded fourth-order solution */
static const double e1 = 71.0 / 57600, e3 = -71.0 / 16695, e4 = 71.0 / 1920,
                    e5 = -17253.0 / 339200, e6 = 22.0 / 525, e7 = -1.0 / 40;

static int dopri5_apply(void *state, size_t n, const cnf_ode_eval *ev, double t, double h,
                        const double *y, const double *f0, double *ynew, double *yerr,
                        double *fnew)
{
    dopri5_state *s = state;
    double *k2 = s->k, *k3 = k2 + n, *k4 = k3 + n, *k5 = k4 + n, *k6 = k5 + n;
    const double *k1 = f0;
    double *yt = ynew; /* stage inputs go to ynew until the final combination */
    /* quadratures (index >= nr) are never read by the rhs: their stage
     * inputs stay unformed, only ynew and yerr need them */
    const size_t nr = ev->nread;
    int rc;

    for (size_t i = 0; i < nr; i++)
        yt[i] = y[i] + h * a21 * k1[i];
    if ((rc = cnf_ode_eval_call(ev, t + c2 * h, yt, k2)))
        return rc;
    for (size_t i = 0; i < nr; i++)
        yt[i] = y[i] + h * (a31 * k1[i] + a32 * k2[i]);
    if ((rc = cnf_ode_eval_call(ev, t + c3 * h, yt, k3)))
        return rc;
    for (size_t i = 0; i < nr; i++)
        yt[i] = y[i] + h * (a41 * k1[i] + a42 * k2[i] + a43 * k3[i]);
    if ((rc = cnf_ode_eval_call(ev, t + c4 * h, yt, k4)))
        return rc;
    for (size_t i = 0; i < nr; i++)
        yt[i] = y[i] + h * (a51 * k1[i] + a52 * k2[i] + a53 * k3[i] + a54 * k4[i]);
    if ((rc = cnf_ode_eval_call(ev, t + c5 * h, yt, k5)))
        return rc;
    for (size_t i = 0; i < nr; i++)
        yt[i] = y[i] + h * (a61 * k1[i] + a62 * k2[i] + a63 * k3[i] + a64 * k4[i] +
                            a65 * k5[i]);
    if ((rc = cnf_ode_eval_call(ev, t + h, yt, k6)))
        return rc;
    for (size_t i = 0; i < n; i++)
        ynew[i] = y[i] + h * (b1 * k1[i] + b3 * k3[i] + b4 * k4[i] + b5 * k5[i] + b6 * k6[i]);
    if ((rc = cnf_ode_eval_call(ev, t + h, ynew, fnew)))
        return rc;
    for (size_t i = 0; i < n; i++)
        yerr[i] = h * (e1 * k1[i] + e3 * k3[i] + e4 * k4[i] + e5 * k5[i] + e6 * k6[i] +
                       e7 * fnew[i]);
    return 0;
}

/* The dense output of Dormand and Prince's fourth-order continuous
 * extension (Shampine 1986), as in Hairer's DOPRI5 (CONTD5) and scipy's
 * RK45 (the last column of its P): the coefficient of s^2 (1-s)^2 over the
 * cubic Hermite interpolant. Fourth order, against the third of cubic
 * Hermite between the same points; k2 does not enter. */
static const double d1 = -12715105075.0 / 11282082432.0, d3 = 87487479700.0 / 32700410799.0,
                    d4 = -10690763975.0 / 1880347072.0, d5 = 701980252875.0 / 199316789632.0,
                    d6 = -1453857185.0 / 822651844.0, d7 = 69997945.0 / 29380423.0;

static void dopri5_dense(const void *state, size_t n, double h, const double *f0,
                         const double *fnew, double *d)
{
    const dopri5_state *s = state;
    const double *k3 = s->k + n, *k4 = k3 + n, *k5 = k4 + n, *k6 = k5 + n;
    for (size_t i = 0; i < n; i++)
        d[i] = h * (d1 * f0[i] + d3 * k3[i] + d4 * k4[i] + d5 * k5[i] + d6 * k6[i] +
                    d7 * fnew[i]);
}

const cnf_ode_stepper_type cnf_ode_dopri5_type = {
    .name = "dopri5",
    .order = 5,
    .err_order = 4,
    .fsal = 1,
    .alloc = dopri5_alloc,
    .free = dopri5_free,
    .apply = dopri5_apply,
    .dense = dopri5_dense,
};
