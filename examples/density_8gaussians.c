/* density_8gaussians.c — FFJORD's toy density experiment (Grathwohl et al.
 * 2019, train_toy.py) on the 8-gaussians set: one CNF block of a 64-64-64
 * concatsquash tanh network, T = 0.5 learned (T = s^2), dopri5 with
 * rtol = atol = 1e-5, exact divergence, batch 100, Adam lr 1e-3 with weight
 * decay 1e-5. Prints the test NLL (exact divergence) against iterations; the
 * set's entropy, 2.832 nats, is the best any model can do.
 *
 * Columns: iteration, minibatch NLL, test NLL, wall-clock seconds of
 * training (test evaluations excluded), process CPU seconds (evaluations
 * included; all threads), mean function evaluations per iteration forward
 * and backward since the last line, T, evaluations of the test pass.
 *
 * Usage: density_8gaussians [iters=3000] [seed=1] [eval_every=250]
 *                           [n_test=10000] [n_train=100000]
 *
 * FFJORD draws a fresh batch from the generator each iteration; here a
 * fixed training set of n_train points stands in for that (batches drawn
 * uniformly with replacement), and the test set is a separate draw. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <cblas.h>
#include <gsl/gsl_rng.h>

#include "cnf/flow.h"
#include "cnf/toy.h"
#include "cnf/train.h"

typedef struct {
    size_t eval_every;
    const double *Xte;      /* n_test x 2 */
    size_t n_test;
    cnf_flow *flow;
    cnf_flow_work *work;    /* exact-divergence evaluation */
    double *loglik;         /* n_test */
    size_t nfe_fwd, nfe_bwd, n_it;  /* since the last report */
    double eval_seconds;    /* time spent in test evaluations (not training) */
    double cpu0;            /* process CPU seconds when training started */
    double reached_time;    /* training seconds when NLL <= 2.95 first seen */
    size_t reached_it;
    int failed;
} report_ctx;

