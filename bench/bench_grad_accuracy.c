/* bench_grad_accuracy.c — how accurate is the training gradient at a given
 * tolerance, and what does it cost (issue 14)?
 *
 * For one model and a fixed batch (the first --rows rows of a data set),
 * cnf_flow_nll_grad is computed at rtol = atol = tol (forward and backward
 * solves alike, training's other solver settings: cnf_train_options_default,
 * cold first steps) for every tolerance and every adjoint variant, and
 * compared with a reference gradient at --ref-tol (default 1e-12):
 *
 *     rel    = ||g - g_ref||_2 / ||g_ref||_2          over all P entries
 *     maxabs = max_i |g_i - g_ref_i| / max_i |g_ref_i|   (entrywise, scaled)
 *
 * with the forward / backward evaluation counts and the median wall time of
 * --reps calls. The reference is the default gradient (dense-grp-rel) at
 * ref-tol; the backsolve gradient (bs-grp-rel) at ref-tol is printed beside
 * it (their difference says how far the reference itself can be trusted),
 * and so are the checkpointed one of before issue 14 (ckpt-rms) and
 * dense-grp's. Hutchinson's noise is reseeded (--seed) before every
 * call, so every variant sees the same draw as the reference.
 *
 * Variants (--variants, comma-separated, default all):
 *   ckpt-rms         checkpoints, cubic Hermite, one RMS norm (before issue 14)
 *   ckpt-rms-semi    the same with g out of the norm (the seminorm)
 *   ckpt-grp         checkpoints, Hermite, the largest per-group RMS (a; g)
 *   ckpt-grp-semi    ... with g out
 *   dense-rms, dense-rms-semi, dense-grp, dense-grp-semi
 *                    the same four with dopri5's continuous extension
 *   bs-rms, bs-rms-semi, bs-grp, bs-grp-semi
 *                    backsolve (z integrated backwards; groups a; z; g)
 *   (these twelve judge g's entries against atol: CNF_ADJOINT_GTOL_ENTRYWISE)
 *   ckpt-grp-rel, dense-grp-rel (the default), bs-grp-rel
 *                    the grouped norm with g's tolerance relative to its
 *                    size (CNF_ADJOINT_GTOL_RELATIVE)
 *
 * Usage: bench_grad_accuracy --model M.h5 --data F.h5[:/train] [--rows 100]
 *          [--tols 1e-3,1e-4,1e-5,1e-6,1e-7,1e-8] [--ref-tol 1e-12]
 *          [--divergence exact|gaussian|rademacher] [--seed 1] [--reps 3]
 *          [--variants LIST] [--label TEXT] [--fwd-tol T] [--atol-ratio R]
 * --atol-ratio R sets atol = R * rtol (default 1; the tabular preset's
 * rtol 1e-6, atol 1e-8 is --tols 1e-6 --atol-ratio 0.01; the reference
 * keeps rtol = atol). --fwd-tol fixes the forward solves' tolerance (the backward ones follow
 * --tols), to tell the forward solve's share of the error from the
 * backward one's. Prints one JSON line for the reference and one per (tolerance, variant).
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gsl/gsl_errno.h>
#include <gsl/gsl_rng.h>

#include "bench_common.h"
#include "cnf/data.h"
#include "cnf/flow.h"
#include "cnf/io.h"
#include "cnf/train.h"

typedef struct {
    char name[16];
    int backsolve, seminorm;
    cnf_adjoint_norm norm;
    cnf_ode_interp interp;
    cnf_adjoint_gtol gtol;
} variant;

/* The variants in the order of the header comment: z from Hermite
 * checkpoints, dense checkpoints or backsolve; one RMS or groups; g in or
 * out; then the three grouped ones with g's tolerance relative. */
#define N_ENTRYWISE 12
#define N_VARIANTS (N_ENTRYWISE + 3)
enum { V_CKPT_RMS = 0, V_DENSE_GRP = 6, V_DENSE_GRP_REL = 13, V_BS_GRP_REL = 14 };
static variant variants[N_VARIANTS];

