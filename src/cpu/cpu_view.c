/* cpu_view.c: layout views and the plain-loop op of the CPU backend (cpu_internal.h): a
 * dt_cpu_view describes where element (n, c, h, w) of an NCHW, NHWC or nChw<b>c buffer lives,
 * and the channel copies and zero fills here are the loops that concatenation and channel
 * padding run on it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_internal.h"

/* ---- layout views ---- */


dt_cpu_view dt_cpu_view_of(const dt_layout *l, const char *what) {
  const dnnl_memory_desc_t *md = &l->md;
  const dnnl_blocking_desc_t *bd = &md->format_desc.blocking;
  if (md->ndims != 4 || md->format_kind != dnnl_blocked || md->offset0 != 0 ||
      !(bd->inner_nblks == 0 || (bd->inner_nblks == 1 && bd->inner_idxs[0] == 1)))
    DT_FATAL("%s: unsupported tensor layout (only NCHW, NHWC and nChw<b>c)", what);
  dt_cpu_view v;
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


/* The layout of shape s with x's channel blocking (NCHW / NHWC / nChw<b>c). */
const dt_layout *dt_cpu_view_like(dt_cpu_backend *be, const dt_cpu_view *x, dt_shape s) {
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
bool dt_cpu_view_dense(const dt_cpu_view *v) { return v->sw == v->b && v->sh == (long)v->w * v->b; }

/* dst channels [d0, d0 + nc) = src channels [s0, s0 + nc), all N, H, W. For a dense dst, the
 * work is one (n, dst channel block) at a time, writing each pixel's lanes contiguously and
 * reading the source channels of those lanes (precomputed offsets), so both sides stream
 * through memory whatever the two blockings and the offset within a block. */
void dt_cpu_copy_channels(const dt_cpu_view *sv, const float *src, int s0, const dt_cpu_view *dv,
                          float *dst, int d0, int nc) {
  if (nc <= 0) return;
  const int H = dv->h, W = dv->w, hw = H * W;
  if (!dt_cpu_view_dense(dv)) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < dv->n; n++)
      for (int c = 0; c < nc; c++) {
        const float *sp = src + dt_cpu_view_off(sv, n, s0 + c, 0, 0);
        float *dp = dst + dt_cpu_view_off(dv, n, d0 + c, 0, 0);
        for (int h = 0; h < H; h++)
          for (int w = 0; w < W; w++) dp[h * dv->sh + w * dv->sw] = sp[h * sv->sh + w * sv->sw];
      }
    return;
  }
  const int b = dv->b, cb0 = d0 / b, cb1 = (d0 + nc - 1) / b;
  const bool s_dense = dt_cpu_view_dense(sv);
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
void dt_cpu_zero_channels(const dt_cpu_view *dv, float *dst, int c0, int c1) {
  if (c1 <= c0) return;
  const int H = dv->h, W = dv->w, hw = H * W;
  if (!dt_cpu_view_dense(dv)) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < dv->n; n++)
      for (int c = c0; c < c1; c++) {
        float *dp = dst + dt_cpu_view_off(dv, n, c, 0, 0);
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


static void simple_release(dt_op *op) {
  dt_cpu_simple *s = (dt_cpu_simple *)op;
  free(s->buf);
  free(s->s_buf);
  dt_cpu_reorder_free(&s->s_re);
  dt_cpu_prim_free(&s->mul);
  dt_cpu_mem_free(&s->m_x);
  dt_cpu_mem_free(&s->m_s);
  dt_cpu_mem_free(&s->m_y);
}

dt_cpu_simple *dt_cpu_simple_new(dt_backend *bep, dt_shape shape, const dt_layout *x,
                              const char *what) {
  dt_cpu_simple *s = dt_xcalloc(1, sizeof *s);
  dt_cpu_op_register(dt_cpu_be(bep), &s->base, simple_release);
  s->x = s->y = x;
  s->vx = s->vy = dt_cpu_view_of(x, what);
  if (s->vx.n != shape.n || s->vx.c != shape.c || s->vx.h != shape.h || s->vx.w != shape.w)
    DT_FATAL("%s: layout does not match (%d, %d, %d, %d)", what, shape.n, shape.c, shape.h,
             shape.w);
  return s;
}
