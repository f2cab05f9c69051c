/* test_layers.c: the layer kinds of the other families (their builders in src/nn/graph.c, the
 * layers in src/nn/layers_pool.c, layers_concat_pad_shift.c, layers_dropout_shake.c and
 * layers_sigmoid_scale_bias.c) wired into graphs on the CPU backend.
 *
 *  - building: output shapes, parameter names / flags / init kinds, and that a graph builds
 *    without a backend (what the model summary does);
 *  - DT_INIT_UNIFORM_FAN_IN draws U(-1/sqrt(fan_in), 1/sqrt(fan_in));
 *  - gradients: a small net using every new layer (conv + bias, max and average pooling,
 *    dropout, concatenation, shift, shake mixing, squeeze-excite scaling, channel padding),
 *    whose parameter gradients from dt_graph_backward must match central differences of the
 *    fp32 loss;
 *  - randomness: dropout masks and shake-shake alpha / beta depend on (step_key, layer, global
 *    sample index) only: one batch of 4 gives the same per-sample losses and summed gradients
 *    as two batches of 2 with sample_offset 0 and 2; another step_key changes them; inference
 *    ignores it;
 *  - a backend without an op fails at plan time with a message naming it;
 *  - activation memory: dt_graph_activation_bytes equals the bytes the graph allocated for its
 *    values, gradients and scratch (a counting backend records every allocation), counts a
 *    convolution computed in place in its residual's buffer once, is the same when only the
 *    layouts are planned (which allocates none of them), and halves when the layouts do. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "backend.h"
#include "common.h"
#include "cpu/backend_cpu.h"
#include "nn/graph.h"
#include "nn/params.h"
#include "rng.h"
#include "testutil.h"

#define CLASSES 10

/* Options of the test net. */
typedef struct {
  float drop;              /* dropout probability */
  bool shake_fwd, shake_bwd, shake_img;
} net_opts;

/* A small net touching every new layer kind; input (N, 3, 8, 8).
 *   c1 = conv3x3(x, 12) + bias         (N, 12, 8, 8)
 *   p  = maxpool 2/2, dropout          (N, 12, 4, 4)
 *   v  = concat(p, conv1x1(p, 4))      (N, 16, 4, 4)
 *   shortcut: concat(conv1x1(avgpool1/2(v), 6), conv1x1(avgpool1/2(shift(v, 1, 1)), 6))
 *   branches: two conv3x3 stride 2 (12), mixed by shake, plus the shortcut  (N, 12, 2, 2)
 *   squeeze-excite: y * sigmoid(fc(fc(gap(y))))
 *   pad channels to 16, avgpool 2/2, fc -> 10 */
static int build_net(dt_graph *g, const net_opts *o) {
  int x = dt_graph_conv(g, "c1", 0, 12, 3, 1, 1, 1, -1);
  x = dt_graph_bias(g, "c1", x, 27);
  x = dt_graph_pool(g, x, DT_POOL_MAX, 2, 2, 0);
  x = dt_graph_dropout(g, x, o->drop);
  int c2 = dt_graph_conv(g, "c2", x, 4, 1, 1, 0, 1, -1);
  int v = dt_graph_concat(g, x, c2);
  int s1 = dt_graph_pool(g, v, DT_POOL_AVG, 1, 2, 0);
  s1 = dt_graph_conv(g, "short1", s1, 6, 1, 1, 0, 1, -1);
  int s2 = dt_graph_shift(g, v, 1, 1);
  s2 = dt_graph_pool(g, s2, DT_POOL_AVG, 1, 2, 0);
  s2 = dt_graph_conv(g, "short2", s2, 6, 1, 1, 0, 1, -1);
  int sc = dt_graph_concat(g, s1, s2);
  int b1 = dt_graph_conv(g, "branch1", v, 12, 3, 2, 1, 1, -1);
  int b2 = dt_graph_conv(g, "branch2", v, 12, 3, 2, 1, 1, -1);
  int y = dt_graph_shake(g, b1, b2, o->shake_fwd, o->shake_bwd, o->shake_img);
  y = dt_graph_add(g, y, sc);
  int se = dt_graph_gap(g, y);
  se = dt_graph_linear(g, "se1", se, 3);
  se = dt_graph_linear(g, "se2", se, 12);
  se = dt_graph_sigmoid(g, se);
  y = dt_graph_scale(g, y, se);
  y = dt_graph_pad_channels(g, y, 16);
  y = dt_graph_pool(g, y, DT_POOL_AVG, 2, 2, 0);
  return dt_graph_linear(g, "fc", y, CLASSES);
}

