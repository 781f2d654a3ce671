/* mpi_cli.c — see mpi_cli.h. The only file of the command that calls MPI. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cnf/flow.h"
#include "mpi_cli.h"

#ifdef CNF_HAVE_MPI
#include "cnf/mpi.h"

static int mpi_on;         /* MPI_Init was called */
static int agreed;
static int rank_, size_ = 1;
static MPI_Comm comm;

/* Launchers set these in every process they start (Open MPI's mpirun,
 * PMIx, Slurm's srun through PMI); a cnf started by hand has none and stays
 * a plain process, without the singleton start-up of MPI. */
static int under_launcher(void)
{
    static const char *const vars[] = { "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE",
                                        "PMI_RANK" };
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i]))
            return 1;
    return 0;
}

static void at_exit(void)
{
    int fin = 0;
    if (!mpi_on || (MPI_Finalized(&fin), fin))
        return;
    if (size_ > 1 && !agreed) {
        fprintf(stderr, "cnf: rank %d: stopping alone; aborting the other ranks\n", rank_);
        fflush(stderr);
        MPI_Abort(comm, 1);
    }
    MPI_Finalize();
}

void cli_mpi_init(int *argc, char ***argv, const char *command)
{
    if (!under_launcher())
        return;
    if (MPI_Init(argc, argv) != MPI_SUCCESS) {
        fprintf(stderr, "cnf: error: MPI_Init failed\n");
        exit(1);
    }
    mpi_on = 1;
    comm = MPI_COMM_WORLD;
    MPI_Comm_rank(comm, &rank_);
    MPI_Comm_size(comm, &size_);
    atexit(at_exit);
    if (size_ > 1) {
        snprintf(cli_rank_tag, sizeof cli_rank_tag, "rank %d: ", rank_);
        /* rank 0 speaks for the run; errors are every rank's own */
        if (rank_ != 0)
            cli_quiet = 1;
        if (strcmp(command, "train") && strcmp(command, "eval") && strcmp(command, "sample")) {
            agreed = 1; /* every rank refuses alike */
            cli_usage("runs as one process; under mpirun only train, eval and sample split "
                      "their work (got %d ranks)", size_);
        }
    }
}

size_t cli_mpi_rank(void) { return (size_t)rank_; }
size_t cli_mpi_size(void) { return (size_t)size_; }
void cli_mpi_agreed(void) { agreed = 1; }

void cli_mpi_parallel(cnf_train_parallel *par)
{
    par->rank = 0;
    par->size = 1;
    par->sum = NULL;
    par->ctx = NULL;
    if (mpi_on && size_ > 1)
        cli_check(cnf_mpi_parallel(&comm, par), "MPI");
}

int cli_mpi_sum(double *buf, size_t n)
{
    if (!mpi_on || size_ < 2)
        return 0;
    return MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_DOUBLE, MPI_SUM, comm) == MPI_SUCCESS
               ? 0 : -1;
}

static size_t rows_of(size_t N, size_t chunk, size_t rank, size_t size)
{
    size_t c = 0;
    for (size_t c0 = 0; c0 < N; c0 += chunk)
        c += cnf_flow_part_rows(N - c0 < chunk ? N - c0 : chunk, rank, size, NULL);
    return c;
}

size_t cli_mpi_my_rows(size_t N, size_t chunk)
{
    return rows_of(N, chunk, (size_t)rank_, (size_t)size_);
}

int cli_mpi_gather_rows(const double *mine, size_t n_mine, size_t width, size_t N, size_t chunk,
                        double *out)
{
    if (!mpi_on || size_ < 2) {
        memcpy(out, mine, n_mine * width * sizeof *out);
        return 0;
    }
    /* every rank's count, then rank 0 places each rank's rows chunk by
     * chunk where one process has them */
    size_t P = (size_t)size_;
    int *counts = calloc(P, sizeof *counts), *displs = calloc(P, sizeof *displs);
    double *all = rank_ == 0 ? malloc((N ? N * width : 1) * sizeof *all) : NULL;
    int ok = counts && displs && (rank_ != 0 || all);
    for (size_t r = 0, d = 0; ok && r < P; r++) {
        size_t c = rows_of(N, chunk, r, P) * width;
        counts[r] = (int)c;
        displs[r] = (int)d;
        d += c;
    }
    int rc = -1;
    if (ok && MPI_Gatherv(mine, (int)(n_mine * width), MPI_DOUBLE, all, counts, displs,
                          MPI_DOUBLE, 0, comm) == MPI_SUCCESS) {
        rc = 0;
        if (rank_ == 0) {
            size_t *at = calloc(P, sizeof *at);
            if (!at)
                rc = -1;
            for (size_t c0 = 0; at && c0 < N; c0 += chunk) {
                size_t cb = N - c0 < chunk ? N - c0 : chunk;
                for (size_t r = 0; r < P; r++) {
                    size_t b0, n = cnf_flow_part_rows(cb, r, P, &b0) * width;
                    memcpy(out + (c0 + b0) * width, all + displs[r] + at[r], n * sizeof *out);
                    at[r] += n;
                }
            }
            free(at);
        }
    }
    free(counts);
    free(displs);
    free(all);
    return rc;
}

#else /* one process */

void cli_mpi_init(int *argc, char ***argv, const char *command)
{
    (void)argc, (void)argv, (void)command;
}
size_t cli_mpi_rank(void) { return 0; }
size_t cli_mpi_size(void) { return 1; }
void cli_mpi_agreed(void) {}
void cli_mpi_parallel(cnf_train_parallel *par)
{
    par->rank = 0;
    par->size = 1;
    par->sum = NULL;
    par->ctx = NULL;
}
int cli_mpi_sum(double *buf, size_t n)
{
    (void)buf, (void)n;
    return 0;
}
int cli_mpi_gather_rows(const double *mine, size_t n_mine, size_t width, size_t N, size_t chunk,
                        double *out)
{
    (void)N, (void)chunk;
    memcpy(out, mine, n_mine * width * sizeof *out);
    return 0;
}
size_t cli_mpi_my_rows(size_t N, size_t chunk)
{
    (void)chunk;
    return N;
}

#endif
