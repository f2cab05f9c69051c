/* backend_cuda.c: the CUDA backend (docs/architecture.md "Backend table"): device, stream and
 * library handles, layouts, memory, host transfers, the loss, the optimizer updates, and the table
 * of function pointers. Convolutions live in cuda_conv.c (cuDNN), batch norm in cuda_bn.c, ReLU,
 * global average pooling and the linear layer in cuda_ops.c, the kernel-only ops of the other
 * families in cuda_pool.c, cuda_concat_pad_shift.c, cuda_dropout_shake.c and
 * cuda_sigmoid_scale_bias.c (on cuda_kernel_op.c); the kernels they launch are in kernels/. See cuda_internal.h for the memory and
 * synchronisation rules. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_internal.h"
#include "cuda/cuda_step_kernels.h"
#include "gpu_place.h"
#include "precision.h"

/* ---- layouts ---- */

const dt_layout *dt_cuda_layout(dt_cuda_backend *be, dt_shape s, dt_cuda_format format,
                                dt_cuda_dtype dtype) {
  if (s.n <= 0 || s.c <= 0 || s.h <= 0 || s.w <= 0)
    DT_FATAL("cuda layout: bad shape (%d, %d, %d, %d)", s.n, s.c, s.h, s.w);
  if (s.c == 1 || s.h * s.w == 1) format = DT_CUDA_NCHW; /* the same bytes either way */
  for (struct dt_layout *l = be->layouts; l; l = l->next)
    if (l->format == format && l->dtype == dtype && l->shape.n == s.n && l->shape.c == s.c &&
        l->shape.h == s.h && l->shape.w == s.w)
      return l;
  struct dt_layout *l = dt_xcalloc(1, sizeof *l);
  l->shape = s;
  l->format = format;
  l->dtype = dtype;
  l->next = be->layouts;
  be->layouts = l;
  return l;
}

/* The plain layout of the contract is fp32 NCHW at every precision (the image batch, the
 * logits). */
static const dt_layout *cuda_layout_plain(dt_backend *be, dt_shape s) {
  return dt_cuda_layout(dt_cuda_be(be), s, DT_CUDA_NCHW, DT_CUDA_F32);
}

static size_t cuda_layout_bytes(const dt_layout *l) {
  return dt_cuda_tensor_bytes(l->shape, l->dtype);
}

void dt_cuda_check_tensor(const dt_tensor *t, const dt_layout *expected, const char *what) {
  if (!t || !t->data) DT_FATAL("%s: missing tensor or buffer", what);
  const dt_layout *l = t->layout;
  if (l == expected) return;
  if (!l || l->format != expected->format || l->dtype != expected->dtype ||
      l->shape.n != expected->shape.n ||
      l->shape.c != expected->shape.c || l->shape.h != expected->shape.h ||
      l->shape.w != expected->shape.w)
    DT_FATAL("%s: tensor (%d, %d, %d, %d) does not have the layout the op was created for "
             "(%s %s)", what, t->shape.n, t->shape.c, t->shape.h, t->shape.w,
             dt_cuda_dtype_name(expected->dtype),
             expected->format == DT_CUDA_NHWC ? "NHWC" : "NCHW");
}

/* ---- memory ---- */

void *dt_cuda_malloc(size_t bytes) {
  void *p = NULL;
  DT_CUDA_CHECK(cudaMalloc(&p, bytes ? bytes : 1));
  DT_CUDA_CHECK(cudaMemset(p, 0, bytes ? bytes : 1));
  return p;
}

void dt_cuda_free(void *ptr) {
  if (ptr) DT_CUDA_CHECK(cudaFree(ptr));
}

void dt_cuda_buffer_reserve(dt_cuda_backend *be, void **buf, size_t *size, size_t bytes) {
  if (bytes <= *size) return;
  if (*buf) { /* a kernel may still use the old buffer, a recording may hold it */
    DT_CUDA_CHECK(cudaStreamSynchronize(be->stream));
    be->base.generation++;
  }
  dt_cuda_free(*buf);
  *buf = dt_cuda_malloc(bytes);
  *size = bytes;
}

void dt_cuda_workspace_reserve(dt_cuda_backend *be, size_t bytes) {
  dt_cuda_buffer_reserve(be, &be->workspace, &be->workspace_bytes, bytes);
}

