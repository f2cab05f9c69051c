/* ref_ops.h: plain double-precision reference of every compute op of src/backend.h.
 *
 * This is the oracle every backend (oneDNN CPU, CUDA) is checked against, and its backward
 * passes are themselves checked against its forward passes by finite differences
 * (tests/test_ref_grad.c). Everything is a few honest loops over plain layouts:
 * activations NCHW, convolution weights OIHW (K, C/G, R, S), linear weights (K, C), matrices
 * (N, K) row-major. Outputs are overwritten unless a comment says otherwise. */
#ifndef DT_REF_OPS_H
#define DT_REF_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Convolution without bias: x (N, C, H, W), w (K, C/G, R, S), y (N, K, P, Q) with
 * P = (H + 2 pad - R) / stride + 1 and Q = (W + 2 pad - S) / stride + 1. */
typedef struct {
  int n, c, h, w;
  int k, r, s;
  int stride, pad, groups;
} ref_conv;

int ref_conv_out_h(const ref_conv *p); /* P */
int ref_conv_out_w(const ref_conv *p); /* Q */
size_t ref_conv_x_count(const ref_conv *p); /* N C H W */
size_t ref_conv_w_count(const ref_conv *p); /* K (C/G) R S */
size_t ref_conv_y_count(const ref_conv *p); /* N K P Q */

/* y = conv(x, w). */
void ref_conv_forward(const ref_conv *p, const double *x, const double *w, double *y);
/* dx = conv_transpose(dy, w), the gradient of sum(y * dy) with respect to x. */
void ref_conv_backward_data(const ref_conv *p, const double *dy, const double *w, double *dx);
/* dw = correlation of x and dy, the gradient of sum(y * dy) with respect to w. */
void ref_conv_backward_weights(const ref_conv *p, const double *x, const double *dy, double *dw);

/* Batch normalisation over (N, H, W) per channel of x (N, C, H, W); hw = H * W.
 * relu: y = relu(bn(x)) (the fused variant of the backend). */

/* Training: normalise with the batch mean and biased variance, written to mean / var (C)
 * when not NULL. running_mean / running_var (C), when not NULL, are updated in place as
 * PyTorch does: r = (1 - momentum) r + momentum * stat, with the unbiased variance
 * var * m / (m - 1), m = N H W, for running_var. */
void ref_bn_forward_train(int n, int c, int hw, const double *x, const double *gamma,
                          const double *beta, double eps, bool relu, double *y, double *mean,
                          double *var, double *running_mean, double *running_var,
                          double momentum);
/* Inference: normalise with the running statistics. */
void ref_bn_forward_infer(int n, int c, int hw, const double *x, const double *gamma,
                          const double *beta, const double *running_mean,
                          const double *running_var, double eps, bool relu, double *y);
/* Backward of ref_bn_forward_train, given the batch mean / biased var it returned. With relu,
 * dy is first masked by y > 0, y being the forward output (ignored, may be NULL, otherwise).
 * Writes dx (N, C, H, W), dgamma and dbeta (C). */
void ref_bn_backward(int n, int c, int hw, const double *x, const double *dy, const double *gamma,
                     const double *mean, const double *var, double eps, bool relu,
                     const double *y, double *dx, double *dgamma, double *dbeta);

/* Elementwise over `count` values. */
void ref_relu_forward(size_t count, const double *x, double *y);
/* dx = dy where y > 0, else 0 (y is the forward output). */
void ref_relu_backward(size_t count, const double *y, const double *dy, double *dx);
void ref_add(size_t count, const double *a, const double *b, double *y); /* y = a + b */

/* Global average pooling: x (N, C, H, W) -> y (N, C); hw = H * W. */
void ref_gap_forward(int n, int c, int hw, const double *x, double *y);
void ref_gap_backward(int n, int c, int hw, const double *dy, double *dx);

/* Linear: y (N, K) = x (N, C) w^T + b, w (K, C), b (K). */
void ref_linear_forward(int n, int c, int k, const double *x, const double *w, const double *b,
                        double *y);
/* dx (N, C) when not NULL, dw (K, C), db (K): gradients of sum(y * dy). */
void ref_linear_backward(int n, int c, int k, const double *x, const double *dy, const double *w,
                         double *dx, double *dw, double *db);

/* Soft-target cross-entropy of logits z (N, K) against targets t (N, K), rows summing to 1:
 * loss (N) = -sum_k t_k log_softmax(z)_k, and, when dlogits is not NULL,
 * dlogits (N, K) = (softmax(z) - t) * grad_scale, the gradient of grad_scale * sum(loss). */
void ref_xent(int n, int k, const double *logits, const double *targets, double grad_scale,
              double *loss, double *dlogits);

