/* curve.c — training curves (curve.h), drawn with figure.h. */
#include "curve.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "figure.h"

static const raster_rgb white = {255, 255, 255}, ink = {40, 40, 40};
static const raster_rgb dark = {31, 90, 170}, light = {170, 195, 230};
static const raster_rgb red = {214, 80, 30}, light_red = {240, 190, 170};

void train_curve_init(train_curve *c) { memset(c, 0, sizeof *c); }

void train_curve_free(train_curve *c)
{
    double *all[] = {c->iter, c->loss, c->nfe_f, c->nfe_b, c->secs, c->viter, c->vnll, c->vloss};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(all[i]);
    memset(c, 0, sizeof *c);
}

static void grow(double **a, size_t cap)
{
    double *p = realloc(*a, cap * sizeof *p);
    if (!p)
        cli_die("out of memory (training curve of %zu points)", cap);
    *a = p;
}

void train_curve_add(train_curve *c, size_t iteration, double loss, size_t nfe_f,
                     size_t nfe_b, double elapsed)
{
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 1024;
        double **all[] = {&c->iter, &c->loss, &c->nfe_f, &c->nfe_b, &c->secs};
        for (size_t i = 0; i < 5; i++)
            grow(all[i], c->cap);
    }
    c->iter[c->n] = (double)iteration;
    c->loss[c->n] = loss;
    c->nfe_f[c->n] = (double)nfe_f;
    c->nfe_b[c->n] = (double)nfe_b;
    c->secs[c->n] = elapsed - c->last_elapsed;
    c->last_elapsed = elapsed;
    c->n++;
}