/* The staging buffer of host transfers, grown to `bytes`. */
static float *cuda_staging(dt_cuda_backend *be, size_t bytes) {
  if (bytes > be->staging_bytes) {
    DT_CUDA_CHECK(cudaStreamSynchronize(be->stream));
    be->base.generation++; /* a recording may hold the old buffer */
    dt_cuda_free(be->staging);
    be->staging = dt_cuda_malloc(bytes);
    be->staging_bytes = bytes;
  }
  return be->staging;
}

void dt_cuda_op_done(dt_cuda_backend *be, bool touches_host) {
  if ((touches_host || be->sync_all) && !be->capturing)
    DT_CUDA_CHECK(cudaStreamSynchronize(be->stream));
}

/* Plain device memory, zeroed in stream order (before any later op of the stream uses it). */
static void *cuda_alloc(dt_backend *bep, size_t bytes) {
  dt_cuda_backend *be = dt_cuda_be(bep);
  void *p = NULL;
  DT_CUDA_CHECK(cudaMalloc(&p, bytes ? bytes : 1));
  DT_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes ? bytes : 1, be->stream));
  dt_cuda_op_done(be, false);
  return p;
}

static void cuda_free_mem(dt_backend *bep, void *ptr) {
  dt_cuda_backend *be = dt_cuda_be(bep);
  if (!ptr) return;
  DT_CUDA_CHECK(cudaStreamSynchronize(be->stream));
  be->base.generation++;
  be->weights_gen++; /* the address may come back for other weights */
  DT_CUDA_CHECK(cudaFree(ptr));
}

static void cuda_zero(dt_backend *bep, void *ptr, size_t bytes) {
  dt_cuda_backend *be = dt_cuda_be(bep);
  be->weights_gen++;
  DT_CUDA_CHECK(cudaMemsetAsync(ptr, 0, bytes, be->stream));
  dt_cuda_op_done(be, false);
}

/* Host transfers wait: the host reads what to_host wrote, and may reuse what to_device read
 * (unless it holds that memory: hold_host). */
static void cuda_to_device(dt_backend *bep, void *dst, const void *src_host, size_t bytes) {
  dt_cuda_backend *be = dt_cuda_be(bep);
  if (bytes == 0) return;
  /* It may be weights (a checkpoint, a broadcast), except while the host is held: a step's
   * uploads (targets, labels, merged statistics) never are (backend.h hold_host). Otherwise
   * every micro-batch's targets would make the 16-bit weight copies again. */
  if (!be->hold_host) be->weights_gen++;
  DT_CUDA_CHECK(cudaMemcpyAsync(dst, src_host, bytes, cudaMemcpyHostToDevice, be->stream));
  dt_cuda_op_done(be, !be->hold_host);
}

static void cuda_to_host(dt_backend *bep, void *dst_host, const void *src, size_t bytes) {
  dt_cuda_backend *be = dt_cuda_be(bep);
  if (bytes == 0) return;
  DT_CUDA_CHECK(cudaMemcpyAsync(dst_host, src, bytes, cudaMemcpyDeviceToHost, be->stream));
  dt_cuda_op_done(be, true);
}

/* ---- asynchronous input ---- */

static void *cuda_host_alloc(dt_backend *bep, size_t bytes) {
  (void)bep;
  void *p = NULL;
  DT_CUDA_CHECK(cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocPortable));
  return p;
}

static void cuda_host_free(dt_backend *bep, void *ptr) {
  (void)bep;
  if (ptr) DT_CUDA_CHECK(cudaFreeHost(ptr));
}

/* Copy the batch on the copy stream into the slot after the older prefetch, once the compute
 * stream has finished reading what that slot held before. */
