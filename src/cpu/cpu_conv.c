/* cpu_conv.c: convolution on oneDNN. The forward primitive takes its input in the layout it
 * is given and writes its output in the backend's blocked activation layout (nChw8c on AVX2,
 * nChw16c on AVX-512; dt_cpu_act_block) unless oneDNN is only fast in another one; backward-
 * data and backward-weights use the forward's layouts for the gradients, so activations are
 * normally never reordered. Weights stay plain in the caller's arrays, OIHW (goihw with groups)
 * or, in the backend's KRSC order, ohwi (gohwi), and are reordered into each primitive's layout
 * on every call (they are small); weight gradients are reordered back.
 *
 * The exception, "staging": oneDNN's jit kernels reject some layout combinations and it then
 * falls back to its reference code (plain C++ loops, 20-100x slower). Seen on oneDNN 2.6:
 *   - AVX-512, fewer than 16 channels in nChw16c (ResNet-preact with 8 initial channels, the
 *     4-channel bottlenecks of a narrow bottleneck net): forward and backward-weights are ref;
 *     they have jit kernels in nChw8c (AVX2 code) or NHWC (brgconv);
 *   - AVX2, 4 channels in nChw8c: forward is ref;
 *   - AVX2, 2x2 images of 512 channels (VGG's last stage) in nChw8c: backward-weights is ref;
 *     gemm runs it in NCHW;
 *   - a plain 1-channel image batch on AVX2: backward-weights wants a blocked input.
 * For such a pass (each of forward, backward-data, backward-weights on its own), conv_pass_create
 * tries other activation layouts (conv_alts) and takes the first that has a real kernel; the
 * pass then reorders its activation inputs once per call into op-owned buffers and its output
 * back (with a sum post-op for a forward that adds into a residual). The published layouts,
 * and so the rest of the net, stay as they were.
 *
 * Native 16-bit mode (the backend's act_dt bf16 / fp16, on CPUs with the instructions): the
 * activations x, y and their gradients are 16-bit in the op's layouts and the primitives are
 * oneDNN's 16-bit ones with fp32 accumulation; weights are converted from the fp32 plain
 * array by the weight reorder each pass already runs, and backward-weights writes fp32 weight
 * gradients. An fp32 input (the graph's image batch in layout_plain) is staged: every pass
 * that reads or writes it reorders it into (or from) an op-owned 16-bit buffer, a tiny tensor
 * of a few channels.
 *
 * Emulated reduced precision (set_precision bf16 / fp16 where the CPU has no 16-bit
 * instructions): each pass rounds its two inputs
 * (forward x and w, backward-data dy and w, backward-weights x and dy) to the format and runs
 * the same fp32 primitive, so products are exact and sums fp32 as on tensor cores; its result
 * (y, dx, dw) is rounded to the format too, as the CUDA backend's 16-bit convolutions store
 * it, and an accumulating forward adds the rounded result to y in fp32. Rounding is
 * elementwise and commutes with reorders of f32, so it applies in whatever layout the operand
 * is in: in place in the op's own copies (staged activations, reordered weights) and outputs,
 * otherwise into the backend's shared buffers (round_buf: 0 and 1 inputs, 2 the result of an
 * accumulating forward). The caller's input arrays are never written; an fp32 op takes none
 * of these paths. A Winograd pass (AVX-512, conv_winograd) multiplies
 * transforms of the rounded operands, which carry fp32 rounding errors of their own: around
 * 1e-6 relative, against up to 2^-9 (bf16) and 2^-12 (fp16) from rounding each operand. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_internal.h"
#include "precision.h"

typedef enum { CONV_FWD, CONV_BWD_DATA, CONV_BWD_WEIGHTS } conv_kind;

/* One activation side of a pass that runs in another layout than the op's: the reorder from
 * the op's layout to the pass's (inputs: x, dy) or back (outputs: y, dx), the op's buffer in
 * the pass's layout and a memory object on it. */
typedef struct {
  bool on;
  dt_cpu_reorder re;
  float *buf;
  size_t n; /* floats in buf */
  dnnl_memory_t m;
} conv_stage;

/* A primitive with its activation staging: x side (src, or diff_src for backward-data) and
 * y side (dst, or diff_dst for the backward passes). */
typedef struct {
  dt_cpu_prim prim;
  conv_stage x, y;
} conv_pass;

