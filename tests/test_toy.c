/* test_toy.c — the FFJORD toy data sets: shape, finiteness, seeded
 * reproducibility, and a statistic of each that follows from its
 * definition (datasets/README.md). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <gsl/gsl_rng.h>

#include "cnf/toy.h"
#include "testutil.h"

#define N_PTS 20000
#define M_PI_VALUE 3.14159265358979323846
#define M_PI_4_VALUE (M_PI_VALUE / 4.0)

/* n x 2 points of the named set from seed; two guard values after the end
 * must stay untouched. Caller frees. */
static double *draw(const char *name, size_t n, unsigned long seed)
{
    gsl_rng *rng = tu_rng(seed);
    double *X = malloc((2 * n + 2) * sizeof *X);
    ck_assert_ptr_nonnull(X);
    for (size_t i = 0; i < 2 * n + 2; i++)
        X[i] = NAN;
    X[2 * n] = 12345.0;
    X[2 * n + 1] = -54321.0;
    ck_assert_int_eq(cnf_toy_generate(name, n, rng, X), CNF_OK);
    ck_assert(X[2 * n] == 12345.0 && X[2 * n + 1] == -54321.0);
    gsl_rng_free(rng);
    return X;
}

START_TEST(test_names)
{
    ck_assert_uint_eq(cnf_toy_count(), 8);
    const char *expect[] = {"8gaussians", "pinwheel", "checkerboard", "2spirals",
                            "moons", "circles", "rings", "swissroll"};
    for (size_t i = 0; i < 8; i++) {
        ck_assert_str_eq(cnf_toy_name(i), expect[i]);
        ck_assert(cnf_toy_exists(expect[i]));
        ck_assert_ptr_nonnull(strstr(cnf_toy_names(), expect[i]));
        ck_assert_ptr_nonnull(cnf_toy_description(expect[i]));
    }
    ck_assert_ptr_null(cnf_toy_name(8));
    ck_assert(!cnf_toy_exists("9gaussians"));
    ck_assert_ptr_null(cnf_toy_description("9gaussians"));
}
END_TEST

START_TEST(test_unknown_name)
{
    gsl_rng *rng = gsl_rng_alloc(gsl_rng_mt19937);
    double X[4];
    ck_assert_int_eq(cnf_toy_generate("spiral", 2, rng, X), CNF_EINVAL);
    ck_assert_ptr_nonnull(strstr(cnf_last_error(), "spiral"));
    ck_assert_ptr_nonnull(strstr(cnf_last_error(), "checkerboard"));
    ck_assert_int_eq(cnf_toy_generate(NULL, 2, rng, X), CNF_EINVAL);
    gsl_rng_free(rng);
}
END_TEST

/* Every set, odd and even sizes: all rows written and finite; same seed,
 * same bits; another seed, other points. */
START_TEST(test_shape_finite_seeded)
{
    const char *name = cnf_toy_name((size_t)_i);
    size_t sizes[] = {1, 2, 7, 1001, 4000};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s];
        double *A = draw(name, n, 42);
        double *B = draw(name, n, 42);
        double *C = draw(name, n, 43);
        for (size_t i = 0; i < 2 * n; i++)
            ck_assert_msg(isfinite(A[i]), "%s n=%zu: entry %zu not finite", name, n, i);
        ck_assert_msg(memcmp(A, B, 2 * n * sizeof *A) == 0, "%s n=%zu: not reproducible", name, n);
        if (n >= 7)
            ck_assert_msg(memcmp(A, C, 2 * n * sizeof *A) != 0, "%s n=%zu: seed ignored", name, n);
        free(A);
        free(B);
        free(C);
    }
}
END_TEST

static double radius(const double *x)
{
    return hypot(x[0], x[1]);
}

/* 8gaussians: mean radius of a Rice(4, 0.5) point is 4 + 0.5^2/8 + O(1e-4),
 * all over 1.414; each centre takes 1/8 of the points; and -mean log p of
 * the known mixture density is its entropy, 2.832 nats. */
