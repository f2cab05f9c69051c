/* cpu_concat_pad_shift.c: the CPU backend's ops that only move values (backend.h):
 * concatenation, channel padding and slicing, and the spatial shift. Plain OpenMP loops over the
 * tensor's own layout (cpu_view.c): oneDNN's concat and sub-memory views need channel offsets on
 * a block boundary, and DenseNet's growth rates put them inside blocks. None reorders a tensor;
 * fp32 and bf16 tensors alike (they move bit patterns), outputs of the inputs' type. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_internal.h"

/* ---- concatenation ---- */

dt_op *dt_cpu_concat_create(dt_backend *bep, dt_shape as, const dt_layout *a, dt_shape bs,
                            const dt_layout *b, const dt_layout **y) {
  if (as.n != bs.n || as.h != bs.h || as.w != bs.w)
    DT_FATAL("concat_create: (%d, %d, %d, %d) and (%d, %d, %d, %d) differ in N, H or W", as.n, as.c,
             as.h, as.w, bs.n, bs.c, bs.h, bs.w);
  dt_cpu_simple *s = dt_cpu_simple_new(bep, as, a, "concat_create a");
  s->z = b;
  s->vz = dt_cpu_view_of(b, "concat_create b");
  if (s->vz.n != bs.n || s->vz.c != bs.c || s->vz.h != bs.h || s->vz.w != bs.w)
    DT_FATAL("concat_create: layout of b does not match its shape");
  /* y takes the blocking of the input with the larger channel block (a's on a tie), so a
   * concatenation of a blocked and a plain tensor stays blocked like the rest of the net; and
   * the narrower element type when a and b differ (an fp32 tensor, e.g. the image batch, beside
   * 16-bit activations: y is 16-bit like the rest of the net). */
  dt_shape ys = {as.n, as.c + bs.c, as.h, as.w};
  dt_cpu_view like = s->vz.b > s->vx.b ? s->vz : s->vx;
  if (s->vx.es != s->vz.es) {
    const dt_cpu_view *narrow = s->vx.es < s->vz.es ? &s->vx : &s->vz;
    like.dt = narrow->dt;
    like.es = narrow->es;
  }
  s->y = dt_cpu_view_like(dt_cpu_be(bep), &like, ys);
  s->vy = dt_cpu_view_of(s->y, "concat y");
  *y = s->y;
  return &s->base;
}

void dt_cpu_concat_forward(dt_op *op, const dt_tensor *a, const dt_tensor *b, dt_tensor *y) {
  dt_cpu_simple *s = (dt_cpu_simple *)op;
  dt_cpu_check_tensor(a, s->x, "concat_forward a");
  dt_cpu_check_tensor(b, s->z, "concat_forward b");
  dt_cpu_check_tensor(y, s->y, "concat_forward y");
  dt_cpu_copy_channels(&s->vx, a->data, 0, &s->vy, y->data, 0, s->vx.c);
  dt_cpu_copy_channels(&s->vz, b->data, 0, &s->vy, y->data, s->vx.c, s->vz.c);
  dt_cpu_zero_channels(&s->vy, y->data, s->vy.c, s->vy.cp);
}

void dt_cpu_concat_backward(dt_op *op, const dt_tensor *dy, dt_tensor *da, dt_tensor *db) {
  dt_cpu_simple *s = (dt_cpu_simple *)op;
  dt_cpu_check_tensor(dy, s->y, "concat_backward dy");
  if (da) {
    dt_cpu_check_tensor(da, s->x, "concat_backward da");
    dt_cpu_copy_channels(&s->vy, dy->data, 0, &s->vx, da->data, 0, s->vx.c);
    dt_cpu_zero_channels(&s->vx, da->data, s->vx.c, s->vx.cp);
  }
  if (db) {
    dt_cpu_check_tensor(db, s->z, "concat_backward db");
    dt_cpu_copy_channels(&s->vy, dy->data, s->vx.c, &s->vz, db->data, 0, s->vz.c);
    dt_cpu_zero_channels(&s->vz, db->data, s->vz.c, s->vz.cp);
  }
}

/* ---- channel padding ---- */

dt_op *dt_cpu_pad_channels_create(dt_backend *bep, dt_shape xs, const dt_layout *x, int c_out,
                                  const dt_layout **y) {
  if (c_out < xs.c) DT_FATAL("pad_channels_create: %d channels cannot pad to %d", xs.c, c_out);
  dt_cpu_simple *s = dt_cpu_simple_new(bep, xs, x, "pad_channels_create");
  dt_shape ys = {xs.n, c_out, xs.h, xs.w};
  s->y = dt_cpu_view_like(dt_cpu_be(bep), &s->vx, ys);
  s->vy = dt_cpu_view_of(s->y, "pad_channels y");
  *y = s->y;
  return &s->base;
}

