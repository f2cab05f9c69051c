/* cpu_extra.c: the CPU ops of the other families (docs/reference-experiments.md "Models"; backend.h
 * "ops of the other families"). oneDNN primitives where oneDNN has a fast one: pooling (max keeps
 * its workspace in the op), logistic sigmoid (eltwise, backward from the output) and the channel
 * scaling forward (binary mul with the scale broadcast over H, W). Plain OpenMP loops over the
 * tensor's own layout for the rest: concatenation, channel padding and slicing (oneDNN's concat and
 * sub-memory views need channel offsets on a block boundary, and DenseNet's growth rates put them
 * inside blocks), dropout (the mask is a hash of the plain element index), shake-shake mixing,
 * spatial shift and the per-channel bias. None of these reorders a tensor.
 *
 * The loops understand every layout this backend produces: NCHW, NHWC and the channel-blocked
 * nChw8c / nChw16c, described by a cpu_view. In blocked layouts the channels past C in the
 * last block are padding; every op here writes them as zero, so a padded lane never carries
 * garbage into oneDNN primitives (a gradient buffer may be the graph's shared scratch). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_internal.h"

/* ---- layout views ---- */

/* Element (n, c, h, w) lives at n sn + (c / b) scb + h sh + w sw + c % b. */
typedef struct {
  int n, c, h, w;
  int b;  /* channel block: 1 (NCHW, NHWC) or 8 / 16 */
  int cp; /* channels rounded up to the block */
  long sn, scb, sh, sw;
  size_t total; /* floats in the buffer, padding included */
} cpu_view;

static cpu_view cpu_view_of(const dt_layout *l, const char *what) {
  const dnnl_memory_desc_t *md = &l->md;
  const dnnl_blocking_desc_t *bd = &md->format_desc.blocking;
  if (md->ndims != 4 || md->format_kind != dnnl_blocked || md->offset0 != 0 ||
      !(bd->inner_nblks == 0 || (bd->inner_nblks == 1 && bd->inner_idxs[0] == 1)))
    DT_FATAL("%s: unsupported tensor layout (only NCHW, NHWC and nChw<b>c)", what);
  cpu_view v;
  v.n = (int)md->dims[0];
  v.c = (int)md->dims[1];
  v.h = (int)md->dims[2];
  v.w = (int)md->dims[3];
  v.b = bd->inner_nblks ? (int)bd->inner_blks[0] : 1;
  v.cp = (int)md->padded_dims[1];
  if (v.b > 16) DT_FATAL("%s: channel block of %d (at most 16)", what, v.b);
  v.sn = (long)bd->strides[0];
  v.scb = (long)bd->strides[1];
  v.sh = (long)bd->strides[2];
  v.sw = (long)bd->strides[3];
  v.total = dnnl_memory_desc_get_size(md) / sizeof(float);
  if (v.cp % v.b != 0 || (size_t)v.sn * (size_t)v.n != v.total)
    DT_FATAL("%s: unsupported tensor layout (batch not outermost)", what);
  return v;
}

static inline long view_off(const cpu_view *v, int n, int c, int h, int w) {
  return n * v->sn + (long)(c / v->b) * v->scb + h * v->sh + w * v->sw + c % v->b;
}

/* The layout of shape s with x's channel blocking (NCHW / NHWC / nChw<b>c). */
static const dt_layout *view_like(dt_cpu_backend *be, const cpu_view *x, dt_shape s) {
  dnnl_dims_t dims = {s.n, s.c, s.h, s.w};
  dnnl_format_tag_t tag = dnnl_nchw;
  if (x->b == 8)
    tag = dnnl_nChw8c;
  else if (x->b == 16)
    tag = dnnl_nChw16c;
  else if (x->c > 1 && x->sw == x->c && x->scb == 1)
    tag = dnnl_nhwc;
  dnnl_memory_desc_t md = dt_cpu_md(4, dims, tag);
  return dt_cpu_layout_intern(be, &md);
}

