/* curve.h — the training curves of cnf train --curve: what each iteration
 * and validation reported, kept in memory during the run and drawn at its
 * end as one PNG of four panels against the iteration: the training loss,
 * the validation NLL (or flow matching's validation loss), the function
 * evaluations of the forward and backward solves, and seconds per
 * iteration. */
#ifndef CNF_TOOLS_CURVE_H
#define CNF_TOOLS_CURVE_H

#include <stddef.h>

typedef struct {
    size_t n, cap;
    double *iter, *loss, *nfe_f, *nfe_b, *secs;   /* n each */
    size_t nv, vcap;
    double *viter, *vnll, *vloss;                 /* nv each; NaN where not computed */
    double last_elapsed;
} train_curve;

void train_curve_init(train_curve *c);
void train_curve_free(train_curve *c);

/* One iteration: its number, training loss, evaluations, and the elapsed
 * seconds of the run at its end (the difference is its cost). */
void train_curve_add(train_curve *c, size_t iteration, double loss, size_t nfe_f,
                     size_t nfe_b, double elapsed);
/* One validation at an iteration: the NLL and/or the loss (NaN if not
 * computed). */
void train_curve_add_validation(train_curve *c, size_t iteration, double nll, double loss);

/* Draw the curves as a PNG at path (atomically). title: the figure's first
 * line; fm: flow matching (no solves, a validation loss). 0, or -1 with a
 * message in err. */
int train_curve_write(const train_curve *c, const char *path, const char *title, int fm,
                      char *err, size_t n);

#endif /* CNF_TOOLS_CURVE_H */
