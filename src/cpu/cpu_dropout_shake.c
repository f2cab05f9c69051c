/* cpu_dropout_shake.c: the CPU backend's random ops (backend.h): dropout (the mask is a hash
 * of the plain element index) and shake-shake mixing. Plain OpenMP loops over the tensor's own
 * layout (cpu_view.c), fp32 or bf16 (computed in fp32, rounded once at the store); none reorders
 * a tensor. The dropout mask is fp32 whatever the tensors' type. */
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

/* d[i] = g[i] m[i] for i in [lo, hi): the forward's second pass and the backward. dt is a
 * constant at each call (cpu_internal.h, dt_cpu_load). */
static inline void mask_run(dnnl_data_type_t dt, const void *g, const float *m, void *d, long lo,
                            long hi) {
#pragma omp simd
  for (long i = lo; i < hi; i++) dt_cpu_store(dt, d, i, dt_cpu_load(dt, g, i) * m[i]);
}

/* d = g m over the whole buffer, in chunks. */
static void mask_apply(const dt_cpu_view *v, const void *g, const float *m, void *d) {
  const long total = (long)v->total;
  const bool bf16 = v->dt == dnnl_bf16;
#pragma omp parallel for schedule(static)
  for (long lo = 0; lo < total; lo += DT_CPU_CHUNK) {
    const long hi = DT_MIN(total, lo + DT_CPU_CHUNK);
    if (bf16)
      mask_run(dnnl_bf16, g, m, d, lo, hi);
    else
      mask_run(dnnl_f32, g, m, d, lo, hi);
  }
}

/* The mask, then y = x m: two passes, the first one free of the element type (the hash is the
 * cost; one loop doing both keeps too many values live and runs slower). */
void dt_cpu_dropout_forward(dt_op *op, const dt_tensor *x, const uint64_t *keys, dt_tensor *y) {
  dt_cpu_simple *s = (dt_cpu_simple *)op;
  dt_cpu_check_tensor(x, s->x, "dropout_forward x");
  dt_cpu_check_tensor(y, s->x, "dropout_forward y");
  const dt_cpu_view *v = &s->vx;
  if (!keys) {
    if (y->data != x->data) memcpy(y->data, x->data, v->total * (size_t)v->es);
    return;
  }
  if (!s->buf) s->buf = dt_xaligned(v->total * sizeof(float));
  const float p = s->p, keep = 1.0f / (1.0f - p);
  const int H = v->h, W = v->w, b = v->b, ncb = v->cp / v->b;
  float *m = s->buf;
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
            m[o + l] = c < v->c && dt_dropout_uniform(key, e) >= p ? keep : 0.0f;
          }
        }
    }
  mask_apply(v, x->data, m, y->data);
  s->have_mask = true;
}

void dt_cpu_dropout_backward(dt_op *op, const dt_tensor *dy, dt_tensor *dx) {
  dt_cpu_simple *s = (dt_cpu_simple *)op;
  dt_cpu_check_tensor(dy, s->x, "dropout_backward dy");
  dt_cpu_check_tensor(dx, s->x, "dropout_backward dx");
  if (!s->have_mask) DT_FATAL("dropout_backward: no training forward ran before");
  mask_apply(&s->vx, dy->data, s->buf, dx->data);
}

/* ---- shake-shake mixing ---- */

dt_op *dt_cpu_shake_create(dt_backend *bep, dt_shape shape, const dt_layout *x) {
  return &dt_cpu_simple_new(bep, shape, x, "shake_create")->base;
}

/* y[i] = fa a[i] + fb b[i] for i in [lo, hi). */
static inline void shake_mix_run(dnnl_data_type_t dt, float fa, const void *a, float fb,
                                 const void *b, void *y, long lo, long hi) {
#pragma omp simd
  for (long i = lo; i < hi; i++)
    dt_cpu_store(dt, y, i, fa * dt_cpu_load(dt, a, i) + fb * dt_cpu_load(dt, b, i));
}

/* y[i] = f g[i] for i in [lo, hi). */
static inline void shake_scale_run(dnnl_data_type_t dt, float f, const void *g, void *y, long lo,
                                   long hi) {
#pragma omp simd
  for (long i = lo; i < hi; i++) dt_cpu_store(dt, y, i, f * dt_cpu_load(dt, g, i));
}

/* Batch is outermost in every supported layout: sample n is the run [n sn, (n + 1) sn). One
 * parallel region shares out the chunks of each sample's run (no barrier between samples). */
void dt_cpu_shake_forward(dt_op *op, const dt_tensor *a, const dt_tensor *b, const float *alpha,
                          dt_tensor *y) {
  dt_cpu_simple *s = (dt_cpu_simple *)op;
  dt_cpu_check_tensor(a, s->x, "shake_forward a");
  dt_cpu_check_tensor(b, s->x, "shake_forward b");
  dt_cpu_check_tensor(y, s->x, "shake_forward y");
  const long sn = s->vx.sn;
  const int N = s->vx.n;
  const bool bf16 = s->vx.dt == dnnl_bf16;
  const void *pa = a->data, *pb = b->data;
  void *py = y->data;
#pragma omp parallel
  for (int n = 0; n < N; n++) {
    const float fa = alpha[n], fb = 1.0f - alpha[n];
    const long o = n * sn;
#pragma omp for schedule(static) nowait
    for (long lo = o; lo < o + sn; lo += DT_CPU_CHUNK) {
      const long hi = DT_MIN(o + sn, lo + DT_CPU_CHUNK);
      if (bf16)
        shake_mix_run(dnnl_bf16, fa, pa, fb, pb, py, lo, hi);
      else
        shake_mix_run(dnnl_f32, fa, pa, fb, pb, py, lo, hi);
    }
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
  const bool bf16 = s->vx.dt == dnnl_bf16;
  const void *g = dy->data;
  void *pa = da ? da->data : NULL, *pb = db ? db->data : NULL;
#pragma omp parallel
  for (int n = 0; n < N; n++) {
    const float fa = beta[n], fb = 1.0f - beta[n];
    const long o = n * sn;
#pragma omp for schedule(static) nowait
    for (long lo = o; lo < o + sn; lo += DT_CPU_CHUNK) {
      const long hi = DT_MIN(o + sn, lo + DT_CPU_CHUNK);
      if (pa && bf16) shake_scale_run(dnnl_bf16, fa, g, pa, lo, hi);
      if (pa && !bf16) shake_scale_run(dnnl_f32, fa, g, pa, lo, hi);
      if (pb && bf16) shake_scale_run(dnnl_bf16, fb, g, pb, lo, hi);
      if (pb && !bf16) shake_scale_run(dnnl_f32, fb, g, pb, lo, hi);
    }
  }
}
