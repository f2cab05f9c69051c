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

#include "cuda/cuda_dtype.h"
#include "optim_segment.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- element types ----
 * Activation kernels take `dt`, the element type of their tensors (cuda_dtype.h: fp32,
 * bfloat16 or half; one type for every activation operand unless a launcher names several):
 * each element is loaded to float, computed in float (reductions in double, as before) and
 * stored rounded to nearest even. Parameters, statistics and scalars stay fp32. A launcher
 * given another dt returns cudaErrorInvalidValue. */

/* ---- layouts (kernels/layout.cu) ---- */
/* (N, C, hw) -> (N, hw, C), fp32. */
cudaError_t dt_k_nchw_to_nhwc(const float *src, float *dst, int n, int c, int hw,
                              cudaStream_t stream);
/* (N, hw, C) -> (N, C, hw), fp32. */
cudaError_t dt_k_nhwc_to_nchw(const float *src, float *dst, int n, int c, int hw,
                              cudaStream_t stream);
/* dst = src, or dst += src when accumulate: an (N, C, hw) tensor stored NCHW (src_nchw /
 * dst_nchw) or NHWC, from element type st to dt (fp32 -> 16 bits rounds to nearest even; in
 * fp16 beyond 65504 becomes +-inf). Uploads, downloads, the staged input of a convolution
 * (the fp32 image batch), and the 16-bit copies of KRSC weights and their gradients (both
 * sides NHWC with N = K, C = C/G, hw = R S: a conversion, no transposition). */
cudaError_t dt_k_convert(const void *src, dt_cuda_dtype st, bool src_nchw, void *dst,
                         dt_cuda_dtype dt, bool dst_nchw, int n, int c, int hw, bool accumulate,
                         cudaStream_t stream);

/* ---- elementwise (kernels/eltwise.cu) ---- */
cudaError_t dt_k_relu_forward(const void *x, void *y, size_t count, dt_cuda_dtype dt,
                              cudaStream_t stream);
/* dx = dy where y > 0, else 0. */
cudaError_t dt_k_relu_backward(const void *y, const void *dy, void *dx, size_t count,
                               dt_cuda_dtype dt, cudaStream_t stream);
cudaError_t dt_k_add(const void *a, const void *b, void *y, size_t count, dt_cuda_dtype dt,
                     cudaStream_t stream);
/* dst += src */
cudaError_t dt_k_accumulate(const void *src, void *dst, size_t count, dt_cuda_dtype dt,
                            cudaStream_t stream);

/* ---- global average pooling and the linear layer's bias (kernels/eltwise.cu) ---- */
/* y (N, C) = mean of x over hw (x and y of element type dt). */
cudaError_t dt_k_gap_forward(const void *x, void *y, int n, int c, int hw, bool nhwc,
                             dt_cuda_dtype dt, cudaStream_t stream);
/* dx = dy (N, C) / hw at every position. */
cudaError_t dt_k_gap_backward(const void *dy, void *dx, int n, int c, int hw, bool nhwc,
                              dt_cuda_dtype dt, cudaStream_t stream);
/* y (N, K) = b (K) on every row (fp32). */
cudaError_t dt_k_bias_rows(const float *b, float *y, int n, int k, cudaStream_t stream);
/* db (K) = sum over rows of dy (N, K) (fp32). */
cudaError_t dt_k_sum_rows(const float *dy, float *db, int n, int k, cudaStream_t stream);

/* ---- soft-target cross-entropy (kernels/xent.cu), fp32 logits ---- */
/* z, t (N, K) row-major: loss (N) = -sum_k t log_softmax(z) when loss is not NULL, and
 * dz = (softmax(z) - t) * scale when dz is not NULL. */
cudaError_t dt_k_xent(const float *z, const float *t, int n, int k, float scale, float *dz,
                      float *loss, cudaStream_t stream);

/* ---- batch normalisation over (N, hw) per channel (kernels/bn.cu) ----
 * x, y, dy and dx of element type dt; statistics, gamma, beta and coefficients fp32. */
/* Rows of the per-channel partial sums that the reduction kernels write: the second
 * dimension of `partial` (2 x rows x C doubles). */
int dt_k_bn_partial_rows(int n, int hw);
/* Batch statistics: partial sums of x and x^2, then per channel the mean and biased variance
 * into save_mean / save_var (C, when not NULL), mean_f / invstd_f (C, the op's copies used by
 * the apply kernel) and, when not NULL, the PyTorch running-statistics update (unbiased
 * variance). */
