/* cpu_step.c: the CPU backend's ops for a training step's device-side bookkeeping (backend.h,
 * "the step's device-side bookkeeping"): plain loops on host memory, the reference arithmetic
 * the CUDA kernels (kernels/step.cu) reproduce. The build compiles C without floating-point
 * contraction (ISO C, no -ffp-contract=fast), so a * b + c below rounds twice. */
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_internal.h"

/* Whether the label ranks first in z: no class above it, none equal before it (the test of
 * evaluate.c's dt_eval_label_rank(z, label, k) < 1). */
static bool label_first(const float *z, int label, int k) {
  for (int c = 0; c < k; c++)
    if (z[c] > z[label] || (z[c] == z[label] && c < label)) return false;
  return true;
}

/* The first maximum of z (evaluate.c's dt_eval_argmax). */
static int first_max(const float *z, int k) {
  int best = 0;
  for (int c = 1; c < k; c++)
    if (z[c] > z[best]) best = c;
  return best;
}

void dt_cpu_copy(dt_backend *be, void *dst, const void *src, size_t bytes) {
  (void)be;
  if (bytes) memcpy(dst, src, bytes);
}

void dt_cpu_axpy(dt_backend *be, float *y, const float *x, const float *x2, size_t n, float a) {
  (void)be;
  if (x2)
    for (size_t i = 0; i < n; i++) y[i] += a * (x[i] - x2[i]);
  else
    for (size_t i = 0; i < n; i++) y[i] += a * x[i];
}

void dt_cpu_flag_nonfinite(dt_backend *be, const float *x, size_t n, int32_t *flag) {
  if (!dt_cpu_all_finite(be, x, n)) *flag = 1;
}

void dt_cpu_top1(dt_backend *be, const dt_tensor *logits, const dt_tensor *logits2,
                 const float *targets, const int32_t *labels, int n, int k, double *correct) {
  (void)be;
  const float *z1 = logits->data, *z2 = logits2 ? logits2->data : NULL;
  float *row = dt_xmalloc((size_t)k * sizeof(float));
  double c = 0;
  for (int i = 0; i < n; i++) {
    const float *z = z1 + (size_t)i * k;
    if (z2) {
      for (int j = 0; j < k; j++) row[j] = 0.5f * (z[j] + z2[(size_t)i * k + j]);
      z = row;
    }
    if (labels) c += label_first(z, labels[i], k);
    else c += targets[(size_t)i * k + first_max(z, k)];
  }
  free(row);
  *correct += c;
}

void dt_cpu_sq_diff_rows(dt_backend *be, const dt_tensor *a, const dt_tensor *b, int n, int k,
                         double *out) {
  (void)be;
  for (int i = 0; i < n; i++) {
    double s = 0;
    for (int c = 0; c < k; c++) {
      const double d = (double)a->data[(size_t)i * k + c] - b->data[(size_t)i * k + c];
      s += d * d;
    }
    out[i] = s;
  }
}
