/* test_parallel.c — data parallelism without MPI, with threads standing
 * for processes. The solver's reduction across processes
 * (cnf_ode_solver_set_reduction): two threads each solve half
 * the rows of a problem, their sums meeting at a pthread barrier, and take
 * exactly the steps (accepted, rejected, nfe) of one solver on all rows,
 * with the states equal up to the order of summation; a non-finite value on
 * one thread rejects the attempt on both; a fatal failure on one stops
 * both, each with its own message, and neither waits for the other. And
 * cnf_train_run with cnf_train_parallel on two threads: the parameters,
 * validation NLL and solver work of one process; a stop or a setup failure
 * on one thread ends both. The evaluation parts (log-likelihood with
 * Hutchinson noise, decoding) on two threads: the values and steps of one
 * call. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "cnf/adjoint.h"
#include "cnf/flow.h"
#include "cnf/ode.h"
#include "cnf/train.h"
#include "testutil.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))
enum { ROWS = 12, HALF = ROWS / 2 };

/* ---- the sum over two threads ------------------------------------------ */

typedef struct {
    pthread_barrier_t bar;
    double *buf[2];
    size_t n[2];
    size_t calls[2];
} meeting;

typedef struct {
    meeting *m;
    int rank;
} member;

/* Publish buf, wait for the other, add the two in rank order (the same
 * bits on both), wait until both have read, write back. */
static int barrier_sum(double *buf, size_t n, void *ctx)
{
    member *me = ctx;
    meeting *m = me->m;
    m->buf[me->rank] = buf;
    m->n[me->rank] = n;
    m->calls[me->rank]++;
    pthread_barrier_wait(&m->bar);
    int ok = m->n[0] == m->n[1];
    double *tmp = malloc(n * sizeof *tmp);
    if (ok && tmp)
        for (size_t i = 0; i < n; i++)
            tmp[i] = m->buf[0][i] + m->buf[1][i];
    pthread_barrier_wait(&m->bar);
    if (ok && tmp)
        memcpy(buf, tmp, n * sizeof *buf);
    free(tmp);
    return ok && tmp ? 0 : -1;
}

/* ---- the problem --------------------------------------------------------- */

/* Rows b = row0 .. row0 + nrows - 1 of y_b' = -k_b y_b + sin(3 t) y_b^2 / 2
 * (k_b from 0.5 to 6: the rows need different steps), and a last component
 * Q' = sum of the rows' y_b^2: a partial sum on each thread. bad_row (if in
 * range) is undefined below 0, where it gives NaN (mode 0) or returns 1
 * (mode 1); fatal_after > 0 makes the rows' rhs return -3 beyond that
 * time. */
typedef struct {
    size_t row0, nrows;
    size_t bad_row;
    int mode;
    double fatal_after;
} problem;

static int rhs_rows(double t, const double *y, double *f, void *p)
{
    const problem *pb = p;
    if (pb->fatal_after > 0.0 && t > pb->fatal_after)
        return -3;
    double q = 0.0;
    for (size_t i = 0; i < pb->nrows; i++) {
        size_t b = pb->row0 + i;
        double k = 0.5 + 5.5 * (double)b / (ROWS - 1);
        if (b == pb->bad_row && y[i] < 0.0) {
            if (pb->mode == 1)
                return 1;
            f[i] = NAN;
        } else {
            f[i] = -k * y[i] + 0.5 * sin(3.0 * t) * y[i] * y[i];
        }
        q += y[i] * y[i];
    }
    f[pb->nrows] = q;
    return 0;
}

static void initial_rows(double *y, size_t row0, size_t nrows)
{
    for (size_t i = 0; i < nrows; i++)
        y[i] = 0.3 + 0.1 * (double)(row0 + i);
}

typedef struct {
    cnf_ode_options opt;
    problem pb;
    int two_groups;     /* groups [rows | Q] rather than one RMS; 2: Q an
                           integral group (CNF_ODE_NORM_INTEGRAL) */
    int recorded;
    double h_warm;      /* > 0: a warm first step */
    int poison_y0;      /* a NaN in this thread's initial state */
    member me;
    /* out */
    double y[ROWS + 1];
    cnf_ode_stats st;
    cnf_status rc;
    char msg[512];
    size_t rec_points;
} job;