/* True when the pixels of one (n, channel block) are one contiguous run of H W b floats (NCHW,
 * nChw<b>c); NHWC is not. */
static bool view_dense(const cpu_view *v) { return v->sw == v->b && v->sh == (long)v->w * v->b; }

/* dst channels [d0, d0 + nc) = src channels [s0, s0 + nc), all N, H, W. For a dense dst, the
 * work is one (n, dst channel block) at a time, writing each pixel's lanes contiguously and
 * reading the source channels of those lanes (precomputed offsets), so both sides stream
 * through memory whatever the two blockings and the offset within a block. */
static void copy_channels(const cpu_view *sv, const float *src, int s0, const cpu_view *dv,
                          float *dst, int d0, int nc) {
  if (nc <= 0) return;
  const int H = dv->h, W = dv->w, hw = H * W;
  if (!view_dense(dv)) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < dv->n; n++)
      for (int c = 0; c < nc; c++) {
        const float *sp = src + view_off(sv, n, s0 + c, 0, 0);
        float *dp = dst + view_off(dv, n, d0 + c, 0, 0);
        for (int h = 0; h < H; h++)
          for (int w = 0; w < W; w++) dp[h * dv->sh + w * dv->sw] = sp[h * sv->sh + w * sv->sw];
      }
    return;
  }
  const int b = dv->b, cb0 = d0 / b, cb1 = (d0 + nc - 1) / b;
  const bool s_dense = view_dense(sv);
#pragma omp parallel for collapse(2) schedule(static)
  for (int n = 0; n < dv->n; n++)
    for (int cb = cb0; cb <= cb1; cb++) {
      const int l0 = cb == cb0 ? d0 % b : 0, l1 = cb == cb1 ? (d0 + nc - 1) % b + 1 : b;
      long soff[16];
      bool run = s_dense && sv->b == b; /* the lanes are a contiguous run in src too */
      for (int l = l0; l < l1; l++) {
        const int sc = cb * b + l - d0 + s0;
        soff[l] = (long)(sc / sv->b) * sv->scb + sc % sv->b;
        run = run && soff[l] == soff[l0] + (l - l0);
      }
      const float *sn = src + n * sv->sn;
      float *dp = dst + n * dv->sn + (long)cb * dv->scb;
      if (run && l1 - l0 == b) {
        memcpy(dp, sn + soff[l0], sizeof(float) * (size_t)hw * b);
      } else if (run) {
        for (long p = 0; p < hw; p++)
          memcpy(dp + p * b + l0, sn + soff[l0] + p * b, sizeof(float) * (size_t)(l1 - l0));
      } else {
        for (int h = 0; h < H; h++)
          for (int w = 0; w < W; w++) {
            const float *sp = sn + h * sv->sh + w * sv->sw;
            float *q = dp + ((long)h * W + w) * b;
            for (int l = l0; l < l1; l++) q[l] = sp[soff[l]];
          }
      }
    }
}

/* dst channels [c0, c1) = 0 (c1 may reach the padded channel count). */
static void zero_channels(const cpu_view *dv, float *dst, int c0, int c1) {
  if (c1 <= c0) return;
  const int H = dv->h, W = dv->w, hw = H * W;
  if (!view_dense(dv)) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < dv->n; n++)
      for (int c = c0; c < c1; c++) {
        float *dp = dst + view_off(dv, n, c, 0, 0);
        for (int h = 0; h < H; h++)
          for (int w = 0; w < W; w++) dp[h * dv->sh + w * dv->sw] = 0.0f;
      }
    return;
  }
  const int b = dv->b, cb0 = c0 / b, cb1 = (c1 - 1) / b;
#pragma omp parallel for collapse(2) schedule(static)
  for (int n = 0; n < dv->n; n++)
    for (int cb = cb0; cb <= cb1; cb++) {
      const int l0 = cb == cb0 ? c0 % b : 0, l1 = cb == cb1 ? (c1 - 1) % b + 1 : b;
      float *dp = dst + n * dv->sn + (long)cb * dv->scb;
      if (l1 - l0 == b) {
        memset(dp, 0, sizeof(float) * (size_t)hw * b);
      } else {
        for (long p = 0; p < hw; p++) memset(dp + p * b + l0, 0, sizeof(float) * (size_t)(l1 - l0));
      }
    }
}

