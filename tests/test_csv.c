/* test_csv.c — CSV tables (cnf/csv.h): delimiters given and detected,
 * quoted cells (delimiters, quotes and line breaks inside), headers, the
 * refusals named by line and column, the bit-exact write/read round trip,
 * header lines joined and split; and cnf_flow_options_from_model (cnf/io.h),
 * which reads the solver settings of a model's record. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cnf/csv.h"
#include "cnf/io.h"
#include "testutil.h"

static char dir[64];

static void make_dir(void)
{
    tu_tmpdir_make(dir, sizeof dir, "test_csv");
}

static void remove_dir(void)
{
    tu_tmpdir_remove(dir);
}

/* Write text to dir/name; the path in a static buffer. */
static const char *file_with(const char *name, const char *text)
{
    static char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    return path;
}

typedef struct {
    double *X;
    size_t N, D;
    char **names;
    cnf_status s;
} table;

static table read_text(const char *text, char delimiter, cnf_csv_header header)
{
    cnf_csv_options o;
    cnf_csv_options_default(&o);
    o.delimiter = delimiter;
    o.header = header;
    table t;
    t.s = cnf_csv_read(file_with("t.csv", text), &o, &t.X, &t.N, &t.D, &t.names);
    return t;
}

static void table_free(table *t)
{
    free(t->X);
    cnf_csv_names_free(t->names, t->D);
}

START_TEST(test_delimiters_detected_and_given)
{
    const char *texts[] = {"a,b,c\n1,2,3\n4,5,6\n", "a;b;c\n1;2;3\n4;5;6\n",
                           "a\tb\tc\n1\t2\t3\n4\t5\t6\n",
                           /* ',' inside a quoted name, ';' the delimiter */
                           "\"a,x\";b;c\n1;2;3\n4;5;6\n"};
    for (size_t k = 0; k < 4; k++) {
        table t = read_text(texts[k], 0, CNF_CSV_HEADER_AUTO);
        ck_assert_msg(t.s == CNF_OK, "%zu: %s", k, cnf_last_error());
        ck_assert_uint_eq(t.N, 2);
        ck_assert_uint_eq(t.D, 3);
        for (size_t i = 0; i < 6; i++)
            ck_assert_double_eq(t.X[i], (double)(i + 1));
        ck_assert_ptr_nonnull(t.names);
        ck_assert_str_eq(t.names[0], k == 3 ? "a,x" : "a");
        ck_assert_str_eq(t.names[2], "c");
        table_free(&t);
    }
    /* Given: ';' over a file whose cells are separated by ';' but which has
     * more ',' on its first line (decimal commas) is refused by the cell. */
    table t = read_text("1,5;2,5\n", ';', CNF_CSV_HEADER_NO);
    ck_assert_int_eq(t.s, CNF_EFORMAT);
    ck_assert_ptr_nonnull(strstr(cnf_last_error(), "line 1, column 1: '1,5' is not a number"));
    /* Detected: ';' occurs the same number of times on every line, so the
     * decimal commas do not split cells. */
    t = read_text("1,5;2,5\n3,5;4,5\n", 0, CNF_CSV_HEADER_NO);
    ck_assert_int_eq(t.s, CNF_EFORMAT);
    ck_assert_ptr_nonnull(strstr(cnf_last_error(), "'1,5' is not a number"));
    /* One column: no delimiter anywhere. */
    t = read_text("x\n1\n2\n", 0, CNF_CSV_HEADER_AUTO);
    ck_assert_int_eq(t.s, CNF_OK);
    ck_assert_uint_eq(t.D, 1);
    ck_assert_uint_eq(t.N, 2);
    table_free(&t);
}
END_TEST

