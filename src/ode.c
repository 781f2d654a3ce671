/* ode.c — the solver core: options, the error norm by groups, step-size
 * controller, the accept/reject loop with its counters, the driver, and
 * recorded steps with dense output (cubic Hermite, or the stepper's own
 * continuous extension). The steppers live in ode_<method>.c.
 *
 * Sources: error norm, controller and the automatic initial step follow
 * Hairer, Norsett and Wanner, Solving ODEs I (2nd ed.), section II.4 ("Automatic
 * step size control", "Starting step size", the routine HINIT), in the form
 * scipy.integrate uses (select_initial_step, RK45): RMS norm of
 * err_i / (atol + rtol*max(|y_i|, |ynew_i|)), factor safety*err^(-1/(q+1))
 * clamped to [min_factor, max_factor], no growth right after a rejection. The
 * right-hand-side return contract is CVODES's (0 ok, > 0 recoverable, < 0
 * fatal), and so is the word quadrature; leaving quadratures out of the norm
 * is the seminorm of Kidger, Chen and Lyons, "Hey, that's not an ODE"
 * (2021); the largest of per-group RMS norms is torchdiffeq's default
 * (the max over tensors of their RMS norms). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cnf/size.h"

#include "cnf/ode.h"
#include "names.h"
#include "ode_impl.h"

/* ---- the stepper table ------------------------------------------------ */

static const cnf_ode_stepper_type *const stepper_table[CNF_ODE_NUM_METHODS] = {
    [CNF_ODE_DOPRI5] = &cnf_ode_dopri5_type,
    [CNF_ODE_RKF45] = &cnf_ode_rkf45_type,
    [CNF_ODE_RKCK] = &cnf_ode_rkck_type,
    [CNF_ODE_RK8PD] = &cnf_ode_rk8pd_type,
    [CNF_ODE_EULER] = &cnf_ode_euler_type,
    [CNF_ODE_MIDPOINT] = &cnf_ode_midpoint_type,
    [CNF_ODE_RK4] = &cnf_ode_rk4_type,
};

static const cnf_ode_stepper_type *stepper_of(cnf_ode_method method)
{
    if ((int)method < 0 || method >= CNF_ODE_NUM_METHODS)
        return NULL;
    return stepper_table[method];
}

const char *cnf_ode_method_name(cnf_ode_method method)
{
    const cnf_ode_stepper_type *st = stepper_of(method);
    return st ? st->name : "unknown";
}

cnf_status cnf_ode_method_from_name(const char *name, cnf_ode_method *method)
{
    if (!name || !method)
        return cnf_error(CNF_EINVAL, "cnf_ode_method_from_name: NULL argument");
    for (int m = 0; m < CNF_ODE_NUM_METHODS; m++) {
        if (strcmp(name, stepper_table[m]->name) == 0) {
            *method = (cnf_ode_method)m;
            return CNF_OK;
        }
    }
    return cnf_error(CNF_EINVAL,
                     "unknown ODE method '%s' (valid: dopri5, rkf45, rkck, rk8pd, euler, "
                     "midpoint, rk4)",
                     name);
}

int cnf_ode_method_is_adaptive(cnf_ode_method method)
{
    const cnf_ode_stepper_type *st = stepper_of(method);
    return st ? st->err_order > 0 : 0;
}

int cnf_ode_method_order(cnf_ode_method method)
{
    const cnf_ode_stepper_type *st = stepper_of(method);
    return st ? st->order : 0;
}

/* ---- options and statistics ------------------------------------------- */

void cnf_ode_options_default(cnf_ode_options *opt)
{
    if (!opt)
        return;
    opt->method = CNF_ODE_DOPRI5;
    opt->rtol = 1e-6;
    opt->atol = 1e-6;
    opt->h0 = 0.0;
    opt->hmin = 0.0;
    opt->hmax = 0.0;
    opt->max_steps = 100000;
    opt->max_retries = 20;
    opt->safety = 0.9;
    opt->min_factor = 0.2;
    opt->max_factor = 10.0;
}

void cnf_ode_stats_add(cnf_ode_stats *a, const cnf_ode_stats *b)
{
    if (!a || !b)
        return;
    a->nfe += b->nfe;
    a->accepted += b->accepted;
    a->rejected += b->rejected;
    a->h_last = b->h_last;
}

/* Check every option for states of length n, naming the first bad one.
 * (Comparisons are written so that NaN fails them.) */
static cnf_status check_options(const cnf_ode_options *opt, size_t n)
{
    if (!opt)
        return cnf_error(CNF_EINVAL, "ODE options: NULL");
    const cnf_ode_stepper_type *st = stepper_of(opt->method);
    if (!st)
        return cnf_error(CNF_EINVAL, "ODE options: unknown method %d", (int)opt->method);
    if (st->err_order > 0) {
        if (!(opt->rtol >= 0.0) || !(opt->atol >= 0.0) || !(opt->rtol + opt->atol > 0.0) ||
            isinf(opt->rtol) || isinf(opt->atol))
            return cnf_error(CNF_EINVAL,
                             "ODE options: rtol = %g, atol = %g (need finite, >= 0, not both 0)",
                             opt->rtol, opt->atol);
        if (!(opt->h0 >= 0.0) || isinf(opt->h0))
            return cnf_error(CNF_EINVAL, "ODE options: h0 = %g (need >= 0; 0 = automatic)",
                             opt->h0);
    } else if (!(opt->h0 > 0.0) || isinf(opt->h0)) {
        return cnf_error(CNF_EINVAL,
                         "ODE options: fixed-step method %s needs a step h0 > 0 (got %g)",
                         st->name, opt->h0);
    }
    if (!(opt->hmin >= 0.0) || isinf(opt->hmin))
        return cnf_error(CNF_EINVAL, "ODE options: hmin = %g (need finite, >= 0)", opt->hmin);
    if (!(opt->hmax >= 0.0))
        return cnf_error(CNF_EINVAL, "ODE options: hmax = %g (need >= 0; 0 = no limit)",
                         opt->hmax);
    if (opt->hmax > 0.0 && opt->hmax < opt->hmin)
        return cnf_error(CNF_EINVAL, "ODE options: hmax = %g is below hmin = %g", opt->hmax,
                         opt->hmin);
    if (opt->max_steps < 1)
        return cnf_error(CNF_EINVAL, "ODE options: max_steps = 0 (need >= 1)");
    if (opt->max_retries < 0)
        return cnf_error(CNF_EINVAL, "ODE options: max_retries = %d (need >= 0)",
                         opt->max_retries);
    if (!(opt->safety > 0.0 && opt->safety <= 1.0))
        return cnf_error(CNF_EINVAL, "ODE options: safety = %g (need 0 < safety <= 1)",
                         opt->safety);
    if (!(opt->min_factor > 0.0 && opt->min_factor <= 1.0))
        return cnf_error(CNF_EINVAL, "ODE options: min_factor = %g (need 0 < min_factor <= 1)",
                         opt->min_factor);
    if (!(opt->max_factor >= 1.0) || isinf(opt->max_factor))
        return cnf_error(CNF_EINVAL, "ODE options: max_factor = %g (need finite, >= 1)",
                         opt->max_factor);
    return CNF_OK;
}

