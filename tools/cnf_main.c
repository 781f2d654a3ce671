/* cnf_main.c — the `cnf` command: dispatch to the subcommands
 * (issue 5: toy, train, eval, sample, grad, info, plot, convert). */
#include <stdio.h>
#include <string.h>

#include <cblas.h>
#include <gsl/gsl_errno.h>

#include "cli.h"
#include "commands.h"
#include "mpi_cli.h"

#ifndef CNF_VERSION_STRING
#define CNF_VERSION_STRING "0.1.0"
#endif

static const struct {
    const char *name;
    int (*run)(int, char **);
    const char *about;
} commands[] = {
    {"toy", cmd_toy, "generate a 2-D toy data set (/train, /val, /test)"},
    {"train", cmd_train, "train a flow on a data file and save the best model"},
    {"eval", cmd_eval, "per-sample log-likelihood, mean NLL and bits/dim of data"},
    {"sample", cmd_sample, "draw samples from a model (or push given latent points)"},
    {"grad", cmd_grad, "gradient of the mean NLL w.r.t. every parameter (--check: vs finite differences)"},
    {"info", cmd_info, "architecture, parameter count and training record of a model"},
    {"plot", cmd_plot, "pictures: a 2-D model's log-density with data, samples and paths; marginal grids for D > 2"},
    {"convert", cmd_convert, "CSV file to the toolkit's data layout (/train, /val, /test)"},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *f)
{
    fprintf(f, "usage: cnf <command> [options]   (cnf <command> --help for its options)\n\n"
               "Continuous normalizing flows for density estimation.\n\ncommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].about);
    fprintf(f, "\n  --help     show this help\n  --version  print the version\n");
}

int main(int argc, char **argv)
{
    /* GSL's default handler aborts; libcnf relies on GSL returning codes. */
    gsl_set_error_handler_off();
    /* OpenBLAS at one thread unless a command's --blas-threads says
     * otherwise: its own threads do not pay at cnf's matrix sizes (cnf's
     * --threads split the rows instead), spin on a loaded machine (a toy
     * training run took 36 s against 5.6 s), and change the bits with the
     * machine's core count. OPENBLAS_NUM_THREADS is overridden for the same
     * reason: the same command gives the same bits everywhere. */
    openblas_set_num_threads(1);
    /* Ctrl-C, SIGTERM and SIGHUP leave no temporary file behind; cnf train
     * replaces the first two by its own handler while it trains. */
    cli_catch_signals();
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf("cnf %s\n", CNF_VERSION_STRING);
        return 0;
    }
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (!strcmp(cmd, commands[i].name)) {
            cli_command = commands[i].name;
            cli_mpi_init(&argc, &argv, cmd);
            return commands[i].run(argc - 1, argv + 1);
        }
    fprintf(stderr, "cnf: error: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
