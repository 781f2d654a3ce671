/* progress.c — progress-line helpers (progress.h). */
#define _POSIX_C_SOURCE 200809L
#include "progress.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

void progress_rate_init(progress_rate *r) { memset(r, 0, sizeof *r); }

void progress_rate_add(progress_rate *r, size_t iteration, double elapsed)
{
    r->it[r->head] = iteration;
    r->t[r->head] = elapsed;
    r->head = (r->head + 1) % PROGRESS_WINDOW;
    if (r->n < PROGRESS_WINDOW)
        r->n++;
}

double progress_rate_eta(const progress_rate *r, size_t remaining)
{
    if (r->n < 2)
        return NAN;
    size_t newest = (r->head + PROGRESS_WINDOW - 1) % PROGRESS_WINDOW;
    size_t oldest = (r->head + PROGRESS_WINDOW - r->n) % PROGRESS_WINDOW;
    double dit = (double)r->it[newest] - (double)r->it[oldest];
    if (!(dit > 0))
        return NAN;
    return (r->t[newest] - r->t[oldest]) / dit * (double)remaining;
}

static size_t joined_length(const char *const *fields, const int *rank, size_t n, int max_rank)
{
    size_t len = 0, k = 0;
    for (size_t i = 0; i < n; i++)
        if (fields[i][0] && rank[i] <= max_rank)
            len += (k++ ? 2 : 0) + strlen(fields[i]);
    return len;
}

size_t progress_fit(const char *const *fields, const int *rank, size_t n, size_t width,
                    char *buf, size_t cap)
{
    int max_rank = 0;
    for (size_t i = 0; i < n; i++)
        max_rank = rank[i] > max_rank ? rank[i] : max_rank;
    /* The cursor stays after the last character: a line of exactly `width`
     * characters would wrap on some terminals. */
    while (max_rank > 0 && joined_length(fields, rank, n, max_rank) >= width)
        max_rank--;
    size_t len = 0, k = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && cap; i++) {
        if (!fields[i][0] || rank[i] > max_rank)
            continue;
        const char *parts[2] = {k++ ? "  " : "", fields[i]};
        for (int j = 0; j < 2; j++)
            for (const char *c = parts[j]; *c && len + 1 < cap; c++)
                buf[len++] = *c;
    }
    if (cap)
        buf[len < cap ? len : cap - 1] = '\0';
    if (width > 1 && len >= width) {
        len = width - 1;
        buf[len] = '\0';
    }
    return len;
}

size_t progress_terminal_width(int fd)
{
    struct winsize ws;
    if (ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        return ws.ws_col;
    const char *c = getenv("COLUMNS");
    long v = c ? strtol(c, NULL, 10) : 0;
    return v > 0 ? (size_t)v : 80;
}
