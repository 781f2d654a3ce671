/* test_assign.c — the linear assignment solver (include/cnf/assign.h).
 *
 * Optimality against brute force over every permutation for n = 1..8 (costs
 * with many ties, of both signs, and real), the squared-distance variant
 * against a matrix built by hand, known answers (equal entries, identical and
 * permuted points), every error path, and at n = 200 an optimality
 * certificate the test computes itself: dual potentials from Bellman-Ford on
 * the solution's exchange graph, which exist exactly when no cyclic
 * reassignment lowers the cost. */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <gsl/gsl_randist.h>

#include "cnf/assign.h"
#include "testutil.h"

enum { NB = 8 };

/* ---- helpers -------------------------------------------------------------- */

/* Fail unless perm (n) is a permutation of 0..n-1. */
static void assert_permutation(const size_t *perm, size_t n)
{
    unsigned char seen[1024] = {0};
    ck_assert_uint_le(n, sizeof seen);
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(perm[i] < n, "perm[%zu] = %zu out of range (n = %zu)", i, perm[i], n);
        ck_assert_msg(!seen[perm[i]], "column %zu assigned twice", perm[i]);
        seen[perm[i]] = 1;
    }
}

/* sum_i c[i][perm[i]], rows in index order as the solver sums. */
static double assignment_cost(const double *c, size_t n, const size_t *perm)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += c[i * n + perm[i]];
    return s;
}

/* The least assignment_cost over all permutations, by depth-first search
 * over the columns still free (rows in order, so sums match the solver's). */
static void brute_rec(const double *c, size_t n, size_t row, size_t *cur, unsigned used,
                      double *best)
{
    if (row == n) {
        double s = assignment_cost(c, n, cur);
        if (s < *best)
            *best = s;
        return;
    }
    for (size_t j = 0; j < n; j++)
        if (!(used & (1u << j))) {
            cur[row] = j;
            brute_rec(c, n, row + 1, cur, used | (1u << j), best);
        }
}

static double brute_force(const double *c, size_t n)
{
    size_t cur[NB];
    double best = INFINITY;
    brute_rec(c, n, 0, cur, 0u, &best);
    return best;
}

/* Solve and check the things every answer must satisfy: success, a
 * permutation, total = the sum of the chosen entries, and the same answer
 * twice (determinism, and no state left behind in the workspace). */
static double solve_ok(cnf_assign_work *w, const double *c, size_t n, size_t *perm)
{
    double total = NAN, again = NAN;
    cnf_status s = cnf_assign_solve(w, c, n, perm, &total);
    ck_assert_msg(s == CNF_OK, "n = %zu: %s", n, cnf_last_error());
    assert_permutation(perm, n);
    ck_assert_msg(total == assignment_cost(c, n, perm), "total %.17g, chosen entries sum to %.17g",
                  total, assignment_cost(c, n, perm));
    size_t *perm2 = malloc(n * sizeof *perm2);
    ck_assert_ptr_nonnull(perm2);
    ck_assert_int_eq(cnf_assign_solve(w, c, n, perm2, &again), CNF_OK);
    ck_assert(memcmp(perm, perm2, n * sizeof *perm) == 0 && again == total);
    free(perm2);
    return total;
}

/* Is perm optimal for c (n x n)? Look for potentials v on the columns with
 * v_j <= v_{perm i} + c_ij - c_{i,perm i} for all i, j (Bellman-Ford from a
 * virtual source, slack tol); then u_i = c_{i,perm i} - v_{perm i} gives
 * u_i + v_j <= c_ij everywhere with equality on the chosen pairs: the LP
 * dual certificate. No potentials within n + 1 rounds means a negative
 * cycle, a cheaper reassignment. Returns the largest violation of
 * u_i + v_j <= c_ij (<= tol when certified), or INFINITY. */
