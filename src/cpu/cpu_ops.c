/* cpu_ops.c: the smaller ops on oneDNN, all in the layout and element type of their input
 * (fp32, or bf16 / fp16 in native 16-bit mode): ReLU (eltwise; the backward reads the forward
 * output), add and accumulate (binary add, in place for accumulate), global average pooling
 * (pooling over the whole H x W) and the linear layer (inner product; weights plain (K, C) in
 * the caller's fp32 array, reordered per call into the primitive's layout and type). The
 * linear layer's output, the logits, is fp32 plain (N, K) whatever its input. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_internal.h"

/* ---- elementwise: one op per shape and layout, primitives made on first use ---- */

typedef struct {
  dt_op base;
  const dt_layout *x;
  char what[96];
  dt_cpu_prim relu_fwd, relu_bwd, add;
  dnnl_memory_t m_a, m_b, m_c;
} cpu_eltwise;

static void eltwise_release(dt_op *op) {
  cpu_eltwise *e = (cpu_eltwise *)op;
  dt_cpu_prim_free(&e->relu_fwd);
  dt_cpu_prim_free(&e->relu_bwd);
  dt_cpu_prim_free(&e->add);
  dt_cpu_mem_free(&e->m_a);
  dt_cpu_mem_free(&e->m_b);
  dt_cpu_mem_free(&e->m_c);
}

static void cpu_check_dims(const dnnl_memory_desc_t *md, dt_shape s, const char *what) {
  if (md->ndims != 4 || md->dims[0] != s.n || md->dims[1] != s.c || md->dims[2] != s.h ||
      md->dims[3] != s.w)
    DT_FATAL("%s: input layout does not match (%d, %d, %d, %d)", what, s.n, s.c, s.h, s.w);
}

dt_op *dt_cpu_eltwise_create(dt_backend *bep, dt_shape shape, const dt_layout *x) {
  dt_cpu_backend *be = dt_cpu_be(bep);
  cpu_check_dims(&x->md, shape, "eltwise_create");
  cpu_eltwise *e = dt_xcalloc(1, sizeof *e);
  dt_cpu_op_register(be, &e->base, eltwise_release);
  e->x = x;
  snprintf(e->what, sizeof e->what, "of (%d, %d, %d, %d)", shape.n, shape.c, shape.h, shape.w);
  e->m_a = dt_cpu_mem(be, &x->md);
  e->m_b = dt_cpu_mem(be, &x->md);
  e->m_c = dt_cpu_mem(be, &x->md);
  return &e->base;
}

/* The ReLU pair. The forward uses the use_dst_for_bwd algorithm (the same function) so that
 * the backward, which must match its hint, can take the mask from the forward output. */
static void eltwise_relu_init(cpu_eltwise *e) {
  if (e->relu_fwd.prim) return;
  char what[128];
  snprintf(what, sizeof what, "ReLU %s", e->what);
  dnnl_eltwise_desc_t d;
  DT_DNNL_CHECK(dnnl_eltwise_forward_desc_init(&d, dnnl_forward_training,
                                               dnnl_eltwise_relu_use_dst_for_bwd, &e->x->md, 0.f,
                                               0.f));
  dt_cpu_prim_create(e->base.be, &e->relu_fwd, &d, NULL, NULL, what);
  DT_DNNL_CHECK(dnnl_eltwise_backward_desc_init(&d, dnnl_eltwise_relu_use_dst_for_bwd, &e->x->md,
                                                &e->x->md, 0.f, 0.f));
  dt_cpu_prim_create(e->base.be, &e->relu_bwd, &d, NULL, e->relu_fwd.pd, what);
}

void dt_cpu_relu_forward(dt_op *op, const dt_tensor *x, dt_tensor *y) {
  cpu_eltwise *e = (cpu_eltwise *)op;
  dt_cpu_check_tensor(x, e->x, "relu_forward x");
  dt_cpu_check_tensor(y, e->x, "relu_forward y");
  eltwise_relu_init(e);
  dt_cpu_bind(op->be, e->m_a, x->data);
  dt_cpu_bind(op->be, e->m_c, y->data);
  dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, e->m_a}, {DNNL_ARG_DST, e->m_c}};
  dt_cpu_prim_exec(op->be, &e->relu_fwd, 2, args);
}