static int setup_backend(void **state) {
  dt_backend *be = dt_backend_cpu_create(2);
  if (!be) return -1;
  *state = be;
  return 0;
}

static int teardown_backend(void **state) {
  dt_backend *be = *state;
  if (be) be->ops->destroy(be);
  return 0;
}

/* ---- building ---- */

static void test_build(void **state) {
  (void)state;
  dt_params ps = {0};
  const net_opts o = {0.2f, true, true, true};
  dt_graph *g = dt_graph_create(NULL, &ps, (dt_shape){2, 3, 8, 8}, true); /* no backend */
  const int out = build_net(g, &o);
  const dt_shape s = dt_graph_shape(g, out);
  assert_true(s.n == 2 && s.c == CLASSES && s.h == 1 && s.w == 1);
  /* Shapes along the way. */
  const struct {
    const char *kind;
    dt_shape s;
  } want[] = {{"conv", {2, 12, 8, 8}},    {"bias", {2, 12, 8, 8}},    {"pool", {2, 12, 4, 4}},
              {"dropout", {2, 12, 4, 4}}, {"conv", {2, 4, 4, 4}},     {"concat", {2, 16, 4, 4}},
              {"pool", {2, 16, 2, 2}},    {"conv", {2, 6, 2, 2}},     {"shift", {2, 16, 4, 4}},
              {"pool", {2, 16, 2, 2}},    {"conv", {2, 6, 2, 2}},     {"concat", {2, 12, 2, 2}},
              {"conv", {2, 12, 2, 2}},    {"conv", {2, 12, 2, 2}},    {"shake", {2, 12, 2, 2}},
              {"add", {2, 12, 2, 2}},     {"avgpool", {2, 12, 1, 1}}, {"linear", {2, 3, 1, 1}},
              {"linear", {2, 12, 1, 1}},  {"sigmoid", {2, 12, 1, 1}}, {"scale", {2, 12, 2, 2}},
              {"pad_channels", {2, 16, 2, 2}}, {"pool", {2, 16, 1, 1}}, {"linear", {2, 10, 1, 1}}};
  assert_int_equal(g->n_nodes, DT_ARRAY_LEN(want));
  for (int i = 0; i < g->n_nodes; i++) {
    const dt_node *n = &g->nodes[i];
    if (strcmp(n->ops->kind, want[i].kind) != 0 || n->shape.n != want[i].s.n ||
        n->shape.c != want[i].s.c || n->shape.h != want[i].s.h || n->shape.w != want[i].s.w)
      fail_msg("node %d: %s (%d, %d, %d, %d), want %s (%d, %d, %d, %d)", i, n->ops->kind,
               n->shape.n, n->shape.c, n->shape.h, n->shape.w, want[i].kind, want[i].s.n,
               want[i].s.c, want[i].s.h, want[i].s.w);
  }
  /* The bias follows its convolution's weight, not decayed, PyTorch's default init. */
  const int w = dt_params_find(&ps, "c1.weight"), b = dt_params_find(&ps, "c1.bias");
  assert_true(w >= 0 && b == w + 1);
  const dt_param *bp = &ps.items[b];
  assert_true(bp->ndim == 1 && bp->dims[0] == 12 && bp->count == 12);
  assert_true(bp->flags == DT_PARAM_NO_DECAY && bp->init == DT_INIT_UNIFORM_FAN_IN);
  assert_int_equal(bp->fan_in, 27);
  /* Parameters: convs 324 + 12 (bias) + 48 + 96 + 96 + 1728 + 1728, se 36 + 3 + 36 + 12,
   * fc 160 + 10. The new layers other than bias have none. */
  long total = 0;
  for (int i = 0; i < g->n_nodes; i++) total += g->nodes[i].n_params;
  assert_int_equal(total, 324 + 12 + 48 + 96 + 96 + 1728 + 1728 + 39 + 48 + 170);
  /* fan_in 0: the original reference code's zero-initialised bias. */
  dt_graph *g2 = dt_graph_create(NULL, &ps, (dt_shape){1, 3, 8, 8}, true);
  dt_graph_bias(g2, "other", 0, 0);
  assert_true(ps.items[dt_params_find(&ps, "other.bias")].init == DT_INIT_ZEROS);
  dt_graph_free(g2);
  dt_graph_free(g);
  dt_params_free(&ps, NULL);
}

