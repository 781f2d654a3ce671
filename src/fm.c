/* fm.c — the flow-matching objective (cnf/fm.h): the linear path between a
 * preprocessed data row and a Gaussian draw, its regression loss on the
 * flow's one network and the loss's parameter gradient by one reverse
 * sweep (cnf_net_forward_rows: one time per row in one batched pass). The
 * draw (noise, optimal-transport pairing, stratified
 * times) is separate from the evaluation so that the gradient can be
 * checked at fixed draws. */
#include "cnf/fm.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <gsl/gsl_cdf.h>
#include <gsl/gsl_randist.h>

#include "cnf/size.h"
#include "cnf/assign.h"
#include "cnf/net.h"
#include "names.h"

struct cnf_fm_work {
    cnf_fm_options opt;
    size_t D, max_batch, n_params;
    cnf_net_work *nw;        /* the block's network, max_batch rows, no tangents */
    cnf_assign_work *aw;     /* NULL unless the coupling is CNF_FM_OT */
    double *y;               /* max_batch x D: preprocessed rows */
    double *z;               /* max_batch x D: points on the path */
    double *f;               /* max_batch x D: the field there, then the cotangent */
    double *eps;             /* max_batch x D: noise (cnf_fm_loss_grad's draw) */
    double *tmp;             /* max_batch x D: a block's noise before pairing */
    double *t;               /* max_batch times */
    size_t *perm;            /* ot_block: the assignment */
};

static const char *const time_names[] = {"uniform", "logit-normal"};

CNF_ENUM_NAMES(cnf_fm_time, cnf_fm_time_name, cnf_fm_time_from_name, "time distribution",
               time_names)

void cnf_fm_options_default(cnf_fm_options *opt)
{
    memset(opt, 0, sizeof *opt);
    opt->coupling = CNF_FM_INDEPENDENT;
    opt->time = CNF_FM_TIME_UNIFORM;
    opt->logit_mean = 0.0;
    opt->logit_std = 1.0;
    opt->ot_block = 256;
    opt->threads = 1;
}

cnf_status cnf_fm_options_check(const cnf_fm_options *opt)
{
    if (opt->coupling != CNF_FM_INDEPENDENT && opt->coupling != CNF_FM_OT)
        return cnf_error(CNF_EINVAL, "flow matching: coupling = %d is not a valid choice",
                         (int)opt->coupling);
    if (opt->time != CNF_FM_TIME_UNIFORM && opt->time != CNF_FM_TIME_LOGIT_NORMAL)
        return cnf_error(CNF_EINVAL, "flow matching: time distribution %d is not a valid choice",
                         (int)opt->time);
    if (!isfinite(opt->logit_mean))
        return cnf_error(CNF_EINVAL, "flow matching: logit_mean = %g must be finite",
                         opt->logit_mean);
    if (!(opt->logit_std > 0.0) || !isfinite(opt->logit_std))
        return cnf_error(CNF_EINVAL, "flow matching: logit_std = %g must be positive and finite",
                         opt->logit_std);
    if (opt->coupling == CNF_FM_OT && opt->ot_block == 0)
        return cnf_error(CNF_EINVAL, "flow matching: ot_block must be at least 1");
    if (opt->threads > CNF_NET_MAX_THREADS)
        return cnf_error(CNF_EINVAL, "flow matching: threads = %zu exceeds %d", opt->threads,
                         CNF_NET_MAX_THREADS);
    return CNF_OK;
}

cnf_status cnf_fm_check_flow(const cnf_flow *flow)
{
    size_t K = cnf_flow_num_blocks(flow);
    if (K != 1)
        return cnf_error(CNF_EINVAL, "flow matching trains a flow of one block on the path "
                         "t in [0, 1]; this flow has %zu blocks (use blocks = 1)", K);
    double T = cnf_flow_params_const(flow)[cnf_flow_T_index(flow, 0)];
    if (T != 1.0)
        return cnf_error(CNF_EINVAL, "flow matching's path ends at T = 1; this flow's end time "
                         "is T = %g (use T = 1, learn_T = 0)", T);
    return CNF_OK;
}

void cnf_fm_work_free(cnf_fm_work *w)
{
    if (!w)
        return;
    cnf_net_work_free(w->nw);
    cnf_assign_work_free(w->aw);
    free(w->y);
    free(w->z);
    free(w->f);
    free(w->eps);
    free(w->tmp);
    free(w->t);
    free(w->perm);
    free(w);
}

