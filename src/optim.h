/* optim.h: optimizers over the flat arenas, walking the parameter table for per-tensor
 * settings (weight-decay exclusions). SGD per SPEC 4.1 (coupled L2, PyTorch semantics):
 *   d = g + wd * w;  buf = m * buf + d (buf = d on the first step);
 *   w -= lr * (d + m * buf) with Nesterov, else w -= lr * buf. */
#ifndef DT_OPTIM_H
#define DT_OPTIM_H

#include "config.h"
#include "nn/params.h"

typedef struct {
  double momentum, weight_decay;
  bool nesterov, no_decay_bn_bias;
  float *state; /* momentum buffers, one per weight (host memory, same offsets) */
  long steps;   /* updates applied so far */
} dt_optim;

void dt_optim_init(dt_optim *opt, const dt_config *cfg, const dt_params *ps);
/* One update of every trainable tensor with learning rate lr, gradients scaled by
 * grad_scale first (1 / (ranks x accumulation steps) when they are sums). */
void dt_optim_step(dt_optim *opt, dt_params *ps, double lr, float grad_scale);
void dt_optim_free(dt_optim *opt);

#endif