START_TEST(test_8gaussians)
{
    double *X = draw("8gaussians", N_PTS, 1);
    double s = 0.0, H = 0.0;
    size_t count[8] = {0};
    const double sig = 0.5 / 1.414;
    for (size_t i = 0; i < N_PTS; i++) {
        s += radius(X + 2 * i);
        double ang = atan2(X[2 * i + 1], X[2 * i]);
        long sector = lround(ang / M_PI_4_VALUE);
        count[(sector + 8) % 8]++;
        double p = 0.0;
        for (int c = 0; c < 8; c++) {
            double cx = 4.0 * cos(c * M_PI_4_VALUE) / 1.414, cy = 4.0 * sin(c * M_PI_4_VALUE) / 1.414;
            double dx = X[2 * i] - cx, dy = X[2 * i + 1] - cy;
            p += exp(-(dx * dx + dy * dy) / (2 * sig * sig)) / (2 * M_PI_VALUE * sig * sig) / 8.0;
        }
        H -= log(p);
    }
    s /= N_PTS;
    H /= N_PTS;
    ck_assert_msg(fabs(s - 4.03125 / 1.414) < 0.01, "mean radius %g", s);
    for (int c = 0; c < 8; c++)
        ck_assert_msg(fabs(count[c] / (double)N_PTS - 0.125) < 0.012, "centre %d: %zu", c, count[c]);
    ck_assert_msg(fabs(H - 2.832) < 0.02, "entropy %g", H);
    free(X);
}
END_TEST

/* moons: x mean 0 and y mean 2 * (0.5 * 2/pi + 0.5 * (0.5 - 2/pi)) - 0.2
 * = 0.3 (means of cos and sin over [0, pi]); ranges of the half circles
 * [-3, 3] x [-1.2, 1.8] widened by 5 noise deviations (0.2 each). */
START_TEST(test_moons)
{
    double *X = draw("moons", N_PTS, 2);
    double mx = 0, my = 0;
    for (size_t i = 0; i < N_PTS; i++) {
        double x = X[2 * i], y = X[2 * i + 1];
        mx += x;
        my += y;
        ck_assert(x > -4.0 && x < 4.0 && y > -2.2 && y < 2.8);
    }
    mx /= N_PTS;
    my /= N_PTS;
    ck_assert_msg(fabs(mx) < 0.02 && fabs(my - 0.3) < 0.02, "means %g %g", mx, my);
    free(X);
}
END_TEST

/* circles: half the points near radius 3, half near 1.5 (noise 0.24); the
 * midpoint 2.25 is 3 deviations from each, so the split is within 0.5 %. */
START_TEST(test_circles)
{
    double *X = draw("circles", N_PTS, 3);
    size_t outer = 0;
    double so = 0, si = 0;
    for (size_t i = 0; i < N_PTS; i++) {
        double r = radius(X + 2 * i);
        ck_assert(r < 3.0 + 1.5);
        if (r > 2.25) {
            outer++;
            so += r;
        } else {
            si += r;
        }
    }
    ck_assert_msg(fabs(outer / (double)N_PTS - 0.5) < 0.005, "outer %zu", outer);
    ck_assert_msg(fabs(so / outer - 3.0) < 0.03 && fabs(si / (N_PTS - outer) - 1.5) < 0.03,
                  "radii %g %g", so / outer, si / (N_PTS - outer));
    free(X);
}
END_TEST

/* rings: every point within 5 noise deviations (0.4) of one of the radii
 * 3, 2.25, 1.5, 0.75, a quarter of them on each. */
START_TEST(test_rings)
{
    double *X = draw("rings", N_PTS, 4);
    size_t count[4] = {0};
    for (size_t i = 0; i < N_PTS; i++) {
        double r = radius(X + 2 * i);
        int ring = (int)lround(r / 0.75) - 1;   /* 0.75 k -> k - 1 */
        ck_assert_msg(ring >= 0 && ring < 4, "radius %g", r);
        ck_assert(fabs(r - 0.75 * (ring + 1)) < 0.4);
        count[ring]++;
    }
    for (int k = 0; k < 4; k++)
        ck_assert_msg(fabs(count[k] / (double)N_PTS - 0.25) < 0.01, "ring %d: %zu", k, count[k]);
    free(X);
}
END_TEST

