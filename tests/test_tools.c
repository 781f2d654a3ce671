/* test_tools.c — the command's own modules that can be checked without
 * running it: the progress line's time estimate and width fitting
 * (tools/progress.c), the figure module's ticks, labels and coordinates,
 * the raster's font and heat map (tools/figure.c, raster.c), and keys of
 * the run configuration (tools/config.c). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnf/adjoint.h"
#include "config.h"
#include "figure.h"
#include "progress.h"
#include "raster.h"
#include "testutil.h"

/* Iteration i costs 0.01 i seconds: the time left at iteration 100 of 200
 * is 150.5 s, the mean rate since the start promises 50.5 s; the estimate
 * is the rate of the last 64 iterations'. */
START_TEST(test_eta_from_recent_rate)
{
    progress_rate r;
    progress_rate_init(&r);
    ck_assert(isnan(progress_rate_eta(&r, 10)));
    double t = 0, at[201];
    for (size_t i = 1; i <= 100; i++) {
        t += 0.01 * (double)i;
        at[i] = t;
        progress_rate_add(&r, i, t);
        if (i == 1)
            ck_assert(isnan(progress_rate_eta(&r, 10)));
    }
    double eta = progress_rate_eta(&r, 100);
    double window = (at[100] - at[37]) / 63.0 * 100.0;
    ck_assert_double_eq_tol(eta, window, 1e-9);
    ck_assert(eta > 1.3 * at[100]);   /* the mean rate's estimate is at[100] */
    ck_assert(eta < 150.5);
}
END_TEST

START_TEST(test_progress_fits_width)
{
    const char *f[] = {"iter 1200/3000", "loss 2.9012", "nfe 41/25",
                       "val 2.9312 (best 2.9240 @1100)", "elapsed 1:02", "eta 1:40"};
    const int rank[] = {0, 0, 2, 1, 3, 0};
    char buf[256];
    size_t n = progress_fit(f, rank, 6, 200, buf, sizeof buf);
    ck_assert_str_eq(buf, "iter 1200/3000  loss 2.9012  nfe 41/25  val 2.9312 (best 2.9240 "
                          "@1100)  elapsed 1:02  eta 1:40");
    ck_assert_uint_eq(n, strlen(buf));
    ck_assert(n >= 80);
    n = progress_fit(f, rank, 6, 81, buf, sizeof buf);   /* 80 characters */
    ck_assert_str_eq(buf, "iter 1200/3000  loss 2.9012  nfe 41/25  val 2.9312 (best 2.9240 "
                          "@1100)  eta 1:40");
    n = progress_fit(f, rank, 6, 80, buf, sizeof buf);
    ck_assert_str_eq(buf, "iter 1200/3000  loss 2.9012  val 2.9312 (best 2.9240 @1100)  eta 1:40");
    n = progress_fit(f, rank, 6, 40, buf, sizeof buf);
    ck_assert_str_eq(buf, "iter 1200/3000  loss 2.9012  eta 1:40");
    n = progress_fit(f, rank, 6, 20, buf, sizeof buf);
    ck_assert_uint_eq(n, 19);   /* cut: the cursor must not reach the last column */
    ck_assert_uint_eq(strlen(buf), 19);
}
END_TEST