void train_curve_add_validation(train_curve *c, size_t iteration, double nll, double loss)
{
    if (c->nv == c->vcap) {
        c->vcap = c->vcap ? 2 * c->vcap : 64;
        grow(&c->viter, c->vcap);
        grow(&c->vnll, c->vcap);
        grow(&c->vloss, c->vcap);
    }
    c->viter[c->nv] = (double)iteration;
    c->vnll[c->nv] = nll;
    c->vloss[c->nv] = loss;
    c->nv++;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The y range of the finite values: from the smallest to the 98th
 * percentile when there are many (the first iterations' losses would
 * otherwise flatten the rest), padded by 5%. 0 if none is finite. */
static int value_range(const double *const *v, const size_t *n, size_t k, double r[2])
{
    size_t total = 0;
    for (size_t j = 0; j < k; j++)
        total += n[j];
    double *s = cli_malloc_array(total, 1, sizeof *s, "the curve");
    size_t m = 0;
    for (size_t j = 0; j < k; j++)
        for (size_t i = 0; i < n[j]; i++)
            if (isfinite(v[j][i]))
                s[m++] = v[j][i];
    if (!m) {
        free(s);
        return 0;
    }
    qsort(s, m, sizeof *s, cmp_double);
    double lo = s[0], hi = m >= 50 ? s[(size_t)(0.98 * (double)(m - 1))] : s[m - 1];
    free(s);
    if (!(hi > lo)) {
        double d = fabs(lo) > 0 ? 0.1 * fabs(lo) : 1.0;
        lo -= d;
        hi += d;
    }
    double pad = 0.05 * (hi - lo);
    r[0] = lo - pad;
    r[1] = hi + pad;
    return 1;
}

/* The running mean over a window of w points, for noisy per-iteration series. */
static double *running_mean(const double *v, size_t n, size_t w)
{
    double *out = cli_malloc_array(n, 1, sizeof *out, "the curve"), sum = 0;
    size_t cnt = 0;
    for (size_t i = 0; i < n; i++) {
        if (isfinite(v[i])) {
            sum += v[i];
            cnt++;
        }
        if (i >= w && isfinite(v[i - w])) {
            sum -= v[i - w];
            cnt--;
        }
        out[i] = cnt ? sum / (double)cnt : NAN;
    }
    return out;
}

/* A panel of one or two noisy series (raw light, running mean dark). */
static void series_panel(figure_panel *p, const train_curve *c, const double *a,
                         const double *b, const char *ylabel, const char *title)
{
    const double *v[2] = {a, b};
    size_t n[2] = {c->n, b ? c->n : 0};
    if (!value_range(v, n, 2, p->yr)) {
        p->yr[0] = 0;
        p->yr[1] = 1;
    }
    size_t w = c->n / 60 > 1 ? c->n / 60 : 1;
    for (int j = 0; j < 2; j++) {
        if (!v[j])
            continue;
        if (w > 1)
            figure_polyline(p, c->iter, v[j], c->n, j ? light_red : light, 1);
        double *m = running_mean(v[j], c->n, w);
        figure_polyline(p, c->iter, m, c->n, j ? red : dark, p->scale);
        free(m);
    }
    figure_axes(p, "iteration", ylabel, title);
}

int train_curve_write(const train_curve *c, const char *path, const char *title, int fm,
                      char *err, size_t n)
{
    const int s = 2, pw = 380, ph = 200, ml = figure_margin_left(s), mb = figure_margin_bottom(s);
    const int mt = figure_margin_top(s), gap = 12 * s, th = raster_text_height(s) + 10 * s;
    int W = 2 * (ml + pw + gap), H = th + 2 * (mt + ph + mb);
    if (W < raster_text_width(title, s) + 8 * s)
        W = raster_text_width(title, s) + 8 * s;
    raster *r = raster_new(W, H, white);
    raster_text_at(r, W / 2, 5 * s, 1, 0, title, s, ink);
    double xr[2] = {c->n ? c->iter[0] - 1 : 0, c->n ? c->iter[c->n - 1] : 1};
    if (!(xr[1] > xr[0]))
        xr[1] = xr[0] + 1;
    figure_panel p[4];
    for (int k = 0; k < 4; k++)
        p[k] = (figure_panel){r, ml + (k % 2) * (ml + pw + gap), th + mt + (k / 2) * (mt + ph + mb),
                              pw, ph, {xr[0], xr[1]}, {0, 1}, s, 0, 0};

    series_panel(&p[0], c, c->loss, NULL, fm ? "loss" : "loss (nats)",
                 fm ? "training loss (flow matching)" : "training loss");

    /* Validation: the NLL, unless (flow matching) the loss was validated
     * more often. */
    size_t n_nll = 0, n_loss = 0;
    for (size_t i = 0; i < c->nv; i++) {
        n_nll += isfinite(c->vnll[i]) != 0;
        n_loss += isfinite(c->vloss[i]) != 0;
    }
    int have_nll = n_nll && n_nll >= n_loss;
    const double *vv = have_nll ? c->vnll : c->vloss;
    const double *v[1] = {vv};
    size_t nn[1] = {c->nv};
    if (!value_range(v, nn, 1, p[1].yr)) {
        p[1].yr[0] = 0;
        p[1].yr[1] = 1;
        figure_axes(&p[1], "iteration", NULL, "validation: none ran");
    } else {
        /* NaN entries (the other kind's validations) would break the line */
        double *xs = cli_malloc_array(c->nv, 1, sizeof *xs, "the curve");
        double *ys = cli_malloc_array(c->nv, 1, sizeof *ys, "the curve");
        size_t m = 0;
        for (size_t i = 0; i < c->nv; i++)
            if (isfinite(vv[i])) {
                xs[m] = c->viter[i];
                ys[m++] = vv[i];
            }
        figure_polyline(&p[1], xs, ys, m, dark, s);
        free(xs);
        free(ys);
        for (size_t i = 0; i < c->nv; i++)
            if (isfinite(vv[i]))
                raster_dot(r, figure_px(&p[1], c->viter[i]), figure_py(&p[1], vv[i]), 3 * s,
                           dark, 1.0);
        figure_axes(&p[1], "iteration", have_nll ? "NLL (nats)" : "loss",
                    have_nll ? "validation NLL" : "validation loss");
    }

    if (fm) {
        p[2].hide_y = 1;
        figure_axes(&p[2], "iteration", NULL, "function evaluations");
        raster_text_at(r, p[2].x + pw / 2, p[2].y + ph / 2, 1, 1, "none: flow matching", s, ink);
        raster_text_at(r, p[2].x + pw / 2, p[2].y + ph / 2 + 3 * raster_text_height(s) / 2, 1, 1,
                       "trains without solves", s, ink);
    } else {
        series_panel(&p[2], c, c->nfe_f, c->nfe_b, "NFE",
                     "NFE: forward (blue), backward (red)");
    }
    series_panel(&p[3], c, c->secs, NULL, "seconds", "seconds per iteration");
    int rc = raster_write_png(r, path, err, n);
    raster_free(r);
    return rc;
}
