/* bench_train.c — training speed and time to a target test NLL for FFJORD's
 * toy configuration (Grathwohl et al. 2019, train_toy.py) on 8-gaussians:
 * one CNF block of a 64-64-64 concatsquash tanh network, T = 0.5 (learned
 * through T = s^2, or fixed with --fixed-T), dopri5 rtol = atol = 1e-5,
 * exact divergence, batch 100, Adam lr 1e-3 weight decay 1e-5, PyTorch's
 * default initialisation. Issue 6, cases 1 and 2 of the benchmark suite.
 *
 * Training goes through cnf_train_run with a callback. Each iteration's wall and
 * process-CPU time is the time from the end of the previous callback to the
 * start of this one, so test evaluations (done in the callback) are not
 * counted as training. Per window of iterations (--windows, e.g. 1-100 and
 * 501-600: early iterations are cheaper than late ones, so only equal
 * windows compare) one JSON line gives the median, mean and 90th percentile
 * of the per-iteration times and the mean forward/backward NFE.
 *
 * With --eval-every E the mean NLL of a fixed held-out set (--n-test points
 * drawn from a generator seeded with seed + 1000, exact divergence, the
 * training solver settings, chunks of 1000) is computed every E iterations;
 * one JSON line gives the first iteration at which it was <= --target, the
 * training seconds (evaluations excluded) to get there, the evaluation
 * seconds (reported apart), the NLL curve and the NLL at --nll-at. Training
 * runs --iters iterations, and further (up to --cap) until the target is met.
 *
 * The training set is --n-train points of 8-gaussians drawn from a generator
 * seeded with --seed (FFJORD draws fresh points each iteration; a large
 * fixed set stands in for that); batches are drawn with replacement.
 * Everything is seeded: the same arguments give the same NLL and NFE.
 *
 * Fewer evaluations (issue 6, item 3): --seminorm leaves the
 * parameter-gradient quadrature out of the backward solve's error norm
 * (Kidger, Chen and Lyons 2021, "Hey, that's not an ODE"); --reg-kinetic L
 * and --reg-jacobian L add RNODE's kinetic-energy and Jacobian-Frobenius
 * integrals to the training loss (Finlay et al. 2020, "How to train your
 * neural ODE"; the test NLL stays the plain NLL); --zero-last starts from a
 * zero last layer (f = 0). None is on by default (FFJORD uses none);
 * bench/nfe_study.sh compares them.
 *
 * Usage: bench_train [--quick] [--fixed-T] [--iters N] [--windows a-b,c-d]
 *                    [--eval-every E] [--n-test N] [--target NLL] [--cap N]
 *                    [--nll-at N] [--batch B] [--seed S] [--n-train N]
 *                    [--save model.h5] [--label TEXT] [--machine]
 *                    [--seminorm] [--reg-kinetic L] [--reg-jacobian L]
 *                    [--zero-last] [--threads N]
 *
 * --threads N: cnf's own threads (cnf_flow_options.threads), each network
 * pass split over the batch rows; OpenBLAS is then kept to one thread.
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

#define MAX_WINDOWS 8

typedef struct {
    size_t iters, cap, eval_every, n_test, n_train, batch, nll_at, threads;
    unsigned long seed;
    int fixed_T;
    int seminorm, zero_last;
    double reg_kinetic, reg_jacobian;
    double target;
    size_t n_windows;
    size_t win_lo[MAX_WINDOWS], win_hi[MAX_WINDOWS];
    const char *save, *label;
} args;

typedef struct {
    const args *a;
    double *wall, *cpu;          /* cap: per-iteration seconds */
    size_t *nfe_f, *nfe_b;       /* cap */
    double *T_at;                /* cap: T after each iteration */
    double last_wall, last_cpu;  /* end of the previous callback */
    /* evaluation */
    cnf_flow *flow;
    cnf_flow_work *ework;
    const double *Xte;           /* n_test x 2 */
    double *loglik;              /* n_test */
    double eval_seconds;
    size_t eval_nfe;
    size_t eval_nfe_last;        /* forward NFE of the latest test evaluation (summed
                                    over its chunks of 1000) */
    size_t n_curve;
    size_t *curve_it;            /* cap / eval_every + 1 */
    double *curve_nll;
    double *curve_train_s;
    size_t reached_it;
    double reached_s, reached_cpu_s, nll_at_value;
    double train_s, train_cpu_s; /* running sums */
    int failed;
} run_ctx;

