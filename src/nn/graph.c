/* graph.c: building, planning and running the layer graph; the gradient protocol. */
#include "nn/graph.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

dt_graph *dt_graph_create(dt_backend *be, dt_params *params, dt_shape in_shape, bool inference) {
  dt_graph *g = dt_xcalloc(1, sizeof *g);
  g->be = be;
  g->params = params;
  g->in_shape = in_shape;
  g->bn_eval = inference;
  g->bn_momentum = 0.1f;
  g->cap = 64;
  g->nodes = dt_xcalloc((size_t)g->cap, sizeof *g->nodes);
  return g;
}

dt_shape dt_graph_shape(const dt_graph *g, int value) {
  return value == 0 ? g->in_shape : g->nodes[value - 1].shape;
}

dt_node *dt_graph_add_node(dt_graph *g, const dt_layer_ops *ops, const char *name, int a, int b) {
  DT_CHECK(!g->planned);
  if (g->n_nodes == g->cap) {
    g->cap *= 2;
    g->nodes = realloc(g->nodes, (size_t)g->cap * sizeof *g->nodes);
    DT_CHECK(g->nodes != NULL);
  }
  dt_node *n = &g->nodes[g->n_nodes];
  memset(n, 0, sizeof *n);
  n->ops = ops;
  snprintf(n->name, sizeof n->name, "%s", name ? name : "");
  n->in[0] = a;
  n->in[1] = b;
  n->n_in = b >= 0 ? 2 : 1;
  n->out = g->n_nodes + 1;
  n->residual = -1;
  for (int i = 0; i < 4; i++) n->p[i] = -1;
  DT_CHECK(a >= 0 && a <= g->n_nodes && b <= g->n_nodes);
  g->n_nodes++;
  return n;
}

static int out_dim(int h, int k, int stride, int pad) { return (h + 2 * pad - k) / stride + 1; }

int dt_graph_conv(dt_graph *g, const char *name, int x, int k, int ksize, int stride, int pad,
                  int groups, int residual) {
  dt_node *n = dt_graph_add_node(g, &dt_layer_conv, name, x, -1);
  dt_shape s = dt_graph_shape(g, x);
  n->k = k;
  n->ksize = ksize;
  n->stride = stride;
  n->pad = pad;
  n->groups = groups;
  n->residual = residual;
  n->shape = (dt_shape){s.n, k, out_dim(s.h, ksize, stride, pad), out_dim(s.w, ksize, stride, pad)};
  if (residual >= 0) {
    dt_shape r = dt_graph_shape(g, residual);
    DT_CHECK(r.n == n->shape.n && r.c == n->shape.c && r.h == n->shape.h && r.w == n->shape.w);
  }
  char pname[128];
  snprintf(pname, sizeof pname, "%s.weight", name);
  int dims[4] = {k, s.c / groups, ksize, ksize};
  DT_CHECK(s.c % groups == 0 && k % groups == 0);
  n->p[0] = dt_params_add(g->params, pname, 4, dims, DT_PARAM_CONV, DT_INIT_KAIMING_NORMAL,
                          s.c / groups * ksize * ksize, k * ksize * ksize);
  n->macs = (long)k * (s.c / groups) * ksize * ksize * n->shape.h * n->shape.w;
  n->n_params = (long)g->params->items[n->p[0]].count;
  return n->out;
}

int dt_graph_bn(dt_graph *g, const char *name, int x, bool relu) {
  dt_node *n = dt_graph_add_node(g, &dt_layer_bn, name, x, -1);
  n->shape = dt_graph_shape(g, x);
  n->relu = relu;
  int c = n->shape.c;
  const char *suffix[4] = {"weight", "bias", "running_mean", "running_var"};
  const unsigned flags[4] = {DT_PARAM_NO_DECAY, DT_PARAM_NO_DECAY, DT_PARAM_BUFFER, DT_PARAM_BUFFER};
  const dt_init init[4] = {DT_INIT_ONES, DT_INIT_ZEROS, DT_INIT_ZEROS, DT_INIT_ONES};
  for (int i = 0; i < 4; i++) {
    char pname[128];
    snprintf(pname, sizeof pname, "%s.%s", name, suffix[i]);
    n->p[i] = dt_params_add(g->params, pname, 1, &c, flags[i], init[i], c, c);
  }
  n->n_params = 2L * c;
  return n->out;
}

int dt_graph_relu(dt_graph *g, int x) {
  dt_node *n = dt_graph_add_node(g, &dt_layer_relu, NULL, x, -1);
  n->shape = dt_graph_shape(g, x);
  return n->out;
}

int dt_graph_add(dt_graph *g, int a, int b) {
  dt_node *n = dt_graph_add_node(g, &dt_layer_add, NULL, a, b);
  n->shape = dt_graph_shape(g, a);
  dt_shape sb = dt_graph_shape(g, b);
  DT_CHECK(sb.n == n->shape.n && sb.c == n->shape.c && sb.h == n->shape.h && sb.w == n->shape.w);
  return n->out;
}

