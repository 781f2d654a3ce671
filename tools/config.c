/* config.c — presets (flows/NAME.cfg) and the options of `cnf train` from
 * one table of keys (config.h; format documented in flows/README.md). */
#define _POSIX_C_SOURCE 200809L
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnf/adjoint.h"
#include "cnf/file.h"
#include "cnf/ode.h"
#include "model_cli.h"

#define KEY(name, kind, meta, help)                                                            \
    {#name, kind, offsetof(run_config, name), CNF_CONFIG_NO_OPTION, meta, help}
/* A key that is one field of cnf_train_options: its default is read from
 * cnf_train_options_default and its value copied back by
 * run_config_resolve. The two fields must have the same size (the
 * array below has size -1, a compile error, otherwise). */
#define OPTION_KEY(name, field, kind, meta, help)                                              \
    {#name, kind, offsetof(run_config, name),                                              \
     offsetof(cnf_train_options, field) + 0 * sizeof(char[SAME_SIZE(name, field)]), meta, help}
#define SAME_SIZE(name, field)                                                                 \
    (sizeof ((run_config *)0)->name == sizeof ((cnf_train_options *)0)->field ? 1 : -1)

const config_key config_keys[] = {
    KEY(objective, CLI_STRING, "NAME",
        "training objective: mle (maximum likelihood), fm (flow matching), otfm (fm with "
        "minibatch optimal-transport pairs)"),
    KEY(preprocess, CLI_STRING, "KIND",
        "preprocessing of the data: standardize (per column) or whiten (full covariance)"),
    KEY(hidden, CLI_STRING, "W-W-..", "hidden widths; 'nD' = n times the data dimension"),
    KEY(layer, CLI_STRING, "TYPE", "layer type: concatsquash, concat, ignore"),
    KEY(act, CLI_STRING, "NAME", "activation: tanh, softplus, elu, swish"),
    KEY(blocks, CLI_COUNT, "K", "number of CNF blocks"),
    KEY(T, CLI_POS, "T", "initial end time of every block"),
    OPTION_KEY(learn_T, learn_T, CLI_BOOL, "0|1", "learn the end times"),
    KEY(solver, CLI_STRING, "NAME", "ODE solver: dopri5, rkf45, rkck, rk8pd (adaptive)"),
    KEY(rtol, CLI_POS, "R", "relative tolerance of the solves"),
    KEY(atol, CLI_POS, "A", "absolute tolerance of the solves"),
    KEY(max_steps, CLI_COUNT, "N", "step limit of one solve"),
    OPTION_KEY(safety, flow.solver.safety, CLI_POS, "S",
        "step-size safety factor of training's forward solves (<= 1; validation and eval: 0.9)"),
    OPTION_KEY(backsolve, flow.adjoint.backsolve, CLI_BOOL, "0|1", "adjoint recovers z(t) by integrating backwards"),
    OPTION_KEY(seminorm, flow.adjoint.seminorm, CLI_BOOL, "0|1", "leave the parameter gradient out of the backward error norm"),
    KEY(adjoint_norm, CLI_STRING, "NAME",
        "backward error norm: groups (the largest RMS of the adjoint, the state and the "
        "gradient) or rms (one over them all)"),
    KEY(checkpoints, CLI_STRING, "KIND",
        "z(t) between the forward checkpoints: dense (the solver's own interpolant) or "
        "hermite (cubic)"),
    KEY(gradient_tol, CLI_STRING, "KIND",
        "the grouped norm's tolerance of the gradient: relative (to its size, if below 1) "
        "or entrywise (atol + rtol |g_i| per entry)"),
    OPTION_KEY(warm_start, flow.warm_start, CLI_BOOL, "0|1",
        "start each iteration's solves with the first step the last iteration suggested"),
    KEY(divergence, CLI_STRING, "KIND", "training divergence: exact, gaussian, rademacher"),
    KEY(val_divergence, CLI_STRING, "KIND",
        "validation divergence: auto (exact if D <= 4), exact, training"),
    OPTION_KEY(reg_kinetic, flow.reg_kinetic, CLI_NONNEG, "L", "kinetic-energy regularizer weight"),
    OPTION_KEY(reg_jacobian, flow.reg_jacobian, CLI_NONNEG, "L", "Jacobian Frobenius regularizer weight"),
    OPTION_KEY(iters, iters, CLI_COUNT, "N", "total training iterations"),
    OPTION_KEY(batch, batch, CLI_COUNT, "B", "minibatch size"),
    OPTION_KEY(lr, lr, CLI_POS, "LR", "Adam learning rate"),
    OPTION_KEY(weight_decay, weight_decay, CLI_NONNEG, "W", "L2 weight decay (added to the gradient)"),
    KEY(lr_schedule, CLI_STRING, "NAME",
        "learning-rate schedule: step (lr_decay every lr_decay_every) or cosine (to lr_min)"),
    OPTION_KEY(warmup, warmup, CLI_SIZE, "N", "linear learning-rate warm-up over the first N iterations"),
    OPTION_KEY(lr_min, lr_min, CLI_NONNEG, "LR", "final learning rate of the cosine schedule"),
    OPTION_KEY(lr_decay, lr_decay, CLI_POS, "F", "step decay factor of the learning rate"),
    OPTION_KEY(lr_decay_every, lr_decay_every, CLI_SIZE, "N", "iterations between decays (0 = off)"),
    KEY(fm_time, CLI_STRING, "NAME", "flow matching's time distribution: uniform, logit-normal"),
    OPTION_KEY(ot_block, fm.ot_block, CLI_COUNT, "N", "otfm: rows per exact optimal assignment"),
    OPTION_KEY(clip_norm, clip_norm, CLI_NONNEG, "C", "clip the gradient norm (0 = off)"),
    OPTION_KEY(val_every, val_every, CLI_SIZE, "N", "validate every N iterations (0 = never)"),
    OPTION_KEY(val_nll_every, val_nll_every, CLI_SIZE, "N",
        "flow matching: also validate the NLL through the solver every N iterations (0 = "
        "never: keep the best by validation loss)"),
    OPTION_KEY(patience, patience, CLI_SIZE, "N", "stop after N validations without improvement (0 = off)"),
    OPTION_KEY(max_val_rows, max_val_rows, CLI_SIZE, "N", "validate on at most N rows (0 = all)"),
    OPTION_KEY(val_batch, val_batch, CLI_COUNT, "N", "rows per validation solve"),
    OPTION_KEY(seed, seed, CLI_SEED, "S", "seed of initialisation, batches and noise"),
    KEY(save_every, CLI_SIZE, "N",
        "also save the best model so far to --out every N iterations (0 = only at the end)"),
};
const size_t config_num_keys = sizeof config_keys / sizeof config_keys[0];

/* The bytes of a key's value (not for CLI_STRING keys, which are names). */
static size_t value_size(cli_kind kind)
{
    switch (kind) {
    case CLI_COUNT:
    case CLI_SIZE: return sizeof(size_t);
    case CLI_POS:
    case CLI_NONNEG: return sizeof(double);
    case CLI_SEED: return sizeof(unsigned long);
    default: return sizeof(int);
    }
}

/* Copy every OPTION_KEY's value from src to dst: into the options from the
 * configuration (to_options) or the other way round. */
static void copy_option_keys(void *dst, const void *src, int to_options)
{
    for (size_t i = 0; i < config_num_keys; i++) {
        const config_key *k = &config_keys[i];
        if (k->option == CNF_CONFIG_NO_OPTION)
            continue;
        size_t to = to_options ? k->option : k->offset, from = to_options ? k->offset : k->option;
        memcpy((char *)dst + to, (const char *)src + from, value_size(k->kind));
    }
}

/* The objective key of the library's objective and coupling ("otfm" is flow
 * matching with optimal-transport pairs). */
static const char *objective_key(const cnf_train_options *opt)
{
    if (opt->objective == CNF_OBJ_FM && opt->fm.coupling == CNF_FM_OT)
        return "otfm";
    return cnf_train_objective_name(opt->objective);
}

void run_config_default(run_config *cfg)
{
    /* Every key starts at the library's default: training's options (its
     * flow options included) and the network's; only the number of blocks
     * and their end time are the command's own, as the library has no
     * default flow. */
    cnf_train_options opt;
    cnf_train_options_default(&opt);
    cnf_net_config net;
    cnf_net_config_default(&net, 1);
    static char hidden[16 * CNF_NET_MAX_HIDDEN];   /* lives as long as the command */
    cnf_net_config_format_hidden(&net, hidden, sizeof hidden);
    memset(cfg, 0, sizeof *cfg);
    copy_option_keys(cfg, &opt, 0);
    cfg->objective = objective_key(&opt);
    cfg->preprocess = cnf_preprocess_name(CNF_PREPROCESS_STANDARDIZE);   /* a new flow's */
    cfg->hidden = hidden;
    cfg->layer = cnf_layer_type_name(net.layer_type);
    cfg->act = cnf_activation_name(net.activation);
    cfg->blocks = 1;
    cfg->T = 1.0;
    cfg->solver = cnf_ode_method_name(opt.flow.solver.method);
    cfg->rtol = opt.flow.solver.rtol;
    cfg->atol = opt.flow.solver.atol;
    cfg->max_steps = opt.flow.solver.max_steps;
    cfg->adjoint_norm = cnf_adjoint_norm_name(opt.flow.adjoint.norm);
    cfg->checkpoints = cnf_ode_interp_name(opt.flow.adjoint.checkpoints);
    cfg->gradient_tol = cnf_adjoint_gtol_name(opt.flow.adjoint.gradient_tol);
    cfg->divergence = cnf_divergence_name(opt.flow.divergence);
    cfg->val_divergence = cnf_train_val_divergence_name(opt.val_divergence);
    cfg->lr_schedule = cnf_lr_schedule_name(opt.lr_schedule);
    cfg->fm_time = cnf_fm_time_name(opt.fm.time);
}

void run_config_clear(run_config *cfg)
{
    while (cfg->owned) {
        config_string *next = cfg->owned->next;
        free(cfg->owned);
        cfg->owned = next;
    }
}

int run_config_check(const char *key, const char *value, char *err, size_t n)
{
    cnf_status s = CNF_OK;
    if (!strcmp(key, "layer")) {
        cnf_layer_type t;
        s = cnf_layer_type_from_name(value, &t);
    } else if (!strcmp(key, "act")) {
        cnf_activation a;
        s = cnf_activation_from_name(value, &a);
    } else if (!strcmp(key, "solver")) {
        cnf_ode_method m;
        s = cnf_ode_method_from_name(value, &m);
    } else if (!strcmp(key, "adjoint_norm")) {
        cnf_adjoint_norm norm;
        s = cnf_adjoint_norm_from_name(value, &norm);
    } else if (!strcmp(key, "checkpoints")) {
        cnf_ode_interp interp;
        s = cnf_ode_interp_from_name(value, &interp);
    } else if (!strcmp(key, "gradient_tol")) {
        cnf_adjoint_gtol gtol;
        s = cnf_adjoint_gtol_from_name(value, &gtol);
    } else if (!strcmp(key, "divergence")) {
        cnf_divergence d;
        s = cnf_divergence_from_name(value, &d);
    } else if (!strcmp(key, "val_divergence")) {
        cnf_train_val_divergence v;
        s = cnf_train_val_divergence_from_name(value, &v);
    } else if (!strcmp(key, "hidden")) {
        cnf_net_config net;
        cnf_net_config_default(&net, 1);   /* the form only: D is not known yet */
        s = cnf_net_config_parse_hidden(&net, value);
    } else if (!strcmp(key, "objective")) {
        if (strcmp(value, "mle") && strcmp(value, "fm") && strcmp(value, "otfm")) {
            snprintf(err, n, "'%s': expected mle, fm or otfm", value);
            return -1;
        }
    } else if (!strcmp(key, "preprocess")) {
        cnf_preprocess p;
        s = cnf_preprocess_from_name(value, &p);
    } else if (!strcmp(key, "lr_schedule")) {
        cnf_lr_schedule sch;
        s = cnf_lr_schedule_from_name(value, &sch);
    } else if (!strcmp(key, "fm_time")) {
        cnf_fm_time t;
        s = cnf_fm_time_from_name(value, &t);
    }
    if (s != CNF_OK) {
        snprintf(err, n, "%s", cnf_last_error());
        return -1;
    }
    return 0;
}

/* Lower-case spellings of the keys named after the mathematics' T. */
static const char *const key_aliases[][2] = {{"end_time", "T"}, {"learn_end_time", "learn_T"}};

static const config_key *find_key(const char *key)
{
    for (size_t i = 0; i < sizeof key_aliases / sizeof key_aliases[0]; i++)
        if (!strcmp(key, key_aliases[i][0]))
            key = key_aliases[i][1];
    for (size_t i = 0; i < config_num_keys; i++)
        if (!strcmp(config_keys[i].key, key))
            return &config_keys[i];
    return NULL;
}

int run_config_set(run_config *cfg, const char *key, const char *text, char *err,
                       size_t n)
{
    const config_key *k = find_key(key);
    if (!k) {
        snprintf(err, n, "unknown key '%s'", key);
        return -2;
    }
    void *dest = (char *)cfg + k->offset;
    if (k->kind == CLI_STRING) {
        /* "hidden = " (no widths) is allowed: a network without hidden layers. */
        if (!text[0] && strcmp(key, "hidden")) {
            snprintf(err, n, "%s needs a value", key);
            return -1;
        }
        /* the key first: the library's message names the value and its
         * kind ("unknown interpolation"), not the line's key */
        char msg[400];
        if (run_config_check(k->key, text, msg, sizeof msg)) {
            snprintf(err, n, "%s: %s", k->key, msg);
            return -1;
        }
        size_t len = strlen(text);
        config_string *copy = malloc(sizeof *copy + len + 1);
        if (!copy) {
            snprintf(err, n, "out of memory");
            return -1;
        }
        memcpy(copy->text, text, len + 1);
        /* not freed when the key is set again: a copy of cfg made earlier
         * (cnf train's record of a resumed run's settings) may point at it */
        copy->next = cfg->owned;
        cfg->owned = copy;
        *(const char **)dest = copy->text;
        return 0;
    }
    char msg[400];
    if (cli_parse_value(k->kind, text, dest, msg, sizeof msg)) {
        snprintf(err, n, "%s %s", key, msg);
        return -1;
    }
    return 0;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t len = strlen(s);
    while (len && isspace((unsigned char)s[len - 1]))
        s[--len] = '\0';
    return s;
}

int run_config_parse(run_config *cfg, FILE *f, const char *path, FILE *warn, char *err,
                     size_t n)
{
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    /* the line each key was last set on: a repeated key is almost always an
     * edit that forgot the earlier line, and only the last one counts */
    size_t set_on[sizeof config_keys / sizeof config_keys[0]] = {0};
    int rc = 0;
    ssize_t len;
    while (rc == 0 && (len = getline(&line, &cap, f)) != -1) {
        lineno++;
        /* getline reads past a NUL byte, but every string function after it
         * would stop there and silently drop the rest of the line */
        if (memchr(line, '\0', (size_t)len)) {
            snprintf(err, n, "%s:%zu: the line contains a NUL byte (a preset is a text file)",
                     path, lineno);
            rc = -1;
            break;
        }
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *s = trim(line);
        if (!s[0])
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(err, n, "%s:%zu: expected 'key = value', got '%.200s'", path, lineno, s);
            rc = -1;
            break;
        }
        *eq = '\0';
        char *key = trim(s), *value = trim(eq + 1);
        char msg[600];
        rc = run_config_set(cfg, key, value, msg, sizeof msg);
        if (rc == -2) {
            char known[1024] = "";
            for (size_t i = 0; i < config_num_keys; i++) {
                strncat(known, config_keys[i].key, sizeof known - strlen(known) - 3);
                if (i + 1 < config_num_keys)
                    strncat(known, ", ", sizeof known - strlen(known) - 1);
            }
            snprintf(err, n, "%s:%zu: unknown key '%.100s' (known keys: %s; see flows/README.md)",
                     path, lineno, key, known);
            rc = -1;
        } else if (rc) {
            snprintf(err, n, "%s:%zu: %s", path, lineno, msg);
        } else {
            size_t i = (size_t)(find_key(key) - config_keys);
            if (set_on[i] && warn)
                fprintf(warn, "cnf: warning: %s:%zu: key '%s' was already set on line %zu; "
                        "the value of line %zu is used\n", path, lineno, key, set_on[i],
                        lineno);
            set_on[i] = lineno;
        }
    }
    /* getline's -1 is also a read error: without this, a read error (EIO,
     * or a directory on a system that lets one be opened) would pass for
     * the end of the preset and the run would train with the defaults. */
    if (rc == 0 && ferror(f)) {
        snprintf(err, n, "error reading preset %s: %s", path, strerror(errno));
        rc = -2;
    }
    free(line);
    return rc;
}

