/* layers_internal.h: the helpers shared by the layer files src/nn/layers_*.c (not a public
 * header): a node's input and output values, its output gradient, its index in the random
 * stream, and the free function of the layers that hold one backend op plus mix/keys buffers. */
#ifndef DT_LAYERS_INTERNAL_H
#define DT_LAYERS_INTERNAL_H

#include <stdint.h>
#include <stdlib.h>

#include "nn/graph.h"

#define BE (g->be->ops)

static inline dt_tensor *in_t(dt_graph *g, const dt_node *n, int i) {
  return dt_graph_value(g, n->in[i]);
}
static inline dt_tensor *out_t(dt_graph *g, const dt_node *n) { return dt_graph_value(g, n->out); }
static inline dt_tensor *out_grad(dt_graph *g, const dt_node *n) { return &g->values[n->out].grad; }
/* The node's index, a coordinate of its draws from the counter-based random stream. */
static inline uint64_t node_index(const dt_node *n) { return (uint64_t)(n->out - 1); }

static inline void free_layer(dt_node *n, dt_graph *g) {
  if (n->op) BE->op_free(n->op);
  free(n->mix);
  free(n->keys);
}

#endif
