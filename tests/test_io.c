/* test_io.c — HDF5 data sets, the atomic writer, model and gradient files:
 * round trips must be bit-identical, every bad input must give its own clear
 * error, and a failed write must leave an existing file untouched and no
 * temporary file behind. Fixtures are made in a temporary directory. */
#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gsl/gsl_rng.h>
#include <hdf5.h>

#include "cnf/data.h"
#include "cnf/file.h"
#include "cnf/flow.h"
#include "cnf/io.h"
#include "cnf/train.h"
#include "testutil.h"

static char tmpdir[256];

static void setup(void)
{
    tu_tmpdir_make(tmpdir, sizeof tmpdir, "cnf_test_io");
}

static void teardown(void)
{
    tu_tmpdir_remove(tmpdir);
}

static const char *tpath(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", tmpdir, name);
    return buf;
}

/* The fixed-length string attribute name of obj (as cnf writes them: in
 * the object header, which the newest format checksums) into buf. */
static void read_fixed_string(hid_t obj, const char *name, char *buf, size_t n)
{
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    ck_assert(a >= 0);
    hid_t t = H5Aget_type(a);
    ck_assert_int_eq(H5Tget_class(t), H5T_STRING);
    ck_assert_int_eq(H5Tis_variable_str(t), 0);
    ck_assert_int_eq(H5Tget_cset(t), H5T_CSET_UTF8);
    size_t sz = H5Tget_size(t);
    ck_assert_uint_lt(sz, n);
    hid_t mt = H5Tcopy(H5T_C_S1);
    H5Tset_size(mt, sz + 1);
    H5Tset_strpad(mt, H5T_STR_NULLTERM);
    H5Tset_cset(mt, H5T_CSET_UTF8);
    ck_assert(H5Aread(a, mt, buf) >= 0);
    H5Tclose(mt);
    H5Tclose(t);
    H5Aclose(a);
}

/* The file is in HDF5's newest format (superblock version 3 in HDF5 1.10:
 * checksummed metadata) and the data set at path carries the Fletcher-32
 * filter. */
static void assert_checksummed(hid_t fid, const char *path)
{
    H5F_info2_t info;
    ck_assert(H5Fget_info2(fid, &info) >= 0);
    ck_assert_uint_ge(info.super.version, 2);
    hid_t ds = H5Dopen2(fid, path, H5P_DEFAULT);
    ck_assert(ds >= 0);
    hid_t dcpl = H5Dget_create_plist(ds);
    int fletcher = 0;
    for (int i = 0; i < H5Pget_nfilters(dcpl); i++) {
        unsigned flags;
        size_t nelm = 0;
        if (H5Pget_filter2(dcpl, (unsigned)i, &flags, &nelm, NULL, 0, NULL, NULL)
            == H5Z_FILTER_FLETCHER32)
            fletcher = 1;
    }
    ck_assert_msg(fletcher, "%s has no Fletcher-32 checksum", path);
    H5Pclose(dcpl);
    H5Dclose(ds);
}

/* Number of temporary files in tmpdir (cnf/file.h's names) */
static int count_temp_files(void)
{
    int n = 0;
    DIR *d = opendir(tmpdir);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strstr(e->d_name, ".cnf-tmp."))
            n++;
    closedir(d);
    return n;
}

/* Whole file into a malloc'd buffer. */
static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)len + 1);
    ck_assert_uint_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return buf;
}

/* A raw HDF5 fixture: one data set of the given rank/shape and memory type
 * filled with 0.5 * index (+ optional NaN at index nan_at). */