typedef struct {
  dt_op base;
  dt_conv_params p;
  const dt_layout *x, *y;  /* (N, C, H, W) and (N, K, P, Q) */
  dnnl_dims_t strides, pad;
  dnnl_alg_kind_t alg[3];  /* per conv_kind: direct, or Winograd (conv_winograd) */
  conv_pass fwd;           /* y = conv(x, w) */
  conv_pass fwd_acc;       /* y += conv(x, w): a sum post-op (unused when acc_reorder) */
  /* y += conv(x, w) as fwd into its y staging buffer (or acc_buf) and a reorder with a sum
   * post-op into y: used when the forward is staged or the sum post-op has no fast kernel. */
  bool acc_reorder;
  dt_cpu_reorder acc;
  float *acc_buf;
  dnnl_memory_t m_acc;
  conv_pass bwd_data;      /* only with need_dx */
  conv_pass bwd_weights;
  /* Weight reorders: plain -> forward layout, plain -> backward-data layout, and the weight
   * gradient's layout -> plain; each with the op's buffer for the non-plain side. */
  dt_cpu_reorder w_fwd, w_bwd, dw;
  float *w_fwd_buf, *w_bwd_buf, *dw_buf;
  /* Reduced precision (the backend's when the op was created) and the float counts the
   * roundings cover: x and y in the op's layouts (padding included), the plain weights and
   * the reordered weight buffers. */
  dt_precision prec;
  size_t x_n, y_n, w_n, w_fwd_n, w_bwd_n;
  /* Memory objects in the op's layouts, pointed at the caller's buffers on each call. */
  dnnl_memory_t m_x, m_y, m_w_fwd, m_w_bwd, m_dw;
} cpu_conv;

static void stage_free(conv_stage *s) {
  dt_cpu_reorder_free(&s->re);
  free(s->buf);
  dt_cpu_mem_free(&s->m);
}

static void pass_free(conv_pass *p) {
  dt_cpu_prim_free(&p->prim);
  stage_free(&p->x);
  stage_free(&p->y);
}

static void conv_release(dt_op *op) {
  cpu_conv *c = (cpu_conv *)op;
  pass_free(&c->fwd);
  pass_free(&c->fwd_acc);
  pass_free(&c->bwd_data);
  pass_free(&c->bwd_weights);
  dt_cpu_reorder_free(&c->acc);
  free(c->acc_buf);
  dt_cpu_mem_free(&c->m_acc);
  dt_cpu_reorder_free(&c->w_fwd);
  dt_cpu_reorder_free(&c->w_bwd);
  dt_cpu_reorder_free(&c->dw);
  free(c->w_fwd_buf);
  free(c->w_bwd_buf);
  free(c->dw_buf);
  dt_cpu_mem_free(&c->m_x);
  dt_cpu_mem_free(&c->m_y);
  dt_cpu_mem_free(&c->m_w_fwd);
  dt_cpu_mem_free(&c->m_w_bwd);
  dt_cpu_mem_free(&c->m_dw);
}

static float *conv_buf(const dnnl_memory_desc_t *md) {
  size_t bytes = dnnl_memory_desc_get_size(md);
  float *p = dt_xaligned(bytes);
  memset(p, 0, bytes);
  return p;
}

/* The op's buffer for a non-plain weight layout (NULL when the plain array is used). */
static float *conv_wbuf(const dt_cpu_reorder *r, const dnnl_memory_desc_t *md) {
  return r->same ? NULL : conv_buf(md);
}

static void conv_desc(const cpu_conv *c, conv_kind kind, dnnl_convolution_desc_t *d,
                      const dnnl_memory_desc_t *x, const dnnl_memory_desc_t *w,
                      const dnnl_memory_desc_t *y) {
  const dnnl_alg_kind_t alg = c->alg[kind];
  if (kind == CONV_FWD)
    DT_DNNL_CHECK(dnnl_convolution_forward_desc_init(d, dnnl_forward_training, alg, x, w, NULL, y,
                                                     c->strides, c->pad, c->pad));
  else if (kind == CONV_BWD_DATA)
    DT_DNNL_CHECK(dnnl_convolution_backward_data_desc_init(d, alg, x, w, y, c->strides, c->pad,
                                                           c->pad));
  else
    DT_DNNL_CHECK(dnnl_convolution_backward_weights_desc_init(d, alg, x, w, NULL, y, c->strides,
                                                              c->pad, c->pad));
}

/* Whether pass `kind` should try Winograd F(4x4, 3x3) (oneDNN's jit_wino_4x3, AVX-512 fp32
 * only; elsewhere its creation fails and the pass stays direct), for 3x3 stride-1 pad-1
 * ungrouped fp32 convolutions. Both algorithms work on channels padded to 16, so the rule
 * looks at padded counts. Measured against the direct kernel (oneDNN 2.6, AVX-512, 1 thread):
 *   - batch 64, 8x8 to 32x32 images: forward and backward-data 1.1-1.9x faster from 32
 *     padded input and output channels on, slower at 16 (DenseNet's 12-channel outputs);
 *     backward-weights 1.1-1.6x faster from 64 on, 0.75-0.9x below;
 *   - few output pixels (batch 4 of 14x14 or 7x7: 0.5-0.85x): the per-call weight transform
 *     and the partial 4x4 tiles outweigh the multiplications saved; batch 8 of 8x8 (512
 *     pixels) already gains 1.3x. Hence at least 1024 output pixels per channel.
 * Results differ from direct by rounding (relative 1e-6 of the largest output). A fixed rule
 * rather than timing at creation: a run must pick the same kernels every time (resume,
 * comparisons between runs). */
