/* pool.h — a small persistent thread pool (private to libcnf).
 *
 * n threads run one task at a time: the caller is part 0 and n - 1 workers,
 * created once by cnf_pool_alloc, take parts 1..n-1. cnf_pool_run starts the
 * parts and returns when all have finished. A task lasts about 0.1-0.3 ms in
 * the network passes, so an idle worker first spins briefly on the job
 * counter (catching the next call without a system call) and then blocks on
 * a condition variable; no allocation and no thread creation per call.
 *
 * One caller at a time: a pool belongs to one workspace, which is not shared
 * between threads. Tasks must not fail (check arguments before running).
 */
#ifndef CNF_POOL_H
#define CNF_POOL_H

#include <stddef.h>

typedef struct cnf_pool cnf_pool;

/* task(ctx, part) for part = 0..n_threads-1 */
typedef void (*cnf_pool_task)(void *ctx, size_t part);

/* n_threads >= 2 (n_threads - 1 workers). NULL with a message on failure. */
cnf_pool *cnf_pool_alloc(size_t n_threads);
/* Stops and joins the workers. NULL is fine. */
void cnf_pool_free(cnf_pool *pool);
size_t cnf_pool_size(const cnf_pool *pool);
/* Runs every part (part 0 on the calling thread) and waits for all. */
void cnf_pool_run(cnf_pool *pool, cnf_pool_task task, void *ctx);

#endif /* CNF_POOL_H */
