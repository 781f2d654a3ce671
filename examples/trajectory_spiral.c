/* trajectory_spiral.c — fit a neural vector field to a trajectory with the
 * observation-times adjoint (cnf/adjoint.h), after torchdiffeq's ode_demo.
 *
 * Truth: dy/dt = (y^3) A with y a row vector, A = [[-0.1, 2], [-2, -0.1]],
 * y(0) = (2, 0), observed at 1000 times evenly spread over [0, 25].
 * Model: dy/dt = net(y^3), net an MLP 2-50-2 (tanh, "ignore" layers: no
 * time input) from cnf/net.h. Each iteration takes 20 random windows of 10
 * consecutive observations (torchdiffeq's batch_time / batch_size), solves
 * them forwards as one batch from their first points, and backpropagates the
 * mean absolute error at the 10 times through the adjoint: a jump of
 * dLoss/dz(t_i) at each observation, z(t) from the forward checkpoints.
 * Adam (lr 3e-3, halved every 1000 iterations). Every 100 iterations the whole trajectory is predicted
 * from y(0) and its mean absolute error printed; it falls as the field is
 * learned.
 *
 * Usage: trajectory_spiral [iterations (default 3000)] [seed (default 1)]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <gsl/gsl_rng.h>

#include "cnf/adjoint.h"
#include "cnf/net.h"
#include "cnf/ode.h"

#define D 2
#define N_OBS 1000
#define T_END 25.0
#define WIN 10      /* observations per window */
#define NB 20       /* windows per batch */

static const double A_TRUE[4] = { -0.1, 2.0, -2.0, -0.1 };

static int true_rhs(double t, const double *y, double *dy, void *params)
{
    double c0 = y[0] * y[0] * y[0], c1 = y[1] * y[1] * y[1];
    dy[0] = c0 * A_TRUE[0] + c1 * A_TRUE[2];   /* row vector times A */
    dy[1] = c0 * A_TRUE[1] + c1 * A_TRUE[3];
    return 0;
}

/* The model over a batch of B states (B x D). */
typedef struct {
    const cnf_net *net;
    cnf_net_work *work;
    const double *theta;    /* P */
    size_t B;
    double *u;              /* B x D: y^3 */
    double *ubar;           /* B x D */
    double *f;              /* B x D */
} model;

static int model_eval(model *m, double t, const double *y, double *f)
{
    for (size_t i = 0; i < m->B * D; i++)
        m->u[i] = y[i] * y[i] * y[i];
    if (cnf_net_forward(m->net, m->work, m->theta, t, m->u, m->B, 0, NULL, f, NULL) != CNF_OK)
        return -1;
    for (size_t i = 0; i < m->B * D; i++)
        if (!isfinite(f[i]))
            return 1;
    return 0;
}

static int model_rhs(double t, const double *y, double *dy, void *params)
{
    return model_eval(params, t, y, dy);
}

/* a^T df/dy = 3 y^2 .* (a^T dnet/du); no integral loss. */
static int model_vjp(double t, const double *y, const double *a, double *f, double *l,
                     double *ybar, double *thetabar, void *ctx)
{
    model *m = ctx;
    int rc = model_eval(m, t, y, f ? f : m->f);
    if (rc != 0)
        return rc;
    if (l)
        *l = 0.0;
    if (!ybar && !thetabar)
        return 0;
    memset(m->ubar, 0, m->B * D * sizeof *m->ubar);
    if (cnf_net_backward(m->net, m->work, m->theta, a, NULL, m->ubar, thetabar, NULL) != CNF_OK)
        return -1;
    if (ybar)
        for (size_t i = 0; i < m->B * D; i++)
            ybar[i] += 3.0 * y[i] * y[i] * m->ubar[i];
    return 0;
}

