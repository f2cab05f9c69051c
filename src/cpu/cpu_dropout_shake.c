/* cpu_dropout_shake.c: the CPU backend's random ops (backend.h): dropout (the mask is a hash
 * of the plain element index) and shake-shake mixing. Plain OpenMP loops over the tensor's own
 * layout (cpu_view.c); none reorders a tensor. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_internal.h"

/* ---- dropout ---- */

dt_op *dt_cpu_dropout_create(dt_backend *bep, dt_shape shape, const dt_layout *x, float p) {
  if (!(p >= 0.0f && p < 1.0f)) DT_FATAL("dropout_create: probability %g not in [0, 1)", p);
  dt_cpu_simple *s = dt_cpu_simple_new(bep, shape, x, "dropout_create");
  s->p = p; /* the mask is allocated by the first forward with keys (none in inference) */
  return &s->base;
}

void dt_cpu_dropout_forward(dt_op *op, const dt_tensor *x, const uint64_t *keys, dt_tensor *y) {
  dt_cpu_simple *s = (dt_cpu_simple *)op;
  dt_cpu_check_tensor(x, s->x, "dropout_forward x");
  dt_cpu_check_tensor(y, s->x, "dropout_forward y");
  const dt_cpu_view *v = &s->vx;
  if (!keys) {
    if (y->data != x->data) memcpy(y->data, x->data, v->total * sizeof(float));
    return;
  }
  if (!s->buf) s->buf = dt_xaligned(v->total * sizeof(float));
  const float p = s->p, keep = 1.0f / (1.0f - p);
  const int H = v->h, W = v->w, b = v->b, ncb = v->cp / v->b;
  const float *px = x->data;
  float *m = s->buf, *py = y->data;
  /* In storage order; padding lanes get a zero mask. */
#pragma omp parallel for collapse(2) schedule(static)
  for (int n = 0; n < v->n; n++)
    for (int cb = 0; cb < ncb; cb++) {
      const uint64_t key = keys[n];
      for (int h = 0; h < H; h++)
        for (int w = 0; w < W; w++) {
          const long o = n * v->sn + (long)cb * v->scb + h * v->sh + w * v->sw;
          for (int l = 0; l < b; l++) {
            const int c = cb * b + l;
            const uint64_t e = ((uint64_t)c * H + h) * W + w;
            const float mk = c < v->c && dt_dropout_uniform(key, e) >= p ? keep : 0.0f;
            m[o + l] = mk;
            py[o + l] = px[o + l] * mk;
          }
        }
    }
  s->have_mask = true;
}

void dt_cpu_dropout_backward(dt_op *op, const dt_tensor *dy, dt_tensor *dx) {
  dt_cpu_simple *s = (dt_cpu_simple *)op;
  dt_cpu_check_tensor(dy, s->x, "dropout_backward dy");
  dt_cpu_check_tensor(dx, s->x, "dropout_backward dx");
  if (!s->have_mask) DT_FATAL("dropout_backward: no training forward ran before");
  const float *m = s->buf, *g = dy->data;
  float *d = dx->data;
  const long total = (long)s->vx.total;
#pragma omp parallel for simd schedule(static)
  for (long i = 0; i < total; i++) d[i] = g[i] * m[i];
}

/* ---- shake-shake mixing ---- */

dt_op *dt_cpu_shake_create(dt_backend *bep, dt_shape shape, const dt_layout *x) {
  return &dt_cpu_simple_new(bep, shape, x, "shake_create")->base;
}

/* Batch is outermost in every supported layout: sample n is the run [n sn, (n + 1) sn). One
 * parallel region shares out each sample's run (no barrier between samples). */
void dt_cpu_shake_forward(dt_op *op, const dt_tensor *a, const dt_tensor *b, const float *alpha,
                          dt_tensor *y) {
  dt_cpu_simple *s = (dt_cpu_simple *)op;
  dt_cpu_check_tensor(a, s->x, "shake_forward a");
  dt_cpu_check_tensor(b, s->x, "shake_forward b");
  dt_cpu_check_tensor(y, s->x, "shake_forward y");
  const long sn = s->vx.sn;
  const int N = s->vx.n;
  const float *pa = a->data, *pb = b->data;
  float *py = y->data;
#pragma omp parallel
  for (int n = 0; n < N; n++) {
    const float fa = alpha[n], fb = 1.0f - alpha[n];
    const long o = n * sn;
#pragma omp for simd schedule(static) nowait
    for (long i = o; i < o + sn; i++) py[i] = fa * pa[i] + fb * pb[i];
  }
}

void dt_cpu_shake_backward(dt_op *op, const dt_tensor *dy, const float *beta, dt_tensor *da,
                           dt_tensor *db) {
  dt_cpu_simple *s = (dt_cpu_simple *)op;
  dt_cpu_check_tensor(dy, s->x, "shake_backward dy");
  if (da) dt_cpu_check_tensor(da, s->x, "shake_backward da");
  if (db) dt_cpu_check_tensor(db, s->x, "shake_backward db");
  const long sn = s->vx.sn;
  const int N = s->vx.n;
  const float *g = dy->data;
  float *pa = da ? da->data : NULL, *pb = db ? db->data : NULL;
#pragma omp parallel
  for (int n = 0; n < N; n++) {
    const float fa = beta[n], fb = 1.0f - beta[n];
    const long o = n * sn;
    if (pa) {
#pragma omp for simd schedule(static) nowait
      for (long i = o; i < o + sn; i++) pa[i] = fa * g[i];
    }
    if (pb) {
#pragma omp for simd schedule(static) nowait
      for (long i = o; i < o + sn; i++) pb[i] = fb * g[i];
    }
  }
}