static double test_nll(run_ctx *r)
{
    cnf_flow_stats st;
    if (cnf_flow_log_likelihood(r->flow, r->ework, r->Xte, r->a->n_test, NULL, r->loglik, &st)
        != CNF_OK) {
        fprintf(stderr, "bench_train: evaluation failed: %s\n", cnf_last_error());
        r->failed = 1;
        return NAN;
    }
    r->eval_nfe += st.forward.nfe;
    r->eval_nfe_last = st.forward.nfe;
    double s = 0.0;
    for (size_t i = 0; i < r->a->n_test; i++)
        s -= r->loglik[i];
    return s / (double)r->a->n_test;
}

static int on_iteration(const cnf_train_progress *p, void *ctx)
{
    run_ctx *r = ctx;
    double w = bench_now(), c = bench_cpu_now();
    size_t i = p->iteration - 1;        /* fresh state: iteration counts from 1 */
    r->wall[i] = w - r->last_wall;
    r->cpu[i] = c - r->last_cpu;
    r->nfe_f[i] = p->nfe_forward;
    r->nfe_b[i] = p->nfe_backward;
    r->T_at[i] = p->T[0];
    r->train_s += r->wall[i];
    r->train_cpu_s += r->cpu[i];
    int stop = 0;
    const args *a = r->a;
    if (a->eval_every && p->iteration % a->eval_every == 0) {
        double t0 = bench_now();
        double nll = test_nll(r);
        r->eval_seconds += bench_now() - t0;
        r->curve_it[r->n_curve] = p->iteration;
        r->curve_nll[r->n_curve] = nll;
        r->curve_train_s[r->n_curve] = r->train_s;
        r->n_curve++;
        if (r->reached_it == 0 && nll <= a->target) {
            r->reached_it = p->iteration;
            r->reached_s = r->train_s;
            r->reached_cpu_s = r->train_cpu_s;
        }
        if (p->iteration == a->nll_at)
            r->nll_at_value = nll;
        if (p->iteration >= a->iters && (r->reached_it || a->target <= 0.0)
            && p->iteration >= a->nll_at)
            stop = 1;
    } else if (!a->eval_every && p->iteration >= a->iters) {
        stop = 1;
    }
    if (r->failed)
        stop = 1;
    r->last_wall = bench_now();
    r->last_cpu = bench_cpu_now();
    return stop;
}

static void usage(const char *prog, FILE *out)
{
    fprintf(out,
            "usage: %s [--quick] [--fixed-T] [--iters N=600] [--windows 1-100,501-600]\n"
            "          [--eval-every E=0] [--n-test N=5000] [--target NLL=2.95]\n"
            "          [--cap N=4000] [--nll-at N=2000] [--batch B=100] [--seed S=1]\n"
            "          [--n-train N=100000] [--save model.h5] [--label TEXT] [--machine]\n"
            "          [--seminorm] [--reg-kinetic L=0] [--reg-jacobian L=0] [--zero-last]\n"
            "          [--threads N=1]\n",
            prog);
}

static int parse_windows(args *a, const char *s)
{
    a->n_windows = 0;
    while (*s) {
        char *end;
        unsigned long lo = strtoul(s, &end, 10);
        if (*end != '-')
            return -1;
        unsigned long hi = strtoul(end + 1, &end, 10);
        if (lo < 1 || hi < lo || a->n_windows == MAX_WINDOWS)
            return -1;
        a->win_lo[a->n_windows] = lo;
        a->win_hi[a->n_windows] = hi;
        a->n_windows++;
        if (*end == ',')
            end++;
        else if (*end)
            return -1;
        s = end;
    }
    return 0;
}

