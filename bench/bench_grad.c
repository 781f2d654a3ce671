/* bench_grad.c — the cost of one training gradient at a fixed state: the
 * same cnf_flow_nll_grad call (one model, one batch, one noise seed)
 * repeated, so that every repetition does the same work (with --warm 1
 * nearly: each call's first steps come from the previous call's).
 *
 * Why beside bench_train: a training run's iterations differ in their
 * evaluation counts, and on a shared machine a whole run can be slowed by
 * a neighbour; the minimum over many identical calls is a stable figure
 * for comparing two builds (A/B) where a median over a training window
 * moves by 10-50% from run to run.
 *
 * Usage: bench_grad --model M.h5 [--reps N=200] [--batch B=100] [--seed S=1]
 *                   [--threads N=1] [--warm 0|1] [--label TEXT]
 * The model is any cnf model file of dimension 2 (bench_train --save
 * writes one; an early model is cheap, a trained one dear); the batch is
 * drawn from 8gaussians. The solver settings are training's (dopri5
 * 1e-5/1e-5, exact divergence, checkpointed adjoint, forward safety factor
 * 0.7: cnf_train_options_default); --warm 1
 * starts each call's solves from the first steps the previous call
 * suggested, as training does (cnf_flow_options.warm_start; the warm-up
 * calls set them).
 * Prints one JSON line: min, p10, median of wall and CPU milliseconds per
 * gradient, and the evaluation counts of one gradient.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gsl/gsl_rng.h>

#include "bench_common.h"
#include "cnf/flow.h"
#include "cnf/io.h"
#include "cnf/toy.h"
#include "cnf/train.h"

static void usage(const char *prog, FILE *out)
{
    fprintf(out, "usage: %s --model M.h5 [--reps N=200] [--batch B=100] [--seed S=1]\n"
                 "          [--threads N=1] [--warm 0|1] [--label TEXT]\n", prog);
}

int main(int argc, char **argv)
{
    bench_setup(&argc, argv);
    const char *model = NULL, *label = "";
    long reps = 200, batch = 100, seed = 1, threads = 1, warm = 0;
    if (bench_help_requested(argc, argv)) {
        usage(argv[0], stdout);
        return 0;
    }
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "bench_grad: %s needs a value\n", o);
            return 2;
        }
        if (!strcmp(o, "--model"))
            model = v;
        else if (!strcmp(o, "--label"))
            label = v;
        else if (!strcmp(o, "--reps"))
            reps = strtol(v, NULL, 10);
        else if (!strcmp(o, "--batch"))
            batch = strtol(v, NULL, 10);
        else if (!strcmp(o, "--seed"))
            seed = strtol(v, NULL, 10);
        else if (!strcmp(o, "--threads"))
            threads = strtol(v, NULL, 10);
        else if (!strcmp(o, "--warm"))
            warm = strtol(v, NULL, 10);
        else {
            fprintf(stderr, "bench_grad: unknown option %s\n", o);
            usage(argv[0], stderr);
            return 2;
        }
        i++;
    }
    if (!model || reps < 1 || batch < 1 || threads < 1) {
        usage(argv[0], stderr);
        return 2;
    }

    cnf_flow *flow = NULL;
    if (cnf_model_load(model, &flow, NULL) != CNF_OK) {
        fprintf(stderr, "bench_grad: %s\n", cnf_last_error());
        return 1;
    }
    if (cnf_flow_dim(flow) != 2) {
        fprintf(stderr, "bench_grad: %s has dimension %zu; the 8gaussians batch needs 2\n", model,
                cnf_flow_dim(flow));
        return 1;
    }
    /* training's solver settings: the toy configuration's tolerances, the
     * forward safety factor 0.7 (cnf_train_options_default) */
    cnf_train_options topt;
    cnf_train_options_default(&topt);
    cnf_flow_options opt = topt.flow;
    opt.threads = (size_t)threads;
    opt.warm_start = warm != 0;
    cnf_flow_work *w = cnf_flow_work_alloc(flow, (size_t)batch, &opt);
    gsl_rng *rng = gsl_rng_alloc(gsl_rng_mt19937);
    size_t P = cnf_flow_num_params(flow);
    double *X = malloc(2 * (size_t)batch * sizeof *X);
    double *grad = malloc(P * sizeof *grad);
    double *wall = malloc((size_t)reps * sizeof *wall), *cpu = malloc((size_t)reps * sizeof *cpu);
    double *tmp = malloc((size_t)reps * sizeof *tmp);
    if (!w || !rng || !X || !grad || !wall || !cpu || !tmp) {
        fprintf(stderr, "bench_grad: %s\n", w ? "out of memory" : cnf_last_error());
        return 1;
    }
    gsl_rng_set(rng, (unsigned long)seed);
    cnf_toy_generate("8gaussians", (size_t)batch, rng, X);

    cnf_flow_stats st;
    double nll = NAN;
    for (long r = -3; r < reps; r++) {   /* three untimed warm-up calls */
        double t0 = bench_now(), c0 = bench_cpu_now();
        if (cnf_flow_nll_grad(flow, w, X, (size_t)batch, rng, &nll, NULL, grad, &st) != CNF_OK) {
            fprintf(stderr, "bench_grad: %s\n", cnf_last_error());
            return 1;
        }
        if (r >= 0) {
            wall[r] = 1e3 * (bench_now() - t0);
            cpu[r] = 1e3 * (bench_cpu_now() - c0);
        }
    }
    bench_summary sw = bench_summarise(wall, (size_t)reps, tmp);
    bench_summary sc = bench_summarise(cpu, (size_t)reps, tmp);
    printf("{\"bench\":\"grad_fixed\",\"label\":\"%s\",\"model\":\"%s\",\"batch\":%ld,"
           "\"threads\":%ld,\"warm\":%ld,\"reps\":%ld,\"nfe_fwd\":%zu,\"nfe_bwd\":%zu,\"steps_fwd\":\"%zu+%zu\",\"steps_bwd\":\"%zu+%zu\",\"nll\":%.6f,"
           "\"min_ms\":%.3f,\"p10_ms\":%.3f,\"median_ms\":%.3f,\"cpu_min_ms\":%.3f,"
           "\"cpu_median_ms\":%.3f,\"load1\":%.2f}\n",
           label, model, batch, threads, warm, reps, st.forward.nfe, st.backward.nfe, st.forward.accepted,
           st.forward.rejected, st.backward.accepted, st.backward.rejected, nll, sw.min,
           sw.p10, sw.median, sc.min, sc.median, bench_loadavg());
    free(X);
    free(grad);
    free(wall);
    free(cpu);
    free(tmp);
    gsl_rng_free(rng);
    cnf_flow_work_free(w);
    cnf_flow_free(flow);
    return 0;
}