/* ---- the solver object ------------------------------------------------ */

struct cnf_ode_solver {
    size_t n;
    cnf_ode_options opt;
    const cnf_ode_stepper_type *type;
    void *state;  /* the stepper's workspaces */
    size_t nread; /* components the rhs reads: all but the quadratures */
    /* the error norm's groups (cnf_ode_solver_set_norm_groups): group g is
     * [gend[g-1], gend[g]), gin[g] its CNF_ODE_NORM_* mode; gacc holds each
     * group's sum of squares and count while a norm is formed */
    size_t ng;
    size_t *gend;
    unsigned char *gin;
    double *gacc; /* 2 ng */
    /* the reduction across processes (cnf_ode_solver_set_reduction): the
     * last nsum components are partial sums; rbuf holds one reduction's
     * doubles (group sums, the summed components' e, y, ynew, two flags) */
    cnf_ode_sum sum;
    void *sum_ctx;
    size_t nsum;
    double *rbuf;
    double *ynew; /* n: trial state */
    double *yerr; /* n: error estimate of the trial step */
    double *fa;   /* n: f at the current point or the trial point (swapped) */
    double *fb;   /* n */
};


/* Doubles one reduction sums: each group's sum of squares and count, the
 * summed components' e, y and ynew, and the two flags (a process's attempt
 * failed, a process's solve must stop). */
static size_t reduction_len(size_t ng, size_t nsum)
{
    return 2 * ng + 3 * nsum + 2;
}

/* Install checked groups; on failure (memory) the old ones stay. */
static cnf_status set_groups(cnf_ode_solver *s, size_t ng, const size_t *sizes,
                             const int *in_norm)
{
    size_t *gend = malloc(ng * sizeof *gend);
    unsigned char *gin = malloc(ng);
    double *gacc = malloc(2 * ng * sizeof *gacc);
    if (!gend || !gin || !gacc) {
        free(gend);
        free(gin);
        free(gacc);
        return cnf_error(CNF_ENOMEM, "ODE solver: out of memory for %zu norm groups", ng);
    }
    size_t end = 0;
    for (size_t g = 0; g < ng; g++) {
        end += sizes[g];
        gend[g] = end;
        gin[g] = (unsigned char)in_norm[g];
    }
    if (s->sum) {
        double *rbuf = malloc(reduction_len(ng, s->nsum) * sizeof *rbuf);
        if (!rbuf) {
            free(gend);
            free(gin);
            free(gacc);
            return cnf_error(CNF_ENOMEM, "ODE solver: out of memory for %zu norm groups", ng);
        }
        free(s->rbuf);
        s->rbuf = rbuf;
    }
    free(s->gend);
    free(s->gin);
    free(s->gacc);
    s->ng = ng;
    s->gend = gend;
    s->gin = gin;
    s->gacc = gacc;
    return CNF_OK;
}

cnf_ode_solver *cnf_ode_solver_alloc(size_t n, const cnf_ode_options *opt)
{
    if (n == 0) {
        cnf_error(CNF_EINVAL, "cnf_ode_solver_alloc: state length n = 0");
        return NULL;
    }
    if (check_options(opt, n) != CNF_OK)
        return NULL;
    cnf_ode_solver *s = calloc(1, sizeof *s);
    if (!s)
        goto nomem;
    s->n = n;
    s->type = stepper_of(opt->method);
    size_t bytes;
    s->ynew = cnf_size_mul3(4, n, sizeof(double), &bytes) ? NULL : malloc(bytes);
    if (!s->ynew)
        goto nomem;
    s->yerr = s->ynew + n;
    s->fa = s->yerr + n;
    s->fb = s->fa + n;
    s->state = s->type->alloc(n);
    if (!s->state)
        goto nomem;
    s->opt = *opt;
    s->nread = n;
    if (set_groups(s, 1, &n, (const int[]){1}) != CNF_OK)
        goto nomem;
    return s;
nomem:
    cnf_ode_solver_free(s);
    cnf_error(CNF_ENOMEM, "cnf_ode_solver_alloc: out of memory for a state of length %zu", n);
    return NULL;
}

void cnf_ode_solver_free(cnf_ode_solver *s)
{
    if (!s)
        return;
    if (s->state)
        s->type->free(s->state);
    free(s->ynew);
    free(s->gend);
    free(s->gin);
    free(s->gacc);
    free(s->rbuf);
    free(s);
}

cnf_status cnf_ode_solver_set_options(cnf_ode_solver *s, const cnf_ode_options *opt)
{
    if (!s)
        return cnf_error(CNF_EINVAL, "cnf_ode_solver_set_options: NULL solver");
    cnf_status rc = check_options(opt, s->n);
    if (rc != CNF_OK)
        return rc;
    const cnf_ode_stepper_type *type = stepper_of(opt->method);
    if (type != s->type) {
        /* a new method needs its own workspaces; allocate before letting go
         * of the old ones so that a failure leaves the solver as it was */
        void *state = type->alloc(s->n);
        if (!state)
            return cnf_error(CNF_ENOMEM, "cnf_ode_solver_set_options: out of memory for %s",
                             type->name);
        s->type->free(s->state);
        s->type = type;
        s->state = state;
    }
    s->opt = *opt;
    return CNF_OK;
}

