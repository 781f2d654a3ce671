/* bench_common.h — helpers shared by the benchmark programs bench_train,
 * bench_loglik and bench_memory (header only: CMake builds every .c file in bench/
 * into its own program, so shared code lives here as static functions).
 *
 * Clocks (wall and process CPU), order statistics of timing samples, and the
 * machine description (cores, CPU model, OpenBLAS core type, build
 * configuration and thread count, load average) that every JSON line carries
 * beside its figures, because the figures mean nothing without it. The load
 * average is there because the machine may be shared: a run whose CPU time
 * per iteration is well below its wall time was contended.
 */
#ifndef CNF_BENCH_COMMON_H
#define CNF_BENCH_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>

/* 1 if an argument is -h or --help: the programs then print their usage to
 * stdout and exit 0 without running anything (a benchmark run is minutes). */
/* What a program embedding cnf does (include/cnf/net.h): OpenBLAS at one
 * thread, as the `cnf` command runs it, or at N with --blas-threads N
 * (taken out of argv here, so that no program's own parser sees it).
 * Benchmarks run as users do: OPENBLAS_NUM_THREADS is overridden, as the
 * command overrides it. Exits 2 on a bad N. */
static inline void bench_setup(int *argc, char **argv)
{
    int n = 1, j = 1;
    for (int i = 1; i < *argc; i++) {
        if (strcmp(argv[i], "--blas-threads") == 0) {
            char *end = NULL;
            long v = i + 1 < *argc ? strtol(argv[i + 1], &end, 10) : 0;
            if (!end || *end || v < 1 || v > 256) {
                fprintf(stderr, "%s: --blas-threads needs a count from 1 to 256\n", argv[0]);
                exit(2);
            }
            n = (int)v;
            i++;
            continue;
        }
        argv[j++] = argv[i];
    }
    argv[j] = NULL;
    *argc = j;
    openblas_set_num_threads(n);
}

static inline int bench_help_requested(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))
            return 1;
    return 0;
}

static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* CPU seconds of the whole process (all threads, so OpenBLAS's too). */
static inline double bench_cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct {
    double median, mean, p10, p90, min, max;
} bench_summary;

/* Order statistics of x (n values; n > 0). tmp: n scratch values. The
 * p-quantile is the nearest-rank one (ceil(p n)-th smallest). */
static inline bench_summary bench_summarise(const double *x, size_t n, double *tmp)
{
    bench_summary s = {0};
    if (n == 0)
        return s;
    memcpy(tmp, x, n * sizeof *tmp);
    qsort(tmp, n, sizeof *tmp, bench_cmp_double);
    double sum = 0.0;
    for (size_t i = 0; i < n; i++)
        sum += tmp[i];
    s.mean = sum / (double)n;
    s.median = n % 2 ? tmp[n / 2] : 0.5 * (tmp[n / 2 - 1] + tmp[n / 2]);
    size_t i90 = (size_t)((double)n * 0.9 + 0.999999);
    size_t i10 = (size_t)((double)n * 0.1 + 0.999999);
    s.p90 = tmp[(i90 ? i90 : 1) - 1];
    s.p10 = tmp[(i10 ? i10 : 1) - 1];
    s.min = tmp[0];
    s.max = tmp[n - 1];
    return s;
}

static inline double bench_loadavg(void)
{
    double l = -1.0;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &l) != 1)
            l = -1.0;
        fclose(f);
    }
    return l;
}

/* The "model name" line of /proc/cpuinfo, quotes and backslashes dropped. */
static inline void bench_cpu_model(char *buf, size_t n)
{
    snprintf(buf, n, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) == 0) {
            char *v = strchr(line, ':');
            if (!v)
                break;
            v++;
            while (*v == ' ' || *v == '\t')
                v++;
            size_t k = 0;
            for (; *v && *v != '\n' && k + 1 < n; v++)
                if (*v != '"' && *v != '\\')
                    buf[k++] = *v;
            buf[k] = '\0';
            break;
        }
    }
    fclose(f);
}

/* The fields every JSON line carries: ,"threads":..,"blas_core":"..",
 * "load1":.. (a fragment starting with a comma, to paste before "}"). */
static inline void bench_print_context(FILE *out)
{
    const char *core = openblas_get_corename();
    fprintf(out, ",\"blas_threads\":%d,\"blas_core\":\"%s\",\"load1\":%.2f",
            openblas_get_num_threads(), core ? core : "?", bench_loadavg());
}

/* One JSON line describing the machine and the BLAS build. */
static inline void bench_print_machine(FILE *out)
{
    char model[256];
    bench_cpu_model(model, sizeof model);
    const char *cfg = openblas_get_config();
    const char *env = getenv("OPENBLAS_NUM_THREADS");
    char cfgbuf[512];
    size_t k = 0;
    for (const char *c = cfg ? cfg : "?"; *c && k + 1 < sizeof cfgbuf; c++)
        if (*c != '"' && *c != '\\' && *c != '\n')
            cfgbuf[k++] = *c;
    cfgbuf[k] = '\0';
    fprintf(out,
            "{\"bench\":\"machine\",\"cores\":%ld,\"cpu\":\"%s\",\"blas_config\":\"%s\","
            "\"OPENBLAS_NUM_THREADS\":\"%s\"",
            sysconf(_SC_NPROCESSORS_ONLN), model, cfgbuf, env ? env : "");
    bench_print_context(out);
    fprintf(out, "}\n");
    fflush(out);
}

/* Table-driven "--name value" options: each names a string, long or double
 * to fill. Returns 0, or 2 (the usage-error exit status) after a message
 * for an unknown option or a missing value. */
typedef enum { BENCH_STR, BENCH_LONG, BENCH_DOUBLE } bench_opt_kind;
typedef struct {
    const char *name;
    bench_opt_kind kind;
    void *value;
} bench_opt;

static inline int bench_parse_options(int argc, char **argv, const char *prog,
                                      const bench_opt *opts)
{
    for (int i = 1; i < argc; i += 2) {
        const bench_opt *o = opts;
        while (o->name && strcmp(o->name, argv[i]))
            o++;
        if (!o->name) {
            fprintf(stderr, "%s: unknown option %s\n", prog, argv[i]);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "%s: %s needs a value\n", prog, argv[i]);
            return 2;
        }
        const char *v = argv[i + 1];
        if (o->kind == BENCH_STR)
            *(const char **)o->value = v;
        else if (o->kind == BENCH_LONG)
            *(long *)o->value = strtol(v, NULL, 10);
        else
            *(double *)o->value = strtod(v, NULL);
    }
    return 0;
}

#endif /* CNF_BENCH_COMMON_H */
