/* graph.h: a model as a small static graph of layer nodes, planned once per batch size
 * (DESIGN "Graph"). Each node produces one value (an activation tensor); value 0 is the input
 * image batch. A layer is a small table of functions (dt_layer_ops) plus its private state.
 * Family builders (src/models/) add nodes through the dt_graph_* builder calls below. */
#ifndef DT_GRAPH_H
#define DT_GRAPH_H

#include "backend.h"
#include "nn/params.h"

typedef struct dt_graph dt_graph;
typedef struct dt_node dt_node;

typedef struct {
  const char *kind;
  /* Create backend ops for the input layouts; set node->shape and node->layout. */
  void (*plan)(dt_node *node, dt_graph *g);
  void (*forward)(dt_node *node, dt_graph *g, bool train);
  /* Gradients of the inputs (through dt_graph_grad_*) and of the parameters. */
  void (*backward)(dt_node *node, dt_graph *g);
  void (*free)(dt_node *node, dt_graph *g);
} dt_layer_ops;

#define DT_NODE_MAX_IN 2

struct dt_node {
  const dt_layer_ops *ops;
  char name[96];             /* parameter prefix, e.g. "stage1.block1.conv1" */
  int in[DT_NODE_MAX_IN];    /* input values */
  int n_in;
  int out;                   /* output value (== node index + 1) */
  dt_shape shape;            /* output shape */
  const dt_layout *layout;   /* output layout */
  long macs;                 /* multiply-accumulates per image */
  long n_params;             /* trainable parameters */
  dt_op *op;                 /* the backend op, if one */
  /* layer-specific settings */
  int k, ksize, stride, pad, groups;
  bool relu;                 /* batch norm: fused ReLU */
  int residual;              /* conv: value added to the output, or -1 */
  bool residual_inplace;     /* conv: output shares the residual's buffer */
  int p[4];                  /* parameter table indices (weight, bias / running stats) */
  dt_op *aux;                /* conv with a copied residual: the accumulate op */
  float *save_mean, *save_var; /* batch norm: batch statistics kept for backward (C each) */
};

typedef struct {
  dt_tensor t;     /* activation */
  dt_tensor grad;  /* its gradient (data may alias another value's gradient) */
  float *grad_own; /* the gradient buffer allocated for this value */
  bool grad_ready; /* grad holds a gradient written during this backward pass */
  int consumers;
  dt_op *acc;      /* elementwise op for this layout (gradient accumulation) */
} dt_value;

struct dt_graph {
  dt_backend *be;
  dt_params *params;
  dt_shape in_shape; /* (N, C, H, W) of the input */
  dt_node *nodes;
  int n_nodes, cap;
  dt_value *values; /* n_nodes + 1 */
  bool planned;
  bool bn_eval;      /* plan for inference only: no gradient buffers */
  float bn_momentum;
  float *scratch;    /* gradient scratch for accumulation, sized to the largest value */
  size_t scratch_bytes;
  float *targets;    /* (N, K) soft targets in backend memory */
};

/* ---- building (family builders) ---- */
dt_graph *dt_graph_create(dt_backend *be, dt_params *params, dt_shape in_shape, bool inference);
int dt_graph_conv(dt_graph *g, const char *name, int x, int k, int ksize, int stride, int pad,
                  int groups, int residual);
int dt_graph_bn(dt_graph *g, const char *name, int x, bool relu);
int dt_graph_relu(dt_graph *g, int x);
int dt_graph_add(dt_graph *g, int a, int b);
int dt_graph_gap(dt_graph *g, int x);
int dt_graph_linear(dt_graph *g, const char *name, int x, int k);
/* Shape of a value while building (available before planning). */
dt_shape dt_graph_shape(const dt_graph *g, int value);

/* ---- running ---- */
/* Create every backend op and buffer. Called once after building. */
void dt_graph_plan(dt_graph *g);
/* Forward from a plain NCHW host batch; returns the logits tensor (N, K). */
const dt_tensor *dt_graph_forward(dt_graph *g, const float *input_host, bool train);
/* Soft-target cross-entropy on the logits of the last forward: per-sample losses to
 * losses_host and the logits gradient (scaled by grad_scale) into the last value's gradient. */
void dt_graph_loss(dt_graph *g, const float *targets, float grad_scale, float *losses_host);
/* Backward from the logits gradient; parameter gradients overwrite params->grads. */
void dt_graph_backward(dt_graph *g);
void dt_graph_free(dt_graph *g);

/* For layers: the value's tensor, and the gradient protocol. A layer that produces the
 * gradient of input value v asks dt_graph_grad_begin for the tensor to write; afterwards
 * dt_graph_grad_end adds it to what other consumers of v already wrote. */
dt_tensor *dt_graph_value(dt_graph *g, int v);
dt_tensor *dt_graph_grad_begin(dt_graph *g, int v);
void dt_graph_grad_end(dt_graph *g, int v);
/* Make dy the gradient of v without copying when v has no gradient yet, else add it. */
void dt_graph_grad_pass(dt_graph *g, int v, const dt_tensor *dy);

/* Layer kinds, for the model summary. */
extern const dt_layer_ops dt_layer_conv, dt_layer_bn, dt_layer_relu, dt_layer_add, dt_layer_gap,
    dt_layer_linear;

#endif
