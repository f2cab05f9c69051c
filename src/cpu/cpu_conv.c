/* cpu_conv.c: convolution on oneDNN. The forward primitive takes its input in the layout it
 * is given and writes its output in the backend's blocked activation layout (nChw8c on AVX2,
 * nChw16c on AVX-512; dt_cpu_act_block) unless oneDNN is only fast in another one; backward-
 * data and backward-weights use the forward's layouts for the gradients, so activations are
 * never reordered. Weights
 * stay plain OIHW (goihw with groups) in the caller's arrays and are reordered into the
 * primitive's layout on every call (they are small); weight gradients are reordered back.
 *
 * One exception to "never reorder activations": when oneDNN has only its reference code for
 * a backward pass in the given input layout (a plain 1-channel input on AVX2: its fast
 * backward-weights kernel wants a blocked input, and the reference one is 100x slower), that
 * pass lets oneDNN pick the input layout and the op reorders between the two (in networks
 * this is the image batch, small). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_internal.h"

typedef struct {
  dt_op base;
  dt_conv_params p;
  const dt_layout *x, *y;  /* (N, C, H, W) and (N, K, P, Q) */
  dt_cpu_prim fwd;         /* y = conv(x, w) */
  dt_cpu_prim fwd_acc;     /* y += conv(x, w): the same with a sum post-op */
  dt_cpu_prim bwd_data;    /* only with need_dx */
  dt_cpu_prim bwd_weights;
  /* Weight reorders: plain -> forward layout, plain -> backward-data layout, and the weight
   * gradient's layout -> plain; each with the op's buffer for the non-plain side. */
  dt_cpu_reorder w_fwd, w_bwd, dw;
  float *w_fwd_buf, *w_bwd_buf, *dw_buf;
  /* Staging of the input for backward passes that need another layout (see above):
   * x -> backward-weights src layout, backward-data diff_src layout -> dx. */
  bool stage_x, stage_dx;
  dt_cpu_reorder x_stage, dx_stage;
  float *x_stage_buf, *dx_stage_buf;
  /* Memory objects, pointed at the caller's buffers on each call. */
  dnnl_memory_t m_x, m_y, m_w_fwd, m_w_bwd, m_dw, m_xs, m_dxs;
} cpu_conv;