/* ---- a generic op: layouts and views, no primitives ---- */

typedef struct {
  dt_op base;
  const dt_layout *x, *y, *z; /* inputs / outputs, per kind */
  cpu_view vx, vy, vz;
  int k, sy, sx;
  float p;
  float *buf; /* dropout: the mask (x layout), values 0 or 1 / (1 - p) */
  bool have_mask;
  /* scale forward on oneDNN: s reordered into x's blocking, then binary mul */
  bool scale_prim;
  dt_cpu_reorder s_re;
  float *s_buf;
  dt_cpu_prim mul;
  dnnl_memory_t m_x, m_s, m_y;
} cpu_simple;

static void simple_release(dt_op *op) {
  cpu_simple *s = (cpu_simple *)op;
  free(s->buf);
  free(s->s_buf);
  dt_cpu_reorder_free(&s->s_re);
  dt_cpu_prim_free(&s->mul);
  dt_cpu_mem_free(&s->m_x);
  dt_cpu_mem_free(&s->m_s);
  dt_cpu_mem_free(&s->m_y);
}

static cpu_simple *simple_new(dt_backend *bep, dt_shape shape, const dt_layout *x,
                              const char *what) {
  cpu_simple *s = dt_xcalloc(1, sizeof *s);
  dt_cpu_op_register(dt_cpu_be(bep), &s->base, simple_release);
  s->x = s->y = x;
  s->vx = s->vy = cpu_view_of(x, what);
  if (s->vx.n != shape.n || s->vx.c != shape.c || s->vx.h != shape.h || s->vx.w != shape.w)
    DT_FATAL("%s: layout does not match (%d, %d, %d, %d)", what, shape.n, shape.c, shape.h,
             shape.w);
  return s;
}

/* ---- concatenation ---- */

dt_op *dt_cpu_concat_create(dt_backend *bep, dt_shape as, const dt_layout *a, dt_shape bs,
                            const dt_layout *b, const dt_layout **y) {
  if (as.n != bs.n || as.h != bs.h || as.w != bs.w)
    DT_FATAL("concat_create: (%d, %d, %d, %d) and (%d, %d, %d, %d) differ in N, H or W", as.n, as.c,
             as.h, as.w, bs.n, bs.c, bs.h, bs.w);
  cpu_simple *s = simple_new(bep, as, a, "concat_create a");
  s->z = b;
  s->vz = cpu_view_of(b, "concat_create b");
  if (s->vz.n != bs.n || s->vz.c != bs.c || s->vz.h != bs.h || s->vz.w != bs.w)
    DT_FATAL("concat_create: layout of b does not match its shape");
  /* y takes the blocking of the input with the larger channel block (a's on a tie), so a
   * concatenation of a blocked and a plain tensor stays blocked like the rest of the net. */
  dt_shape ys = {as.n, as.c + bs.c, as.h, as.w};
  s->y = view_like(dt_cpu_be(bep), s->vz.b > s->vx.b ? &s->vz : &s->vx, ys);
  s->vy = cpu_view_of(s->y, "concat y");
  *y = s->y;
  return &s->base;
}

void dt_cpu_concat_forward(dt_op *op, const dt_tensor *a, const dt_tensor *b, dt_tensor *y) {
  cpu_simple *s = (cpu_simple *)op;
  dt_cpu_check_tensor(a, s->x, "concat_forward a");
  dt_cpu_check_tensor(b, s->z, "concat_forward b");
  dt_cpu_check_tensor(y, s->y, "concat_forward y");
  copy_channels(&s->vx, a->data, 0, &s->vy, y->data, 0, s->vx.c);
  copy_channels(&s->vz, b->data, 0, &s->vy, y->data, s->vx.c, s->vz.c);
  zero_channels(&s->vy, y->data, s->vy.c, s->vy.cp);
}

