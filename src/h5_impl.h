/* h5_impl.h — private HDF5 helpers shared by data.c and io.c (not installed).
 *
 * Every public function that calls HDF5 brackets its calls with
 * cnf_h5_quiet_begin/_end so that HDF5 prints nothing and the caller's own
 * error-printing setting survives. The readers return cnf_status with a
 * message naming "file:path" (file is only used in messages). */
#ifndef CNF_H5_IMPL_H
#define CNF_H5_IMPL_H

#include <stddef.h>

#include <hdf5.h>

#include "cnf/data.h"
#include "cnf/status.h"

typedef struct {
    H5E_auto2_t func;
    void *data;
} cnf_h5_quiet;

void cnf_h5_quiet_begin(cnf_h5_quiet *q);
void cnf_h5_quiet_end(const cnf_h5_quiet *q);

/* Open file read-only: CNF_EIO if missing/unreadable, CNF_EFORMAT if it is
 * not an HDF5 file. */
cnf_status cnf_h5_open_read(const char *file, hid_t *fid);

/* 1 if every component of path exists (as a link), 0 otherwise. */
int cnf_h5_exists(hid_t loc, const char *path);

/* Shape of the float data set at path: *rank (0 for a scalar) and dims
 * (up to 2 entries; ranks above 2 are reported through *rank with dims
 * unset). CNF_EFORMAT if missing, not a data set or not a float type. */
cnf_status cnf_h5_float_shape(hid_t fid, const char *file, const char *path, int *rank,
                              hsize_t dims[2]);

/* Read the whole float data set at path as doubles into buf, which has room
 * for its n elements. Row blocks of CNF_DATA_READ_BLOCK for rank 2. */
cnf_status cnf_h5_read_doubles(hid_t fid, const char *file, const char *path, double *buf,
                               size_t n);

/* Scalar attribute readers on an open object: 0 ok, 1 absent, -1 present
 * but of an unsuitable type/shape (or read error). */
int cnf_h5_attr_string(hid_t obj, const char *name, char *buf, size_t n);
int cnf_h5_attr_double(hid_t obj, const char *name, double *value);
int cnf_h5_attr_llong(hid_t obj, const char *name, long long *value);
int cnf_h5_attr_ullong(hid_t obj, const char *name, unsigned long long *value);

/* The writer's open file (for io.c's own layout code). */
hid_t cnf_h5_writer_fid(const cnf_h5_writer *w);

#endif
