/* ref_ops.c: plain double-precision reference of every compute op (see ref_ops.h).
 * Written for obviousness, not speed: one loop nest per formula, all in plain layouts. */
#include "ref_ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

int ref_conv_out_h(const ref_conv *p) { return (p->h + 2 * p->pad - p->r) / p->stride + 1; }
int ref_conv_out_w(const ref_conv *p) { return (p->w + 2 * p->pad - p->s) / p->stride + 1; }

size_t ref_conv_x_count(const ref_conv *p) { return (size_t)p->n * p->c * p->h * p->w; }
size_t ref_conv_w_count(const ref_conv *p) {
  return (size_t)p->k * (p->c / p->groups) * p->r * p->s;
}
size_t ref_conv_y_count(const ref_conv *p) {
  return (size_t)p->n * p->k * ref_conv_out_h(p) * ref_conv_out_w(p);
}

/* Visits every (output, input, weight) triple of the convolution that lies inside the
 * unpadded input: y[n][k][oh][ow] += x[n][g*Cg + ci][ih][iw] * w[k][ci][kr][ks] with
 * ih = oh*stride - pad + kr, iw = ow*stride - pad + ks. The three ops differ only in which
 * of the three arrays they accumulate into, so they share this one index walk. */
typedef enum { REF_CONV_FWD, REF_CONV_BWD_DATA, REF_CONV_BWD_WEIGHTS } ref_conv_mode;

static void ref_conv_walk(const ref_conv *p, ref_conv_mode mode, double *x, double *w,
                          double *y) {
  const int P = ref_conv_out_h(p), Q = ref_conv_out_w(p);
  const int cg = p->c / p->groups; /* input channels per group */
  const int kg = p->k / p->groups; /* output channels per group */
  for (int n = 0; n < p->n; n++)
    for (int k = 0; k < p->k; k++) {
      const int g = k / kg;
      for (int oh = 0; oh < P; oh++)
        for (int ow = 0; ow < Q; ow++) {
          double *yv = &y[(((size_t)n * p->k + k) * P + oh) * Q + ow]; // (N, K, P, Q)
          for (int ci = 0; ci < cg; ci++)
            for (int kr = 0; kr < p->r; kr++) {
              const int ih = oh * p->stride - p->pad + kr;
              if (ih < 0 || ih >= p->h) continue;
              for (int ks = 0; ks < p->s; ks++) {
                const int iw = ow * p->stride - p->pad + ks;
                if (iw < 0 || iw >= p->w) continue;
                // (N, C, H, W) and (K, C/G, R, S)
                double *xv = &x[(((size_t)n * p->c + g * cg + ci) * p->h + ih) * p->w + iw];
                double *wv = &w[(((size_t)k * cg + ci) * p->r + kr) * p->s + ks];
                switch (mode) {
                  case REF_CONV_FWD: *yv += *xv * *wv; break;
                  case REF_CONV_BWD_DATA: *xv += *yv * *wv; break;
                  case REF_CONV_BWD_WEIGHTS: *wv += *xv * *yv; break;
                }
              }
            }
        }
    }
}

void ref_conv_forward(const ref_conv *p, const double *x, const double *w, double *y) {
  memset(y, 0, ref_conv_y_count(p) * sizeof *y);
  ref_conv_walk(p, REF_CONV_FWD, (double *)x, (double *)w, y);
}

void ref_conv_backward_data(const ref_conv *p, const double *dy, const double *w, double *dx) {
  memset(dx, 0, ref_conv_x_count(p) * sizeof *dx);
  ref_conv_walk(p, REF_CONV_BWD_DATA, dx, (double *)w, (double *)dy);
}

void ref_conv_backward_weights(const ref_conv *p, const double *x, const double *dy, double *dw) {
  memset(dw, 0, ref_conv_w_count(p) * sizeof *dw);
  ref_conv_walk(p, REF_CONV_BWD_WEIGHTS, (double *)x, dw, (double *)dy);
}

