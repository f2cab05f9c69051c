/* cpu_sigmoid_scale_bias.c: the CPU backend's squeeze-and-excitation gate and per-channel bias
 * (backend.h): the logistic sigmoid on oneDNN (eltwise, backward from the output), the channel
 * scaling (forward: oneDNN binary mul with the scale broadcast over H, W; backward: plain loops
 * over the layout, cpu_view.c) and the per-channel bias (plain loops). Tensors are fp32 or bf16
 * (the layout's type, one per op but for the channel scaling's s, which may be fp32 with a bf16
 * x): the primitives run on it, the loops compute in fp32 and round once at the store. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_internal.h"

/* ---- sigmoid on oneDNN (logistic; the backward reads the forward output) ---- */

typedef struct {
  dt_op base;
  const dt_layout *x;
  dt_cpu_prim fwd, bwd;
  dnnl_memory_t m_a, m_b, m_c;
} cpu_sigmoid;

static void sigmoid_release(dt_op *op) {
  cpu_sigmoid *e = (cpu_sigmoid *)op;
  dt_cpu_prim_free(&e->fwd);
  dt_cpu_prim_free(&e->bwd);
  dt_cpu_mem_free(&e->m_a);
  dt_cpu_mem_free(&e->m_b);
  dt_cpu_mem_free(&e->m_c);
}

dt_op *dt_cpu_sigmoid_create(dt_backend *bep, dt_shape s, const dt_layout *x) {
  dt_cpu_backend *be = dt_cpu_be(bep);
  dt_cpu_view v = dt_cpu_view_of(x, "sigmoid_create");
  if (v.n != s.n || v.c != s.c || v.h != s.h || v.w != s.w)
    DT_FATAL("sigmoid_create: layout does not match (%d, %d, %d, %d)", s.n, s.c, s.h, s.w);
  char what[128];
  snprintf(what, sizeof what, "sigmoid of (%d, %d, %d, %d)", s.n, s.c, s.h, s.w);
  cpu_sigmoid *e = dt_xcalloc(1, sizeof *e);
  dt_cpu_op_register(be, &e->base, sigmoid_release);
  e->x = x;
  dnnl_eltwise_desc_t d;
  DT_DNNL_CHECK(dnnl_eltwise_forward_desc_init(
      &d, dnnl_forward_training, dnnl_eltwise_logistic_use_dst_for_bwd, &x->md, 0.f, 0.f));
  dt_cpu_prim_create(be, &e->fwd, &d, NULL, NULL, what);
  DT_DNNL_CHECK(dnnl_eltwise_backward_desc_init(&d, dnnl_eltwise_logistic_use_dst_for_bwd, &x->md,
                                                &x->md, 0.f, 0.f));
  dt_cpu_prim_create(be, &e->bwd, &d, NULL, e->fwd.pd, what);
  e->m_a = dt_cpu_mem(be, &x->md);
  e->m_b = dt_cpu_mem(be, &x->md);
  e->m_c = dt_cpu_mem(be, &x->md);
  return &e->base;
}

void dt_cpu_sigmoid_forward(dt_op *op, const dt_tensor *x, dt_tensor *y) {
  cpu_sigmoid *e = (cpu_sigmoid *)op;
  dt_cpu_check_tensor(x, e->x, "sigmoid_forward x");
  dt_cpu_check_tensor(y, e->x, "sigmoid_forward y");
  dt_cpu_bind(op->be, e->m_a, x->data);
  dt_cpu_bind(op->be, e->m_c, y->data);
  dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, e->m_a}, {DNNL_ARG_DST, e->m_c}};
  dt_cpu_prim_exec(op->be, &e->fwd, 2, args);
}

void dt_cpu_sigmoid_backward(dt_op *op, const dt_tensor *y, const dt_tensor *dy, dt_tensor *dx) {
  cpu_sigmoid *e = (cpu_sigmoid *)op;
  dt_cpu_check_tensor(y, e->x, "sigmoid_backward y");
  dt_cpu_check_tensor(dy, e->x, "sigmoid_backward dy");
  dt_cpu_check_tensor(dx, e->x, "sigmoid_backward dx");
  dt_cpu_bind(op->be, e->m_a, y->data);
  dt_cpu_bind(op->be, e->m_b, dy->data);
  dt_cpu_bind(op->be, e->m_c, dx->data);
  dnnl_exec_arg_t args[] = {
      {DNNL_ARG_DST, e->m_a}, {DNNL_ARG_DIFF_DST, e->m_b}, {DNNL_ARG_DIFF_SRC, e->m_c}};
  dt_cpu_prim_exec(op->be, &e->bwd, 3, args);
}

