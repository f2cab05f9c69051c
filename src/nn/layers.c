/* layers.c: the layer kinds of the graph. Each is a small table of functions (plan, forward,
 * backward, free) over the node's settings; the arithmetic is the backend's. */
#include <string.h>

#include "nn/graph.h"

#define BE (g->be->ops)

static float *weight(dt_graph *g, const dt_node *n, int i) { return dt_params_data(g->params, n->p[i]); }
static float *grad(dt_graph *g, const dt_node *n, int i) { return dt_params_grad(g->params, n->p[i]); }
static dt_tensor *in_t(dt_graph *g, const dt_node *n) { return dt_graph_value(g, n->in[0]); }
static dt_tensor *out_t(dt_graph *g, const dt_node *n) { return dt_graph_value(g, n->out); }
static dt_tensor *out_grad(dt_graph *g, const dt_node *n) { return &g->values[n->out].grad; }

static void free_ops(dt_node *n, dt_graph *g) {
  if (n->op) BE->op_free(n->op);
  if (n->aux) BE->op_free(n->aux);
  if (n->save_mean) BE->free(g->be, n->save_mean);
  if (n->save_var) BE->free(g->be, n->save_var);
}

/* ---- convolution (no bias), optionally adding a residual value to its output ---- */

static void conv_plan(dt_node *n, dt_graph *g) {
  const dt_tensor *x = in_t(g, n);
  dt_conv_params p = {x->shape.n, x->shape.c, x->shape.h, x->shape.w, n->k, n->ksize, n->ksize,
                      n->stride, n->pad, n->groups, n->in[0] != 0 && !g->bn_eval};
  /* The sum must be stored like the residual it adds to. */
  n->layout = n->residual >= 0 ? g->values[n->residual].t.layout : NULL;
  n->op = BE->conv_create(g->be, &p, x->layout, &n->layout);
  if (n->residual >= 0) {
    const dt_value *r = &g->values[n->residual];
    const dt_node *producer = n->residual > 0 ? &g->nodes[n->residual - 1] : NULL;
    /* The residual's buffer can hold the sum only when nothing else reads it and its
     * producer's backward does not need its output (a convolution's does not). */
    n->residual_inplace = r->consumers == 1 && producer && producer->ops == &dt_layer_conv &&
                          !producer->residual_inplace && r->t.layout == n->layout;
    if (!n->residual_inplace) n->aux = BE->eltwise_create(g->be, n->shape, n->layout);
  }
}

static void conv_forward(dt_node *n, dt_graph *g, bool train) {
  (void)train;
  dt_tensor *y = out_t(g, n);
  BE->conv_forward(n->op, in_t(g, n), weight(g, n, 0), y, n->residual_inplace);
  if (n->residual >= 0 && !n->residual_inplace)
    BE->accumulate(n->aux, dt_graph_value(g, n->residual), y);
}

static void conv_backward(dt_node *n, dt_graph *g) {
  dt_tensor *dy = out_grad(g, n);
  BE->conv_backward_weights(n->op, in_t(g, n), dy, grad(g, n, 0));
  if (n->in[0] != 0) {
    dt_tensor *dx = dt_graph_grad_begin(g, n->in[0]);
    BE->conv_backward_data(n->op, dy, weight(g, n, 0), dx);
    dt_graph_grad_end(g, n->in[0]);
  }
  if (n->residual >= 0) dt_graph_grad_pass(g, n->residual, dy);
}

const dt_layer_ops dt_layer_conv = {"conv", conv_plan, conv_forward, conv_backward, free_ops};

/* ---- batch norm, optionally fused with the ReLU that follows it ---- */

static void bn_plan(dt_node *n, dt_graph *g) {
  const dt_tensor *x = in_t(g, n);
  n->op = BE->bn_create(g->be, x->shape, x->layout, 1e-5f, n->relu);
  n->layout = x->layout;
  n->save_mean = BE->alloc(g->be, (size_t)n->shape.c * sizeof(float));
  n->save_var = BE->alloc(g->be, (size_t)n->shape.c * sizeof(float));
}

static void bn_forward(dt_node *n, dt_graph *g, bool train) {
  if (train)
    BE->bn_forward_train(n->op, in_t(g, n), weight(g, n, 0), weight(g, n, 1), out_t(g, n),
                         n->save_mean, n->save_var, weight(g, n, 2), weight(g, n, 3),
                         g->bn_momentum);
  else
    BE->bn_forward_infer(n->op, in_t(g, n), weight(g, n, 0), weight(g, n, 1), weight(g, n, 2),
                         weight(g, n, 3), out_t(g, n));
}