void run_config_load(run_config *cfg, const char *path)
{
    FILE *f;
    if (cnf_file_open_input(path, &f) != CNF_OK)
        cli_die("preset: %s", cnf_last_error());
    char err[1400];
    int rc = run_config_parse(cfg, f, path, stderr, err, sizeof err);
    fclose(f);
    if (rc == -2)
        cli_die("%s", err);
    if (rc)
        cli_usage("%s", err);
}

void run_config_format(const run_config *cfg, const config_key *k, char *buf,
                           size_t n)
{
    const void *p = (const char *)cfg + k->offset;
    switch (k->kind) {
    case CLI_STRING: snprintf(buf, n, "%s", *(const char *const *)p); break;
    case CLI_COUNT:
    case CLI_SIZE: snprintf(buf, n, "%zu", *(const size_t *)p); break;
    case CLI_BOOL:
    case CLI_INT:
    case CLI_FLAG: snprintf(buf, n, "%d", *(const int *)p); break;
    case CLI_POS:
    case CLI_NONNEG: {
        /* The shortest of %.15g and %.17g that reads back exactly. */
        double x = *(const double *)p;
        snprintf(buf, n, "%.15g", x);
        if (strtod(buf, NULL) != x)
            snprintf(buf, n, "%.17g", x);
        break;
    }
    case CLI_SEED: snprintf(buf, n, "%lu", *(const unsigned long *)p); break;
    }
}

