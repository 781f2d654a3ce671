/* mpi.c — cnf/mpi.h: the sum the data-parallel library calls, over MPI.
 * Not part of libcnf (which is src/ without this directory): libcnf_mpi, built only when MPI is found. */
#include <limits.h>

#include "cnf/mpi.h"

/* In place, chunked so that a count above INT_MAX (a gradient of more than
 * 2^31 parameters) still goes through MPI's int counts. */
static int mpi_sum(double *buf, size_t n, void *ctx)
{
    MPI_Comm comm = *(MPI_Comm *)ctx;
    for (size_t done = 0; done < n;) {
        size_t m = n - done < (size_t)INT_MAX ? n - done : (size_t)INT_MAX;
        if (MPI_Allreduce(MPI_IN_PLACE, buf + done, (int)m, MPI_DOUBLE, MPI_SUM, comm)
            != MPI_SUCCESS)
            return -1;
        done += m;
    }
    return 0;
}

cnf_status cnf_mpi_parallel(MPI_Comm *comm, cnf_train_parallel *par)
{
    int inited = 0;
    if (!comm || !par)
        return cnf_error(CNF_EINVAL, "cnf_mpi_parallel: NULL communicator or setting");
    MPI_Initialized(&inited);
    if (!inited)
        return cnf_error(CNF_EINVAL, "cnf_mpi_parallel: MPI is not initialised (MPI_Init)");
    int rank = 0, size = 0;
    if (MPI_Comm_rank(*comm, &rank) != MPI_SUCCESS || MPI_Comm_size(*comm, &size) != MPI_SUCCESS
        || size < 1)
        return cnf_error(CNF_ERHS, "cnf_mpi_parallel: cannot tell this process's rank");
    par->rank = (size_t)rank;
    par->size = (size_t)size;
    par->sum = mpi_sum;
    par->ctx = comm;
    return CNF_OK;
}
