/* evaluate.h: evaluation of a model on the test split, every rank its slice of each evaluation
 * batch (data/loader.c), the sums reduced over the ranks. The training loop reports loss,
 * top-1 and top-5; a caller that needs per-image results (a confusion matrix, predictions)
 * passes a sink that sees every batch's logits, losses and labels with their test indices.
 * Also the accuracy counts the training step shares. */
#ifndef DT_EVALUATE_H
#define DT_EVALUATE_H

#include "backend.h"
#include "comm/comm.h"
#include "data/loader.h"
#include "models/model.h"

/* Over the whole test split (every rank gets the same numbers). */
typedef struct {
  double loss;   /* mean cross-entropy */
  double top1;   /* percent of images whose label has the largest logit */
  double top5;   /* percent with the label among the min(5, K) largest */
  double images; /* images evaluated */
} dt_eval_result;

/* One evaluation batch of this rank as the sink sees it (host memory, valid during the call).
 * Row i is test image first + i; the rows of all batches of all ranks cover the test split
 * once. */
typedef struct {
  int n, classes;       /* rows, K */
  long first;           /* test index of row 0 */
  const float *logits;  /* (n, K) */
  const float *losses;  /* (n) cross-entropy of each row */
  const int *labels;    /* (n) */
} dt_eval_batch;

/* Called on every rank for each of its non-empty evaluation batches, in test order. */
typedef void (*dt_eval_sink)(void *ctx, const dt_eval_batch *b);

typedef struct {
  dt_model *model;
  dt_backend *be;
  dt_comm *comm;
  dt_loader *loader; /* the test loader (dt_loader_create with train = false) */
  int classes;
  bool pinned;             /* losses from the backend's host_alloc */
  float *losses, *logits;  /* host scratch: (max_rows), (max_rows, K) */
} dt_evaluator;

/* The test loader's batches in lc (train.c's and --eval's alike): evaluation batches of
 * eval_batch_size images (at most the test set's test_count) rounded up to a multiple of the
 * ranks, each rank its equal slice. Returns that global batch E; a rank's batches hold at
 * most E / world images (dt_evaluator_init's max_rows). */
int dt_eval_loader_cfg(dt_loader_cfg *lc, long eval_batch_size, int test_count, int rank,
                       int world);

/* max_rows: the most images of one of this rank's evaluation batches. */
void dt_evaluator_init(dt_evaluator *ev, dt_model *model, dt_backend *be, dt_comm *comm,
                       dt_loader *loader, int classes, int max_rows);
void dt_evaluator_free(dt_evaluator *ev);

/* Collective: one pass over the test split in inference mode. sink NULL: the sums only. */
dt_eval_result dt_evaluate(dt_evaluator *ev, dt_eval_sink sink, void *ctx);

/* Classes ranked above the label in the logits z (K): larger, or equal and of a lower index.
 * The image is top-k correct when this is < k; its rank in a confusion matrix is 0. */
int dt_eval_label_rank(const float *z, int label, int classes);
/* Count of the n rows whose label is among the k largest logits (ties go to the lower class). */
int dt_eval_topk_correct(const float *logits, const int *labels, int n, int classes, int k);
/* The class of the largest logit (the lowest such class on ties): the prediction. */
int dt_eval_argmax(const float *z, int classes);

#endif
