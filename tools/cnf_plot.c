/* cnf_plot.c — `cnf plot`: pictures of a model, as FFJORD's figures show
 * them, in one PNG with axes in data units (figure.h):
 *
 *   D = 2: the log-density on a grid (viridis, with a colour bar) with the
 *          data overlaid; with --samples N the data and N model samples in
 *          panels of their own beside it; with --trajectories N the paths of
 *          N data points through the flow to the base distribution.
 *   D > 2: a grid of the 2-D marginals of --dims: data below the diagonal,
 *          model samples above it, both 1-D histograms on it, and with
 *          --trajectories the paths in the first two columns of --dims beside
 *          it. No density is
 *          drawn: a 2-D marginal of the density would need an integral over
 *          the other D - 2 dimensions, and a slice through the mean shows a
 *          function that no picture of the data matches.
 *
 * The title names the model, the data and their mean NLL. Points are
 * subsampled (seeded) to --max-points, small and translucent, so that they
 * do not hide the density. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gsl/gsl_rng.h>

#include "cli.h"
#include "cnf/size.h"
#include "cnf/data.h"
#include "commands.h"
#include "figure.h"
#include "model_cli.h"

static const raster_rgb white = {255, 255, 255}, ink = {40, 40, 40};
static const raster_rgb data_rgb = {31, 90, 170}, sample_rgb = {214, 80, 30};

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

/* "0,2,3" -> dims (at most max), each < D and none twice. */
static size_t parse_dims(const char *spec, size_t D, size_t *dims, size_t max)
{
    size_t n = 0;
    const char *p = spec;
    while (1) {
        char *end;
        errno = 0;
        unsigned long v = strtoul(p, &end, 10);
        if (end == p || *p == '-' || *p == '+' || errno)
            cli_usage("--dims %s: expected column numbers like 0,1,3", spec);
        if (v >= D)
            cli_usage("--dims %s: column %lu is out of range (the model has D = %zu: 0..%zu)",
                      spec, v, D, D - 1);
        for (size_t i = 0; i < n; i++)
            if (dims[i] == v)
                cli_usage("--dims %s: column %lu is given twice", spec, v);
        if (n == max)
            cli_usage("--dims %s: at most %zu columns", spec, max);
        dims[n++] = v;
        if (!*end)
            break;
        if (*end != ',')
            cli_usage("--dims %s: expected column numbers separated by commas", spec);
        p = end + 1;
    }
    if (n < 2)
        cli_usage("--dims %s: name at least two columns", spec);
    return n;
}

/* At most k of the N rows of X (N x D), chosen by a seeded partial shuffle
 * (the first k rows of a file are often not a fair sample of it). */
static double *subsample(const double *X, size_t N, size_t D, size_t k, gsl_rng *rng,
                         size_t *out_n)
{
    size_t n = N < k ? N : k;
    size_t *idx = cli_malloc_array(N, 1, sizeof *idx, "the points");
    for (size_t i = 0; i < N; i++)
        idx[i] = i;
    if (n < N)
        for (size_t i = 0; i < n; i++) {
            size_t j = i + (size_t)gsl_rng_uniform_int(rng, N - i);
            size_t t = idx[i];
            idx[i] = idx[j];
            idx[j] = t;
        }
    double *Y = cli_malloc_array(n, D, sizeof *Y, "the points");
    for (size_t i = 0; i < n; i++)
        memcpy(Y + i * D, X + idx[i] * D, D * sizeof *Y);
    free(idx);
    *out_n = n;
    return Y;
}

/* The range of column a over the rows of both sets, padded by 10%. */
static void column_range(const double *A, size_t na, const double *B, size_t nb, size_t D,
                         size_t a, double r[2])
{
    double lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < na; i++) {
        lo = fmin(lo, A[i * D + a]);
        hi = fmax(hi, A[i * D + a]);
    }
    for (size_t i = 0; i < nb; i++) {
        lo = fmin(lo, B[i * D + a]);
        hi = fmax(hi, B[i * D + a]);
    }
    double pad = 0.1 * (hi - lo) + 1e-9;
    r[0] = lo - pad;
    r[1] = hi + pad;
}