START_TEST(test_ticks)
{
    double t[16], step;
    int n = figure_ticks(-4.4, 4.5, 5, t, &step);
    ck_assert_int_eq(n, 5);
    ck_assert_double_eq_tol(step, 2.0, 1e-12);
    for (int i = 0; i < 5; i++)
        ck_assert_double_eq_tol(t[i], -4.0 + 2.0 * i, 1e-12);
    n = figure_ticks(0.0, 1.0, 6, t, &step);
    ck_assert_int_eq(n, 6);
    ck_assert_double_eq_tol(step, 0.2, 1e-12);
    ck_assert(t[0] == 0.0);
    n = figure_ticks(-12.3, -2.1, 4, t, &step);
    ck_assert(n >= 2 && n <= 4);
    ck_assert(t[0] >= -12.3 && t[n - 1] <= -2.1);
    ck_assert_int_eq(figure_ticks(1.0, 1.0, 5, t, &step), 0);
    char buf[32];
    figure_format_tick(1e-5, 1e-5, buf, sizeof buf);
    ck_assert_str_eq(buf, "1e-5");
    figure_format_tick(2.5, 0.5, buf, sizeof buf);
    ck_assert_str_eq(buf, "2.5");
    figure_format_tick(-2, 2, buf, sizeof buf);
    ck_assert_str_eq(buf, "-2");
    figure_format_tick(15000, 5000, buf, sizeof buf);
    ck_assert_str_eq(buf, "15k");
    figure_format_tick(0.04, 0.02, buf, sizeof buf);
    ck_assert_str_eq(buf, "0.04");
}
END_TEST

/* Every printable character has a glyph of its own (an unknown one draws a
 * box), and no two glyphs are the same. */
START_TEST(test_font_covers_ascii)
{
    char seen[95][RASTER_GLYPH_W * RASTER_GLYPH_H];
    for (int c = 32; c < 127; c++) {
        int same_as_box = 1;
        for (int y = 0; y < RASTER_GLYPH_H; y++)
            for (int x = 0; x < RASTER_GLYPH_W; x++) {
                int ink = raster_glyph_ink((char)c, x, y);
                seen[c - 32][y * RASTER_GLYPH_W + x] = (char)ink;
                same_as_box &= ink == raster_glyph_ink((char)127, x, y);
            }
        ck_assert_msg(!same_as_box, "no glyph for '%c'", c);
        for (int d = 32; d < c; d++)
            ck_assert_msg(memcmp(seen[c - 32], seen[d - 32], sizeof seen[0]) || c == ' ',
                          "'%c' and '%c' look the same", c, d);
    }
    ck_assert_int_eq(raster_text_width("-0.5", 2), (4 * 6 - 1) * 2);
}
END_TEST

/* A heat map of a Gaussian's log-density centred at (1, -0.5): its
 * brightest pixel is the one figure_px/py give for the centre. */
START_TEST(test_heatmap_mode)
{
    raster *r = raster_new(200, 160, (raster_rgb){255, 255, 255});
    figure_panel p = {r, 30, 20, 120, 120, {-2, 2}, {-2, 2}, 1, 0, 0};
    ck_assert_double_eq_tol(figure_px(&p, -2), 30, 1e-12);
    ck_assert_double_eq_tol(figure_px(&p, 2), 150, 1e-12);
    ck_assert_double_eq_tol(figure_py(&p, 2), 20, 1e-12);
    ck_assert_double_eq_tol(figure_py(&p, -2), 140, 1e-12);
    enum { G = 40 };
    double grid[G * G], lmax = -INFINITY;
    for (int i = 0; i < G; i++)
        for (int c = 0; c < G; c++) {
            double x = -2 + (c + 0.5) * 4.0 / G, y = 2 - (i + 0.5) * 4.0 / G;
            grid[i * G + c] = -0.5 * ((x - 1) * (x - 1) + (y + 0.5) * (y + 0.5)) / 0.09;
            lmax = fmax(lmax, grid[i * G + c]);
        }
    figure_heatmap(&p, grid, G, lmax - 10, lmax);
    figure_axes(&p, "x", "y", "title");
    int bx = -1, by = -1, best = -1;
    for (int y = p.y; y < p.y + p.h; y++)
        for (int x = p.x; x < p.x + p.w; x++) {
            const unsigned char *q = r->px + 3 * (y * r->w + x);
            if (q[0] + q[1] > best) {   /* viridis's top is yellow */
                best = q[0] + q[1];
                bx = x;
                by = y;
            }
        }
    ck_assert(fabs(bx + 0.5 - figure_px(&p, 1)) <= 2.0);
    ck_assert(fabs(by + 0.5 - figure_py(&p, -0.5)) <= 2.0);
    /* The tick labels below the box and left of it are drawn. */
    int ink_below = 0, ink_left = 0;
    for (int y = p.y + p.h + 2; y < r->h; y++)
        for (int x = 0; x < r->w; x++)
            ink_below += r->px[3 * (y * r->w + x)] < 128;
    for (int y = p.y; y < p.y + p.h; y++)
        for (int x = 0; x < p.x - 2; x++)
            ink_left += r->px[3 * (y * r->w + x)] < 128;
    ck_assert(ink_below > 20);
    ck_assert(ink_left > 20);
    raster_free(r);
}
END_TEST