START_TEST(test_quotes_spaces_comments)
{
    /* A quoted header cell with "" and a line break, quoted numbers, spaces
     * around cells, CRLF line ends, a comment and a blank line. */
    table t = read_text("# comment\r\n\"say \"\"hi\"\"\",\"two\nlines\"\r\n\r\n"
                        " \"1.5\" , 2 \r\n-3e-2,\"4\"\r\n",
                        0, CNF_CSV_HEADER_AUTO);
    ck_assert_msg(t.s == CNF_OK, "%s", cnf_last_error());
    ck_assert_uint_eq(t.N, 2);
    ck_assert_uint_eq(t.D, 2);
    ck_assert_str_eq(t.names[0], "say \"hi\"");
    ck_assert_str_eq(t.names[1], "two\nlines");
    ck_assert_double_eq(t.X[0], 1.5);
    ck_assert_double_eq(t.X[1], 2.0);
    ck_assert_double_eq(t.X[2], -3e-2);
    ck_assert_double_eq(t.X[3], 4.0);
    table_free(&t);
    /* Header forced: a numeric first line becomes the names. */
    t = read_text("1,2\n3,4\n", 0, CNF_CSV_HEADER_YES);
    ck_assert_int_eq(t.s, CNF_OK);
    ck_assert_uint_eq(t.N, 1);
    ck_assert_str_eq(t.names[1], "2");
    table_free(&t);
    /* No header: names NULL. */
    t = read_text("1,2\n3,4\n", 0, CNF_CSV_HEADER_AUTO);
    ck_assert_int_eq(t.s, CNF_OK);
    ck_assert_ptr_null(t.names);
    table_free(&t);
}
END_TEST