cnf_fm_work *cnf_fm_work_alloc(const cnf_flow *flow, size_t max_batch, const cnf_fm_options *opt)
{
    if (!flow || !opt || max_batch == 0) {
        cnf_error(CNF_EINVAL, "cnf_fm_work_alloc: a flow, options and max_batch >= 1 are needed");
        return NULL;
    }
    if (cnf_fm_options_check(opt) != CNF_OK)
        return NULL;
    size_t D = cnf_flow_dim(flow);
    size_t n;
    if (cnf_size_mul3(max_batch, D, sizeof(double), &n)) {
        cnf_error(CNF_EINVAL, "flow matching: %zu rows of %zu values overflow the address space",
                  max_batch, D);
        return NULL;
    }
    cnf_fm_work *w = calloc(1, sizeof *w);
    if (!w)
        goto nomem;
    w->opt = *opt;
    w->D = D;
    w->max_batch = max_batch;
    w->n_params = cnf_flow_num_params(flow);
    n = max_batch * D;   /* checked above */
    w->y = malloc(n * sizeof *w->y);
    w->z = malloc(n * sizeof *w->z);
    w->f = malloc(n * sizeof *w->f);
    w->eps = malloc(n * sizeof *w->eps);
    w->tmp = malloc(n * sizeof *w->tmp);
    w->t = malloc(max_batch * sizeof *w->t);
    if (!w->y || !w->z || !w->f || !w->eps || !w->tmp || !w->t)
        goto nomem;
    size_t threads = opt->threads ? opt->threads : 1;
    w->nw = cnf_net_work_alloc_threads(cnf_flow_block_net(flow, 0), max_batch, 0, threads);
    if (!w->nw) {
        cnf_fm_work_free(w);   /* keeps the network's message */
        return NULL;
    }
    if (opt->coupling == CNF_FM_OT) {
        size_t nb = opt->ot_block < max_batch ? opt->ot_block : max_batch;
        w->aw = cnf_assign_work_alloc(nb);
        w->perm = malloc(nb * sizeof *w->perm);
        if (!w->aw) {
            cnf_fm_work_free(w);
            return NULL;
        }
        if (!w->perm)
            goto nomem;
    }
    return w;

nomem:
    cnf_fm_work_free(w);
    cnf_error(CNF_ENOMEM, "out of memory for flow matching on batches of %zu rows", max_batch);
    return NULL;
}

static cnf_status check_call(const cnf_flow *flow, const cnf_fm_work *w, size_t B, const char *fn)
{
    if (!flow || !w)
        return cnf_error(CNF_EINVAL, "%s: flow and work must be given", fn);
    if (cnf_flow_dim(flow) != w->D || cnf_flow_num_params(flow) != w->n_params)
        return cnf_error(CNF_EDIM, "%s: the work was made for a flow of dimension %zu and %zu "
                         "parameters, not %zu and %zu", fn, w->D, w->n_params,
                         cnf_flow_dim(flow), cnf_flow_num_params(flow));
    if (B == 0 || B > w->max_batch)
        return cnf_error(CNF_EINVAL, "%s: batch of %zu rows (the work takes 1..%zu)", fn, B,
                         w->max_batch);
    return cnf_fm_check_flow(flow);
}

/* The time at position p in (0, 1) of stratum g of G. */
static double stratified_time(const cnf_fm_options *opt, size_t g, size_t G, double p)
{
    double q = ((double)g + p) / (double)G;
    if (opt->time == CNF_FM_TIME_UNIFORM)
        return q;
    double n = gsl_cdf_ugaussian_Pinv(q);
    return 1.0 / (1.0 + exp(-(opt->logit_mean + opt->logit_std * n)));
}