static double dual_certificate(const double *c, size_t n, const size_t *perm, double tol)
{
    double *v = calloc(n, sizeof *v), *u = malloc(n * sizeof *u);
    ck_assert(v && u);
    int changed = 1;
    for (size_t round = 0; round <= n + 1 && changed; round++) {
        changed = 0;
        for (size_t i = 0; i < n; i++) {
            double base = v[perm[i]] - c[i * n + perm[i]];
            for (size_t j = 0; j < n; j++) {
                double cand = base + c[i * n + j];
                if (cand < v[j] - tol) {
                    v[j] = cand;
                    changed = 1;
                }
            }
        }
    }
    double worst = changed ? INFINITY : -INFINITY;
    for (size_t i = 0; i < n && !changed; i++)
        u[i] = c[i * n + perm[i]] - v[perm[i]];
    for (size_t i = 0; i < n && !changed; i++)
        for (size_t j = 0; j < n; j++)
            worst = fmax(worst, u[i] + v[j] - c[i * n + j]);
    free(u);
    free(v);
    return worst;
}

/* Entries drawn by kind: 0 integers 0..3 (ties everywhere), 1 integers
 * -20..20, 2 uniform on [0, 1), 3 uniform on [-1e3, 1e3). */
static void random_costs(gsl_rng *r, int kind, double *c, size_t m)
{
    for (size_t k = 0; k < m; k++) {
        switch (kind) {
        case 0: c[k] = (double)gsl_rng_uniform_int(r, 4); break;
        case 1: c[k] = (double)gsl_rng_uniform_int(r, 41) - 20.0; break;
        case 2: c[k] = gsl_rng_uniform(r); break;
        default: c[k] = 2e3 * gsl_rng_uniform(r) - 1e3; break;
        }
    }
}

static void gaussian_rows(gsl_rng *r, double *X, size_t n, size_t D, double shift)
{
    for (size_t k = 0; k < n * D; k++)
        X[k] = shift + gsl_ran_gaussian(r, 1.0);
}

/* ||X_i - Y_j||^2 by differences, no cancellation. */
static void sq_dist_by_hand(const double *X, const double *Y, size_t n, size_t D, double *c)
{
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++) {
            double s = 0.0;
            for (size_t k = 0; k < D; k++) {
                double d = X[i * D + k] - Y[j * D + k];
                s += d * d;
            }
            c[i * n + j] = s;
        }
}

/* ---- small problems against brute force --------------------------------- */

START_TEST(test_brute_force_n1_to_8)
{
    gsl_rng *r = tu_rng(11);
    cnf_assign_work *w = cnf_assign_work_alloc(NB); /* one workspace for every n */
    ck_assert_msg(w != NULL, "%s", cnf_last_error());
    double c[NB * NB];
    size_t perm[NB];
    for (size_t n = 1; n <= NB; n++) {
        size_t trials = n <= 6 ? 300 : n == 7 ? 60 : 15;
        for (int kind = 0; kind < 4; kind++)
            for (size_t t = 0; t < trials; t++) {
                random_costs(r, kind, c, n * n);
                double total = solve_ok(w, c, n, perm);
                double best = brute_force(c, n);
                /* integers: exact; reals: the optimum may be another
                 * permutation only within rounding of the sum */
                double tol = kind < 2 ? 0.0 : 1e-12 * (1.0 + fabs(best)) * (double)n;
                ck_assert_msg(fabs(total - best) <= tol,
                              "n = %zu kind %d trial %zu: total %.17g, optimum %.17g", n, kind, t,
                              total, best);
            }
    }
    cnf_assign_work_free(w);
    gsl_rng_free(r);
}
END_TEST

START_TEST(test_sq_euclidean_small_brute_force)
{
    gsl_rng *r = tu_rng(12);
    cnf_assign_work *w = cnf_assign_work_alloc(NB);
    ck_assert_ptr_nonnull(w);
    double X[NB * 3], Y[NB * 3], c[NB * NB], total;
    size_t perm[NB];
    for (size_t n = 1; n <= NB; n++)
        for (int t = 0; t < 20; t++) {
            gaussian_rows(r, X, n, 3, 0.0);
            gaussian_rows(r, Y, n, 3, 0.0);
            ck_assert_int_eq(cnf_assign_sq_euclidean(w, X, Y, n, 3, perm, &total), CNF_OK);
            assert_permutation(perm, n);
            sq_dist_by_hand(X, Y, n, 3, c);
            double best = brute_force(c, n);
            ck_assert_msg(fabs(total - best) <= 1e-12 * (1.0 + best) * (double)n,
                          "n = %zu: %.17g vs %.17g", n, total, best);
        }
    cnf_assign_work_free(w);
    gsl_rng_free(r);
}
END_TEST