static bool conv_winograd(const dt_conv_params *p, conv_kind kind, dnnl_data_type_t dt) {
  const int g = p->groups > 0 ? p->groups : 1;
  if (dt != dnnl_f32) return false;
  if (g != 1 || p->r != 3 || p->s != 3 || p->stride != 1 || p->pad != 1) return false;
  if ((long)p->n * p->h * p->w < 1024) return false; /* stride 1, pad 1: P Q = H W */
  const int cp = (p->c + 15) / 16 * 16, kp = (p->k + 15) / 16 * 16;
  return DT_MIN(cp, kp) >= (kind == CONV_BWD_WEIGHTS ? 64 : 32);
}

/* Activation layouts a pass tries when the op's own give oneDNN's reference code, in order;
 * CONV_OWN keeps the op's layout on that side, format_tag_any lets oneDNN choose. */
#define CONV_OWN dnnl_format_tag_undef
static const dnnl_format_tag_t conv_alts[][2] = {
    {dnnl_format_tag_any, CONV_OWN},            /* restage the input only */
    {dnnl_format_tag_any, dnnl_format_tag_any}, /* oneDNN's favourite for this shape */
    {dnnl_nhwc, dnnl_nhwc},                     /* brgconv: any channel count on AVX-512 */
    {dnnl_nChw8c, dnnl_nChw8c},                 /* AVX2 kernels: 8-channel blocks */
    {dnnl_nChw16c, dnnl_nChw16c},
    {dnnl_nchw, dnnl_nchw},                     /* gemm */
};

static dnnl_memory_desc_t conv_alt_md(const dnnl_memory_desc_t *own, dnnl_format_tag_t tag) {
  return tag == CONV_OWN ? *own : dt_cpu_md_dt(4, own->dims, own->data_type, tag);
}

/* Stage one side when the pass's descriptor `run` differs from the op's `own`: inputs reorder
 * own -> run before the primitive, outputs run -> own after it (a forward that adds into a
 * residual uses the op's `acc` reorder instead). */
static void stage_init(dt_cpu_backend *be, conv_stage *s, const dnnl_memory_desc_t *own,
                       const dnnl_memory_desc_t *run, bool input, const char *what) {
  memset(s, 0, sizeof *s);
  s->on = !dnnl_memory_desc_equal(own, run);
  if (!s->on) return;
  if (input) dt_cpu_reorder_init(be, &s->re, own, run, what);
  else dt_cpu_reorder_init(be, &s->re, run, own, what);
  s->buf = conv_buf(run);
  s->n = dnnl_memory_desc_get_size(run) / sizeof(float);
  s->m = dt_cpu_mem(be, run);
}

/* Stage the x side of pass p, created for x descriptor xmd, when that differs from the op's
 * own x layout xown (a 16-bit pass on an fp32 input). */
static void conv_pass_stage_x(cpu_conv *c, conv_pass *p, conv_kind kind,
                              const dnnl_memory_desc_t *xown, const char *what) {
  dnnl_query_t xq = kind == CONV_BWD_DATA ? dnnl_query_diff_src_md : dnnl_query_src_md;
  dnnl_memory_desc_t xr = dt_cpu_prim_md(&p->prim, xq, 0);
  stage_init(c->base.be, &p->x, xown, &xr, kind != CONV_BWD_DATA, what);
}

/* Create pass `kind` for the activation layouts xmd, ymd and weights w (usually any); xown is
 * the op's x layout, staged when xmd differs from it. When that is oneDNN's reference code,
 * the first alternative of conv_alts with a real kernel replaces it, staged (see the file
 * comment). A pass that no alternative speeds up keeps the reference code; one that oneDNN
 * cannot create at all is fatal. */
