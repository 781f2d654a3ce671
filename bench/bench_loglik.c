/* bench_loglik.c — log-likelihood throughput (points per second) of
 * cnf_flow_log_likelihood in chunks of --batch rows (default 1000). Issue 6,
 * case 3 of the benchmark suite. Cases (one JSON line each):
 *
 *   toy2d_random   D = 2, FFJORD's toy network (64-64-64 concatsquash tanh,
 *                  T = 0.5), PyTorch's default initialisation (seeded),
 *                  dopri5 rtol = atol = 1e-5, exact divergence, points from
 *                  8-gaussians. An untrained flow is nearly linear and needs
 *                  few evaluations, so this is a lower bound on the cost;
 *   toy2d_trained  the same with the model of --model (e.g. the one
 *                  bench_train --save wrote after its run), or, without
 *                  --model, one trained here for --train-iters iterations
 *                  (0 = skip the case) — trained dynamics need more steps;
 *   tabular16      D = 16, FFJORD's tabular network (20D-20D = 320-320
 *                  concatsquash softplus, T = 1), default initialisation,
 *                  dopri5 rtol = 1e-6, atol = 1e-8 (FFJORD's tabular
 *                  settings), Gaussian Hutchinson divergence (one draw per
 *                  chunk from a seeded generator), points drawn from
 *                  N(0, Sigma) with a fixed random covariance (data x = A u,
 *                  u ~ N(0, I), A with entries N(0, 1/D)) standardised by
 *                  cnf_flow_fit_preprocess;
 *   tabular16_exact  the same flow with the exact divergence (16 tangents),
 *                  for comparison (skipped with --no-exact16).
 *
 * Each case evaluates --n points (after one warm-up chunk), repeated --reps
 * times; the JSON line gives the best and median points per second, NFE per
 * chunk and the mean log-likelihood (a reproducibility check: it depends
 * only on the seed).
 *
 * Usage: bench_loglik [--quick] [--batch B] [--n N] [--reps R] [--seed S]
 *                     [--model toy.h5] [--train-iters N] [--no-exact16] [--threads N]
 * --threads: cnf's own threads (cnf_flow_options.threads), OpenBLAS as set.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gsl/gsl_rng.h>

#include "cnf/flow.h"
#include "cnf/io.h"
#include "cnf/toy.h"
#include "cnf/train.h"

#include "bench_common.h"

typedef struct {
    size_t batch, n, reps, train_iters, n16, threads;
    unsigned long seed;
    const char *model;
    int exact16;
} args;

/* Time cnf_flow_log_likelihood over X (N x D) in chunks of batch rows,
 * reps times after a warm-up chunk; print one JSON line. */
static int run_case(const char *name, const char *desc, const cnf_flow *flow,
                    const cnf_flow_options *fo, const double *X, size_t N, const args *a)
{
    size_t D = cnf_flow_dim(flow);
    cnf_flow_options fot = *fo;
    fot.threads = a->threads;   /* cnf's own, each network pass splitting the chunk's rows */
    cnf_flow_work *w = cnf_flow_work_alloc(flow, a->batch, &fot);
    double *ll = malloc(N * sizeof *ll);       /* N */
    double *secs = malloc(a->reps * sizeof *secs);
    double *cpus = malloc(a->reps * sizeof *cpus);
    double *tmp = malloc(a->reps * sizeof *tmp);
    gsl_rng *nrng = gsl_rng_alloc(gsl_rng_mt19937);
    if (!w || !ll || !secs || !cpus || !tmp || !nrng) {
        fprintf(stderr, "bench_loglik: %s: %s\n", name, w ? "out of memory" : cnf_last_error());
        return -1;
    }
    size_t warm = N < a->batch ? N : a->batch;
    gsl_rng_set(nrng, a->seed + 7);
    if (cnf_flow_log_likelihood(flow, w, X, warm, nrng, ll, NULL) != CNF_OK) {
        fprintf(stderr, "bench_loglik: %s: %s\n", name, cnf_last_error());
        return -1;
    }
    cnf_flow_stats st = {0};
    double mean_ll = 0.0;
    for (size_t r = 0; r < a->reps; r++) {
        gsl_rng_set(nrng, a->seed + 7);   /* the same noise every repetition */
        double t0 = bench_now(), c0 = bench_cpu_now();
        if (cnf_flow_log_likelihood(flow, w, X, N, nrng, ll, &st) != CNF_OK) {
            fprintf(stderr, "bench_loglik: %s: %s\n", name, cnf_last_error());
            return -1;
        }
        secs[r] = bench_now() - t0;
        cpus[r] = bench_cpu_now() - c0;
    }
    for (size_t i = 0; i < N; i++)
        mean_ll += ll[i];
    mean_ll /= (double)N;
    bench_summary sw = bench_summarise(secs, a->reps, tmp);
    bench_summary sc = bench_summarise(cpus, a->reps, tmp);
    size_t chunks = (N + a->batch - 1) / a->batch;
    printf("{\"bench\":\"loglik\",\"case\":\"%s\",\"config\":\"%s\",\"D\":%zu,\"batch\":%zu,"
           "\"n_points\":%zu,\"reps\":%zu,\"points_per_s_best\":%.1f,"
           "\"points_per_s_median\":%.1f,\"points_per_cpu_s_best\":%.1f,"
           "\"seconds_median\":%.4f,\"nfe_per_chunk\":%.1f,\"us_per_nfe_per_point\":%.4f,"
           "\"mean_loglik\":%.6f,\"T\":%.4f,\"seed\":%lu,\"threads\":%zu",
           name, desc, D, a->batch, N, a->reps, (double)N / sw.min, (double)N / sw.median,
           (double)N / sc.min, sw.median, (double)st.forward.nfe / (double)chunks,
           1e6 * sw.min / ((double)st.forward.nfe / (double)chunks) / (double)N, mean_ll,
           cnf_flow_params_const(flow)[cnf_flow_T_index(flow, 0)], a->seed, a->threads);
    bench_print_context(stdout);
    printf("}\n");
    fflush(stdout);
    cnf_flow_work_free(w);
    free(ll);
    free(secs);
    free(cpus);
    free(tmp);
    gsl_rng_free(nrng);
    return 0;
}

