/* test_gpu_half.c: the CUDA backend's 16-bit storage (train.precision = bf16 / fp16,
 * src/cuda/cuda_dtype.h), on the GPU. Every op against the double reference in bf16 and fp16
 * is tests/backend_ops.c's (test_gpu_ops); this file checks what those op tests cannot see:
 *
 *   layouts      in bf16 and fp16 the activations an op chooses the layout of take 2 bytes an
 *                element (a convolution's output, everything that keeps its layout, global
 *                average pooling) while the plain layout (the image batch) and the linear
 *                layer's output (the logits) stay fp32, 4 bytes.
 *   weight copy  convolutions and the linear layer read a 16-bit copy of the fp32 weights made
 *                once per step (cuda_dtype.h dt_cuda_wcopy): after an optimizer update and
 *                after to_device of new weights, a forward, and a backward-data with no
 *                forward before it, compute with the new weights (within the bf16 bound 2e-2
 *                of the double reference), not with a stale copy.
 *   memory       the bytes of every activation and activation gradient of the training graphs
 *                of ResNet-preact-20 (1x28x28, batch 128) and WRN-16-4 (3x32x32, batch 64) in
 *                fp32, bf16 and fp16 (printed: the activation memory per model); 16 bits must
 *                take at most 0.55 of fp32 (the fp32 image batch and logits stay).
 *   20 steps     ResNet-preact-20 on one random batch of 32, the same initial weights, 20 SGD
 *                steps (lr 0.1, momentum 0.9): the bf16 and fp16 losses track the fp32 run on
 *                the same GPU within 0.15 of the first loss at every step (TRACK_TOL), and
 *                fall below half of it (a stale weight copy would not learn).
 *
 * Exits 77 (ctest: skipped) without a CUDA backend or GPU; a precision the GPU has no tensor
 * cores for is skipped with a message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "backend.h"
#include "backend_factory.h"
#include "common.h"
#include "models/model.h"
#include "nn/graph.h"
#include "optim.h"
#include "precision.h"
#include "ref/ref_ops.h"
#include "rng.h"
#include "testutil.h"

#define HALF_TOL 2e-2   /* bf16 bound of tests/backend_ops.c (fp16 is finer) */
#define MEMORY_RATIO 0.55
#define TRACK_N 32
#define TRACK_STEPS 20
/* Of the first step's loss (about 3): the fp32 run falls by up to 0.75 a step around steps
 * 2-5 (measured with the CPU backend's fp32: 2.99, 2.25, 1.62, 1.01, 0.50, 0.21, ... 0.0037
 * at step 20), so a 16-bit run a fraction of a step behind differs by some tenths there. */
#define TRACK_TOL 0.15

static const dt_precision half_precisions[] = {DT_PRECISION_BF16, DT_PRECISION_FP16};

/* A CUDA backend of this precision, or NULL (printed) where the GPU cannot. */
static dt_backend *backend_of(dt_precision precision) {
  dt_backend *be = dt_backend_create(DT_DEVICE_CUDA, 1, -1, 1);
  assert_non_null(be);
  if (precision == DT_PRECISION_FP32) return be;
  assert_non_null(be->ops->set_precision);
  if (be->ops->set_precision(be, precision) != DT_OK) {
    print_message("  %s skipped: %s\n", dt_precision_name(precision), dt_error_message());
    be->ops->destroy(be);
    return NULL;
  }
  return be;
}

/* ---- host helpers ---- */

static double *to_double(const float *f, size_t n) {
  double *d = dt_xcalloc(n ? n : 1, sizeof *d);
  for (size_t i = 0; i < n; i++) d[i] = f[i];
  return d;
}

static float *rand_floats(size_t n, uint64_t seed, float lo, float hi) {
  float *f = dt_xcalloc(n ? n : 1, sizeof *f);
  tu_fill_uniform(f, n, seed, lo, hi);
  return f;
}

