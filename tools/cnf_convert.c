/* cnf_convert.c — `cnf convert data.csv`: a user's CSV file (cnf/csv.h: the
 * delimiter and header detected or given, quoted cells) to the toolkit's
 * data layout (docs/formats.md): rows shuffled with a seeded generator, then
 * split into /train, /val and /test (float64), the header's names kept as
 * the root attribute columns. Every row must have the same number of
 * columns and every cell must be a finite number; the first offence is
 * reported with its line and column (both counted from 1, as editors do). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cnf/csv.h"
#include "cnf/data.h"
#include "cnf/file.h"
#include "commands.h"

/* --delimiter: ",", ";", "tab" (or a literal tab), "auto" (0: detect). */
static char parse_delimiter(const char *text)
{
    if (!strcmp(text, "auto"))
        return 0;
    if (!strcmp(text, "tab") || !strcmp(text, "\t") || !strcmp(text, "\\t"))
        return '\t';
    if (!strcmp(text, ",") || !strcmp(text, ";"))
        return text[0];
    cli_usage("--delimiter %s: expected auto, ',', ';' or tab", text);
}

int cmd_convert(int argc, char **argv)
{
    const char *out = NULL, *split = "0.8,0.1,0.1", *header = "auto", *delimiter = "auto";
    unsigned long seed = 1;
    int shuffle = 1;
    cli_option opts[] = {
        {"out", CLI_STRING, &out, "F.h5", "output data file", CLI_REQUIRED, 0},
        {"split", CLI_STRING, &split, "F,F,F", "fractions of train, val, test", NULL, 0},
        {"seed", CLI_SEED, &seed, "S", "seed of the shuffle (mt19937)", NULL, 0},
        {"shuffle", CLI_BOOL, &shuffle, "0|1", "shuffle the rows before splitting", NULL, 0},
        {"header", CLI_STRING, &header, "auto|yes|no",
         "first line is a header (auto: if any of its cells is not a number)", NULL, 0},
        {"delimiter", CLI_STRING, &delimiter, "auto|,|;|tab",
         "cell delimiter (auto: detected from the first lines)", NULL, 0},
        {NULL, 0, NULL, NULL, NULL, NULL, 0}};
    const char *pos[1];
    size_t n_pos;
    cli_parse(argc, argv, opts,
              "convert data.csv --out data.h5 [--split 0.8,0.1,0.1] [--seed S] [--delimiter D]",
              "Convert a CSV file (numbers separated by ',', ';' or tabs, one row per line,\n"
              "an optional header line whose names are kept as the attribute 'columns';\n"
              "quoted cells as RFC 4180; blank lines and lines starting with '#' are\n"
              "skipped; a missing value, NA or empty, is refused by line and column) into\n"
              "/train, /val and /test of an HDF5 data file (float64, N x D).",
              pos, 1, &n_pos);
    if (n_pos != 1)
        cli_usage("name the CSV file to convert");
    if (strcmp(header, "auto") && strcmp(header, "yes") && strcmp(header, "no"))
        cli_usage("--header %s: expected auto, yes or no", header);
    cnf_csv_options co;
    cnf_csv_options_default(&co);
    co.delimiter = parse_delimiter(delimiter);
    co.header = !strcmp(header, "yes") ? CNF_CSV_HEADER_YES
                : !strcmp(header, "no") ? CNF_CSV_HEADER_NO : CNF_CSV_HEADER_AUTO;
    const char *csv = pos[0];
    cli_check_output(out, &csv, 1);
    size_t N, D;
    double *X;   /* N x D */
    char **names;
    cli_check(cnf_csv_read(csv, &co, &X, &N, &D, &names), NULL);
    char *columns = names ? cnf_csv_join_names(names, D) : NULL;
    if (names && !columns)
        cli_die("%s", cnf_last_error());
    cnf_csv_names_free(names, D);

    size_t counts[3];
    cli_split_counts(split, N, counts);
    cli_check_split_rows(split, N, counts);
    if (shuffle)
        cli_shuffle_rows(X, N, D, seed);
    char source[4200];
    snprintf(source, sizeof source, "cnf convert %s, shuffle %d, seed %lu, split %s", csv,
             shuffle, seed, split);
    cli_write_splits(out, X, counts, D, source, columns);
    free(columns);
    free(X);
    return 0;
}
