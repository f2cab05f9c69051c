/* cpu_view.c: layout views and the plain-loop op of the CPU backend (cpu_internal.h): a
 * dt_cpu_view describes where element (n, c, h, w) of an NCHW, NHWC or nChw<b>c buffer lives,
 * and the channel copies and zero fills here are the loops that concatenation and channel
 * padding run on it, for fp32 and bf16 elements alike. */
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
  if (md->data_type != dnnl_f32 && md->data_type != dnnl_bf16)
    DT_FATAL("%s: unsupported element type %s (only f32 and bf16)", what,
             dnnl_dt2str(md->data_type));
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
  v.dt = md->data_type;
  v.es = v.dt == dnnl_bf16 ? 2 : 4;
  v.total = dnnl_memory_desc_get_size(md) / (size_t)v.es;
  if (v.cp % v.b != 0 || (size_t)v.sn * (size_t)v.n != v.total)
    DT_FATAL("%s: unsupported tensor layout (batch not outermost)", what);
  return v;
}


/* The layout of shape s with x's channel blocking (NCHW / NHWC / nChw<b>c) and element type. */
const dt_layout *dt_cpu_view_like(dt_cpu_backend *be, const dt_cpu_view *x, dt_shape s) {
  dnnl_dims_t dims = {s.n, s.c, s.h, s.w};
  dnnl_format_tag_t tag = dnnl_nchw;
  if (x->b == 8)
    tag = dnnl_nChw8c;
  else if (x->b == 16)
    tag = dnnl_nChw16c;
  else if (x->c > 1 && x->sw == x->c && x->scb == 1)
    tag = dnnl_nhwc;
  dnnl_memory_desc_t md;
  DT_DNNL_CHECK(dnnl_memory_desc_init_by_tag(&md, 4, dims, x->dt, tag));
  return dt_cpu_layout_intern(be, &md);
}

/* True when the pixels of one (n, channel block) are one contiguous run of H W b elements
 * (NCHW, nChw<b>c); NHWC is not. */
bool dt_cpu_view_dense(const dt_cpu_view *v) { return v->sw == v->b && v->sh == (long)v->w * v->b; }

/* The element loops below move bit patterns of es bytes (2 or 4: both sides have one type, so
 * nothing is rounded). Each is called with a constant es, so a move is one load and store; the
 * stores are typed (uint16_t, float) so that the compiler knows they do not change the views'
 * strides and keeps those in registers. */
static inline void move_elem(int es, void *d, long doff, const void *s, long soff) {
  if (es == 2)
    ((uint16_t *)d)[doff] = ((const uint16_t *)s)[soff];
  else
    ((float *)d)[doff] = ((const float *)s)[soff];
}

static inline void zero_elem(int es, void *d, long doff) {
  if (es == 2)
    ((uint16_t *)d)[doff] = 0;
  else
    ((float *)d)[doff] = 0.0f;
}

/* One channel's H W elements: src from element so, dst from element dof. */
static inline void copy_plane(int es, const dt_cpu_view *sv, const void *src, long so,
                              const dt_cpu_view *dv, void *dst, long dof) {
  const int H = dv->h, W = dv->w;
  const long ssh = sv->sh, ssw = sv->sw, dsh = dv->sh, dsw = dv->sw;
  for (int h = 0; h < H; h++)
    for (int w = 0; w < W; w++) move_elem(es, dst, dof + h * dsh + w * dsw, src, so + h * ssh + w * ssw);
}

/* Lanes [l0, l1) of the H W pixels of one dense dst channel block (from element dof), from the
 * source elements at soff[l] past each pixel of sample n's src (from element so). */
static inline void copy_lanes(int es, const dt_cpu_view *sv, const void *src, long so,
                              const long *soff, const dt_cpu_view *dv, void *dst, long dof, int l0,
                              int l1) {
  const int H = dv->h, W = dv->w, b = dv->b;
  const long ssh = sv->sh, ssw = sv->sw;
  for (int h = 0; h < H; h++)
    for (int w = 0; w < W; w++) {
      const long sp = so + h * ssh + w * ssw, q = dof + ((long)h * W + w) * b;
      for (int l = l0; l < l1; l++) move_elem(es, dst, q + l, src, sp + soff[l]);
    }
}

