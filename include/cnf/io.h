/* cnf/io.h — model files and gradient files (docs/formats.md).
 *
 * A model is one HDF5 file that any HDF5 client (h5py, h5dump) can read:
 *
 *   /                       attributes format = "cnf-model" (UTF-8 string,
 *                           fixed-length as cnf writes it; variable-length as
 *                           h5py's str is read too), version = 1 or 2,
 *                           dim = D (int64)
 *   /preprocess/mean        (D) float64      x_std = (x - mean) / scale
 *   /preprocess/scale       (D) float64
 *   /preprocess/chol        (D, D) float64, version 2 only: the whitening
 *                           factor L, lower-triangular (zeros above the
 *                           diagonal), positive diagonal, L L^T = the
 *                           training data's correlation matrix (plus
 *                           r I when fitting needed a ridge r);
 *                           x_std = L^{-1} ((x - mean) / scale), and the
 *                           log-likelihood adds -sum_i log scale_i
 *                           - sum_i log L_ii (cnf/flow.h, "Preprocessing")
 *   /blocks/<k>             k = 0..K-1, attributes T (float64, end time),
 *                           layer_type ("concatsquash" | "concat" | "ignore"),
 *                           activation ("tanh" | "softplus" | "elu" | "swish")
 *   /blocks/<k>/layers/<j>  j = 0..L-1, float64 data sets
 *       W    (out, in)       or (out, in + 1) for concat, time column last
 *       b    (out)
 *       g_w, g_b, c_w (out)  concatsquash only
 *   /training               optional (cnf_model_extra): see below
 *
 * The architecture is not stored separately: on loading, the number of
 * blocks and layers comes from the groups, each layer's widths from its W
 * (hidden widths = out of every layer but the last), so a file written by
 * another program (e.g. h5py) in this layout loads as it is. This is
 * exactly the layout of tests/data/reference/case*_model.h5.
 *
 * Versions. A standardising model is written as version 1, a whitening one
 * as version 2 (version 1 plus /preprocess/chol), so that builds that read
 * only version 1 still read every model they can evaluate correctly and
 * refuse, by its version, one they cannot. This build reads both.
 *
 * Training record (optional, for `cnf info` and `--resume`):
 *   /training/config        group whose string attributes are the key/value
 *                           pairs of cnf_model_extra's configuration (the
 *                           resolved preset and options, results, ...)
 *   /training               attributes n_params, seed, iteration, lr,
 *                           has_best, best_val_nll, best_iteration,
 *                           last_val_nll, bad_validations (the scalar fields
 *                           of cnf_train_state; seed as uint64, the other
 *                           counts and has_best as int64, the rest float64;
 *                           +inf/NaN stored as they are)
 *   /training/params        (P) current parameters (not the best)
 *   /training/adam_m        (P) Adam first moment
 *   /training/adam_v        (P) Adam second moment
 *   /training/best_params   (P) present when has_best = 1
 *   /training/step_hints    (2K) the warm first steps of the gradient's
 *                           forward and backward solves (cnf_train_state;
 *                           finite and >= 0); optional: without it a
 *                           resumed run starts them afresh
 *   /training/rng_state     (bytes) uint8, the gsl_rng's raw state, with
 *                           attribute rng_type (gsl name, e.g. "mt19937")
 * All (P) vectors use the flow's parameter layout (cnf/flow.h). The group is
 * written only when there is something in it; files without it (the
 * reference models) load fine.
 *
 * Gradient files (`cnf grad --out G.h5`): root attributes format =
 * "cnf-grad", version = 1, dim = D, and the gradient in the model's own
 * layout: /blocks/<k>/layers/<j>/W, b, ... (same shapes as the model) and
 * /blocks/<k>/T (a scalar data set: dloss/dT_k). The same layout under a
 * group prefix ("/grad") is what tests/data/reference/case*_expected.h5 hold.
 *
 * Damage. Files are written in HDF5's newest format (checksummed metadata:
 * superblock, object headers and their attributes, group indexes) with every
 * non-scalar data set chunked under the Fletcher-32 filter, string
 * attributes fixed-length (in the checksummed object headers, not the
 * unchecksummed global heap), so a changed byte of a file cnf wrote fails
 * HDF5's checks and is reported (CNF_EIO or CNF_EFORMAT), never loaded as
 * other values. Loading any file (also one without checksums) checks each
 * attribute's class, size and string length before reading it, and each
 * data set's stored bytes against its shape before allocating for it
 * (cnf/data.h), so allocations are bounded by what the file holds. HDF5 1.10
 * itself may still crash on some damaged structures of a file without
 * checksums (its global heap in particular).
 *
 * Errors of cnf_model_load (each message names the file and the object):
 *   CNF_EIO      file missing or unreadable, or not a regular file
 *   CNF_EFORMAT  not an HDF5 file; "not a cnf model file" (format attribute
 *                missing or other than "cnf-model"); a version above
 *                CNF_MODEL_VERSION ("written by a newer cnf? this build
 *                reads versions 1 to 2") or below 1; a missing group, data
 *                set or attribute (version 2 without /preprocess/chol);
 *                /preprocess/chol in a version-1 file or not (D, D);
 *                shapes that do not chain (layer j's input width vs layer
 *                j-1's output, D); unknown layer_type or activation; a bad
 *                /training group (also a /training/config attribute that is
 *                neither a string of at most 4095 bytes nor a number); an
 *                attribute whose type size disagrees with what it stores; a
 *                data set storing fewer bytes than its shape needs or kept
 *                in other files
 *   CNF_EDATA    a non-finite parameter, mean, scale or chol entry,
 *                scale <= 0, a chol entry above the diagonal that is not 0
 *                or a diagonal entry <= 0 (the entry is named)
 *   CNF_ENOMEM   out of memory
 * Writing goes through cnf_h5_writer (cnf/data.h) and cnf_file_out
 * (cnf/file.h): a temporary file, renamed over the target only when
 * complete; on failure the target is untouched. A rewrite keeps the
 * replaced file's permission bits.
 *
 * Typical calls:
 *
 *     cnf_model_extra ex;
 *     cnf_model_extra_init(&ex);
 *     cnf_model_extra_set(&ex, "flow", "toy2d");
 *     ex.state = state;                           // borrowed for saving
 *     cnf_status s = cnf_model_save("M.h5", flow, &ex);
 *     ex.state = NULL;                            // not ours to free
 *     cnf_model_extra_clear(&ex);
 *
 *     cnf_flow *flow;
 *     cnf_model_extra ex;                         // filled by the load
 *     if (cnf_model_load("M.h5", &flow, &ex) != CNF_OK) ... cnf_last_error();
 *     ... cnf_model_extra_get(&ex, "flow"), ex.state (NULL if none) ...
 *     cnf_model_extra_clear(&ex);                 // frees ex.state too
 *     cnf_flow_free(flow);
 */