int dt_graph_gap(dt_graph *g, int x) {
  dt_node *n = dt_graph_add_node(g, &dt_layer_gap, NULL, x, -1);
  dt_shape s = dt_graph_shape(g, x);
  n->shape = (dt_shape){s.n, s.c, 1, 1};
  return n->out;
}

int dt_graph_linear(dt_graph *g, const char *name, int x, int k) {
  dt_node *n = dt_graph_add_node(g, &dt_layer_linear, name, x, -1);
  dt_shape s = dt_graph_shape(g, x);
  int c = s.c * s.h * s.w;
  n->k = k;
  n->shape = (dt_shape){s.n, k, 1, 1};
  char pname[128];
  int wd[2] = {k, c};
  snprintf(pname, sizeof pname, "%s.weight", name);
  n->p[0] = dt_params_add(g->params, pname, 2, wd, 0, DT_INIT_KAIMING_NORMAL, c, k);
  snprintf(pname, sizeof pname, "%s.bias", name);
  n->p[1] = dt_params_add(g->params, pname, 1, &k, DT_PARAM_NO_DECAY, DT_INIT_ZEROS, c, k);
  n->macs = (long)c * k;
  n->n_params = (long)c * k + k;
  return n->out;
}

static bool same_shape(dt_shape a, dt_shape b) {
  return a.n == b.n && a.c == b.c && a.h == b.h && a.w == b.w;
}

int dt_graph_bias(dt_graph *g, const char *name, int x, int fan_in) {
  DT_CHECK(name != NULL && fan_in >= 0);
  dt_node *n = dt_graph_add_node(g, &dt_layer_bias, name, x, -1);
  n->shape = dt_graph_shape(g, x);
  int c = n->shape.c;
  char pname[128];
  snprintf(pname, sizeof pname, "%s.bias", name);
  n->p[0] = dt_params_add(g->params, pname, 1, &c, DT_PARAM_NO_DECAY,
                          fan_in > 0 ? DT_INIT_UNIFORM_FAN_IN : DT_INIT_ZEROS, fan_in, c);
  n->n_params = c;
  return n->out;
}

int dt_graph_pool(dt_graph *g, int x, dt_pool_kind kind, int ksize, int stride, int pad) {
  DT_CHECK(kind == DT_POOL_MAX || kind == DT_POOL_AVG);
  DT_CHECK(ksize >= 1 && stride >= 1 && pad >= 0 && 2 * pad <= ksize);
  dt_node *n = dt_graph_add_node(g, &dt_layer_pool, NULL, x, -1);
  dt_shape s = dt_graph_shape(g, x);
  n->pool_kind = kind;
  n->ksize = ksize;
  n->stride = stride;
  n->pad = pad;
  /* floor mode, as PyTorch's default ceil_mode=False */
  int oh = (s.h + 2 * pad - ksize) / stride + 1, ow = (s.w + 2 * pad - ksize) / stride + 1;
  DT_CHECK(s.h + 2 * pad >= ksize && s.w + 2 * pad >= ksize);
  n->shape = (dt_shape){s.n, s.c, oh, ow};
  n->macs = (long)s.c * oh * ow * ksize * ksize;
  return n->out;
}

int dt_graph_concat(dt_graph *g, int a, int b) {
  dt_node *n = dt_graph_add_node(g, &dt_layer_concat, NULL, a, b);
  dt_shape sa = dt_graph_shape(g, a), sb = dt_graph_shape(g, b);
  DT_CHECK(sa.n == sb.n && sa.h == sb.h && sa.w == sb.w);
  n->shape = (dt_shape){sa.n, sa.c + sb.c, sa.h, sa.w};
  return n->out;
}

int dt_graph_pad_channels(dt_graph *g, int x, int c_out) {
  dt_node *n = dt_graph_add_node(g, &dt_layer_pad_channels, NULL, x, -1);
  dt_shape s = dt_graph_shape(g, x);
  DT_CHECK(c_out >= s.c);
  n->k = c_out;
  n->shape = (dt_shape){s.n, c_out, s.h, s.w};
  return n->out;
}

int dt_graph_dropout(dt_graph *g, int x, float p) {
  DT_CHECK(p >= 0.0f && p < 1.0f);
  dt_node *n = dt_graph_add_node(g, &dt_layer_dropout, NULL, x, -1);
  n->shape = dt_graph_shape(g, x);
  n->prob = p;
  return n->out;
}

int dt_graph_sigmoid(dt_graph *g, int x) {
  dt_node *n = dt_graph_add_node(g, &dt_layer_sigmoid, NULL, x, -1);
  n->shape = dt_graph_shape(g, x);
  return n->out;
}

