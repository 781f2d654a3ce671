/* cli.c — option parsing, --help generation and error exits for the `cnf`
 * command (see cli.h). Modelled on libsvm's svm-train: every option is
 * listed with its default, and a bad value is refused before work starts. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include "cnf/size.h"

#include "cnf/data.h"
#include "cnf/file.h"

#include <errno.h>
#include <gsl/gsl_randist.h>
#include <gsl/gsl_rng.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int cli_quiet = 0;
const char *cli_command = "";
const char cli_required[] = "required";

char cli_rank_tag[32] = "";

static void vmessage(const char *kind, const char *fmt, va_list ap)
{
    fprintf(stderr, "cnf%s%s: %s%s", cli_command[0] ? " " : "", cli_command, cli_rank_tag,
            kind);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void cli_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmessage("error: ", fmt, ap);
    va_end(ap);
    exit(1);
}

void cli_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmessage("error: ", fmt, ap);
    va_end(ap);
    fprintf(stderr, "(see 'cnf %s --help')\n", cli_command);
    exit(2);
}

void cli_check(cnf_status s, const char *what)
{
    if (s == CNF_OK)
        return;
    const char *msg = cnf_last_error();
    if (!msg || !msg[0])
        msg = cnf_strerror(s);
    if (what)
        cli_die("%s: %s", what, msg);
    cli_die("%s", msg);
}

void cli_check_output(const char *out, const char *const *inputs, size_t n_inputs)
{
    cli_check(cnf_file_check_output(out, inputs, n_inputs), "--out");
}

const char *cli_address_file(const char *spec, cnf_data_address *a)
{
    if (!spec)
        return NULL;
    if (cnf_data_address_parse(spec, "/", a) != CNF_OK)
        cli_usage("%s", cnf_last_error());
    return a->file;
}

void cli_exit_on_signal(int sig)
{
    cnf_file_remove_temporaries();
    signal(sig, SIG_DFL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    raise(sig);   /* pending while this handler blocks it ... */
    sigprocmask(SIG_UNBLOCK, &set, NULL);   /* ... and delivered here */
    _exit(128 + sig);   /* not reached unless the signal was ignored */
}

static void on_signal(int sig)
{
    cli_exit_on_signal(sig);
}

void cli_catch_signals(void)
{
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        struct sigaction old;
        /* a signal the caller chose to ignore (nohup) stays ignored */
        if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_IGN)
            continue;
        sigaction(sigs[i], &sa, NULL);
    }
}

void cli_info(const char *fmt, ...)
{
    if (cli_quiet)
        return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

void *cli_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        cli_die("out of memory (%zu bytes)", n);
    return p;
}

void *cli_malloc_array(size_t rows, size_t cols, size_t elem, const char *what)
{
    size_t bytes;
    if (cnf_size_mul3(rows, cols, elem, &bytes))
        cli_die("%s: %zu x %zu values do not fit in this machine's memory", what, rows, cols);
    void *p = malloc(bytes ? bytes : 1);
    if (!p)
        cli_die("%s: out of memory for %zu x %zu values (%zu bytes)", what, rows, cols, bytes);
    return p;
}

double *cli_calloc_doubles(size_t n)
{
    double *p = calloc(n ? n : 1, sizeof *p);
    if (!p)
        cli_die("out of memory (%zu doubles)", n);
    return p;
}

double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void cli_json_double(FILE *f, double x)
{
    if (isfinite(x))
        fprintf(f, "%.17g", x);
    else
        fputs("null", f);
}

/* An unset string without a stated default prints none: "(default: none)"
 * said nothing, and beside "(required)" it read as a contradiction. */