static void conv_pass_create(cpu_conv *c, conv_pass *p, conv_kind kind,
                             const dnnl_memory_desc_t *xown, const dnnl_memory_desc_t *xmd,
                             const dnnl_memory_desc_t *ymd, const dnnl_memory_desc_t *w,
                             const_dnnl_post_ops_t po, const_dnnl_primitive_desc_t hint,
                             const char *what) {
  dt_cpu_backend *be = c->base.be;
  memset(p, 0, sizeof *p);
  dnnl_convolution_desc_t d;
  if (c->alg[kind] == dnnl_convolution_winograd) {
    conv_desc(c, kind, &d, xmd, w, ymd);
    if (dt_cpu_prim_try_create(be, &p->prim, &d, po, hint)) {
      if (!dt_cpu_prim_is_ref(&p->prim)) {
        conv_pass_stage_x(c, p, kind, xown, what);
        return;
      }
      dt_cpu_prim_free(&p->prim);
    }
    c->alg[kind] = dnnl_convolution_direct;
  }
  conv_desc(c, kind, &d, xmd, w, ymd);
  bool have = dt_cpu_prim_try_create(be, &p->prim, &d, po, hint);
  if (have && !dt_cpu_prim_is_ref(&p->prim)) {
    conv_pass_stage_x(c, p, kind, xown, what);
    return;
  }
  for (size_t i = 0; i < DT_ARRAY_LEN(conv_alts); i++) {
    dnnl_memory_desc_t xa = conv_alt_md(xmd, conv_alts[i][0]);
    dnnl_memory_desc_t ya = conv_alt_md(ymd, conv_alts[i][1]);
    dt_cpu_prim alt = {0};
    conv_desc(c, kind, &d, &xa, w, &ya);
    if (!dt_cpu_prim_try_create(be, &alt, &d, po, hint)) continue;
    if (dt_cpu_prim_is_ref(&alt)) {
      dt_cpu_prim_free(&alt);
      continue;
    }
    if (have) dt_cpu_prim_free(&p->prim);
    p->prim = alt;
    dnnl_query_t xq = kind == CONV_BWD_DATA ? dnnl_query_diff_src_md : dnnl_query_src_md;
    dnnl_query_t yq = kind == CONV_FWD ? dnnl_query_dst_md : dnnl_query_diff_dst_md;
    dnnl_memory_desc_t xr = dt_cpu_prim_md(&p->prim, xq, 0), yr = dt_cpu_prim_md(&p->prim, yq, 0);
    stage_init(be, &p->x, xown, &xr, kind != CONV_BWD_DATA, what);
    stage_init(be, &p->y, ymd, &yr, kind != CONV_FWD, what);
    return;
  }
  if (!have) DT_FATAL("oneDNN cannot create %s", what);
  conv_pass_stage_x(c, p, kind, xown, what);
}

/* Grow the backend's shared rounding buffer `slot` to at least `bytes` (at creation, so that
 * running an op allocates nothing). */
static void round_reserve(dt_cpu_backend *be, int slot, size_t bytes) {
  if (bytes <= be->round_bytes[slot]) return;
  free(be->round_buf[slot]);
  be->round_buf[slot] = dt_xaligned(bytes);
  be->round_bytes[slot] = bytes;
}

/* A reduced-precision op's input of n floats, rounded into the shared buffer `slot` (the
 * caller's array stays as it is: other ops read it in fp32). */
static const void *round_into(const cpu_conv *c, int slot, const void *data, size_t n) {
  float *dst = c->base.be->round_buf[slot];
  dt_round_array(c->prec, data, dst, n);
  return dst;
}

/* The memory object and buffer of one side of a pass for a call: the caller's tensor, or the
 * staging buffer (after reordering an input into it). A reduced-precision op rounds the input
 * in the staging buffer, or else into the shared buffer `slot`; n is the tensor's float count. */
static dnnl_memory_t side_in(const cpu_conv *c, conv_stage *s, dnnl_memory_t own,
                             const void *data, size_t n, int slot) {
  dt_cpu_backend *be = c->base.be;
  if (!s->on) {
    if (c->prec != DT_PRECISION_FP32) data = round_into(c, slot, data, n);
    dt_cpu_bind(be, own, data);
    return own;
  }
  dt_cpu_reorder_run(be, &s->re, data, s->buf);
  if (c->prec != DT_PRECISION_FP32) dt_round_array(c->prec, s->buf, s->buf, s->n);
  dt_cpu_bind(be, s->m, s->buf);
  return s->m;
}

/* The weights a pass reads: the caller's plain array, or the op's copy in the primitive's
 * layout (reorder r into buf of buf_n floats); rounded in reduced precision, in the copy or
 * into the shared buffer 1. */
static const void *weights_in(const cpu_conv *c, dt_cpu_reorder *r, float *buf,
                              size_t buf_n, const float *w) {
  if (r->same)
    return c->prec == DT_PRECISION_FP32 ? (const void *)w : round_into(c, 1, w, c->w_n);
  dt_cpu_reorder_run(c->base.be, r, w, buf);
  if (c->prec != DT_PRECISION_FP32) dt_round_array(c->prec, buf, buf, buf_n);
  return buf;
}

static dnnl_memory_t side_out(dt_cpu_backend *be, conv_stage *s, dnnl_memory_t own, void *data) {
  if (!s->on) {
    dt_cpu_bind(be, own, data);
    return own;
  }
  dt_cpu_bind(be, s->m, s->buf);
  return s->m;
}