cnf_status cnf_ode_solver_set_quadratures(cnf_ode_solver *s, size_t nq, int in_error_norm)
{
    if (!s)
        return cnf_error(CNF_EINVAL, "cnf_ode_solver_set_quadratures: NULL solver");
    if (nq > s->n || (nq == s->n && !in_error_norm))
        return cnf_error(CNF_EINVAL, "cnf_ode_solver_set_quadratures: %zu quadratures%s in a "
                         "state of length %zu", nq, in_error_norm ? "" : " left out of the norm",
                         s->n);
    size_t sizes[2] = { s->n - nq, nq };
    cnf_status rc = set_groups(s, in_error_norm ? 1 : 2, in_error_norm ? &s->n : sizes,
                               (const int[]){1, 0});
    if (rc == CNF_OK)
        s->nread = s->n - nq;
    return rc;
}

/* Whether a group [i0, end) of the given mode breaks the rule that an
 * integral group lies in [n0, n), among a reduction's summed components,
 * where each process sees the whole of it: its size (an RMS over the
 * group) would otherwise need a reduction of its own before the error
 * could be scaled. */
static int integral_not_summed(int mode, size_t i0, size_t end, size_t n0)
{
    return mode == CNF_ODE_NORM_INTEGRAL && end > i0 && i0 < n0;
}

cnf_status cnf_ode_solver_set_norm_groups(cnf_ode_solver *s, size_t n_groups,
                                          const size_t *sizes, const int *in_norm)
{
    if (!s || !sizes || !in_norm || n_groups == 0)
        return cnf_error(CNF_EINVAL, "cnf_ode_solver_set_norm_groups: NULL solver, sizes or "
                         "flags, or no group");
    size_t total = 0, counted = 0;
    for (size_t g = 0; g < n_groups; g++) {
        if (in_norm[g] != CNF_ODE_NORM_OUT && in_norm[g] != CNF_ODE_NORM_IN
            && in_norm[g] != CNF_ODE_NORM_INTEGRAL)
            return cnf_error(CNF_EINVAL, "cnf_ode_solver_set_norm_groups: group %zu has the "
                             "unknown mode %d", g, in_norm[g]);
        if (sizes[g] > s->n - total)
            return cnf_error(CNF_EINVAL, "cnf_ode_solver_set_norm_groups: the groups exceed "
                             "the state length %zu at group %zu", s->n, g);
        total += sizes[g];
        counted += in_norm[g] ? sizes[g] : 0;
    }
    if (total != s->n)
        return cnf_error(CNF_EINVAL, "cnf_ode_solver_set_norm_groups: the groups cover %zu of "
                         "the state's %zu components", total, s->n);
    if (counted == 0)
        return cnf_error(CNF_EINVAL, "cnf_ode_solver_set_norm_groups: no component in the "
                         "norm (every group left out or empty)");
    for (size_t g = 0, i0 = 0; s->sum && g < n_groups; i0 += sizes[g], g++)
        if (integral_not_summed(in_norm[g], i0, i0 + sizes[g], s->n - s->nsum))
            return cnf_error(CNF_EINVAL, "cnf_ode_solver_set_norm_groups: under a reduction "
                             "an integral group must lie among the %zu summed components",
                             s->nsum);
    return set_groups(s, n_groups, sizes, in_norm);
}

cnf_status cnf_ode_solver_set_reduction(cnf_ode_solver *s, cnf_ode_sum sum, void *ctx,
                                        size_t n_summed)
{
    if (!s)
        return cnf_error(CNF_EINVAL, "cnf_ode_solver_set_reduction: NULL solver");
    if (n_summed > s->n)
        return cnf_error(CNF_EINVAL, "cnf_ode_solver_set_reduction: %zu summed components in a "
                         "state of length %zu", n_summed, s->n);
    for (size_t g = 0, i0 = 0; sum && g < s->ng; i0 = s->gend[g], g++)
        if (integral_not_summed(s->gin[g], i0, s->gend[g], s->n - n_summed))
            return cnf_error(CNF_EINVAL, "cnf_ode_solver_set_reduction: an integral norm group "
                             "must lie among the %zu summed components", n_summed);
    if (sum == s->sum && n_summed == s->nsum) {
        s->sum_ctx = sum ? ctx : NULL; /* the same layout: no allocation */
        return CNF_OK;
    }
    double *rbuf = NULL;
    if (sum) {
        rbuf = malloc(reduction_len(s->ng, n_summed) * sizeof *rbuf);
        if (!rbuf)
            return cnf_error(CNF_ENOMEM, "cnf_ode_solver_set_reduction: out of memory");
    }
    free(s->rbuf);
    s->rbuf = rbuf;
    s->sum = sum;
    s->sum_ctx = sum ? ctx : NULL;
    s->nsum = sum ? n_summed : 0;
    return CNF_OK;
}

size_t cnf_ode_solver_dim(const cnf_ode_solver *s)
{
    return s ? s->n : 0;
}

/* ---- the record (dense output) ---------------------------------------- */

struct cnf_ode_record {
    size_t n, size, cap;
    cnf_ode_interp interp;
    double *t;          /* cap */
    double *y;          /* cap x n */
    double *f;          /* cap x n */
    unsigned char *dd;  /* cap: 1 when the step ending at point i has its
                           stepper's dense coefficient d[i] */
    double *d;          /* dcap x n, only under CNF_ODE_INTERP_DENSE */
    size_t dcap;
};

cnf_ode_record *cnf_ode_record_alloc(size_t n)
{
    if (n == 0) {
        cnf_error(CNF_EINVAL, "cnf_ode_record_alloc: state length n = 0");
        return NULL;
    }
    cnf_ode_record *r = calloc(1, sizeof *r);
    if (!r) {
        cnf_error(CNF_ENOMEM, "cnf_ode_record_alloc: out of memory");
        return NULL;
    }
    r->n = n;
    return r;
}

void cnf_ode_record_free(cnf_ode_record *r)
{
    if (!r)
        return;
    free(r->t);
    free(r->y);
    free(r->f);
    free(r->dd);
    free(r->d);
    free(r);
}

static const char *const interp_names[] = {"hermite", "dense"};

CNF_ENUM_NAMES(cnf_ode_interp, cnf_ode_interp_name, cnf_ode_interp_from_name, "interpolation",
               interp_names)

