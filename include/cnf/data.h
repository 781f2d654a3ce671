/* cnf/data.h — data sets in HDF5 files and the atomic HDF5 writer that every
 * output file of cnf goes through (docs/formats.md).
 *
 * Data sets. A data set is a 2-D array N x D of floating-point numbers
 * (float32 or float64, any byte order; converted to double on reading) inside
 * an HDF5 file, named by an address
 *
 *     file.h5:/path/to/dataset        e.g.  data/faithful.h5:/test
 *
 * The address is split at the LAST ':' that is followed by '/'; without such
 * a ':' the whole text is the file name and the caller's default path (e.g.
 * "/test") is used. A file made by the toolkit holds /train, /val and /test
 * (float64) and the root attributes format = "cnf-data", version = 1,
 * source, preprocessing, dim, n_train, n_val, n_test, and, when the data
 * came from a CSV file with a header, columns (the column names as one CSV
 * line, cnf/csv.h). Readers never require
 * any attribute: a user's own HDF5 file has none of them.
 *
 * Rank. Data sets must have rank 2. A rank-1 data set (a plain vector) is
 * refused with CNF_EDIM and a message giving its rank and the hint to store
 * it as N x 1 — a silent reshape could turn a D-dimensional point into D
 * one-dimensional points. Rows are read in blocks of CNF_DATA_READ_BLOCK rows
 * through HDF5 hyperslabs (never element by element, never one huge
 * conversion buffer).
 *
 * Errors (each message names the file and data set):
 *   CNF_EIO      file missing or unreadable, or not a regular file (a
 *                directory, a device, a FIFO: cnf_file_check_input); a value
 *                that fails its data set's Fletcher-32 checksum (files cnf
 *                writes have one)
 *   CNF_EFORMAT  not an HDF5 file; the path is not a data set; non-float type;
 *                a shape the file does not back with data (fewer bytes
 *                stored than the shape needs, or at most 1100 times fewer
 *                when compressed: damaged, or never written), checked before
 *                anything is allocated; values kept in other files (external
 *                storage, virtual data sets)
 *   CNF_EDIM     rank other than 2; zero rows or zero columns
 *   CNF_EDATA    NaN/Inf (cnf_data_check_finite, a separate call)
 *   CNF_ENOMEM   out of memory
 *
 * HDF5's own error printing. HDF5 prints its error stack to stderr by
 * default; every function of cnf that calls HDF5 (this header and
 * cnf/io.h) switches that printing off for the duration of the call and
 * restores the caller's setting before returning, so the library never
 * prints and a program's own HDF5 settings are left alone.
 *
 * Atomic writes. Every output file goes through cnf_file_out (cnf/file.h):
 * written to a temporary file "<target>.cnf-tmp.<pid>.<n>" in the target's
 * directory and renamed over the target only when complete, so that an
 * error, a full disk or a crash never leaves a half-written file and never
 * changes an existing one; what may be replaced (regular files, symbolic
 * links written through), the permission bits a rewrite keeps and the
 * removal of stale temporaries are described there. The HDF5 file itself is
 * built in memory (HDF5's core driver) and written out at the commit, so
 * writing an output takes memory for its size beside the caller's arrays;
 * every failure to write it is then an ordinary write(2) error, reported
 * with its reason ("No space left on device"), and HDF5 never holds a file
 * it could not close.
 *
 * Typical calls:
 *
 *     cnf_data_address a;
 *     if (cnf_data_address_parse(arg, "/test", &a) != CNF_OK) ...;
 *     double *X; size_t N, D;
 *     if (cnf_data_read(a.file, a.path, &X, &N, &D) != CNF_OK
 *         || cnf_data_check_finite(X, N, D, arg) != CNF_OK) {
 *         fprintf(stderr, "cnf: %s\n", cnf_last_error());  ...
 *     }
 *     free(X);
 *
 *     cnf_h5_writer *w = cnf_h5_writer_open("out.h5");   // NULL: see message
 *     if (!w) ...;
 *     cnf_status s = cnf_h5_writer_write_1d(w, "/loglik", loglik, N);
 *     if (s == CNF_OK) s = cnf_h5_writer_attr_string(w, "/", "format", "cnf-loglik");
 *     if (s == CNF_OK) s = cnf_h5_writer_commit(w);        // frees w
 *     else cnf_h5_writer_abort(w);                         // frees w
 */