/* A flow of blocks 0..k of `flow`, block k's end time scaled by s (0, 1]:
 * encoding with it gives the state at that time of the whole flow. */
static cnf_flow *truncated_flow(const cnf_flow *flow, size_t k, double s)
{
    size_t D = cnf_flow_dim(flow);
    cnf_net_config nets[64];
    double T[64];
    const double *p = cnf_flow_params_const(flow);
    for (size_t j = 0; j <= k; j++) {
        nets[j] = *cnf_net_get_config(cnf_flow_block_net(flow, j));
        T[j] = p[cnf_flow_T_index(flow, j)] * (j == k ? s : 1.0);
    }
    cnf_flow *f = cnf_flow_alloc(D, k + 1, nets, T);
    if (!f)
        cli_die("%s", cnf_last_error());
    double *q = cnf_flow_params(f);
    for (size_t j = 0; j <= k; j++) {
        memcpy(q + cnf_flow_block_offset(f, j), p + cnf_flow_block_offset(flow, j),
               cnf_net_num_params(cnf_flow_block_net(flow, j)) * sizeof *q);
        q[cnf_flow_T_index(f, j)] = T[j];
    }
    memcpy(cnf_flow_mean(f), cnf_flow_mean_const(flow), D * sizeof *q);
    memcpy(cnf_flow_scale(f), cnf_flow_scale_const(flow), D * sizeof *q);
    cli_check(cnf_flow_set_whitening(f, cnf_flow_whitening_const(flow)), "trajectories");
    return f;
}

/* Paths of the N rows of X (N x D) through the flow: F frames per block
 * after the start, in data units (each state mapped back through the
 * preprocessing, so that the base N(0, I) appears as the Gaussian the
 * preprocessing stands for). Returns (1 + K F) x N x D. */
static double *trajectories(const cnf_flow *flow, const cnf_flow_options *fo, const double *X,
                            size_t N, size_t F, size_t *n_frames)
{
    size_t D = cnf_flow_dim(flow), K = cnf_flow_num_blocks(flow);
    size_t nf = 1 + K * F;
    size_t nfN;
    if (cnf_size_mul(nf, N, &nfN))
        cli_die("--trajectories: %zu frames of %zu points do not fit in memory", nf, N);
    double *path = cli_malloc_array(nfN, D, sizeof *path, "the trajectories");
    double *Z = cli_malloc_array(N, D, sizeof *Z, "the trajectories");
    memcpy(path, X, N * D * sizeof *path);
    for (size_t k = 0; k < K; k++)
        for (size_t f = 1; f <= F; f++) {
            cnf_flow *g = truncated_flow(flow, k, (double)f / (double)F);
            cnf_flow_work *w = cli_flow_work(g, N, fo);
            cli_check(cnf_flow_encode(g, w, X, N, Z, NULL), "trajectories");
            cnf_flow_unpreprocess_rows(g, Z, N, path + (1 + k * F + f - 1) * N * D);
            cnf_flow_work_free(w);
            cnf_flow_free(g);
        }
    free(Z);
    *n_frames = nf;
    return path;
}

static figure_panel square_panel(raster *r, int x, int y, size_t size, const double xr[2],
                                 const double yr[2], int scale)
{
    figure_panel p = {r, x, y, (int)size, (int)size, {xr[0], xr[1]}, {yr[0], yr[1]}, scale, 0,
                      0};
    return p;
}

static int font_scale(size_t size) { return size >= 200 ? 2 : 1; }

/* 1-D histogram of column a of X (N x D) over p's x range as a step line,
 * heights scaled so that the tallest bin of `peak` reaches the top. */