static void cuda_prefetch(dt_backend *bep, const float *nchw_host, size_t count) {
  dt_cuda_backend *be = dt_cuda_be(bep);
  if (!nchw_host) {
    /* Forget, once a copy still in flight has read the host memory: the caller may refill it
     * as soon as this returns (a loader restart). */
    for (int i = 0; i < 2; i++) {
      if (be->prefetch[i].host) DT_CUDA_CHECK(cudaEventSynchronize(be->prefetch[i].copied));
      be->prefetch[i].host = NULL;
    }
    return;
  }
  for (int i = 0; i < 2; i++)
    if (be->prefetch[i].host == nchw_host && be->prefetch[i].count == count) return;
  dt_cuda_prefetch *pf = &be->prefetch[be->prefetch_next];
  be->prefetch_next ^= 1;
  /* Replacing a prefetch never uploaded: its host memory is the caller's again once read. */
  if (pf->host) DT_CUDA_CHECK(cudaEventSynchronize(pf->copied));
  if (pf->cap < count) {
    DT_CUDA_CHECK(cudaEventSynchronize(pf->used));
    DT_CUDA_CHECK(cudaEventSynchronize(pf->copied));
    dt_cuda_free(pf->dev);
    pf->dev = dt_cuda_malloc(count * sizeof(float));
    pf->cap = count;
  }
  DT_CUDA_CHECK(cudaStreamWaitEvent(be->copy_stream, pf->used, 0));
  DT_CUDA_CHECK(cudaMemcpyAsync(pf->dev, nchw_host, count * sizeof(float),
                                cudaMemcpyHostToDevice, be->copy_stream));
  DT_CUDA_CHECK(cudaEventRecord(pf->copied, be->copy_stream));
  pf->host = nchw_host;
  pf->count = count;
}

/* The prefetch holding this host batch, or NULL. */
static dt_cuda_prefetch *cuda_prefetched(dt_cuda_backend *be, const float *host, size_t count) {
  for (int i = 0; i < 2; i++)
    if (be->prefetch[i].host == host && be->prefetch[i].count == count) return &be->prefetch[i];
  return NULL;
}

/* An fp32 NCHW batch on the device (src) into dst: a copy, a transposition (fp32 NHWC) or a
 * conversion to dst's element type (16-bit, transposed when NHWC). */
static void cuda_upload_from_device(dt_cuda_backend *be, const float *src, dt_tensor *dst) {
  const dt_shape s = dst->shape;
  const bool nhwc = dt_cuda_is_nhwc(dst->layout);
  if (dt_cuda_dt(dst->layout) != DT_CUDA_F32)
    DT_CUDA_CHECK(dt_k_convert(src, DT_CUDA_F32, true, dst->data, dt_cuda_dt(dst->layout), !nhwc,
                               s.n, s.c, s.h * s.w, false, be->stream));
  else if (!nhwc)
    DT_CUDA_CHECK(cudaMemcpyAsync(dst->data, src, dt_shape_count(s) * sizeof(float),
                                  cudaMemcpyDeviceToDevice, be->stream));
  else
    DT_CUDA_CHECK(dt_k_nchw_to_nhwc(src, dst->data, s.n, s.c, s.h * s.w, be->stream));
}

static void cuda_upload(dt_backend *bep, const float *nchw_host, dt_tensor *dst) {
  dt_cuda_backend *be = dt_cuda_be(bep);
  const dt_shape s = dst->shape;
  const size_t bytes = dt_shape_count(s) * sizeof(float);
  if (!dst->data || !dst->layout) DT_FATAL("upload: missing tensor buffer or layout");
  dt_cuda_prefetch *pf = cuda_prefetched(be, nchw_host, dt_shape_count(s));
  if (pf) {
    /* The copy is (usually long) done: the compute stream waits for it on the device, and the
     * host only for the copy itself, after which the caller may change its memory. */
    DT_CUDA_CHECK(cudaStreamWaitEvent(be->stream, pf->copied, 0));
    cuda_upload_from_device(be, pf->dev, dst);
    DT_CUDA_CHECK(cudaEventRecord(pf->used, be->stream));
    DT_CUDA_CHECK(cudaEventSynchronize(pf->copied));
    pf->host = NULL;
    dt_cuda_op_done(be, false);
    return;
  }
  if (!dt_cuda_is_nhwc(dst->layout) && dt_cuda_dt(dst->layout) == DT_CUDA_F32) {
    DT_CUDA_CHECK(cudaMemcpyAsync(dst->data, nchw_host, bytes, cudaMemcpyDefault, be->stream));
  } else {
    float *st = cuda_staging(be, bytes);
    DT_CUDA_CHECK(cudaMemcpyAsync(st, nchw_host, bytes, cudaMemcpyDefault, be->stream));
    cuda_upload_from_device(be, st, dst);
  }
  dt_cuda_op_done(be, !be->hold_host); /* the caller may reuse nchw_host at once */
}

