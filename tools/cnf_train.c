/* cnf_train.c — `cnf train`: training of a flow on a data file by maximum
 * likelihood or flow matching (docs/mathematics.md, cnf/train.h, cnf/fm.h),
 * from a preset (flows/NAME.cfg) overridden by options, with the data
 * standardised or whitened first (stored in the model), or with --init from
 * an existing model's parameters and preprocessing. The best model by
 * validation is written to --out once, at the
 * end (atomically: a temporary file renamed over the target), also when the
 * run is interrupted with Ctrl-C. --resume continues a run from a model file
 * saved by this command: optimizer moments, iteration and rng state.
 *
 * Every check that can fail is made before training starts: options, data
 * (NaN/Inf row, fewer rows than a batch, train/val/model dimensions) and
 * that the output directory exists. A failed solve ends the run with an
 * error (exit 1); the work done is not lost: when at least one iteration
 * completed, the best model so far (the last parameters without validation)
 * is saved to --out first; when none did, nothing is written and an
 * existing file is left untouched. --save-every N also saves the best model
 * so far every N iterations, so that a killed process loses at most N. */
#define _POSIX_C_SOURCE 200809L
#include <cblas.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <gsl/gsl_rng.h>

#include "cli.h"
#include "cnf/csv.h"
#include "cnf/data.h"
#include "cnf/file.h"
#include "cnf/io.h"
#include "cnf/train.h"
#include "commands.h"
#include "config.h"
#include "curve.h"
#include "mpi_cli.h"
#include "model_cli.h"
#include "presets.h"
#include "progress.h"

static volatile sig_atomic_t interrupted = 0;

static void on_sigint(int sig)
{
    if (interrupted)   /* a second Ctrl-C (or SIGTERM) ends the process at once */
        cli_exit_on_signal(sig);
    interrupted = 1;
}

/* Without a terminal, a log line at least this often (seconds). */
#define LOG_MAX_INTERVAL 30.0

/* What saving the model needs, also from inside the progress callback. */
typedef struct {
    cnf_flow *flow;
    cnf_train_state *state;
    const run_config *cfg;
    const char *preset, *train, *val, *out, *init;
    const char *columns;    /* the data's column names as a CSV line, or NULL */
} model_saver;

typedef struct {
    int tty;                /* progress line rewritten with \r */
    size_t log_every;       /* plain log lines otherwise */
    size_t first_iter;      /* iteration at the start (resume) */
    size_t nfe_f, nfe_b;    /* since the last line */
    size_t count;
    int line_open;
    double last_log;        /* elapsed seconds at the last log line */
    size_t last_iter;       /* iteration of the last callback */
    size_t save_every;      /* 0 = off */
    const model_saver *saver;
    int fm;                 /* flow matching: no NLL, no solves to report */
    progress_rate rate;     /* the recent iterations, for the time left */
    train_curve *curve;     /* --curve: every iteration's figures, or NULL */
} progress_ctx;

/* Write the best parameters so far (cnf_train_state_best_so_far, which the
 * flow holds after cnf_train_run and not during it) with the state and the
 * run's record (resolved configuration, data, results) to sv->out,
 * atomically. */
static cnf_status save_model(const model_saver *sv, double train_nll)
{
    /* under mpirun every rank holds the same model; rank 0 writes it */
    if (cli_mpi_rank() != 0)
        return CNF_OK;
    cnf_model_extra rec;
    cnf_model_extra_init(&rec);
    char buf[4096];
    cnf_status s = CNF_OK;
    for (size_t i = 0; i < config_num_keys && s == CNF_OK; i++) {
        run_config_format(sv->cfg, &config_keys[i], buf, sizeof buf);
        s = cnf_model_extra_set(&rec, config_keys[i].key, buf);
    }
    const cnf_train_state *st = sv->state;
    if (s == CNF_OK)
        s = cnf_model_extra_set(&rec, "preset", sv->preset ? sv->preset : "none");
    if (s == CNF_OK)
        s = cnf_model_extra_set(&rec, "train_data", sv->train);
    if (s == CNF_OK)
        s = cnf_model_extra_set(&rec, "val_data", sv->val ? sv->val : "none");
    if (s == CNF_OK && sv->init)
        s = cnf_model_extra_set(&rec, "init", sv->init);
    if (s == CNF_OK && sv->columns)
        s = cnf_model_extra_set(&rec, "columns", sv->columns);
    snprintf(buf, sizeof buf, "%.17g", train_nll);
    if (s == CNF_OK)
        s = cnf_model_extra_set(&rec, "result_train_nll", buf);
    snprintf(buf, sizeof buf, "%.17g", st->has_best ? st->best_val_nll : NAN);
    if (s == CNF_OK)
        s = cnf_model_extra_set(&rec, "result_best_val_nll", buf);
    snprintf(buf, sizeof buf, "%zu", st->best_iteration);
    if (s == CNF_OK)
        s = cnf_model_extra_set(&rec, "result_best_iteration", buf);
    /* the ranks that trained it: a resumed run must use as many (see
     * check_resume_ranks) */
    snprintf(buf, sizeof buf, "%zu", cli_mpi_size());
    if (s == CNF_OK)
        s = cnf_model_extra_set(&rec, "ranks", buf);
    if (s == CNF_OK) {
        rec.state = sv->state;   /* borrowed: cleared before _clear */
        s = cnf_model_save_params(sv->out, sv->flow, cnf_train_state_best_so_far(st), &rec);
        rec.state = NULL;
    }
    cnf_model_extra_clear(&rec);
    return s;
}

