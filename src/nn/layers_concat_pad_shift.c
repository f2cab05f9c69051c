/* layers_concat_pad_shift.c: the layers that only move values: channel concatenation (DenseNet),
 * channel zero-padding (PyramidNet's shortcuts) and the spatial shift (builders in graph.c). */
#include "nn/layers_internal.h"

/* ---- channel concatenation ---- */

static void concat_plan(dt_node *n, dt_graph *g) {
  const dt_tensor *a = in_t(g, n, 0), *b = in_t(g, n, 1);
  n->op = BE->concat_create(g->be, a->shape, a->layout, b->shape, b->layout, &n->layout);
}

static void concat_forward(dt_node *n, dt_graph *g, bool train) {
  (void)train;
  BE->concat_forward(n->op, in_t(g, n, 0), in_t(g, n, 1), out_t(g, n));
}

static void concat_backward(dt_node *n, dt_graph *g) {
  dt_tensor *dy = out_grad(g, n);
  /* One input at a time: both may need the graph's single gradient scratch. */
  if (n->in[0] != 0) {
    dt_tensor *da = dt_graph_grad_begin(g, n->in[0]);
    BE->concat_backward(n->op, dy, da, NULL);
    dt_graph_grad_end(g, n->in[0]);
  }
  if (n->in[1] != 0) {
    dt_tensor *db = dt_graph_grad_begin(g, n->in[1]);
    BE->concat_backward(n->op, dy, NULL, db);
    dt_graph_grad_end(g, n->in[1]);
  }
}

const dt_layer_ops dt_layer_concat = {"concat", concat_plan, concat_forward, concat_backward,
                                      free_layer};

/* ---- channel zero-padding ---- */

static void pad_plan(dt_node *n, dt_graph *g) {
  const dt_tensor *x = in_t(g, n, 0);
  n->op = BE->pad_channels_create(g->be, x->shape, x->layout, n->k, &n->layout);
}

static void pad_forward(dt_node *n, dt_graph *g, bool train) {
  (void)train;
  BE->pad_channels_forward(n->op, in_t(g, n, 0), out_t(g, n));
}

static void pad_backward(dt_node *n, dt_graph *g) {
  if (n->in[0] == 0) return;
  dt_tensor *dx = dt_graph_grad_begin(g, n->in[0]);
  BE->pad_channels_backward(n->op, out_grad(g, n), dx);
  dt_graph_grad_end(g, n->in[0]);
}

const dt_layer_ops dt_layer_pad_channels = {"pad_channels", pad_plan, pad_forward, pad_backward,
                                            free_layer};

/* ---- spatial shift ---- */

static void shift_plan(dt_node *n, dt_graph *g) {
  const dt_tensor *x = in_t(g, n, 0);
  n->op = BE->shift_create(g->be, x->shape, x->layout, n->shift_y, n->shift_x);
  n->layout = x->layout;
}

static void shift_forward(dt_node *n, dt_graph *g, bool train) {
  (void)train;
  BE->shift_forward(n->op, in_t(g, n, 0), out_t(g, n));
}

static void shift_backward(dt_node *n, dt_graph *g) {
  if (n->in[0] == 0) return;
  dt_tensor *dx = dt_graph_grad_begin(g, n->in[0]);
  BE->shift_backward(n->op, out_grad(g, n), dx);
  dt_graph_grad_end(g, n->in[0]);
}

const dt_layer_ops dt_layer_shift = {"shift", shift_plan, shift_forward, shift_backward,
                                     free_layer};
