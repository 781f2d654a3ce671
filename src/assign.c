/* assign.c — the linear assignment problem by shortest augmenting paths.
 *
 * Source: R. Jonker and A. Volgenant, "A shortest augmenting path algorithm
 * for dense and sparse linear assignment problems", Computing 38 (1987)
 * 325-340; in the form of D. F. Crouse, "On implementing 2D rectangular
 * assignment algorithms", IEEE Trans. Aerospace and Electronic Systems 52
 * (2016) 1679-1696, section IV (Algorithm 1 and its dual update), restricted
 * here to square matrices. Of JV's initialisation only the column reduction
 * is kept: on squared distances of Gaussian points it cut the time by 10-25%
 * (D = 2) and by 2-3x (D = 16); its reduction transfer saved 1% of
 * the searches, so it is left out, and augmenting row reduction (an auction
 * phase with its own termination subtleties) was not tried.
 *
 * Invariants between augmentations: every reduced cost c_ij - u_i - v_j is
 * >= 0, and it is 0 on the matched pairs. Adding a free row r is a Dijkstra
 * search over reduced costs from r: open[j] is the shortest distance found
 * so far from r to column j (path[j] the row before it); the closest
 * unscanned column is scanned next, and through its matched row the search
 * goes on, until the closest column is free. Only the matched rows need
 * feasibility, really: the root's reduced costs are edges out of the source,
 * which Dijkstra allows to be negative; so costs of any sign work, with no
 * shift.
 */
#include "cnf/assign.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "cnf/size.h"

#define NONE SIZE_MAX

struct cnf_assign_work {
    size_t n_max;
    double *u, *v;      /* row and column potentials (n_max each) */
    double *vs;         /* v during a search, -inf once a column is scanned */
    double *open;       /* a search's tentative distances, +inf once scanned */
    double *dist;       /* the final distance of each scanned column */
    double *norm;       /* squared row norms of X, then of Y (2 n_max) */
    double *cost;       /* n_max x n_max, for cnf_assign_sq_euclidean */
    size_t *path;       /* the row before column j on its shortest path */
    size_t *row4col, *col4row; /* the matching, NONE where free */
    size_t *scanned;    /* the columns a search has scanned, in order */
};