static void format_default(const cli_option *o, char *buf, size_t n)
{
    if (o->deflt) {
        snprintf(buf, n, "%s", o->deflt);
        return;
    }
    switch (o->kind) {
    case CLI_FLAG: snprintf(buf, n, "%s", *(int *)o->dest ? "on" : "off"); break;
    case CLI_STRING: {
        const char *s = *(const char **)o->dest;
        snprintf(buf, n, "%s", s ? s : "");
        break;
    }
    case CLI_COUNT:
    case CLI_SIZE: snprintf(buf, n, "%zu", *(size_t *)o->dest); break;
    case CLI_INT: snprintf(buf, n, "%d", *(int *)o->dest); break;
    case CLI_BOOL: snprintf(buf, n, "%s", *(int *)o->dest ? "on" : "off"); break;
    case CLI_POS:
    case CLI_NONNEG: snprintf(buf, n, "%g", *(double *)o->dest); break;
    case CLI_SEED: snprintf(buf, n, "%lu", *(unsigned long *)o->dest); break;
    }
}

static struct {
    const char *alias, *name;
} aliases[8];
static size_t n_aliases;

void cli_add_alias(const char *alias, const char *name)
{
    if (n_aliases < sizeof aliases / sizeof aliases[0]) {
        aliases[n_aliases].alias = alias;
        aliases[n_aliases++].name = name;
    }
}

static const char *alias_of(const char *name)
{
    for (size_t i = 0; i < n_aliases; i++)
        if (!strcmp(aliases[i].name, name))
            return aliases[i].alias;
    return NULL;
}

static int is_switch(const cli_option *o) { return o->kind == CLI_FLAG || o->kind == CLI_BOOL; }

static void print_help(const cli_option *opts, const char *usage, const char *about)
{
    printf("usage: cnf %s\n\n%s\n\noptions:\n", usage, about);
    for (const cli_option *o = opts; o->name; o++) {
        char left[64], def[256], help[512];
        if (is_switch(o))
            snprintf(left, sizeof left, "--%s", o->name);
        else
            snprintf(left, sizeof left, "--%s %s", o->name, o->meta ? o->meta : "X");
        format_default(o, def, sizeof def);
        const char *alias = alias_of(o->name);
        if (alias)
            snprintf(help, sizeof help, "%s; also --%s", o->help, alias);
        else
            snprintf(help, sizeof help, "%s", o->help);
        if (o->deflt == CLI_REQUIRED)
            printf("  %-24s %s (required)\n", left, help);
        else if (def[0])
            printf("  %-24s %s (default: %s)\n", left, help, def);
        else
            printf("  %-24s %s\n", left, help);
    }
    printf("  switches are --name (on) or --no-name (off); --name 0|1 is accepted too\n");
    printf("  %-24s %s\n", "--quiet", "print only results and errors (default: off)");
    printf("  %-24s %s\n", "--help", "show this help and exit");
}

int cli_parse_value(cli_kind kind, const char *v, void *dest, char *err, size_t n)
{
    char *end = NULL;
    errno = 0;
    switch (kind) {
    case CLI_FLAG:
        if (!v) {
            *(int *)dest = 1;
            return 0;
        }
        if (strcmp(v, "0") && strcmp(v, "1")) {
            snprintf(err, n, "'%s': expected 0 or 1 (or the switch alone)", v);
            return -1;
        }
        *(int *)dest = v[0] == '1';
        return 0;
    case CLI_STRING:
        if (!v[0]) {
            snprintf(err, n, "needs a non-empty value");
            return -1;
        }
        *(const char **)dest = v;
        return 0;
    case CLI_COUNT:
    case CLI_SIZE:
    case CLI_SEED: {
        unsigned long long x = 0;
        if (v[0] != '-' && v[0] != '+' && v[0] != '\0')
            x = strtoull(v, &end, 10);
        if (!end || *end || errno) {
            snprintf(err, n, "'%s': expected a non-negative whole number", v);
            return -1;
        }
        if (kind == CLI_COUNT && x < 1) {
            snprintf(err, n, "'%s': must be at least 1", v);
            return -1;
        }
        if (kind == CLI_SEED)
            *(unsigned long *)dest = (unsigned long)x;
        else
            *(size_t *)dest = (size_t)x;
        return 0;
    }
    case CLI_INT:
    case CLI_BOOL: {
        long x = strtol(v, &end, 10);
        if (!v[0] || *end || errno || x < INT_MIN || x > INT_MAX) {
            snprintf(err, n, "'%s': expected a whole number", v);
            return -1;
        }
        if (kind == CLI_BOOL && x != 0 && x != 1) {
            snprintf(err, n, "'%s': expected 0 or 1", v);
            return -1;
        }
        *(int *)dest = (int)x;
        return 0;
    }
    case CLI_POS:
    case CLI_NONNEG: {
        double x = strtod(v, &end);
        if (!v[0] || *end || errno == ERANGE || !isfinite(x)) {
            snprintf(err, n, "'%s': expected a finite number", v);
            return -1;
        }
        if (kind == CLI_POS && !(x > 0)) {
            snprintf(err, n, "'%s': must be positive", v);
            return -1;
        }
        if (kind == CLI_NONNEG && !(x >= 0)) {
            snprintf(err, n, "'%s': must not be negative", v);
            return -1;
        }
        *(double *)dest = x;
        return 0;
    }
    }
    return -1;
}

