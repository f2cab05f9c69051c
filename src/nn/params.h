/* params.h: the parameter table and its flat arenas (docs/architecture.md "Parameter arenas"). One
 * fp32 arena each for trainable weights, their gradients, and buffers (batch-norm running
 * statistics), carved by a table of (name, shape, offset, count, flags). Names are the PyTorch
 * state_dict keys, shapes the logical PyTorch shapes (OIHW convolutions, (K, C) linear layers), so
 * a checkpoint maps one-to-one onto a PyTorch model.
 *
 * Storage order: in backend memory a convolution weight (DT_PARAM_CONV) is in the backend's
 * order (dt_backend.weights_krsc: OIHW, or KRSC on the CUDA backend), and so are its gradient
 * and its optimizer state (the optimizer and the all-reduce are elementwise; a LARS norm is
 * per tensor, though summed in storage order: in double, so that the two orders' last-bit
 * differences rarely reach the float step). Every host view is logical: host code that reads
 * or writes weight-arena arrays (checkpoints, broadcast, tests) moves them through
 * dt_params_to_host / dt_params_from_host (or the _entry_ forms for one tensor); only a round
 * trip that treats the elements alike (the MPI all-reduce of the gradients) may copy raw. */
#ifndef DT_PARAMS_H
#define DT_PARAMS_H

#include "backend.h"

enum {
  DT_PARAM_NO_DECAY = 1u << 0, /* batch-norm parameters and biases (optim.no_decay_bn_bias) */
  DT_PARAM_BUFFER = 1u << 1,   /* not trained: lives in the buffer arena */
  DT_PARAM_CONV = 1u << 2,     /* a convolution weight (K, C/G, R, S): backend order (above) */
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

/* Whether entry p is stored in another order than the logical one: a convolution weight of a
 * KRSC backend with R S > 1 and C/G > 1 (for the others both orders are the same bytes). */
bool dt_params_permuted(const dt_params *ps, const dt_param *p);
/* Permute a host array laid out like the weight arena (n_weights floats) in place: to_backend,
 * from the logical order into the backend's; else back. */
void dt_params_order_host(const dt_params *ps, float *host, bool to_backend);
/* Copy an array laid out like the weight arena (the weights, the gradients, an optimizer state
 * array: n_weights floats of backend memory) to the host in logical order, or from the host
 * in logical order into backend memory. */
void dt_params_to_host(const dt_params *ps, float *host, const float *arena);
void dt_params_from_host(const dt_params *ps, float *arena, const float *host);
/* The same for entry i alone (p->count floats): src / dst is entry i's first float in such an
 * arena (dt_params_data, dt_params_grad). */
void dt_params_entry_to_host(const dt_params *ps, int i, float *host, const float *src);
void dt_params_entry_from_host(const dt_params *ps, int i, float *dst, const float *host);

#endif
