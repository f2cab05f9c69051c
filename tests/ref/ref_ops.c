/* ref_ops.c: plain double-precision reference of every compute op (see ref_ops.h).
 * Written for obviousness, not speed: one loop nest per formula, all in plain layouts. */
#include "ref_ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h" /* dt_dropout_uniform: the mask definition every backend shares */
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

/* ---- ops of the other families (docs/reference-experiments.md "Models") ---- */

int ref_pool_out(int h, int k, int stride, int pad) { return (h + 2 * pad - k) / stride + 1; }

/* Walks every window of the pooling; for each output (i, ch, oh, ow) calls back with the
 * plain offsets of its in-range inputs. Forward and backward share it. */
static void ref_pool_walk(int n, int c, int h, int w, bool max, int k, int stride, int pad,
                          bool count_include_pad, const double *x, double *y, const double *dy,
                          double *dx) {
  const int P = ref_pool_out(h, k, stride, pad), Q = ref_pool_out(w, k, stride, pad);
  for (int i = 0; i < n; i++)
    for (int ch = 0; ch < c; ch++) {
      const size_t xo = ((size_t)i * c + ch) * h * w; // (N, C, H, W)
      for (int oh = 0; oh < P; oh++)
        for (int ow = 0; ow < Q; ow++) {
          const size_t yo = (((size_t)i * c + ch) * P + oh) * Q + ow; // (N, C, P, Q)
          double sum = 0, best = 0;
          size_t arg = 0;
          int count = 0;
          for (int kr = 0; kr < k; kr++)
            for (int ks = 0; ks < k; ks++) {
              const int ih = oh * stride - pad + kr, iw = ow * stride - pad + ks;
              if (ih < 0 || ih >= h || iw < 0 || iw >= w) continue;
              const size_t o = xo + (size_t)ih * w + iw;
              if (count == 0 || x[o] > best) best = x[o], arg = o;
              sum += x[o];
              count++;
            }
          const double div = count_include_pad ? (double)k * k : count;
          if (y) y[yo] = max ? best : sum / div;
          if (dx) {
            if (max) {
              dx[arg] += dy[yo];
              continue;
            }
            for (int kr = 0; kr < k; kr++)
              for (int ks = 0; ks < k; ks++) {
                const int ih = oh * stride - pad + kr, iw = ow * stride - pad + ks;
                if (ih < 0 || ih >= h || iw < 0 || iw >= w) continue;
                dx[xo + (size_t)ih * w + iw] += dy[yo] / div;
              }
          }
        }
    }
}

void ref_pool_forward(int n, int c, int h, int w, bool max, int k, int stride, int pad,
                      bool count_include_pad, const double *x, double *y) {
  ref_pool_walk(n, c, h, w, max, k, stride, pad, count_include_pad, x, y, NULL, NULL);
}

void ref_pool_backward(int n, int c, int h, int w, bool max, int k, int stride, int pad,
                       bool count_include_pad, const double *x, const double *dy, double *dx) {
  memset(dx, 0, (size_t)n * c * h * w * sizeof *dx);
  ref_pool_walk(n, c, h, w, max, k, stride, pad, count_include_pad, x, NULL, dy, dx);
}

void ref_concat_forward(int n, int ca, int cb, int hw, const double *a, const double *b,
                        double *y) {
  const size_t sa = (size_t)ca * hw, sb = (size_t)cb * hw;
  for (int i = 0; i < n; i++) {
    memcpy(y + i * (sa + sb), a + i * sa, sa * sizeof *y);
    memcpy(y + i * (sa + sb) + sa, b + i * sb, sb * sizeof *y);
  }
}

void ref_concat_backward(int n, int ca, int cb, int hw, const double *dy, double *da,
                         double *db) {
  const size_t sa = (size_t)ca * hw, sb = (size_t)cb * hw;
  for (int i = 0; i < n; i++) {
    if (da) memcpy(da + i * sa, dy + i * (sa + sb), sa * sizeof *da);
    if (db) memcpy(db + i * sb, dy + i * (sa + sb) + sa, sb * sizeof *db);
  }
}

void ref_pad_channels_forward(int n, int c, int c_out, int hw, const double *x, double *y) {
  const size_t sx = (size_t)c * hw, sy = (size_t)c_out * hw;
  for (int i = 0; i < n; i++) {
    memcpy(y + i * sy, x + i * sx, sx * sizeof *y);
    memset(y + i * sy + sx, 0, (sy - sx) * sizeof *y);
  }
}

void ref_pad_channels_backward(int n, int c, int c_out, int hw, const double *dy, double *dx) {
  const size_t sx = (size_t)c * hw, sy = (size_t)c_out * hw;
  for (int i = 0; i < n; i++) memcpy(dx + i * sx, dy + i * sy, sx * sizeof *dx);
}

/* The mask multiplier of element (i, e): 1 / (1 - p) if kept, else 0. */
static double ref_dropout_mask(double p, uint64_t key, size_t e) {
  return dt_dropout_uniform(key, e) >= p ? 1.0 / (1.0 - p) : 0.0;
}

void ref_dropout_forward(int n, int c, int hw, double p, const uint64_t *keys, const double *x,
                         double *y) {
  const size_t per = (size_t)c * hw;
  for (int i = 0; i < n; i++)
    for (size_t e = 0; e < per; e++)
      y[i * per + e] = x[i * per + e] * ref_dropout_mask(p, keys[i], e);
}

