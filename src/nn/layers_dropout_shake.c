/* layers_dropout_shake.c: the random layers: dropout and shake-shake mixing (builders in graph.c).
 *
 * Randomness (dropout masks, shake-shake alpha / beta) is drawn from the counter-based stream
 * dt_rng_key(g->step_key, DT_RNG_DROPOUT, node index, global sample index), so a sample's draws
 * are the same whichever rank, micro-batch or thread processes it. */
#include "nn/layers_internal.h"
#include "rng.h"

/* ---- dropout ---- */

static void dropout_plan(dt_node *n, dt_graph *g) {
  const dt_tensor *x = in_t(g, n, 0);
  n->op = BE->dropout_create(g->be, x->shape, x->layout, n->prob);
  n->layout = x->layout;
  n->keys = dt_xcalloc((size_t)x->shape.n, sizeof *n->keys);
}

static void dropout_forward(dt_node *n, dt_graph *g, bool train) {
  n->dropped = train && n->prob > 0.0f;
  if (n->dropped) {
    /* One key per sample: the first number of the sample's stream for this layer and step. */
    for (int i = 0; i < n->shape.n; i++) {
      dt_rng r = dt_rng_key(g->step_key, DT_RNG_DROPOUT, node_index(n),
                            (uint64_t)(g->sample_offset + i));
      n->keys[i] = dt_rng_u64(&r);
    }
  }
  BE->dropout_forward(n->op, in_t(g, n, 0), n->dropped ? n->keys : NULL, out_t(g, n));
}

static void dropout_backward(dt_node *n, dt_graph *g) {
  if (n->in[0] == 0) return;
  dt_tensor *dy = out_grad(g, n);
  if (!n->dropped) { /* identity */
    dt_graph_grad_pass(g, n->in[0], dy);
    return;
  }
  dt_tensor *dx = dt_graph_grad_begin(g, n->in[0]);
  BE->dropout_backward(n->op, dy, dx);
  dt_graph_grad_end(g, n->in[0]);
}

const dt_layer_ops dt_layer_dropout = {"dropout", dropout_plan, dropout_forward, dropout_backward,
                                       free_layer};

/* ---- shake-shake mixing ---- */

static void shake_plan(dt_node *n, dt_graph *g) {
  const dt_tensor *a = in_t(g, n, 0), *b = in_t(g, n, 1);
  if (a->layout != b->layout)
    DT_FATAL("shake: the two branches of node %d have different layouts", n->out);
  n->op = BE->shake_create(g->be, a->shape, a->layout);
  n->layout = a->layout;
  n->mix = dt_xcalloc(2 * (size_t)a->shape.n, sizeof *n->mix);
}

/* alpha (forward) and beta (backward) per image: independent U(0, 1) draws from the sample's stream
 * (alpha first, then beta), one draw for the whole batch without shake_image, and 0.5 when that
 * direction does not shake or in inference (docs/reference-experiments.md "Shake-shake"). */
static void shake_forward(dt_node *n, dt_graph *g, bool train) {
  const int bs = n->shape.n;
  float *alpha = n->mix, *beta = n->mix + bs;
  for (int i = 0; i < bs; i++) {
    alpha[i] = beta[i] = 0.5f;
    if (!train || (!n->shake_fwd && !n->shake_bwd)) continue;
    uint64_t sample = n->shake_img ? (uint64_t)(g->sample_offset + i) : DT_GRAPH_BATCH_SAMPLE;
    dt_rng r = dt_rng_key(g->step_key, DT_RNG_DROPOUT, node_index(n), sample);
    float ua = (float)dt_rng_uniform(&r), ub = (float)dt_rng_uniform(&r);
    if (n->shake_fwd) alpha[i] = ua;
    if (n->shake_bwd) beta[i] = ub;
  }
  BE->shake_forward(n->op, in_t(g, n, 0), in_t(g, n, 1), alpha, out_t(g, n));
}

static void shake_backward(dt_node *n, dt_graph *g) {
  dt_tensor *dy = out_grad(g, n);
  const float *beta = n->mix + n->shape.n;
  if (n->in[0] != 0) {
    dt_tensor *da = dt_graph_grad_begin(g, n->in[0]);
    BE->shake_backward(n->op, dy, beta, da, NULL);
    dt_graph_grad_end(g, n->in[0]);
  }
  if (n->in[1] != 0) {
    dt_tensor *db = dt_graph_grad_begin(g, n->in[1]);
    BE->shake_backward(n->op, dy, beta, NULL, db);
    dt_graph_grad_end(g, n->in[1]);
  }
}

const dt_layer_ops dt_layer_shake = {"shake", shake_plan, shake_forward, shake_backward,
                                     free_layer};