static void run_job(job *j, cnf_ode_sum sum)
{
    size_t n = j->pb.nrows + 1;
    cnf_ode_solver *s = cnf_ode_solver_alloc(n, &j->opt);
    ck_assert_ptr_nonnull(s);
    const int modes[2] = { CNF_ODE_NORM_IN,
                           j->two_groups == 2 ? CNF_ODE_NORM_INTEGRAL : CNF_ODE_NORM_IN };
    size_t sz[2] = { j->pb.nrows, 1 };
    if (j->two_groups)
        ck_assert_int_eq(cnf_ode_solver_set_norm_groups(s, 2, sz, modes), CNF_OK);
    /* after the groups, to check that changing them keeps the reduction */
    if (sum)
        ck_assert_int_eq(cnf_ode_solver_set_reduction(s, sum, &j->me, 1), CNF_OK);
    if (j->two_groups && sum)
        ck_assert_int_eq(cnf_ode_solver_set_norm_groups(s, 2, sz, modes), CNF_OK);
    initial_rows(j->y, j->pb.row0, j->pb.nrows);
    j->y[j->pb.nrows] = j->pb.row0 == 0 ? 0.25 : 0.0; /* Q(0) = 0.25, held once */
    if (j->poison_y0)
        j->y[0] = NAN;
    cnf_ode_record *rec = j->recorded ? cnf_ode_record_alloc(n) : NULL;
    double h = j->h_warm;
    j->rc = cnf_ode_solve_warm(s, rhs_rows, &j->pb, 0.0, 2.0, j->y, h > 0 ? &h : NULL, rec,
                               &j->st);
    snprintf(j->msg, sizeof j->msg, "%s", j->rc == CNF_OK ? "" : cnf_last_error());
    j->rec_points = rec ? cnf_ode_record_size(rec) : 0;
    cnf_ode_record_free(rec);
    cnf_ode_solver_free(s);
}

static void *thread_main(void *p)
{
    run_job(p, barrier_sum);
    return NULL;
}

/* One solver on all rows (whole) and two threads on the halves (part[2]),
 * all with the settings of whole. */
static void solve_split(job *whole, job part[2], meeting *m)
{
    whole->pb.row0 = 0;
    whole->pb.nrows = ROWS;
    run_job(whole, NULL);
    memset(m, 0, sizeof *m);
    pthread_barrier_init(&m->bar, NULL, 2);
    pthread_t th[2];
    for (int r = 0; r < 2; r++) {
        part[r] = *whole;
        part[r].pb.row0 = (size_t)r * HALF;
        part[r].pb.nrows = HALF;
        part[r].poison_y0 = 0;
        part[r].me = (member){ m, r };
    }
    part[1].poison_y0 = whole->poison_y0;
    for (int r = 0; r < 2; r++)
        ck_assert_int_eq(pthread_create(&th[r], NULL, thread_main, &part[r]), 0);
    for (int r = 0; r < 2; r++)
        pthread_join(th[r], NULL);
    pthread_barrier_destroy(&m->bar);
}

/* The same steps: the counters exactly; the step sizes to 1e-6, since an
 * error estimate is a difference of two nearly equal solutions, in which
 * the rounding of the halves' sums against the whole's (1e-16 of the
 * solution) is 1e-9 (dopri5) to 1e-7 (rk8pd) of the estimate itself.
 * nfe exactly, but where a right-hand side returned > 0: one solver stops that attempt at the
 * failing stage, a process whose rows did not fail evaluates all of them
 * (only the verdict is shared, once per attempt). */
static void assert_same_steps(const job *whole, const job part[2], const char *what,
                              int nfe_exact)
{
    for (int r = 0; r < 2; r++) {
        ck_assert_msg(part[r].st.accepted == whole->st.accepted &&
                          part[r].st.rejected == whole->st.rejected &&
                          (nfe_exact ? part[r].st.nfe == whole->st.nfe
                                     : part[r].st.nfe >= whole->st.nfe) &&
                          fabs(part[r].st.h_last - whole->st.h_last) <=
                              1e-6 * fabs(whole->st.h_last),
                      "%s, thread %d: %zu/%zu/%zu steps (h_last %.17g) against one solver's "
                      "%zu/%zu/%zu (%.17g)", what, r, part[r].st.accepted, part[r].st.rejected,
                      part[r].st.nfe, part[r].st.h_last, whole->st.accepted,
                      whole->st.rejected, whole->st.nfe, whole->st.h_last);
        ck_assert_uint_eq(part[r].rec_points, whole->rec_points);
    }
}

static const cnf_ode_method methods[] = { CNF_ODE_DOPRI5, CNF_ODE_RKF45, CNF_ODE_RK8PD,
                                          CNF_ODE_RK4 };

/* A job on all rows with method m at rtol = atol = tol (fixed steps of
 * 0.05), no bad row, no fatal time. */
static void job_init(job *j, cnf_ode_method m, double tol)
{
    memset(j, 0, sizeof *j);
    cnf_ode_options_default(&j->opt);
    j->opt.method = m;
    j->opt.rtol = j->opt.atol = tol;
    if (!cnf_ode_method_is_adaptive(m))
        j->opt.h0 = 0.05;
    j->pb.bad_row = (size_t)-1;
    j->pb.nrows = ROWS;
}