void ref_dropout_backward(int n, int c, int hw, double p, const uint64_t *keys, const double *dy,
                          double *dx) {
  ref_dropout_forward(n, c, hw, p, keys, dy, dx); /* the same linear map */
}

void ref_sigmoid_forward(size_t count, const double *x, double *y) {
  for (size_t i = 0; i < count; i++) y[i] = 1.0 / (1.0 + exp(-x[i]));
}

void ref_sigmoid_backward(size_t count, const double *y, const double *dy, double *dx) {
  for (size_t i = 0; i < count; i++) dx[i] = dy[i] * y[i] * (1.0 - y[i]);
}

void ref_scale_forward(int n, int c, int hw, const double *x, const double *s, double *y) {
  for (size_t nc = 0; nc < (size_t)n * c; nc++)
    for (int j = 0; j < hw; j++) y[nc * hw + j] = x[nc * hw + j] * s[nc];
}

void ref_scale_backward(int n, int c, int hw, const double *x, const double *s, const double *dy,
                        double *dx, double *ds) {
  for (size_t nc = 0; nc < (size_t)n * c; nc++) {
    double acc = 0;
    for (int j = 0; j < hw; j++) {
      if (dx) dx[nc * hw + j] = dy[nc * hw + j] * s[nc];
      acc += dy[nc * hw + j] * x[nc * hw + j];
    }
    if (ds) ds[nc] = acc;
  }
}

void ref_shake_forward(int n, size_t chw, const double *a, const double *b, const double *alpha,
                       double *y) {
  for (int i = 0; i < n; i++)
    for (size_t e = 0; e < chw; e++)
      y[i * chw + e] = alpha[i] * a[i * chw + e] + (1.0 - alpha[i]) * b[i * chw + e];
}

void ref_shake_backward(int n, size_t chw, const double *dy, const double *beta, double *da,
                        double *db) {
  for (int i = 0; i < n; i++)
    for (size_t e = 0; e < chw; e++) {
      if (da) da[i * chw + e] = beta[i] * dy[i * chw + e];
      if (db) db[i * chw + e] = (1.0 - beta[i]) * dy[i * chw + e];
    }
}

void ref_shift_forward(int n, int c, int h, int w, int sy, int sx, const double *x, double *y) {
  for (size_t nc = 0; nc < (size_t)n * c; nc++)
    for (int i = 0; i < h; i++)
      for (int j = 0; j < w; j++) {
        const int si = i + sy, sj = j + sx;
        const bool in = si >= 0 && si < h && sj >= 0 && sj < w;
        y[(nc * h + i) * w + j] = in ? x[(nc * h + si) * w + sj] : 0.0;
      }
}

void ref_shift_backward(int n, int c, int h, int w, int sy, int sx, const double *dy,
                        double *dx) {
  ref_shift_forward(n, c, h, w, -sy, -sx, dy, dx); /* the transpose shifts back */
}

void ref_bias_forward(int n, int c, int hw, const double *x, const double *b, double *y) {
  for (int i = 0; i < n; i++)
    for (int ch = 0; ch < c; ch++)
      for (int j = 0; j < hw; j++) {
        const size_t o = ((size_t)i * c + ch) * hw + j;
        y[o] = x[o] + b[ch];
      }
}

void ref_bias_backward(int n, int c, int hw, const double *dy, double *db) {
  for (int ch = 0; ch < c; ch++) {
    double acc = 0;
    for (int i = 0; i < n; i++)
      for (int j = 0; j < hw; j++) acc += dy[((size_t)i * c + ch) * hw + j];
    db[ch] = acc;
  }
}

/* ---- a training step's bookkeeping ---- */

void ref_axpy(size_t n, float *y, const float *x, const float *x2, float a) {
  for (size_t i = 0; i < n; i++) {
    const float d = x2 ? x[i] - x2[i] : x[i];
    const float p = a * d;
    y[i] = y[i] + p;
  }
}

double ref_top1(int n, int k, const float *z1, const float *z2, const float *t,
                const int32_t *labels) {
  double c = 0;
  float *z = malloc((size_t)k * sizeof *z);
  for (int i = 0; i < n; i++) {
    for (int j = 0; j < k; j++) {
      const size_t at = (size_t)i * k + j;
      z[j] = z2 ? 0.5f * (float)(z1[at] + z2[at]) : z1[at];
    }
    if (labels) {
      int above = 0;
      for (int j = 0; j < k; j++)
        above += z[j] > z[labels[i]] || (z[j] == z[labels[i]] && j < labels[i]);
      c += above == 0;
    } else {
      int best = 0;
      for (int j = 1; j < k; j++) best = z[j] > z[best] ? j : best;
      c += t[(size_t)i * k + best];
    }
  }
  free(z);
  return c;
}

void ref_sq_diff_rows(int n, int k, const float *a, const float *b, double *out) {
  for (int i = 0; i < n; i++) {
    double s = 0;
    for (int j = 0; j < k; j++) {
      const double d = (double)a[(size_t)i * k + j] - (double)b[(size_t)i * k + j];
      s += d * d;
    }
    out[i] = s;
  }
}
