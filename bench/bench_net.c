/* bench_net.c — speed of the dynamics network against plain dgemm.
 *
 * For each batch B, dimension D and hidden width H (default B = 100 and 1000,
 * D = 2 and 16, H = 64, i.e. FFJORD's H-H-H = 64-64-64), concatsquash + tanh:
 * median time per call of the forward pass, forward + exact trace (K = D
 * unit directions), forward + Hutchinson (K = 1), and the reverse sweep after
 * each of the latter two; the achieved GFLOP/s (multiply-adds of the network's
 * dgemms, cnf_net_flops_per_sample, times 2) beside cblas_dgemm alone on the
 * hidden layer's shape, (M x H) x (H x H) with M = B and M = (K+1)B.
 * One JSON line per case; its "width" field is H (the field names
 * "dgemm_gflops_Bx64x64" and "hidden" keep their names for the scripts that
 * read them: the former is the (B x H) x (H x H) product, the latter "H-H-H").
 *
 * Threads: OpenBLAS runs at one thread (--blas-threads N for more), as in
 * the `cnf` command; --threads N gives the network's workspace N threads of
 * its own (cnf_net_work_alloc_threads, which splits the batch). With one thread of each,
 * times are the calling thread's CPU time (robust on a shared machine), with
 * more, wall time. The dgemm reference always runs on the calling thread.
 *
 * Usage: bench_net [options] [min_seconds]    (bench_net --help lists them)
 */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>
#include <gsl/gsl_rng.h>

#include "bench_common.h"
#include "cnf/net.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* CPU time of the calling thread: with OpenBLAS at one thread all the work
 * runs there, and unlike wall time it does not count the time the thread
 * waits while other jobs hold the cores. */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int use_cpu_time;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef void (*bench_fn)(void *ctx);

/* Median seconds per call of fn and of ref, timed in alternation (at least
 * 15 pairs and min_seconds), so that a machine shared with other jobs slows
 * both alike and their ratio stays meaningful. Thread CPU time with one
 * BLAS thread, wall time otherwise. */
static void median_pair(bench_fn fn, void *ctx, bench_fn ref, void *rctx, double min_seconds,
                        double *t_fn, double *t_ref)
{
    enum { MAX_SAMPLES = 4001 };
    static double a[MAX_SAMPLES], b[MAX_SAMPLES];
    fn(ctx);   /* warm-up */
    ref(rctx);
    fn(ctx);
    ref(rctx);
    size_t n = 0;
    double start = now();
    while (n < MAX_SAMPLES && (n < 15 || now() - start < min_seconds)) {
        double t0 = use_cpu_time ? cpu_now() : now();
        fn(ctx);
        double t1 = use_cpu_time ? cpu_now() : now();
        ref(rctx);
        double t2 = use_cpu_time ? cpu_now() : now();
        a[n] = t1 - t0;
        b[n] = t2 - t1;
        n++;
    }
    qsort(a, n, sizeof *a, cmp_double);
    qsort(b, n, sizeof *b, cmp_double);
    *t_fn = a[n / 2];
    *t_ref = b[n / 2];
}

typedef struct {
    cnf_net *net;
    cnf_net_work *w;
    double *theta, *z, *eps, *f, *jv, *fbar, *jvbar, *zbar, *thetabar;
    double tbar;
    size_t B, D, K;
    const double *v;
} net_ctx;

static void run_forward(void *p)
{
    net_ctx *c = p;
    if (cnf_net_forward(c->net, c->w, c->theta, 0.5, c->z, c->B, c->K, c->v, c->f, c->jv)
        != CNF_OK)
        abort();
}

static void run_backward(void *p)
{
    net_ctx *c = p;
    if (cnf_net_backward(c->net, c->w, c->theta, c->fbar, c->jvbar, c->zbar, c->thetabar,
                         &c->tbar) != CNF_OK)
        abort();
}

typedef struct {
    size_t M, N, Kd;
    double *A, *Bm, *C;
} gemm_ctx;

static void run_gemm(void *p)
{
    gemm_ctx *g = p;
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)g->M, (int)g->N, (int)g->Kd, 1.0,
                g->A, (int)g->Kd, g->Bm, (int)g->Kd, 0.0, g->C, (int)g->N);
}