/* ---- channel scaling ---- */

dt_op *dt_cpu_scale_create(dt_backend *bep, dt_shape xs, const dt_layout *x, const dt_layout *sl) {
  dt_cpu_backend *be = dt_cpu_be(bep);
  dt_cpu_simple *s = dt_cpu_simple_new(bep, xs, x, "scale_create x");
  s->z = sl;
  s->vz = dt_cpu_view_of(sl, "scale_create s");
  if (s->vz.n != xs.n || s->vz.c != xs.c || s->vz.h != 1 || s->vz.w != 1)
    DT_FATAL("scale_create: scale layout is not (%d, %d, 1, 1)", xs.n, xs.c);
  /* Forward on oneDNN when its binary mul has a real kernel: that needs the scale in x's
   * blocking, so s (N C values) is reordered first when its layout differs. s keeps its own
   * element type: in native bf16 mode x is bf16 and s comes from fp32 linear layers (the
   * squeeze-and-excitation gate), so y = x s is computed in fp32 and rounded once. */
  dt_shape ss = {xs.n, xs.c, 1, 1};
  dt_cpu_view s_view = s->vx; /* x's blocking, s's element type */
  s_view.dt = s->vz.dt;
  const dt_layout *s_like = dt_cpu_view_like(be, &s_view, ss);
  dnnl_binary_desc_t d;
  DT_DNNL_CHECK(dnnl_binary_desc_init(&d, dnnl_binary_mul, &x->md, &s_like->md, &x->md));
  if (dt_cpu_prim_try_create(be, &s->mul, &d, NULL, NULL)) {
    if (dt_cpu_prim_is_ref(&s->mul)) {
      dt_cpu_prim_free(&s->mul);
    } else {
      s->scale_prim = true;
      dt_cpu_reorder_init(be, &s->s_re, &sl->md, &s_like->md, "channel scale");
      if (!s->s_re.same) {
        size_t bytes = dnnl_memory_desc_get_size(&s_like->md);
        s->s_buf = dt_xaligned(bytes);
        memset(s->s_buf, 0, bytes);
      }
      s->m_x = dt_cpu_mem(be, &x->md);
      s->m_s = dt_cpu_mem(be, &s_like->md);
      s->m_y = dt_cpu_mem(be, &x->md);
    }
  }
  return &s->base;
}

/* lane[l] = the scale of channel cb b + l of sample n (0 for the padding lanes). */
static inline void scale_lanes(const dt_cpu_simple *s, const void *sc, int n, int cb,
                               float *lane) {
  const dt_cpu_view *v = &s->vx;
  for (int l = 0; l < v->b; l++) {
    const int c = cb * v->b + l;
    lane[l] = c < v->c ? dt_cpu_view_load(&s->vz, sc, dt_cpu_view_off(&s->vz, n, c, 0, 0)) : 0.0f;
  }
}

/* y = x lane[l] (mul) or x + lane[l] over one (n, channel block), the scaling's and the bias's
 * forward; dt and mul are constants at each call (cpu_internal.h, dt_cpu_load), so each use is
 * its own vector loop. */
static inline float lane_op(bool mul, float x, float a) { return mul ? x * a : x + a; }

static inline void lane_plane(dnnl_data_type_t dt, bool mul, const dt_cpu_view *v, int n, int cb,
                              const float *lane, const void *px, void *py) {
  const int H = v->h, W = v->w, b = v->b;
  const long base = n * v->sn + (long)cb * v->scb, sh = v->sh, sw = v->sw;
  if (b == 1) { /* NCHW, NHWC: one lane (a vector loop of one would only cost) */
    const float a = lane[0];
    for (int h = 0; h < H; h++)
      for (int w = 0; w < W; w++) {
        const long o = base + h * sh + w * sw;
        dt_cpu_store(dt, py, o, lane_op(mul, dt_cpu_load(dt, px, o), a));
      }
    return;
  }
  for (int h = 0; h < H; h++)
    for (int w = 0; w < W; w++) {
      const long o = base + h * sh + w * sw;
#pragma omp simd
      for (int l = 0; l < b; l++)
        dt_cpu_store(dt, py, o + l, lane_op(mul, dt_cpu_load(dt, px, o + l), lane[l]));
    }
}