/* ---- DT_INIT_UNIFORM_FAN_IN ---- */

static void test_uniform_init(void **state) {
  dt_backend *be = *state;
  dt_params ps = {0};
  const int dims[1] = {4096};
  const int i = dt_params_add(&ps, "conv.bias", 1, dims, DT_PARAM_NO_DECAY, DT_INIT_UNIFORM_FAN_IN,
                              576, 64);
  dt_params_alloc(&ps, be);
  dt_params_init(&ps, be, 7, false);
  float *h = dt_xcalloc(4096, sizeof *h);
  be->ops->to_host(be, h, dt_params_data(&ps, i), 4096 * sizeof *h);
  const double bound = 1.0 / sqrt(576.0);
  double mean = 0, var = 0, lo = 1, hi = -1;
  for (int j = 0; j < 4096; j++) {
    mean += h[j];
    var += (double)h[j] * h[j];
    lo = fmin(lo, h[j]), hi = fmax(hi, h[j]);
  }
  mean /= 4096, var = var / 4096 - mean * mean;
  print_message("  U(+-%.4f): min %.4f max %.4f mean %.5f var %.3e (want %.3e)\n", bound, lo, hi,
                mean, var, bound * bound / 3);
  assert_true(lo >= -bound && hi <= bound);
  assert_true(lo < -0.95 * bound && hi > 0.95 * bound);
  assert_true(fabs(mean) < 0.05 * bound);                   /* sd of the mean: 0.009 bound */
  assert_true(fabs(var / (bound * bound / 3) - 1) < 0.06); /* sd: 0.014 */
  free(h);
  dt_params_free(&ps, be);
}

/* ---- a planned net ---- */

typedef struct {
  dt_params ps;
  dt_graph *g;
  float *x, *t;   /* input (N, 3, 8, 8) and one-hot targets (N, 10), host */
  float *losses;  /* (N) */
  int n;
} net;

static void net_init(net *m, dt_backend *be, int n, const net_opts *o, bool inference,
                     dt_params *shared) {
  memset(m, 0, sizeof *m);
  m->n = n;
  dt_params *ps = shared ? shared : &m->ps;
  m->g = dt_graph_create(be, ps, (dt_shape){n, 3, 8, 8}, inference);
  build_net(m->g, o);
  if (!shared) {
    dt_params_alloc(ps, be);
    dt_params_init(ps, be, 11, false);
  }
  dt_graph_plan(m->g);
  m->losses = dt_xcalloc((size_t)n, sizeof(float));
}

static void net_free(net *m, dt_backend *be, bool own_params) {
  dt_graph_free(m->g);
  if (own_params) dt_params_free(&m->ps, be);
  free(m->losses);
}

/* Inputs and targets of global samples [first, first + n). */
static void batch_data(int first, int n, float *x, float *t) {
  for (int i = 0; i < n; i++) {
    tu_fill_uniform(x + (size_t)i * 3 * 64, 3 * 64, 500 + (uint64_t)(first + i), -1, 1);
    for (int k = 0; k < CLASSES; k++) t[(size_t)i * CLASSES + k] = k == (first + i) % CLASSES;
  }
}