#ifndef CNF_IO_H
#define CNF_IO_H

#include <stddef.h>

#include "cnf/data.h"
#include "cnf/flow.h"
#include "cnf/status.h"
#include "cnf/train.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CNF_MODEL_FORMAT "cnf-model"
#define CNF_GRAD_FORMAT "cnf-grad"
/* The newest model version this build reads and writes (standardising
 * models are written as version 1, whitening ones as 2), and the version of
 * gradient files. */
#define CNF_MODEL_VERSION 2
#define CNF_GRAD_VERSION 1

/* The optional training record of a model file. */
typedef struct {
    size_t n_config;         /* number of key/value pairs */
    char **config_keys;      /* n_config strings, owned (malloc'd) */
    char **config_values;    /* n_config strings, owned (malloc'd) */
    cnf_train_state *state;  /* NULL if none. Saving: read only (borrowed).
                                Loading: allocated by cnf_model_load and
                                owned by the struct (cnf_model_extra_clear
                                frees it; set it to NULL first to keep it). */
} cnf_model_extra;

/* An empty record (no configuration, no state). */
void cnf_model_extra_init(cnf_model_extra *extra);
/* Free the configuration and the state, and empty the record. NULL is fine. */
void cnf_model_extra_clear(cnf_model_extra *extra);
/* Set key to value (both copied; an existing key is overwritten, order of
 * first insertion kept). Keys must be non-empty and must not contain '/'
 * (they become HDF5 attribute names). */
cnf_status cnf_model_extra_set(cnf_model_extra *extra, const char *key, const char *value);
/* The value of key (borrowed), or NULL if absent. */
const char *cnf_model_extra_get(const cnf_model_extra *extra, const char *key);