void dt_cpu_scale_forward(dt_op *op, const dt_tensor *x, const dt_tensor *sc, dt_tensor *y) {
  dt_cpu_simple *s = (dt_cpu_simple *)op;
  dt_cpu_check_tensor(x, s->x, "scale_forward x");
  dt_cpu_check_tensor(sc, s->z, "scale_forward s");
  dt_cpu_check_tensor(y, s->x, "scale_forward y");
  if (s->scale_prim) {
    dt_cpu_backend *be = op->be;
    const float *sk = sc->data;
    if (!s->s_re.same) {
      dt_cpu_reorder_run(be, &s->s_re, sc->data, s->s_buf);
      sk = s->s_buf;
    }
    dt_cpu_bind(be, s->m_x, x->data);
    dt_cpu_bind(be, s->m_s, sk);
    dt_cpu_bind(be, s->m_y, y->data);
    dnnl_exec_arg_t args[] = {
        {DNNL_ARG_SRC_0, s->m_x}, {DNNL_ARG_SRC_1, s->m_s}, {DNNL_ARG_DST, s->m_y}};
    dt_cpu_prim_exec(be, &s->mul, 3, args);
    return;
  }
  const dt_cpu_view *v = &s->vx;
  const int ncb = v->cp / v->b;
  const bool bf16 = v->dt == dnnl_bf16;
#pragma omp parallel for collapse(2) schedule(static)
  for (int n = 0; n < v->n; n++)
    for (int cb = 0; cb < ncb; cb++) {
      float lane[16];
      scale_lanes(s, sc->data, n, cb, lane);
      if (bf16)
        lane_plane(dnnl_bf16, true, v, n, cb, lane, x->data, y->data);
      else
        lane_plane(dnnl_f32, true, v, n, cb, lane, x->data, y->data);
    }
}

/* Over one (n, channel block): dx = dy lane[l] (dx may be NULL), and with sum acc[l] += dy x. */
static inline void scale_back_plane(dnnl_data_type_t dt, const dt_cpu_view *v, int n, int cb,
                                    const float *lane, const void *px, const void *g, void *dx,
                                    bool sum, float *acc) {
  const int H = v->h, W = v->w, b = v->b;
  const long base = n * v->sn + (long)cb * v->scb, sh = v->sh, sw = v->sw;
  for (int h = 0; h < H; h++)
    for (int w = 0; w < W; w++) {
      const long o = base + h * sh + w * sw;
      if (dx)
#pragma omp simd
        for (int l = 0; l < b; l++)
          dt_cpu_store(dt, dx, o + l, dt_cpu_load(dt, g, o + l) * lane[l]);
      if (sum)
#pragma omp simd
        for (int l = 0; l < b; l++)
          acc[l] += dt_cpu_load(dt, g, o + l) * dt_cpu_load(dt, px, o + l);
    }
}

