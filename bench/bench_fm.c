/* bench_fm.c — the cost of one training iteration's gradient by flow
 * matching against maximum likelihood, at the same network and batch.
 *
 * Flow matching's gradient is one network pass and one reverse sweep per
 * time group (cnf_fm_loss_grad); maximum likelihood's a forward and an
 * adjoint solve (cnf_flow_nll_grad), whose cost grows with the evaluation
 * counts as a flow trains, so the ratio printed here, on an initialised
 * flow, is the smallest it gets. Both gradients are repeated on one batch
 * (the same work every time); minima and medians in milliseconds.
 *
 * Usage: bench_fm [--dim D=2] [--hidden 64-64-64] [--layer concat]
 *                 [--act swish] [--batch B=256] [--threads N=1] [--reps N=50]
 *                 [--ot 0|1] [--mle 0|1] [--divergence exact]
 *                 [--label TEXT]
 * The data are standard Gaussian rows; the MLE gradient runs at training's
 * solver settings (dopri5 1e-5, cnf_train_options_default) with the given
 * divergence.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gsl/gsl_rng.h>

#include "bench_common.h"
#include "cnf/fm.h"
#include "cnf/flow.h"
#include "cnf/train.h"

static void usage(const char *prog, FILE *out)
{
    fprintf(out, "usage: %s [--dim D=2] [--hidden 64-64-64] [--layer concat] [--act swish]\n"
                 "          [--batch B=256] [--threads N=1] [--reps N=50] [--ot 0|1]\n"
                 "          [--mle 0|1] [--divergence exact] [--label TEXT]\n",
            prog);
}

/* Minimum and median of reps timed calls of one gradient, in ms. */
typedef cnf_status (*grad_fn)(void *ctx);

static void time_calls(grad_fn fn, void *ctx, long reps, double *wall, double *tmp,
                       bench_summary *out)
{
    for (long r = -2; r < reps; r++) {   /* two untimed warm-up calls */
        double t0 = bench_now();
        if (fn(ctx) != CNF_OK) {
            fprintf(stderr, "bench_fm: %s\n", cnf_last_error());
            exit(1);
        }
        if (r >= 0)
            wall[r] = 1e3 * (bench_now() - t0);
    }
    *out = bench_summarise(wall, (size_t)reps, tmp);
}

typedef struct {
    cnf_flow *flow;
    cnf_fm_work *fw;
    cnf_flow_work *mw;
    const double *X;
    size_t B;
    gsl_rng *rng;
    double *grad;
    cnf_flow_stats st;
} bench_ctx;

static cnf_status fm_call(void *v)
{
    bench_ctx *c = v;
    double loss;
    return cnf_fm_loss_grad(c->flow, c->fw, c->X, c->B, c->rng, &loss, c->grad);
}

static cnf_status mle_call(void *v)
{
    bench_ctx *c = v;
    gsl_rng_set(c->rng, 1);   /* the same noise every call */
    return cnf_flow_nll_grad(c->flow, c->mw, c->X, c->B, c->rng, NULL, NULL, c->grad, &c->st);
}

