/* run_state.c: checkpoint policy (run_state.h): the checkpoint of a step's state, and a run's
 * start from one. */
#include "run_state.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/checkpoint.h"

_Static_assert(DT_CHECKPOINT_ALGO_COLS == DT_BACKEND_ALGO_COLS,
               "a checkpoint row of algorithm choices is a backend row");

dt_status dt_run_state_save(dt_trainer *t, const char *run_dir, dt_metrics *metrics, long epoch,
                            long step, long step_in_epoch, const dt_epoch_metrics *em) {
  if (t->rank != 0) return DT_OK;
  if (metrics && dt_metrics_flush(metrics) != DT_OK)
    fprintf(stderr, "dtrain: warning: %s\n", dt_error_message());
  dt_trainer_params_to_host(t);
  dt_optim_state_to_host(&t->opt, &t->model->params);
  dt_checkpoint_meta meta = {0};
  meta.epoch = epoch;
  meta.step = step;
  meta.step_in_epoch = step_in_epoch;
  meta.optimizer_steps = t->opt.steps;
  meta.world_size = t->world;
  meta.seed = t->cfg->train_seed;
  meta.loss_scale = t->ls.scale;
  meta.loss_scale_good = t->ls.good;
  if (em) {
    memcpy(meta.epoch_sums, em->sums, sizeof meta.epoch_sums);
    memcpy(meta.window_sums, em->win, sizeof meta.window_sums);
    meta.epoch_skipped = em->skipped;
  }
  snprintf(meta.model, sizeof meta.model, "%s", dt_model_name_str(t->cfg->model_name));
  meta.config_text = dt_config_text(t->cfg);
  /* The backend's algorithm choices, so that a resumed run makes the same (train.deterministic). */
  if (t->be->ops->algos_export) {
    meta.n_algos = t->be->ops->algos_export(t->be, NULL, 0);
    meta.algos = dt_xmalloc(DT_MAX(meta.n_algos, 1) * DT_CHECKPOINT_ALGO_COLS * sizeof(int32_t));
    meta.n_algos = DT_MIN(meta.n_algos, t->be->ops->algos_export(t->be, meta.algos, meta.n_algos));
    meta.algos_deterministic = t->cfg->train_deterministic;
  }
  char path[4200];
  dt_checkpoint_path(run_dir, step, path, sizeof path);
  dt_status st = dt_checkpoint_save(path, &t->model->params, t->host_weights, t->host_buffers,
                                    &t->opt.state, &meta);
  free(meta.config_text);
  free(meta.algos);
  if (st == DT_OK) dt_checkpoint_prune(run_dir, (int)t->cfg->output_keep_last);
  return st;
}

/* The checkpoint a run resumes from against the configuration it resumes with: the same seed
 * and model, a position (epoch, step in epoch, step) that this configuration's epochs can
 * have, a loss scale it can use, metrics sums of at most the images of the steps done. */
