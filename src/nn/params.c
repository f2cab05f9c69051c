/* params.c: parameter table, arenas and initialisation. */
#include "nn/params.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

int dt_params_find(const dt_params *ps, const char *name) {
  for (int i = 0; i < ps->count; i++)
    if (strcmp(ps->items[i].name, name) == 0) return i;
  return -1;
}

int dt_params_add(dt_params *ps, const char *name, int ndim, const int *dims, unsigned flags,
                  dt_init init, int fan_in, int fan_out) {
  size_t count = 1;
  for (int d = 0; d < ndim; d++) count *= (size_t)dims[d];
  int found = dt_params_find(ps, name);
  if (found >= 0) {
    const dt_param *p = &ps->items[found];
    DT_CHECK(p->ndim == ndim && p->count == count && p->flags == flags);
    return found;
  }
  DT_CHECK(ps->weights == NULL && strlen(name) < sizeof ps->items[0].name && ndim <= 4);
  if (ps->count == ps->cap) {
    ps->cap = ps->cap ? 2 * ps->cap : 64;
    ps->items = realloc(ps->items, (size_t)ps->cap * sizeof *ps->items);
    DT_CHECK(ps->items != NULL);
  }
  dt_param *p = &ps->items[ps->count];
  memset(p, 0, sizeof *p);
  snprintf(p->name, sizeof p->name, "%s", name);
  p->ndim = ndim;
  memcpy(p->dims, dims, (size_t)ndim * sizeof *dims);
  p->count = count;
  p->flags = flags;
  p->init = init;
  p->fan_in = fan_in;
  p->fan_out = fan_out;
  /* Keep every tensor 16-float aligned so vector loops and blocked reorders start aligned. */
  size_t *total = (flags & DT_PARAM_BUFFER) ? &ps->n_buffers : &ps->n_weights;
  p->offset = *total;
  *total += (count + 15) / 16 * 16;
  return ps->count++;
}

float *dt_params_data(const dt_params *ps, int i) {
  const dt_param *p = &ps->items[i];
  return ((p->flags & DT_PARAM_BUFFER) ? ps->buffers : ps->weights) + p->offset;
}

float *dt_params_grad(const dt_params *ps, int i) {
  const dt_param *p = &ps->items[i];
  DT_CHECK(!(p->flags & DT_PARAM_BUFFER));
  return ps->grads + p->offset;
}

void dt_params_alloc(dt_params *ps, dt_backend *be) {
  ps->be = be;
  ps->weights = be->ops->alloc(be, DT_MAX(ps->n_weights, 1) * sizeof(float));
  ps->grads = be->ops->alloc(be, DT_MAX(ps->n_weights, 1) * sizeof(float));
  ps->buffers = be->ops->alloc(be, DT_MAX(ps->n_buffers, 1) * sizeof(float));
}

void dt_params_init(dt_params *ps, dt_backend *be, uint64_t seed, bool fan_out) {
  DT_CHECK(ps->be == be);
  size_t max = 1;
  for (int i = 0; i < ps->count; i++) max = DT_MAX(max, ps->items[i].count);
  float *host = dt_xmalloc(max * sizeof *host);
  for (int i = 0; i < ps->count; i++) {
    const dt_param *p = &ps->items[i];
    switch (p->init) {
      case DT_INIT_ONES:
        for (size_t j = 0; j < p->count; j++) host[j] = 1.0f;
        break;
      case DT_INIT_ZEROS:
        memset(host, 0, p->count * sizeof *host);
        break;
      case DT_INIT_KAIMING_NORMAL: {
        double stdev = sqrt(2.0 / (fan_out ? p->fan_out : p->fan_in));
        dt_rng r = dt_rng_key(seed, DT_RNG_INIT, (uint64_t)i, 0);
        for (size_t j = 0; j < p->count; j++) host[j] = (float)(stdev * dt_rng_normal(&r));
        break;
      }
      case DT_INIT_UNIFORM_FAN_IN: {
        DT_CHECK(p->fan_in > 0);
        double bound = 1.0 / sqrt((double)p->fan_in);
        dt_rng r = dt_rng_key(seed, DT_RNG_INIT, (uint64_t)i, 0);
        for (size_t j = 0; j < p->count; j++)
          host[j] = (float)(bound * (2.0 * dt_rng_uniform(&r) - 1.0));
        break;
      }
    }
    dt_params_entry_from_host(ps, i, dt_params_data(ps, i), host);
  }
  free(host);
}

