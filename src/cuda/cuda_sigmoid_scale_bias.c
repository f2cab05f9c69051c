/* cuda_sigmoid_scale_bias.c: the CUDA backend's squeeze-and-excitation gate (sigmoid, channel
 * scaling) and per-channel bias (backend.h), by the kernels of kernels/sigmoid_scale_bias.cu. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_internal.h"

/* ---- sigmoid ---- */

dt_op *dt_cuda_sigmoid_create(dt_backend *bep, dt_shape s, const dt_layout *x) {
  return &dt_cuda_kernel_op_new(bep, s, x, "sigmoid_create")->base;
}

void dt_cuda_sigmoid_forward(dt_op *op, const dt_tensor *x, dt_tensor *y) {
  dt_cuda_kernel_op *e = (dt_cuda_kernel_op *)op;
  dt_cuda_check_tensor(x, e->x, "sigmoid_forward x");
  dt_cuda_check_tensor(y, e->x, "sigmoid_forward y");
  DT_CUDA_CHECK(dt_k_sigmoid_forward(x->data, y->data, dt_shape_count(e->xs), dt_cuda_dt(e->x),
                                     op->be->stream));
  dt_cuda_op_done(op->be, false);
}

void dt_cuda_sigmoid_backward(dt_op *op, const dt_tensor *y, const dt_tensor *dy, dt_tensor *dx) {
  dt_cuda_kernel_op *e = (dt_cuda_kernel_op *)op;
  dt_cuda_check_tensor(y, e->x, "sigmoid_backward y");
  dt_cuda_check_tensor(dy, e->x, "sigmoid_backward dy");
  dt_cuda_check_tensor(dx, e->x, "sigmoid_backward dx");
  DT_CUDA_CHECK(dt_k_sigmoid_backward(y->data, dy->data, dx->data, dt_shape_count(e->xs),
                                      dt_cuda_dt(e->x), op->be->stream));
  dt_cuda_op_done(op->be, false);
}

/* ---- channel scaling: s (N, C, 1, 1), stored as (N, C) in any layout and element type (an
 * fp32 linear output may gate a 16-bit x) ---- */

dt_op *dt_cuda_scale_create(dt_backend *bep, dt_shape xs, const dt_layout *x, const dt_layout *sl) {
  const dt_shape ss = {xs.n, xs.c, 1, 1};
  if (!dt_cuda_same_shape(sl->shape, ss))
    DT_FATAL("scale_create: scale layout is not (%d, %d, 1, 1)", xs.n, xs.c);
  dt_cuda_kernel_op *e = dt_cuda_kernel_op_new(bep, xs, x, "scale_create x");
  e->zs = ss;
  e->z = sl;
  return &e->base;
}

void dt_cuda_scale_forward(dt_op *op, const dt_tensor *x, const dt_tensor *sc, dt_tensor *y) {
  dt_cuda_kernel_op *e = (dt_cuda_kernel_op *)op;
  dt_cuda_check_tensor(x, e->x, "scale_forward x");
  dt_cuda_check_tensor(sc, e->z, "scale_forward s");
  dt_cuda_check_tensor(y, e->x, "scale_forward y");
  const dt_shape s = e->xs;
  DT_CUDA_CHECK(dt_k_scale_forward(x->data, sc->data, y->data, s.n, s.c, dt_cuda_hw_of(s),
                                   dt_cuda_is_nhwc(e->x), dt_cuda_dt(e->x), dt_cuda_dt(e->z),
                                   op->be->stream));
  dt_cuda_op_done(op->be, false);
}

void dt_cuda_scale_backward(dt_op *op, const dt_tensor *x, const dt_tensor *sc,
                            const dt_tensor *dy, dt_tensor *dx, dt_tensor *ds) {
  dt_cuda_kernel_op *e = (dt_cuda_kernel_op *)op;
  dt_cuda_check_tensor(x, e->x, "scale_backward x");
  dt_cuda_check_tensor(sc, e->z, "scale_backward s");
  dt_cuda_check_tensor(dy, e->x, "scale_backward dy");
  const dt_shape s = e->xs;
  const bool nhwc = dt_cuda_is_nhwc(e->x);
  if (ds) {
    dt_cuda_check_tensor(ds, e->z, "scale_backward ds");
    DT_CUDA_CHECK(dt_k_scale_ds(x->data, dy->data, ds->data, s.n, s.c, dt_cuda_hw_of(s), nhwc,
                                dt_cuda_dt(e->x), dt_cuda_dt(e->z), op->be->stream));
  }
  if (dx) {
    dt_cuda_check_tensor(dx, e->x, "scale_backward dx");
    DT_CUDA_CHECK(dt_k_scale_forward(dy->data, sc->data, dx->data, s.n, s.c, dt_cuda_hw_of(s), nhwc,
                                     dt_cuda_dt(e->x), dt_cuda_dt(e->z), op->be->stream));
  }
  dt_cuda_op_done(op->be, false);
}

/* ---- per-channel bias ---- */

dt_op *dt_cuda_bias_create(dt_backend *bep, dt_shape s, const dt_layout *x) {
  dt_cuda_kernel_op *e = dt_cuda_kernel_op_new(bep, s, x, "bias_create");
  e->partial = dt_cuda_malloc((size_t)s.n * s.c * sizeof(double));
  return &e->base;
}

void dt_cuda_bias_forward(dt_op *op, const dt_tensor *x, const float *b, dt_tensor *y) {
  dt_cuda_kernel_op *e = (dt_cuda_kernel_op *)op;
  dt_cuda_check_tensor(x, e->x, "bias_forward x");
  dt_cuda_check_tensor(y, e->x, "bias_forward y");
  const dt_shape s = e->xs;
  DT_CUDA_CHECK(dt_k_bias_forward(x->data, b, y->data, s.n, s.c, dt_cuda_hw_of(s),
                                  dt_cuda_is_nhwc(e->x), dt_cuda_dt(e->x), op->be->stream));
  dt_cuda_op_done(op->be, false);
}

void dt_cuda_bias_backward(dt_op *op, const dt_tensor *dy, float *db) {
  dt_cuda_kernel_op *e = (dt_cuda_kernel_op *)op;
  dt_cuda_check_tensor(dy, e->x, "bias_backward dy");
  const dt_shape s = e->xs;
  DT_CUDA_CHECK(dt_k_bias_backward(dy->data, e->partial, db, s.n, s.c, dt_cuda_hw_of(s),
                                   dt_cuda_is_nhwc(e->x), dt_cuda_dt(e->x), op->be->stream));
  dt_cuda_op_done(op->be, false);
}
