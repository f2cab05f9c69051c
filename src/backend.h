/* backend.h: the compute seam (docs/architecture.md "Backend table"). Model and training code call
 * these function pointers and never include oneDNN, CUDA or cuDNN headers.
 *
 * Activations are dt_tensors: a logical shape (N, C, H, W) stored in a layout the backend
 * chooses (oneDNN blocked nChw8c on the CPU, NHWC on the GPU). Each op is prepared once for
 * fixed shapes with *_create, which is told the layouts of its inputs and returns the layout
 * of its output; the graph allocates every buffer from those layouts. Parameters and their
 * gradients are plain fp32 arrays carved from flat arenas, in logical layout ((K, C) for
 * linear layers, exactly as PyTorch stores them) except convolution weights, which are OIHW
 * or KRSC as dt_backend.weights_krsc says. All of that is
 * backend memory, which host code must not dereference (it is GPU memory on the CUDA backend):
 * it reaches the host only through to_host / download, and the optimizer updates it through
 * the ops at the end of the table.
 * Layout pointers stay valid for the lifetime of the backend that returned them.
 *
 * A plain C reference of every op lives in tests/ref/ and is the oracle for every backend. */
#ifndef DT_BACKEND_H
#define DT_BACKEND_H

#include <stdint.h>

#include "common.h"
#include "optim_segment.h" /* dt_optim_segment: lars_update_multi */
#include "rng.h" /* dt_mix64 */

typedef struct dt_backend dt_backend;
typedef struct dt_layout dt_layout; /* backend-private storage order of one tensor shape */
typedef struct dt_op dt_op;         /* backend-private prepared op (primitives, workspace) */

typedef struct { int n, c, h, w; } dt_shape;

static inline size_t dt_shape_count(dt_shape s) { return (size_t)s.n * s.c * s.h * s.w; }

typedef struct {
  dt_shape shape;
  const dt_layout *layout;
  /* backend memory of layout_bytes(layout) bytes; its element type is the layout's, fp32 or
   * 16-bit (bf16 / fp16 activations after set_precision); host code never dereferences it */
  float *data;
} dt_tensor;

/* Convolution without bias: input (N, C, H, W), weight (K, C/G, R, S), square stride and
 * symmetric zero padding. */
typedef struct {
  int n, c, h, w;
  int k, r, s;
  int stride, pad, groups;
  bool need_dx; /* false for a layer whose input needs no gradient (the stem) */
} dt_conv_params;

/* Permute one convolution weight (K, C/G, R, S) between the logical OIHW order and KRSC
 * (dt_backend.weights_krsc): to_krsc, dst (K, R, S, C/G) from src (K, C/G, R, S); else the
 * reverse. cg = C/G, rs = R S; dst and src do not overlap. Exact (a copy), and the identity
 * when rs == 1 or cg == 1. */
static inline void dt_conv_weights_permute(float *dst, const float *src, int k, int cg, int rs,
                                           bool to_krsc) {
  for (int o = 0; o < k; o++)
    for (int c = 0; c < cg; c++)
      for (int j = 0; j < rs; j++) {
        const size_t oihw = ((size_t)o * cg + c) * rs + j, krsc = ((size_t)o * rs + j) * cg + c;
        if (to_krsc) dst[krsc] = src[oihw];
        else dst[oihw] = src[krsc];
      }
}

/* Pooling kinds (dt_graph_pool and pool_create). */
typedef enum { DT_POOL_MAX, DT_POOL_AVG } dt_pool_kind;

/* The dropout decision of one element, shared by every backend and the reference: element
 * e = (c H + h) W + w of a sample draws the e-th number of the SplitMix64 stream seeded with
 * the mixed sample key (one mix per element, random access, no state), a uniform in [0, 1)
 * with 24 bits; the element is kept when it is >= p. Mixing the key first keeps related keys
 * (k, k + 1) from sharing a shifted stream. Independent of layout, thread and device. */
