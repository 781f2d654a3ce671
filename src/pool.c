/* pool.c — a persistent pthreads pool for the batch-split network passes
 * (pool.h).
 *
 * Protocol. The caller publishes (task, ctx), sets pending = n - 1 and bumps
 * the job counter gen under the mutex (waking blocked workers), runs part 0,
 * then waits for pending to reach 0. A worker waits for gen to move past the
 * last job it ran: first by spinning (a network pass lasts 0.1-0.3 ms and
 * the next one follows within microseconds, so a sleeping worker would pay
 * a futex wake-up per call), then, after SPIN_NS, blocked on `wake`. The
 * caller waits for the last part the same way. Everything a worker reads is
 * written before the release-increment of gen that it acquires, and the
 * parts' results are visible to the caller through pending's acq_rel
 * decrements. Workers block every signal, so signals reach the caller.
 */
#define _POSIX_C_SOURCE 200809L
#include "pool.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "cnf/status.h"

/* How long an idle thread spins before blocking. */
#define SPIN_NS 200000L

typedef struct {
    cnf_pool *pool;
    size_t part;
} worker_arg;

struct cnf_pool {
    size_t n;                  /* threads, the caller included */
    size_t n_started;          /* workers running */
    pthread_t *threads;        /* n - 1 */
    worker_arg *args;          /* n - 1 */
    pthread_mutex_t mu;
    pthread_cond_t wake;       /* workers wait here for a job */
    pthread_cond_t done;       /* the caller waits here for the last part */
    atomic_uint gen;           /* jobs started */
    atomic_size_t pending;     /* worker parts of the current job still running */
    int sleepers;              /* workers blocked on wake (under mu) */
    int caller_waiting;        /* caller blocked on done (under mu) */
    atomic_int stop;           /* set before the gen that announces it */
    cnf_pool_task task;
    void *ctx;
};

static long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* The next job counter after `seen`. */
static unsigned wait_job(cnf_pool *p, unsigned seen)
{
    long t0 = now_ns();
    for (unsigned i = 1;; i++) {
        unsigned g = atomic_load_explicit(&p->gen, memory_order_acquire);
        if (g != seen)
            return g;
        cpu_relax();
        if ((i & 255) == 0 && now_ns() - t0 > SPIN_NS)
            break;
    }
    unsigned g;
    pthread_mutex_lock(&p->mu);
    while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen) {
        p->sleepers++;
        pthread_cond_wait(&p->wake, &p->mu);
        p->sleepers--;
    }
    pthread_mutex_unlock(&p->mu);
    return g;
}

static void *worker_main(void *varg)
{
    worker_arg *wa = varg;
    cnf_pool *p = wa->pool;
    unsigned seen = 0;
    for (;;) {
        seen = wait_job(p, seen);
        /* ordered by gen's release/acquire; no lock per job */
        if (atomic_load_explicit(&p->stop, memory_order_relaxed))
            break;
        p->task(p->ctx, wa->part);
        if (atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&p->mu);
            if (p->caller_waiting)
                pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
    }
    return NULL;
}

cnf_pool *cnf_pool_alloc(size_t n_threads)
{
    if (n_threads < 2) {
        cnf_error(CNF_EINVAL, "thread pool: %zu threads, at least 2 needed", n_threads);
        return NULL;
    }
    cnf_pool *p = calloc(1, sizeof *p);
    if (!p) {
        cnf_error(CNF_ENOMEM, "thread pool: out of memory");
        return NULL;
    }
    p->n = n_threads;
    p->threads = calloc(n_threads - 1, sizeof *p->threads);
    p->args = calloc(n_threads - 1, sizeof *p->args);
    if (!p->threads || !p->args) {
        free(p->threads);
        free(p->args);
        free(p);
        cnf_error(CNF_ENOMEM, "thread pool: out of memory");
        return NULL;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    atomic_init(&p->gen, 0u);
    atomic_init(&p->pending, (size_t)0);
    atomic_init(&p->stop, 0);

    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = 0;
    for (size_t i = 0; i + 1 < n_threads; i++) {
        p->args[i] = (worker_arg){p, i + 1};
        rc = pthread_create(&p->threads[i], NULL, worker_main, &p->args[i]);
        if (rc != 0)
            break;
        p->n_started++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        size_t started = p->n_started;
        cnf_pool_free(p);
        cnf_error(CNF_ENOMEM, "thread pool: cannot start worker thread %zu of %zu (error %d)",
                  started + 1, n_threads - 1, rc);
        return NULL;
    }
    return p;
}

void cnf_pool_free(cnf_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    atomic_store_explicit(&p->stop, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&p->gen, 1u, memory_order_release);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (size_t i = 0; i < p->n_started; i++)
        pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->done);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->mu);
    free(p->threads);
    free(p->args);
    free(p);
}

size_t cnf_pool_size(const cnf_pool *p)
{
    return p->n;
}

void cnf_pool_run(cnf_pool *p, cnf_pool_task task, void *ctx)
{
    p->task = task;
    p->ctx = ctx;
    atomic_store_explicit(&p->pending, p->n - 1, memory_order_relaxed);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->gen, 1u, memory_order_release);
    if (p->sleepers)
        pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);

    task(ctx, 0);

    long t0 = now_ns();
    for (unsigned i = 1;; i++) {
        if (atomic_load_explicit(&p->pending, memory_order_acquire) == 0)
            return;
        cpu_relax();
        if ((i & 255) == 0 && now_ns() - t0 > SPIN_NS)
            break;
    }
    pthread_mutex_lock(&p->mu);
    while (atomic_load_explicit(&p->pending, memory_order_acquire) != 0) {
        p->caller_waiting = 1;
        pthread_cond_wait(&p->done, &p->mu);
    }
    p->caller_waiting = 0;
    pthread_mutex_unlock(&p->mu);
}