static void make_variants(void)
{
    static const char *const zname[3] = {"ckpt", "dense", "bs"};
    for (int i = N_ENTRYWISE; i < N_VARIANTS; i++) {
        int z = i - N_ENTRYWISE;
        variant *v = &variants[i];
        snprintf(v->name, sizeof v->name, "%s-grp-rel", zname[z]);
        v->backsolve = z == 2;
        v->seminorm = 0;
        v->norm = CNF_ADJOINT_NORM_GROUPS;
        v->interp = z == 1 ? CNF_ODE_INTERP_DENSE : CNF_ODE_INTERP_HERMITE;
        v->gtol = CNF_ADJOINT_GTOL_RELATIVE;
    }
    for (int i = 0; i < N_ENTRYWISE; i++) {
        int z = i / 4, grp = (i / 2) % 2, semi = i % 2;
        variant *v = &variants[i];
        snprintf(v->name, sizeof v->name, "%s-%s%s", zname[z], grp ? "grp" : "rms",
                 semi ? "-semi" : "");
        v->backsolve = z == 2;
        v->seminorm = semi;
        v->norm = grp ? CNF_ADJOINT_NORM_GROUPS : CNF_ADJOINT_NORM_RMS;
        v->interp = z == 1 ? CNF_ODE_INTERP_DENSE : CNF_ODE_INTERP_HERMITE;
        v->gtol = CNF_ADJOINT_GTOL_ENTRYWISE;
    }
}

static void usage(const char *prog, FILE *out)
{
    fprintf(out,
            "usage: %s --model M.h5 --data F.h5[:/train] [--rows 100]\n"
            "          [--tols 1e-3,1e-4,1e-5,1e-6,1e-7,1e-8] [--ref-tol 1e-12]\n"
            "          [--divergence exact|gaussian|rademacher] [--seed 1] [--reps 3]\n"
            "          [--variants LIST] [--label TEXT] [--fwd-tol T] [--atol-ratio R]\n"
            "variants:", prog);
    for (size_t v = 0; v < N_VARIANTS; v++)
        fprintf(out, " %s", variants[v].name);
    fprintf(out, "\n");
}

typedef struct {
    const cnf_flow *flow;
    cnf_flow_work *w;
    gsl_rng *rng;
    unsigned long seed;
    const double *X;
    size_t B;
} bench_ctx;

/* One gradient with the given options; the noise reseeded so that every call
 * sees the reference's draw. */
static int gradient(bench_ctx *c, const cnf_flow_options *opt, double *grad,
                    cnf_flow_stats *st)
{
    if (cnf_flow_work_set_options(c->w, opt) != CNF_OK)
        return -1;
    gsl_rng_set(c->rng, c->seed);
    return cnf_flow_nll_grad(c->flow, c->w, c->X, c->B, c->rng, NULL, NULL, grad, st) == CNF_OK
               ? 0
               : -1;
}

static double fwd_tol_override = 0.0;   /* --fwd-tol: the forward solves' own */
static double atol_ratio = 1.0;         /* --atol-ratio: atol = ratio * rtol */

static cnf_flow_options options_for(const cnf_flow_options *base, const variant *v, double tol)
{
    cnf_flow_options o = *base;
    o.solver.rtol = fwd_tol_override > 0.0 ? fwd_tol_override : tol;
    o.solver.atol = atol_ratio * o.solver.rtol;
    o.adjoint.solver.rtol = tol;
    o.adjoint.solver.atol = atol_ratio * tol;
    o.adjoint.backsolve = v->backsolve;
    o.adjoint.seminorm = v->seminorm;
    o.adjoint.norm = v->norm;
    o.adjoint.checkpoints = v->interp;
    o.adjoint.gradient_tol = v->gtol;
    return o;
}

static void compare(const double *g, const double *ref, size_t P, double *rel, double *maxabs)
{
    double num = 0.0, den = 0.0, mx = 0.0, rmax = 0.0;
    for (size_t i = 0; i < P; i++) {
        double d = g[i] - ref[i];
        num += d * d;
        den += ref[i] * ref[i];
        mx = fmax(mx, fabs(d));
        rmax = fmax(rmax, fabs(ref[i]));
    }
    *rel = sqrt(num / den);
    *maxabs = mx / rmax;
}