void dt_cpu_concat_backward(dt_op *op, const dt_tensor *dy, dt_tensor *da, dt_tensor *db) {
  cpu_simple *s = (cpu_simple *)op;
  dt_cpu_check_tensor(dy, s->y, "concat_backward dy");
  if (da) {
    dt_cpu_check_tensor(da, s->x, "concat_backward da");
    copy_channels(&s->vy, dy->data, 0, &s->vx, da->data, 0, s->vx.c);
    zero_channels(&s->vx, da->data, s->vx.c, s->vx.cp);
  }
  if (db) {
    dt_cpu_check_tensor(db, s->z, "concat_backward db");
    copy_channels(&s->vy, dy->data, s->vx.c, &s->vz, db->data, 0, s->vz.c);
    zero_channels(&s->vz, db->data, s->vz.c, s->vz.cp);
  }
}

/* ---- channel padding ---- */

dt_op *dt_cpu_pad_channels_create(dt_backend *bep, dt_shape xs, const dt_layout *x, int c_out,
                                  const dt_layout **y) {
  if (c_out < xs.c) DT_FATAL("pad_channels_create: %d channels cannot pad to %d", xs.c, c_out);
  cpu_simple *s = simple_new(bep, xs, x, "pad_channels_create");
  dt_shape ys = {xs.n, c_out, xs.h, xs.w};
  s->y = view_like(dt_cpu_be(bep), &s->vx, ys);
  s->vy = cpu_view_of(s->y, "pad_channels y");
  *y = s->y;
  return &s->base;
}

void dt_cpu_pad_channels_forward(dt_op *op, const dt_tensor *x, dt_tensor *y) {
  cpu_simple *s = (cpu_simple *)op;
  dt_cpu_check_tensor(x, s->x, "pad_channels_forward x");
  dt_cpu_check_tensor(y, s->y, "pad_channels_forward y");
  copy_channels(&s->vx, x->data, 0, &s->vy, y->data, 0, s->vx.c);
  zero_channels(&s->vy, y->data, s->vx.c, s->vy.cp);
}

void dt_cpu_pad_channels_backward(dt_op *op, const dt_tensor *dy, dt_tensor *dx) {
  cpu_simple *s = (cpu_simple *)op;
  dt_cpu_check_tensor(dy, s->y, "pad_channels_backward dy");
  dt_cpu_check_tensor(dx, s->x, "pad_channels_backward dx");
  copy_channels(&s->vy, dy->data, 0, &s->vx, dx->data, 0, s->vx.c);
  zero_channels(&s->vx, dx->data, s->vx.c, s->vx.cp);
}

/* ---- dropout ---- */

dt_op *dt_cpu_dropout_create(dt_backend *bep, dt_shape shape, const dt_layout *x, float p) {
  if (!(p >= 0.0f && p < 1.0f)) DT_FATAL("dropout_create: probability %g not in [0, 1)", p);
  cpu_simple *s = simple_new(bep, shape, x, "dropout_create");
  s->p = p; /* the mask is allocated by the first forward with keys (none in inference) */
  return &s->base;
}

void dt_cpu_dropout_forward(dt_op *op, const dt_tensor *x, const uint64_t *keys, dt_tensor *y) {
  cpu_simple *s = (cpu_simple *)op;
  dt_cpu_check_tensor(x, s->x, "dropout_forward x");
  dt_cpu_check_tensor(y, s->x, "dropout_forward y");
  const cpu_view *v = &s->vx;
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
  cpu_simple *s = (cpu_simple *)op;
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
  return &simple_new(bep, shape, x, "shake_create")->base;
}

/* Batch is outermost in every supported layout: sample n is the run [n sn, (n + 1) sn). One
 * parallel region shares out each sample's run (no barrier between samples). */
