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

#endif
