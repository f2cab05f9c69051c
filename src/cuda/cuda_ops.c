/* cuda_ops.c: the smaller ops of the CUDA backend: ReLU, add and accumulate (elementwise
 * kernels, any layout and element type), global average pooling (a kernel; its (N, C, 1, 1)
 * output is stored NCHW in the input's element type) and the linear layer (cuBLAS on row-major
 * (N, C) and (K, C) matrices, bias and its gradient by kernels).
 *
 * The linear layer's output, the logits, is fp32 plain (N, K) at every precision. With a
 * 16-bit input it multiplies in cuBLAS's 16-bit configuration (cublasGemmEx: 16-bit operands,
 * fp32 accumulation): a 16-bit copy of the weights made once per step (cuda_dtype.h
 * dt_cuda_wcopy), dy converted to 16 bits by backward (an N x K matrix), dw written in fp32,
 * dx in the input's element type. */
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
  DT_CUDA_CHECK(dt_k_relu_forward(x->data, y->data, e->count, dt_cuda_dt(e->x), op->be->stream));
  dt_cuda_op_done(op->be, false);
}

void dt_cuda_relu_backward(dt_op *op, const dt_tensor *y, const dt_tensor *dy, dt_tensor *dx) {
  cuda_eltwise *e = (cuda_eltwise *)op;
  dt_cuda_check_tensor(y, e->x, "relu_backward y");
  dt_cuda_check_tensor(dy, e->x, "relu_backward dy");
  dt_cuda_check_tensor(dx, e->x, "relu_backward dx");
  DT_CUDA_CHECK(dt_k_relu_backward(y->data, dy->data, dx->data, e->count, dt_cuda_dt(e->x),
                                   op->be->stream));
  dt_cuda_op_done(op->be, false);
}

void dt_cuda_add(dt_op *op, const dt_tensor *a, const dt_tensor *b, dt_tensor *y) {
  cuda_eltwise *e = (cuda_eltwise *)op;
  dt_cuda_check_tensor(a, e->x, "add a");
  dt_cuda_check_tensor(b, e->x, "add b");
  dt_cuda_check_tensor(y, e->x, "add y");
  DT_CUDA_CHECK(dt_k_add(a->data, b->data, y->data, e->count, dt_cuda_dt(e->x), op->be->stream));
  dt_cuda_op_done(op->be, false);
}

void dt_cuda_accumulate(dt_op *op, const dt_tensor *src, dt_tensor *dst) {
  cuda_eltwise *e = (cuda_eltwise *)op;
  dt_cuda_check_tensor(src, e->x, "accumulate src");
  dt_cuda_check_tensor(dst, e->x, "accumulate dst");
  DT_CUDA_CHECK(dt_k_accumulate(src->data, dst->data, e->count, dt_cuda_dt(e->x), op->be->stream));
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
  g->y = dt_cuda_layout(be, (dt_shape){s.n, s.c, 1, 1}, DT_CUDA_NCHW, x->dtype);
  *y = g->y;
  return &g->base;
}

void dt_cuda_gap_forward(dt_op *op, const dt_tensor *x, dt_tensor *y) {
  cuda_gap *g = (cuda_gap *)op;
  dt_cuda_check_tensor(x, g->x, "gap_forward x");
  dt_cuda_check_tensor(y, g->y, "gap_forward y");
  DT_CUDA_CHECK(dt_k_gap_forward(x->data, y->data, g->s.n, g->s.c, g->s.h * g->s.w,
                                 dt_cuda_is_nhwc(g->x), dt_cuda_dt(g->x), op->be->stream));
  dt_cuda_op_done(op->be, false);
}