static void cuda_download(dt_backend *bep, const dt_tensor *src, float *nchw_host) {
  dt_cuda_backend *be = dt_cuda_be(bep);
  const dt_shape s = src->shape;
  const size_t bytes = dt_shape_count(s) * sizeof(float);
  if (!src->data || !src->layout) DT_FATAL("download: missing tensor buffer or layout");
  const bool nhwc = dt_cuda_is_nhwc(src->layout);
  const dt_cuda_dtype dt = dt_cuda_dt(src->layout);
  if (!nhwc && dt == DT_CUDA_F32) {
    DT_CUDA_CHECK(cudaMemcpyAsync(nchw_host, src->data, bytes, cudaMemcpyDefault, be->stream));
  } else {
    float *st = cuda_staging(be, bytes);
    if (dt == DT_CUDA_F32)
      DT_CUDA_CHECK(dt_k_nhwc_to_nchw(src->data, st, s.n, s.c, s.h * s.w, be->stream));
    else
      DT_CUDA_CHECK(dt_k_convert(src->data, dt, !nhwc, st, DT_CUDA_F32, true, s.n, s.c,
                                 s.h * s.w, false, be->stream));
    DT_CUDA_CHECK(cudaMemcpyAsync(nchw_host, st, bytes, cudaMemcpyDefault, be->stream));
  }
  dt_cuda_op_done(be, true);
}

/* ---- loss ---- */

/* Soft-target cross-entropy on plain logits (N, K): per-sample losses and dlogits on the
 * device, nothing waits. */
static void cuda_xent(dt_backend *bep, const dt_tensor *logits, const float *targets, int n,
                      int k, float grad_scale, dt_tensor *dlogits, float *losses) {
  dt_cuda_backend *be = dt_cuda_be(bep);
  const dt_shape s = {n, k, 1, 1};
  const dt_layout *plain = dt_cuda_layout(be, s, DT_CUDA_NCHW, DT_CUDA_F32);
  dt_cuda_check_tensor(logits, plain, "xent logits");
  if (dlogits) dt_cuda_check_tensor(dlogits, plain, "xent dlogits");
  DT_CUDA_CHECK(dt_k_xent(logits->data, targets, n, k, grad_scale,
                          dlogits ? dlogits->data : NULL, losses, be->stream));
  dt_cuda_op_done(be, false);
}

/* ---- optimizer updates ---- */
/* The skip flag (backend.h) goes to the kernels, which read it on the device. */

static void cuda_sgd_update(dt_backend *bep, float *w, float *g, float *buf, size_t n, float lr,
                            float momentum, float wd, bool nesterov, bool first,
                            float grad_scale, const int32_t *skip) {
  dt_cuda_backend *be = dt_cuda_be(bep);
  be->weights_gen++;
  DT_CUDA_CHECK(dt_k_sgd_update(w, g, buf, n, lr, momentum, wd, nesterov, first, grad_scale,
                                skip, be->stream));
  dt_cuda_op_done(be, false);
}

static void cuda_sgd_update_multi(dt_backend *bep, float *w, float *g, float *buf,
                                  const uint8_t *mask, size_t n, float lr, float momentum,
                                  float wd, bool nesterov, bool first, float grad_scale,
                                  const int32_t *skip) {
  dt_cuda_backend *be = dt_cuda_be(bep);
  be->weights_gen++;
  DT_CUDA_CHECK(dt_k_sgd_update_multi(w, g, buf, mask, n, lr, momentum, wd, nesterov, first,
                                      grad_scale, skip, be->stream));
  dt_cuda_op_done(be, false);
}

static void cuda_lars_update(dt_backend *bep, float *w, float *g, float *buf, size_t n,
                             double lr, float momentum, float wd, double eps, double eta,
                             double threshold, float grad_scale, const int32_t *skip) {
  dt_cuda_backend *be = dt_cuda_be(bep);
  be->weights_gen++;
  DT_CUDA_CHECK(dt_k_lars_update(w, g, buf, n, lr, momentum, wd, eps, eta, threshold,
                                 grad_scale, be->lars_scratch, skip, be->stream));
  dt_cuda_op_done(be, false);
}

/* The per-tensor norms and trust ratios go to a scratch buffer grown to the largest table
 * seen (the optimizer's, allocated at its first update). */