/* Per-channel mean and biased variance of x (N, C, H, W) over (N, H, W). */
static void ref_bn_stats(int n, int c, int hw, const double *x, double *mean, double *var) {
  const double m = (double)n * hw;
  for (int ch = 0; ch < c; ch++) {
    double s = 0;
    for (int i = 0; i < n; i++)
      for (int j = 0; j < hw; j++) s += x[((size_t)i * c + ch) * hw + j];
    const double mu = s / m;
    double v = 0;
    for (int i = 0; i < n; i++)
      for (int j = 0; j < hw; j++) {
        const double d = x[((size_t)i * c + ch) * hw + j] - mu;
        v += d * d;
      }
    mean[ch] = mu;
    var[ch] = v / m;
  }
}

/* y = gamma (x - mean) / sqrt(var + eps) + beta, then relu when asked. */
static void ref_bn_apply(int n, int c, int hw, const double *x, const double *gamma,
                         const double *beta, const double *mean, const double *var, double eps,
                         bool relu, double *y) {
  for (int i = 0; i < n; i++)
    for (int ch = 0; ch < c; ch++) {
      const double inv_std = 1.0 / sqrt(var[ch] + eps);
      for (int j = 0; j < hw; j++) {
        const size_t at = ((size_t)i * c + ch) * hw + j; // (N, C, H, W)
        double v = gamma[ch] * (x[at] - mean[ch]) * inv_std + beta[ch];
        y[at] = (relu && v < 0) ? 0 : v;
      }
    }
}

void ref_bn_forward_train(int n, int c, int hw, const double *x, const double *gamma,
                          const double *beta, double eps, bool relu, double *y, double *mean,
                          double *var, double *running_mean, double *running_var,
                          double momentum) {
  double *mu = dt_xcalloc((size_t)c, sizeof *mu), *v = dt_xcalloc((size_t)c, sizeof *v);
  ref_bn_stats(n, c, hw, x, mu, v);
  ref_bn_apply(n, c, hw, x, gamma, beta, mu, v, eps, relu, y);
  const double m = (double)n * hw;
  for (int ch = 0; ch < c; ch++) {
    if (mean) mean[ch] = mu[ch];
    if (var) var[ch] = v[ch];
    if (running_mean) running_mean[ch] = (1 - momentum) * running_mean[ch] + momentum * mu[ch];
    if (running_var) {
      /* PyTorch's unbiased estimate; a single value per channel has none, so keep the
       * biased one rather than divide by zero. */
      const double unbiased = m > 1 ? v[ch] * m / (m - 1) : v[ch];
      running_var[ch] = (1 - momentum) * running_var[ch] + momentum * unbiased;
    }
  }
  free(mu);
  free(v);
}

void ref_bn_forward_infer(int n, int c, int hw, const double *x, const double *gamma,
                          const double *beta, const double *running_mean,
                          const double *running_var, double eps, bool relu, double *y) {
  ref_bn_apply(n, c, hw, x, gamma, beta, running_mean, running_var, eps, relu, y);
}

/* With xhat = (x - mean) / sqrt(var + eps) and dyr the (masked) output gradient:
 *   dbeta  = sum dyr,  dgamma = sum dyr xhat     (sums over N, H, W)
 *   dx     = gamma / sqrt(var + eps) (dyr - dbeta / m - xhat dgamma / m). */
void ref_bn_backward(int n, int c, int hw, const double *x, const double *dy, const double *gamma,
                     const double *mean, const double *var, double eps, bool relu,
                     const double *y, double *dx, double *dgamma, double *dbeta) {
  const double m = (double)n * hw;
  for (int ch = 0; ch < c; ch++) {
    const double inv_std = 1.0 / sqrt(var[ch] + eps);
    double sum_dy = 0, sum_dy_xhat = 0;
    for (int i = 0; i < n; i++)
      for (int j = 0; j < hw; j++) {
        const size_t at = ((size_t)i * c + ch) * hw + j;
        const double d = (relu && !(y[at] > 0)) ? 0 : dy[at];
        sum_dy += d;
        sum_dy_xhat += d * (x[at] - mean[ch]) * inv_std;
      }
    dbeta[ch] = sum_dy;
    dgamma[ch] = sum_dy_xhat;
    for (int i = 0; i < n; i++)
      for (int j = 0; j < hw; j++) {
        const size_t at = ((size_t)i * c + ch) * hw + j;
        const double d = (relu && !(y[at] > 0)) ? 0 : dy[at];
        const double xhat = (x[at] - mean[ch]) * inv_std;
        dx[at] = gamma[ch] * inv_std * (d - sum_dy / m - xhat * sum_dy_xhat / m);
      }
  }
}

