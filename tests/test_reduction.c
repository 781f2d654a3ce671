/* test_reduction.c — the solver's reduction across processes
 * (cnf_ode_solver_set_reduction), without MPI: two threads each solve half
 * the rows of a problem, their sums meeting at a pthread barrier, and take
 * exactly the steps (accepted, rejected, nfe) of one solver on all rows,
 * with the states equal up to the order of summation; a non-finite value on
 * one thread rejects the attempt on both; a fatal failure on one stops
 * both, each with its own message, and neither waits for the other. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "cnf/ode.h"
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
    int two_groups;     /* groups [rows | Q] rather than one RMS */
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
    if (j->two_groups) {
        size_t sz[2] = { j->pb.nrows, 1 };
        ck_assert_int_eq(cnf_ode_solver_set_norm_groups(s, 2, sz, (const int[]){1, 1}), CNF_OK);
    }
    /* after the groups, to check that changing them keeps the reduction */
    if (sum)
        ck_assert_int_eq(cnf_ode_solver_set_reduction(s, sum, &j->me, 1), CNF_OK);
    if (j->two_groups && sum) {
        size_t sz[2] = { j->pb.nrows, 1 };
        ck_assert_int_eq(cnf_ode_solver_set_norm_groups(s, 2, sz, (const int[]){1, 1}), CNF_OK);
    }
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

START_TEST(test_two_threads_take_one_solvers_steps)
{
    for (size_t mi = 0; mi < NELEM(methods); mi++)
        for (int variant = 0; variant < 4; variant++) {
            job whole;
            memset(&whole, 0, sizeof whole);
            cnf_ode_options_default(&whole.opt);
            whole.opt.method = methods[mi];
            whole.opt.rtol = whole.opt.atol = 1e-7;
            if (!cnf_ode_method_is_adaptive(methods[mi]))
                whole.opt.h0 = 0.05;
            whole.pb.bad_row = (size_t)-1;
            whole.two_groups = variant & 1;
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
            memset(&whole, 0, sizeof whole);
            cnf_ode_options_default(&whole.opt);
            whole.opt.method = methods[mi];
            whole.opt.rtol = whole.opt.atol = 1e-6;
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
        memset(&whole, 0, sizeof whole);
        cnf_ode_options_default(&whole.opt);
        whole.opt.method = methods[mi];
        if (!cnf_ode_method_is_adaptive(methods[mi]))
            whole.opt.h0 = 0.05;
        whole.pb.bad_row = (size_t)-1;
        whole.pb.nrows = ROWS;
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
    memset(&whole, 0, sizeof whole);
    cnf_ode_options_default(&whole.opt);
    whole.pb.bad_row = (size_t)-1;
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

START_TEST(test_set_reduction_arguments)
{
    cnf_ode_options o;
    cnf_ode_options_default(&o);
    cnf_ode_solver *s = cnf_ode_solver_alloc(3, &o);
    ck_assert_int_eq(cnf_ode_solver_set_reduction(NULL, barrier_sum, NULL, 0), CNF_EINVAL);
    ck_assert_int_eq(cnf_ode_solver_set_reduction(s, barrier_sum, NULL, 4), CNF_EINVAL);
    ck_assert_int_eq(cnf_ode_solver_set_reduction(s, barrier_sum, NULL, 3), CNF_OK);
    ck_assert_int_eq(cnf_ode_solver_set_reduction(s, NULL, NULL, 0), CNF_OK);
    /* removed: a solve needs no partner */
    problem pb = { 0, 2, (size_t)-1, 0, 0.0 };
    double y[3] = { 0.3, 0.4, 0.0 };
    ck_assert_int_eq(cnf_ode_solve(s, rhs_rows, &pb, 0.0, 1.0, y, NULL, NULL), CNF_OK);
    cnf_ode_solver_free(s);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("reduction");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_two_threads_take_one_solvers_steps);
    tcase_add_test(tc, test_nan_on_one_thread_rejects_on_both);
    tcase_add_test(tc, test_fatal_on_one_thread_stops_both);
    tcase_add_test(tc, test_set_reduction_arguments);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
