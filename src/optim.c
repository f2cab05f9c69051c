/* optim.c: SGD with momentum / Nesterov and coupled weight decay over the flat arenas. */
#include "optim.h"

#include <stdlib.h>
#include <string.h>

void dt_optim_init(dt_optim *opt, const dt_config *cfg, const dt_params *ps) {
  memset(opt, 0, sizeof *opt);
  opt->momentum = cfg->optim_momentum;
  opt->weight_decay = cfg->optim_weight_decay;
  opt->nesterov = cfg->optim_nesterov;
  opt->no_decay_bn_bias = cfg->optim_no_decay_bn_bias;
  opt->state = dt_xaligned(DT_MAX(ps->n_weights, 1) * sizeof(float));
  memset(opt->state, 0, DT_MAX(ps->n_weights, 1) * sizeof(float));
}

void dt_optim_step(dt_optim *opt, dt_params *ps, double lr, float grad_scale) {
  const float m = (float)opt->momentum, flr = (float)lr;
  const bool first = opt->steps == 0;
  for (int i = 0; i < ps->count; i++) {
    const dt_param *p = &ps->items[i];
    if (p->flags & DT_PARAM_BUFFER) continue;
    const float wd = (opt->no_decay_bn_bias && (p->flags & DT_PARAM_NO_DECAY)) ? 0.0f
                                                                               : (float)opt->weight_decay;
    float *restrict w = ps->weights + p->offset;
    const float *restrict g = ps->grads + p->offset;
    float *restrict buf = opt->state + p->offset;
    const size_t n = p->count;
    if (m == 0.0f) {
      for (size_t j = 0; j < n; j++) w[j] -= flr * (g[j] * grad_scale + wd * w[j]);
      continue;
    }
    for (size_t j = 0; j < n; j++) {
      float d = g[j] * grad_scale + wd * w[j];
      float b = first ? d : m * buf[j] + d;
      buf[j] = b;
      w[j] -= opt->nesterov ? flr * (d + m * b) : flr * b;
    }
  }
  opt->steps++;
}

void dt_optim_free(dt_optim *opt) {
  free(opt->state);
  opt->state = NULL;
}
