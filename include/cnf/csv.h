/* cnf/csv.h — numeric tables as CSV text: reading them with clear errors,
 * writing them atomically, and the column names that travel with them.
 *
 * What is read. One record per line: cells separated by a delimiter, ','
 * ';' or tab, either given or detected (below). A cell may be quoted as
 * RFC 4180 has it: "..." with "" for a quote inside; a quoted cell may hold
 * the delimiter and line breaks (a record then spans several lines). Spaces
 * around a cell are ignored (and tabs, unless tab is the delimiter). Blank
 * lines and lines whose first character is '#' are skipped. Every record
 * must have the number of cells of the first one. A CR before the line feed
 * (a file from Windows) is ignored.
 *
 * Every data cell must be a finite decimal number (strtod's syntax, after
 * unquoting; an underflow to a denormal or 0 is kept, an overflow such as
 * 1e400 is refused). A missing value, i.e. an empty cell or one of NA, N/A,
 * NaN, NULL, None (any case), is refused, naming the line, the data row and
 * the column (by number and, with a header, by name): the caller decides
 * how to impute, cnf does not guess.
 *
 * Header. CNF_CSV_HEADER_AUTO takes the first record as a header when any
 * of its cells is neither a number nor a missing value; _YES and _NO force
 * it. The header's cells, unquoted, are the column names.
 *
 * Delimiter detection (delimiter 0). Among tab, ';' and ',' (in that order
 * of preference), the first that occurs, outside quotes, the same non-zero
 * number of times in each of the first 20 records; failing that, the one
 * most frequent in the first record; a file in which none occurs has one
 * column. So "1,5;2,5" (decimal commas) is split at ';' and then refused
 * as "1,5" is not a number, rather than read as four columns.
 *
 * Column names in HDF5 files. cnf keeps a table's column names beside the
 * numbers as one string attribute, "columns", holding the header line as
 * CSV text (comma-separated, quoted as needed; cnf_csv_join_names), on the
 * root of data files (`cnf convert`), in the training record of models
 * (`cnf train`) and on the root of sample files, so that a CSV written from
 * them carries the names back.
 *
 * Writing. cnf_csv_write writes "%.17g" numbers, which read back to the
 * same doubles, through a temporary file renamed over the target only when
 * complete (as cnf/data.h's writer does for HDF5): an error never leaves a
 * partial file and never touches an existing one.
 *
 * Errors: CNF_EIO (cannot open, read or write; message names the file),
 * CNF_EFORMAT (a record with another number of cells, a cell that is not a
 * number, text after a closing quote, a quote that never closes),
 * CNF_EDATA (a missing value or a non-finite number), CNF_EDIM (no data
 * rows), CNF_ENOMEM, CNF_EINVAL (bad arguments). Messages name the file,
 * line and column, counted from 1 as editors count.
 *
 * Typical call:
 *
 *     cnf_csv_options o;
 *     cnf_csv_options_default(&o);            // detect the delimiter and header
 *     double *X; size_t N, D; char **names;
 *     if (cnf_csv_read("data.csv", &o, &X, &N, &D, &names) != CNF_OK) ...;
 *     ... X: N x D row-major; names: D strings, or NULL without a header ...
 *     cnf_csv_names_free(names, D);
 *     free(X);
 */
#ifndef CNF_CSV_H
#define CNF_CSV_H

#include <stddef.h>

#include "cnf/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { CNF_CSV_HEADER_AUTO, CNF_CSV_HEADER_YES, CNF_CSV_HEADER_NO } cnf_csv_header;

typedef struct {
    char delimiter;          /* ',', ';' or '\t'; 0 (default): detect */
    cnf_csv_header header;   /* default CNF_CSV_HEADER_AUTO */
} cnf_csv_options;

void cnf_csv_options_default(cnf_csv_options *opt);

/* 1 if path names a CSV file by its extension: ".csv" or ".tsv", any case.
 * The commands choose CSV or HDF5 by this. */
int cnf_csv_is_csv_path(const char *path);

/* The delimiter that CSV outputs use for path: tab for ".tsv", else ','. */
char cnf_csv_delimiter_for_path(const char *path);

/* Read the table of path.
 *   *X: N x D row-major doubles, malloc'd, owned by the caller (free()).
 *   *names: D malloc'd strings (cnf_csv_names_free), or NULL when the file
 *           has no header; names may be NULL if not wanted.
 * On failure *X = NULL, *N = *D = 0, *names = NULL. opt may be NULL
 * (defaults). Memory grows with the rows read, never reserved ahead. */
cnf_status cnf_csv_read(const char *path, const cnf_csv_options *opt, double **X, size_t *N,
                        size_t *D, char ***names);

/* Write X (N x D, row-major) to path atomically, with a header line of
 * names (D strings, quoted where needed) unless names is NULL, cells
 * separated by delimiter (',', ';' or '\t'). Non-finite values are written
 * as nan, inf, -inf (which cnf_csv_read refuses). CNF_EIO if the directory
 * is missing or the file cannot be written. */
cnf_status cnf_csv_write(const char *path, const double *X, size_t N, size_t D,
                         char *const *names, char delimiter);

/* names (n strings) as one CSV header line, comma-separated, each quoted
 * when it holds a comma, a quote, a line break or surrounding spaces. The
 * string is malloc'd (free()); NULL on failure (CNF_ENOMEM in the
 * message). */
char *cnf_csv_join_names(char *const *names, size_t n);

/* The inverse: split a header line made by cnf_csv_join_names into *n
 * malloc'd strings (*names, cnf_csv_names_free). CNF_EFORMAT for an
 * unterminated quote. */
cnf_status cnf_csv_split_names(const char *line, char ***names, size_t *n);

/* Free n names and the array. NULL is fine. */
void cnf_csv_names_free(char **names, size_t n);

#ifdef __cplusplus
}
#endif

#endif /* CNF_CSV_H */