cudaError_t dt_k_bn_stats(const void *x, double *partial, int n, int c, int hw, bool nhwc,
                          float eps, float momentum, float *save_mean, float *save_var,
                          float *running_mean, float *running_var, float *mean_f,
                          float *invstd_f, dt_cuda_dtype dt, cudaStream_t stream);
/* y = gamma (x - mean) invstd + beta, then relu (recording mask = y > 0) when relu. */
cudaError_t dt_k_bn_apply(const void *x, void *y, uint8_t *mask, const float *mean,
                          const float *invstd, const float *gamma, const float *beta, int n,
                          int c, int hw, bool nhwc, bool relu, dt_cuda_dtype dt,
                          cudaStream_t stream);
/* Inference: y = gamma (x - rmean) / sqrt(rvar + eps) + beta, then relu when relu. */
cudaError_t dt_k_bn_infer(const void *x, void *y, const float *rmean, const float *rvar,
                          const float *gamma, const float *beta, float eps, int n, int c, int hw,
                          bool nhwc, bool relu, dt_cuda_dtype dt, cudaStream_t stream);
/* Backward from the saved mean and biased variance: dy is masked by `mask` when not NULL,
 * dbeta = sum dy, dgamma = sum dy xhat (C each, overwritten), and
 * dx = gamma invstd (dy - dbeta / m - xhat dgamma / m), m = N hw. coef is the op's
 * scratch of 5 C floats. */
cudaError_t dt_k_bn_backward(const void *x, const void *dy, const uint8_t *mask,
                             const float *save_mean, const float *save_var, const float *gamma,
                             float eps, double *partial, float *coef, void *dx, float *dgamma,
                             float *dbeta, int n, int c, int hw, bool nhwc, dt_cuda_dtype dt,
                             cudaStream_t stream);

/* ---- kernel-only ops (kernels/pool.cu, concat_pad_shift.cu, dropout_shake.cu,
 * sigmoid_scale_bias.cu) ---- */
/* Pooling (N, C, H, W) -> (N, C, P, Q), windows k x k with stride and symmetric padding; max
 * pooling records the argmax (h W + w) of every output in ws (N C P Q ints). */
cudaError_t dt_k_pool_forward(const void *x, void *y, int *ws, int n, int c, int h, int w,
                              int P, int Q, int k, int stride, int pad, bool max, bool incl,
                              bool x_nhwc, bool y_nhwc, dt_cuda_dtype dt, cudaStream_t stream);
cudaError_t dt_k_pool_backward(const void *dy, const int *ws, void *dx, int n, int c, int h,
                               int w, int P, int Q, int k, int stride, int pad, bool max,
                               bool incl, bool x_nhwc, bool y_nhwc, dt_cuda_dtype dt,
                               cudaStream_t stream);
/* dst channels [d0, d0 + nc) of (N, dc, hw) (element type dt) = src channels [s0, s0 + nc) of
 * (N, sc, hw) (element type st); zero when src is NULL. */
cudaError_t dt_k_copy_channels(const void *src, dt_cuda_dtype st, int sc, int s0, bool s_nhwc,
                               void *dst, dt_cuda_dtype dt, int dc, int d0, bool d_nhwc, int n,
                               int nc, size_t hw, cudaStream_t stream);
/* keys: N device uint64; mask: one byte per element (1 = kept); scale = 1 / (1 - p). */
cudaError_t dt_k_dropout_forward(const void *x, void *y, uint8_t *mask, const uint64_t *keys,
                                 float p, float scale, int n, int c, size_t hw, bool nhwc,
                                 dt_cuda_dtype dt, cudaStream_t stream);
cudaError_t dt_k_dropout_backward(const void *dy, const uint8_t *mask, void *dx, float scale,
                                  size_t count, dt_cuda_dtype dt, cudaStream_t stream);
cudaError_t dt_k_sigmoid_forward(const void *x, void *y, size_t count, dt_cuda_dtype dt,
                                 cudaStream_t stream);
cudaError_t dt_k_sigmoid_backward(const void *y, const void *dy, void *dx, size_t count,
                                  dt_cuda_dtype dt, cudaStream_t stream);