void ref_relu_forward(size_t count, const double *x, double *y) {
  for (size_t i = 0; i < count; i++) y[i] = x[i] > 0 ? x[i] : 0;
}

void ref_relu_backward(size_t count, const double *y, const double *dy, double *dx) {
  for (size_t i = 0; i < count; i++) dx[i] = y[i] > 0 ? dy[i] : 0;
}

void ref_add(size_t count, const double *a, const double *b, double *y) {
  for (size_t i = 0; i < count; i++) y[i] = a[i] + b[i];
}

void ref_gap_forward(int n, int c, int hw, const double *x, double *y) {
  for (int i = 0; i < n; i++)
    for (int ch = 0; ch < c; ch++) {
      double s = 0;
      for (int j = 0; j < hw; j++) s += x[((size_t)i * c + ch) * hw + j]; // (N, C, H, W)
      y[(size_t)i * c + ch] = s / hw;                                     // (N, C)
    }
}

void ref_gap_backward(int n, int c, int hw, const double *dy, double *dx) {
  for (int i = 0; i < n; i++)
    for (int ch = 0; ch < c; ch++)
      for (int j = 0; j < hw; j++) dx[((size_t)i * c + ch) * hw + j] = dy[(size_t)i * c + ch] / hw;
}

void ref_linear_forward(int n, int c, int k, const double *x, const double *w, const double *b,
                        double *y) {
  for (int i = 0; i < n; i++)
    for (int o = 0; o < k; o++) {
      double s = b[o];
      for (int j = 0; j < c; j++) s += x[(size_t)i * c + j] * w[(size_t)o * c + j];
      y[(size_t)i * k + o] = s; // (N, K)
    }
}

void ref_linear_backward(int n, int c, int k, const double *x, const double *dy, const double *w,
                         double *dx, double *dw, double *db) {
  if (dx) // dx (N, C) = dy (N, K) w (K, C)
    for (int i = 0; i < n; i++)
      for (int j = 0; j < c; j++) {
        double s = 0;
        for (int o = 0; o < k; o++) s += dy[(size_t)i * k + o] * w[(size_t)o * c + j];
        dx[(size_t)i * c + j] = s;
      }
  for (int o = 0; o < k; o++) { // dw (K, C) = dy^T (K, N) x (N, C); db (K) = column sums of dy
    double sb = 0;
    for (int i = 0; i < n; i++) sb += dy[(size_t)i * k + o];
    db[o] = sb;
    for (int j = 0; j < c; j++) {
      double s = 0;
      for (int i = 0; i < n; i++) s += dy[(size_t)i * k + o] * x[(size_t)i * c + j];
      dw[(size_t)o * c + j] = s;
    }
  }
}

void ref_xent(int n, int k, const double *logits, const double *targets, double grad_scale,
              double *loss, double *dlogits) {
  for (int i = 0; i < n; i++) {
    const double *z = &logits[(size_t)i * k], *t = &targets[(size_t)i * k]; // (K) rows
    double zmax = z[0];
    for (int j = 1; j < k; j++) zmax = z[j] > zmax ? z[j] : zmax;
    double sum_exp = 0;
    for (int j = 0; j < k; j++) sum_exp += exp(z[j] - zmax);
    const double log_sum = zmax + log(sum_exp); /* log sum_j exp(z_j) */
    double l = 0;
    for (int j = 0; j < k; j++) l -= t[j] * (z[j] - log_sum);
    loss[i] = l;
    if (dlogits)
      for (int j = 0; j < k; j++)
        dlogits[(size_t)i * k + j] = (exp(z[j] - log_sum) - t[j]) * grad_scale;
  }
}