static void histogram(const figure_panel *p, const double *X, size_t N, size_t D, size_t a,
                      size_t bins, double peak, raster_rgb c)
{
    double *h = cli_calloc_doubles(bins), *xs = cli_malloc_array(bins, 2, sizeof *xs, "the histogram");
    double *ys = cli_malloc_array(bins, 2, sizeof *ys, "the histogram");
    double width = (p->xr[1] - p->xr[0]) / (double)bins;
    for (size_t i = 0; i < N; i++) {
        double b = floor((X[i * D + a] - p->xr[0]) / width);
        if (b >= 0 && b < (double)bins)
            h[(size_t)b] += 1.0 / ((double)N * width);
    }
    for (size_t b = 0; b < bins; b++) {
        xs[2 * b] = p->xr[0] + (double)b * width;
        xs[2 * b + 1] = xs[2 * b] + width;
        ys[2 * b] = ys[2 * b + 1] = p->yr[0] + h[b] / peak * (p->yr[1] - p->yr[0]) * 0.95;
    }
    figure_polyline(p, xs, ys, 2 * bins, c, 1 + (p->scale > 1));
    free(h);
    free(xs);
    free(ys);
}

static double histogram_peak(const double *X, size_t N, size_t D, size_t a, const double r[2],
                             size_t bins)
{
    double *h = cli_calloc_doubles(bins), width = (r[1] - r[0]) / (double)bins, peak = 0;
    for (size_t i = 0; i < N; i++) {
        double b = floor((X[i * D + a] - r[0]) / width);
        if (b >= 0 && b < (double)bins)
            peak = fmax(peak, h[(size_t)b] += 1.0 / ((double)N * width));
    }
    free(h);
    return peak;
}

/* A panel of the paths of the n rows of P (n x D) through the flow, in
 * columns ix, iy: blue at the data, red at the base. */
static void paths_panel(raster *r, int x, int y, size_t size, int s, const cnf_flow *flow,
                        const cnf_flow_options *fo, const double *P, size_t n, size_t frames,
                        size_t ix, size_t iy)
{
    size_t nf, D = cnf_flow_dim(flow);
    double *path = trajectories(flow, fo, P, n, frames, &nf);   /* nf x n x D */
    double tr[2][2];
    column_range(path, nf * n, NULL, 0, D, ix, tr[0]);
    column_range(path, nf * n, NULL, 0, D, iy, tr[1]);
    figure_panel p = square_panel(r, x, y, size, tr[0], tr[1], s);
    for (size_t i = 0; i < n; i++)
        for (size_t f = 0; f + 1 < nf; f++) {
            const double *a = path + (f * n + i) * D, *b = a + n * D;
            double u = (double)f / (double)(nf - 1);
            raster_rgb c = {(unsigned char)(data_rgb.r + u * (sample_rgb.r - data_rgb.r)),
                            (unsigned char)(data_rgb.g + u * (sample_rgb.g - data_rgb.g)),
                            (unsigned char)(data_rgb.b + u * (sample_rgb.b - data_rgb.b))};
            raster_line(r, figure_px(&p, a[ix]), figure_py(&p, a[iy]), figure_px(&p, b[ix]),
                        figure_py(&p, b[iy]), 1, c, 0.5);
        }
    figure_points(&p, path, n, D, ix, iy, s + 1, data_rgb, 0.9);
    figure_points(&p, path + (nf - 1) * n * D, n, D, ix, iy, s + 1, sample_rgb, 0.9);
    char xl[32], yl[32];
    snprintf(xl, sizeof xl, "x%zu", ix);
    snprintf(yl, sizeof yl, "x%zu", iy);
    figure_axes(&p, xl, yl, "paths: data to base");
    free(path);
}

