/* graph_extra.c: builder calls of the layer kinds the other families need
 * (docs/reference-experiments.md "Models"): bias, pooling, concatenation, channel padding, dropout,
 * sigmoid, channel scaling, shake-shake mixing and spatial shift. They compute output shapes and
 * register parameters only, so a graph can be built (parameter counts, summaries) without a
 * backend; the layers themselves live in layers_extra.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/graph.h"

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
