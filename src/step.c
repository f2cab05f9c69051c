/* step.c: one training step on one rank, up to the update (step.h). Rank r computes slice r of
 * each global batch in train.accum_steps micro-batches; gradients are summed over the
 * micro-batches (a balanced tree, sum_gradients) and the ranks (the loss is already scaled by
 * 1 / global batch); the running statistics are merged as one process would have updated them
 * (merge_buffers). So any split of the same global batch gives the same numbers. */
#include "step.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "evaluate.h"
#include "rng.h"

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
  const size_t rows = (size_t)micro * (size_t)s->accum, logits = rows * (size_t)classes;
  s->host.pinned = be->ops->host_alloc != NULL;
  s->host.losses = s->host.pinned ? be->ops->host_alloc(be, 2 * rows * sizeof(float))
                               : dt_xmalloc(2 * rows * sizeof(float));
  s->host.logits = dt_xmalloc(logits * sizeof(float));
  if (dual) {
    s->host.logits2 = dt_xmalloc(logits * sizeof(float));
    s->host.dlogits = dt_xmalloc(logits * sizeof(float));
  }
  const dt_params *ps = &model->params;
  const size_t nb = DT_MAX(ps->n_buffers, 1);
  if (cfg->train_nonfinite == DT_TRAIN_NONFINITE_SKIP || s->world > 1 || ls->dynamic)
    s->bn.before = dt_xmalloc(nb * sizeof(float));
  if (s->world > 1) {
    s->bn.host = dt_xmalloc(nb * sizeof(float));
    s->bn.delta = dt_xmalloc(nb * sizeof(double));
    s->allreduce.host = dt_xmalloc(DT_MAX(ps->n_weights, 1) * sizeof(float));
  }
}

void dt_step_free(dt_step *s) {
  dt_comm_nccl_destroy(s->allreduce.nccl); /* before the backend: it waits for its all-reduces */
  s->allreduce.nccl = NULL;
  if (s->be) dt_replay_free(&s->replay, s->be);
  if (s->host.pinned && s->host.losses) s->be->ops->host_free(s->be, s->host.losses);
  else free(s->host.losses);
  s->host.losses = NULL;
  dt_grad_buckets_free(&s->allreduce.buckets);
  free(s->host.logits);
  free(s->host.logits2);
  free(s->host.dlogits);
  for (size_t i = 0; i < DT_ARRAY_LEN(s->stack.sums); i++) free(s->stack.sums[i]);
  free(s->allreduce.host);
  free(s->bn.before);
  free(s->bn.host);
  free(s->bn.delta);
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
 * (all of them after several passes), then the compute stream waits for the sums. MPI: the
 * comm works on host memory and the arena is backend memory, so the sum goes through
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
  const size_t bytes = ps->n_weights * sizeof(float);
  s->be->ops->to_host(s->be, s->allreduce.host, ps->grads, bytes);
  dt_comm_allreduce_sum(s->comm, s->allreduce.host, ps->n_weights);
  s->be->ops->to_device(s->be, ps->grads, s->allreduce.host, bytes);
}

/* Batch-norm running statistics are updated per rank, once per training forward pass, from
 * its own micro-batches. They are merged as if one rank had run every pass of the step in
 * rank order (what a single process with ranks x accum_steps micro-batches computes), which
 * keeps every rank and every checkpoint identical for any split. With a = 1 - momentum, P
 * passes per rank and r0 the statistics before the step (bn.before), rank r holds
 * a^P r0 + c_r, and the sequential result is a^(P W) r0 + sum_r a^(P (W - 1 - r)) c_r. A plain
 * average would give a^P r0 + mean_r c_r instead: too little decay, and a different result
 * for every world size. */
static void merge_buffers(dt_step *s, int passes) {
  if (s->world == 1) return;
  dt_params *ps = &s->model->params;
  s->be->ops->to_host(s->be, s->bn.host, ps->buffers, ps->n_buffers * sizeof(float));
  const double a = 1.0 - (double)dt_model_graph(s->model, s->micro, false)->bn_momentum;
  const double a_p = pow(a, passes), later = pow(a_p, s->world - 1 - s->rank);
  const double a_all = pow(a_p, s->world);
  const float *r0 = s->bn.before;
  for (size_t i = 0; i < ps->n_buffers; i++)
    s->bn.delta[i] = ((double)s->bn.host[i] - a_p * r0[i]) * later;
  dt_comm_allreduce_sum_f64(s->comm, s->bn.delta, ps->n_buffers);
  for (size_t i = 0; i < ps->n_buffers; i++)
    s->bn.host[i] = (float)(a_all * r0[i] + s->bn.delta[i]);
  s->be->ops->to_device(s->be, ps->buffers, s->bn.host, ps->n_buffers * sizeof(float));
}

