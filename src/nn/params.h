/* params.h: the parameter table and its flat arenas (docs/architecture.md "Parameter arenas"). One
 * fp32 arena each for trainable weights, their gradients, and buffers (batch-norm running
 * statistics), carved by a table of (name, shape, offset, count, flags). Names are the PyTorch
 * state_dict keys, shapes the logical PyTorch shapes (OIHW convolutions, (K, C) linear layers), so
 * a checkpoint maps one-to-one onto a PyTorch model. */
#ifndef DT_PARAMS_H
#define DT_PARAMS_H

#include "backend.h"

enum {
  DT_PARAM_NO_DECAY = 1u << 0, /* batch-norm parameters and biases (optim.no_decay_bn_bias) */
  DT_PARAM_BUFFER = 1u << 1,   /* not trained: lives in the buffer arena */
};

typedef enum {
  DT_INIT_KAIMING_NORMAL, /* N(0, 2 / fan), fan from model.init_mode */
  DT_INIT_ONES,
  DT_INIT_ZEROS,
  DT_INIT_UNIFORM_FAN_IN, /* U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default conv bias */
} dt_init;

typedef struct {
  char name[96];
  int ndim;
  int dims[4];
  size_t offset; /* into the weight arena, or the buffer arena for DT_PARAM_BUFFER */
  size_t count;
  unsigned flags;
  dt_init init;
  int fan_in, fan_out;
} dt_param;

typedef struct {
  dt_param *items;
  int count, cap;
  size_t n_weights; /* floats in the weight (and gradient) arena */
  size_t n_buffers; /* floats in the buffer arena */
  float *weights, *grads, *buffers; /* backend memory, allocated by dt_params_alloc */
  dt_backend *be;                   /* the backend that owns the arenas (dt_params_alloc) */
} dt_params;

/* Register a tensor, or return the existing one of that name (its shape must match).
 * Returns the index in the table. Only before dt_params_alloc. */
int dt_params_add(dt_params *ps, const char *name, int ndim, const int *dims, unsigned flags,
                  dt_init init, int fan_in, int fan_out);
int dt_params_find(const dt_params *ps, const char *name);
/* Pointer to the first float of entry i in its arena. */
float *dt_params_data(const dt_params *ps, int i);
float *dt_params_grad(const dt_params *ps, int i);
void dt_params_alloc(dt_params *ps, dt_backend *be);
/* Initialise every entry from (seed, entry index) per docs/reference-experiments.md "Common
 * conventions"; fan_out selects the Kaiming fan mode. Weights are drawn on the host and copied to
 * the backend. */
void dt_params_init(dt_params *ps, dt_backend *be, uint64_t seed, bool fan_out);
void dt_params_free(dt_params *ps, dt_backend *be);

#endif
