/* assign.c — the linear assignment problem by shortest augmenting paths.
 *
 * Source: R. Jonker and A. Volgenant, "A shortest augmenting path algorithm
 * for dense and sparse linear assignment problems", Computing 38 (1987)
 * 325-340; in the form of D. F. Crouse, "On implementing 2D rectangular
 * assignment algorithms", IEEE Trans. Aerospace and Electronic Systems 52
 * (2016) 1679-1696, section IV (Algorithm 1 and its dual update), restricted
 * here to square matrices and without JV's initialisation heuristics (column
 * reduction, augmenting row reduction), which save time on some cost
 * structures but are a second algorithm to get right; a measurement that
 * shows them paying would be the reason to add them.
 *
 * Invariants between augmentations: the rows 0..r-1 are matched, every
 * reduced cost c_ij - u_i - v_j of a matched row is >= 0, and it is 0 on the
 * matched pairs. Adding row r is a Dijkstra search over reduced costs from r:
 * dist[j] is the shortest distance found so far from r to column j (path[j]
 * the row before it); the closest unscanned column is scanned next, and
 * through its matched row the search goes on, until the closest column is
 * free. Rows not yet added have u_i = 0 and are never read, so the root row's
 * reduced costs may be negative (they are edges out of the source, which
 * Dijkstra allows): costs of any sign work, with no shift.
 */
#include "cnf/assign.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include <cblas.h>

#define NONE SIZE_MAX

struct cnf_assign_work {
    size_t n_max;
    double *u, *v;      /* row and column potentials (n_max each) */
    double *dist;       /* this search's distance to each column (n_max) */
    double *norm;       /* squared row norms of X, then of Y (2 n_max) */
    double *cost;       /* n_max x n_max, for cnf_assign_sq_euclidean */
    size_t *path;       /* the row before column j on its shortest path */
    size_t *row4col, *col4row; /* the matching, NONE where free */
    size_t *todo;       /* columns this search has not scanned, unordered */
    size_t *scanned;    /* columns it has, in order */
};

/* a * b into *out; 0 when it overflows size_t. */
static int mul_size(size_t a, size_t b, size_t *out)
{
    if (a && b > SIZE_MAX / a)
        return 0;
    *out = a * b;
    return 1;
}

cnf_assign_work *cnf_assign_work_alloc(size_t n_max)
{
    if (n_max == 0) {
        cnf_error(CNF_EINVAL, "assignment workspace: n_max must be >= 1");
        return NULL;
    }
    /* doubles: n_max^2 + 5 n_max; size_t: 5 n_max (each in bytes) */
    size_t sq, b_dbl, b_idx;
    if (n_max > SIZE_MAX / 5 || !mul_size(n_max, n_max, &sq) || sq > SIZE_MAX - 5 * n_max
        || !mul_size(sq + 5 * n_max, sizeof(double), &b_dbl)
        || !mul_size(5 * n_max, sizeof(size_t), &b_idx)) {
        cnf_error(CNF_EINVAL, "assignment workspace: n_max = %zu overflows the size of its buffers",
                  n_max);
        return NULL;
    }
    cnf_assign_work *w = calloc(1, sizeof *w);
    double *d = w ? malloc(b_dbl) : NULL;
    size_t *x = d ? malloc(b_idx) : NULL;
    if (!x) {
        free(d);
        free(w);
        cnf_error(CNF_ENOMEM, "assignment workspace: cannot allocate %zu + %zu bytes for n_max = %zu",
                  b_dbl, b_idx, n_max);
        return NULL;
    }
    w->n_max = n_max;
    w->u = d;
    w->v = d + n_max;
    w->dist = d + 2 * n_max;
    w->norm = d + 3 * n_max;
    w->cost = d + 5 * n_max;
    w->path = x;
    w->row4col = x + n_max;
    w->col4row = x + 2 * n_max;
    w->todo = x + 3 * n_max;
    w->scanned = x + 4 * n_max;
    return w;
}

