/* cuda_kernels.h: launchers of the kernels in kernels/ (the .cu files), callable from the C host
 * code of the CUDA backend (src/cuda/). Each launcher enqueues its kernel(s) on `stream` and
 * returns cudaGetLastError() after the launch, so every call site checks it with DT_CUDA_CHECK
 * (cuda_internal.h) and a bad launch is reported with the op that made it.
 *
 * Counts are element counts; shapes use the fixed letters (N, C, H, W), hw = H * W. `nhwc`
 * selects the storage order of an activation: true for (N, H, W, C), false for (N, C, H, W).
 * All pointers are device memory. */
#ifndef DT_CUDA_KERNELS_H
#define DT_CUDA_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- layouts (kernels/layout.cu) ---- */
/* (N, C, hw) -> (N, hw, C). Also OIHW -> OHWI weights with N = K, C = C/G, hw = R S. */
cudaError_t dt_k_nchw_to_nhwc(const float *src, float *dst, int n, int c, int hw,
                              cudaStream_t stream);
/* (N, hw, C) -> (N, C, hw). */
cudaError_t dt_k_nhwc_to_nchw(const float *src, float *dst, int n, int c, int hw,
                              cudaStream_t stream);

/* 16-bit operands (2 bytes per element, round to nearest even) for the bf16 / fp16
 * convolutions, bfloat16 or IEEE half (fp16; beyond 65504 becomes +-inf): src (N, C, hw)
 * fp32 in NCHW (src_nchw) or NHWC -> dst (N, hw, C), and back from (N, hw, C) into NCHW
 * (dst_nchw) or NHWC fp32, added to dst when accumulate. */
cudaError_t dt_k_to_half(const float *src, void *dst, int n, int c, int hw, bool src_nchw,
                         bool fp16, cudaStream_t stream);
cudaError_t dt_k_from_half(const void *src, float *dst, int n, int c, int hw, bool dst_nchw,
                           bool accumulate, bool fp16, cudaStream_t stream);

/* ---- elementwise (kernels/eltwise.cu) ---- */
cudaError_t dt_k_relu_forward(const float *x, float *y, size_t count, cudaStream_t stream);
/* dx = dy where y > 0, else 0. */
cudaError_t dt_k_relu_backward(const float *y, const float *dy, float *dx, size_t count,
                               cudaStream_t stream);
cudaError_t dt_k_add(const float *a, const float *b, float *y, size_t count, cudaStream_t stream);
/* dst += src */
cudaError_t dt_k_accumulate(const float *src, float *dst, size_t count, cudaStream_t stream);

/* ---- global average pooling and the linear layer's bias (kernels/eltwise.cu) ---- */
/* y (N, C) = mean of x over hw. */
cudaError_t dt_k_gap_forward(const float *x, float *y, int n, int c, int hw, bool nhwc,
                             cudaStream_t stream);
/* dx = dy (N, C) / hw at every position. */
cudaError_t dt_k_gap_backward(const float *dy, float *dx, int n, int c, int hw, bool nhwc,
                              cudaStream_t stream);
/* y (N, K) = b (K) on every row. */
cudaError_t dt_k_bias_rows(const float *b, float *y, int n, int k, cudaStream_t stream);
/* db (K) = sum over rows of dy (N, K). */
cudaError_t dt_k_sum_rows(const float *dy, float *db, int n, int k, cudaStream_t stream);

/* ---- soft-target cross-entropy (kernels/xent.cu) ---- */
/* z, t (N, K) row-major: loss (N) = -sum_k t log_softmax(z) when loss is not NULL, and
 * dz = (softmax(z) - t) * scale when dz is not NULL. */
cudaError_t dt_k_xent(const float *z, const float *t, int n, int k, float scale, float *dz,
                      float *loss, cudaStream_t stream);

/* ---- batch normalisation over (N, hw) per channel (kernels/bn.cu) ---- */
/* Rows of the per-channel partial sums that the reduction kernels write: the second
 * dimension of `partial` (2 x rows x C doubles). */
int dt_k_bn_partial_rows(int n, int hw);
/* Batch statistics: partial sums of x and x^2, then per channel the mean and biased variance
 * into save_mean / save_var (C, when not NULL), mean_f / invstd_f (C, the op's copies used by
 * the apply kernel) and, when not NULL, the PyTorch running-statistics update (unbiased
 * variance). */
cudaError_t dt_k_bn_stats(const float *x, double *partial, int n, int c, int hw, bool nhwc,
                          float eps, float momentum, float *save_mean, float *save_var,
                          float *running_mean, float *running_var, float *mean_f,
                          float *invstd_f, cudaStream_t stream);
/* y = gamma (x - mean) invstd + beta, then relu (recording mask = y > 0) when relu. */
cudaError_t dt_k_bn_apply(const float *x, float *y, uint8_t *mask, const float *mean,
                          const float *invstd, const float *gamma, const float *beta, int n,
                          int c, int hw, bool nhwc, bool relu, cudaStream_t stream);
/* Inference: y = gamma (x - rmean) / sqrt(rvar + eps) + beta, then relu when relu. */
cudaError_t dt_k_bn_infer(const float *x, float *y, const float *rmean, const float *rvar,
                          const float *gamma, const float *beta, float eps, int n, int c, int hw,
                          bool nhwc, bool relu, cudaStream_t stream);