/* Sum of the per-sample losses of one training forward. */
static double net_loss(net *m, const float *x, const float *t, float grad_scale) {
  dt_graph_forward(m->g, x, true);
  dt_graph_loss(m->g, t, grad_scale, m->losses);
  double s = 0;
  for (int i = 0; i < m->n; i++) s += m->losses[i];
  return s;
}

static void test_graph_grad(void **state) {
  dt_backend *be = *state;
  /* Shake off (alpha = beta = 0.5): only then is its backward the true gradient. */
  const net_opts o = {0.3f, false, false, true};
  net m;
  net_init(&m, be, 3, &o, false, NULL);
  m.g->step_key = 0x5eed;
  float *x = dt_xcalloc(3 * 3 * 64, sizeof *x), *t = dt_xcalloc(3 * CLASSES, sizeof *t);
  batch_data(0, 3, x, t);
  net_loss(&m, x, t, 1.0f);
  dt_graph_backward(m.g);
  dt_params *ps = &m.ps;
  float *w = dt_xcalloc(ps->n_weights, sizeof *w), *gr = dt_xcalloc(ps->n_weights, sizeof *gr);
  be->ops->to_host(be, gr, ps->grads, ps->n_weights * sizeof *gr);
  be->ops->to_host(be, w, ps->weights, ps->n_weights * sizeof *w);
  /* Central differences of the fp32 loss on a few entries of every tensor. */
  const float h = 1e-3f;
  int worst_i = -1;
  double worst = 0;
  for (int i = 0; i < ps->count; i++) {
    const dt_param *p = &ps->items[i];
    if (p->flags & DT_PARAM_BUFFER) continue;
    double num2 = 0, diff2 = 0;
    for (size_t k = 0; k < p->count && k < 6; k++) {
      const size_t j = p->offset + (k * 7919) % p->count;
      const float keep = w[j];
      w[j] = keep + h;
      be->ops->to_device(be, ps->weights, w, ps->n_weights * sizeof *w);
      const double fp = net_loss(&m, x, t, 1.0f);
      w[j] = keep - h;
      be->ops->to_device(be, ps->weights, w, ps->n_weights * sizeof *w);
      const double fm = net_loss(&m, x, t, 1.0f);
      w[j] = keep;
      const double num = (fp - fm) / (2 * h);
      num2 += num * num;
      diff2 += (num - gr[j]) * (num - gr[j]);
    }
    be->ops->to_device(be, ps->weights, w, ps->n_weights * sizeof *w);
    const double err = sqrt(diff2) / fmax(sqrt(num2), 1e-3);
    if (err > worst) worst = err, worst_i = i;
    print_message("  %-20s rel err %.2e\n", p->name, err);
  }
  print_message("  worst parameter gradient: %s rel err %.2e\n", ps->items[worst_i].name, worst);
  assert_true(worst < 1e-2);
  free(w), free(gr), free(x), free(t);
  net_free(&m, be, true);
}

/* Per-sample losses and summed gradients of a training step over global samples [0, 4): one
 * batch of 4, or micro-batches of 2 (sample_offset 0 and 2). */