/* checkerboard: every point on a dark square, i.e. floor(x/2) + floor(y/2)
 * even, inside [-4, 4]^2; each of the 8 squares gets 1/8. */
START_TEST(test_checkerboard)
{
    double *X = draw("checkerboard", N_PTS, 5);
    size_t count[16] = {0};
    for (size_t i = 0; i < N_PTS; i++) {
        double x = X[2 * i], y = X[2 * i + 1];
        ck_assert(x >= -4.0 && x < 4.0 && y >= -4.0 && y < 4.0);
        long a = (long)floor(x / 2.0), b = (long)floor(y / 2.0);
        ck_assert_msg(((a + b) % 2 + 2) % 2 == 0, "point (%g, %g) on a light square", x, y);
        count[(a + 2) * 4 + (b + 2)]++;
    }
    size_t filled = 0;
    for (int k = 0; k < 16; k++)
        if (count[k]) {
            filled++;
            ck_assert(fabs(count[k] / (double)N_PTS - 0.125) < 0.012);
        }
    ck_assert_uint_eq(filled, 8);
    free(X);
}
END_TEST

/* pinwheel: radius 2 |f| with f0 ~ 1 + 0.3 N, f1 ~ 0.1 N, so mean radius
 * 2 (1 + 0.1^2 / 2) to 1e-3; five arms of equal size. */
START_TEST(test_pinwheel)
{
    double *X = draw("pinwheel", N_PTS, 6);
    double s = 0;
    for (size_t i = 0; i < N_PTS; i++)
        s += radius(X + 2 * i);
    s /= N_PTS;
    ck_assert_msg(fabs(s - 2.01) < 0.015, "mean radius %g", s);
    free(X);
}
END_TEST

/* 2spirals: the two arms are negatives of each other, so the mean is 0;
 * radii below (3 pi + 0.75) / 3 plus 5 noise deviations. */
START_TEST(test_2spirals)
{
    double *X = draw("2spirals", N_PTS, 7);
    double mx = 0, my = 0;
    for (size_t i = 0; i < N_PTS; i++) {
        mx += X[2 * i];
        my += X[2 * i + 1];
        ck_assert(radius(X + 2 * i) < (3 * M_PI_VALUE + 0.75) / 3 + 0.5);
    }
    ck_assert_msg(fabs(mx / N_PTS) < 0.05 && fabs(my / N_PTS) < 0.05, "means %g %g", mx / N_PTS,
                  my / N_PTS);
    free(X);
}
END_TEST

/* swissroll: radius t / 5 with t uniform on [1.5 pi, 4.5 pi] plus noise of
 * std 0.2 per coordinate: mean radius 3 pi / 5 + about 0.2^2 / (2 r). */
START_TEST(test_swissroll)
{
    double *X = draw("swissroll", N_PTS, 8);
    double s = 0;
    for (size_t i = 0; i < N_PTS; i++) {
        double r = radius(X + 2 * i);
        ck_assert(r < 4.5 * M_PI_VALUE / 5 + 1.2);
        s += r;
    }
    s /= N_PTS;
    ck_assert_msg(fabs(s - (3 * M_PI_VALUE / 5 + 0.011)) < 0.02, "mean radius %g", s);
    free(X);
}
END_TEST

int main(void)
{
    tu_program_setup();
    Suite *s = suite_create("toy");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_names);
    tcase_add_test(tc, test_unknown_name);
    tcase_add_loop_test(tc, test_shape_finite_seeded, 0, 8);
    tcase_add_test(tc, test_8gaussians);
    tcase_add_test(tc, test_moons);
    tcase_add_test(tc, test_circles);
    tcase_add_test(tc, test_rings);
    tcase_add_test(tc, test_checkerboard);
    tcase_add_test(tc, test_pinwheel);
    tcase_add_test(tc, test_2spirals);
    tcase_add_test(tc, test_swissroll);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