void dt_cpu_shake_forward(dt_op *op, const dt_tensor *a, const dt_tensor *b, const float *alpha,
                          dt_tensor *y) {
  cpu_simple *s = (cpu_simple *)op;
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
  cpu_simple *s = (cpu_simple *)op;
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

/* ---- spatial shift ---- */

dt_op *dt_cpu_shift_create(dt_backend *bep, dt_shape shape, const dt_layout *x, int sy, int sx) {
  cpu_simple *s = simple_new(bep, shape, x, "shift_create");
  s->sy = sy;
  s->sx = sx;
  return &s->base;
}

/* y[i, j] = x[i + sy, j + sx] (0 outside) for every (n, c), padding lanes included (they
 * move zeros). In a dense layout a row of one channel block is W b contiguous floats, so each
 * output row is one shifted copy plus zero fill. */
static void shift_run(const cpu_view *v, const float *x, float *y, int sy, int sx) {
  const int H = v->h, W = v->w, b = v->b, ncb = v->cp / v->b;
  if (!view_dense(v)) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < v->n; n++)
      for (int c = 0; c < v->c; c++) {
        const long base = view_off(v, n, c, 0, 0);
        for (int i = 0; i < H; i++)
          for (int j = 0; j < W; j++) {
            const int si = i + sy, sj = j + sx;
            y[base + i * v->sh + j * v->sw] =
                (si >= 0 && si < H && sj >= 0 && sj < W) ? x[base + si * v->sh + sj * v->sw] : 0.0f;
          }
      }
    return;
  }
  const int j0 = DT_MAX(0, -sx), j1 = DT_MIN(W, W - sx); /* output columns with a source */
#pragma omp parallel for collapse(2) schedule(static)
  for (int n = 0; n < v->n; n++)
    for (int cb = 0; cb < ncb; cb++) {
      const long base = n * v->sn + (long)cb * v->scb;
      for (int i = 0; i < H; i++) {
        float *yr = y + base + (long)i * W * b;
        const int si = i + sy;
        if (si < 0 || si >= H || j1 <= j0) {
          memset(yr, 0, sizeof(float) * (size_t)W * b);
          continue;
        }
        const float *xr = x + base + (long)si * W * b;
        memset(yr, 0, sizeof(float) * (size_t)j0 * b);
        memcpy(yr + (long)j0 * b, xr + (long)(j0 + sx) * b, sizeof(float) * (size_t)(j1 - j0) * b);
        memset(yr + (long)j1 * b, 0, sizeof(float) * (size_t)(W - j1) * b);
      }
    }
}

void dt_cpu_shift_forward(dt_op *op, const dt_tensor *x, dt_tensor *y) {
  cpu_simple *s = (cpu_simple *)op;
  dt_cpu_check_tensor(x, s->x, "shift_forward x");
  dt_cpu_check_tensor(y, s->x, "shift_forward y");
  shift_run(&s->vx, x->data, y->data, s->sy, s->sx);
}

void dt_cpu_shift_backward(dt_op *op, const dt_tensor *dy, dt_tensor *dx) {
  cpu_simple *s = (cpu_simple *)op;
  dt_cpu_check_tensor(dy, s->x, "shift_backward dy");
  dt_cpu_check_tensor(dx, s->x, "shift_backward dx");
  shift_run(&s->vx, dy->data, dx->data, -s->sy, -s->sx);
}

/* ---- per-channel bias ---- */

dt_op *dt_cpu_bias_create(dt_backend *bep, dt_shape shape, const dt_layout *x) {
  return &simple_new(bep, shape, x, "bias_create")->base;
}