/* Write flow (and extra, which may be NULL) to path atomically: version 1,
 * or version 2 with /preprocess/chol when the flow whitens. CNF_EDATA
 * if a parameter, mean or scale is non-finite or a block's T is not
 * positive (such a model could not be loaded); CNF_EDIM if extra->state's n_params differs from the flow's P;
 * CNF_EIO if the directory is missing, path is not a regular file (nor a
 * symbolic link to one) or the file cannot be written, e.g. on a full disk
 * (an existing path is then untouched). */
cnf_status cnf_model_save(const char *path, const cnf_flow *flow,
                          const cnf_model_extra *extra);

/* cnf_model_save with params (P, the flow's layout, end times included) in
 * place of the flow's own, which are not touched: e.g. a checkpoint of
 * cnf_train_state_best_so_far while the flow trains on. */
cnf_status cnf_model_save_params(const char *path, const cnf_flow *flow, const double *params,
                                 const cnf_model_extra *extra);

/* Read a model. *flow is a new flow (owned by the caller, cnf_flow_free)
 * with the file's architecture, parameters, T, mean, scale and whitening
 * factor (version 2); NULL on
 * failure. extra may be NULL (the training record is then not read at all);
 * otherwise it is initialised here (its previous contents are NOT freed)
 * and filled with the configuration and, if the file has one, the state
 * (extra->state, whose rng is a generator of the saved type restored to the
 * saved bytes). */
cnf_status cnf_model_load(const char *path, cnf_flow **flow, cnf_model_extra *extra);

/* The flow options a model was trained with, for evaluating or sampling it
 * as `cnf eval` and `cnf sample` do: cnf_flow_options_default, then the
 * record's solver, rtol, atol and max_steps (the keys `cnf train` stores in
 * /training/config) for the forward solves, and the same settings for the
 * adjoint solves. Everything else (divergence: exact; threads: 1; safety
 * factor 0.9, as evaluation uses, not training's 0.7) stays at the
 * defaults, and a caller may change any field afterwards (a Hutchinson
 * divergence, more threads). A model without a record (extra NULL or empty,
 * e.g. the reference models) gets the defaults: dopri5 at rtol = atol =
 * 1e-5.
 *
 * Why: the defaults are not what the model was trained and validated with
 * (FFJORD's tabular settings use rtol 1e-6 and atol 1e-8), and the
 * log-likelihoods differ accordingly in the fifth or sixth digit; with this
 * a program gets `cnf eval`'s numbers bit for bit.
 *
 * Returns CNF_OK; or CNF_EFORMAT with a message naming the first key whose
 * value does not parse (a damaged record), in which case that field keeps
 * its default and every valid one is still taken, so opt is always usable.
 *
 *     cnf_model_extra ex;
 *     cnf_model_load("model.h5", &flow, &ex);
 *     cnf_flow_options opt;
 *     cnf_flow_options_from_model(&ex, &opt);
 *     cnf_flow_work *w = cnf_flow_work_alloc(flow, 1000, &opt);
 */
cnf_status cnf_flow_options_from_model(const cnf_model_extra *extra, cnf_flow_options *opt);

/* ---- Gradients in the model's layout ----------------------------------- */

/* Write grad (P, the flow's parameter layout) into an open writer under the
 * group prefix ("" or "/" for the root, or e.g. "/grad"):
 *   <prefix>/blocks/<k>/layers/<j>/W, b[, g_w, g_b, c_w]   model shapes
 *   <prefix>/blocks/<k>/T                                   scalar
 * No attributes are written. */
cnf_status cnf_h5_writer_write_grad(cnf_h5_writer *w, const char *prefix, const cnf_flow *flow,
                              const double *grad);

/* A gradient file at path, atomically: root attributes format = "cnf-grad",
 * version = 1, dim = D, and the gradient at the root (cnf_h5_writer_write_grad
 * with prefix ""). */
cnf_status cnf_model_write_grad(const char *path, const cnf_flow *flow, const double *grad);

/* Read a gradient written in the layout above under prefix ("" for the
 * root of a `cnf grad` file, "/grad" for the reference files) into grad
 * (P, the flow's layout). Shapes must match the flow's architecture
 * (CNF_EFORMAT naming the data set otherwise). Attributes are not checked. */
cnf_status cnf_model_read_grad(const char *path, const char *prefix, const cnf_flow *flow,
                               double *grad);

#ifdef __cplusplus
}
#endif

#endif /* CNF_IO_H */