#ifndef CNF_DATA_H
#define CNF_DATA_H

#include <stddef.h>

#include "cnf/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Rows per hyperslab read. */
#define CNF_DATA_READ_BLOCK 65536

/* Buffer sizes of cnf_data_address. */
#define CNF_DATA_FILE_MAX 4096
#define CNF_DATA_PATH_MAX 1024

/* A parsed address "file.h5:/path". */
typedef struct {
    char file[CNF_DATA_FILE_MAX];   /* the file name */
    char path[CNF_DATA_PATH_MAX];   /* the data set path, starting with '/' */
} cnf_data_address;

/* Split text into file and path (see the top of this header). default_path
 * (e.g. "/test") is used when text has no ":/path" part; it may be NULL, and
 * then an address without a path is CNF_EINVAL. CNF_EINVAL also for an empty
 * file name or names too long for the buffers. */
cnf_status cnf_data_address_parse(const char *text, const char *default_path,
                                  cnf_data_address *addr);

/* The shape of the 2-D float data set path in file without reading it
 * (same checks and errors as cnf_data_read). Either output may be NULL. */
cnf_status cnf_data_shape(const char *file, const char *path, size_t *N, size_t *D);

/* Read the 2-D float data set path of file into a new array.
 *   *X: N x D row-major doubles, malloc'd, owned by the caller (free()).
 * On failure *X is NULL and *N = *D = 0. Values are not checked for NaN/Inf;
 * call cnf_data_check_finite. */
cnf_status cnf_data_read(const char *file, const char *path, double **X, size_t *N,
                         size_t *D);

/* cnf_data_read on a parsed address text (cnf_data_address_parse). */
cnf_status cnf_data_read_address(const char *text, const char *default_path, double **X,
                                 size_t *N, size_t *D);

/* Read a float data set of rank 1 (or a scalar, n = 1) into a new array
 * (*x: n, malloc'd, caller frees). For vectors such as /loglik. */
cnf_status cnf_data_read_vector(const char *file, const char *path, double **x, size_t *n);

/* The string attribute name on object obj ("/" for the root) of file, into
 * buf (n bytes; a longer value is truncated to fit). A missing attribute is
 * CNF_OK with *found = 0 and buf empty; CNF_EIO or CNF_EFORMAT for a file
 * that cannot be read or has no object obj, CNF_EFORMAT for an attribute
 * that is not a string. For the optional attributes of data files, such as
 * "columns" (cnf/csv.h). */
cnf_status cnf_data_read_attr_string(const char *file, const char *obj, const char *name,
                                     char *buf, size_t n, int *found);

/* CNF_OK if every entry of X (N x D) is finite; otherwise CNF_EDATA with
 * "<name>: row r, column c is nan" (rows and columns counted from 0, as
 * h5py and numpy count) for the first bad entry in row-major order. name
 * (e.g. the address) may be NULL. */
cnf_status cnf_data_check_finite(const double *X, size_t N, size_t D, const char *name);

/* ---- The atomic HDF5 writer ------------------------------------------ */

typedef struct cnf_h5_writer cnf_h5_writer;

/* Start an output file at final_path (cnf_file_out_open: the checks of an
 * output, stale temporaries removed, the temporary file created). NULL on
 * failure (CNF_EIO message naming the path). The file is in HDF5's newest
 * format (its metadata checksummed). The target is not touched
 * until cnf_h5_writer_commit. */
cnf_h5_writer *cnf_h5_writer_open(const char *final_path);

/* The target file name given to _open (borrowed). */
const char *cnf_h5_writer_path(const cnf_h5_writer *w);

/* Create group path and any missing intermediate groups ("/" and existing
 * groups are fine). */
cnf_status cnf_h5_writer_group(cnf_h5_writer *w, const char *path);