static int parse_args(int argc, char **argv, args *a)
{
    *a = (args){.iters = 600, .cap = 4000, .eval_every = 0, .n_test = 5000,
                .n_train = 100000, .batch = 100, .nll_at = 2000, .seed = 1,
                .target = 2.95, .label = "", .threads = 1};
    parse_windows(a, "1-100,501-600");
    /* --quick sets small defaults first, so that explicit options override them. */
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--quick")) {
            a->iters = 40;
            a->cap = 60;
            a->n_test = 500;
            a->n_train = 10000;
            a->nll_at = 40;
            parse_windows(a, "1-20,21-40");
        }
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(o, "--quick")) {
        } else if (!strcmp(o, "--fixed-T")) {
            a->fixed_T = 1;
        } else if (!strcmp(o, "--seminorm")) {
            a->seminorm = 1;
        } else if (!strcmp(o, "--zero-last")) {
            a->zero_last = 1;
        } else if (!strcmp(o, "--machine")) {
            bench_print_machine(stdout);
            exit(0);
        } else if (!v) {
            return -1;
        } else {
            i++;
            if (!strcmp(o, "--iters"))
                a->iters = strtoul(v, NULL, 10);
            else if (!strcmp(o, "--windows")) {
                if (parse_windows(a, v))
                    return -1;
            } else if (!strcmp(o, "--eval-every"))
                a->eval_every = strtoul(v, NULL, 10);
            else if (!strcmp(o, "--n-test"))
                a->n_test = strtoul(v, NULL, 10);
            else if (!strcmp(o, "--target"))
                a->target = atof(v);
            else if (!strcmp(o, "--cap"))
                a->cap = strtoul(v, NULL, 10);
            else if (!strcmp(o, "--nll-at"))
                a->nll_at = strtoul(v, NULL, 10);
            else if (!strcmp(o, "--batch"))
                a->batch = strtoul(v, NULL, 10);
            else if (!strcmp(o, "--seed"))
                a->seed = strtoul(v, NULL, 10);
            else if (!strcmp(o, "--n-train"))
                a->n_train = strtoul(v, NULL, 10);
            else if (!strcmp(o, "--save"))
                a->save = v;
            else if (!strcmp(o, "--label"))
                a->label = v;
            else if (!strcmp(o, "--reg-kinetic"))
                a->reg_kinetic = atof(v);
            else if (!strcmp(o, "--reg-jacobian"))
                a->reg_jacobian = atof(v);
            else if (!strcmp(o, "--threads"))
                a->threads = strtoul(v, NULL, 10);
            else
                return -1;
        }
    }
    if (!a->eval_every)
        a->cap = a->iters;
    if (a->cap < a->iters)
        a->cap = a->iters;
    if (a->iters == 0 || a->batch == 0 || a->n_train < a->batch || a->n_test == 0
        || !(a->reg_kinetic >= 0.0) || !(a->reg_jacobian >= 0.0))
        return -1;
    return 0;
}