cnf_status cnf_fm_draw(const cnf_flow *flow, cnf_fm_work *w, const double *X, size_t B,
                       gsl_rng *rng, double *eps, double *t)
{
    cnf_status s = check_call(flow, w, B, "cnf_fm_draw");
    if (s != CNF_OK)
        return s;
    if (!rng)
        return cnf_error(CNF_EINVAL, "cnf_fm_draw: flow matching needs a random number generator");
    size_t D = w->D;
    double *noise = w->opt.coupling == CNF_FM_OT ? w->tmp : eps;
    for (size_t i = 0; i < B * D; i++)
        noise[i] = gsl_ran_gaussian_ziggurat(rng, 1.0);
    /* gsl_rng_uniform_pos: (0, 1), so no time lands on a stratum's edge
     * (t = 0 or 1 are fine for the path but not for the logit) */
    for (size_t b = 0; b < B; b++)
        t[b] = stratified_time(&w->opt, b, B, gsl_rng_uniform_pos(rng));
    if (w->opt.coupling != CNF_FM_OT)
        return CNF_OK;
    /* Pair rows and draws in the blocks' space, where the path runs. */
    cnf_flow_preprocess_rows(flow, X, B, w->y);
    for (size_t r0 = 0; r0 < B; r0 += w->opt.ot_block) {
        size_t n = B - r0 < w->opt.ot_block ? B - r0 : w->opt.ot_block;
        s = cnf_assign_sq_euclidean(w->aw, w->y + r0 * D, noise + r0 * D, n, D, w->perm, NULL);
        if (s != CNF_OK)
            return cnf_error(s, "flow matching's pairing of rows %zu..%zu: %s", r0, r0 + n - 1,
                             cnf_last_error());
        for (size_t i = 0; i < n; i++)
            memcpy(eps + (r0 + i) * D, noise + (r0 + w->perm[i]) * D, D * sizeof *eps);
    }
    return CNF_OK;
}

cnf_status cnf_fm_loss_grad_at(const cnf_flow *flow, cnf_fm_work *w, const double *X,
                               const double *eps, const double *t, size_t B, double *loss,
                               double *grad)
{
    cnf_status s = check_call(flow, w, B, "cnf_fm_loss_grad_at");
    if (s != CNF_OK)
        return s;
    for (size_t b = 0; b < B; b++)
        if (!(t[b] >= 0.0 && t[b] <= 1.0))
            return cnf_error(CNF_EINVAL, "cnf_fm_loss_grad_at: time t[%zu] = %g is outside "
                             "[0, 1]", b, t[b]);
    size_t D = w->D;
    const cnf_net *net = cnf_flow_block_net(flow, 0);
    const double *theta = cnf_flow_params_const(flow) + cnf_flow_block_offset(flow, 0);
    if (grad)
        memset(grad, 0, w->n_params * sizeof *grad);
    double *thetabar = grad ? grad + cnf_flow_block_offset(flow, 0) : NULL;
    if ((s = cnf_net_work_bind(net, w->nw, theta)) != CNF_OK)
        return s;

    cnf_flow_preprocess_rows(flow, X, B, w->y);
    double *z = w->z, *f = w->f;
    for (size_t b = 0; b < B; b++)
        for (size_t i = b * D; i < (b + 1) * D; i++)
            z[i] = (1.0 - t[b]) * w->y[i] + t[b] * eps[i];
    double sum = 0.0, scale = 2.0 / (double)B;
    s = cnf_net_forward_rows(net, w->nw, theta, t, z, B, f);
    if (s == CNF_OK) {
        /* residual f - u, then in place the cotangent dloss/df = (2/B)(f - u) */
        for (size_t i = 0; i < B * D; i++) {
            double r = f[i] - (eps[i] - w->y[i]);
            sum += r * r;
            f[i] = scale * r;
        }
        if (grad)
            s = cnf_net_backward(net, w->nw, theta, f, NULL, NULL, thetabar, NULL);
    }
    cnf_net_work_unbind(w->nw);
    if (s != CNF_OK)
        return s;
    double l = sum / (double)B;
    if (!isfinite(l))
        return cnf_error(CNF_ENONFINITE, "flow matching: the loss is not finite (%g)", l);
    if (loss)
        *loss = l;
    return CNF_OK;
}

cnf_status cnf_fm_loss_grad(const cnf_flow *flow, cnf_fm_work *w, const double *X, size_t B,
                            gsl_rng *rng, double *loss, double *grad)
{
    cnf_status s = cnf_fm_draw(flow, w, X, B, rng, w ? w->eps : NULL, w ? w->t : NULL);
    if (s != CNF_OK)
        return s;
    return cnf_fm_loss_grad_at(flow, w, X, w->eps, w->t, B, loss, grad);
}
