/* csv.c — CSV tables in and out (cnf/csv.h). */
#define _POSIX_C_SOURCE 200809L
#include "cnf/csv.h"
#include "cnf/file.h"
#include "cnf/size.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cnf/data.h"

#define DETECT_RECORDS 20

void cnf_csv_options_default(cnf_csv_options *opt)
{
    opt->delimiter = 0;
    opt->header = CNF_CSV_HEADER_AUTO;
}

static int has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n > m && !strcasecmp(s + n - m, suffix);
}

int cnf_csv_is_csv_path(const char *path)
{
    return path && (has_suffix(path, ".csv") || has_suffix(path, ".tsv"));
}

char cnf_csv_delimiter_for_path(const char *path)
{
    return path && has_suffix(path, ".tsv") ? '\t' : ',';
}

/* ---- Reading ------------------------------------------------------------ */

typedef struct {
    FILE *f;
    const char *path;
    char *line;          /* getline's buffer */
    size_t line_cap;
    char *rec;           /* the current record (physical lines joined) */
    size_t rec_cap;
    size_t lineno;       /* lines read so far */
    size_t first_line;   /* line on which the current record starts */
} reader;

static int append(reader *r, const char *s, size_t n, size_t *len)
{
    if (*len + n + 1 > r->rec_cap) {
        size_t cap = r->rec_cap ? r->rec_cap : 256;
        while (cap < *len + n + 1)
            cap *= 2;
        char *p = realloc(r->rec, cap);
        if (!p)
            return -1;
        r->rec = p;
        r->rec_cap = cap;
    }
    memcpy(r->rec + *len, s, n);
    *len += n;
    r->rec[*len] = '\0';
    return 0;
}

static size_t count_quotes(const char *s)
{
    size_t q = 0;
    for (; *s; s++)
        q += *s == '"';
    return q;
}

/* The next record that is not blank or a comment into r->rec: 1, or 0 at
 * the end of the file, or a status < 0 ... returned through *status. A
 * record continues over line breaks while a quote is open (an odd number of
 * '"' so far, since "" inside quotes keeps the parity). */
static int next_record(reader *r, cnf_status *status)
{
    for (;;) {
        ssize_t n = getline(&r->line, &r->line_cap, r->f);
        if (n < 0) {
            if (ferror(r->f))
                *status = cnf_error(CNF_EIO, "error reading %s: %s", r->path, strerror(errno));
            return 0;
        }
        r->lineno++;
        const char *s = r->line;
        while (*s == ' ' || *s == '\t')
            s++;
        if (*s == '#' || *s == '\n' || *s == '\r' || !*s)
            continue;
        r->first_line = r->lineno;
        size_t len = 0;
        if (append(r, r->line, (size_t)n, &len)) {
            *status = cnf_error(CNF_ENOMEM, "out of memory reading %s", r->path);
            return 0;
        }
        size_t quotes = count_quotes(r->line);
        while (quotes % 2) {
            n = getline(&r->line, &r->line_cap, r->f);
            if (n < 0) {
                *status = cnf_error(CNF_EFORMAT, "%s: line %zu: a quote opened there is never "
                                    "closed", r->path, r->first_line);
                return 0;
            }
            r->lineno++;
            quotes += count_quotes(r->line);
            if (append(r, r->line, (size_t)n, &len)) {
                *status = cnf_error(CNF_ENOMEM, "out of memory reading %s", r->path);
                return 0;
            }
        }
        while (len && (r->rec[len - 1] == '\n' || r->rec[len - 1] == '\r'))
            r->rec[--len] = '\0';
        return 1;
    }
}

static int is_space(char c, char delim)
{
    return c == ' ' || (c == '\t' && delim != '\t');
}

/* Count delim outside quotes in s. */
static size_t count_delim(const char *s, char delim)
{
    size_t n = 0;
    int quoted = 0;
    for (; *s; s++) {
        if (*s == '"')
            quoted = !quoted;
        else if (*s == delim && !quoted)
            n++;
    }
    return n;
}

/* Split s in place at delim into cells (unquoted, trimmed). Returns the
 * number of cells, or 0 with *bad set to the 1-based column of a cell
 * with text after its closing quote. */