void dt_params_free(dt_params *ps, dt_backend *be) {
  if (ps->weights) be->ops->free(be, ps->weights);
  if (ps->grads) be->ops->free(be, ps->grads);
  if (ps->buffers) be->ops->free(be, ps->buffers);
  free(ps->items);
  memset(ps, 0, sizeof *ps);
}

bool dt_params_permuted(const dt_params *ps, const dt_param *p) {
  return ps->be && ps->be->weights_krsc && (p->flags & DT_PARAM_CONV) && p->ndim == 4 &&
         p->dims[1] > 1 && p->dims[2] * p->dims[3] > 1;
}

/* Entry p of a host array from src into dst (both p->count floats, not overlapping). */
static void entry_permute(const dt_param *p, float *dst, const float *src, bool to_backend) {
  dt_conv_weights_permute(dst, src, p->dims[0], p->dims[1], p->dims[2] * p->dims[3], to_backend);
}

void dt_params_order_host(const dt_params *ps, float *host, bool to_backend) {
  float *tmp = NULL;
  for (int i = 0; i < ps->count; i++) {
    const dt_param *p = &ps->items[i];
    if (!dt_params_permuted(ps, p)) continue;
    if (!tmp) {
      size_t max = 1;
      for (int j = 0; j < ps->count; j++) max = DT_MAX(max, ps->items[j].count);
      tmp = dt_xmalloc(max * sizeof *tmp);
    }
    memcpy(tmp, host + p->offset, p->count * sizeof *tmp);
    entry_permute(p, host + p->offset, tmp, to_backend);
  }
  free(tmp);
}

void dt_params_to_host(const dt_params *ps, float *host, const float *arena) {
  ps->be->ops->to_host(ps->be, host, arena, ps->n_weights * sizeof *host);
  dt_params_order_host(ps, host, false);
}

void dt_params_from_host(const dt_params *ps, float *arena, const float *host) {
  const size_t bytes = ps->n_weights * sizeof *host;
  bool any = false;
  for (int i = 0; i < ps->count && !any; i++) any = dt_params_permuted(ps, &ps->items[i]);
  if (!any) {
    ps->be->ops->to_device(ps->be, arena, host, bytes);
    return;
  }
  float *tmp = dt_xmalloc(DT_MAX(bytes, sizeof *tmp));
  memcpy(tmp, host, bytes);
  dt_params_order_host(ps, tmp, true);
  ps->be->ops->to_device(ps->be, arena, tmp, bytes);
  free(tmp);
}

void dt_params_entry_to_host(const dt_params *ps, int i, float *host, const float *src) {
  const dt_param *p = &ps->items[i];
  const size_t bytes = p->count * sizeof *host;
  if (!dt_params_permuted(ps, p)) {
    ps->be->ops->to_host(ps->be, host, src, bytes);
    return;
  }
  float *tmp = dt_xmalloc(bytes);
  ps->be->ops->to_host(ps->be, tmp, src, bytes);
  entry_permute(p, host, tmp, false);
  free(tmp);
}

void dt_params_entry_from_host(const dt_params *ps, int i, float *dst, const float *host) {
  const dt_param *p = &ps->items[i];
  const size_t bytes = p->count * sizeof *host;
  if (!dt_params_permuted(ps, p)) {
    ps->be->ops->to_device(ps->be, dst, host, bytes);
    return;
  }
  float *tmp = dt_xmalloc(bytes);
  entry_permute(p, tmp, host, true);
  ps->be->ops->to_device(ps->be, dst, tmp, bytes);
  free(tmp);
}