/* The D > 2 picture: a K x K grid of marginals of the columns dims. */
static raster *marginal_grid(const double *P, size_t Np, const double *S, size_t Ns, size_t D,
                             const size_t *dims, size_t K, size_t cell, const char *title,
                             const cnf_flow *flow, const cnf_flow_options *fo, size_t n_traj,
                             size_t frames)
{
    int s = font_scale(cell * 2), ml = figure_margin_left(s), mb = figure_margin_bottom(s);
    int gap = 6 * s, th = raster_text_height(s) * 2 + 10 * s;
    char legend[160];
    snprintf(legend, sizeof legend, "below the diagonal: data (%zu points); above: model "
             "samples (%zu)", Np, Ns);
    /* --trajectories: a panel of two cells' side right of the grid, in the
     * first two columns of --dims */
    size_t tsize = 2 * cell + (size_t)gap;
    int grid_w = ml + (int)K * ((int)cell + gap);
    int W = grid_w + (n_traj ? ml + (int)tsize + gap : 0) + 10 * s;
    int H = th + (int)K * ((int)cell + gap) + mb;
    int tH = th + figure_margin_top(s) + (int)tsize + mb;   /* below its own title */
    if (n_traj && tH > H)
        H = tH;
    int need = raster_text_width(legend, s) + 30 * s;
    need = raster_text_width(title, s) + 8 * s > need ? raster_text_width(title, s) + 8 * s : need;
    int shift = W < need ? (need - W) / 2 : 0;   /* the grid centred under a wider title */
    W = W < need ? need : W;
    ml += shift;
    raster *r = raster_new(W, H, white);
    double (*range)[2] = cli_malloc_array(K, 1, sizeof *range, "the ranges");
    for (size_t a = 0; a < K; a++)
        column_range(P, Np, S, Ns, D, dims[a], range[a]);
    size_t bins = cell / 6 > 10 ? cell / 6 : 10;
    for (size_t row = 0; row < K; row++)
        for (size_t col = 0; col < K; col++) {
            figure_panel p = square_panel(r, ml + (int)col * ((int)cell + gap),
                                          th + (int)row * ((int)cell + gap), cell, range[col],
                                          range[row], s);
            char xl[32], yl[32];
            snprintf(xl, sizeof xl, "x%zu", dims[col]);
            snprintf(yl, sizeof yl, "x%zu", dims[row]);
            if (row == col) {
                p.yr[0] = 0;
                p.yr[1] = 1;
                double peak = fmax(histogram_peak(P, Np, D, dims[col], range[col], bins),
                                   histogram_peak(S, Ns, D, dims[col], range[col], bins));
                if (peak > 0) {
                    histogram(&p, P, Np, D, dims[col], bins, peak, data_rgb);
                    histogram(&p, S, Ns, D, dims[col], bins, peak, sample_rgb);
                }
            } else if (row > col) {
                figure_points(&p, P, Np, D, dims[col], dims[row], s, data_rgb, 0.5);
            } else {
                figure_points(&p, S, Ns, D, dims[col], dims[row], s, sample_rgb, 0.5);
            }
            /* Ticks on every panel, their labels on the outer ones only. */
            p.hide_x = row + 1 != K;
            p.hide_y = col != 0 || row == col;
            figure_axes(&p, row + 1 == K ? xl : NULL, col == 0 ? yl : NULL, NULL);
        }
    if (n_traj)
        paths_panel(r, grid_w + ml, th + figure_margin_top(s), tsize, s, flow, fo, P, n_traj,
                    frames, dims[0], dims[1]);
    raster_text_at(r, W / 2, 4 * s, 1, 0, title, s, ink);
    raster_text_at(r, W / 2, 6 * s + raster_text_height(s), 1, 0, legend, s, ink);
    raster_dot(r, W / 2 - raster_text_width(legend, s) / 2 - 8 * s,
               6 * s + raster_text_height(s) * 3 / 2, 4 * s, data_rgb, 1.0);
    raster_dot(r, W / 2 + raster_text_width(legend, s) / 2 + 8 * s,
               6 * s + raster_text_height(s) * 3 / 2, 4 * s, sample_rgb, 1.0);
    free(range);
    return r;
}

