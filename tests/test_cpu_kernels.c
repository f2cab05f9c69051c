/* test_cpu_kernels.c: the oneDNN CPU backend picks real (jit / gemm) kernels, never oneDNN's
 * reference code, and the kernels it picks instead of the obvious ones are right.
 *
 * - Convolutions whose layouts oneDNN's jit kernels reject (8 or 4 channels in nChw16c /
 *   nChw8c, 2x2 images of 512 channels), which src/cpu/cpu_conv.c stages through other
 *   layouts, and convolutions it runs with Winograd on AVX-512 (64 channels, and 50 -> 52
 *   padded to 64; the test checks that Winograd was picked), against the double-precision
 *   reference (tests/ref/ref_ops.c) with a relative error in norm below 1e-4: forward,
 *   forward accumulating onto a residual, backward data and backward weights, on the layout
 *   a stem convolution writes (as in a model).
 * - A small model of every family (docs/reference-experiments.md "Models"), one training step and
 * one inference forward at
 *   batch 2 on 3x16x16 (VGG 3x32x32): afterwards the backend holds no primitive on reference
 *   code (dt_cpu_ref_prims; reorders aside).
 * - The same in bf16 (set_precision): native on a CPU with bf16 instructions (oneDNN's bf16
 *   primitives and the plain loops on 16-bit activations), emulated elsewhere.
 * Both run on the machine's own ISA and again, when that is above AVX2, in a child process
 * with ONEDNN_MAX_CPU_ISA=AVX2 (the AVX2-only machines use nChw8c and other kernels). Below
 * AVX2 the no-reference checks are skipped (oneDNN has few kernels there). One thread: the
 * kernels are the same and the test stays quick on a busy machine. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cpu/backend_cpu.h"
#include "cpu/cpu_internal.h"
#include "models/model.h"
#include "ref/ref_ops.h"
#include "testutil.h"

#define TOL 1e-4
#define CHILD_ENV "DT_TEST_KERNELS_CHILD"

static dt_backend *g_be;

/* oneDNN has jit kernels for every layout we use from AVX2 on. */
static bool isa_has_kernels(void) {
  const dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
  return isa != dnnl_cpu_isa_sse41 && isa != dnnl_cpu_isa_all;
}

static int setup(void **state) {
  (void)state;
  g_be = dt_backend_cpu_create(1);
  return g_be ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  if (g_be) g_be->ops->destroy(g_be);
  g_be = NULL;
  return 0;
}

/* ---- tensors between the host (double, NCHW) and the backend ---- */

static double *rand_d(size_t n, uint64_t seed, float lo, float hi) {
  float *f = dt_xcalloc(n, sizeof *f);
  tu_fill_uniform(f, n, seed, lo, hi);
  double *d = dt_xcalloc(n, sizeof *d);
  for (size_t i = 0; i < n; i++) d[i] = f[i];
  free(f);
  return d;
}

static dt_tensor t_new(dt_shape s, const dt_layout *l) {
  dt_tensor t = {s, l, g_be->ops->alloc(g_be, g_be->ops->layout_bytes(l))};
  return t;
}

static void t_put(dt_tensor *t, const double *v) {
  const size_t n = dt_shape_count(t->shape);
  float *f = dt_xcalloc(n, sizeof *f);
  for (size_t i = 0; i < n; i++) f[i] = (float)v[i];
  g_be->ops->upload(g_be, f, t);
  free(f);
}

/* Fill the whole buffer (padding included) with garbage, so an op that leaves part of its
 * output unwritten fails. */
static void t_garbage(dt_tensor *t, uint64_t seed) {
  const size_t bytes = g_be->ops->layout_bytes(t->layout);
  float *f = dt_xcalloc(bytes / sizeof(float), sizeof *f);
  tu_fill_uniform(f, bytes / sizeof(float), seed, -9, 9);
  g_be->ops->to_device(g_be, t->data, f, bytes);
  free(f);
}

static float *p_new(const double *v, size_t n) {
  float *f = dt_xcalloc(n, sizeof *f);
  for (size_t i = 0; i < n; i++) f[i] = (float)v[i];
  float *p = g_be->ops->alloc(g_be, n * sizeof(float));
  g_be->ops->to_device(g_be, p, f, n * sizeof(float));
  free(f);
  return p;
}