/* ---- ops of the other families (docs/reference-experiments.md "Models") ---- */

/* Pooling x (N, C, H, W) -> y (N, C, P, Q), P = ref_pool_out(H, k, stride, pad) (floor).
 * max: the maximum of the in-range window elements (the first in row-major window order on
 * ties), and the backward routes dy there (x is the forward input). avg: the in-range sum
 * divided by k^2 when count_include_pad, else by the in-range count. */
int ref_pool_out(int h, int k, int stride, int pad);
void ref_pool_forward(int n, int c, int h, int w, bool max, int k, int stride, int pad,
                      bool count_include_pad, const double *x, double *y);
void ref_pool_backward(int n, int c, int h, int w, bool max, int k, int stride, int pad,
                       bool count_include_pad, const double *x, const double *dy, double *dx);

/* Channel concatenation y (N, Ca + Cb, hw) = [a (N, Ca, hw), b (N, Cb, hw)]; the backward
 * slices dy into da and db (either may be NULL). */
void ref_concat_forward(int n, int ca, int cb, int hw, const double *a, const double *b,
                        double *y);
void ref_concat_backward(int n, int ca, int cb, int hw, const double *dy, double *da, double *db);

/* Channel zero-padding y (N, c_out, hw) = [x (N, C, hw), 0]; dx = dy[:, :C]. */
void ref_pad_channels_forward(int n, int c, int c_out, int hw, const double *x, double *y);
void ref_pad_channels_backward(int n, int c, int c_out, int hw, const double *dy, double *dx);

/* Dropout of x (N, C, hw): element (i, ch, j) is kept, and scaled by 1 / (1 - p), when
 * dt_dropout_uniform(keys[i], ch hw + j) >= p (backend.h); the backward applies the same
 * mask to dy. */
void ref_dropout_forward(int n, int c, int hw, double p, const uint64_t *keys, const double *x,
                         double *y);
void ref_dropout_backward(int n, int c, int hw, double p, const uint64_t *keys, const double *dy,
                          double *dx);

/* Logistic sigmoid over `count` values; dx = dy y (1 - y), y the forward output. */
void ref_sigmoid_forward(size_t count, const double *x, double *y);
void ref_sigmoid_backward(size_t count, const double *y, const double *dy, double *dx);

/* Channel scaling y (N, C, hw) = x * s, s (N, C); dx = dy s and ds = sum_hw dy x (either
 * output may be NULL). */
void ref_scale_forward(int n, int c, int hw, const double *x, const double *s, double *y);
void ref_scale_backward(int n, int c, int hw, const double *x, const double *s, const double *dy,
                        double *dx, double *ds);

/* Shake-shake mixing of a, b (N, chw values per sample): y = alpha_i a + (1 - alpha_i) b;
 * da = beta_i dy, db = (1 - beta_i) dy (either may be NULL). */
void ref_shake_forward(int n, size_t chw, const double *a, const double *b, const double *alpha,
                       double *y);
void ref_shake_backward(int n, size_t chw, const double *dy, const double *beta, double *da,
                        double *db);

/* Spatial shift of x (N, C, H, W): y[.., i, j] = x[.., i + sy, j + sx], 0 out of range;
 * dx[.., i, j] = dy[.., i - sy, j - sx]. */
void ref_shift_forward(int n, int c, int h, int w, int sy, int sx, const double *x, double *y);
void ref_shift_backward(int n, int c, int h, int w, int sy, int sx, const double *dy, double *dx);

/* Per-channel bias y (N, C, hw) = x + b (C); db = sum over N, hw of dy. */
void ref_bias_forward(int n, int c, int hw, const double *x, const double *b, double *y);
void ref_bias_backward(int n, int c, int hw, const double *dy, double *db);

/* ---- a training step's bookkeeping (src/step.c) ----
 * These are the exact results the backends must reproduce bit for bit: the float arithmetic
 * of the contract, not a double approximation of it. */

/* y[i] += a * (x[i] - x2[i]) in float, each operation rounded (x2 NULL: a * x[i]). */
void ref_axpy(size_t n, float *y, const float *x, const float *x2, float a);
/* The top-1 count of z = z1 or 0.5f (z1 + z2) (N, K): with labels, the rows whose label ranks
 * first (ties to the lower class); else sum_i t[i, first argmax of z_i]; summed in row order. */
double ref_top1(int n, int k, const float *z1, const float *z2, const float *t,
                const int32_t *labels);
/* out[i] = sum_c ((double)a[i, c] - b[i, c])^2 in order. */
void ref_sq_diff_rows(int n, int k, const float *a, const float *b, double *out);

#endif