void dt_cuda_gap_backward(dt_op *op, const dt_tensor *dy, dt_tensor *dx) {
  cuda_gap *g = (cuda_gap *)op;
  dt_cuda_check_tensor(dy, g->y, "gap_backward dy");
  dt_cuda_check_tensor(dx, g->x, "gap_backward dx");
  DT_CUDA_CHECK(dt_k_gap_backward(dy->data, dx->data, g->s.n, g->s.c, g->s.h * g->s.w,
                                  dt_cuda_is_nhwc(g->x), dt_cuda_dt(g->x), op->be->stream));
  dt_cuda_op_done(op->be, false);
}

/* ---- linear: y (N, K) = x (N, C H W) w^T + b, w (K, C H W) ---- */

typedef struct {
  dt_op base;
  dt_shape s;
  int k, cols; /* cols = C H W, the flattened input */
  const dt_layout *x, *y;
  dt_cuda_dtype xt; /* the input's element type: fp32, or 16 bits (cublasGemmEx) */
  void *x_nchw;     /* (N, C, H, W) copy of an NHWC input in its element type: the flattening
                     * PyTorch uses */
  void *w16;        /* 16-bit input: (K, C H W) copy of the weights, */
  dt_cuda_wcopy w16_made; /* when it was made, */
  void *dy16;       /* and (N, K) dy converted by backward */
} cuda_linear;

static void linear_release(dt_op *op) {
  cuda_linear *l = (cuda_linear *)op;
  dt_cuda_free(l->x_nchw);
  dt_cuda_free(l->w16);
  dt_cuda_free(l->dy16);
}

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
  l->xt = dt_cuda_dt(x);
  if (dt_cuda_is_nhwc(x)) l->x_nchw = dt_cuda_malloc(dt_cuda_tensor_bytes(s, l->xt));
  if (l->xt != DT_CUDA_F32) {
    l->w16 = dt_cuda_malloc((size_t)k * l->cols * dt_cuda_dtype_bytes(l->xt));
    l->dy16 = dt_cuda_malloc((size_t)s.n * k * dt_cuda_dtype_bytes(l->xt));
  }
  l->y = dt_cuda_layout(be, (dt_shape){s.n, k, 1, 1}, DT_CUDA_NCHW, DT_CUDA_F32);
  *y = l->y;
  return &l->base;
}

/* The input as a row-major (N, C H W) matrix, in its element type. */
static const void *linear_rows(cuda_linear *l, const dt_tensor *x) {
  if (!l->x_nchw) return x->data;
  if (l->xt == DT_CUDA_F32)
    DT_CUDA_CHECK(dt_k_nhwc_to_nchw(x->data, l->x_nchw, l->s.n, l->s.c, l->s.h * l->s.w,
                                    l->base.be->stream));
  else
    DT_CUDA_CHECK(dt_k_convert(x->data, l->xt, false, l->x_nchw, l->xt, true, l->s.n, l->s.c,
                               l->s.h * l->s.w, false, l->base.be->stream));
  return l->x_nchw;
}

/* The 16-bit weights, converted when they may have changed (cuda_dtype.h dt_cuda_wcopy). */
static const void *linear_w16(cuda_linear *l, const float *w, bool forward) {
  dt_cuda_backend *be = l->base.be;
  if (dt_cuda_wcopy_needed(be, &l->w16_made, w, forward))
    DT_CUDA_CHECK(dt_k_convert(w, DT_CUDA_F32, false, l->w16, l->xt, false, l->k, l->cols, 1,
                               false, be->stream));
  return l->w16;
}

static cudaDataType_t linear_cuda_type(dt_cuda_dtype t) {
  return t == DT_CUDA_BF16 ? CUDA_R_16BF : t == DT_CUDA_F16 ? CUDA_R_16F : CUDA_R_32F;
}

/* cuBLAS is column-major: a row-major (R, C) matrix is a column-major (C, R) one, so
 * row-major Y = X W^T is the column-major Y^T (K, N) = W^T (K, C) applied to X^T (C, N). */
