/* step.c: one training step on one rank, up to the update (step.h). Rank r computes slice r of
 * each global batch in train.accum_steps micro-batches; gradients are summed over the
 * micro-batches (a balanced tree, sum_gradients) and the ranks (the loss is already scaled by
 * 1 / global batch); the running statistics are merged as one process would have updated them
 * (merge_shares, merge_finish). So any split of the same global batch gives the same numbers. */
#include "step.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

/* Host memory of the backend's own kind (page-locked where it has host_alloc), and its
 * release. */
static void *host_acquire(dt_backend *be, size_t bytes) {
  return be->ops->host_alloc ? be->ops->host_alloc(be, bytes) : dt_xmalloc(bytes);
}

static void host_release(dt_backend *be, void *p) {
  if (!p) return;
  if (be->ops->host_free) be->ops->host_free(be, p);
  else free(p);
}

void dt_step_init(dt_step *s, const dt_config *cfg, dt_comm *comm, dt_backend *be,
                  dt_model *model, dt_loss_scale *ls, int micro, size_t image, int classes,
                  bool dual) {
  memset(s, 0, sizeof *s);
  s->cfg = cfg;
  s->comm = comm;
  s->be = be;
  s->model = model;
  s->ls = ls;
  s->rank = dt_comm_rank(comm);
  s->world = dt_comm_size(comm);
  s->accum = (int)cfg->train_accum_steps;
  s->micro = micro;
  s->image = image;
  s->classes = classes;
  s->dual = dual;
  s->accumulate = s->accum > 1 || dual;
  /* Floats in an all-reduce bucket of train.bucket_mb MiB (at least one). */
  s->allreduce.bucket = (size_t)(cfg->train_bucket_mb * (1 << 20) / sizeof(float)) + 1;
  dt_comm_set_bucket(comm, s->allreduce.bucket);
  const size_t rows = (size_t)micro * (size_t)s->accum;
  const dt_params *ps = &model->params;
  const size_t nb = ps->n_buffers;
  const bool skippable = cfg->train_nonfinite == DT_TRAIN_NONFINITE_SKIP || ls->dynamic;
  dt_step_stats *st = &s->stats;
  st->mse_at = sizeof(double);
  st->losses_at = st->mse_at + (dual ? rows * sizeof(double) : 0);
  st->flag_at = st->losses_at + 2 * rows * sizeof(float);
  st->zero_bytes = st->flag_at + sizeof(int32_t);
  size_t end = st->zero_bytes;
  if (skippable || s->world > 1) { /* a skipped step puts them back; ranks merge them */
    st->before_at = end;
    end += nb * sizeof(float);
  }
  st->host_bytes = st->zero_bytes;
  if (s->world > 1) {
    st->after_at = end;
    end += nb * sizeof(float);
    st->host_bytes = end;
  }
  st->bytes = end;
  st->dev = be->ops->alloc(be, st->bytes);
  st->host = host_acquire(be, st->host_bytes);
  st->labels = be->ops->alloc(be, rows * sizeof(int32_t));
  if (be->ops->hold_host && be->ops->host_alloc) {
    st->in_targets = be->ops->host_alloc(be, rows * (size_t)classes * sizeof(float));
    st->in_labels = be->ops->host_alloc(be, rows * sizeof(int32_t));
  }
  s->reduce_count = 5 + (s->world > 1 ? nb : 0);
  s->reduce = dt_xmalloc(s->reduce_count * sizeof(double));
  if (s->world > 1) {
    s->bn.merged = host_acquire(be, DT_MAX(nb, 1) * sizeof(float));
  }
}


