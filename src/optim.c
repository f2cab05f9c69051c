/* optim.c: SGD (momentum, Nesterov), LARS, Adam and AMSGrad over the flat arenas: the
 * per-tensor choices (weight decay exclusions, bias corrections) here, the arithmetic in the
 * backend's optimizer-update ops (the CPU backend's loops in src/cpu/cpu_optim.c are the
 * reference). */
#include "optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static float *host_array(size_t n) {
  float *a = dt_xaligned(DT_MAX(n, 1) * sizeof(float));
  memset(a, 0, DT_MAX(n, 1) * sizeof(float));
  return a;
}

/* Whether weight decay applies to p (optim.no_decay_bn_bias exempts batch-norm and bias
 * tensors). */
static bool optim_decays(const dt_optim *opt, const dt_param *p) {
  return !(opt->no_decay_bn_bias && (p->flags & DT_PARAM_NO_DECAY));
}

void dt_optim_init(dt_optim *opt, const dt_config *cfg, const dt_params *ps) {
  memset(opt, 0, sizeof *opt);
  DT_CHECK(ps->be != NULL && ps->weights != NULL);
  opt->kind = cfg->optim_name;
  opt->momentum = cfg->optim_momentum;
  opt->weight_decay = cfg->optim_weight_decay;
  opt->nesterov = cfg->optim_nesterov;
  opt->no_decay_bn_bias = cfg->optim_no_decay_bn_bias;
  opt->beta1 = cfg->optim_adam_beta1;
  opt->beta2 = cfg->optim_adam_beta2;
  opt->eps = opt->kind == DT_OPTIM_NAME_LARS ? cfg->optim_lars_eps : cfg->optim_adam_eps;
  opt->lars_threshold = cfg->optim_lars_threshold;
  opt->lars_eta = cfg->optim_lars_eta;
  opt->be = ps->be;
  opt->n = ps->n_weights;
  const dt_backend_ops *o = opt->be->ops;
  static const char *names[][3] = {
      [DT_OPTIM_NAME_SGD] = {"momentum"},
      [DT_OPTIM_NAME_LARS] = {"momentum"},
      [DT_OPTIM_NAME_ADAM] = {"exp_avg", "exp_avg_sq"},
      [DT_OPTIM_NAME_AMSGRAD] = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}};
  static const int counts[] = {[DT_OPTIM_NAME_SGD] = 1, [DT_OPTIM_NAME_LARS] = 1,
                               [DT_OPTIM_NAME_ADAM] = 2, [DT_OPTIM_NAME_AMSGRAD] = 3};
  opt->state.n_states = counts[opt->kind];
  for (int i = 0; i < opt->state.n_states; i++) {
    opt->state.names[i] = names[opt->kind][i];
    opt->state.arrays[i] = host_array(opt->n);
    opt->dev[i] = o->alloc(opt->be, DT_MAX(opt->n, 1) * sizeof(float)); /* zero-filled */
  }
  const bool adam = opt->kind == DT_OPTIM_NAME_ADAM || opt->kind == DT_OPTIM_NAME_AMSGRAD;
  if (opt->n > 0 && ((opt->kind == DT_OPTIM_NAME_SGD && o->sgd_update_multi) ||
                     (adam && o->adam_update_multi))) {
    uint8_t *mask = dt_xcalloc(opt->n, 1);
    for (int i = 0; i < ps->count; i++) {
      const dt_param *p = &ps->items[i];
      if (p->flags & DT_PARAM_BUFFER) continue;
      memset(mask + p->offset, optim_decays(opt, p) ? 1 : 2, p->count);
    }
    opt->decay_mask = o->alloc(opt->be, opt->n);
    o->to_device(opt->be, opt->decay_mask, mask, opt->n);
    free(mask);
  }
  if (opt->kind == DT_OPTIM_NAME_LARS && o->lars_update_multi && opt->n > 0) {
    dt_optim_segment *seg = dt_xcalloc((size_t)DT_MAX(ps->count, 1), sizeof *seg);
    int n_seg = 0;
    for (int i = 0; i < ps->count; i++) { /* the table is in offset order */
      const dt_param *p = &ps->items[i];
      if (p->flags & DT_PARAM_BUFFER || p->count == 0) continue;
      DT_CHECK(n_seg == 0 || p->offset >= seg[n_seg - 1].offset + seg[n_seg - 1].count);
      seg[n_seg++] = (dt_optim_segment){p->offset, p->count,
                                        optim_decays(opt, p) ? (float)opt->weight_decay : 0.0f,
                                        0};
    }
    if (n_seg > 0) {
      opt->n_segments = n_seg;
      opt->segments = o->alloc(opt->be, (size_t)n_seg * sizeof *seg);
      o->to_device(opt->be, opt->segments, seg, (size_t)n_seg * sizeof *seg);
    }
    free(seg);
  }
}