void dt_cpu_relu_backward(dt_op *op, const dt_tensor *y, const dt_tensor *dy, dt_tensor *dx) {
  cpu_eltwise *e = (cpu_eltwise *)op;
  dt_cpu_check_tensor(y, e->x, "relu_backward y");
  dt_cpu_check_tensor(dy, e->x, "relu_backward dy");
  dt_cpu_check_tensor(dx, e->x, "relu_backward dx");
  eltwise_relu_init(e);
  dt_cpu_bind(op->be, e->m_a, y->data);
  dt_cpu_bind(op->be, e->m_b, dy->data);
  dt_cpu_bind(op->be, e->m_c, dx->data);
  dnnl_exec_arg_t args[] = {
      {DNNL_ARG_DST, e->m_a}, {DNNL_ARG_DIFF_DST, e->m_b}, {DNNL_ARG_DIFF_SRC, e->m_c}};
  dt_cpu_prim_exec(op->be, &e->relu_bwd, 3, args);
}

static void eltwise_add_run(cpu_eltwise *e, const void *a, const void *b, void *y) {
  if (!e->add.prim) {
    char what[128];
    snprintf(what, sizeof what, "add %s", e->what);
    dnnl_binary_desc_t d;
    DT_DNNL_CHECK(dnnl_binary_desc_init(&d, dnnl_binary_add, &e->x->md, &e->x->md, &e->x->md));
    dt_cpu_prim_create(e->base.be, &e->add, &d, NULL, NULL, what);
  }
  dt_cpu_bind(e->base.be, e->m_a, a);
  dt_cpu_bind(e->base.be, e->m_b, b);
  dt_cpu_bind(e->base.be, e->m_c, y);
  dnnl_exec_arg_t args[] = {
      {DNNL_ARG_SRC_0, e->m_a}, {DNNL_ARG_SRC_1, e->m_b}, {DNNL_ARG_DST, e->m_c}};
  dt_cpu_prim_exec(e->base.be, &e->add, 3, args);
}

void dt_cpu_add(dt_op *op, const dt_tensor *a, const dt_tensor *b, dt_tensor *y) {
  cpu_eltwise *e = (cpu_eltwise *)op;
  dt_cpu_check_tensor(a, e->x, "add a");
  dt_cpu_check_tensor(b, e->x, "add b");
  dt_cpu_check_tensor(y, e->x, "add y");
  /* oneDNN allows dst to alias src0 only: put an aliased operand first (addition commutes). */
  if (y->data == b->data) eltwise_add_run(e, b->data, a->data, y->data);
  else eltwise_add_run(e, a->data, b->data, y->data);
}

void dt_cpu_accumulate(dt_op *op, const dt_tensor *src, dt_tensor *dst) {
  cpu_eltwise *e = (cpu_eltwise *)op;
  dt_cpu_check_tensor(src, e->x, "accumulate src");
  dt_cpu_check_tensor(dst, e->x, "accumulate dst");
  eltwise_add_run(e, dst->data, src->data, dst->data); /* in place: dst = dst + src */
}

/* ---- global average pooling: (N, C, H, W) -> (N, C, 1, 1) ---- */

typedef struct {
  dt_op base;
  const dt_layout *x, *y;
  dt_cpu_prim fwd, bwd;
  dnnl_memory_t m_x, m_y;
} cpu_gap;

static void gap_release(dt_op *op) {
  cpu_gap *g = (cpu_gap *)op;
  dt_cpu_prim_free(&g->fwd);
  dt_cpu_prim_free(&g->bwd);
  dt_cpu_mem_free(&g->m_x);
  dt_cpu_mem_free(&g->m_y);
}