static void set_value(cli_option *o, const char *v)
{
    char err[512];
    if (cli_parse_value(o->kind, v, o->dest, err, sizeof err))
        cli_usage("--%s %s", o->name, err);
}

/* The option called name (len characters) or answering to it as alias. */
static cli_option *find_option(cli_option *opts, const char *name, size_t len)
{
    for (size_t i = 0; i < n_aliases; i++)
        if (strlen(aliases[i].alias) == len && !strncmp(aliases[i].alias, name, len)) {
            name = aliases[i].name;
            len = strlen(name);
        }
    for (cli_option *o = opts; o->name; o++)
        if (strlen(o->name) == len && !strncmp(o->name, name, len))
            return o;
    return NULL;
}

void cli_parse(int argc, char **argv, cli_option *opts, const char *usage,
               const char *about, const char **pos, size_t max_pos, size_t *n_pos)
{
    *n_pos = 0;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            print_help(opts, usage, about);
            exit(0);
        }
    int only_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (only_pos || a[0] != '-' || !a[1]) {
            if (*n_pos >= max_pos)
                cli_usage("unexpected argument '%s'", a);
            pos[(*n_pos)++] = a;
            continue;
        }
        if (!strcmp(a, "--")) {
            only_pos = 1;
            continue;
        }
        if (strncmp(a, "--", 2))
            cli_usage("unknown option '%s'", a);
        if (!strcmp(a, "--quiet")) {
            cli_quiet = 1;
            continue;
        }
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        cli_option *o = find_option(opts, name, len);
        int negated = 0;
        if (!o && len > 3 && !strncmp(name, "no-", 3)) {
            o = find_option(opts, name + 3, len - 3);
            negated = o && is_switch(o);
            if (!negated)
                o = NULL;
        }
        if (!o)
            cli_usage("unknown option '--%.*s'", (int)len, name);
        const char *v = NULL;
        if (negated) {
            if (eq)
                cli_usage("--no-%s takes no value", o->name);
            v = "0";
        } else if (is_switch(o)) {
            /* --name, --name=0|1, or --name 0|1 (older command lines) */
            if (eq)
                v = eq + 1;
            else if (i + 1 < argc && (!strcmp(argv[i + 1], "0") || !strcmp(argv[i + 1], "1")))
                v = argv[++i];
            else
                v = "1";
            if (o->kind == CLI_FLAG && !strcmp(v, "1"))
                v = NULL;
        } else if (eq) {
            v = eq + 1;
        } else {
            if (i + 1 >= argc)
                cli_usage("--%s needs a value (%s)", o->name, o->meta ? o->meta : "X");
            v = argv[++i];
        }
        set_value(o, v);
        o->given = 1;
    }
    for (const cli_option *o = opts; o->name; o++)
        if (o->deflt == CLI_REQUIRED && !o->given)
            cli_usage("--%s is required", o->name);
}

const char *cli_peek(int argc, char **argv, const char *name)
{
    size_t len = strlen(name);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) || strncmp(a + 2, name, len))
            continue;
        if (a[2 + len] == '=')
            return a + 3 + len;
        if (a[2 + len] == '\0' && i + 1 < argc)
            return argv[i + 1];
    }
    return NULL;
}

