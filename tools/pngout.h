/* pngout.h — writing an RGB image as a PNG file, atomically (a temporary name
 * in the target's directory, renamed over the target when complete). */
#ifndef CNF_TOOLS_PNGOUT_H
#define CNF_TOOLS_PNGOUT_H

#include <stddef.h>

/* rgb: height x width x 3 bytes, row-major, top row first. 0 on success;
 * -1 with a message in err (n bytes) otherwise; the target is then
 * untouched. */
int cli_png_write(const char *path, const unsigned char *rgb, size_t width, size_t height,
                  char *err, size_t n);

#endif /* CNF_TOOLS_PNGOUT_H */