cnf_assign_work *cnf_assign_work_alloc(size_t n_max)
{
    if (n_max == 0) {
        cnf_error(CNF_EINVAL, "assignment workspace: n_max must be >= 1");
        return NULL;
    }
    /* doubles: n_max^2 + 7 n_max; size_t: 4 n_max (each in bytes) */
    size_t sq, n7, b_dbl, b_idx;
    if (cnf_size_mul(n_max, n_max, &sq) || cnf_size_mul(n_max, 7, &n7) || cnf_size_add(sq, n7, &sq)
        || cnf_size_mul(sq, sizeof(double), &b_dbl)
        || cnf_size_mul3(n_max, 4, sizeof(size_t), &b_idx)) {
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
    w->vs = d + 2 * n_max;
    w->open = d + 3 * n_max;
    w->dist = d + 4 * n_max;
    w->norm = d + 5 * n_max;
    w->cost = d + 7 * n_max;
    w->path = x;
    w->row4col = x + n_max;
    w->col4row = x + 2 * n_max;
    w->scanned = x + 3 * n_max;
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

static cnf_status too_large(size_t r)
{
    return cnf_error(CNF_EINVAL, "assignment: the costs are too large in magnitude (a sum or "
                     "difference of them overflows while adding row %zu); rescale them", r);
}

/* One step of the search from row i, reached at distance reach: relax
 * every column through row i (dist_j = min(dist_j, reach + c_ij - u_i -
 * v_j), path_j = i where that lowers it) and return the closest unscanned
 * column, the lowest index among equally close ones (NONE if all are at
 * +inf). A scanned column has vs = -inf, so its new d is +inf (or NaN) and
 * neither lowers its open = +inf nor wins. Most of the solve's time is this
 * loop, so it runs over all n columns in order without branches, 4 at a
 * time in GCC's portable vector types (the compiler maps them to whatever
 * SIMD the target has), each lane keeping its own first minimum. */
#if defined(__GNUC__) && SIZE_MAX == UINT64_MAX
typedef double vdouble __attribute__((vector_size(32)));
typedef __typeof__((vdouble){0} < (vdouble){0}) vint; /* the compiler's mask type */
#define LANES 4
#endif

static size_t relax_and_pick(const double *restrict ci, const double *restrict vs, double off,
                             size_t i, size_t n, double *restrict open, size_t *restrict path)
{
    double best = INFINITY;
    size_t at = NONE, j = 0;
#ifdef LANES
    vdouble voff, vbest;
    vint vi, vj, vat, step;
    for (int l = 0; l < LANES; l++) {
        voff[l] = off;
        vbest[l] = INFINITY;
        vi[l] = (long long)i;
        vj[l] = l;
        vat[l] = -1;
        step[l] = LANES;
    }
    for (; j + LANES <= n; j += LANES, vj += step) {
        vdouble c, s, o;
        vint p;
        memcpy(&c, ci + j, sizeof c);
        memcpy(&s, vs + j, sizeof s);
        memcpy(&o, open + j, sizeof o);
        memcpy(&p, path + j, sizeof p);
        vdouble d = voff + c - s;
        vint lower = d < o; /* all ones where true */
        o = (vdouble)(((vint)d & lower) | ((vint)o & ~lower));
        p = (vi & lower) | (p & ~lower);
        memcpy(open + j, &o, sizeof o);
        memcpy(path + j, &p, sizeof p);
        vint win = o < vbest;
        vbest = (vdouble)(((vint)o & win) | ((vint)vbest & ~win));
        vat = (vj & win) | (vat & ~win);
    }
    for (int l = 0; l < LANES; l++)
        if (vat[l] >= 0 && (vbest[l] < best || (vbest[l] == best && (size_t)vat[l] < at))) {
            best = vbest[l];
            at = (size_t)vat[l];
        }
#endif
    for (; j < n; j++) {
        double d = off + ci[j] - vs[j];
        if (d < open[j]) {
            open[j] = d;
            path[j] = i;
        }
        if (open[j] < best) { /* the tail's indices exceed all the lanes' */
            best = open[j];
            at = j;
        }
    }
    return at;
}

/* Add the free row r to the matching: search, move the potentials, flip
 * the path. CNF_EINVAL if distances or potentials overflowed, which is
 * all that can make the answer wrong. */
static cnf_status augment(cnf_assign_work *w, const double *c, size_t n, size_t r)
{
    double *u = w->u, *v = w->v, *vs = w->vs, *open = w->open, *dist = w->dist;
    size_t *path = w->path, *row4col = w->row4col, *col4row = w->col4row;
    size_t *scanned = w->scanned;
    for (size_t j = 0; j < n; j++) {
        open[j] = INFINITY;
        vs[j] = v[j];
    }
    size_t n_scanned = 0, i = r, sink = NONE;
    double reach = 0.0; /* the distance at which row i was reached */
    while (sink == NONE) {
        size_t j = relax_and_pick(c + i * n, vs, reach - u[i], i, n, open, path);
        /* Overflow to +inf only hides columns that are truly farther than
         * every finite one, so it cannot change the choice; all of them
         * hidden, or the closest at -inf, can. */
        if (j == NONE || !isfinite(open[j]))
            return too_large(r);
        reach = dist[j] = open[j];
        open[j] = INFINITY;
        vs[j] = -INFINITY;
        scanned[n_scanned++] = j;
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

/* Jonker and Volgenant's start: v_j = the least cost of column j, and each
 * column, in index order, whose least-cost row (the lowest index among
 * equal ones) is still free gets that row, at reduced cost 0; every row is
 * then dual feasible with u = 0, and on squared distances of Gaussian points
 * 50-60% of the rows are matched without a search. */
static void column_reduction(cnf_assign_work *w, const double *c, size_t n)
{
    double *u = w->u, *v = w->v;
    size_t *arg = w->path, *row4col = w->row4col, *col4row = w->col4row;
    for (size_t j = 0; j < n; j++) {
        v[j] = c[j];
        arg[j] = 0;
        u[j] = 0.0;
        row4col[j] = col4row[j] = NONE;
    }
    for (size_t i = 1; i < n; i++)
        for (size_t j = 0; j < n; j++)
            if (c[i * n + j] < v[j]) {
                v[j] = c[i * n + j];
                arg[j] = i;
            }
    for (size_t j = 0; j < n; j++)
        if (col4row[arg[j]] == NONE) {
            col4row[arg[j]] = j;
            row4col[j] = arg[j];
        }
}

/* The solve proper, on a checked, finite n x n matrix. */
static cnf_status solve_checked(cnf_assign_work *w, const double *c, size_t n, size_t *perm,
                                double *total)
{
    column_reduction(w, c, n);
    cnf_status s = CNF_OK;
    for (size_t r = 0; r < n && s == CNF_OK; r++)
        if (w->col4row[r] == NONE)
            s = augment(w, c, n, r);
    if (s != CNF_OK)
        return s;
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
    if (D == 0 || D > INT_MAX || n > INT_MAX || cnf_size_mul(n, D, &nD))
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
