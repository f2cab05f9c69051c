/* cpu_pool.c: max and average pooling of the CPU backend (backend.h) on oneDNN, in the input's
 * element type (fp32, or bf16 / fp16 in native 16-bit mode); max pooling keeps its workspace in
 * the op. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_internal.h"

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
  const dnnl_memory_desc_t *xmd = &x->md;
  if (xmd->ndims != 4 || xmd->dims[0] != s.n || xmd->dims[1] != s.c || xmd->dims[2] != s.h ||
      xmd->dims[3] != s.w)
    DT_FATAL("pool_create: layout does not match (%d, %d, %d, %d)", s.n, s.c, s.h, s.w);
  char what[160];
  snprintf(what, sizeof what, "%s pooling %dx%d/%d pad %d of (%d, %d, %d, %d)",
           kind == DT_POOL_MAX ? "max" : "average", ksize, ksize, stride, pad, s.n, s.c, s.h, s.w);
  cpu_pool *p = dt_xcalloc(1, sizeof *p);
  dt_cpu_op_register(be, &p->base, pool_release);
  p->x = x;
  const int oh = (s.h + 2 * pad - ksize) / stride + 1, ow = (s.w + 2 * pad - ksize) / stride + 1;
  dnnl_dims_t yd = {s.n, s.c, oh, ow};
  /* The output keeps the input's element type (16-bit in native mode: backend_cpu.c). */
  dnnl_memory_desc_t y_any = dt_cpu_md_dt(4, yd, xmd->data_type, dnnl_format_tag_any);
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