static void cuda_lars_update_multi(dt_backend *bep, float *w, float *g, float *buf,
                                   const dt_optim_segment *seg, int n_seg, size_t n, double lr,
                                   float momentum, double eps, double eta, double threshold,
                                   float grad_scale, const int32_t *skip) {
  dt_cuda_backend *be = dt_cuda_be(bep);
  DT_CHECK(n_seg >= 0);
  dt_cuda_buffer_reserve(be, &be->lars_multi_scratch, &be->lars_multi_bytes,
                         dt_k_lars_multi_scratch_bytes(n_seg));
  be->weights_gen++;
  DT_CUDA_CHECK(dt_k_lars_update_multi(w, g, buf, seg, n_seg, n, lr, momentum, eps, eta,
                                       threshold, grad_scale, be->lars_multi_scratch, skip,
                                       be->stream));
  dt_cuda_op_done(be, false);
}

static void cuda_adam_update(dt_backend *bep, float *w, float *g, float *m, float *v, float *vmax,
                             size_t n, float step, float beta1, float beta2, float eps,
                             float bc2_sqrt, float wd, float grad_scale, const int32_t *skip) {
  dt_cuda_backend *be = dt_cuda_be(bep);
  be->weights_gen++;
  DT_CUDA_CHECK(dt_k_adam_update(w, g, m, v, vmax, n, step, beta1, beta2, eps, bc2_sqrt, wd,
                                 grad_scale, skip, be->stream));
  dt_cuda_op_done(be, false);
}

static void cuda_adam_update_multi(dt_backend *bep, float *w, float *g, float *m, float *v,
                                   float *vmax, const uint8_t *mask, size_t n, float step,
                                   float beta1, float beta2, float eps, float bc2_sqrt, float wd,
                                   float grad_scale, const int32_t *skip) {
  dt_cuda_backend *be = dt_cuda_be(bep);
  be->weights_gen++;
  DT_CUDA_CHECK(dt_k_adam_update_multi(w, g, m, v, vmax, mask, n, step, beta1, beta2, eps,
                                       bc2_sqrt, wd, grad_scale, skip, be->stream));
  dt_cuda_op_done(be, false);
}

/* ---- precision ---- */

static dt_status cuda_set_precision(dt_backend *bep, dt_precision precision) {
  dt_cuda_backend *be = dt_cuda_be(bep);
  if (dt_live_ops_any(&be->live)) DT_FATAL("set_precision after ops were created");
  const char *name = dt_precision_name(precision);
  if (precision != DT_PRECISION_FP32) {
    int major = 0, minor = 0;
    DT_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, be->device));
    DT_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, be->device));
    /* fp16 tensor cores came with Volta (7.0), bfloat16 with Ampere (8.0). */
    if (major < (precision == DT_PRECISION_BF16 ? 8 : 7))
      return dt_error_set(DT_ERR_CONFIG,
                          "train.precision = %s needs a GPU with %s tensor cores (compute "
                          "capability %s or newer); GPU %d is sm_%d%d: use precision = %s",
                          name, name, precision == DT_PRECISION_BF16 ? "8.0" : "7.0", be->device,
                          major, minor, precision == DT_PRECISION_BF16 ? "fp16 or fp32" : "fp32");
  }
  be->precision = precision;
  be->act = dt_cuda_dtype_of(precision);
  if (be->verbose)
    fprintf(stderr, "dtrain cuda: %s convolutions%s\n",
            precision != DT_PRECISION_FP32 ? name : be->tf32 ? "TF32" : "strict fp32",
            precision != DT_PRECISION_FP32
                ? " (fp32 accumulation), 16-bit activations and activation gradients"
                : "");
  return DT_OK;
}

/* ---- ops ---- */

void dt_cuda_op_register(dt_cuda_backend *be, dt_op *op, void (*release)(dt_op *op)) {
  op->be = be;
  op->release = release;
  dt_live_ops_add(&be->live, &op->link);
}

void dt_cuda_op_free(dt_op *op) {
  if (!op) return;
  dt_cuda_backend *be = op->be;
  DT_CUDA_CHECK(cudaStreamSynchronize(be->stream)); /* no kernel may still use its buffers */
  be->base.generation++;                            /* nor a recording replay them */
  dt_live_ops_remove(&be->live, &op->link);
  op->release(op);
  free(op);
}

