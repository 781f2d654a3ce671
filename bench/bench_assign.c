/* bench_assign.c — time of one exact assignment (include/cnf/assign.h), the
 * pairing step of minibatch OT flow matching.
 *
 * For n = 64, 128, 256, 512, 1000 and D = 2, 16: n data rows and n noise
 * rows, both N(0, I) draws (fresh ones every repeat, so the figure spans
 * instances rather than one matrix), paired by cnf_assign_sq_euclidean: the
 * squared-distance matrix (one cblas_dgemm, a few percent of the time) and
 * the solve, what a training step pays.
 * One JSON line per (n, D): median and p90 microseconds as the calling
 * thread's CPU time (all the work runs there with OpenBLAS at one thread,
 * and unlike wall time it does not count waiting for a shared machine's
 * cores), the wall median beside them, the mean ratio of the optimal total
 * to the identity pairing's (what OT saves), and the machine context (BLAS
 * threads, load average). A first line describes the machine.
 *
 * Usage: bench_assign [repeats]   (1..1000, default 21) */
#define _POSIX_C_SOURCE 199309L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <gsl/gsl_rng.h>

#include "cnf/assign.h"

#include "bench_common.h"

static double thread_cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* N(0, 1) draws by Box-Muller (gsl_randist.h would bring GSL's CBLAS
 * declarations, which clash with OpenBLAS's cblas.h). */
static void gaussian_fill(gsl_rng *r, double *x, size_t m)
{
    for (size_t k = 0; k < m; k += 2) {
        double a = sqrt(-2.0 * log(gsl_rng_uniform_pos(r))), t = 6.283185307179586 * gsl_rng_uniform(r);
        x[k] = a * cos(t);
        if (k + 1 < m)
            x[k + 1] = a * sin(t);
    }
}

static double sq_dist(const double *x, const double *y, size_t D)
{
    double s = 0.0;
    for (size_t k = 0; k < D; k++)
        s += (x[k] - y[k]) * (x[k] - y[k]);
    return s;
}

enum { N_MAX = 1000, D_MAX = 16 };

static int bench_case(cnf_assign_work *w, gsl_rng *r, size_t n, size_t D, int repeats)
{
    double *X = malloc(n * D * sizeof *X), *Y = malloc(n * D * sizeof *Y);
    size_t *perm = malloc(n * sizeof *perm);
    double *t = malloc(2 * (size_t)repeats * sizeof *t), *tmp = malloc((size_t)repeats * sizeof *tmp);
    if (!X || !Y || !perm || !t || !tmp) {
        fprintf(stderr, "bench_assign: out of memory\n");
        return 1;
    }
    double *cpu = t, *wall = t + repeats, ratio_sum = 0.0;
    for (int k = 0; k < repeats; k++) {
        gaussian_fill(r, X, n * D);
        gaussian_fill(r, Y, n * D);
        double total, w0 = bench_now(), c0 = thread_cpu_now();
        cnf_status s = cnf_assign_sq_euclidean(w, X, Y, n, D, perm, &total);
        cpu[k] = thread_cpu_now() - c0;
        wall[k] = bench_now() - w0;
        if (s != CNF_OK) {
            fprintf(stderr, "bench_assign: %s\n", cnf_last_error());
            return 1;
        }
        double identity = 0.0;
        for (size_t i = 0; i < n; i++)
            identity += sq_dist(X + i * D, Y + i * D, D);
        ratio_sum += total / identity;
    }
    bench_summary sc = bench_summarise(cpu, (size_t)repeats, tmp);
    bench_summary sw = bench_summarise(wall, (size_t)repeats, tmp);
    printf("{\"bench\":\"assign\",\"n\":%zu,\"D\":%zu,\"repeats\":%d,\"median_us\":%.1f,"
           "\"p90_us\":%.1f,\"wall_median_us\":%.1f,\"ot_over_identity_cost\":%.4f",
           n, D, repeats, 1e6 * sc.median, 1e6 * sc.p90, 1e6 * sw.median, ratio_sum / repeats);
    bench_print_context(stdout);
    printf("}\n");
    fflush(stdout);
    free(tmp);
    free(t);
    free(perm);
    free(Y);
    free(X);
    return 0;
}

int main(int argc, char **argv)
{
    bench_setup(&argc, argv);
    int repeats = 21;
    if (argc > 1) {
        char *end;
        long v = strtol(argv[1], &end, 10);
        int help = bench_help_requested(argc, argv);
        if (help || argc > 2 || end == argv[1] || *end || v < 1 || v > 1000) {
            fprintf(help ? stdout : stderr, "usage: %s [repeats (1..1000, default 21)]\n", argv[0]);
            return help ? EXIT_SUCCESS : 2;
        }
        repeats = (int)v;
    }
    bench_print_machine(stdout);
    cnf_assign_work *w = cnf_assign_work_alloc(N_MAX);
    gsl_rng *r = gsl_rng_alloc(gsl_rng_mt19937);
    if (!w || !r) {
        fprintf(stderr, "bench_assign: %s\n", w ? "out of memory" : cnf_last_error());
        return EXIT_FAILURE;
    }
    gsl_rng_set(r, 1);
    const size_t sizes[] = {64, 128, 256, 512, 1000}, dims[] = {2, D_MAX};
    int bad = 0;
    for (size_t d = 0; d < 2; d++)
        for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++)
            bad |= bench_case(w, r, sizes[k], dims[d], repeats);
    gsl_rng_free(r);
    cnf_assign_work_free(w);
    return bad ? EXIT_FAILURE : EXIT_SUCCESS;
}
