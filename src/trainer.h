/* trainer.h: what a training command builds on every rank before its first step, identically
 * everywhere (--bench and a run alike): the thread plan, the dataset, the backend, the model,
 * the loaders, optimizer, schedule and loss scale, the step and the evaluator; then the
 * collective agreement that every rank set up and loaded the same data, and NCCL. Also the
 * host copies of the parameters that cross ranks and files. */
#ifndef DT_TRAINER_H
#define DT_TRAINER_H

#include "backend.h"
#include "comm/comm.h"
#include "config.h"
#include "data/loader.h"
#include "evaluate.h"
#include "loss_scale.h"
#include "models/model.h"
#include "optim.h"
#include "schedule.h"
#include "step.h"
#include "thread_share.h"

typedef struct {
  const dt_config *cfg;
  dt_comm *comm;
  int rank, world;
  dt_backend *be;
  dt_dataset ds;
  bool ds_loaded;
  dt_model *model;
  dt_loader *train_ld, *test_ld;
  dt_optim opt;
  dt_schedule sched;
  dt_precision precision; /* train.precision */
  dt_loss_scale ls;
  dt_step step;
  dt_evaluator eval;
  long steps_per_epoch;
  char threads_line[320]; /* "ranks: 8 x 8 threads (64 cores, 8 local ranks)" */
  dt_share *share;        /* this process's entry in the registry of dtrain processes, or NULL */
  dt_share_watch watch;   /* recounts the processes on these cores between steps */
  float *host_weights, *host_buffers; /* the parameters in host memory (checkpoints, broadcast) */
} dt_trainer;

/* Collective, first thing: dt_ranks_same_config, its message printed by rank 0. */
dt_status dt_trainer_same_config(dt_comm *comm, const dt_config *cfg);

/* Everything but the run directory, on every rank; collective over the node (the thread plan)
 * before anything that can fail on one rank only. An input error is returned with its
 * message; t can always be freed. */
dt_status dt_trainer_setup(dt_trainer *t, const dt_config *cfg, dt_comm *comm, dt_device device);

/* Collective, after every rank has set up (st: this rank's status so far): the verdict of all
 * ranks, then the dataset check (dt_ranks_same_dataset) and NCCL (dt_step_start_nccl). Returns
 * the same status on every rank; *st holds this rank's own failure, if any. */
dt_status dt_trainer_join(dt_trainer *t, dt_status *st, dt_device device);

void dt_trainer_free(dt_trainer *t);

/* Between steps: when dtrain processes of other jobs started or ended on this rank's cores
 * (thread_share.h), compute with the new share of them from the next op on and return true
 * with the change described in line; else false. */
bool dt_trainer_share_poll(dt_trainer *t, char *line, size_t size);

/* Copy the weights and running statistics between the arenas and host_weights / host_buffers. */
void dt_trainer_params_to_host(dt_trainer *t);
void dt_trainer_params_from_host(dt_trainer *t);
/* Collective: rank 0's weights and running statistics everywhere. */
void dt_trainer_broadcast_params(dt_trainer *t);

#endif
