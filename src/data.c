/* data.c — N x D data sets in HDF5 files, read through row-block hyperslabs,
 * and the atomic writer behind every output file (docs/formats.md).
 *
 * Reading follows the HDF5 user guide's partial I/O pattern (a hyperslab of
 * the file space paired with a memory space of the same block), converting
 * any float type to native double inside H5Dread. Writing builds the file in
 * memory and hands its image to cnf_file_out (cnf/file.h): a temporary file
 * renamed over the target, so a reader never sees a half-written file and a
 * failure leaves the old one in place. */
#define _POSIX_C_SOURCE 200809L

#include "cnf/data.h"
#include "cnf/file.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnf/size.h"
#include "finite.h"
#include "h5_impl.h"

/* ---- Private helpers (h5_impl.h) ---------------------------------------- */

void cnf_h5_quiet_begin(cnf_h5_quiet *q)
{
    q->func = NULL;
    q->data = NULL;
    H5Eget_auto2(H5E_DEFAULT, &q->func, &q->data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

void cnf_h5_quiet_end(const cnf_h5_quiet *q)
{
    H5Eset_auto2(H5E_DEFAULT, q->func, q->data);
}

cnf_status cnf_h5_open_read(const char *file, hid_t *fid)
{
    *fid = H5I_INVALID_HID;
    cnf_status s = cnf_file_check_input(file);
    if (s != CNF_OK)
        return s;
    if (H5Fis_hdf5(file) <= 0)
        return cnf_error(CNF_EFORMAT, "'%s' is not an HDF5 file", file);
    hid_t id = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (id < 0)
        return cnf_error(CNF_EIO, "cannot open HDF5 file '%s' (damaged or locked?)", file);
    *fid = id;
    return CNF_OK;
}

int cnf_h5_exists(hid_t loc, const char *path)
{
    /* H5Lexists fails rather than answering "no" when an intermediate
     * component is missing, so walk the components one by one. */
    size_t n = strlen(path);
    char *buf = malloc(n + 1);
    if (!buf)
        return 0;
    memcpy(buf, path, n + 1);
    int ok = 1;
    for (size_t i = 1; i <= n && ok; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        if (buf[i - 1] == '/')
            continue;                       /* "//" or a trailing "/" */
        char saved = buf[i];
        buf[i] = '\0';
        if (strcmp(buf, "/") != 0 && strcmp(buf, ".") != 0 && H5Lexists(loc, buf, H5P_DEFAULT) <= 0)
            ok = 0;
        buf[i] = saved;
    }
    free(buf);
    return ok;
}

typedef struct {
    char *buf;
    size_t n, used;
} name_list;

static herr_t collect_name(hid_t g, const char *name, const H5L_info_t *info, void *ctx)
{
    (void)g;
    (void)info;
    name_list *l = ctx;
    int w = snprintf(l->buf + l->used, l->n - l->used, "%s/%s", l->used ? ", " : "", name);
    if (w < 0 || (size_t)w >= l->n - l->used) {
        l->used = l->n - 1;
        return 1;   /* full: stop */
    }
    l->used += (size_t)w;
    return 0;
}

/* "/train, /val" (the root's members) for "no such data set" messages. */
static void root_members(hid_t fid, char *buf, size_t n)
{
    name_list l = {buf, n, 0};
    buf[0] = '\0';
    hsize_t idx = 0;
    H5Literate(fid, H5_INDEX_NAME, H5_ITER_INC, &idx, collect_name, &l);
    if (!buf[0])
        snprintf(buf, n, "nothing");
}

/* The most a filter may shrink data: deflate's limit is 1032:1. */
#define MAX_COMPRESSION 1100

/* Refuse a float data set whose shape the file does not back with data:
 * the shape is read from the file, and a damaged one would have the reader
 * allocate for values that are not there (a few bytes claiming 2^40 rows).
 * Unfiltered data need every byte stored; compressed data at most
 * MAX_COMPRESSION times fewer. Data in other files (external storage,
 * virtual data sets) are refused: a file names only its own contents. */
static cnf_status check_stored(hid_t ds, hid_t type, const char *file, const char *path, int rank,
                               const hsize_t *d)
{
    size_t esize = H5Tget_size(type);
    if (esize == 0 || esize > 16)
        return cnf_error(CNF_EFORMAT, "%s:%s has a %zu-byte float type (expected 4 or 8)", file,
                         path, esize);
    size_t n = 1, need;
    for (int i = 0; i < rank; i++)
        if ((hsize_t)(size_t)d[i] != d[i] || cnf_size_mul(n, (size_t)d[i], &n))
            return cnf_error(CNF_ENOMEM, "%s:%s: its shape does not fit in memory", file, path);
    if (cnf_size_mul(n, esize, &need))
        return cnf_error(CNF_ENOMEM, "%s:%s: its %zu values do not fit in memory", file, path, n);
    hid_t dcpl = H5Dget_create_plist(ds);
    if (dcpl < 0)
        return cnf_error(CNF_EFORMAT, "%s:%s: unreadable storage properties", file, path);
    H5D_layout_t layout = H5Pget_layout(dcpl);
    int external = H5Pget_external_count(dcpl);
    int nfilters = H5Pget_nfilters(dcpl);
    int compressed = 0;
    for (int i = 0; i < nfilters; i++) {
        unsigned flags;
        size_t nelm = 0;
        H5Z_filter_t f = H5Pget_filter2(dcpl, (unsigned)i, &flags, &nelm, NULL, 0, NULL, NULL);
        if (f != H5Z_FILTER_FLETCHER32 && f != H5Z_FILTER_SHUFFLE)
            compressed = 1;
    }
    H5Pclose(dcpl);
    if (layout == H5D_VIRTUAL || external != 0 || nfilters < 0)
        return cnf_error(CNF_EFORMAT, "%s:%s keeps its values in other files (%s); refused",
                         file, path, layout == H5D_VIRTUAL ? "a virtual data set"
                                                           : "external storage");
    hsize_t stored = H5Dget_storage_size(ds);
    if (n > 0 && (compressed ? stored < need / MAX_COMPRESSION + 1 : stored < need))
        return cnf_error(CNF_EFORMAT, "%s:%s claims %zu values (%zu bytes) but stores %llu bytes "
                         "(damaged, or never written)", file, path, n, need,
                         (unsigned long long)stored);
    return CNF_OK;
}

cnf_status cnf_h5_float_shape(hid_t fid, const char *file, const char *path, int *rank,
                              hsize_t dims[2])
{
    if (!path || !path[0])
        return cnf_error(CNF_EINVAL, "%s: empty data set path", file);
    if (!cnf_h5_exists(fid, path)) {
        char members[256];
        root_members(fid, members, sizeof members);
        return cnf_error(CNF_EFORMAT, "%s: no data set %s (the file's root holds %s)", file,
                         path, members);
    }
    hid_t obj = H5Oopen(fid, path, H5P_DEFAULT);
    if (obj < 0)
        return cnf_error(CNF_EFORMAT, "%s:%s cannot be opened", file, path);
    H5I_type_t kind = H5Iget_type(obj);
    H5Oclose(obj);
    if (kind != H5I_DATASET)
        return cnf_error(CNF_EFORMAT, "%s:%s is a %s, not a data set", file, path,
                         kind == H5I_GROUP ? "group" : "named type");
    hid_t ds = H5Dopen2(fid, path, H5P_DEFAULT);
    if (ds < 0)
        return cnf_error(CNF_EFORMAT, "%s:%s cannot be opened as a data set", file, path);
    cnf_status s = CNF_OK;
    hid_t type = H5Dget_type(ds);
    hid_t space = H5Dget_space(ds);
    H5T_class_t cls = type >= 0 ? H5Tget_class(type) : H5T_NO_CLASS;
    if (cls != H5T_FLOAT) {
        const char *what = cls == H5T_INTEGER  ? "an integer"
                           : cls == H5T_STRING ? "a string"
                           : cls == H5T_COMPOUND ? "a compound"
                                                 : "a non-float";
        s = cnf_error(CNF_EFORMAT, "%s:%s has %s type; expected float32 or float64", file, path,
                      what);
    } else if (space < 0 || H5Sget_simple_extent_type(space) == H5S_NULL) {
        s = cnf_error(CNF_EFORMAT, "%s:%s has no data space (empty)", file, path);
    } else {
        int r = H5Sget_simple_extent_ndims(space);
        *rank = r;
        if (r >= 0 && r <= 2) {
            hsize_t d[2] = {0, 0};
            H5Sget_simple_extent_dims(space, d, NULL);
            dims[0] = d[0];
            dims[1] = d[1];
            s = check_stored(ds, type, file, path, r, d);
        }
    }
    if (space >= 0)
        H5Sclose(space);
    if (type >= 0)
        H5Tclose(type);
    H5Dclose(ds);
    return s;
}

cnf_status cnf_h5_read_doubles(hid_t fid, const char *file, const char *path, double *buf,
                               size_t n)
{
    hid_t ds = H5Dopen2(fid, path, H5P_DEFAULT);
    if (ds < 0)
        return cnf_error(CNF_EFORMAT, "%s:%s cannot be opened as a data set", file, path);
    cnf_status s = CNF_OK;
    hid_t fspace = H5Dget_space(ds);
    int rank = H5Sget_simple_extent_ndims(fspace);
    hssize_t total = H5Sget_simple_extent_npoints(fspace);
    if (rank < 0 || total < 0 || (size_t)total != n) {
        s = cnf_error(CNF_EFORMAT, "%s:%s holds %lld values, expected %zu", file, path,
                      (long long)total, n);
    } else if (n == 0) {
        /* nothing to read */
    } else if (rank != 2) {
        if (H5Dread(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)
            s = cnf_error(CNF_EIO, "%s:%s: read failed", file, path);
    } else {
        hsize_t dims[2];
        H5Sget_simple_extent_dims(fspace, dims, NULL);
        /* Row blocks: bounded conversion work per call, and the memory space
         * of each block maps straight into its rows of buf. */
        for (hsize_t r0 = 0; r0 < dims[0] && s == CNF_OK; r0 += CNF_DATA_READ_BLOCK) {
            hsize_t cnt[2] = {dims[0] - r0 < CNF_DATA_READ_BLOCK ? dims[0] - r0
                                                                 : CNF_DATA_READ_BLOCK,
                              dims[1]};
            hsize_t start[2] = {r0, 0};
            hid_t mspace = H5Screate_simple(2, cnt, NULL);
            if (mspace < 0 ||
                H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, cnt, NULL) < 0 ||
                H5Dread(ds, H5T_NATIVE_DOUBLE, mspace, fspace, H5P_DEFAULT,
                        buf + (size_t)r0 * (size_t)dims[1]) < 0)
                s = cnf_error(CNF_EIO, "%s:%s: read of rows %llu..%llu failed", file, path,
                              (unsigned long long)r0,
                              (unsigned long long)(r0 + cnt[0] - 1));
            if (mspace >= 0)
                H5Sclose(mspace);
        }
    }
    H5Sclose(fspace);
    H5Dclose(ds);
    return s;
}

/* Open a scalar (or one-element) attribute; -1 missing/not scalar */
static int attr_open(hid_t obj, const char *name, hid_t *attr)
{
    htri_t e = H5Aexists(obj, name);
    if (e == 0)
        return 1;
    if (e < 0)
        return -1;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0)
        return -1;
    hid_t sp = H5Aget_space(a);
    hssize_t np = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
    if (sp >= 0)
        H5Sclose(sp);
    if (np != 1) {
        H5Aclose(a);
        return -1;
    }
    *attr = a;
    return 0;
}

/* Does the attribute's type (ft) agree with the bytes it stores? The
 * type's size is read from the file: a damaged one would have the reader
 * allocate and convert gigabytes for a one-element attribute. */
static int attr_size_ok(hid_t a, hid_t ft)
{
    size_t sz = H5Tget_size(ft);
    return sz > 0 && (hsize_t)sz == H5Aget_storage_size(a);
}

int cnf_h5_attr_string(hid_t obj, const char *name, char *buf, size_t n)
{
    hid_t a;
    int rc = attr_open(obj, name, &a);
    if (rc != 0)
        return rc;
    rc = -1;
    hid_t ft = H5Aget_type(a);
    if (ft >= 0 && H5Tget_class(ft) == H5T_STRING) {
        hid_t mt = H5Tcopy(H5T_C_S1);
        if (H5Tis_variable_str(ft) > 0) {
            /* files of other writers (h5py's str); ours are fixed-length */
            char *s = NULL;
            H5Tset_size(mt, H5T_VARIABLE);
            H5Tset_cset(mt, H5Tget_cset(ft));
            if (H5Aread(a, mt, &s) >= 0 && s) {
                if (strlen(s) < n) {
                    memcpy(buf, s, strlen(s) + 1);
                    rc = 0;
                }
                H5free_memory(s);
            }
        } else if (attr_size_ok(a, ft)) {
            /* a string longer than buf cannot be one of ours: refused
             * rather than cut short */
            size_t sz = H5Tget_size(ft);
            char *tmp = sz < n ? malloc(sz + 1) : NULL;
            if (tmp) {
                H5Tset_size(mt, sz + 1);
                H5Tset_strpad(mt, H5T_STR_NULLTERM);
                H5Tset_cset(mt, H5Tget_cset(ft));
                if (H5Aread(a, mt, tmp) >= 0) {
                    tmp[sz] = '\0';
                    memcpy(buf, tmp, strlen(tmp) + 1);
                    rc = 0;
                }
                free(tmp);
            }
        }
        H5Tclose(mt);
    }
    if (ft >= 0)
        H5Tclose(ft);
    H5Aclose(a);
    return rc;
}

static int attr_numeric(hid_t obj, const char *name, hid_t memtype, void *value,
                        int integer_only)
{
    hid_t a;
    int rc = attr_open(obj, name, &a);
    if (rc != 0)
        return rc;
    rc = -1;
    hid_t ft = H5Aget_type(a);
    H5T_class_t c = ft >= 0 ? H5Tget_class(ft) : H5T_NO_CLASS;
    /* at most 16 bytes: the widest float HDF5 converts; integers up to 8 */
    size_t sz = ft >= 0 ? H5Tget_size(ft) : 0;
    int sized = attr_size_ok(a, ft) && sz <= (c == H5T_INTEGER ? 8u : 16u);
    if ((c == H5T_INTEGER || (!integer_only && c == H5T_FLOAT)) && sized &&
        H5Aread(a, memtype, value) >= 0)
        rc = 0;
    if (ft >= 0)
        H5Tclose(ft);
    H5Aclose(a);
    return rc;
}

int cnf_h5_attr_double(hid_t obj, const char *name, double *value)
{
    return attr_numeric(obj, name, H5T_NATIVE_DOUBLE, value, 0);
}

int cnf_h5_attr_llong(hid_t obj, const char *name, long long *value)
{
    /* A float attribute holding an integral value (some writers store
     * everything as float64) is accepted too. */
    int rc = attr_numeric(obj, name, H5T_NATIVE_LLONG, value, 1);
    if (rc == -1) {
        double d;
        if (attr_numeric(obj, name, H5T_NATIVE_DOUBLE, &d, 0) == 0 && d == floor(d) &&
            fabs(d) < 9.0e15) {
            *value = (long long)d;
            rc = 0;
        }
    }
    return rc;
}

int cnf_h5_attr_ullong(hid_t obj, const char *name, unsigned long long *value)
{
    return attr_numeric(obj, name, H5T_NATIVE_ULLONG, value, 1);
}

/* ---- Addresses ---------------------------------------------------------- */

cnf_status cnf_data_address_parse(const char *text, const char *default_path,
                                  cnf_data_address *addr)
{
    if (!text || !text[0])
        return cnf_error(CNF_EINVAL, "empty data address (expected file.h5:/path)");
    const char *sep = NULL;
    for (const char *p = text; (p = strchr(p, ':')) != NULL; p++)
        if (p[1] == '/')
            sep = p;
    size_t flen = sep ? (size_t)(sep - text) : strlen(text);
    const char *path = sep ? sep + 1 : default_path;
    if (flen == 0)
        return cnf_error(CNF_EINVAL, "data address '%s' has no file name (expected file.h5:/path)",
                         text);
    if (!path || !path[0])
        return cnf_error(CNF_EINVAL,
                         "data address '%s' names no data set (expected file.h5:/path)", text);
    if (flen >= sizeof addr->file)
        return cnf_error(CNF_EINVAL, "file name in '%s' is too long", text);
    int w = path[0] == '/' ? snprintf(addr->path, sizeof addr->path, "%s", path)
                           : snprintf(addr->path, sizeof addr->path, "/%s", path);
    if (w < 0 || (size_t)w >= sizeof addr->path)
        return cnf_error(CNF_EINVAL, "data set path in '%s' is too long", text);
    memcpy(addr->file, text, flen);
    addr->file[flen] = '\0';
    return CNF_OK;
}

/* ---- Reading ------------------------------------------------------------ */

static cnf_status data_shape(hid_t fid, const char *file, const char *path, hsize_t dims[2])
{
    int rank = -1;
    cnf_status s = cnf_h5_float_shape(fid, file, path, &rank, dims);
    if (s != CNF_OK)
        return s;
    if (rank == 1)
        return cnf_error(CNF_EDIM,
                         "%s:%s has rank 1 (shape (%llu)); a data set must be 2-D, N x D "
                         "(store N one-dimensional points as N x 1)",
                         file, path, (unsigned long long)dims[0]);
    if (rank != 2)
        return cnf_error(CNF_EDIM, "%s:%s has rank %d; a data set must be 2-D, N x D", file, path,
                         rank);
    if (dims[0] == 0)
        return cnf_error(CNF_EDIM, "%s:%s has zero rows", file, path);
    if (dims[1] == 0)
        return cnf_error(CNF_EDIM, "%s:%s has zero columns", file, path);
    return CNF_OK;
}

cnf_status cnf_data_shape(const char *file, const char *path, size_t *N, size_t *D)
{
    cnf_h5_quiet q;
    cnf_h5_quiet_begin(&q);
    hid_t fid;
    hsize_t dims[2] = {0, 0};
    cnf_status s = cnf_h5_open_read(file, &fid);
    if (s == CNF_OK) {
        s = data_shape(fid, file, path, dims);
        H5Fclose(fid);
    }
    cnf_h5_quiet_end(&q);
    if (N)
        *N = s == CNF_OK ? (size_t)dims[0] : 0;
    if (D)
        *D = s == CNF_OK ? (size_t)dims[1] : 0;
    return s;
}

/* Read a whole float data set as doubles (malloc'd into *out), with HDF5's
 * error printing off: a matrix must be N x D (data_shape's checks), a vector
 * rank 0 or 1 (then dims = {n, 1}). One path for both, so that the checks,
 * the overflow guard and the clean-up cannot drift apart. */
static cnf_status read_all(const char *file, const char *path, int want_vector, double **out,
                           hsize_t dims[2])
{
    *out = NULL;
    dims[0] = dims[1] = 0;
    cnf_h5_quiet q;
    cnf_h5_quiet_begin(&q);
    hid_t fid;
    cnf_status s = cnf_h5_open_read(file, &fid);
    if (s != CNF_OK) {
        cnf_h5_quiet_end(&q);
        return s;
    }
    if (want_vector) {
        int rank = -1;
        s = cnf_h5_float_shape(fid, file, path, &rank, dims);
        if (s == CNF_OK && rank > 1)
            s = cnf_error(CNF_EDIM, "%s:%s has rank %d; expected a vector (rank 1)", file,
                          path, rank);
        if (s == CNF_OK) {
            dims[0] = rank == 0 ? 1 : dims[0];
            dims[1] = 1;
        }
    } else {
        s = data_shape(fid, file, path, dims);
    }
    double *buf = NULL;
    if (s == CNF_OK) {
        size_t n;
        if ((hsize_t)(size_t)dims[0] != dims[0] || (hsize_t)(size_t)dims[1] != dims[1]
            || cnf_size_mul3((size_t)dims[0], (size_t)dims[1], sizeof(double), &n)) {
            s = cnf_error(CNF_ENOMEM, "%s:%s: %llu x %llu values do not fit in memory", file,
                          path, (unsigned long long)dims[0], (unsigned long long)dims[1]);
        } else {
            n = (size_t)dims[0] * (size_t)dims[1];   /* checked above */
            buf = malloc((n ? n : 1) * sizeof *buf);
            if (!buf)
                s = cnf_error(CNF_ENOMEM, "%s:%s: out of memory for %llu x %llu values", file,
                              path, (unsigned long long)dims[0], (unsigned long long)dims[1]);
            else
                s = cnf_h5_read_doubles(fid, file, path, buf, n);
        }
    }
    H5Fclose(fid);
    cnf_h5_quiet_end(&q);
    if (s != CNF_OK) {
        free(buf);
        return s;
    }
    *out = buf;
    return CNF_OK;
}

cnf_status cnf_data_read(const char *file, const char *path, double **X, size_t *N,
                         size_t *D)
{
    hsize_t dims[2];
    cnf_status s = read_all(file, path, 0, X, dims);
    *N = (size_t)dims[0];
    *D = (size_t)dims[1];
    if (s != CNF_OK)
        *N = *D = 0;
    return s;
}

cnf_status cnf_data_read_address(const char *text, const char *default_path, double **X,
                                 size_t *N, size_t *D)
{
    *X = NULL;
    *N = *D = 0;
    cnf_data_address *a = malloc(sizeof *a);
    if (!a)
        return cnf_error(CNF_ENOMEM, "out of memory");
    cnf_status s = cnf_data_address_parse(text, default_path, a);
    if (s == CNF_OK)
        s = cnf_data_read(a->file, a->path, X, N, D);
    free(a);
    return s;
}

cnf_status cnf_data_read_vector(const char *file, const char *path, double **x, size_t *n)
{
    hsize_t dims[2];
    cnf_status s = read_all(file, path, 1, x, dims);
    *n = s == CNF_OK ? (size_t)dims[0] : 0;
    return s;
}

cnf_status cnf_data_check_finite(const double *X, size_t N, size_t D, const char *name)
{
    return cnf_rows_check_finite(X, N, D, name);
}

/* ---- The atomic writer -------------------------------------------------- */

struct cnf_h5_writer {
    cnf_file_out *out;    /* the temporary file and the target (cnf/file.h) */
    hid_t fid;            /* the HDF5 file, built in memory */
    unsigned char *image; /* its memory, ours once HDF5 has closed it */
    size_t image_cap;     /* bytes allocated for it */
    cnf_status failed;    /* first failure, CNF_OK if none */
    char message[512];    /* its message, to repeat at commit */
};

hid_t cnf_h5_writer_fid(const cnf_h5_writer *w)
{
    return w->fid;
}

const char *cnf_h5_writer_path(const cnf_h5_writer *w)
{
    return cnf_file_out_path(w->out);
}

static void writer_dispose(cnf_h5_writer *w)
{
    if (w->fid >= 0)
        H5Fclose(w->fid);   /* in memory: nothing to write, so it cannot fail on a full disk */
    free(w->image);
    cnf_file_out_abort(w->out);
    free(w);
}

/* The in-memory file's allocator (H5Pset_file_image_callbacks), so that the
 * writer keeps the memory when HDF5 closes the file: the bytes as the close
 * left them are the file. (H5Fget_file_image would copy them, doubling the
 * memory, and in HDF5 1.10 its copy of a superblock of version 2 or later
 * has its status flags cleared but the checksum not updated, so such a
 * file would not open.) */
static void *image_malloc(size_t size, H5FD_file_image_op_t op, void *udata)
{
    (void)op;
    cnf_h5_writer *w = udata;
    void *p = malloc(size);
    if (p && op == H5FD_FILE_IMAGE_OP_FILE_OPEN)
        w->image_cap = size;
    return p;
}

static void *image_memcpy(void *dest, const void *src, size_t size, H5FD_file_image_op_t op,
                          void *udata)
{
    (void)op;
    (void)udata;
    return memcpy(dest, src, size);
}

static void *image_realloc(void *ptr, size_t size, H5FD_file_image_op_t op, void *udata)
{
    cnf_h5_writer *w = udata;
    void *p = realloc(ptr, size);
    if (p && op == H5FD_FILE_IMAGE_OP_FILE_RESIZE)
        w->image_cap = size;
    return p;
}

static herr_t image_free(void *ptr, H5FD_file_image_op_t op, void *udata)
{
    cnf_h5_writer *w = udata;
    if (op != H5FD_FILE_IMAGE_OP_FILE_CLOSE) {
        free(ptr);
        return 0;
    }
    /* the file's own close comes last (after any probe HDF5 makes while it
     * creates the file) */
    free(w->image);
    w->image = ptr;
    return 0;
}

static void *image_udata_copy(void *udata)
{
    return udata;   /* the writer, not owned by the property lists */
}

static herr_t image_udata_free(void *udata)
{
    (void)udata;
    return 0;
}

/* Growth step of the in-memory file: a model fits in one or two steps (a
 * step of 1 MiB made each --save-every save pay for a megabyte of fresh
 * pages); a large data set grows by reallocation. */
#define WRITER_CORE_INCREMENT ((size_t)1 << 16)

cnf_h5_writer *cnf_h5_writer_open(const char *final_path)
{
    cnf_file_out *out = cnf_file_out_open(final_path);
    if (!out)
        return NULL;
    cnf_h5_writer *w = calloc(1, sizeof *w);
    if (!w) {
        cnf_file_out_abort(out);
        cnf_error(CNF_ENOMEM, "out of memory");
        return NULL;
    }
    w->out = out;
    w->fid = H5I_INVALID_HID;
    /* HDF5 builds the file in memory (the core driver without a backing
     * store) and the commit writes it through cnf_file_out: HDF5 1.10 keeps
     * a file whose close failed (a full disk while it flushes) registered
     * after freeing it, and crashes in its exit handler or at the next file
     * it opens; a close that does no I/O cannot fail so. */
    H5FD_file_image_callbacks_t cb = {image_malloc, image_memcpy, image_realloc, image_free,
                                      image_udata_copy, image_udata_free, w};
    cnf_h5_quiet q;
    cnf_h5_quiet_begin(&q);
    /* The newest format: its superblock, object headers, B-trees and heaps
     * carry checksums, so a damaged file is refused by HDF5 instead of read
     * (the oldest, HDF5's default, has none). */
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl >= 0 && H5Pset_fapl_core(fapl, WRITER_CORE_INCREMENT, 0) >= 0 &&
        H5Pset_file_image_callbacks(fapl, &cb) >= 0 &&
        H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST) >= 0)
        w->fid = H5Fcreate(cnf_file_out_temp_path(out), H5F_ACC_EXCL, H5P_DEFAULT, fapl);
    if (fapl >= 0)
        H5Pclose(fapl);
    cnf_h5_quiet_end(&q);
    if (w->fid < 0) {
        cnf_error(CNF_EIO, "cannot create an HDF5 file for '%s'", final_path);
        writer_dispose(w);
        return NULL;
    }
    return w;
}

