/* cuda_dropout_shake.c: the CUDA backend's random ops (backend.h): dropout and shake-shake
 * mixing, by the kernels of kernels/dropout_shake.cu. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_internal.h"

/* ---- dropout ---- */

dt_op *dt_cuda_dropout_create(dt_backend *bep, dt_shape s, const dt_layout *x, float p) {
  if (!(p >= 0.0f && p < 1.0f)) DT_FATAL("dropout_create: probability %g not in [0, 1)", p);
  dt_cuda_kernel_op *e = dt_cuda_kernel_op_new(bep, s, x, "dropout_create");
  e->p = p; /* the mask and the keys' buffers come with the first forward with keys */
  return &e->base;
}

void dt_cuda_dropout_forward(dt_op *op, const dt_tensor *x, const uint64_t *keys, dt_tensor *y) {
  dt_cuda_kernel_op *e = (dt_cuda_kernel_op *)op;
  dt_cuda_backend *be = op->be;
  dt_cuda_check_tensor(x, e->x, "dropout_forward x");
  dt_cuda_check_tensor(y, e->x, "dropout_forward y");
  const dt_shape s = e->xs;
  if (!keys) {
    if (y->data != x->data)
      DT_CUDA_CHECK(cudaMemcpyAsync(y->data, x->data, dt_cuda_tensor_bytes(s, dt_cuda_dt(e->x)),
                                    cudaMemcpyDeviceToDevice, be->stream));
    dt_cuda_op_done(be, false);
    return;
  }
  if (!e->mask) {
    e->mask = dt_cuda_malloc(dt_shape_count(s));
    dt_cuda_host_arg_init(&e->arg, (size_t)s.n * sizeof(uint64_t));
  }
  const uint64_t *dkeys = dt_cuda_host_arg_put(be, &e->arg, keys);
  DT_CUDA_CHECK(dt_k_dropout_forward(x->data, y->data, e->mask, dkeys, e->p, 1.0f / (1.0f - e->p),
                                     s.n, s.c, dt_cuda_hw_of(s), dt_cuda_is_nhwc(e->x),
                                     dt_cuda_dt(e->x), be->stream));
  e->have_mask = true;
  dt_cuda_op_done(be, false);
}

void dt_cuda_dropout_backward(dt_op *op, const dt_tensor *dy, dt_tensor *dx) {
  dt_cuda_kernel_op *e = (dt_cuda_kernel_op *)op;
  dt_cuda_check_tensor(dy, e->x, "dropout_backward dy");
  dt_cuda_check_tensor(dx, e->x, "dropout_backward dx");
  if (!e->have_mask) DT_FATAL("dropout_backward: no training forward ran before");
  DT_CUDA_CHECK(dt_k_dropout_backward(dy->data, e->mask, dx->data, 1.0f / (1.0f - e->p),
                                      dt_shape_count(e->xs), dt_cuda_dt(e->x), op->be->stream));
  dt_cuda_op_done(op->be, false);
}

/* ---- shake-shake mixing ---- */

dt_op *dt_cuda_shake_create(dt_backend *bep, dt_shape s, const dt_layout *x) {
  dt_cuda_kernel_op *e = dt_cuda_kernel_op_new(bep, s, x, "shake_create");
  dt_cuda_host_arg_init(&e->arg, (size_t)s.n * sizeof(float));
  return &e->base;
}

void dt_cuda_shake_forward(dt_op *op, const dt_tensor *a, const dt_tensor *b, const float *alpha,
                           dt_tensor *y) {
  dt_cuda_kernel_op *e = (dt_cuda_kernel_op *)op;
  dt_cuda_check_tensor(a, e->x, "shake_forward a");
  dt_cuda_check_tensor(b, e->x, "shake_forward b");
  dt_cuda_check_tensor(y, e->x, "shake_forward y");
  const size_t count = dt_shape_count(e->xs);
  const float *da = dt_cuda_host_arg_put(op->be, &e->arg, alpha);
  DT_CUDA_CHECK(dt_k_shake_forward(a->data, b->data, da, y->data, count / (size_t)e->xs.n, count,
                                   dt_cuda_dt(e->x), op->be->stream));
  dt_cuda_op_done(op->be, false);
}

void dt_cuda_shake_backward(dt_op *op, const dt_tensor *dy, const float *beta, dt_tensor *da,
                            dt_tensor *db) {
  dt_cuda_kernel_op *e = (dt_cuda_kernel_op *)op;
  dt_cuda_check_tensor(dy, e->x, "shake_backward dy");
  if (da) dt_cuda_check_tensor(da, e->x, "shake_backward da");
  if (db) dt_cuda_check_tensor(db, e->x, "shake_backward db");
  if (!da && !db) return;
  const size_t count = dt_shape_count(e->xs);
  const float *dbeta = dt_cuda_host_arg_put(op->be, &e->arg, beta);
  DT_CUDA_CHECK(dt_k_shake_backward(dy->data, dbeta, da ? da->data : NULL, db ? db->data : NULL,
                                    count / (size_t)e->xs.n, count, dt_cuda_dt(e->x),
                                    op->be->stream));
  dt_cuda_op_done(op->be, false);
}