dt_op *dt_cpu_gap_create(dt_backend *bep, dt_shape s, const dt_layout *x, const dt_layout **y) {
  dt_cpu_backend *be = dt_cpu_be(bep);
  cpu_check_dims(&x->md, s, "gap_create");
  char what[128];
  snprintf(what, sizeof what, "global average pooling of (%d, %d, %d, %d)", s.n, s.c, s.h, s.w);
  cpu_gap *g = dt_xcalloc(1, sizeof *g);
  dt_cpu_op_register(be, &g->base, gap_release);
  g->x = x;
  dnnl_dims_t yd = {s.n, s.c, 1, 1};
  dnnl_memory_desc_t y_any = dt_cpu_md_dt(4, yd, x->md.data_type, dnnl_format_tag_any);
  dnnl_dims_t strides = {1, 1}, kernel = {s.h, s.w}, dil = {0, 0}, pad = {0, 0};
  dnnl_pooling_v2_desc_t d;
  DT_DNNL_CHECK(dnnl_pooling_v2_forward_desc_init(&d, dnnl_forward_training,
                                                  dnnl_pooling_avg_exclude_padding, &x->md,
                                                  &y_any, strides, kernel, dil, pad, pad));
  dt_cpu_prim_create(be, &g->fwd, &d, NULL, NULL, what);
  dnnl_memory_desc_t ymd = dt_cpu_prim_md(&g->fwd, dnnl_query_dst_md, 0);
  g->y = dt_cpu_layout_intern(be, &ymd);
  DT_DNNL_CHECK(dnnl_pooling_v2_backward_desc_init(&d, dnnl_pooling_avg_exclude_padding, &x->md,
                                                   &ymd, strides, kernel, dil, pad, pad));
  dt_cpu_prim_create(be, &g->bwd, &d, NULL, g->fwd.pd, what);
  g->m_x = dt_cpu_mem(be, &x->md);
  g->m_y = dt_cpu_mem(be, &ymd);
  *y = g->y;
  return &g->base;
}

void dt_cpu_gap_forward(dt_op *op, const dt_tensor *x, dt_tensor *y) {
  cpu_gap *g = (cpu_gap *)op;
  dt_cpu_check_tensor(x, g->x, "gap_forward x");
  dt_cpu_check_tensor(y, g->y, "gap_forward y");
  dt_cpu_bind(op->be, g->m_x, x->data);
  dt_cpu_bind(op->be, g->m_y, y->data);
  dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, g->m_x}, {DNNL_ARG_DST, g->m_y}};
  dt_cpu_prim_exec(op->be, &g->fwd, 2, args);
}

void dt_cpu_gap_backward(dt_op *op, const dt_tensor *dy, dt_tensor *dx) {
  cpu_gap *g = (cpu_gap *)op;
  dt_cpu_check_tensor(dy, g->y, "gap_backward dy");
  dt_cpu_check_tensor(dx, g->x, "gap_backward dx");
  dt_cpu_bind(op->be, g->m_y, dy->data);
  dt_cpu_bind(op->be, g->m_x, dx->data);
  dnnl_exec_arg_t args[] = {{DNNL_ARG_DIFF_DST, g->m_y}, {DNNL_ARG_DIFF_SRC, g->m_x}};
  dt_cpu_prim_exec(op->be, &g->bwd, 2, args);
}

/* ---- linear: y (N, K) = x (N, C H W) w^T + b ---- */

typedef struct {
  dt_op base;
  const dt_layout *x, *y; /* y is plain (N, K, 1, 1), i.e. (N, K) row-major, fp32 */
  char what[128];
  /* w_any and dy_nc in x's element type: a 16-bit x takes 16-bit weights and output gradient
   * (dy, fp32 like y, is reordered into dy_buf); dw_any is fp32. */
  dnnl_memory_desc_t w_plain, w_any, dw_any, y_nc, dy_nc;
  dt_cpu_prim fwd, bwd_data, bwd_weights; /* bwd_data on first use (the input may need none) */
  dt_cpu_reorder w_fwd, w_bwd, dw, dy_re;
  float *w_fwd_buf, *w_bwd_buf, *dw_buf;
  void *dy_buf; /* 16-bit x: dy converted, else NULL (dy is read as it is) */
  dnnl_memory_t m_x, m_y, m_dy, m_w_fwd, m_w_bwd, m_dw, m_b;
} cpu_linear;

static void linear_release(dt_op *op) {
  cpu_linear *l = (cpu_linear *)op;
  dt_cpu_prim_free(&l->fwd);
  dt_cpu_prim_free(&l->bwd_data);
  dt_cpu_prim_free(&l->bwd_weights);
  dt_cpu_reorder_free(&l->w_fwd);
  dt_cpu_reorder_free(&l->w_bwd);
  dt_cpu_reorder_free(&l->dw);
  dt_cpu_reorder_free(&l->dy_re);
  free(l->w_fwd_buf);
  free(l->w_bwd_buf);
  free(l->dw_buf);
  free(l->dy_buf);
  dnnl_memory_t *mems[] = {&l->m_x,     &l->m_y,     &l->m_dy, &l->m_w_fwd,
                           &l->m_w_bwd, &l->m_dw, &l->m_b};
  for (size_t i = 0; i < DT_ARRAY_LEN(mems); i++) dt_cpu_mem_free(mems[i]);
}