static void print_head(const args *a, const char *bench)
{
    printf("{\"bench\":\"%s\",\"label\":\"%s\",\"config\":\"toy 8gaussians 64-64-64 "
           "concatsquash tanh, dopri5 1e-5/1e-5, exact div, Adam 1e-3 wd 1e-5\","
           "\"T\":\"%s\",\"batch\":%zu,\"seed\":%lu,\"seminorm\":%d,\"reg_kinetic\":%g,"
           "\"reg_jacobian\":%g,\"zero_last\":%d,\"threads\":%zu",
           bench, a->label, a->fixed_T ? "fixed 0.5" : "learned (T0 = 0.5)", a->batch, a->seed,
           a->seminorm, a->reg_kinetic, a->reg_jacobian, a->zero_last, a->threads);
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
    gsl_rng *trng = gsl_rng_alloc(gsl_rng_mt19937);
    gsl_rng_set(trng, a.seed + 1000);
    double *Xtr = malloc(2 * a.n_train * sizeof *Xtr);   /* n_train x 2 */
    double *Xte = malloc(2 * a.n_test * sizeof *Xte);    /* n_test x 2 */
    run_ctx r = {0};
    r.a = &a;
    r.wall = malloc(a.cap * sizeof *r.wall);
    r.cpu = malloc(a.cap * sizeof *r.cpu);
    r.nfe_f = malloc(a.cap * sizeof *r.nfe_f);
    r.nfe_b = malloc(a.cap * sizeof *r.nfe_b);
    r.T_at = malloc(a.cap * sizeof *r.T_at);
    double *tmp = malloc(a.cap * sizeof *tmp);
    size_t n_eval = a.eval_every ? a.cap / a.eval_every + 1 : 1;
    r.curve_it = malloc(n_eval * sizeof *r.curve_it);
    r.curve_nll = malloc(n_eval * sizeof *r.curve_nll);
    r.curve_train_s = malloc(n_eval * sizeof *r.curve_train_s);
    r.loglik = malloc(a.n_test * sizeof *r.loglik);
    if (!rng || !trng || !Xtr || !Xte || !r.wall || !r.cpu || !r.nfe_f || !r.nfe_b || !r.T_at
        || !tmp || !r.curve_it || !r.curve_nll || !r.curve_train_s || !r.loglik) {
        fprintf(stderr, "bench_train: out of memory\n");
        return 1;
    }
    cnf_toy_generate("8gaussians", a.n_train, rng, Xtr);
    cnf_toy_generate("8gaussians", a.n_test, trng, Xte);

    cnf_net_config cfg;
    cnf_net_config_default(&cfg, 2);          /* 64-64-64 concatsquash tanh */
    double T0 = 0.5;
    cnf_flow *flow = cnf_flow_alloc(2, 1, &cfg, &T0);
    if (!flow) {
        fprintf(stderr, "bench_train: %s\n", cnf_last_error());
        return 1;
    }
    /* FFJORD: PyTorch's default init; --zero-last: last layer zero, f = 0 */
    cnf_flow_init_params(flow, rng, a.zero_last);

    cnf_train_options opt;
    cnf_train_options_default(&opt);          /* lr 1e-3, wd 1e-5, dopri5 1e-5, exact */
    opt.iters = a.cap;
    opt.batch = a.batch;
    opt.learn_T = !a.fixed_T;
    opt.val_every = 0;                        /* the callback evaluates */
    opt.seed = a.seed;
    opt.callback = on_iteration;
    opt.callback_ctx = &r;
    opt.flow.adjoint.seminorm = a.seminorm;
    opt.flow.reg_kinetic = a.reg_kinetic;
    opt.flow.reg_jacobian = a.reg_jacobian;
    opt.flow.threads = a.threads;             /* cnf's threads, splitting the batch */

    cnf_flow_options eo;
    cnf_flow_options_default(&eo);
    eo.threads = a.threads;
    r.flow = flow;
    r.Xte = Xte;
    r.ework = cnf_flow_work_alloc(flow, 1000, &eo);
    cnf_train_state *st = cnf_train_state_alloc(cnf_flow_num_params(flow), a.seed);
    if (!r.ework || !st) {
        fprintf(stderr, "bench_train: %s\n", cnf_last_error());
        return 1;
    }
    r.nll_at_value = NAN;
    double nll0 = a.eval_every ? test_nll(&r) : NAN;
    r.eval_nfe = 0;

    r.last_wall = bench_now();
    r.last_cpu = bench_cpu_now();
    cnf_train_result res;
    cnf_status s = cnf_train_run(flow, Xtr, a.n_train, NULL, 0, &opt, st, &res);
    if (s != CNF_OK || r.failed) {
        fprintf(stderr, "bench_train: training failed: %s\n", cnf_last_error());
        return 1;
    }
    size_t done = res.iters;

    for (size_t w = 0; w < a.n_windows; w++) {
        size_t lo = a.win_lo[w], hi = a.win_hi[w];
        if (hi > done) {
            fprintf(stderr, "bench_train: window %zu-%zu beyond the %zu iterations run\n", lo,
                    hi, done);
            continue;
        }
        size_t n = hi - lo + 1;
        bench_summary sw = bench_summarise(r.wall + lo - 1, n, tmp);
        bench_summary sc = bench_summarise(r.cpu + lo - 1, n, tmp);
        double nf = 0.0, nb = 0.0;
        for (size_t i = lo - 1; i < hi; i++) {
            nf += (double)r.nfe_f[i];
            nb += (double)r.nfe_b[i];
        }
        print_head(&a, "train_iter");
        printf(",\"window\":\"%zu-%zu\",\"n\":%zu,\"median_ms\":%.3f,\"mean_ms\":%.3f,"
               "\"p90_ms\":%.3f,\"min_ms\":%.3f,\"cpu_median_ms\":%.3f,\"cpu_mean_ms\":%.3f,"
               "\"nfe_fwd_mean\":%.2f,\"nfe_bwd_mean\":%.2f,\"ms_per_nfe_median\":%.4f,"
               "\"T_end_of_window\":%.4f",
               lo, hi, n, 1e3 * sw.median, 1e3 * sw.mean, 1e3 * sw.p90, 1e3 * sw.min,
               1e3 * sc.median, 1e3 * sc.mean, nf / (double)n, nb / (double)n,
               1e3 * sw.median / ((nf + nb) / (double)n), r.T_at[hi - 1]);
        bench_print_context(stdout);
        printf("}\n");
    }

    if (a.eval_every) {
        double nf = (double)res.nfe_forward / (double)done;
        double nb = (double)res.nfe_backward / (double)done;
        print_head(&a, "time_to_nll");
        printf(",\"target\":%.3f,\"eval_every\":%zu,\"n_test\":%zu,\"cap\":%zu,", a.target,
               a.eval_every, a.n_test, a.cap);
        if (r.reached_it)
            printf("\"reached_iter\":%zu,\"train_seconds\":%.2f,\"train_cpu_seconds\":%.2f,",
                   r.reached_it, r.reached_s, r.reached_cpu_s);
        else
            printf("\"reached_iter\":null,\"train_seconds\":null,\"train_cpu_seconds\":null,");
        printf("\"nll_at\":%zu,\"test_nll_at\":", a.nll_at);
        if (isnan(r.nll_at_value))
            printf("null");
        else
            printf("%.4f", r.nll_at_value);
        printf(",\"iters_run\":%zu,\"total_train_seconds\":%.2f,\"total_train_cpu_seconds\":%.2f,"
               "\"eval_seconds\":%.2f,\"eval_nfe\":%zu,\"nfe_fwd_mean\":%.2f,"
               "\"nfe_bwd_mean\":%.2f,\"T_final\":%.4f,\"test_nll_init\":%.4f,"
               "\"eval_nfe_last\":%zu,\"curve\":[",
               done, r.train_s, r.train_cpu_s, r.eval_seconds, r.eval_nfe, nf, nb,
               r.T_at[done - 1], nll0, r.eval_nfe_last);
        for (size_t k = 0; k < r.n_curve; k++)
            printf("%s[%zu,%.4f,%.2f]", k ? "," : "", r.curve_it[k], r.curve_nll[k],
                   r.curve_train_s[k]);
        printf("]");
        bench_print_context(stdout);
        printf("}\n");
    }
    fflush(stdout);

    if (a.save) {
        /* The last parameters (no validation ran, so the flow holds them). */
        cnf_model_extra ex;
        cnf_model_extra_init(&ex);
        cnf_model_extra_set(&ex, "flow", "toy2d");
        cnf_model_extra_set(&ex, "note", "bench_train");
        if (cnf_model_save(a.save, flow, &ex) != CNF_OK)
            fprintf(stderr, "bench_train: saving %s: %s\n", a.save, cnf_last_error());
        cnf_model_extra_clear(&ex);
    }

    cnf_train_state_free(st);
    cnf_flow_work_free(r.ework);
    cnf_flow_free(flow);
    gsl_rng_free(rng);
    gsl_rng_free(trng);
    free(Xtr);
    free(Xte);
    free(r.wall);
    free(r.cpu);
    free(r.nfe_f);
    free(r.nfe_b);
    free(r.T_at);
    free(tmp);
    free(r.curve_it);
    free(r.curve_nll);
    free(r.curve_train_s);
    free(r.loglik);
    return 0;
}