/* Predict the whole trajectory from y(0); mean absolute error. */
static double full_error(model *m, cnf_ode_solver *s, const double *t, const double *ytrue)
{
    double y[D] = { ytrue[0], ytrue[1] }, err = 0.0;
    size_t B = m->B;
    m->B = 1;
    for (size_t i = 1; i < N_OBS; i++) {
        if (cnf_ode_solve(s, model_rhs, m, t[i - 1], t[i], y, NULL, NULL) != CNF_OK) {
            m->B = B;
            return INFINITY;
        }
        err += fabs(y[0] - ytrue[i * D]) + fabs(y[1] - ytrue[i * D + 1]);
    }
    m->B = B;
    return err / (double)((N_OBS - 1) * D);
}

int main(int argc, char **argv)
{
    /* what a program embedding cnf does (cnf/net.h): OpenBLAS at one
     * thread, for the same bits on every machine */
    openblas_set_num_threads(1);
    /* strict: atoi read "--help" as 0 iterations and ran anyway */
    char *end1 = NULL, *end2 = NULL;
    long iters = argc > 1 ? strtol(argv[1], &end1, 10) : 3000;
    unsigned long seed = argc > 2 ? strtoul(argv[2], &end2, 10) : 1;
    if (argc > 3 || (end1 && (end1 == argv[1] || *end1 || iters < 1 || iters > 1000000))
        || (end2 && (end2 == argv[2] || *end2))) {
        int help = argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"));
        fprintf(help ? stdout : stderr, "usage: %s [iterations >= 1 (default 3000)] [seed (default 1)]\n",
                argv[0]);
        return help ? 0 : 2;
    }

    /* the observations */
    static double t[N_OBS], ytrue[N_OBS * D];
    cnf_ode_options topt;
    cnf_ode_options_default(&topt);
    topt.rtol = topt.atol = 1e-10;
    cnf_ode_solver *ts = cnf_ode_solver_alloc(D, &topt);
    double y[D] = { 2.0, 0.0 };
    for (size_t i = 0; i < N_OBS; i++) {
        t[i] = T_END * (double)i / (double)(N_OBS - 1);
        if (i > 0 && cnf_ode_solve(ts, true_rhs, NULL, t[i - 1], t[i], y, NULL, NULL) != CNF_OK) {
            fprintf(stderr, "trajectory_spiral: %s\n", cnf_last_error());
            return 1;
        }
        memcpy(ytrue + i * D, y, sizeof y);
    }
    cnf_ode_solver_free(ts);

    /* the model */
    cnf_net_config cfg;
    cnf_net_config_default(&cfg, D);
    cnf_net_config_parse_hidden(&cfg, "50");
    cfg.layer_type = CNF_LAYER_IGNORE;
    cfg.activation = CNF_ACT_TANH;
    cnf_net *net = cnf_net_alloc(&cfg);
    size_t P = cnf_net_num_params(net);
    double *theta = malloc(P * sizeof *theta), *grad = malloc(P * sizeof *grad);
    double *m1 = calloc(P, sizeof *m1), *m2 = calloc(P, sizeof *m2);
    gsl_rng *rng = gsl_rng_alloc(gsl_rng_mt19937);
    gsl_rng_set(rng, seed);
    cnf_net_init(net, theta, rng, 0);
    static double u[NB * D], ubar[NB * D], fb[NB * D];
    model m = { net, cnf_net_work_alloc(net, NB, 1), theta, NB, u, ubar, fb };

    cnf_ode_options fopt;
    cnf_ode_options_default(&fopt);
    fopt.rtol = fopt.atol = 1e-7;
    cnf_ode_solver *fwd = cnf_ode_solver_alloc(NB * D, &fopt);
    cnf_ode_solver *one = cnf_ode_solver_alloc(D, &fopt);
    cnf_ode_record *rec = cnf_ode_record_alloc(NB * D);
    cnf_adjoint_options ao;
    cnf_adjoint_options_default(&ao);
    ao.solver.rtol = ao.solver.atol = 1e-7;
    ao.seminorm = 1;
    cnf_adjoint *adj = cnf_adjoint_alloc(NB * D, P, &ao);
    if (!net || !theta || !grad || !m1 || !m2 || !m.work || !fwd || !one || !rec || !adj) {
        fprintf(stderr, "trajectory_spiral: set-up failed: %s\n", cnf_last_error());
        return 1;
    }
    cnf_adjoint_problem pb = { NB * D, P, model_vjp, &m };

    printf("# fitting dy/dt = net(y^3), net 2-50-2 tanh (P = %zu), to %d observations of the spiral\n", P,
           N_OBS);
    printf("# iter  window-loss  trajectory-MAE  fwd-nfe  back-nfe\n");
    printf("%6d  %11s  %14.6f\n", 0, "-", full_error(&m, one, t, ytrue));
    static double z_obs[WIN * NB * D], dz_obs[WIN * NB * D];
    double a[NB * D];
    const double lr0 = 3e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
    double avg_loss = 0.0;
    size_t nfe_f = 0, nfe_b = 0;
    for (long it = 1; it <= iters; it++) {
        /* windows [s, s + WIN) of the observations; all start at time 0
         * (the truth is autonomous), as in ode_demo */
        size_t starts[NB];
        for (size_t b = 0; b < NB; b++) {
            starts[b] = gsl_rng_uniform_int(rng, N_OBS - WIN);
            memcpy(a + b * D, ytrue + starts[b] * D, D * sizeof *a);
        }
        double z[NB * D];
        memcpy(z, a, sizeof z);
        cnf_ode_record_clear(rec);
        double loss = 0.0, scale = 1.0 / (double)(WIN * NB * D);
        int ok = 1;
        for (size_t i = 0; i < WIN && ok; i++) {
            if (i > 0) {   /* the record keeps the initial point too */
                cnf_ode_stats st;
                ok = cnf_ode_solve(fwd, model_rhs, &m, t[i - 1], t[i], z, rec, &st) == CNF_OK;
                nfe_f += st.nfe;
            }
            for (size_t b = 0; b < NB; b++)
                for (size_t d = 0; d < D; d++) {
                    size_t k = (i * NB + b) * D + d;
                    double r = z[b * D + d] - ytrue[(starts[b] + i) * D + d];
                    z_obs[k] = z[b * D + d];
                    loss += fabs(r) * scale;
                    dz_obs[k] = (r > 0 ? 1.0 : r < 0 ? -1.0 : 0.0) * scale;
                }
        }
        if (!ok) {
            fprintf(stderr, "trajectory_spiral: forward solve failed at iteration %ld: %s\n", it,
                    cnf_last_error());
            return 1;
        }
        cnf_ode_stats bst;
        if (cnf_adjoint_solve(adj, &pb, rec, 0.0, WIN, t, z_obs, dz_obs, a, grad, NULL, &bst) != CNF_OK) {
            fprintf(stderr, "trajectory_spiral: adjoint failed at iteration %ld: %s\n", it, cnf_last_error());
            return 1;
        }
        nfe_b += bst.nfe;
        /* Adam, the step halved every 1000 iterations */
        double lr = lr0 * pow(0.5, (double)((it - 1) / 1000));
        double c1 = 1.0 - pow(beta1, it), c2 = 1.0 - pow(beta2, it);
        for (size_t p = 0; p < P; p++) {
            m1[p] = beta1 * m1[p] + (1 - beta1) * grad[p];
            m2[p] = beta2 * m2[p] + (1 - beta2) * grad[p] * grad[p];
            theta[p] -= lr * (m1[p] / c1) / (sqrt(m2[p] / c2) + eps);
        }
        avg_loss += loss;
        /* every 100 iterations, and the last one (the figure of the run) */
        if (it % 100 == 0 || it == iters) {
            double k = (double)((it - 1) % 100 + 1);   /* iterations in this window */
            printf("%6ld  %11.6f  %14.6f  %7.1f  %8.1f\n", it, avg_loss / k, full_error(&m, one, t, ytrue),
                   (double)nfe_f / k, (double)nfe_b / k);
            fflush(stdout);
            avg_loss = 0.0;
            nfe_f = nfe_b = 0;
        }
    }
    cnf_adjoint_free(adj);
    cnf_ode_record_free(rec);
    cnf_ode_solver_free(fwd);
    cnf_ode_solver_free(one);
    cnf_net_work_free(m.work);
    cnf_net_free(net);
    gsl_rng_free(rng);
    free(theta);
    free(grad);
    free(m1);
    free(m2);
    return 0;
}
