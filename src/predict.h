/* predict.h: a trained model for inference outside a training run (--eval, --predict): the
 * backend, the model of a configuration and the weights and batch-norm statistics of a
 * checkpoint, for evaluate.c's dt_evaluate to run, the pass training's evaluation makes. */
#ifndef DT_PREDICT_H
#define DT_PREDICT_H

#include "backend.h"
#include "config.h"
#include "models/model.h"

typedef struct {
  dt_backend *be;
  dt_model *model;
  int classes;
} dt_predictor;

/* Build cfg's model for images (C, H, W) and `classes` classes on a backend of `device` with
 * `threads` threads (local_rank / local_size pick the GPU as in dt_backend_create), and load
 * the weights and running statistics of the checkpoint at path (its epochs and steps done into
 * *epoch and *step). DT_ERR_CONFIG when the backend
 * is not available or the precision not supported, DT_ERR_DATA naming the checkpoint when its
 * tensors do not fit the model; *p is then freed. */
dt_status dt_predictor_init(dt_predictor *p, const dt_config *cfg, dt_device device, int threads,
                            int local_rank, int local_size, int C, int H, int W, int classes,
                            const char *path, long *epoch, long *step);
void dt_predictor_free(dt_predictor *p);

#endif