/* One channel's H W elements of dst, from element dof, = 0. */
static inline void zero_plane(int es, const dt_cpu_view *dv, void *dst, long dof) {
  const int H = dv->h, W = dv->w;
  const long dsh = dv->sh, dsw = dv->sw;
  for (int h = 0; h < H; h++)
    for (int w = 0; w < W; w++) zero_elem(es, dst, dof + h * dsh + w * dsw);
}

/* dst channels [d0, d0 + nc) = src channels [s0, s0 + nc), all N, H, W. For a dense dst, the
 * work is one (n, dst channel block) at a time, writing each pixel's lanes contiguously and
 * reading the source channels of those lanes (precomputed offsets), so both sides stream
 * through memory whatever the two blockings and the offset within a block. */
void dt_cpu_copy_channels(const dt_cpu_view *sv, const void *src, int s0, const dt_cpu_view *dv,
                          void *dst, int d0, int nc) {
  if (nc <= 0) return;
  if (sv->dt != dv->dt) {
    /* Two element types (a concatenation of an fp32 and a 16-bit tensor, and its backward):
     * converted element by element, rounded once where dst is 16-bit. Rare in a model (in
     * native 16-bit mode only the image batch and the logits are fp32), so one plain loop. */
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < dv->n; n++)
      for (int c = 0; c < nc; c++) {
        const long so = dt_cpu_view_off(sv, n, s0 + c, 0, 0), dof = dt_cpu_view_off(dv, n, d0 + c, 0, 0);
        for (int h = 0; h < dv->h; h++)
          for (int w = 0; w < dv->w; w++)
            dt_cpu_view_store(dv, dst, dof + h * dv->sh + w * dv->sw,
                              dt_cpu_view_load(sv, src, so + h * sv->sh + w * sv->sw));
      }
    return;
  }
  const int hw = dv->h * dv->w, es = dv->es;
  const char *sb = src;
  char *db = dst;
  if (!dt_cpu_view_dense(dv)) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < dv->n; n++)
      for (int c = 0; c < nc; c++) {
        const long so = dt_cpu_view_off(sv, n, s0 + c, 0, 0), dof = dt_cpu_view_off(dv, n, d0 + c, 0, 0);
        if (es == 2)
          copy_plane(2, sv, src, so, dv, dst, dof);
        else
          copy_plane(4, sv, src, so, dv, dst, dof);
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
      const char *sn = sb + n * sv->sn * es;
      char *dp = db + (n * dv->sn + (long)cb * dv->scb) * es;
      if (run && l1 - l0 == b) {
        memcpy(dp, sn + soff[l0] * es, (size_t)es * hw * b);
      } else if (run) {
        for (long p = 0; p < hw; p++)
          memcpy(dp + (p * b + l0) * es, sn + (soff[l0] + p * b) * es, (size_t)es * (l1 - l0));
      } else if (es == 2) {
        copy_lanes(2, sv, src, n * sv->sn, soff, dv, dst, n * dv->sn + (long)cb * dv->scb, l0, l1);
      } else {
        copy_lanes(4, sv, src, n * sv->sn, soff, dv, dst, n * dv->sn + (long)cb * dv->scb, l0, l1);
      }
    }
}

/* dst channels [c0, c1) = 0 (c1 may reach the padded channel count). Zero bits are +0 in both
 * element types. */
void dt_cpu_zero_channels(const dt_cpu_view *dv, void *dst, int c0, int c1) {
  if (c1 <= c0) return;
  const int hw = dv->h * dv->w, es = dv->es;
  char *db = dst;
  if (!dt_cpu_view_dense(dv)) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < dv->n; n++)
      for (int c = c0; c < c1; c++) {
        if (es == 2)
          zero_plane(2, dv, dst, dt_cpu_view_off(dv, n, c, 0, 0));
        else
          zero_plane(4, dv, dst, dt_cpu_view_off(dv, n, c, 0, 0));
      }
    return;
  }
  const int b = dv->b, cb0 = c0 / b, cb1 = (c1 - 1) / b;
#pragma omp parallel for collapse(2) schedule(static)
  for (int n = 0; n < dv->n; n++)
    for (int cb = cb0; cb <= cb1; cb++) {
      const int l0 = cb == cb0 ? c0 % b : 0, l1 = cb == cb1 ? (c1 - 1) % b + 1 : b;
      char *dp = db + (n * dv->sn + (long)cb * dv->scb) * es;
      if (l1 - l0 == b) {
        memset(dp, 0, (size_t)es * hw * b);
      } else {
        for (long p = 0; p < hw; p++) memset(dp + (p * b + l0) * es, 0, (size_t)es * (l1 - l0));
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