void dt_step_free(dt_step *s) {
  dt_comm_nccl_destroy(s->allreduce.nccl); /* before the backend: it waits for its all-reduces */
  s->allreduce.nccl = NULL;
  dt_backend *be = s->be;
  if (be) {
    dt_replay_free(&s->replay, be);
    /* Backend memory first: freeing it waits for the device, so no copy still reads the
     * page-locked host memory freed after it (the last merged statistics' upload). */
    be->ops->free(be, s->stats.dev);
    be->ops->free(be, s->stats.labels);
    for (size_t i = 0; i < DT_ARRAY_LEN(s->stack.sums); i++) be->ops->free(be, s->stack.sums[i]);
    host_release(be, s->stats.host);
    host_release(be, s->bn.merged);
    host_release(be, s->stats.in_targets);
    host_release(be, s->stats.in_labels);
  }
  dt_grad_buckets_free(&s->allreduce.buckets);
  free(s->allreduce.host);
  free(s->reduce);
  memset(s, 0, sizeof *s);
}

/* With NCCL the device sums the gradients (DT_NCCL=1 uses it on one rank too, to test the
 * path on a single GPU). Collective: after every rank has set up. */
dt_status dt_step_start_nccl(dt_step *s, dt_device device) {
  const char *force = getenv("DT_NCCL");
  if (device != DT_DEVICE_CUDA || (s->world == 1 && !(force && strcmp(force, "1") == 0)))
    return DT_OK;
  s->allreduce.nccl = dt_comm_nccl_create(s->comm);
  if (!s->allreduce.nccl) return DT_ERR_CONFIG;
  dt_comm_nccl_set_timeout(s->allreduce.nccl, s->cfg->comm_timeout_s);
  return DT_OK;
}

/* The backward hook of an overlapped step: all-reduce each bucket this node completed. */
static void launch_buckets(void *ctx, int node) {
  dt_step *s = ctx;
  dt_params *ps = &s->model->params;
  const dt_bucket *b;
  while ((b = dt_grad_buckets_next(&s->allreduce.buckets, node)) != NULL)
    dt_comm_nccl_allreduce_async(s->allreduce.nccl, ps->grads + b->offset, b->count,
                                 s->be->ops->native_stream(s->be));
}

/* Arm the overlap on the graph of a single-pass step (NCCL only). */
static void overlap_begin(dt_step *s, dt_graph *g) {
  if (!s->allreduce.nccl || s->accumulate) return;
  if (!s->allreduce.planned) {
    dt_grad_buckets_plan(&s->allreduce.buckets, g, s->allreduce.bucket);
    s->allreduce.planned = true;
  }
  dt_grad_buckets_reset(&s->allreduce.buckets);
  g->on_backward = launch_buckets;
  g->on_backward_ctx = s;
}

/* Sum the gradient arena over the ranks. NCCL: the buckets not yet launched by the overlap
 * (all of them after several passes), then the compute stream waits for the sums (on the
 * device). MPI: in place where backend memory is host memory (the CPU), else through
 * allreduce.host. */
void dt_step_allreduce(dt_step *s) {
  dt_params *ps = &s->model->params;
  if (s->allreduce.nccl) {
    void *stream = s->be->ops->native_stream(s->be);
    if (s->allreduce.planned && !s->accumulate) {
      const dt_bucket *b;
      while ((b = dt_grad_buckets_next(&s->allreduce.buckets, -1)) != NULL)
        dt_comm_nccl_allreduce_async(s->allreduce.nccl, ps->grads + b->offset, b->count, stream);
    } else {
      const size_t bucket = s->allreduce.bucket;
      for (size_t off = 0; off < ps->n_weights; off += bucket)
        dt_comm_nccl_allreduce_async(s->allreduce.nccl, ps->grads + off,
                                     DT_MIN(bucket, ps->n_weights - off), stream);
    }
    dt_comm_nccl_join(s->allreduce.nccl, stream);
    return;
  }
  if (s->world == 1) return;
  if (s->be->host_memory) {
    dt_comm_allreduce_sum(s->comm, ps->grads, ps->n_weights);
    return;
  }
  const size_t bytes = ps->n_weights * sizeof(float);
  if (!s->allreduce.host) s->allreduce.host = dt_xmalloc(DT_MAX(bytes, 1));
  s->be->ops->to_host(s->be, s->allreduce.host, ps->grads, bytes);
  dt_comm_allreduce_sum(s->comm, s->allreduce.host, ps->n_weights);
  s->be->ops->to_device(s->be, ps->grads, s->allreduce.host, bytes);
}