static size_t split(char *s, char delim, char ***cells, size_t *cap, size_t *bad, int *oom)
{
    size_t n = 0;
    char *p = s;
    for (;;) {
        while (is_space(*p, delim))
            p++;
        char *cell = p, *end;
        int last;
        if (*p == '"') {
            /* Unquote in place: the text moves left over the quotes. */
            char *out = p, *q = p + 1;
            for (;;) {
                if (*q == '"' && q[1] == '"') {
                    *out++ = '"';
                    q += 2;
                } else if (*q == '"' || !*q) {
                    if (*q)
                        q++;
                    break;
                } else {
                    *out++ = *q++;
                }
            }
            while (is_space(*q, delim))
                q++;
            if (*q && *q != delim) {
                *bad = n + 1;
                return 0;
            }
            end = q;
            last = *end == '\0';
            *out = '\0';
        } else {
            end = strchr(p, delim);
            if (!end)
                end = p + strlen(p);
            last = *end == '\0';
            char *t = end;
            while (t > cell && is_space(t[-1], delim))
                t--;
            *t = '\0';
        }
        if (n == *cap) {
            size_t nc = *cap ? 2 * *cap : 16;
            char **c = realloc(*cells, nc * sizeof *c);
            if (!c) {
                *oom = 1;
                return 0;
            }
            *cells = c;
            *cap = nc;
        }
        (*cells)[n++] = cell;
        if (last)
            return n;
        p = end + 1;
    }
}

static int is_missing(const char *cell)
{
    static const char *const marks[] = {"", "na", "n/a", "nan", "null", "none"};
    for (size_t i = 0; i < sizeof marks / sizeof *marks; i++)
        if (!strcasecmp(cell, marks[i]))
            return 1;
    return 0;
}

/* 0 if cell is a finite number (value in *x), -1 if not a number, -2 if an
 * overflow or infinity. strtod reports ERANGE for both overflow and
 * underflow; an underflow (a denormal or 0, the nearest double) is kept. */
static int parse_number(const char *cell, double *x)
{
    char *end;
    errno = 0;
    *x = strtod(cell, &end);
    if (!cell[0] || *end)
        return -1;
    return isfinite(*x) ? 0 : -2;
}

static char detect(reader *r, cnf_status *status)
{
    static const char cand[3] = {'\t', ';', ','};
    size_t first[3] = {0, 0, 0};
    int consistent[3] = {1, 1, 1};
    size_t records = 0;
    while (records < DETECT_RECORDS && next_record(r, status)) {
        for (int c = 0; c < 3; c++) {
            size_t k = count_delim(r->rec, cand[c]);
            if (!records)
                first[c] = k;
            else if (k != first[c])
                consistent[c] = 0;
        }
        records++;
    }
    for (int c = 0; c < 3; c++)
        if (first[c] && consistent[c])
            return cand[c];
    int best = 2;
    for (int c = 0; c < 3; c++)
        if (first[c] > first[best])
            best = c;
    return cand[best];
}

static const char *column_label(char **names, size_t j, char *buf, size_t n)
{
    if (!names)
        return "";
    snprintf(buf, n, " (\"%s\")", names[j]);
    return buf;
}

static char **copy_names(char **cells, size_t n)
{
    char **names = calloc(n ? n : 1, sizeof *names);
    if (!names)
        return NULL;
    for (size_t j = 0; j < n; j++)
        if (!(names[j] = strdup(cells[j]))) {
            cnf_csv_names_free(names, j);
            return NULL;
        }
    return names;
}

