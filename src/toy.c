/* toy.c — the 2-D toy densities of FFJORD (Grathwohl, Chen, Bettencourt,
 * Sutskever, Duvenaud, ICLR 2019; lib/toy_data.py of rtqichen/ffjord, which
 * uses scikit-learn's make_swiss_roll, make_circles and make_moons for three
 * of them). Same shapes, scales and noise levels, but every random number
 * comes from the caller's gsl_rng (Gaussians by gsl_ran_gaussian, uniforms by
 * gsl_rng_uniform), so that a seed fixes the data set. Sets that FFJORD
 * builds class by class (pinwheel, rings, circles, moons, 2spirals) are
 * shuffled with gsl_ran_shuffle, so any contiguous slice (train/val/test) is
 * a fair sample. datasets/README.md documents each set. */
#include "cnf/toy.h"

#include <math.h>
#include <string.h>

#include <gsl/gsl_randist.h>

/* math.h need not define M_PI in strict C11. */
#define TOY_PI 3.14159265358979323846

typedef void (*toy_fn)(size_t n, gsl_rng *rng, double *X);

/* Rows of X (n x 2) in random order. */
static void shuffle_rows(gsl_rng *rng, size_t n, double *X)
{
    if (n > 1)
        gsl_ran_shuffle(rng, X, n, 2 * sizeof *X);
}

/* Mixture of 8 Gaussians, std 0.5, centres 4 * (unit vectors at multiples of
 * 45 degrees), everything divided by 1.414. Per point: the two Gaussian
 * coordinates, then the centre (FFJORD's order). */
static void gen_8gaussians(size_t n, gsl_rng *rng, double *X)
{
    const double r = 1.0 / sqrt(2.0);
    const double centres[8][2] = {
        {1, 0}, {-1, 0}, {0, 1}, {0, -1}, {r, r}, {r, -r}, {-r, r}, {-r, -r}
    };
    for (size_t i = 0; i < n; i++) {
        double a = 0.5 * gsl_ran_gaussian(rng, 1.0);
        double b = 0.5 * gsl_ran_gaussian(rng, 1.0);
        unsigned long c = gsl_rng_uniform_int(rng, 8);
        X[2 * i] = (a + 4.0 * centres[c][0]) / 1.414;
        X[2 * i + 1] = (b + 4.0 * centres[c][1]) / 1.414;
    }
}

/* Five arms: radial feature f0 ~ 1 + 0.3 N, tangential f1 ~ 0.1 N, rotated
 * by 2 pi c / 5 + 0.25 exp(f0), times 2. FFJORD makes n // 5 points per arm;
 * to give exactly n, the first n % 5 arms get one more. */
static void gen_pinwheel(size_t n, gsl_rng *rng, double *X)
{
    size_t per = n / 5, extra = n % 5, i = 0;
    for (size_t c = 0; c < 5; c++) {
        size_t m = per + (c < extra ? 1 : 0);
        for (size_t j = 0; j < m; j++, i++) {
            double f0 = 1.0 + 0.3 * gsl_ran_gaussian(rng, 1.0);
            double f1 = 0.1 * gsl_ran_gaussian(rng, 1.0);
            double ang = 2.0 * TOY_PI * (double)c / 5.0 + 0.25 * exp(f0);
            double co = cos(ang), si = sin(ang);
            /* row vector f times [[cos, -sin], [sin, cos]] */
            X[2 * i] = 2.0 * (f0 * co + f1 * si);
            X[2 * i + 1] = 2.0 * (-f0 * si + f1 * co);
        }
    }
    shuffle_rows(rng, n, X);
}

/* x1 uniform on [-2, 2); x2 uniform on [0, 1) minus 0 or 2, plus
 * floor(x1) mod 2; both times 2: eight squares of side 2 on [-4, 4]^2. */
