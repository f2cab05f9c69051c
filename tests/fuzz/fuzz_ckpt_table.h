/* fuzz_ckpt_table.h: what both checkpoint harnesses share: the small parameter table they load
 * into (a conv, a batch norm and a linear layer), host arrays filled with one value, and the
 * checked load itself. */
#ifndef DT_FUZZ_CKPT_TABLE_H
#define DT_FUZZ_CKPT_TABLE_H

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "io/checkpoint.h"
#include "nn/params.h"

#define FUZZ_SENTINEL 12345.0f

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

static inline int fuzz_all_equal(const float *x, size_t n, float v) {
  for (size_t i = 0; i < n; i++)
    if (x[i] != v) return 0;
  return 1;
}

/* Load the checkpoint at path into table ps as --resume does (weights, statistics, one
 * optimizer state "momentum", metadata) and abort on a broken property: a refusal must leave a
 * message and the outputs untouched (checkpoint.h), and no load may leave an HDF5 object open.
 * `accepted`, if not NULL, sees what a successful load produced. DT_FUZZ_REPORT=all prints
 * every refusal. */
static inline void fuzz_ckpt_load(const char *path, const dt_params *ps,
                                  void (*accepted)(const dt_checkpoint_meta *meta, const float *w,
                                                   const float *b, const float *m)) {
  float *w = fuzz_filled(ps->n_weights, FUZZ_SENTINEL), *b = fuzz_filled(ps->n_buffers, FUZZ_SENTINEL),
        *m = fuzz_filled(ps->n_weights, FUZZ_SENTINEL);
  dt_optim_state opt = {.names = {"momentum"}, .arrays = {m}, .n_states = 1};
  dt_checkpoint_meta meta = {0};
  dt_error_clear();
  if (dt_checkpoint_load(path, ps, w, b, &opt, &meta) == DT_OK) {
    if (accepted) accepted(&meta, w, b, m);
    free(meta.config_text);
    free(meta.algos);
  } else {
    if (strcmp(dt_error_message(), "unknown error") == 0) abort();
    const char *report = getenv("DT_FUZZ_REPORT");
    if (report && strcmp(report, "all") == 0)
      fprintf(stderr, "fuzz: refused: %s\n", dt_error_message());
    if (!fuzz_all_equal(w, ps->n_weights, FUZZ_SENTINEL) ||
        !fuzz_all_equal(b, ps->n_buffers, FUZZ_SENTINEL) ||
        !fuzz_all_equal(m, ps->n_weights, FUZZ_SENTINEL) || meta.config_text)
      abort();
  }
  ssize_t open_ids = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
  if (open_ids != 0) {
    fprintf(stderr, "fuzz: %zd HDF5 object(s) left open by a load\n", open_ids);
    abort();
  }
  free(w);
  free(b);
  free(m);
  dt_error_clear();
}

#endif