/* The tensor downloaded, in double. */
static double *t_get(dt_backend *be, const dt_tensor *t) {
  const size_t n = dt_shape_count(t->shape);
  float *f = dt_xcalloc(n, sizeof *f);
  be->ops->download(be, t, f);
  double *d = to_double(f, n);
  free(f);
  return d;
}

/* Backend weights w (n floats) to the host, in double. */
static double *p_get(dt_backend *be, const float *w, size_t n) {
  float *f = dt_xcalloc(n, sizeof *f);
  be->ops->to_host(be, f, w, n * sizeof *f);
  double *d = to_double(f, n);
  free(f);
  return d;
}

/* Backend convolution weights of rp (in the backend's order, weights_krsc) to the host in
 * logical OIHW, in double: what the reference reads. */
static double *w_get(dt_backend *be, const float *w, const ref_conv *rp) {
  const size_t n = ref_conv_w_count(rp);
  float *f = dt_xcalloc(n, sizeof *f), *o = dt_xcalloc(n, sizeof *o);
  be->ops->to_host(be, f, w, n * sizeof *f);
  if (be->weights_krsc)
    dt_conv_weights_permute(o, f, rp->k, rp->c / rp->groups, rp->r * rp->s, false);
  else
    memcpy(o, f, n * sizeof *o);
  double *d = to_double(o, n);
  free(f), free(o);
  return d;
}

static int check(const char *what, const double *got, const double *want, size_t n) {
  const double err = tu_rel_err_d(got, want, n);
  const bool ok = err < HALF_TOL; /* false for NaN */
  print_message("  %s %-58s rel err %.2e\n", ok ? "ok  " : "FAIL", what, err);
  return ok ? 0 : 1;
}

/* ---- layouts ---- */

static void test_layout_bytes(void **state) {
  (void)state;
  int ran = 0;
  for (size_t pi = 0; pi < DT_ARRAY_LEN(half_precisions); pi++) {
    dt_backend *be = backend_of(half_precisions[pi]);
    if (!be) continue;
    ran++;
    const dt_shape img = {4, 3, 8, 8}, act = {4, 16, 8, 8};
    const dt_layout *plain = be->ops->layout_plain(be, img);
    assert_int_equal(be->ops->layout_bytes(plain), dt_shape_count(img) * 4);
    const dt_conv_params p = {4, 3, 8, 8, 16, 3, 3, 1, 1, 1, false};
    const dt_layout *y = NULL, *g = NULL, *z = NULL;
    dt_op *conv = be->ops->conv_create(be, &p, plain, &y);
    assert_int_equal(be->ops->layout_bytes(y), dt_shape_count(act) * 2);
    dt_op *bn = be->ops->bn_create(be, act, y, 1e-5f, true);
    dt_op *gap = be->ops->gap_create(be, act, y, &g);
    assert_int_equal(be->ops->layout_bytes(g), (size_t)4 * 16 * 2);
    dt_op *lin = be->ops->linear_create(be, (dt_shape){4, 16, 1, 1}, g, 10, &z);
    assert_int_equal(be->ops->layout_bytes(z), (size_t)4 * 10 * 4);
    assert_ptr_equal(z, be->ops->layout_plain(be, (dt_shape){4, 10, 1, 1}));
    print_message("  %s: image %zu B, conv output %zu B (fp32 would be %zu), gap %zu B, logits "
                  "%zu B\n", dt_precision_name(half_precisions[pi]), be->ops->layout_bytes(plain),
                  be->ops->layout_bytes(y), dt_shape_count(act) * 4, be->ops->layout_bytes(g),
                  be->ops->layout_bytes(z));
    be->ops->op_free(lin);
    be->ops->op_free(gap);
    be->ops->op_free(bn);
    be->ops->op_free(conv);
    be->ops->destroy(be);
  }
  if (!ran) skip();
}

/* ---- the weight copy follows the weights ---- */

/* A 16-bit convolution (x in its own 16-bit layout, from a stem) and a linear layer on 16-bit
 * input: forward, forward after sgd_update, backward-data after to_device with no forward. */
