/* cpu_optim.c: the optimizer updates of the CPU backend (backend.h, "optimizer updates"), one
 * trainable tensor per call, on host memory. These loops are the reference arithmetic of
 * docs/reference-experiments.md "Optimizers" that other backends reproduce: float throughout,
 * weight decay coupled as d = g + wd w, and the LARS norms summed sequentially in double.
 * A set skip flag (host-addressable backend memory here) returns before anything is
 * touched. */
#include <math.h>

#include "cpu/cpu_internal.h"

/* g *= grad_scale in place, as every update does first. */
static void scale_grad(float *restrict g, size_t n, float grad_scale) {
  if (grad_scale != 1.0f)
    for (size_t j = 0; j < n; j++) g[j] *= grad_scale;
}

void dt_cpu_sgd_update(dt_backend *be, float *w_, float *g_, float *buf, size_t n, float lr,
                       float momentum, float wd, bool nesterov, bool first, float grad_scale,
                       const int32_t *skip) {
  (void)be;
  if (skip && *skip) return;
  float *restrict w = w_, *restrict g = g_, *restrict s0 = buf;
  const float m = momentum;
  scale_grad(g, n, grad_scale);
  for (size_t j = 0; j < n; j++) {
    float d = g[j] + wd * w[j];
    float b = first ? d : m * s0[j] + d;
    s0[j] = b;
    w[j] -= nesterov ? lr * (d + m * b) : lr * b;
  }
}

static double norm2(const float *x, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
  return sqrt(s);
}

void dt_cpu_lars_update(dt_backend *be, float *w_, float *g_, float *buf, size_t n, double lr,
                        float momentum, float wd, double eps, double eta, double threshold,
                        float grad_scale, const int32_t *skip) {
  (void)be;
  if (skip && *skip) return;
  float *restrict w = w_, *restrict g = g_, *restrict s0 = buf;
  const float m = momentum;
  scale_grad(g, n, grad_scale);
  double wn = norm2(w, n), gn = norm2(g, n);
  double local = wn / (eps + gn + wd * wn);
  if (eta > 0) local *= eta;
  if (wn < threshold) local = 1.0;
  const float scaled = (float)(lr * local);
  for (size_t j = 0; j < n; j++) {
    float d = g[j] + wd * w[j];
    s0[j] = m * s0[j] + scaled * d;
    w[j] -= s0[j];
  }
}

void dt_cpu_adam_update(dt_backend *be, float *w_, float *g_, float *m_, float *v_, float *vmax_,
                        size_t n, float step, float beta1, float beta2, float eps, float bc2_sqrt,
                        float wd, float grad_scale, const int32_t *skip) {
  (void)be;
  if (skip && *skip) return;
  float *restrict w = w_, *restrict g = g_, *restrict s0 = m_, *restrict v = v_;
  float *restrict vmax = vmax_;
  const float b1 = beta1, b2 = beta2;
  scale_grad(g, n, grad_scale);
  for (size_t j = 0; j < n; j++) {
    float d = g[j] + wd * w[j];
    s0[j] = b1 * s0[j] + (1.0f - b1) * d;
    v[j] = b2 * v[j] + (1.0f - b2) * d * d;
    float vv = v[j];
    if (vmax) vv = vmax[j] = fmaxf(vmax[j], v[j]);
    w[j] -= step * s0[j] / (sqrtf(vv) / bc2_sqrt + eps);
  }
}

bool dt_cpu_all_finite(dt_backend *be, const float *x, size_t n) {
  (void)be;
  float acc = 0.0f;
  for (size_t j = 0; j < n; j++) acc += x[j] * 0.0f;
  return acc == 0.0f; /* NaN * 0 = NaN and Inf * 0 = NaN poison the sum */
}
