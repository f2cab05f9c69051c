/* cpu_bn.c: batch normalisation on oneDNN, over (N, H, W) per channel, in the layout of its
 * input (y, dy and dx share it). gamma and beta are separate (C) arrays (use_scale |
 * use_shift); with fuse_relu the primitive applies the ReLU itself and keeps the ReLU mask
 * in a workspace owned by the op from the training forward to the backward. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_internal.h"

typedef struct {
  dt_op base;
  dt_shape shape;
  const dt_layout *x; /* x, y, dy and dx */
  bool relu;
  dt_cpu_prim train, infer, bwd;
  void *workspace; /* ReLU mask of the last training forward (fuse_relu only) */
  float *zero_shift; /* (C) zeros: the backward needs a shift argument it does not use */
  dnnl_memory_t m_x, m_y, m_dx, m_ws; /* m_y also carries dy */
  /* (C) vectors: statistics, scale and shift, their gradients */
  dnnl_memory_t m_mean, m_var, m_scale, m_shift, m_dscale, m_dshift;
} cpu_bn;

static void bn_release(dt_op *op) {
  cpu_bn *b = (cpu_bn *)op;
  dt_cpu_prim_free(&b->train);
  dt_cpu_prim_free(&b->infer);
  dt_cpu_prim_free(&b->bwd);
  free(b->workspace);
  free(b->zero_shift);
  dnnl_memory_t *mems[] = {&b->m_x, &b->m_y, &b->m_dx, &b->m_ws,     &b->m_mean, &b->m_var,
                           &b->m_scale, &b->m_shift, &b->m_dscale, &b->m_dshift};
  for (size_t i = 0; i < DT_ARRAY_LEN(mems); i++) dt_cpu_mem_free(mems[i]);
}

dt_op *dt_cpu_bn_create(dt_backend *bep, dt_shape shape, const dt_layout *x, float eps,
                        bool fuse_relu) {
  dt_cpu_backend *be = dt_cpu_be(bep);
  const dnnl_memory_desc_t *xmd = &x->md;
  if (xmd->ndims != 4 || xmd->dims[0] != shape.n || xmd->dims[1] != shape.c ||
      xmd->dims[2] != shape.h || xmd->dims[3] != shape.w)
    DT_FATAL("bn_create: input layout does not match (%d, %d, %d, %d)", shape.n, shape.c, shape.h,
             shape.w);
  char what[160];
  snprintf(what, sizeof what, "batch norm%s of (%d, %d, %d, %d)", fuse_relu ? " + ReLU" : "",
           shape.n, shape.c, shape.h, shape.w);

  cpu_bn *b = dt_xcalloc(1, sizeof *b);
  dt_cpu_op_register(be, &b->base, bn_release);
  b->shape = shape;
  b->x = x;
  b->relu = fuse_relu;
  unsigned flags = dnnl_use_scale | dnnl_use_shift | (fuse_relu ? dnnl_fuse_norm_relu : 0u);

  dnnl_batch_normalization_desc_t d;
  DT_DNNL_CHECK(
      dnnl_batch_normalization_forward_desc_init(&d, dnnl_forward_training, xmd, eps, flags));
  dt_cpu_prim_create(be, &b->train, &d, NULL, NULL, what);
  DT_DNNL_CHECK(dnnl_batch_normalization_forward_desc_init(
      &d, dnnl_forward_inference, xmd, eps, flags | dnnl_use_global_stats));
  dt_cpu_prim_create(be, &b->infer, &d, NULL, NULL, what);
  DT_DNNL_CHECK(dnnl_batch_normalization_backward_desc_init(&d, dnnl_backward, xmd, xmd, eps,
                                                            flags));
  dt_cpu_prim_create(be, &b->bwd, &d, NULL, b->train.pd, what);

  if (fuse_relu) {
    dnnl_memory_desc_t ws = dt_cpu_prim_md(&b->train, dnnl_query_workspace_md, 0);
    size_t bytes = dnnl_memory_desc_get_size(&ws);
    b->workspace = dt_xaligned(bytes);
    memset(b->workspace, 0, bytes);
    b->m_ws = dt_cpu_mem(be, &ws);
    dt_cpu_bind(be, b->m_ws, b->workspace);
  }
  /* oneDNN 2.6 rejects a use_shift backward without DNNL_ARG_SHIFT, although the gradients
   * do not depend on beta (the ReLU mask comes from the workspace); bn_backward is not given
   * beta, so the op passes zeros. */
  b->zero_shift = dt_xcalloc((size_t)shape.c, sizeof(float));
  b->m_x = dt_cpu_mem(be, xmd);
  b->m_y = dt_cpu_mem(be, xmd);
  b->m_dx = dt_cpu_mem(be, xmd);
  dnnl_dims_t cd = {shape.c};
  dnnl_memory_desc_t cmd = dt_cpu_md(1, cd, dnnl_a);
  dnnl_memory_t *vecs[] = {&b->m_mean,  &b->m_var,    &b->m_scale,
                           &b->m_shift, &b->m_dscale, &b->m_dshift};
  for (size_t i = 0; i < DT_ARRAY_LEN(vecs); i++) *vecs[i] = dt_cpu_mem(be, &cmd);
  return &b->base;
}