dt_op *dt_cpu_conv_create(dt_backend *bep, const dt_conv_params *p, const dt_layout *x,
                          const dt_layout **y) {
  dt_cpu_backend *be = dt_cpu_be(bep);
  const dt_layout *want = *y; /* a layout the output must have (a residual's), or NULL */
  int g = p->groups > 0 ? p->groups : 1;
  if (p->c % g || p->k % g || p->stride < 1 || p->pad < 0)
    DT_FATAL("conv_create: bad parameters (C %d, K %d, groups %d, stride %d, pad %d)", p->c, p->k,
             g, p->stride, p->pad);
  int oh = (p->h + 2 * p->pad - p->r) / p->stride + 1;
  int ow = (p->w + 2 * p->pad - p->s) / p->stride + 1;
  if (oh < 1 || ow < 1) DT_FATAL("conv_create: empty output for input %dx%d", p->h, p->w);
  const dnnl_memory_desc_t *xmd = &x->md;
  if (xmd->ndims != 4 || xmd->dims[0] != p->n || xmd->dims[1] != p->c || xmd->dims[2] != p->h ||
      xmd->dims[3] != p->w)
    DT_FATAL("conv_create: input layout does not match (%d, %d, %d, %d)", p->n, p->c, p->h, p->w);

  char what[160];
  snprintf(what, sizeof what,
           "convolution x (%d, %d, %d, %d) w (%d, %d, %d, %d) stride %d pad %d groups %d", p->n,
           p->c, p->h, p->w, p->k, p->c / g, p->r, p->s, p->stride, p->pad, g);

  cpu_conv *c = dt_xcalloc(1, sizeof *c);
  dt_cpu_op_register(be, &c->base, conv_release);
  c->p = *p;
  c->p.groups = g;
  c->strides[0] = c->strides[1] = p->stride;
  c->pad[0] = c->pad[1] = p->pad;
  /* The element type of the activations: the backend's (16-bit in native mode). An input of
   * another type (the fp32 image batch) is staged into it: its passes run on xrun, oneDNN's
   * choice of layout for the converted copy. */
  const dnnl_data_type_t adt = be->act_dt;
  const dnnl_memory_desc_t xrun =
      xmd->data_type == adt ? *xmd : dt_cpu_md_dt(4, xmd->dims, adt, dnnl_format_tag_any);
  for (int k = 0; k < 3; k++)
    c->alg[k] = conv_winograd(&c->p, (conv_kind)k, adt) ? dnnl_convolution_winograd
                                                         : dnnl_convolution_direct;

  /* Plain weights: OIHW (K, C, R, S), or goihw (G, K/G, C/G, R, S) with groups; in the
   * backend's KRSC order (weights_krsc) ohwi / gohwi, the same dims stored (K, R, S, C/G). The
   * passes read them in the activations' type (w_any) and backward-weights writes fp32
   * (dw_any): the primitives' own weight layouts do not depend on the plain order, and the
   * reorders between them are exact, so both orders compute the same bits. */
  const bool krsc = be->base.weights_krsc;
  dnnl_memory_desc_t w_plain, w_any, dw_any, y_any;
  if (g == 1) {
    dnnl_dims_t wd = {p->k, p->c, p->r, p->s};
    w_plain = dt_cpu_md(4, wd, krsc ? dnnl_ohwi : dnnl_oihw);
    w_any = dt_cpu_md_dt(4, wd, adt, dnnl_format_tag_any);
    dw_any = dt_cpu_md(4, wd, dnnl_format_tag_any);
  } else {
    dnnl_dims_t wd = {g, p->k / g, p->c / g, p->r, p->s};
    w_plain = dt_cpu_md(5, wd, krsc ? dnnl_gohwi : dnnl_goihw);
    w_any = dt_cpu_md_dt(5, wd, adt, dnnl_format_tag_any);
    dw_any = dt_cpu_md(5, wd, dnnl_format_tag_any);
  }
  dnnl_dims_t yd = {p->n, p->k, oh, ow};
  y_any = dt_cpu_md_dt(4, yd, adt, dnnl_format_tag_any);
  if (want) {
    if (want->md.ndims != 4 || memcmp(want->md.dims, yd, sizeof(dnnl_dim_t) * 4) != 0 ||
        want->md.data_type != adt)
      DT_FATAL("conv_create: the requested output layout does not have the shape (%d, %d, %d, %d)",
               p->n, p->k, oh, ow);
    y_any = want->md;
  }

  /* The output layout: the residual's when given; else oneDNN's choice for this input, unless
   * that is not the backend's blocked layout. One activation layout across the net: oneDNN
   * picks NHWC or NCHW outputs for some shapes (3x3 convolutions of fewer than 16 channels),
   * which would then meet blocked tensors at a residual addition or a concatenation. Take the
   * blocked layout instead unless that is slower (oneDNN's reference code where the free
   * choice has a real kernel). A reference forward in the chosen layouts is staged below. */
  dnnl_memory_desc_t ymd = y_any;
  if (!want) {
    /* Probe with the direct algorithm: Winograd, if it applies, wants the same blocking. */
    const dnnl_alg_kind_t alg_fwd = c->alg[CONV_FWD];
    c->alg[CONV_FWD] = dnnl_convolution_direct;
    dnnl_convolution_desc_t d;
    dt_cpu_prim probe = {0};
    conv_desc(c, CONV_FWD, &d, &xrun, &w_any, &y_any);
    if (!dt_cpu_prim_try_create(be, &probe, &d, NULL, NULL))
      DT_FATAL("oneDNN cannot create %s forward", what);
    ymd = dt_cpu_prim_md(&probe, dnnl_query_dst_md, 0);
    const bool free_ref = dt_cpu_prim_is_ref(&probe);
    dt_cpu_prim_free(&probe);
    const int blk = dt_cpu_act_block(be);
    if (blk > 1 && dt_cpu_md_block(&ymd) != blk) {
      dnnl_memory_desc_t y_blk = dt_cpu_md_dt(4, yd, adt, blk == 16 ? dnnl_nChw16c : dnnl_nChw8c);
      conv_desc(c, CONV_FWD, &d, &xrun, &w_any, &y_blk);
      if (dt_cpu_prim_try_create(be, &probe, &d, NULL, NULL)) {
        if (!dt_cpu_prim_is_ref(&probe) || free_ref) ymd = y_blk;
        dt_cpu_prim_free(&probe);
      }
    }
    c->alg[CONV_FWD] = alg_fwd;
  }
  c->x = x;
  c->y = dt_cpu_layout_intern(be, &ymd);

  char fwhat[200];
  snprintf(fwhat, sizeof fwhat, "%s forward", what);
  conv_pass_create(c, &c->fwd, CONV_FWD, xmd, &xrun, &ymd, &w_any, NULL, NULL, fwhat);
  dnnl_memory_desc_t w_fwd = dt_cpu_prim_md(&c->fwd.prim, dnnl_query_weights_md, 0);

  /* The accumulating variant: the forward's layouts and weights with the residual summed into
   * y by a sum post-op; or, when the forward is staged or that has no fast kernel, the
   * forward into a buffer and a reorder that adds it into y. */
  dnnl_post_ops_t po;
  DT_DNNL_CHECK(dnnl_post_ops_create(&po));
  DT_DNNL_CHECK(dnnl_post_ops_append_sum(po, 1.0f));
  snprintf(fwhat, sizeof fwhat, "%s forward with residual sum", what);
  c->acc_reorder = c->fwd.x.on || c->fwd.y.on;
  if (!c->acc_reorder) {
    dnnl_convolution_desc_t d;
    conv_desc(c, CONV_FWD, &d, &xrun, &w_fwd, &ymd);
    bool have = dt_cpu_prim_try_create(be, &c->fwd_acc.prim, &d, po, NULL);
    if (!have && c->alg[CONV_FWD] != dnnl_convolution_direct) {
      /* Winograd without a sum post-op: the direct kernel reads the same weight layout. */
      const dnnl_alg_kind_t alg_fwd = c->alg[CONV_FWD];
      c->alg[CONV_FWD] = dnnl_convolution_direct;
      conv_desc(c, CONV_FWD, &d, &xrun, &w_fwd, &ymd);
      have = dt_cpu_prim_try_create(be, &c->fwd_acc.prim, &d, po, NULL);
      c->alg[CONV_FWD] = alg_fwd;
    }
    if (!have) DT_FATAL("oneDNN cannot create %s", fwhat);
    if (dt_cpu_prim_is_ref(&c->fwd_acc.prim)) {
      dt_cpu_prim_free(&c->fwd_acc.prim);
      c->acc_reorder = true;
    }
  }
  DT_DNNL_CHECK(dnnl_post_ops_destroy(po));
  if (c->acc_reorder) {
    dnnl_memory_desc_t yr = dt_cpu_prim_md(&c->fwd.prim, dnnl_query_dst_md, 0);
    dt_cpu_reorder_init_sum(be, &c->acc, &yr, &ymd, true, fwhat);
    if (!c->fwd.y.on) {
      c->acc_buf = conv_buf(&yr);
      c->m_acc = dt_cpu_mem(be, &yr);
    }
  }

  dt_cpu_reorder_init(be, &c->w_fwd, &w_plain, &w_fwd, fwhat);
  c->w_fwd_buf = conv_wbuf(&c->w_fwd, &w_fwd);
  c->w_fwd_n = dnnl_memory_desc_get_size(&w_fwd) / sizeof(float);
  c->m_x = dt_cpu_mem(be, xmd);
  c->m_y = dt_cpu_mem(be, &ymd);
  c->m_w_fwd = dt_cpu_mem(be, &w_fwd);

  if (p->need_dx) {
    snprintf(fwhat, sizeof fwhat, "%s backward data", what);
    conv_pass_create(c, &c->bwd_data, CONV_BWD_DATA, xmd, &xrun, &ymd, &w_any, NULL,
                     c->fwd.prim.pd, fwhat);
    dnnl_memory_desc_t w_bwd = dt_cpu_prim_md(&c->bwd_data.prim, dnnl_query_weights_md, 0);
    dt_cpu_reorder_init(be, &c->w_bwd, &w_plain, &w_bwd, fwhat);
    c->w_bwd_buf = conv_wbuf(&c->w_bwd, &w_bwd);
    c->w_bwd_n = dnnl_memory_desc_get_size(&w_bwd) / sizeof(float);
    c->m_w_bwd = dt_cpu_mem(be, &w_bwd);
  }

  snprintf(fwhat, sizeof fwhat, "%s backward weights", what);
  conv_pass_create(c, &c->bwd_weights, CONV_BWD_WEIGHTS, xmd, &xrun, &ymd, &dw_any, NULL,
                   c->fwd.prim.pd, fwhat);
  dnnl_memory_desc_t dw = dt_cpu_prim_md(&c->bwd_weights.prim, dnnl_query_diff_weights_md, 0);
  dt_cpu_reorder_init(be, &c->dw, &dw, &w_plain, fwhat);
  c->dw_buf = conv_wbuf(&c->dw, &dw);
  c->m_dw = dt_cpu_mem(be, &dw);

  /* Reduced precision: slot 0 holds a rounded activation input (x, or dy in backward-data),
   * slot 1 the other input of the pass (plain weights, or dy in backward-weights). */
  c->prec = dt_cpu_emulated(be) ? be->precision : DT_PRECISION_FP32;
  c->x_n = dnnl_memory_desc_get_size(xmd) / sizeof(float);
  c->y_n = dnnl_memory_desc_get_size(&ymd) / sizeof(float);
  c->w_n = dnnl_memory_desc_get_size(&w_plain) / sizeof(float);
  if (c->prec != DT_PRECISION_FP32) {
    round_reserve(be, 0, sizeof(float) * DT_MAX(c->x_n, c->y_n));
    round_reserve(be, 1, sizeof(float) * DT_MAX(c->w_n, c->y_n));
    round_reserve(be, 2, sizeof(float) * c->y_n);
  }

  *y = c->y;
  return &c->base;
}