/* ---- the backend ---- */

static void cuda_destroy(dt_backend *bep) {
  if (!bep) return;
  dt_cuda_backend *be = dt_cuda_be(bep);
  DT_CUDA_CHECK(cudaStreamSynchronize(be->stream));
  while (dt_live_ops_any(&be->live)) dt_cuda_op_free((dt_op *)be->live.head);
  dt_cuda_algo_cache_free(be);
  for (struct dt_layout *l = be->layouts, *next; l; l = next) {
    next = l->next;
    free(l);
  }
  dt_cuda_free(be->workspace);
  dt_cuda_free(be->staging);
  dt_cuda_free(be->lars_scratch);
  dt_cuda_free(be->lars_multi_scratch);
  DT_CUDA_CHECK(cudaStreamSynchronize(be->copy_stream));
  for (int i = 0; i < 2; i++) {
    dt_cuda_free(be->prefetch[i].dev);
    DT_CUDA_CHECK(cudaEventDestroy(be->prefetch[i].copied));
    DT_CUDA_CHECK(cudaEventDestroy(be->prefetch[i].used));
  }
  DT_CUDA_CHECK(cudaStreamDestroy(be->copy_stream));
  DT_CUBLAS_CHECK(cublasDestroy(be->cublas));
  dt_cuda_free(be->cublas_workspace);
  DT_CUDNN_CHECK(cudnnDestroy(be->cudnn));
  DT_CUDA_CHECK(cudaStreamDestroy(be->stream));
  free(be);
}

static void *cuda_native_stream(dt_backend *bep) { return dt_cuda_be(bep)->stream; }

/* ---- CUDA graphs ---- */

static void cuda_capture_begin(dt_backend *bep) {
  dt_cuda_backend *be = dt_cuda_be(bep);
  DT_CUDA_CHECK(cudaStreamSynchronize(be->stream));
  /* Thread-local: only this thread's calls are checked, not the loader threads'. */
  DT_CUDA_CHECK(cudaStreamBeginCapture(be->stream, cudaStreamCaptureModeThreadLocal));
  be->capturing = true;
  be->capture_seq++;
  be->weights_gen++;
}

static void *cuda_capture_end(dt_backend *bep) {
  dt_cuda_backend *be = dt_cuda_be(bep);
  cudaGraph_t graph = NULL;
  cudaError_t e = cudaStreamEndCapture(be->stream, &graph);
  be->capturing = false;
  be->weights_gen++;
  cudaGraphExec_t exec = NULL;
  if (e == cudaSuccess) e = cudaGraphInstantiate(&exec, graph, 0);
  if (graph) DT_CUDA_CHECK(cudaGraphDestroy(graph));
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    fprintf(stderr, "dtrain cuda: warning: the training step could not be recorded as a CUDA "
                    "graph (%s); it runs op by op\n", cudaGetErrorString(e));
    return NULL;
  }
  return exec;
}

static void cuda_replay(dt_backend *bep, void *captured) {
  dt_cuda_backend *be = dt_cuda_be(bep);
  be->weights_gen++; /* the recording's weight copies overwrite what op by op calls made */
  DT_CUDA_CHECK(cudaGraphLaunch((cudaGraphExec_t)captured, be->stream));
  dt_cuda_op_done(be, false);
}

static void cuda_capture_free(dt_backend *bep, void *captured) {
  dt_cuda_backend *be = dt_cuda_be(bep);
  if (!captured) return;
  DT_CUDA_CHECK(cudaStreamSynchronize(be->stream));
  DT_CUDA_CHECK(cudaGraphExecDestroy((cudaGraphExec_t)captured));
}

