/* cuda_internal.h: private pieces shared by the host files of the CUDA backend (src/cuda/).
 *
 * Activations live in NHWC; the plain layout of the contract is NCHW (the image batch, the
 * logits). Every buffer, the ones `alloc` returns included (parameter and gradient arenas,
 * optimizer state), is plain device memory (cudaMalloc): host code reaches it only through
 * to_host / to_device / upload / download, and the optimizer updates it with the backend's
 * update kernels. Everything runs on one stream, in call order.
 *
 * Synchronisation: only an op that hands results to host memory (to_host, download)
 * or reads host memory the caller may reuse at once (to_device,
 * upload) waits for the stream before it returns; every other op only enqueues work. With the
 * environment variable DT_CUDA_SYNC=1 every op waits (errors then point at the right op).
 * The exceptions: an upload of a prefetched batch (the copy ran on the copy stream from
 * page-locked memory, and the compute stream waits for it on the device), and to_device and
 * upload while the caller holds their host memory (hold_host, a training step). */
#ifndef DT_CUDA_INTERNAL_H
#define DT_CUDA_INTERNAL_H

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include "backend.h"
#include "backend_live_ops.h"
#include "cuda/backend_cuda.h"
#include "cuda/cuda_kernels.h"

/* ---- the check macro family: every CUDA, cuDNN and cuBLAS call goes through one ---- */
#define DT_CUDA_CHECK(expr)                                                               \
  do {                                                                                    \
    cudaError_t dt_cuda_e_ = (expr);                                                      \
    if (dt_cuda_e_ != cudaSuccess)                                                        \
      DT_FATAL("CUDA call %s failed: %s (%s, error %d)%s", #expr,                        \
               cudaGetErrorString(dt_cuda_e_), cudaGetErrorName(dt_cuda_e_), (int)dt_cuda_e_, \
               dt_cuda_capture_hint(dt_cuda_e_));                                         \
  } while (0)

/* A hint for errors of CUDA graph capture (train.cuda_graphs). */
static inline const char *dt_cuda_capture_hint(cudaError_t e) {
  return e == cudaErrorStreamCaptureUnsupported || e == cudaErrorStreamCaptureInvalidated ||
                 e == cudaErrorStreamCaptureImplicit || e == cudaErrorStreamCaptureIsolation
             ? " while recording a CUDA graph: set train.cuda_graphs = false"
             : "";
}

#define DT_CUDNN_CHECK(expr)                                                              \
  do {                                                                                    \
    cudnnStatus_t dt_cudnn_s_ = (expr);                                                   \
    if (dt_cudnn_s_ != CUDNN_STATUS_SUCCESS) {                                            \
      char dt_cudnn_m_[512];                                                              \
      cudnnGetLastErrorString(dt_cudnn_m_, sizeof dt_cudnn_m_);                           \
      DT_FATAL("cuDNN call %s failed: %s (%d) %s", #expr, cudnnGetErrorString(dt_cudnn_s_), \
               (int)dt_cudnn_s_, dt_cudnn_m_);                                            \
    }                                                                                     \
  } while (0)

#define DT_CUBLAS_CHECK(expr)                                                             \
  do {                                                                                    \
    cublasStatus_t dt_cublas_s_ = (expr);                                                 \
    if (dt_cublas_s_ != CUBLAS_STATUS_SUCCESS)                                            \
      DT_FATAL("cuBLAS call %s failed: %s (%d)", #expr, cublasGetStatusString(dt_cublas_s_), \
               (int)dt_cublas_s_);                                                        \
  } while (0)

/* ---- layouts ---- */
typedef enum { DT_CUDA_NCHW, DT_CUDA_NHWC } dt_cuda_format;