/* A reduced-precision forward: the plain pass into y, or into the shared buffer 2 (in y's
 * layout) when accumulating; the result rounded, then added to y. */
static void conv_forward_rounded(cpu_conv *c, const dt_tensor *x, const void *wk, dt_tensor *y,
                                 bool accumulate) {
  dt_cpu_backend *be = c->base.be;
  float *out = accumulate ? be->round_buf[2] : y->data;
  dnnl_memory_t mx = side_in(c, &c->fwd.x, c->m_x, x->data, c->x_n, 0);
  dnnl_memory_t my = side_out(be, &c->fwd.y, c->m_y, out);
  dt_cpu_bind(be, c->m_w_fwd, wk);
  dnnl_exec_arg_t args[] = {
      {DNNL_ARG_SRC, mx}, {DNNL_ARG_WEIGHTS, c->m_w_fwd}, {DNNL_ARG_DST, my}};
  dt_cpu_prim_exec(be, &c->fwd.prim, 3, args);
  if (c->fwd.y.on) dt_cpu_reorder_run(be, &c->fwd.y.re, c->fwd.y.buf, out);
  dt_round_array(c->prec, out, out, c->y_n);
  if (accumulate) {
    float *dst = y->data;
    const size_t n = c->y_n;
#pragma omp parallel for simd if (n >= 65536) schedule(static)
    for (size_t i = 0; i < n; i++) dst[i] += out[i];
  }
}

