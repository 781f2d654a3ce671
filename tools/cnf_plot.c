/* cnf_plot.c — `cnf plot`: a heat map of a 2-D model's density p(x) on a
 * grid of pixels (as FFJORD's toy figures), optionally with data or sample
 * points overlaid, written as a PNG. Colours follow matplotlib's viridis
 * (sampled at nine points, linearly interpolated). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cnf/data.h"
#include "commands.h"
#include "model_cli.h"
#include "pngout.h"

static void viridis(double v, unsigned char *rgb)
{
    static const double c[9][3] = {{68, 1, 84},    {71, 44, 122},  {59, 81, 139},
                                   {44, 113, 142}, {33, 144, 141}, {39, 173, 129},
                                   {92, 200, 99},  {170, 220, 50}, {253, 231, 37}};
    v = v < 0 ? 0 : v > 1 ? 1 : v;
    double x = v * 8.0;
    int i = (int)x;
    if (i > 7)
        i = 7;
    double f = x - i;
    for (int k = 0; k < 3; k++)
        rgb[k] = (unsigned char)(c[i][k] + f * (c[i + 1][k] - c[i][k]) + 0.5);
}

static void parse_range(const char *spec, const char *opt, double r[2])
{
    char *end;
    errno = 0;
    r[0] = strtod(spec, &end);
    if (end == spec || *end != ',')
        cli_usage("--%s %s: expected LO,HI", opt, spec);
    const char *p = end + 1;
    r[1] = strtod(p, &end);
    if (end == p || *end || errno || !isfinite(r[0]) || !isfinite(r[1]) || !(r[1] > r[0]))
        cli_usage("--%s %s: expected LO,HI with LO < HI", opt, spec);
}

int cnf_cmd_plot(int argc, char **argv)
{
    const char *model = NULL, *out = NULL, *data = NULL, *xlim = NULL, *ylim = NULL;
    size_t size = 200, max_points = 2000;
    int logd = 0;
    cli_solve_args sa;
    cli_solve_args_default(&sa);
    cli_option opts[] = {
        {"model", CLI_STRING, &model, "M.h5", "a 2-D model file", CLI_REQUIRED, 0},
        {"out", CLI_STRING, &out, "density.png", "output PNG", CLI_REQUIRED, 0},
        {"data", CLI_STRING, &data, "F.h5:/x|F.csv", "points to overlay (path default /test), or a CSV file", NULL, 0},
        {"size", CLI_COUNT, &size, "PX", "image width and height in pixels (one density "
         "evaluation per pixel)", NULL, 0},
        {"xlim", CLI_STRING, &xlim, "LO,HI", "x range", "the points' range + 10%, else mean +- 4 scale", 0},
        {"ylim", CLI_STRING, &ylim, "LO,HI", "y range", "as for x", 0},
        {"log", CLI_FLAG, &logd, NULL, "colour by log-density instead of density", NULL, 0},
        {"max-points", CLI_SIZE, &max_points, "N", "overlay at most the first N points", NULL, 0},
        CLI_SOLVE_OPTIONS(sa),
        CLI_DIVERGENCE_OPTION(sa),
        {NULL, 0, NULL, NULL, NULL, NULL, 0}};
    const char *pos[1];
    size_t n_pos;
    cli_parse(argc, argv, opts, "plot --model M.h5 --out density.png [--data F.h5:/x]",
              "Heat map of a 2-D model's density on a grid (viridis colours), optionally\n"
              "with points overlaid in white, written atomically as a PNG.",
              pos, 0, &n_pos);
    if (size < 2 || size > 4096)
        cli_usage("--size %zu: expected 2..4096", size);
    double xr[2], yr[2];
    if (xlim)
        parse_range(xlim, "xlim", xr);
    if (ylim)
        parse_range(ylim, "ylim", yr);
    cnf_data_address data_addr;
    const char *inputs[] = {model, cli_address_file(data, &data_addr)};
    cli_check_output(out, inputs, 2);

    cli_model m;
    cli_model_open(&m, model, &sa, opts, 1);
    const cnf_flow *flow = m.flow;
    if (m.D != 2)
        cli_die("%s has dimension %zu; plot draws 2-D models only", model, m.D);
    size_t Np = 0;
    double *P = data ? cli_read_data(data, "/test", 2, &Np, NULL) : NULL;   /* Np x 2 */
    if (Np > max_points)
        Np = max_points;
    for (int a = 0; a < 2; a++) {
        double *r = a ? yr : xr;
        if (a ? ylim : xlim)
            continue;
        if (Np) {
            double lo = INFINITY, hi = -INFINITY;
            for (size_t i = 0; i < Np; i++) {
                lo = fmin(lo, P[2 * i + a]);
                hi = fmax(hi, P[2 * i + a]);
            }
            double pad = 0.1 * (hi - lo) + 1e-9;
            r[0] = lo - pad;
            r[1] = hi + pad;
        } else {
            double mu = cnf_flow_mean_const(flow)[a], s = cnf_flow_scale_const(flow)[a];
            r[0] = mu - 4 * s;
            r[1] = mu + 4 * s;
        }
    }

    /* Pixel centres: column c at x = xr0 + (c + 0.5) dx; row 0 at the top. */
    const size_t G = size * size;
    double *X = cli_malloc(G * 2 * sizeof *X), *ll = cli_malloc(G * sizeof *ll);   /* G x 2, G */
    for (size_t r = 0; r < size; r++)
        for (size_t c = 0; c < size; c++) {
            X[2 * (r * size + c)] = xr[0] + ((double)c + 0.5) * (xr[1] - xr[0]) / (double)size;
            X[2 * (r * size + c) + 1] = yr[1] - ((double)r + 0.5) * (yr[1] - yr[0]) / (double)size;
        }
    cli_model_prepare(&m, &sa, G, 1);
    double t0 = cli_now();
    cli_check(cnf_flow_log_likelihood(flow, m.w, X, G, m.rng, ll, NULL), "density grid");
    double lmax = -INFINITY, lmin = INFINITY;
    for (size_t i = 0; i < G; i++) {
        lmax = fmax(lmax, ll[i]);
        lmin = fmin(lmin, ll[i]);
    }
    unsigned char *img = cli_malloc(G * 3);   /* size x size x 3 */
    for (size_t i = 0; i < G; i++) {
        double v = logd ? (ll[i] - fmax(lmin, lmax - 20.0)) / fmin(lmax - lmin, 20.0)
                        : exp(ll[i] - lmax);
        viridis(v, img + 3 * i);
    }
    for (size_t i = 0; i < Np; i++) {
        double cx = (P[2 * i] - xr[0]) / (xr[1] - xr[0]) * (double)size;
        double cy = (yr[1] - P[2 * i + 1]) / (yr[1] - yr[0]) * (double)size;
        long px = (long)floor(cx), py = (long)floor(cy);
        for (long dy = 0; dy < 2; dy++)
            for (long dx = 0; dx < 2; dx++) {
                long x = px + dx, y = py + dy;
                if (x >= 0 && y >= 0 && x < (long)size && y < (long)size)
                    memset(img + 3 * ((size_t)y * size + (size_t)x), 255, 3);
            }
    }
    char err[4400];
    if (cli_png_write(out, img, size, size, err, sizeof err))
        cli_die("%s", err);
    cli_info("wrote %s: %zu x %zu pixels, x in [%g, %g], y in [%g, %g], max log-density %.4f, "
             "%zu points overlaid (%.2f s)\n",
             out, size, size, xr[0], xr[1], yr[0], yr[1], lmax, Np, cli_now() - t0);
    free(img);
    free(X);
    free(ll);
    free(P);
    cli_model_close(&m);
    return 0;
}
