/* cnf/net.h — the dynamics network f(z, t; theta) of a CNF block, with exact
 * hand-written derivatives.
 *
 * An MLP of L = n_hidden + 1 layers applied to a batch z (B x D, row-major).
 * Layer j maps h_j (width n_j) to n_{j+1}, with n_0 = n_L = D and the hidden
 * widths in between; every layer but the last is followed by the activation.
 * Layer types, with t the scalar time (docs/mathematics.md, "The network"):
 *
 *   concatsquash (default): y = (W h + b) * sigmoid(g_w * t + g_b) + c_w * t
 *   concat:                 y = W [h, t] + b   (time is W's last column)
 *   ignore:                 y = W h + b
 *
 * Activations: tanh, softplus log(1+e^x), elu (alpha = 1), swish x*sigmoid(x).
 *
 * Parameters. theta is one contiguous double vector of length P owned by the
 * caller (a flow concatenates its blocks' vectors; the optimizer, gradients
 * and files see one vector). Order: layer 0, layer 1, ..., and inside a layer
 *     W   (out x in, row-major; concat: out x (in+1), time column last)
 *     b   (out)
 *     g_w, g_b, c_w (out each; concatsquash only)
 * cnf_net_layer_view() gives the offsets. The network object holds only the
 * architecture; workspaces live in cnf_net_work, one per thread.
 *
 * Derivatives. Forward mode: with K tangent directions v_k (per sample), the
 * forward pass also returns jv_k = J(z) v_k where J = df/dz. With v = NULL and
 * K = D the directions are the unit vectors e_1..e_D (exact trace:
 * div = sum_i (J e_i)_i); with K = 1 and v = eps it is Hutchinson's
 * eps^T J eps. Reverse mode: cnf_net_backward sweeps back through the last
 * forward pass (values and tangents) for the scalar
 *     S = sum(fbar .* f) + sum(jvbar .* jv)
 * and accumulates dS/dz, dS/dtheta and dS/dt. With jvbar_k = c .* e_k (exact)
 * or c .* eps (Hutchinson) this differentiates the divergence; with
 * jvbar = 2 lambda J eps the Jacobian-Frobenius regularizer. It is the single
 * primitive the adjoint needs.
 *
 * Typical call:
 *
 *     cnf_net_config cfg;
 *     cnf_net_config_default(&cfg, 2);                 // D = 2, 64-64-64
 *     cnf_net *net = cnf_net_alloc(&cfg);
 *     double *theta = malloc(cnf_net_num_params(net) * sizeof *theta);
 *     cnf_net_init(net, theta, rng, 0);
 *     cnf_net_work *w = cnf_net_work_alloc(net, B, 2); // exact trace: K = D
 *     cnf_net_forward(net, w, theta, t, z, B, 2, NULL, f, jv);
 *     cnf_net_trace_unit(jv, B, 2, div);
 *
 * Shapes in comments use B batch, D data dimension, H hidden width, K tangent
 * directions, P parameter count.
 */
#ifndef CNF_NET_H
#define CNF_NET_H

#include <stddef.h>

#include <gsl/gsl_rng.h>

#include "cnf/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CNF_NET_MAX_HIDDEN 16

typedef enum {
    CNF_LAYER_CONCATSQUASH = 0,
    CNF_LAYER_CONCAT,
    CNF_LAYER_IGNORE
} cnf_layer_type;

typedef enum {
    CNF_ACT_TANH = 0,
    CNF_ACT_SOFTPLUS,
    CNF_ACT_ELU,
    CNF_ACT_SWISH
} cnf_activation;

/* Names as used in files and on the command line: "concatsquash", "concat",
 * "ignore"; "tanh", "softplus", "elu", "swish". The _from_name functions give
 * CNF_EINVAL with a message listing the valid names. */
const char *cnf_layer_type_name(cnf_layer_type type);
cnf_status cnf_layer_type_from_name(const char *name, cnf_layer_type *type);
const char *cnf_activation_name(cnf_activation act);
cnf_status cnf_activation_from_name(const char *name, cnf_activation *act);

typedef struct {
    size_t dim;                          /* D: input and output width */
    size_t n_hidden;                     /* hidden layers (L - 1), >= 0 */
    size_t hidden[CNF_NET_MAX_HIDDEN];   /* their widths */
    cnf_layer_type layer_type;
    cnf_activation activation;
} cnf_net_config;

/* D as given, hidden 64-64-64, concatsquash, tanh (FFJORD's toy network). */
void cnf_net_config_default(cnf_net_config *cfg, size_t dim);
/* Parse hidden widths such as "64-64-64" (or "" for none) into cfg; a
 * width "nD" (or "D") is n times (once) the data dimension cfg->dim, so
 * that "4D-4D" sizes a network to its data. CNF_EINVAL naming the position
 * of a bad width; cfg is unchanged on error. */