static double err_of(const float *got, const double *want, size_t n) {
  double *d = dt_xcalloc(n, sizeof *d);
  for (size_t i = 0; i < n; i++) d[i] = got[i];
  const double e = tu_rel_err_d(d, want, n);
  free(d);
  return e;
}

static int g_fail;

static void check(const char *what, double err) {
  const bool ok = err < TOL;
  if (!ok || getenv("DT_TEST_VERBOSE"))
    print_message("  %s %s: rel err %.3g\n", ok ? "ok" : "FAIL", what, err);
  if (!ok) g_fail++;
}

static void check_tensor(const char *what, const dt_tensor *t, const double *want) {
  const size_t n = dt_shape_count(t->shape);
  float *f = dt_xcalloc(n, sizeof *f);
  g_be->ops->download(g_be, t, f);
  check(what, err_of(f, want, n));
  free(f);
}

/* Convolution weights of rp from logical OIHW v into backend memory in the backend's order
 * (weights_krsc). */
static float *w_new(const double *v, const ref_conv *rp) {
  const size_t n = ref_conv_w_count(rp);
  double *b = dt_xcalloc(n, sizeof *b);
  float *f = dt_xcalloc(n, sizeof *f), *k = dt_xcalloc(n, sizeof *k);
  for (size_t i = 0; i < n; i++) f[i] = (float)v[i];
  dt_conv_weights_permute(k, f, rp->k, rp->c / rp->groups, rp->r * rp->s, true);
  for (size_t i = 0; i < n; i++) b[i] = g_be->weights_krsc ? k[i] : f[i];
  float *p = p_new(b, n);
  free(b), free(f), free(k);
  return p;
}

/* A convolution weight gradient in the backend's order against want in logical OIHW. */
static void check_wgrad(const char *what, const float *p, const double *want, const ref_conv *rp) {
  const size_t n = ref_conv_w_count(rp);
  float *f = dt_xcalloc(n, sizeof *f), *o = dt_xcalloc(n, sizeof *o);
  g_be->ops->to_host(g_be, f, p, n * sizeof(float));
  if (g_be->weights_krsc)
    dt_conv_weights_permute(o, f, rp->k, rp->c / rp->groups, rp->r * rp->s, false);
  else
    memcpy(o, f, n * sizeof *o);
  check(what, err_of(o, want, n));
  free(f), free(o);
}

/* ---- convolutions ---- */

/* Whether oneDNN has Winograd here (AVX-512 cores) and the shape is one cpu_conv.c runs with
 * it (forward and backward data at least: 3x3, stride 1, 32+ channels, 1024+ pixels). */
static bool want_winograd(const dt_conv_params *p) {
  const dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
  const bool avx512 = isa == dnnl_cpu_isa_avx512_core || isa == dnnl_cpu_isa_avx512_core_vnni ||
                      isa == dnnl_cpu_isa_avx512_core_bf16 || isa == dnnl_cpu_isa_avx512_core_amx;
  return avx512 && p->r == 3 && p->stride == 1 && p->groups == 1 && p->c >= 32 && p->k >= 32 &&
         p->n * p->h * p->w >= 1024;
}

/* The layout a 3x3 stem convolution (3 -> C) writes for shape s, as a model's first tensor;
 * the op stays alive in *keep. */
static const dt_layout *stem_layout(dt_shape s, dt_op **keep) {
  const dt_shape image = {s.n, 3, s.h, s.w};
  const dt_conv_params p = {s.n, 3, s.h, s.w, s.c, 3, 3, 1, 1, 1, false};
  const dt_layout *y = NULL;
  *keep = g_be->ops->conv_create(g_be, &p, g_be->ops->layout_plain(g_be, image), &y);
  return y;
}