START_TEST(test_two_threads_take_one_solvers_steps)
{
    for (size_t mi = 0; mi < NELEM(methods); mi++)
        for (int variant = 0; variant < 5; variant++) {
            job whole;
            job_init(&whole, methods[mi], 1e-7);
            whole.two_groups = variant == 4 ? 2 : variant & 1;
            whole.recorded = variant >= 2;
            whole.h_warm = variant == 3 ? 0.05 : 0.0;
            job part[2];
            meeting m;
            solve_split(&whole, part, &m);
            char what[96];
            snprintf(what, sizeof what, "%s variant %d", cnf_ode_method_name(methods[mi]),
                     variant);
            ck_assert_int_eq(whole.rc, CNF_OK);
            ck_assert_msg(part[0].rc == CNF_OK && part[1].rc == CNF_OK, "%s: %s / %s", what,
                          part[0].msg, part[1].msg);
            ck_assert(whole.st.accepted > 5);
            assert_same_steps(&whole, part, what, 1);
            /* the rows are the rows, to 1e-12 of their initial size (they
             * decay by up to e^-12); Q is the sum of the two partial Q */
            for (int r = 0; r < 2; r++)
                for (size_t i = 0; i < HALF; i++) {
                    double a = part[r].y[i], b = whole.y[(size_t)r * HALF + i];
                    double y0 = 0.3 + 0.1 * (double)(r * HALF + (int)i);
                    ck_assert_msg(fabs(a - b) <= 1e-12 * y0, "%s: row %zu %.17g vs %.17g",
                                  what, (size_t)r * HALF + i, a, b);
                }
            double q = part[0].y[HALF] + part[1].y[HALF];
            ck_assert_msg(fabs(q - whole.y[ROWS]) <= 1e-13 * fabs(whole.y[ROWS]),
                          "%s: Q %.17g vs %.17g", what, q, whole.y[ROWS]);
            ck_assert_uint_eq(m.calls[0], m.calls[1]);
            ck_assert(m.calls[0] >= whole.st.accepted + whole.st.rejected);
        }
}
END_TEST

START_TEST(test_nan_on_one_thread_rejects_on_both)
{
    for (int mode = 0; mode <= 1; mode++)
        for (size_t mi = 0; mi < 3; mi++) {
            job whole;
            job_init(&whole, methods[mi], 1e-6);
            whole.opt.h0 = 1.5; /* the first step overshoots the bad row below 0 */
            whole.pb.bad_row = ROWS - 1; /* on thread 1 */
            whole.pb.mode = mode;
            job part[2];
            meeting m;
            solve_split(&whole, part, &m);
            ck_assert_int_eq(whole.rc, CNF_OK);
            ck_assert_int_eq(part[0].rc, CNF_OK);
            ck_assert_int_eq(part[1].rc, CNF_OK);
            ck_assert_msg(whole.st.rejected > 0, "the bad region was never hit");
            assert_same_steps(&whole, part, cnf_ode_method_name(methods[mi]), mode == 0);
            ck_assert_uint_eq(part[1].st.nfe, whole.st.nfe); /* the failing one stops alike */
        }
}
END_TEST

START_TEST(test_fatal_on_one_thread_stops_both)
{
    for (size_t mi = 0; mi < NELEM(methods); mi++) {
        job whole;
        job_init(&whole, methods[mi], 1e-6);
        job part[2];
        meeting m;
        memset(&m, 0, sizeof m);
        pthread_barrier_init(&m.bar, NULL, 2);
        pthread_t th[2];
        for (int r = 0; r < 2; r++) {
            part[r] = whole;
            part[r].pb.row0 = (size_t)r * HALF;
            part[r].pb.nrows = HALF;
            part[r].me = (member){ &m, r };
        }
        part[1].pb.fatal_after = 0.7;
        for (int r = 0; r < 2; r++)
            ck_assert_int_eq(pthread_create(&th[r], NULL, thread_main, &part[r]), 0);
        for (int r = 0; r < 2; r++)
            pthread_join(th[r], NULL);
        pthread_barrier_destroy(&m.bar);
        ck_assert_int_eq(part[1].rc, CNF_ERHS);
        ck_assert_msg(strstr(part[1].msg, "code -3") != NULL, "%s", part[1].msg);
        ck_assert_int_eq(part[0].rc, CNF_ERHS);
        ck_assert_msg(strstr(part[0].msg, "another process") != NULL, "%s", part[0].msg);
        ck_assert_uint_eq(part[0].st.accepted, part[1].st.accepted);
        ck_assert_uint_eq(m.calls[0], m.calls[1]);
    }
    /* a non-finite initial state on one thread: its own message, the other
     * told that another process failed */
    job whole;
    job_init(&whole, CNF_ODE_DOPRI5, 1e-6);
    whole.poison_y0 = 1;
    job part[2];
    meeting m;
    solve_split(&whole, part, &m);
    ck_assert_int_eq(part[1].rc, CNF_EINVAL);
    ck_assert_msg(strstr(part[1].msg, "not finite") != NULL, "%s", part[1].msg);
    ck_assert_int_eq(part[0].rc, CNF_ERHS);
    ck_assert_msg(strstr(part[0].msg, "another process") != NULL, "%s", part[0].msg);
}
END_TEST