static void make_dataset(const char *file, const char *path, int rank, const hsize_t *dims,
                         hid_t filetype, long nan_at)
{
    hid_t fid = H5Fcreate(file, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    ck_assert(fid >= 0);
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hsize_t n = 1;
    for (int i = 0; i < rank; i++)
        n *= dims[i];
    double *buf = malloc((n ? n : 1) * sizeof *buf);
    for (hsize_t i = 0; i < n; i++)
        buf[i] = 0.5 * (double)i + 0.1;
    if (nan_at >= 0)
        buf[nan_at] = NAN;
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    hid_t ds = H5Dcreate2(fid, path, filetype, sp, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    ck_assert(ds >= 0);
    if (n)
        ck_assert(H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    H5Dclose(ds);
    H5Pclose(lcpl);
    H5Sclose(sp);
    H5Fclose(fid);
    free(buf);
}

/* A random flow of K blocks with every parameter, T, mean and scale set. */
static cnf_flow *random_flow(size_t D, size_t K, cnf_layer_type type, cnf_activation act,
                             const char *hidden, unsigned long seed)
{
    double T[4];
    ck_assert_uint_le(K, 4);
    for (size_t k = 0; k < K; k++)
        T[k] = 0.3 + 0.7 * (double)k + 1e-3 * (double)seed;
    gsl_rng *r = tu_rng(seed);
    cnf_flow *flow = tu_flow(D, K, hidden, type, act, T, r);
    for (size_t i = 0; i < D; i++) {
        cnf_flow_mean(flow)[i] = gsl_rng_uniform(r) - 0.5;
        cnf_flow_scale(flow)[i] = 0.5 + gsl_rng_uniform(r);
    }
    gsl_rng_free(r);
    return flow;
}

static void assert_same_flow(const cnf_flow *a, const cnf_flow *b)
{
    size_t D = cnf_flow_dim(a), K = cnf_flow_num_blocks(a), P = cnf_flow_num_params(a);
    ck_assert_uint_eq(cnf_flow_dim(b), D);
    ck_assert_uint_eq(cnf_flow_num_blocks(b), K);
    ck_assert_uint_eq(cnf_flow_num_params(b), P);
    for (size_t k = 0; k < K; k++) {
        const cnf_net_config *ca = cnf_net_get_config(cnf_flow_block_net(a, k));
        const cnf_net_config *cb = cnf_net_get_config(cnf_flow_block_net(b, k));
        ck_assert_uint_eq(ca->dim, cb->dim);
        ck_assert_uint_eq(ca->n_hidden, cb->n_hidden);
        for (size_t j = 0; j < ca->n_hidden; j++)
            ck_assert_uint_eq(ca->hidden[j], cb->hidden[j]);
        ck_assert_int_eq(ca->layer_type, cb->layer_type);
        ck_assert_int_eq(ca->activation, cb->activation);
        ck_assert_uint_eq(cnf_flow_block_offset(a, k), cnf_flow_block_offset(b, k));
        ck_assert_uint_eq(cnf_flow_T_index(a, k), cnf_flow_T_index(b, k));
    }
    /* bit for bit: parameters (end times included), mean, scale */
    ck_assert_int_eq(memcmp(cnf_flow_params_const(a), cnf_flow_params_const(b), P * sizeof(double)), 0);
    ck_assert_int_eq(memcmp(cnf_flow_mean_const(a), cnf_flow_mean_const(b), D * sizeof(double)), 0);
    ck_assert_int_eq(memcmp(cnf_flow_scale_const(a), cnf_flow_scale_const(b), D * sizeof(double)), 0);
}

/* ---- Model round trips -------------------------------------------------- */

static void roundtrip(cnf_layer_type type, cnf_activation act, const char *hidden, size_t D,
                      size_t K)
{
    char path[512];
    tpath(path, sizeof path, "model.h5");
    cnf_flow *flow = random_flow(D, K, type, act, hidden, 7 + (unsigned long)type);
    ck_assert_int_eq(cnf_model_save(path, flow, NULL), CNF_OK);
    ck_assert_int_eq(count_temp_files(), 0);
    cnf_flow *back = NULL;
    cnf_model_extra ex;
    cnf_status s = cnf_model_load(path, &back, &ex);
    ck_assert_msg(s == CNF_OK, "load: %s", cnf_last_error());
    assert_same_flow(flow, back);
    ck_assert_ptr_null(ex.state);          /* no /training in this file */
    ck_assert_uint_eq(ex.n_config, 0);
    cnf_model_extra_clear(&ex);
    cnf_flow_free(back);
    cnf_flow_free(flow);
}

START_TEST(test_roundtrip_concatsquash)
{
    roundtrip(CNF_LAYER_CONCATSQUASH, CNF_ACT_TANH, "5-7", 3, 2);
}
END_TEST

START_TEST(test_roundtrip_concat)
{
    roundtrip(CNF_LAYER_CONCAT, CNF_ACT_SOFTPLUS, "6-4-3", 2, 3);
}
END_TEST

START_TEST(test_roundtrip_ignore)
{
    roundtrip(CNF_LAYER_IGNORE, CNF_ACT_ELU, "9", 4, 1);
}
END_TEST

START_TEST(test_roundtrip_no_hidden)
{
    roundtrip(CNF_LAYER_CONCATSQUASH, CNF_ACT_SWISH, "", 2, 1);
}
END_TEST

/* The layout of docs/formats.md, read back with the raw HDF5 API. */
START_TEST(test_layout_matches_design)
{
    char path[512];
    tpath(path, sizeof path, "layout.h5");
    cnf_flow *flow = random_flow(3, 2, CNF_LAYER_CONCAT, CNF_ACT_TANH, "8", 3);
    ck_assert_int_eq(cnf_model_save(path, flow, NULL), CNF_OK);
    hid_t fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    ck_assert(fid >= 0);
    /* format: a fixed-length UTF-8 string */
    char fmt[64];
    read_fixed_string(fid, "format", fmt, sizeof fmt);
    ck_assert_str_eq(fmt, "cnf-model");
    assert_checksummed(fid, "/blocks/1/layers/0/W");
    long long v = 0;
    hid_t a = H5Aopen(fid, "version", H5P_DEFAULT);
    hid_t t = H5Aget_type(a);
    ck_assert_int_eq(H5Tget_class(t), H5T_INTEGER);
    H5Aread(a, H5T_NATIVE_LLONG, &v);
    ck_assert_int_eq(v, 1);
    H5Tclose(t);
    H5Aclose(a);
    a = H5Aopen(fid, "dim", H5P_DEFAULT);
    H5Aread(a, H5T_NATIVE_LLONG, &v);
    ck_assert_int_eq(v, 3);
    H5Aclose(a);
    /* concat: W of layer 0 is out x (in + 1) = 8 x 4, time column last */
    hid_t ds = H5Dopen2(fid, "/blocks/1/layers/0/W", H5P_DEFAULT);
    ck_assert(ds >= 0);
    hid_t sp = H5Dget_space(ds);
    hsize_t d[2];
    ck_assert_int_eq(H5Sget_simple_extent_ndims(sp), 2);
    H5Sget_simple_extent_dims(sp, d, NULL);
    ck_assert_uint_eq(d[0], 8);
    ck_assert_uint_eq(d[1], 4);
    double W[32];
    H5Dread(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, W);
    cnf_net_layer lv;
    cnf_net_layer_view(cnf_flow_block_net(flow, 1), 0, &lv);
    const double *theta = cnf_flow_params_const(flow) + cnf_flow_block_offset(flow, 1);
    ck_assert_int_eq(memcmp(W, theta + lv.W, sizeof W), 0);
    H5Sclose(sp);
    H5Dclose(ds);
    ck_assert_int_gt(H5Lexists(fid, "/blocks/1/layers/1/b", H5P_DEFAULT), 0);
    ck_assert_int_gt(H5Lexists(fid, "/preprocess/scale", H5P_DEFAULT), 0);
    /* T as a float64 attribute of the block */
    hid_t g = H5Gopen2(fid, "/blocks/1", H5P_DEFAULT);
    double T = 0;
    a = H5Aopen(g, "T", H5P_DEFAULT);
    H5Aread(a, H5T_NATIVE_DOUBLE, &T);
    ck_assert(T == cnf_flow_params_const(flow)[cnf_flow_T_index(flow, 1)]);
    H5Aclose(a);
    H5Gclose(g);
    H5Fclose(fid);
    cnf_flow_free(flow);
}
END_TEST

START_TEST(test_training_state_roundtrip)
{
    char path[512];
    tpath(path, sizeof path, "trained.h5");
    cnf_flow *flow = random_flow(2, 2, CNF_LAYER_CONCATSQUASH, CNF_ACT_TANH, "4-4", 11);
    size_t P = cnf_flow_num_params(flow);
    cnf_train_state *st = cnf_train_state_alloc(P, 123456789012UL);
    ck_assert_ptr_nonnull(st);
    for (size_t i = 0; i < P; i++) {
        st->params[i] = gsl_rng_uniform(st->rng) - 0.5;
        st->adam_m[i] = 1e-3 * (gsl_rng_uniform(st->rng) - 0.5);
        st->adam_v[i] = 1e-7 * gsl_rng_uniform(st->rng);
        st->best_params[i] = st->params[i] * 0.5;
    }
    st->iteration = 4321;
    st->lr = 7.5e-4;
    st->has_best = 1;
    st->best_val_nll = 1.2345678901234567;
    st->best_iteration = 4000;
    st->last_val_nll = 1.3;
    st->bad_validations = 3;
    size_t nh = 2 * cnf_flow_num_blocks(flow);
    st->n_step_hints = nh;
    st->step_hints = malloc(nh * sizeof(double));
    ck_assert_ptr_nonnull(st->step_hints);
    for (size_t i = 0; i < nh; i++)
        st->step_hints[i] = 0.01 * (double)(i + 1) / 3.0;

    cnf_model_extra ex;
    cnf_model_extra_init(&ex);
    ck_assert_int_eq(cnf_model_extra_set(&ex, "flow", "toy2d"), CNF_OK);
    ck_assert_int_eq(cnf_model_extra_set(&ex, "hidden", "4-4"), CNF_OK);
    ck_assert_int_eq(cnf_model_extra_set(&ex, "flow", "tabular"), CNF_OK);  /* overwrite */
    ck_assert_int_eq(cnf_model_extra_set(&ex, "bad/key", "x"), CNF_EINVAL);
    ck_assert_uint_eq(ex.n_config, 2);
    ex.state = st;
    ck_assert_int_eq(cnf_model_save(path, flow, &ex), CNF_OK);
    ex.state = NULL;
    cnf_model_extra_clear(&ex);

    cnf_flow *back = NULL;
    cnf_model_extra got;
    ck_assert_msg(cnf_model_load(path, &back, &got) == CNF_OK, "%s", cnf_last_error());
    assert_same_flow(flow, back);
    ck_assert_uint_eq(got.n_config, 2);
    ck_assert_str_eq(cnf_model_extra_get(&got, "flow"), "tabular");
    ck_assert_str_eq(cnf_model_extra_get(&got, "hidden"), "4-4");
    ck_assert_ptr_null(cnf_model_extra_get(&got, "nope"));
    cnf_train_state *g = got.state;
    ck_assert_ptr_nonnull(g);
    ck_assert_uint_eq(g->n_params, P);
    ck_assert_uint_eq(g->seed, 123456789012UL);
    ck_assert_uint_eq(g->iteration, 4321);
    ck_assert(g->lr == 7.5e-4);
    ck_assert_int_eq(g->has_best, 1);
    ck_assert(g->best_val_nll == st->best_val_nll);
    ck_assert_uint_eq(g->best_iteration, 4000);
    ck_assert(g->last_val_nll == 1.3);
    ck_assert_uint_eq(g->bad_validations, 3);
    ck_assert_int_eq(memcmp(g->params, st->params, P * sizeof(double)), 0);
    ck_assert_int_eq(memcmp(g->adam_m, st->adam_m, P * sizeof(double)), 0);
    ck_assert_int_eq(memcmp(g->adam_v, st->adam_v, P * sizeof(double)), 0);
    ck_assert_int_eq(memcmp(g->best_params, st->best_params, P * sizeof(double)), 0);
    ck_assert_uint_eq(g->n_step_hints, nh);
    ck_assert_int_eq(memcmp(g->step_hints, st->step_hints, nh * sizeof(double)), 0);
    /* the generator continues exactly where the saved one stood */
    ck_assert_str_eq(cnf_train_state_rng_type(g), cnf_train_state_rng_type(st));
    for (int i = 0; i < 1000; i++)
        ck_assert_uint_eq(gsl_rng_get(g->rng), gsl_rng_get(st->rng));
    cnf_model_extra_clear(&got);
    ck_assert_ptr_null(got.state);
    cnf_flow_free(back);

    /* a state whose step hints do not fit the flow is refused, nothing written */
    cnf_train_state *odd = cnf_train_state_alloc(P, 6);
    odd->n_step_hints = 3;
    odd->step_hints = calloc(3, sizeof(double));
    cnf_model_extra_init(&ex);
    ex.state = odd;
    char path2[512];
    tpath(path2, sizeof path2, "odd_hints.h5");
    ck_assert_int_eq(cnf_model_save(path2, flow, &ex), CNF_EDIM);
    ck_assert_ptr_nonnull(strstr(cnf_last_error(), "step hints"));
    ck_assert_int_ne(access(path2, F_OK), 0);
    cnf_train_state_free(odd);

    /* a fresh state: no best, +inf / NaN kept as they are */
    cnf_train_state *fresh = cnf_train_state_alloc(P, 5);
    cnf_model_extra_init(&ex);
    ex.state = fresh;
    ck_assert_int_eq(cnf_model_save(path, flow, &ex), CNF_OK);
    ck_assert_int_eq(cnf_model_load(path, &back, &got), CNF_OK);
    ck_assert_int_eq(got.state->has_best, 0);
    ck_assert(isinf(got.state->best_val_nll) && got.state->best_val_nll > 0);
    ck_assert(isnan(got.state->last_val_nll));
    ck_assert_uint_eq(got.state->n_step_hints, 0);   /* none before an iteration */
    ck_assert_uint_eq(got.n_config, 0);
    cnf_model_extra_clear(&got);
    cnf_flow_free(back);
    /* loading without extra skips /training */
    ck_assert_int_eq(cnf_model_load(path, &back, NULL), CNF_OK);
    cnf_flow_free(back);

    /* a state of the wrong size is refused before writing */
    cnf_train_state *wrong = cnf_train_state_alloc(P + 1, 5);
    ex.state = wrong;
    ck_assert_int_eq(cnf_model_save(path, flow, &ex), CNF_EDIM);
    ex.state = NULL;
    cnf_train_state_free(wrong);
    cnf_train_state_free(fresh);
    cnf_train_state_free(st);
    cnf_flow_free(flow);
}
END_TEST

/* ---- Model load errors -------------------------------------------------- */

/* Save a good model, then change it through the raw API. */
static void saved_model(const char *path)
{
    cnf_flow *flow = random_flow(2, 2, CNF_LAYER_CONCATSQUASH, CNF_ACT_TANH, "4-4", 5);
    ck_assert_int_eq(cnf_model_save(path, flow, NULL), CNF_OK);
    cnf_flow_free(flow);
}

static void set_root_string(const char *path, const char *name, const char *value)
{
    hid_t fid = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    ck_assert(fid >= 0);
    if (H5Aexists(fid, name) > 0)
        H5Adelete(fid, name);
    if (value) {
        hid_t t = H5Tcopy(H5T_C_S1);
        H5Tset_size(t, H5T_VARIABLE);
        hid_t sp = H5Screate(H5S_SCALAR);
        hid_t a = H5Acreate2(fid, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
        H5Awrite(a, t, &value);
        H5Aclose(a);
        H5Sclose(sp);
        H5Tclose(t);
    }
    H5Fclose(fid);
}

static void expect_load_error(const char *path, cnf_status status, const char *needle)
{
    cnf_flow *flow = (cnf_flow *)&flow;
    cnf_model_extra ex;
    cnf_status s = cnf_model_load(path, &flow, &ex);
    ck_assert_msg(s == status, "expected status %d, got %d (%s)", (int)status, (int)s,
                  cnf_last_error());
    ck_assert_ptr_null(flow);
    ck_assert_ptr_null(ex.state);
    ck_assert_msg(strstr(cnf_last_error(), needle) != NULL, "message '%s' lacks '%s'",
                  cnf_last_error(), needle);
}

static void set_root_version(const char *path, long long version)
{
    hid_t fid = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    ck_assert(fid >= 0);
    hid_t a = H5Aopen(fid, "version", H5P_DEFAULT);
    ck_assert(a >= 0);
    ck_assert(H5Awrite(a, H5T_NATIVE_LLONG, &version) >= 0);
    H5Aclose(a);
    H5Fclose(fid);
}

static long long root_version(const char *path)
{
    hid_t fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    ck_assert(fid >= 0);
    long long v = -1;
    hid_t a = H5Aopen(fid, "version", H5P_DEFAULT);
    ck_assert(H5Aread(a, H5T_NATIVE_LLONG, &v) >= 0);
    H5Aclose(a);
    H5Fclose(fid);
    return v;
}

/* Replace (or create) the float64 data set name of path with rows x cols
 * values (cols 0: a vector of rows). */
static void put_dataset(const char *path, const char *name, size_t rows, size_t cols,
                        const double *x)
{
    hid_t fid = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    ck_assert(fid >= 0);
    if (H5Lexists(fid, name, H5P_DEFAULT) > 0)
        H5Ldelete(fid, name, H5P_DEFAULT);
    hsize_t d[2] = {rows, cols};
    hid_t sp = H5Screate_simple(cols ? 2 : 1, d, NULL);
    hid_t ds = H5Dcreate2(fid, name, H5T_IEEE_F64LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    ck_assert(ds >= 0);
    ck_assert(H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) >= 0);
    H5Dclose(ds);
    H5Sclose(sp);
    H5Fclose(fid);
}

START_TEST(test_model_wrong_format_or_version)
{
    char path[512];
    tpath(path, sizeof path, "m.h5");
    expect_load_error(path, CNF_EIO, "m.h5");                 /* missing */
    FILE *f = fopen(path, "w");
    fputs("not hdf5 at all\n", f);
    fclose(f);
    expect_load_error(path, CNF_EFORMAT, "not an HDF5 file");

    saved_model(path);
    set_root_string(path, "format", "cnf-grad");
    expect_load_error(path, CNF_EFORMAT, "not a cnf model file");
    set_root_string(path, "format", NULL);
    expect_load_error(path, CNF_EFORMAT, "not a cnf model file");

    saved_model(path);
    hid_t fid = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t a = H5Aopen(fid, "version", H5P_DEFAULT);
    long long three = 3;
    H5Awrite(a, H5T_NATIVE_LLONG, &three);
    H5Aclose(a);
    H5Fclose(fid);
    expect_load_error(path, CNF_EFORMAT, "version 3 (written by a newer cnf? this build reads "
                      "versions 1 to 2)");
    set_root_version(path, 0);
    expect_load_error(path, CNF_EFORMAT, "version 0 is not a version");

    /* a data file is not a model */
    double X[6] = {1, 2, 3, 4, 5, 6};
    ck_assert_int_eq(cnf_data_write_splits(path, X, 3, X, 1, X, 1, 2, "t", "none"), CNF_OK);
    expect_load_error(path, CNF_EFORMAT, "not a cnf model file");
}
END_TEST

START_TEST(test_model_damaged)
{
    char path[512];
    tpath(path, sizeof path, "m.h5");

    saved_model(path);
    hid_t fid = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    H5Ldelete(fid, "/blocks/1/layers/2/g_b", H5P_DEFAULT);
    H5Fclose(fid);
    expect_load_error(path, CNF_EFORMAT, "/blocks/1/layers/2/g_b");

    saved_model(path);
    fid = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    H5Ldelete(fid, "/preprocess/scale", H5P_DEFAULT);
    H5Fclose(fid);
    expect_load_error(path, CNF_EFORMAT, "/preprocess/scale");

    /* a W whose columns do not chain with the previous layer */
    saved_model(path);
    fid = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    H5Ldelete(fid, "/blocks/0/layers/1/W", H5P_DEFAULT);
    hsize_t d[2] = {4, 5};
    hid_t sp = H5Screate_simple(2, d, NULL);
    hid_t ds = H5Dcreate2(fid, "/blocks/0/layers/1/W", H5T_IEEE_F64LE, sp, H5P_DEFAULT,
                          H5P_DEFAULT, H5P_DEFAULT);
    double zeros[20] = {0};
    H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, zeros);
    H5Dclose(ds);
    H5Sclose(sp);
    H5Fclose(fid);
    expect_load_error(path, CNF_EFORMAT, "/blocks/0/layers/1/W has shape (4, 5)");

    /* a non-finite parameter */
    saved_model(path);
    fid = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    ds = H5Dopen2(fid, "/blocks/1/layers/0/b", H5P_DEFAULT);
    double b[4] = {0, NAN, 0, 0};
    H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, b);
    H5Dclose(ds);
    H5Fclose(fid);
    expect_load_error(path, CNF_EDATA, "/blocks/1/layers/0/b entry 1");

    /* an unknown layer type */
    saved_model(path);
    fid = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t g = H5Gopen2(fid, "/blocks/1", H5P_DEFAULT);
    H5Adelete(g, "layer_type");
    H5Gclose(g);
    H5Fclose(fid);
    expect_load_error(path, CNF_EFORMAT, "layer_type");

    /* data of a concatsquash layer under another layer_type */
    saved_model(path);
    set_root_string(path, "format", "cnf-model");
    fid = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    g = H5Gopen2(fid, "/blocks/0", H5P_DEFAULT);
    H5Adelete(g, "layer_type");
    hid_t st = H5Tcopy(H5T_C_S1);
    H5Tset_size(st, H5T_VARIABLE);
    hid_t ssp = H5Screate(H5S_SCALAR);
    hid_t at = H5Acreate2(g, "layer_type", st, ssp, H5P_DEFAULT, H5P_DEFAULT);
    const char *ign = "ignore";
    H5Awrite(at, st, &ign);
    H5Aclose(at);
    H5Sclose(ssp);
    H5Tclose(st);
    H5Gclose(g);
    H5Fclose(fid);
    expect_load_error(path, CNF_EFORMAT, "/blocks/0/layers/0/g_w exists");

    /* a gap in the block numbering */
    saved_model(path);
    fid = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    H5Lmove(fid, "/blocks/1", fid, "/blocks/7", H5P_DEFAULT, H5P_DEFAULT);
    H5Fclose(fid);
    expect_load_error(path, CNF_EFORMAT, "/blocks/1");
}
END_TEST

/* ---- Whitened models (version 2) ------------------------------------------ */

/* random_flow with a random whitening factor (3 x 3). */
static cnf_flow *whitened_flow(unsigned long seed, double *L)
{
    cnf_flow *flow = random_flow(3, 2, CNF_LAYER_CONCATSQUASH, CNF_ACT_TANH, "5-4", seed);
    gsl_rng *r = tu_rng(seed + 100);
    for (size_t i = 0; i < 3; i++)
        for (size_t j = 0; j < 3; j++)
            L[i * 3 + j] = j > i ? 0.0 : j == i ? 0.2 + gsl_rng_uniform(r) : gsl_rng_uniform(r) - 0.5;
    gsl_rng_free(r);
    ck_assert_int_eq(cnf_flow_set_whitening(flow, L), CNF_OK);
    return flow;
}

START_TEST(test_whitened_roundtrip)
{
    enum { N = 20 };
    char path[512], spath[512];
    tpath(path, sizeof path, "white.h5");
    double L[9];
    cnf_flow *flow = whitened_flow(9, L);
    ck_assert_int_eq(cnf_model_save(path, flow, NULL), CNF_OK);
    ck_assert_int_eq(root_version(path), 2);
    cnf_flow *back = NULL;
    cnf_status s = cnf_model_load(path, &back, NULL);
    ck_assert_msg(s == CNF_OK, "load: %s", cnf_last_error());
    assert_same_flow(flow, back);   /* parameters, mean, scale bit for bit */
    ck_assert_int_eq(cnf_flow_preprocess_kind(back), CNF_PREPROCESS_WHITEN);
    ck_assert_int_eq(memcmp(cnf_flow_whitening_const(back), L, sizeof L), 0);

    /* the same log-likelihoods, bit for bit */
    double X[N * 3], ll[N], llb[N];
    gsl_rng *r = tu_rng(3);
    for (size_t i = 0; i < N * 3; i++)
        X[i] = 2.0 * gsl_rng_uniform(r) - 1.0;
    gsl_rng_free(r);
    cnf_flow_options opt;
    cnf_flow_options_default(&opt);
    cnf_flow_work *w = cnf_flow_work_alloc(flow, N, &opt);
    ck_assert_int_eq(cnf_flow_log_likelihood(flow, w, X, N, NULL, ll, NULL), CNF_OK);
    ck_assert_int_eq(cnf_flow_log_likelihood(back, w, X, N, NULL, llb, NULL), CNF_OK);
    ck_assert_int_eq(memcmp(ll, llb, sizeof ll), 0);
    cnf_flow_work_free(w);

    /* the same flow standardising is still a version-1 file, without chol */
    ck_assert_int_eq(cnf_flow_set_whitening(flow, NULL), CNF_OK);
    tpath(spath, sizeof spath, "std.h5");
    ck_assert_int_eq(cnf_model_save(spath, flow, NULL), CNF_OK);
    ck_assert_int_eq(root_version(spath), 1);
    hid_t fid = H5Fopen(spath, H5F_ACC_RDONLY, H5P_DEFAULT);
    ck_assert_int_eq(H5Lexists(fid, "/preprocess/chol", H5P_DEFAULT), 0);
    H5Fclose(fid);
    cnf_flow *sback = NULL;
    ck_assert_int_eq(cnf_model_load(spath, &sback, NULL), CNF_OK);
    ck_assert_int_eq(cnf_flow_preprocess_kind(sback), CNF_PREPROCESS_STANDARDIZE);
    cnf_flow_free(sback);
    cnf_flow_free(back);
    cnf_flow_free(flow);
}
END_TEST

START_TEST(test_whitened_damaged)
{
    char path[512];
    tpath(path, sizeof path, "white.h5");
    double L[9];
    cnf_flow *flow = whitened_flow(4, L);

    /* version 2 without its factor */
    ck_assert_int_eq(cnf_model_save(path, flow, NULL), CNF_OK);
    hid_t fid = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    H5Ldelete(fid, "/preprocess/chol", H5P_DEFAULT);
    H5Fclose(fid);
    expect_load_error(path, CNF_EFORMAT, "white.h5: missing data set /preprocess/chol");

    /* of the wrong shape */
    ck_assert_int_eq(cnf_model_save(path, flow, NULL), CNF_OK);
    put_dataset(path, "/preprocess/chol", 3, 2, L);
    expect_load_error(path, CNF_EFORMAT, "white.h5:/preprocess/chol has shape (3, 2), expected (3, 3)");
    put_dataset(path, "/preprocess/chol", 9, 0, L);
    expect_load_error(path, CNF_EFORMAT, "/preprocess/chol has shape (9), expected (3, 3)");

    /* not lower-triangular, a non-positive diagonal, a NaN */
    double bad[9];
    memcpy(bad, L, sizeof bad);
    bad[0 * 3 + 2] = 0.125;
    put_dataset(path, "/preprocess/chol", 3, 3, bad);
    expect_load_error(path, CNF_EDATA, "white.h5:/preprocess/chol: whitening factor L entry "
                      "(0, 2) is 0.125, above the diagonal");
    memcpy(bad, L, sizeof bad);
    bad[1 * 3 + 1] = -0.5;
    put_dataset(path, "/preprocess/chol", 3, 3, bad);
    expect_load_error(path, CNF_EDATA, "diagonal entry (1, 1) is -0.5");
    memcpy(bad, L, sizeof bad);
    bad[2 * 3 + 0] = NAN;
    put_dataset(path, "/preprocess/chol", 3, 3, bad);
    expect_load_error(path, CNF_EDATA, "entry (2, 0) is nan");

    /* a factor in a version-1 file would be ignored by older readers */
    put_dataset(path, "/preprocess/chol", 3, 3, L);
    set_root_version(path, 1);
    expect_load_error(path, CNF_EFORMAT, "/preprocess/chol exists, but the file says version 1");
    set_root_version(path, 2);
    cnf_flow *back = NULL;
    ck_assert_int_eq(cnf_model_load(path, &back, NULL), CNF_OK);   /* repaired */
    cnf_flow_free(back);
    set_root_version(path, 3);
    expect_load_error(path, CNF_EFORMAT, "newer cnf?");
    cnf_flow_free(flow);
}
END_TEST

/* ---- Atomic writes ------------------------------------------------------ */

START_TEST(test_atomic_failure_keeps_target)
{
    char path[512];
    tpath(path, sizeof path, "keep.h5");
    saved_model(path);
    size_t n0;
    unsigned char *before = slurp(path, &n0);

    /* a write that HDF5 refuses midway (a data set created twice) */
    cnf_h5_writer *w = cnf_h5_writer_open(path);
    ck_assert_ptr_nonnull(w);
    ck_assert_int_eq(count_temp_files(), 1);
    double x[3] = {1, 2, 3};
    ck_assert_int_eq(cnf_h5_writer_write_1d(w, "/a/x", x, 3), CNF_OK);
    ck_assert_int_eq(cnf_h5_writer_write_1d(w, "/a/x", x, 3), CNF_EIO);
    /* later calls and the commit repeat the first failure */
    ck_assert_int_eq(cnf_h5_writer_attr_int(w, "/", "n", 1), CNF_EIO);
    ck_assert_int_eq(cnf_h5_writer_commit(w), CNF_EIO);
    ck_assert_msg(strstr(cnf_last_error(), "/a/x") != NULL, "%s", cnf_last_error());
    ck_assert_int_eq(count_temp_files(), 0);

    /* an abort */
    w = cnf_h5_writer_open(path);
    ck_assert_int_eq(cnf_h5_writer_write_2d(w, "/X", x, 1, 3), CNF_OK);
    cnf_h5_writer_abort(w);
    cnf_h5_writer_abort(NULL);
    ck_assert_int_eq(count_temp_files(), 0);

    /* a model that could not be loaded is refused before anything is written */
    cnf_flow *flow = random_flow(2, 1, CNF_LAYER_IGNORE, CNF_ACT_TANH, "3", 2);
    cnf_flow_params(flow)[4] = NAN;
    ck_assert_int_eq(cnf_model_save(path, flow, NULL), CNF_EDATA);
    cnf_flow_free(flow);
    ck_assert_int_eq(count_temp_files(), 0);

    size_t n1;
    unsigned char *after = slurp(path, &n1);
    ck_assert_uint_eq(n0, n1);
    ck_assert_int_eq(memcmp(before, after, n0), 0);
    free(before);
    free(after);

    /* and a successful commit replaces it */
    w = cnf_h5_writer_open(path);
    ck_assert_int_eq(cnf_h5_writer_write_scalar(w, "/s", 2.5), CNF_OK);
    ck_assert_int_eq(cnf_h5_writer_commit(w), CNF_OK);
    ck_assert_int_eq(count_temp_files(), 0);
    double *v;
    size_t n;
    ck_assert_int_eq(cnf_data_read_vector(path, "/s", &v, &n), CNF_OK);
    ck_assert_uint_eq(n, 1);
    ck_assert(v[0] == 2.5);
    free(v);
}
END_TEST

/* A model with an end time the loader would refuse (T <= 0; a non-finite
 * one is caught with every parameter) is refused by the save, naming the
 * block, and nothing is written. */
START_TEST(test_save_refuses_bad_T)
{
    char path[512];
    tpath(path, sizeof path, "badT.h5");
    const double bad[] = {0.0, -0.5, -0.0};
    for (size_t c = 0; c < sizeof bad / sizeof bad[0]; c++) {
        cnf_flow *flow = random_flow(2, 2, CNF_LAYER_CONCATSQUASH, CNF_ACT_TANH, "3", 2);
        cnf_flow_params(flow)[cnf_flow_T_index(flow, 1)] = bad[c];
        ck_assert_int_eq(cnf_model_save(path, flow, NULL), CNF_EDATA);
        ck_assert_msg(strstr(cnf_last_error(), "block 1") && strstr(cnf_last_error(), "T ="),
                      "%s", cnf_last_error());
        ck_assert_int_eq(access(path, F_OK), -1);
        ck_assert_int_eq(count_temp_files(), 0);
        cnf_flow_free(flow);
    }
}
END_TEST

START_TEST(test_missing_output_directory)
{
    char path[512];
    tpath(path, sizeof path, "no/such/dir/m.h5");
    cnf_flow *flow = random_flow(2, 1, CNF_LAYER_CONCATSQUASH, CNF_ACT_TANH, "3", 2);
    ck_assert_int_eq(cnf_model_save(path, flow, NULL), CNF_EIO);
    ck_assert_msg(strstr(cnf_last_error(), "does not exist"), "%s", cnf_last_error());
    double g[64] = {0};
    ck_assert_int_eq(cnf_model_write_grad(path, flow, g), CNF_EIO);
    cnf_flow_free(flow);
    ck_assert_int_eq(cnf_file_check_output(path, NULL, 0), CNF_EIO);
    ck_assert_ptr_null(cnf_h5_writer_open(path));
    ck_assert_int_eq(cnf_file_check_output(tmpdir, NULL, 0), CNF_EIO);   /* a directory */
    tpath(path, sizeof path, "fine.h5");
    ck_assert_int_eq(cnf_file_check_output(path, NULL, 0), CNF_OK);
    ck_assert_int_eq(cnf_file_check_output("relative.h5", NULL, 0), CNF_OK);
}
END_TEST

/* ---- Gradient files ----------------------------------------------------- */

START_TEST(test_grad_roundtrip)
{
    char path[512];
    tpath(path, sizeof path, "g.h5");
    cnf_flow *flow = random_flow(3, 2, CNF_LAYER_CONCATSQUASH, CNF_ACT_SWISH, "5", 9);
    size_t P = cnf_flow_num_params(flow);
    double *g = malloc(P * sizeof *g), *back = malloc(P * sizeof *back);
    for (size_t i = 0; i < P; i++)
        g[i] = sin(1.0 + (double)i);
    ck_assert_int_eq(cnf_model_write_grad(path, flow, g), CNF_OK);
    ck_assert_int_eq(cnf_model_read_grad(path, "", flow, back), CNF_OK);
    ck_assert_int_eq(memcmp(g, back, P * sizeof *g), 0);
    /* T entries sit in /blocks/k/T as scalars */
    double *T;
    size_t n;
    ck_assert_int_eq(cnf_data_read_vector(path, "/blocks/1/T", &T, &n), CNF_OK);
    ck_assert_uint_eq(n, 1);
    ck_assert(T[0] == g[cnf_flow_T_index(flow, 1)]);
    free(T);
    /* a gradient file is not a model */
    expect_load_error(path, CNF_EFORMAT, "not a cnf model file");

    /* under a prefix, as in the reference files */
    cnf_h5_writer *w = cnf_h5_writer_open(path);
    ck_assert_int_eq(cnf_h5_writer_write_grad(w, "/grad", flow, g), CNF_OK);
    ck_assert_int_eq(cnf_h5_writer_commit(w), CNF_OK);
    memset(back, 0, P * sizeof *back);
    ck_assert_int_eq(cnf_model_read_grad(path, "/grad", flow, back), CNF_OK);
    ck_assert_int_eq(memcmp(g, back, P * sizeof *g), 0);
    ck_assert_int_eq(cnf_model_read_grad(path, "", flow, back), CNF_EFORMAT);
    /* shapes of another architecture are refused */
    cnf_flow *other = random_flow(3, 2, CNF_LAYER_CONCATSQUASH, CNF_ACT_SWISH, "6", 9);
    ck_assert_int_eq(cnf_model_read_grad(path, "/grad", other, back), CNF_EFORMAT);
    ck_assert_msg(strstr(cnf_last_error(), "/grad/blocks/0/layers/0/W"), "%s", cnf_last_error());
    cnf_flow_free(other);
    free(g);
    free(back);
    cnf_flow_free(flow);
}
END_TEST

/* ---- Data sets ---------------------------------------------------------- */

START_TEST(test_address_parse)
{
    cnf_data_address a;
    ck_assert_int_eq(cnf_data_address_parse("d.h5:/test", "/train", &a), CNF_OK);
    ck_assert_str_eq(a.file, "d.h5");
    ck_assert_str_eq(a.path, "/test");
    ck_assert_int_eq(cnf_data_address_parse("dir/d.h5", "/test", &a), CNF_OK);
    ck_assert_str_eq(a.file, "dir/d.h5");
    ck_assert_str_eq(a.path, "/test");
    ck_assert_int_eq(cnf_data_address_parse("/a:b/d.h5:/g/x", NULL, &a), CNF_OK);
    ck_assert_str_eq(a.file, "/a:b/d.h5");
    ck_assert_str_eq(a.path, "/g/x");
    ck_assert_int_eq(cnf_data_address_parse("d.h5", NULL, &a), CNF_EINVAL);
    ck_assert_int_eq(cnf_data_address_parse(":/x", "/t", &a), CNF_EINVAL);
    ck_assert_int_eq(cnf_data_address_parse("", "/t", &a), CNF_EINVAL);
}
END_TEST

START_TEST(test_read_float64_blocks)
{
    /* more rows than one read block, so the hyperslab loop runs 3 times */
    char file[512];
    tpath(file, sizeof file, "big.h5");
    hsize_t dims[2] = {2 * CNF_DATA_READ_BLOCK + 17, 3};
    make_dataset(file, "/g/x", 2, dims, H5T_IEEE_F64LE, -1);
    double *X;
    size_t N, D;
    ck_assert_int_eq(cnf_data_read(file, "/g/x", &X, &N, &D), CNF_OK);
    ck_assert_uint_eq(N, dims[0]);
    ck_assert_uint_eq(D, 3);
    for (size_t i = 0; i < N * D; i++)
        if (X[i] != 0.5 * (double)i + 0.1)
            ck_abort_msg("X[%zu] = %.17g", i, X[i]);
    ck_assert_int_eq(cnf_data_check_finite(X, N, D, "big"), CNF_OK);
    free(X);
    ck_assert_int_eq(cnf_data_shape(file, "/g/x", &N, &D), CNF_OK);
    ck_assert_uint_eq(N, dims[0]);
    char addr[600];
    snprintf(addr, sizeof addr, "%s:/g/x", file);
    ck_assert_int_eq(cnf_data_read_address(addr, "/test", &X, &N, &D), CNF_OK);
    ck_assert(X[3] == 1.6);
    free(X);
}
END_TEST

START_TEST(test_read_float32)
{
    char file[512];
    tpath(file, sizeof file, "f32.h5");
    hsize_t dims[2] = {5, 2};
    make_dataset(file, "/x", 2, dims, H5T_IEEE_F32LE, -1);
    double *X;
    size_t N, D;
    ck_assert_int_eq(cnf_data_read(file, "/x", &X, &N, &D), CNF_OK);
    ck_assert_uint_eq(N, 5);
    ck_assert_uint_eq(D, 2);
    for (size_t i = 0; i < 10; i++)
        ck_assert(X[i] == (double)(float)(0.5 * (double)i + 0.1));
    free(X);
    /* big-endian float64 converts too */
    make_dataset(file, "/x", 2, dims, H5T_IEEE_F64BE, -1);
    ck_assert_int_eq(cnf_data_read(file, "/x", &X, &N, &D), CNF_OK);
    ck_assert(X[9] == 4.6);
    free(X);
}
END_TEST

static void expect_read_error(const char *file, const char *path, cnf_status status,
                              const char *needle)
{
    double *X = (double *)&X;
    size_t N = 9, D = 9;
    cnf_status s = cnf_data_read(file, path, &X, &N, &D);
    ck_assert_msg(s == status, "expected %d, got %d (%s)", (int)status, (int)s, cnf_last_error());
    ck_assert_ptr_null(X);
    ck_assert_uint_eq(N, 0);
    ck_assert_uint_eq(D, 0);
    ck_assert_msg(strstr(cnf_last_error(), needle) != NULL, "message '%s' lacks '%s'",
                  cnf_last_error(), needle);
}

START_TEST(test_read_errors)
{
    char file[512];
    tpath(file, sizeof file, "e.h5");
    expect_read_error(file, "/x", CNF_EIO, "e.h5");                   /* missing file */
    FILE *f = fopen(file, "w");
    fputs("a,b\n1,2\n", f);
    fclose(f);
    expect_read_error(file, "/x", CNF_EFORMAT, "not an HDF5 file");

    hsize_t d1[1] = {6};
    make_dataset(file, "/v", 1, d1, H5T_IEEE_F64LE, -1);
    expect_read_error(file, "/v", CNF_EDIM, "rank 1");
    expect_read_error(file, "/nope", CNF_EFORMAT, "no data set /nope");
    expect_read_error(file, "/v/deeper", CNF_EFORMAT, "/v/deeper");

    hsize_t d3[3] = {2, 3, 4};
    make_dataset(file, "/cube", 3, d3, H5T_IEEE_F64LE, -1);
    expect_read_error(file, "/cube", CNF_EDIM, "rank 3");

    hsize_t d0[2] = {0, 3};
    make_dataset(file, "/empty", 2, d0, H5T_IEEE_F64LE, -1);
    expect_read_error(file, "/empty", CNF_EDIM, "zero rows");

    hsize_t d2[2] = {4, 2};
    make_dataset(file, "/g/ints", 2, d2, H5T_STD_I32LE, -1);
    expect_read_error(file, "/g/ints", CNF_EFORMAT, "integer type");
    expect_read_error(file, "/g", CNF_EFORMAT, "is a group");
    expect_read_error(file, "/", CNF_EFORMAT, "is a group");
}
END_TEST

START_TEST(test_nan_row_named)
{
    char file[512];
    tpath(file, sizeof file, "nan.h5");
    hsize_t dims[2] = {10, 3};
    make_dataset(file, "/x", 2, dims, H5T_IEEE_F64LE, 7 * 3 + 1);
    double *X;
    size_t N, D;
    ck_assert_int_eq(cnf_data_read(file, "/x", &X, &N, &D), CNF_OK);
    ck_assert_int_eq(cnf_data_check_finite(X, N, D, "nan.h5:/x"), CNF_EDATA);
    ck_assert_msg(strstr(cnf_last_error(), "nan.h5:/x: row 7, column 1 is NaN"), "%s",
                  cnf_last_error());
    X[2] = -INFINITY;
    ck_assert_int_eq(cnf_data_check_finite(X, N, D, NULL), CNF_EDATA);
    ck_assert_msg(strstr(cnf_last_error(), "row 0, column 2 is -Inf"), "%s", cnf_last_error());
    free(X);
}
END_TEST

START_TEST(test_write_splits)
{
    char file[512];
    tpath(file, sizeof file, "splits.h5");
    double tr[8] = {1, 2, 3, 4, 5, 6, 7, 8}, va[2] = {9, 10}, te[4] = {11, 12, 13, 14};
    ck_assert_int_eq(cnf_data_write_splits(file, tr, 4, va, 1, te, 2, 2, "toy moons", "none"),
                     CNF_OK);
    ck_assert_int_eq(count_temp_files(), 0);
    double *X;
    size_t N, D;
    ck_assert_int_eq(cnf_data_read(file, "/train", &X, &N, &D), CNF_OK);
    ck_assert_uint_eq(N, 4);
    ck_assert_uint_eq(D, 2);
    ck_assert_int_eq(memcmp(X, tr, sizeof tr), 0);
    free(X);
    ck_assert_int_eq(cnf_data_read(file, "/test", &X, &N, &D), CNF_OK);
    ck_assert_int_eq(memcmp(X, te, sizeof te), 0);
    free(X);
    hid_t fid = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT);
    long long n = 0;
    hid_t a = H5Aopen(fid, "n_train", H5P_DEFAULT);
    H5Aread(a, H5T_NATIVE_LLONG, &n);
    H5Aclose(a);
    ck_assert_int_eq(n, 4);
    ck_assert_int_gt(H5Aexists(fid, "source"), 0);
    ck_assert_int_gt(H5Aexists(fid, "preprocessing"), 0);
    /* format name and version (STYLE rule 14) */
    a = H5Aopen(fid, "version", H5P_DEFAULT);
    H5Aread(a, H5T_NATIVE_LLONG, &n);
    H5Aclose(a);
    ck_assert_int_eq(n, CNF_DATA_VERSION);
    char fmt[64];
    read_fixed_string(fid, "format", fmt, sizeof fmt);
    ck_assert_str_eq(fmt, CNF_DATA_FORMAT);
    assert_checksummed(fid, "/train");
    H5Fclose(fid);
    /* an empty split is allowed and written as (0, D) */
    ck_assert_int_eq(cnf_data_write_splits(file, tr, 4, NULL, 0, te, 2, 2, NULL, NULL), CNF_OK);
    ck_assert_int_eq(cnf_data_shape(file, "/val", &N, &D), CNF_EDIM);
}
END_TEST

/* The repository's data files read as the documentation says. */
START_TEST(test_repo_data)
{
    char file[512];
    tu_repo_path(file, sizeof file, "datasets/faithful.h5");
    double *X;
    size_t N, D;
    ck_assert_msg(cnf_data_read(file, "/test", &X, &N, &D) == CNF_OK, "%s", cnf_last_error());
    ck_assert_uint_eq(D, 2);
    ck_assert_uint_eq(N, 54);
    ck_assert_int_eq(cnf_data_check_finite(X, N, D, "faithful"), CNF_OK);
    free(X);
}
END_TEST

/* ---- Damaged and hostile files ------------------------------------------ */

/* Flip the lowest bit of the byte at offset of path. */
static void flip_bit(const char *path, size_t offset)
{
    FILE *f = fopen(path, "r+b");
    ck_assert_ptr_nonnull(f);
    fseek(f, (long)offset, SEEK_SET);
    int c = fgetc(f);
    fseek(f, (long)offset, SEEK_SET);
    fputc(c ^ 1, f);
    fclose(f);
}

/* A flipped bit in a data set's values is caught by its Fletcher-32
 * checksum: an error, not another number (HDF5 checks each chunk it reads). */
START_TEST(test_damaged_values_detected)
{
    char file[512];
    tpath(file, sizeof file, "d.h5");
    double tr[8] = {1, 2, 3, 4, 5, 6, 7, 8}, v[2] = {1, 2}, te[2] = {3, 4};
    ck_assert_int_eq(cnf_data_write_splits(file, tr, 4, v, 1, te, 1, 2, NULL, NULL), CNF_OK);
    hid_t fid = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t ds = H5Dopen2(fid, "/train", H5P_DEFAULT);
    haddr_t addr = HADDR_UNDEF;
    hsize_t size = 0;
    hid_t sp = H5Dget_space(ds);
    ck_assert(H5Dget_chunk_info(ds, sp, 0, NULL, NULL, &addr, &size) >= 0);
    H5Sclose(sp);
    H5Dclose(ds);
    H5Fclose(fid);
    ck_assert_uint_ge(size, sizeof tr);
    flip_bit(file, (size_t)addr + 8 * 5 + 7);   /* the sign and exponent of /train's 6th value */
    double *X = NULL;
    size_t N, D;
    cnf_status s = cnf_data_read(file, "/train", &X, &N, &D);
    ck_assert_msg(s == CNF_EIO, "a damaged value was read (status %d, X[5] = %g)", (int)s,
                  X ? X[5] : 0.0);
    ck_assert_ptr_null(X);
    ck_assert_ptr_nonnull(strstr(cnf_last_error(), "/train"));
}
END_TEST

/* A flipped bit in the file's structure (here a block's T, an attribute in
 * an object header) is caught by the newest format's metadata checksums:
 * the model is refused, not loaded with another end time. */
START_TEST(test_damaged_metadata_detected)
{
    char path[512];
    tpath(path, sizeof path, "m.h5");
    cnf_flow *flow = random_flow(2, 1, CNF_LAYER_CONCATSQUASH, CNF_ACT_TANH, "4", 5);
    const double T = 0.8125;   /* exact, and found once in the file */
    cnf_flow_params(flow)[cnf_flow_T_index(flow, 0)] = T;
    ck_assert_int_eq(cnf_model_save(path, flow, NULL), CNF_OK);
    cnf_flow_free(flow);
    size_t n;
    unsigned char *bytes = slurp(path, &n);
    size_t at = n, count = 0;
    for (size_t i = 0; i + sizeof T <= n; i++)
        if (memcmp(bytes + i, &T, sizeof T) == 0) {
            at = i;
            count++;
        }
    free(bytes);
    ck_assert_uint_eq(count, 1);
    flip_bit(path, at + 3);
    cnf_flow *back = NULL;
    cnf_status s = cnf_model_load(path, &back, NULL);
    ck_assert_msg(s != CNF_OK, "the damaged model loaded (T = %g)",
                  back ? cnf_flow_params_const(back)[cnf_flow_T_index(back, 0)] : 0.0);
    ck_assert_ptr_null(back);
}
END_TEST

/* A shape the file does not back with data (a data set created and never
 * written, as a damaged dimension would look) is refused before any
 * allocation: it read as zeros, and a huge one allocated for them. */
START_TEST(test_unwritten_data_refused)
{
    char file[512];
    tpath(file, sizeof file, "u.h5");
    hid_t fid = H5Fcreate(file, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t small[2] = {1000, 2}, huge[2] = {(hsize_t)1 << 40, 2}, chunk[2] = {100, 2};
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 2, chunk);
    hid_t sp = H5Screate_simple(2, small, NULL);
    H5Dclose(H5Dcreate2(fid, "/train", H5T_IEEE_F64LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT));
    H5Sclose(sp);
    sp = H5Screate_simple(2, huge, NULL);
    H5Dclose(H5Dcreate2(fid, "/huge", H5T_IEEE_F64LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT));
    H5Sclose(sp);
    H5Pclose(dcpl);
    H5Fclose(fid);
    double *X = NULL;
    size_t N, D;
    ck_assert_int_eq(cnf_data_read(file, "/train", &X, &N, &D), CNF_EFORMAT);
    ck_assert_ptr_nonnull(strstr(cnf_last_error(), "never written"));
    ck_assert_int_eq(cnf_data_read(file, "/huge", &X, &N, &D), CNF_EFORMAT);
    ck_assert_ptr_nonnull(strstr(cnf_last_error(), "/huge claims 2199023255552 values"));
    ck_assert_ptr_null(X);
}
END_TEST

/* A /training/config attribute that is neither a string nor a number, or
 * a string longer than any setting, is refused with its name: it was
 * dropped (or cut short) silently, and a resumed run then used a default. */
START_TEST(test_bad_config_attribute_refused)
{
    char path[512];
    tpath(path, sizeof path, "m.h5");
    cnf_flow *flow = random_flow(2, 1, CNF_LAYER_CONCATSQUASH, CNF_ACT_TANH, "4", 5);
    cnf_model_extra ex;
    cnf_model_extra_init(&ex);
    ck_assert_int_eq(cnf_model_extra_set(&ex, "hidden", "4"), CNF_OK);
    ck_assert_int_eq(cnf_model_save(path, flow, &ex), CNF_OK);
    cnf_model_extra_clear(&ex);
    cnf_flow_free(flow);
    hid_t fid = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t g = H5Oopen(fid, "/training/config", H5P_DEFAULT);
    hsize_t three = 3;
    hid_t sp = H5Screate_simple(1, &three, NULL);
    double lr[3] = {1e-3, 1e-4, 1e-5};
    hid_t a = H5Acreate2(g, "lr", H5T_IEEE_F64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_DOUBLE, lr);
    H5Aclose(a);
    H5Sclose(sp);
    H5Oclose(g);
    H5Fclose(fid);
    expect_load_error(path, CNF_EFORMAT, "attribute 'lr' is neither a string");

    fid = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    g = H5Oopen(fid, "/training/config", H5P_DEFAULT);
    H5Adelete(g, "lr");
    static char long_value[5001];
    memset(long_value, 'x', 5000);
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, 5000);
    sp = H5Screate(H5S_SCALAR);
    a = H5Acreate2(g, "note", t, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, t, long_value);
    H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    H5Oclose(g);
    H5Fclose(fid);
    expect_load_error(path, CNF_EFORMAT, "attribute 'note' is neither a string (of at most 4095");
}
END_TEST