static void conv_case(const dt_conv_params *p, uint64_t seed) {
  const ref_conv rp = {p->n, p->c, p->h, p->w, p->k, p->r, p->s, p->stride, p->pad, p->groups};
  const dt_shape xs = {p->n, p->c, p->h, p->w};
  const dt_shape ys = {p->n, p->k, ref_conv_out_h(&rp), ref_conv_out_w(&rp)};
  const size_t nx = ref_conv_x_count(&rp), nw = ref_conv_w_count(&rp), ny = ref_conv_y_count(&rp);
  char name[96], what[160];
  snprintf(name, sizeof name, "conv %dx%dx%dx%d k%d %dx%d s%d", p->n, p->c, p->h, p->w, p->k,
           p->r, p->s, p->stride);
  dt_op *keep;
  const dt_layout *xl = stem_layout(xs, &keep), *yl = NULL;
  const int refs_before = dt_cpu_ref_prims(g_be);
  dt_op *op = g_be->ops->conv_create(g_be, p, xl, &yl);
  assert_non_null(op);
  if (isa_has_kernels() && dt_cpu_ref_prims(g_be) != refs_before) {
    print_message("  FAIL %s: %d primitive(s) on oneDNN's reference code\n", name,
                  dt_cpu_ref_prims(g_be) - refs_before);
    g_fail++;
  }
  /* Winograd where cpu_conv.c's rule asks for it and the ISA has it (AVX-512). */
  const bool wino = want_winograd(p);
  for (int pass = 0; pass < 3; pass++) {
    const char *impl = dt_cpu_conv_impl(op, pass);
    if (getenv("DT_TEST_VERBOSE")) print_message("  %s pass %d: %s\n", name, pass, impl);
    if (wino && pass < 2 && strstr(impl, "wino") == NULL) {
      print_message("  FAIL %s pass %d: %s, not Winograd\n", name, pass, impl);
      g_fail++;
    }
  }

  double *x = rand_d(nx, seed, -1, 1), *w = rand_d(nw, seed + 1, -0.5f, 0.5f);
  double *y0 = rand_d(ny, seed + 2, -1, 1), *dy = rand_d(ny, seed + 3, -1, 1);
  double *ry = dt_xcalloc(ny, sizeof *ry), *rdx = dt_xcalloc(nx, sizeof *rdx);
  double *rdw = dt_xcalloc(nw, sizeof *rdw);
  ref_conv_forward(&rp, x, w, ry);
  ref_conv_backward_data(&rp, dy, w, rdx);
  ref_conv_backward_weights(&rp, x, dy, rdw);

  dt_tensor xt = t_new(xs, xl), yt = t_new(ys, yl), dyt = t_new(ys, yl), dxt = t_new(xs, xl);
  t_put(&xt, x);
  t_put(&dyt, dy);
  double *gw = rand_d(nw, seed + 6, -7, 7);
  float *wd = w_new(w, &rp), *dwd = p_new(gw, nw); /* dw starts as garbage: it is overwritten */
  t_garbage(&yt, seed + 4);
  g_be->ops->conv_forward(op, &xt, wd, &yt, false);
  snprintf(what, sizeof what, "%s forward", name);
  check_tensor(what, &yt, ry);
  t_put(&yt, y0);
  g_be->ops->conv_forward(op, &xt, wd, &yt, true);
  for (size_t i = 0; i < ny; i++) ry[i] += y0[i];
  snprintf(what, sizeof what, "%s forward accumulate", name);
  check_tensor(what, &yt, ry);
  t_garbage(&dxt, seed + 5);
  g_be->ops->conv_backward_data(op, &dyt, wd, &dxt);
  snprintf(what, sizeof what, "%s backward data", name);
  check_tensor(what, &dxt, rdx);
  g_be->ops->conv_backward_weights(op, &xt, &dyt, dwd);
  snprintf(what, sizeof what, "%s backward weights", name);
  check_wgrad(what, dwd, rdw, &rp);

  dt_tensor *ts[] = {&xt, &yt, &dyt, &dxt};
  for (size_t i = 0; i < DT_ARRAY_LEN(ts); i++) g_be->ops->free(g_be, ts[i]->data);
  g_be->ops->free(g_be, wd);
  g_be->ops->free(g_be, dwd);
  free(x), free(w), free(y0), free(dy), free(ry), free(rdx), free(rdw), free(gw);
  g_be->ops->op_free(op);
  g_be->ops->op_free(keep);
}

