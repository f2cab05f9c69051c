/* grad_buckets.h: the gradient arena cut into buckets that can be all-reduced while backward is
 * still running (docs/architecture.md "Comm": overlap). Backward visits the nodes in reverse, and
 * each node writes the gradients of its own parameters once; the parameters sit in the arena in the
 * order the builders created them (forward order). So cutting the arena from its end into
 * contiguous runs of whole parameters of about `bucket_floats` gives buckets that fill up one after
 * the other as backward goes on. A bucket is ready after the backward of the earliest node owning
 * one of its parameters; every rank plans the same buckets from the same graph, so they are
 * launched in the same order everywhere (as NCCL requires). */
#ifndef DT_GRAD_BUCKETS_H
#define DT_GRAD_BUCKETS_H

#include "nn/graph.h"

typedef struct {
  size_t offset, count; /* floats of the weight (gradient) arena */
  int ready_node;       /* final after this node's backward; -1: only after the whole pass */
} dt_bucket;

typedef struct {
  dt_bucket *buckets; /* in launch order: ready_node descending, then offset descending */
  int n_buckets;
  int next; /* the first bucket not yet launched in this backward pass */
} dt_grad_buckets;

/* Plan the buckets of graph g's parameters (bucket_floats >= 1; a parameter larger than that
 * is a bucket of its own). Together they cover every trainable parameter exactly once. */
void dt_grad_buckets_plan(dt_grad_buckets *b, const dt_graph *g, size_t bucket_floats);
/* Start a backward pass: nothing launched yet. */
void dt_grad_buckets_reset(dt_grad_buckets *b);
/* The next bucket that is ready after the backward of `node` (node -1: the pass is over and
 * every remaining bucket is ready), or NULL; advances the cursor. */
const dt_bucket *dt_grad_buckets_next(dt_grad_buckets *b, int node);
void dt_grad_buckets_free(dt_grad_buckets *b);

#endif