/* A storage order and element type of one shape. Interned per backend (equal layouts are the
 * same pointer) and freed with it. Where C = 1 or H W = 1 the two orders are the same bytes;
 * such layouts are always stored as NCHW, so that equal memory means equal layout. The
 * element type is the storage precision of the tensor (cuda_dtype.h): fp32 for the plain
 * layout, the backend's activation type (be->act) for what convolutions write and for
 * everything computed from it. A dt_tensor's data then points at 16-bit elements. */
struct dt_layout {
  dt_shape shape;
  dt_cuda_format format;
  dt_cuda_dtype dtype;
  struct dt_layout *next;
};

typedef struct dt_cuda_algo dt_cuda_algo; /* cached convolution algorithms (cuda_conv.c) */

/* One prefetched input batch (backend.h prefetch): a device copy of host memory, made on the
 * copy stream. */
typedef struct {
  const float *host;   /* the host memory it copies, NULL: free */
  size_t count;        /* floats */
  float *dev;          /* (count) plain NCHW on the device */
  size_t cap;          /* floats dev holds */
  cudaEvent_t copied;  /* on the copy stream: dev holds the batch */
  cudaEvent_t used;    /* on the compute stream: the last read of dev is over */
} dt_cuda_prefetch;

typedef struct {
  dt_backend base; /* first: a dt_backend * is a dt_cuda_backend * */
  int device;
  cudaStream_t stream;
  cudnnHandle_t cudnn;
  cublasHandle_t cublas;
  bool tf32;     /* DT_CUDA_TF32=1: let cuDNN and cuBLAS use TF32 tensor cores for fp32 */
  dt_precision precision; /* set_precision: fp32, or bf16 / fp16 activations and convolutions */
  dt_cuda_dtype act;      /* the element type of the activations ops choose (fp32, bf16, fp16) */
  /* Writes the caller may have made to weights (cuda_dtype.h dt_cuda_wcopy): to_device, zero,
   * free, the optimizer updates, capture_begin / capture_end / replay. */
  unsigned long weights_gen;
  unsigned long capture_seq;  /* recordings begun (capture_begin) */
  bool sync_all; /* DT_CUDA_SYNC=1: wait after every op */
  bool verbose;  /* DT_CUDA_VERBOSE=1: print the chosen convolution algorithms */
  struct dt_layout *layouts;
  dt_live_ops live;           /* live ops, freed by destroy if the caller has not */
  dt_cuda_algo *algos;        /* convolution algorithms by shape */
  void *workspace;            /* shared cuDNN workspace (device), grown to the largest need */
  size_t workspace_bytes;
  float *staging;             /* upload / download staging (device) */
  size_t staging_bytes;
  void *lars_scratch;         /* the LARS norms and trust ratio (device) */
  void *lars_multi_scratch;   /* the same for every tensor of lars_update_multi (device) */
  size_t lars_multi_bytes;
  cudaStream_t copy_stream;   /* prefetches of input batches, beside the compute stream */
  dt_cuda_prefetch prefetch[2];
  int prefetch_next;          /* the slot the next prefetch takes */
  bool capturing;             /* capture_begin .. capture_end: ops are recorded, nothing waits */
  void *cublas_workspace;     /* cuBLAS's workspace, set once so that capture allocates nothing */
  bool hold_host;             /* hold_host: to_device and upload do not wait (cuda_step.c) */
} dt_cuda_backend;

/* Common head of every op; each kind embeds it as its first member. */
struct dt_op {
  dt_live_link link; /* first: the backend's list of live ops (backend_live_ops.h) */
  dt_cuda_backend *be;
  void (*release)(dt_op *op); /* frees the kind's descriptors and buffers, not the struct */
};

static inline dt_cuda_backend *dt_cuda_be(dt_backend *be) { return (dt_cuda_backend *)be; }

/* ---- backend_cuda.c ---- */
const dt_layout *dt_cuda_layout(dt_cuda_backend *be, dt_shape shape, dt_cuda_format format,
                                dt_cuda_dtype dtype);