void dt_cpu_bias_forward(dt_op *op, const dt_tensor *x, const float *bias, dt_tensor *y) {
  cpu_simple *s = (cpu_simple *)op;
  dt_cpu_check_tensor(x, s->x, "bias_forward x");
  dt_cpu_check_tensor(y, s->x, "bias_forward y");
  const cpu_view *v = &s->vx;
  const int H = v->h, W = v->w, b = v->b, ncb = v->cp / v->b;
  const float *px = x->data;
  float *py = y->data;
  /* In storage order; padding lanes add 0 (and stay 0). */
#pragma omp parallel for collapse(2) schedule(static)
  for (int n = 0; n < v->n; n++)
    for (int cb = 0; cb < ncb; cb++) {
      float lane[16];
      for (int l = 0; l < b; l++) lane[l] = cb * b + l < v->c ? bias[cb * b + l] : 0.0f;
      for (int h = 0; h < H; h++)
        for (int w = 0; w < W; w++) {
          const long o = n * v->sn + (long)cb * v->scb + h * v->sh + w * v->sw;
          for (int l = 0; l < b; l++) py[o + l] = px[o + l] + lane[l];
        }
    }
}

/* db[c] = sum over N, H, W of dy: float partial sums per (n, channel block) plane (at most
 * H W terms each), added in double. */
void dt_cpu_bias_backward(dt_op *op, const dt_tensor *dy, float *db) {
  cpu_simple *s = (cpu_simple *)op;
  dt_cpu_check_tensor(dy, s->x, "bias_backward dy");
  const cpu_view *v = &s->vx;
  const int H = v->h, W = v->w, b = v->b, ncb = v->cp / v->b;
  const float *g = dy->data;
#pragma omp parallel for schedule(static)
  for (int cb = 0; cb < ncb; cb++) {
    double acc[16] = {0};
    for (int n = 0; n < v->n; n++) {
      float part[16] = {0};
      for (int h = 0; h < H; h++)
        for (int w = 0; w < W; w++) {
          const long o = n * v->sn + (long)cb * v->scb + h * v->sh + w * v->sw;
          for (int l = 0; l < b; l++) part[l] += g[o + l];
        }
      for (int l = 0; l < b; l++) acc[l] += part[l];
    }
    for (int l = 0; l < b && cb * b + l < v->c; l++) db[cb * b + l] = (float)acc[l];
  }
}

/* ---- channel scaling ---- */