static int weight_copy_case(dt_backend *be, const char *name) {
  int failures = 0;
  char what[160];
  /* stem: (N, 3, H, W) plain -> 16-bit (N, C, H, W), so that x is an activation */
  const int N = 2, C = 8, H = 6, W = 6, K = 12;
  const dt_conv_params sp = {N, 3, H, W, C, 1, 1, 1, 0, 1, false};
  const dt_conv_params p = {N, C, H, W, K, 3, 3, 1, 1, 1, true};
  const ref_conv rp = {N, C, H, W, K, 3, 3, 1, 1, 1};
  const dt_layout *xl = NULL, *yl = NULL;
  dt_op *stem = be->ops->conv_create(be, &sp, be->ops->layout_plain(be, (dt_shape){N, 3, H, W}),
                                     &xl);
  dt_op *conv = be->ops->conv_create(be, &p, xl, &yl);
  const dt_shape xs = {N, C, H, W}, ys = {N, K, H, W};
  dt_tensor x = {xs, xl, be->ops->alloc(be, be->ops->layout_bytes(xl))};
  dt_tensor y = {ys, yl, be->ops->alloc(be, be->ops->layout_bytes(yl))};
  dt_tensor dy = {ys, yl, be->ops->alloc(be, be->ops->layout_bytes(yl))};
  dt_tensor dx = {xs, xl, be->ops->alloc(be, be->ops->layout_bytes(xl))};
  const size_t nx = dt_shape_count(xs), ny = dt_shape_count(ys), nw = ref_conv_w_count(&rp);
  float *xh = rand_floats(nx, 1, -1, 1), *dyh = rand_floats(ny, 2, -1, 1);
  be->ops->upload(be, xh, &x);
  be->ops->upload(be, dyh, &dy);
  double *xd = t_get(be, &x), *dyd = t_get(be, &dy); /* the 16-bit values the ops see */
  float *w = be->ops->alloc(be, nw * sizeof(float)), *g = be->ops->alloc(be, nw * sizeof(float));
  float *buf = be->ops->alloc(be, nw * sizeof(float));
  float *wh = rand_floats(nw, 3, -0.3f, 0.3f), *gh = rand_floats(nw, 4, -1, 1);
  be->ops->to_device(be, w, wh, nw * sizeof(float));
  be->ops->to_device(be, g, gh, nw * sizeof(float));
  double *want = dt_xcalloc(nx > ny ? nx : ny, sizeof *want);

  for (int round = 0; round < 3; round++) {
    /* round 0: fresh weights; 1: after an SGD update (lr 0.5: the weights move by ~0.5);
     * 2: after to_device of new weights, backward-data first */
    if (round == 1)
      be->ops->sgd_update(be, w, g, buf, nw, 0.5f, 0.0f, 0.0f, false, true, 1.0f, NULL);
    if (round == 2) {
      float *w2 = rand_floats(nw, 5, -0.3f, 0.3f);
      be->ops->to_device(be, w, w2, nw * sizeof(float));
      free(w2);
    }
    double *wd = w_get(be, w, &rp);
    if (round < 2) {
      be->ops->conv_forward(conv, &x, w, &y, false);
      ref_conv_forward(&rp, xd, wd, want);
      double *got = t_get(be, &y);
      snprintf(what, sizeof what, "%s conv forward, weights of round %d", name, round);
      failures += check(what, got, want, ny);
      free(got);
    }
    be->ops->conv_backward_data(conv, &dy, w, &dx);
    ref_conv_backward_data(&rp, dyd, wd, want);
    double *got = t_get(be, &dx);
    snprintf(what, sizeof what, "%s conv backward-data, weights of round %d", name, round);
    failures += check(what, got, want, nx);
    free(got);
    free(wd);
  }

  /* linear on the 16-bit gap of y: (N, K, 1, 1) -> (N, 5) */
  const dt_layout *gl = NULL, *zl = NULL;
  dt_op *gap = be->ops->gap_create(be, ys, yl, &gl);
  const dt_shape gs = {N, K, 1, 1}, zs = {N, 5, 1, 1};
  dt_op *lin = be->ops->linear_create(be, gs, gl, 5, &zl);
  dt_tensor gt = {gs, gl, be->ops->alloc(be, be->ops->layout_bytes(gl))};
  dt_tensor z = {zs, zl, be->ops->alloc(be, be->ops->layout_bytes(zl))};
  dt_tensor dz = {zs, zl, be->ops->alloc(be, be->ops->layout_bytes(zl))};
  dt_tensor dg = {gs, gl, be->ops->alloc(be, be->ops->layout_bytes(gl))};
  float *gh2 = rand_floats((size_t)N * K, 6, -1, 1), *dzh = rand_floats((size_t)N * 5, 7, -1, 1);
  be->ops->upload(be, gh2, &gt);
  be->ops->upload(be, dzh, &dz);
  double *gd = t_get(be, &gt), *dzd = to_double(dzh, (size_t)N * 5);
  const size_t nl = (size_t)5 * K;
  float *lw = be->ops->alloc(be, nl * sizeof(float)), *lg = be->ops->alloc(be, nl * sizeof(float));
  float *lbuf = be->ops->alloc(be, nl * sizeof(float)), *lb = be->ops->alloc(be, 5 * sizeof(float));
  float *ldw = be->ops->alloc(be, nl * sizeof(float)), *ldb = be->ops->alloc(be, 5 * sizeof(float));
  float *lwh = rand_floats(nl, 8, -0.5f, 0.5f), *lgh = rand_floats(nl, 9, -1, 1);
  be->ops->to_device(be, lw, lwh, nl * sizeof(float));
  be->ops->to_device(be, lg, lgh, nl * sizeof(float));
  const double zero_b[5] = {0};
  for (int round = 0; round < 3; round++) {
    if (round == 1)
      be->ops->sgd_update(be, lw, lg, lbuf, nl, 0.5f, 0.0f, 0.0f, false, true, 1.0f, NULL);
    if (round == 2) {
      float *w2 = rand_floats(nl, 10, -0.5f, 0.5f);
      be->ops->to_device(be, lw, w2, nl * sizeof(float));
      free(w2);
    }
    double *wd = p_get(be, lw, nl);
    if (round < 2) {
      be->ops->linear_forward(lin, &gt, lw, lb, &z);
      ref_linear_forward(N, K, 5, gd, wd, zero_b, want);
      double *got = t_get(be, &z);
      snprintf(what, sizeof what, "%s linear forward, weights of round %d", name, round);
      failures += check(what, got, want, (size_t)N * 5);
      free(got);
    }
    be->ops->linear_backward(lin, &gt, &dz, lw, &dg, ldw, ldb);
    double *rdw = dt_xcalloc(nl, sizeof *rdw), rdb[5];
    ref_linear_backward(N, K, 5, gd, dzd, wd, want, rdw, rdb);
    double *got = t_get(be, &dg);
    snprintf(what, sizeof what, "%s linear backward dx, weights of round %d", name, round);
    failures += check(what, got, want, (size_t)N * K);
    free(got);
    free(rdw);
    free(wd);
  }

  be->ops->op_free(lin);
  be->ops->op_free(gap);
  be->ops->op_free(conv);
  be->ops->op_free(stem);
  void *bufs[] = {x.data, y.data, dy.data, dx.data, w, g, buf, gt.data, z.data, dz.data, dg.data,
                  lw, lg, lbuf, lb, ldw, ldb};
  for (size_t i = 0; i < DT_ARRAY_LEN(bufs); i++) be->ops->free(be, bufs[i]);
  free(xh);
  free(dyh);
  free(xd);
  free(dyd);
  free(wh);
  free(gh);
  free(want);
  free(gh2);
  free(dzh);
  free(gd);
  free(dzd);
  free(lwh);
  free(lgh);
  return failures;
}