static void step(dt_backend *be, const net_opts *o, uint64_t key, int micro, float *losses,
                 float *grads) {
  dt_params ps = {0};
  {
    dt_graph *g = dt_graph_create(be, &ps, (dt_shape){1, 3, 8, 8}, true);
    build_net(g, o);
    dt_graph_free(g);
  }
  dt_params_alloc(&ps, be);
  dt_params_init(&ps, be, 11, false);
  net m;
  net_init(&m, be, micro, o, false, &ps);
  float *x = dt_xcalloc((size_t)micro * 3 * 64, sizeof *x);
  float *t = dt_xcalloc((size_t)micro * CLASSES, sizeof *t);
  float *gsum = dt_xcalloc(ps.n_weights, sizeof *gsum),
        *gpart = dt_xcalloc(ps.n_weights, sizeof *gpart);
  for (int first = 0; first < 4; first += micro) {
    batch_data(first, micro, x, t);
    m.g->step_key = key;
    m.g->sample_offset = first;
    net_loss(&m, x, t, 1.0f);
    memcpy(losses + first, m.losses, (size_t)micro * sizeof *losses);
    dt_graph_backward(m.g);
    be->ops->to_host(be, gpart, ps.grads, ps.n_weights * sizeof *gpart);
    for (size_t j = 0; j < ps.n_weights; j++) gsum[j] += gpart[j];
  }
  memcpy(grads, gsum, ps.n_weights * sizeof *grads);
  free(x), free(t), free(gsum), free(gpart);
  net_free(&m, be, false);
  dt_params_free(&ps, be);
}

static size_t net_weights(void) {
  dt_params ps = {0};
  const net_opts o = {0.5f, true, true, true};
  dt_graph *g = dt_graph_create(NULL, &ps, (dt_shape){1, 3, 8, 8}, true);
  build_net(g, &o);
  const size_t n = ps.n_weights;
  dt_graph_free(g);
  dt_params_free(&ps, NULL);
  return n;
}

static void test_randomness(void **state) {
  dt_backend *be = *state;
  const size_t nw = net_weights();
  float l4[4], l2[4], lk[4], *g4 = dt_xcalloc(nw, sizeof(float)),
                             *g2 = dt_xcalloc(nw, sizeof(float));
  float *gk = dt_xcalloc(nw, sizeof(float));
  const net_opts variants[] = {{0.5f, true, true, true}, {0.5f, true, true, false},
                               {0.3f, true, false, true}};
  for (size_t vi = 0; vi < DT_ARRAY_LEN(variants); vi++) {
    const net_opts *o = &variants[vi];
    step(be, o, 42, 4, l4, g4);
    step(be, o, 42, 2, l2, g2);
    step(be, o, 43, 4, lk, gk);
    const double el = tu_rel_err(l2, l4, 4), eg = tu_rel_err(g2, g4, nw);
    const double dl = tu_rel_err(lk, l4, 4), dg = tu_rel_err(gk, g4, nw);
    print_message("  drop %.1f shake fwd %d bwd %d image %d: batch 4 vs 2x2: loss %.1e grad %.1e; "
                  "other step_key: loss %.1e grad %.1e\n",
                  o->drop, o->shake_fwd, o->shake_bwd, o->shake_img, el, eg, dl, dg);
    assert_true(el < 1e-5 && eg < 1e-4); /* the same draws for the same global samples */
    assert_true(dl > 1e-3 && dg > 1e-3); /* the draws do depend on the step */
  }
  /* Inference: dropout is the identity and shake uses 0.5, whatever the step key. */
  {
    const net_opts o = {0.5f, true, true, true};
    net m;
    net_init(&m, be, 4, &o, true, NULL);
    float x[4 * 3 * 64], t[4 * CLASSES], la[4], lb[4];
    batch_data(0, 4, x, t);
    m.g->step_key = 1;
    dt_graph_forward(m.g, x, false);
    dt_graph_loss(m.g, t, 1.0f, la);
    m.g->step_key = 2;
    m.g->sample_offset = 100;
    dt_graph_forward(m.g, x, false);
    dt_graph_loss(m.g, t, 1.0f, lb);
    assert_true(memcmp(la, lb, sizeof la) == 0);
    net_free(&m, be, true);
  }
  free(g4), free(g2), free(gk);
}

/* ---- a backend without an op: planning refuses it, naming the op ---- */

