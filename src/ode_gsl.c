/* ode_gsl.c — GSL odeiv2's embedded explicit Runge-Kutta steppers (rkf45,
 * rkck, rk8pd) behind the cnf stepper interface.
 *
 * Only gsl_odeiv2_step_apply is used: GSL makes the trial step and its error
 * estimate, while cnf's own error norm, controller and driver (ode.c) decide
 * acceptance, so every method is controlled the same way. Methods: Fehlberg
 * 4(5) and Cash-Karp 4(5) (both propagate the fifth-order solution) and
 * Prince-Dormand 8(7) ("rk8pd"); see the GSL manual, "Ordinary Differential
 * Equations", and Hairer, Norsett and Wanner, Solving ODEs I, section II.5.
 *
 * GSL calls the right-hand side itself through a gsl_odeiv2_system; the
 * adapter below counts each call (nfe) and keeps cnf's return code, since
 * GSL only propagates "non-zero". GSL's apply overwrites y in place, so the
 * trial state is computed in ynew. f at the new point is not requested
 * (dydt_out = NULL): GSL would compute it even for steps that end up rejected;
 * the driver evaluates it only for accepted steps. */
#include <stdlib.h>
#include <string.h>

#include <gsl/gsl_errno.h>
#include <gsl/gsl_odeiv2.h>

#include "ode_impl.h"

typedef struct {
    gsl_odeiv2_step *step;
    gsl_odeiv2_system sys;
    const cnf_ode_eval *ev; /* the current solve's right-hand side */
    int rc;                 /* cnf code of the last failing call */
} gsl_state;

static int gsl_rhs_adapter(double t, const double y[], double dydt[], void *params)
{
    gsl_state *s = params;
    int rc = cnf_ode_eval_call(s->ev, t, y, dydt);
    if (rc) {
        s->rc = rc;
        return GSL_EBADFUNC;
    }
    return GSL_SUCCESS;
}

static void *gsl_stepper_alloc(const gsl_odeiv2_step_type *type, size_t n)
{
    gsl_state *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    /* GSL's default error handler aborts on allocation failure. Switching
     * it off here would race with other threads (it is process-global), so
     * the program does it once: call gsl_set_error_handler_off() at start,
     * as the cnf command does (README, "The library"). */
    s->step = gsl_odeiv2_step_alloc(type, n ? n : 1);
    if (!s->step) {
        free(s);
        return NULL;
    }
    s->sys.function = gsl_rhs_adapter;
    s->sys.jacobian = NULL;
    s->sys.dimension = n;
    s->sys.params = s;
    return s;
}

static void *rkf45_alloc(size_t n) { return gsl_stepper_alloc(gsl_odeiv2_step_rkf45, n); }
static void *rkck_alloc(size_t n) { return gsl_stepper_alloc(gsl_odeiv2_step_rkck, n); }
static void *rk8pd_alloc(size_t n) { return gsl_stepper_alloc(gsl_odeiv2_step_rk8pd, n); }

static void gsl_stepper_free(void *state)
{
    gsl_state *s = state;
    if (s)
        gsl_odeiv2_step_free(s->step);
    free(s);
}

static int gsl_stepper_apply(void *state, size_t n, const cnf_ode_eval *ev, double t,
                             double h, const double *y, const double *f0, double *ynew,
                             double *yerr, double *fnew)
{
    (void)fnew;
    gsl_state *s = state;
    s->ev = ev;
    s->rc = 0;
    memcpy(ynew, y, n * sizeof(double));
    int status = gsl_odeiv2_step_apply(s->step, t, h, ynew, yerr, f0, NULL, &s->sys);
    if (status == GSL_SUCCESS)
        return 0;
    /* a failure that did not come from the right-hand side is GSL's own:
     * nothing a smaller step would cure */
    return s->rc ? s->rc : -1;
}

const cnf_ode_stepper_type cnf_ode_rkf45_type = {
    .name = "rkf45", .order = 5, .err_order = 4, .fsal = 0,
    .alloc = rkf45_alloc, .free = gsl_stepper_free, .apply = gsl_stepper_apply,
};

const cnf_ode_stepper_type cnf_ode_rkck_type = {
    .name = "rkck", .order = 5, .err_order = 4, .fsal = 0,
    .alloc = rkck_alloc, .free = gsl_stepper_free, .apply = gsl_stepper_apply,
};

const cnf_ode_stepper_type cnf_ode_rk8pd_type = {
    .name = "rk8pd", .order = 8, .err_order = 7, .fsal = 0,
    .alloc = rk8pd_alloc, .free = gsl_stepper_free, .apply = gsl_stepper_apply,
};