cnf_status cnf_ode_record_set_interp(cnf_ode_record *r, cnf_ode_interp interp)
{
    if (!r || (interp != CNF_ODE_INTERP_HERMITE && interp != CNF_ODE_INTERP_DENSE))
        return cnf_error(CNF_EINVAL, "cnf_ode_record_set_interp: NULL record or unknown "
                         "interpolation %d", (int)interp);
    r->interp = interp;
    return CNF_OK;
}

cnf_ode_interp cnf_ode_record_interp(const cnf_ode_record *r)
{
    return r ? r->interp : CNF_ODE_INTERP_HERMITE;
}

void cnf_ode_record_clear(cnf_ode_record *r)
{
    if (r)
        r->size = 0;
}

size_t cnf_ode_record_size(const cnf_ode_record *r)
{
    return r ? r->size : 0;
}

double cnf_ode_record_time(const cnf_ode_record *r, size_t i)
{
    return (r && i < r->size) ? r->t[i] : NAN;
}

const double *cnf_ode_record_state(const cnf_ode_record *r, size_t i)
{
    return (r && i < r->size) ? r->y + i * r->n : NULL;
}

const double *cnf_ode_record_deriv(const cnf_ode_record *r, size_t i)
{
    return (r && i < r->size) ? r->f + i * r->n : NULL;
}

/* Geometric growth, so that a solve of k steps reallocates O(log k) times;
 * realloc keeps the old block on failure, so the record stays valid. The
 * dense coefficients, a third vector per point, only when asked for. */
static cnf_status record_reserve(cnf_ode_record *r, size_t need)
{
    size_t cap = r->cap, tbytes, ybytes;
    if (need > cap) {
        cap = cap ? cap : 16;
        while (cap < need)
            cap = cap > SIZE_MAX / 2 ? need : 2 * cap;
        if (cnf_size_mul(cap, sizeof(double), &tbytes)
            || cnf_size_mul3(cap, r->n, sizeof(double), &ybytes))
            goto nomem;
        double *t = realloc(r->t, tbytes);
        if (!t)
            goto nomem;
        r->t = t;
        double *y = realloc(r->y, ybytes);
        if (!y)
            goto nomem;
        r->y = y;
        double *f = realloc(r->f, ybytes);
        if (!f)
            goto nomem;
        r->f = f;
        unsigned char *dd = realloc(r->dd, cap);
        if (!dd)
            goto nomem;
        r->dd = dd;
        r->cap = cap;
    }
    if (r->interp == CNF_ODE_INTERP_DENSE && r->dcap < r->cap) {
        if (cnf_size_mul3(r->cap, r->n, sizeof(double), &ybytes))
            goto nomem;
        double *d = realloc(r->d, ybytes);
        if (!d)
            goto nomem;
        r->d = d;
        r->dcap = r->cap;
    }
    return CNF_OK;
nomem:
    return cnf_error(CNF_ENOMEM, "ODE record: out of memory growing to %zu points of length %zu",
                     cap, r->n);
}

/* has_dense: the caller has written the step's dense coefficient into
 * d[size] (after reserving it). */
static cnf_status record_push(cnf_ode_record *r, double t, const double *y, const double *f,
                              int has_dense)
{
    cnf_status rc = record_reserve(r, r->size + 1);
    if (rc != CNF_OK)
        return rc;
    r->dd[r->size] = (unsigned char)(has_dense != 0);
    r->t[r->size] = t;
    memcpy(r->y + r->size * r->n, y, r->n * sizeof(double));
    memcpy(r->f + r->size * r->n, f, r->n * sizeof(double));
    r->size++;
    return CNF_OK;
}

cnf_status cnf_ode_record_eval(const cnf_ode_record *r, double t, size_t m, double *y)
{
    if (!r || !y)
        return cnf_error(CNF_EINVAL, "cnf_ode_record_eval: NULL argument");
    if (m > r->n)
        return cnf_error(CNF_EINVAL, "cnf_ode_record_eval: m = %zu exceeds the state length %zu",
                         m, r->n);
    if (r->size == 0)
        return cnf_error(CNF_EINVAL, "cnf_ode_record_eval: the record is empty");
    size_t last = r->size - 1;
    double ta = r->t[0], tb = r->t[last];
    double slack = 1e-12 * fmax(fabs(tb - ta), fmax(fabs(ta), fabs(tb)));
    double lo = fmin(ta, tb), hi = fmax(ta, tb);
    if (!(t >= lo - slack && t <= hi + slack))
        return cnf_error(CNF_EINVAL,
                         "cnf_ode_record_eval: t = %.17g is outside the recorded span [%.17g, "
                         "%.17g]",
                         t, lo, hi);
    if (last == 0) {
        memcpy(y, r->y, m * sizeof(double));
        return CNF_OK;
    }
    /* times run monotonically one way or the other: let d = +-1 orient them
     * increasingly and find the last i with d*t_i <= d*t (i < last) */
    double d = tb >= ta ? 1.0 : -1.0;
    size_t a = 0, b = last; /* invariant: answer in [a, b) */
    while (b - a > 1) {
        size_t mid = a + (b - a) / 2;
        if (d * r->t[mid] <= d * t)
            a = mid;
        else
            b = mid;
    }
    size_t i = a;
    double t0 = r->t[i], h = r->t[i + 1] - t0;
    const double *y0 = r->y + i * r->n, *y1 = y0 + r->n;
    const double *f0 = r->f + i * r->n, *f1 = f0 + r->n;
    if (h == 0.0) {
        memcpy(y, y0, m * sizeof(double));
        return CNF_OK;
    }
    double s = (t - t0) / h;
    if (r->dd[i + 1] && r->interp == CNF_ODE_INTERP_DENSE) {
        /* the stepper's continuous extension: the cubic Hermite
         * interpolant in Hairer's nested form plus s^2 (1-s)^2 d */
        const double *dc = r->d + (i + 1) * r->n;
        double s1 = 1.0 - s;
        for (size_t k = 0; k < m; k++) {
            double dy = y1[k] - y0[k], r3 = h * f0[k] - dy, r4 = dy - h * f1[k] - r3;
            y[k] = y0[k] + s * (dy + s1 * (r3 + s * (r4 + s1 * dc[k])));
        }
        return CNF_OK;
    }
    double s2 = s * s, s3 = s2 * s;
    double h00 = 2 * s3 - 3 * s2 + 1, h10 = s3 - 2 * s2 + s;
    double h01 = -2 * s3 + 3 * s2, h11 = s3 - s2;
    for (size_t k = 0; k < m; k++)
        y[k] = h00 * y0[k] + h10 * h * f0[k] + h01 * y1[k] + h11 * h * f1[k];
    return CNF_OK;
}

