/* cnf/size.h — overflow-checked sizes.
 *
 * Every buffer size in libcnf and the `cnf` command is a product of counts
 * that come from outside (rows N and dimension D of a file, --n, --batch,
 * hidden widths); an unchecked product that wraps around allocates a small
 * buffer that is then written far past its end. Each such product goes
 * through cnf_size_mul (or cnf_size_mul3 / cnf_size_add), which reports the
 * wrap-around instead of returning it.
 *
 * Return value: 0 when the exact result fits in size_t (stored in *out),
 * 1 when it does not (*out is then SIZE_MAX, which no allocation can
 * satisfy, so a caller that ignores the flag still fails safely).
 *
 * Typical call (N x D doubles):
 *
 *     size_t bytes;
 *     if (cnf_size_mul3(N, D, sizeof(double), &bytes))
 *         return cnf_error(CNF_ENOMEM, "%zu x %zu values do not fit in memory", N, D);
 *     double *X = malloc(bytes);
 */
#ifndef CNF_SIZE_H
#define CNF_SIZE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

static inline int cnf_size_mul(size_t a, size_t b, size_t *out)
{
    if (b != 0 && a > SIZE_MAX / b) {
        *out = SIZE_MAX;
        return 1;
    }
    *out = a * b;
    return 0;
}

static inline int cnf_size_add(size_t a, size_t b, size_t *out)
{
    if (a > SIZE_MAX - b) {
        *out = SIZE_MAX;
        return 1;
    }
    *out = a + b;
    return 0;
}

static inline int cnf_size_mul3(size_t a, size_t b, size_t c, size_t *out)
{
    size_t ab;
    if (cnf_size_mul(a, b, &ab)) {
        *out = SIZE_MAX;
        return 1;
    }
    return cnf_size_mul(ab, c, out);
}

#ifdef __cplusplus
}
#endif

#endif /* CNF_SIZE_H */