/* Batch-norm running statistics are updated per rank, once per training forward pass, from
 * its own micro-batches. They are merged as if one rank had run every pass of the step in
 * rank order (what a single process with ranks x accum_steps micro-batches computes), which
 * keeps every rank and every checkpoint identical for any split. With a = 1 - momentum, P
 * passes per rank and r0 the statistics before the step, rank r holds a^P r0 + c_r, and the
 * sequential result is a^(P W) r0 + sum_r a^(P (W - 1 - r)) c_r. A plain average would give
 * a^P r0 + mean_r c_r instead: too little decay, and a different result for every world size.
 * Both r0 and the rank's statistics after its passes come back in the step's one read-back
 * (the stats block); merge_shares writes each rank's share c_r a^(P (W - 1 - r)) into
 * `delta`, which the step's one reduction sums, and merge_finish uploads the result. */
static double merge_decay(const dt_step *s, int passes) {
  const double a = 1.0 - (double)dt_model_graph(s->model, s->micro, false)->bn_momentum;
  return pow(a, passes);
}

static void merge_shares(dt_step *s, int passes, double *delta) {
  const dt_params *ps = &s->model->params;
  const float *after = (const float *)((const char *)s->stats.host + s->stats.after_at);
  const float *r0 = (const float *)((const char *)s->stats.host + s->stats.before_at);
  const double a_p = merge_decay(s, passes), later = pow(a_p, s->world - 1 - s->rank);
  for (size_t i = 0; i < ps->n_buffers; i++)
    delta[i] = ((double)after[i] - a_p * r0[i]) * later;
}

/* Upload the merged statistics without waiting: the host copy stays as it is until the next
 * step's read-back, which waits for the copy. */
static void merge_finish(dt_step *s, int passes, const double *delta) {
  dt_params *ps = &s->model->params;
  dt_backend *be = s->be;
  const float *r0 = (const float *)((const char *)s->stats.host + s->stats.before_at);
  const double a_all = pow(merge_decay(s, passes), s->world);
  for (size_t i = 0; i < ps->n_buffers; i++)
    s->bn.merged[i] = (float)(a_all * r0[i] + delta[i]);
  if (be->ops->hold_host) be->ops->hold_host(be, true);
  be->ops->to_device(be, ps->buffers, s->bn.merged, ps->n_buffers * sizeof(float));
  if (be->ops->hold_host) be->ops->hold_host(be, false);
}

/* The factor of the loss gradient, S / global_n (S = 1 without loss scaling), in float as
 * S * fl(1 / global_n): for S a power of two exactly S times the unscaled factor, so that
 * scaling changes no rounding anywhere in backward. */
static float loss_grad(const dt_step *s, int global_n) {
  return (float)s->ls->scale * (1.0f / (float)global_n);
}

/* Add the top partial sum of the stack to the one below it. */
static void merge_top_gradients(dt_step *s) {
  float *dst = s->stack.sums[s->stack.depth - 2];
  const float *src = s->stack.sums[s->stack.depth - 1];
  s->be->ops->axpy(s->be, dst, src, NULL, s->model->params.n_weights, 1.0f); /* dst += src */
  s->stack.passes[s->stack.depth - 2] += s->stack.passes[s->stack.depth - 1];
  s->stack.depth--;
}

/* Add this backward pass's parameter gradients to the step's sum (pass 0 starts it). The
 * passes are added in fp32 as a balanced binary tree in pass order, (g0 + g1) + (g2 + g3),
 * by a stack that merges neighbours holding equally many passes: the order in which an
 * all-reduce by recursive doubling adds ranks. A plain running sum, ((g0 + g1) + g2) + g3,
 * rounds differently from 2 ranks x 2 passes or 4 ranks x 1, and training amplifies that
 * last-bit difference (pre-batch-norm biases have gradients that are mostly cancellation).
 * The stack lives in backend memory: nothing crosses to the host. */
