/* trainer.c: the parts every rank builds before a training command's first step (trainer.h). */
#define _GNU_SOURCE
#include "trainer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_factory.h"
#include "loader_options.h"
#include "precision.h"
#include "ranks.h"
#include "thread_plan.h"

dt_status dt_trainer_same_config(dt_comm *comm, const dt_config *cfg) {
  dt_status st = dt_ranks_same_config(comm, cfg);
  if (st != DT_OK && dt_comm_rank(comm) == 0) fprintf(stderr, "dtrain: %s\n", dt_error_message());
  return st;
}

/* The loader's image buffers from the backend's page-locked memory (host_alloc). */
static void *loader_image_alloc(void *ctx, size_t bytes) {
  dt_backend *be = ctx;
  return be->ops->host_alloc(be, bytes);
}

static void loader_image_free(void *ctx, void *ptr) {
  dt_backend *be = ctx;
  be->ops->host_free(be, ptr);
}

dt_status dt_trainer_setup(dt_trainer *t, const dt_config *cfg, dt_comm *comm, dt_device device) {
  memset(t, 0, sizeof *t);
  t->cfg = cfg;
  t->comm = comm;
  t->rank = dt_comm_rank(comm);
  t->world = dt_comm_size(comm);
  const int accum = (int)cfg->train_accum_steps;
  /* Collective over the node, so before anything that can fail on one rank only. */
  dt_thread_plan plan;
  int threads = dt_thread_plan_start(comm, cfg, device, &plan, &t->share, t->threads_line,
                                     sizeof t->threads_line);
  int B = (int)cfg->train_batch_size;
  if (B % (t->world * accum) != 0)
    return dt_error_set(DT_ERR_CONFIG,
                        "%s: [train] batch_size = %d must be divisible by ranks x accum_steps = "
                        "%d x %d",
                        cfg->source ? cfg->source : "config", B, t->world, accum);
  const int micro = B / (t->world * accum);
  dt_status st = dt_dataset_load_config(&t->ds, cfg);
  if (st != DT_OK) return st;
  t->ds_loaded = true;
  dt_dataset_limit(&t->ds, (int)cfg->data_train_limit, (int)cfg->data_test_limit);
  if (t->ds.train.count < B)
    return dt_error_set(DT_ERR_CONFIG,
                        "train.batch_size = %d is larger than the %d training images", B,
                        t->ds.train.count);
  t->be = dt_backend_create(device, threads, dt_comm_local_rank(comm),
                            dt_comm_local_size(comm));
  if (!t->be) return DT_ERR_CONFIG;
  t->be->deterministic = cfg->train_deterministic;
  /* Every second at most: a recount of the processes on these cores costs a directory read. */
  if (device == DT_DEVICE_CPU && t->be->ops->set_threads)
    dt_share_watch_init(&t->watch, t->share, &plan, 1.0);
  t->precision = dt_precision_of(cfg->train_precision);
  if (t->precision != DT_PRECISION_FP32) {
    if (!t->be->ops->set_precision)
      return dt_error_set(DT_ERR_CONFIG,
                          "%s: [train] precision = %s is not supported by the %s backend, which "
                          "computes in fp32 only; use precision = fp32",
                          cfg->source ? cfg->source : "config",
                          dt_train_precision_str(cfg->train_precision),
                          t->be->ops->name);
    st = t->be->ops->set_precision(t->be, t->precision);
    if (st != DT_OK) return st;
  }
  dt_loss_scale_init(&t->ls, cfg);
  const dt_split *tr = &t->ds.train;
  t->model = dt_model_create(cfg, t->be, tr->channels, tr->height, tr->width, t->ds.classes);
  int per_rank = B / t->world;
  dt_loader_cfg lc;
  dt_erase_cfg erase;
  dt_mix_cfg mix;
  dt_loader_cfg_from_config(&lc, &erase, &mix, cfg, &t->ds);
  lc.slice_offset = t->rank * per_rank;
  lc.slice_count = per_rank;
  if (t->be->ops->host_alloc) {
    lc.image_alloc = loader_image_alloc;
    lc.image_free = loader_image_free;
    lc.image_ctx = t->be;
  }
  t->train_ld = dt_loader_create_train(&lc, &erase, &mix);
  const int E =
      dt_eval_loader_cfg(&lc, cfg->train_eval_batch_size, t->ds.test.count, t->rank, t->world);
  t->test_ld = dt_loader_create(&lc);
  t->steps_per_epoch = dt_loader_steps(t->train_ld);
  dt_schedule_init(&t->sched, cfg, t->steps_per_epoch);
  dt_optim_init(&t->opt, cfg, &t->model->params);
  const size_t image = (size_t)tr->channels * tr->height * tr->width;
  dt_step_init(&t->step, cfg, comm, t->be, t->model, &t->ls, micro, image, t->ds.classes,
               erase.dual_cutout);
  dt_evaluator_init(&t->eval, t->model, t->be, comm, t->test_ld, t->ds.classes, E / t->world);
  const dt_params *ps = &t->model->params;
  t->host_weights = dt_xmalloc(DT_MAX(ps->n_weights, 1) * sizeof(float));
  t->host_buffers = dt_xmalloc(DT_MAX(ps->n_buffers, 1) * sizeof(float));
  return DT_OK;
}

dt_status dt_trainer_join(dt_trainer *t, dt_status *st, dt_device device) {
  if (dt_ranks_agree(t->comm, *st) == DT_OK && dt_ranks_same_dataset(t->comm, t->cfg, &t->ds, st))
    *st = dt_step_start_nccl(&t->step, device);
  return dt_ranks_agree(t->comm, *st);
}

void dt_trainer_free(dt_trainer *t) {
  dt_step_free(&t->step); /* NCCL first, before the backend: it waits for its all-reduces */
  if (t->be) dt_evaluator_free(&t->eval);
  dt_loader_free(t->train_ld);
  dt_loader_free(t->test_ld);
  dt_optim_free(&t->opt);
  dt_model_free(t->model);
  if (t->ds_loaded) dt_dataset_free(&t->ds);
  if (t->be) t->be->ops->destroy(t->be);
  dt_share_leave(t->share);
  free(t->host_weights);
  free(t->host_buffers);
  memset(t, 0, sizeof *t);
}

bool dt_trainer_share_poll(dt_trainer *t, char *line, size_t size) {
  int before = 0;
  int threads = dt_share_watch_poll(&t->watch, dt_now(), &before);
  if (threads == 0) return false;
  t->be->ops->set_threads(t->be, threads);
  dt_share_describe_change(&t->watch, before, line, size);
  return true;
}

void dt_trainer_params_to_host(dt_trainer *t) {
  dt_params *ps = &t->model->params;
  dt_params_to_host(ps, t->host_weights, ps->weights);
  t->be->ops->to_host(t->be, t->host_buffers, ps->buffers, ps->n_buffers * sizeof(float));
}

void dt_trainer_params_from_host(dt_trainer *t) {
  dt_params *ps = &t->model->params;
  dt_params_from_host(ps, ps->weights, t->host_weights);
  t->be->ops->to_device(t->be, ps->buffers, t->host_buffers, ps->n_buffers * sizeof(float));
}

void dt_trainer_broadcast_params(dt_trainer *t) {
  if (t->world == 1) return;
  dt_trainer_params_to_host(t);
  const dt_params *ps = &t->model->params;
  dt_comm_broadcast(t->comm, t->host_weights, ps->n_weights * sizeof(float), 0);
  dt_comm_broadcast(t->comm, t->host_buffers, ps->n_buffers * sizeof(float), 0);
  dt_trainer_params_from_host(t);
}