/* x' = -2 x (1 + sin 5t) / (1 + t), and two integrals of it, summed
 * components under a reduction: Q1' = x^2 (in the norm as usual) and Q2' =
 * 1e-4 x sin 20t (an integral group, small and oscillating: its atol is
 * relative to its size, and it sets the steps).
 * A reduction over one process (the sum of one is itself) takes the
 * reduction's path through the norm, where the summed components are
 * scaled after the sum, and must take exactly the steps of no reduction:
 * were Q2's size read from Q1's place (the offset of the summed
 * components), its scale, and the steps, would differ. */
static int rhs_two_integrals(double t, const double *y, double *f, void *p)
{
    (void)p;
    f[0] = -2.0 * y[0] * (1.0 + sin(5.0 * t)) / (1.0 + t);
    f[1] = y[0] * y[0];
    f[2] = 1e-4 * y[0] * sin(20.0 * t);
    return 0;
}

static int sum_of_one(double *buf, size_t n, void *ctx)
{
    (void)buf;
    (void)n;
    (void)ctx;
    return 0;
}

START_TEST(test_integral_group_among_summed)
{
    cnf_ode_stats st[2];
    double y[2][3];
    for (int reduced = 0; reduced < 2; reduced++) {
        cnf_ode_options o;
        cnf_ode_options_default(&o);
        o.rtol = o.atol = 1e-8;
        cnf_ode_solver *s = cnf_ode_solver_alloc(3, &o);
        ck_assert_int_eq(cnf_ode_solver_set_quadratures(s, 2, 1), CNF_OK);
        ck_assert_int_eq(cnf_ode_solver_set_norm_groups(s, 3, (size_t[]){ 1, 1, 1 },
                                                        (const int[]){ CNF_ODE_NORM_IN,
                                                                       CNF_ODE_NORM_IN,
                                                                       CNF_ODE_NORM_INTEGRAL }),
                         CNF_OK);
        if (reduced)
            ck_assert_int_eq(cnf_ode_solver_set_reduction(s, sum_of_one, NULL, 2), CNF_OK);
        y[reduced][0] = 1.0;
        y[reduced][1] = y[reduced][2] = 0.0;
        ck_assert_int_eq(cnf_ode_solve(s, rhs_two_integrals, NULL, 0.0, 3.0, y[reduced], NULL,
                                       &st[reduced]), CNF_OK);
        cnf_ode_solver_free(s);
    }
    ck_assert_uint_eq(st[1].accepted, st[0].accepted);
    ck_assert_uint_eq(st[1].rejected, st[0].rejected);
    ck_assert_uint_eq(st[1].nfe, st[0].nfe);
    for (int i = 0; i < 3; i++)
        ck_assert_double_eq_tol(y[1][i], y[0][i], 1e-15 * fabs(y[0][i]));
    /* the integral group is what sets the steps here: as an ordinary
     * group (atol against a Q2 of 1e-5) far fewer are needed */
    cnf_ode_options o;
    cnf_ode_options_default(&o);
    o.rtol = o.atol = 1e-8;
    cnf_ode_solver *s = cnf_ode_solver_alloc(3, &o);
    ck_assert_int_eq(cnf_ode_solver_set_norm_groups(s, 3, (size_t[]){ 1, 1, 1 },
                                                    (const int[]){ 1, 1, 1 }), CNF_OK);
    double yo[3] = { 1.0, 0.0, 0.0 };
    cnf_ode_stats so;
    ck_assert_int_eq(cnf_ode_solve(s, rhs_two_integrals, NULL, 0.0, 3.0, yo, NULL, &so), CNF_OK);
    printf("integral group among summed components: %zu steps (as an ordinary group %zu)\n",
           st[0].accepted, so.accepted);
    ck_assert_uint_lt(so.accepted, st[0].accepted);
    /* a group across the boundary of the summed components is refused */
    ck_assert_int_eq(cnf_ode_solver_set_norm_groups(s, 2, (size_t[]){ 1, 2 },
                                                    (const int[]){ 1, CNF_ODE_NORM_INTEGRAL }),
                     CNF_OK);
    ck_assert_int_eq(cnf_ode_solver_set_reduction(s, sum_of_one, NULL, 1), CNF_EINVAL);
    ck_assert_int_eq(cnf_ode_solver_set_reduction(s, sum_of_one, NULL, 2), CNF_OK);
    cnf_ode_solver_free(s);
}
END_TEST