static const dt_backend_ops cuda_ops = {
    .name = "cuda",
    .destroy = cuda_destroy,
    .layout_plain = cuda_layout_plain,
    .layout_bytes = cuda_layout_bytes,
    .alloc = cuda_alloc,
    .free = cuda_free_mem,
    .zero = cuda_zero,
    .to_device = cuda_to_device,
    .to_host = cuda_to_host,
    .upload = cuda_upload,
    .download = cuda_download,
    .conv_create = dt_cuda_conv_create,
    .conv_forward = dt_cuda_conv_forward,
    .conv_backward_data = dt_cuda_conv_backward_data,
    .conv_backward_weights = dt_cuda_conv_backward_weights,
    .bn_create = dt_cuda_bn_create,
    .bn_forward_train = dt_cuda_bn_forward_train,
    .bn_forward_infer = dt_cuda_bn_forward_infer,
    .bn_backward = dt_cuda_bn_backward,
    .eltwise_create = dt_cuda_eltwise_create,
    .relu_forward = dt_cuda_relu_forward,
    .relu_backward = dt_cuda_relu_backward,
    .add = dt_cuda_add,
    .accumulate = dt_cuda_accumulate,
    .gap_create = dt_cuda_gap_create,
    .gap_forward = dt_cuda_gap_forward,
    .gap_backward = dt_cuda_gap_backward,
    .linear_create = dt_cuda_linear_create,
    .linear_forward = dt_cuda_linear_forward,
    .linear_backward = dt_cuda_linear_backward,
    .xent = cuda_xent,
    .op_free = dt_cuda_op_free,
    .pool_create = dt_cuda_pool_create,
    .pool_forward = dt_cuda_pool_forward,
    .pool_backward = dt_cuda_pool_backward,
    .concat_create = dt_cuda_concat_create,
    .concat_forward = dt_cuda_concat_forward,
    .concat_backward = dt_cuda_concat_backward,
    .pad_channels_create = dt_cuda_pad_channels_create,
    .pad_channels_forward = dt_cuda_pad_channels_forward,
    .pad_channels_backward = dt_cuda_pad_channels_backward,
    .dropout_create = dt_cuda_dropout_create,
    .dropout_forward = dt_cuda_dropout_forward,
    .dropout_backward = dt_cuda_dropout_backward,
    .sigmoid_create = dt_cuda_sigmoid_create,
    .sigmoid_forward = dt_cuda_sigmoid_forward,
    .sigmoid_backward = dt_cuda_sigmoid_backward,
    .scale_create = dt_cuda_scale_create,
    .scale_forward = dt_cuda_scale_forward,
    .scale_backward = dt_cuda_scale_backward,
    .shake_create = dt_cuda_shake_create,
    .shake_forward = dt_cuda_shake_forward,
    .shake_backward = dt_cuda_shake_backward,
    .shift_create = dt_cuda_shift_create,
    .shift_forward = dt_cuda_shift_forward,
    .shift_backward = dt_cuda_shift_backward,
    .bias_create = dt_cuda_bias_create,
    .bias_forward = dt_cuda_bias_forward,
    .bias_backward = dt_cuda_bias_backward,
    .sgd_update = cuda_sgd_update,
    .sgd_update_multi = cuda_sgd_update_multi,
    .lars_update = cuda_lars_update,
    .lars_update_multi = cuda_lars_update_multi,
    .adam_update = cuda_adam_update,
    .adam_update_multi = cuda_adam_update_multi,
    .copy = dt_cuda_copy,
    .axpy = dt_cuda_axpy,
    .flag_nonfinite = dt_cuda_flag_nonfinite,
    .top1 = dt_cuda_top1,
    .sq_diff_rows = dt_cuda_sq_diff_rows,
    .set_precision = cuda_set_precision,
    .algos_export = dt_cuda_algos_export,
    .algos_import = dt_cuda_algos_import,
    .native_stream = cuda_native_stream,
    .host_alloc = cuda_host_alloc,
    .host_free = cuda_host_free,
    .prefetch = cuda_prefetch,
    .hold_host = dt_cuda_hold_host,
    .capture_begin = cuda_capture_begin,
    .capture_end = cuda_capture_end,
    .replay = cuda_replay,
    .capture_free = cuda_capture_free,
};

const dt_backend_ops *dt_backend_cuda_ops(void) { return &cuda_ops; }

static bool env_flag(const char *name) {
  const char *v = getenv(name);
  return v && *v && strcmp(v, "0") != 0;
}