/* ---- known answers ---------------------------------------------------------- */

START_TEST(test_equal_entries_give_identity)
{
    cnf_assign_work *w = cnf_assign_work_alloc(50);
    ck_assert_ptr_nonnull(w);
    static double c[50 * 50];
    size_t perm[50];
    const double values[] = {0.0, 1.0, -7.5, 1e200};
    for (size_t k = 0; k < sizeof values / sizeof *values; k++) {
        for (size_t m = 0; m < 50 * 50; m++)
            c[m] = values[k];
        double total = solve_ok(w, c, 50, perm);
        for (size_t i = 0; i < 50; i++)
            ck_assert_uint_eq(perm[i], i);
        ck_assert(fabs(total - 50.0 * values[k]) <= 1e-14 * fabs(50.0 * values[k]));
    }
    cnf_assign_work_free(w);
}
END_TEST

START_TEST(test_sq_euclidean_matches_matrix_by_hand)
{
    enum { N = 60 };
    gsl_rng *r = tu_rng(13);
    cnf_assign_work *w = cnf_assign_work_alloc(N);
    ck_assert_ptr_nonnull(w);
    static double X[N * 16], Y[N * 16], c[N * N];
    size_t perm[N], perm_hand[N];
    const size_t dims[] = {1, 2, 16};
    for (size_t k = 0; k < 3; k++)
        for (int t = 0; t < 5; t++) {
            size_t D = dims[k], n = N - (size_t)t; /* n < n_max too */
            gaussian_rows(r, X, n, D, 0.0);
            gaussian_rows(r, Y, n, D, 0.5);
            double total;
            ck_assert_int_eq(cnf_assign_sq_euclidean(w, X, Y, n, D, perm, &total), CNF_OK);
            sq_dist_by_hand(X, Y, n, D, c);
            double total_hand = solve_ok(w, c, n, perm_hand);
            ck_assert_msg(memcmp(perm, perm_hand, n * sizeof *perm) == 0,
                          "D = %zu n = %zu: dgemm and by-hand distances pair differently", D, n);
            ck_assert(fabs(total - total_hand) <= 1e-12 * total_hand);
            ck_assert(fabs(total - assignment_cost(c, n, perm)) <= 1e-12 * total_hand);
        }
    cnf_assign_work_free(w);
    gsl_rng_free(r);
}
END_TEST

START_TEST(test_identical_and_permuted_points)
{
    enum { N = 100 };
    gsl_rng *r = tu_rng(14);
    cnf_assign_work *w = cnf_assign_work_alloc(N);
    ck_assert_ptr_nonnull(w);
    static double X[N * 16], Y[N * 16];
    size_t perm[N], sigma[N];
    const size_t dims[] = {2, 16};
    for (size_t k = 0; k < 2; k++) {
        size_t D = dims[k];
        gaussian_rows(r, X, N, D, 3.0); /* off-centre: the rounding of the
                                           dgemm form is then not all zero */
        double total;
        ck_assert_int_eq(cnf_assign_sq_euclidean(w, X, X, N, D, perm, &total), CNF_OK);
        for (size_t i = 0; i < N; i++)
            ck_assert_uint_eq(perm[i], i);
        ck_assert(total >= 0.0 && total <= 1e-10);

        /* Y_j = X_sigma(j): row i belongs with the j where sigma(j) = i */
        for (size_t i = 0; i < N; i++)
            sigma[i] = i;
        gsl_ran_shuffle(r, sigma, N, sizeof *sigma);
        for (size_t j = 0; j < N; j++)
            memcpy(Y + j * D, X + sigma[j] * D, D * sizeof *Y);
        ck_assert_int_eq(cnf_assign_sq_euclidean(w, X, Y, N, D, perm, &total), CNF_OK);
        for (size_t j = 0; j < N; j++)
            ck_assert_uint_eq(perm[sigma[j]], j);
        ck_assert(total >= 0.0 && total <= 1e-10);
    }
    /* points a hair apart (1e-9) and far off-centre: the true squared
     * distances (~1e-17) are far below the dgemm form's rounding (~1e-12),
     * which falls below 0 as often as above; those entries must come out
     * as 0, so that no total is negative */
    for (int t = 0; t < 50; t++) {
        double total;
        gaussian_rows(r, X, 4, 16, 10.0);
        for (size_t m = 0; m < 4 * 16; m++)
            Y[m] = X[m] + 1e-9 * gsl_ran_gaussian(r, 1.0);
        ck_assert_int_eq(cnf_assign_sq_euclidean(w, X, Y, 4, 16, perm, &total), CNF_OK);
        for (size_t i = 0; i < 4; i++)
            ck_assert_uint_eq(perm[i], i);
        ck_assert_msg(total >= 0.0 && total <= 1e-10, "total %g", total);
    }
    cnf_assign_work_free(w);
    gsl_rng_free(r);
}
END_TEST