cnf_status cnf_net_config_parse_hidden(cnf_net_config *cfg, const char *widths);
/* Write the widths as "64-64-64" into buf (size n). */
void cnf_net_config_format_hidden(const cnf_net_config *cfg, char *buf, size_t n);

typedef struct cnf_net cnf_net;

/* NULL on invalid configuration (message says which field) or no memory. */
cnf_net *cnf_net_alloc(const cnf_net_config *cfg);
void cnf_net_free(cnf_net *net);                       /* NULL is fine */
const cnf_net_config *cnf_net_get_config(const cnf_net *net);  /* borrowed */
size_t cnf_net_num_params(const cnf_net *net);         /* P */
size_t cnf_net_num_layers(const cnf_net *net);         /* L = n_hidden + 1 */

#define CNF_NET_ABSENT ((size_t)-1)

/* Where layer j's parameters sit in theta. Absent ones are CNF_NET_ABSENT.
 * (C gives a typedef and a function one namespace, so the type is the struct
 * tag `struct cnf_net_layer_view`, or the typedef cnf_net_layer; the function
 * keeps the name cnf_net_layer_view.)
 *
 *     cnf_net_layer lv;
 *     cnf_net_layer_view(net, j, &lv);    // W at theta + lv.W, out x lv.W_cols */
typedef struct cnf_net_layer_view {
    size_t in, out;     /* widths n_j, n_{j+1} */
    size_t W_cols;      /* in, or in + 1 for concat */
    size_t W, b, g_w, g_b, c_w;   /* offsets into theta */
} cnf_net_layer;

cnf_status cnf_net_layer_view(const cnf_net *net, size_t j, cnf_net_layer *view);

/* PyTorch's nn.Linear default: every weight and bias uniform on
 * +-1/sqrt(fan_in), with fan_in the width of the input it multiplies (W, b:
 * in, or in + 1 for concat; g_w, g_b, c_w: 1, as FFJORD's hyper-networks).
 * With zero_last_layer the last layer's parameters are all zero (f = 0 at
 * the start of training). theta: P. */
void cnf_net_init(const cnf_net *net, double *theta, gsl_rng *rng, int zero_last_layer);

/* Multiply-add count of the dgemms of one forward pass with K tangents, per
 * sample (for GFLOP/s figures: 2 * this * B floating-point operations).
 * K == D counts the unit directions (v == NULL), whose first layer needs no
 * products for the tangents. */
double cnf_net_flops_per_sample(const cnf_net *net, size_t K);

/* Workspace (caches of the forward pass, buffers of the reverse sweep) for
 * batches of up to max_batch samples and up to max_tangents directions. */
typedef struct cnf_net_work cnf_net_work;

#define CNF_NET_MAX_THREADS 64

cnf_net_work *cnf_net_work_alloc(const cnf_net *net, size_t max_batch, size_t max_tangents);
/* The same with n_threads threads (1..CNF_NET_MAX_THREADS): every forward
 * pass and reverse sweep on this workspace splits the B rows into n_threads
 * contiguous parts (part i: rows B i / n .. B (i+1) / n - 1), each computed
 * by one thread of a pool the workspace owns (started here, woken per call;
 * no allocation or thread creation per call). The network is independent
 * per sample, so only the batch sums differ from one thread: dS/dtheta and
 * dS/dt are summed per part and then added in part order, the same every
 * run for a given n_threads. With n_threads = 1 this is cnf_net_work_alloc.
 * The calls on one workspace must come from one thread at a time.
 *
 * OpenBLAS's own threads are the caller's to set: libcnf never changes that
 * process-wide setting. A program embedding cnf should call
 * openblas_set_num_threads(1) once at start-up, as the `cnf` command does
 * (OPENBLAS_NUM_THREADS in the environment does the same, if the program
 * leaves it alone). Only then does n_threads mean the number of threads at
 * work (OpenBLAS would otherwise start up to one per core inside each of
 * them, which at these matrix sizes costs more than it saves and spins on a
 * busy machine), and only then are the results the same bits on every
 * machine: a product split over OpenBLAS threads sums in another order
 * (last bits differ, ~1e-15 relative). */
cnf_net_work *cnf_net_work_alloc_threads(const cnf_net *net, size_t max_batch,
                                         size_t max_tangents, size_t n_threads);
void cnf_net_work_free(cnf_net_work *work);            /* NULL is fine; joins the threads */
size_t cnf_net_work_threads(const cnf_net_work *work);