/* s, ds: (N, C) of element type st; x, y, dy of element type dt. */
cudaError_t dt_k_scale_forward(const void *x, const void *s, void *y, int n, int c, size_t hw,
                               bool nhwc, dt_cuda_dtype dt, dt_cuda_dtype st,
                               cudaStream_t stream);
cudaError_t dt_k_scale_ds(const void *x, const void *dy, void *ds, int n, int c, size_t hw,
                          bool nhwc, dt_cuda_dtype dt, dt_cuda_dtype st, cudaStream_t stream);
/* alpha, beta: N device floats; per = C H W; da or db may be NULL. */
cudaError_t dt_k_shake_forward(const void *a, const void *b, const float *alpha, void *y,
                               size_t per, size_t count, dt_cuda_dtype dt, cudaStream_t stream);
cudaError_t dt_k_shake_backward(const void *dy, const float *beta, void *da, void *db,
                                size_t per, size_t count, dt_cuda_dtype dt, cudaStream_t stream);
cudaError_t dt_k_shift(const void *x, void *y, int n, int c, int h, int w, int sy, int sx,
                       bool nhwc, dt_cuda_dtype dt, cudaStream_t stream);
/* b: C fp32. */
cudaError_t dt_k_bias_forward(const void *x, const float *b, void *y, int n, int c, size_t hw,
                              bool nhwc, dt_cuda_dtype dt, cudaStream_t stream);
/* db (C, fp32) = sum of dy over N, H, W; partial: N C doubles of scratch. */
cudaError_t dt_k_bias_backward(const void *dy, double *partial, float *db, int n, int c,
                               size_t hw, bool nhwc, dt_cuda_dtype dt, cudaStream_t stream);

/* ---- optimizer updates and the non-finite check (kernels/optim.cu) ---- */
/* The updates of backend.h on one tensor of n floats, g scaled in place first when
 * grad_scale != 1, nothing done when the device flag *skip is set (skip NULL: never); LARS
 * needs dt_k_lars_scratch_bytes() of device scratch. */
cudaError_t dt_k_sgd_update(float *w, float *g, float *buf, size_t n, float lr, float momentum,
                            float wd, bool nesterov, bool first, float grad_scale,
                            const int32_t *skip, cudaStream_t stream);
/* dt_k_sgd_update on every tensor of an arena at once (backend.h sgd_update_multi). */
cudaError_t dt_k_sgd_update_multi(float *w, float *g, float *buf, const uint8_t *mask, size_t n,
                                  float lr, float momentum, float wd, bool nesterov, bool first,
                                  float grad_scale, const int32_t *skip, cudaStream_t stream);
size_t dt_k_lars_scratch_bytes(void);
cudaError_t dt_k_lars_update(float *w, float *g, float *buf, size_t n, double lr, float momentum,
                             float wd, double eps, double eta, double threshold, float grad_scale,
                             void *scratch, const int32_t *skip, cudaStream_t stream);
/* dt_k_lars_update on the n_seg tensors of seg (device memory) at once (backend.h
 * lars_update_multi): three launches; scratch: dt_k_lars_multi_scratch_bytes(n_seg). */
size_t dt_k_lars_multi_scratch_bytes(int n_seg);
cudaError_t dt_k_lars_update_multi(float *w, float *g, float *buf, const dt_optim_segment *seg,
                                   int n_seg, size_t n, double lr, float momentum, double eps,
                                   double eta, double threshold, float grad_scale, void *scratch,
                                   const int32_t *skip, cudaStream_t stream);
cudaError_t dt_k_adam_update(float *w, float *g, float *m, float *v, float *vmax, size_t n,
                             float step, float beta1, float beta2, float eps, float bc2_sqrt,
                             float wd, float grad_scale, const int32_t *skip,
                             cudaStream_t stream);
/* dt_k_adam_update on every tensor of an arena at once (backend.h adam_update_multi). */
cudaError_t dt_k_adam_update_multi(float *w, float *g, float *m, float *v, float *vmax,
                                   const uint8_t *mask, size_t n, float step, float beta1,
                                   float beta2, float eps, float bc2_sqrt, float wd,
                                   float grad_scale, const int32_t *skip, cudaStream_t stream);
/* *flag = 1 when some of the n floats at x is NaN or infinite (the caller zeroes *flag). */
cudaError_t dt_k_nonfinite(const float *x, size_t n, int *flag, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