static double now_seconds(void)
{
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double test_nll(report_ctx *r, size_t *nfe)
{
    cnf_flow_stats st;
    if (cnf_flow_log_likelihood(r->flow, r->work, r->Xte, r->n_test, NULL, r->loglik, &st)
        != CNF_OK) {
        fprintf(stderr, "evaluation failed: %s\n", cnf_last_error());
        r->failed = 1;
        return NAN;
    }
    double s = 0.0;
    for (size_t i = 0; i < r->n_test; i++)
        s -= r->loglik[i];
    *nfe = st.forward.nfe;
    return s / (double)r->n_test;
}

static int report(const cnf_train_progress *p, void *ctx)
{
    report_ctx *r = ctx;
    r->nfe_fwd += p->nfe_forward;
    r->nfe_bwd += p->nfe_backward;
    r->n_it++;
    if (p->iteration % r->eval_every != 0 && p->iteration != p->iters)
        return 0;
    /* The flow holds the current parameters during training; the time of
     * this evaluation is kept out of the training seconds. */
    double t0 = now_seconds();
    size_t nfe = 0;
    double nll = test_nll(r, &nfe);
    double train_seconds = p->elapsed - r->eval_seconds;
    r->eval_seconds += now_seconds() - t0;
    double cpu = (double)clock() / CLOCKS_PER_SEC - r->cpu0;
    printf("%6zu  %9.4f  %9.4f  %8.1f  %8.1f  %8.1f  %8.1f  %6.3f  %8zu\n", p->iteration, p->nll,
           nll, train_seconds, cpu, (double)r->nfe_fwd / (double)r->n_it,
           (double)r->nfe_bwd / (double)r->n_it, p->T[0], nfe);
    fflush(stdout);
    if (r->reached_it == 0 && nll <= 2.95) {
        r->reached_it = p->iteration;
        r->reached_time = train_seconds;
    }
    r->nfe_fwd = r->nfe_bwd = r->n_it = 0;
    return r->failed;
}

int main(int argc, char **argv)
{
    /* what a program embedding cnf does (cnf/net.h): OpenBLAS at one
     * thread, for the same bits on every machine */
    openblas_set_num_threads(1);
    size_t iters = argc > 1 ? strtoul(argv[1], NULL, 10) : 3000;
    unsigned long seed = argc > 2 ? strtoul(argv[2], NULL, 10) : 1;
    size_t eval_every = argc > 3 ? strtoul(argv[3], NULL, 10) : 250;
    size_t n_test = argc > 4 ? strtoul(argv[4], NULL, 10) : 10000;
    size_t n_train = argc > 5 ? strtoul(argv[5], NULL, 10) : 100000;
    if (iters == 0 || eval_every == 0 || n_test == 0 || n_train < 100) {
        fprintf(stderr, "usage: %s [iters] [seed] [eval_every] [n_test] [n_train >= 100]\n",
                argv[0]);
        return 2;
    }

    gsl_rng *rng = gsl_rng_alloc(gsl_rng_mt19937);
    gsl_rng_set(rng, seed);
    double *Xtr = malloc(2 * n_train * sizeof *Xtr);   /* n_train x 2 */
    double *Xte = malloc(2 * n_test * sizeof *Xte);    /* n_test x 2 */
    double *loglik = malloc(n_test * sizeof *loglik);
    if (!Xtr || !Xte || !loglik) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    cnf_toy_generate("8gaussians", n_train, rng, Xtr);
    cnf_toy_generate("8gaussians", n_test, rng, Xte);

    cnf_net_config cfg;
    cnf_net_config_default(&cfg, 2);      /* 64-64-64 concatsquash tanh */
    double T = 0.5;
    cnf_flow *flow = cnf_flow_alloc(2, 1, &cfg, &T);
    if (!flow) {
        fprintf(stderr, "%s\n", cnf_last_error());
        return 1;
    }
    cnf_flow_init_params(flow, rng, 0);   /* PyTorch's default init, as FFJORD */
    /* FFJORD's toy runs do not standardise; mean 0 and scale 1 keep that. */

    cnf_train_options opt;
    cnf_train_options_default(&opt);      /* batch 100, lr 1e-3, wd 1e-5, learned T,
                                             dopri5 1e-5/1e-5, exact divergence */
    opt.iters = iters;
    opt.val_every = 0;                    /* the callback evaluates the test set */
    opt.seed = seed;

    cnf_flow_options eo;
    cnf_flow_options_default(&eo);
    report_ctx r = {0};
    r.eval_every = eval_every;
    r.Xte = Xte;
    r.n_test = n_test;
    r.flow = flow;
    r.loglik = loglik;
    r.work = cnf_flow_work_alloc(flow, 1000, &eo);
    opt.callback = report;
    opt.callback_ctx = &r;

    cnf_train_state *st = cnf_train_state_alloc(cnf_flow_num_params(flow), seed);
    if (!r.work || !st) {
        fprintf(stderr, "%s\n", cnf_last_error());
        return 1;
    }
    size_t nfe0 = 0;
    double nll0 = test_nll(&r, &nfe0);
    printf("8-gaussians: %zu training, %zu test points, seed %lu; entropy 2.832 nats\n", n_train,
           n_test, seed);
    printf("%6s  %9s  %9s  %8s  %8s  %8s  %8s  %6s  %8s\n", "iter", "batch_nll", "test_nll",
           "train_s", "cpu_s", "nfe_fwd", "nfe_bwd", "T", "nfe_test");
    printf("%6d  %9s  %9.4f  %8.1f  %8.1f  %8s  %8s  %6.3f  %8zu\n", 0, "-", nll0, 0.0, 0.0, "-",
           "-", T, nfe0);
    r.cpu0 = (double)clock() / CLOCKS_PER_SEC;

    cnf_train_result res;
    cnf_status s = cnf_train_run(flow, Xtr, n_train, NULL, 0, &opt, st, &res);
    if (s != CNF_OK) {
        fprintf(stderr, "training failed: %s\n", cnf_last_error());
        return 1;
    }
    printf("done: %zu iterations in %.1f s (of which test evaluations %.1f s), "
           "mean nfe %.1f forward %.1f backward per iteration\n",
           res.iters, res.seconds, r.eval_seconds, res.nfe_forward_mean, res.nfe_backward_mean);
    if (r.reached_it)
        printf("test NLL <= 2.95 first at iteration %zu, %.1f s of training\n", r.reached_it,
               r.reached_time);
    else
        printf("test NLL did not reach 2.95\n");

    cnf_train_state_free(st);
    cnf_flow_work_free(r.work);
    cnf_flow_free(flow);
    free(Xtr);
    free(Xte);
    free(loglik);
    gsl_rng_free(rng);
    return 0;
}
