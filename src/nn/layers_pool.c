/* layers_pool.c: the max and average pooling layer (builder: dt_graph_pool in graph.c). */
#include "nn/layers_internal.h"

/* ---- max / average pooling ---- */

static void pool_plan(dt_node *n, dt_graph *g) {
  const dt_tensor *x = in_t(g, n, 0);
  n->op = BE->pool_create(g->be, x->shape, x->layout, (dt_pool_kind)n->pool_kind, n->ksize,
                          n->stride, n->pad, true, &n->layout);
}

static void pool_forward(dt_node *n, dt_graph *g, bool train) {
  (void)train;
  BE->pool_forward(n->op, in_t(g, n, 0), out_t(g, n));
}

static void pool_backward(dt_node *n, dt_graph *g) {
  if (n->in[0] == 0) return;
  dt_tensor *dx = dt_graph_grad_begin(g, n->in[0]);
  BE->pool_backward(n->op, out_grad(g, n), dx);
  dt_graph_grad_end(g, n->in[0]);
}

const dt_layer_ops dt_layer_pool = {"pool", pool_plan, pool_forward, pool_backward, free_layer};