int dt_graph_scale(dt_graph *g, int x, int s) {
  dt_node *n = dt_graph_add_node(g, &dt_layer_scale, NULL, x, s);
  dt_shape sx = dt_graph_shape(g, x), ss = dt_graph_shape(g, s);
  DT_CHECK(ss.n == sx.n && ss.c == sx.c && ss.h == 1 && ss.w == 1);
  n->shape = sx;
  return n->out;
}

int dt_graph_shake(dt_graph *g, int a, int b, bool shake_forward, bool shake_backward,
                   bool shake_image) {
  dt_node *n = dt_graph_add_node(g, &dt_layer_shake, NULL, a, b);
  n->shape = dt_graph_shape(g, a);
  DT_CHECK(same_shape(n->shape, dt_graph_shape(g, b)));
  n->shake_fwd = shake_forward;
  n->shake_bwd = shake_backward;
  n->shake_img = shake_image;
  return n->out;
}

int dt_graph_shift(dt_graph *g, int x, int dy, int dx) {
  dt_node *n = dt_graph_add_node(g, &dt_layer_shift, NULL, x, -1);
  n->shape = dt_graph_shape(g, x);
  n->shift_y = dy;
  n->shift_x = dx;
  return n->out;
}

dt_tensor *dt_graph_value(dt_graph *g, int v) { return &g->values[v].t; }

/* An activation buffer of `bytes` (layout_bytes of its layout), counted in *counter; none when
 * planning layouts only. */
static void *act_alloc(dt_graph *g, size_t bytes, size_t *counter) {
  *counter += bytes;
  return g->layouts_only ? NULL : g->be->ops->alloc(g->be, bytes);
}

static void plan(dt_graph *g) {
  /* Planning reads no parameter: a graph planned for its layouts needs none allocated. */
  DT_CHECK(!g->planned && g->n_nodes > 0 && (g->layouts_only || g->params->weights != NULL));
  dt_backend *be = g->be;
  /* Every op is required (backend.h); a table with a hole is a bug of its backend. */
  const char *missing = dt_backend_ops_missing(be->ops);
  if (missing)
    DT_FATAL("the %s backend leaves op %s NULL (backend.h: every op is required)",
             be->ops->name ? be->ops->name : "unnamed", missing);
  g->values = dt_xcalloc((size_t)g->n_nodes + 1, sizeof *g->values);
  g->values[0].t.shape = g->in_shape;
  g->values[0].t.layout = be->ops->layout_plain(be, g->in_shape);
  g->act_bytes = (dt_graph_bytes){0, 0, 0};
  g->values[0].t.data =
      act_alloc(g, be->ops->layout_bytes(g->values[0].t.layout), &g->act_bytes.values);
  for (int i = 0; i < g->n_nodes; i++) {
    const dt_node *n = &g->nodes[i];
    for (int j = 0; j < n->n_in; j++) g->values[n->in[j]].consumers++;
    if (n->residual >= 0) g->values[n->residual].consumers++;
  }
  size_t max_bytes = 0;
  for (int i = 0; i < g->n_nodes; i++) {
    dt_node *n = &g->nodes[i];
    n->ops->plan(n, g);
    dt_value *v = &g->values[n->out];
    v->t.shape = n->shape;
    v->t.layout = n->layout;
    size_t bytes = be->ops->layout_bytes(n->layout);
    max_bytes = DT_MAX(max_bytes, bytes);
    if (n->residual_inplace)
      v->t.data = g->values[n->residual].t.data; /* y = residual + conv(x), in place */
    else
      v->t.data = act_alloc(g, bytes, &g->act_bytes.values);
    if (!g->bn_eval) {
      v->grad_own = act_alloc(g, bytes, &g->act_bytes.grads);
      v->grad = (dt_tensor){n->shape, n->layout, v->grad_own};
      if (v->consumers > 1) v->acc = be->ops->eltwise_create(be, n->shape, n->layout);
    }
  }
  if (!g->bn_eval) g->scratch = act_alloc(g, max_bytes, &g->act_bytes.scratch);
  g->scratch_bytes = max_bytes;
  const dt_shape out = g->nodes[g->n_nodes - 1].shape;
  if (!g->layouts_only) {
    g->targets = be->ops->alloc(be, (size_t)out.n * out.c * sizeof(float));
    g->losses = be->ops->alloc(be, (size_t)out.n * sizeof(float));
  }
  g->planned = true;
}

void dt_graph_plan(dt_graph *g) { plan(g); }

void dt_graph_plan_layouts(dt_graph *g) {
  g->layouts_only = true;
  plan(g);
}

dt_graph_bytes dt_graph_activation_bytes(const dt_graph *g) {
  DT_CHECK(g->planned);
  return g->act_bytes;
}

size_t dt_graph_bytes_total(dt_graph_bytes b) { return b.values + b.grads + b.scratch; }