START_TEST(test_set_reduction_arguments)
{
    cnf_ode_options o;
    cnf_ode_options_default(&o);
    cnf_ode_solver *s = cnf_ode_solver_alloc(3, &o);
    ck_assert_int_eq(cnf_ode_solver_set_reduction(NULL, barrier_sum, NULL, 0), CNF_EINVAL);
    ck_assert_int_eq(cnf_ode_solver_set_reduction(s, barrier_sum, NULL, 4), CNF_EINVAL);
    ck_assert_int_eq(cnf_ode_solver_set_reduction(s, barrier_sum, NULL, 3), CNF_OK);
    ck_assert_int_eq(cnf_ode_solver_set_reduction(s, NULL, NULL, 0), CNF_OK);
    /* an integral group's size is an RMS over the whole group, so it must
     * lie among the summed components, where every process sees all of it */
    size_t sz[2] = { 2, 1 };
    ck_assert_int_eq(cnf_ode_solver_set_norm_groups(s, 2, sz, (const int[]){ CNF_ODE_NORM_IN,
                                                    CNF_ODE_NORM_INTEGRAL }), CNF_OK);
    ck_assert_int_eq(cnf_ode_solver_set_reduction(s, barrier_sum, NULL, 1), CNF_OK);
    ck_assert_int_eq(cnf_ode_solver_set_reduction(s, barrier_sum, NULL, 0), CNF_EINVAL);
    ck_assert_int_eq(cnf_ode_solver_set_norm_groups(s, 2, sz, (const int[]){
                                                    CNF_ODE_NORM_INTEGRAL, CNF_ODE_NORM_IN }),
                     CNF_EINVAL);
    ck_assert_int_eq(cnf_ode_solver_set_reduction(s, NULL, NULL, 0), CNF_OK);
    ck_assert_int_eq(cnf_ode_solver_set_norm_groups(s, 1, (size_t[]){ 3 }, (const int[]){ 1 }),
                     CNF_OK);
    /* removed: a solve needs no partner */
    problem pb = { 0, 2, (size_t)-1, 0, 0.0 };
    double y[3] = { 0.3, 0.4, 0.0 };
    ck_assert_int_eq(cnf_ode_solve(s, rhs_rows, &pb, 0.0, 1.0, y, NULL, NULL), CNF_OK);
    cnf_ode_solver_free(s);
}
END_TEST


/* ---- training ------------------------------------------------------------ */

enum { NTR = 200, NVAL = 40, TD = 2 };

typedef struct {
    int divergence;
    size_t rank, size;      /* size 1: one process */
    meeting *m;
    int stop_at;            /* > 0: this rank's callback stops there */
    int poison;             /* a NaN row in this rank's training data */
    /* out */
    cnf_status rc;
    char msg[512];
    double params[512];
    size_t P, iters;
    cnf_train_result res;
} train_job;

static void train_data(double *X, size_t n, unsigned long seed)
{
    gsl_rng *r = tu_rng(seed);
    for (size_t i = 0; i < n; i++) {
        double c = gsl_rng_uniform(r) < 0.5 ? -1.5 : 1.5;
        X[2 * i] = c + 0.4 * (2.0 * gsl_rng_uniform(r) - 1.0);
        X[2 * i + 1] = 0.5 * c + 0.6 * (2.0 * gsl_rng_uniform(r) - 1.0);
    }
    gsl_rng_free(r);
}

static int stop_cb(const cnf_train_progress *pr, void *ctx)
{
    return (int)pr->iteration == *(int *)ctx;
}

static void run_train(train_job *j)
{
    gsl_rng *rng = tu_rng(11);
    double T = 0.5;
    cnf_flow *flow = tu_flow(TD, 1, "8-8", CNF_LAYER_CONCATSQUASH, CNF_ACT_TANH, &T, rng);
    gsl_rng_free(rng);
    size_t P = cnf_flow_num_params(flow);
    ck_assert_uint_le(P, NELEM(j->params));
    static double Xtr[NTR * TD], Xval[NVAL * TD];
    double *X = malloc(sizeof Xtr);
    train_data(X, NTR, 5);
    train_data(Xval, NVAL, 6); /* the same on every call: written alike */
    if (j->poison)
        X[2 * 17 + 1] = NAN;
    cnf_train_options opt;
    cnf_train_options_default(&opt);
    opt.iters = 30;
    opt.batch = 21;       /* parts of 10 and 11 */
    opt.val_every = 10;
    opt.val_batch = 20;   /* two chunks of 20, parts of 10 */
    opt.flow.divergence = (cnf_divergence)j->divergence;
    opt.flow.solver.rtol = opt.flow.solver.atol = 1e-6;
    opt.flow.adjoint.solver.rtol = opt.flow.adjoint.solver.atol = 1e-6;
    member me = { j->m, (int)j->rank };
    if (j->size > 1) {
        opt.parallel.rank = j->rank;
        opt.parallel.size = j->size;
        opt.parallel.sum = barrier_sum;
        opt.parallel.ctx = &me;
    }
    if (j->stop_at > 0) {
        opt.callback = stop_cb;
        opt.callback_ctx = &j->stop_at;
    }
    cnf_train_state *st = cnf_train_state_alloc(P, 3);
    j->rc = cnf_train_run(flow, X, NTR, Xval, NVAL, &opt, st, &j->res);
    snprintf(j->msg, sizeof j->msg, "%s", j->rc == CNF_OK ? "" : cnf_last_error());
    memcpy(j->params, st->params, P * sizeof *j->params);
    j->P = P;
    j->iters = st->iteration;
    cnf_train_state_free(st);
    cnf_flow_free(flow);
    free(X);
    (void)Xtr;
}