/* True when the layout stores (N, H, W, C) with C > 1 and H W > 1. */
static inline bool dt_cuda_is_nhwc(const dt_layout *l) { return l->format == DT_CUDA_NHWC; }
/* The element type of a tensor of this layout. */
static inline dt_cuda_dtype dt_cuda_dt(const dt_layout *l) { return l->dtype; }
/* Whether an op's 16-bit copy of the fp32 weights w must be made (again) before the call
 * about to read it (forward: a forward pass); cuda_dtype.h dt_cuda_wcopy. */
static inline bool dt_cuda_wcopy_needed(const dt_cuda_backend *be, dt_cuda_wcopy *c,
                                        const float *w, bool forward) {
  return dt_cuda_wcopy_update(c, w, be->weights_gen, be->capturing, be->capture_seq, forward);
}
/* Fatal unless the tensor has the expected layout (shape mistakes are programming errors). */
void dt_cuda_check_tensor(const dt_tensor *t, const dt_layout *expected, const char *what);
/* Device memory, zero-filled; fatal on failure. */
void *dt_cuda_malloc(size_t bytes);
void dt_cuda_free(void *ptr);
/* Grow the shared cuDNN workspace to at least `bytes`. */
void dt_cuda_workspace_reserve(dt_cuda_backend *be, size_t bytes);
/* Grow a shared device buffer (*buf of *size bytes) to at least `bytes`, after the stream has
 * finished with the old one. Growing bumps be->base.generation, so that no CUDA graph
 * recorded with the old buffer is replayed (replay.h); so does every free of device memory a
 * recording may hold (free, op_free, the staging buffer). */
void dt_cuda_buffer_reserve(dt_cuda_backend *be, void **buf, size_t *size, size_t bytes);
/* The end of an op: wait for the stream if it moved data to or from host memory
 * (`touches_host`), or always with DT_CUDA_SYNC=1. */
void dt_cuda_op_done(dt_cuda_backend *be, bool touches_host);
void dt_cuda_op_register(dt_cuda_backend *be, dt_op *op, void (*release)(dt_op *op));
void dt_cuda_op_free(dt_op *op);

/* ---- ops ---- */
dt_op *dt_cuda_conv_create(dt_backend *be, const dt_conv_params *p, const dt_layout *x,
                           const dt_layout **y);
void dt_cuda_conv_forward(dt_op *op, const dt_tensor *x, const float *w, dt_tensor *y,
                          bool accumulate);
void dt_cuda_conv_backward_data(dt_op *op, const dt_tensor *dy, const float *w, dt_tensor *dx);
void dt_cuda_conv_backward_weights(dt_op *op, const dt_tensor *x, const dt_tensor *dy,
                                   float *dw);
void dt_cuda_algo_cache_free(dt_cuda_backend *be);
/* The backend's algos_export / algos_import (backend.h): the convolution algorithm cache. */
size_t dt_cuda_algos_export(dt_backend *be, int32_t *rows, size_t max_rows);
void dt_cuda_algos_import(dt_backend *be, const int32_t *rows, size_t n_rows);

dt_op *dt_cuda_bn_create(dt_backend *be, dt_shape shape, const dt_layout *x, float eps,
                         bool fuse_relu);
void dt_cuda_bn_forward_train(dt_op *op, const dt_tensor *x, const float *gamma,
                              const float *beta, dt_tensor *y, float *save_mean, float *save_var,
                              float *running_mean, float *running_var, float momentum);
void dt_cuda_bn_forward_infer(dt_op *op, const dt_tensor *x, const float *gamma,
                              const float *beta, const float *running_mean,
                              const float *running_var, dt_tensor *y);
void dt_cuda_bn_backward(dt_op *op, const dt_tensor *x, const dt_tensor *dy, const float *gamma,
                         const float *save_mean, const float *save_var, dt_tensor *dx,
                         float *dgamma, float *dbeta);