static inline float dt_dropout_uniform(uint64_t key, uint64_t e) {
  const uint64_t z = dt_mix64(dt_mix64(key) + (e + 1) * 0x9E3779B97F4A7C15ull);
  return (float)(z >> 40) * 0x1.0p-24f;
}

/* Arithmetic of a backend's ops (train.precision). */
typedef enum { DT_PRECISION_FP32, DT_PRECISION_BF16, DT_PRECISION_FP16 } dt_precision;

/* The table a backend fills. Every member is required (DT_BACKEND_REQUIRED_OPS below) except
 * the few capabilities that say "optional" and what NULL means where they are declared
 * (DT_BACKEND_OPTIONAL_OPS). */
typedef struct dt_backend_ops {
  const char *name;
  void (*destroy)(dt_backend *be);

  /* ---- memory ---- */
  /* Plain layout: NCHW for 4-d shapes; a (N, K) matrix is the shape (N, K, 1, 1). */
  const dt_layout *(*layout_plain)(dt_backend *be, dt_shape shape);
  size_t (*layout_bytes)(const dt_layout *layout);
  void *(*alloc)(dt_backend *be, size_t bytes); /* zero-filled backend memory */
  void (*free)(dt_backend *be, void *ptr);
  void (*zero)(dt_backend *be, void *ptr, size_t bytes);
  /* Copy between host and backend memory (parameter arenas, targets). */
  void (*to_device)(dt_backend *be, void *dst, const void *src_host, size_t bytes);
  void (*to_host)(dt_backend *be, void *dst_host, const void *src, size_t bytes);
  /* Convert a plain NCHW host array into a tensor of any layout, and back. */
  void (*upload)(dt_backend *be, const float *nchw_host, dt_tensor *dst);
  void (*download)(dt_backend *be, const dt_tensor *src, float *nchw_host);

  /* ---- convolution ---- */
  /* *y on entry: NULL to let the backend choose the output layout, or a layout the output
   * must have (the graph passes a residual's layout so conv_forward can add into it); on
   * return, the output layout. */
  dt_op *(*conv_create)(dt_backend *be, const dt_conv_params *p, const dt_layout *x,
                        const dt_layout **y);
  /* w and dw below are (K, C/G, R, S) weights in the backend's order (weights_krsc). */
  /* y = conv(x, w), or y += conv(x, w) when accumulate (a residual addition). */
  void (*conv_forward)(dt_op *op, const dt_tensor *x, const float *w, dt_tensor *y,
                       bool accumulate);
  /* dx = conv_transpose(dy, w). */
  void (*conv_backward_data)(dt_op *op, const dt_tensor *dy, const float *w, dt_tensor *dx);
  /* dw = correlation of x and dy (overwrites dw). */
  void (*conv_backward_weights)(dt_op *op, const dt_tensor *x, const dt_tensor *dy, float *dw);

  /* ---- batch normalisation over (N, H, W) per channel ---- */
  /* fuse_relu: the op computes relu(bn(x)) and its backward applies the ReLU mask. */
  dt_op *(*bn_create)(dt_backend *be, dt_shape shape, const dt_layout *x, float eps,
                      bool fuse_relu);
  /* Training: normalise with batch statistics; save_mean / save_var receive the batch mean
   * and biased variance (C each) for the backward pass; running_mean / running_var are
   * updated as PyTorch does: r = (1 - momentum) r + momentum * stat, with the unbiased
   * variance for running_var. */
  void (*bn_forward_train)(dt_op *op, const dt_tensor *x, const float *gamma, const float *beta,
                           dt_tensor *y, float *save_mean, float *save_var, float *running_mean,
                           float *running_var, float momentum);
  void (*bn_forward_infer)(dt_op *op, const dt_tensor *x, const float *gamma, const float *beta,
                           const float *running_mean, const float *running_var, dt_tensor *y);
  /* dx, and dgamma / dbeta (overwritten), from the statistics saved by the last
   * bn_forward_train of this op. */
  void (*bn_backward)(dt_op *op, const dt_tensor *x, const dt_tensor *dy, const float *gamma,
                      const float *save_mean, const float *save_var, dt_tensor *dx,
                      float *dgamma, float *dbeta);

  /* ---- elementwise ---- */
  dt_op *(*eltwise_create)(dt_backend *be, dt_shape shape, const dt_layout *x);
  void (*relu_forward)(dt_op *op, const dt_tensor *x, dt_tensor *y);
  /* dx = dy where y > 0, else 0 (y is the forward output). */
  void (*relu_backward)(dt_op *op, const dt_tensor *y, const dt_tensor *dy, dt_tensor *dx);
  void (*add)(dt_op *op, const dt_tensor *a, const dt_tensor *b, dt_tensor *y); /* y = a + b */
  void (*accumulate)(dt_op *op, const dt_tensor *src, dt_tensor *dst);         /* dst += src */

  /* ---- global average pooling: (N, C, H, W) -> (N, C, 1, 1) ---- */
  dt_op *(*gap_create)(dt_backend *be, dt_shape x_shape, const dt_layout *x,
                       const dt_layout **y);
  void (*gap_forward)(dt_op *op, const dt_tensor *x, dt_tensor *y);
  void (*gap_backward)(dt_op *op, const dt_tensor *dy, dt_tensor *dx);

  /* ---- linear: y (N, K) = x (N, C) w^T + b, w (K, C); x may be (N, C, 1, 1) ---- */
  dt_op *(*linear_create)(dt_backend *be, dt_shape x_shape, const dt_layout *x, int k,
                          const dt_layout **y);
  void (*linear_forward)(dt_op *op, const dt_tensor *x, const float *w, const float *b,
                         dt_tensor *y);
  /* dx (if not NULL), dw and db (overwritten). */
  void (*linear_backward)(dt_op *op, const dt_tensor *x, const dt_tensor *dy, const float *w,
                          dt_tensor *dx, float *dw, float *db);

  /* ---- loss: soft-target cross-entropy, mean over the batch ---- */
  /* logits and dlogits are plain (N, K); targets (N, K) backend memory, rows sum to 1.
   * Writes per-sample losses to `losses` (N floats of backend memory; NULL: not wanted) and
   * dlogits = (softmax - target) * grad_scale (NULL: not wanted). Does not wait. */
  void (*xent)(dt_backend *be, const dt_tensor *logits, const float *targets, int n, int k,
               float grad_scale, dt_tensor *dlogits, float *losses);

  void (*op_free)(dt_op *op);

  /* ==== ops of the other families (docs/reference-experiments.md "Models") ====
   * Every op keeps its input's layout unless it says otherwise; every output is overwritten. */

  /* ---- pooling: (N, C, H, W) -> (N, C, P, Q), P = (H + 2 pad - ksize) / stride + 1 ---- */
  /* DT_POOL_MAX: the maximum over the window (padding never wins, as in PyTorch); the op keeps
   * where each maximum was (oneDNN's workspace) for pool_backward. DT_POOL_AVG: the window sum
   * divided by ksize^2 when count_include_pad (PyTorch's default), else by the number of
   * in-range elements. y gets a layout of the op's choice. */
  dt_op *(*pool_create)(dt_backend *be, dt_shape x_shape, const dt_layout *x, dt_pool_kind kind,
                        int ksize, int stride, int pad, bool count_include_pad,
                        const dt_layout **y);
  void (*pool_forward)(dt_op *op, const dt_tensor *x, dt_tensor *y);
  /* dx from dy; max pooling routes each dy to the maximum found by the last pool_forward. */
  void (*pool_backward)(dt_op *op, const dt_tensor *dy, dt_tensor *dx);

  /* ---- channel concatenation: y (N, Ca + Cb, H, W) = [a, b] ---- */
  /* a and b may have different layouts; y gets a layout of the op's choice. */
  dt_op *(*concat_create)(dt_backend *be, dt_shape a_shape, const dt_layout *a, dt_shape b_shape,
                          const dt_layout *b, const dt_layout **y);
  void (*concat_forward)(dt_op *op, const dt_tensor *a, const dt_tensor *b, dt_tensor *y);
  /* da = dy[:, :Ca], db = dy[:, Ca:] in a's and b's layouts; either may be NULL (not wanted),
   * so a caller can produce them one at a time. */
  void (*concat_backward)(dt_op *op, const dt_tensor *dy, dt_tensor *da, dt_tensor *db);

  /* ---- channel zero-padding: y (N, c_out, H, W) = [x, 0] (PyramidNet shortcuts) ---- */
  dt_op *(*pad_channels_create)(dt_backend *be, dt_shape x_shape, const dt_layout *x, int c_out,
                                const dt_layout **y);
  void (*pad_channels_forward)(dt_op *op, const dt_tensor *x, dt_tensor *y);
  void (*pad_channels_backward)(dt_op *op, const dt_tensor *dy, dt_tensor *dx); /* dy[:, :C] */

  /* ---- dropout with probability p ---- */
  dt_op *(*dropout_create)(dt_backend *be, dt_shape shape, const dt_layout *x, float p);
  /* y = x * keep / (1 - p), keep as dt_dropout_uniform(keys[n], e) >= p, keys: N host
   * per-sample stream keys (the caller derives them from step, layer and global sample index).
   * The op keeps the mask for dropout_backward. keys NULL: y = x (inference). */
  void (*dropout_forward)(dt_op *op, const dt_tensor *x, const uint64_t *keys, dt_tensor *y);
  /* dx = dy * keep / (1 - p) with the mask of the last dropout_forward with keys. */
  void (*dropout_backward)(dt_op *op, const dt_tensor *dy, dt_tensor *dx);

  /* ---- logistic sigmoid ---- */
  dt_op *(*sigmoid_create)(dt_backend *be, dt_shape shape, const dt_layout *x);
  void (*sigmoid_forward)(dt_op *op, const dt_tensor *x, dt_tensor *y);
  /* dx = dy * y * (1 - y), y the forward output. */
  void (*sigmoid_backward)(dt_op *op, const dt_tensor *y, const dt_tensor *dy, dt_tensor *dx);

  /* ---- channel scaling: y = x * s, s (N, C, 1, 1) broadcast over H, W (squeeze-excite) ---- */
  dt_op *(*scale_create)(dt_backend *be, dt_shape x_shape, const dt_layout *x, const dt_layout *s);
  void (*scale_forward)(dt_op *op, const dt_tensor *x, const dt_tensor *s, dt_tensor *y);
  /* dx = dy * s and ds = sum over H, W of dy * x; either output may be NULL (not wanted). */
  void (*scale_backward)(dt_op *op, const dt_tensor *x, const dt_tensor *s, const dt_tensor *dy,
                         dt_tensor *dx, dt_tensor *ds);

  /* ---- shake-shake mixing of two tensors of one shape and layout ---- */
  dt_op *(*shake_create)(dt_backend *be, dt_shape shape, const dt_layout *x);
  /* y = alpha[n] a + (1 - alpha[n]) b; alpha: N host floats. */
  void (*shake_forward)(dt_op *op, const dt_tensor *a, const dt_tensor *b, const float *alpha,
                        dt_tensor *y);
  /* da = beta[n] dy, db = (1 - beta[n]) dy; beta: N host floats; either output may be NULL. */
  void (*shake_backward)(dt_op *op, const dt_tensor *dy, const float *beta, dt_tensor *da,
                         dt_tensor *db);

  /* ---- spatial shift: y[:, :, i, j] = x[:, :, i + shift_y, j + shift_x], 0 outside ---- */
  dt_op *(*shift_create)(dt_backend *be, dt_shape shape, const dt_layout *x, int shift_y,
                         int shift_x);
  void (*shift_forward)(dt_op *op, const dt_tensor *x, dt_tensor *y);
  /* dx[:, :, i, j] = dy[:, :, i - shift_y, j - shift_x], 0 outside. */
  void (*shift_backward)(dt_op *op, const dt_tensor *dy, dt_tensor *dx);

  /* ---- per-channel bias (VGG convolutions) ---- */
  dt_op *(*bias_create)(dt_backend *be, dt_shape shape, const dt_layout *x);
  /* y = x + b[c], b: C floats of backend memory; y may be x (in place). */
  void (*bias_forward)(dt_op *op, const dt_tensor *x, const float *b, dt_tensor *y);
  /* db = sum over N, H, W of dy. */
  void (*bias_backward)(dt_op *op, const dt_tensor *dy, float *db);

  /* ==== optimizer updates (src/optim.c, docs/reference-experiments.md "Optimizers") ====
   * One trainable tensor per call: w its n weights, g its gradient and the state arrays laid
   * out like w, all backend memory. Every update first multiplies g in place by grad_scale
   * when that is not 1, then uses d = g + wd w (coupled weight decay). The arithmetic is the
   * CPU backend's float loops, in their order, which other backends reproduce to rounding.
   * skip: one int32 of backend memory, or NULL (always apply). When *skip != 0 the call
   * changes nothing at all: not w, not g (no grad_scale either), not the state. The flag is
   * read where the update runs, when it runs (on the GPU by the kernels themselves: no host
   * read, nothing waits), so a caller may enqueue the update before the flag is written
   * (e.g. by flag_nonfinite) and never learn it on the host in between. */
  /* SGD: buf = d on the first step, else momentum buf + d; then
   * w -= lr (d + momentum buf) with Nesterov, else w -= lr buf. */
  void (*sgd_update)(dt_backend *be, float *w, float *g, float *buf, size_t n, float lr,
                     float momentum, float wd, bool nesterov, bool first, float grad_scale,
                     const int32_t *skip);
  /* sgd_update on every tensor of the weight arena in one call (optional; NULL: per tensor):
   * element i of [0, n) with weight decay wd where mask[i] == 1, none where mask[i] == 2, left
   * alone where mask[i] == 0 (alignment padding). mask: n bytes of backend memory. The same
   * bits as sgd_update tensor by tensor. */
  void (*sgd_update_multi)(dt_backend *be, float *w, float *g, float *buf, const uint8_t *mask,
                           size_t n, float lr, float momentum, float wd, bool nesterov,
                           bool first, float grad_scale, const int32_t *skip);
  /* LARS: the trust ratio r = |w| / (eps + |g| + wd |w|) from the norms of this tensor, in
   * double; times eta when eta > 0; 1 when |w| < threshold. Then buf = momentum buf +
   * (float)(lr r) d and w -= buf. */
  void (*lars_update)(dt_backend *be, float *w, float *g, float *buf, size_t n, double lr,
                      float momentum, float wd, double eps, double eta, double threshold,
                      float grad_scale, const int32_t *skip);
  /* lars_update on every tensor of the weight arena at once (optional; NULL: per tensor):
   * seg holds n_seg tensors (backend memory), in increasing offset order, without overlap,
   * inside [0, n), each with its own weight decay; elements outside every segment are left
   * alone. Each tensor's norms are summed in a fixed order (no atomics), so the results are
   * deterministic and the same bits as lars_update tensor by tensor. */
  void (*lars_update_multi)(dt_backend *be, float *w, float *g, float *buf,
                            const dt_optim_segment *seg, int n_seg, size_t n, double lr,
                            float momentum, double eps, double eta, double threshold,
                            float grad_scale, const int32_t *skip);
  /* Adam: m = beta1 m + (1 - beta1) d, v = beta2 v + (1 - beta2) d d, and with vmax (AMSGrad;
   * NULL for Adam) vmax = max(vmax, v) taking v's place below; then
   * w -= step m / (sqrt(v) / bc2_sqrt + eps), where the caller gives step = lr / (1 - beta1^t)
   * and bc2_sqrt = sqrt(1 - beta2^t) for update t. */
  void (*adam_update)(dt_backend *be, float *w, float *g, float *m, float *v, float *vmax,
                      size_t n, float step, float beta1, float beta2, float eps, float bc2_sqrt,
                      float wd, float grad_scale, const int32_t *skip);
  /* adam_update on every tensor of the weight arena in one call (optional; NULL: per
   * tensor), with the decay mask of sgd_update_multi. The same bits as adam_update tensor by
   * tensor. */
  void (*adam_update_multi)(dt_backend *be, float *w, float *g, float *m, float *v, float *vmax,
                            const uint8_t *mask, size_t n, float step, float beta1, float beta2,
                            float eps, float bc2_sqrt, float wd, float grad_scale,
                            const int32_t *skip);

  /* ==== the step's device-side bookkeeping (src/step.c) ====
   * None of these waits: a training step reads its results back in one to_host (backend
   * memory below means the backend's, as everywhere in this table). */
  /* Copy bytes between two buffers of backend memory (they do not overlap). */
  void (*copy)(dt_backend *be, void *dst, const void *src, size_t bytes);
  /* y[i] += a * (x[i] - x2[i]) for i < n, in float, rounded after the difference, the product
   * and the sum (no fused multiply-add); x2 NULL: y[i] += a * x[i]. */
  void (*axpy)(dt_backend *be, float *y, const float *x, const float *x2, size_t n, float a);
  /* *flag = 1 when some of the n floats at x is NaN or infinite, else *flag is left alone. */
  void (*flag_nonfinite)(dt_backend *be, const float *x, size_t n, int32_t *flag);
  /* Top-1 count of plain (N, K) logits, added in double to *correct: with labels (N int32),
   * the rows whose label ranks first (a tie goes to the lower class, as dt_eval_topk_correct
   * counts); labels NULL, sum_i targets[i, argmax z_i] (the first maximum; targets (N, K)).
   * logits2 not NULL: z = 0.5f * (logits + logits2) in float, element by element. The count of
   * the n rows is summed in row order from 0 and then added to *correct. */
  void (*top1)(dt_backend *be, const dt_tensor *logits, const dt_tensor *logits2,
               const float *targets, const int32_t *labels, int n, int k, double *correct);
  /* out[i] = sum over c in order of ((double)a[i, c] - b[i, c])^2, a and b plain (N, K). */
  void (*sq_diff_rows)(dt_backend *be, const dt_tensor *a, const dt_tensor *b, int n, int k,
                       double *out);

  /* ==== precision ====
   * Choose the arithmetic of the ops created from now on (call it before any op exists).
   * DT_PRECISION_BF16 / DT_PRECISION_FP16: convolutions take bfloat16 / IEEE half operands
   * (rounded to nearest even; in fp16 a value beyond 65504 becomes infinite, so callers train
   * fp16 with loss scaling) and accumulate in fp32; parameters, their gradients, batch-norm
   * statistics and the optimizer stay fp32. A convolution's result is rounded to the format as
   * well. Activations and their gradients may be stored in 16 bits between the ops: the
   * layouts the ops choose then carry the 16-bit type (layout_bytes about halves), except the
   * input (layout_plain stays fp32) and the linear layer's output, the fp32 logits; upload and
   * download convert. The CPU backend does so with oneDNN's bf16 kernels where the CPU has
   * bf16 instructions (AVX-512 BF16, AMX); elsewhere, and for fp16 without fp16 kernels, it
   * emulates the convolutions' arithmetic by rounding in fp32 tensors (the arithmetic of
   * tensor cores, not their speed; an accumulating forward adds the rounded result in fp32).
   * Returns DT_ERR_CONFIG with a message when the backend or device cannot; NULL: fp32 only. */
  dt_status (*set_precision)(dt_backend *be, dt_precision precision);
  /* Optional (CPU): compute with `threads` threads (>= 1) from the next op on, when the share
   * of the cores changes while training (thread_share.h). Primitives that fixed their thread
   * count when they were created are re-created on their next use; the time that takes is
   * added to dt_backend.rethread_seconds. */
  void (*set_threads)(dt_backend *be, int threads);

  /* ==== algorithm choices (optional; the CUDA backend's cuDNN convolutions) ====
   * A backend that picks algorithms by timing hands its choices out as rows of
   * DT_BACKEND_ALGO_COLS integers (what they mean is the backend's), so that a checkpoint
   * keeps them and a resumed run takes the same ones instead of timing again (bit-exact
   * resume). algos_export writes at most max_rows rows and returns how many there are (rows
   * NULL: only count). algos_import, before the ops are created, adopts rows as if they had
   * been chosen here; a row this device cannot run is dropped (that shape is timed again) with
   * a warning. NULL: the backend does not choose. */
  size_t (*algos_export)(dt_backend *be, int32_t *rows, size_t max_rows);
  void (*algos_import)(dt_backend *be, const int32_t *rows, size_t n_rows);

  /* The backend's native stream (a cudaStream_t on the CUDA backend) on which every op runs,
   * for the comm's device collectives to order themselves against (optional: NULL on a host
   * backend, which has no device collectives). */
  void *(*native_stream)(dt_backend *be);

  /* ==== asynchronous input (optional: NULL where reading host memory is cheap, as on the CPU)
   * Page-locked host memory for the loader's image buffers (asynchronous copies need it). */
  void *(*host_alloc)(dt_backend *be, size_t bytes);
  void (*host_free)(dt_backend *be, void *ptr);
  /* Start copying the plain NCHW batch at nchw_host (count floats, from host_alloc memory) to
   * the device on a copy stream of its own, overlapping whatever the compute stream runs. The
   * next upload of that same pointer into a tensor of count floats takes the copy instead of
   * reading host memory (the compute stream waits for it on the device). Until that upload
   * returns, the host memory must not change. The backend holds two prefetches; a third
   * replaces the older one. nchw_host NULL waits until every copy in flight has read its host
   * memory and forgets every prefetch not yet uploaded (call it
   * before host memory that was prefetched may be refilled without an upload in between, as
   * when a loader restarts). */
  void (*prefetch)(dt_backend *be, const float *nchw_host, size_t count);
  /* Optional: NULL where to_device and upload never wait for the device (the CPU). While
   * held (hold true), to_device and upload return without waiting for their copies: the
   * caller keeps the host memory they read unchanged until a later to_host or download, which
   * waits for them all. hold_host(be, false) ends the hold without waiting: copies made
   * during it may still be reading their host memory. From host_alloc memory the copies then
   * overlap the device's work (from other memory a driver may stage them). What is copied
   * while held is a step's inputs and bookkeeping, never weights: a backend that keeps derived
   * copies of weights (CUDA's 16-bit copies) need not make them again for such a copy. */
  void (*hold_host)(dt_backend *be, bool hold);

  /* ==== replaying a step's device work (optional; CUDA graphs) ====
   * capture_begin: from now on the ops are recorded, not run, until capture_end. Only device
   * work may be recorded: no op that waits for results on the host (to_host, download).
   * capture_end returns the recorded work, or NULL (with a warning printed) when the device
   * could not record or instantiate it; nothing recorded has run either way. replay runs it
   * again with the buffers and scalars of the capture; capture_free frees it. A recording
   * is valid only at the dt_backend.generation it was made at (see below; replay.h). */
  void (*capture_begin)(dt_backend *be);
  void *(*capture_end)(dt_backend *be);
  void (*replay)(dt_backend *be, void *captured);
  void (*capture_free)(dt_backend *be, void *captured);
} dt_backend_ops;