static void sum_gradients(dt_step *s, int pass) {
  dt_params *ps = &s->model->params;
  dt_backend *be = s->be;
  if (!s->accumulate) return;
  if (pass == 0) s->stack.depth = 0;
  const int d = s->stack.depth++;
  DT_CHECK(d < (int)DT_ARRAY_LEN(s->stack.sums));
  if (!s->stack.sums[d])
    s->stack.sums[d] = be->ops->alloc(be, DT_MAX(ps->n_weights, 1) * sizeof(float));
  be->ops->copy(be, s->stack.sums[d], ps->grads, ps->n_weights * sizeof(float));
  s->stack.passes[d] = 1;
  while (s->stack.depth >= 2 &&
         s->stack.passes[s->stack.depth - 2] == s->stack.passes[s->stack.depth - 1])
    merge_top_gradients(s);
}

static float *stats_losses(const dt_step *s, void *block) {
  return (float *)((char *)block + s->stats.losses_at);
}
static double *stats_mse(const dt_step *s, void *block) {
  return (double *)((char *)block + s->stats.mse_at);
}

/* The labels of micro-batch rows [first, first + n) to backend memory, for the top-1 count
 * (not needed with mixed targets, which count by target weight); returns them there. */
static const int32_t *put_labels(dt_step *s, const dt_batch *b, const int32_t *labels,
                                 size_t first, int n) {
  if (b->mixed) return NULL;
  int32_t *dst = s->stats.labels + first;
  s->be->ops->to_device(s->be, dst, labels + first, (size_t)n * sizeof(int32_t));
  return dst;
}

/* The start of a step's device work: from here to dt_step_collect the batch's host memory
 * stays as it is (the next batch is taken after the step), so the backend may copy from it
 * without waiting (hold_host); targets and labels go through page-locked copies first. */
static void hold_batch(dt_step *s, const dt_batch *b, const float **targets,
                       const int32_t **labels) {
  _Static_assert(sizeof(int) == sizeof(int32_t), "labels are int32");
  dt_step_stats *st = &s->stats;
  *targets = b->targets;
  *labels = (const int32_t *)b->labels;
  if (!s->be->ops->hold_host) return;
  s->be->ops->hold_host(s->be, true);
  if (!st->in_targets) return;
  const size_t rows = (size_t)s->micro * (size_t)s->accum;
  memcpy(st->in_targets, b->targets, rows * (size_t)s->classes * sizeof(float));
  memcpy(st->in_labels, b->labels, rows * sizeof(int32_t));
  *targets = st->in_targets;
  *labels = st->in_labels;
}

/* Dual-Cutout on one micro-batch (docs/reference-experiments.md "Augmentations and losses"): z1 and
 * z2 from two forward passes with their own batch statistics; loss 0.5 [CE(z1, y) + CE(z2, y)] +
 * alpha MSE(z1, z2), CE over the global batch and MSE over its N x K logits; accuracy on (z1 + z2)
 * / 2. The MSE's gradient joins the logit gradients on the device (axpy); its per-sample sums
 * wait in s->stats for dt_step_collect. */
static void dual_cutout_step(dt_step *s, const float *x1, const float *x2, const float *targets,
                             const int32_t *labels, int global_n, uint64_t key, long offset,
                             size_t first, int *pass) {
  dt_backend *be = s->be;
  const int n = s->micro, K = s->classes;
  const double alpha = s->cfg->augment_dual_cutout_alpha;
  dt_graph *g1 = dt_model_graph_slot(s->model, n, false, 0);
  dt_graph *g2 = dt_model_graph_slot(s->model, n, false, 1);
  g1->step_key = g2->step_key = key;
  g1->sample_offset = g2->sample_offset = offset;
  const dt_tensor *z1 = dt_graph_forward(g1, x1, true), *z2 = dt_graph_forward(g2, x2, true);
  float *l1 = stats_losses(s, s->stats.dev) + 2 * first, *l2 = l1 + n;
  dt_graph_set_targets(g1, targets);
  dt_graph_run_loss(g1, 0.5f * loss_grad(s, global_n), l1);
  dt_graph_set_targets(g2, targets);
  dt_graph_run_loss(g2, 0.5f * loss_grad(s, global_n), l2);
  const size_t count = (size_t)n * K;
  const float scale = (float)(s->ls->scale * 2.0 * alpha / ((double)global_n * K));
  dt_graph *gs[2] = {g1, g2};
  /* dz_v += sign_v scale (z1 - z2), before either backward pass may reuse a logit buffer. */
  for (int v = 0; v < 2; v++) {
    const float sign = v == 0 ? 1.0f : -1.0f;
    be->ops->axpy(be, gs[v]->values[gs[v]->n_nodes].grad.data, z1->data, z2->data, count,
                  sign * scale);
  }
  be->ops->sq_diff_rows(be, z1, z2, n, K, stats_mse(s, s->stats.dev) + first);
  be->ops->top1(be, z1, z2, g1->targets, labels, n, K, (double *)s->stats.dev);
  for (int v = 0; v < 2; v++) {
    dt_graph_backward(gs[v]);
    sum_gradients(s, (*pass)++);
  }
}