/* Training accuracy of n rows: the label match, or with mixed targets the reference mix of the
 * accuracies, sum_i target[i, argmax z_i]. */
static double train_correct(const float *logits, const float *targets, const int *labels, int n,
                            int K, bool mixed) {
  if (!mixed) return dt_eval_topk_correct(logits, labels, n, K, 1);
  double c = 0;
  for (int i = 0; i < n; i++)
    c += targets[(size_t)i * K + dt_eval_argmax(logits + (size_t)i * K, K)];
  return c;
}

/* The factor of the loss gradient, S / global_n (S = 1 without loss scaling), in float as
 * S * fl(1 / global_n): for S a power of two exactly S times the unscaled factor, so that
 * scaling changes no rounding anywhere in backward. */
static float loss_grad(const dt_step *s, int global_n) {
  return (float)s->ls->scale * (1.0f / (float)global_n);
}

/* Add the top partial sum of the stack to the one below it. */
static void merge_top_gradients(dt_step *s) {
  const size_t n = s->model->params.n_weights;
  float *dst = s->stack.sums[s->stack.depth - 2];
  const float *src = s->stack.sums[s->stack.depth - 1];
  for (size_t j = 0; j < n; j++) dst[j] += src[j];
  s->stack.passes[s->stack.depth - 2] += s->stack.passes[s->stack.depth - 1];
  s->stack.depth--;
}

/* Add this backward pass's parameter gradients to the step's sum (pass 0 starts it). The
 * passes are added in fp32 as a balanced binary tree in pass order, (g0 + g1) + (g2 + g3),
 * by a stack that merges neighbours holding equally many passes: the order in which an
 * all-reduce by recursive doubling adds ranks. A plain running sum, ((g0 + g1) + g2) + g3,
 * rounds differently from 2 ranks x 2 passes or 4 ranks x 1, and training amplifies that
 * last-bit difference (pre-batch-norm biases have gradients that are mostly cancellation). */
static void sum_gradients(dt_step *s, int pass) {
  dt_params *ps = &s->model->params;
  if (!s->accumulate) return;
  if (pass == 0) s->stack.depth = 0;
  const int d = s->stack.depth++;
  DT_CHECK(d < (int)DT_ARRAY_LEN(s->stack.sums));
  if (!s->stack.sums[d]) s->stack.sums[d] = dt_xmalloc(DT_MAX(ps->n_weights, 1) * sizeof(float));
  s->be->ops->to_host(s->be, s->stack.sums[d], ps->grads, ps->n_weights * sizeof(float));
  s->stack.passes[d] = 1;
  while (s->stack.depth >= 2 &&
         s->stack.passes[s->stack.depth - 2] == s->stack.passes[s->stack.depth - 1])
    merge_top_gradients(s);
}

/* Dual-Cutout on one micro-batch (docs/reference-experiments.md "Augmentations and losses"): z1 and
 * z2 from two forward passes with their own batch statistics; loss 0.5 [CE(z1, y) + CE(z2, y)] +
 * alpha MSE(z1, z2), CE over the global batch and MSE over its N x K logits; accuracy on (z1 + z2)
 * / 2. */
static void dual_cutout_step(dt_step *s, const float *x1, const float *x2, const float *targets,
                             const int *labels, int global_n, uint64_t key, long offset, int *pass,
                             double *loss_sum, double *correct) {
  const int n = s->micro, K = s->classes;
  const double alpha = s->cfg->augment_dual_cutout_alpha;
  dt_graph *g1 = dt_model_graph_slot(s->model, n, false, 0);
  dt_graph *g2 = dt_model_graph_slot(s->model, n, false, 1);
  g1->step_key = g2->step_key = key;
  g1->sample_offset = g2->sample_offset = offset;
  const dt_tensor *z1 = dt_graph_forward(g1, x1, true), *z2 = dt_graph_forward(g2, x2, true);
  float *l2 = s->host.losses + n;
  dt_graph_loss(g1, targets, 0.5f * loss_grad(s, global_n), s->host.losses);
  dt_graph_loss(g2, targets, 0.5f * loss_grad(s, global_n), l2);
  s->be->ops->download(s->be, z1, s->host.logits);
  s->be->ops->download(s->be, z2, s->host.logits2);
  const size_t bytes = (size_t)n * K * sizeof(float);
  const float scale = (float)(s->ls->scale * 2.0 * alpha / ((double)global_n * K));
  dt_graph *gs[2] = {g1, g2};
  for (int v = 0; v < 2; v++) {
    dt_tensor *dz = &gs[v]->values[gs[v]->n_nodes].grad;
    s->be->ops->to_host(s->be, s->host.dlogits, dz->data, bytes);
    const float sign = v == 0 ? 1.0f : -1.0f;
    for (size_t j = 0; j < (size_t)n * K; j++)
      s->host.dlogits[j] += sign * scale * (s->host.logits[j] - s->host.logits2[j]);
    s->be->ops->to_device(s->be, dz->data, s->host.dlogits, bytes);
    dt_graph_backward(gs[v]);
    sum_gradients(s, (*pass)++);
  }
  for (int i = 0; i < n; i++) {
    double mse = 0;
    for (int c = 0; c < K; c++) {
      double d = (double)s->host.logits[i * K + c] - s->host.logits2[i * K + c];
      mse += d * d;
    }
    *loss_sum += 0.5 * ((double)s->host.losses[i] + l2[i]) + alpha * mse / K;
  }
  for (size_t j = 0; j < (size_t)n * K; j++)
    s->host.logits[j] = 0.5f * (s->host.logits[j] + s->host.logits2[j]);
  *correct += dt_eval_topk_correct(s->host.logits, labels, n, K, 1);
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
  replay_record_ctx rc = {g, grad_scale, s->host.losses};
  if (dt_replay_pass(&s->replay, s->be, g, grad_scale, replay_record, &rc)) {
    prefetch_next(s);
  } else {
    /* Warm-up, or recording failed: nothing recorded has run. */
    dt_graph_run_forward(g, true);
    prefetch_next(s);
    dt_graph_run_loss(g, grad_scale, s->host.losses);
    dt_graph_backward(g);
  }
  return &g->values[g->n_nodes].t;
}