static void *train_thread(void *p)
{
    run_train(p);
    return NULL;
}

/* Two threads with the settings of tj[0] and tj[1]. */
static void train_two(train_job tj[2], meeting *m)
{
    memset(m, 0, sizeof *m);
    pthread_barrier_init(&m->bar, NULL, 2);
    pthread_t th[2];
    for (int r = 0; r < 2; r++) {
        tj[r].rank = (size_t)r;
        tj[r].size = 2;
        tj[r].m = m;
        ck_assert_int_eq(pthread_create(&th[r], NULL, train_thread, &tj[r]), 0);
    }
    for (int r = 0; r < 2; r++)
        pthread_join(th[r], NULL);
    pthread_barrier_destroy(&m->bar);
}

START_TEST(test_train_two_threads_equal_one)
{
    const int divs[2] = { CNF_DIV_EXACT, CNF_DIV_GAUSSIAN };
    for (int d = 0; d < 2; d++) {
        train_job one;
        memset(&one, 0, sizeof one);
        one.divergence = divs[d];
        one.size = 1;
        run_train(&one);
        ck_assert_msg(one.rc == CNF_OK, "%s", one.msg);
        train_job two[2];
        memset(two, 0, sizeof two);
        two[0].divergence = two[1].divergence = divs[d];
        meeting m;
        train_two(two, &m);
        for (int r = 0; r < 2; r++) {
            ck_assert_msg(two[r].rc == CNF_OK, "rank %d: %s", r, two[r].msg);
            ck_assert_uint_eq(two[r].iters, 30);
            /* the same steps as one process, forwards and backwards */
            ck_assert_uint_eq(two[r].res.nfe_forward, one.res.nfe_forward);
            ck_assert_uint_eq(two[r].res.nfe_backward, one.res.nfe_backward);
            ck_assert_uint_eq(two[r].res.nfe_validation, one.res.nfe_validation);
            double dmax = 0.0, pmax = 0.0;
            for (size_t i = 0; i < one.P; i++) {
                dmax = fmax(dmax, fabs(two[r].params[i] - one.params[i]));
                pmax = fmax(pmax, fabs(one.params[i]));
            }
            ck_assert_msg(dmax <= 1e-9 * pmax, "divergence %d, rank %d: parameters differ by "
                          "%.3g (largest %.3g)", divs[d], r, dmax, pmax);
            ck_assert_msg(fabs(two[r].res.val_nll - one.res.val_nll) <=
                              1e-9 * fabs(one.res.val_nll),
                          "validation NLL %.17g against %.17g", two[r].res.val_nll,
                          one.res.val_nll);
            ck_assert(fabs(two[r].res.train_loss - one.res.train_loss) <=
                      1e-9 * fabs(one.res.train_loss));
        }
        /* and every process holds the same parameters, bit for bit */
        ck_assert(memcmp(two[0].params, two[1].params, one.P * sizeof(double)) == 0);
    }
}
END_TEST

/* Two threads with the default settings but for rank 1's: its callback
 * stopping at stop_at (> 0), or a NaN row in its copy of the data. */
static void train_two_rank1(train_job two[2], int stop_at, int poison)
{
    memset(two, 0, 2 * sizeof *two);
    two[1].stop_at = stop_at;
    two[1].poison = poison;
    meeting m;
    train_two(two, &m);
}

START_TEST(test_train_stop_on_one_thread_stops_both)
{
    train_job two[2];
    train_two_rank1(two, 7, 0);
    for (int r = 0; r < 2; r++) {
        ck_assert_msg(two[r].rc == CNF_OK, "rank %d: %s", r, two[r].msg);
        ck_assert_uint_eq(two[r].iters, 7);
        ck_assert_int_eq(two[r].res.interrupted, 1);
    }
}
END_TEST

START_TEST(test_train_failure_on_one_thread_stops_both)
{
    train_job two[2];
    train_two_rank1(two, 0, 1);
    ck_assert_int_eq(two[1].rc, CNF_EDATA);
    ck_assert_msg(strstr(two[1].msg, "row 17") || strstr(two[1].msg, "row 18"), "%s",
                  two[1].msg);
    ck_assert_int_eq(two[0].rc, CNF_ERHS);
    ck_assert_msg(strstr(two[0].msg, "rank 1 failed") != NULL, "%s", two[0].msg);
    ck_assert_uint_eq(two[0].iters, 0);
}
END_TEST