cnf_status cnf_csv_read(const char *path, const cnf_csv_options *opt, double **X_out,
                        size_t *N_out, size_t *D_out, char ***names_out)
{
    *X_out = NULL;
    *N_out = *D_out = 0;
    if (names_out)
        *names_out = NULL;
    cnf_csv_options dflt;
    if (!opt) {
        cnf_csv_options_default(&dflt);
        opt = &dflt;
    }
    if (opt->delimiter && opt->delimiter != ',' && opt->delimiter != ';'
        && opt->delimiter != '\t')
        return cnf_error(CNF_EINVAL, "CSV delimiter '%c': expected ',', ';' or tab",
                         opt->delimiter);
    reader r = {.path = path};
    if (cnf_file_open_input(path, &r.f) != CNF_OK)
        return CNF_EIO;
    cnf_status status = CNF_OK;
    char delim = opt->delimiter;
    if (!delim) {
        delim = detect(&r, &status);
        if (status == CNF_OK && fseek(r.f, 0, SEEK_SET))
            status = cnf_error(CNF_EIO, "%s: cannot read it twice (to detect the delimiter): "
                               "give the delimiter", path);
        r.lineno = 0;
    }
    char **cells = NULL, **names = NULL, label[512];
    size_t cells_cap = 0, D = 0, N = 0, cap = 0;
    double *X = NULL;   /* N x D, grown */
    int first = 1;
    while (status == CNF_OK && next_record(&r, &status)) {
        size_t bad = 0;
        int oom = 0;
        size_t nc = split(r.rec, delim, &cells, &cells_cap, &bad, &oom);
        if (oom) {
            status = cnf_error(CNF_ENOMEM, "out of memory reading %s", path);
            break;
        }
        if (!nc) {
            status = cnf_error(CNF_EFORMAT, "%s: line %zu, column %zu: text after the closing "
                               "quote", path, r.first_line, bad);
            break;
        }
        if (first) {
            first = 0;
            D = nc;
            int header = opt->header == CNF_CSV_HEADER_YES;
            if (opt->header == CNF_CSV_HEADER_AUTO)
                for (size_t j = 0; j < nc && !header; j++) {
                    double x;
                    header = parse_number(cells[j], &x) == -1 && !is_missing(cells[j]);
                }
            if (header) {
                if (!(names = copy_names(cells, nc)))
                    status = cnf_error(CNF_ENOMEM, "out of memory reading %s", path);
                continue;
            }
        }
        if (nc != D) {
            status = cnf_error(CNF_EFORMAT, "%s: line %zu has %zu columns, expected %zu (as on "
                               "the first line)", path, r.first_line, nc, D);
            break;
        }
        if (N == cap) {
            /* Geometric growth from a small start: a wide file must not
             * reserve many rows it may never have. */
            size_t ncap = cap ? 2 * cap : (D < 4096 ? 4096 / D : 1);
            size_t bytes;
            if (cnf_size_mul3(ncap, D, sizeof(double), &bytes)) {
                status = cnf_error(CNF_ENOMEM, "%s: %zu rows of %zu columns do not fit in memory",
                                   path, ncap, D);
                break;
            }
            double *nx = realloc(X, bytes);
            if (!nx) {
                status = cnf_error(CNF_ENOMEM, "out of memory reading %s (%zu rows of %zu "
                                   "columns so far)", path, N, D);
                break;
            }
            X = nx;
            cap = ncap;
        }
        for (size_t j = 0; j < nc && status == CNF_OK; j++) {
            double x;
            int rc = parse_number(cells[j], &x);
            if (rc && is_missing(cells[j]))
                status = cnf_error(CNF_EDATA, "%s: line %zu, column %zu%s: missing value (%s%s%s, "
                                   "data row %zu); remove or fill in such rows first", path,
                                   r.first_line, j + 1,
                                   column_label(names, j, label, sizeof label),
                                   cells[j][0] ? "'" : "an empty cell",
                                   cells[j], cells[j][0] ? "'" : "", N + 1);
            else if (rc == -1)
                status = cnf_error(CNF_EFORMAT, "%s: line %zu, column %zu%s: '%s' is not a "
                                   "number", path, r.first_line, j + 1,
                                   column_label(names, j, label, sizeof label), cells[j]);
            else if (rc == -2)
                status = cnf_error(CNF_EDATA, "%s: line %zu, column %zu%s: '%s' is not a finite "
                                   "number", path, r.first_line, j + 1,
                                   column_label(names, j, label, sizeof label), cells[j]);
            else
                X[N * D + j] = x;
        }
        N++;
    }
    fclose(r.f);
    free(r.line);
    free(r.rec);
    free(cells);
    if (status == CNF_OK && N == 0)
        status = cnf_error(CNF_EDIM, "%s: no data rows", path);
    if (status != CNF_OK) {
        free(X);
        cnf_csv_names_free(names, D);
        return status;
    }
    *X_out = X;
    *N_out = N;
    *D_out = D;
    if (names_out)
        *names_out = names;
    else
        cnf_csv_names_free(names, D);
    return CNF_OK;
}