/* A loader restart refills batch memory that may have been prefetched and never uploaded. */
void dt_step_start_loader(dt_step *s, dt_loader *ld, long epoch, long first_step) {
  if (s->be->ops->prefetch) s->be->ops->prefetch(s->be, NULL, 0);
  dt_loader_start(ld, epoch, first_step);
}

/* While the device runs this step's forward pass: wait for the loader's next batch and start
 * copying its images (single-pass steps, where upload takes the whole batch at once). */
static void prefetch_next(dt_step *s) {
  if (!s->prefetch_ld || !s->be->ops->prefetch || s->accumulate) return;
  const dt_batch *nb = dt_loader_peek(s->prefetch_ld);
  if (!nb || nb->n == 0) return;
  s->be->ops->prefetch(s->be, nb->images, (size_t)nb->n * s->image);
}

/* train.cuda_graphs applies to this step: a backend that records, one pass, no per-step host
 * input in the model, no NCCL hooks in backward. */
static bool replayable(const dt_step *s, const dt_graph *g) {
  return s->cfg->train_cuda_graphs && !s->replay.off && s->be->ops->capture_begin &&
         !s->accumulate && !s->allreduce.nccl && dt_graph_replayable(g);
}

/* What a recording of one training pass runs (replay_step). */
typedef struct {
  dt_graph *g;
  float grad_scale;
  float *losses;
} replay_record_ctx;

static void replay_record(void *ctx) {
  replay_record_ctx *c = ctx;
  dt_graph_run_forward(c->g, true);
  dt_graph_run_loss(c->g, c->grad_scale, c->losses);
  dt_graph_backward(c->g);
}

/* One pass with the device work replayed: inputs and targets go up first, the recorded
 * forward, loss and backward run as one unit, recorded anew when the graph, the loss
 * gradient factor (a new loss scale) or the backend's memory changed (dt_replay_pass). The
 * first two steps run op by op, so that every buffer and algorithm exists before recording.
 * Returns the logits. */
static const dt_tensor *replay_step(dt_step *s, dt_graph *g, const float *x,
                                    const float *targets, float grad_scale) {
  dt_graph_set_input(g, x);
  dt_graph_set_targets(g, targets);
  replay_record_ctx rc = {g, grad_scale, stats_losses(s, s->stats.dev)};
  if (dt_replay_pass(&s->replay, s->be, g, grad_scale, replay_record, &rc)) {
    prefetch_next(s);
  } else {
    /* Warm-up, or recording failed: nothing recorded has run. */
    dt_graph_run_forward(g, true);
    prefetch_next(s);
    dt_graph_run_loss(g, grad_scale, rc.losses);
    dt_graph_backward(g);
  }
  return &g->values[g->n_nodes].t;
}

/* Forward and backward over this rank's micro-batches of global step `step`; leaves the
 * rank's gradient sum in the gradient arena and the losses and top-1 count in s->stats.
 * Returns the number of training passes (each one updated the batch-norm running statistics).
 * Dropout and shake-shake draw from a key of (seed, step) and each sample's index in the
 * global batch, so they too are the same for any world size. */
