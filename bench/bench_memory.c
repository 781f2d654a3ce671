/* bench_memory.c — peak resident memory of training against batch size.
 * Issue 6, case 5 of the benchmark suite.
 *
 * For each batch size (--batches, default 100,1000,10000) a forked child
 * builds FFJORD's toy flow (64-64-64 concatsquash tanh, T = 0.5 learned,
 * dopri5 rtol = atol = 1e-5, exact divergence, PyTorch default init), draws
 * max(--n-train, B) points of 8-gaussians, notes its peak resident set
 * (VmHWM of /proc/self/status) before training, trains --iters iterations
 * (default 3) with cnf_train_run, and notes VmHWM again. The parent reads the
 * child's ru_maxrss from wait4 as a cross-check. Each batch size runs in its
 * own process so that peaks do not carry over. One JSON line per batch size:
 * peak RSS, the baseline before training (program, libraries, data, flow),
 * their difference (what training itself takes: solver checkpoints, network
 * caches and tangents, adjoint buffers), seconds and NFE per iteration.
 *
 * Note: from initialisation the solves take few steps; memory that grows
 * with the number of accepted steps (the forward checkpoints) is larger late
 * in training. --pretrain N trains N iterations at batch 100 in the child
 * first (not counted in the per-iteration figures) to see that.
 *
 * Usage: bench_memory [--quick] [--batches 100,1000,10000] [--iters N]
 *                     [--n-train N] [--pretrain N] [--seed S]
 */
#define _DEFAULT_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gsl/gsl_rng.h>

#include "cnf/flow.h"
#include "cnf/toy.h"
#include "cnf/train.h"

#include "bench_common.h"

#define MAX_BATCHES 16

typedef struct {
    size_t n_batches;
    size_t batches[MAX_BATCHES];
    size_t iters, n_train, pretrain;
    unsigned long seed;
} args;

/* What the child sends back through the pipe. */
typedef struct {
    int ok;
    long hwm_before_kib, hwm_after_kib;
    double seconds, cpu_seconds, nfe_fwd, nfe_bwd, T;
} child_result;

static long vm_hwm_kib(void)
{
    long kib = -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmHWM:", 6) == 0) {
            kib = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kib;
}

static child_result child_run(const args *a, size_t B)
{
    child_result res = {0};
    size_t N = a->n_train > B ? a->n_train : B;
    gsl_rng *rng = gsl_rng_alloc(gsl_rng_mt19937);
    double *X = malloc(2 * N * sizeof *X);     /* N x 2 */
    cnf_net_config cfg;
    cnf_net_config_default(&cfg, 2);
    double T = 0.5;
    cnf_flow *flow = cnf_flow_alloc(2, 1, &cfg, &T);
    if (!rng || !X || !flow)
        return res;
    gsl_rng_set(rng, a->seed);
    cnf_toy_generate("8gaussians", N, rng, X);
    cnf_flow_init_params(flow, rng, 0);
    cnf_train_options opt;
    cnf_train_options_default(&opt);
    opt.val_every = 0;
    opt.seed = a->seed;
    cnf_train_state *st = cnf_train_state_alloc(cnf_flow_num_params(flow), a->seed);
    if (!st)
        return res;
    if (a->pretrain) {
        opt.iters = a->pretrain;
        opt.batch = 100;
        if (cnf_train_run(flow, X, N, NULL, 0, &opt, st, NULL) != CNF_OK)
            return res;
    }
    res.hwm_before_kib = vm_hwm_kib();
    opt.iters = a->pretrain + a->iters;
    opt.batch = B;
    cnf_train_result tr;
    double c0 = bench_cpu_now();
    if (cnf_train_run(flow, X, N, NULL, 0, &opt, st, &tr) != CNF_OK) {
        fprintf(stderr, "bench_memory: B = %zu: %s\n", B, cnf_last_error());
        return res;
    }
    res.hwm_after_kib = vm_hwm_kib();
    res.seconds = tr.seconds / (double)tr.iters_run;
    res.cpu_seconds = (bench_cpu_now() - c0) / (double)tr.iters_run;
    res.nfe_fwd = tr.nfe_forward_mean;
    res.nfe_bwd = tr.nfe_backward_mean;
    res.T = cnf_flow_params(flow)[cnf_flow_T_index(flow, 0)];
    res.ok = 1;
    cnf_train_state_free(st);
    cnf_flow_free(flow);
    free(X);
    gsl_rng_free(rng);
    return res;
}