void cnf_assign_work_free(cnf_assign_work *w)
{
    if (!w)
        return;
    free(w->u);
    free(w->path);
    free(w);
}

/* Among columns at equal distance, is j to be scanned before b? A free one
 * first (it ends the search), then the lower index: the order of todo is
 * scrambled by removals, so the index is compared, not the position. */
static int tie_before(size_t j, size_t b, const size_t *row4col)
{
    int fj = row4col[j] == NONE, fb = row4col[b] == NONE;
    return fj != fb ? fj : j < b;
}

static cnf_status too_large(size_t r)
{
    return cnf_error(CNF_EINVAL, "assignment: the costs are too large in magnitude (a sum or "
                     "difference of them overflows while adding row %zu); rescale them", r);
}

/* Add row r to the matching of rows 0..r-1: search, move the potentials,
 * flip the path. CNF_EINVAL if distances or potentials overflowed, which is
 * all that can make the answer wrong. */
static cnf_status augment(cnf_assign_work *w, const double *c, size_t n, size_t r)
{
    double *u = w->u, *v = w->v, *dist = w->dist;
    size_t *path = w->path, *row4col = w->row4col, *col4row = w->col4row;
    size_t *todo = w->todo, *scanned = w->scanned;
    for (size_t j = 0; j < n; j++) {
        dist[j] = INFINITY;
        todo[j] = j;
    }
    size_t n_todo = n, n_scanned = 0, i = r, sink = NONE;
    double reach = 0.0; /* the distance at which row i was reached */
    while (sink == NONE) {
        const double *ci = c + i * n;
        const double off = reach - u[i];
        double best = INFINITY;
        size_t at = NONE;
        for (size_t k = 0; k < n_todo; k++) {
            size_t j = todo[k];
            double d = off + ci[j] - v[j];
            if (d < dist[j]) {
                dist[j] = d;
                path[j] = i;
            }
            d = dist[j];
            if (d < best || (d == best && at != NONE && tie_before(j, todo[at], row4col))) {
                best = d;
                at = k;
            }
        }
        /* Overflow to +inf only hides columns that are truly farther than
         * every finite one, so it cannot change the choice; all of them
         * hidden, or the closest at -inf, can. */
        if (at == NONE || !isfinite(best))
            return too_large(r);
        size_t j = todo[at];
        todo[at] = todo[--n_todo];
        scanned[n_scanned++] = j;
        reach = best;
        if (row4col[j] == NONE)
            sink = j;
        else
            i = row4col[j];
    }
    /* Potentials: each scanned column, and the row matched to it, moves by
     * how much closer it was than the sink, which keeps reduced costs >= 0
     * and makes them 0 along the path (the sink's own shift is 0). */
    u[r] += reach;
    int finite = isfinite(u[r]);
    for (size_t k = 0; k < n_scanned; k++) {
        size_t j = scanned[k];
        double delta = reach - dist[j];
        v[j] -= delta;
        finite &= isfinite(v[j]);
        if (row4col[j] != NONE) {
            u[row4col[j]] += delta;
            finite &= isfinite(u[row4col[j]]);
        }
    }
    if (!finite)
        return too_large(r);
    /* Flip the path: each row on it takes the column after it. */
    for (size_t j = sink;;) {
        size_t p = path[j], prev = col4row[p];
        row4col[j] = p;
        col4row[p] = j;
        if (p == r)
            break;
        j = prev;
    }
    return CNF_OK;
}

