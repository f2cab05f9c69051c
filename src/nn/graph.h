/* graph.h: a model as a small static graph of layer nodes, planned once per batch size
 * (docs/architecture.md "Graph"). Each node produces one value (an activation tensor); value 0 is
 * the input image batch. A layer is a small table of functions (dt_layer_ops) plus its private
 * state. Family builders (src/models/) add nodes through the dt_graph_* builder calls below. */
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
  /* pooling, shift, dropout and shake-shake layers (layers_*.c) */
  int pool_kind;             /* pool: a dt_pool_kind */
  int shift_y, shift_x;      /* shift: source offsets */
  float prob;                /* dropout: probability of zeroing an element */
  bool shake_fwd, shake_bwd, shake_img; /* shake: random alpha / beta, one per image */
  float *mix;                /* shake: host (2N): alpha then beta of the last training forward */
  uint64_t *keys;            /* dropout: host (N) per-sample mask keys of the last forward */
  bool dropped;              /* dropout: the last forward applied a mask (training, p > 0) */
};

typedef struct {
  dt_tensor t;     /* activation */
  dt_tensor grad;  /* its gradient (data may alias another value's gradient) */
  float *grad_own; /* the gradient buffer allocated for this value */
  bool grad_ready; /* grad holds a gradient written during this backward pass */
  int consumers;
  dt_op *acc;      /* elementwise op for this layout (gradient accumulation) */
} dt_value;

/* Bytes of activation buffers by kind (dt_graph_activation_bytes). */
typedef struct {
  size_t values, grads, scratch;
} dt_graph_bytes;

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
  bool layouts_only; /* planned by dt_graph_plan_layouts: no activation buffers */
  dt_graph_bytes act_bytes; /* what dt_graph_activation_bytes reports */
  float *targets;    /* (N, K) soft targets in backend memory */
  float *losses;     /* (N) dt_graph_loss's per-sample losses in backend memory */
  /* Randomness of dropout and shake-shake (set by the trainer before each forward; both 0 by
   * default). step_key keys the step, e.g. a hash of (train.seed, step); sample_offset is the
   * index of this batch's first sample in the global batch, so that every layer's draw for a
   * sample depends only on (step_key, layer index, global sample index), never on the rank,
   * the micro-batch split or the thread (see DT_GRAPH_BATCH_SAMPLE). */
  uint64_t step_key;
  long sample_offset;
  /* Called after each node's backward with the node's index, NULL for none: the trainer
   * all-reduces the gradient buckets that node completed while backward goes on
   * (nn/grad_buckets.h). */
  void (*on_backward)(void *ctx, int node);
  void *on_backward_ctx;
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
/* ---- layer kinds of the other families (docs/reference-experiments.md "Models"): layers_pool.c,
 * layers_concat_pad_shift.c, layers_dropout_shake.c, layers_sigmoid_scale_bias.c ---- */
/* Per-channel bias added to x (VGG convolutions have biases): parameter "<name>.bias" (C), not
 * decayed. fan_in > 0 initialises it as PyTorch's default conv bias, U(-1/sqrt(fan_in),
 * 1/sqrt(fan_in)) with fan_in = C_in/groups * R * S of the convolution
 * (docs/reference-experiments.md "Common conventions"); fan_in == 0 initialises it to zero (the
 * original reference code's bias init). */
int dt_graph_bias(dt_graph *g, const char *name, int x, int fan_in);
/* Max or average pooling (dt_pool_kind in backend.h), floor mode. Average pooling divides by
 * ksize^2, counting padding (PyTorch's default count_include_pad=True; no family pads one). */
int dt_graph_pool(dt_graph *g, int x, dt_pool_kind kind, int ksize, int stride, int pad);
/* Channel concatenation (a then b). */
int dt_graph_concat(dt_graph *g, int a, int b);
/* Zero-pad channels up to c_out (PyramidNet shortcuts). */
int dt_graph_pad_channels(dt_graph *g, int x, int c_out);
/* Dropout with probability p in training (survivors scaled by 1 / (1 - p)), identity in
 * inference (WRN, DenseNet). The mask of a sample is keyed by step_key, the node and the
 * sample's global index (see step_key). */
