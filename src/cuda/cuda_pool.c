/* cuda_pool.c: the CUDA backend's max and average pooling (backend.h), by the kernels of
 * kernels/pool.cu. The output keeps the input's storage order and element type. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_internal.h"

/* ---- pooling ---- */

dt_op *dt_cuda_pool_create(dt_backend *bep, dt_shape s, const dt_layout *x, dt_pool_kind kind,
                           int ksize, int stride, int pad, bool count_include_pad,
                           const dt_layout **y) {
  dt_cuda_backend *be = dt_cuda_be(bep);
  if (ksize < 1 || stride < 1 || pad < 0 || 2 * pad > ksize || s.h + 2 * pad < ksize ||
      s.w + 2 * pad < ksize)
    DT_FATAL("pool_create: bad window %d / stride %d / pad %d on %d x %d", ksize, stride, pad, s.h,
             s.w);
  dt_cuda_kernel_op *e = dt_cuda_kernel_op_new(bep, s, x, "pool_create");
  e->k = ksize;
  e->stride = stride;
  e->pad = pad;
  e->is_max = kind == DT_POOL_MAX;
  e->incl = count_include_pad;
  e->ys = (dt_shape){s.n, s.c, (s.h + 2 * pad - ksize) / stride + 1,
                     (s.w + 2 * pad - ksize) / stride + 1};
  e->y = dt_cuda_layout(be, e->ys, x->format, x->dtype);
  if (e->is_max) e->ws = dt_cuda_malloc(dt_shape_count(e->ys) * sizeof(int));
  *y = e->y;
  return &e->base;
}

void dt_cuda_pool_forward(dt_op *op, const dt_tensor *x, dt_tensor *y) {
  dt_cuda_kernel_op *e = (dt_cuda_kernel_op *)op;
  dt_cuda_check_tensor(x, e->x, "pool_forward x");
  dt_cuda_check_tensor(y, e->y, "pool_forward y");
  const dt_shape s = e->xs;
  DT_CUDA_CHECK(dt_k_pool_forward(x->data, y->data, e->ws, s.n, s.c, s.h, s.w, e->ys.h, e->ys.w,
                                  e->k, e->stride, e->pad, e->is_max, e->incl,
                                  dt_cuda_is_nhwc(e->x), dt_cuda_is_nhwc(e->y), dt_cuda_dt(e->x),
                                  op->be->stream));
  dt_cuda_op_done(op->be, false);
}

void dt_cuda_pool_backward(dt_op *op, const dt_tensor *dy, dt_tensor *dx) {
  dt_cuda_kernel_op *e = (dt_cuda_kernel_op *)op;
  dt_cuda_check_tensor(dy, e->y, "pool_backward dy");
  dt_cuda_check_tensor(dx, e->x, "pool_backward dx");
  const dt_shape s = e->xs;
  DT_CUDA_CHECK(dt_k_pool_backward(dy->data, e->ws, dx->data, s.n, s.c, s.h, s.w, e->ys.h,
                                   e->ys.w, e->k, e->stride, e->pad, e->is_max, e->incl,
                                   dt_cuda_is_nhwc(e->x), dt_cuda_is_nhwc(e->y), dt_cuda_dt(e->x),
                                   op->be->stream));
  dt_cuda_op_done(op->be, false);
}