static int parse_args(int argc, char **argv, args *a)
{
    *a = (args){.n_batches = 3, .batches = {100, 1000, 10000}, .iters = 3,
                .n_train = 100000, .seed = 1};
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--quick")) {
            a->n_batches = 2;
            a->batches[0] = 100;
            a->batches[1] = 1000;
            a->iters = 1;
            a->n_train = 10000;
        }
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(o, "--quick"))
            continue;
        if (!v)
            return -1;
        i++;
        if (!strcmp(o, "--batches")) {
            a->n_batches = 0;
            const char *s = v;
            while (*s) {
                char *end;
                unsigned long b = strtoul(s, &end, 10);
                if (end == s || b == 0 || a->n_batches == MAX_BATCHES)
                    return -1;
                a->batches[a->n_batches++] = b;
                s = *end == ',' ? end + 1 : end;
                if (*end && *end != ',')
                    return -1;
            }
        } else if (!strcmp(o, "--iters"))
            a->iters = strtoul(v, NULL, 10);
        else if (!strcmp(o, "--n-train"))
            a->n_train = strtoul(v, NULL, 10);
        else if (!strcmp(o, "--pretrain"))
            a->pretrain = strtoul(v, NULL, 10);
        else if (!strcmp(o, "--seed"))
            a->seed = strtoul(v, NULL, 10);
        else
            return -1;
    }
    return (a->n_batches && a->iters) ? 0 : -1;
}

static void usage(const char *prog, FILE *out)
{
    fprintf(out, "usage: %s [--quick] [--batches 100,1000,10000] [--iters N=3]\n"
                 "          [--n-train N=100000] [--pretrain N=0] [--seed S=1]\n",
            prog);
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
    int failed = 0;
    for (size_t k = 0; k < a.n_batches; k++) {
        size_t B = a.batches[k];
        int fd[2];
        if (pipe(fd) != 0) {
            perror("bench_memory: pipe");
            return 1;
        }
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0) {
            perror("bench_memory: fork");
            return 1;
        }
        if (pid == 0) {
            close(fd[0]);
            child_result r = child_run(&a, B);
            ssize_t wr = write(fd[1], &r, sizeof r);
            close(fd[1]);
            _exit(wr == (ssize_t)sizeof r && r.ok ? 0 : 1);
        }
        close(fd[1]);
        child_result r = {0};
        ssize_t got = read(fd[0], &r, sizeof r);
        close(fd[0]);
        int status = 0;
        struct rusage ru;
        memset(&ru, 0, sizeof ru);
        if (wait4(pid, &status, 0, &ru) < 0 || got != (ssize_t)sizeof r || !r.ok
            || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "bench_memory: the child for B = %zu failed\n", B);
            failed = 1;
            continue;
        }
        printf("{\"bench\":\"memory\",\"config\":\"toy 8gaussians 64-64-64 concatsquash tanh, "
               "dopri5 1e-5/1e-5, exact div, learned T\",\"batch\":%zu,\"iters\":%zu,"
               "\"pretrain_iters\":%zu,\"peak_rss_kib\":%ld,\"baseline_rss_kib\":%ld,"
               "\"training_extra_kib\":%ld,\"ru_maxrss_kib\":%ld,\"seconds_per_iter\":%.4f,"
               "\"cpu_seconds_per_iter\":%.4f,"
               "\"nfe_fwd_mean\":%.1f,\"nfe_bwd_mean\":%.1f,\"n_train\":%zu,\"seed\":%lu",
               B, a.iters, a.pretrain, r.hwm_after_kib, r.hwm_before_kib,
               r.hwm_after_kib - r.hwm_before_kib, ru.ru_maxrss, r.seconds, r.cpu_seconds, r.nfe_fwd,
               r.nfe_bwd, a.n_train > B ? a.n_train : B, a.seed);
        bench_print_context(stdout);
        printf("}\n");
        fflush(stdout);
    }
    return failed;
}
