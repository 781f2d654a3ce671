/* figure.c — plot panels (figure.h). */
#include "figure.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const raster_rgb ink = {40, 40, 40};

/* A tick label is at most 6 characters; a y label needs one text line and
 * a gap. */
int figure_margin_left(int s) { return (6 * 6 + 4) * s + raster_text_height(s) + 8 * s; }
int figure_margin_bottom(int s) { return 4 * s + 2 * raster_text_height(s) + 8 * s; }
int figure_margin_top(int s) { return raster_text_height(s) + 6 * s; }

double figure_px(const figure_panel *p, double x)
{
    return p->x + (x - p->xr[0]) / (p->xr[1] - p->xr[0]) * p->w;
}

double figure_py(const figure_panel *p, double y)
{
    return p->y + (p->yr[1] - y) / (p->yr[1] - p->yr[0]) * p->h;
}

int figure_ticks(double lo, double hi, int max_ticks, double *ticks, double *step)
{
    double span = hi - lo;
    if (!(span > 0) || max_ticks < 2)
        return 0;
    /* The smallest step of 1, 2 or 5 times a power of ten that gives at
     * most max_ticks ticks. */
    double mag = pow(10.0, floor(log10(span / max_ticks))), s = mag;
    static const double mult[] = {1, 2, 5, 10, 20, 50};
    for (size_t i = 0; i < sizeof mult / sizeof mult[0]; i++) {
        s = mult[i] * mag;
        if (floor(hi / s + 1e-9) - ceil(lo / s - 1e-9) + 1 <= max_ticks)
            break;
    }
    int n = 0;
    for (double k = ceil(lo / s - 1e-9); k * s <= hi + 1e-9 * s && n < 16; k++) {
        double v = k * s;
        ticks[n++] = fabs(v) < 1e-12 * s ? 0.0 : v;
    }
    *step = s;
    return n;
}

void figure_format_tick(double v, double step, char *buf, size_t n)
{
    double a = fabs(v);
    if (v == 0) {
        snprintf(buf, n, "0");
    } else if (a >= 1e5 || a < 1e-3) {
        snprintf(buf, n, "%.0e", v);
        /* "1e-05" -> "1e-5": the exponent's zero pads take room for nothing */
        char *e = strchr(buf, 'e');
        if (e) {
            char *d = e + 1 + (e[1] == '-' || e[1] == '+');
            if (e[1] == '+')
                memmove(e + 1, e + 2, strlen(e + 2) + 1), d = e + 1;
            while (d[0] == '0' && d[1])
                memmove(d, d + 1, strlen(d));
        }
    } else if (a >= 10000 && fmod(a, 1000) == 0) {
        snprintf(buf, n, "%.0fk", v / 1000);
    } else {
        int dec = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
        snprintf(buf, n, "%.*f", dec, v);
    }
}

void figure_axes(const figure_panel *p, const char *xlabel, const char *ylabel,
                 const char *title)
{
    raster *r = p->r;
    const int s = p->scale, tl = 3 * s;
    raster_fill(r, p->x - 1, p->y - 1, p->x + p->w + 1, p->y, ink);
    raster_fill(r, p->x - 1, p->y + p->h, p->x + p->w + 1, p->y + p->h + 1, ink);
    raster_fill(r, p->x - 1, p->y, p->x, p->y + p->h, ink);
    raster_fill(r, p->x + p->w, p->y, p->x + p->w + 1, p->y + p->h, ink);
    double t[16], step;
    char buf[32];
    /* The most ticks (up to 7) whose labels fit side by side. */
    int nt = 0;
    for (int want = 7; want >= 2; want--) {
        nt = figure_ticks(p->xr[0], p->xr[1], want, t, &step);
        int widest = 0;
        for (int i = 0; i < nt; i++) {
            figure_format_tick(t[i], step, buf, sizeof buf);
            int tw = raster_text_width(buf, s);
            widest = tw > widest ? tw : widest;
        }
        if (nt * (widest + 6 * s) <= p->w)
            break;
    }
    for (int i = 0; i < nt; i++) {
        int px = (int)floor(figure_px(p, t[i]));
        raster_fill(r, px, p->y + p->h + 1, px + s, p->y + p->h + 1 + tl, ink);
        if (p->hide_x)
            continue;
        figure_format_tick(t[i], step, buf, sizeof buf);
        raster_text_at(r, px, p->y + p->h + 2 + tl + s, 1, 0, buf, s, ink);
    }
    int max_y = p->h / (raster_text_height(s) * 3) + 1;
    nt = figure_ticks(p->yr[0], p->yr[1], max_y < 7 ? max_y : 7, t, &step);
    for (int i = 0; i < nt; i++) {
        int py = (int)floor(figure_py(p, t[i]));
        raster_fill(r, p->x - 1 - tl, py, p->x - 1, py + s, ink);
        if (p->hide_y)
            continue;
        figure_format_tick(t[i], step, buf, sizeof buf);
        raster_text_at(r, p->x - 3 - tl - s, py, 2, 1, buf, s, ink);
    }
    if (xlabel)
        raster_text_at(r, p->x + p->w / 2, p->y + p->h + 2 + tl + raster_text_height(s) + 5 * s,
                       1, 0, xlabel, s, ink);
    if (ylabel)
        raster_text_up(r, p->x - figure_margin_left(s) + raster_text_height(s) / 2 + 2 * s,
                       p->y + p->h / 2, ylabel, s, ink);
    if (title)
        raster_text_at(r, p->x + p->w / 2, p->y - 4 * s, 1, 2, title, s, ink);
}

