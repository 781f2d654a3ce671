/* mpi_cli.h — the command under mpirun: MPI's start and end, the rank, and
 * the data-parallel setting (cnf/mpi.h). Without MPI in the build, or when
 * no MPI launcher started the process, cnf is one process of rank 0 and
 * MPI is never initialised, so that the same binary runs as ever. */
#ifndef CNF_MPI_CLI_H
#define CNF_MPI_CLI_H

#include <stddef.h>

#include "cnf/train.h"

/* MPI_Init when an MPI launcher (mpirun, srun) started this process; the
 * command name decides whether more than one rank is allowed (train and
 * eval, sample; any other command under several ranks exits with a usage
 * error). */
void cli_mpi_init(int *argc, char ***argv, const char *command);
size_t cli_mpi_rank(void);
size_t cli_mpi_size(void);
/* The data-parallel setting for this run's ranks (size 1 without MPI). */
void cli_mpi_parallel(cnf_train_parallel *par);
/* From here on every rank leaves on its own path and none waits for another
 * in a reduction: an exit finalizes MPI. Before it, an exit with several
 * ranks (a rank's error outside the agreed library calls) aborts the job
 * (MPI_Abort), the last resort against the others waiting forever. */
void cli_mpi_agreed(void);
/* Gather this rank's n_mine rows of width values (its parts,
 * cnf_flow_part_rows of each chunk of chunk rows of N) into out (N x width,
 * in the original order) on rank 0; returns 0, or -1 when MPI fails. Other
 * ranks' out is untouched. Without MPI, copies. */
int cli_mpi_gather_rows(const double *mine, size_t n_mine, size_t width, size_t N, size_t chunk,
                        double *out);
/* This rank's rows of N in chunks of chunk (the sum of its parts). */
size_t cli_mpi_my_rows(size_t N, size_t chunk);
/* Sum n doubles in place across the ranks (0, or -1 when MPI fails). */
int cli_mpi_sum(double *buf, size_t n);

#endif
