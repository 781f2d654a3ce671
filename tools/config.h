/* config.h — the run configuration of `cnf train`: the architecture and
 * training settings a preset file (flows/NAME.cfg, "key = value" lines, see
 * flows/README.md) and the command-line options both set. One table of keys
 * drives the preset parser, the options of `cnf train` (key weight_decay is
 * option --weight-decay), --help and the record stored in the model file.
 *
 * Precedence: built-in defaults < preset file (or, with --resume, the
 * configuration stored in the model) < command-line options. */
#ifndef CNF_TOOLS_CONFIG_H
#define CNF_TOOLS_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#include "cli.h"
#include "cnf/net.h"
#include "cnf/train.h"

/* A string value set by run_config_set, owned by the configuration. */
typedef struct config_string {
    struct config_string *next;
    char text[];
} config_string;

typedef struct {
    const char *objective;      /* mle | fm | otfm */
    const char *preprocess;     /* standardize | whiten */
    const char *hidden;         /* widths "64-64-64", "20D-20D", "" (cnf_net_config_parse_hidden) */
    const char *layer;          /* concatsquash | concat | ignore */
    const char *act;            /* tanh | softplus | elu | swish */
    size_t blocks;              /* K */
    double T;                   /* initial end time of every block */
    int learn_T;
    const char *solver;         /* dopri5, ... (cnf/ode.h) */
    double rtol, atol;
    size_t max_steps;           /* per solve */
    double safety;              /* step-size safety factor of the forward solves */
    int backsolve, seminorm, warm_start;
    const char *adjoint_norm;   /* groups | rms (cnf/adjoint.h) */
    const char *checkpoints;    /* dense | hermite (cnf/ode.h) */
    const char *gradient_tol;   /* relative | entrywise (cnf/adjoint.h) */
    const char *divergence;     /* training: exact | gaussian | rademacher */
    const char *val_divergence; /* auto | exact | training */
    double reg_kinetic, reg_jacobian;
    size_t iters, batch;
    double lr, weight_decay;
    const char *lr_schedule;    /* step | cosine */
    size_t warmup;
    double lr_min;
    double lr_decay;
    size_t lr_decay_every;
    const char *fm_time;        /* uniform | logit-normal */
    size_t ot_block;
    size_t val_nll_every;
    double clip_norm;
    size_t val_every, patience, max_val_rows, val_batch;
    unsigned long seed;
    size_t save_every;          /* cnf train: save the best model so far every N
                                   iterations (0 = off); not a library option */
    config_string *owned;       /* the copies the string fields point at; a
                                   struct copy shares them and stays valid
                                   until run_config_clear of the original */
} run_config;

#define CNF_CONFIG_NO_OPTION ((size_t)-1)

/* One key of the table. */
typedef struct {
    const char *key;            /* preset key; option --key with '_' -> '-' */
    cli_kind kind;
    size_t offset;              /* into run_config */
    size_t option;              /* into cnf_train_options when the key is one of
                                   its fields (default and value copied as they
                                   are), else CNF_CONFIG_NO_OPTION: names, the
                                   solver, the architecture, save_every */
    const char *meta;
    const char *help;
} config_key;

extern const config_key config_keys[];
extern const size_t config_num_keys;

/* The library's defaults (cnf_train_options_default, flow options
 * included, and cnf_net_config_default's network: FFJORD's toy network),
 * with one block of T = 1. */
void run_config_default(run_config *cfg);

/* Free the string values run_config_set copied (the string fields then
 * dangle: call it last). */
void run_config_clear(run_config *cfg);

/* Set key to text (copied into cfg). Returns 0, or -1 with a message in err
 * (unknown key: err says so and -2 is returned). */
int run_config_set(run_config *cfg, const char *key, const char *text, char *err,
                       size_t n);

/* Read preset lines from f into cfg (path only names it in messages). A key
 * set twice is reported on warn (if not NULL) and the last value kept.
 * Returns 0; -1 with "PATH:LINE: ..." in err on an unknown key, a bad
 * value, a line without '=' or a NUL byte (a usage error); -2 with a message
 * on a read error. */
int run_config_parse(run_config *cfg, FILE *f, const char *path, FILE *warn, char *err,
                     size_t n);

/* Read a preset file into cfg; exits with "FILE:LINE: ..." on an unknown key
 * or a bad value. */
void run_config_load(run_config *cfg, const char *path);

/* The value of key as text (for the model's record). */
void run_config_format(const run_config *cfg, const config_key *k, char *buf,
                           size_t n);

/* Fill cli options (opts: at least config_num_keys entries) whose
 * destinations are cfg's fields. Names are made in names (storage). */
void run_config_options(run_config *cfg, cli_option *opts, char (*names)[32]);

/* Resolve to the library's structures for data dimension D; exits with a
 * message naming the key on a bad value. nets: blocks entries; T: blocks. */
void run_config_resolve(const run_config *cfg, size_t D, cnf_net_config *nets,
                            double *T, cnf_train_options *opt);

/* Check the value of an enumerated key (layer, act, solver, adjoint_norm,
 * checkpoints, gradient_tol, divergence, val_divergence, hidden, objective,
 * preprocess, lr_schedule, fm_time); 0 or -1 with a message. */
int run_config_check(const char *key, const char *value, char *err, size_t n);

#endif /* CNF_TOOLS_CONFIG_H */