static void conv_release(dt_op *op) {
  cpu_conv *c = (cpu_conv *)op;
  dt_cpu_prim_free(&c->fwd);
  dt_cpu_prim_free(&c->fwd_acc);
  dt_cpu_prim_free(&c->bwd_data);
  dt_cpu_prim_free(&c->bwd_weights);
  dt_cpu_reorder_free(&c->w_fwd);
  dt_cpu_reorder_free(&c->w_bwd);
  dt_cpu_reorder_free(&c->dw);
  free(c->w_fwd_buf);
  free(c->w_bwd_buf);
  free(c->dw_buf);
  dt_cpu_reorder_free(&c->x_stage);
  dt_cpu_reorder_free(&c->dx_stage);
  free(c->x_stage_buf);
  free(c->dx_stage_buf);
  dt_cpu_mem_free(&c->m_xs);
  dt_cpu_mem_free(&c->m_dxs);
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

/* If p (created with the exact input layout) is oneDNN's reference code, try again with
 * `any_desc` (the same op with the input layout left to oneDNN). Returns true and replaces
 * p when that gives a real kernel. */
static bool conv_try_faster(dt_cpu_backend *be, dt_cpu_prim *p, const void *any_desc,
                            const_dnnl_primitive_desc_t hint) {
  if (!dt_cpu_prim_is_ref(p)) return false;
  dt_cpu_prim alt = {0};
  if (!dt_cpu_prim_try_create(be, &alt, any_desc, NULL, hint)) return false;
  if (dt_cpu_prim_is_ref(&alt)) {
    dt_cpu_prim_free(&alt);
    return false;
  }
  dt_cpu_prim_free(p);
  *p = alt;
  return true;
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

  /* Plain weights: OIHW (K, C, R, S), or goihw (G, K/G, C/G, R, S) with groups. */
  dnnl_memory_desc_t w_plain, w_any, y_any;
  if (g == 1) {
    dnnl_dims_t wd = {p->k, p->c, p->r, p->s};
    w_plain = dt_cpu_md(4, wd, dnnl_oihw);
    w_any = dt_cpu_md(4, wd, dnnl_format_tag_any);
  } else {
    dnnl_dims_t wd = {g, p->k / g, p->c / g, p->r, p->s};
    w_plain = dt_cpu_md(5, wd, dnnl_goihw);
    w_any = dt_cpu_md(5, wd, dnnl_format_tag_any);
  }
  dnnl_dims_t yd = {p->n, p->k, oh, ow};
  y_any = dt_cpu_md(4, yd, dnnl_format_tag_any);
  if (want) {
    if (want->md.ndims != 4 || memcmp(want->md.dims, yd, sizeof(dnnl_dim_t) * 4) != 0)
      DT_FATAL("conv_create: the requested output layout does not have the shape (%d, %d, %d, %d)",
               p->n, p->k, oh, ow);
    y_any = want->md;
  }
  dnnl_dims_t strides = {p->stride, p->stride}, pad = {p->pad, p->pad};
  dnnl_memory_desc_t x_any = dt_cpu_md(4, xmd->dims, dnnl_format_tag_any);

  dnnl_convolution_desc_t d;
  DT_DNNL_CHECK(dnnl_convolution_forward_desc_init(&d, dnnl_forward_training,
                                                   dnnl_convolution_direct, xmd, &w_any, NULL,
                                                   &y_any, strides, pad, pad));
  char fwhat[200];
  snprintf(fwhat, sizeof fwhat, "%s forward", what);
  dt_cpu_prim_create(be, &c->fwd, &d, NULL, NULL, fwhat);
  /* One activation layout across the net: oneDNN picks NHWC or NCHW outputs for some shapes
   * (3x3 convolutions of fewer than 16 channels), which would then meet blocked tensors at a
   * residual addition or a concatenation. Take the backend's blocked layout instead unless
   * that is slower (oneDNN's reference code where the free choice has a real kernel). */
  const int blk = dt_cpu_act_block(be);
  dnnl_memory_desc_t y_free = dt_cpu_prim_md(&c->fwd, dnnl_query_dst_md, 0);
  if (!want && blk > 1 && dt_cpu_md_block(&y_free) != blk) {
    dnnl_memory_desc_t y_blk = dt_cpu_md(4, yd, blk == 16 ? dnnl_nChw16c : dnnl_nChw8c);
    dnnl_convolution_desc_t d_blk;
    DT_DNNL_CHECK(dnnl_convolution_forward_desc_init(&d_blk, dnnl_forward_training,
                                                     dnnl_convolution_direct, xmd, &w_any, NULL,
                                                     &y_blk, strides, pad, pad));
    dt_cpu_prim alt = {0};
    if (dt_cpu_prim_try_create(be, &alt, &d_blk, NULL, NULL)) {
      if (!dt_cpu_prim_is_ref(&alt) || dt_cpu_prim_is_ref(&c->fwd)) {
        dt_cpu_prim_free(&c->fwd);
        c->fwd = alt;
      } else {
        dt_cpu_prim_free(&alt);
      }
    }
  }
  dnnl_memory_desc_t w_fwd = dt_cpu_prim_md(&c->fwd, dnnl_query_weights_md, 0);
  dnnl_memory_desc_t ymd = dt_cpu_prim_md(&c->fwd, dnnl_query_dst_md, 0);
  c->x = x;
  c->y = dt_cpu_layout_intern(be, &ymd);

  /* The accumulating variant: the same layouts, with the residual summed into y. */
  dnnl_post_ops_t po;
  DT_DNNL_CHECK(dnnl_post_ops_create(&po));
  DT_DNNL_CHECK(dnnl_post_ops_append_sum(po, 1.0f));
  DT_DNNL_CHECK(dnnl_convolution_forward_desc_init(&d, dnnl_forward_training,
                                                   dnnl_convolution_direct, xmd, &w_fwd, NULL,
                                                   &ymd, strides, pad, pad));
  snprintf(fwhat, sizeof fwhat, "%s forward with residual sum", what);
  dt_cpu_prim_create(be, &c->fwd_acc, &d, po, NULL, fwhat);
  DT_DNNL_CHECK(dnnl_post_ops_destroy(po));

  dt_cpu_reorder_init(be, &c->w_fwd, &w_plain, &w_fwd, fwhat);
  c->w_fwd_buf = conv_wbuf(&c->w_fwd, &w_fwd);
  c->m_x = dt_cpu_mem(be, xmd);
  c->m_y = dt_cpu_mem(be, &ymd);
  c->m_w_fwd = dt_cpu_mem(be, &w_fwd);

  if (p->need_dx) {
    DT_DNNL_CHECK(dnnl_convolution_backward_data_desc_init(
        &d, dnnl_convolution_direct, xmd, &w_any, &ymd, strides, pad, pad));
    snprintf(fwhat, sizeof fwhat, "%s backward data", what);
    dt_cpu_prim_create(be, &c->bwd_data, &d, NULL, c->fwd.pd, fwhat);
    dnnl_convolution_desc_t d_any;
    DT_DNNL_CHECK(dnnl_convolution_backward_data_desc_init(
        &d_any, dnnl_convolution_direct, &x_any, &w_any, &ymd, strides, pad, pad));
    if (conv_try_faster(be, &c->bwd_data, &d_any, c->fwd.pd)) {
      dnnl_memory_desc_t dxs = dt_cpu_prim_md(&c->bwd_data, dnnl_query_diff_src_md, 0);
      dt_cpu_reorder_init(be, &c->dx_stage, &dxs, xmd, fwhat);
      c->stage_dx = !c->dx_stage.same;
      if (c->stage_dx) c->dx_stage_buf = conv_buf(&dxs);
      c->m_dxs = dt_cpu_mem(be, &dxs);
    }
    dnnl_memory_desc_t w_bwd = dt_cpu_prim_md(&c->bwd_data, dnnl_query_weights_md, 0);
    dt_cpu_reorder_init(be, &c->w_bwd, &w_plain, &w_bwd, fwhat);
    c->w_bwd_buf = conv_wbuf(&c->w_bwd, &w_bwd);
    c->m_w_bwd = dt_cpu_mem(be, &w_bwd);
  }

  DT_DNNL_CHECK(dnnl_convolution_backward_weights_desc_init(
      &d, dnnl_convolution_direct, xmd, &w_any, NULL, &ymd, strides, pad, pad));
  snprintf(fwhat, sizeof fwhat, "%s backward weights", what);
  dt_cpu_prim_create(be, &c->bwd_weights, &d, NULL, c->fwd.pd, fwhat);
  dnnl_convolution_desc_t d_any;
  DT_DNNL_CHECK(dnnl_convolution_backward_weights_desc_init(
      &d_any, dnnl_convolution_direct, &x_any, &w_any, NULL, &ymd, strides, pad, pad));
  if (conv_try_faster(be, &c->bwd_weights, &d_any, c->fwd.pd)) {
    dnnl_memory_desc_t xs = dt_cpu_prim_md(&c->bwd_weights, dnnl_query_src_md, 0);
    dt_cpu_reorder_init(be, &c->x_stage, xmd, &xs, fwhat);
    c->stage_x = !c->x_stage.same;
    if (c->stage_x) c->x_stage_buf = conv_buf(&xs);
    c->m_xs = dt_cpu_mem(be, &xs);
  }
  dnnl_memory_desc_t dw = dt_cpu_prim_md(&c->bwd_weights, dnnl_query_diff_weights_md, 0);
  dt_cpu_reorder_init(be, &c->dw, &dw, &w_plain, fwhat);
  c->dw_buf = conv_wbuf(&c->dw, &dw);
  c->m_dw = dt_cpu_mem(be, &dw);

  *y = c->y;
  return &c->base;
}

void dt_cpu_conv_forward(dt_op *op, const dt_tensor *x, const float *w, dt_tensor *y,
                         bool accumulate) {
  cpu_conv *c = (cpu_conv *)op;
  dt_cpu_backend *be = op->be;
  dt_cpu_check_tensor(x, c->x, "conv_forward x");
  dt_cpu_check_tensor(y, c->y, "conv_forward y");
  const void *wk = w;
  if (!c->w_fwd.same) {
    dt_cpu_reorder_run(be, &c->w_fwd, w, c->w_fwd_buf);
    wk = c->w_fwd_buf;
  }
  dt_cpu_bind(be, c->m_x, x->data);
  dt_cpu_bind(be, c->m_w_fwd, wk);
  dt_cpu_bind(be, c->m_y, y->data);
  dnnl_exec_arg_t args[] = {
      {DNNL_ARG_SRC, c->m_x}, {DNNL_ARG_WEIGHTS, c->m_w_fwd}, {DNNL_ARG_DST, c->m_y}};
  dt_cpu_prim_exec(be, accumulate ? &c->fwd_acc : &c->fwd, 3, args);
}

void dt_cpu_conv_backward_data(dt_op *op, const dt_tensor *dy, const float *w, dt_tensor *dx) {
  cpu_conv *c = (cpu_conv *)op;
  dt_cpu_backend *be = op->be;
  if (!c->p.need_dx) DT_FATAL("conv_backward_data on a convolution created without need_dx");
  dt_cpu_check_tensor(dy, c->y, "conv_backward_data dy");
  dt_cpu_check_tensor(dx, c->x, "conv_backward_data dx");
  const void *wk = w;
  if (!c->w_bwd.same) {
    dt_cpu_reorder_run(be, &c->w_bwd, w, c->w_bwd_buf);
    wk = c->w_bwd_buf;
  }
  dnnl_memory_t m_dx = c->m_dxs ? c->m_dxs : c->m_x;
  dt_cpu_bind(be, c->m_y, dy->data);
  dt_cpu_bind(be, c->m_w_bwd, wk);
  dt_cpu_bind(be, m_dx, c->stage_dx ? (void *)c->dx_stage_buf : (void *)dx->data);
  dnnl_exec_arg_t args[] = {
      {DNNL_ARG_DIFF_DST, c->m_y}, {DNNL_ARG_WEIGHTS, c->m_w_bwd}, {DNNL_ARG_DIFF_SRC, m_dx}};
  dt_cpu_prim_exec(be, &c->bwd_data, 3, args);
  if (c->stage_dx) dt_cpu_reorder_run(be, &c->dx_stage, c->dx_stage_buf, dx->data);
}

void dt_cpu_conv_backward_weights(dt_op *op, const dt_tensor *x, const dt_tensor *dy, float *dw) {
  cpu_conv *c = (cpu_conv *)op;
  dt_cpu_backend *be = op->be;
  dt_cpu_check_tensor(x, c->x, "conv_backward_weights x");
  dt_cpu_check_tensor(dy, c->y, "conv_backward_weights dy");
  void *dwk = c->dw.same ? (void *)dw : (void *)c->dw_buf;
  dnnl_memory_t m_x = c->m_xs ? c->m_xs : c->m_x;
  const void *xk = x->data;
  if (c->stage_x) {
    dt_cpu_reorder_run(be, &c->x_stage, x->data, c->x_stage_buf);
    xk = c->x_stage_buf;
  }
  dt_cpu_bind(be, m_x, xk);
  dt_cpu_bind(be, c->m_y, dy->data);
  dt_cpu_bind(be, c->m_dw, dwk);
  dnnl_exec_arg_t args[] = {
      {DNNL_ARG_SRC, m_x}, {DNNL_ARG_DIFF_DST, c->m_y}, {DNNL_ARG_DIFF_WEIGHTS, c->m_dw}};
  dt_cpu_prim_exec(be, &c->bwd_weights, 3, args);
  if (!c->dw.same) dt_cpu_reorder_run(be, &c->dw, c->dw_buf, dw);
}
