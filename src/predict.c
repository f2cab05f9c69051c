/* predict.c: a checkpoint's model for inference (predict.h), in the arithmetic training
 * evaluated with. */
#include "predict.h"

#include <stdlib.h>
#include <string.h>

#include "backend_factory.h"
#include "io/checkpoint.h"
#include "precision.h"

dt_status dt_predictor_init(dt_predictor *p, const dt_config *cfg, dt_device device, int threads,
                            int local_rank, int local_size, int C, int H, int W, int classes,
                            const char *path, long *epoch, long *step) {
  memset(p, 0, sizeof *p);
  p->classes = classes;
  p->be = dt_backend_create(device, threads, local_rank, local_size);
  if (!p->be) return DT_ERR_CONFIG;
  p->be->deterministic = cfg->train_deterministic;
  /* The arithmetic training evaluated with (train.precision). */
  dt_precision precision;
  precision = dt_precision_of(cfg->train_precision);
  if (precision != DT_PRECISION_FP32) {
    dt_status st = p->be->ops->set_precision
                       ? p->be->ops->set_precision(p->be, precision)
                       : dt_error_set(DT_ERR_CONFIG,
                                      "%s: [train] precision = %s is not supported by the %s "
                                      "backend",
                                      cfg->source ? cfg->source : "config",
                                      dt_train_precision_str(cfg->train_precision),
                                      p->be->ops->name);
    if (st != DT_OK) {
      dt_predictor_free(p);
      return st;
    }
  }
  p->model = dt_model_create(cfg, p->be, C, H, W, classes);
  const dt_params *ps = &p->model->params;
  float *weights = dt_xmalloc(DT_MAX(ps->n_weights, 1) * sizeof(float));
  float *buffers = dt_xmalloc(DT_MAX(ps->n_buffers, 1) * sizeof(float));
  dt_checkpoint_meta meta = {0};
  dt_status st = dt_checkpoint_load(path, ps, weights, buffers, NULL, &meta);
  free(meta.config_text);
  free(meta.algos);
  *epoch = meta.epoch;
  *step = meta.step;
  if (st == DT_OK) {
    dt_params_from_host(ps, ps->weights, weights);
    p->be->ops->to_device(p->be, ps->buffers, buffers, ps->n_buffers * sizeof(float));
  }
  free(weights);
  free(buffers);
  if (st != DT_OK) dt_predictor_free(p);
  return st;
}

void dt_predictor_free(dt_predictor *p) {
  dt_model_free(p->model);
  if (p->be) p->be->ops->destroy(p->be);
  memset(p, 0, sizeof *p);
}