static void test_conv_kernels(void **state) {
  (void)state;
  g_fail = 0;
  static const dt_conv_params cases[] = {
      /* n   c   h   w   k  r  s  stride pad groups need_dx */
      {2, 8, 12, 12, 8, 3, 3, 1, 1, 1, true},    /* 8 channels in nChw16c: staged on AVX-512 */
      {2, 8, 12, 12, 16, 3, 3, 2, 1, 1, true},   /* 8 -> 16, stride 2 */
      {2, 4, 10, 10, 4, 3, 3, 1, 1, 1, true},    /* 4 channels: staged on AVX2 too */
      {2, 16, 8, 8, 4, 1, 1, 1, 0, 1, true},     /* into a narrow bottleneck */
      {4, 64, 16, 16, 64, 3, 3, 1, 1, 1, true},  /* Winograd on AVX-512 */
      {4, 50, 16, 16, 52, 3, 3, 1, 1, 1, true},  /* Winograd on padded channels */
      {2, 512, 2, 2, 512, 3, 3, 1, 1, 1, true},  /* VGG's last stage: gemm on AVX2 */
  };
  for (size_t i = 0; i < DT_ARRAY_LEN(cases); i++) conv_case(&cases[i], 100 + 10 * i);
  if (g_fail) fail_msg("%d convolution check(s) failed", g_fail);
}

/* ---- every family: no reference code in a training step and an inference forward ---- */

typedef struct {
  const char *label;
  const char *sets[8];
  int size; /* input height = width; 0: 16 */
} family_case;


static const family_case k_families[] = {
    {"resnet-8", {"model.name=resnet", "model.depth=8"}, 0},
    {"resnet_preact-8 c0 8",
     {"model.name=resnet_preact", "model.depth=8", "model.initial_channels=8"}, 0},
    {"resnet_preact-11 bottleneck",
     {"model.name=resnet_preact", "model.depth=11", "model.block_type=bottleneck"}, 0},
    {"wrn-10-2 dropout",
     {"model.name=wrn", "model.depth=10", "model.widening_factor=2", "model.drop_rate=0.3"}, 0},
    {"wrn-10-2", {"model.name=wrn", "model.depth=10", "model.widening_factor=2"}, 0},
    {"densenet-BC-16 k12",
     {"model.name=densenet", "model.depth=16", "model.block_type=bottleneck",
      "model.drop_rate=0.2"}, 0},
    {"densenet-10 k12",
     {"model.name=densenet", "model.depth=10", "model.block_type=basic",
      "model.compression_rate=1"}, 0},
    {"pyramidnet-14 a30", {"model.name=pyramidnet", "model.depth=14", "model.alpha=30"}, 0},
    {"pyramidnet-11 bottleneck a20",
     {"model.name=pyramidnet", "model.depth=11", "model.block_type=bottleneck",
      "model.alpha=20"}, 0},
    {"resnext-11 2x4d",
     {"model.name=resnext", "model.depth=11", "model.cardinality=2", "model.base_channels=4",
      "model.initial_channels=16"}, 0},
    {"shake_shake-8 2x8d", {"model.name=shake_shake", "model.depth=8", "model.initial_channels=8"},
     0},
    {"se_resnet_preact-8", {"model.name=se_resnet_preact", "model.depth=8"}, 0},
    {"vgg", {"model.name=vgg"}, 32}, /* five 2x2 max-pools; conv bias */
};

