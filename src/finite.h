/* finite.h — the one finiteness scan of libcnf (private). Modules that
 * refuse NaN and Inf find the offending entry here and word their own
 * message (which entry of what, and why it matters there). */
#ifndef CNF_FINITE_H
#define CNF_FINITE_H

#include <math.h>
#include <stddef.h>

#include "cnf/status.h"

/* The index of the first entry of x[0 .. n) that is NaN or +-Inf; n if
 * every entry is finite. */
static inline size_t cnf_first_nonfinite(const double *x, size_t n)
{
    size_t i = 0;
    while (i < n && isfinite(x[i]))
        i++;
    return i;
}

/* CNF_EDATA naming the first NaN or Inf of the N x D rows X as "NAME: row
 * r, column c is NaN" (counted from 0), CNF_OK when every entry is finite:
 * the message the data reader and training give alike. */
static inline cnf_status cnf_rows_check_finite(const double *X, size_t N, size_t D,
                                               const char *name)
{
    size_t i = cnf_first_nonfinite(X, N * D);
    if (i == N * D)
        return CNF_OK;
    double v = X[i];
    return cnf_error(CNF_EDATA, "%s: row %zu, column %zu is %s (rows and columns counted from 0)",
                     name ? name : "data", i / D, i % D,
                     isnan(v) ? "NaN" : (v > 0 ? "+Inf" : "-Inf"));
}

#endif /* CNF_FINITE_H */