dt_op *dt_cpu_scale_create(dt_backend *bep, dt_shape xs, const dt_layout *x, const dt_layout *sl) {
  dt_cpu_backend *be = dt_cpu_be(bep);
  cpu_simple *s = simple_new(bep, xs, x, "scale_create x");
  s->z = sl;
  s->vz = cpu_view_of(sl, "scale_create s");
  if (s->vz.n != xs.n || s->vz.c != xs.c || s->vz.h != 1 || s->vz.w != 1)
    DT_FATAL("scale_create: scale layout is not (%d, %d, 1, 1)", xs.n, xs.c);
  /* Forward on oneDNN when its binary mul has a real kernel: that needs the scale in x's
   * blocking, so s (N C floats) is reordered first when its layout differs. */
  dt_shape ss = {xs.n, xs.c, 1, 1};
  const dt_layout *s_like = view_like(be, &s->vx, ss);
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

void dt_cpu_scale_forward(dt_op *op, const dt_tensor *x, const dt_tensor *sc, dt_tensor *y) {
  cpu_simple *s = (cpu_simple *)op;
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
  const cpu_view *v = &s->vx;
  const int H = v->h, W = v->w, b = v->b, ncb = v->cp / v->b;
  const float *px = x->data;
  float *py = y->data;
#pragma omp parallel for collapse(2) schedule(static)
  for (int n = 0; n < v->n; n++)
    for (int cb = 0; cb < ncb; cb++) {
      float lane[16];
      for (int l = 0; l < b; l++) {
        const int c = cb * b + l;
        lane[l] = c < v->c ? sc->data[view_off(&s->vz, n, c, 0, 0)] : 0.0f;
      }
      for (int h = 0; h < H; h++)
        for (int w = 0; w < W; w++) {
          const long o = n * v->sn + (long)cb * v->scb + h * v->sh + w * v->sw;
          for (int l = 0; l < b; l++) py[o + l] = px[o + l] * lane[l];
        }
    }
}

void dt_cpu_scale_backward(dt_op *op, const dt_tensor *x, const dt_tensor *sc, const dt_tensor *dy,
                           dt_tensor *dx, dt_tensor *ds) {
  cpu_simple *s = (cpu_simple *)op;
  dt_cpu_check_tensor(x, s->x, "scale_backward x");
  dt_cpu_check_tensor(sc, s->z, "scale_backward s");
  dt_cpu_check_tensor(dy, s->x, "scale_backward dy");
  if (dx) dt_cpu_check_tensor(dx, s->x, "scale_backward dx");
  if (ds) dt_cpu_check_tensor(ds, s->z, "scale_backward ds");
  const cpu_view *v = &s->vx;
  const int H = v->h, W = v->w, b = v->b, ncb = v->cp / v->b;
  const float *px = x->data, *g = dy->data;
#pragma omp parallel for collapse(2) schedule(static)
  for (int n = 0; n < v->n; n++)
    for (int cb = 0; cb < ncb; cb++) {
      float lane[16], acc[16] = {0};
      for (int l = 0; l < b; l++) {
        const int c = cb * b + l;
        lane[l] = c < v->c ? sc->data[view_off(&s->vz, n, c, 0, 0)] : 0.0f;
      }
      for (int h = 0; h < H; h++)
        for (int w = 0; w < W; w++) {
          const long o = n * v->sn + (long)cb * v->scb + h * v->sh + w * v->sw;
          if (dx)
            for (int l = 0; l < b; l++) dx->data[o + l] = g[o + l] * lane[l];
          if (ds)
            for (int l = 0; l < b; l++) acc[l] += g[o + l] * px[o + l];
        }
      if (ds)
        for (int l = 0; l < b && cb * b + l < v->c; l++)
          ds->data[view_off(&s->vz, n, cb * b + l, 0, 0)] = acc[l];
    }
}

/* ---- pooling on oneDNN ---- */

typedef struct {
  dt_op base;
  const dt_layout *x, *y;
  dt_cpu_prim fwd, bwd;
  float *ws; /* max pooling: where each maximum was, from the last forward */
  dnnl_memory_t m_x, m_y, m_ws;
} cpu_pool;

static void pool_release(dt_op *op) {
  cpu_pool *p = (cpu_pool *)op;
  dt_cpu_prim_free(&p->fwd);
  dt_cpu_prim_free(&p->bwd);
  free(p->ws);
  dt_cpu_mem_free(&p->m_x);
  dt_cpu_mem_free(&p->m_y);
  dt_cpu_mem_free(&p->m_ws);
}

dt_op *dt_cpu_pool_create(dt_backend *bep, dt_shape s, const dt_layout *x, dt_pool_kind kind,
                          int ksize, int stride, int pad, bool count_include_pad,
                          const dt_layout **y) {
  dt_cpu_backend *be = dt_cpu_be(bep);
  if (ksize < 1 || stride < 1 || pad < 0 || 2 * pad > ksize || s.h + 2 * pad < ksize ||
      s.w + 2 * pad < ksize)
    DT_FATAL("pool_create: bad window %d / stride %d / pad %d on %d x %d", ksize, stride, pad, s.h,
             s.w);
  cpu_view vx = cpu_view_of(x, "pool_create");
  if (vx.n != s.n || vx.c != s.c || vx.h != s.h || vx.w != s.w)
    DT_FATAL("pool_create: layout does not match (%d, %d, %d, %d)", s.n, s.c, s.h, s.w);
  char what[160];
  snprintf(what, sizeof what, "%s pooling %dx%d/%d pad %d of (%d, %d, %d, %d)",
           kind == DT_POOL_MAX ? "max" : "average", ksize, ksize, stride, pad, s.n, s.c, s.h, s.w);
  cpu_pool *p = dt_xcalloc(1, sizeof *p);
  dt_cpu_op_register(be, &p->base, pool_release);
  p->x = x;
  const int oh = (s.h + 2 * pad - ksize) / stride + 1, ow = (s.w + 2 * pad - ksize) / stride + 1;
  dnnl_dims_t yd = {s.n, s.c, oh, ow};
  dnnl_memory_desc_t y_any = dt_cpu_md(4, yd, dnnl_format_tag_any);
  /* Floor mode as PyTorch: oneDNN's output size formula floors too, so symmetric padding
   * gives the same windows; with count_include_pad every window lies inside the padded input,
   * so both divide by ksize^2. */
  dnnl_dims_t strides = {stride, stride}, kernel = {ksize, ksize}, dil = {0, 0};
  dnnl_dims_t pad_l = {pad, pad}, pad_r = {pad, pad};
  dnnl_alg_kind_t alg = kind == DT_POOL_MAX ? dnnl_pooling_max
                        : count_include_pad ? dnnl_pooling_avg_include_padding
                                            : dnnl_pooling_avg_exclude_padding;
  dnnl_pooling_v2_desc_t d;
  DT_DNNL_CHECK(dnnl_pooling_v2_forward_desc_init(&d, dnnl_forward_training, alg, &x->md, &y_any,
                                                  strides, kernel, dil, pad_l, pad_r));
  dt_cpu_prim_create(be, &p->fwd, &d, NULL, NULL, what);
  dnnl_memory_desc_t ymd = dt_cpu_prim_md(&p->fwd, dnnl_query_dst_md, 0);
  p->y = dt_cpu_layout_intern(be, &ymd);
  DT_DNNL_CHECK(dnnl_pooling_v2_backward_desc_init(&d, alg, &x->md, &ymd, strides, kernel, dil,
                                                   pad_l, pad_r));
  dt_cpu_prim_create(be, &p->bwd, &d, NULL, p->fwd.pd, what);
  const dnnl_memory_desc_t *wmd =
      dnnl_primitive_desc_query_md(p->fwd.pd, dnnl_query_workspace_md, 0);
  if (wmd && dnnl_memory_desc_get_size(wmd) > 0) {
    size_t bytes = dnnl_memory_desc_get_size(wmd);
    p->ws = dt_xaligned(bytes);
    memset(p->ws, 0, bytes);
    p->m_ws = dt_cpu_mem(be, wmd);
    dt_cpu_bind(be, p->m_ws, p->ws);
  }
  p->m_x = dt_cpu_mem(be, &x->md);
  p->m_y = dt_cpu_mem(be, &ymd);
  *y = p->y;
  return &p->base;
}

void dt_cpu_pool_forward(dt_op *op, const dt_tensor *x, dt_tensor *y) {
  cpu_pool *p = (cpu_pool *)op;
  dt_cpu_check_tensor(x, p->x, "pool_forward x");
  dt_cpu_check_tensor(y, p->y, "pool_forward y");
  dt_cpu_bind(op->be, p->m_x, x->data);
  dt_cpu_bind(op->be, p->m_y, y->data);
  dnnl_exec_arg_t args[] = {
      {DNNL_ARG_SRC, p->m_x}, {DNNL_ARG_DST, p->m_y}, {DNNL_ARG_WORKSPACE, p->m_ws}};
  dt_cpu_prim_exec(op->be, &p->fwd, p->m_ws ? 3 : 2, args);
}

void dt_cpu_pool_backward(dt_op *op, const dt_tensor *dy, dt_tensor *dx) {
  cpu_pool *p = (cpu_pool *)op;
  dt_cpu_check_tensor(dy, p->y, "pool_backward dy");
  dt_cpu_check_tensor(dx, p->x, "pool_backward dx");
  dt_cpu_bind(op->be, p->m_y, dy->data);
  dt_cpu_bind(op->be, p->m_x, dx->data);
  dnnl_exec_arg_t args[] = {
      {DNNL_ARG_DIFF_DST, p->m_y}, {DNNL_ARG_DIFF_SRC, p->m_x}, {DNNL_ARG_WORKSPACE, p->m_ws}};
  dt_cpu_prim_exec(op->be, &p->bwd, p->m_ws ? 3 : 2, args);
}

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
  cpu_view v = cpu_view_of(x, "sigmoid_create");
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