/* ---- errors ----------------------------------------------------------------- */

static void assert_error(cnf_status s, const char *needle)
{
    ck_assert_int_eq(s, CNF_EINVAL);
    ck_assert_msg(strstr(cnf_last_error(), needle) != NULL, "message \"%s\" lacks \"%s\"",
                  cnf_last_error(), needle);
}

START_TEST(test_errors)
{
    ck_assert_ptr_null(cnf_assign_work_alloc(0));
    ck_assert_ptr_nonnull(strstr(cnf_last_error(), "n_max"));
    ck_assert_ptr_null(cnf_assign_work_alloc(SIZE_MAX / 2));
    ck_assert_ptr_nonnull(strstr(cnf_last_error(), "overflow"));
    ck_assert_ptr_null(cnf_assign_work_alloc((size_t)1 << (sizeof(size_t) * 4)));
    ck_assert_ptr_nonnull(strstr(cnf_last_error(), "overflow"));
    cnf_assign_work_free(NULL);

    cnf_assign_work *w = cnf_assign_work_alloc(4);
    ck_assert_ptr_nonnull(w);
    double c[25] = {0}, X[10] = {0}, Y[10] = {0};
    size_t perm[5];
    assert_error(cnf_assign_solve(w, c, 5, perm, NULL), "n = 5");
    assert_error(cnf_assign_solve(w, c, 0, perm, NULL), "n = 0");
    assert_error(cnf_assign_solve(NULL, c, 2, perm, NULL), "NULL");
    assert_error(cnf_assign_solve(w, NULL, 2, perm, NULL), "NULL");
    assert_error(cnf_assign_solve(w, c, 2, NULL, NULL), "NULL");
    c[1 * 3 + 2] = NAN;
    assert_error(cnf_assign_solve(w, c, 3, perm, NULL), "cost[1][2]");
    c[1 * 3 + 2] = -INFINITY;
    assert_error(cnf_assign_solve(w, c, 3, perm, NULL), "cost[1][2]");
    c[1 * 3 + 2] = 0.0;
    ck_assert_int_eq(cnf_assign_solve(w, c, 3, perm, NULL), CNF_OK); /* total may be NULL */

    assert_error(cnf_assign_sq_euclidean(w, X, Y, 5, 2, perm, NULL), "n = 5");
    assert_error(cnf_assign_sq_euclidean(w, X, Y, 0, 2, perm, NULL), "n = 0");
    assert_error(cnf_assign_sq_euclidean(w, X, Y, 2, 0, perm, NULL), "D = 0");
    assert_error(cnf_assign_sq_euclidean(w, NULL, Y, 2, 2, perm, NULL), "NULL");
    assert_error(cnf_assign_sq_euclidean(w, X, Y, 2, (size_t)INT_MAX + 1, perm, NULL), "D =");
    X[2 * 2 + 1] = NAN;
    assert_error(cnf_assign_sq_euclidean(w, X, Y, 3, 2, perm, NULL), "X[2][1]");
    X[2 * 2 + 1] = 0.0;
    Y[0] = INFINITY;
    assert_error(cnf_assign_sq_euclidean(w, X, Y, 3, 2, perm, NULL), "Y[0][0]");
    Y[0] = 1e200; /* finite, but its square is not */
    assert_error(cnf_assign_sq_euclidean(w, X, Y, 3, 2, perm, NULL), "overflows");
    Y[0] = 0.0;
    ck_assert_int_eq(cnf_assign_sq_euclidean(w, X, Y, 3, 2, perm, NULL), CNF_OK);

    /* costs so large that their sums overflow: refused, not a total of
     * -inf; large but harmless ones still solve */
    double big[4] = {DBL_MAX, -DBL_MAX, -DBL_MAX, DBL_MAX};
    assert_error(cnf_assign_solve(w, big, 2, perm, NULL), "too large");
    double huge[4] = {DBL_MAX, DBL_MAX, 0.5 * DBL_MAX, DBL_MAX};
    assert_error(cnf_assign_solve(w, huge, 2, perm, NULL), "too large");
    double b3[9] = {1e307, 0, -1e307, -1e307, 1e307, 0, 0, -1e307, 1e307}, total;
    ck_assert_int_eq(cnf_assign_solve(w, b3, 3, perm, &total), CNF_OK);
    ck_assert(perm[0] == 2 && perm[1] == 0 && perm[2] == 1 && total == -3e307);
    cnf_assign_work_free(w);
}
END_TEST