void dt_cpu_conv_forward(dt_op *op, const dt_tensor *x, const float *w, dt_tensor *y,
                         bool accumulate) {
  cpu_conv *c = (cpu_conv *)op;
  dt_cpu_backend *be = op->be;
  dt_cpu_check_tensor(x, c->x, "conv_forward x");
  dt_cpu_check_tensor(y, c->y, "conv_forward y");
  const void *wk = weights_in(c, &c->w_fwd, c->w_fwd_buf, c->w_fwd_n, w);
  if (c->prec != DT_PRECISION_FP32) {
    conv_forward_rounded(c, x, wk, y, accumulate);
    return;
  }
  const bool via_reorder = accumulate && c->acc_reorder;
  conv_pass *pass = accumulate && !via_reorder ? &c->fwd_acc : &c->fwd;
  dnnl_memory_t mx = side_in(c, &c->fwd.x, c->m_x, x->data, c->x_n, 0);
  dnnl_memory_t my;
  if (via_reorder && !c->fwd.y.on) {
    dt_cpu_bind(be, c->m_acc, c->acc_buf);
    my = c->m_acc;
  } else {
    my = side_out(be, &c->fwd.y, c->m_y, y->data);
  }
  dt_cpu_bind(be, c->m_w_fwd, wk);
  dnnl_exec_arg_t args[] = {
      {DNNL_ARG_SRC, mx}, {DNNL_ARG_WEIGHTS, c->m_w_fwd}, {DNNL_ARG_DST, my}};
  dt_cpu_prim_exec(be, &pass->prim, 3, args);
  if (via_reorder)
    dt_cpu_reorder_run(be, &c->acc, c->fwd.y.on ? c->fwd.y.buf : c->acc_buf, y->data);
  else if (c->fwd.y.on)
    dt_cpu_reorder_run(be, &c->fwd.y.re, c->fwd.y.buf, y->data);
}

