/* evaluate.c: evaluation on the test split and the accuracy counts (evaluate.h). */
#include "evaluate.h"

#include <stdlib.h>

int dt_eval_label_rank(const float *z, int label, int classes) {
  const float target = z[label];
  int above = 0;
  for (int c = 0; c < classes; c++)
    if (z[c] > target || (z[c] == target && c < label)) above++;
  return above;
}

int dt_eval_topk_correct(const float *logits, const int *labels, int n, int classes, int k) {
  int correct = 0;
  for (int i = 0; i < n; i++)
    correct += dt_eval_label_rank(logits + (size_t)i * classes, labels[i], classes) < k;
  return correct;
}

int dt_eval_argmax(const float *z, int classes) {
  int best = 0;
  for (int c = 1; c < classes; c++)
    if (z[c] > z[best]) best = c;
  return best;
}

int dt_eval_loader_cfg(dt_loader_cfg *lc, long eval_batch_size, int test_count, int rank,
                       int world) {
  /* Buffers sized by the data present: an evaluation batch larger than the test set holds
   * the test set. */
  int E = (int)DT_MIN(eval_batch_size, (long)DT_MAX(test_count, 1));
  E = (E + world - 1) / world * world; /* equal slices of every full eval batch */
  lc->train = false;
  lc->global_batch = E;
  lc->slice_offset = rank * (E / world);
  lc->slice_count = E / world;
  return E;
}

void dt_evaluator_init(dt_evaluator *ev, dt_model *model, dt_backend *be, dt_comm *comm,
                       dt_loader *loader, int classes, int max_rows) {
  ev->model = model;
  ev->be = be;
  ev->comm = comm;
  ev->loader = loader;
  ev->classes = classes;
  const size_t rows = (size_t)DT_MAX(max_rows, 1);
  ev->pinned = be->ops->host_alloc != NULL;
  ev->losses = ev->pinned ? be->ops->host_alloc(be, rows * sizeof(float))
                          : dt_xmalloc(rows * sizeof(float));
  ev->logits = dt_xmalloc(rows * (size_t)classes * sizeof(float));
}

void dt_evaluator_free(dt_evaluator *ev) {
  if (ev->pinned && ev->losses) ev->be->ops->host_free(ev->be, ev->losses);
  else free(ev->losses);
  free(ev->logits);
  ev->losses = ev->logits = NULL;
}

dt_eval_result dt_evaluate(dt_evaluator *ev, dt_eval_sink sink, void *ctx) {
  double sums[4] = {0, 0, 0, 0}; /* loss, top1, top5, images */
  dt_loader_start(ev->loader, 0, 0);
  const dt_batch *b;
  const int K = ev->classes;
  while ((b = dt_loader_next(ev->loader)) != NULL) {
    if (b->n == 0) continue;
    dt_graph *g = dt_model_graph(ev->model, b->n, true);
    const dt_tensor *logits = dt_graph_forward(g, b->images, false);
    dt_graph_loss(g, b->targets, 1.0f, ev->losses);
    ev->be->ops->download(ev->be, logits, ev->logits);
    for (int i = 0; i < b->n; i++) sums[0] += ev->losses[i];
    sums[1] += dt_eval_topk_correct(ev->logits, b->labels, b->n, K, 1);
    sums[2] += dt_eval_topk_correct(ev->logits, b->labels, b->n, K, DT_MIN(5, K));
    sums[3] += b->n;
    if (sink) {
      const dt_eval_batch eb = {b->n, K, b->first, ev->logits, ev->losses, b->labels};
      sink(ctx, &eb);
    }
  }
  dt_comm_allreduce_sum_f64(ev->comm, sums, 4);
  dt_eval_result r = {sums[0] / sums[3], 100.0 * sums[1] / sums[3], 100.0 * sums[2] / sums[3],
                      sums[3]};
  return r;
}