/* ---- a larger problem ------------------------------------------------------ */

START_TEST(test_n200_bounds_and_certificate)
{
    enum { N = 200, D = 8 };
    gsl_rng *r = tu_rng(15);
    cnf_assign_work *w = cnf_assign_work_alloc(N);
    ck_assert_ptr_nonnull(w);
    static double c[N * N], X[N * D], Y[N * D];
    size_t perm[N], other[N];
    for (int kind = 0; kind < 5; kind++) {
        double total;
        if (kind < 4) {
            random_costs(r, kind, c, N * N);
            total = solve_ok(w, c, N, perm);
        } else { /* the OT use: data against noise */
            gaussian_rows(r, X, N, D, 0.3);
            gaussian_rows(r, Y, N, D, 0.0);
            ck_assert_int_eq(cnf_assign_sq_euclidean(w, X, Y, N, D, perm, &total), CNF_OK);
            assert_permutation(perm, N);
            sq_dist_by_hand(X, Y, N, D, c);
        }
        double scale = kind == 0 || kind == 1 ? 0.0 : 1e-12 * (1.0 + fabs(total));
        for (size_t i = 0; i < N; i++)
            other[i] = i;
        ck_assert_msg(total <= assignment_cost(c, N, other) + scale, "kind %d: worse than identity",
                      kind);
        for (int t = 0; t < 100; t++) {
            gsl_ran_shuffle(r, other, N, sizeof *other);
            ck_assert_msg(total <= assignment_cost(c, N, other) + scale,
                          "kind %d: worse than random permutation %d", kind, t);
        }
        /* integer costs: exact arithmetic, so no slack at all */
        double tol = kind < 2 ? 0.0 : 1e-9 * (1.0 + fabs(total) / N);
        double worst = dual_certificate(c, N, perm, tol);
        ck_assert_msg(worst <= 4.0 * tol, "kind %d: no dual certificate (violation %g)", kind,
                      worst);
    }
    /* and the check can fail: a swap of two rows' columns that costs more
     * than the optimum must find no certificate */
    random_costs(r, 1, c, N * N);
    double opt = solve_ok(w, c, N, perm);
    for (size_t a = 1; a < N; a++) {
        size_t t = perm[0];
        perm[0] = perm[a], perm[a] = t;
        if (assignment_cost(c, N, perm) > opt)
            break;
        perm[a] = perm[0], perm[0] = t;
    }
    ck_assert(assignment_cost(c, N, perm) > opt);
    ck_assert(dual_certificate(c, N, perm, 0.0) > 0.0);
    cnf_assign_work_free(w);
    gsl_rng_free(r);
}
END_TEST

int main(void)
{
    tu_program_setup();
    Suite *s = suite_create("assign");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_brute_force_n1_to_8);
    tcase_add_test(tc, test_sq_euclidean_small_brute_force);
    tcase_add_test(tc, test_equal_entries_give_identity);
    tcase_add_test(tc, test_sq_euclidean_matches_matrix_by_hand);
    tcase_add_test(tc, test_identical_and_permuted_points);
    tcase_add_test(tc, test_errors);
    tcase_add_test(tc, test_n200_bounds_and_certificate);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