START_TEST(test_train_parallel_refusals)
{
    cnf_train_options opt;
    cnf_train_options_default(&opt);
    opt.parallel.size = 2;
    opt.parallel.rank = 0;
    ck_assert_int_eq(cnf_train_options_check(&opt), CNF_EINVAL); /* no sum */
    opt.parallel.sum = barrier_sum;
    ck_assert_int_eq(cnf_train_options_check(&opt), CNF_OK);
    opt.parallel.rank = 2;
    ck_assert_int_eq(cnf_train_options_check(&opt), CNF_EINVAL);
    opt.parallel.rank = 1;
    opt.batch = 1;
    ck_assert_int_eq(cnf_train_options_check(&opt), CNF_EINVAL);
    opt.batch = 100;
    opt.objective = CNF_OBJ_FM;
    opt.learn_T = 0;
    ck_assert_int_eq(cnf_train_options_check(&opt), CNF_ENOTIMPL);
    ck_assert(strstr(cnf_last_error(), "flow matching") != NULL);
}
END_TEST


/* ---- evaluation ------------------------------------------------------------ */

enum { NEV = 50, EVCHUNK = 20 };   /* chunks of 20, 20 and 10 rows */

typedef struct {
    size_t rank, size;
    meeting *m;
    int decode;
    double out[NEV * TD];
    size_t n, nfe;
    cnf_status rc;
} eval_job;

static void run_eval(eval_job *j)
{
    gsl_rng *rng = tu_rng(11);
    cnf_flow *flow = tu_flow(TD, 2, "8-8", CNF_LAYER_CONCATSQUASH, CNF_ACT_TANH,
                             (double[]){ 0.5, 0.7 }, rng);
    gsl_rng_free(rng);
    double X[NEV * TD];
    train_data(X, NEV, 8);
    member me = { j->m, (int)j->rank };
    cnf_flow_options fo;
    cnf_flow_options_default(&fo);
    fo.divergence = CNF_DIV_GAUSSIAN;   /* each part keeps its rows of the chunk's noise */
    if (j->size > 1) {
        fo.reduce = barrier_sum;
        fo.reduce_ctx = &me;
    }
    cnf_flow_work *w = cnf_flow_work_alloc(flow, EVCHUNK, &fo);
    ck_assert_ptr_nonnull(w);
    gsl_rng *noise = tu_rng(21);
    cnf_flow_stats st;
    if (j->size > 1)
        j->rc = j->decode ? cnf_flow_decode_part(flow, w, X, NEV, EVCHUNK, j->rank, j->size,
                                                 j->out, &st)
                          : cnf_flow_log_likelihood_part(flow, w, X, NEV, EVCHUNK, j->rank,
                                                         j->size, noise, j->out, &st);
    else
        j->rc = j->decode ? cnf_flow_decode(flow, w, X, NEV, j->out, &st)
                          : cnf_flow_log_likelihood(flow, w, X, NEV, noise, j->out, &st);
    j->nfe = st.forward.nfe;
    gsl_rng_free(noise);
    cnf_flow_work_free(w);
    cnf_flow_free(flow);
}

static void *eval_thread(void *p)
{
    run_eval(p);
    return NULL;
}

START_TEST(test_eval_parts_equal_one)
{
    for (int decode = 0; decode <= 1; decode++) {
        eval_job one;
        memset(&one, 0, sizeof one);
        one.size = 1;
        one.decode = decode;
        run_eval(&one);
        ck_assert_int_eq(one.rc, CNF_OK);
        eval_job two[2];
        memset(two, 0, sizeof two);
        meeting m;
        memset(&m, 0, sizeof m);
        pthread_barrier_init(&m.bar, NULL, 2);
        pthread_t th[2];
        for (int r = 0; r < 2; r++) {
            two[r] = (eval_job){ .rank = (size_t)r, .size = 2, .m = &m, .decode = decode };
            ck_assert_int_eq(pthread_create(&th[r], NULL, eval_thread, &two[r]), 0);
        }
        for (int r = 0; r < 2; r++)
            pthread_join(th[r], NULL);
        pthread_barrier_destroy(&m.bar);
        /* rank r's rows, chunk by chunk, against the same rows of one call */
        size_t width = decode ? TD : 1, at[2] = { 0, 0 };
        for (size_t c0 = 0; c0 < NEV; c0 += EVCHUNK) {
            size_t cb = NEV - c0 < EVCHUNK ? NEV - c0 : EVCHUNK;
            for (int r = 0; r < 2; r++) {
                ck_assert_int_eq(two[r].rc, CNF_OK);
                ck_assert_uint_eq(two[r].nfe, one.nfe);
                size_t b0, n = cnf_flow_part_rows(cb, (size_t)r, 2, &b0);
                for (size_t i = 0; i < n * width; i++) {
                    double a = two[r].out[at[r] + i], b = one.out[(c0 + b0) * width + i];
                    ck_assert_msg(fabs(a - b) <= 1e-12 * (1.0 + fabs(b)),
                                  "%s, chunk at %zu, rank %d, value %zu: %.17g vs %.17g",
                                  decode ? "decode" : "log-likelihood", c0, r, i, a, b);
                }
                at[r] += n * width;
            }
        }
    }
}
END_TEST

