/* optim.c: SGD (momentum, Nesterov), LARS, Adam and AMSGrad over the flat arenas. */
#include "optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static float *state_array(size_t n) {
  float *a = dt_xaligned(DT_MAX(n, 1) * sizeof(float));
  memset(a, 0, DT_MAX(n, 1) * sizeof(float));
  return a;
}

void dt_optim_init(dt_optim *opt, const dt_config *cfg, const dt_params *ps) {
  memset(opt, 0, sizeof *opt);
  const char *name = cfg->optim_name;
  opt->kind = strcmp(name, "lars") == 0      ? DT_OPTIM_LARS
              : strcmp(name, "adam") == 0    ? DT_OPTIM_ADAM
              : strcmp(name, "amsgrad") == 0 ? DT_OPTIM_AMSGRAD
                                             : DT_OPTIM_SGD;
  opt->momentum = cfg->optim_momentum;
  opt->weight_decay = cfg->optim_weight_decay;
  opt->nesterov = cfg->optim_nesterov;
  opt->no_decay_bn_bias = cfg->optim_no_decay_bn_bias;
  opt->beta1 = cfg->optim_adam_beta1;
  opt->beta2 = cfg->optim_adam_beta2;
  opt->eps = opt->kind == DT_OPTIM_LARS ? cfg->optim_lars_eps : cfg->optim_adam_eps;
  opt->lars_threshold = cfg->optim_lars_threshold;
  opt->lars_eta = cfg->optim_lars_eta;
  static const char *names[][3] = {{"momentum"}, {"momentum"}, {"exp_avg", "exp_avg_sq"},
                                   {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}};
  static const int counts[] = {1, 1, 2, 3};
  opt->state.n_states = counts[opt->kind];
  for (int i = 0; i < opt->state.n_states; i++) {
    opt->state.names[i] = names[opt->kind][i];
    opt->state.arrays[i] = state_array(ps->n_weights);
  }
}

static double norm2(const float *x, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
  return sqrt(s);
}

void dt_optim_step(dt_optim *opt, dt_params *ps, double lr, float grad_scale) {
  const float m = (float)opt->momentum;
  const bool first = opt->steps == 0;
  const long t = opt->steps + 1;
  for (int i = 0; i < ps->count; i++) {
    const dt_param *p = &ps->items[i];
    if (p->flags & DT_PARAM_BUFFER) continue;
    const float wd = (opt->no_decay_bn_bias && (p->flags & DT_PARAM_NO_DECAY))
                         ? 0.0f
                         : (float)opt->weight_decay;
    float *restrict w = ps->weights + p->offset;
    float *restrict g = ps->grads + p->offset;
    const size_t n = p->count;
    if (grad_scale != 1.0f)
      for (size_t j = 0; j < n; j++) g[j] *= grad_scale;
    float *restrict s0 = opt->state.arrays[0] + p->offset;
    switch (opt->kind) {
      case DT_OPTIM_SGD: {
        const float flr = (float)lr;
        for (size_t j = 0; j < n; j++) {
          float d = g[j] + wd * w[j];
          float b = first ? d : m * s0[j] + d;
          s0[j] = b;
          w[j] -= opt->nesterov ? flr * (d + m * b) : flr * b;
        }
        break;
      }
      case DT_OPTIM_LARS: {
        double wn = norm2(w, n), gn = norm2(g, n);
        double local = wn / (opt->eps + gn + wd * wn);
        if (opt->lars_eta > 0) local *= opt->lars_eta;
        if (wn < opt->lars_threshold) local = 1.0;
        const float scaled = (float)(lr * local);
        for (size_t j = 0; j < n; j++) {
          float d = g[j] + wd * w[j];
          s0[j] = m * s0[j] + scaled * d;
          w[j] -= s0[j];
        }
        break;
      }
      case DT_OPTIM_ADAM:
      case DT_OPTIM_AMSGRAD: {
        float *restrict v = opt->state.arrays[1] + p->offset;
        float *restrict vmax = opt->kind == DT_OPTIM_AMSGRAD ? opt->state.arrays[2] + p->offset : NULL;
        const float b1 = (float)opt->beta1, b2 = (float)opt->beta2, eps = (float)opt->eps;
        const float bc1 = (float)(1.0 - pow(opt->beta1, (double)t));
        const float bc2_sqrt = (float)sqrt(1.0 - pow(opt->beta2, (double)t));
        const float step = (float)lr / bc1;
        for (size_t j = 0; j < n; j++) {
          float d = g[j] + wd * w[j];
          s0[j] = b1 * s0[j] + (1.0f - b1) * d;
          v[j] = b2 * v[j] + (1.0f - b2) * d * d;
          float vv = v[j];
          if (vmax) vv = vmax[j] = fmaxf(vmax[j], v[j]);
          w[j] -= step * s0[j] / (sqrtf(vv) / bc2_sqrt + eps);
        }
        break;
      }
    }
  }
  opt->steps++;
}

bool dt_optim_grads_finite(const dt_params *ps) {
  float acc = 0.0f;
  for (size_t j = 0; j < ps->n_weights; j++) acc += ps->grads[j] * 0.0f;
  return acc == 0.0f; /* NaN * 0 = NaN and Inf * 0 = NaN poison the sum */
}

void dt_optim_free(dt_optim *opt) {
  for (int i = 0; i < opt->state.n_states; i++) free(opt->state.arrays[i]);
  memset(&opt->state, 0, sizeof opt->state);
}