void dt_cpu_scale_backward(dt_op *op, const dt_tensor *x, const dt_tensor *sc, const dt_tensor *dy,
                           dt_tensor *dx, dt_tensor *ds) {
  dt_cpu_simple *s = (dt_cpu_simple *)op;
  dt_cpu_check_tensor(x, s->x, "scale_backward x");
  dt_cpu_check_tensor(sc, s->z, "scale_backward s");
  dt_cpu_check_tensor(dy, s->x, "scale_backward dy");
  if (dx) dt_cpu_check_tensor(dx, s->x, "scale_backward dx");
  if (ds) dt_cpu_check_tensor(ds, s->z, "scale_backward ds");
  const dt_cpu_view *v = &s->vx;
  const int b = v->b, ncb = v->cp / v->b;
  const bool bf16 = v->dt == dnnl_bf16;
  void *pdx = dx ? dx->data : NULL;
#pragma omp parallel for collapse(2) schedule(static)
  for (int n = 0; n < v->n; n++)
    for (int cb = 0; cb < ncb; cb++) {
      float lane[16], acc[16] = {0};
      scale_lanes(s, sc->data, n, cb, lane);
      if (bf16)
        scale_back_plane(dnnl_bf16, v, n, cb, lane, x->data, dy->data, pdx, ds != NULL, acc);
      else
        scale_back_plane(dnnl_f32, v, n, cb, lane, x->data, dy->data, pdx, ds != NULL, acc);
      if (ds)
        for (int l = 0; l < b && cb * b + l < v->c; l++)
          dt_cpu_view_store(&s->vz, ds->data, dt_cpu_view_off(&s->vz, n, cb * b + l, 0, 0), acc[l]);
    }
  if (ds) dt_cpu_zero_channels(&s->vz, ds->data, s->vz.c, s->vz.cp); /* ds's own padding */
}

/* ---- per-channel bias ---- */

dt_op *dt_cpu_bias_create(dt_backend *bep, dt_shape shape, const dt_layout *x) {
  return &dt_cpu_simple_new(bep, shape, x, "bias_create")->base;
}

void dt_cpu_bias_forward(dt_op *op, const dt_tensor *x, const float *bias, dt_tensor *y) {
  dt_cpu_simple *s = (dt_cpu_simple *)op;
  dt_cpu_check_tensor(x, s->x, "bias_forward x");
  dt_cpu_check_tensor(y, s->x, "bias_forward y");
  const dt_cpu_view *v = &s->vx;
  const int b = v->b, ncb = v->cp / v->b;
  const bool bf16 = v->dt == dnnl_bf16;
  /* In storage order; padding lanes add 0 (and stay 0). */
#pragma omp parallel for collapse(2) schedule(static)
  for (int n = 0; n < v->n; n++)
    for (int cb = 0; cb < ncb; cb++) {
      float lane[16];
      for (int l = 0; l < b; l++) lane[l] = cb * b + l < v->c ? bias[cb * b + l] : 0.0f;
      if (bf16)
        lane_plane(dnnl_bf16, false, v, n, cb, lane, x->data, y->data);
      else
        lane_plane(dnnl_f32, false, v, n, cb, lane, x->data, y->data);
    }
}

/* part[l] += the H W values of lane l of one (n, channel block) of g. */
static inline void bias_back_plane(dnnl_data_type_t dt, const dt_cpu_view *v, int n, int cb,
                                   const void *g, float *part) {
  const int H = v->h, W = v->w, b = v->b;
  const long base = n * v->sn + (long)cb * v->scb, sh = v->sh, sw = v->sw;
  for (int h = 0; h < H; h++)
    for (int w = 0; w < W; w++) {
      const long o = base + h * sh + w * sw;
#pragma omp simd
      for (int l = 0; l < b; l++) part[l] += dt_cpu_load(dt, g, o + l);
    }
}

/* db[c] = sum over N, H, W of dy: float partial sums per (n, channel block) plane (at most
 * H W terms each), added in double. */
void dt_cpu_bias_backward(dt_op *op, const dt_tensor *dy, float *db) {
  dt_cpu_simple *s = (dt_cpu_simple *)op;
  dt_cpu_check_tensor(dy, s->x, "bias_backward dy");
  const dt_cpu_view *v = &s->vx;
  const int b = v->b, ncb = v->cp / v->b;
  const bool bf16 = v->dt == dnnl_bf16;
#pragma omp parallel for schedule(static)
  for (int cb = 0; cb < ncb; cb++) {
    double acc[16] = {0};
    for (int n = 0; n < v->n; n++) {
      float part[16] = {0};
      if (bf16)
        bias_back_plane(dnnl_bf16, v, n, cb, dy->data, part);
      else
        bias_back_plane(dnnl_f32, v, n, cb, dy->data, part);
      for (int l = 0; l < b; l++) acc[l] += part[l];
    }
    for (int l = 0; l < b && cb * b + l < v->c; l++) db[cb * b + l] = (float)acc[l];
  }
}