void dt_cpu_bn_forward_train(dt_op *op, const dt_tensor *x, const float *gamma,
                             const float *beta, dt_tensor *y, float *save_mean, float *save_var,
                             float *running_mean, float *running_var, float momentum) {
  cpu_bn *b = (cpu_bn *)op;
  dt_cpu_backend *be = op->be;
  dt_cpu_check_tensor(x, b->x, "bn_forward_train x");
  dt_cpu_check_tensor(y, b->x, "bn_forward_train y");
  dt_cpu_bind(be, b->m_x, x->data);
  dt_cpu_bind(be, b->m_y, y->data);
  dt_cpu_bind(be, b->m_scale, gamma);
  dt_cpu_bind(be, b->m_shift, beta);
  dt_cpu_bind(be, b->m_mean, save_mean);
  dt_cpu_bind(be, b->m_var, save_var);
  dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, b->m_x},         {DNNL_ARG_DST, b->m_y},
                            {DNNL_ARG_SCALE, b->m_scale},   {DNNL_ARG_SHIFT, b->m_shift},
                            {DNNL_ARG_MEAN, b->m_mean},     {DNNL_ARG_VARIANCE, b->m_var},
                            {DNNL_ARG_WORKSPACE, b->m_ws}};
  dt_cpu_prim_exec(be, &b->train, b->relu ? 7 : 6, args);

  /* Running statistics as PyTorch keeps them, with the unbiased variance. */
  double m = (double)b->shape.n * b->shape.h * b->shape.w;
  double unbias = m > 1 ? m / (m - 1) : 1.0;
  if (running_mean)
    for (int c = 0; c < b->shape.c; c++)
      running_mean[c] = (float)((1.0 - momentum) * running_mean[c] + momentum * save_mean[c]);
  if (running_var)
    for (int c = 0; c < b->shape.c; c++)
      running_var[c] =
          (float)((1.0 - momentum) * running_var[c] + momentum * save_var[c] * unbias);
}

void dt_cpu_bn_forward_infer(dt_op *op, const dt_tensor *x, const float *gamma,
                             const float *beta, const float *running_mean,
                             const float *running_var, dt_tensor *y) {
  cpu_bn *b = (cpu_bn *)op;
  dt_cpu_backend *be = op->be;
  dt_cpu_check_tensor(x, b->x, "bn_forward_infer x");
  dt_cpu_check_tensor(y, b->x, "bn_forward_infer y");
  dt_cpu_bind(be, b->m_x, x->data);
  dt_cpu_bind(be, b->m_y, y->data);
  dt_cpu_bind(be, b->m_scale, gamma);
  dt_cpu_bind(be, b->m_shift, beta);
  dt_cpu_bind(be, b->m_mean, running_mean);
  dt_cpu_bind(be, b->m_var, running_var);
  dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, b->m_x},       {DNNL_ARG_DST, b->m_y},
                            {DNNL_ARG_SCALE, b->m_scale}, {DNNL_ARG_SHIFT, b->m_shift},
                            {DNNL_ARG_MEAN, b->m_mean},   {DNNL_ARG_VARIANCE, b->m_var}};
  dt_cpu_prim_exec(be, &b->infer, 6, args);
}

void dt_cpu_bn_backward(dt_op *op, const dt_tensor *x, const dt_tensor *dy, const float *gamma,
                        const float *save_mean, const float *save_var, dt_tensor *dx,
                        float *dgamma, float *dbeta) {
  cpu_bn *b = (cpu_bn *)op;
  dt_cpu_backend *be = op->be;
  dt_cpu_check_tensor(x, b->x, "bn_backward x");
  dt_cpu_check_tensor(dy, b->x, "bn_backward dy");
  dt_cpu_check_tensor(dx, b->x, "bn_backward dx");
  dt_cpu_bind(be, b->m_x, x->data);
  dt_cpu_bind(be, b->m_y, dy->data);
  dt_cpu_bind(be, b->m_scale, gamma);
  dt_cpu_bind(be, b->m_mean, save_mean);
  dt_cpu_bind(be, b->m_var, save_var);
  dt_cpu_bind(be, b->m_shift, b->zero_shift);
  dt_cpu_bind(be, b->m_dscale, dgamma);
  dt_cpu_bind(be, b->m_dshift, dbeta);
  dt_cpu_bind(be, b->m_dx, dx->data);
  dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, b->m_x},
                            {DNNL_ARG_DIFF_DST, b->m_y},
                            {DNNL_ARG_SCALE, b->m_scale},
                            {DNNL_ARG_SHIFT, b->m_shift},
                            {DNNL_ARG_MEAN, b->m_mean},
                            {DNNL_ARG_VARIANCE, b->m_var},
                            {DNNL_ARG_DIFF_SRC, b->m_dx},
                            {DNNL_ARG_DIFF_SCALE, b->m_dscale},
                            {DNNL_ARG_DIFF_SHIFT, b->m_dshift},
                            {DNNL_ARG_WORKSPACE, b->m_ws}};
  dt_cpu_prim_exec(be, &b->bwd, b->relu ? 10 : 9, args);
}