static void family_step(const family_case *fc) {
  const double t0 = dt_now();
  dt_config cfg;
  dt_config_defaults(&cfg);
  assert_int_equal(dt_config_set(&cfg, "data.dataset=cifar10"), DT_OK);
  for (int i = 0; i < 8 && fc->sets[i]; i++)
    if (dt_config_set(&cfg, fc->sets[i]) != DT_OK)
      fail_msg("%s: %s", fc->label, dt_error_message());
  dt_error_clear();
  if (dt_config_validate(&cfg) != DT_OK) fail_msg("%s: %s", fc->label, dt_error_message());
  const int n = 2, k = 10, hw = fc->size ? fc->size : 16;
  dt_model *m = dt_model_create(&cfg, g_be, 3, hw, hw, k);
  assert_non_null(m);
  float *x = dt_xcalloc((size_t)n * 3 * hw * hw, sizeof *x);
  tu_fill_uniform(x, (size_t)n * 3 * hw * hw, 7, -1, 1);
  float *targets = dt_xcalloc((size_t)n * k, sizeof *targets), losses[2];
  for (int i = 0; i < n; i++) targets[i * k + i % k] = 1.0f;
  dt_graph *g = dt_model_graph(m, n, false);
  dt_graph_forward(g, x, true);
  dt_graph_loss(g, targets, 1.0f / n, losses);
  dt_graph_backward(g);
  dt_graph_forward(dt_model_graph(m, n, true), x, false);
  for (int i = 0; i < n; i++)
    if (!isfinite(losses[i])) fail_msg("%s: loss %d is %g", fc->label, i, losses[i]);
  const int refs = dt_cpu_ref_prims(g_be);
  if (isa_has_kernels() && refs != 0) {
    print_message("  FAIL %s: %d primitive(s) on oneDNN's reference code "
                  "(ONEDNN_VERBOSE=1 names them)\n", fc->label, refs);
    g_fail++;
  }
  dt_model_free(m);
  dt_config_free(&cfg);
  free(x);
  free(targets);
  if (getenv("DT_TEST_VERBOSE")) print_message("  %s: %.2f s\n", fc->label, dt_now() - t0);
}

static void test_families_no_ref(void **state) {
  (void)state;
  g_fail = 0;
  for (size_t i = 0; i < DT_ARRAY_LEN(k_families); i++) family_step(&k_families[i]);
  if (g_fail) fail_msg("%d family/families used reference code", g_fail);
}

/* bf16: native where oneDNN's ISA has bf16 instructions (then every activation of a family
 * is 16-bit and still no primitive is reference code), emulated elsewhere. */
static void test_families_no_ref_bf16(void **state) {
  (void)state;
  dt_backend *fp32 = g_be;
  g_be = dt_backend_cpu_create(1);
  assert_non_null(g_be);
  assert_int_equal(g_be->ops->set_precision(g_be, DT_PRECISION_BF16), DT_OK);
  const dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
  const bool native = isa == dnnl_cpu_isa_avx512_core_bf16 || isa == dnnl_cpu_isa_avx512_core_amx;
  assert_int_equal(dt_cpu_act_bytes(g_be), native ? 2 : 4);
  g_fail = 0;
  int run = 0;
  for (size_t i = 0; i < DT_ARRAY_LEN(k_families); i++) {
    family_step(&k_families[i]);
    run++;
  }
  print_message("  bf16 %s: %d families\n", native ? "native" : "emulated", run);
  g_be->ops->destroy(g_be);
  g_be = fp32;
  if (g_fail) fail_msg("%d family/families used reference code in bf16", g_fail);
}

/* ---- the same on AVX2, in a child process (oneDNN fixes its ISA at first use) ---- */

static void test_avx2(void **state) {
  (void)state;
  if (getenv(CHILD_ENV)) skip(); /* this is the child */
  const dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
  if (!isa_has_kernels() || isa == dnnl_cpu_isa_avx2) {
    print_message("  native ISA is AVX2 or below: the tests above covered it\n");
    skip();
  }
  char self[512];
  const ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
  if (len <= 0) fail_msg("cannot find this test's executable");
  self[len] = 0;
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "%s=1 ONEDNN_MAX_CPU_ISA=AVX2 '%s'", CHILD_ENV, self);
  char *out = NULL;
  const int rc = tu_run(cmd, &out);
  if (rc != 0) print_message("%s\n", out ? out : "(no output)");
  free(out);
  assert_int_equal(rc, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_conv_kernels),
      cmocka_unit_test(test_families_no_ref),
      cmocka_unit_test(test_families_no_ref_bf16),
      cmocka_unit_test(test_avx2),
  };
  const char *isa = getenv("ONEDNN_MAX_CPU_ISA");
  if (getenv(CHILD_ENV)) print_message("child run, ONEDNN_MAX_CPU_ISA=%s\n", isa ? isa : "");
  return cmocka_run_group_tests(tests, setup, teardown);
}
