/* io.c — model and gradient files in the HDF5 layout of docs/formats.md
 * (the layout is spelled out in cnf/io.h; tests/data/reference/case*_model.h5
 * are files written by an independent program in it).
 *
 * The architecture is inferred from the data sets' shapes on loading rather
 * than stored twice, so the file can never contradict itself; every shape is
 * checked against the chain D -> hidden -> D before a single value is read.
 * Writing goes through the atomic writer of data.c. */
#include "cnf/io.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnf/size.h"
#include "finite.h"
#include "h5_impl.h"

/* ---- The training record ---------------------------------------------- */

void cnf_model_extra_init(cnf_model_extra *extra)
{
    extra->n_config = 0;
    extra->config_keys = NULL;
    extra->config_values = NULL;
    extra->state = NULL;
}

void cnf_model_extra_clear(cnf_model_extra *extra)
{
    if (!extra)
        return;
    for (size_t i = 0; i < extra->n_config; i++) {
        free(extra->config_keys[i]);
        free(extra->config_values[i]);
    }
    free(extra->config_keys);
    free(extra->config_values);
    cnf_train_state_free(extra->state);
    cnf_model_extra_init(extra);
}

static char *dup_string(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

cnf_status cnf_model_extra_set(cnf_model_extra *extra, const char *key, const char *value)
{
    if (!key || !key[0] || strchr(key, '/'))
        return cnf_error(CNF_EINVAL, "configuration key '%s' must be non-empty and contain no '/'",
                         key ? key : "");
    char *v = dup_string(value ? value : "");
    if (!v)
        return cnf_error(CNF_ENOMEM, "out of memory");
    for (size_t i = 0; i < extra->n_config; i++)
        if (strcmp(extra->config_keys[i], key) == 0) {
            free(extra->config_values[i]);
            extra->config_values[i] = v;
            return CNF_OK;
        }
    char *k = dup_string(key);
    char **nk = realloc(extra->config_keys, (extra->n_config + 1) * sizeof *nk);
    if (nk)
        extra->config_keys = nk;
    char **nv = nk ? realloc(extra->config_values, (extra->n_config + 1) * sizeof *nv) : NULL;
    if (nv)
        extra->config_values = nv;
    if (!k || !nk || !nv) {
        free(k);
        free(v);
        return cnf_error(CNF_ENOMEM, "out of memory");
    }
    extra->config_keys[extra->n_config] = k;
    extra->config_values[extra->n_config] = v;
    extra->n_config++;
    return CNF_OK;
}

const char *cnf_model_extra_get(const cnf_model_extra *extra, const char *key)
{
    for (size_t i = 0; extra && i < extra->n_config; i++)
        if (strcmp(extra->config_keys[i], key) == 0)
            return extra->config_values[i];
    return NULL;
}

/* ---- Paths of the layout ------------------------------------------------ */

/* "<prefix>/blocks/<k>[/layers/<j>[/<name>]]" into buf; prefix "" or "/"
 * means the root. */
static const char *block_path(char *buf, size_t n, const char *prefix, size_t k)
{
    const char *p = prefix && strcmp(prefix, "/") != 0 ? prefix : "";
    snprintf(buf, n, "%s/blocks/%zu", p, k);
    return buf;
}

static const char *layer_path(char *buf, size_t n, const char *prefix, size_t k, size_t j,
                              const char *name)
{
    const char *p = prefix && strcmp(prefix, "/") != 0 ? prefix : "";
    snprintf(buf, n, "%s/blocks/%zu/layers/%zu/%s", p, k, j, name);
    return buf;
}

/* One parameter array of a P-vector in the file layout: its name in the
 * layer (or block) group, its first index in the vector, rank (0 for the
 * scalar T) and shape. */
typedef struct {
    const char *name;
    size_t index;
    int rank;
    size_t rows, cols;
} layer_array;

/* The 2 or 5 arrays of layer lv, whose block starts at index base
 * (concatsquash has g_w, g_b, c_w). */
static size_t layer_arrays(const cnf_net_layer *lv, size_t base, layer_array out[5])
{
    size_t n = 0;
    out[n++] = (layer_array){"W", base + lv->W, 2, lv->out, lv->W_cols};
    out[n++] = (layer_array){"b", base + lv->b, 1, lv->out, 1};
    if (lv->g_w != CNF_NET_ABSENT)
        out[n++] = (layer_array){"g_w", base + lv->g_w, 1, lv->out, 1};
    if (lv->g_b != CNF_NET_ABSENT)
        out[n++] = (layer_array){"g_b", base + lv->g_b, 1, lv->out, 1};
    if (lv->c_w != CNF_NET_ABSENT)
        out[n++] = (layer_array){"c_w", base + lv->c_w, 1, lv->out, 1};
    return n;
}

typedef cnf_status (*array_fn)(const char *path, const layer_array *a, void *ctx);

/* Call fn on every layer array of the flow's P-vector layout under prefix
 * and, with with_T, on each block's end time as the scalar
 * <prefix>/blocks/<k>/T. The model writer and reader and the gradient files
 * all walk the layout here, so they cannot disagree about it. */
static cnf_status walk_arrays(const cnf_flow *flow, const char *prefix, int with_T, array_fn fn,
                              void *ctx)
{
    char path[256];
    cnf_status s = CNF_OK;
    for (size_t k = 0; k < cnf_flow_num_blocks(flow) && s == CNF_OK; k++) {
        const cnf_net *net = cnf_flow_block_net(flow, k);
        size_t base = cnf_flow_block_offset(flow, k);
        for (size_t j = 0; j < cnf_net_num_layers(net) && s == CNF_OK; j++) {
            cnf_net_layer lv;
            s = cnf_net_layer_view(net, j, &lv);
            layer_array arr[5];
            size_t na = s == CNF_OK ? layer_arrays(&lv, base, arr) : 0;
            for (size_t a = 0; a < na && s == CNF_OK; a++)
                s = fn(layer_path(path, sizeof path, prefix, k, j, arr[a].name), &arr[a], ctx);
        }
        if (with_T && s == CNF_OK) {
            layer_array T = {"T", cnf_flow_T_index(flow, k), 0, 1, 1};
            char bpath[240];
            snprintf(path, sizeof path, "%s/T", block_path(bpath, sizeof bpath, prefix, k));
            s = fn(path, &T, ctx);
        }
    }
    return s;
}

typedef struct {
    cnf_h5_writer *w;
    const double *vec;   /* P */
} write_ctx;

static cnf_status write_array(const char *path, const layer_array *a, void *ctx)
{
    const write_ctx *c = ctx;
    const double *x = c->vec + a->index;
    if (a->rank == 0)
        return cnf_h5_writer_write_scalar(c->w, path, *x);
    if (a->rank == 1)
        return cnf_h5_writer_write_1d(c->w, path, x, a->rows);
    return cnf_h5_writer_write_2d(c->w, path, x, a->rows, a->cols);
}

/* Write the flow's per-layer arrays of vec (P, the flow's layout) under
 * prefix; with with_T the end-time entries as scalar data sets T. */
static cnf_status write_layers(cnf_h5_writer *w, const char *prefix, const cnf_flow *flow,
                               const double *vec, int with_T)
{
    write_ctx c = {w, vec};
    return walk_arrays(flow, prefix, with_T, write_array, &c);
}

/* ---- Saving ------------------------------------------------------------- */

static cnf_status check_finite_vec(const char *path, const char *what, const double *x,
                                   size_t n)
{
    size_t i = cnf_first_nonfinite(x, n);
    if (i < n)
        return cnf_error(CNF_EDATA, "%s: %s entry %zu is %g; refusing to save a model that "
                         "could not be loaded", path, what, i, x[i]);
    return CNF_OK;
}

/* The root attributes format, version and dim shared by model and gradient
 * files. */
static cnf_status write_header(cnf_h5_writer *w, const char *format, int version, size_t D)
{
    cnf_status s = cnf_h5_writer_attr_string(w, "/", "format", format);
    if (s == CNF_OK)
        s = cnf_h5_writer_attr_int(w, "/", "version", version);
    if (s == CNF_OK)
        s = cnf_h5_writer_attr_int(w, "/", "dim", (long long)D);
    return s;
}

/* ---- The training state ------------------------------------------------ */

/* /training describes a cnf_train_state by these tables: its scalar fields
 * as attributes and its P-vectors as data sets, each written and read by
 * the one loop over its table, in table order. Besides them, n_params
 * (which marks a state and must match the flow), the optional step_hints
 * and the generator's raw bytes (rng_state) have code of their own. */
typedef enum {
    FIELD_COUNT,   /* size_t, stored as int64 >= 0 */
    FIELD_FLAG,    /* int 0/1, stored as int64 */
    FIELD_SEED,    /* unsigned long, stored as uint64 */
    FIELD_REAL     /* double, stored as float64 (+inf and NaN as they are) */
} state_field_kind;

typedef struct {
    const char *name;
    state_field_kind kind;
    size_t offset;
} state_field;

#define STATE_FIELD(name, kind) {#name, kind, offsetof(cnf_train_state, name)}
static const state_field state_fields[] = {
    STATE_FIELD(seed, FIELD_SEED),
    STATE_FIELD(iteration, FIELD_COUNT),
    STATE_FIELD(lr, FIELD_REAL),
    STATE_FIELD(has_best, FIELD_FLAG),
    STATE_FIELD(best_val_nll, FIELD_REAL),
    STATE_FIELD(best_iteration, FIELD_COUNT),
    STATE_FIELD(last_val_nll, FIELD_REAL),
    STATE_FIELD(bad_validations, FIELD_COUNT),
};

typedef struct {
    const char *path;
    size_t offset;       /* of the double * in cnf_train_state */
    int only_with_best;  /* present when has_best = 1 */
} state_vector;

#define STATE_VECTOR(name, with_best) \
    {"/training/" #name, offsetof(cnf_train_state, name), with_best}
static const state_vector state_vectors[] = {
    STATE_VECTOR(params, 0),
    STATE_VECTOR(adam_m, 0),
    STATE_VECTOR(adam_v, 0),
    STATE_VECTOR(best_params, 1),
};
#undef STATE_FIELD
#undef STATE_VECTOR

#define N_STATE_FIELDS (sizeof state_fields / sizeof state_fields[0])
#define N_STATE_VECTORS (sizeof state_vectors / sizeof state_vectors[0])

static double *state_vector_of(const cnf_train_state *st, const state_vector *v)
{
    return *(double *const *)((const char *)st + v->offset);
}

static cnf_status write_state_field(cnf_h5_writer *w, const cnf_train_state *st,
                                    const state_field *f)
{
    const char *g = "/training", *p = (const char *)st + f->offset;
    switch (f->kind) {
    case FIELD_COUNT:
        return cnf_h5_writer_attr_int(w, g, f->name, (long long)*(const size_t *)p);
    case FIELD_FLAG:
        return cnf_h5_writer_attr_int(w, g, f->name, *(const int *)p ? 1 : 0);
    case FIELD_SEED:
        return cnf_h5_writer_attr_uint(w, g, f->name,
                                       (unsigned long long)*(const unsigned long *)p);
    case FIELD_REAL:
        return cnf_h5_writer_attr_double(w, g, f->name, *(const double *)p);
    }
    return CNF_OK;
}

/* The state's part of /training (the group's configuration is the
 * caller's). */
static cnf_status write_state(cnf_h5_writer *w, const cnf_train_state *st)
{
    size_t P = st->n_params;
    cnf_status s = cnf_h5_writer_attr_int(w, "/training", "n_params", (long long)P);
    for (size_t i = 0; i < N_STATE_FIELDS && s == CNF_OK; i++)
        s = write_state_field(w, st, &state_fields[i]);
    for (size_t i = 0; i < N_STATE_VECTORS && s == CNF_OK; i++) {
        const state_vector *v = &state_vectors[i];
        if (!v->only_with_best || st->has_best)
            s = cnf_h5_writer_write_1d(w, v->path, state_vector_of(st, v), P);
    }
    if (s == CNF_OK && st->n_step_hints > 0)
        s = cnf_h5_writer_write_1d(w, "/training/step_hints", st->step_hints, st->n_step_hints);
    if (s == CNF_OK && st->rng) {
        size_t nbytes = 0;
        const void *bytes = cnf_train_state_rng_bytes(st, &nbytes);
        s = cnf_h5_writer_write_bytes(w, "/training/rng_state", bytes, nbytes);
        if (s == CNF_OK)
            s = cnf_h5_writer_attr_string(w, "/training/rng_state", "rng_type",
                                          cnf_train_state_rng_type(st));
    }
    return s;
}

static cnf_status write_training(cnf_h5_writer *w, const cnf_model_extra *extra)
{
    cnf_status s = CNF_OK;
    if (extra->n_config > 0)
        s = cnf_h5_writer_group(w, "/training/config");
    for (size_t i = 0; i < extra->n_config && s == CNF_OK; i++)
        s = cnf_h5_writer_attr_string(w, "/training/config", extra->config_keys[i],
                                      extra->config_values[i]);
    if (s == CNF_OK && extra->state)
        s = write_state(w, extra->state);
    return s;
}

cnf_status cnf_model_save(const char *path, const cnf_flow *flow,
                          const cnf_model_extra *extra)
{
    return cnf_model_save_params(path, flow, cnf_flow_params_const(flow), extra);
}

cnf_status cnf_model_save_params(const char *path, const cnf_flow *flow, const double *params,
                                 const cnf_model_extra *extra)
{
    size_t D = cnf_flow_dim(flow), K = cnf_flow_num_blocks(flow);
    size_t P = cnf_flow_num_params(flow);
    const double *mean = cnf_flow_mean_const(flow), *scale = cnf_flow_scale_const(flow);
    cnf_status s = check_finite_vec(path, "parameter", params, P);
    if (s == CNF_OK)
        s = check_finite_vec(path, "preprocessing mean", mean, D);
    if (s == CNF_OK)
        s = check_finite_vec(path, "preprocessing scale", scale, D);
    if (s != CNF_OK)
        return s;
    /* The loader refuses T <= 0: never write a file that cannot be read back. */
    for (size_t k = 0; k < K; k++) {
        double T = params[cnf_flow_T_index(flow, k)];
        if (!(T > 0.0) || !isfinite(T))
            return cnf_error(CNF_EDATA, "%s: block %zu has end time T = %g; T must be positive "
                             "and finite (nothing written)", path, k, T);
    }
    if (extra && extra->state && extra->state->n_params != P)
        return cnf_error(CNF_EDIM, "%s: training state has %zu parameters, the flow %zu", path,
                         extra->state->n_params, P);
    if (extra && extra->state && extra->state->n_step_hints != 0
        && extra->state->n_step_hints != 2 * K)
        return cnf_error(CNF_EDIM, "%s: training state has %zu step hints, the flow's %zu "
                         "block(s) keep %zu (nothing written)", path,
                         extra->state->n_step_hints, K, 2 * K);

    /* Only a whitened model needs version 2: a standardised one stays at
     * version 1, which older builds read. */
    const double *chol = cnf_flow_whitening_const(flow);
    cnf_h5_writer *w = cnf_h5_writer_open(path);
    if (!w)
        return CNF_EIO;
    s = write_header(w, CNF_MODEL_FORMAT, chol ? 2 : 1, D);
    if (s == CNF_OK)
        s = cnf_h5_writer_write_1d(w, "/preprocess/mean", mean, D);
    if (s == CNF_OK)
        s = cnf_h5_writer_write_1d(w, "/preprocess/scale", scale, D);
    if (s == CNF_OK && chol)
        s = cnf_h5_writer_write_2d(w, "/preprocess/chol", chol, D, D);
    char bpath[64];
    for (size_t k = 0; k < K && s == CNF_OK; k++) {
        const cnf_net_config *cfg = cnf_net_get_config(cnf_flow_block_net(flow, k));
        block_path(bpath, sizeof bpath, "", k);
        s = cnf_h5_writer_attr_double(w, bpath, "T", params[cnf_flow_T_index(flow, k)]);
        if (s == CNF_OK)
            s = cnf_h5_writer_attr_string(w, bpath, "layer_type",
                                          cnf_layer_type_name(cfg->layer_type));
        if (s == CNF_OK)
            s = cnf_h5_writer_attr_string(w, bpath, "activation",
                                          cnf_activation_name(cfg->activation));
    }
    if (s == CNF_OK)
        s = write_layers(w, "", flow, params, 0);
    if (s == CNF_OK && extra)
        s = write_training(w, extra);
    if (s != CNF_OK) {
        cnf_h5_writer_abort(w);
        return s;
    }
    return cnf_h5_writer_commit(w);
}

/* ---- Loading ------------------------------------------------------------ */

/* Number of links in the group at path (-1 if it is missing or not a
 * group). */
static long long group_size(hid_t fid, const char *path)
{
    if (!cnf_h5_exists(fid, path))
        return -1;
    hid_t g = H5Gopen2(fid, path, H5P_DEFAULT);
    if (g < 0)
        return -1;
    H5G_info_t info;
    herr_t rc = H5Gget_info(g, &info);
    H5Gclose(g);
    return rc < 0 ? -1 : (long long)info.nlinks;
}

/* Check that path holds a float data set of the given rank and shape. */
static cnf_status expect_shape(hid_t fid, const char *file, const char *path, int rank,
                               size_t rows, size_t cols)
{
    int r = -1;
    hsize_t d[2] = {0, 0};
    cnf_status s = cnf_h5_float_shape(fid, file, path, &r, d);
    if (s != CNF_OK)
        return s;
    if (rank == 0 && r == 0)
        return CNF_OK;
    if (r != rank || d[0] != rows || (rank == 2 && d[1] != cols)) {
        char got[64], want[64];
        if (r == 0)
            snprintf(got, sizeof got, "a scalar");
        else if (r == 1)
            snprintf(got, sizeof got, "shape (%llu)", (unsigned long long)d[0]);
        else if (r == 2)
            snprintf(got, sizeof got, "shape (%llu, %llu)", (unsigned long long)d[0],
                     (unsigned long long)d[1]);
        else
            snprintf(got, sizeof got, "rank %d", r);
        if (rank == 0)
            snprintf(want, sizeof want, "a scalar");
        else if (rank == 1)
            snprintf(want, sizeof want, "(%zu)", rows);
        else
            snprintf(want, sizeof want, "(%zu, %zu)", rows, cols);
        return cnf_error(CNF_EFORMAT, "%s:%s has %s, expected %s", file, path, got, want);
    }
    return CNF_OK;
}

/* Read a data set of the given shape into buf and refuse non-finite
 * values. */
static cnf_status read_checked(hid_t fid, const char *file, const char *path, int rank,
                               size_t rows, size_t cols, double *buf, int finite)
{
    cnf_status s = expect_shape(fid, file, path, rank, rows, cols);
    size_t n = rank == 0 ? 1 : rank == 1 ? rows : rows * cols;
    if (s == CNF_OK)
        s = cnf_h5_read_doubles(fid, file, path, buf, n);
    size_t i = finite && s == CNF_OK ? cnf_first_nonfinite(buf, n) : n;
    if (i < n)
        s = cnf_error(CNF_EDATA, "%s:%s entry %zu is %g (parameters must be finite)", file, path,
                      i, buf[i]);
    return s;
}

/* The string attribute name of the object at path (opened as obj) into
 * buf, or CNF_EFORMAT saying it is missing or unreadable. */
static cnf_status read_name_attr(hid_t obj, const char *file, const char *path,
                                 const char *name, char *buf, size_t n)
{
    int rc = cnf_h5_attr_string(obj, name, buf, n);
    if (rc != 0)
        return cnf_error(CNF_EFORMAT, "%s:%s: %s string attribute %s", file, path,
                         rc > 0 ? "missing" : "unreadable", name);
    return CNF_OK;
}

/* Read the architecture of block k into cfg and its end time into *T. */
static cnf_status read_block_arch(hid_t fid, const char *file, size_t k, size_t D,
                                  cnf_net_config *cfg, double *T)
{
    char path[128], buf[64];
    block_path(path, sizeof path, "", k);
    if (!cnf_h5_exists(fid, path))
        return cnf_error(CNF_EFORMAT, "%s: missing group %s", file, path);
    hid_t g = H5Gopen2(fid, path, H5P_DEFAULT);
    if (g < 0)
        return cnf_error(CNF_EFORMAT, "%s:%s is not a group", file, path);
    cnf_status s = CNF_OK;
    int rc = cnf_h5_attr_double(g, "T", T);
    if (rc != 0)
        s = cnf_error(CNF_EFORMAT, "%s:%s: %s attribute T (the end time)", file, path,
                      rc > 0 ? "missing" : "unreadable");
    else if (!(*T > 0.0) || !isfinite(*T))
        s = cnf_error(CNF_EDATA, "%s:%s: end time T = %g must be positive and finite", file, path,
                      *T);
    memset(cfg, 0, sizeof *cfg);
    cfg->dim = D;
    if (s == CNF_OK)
        s = read_name_attr(g, file, path, "layer_type", buf, sizeof buf);
    if (s == CNF_OK && cnf_layer_type_from_name(buf, &cfg->layer_type) != CNF_OK)
        s = cnf_error(CNF_EFORMAT, "%s:%s: layer_type: %s", file, path, cnf_last_error());
    if (s == CNF_OK)
        s = read_name_attr(g, file, path, "activation", buf, sizeof buf);
    if (s == CNF_OK && cnf_activation_from_name(buf, &cfg->activation) != CNF_OK)
        s = cnf_error(CNF_EFORMAT, "%s:%s: activation: %s", file, path, cnf_last_error());
    H5Gclose(g);
    if (s != CNF_OK)
        return s;

    char lpath[160];
    snprintf(lpath, sizeof lpath, "%s/layers", path);
    long long L = group_size(fid, lpath);
    if (L < 1)
        return cnf_error(CNF_EFORMAT, "%s: %s %s", file, lpath,
                         L < 0 ? "is missing" : "holds no layers");
    if ((size_t)L - 1 > CNF_NET_MAX_HIDDEN)
        return cnf_error(CNF_EFORMAT, "%s:%s holds %lld layers; this build supports at most %d",
                         file, lpath, L, CNF_NET_MAX_HIDDEN + 1);
    int concat = cfg->layer_type == CNF_LAYER_CONCAT;
    size_t in = D;
    for (size_t j = 0; j < (size_t)L; j++) {
        char wpath[192], gpath[192];
        snprintf(gpath, sizeof gpath, "%s/%zu", lpath, j);
        if (!cnf_h5_exists(fid, gpath))
            return cnf_error(CNF_EFORMAT, "%s: missing group %s (%s holds %lld entries, "
                             "expected layers 0..%lld)", file, gpath, lpath, L, L - 1);
        layer_path(wpath, sizeof wpath, "", k, j, "W");
        int r = -1;
        hsize_t d[2] = {0, 0};
        s = cnf_h5_float_shape(fid, file, wpath, &r, d);
        if (s != CNF_OK)
            return s;
        if (r != 2)
            return cnf_error(CNF_EFORMAT, "%s:%s has rank %d, expected a 2-D (out, in%s) matrix",
                             file, wpath, r, concat ? " + 1" : "");
        if (d[1] != in + (size_t)concat)
            return cnf_error(CNF_EFORMAT,
                             "%s:%s has shape (%llu, %llu), but its input width is %zu%s so it "
                             "needs %zu columns (layer_type %s)",
                             file, wpath, (unsigned long long)d[0], (unsigned long long)d[1], in,
                             j == 0 ? " (the data dimension)" : " (the previous layer's output)",
                             in + (size_t)concat, cnf_layer_type_name(cfg->layer_type));
        if (d[0] == 0)
            return cnf_error(CNF_EFORMAT, "%s:%s has zero rows", file, wpath);
        if (j + 1 == (size_t)L && d[0] != D)
            return cnf_error(CNF_EFORMAT,
                             "%s:%s (the last layer) has %llu rows, expected the data dimension "
                             "%zu", file, wpath, (unsigned long long)d[0], D);
        if (cfg->layer_type != CNF_LAYER_CONCATSQUASH) {
            /* g_w etc. in a plain layer mean the layer_type attribute and
             * the data disagree; reading on would silently drop them */
            static const char *const cs[3] = {"g_w", "g_b", "c_w"};
            for (int m = 0; m < 3; m++) {
                char xpath[192];
                layer_path(xpath, sizeof xpath, "", k, j, cs[m]);
                if (cnf_h5_exists(fid, xpath))
                    return cnf_error(CNF_EFORMAT, "%s:%s exists, but %s says layer_type = %s "
                                     "(only concatsquash layers have %s)", file, xpath, path,
                                     cnf_layer_type_name(cfg->layer_type), cs[m]);
            }
        }
        if (j + 1 < (size_t)L)
            cfg->hidden[j] = (size_t)d[0];
        in = (size_t)d[0];
    }
    cfg->n_hidden = (size_t)L - 1;
    return CNF_OK;
}

typedef struct {
    hid_t fid;
    const char *file;
    double *vec;   /* P */
    int finite;
} read_ctx;

static cnf_status read_array(const char *path, const layer_array *a, void *ctx)
{
    const read_ctx *c = ctx;
    return read_checked(c->fid, c->file, path, a->rank, a->rows, a->cols, c->vec + a->index,
                        c->finite);
}

/* Read every layer array of vec (P, the flow's layout) from under prefix;
 * with with_T the scalar data sets <prefix>/blocks/<k>/T too. */
static cnf_status read_layers(hid_t fid, const char *file, const char *prefix,
                              const cnf_flow *flow, double *vec, int with_T, int finite)
{
    read_ctx c = {fid, file, vec, finite};
    return walk_arrays(flow, prefix, with_T, read_array, &c);
}

typedef struct {
    cnf_model_extra *extra;
    cnf_status status;   /* the first failure; the iteration stops there */
    const char *file;
} config_ctx;

/* One key of /training/config: a string, or a number written as text. An
 * attribute that is neither is damage (cnf writes only these two), and is
 * refused rather than dropped: a resumed run would silently fall back to a
 * default for that key. */
static herr_t collect_config(hid_t obj, const char *name, const H5A_info_t *info, void *ctx)
{
    (void)info;
    config_ctx *c = ctx;
    char value[4096];
    if (cnf_h5_attr_string(obj, name, value, sizeof value) != 0) {
        double d;
        if (cnf_h5_attr_double(obj, name, &d) != 0) {
            c->status = cnf_error(CNF_EFORMAT, "%s:/training/config: attribute '%s' is neither "
                                  "a string (of at most %zu bytes) nor a number", c->file, name,
                                  sizeof value - 1);
            return -1;
        }
        snprintf(value, sizeof value, "%.17g", d);
    }
    c->status = cnf_model_extra_set(c->extra, name, value);
    if (c->status != CNF_OK)
        c->status = cnf_error(c->status, "%s:/training/config: %s", c->file, cnf_last_error());
    return c->status == CNF_OK ? 0 : -1;
}

/* The generator's state (/training/rng_state, uint8 bytes with attribute
 * rng_type) into st. */
static cnf_status read_rng_state(hid_t fid, const char *file, cnf_train_state *st)
{
    const char *rp = "/training/rng_state";
    hid_t ds = cnf_h5_exists(fid, rp) ? H5Dopen2(fid, rp, H5P_DEFAULT) : H5I_INVALID_HID;
    if (ds < 0)
        return cnf_error(CNF_EFORMAT, "%s: missing data set %s", file, rp);
    cnf_status s;
    char type[64];
    hid_t sp = H5Dget_space(ds);
    hid_t ft = H5Dget_type(ds);
    hssize_t nb = H5Sget_simple_extent_npoints(sp);
    int trc = cnf_h5_attr_string(ds, "rng_type", type, sizeof type);
    size_t want = 0;
    (void)cnf_train_state_rng_bytes(st, &want);
    unsigned char *bytes = NULL;
    if (trc != 0)
        s = cnf_error(CNF_EFORMAT, "%s:%s: %s string attribute rng_type", file, rp,
                      trc > 0 ? "missing" : "unreadable");
    else if (strcmp(type, cnf_train_state_rng_type(st)) != 0)
        s = cnf_error(CNF_EFORMAT, "%s:%s: random number generator '%s'; this build "
                      "resumes '%s' only", file, rp, type, cnf_train_state_rng_type(st));
    else if (H5Tget_class(ft) != H5T_INTEGER || H5Tget_size(ft) != 1 || nb < 0)
        s = cnf_error(CNF_EFORMAT, "%s:%s must be a uint8 vector", file, rp);
    else if ((size_t)nb != want)   /* before allocating what the file claims */
        s = cnf_error(CNF_EFORMAT, "%s:%s holds %lld bytes; the state of '%s' is %zu", file, rp,
                      (long long)nb, type, want);
    else if (!(bytes = malloc((size_t)nb + 1)))
        s = cnf_error(CNF_ENOMEM, "%s:%s: out of memory for %lld bytes", file, rp, (long long)nb);
    else if (nb > 0 && H5Dread(ds, H5T_NATIVE_UCHAR, H5S_ALL, H5S_ALL, H5P_DEFAULT, bytes) < 0)
        s = cnf_error(CNF_EIO, "%s:%s: read failed", file, rp);
    else
        s = cnf_train_state_set_rng_bytes(st, bytes, (size_t)nb);
    if (s != CNF_OK && trc == 0 && bytes)
        s = cnf_error(s, "%s:%s: %s", file, rp, cnf_last_error());
    free(bytes);
    H5Tclose(ft);
    H5Sclose(sp);
    H5Dclose(ds);
    return s;
}

/* One attribute of /training (group g) into its field of st. */
static cnf_status read_state_field(hid_t g, const char *file, cnf_train_state *st,
                                   const state_field *f)
{
    char *p = (char *)st + f->offset;
    long long ll = 0;
    unsigned long long ull = 0;
    int rc = f->kind == FIELD_REAL   ? cnf_h5_attr_double(g, f->name, (double *)p)
             : f->kind == FIELD_SEED ? cnf_h5_attr_ullong(g, f->name, &ull)
                                     : cnf_h5_attr_llong(g, f->name, &ll);
    if (rc != 0)
        return cnf_error(CNF_EFORMAT, "%s:/training: %s attribute %s", file,
                         rc > 0 ? "missing" : "unreadable", f->name);
    if (f->kind == FIELD_COUNT && ll < 0)
        return cnf_error(CNF_EFORMAT, "%s:/training: negative counter %s = %lld", file, f->name,
                         ll);
    if (f->kind == FIELD_COUNT)
        *(size_t *)p = (size_t)ll;
    else if (f->kind == FIELD_FLAG)
        *(int *)p = ll != 0;
    else if (f->kind == FIELD_SEED)
        *(unsigned long *)p = (unsigned long)ull;
    return CNF_OK;
}

/* /training/step_hints (n of them) into st, validated by the state. */
static cnf_status read_step_hints(hid_t fid, const char *file, size_t n, cnf_train_state *st)
{
    const char *path = "/training/step_hints";
    double *h = malloc((n ? n : 1) * sizeof *h);
    if (!h)
        return cnf_error(CNF_ENOMEM, "%s:%s: out of memory", file, path);
    cnf_status s = read_checked(fid, file, path, 1, n, 1, h, 1);
    if (s == CNF_OK && cnf_train_state_set_step_hints(st, h, n) != CNF_OK)
        s = cnf_error(CNF_EFORMAT, "%s:%s: %s", file, path, cnf_last_error());
    free(h);
    return s;
}

static cnf_status read_training(hid_t fid, const char *file, const cnf_flow *flow,
                                cnf_model_extra *extra)
{
    if (!cnf_h5_exists(fid, "/training"))
        return CNF_OK;
    if (cnf_h5_exists(fid, "/training/config")) {
        hid_t g = H5Oopen(fid, "/training/config", H5P_DEFAULT);
        if (g < 0)
            return cnf_error(CNF_EFORMAT, "%s:/training/config cannot be opened", file);
        hsize_t idx = 0;
        config_ctx c = {extra, CNF_OK, file};
        herr_t rc = H5Aiterate2(g, H5_INDEX_CRT_ORDER, H5_ITER_INC, &idx, collect_config, &c);
        if (rc < 0 && c.status == CNF_OK) {   /* no creation-order index: name order */
            idx = 0;
            rc = H5Aiterate2(g, H5_INDEX_NAME, H5_ITER_INC, &idx, collect_config, &c);
        }
        H5Oclose(g);
        if (c.status != CNF_OK)
            return c.status;
        if (rc < 0)
            return cnf_error(CNF_EFORMAT, "%s:/training/config: cannot read its attributes", file);
    }
    hid_t g = H5Oopen(fid, "/training", H5P_DEFAULT);
    if (g < 0)
        return cnf_error(CNF_EFORMAT, "%s:/training cannot be opened", file);
    long long n_params;
    int rc = cnf_h5_attr_llong(g, "n_params", &n_params);
    if (rc > 0) {   /* a configuration without a state */
        H5Oclose(g);
        return CNF_OK;
    }
    size_t P = cnf_flow_num_params(flow);
    cnf_status s = CNF_OK;
    cnf_train_state *st = NULL;
    if (rc < 0 || n_params != (long long)P)
        s = cnf_error(CNF_EFORMAT, "%s:/training: n_params = %lld, but the model has %zu "
                      "parameters", file, rc < 0 ? -1LL : n_params, P);
    /* the seed is read into the state below; the generator's state comes
     * from rng_state */
    else if (!(st = cnf_train_state_alloc(P, 0)))
        s = cnf_error(CNF_ENOMEM, "%s:/training: no memory for the training state (%zu "
                      "parameters)", file, P);
    for (size_t i = 0; i < N_STATE_FIELDS && s == CNF_OK; i++)
        s = read_state_field(g, file, st, &state_fields[i]);
    H5Oclose(g);
    for (size_t i = 0; i < N_STATE_VECTORS && s == CNF_OK; i++) {
        const state_vector *v = &state_vectors[i];
        if (!v->only_with_best || st->has_best)
            s = read_checked(fid, file, v->path, 1, P, 1, state_vector_of(st, v), 1);
    }
    if (s == CNF_OK)
        s = read_rng_state(fid, file, st);
    /* optional: files written before warm starts have none (the run then
     * resumes with automatic first steps) */
    if (s == CNF_OK && cnf_h5_exists(fid, "/training/step_hints"))
        s = read_step_hints(fid, file, 2 * cnf_flow_num_blocks(flow), st);
    if (s != CNF_OK) {
        cnf_train_state_free(st);
        return s;
    }
    extra->state = st;
    return CNF_OK;
}

/* Version 2 (whitening) has /preprocess/chol, D x D; version 1 must not (an
 * older reader would ignore it and standardise only). */
static cnf_status check_chol_presence(hid_t fid, const char *path, long long version, size_t D)
{
    const char *cp = "/preprocess/chol";
    int has = cnf_h5_exists(fid, cp);
    if (version >= 2 && !has)
        return cnf_error(CNF_EFORMAT, "%s: missing data set %s (a version-%lld model is whitened "
                         "and needs its D x D factor)", path, cp, version);
    if (version < 2 && has)
        return cnf_error(CNF_EFORMAT, "%s:%s exists, but the file says version %lld (whitened "
                         "models are version 2)", path, cp, version);
    return has ? expect_shape(fid, path, cp, 2, D, D) : CNF_OK;
}

/* The whitening factor L of a version-2 file into flow, validated as
 * cnf_flow_set_whitening does (CNF_EDATA naming the entry). */
static cnf_status read_chol(hid_t fid, const char *path, cnf_flow *flow)
{
    size_t D = cnf_flow_dim(flow);
    size_t bytes;
    double *L = cnf_size_mul3(D, D, sizeof *L, &bytes) ? NULL : malloc(bytes);
    if (!L)
        return cnf_error(CNF_ENOMEM, "%s:/preprocess/chol: out of memory", path);
    /* finiteness too is left to set_whitening, whose message names (i, j) */
    cnf_status s = read_checked(fid, path, "/preprocess/chol", 2, D, D, L, 0);
    if (s == CNF_OK) {
        s = cnf_flow_set_whitening(flow, L);
        if (s != CNF_OK)
            s = cnf_error(s, "%s:/preprocess/chol: %s", path, cnf_last_error());
    }
    free(L);
    return s;
}

static cnf_status load_open(hid_t fid, const char *path, cnf_flow **flow_out,
                            cnf_model_extra *extra)
{
    char fmt[128];
    int rc = cnf_h5_attr_string(fid, "format", fmt, sizeof fmt);
    if (rc != 0)
        return cnf_error(CNF_EFORMAT, "'%s' is not a cnf model file (%s root attribute format)",
                         path, rc > 0 ? "no" : "unreadable");
    if (strcmp(fmt, CNF_MODEL_FORMAT) != 0)
        return cnf_error(CNF_EFORMAT, "'%s' is not a cnf model file (format = \"%s\", expected "
                         "\"%s\")", path, fmt, CNF_MODEL_FORMAT);
    long long version, dim;
    rc = cnf_h5_attr_llong(fid, "version", &version);
    if (rc != 0)
        return cnf_error(CNF_EFORMAT, "%s: %s integer root attribute version", path,
                         rc > 0 ? "missing" : "unreadable");
    if (version > CNF_MODEL_VERSION)
        return cnf_error(CNF_EFORMAT, "%s: model file version %lld (written by a newer cnf? "
                         "this build reads versions 1 to %d)", path, version, CNF_MODEL_VERSION);
    if (version < 1)
        return cnf_error(CNF_EFORMAT, "%s: model file version %lld is not a version (this "
                         "build reads versions 1 to %d)", path, version, CNF_MODEL_VERSION);
    rc = cnf_h5_attr_llong(fid, "dim", &dim);
    if (rc != 0)
        return cnf_error(CNF_EFORMAT, "%s: %s integer root attribute dim", path,
                         rc > 0 ? "missing" : "unreadable");
    if (dim < 1)
        return cnf_error(CNF_EFORMAT, "%s: dim = %lld must be at least 1", path, dim);
    size_t D = (size_t)dim;

    long long K = group_size(fid, "/blocks");
    if (K < 1)
        return cnf_error(CNF_EFORMAT, "%s: %s", path,
                         K < 0 ? "missing group /blocks" : "group /blocks holds no blocks");
    cnf_status s = expect_shape(fid, path, "/preprocess/mean", 1, D, 1);
    if (s == CNF_OK)
        s = expect_shape(fid, path, "/preprocess/scale", 1, D, 1);
    if (s == CNF_OK)
        s = check_chol_presence(fid, path, version, D);
    if (s != CNF_OK)
        return s;

    cnf_net_config *cfg = calloc((size_t)K, sizeof *cfg);
    double *T = calloc((size_t)K, sizeof *T);
    if (!cfg || !T) {
        free(cfg);
        free(T);
        return cnf_error(CNF_ENOMEM, "out of memory");
    }
    for (size_t k = 0; k < (size_t)K && s == CNF_OK; k++)
        s = read_block_arch(fid, path, k, D, &cfg[k], &T[k]);
    cnf_flow *flow = NULL;
    if (s == CNF_OK) {
        flow = cnf_flow_alloc(D, (size_t)K, cfg, T);
        if (!flow)
            s = cnf_error(CNF_EFORMAT, "%s: %s", path, cnf_last_error());
    }
    free(cfg);
    free(T);
    if (s == CNF_OK)
        s = read_checked(fid, path, "/preprocess/mean", 1, D, 1, cnf_flow_mean(flow), 1);
    if (s == CNF_OK)
        s = read_checked(fid, path, "/preprocess/scale", 1, D, 1, cnf_flow_scale(flow), 1);
    for (size_t i = 0; s == CNF_OK && i < D; i++)
        if (!(cnf_flow_scale(flow)[i] > 0.0))
            s = cnf_error(CNF_EDATA, "%s:/preprocess/scale entry %zu is %g; scales must be "
                          "positive", path, i, cnf_flow_scale(flow)[i]);
    if (s == CNF_OK && version >= 2)
        s = read_chol(fid, path, flow);
    if (s == CNF_OK)
        s = read_layers(fid, path, "", flow, cnf_flow_params(flow), 0, 1);
    if (s == CNF_OK && extra)
        s = read_training(fid, path, flow, extra);
    if (s != CNF_OK) {
        cnf_flow_free(flow);
        return s;
    }
    *flow_out = flow;
    return CNF_OK;
}

cnf_status cnf_model_load(const char *path, cnf_flow **flow, cnf_model_extra *extra)
{
    *flow = NULL;
    if (extra)
        cnf_model_extra_init(extra);
    cnf_h5_quiet q;
    cnf_h5_quiet_begin(&q);
    hid_t fid;
    cnf_status s = cnf_h5_open_read(path, &fid);
    if (s == CNF_OK) {
        s = load_open(fid, path, flow, extra);
        H5Fclose(fid);
    }
    cnf_h5_quiet_end(&q);
    if (s != CNF_OK && extra)
        cnf_model_extra_clear(extra);
    return s;
}

/* ---- Gradients ---------------------------------------------------------- */

cnf_status cnf_h5_writer_write_grad(cnf_h5_writer *w, const char *prefix, const cnf_flow *flow,
                              const double *grad)
{
    return write_layers(w, prefix, flow, grad, 1);
}

cnf_status cnf_model_write_grad(const char *path, const cnf_flow *flow, const double *grad)
{
    cnf_h5_writer *w = cnf_h5_writer_open(path);
    if (!w)
        return CNF_EIO;
    cnf_status s = write_header(w, CNF_GRAD_FORMAT, CNF_GRAD_VERSION, cnf_flow_dim(flow));
    if (s == CNF_OK)
        s = cnf_h5_writer_write_grad(w, "", flow, grad);
    if (s != CNF_OK) {
        cnf_h5_writer_abort(w);
        return s;
    }
    return cnf_h5_writer_commit(w);
}

cnf_status cnf_model_read_grad(const char *path, const char *prefix, const cnf_flow *flow,
                               double *grad)
{
    cnf_h5_quiet q;
    cnf_h5_quiet_begin(&q);
    hid_t fid;
    cnf_status s = cnf_h5_open_read(path, &fid);
    if (s == CNF_OK) {
        s = read_layers(fid, path, prefix, flow, grad, 1, 0);
        H5Fclose(fid);
    }
    cnf_h5_quiet_end(&q);
    return s;
}