/* ---- the adjoint's end-time verdict ------------------------------------- */

/* dz_b/dt = -theta z_b on each thread's rows; bad makes f at the end time
 * non-finite (return 1) on that thread alone. */
typedef struct {
    double theta, T;
    int bad;
    member me;
    cnf_status rc;
    char msg[512];
} adjoint_job;

static int decay_vjp(double t, const double *z, const double *a, double *f, double *l,
                     double *zbar, double *thetabar, void *ctx)
{
    adjoint_job *j = ctx;
    if (j->bad && t == j->T)
        return 1;
    for (size_t i = 0; i < HALF; i++) {
        if (f)
            f[i] = -j->theta * z[i];
        if (a && zbar)
            zbar[i] += -j->theta * a[i];
        if (a && thetabar)
            thetabar[0] += -a[i] * z[i];
    }
    if (l)
        *l = 0.0;
    return 0;
}

static void *adjoint_thread(void *p)
{
    adjoint_job *j = p;
    cnf_adjoint_options ao;
    cnf_adjoint_options_default(&ao);
    ao.backsolve = 1;
    ao.reduce = barrier_sum;
    ao.reduce_ctx = &j->me;
    cnf_adjoint *adj = cnf_adjoint_alloc(HALF, 1, &ao);
    ck_assert_ptr_nonnull(adj);
    cnf_adjoint_problem pb = { HALF, 1, decay_vjp, j };
    double z[HALF], a[HALF], g[1], dT[1];
    for (size_t i = 0; i < HALF; i++) {
        z[i] = 1.0 + 0.1 * (double)(i + HALF * (size_t)j->me.rank);
        a[i] = z[i];
    }
    j->rc = cnf_adjoint_solve(adj, &pb, NULL, 0.0, 1, &j->T, z, a, a, g, dT, NULL);
    snprintf(j->msg, sizeof j->msg, "%s", j->rc == CNF_OK ? "" : cnf_last_error());
    cnf_adjoint_free(adj);
    return NULL;
}

/* One thread's dynamics fail at the end time, before any backward step:
 * both threads return (neither waits in a reduction the other skipped),
 * the failing one with its own status, the other told another failed. */
START_TEST(test_adjoint_end_time_failure_on_one_thread)
{
    meeting m;
    memset(&m, 0, sizeof m);
    pthread_barrier_init(&m.bar, NULL, 2);
    adjoint_job j[2];
    pthread_t th[2];
    for (int r = 0; r < 2; r++) {
        memset(&j[r], 0, sizeof j[r]);
        j[r].theta = 0.7;
        j[r].T = 0.8;
        j[r].bad = r == 1;
        j[r].me = (member){ &m, r };
        ck_assert_int_eq(pthread_create(&th[r], NULL, adjoint_thread, &j[r]), 0);
    }
    for (int r = 0; r < 2; r++)
        pthread_join(th[r], NULL);
    pthread_barrier_destroy(&m.bar);
    ck_assert_int_eq(j[1].rc, CNF_ENONFINITE);
    ck_assert_msg(strstr(j[1].msg, "observation time") != NULL, "%s", j[1].msg);
    ck_assert_int_eq(j[0].rc, CNF_ERHS);
    ck_assert_msg(strstr(j[0].msg, "another process") != NULL, "%s", j[0].msg);
    ck_assert_uint_eq(m.calls[0], m.calls[1]);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("parallel");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_two_threads_take_one_solvers_steps);
    tcase_add_test(tc, test_nan_on_one_thread_rejects_on_both);
    tcase_add_test(tc, test_fatal_on_one_thread_stops_both);
    tcase_add_test(tc, test_set_reduction_arguments);
    tcase_add_test(tc, test_integral_group_among_summed);
    tcase_add_test(tc, test_adjoint_end_time_failure_on_one_thread);
    tcase_add_test(tc, test_train_two_threads_equal_one);
    tcase_add_test(tc, test_train_stop_on_one_thread_stops_both);
    tcase_add_test(tc, test_train_failure_on_one_thread_stops_both);
    tcase_add_test(tc, test_train_parallel_refusals);
    tcase_add_test(tc, test_eval_parts_equal_one);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