int dt_step_gradients(dt_step *s, const dt_batch *b, long step) {
  dt_rng kr = dt_rng_key((uint64_t)s->cfg->train_seed, DT_RNG_DROPOUT, (uint64_t)step, 0);
  const uint64_t key = dt_rng_u64(&kr);
  dt_params *ps = &s->model->params;
  dt_backend *be = s->be;
  const size_t image = s->image;
  const int K = s->classes;
  int pass = 0;
  const float *all_targets;
  const int32_t *all_labels;
  hold_batch(s, b, &all_targets, &all_labels);
  be->ops->zero(be, s->stats.dev, s->stats.zero_bytes);
  double *correct = s->stats.dev; /* the count, at offset 0 */
  for (int k = 0; k < s->accum; k++) {
    const size_t first = (size_t)k * s->micro;
    const float *x = b->images + first * image, *targets = all_targets + first * K;
    const int32_t *labels = put_labels(s, b, all_labels, first, s->micro);
    const long offset = (long)s->rank * (b->global_n / s->world) + (long)first;
    if (b->images2) {
      dual_cutout_step(s, x, b->images2 + first * image, targets, labels, b->global_n, key,
                       offset, first, &pass);
      continue;
    }
    dt_graph *g = dt_model_graph(s->model, s->micro, false);
    g->step_key = key;
    g->sample_offset = offset;
    const dt_tensor *logits;
    if (replayable(s, g)) {
      logits = replay_step(s, g, x, targets, loss_grad(s, b->global_n));
    } else {
      logits = dt_graph_forward(g, x, true);
      prefetch_next(s);
      dt_graph_set_targets(g, targets);
      dt_graph_run_loss(g, loss_grad(s, b->global_n), stats_losses(s, s->stats.dev) + first);
      overlap_begin(s, g);
      dt_graph_backward(g);
      g->on_backward = NULL;
    }
    sum_gradients(s, pass++);
    be->ops->top1(be, logits, NULL, g->targets, labels, s->micro, K, correct);
  }
  if (pass > 1) {
    /* What is left on the stack (pass counts other than powers of two), from the top. */
    while (s->stack.depth > 1) merge_top_gradients(s);
    be->ops->copy(be, ps->grads, s->stack.sums[0], ps->n_weights * sizeof(float));
  }
  return pass;
}

bool dt_step_collect(dt_step *s, double *loss, double *correct) {
  dt_step_stats *st = &s->stats;
  if (s->allreduce.nccl)
    dt_comm_nccl_wait(s->allreduce.nccl, s->be->ops->native_stream(s->be),
                      "a training step and its all-reduces");
  if (s->be->ops->hold_host) s->be->ops->hold_host(s->be, false);
  s->be->ops->to_host(s->be, st->host, st->dev, st->host_bytes);
  const float *losses = stats_losses(s, st->host);
  const double *mse = stats_mse(s, st->host);
  const double alpha = s->cfg->augment_dual_cutout_alpha;
  const int n = s->micro, K = s->classes;
  double sum = 0;
  for (int k = 0; k < s->accum; k++) {
    const size_t first = (size_t)k * n;
    if (s->dual) {
      const float *l1 = losses + 2 * first, *l2 = l1 + n;
      for (int i = 0; i < n; i++)
        sum += 0.5 * ((double)l1[i] + l2[i]) + alpha * mse[first + (size_t)i] / K;
    } else {
      for (int i = 0; i < n; i++) sum += losses[first + (size_t)i];
    }
  }
  *loss = sum;
  memcpy(correct, st->host, sizeof(double));
  int32_t flag;
  memcpy(&flag, (const char *)st->host + st->flag_at, sizeof flag);
  return flag == 0;
}

/* The running statistics before the step: a skipped step puts them back, ranks merge from
 * them. */
static void save_stats(dt_step *s) {
  if (!s->stats.before_at) return;
  const dt_params *ps = &s->model->params;
  s->be->ops->copy(s->be, (char *)s->stats.dev + s->stats.before_at, ps->buffers,
                   ps->n_buffers * sizeof(float));
}