int dt_graph_dropout(dt_graph *g, int x, float p);
int dt_graph_sigmoid(dt_graph *g, int x);
/* y = x * s with s (N, C, 1, 1) broadcast over H, W (squeeze-and-excitation). */
int dt_graph_scale(dt_graph *g, int x, int s);
/* Shake-shake mixing y = alpha a + (1 - alpha) b, backward da = beta dy, db = (1 - beta) dy
 * (docs/reference-experiments.md "Shake-shake"): alpha and beta independent U(0, 1) draws per image
 * (shake_image) or per batch, redrawn every training forward; a direction that does not shake
 * (shake_forward /
 * shake_backward false) uses 0.5, as the reference code does; inference uses 0.5. */
int dt_graph_shake(dt_graph *g, int a, int b, bool shake_forward, bool shake_backward,
                   bool shake_image);
/* y[:, :, i, j] = x[:, :, i + dy, j + dx], zero where out of range (shake-shake shortcut). */
int dt_graph_shift(dt_graph *g, int x, int dy, int dx);

/* The random stream of layer node_index (0-based) for global sample `sample` of this step:
 * dt_rng_key(g->step_key, DT_RNG_DROPOUT, node_index, sample). Per-batch draws (shake-shake
 * with shake_image false) use sample DT_GRAPH_BATCH_SAMPLE. */
#define DT_GRAPH_BATCH_SAMPLE UINT64_MAX

/* Append a node with inputs a and b (b = -1: one input) for a builder; its output value is the
 * node's index + 1. The builder then sets the node's shape, settings and parameters. */
dt_node *dt_graph_add_node(dt_graph *g, const dt_layer_ops *ops, const char *name, int a, int b);

/* Shape of a value while building (available before planning). */
dt_shape dt_graph_shape(const dt_graph *g, int value);

/* ---- running ---- */
/* Create every backend op and buffer. Called once after building. */
void dt_graph_plan(dt_graph *g);
/* Plan every op and layout as dt_graph_plan does but allocate no activation, gradient or
 * scratch buffer (nor need the parameters allocated): for dt_graph_activation_bytes without the
 * memory (--dry-run). Such a graph can only be measured and freed. */
void dt_graph_plan_layouts(dt_graph *g);
/* Backend memory a planned graph holds for activations, each buffer counted as layout_bytes of
 * its layout (so 16-bit layouts count half): the values (the input included; a value computed
 * in place in its residual's buffer holds none of its own), their gradients (none when planned
 * for inference) and the gradient scratch. Op-owned buffers (batch statistics, staging copies,
 * workspaces), parameters and the targets are not activations and are not counted. */
dt_graph_bytes dt_graph_activation_bytes(const dt_graph *g);
size_t dt_graph_bytes_total(dt_graph_bytes b);
/* Forward from a plain NCHW host batch; returns the logits tensor (N, K). */
const dt_tensor *dt_graph_forward(dt_graph *g, const float *input_host, bool train);
/* Soft-target cross-entropy on the logits of the last forward: per-sample losses to
 * losses_host (NULL: not wanted; waits for them) and the logits gradient (scaled by
 * grad_scale) into the last value's gradient. */
void dt_graph_loss(dt_graph *g, const float *targets, float grad_scale, float *losses_host);
/* The same two steps split into their host transfers and their device work, for replaying
 * the device work of a step (CUDA graphs) and for steps that keep their losses in backend
 * memory: dt_graph_forward = set_input + run_forward, dt_graph_loss = set_targets + run_loss
 * + a copy of the losses to the host. run_loss writes the N per-sample losses to `losses`,
 * backend memory (NULL: not wanted), and does not wait. */
void dt_graph_set_input(dt_graph *g, const float *input_host);
const dt_tensor *dt_graph_run_forward(dt_graph *g, bool train);
void dt_graph_set_targets(dt_graph *g, const float *targets);
void dt_graph_run_loss(dt_graph *g, float grad_scale, float *losses);
/* True when a training step's device work is the same every step but for its data: no layer
 * takes per-step host input (dropout masks, shake-shake coefficients). */
bool dt_graph_replayable(const dt_graph *g);
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
extern const dt_layer_ops dt_layer_bias, dt_layer_pool, dt_layer_concat, dt_layer_pad_channels,
    dt_layer_dropout, dt_layer_sigmoid, dt_layer_scale, dt_layer_shake, dt_layer_shift;

#endif
