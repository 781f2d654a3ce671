/* bench_ode.c — cost of the ODE solver core: right-hand-side evaluations,
 * accepted/rejected steps and wall time per solve.
 *
 * Cases (one JSON line each):
 *   - a batch of B = 1000 independent pendulums theta'' = -sin(theta) (state
 *     B x 2, amplitudes spread over 0.1..3.0) on [0, 10], through dopri5 at
 *     several tolerances, the GSL steppers and rk4; time is the median of
 *     several repeats, max_error the largest deviation from rk8pd at 1e-12;
 *   - the harmonic oscillator y'' = -y, y(0) = (1, 0), on [0, 10] and
 *     [0, 2 pi] with dopri5 at rtol = atol = 1e-6 and 1e-8, and
 *     Lotka-Volterra from (10, 5) on [0, 10] (a case with rejected steps),
 *     for comparison with other dopri5 implementations
 *     (bench/compare_scipy.py prints the same counts for scipy's RK45).
 * Usage: bench_ode [repeats]   (default 7) */
#define _POSIX_C_SOURCE 199309L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cnf/ode.h"

enum { B = 1000 };

static int rhs_pendulum(double t, const double *y, double *f, void *p)
{
    (void)t;
    size_t b = *(size_t *)p;
    for (size_t i = 0; i < b; i++) {
        f[2 * i] = y[2 * i + 1];
        f[2 * i + 1] = -sin(y[2 * i]);
    }
    return 0;
}

static int rhs_harmonic(double t, const double *y, double *f, void *p)
{
    (void)t, (void)p;
    f[0] = y[1];
    f[1] = -y[0];
    return 0;
}

/* Lotka-Volterra x' = 1.5 x - x y, y' = x y - 3 y from (10, 5): steep
 * swings that make the controller reject steps */
static int rhs_lv(double t, const double *y, double *f, void *p)
{
    (void)t, (void)p;
    f[0] = 1.5 * y[0] - y[0] * y[1];
    f[1] = y[0] * y[1] - 3.0 * y[1];
    return 0;
}