/* A skipped update: the forward passes also fed the running statistics: take them back. */
static void restore_stats(dt_step *s) {
  if (!s->stats.before_at) return;
  dt_params *ps = &s->model->params;
  s->be->ops->copy(s->be, ps->buffers, (const char *)s->stats.dev + s->stats.before_at,
                   ps->n_buffers * sizeof(float));
}

/* Make the step's flag the same on every rank: the maximum over the ranks (through NCCL
 * whenever it runs, one rank included: DT_NCCL=1 tests the path on one GPU). */
static void reduce_flag(dt_step *s, int32_t *flag) {
  dt_backend *be = s->be;
  if (s->allreduce.nccl) {
    void *stream = be->ops->native_stream(be);
    dt_comm_nccl_allreduce_max_i32_async(s->allreduce.nccl, flag, 1, stream);
    dt_comm_nccl_join(s->allreduce.nccl, stream);
  } else if (s->world == 1) {
    return;
  } else if (be->host_memory) {
    dt_comm_allreduce_max_i32(s->comm, flag, 1);
  } else {
    be->ops->to_host(be, &s->stats.flag_host, flag, sizeof(int32_t));
    dt_comm_allreduce_max_i32(s->comm, &s->stats.flag_host, 1);
    be->ops->to_device(be, flag, &s->stats.flag_host, sizeof(int32_t));
  }
}

void dt_step_update(dt_step *s, dt_optim *opt, double lr, bool overflow) {
  dt_params *ps = &s->model->params;
  dt_backend *be = s->be;
  dt_step_allreduce(s);
  if (overflow && s->rank == 0) {
    /* After the join: the write is enqueued on the compute stream, which has joined the
     * all-reduces, so it cannot race an NCCL reduction of the same bucket (and be lost in
     * it). The flag, reduced over every rank, then skips the update everywhere. */
    static const float inf = INFINITY;
    be->ops->to_device(be, ps->grads, &inf, sizeof inf);
  }
  int32_t *flag = (int32_t *)((char *)s->stats.dev + s->stats.flag_at);
  be->ops->flag_nonfinite(be, ps->grads, ps->n_weights, flag);
  be->ops->flag_nonfinite(be, stats_losses(s, s->stats.dev),
                          2 * (size_t)s->micro * (size_t)s->accum, flag);
  reduce_flag(s, flag);
  if (s->stats.after_at)
    be->ops->copy(be, (char *)s->stats.dev + s->stats.after_at, ps->buffers,
                  ps->n_buffers * sizeof(float));
  dt_optim_step(opt, ps, lr, (float)(1.0 / s->ls->scale), flag);
}

dt_step_result dt_step_run(dt_step *s, dt_optim *opt, const dt_batch *b, long step, double lr,
                           bool signalled, bool overflow) {
  save_stats(s);
  const int passes = dt_step_gradients(s, b, step);
  const double used_scale = s->ls->scale;
  dt_step_update(s, opt, lr, overflow);
  /* One reduction carries the metrics, every rank's view of signals and faults, and the
   * shares of the merged running statistics. */
  double *red = s->reduce;
  red[0] = red[1] = 0;
  red[2] = b->n;
  red[3] = signalled;
  red[4] = !dt_step_collect(s, &red[0], &red[1]);
  if (s->world > 1) merge_shares(s, passes, red + 5);
  dt_comm_allreduce_sum_f64(s->comm, red, s->reduce_count);
  dt_step_result r = {red[0], red[1], red[2], red[3] > 0, isfinite(red[0]), DT_SCALE_APPLY,
                      used_scale};
  r.verdict = r.loss_finite ? dt_loss_scale_update(s->ls, red[4] == 0) : DT_SCALE_NONFINITE;
  if (r.verdict == DT_SCALE_APPLY) {
    if (s->world > 1) merge_finish(s, passes, red + 5);
  } else {
    /* The device skipped the update already (the flag): the host catches up. */
    dt_optim_unstep(opt);
    restore_stats(s);
  }
  return r;
}