void dt_cpu_conv_backward_data(dt_op *op, const dt_tensor *dy, const float *w, dt_tensor *dx) {
  cpu_conv *c = (cpu_conv *)op;
  dt_cpu_backend *be = op->be;
  if (!c->p.need_dx) DT_FATAL("conv_backward_data on a convolution created without need_dx");
  dt_cpu_check_tensor(dy, c->y, "conv_backward_data dy");
  dt_cpu_check_tensor(dx, c->x, "conv_backward_data dx");
  const void *wk = weights_in(c, &c->w_bwd, c->w_bwd_buf, c->w_bwd_n, w);
  conv_pass *pass = &c->bwd_data;
  dnnl_memory_t mdy = side_in(c, &pass->y, c->m_y, dy->data, c->y_n, 0);
  dnnl_memory_t mdx = side_out(be, &pass->x, c->m_x, dx->data);
  dt_cpu_bind(be, c->m_w_bwd, wk);
  dnnl_exec_arg_t args[] = {
      {DNNL_ARG_DIFF_DST, mdy}, {DNNL_ARG_WEIGHTS, c->m_w_bwd}, {DNNL_ARG_DIFF_SRC, mdx}};
  dt_cpu_prim_exec(be, &pass->prim, 3, args);
  if (pass->x.on) dt_cpu_reorder_run(be, &pass->x.re, pass->x.buf, dx->data);
  if (c->prec != DT_PRECISION_FP32) dt_round_array(c->prec, dx->data, dx->data, c->x_n);
}

void dt_cpu_conv_backward_weights(dt_op *op, const dt_tensor *x, const dt_tensor *dy, float *dw) {
  cpu_conv *c = (cpu_conv *)op;
  dt_cpu_backend *be = op->be;
  dt_cpu_check_tensor(x, c->x, "conv_backward_weights x");
  dt_cpu_check_tensor(dy, c->y, "conv_backward_weights dy");
  conv_pass *pass = &c->bwd_weights;
  void *dwk = c->dw.same ? (void *)dw : (void *)c->dw_buf;
  dnnl_memory_t mx = side_in(c, &pass->x, c->m_x, x->data, c->x_n, 0);
  dnnl_memory_t mdy = side_in(c, &pass->y, c->m_y, dy->data, c->y_n, 1);
  dt_cpu_bind(be, c->m_dw, dwk);
  dnnl_exec_arg_t args[] = {
      {DNNL_ARG_SRC, mx}, {DNNL_ARG_DIFF_DST, mdy}, {DNNL_ARG_DIFF_WEIGHTS, c->m_dw}};
  dt_cpu_prim_exec(be, &pass->prim, 3, args);
  if (!c->dw.same) dt_cpu_reorder_run(be, &c->dw, c->dw_buf, dw);
  if (c->prec != DT_PRECISION_FP32) dt_round_array(c->prec, dw, dw, c->w_n);
}

const char *dt_cpu_conv_impl(dt_op *op, int pass) {
  cpu_conv *c = (cpu_conv *)op;
  const dt_cpu_prim *p = pass == 0   ? &c->fwd.prim
                         : pass == 1 ? &c->bwd_data.prim
                                     : &c->bwd_weights.prim;
  const char *impl = "";
  if (p->pd) DT_DNNL_CHECK(dnnl_primitive_desc_query(p->pd, dnnl_query_impl_info_str, 0, &impl));
  return impl;
}