dt_op *dt_cuda_eltwise_create(dt_backend *be, dt_shape shape, const dt_layout *x);
void dt_cuda_relu_forward(dt_op *op, const dt_tensor *x, dt_tensor *y);
void dt_cuda_relu_backward(dt_op *op, const dt_tensor *y, const dt_tensor *dy, dt_tensor *dx);
void dt_cuda_add(dt_op *op, const dt_tensor *a, const dt_tensor *b, dt_tensor *y);
void dt_cuda_accumulate(dt_op *op, const dt_tensor *src, dt_tensor *dst);

dt_op *dt_cuda_gap_create(dt_backend *be, dt_shape x_shape, const dt_layout *x,
                          const dt_layout **y);
void dt_cuda_gap_forward(dt_op *op, const dt_tensor *x, dt_tensor *y);
void dt_cuda_gap_backward(dt_op *op, const dt_tensor *dy, dt_tensor *dx);

dt_op *dt_cuda_linear_create(dt_backend *be, dt_shape x_shape, const dt_layout *x, int k,
                             const dt_layout **y);
void dt_cuda_linear_forward(dt_op *op, const dt_tensor *x, const float *w, const float *b,
                            dt_tensor *y);
void dt_cuda_linear_backward(dt_op *op, const dt_tensor *x, const dt_tensor *dy, const float *w,
                             dt_tensor *dx, float *dw, float *db);

/* ---- the kernel-only op (cuda_kernel_op.c) ---- */
/* A per-call host array on its way to the device. */
typedef struct {
  void *host, *dev; /* pinned host and device copies */
  size_t bytes;
  cudaEvent_t done; /* the last copy out of `host` */
  bool pending;
} dt_cuda_host_arg;

/* Pinned and device buffers of `bytes` (freed with the op that holds the dt_cuda_host_arg). */
void dt_cuda_host_arg_init(dt_cuda_host_arg *a, size_t bytes);
/* The device copy of src (a->bytes), enqueued on the stream. */
void *dt_cuda_host_arg_put(dt_cuda_backend *be, dt_cuda_host_arg *a, const void *src);

/* An op of the kernels of kernels/ alone (cuda_pool.c, cuda_concat_pad_shift.c,
 * cuda_dropout_shake.c, cuda_sigmoid_scale_bias.c); the fields a kind does not use stay zero. */
typedef struct {
  dt_op base;
  dt_shape xs, ys, zs; /* input, output, second input / scale */
  const dt_layout *x, *y, *z;
  /* pooling */
  int k, stride, pad;
  bool is_max, incl;
  int *ws; /* argmax of every output of the last forward (max pooling) */
  /* shift */
  int sy, sx;
  /* dropout */
  float p;
  uint8_t *mask; /* keep mask of the last forward with keys, x's layout */
  bool have_mask;
  dt_cuda_host_arg arg; /* dropout keys or shake-shake coefficients (N) */
  double *partial;      /* bias gradient: (N, C) partial sums */
} dt_cuda_kernel_op;

/* A registered op with x as input and output (fatal, naming `what`, when x does not hold s). */
dt_cuda_kernel_op *dt_cuda_kernel_op_new(dt_backend *bep, dt_shape s, const dt_layout *x,
                                         const char *what);

static inline bool dt_cuda_same_shape(dt_shape a, dt_shape b) {
  return a.n == b.n && a.c == b.c && a.h == b.h && a.w == b.w;
}

static inline size_t dt_cuda_hw_of(dt_shape s) { return (size_t)s.h * s.w; }

/* ---- pooling (cuda_pool.c), concatenation, channel padding, spatial shift
 * (cuda_concat_pad_shift.c), dropout, shake-shake mixing (cuda_dropout_shake.c), sigmoid, channel
 * scaling, per-channel bias (cuda_sigmoid_scale_bias.c) ----
 * Each works on NCHW and NHWC alike; an op whose output has another shape (pooling,
 * concatenation, padding) writes it in its input's storage order (NHWC when either input of a
 * concatenation is NHWC). Small host arrays that an op takes per call (dropout keys,
 * shake-shake coefficients) go to the device through the op's dt_cuda_host_arg, so the call does
 * not wait for the device and the caller may reuse its array at once. */