void dt_cuda_linear_forward(dt_op *op, const dt_tensor *x, const float *w, const float *b,
                            dt_tensor *y) {
  cuda_linear *l = (cuda_linear *)op;
  dt_cuda_backend *be = op->be;
  dt_cuda_check_tensor(x, l->x, "linear_forward x");
  dt_cuda_check_tensor(y, l->y, "linear_forward y");
  const void *xr = linear_rows(l, x);
  const float one = 1.0f;
  DT_CUDA_CHECK(dt_k_bias_rows(b, y->data, l->s.n, l->k, be->stream));
  if (l->xt == DT_CUDA_F32) {
    DT_CUBLAS_CHECK(cublasSgemm(be->cublas, CUBLAS_OP_T, CUBLAS_OP_N, l->k, l->s.n, l->cols,
                                &one, w, l->cols, xr, l->cols, &one, y->data, l->k));
  } else {
    const cudaDataType_t t = linear_cuda_type(l->xt);
    DT_CUBLAS_CHECK(cublasGemmEx(be->cublas, CUBLAS_OP_T, CUBLAS_OP_N, l->k, l->s.n, l->cols,
                                 &one, linear_w16(l, w, true), t, l->cols, xr, t, l->cols, &one,
                                 y->data, CUDA_R_32F, l->k, CUBLAS_COMPUTE_32F,
                                 CUBLAS_GEMM_DEFAULT));
  }
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
  const bool half = l->xt != DT_CUDA_F32;
  const cudaDataType_t t = linear_cuda_type(l->xt);
  /* 16 bits: dy (N, K) in the input's element type, as cublasGemmEx takes one operand type. */
  const void *dyk = dy->data;
  if (half) {
    DT_CUDA_CHECK(dt_k_convert(dy->data, DT_CUDA_F32, false, l->dy16, l->xt, false, n, k, 1,
                               false, be->stream));
    dyk = l->dy16;
  }
  /* dw (K, C) = dy^T x: column-major dw^T (C, K) = x^T (C, N) dy (N, K). */
  const void *xr = linear_rows(l, x);
  if (!half)
    DT_CUBLAS_CHECK(cublasSgemm(be->cublas, CUBLAS_OP_N, CUBLAS_OP_T, cols, k, n, &one, xr, cols,
                                dyk, k, &zero, dw, cols));
  else
    DT_CUBLAS_CHECK(cublasGemmEx(be->cublas, CUBLAS_OP_N, CUBLAS_OP_T, cols, k, n, &one, xr, t,
                                 cols, dyk, t, k, &zero, dw, CUDA_R_32F, cols, CUBLAS_COMPUTE_32F,
                                 CUBLAS_GEMM_DEFAULT));
  DT_CUDA_CHECK(dt_k_sum_rows(dy->data, db, n, k, be->stream));
  if (dx) {
    dt_cuda_check_tensor(dx, l->x, "linear_backward dx");
    /* dx (N, C) = dy w: column-major dx^T (C, N) = w^T (C, K) dy^T (K, N). */
    void *dxr = l->x_nchw ? l->x_nchw : dx->data;
    if (!half)
      DT_CUBLAS_CHECK(cublasSgemm(be->cublas, CUBLAS_OP_N, CUBLAS_OP_N, cols, n, k, &one, w, cols,
                                  dyk, k, &zero, dxr, cols));
    else
      DT_CUBLAS_CHECK(cublasGemmEx(be->cublas, CUBLAS_OP_N, CUBLAS_OP_N, cols, n, k, &one,
                                   linear_w16(l, w, false), t, cols, dyk, t, k, &zero, dxr, t,
                                   cols, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    if (l->x_nchw) {
      if (!half)
        DT_CUDA_CHECK(dt_k_nchw_to_nhwc(l->x_nchw, dx->data, n, l->s.c, l->s.h * l->s.w,
                                        be->stream));
      else
        DT_CUDA_CHECK(dt_k_convert(l->x_nchw, l->xt, true, dx->data, l->xt, false, n, l->s.c,
                                   l->s.h * l->s.w, false, be->stream));
    }
  }
  dt_cuda_op_done(be, false);
}
