/* cnf_grad.c — `cnf grad`: the gradient of the mean NLL of a data set with
 * respect to every parameter of a model (network weights and each block's
 * end time T), by the integral-loss adjoint (cnf_flow_nll_grad,
 * docs/mathematics.md, "The adjoint"), written in the model file's own layout (cnf/io.h).
 *
 * --check compares it with central differences of the mean NLL,
 *     (NLL(p + h e_i) - NLL(p - h e_i)) / (2h)   for every parameter i,
 * each NLL from a forward solve at tight tolerances (--check-rtol), like
 * torch.autograd.gradcheck. The relative error of entry i is
 *     |a_i - f_i| / max(|a_i|, |f_i|, floor),  floor = 1e-3 * max_j |f_j|,
 * so that entries near zero are judged against the gradient's scale rather
 * than against themselves. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cnf/io.h"
#include "cnf/ode.h"
#include "commands.h"
#include "model_cli.h"

/* Mean NLL of X (N x D) at the flow's current parameters. */
static double mean_nll(const cnf_flow *flow, cnf_flow_work *w, const double *X, size_t N,
                       double *ll)
{
    cli_check(cnf_flow_log_likelihood(flow, w, X, N, NULL, ll, NULL), "finite differences");
    double s = 0.0;
    for (size_t i = 0; i < N; i++)
        s -= ll[i];
    return s / (double)N;
}

/* Central differences of the mean NLL of X (N x D) for every parameter into
 * fd (P). 2P solves take a while: a
 * \r progress line on a terminal, else a line every ~10% or 30 s. */
static void fd_gradient(cnf_flow *flow, cnf_flow_work *w, const double *X, size_t N, double h,
                          double *fd)
{
    const size_t P = cnf_flow_num_params(flow);
    double *p = cnf_flow_params(flow);
    double *ll = cli_calloc_doubles(N);   /* N */
    size_t next_pct = 10;
    int tty = isatty(STDERR_FILENO);
    double tc = cli_now(), last = tc;
    for (size_t i = 0; i < P; i++) {
        double now = cli_now();
        if (!cli_quiet && tty && now - last >= 0.2) {
            fprintf(stderr, "\r\033[Kcheck: parameter %zu/%zu", i, P);
            last = now;
        } else if (!cli_quiet && !tty && i > 0 && (100 * i / P >= next_pct || now - last >= 30.0)) {
            fprintf(stderr, "check: parameter %zu/%zu (%.0f s)\n", i, P, now - tc);
            last = now;
            while (next_pct <= 100 * i / P)
                next_pct += 10;
        }
        double p0 = p[i];
        p[i] = p0 + h;
        double fp = mean_nll(flow, w, X, N, ll);
        p[i] = p0 - h;
        double fm = mean_nll(flow, w, X, N, ll);
        p[i] = p0;
        fd[i] = (fp - fm) / (2.0 * h);
    }
    if (!cli_quiet && tty)
        fprintf(stderr, "\r\033[K");
    free(ll);
}

