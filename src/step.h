/* step.h: one training step on one rank, up to the update: forward and backward over the
 * rank's micro-batches (train.accum_steps) with the gradient accumulation stack, Dual-Cutout's
 * two views, CUDA-graph replay (train.cuda_graphs) and the GPU's input prefetch; the gradient
 * all-reduce (NCCL buckets overlapped with backward, or MPI through host memory); the update
 * on the loss scale's verdict; the merge of the batch-norm running statistics over the ranks.
 * Every rank and every world size computes the same numbers bit for bit (step.c says how). */
#ifndef DT_STEP_H
#define DT_STEP_H

#include "backend.h"
#include "comm/comm.h"
#include "config.h"
#include "data/loader.h"
#include "loss_scale.h"
#include "models/model.h"
#include "nn/grad_buckets.h"
#include "optim.h"
#include "replay.h"

/* Host scratch of a step. losses: page-locked (pinned) where the backend has host_alloc, as a
 * replayed step writes them; Dual-Cutout puts the second view's after the first's. */
typedef struct {
  bool pinned;
  float *losses;            /* (2 micro) per-sample losses */
  float *logits;            /* (micro, K) */
  float *logits2, *dlogits; /* Dual-Cutout: the second view's logits, a logits gradient */
} dt_step_scratch;

/* Partial gradient sums of a step's backward passes, a stack of host arrays each holding
 * passes[i] passes (step.c sum_gradients). */
typedef struct {
  float *sums[32];
  int passes[32], depth;
} dt_grad_stack;

/* The gradient sum across ranks. */
typedef struct {
  /* GPU runs: summed by NCCL on the device (NULL: through the host and MPI); with one
   * backward pass per step, bucket by bucket while backward runs (overlap). */
  dt_comm_nccl *nccl;
  dt_grad_buckets buckets;
  bool planned;  /* buckets planned (on the first overlapped pass) */
  size_t bucket; /* floats per bucket: train.bucket_mb */
  float *host;   /* MPI: the sum crossing ranks, host memory (world > 1) */
} dt_grad_allreduce;

/* The batch-norm running statistics around a step. */
typedef struct {
  float *before; /* before the step (skipped steps, merging ranks), or NULL when not needed */
  float *host;   /* (n_buffers) the rank's statistics after the step */
  double *delta; /* (n_buffers) each rank's share of the merged statistics (world > 1) */
} dt_bn_stats;

typedef struct {
  const dt_config *cfg;
  dt_comm *comm;
  dt_backend *be;
  dt_model *model;
  dt_loss_scale *ls;
  int rank, world, accum, micro, classes; /* micro: images per micro-batch */
  size_t image;    /* floats per image, C H W */
  bool dual;       /* Dual-Cutout: two views, two passes */
  bool accumulate; /* more than one backward pass per step */
  /* GPU input: the loader whose next batch is copied to the device while this step computes
   * (backend prefetch), or NULL. */
  dt_loader *prefetch_ld;
  dt_replay replay; /* train.cuda_graphs: the recorded device work of a step */
  dt_step_scratch host;
  dt_grad_stack stack;
  dt_grad_allreduce allreduce;
  dt_bn_stats bn;
} dt_step;

/* A step of micro images per micro-batch, cfg's train.accum_steps micro-batches per rank,
 * images of `image` floats and `classes` classes; dual: Dual-Cutout batches. */
void dt_step_init(dt_step *s, const dt_config *cfg, dt_comm *comm, dt_backend *be,
                  dt_model *model, dt_loss_scale *ls, int micro, size_t image, int classes,
                  bool dual);
void dt_step_free(dt_step *s);

/* Collective, after every rank has set up: the NCCL communicator of a CUDA run of several
 * ranks (DT_NCCL=1: also on one rank, to test the path on a single GPU). */
dt_status dt_step_start_nccl(dt_step *s, dt_device device);

/* Start ld at (epoch, first_step); a restart also drops batch memory that may have been
 * prefetched and never uploaded. */
void dt_step_start_loader(dt_step *s, dt_loader *ld, long epoch, long first_step);

/* Keep the running statistics as they are before the step (when they are kept at all). */
void dt_step_save_stats(dt_step *s);
/* Forward and backward over this rank's micro-batches of global step `step`; leaves the rank's
 * gradient sum in the gradient arena and adds the summed loss and top-1 count. Returns the
 * number of training passes (each updated the batch-norm running statistics). */
int dt_step_gradients(dt_step *s, const dt_batch *b, long step, double *loss_sum,
                      double *correct);
/* Sum the gradient arena over the ranks. */
void dt_step_allreduce(dt_step *s);
/* The loss scale's verdict on the step's summed gradients, given the step's loss summed over
 * the ranks and whether every rank's gradients are finite; DT_SCALE_APPLY: the optimizer
 * updated the weights at learning rate lr and the running statistics of the `passes` passes
 * were merged over the ranks. *used_scale: the scale the gradients carried. */
dt_scale_verdict dt_step_update(dt_step *s, dt_optim *opt, double lr, double loss, bool finite,
                                int passes, double *used_scale);
/* A skipped update: the forward passes also fed the running statistics: take them back. */
void dt_step_restore_stats(dt_step *s);

#endif