/* A reorder between the plain weights and a primitive's weight layout, the op's buffer for
 * the non-plain side (NULL when plain) and a memory object for the primitive's side. */
static float *linear_wreorder(cpu_linear *l, dt_cpu_reorder *r, const dnnl_memory_desc_t *md,
                              bool to_plain, dnnl_memory_t *mem) {
  dt_cpu_backend *be = l->base.be;
  if (to_plain) dt_cpu_reorder_init(be, r, md, &l->w_plain, l->what);
  else dt_cpu_reorder_init(be, r, &l->w_plain, md, l->what);
  *mem = dt_cpu_mem(be, md);
  if (r->same) return NULL;
  size_t bytes = dnnl_memory_desc_get_size(md);
  float *p = dt_xaligned(bytes);
  memset(p, 0, bytes);
  return p;
}

dt_op *dt_cpu_linear_create(dt_backend *bep, dt_shape s, const dt_layout *x, int k,
                            const dt_layout **y) {
  dt_cpu_backend *be = dt_cpu_be(bep);
  cpu_check_dims(&x->md, s, "linear_create");
  if (k < 1) DT_FATAL("linear_create: %d outputs", k);
  cpu_linear *l = dt_xcalloc(1, sizeof *l);
  dt_cpu_op_register(be, &l->base, linear_release);
  snprintf(l->what, sizeof l->what, "linear x (%d, %d, %d, %d) -> (%d, %d)", s.n, s.c, s.h, s.w,
           s.n, k);
  l->x = x;
  /* Weights (K, C, H, W): the PyTorch (K, C H W) matrix of a flattened input. */
  dnnl_dims_t wd = {k, s.c, s.h, s.w}, yd = {s.n, k}, bd = {k};
  const dnnl_data_type_t xdt = x->md.data_type;
  l->w_plain = dt_cpu_md(4, wd, dnnl_oihw);
  l->w_any = dt_cpu_md_dt(4, wd, xdt, dnnl_format_tag_any);
  l->dw_any = dt_cpu_md(4, wd, dnnl_format_tag_any);
  l->y_nc = dt_cpu_md(2, yd, dnnl_nc);
  l->dy_nc = dt_cpu_md_dt(2, yd, xdt, dnnl_nc);
  dnnl_memory_desc_t b_md = dt_cpu_md(1, bd, dnnl_a);

  dnnl_inner_product_desc_t d;
  DT_DNNL_CHECK(dnnl_inner_product_forward_desc_init(&d, dnnl_forward_training, &x->md, &l->w_any,
                                                     &b_md, &l->y_nc));
  dt_cpu_prim_create(be, &l->fwd, &d, NULL, NULL, l->what);
  dnnl_memory_desc_t w_fwd = dt_cpu_prim_md(&l->fwd, dnnl_query_weights_md, 0);
  l->w_fwd_buf = linear_wreorder(l, &l->w_fwd, &w_fwd, false, &l->m_w_fwd);

  DT_DNNL_CHECK(dnnl_inner_product_backward_weights_desc_init(&d, &x->md, &l->dw_any, &b_md,
                                                              &l->dy_nc));
  dt_cpu_prim_create(be, &l->bwd_weights, &d, NULL, l->fwd.pd, l->what);
  dnnl_memory_desc_t dw = dt_cpu_prim_md(&l->bwd_weights, dnnl_query_diff_weights_md, 0);
  l->dw_buf = linear_wreorder(l, &l->dw, &dw, true, &l->m_dw);

  l->m_x = dt_cpu_mem(be, &x->md);
  l->m_y = dt_cpu_mem(be, &l->y_nc);
  l->m_dy = dt_cpu_mem(be, &l->dy_nc);
  if (xdt != dnnl_f32) {
    dt_cpu_reorder_init(be, &l->dy_re, &l->y_nc, &l->dy_nc, l->what);
    size_t bytes = dnnl_memory_desc_get_size(&l->dy_nc);
    l->dy_buf = dt_xaligned(bytes);
    memset(l->dy_buf, 0, bytes);
  }
  l->m_b = dt_cpu_mem(be, &b_md);
  dt_shape ys = {s.n, k, 1, 1};
  l->y = dt_cpu_layout_plain(bep, ys);
  *y = l->y;
  return &l->base;
}