void run_config_options(run_config *cfg, cli_option *opts, char (*names)[32])
{
    for (size_t i = 0; i < config_num_keys; i++) {
        const config_key *k = &config_keys[i];
        snprintf(names[i], 32, "%s", k->key);
        for (char *c = names[i]; *c; c++)
            if (*c == '_')
                *c = '-';
        opts[i] = (cli_option){names[i], k->kind, (char *)cfg + k->offset, k->meta, k->help,
                               NULL, 0};
    }
}

void run_config_resolve(const run_config *cfg, size_t D, cnf_net_config *nets,
                            double *T, cnf_train_options *opt)
{
    char err[600];
    /* Option values were checked when set; these re-checks catch values that
     * only the combination makes invalid. */
    static const char *const enums[] = {"layer",        "act",         "solver",
                                        "adjoint_norm", "checkpoints", "gradient_tol",
                                        "divergence",   "val_divergence", "hidden",
                                        "objective",    "preprocess",  "lr_schedule",
                                        "fm_time"};
    for (size_t i = 0; i < sizeof enums / sizeof enums[0]; i++) {
        char v[256];
        run_config_format(cfg, find_key(enums[i]), v, sizeof v);
        if (run_config_check(enums[i], v, err, sizeof err))
            cli_usage("%s: %s", enums[i], err);
    }
    for (size_t k = 0; k < cfg->blocks; k++) {
        cnf_net_config_default(&nets[k], D);
        if (cnf_net_config_parse_hidden(&nets[k], cfg->hidden) != CNF_OK)
            cli_usage("%s", cnf_last_error());
        cli_check(cnf_layer_type_from_name(cfg->layer, &nets[k].layer_type), "layer");
        cli_check(cnf_activation_from_name(cfg->act, &nets[k].activation), "act");
        T[k] = cfg->T;
    }
    /* The library's defaults, its flow options included (warm starts, the
     * forward solves' safety factor, and any added later); each key then
     * sets its own field. */
    cnf_train_options_default(opt);
    copy_option_keys(opt, cfg, 1);
    opt->objective = strcmp(cfg->objective, "mle") ? CNF_OBJ_FM : CNF_OBJ_MLE;
    opt->fm.coupling = strcmp(cfg->objective, "otfm") ? CNF_FM_INDEPENDENT : CNF_FM_OT;
    cli_check(cnf_fm_time_from_name(cfg->fm_time, &opt->fm.time), "fm_time");
    cli_check(cnf_lr_schedule_from_name(cfg->lr_schedule, &opt->lr_schedule), "lr_schedule");
    cli_check(cnf_train_val_divergence_from_name(cfg->val_divergence, &opt->val_divergence),
              "val_divergence");
    cli_check(cnf_divergence_from_name(cfg->divergence, &opt->flow.divergence), "divergence");
    cli_check(cnf_adjoint_norm_from_name(cfg->adjoint_norm, &opt->flow.adjoint.norm),
              "adjoint_norm");
    cli_check(cnf_ode_interp_from_name(cfg->checkpoints, &opt->flow.adjoint.checkpoints),
              "checkpoints");
    cli_check(cnf_adjoint_gtol_from_name(cfg->gradient_tol, &opt->flow.adjoint.gradient_tol),
              "gradient_tol");
    cnf_ode_method method;
    cli_check(cnf_ode_method_from_name(cfg->solver, &method), "solver");
    if (!cnf_ode_method_is_adaptive(method))
        cli_usage("solver %s: training needs an adaptive solver (dopri5, rkf45, rkck, rk8pd)",
                  cfg->solver);
    cli_solver_set(&opt->flow, method, cfg->rtol, cfg->atol, cfg->max_steps,
                   opt->flow.solver.h0);
    /* safety is the forward solves' alone: the adjoint keeps its own */
    if (!(cfg->safety <= 1.0))
        cli_usage("safety %g: the step-size safety factor must be at most 1", cfg->safety);
    cli_check(cnf_train_options_check(opt), "options");
}