static void test_missing_op(void **state) {
  dt_backend *be = *state;
  fflush(stdout);
  fflush(stderr);
  const pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    /* In this child only: the CPU backend without pooling. */
    static dt_backend_ops ops;
    ops = *be->ops;
    ops.name = "test";
    ops.pool_create = NULL;
    be->ops = &ops;
    dt_params ps = {0};
    dt_graph *g = dt_graph_create(be, &ps, (dt_shape){1, 3, 4, 4}, true);
    dt_graph_pool(g, 0, DT_POOL_MAX, 2, 2, 0);
    dt_params_alloc(&ps, be);
    if (!freopen("/tmp/dt_test_missing_op.txt", "w", stderr)) _exit(97);
    dt_graph_plan(g); /* must not return */
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  assert_true(!(WIFEXITED(status) && WEXITSTATUS(status) == 0));
  FILE *f = fopen("/tmp/dt_test_missing_op.txt", "r");
  assert_non_null(f);
  char line[512] = "";
  if (!fgets(line, sizeof line, f)) line[0] = 0;
  fclose(f);
  remove("/tmp/dt_test_missing_op.txt");
  print_message("  %s", line);
  assert_non_null(strstr(line, "the test backend leaves op pool_create NULL"));
}

/* ---- activation memory ---- */

/* The CPU backend with alloc recorded (every block's pointer and size) and, when `half`, every
 * layout counting half its bytes (a 16-bit backend's layouts, for the accounting only). */
#define MAX_ALLOCS 4096
static struct {
  const dt_backend_ops *real;
  void *ptr[MAX_ALLOCS];
  size_t bytes[MAX_ALLOCS];
  int n;
  bool half;
} rec;

static void *rec_alloc(dt_backend *be, size_t bytes) {
  void *p = rec.real->alloc(be, bytes);
  assert_true(rec.n < MAX_ALLOCS);
  rec.ptr[rec.n] = p;
  rec.bytes[rec.n++] = bytes;
  return p;
}

static size_t rec_layout_bytes(const dt_layout *l) {
  size_t b = rec.real->layout_bytes(l);
  return rec.half ? b / 2 : b;
}

static size_t rec_total(void) {
  size_t t = 0;
  for (int i = 0; i < rec.n; i++) t += rec.bytes[i];
  return t;
}

/* The bytes of the recorded blocks at p (0 when none). */
static size_t rec_bytes_at(const void *p) {
  for (int i = 0; i < rec.n; i++)
    if (p && rec.ptr[i] == p) return rec.bytes[i];
  return 0;
}

/* input (N, 3, 8, 8); a = conv3x3 (8); r = conv1x1(a) (8), read only as the residual of
 * y = conv3x3(a) + r, which the CPU backend computes in r's buffer; bn + ReLU, pooling, a
 * concatenation with a (two consumers: gradient accumulation), gap, fc -> 10. */
static dt_graph *bytes_net(dt_backend *be, dt_params *ps, int n, bool inference) {
  dt_graph *g = dt_graph_create(be, ps, (dt_shape){n, 3, 8, 8}, inference);
  int a = dt_graph_conv(g, "a", 0, 8, 3, 1, 1, 1, -1);
  int r = dt_graph_conv(g, "r", a, 8, 1, 1, 0, 1, -1);
  int y = dt_graph_conv(g, "y", a, 8, 3, 1, 1, 1, r);
  y = dt_graph_bn(g, "bn", y, true);
  y = dt_graph_concat(g, y, a);
  y = dt_graph_pool(g, y, DT_POOL_MAX, 2, 2, 0);
  y = dt_graph_gap(g, y);
  dt_graph_linear(g, "fc", y, CLASSES);
  return g;
}