void dt_cpu_linear_forward(dt_op *op, const dt_tensor *x, const float *w, const float *b,
                           dt_tensor *y) {
  cpu_linear *l = (cpu_linear *)op;
  dt_cpu_backend *be = op->be;
  dt_cpu_check_tensor(x, l->x, "linear_forward x");
  dt_cpu_check_tensor(y, l->y, "linear_forward y");
  const void *wk = w;
  if (!l->w_fwd.same) {
    dt_cpu_reorder_run(be, &l->w_fwd, w, l->w_fwd_buf);
    wk = l->w_fwd_buf;
  }
  dt_cpu_bind(be, l->m_x, x->data);
  dt_cpu_bind(be, l->m_w_fwd, wk);
  dt_cpu_bind(be, l->m_b, b);
  dt_cpu_bind(be, l->m_y, y->data);
  dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, l->m_x},
                            {DNNL_ARG_WEIGHTS, l->m_w_fwd},
                            {DNNL_ARG_BIAS, l->m_b},
                            {DNNL_ARG_DST, l->m_y}};
  dt_cpu_prim_exec(be, &l->fwd, 4, args);
}

void dt_cpu_linear_backward(dt_op *op, const dt_tensor *x, const dt_tensor *dy, const float *w,
                            dt_tensor *dx, float *dw, float *db) {
  cpu_linear *l = (cpu_linear *)op;
  dt_cpu_backend *be = op->be;
  dt_cpu_check_tensor(x, l->x, "linear_backward x");
  dt_cpu_check_tensor(dy, l->y, "linear_backward dy");
  const void *dyk = dy->data; /* dy in dy_nc: converted for a 16-bit x (N K values) */
  if (l->dy_buf) {
    dt_cpu_reorder_run(be, &l->dy_re, dy->data, l->dy_buf);
    dyk = l->dy_buf;
  }
  if (dx) {
    dt_cpu_check_tensor(dx, l->x, "linear_backward dx");
    if (!l->bwd_data.prim) {
      dnnl_inner_product_desc_t d;
      DT_DNNL_CHECK(
          dnnl_inner_product_backward_data_desc_init(&d, &l->x->md, &l->w_any, &l->dy_nc));
      dt_cpu_prim_create(be, &l->bwd_data, &d, NULL, l->fwd.pd, l->what);
      dnnl_memory_desc_t w_bwd = dt_cpu_prim_md(&l->bwd_data, dnnl_query_weights_md, 0);
      l->w_bwd_buf = linear_wreorder(l, &l->w_bwd, &w_bwd, false, &l->m_w_bwd);
    }
    const void *wk = w;
    if (!l->w_bwd.same) {
      dt_cpu_reorder_run(be, &l->w_bwd, w, l->w_bwd_buf);
      wk = l->w_bwd_buf;
    }
    dt_cpu_bind(be, l->m_dy, dyk);
    dt_cpu_bind(be, l->m_w_bwd, wk);
    dt_cpu_bind(be, l->m_x, dx->data);
    dnnl_exec_arg_t args[] = {{DNNL_ARG_DIFF_DST, l->m_dy},
                              {DNNL_ARG_WEIGHTS, l->m_w_bwd},
                              {DNNL_ARG_DIFF_SRC, l->m_x}};
    dt_cpu_prim_exec(be, &l->bwd_data, 3, args);
  }
  void *dwk = l->dw.same ? (void *)dw : (void *)l->dw_buf;
  dt_cpu_bind(be, l->m_x, x->data);
  dt_cpu_bind(be, l->m_dy, dyk);
  dt_cpu_bind(be, l->m_dw, dwk);
  dt_cpu_bind(be, l->m_b, db);
  dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, l->m_x},
                            {DNNL_ARG_DIFF_DST, l->m_dy},
                            {DNNL_ARG_DIFF_WEIGHTS, l->m_dw},
                            {DNNL_ARG_DIFF_BIAS, l->m_b}};
  dt_cpu_prim_exec(be, &l->bwd_weights, 4, args);
  if (!l->dw.same) dt_cpu_reorder_run(be, &l->dw, l->dw_buf, dw);
}