/* float64 data sets at path (absolute, intermediate groups created), chunked
 * with the Fletcher-32 checksum unless scalar or empty:
 *   _1d: x of n values, shape (n);   _2d: X rows x cols row-major, shape
 *   (rows, cols);   _scalar: a scalar data space holding value. */
cnf_status cnf_h5_writer_write_1d(cnf_h5_writer *w, const char *path, const double *x,
                                  size_t n);
cnf_status cnf_h5_writer_write_2d(cnf_h5_writer *w, const char *path, const double *X,
                                  size_t rows, size_t cols);
cnf_status cnf_h5_writer_write_scalar(cnf_h5_writer *w, const char *path, double value);

/* A uint8 data set of n bytes (opaque state such as an rng's). n may be 0. */
cnf_status cnf_h5_writer_write_bytes(cnf_h5_writer *w, const char *path,
                                     const unsigned char *bytes, size_t n);

/* Scalar attributes on the object (group or data set) at obj_path ("/" for
 * the root; a missing group is created). An existing attribute of the same
 * name is replaced. Strings are fixed-length UTF-8 (variable-length ones
 * would live in HDF5's global heap, which has no checksum; h5py reads them
 * as bytes),
 * integers 64-bit signed, doubles float64. _attr_doubles writes a 1-D
 * float64 attribute of n values. */
cnf_status cnf_h5_writer_attr_string(cnf_h5_writer *w, const char *obj_path,
                                     const char *name, const char *value);
cnf_status cnf_h5_writer_attr_int(cnf_h5_writer *w, const char *obj_path, const char *name,
                                  long long value);
cnf_status cnf_h5_writer_attr_double(cnf_h5_writer *w, const char *obj_path,
                                     const char *name, double value);
/* An unsigned 64-bit integer attribute (seeds). */
cnf_status cnf_h5_writer_attr_uint(cnf_h5_writer *w, const char *obj_path,
                                   const char *name, unsigned long long value);
cnf_status cnf_h5_writer_attr_doubles(cnf_h5_writer *w, const char *obj_path,
                                      const char *name, const double *values, size_t n);

/* Write the file's image to the temporary file, flush it to disk and rename
 * it over the target (cnf_file_out_commit).
 * Always frees w. On failure the temporary file is removed, the target is
 * untouched, and the status says why. A writer on which a write failed
 * refuses to commit (the first failure's status is returned). */
cnf_status cnf_h5_writer_commit(cnf_h5_writer *w);

/* Close and remove the temporary file; the target is untouched. Frees w.
 * NULL is fine. Keeps the last error message. */
void cnf_h5_writer_abort(cnf_h5_writer *w);

/* ---- Data files of the toolkit ---------------------------------------- */

/* Format name and version of the data files cnf writes (root attributes
 * format and version; STYLE rule 14). */
#define CNF_DATA_FORMAT "cnf-data"
#define CNF_DATA_VERSION 1

/* Write file (atomically) with /train (n_train x D), /val (n_val x D) and
 * /test (n_test x D), float64, and root attributes format = CNF_DATA_FORMAT,
 * version = CNF_DATA_VERSION, source and preprocessing
 * (strings; NULL writes ""), dim, n_train, n_val, n_test (integers). A split
 * may have zero rows (then its data set has shape (0, D)). Used by
 * `cnf toy` and `cnf convert`. */
cnf_status cnf_data_write_splits(const char *file, const double *train, size_t n_train,
                                 const double *val, size_t n_val, const double *test,
                                 size_t n_test, size_t D, const char *source,
                                 const char *preprocessing);

/* cnf_data_write_splits with the root attribute columns (the column names
 * as one CSV line, cnf_csv_join_names) when columns is not NULL. */
cnf_status cnf_data_write_splits_columns(const char *file, const double *train,
                                         size_t n_train, const double *val, size_t n_val,
                                         const double *test, size_t n_test, size_t D,
                                         const char *source, const char *preprocessing,
                                         const char *columns);

#ifdef __cplusplus
}
#endif

#endif /* CNF_DATA_H */
