/* cuda_kernel_op.c: the op of the CUDA backend's kernel-only ops (cuda_internal.h): pooling,
 * concatenation, channel padding, spatial shift, dropout, shake-shake mixing, sigmoid, channel
 * scaling and the per-channel bias run the kernels of kernels/ alone (no cuDNN) on one
 * dt_cuda_kernel_op; and the pinned buffer that carries a small per-call host array (dropout
 * keys, shake-shake coefficients) to the device without waiting for it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_internal.h"

void dt_cuda_host_arg_init(dt_cuda_host_arg *a, size_t bytes) {
  a->bytes = bytes;
  DT_CUDA_CHECK(cudaMallocHost(&a->host, bytes));
  a->dev = dt_cuda_malloc(bytes);
  DT_CUDA_CHECK(cudaEventCreateWithFlags(&a->done, cudaEventDisableTiming));
}

static void host_arg_free(dt_cuda_host_arg *a) {
  if (!a->host) return;
  DT_CUDA_CHECK(cudaEventDestroy(a->done));
  DT_CUDA_CHECK(cudaFreeHost(a->host));
  dt_cuda_free(a->dev);
}

void *dt_cuda_host_arg_put(dt_cuda_backend *be, dt_cuda_host_arg *a, const void *src) {
  if (a->pending) DT_CUDA_CHECK(cudaEventSynchronize(a->done)); /* normally long done */
  memcpy(a->host, src, a->bytes);
  DT_CUDA_CHECK(cudaMemcpyAsync(a->dev, a->host, a->bytes, cudaMemcpyHostToDevice, be->stream));
  DT_CUDA_CHECK(cudaEventRecord(a->done, be->stream));
  a->pending = true;
  return a->dev;
}

static void kernel_op_release(dt_op *op) {
  dt_cuda_kernel_op *e = (dt_cuda_kernel_op *)op;
  dt_cuda_free(e->ws);
  dt_cuda_free(e->mask);
  dt_cuda_free(e->partial);
  host_arg_free(&e->arg);
}

dt_cuda_kernel_op *dt_cuda_kernel_op_new(dt_backend *bep, dt_shape s, const dt_layout *x,
                                         const char *what) {
  if (!dt_cuda_same_shape(x->shape, s))
    DT_FATAL("%s: input layout does not match (%d, %d, %d, %d)", what, s.n, s.c, s.h, s.w);
  dt_cuda_kernel_op *e = dt_xcalloc(1, sizeof *e);
  dt_cuda_op_register(dt_cuda_be(bep), &e->base, kernel_op_release);
  e->xs = e->ys = s;
  e->x = e->y = x;
  return e;
}