/* --save-every, from the callback: a failure (a full disk) only warns, as
 * the final save retries. */
static void save_checkpoint(const model_saver *sv, double train_nll)
{
    if (save_model(sv, train_nll) != CNF_OK)
        fprintf(stderr, "cnf train: warning: iteration %zu: could not save %s: %s\n",
                sv->state->iteration, sv->out, cnf_last_error());
}

static void fmt_time(double s, char *buf, size_t n)
{
    if (!isfinite(s) || s < 0) {
        snprintf(buf, n, "?");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    else
        snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

static int on_progress(const cnf_train_progress *p, void *vctx)
{
    progress_ctx *c = vctx;
    c->nfe_f += p->nfe_forward;
    c->nfe_b += p->nfe_backward;
    c->count++;
    c->last_iter = p->iteration;
    progress_rate_add(&c->rate, p->iteration, p->elapsed);
    if (c->curve) {
        train_curve_add(c->curve, p->iteration, p->loss, p->nfe_forward, p->nfe_backward,
                        p->elapsed);
        if (p->validated)
            train_curve_add_validation(c->curve, p->iteration, p->validated_nll ? p->val_nll : NAN,
                                       c->fm ? p->val_loss : NAN);
    }
    size_t remaining = p->iters - p->iteration;
    /* The first iteration's time includes the start-up; the recent rate
     * follows iterations that grow slower as the flow trains. */
    double eta = progress_rate_eta(&c->rate, remaining);
    char el[32], et[32], val[96] = "", nfe[48] = "";
    fmt_time(p->elapsed, el, sizeof el);
    fmt_time(eta, et, sizeof et);
    int fm = c->fm;
    if (!isnan(p->best_val_nll) && !isnan(p->val_nll))
        snprintf(val, sizeof val, "val %.4f (best %.4f @%zu)", p->val_nll, p->best_val_nll,
                 p->best_iteration);
    else if (!isnan(p->best_val_nll))
        snprintf(val, sizeof val, "val loss %.4f (best %.4f @%zu)", p->val_loss,
                 p->best_val_nll, p->best_iteration);
    if (!fm)
        snprintf(nfe, sizeof nfe, "nfe %zu/%zu", p->nfe_forward, p->nfe_backward);
    if (!cli_quiet && c->tty) {
        char it[64], loss[48], elapsed[48], left[48], line[512];
        snprintf(it, sizeof it, "iter %zu/%zu", p->iteration, p->iters);
        snprintf(loss, sizeof loss, "loss %.4f", p->loss);
        snprintf(elapsed, sizeof elapsed, "elapsed %s", el);
        snprintf(left, sizeof left, "eta %s", et);
        /* What goes first when the terminal is narrow: the elapsed time,
         * then the evaluations, then the validation. */
        const char *fields[] = {it, loss, nfe, val, elapsed, left};
        const int rank[] = {0, 0, 2, 1, 3, 0};
        progress_fit(fields, rank, 6, progress_terminal_width(STDERR_FILENO), line, sizeof line);
        fprintf(stderr, "\r\033[K%s", line);
        c->line_open = 1;
        fflush(stderr);
    } else if (!cli_quiet && (p->iteration == c->first_iter + 1 ||
                              p->iteration % c->log_every == 0 || p->validated ||
                              p->iteration == p->iters ||
                              p->elapsed - c->last_log >= LOG_MAX_INTERVAL)) {
        c->last_log = p->elapsed;
        fprintf(stderr, "iter %zu/%zu loss %.6f", p->iteration, p->iters, p->loss);
        if (!fm) {
            fprintf(stderr, " nll %.6f nfe %.1f/%.1f T", p->nll,
                    (double)c->nfe_f / (double)c->count, (double)c->nfe_b / (double)c->count);
            for (size_t k = 0; k < p->n_blocks && k < 4; k++)
                fprintf(stderr, " %.4f", p->T[k]);
        }
        if (p->validated && fm)
            fprintf(stderr, " val_loss %.6f", p->val_loss);
        if (p->validated_nll)
            fprintf(stderr, " val %.6f", p->val_nll);
        if (p->validated && !isnan(p->best_val_nll))
            fprintf(stderr, " best %.6f @%zu", p->best_val_nll, p->best_iteration);
        fprintf(stderr, " elapsed %s eta %s\n", el, et);
        c->nfe_f = c->nfe_b = 0;
        c->count = 0;
    }
    if (c->save_every && p->iteration % c->save_every == 0)
        save_checkpoint(c->saver, p->nll);
    return interrupted ? 1 : 0;
}

/* "90", "90s", "15m", "1h30m", "2.5h": seconds, or exit with a usage error. */
static double parse_duration(const char *text)
{
    double total = 0.0;
    const char *p = text;
    int parts = 0;
    while (*p) {
        char *end;
        double v = strtod(p, &end);
        if (end == p || !(v >= 0.0) || !isfinite(v))
            break;
        double unit = *end == 'h' ? 3600.0 : *end == 'm' ? 60.0 : 1.0;
        if (*end == 'h' || *end == 'm' || *end == 's')
            end++;
        else if (*end)
            break;
        total += v * unit;
        parts++;
        p = end;
    }
    if (*p || parts == 0 || !(total > 0.0))
        cli_usage("--max-time '%s': expected a positive duration such as 90s, 15m or 1h30m", text);
    return total;
}

/* --preprocess: standardise or whiten from the training rows. */
static void fit_preprocessing(cnf_flow *flow, const run_config *cfg, const double *X,
                              size_t N, const char *what)
{
    cnf_preprocess kind;
    cli_check(cnf_preprocess_from_name(cfg->preprocess, &kind), "preprocess");
    if (kind == CNF_PREPROCESS_STANDARDIZE) {
        cli_check(cnf_flow_fit_preprocess(flow, X, N), what);
        return;
    }
    double ridge = 0.0;
    cli_check(cnf_flow_fit_whitening(flow, X, N, &ridge), what);
    if (ridge > 0.0)
        cli_info("cnf train: warning: the correlation matrix of %s is singular or nearly so "
                 "(collinear or constant columns, or no more rows than columns); whitening "
                 "added %g to its diagonal\n", what, ridge);
}

/* --resume continues a run: options may change its length, schedule and
 * solver, but not what the run optimises, how it selects the kept model
 * (the saved best would be compared with another quantity) or the
 * preprocessing (fixed in the model). */
static void check_resume_settings(const run_config *now, const run_config *saved,
                                  const char *model)
{
    if (strcmp(now->objective, saved->objective))
        cli_usage("--resume %s continues a run of objective %s; to train it by %s start a new "
                  "run from it with --init", model, saved->objective, now->objective);
    if (strcmp(now->preprocess, saved->preprocess))
        cli_usage("--resume %s: its preprocessing (%s) is fixed in the model; --preprocess "
                  "cannot change it", model, saved->preprocess);
    if (strcmp(now->objective, "mle") && (now->val_nll_every == 0) != (saved->val_nll_every == 0))
        cli_usage("--resume %s: the run keeps its best model by validation %s; --val-nll-every "
                  "%zu would compare another quantity with it (start a new run with --init)",
                  model, saved->val_nll_every ? "NLL" : "loss", now->val_nll_every);
}

/* Say how this run's architecture (a) differs from model file b's, or
 * return 0 if they do not. */
static int describe_difference(const cnf_flow *a, const cnf_flow *b, const char *bname,
                               char *buf, size_t n)
{
    size_t K = cnf_flow_num_blocks(a);
    if (cnf_flow_dim(a) != cnf_flow_dim(b) || K != cnf_flow_num_blocks(b)) {
        snprintf(buf, n, "this run has D = %zu and %zu block(s), %s has D = %zu and %zu",
                 cnf_flow_dim(a), K, bname, cnf_flow_dim(b), cnf_flow_num_blocks(b));
        return 1;
    }
    for (size_t k = 0; k < K; k++) {
        const cnf_net_config *x = cnf_net_get_config(cnf_flow_block_net(a, k));
        const cnf_net_config *y = cnf_net_get_config(cnf_flow_block_net(b, k));
        char hx[256], hy[256];
        cnf_net_config_format_hidden(x, hx, sizeof hx);
        cnf_net_config_format_hidden(y, hy, sizeof hy);
        if (strcmp(hx, hy) || x->layer_type != y->layer_type || x->activation != y->activation) {
            snprintf(buf, n, "block %zu: this run has hidden %s %s %s, %s has hidden %s %s %s", k,
                     hx, cnf_layer_type_name(x->layer_type), cnf_activation_name(x->activation),
                     bname, hy, cnf_layer_type_name(y->layer_type),
                     cnf_activation_name(y->activation));
            return 1;
        }
    }
    return 0;
}

/* --init: the parameters (end times included) and the preprocessing of an
 * existing model of the same architecture; its training state is not used
 * (a fresh optimizer starts). */
static void start_from(cnf_flow *flow, const char *path)
{
    cnf_flow *src = cli_load_model(path, NULL);
    char why[1024];
    if (describe_difference(flow, src, path, why, sizeof why))
        cli_die("--init %s: the architectures differ (%s); give the model's hidden, layer, act "
                "and blocks (cnf info %s)", path, why, path);
    size_t D = cnf_flow_dim(flow);
    memcpy(cnf_flow_params(flow), cnf_flow_params_const(src),
           cnf_flow_num_params(flow) * sizeof(double));
    memcpy(cnf_flow_mean(flow), cnf_flow_mean_const(src), D * sizeof(double));
    memcpy(cnf_flow_scale(flow), cnf_flow_scale_const(src), D * sizeof(double));
    cli_check(cnf_flow_set_whitening(flow, cnf_flow_whitening_const(src)), path);
    cnf_flow_free(src);
}

/* `cnf train --data x.csv` splits the rows as `cnf convert` does by default,
 * so that it trains on the same rows as convert, then train --data x.h5. */
#define CSV_SPLIT "0.8,0.1,0.1"
#define CSV_SPLIT_SEED 1UL

/* The training rows of a CSV file (returned, *Ntr x *D) and its validation
 * rows (*Xval, *Nval x *D; NULL when the split leaves none), with the
 * header's names as a CSV line in *columns (NULL without a header). */
static double *read_csv_splits(const char *path, size_t *Ntr, double **Xval, size_t *Nval,
                               size_t *D, char **columns)
{
    size_t N;
    double *X = cli_read_table(path, NULL, 0, &N, D, columns);
    size_t counts[3];
    cli_split_counts(CSV_SPLIT, N, counts);
    cli_shuffle_rows(X, N, *D, CSV_SPLIT_SEED);
    *Ntr = counts[0];
    *Nval = counts[1];
    *Xval = NULL;
    if (counts[1]) {
        *Xval = cli_malloc(counts[1] * *D * sizeof **Xval);
        memcpy(*Xval, X + counts[0] * *D, counts[1] * *D * sizeof **Xval);
    }
    return X;   /* its first counts[0] rows are the training rows */
}

/* --curve: the run's curves as a PNG; a failure to draw them is reported
 * but does not undo the run (the model is saved by then). */
static void write_curve(const train_curve *c, const char *path, const char *train,
                        const char *preset, const char *objective, size_t first, int fm)
{
    char title[8400], err[4400], tname[CNF_DATA_FILE_MAX + CNF_DATA_PATH_MAX + 2];
    cli_data_short_name(train, NULL, tname, sizeof tname);
    snprintf(title, sizeof title, "%s, %s, %s: iterations %zu to %zu", tname,
             preset ? cli_basename(preset) : "no preset", objective, first + 1,
             c->n ? (size_t)c->iter[c->n - 1] : first);
    if (train_curve_write(c, path, title, fm, err, sizeof err))
        fprintf(stderr, "cnf train: error: --curve: %s\n", err);
    else
        cli_info("wrote %s: training curves of %zu iterations and %zu validations\n", path, c->n,
                 c->nv);
}

/* Check a training/validation array before any work. */
static void check_rows(const char *what, size_t N, size_t need, const char *why)
{
    if (N < need)
        cli_die("%s has %zu rows, fewer than %s %zu", what, N, why, need);
}

int cmd_train(int argc, char **argv)
{
    run_config cfg;
    run_config_default(&cfg);
    /* The preset (or the resumed model's record) must be applied before the
     * options so that options override it; find those two first. */
    char preset_buf[4096];
    const char *preset = cli_peek(argc, argv, "flow");
    if (preset)
        preset = cli_preset_find(preset, preset_buf, sizeof preset_buf);
    const char *resume = cli_peek(argc, argv, "resume");
    cnf_model_extra ex;
    cnf_model_extra_init(&ex);
    cnf_flow *flow = NULL;
    run_config resumed = cfg;   /* a resumed run's own settings, before the options */
    int want_help = 0;
    for (int i = 1; i < argc; i++)
        want_help |= !strcmp(argv[i], "--help") || !strcmp(argv[i], "-h");
    if (resume && !want_help) {
        flow = cli_load_model(resume, &ex);
        if (!ex.state)
            cli_die("%s has no training state (a model saved by 'cnf train' has /training)",
                    resume);
        for (size_t i = 0; i < ex.n_config; i++) {
            char err[600];
            /* Keys of the record that are not configuration (results, data)
             * are skipped. */
            (void)run_config_set(&cfg, ex.config_keys[i], ex.config_values[i], err,
                                     sizeof err);
        }
        resumed = cfg;
    } else if (preset) {
        run_config_load(&cfg, preset);   /* with --help too, which shows its values */
    }

    const char *data = NULL, *train = NULL, *val = NULL, *out = NULL, *flow_opt = NULL;
    const char *resume_opt = NULL, *init = NULL, *max_time = NULL, *curve_out = NULL;
    size_t threads = 1, blas_threads = 1, log_every = 100;
    int json = 0;
    enum { NCFG = 64 };
    cli_option opts[NCFG + 16];
    char names[NCFG][32];
    size_t no = 0;
    opts[no++] = (cli_option){"data", CLI_STRING, &data, "F.h5|F.csv",
                              "data file with /train and /val, or a CSV file (rows shuffled with "
                              "seed 1 and split 0.8,0.1,0.1 as cnf convert does; the test rows "
                              "are left out)", NULL, 0};
    opts[no++] = (cli_option){"train", CLI_STRING, &train, "F.h5:/x", "training set (instead of --data)", NULL, 0};
    opts[no++] = (cli_option){"val", CLI_STRING, &val, "F.h5:/y", "validation set (instead of --data)", NULL, 0};
    opts[no++] = (cli_option){"flow", CLI_STRING, &flow_opt, "NAME|F.cfg",
                              "preset of architecture and training settings: a file, or a name "
                              "such as toy2d looked up in $CNF_FLOWS_PATH, then the presets that "
                              "come with cnf (flows/README.md)", NULL, 0};
    opts[no++] = (cli_option){"out", CLI_STRING, &out, "M.h5", "model file to write", CLI_REQUIRED, 0};
    opts[no++] = (cli_option){"resume", CLI_STRING, &resume_opt, "M.h5",
                              "continue the run saved in this model file", NULL, 0};
    opts[no++] = (cli_option){"max-time", CLI_STRING, &max_time, "DURATION",
                              "stop after this much training time (e.g. 90s, 15m, 1h30m; a bare "
                              "number is seconds), validate the last parameters and keep the "
                              "better of them and the best so far", NULL, 0};
    opts[no++] = (cli_option){"init", CLI_STRING, &init, "M.h5",
                              "start from this model's parameters and preprocessing (same "
                              "architecture) with a fresh optimizer, e.g. fm then mle", NULL, 0};
    opts[no++] = (cli_option){"threads", CLI_COUNT, &threads, "N",
                              "threads (1..64), each computing its share of the batch rows (with N > 1 "
                              "OpenBLAS is kept to one thread)", NULL, 0};
    opts[no++] = (cli_option)CLI_BLAS_THREADS_OPTION(blas_threads);
    opts[no++] = (cli_option){"log-every", CLI_COUNT, &log_every, "N",
                              "log line every N iterations (and at least every 30 s) when stderr is not a terminal", NULL, 0};
    opts[no++] = (cli_option){"json", CLI_FLAG, &json, NULL, "print one JSON object with the results", NULL, 0};
    opts[no++] = (cli_option){"curve", CLI_STRING, &curve_out, "F.png",
                              "draw this run's training curves (loss, validation, NFE, seconds "
                              "per iteration) as a PNG at the end", NULL, 0};
    if (config_num_keys > NCFG)
        cli_die("internal: too many configuration keys");
    run_config_options(&cfg, opts + no, names);
    /* Lower-case names for the keys named after the mathematics' T; the
     * old spellings still work. */
    for (size_t i = no; i < no + config_num_keys; i++)
        if (!strcmp(opts[i].name, "T") || !strcmp(opts[i].name, "learn-T")) {
            cli_add_alias(opts[i].name[0] == 'T' ? "T" : "learn-T",
                          opts[i].name[0] == 'T' ? "end-time" : "learn-end-time");
            opts[i].name = opts[i].name[0] == 'T' ? "end-time" : "learn-end-time";
        }
    no += config_num_keys;
    opts[no] = (cli_option){NULL, 0, NULL, NULL, NULL, NULL, 0};
    const char *pos[1];
    size_t n_pos;
    cli_parse(argc, argv, opts,
              "train --data F.h5|F.csv [--flow NAME] --out M.h5 [options]",
              "Train a continuous normalizing flow by maximum likelihood (adjoint\n"
              "gradients) or flow matching (--objective fm|otfm: regression of the\n"
              "velocity field, no ODE solve) with Adam on /train, validating on /val.\n"
              "The best model by validation NLL (under flow matching without\n"
              "--val-nll-every: by validation loss) is saved to --out atomically, at\n"
              "the end and, with --save-every N, every N iterations; Ctrl-C stops early\n"
              "and saves the best so far. A failed solve exits 1 after saving the best\n"
              "model so far (nothing is written if no iteration completed). Without\n"
              "validation (--val-every 0 or no validation data) the last parameters\n"
              "are saved. Log lines without a terminal: after the first iteration,\n"
              "then every --log-every iterations or 30 s, whichever comes first.\n"
              "Defaults below are the built-in ones, or the preset's when --flow comes\n"
              "before --help; options override the preset. With --resume the\n"
              "architecture, preprocessing and settings come from the model; --iters\n"
              "sets the new total (under the cosine schedule keep it, or the schedule\n"
              "changes). --init starts a new run from a model's parameters.",
              pos, 0, &n_pos);
    if (data && (train || val))
        cli_usage("give either --data or --train/--val, not both");
    if (resume && !data && !train) {
        /* The model records where its run's data came from. */
        train = cnf_model_extra_get(&ex, "train_data");
        val = cnf_model_extra_get(&ex, "val_data");
        if (!train)
            cli_usage("--resume %s: the model records no training data; give --data F.h5 (or "
                      "--train F.h5:/x --val F.h5:/y)", resume);
        if (val && !strcmp(val, "none"))
            val = NULL;
        cli_info("--resume %s: training on %s, validating on %s (the model's record)\n", resume,
                 train, val ? val : "nothing");
    }
    if (!data && !train)
        cli_usage("--data F.h5 (or --train F.h5:/x --val F.h5:/y) is required");
    if (resume && cli_given(opts, "flow"))
        cli_usage("--resume takes the settings from the model; do not give --flow too");
    if (resume && init)
        cli_usage("--resume continues a run and --init starts a new one: give one of them");
    if (init && cli_given(opts, "preprocess"))
        cli_usage("--init takes the preprocessing from %s; do not give --preprocess too", init);
    if (resume)
        check_resume_settings(&cfg, &resumed, resume);
    /* --resume is not among the inputs: continuing a run into the file it
     * came from is what --resume M --out M is for. */
    cnf_data_address a_train, a_val;
    const char *inputs[] = {data, cli_address_file(train, &a_train), cli_address_file(val, &a_val),
                            preset, init};
    cli_check_output(out, inputs, 5);
    if (curve_out) {
        const char *curve_inputs[] = {inputs[0], inputs[1], inputs[2], inputs[3], inputs[4], out};
        cli_check(cnf_file_check_output(curve_out, curve_inputs, 6), "--curve");
    }
    cli_check_threads(threads);
    cli_set_blas_threads(blas_threads);

    /* Data, checked before any work. */
    size_t Ntr, Nval = 0, D, Dval = 0;
    double *Xtr, *Xval = NULL;   /* Ntr x D, Nval x D */
    char trname[CNF_DATA_FILE_MAX + 16], valname[CNF_DATA_FILE_MAX + 16];
    char *columns = NULL;   /* malloc'd */
    size_t Dmodel = flow ? cnf_flow_dim(flow) : 0;
    if (data && cnf_csv_is_csv_path(data)) {
        Xtr = read_csv_splits(data, &Ntr, &Xval, &Nval, &D, &columns);
        snprintf(trname, sizeof trname, "%s (rows shuffled with seed %lu, split %s: train)",
                 data, CSV_SPLIT_SEED, CSV_SPLIT);
        snprintf(valname, sizeof valname, "%s (rows shuffled with seed %lu, split %s: val)",
                 data, CSV_SPLIT_SEED, CSV_SPLIT);
        train = trname;
        val = Xval ? valname : NULL;
        if (Dmodel && D != Dmodel)
            cli_die("%s has %zu columns but the model's dimension is %zu", data, D, Dmodel);
    } else {
        if (data) {
            snprintf(trname, sizeof trname, "%s:/train", data);
            snprintf(valname, sizeof valname, "%s:/val", data);
            train = trname;
            val = valname;
        }
        Xtr = cli_read_table(train, NULL, Dmodel, &Ntr, &D, &columns);
        if (val) {
            Xval = cli_read_data(val, NULL, 0, &Nval, &Dval);   /* checked against D below */
            if (Dval != D)
                cli_die("%s has %zu columns but %s has %zu", val, Dval, train, D);
        }
    }
    check_rows(train, Ntr, cfg.batch, "a batch (--batch) of");
    check_rows(train, Ntr, 2, "the minimum for standardisation,");

    cnf_net_config nets[64];
    double T[64];
    if (cfg.blocks > 64)
        cli_usage("--blocks %zu: at most 64", cfg.blocks);
    int fm_objective = !strcmp(cfg.objective, "fm") || !strcmp(cfg.objective, "otfm");
    if (fm_objective && (cfg.blocks != 1 || (cfg.T != 1.0 && !init) || cfg.learn_T))
        cli_usage("--objective %s trains one block on the path t in [0, 1]: it needs blocks = 1, "
                "T = 1 and learn_T = 0 (got blocks = %zu, T = %g, learn_T = %d; "
                "flows/toy2d-fm.cfg and flows/tabular-fm.cfg are set up for it)",
                cfg.objective, cfg.blocks, cfg.T, cfg.learn_T);
    cnf_train_options opt;
    run_config_resolve(&cfg, D, nets, T, &opt);
    cli_mpi_parallel(&opt.parallel);
    if (opt.parallel.size > 1 && fm_objective)
        cli_usage("--objective %s does not train data parallel yet (the optimal-transport "
                  "pairing works on whole batches): run it as one process, with --threads",
                  cfg.objective);
    if (opt.parallel.size > 1 && cfg.batch < opt.parallel.size)
        cli_usage("--batch %zu is smaller than the %zu ranks: every rank needs a row",
                  cfg.batch, opt.parallel.size);
    opt.flow.threads = threads;   /* validation copies these flow options */
    if (!Xval)
        opt.val_every = 0;
    if (max_time)
        opt.max_seconds = parse_duration(max_time);

    cnf_train_state *state;
    if (flow) {
        state = ex.state;
        ex.state = NULL;
        /* Under the reduction every rank count takes the same steps, but the
         * sums' order, and so the last bits, follow the count: the same run
         * continues only with as many ranks as it had */
        const char *was = cnf_model_extra_get(&ex, "ranks");
        size_t had = was ? (size_t)strtoul(was, NULL, 10) : 1;
        if (had != opt.parallel.size)
            cli_usage("%s was trained on %zu rank(s); resume it with as many (mpirun -np %zu%s), "
                      "since the order of the ranks' sums changes the last bits", resume, had,
                      had, had == 1 ? ", or without mpirun" : "");
        if (state->iteration >= opt.iters)
            cli_usage("%s has already run %zu iterations; give --iters larger than that to continue",
                    resume, state->iteration);
    } else {
        flow = cnf_flow_alloc(D, cfg.blocks, nets, T);
        if (!flow)
            cli_die("%s", cnf_last_error());
        if (init) {
            start_from(flow, init);
            /* the record says what the model does, not what the preset said */
            cfg.preprocess = cnf_preprocess_name(cnf_flow_preprocess_kind(flow));
            if (opt.objective == CNF_OBJ_FM)
                cli_check(cnf_fm_check_flow(flow), init);
        } else {
            fit_preprocessing(flow, &cfg, Xtr, Ntr, train);
            gsl_rng *irng = gsl_rng_alloc(gsl_rng_mt19937);
            if (!irng)
                cli_die("out of memory");
            gsl_rng_set(irng, cfg.seed);
            cnf_flow_init_params(flow, irng, 0);
            gsl_rng_free(irng);
        }
        state = cnf_train_state_alloc(cnf_flow_num_params(flow), cfg.seed);
        if (!state)
            cli_die("%s", cnf_last_error());
    }

    const char *pre = resume ? cnf_model_extra_get(&ex, "preset") : preset;
    if (resume)
        init = cnf_model_extra_get(&ex, "init");
    /* A resumed run keeps the names its record has (its data may lack them). */
    const char *rec_columns = resume && cnf_model_extra_get(&ex, "columns")
                                  ? cnf_model_extra_get(&ex, "columns") : columns;
    model_saver sv = {flow, state, &cfg, pre, train, val, out, init, rec_columns};
    train_curve curve;
    train_curve_init(&curve);
    progress_ctx pc = {isatty(STDERR_FILENO), log_every, state->iteration, 0, 0, 0, 0, 0.0,
                       state->iteration, cfg.save_every, &sv, opt.objective == CNF_OBJ_FM,
                       {{0}, {0}, 0, 0}, curve_out ? &curve : NULL};
    progress_rate_init(&pc.rate);
    opt.callback = on_progress;
    opt.callback_ctx = &pc;
    struct sigaction sa, old, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, &old);
    sigaction(SIGTERM, &sa, &old_term);
    cli_info("training (%s, %s): D = %zu, %zu blocks of %s-%s %s, P = %zu, %zu train / %zu val "
             "rows, iterations %zu..%zu\n",
             cfg.objective, cnf_preprocess_name(cnf_flow_preprocess_kind(flow)), D, cfg.blocks,
             cfg.hidden[0] ? cfg.hidden : "(none)", cfg.act, cfg.layer,
             cnf_flow_num_params(flow), Ntr, Nval, state->iteration + 1, opt.iters);
    cnf_train_result res;
    cnf_status s = cnf_train_run(flow, Xtr, Ntr, Xval, Nval, &opt, state, &res);
    cli_mpi_agreed();   /* every rank got the same status, or its own failure */
    sigaction(SIGINT, &old, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (pc.line_open)
        fputc('\n', stderr);

    /* The best parameters so far (by validation; the last ones without). */
    const char *criterion = opt.objective == CNF_OBJ_FM && opt.val_nll_every == 0
                                ? "validation loss" : "validation nll";
    char what[256];
    if (state->has_best)
        snprintf(what, sizeof what, "the best model so far (%s %.6f at iteration %zu)",
                 criterion, state->best_val_nll, state->best_iteration);
    else
        snprintf(what, sizeof what, "the last parameters (iteration %zu; no validation had run)",
                 state->iteration);
    if (s != CNF_OK) {
        /* Keep the message: saving sets its own. */
        char why[1024];
        snprintf(why, sizeof why, "%s", cnf_last_error());
        /* A failed validation comes after its iteration's step (which
         * counts as done), a failed gradient before it. */
        char when[64];
        if (state->iteration > pc.last_iter)
            snprintf(when, sizeof when, "the validation of iteration %zu", state->iteration);
        else
            snprintf(when, sizeof when, "iteration %zu", state->iteration + 1);
        if (state->iteration == pc.first_iter)
            cli_die("training failed at %s: %s; no iteration completed, nothing saved "
                    "(%s not written)", when, why, out);
        cnf_status s2 = save_model(&sv, res.train_nll);
        if (curve_out && s2 == CNF_OK && cli_mpi_rank() == 0)
            write_curve(&curve, curve_out, train, pre, cfg.objective, pc.first_iter, pc.fm);
        if (s2 != CNF_OK)
            cli_die("training failed at %s: %s; saving %s also failed: %s", when, why, out,
                    cnf_last_error());
        cli_die("training failed at %s: %s; saved %s to %s", when, why, what, out);
    }
    cli_check(save_model(&sv, res.train_nll), out);
    if (curve_out && cli_mpi_rank() == 0)
        write_curve(&curve, curve_out, train, pre, cfg.objective, pc.first_iter, pc.fm);
    train_curve_free(&curve);

    if (res.interrupted)
        cli_info("interrupted at iteration %zu: saved %s to %s\n", res.iters, what, out);
    else if (res.timed_out)
        cli_info("time limit (--max-time) reached at iteration %zu: saved %s to %s\n", res.iters,
                 what, out);
    else if (state->has_best)
        cli_info("saved %s (best %s %.6f at iteration %zu%s)\n", out, criterion, res.best_val_nll,
                 res.best_iteration, res.stopped_early ? ", stopped early" : "");
    else
        cli_info("saved %s: the last parameters (iteration %zu), as there was no validation (%s)\n",
                 out, res.iters, Xval ? "--val-every 0" : "no validation data");
    if (json && cli_mpi_rank() == 0) {
        /* iters: the iteration the model reached (a resumed run's earlier
         * ones counted); iters_target: --iters; iters_run: this call's. */
        printf("{\"objective\": \"%s\", \"iters\": %zu, \"iters_target\": %zu, "
               "\"iters_run\": %zu, \"train_loss\": ",
               cfg.objective, res.iters, opt.iters, res.iters_run);
        cli_json_double(stdout, res.train_loss);
        printf(", \"val_loss\": ");
        cli_json_double(stdout, res.val_loss);
        printf(", \"train_nll\": ");
        cli_json_double(stdout, res.train_nll);
        printf(", \"val_nll\": ");
        cli_json_double(stdout, res.val_nll);
        printf(", \"best_val_nll\": ");
        cli_json_double(stdout, res.best_val_nll);
        printf(", \"best_iteration\": %zu, \"seconds\": %.3f, \"nfe_forward\": %zu, "
               "\"nfe_backward\": %zu, \"nfe_forward_mean\": %.2f, \"nfe_backward_mean\": %.2f, "
               "\"n_params\": %zu, \"stopped_early\": %s, \"interrupted\": %s, "
               "\"timed_out\": %s}\n",
               res.best_iteration, res.seconds, res.nfe_forward, res.nfe_backward,
               res.nfe_forward_mean, res.nfe_backward_mean, cnf_flow_num_params(flow),
               res.stopped_early ? "true" : "false", res.interrupted ? "true" : "false",
               res.timed_out ? "true" : "false");
    }
    cnf_model_extra_clear(&ex);
    cnf_train_state_free(state);
    cnf_flow_free(flow);
    free(Xtr);
    free(Xval);
    free(columns);
    run_config_clear(&cfg);
    return res.interrupted ? 130 : 0;
}