/* Forward and backward over this rank's micro-batches of global step `step`; leaves the
 * rank's gradient sum in the gradient arena. Adds the summed loss and top-1 count. Returns the
 * number of training passes (each one updated the batch-norm running statistics). Dropout and
 * shake-shake draw from a key of (seed, step) and each sample's index in the global batch, so
 * they too are the same for any world size. */
int dt_step_gradients(dt_step *s, const dt_batch *b, long step, double *loss_sum,
                      double *correct) {
  dt_rng kr = dt_rng_key((uint64_t)s->cfg->train_seed, DT_RNG_DROPOUT, (uint64_t)step, 0);
  const uint64_t key = dt_rng_u64(&kr);
  dt_params *ps = &s->model->params;
  const size_t image = s->image;
  const int K = s->classes;
  int pass = 0;
  for (int k = 0; k < s->accum; k++) {
    const size_t first = (size_t)k * s->micro;
    const float *x = b->images + first * image, *targets = b->targets + first * K;
    const int *labels = b->labels + first;
    const long offset = (long)s->rank * (b->global_n / s->world) + (long)first;
    if (b->images2) {
      dual_cutout_step(s, x, b->images2 + first * image, targets, labels, b->global_n, key, offset,
                       &pass, loss_sum, correct);
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
      dt_graph_loss(g, targets, loss_grad(s, b->global_n), s->host.losses);
      overlap_begin(s, g);
      dt_graph_backward(g);
      g->on_backward = NULL;
    }
    sum_gradients(s, pass++);
    s->be->ops->download(s->be, logits, s->host.logits);
    for (int i = 0; i < s->micro; i++) *loss_sum += s->host.losses[i];
    *correct += train_correct(s->host.logits, targets, labels, s->micro, K, b->mixed);
  }
  if (pass > 1) {
    /* What is left on the stack (pass counts other than powers of two), from the top. */
    while (s->stack.depth > 1) merge_top_gradients(s);
    s->be->ops->to_device(s->be, ps->grads, s->stack.sums[0], ps->n_weights * sizeof(float));
  }
  return pass;
}

void dt_step_save_stats(dt_step *s) {
  if (!s->bn.before) return;
  const dt_params *ps = &s->model->params;
  s->be->ops->to_host(s->be, s->bn.before, ps->buffers, ps->n_buffers * sizeof(float));
}

void dt_step_restore_stats(dt_step *s) {
  dt_params *ps = &s->model->params;
  s->be->ops->to_device(s->be, ps->buffers, s->bn.before, ps->n_buffers * sizeof(float));
}

dt_scale_verdict dt_step_update(dt_step *s, dt_optim *opt, double lr, double loss, bool finite,
                                int passes, double *used_scale) {
  /* The gradients carry this step's loss scale until the update divides it out. */
  *used_scale = s->ls->scale;
  const dt_scale_verdict verdict =
      isfinite(loss) ? dt_loss_scale_update(s->ls, finite) : DT_SCALE_NONFINITE;
  if (verdict == DT_SCALE_APPLY) {
    dt_optim_step(opt, &s->model->params, lr, (float)(1.0 / *used_scale));
    merge_buffers(s, passes);
  }
  return verdict;
}