struct dt_backend {
  const dt_backend_ops *ops;
  int threads;
  /* set_threads: primitives re-created for a new thread count, those kept as they were (the
   * new one would have changed a layout), and the seconds both took. */
  long rethread_prims, rethread_kept;
  double rethread_seconds;
  /* Bumped by a backend that records (capture_begin) whenever it frees or moves device
   * memory a recording may reference: a shared buffer grown, a tensor or op freed. */
  unsigned long generation;
  /* train.deterministic, set before ops are created: only algorithms that give the same bits
   * on every run (no atomics-ordered sums) where the backend chooses between several. */
  bool deterministic;
  /* Backend memory is host memory that host code may read and write directly, and every op
   * has finished when it returns (the CPU backend): the MPI comm then sums gradients and flags
   * in place instead of through to_host / to_device. */
  bool host_memory;
  /* The storage order of convolution weights (and so of their gradients and optimizer state)
   * in backend memory, fixed when the backend is created: false, the logical OIHW (K, C/G, R,
   * S); true, KRSC (K, R, S, C/G), the order cuDNN reads with NHWC activations. The CUDA
   * backend is always KRSC; the CPU backend is OIHW unless the environment has
   * DT_WEIGHTS_KRSC=1 (a test switch: the CPU suite then runs the KRSC mechanism). Host views
   * stay logical: nn/params.h converts at the boundary (dt_params_to_host / _from_host), and
   * a caller that hands its own weights to conv_* converts them (dt_conv_weights_permute). */
  bool weights_krsc;
};

