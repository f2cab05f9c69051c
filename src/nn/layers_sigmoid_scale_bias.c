/* layers_sigmoid_scale_bias.c: the squeeze-and-excitation gate (sigmoid, channel scaling) and the
 * per-channel bias (VGG's convolution biases) layers (builders in graph.c). */
#include "nn/layers_internal.h"

/* ---- sigmoid ---- */

static void sigmoid_plan(dt_node *n, dt_graph *g) {
  const dt_tensor *x = in_t(g, n, 0);
  n->op = BE->sigmoid_create(g->be, x->shape, x->layout);
  n->layout = x->layout;
}

static void sigmoid_forward(dt_node *n, dt_graph *g, bool train) {
  (void)train;
  BE->sigmoid_forward(n->op, in_t(g, n, 0), out_t(g, n));
}

static void sigmoid_backward(dt_node *n, dt_graph *g) {
  if (n->in[0] == 0) return;
  dt_tensor *dx = dt_graph_grad_begin(g, n->in[0]);
  BE->sigmoid_backward(n->op, out_t(g, n), out_grad(g, n), dx);
  dt_graph_grad_end(g, n->in[0]);
}

const dt_layer_ops dt_layer_sigmoid = {"sigmoid", sigmoid_plan, sigmoid_forward,
                                       sigmoid_backward, free_layer};

/* ---- channel scaling (squeeze-and-excitation) ---- */

static void scale_plan(dt_node *n, dt_graph *g) {
  const dt_tensor *x = in_t(g, n, 0), *s = in_t(g, n, 1);
  n->op = BE->scale_create(g->be, x->shape, x->layout, s->layout);
  n->layout = x->layout;
}

static void scale_forward(dt_node *n, dt_graph *g, bool train) {
  (void)train;
  BE->scale_forward(n->op, in_t(g, n, 0), in_t(g, n, 1), out_t(g, n));
}

static void scale_backward(dt_node *n, dt_graph *g) {
  dt_tensor *dy = out_grad(g, n), *x = in_t(g, n, 0), *s = in_t(g, n, 1);
  if (n->in[0] != 0) {
    dt_tensor *dx = dt_graph_grad_begin(g, n->in[0]);
    BE->scale_backward(n->op, x, s, dy, dx, NULL);
    dt_graph_grad_end(g, n->in[0]);
  }
  if (n->in[1] != 0) {
    dt_tensor *ds = dt_graph_grad_begin(g, n->in[1]);
    BE->scale_backward(n->op, x, s, dy, NULL, ds);
    dt_graph_grad_end(g, n->in[1]);
  }
}

const dt_layer_ops dt_layer_scale = {"scale", scale_plan, scale_forward, scale_backward,
                                     free_layer};

/* ---- per-channel bias ---- */

static void bias_plan(dt_node *n, dt_graph *g) {
  const dt_tensor *x = in_t(g, n, 0);
  n->op = BE->bias_create(g->be, x->shape, x->layout);
  n->layout = x->layout;
}

static void bias_forward(dt_node *n, dt_graph *g, bool train) {
  (void)train;
  BE->bias_forward(n->op, in_t(g, n, 0), dt_params_data(g->params, n->p[0]), out_t(g, n));
}

static void bias_backward(dt_node *n, dt_graph *g) {
  dt_tensor *dy = out_grad(g, n);
  BE->bias_backward(n->op, dy, dt_params_grad(g->params, n->p[0]));
  if (n->in[0] != 0) dt_graph_grad_pass(g, n->in[0], dy);
}

const dt_layer_ops dt_layer_bias = {"bias", bias_plan, bias_forward, bias_backward, free_layer};