int main(int argc, char **argv)
{
    bench_setup(&argc, argv);
    const char *hidden = "64-64-64", *layer = "concat", *act = "swish", *label = "";
    const char *divergence = "exact";
    long dim = 2, batch = 256, threads = 1, reps = 50, ot = 0, mle = 1;
    if (bench_help_requested(argc, argv)) {
        usage(argv[0], stdout);
        return 0;
    }
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "bench_fm: %s needs a value\n", o);
            return 2;
        }
        long *num = !strcmp(o, "--dim")       ? &dim
                    : !strcmp(o, "--batch")   ? &batch
                    : !strcmp(o, "--threads") ? &threads
                    : !strcmp(o, "--reps")    ? &reps
                    : !strcmp(o, "--ot")      ? &ot
                    : !strcmp(o, "--mle")     ? &mle
                                              : NULL;
        if (num)
            *num = strtol(v, NULL, 10);
        else if (!strcmp(o, "--hidden"))
            hidden = v;
        else if (!strcmp(o, "--layer"))
            layer = v;
        else if (!strcmp(o, "--act"))
            act = v;
        else if (!strcmp(o, "--divergence"))
            divergence = v;
        else if (!strcmp(o, "--label"))
            label = v;
        else {
            fprintf(stderr, "bench_fm: unknown option %s\n", o);
            usage(argv[0], stderr);
            return 2;
        }
        i++;
    }
    if (dim < 1 || batch < 1 || threads < 1 || reps < 1) {
        usage(argv[0], stderr);
        return 2;
    }
    cnf_net_config nc;
    cnf_net_config_default(&nc, (size_t)dim);
    double T = 1.0;
    if (cnf_net_config_parse_hidden(&nc, hidden) != CNF_OK
        || cnf_layer_type_from_name(layer, &nc.layer_type) != CNF_OK
        || cnf_activation_from_name(act, &nc.activation) != CNF_OK) {
        fprintf(stderr, "bench_fm: %s\n", cnf_last_error());
        return 2;
    }
    cnf_flow *flow = cnf_flow_alloc((size_t)dim, 1, &nc, &T);
    gsl_rng *rng = gsl_rng_alloc(gsl_rng_mt19937);
    size_t B = (size_t)batch, D = (size_t)dim, P = flow ? cnf_flow_num_params(flow) : 0;
    double *X = malloc(B * D * sizeof *X), *grad = malloc(P * sizeof *grad);
    double *wall = malloc((size_t)reps * sizeof *wall), *tmp = malloc((size_t)reps * sizeof *tmp);
    if (!flow || !rng || !X || !grad || !wall || !tmp) {
        fprintf(stderr, "bench_fm: %s\n", flow ? "out of memory" : cnf_last_error());
        return 1;
    }
    cnf_flow_init_params(flow, rng, 0);
    cnf_flow_draw_latent(rng, B, D, X);

    cnf_fm_options fo;
    cnf_fm_options_default(&fo);
    fo.coupling = ot ? CNF_FM_OT : CNF_FM_INDEPENDENT;
    fo.threads = (size_t)threads;
    bench_ctx c;
    memset(&c, 0, sizeof c);
    c.flow = flow;
    c.fw = cnf_fm_work_alloc(flow, B, &fo);
    c.X = X;
    c.B = B;
    c.rng = rng;
    c.grad = grad;
    if (!c.fw) {
        fprintf(stderr, "bench_fm: %s\n", cnf_last_error());
        return 1;
    }
    bench_print_machine(stdout);
    bench_summary sf, sm = {0};
    time_calls(fm_call, &c, reps, wall, tmp, &sf);
    double flops = 3.0 * 2.0 * cnf_net_flops_per_sample(cnf_flow_block_net(flow, 0), 0) * (double)B;
    printf("{\"bench\":\"fm_grad\",\"label\":\"%s\",\"dim\":%ld,\"hidden\":\"%s\",\"layer\":\"%s\","
           "\"act\":\"%s\",\"batch\":%ld,\"threads\":%ld,\"ot\":%ld,\"reps\":%ld,"
           "\"min_ms\":%.3f,\"median_ms\":%.3f,\"gflops\":%.1f",
           label, dim, hidden, layer, act, batch, threads, ot, reps, sf.min, sf.median,
           flops / (sf.min * 1e6));
    bench_print_context(stdout);
    printf("}\n");
    if (mle) {
        cnf_train_options topt;
        cnf_train_options_default(&topt);
        cnf_flow_options mo = topt.flow;
        mo.threads = (size_t)threads;
        mo.warm_start = 0;
        if (cnf_divergence_from_name(divergence, &mo.divergence) != CNF_OK) {
            fprintf(stderr, "bench_fm: %s\n", cnf_last_error());
            return 2;
        }
        c.mw = cnf_flow_work_alloc(flow, B, &mo);
        if (!c.mw) {
            fprintf(stderr, "bench_fm: %s\n", cnf_last_error());
            return 1;
        }
        time_calls(mle_call, &c, reps, wall, tmp, &sm);
        printf("{\"bench\":\"mle_grad\",\"label\":\"%s\",\"dim\":%ld,\"hidden\":\"%s\","
               "\"batch\":%ld,\"threads\":%ld,\"divergence\":\"%s\",\"nfe_fwd\":%zu,"
               "\"nfe_bwd\":%zu,\"min_ms\":%.3f,\"median_ms\":%.3f,\"mle_over_fm\":%.1f",
               label, dim, hidden, batch, threads, divergence, c.st.forward.nfe,
               c.st.backward.nfe, sm.min, sm.median, sm.min / sf.min);
        bench_print_context(stdout);
        printf("}\n");
        cnf_flow_work_free(c.mw);
    }
    cnf_fm_work_free(c.fw);
    cnf_flow_free(flow);
    gsl_rng_free(rng);
    free(X);
    free(grad);
    free(wall);
    free(tmp);
    return 0;
}