int cmd_grad(int argc, char **argv)
{
    const char *model = NULL, *data = NULL, *out = NULL;
    int check = 0, json = 0;
    unsigned long seed = 1;
    double check_rtol = 1e-13, check_atol = 1e-13, h = 1e-4, check_step = 1e-3, check_tol = 1e-5;
    const char *check_solver = "dopri5";
    cli_solve_args sa;
    cli_solve_args_default(&sa);
    sa.rtol = sa.atol = 1e-12;
    cli_option opts[] = {
        {"model", CLI_STRING, &model, "M.h5", "model file", CLI_REQUIRED, 0},
        {"data", CLI_STRING, &data, "F.h5:/x", "data set (path default /train)", CLI_REQUIRED, 0},
        {"out", CLI_STRING, &out, "G.h5", "gradient file in the model's layout", NULL, 0},
        CLI_SOLVE_OPTIONS_OWN(sa),
        CLI_DIVERGENCE_OPTION(sa),
        {"check", CLI_FLAG, &check, NULL,
         "compare with central differences for every parameter; print the largest relative error",
         NULL, 0},
        {"check-tol", CLI_POS, &check_tol, "T",
         "--check fails (exit status 3) when the largest relative error exceeds T", NULL, 0},
        {"check-rtol", CLI_POS, &check_rtol, "R", "relative tolerance of the --check solves", NULL, 0},
        {"check-atol", CLI_POS, &check_atol, "A", "absolute tolerance of the --check solves", NULL, 0},
        {"check-h", CLI_POS, &h, "H", "finite-difference step", NULL, 0},
        {"check-solver", CLI_STRING, &check_solver, "NAME",
         "solver of the --check solves (a fixed-step one such as rk4 keeps the step sequence "
         "fixed, so the differences see no step-size switching)", NULL, 0},
        {"check-step", CLI_POS, &check_step, "H", "step size of a fixed-step --check solver", NULL, 0},
        {"seed", CLI_SEED, &seed, "S", "seed of the Hutchinson noise (unused when exact)", NULL, 0},
        {"json", CLI_FLAG, &json, NULL, "print one JSON object with the results on stdout", NULL, 0},
        {NULL, 0, NULL, NULL, NULL, NULL, 0}};
    const char *pos[1];
    size_t n_pos;
    cli_parse(argc, argv, opts, "grad --model M.h5 --data F.h5:/x [--out G.h5] [--check]",
              "Gradient of the mean negative log-likelihood of a data set with respect to\n"
              "every parameter (adjoint method), in the model file's layout\n"
              "(/blocks/k/layers/j/W, ..., /blocks/k/T). --check compares every entry with\n"
              "central differences of forward solves and prints the largest relative error\n"
              "|a - f| / max(|a|, |f|, 1e-3 max|f|); use it with the exact divergence.\n"
              "It runs 2P forward solves and shows its progress. Exit status: 0, 1 on an\n"
              "error, 2 on a usage error, 3 when --check finds an error above --check-tol.",
              pos, 0, &n_pos);
    if (!out && !check)
        cli_usage("nothing to do: give --out G.h5 and/or --check");
    if (out) {
        cnf_data_address a;
        const char *inputs[] = {model, cli_address_file(data, &a)};
        cli_check_output(out, inputs, 2);
    }

    /* The gradient's tolerances are this command's own (tight) defaults, not
     * the training record's: no record. */
    cli_model m;
    cli_model_open(&m, model, &sa, opts, 0);
    cnf_flow *flow = m.flow;
    if (check && m.fo.divergence != CNF_DIV_EXACT)
        cli_usage("--check needs --divergence exact (a Hutchinson estimate has noise that"
                  " finite differences of the exact likelihood do not share)");
    const size_t D = m.D, P = cnf_flow_num_params(flow);
    size_t N;
    double *X = cli_read_data(data, "/train", D, &N, NULL);   /* N x D */
    cli_model_prepare(&m, &sa, N, seed);
    cnf_flow_work *w = m.w;
    const size_t B = sa.batch < N ? sa.batch : N;

    /* Mean over chunks of at most B rows: grad = sum_c (B_c / N) grad_c. */
    double *grad = cli_calloc_doubles(P), *gc = cli_calloc_doubles(P);   /* P each */
    double nll = 0.0;
    cnf_flow_stats total = {{0, 0, 0, 0}, {0, 0, 0, 0}};
    double t0 = cli_now();
    for (size_t r = 0; r < N; r += B) {
        size_t b = N - r < B ? N - r : B;
        double nll_c;
        cnf_flow_stats st;
        cli_check(cnf_flow_nll_grad(flow, w, X + r * D, b, m.rng, &nll_c, NULL, gc, &st),
                  "gradient");
        double wgt = (double)b / (double)N;
        for (size_t i = 0; i < P; i++)
            grad[i] += wgt * gc[i];
        nll += wgt * nll_c;
        cnf_ode_stats_add(&total.forward, &st.forward);
        cnf_ode_stats_add(&total.backward, &st.backward);
    }
    double secs = cli_now() - t0;
    double gnorm = 0.0;
    for (size_t i = 0; i < P; i++)
        gnorm += grad[i] * grad[i];
    gnorm = sqrt(gnorm);

    double max_rel = NAN, max_abs = NAN;
    size_t worst = 0;
    if (check) {
        cnf_flow_options co = m.fo;
        cnf_ode_method method;
        if (cnf_ode_method_from_name(check_solver, &method) != CNF_OK)
            cli_usage("--check-solver: %s", cnf_last_error());
        cli_solver_set(&co, method, check_rtol, check_atol, co.solver.max_steps, check_step);
        cli_check(cnf_flow_work_set_options(w, &co), "--check");
        double *fd = cli_calloc_doubles(P);   /* P */
        fd_gradient(flow, w, X, N, h, fd);
        double fdmax = 0.0;
        for (size_t i = 0; i < P; i++)
            fdmax = fdmax > fabs(fd[i]) ? fdmax : fabs(fd[i]);
        double floor_ = 1e-3 * fdmax;
        max_rel = 0.0;
        max_abs = 0.0;
        for (size_t i = 0; i < P; i++) {
            double d = fabs(grad[i] - fd[i]);
            double den = fmax(fabs(grad[i]), fmax(fabs(fd[i]), floor_));
            double rel = den > 0 ? d / den : d;
            if (rel > max_rel) {
                max_rel = rel;
                worst = i;
            }
            max_abs = max_abs > d ? max_abs : d;
        }
        if (!json)
            printf("check: %zu parameters, largest relative error %.3e (parameter %zu: adjoint "
                   "%.10e, finite differences %.10e), largest absolute error %.3e\n",
                   P, max_rel, worst, grad[worst], fd[worst], max_abs);
        free(fd);
    }
    if (out)
        cli_check(cnf_model_write_grad(out, flow, grad), out);
    if (json) {
        printf("{\"n\": %zu, \"n_params\": %zu, \"nll\": ", N, P);
        cli_json_double(stdout, nll);
        printf(", \"grad_norm\": ");
        cli_json_double(stdout, gnorm);
        printf(", \"nfe_forward\": %zu, \"nfe_backward\": %zu, \"seconds\": %.3f", total.forward.nfe,
               total.backward.nfe, secs);
        if (check) {
            printf(", \"check_max_rel_error\": ");
            cli_json_double(stdout, max_rel);
            printf(", \"check_max_abs_error\": ");
            cli_json_double(stdout, max_abs);
            printf(", \"check_worst_param\": %zu", worst);
        }
        printf("}\n");
    } else {
        printf("mean nll %.10f over %zu rows, gradient norm %.6e (%zu parameters)\n", nll, N,
               gnorm, P);
        char solver[128];
        cli_solver_text(&sa, &m.fo, solver, sizeof solver);
        cli_info("(%s divergence, %s, nfe forward %zu backward %zu, %.2f s)\n", sa.divergence,
                 solver, total.forward.nfe, total.backward.nfe, secs);
        if (out)
            cli_info("wrote %s\n", out);
    }
    free(grad);
    free(gc);
    free(X);
    cli_model_close(&m);
    if (check && !(max_rel <= check_tol)) {
        fprintf(stderr, "cnf grad: check failed: largest relative error %.3e exceeds --check-tol %g\n",
                max_rel, check_tol);
        return 3;
    }
    return 0;
}
