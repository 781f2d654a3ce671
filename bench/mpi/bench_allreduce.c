/* bench_allreduce.c — the cost of the data-parallel reductions of cnf
 * train under MPI: MPI_Allreduce (in place, doubles, sum) of the sizes a
 * training iteration uses: a step attempt's norm with one or three groups
 * (2 ng + 2 doubles), an adjoint step attempt whose parameter gradient is in
 * the norm (3 P more: its e, y and ynew), and the gradient's sum (P + 2 +
 * ranks). Prints one JSON line per size with the median of 21 timings of
 * reps calls each, in microseconds per call. Run: mpirun -np 2
 * build/bench_allreduce [P] (default P = 9225, the toy flow). */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    size_t P = argc > 1 ? strtoul(argv[1], NULL, 10) : 9225;
    size_t sizes[4] = { 4, 8, 3 * P + 8, P + 2 + (size_t)size };
    const char *what[4] = { "norm, 1 group", "norm, 3 groups", "adjoint norm with g (3P + 8)",
                            "gradient (P + 2 + ranks)" };
    double *buf = calloc(sizes[2], sizeof *buf);
    for (int k = 0; k < 4; k++) {
        int reps = sizes[k] < 100 ? 2000 : 100;
        double t[21];
        for (int r = 0; r < 21; r++) {
            MPI_Barrier(MPI_COMM_WORLD);
            double t0 = MPI_Wtime();
            for (int i = 0; i < reps; i++)
                MPI_Allreduce(MPI_IN_PLACE, buf, (int)sizes[k], MPI_DOUBLE, MPI_SUM,
                              MPI_COMM_WORLD);
            t[r] = (MPI_Wtime() - t0) / reps * 1e6;
        }
        qsort(t, 21, sizeof *t, cmp);
        if (rank == 0)
            printf("{\"case\": \"allreduce\", \"what\": \"%s\", \"doubles\": %zu, \"ranks\": %d, "
                   "\"us_per_call_median\": %.2f, \"min\": %.2f, \"max\": %.2f}\n",
                   what[k], sizes[k], size, t[10], t[0], t[20]);
    }
    free(buf);
    MPI_Finalize();
    return 0;
}