/* Backward from the saved mean and biased variance: dy is masked by `mask` when not NULL,
 * dbeta = sum dy, dgamma = sum dy xhat (C each, overwritten), and
 * dx = gamma invstd (dy - dbeta / m - xhat dgamma / m), m = N hw. coef is the op's
 * scratch of 5 C floats. */
cudaError_t dt_k_bn_backward(const float *x, const float *dy, const uint8_t *mask,
                             const float *save_mean, const float *save_var, const float *gamma,
                             float eps, double *partial, float *coef, float *dx, float *dgamma,
                             float *dbeta, int n, int c, int hw, bool nhwc, cudaStream_t stream);

/* ---- kernel-only ops (kernels/pool.cu, concat_pad_shift.cu, dropout_shake.cu,
 * sigmoid_scale_bias.cu) ---- */
/* Pooling (N, C, H, W) -> (N, C, P, Q), windows k x k with stride and symmetric padding; max
 * pooling records the argmax (h W + w) of every output in ws (N C P Q ints). */
cudaError_t dt_k_pool_forward(const float *x, float *y, int *ws, int n, int c, int h, int w,
                              int P, int Q, int k, int stride, int pad, bool max, bool incl,
                              bool x_nhwc, bool y_nhwc, cudaStream_t stream);
cudaError_t dt_k_pool_backward(const float *dy, const int *ws, float *dx, int n, int c, int h,
                               int w, int P, int Q, int k, int stride, int pad, bool max,
                               bool incl, bool x_nhwc, bool y_nhwc, cudaStream_t stream);
/* dst channels [d0, d0 + nc) of (N, dc, hw) = src channels [s0, s0 + nc) of (N, sc, hw); zero
 * when src is NULL. */
cudaError_t dt_k_copy_channels(const float *src, int sc, int s0, bool s_nhwc, float *dst, int dc,
                               int d0, bool d_nhwc, int n, int nc, size_t hw,
                               cudaStream_t stream);
/* keys: N device uint64; mask: one byte per element (1 = kept); scale = 1 / (1 - p). */
cudaError_t dt_k_dropout_forward(const float *x, float *y, uint8_t *mask, const uint64_t *keys,
                                 float p, float scale, int n, int c, size_t hw, bool nhwc,
                                 cudaStream_t stream);
cudaError_t dt_k_dropout_backward(const float *dy, const uint8_t *mask, float *dx, float scale,
                                  size_t count, cudaStream_t stream);
cudaError_t dt_k_sigmoid_forward(const float *x, float *y, size_t count, cudaStream_t stream);
cudaError_t dt_k_sigmoid_backward(const float *y, const float *dy, float *dx, size_t count,
                                  cudaStream_t stream);
/* s, ds: (N, C). */
cudaError_t dt_k_scale_forward(const float *x, const float *s, float *y, int n, int c, size_t hw,
                               bool nhwc, cudaStream_t stream);
cudaError_t dt_k_scale_ds(const float *x, const float *dy, float *ds, int n, int c, size_t hw,
                          bool nhwc, cudaStream_t stream);
/* alpha, beta: N device floats; per = C H W; da or db may be NULL. */
cudaError_t dt_k_shake_forward(const float *a, const float *b, const float *alpha, float *y,
                               size_t per, size_t count, cudaStream_t stream);
cudaError_t dt_k_shake_backward(const float *dy, const float *beta, float *da, float *db,
                                size_t per, size_t count, cudaStream_t stream);
cudaError_t dt_k_shift(const float *x, float *y, int n, int c, int h, int w, int sy, int sx,
                       bool nhwc, cudaStream_t stream);
cudaError_t dt_k_bias_forward(const float *x, const float *b, float *y, int n, int c, size_t hw,
                              bool nhwc, cudaStream_t stream);
/* db (C) = sum of dy over N, H, W; partial: N C doubles of scratch. */
cudaError_t dt_k_bias_backward(const float *dy, double *partial, float *db, int n, int c,
                               size_t hw, bool nhwc, cudaStream_t stream);

/* ---- optimizer updates and the non-finite check (kernels/optim.cu) ---- */
/* The updates of backend.h on one tensor of n floats, g scaled in place first when
 * grad_scale != 1; LARS needs dt_k_lars_scratch_bytes() of device scratch. */
cudaError_t dt_k_sgd_update(float *w, float *g, float *buf, size_t n, float lr, float momentum,
                            float wd, bool nesterov, bool first, float grad_scale,
                            cudaStream_t stream);
/* dt_k_sgd_update on every tensor of an arena at once (backend.h sgd_update_multi). */
cudaError_t dt_k_sgd_update_multi(float *w, float *g, float *buf, const uint8_t *mask, size_t n,
                                  float lr, float momentum, float wd, bool nesterov, bool first,
                                  float grad_scale, cudaStream_t stream);
size_t dt_k_lars_scratch_bytes(void);
cudaError_t dt_k_lars_update(float *w, float *g, float *buf, size_t n, double lr, float momentum,
                             float wd, double eps, double eta, double threshold, float grad_scale,
                             void *scratch, cudaStream_t stream);
cudaError_t dt_k_adam_update(float *w, float *g, float *m, float *v, float *vmax, size_t n,
                             float step, float beta1, float beta2, float eps, float bc2_sqrt,
                             float wd, float grad_scale, cudaStream_t stream);
/* *flag = 1 when some of the n floats at x is NaN or infinite (the caller zeroes *flag). */
cudaError_t dt_k_nonfinite(const float *x, size_t n, int *flag, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