static void gen_checkerboard(size_t n, gsl_rng *rng, double *X)
{
    for (size_t i = 0; i < n; i++) {
        double x1 = 4.0 * gsl_rng_uniform(rng) - 2.0;
        double x2 = gsl_rng_uniform(rng) - 2.0 * (double)gsl_rng_uniform_int(rng, 2);
        double fl = floor(x1);
        x2 += fl - 2.0 * floor(fl / 2.0);   /* Python's floor(x1) % 2, in {0, 1} */
        X[2 * i] = 2.0 * x1;
        X[2 * i + 1] = 2.0 * x2;
    }
}

/* Two arms: s = sqrt(U) * 3 pi, (-cos(s) s + 0.5 U', sin(s) s + 0.5 U'') and
 * its negative, divided by 3, plus 0.1 N. FFJORD makes n // 2 per arm and
 * does not shuffle; here the first ceil(n / 2) rows form one arm, the rest
 * the other, then all are shuffled. */
static void gen_2spirals(size_t n, gsl_rng *rng, double *X)
{
    size_t half = (n + 1) / 2;
    for (size_t i = 0; i < n; i++) {
        double s = sqrt(gsl_rng_uniform(rng)) * 540.0 * (2.0 * TOY_PI) / 360.0;
        double x = -cos(s) * s + 0.5 * gsl_rng_uniform(rng);
        double y = sin(s) * s + 0.5 * gsl_rng_uniform(rng);
        double sign = i < half ? 1.0 : -1.0;
        X[2 * i] = sign * x / 3.0 + 0.1 * gsl_ran_gaussian(rng, 1.0);
        X[2 * i + 1] = sign * y / 3.0 + 0.1 * gsl_ran_gaussian(rng, 1.0);
    }
    shuffle_rows(rng, n, X);
}

/* scikit-learn's make_moons(noise = 0.1): n // 2 points on the upper half
 * circle (cos a, sin a), a on linspace(0, pi) with end points, the rest on
 * (1 - cos a, 0.5 - sin a); shuffled; plus 0.1 N; then 2 x + (-1, -0.2). */
static void gen_moons(size_t n, gsl_rng *rng, double *X)
{
    size_t n_out = n / 2, n_in = n - n_out;
    for (size_t i = 0; i < n_out; i++) {
        double a = n_out > 1 ? TOY_PI * (double)i / (double)(n_out - 1) : 0.0;
        X[2 * i] = cos(a);
        X[2 * i + 1] = sin(a);
    }
    for (size_t i = 0; i < n_in; i++) {
        double a = n_in > 1 ? TOY_PI * (double)i / (double)(n_in - 1) : 0.0;
        X[2 * (n_out + i)] = 1.0 - cos(a);
        X[2 * (n_out + i) + 1] = 0.5 - sin(a);
    }
    shuffle_rows(rng, n, X);
    for (size_t i = 0; i < n; i++) {
        double a = X[2 * i] + 0.1 * gsl_ran_gaussian(rng, 1.0);
        double b = X[2 * i + 1] + 0.1 * gsl_ran_gaussian(rng, 1.0);
        X[2 * i] = 2.0 * a - 1.0;
        X[2 * i + 1] = 2.0 * b - 0.2;
    }
}

/* m points evenly on the circle of the given radius, angles
 * linspace(0, 2 pi, m, endpoint = False), from row i0. */
static void circle_points(double *X, size_t i0, size_t m, double radius)
{
    for (size_t j = 0; j < m; j++) {
        double a = 2.0 * TOY_PI * (double)j / (double)m;
        X[2 * (i0 + j)] = radius * cos(a);
        X[2 * (i0 + j) + 1] = radius * sin(a);
    }
}

/* scikit-learn's make_circles(factor = 0.5, noise = 0.08) times 3: n // 2
 * points evenly on the circle of radius 3, the rest on radius 1.5; shuffled;
 * noise 0.08 N added before the scaling (so 0.24 N after). */
static void gen_circles(size_t n, gsl_rng *rng, double *X)
{
    size_t n_out = n / 2, n_in = n - n_out;
    circle_points(X, 0, n_out, 1.0);
    circle_points(X, n_out, n_in, 0.5);
    shuffle_rows(rng, n, X);
    for (size_t i = 0; i < 2 * n; i++)
        X[i] = 3.0 * (X[i] + 0.08 * gsl_ran_gaussian(rng, 1.0));
}