/* ---- error norm and initial step -------------------------------------- */

/* The largest factor a rejected step's size is multiplied by. With the
 * default safety 0.9 the controller's own factor is below it anyway; with a
 * safety near 1 and an error estimate that falls more slowly than h^(q+1)
 * (a kink in the solution), err^(-1/(q+1)) alone would shrink the step ever
 * less while the error creeps down to 1 from above, spinning to max_steps. */
#define REJECT_MAX_FACTOR 0.9

/* Branch-free, so that it vectorises: the backward adjoint state is about
 * 10k long and checked twice per step. A double is non-finite when its
 * exponent bits are all set. */
static int all_finite(const double *v, size_t n)
{
    uint64_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t bits;
        memcpy(&bits, &v[i], sizeof bits);
        bad |= (uint64_t)((bits & 0x7ff0000000000000ULL) == 0x7ff0000000000000ULL);
    }
    return bad == 0;
}

/* max(|a|, |b|); the comparison stands in for fmax, which GCC leaves as a
 * call (the norm loops must vectorise). */
static inline double larger_abs(double a, double b)
{
    double fa = fabs(a), fb = fabs(b);
    return fa > fb ? fa : fb;
}

/* One component's e_i / (atol + rtol*max(|a_i|, |b_i|)), 0 where e_i = 0
 * (even when the scale is 0 too); a NaN in e still propagates. */
static inline double scaled_error(double e, double a, double b, double atol, double rtol)
{
    double q = e / (atol + rtol * larger_abs(a, b));
    return e == 0.0 ? 0.0 : q;
}

/* The error norm in three steps, so that a distributed state can add one
 * reduction between the first two: per group, the sum of squares of
 * e_i / (atol + rtol*max(|a_i|, |b_i|)) and the count of its components
 * (acc[2g], acc[2g+1]); then each group's RMS; then the largest of them.
 * With one group this is the plain RMS (Hairer-Norsett-Wanner); with
 * several it is torchdiffeq's max over tensors of per-tensor RMS norms,
 * under which a long group's small errors cannot dilute a short one's.
 * Eight partial sums per group, so that the loop vectorises (one running
 * sum is a serial chain the compiler may not reorder); they are added in a
 * fixed order at the end, so the result does not depend on how it
 * vectorised. */
#define RMS_LANES 8

/* An integral group's absolute scale atol * min(1, R): R is the RMS over
 * [i0, m) of max(|a_i|, |b_i|), the integral's size so far, times the
 * projection to the end of the interval (|t1 - t0| / |tnew - t0| >= 1 for
 * a step attempt, 1 otherwise). R = 0 (nothing integrated yet) gives atol
 * itself, the scale of an ordinary group, and so does R >= 1: the group is
 * never judged more loosely than an ordinary one (an overflowing R too). */
static double integral_atol(const cnf_ode_solver *s, const double *a, const double *b,
                            size_t i0, size_t m, double projection)
{
    double lane[RMS_LANES] = {0.0};
    size_t i = i0;
    for (; i + RMS_LANES <= m; i += RMS_LANES)
        for (size_t l = 0; l < RMS_LANES; l++) {
            double x = larger_abs(a[i + l], b[i + l]);
            lane[l] += x * x;
        }
    for (size_t l = 0; i < m; i++, l++) {
        double x = larger_abs(a[i], b[i]);
        lane[l] += x * x;
    }
    double sum = 0.0;
    for (size_t l = 0; l < RMS_LANES; l++)
        sum += lane[l];
    double size = m > i0 ? sqrt(sum / (double)(m - i0)) * projection : 0.0;
    return size > 0.0 && size < 1.0 ? s->opt.atol * size : s->opt.atol;
}

/* Components from end on are left out of the sums (the summed components
 * of a reduction, added once after it); end = n for the whole state.
 * projection: integral_atol's. */
static void norm_group_sums(const cnf_ode_solver *s, const double *e, const double *a,
                            const double *b, size_t end, double projection, double *acc)
{
    const double rtol = s->opt.rtol;
    size_t i0 = 0;
    for (size_t g = 0; g < s->ng; i0 = s->gend[g], g++) {
        size_t m = s->gend[g] < end ? s->gend[g] : end;
        acc[2 * g] = 0.0;
        acc[2 * g + 1] = 0.0;
        if (!s->gin[g] || m <= i0)
            continue;
        const double atol = s->gin[g] == CNF_ODE_NORM_INTEGRAL
                                ? integral_atol(s, a, b, i0, m, projection)
                                : s->opt.atol;
        double lane[RMS_LANES] = {0.0};
        size_t i = i0;
        for (; i + RMS_LANES <= m; i += RMS_LANES)
            for (size_t l = 0; l < RMS_LANES; l++) {
                double q = scaled_error(e[i + l], a[i + l], b[i + l], atol, rtol);
                lane[l] += q * q;
            }
        for (size_t l = 0; i < m; i++, l++) {
            double q = scaled_error(e[i], a[i], b[i], atol, rtol);
            lane[l] += q * q;
        }
        double sum = 0.0;
        for (size_t l = 0; l < RMS_LANES; l++)
            sum += lane[l];
        acc[2 * g] = sum;
        acc[2 * g + 1] = (double)(m - i0);
    }
}

/* The largest group RMS of the sums; empty groups do not count. A NaN is
 * returned as soon as it turns up, so that the step is treated as failed. */
static double norm_groups_max(size_t ng, const double *acc)
{
    double err = 0.0;
    for (size_t g = 0; g < ng; g++) {
        if (acc[2 * g + 1] == 0.0)
            continue;
        double r = sqrt(acc[2 * g] / acc[2 * g + 1]);
        if (isnan(r))
            return r;
        if (r > err)
            err = r;
    }
    return err;
}

static double error_norm(const cnf_ode_solver *s, const double *e, const double *a,
                         const double *b, double projection)
{
    norm_group_sums(s, e, a, b, s->n, projection, s->gacc);
    return norm_groups_max(s->ng, s->gacc);
}

/* What a process knows of a step attempt before the reduction, and what
 * all of them agree on after it: the worst of the processes' flags. */