static void bn_backward(dt_node *n, dt_graph *g) {
  dt_tensor *dx = dt_graph_grad_begin(g, n->in[0]);
  BE->bn_backward(n->op, in_t(g, n), out_grad(g, n), weight(g, n, 0), n->save_mean, n->save_var,
                  dx, grad(g, n, 0), grad(g, n, 1));
  dt_graph_grad_end(g, n->in[0]);
}

const dt_layer_ops dt_layer_bn = {"batchnorm", bn_plan, bn_forward, bn_backward, free_ops};

/* ---- ReLU ---- */

static void eltwise_plan(dt_node *n, dt_graph *g) {
  const dt_tensor *x = in_t(g, n);
  n->op = BE->eltwise_create(g->be, x->shape, x->layout);
  n->layout = x->layout;
}

static void relu_forward(dt_node *n, dt_graph *g, bool train) {
  (void)train;
  BE->relu_forward(n->op, in_t(g, n), out_t(g, n));
}

static void relu_backward(dt_node *n, dt_graph *g) {
  dt_tensor *dx = dt_graph_grad_begin(g, n->in[0]);
  BE->relu_backward(n->op, out_t(g, n), out_grad(g, n), dx);
  dt_graph_grad_end(g, n->in[0]);
}

const dt_layer_ops dt_layer_relu = {"relu", eltwise_plan, relu_forward, relu_backward, free_ops};

/* ---- elementwise addition ---- */

static void add_plan(dt_node *n, dt_graph *g) {
  eltwise_plan(n, g);
  DT_CHECK(dt_graph_value(g, n->in[1])->layout == n->layout);
}

static void add_forward(dt_node *n, dt_graph *g, bool train) {
  (void)train;
  BE->add(n->op, in_t(g, n), dt_graph_value(g, n->in[1]), out_t(g, n));
}

static void add_backward(dt_node *n, dt_graph *g) {
  dt_tensor *dy = out_grad(g, n);
  if (n->in[1] != 0) {
    /* The second input gets its own copy: sharing dy with both inputs would let one input's
     * other consumers write into the other's gradient. */
    dt_tensor *db = dt_graph_grad_begin(g, n->in[1]);
    BE->zero(g->be, db->data, BE->layout_bytes(db->layout));
    BE->accumulate(n->op, dy, db);
    dt_graph_grad_end(g, n->in[1]);
  }
  if (n->in[0] != 0) dt_graph_grad_pass(g, n->in[0], dy);
}

const dt_layer_ops dt_layer_add = {"add", add_plan, add_forward, add_backward, free_ops};

/* ---- global average pooling ---- */

static void gap_plan(dt_node *n, dt_graph *g) {
  const dt_tensor *x = in_t(g, n);
  n->op = BE->gap_create(g->be, x->shape, x->layout, &n->layout);
}

static void gap_forward(dt_node *n, dt_graph *g, bool train) {
  (void)train;
  BE->gap_forward(n->op, in_t(g, n), out_t(g, n));
}

static void gap_backward(dt_node *n, dt_graph *g) {
  dt_tensor *dx = dt_graph_grad_begin(g, n->in[0]);
  BE->gap_backward(n->op, out_grad(g, n), dx);
  dt_graph_grad_end(g, n->in[0]);
}

const dt_layer_ops dt_layer_gap = {"avgpool", gap_plan, gap_forward, gap_backward, free_ops};

/* ---- linear (with bias) ---- */

static void linear_plan(dt_node *n, dt_graph *g) {
  const dt_tensor *x = in_t(g, n);
  n->op = BE->linear_create(g->be, x->shape, x->layout, n->k, &n->layout);
}

static void linear_forward(dt_node *n, dt_graph *g, bool train) {
  (void)train;
  BE->linear_forward(n->op, in_t(g, n), weight(g, n, 0), weight(g, n, 1), out_t(g, n));
}

static void linear_backward(dt_node *n, dt_graph *g) {
  dt_tensor *dx = n->in[0] != 0 ? dt_graph_grad_begin(g, n->in[0]) : NULL;
  BE->linear_backward(n->op, in_t(g, n), out_grad(g, n), weight(g, n, 0), dx, grad(g, n, 0),
                      grad(g, n, 1));
  if (dx) dt_graph_grad_end(g, n->in[0]);
}

const dt_layer_ops dt_layer_linear = {"linear", linear_plan, linear_forward, linear_backward,
                                      free_ops};