int cmd_plot(int argc, char **argv)
{
    const char *model = NULL, *out = NULL, *data = NULL, *xlim = NULL, *ylim = NULL;
    const char *dims_spec = NULL, *colour = "log";
    size_t size = 300, grid = 150, max_points = 1000, n_samples = 0, n_traj = 0, frames = 24;
    double log_range = 10.0;
    int logd = 0;
    unsigned long seed = 1;
    cli_solve_args sa;
    cli_solve_args_default(&sa);
    cli_option opts[] = {
        {"model", CLI_STRING, &model, "M.h5", "model file", CLI_REQUIRED, 0},
        {"out", CLI_STRING, &out, "F.png", "output PNG", CLI_REQUIRED, 0},
        {"data", CLI_STRING, &data, "F.h5:/x|F.csv", "data to draw and to score in the title (path "
         "default /test), or a CSV file", NULL, 0},
        {"samples", CLI_SIZE, &n_samples, "N", "draw N model samples beside the data",
         "0; 1000 for D > 2", 0},
        {"trajectories", CLI_SIZE, &n_traj, "N", "paths of N data points (of the drawn ones) "
         "from the data to the base distribution (D > 2: in the first two --dims)", NULL, 0},
        {"frames", CLI_COUNT, &frames, "N", "points per path and block of --trajectories", NULL, 0},
        {"dims", CLI_STRING, &dims_spec, "I,J,..", "D > 2: the columns of the marginal grid "
         "(0-based)", "0..min(D,5)-1", 0},
        {"size", CLI_COUNT, &size, "PX", "width and height of a panel (D > 2: of a grid cell) in "
         "pixels", "300; 150 for D > 2", 0},
        {"grid", CLI_COUNT, &grid, "N", "density evaluations per panel side (interpolated to "
         "--size)", "150, at most --size", 0},
        {"xlim", CLI_STRING, &xlim, "LO,HI", "x range", "the points' range + 10%, else mean +- 4 scale", 0},
        {"ylim", CLI_STRING, &ylim, "LO,HI", "y range", "as for x", 0},
        {"colour", CLI_STRING, &colour, "log|linear", "colour by log-density (over --log-range "
         "nats below the maximum) or density", NULL, 0},
        {"log", CLI_FLAG, &logd, NULL, "the same as --colour log (kept for old scripts)", NULL, 0},
        {"log-range", CLI_POS, &log_range, "NATS", "span of the log-density colour scale", NULL, 0},
        {"max-points", CLI_SIZE, &max_points, "N", "draw at most N points of the data (a "
         "seeded random subset)", NULL, 0},
        {"seed", CLI_SEED, &seed, "S", "seed of the subset, the samples and any Hutchinson "
         "noise", NULL, 0},
        CLI_SOLVE_OPTIONS(sa),
        CLI_DIVERGENCE_OPTION(sa),
        {NULL, 0, NULL, NULL, NULL, NULL, 0}};
    const char *pos[1];
    size_t n_pos;
    cli_parse(argc, argv, opts, "plot --model M.h5 --out F.png [--data F.h5:/x] [options]",
              "Pictures of a model in one PNG, axes in data units. D = 2: the log-density\n"
              "(colour bar) with the data overlaid; --samples N adds panels of the data and\n"
              "of N samples; --trajectories N the paths of N data points to the base.\n"
              "D > 2: a grid of 2-D marginals of --dims, data below the diagonal and\n"
              "samples above, histograms on it, paths beside it (no density: see the\n"
              "README). The title gives the data's mean NLL.",
              pos, 0, &n_pos);
    if (size < 2 || size > 4096)
        cli_usage("--size %zu: expected 2..4096", size);
    if (grid < 2 || grid > 4096)
        cli_usage("--grid %zu: expected 2..4096", grid);
    if (logd)
        colour = "log";
    if (strcmp(colour, "log") && strcmp(colour, "linear"))
        cli_usage("--colour %s: expected log or linear", colour);
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
    const size_t D = m.D;
    if (D == 1)
        cli_die("%s has dimension 1; plot draws models of D >= 2", model);
    if (D == 2 && dims_spec)
        cli_usage("--dims chooses the columns of a D > 2 model's grid; %s has D = 2", model);
    if (D > 2 && (xlim || ylim))
        cli_usage("--%s sets a 2-D model's range; %s has D = %zu (its picture is the marginal "
                  "grid of --dims, ranges from the points)", xlim ? "xlim" : "ylim", model, D);
    if (D > 2 && !data && cli_given(opts, "samples") && n_samples == 0)
        cli_usage("a D > 2 model's picture needs --data or --samples N > 0");
    size_t dims[8], K = 0;
    if (D > 2) {
        if (dims_spec)
            K = parse_dims(dims_spec, D, dims, 8);
        else
            for (K = 0; K < D && K < 5; K++)
                dims[K] = K;
        if (!cli_given(opts, "samples"))
            n_samples = 1000;
        if (!cli_given(opts, "size"))
            size = 150;
    }
    if (!cli_given(opts, "grid") && grid > size)
        grid = size;   /* no more evaluations than pixels */

    size_t Nall = 0, Np = 0, Ns = 0;
    double *Xall = data ? cli_read_data(data, "/test", D, &Nall, NULL) : NULL;   /* Nall x D */
    size_t rows = Nall > grid * grid ? Nall : grid * grid;
    cli_model_prepare(&m, &sa, D == 2 ? rows : (Nall > n_samples ? Nall : n_samples), seed);
    double *P = data ? subsample(Xall, Nall, D, max_points, m.rng, &Np) : NULL;   /* Np x D */
    if (n_traj > Np)
        cli_usage("--trajectories %zu: only %zu data points are drawn (--data, --max-points)",
                  n_traj, Np);
    double t0 = cli_now();

    /* The title: the model, the data and their mean NLL (all rows). */
    char title[CNF_DATA_FILE_MAX + 2 * CNF_DATA_PATH_MAX + 4200], dname[CNF_DATA_FILE_MAX + CNF_DATA_PATH_MAX + 2];
    snprintf(title, sizeof title, "%s", cli_basename(model));
    if (data) {
        double *ll = cli_malloc_array(Nall, 1, sizeof *ll, "the log-likelihoods"), sum = 0;
        cli_check(cnf_flow_log_likelihood(flow, m.w, Xall, Nall, m.rng, ll, NULL), data);
        for (size_t i = 0; i < Nall; i++)
            sum -= ll[i];
        cli_data_short_name(data, "/test", dname, sizeof dname);
        snprintf(title + strlen(title), sizeof title - strlen(title),
                 "   %s: NLL %.3f nats (n = %zu)", dname, sum / (double)Nall, Nall);
        free(ll);
    }
    double *S = NULL;   /* Ns x D */
    if (n_samples) {
        Ns = n_samples;
        double *Z = cli_malloc_array(Ns, D, sizeof *Z, "--samples");
        S = cli_malloc_array(Ns, D, sizeof *S, "--samples");
        cnf_flow_draw_latent(m.rng, Ns, D, Z);
        cli_check(cnf_flow_decode(flow, m.w, Z, Ns, S, NULL), "sampling");
        free(Z);
    }

    raster *r;
    char what[1024] = "";
    if (D > 2) {
        r = marginal_grid(P, Np, S, Ns, D, dims, K, size, title, flow, &m.fo, n_traj, frames);
        snprintf(what, sizeof what, "a %zu x %zu grid of marginals, %zu data points, %zu samples, "
                 "%zu trajectories", K, K, Np, Ns, n_traj);
    } else {
        for (int a = 0; a < 2; a++) {
            double *rg = a ? yr : xr;
            if (a ? ylim : xlim)
                continue;
            if (Np || Ns) {
                column_range(P, Np, S, Ns, 2, (size_t)a, rg);
            } else {
                double mu = cnf_flow_mean_const(flow)[a], sc = cnf_flow_scale_const(flow)[a];
                rg[0] = mu - 4 * sc;
                rg[1] = mu + 4 * sc;
            }
        }
        /* Grid point centres: column c at x = xr0 + (c + 0.5) dx; row 0 at the top. */
        size_t G;
        if (cnf_size_mul(grid, grid, &G))
            cli_usage("a %zu x %zu density grid does not fit in memory", grid, grid);
        double *X = cli_malloc_array(G, 2, sizeof *X, "the density grid");   /* G x 2 */
        double *ll = cli_malloc_array(G, 1, sizeof *ll, "the density grid");
        for (size_t i = 0; i < grid; i++)
            for (size_t c = 0; c < grid; c++) {
                X[2 * (i * grid + c)] = xr[0] + ((double)c + 0.5) * (xr[1] - xr[0]) / (double)grid;
                X[2 * (i * grid + c) + 1] = yr[1] - ((double)i + 0.5) * (yr[1] - yr[0]) / (double)grid;
            }
        cli_check(cnf_flow_log_likelihood(flow, m.w, X, G, m.rng, ll, NULL), "density grid");
        double lmax = -INFINITY;
        size_t imax = 0;
        for (size_t i = 0; i < G; i++)
            if (ll[i] > lmax) {
                lmax = ll[i];
                imax = i;
            }
        int lin = !strcmp(colour, "linear");
        double lo = lmax - log_range, hi = lmax;
        if (lin) {
            for (size_t i = 0; i < G; i++)
                ll[i] = exp(ll[i]);
            lo = 0;
            hi = exp(lmax);
        }

        int s = font_scale(size), ml = figure_margin_left(s), mb = figure_margin_bottom(s);
        int mt = figure_margin_top(s), th = raster_text_height(s) + 10 * s, cbw = 14 * s;
        int n_panels = 1 + (S ? 1 + (P != NULL) : 0) + (n_traj > 0), gap = 10 * s;
        int W = n_panels * (ml + (int)size + gap) + 2 * gap + figure_colorbar_width(cbw, s);
        if (W < raster_text_width(title, s) + 8 * s)
            W = raster_text_width(title, s) + 8 * s;
        int H = th + mt + (int)size + mb;
        r = raster_new(W, H, white);
        int x = ml;
        char sub[128];
        if (S && P) {
            figure_panel p = square_panel(r, x, th + mt, size, xr, yr, s);
            figure_points(&p, P, Np, 2, 0, 1, s, data_rgb, 0.45);
            snprintf(sub, sizeof sub, "data (%zu points)", Np);
            figure_axes(&p, "x0", "x1", sub);
            x += (int)size + gap + ml;
        }
        figure_panel dp = square_panel(r, x, th + mt, size, xr, yr, s);
        figure_heatmap(&dp, ll, grid, lo, hi);
        if (P && !S)
            figure_points(&dp, P, Np, 2, 0, 1, s, white, 0.35);
        figure_axes(&dp, "x0", "x1", P && !S ? "log-density, data in white" :
                    lin ? "density" : "log-density");
        int cbx = x + (int)size + gap;
        figure_colorbar(r, cbx, th + mt, cbw, (int)size, lo, hi, lin ? "p(x)" : "log p(x)", s);
        /* The boxes are printed so that a script (and the tests) can find
         * the panels' pixels. */
        snprintf(what, sizeof what, "%d panel%s, density panel [%d, %d) x [%d, %d) pixels for x in [%g, %g], "
                 "y in [%g, %g], colour bar [%d, %d) x [%d, %d), max log-density %.4f at "
                 "(%.4g, %.4g), %zu data points, %zu samples, %zu trajectories",
                 n_panels, n_panels > 1 ? "s" : "", x, x + (int)size, th + mt,
                 th + mt + (int)size, xr[0], xr[1], yr[0], yr[1], cbx,
                 cbx + cbw, th + mt, th + mt + (int)size, lmax, X[2 * imax], X[2 * imax + 1], Np,
                 Ns, n_traj);
        x = cbx + figure_colorbar_width(cbw, s) + gap + ml;
        if (S) {
            figure_panel p = square_panel(r, x, th + mt, size, xr, yr, s);
            figure_points(&p, S, Ns, 2, 0, 1, s, sample_rgb, 0.45);
            snprintf(sub, sizeof sub, "model samples (%zu)", Ns);
            figure_axes(&p, "x0", "x1", sub);
            x += (int)size + gap + ml;
        }
        if (n_traj)
            paths_panel(r, x, th + mt, size, s, flow, &m.fo, P, n_traj, frames, 0, 1);
        raster_text_at(r, W / 2, 5 * s, 1, 0, title, s, ink);
        free(X);
        free(ll);
    }
    char err[4400];
    if (raster_write_png(r, out, err, sizeof err))
        cli_die("%s", err);
    cli_info("wrote %s: %d x %d pixels, %s (%.2f s)\n", out, r->w, r->h, what, cli_now() - t0);
    raster_free(r);
    free(S);
    free(P);
    free(Xall);
    cli_model_close(&m);
    return 0;
}