/* The members of dt_backend_ops every backend sets (name included)... */
#define DT_BACKEND_REQUIRED_OPS(X)                                                              \
  X(name) X(destroy) X(layout_plain) X(layout_bytes) X(alloc) X(free) X(zero) X(to_device)      \
  X(to_host) X(upload) X(download) X(conv_create) X(conv_forward) X(conv_backward_data)         \
  X(conv_backward_weights) X(bn_create) X(bn_forward_train) X(bn_forward_infer) X(bn_backward)  \
  X(eltwise_create) X(relu_forward) X(relu_backward) X(add) X(accumulate) X(gap_create)         \
  X(gap_forward) X(gap_backward) X(linear_create) X(linear_forward) X(linear_backward) X(xent)  \
  X(op_free) X(pool_create) X(pool_forward) X(pool_backward) X(concat_create) X(concat_forward) \
  X(concat_backward) X(pad_channels_create) X(pad_channels_forward) X(pad_channels_backward)    \
  X(dropout_create) X(dropout_forward) X(dropout_backward) X(sigmoid_create) X(sigmoid_forward) \
  X(sigmoid_backward) X(scale_create) X(scale_forward) X(scale_backward) X(shake_create)        \
  X(shake_forward) X(shake_backward) X(shift_create) X(shift_forward) X(shift_backward)         \
  X(bias_create) X(bias_forward) X(bias_backward) X(sgd_update) X(lars_update) X(adam_update)   \
  X(copy) X(axpy) X(flag_nonfinite) X(top1) X(sq_diff_rows)
/* ...and the optional capabilities, NULL where a backend lacks them (the CPU backend has no
 * streams, page-locked memory, algorithm choices or recordings). Every member is in exactly one
 * of the two lists: backend.c fails to compile when one is in neither. */
#define DT_BACKEND_OPTIONAL_OPS(X)                                                          \
  X(sgd_update_multi) X(lars_update_multi) X(adam_update_multi) X(set_precision)            \
  X(algos_export) X(algos_import) X(native_stream) X(host_alloc) X(host_free) X(prefetch)   \
  X(hold_host) X(capture_begin) X(capture_end) X(replay) X(capture_free) X(set_threads)

/* The first required member of ops that is NULL, by name, or NULL when all are set. */
const char *dt_backend_ops_missing(const dt_backend_ops *ops);

/* Integers per row of algos_export / algos_import. */
#define DT_BACKEND_ALGO_COLS 18

typedef enum { DT_DEVICE_CPU = 0, DT_DEVICE_CUDA = 1 } dt_device;

/* The backends are created by dt_backend_create (src/backend_factory.h), which sits above
 * this seam; no backend and no caller of the seam needs to know the others. */

#endif