static int bench_lv(double tol)
{
    cnf_ode_options o;
    cnf_ode_options_default(&o);
    o.rtol = o.atol = tol;
    cnf_ode_solver *s = cnf_ode_solver_alloc(2, &o);
    double y[2] = {10.0, 5.0};
    cnf_ode_stats st;
    if (!s || cnf_ode_solve(s, rhs_lv, NULL, 0.0, 10.0, y, NULL, &st) != CNF_OK) {
        fprintf(stderr, "bench_ode: %s\n", cnf_last_error());
        return 1;
    }
    printf("{\"case\": \"lotka_volterra\", \"method\": \"dopri5\", \"t1\": \"10\", "
           "\"rtol\": %g, \"atol\": %g, \"nfe\": %zu, \"accepted\": %zu, "
           "\"rejected\": %zu, \"y1\": [%.10g, %.10g]}\n",
           tol, tol, st.nfe, st.accepted, st.rejected, y[0], y[1]);
    cnf_ode_solver_free(s);
    return 0;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pendulum_ref[2 * B]; /* B x 2: rk8pd at 1e-12, the yardstick */

static void pendulum_init(double *y) /* B x 2 */
{
    for (size_t i = 0; i < B; i++) {
        y[2 * i] = 0.1 + 2.9 * (double)i / (B - 1);
        y[2 * i + 1] = 0.0;
    }
}

static int make_reference(void)
{
    cnf_ode_options o;
    cnf_ode_options_default(&o);
    o.method = CNF_ODE_RK8PD;
    o.rtol = o.atol = 1e-12;
    size_t b = B;
    cnf_ode_solver *s = cnf_ode_solver_alloc(2 * B, &o);
    pendulum_init(pendulum_ref);
    int bad = !s || cnf_ode_solve(s, rhs_pendulum, &b, 0.0, 10.0, pendulum_ref, NULL, NULL);
    if (bad)
        fprintf(stderr, "bench_ode: %s\n", cnf_last_error());
    cnf_ode_solver_free(s);
    return bad;
}

static int bench_batch(cnf_ode_method m, double tol, double h0, int repeats)
{
    cnf_ode_options o;
    cnf_ode_options_default(&o);
    o.method = m;
    o.rtol = o.atol = tol;
    o.h0 = h0;
    size_t b = B;
    cnf_ode_solver *s = cnf_ode_solver_alloc(2 * B, &o);
    double *y0 = malloc(2 * B * sizeof(double)); /* B x 2 */
    double *y = malloc(2 * B * sizeof(double));  /* B x 2 */
    double *times = malloc((size_t)repeats * sizeof(double));
    if (!s || !y0 || !y || !times) {
        fprintf(stderr, "bench_ode: %s\n", s ? "out of memory" : cnf_last_error());
        return 1;
    }
    pendulum_init(y0);
    cnf_ode_stats st = {0, 0, 0, 0.0};
    for (int r = 0; r < repeats; r++) {
        memcpy(y, y0, 2 * B * sizeof(double));
        double t = now();
        cnf_status rc = cnf_ode_solve(s, rhs_pendulum, &b, 0.0, 10.0, y, NULL, &st);
        times[r] = now() - t;
        if (rc != CNF_OK) {
            fprintf(stderr, "bench_ode: %s\n", cnf_last_error());
            return 1;
        }
    }
    qsort(times, (size_t)repeats, sizeof(double), cmp_double);
    double err = 0.0;
    for (size_t i = 0; i < 2 * B; i++)
        err = fmax(err, fabs(y[i] - pendulum_ref[i]));
    printf("{\"case\": \"pendulum_batch\", \"method\": \"%s\", \"B\": %d, \"D\": 2, \"t1\": 10, "
           "\"rtol\": %g, \"atol\": %g, \"h0\": %g, \"nfe\": %zu, \"accepted\": %zu, "
           "\"rejected\": %zu, \"max_error\": %.3g, \"median_ms\": %.3f, "
           "\"us_per_sample_nfe\": %.4f, \"repeats\": %d}\n",
           cnf_ode_method_name(m), B, cnf_ode_method_is_adaptive(m) ? tol : 0.0,
           cnf_ode_method_is_adaptive(m) ? tol : 0.0, h0, st.nfe, st.accepted, st.rejected,
           err, 1e3 * times[repeats / 2], 1e6 * times[repeats / 2] / ((double)st.nfe * B), repeats);
    free(times);
    free(y);
    free(y0);
    cnf_ode_solver_free(s);
    return 0;
}

static int bench_harmonic(double t1, const char *label, double tol)
{
    cnf_ode_options o;
    cnf_ode_options_default(&o);
    o.rtol = o.atol = tol;
    cnf_ode_solver *s = cnf_ode_solver_alloc(2, &o);
    double y[2] = {1.0, 0.0};
    cnf_ode_stats st;
    if (!s || cnf_ode_solve(s, rhs_harmonic, NULL, 0.0, t1, y, NULL, &st) != CNF_OK) {
        fprintf(stderr, "bench_ode: %s\n", cnf_last_error());
        return 1;
    }
    double err = fmax(fabs(y[0] - cos(t1)), fabs(y[1] + sin(t1)));
    printf("{\"case\": \"harmonic\", \"method\": \"dopri5\", \"t1\": \"%s\", \"rtol\": %g, "
           "\"atol\": %g, \"nfe\": %zu, \"accepted\": %zu, \"rejected\": %zu, "
           "\"max_error\": %.3g}\n",
           label, tol, tol, st.nfe, st.accepted, st.rejected, err);
    cnf_ode_solver_free(s);
    return 0;
}

int main(int argc, char **argv)
{
    /* anything but one positive count (e.g. --help, which atoi read as 0)
     * gets the usage instead of a run */
    int repeats = 7;
    if (argc > 1) {
        char *end;
        long r = strtol(argv[1], &end, 10);
        int help = !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help");
        if (help || argc > 2 || end == argv[1] || *end || r < 1 || r > 1000) {
            fprintf(help ? stdout : stderr, "usage: %s [repeats (1..1000, default 7)]\n", argv[0]);
            return help ? EXIT_SUCCESS : 2;
        }
        repeats = (int)r;
    }
    int bad = 0;
    bad |= bench_harmonic(10.0, "10", 1e-6);
    bad |= bench_harmonic(10.0, "10", 1e-8);
    bad |= bench_harmonic(2.0 * 3.14159265358979323846, "2pi", 1e-6);
    bad |= bench_harmonic(2.0 * 3.14159265358979323846, "2pi", 1e-8);
    bad |= bench_lv(1e-6);
    bad |= bench_lv(1e-8);
    if (make_reference())
        return EXIT_FAILURE;
    const double tols[] = {1e-4, 1e-6, 1e-8};
    for (int i = 0; i < 3; i++)
        bad |= bench_batch(CNF_ODE_DOPRI5, tols[i], 0.0, repeats);
    bad |= bench_batch(CNF_ODE_RKF45, 1e-6, 0.0, repeats);
    bad |= bench_batch(CNF_ODE_RKCK, 1e-6, 0.0, repeats);
    bad |= bench_batch(CNF_ODE_RK8PD, 1e-6, 0.0, repeats);
    bad |= bench_batch(CNF_ODE_RK8PD, 1e-8, 0.0, repeats);
    bad |= bench_batch(CNF_ODE_RK4, 0.0, 0.01, repeats);
    return bad ? EXIT_FAILURE : EXIT_SUCCESS;
}