static int selected(const char *list, const char *name)
{
    if (!list || !strcmp(list, "all"))
        return 1;
    size_t len = strlen(name);
    for (const char *p = list; *p;) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == len && !strncmp(p, name, len))
            return 1;
        if (!e)
            break;
        p = e + 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *model = NULL, *data = NULL, *label = "", *tols_s = "1e-3,1e-4,1e-5,1e-6,1e-7,1e-8";
    const char *div_s = "exact", *vlist = "all";
    long rows = 100, seed = 1, reps = 3;
    double ref_tol = 1e-12;
    make_variants();
    if (bench_help_requested(argc, argv)) {
        usage(argv[0], stdout);
        return 0;
    }
    const bench_opt opts[] = {
        {"--model", BENCH_STR, &model},         {"--data", BENCH_STR, &data},
        {"--label", BENCH_STR, &label},         {"--tols", BENCH_STR, &tols_s},
        {"--divergence", BENCH_STR, &div_s},    {"--variants", BENCH_STR, &vlist},
        {"--rows", BENCH_LONG, &rows},          {"--seed", BENCH_LONG, &seed},
        {"--reps", BENCH_LONG, &reps},          {"--ref-tol", BENCH_DOUBLE, &ref_tol},
        {"--fwd-tol", BENCH_DOUBLE, &fwd_tol_override},
        {"--atol-ratio", BENCH_DOUBLE, &atol_ratio},
        {NULL, BENCH_STR, NULL}};
    if (bench_parse_options(argc, argv, "bench_grad_accuracy", opts)) {
        usage(argv[0], stderr);
        return 2;
    }
    if (!model || !data || rows < 1 || reps < 1 || !(ref_tol > 0.0) || !(atol_ratio > 0.0)) {
        usage(argv[0], stderr);
        return 2;
    }
    gsl_set_error_handler_off();

    cnf_flow *flow = NULL;
    double *X = NULL;
    size_t N = 0, D = 0;
    cnf_divergence div;
    if (cnf_model_load(model, &flow, NULL) != CNF_OK ||
        cnf_data_read_address(data, "/train", &X, &N, &D) != CNF_OK ||
        cnf_divergence_from_name(div_s, &div) != CNF_OK) {
        fprintf(stderr, "bench_grad_accuracy: %s\n", cnf_last_error());
        return 1;
    }
    if (D != cnf_flow_dim(flow) || N < (size_t)rows) {
        fprintf(stderr, "bench_grad_accuracy: %s has %zu rows of %zu; need %ld of %zu\n", data, N,
                D, rows, cnf_flow_dim(flow));
        return 1;
    }
    cnf_train_options topt;
    cnf_train_options_default(&topt);
    cnf_flow_options base = topt.flow;
    base.warm_start = 0;   /* every call stands alone */
    base.divergence = div;

    size_t B = (size_t)rows, P = cnf_flow_num_params(flow);
    bench_ctx c = {flow, cnf_flow_work_alloc(flow, B, &base), gsl_rng_alloc(gsl_rng_mt19937),
                   (unsigned long)seed, X, B};
    double *ref = malloc(P * sizeof *ref), *g = malloc(P * sizeof *g);
    double *times = malloc((size_t)reps * sizeof *times), *tmp = malloc((size_t)reps * sizeof *tmp);
    if (!c.w || !c.rng || !ref || !g || !times || !tmp) {
        fprintf(stderr, "bench_grad_accuracy: %s\n", c.w ? "out of memory" : cnf_last_error());
        return 1;
    }

    /* the reference, and the backsolve one beside it */
    const variant vref = variants[V_DENSE_GRP_REL], vbs = variants[V_BS_GRP_REL];
    double fwd_tol = fwd_tol_override, ratio = atol_ratio;
    fwd_tol_override = 0.0;   /* not for the reference */
    atol_ratio = 1.0;
    cnf_flow_options o = options_for(&base, &vref, ref_tol);
    cnf_flow_stats st_ref, st_bs;
    if (gradient(&c, &o, ref, &st_ref)) {
        fprintf(stderr, "bench_grad_accuracy: reference: %s\n", cnf_last_error());
        return 1;
    }
    o = options_for(&base, &vbs, ref_tol);
    double rel_bs = NAN, max_bs = NAN;
    if (gradient(&c, &o, g, &st_bs) == 0)
        compare(g, ref, P, &rel_bs, &max_bs);
    cnf_flow_stats st_old;
    o = options_for(&base, &variants[V_CKPT_RMS], ref_tol);
    double rel_old = NAN, max_old = NAN;
    if (gradient(&c, &o, g, &st_old) == 0)
        compare(g, ref, P, &rel_old, &max_old);
    o = options_for(&base, &variants[V_DENSE_GRP], ref_tol);
    double rel_grp = NAN, max_grp = NAN;
    if (gradient(&c, &o, g, &st_old) == 0)
        compare(g, ref, P, &rel_grp, &max_grp);
    double gnorm = 0.0;
    for (size_t i = 0; i < P; i++)
        gnorm += ref[i] * ref[i];
    printf("{\"bench\":\"grad_accuracy_ref\",\"label\":\"%s\",\"model\":\"%s\",\"data\":\"%s\","
           "\"rows\":%zu,\"P\":%zu,\"divergence\":\"%s\",\"ref_tol\":%g,\"ref\":\"%s\","
           "\"ref_norm\":%.6e,\"nfe_fwd\":%zu,\"nfe_bwd\":%zu,\"backsolve_rel\":%.3e,"
           "\"backsolve_maxabs\":%.3e,\"backsolve_nfe_bwd\":%zu,\"ckpt_rms_rel\":%.3e,"
           "\"ckpt_rms_maxabs\":%.3e,\"dense_grp_rel\":%.3e,\"dense_grp_maxabs\":%.3e}\n",
           label, model, data, B, P, div_s, ref_tol, vref.name, sqrt(gnorm), st_ref.forward.nfe,
           st_ref.backward.nfe, rel_bs, max_bs, st_bs.backward.nfe, rel_old, max_old, rel_grp,
           max_grp);
    fflush(stdout);

    fwd_tol_override = fwd_tol;
    atol_ratio = ratio;
    for (const char *p = tols_s; *p;) {
        double tol = strtod(p, NULL);
        for (size_t v = 0; v < N_VARIANTS; v++) {
            if (!selected(vlist, variants[v].name))
                continue;
            o = options_for(&base, &variants[v], tol);
            cnf_flow_stats st;
            int failed = 0;
            for (long r = 0; r < reps && !failed; r++) {
                double t0 = bench_now();
                failed = gradient(&c, &o, g, &st);
                times[r] = 1e3 * (bench_now() - t0);
            }
            double rel = NAN, maxabs = NAN;
            if (!failed)
                compare(g, ref, P, &rel, &maxabs);
            bench_summary sw = bench_summarise(times, (size_t)reps, tmp);
            printf("{\"bench\":\"grad_accuracy\",\"label\":\"%s\",\"model\":\"%s\",\"tol\":%g,"
                   "\"atol\":%g,"
                   "\"variant\":\"%s\",\"rel\":%.3e,\"maxabs\":%.3e,\"nfe_fwd\":%zu,"
                   "\"nfe_bwd\":%zu,\"steps_bwd\":\"%zu+%zu\",\"median_ms\":%.3f,"
                   "\"failed\":%d,\"load1\":%.2f}\n",
                   label, model, tol, o.adjoint.solver.atol, variants[v].name, rel, maxabs, st.forward.nfe,
                   st.backward.nfe, st.backward.accepted, st.backward.rejected, sw.median, failed,
                   bench_loadavg());
            fflush(stdout);
        }
        const char *e = strchr(p, ',');
        if (!e)
            break;
        p = e + 1;
    }
    free(ref);
    free(g);
    free(times);
    free(tmp);
    free(X);
    gsl_rng_free(c.rng);
    cnf_flow_work_free(c.w);
    cnf_flow_free(flow);
    return 0;
}
