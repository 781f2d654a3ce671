/* finite.h — the one finiteness scan of libcnf (private). Modules that
 * refuse NaN and Inf find the offending entry here and word their own
 * message (which entry of what, and why it matters there). */
#ifndef CNF_FINITE_H
#define CNF_FINITE_H

#include <math.h>
#include <stddef.h>

/* The index of the first entry of x[0 .. n) that is NaN or +-Inf; n if
 * every entry is finite. */
static inline size_t cnf_first_nonfinite(const double *x, size_t n)
{
    size_t i = 0;
    while (i < n && isfinite(x[i]))
        i++;
    return i;
}

#endif /* CNF_FINITE_H */