static void test_weight_copy(void **state) {
  (void)state;
  int ran = 0, failures = 0;
  for (size_t pi = 0; pi < DT_ARRAY_LEN(half_precisions); pi++) {
    dt_backend *be = backend_of(half_precisions[pi]);
    if (!be) continue;
    ran++;
    failures += weight_copy_case(be, dt_precision_name(half_precisions[pi]));
    be->ops->destroy(be);
  }
  if (!ran) skip();
  assert_int_equal(failures, 0);
}

/* ---- activation memory per model ---- */

/* Bytes of every activation and activation gradient of the training graph. */
static size_t graph_activation_bytes(dt_backend *be, dt_graph *g) {
  size_t sum = be->ops->layout_bytes(g->values[0].t.layout); /* the image batch */
  for (int i = 0; i < g->n_nodes; i++) {
    const dt_node *n = &g->nodes[i];
    const dt_value *v = &g->values[n->out];
    const size_t b = be->ops->layout_bytes(v->t.layout);
    if (!n->residual_inplace) sum += b; /* else it shares the residual's buffer */
    if (v->grad_own) sum += b;
  }
  return sum + g->scratch_bytes;
}

static void test_activation_memory(void **state) {
  (void)state;
  static const struct {
    const char *name;
    dt_model_name model;
    int depth, widen, channels, size, batch;
  } models[] = {{"ResNet-preact-20", DT_MODEL_NAME_RESNET_PREACT, 20, 1, 1, 28, 128},
                {"WRN-16-4", DT_MODEL_NAME_WRN, 16, 4, 3, 32, 64}};
  static const dt_precision precs[] = {DT_PRECISION_FP32, DT_PRECISION_BF16, DT_PRECISION_FP16};
  int failures = 0;
  for (size_t mi = 0; mi < DT_ARRAY_LEN(models); mi++) {
    size_t fp32 = 0;
    for (size_t pi = 0; pi < DT_ARRAY_LEN(precs); pi++) {
      dt_backend *be = backend_of(precs[pi]);
      if (!be) continue;
      dt_config cfg;
      dt_config_defaults(&cfg);
      cfg.model_name = models[mi].model;
      cfg.model_depth = models[mi].depth;
      cfg.model_widening_factor = models[mi].widen;
      dt_model *m = dt_model_create(&cfg, be, models[mi].channels, models[mi].size,
                                    models[mi].size, 10);
      assert_non_null(m);
      dt_graph *g = dt_model_graph(m, models[mi].batch, false);
      const size_t bytes = graph_activation_bytes(be, g);
      if (precs[pi] == DT_PRECISION_FP32) fp32 = bytes;
      const double ratio = fp32 ? (double)bytes / (double)fp32 : 0;
      const bool ok = precs[pi] == DT_PRECISION_FP32 || (fp32 && ratio <= MEMORY_RATIO);
      print_message("  %s %s %s batch %d: activations and their gradients %.1f MiB (%.3f of "
                    "fp32)\n", ok ? "ok  " : "FAIL", models[mi].name,
                    dt_precision_name(precs[pi]), models[mi].batch,
                    (double)bytes / (1024.0 * 1024.0), ratio);
      if (!ok) failures++;
      dt_model_free(m);
      dt_config_free(&cfg);
      be->ops->destroy(be);
    }
  }
  assert_int_equal(failures, 0);
}

