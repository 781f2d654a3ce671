/* pngout.c — an RGB image to a PNG file through libpng (the Debian package
 * libpng-dev; CNF_HAVE_PNG when CMake found it), written through
 * cnf_file_out (cnf/file.h): a temporary file renamed over the target, so a
 * failure never leaves a partial file. */
#include "pngout.h"

#include <stdio.h>
#include <string.h>

#include "cnf/file.h"

#ifdef CNF_HAVE_PNG
#include <png.h>
#include <setjmp.h>

static void write_bytes(png_structp png, png_bytep data, png_size_t n)
{
    if (cnf_file_out_write(png_get_io_ptr(png), data, n) != CNF_OK)
        png_error(png, "write failed");   /* the reason is in cnf_last_error() */
}

static void flush_nothing(png_structp png)
{
    (void)png;   /* the commit flushes */
}

/* libpng's default handler prints its message; keep it for ours instead. */
static void on_png_error(png_structp png, png_const_charp msg)
{
    snprintf(png_get_error_ptr(png), 256, "%s", msg);
    png_longjmp(png, 1);
}

static void on_png_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

int cli_png_write(const char *path, const unsigned char *rgb, size_t width, size_t height,
                  char *err, size_t n)
{
    cnf_file_out *out = cnf_file_out_open(path);
    if (!out) {
        snprintf(err, n, "%s", cnf_last_error());
        return -1;
    }
    /* static, not automatic: it is written between setjmp and longjmp */
    static char png_msg[256];
    png_msg[0] = '\0';
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, png_msg, on_png_error,
                                              on_png_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(&png, &info);
        cnf_file_out_abort(out);
        snprintf(err, n, "out of memory writing %s", path);
        return -1;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        /* a failed write has the reason in cnf_last_error(), libpng's own
         * failures in png_msg */
        if (cnf_last_error()[0])
            snprintf(err, n, "%s", cnf_last_error());
        else
            snprintf(err, n, "libpng failed writing %s: %s", path, png_msg);
        cnf_file_out_abort(out);
        return -1;
    }
    cnf_clear_error();
    png_set_write_fn(png, out, write_bytes, flush_nothing);
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (size_t y = 0; y < height; y++)
        png_write_row(png, (png_const_bytep)(rgb + y * width * 3));
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    if (cnf_file_out_commit(out) != CNF_OK) {
        snprintf(err, n, "%s", cnf_last_error());
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
