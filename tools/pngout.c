/* pngout.c — an RGB image to a PNG file through libpng (the Debian package
 * libpng-dev; CNF_HAVE_PNG when CMake found it), written to
 * "<path>.tmp.<pid>" and renamed, so a failure never leaves a partial file. */
#define _POSIX_C_SOURCE 200809L
#include "pngout.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#ifdef CNF_HAVE_PNG
#include <png.h>
#include <setjmp.h>

int cli_png_write(const char *path, const unsigned char *rgb, size_t width, size_t height,
                  char *err, size_t n)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        snprintf(err, n, "cannot create %s: %s", tmp, strerror(errno));
        return -1;
    }
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(&png, &info);
        fclose(f);
        remove(tmp);
        snprintf(err, n, "out of memory writing %s", path);
        return -1;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        fclose(f);
        remove(tmp);
        snprintf(err, n, "libpng failed writing %s", path);
        return -1;
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (size_t y = 0; y < height; y++)
        png_write_row(png, (png_const_bytep)(rgb + y * width * 3));
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    int bad = fflush(f) != 0 || fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        snprintf(err, n, "cannot write %s: %s", path, strerror(errno));
        remove(tmp);
        return -1;
    }
    return 0;
}
#else
int cli_png_write(const char *path, const unsigned char *rgb, size_t width, size_t height,
                  char *err, size_t n)
{
    (void)rgb;
    (void)width;
    (void)height;
    snprintf(err, n, "cannot write %s: this cnf was built without libpng (install libpng-dev "
             "and rebuild)", path);
    return -1;
}
#endif
