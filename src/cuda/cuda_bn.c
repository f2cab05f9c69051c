/* cuda_bn.c: batch normalisation over (N, H, W) per channel, by the kernels of kernels/bn.cu,
 * in the layout of its input (y, dy and dx share it; NHWC or NCHW, fp32 or 16-bit elements with
 * fp32 statistics and double sums).
 *
 * Kernels rather than cudnnBatchNormalization*: they give exactly the statistics the contract
 * asks for (the biased batch variance in save_var, where cuDNN saves an inverse standard
 * deviation; PyTorch's running update with the unbiased variance), reduce in double, accept
 * either layout, and keep the fused ReLU's mask (one byte per element, y > 0) from the
 * training forward to the backward in the op. */
#include <stdio.h>
#include <stdlib.h>

#include "cuda/cuda_internal.h"

typedef struct {
  dt_op base;
  dt_shape s;
  const dt_layout *x; /* x, y, dy and dx */
  float eps;
  bool relu, nhwc;
  uint8_t *mask;      /* (N C H W) ReLU mask of the last training forward (fuse_relu only) */
  double *partial;    /* per-channel partial sums of the reductions */
  float *mean, *invstd; /* (C) statistics of the last training forward, for its apply */
  float *coef;        /* (5 C) backward coefficients */
} cuda_bn;

static void bn_release(dt_op *op) {
  cuda_bn *b = (cuda_bn *)op;
  dt_cuda_free(b->mask);
  dt_cuda_free(b->partial);
  dt_cuda_free(b->mean);
  dt_cuda_free(b->invstd);
  dt_cuda_free(b->coef);
}

dt_op *dt_cuda_bn_create(dt_backend *bep, dt_shape s, const dt_layout *x, float eps,
                         bool fuse_relu) {
  dt_cuda_backend *be = dt_cuda_be(bep);
  if (x->shape.n != s.n || x->shape.c != s.c || x->shape.h != s.h || x->shape.w != s.w)
    DT_FATAL("bn_create: input layout does not match (%d, %d, %d, %d)", s.n, s.c, s.h, s.w);
  if (!(eps > 0)) DT_FATAL("bn_create: epsilon %g must be positive", (double)eps);
  cuda_bn *b = dt_xcalloc(1, sizeof *b);
  dt_cuda_op_register(be, &b->base, bn_release);
  b->s = s;
  b->x = x;
  b->eps = eps;
  b->relu = fuse_relu;
  b->nhwc = dt_cuda_is_nhwc(x);
  if (fuse_relu) b->mask = dt_cuda_malloc(dt_shape_count(s));
  const size_t rows = (size_t)dt_k_bn_partial_rows(s.n, s.h * s.w);
  b->partial = dt_cuda_malloc(2 * rows * (size_t)s.c * sizeof(double));
  b->mean = dt_cuda_malloc((size_t)s.c * sizeof(float));
  b->invstd = dt_cuda_malloc((size_t)s.c * sizeof(float));
  b->coef = dt_cuda_malloc(5 * (size_t)s.c * sizeof(float));
  return &b->base;
}

void dt_cuda_bn_forward_train(dt_op *op, const dt_tensor *x, const float *gamma,
                              const float *beta, dt_tensor *y, float *save_mean, float *save_var,
                              float *running_mean, float *running_var, float momentum) {
  cuda_bn *b = (cuda_bn *)op;
  dt_cuda_backend *be = op->be;
  dt_cuda_check_tensor(x, b->x, "bn_forward_train x");
  dt_cuda_check_tensor(y, b->x, "bn_forward_train y");
  const dt_shape s = b->s;
  DT_CUDA_CHECK(dt_k_bn_stats(x->data, b->partial, s.n, s.c, s.h * s.w, b->nhwc, b->eps, momentum,
                              save_mean, save_var, running_mean, running_var, b->mean, b->invstd,
                              dt_cuda_dt(b->x), be->stream));
  DT_CUDA_CHECK(dt_k_bn_apply(x->data, y->data, b->mask, b->mean, b->invstd, gamma, beta, s.n,
                              s.c, s.h * s.w, b->nhwc, b->relu, dt_cuda_dt(b->x), be->stream));
  dt_cuda_op_done(be, false);
}

void dt_cuda_bn_forward_infer(dt_op *op, const dt_tensor *x, const float *gamma,
                              const float *beta, const float *running_mean,
                              const float *running_var, dt_tensor *y) {
  cuda_bn *b = (cuda_bn *)op;
  dt_cuda_backend *be = op->be;
  dt_cuda_check_tensor(x, b->x, "bn_forward_infer x");
  dt_cuda_check_tensor(y, b->x, "bn_forward_infer y");
  const dt_shape s = b->s;
  DT_CUDA_CHECK(dt_k_bn_infer(x->data, y->data, running_mean, running_var, gamma, beta, b->eps,
                              s.n, s.c, s.h * s.w, b->nhwc, b->relu, dt_cuda_dt(b->x),
                              be->stream));
  dt_cuda_op_done(be, false);
}

void dt_cuda_bn_backward(dt_op *op, const dt_tensor *x, const dt_tensor *dy, const float *gamma,
                         const float *save_mean, const float *save_var, dt_tensor *dx,
                         float *dgamma, float *dbeta) {
  cuda_bn *b = (cuda_bn *)op;
  dt_cuda_backend *be = op->be;
  dt_cuda_check_tensor(x, b->x, "bn_backward x");
  dt_cuda_check_tensor(dy, b->x, "bn_backward dy");
  dt_cuda_check_tensor(dx, b->x, "bn_backward dx");
  const dt_shape s = b->s;
  DT_CUDA_CHECK(dt_k_bn_backward(x->data, dy->data, b->mask, save_mean, save_var, gamma, b->eps,
                                 b->partial, b->coef, dx->data, dgamma, dbeta, s.n, s.c,
                                 s.h * s.w, b->nhwc, dt_cuda_dt(b->x), be->stream));
  dt_cuda_op_done(be, false);
}