/* The adjoint's enumerated keys: each starts at the library's default,
 * answers to its option (--adjoint-norm, with the underscore as a dash),
 * sets its field of the training options, and refuses an unknown name with
 * the key and the valid names. */
START_TEST(test_config_adjoint_keys)
{
    static const struct {
        const char *key, *option, *good, *bad, *valid;
    } keys[] = {
        {"adjoint_norm", "adjoint-norm", "rms", "max", "rms, groups"},
        {"checkpoints", "checkpoints", "hermite", "cubic", "hermite, dense"},
        {"gradient_tol", "gradient-tol", "entrywise", "absolute", "entrywise, relative"},
    };
    cnf_train_options lib, opt;
    cnf_train_options_default(&lib);
    run_config cfg;
    run_config_default(&cfg);
    cnf_net_config net;
    double T;
    run_config_resolve(&cfg, 2, &net, &T, &opt);
    ck_assert_int_eq(opt.flow.adjoint.norm, lib.flow.adjoint.norm);
    ck_assert_int_eq(opt.flow.adjoint.checkpoints, lib.flow.adjoint.checkpoints);
    ck_assert_int_eq(opt.flow.adjoint.gradient_tol, lib.flow.adjoint.gradient_tol);

    cli_option *opts = calloc(config_num_keys, sizeof *opts);
    char (*names)[32] = calloc(config_num_keys, sizeof *names);
    ck_assert(opts && names);
    run_config_options(&cfg, opts, names);
    char err[600];
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        size_t j = 0;
        while (j < config_num_keys && strcmp(config_keys[j].key, keys[i].key))
            j++;
        ck_assert_msg(j < config_num_keys, "no key %s", keys[i].key);
        ck_assert_str_eq(opts[j].name, keys[i].option);
        ck_assert_int_eq(run_config_set(&cfg, keys[i].key, keys[i].bad, err, sizeof err), -1);
        ck_assert_msg(strstr(err, keys[i].key) && strstr(err, keys[i].bad)
                      && strstr(err, keys[i].valid), "%s: %s", keys[i].key, err);
        ck_assert_int_eq(run_config_set(&cfg, keys[i].key, keys[i].good, err, sizeof err), 0);
    }
    run_config_resolve(&cfg, 2, &net, &T, &opt);
    ck_assert_int_eq(opt.flow.adjoint.norm, CNF_ADJOINT_NORM_RMS);
    ck_assert_int_eq(opt.flow.adjoint.checkpoints, CNF_ODE_INTERP_HERMITE);
    ck_assert_int_eq(opt.flow.adjoint.gradient_tol, CNF_ADJOINT_GTOL_ENTRYWISE);
    run_config_clear(&cfg);
    free(opts);
    free(names);
}
END_TEST

int main(void)
{
    tu_program_setup();
    Suite *s = suite_create("tools");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_eta_from_recent_rate);
    tcase_add_test(tc, test_progress_fits_width);
    tcase_add_test(tc, test_ticks);
    tcase_add_test(tc, test_font_covers_ascii);
    tcase_add_test(tc, test_heatmap_mode);
    tcase_add_test(tc, test_config_adjoint_keys);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