static void usage(const char *prog, FILE *out)
{
    fprintf(out,
            "usage: %s [--quick] [--batch B=1000] [--n N=10000] [--n16 N=2000] [--reps R=3]\n"
            "          [--seed S=1] [--model toy.h5] [--train-iters N=300] [--no-exact16]\n"
            "          [--threads N=1]\n",
            prog);
}

static int parse_args(int argc, char **argv, args *a)
{
    *a = (args){.batch = 1000, .n = 10000, .n16 = 2000, .reps = 3, .seed = 1,
                .train_iters = 300, .exact16 = 1, .threads = 1};
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--quick")) {
            a->n = 1000;
            a->n16 = 200;
            a->batch = 100;
            a->reps = 1;
            a->train_iters = 20;
        }
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(o, "--quick"))
            continue;
        if (!strcmp(o, "--no-exact16")) {
            a->exact16 = 0;
            continue;
        }
        if (!v)
            return -1;
        i++;
        if (!strcmp(o, "--batch"))
            a->batch = strtoul(v, NULL, 10);
        else if (!strcmp(o, "--n"))
            a->n = strtoul(v, NULL, 10);
        else if (!strcmp(o, "--n16"))
            a->n16 = strtoul(v, NULL, 10);
        else if (!strcmp(o, "--reps"))
            a->reps = strtoul(v, NULL, 10);
        else if (!strcmp(o, "--seed"))
            a->seed = strtoul(v, NULL, 10);
        else if (!strcmp(o, "--model"))
            a->model = v;
        else if (!strcmp(o, "--train-iters"))
            a->train_iters = strtoul(v, NULL, 10);
        else if (!strcmp(o, "--threads"))
            a->threads = strtoul(v, NULL, 10);
        else
            return -1;
    }
    return (a->batch && a->n && a->n16 && a->reps && a->threads) ? 0 : -1;
}

