/* cli.h — option parsing, --help generation and error exits shared by the
 * subcommands of the `cnf` command (tools/cnf_*.c).
 *
 * Each subcommand declares a table of cli_option, each pointing at the
 * variable it fills; the variable's value before parsing is the default that
 * --help prints (or `deflt` when it is not a plain value). Numbers are
 * validated as they are parsed (a count must be >= 1, a tolerance > 0, ...),
 * so that a bad option is reported before any work starts (libsvm's
 * exit_with_help idea: every option listed with its default).
 *
 * Exit codes: 0 success, 1 a failure while working (file, data, solver),
 * 2 a usage error (unknown option or preset key, bad value, options that
 * do not go together), 3 cnf grad --check above its tolerance, 130 a run
 * stopped by Ctrl-C or SIGTERM. Only tools/ ever exits.
 */
#ifndef CNF_TOOLS_CLI_H
#define CNF_TOOLS_CLI_H

#include <stddef.h>
#include <stdio.h>

#include "cnf/data.h"
#include "cnf/status.h"

/* A switch (CLI_FLAG or CLI_BOOL) is written --name (on) or --no-name (off);
 * --name=0|1 and --name 0|1 are accepted as well, so that the 0|1 values
 * of older command lines and of presets keep working. */
typedef enum {
    CLI_FLAG,     /* int, a switch (see above) */
    CLI_STRING,   /* const char *, borrowed from argv */
    CLI_COUNT,    /* size_t >= 1 */
    CLI_SIZE,     /* size_t >= 0 */
    CLI_INT,      /* int, any sign */
    CLI_POS,      /* double > 0, finite */
    CLI_NONNEG,   /* double >= 0, finite */
    CLI_SEED,     /* unsigned long */
    CLI_BOOL      /* int, a switch too; parsed as 0 or 1 in presets */
} cli_kind;

typedef struct {
    const char *name;    /* long name without "--" */
    cli_kind kind;
    void *dest;          /* filled when the option is given */
    const char *meta;    /* value placeholder in --help ("N", "F.h5") */
    const char *help;    /* one line */
    const char *deflt;   /* NULL: print the value of *dest; CLI_REQUIRED: it has
                            none, cli_parse refuses a command line without it;
                            else this text */
    int given;           /* set by cli_parse */
} cli_option;

extern const char cli_required[];
#define CLI_REQUIRED cli_required

/* Set by cli_parse from --quiet (every subcommand has it). */
extern int cli_quiet;
/* "rank R: " under mpirun with more than one rank (mpi_cli.c), so that
 * every message says whose it is; "" otherwise. */
extern char cli_rank_tag[32];
/* The subcommand being run, for messages ("train"). */
extern const char *cli_command;

/* Parse one value of the given kind from text into dest (validated as
 * cli_parse does). 0 on success; -1 with a message in err otherwise. */
int cli_parse_value(cli_kind kind, const char *text, void *dest, char *err, size_t n);

/* Parse argv[1..argc-1] (argv[0] is the subcommand name). Options end at
 * the NULL-named entry of opts. Positional arguments are stored in pos (at
 * most max_pos; more is a usage error) and counted in *n_pos. --help prints
 * `usage`, `about` and every option with its default, then exits 0. */
void cli_parse(int argc, char **argv, cli_option *opts, const char *usage,
               const char *about, const char **pos, size_t max_pos, size_t *n_pos);

/* The value of --name in argv if present (either --name V or --name=V), for
 * options that must be known before the others are parsed (--flow). */
const char *cli_peek(int argc, char **argv, const char *name);

/* Let option `name` also answer to `alias` (an older spelling, kept for
 * old command lines); --help shows it. At most 8 for a command. */
void cli_add_alias(const char *alias, const char *name);

/* Was option `name` given? (after cli_parse) */
int cli_given(const cli_option *opts, const char *name);

/* Print "cnf CMD: error: ..." and exit 1 (exit_code 2 for cli_usage). */
void cli_die(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2), noreturn))
#endif
    ;
void cli_usage(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2), noreturn))
#endif
    ;
/* If s != CNF_OK: print the library's message (with `what` as context, may be
 * NULL) and exit 1. */
void cli_check(cnf_status s, const char *what);

/* Exit (status 1, the message naming --out) unless out may be written
 * given the command's input files (cnf_file_check_output: not a directory,
 * device or FIFO, not one of the inputs). NULL inputs are skipped. Called
 * before any work. */
void cli_check_output(const char *out, const char *const *inputs, size_t n_inputs);

/* The file name of a data address spec ("toy.h5:/test" -> "toy.h5") in a
 * (NULL when spec is NULL; a usage error when it does not parse). */
const char *cli_address_file(const char *spec, cnf_data_address *a);

/* SIGINT, SIGTERM and SIGHUP remove the temporary files of the outputs being
 * written (cnf_file_remove_temporaries) and end the process by the signal
 * (status 128 + its number). cnf_main installs this for every command. */
void cli_catch_signals(void);
/* What those handlers do, for a command's own handler (async-signal-safe;
 * does not return). */
void cli_exit_on_signal(int sig)
#if defined(__GNUC__)
    __attribute__((noreturn))
#endif
    ;

/* Informational output on stderr unless --quiet. */
void cli_info(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

/* malloc that exits with a message on failure; n zeroed doubles. */
void *cli_malloc(size_t n);
/* rows x cols elements of elem bytes (the product overflow-checked); exits
 * with a message naming `what` if that does not fit or cannot be had. */
void *cli_malloc_array(size_t rows, size_t cols, size_t elem, const char *what);
double *cli_calloc_doubles(size_t n);

/* Print a double as JSON (finite, or null). */
void cli_json_double(FILE *f, double x);

/* Seconds since an arbitrary start (monotonic clock). */
double cli_now(void);

/* Parse a split "0.8,0.1,0.1" (three non-negative fractions summing to 1)
 * and turn it into row counts for N rows (the rounding remainder goes to
 * train). Usage error naming --split otherwise. */
void cli_split_counts(const char *spec, size_t N, size_t counts[3]);

/* Write X (N x D, N = counts[0] + counts[1] + counts[2]) as /train, /val and
 * /test of data file out, in that order of rows, with the root attribute
 * columns unless it is NULL (cnf/csv.h), and say so; exit on failure. */
void cli_write_splits(const char *out, const double *X, const size_t counts[3], size_t D,
                      const char *source, const char *columns);

/* After cli_split_counts: exit naming the split when a non-zero fraction
 * got no rows (too few rows; `cnf train --data` would refuse the file), and
 * warn when --split itself leaves /val or /test empty. */
void cli_check_split_rows(const char *spec, size_t N, const size_t counts[3]);

/* Shuffle the rows of X (N x D) in place, seeded (mt19937, gsl_ran_shuffle
 * of the row indices): `cnf convert` and `cnf train --data x.csv` draw the
 * same permutation for the same seed. */
void cli_shuffle_rows(double *X, size_t N, size_t D, unsigned long seed);

#endif /* CNF_TOOLS_CLI_H */