void figure_heatmap(const figure_panel *p, const double *grid, size_t G, double lo, double hi)
{
    double span = hi > lo ? hi - lo : 1.0;
    for (int py = 0; py < p->h; py++) {
        /* pixel centre in grid units, grid point centres at 0.5, 1.5, ... */
        double gy = (py + 0.5) / p->h * (double)G - 0.5;
        gy = gy < 0 ? 0 : gy > (double)G - 1 ? (double)G - 1 : gy;
        size_t y0 = (size_t)gy, y1 = y0 + 1 < G ? y0 + 1 : y0;
        double fy = gy - (double)y0;
        for (int px = 0; px < p->w; px++) {
            double gx = (px + 0.5) / p->w * (double)G - 0.5;
            gx = gx < 0 ? 0 : gx > (double)G - 1 ? (double)G - 1 : gx;
            size_t x0 = (size_t)gx, x1 = x0 + 1 < G ? x0 + 1 : x0;
            double fx = gx - (double)x0;
            double v = (1 - fy) * ((1 - fx) * grid[y0 * G + x0] + fx * grid[y0 * G + x1]) +
                       fy * ((1 - fx) * grid[y1 * G + x0] + fx * grid[y1 * G + x1]);
            raster_blend(p->r, p->x + px, p->y + py, raster_viridis((v - lo) / span), 1.0);
        }
    }
}

size_t figure_points(const figure_panel *p, const double *X, size_t N, size_t D, size_t ix,
                     size_t iy, int size, raster_rgb c, double alpha)
{
    size_t drawn = 0;
    for (size_t i = 0; i < N; i++) {
        double x = X[i * D + ix], y = X[i * D + iy];
        if (!(x >= p->xr[0] && x <= p->xr[1] && y >= p->yr[0] && y <= p->yr[1]))
            continue;
        raster_dot(p->r, figure_px(p, x), figure_py(p, y), size, c, alpha);
        drawn++;
    }
    return drawn;
}

static int inside(const figure_panel *p, double px, double py)
{
    return px >= p->x && px <= p->x + p->w && py >= p->y && py <= p->y + p->h;
}

void figure_polyline(const figure_panel *p, const double *x, const double *y, size_t n,
                     raster_rgb c, int width)
{
    int have = 0;
    double lx = 0, ly = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(x[i]) || !isfinite(y[i])) {
            have = 0;
            continue;
        }
        double px = figure_px(p, x[i]), py = figure_py(p, y[i]);
        /* Clipping by whole segments: the series stay inside their ranges,
         * so only an outlier's segments go, which is what a reader wants. */
        if (have && inside(p, px, py) && inside(p, lx, ly))
            raster_line(p->r, lx, ly, px, py, width, c, 1.0);
        else if (inside(p, px, py) && n == 1)
            raster_dot(p->r, px, py, 2 * width + 1, c, 1.0);
        lx = px;
        ly = py;
        have = 1;
    }
}

int figure_colorbar_width(int w, int scale)
{
    return w + (6 * 6 + 6) * scale + raster_text_height(scale) + 6 * scale;
}

void figure_colorbar(raster *r, int x, int y, int w, int h, double lo, double hi,
                     const char *label, int scale)
{
    for (int py = 0; py < h; py++)
        raster_fill(r, x, y + py, x + w, y + py + 1,
                    raster_viridis(1.0 - (py + 0.5) / (double)h));
    figure_panel p = {r, x, y, w, h, {0, 1}, {lo, hi}, scale, 1, 1};
    raster_fill(r, x - 1, y - 1, x + w + 1, y, ink);
    raster_fill(r, x - 1, y + h, x + w + 1, y + h + 1, ink);
    raster_fill(r, x - 1, y, x, y + h, ink);
    raster_fill(r, x + w, y, x + w + 1, y + h, ink);
    double t[16], step;
    int nt = figure_ticks(lo, hi, h / (raster_text_height(scale) * 3) + 1, t, &step);
    char buf[32];
    for (int i = 0; i < nt; i++) {
        int py = (int)floor(figure_py(&p, t[i]));
        raster_fill(r, x + w + 1, py, x + w + 1 + 3 * scale, py + scale, ink);
        figure_format_tick(t[i], step, buf, sizeof buf);
        raster_text_at(r, x + w + 3 + 4 * scale, py, 0, 1, buf, scale, ink);
    }
    if (label)
        raster_text_up(r, x + figure_colorbar_width(w, scale) - raster_text_height(scale) / 2 -
                              2 * scale, y + h / 2, label, scale, ink);
}
