/* cnf_convert.c — `cnf convert data.csv`: a user's CSV file (numbers
 * separated by commas, an optional header line) to the toolkit's data layout
 * (DESIGN.md section 5): rows shuffled with a seeded generator, then split
 * into /train, /val and /test (float64). Every row must have the same number
 * of columns and every cell must be a finite number; the first offence is
 * reported with its line and column (both counted from 1, as editors do). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gsl/gsl_randist.h>
#include <gsl/gsl_rng.h>

#include "cli.h"
#include "cnf/data.h"
#include "cnf/file.h"
#include "commands.h"

/* Trim spaces, tabs and a trailing CR in place; returns the start. */
static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = '\0';
    return s;
}

/* Parse one cell; 0 if it is a number (value in *x). strtod reports ERANGE
 * both for overflow (+-HUGE_VAL) and for underflow (a denormal or 0, the
 * nearest double): an underflowed value such as 1e-320 is a number and is
 * kept; an overflowed one such as 1e400 is refused, as inf would be. */
static int parse_cell(const char *cell, double *x)
{
    char *end;
    errno = 0;
    *x = strtod(cell, &end);
    if (!cell[0] || *end)
        return -1;
    return (errno == ERANGE && isinf(*x)) ? -1 : 0;
}

/* Split line at commas into cells (pointers into line); returns the count. */
static size_t split_cells(char *line, char ***cells, size_t *cap)
{
    size_t n = 0;
    char *p = line;
    for (;;) {
        char *comma = strchr(p, ',');
        if (comma)
            *comma = '\0';
        if (n == *cap) {
            *cap = *cap ? 2 * *cap : 16;
            char **c = realloc(*cells, *cap * sizeof *c);
            if (!c)
                cli_die("out of memory");
            *cells = c;
        }
        (*cells)[n++] = trim(p);
        if (!comma)
            return n;
        p = comma + 1;
    }
}

/* Is the first data line a header? "yes", "no", or with "auto" whether any
 * of its nc cells is not a number. */
static int is_header(const char *header, char **cells, size_t nc)
{
    if (strcmp(header, "auto"))
        return !strcmp(header, "yes");
    for (size_t j = 0; j < nc; j++) {
        double x;
        if (parse_cell(cells[j], &x))
            return 1;
    }
    return 0;
}

/* The numbers of a CSV file (N x D, malloc'd), or exit naming the file, line
 * and column at fault. */
static double *read_csv(const char *csv, const char *header, size_t *N_out, size_t *D_out)
{
    FILE *f;
    cli_check(cnf_file_open_input(csv, &f), NULL);
    char *line = NULL, **cells = NULL;
    size_t line_cap = 0, cells_cap = 0, lineno = 0, D = 0, N = 0, cap = 0;
    double *X = NULL;   /* N x D, grown */
    int first = 1;
    while (getline(&line, &line_cap, f) != -1) {
        lineno++;
        char *s = trim(line);
        if (!s[0] || s[0] == '#')
            continue;
        size_t nc = split_cells(s, &cells, &cells_cap);
        if (first) {
            first = 0;
            D = nc;
            if (is_header(header, cells, nc))
                continue;
        }
        if (nc != D)
            cli_die("%s: line %zu has %zu columns, expected %zu (as on the first line)", csv,
                    lineno, nc, D);
        if (N == cap) {
            cap = cap ? 2 * cap : 1024;
            double *nx = realloc(X, cap * D * sizeof *nx);
            if (!nx)
                cli_die("out of memory reading %s", csv);
            X = nx;
        }
        for (size_t j = 0; j < nc; j++) {
            double x;
            if (parse_cell(cells[j], &x))
                cli_die("%s: line %zu, column %zu: '%s' is not a number", csv, lineno, j + 1,
                        cells[j]);
            if (!isfinite(x))
                cli_die("%s: line %zu, column %zu: '%s' is not a finite number", csv, lineno,
                        j + 1, cells[j]);
            X[N * D + j] = x;
        }
        N++;
    }
    int read_error = ferror(f);
    fclose(f);
    free(line);
    free(cells);
    if (read_error)
        cli_die("error reading %s", csv);
    if (N == 0)
        cli_die("%s: no data rows", csv);
    *N_out = N;
    *D_out = D;
    return X;
}

int cnf_cmd_convert(int argc, char **argv)
{
    const char *out = NULL, *split = "0.8,0.1,0.1", *header = "auto";
    unsigned long seed = 1;
    int shuffle = 1;
    cli_option opts[] = {
        {"out", CLI_STRING, &out, "F.h5", "output data file", CLI_REQUIRED, 0},
        {"split", CLI_STRING, &split, "F,F,F", "fractions of train, val, test", NULL, 0},
        {"seed", CLI_SEED, &seed, "S", "seed of the shuffle (mt19937)", NULL, 0},
        {"shuffle", CLI_BOOL, &shuffle, "0|1", "shuffle the rows before splitting", NULL, 0},
        {"header", CLI_STRING, &header, "auto|yes|no",
         "first line is a header (auto: if any of its cells is not a number)", NULL, 0},
        {NULL, 0, NULL, NULL, NULL, NULL, 0}};
    const char *pos[1];
    size_t n_pos;
    cli_parse(argc, argv, opts, "convert data.csv --out data.h5 [--split 0.8,0.1,0.1] [--seed S]",
              "Convert a CSV file (comma-separated numbers, one row per line, an optional\n"
              "header line; blank lines and lines starting with '#' are skipped) into\n"
              "/train, /val and /test of an HDF5 data file (float64, N x D).",
              pos, 1, &n_pos);
    if (n_pos != 1)
        cli_usage("name the CSV file to convert");
    if (strcmp(header, "auto") && strcmp(header, "yes") && strcmp(header, "no"))
        cli_usage("--header %s: expected auto, yes or no", header);
    const char *csv = pos[0];
    cli_check_output(out, &csv, 1);
    size_t N, D;
    double *X = read_csv(csv, header, &N, &D);   /* N x D */

    size_t counts[3];
    cli_split_counts(split, N, counts);
    if (shuffle) {
        /* Shuffle whole rows through an index permutation. */
        gsl_rng *rng = gsl_rng_alloc(gsl_rng_mt19937);
        if (!rng)
            cli_die("out of memory");
        gsl_rng_set(rng, seed);
        size_t *idx = cli_malloc(N * sizeof *idx);
        for (size_t i = 0; i < N; i++)
            idx[i] = i;
        gsl_ran_shuffle(rng, idx, N, sizeof *idx);
        double *Y = cli_malloc(N * D * sizeof *Y);   /* N x D */
        for (size_t i = 0; i < N; i++)
            memcpy(Y + i * D, X + idx[i] * D, D * sizeof *Y);
        free(X);
        free(idx);
        X = Y;
        gsl_rng_free(rng);
    }
    char source[4200];
    snprintf(source, sizeof source, "cnf convert %s, shuffle %d, seed %lu, split %s", csv,
             shuffle, seed, split);
    cli_write_splits(out, X, counts, D, source);
    free(X);
    return 0;
}