dt_backend *dt_backend_cuda_create(int threads, int local_rank, int local_size) {
  /* cudaGetDeviceCount leaves the count unwritten when it fails (no driver: error 35). */
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count < 1) {
    (void)cudaGetLastError();
    if (e != cudaSuccess)
      dt_error_set(DT_ERR_CONFIG, "no CUDA device available: %s (%s); use --device cpu",
                   cudaGetErrorString(e), cudaGetErrorName(e));
    else
      dt_error_set(DT_ERR_CONFIG, "no CUDA device available: the driver reports 0 devices; use "
                   "--device cpu");
    return NULL;
  }
  /* The comm's shared-memory split is the one source of the local rank; a caller that passes
   * local_rank < 0 runs alone and takes GPU 0, whatever a launcher's variables say. */
  int device = 0;
  if (dt_gpu_place(local_rank, local_size, count, getenv("CUDA_VISIBLE_DEVICES"), &device) !=
      DT_OK)
    return NULL;
  e = cudaSetDevice(device);
  if (e == cudaSuccess) e = cudaFree(NULL); /* create the context now: report failures here */
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    dt_error_set(DT_ERR_CONFIG, "no CUDA device available: GPU %d of %d cannot be used: %s",
                 device, count, cudaGetErrorString(e));
    return NULL;
  }

  dt_cuda_backend *be = dt_xcalloc(1, sizeof *be);
  be->base.ops = &cuda_ops;
  be->base.threads = threads > 0 ? threads : 1;
  be->base.weights_krsc = true; /* the order cuDNN reads (cuda_conv.c) */
  be->device = device;
  be->tf32 = env_flag("DT_CUDA_TF32");
  be->sync_all = env_flag("DT_CUDA_SYNC");
  be->verbose = env_flag("DT_CUDA_VERBOSE");
  DT_CUDA_CHECK(cudaStreamCreate(&be->stream));
  cudnnStatus_t ds = cudnnCreate(&be->cudnn);
  if (ds != CUDNN_STATUS_SUCCESS) {
    dt_error_set(DT_ERR_CONFIG, "cuDNN cannot start on GPU %d: %s (%d)", device,
                 cudnnGetErrorString(ds), (int)ds);
    DT_CUDA_CHECK(cudaStreamDestroy(be->stream));
    free(be);
    return NULL;
  }
  cublasStatus_t bs = cublasCreate(&be->cublas);
  if (bs != CUBLAS_STATUS_SUCCESS) {
    dt_error_set(DT_ERR_CONFIG, "cuBLAS cannot start on GPU %d: %s (%d)", device,
                 cublasGetStatusString(bs), (int)bs);
    DT_CUDNN_CHECK(cudnnDestroy(be->cudnn));
    DT_CUDA_CHECK(cudaStreamDestroy(be->stream));
    free(be);
    return NULL;
  }
  DT_CUDNN_CHECK(cudnnSetStream(be->cudnn, be->stream));
  DT_CUBLAS_CHECK(cublasSetStream(be->cublas, be->stream));
  /* A workspace of cuBLAS's recommended size for Hopper, so that it never allocates one while
   * a CUDA graph is recorded. */
  const size_t cublas_ws = (size_t)32 << 20;
  be->cublas_workspace = dt_cuda_malloc(cublas_ws);
  DT_CUBLAS_CHECK(cublasSetWorkspace(be->cublas, be->cublas_workspace, cublas_ws));
  DT_CUBLAS_CHECK(
      cublasSetMathMode(be->cublas, be->tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_PEDANTIC_MATH));
  be->lars_scratch = dt_cuda_malloc(dt_k_lars_scratch_bytes());
  /* Non-blocking: the legacy default stream (cudaMemset of dt_cuda_malloc) never waits for it. */
  DT_CUDA_CHECK(cudaStreamCreateWithFlags(&be->copy_stream, cudaStreamNonBlocking));
  for (int i = 0; i < 2; i++) {
    DT_CUDA_CHECK(cudaEventCreateWithFlags(&be->prefetch[i].copied, cudaEventDisableTiming));
    DT_CUDA_CHECK(cudaEventCreateWithFlags(&be->prefetch[i].used, cudaEventDisableTiming));
  }
  if (be->verbose) {
    struct cudaDeviceProp prop;
    DT_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    fprintf(stderr,
            "dtrain cuda: GPU %d of %d: %s (sm_%d%d), cuDNN %zu, %s%s\n", device, count,
            prop.name, prop.major, prop.minor, cudnnGetVersion(),
            be->tf32 ? "TF32 allowed" : "strict fp32", be->sync_all ? ", every op waits" : "");
  }
  return &be->base;
}