enum { ATTEMPT_OK = 0, ATTEMPT_FAILED = 1, ATTEMPT_FATAL = 2, ATTEMPT_NO_REDUCTION = 3 };

/* The global flag from the two summed flag counters. */
static int agreed_flag(const double *flags)
{
    return flags[1] > 0.0 ? ATTEMPT_FATAL : flags[0] > 0.0 ? ATTEMPT_FAILED : ATTEMPT_OK;
}

/* Only the flags, where an attempt has no norm to reduce (the first point,
 * the right-hand side at an accepted point of a method without FSAL).
 * Without a reduction the local flag is the answer. */
static int agree(const cnf_ode_solver *s, int flag)
{
    if (!s->sum)
        return flag;
    double f[2] = { flag == ATTEMPT_FAILED, flag >= ATTEMPT_FATAL };
    if (s->sum(f, 2, s->sum_ctx) != 0)
        return ATTEMPT_NO_REDUCTION;
    return agreed_flag(f);
}

/* The error norm of a step attempt over every process, and their agreed
 * flag (*flag: this process's on entry, the worst of all on return; the
 * norm means something only when it is ATTEMPT_OK). Without a reduction
 * this is error_norm. With one, a process whose attempt failed still takes
 * part (its sums zeroed), so that every process makes the same sequence of
 * reductions and none waits for another forever. The distributed
 * components' sums of squares and counts add across processes; the summed
 * ones' e, y and ynew are summed first and then scaled and counted once,
 * by every process alike, so that all get the same err. projection:
 * integral_atol's. */
static double error_norm_agreed(const cnf_ode_solver *s, const double *e, const double *a,
                                const double *b, double projection, int *flag)
{
    if (!s->sum) {
        if (*flag != ATTEMPT_OK)
            return NAN;
        return error_norm(s, e, a, b, projection);
    }
    const size_t ng = s->ng, n = s->n, ns = s->nsum, n0 = n - ns;
    double *buf = s->rbuf, *be = buf + 2 * ng, *ba = be + ns, *bb = ba + ns;
    double *flags = bb + ns;
    if (*flag == ATTEMPT_OK) {
        norm_group_sums(s, e, a, b, n0, projection, buf);
        memcpy(be, e + n0, ns * sizeof *be);
        memcpy(ba, a + n0, ns * sizeof *ba);
        memcpy(bb, b + n0, ns * sizeof *bb);
    } else {
        memset(buf, 0, (2 * ng + 3 * ns) * sizeof *buf);
    }
    flags[0] = *flag == ATTEMPT_FAILED;
    flags[1] = *flag >= ATTEMPT_FATAL;
    if (s->sum(buf, reduction_len(ng, ns), s->sum_ctx) != 0) {
        *flag = ATTEMPT_NO_REDUCTION;
        return NAN;
    }
    *flag = agreed_flag(flags);
    if (*flag != ATTEMPT_OK)
        return NAN;
    const double rtol = s->opt.rtol;
    size_t i0 = 0;
    for (size_t g = 0; g < ng; i0 = s->gend[g], g++) {
        size_t lo = i0 > n0 ? i0 : n0;
        if (!s->gin[g] || lo >= s->gend[g])
            continue;
        /* an integral group lies wholly among the summed components */
        const double atol = s->gin[g] == CNF_ODE_NORM_INTEGRAL
                                ? integral_atol(s, ba + (lo - n0), bb + (lo - n0), 0,
                                                s->gend[g] - lo, projection)
                                : s->opt.atol;
        for (size_t i = lo; i < s->gend[g]; i++) {
            double q = scaled_error(be[i - n0], ba[i - n0], bb[i - n0], atol, rtol);
            buf[2 * g] += q * q;
            buf[2 * g + 1] += 1.0;
        }
    }
    return norm_groups_max(ng, buf);
}

double cnf_ode_solver_error_norm(const cnf_ode_solver *s, const double *e, const double *y,
                                 const double *ynew)
{
    if (!s || !e || !y || !ynew)
        return NAN;
    return error_norm(s, e, y, ynew, 1.0);
}

/* Starting step of Hairer-Norsett-Wanner (HINIT), as scipy's
 * select_initial_step: an explicit Euler probe of one evaluation estimates
 * the second derivative. Scales use y0 only. Returns |h| > 0. Its three
 * norms go through the reduction, so that every process starts with the
 * same step; *flag receives ATTEMPT_FATAL (with *fatal the probe's code
 * when it was this process's) or ATTEMPT_NO_REDUCTION when the solve must
 * stop, ATTEMPT_OK otherwise. */
static double initial_step(cnf_ode_solver *s, const cnf_ode_eval *ev, double t0, double t1,
                           const double *y0, const double *f0, int *fatal, int *flag)
{
    double *y1 = s->ynew, *f1 = s->fb, *w = s->yerr;
    double dir = t1 > t0 ? 1.0 : -1.0, span = fabs(t1 - t0);
    int f0flag = ATTEMPT_OK, f1flag = ATTEMPT_OK;
    double d0 = error_norm_agreed(s, y0, y0, y0, 1.0, &f0flag);
    double d1 = f0flag == ATTEMPT_OK ? error_norm_agreed(s, f0, y0, y0, 1.0, &f1flag) : 0.0;
    *flag = f0flag != ATTEMPT_OK ? f0flag : f1flag;
    if (*flag != ATTEMPT_OK)
        return 0.0;
    double h0 = (d0 < 1e-5 || d1 < 1e-5) ? 1e-6 : 0.01 * d0 / d1;
    h0 = fmin(h0, span);
    for (size_t i = 0; i < ev->nread; i++) /* the probe's quadratures are unread */
        y1[i] = y0[i] + h0 * dir * f0[i];
    int rc = cnf_ode_eval_call(ev, t0 + h0 * dir, y1, f1);
    int probe = rc < 0 ? ATTEMPT_FATAL : (rc > 0 || !all_finite(f1, s->n)) ? ATTEMPT_FAILED
                                                                            : ATTEMPT_OK;
    if (rc < 0)
        *fatal = rc;
    if (probe == ATTEMPT_OK)
        for (size_t i = 0; i < s->n; i++)
            w[i] = f1[i] - f0[i];
    double d2 = error_norm_agreed(s, w, y0, y0, 1.0, &probe) / h0;
    if (probe == ATTEMPT_FAILED)
        return h0; /* no curvature estimate; the cautious probe step will do */
    if (probe != ATTEMPT_OK) {
        *flag = probe;
        return h0;
    }
    double h1;
    if (d1 <= 1e-15 && d2 <= 1e-15)
        h1 = fmax(1e-6, h0 * 1e-3);
    else
        h1 = pow(0.01 / fmax(d1, d2), 1.0 / (s->type->err_order + 1));
    double h = fmin(fmin(100 * h0, h1), span);
    if (s->opt.hmax > 0.0)
        h = fmin(h, s->opt.hmax);
    return h;
}

