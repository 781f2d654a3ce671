/* net_act.h — private: the network's activations with their first and second
 * derivatives, written so that GCC vectorises the loops that call them.
 *
 * Why not libm: tanh/exp from libm are scalar calls (~10-20 ns each); a
 * 64-wide hidden layer of a B = 1000 batch evaluates 64 000 of them per layer,
 * which would cost several times the layer's dgemm. These kernels are
 * branch-free (selects become blends) and call nothing, so each loop runs in
 * SIMD. Accuracy is within a few ulp of libm.
 *
 * exp (arguments <= 0 only): Cody-Waite range reduction x = n ln2 + r,
 * |r| <= ln2/2, with ln2 split in a high part exact in 32 bits and a low part
 * (Muller, "Elementary Functions", 3rd ed., ch. 11); e^r - 1 = r p(r) with p
 * a degree-10 Chebyshev fit (as accurate as Taylor to r^13 with two fewer
 * terms); 2^n built in the exponent bits. Keeping e^r - 1 rather than e^r
 * gives expm1 for free, which the tanh, sigmoid and elu formulas below use
 * to avoid cancellation.
 *
 * Derivatives (a = sigma(x), s = logistic(x), E = e^{-|x|}):
 *   tanh:     a' = 1 - a^2 = 4e/(1+e)^2 with e = e^{-2|x|}, a'' = -2 a a'
 *   softplus: a = log1p(E) + max(x, 0), a' = s, a'' = s(1-s) = E/(1+E)^2
 *   elu:      x > 0: (x, 1, 0); x <= 0: (e^x - 1, e^x, e^x)
 *   swish:    a = x s, a' = s + x s(1-s), a'' = s(1-s)(2 + x(1-2s))
 */
#ifndef CNF_NET_ACT_H
#define CNF_NET_ACT_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* A fused multiply-add where the hardware has one; elsewhere libm's fma is a
 * slow exact emulation, and the plain expression is accurate enough here
 * (ln2_hi has 32 bits, so n * ln2_hi is exact anyway). */
#if defined(__FMA__) || defined(FP_FAST_FMA)
#define CNF_FMA(a, b, c) fma((a), (b), (c))
#else
#define CNF_FMA(a, b, c) ((a) * (b) + (c))
#endif

/* e^x = scale * (q + 1) with q = e^r - 1; see the header comment. Only for
 * x <= 0 (every use below): x is clamped at -708, where e^-708 ~ 3e-308
 * stands in for smaller results without changing any value or derivative
 * that matters. NaN propagates through q. */
static inline void cnf_act_exp_parts(double x, double *scale, double *q)
{
    const double log2e = 1.4426950408889634074;
    const double ln2_hi = 6.93147180369123816490e-01; /* 32 significant bits */
    const double ln2_lo = 1.90821492927058770002e-10;
    x = x < -708.0 ? -708.0 : x;
    double n = rint(x * log2e);
    n = (n == n) ? n : 0.0;   /* keep the integer conversion defined for NaN */
    double r = CNF_FMA(-n, ln2_hi, x);
    r = CNF_FMA(-n, ln2_lo, r);
    /* (e^r - 1)/r on |r| <= ln2/2: Chebyshev fit of degree 10 (mpmath
     * chebyfit), 2.4e-17 relative with these double coefficients. */
    double p = 2.510520637395701e-08;
    p = CNF_FMA(p, r, 2.7626357241447223e-07);
    p = CNF_FMA(p, r, 2.7557255425746435e-06);
    p = CNF_FMA(p, r, 2.4801504346997686e-05);
    p = CNF_FMA(p, r, 1.9841269874800493e-04);
    p = CNF_FMA(p, r, 1.3888888932488599e-03);
    p = CNF_FMA(p, r, 8.333333333326141e-03);
    p = CNF_FMA(p, r, 4.166666666657314e-02);
    p = CNF_FMA(p, r, 1.666666666666667e-01);
    p = CNF_FMA(p, r, 5.000000000000006e-01);
    p = CNF_FMA(p, r, 1.0);
    *q = p * r;
    int64_t bits = ((int64_t)n + 1023) << 52;
    memcpy(scale, &bits, sizeof *scale);
}

static inline double cnf_act_exp(double x)
{
    double s, q;
    cnf_act_exp_parts(x, &s, &q);
    return CNF_FMA(s, q, s);
}

static inline double cnf_act_expm1(double x)
{
    double s, q;
    cnf_act_exp_parts(x, &s, &q);
    return CNF_FMA(s, q, s - 1.0);
}

/* e^x and e^x - 1, each to full relative precision (em + 1 would lose
 * e's digits for x << 0, e - 1 would lose em's near 0). */
static inline void cnf_act_exp_both(double x, double *e, double *em)
{
    double s, q;
    cnf_act_exp_parts(x, &s, &q);
    *e = CNF_FMA(s, q, s);
    *em = CNF_FMA(s, q, s - 1.0);
}

static inline void cnf_act_tanh(double x, double *a, double *d1, double *d2)
{
    double ax = fabs(x);
    double e, em;                            /* e^{-2|x|}, e^{-2|x|} - 1 in (-1, 0] */
    cnf_act_exp_both(-2.0 * ax, &e, &em);
    double inv = 1.0 / (2.0 + em);           /* 1 / (1 + e) */
    double t = -em * inv;                    /* tanh|x| */
    t = x < 0.0 ? -t : t;
    double dt = 4.0 * e * inv * inv;         /* 1 - tanh^2 without cancellation */
    *a = t;
    *d1 = dt;
    *d2 = -2.0 * t * dt;
}

/* logistic(x), and s(1-s) without cancellation. */
static inline void cnf_act_sigmoid(double x, double *s, double *ds)
{
    double e = cnf_act_exp(-fabs(x));
    double inv = 1.0 / (1.0 + e);
    *s = x >= 0.0 ? inv : e * inv;
    *ds = e * inv * inv;
}

static inline double cnf_act_logistic(double x)
{
    double s, ds;
    cnf_act_sigmoid(x, &s, &ds);
    return s;
}

/* Softplus derivatives and e^{-|x|}; the value itself needs log1p, which
 * the caller evaluates in a separate (scalar) pass. */
static inline void cnf_act_softplus_d(double x, double *e_out, double *d1, double *d2)
{
    double e = cnf_act_exp(-fabs(x));
    double inv = 1.0 / (1.0 + e);
    *e_out = e;
    *d1 = x >= 0.0 ? inv : e * inv;
    *d2 = e * inv * inv;
}

static inline void cnf_act_elu(double x, double *a, double *d1, double *d2)
{
    double e, em;
    cnf_act_exp_both(x > 0.0 ? 0.0 : x, &e, &em);
    *a = x > 0.0 ? x : em;
    *d1 = x > 0.0 ? 1.0 : e;
    *d2 = x > 0.0 ? 0.0 : e;
}

static inline void cnf_act_swish(double x, double *a, double *d1, double *d2)
{
    double e, em;                            /* e^{-|x|}, e^{-|x|} - 1 */
    cnf_act_exp_both(-fabs(x), &e, &em);
    double inv = 1.0 / (2.0 + em);           /* 1 / (1 + e) */
    double s = x >= 0.0 ? inv : e * inv;
    double s1 = e * inv * inv;               /* s(1-s) */
    double m = -em * inv;                    /* tanh(|x|/2) = |1 - 2s| */
    m = x >= 0.0 ? -m : m;                   /* 1 - 2s */
    *a = x * s;
    *d1 = CNF_FMA(x, s1, s);
    *d2 = s1 * CNF_FMA(x, m, 2.0);
}

#endif