static gemm_ctx gemm_alloc(size_t M, size_t N, size_t Kd)
{
    gemm_ctx g = {M, N, Kd, malloc(M * Kd * sizeof(double)), malloc(N * Kd * sizeof(double)),
                  malloc(M * N * sizeof(double))};
    if (!g.A || !g.Bm || !g.C) {
        fprintf(stderr, "bench_net: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < M * Kd; i++)
        g.A[i] = 0.001 * (double)(i % 1000) - 0.5;
    for (size_t i = 0; i < N * Kd; i++)
        g.Bm[i] = 0.002 * (double)(i % 500) - 0.5;
    return g;
}

static void gemm_free(gemm_ctx *g)
{
    free(g->A);
    free(g->Bm);
    free(g->C);
}

/* Multiply-adds of the reverse sweep's dgemms per sample: the weight
 * gradient over every stacked row, the input cotangents over every row but
 * layer 0's tangents (the directions are constants). */
static double backward_madds(const cnf_net *net, size_t K, int unit)
{
    double total = 0.0;
    for (size_t j = 0; j < cnf_net_num_layers(net); j++) {
        cnf_net_layer lv;
        cnf_net_layer_view(net, j, &lv);
        double rows_w = 1.0 + ((unit && j == 0) ? 0.0 : (double)K);
        double rows_x = 1.0 + (j == 0 ? 0.0 : (double)K);
        total += (rows_w + rows_x) * (double)lv.in * (double)lv.out;
    }
    return total;
}

enum { MAX_LIST = 16 };

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: bench_net [options] [min_seconds]\n"
            "\n"
            "Network forward / reverse-sweep GFLOP/s against cblas_dgemm on the same\n"
            "shapes, one JSON line per (B, D, H, mode). Options:\n"
            "  --min-seconds S   time per measurement, at least 15 pairs (default 0.3;\n"
            "                    also accepted as the one positional argument)\n"
            "  --batches LIST    batch sizes B, comma-separated (default 100,1000)\n"
            "  --dims LIST       data dimensions D (default 2,16)\n"
            "  --widths LIST     hidden widths H, network H-H-H (default 64)\n"
            "  --threads N       the network workspace's own threads, splitting the batch\n"
            "                    (cnf_net_work_alloc_threads; default 1; N > 1 times\n"
            "                    wall clock)\n"
            "  --blas-threads N  OpenBLAS's threads (default 1, as in the cnf command)\n"
            "  -h, --help        this text\n"
            "\n"
            "With one BLAS and one network thread the times are the thread's CPU time,\n"
            "otherwise wall time.\n");
}

/* A positive integer in [1, max], the whole string. */
static int parse_size(const char *s, size_t max, size_t *out)
{
    char *end;
    if (*s < '0' || *s > '9')
        return 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end != '\0' || v == 0 || v > max)
        return 0;
    *out = (size_t)v;
    return 1;
}

/* "100,1000" into list (at most MAX_LIST values in [1, max]); count or 0. */
static size_t parse_list(const char *s, size_t max, size_t *list)
{
    size_t n = 0;
    for (;;) {
        char item[32];
        size_t len = strcspn(s, ",");
        if (n == MAX_LIST || len == 0 || len >= sizeof item)
            return 0;
        memcpy(item, s, len);
        item[len] = '\0';
        if (!parse_size(item, max, &list[n]))
            return 0;
        n++;
        if (s[len] == '\0')
            return n;
        s += len + 1;
    }
}

static int parse_seconds(const char *s, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || !(v >= 0.0) || v > 3600.0)
        return 0;
    *out = v;
    return 1;
}

