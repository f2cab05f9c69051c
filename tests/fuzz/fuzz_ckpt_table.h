/* fuzz_ckpt_table.h: the small parameter table both checkpoint harnesses load into (a conv, a
 * batch norm and a linear layer), and host arrays filled with one value. */
#ifndef DT_FUZZ_CKPT_TABLE_H
#define DT_FUZZ_CKPT_TABLE_H

#include <stdlib.h>
#include <string.h>

#include "nn/params.h"

/* Host arrays only: no backend, no dt_params_alloc. */
static inline void fuzz_ckpt_table(dt_params *ps) {
  memset(ps, 0, sizeof *ps);
  int conv[4] = {4, 3, 3, 3}, c[1] = {4}, fc[2] = {10, 4}, k[1] = {10};
  dt_params_add(ps, "conv1.weight", 4, conv, 0, DT_INIT_KAIMING_NORMAL, 27, 36);
  dt_params_add(ps, "bn1.weight", 1, c, DT_PARAM_NO_DECAY, DT_INIT_ONES, 0, 0);
  dt_params_add(ps, "bn1.bias", 1, c, DT_PARAM_NO_DECAY, DT_INIT_ZEROS, 0, 0);
  dt_params_add(ps, "bn1.running_mean", 1, c, DT_PARAM_BUFFER, DT_INIT_ZEROS, 0, 0);
  dt_params_add(ps, "bn1.running_var", 1, c, DT_PARAM_BUFFER, DT_INIT_ONES, 0, 0);
  dt_params_add(ps, "fc.weight", 2, fc, 0, DT_INIT_KAIMING_NORMAL, fc[1], 10);
  dt_params_add(ps, "fc.bias", 1, k, DT_PARAM_NO_DECAY, DT_INIT_ZEROS, 0, 0);
}

/* n floats of value v (at least one allocated), for the caller to free. */
static inline float *fuzz_filled(size_t n, float v) {
  float *x = malloc((n ? n : 1) * sizeof(float));
  for (size_t i = 0; i < n; i++) x[i] = v;
  return x;
}

#endif
