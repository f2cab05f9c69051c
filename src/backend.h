/* backend.h: the compute seam (DESIGN "The seams"). Model and training code call these
 * function pointers and never include oneDNN, CUDA or cuDNN headers.
 *
 * Activations are dt_tensors: a logical shape (N, C, H, W) stored in a layout the backend
 * chooses (oneDNN blocked nChw8c on the CPU, NHWC on the GPU). Each op is prepared once for
 * fixed shapes with *_create, which is told the layouts of its inputs and returns the layout
 * of its output; the graph allocates every buffer from those layouts. Parameters and their
 * gradients are plain fp32 arrays carved from flat arenas, in logical layout (OIHW for
 * convolutions, (K, C) for linear layers), exactly as PyTorch stores them.
 * Layout pointers stay valid for the lifetime of the backend that returned them.
 *
 * A plain C reference of every op lives in tests/ref/ and is the oracle for every backend. */
#ifndef DT_BACKEND_H
#define DT_BACKEND_H

#include "common.h"

typedef struct dt_backend dt_backend;
typedef struct dt_layout dt_layout; /* backend-private storage order of one tensor shape */
typedef struct dt_op dt_op;         /* backend-private prepared op (primitives, workspace) */

typedef struct { int n, c, h, w; } dt_shape;

static inline size_t dt_shape_count(dt_shape s) { return (size_t)s.n * s.c * s.h * s.w; }

typedef struct {
  dt_shape shape;
  const dt_layout *layout;
  float *data; /* backend memory of layout_bytes(layout) bytes */
} dt_tensor;

/* Convolution without bias: input (N, C, H, W), weight (K, C/G, R, S), square stride and
 * symmetric zero padding. */
typedef struct {
  int n, c, h, w;
  int k, r, s;
  int stride, pad, groups;
  bool need_dx; /* false for a layer whose input needs no gradient (the stem) */
} dt_conv_params;

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
  dt_op *(*conv_create)(dt_backend *be, const dt_conv_params *p, const dt_layout *x,
                        const dt_layout **y);
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
   * Writes per-sample losses to loss_host (N) and dlogits = (softmax - target) * grad_scale. */
  void (*xent)(dt_backend *be, const dt_tensor *logits, const float *targets, int n, int k,
               float grad_scale, dt_tensor *dlogits, float *loss_host);

  void (*op_free)(dt_op *op);
} dt_backend_ops;

struct dt_backend {
  const dt_backend_ops *ops;
  int threads;
};

typedef enum { DT_DEVICE_CPU = 0, DT_DEVICE_CUDA = 1 } dt_device;

/* Create a backend. threads <= 0 keeps the OpenMP default. Returns NULL with an error set
 * (dt_error_set) when the device is not available in this build or on this machine. */
dt_backend *dt_backend_create(dt_device device, int threads);
dt_backend *dt_backend_cpu_create(int threads);

#endif
