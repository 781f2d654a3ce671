/* net_util.c — the network's names, width expressions, Hutchinson noise and the
 * divergence / regularizer reductions over tangent outputs.
 *
 * Hutchinson's estimator (Hutchinson 1990, "A stochastic estimator of the
 * trace of the influence matrix for Laplacian smoothing splines"):
 * tr(J) = E[eps^T J eps] for any eps with E[eps eps^T] = I; Rademacher noise
 * has the smallest variance, 2 (||J_s||_F^2 - sum_i J_ii^2) against
 * Gaussian's 2 ||J_s||_F^2 (J_s the symmetric part). The regularizers are
 * RNODE's (Finlay et al. 2020, "How to train your neural ODE").
 */
#include "cnf/net.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gsl/gsl_randist.h>

#include "names.h"

/* Widths above this are rejected as typos. */
#define MAX_PARSED_WIDTH 1048576UL

static const char *const layer_names[] = {"concatsquash", "concat", "ignore"};
static const char *const act_names[] = {"tanh", "softplus", "elu", "swish"};
static const char *const div_names[] = {"exact", "gaussian", "rademacher"};

CNF_ENUM_NAMES(cnf_layer_type, cnf_layer_type_name, cnf_layer_type_from_name, "layer type",
               layer_names)
CNF_ENUM_NAMES(cnf_activation, cnf_activation_name, cnf_activation_from_name, "activation",
               act_names)
CNF_ENUM_NAMES(cnf_divergence, cnf_divergence_name, cnf_divergence_from_name, "divergence",
               div_names)

cnf_status cnf_net_config_parse_hidden(cnf_net_config *cfg, const char *widths)
{
    if (!widths)
        return cnf_error(CNF_EINVAL, "hidden widths: NULL string");
    size_t w[CNF_NET_MAX_HIDDEN];
    size_t n = 0;
    const char *p = widths;
    if (*p != '\0') {
        for (;;) {
            size_t pos = (size_t)(p - widths) + 1;
            unsigned long x = 1;
            char *end = (char *)p;
            if (isdigit((unsigned char)*p)) {
                errno = 0;
                x = strtoul(p, &end, 10);
                if (errno == ERANGE || x > MAX_PARSED_WIDTH)
                    return cnf_error(CNF_EINVAL, "hidden widths '%s': width at position %zu is "
                                     "too large (at most %lu)", widths, pos, MAX_PARSED_WIDTH);
            } else if (*p != 'D') {
                return cnf_error(CNF_EINVAL, "hidden widths '%s': expected a positive width "
                                 "at position %zu (format like 64-64-64 or 4D-4D)", widths, pos);
            }
            if (*end == 'D') {
                if (cfg->dim == 0)
                    return cnf_error(CNF_EINVAL, "hidden widths '%s': a width in D needs the "
                                     "data dimension (cfg->dim is 0)", widths);
                if (x > MAX_PARSED_WIDTH / cfg->dim)
                    return cnf_error(CNF_EINVAL, "hidden widths '%s': width at position %zu, "
                                     "%lu x D with D = %zu, is too large (at most %lu)", widths,
                                     pos, x, cfg->dim, MAX_PARSED_WIDTH);
                x *= cfg->dim;
                end++;
            }
            if (x == 0)
                return cnf_error(CNF_EINVAL, "hidden widths '%s': width at position %zu is 0",
                                 widths, pos);
            if (n == CNF_NET_MAX_HIDDEN)
                return cnf_error(CNF_EINVAL, "hidden widths '%s': more than %d hidden layers",
                                 widths, CNF_NET_MAX_HIDDEN);
            w[n++] = (size_t)x;
            p = end;
            if (*p == '\0')
                break;
            if (*p != '-')
                return cnf_error(CNF_EINVAL, "hidden widths '%s': unexpected '%c' at position "
                                 "%zu (format like 64-64-64 or 4D-4D)", widths, *p,
                                 (size_t)(p - widths) + 1);
            p++;
        }
    }
    cfg->n_hidden = n;
    for (size_t i = 0; i < CNF_NET_MAX_HIDDEN; i++)
        cfg->hidden[i] = i < n ? w[i] : 0;
    return CNF_OK;
}

void cnf_net_config_format_hidden(const cnf_net_config *cfg, char *buf, size_t n)
{
    if (!buf || n == 0)
        return;
    buf[0] = '\0';
    size_t used = 0;
    for (size_t i = 0; i < cfg->n_hidden && i < CNF_NET_MAX_HIDDEN; i++) {
        int m = snprintf(buf + used, n - used, i ? "-%zu" : "%zu", cfg->hidden[i]);
        if (m < 0 || (size_t)m >= n - used)
            return;   /* truncated, still terminated */
        used += (size_t)m;
    }
}

void cnf_net_noise_draw(cnf_divergence kind, gsl_rng *rng, size_t n, double *eps)
{
    switch (kind) {
    case CNF_DIV_GAUSSIAN:
        for (size_t i = 0; i < n; i++)
            eps[i] = gsl_ran_gaussian_ziggurat(rng, 1.0);
        break;
    case CNF_DIV_RADEMACHER:
        for (size_t i = 0; i < n; i++)
            eps[i] = gsl_rng_uniform_int(rng, 2) ? 1.0 : -1.0;
        break;
    case CNF_DIV_EXACT:
        break;   /* no noise: eps is left as it is and rng is not advanced */
    }
}

void cnf_net_trace_unit(const double *jv, size_t B, size_t D, double *div)
{
    for (size_t b = 0; b < B; b++) {
        double s = 0.0;
        for (size_t i = 0; i < D; i++)
            s += jv[(i * B + b) * D + i];
        div[b] = s;
    }
}

void cnf_net_trace_hutchinson(const double *eps, const double *jv, size_t B, size_t D,
                              double *div)
{
    for (size_t b = 0; b < B; b++) {
        double s = 0.0;
        for (size_t d = 0; d < D; d++)
            s += eps[b * D + d] * jv[b * D + d];
        div[b] = s;
    }
}

void cnf_net_sq_norm(const double *x, size_t K, size_t B, size_t D, double *out)
{
    for (size_t b = 0; b < B; b++)
        out[b] = 0.0;
    for (size_t k = 0; k < K; k++)
        for (size_t b = 0; b < B; b++) {
            const double *r = x + (k * B + b) * D;
            double s = 0.0;
            for (size_t d = 0; d < D; d++)
                s += r[d] * r[d];
            out[b] += s;
        }
}
