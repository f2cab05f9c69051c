/* optim.h: optimizers over the flat arenas (docs/reference-experiments.md "Optimizers"), walking
 * the parameter table for per-tensor quantities (LARS trust ratios, weight-decay exclusions).
 * Weight decay is coupled L2: d = g + wd * w.
 *   sgd      buf = m buf + d (buf = d on the first step); w -= lr (d + m buf) with Nesterov,
 *            else w -= lr buf
 *   lars     r = |w| / (eps + |g| + wd |w|) (times eta when eta > 0; 1 when |w| < threshold);
 *            buf = m buf + lr r d; w -= buf   (no Nesterov; every tensor is adapted)
 *   adam     PyTorch Adam with bias correction; amsgrad keeps the running maximum of v
 * The arithmetic runs in the backend that owns the arenas (its optimizer-update ops: one call
 * for the whole arena where the backend has the _multi op, else one per tensor), and the
 * optimizer state lives there too: host code never touches either. */
#ifndef DT_OPTIM_H
#define DT_OPTIM_H

#include "config.h"
#include "nn/params.h"

/* Optimizer state tensors in host memory under their checkpoint names (e.g. "momentum"):
 * n_states arrays, each laid out like the weight arena. Checkpoints save and load these. */
typedef struct {
  const char *names[4];
  float *arrays[4]; /* host memory, ps->n_weights floats each */
  int n_states;
} dt_optim_state;

typedef struct {
  dt_optim_name kind; /* optim.name */
  double momentum, weight_decay, beta1, beta2, eps, lars_threshold, lars_eta;
  bool nesterov, no_decay_bn_bias;
  dt_backend *be;       /* the backend of the parameter arenas */
  float *dev[4];        /* state arrays in backend memory, laid out like the weight arena */
  /* SGD, Adam and AMSGrad with a backend that has sgd_update_multi / adam_update_multi: per
   * weight-arena element, 1 = decayed, 2 = not decayed, 0 = padding (backend memory); the
   * update is then one call. NULL: per tensor. */
  uint8_t *decay_mask;
  /* LARS with a backend that has lars_update_multi: one row per trainable tensor (backend
   * memory); the update is then one call. NULL: per tensor. */
  dt_optim_segment *segments;
  int n_segments;
  size_t n;             /* floats per state array (the weight arena's) */
  /* Host copies of dev[] under their checkpoint names: written by dt_optim_state_to_host,
   * read by dt_optim_state_from_host (checkpoints save and load these). */
  dt_optim_state state;
  long steps; /* updates applied so far */
} dt_optim;

/* The parameters must be allocated (dt_params_alloc): the state goes to their backend. */
void dt_optim_init(dt_optim *opt, const dt_config *cfg, const dt_params *ps);
/* One update of every trainable tensor with learning rate lr; the gradients are multiplied by
 * grad_scale first (in place). skip: one int32 of backend memory, or NULL (always apply);
 * when it is set at the time the update runs on the backend, the update changes nothing (not
 * the weights, gradients or state; backend.h). opt->steps counts the call either way: a
 * caller that learns later that the flag was set calls dt_optim_unstep. */
void dt_optim_step(dt_optim *opt, dt_params *ps, double lr, float grad_scale,
                   const int32_t *skip);
/* The last dt_optim_step was skipped by its flag: count it as not taken (opt->steps--), so the
 * next update is numbered as that one would have been (Adam's bias corrections, SGD's first
 * step). */
void dt_optim_unstep(dt_optim *opt);
/* Copy the backend state into opt->state (before a checkpoint is saved), or back (after one
 * was loaded into opt->state). The state is laid out like the weights of ps: the host copies
 * are in logical order whatever the backend's storage order (dt_params_to_host). */
void dt_optim_state_to_host(dt_optim *opt, const dt_params *ps);
void dt_optim_state_from_host(dt_optim *opt, const dt_params *ps);
void dt_optim_free(dt_optim *opt);

#endif