static void test_activation_bytes(void **state) {
  dt_backend *be = *state;
  const dt_backend_ops *real = be->ops;
  static dt_backend_ops ops;
  ops = *real;
  ops.alloc = rec_alloc;
  ops.layout_bytes = rec_layout_bytes;
  memset(&rec, 0, sizeof rec);
  rec.real = real;
  const int N = 4;
  dt_params ps = {0};
  dt_graph_free(bytes_net(NULL, &ps, 1, true)); /* registers the parameters */
  dt_params_alloc(&ps, be);
  be->ops = &ops;

  /* Training graph, fp32: the figure is what was allocated at the values' buffers. */
  dt_graph *g = bytes_net(be, &ps, N, false);
  dt_graph_plan(g);
  const size_t all_full = rec_total();
  const dt_graph_bytes b = dt_graph_activation_bytes(g);
  size_t values = 0, grads = 0, max_value = 0;
  int inplace = 0;
  for (int v = 0; v <= g->n_nodes; v++) {
    const bool shared = v > 0 && g->nodes[v - 1].residual_inplace;
    inplace += shared;
    if (!shared) values += rec_bytes_at(g->values[v].t.data);
    grads += rec_bytes_at(g->values[v].grad_own);
    max_value = DT_MAX(max_value, real->layout_bytes(g->values[v].t.layout));
    if (v > 0) assert_int_equal(rec_bytes_at(g->values[v].grad_own),
                                real->layout_bytes(g->values[v].t.layout));
  }
  const size_t scratch = rec_bytes_at(g->scratch);
  print_message("  fp32 batch %d: values %zu, gradients %zu, scratch %zu bytes (%d in place); "
                "%zu bytes allocated in all while planning\n",
                N, b.values, b.grads, b.scratch, inplace, all_full);
  assert_int_equal(inplace, 1); /* y shares r's buffer: counted once */
  assert_true(values > 0 && grads > 0);
  assert_int_equal(b.values, values);
  assert_int_equal(b.grads, grads);
  assert_int_equal(b.scratch, scratch);
  assert_int_equal(scratch, max_value);
  assert_int_equal(dt_graph_bytes_total(b), values + grads + scratch);
  /* The rest of what planning allocated is op-owned (batch statistics), the targets or the
   * per-sample losses. */
  const size_t targets = (size_t)N * CLASSES * sizeof(float), losses = (size_t)N * sizeof(float);
  const size_t op_owned = all_full - dt_graph_bytes_total(b) - targets - losses;
  assert_int_equal(op_owned, 2 * 8 * sizeof(float));
  dt_graph_free(g);

  /* Layouts only: the same figure, and of it nothing allocated. */
  rec.n = 0;
  g = bytes_net(be, &ps, N, false);
  dt_graph_plan_layouts(g);
  const dt_graph_bytes bl = dt_graph_activation_bytes(g);
  assert_int_equal(bl.values, b.values);
  assert_int_equal(bl.grads, b.grads);
  assert_int_equal(bl.scratch, b.scratch);
  assert_int_equal(rec_total(), op_owned);
  assert_null(g->values[1].t.data);
  dt_graph_free(g);

  /* Inference: values only. */
  rec.n = 0;
  g = bytes_net(be, &ps, N, true);
  dt_graph_plan_layouts(g);
  const dt_graph_bytes bi = dt_graph_activation_bytes(g);
  assert_int_equal(bi.values, b.values);
  assert_int_equal(bi.grads, 0);
  assert_int_equal(bi.scratch, 0);
  dt_graph_free(g);

  /* 16-bit layouts (layout_bytes halved): every part halves. */
  rec.n = 0;
  rec.half = true;
  g = bytes_net(be, &ps, N, false);
  dt_graph_plan_layouts(g);
  const dt_graph_bytes bh = dt_graph_activation_bytes(g);
  print_message("  16-bit layouts: values %zu, gradients %zu, scratch %zu bytes\n", bh.values,
                bh.grads, bh.scratch);
  assert_int_equal(2 * bh.values, b.values);
  assert_int_equal(2 * bh.grads, b.grads);
  assert_int_equal(2 * bh.scratch, b.scratch);
  dt_graph_free(g);
  rec.half = false;

  be->ops = real;
  dt_params_free(&ps, be);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_build),      cmocka_unit_test(test_uniform_init),
      cmocka_unit_test(test_graph_grad), cmocka_unit_test(test_randomness),
      cmocka_unit_test(test_missing_op), cmocka_unit_test(test_activation_bytes),
  };
  return cmocka_run_group_tests(tests, setup_backend, teardown_backend);
}