void dt_optim_step(dt_optim *opt, dt_params *ps, double lr, float grad_scale,
                   const int32_t *skip) {
  dt_backend *be = opt->be;
  DT_CHECK(ps->be == be && ps->n_weights == opt->n);
  const float m = (float)opt->momentum;
  const bool first = opt->steps == 0;
  const long t = opt->steps + 1;
  /* Adam's bias corrections of update t, the same for every tensor. */
  const float bc1 = (float)(1.0 - pow(opt->beta1, (double)t));
  const float bc2_sqrt = (float)sqrt(1.0 - pow(opt->beta2, (double)t));
  float *vmax = opt->kind == DT_OPTIM_NAME_AMSGRAD ? opt->dev[2] : NULL;
  if (opt->decay_mask || opt->segments) { /* every tensor in one call */
    switch (opt->kind) {
      case DT_OPTIM_NAME_SGD:
        be->ops->sgd_update_multi(be, ps->weights, ps->grads, opt->dev[0], opt->decay_mask,
                                  opt->n, (float)lr, m, (float)opt->weight_decay, opt->nesterov,
                                  first, grad_scale, skip);
        break;
      case DT_OPTIM_NAME_LARS:
        be->ops->lars_update_multi(be, ps->weights, ps->grads, opt->dev[0], opt->segments,
                                   opt->n_segments, opt->n, lr, m, opt->eps, opt->lars_eta,
                                   opt->lars_threshold, grad_scale, skip);
        break;
      case DT_OPTIM_NAME_ADAM:
      case DT_OPTIM_NAME_AMSGRAD:
        be->ops->adam_update_multi(be, ps->weights, ps->grads, opt->dev[0], opt->dev[1], vmax,
                                   opt->decay_mask, opt->n, (float)lr / bc1, (float)opt->beta1,
                                   (float)opt->beta2, (float)opt->eps, bc2_sqrt,
                                   (float)opt->weight_decay, grad_scale, skip);
        break;
    }
    opt->steps++;
    return;
  }
  for (int i = 0; i < ps->count; i++) {
    const dt_param *p = &ps->items[i];
    if (p->flags & DT_PARAM_BUFFER) continue;
    const float wd = optim_decays(opt, p) ? (float)opt->weight_decay : 0.0f;
    float *w = ps->weights + p->offset, *g = ps->grads + p->offset;
    float *s0 = opt->dev[0] + p->offset;
    const size_t n = p->count;
    switch (opt->kind) {
      case DT_OPTIM_NAME_SGD:
        be->ops->sgd_update(be, w, g, s0, n, (float)lr, m, wd, opt->nesterov, first, grad_scale,
                            skip);
        break;
      case DT_OPTIM_NAME_LARS:
        be->ops->lars_update(be, w, g, s0, n, lr, m, wd, opt->eps, opt->lars_eta,
                             opt->lars_threshold, grad_scale, skip);
        break;
      case DT_OPTIM_NAME_ADAM:
      case DT_OPTIM_NAME_AMSGRAD: {
        be->ops->adam_update(be, w, g, s0, opt->dev[1] + p->offset,
                             vmax ? vmax + p->offset : NULL, n, (float)lr / bc1,
                             (float)opt->beta1, (float)opt->beta2, (float)opt->eps, bc2_sqrt, wd,
                             grad_scale, skip);
        break;
      }
    }
  }
  opt->steps++;
}

void dt_optim_unstep(dt_optim *opt) {
  DT_CHECK(opt->steps > 0);
  opt->steps--;
}

void dt_optim_state_to_host(dt_optim *opt, const dt_params *ps) {
  for (int i = 0; i < opt->state.n_states; i++)
    dt_params_to_host(ps, opt->state.arrays[i], opt->dev[i]);
}

void dt_optim_state_from_host(dt_optim *opt, const dt_params *ps) {
  for (int i = 0; i < opt->state.n_states; i++)
    dt_params_from_host(ps, opt->dev[i], opt->state.arrays[i]);
}

void dt_optim_free(dt_optim *opt) {
  for (int i = 0; i < opt->state.n_states; i++) {
    free(opt->state.arrays[i]);
    if (opt->dev[i]) opt->be->ops->free(opt->be, opt->dev[i]);
  }
  if (opt->decay_mask) opt->be->ops->free(opt->be, opt->decay_mask);
  if (opt->segments) opt->be->ops->free(opt->be, opt->segments);
  memset(opt, 0, sizeof *opt);
}