/* The forward products multiply by W^T, which each cnf_net_forward
 * transposes from theta afresh (4096 copies per 64 x 64 layer: a few
 * percent of a pass at B = 100). A caller that evaluates the same
 * parameters many times (an ODE solve) binds them once: until
 * cnf_net_work_unbind or the next bind, passes given this same theta
 * pointer reuse the transposed weights. theta must not change while bound;
 * a pass given another pointer transposes as usual and ends the binding
 * (the transposed weights are shared). Results are bit for bit those
 * without binding. */
cnf_status cnf_net_work_bind(const cnf_net *net, cnf_net_work *work, const double *theta);
void cnf_net_work_unbind(cnf_net_work *work);   /* NULL is fine */

/* f = net(z, t) and, for K > 0, jv_k = J(z) v_k.
 *   theta: P            z: B x D            f: B x D
 *   v: K x B x D (direction k of sample b at v[(k*B + b)*D]), or NULL for
 *      the unit vectors (requires K == D)
 *   jv: K x B x D (may be NULL only when K == 0)
 * Keeps what cnf_net_backward needs in work. Does not allocate. */
cnf_status cnf_net_forward(const cnf_net *net, cnf_net_work *work, const double *theta,
                           double t, const double *z, size_t B, size_t K,
                           const double *v, double *f, double *jv);

/* f_b = net(z_b, t_b): the forward pass with one time per row (t: B, finite)
 * and no tangents, for objectives that sample a time per sample (flow
 * matching, cnf/fm.h). One batched pass, as cnf_net_forward's: the products
 * are the same, the times enter element-wise (concat: t_b W[:, in] added
 * to row b; concatsquash: the gate and shift of row b). With every t_b = t
 * it agrees with cnf_net_forward to rounding (the time term is added in
 * another order). cnf_net_backward then sweeps back through it with
 * jvbar = NULL and tbar = NULL (a batch of times has no single dS/dt;
 * CNF_EINVAL otherwise). The times are copied: t may change afterwards. */
cnf_status cnf_net_forward_rows(const cnf_net *net, cnf_net_work *work, const double *theta,
                                const double *t, const double *z, size_t B, double *f);

/* Reverse sweep through the last cnf_net_forward on work (same theta), for
 * S = sum(fbar .* f) + sum(jvbar .* jv). Accumulates (adds to) its outputs:
 *   zbar: B x D += dS/dz        thetabar: P += dS/dtheta     *tbar += dS/dt
 * Inputs fbar (B x D) and jvbar (K x B x D) may be NULL for zero; outputs
 * may be NULL when not wanted (their work is then skipped). The directions v
 * are treated as constants. Does not allocate. */
cnf_status cnf_net_backward(const cnf_net *net, cnf_net_work *work, const double *theta,
                            const double *fbar, const double *jvbar,
                            double *zbar, double *thetabar, double *tbar);

/* Divergence estimators and regularizers, per sample (out: B). */

typedef enum {
    CNF_DIV_EXACT = 0,      /* sum_i e_i^T J e_i, K = D tangents */
    CNF_DIV_GAUSSIAN,       /* eps^T J eps, eps ~ N(0, I), K = 1 */
    CNF_DIV_RADEMACHER      /* eps^T J eps, eps uniform on {-1, +1}^D, K = 1 */
} cnf_divergence;

/* "exact", "gaussian", "rademacher". */
const char *cnf_divergence_name(cnf_divergence kind);
cnf_status cnf_divergence_from_name(const char *name, cnf_divergence *kind);

/* Fill eps (n values) with Hutchinson noise of the given kind from rng.
 * Drawing is sequential in index order, so a seed fixes the draw.
 * CNF_DIV_EXACT draws nothing: eps and rng are left untouched. */
void cnf_net_noise_draw(cnf_divergence kind, gsl_rng *rng, size_t n, double *eps);

/* div_b = sum_i jv[i][b][i] (jv from unit directions, K = D). */
void cnf_net_trace_unit(const double *jv, size_t B, size_t D, double *div);
/* div_b = eps_b . jv_b (jv from the single direction eps). */
void cnf_net_trace_hutchinson(const double *eps, const double *jv, size_t B, size_t D,
                              double *div);
/* out_b = sum over the K directions and D components of x[k][b][d]^2: the
 * kinetic energy ||f_b||^2 (K = 1, x = f) or the Jacobian-Frobenius estimate
 * ||J eps||^2 (K = 1) — exactly ||J||_F^2 with the unit directions (K = D). */
void cnf_net_sq_norm(const double *x, size_t K, size_t B, size_t D, double *out);

#ifdef __cplusplus
}
#endif

#endif /* CNF_NET_H */