/* Four concentric circles of radii 3, 2.25, 1.5, 0.75 with n // 4 evenly
 * spaced points on each of the outer three and the rest on the inner one;
 * shuffled; plus 0.08 N (after the scaling, as FFJORD). */
static void gen_rings(size_t n, gsl_rng *rng, double *X)
{
    size_t q = n / 4, n1 = n - 3 * q;
    circle_points(X, 0, q, 3.0);
    circle_points(X, q, q, 2.25);
    circle_points(X, 2 * q, q, 1.5);
    circle_points(X, 3 * q, n1, 0.75);
    shuffle_rows(rng, n, X);
    for (size_t i = 0; i < 2 * n; i++)
        X[i] += 0.08 * gsl_ran_gaussian(rng, 1.0);
}

/* scikit-learn's make_swiss_roll(noise = 1.0), columns x and z, divided by
 * 5: t = 1.5 pi (1 + 2 U), (t cos t + N, t sin t + N) / 5. (The roll's
 * height, uniform on [0, 21), and its noise are dropped with the column.) */
static void gen_swissroll(size_t n, gsl_rng *rng, double *X)
{
    for (size_t i = 0; i < n; i++) {
        double t = 1.5 * TOY_PI * (1.0 + 2.0 * gsl_rng_uniform(rng));
        double x = t * cos(t) + gsl_ran_gaussian(rng, 1.0);
        double z = t * sin(t) + gsl_ran_gaussian(rng, 1.0);
        X[2 * i] = x / 5.0;
        X[2 * i + 1] = z / 5.0;
    }
}

static const struct {
    const char *name;
    toy_fn fn;
    const char *description;
} toys[] = {
    {"8gaussians", gen_8gaussians,
     "8 Gaussians (std 0.5) on the circle of radius 4, all divided by 1.414; entropy 2.832 nats"},
    {"pinwheel", gen_pinwheel, "5 curved arms of a pinwheel (radial std 0.3, tangential 0.1), times 2"},
    {"checkerboard", gen_checkerboard, "uniform on the 8 dark squares (side 2) of a 4 x 4 board on [-4, 4]^2"},
    {"2spirals", gen_2spirals, "two interleaved spirals of 1.5 turns, noise std 0.1"},
    {"moons", gen_moons, "two interleaving half circles (noise std 0.1), times 2, shifted by (-1, -0.2)"},
    {"circles", gen_circles, "two concentric circles of radii 3 and 1.5, noise std 0.24"},
    {"rings", gen_rings, "four concentric circles of radii 3, 2.25, 1.5, 0.75, noise std 0.08"},
    {"swissroll", gen_swissroll, "a 2-D swiss roll (noise std 1), divided by 5"},
};

#define N_TOYS (sizeof toys / sizeof toys[0])

size_t cnf_toy_count(void)
{
    return N_TOYS;
}

const char *cnf_toy_name(size_t i)
{
    return i < N_TOYS ? toys[i].name : NULL;
}

const char *cnf_toy_names(void)
{
    return "8gaussians, pinwheel, checkerboard, 2spirals, moons, circles, rings, swissroll";
}

static int toy_index(const char *name)
{
    if (!name)
        return -1;
    for (size_t i = 0; i < N_TOYS; i++)
        if (strcmp(name, toys[i].name) == 0)
            return (int)i;
    return -1;
}

int cnf_toy_exists(const char *name)
{
    return toy_index(name) >= 0;
}

const char *cnf_toy_description(const char *name)
{
    int i = toy_index(name);
    return i >= 0 ? toys[i].description : NULL;
}

cnf_status cnf_toy_generate(const char *name, size_t n, gsl_rng *rng, double *X)
{
    int i = toy_index(name);
    if (i < 0)
        return cnf_error(CNF_EINVAL, "unknown toy data set '%s' (known: %s)",
                         name ? name : "(null)", cnf_toy_names());
    if (!rng || (n > 0 && !X))
        return cnf_error(CNF_EINVAL, "toy data set '%s': rng and X must not be NULL", name);
    toys[i].fn(n, rng, X);
    return CNF_OK;
}
