/* pngprobe.c — reads a PNG for the end-to-end tests of cnf plot and cnf
 * train --curve (built beside the tests, not a ctest case):
 *
 *   pngprobe F.png                              -> "W H"
 *   pngprobe F.png pixel X Y                    -> "R G B"
 *   pngprobe F.png nearest R G B X0 Y0 X1 Y1    -> "X Y D": the pixel of the box
 *                                                  [X0, X1) x [Y0, Y1) closest to
 *                                                  the colour, and the distance
 *   pngprobe F.png count-nonwhite X0 Y0 X1 Y1   -> pixels of the box not white
 *   pngprobe F.png count R G B TOL X0 Y0 X1 Y1  -> pixels within TOL of the colour
 *
 * Exit 1 with a message if the file is not a PNG it can read. */
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned char *rgb;
static long W, H;

static void load(const char *path)
{
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&img, path)) {
        fprintf(stderr, "pngprobe: %s: %s\n", path, img.message);
        exit(1);
    }
    img.format = PNG_FORMAT_RGB;
    rgb = malloc(PNG_IMAGE_SIZE(img));
    if (!rgb || !png_image_finish_read(&img, NULL, rgb, 0, NULL)) {
        fprintf(stderr, "pngprobe: %s: %s\n", path, img.message);
        exit(1);
    }
    W = img.width;
    H = img.height;
}

static const unsigned char *at(long x, long y) { return rgb + 3 * (y * W + x); }

static double dist(const unsigned char *p, long r, long g, long b)
{
    return sqrt((double)((p[0] - r) * (p[0] - r) + (p[1] - g) * (p[1] - g) +
                         (p[2] - b) * (p[2] - b)));
}

static void clip_box(char **a, long box[4])
{
    for (int i = 0; i < 4; i++)
        box[i] = strtol(a[i], NULL, 10);
    if (box[0] < 0 || box[1] < 0 || box[2] > W || box[3] > H || box[0] >= box[2] ||
        box[1] >= box[3]) {
        fprintf(stderr, "pngprobe: box %ld %ld %ld %ld outside the %ld x %ld image\n", box[0],
                box[1], box[2], box[3], W, H);
        exit(1);
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: pngprobe F.png [pixel|nearest|count-nonwhite|count ...]\n");
        return 2;
    }
    load(argv[1]);
    if (argc == 2) {
        printf("%ld %ld\n", W, H);
    } else if (!strcmp(argv[2], "pixel") && argc == 5) {
        long x = strtol(argv[3], NULL, 10), y = strtol(argv[4], NULL, 10);
        if (x < 0 || y < 0 || x >= W || y >= H) {
            fprintf(stderr, "pngprobe: pixel %ld %ld outside the image\n", x, y);
            return 1;
        }
        printf("%d %d %d\n", at(x, y)[0], at(x, y)[1], at(x, y)[2]);
    } else if (!strcmp(argv[2], "nearest") && argc == 10) {
        long c[3], box[4], bx = -1, by = -1;
        for (int i = 0; i < 3; i++)
            c[i] = strtol(argv[3 + i], NULL, 10);
        clip_box(argv + 6, box);
        double best = INFINITY;
        for (long y = box[1]; y < box[3]; y++)
            for (long x = box[0]; x < box[2]; x++) {
                double d = dist(at(x, y), c[0], c[1], c[2]);
                if (d < best) {
                    best = d;
                    bx = x;
                    by = y;
                }
            }
        printf("%ld %ld %.1f\n", bx, by, best);
    } else if (!strcmp(argv[2], "count-nonwhite") && argc == 7) {
        long box[4], n = 0;
        clip_box(argv + 3, box);
        for (long y = box[1]; y < box[3]; y++)
            for (long x = box[0]; x < box[2]; x++)
                n += dist(at(x, y), 255, 255, 255) > 0;
        printf("%ld\n", n);
    } else if (!strcmp(argv[2], "count") && argc == 11) {
        long c[3], box[4], n = 0;
        for (int i = 0; i < 3; i++)
            c[i] = strtol(argv[3 + i], NULL, 10);
        double tol = strtod(argv[6], NULL);
        clip_box(argv + 7, box);
        for (long y = box[1]; y < box[3]; y++)
            for (long x = box[0]; x < box[2]; x++)
                n += dist(at(x, y), c[0], c[1], c[2]) <= tol;
        printf("%ld\n", n);
    } else {
        fprintf(stderr, "pngprobe: unknown query\n");
        return 2;
    }
    free(rgb);
    return 0;
}
