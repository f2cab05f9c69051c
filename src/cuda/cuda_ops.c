/* cuda_ops.c: the smaller ops of the CUDA backend: ReLU, add and accumulate (elementwise
 * kernels, any layout), global average pooling (a kernel; its (N, C, 1, 1) output is plain)
 * and the linear layer (cuBLAS sgemm on row-major (N, C) and (K, C) matrices, bias and its
 * gradient by kernels). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_internal.h"

static void check_shape(const dt_layout *l, dt_shape s, const char *what) {
  if (l->shape.n != s.n || l->shape.c != s.c || l->shape.h != s.h || l->shape.w != s.w)
    DT_FATAL("%s: input layout does not match (%d, %d, %d, %d)", what, s.n, s.c, s.h, s.w);
}

/* ---- elementwise ---- */

typedef struct {
  dt_op base;
  const dt_layout *x;
  size_t count;
} cuda_eltwise;

static void eltwise_release(dt_op *op) { (void)op; }

dt_op *dt_cuda_eltwise_create(dt_backend *bep, dt_shape shape, const dt_layout *x) {
  dt_cuda_backend *be = dt_cuda_be(bep);
  check_shape(x, shape, "eltwise_create");
  cuda_eltwise *e = dt_xcalloc(1, sizeof *e);
  dt_cuda_op_register(be, &e->base, eltwise_release);
  e->x = x;
  e->count = dt_shape_count(shape);
  return &e->base;
}

void dt_cuda_relu_forward(dt_op *op, const dt_tensor *x, dt_tensor *y) {
  cuda_eltwise *e = (cuda_eltwise *)op;
  dt_cuda_check_tensor(x, e->x, "relu_forward x");
  dt_cuda_check_tensor(y, e->x, "relu_forward y");
  DT_CUDA_CHECK(dt_k_relu_forward(x->data, y->data, e->count, op->be->stream));
  dt_cuda_op_done(op->be, false);
}

void dt_cuda_relu_backward(dt_op *op, const dt_tensor *y, const dt_tensor *dy, dt_tensor *dx) {
  cuda_eltwise *e = (cuda_eltwise *)op;
  dt_cuda_check_tensor(y, e->x, "relu_backward y");
  dt_cuda_check_tensor(dy, e->x, "relu_backward dy");
  dt_cuda_check_tensor(dx, e->x, "relu_backward dx");
  DT_CUDA_CHECK(dt_k_relu_backward(y->data, dy->data, dx->data, e->count, op->be->stream));
  dt_cuda_op_done(op->be, false);
}

void dt_cuda_add(dt_op *op, const dt_tensor *a, const dt_tensor *b, dt_tensor *y) {
  cuda_eltwise *e = (cuda_eltwise *)op;
  dt_cuda_check_tensor(a, e->x, "add a");
  dt_cuda_check_tensor(b, e->x, "add b");
  dt_cuda_check_tensor(y, e->x, "add y");
  DT_CUDA_CHECK(dt_k_add(a->data, b->data, y->data, e->count, op->be->stream));
  dt_cuda_op_done(op->be, false);
}

void dt_cuda_accumulate(dt_op *op, const dt_tensor *src, dt_tensor *dst) {
  cuda_eltwise *e = (cuda_eltwise *)op;
  dt_cuda_check_tensor(src, e->x, "accumulate src");
  dt_cuda_check_tensor(dst, e->x, "accumulate dst");
  DT_CUDA_CHECK(dt_k_accumulate(src->data, dst->data, e->count, op->be->stream));
  dt_cuda_op_done(op->be, false);
}

/* ---- global average pooling: (N, C, H, W) -> (N, C, 1, 1) ---- */

typedef struct {
  dt_op base;
  dt_shape s;
  const dt_layout *x, *y;
} cuda_gap;

static void gap_release(dt_op *op) { (void)op; }

dt_op *dt_cuda_gap_create(dt_backend *bep, dt_shape s, const dt_layout *x, const dt_layout **y) {
  dt_cuda_backend *be = dt_cuda_be(bep);
  check_shape(x, s, "gap_create");
  cuda_gap *g = dt_xcalloc(1, sizeof *g);
  dt_cuda_op_register(be, &g->base, gap_release);
  g->s = s;
  g->x = x;
  g->y = dt_cuda_layout(be, (dt_shape){s.n, s.c, 1, 1}, DT_CUDA_NCHW);
  *y = g->y;
  return &g->base;
}

void dt_cuda_gap_forward(dt_op *op, const dt_tensor *x, dt_tensor *y) {
  cuda_gap *g = (cuda_gap *)op;
  dt_cuda_check_tensor(x, g->x, "gap_forward x");
  dt_cuda_check_tensor(y, g->y, "gap_forward y");
  DT_CUDA_CHECK(dt_k_gap_forward(x->data, y->data, g->s.n, g->s.c, g->s.h * g->s.w,
                                 dt_cuda_is_nhwc(g->x), op->be->stream));
  dt_cuda_op_done(op->be, false);
}