/* Why a solve stopped on a flag the processes agreed on: this process's own
 * failure (its right-hand side's code rc < 0, or a local error already in
 * cnf_last_error, status local), another's, or the reduction itself. */
static cnf_status stop_agreed(int flag, int rc, cnf_status local, const char *name, double t,
                              double h)
{
    if (local != CNF_OK)
        return local;
    if (flag == ATTEMPT_NO_REDUCTION)
        return cnf_error(CNF_ERHS, "%s: the reduction across processes failed at t = %.17g",
                         name, t);
    if (rc < 0)
        return cnf_error(CNF_ERHS, "%s: right-hand side failed (code %d) in a step from "
                         "t = %.17g (h = %.3g)", name, rc, t, h);
    return cnf_error(CNF_ERHS, "%s: stopped at t = %.17g because another process's solve "
                     "failed (that process reports why)", name, t);
}

/* ---- the driver -------------------------------------------------------- */

cnf_status cnf_ode_solve(cnf_ode_solver *s, cnf_ode_rhs rhs, void *params, double t0,
                         double t1, double *y, cnf_ode_record *record, cnf_ode_stats *stats)
{
    return cnf_ode_solve_warm(s, rhs, params, t0, t1, y, NULL, record, stats);
}

cnf_status cnf_ode_solve_warm(cnf_ode_solver *s, cnf_ode_rhs rhs, void *params, double t0,
                              double t1, double *y, double *h_start, cnf_ode_record *record,
                              cnf_ode_stats *stats)
{
    cnf_ode_stats st = {0, 0, 0, 0.0};
    cnf_status status = CNF_OK;
    if (stats)
        *stats = st;
    /* the checks of the arguments every process gets alike; a state or a
     * record of the wrong length would be a caller's bug on one process */
    if (!s || !rhs || !y)
        return cnf_error(CNF_EINVAL, "cnf_ode_solve: NULL solver, right-hand side or state");
    if (!isfinite(t0) || !isfinite(t1))
        return cnf_error(CNF_EINVAL, "cnf_ode_solve: times t0 = %g, t1 = %g must be finite", t0,
                         t1);
    if (h_start && (!(*h_start >= 0.0) || isinf(*h_start)))
        return cnf_error(CNF_EINVAL, "cnf_ode_solve: first step *h_start = %g (need finite, "
                         ">= 0; 0 = the options' h0)", *h_start);
    if (record && record->n != s->n)
        return cnf_error(CNF_EDIM, "cnf_ode_solve: record of length %zu for a state of length %zu",
                         record->n, s->n);
    const size_t n = s->n;
    const cnf_ode_options *opt = &s->opt;
    const cnf_ode_stepper_type *type = s->type;
    const char *name = type->name;
    const int adaptive = type->err_order > 0;
    const double expo = adaptive ? -1.0 / (type->err_order + 1) : 0.0;
    cnf_ode_eval ev = {rhs, params, &st.nfe, s->nread};
    double *f0 = s->fa, *fnew = s->fb; /* f at the current and the trial point */
    double t = t0;
    /* an error of this process alone (a bad initial state, memory): under a
     * reduction it is reported through the flags, so that the others stop
     * too instead of waiting for it */
    cnf_status local = CNF_OK;
    int rc = 0, flag = ATTEMPT_OK;

    for (size_t i = 0; i < n && local == CNF_OK; i++)
        if (!isfinite(y[i]))
            local = cnf_error(CNF_EINVAL, "cnf_ode_solve: initial state y[%zu] = %g is not "
                              "finite", i, y[i]);
    if (local != CNF_OK && !s->sum)
        return local;
    if (local == CNF_OK) {
        rc = cnf_ode_eval_call(&ev, t0, y, f0);
        flag = rc < 0 ? ATTEMPT_FATAL : (rc > 0 || !all_finite(f0, n)) ? ATTEMPT_FAILED
                                                                       : ATTEMPT_OK;
    } else {
        flag = ATTEMPT_FATAL;
    }
    /* a junction with a previous solve is kept once */
    if (flag == ATTEMPT_OK && record && !(record->size > 0 && record->t[record->size - 1] == t0)) {
        if ((local = record_push(record, t0, y, f0, 0)) != CNF_OK)
            flag = ATTEMPT_FATAL;
    }
    flag = agree(s, flag);
    if (flag == ATTEMPT_FAILED) {
        status = cnf_error(CNF_ENONFINITE, "%s: right-hand side is not finite at the initial "
                                           "point t = %.17g (code %d%s); no step can avoid it",
                           name, t0, rc, rc == 0 && all_finite(f0, n) ? ", on another process"
                                                                     : "");
        goto done;
    }
    if (flag != ATTEMPT_OK) {
        if (local == CNF_OK && rc < 0)
            status = cnf_error(CNF_ERHS, "%s: right-hand side failed (code %d) at the initial "
                                         "point t = %.17g", name, rc, t0);
        else
            status = stop_agreed(flag, 0, local, name, t0, 0.0);
        goto done;
    }
    if (t1 == t0)
        goto done;

    const double dir = t1 > t0 ? 1.0 : -1.0;
    double habs; /* the size of the next attempt */
    if (adaptive && h_start && *h_start > 0.0) {
        habs = *h_start;
    } else if (!adaptive || opt->h0 > 0.0) {
        habs = opt->h0;
    } else {
        int fatal = 0;
        habs = initial_step(s, &ev, t0, t1, y, f0, &fatal, &flag);
        if (flag != ATTEMPT_OK) {
            if (fatal)
                status = cnf_error(CNF_ERHS, "%s: right-hand side failed (code %d) while "
                                             "choosing the first step at t = %.17g",
                                   name, fatal, t0);
            else
                status = stop_agreed(flag, 0, CNF_OK, name, t0, 0.0);
            goto done;
        }
    }
    if (adaptive && opt->hmax > 0.0)
        habs = fmin(habs, opt->hmax);

    /* fixed steps advance t as base + k*h, so that N steps of h0 land on t1
     * without a sliver of a step from accumulated rounding */
    double base = t0;
    size_t k = 0;
    int retries = 0;     /* consecutive non-finite failures */
    int rejected = 0;    /* a rejection since the last accepted step */

    /* Every decision below depends only on what all processes agree on (t,
     * h, the counters, the agreed flags and err), so under a reduction all
     * take the same branches and make the same reductions. */
    for (;;) {
        if (st.accepted + st.rejected >= opt->max_steps) {
            status = cnf_error(CNF_EMAX_STEPS,
                               "%s: step limit max_steps = %zu reached at t = %.17g of [%g, %g] "
                               "(h = %.3g)",
                               name, opt->max_steps, t, t0, t1, dir * habs);
            goto done;
        }
        if (habs < opt->hmin) {
            status = cnf_error(CNF_ESTEP_UNDERFLOW,
                               "%s: step size underflow at t = %.17g: |h| = %.3g < hmin = %.3g",
                               name, t, habs, opt->hmin);
            goto done;
        }
        /* the last step: a relative stretch of 1e-8 beats a sliver step */
        const int last = dir * (t1 - t) <= habs * (1.0 + 1e-8);
        const double h = last ? t1 - t : dir * habs;
        if (!(t + h != t)) {
            status = cnf_error(CNF_ESTEP_UNDERFLOW,
                               "%s: step size underflow at t = %.17g: h = %.3g no longer moves t",
                               name, t, h);
            goto done;
        }
        const double tnew =
            last ? t1 : (!adaptive && h == dir * opt->h0) ? base + (double)(k + 1) * h : t + h;

        /* room for the point this attempt may add, before the attempt: an
         * accepted step then cannot fail on memory after the processes have
         * agreed to accept it */
        rc = 0;
        if (record && (local = record_reserve(record, record->size + 1)) != CNF_OK) {
            flag = ATTEMPT_FATAL;
        } else {
            rc = type->apply(s->state, n, &ev, t, h, y, f0, s->ynew, s->yerr, fnew);
            flag = rc < 0 ? ATTEMPT_FATAL
                   : (rc > 0 || !all_finite(s->ynew, n) || (type->fsal && !all_finite(fnew, n)))
                       ? ATTEMPT_FAILED
                       : ATTEMPT_OK;
        }
        double err = 0.0;
        if (adaptive) {
            /* an integral group's size so far, projected to t1 */
            const double projection = fmax(1.0, fabs(t1 - t0) / fabs(tnew - t0));
            err = error_norm_agreed(s, s->yerr, y, s->ynew, projection, &flag);
            if (flag == ATTEMPT_OK && !isfinite(err))
                flag = ATTEMPT_FAILED;
        } else {
            flag = agree(s, flag);
        }
        if (flag >= ATTEMPT_FATAL) {
            status = stop_agreed(flag, rc, local, name, t, h);
            goto done;
        }
        if (flag == ATTEMPT_OK && adaptive && err > 1.0) {
            st.rejected++;
            rejected = 1;
            habs = fabs(h) * fmax(opt->min_factor,
                                  fmin(REJECT_MAX_FACTOR, opt->safety * pow(err, expo)));
            continue;
        }
        /* f at the new point: FSAL methods have it; the others need it as the
         * next step's first stage or for the record */
        if (flag == ATTEMPT_OK && !type->fsal && (record || !last)) {
            rc = cnf_ode_eval_call(&ev, tnew, s->ynew, fnew);
            flag = agree(s, rc < 0 ? ATTEMPT_FATAL
                            : (rc > 0 || !all_finite(fnew, n)) ? ATTEMPT_FAILED : ATTEMPT_OK);
            if (flag >= ATTEMPT_FATAL) {
                status = stop_agreed(flag, rc, CNF_OK, name, t, h);
                goto done;
            }
        }
        if (flag == ATTEMPT_FAILED) {
            st.rejected++;
            rejected = 1;
            if (++retries > opt->max_retries) {
                status = cnf_error(CNF_ENONFINITE,
                                   "%s: state or right-hand side not finite (code %d) through %d "
                                   "consecutive step halvings at t = %.17g (last h = %.3g)",
                                   name, rc, retries, t, h);
                goto done;
            }
            habs = 0.5 * fabs(h);
            continue;
        }

        /* accept; the dense coefficient comes from this step's stages,
         * before the next attempt overwrites them (the room for it was
         * reserved before the attempt) */
        int has_dense = 0;
        if (record && record->interp == CNF_ODE_INTERP_DENSE && type->dense) {
            type->dense(s->state, n, h, f0, fnew, record->d + record->size * n);
            has_dense = 1;
        }
        memcpy(y, s->ynew, n * sizeof(double));
        double *tmp = f0;
        f0 = fnew;
        fnew = tmp;
        if (!adaptive && h != dir * opt->h0) {
            base = tnew; /* a halved retry shifted the grid */
            k = 0;
        } else {
            k++;
        }
        t = tnew;
        st.accepted++;
        st.h_last = h;
        if (adaptive && h_start && st.accepted == 1) {
            double grow = err == 0.0 ? CNF_ODE_WARM_GROWTH
                                     : fmin(CNF_ODE_WARM_GROWTH,
                                            fmax(opt->min_factor, opt->safety * pow(err, expo)));
            *h_start = fabs(h * grow);
        }
        retries = 0;
        if (record && (status = record_push(record, t, y, f0, has_dense)) != CNF_OK)
            goto done; /* cannot happen: reserved above */
        if (last)
            goto done;
        if (adaptive) {
            double factor = err == 0.0 ? opt->max_factor
                                       : fmin(opt->max_factor,
                                              fmax(opt->min_factor, opt->safety * pow(err, expo)));
            if (rejected)
                factor = fmin(factor, 1.0);
            habs = fabs(h) * factor;
            if (opt->hmax > 0.0)
                habs = fmin(habs, opt->hmax);
        } else {
            habs = opt->h0;
        }
        rejected = 0;
    }

done:
    if (stats)
        *stats = st;
    return status;
}