static dt_status check_resume_meta(const dt_trainer *t, const char *path,
                                   const dt_checkpoint_meta *m) {
  const dt_config *cfg = t->cfg;
  const long spe = t->steps_per_epoch;
  if (m->seed != cfg->train_seed)
    return dt_error_set(DT_ERR_DATA,
                        "checkpoint %s: seed %ld, but the configuration has [train] seed = %ld",
                        path, m->seed, cfg->train_seed);
  if (strcmp(m->model, dt_model_name_str(cfg->model_name)) != 0)
    return dt_error_set(DT_ERR_DATA,
                        "checkpoint %s: model %s, but the configuration has [model] name = %s",
                        path, m->model, dt_model_name_str(cfg->model_name));
  if (m->step_in_epoch > spe)
    return dt_error_set(DT_ERR_DATA,
                        "checkpoint %s: step_in_epoch = %ld is beyond the %ld steps of an epoch",
                        path, m->step_in_epoch, spe);
  if (m->epoch + (m->step_in_epoch > 0) > cfg->train_epochs)
    return dt_error_set(DT_ERR_DATA, "checkpoint %s: epoch %ld%s is beyond [train] epochs = %ld",
                        path, m->epoch + (m->step_in_epoch > 0),
                        m->step_in_epoch > 0 ? " (in progress)" : " (completed)",
                        cfg->train_epochs);
  if (m->step != m->epoch * spe + m->step_in_epoch)
    return dt_error_set(DT_ERR_DATA,
                        "checkpoint %s: step = %ld, but epoch %ld x %ld steps per epoch + "
                        "step_in_epoch %ld = %ld (corrupt, or another batch or dataset size?)",
                        path, m->step, m->epoch, spe, m->step_in_epoch,
                        m->epoch * spe + m->step_in_epoch);
  if (t->ls.active && m->loss_scale > 0 && m->loss_scale < DT_LOSS_SCALE_MIN)
    return dt_error_set(DT_ERR_DATA, "checkpoint %s: loss_scale = %g is below the smallest, %g",
                        path, m->loss_scale, DT_LOSS_SCALE_MIN);
  const double images = (double)m->step_in_epoch * (double)cfg->train_batch_size;
  if (m->epoch_sums[2] > images)
    return dt_error_set(DT_ERR_DATA,
                        "checkpoint %s: epoch_images = %g exceeds the %g images of %ld steps",
                        path, m->epoch_sums[2], images, m->step_in_epoch);
  return DT_OK;
}

dt_status dt_run_state_load(dt_trainer *t, const char *resume_dir, const char *init_path,
                            dt_run_start *start) {
  memset(start, 0, sizeof *start);
  if (!resume_dir && !init_path) return DT_OK;
  char path[4200];
  dt_status st;
  if (resume_dir) {
    st = dt_checkpoint_latest(resume_dir, path, sizeof path);
    if (st != DT_OK) return st;
  } else {
    snprintf(path, sizeof path, "%s", init_path);
  }
  dt_checkpoint_meta meta = {0};
  dt_trainer_params_to_host(t);
  st = dt_checkpoint_load(path, &t->model->params, t->host_weights, t->host_buffers,
                          resume_dir ? &t->opt.state : NULL, resume_dir ? &meta : NULL);
  if (st != DT_OK) return st;
  if (resume_dir) st = check_resume_meta(t, path, &meta);
  if (st != DT_OK) {
    free(meta.config_text);
    free(meta.algos);
    return st;
  }
  dt_trainer_params_from_host(t);
  if (resume_dir) {
    dt_optim_state_from_host(&t->opt, &t->model->params);
    memcpy(start->metrics.sums, meta.epoch_sums, sizeof meta.epoch_sums);
    memcpy(start->metrics.win, meta.window_sums, sizeof meta.window_sums);
    start->metrics.skipped = meta.epoch_skipped;
    start->step = meta.step;
    start->epoch = meta.epoch;
    start->step_in_epoch = meta.step_in_epoch;
    t->opt.steps = meta.optimizer_steps;
    if (t->ls.active && meta.loss_scale > 0) {
      t->ls.scale = meta.loss_scale;
      t->ls.good = meta.loss_scale_good;
    }
    snprintf(start->note, sizeof start->note,
             "resuming from %s: epoch %ld, step %ld (checkpoint of %d rank(s))", path,
             meta.epoch + (meta.step_in_epoch > 0), meta.step, meta.world_size);
    /* train.deterministic: the algorithms the interrupted run chose, not a new timing; but not
     * choices made without it (they may sum with atomics): those are timed anew. */
    if (t->cfg->train_deterministic && meta.n_algos > 0 && t->be->ops->algos_import) {
      if (meta.algos_deterministic != 0) {
        t->be->ops->algos_import(t->be, meta.algos, meta.n_algos);
      } else {
        const size_t len = strlen(start->note);
        snprintf(start->note + len, sizeof start->note - len,
                 "; its convolution algorithms were chosen with train.deterministic = false, "
                 "so deterministic ones are timed anew (the resumed run rounds differently)");
      }
    }
    free(meta.config_text);
    free(meta.algos);
  } else {
    snprintf(start->note, sizeof start->note, "initial weights from %s", path);
  }
  return DT_OK;
}