void dt_cpu_pad_channels_forward(dt_op *op, const dt_tensor *x, dt_tensor *y) {
  dt_cpu_simple *s = (dt_cpu_simple *)op;
  dt_cpu_check_tensor(x, s->x, "pad_channels_forward x");
  dt_cpu_check_tensor(y, s->y, "pad_channels_forward y");
  dt_cpu_copy_channels(&s->vx, x->data, 0, &s->vy, y->data, 0, s->vx.c);
  dt_cpu_zero_channels(&s->vy, y->data, s->vx.c, s->vy.cp);
}

void dt_cpu_pad_channels_backward(dt_op *op, const dt_tensor *dy, dt_tensor *dx) {
  dt_cpu_simple *s = (dt_cpu_simple *)op;
  dt_cpu_check_tensor(dy, s->y, "pad_channels_backward dy");
  dt_cpu_check_tensor(dx, s->x, "pad_channels_backward dx");
  dt_cpu_copy_channels(&s->vy, dy->data, 0, &s->vx, dx->data, 0, s->vx.c);
  dt_cpu_zero_channels(&s->vx, dx->data, s->vx.c, s->vx.cp);
}

/* ---- spatial shift ---- */

dt_op *dt_cpu_shift_create(dt_backend *bep, dt_shape shape, const dt_layout *x, int sy, int sx) {
  dt_cpu_simple *s = dt_cpu_simple_new(bep, shape, x, "shift_create");
  s->sy = sy;
  s->sx = sx;
  return &s->base;
}

/* One channel plane (from element base) of a non-dense layout; es is a constant at each call
 * (see shift_run) and the stores are typed, as in cpu_view.c. */
static inline void shift_plane(int es, const dt_cpu_view *v, const void *x, void *y, long base,
                               int sy, int sx) {
  const int H = v->h, W = v->w;
  const long sh = v->sh, sw = v->sw;
  for (int i = 0; i < H; i++)
    for (int j = 0; j < W; j++) {
      const int si = i + sy, sj = j + sx;
      const long o = base + i * sh + j * sw;
      const bool in = si >= 0 && si < H && sj >= 0 && sj < W;
      if (es == 2)
        ((uint16_t *)y)[o] = in ? ((const uint16_t *)x)[base + si * sh + sj * sw] : 0;
      else
        ((float *)y)[o] = in ? ((const float *)x)[base + si * sh + sj * sw] : 0.0f;
    }
}

/* y[i, j] = x[i + sy, j + sx] (0 outside) for every (n, c), padding lanes included (they
 * move zeros). In a dense layout a row of one channel block is W b contiguous elements, so each
 * output row is one shifted copy plus zero fill. Bit patterns of v->es bytes move unchanged. */
static void shift_run(const dt_cpu_view *v, const void *xp, void *yp, int sy, int sx) {
  const int H = v->h, W = v->w, b = v->b, ncb = v->cp / v->b, es = v->es;
  const char *x = xp;
  char *y = yp;
  if (!dt_cpu_view_dense(v)) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < v->n; n++)
      for (int c = 0; c < v->c; c++) {
        const long base = dt_cpu_view_off(v, n, c, 0, 0);
        if (es == 2)
          shift_plane(2, v, x, y, base, sy, sx);
        else
          shift_plane(4, v, x, y, base, sy, sx);
      }
    return;
  }
  const int j0 = DT_MAX(0, -sx), j1 = DT_MIN(W, W - sx); /* output columns with a source */
  const size_t px = (size_t)es * b;                        /* bytes of one pixel's lanes */
#pragma omp parallel for collapse(2) schedule(static)
  for (int n = 0; n < v->n; n++)
    for (int cb = 0; cb < ncb; cb++) {
      const long base = n * v->sn + (long)cb * v->scb;
      for (int i = 0; i < H; i++) {
        char *yr = y + (base + (long)i * W * b) * es;
        const int si = i + sy;
        if (si < 0 || si >= H || j1 <= j0) {
          memset(yr, 0, px * W);
          continue;
        }
        const char *xr = x + (base + (long)si * W * b) * es;
        memset(yr, 0, px * j0);
        memcpy(yr + px * j0, xr + px * (j0 + sx), px * (j1 - j0));
        memset(yr + px * j1, 0, px * (W - j1));
      }
    }
}

void dt_cpu_shift_forward(dt_op *op, const dt_tensor *x, dt_tensor *y) {
  dt_cpu_simple *s = (dt_cpu_simple *)op;
  dt_cpu_check_tensor(x, s->x, "shift_forward x");
  dt_cpu_check_tensor(y, s->x, "shift_forward y");
  shift_run(&s->vx, x->data, y->data, s->sy, s->sx);
}

void dt_cpu_shift_backward(dt_op *op, const dt_tensor *dy, dt_tensor *dx) {
  dt_cpu_simple *s = (dt_cpu_simple *)op;
  dt_cpu_check_tensor(dy, s->x, "shift_backward dy");
  dt_cpu_check_tensor(dx, s->x, "shift_backward dx");
  shift_run(&s->vx, dy->data, dx->data, -s->sy, -s->sx);
}
