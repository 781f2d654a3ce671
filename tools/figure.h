/* figure.h — plot panels on a raster (raster.h): axes in data units with
 * "nice" ticks (1, 2, 5 times a power of ten) and labels, heat maps,
 * scatter points, polylines and a colour bar. Used by cnf plot (densities,
 * samples, marginals, trajectories) and cnf train --curve (training curves).
 *
 * A panel is a pixel box [x, x + w) x [y, y + h) mapped to the data box
 * xr x yr (y up); the tick labels and axis labels are drawn outside the box,
 * in the margins its caller leaves (figure_margin_*). */
#ifndef CNF_TOOLS_FIGURE_H
#define CNF_TOOLS_FIGURE_H

#include <stddef.h>

#include "raster.h"

typedef struct {
    raster *r;
    int x, y, w, h;        /* pixel box */
    double xr[2], yr[2];   /* data box, xr[0] < xr[1], yr[0] < yr[1] */
    int scale;             /* font scale of the labels */
    int hide_x, hide_y;    /* 1: ticks without labels on that axis (inner panels of a grid) */
} figure_panel;

/* Pixels a panel needs left of it (tick labels and the y label), below it
 * and above it (a title line) at font scale s. */
int figure_margin_left(int s);
int figure_margin_bottom(int s);
int figure_margin_top(int s);

/* Data to pixel coordinates (fractional; pixel centres at +0.5). */
double figure_px(const figure_panel *p, double x);
double figure_py(const figure_panel *p, double y);

/* Up to about max_ticks "nice" values in [lo, hi]; returns the count (at
 * most 16) and the step. */
int figure_ticks(double lo, double hi, int max_ticks, double *ticks, double *step);

/* The frame, ticks and tick labels in data units, axis labels (either may
 * be NULL) and a title above the box (NULL: none). */
void figure_axes(const figure_panel *p, const char *xlabel, const char *ylabel,
                 const char *title);

/* Fill the box from a G x G grid of values (row 0 the top, at yr[1]), with
 * bilinear interpolation between the grid points' centres, coloured by
 * viridis over [lo, hi]. */
void figure_heatmap(const figure_panel *p, const double *grid, size_t G, double lo, double hi);

/* Points (rows of X, N x D, columns ix, iy) as dots of `size` pixels,
 * opacity alpha; points outside the box are not drawn. Returns the count
 * drawn. */
size_t figure_points(const figure_panel *p, const double *X, size_t N, size_t D, size_t ix,
                     size_t iy, int size, raster_rgb c, double alpha);

/* A polyline through (x[i], y[i]), i < n, skipping non-finite points;
 * clipped to the box. */
void figure_polyline(const figure_panel *p, const double *x, const double *y, size_t n,
                     raster_rgb c, int width);

/* A vertical colour bar in [x, x + w) x [y, y + h), viridis from lo at the
 * bottom to hi at the top, with ticks and labels to its right and a label
 * (may be NULL) turned upwards beyond them. */
void figure_colorbar(raster *r, int x, int y, int w, int h, double lo, double hi,
                     const char *label, int scale);
/* Pixels a colour bar of width w with labels needs to its right. */
int figure_colorbar_width(int w, int scale);

/* A tick value in at most 6 characters where it can ("0.5", "-2", "1e-05",
 * "2000", "15k"). */
void figure_format_tick(double v, double step, char *buf, size_t n);

#endif /* CNF_TOOLS_FIGURE_H */
