/* raster.h — an RGB canvas for the command's pictures (cnf plot, cnf train
 * --curve): filled rectangles, alpha-blended dots and lines, text in a
 * built-in 5 x 7 bitmap font (font5x7.c) at an integer scale, the viridis
 * colour map, and atomic PNG output (pngout.h). Coordinates are pixels,
 * x to the right, y down, (0, 0) the top-left pixel; drawing outside the
 * canvas is clipped. */
#ifndef CNF_TOOLS_RASTER_H
#define CNF_TOOLS_RASTER_H

#include <stddef.h>

typedef struct {
    unsigned char r, g, b;
} raster_rgb;

typedef struct {
    int w, h;
    unsigned char *px;   /* h x w x 3, row-major, top row first */
} raster;

/* A w x h canvas filled with bg; exits with a message when out of memory. */
raster *raster_new(int w, int h, raster_rgb bg);
void raster_free(raster *r);   /* NULL is fine */

/* Blend colour c over pixel (x, y) with opacity alpha in [0, 1]. */
void raster_blend(raster *r, int x, int y, raster_rgb c, double alpha);
/* The rectangle [x0, x1) x [y0, y1). */
void raster_fill(raster *r, int x0, int y0, int x1, int y1, raster_rgb c);
/* A square dot of side `size` pixels centred at (x, y). */
void raster_dot(raster *r, double x, double y, int size, raster_rgb c, double alpha);
/* A line of width 1 (or `width` pixels) from (x0, y0) to (x1, y1). */
void raster_line(raster *r, double x0, double y0, double x1, double y1, int width,
                 raster_rgb c, double alpha);

/* Text: each glyph a 5 x 7 cell (plus a descender row) times scale, 6 *
 * scale pixels apart. (x, y) is the top-left of the first cell. */
#define RASTER_GLYPH_W 5
#define RASTER_GLYPH_H 8
int raster_text_width(const char *s, int scale);
int raster_text_height(int scale);
void raster_text(raster *r, int x, int y, const char *s, int scale, raster_rgb c);
/* Text placed by an anchor: ax, ay in {0, 1, 2} = left/top, centre,
 * right/bottom of the text's box at (x, y). */
void raster_text_at(raster *r, int x, int y, int ax, int ay, const char *s, int scale,
                    raster_rgb c);
/* The same text turned a quarter anticlockwise (reading upwards), centred
 * at (x, y), for vertical axis labels. */
void raster_text_up(raster *r, int x, int y, const char *s, int scale, raster_rgb c);
/* 1 if font cell (x, y) of character ch is ink (font5x7.c). */
int raster_glyph_ink(char ch, int x, int y);

/* matplotlib's viridis at v in [0, 1] (clamped). */
raster_rgb raster_viridis(double v);

/* Write the canvas as a PNG (atomically); 0, or -1 with a message in err. */
int raster_write_png(const raster *r, const char *path, char *err, size_t n);

#endif /* CNF_TOOLS_RASTER_H */