/* The solve proper, on a checked, finite n x n matrix. */
static cnf_status solve_checked(cnf_assign_work *w, const double *c, size_t n, size_t *perm,
                                double *total)
{
    for (size_t j = 0; j < n; j++) {
        w->u[j] = w->v[j] = 0.0;
        w->row4col[j] = w->col4row[j] = NONE;
    }
    for (size_t r = 0; r < n; r++) {
        cnf_status s = augment(w, c, n, r);
        if (s != CNF_OK)
            return s;
    }
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) {
        perm[i] = w->col4row[i];
        sum += c[i * n + perm[i]];
    }
    if (!isfinite(sum))
        return cnf_error(CNF_EINVAL, "assignment: the optimal total overflows (the costs are too "
                         "large in magnitude); rescale them");
    if (total)
        *total = sum;
    return CNF_OK;
}

/* The checks both entry points share: arguments present, 1 <= n <= n_max. */
static cnf_status check_args(const char *fn, const cnf_assign_work *w, const void *a,
                             const void *b, size_t n, const size_t *perm)
{
    if (!w || !a || !b || !perm)
        return cnf_error(CNF_EINVAL, "%s: NULL argument", fn);
    if (n == 0 || n > w->n_max)
        return cnf_error(CNF_EINVAL, "%s: n = %zu is outside 1..%zu (the workspace's n_max)", fn, n,
                         w->n_max);
    return CNF_OK;
}

cnf_status cnf_assign_solve(cnf_assign_work *w, const double *cost, size_t n, size_t *perm,
                            double *total)
{
    cnf_status s = check_args("cnf_assign_solve", w, cost, cost, n, perm);
    if (s != CNF_OK)
        return s;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++)
            if (!isfinite(cost[i * n + j]))
                return cnf_error(CNF_EINVAL, "cnf_assign_solve: cost[%zu][%zu] = %g is not finite",
                                 i, j, cost[i * n + j]);
    return solve_checked(w, cost, n, perm, total);
}

/* Squared norms of the n rows of A (n x D) into out; CNF_EINVAL naming the
 * first non-finite entry (before any arithmetic hides it in a sum). */
static cnf_status row_norms(const char *name, const double *A, size_t n, size_t D, double *out)
{
    for (size_t i = 0; i < n; i++) {
        const double *a = A + i * D;
        double s = 0.0;
        for (size_t k = 0; k < D; k++) {
            if (!isfinite(a[k]))
                return cnf_error(CNF_EINVAL, "cnf_assign_sq_euclidean: %s[%zu][%zu] = %g is not finite",
                                 name, i, k, a[k]);
            s += a[k] * a[k];
        }
        out[i] = s;
    }
    return CNF_OK;
}

cnf_status cnf_assign_sq_euclidean(cnf_assign_work *w, const double *X, const double *Y,
                                   size_t n, size_t D, size_t *perm, double *total)
{
    const char *fn = "cnf_assign_sq_euclidean";
    cnf_status s = check_args(fn, w, X, Y, n, perm);
    if (s != CNF_OK)
        return s;
    size_t nD;
    if (D == 0 || D > INT_MAX || n > INT_MAX || !mul_size(n, D, &nD))
        return cnf_error(CNF_EINVAL, "%s: D = %zu with n = %zu (need 1 <= D, n, D <= INT_MAX and "
                         "n * D within size_t)", fn, D, n);
    double *nx = w->norm, *ny = w->norm + n, *C = w->cost;
    if ((s = row_norms("X", X, n, D, nx)) != CNF_OK || (s = row_norms("Y", Y, n, D, ny)) != CNF_OK)
        return s;
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)n, (int)D, -2.0, X, (int)D,
                Y, (int)D, 0.0, C, (int)n);
    for (size_t i = 0; i < n; i++) {
        double *ci = C + i * n;
        for (size_t j = 0; j < n; j++) {
            double d = ci[j] + nx[i] + ny[j];
            if (!isfinite(d))
                return cnf_error(CNF_EINVAL, "%s: the squared distance of X row %zu and Y row %zu "
                                 "overflows", fn, i, j);
            ci[j] = d < 0.0 ? 0.0 : d; /* cancellation's rounding, not a distance */
        }
    }
    return solve_checked(w, C, n, perm, total);
}