void dt_graph_set_input(dt_graph *g, const float *input_host) {
  DT_CHECK(g->planned && !g->layouts_only);
  g->be->ops->upload(g->be, input_host, &g->values[0].t);
}

const dt_tensor *dt_graph_run_forward(dt_graph *g, bool train) {
  DT_CHECK(g->planned && !g->layouts_only && (!train || !g->bn_eval));
  for (int i = 0; i < g->n_nodes; i++) g->nodes[i].ops->forward(&g->nodes[i], g, train);
  return &g->values[g->n_nodes].t;
}

const dt_tensor *dt_graph_forward(dt_graph *g, const float *input_host, bool train) {
  dt_graph_set_input(g, input_host);
  return dt_graph_run_forward(g, train);
}

void dt_graph_set_targets(dt_graph *g, const float *targets) {
  const dt_shape s = g->values[g->n_nodes].t.shape;
  g->be->ops->to_device(g->be, g->targets, targets, (size_t)s.n * s.c * sizeof(float));
}

void dt_graph_run_loss(dt_graph *g, float grad_scale, float *losses) {
  dt_value *last = &g->values[g->n_nodes];
  const dt_shape s = last->t.shape;
  dt_tensor *dlogits = g->bn_eval ? NULL : &last->grad;
  g->be->ops->xent(g->be, &last->t, g->targets, s.n, s.c, grad_scale, dlogits, losses);
}

void dt_graph_loss(dt_graph *g, const float *targets, float grad_scale, float *losses_host) {
  dt_graph_set_targets(g, targets);
  dt_graph_run_loss(g, grad_scale, losses_host ? g->losses : NULL);
  const int n = g->values[g->n_nodes].t.shape.n;
  if (losses_host) g->be->ops->to_host(g->be, losses_host, g->losses, (size_t)n * sizeof(float));
}

bool dt_graph_replayable(const dt_graph *g) {
  for (int i = 0; i < g->n_nodes; i++)
    if (g->nodes[i].ops == &dt_layer_dropout || g->nodes[i].ops == &dt_layer_shake) return false;
  return true;
}

void dt_graph_backward(dt_graph *g) {
  DT_CHECK(g->planned && !g->layouts_only && !g->bn_eval);
  for (int v = 0; v < g->n_nodes; v++) {
    g->values[v].grad_ready = false;
    g->values[v].grad.data = g->values[v].grad_own;
  }
  g->values[g->n_nodes].grad_ready = true; /* written by dt_graph_loss */
  for (int i = g->n_nodes - 1; i >= 0; i--) {
    g->nodes[i].ops->backward(&g->nodes[i], g);
    if (g->on_backward) g->on_backward(g->on_backward_ctx, i);
  }
}

dt_tensor *dt_graph_grad_begin(dt_graph *g, int v) {
  dt_value *val = &g->values[v];
  if (!val->grad_ready) return &val->grad;
  static _Thread_local dt_tensor scratch;
  scratch = (dt_tensor){val->t.shape, val->t.layout, g->scratch};
  return &scratch;
}

void dt_graph_grad_end(dt_graph *g, int v) {
  dt_value *val = &g->values[v];
  if (!val->grad_ready) {
    val->grad_ready = true;
    return;
  }
  dt_tensor scratch = {val->t.shape, val->t.layout, g->scratch};
  g->be->ops->accumulate(val->acc, &scratch, &val->grad);
}

void dt_graph_grad_pass(dt_graph *g, int v, const dt_tensor *dy) {
  dt_value *val = &g->values[v];
  if (!val->grad_ready) {
    /* Safe to share: dy's owner has finished its backward, and every later writer of v's
     * gradient runs after it (reverse order). */
    val->grad.data = dy->data;
    val->grad_ready = true;
    return;
  }
  g->be->ops->accumulate(val->acc, dy, &val->grad);
}

void dt_graph_free(dt_graph *g) {
  if (!g) return;
  dt_backend *be = g->be;
  for (int i = 0; i < g->n_nodes; i++) {
    dt_node *n = &g->nodes[i];
    if (g->planned && n->ops->free) n->ops->free(n, g);
  }
  if (g->values) {
    for (int v = 0; v <= g->n_nodes; v++) {
      dt_value *val = &g->values[v];
      bool shared = v > 0 && g->nodes[v - 1].residual_inplace;
      if (val->t.data && !shared) be->ops->free(be, val->t.data);
      if (val->grad_own) be->ops->free(be, val->grad_own);
      if (val->acc) be->ops->op_free(val->acc);
    }
  }
  if (g->scratch) be->ops->free(be, g->scratch);
  if (g->targets) be->ops->free(be, g->targets);
  if (g->losses) be->ops->free(be, g->losses);
  free(g->values);
  free(g->nodes);
  free(g);
}
