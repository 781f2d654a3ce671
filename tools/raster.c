/* raster.c — the RGB canvas of raster.h. */
#include "raster.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "pngout.h"

raster *raster_new(int w, int h, raster_rgb bg)
{
    raster *r = cli_malloc(sizeof *r);
    r->w = w;
    r->h = h;
    r->px = cli_malloc_array((size_t)w, (size_t)h * 3, 1, "the image");
    for (size_t i = 0; i < (size_t)w * (size_t)h; i++) {
        r->px[3 * i] = bg.r;
        r->px[3 * i + 1] = bg.g;
        r->px[3 * i + 2] = bg.b;
    }
    return r;
}

void raster_free(raster *r)
{
    if (!r)
        return;
    free(r->px);
    free(r);
}

void raster_blend(raster *r, int x, int y, raster_rgb c, double alpha)
{
    if (x < 0 || y < 0 || x >= r->w || y >= r->h)
        return;
    unsigned char *p = r->px + 3 * ((size_t)y * (size_t)r->w + (size_t)x);
    const unsigned char src[3] = {c.r, c.g, c.b};
    for (int k = 0; k < 3; k++)
        p[k] = (unsigned char)(p[k] + alpha * (src[k] - p[k]) + 0.5);
}

void raster_fill(raster *r, int x0, int y0, int x1, int y1, raster_rgb c)
{
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++)
            raster_blend(r, x, y, c, 1.0);
}

void raster_dot(raster *r, double x, double y, int size, raster_rgb c, double alpha)
{
    int x0 = (int)floor(x - 0.5 * size + 0.5), y0 = (int)floor(y - 0.5 * size + 0.5);
    for (int dy = 0; dy < size; dy++)
        for (int dx = 0; dx < size; dx++)
            raster_blend(r, x0 + dx, y0 + dy, c, alpha);
}

void raster_line(raster *r, double x0, double y0, double x1, double y1, int width,
                 raster_rgb c, double alpha)
{
    double len = fmax(fabs(x1 - x0), fabs(y1 - y0));
    int n = (int)ceil(len);
    if (n < 1)
        n = 1;
    if (n > 100000)   /* a line far off the canvas: not worth its steps */
        return;
    /* Blending each step would darken the pixels a step visits twice; one
     * pixel per step along the major axis visits each once. */
    int lastx = INT_MIN, lasty = INT_MIN;
    for (int i = 0; i <= n; i++) {
        double t = (double)i / n;
        int px = (int)floor(x0 + t * (x1 - x0)), py = (int)floor(y0 + t * (y1 - y0));
        if (px == lastx && py == lasty)
            continue;
        lastx = px;
        lasty = py;
        if (width <= 1)
            raster_blend(r, px, py, c, alpha);
        else
            raster_dot(r, px + 0.5, py + 0.5, width, c, alpha);
    }
}

int raster_text_width(const char *s, int scale)
{
    size_t n = strlen(s);
    return n ? (int)(n * (RASTER_GLYPH_W + 1) - 1) * scale : 0;
}

int raster_text_height(int scale) { return 7 * scale; }

void raster_text(raster *r, int x, int y, const char *s, int scale, raster_rgb c)
{
    for (size_t i = 0; s[i]; i++)
        for (int gy = 0; gy < RASTER_GLYPH_H; gy++)
            for (int gx = 0; gx < RASTER_GLYPH_W; gx++)
                if (raster_glyph_ink(s[i], gx, gy))
                    raster_fill(r, x + ((int)i * (RASTER_GLYPH_W + 1) + gx) * scale,
                                y + gy * scale,
                                x + ((int)i * (RASTER_GLYPH_W + 1) + gx + 1) * scale,
                                y + (gy + 1) * scale, c);
}

void raster_text_at(raster *r, int x, int y, int ax, int ay, const char *s, int scale,
                    raster_rgb c)
{
    int w = raster_text_width(s, scale), h = raster_text_height(scale);
    raster_text(r, x - ax * w / 2, y - ay * h / 2, s, scale, c);
}

void raster_text_up(raster *r, int x, int y, const char *s, int scale, raster_rgb c)
{
    int w = raster_text_width(s, scale), h = raster_text_height(scale);
    /* Glyph pixel (u, v) of the horizontal text goes to (x0 + v, y0 - u). */
    int x0 = x - h / 2, y0 = y + w / 2;
    for (size_t i = 0; s[i]; i++)
        for (int gy = 0; gy < RASTER_GLYPH_H; gy++)
            for (int gx = 0; gx < RASTER_GLYPH_W; gx++)
                if (raster_glyph_ink(s[i], gx, gy)) {
                    int u = ((int)i * (RASTER_GLYPH_W + 1) + gx) * scale, v = gy * scale;
                    raster_fill(r, x0 + v, y0 - u - scale + 1, x0 + v + scale, y0 - u + 1, c);
                }
}

raster_rgb raster_viridis(double v)
{
    /* matplotlib's viridis sampled at nine points, linearly interpolated. */
    static const double c[9][3] = {{68, 1, 84},    {71, 44, 122},  {59, 81, 139},
                                   {44, 113, 142}, {33, 144, 141}, {39, 173, 129},
                                   {92, 200, 99},  {170, 220, 50}, {253, 231, 37}};
    if (!(v >= 0))
        v = 0;
    if (v > 1)
        v = 1;
    double x = v * 8.0;
    int i = (int)x;
    if (i > 7)
        i = 7;
    double f = x - i;
    unsigned char o[3];
    for (int k = 0; k < 3; k++)
        o[k] = (unsigned char)(c[i][k] + f * (c[i + 1][k] - c[i][k]) + 0.5);
    return (raster_rgb){o[0], o[1], o[2]};
}

int raster_write_png(const raster *r, const char *path, char *err, size_t n)
{
    return cli_png_write(path, r->px, (size_t)r->w, (size_t)r->h, err, n);
}
