/* cnf/assign.h — exact linear assignment, for minibatch optimal-transport
 * pairing.
 *
 * Given an n x n cost matrix c (row-major, finite), find the permutation
 * perm of 0..n-1 that minimises
 *
 *     sum_i c[i][perm[i]],
 *
 * perm[i] being the column given to row i. Minibatch OT flow matching
 * (Tong et al. 2023; Pooladian et al. 2023) pairs the B data rows of a batch
 * with B Gaussian noise draws this way, with c the squared Euclidean
 * distance: the straighter pairing shortens the paths the flow must learn.
 * cnf_assign_sq_euclidean builds that matrix and solves in one call.
 *
 * Method: the shortest augmenting path algorithm of Jonker and Volgenant
 * (1987), in the dense form Crouse (2016) describes. Row potentials u and
 * column potentials v keep every reduced cost c_ij - u_i - v_j >= 0. JV's
 * column reduction starts them (v_j = the least entry of column j, each
 * column matched to its least-cost row while that row is free: half or more
 * of the rows on squared distances of Gaussian points); each row still free
 * is then added by a Dijkstra search over reduced costs from it to a free
 * column, the potentials are moved by the search's distances and the path
 * is flipped.
 * At most n searches of O(n) scans of O(n): O(n^3) in the worst case,
 * exact (not an entropic or greedy approximation), and at the end
 * u_i + v_j <= c_ij for all i, j with equality on the chosen pairs, the
 * linear-programming certificate that no other permutation costs less.
 *
 * Ties: every choice among equals goes to the lowest index (the least-cost
 * row of a column, the closest column of a search), and the rows left free
 * by the reduction are added in index order. So the result is a function of
 * the cost matrix alone, the same on every run and machine (given the same
 * floating-point arithmetic); a matrix of equal entries gives the identity.
 *
 * Typical call (one workspace for the run, sized for the largest batch):
 *
 *     cnf_assign_work *w = cnf_assign_work_alloc(B);
 *     ...
 *     size_t perm[B];
 *     cnf_status rc = cnf_assign_sq_euclidean(w, X, Z, B, D, perm, NULL);
 *     // pair row i of X with row perm[i] of Z
 *     ...
 *     cnf_assign_work_free(w);
 *
 * Cost (bench_assign, squared distances of N(0, I) points, one core of a
 * 2-core EPYC, median): B = 128 in 0.10 ms (D = 16) to 0.16 ms (D = 2),
 * B = 1000 in 10 ms (D = 16) to 20 ms (D = 2); growth is about n^2.2 to
 * n^2.4, well below the worst case.
 *
 * A workspace holds every buffer (allocated once), so a solve never
 * allocates. It is not thread-safe; use one per thread.
 */
#ifndef CNF_ASSIGN_H
#define CNF_ASSIGN_H

#include <stddef.h>

#include "cnf/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Workspace for square problems of size n <= n_max, including an
 * n_max x n_max cost buffer for cnf_assign_sq_euclidean (8 n_max^2 bytes:
 * 8 MB at n_max = 1000). */
typedef struct cnf_assign_work cnf_assign_work;

/* NULL on failure, with a message (cnf_last_error): n_max = 0, a size that
 * overflows size_t, or out of memory. */
cnf_assign_work *cnf_assign_work_alloc(size_t n_max);
void cnf_assign_work_free(cnf_assign_work *w);   /* NULL is fine */

/* Minimise sum_i cost[i * n + perm[i]] over permutations perm. cost is
 * n x n row-major and every entry must be finite; it is only read. perm (n)
 * gets the column of each row; total (may be NULL) the optimal cost, summed
 * over rows in index order from the chosen entries (so it equals the
 * caller's own sum exactly).
 * CNF_EINVAL, with a message, for n = 0, n > n_max, a NULL argument, a
 * non-finite entry (the message names its row and column), or entries so
 * large that sums or differences of them overflow (|cost| near DBL_MAX):
 * the solve checks for that rather than answer wrongly. perm is left
 * unspecified on failure. */
cnf_status cnf_assign_solve(cnf_assign_work *w, const double *cost, size_t n, size_t *perm,
                            double *total);

/* The same with cost[i][j] = ||X_i - Y_j||^2 for the rows of X (n x D) and
 * Y (n x D), built in w's own buffer as ||X_i||^2 + ||Y_j||^2 - 2 X_i.Y_j
 * (one cblas_dgemm). That form loses about eps (||X_i||^2 + ||Y_j||^2) to
 * cancellation, which is nothing for standardised data against N(0, I)
 * noise but means points far from the origin relative to their distances
 * should be centred first; entries that round below 0 are set to 0.
 * CNF_EINVAL as above, and for D = 0, n or D beyond BLAS's int, n * D
 * overflowing, or a non-finite entry of X or Y (named). */
cnf_status cnf_assign_sq_euclidean(cnf_assign_work *w, const double *X, const double *Y,
                                   size_t n, size_t D, size_t *perm, double *total);

#ifdef __cplusplus
}
#endif

#endif /* CNF_ASSIGN_H */