int main(int argc, char **argv)
{
    bench_setup(&argc, argv);
    double min_seconds = 0.3;
    size_t batches[MAX_LIST] = {100, 1000}, dims[MAX_LIST] = {2, 16}, widths[MAX_LIST] = {64};
    size_t n_batches = 2, n_dims = 2, n_widths = 1, net_threads = 1;
    int have_positional = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        int ok = 1;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--min-seconds") == 0) {
            ok = val && parse_seconds(val, &min_seconds);
            i++;
        } else if (strcmp(a, "--batches") == 0) {
            ok = val && (n_batches = parse_list(val, 1000000, batches)) > 0;
            i++;
        } else if (strcmp(a, "--dims") == 0) {
            ok = val && (n_dims = parse_list(val, 1000, dims)) > 0;
            i++;
        } else if (strcmp(a, "--widths") == 0) {
            ok = val && (n_widths = parse_list(val, 100000, widths)) > 0;
            i++;
        } else if (strcmp(a, "--threads") == 0) {
            ok = val && parse_size(val, CNF_NET_MAX_THREADS, &net_threads);
            i++;
        } else if (a[0] != '-') {
            /* the positional min_seconds of tools/bench.sh */
            if (have_positional) {
                fprintf(stderr, "bench_net: unexpected argument '%s' (see --help)\n", a);
                return 2;
            }
            ok = parse_seconds(a, &min_seconds);
            have_positional = 1;
        } else {
            fprintf(stderr, "bench_net: unknown option '%s' (see --help)\n", a);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "bench_net: bad or missing value for '%s' (see --help)\n", a);
            return 2;
        }
    }

    gsl_rng *rng = gsl_rng_alloc(gsl_rng_mt19937);
    gsl_rng_set(rng, 1);

    for (size_t bi = 0; bi < n_batches; bi++)
        for (size_t di = 0; di < n_dims; di++)
            for (size_t wi = 0; wi < n_widths; wi++) {
                size_t B = batches[bi], D = dims[di], H = widths[wi];
                cnf_net_config cfg;
                cnf_net_config_default(&cfg, D);
                cfg.n_hidden = 3;
                for (size_t j = 0; j < 3; j++)
                    cfg.hidden[j] = H;
                char hidden[64];
                cnf_net_config_format_hidden(&cfg, hidden, sizeof hidden);
                cnf_net *net = cnf_net_alloc(&cfg);
                if (!net) {
                    fprintf(stderr, "bench_net: cannot build the network D = %zu, H = %zu\n", D, H);
                    return 1;
                }
                size_t P = cnf_net_num_params(net);
                net_ctx c = {0};
                c.net = net;
                c.B = B;
                c.D = D;
                c.w = cnf_net_work_alloc_threads(net, B, D, net_threads);
                int threads = openblas_get_num_threads();
                use_cpu_time = threads == 1 && net_threads == 1;
                c.theta = malloc(P * sizeof(double));
                c.thetabar = calloc(P, sizeof(double));
                c.z = malloc(B * D * sizeof(double));
                c.eps = malloc(B * D * sizeof(double));
                c.f = malloc(B * D * sizeof(double));
                c.fbar = malloc(B * D * sizeof(double));
                c.zbar = calloc(B * D, sizeof(double));
                c.jv = malloc(D * B * D * sizeof(double));
                c.jvbar = malloc(D * B * D * sizeof(double));
                if (!c.w || !c.theta || !c.thetabar || !c.z || !c.eps || !c.f || !c.fbar || !c.zbar
                    || !c.jv || !c.jvbar) {
                    fprintf(stderr, "bench_net: out of memory\n");
                    return 1;
                }
                cnf_net_init(net, c.theta, rng, 0);
                cnf_net_noise_draw(CNF_DIV_GAUSSIAN, rng, B * D, c.z);
                cnf_net_noise_draw(CNF_DIV_GAUSSIAN, rng, B * D, c.eps);
                cnf_net_noise_draw(CNF_DIV_GAUSSIAN, rng, B * D, c.fbar);

                /* the reference: one hidden layer's product, (M x H)(H x H), with M = B
                 * rows (values only) and M = (K+1)B (the stacked rows of the mode) */
                gemm_ctx g_b = gemm_alloc(B, H, H), g_bd = gemm_alloc((D + 1) * B, H, H),
                         g_b2 = gemm_alloc(2 * B, H, H);

                struct {
                    const char *mode;
                    size_t K;
                    const double *v;
                    int backward;
                    gemm_ctx *ref;
                } modes[5] = {
                    {"forward", 0, NULL, 0, &g_b},
                    {"forward_exact", D, NULL, 0, &g_bd},
                    {"forward_hutchinson", 1, c.eps, 0, &g_b2},
                    {"backward_exact", D, NULL, 1, &g_bd},
                    {"backward_hutchinson", 1, c.eps, 1, &g_b2},
                };
                double fwd_fraction = 0.0;
                double hh = (double)H * (double)H;
                for (int m = 0; m < 5; m++) {
                    c.K = modes[m].K;
                    c.v = modes[m].v;
                    double madds, t, t_b, t_ref;
                    if (!modes[m].backward) {
                        median_pair(run_forward, &c, run_gemm, &g_b, min_seconds, &t, &t_b);
                        if (modes[m].ref != &g_b)
                            median_pair(run_forward, &c, run_gemm, modes[m].ref, min_seconds, &t,
                                        &t_ref);
                        else
                            t_ref = t_b;
                        madds = cnf_net_flops_per_sample(net, c.K);
                    } else {
                        run_forward(&c);
                        /* cotangents of the divergence: c_b e_k (exact), c_b eps (Hutchinson) */
                        if (c.v == NULL) {
                            for (size_t k = 0; k < D; k++)
                                for (size_t b = 0; b < B; b++)
                                    for (size_t d = 0; d < D; d++)
                                        c.jvbar[(k * B + b) * D + d] =
                                            d == k ? -1.0 / (double)B : 0;
                        } else {
                            for (size_t i = 0; i < B * D; i++)
                                c.jvbar[i] = -c.eps[i] / (double)B;
                        }
                        median_pair(run_backward, &c, run_gemm, &g_b, min_seconds, &t, &t_b);
                        median_pair(run_backward, &c, run_gemm, modes[m].ref, min_seconds, &t,
                                    &t_ref);
                        madds = backward_madds(net, c.K, c.v == NULL);
                    }
                    double gflops = 2.0 * madds * (double)B / t * 1e-9;
                    double gf_b = 2.0 * (double)B * hh / t_b * 1e-9;
                    double gf_ref = 2.0 * (double)modes[m].ref->M * hh / t_ref * 1e-9;
                    if (m == 0)
                        fwd_fraction = gflops / gf_b;
                    printf("{\"bench\":\"net\",\"threads\":%d,\"net_threads\":%zu,\"B\":%zu,"
                           "\"D\":%zu,\"width\":%zu,"
                           "\"hidden\":\"%s\",\"layer\":\"concatsquash\",\"act\":\"tanh\","
                           "\"clock\":\"%s\",\"mode\":\"%s\",\"K\":%zu,\"us_per_call\":%.1f,"
                           "\"gflops\":%.2f,\"dgemm_gflops_Bx64x64\":%.2f,"
                           "\"fraction_of_dgemm\":%.3f,\"dgemm_gflops_stacked_rows\":%.2f,"
                           "\"fraction_of_stacked_dgemm\":%.3f}\n",
                           threads, net_threads, B, D, H, hidden,
                           use_cpu_time ? "thread_cpu" : "wall", modes[m].mode, c.K, t * 1e6,
                           gflops, gf_b, gflops / gf_b, gf_ref, gflops / gf_ref);
                }
                gemm_free(&g_b);
                gemm_free(&g_bd);
                gemm_free(&g_b2);
                if (B == 1000)
                    printf("{\"bench\":\"net\",\"threads\":%d,\"net_threads\":%zu,\"B\":%zu,"
                           "\"D\":%zu,\"width\":%zu,"
                           "\"summary\":\"forward GFLOP/s over dgemm (B x %zu)x(%zux%zu) GFLOP/s\","
                           "\"forward_fraction_of_dgemm\":%.3f}\n",
                           threads, net_threads, B, D, H, H, H, H, fwd_fraction);
                fflush(stdout);
                cnf_net_work_free(c.w);
                free(c.theta); free(c.thetabar); free(c.z); free(c.eps); free(c.f); free(c.fbar);
                free(c.zbar); free(c.jv); free(c.jvbar);
                cnf_net_free(net);
            }
    gsl_rng_free(rng);
    return 0;
}