void cnf_csv_names_free(char **names, size_t n)
{
    if (!names)
        return;
    for (size_t j = 0; j < n; j++)
        free(names[j]);
    free(names);
}

/* ---- Writing ------------------------------------------------------------ */

static int needs_quotes(const char *s, char delim)
{
    if (!s[0])
        return 0;
    size_t n = strlen(s);
    return strchr(s, delim) || strchr(s, '"') || strchr(s, '\n') || strchr(s, '\r')
           || s[0] == ' ' || s[0] == '\t' || s[n - 1] == ' ' || s[n - 1] == '\t'
           || s[0] == '#';
}

/* names joined by delim, quoted as needed, into a malloc'd string. */
static char *join(char *const *names, size_t n, char delim)
{
    size_t len = 1;
    for (size_t j = 0; j < n; j++)
        len += 2 * strlen(names[j]) + 3;
    char *s = malloc(len), *p = s;
    if (!s) {
        cnf_error(CNF_ENOMEM, "out of memory");
        return NULL;
    }
    for (size_t j = 0; j < n; j++) {
        if (j)
            *p++ = delim;
        int q = needs_quotes(names[j], delim);
        if (q)
            *p++ = '"';
        for (const char *c = names[j]; *c; c++) {
            if (*c == '"')
                *p++ = '"';
            *p++ = *c;
        }
        if (q)
            *p++ = '"';
    }
    *p = '\0';
    return s;
}

char *cnf_csv_join_names(char *const *names, size_t n)
{
    return join(names, n, ',');
}

cnf_status cnf_csv_split_names(const char *line, char ***names, size_t *n)
{
    *names = NULL;
    *n = 0;
    if (count_quotes(line) % 2)
        return cnf_error(CNF_EFORMAT, "column names '%s': a quote is never closed", line);
    char *copy = strdup(line), **cells = NULL;
    size_t cap = 0, bad = 0;
    int oom = !copy;
    size_t nc = copy ? split(copy, ',', &cells, &cap, &bad, &oom) : 0;
    cnf_status s = CNF_OK;
    if (oom)
        s = cnf_error(CNF_ENOMEM, "out of memory");
    else if (!nc)
        s = cnf_error(CNF_EFORMAT, "column names '%s': text after a closing quote", line);
    else if (!(*names = copy_names(cells, nc)))
        s = cnf_error(CNF_ENOMEM, "out of memory");
    else
        *n = nc;
    free(cells);
    free(copy);
    return s;
}

cnf_status cnf_csv_write(const char *path, const double *X, size_t N, size_t D,
                         char *const *names, char delimiter)
{
    if (!path || (!X && N && D) || !D)
        return cnf_error(CNF_EINVAL, "cnf_csv_write: no file name, data or columns");
    if (delimiter != ',' && delimiter != ';' && delimiter != '\t')
        return cnf_error(CNF_EINVAL, "CSV delimiter '%c': expected ',', ';' or tab", delimiter);
    cnf_file_out *o = cnf_file_out_open(path);
    if (!o)
        return CNF_EIO;
    /* one row at a time through a buffer: %.17g of D numbers */
    size_t cap = D * 32 + 2;
    char *buf = malloc(cap);
    cnf_status s = buf ? CNF_OK : cnf_error(CNF_ENOMEM, "out of memory writing %s", path);
    if (s == CNF_OK && names) {
        char *line = join(names, D, delimiter);
        s = line ? cnf_file_out_write(o, line, strlen(line)) : cnf_error(CNF_ENOMEM, "out of memory");
        if (s == CNF_OK)
            s = cnf_file_out_write(o, "\n", 1);
        free(line);
    }
    for (size_t i = 0; i < N && s == CNF_OK; i++) {
        size_t len = 0;
        for (size_t j = 0; j < D; j++)
            len += (size_t)snprintf(buf + len, cap - len, "%.17g%c", X[i * D + j],
                                    j + 1 < D ? delimiter : '\n');
        s = cnf_file_out_write(o, buf, len);
    }
    free(buf);
    if (s == CNF_OK)
        return cnf_file_out_commit(o);
    cnf_file_out_abort(o);
    return s;
}