void dt_cuda_gap_backward(dt_op *op, const dt_tensor *dy, dt_tensor *dx) {
  cuda_gap *g = (cuda_gap *)op;
  dt_cuda_check_tensor(dy, g->y, "gap_backward dy");
  dt_cuda_check_tensor(dx, g->x, "gap_backward dx");
  DT_CUDA_CHECK(dt_k_gap_backward(dy->data, dx->data, g->s.n, g->s.c, g->s.h * g->s.w,
                                  dt_cuda_is_nhwc(g->x), op->be->stream));
  dt_cuda_op_done(op->be, false);
}

/* ---- linear: y (N, K) = x (N, C H W) w^T + b, w (K, C H W) ---- */

typedef struct {
  dt_op base;
  dt_shape s;
  int k, cols; /* cols = C H W, the flattened input */
  const dt_layout *x, *y;
  float *x_nchw; /* (N, C, H, W) copy of an NHWC input: the flattening PyTorch uses */
} cuda_linear;

static void linear_release(dt_op *op) { dt_cuda_free(((cuda_linear *)op)->x_nchw); }

dt_op *dt_cuda_linear_create(dt_backend *bep, dt_shape s, const dt_layout *x, int k,
                             const dt_layout **y) {
  dt_cuda_backend *be = dt_cuda_be(bep);
  check_shape(x, s, "linear_create");
  if (k < 1) DT_FATAL("linear_create: %d outputs", k);
  cuda_linear *l = dt_xcalloc(1, sizeof *l);
  dt_cuda_op_register(be, &l->base, linear_release);
  l->s = s;
  l->k = k;
  l->cols = s.c * s.h * s.w;
  l->x = x;
  if (dt_cuda_is_nhwc(x)) l->x_nchw = dt_cuda_malloc(dt_shape_count(s) * sizeof(float));
  l->y = dt_cuda_layout(be, (dt_shape){s.n, k, 1, 1}, DT_CUDA_NCHW);
  *y = l->y;
  return &l->base;
}

/* The input as a row-major (N, C H W) matrix. */
static const float *linear_rows(cuda_linear *l, const dt_tensor *x) {
  if (!l->x_nchw) return x->data;
  DT_CUDA_CHECK(dt_k_nhwc_to_nchw(x->data, l->x_nchw, l->s.n, l->s.c, l->s.h * l->s.w,
                                  l->base.be->stream));
  return l->x_nchw;
}

/* cuBLAS is column-major: a row-major (R, C) matrix is a column-major (C, R) one, so
 * row-major Y = X W^T is the column-major Y^T (K, N) = W^T (K, C) applied to X^T (C, N). */
void dt_cuda_linear_forward(dt_op *op, const dt_tensor *x, const float *w, const float *b,
                            dt_tensor *y) {
  cuda_linear *l = (cuda_linear *)op;
  dt_cuda_backend *be = op->be;
  dt_cuda_check_tensor(x, l->x, "linear_forward x");
  dt_cuda_check_tensor(y, l->y, "linear_forward y");
  const float *xr = linear_rows(l, x);
  const float one = 1.0f;
  DT_CUDA_CHECK(dt_k_bias_rows(b, y->data, l->s.n, l->k, be->stream));
  DT_CUBLAS_CHECK(cublasSgemm(be->cublas, CUBLAS_OP_T, CUBLAS_OP_N, l->k, l->s.n, l->cols, &one,
                              w, l->cols, xr, l->cols, &one, y->data, l->k));
  dt_cuda_op_done(be, false);
}

void dt_cuda_linear_backward(dt_op *op, const dt_tensor *x, const dt_tensor *dy, const float *w,
                             dt_tensor *dx, float *dw, float *db) {
  cuda_linear *l = (cuda_linear *)op;
  dt_cuda_backend *be = op->be;
  dt_cuda_check_tensor(x, l->x, "linear_backward x");
  dt_cuda_check_tensor(dy, l->y, "linear_backward dy");
  const float one = 1.0f, zero = 0.0f;
  const int n = l->s.n, k = l->k, cols = l->cols;
  /* dw (K, C) = dy^T x: column-major dw^T (C, K) = x^T (C, N) dy (N, K). */
  const float *xr = linear_rows(l, x);
  DT_CUBLAS_CHECK(cublasSgemm(be->cublas, CUBLAS_OP_N, CUBLAS_OP_T, cols, k, n, &one, xr, cols,
                              dy->data, k, &zero, dw, cols));
  DT_CUDA_CHECK(dt_k_sum_rows(dy->data, db, n, k, be->stream));
  if (dx) {
    dt_cuda_check_tensor(dx, l->x, "linear_backward dx");
    /* dx (N, C) = dy w: column-major dx^T (C, N) = w^T (C, K) dy^T (K, N). */
    float *dxr = l->x_nchw ? l->x_nchw : dx->data;
    DT_CUBLAS_CHECK(cublasSgemm(be->cublas, CUBLAS_OP_N, CUBLAS_OP_N, cols, n, k, &one, w, cols,
                                dy->data, k, &zero, dxr, cols));
    if (l->x_nchw)
      DT_CUDA_CHECK(dt_k_nchw_to_nhwc(l->x_nchw, dx->data, n, l->s.c, l->s.h * l->s.w,
                                      be->stream));
  }
  dt_cuda_op_done(be, false);
}