/* ---- 20 steps in 16 bits track fp32 ---- */

typedef struct {
  dt_backend *be;
  dt_model *m;
  dt_optim opt;
} side;

static double side_step(side *s, const float *x, const float *t, double lr) {
  dt_graph *g = dt_model_graph(s->m, TRACK_N, false);
  dt_graph_forward(g, x, true);
  float losses[TRACK_N];
  dt_graph_loss(g, t, 1.0f / TRACK_N, losses);
  dt_graph_backward(g);
  dt_optim_step(&s->opt, &s->m->params, lr, 1.0f, NULL);
  double sum = 0;
  for (int i = 0; i < TRACK_N; i++) sum += losses[i];
  return sum / TRACK_N;
}

static void test_track_20_steps(void **state) {
  (void)state;
  dt_config cfg;
  dt_config_defaults(&cfg);
  cfg.optim_lr = 0.1;
  cfg.optim_momentum = 0.9;
  const size_t nx = (size_t)TRACK_N * 28 * 28;
  float *x = rand_floats(nx, 11, -1, 1), t[TRACK_N * 10];
  memset(t, 0, sizeof t);
  dt_rng r = dt_rng_key(12, 7, 0, 0);
  for (int i = 0; i < TRACK_N; i++) t[i * 10 + (int)dt_rng_below(&r, 10)] = 1;

  side ref = {backend_of(DT_PRECISION_FP32), NULL, {0}};
  ref.m = dt_model_create(&cfg, ref.be, 1, 28, 28, 10);
  assert_non_null(ref.m);
  dt_optim_init(&ref.opt, &cfg, &ref.m->params);
  dt_params *rp = &ref.m->params;
  float *w0 = dt_xcalloc(rp->n_weights ? rp->n_weights : 1, sizeof *w0);
  float *b0 = dt_xcalloc(rp->n_buffers ? rp->n_buffers : 1, sizeof *b0);
  dt_params_to_host(rp, w0, rp->weights);
  ref.be->ops->to_host(ref.be, b0, rp->buffers, rp->n_buffers * sizeof *b0);
  double want[TRACK_STEPS];
  for (int s = 0; s < TRACK_STEPS; s++) want[s] = side_step(&ref, x, t, cfg.optim_lr);

  int ran = 0, failures = 0;
  for (size_t pi = 0; pi < DT_ARRAY_LEN(half_precisions); pi++) {
    side h = {backend_of(half_precisions[pi]), NULL, {0}};
    if (!h.be) continue;
    ran++;
    h.m = dt_model_create(&cfg, h.be, 1, 28, 28, 10);
    assert_non_null(h.m);
    dt_params *hp = &h.m->params;
    assert_int_equal(hp->n_weights, rp->n_weights);
    dt_params_from_host(hp, hp->weights, w0);
    h.be->ops->to_device(h.be, hp->buffers, b0, hp->n_buffers * sizeof *b0);
    dt_optim_init(&h.opt, &cfg, hp);
    const char *name = dt_precision_name(half_precisions[pi]);
    const double bound = TRACK_TOL * want[0];
    double worst = 0, last = 0;
    print_message("  step  loss fp32  loss %s  difference (bound %.3f)\n", name, bound);
    for (int s = 0; s < TRACK_STEPS; s++) {
      last = side_step(&h, x, t, cfg.optim_lr);
      const double d = fabs(last - want[s]);
      const bool ok = d <= bound; /* false for NaN */
      if (!ok) failures++;
      worst = ok ? fmax(worst, d) : INFINITY;
      print_message("  %4d %10.5f %10.5f %10.2e%s\n", s + 1, want[s], last, d, ok ? "" : "  FAIL");
    }
    const bool learned = last < 0.5 * want[0];
    if (!learned) failures++;
    print_message("  %s: worst difference %.3e (bound %.3e); final loss %.4f (fp32 %.4f, must be "
                  "below %.4f)%s\n", name, worst, bound, last, want[TRACK_STEPS - 1],
                  0.5 * want[0], learned ? "" : "  FAIL");
    dt_optim_free(&h.opt);
    dt_model_free(h.m);
    h.be->ops->destroy(h.be);
  }
  dt_optim_free(&ref.opt);
  dt_model_free(ref.m);
  ref.be->ops->destroy(ref.be);
  free(w0);
  free(b0);
  free(x);
  dt_config_free(&cfg);
  if (!ran) skip();
  assert_int_equal(failures, 0);
}

int main(void) {
  dt_backend *probe = dt_backend_create(DT_DEVICE_CUDA, 1, -1, 1);
  if (!probe) {
    printf("test_gpu_half: skipped: %s\n", dt_error_message());
    return 77;
  }
  probe->ops->destroy(probe);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_layout_bytes),
      cmocka_unit_test(test_weight_copy),
      cmocka_unit_test(test_activation_memory),
      cmocka_unit_test(test_track_20_steps),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