START_TEST(test_refusals_named)
{
    struct {
        const char *text;
        cnf_status status;
        const char *message;
    } cases[] = {
        {"a,b\n1,2\n3,NA\n", CNF_EDATA,
         "line 3, column 2 (\"b\"): missing value ('NA', data row 2)"},
        {"a,b\n1,\n", CNF_EDATA,
         "line 2, column 2 (\"b\"): missing value (an empty cell, data row 1)"},
        {"1,2\nnan,4\n", CNF_EDATA, "line 2, column 1: missing value ('nan', data row 2)"},
        {"1,2\n3,1e400\n", CNF_EDATA, "line 2, column 2: '1e400' is not a finite number"},
        {"1,2\n3,x4\n", CNF_EFORMAT, "line 2, column 2: 'x4' is not a number"},
        {"a,b\n1,2\n3,4,5\n", CNF_EFORMAT, "line 3 has 3 columns, expected 2"},
        {"1,2\n\"3\"x,4\n", CNF_EFORMAT, "line 2, column 1: text after the closing quote"},
        {"1,2\n\"3,4\n5,6\n", CNF_EFORMAT, "line 2: a quote opened there is never closed"},
        {"a,b\n", CNF_EDIM, "no data rows"},
        {"", CNF_EDIM, "no data rows"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        table t = read_text(cases[k].text, 0, CNF_CSV_HEADER_AUTO);
        ck_assert_msg(t.s == cases[k].status, "case %zu: status %d (%s)", k, t.s,
                      cnf_last_error());
        ck_assert_msg(strstr(cnf_last_error(), cases[k].message), "case %zu: '%s'", k,
                      cnf_last_error());
        ck_assert_ptr_null(t.X);
        ck_assert_ptr_null(t.names);
    }
    /* An underflow is the nearest double, not an error. */
    table t = read_text("1e-320,0\n", 0, CNF_CSV_HEADER_NO);
    ck_assert_int_eq(t.s, CNF_OK);
    ck_assert(t.X[0] > 0 && t.X[0] < 1e-300);
    table_free(&t);
}
END_TEST

START_TEST(test_write_read_round_trip)
{
    gsl_rng *r = tu_rng(3);
    enum { N = 50, D = 3 };
    double X[N * D];
    for (size_t i = 0; i < N * D; i++)
        X[i] = (gsl_rng_uniform(r) - 0.5) * pow(10.0, (double)(i % 40) - 20.0);
    gsl_rng_free(r);
    char *names[D] = {"plain", "with, comma", "with \"quote\""};
    for (int tsv = 0; tsv < 2; tsv++) {
        char path[128];
        snprintf(path, sizeof path, "%s/out.%s", dir, tsv ? "tsv" : "csv");
        ck_assert_int_eq(cnf_csv_write(path, X, N, D, names, cnf_csv_delimiter_for_path(path)),
                         CNF_OK);
        table t;
        t.s = cnf_csv_read(path, NULL, &t.X, &t.N, &t.D, &t.names);
        ck_assert_msg(t.s == CNF_OK, "%s", cnf_last_error());
        ck_assert_uint_eq(t.N, N);
        ck_assert_uint_eq(t.D, D);
        ck_assert_int_eq(memcmp(t.X, X, sizeof X), 0);   /* bit for bit */
        for (size_t j = 0; j < D; j++)
            ck_assert_str_eq(t.names[j], names[j]);
        table_free(&t);
    }
    /* A missing directory: CNF_EIO and nothing written. */
    ck_assert_int_eq(cnf_csv_write("/nonexistent-dir/x.csv", X, N, D, NULL, ','), CNF_EIO);
}
END_TEST

START_TEST(test_names_join_split)
{
    char *names[4] = {"a", "b,c", "d \"e\"", " f"};
    char *line = cnf_csv_join_names(names, 4);
    ck_assert_str_eq(line, "a,\"b,c\",\"d \"\"e\"\"\",\" f\"");
    char **back;
    size_t n;
    ck_assert_int_eq(cnf_csv_split_names(line, &back, &n), CNF_OK);
    ck_assert_uint_eq(n, 4);
    for (size_t j = 0; j < 4; j++)
        ck_assert_str_eq(back[j], names[j]);
    cnf_csv_names_free(back, n);
    free(line);
    ck_assert_int_eq(cnf_csv_split_names("a,\"b", &back, &n), CNF_EFORMAT);
    ck_assert(cnf_csv_is_csv_path("x.CSV") && cnf_csv_is_csv_path("d/x.tsv"));
    ck_assert(!cnf_csv_is_csv_path("x.h5") && !cnf_csv_is_csv_path(".csv/x.h5"));
}
END_TEST

START_TEST(test_flow_options_from_model)
{
    cnf_flow_options d, o;
    cnf_flow_options_default(&d);
    /* No record: the defaults. */
    ck_assert_int_eq(cnf_flow_options_from_model(NULL, &o), CNF_OK);
    ck_assert_double_eq(o.solver.rtol, d.solver.rtol);
    cnf_model_extra ex;
    cnf_model_extra_init(&ex);
    ck_assert_int_eq(cnf_model_extra_set(&ex, "solver", "rkf45"), CNF_OK);
    ck_assert_int_eq(cnf_model_extra_set(&ex, "rtol", "1e-07"), CNF_OK);
    ck_assert_int_eq(cnf_model_extra_set(&ex, "atol", "1e-09"), CNF_OK);
    ck_assert_int_eq(cnf_model_extra_set(&ex, "max_steps", "777"), CNF_OK);
    ck_assert_int_eq(cnf_model_extra_set(&ex, "divergence", "gaussian"), CNF_OK);
    ck_assert_int_eq(cnf_flow_options_from_model(&ex, &o), CNF_OK);
    ck_assert_int_eq(o.solver.method, CNF_ODE_RKF45);
    ck_assert_double_eq(o.solver.rtol, 1e-7);
    ck_assert_double_eq(o.solver.atol, 1e-9);
    ck_assert_uint_eq(o.solver.max_steps, 777);
    ck_assert_int_eq(o.adjoint.solver.method, CNF_ODE_RKF45);
    ck_assert_double_eq(o.adjoint.solver.atol, 1e-9);
    /* Training's divergence is not evaluation's: exact stays. */
    ck_assert_int_eq(o.divergence, d.divergence);
    /* A damaged value: CNF_EFORMAT naming it, its default kept, the rest taken. */
    ck_assert_int_eq(cnf_model_extra_set(&ex, "atol", "-1"), CNF_OK);
    ck_assert_int_eq(cnf_flow_options_from_model(&ex, &o), CNF_EFORMAT);
    ck_assert_ptr_nonnull(strstr(cnf_last_error(), "atol = '-1'"));
    ck_assert_double_eq(o.solver.atol, d.solver.atol);
    ck_assert_double_eq(o.solver.rtol, 1e-7);
    cnf_model_extra_clear(&ex);
}
END_TEST

int main(void)
{
    tu_program_setup();
    Suite *s = suite_create("csv");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, make_dir, remove_dir);
    tcase_add_test(tc, test_delimiters_detected_and_given);
    tcase_add_test(tc, test_quotes_spaces_comments);
    tcase_add_test(tc, test_refusals_named);
    tcase_add_test(tc, test_write_read_round_trip);
    tcase_add_test(tc, test_names_join_split);
    tcase_add_test(tc, test_flow_options_from_model);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