dt_op *dt_cuda_pool_create(dt_backend *be, dt_shape s, const dt_layout *x, dt_pool_kind kind,
                           int ksize, int stride, int pad, bool count_include_pad,
                           const dt_layout **y);
void dt_cuda_pool_forward(dt_op *op, const dt_tensor *x, dt_tensor *y);
void dt_cuda_pool_backward(dt_op *op, const dt_tensor *dy, dt_tensor *dx);
dt_op *dt_cuda_concat_create(dt_backend *be, dt_shape as, const dt_layout *a, dt_shape bs,
                             const dt_layout *b, const dt_layout **y);
void dt_cuda_concat_forward(dt_op *op, const dt_tensor *a, const dt_tensor *b, dt_tensor *y);
void dt_cuda_concat_backward(dt_op *op, const dt_tensor *dy, dt_tensor *da, dt_tensor *db);
dt_op *dt_cuda_pad_channels_create(dt_backend *be, dt_shape xs, const dt_layout *x, int c_out,
                                   const dt_layout **y);
void dt_cuda_pad_channels_forward(dt_op *op, const dt_tensor *x, dt_tensor *y);
void dt_cuda_pad_channels_backward(dt_op *op, const dt_tensor *dy, dt_tensor *dx);
dt_op *dt_cuda_dropout_create(dt_backend *be, dt_shape s, const dt_layout *x, float p);
void dt_cuda_dropout_forward(dt_op *op, const dt_tensor *x, const uint64_t *keys, dt_tensor *y);
void dt_cuda_dropout_backward(dt_op *op, const dt_tensor *dy, dt_tensor *dx);
dt_op *dt_cuda_sigmoid_create(dt_backend *be, dt_shape s, const dt_layout *x);
void dt_cuda_sigmoid_forward(dt_op *op, const dt_tensor *x, dt_tensor *y);
void dt_cuda_sigmoid_backward(dt_op *op, const dt_tensor *y, const dt_tensor *dy, dt_tensor *dx);
dt_op *dt_cuda_scale_create(dt_backend *be, dt_shape xs, const dt_layout *x, const dt_layout *sl);
void dt_cuda_scale_forward(dt_op *op, const dt_tensor *x, const dt_tensor *sc, dt_tensor *y);
void dt_cuda_scale_backward(dt_op *op, const dt_tensor *x, const dt_tensor *sc,
                            const dt_tensor *dy, dt_tensor *dx, dt_tensor *ds);
dt_op *dt_cuda_shake_create(dt_backend *be, dt_shape s, const dt_layout *x);
void dt_cuda_shake_forward(dt_op *op, const dt_tensor *a, const dt_tensor *b, const float *alpha,
                           dt_tensor *y);
void dt_cuda_shake_backward(dt_op *op, const dt_tensor *dy, const float *beta, dt_tensor *da,
                            dt_tensor *db);
dt_op *dt_cuda_shift_create(dt_backend *be, dt_shape s, const dt_layout *x, int shift_y,
                            int shift_x);
void dt_cuda_shift_forward(dt_op *op, const dt_tensor *x, dt_tensor *y);
void dt_cuda_shift_backward(dt_op *op, const dt_tensor *dy, dt_tensor *dx);
dt_op *dt_cuda_bias_create(dt_backend *be, dt_shape s, const dt_layout *x);
void dt_cuda_bias_forward(dt_op *op, const dt_tensor *x, const float *b, dt_tensor *y);
void dt_cuda_bias_backward(dt_op *op, const dt_tensor *dy, float *db);

#endif