int main(int argc, char **argv)
{
    bench_setup(&argc, argv);
    args a;
    if (bench_help_requested(argc, argv)) {
        usage(argv[0], stdout);
        return 0;
    }
    if (parse_args(argc, argv, &a)) {
        usage(argv[0], stderr);
        return 2;
    }
    gsl_rng *rng = gsl_rng_alloc(gsl_rng_mt19937);
    gsl_rng_set(rng, a.seed);

    /* ---- D = 2: the toy flow ---- */
    double *X2 = malloc(2 * a.n * sizeof *X2);   /* n x 2 */
    cnf_net_config cfg2;
    cnf_net_config_default(&cfg2, 2);
    double T2 = 0.5;
    cnf_flow *toy = cnf_flow_alloc(2, 1, &cfg2, &T2);
    if (!X2 || !toy) {
        fprintf(stderr, "bench_loglik: %s\n", toy ? "out of memory" : cnf_last_error());
        return 1;
    }
    cnf_toy_generate("8gaussians", a.n, rng, X2);
    cnf_flow_init_params(toy, rng, 0);
    cnf_flow_options fo2;
    cnf_flow_options_default(&fo2);              /* dopri5 1e-5/1e-5, exact */
    if (run_case("toy2d_random", "64-64-64 concatsquash tanh, T=0.5, PyTorch default init, "
                 "dopri5 1e-5/1e-5, exact div, 8gaussians points", toy, &fo2, X2, a.n, &a))
        return 1;

    cnf_flow *trained = NULL;
    char desc[256];
    if (a.model) {
        if (cnf_model_load(a.model, &trained, NULL) != CNF_OK) {
            fprintf(stderr, "bench_loglik: %s\n", cnf_last_error());
            return 1;
        }
        if (cnf_flow_dim(trained) != 2) {
            fprintf(stderr, "bench_loglik: %s: expected a D = 2 model\n", a.model);
            return 1;
        }
        snprintf(desc, sizeof desc, "toy model loaded from %s, dopri5 1e-5/1e-5, exact div, "
                 "8gaussians points", a.model);
    } else if (a.train_iters) {
        trained = toy;
        toy = NULL;
        cnf_train_options opt;
        cnf_train_options_default(&opt);         /* FFJORD's toy settings */
        opt.iters = a.train_iters;
        opt.val_every = 0;
        opt.seed = a.seed;
        cnf_train_state *st = cnf_train_state_alloc(cnf_flow_num_params(trained), a.seed);
        double *Xtr = malloc(2 * 20000 * sizeof *Xtr);   /* 20000 x 2 */
        if (!st || !Xtr) {
            fprintf(stderr, "bench_loglik: out of memory\n");
            return 1;
        }
        cnf_toy_generate("8gaussians", 20000, rng, Xtr);
        if (cnf_train_run(trained, Xtr, 20000, NULL, 0, &opt, st, NULL) != CNF_OK) {
            fprintf(stderr, "bench_loglik: training: %s\n", cnf_last_error());
            return 1;
        }
        cnf_train_state_free(st);
        free(Xtr);
        snprintf(desc, sizeof desc, "toy flow trained here for %zu iterations (toy settings, "
                 "learned T), dopri5 1e-5/1e-5, exact div, 8gaussians points", a.train_iters);
    }
    if (trained && run_case("toy2d_trained", desc, trained, &fo2, X2, a.n, &a))
        return 1;
    cnf_flow_free(trained);
    cnf_flow_free(toy);
    free(X2);

    /* ---- D = 16: FFJORD's tabular flow ---- */
    const size_t D = 16;
    double *A = malloc(D * D * sizeof *A);       /* D x D */
    double *X16 = malloc(a.n16 * D * sizeof *X16);  /* n16 x D */
    double u[16];
    cnf_net_config cfg16;
    cnf_net_config_default(&cfg16, D);
    cfg16.n_hidden = 2;
    cfg16.hidden[0] = cfg16.hidden[1] = 20 * D;
    cfg16.activation = CNF_ACT_SOFTPLUS;
    double T16 = 1.0;
    cnf_flow *tab = cnf_flow_alloc(D, 1, &cfg16, &T16);
    if (!A || !X16 || !tab) {
        fprintf(stderr, "bench_loglik: %s\n", tab ? "out of memory" : cnf_last_error());
        return 1;
    }
    /* Gaussian draws through the library's noise (gsl_randist.h would bring
     * GSL's CBLAS declarations, which clash with OpenBLAS's cblas.h). */
    cnf_net_noise_draw(CNF_DIV_GAUSSIAN, rng, D * D, A);
    for (size_t i = 0; i < D * D; i++)
        A[i] /= sqrt((double)D);
    for (size_t n = 0; n < a.n16; n++) {
        cnf_net_noise_draw(CNF_DIV_GAUSSIAN, rng, D, u);
        for (size_t i = 0; i < D; i++) {
            double s = 0.0;
            for (size_t j = 0; j < D; j++)
                s += A[i * D + j] * u[j];
            X16[n * D + i] = s;
        }
    }
    cnf_flow_init_params(tab, rng, 0);
    if (cnf_flow_fit_preprocess(tab, X16, a.n16) != CNF_OK) {
        fprintf(stderr, "bench_loglik: %s\n", cnf_last_error());
        return 1;
    }
    cnf_flow_options fo16;
    cnf_flow_options_default(&fo16);
    fo16.solver.rtol = 1e-6;
    fo16.solver.atol = 1e-8;
    fo16.adjoint.solver = fo16.solver;
    fo16.divergence = CNF_DIV_GAUSSIAN;
    if (run_case("tabular16", "320-320 concatsquash softplus, T=1, PyTorch default init, "
                 "dopri5 rtol 1e-6 atol 1e-8, gaussian Hutchinson div, correlated gaussian "
                 "points (standardised)", tab, &fo16, X16, a.n16, &a))
        return 1;
    if (a.exact16) {
        fo16.divergence = CNF_DIV_EXACT;
        if (run_case("tabular16_exact", "as tabular16 with the exact divergence (K = 16)", tab,
                     &fo16, X16, a.n16, &a))
            return 1;
    }
    cnf_flow_free(tab);
    free(A);
    free(X16);
    gsl_rng_free(rng);
    return 0;
}