int cli_given(const cli_option *opts, const char *name)
{
    for (const cli_option *o = opts; o->name; o++)
        if (!strcmp(o->name, name))
            return o->given;
    return 0;
}

void cli_split_counts(const char *spec, size_t N, size_t counts[3])
{
    double f[3];
    const char *p = spec;
    for (int i = 0; i < 3; i++) {
        char *end;
        errno = 0;
        f[i] = strtod(p, &end);
        if (end == p || errno || !isfinite(f[i]) || f[i] < 0)
            cli_usage("--split %s: expected three non-negative fractions like 0.8,0.1,0.1", spec);
        p = end;
        if (i < 2) {
            if (*p != ',')
                cli_usage("--split %s: expected three fractions separated by commas", spec);
            p++;
        }
    }
    if (*p)
        cli_usage("--split %s: unexpected text '%s'", spec, p);
    double sum = f[0] + f[1] + f[2];
    if (fabs(sum - 1.0) > 1e-9)
        cli_usage("--split %s: the fractions sum to %g, not 1", spec, sum);
    /* rounded, and kept within N: (double)N itself may round up past N */
    for (int i = 1; i < 3; i++) {
        double c = floor(f[i] * (double)N + 0.5);
        counts[i] = c >= (double)N ? N : (size_t)c;
    }
    if (counts[1] + counts[2] > N)
        counts[2] = N - counts[1];
    counts[0] = N - counts[1] - counts[2];
}

void cli_write_splits(const char *out, const double *X, const size_t counts[3], size_t D,
                      const char *source, const char *columns)
{
    const double *val = X + D * counts[0], *test = val + D * counts[1];
    cli_check(cnf_data_write_splits_columns(out, X, counts[0], val, counts[1], test, counts[2],
                                            D, source, "none", columns),
              out);
    cli_info("wrote %s: /train %zu x %zu, /val %zu x %zu, /test %zu x %zu (%s)\n", out, counts[0],
             D, counts[1], D, counts[2], D, source);
}

void cli_check_split_rows(const char *spec, size_t N, const size_t counts[3])
{
    static const char *const names[3] = {"/train", "/val", "/test"};
    double f[3];
    if (sscanf(spec, "%lf,%lf,%lf", &f[0], &f[1], &f[2]) != 3)   /* cli_split_counts checked it */
        return;
    for (int i = 0; i < 3; i++) {
        if (counts[i] || f[i] == 0)
            continue;
        cli_die("%zu rows split %s leave %s empty, and `cnf train --data` refuses a file without "
                "training and validation rows: give more rows, or 0 for %s in --split to leave "
                "it empty on purpose", N, spec, names[i], names[i]);
    }
    if (!counts[1] || !counts[2])
        cli_info("cnf %s: warning: %s%s%s %s empty as --split %s asks; `cnf train --data` "
                 "needs /val (train with --train F.h5:/train instead)\n", cli_command,
                 counts[1] ? "" : "/val", !counts[1] && !counts[2] ? " and " : "",
                 counts[2] ? "" : "/test", !counts[1] && !counts[2] ? "are" : "is", spec);
}

void cli_shuffle_rows(double *X, size_t N, size_t D, unsigned long seed)
{
    /* Whole rows through an index permutation. */
    gsl_rng *rng = gsl_rng_alloc(gsl_rng_mt19937);
    if (!rng)
        cli_die("out of memory");
    gsl_rng_set(rng, seed);
    size_t *idx = cli_malloc_array(N, 1, sizeof *idx, "shuffle");
    for (size_t i = 0; i < N; i++)
        idx[i] = i;
    gsl_ran_shuffle(rng, idx, N, sizeof *idx);
    double *Y = cli_malloc_array(N, D, sizeof *Y, "the shuffled rows");   /* N x D */
    for (size_t i = 0; i < N; i++)
        memcpy(Y + i * D, X + idx[i] * D, D * sizeof *Y);
    memcpy(X, Y, N * D * sizeof *X);
    free(Y);
    free(idx);
    gsl_rng_free(rng);
}
