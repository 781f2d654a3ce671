/* cnf/mpi.h — data parallelism over MPI: the one part of cnf that knows MPI.
 *
 * The library does its data-parallel work through a plain sum callback
 * (cnf_ode_sum, cnf/ode.h; cnf_train_parallel, cnf/train.h; the flow
 * options' reduce, cnf/flow.h) and never calls MPI itself. This entry point
 * fills that setting for the processes of a communicator: rank and size
 * from it, and a sum that is MPI_Allreduce(MPI_IN_PLACE, buf, n,
 * MPI_DOUBLE, MPI_SUM, *comm).
 *
 * Every process of comm must then make the same data-parallel calls
 * (cnf_train with the same flow, data, options and state, or the
 * evaluation calls with the same chunks), as cnf/train.h describes. With
 * two processes the sum gives both the same bits (a + b = b + a); with more,
 * MPI_Allreduce gives every process the same result in the
 * implementations in use (Open MPI, MPICH: one reduction order, then a
 * broadcast for doubles), which the equal steps rely on.
 *
 * Built into libcnf_mpi (only when CMake found MPI: CNF_MPI=AUTO|ON),
 * which links libcnf and MPI; libcnf itself does not depend on MPI.
 *
 * Typical call, after MPI_Init:
 *
 *     MPI_Comm comm = MPI_COMM_WORLD;
 *     cnf_train_options opt;
 *     cnf_train_options_default(&opt);
 *     cnf_mpi_parallel(&comm, &opt.parallel);   // comm must outlive training
 *     cnf_train(flow, X, N, Xv, Nv, &opt, state, &result);   // on every rank
 */
#ifndef CNF_MPI_H
#define CNF_MPI_H

#include <mpi.h>

#include "cnf/train.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Fill par (rank, size, sum, ctx = comm, borrowed) for the processes of
 * *comm. CNF_EINVAL for a NULL argument or when MPI is not initialised,
 * CNF_ERHS when MPI cannot tell the rank or size. A sum that fails
 * (MPI_Allreduce returning an error, with an error handler that returns)
 * makes the solves and cnf_train stop with a message. */
cnf_status cnf_mpi_parallel(MPI_Comm *comm, cnf_train_parallel *par);

#ifdef __cplusplus
}
#endif

#endif /* CNF_MPI_H */