/* Record the first failure so that commit refuses; returns status. */
static cnf_status writer_fail(cnf_h5_writer *w, cnf_status status)
{
    if (w->failed == CNF_OK) {
        w->failed = status;
        snprintf(w->message, sizeof w->message, "%s", cnf_last_error());
    }
    return status;
}

static cnf_status writer_ready(cnf_h5_writer *w)
{
    if (!w)
        return cnf_error(CNF_EINVAL, "no writer");
    if (w->failed != CNF_OK)
        return cnf_error(w->failed, "%s", w->message);
    return CNF_OK;
}

/* Create the groups along path; with last = 0 the last component is left
 * alone (it is the object about to be created). */
static cnf_status make_groups(cnf_h5_writer *w, const char *path, int last)
{
    size_t n = strlen(path);
    char *buf = malloc(n + 2);
    if (!buf)
        return cnf_error(CNF_ENOMEM, "out of memory");
    snprintf(buf, n + 2, "%s", path);
    size_t end = n;
    if (!last) {
        char *slash = strrchr(buf, '/');
        end = slash ? (size_t)(slash - buf) : 0;
    }
    cnf_status s = CNF_OK;
    for (size_t i = 1; i <= end && s == CNF_OK; i++) {
        if (i < end && buf[i] != '/')
            continue;
        if (buf[i - 1] == '/')
            continue;
        char saved = buf[i];
        buf[i] = '\0';
        htri_t e = H5Lexists(w->fid, buf, H5P_DEFAULT);
        if (e < 0) {
            s = cnf_error(CNF_EIO, "%s: cannot look up %s", cnf_h5_writer_path(w), buf);
        } else if (e == 0) {
            hid_t g = H5Gcreate2(w->fid, buf, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
            if (g < 0)
                s = cnf_error(CNF_EIO, "%s: cannot create group %s", cnf_h5_writer_path(w), buf);
            else
                H5Gclose(g);
        }
        buf[i] = saved;
    }
    free(buf);
    return s;
}

cnf_status cnf_h5_writer_group(cnf_h5_writer *w, const char *path)
{
    cnf_status s = writer_ready(w);
    if (s != CNF_OK)
        return s;
    cnf_h5_quiet q;
    cnf_h5_quiet_begin(&q);
    s = make_groups(w, path, 1);
    cnf_h5_quiet_end(&q);
    return s == CNF_OK ? s : writer_fail(w, s);
}

/* Elements per chunk: 512 KiB of doubles, well inside HDF5's default chunk
 * cache and its 4 GiB chunk limit. */
#define CHUNK_ELEMENTS 65536

/* The creation property list of a data set: chunked with the Fletcher-32
 * filter, so that a damaged value is reported by H5Dread rather than
 * returned (HDF5 checks the checksum of every chunk it reads). A scalar or
 * an empty data set cannot be chunked and gets the default (contiguous)
 * layout. H5I_INVALID_HID if the list cannot be made. */
static hid_t data_checksum_plist(int rank, const hsize_t *dims, hssize_t npts)
{
    if (rank == 0 || npts <= 0)
        return H5P_DEFAULT;
    hsize_t chunk[2];
    hsize_t budget = CHUNK_ELEMENTS;
    for (int i = rank - 1; i >= 0; i--) {   /* whole rows first */
        chunk[i] = dims[i] < budget ? dims[i] : budget;
        budget = budget / chunk[i] ? budget / chunk[i] : 1;
    }
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (dcpl < 0)
        return H5I_INVALID_HID;
    if (H5Pset_chunk(dcpl, rank, chunk) < 0 || H5Pset_fletcher32(dcpl) < 0) {
        H5Pclose(dcpl);
        return H5I_INVALID_HID;
    }
    return dcpl;
}

static cnf_status write_dataset(cnf_h5_writer *w, const char *path, hid_t filetype,
                                hid_t memtype, const void *data, int rank,
                                const hsize_t *dims)
{
    cnf_status s = writer_ready(w);
    if (s != CNF_OK)
        return s;
    if (!path || path[0] != '/')
        return writer_fail(w, cnf_error(CNF_EINVAL, "%s: data set path '%s' must start with '/'",
                                        cnf_h5_writer_path(w), path ? path : ""));
    cnf_h5_quiet q;
    cnf_h5_quiet_begin(&q);
    s = make_groups(w, path, 0);
    if (s == CNF_OK) {
        hid_t space = rank == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(rank, dims, NULL);
        hssize_t npts = space >= 0 ? H5Sget_simple_extent_npoints(space) : 0;
        hid_t dcpl = data_checksum_plist(rank, dims, npts);
        hid_t ds = space >= 0 && dcpl >= 0
                       ? H5Dcreate2(w->fid, path, filetype, space, H5P_DEFAULT, dcpl, H5P_DEFAULT)
                       : H5I_INVALID_HID;
        if (dcpl >= 0 && dcpl != H5P_DEFAULT)
            H5Pclose(dcpl);
        if (ds < 0)
            s = cnf_error(CNF_EIO, "%s: cannot create data set %s", cnf_h5_writer_path(w), path);
        else if (npts > 0 && H5Dwrite(ds, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
            s = cnf_error(CNF_EIO, "%s: cannot write data set %s", cnf_h5_writer_path(w), path);
        if (ds >= 0)
            H5Dclose(ds);
        if (space >= 0)
            H5Sclose(space);
    }
    cnf_h5_quiet_end(&q);
    return s == CNF_OK ? s : writer_fail(w, s);
}

cnf_status cnf_h5_writer_write_1d(cnf_h5_writer *w, const char *path, const double *x,
                                  size_t n)
{
    hsize_t dims[1] = {n};
    return write_dataset(w, path, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, x, 1, dims);
}

cnf_status cnf_h5_writer_write_2d(cnf_h5_writer *w, const char *path, const double *X,
                                  size_t rows, size_t cols)
{
    hsize_t dims[2] = {rows, cols};
    return write_dataset(w, path, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, X, 2, dims);
}

cnf_status cnf_h5_writer_write_scalar(cnf_h5_writer *w, const char *path, double value)
{
    return write_dataset(w, path, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value, 0, NULL);
}

cnf_status cnf_h5_writer_write_bytes(cnf_h5_writer *w, const char *path,
                                     const unsigned char *bytes, size_t n)
{
    hsize_t dims[1] = {n};
    return write_dataset(w, path, H5T_STD_U8LE, H5T_NATIVE_UCHAR, bytes, 1, dims);
}

static cnf_status write_attr(cnf_h5_writer *w, const char *obj_path, const char *name,
                             hid_t filetype, hid_t memtype, const void *value, size_t n,
                             int scalar)
{
    cnf_status s = writer_ready(w);
    if (s != CNF_OK)
        return s;
    if (!name || !name[0])
        return writer_fail(w, cnf_error(CNF_EINVAL, "%s: empty attribute name", cnf_h5_writer_path(w)));
    const char *obj = obj_path && obj_path[0] ? obj_path : "/";
    cnf_h5_quiet q;
    cnf_h5_quiet_begin(&q);
    s = make_groups(w, obj, 1);   /* creates only what is missing */
    hid_t o = s == CNF_OK ? H5Oopen(w->fid, obj, H5P_DEFAULT) : H5I_INVALID_HID;
    if (s == CNF_OK && o < 0)
        s = cnf_error(CNF_EIO, "%s: cannot open %s for attribute %s", cnf_h5_writer_path(w), obj, name);
    if (s == CNF_OK) {
        if (H5Aexists(o, name) > 0)
            H5Adelete(o, name);
        hsize_t dims[1] = {n};
        hid_t space = scalar ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, dims, NULL);
        hid_t a = space >= 0 ? H5Acreate2(o, name, filetype, space, H5P_DEFAULT, H5P_DEFAULT)
                             : H5I_INVALID_HID;
        if (a < 0 || ((scalar || n > 0) && H5Awrite(a, memtype, value) < 0))
            s = cnf_error(CNF_EIO, "%s: cannot write attribute %s of %s", cnf_h5_writer_path(w), name,
                          obj);
        if (a >= 0)
            H5Aclose(a);
        if (space >= 0)
            H5Sclose(space);
    }
    if (o >= 0)
        H5Oclose(o);
    cnf_h5_quiet_end(&q);
    return s == CNF_OK ? s : writer_fail(w, s);
}

cnf_status cnf_h5_writer_attr_string(cnf_h5_writer *w, const char *obj_path,
                                     const char *name, const char *value)
{
    /* Fixed-length UTF-8 (h5py reads it as bytes): it lives in the object
     * header, which the newest format checksums. A variable-length string
     * (h5py's str) would live in the global heap, which has no checksum in
     * any format and whose damage crashes HDF5 1.10 inside H5Aread. */
    const char *v = value ? value : "";
    size_t len = strlen(v);
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0)
        return writer_fail(w, cnf_error(CNF_EIO, "%s: cannot make a string type",
                                        cnf_h5_writer_path(w)));
    H5Tset_size(t, len ? len : 1);   /* HDF5 has no zero-length string type */
    H5Tset_cset(t, H5T_CSET_UTF8);
    H5Tset_strpad(t, H5T_STR_NULLPAD);
    cnf_status s = write_attr(w, obj_path, name, t, t, len ? v : "", 1, 1);
    H5Tclose(t);
    return s;
}

cnf_status cnf_h5_writer_attr_int(cnf_h5_writer *w, const char *obj_path, const char *name,
                                  long long value)
{
    return write_attr(w, obj_path, name, H5T_STD_I64LE, H5T_NATIVE_LLONG, &value, 1, 1);
}

cnf_status cnf_h5_writer_attr_uint(cnf_h5_writer *w, const char *obj_path,
                                   const char *name, unsigned long long value)
{
    return write_attr(w, obj_path, name, H5T_STD_U64LE, H5T_NATIVE_ULLONG, &value, 1, 1);
}

cnf_status cnf_h5_writer_attr_double(cnf_h5_writer *w, const char *obj_path,
                                     const char *name, double value)
{
    return write_attr(w, obj_path, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value, 1, 1);
}

cnf_status cnf_h5_writer_attr_doubles(cnf_h5_writer *w, const char *obj_path,
                                      const char *name, const double *values, size_t n)
{
    return write_attr(w, obj_path, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, values, n, 0);
}

cnf_status cnf_h5_writer_commit(cnf_h5_writer *w)
{
    if (!w)
        return cnf_error(CNF_EINVAL, "no writer to commit");
    if (w->failed != CNF_OK) {
        cnf_status s = cnf_error(w->failed, "%s", w->message);
        writer_dispose(w);
        return s;
    }
    const char *path = cnf_h5_writer_path(w);
    cnf_h5_quiet q;
    cnf_h5_quiet_begin(&q);
    cnf_status s = CNF_OK;
    /* The file's size: its end of allocation once everything is flushed
     * (H5Fget_file_image with no buffer only reports it). */
    ssize_t n = H5Fflush(w->fid, H5F_SCOPE_GLOBAL) < 0 ? -1
                                                         : H5Fget_file_image(w->fid, NULL, 0);
    if (H5Fclose(w->fid) < 0 || n < 0)
        s = cnf_error(CNF_EIO, "%s: cannot finish the HDF5 file", path);
    w->fid = H5I_INVALID_HID;
    cnf_h5_quiet_end(&q);
    if (s == CNF_OK && (!w->image || (size_t)n > w->image_cap))
        s = cnf_error(CNF_EIO, "%s: the HDF5 file's memory was not handed back", path);
    if (s == CNF_OK)
        s = cnf_file_out_write(w->out, w->image, (size_t)n);
    if (s != CNF_OK) {
        writer_dispose(w);
        return s;
    }
    s = cnf_file_out_commit(w->out);   /* frees out, removes the temporary on failure */
    free(w->image);
    free(w);
    return s;
}

void cnf_h5_writer_abort(cnf_h5_writer *w)
{
    if (!w)
        return;
    cnf_h5_quiet q;
    cnf_h5_quiet_begin(&q);
    writer_dispose(w);
    cnf_h5_quiet_end(&q);
}

/* ---- Data files --------------------------------------------------------- */

cnf_status cnf_data_write_splits(const char *file, const double *train, size_t n_train,
                                 const double *val, size_t n_val, const double *test,
                                 size_t n_test, size_t D, const char *source,
                                 const char *preprocessing)
{
    return cnf_data_write_splits_columns(file, train, n_train, val, n_val, test, n_test, D,
                                         source, preprocessing, NULL);
}

cnf_status cnf_data_write_splits_columns(const char *file, const double *train,
                                         size_t n_train, const double *val, size_t n_val,
                                         const double *test, size_t n_test, size_t D,
                                         const char *source, const char *preprocessing,
                                         const char *columns)
{
    if (D == 0)
        return cnf_error(CNF_EDIM, "%s: data dimension must be at least 1", file);
    cnf_h5_writer *w = cnf_h5_writer_open(file);
    if (!w)
        return CNF_EIO;
    cnf_status s = cnf_h5_writer_write_2d(w, "/train", train, n_train, D);
    if (s == CNF_OK)
        s = cnf_h5_writer_write_2d(w, "/val", val, n_val, D);
    if (s == CNF_OK)
        s = cnf_h5_writer_write_2d(w, "/test", test, n_test, D);
    if (s == CNF_OK)
        s = cnf_h5_writer_attr_string(w, "/", "format", CNF_DATA_FORMAT);
    if (s == CNF_OK)
        s = cnf_h5_writer_attr_int(w, "/", "version", CNF_DATA_VERSION);
    if (s == CNF_OK)
        s = cnf_h5_writer_attr_string(w, "/", "source", source ? source : "");
    if (s == CNF_OK)
        s = cnf_h5_writer_attr_string(w, "/", "preprocessing", preprocessing ? preprocessing : "");
    if (s == CNF_OK)
        s = cnf_h5_writer_attr_int(w, "/", "dim", (long long)D);
    if (s == CNF_OK)
        s = cnf_h5_writer_attr_int(w, "/", "n_train", (long long)n_train);
    if (s == CNF_OK)
        s = cnf_h5_writer_attr_int(w, "/", "n_val", (long long)n_val);
    if (s == CNF_OK)
        s = cnf_h5_writer_attr_int(w, "/", "n_test", (long long)n_test);
    if (s == CNF_OK && columns)
        s = cnf_h5_writer_attr_string(w, "/", "columns", columns);
    if (s != CNF_OK) {
        cnf_h5_writer_abort(w);
        return s;
    }
    return cnf_h5_writer_commit(w);
}

cnf_status cnf_data_read_attr_string(const char *file, const char *obj, const char *name,
                                     char *buf, size_t n, int *found)
{
    *found = 0;
    if (n)
        buf[0] = '\0';
    cnf_h5_quiet q;
    cnf_h5_quiet_begin(&q);
    hid_t fid;
    cnf_status s = cnf_h5_open_read(file, &fid);
    if (s == CNF_OK) {
        hid_t o = H5Oopen(fid, obj, H5P_DEFAULT);
        if (o < 0) {
            s = cnf_error(CNF_EFORMAT, "%s: no object %s", file, obj);
        } else {
            int rc = cnf_h5_attr_string(o, name, buf, n);
            if (rc < 0)
                s = cnf_error(CNF_EFORMAT, "%s:%s: attribute %s is not a string", file, obj,
                              name);
            *found = rc == 0;
            H5Oclose(o);
        }
        H5Fclose(fid);
    }
    cnf_h5_quiet_end(&q);
    return s;
}
