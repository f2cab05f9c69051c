/* step.h: one training step on one rank, up to the update: forward and backward over the
 * rank's micro-batches (train.accum_steps) with the gradient accumulation stack, Dual-Cutout's
 * two views, CUDA-graph replay (train.cuda_graphs) and the GPU's input prefetch; the gradient
 * all-reduce (NCCL buckets overlapped with backward, or MPI through host memory); the update
 * on the loss scale's verdict; the merge of the batch-norm running statistics over the ranks.
 * Losses, top-1 counts, gradient sums, the non-finite check and the statistics to merge stay
 * in backend memory, and the update is enqueued before the host knows the verdict (the
 * optimizer skips itself on the device when the step's flag is set): a step waits for the
 * device once, after the update (dt_step_collect), on any number of ranks.
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

/* What a step computes besides the gradients, in backend memory, and its host copy: read
 * back in one to_host per step (dt_step_collect), the step's only wait for the device. One
 * block: the top-1 count (a double), Dual-Cutout's squared logit differences per sample
 * (doubles, rows of them when dual), the per-sample losses (floats, rows of them, 2 rows
 * when dual: each micro-batch's first view, then its second), the step's non-finite flag
 * (int32: some summed gradient, or some rank's loss, is not finite; the same on every rank),
 * then, where needed, the batch-norm running statistics before the step (a skipped step
 * puts them back; ranks merge from them) and after this rank's passes (ranks merge them).
 * rows = micro-batch x train.accum_steps. */
typedef struct {
  void *dev, *host; /* host: page-locked where the backend has host_alloc */
  size_t bytes;      /* of dev */
  size_t zero_bytes; /* the part cleared at every step: up to the flag */
  size_t host_bytes; /* the part read back: up to the flag, or everything with several ranks */
  size_t mse_at, losses_at, flag_at;  /* byte offsets (the count is at 0) */
  size_t before_at, after_at;         /* (n_buffers floats each), or 0 when not kept */
  int32_t flag_host; /* the flag on its way through MPI (backend memory that is not host's) */
  int32_t *labels; /* (rows) this step's labels in backend memory (top-1 without mixing) */
  /* Where the backend can hold host memory (hold_host): page-locked copies of the batch's
   * targets (rows, K) and labels (rows) that the step's uploads read without waiting. */
  float *in_targets;
  int32_t *in_labels;
} dt_step_stats;

/* Partial gradient sums of a step's backward passes, a stack of arrays in backend memory each
 * holding passes[i] passes (step.c sum_gradients). */
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

/* The batch-norm running statistics merged over the ranks (world > 1): the result on its
 * way to the device (host memory, page-locked where the backend has host_alloc). */
typedef struct {
  float *merged;
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
  /* The step's one host reduction: loss, top-1, images, signals, faults, then (world > 1)
   * each rank's shares of the merged running statistics. */
  double *reduce;
  size_t reduce_count;
  /* GPU input: the loader whose next batch is copied to the device while this step computes
   * (backend prefetch), or NULL. */
  dt_loader *prefetch_ld;
  dt_replay replay; /* train.cuda_graphs: the recorded device work of a step */
  dt_step_stats stats;
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

/* One training step of batch b, global step `step`: forward and backward over this rank's
 * micro-batches, the sum over the ranks, the update at learning rate lr on the loss scale's
 * verdict, the running statistics merged over the ranks (or taken back with the update on a
 * skipped step). signalled: this rank caught a stop signal; overflow: make rank 0's gradient
 * sum infinite (fault injection for the tests of loss scaling). */
typedef struct {
  double loss, correct, images; /* summed over the ranks */
  bool signalled;               /* some rank was signalled */
  bool loss_finite;             /* the summed loss is finite */
  dt_scale_verdict verdict;     /* DT_SCALE_APPLY: the update was applied */
  double used_scale;            /* the loss scale the gradients carried */
} dt_step_result;
dt_step_result dt_step_run(dt_step *s, dt_optim *opt, const dt_batch *b, long step, double lr,
                           bool signalled, bool overflow);

/* The parts of dt_step_run, for --bench. dt_step_gradients: forward and backward over this
 * rank's micro-batches of global step `step`; leaves the rank's gradient sum in the gradient
 * arena and the step's losses and top-1 count in s->stats (backend memory). Returns the number
 * of training passes (each updated the batch-norm running statistics). */
int dt_step_gradients(dt_step *s, const dt_batch *b, long step);
/* Sum the gradient arena over the ranks. */
void dt_step_allreduce(dt_step *s);
/* Everything after dt_step_gradients up to the wait, enqueued without waiting: the sum over
 * the ranks (dt_step_allreduce), the step's non-finite flag (the summed gradients and this
 * rank's losses, reduced to the same value on every rank), the statistics to merge, and the
 * update at lr, which the device skips when the flag is set. overflow: make rank 0's gradient
 * sum infinite first (fault injection). */
void dt_step_update(dt_step *s, dt_optim *opt, double lr, bool overflow);
/* The step's one wait for the device (bounded with NCCL: dt_comm_nccl_wait): s->stats to the
 * host; *loss, *correct: this rank's summed loss and top-1 count; returns whether the step's
 * flag is clear (the update was applied on the device). */
bool dt_step_collect(dt_step *s, double *loss, double *correct);

#endif
