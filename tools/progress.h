/* progress.h — the pieces of cnf train's progress line that do not touch
 * the terminal's state: an estimate of the time left from the recent rate
 * (iterations grow slower as a flow trains, so the mean rate since the
 * start promised too little: 0:36 at iteration 100 when 2:06 remained),
 * fitting fields into the terminal's width (a line longer than the
 * terminal wraps, and each \r rewrite then scrolls), and that width. */
#ifndef CNF_TOOLS_PROGRESS_H
#define CNF_TOOLS_PROGRESS_H

#include <stddef.h>

/* The last PROGRESS_WINDOW iterations' ends. */
#define PROGRESS_WINDOW 64

typedef struct {
    size_t it[PROGRESS_WINDOW];
    double t[PROGRESS_WINDOW];
    size_t n, head;   /* entries held; index of the next write */
} progress_rate;

void progress_rate_init(progress_rate *r);
/* An iteration ended at `elapsed` seconds. */
void progress_rate_add(progress_rate *r, size_t iteration, double elapsed);
/* Seconds for `remaining` more iterations at the rate of the window; NaN
 * before two iterations have been seen. */
double progress_rate_eta(const progress_rate *r, size_t remaining);

/* Join fields with two spaces into buf, leaving out fields of the highest
 * `drop` rank first (rank 0 is never left out) until the line has fewer
 * than width characters; a line still too long is cut. Returns its
 * length. */
size_t progress_fit(const char *const *fields, const int *rank, size_t n, size_t width,
                    char *buf, size_t cap);

/* Columns of the terminal on fd; else $COLUMNS; else 80. */
size_t progress_terminal_width(int fd);

#endif /* CNF_TOOLS_PROGRESS_H */