int main(void)
{
    tu_program_setup();
    /* raw-API fixture mistakes should be loud; the library stays silent on
     * its own */
    Suite *s = suite_create("io");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_roundtrip_concatsquash);
    tcase_add_test(tc, test_roundtrip_concat);
    tcase_add_test(tc, test_roundtrip_ignore);
    tcase_add_test(tc, test_roundtrip_no_hidden);
    tcase_add_test(tc, test_layout_matches_design);
    tcase_add_test(tc, test_training_state_roundtrip);
    tcase_add_test(tc, test_model_wrong_format_or_version);
    tcase_add_test(tc, test_model_damaged);
    tcase_add_test(tc, test_damaged_values_detected);
    tcase_add_test(tc, test_damaged_metadata_detected);
    tcase_add_test(tc, test_unwritten_data_refused);
    tcase_add_test(tc, test_bad_config_attribute_refused);
    tcase_add_test(tc, test_whitened_roundtrip);
    tcase_add_test(tc, test_whitened_damaged);
    tcase_add_test(tc, test_atomic_failure_keeps_target);
    tcase_add_test(tc, test_save_refuses_bad_T);
    tcase_add_test(tc, test_missing_output_directory);
    tcase_add_test(tc, test_grad_roundtrip);
    tcase_add_test(tc, test_address_parse);
    tcase_add_test(tc, test_read_float64_blocks);
    tcase_add_test(tc, test_read_float32);
    tcase_add_test(tc, test_read_errors);
    tcase_add_test(tc, test_nan_row_named);
    tcase_add_test(tc, test_write_splits);
    tcase_add_test(tc, test_repo_data);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
