/* backend_ops.c: every op of a backend against the double-precision reference
 * (tests/ref/ref_ops.c), with a relative error in norm |a - b| / |b| below 1e-4 in fp32, and
 * every op test again with the backend in bf16 and in fp16 (set_precision before the ops are
 * created: three cmocka groups) below 2e-2 and 3e-3. In bf16 / fp16 a backend may store
 * activations in 16 bits (the CPU does on CPUs with bf16 instructions, the "native" mode) or
 * emulate the precision in fp32 tensors; the tests hold both to the same bounds, and run with
 * ONEDNN_MAX_CPU_ISA=AVX2 they check the emulation. CMakeLists.txt compiles this one source
 * once per backend, with DT_TEST_DEVICE naming the device: test_cpu_ops (the oneDNN CPU
 * backend) and test_gpu_ops (the CUDA backend; exits 77, ctest's "skipped", when this build has
 * no CUDA backend or the machine no usable GPU). Both run the same tests with the same
 * assertions, so the two backends are held to exactly the same checks; the tests reach their
 * backend only through the ops table and alloc / to_device / to_host. The run fails if the
 * tests never created a backend of the device they were built for.
 *
 * Each op is run on plain NCHW inputs and also on the layout a convolution produces (oneDNN's
 * blocked nChw8c / nChw16c, channels padded to the block, on the CPU; NHWC on the GPU), since
 * that is how the model chains them; a last test runs a small residual block (conv -> bn -> relu -> conv accumulating
 * onto the skip -> gap -> linear -> cross-entropy) forward and backward and compares every
 * intermediate. Outputs are pre-filled with garbage so an op that fails to overwrite them is
 * caught. Shapes include odd channel counts and sizes, batch 1, stride 2, 1x1 kernels and
 * groups; data comes from fixed seeds (tu_fill_uniform).
 *
 * The optimizer updates are checked for their skip flag (a set flag changes nothing, a zero
 * flag is no flag) and, where the backend has them, the one-call (_multi) updates against the
 * per-tensor ones bit for bit; their arithmetic is checked by test_optim (against the
 * formulas) and test_gpu_model (the GPU against the CPU).
 *
 * Parameter-like arrays (weights, statistics, targets) go through alloc / to_device /
 * to_host as the contract asks, so the same checks can later run on another backend.
 * Failing checks are listed with op, shape and error; DT_TEST_VERBOSE=1 lists every check,
 * DT_TEST_FILTER / DT_TEST_SKIP (cmocka patterns such as "test_bn") select tests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <oneapi/dnnl/dnnl.h>

#include "backend.h"
#include "backend_factory.h"
#include "common.h"
#include "cpu/backend_cpu.h"
#include "evaluate.h"
#include "precision.h"
#include "ref/ref_ops.h"
#include "rng.h"
#include "testutil.h"

#ifndef DT_TEST_DEVICE
#error "compile with DT_TEST_DEVICE (DT_DEVICE_CPU or DT_DEVICE_CUDA) and DT_TEST_NAME"
#endif

static int g_backends; /* backends of DT_TEST_DEVICE the tests created */

/* A backend of the device under test (threads are irrelevant on the GPU). */
static dt_backend *test_backend_create(int threads) {
  dt_backend *be = dt_backend_create(DT_TEST_DEVICE, threads, -1, 1);
  if (be) g_backends++;
  return be;
}

#define TOL 1e-4
#define BN_EPS 1e-5f
#define BN_MOMENTUM 0.1f
#define KINK_MARGIN 1e-4 /* ReLU inputs closer than this to 0 may flip sign in fp32 */

/* The plain-loop ops (cpu_view.c users: concatenation, channel padding, shift, dropout,
 * shake-shake, sigmoid, channel scaling, bias) read and write 16-bit tensors: 1 once they do
 * on the CPU (dt_cpu_view with an element type, cpu_internal.h). Until then their tests run
 * in fp32 and wherever the 16-bit precision is emulated, and are skipped in native 16-bit
 * mode. */

/* ---- check bookkeeping: every check of a test runs, failures are listed at the end ---- */

static struct {
  int checks, failures;
  double worst;
  char worst_what[160];
  bool verbose;
} g_chk;

static void chk_begin(void) {
  g_chk.checks = g_chk.failures = 0;
  g_chk.worst = 0;
  g_chk.worst_what[0] = 0;
  const char *v = getenv("DT_TEST_VERBOSE");
  g_chk.verbose = v && *v && strcmp(v, "0") != 0;
}

/* The precision of the group running (the backend's) and the tolerance of its checks. */
static dt_precision g_prec = DT_PRECISION_FP32;
static double g_tol = TOL;

/* v rounded to the group's 16-bit format (v itself in fp32). */
static float round16(float v) {
  if (g_prec == DT_PRECISION_BF16) return dt_round_bf16(v);
  if (g_prec == DT_PRECISION_FP16) return dt_round_fp16(v);
  return v;
}

/* Element size in bytes of a layout: 4, or 2 for the CPU's native 16-bit activations. */
static int elem_bytes(const dt_layout *l) {
  return DT_TEST_DEVICE == DT_DEVICE_CPU ? dt_cpu_layout_elem_bytes(l) : 4;
}

/* Element i of a raw buffer of elem_bytes(l)-byte elements, as a float: fp32, or bf16 / IEEE
 * half (the group's 16-bit format). */
static float raw_elem(const void *raw, size_t i, int bytes) {
  if (bytes == 4) return ((const float *)raw)[i];
  const uint32_t h = ((const uint16_t *)raw)[i];
  if (g_prec == DT_PRECISION_BF16) return dt_precision_float(h << 16);
  const uint32_t sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  const float mag = e == 0    ? ldexpf((float)m, -24)
                    : e == 31 ? (m ? NAN : INFINITY)
                              : ldexpf((float)(m | 0x400), (int)e - 25);
  return sign ? -mag : mag;
}

/* Whether the backend stores activations in 16 bits (the CPU's native mode). */
static bool native16(dt_backend *be) {
  return DT_TEST_DEVICE == DT_DEVICE_CPU && dt_cpu_act_bytes(be) == 2;
}


static void chk_close(const char *what, const double *got, const double *want, size_t count) {
  const double err = tu_rel_err_d(got, want, count);
  const bool ok = err < g_tol; /* false for NaN */
  g_chk.checks++;
  if (!ok || err > g_chk.worst) {
    g_chk.worst = ok ? err : INFINITY;
    snprintf(g_chk.worst_what, sizeof g_chk.worst_what, "%s", what);
  }
  if (!ok) g_chk.failures++;
  if (!ok || g_chk.verbose)
    print_message("  %s %-60s rel err %.2e\n", ok ? "ok  " : "FAIL", what, err);
}


/* Fails the check list when the CPU backend holds primitives on oneDNN's reference code (it
 * must not on an ISA with jit kernels, AVX2 and up, in any precision). */
static void chk_no_ref(dt_backend *be, const char *what) {
  if (DT_TEST_DEVICE != DT_DEVICE_CPU) return;
  const dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
  if (isa == dnnl_cpu_isa_all || isa == dnnl_cpu_isa_sse41 || isa == dnnl_cpu_isa_avx) return;
  const int refs = dt_cpu_ref_prims(be);
  g_chk.checks++;
  if (refs != 0) {
    g_chk.failures++;
    print_message("  FAIL %s: %d primitive(s) on oneDNN's reference code (ONEDNN_VERBOSE=1 "
                  "names them)\n", what, refs);
  }
}

static void chk_end(void) {
  print_message("  %d checks, %d failed; worst rel err %.2e (%s)\n", g_chk.checks,
                g_chk.failures, g_chk.worst, g_chk.worst_what[0] ? g_chk.worst_what : "all exact");
  assert_int_equal(g_chk.failures, 0);
}

/* ---- host arrays: the fp32 values the backend gets and the same values in double ---- */

typedef struct {
  size_t n;
  float *f;
  double *d;
} hvec;

static hvec hv_new(size_t n) {
  hvec v = {n, dt_xcalloc(n ? n : 1, sizeof(float)), dt_xcalloc(n ? n : 1, sizeof(double))};
  return v;
}

static hvec hv_rand(size_t n, uint64_t seed, float lo, float hi) {
  hvec v = hv_new(n);
  tu_fill_uniform(v.f, n, seed, lo, hi);
  for (size_t i = 0; i < n; i++) v.d[i] = v.f[i];
  return v;
}

/* Round the values to the group's 16-bit format, for ops whose result depends on exact
 * comparisons of their inputs (max pooling: rounding could make two inputs equal). */
static void hv_round16(hvec *v) {
  for (size_t i = 0; i < v->n; i++) v->d[i] = v->f[i] = round16(v->f[i]);
}

static void hv_free(hvec *v) {
  free(v->f);
  free(v->d);
}

/* ---- backend memory ---- */

static dt_tensor t_new(dt_backend *be, dt_shape s, const dt_layout *l) {
  dt_tensor t = {s, l, be->ops->alloc(be, be->ops->layout_bytes(l))};
  return t;
}

static void t_free(dt_backend *be, dt_tensor *t) { be->ops->free(be, t->data); }

static void t_put(dt_backend *be, dt_tensor *t, const hvec *v) {
  assert_int_equal(v->n, dt_shape_count(t->shape));
  be->ops->upload(be, v->f, t);
}

/* Download as a malloc'ed double array in plain NCHW. */
static double *t_get(dt_backend *be, const dt_tensor *t) {
  const size_t n = dt_shape_count(t->shape);
  float *f = dt_xcalloc(n, sizeof *f);
  double *d = dt_xcalloc(n, sizeof *d);
  be->ops->download(be, t, f);
  for (size_t i = 0; i < n; i++) d[i] = f[i];
  free(f);
  return d;
}

/* A tensor of shape s in layout l holding random garbage (to see that outputs are
 * overwritten). */
static dt_tensor t_garbage(dt_backend *be, dt_shape s, const dt_layout *l, uint64_t seed) {
  dt_tensor t = t_new(be, s, l);
  hvec g = hv_rand(dt_shape_count(s), seed, -7, 7);
  t_put(be, &t, &g);
  hv_free(&g);
  return t;
}

static float *p_new(dt_backend *be, const hvec *v) {
  float *p = be->ops->alloc(be, v->n * sizeof(float));
  be->ops->to_device(be, p, v->f, v->n * sizeof(float));
  return p;
}

static double *p_get(dt_backend *be, const float *p, size_t n) {
  float *f = dt_xcalloc(n, sizeof *f);
  double *d = dt_xcalloc(n, sizeof *d);
  be->ops->to_host(be, f, p, n * sizeof(float));
  for (size_t i = 0; i < n; i++) d[i] = f[i];
  free(f);
  return d;
}

static void chk_tensor(dt_backend *be, const char *what, const dt_tensor *t, const double *want) {
  double *got = t_get(be, t);
  chk_close(what, got, want, dt_shape_count(t->shape));
  free(got);
}

static void chk_param(dt_backend *be, const char *what, const float *p, const double *want,
                      size_t n) {
  double *got = p_get(be, p, n);
  chk_close(what, got, want, n);
  free(got);
}

/* Convolution weights of rp in backend memory, in the backend's order (weights_krsc), from v
 * in logical OIHW. */
static float *w_new(dt_backend *be, const hvec *v, const ref_conv *rp) {
  float *f = dt_xcalloc(v->n ? v->n : 1, sizeof *f);
  dt_conv_weights_permute(f, v->f, rp->k, rp->c / rp->groups, rp->r * rp->s, true);
  const hvec krsc = {v->n, f, v->d};
  float *p = p_new(be, be->weights_krsc ? &krsc : v);
  free(f);
  return p;
}

/* chk_param of a convolution weight gradient stored in the backend's order, against want in
 * logical OIHW. */
static void chk_wgrad(dt_backend *be, const char *what, const float *p, const double *want,
                      const ref_conv *rp) {
  const size_t n = ref_conv_w_count(rp);
  double *got = p_get(be, p, n);
  if (be->weights_krsc) {
    float *f = dt_xcalloc(n, sizeof *f), *o = dt_xcalloc(n, sizeof *o);
    for (size_t i = 0; i < n; i++) f[i] = (float)got[i];
    dt_conv_weights_permute(o, f, rp->k, rp->c / rp->groups, rp->r * rp->s, false);
    for (size_t i = 0; i < n; i++) got[i] = o[i];
    free(f), free(o);
  }
  chk_close(what, got, want, n);
  free(got);
}

/* ---- layouts under test ---- */

/* Input layouts every op is tried with: plain NCHW, and what a convolution writes. */
enum { LAYOUT_PLAIN, LAYOUT_CONV, LAYOUT_KINDS };
static const char *const layout_name[LAYOUT_KINDS] = {"plain", "conv-out"};

/* The layout of shape s in the given kind. For LAYOUT_CONV this is the output layout of a
 * stem-like 3x3 convolution (3 -> C channels) over a plain image: oneDNN keeps the plain
 * layout for many C -> C convolutions of plain input, but blocks the output of a stem, and
 * every later op of the model inherits that. The op is kept alive in *keep (the contract
 * does not promise that a layout outlives its op); free it with op_free. */
static const dt_layout *layout_of(dt_backend *be, dt_shape s, int kind, dt_op **keep) {
  *keep = NULL;
  if (kind == LAYOUT_PLAIN) return be->ops->layout_plain(be, s);
  const dt_shape image = {s.n, 3, s.h, s.w};
  const dt_conv_params p = {s.n, 3, s.h, s.w, s.c, 3, 3, 1, 1, 1, false};
  const dt_layout *y = NULL;
  *keep = be->ops->conv_create(be, &p, be->ops->layout_plain(be, image), &y);
  assert_non_null(*keep);
  assert_non_null(y);
  return y;
}

static void op_release(dt_backend *be, dt_op **op) {
  if (*op) be->ops->op_free(*op);
  *op = NULL;
}

/* ---- fixtures ---- */

/* One group per precision: a backend set to it before any op exists, and the bound of its
 * checks. Operands and results rounded to 8 / 11 significant bits leave relative errors of a
 * few 2^-9 / 2^-12 (measured: worst 4.2e-3 in bf16, 3.8e-4 in fp16, convolutions emulated),
 * so the bounds are 2e-2 and 3e-3. */
static int setup_precision(void **state, dt_precision precision, double tol) {
  dt_backend *be = test_backend_create(2);
  if (!be) {
    fprintf(stderr, "%s: creating the backend failed: %s\n", DT_TEST_NAME, dt_error_message());
    return -1;
  }
  if (precision != DT_PRECISION_FP32 &&
      (!be->ops->set_precision || be->ops->set_precision(be, precision) != DT_OK)) {
    fprintf(stderr, "%s: set_precision(%s) failed: %s\n", DT_TEST_NAME,
            dt_precision_name(precision), dt_error_message());
    be->ops->destroy(be);
    return -1;
  }
  g_prec = precision;
  g_tol = tol;
  if (DT_TEST_DEVICE == DT_DEVICE_CPU && precision != DT_PRECISION_FP32) {
    char line[160];
    dt_cpu_compute_line(precision, line, sizeof line);
    print_message("%s\n", line);
  }
  *state = be;
  return 0;
}

static int setup_backend(void **state) { return setup_precision(state, DT_PRECISION_FP32, TOL); }
static int setup_bf16(void **state) { return setup_precision(state, DT_PRECISION_BF16, 2e-2); }
static int setup_fp16(void **state) { return setup_precision(state, DT_PRECISION_FP16, 3e-3); }

static int teardown_backend(void **state) {
  dt_backend *be = *state;
  if (be) be->ops->destroy(be);
  g_prec = DT_PRECISION_FP32;
  g_tol = TOL;
  return 0;
}

/* ---- memory: upload / download / zero / to_device / to_host ---- */

static void test_memory(void **state) {
  dt_backend *be = *state;
  chk_begin();
  static const dt_shape shapes[] = {{2, 3, 7, 7}, {1, 17, 9, 9}, {3, 5, 1, 1}, {2, 16, 4, 4}};
  for (size_t si = 0; si < DT_ARRAY_LEN(shapes); si++)
    for (int kind = 0; kind < LAYOUT_KINDS; kind++) {
      const dt_shape s = shapes[si];
      dt_op *keep;
      const dt_layout *l = layout_of(be, s, kind, &keep);
      const size_t n = dt_shape_count(s);
      const int eb = elem_bytes(l); /* 4, or 2 for a 16-bit layout */
      assert_true(be->ops->layout_bytes(l) >= n * (size_t)eb);
      if (kind == LAYOUT_CONV) /* so the log shows that blocked layouts were exercised */
        print_message("  conv-out layout of %dx%dx%dx%d: %zu bytes (plain %zu)%s\n", s.n, s.c,
                      s.h, s.w, be->ops->layout_bytes(l), n * sizeof(float),
                      l == be->ops->layout_plain(be, s) ? ", the plain layout" : "");
      hvec v = hv_rand(n, 10 + si, -1, 1);
      dt_tensor t = t_new(be, s, l);
      t_put(be, &t, &v);
      char what[160];
      snprintf(what, sizeof what, "upload/download %dx%dx%dx%d %s", s.n, s.c, s.h, s.w,
               layout_name[kind]);
      double *got = t_get(be, &t);
      /* A storage-order change must be exact; into 16 bits, the format's rounding. */
      for (size_t i = 0; i < n; i++)
        if (got[i] != (eb == 4 ? v.d[i] : (double)round16(v.f[i]))) {
          print_message("  FAIL %s: element %zu is %g, want %g\n", what, i, got[i], v.d[i]);
          g_chk.failures++;
          break;
        }
      g_chk.checks++;
      free(got);
      be->ops->zero(be, t.data, be->ops->layout_bytes(l));
      hvec zero = hv_new(n);
      snprintf(what, sizeof what, "zero %dx%dx%dx%d %s", s.n, s.c, s.h, s.w, layout_name[kind]);
      chk_tensor(be, what, &t, zero.d);
      float *p = p_new(be, &v);
      snprintf(what, sizeof what, "to_device/to_host %zu floats", n);
      chk_param(be, what, p, v.d, n);
      be->ops->free(be, p);
      t_free(be, &t);
      hv_free(&v);
      hv_free(&zero);
      op_release(be, &keep);
    }
  chk_end();
}

/* ---- convolution ---- */

static void conv_name(char *buf, size_t size, const dt_conv_params *p, const char *layout,
                      const char *what) {
  snprintf(buf, size, "conv %dx%dx%dx%d k%d %dx%d s%d p%d g%d %s: %s", p->n, p->c, p->h, p->w,
           p->k, p->r, p->s, p->stride, p->pad, p->groups, layout, what);
}

/* Forward, forward accumulating onto a random y, backward data (when need_dx) and backward
 * weights of one convolution with input layout `kind`. */
static void conv_case(dt_backend *be, const dt_conv_params *p, int kind, uint64_t seed) {
  const ref_conv rp = {p->n, p->c, p->h, p->w, p->k, p->r, p->s, p->stride, p->pad, p->groups};
  const dt_shape xs = {p->n, p->c, p->h, p->w};
  const dt_shape ys = {p->n, p->k, ref_conv_out_h(&rp), ref_conv_out_w(&rp)};
  const size_t nx = ref_conv_x_count(&rp), nw = ref_conv_w_count(&rp), ny = ref_conv_y_count(&rp);
  dt_op *keep;
  const dt_layout *xl = layout_of(be, xs, kind, &keep);
  const dt_layout *yl = NULL;
  dt_op *op = be->ops->conv_create(be, p, xl, &yl);
  assert_non_null(op);
  assert_non_null(yl);
  char what[160];

  hvec x = hv_rand(nx, seed, -1, 1), w = hv_rand(nw, seed + 1, -0.5f, 0.5f);
  hvec y0 = hv_rand(ny, seed + 2, -1, 1), dy = hv_rand(ny, seed + 3, -1, 1);
  double *ry = dt_xcalloc(ny, sizeof *ry), *rdx = dt_xcalloc(nx, sizeof *rdx);
  double *rdw = dt_xcalloc(nw, sizeof *rdw);
  ref_conv_forward(&rp, x.d, w.d, ry);

  dt_tensor xt = t_new(be, xs, xl);
  t_put(be, &xt, &x);
  float *wd = w_new(be, &w, &rp);
  dt_tensor yt = t_garbage(be, ys, yl, seed + 4);
  be->ops->conv_forward(op, &xt, wd, &yt, false);
  conv_name(what, sizeof what, p, layout_name[kind], "forward");
  chk_tensor(be, what, &yt, ry);

  /* y += conv(x, w): the residual addition. */
  t_put(be, &yt, &y0);
  be->ops->conv_forward(op, &xt, wd, &yt, true);
  for (size_t i = 0; i < ny; i++) ry[i] += y0.d[i];
  conv_name(what, sizeof what, p, layout_name[kind], "forward accumulate");
  chk_tensor(be, what, &yt, ry);

  dt_tensor dyt = t_new(be, ys, yl);
  t_put(be, &dyt, &dy);
  if (p->need_dx) {
    dt_tensor dxt = t_garbage(be, xs, xl, seed + 5);
    be->ops->conv_backward_data(op, &dyt, wd, &dxt);
    ref_conv_backward_data(&rp, dy.d, w.d, rdx);
    conv_name(what, sizeof what, p, layout_name[kind], "backward data");
    chk_tensor(be, what, &dxt, rdx);
    t_free(be, &dxt);
  }
  hvec garbage = hv_rand(nw, seed + 6, -7, 7);
  float *dwd = p_new(be, &garbage);
  be->ops->conv_backward_weights(op, &xt, &dyt, dwd);
  ref_conv_backward_weights(&rp, x.d, dy.d, rdw);
  conv_name(what, sizeof what, p, layout_name[kind], "backward weights");
  chk_wgrad(be, what, dwd, rdw, &rp);

  be->ops->free(be, dwd);
  be->ops->free(be, wd);
  t_free(be, &xt), t_free(be, &yt), t_free(be, &dyt);
  hv_free(&x), hv_free(&w), hv_free(&y0), hv_free(&dy), hv_free(&garbage);
  free(ry), free(rdx), free(rdw);
  be->ops->op_free(op);
  op_release(be, &keep);
}

static void conv_all(dt_backend *be) {
  chk_begin();
  static const dt_conv_params cases[] = {
      /* n   c   h   w   k  r  s  stride pad groups need_dx */
      {2, 3, 28, 28, 16, 3, 3, 1, 1, 1, false}, /* stem: no input gradient */
      {2, 3, 7, 7, 5, 3, 3, 1, 1, 1, true},
      {1, 5, 9, 9, 17, 3, 3, 2, 1, 1, true},    /* batch 1, stride 2, odd channels */
      {2, 17, 7, 7, 8, 1, 1, 1, 0, 1, true},    /* 1x1 */
      {2, 16, 9, 9, 32, 1, 1, 2, 0, 1, true},   /* 1x1 stride 2 projection shortcut */
      {2, 16, 8, 8, 16, 3, 3, 1, 1, 1, true},   /* block-aligned channels */
      {2, 32, 8, 8, 64, 3, 3, 2, 1, 1, true},   /* downsampling 3x3 */
      {3, 8, 7, 7, 6, 3, 3, 1, 1, 2, true},     /* groups 2 */
      {2, 16, 8, 8, 32, 3, 3, 2, 1, 4, true},   /* groups 4 (ResNeXt-like), stride 2 */
      {2, 6, 7, 7, 6, 3, 3, 1, 1, 6, true},     /* depthwise */
      {1, 4, 9, 7, 6, 3, 3, 2, 0, 1, true},     /* non-square, pad 0 */
      {2, 3, 9, 9, 4, 5, 5, 1, 2, 1, true},     /* 5x5 */
      {2, 512, 4, 4, 512, 3, 3, 1, 1, 8, true}, /* ResNeXt-29 8x64d stage 1: 8 groups of 64 */
      {1, 256, 6, 6, 256, 3, 3, 2, 1, 8, true}, /* 8 groups of 32, stride 2 */
  };
  for (size_t ci = 0; ci < DT_ARRAY_LEN(cases); ci++)
    for (int kind = 0; kind < LAYOUT_KINDS; kind++)
      conv_case(be, &cases[ci], kind, 1000 + 10 * ci);

  /* Random shapes from a fixed seed. */
  dt_rng r = dt_rng_key(2024, 11, 0, 0);
  for (int i = 0; i < 8; i++) {
    dt_conv_params p = {0};
    p.groups = 1 + (int)dt_rng_below(&r, 2);
    p.n = 1 + (int)dt_rng_below(&r, 3);
    p.c = p.groups * (1 + (int)dt_rng_below(&r, 12));
    p.k = p.groups * (1 + (int)dt_rng_below(&r, 12));
    p.h = 5 + (int)dt_rng_below(&r, 8);
    p.w = 5 + (int)dt_rng_below(&r, 8);
    p.r = p.s = dt_rng_below(&r, 2) ? 3 : 1;
    p.stride = 1 + (int)dt_rng_below(&r, 2);
    p.pad = dt_rng_below(&r, 2) ? p.r / 2 : 0;
    p.need_dx = true;
    for (int kind = 0; kind < LAYOUT_KINDS; kind++) conv_case(be, &p, kind, 5000 + 10 * i);
  }
  chk_end();
}

static void test_conv(void **state) { conv_all(*state); }

/* ---- batch normalisation ---- */

/* Smallest |bn(x)| over all elements with batch statistics: how close a ReLU input is to
 * its kink. */
static double bn_kink_distance(dt_shape s, const double *x, const double *gamma,
                               const double *beta) {
  const size_t n = dt_shape_count(s);
  double *pre = dt_xcalloc(n, sizeof *pre);
  ref_bn_forward_train(s.n, s.c, s.h * s.w, x, gamma, beta, BN_EPS, false, pre, NULL, NULL,
                       NULL, NULL, 0);
  double d = INFINITY;
  for (size_t i = 0; i < n; i++) d = fmin(d, fabs(pre[i]));
  free(pre);
  return d;
}

static void bn_case(dt_backend *be, dt_shape s, bool relu, int kind, uint64_t seed) {
  const int c = s.c, hw = s.h * s.w;
  const size_t n = dt_shape_count(s);
  dt_op *keep;
  const dt_layout *xl = layout_of(be, s, kind, &keep);
  dt_op *op = be->ops->bn_create(be, s, xl, BN_EPS, relu);
  assert_non_null(op);
  char what[160], tag[96];
  snprintf(tag, sizeof tag, "bn%s %dx%dx%dx%d %s", relu ? "+relu" : "", s.n, s.c, s.h, s.w,
           layout_name[kind]);

  hvec x = hv_rand(n, seed, -2, 3);
  hvec gamma = hv_rand(c, seed + 1, 0.5f, 1.5f), beta = hv_rand(c, seed + 2, -0.5f, 0.5f);
  hvec rmean = hv_rand(c, seed + 3, -1, 1), rvar = hv_rand(c, seed + 4, 0.5f, 2);
  hvec dy = hv_rand(n, seed + 5, -1, 1), garbage = hv_rand(c, seed + 6, -7, 7);
  if (relu) {
    /* Where the ReLU input is within fp32 reach of 0 the backend and the reference may
     * disagree on the mask; a zero gradient there makes the mask irrelevant. */
    double *pre = dt_xcalloc(n, sizeof *pre);
    ref_bn_forward_train(s.n, c, hw, x.d, gamma.d, beta.d, BN_EPS, false, pre, NULL, NULL, NULL,
                         NULL, 0);
    for (size_t i = 0; i < n; i++)
      if (fabs(pre[i]) < KINK_MARGIN) dy.f[i] = 0, dy.d[i] = 0;
    free(pre);
  }

  /* Training forward: output, saved statistics, running statistics. */
  double *ry = dt_xcalloc(n, sizeof *ry), *rdx = dt_xcalloc(n, sizeof *rdx);
  double *rmu = dt_xcalloc(c, sizeof(double)), *rv = dt_xcalloc(c, sizeof(double));
  double *rrm = dt_xcalloc(c, sizeof(double)), *rrv = dt_xcalloc(c, sizeof(double));
  double *rdg = dt_xcalloc(c, sizeof(double)), *rdb = dt_xcalloc(c, sizeof(double));
  memcpy(rrm, rmean.d, c * sizeof(double));
  memcpy(rrv, rvar.d, c * sizeof(double));
  ref_bn_forward_train(s.n, c, hw, x.d, gamma.d, beta.d, BN_EPS, relu, ry, rmu, rv, rrm, rrv,
                       BN_MOMENTUM);

  dt_tensor xt = t_new(be, s, xl);
  t_put(be, &xt, &x);
  dt_tensor yt = t_garbage(be, s, xl, seed + 7);
  float *gd = p_new(be, &gamma), *bd = p_new(be, &beta);
  float *smd = p_new(be, &garbage), *svd = p_new(be, &garbage);
  float *rmd = p_new(be, &rmean), *rvd = p_new(be, &rvar);
  be->ops->bn_forward_train(op, &xt, gd, bd, &yt, smd, svd, rmd, rvd, BN_MOMENTUM);
  snprintf(what, sizeof what, "%s: forward train y", tag);
  chk_tensor(be, what, &yt, ry);
  snprintf(what, sizeof what, "%s: save_mean", tag);
  chk_param(be, what, smd, rmu, c);
  snprintf(what, sizeof what, "%s: save_var", tag);
  chk_param(be, what, svd, rv, c);
  snprintf(what, sizeof what, "%s: running_mean", tag);
  chk_param(be, what, rmd, rrm, c);
  snprintf(what, sizeof what, "%s: running_var", tag);
  chk_param(be, what, rvd, rrv, c);

  /* Backward from the statistics of that forward (the reference's own, so that an error in
   * save_mean / save_var shows up above and not twice). */
  dt_tensor dyt = t_new(be, s, xl);
  t_put(be, &dyt, &dy);
  dt_tensor dxt = t_garbage(be, s, xl, seed + 8);
  float *dgd = p_new(be, &garbage), *dbd = p_new(be, &garbage);
  be->ops->bn_backward(op, &xt, &dyt, gd, smd, svd, &dxt, dgd, dbd);
  /* In 16 bits x is rounded on upload (16-bit activations), which moves ReLU inputs by up to
   * 2^-9 of their scale, far more than KINK_MARGIN: the reference then takes the ReLU mask from
   * the backend's forward output (a rounded positive value stays positive). */
  double *mask = g_prec != DT_PRECISION_FP32 && relu ? t_get(be, &yt) : NULL;
  ref_bn_backward(s.n, c, hw, x.d, dy.d, gamma.d, rmu, rv, BN_EPS, relu, mask ? mask : ry, rdx,
                  rdg, rdb);
  free(mask);
  snprintf(what, sizeof what, "%s: backward dx", tag);
  chk_tensor(be, what, &dxt, rdx);
  snprintf(what, sizeof what, "%s: backward dgamma", tag);
  chk_param(be, what, dgd, rdg, c);
  snprintf(what, sizeof what, "%s: backward dbeta", tag);
  chk_param(be, what, dbd, rdb, c);

  /* Inference with the (original) running statistics. */
  be->ops->to_device(be, rmd, rmean.f, c * sizeof(float));
  be->ops->to_device(be, rvd, rvar.f, c * sizeof(float));
  dt_tensor yit = t_garbage(be, s, xl, seed + 9);
  be->ops->bn_forward_infer(op, &xt, gd, bd, rmd, rvd, &yit);
  ref_bn_forward_infer(s.n, c, hw, x.d, gamma.d, beta.d, rmean.d, rvar.d, BN_EPS, relu, ry);
  snprintf(what, sizeof what, "%s: forward infer y", tag);
  chk_tensor(be, what, &yit, ry);

  float *dev[] = {gd, bd, smd, svd, rmd, rvd, dgd, dbd};
  for (size_t i = 0; i < DT_ARRAY_LEN(dev); i++) be->ops->free(be, dev[i]);
  t_free(be, &xt), t_free(be, &yt), t_free(be, &dyt), t_free(be, &dxt), t_free(be, &yit);
  hv_free(&x), hv_free(&gamma), hv_free(&beta), hv_free(&rmean), hv_free(&rvar);
  hv_free(&dy), hv_free(&garbage);
  free(ry), free(rdx), free(rmu), free(rv), free(rrm), free(rrv), free(rdg), free(rdb);
  be->ops->op_free(op);
  op_release(be, &keep);
}

static void test_bn(void **state) {
  dt_backend *be = *state;
  chk_begin();
  static const dt_shape shapes[] = {
      {2, 3, 7, 7}, {1, 17, 9, 9}, {4, 5, 1, 1}, {3, 16, 5, 5}, {2, 32, 28, 28},
  };
  for (size_t si = 0; si < DT_ARRAY_LEN(shapes); si++)
    for (int relu = 0; relu <= 1; relu++)
      for (int kind = 0; kind < LAYOUT_KINDS; kind++)
        bn_case(be, shapes[si], relu, kind, 2000 + 20 * si + 10 * relu);
  chk_end();
}

/* ---- elementwise: relu forward / backward, add, accumulate ---- */

static void test_eltwise(void **state) {
  dt_backend *be = *state;
  chk_begin();
  static const dt_shape shapes[] = {{2, 3, 7, 7}, {1, 17, 9, 9}, {3, 5, 1, 1}, {2, 16, 28, 28}};
  for (size_t si = 0; si < DT_ARRAY_LEN(shapes); si++)
    for (int kind = 0; kind < LAYOUT_KINDS; kind++) {
      const dt_shape s = shapes[si];
      const size_t n = dt_shape_count(s);
      const uint64_t seed = 3000 + 10 * si;
      dt_op *keep;
      const dt_layout *l = layout_of(be, s, kind, &keep);
      dt_op *op = be->ops->eltwise_create(be, s, l);
      assert_non_null(op);
      char what[160], tag[96];
      snprintf(tag, sizeof tag, "%dx%dx%dx%d %s", s.n, s.c, s.h, s.w, layout_name[kind]);
      hvec a = hv_rand(n, seed, -1, 1), b = hv_rand(n, seed + 1, -1, 1);
      double *want = dt_xcalloc(n, sizeof *want), *ry = dt_xcalloc(n, sizeof *ry);
      dt_tensor at = t_new(be, s, l), bt = t_new(be, s, l);
      t_put(be, &at, &a);
      t_put(be, &bt, &b);

      dt_tensor yt = t_garbage(be, s, l, seed + 2);
      be->ops->relu_forward(op, &at, &yt);
      ref_relu_forward(n, a.d, ry);
      snprintf(what, sizeof what, "relu forward %s", tag);
      chk_tensor(be, what, &yt, ry);

      /* dx = b where y > 0; y is the backend's own forward output. */
      dt_tensor dxt = t_garbage(be, s, l, seed + 3);
      be->ops->relu_backward(op, &yt, &bt, &dxt);
      ref_relu_backward(n, ry, b.d, want);
      snprintf(what, sizeof what, "relu backward %s", tag);
      chk_tensor(be, what, &dxt, want);

      dt_tensor st = t_garbage(be, s, l, seed + 4);
      be->ops->add(op, &at, &bt, &st);
      ref_add(n, a.d, b.d, want);
      snprintf(what, sizeof what, "add %s", tag);
      chk_tensor(be, what, &st, want);

      /* dst (= a) += src (= b) */
      be->ops->accumulate(op, &bt, &at);
      snprintf(what, sizeof what, "accumulate %s", tag);
      chk_tensor(be, what, &at, want);

      t_free(be, &at), t_free(be, &bt), t_free(be, &yt), t_free(be, &dxt), t_free(be, &st);
      hv_free(&a), hv_free(&b);
      free(want), free(ry);
      be->ops->op_free(op);
      op_release(be, &keep);
    }
  chk_end();
}

/* ---- global average pooling ---- */

static void test_gap(void **state) {
  dt_backend *be = *state;
  chk_begin();
  static const dt_shape shapes[] = {{2, 3, 7, 7}, {1, 17, 9, 9}, {3, 64, 8, 8}, {2, 5, 1, 1}};
  for (size_t si = 0; si < DT_ARRAY_LEN(shapes); si++)
    for (int kind = 0; kind < LAYOUT_KINDS; kind++) {
      const dt_shape s = shapes[si], ys = {s.n, s.c, 1, 1};
      const int hw = s.h * s.w;
      const size_t nx = dt_shape_count(s), ny = dt_shape_count(ys);
      const uint64_t seed = 4000 + 10 * si;
      dt_op *keep;
      const dt_layout *xl = layout_of(be, s, kind, &keep), *yl = NULL;
      dt_op *op = be->ops->gap_create(be, s, xl, &yl);
      assert_non_null(op);
      assert_non_null(yl);
      char what[160];
      hvec x = hv_rand(nx, seed, -1, 1), dy = hv_rand(ny, seed + 1, -1, 1);
      double *ry = dt_xcalloc(ny, sizeof *ry), *rdx = dt_xcalloc(nx, sizeof *rdx);
      dt_tensor xt = t_new(be, s, xl), dyt = t_new(be, ys, yl);
      t_put(be, &xt, &x);
      t_put(be, &dyt, &dy);
      dt_tensor yt = t_garbage(be, ys, yl, seed + 2), dxt = t_garbage(be, s, xl, seed + 3);
      be->ops->gap_forward(op, &xt, &yt);
      ref_gap_forward(s.n, s.c, hw, x.d, ry);
      snprintf(what, sizeof what, "gap forward %dx%dx%dx%d %s", s.n, s.c, s.h, s.w,
               layout_name[kind]);
      chk_tensor(be, what, &yt, ry);
      be->ops->gap_backward(op, &dyt, &dxt);
      ref_gap_backward(s.n, s.c, hw, dy.d, rdx);
      snprintf(what, sizeof what, "gap backward %dx%dx%dx%d %s", s.n, s.c, s.h, s.w,
               layout_name[kind]);
      chk_tensor(be, what, &dxt, rdx);
      t_free(be, &xt), t_free(be, &dyt), t_free(be, &yt), t_free(be, &dxt);
      hv_free(&x), hv_free(&dy);
      free(ry), free(rdx);
      be->ops->op_free(op);
      op_release(be, &keep);
    }
  chk_end();
}

/* ---- linear ---- */

/* x (N, C, 1, 1) in layout kind: plain, or what a GAP over a conv output writes (the
 * model's head). */
static void linear_case(dt_backend *be, int n, int c, int k, int kind, uint64_t seed) {
  const dt_shape xs = {n, c, 1, 1}, ys = {n, k, 1, 1};
  const size_t nx = dt_shape_count(xs), nw = (size_t)k * c, ny = dt_shape_count(ys);
  dt_op *keep = NULL, *gap = NULL;
  const dt_layout *xl;
  if (kind == LAYOUT_PLAIN) {
    xl = be->ops->layout_plain(be, xs);
  } else {
    const dt_shape fs = {n, c, 4, 4};
    const dt_layout *fl = layout_of(be, fs, LAYOUT_CONV, &keep);
    gap = be->ops->gap_create(be, fs, fl, &xl);
    assert_non_null(gap);
  }
  const dt_layout *yl = NULL;
  dt_op *op = be->ops->linear_create(be, xs, xl, k, &yl);
  assert_non_null(op);
  assert_non_null(yl);
  char what[160], tag[96];
  snprintf(tag, sizeof tag, "linear %dx%d -> %d %s", n, c, k,
           kind == LAYOUT_PLAIN ? "plain" : "gap-out");

  hvec x = hv_rand(nx, seed, -1, 1), w = hv_rand(nw, seed + 1, -0.5f, 0.5f);
  hvec b = hv_rand(k, seed + 2, -1, 1), dy = hv_rand(ny, seed + 3, -1, 1);
  hvec gw = hv_rand(nw, seed + 4, -7, 7), gb = hv_rand(k, seed + 5, -7, 7);
  double *ry = dt_xcalloc(ny, sizeof *ry), *rdx = dt_xcalloc(nx, sizeof *rdx);
  double *rdw = dt_xcalloc(nw, sizeof *rdw), *rdb = dt_xcalloc(k, sizeof *rdb);
  ref_linear_forward(n, c, k, x.d, w.d, b.d, ry);
  ref_linear_backward(n, c, k, x.d, dy.d, w.d, rdx, rdw, rdb);

  dt_tensor xt = t_new(be, xs, xl), dyt = t_new(be, ys, yl);
  t_put(be, &xt, &x);
  t_put(be, &dyt, &dy);
  float *wd = p_new(be, &w), *bd = p_new(be, &b);
  dt_tensor yt = t_garbage(be, ys, yl, seed + 6);
  be->ops->linear_forward(op, &xt, wd, bd, &yt);
  snprintf(what, sizeof what, "%s: forward", tag);
  chk_tensor(be, what, &yt, ry);

  dt_tensor dxt = t_garbage(be, xs, xl, seed + 7);
  float *dwd = p_new(be, &gw), *dbd = p_new(be, &gb);
  be->ops->linear_backward(op, &xt, &dyt, wd, &dxt, dwd, dbd);
  snprintf(what, sizeof what, "%s: backward dx", tag);
  chk_tensor(be, what, &dxt, rdx);
  snprintf(what, sizeof what, "%s: backward dw", tag);
  chk_param(be, what, dwd, rdw, nw);
  snprintf(what, sizeof what, "%s: backward db", tag);
  chk_param(be, what, dbd, rdb, k);

  /* Without dx (a head whose input needs no gradient): dw and db still overwritten. */
  be->ops->to_device(be, dwd, gw.f, nw * sizeof(float));
  be->ops->to_device(be, dbd, gb.f, k * sizeof(float));
  be->ops->linear_backward(op, &xt, &dyt, wd, NULL, dwd, dbd);
  snprintf(what, sizeof what, "%s: backward (dx NULL) dw", tag);
  chk_param(be, what, dwd, rdw, nw);
  snprintf(what, sizeof what, "%s: backward (dx NULL) db", tag);
  chk_param(be, what, dbd, rdb, k);

  float *dev[] = {wd, bd, dwd, dbd};
  for (size_t i = 0; i < DT_ARRAY_LEN(dev); i++) be->ops->free(be, dev[i]);
  t_free(be, &xt), t_free(be, &dyt), t_free(be, &yt), t_free(be, &dxt);
  hv_free(&x), hv_free(&w), hv_free(&b), hv_free(&dy), hv_free(&gw), hv_free(&gb);
  free(ry), free(rdx), free(rdw), free(rdb);
  be->ops->op_free(op);
  op_release(be, &gap);
  op_release(be, &keep);
}

static void test_linear(void **state) {
  dt_backend *be = *state;
  chk_begin();
  static const int cases[][3] = {{2, 8, 10}, {1, 17, 10}, {5, 64, 7}, {3, 5, 1}, {4, 33, 100}};
  for (size_t ci = 0; ci < DT_ARRAY_LEN(cases); ci++)
    for (int kind = 0; kind < LAYOUT_KINDS; kind++)
      linear_case(be, cases[ci][0], cases[ci][1], cases[ci][2], kind, 6000 + 10 * ci);
  chk_end();
}

/* ---- soft-target cross-entropy ---- */

/* Soft targets: random positive rows normalised to sum to 1. */
static hvec soft_targets(int n, int k, uint64_t seed) {
  hvec t = hv_rand((size_t)n * k, seed, 0, 1);
  for (int i = 0; i < n; i++) {
    double s = 0;
    for (int j = 0; j < k; j++) s += t.f[(size_t)i * k + j];
    for (int j = 0; j < k; j++) {
      t.f[(size_t)i * k + j] = (float)(t.f[(size_t)i * k + j] / s);
      t.d[(size_t)i * k + j] = t.f[(size_t)i * k + j];
    }
  }
  return t;
}

static void xent_case(dt_backend *be, int n, int k, float lo, float hi, bool one_hot,
                      uint64_t seed) {
  const dt_shape s = {n, k, 1, 1};
  const size_t nz = dt_shape_count(s);
  const float scale = 1.0f / (float)n;
  const dt_layout *l = be->ops->layout_plain(be, s);
  char what[160], tag[96];
  snprintf(tag, sizeof tag, "xent %dx%d logits [%g, %g) %s", n, k, lo, hi,
           one_hot ? "one-hot" : "soft");
  hvec z = hv_rand(nz, seed, lo, hi);
  hvec t = soft_targets(n, k, seed + 1);
  if (one_hot)
    for (int i = 0; i < n; i++)
      for (int j = 0; j < k; j++)
        t.d[(size_t)i * k + j] = t.f[(size_t)i * k + j] = (j == (7 * i + 3) % k);
  double *rl = dt_xcalloc(n, sizeof *rl), *rdz = dt_xcalloc(nz, sizeof *rdz);
  ref_xent(n, k, z.d, t.d, scale, rl, rdz);

  dt_tensor zt = t_new(be, s, l);
  t_put(be, &zt, &z);
  float *td = p_new(be, &t);
  dt_tensor dzt = t_garbage(be, s, l, seed + 2);
  /* The losses land in backend memory (garbage before, to see them overwritten). */
  hvec lg = hv_rand((size_t)n, seed + 3, -7, 7);
  float *loss = p_new(be, &lg);
  be->ops->xent(be, &zt, td, n, k, scale, &dzt, loss);
  double *dloss = p_get(be, loss, (size_t)n);
  snprintf(what, sizeof what, "%s: per-sample loss", tag);
  chk_close(what, dloss, rl, n);
  snprintf(what, sizeof what, "%s: dlogits", tag);
  chk_tensor(be, what, &dzt, rdz);
  /* Without losses: the same dlogits. */
  dt_tensor dz2 = t_garbage(be, s, l, seed + 4);
  be->ops->xent(be, &zt, td, n, k, scale, &dz2, NULL);
  snprintf(what, sizeof what, "%s: dlogits, no losses", tag);
  chk_tensor(be, what, &dz2, rdz);
  t_free(be, &dz2);
  be->ops->free(be, loss);
  hv_free(&lg);

  be->ops->free(be, td);
  t_free(be, &zt), t_free(be, &dzt);
  hv_free(&z), hv_free(&t);
  free(rl), free(rdz), free(dloss);
}

static void test_xent(void **state) {
  dt_backend *be = *state;
  chk_begin();
  xent_case(be, 4, 10, -3, 3, false, 7000);
  xent_case(be, 1, 10, -3, 3, false, 7010);
  xent_case(be, 7, 100, -5, 5, false, 7020);
  xent_case(be, 5, 3, -2, 2, true, 7030);
  /* Large logits overflow a naive exp in fp32; the max must be subtracted first. */
  xent_case(be, 4, 10, 90, 110, false, 7040);
  chk_end();
}

/* ---- a training step's bookkeeping: bit for bit the reference's arithmetic ---- */

static void chk_exact(const char *what, const void *got, const void *want, size_t bytes) {
  const bool ok = memcmp(got, want, bytes) == 0;
  g_chk.checks++;
  if (!ok) {
    g_chk.failures++;
    g_chk.worst = INFINITY;
    snprintf(g_chk.worst_what, sizeof g_chk.worst_what, "%s", what);
  }
  if (!ok || g_chk.verbose) print_message("  %s %-60s bit for bit\n", ok ? "ok  " : "FAIL", what);
}

static void *dev_put(dt_backend *be, const void *host, size_t bytes) {
  void *p = be->ops->alloc(be, bytes);
  be->ops->to_device(be, p, host, bytes);
  return p;
}

static void copy_axpy_case(dt_backend *be, size_t n, float a, bool with_x2, uint64_t seed) {
  char what[160];
  hvec y = hv_rand(n, seed, -3, 3), x = hv_rand(n, seed + 1, -2, 2), x2 = hv_rand(n, seed + 2, -2, 2);
  float *yd = dev_put(be, y.f, n * sizeof(float)), *xd = dev_put(be, x.f, n * sizeof(float));
  float *x2d = dev_put(be, x2.f, n * sizeof(float));
  float *got = dt_xcalloc(n, sizeof *got);
  /* copy: x over a buffer of garbage */
  float *cd = dev_put(be, y.f, n * sizeof(float));
  be->ops->copy(be, cd, xd, n * sizeof(float));
  be->ops->to_host(be, got, cd, n * sizeof(float));
  snprintf(what, sizeof what, "copy %zu floats", n);
  chk_exact(what, got, x.f, n * sizeof(float));
  be->ops->axpy(be, yd, xd, with_x2 ? x2d : NULL, n, a);
  be->ops->to_host(be, got, yd, n * sizeof(float));
  ref_axpy(n, y.f, x.f, with_x2 ? x2.f : NULL, a);
  snprintf(what, sizeof what, "axpy %zu, a = %g%s", n, a, with_x2 ? ", x - x2" : "");
  chk_exact(what, got, y.f, n * sizeof(float));
  be->ops->free(be, yd), be->ops->free(be, xd), be->ops->free(be, x2d), be->ops->free(be, cd);
  hv_free(&y), hv_free(&x), hv_free(&x2);
  free(got);
}

static void nonfinite_case(dt_backend *be, size_t n, size_t at, float bad, int32_t flag0) {
  char what[160];
  hvec x = hv_rand(n, 9100 + n, -1e30f, 1e30f);
  if (at < n) x.f[at] = bad;
  float *xd = dev_put(be, x.f, n * sizeof(float));
  int32_t *fd = dev_put(be, &flag0, sizeof flag0), flag = -1;
  be->ops->flag_nonfinite(be, xd, n, fd);
  be->ops->to_host(be, &flag, fd, sizeof flag);
  const int32_t want = at < n && !isfinite(bad) ? 1 : flag0;
  snprintf(what, sizeof what, "flag_nonfinite %zu floats, %g at %zu, flag %d before", n, bad, at,
           flag0);
  chk_exact(what, &flag, &want, sizeof flag);
  be->ops->free(be, xd), be->ops->free(be, fd);
  hv_free(&x);
}

static void top1_case(dt_backend *be, int n, int k, bool two, bool with_labels, uint64_t seed) {
  char what[160];
  const dt_shape s = {n, k, 1, 1};
  const size_t nz = dt_shape_count(s);
  const dt_layout *l = be->ops->layout_plain(be, s);
  hvec z1 = hv_rand(nz, seed, -1, 1), z2 = hv_rand(nz, seed + 1, -1, 1);
  hvec t = soft_targets(n, k, seed + 2);
  int32_t *labels = dt_xcalloc((size_t)n, sizeof *labels);
  for (int i = 0; i < n; i++) {
    labels[i] = (int32_t)((7 * i + 3) % k);
    /* Every third row: the label ties with a class below it (which then ranks first), every
     * fifth: the maximum of the row is tied (the first wins). */
    float *r1 = z1.f + (size_t)i * k, *r2 = z2.f + (size_t)i * k;
    if (i % 3 == 0 && labels[i] > 0) r1[labels[i]] = r1[0], r2[labels[i]] = r2[0];
    if (i % 5 == 0) r1[k - 1] = r1[0] = 2.0f, r2[k - 1] = r2[0] = 2.0f;
    if (i % 7 == 0) r1[labels[i]] = 3.0f, r2[labels[i]] = 3.0f; /* a clear hit */
  }
  dt_tensor a = t_new(be, s, l), b = t_new(be, s, l);
  t_put(be, &a, &z1);
  t_put(be, &b, &z2);
  float *td = dev_put(be, t.f, nz * sizeof(float));
  int32_t *ld = dev_put(be, labels, (size_t)n * sizeof(int32_t));
  const double before = 2.5;
  double *cd = dev_put(be, &before, sizeof before), got = 0;
  be->ops->top1(be, &a, two ? &b : NULL, td, with_labels ? ld : NULL, n, k, cd);
  be->ops->to_host(be, &got, cd, sizeof got);
  const double want = before + ref_top1(n, k, z1.f, two ? z2.f : NULL, t.f,
                                        with_labels ? labels : NULL);
  snprintf(what, sizeof what, "top1 %dx%d%s, %s", n, k, two ? " of (z1 + z2) / 2" : "",
           with_labels ? "labels" : "target weights");
  chk_exact(what, &got, &want, sizeof got);
  if (with_labels && !two) { /* the count of the evaluation (evaluate.c) */
    int *il = dt_xcalloc((size_t)n, sizeof *il);
    for (int i = 0; i < n; i++) il[i] = labels[i];
    const double eval = before + dt_eval_topk_correct(z1.f, il, n, k, 1);
    snprintf(what, sizeof what, "top1 %dx%d = dt_eval_topk_correct", n, k);
    chk_exact(what, &got, &eval, sizeof got);
    free(il);
  }
  /* sq_diff_rows of the same pair. */
  double *out = be->ops->alloc(be, (size_t)n * sizeof(double));
  double *sq = dt_xcalloc((size_t)n, sizeof *sq), *rsq = dt_xcalloc((size_t)n, sizeof *rsq);
  be->ops->sq_diff_rows(be, &a, &b, n, k, out);
  be->ops->to_host(be, sq, out, (size_t)n * sizeof(double));
  ref_sq_diff_rows(n, k, z1.f, z2.f, rsq);
  snprintf(what, sizeof what, "sq_diff_rows %dx%d", n, k);
  chk_exact(what, sq, rsq, (size_t)n * sizeof(double));
  be->ops->free(be, out), be->ops->free(be, td), be->ops->free(be, ld), be->ops->free(be, cd);
  t_free(be, &a), t_free(be, &b);
  hv_free(&z1), hv_free(&z2), hv_free(&t);
  free(labels), free(sq), free(rsq);
}

static void test_step_ops(void **state) {
  dt_backend *be = *state;
  chk_begin();
  copy_axpy_case(be, 1, 1.0f, false, 9000);
  copy_axpy_case(be, 1037, 1.0f, false, 9010);      /* gradient sums: dst += src */
  copy_axpy_case(be, 1037, 0.37f, true, 9020);      /* Dual-Cutout: dz += s (z1 - z2) */
  copy_axpy_case(be, 70001, -0.0123f, true, 9030);
  copy_axpy_case(be, 4099, 0.1f, false, 9040);
  nonfinite_case(be, 3000, 3000, 0, 0);             /* finite */
  nonfinite_case(be, 3000, 2999, NAN, 0);
  nonfinite_case(be, 3000, 0, INFINITY, 0);
  nonfinite_case(be, 100000, 77777, -INFINITY, 0);
  nonfinite_case(be, 3000, 3000, 0, 1);             /* a flag already set stays set */
  for (int two = 0; two < 2; two++)
    for (int lab = 0; lab < 2; lab++) {
      top1_case(be, 37, 10, two, lab, 9100 + 10 * two + lab);
      top1_case(be, 5, 100, two, lab, 9200 + 10 * two + lab);
    }
  top1_case(be, 2500, 3, false, true, 9300); /* more rows than one chunk of the CUDA kernel */
  top1_case(be, 2500, 3, true, false, 9310);
  chk_end();
}

/* ---- optimizer updates: the skip flag, and the one-call (_multi) ops ---- */

/* An arena of OPT_N floats holding four tensors with padding between them (one of a single
 * element; the second and fourth exempt from weight decay), and the five arrays an update
 * reads: w, g and three state arrays (Adam's v and vmax non-negative). */
#define OPT_N 4099
#define OPT_ARRAYS 5
static const dt_optim_segment opt_segs[] = {
    {0, 1000, 5e-3f, 0}, {1003, 1, 0.0f, 0}, {1004, 2500, 5e-3f, 0}, {3520, 579, 0.0f, 0}};
#define OPT_SEGS ((int)DT_ARRAY_LEN(opt_segs))

typedef enum { OPT_SGD, OPT_LARS, OPT_ADAM, OPT_AMSGRAD, OPT_KINDS } opt_kind;
static const char *const opt_name[OPT_KINDS] = {"sgd nesterov", "lars", "adam", "amsgrad"};

/* The device arrays of one case and the tables of the _multi ops. */
typedef struct {
  float *a[OPT_ARRAYS];
  uint8_t *mask;          /* sgd_update_multi / adam_update_multi: 1 decayed, 2 not, 0 padding */
  dt_optim_segment *segs; /* lars_update_multi: opt_segs */
} opt_arena;

/* Whether the backend has the one-call op of kind. */
static bool opt_has_multi(dt_backend *be, opt_kind kind) {
  const dt_backend_ops *o = be->ops;
  return kind == OPT_SGD    ? o->sgd_update_multi != NULL
         : kind == OPT_LARS ? o->lars_update_multi != NULL
                            : o->adam_update_multi != NULL;
}

/* One update of kind over the arena with gradient scale 0.5: per tensor, or in one call. */
static void opt_update(dt_backend *be, opt_kind kind, bool multi, const opt_arena *ar,
                       const int32_t *skip) {
  const dt_backend_ops *o = be->ops;
  float *const *a = ar->a;
  float *vmax = kind == OPT_AMSGRAD ? a[4] : NULL;
  const float lr = 0.05f, m = 0.9f, wd = 5e-3f, gs = 0.5f;
  const float step = 1e-3f / 0.19f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, bc2 = 0.0447f;
  const double eta = 0.001, threshold = 1.0; /* the one-element tensor stays under it */
  if (multi) {
    switch (kind) {
      case OPT_SGD:
        o->sgd_update_multi(be, a[0], a[1], a[2], ar->mask, OPT_N, lr, m, wd, true, false, gs,
                            skip);
        break;
      case OPT_LARS:
        o->lars_update_multi(be, a[0], a[1], a[2], ar->segs, OPT_SEGS, OPT_N, lr, m, 1e-9, eta,
                             threshold, gs, skip);
        break;
      default:
        o->adam_update_multi(be, a[0], a[1], a[2], a[3], vmax, ar->mask, OPT_N, step, b1, b2,
                             eps, bc2, wd, gs, skip);
        break;
    }
    return;
  }
  for (int i = 0; i < OPT_SEGS; i++) {
    const size_t at = opt_segs[i].offset, n = opt_segs[i].count;
    const float w = opt_segs[i].wd;
    switch (kind) {
      case OPT_SGD:
        o->sgd_update(be, a[0] + at, a[1] + at, a[2] + at, n, lr, m, w, true, false, gs, skip);
        break;
      case OPT_LARS:
        o->lars_update(be, a[0] + at, a[1] + at, a[2] + at, n, lr, m, w, 1e-9, eta, threshold,
                       gs, skip);
        break;
      default:
        o->adam_update(be, a[0] + at, a[1] + at, a[2] + at, a[3] + at, vmax ? vmax + at : NULL,
                       n, step, b1, b2, eps, bc2, w, gs, skip);
        break;
    }
  }
}

/* The five arrays after an update from `in` (host), with the flag: none (NULL) or an int32
 * of backend memory holding `flag`. */
static void opt_case(dt_backend *be, opt_kind kind, bool multi, const opt_arena *ar,
                     float *const in[OPT_ARRAYS], const int32_t *flag, float *out[OPT_ARRAYS]) {
  const size_t bytes = OPT_N * sizeof(float);
  for (int j = 0; j < OPT_ARRAYS; j++) be->ops->to_device(be, ar->a[j], in[j], bytes);
  int32_t *fd = flag ? dev_put(be, flag, sizeof *flag) : NULL;
  opt_update(be, kind, multi, ar, fd);
  for (int j = 0; j < OPT_ARRAYS; j++) be->ops->to_host(be, out[j], ar->a[j], bytes);
  if (fd) be->ops->free(be, fd);
}

/* Every optimizer update, per tensor and (where the backend has them) in one call: a set
 * skip flag (1, or any other non-zero value) leaves w, g and every state array byte-identical
 * (g is not even scaled); a zero flag gives the bytes of no flag (NULL); the update without a
 * flag changes w and g, or the comparisons would prove little. The one-call ops give the bits
 * of the per-tensor ops, padding left alone. */
static void test_optim_skip(void **state) {
  dt_backend *be = *state;
  chk_begin();
  char what[160];
  const size_t bytes = OPT_N * sizeof(float);
  static const char *const array_name[OPT_ARRAYS] = {"w", "g", "state0", "state1", "state2"};
  opt_arena ar;
  float *in[OPT_ARRAYS], *ref[OPT_ARRAYS], *got[OPT_ARRAYS], *per[OPT_ARRAYS];
  for (int j = 0; j < OPT_ARRAYS; j++) {
    ar.a[j] = be->ops->alloc(be, bytes);
    in[j] = dt_xcalloc(OPT_N, sizeof(float));
    ref[j] = dt_xcalloc(OPT_N, sizeof(float));
    got[j] = dt_xcalloc(OPT_N, sizeof(float));
    per[j] = dt_xcalloc(OPT_N, sizeof(float));
    tu_fill_uniform(in[j], OPT_N, 9500 + (uint64_t)j, j >= 3 ? 0.0f : -1.0f, 1.0f);
  }
  uint8_t mask[OPT_N] = {0};
  for (int i = 0; i < OPT_SEGS; i++)
    memset(mask + opt_segs[i].offset, opt_segs[i].wd != 0 ? 1 : 2, opt_segs[i].count);
  ar.mask = dev_put(be, mask, sizeof mask);
  ar.segs = dev_put(be, opt_segs, sizeof opt_segs);
  static const int32_t zero = 0, set[] = {1, -1, 7};
  int multis = 0;
  for (int k = 0; k < OPT_KINDS; k++)
    for (int multi = 0; multi < 2; multi++) {
      if (multi && !opt_has_multi(be, (opt_kind)k)) continue;
      multis += multi;
      const char *how = multi ? "in one call" : "per tensor";
      opt_case(be, (opt_kind)k, multi, &ar, in, NULL, ref);
      for (int j = 0; j < 2; j++) {
        g_chk.checks++;
        if (memcmp(ref[j], in[j], bytes) == 0) {
          g_chk.failures++;
          print_message("  FAIL %s %s: the update left %s unchanged\n", opt_name[k], how,
                        array_name[j]);
        }
      }
      if (multi) /* against the per tensor update of the same arena */
        for (int j = 0; j < OPT_ARRAYS; j++) {
          snprintf(what, sizeof what, "%s in one call = per tensor: %s", opt_name[k],
                   array_name[j]);
          chk_exact(what, ref[j], per[j], bytes);
        }
      else
        for (int j = 0; j < OPT_ARRAYS; j++) memcpy(per[j], ref[j], bytes);
      opt_case(be, (opt_kind)k, multi, &ar, in, &zero, got);
      for (int j = 0; j < OPT_ARRAYS; j++) {
        snprintf(what, sizeof what, "%s %s, skip flag 0 = no flag: %s", opt_name[k], how,
                 array_name[j]);
        chk_exact(what, got[j], ref[j], bytes);
      }
      for (size_t f = 0; f < DT_ARRAY_LEN(set); f++) {
        opt_case(be, (opt_kind)k, multi, &ar, in, &set[f], got);
        for (int j = 0; j < OPT_ARRAYS; j++) {
          snprintf(what, sizeof what, "%s %s, skip flag %d: %s untouched", opt_name[k], how,
                   set[f], array_name[j]);
          chk_exact(what, got[j], in[j], bytes);
        }
      }
    }
  print_message("  optimizer updates: %d one-call ops of this backend checked\n", multis);
  for (int j = 0; j < OPT_ARRAYS; j++) {
    be->ops->free(be, ar.a[j]);
    free(in[j]), free(ref[j]), free(got[j]), free(per[j]);
  }
  be->ops->free(be, ar.mask), be->ops->free(be, ar.segs);
  chk_end();
}

/* ---- a residual block, forward and backward, in the layouts the ops choose ---- */

/* Move a tensor's values into a tensor of another layout through the host. */
static void t_copy(dt_backend *be, const dt_tensor *src, dt_tensor *dst) {
  const size_t n = dt_shape_count(src->shape);
  float *f = dt_xcalloc(n, sizeof *f);
  be->ops->download(be, src, f);
  be->ops->upload(be, f, dst);
  free(f);
}

/*   a = conv1(x)                 (N, 3, H, W) -> (N, C, H, W), stem, no dx
 *   b = bn(a); r = relu(b)
 *   u = a + conv2(r)             conv2 accumulating onto the skip
 *   g = gap(u); z = linear(g); loss = xent(z, t)
 * and the backward pass down to dw1, comparing every intermediate with the reference. */
/* The chain; with rethread > 0 the backend switches to that many threads after the ops are
 * created, so that every primitive is re-created for it on its first run (set_threads). */
static void chain_run(dt_backend *be, int rethread) {
  chk_begin();
  const int N = 3, C = 8, H = 9, W = 9, K = 10, hw = H * W;
  const dt_conv_params p1 = {N, 3, H, W, C, 3, 3, 1, 1, 1, false};
  const dt_conv_params p2 = {N, C, H, W, C, 3, 3, 1, 1, 1, true};
  const ref_conv r1 = {N, 3, H, W, C, 3, 3, 1, 1, 1}, r2 = {N, C, H, W, C, 3, 3, 1, 1, 1};
  const dt_shape xs = {N, 3, H, W}, as = {N, C, H, W}, gs = {N, C, 1, 1}, zs = {N, K, 1, 1};
  const size_t nx = dt_shape_count(xs), na = dt_shape_count(as), ng = dt_shape_count(gs),
               nz = dt_shape_count(zs);
  const size_t nw1 = ref_conv_w_count(&r1), nw2 = ref_conv_w_count(&r2), nfc = (size_t)K * C;

  /* ---- graph: ops and their layouts ---- */
  const dt_layout *xl = be->ops->layout_plain(be, xs), *al = NULL, *ul = NULL, *gl, *zl;
  dt_op *conv1 = be->ops->conv_create(be, &p1, xl, &al);
  dt_op *bn = be->ops->bn_create(be, as, al, BN_EPS, false);
  dt_op *relu = be->ops->eltwise_create(be, as, al);
  dt_op *conv2 = be->ops->conv_create(be, &p2, al, &ul);
  dt_op *acc = be->ops->eltwise_create(be, as, al);
  dt_op *gap = be->ops->gap_create(be, as, ul, &gl);
  dt_op *fc = be->ops->linear_create(be, gs, gl, K, &zl);
  assert_true(conv1 && bn && relu && conv2 && acc && gap && fc);
  chk_no_ref(be, "chain ops");
  /* Native 16 bits: every activation between the ops is 16-bit but the image batch and the
   * logits (fp32); otherwise all fp32. */
  const int eb = native16(be) ? 2 : 4;
  assert_int_equal(elem_bytes(xl), 4);
  assert_int_equal(elem_bytes(al), eb);
  assert_int_equal(elem_bytes(ul), eb);
  assert_int_equal(elem_bytes(gl), eb);
  assert_int_equal(elem_bytes(zl), 4);
  if (rethread > 0) be->ops->set_threads(be, rethread);

  /* ---- data (redrawn until no ReLU input is near its kink) ---- */
  hvec x = {0}, w1 = {0}, gamma = {0}, beta = {0};
  double *ra = dt_xcalloc(na, sizeof(double)), *rb = dt_xcalloc(na, sizeof(double));
  for (uint64_t seed = 8000;; seed += 10) {
    assert_true(seed < 9000);
    hv_free(&x), hv_free(&w1), hv_free(&gamma), hv_free(&beta);
    x = hv_rand(nx, seed, -1, 1);
    w1 = hv_rand(nw1, seed + 1, -0.5f, 0.5f);
    gamma = hv_rand(C, seed + 2, 0.5f, 1.5f);
    beta = hv_rand(C, seed + 3, -0.5f, 0.5f);
    ref_conv_forward(&r1, x.d, w1.d, ra);
    if (bn_kink_distance(as, ra, gamma.d, beta.d) > KINK_MARGIN) break;
  }
  hvec w2 = hv_rand(nw2, 8101, -0.2f, 0.2f), wfc = hv_rand(nfc, 8102, -0.5f, 0.5f);
  hvec bfc = hv_rand(K, 8103, -0.5f, 0.5f), rm = hv_rand(C, 8104, -1, 1);
  hvec rv = hv_rand(C, 8105, 0.5f, 2), t = soft_targets(N, K, 8106);
  const double scale = 1.0 / N;

  /* ---- reference forward and backward ---- */
  double *rr = dt_xcalloc(na, sizeof(double)), *ru = dt_xcalloc(na, sizeof(double));
  double *rg = dt_xcalloc(ng, sizeof(double)), *rz = dt_xcalloc(nz, sizeof(double));
  double *rloss = dt_xcalloc(N, sizeof(double)), *rdz = dt_xcalloc(nz, sizeof(double));
  double *rmu = dt_xcalloc(C, sizeof(double)), *rvar = dt_xcalloc(C, sizeof(double));
  double *rdg = dt_xcalloc(ng, sizeof(double)), *rdwfc = dt_xcalloc(nfc, sizeof(double));
  double *rdbfc = dt_xcalloc(K, sizeof(double)), *rdu = dt_xcalloc(na, sizeof(double));
  double *rdr = dt_xcalloc(na, sizeof(double)), *rdb = dt_xcalloc(na, sizeof(double));
  double *rda = dt_xcalloc(na, sizeof(double)), *rdw2 = dt_xcalloc(nw2, sizeof(double));
  double *rdw1 = dt_xcalloc(nw1, sizeof(double));
  double *rdgamma = dt_xcalloc(C, sizeof(double)), *rdbeta = dt_xcalloc(C, sizeof(double));
  double *rrm = dt_xcalloc(C, sizeof(double)), *rrv = dt_xcalloc(C, sizeof(double));
  memcpy(rrm, rm.d, C * sizeof(double));
  memcpy(rrv, rv.d, C * sizeof(double));
  ref_bn_forward_train(N, C, hw, ra, gamma.d, beta.d, BN_EPS, false, rb, rmu, rvar, rrm, rrv,
                       BN_MOMENTUM);
  ref_relu_forward(na, rb, rr);
  ref_conv_forward(&r2, rr, w2.d, ru);
  ref_add(na, ru, ra, ru);
  ref_gap_forward(N, C, hw, ru, rg);
  ref_linear_forward(N, C, K, rg, wfc.d, bfc.d, rz);
  ref_xent(N, K, rz, t.d, scale, rloss, rdz);
  ref_linear_backward(N, C, K, rg, rdz, wfc.d, rdg, rdwfc, rdbfc);
  ref_gap_backward(N, C, hw, rdg, rdu);
  ref_conv_backward_data(&r2, rdu, w2.d, rdr);
  ref_conv_backward_weights(&r2, rr, rdu, rdw2);
  /* (the mask: see "relu backward" below) */
  ref_relu_backward(na, rr, rdr, rdb);
  ref_bn_backward(N, C, hw, ra, rdb, gamma.d, rmu, rvar, BN_EPS, false, NULL, rda, rdgamma,
                  rdbeta);
  ref_add(na, rda, rdu, rda); /* the skip's gradient */
  ref_conv_backward_weights(&r1, x.d, rda, rdw1);

  /* ---- backend forward ---- */
  float *w1d = w_new(be, &w1, &r1), *w2d = w_new(be, &w2, &r2), *wfcd = p_new(be, &wfc);
  float *bfcd = p_new(be, &bfc), *gd = p_new(be, &gamma), *bd = p_new(be, &beta);
  float *rmd = p_new(be, &rm), *rvd = p_new(be, &rv), *td = p_new(be, &t);
  hvec zc = hv_new(C), zw2 = hv_new(nw2), zw1 = hv_new(nw1), zfc = hv_new(nfc), zk = hv_new(K);
  float *smd = p_new(be, &zc), *svd = p_new(be, &zc), *dgd = p_new(be, &zc);
  float *dbd = p_new(be, &zc), *dw1d = p_new(be, &zw1), *dw2d = p_new(be, &zw2);
  float *dwfcd = p_new(be, &zfc), *dbfcd = p_new(be, &zk);
  dt_tensor xt = t_new(be, xs, xl), at = t_new(be, as, al), bt = t_new(be, as, al);
  dt_tensor rt = t_new(be, as, al), ut = t_new(be, as, ul), gt = t_new(be, gs, gl);
  dt_tensor zt = t_new(be, zs, zl), dzt = t_new(be, zs, zl), dgt = t_new(be, gs, gl);
  dt_tensor dut = t_new(be, as, ul), drt = t_new(be, as, al), dbt = t_new(be, as, al);
  dt_tensor dat = t_new(be, as, al), skip = t_new(be, as, al);
  float *loss = dt_xcalloc(N, sizeof *loss);
  t_put(be, &xt, &x);

  be->ops->conv_forward(conv1, &xt, w1d, &at, false);
  chk_tensor(be, "chain conv1 forward a", &at, ra);
  be->ops->bn_forward_train(bn, &at, gd, bd, &bt, smd, svd, rmd, rvd, BN_MOMENTUM);
  chk_tensor(be, "chain bn forward b", &bt, rb);
  chk_param(be, "chain bn running_mean", rmd, rrm, C);
  chk_param(be, "chain bn running_var", rvd, rrv, C);
  be->ops->relu_forward(relu, &bt, &rt);
  chk_tensor(be, "chain relu forward r", &rt, rr);
  t_copy(be, &at, &ut); /* the skip, in conv2's output layout */
  be->ops->conv_forward(conv2, &rt, w2d, &ut, true);
  chk_tensor(be, "chain conv2 forward accumulate u", &ut, ru);
  be->ops->gap_forward(gap, &ut, &gt);
  chk_tensor(be, "chain gap forward g", &gt, rg);
  be->ops->linear_forward(fc, &gt, wfcd, bfcd, &zt);
  chk_tensor(be, "chain linear forward z", &zt, rz);
  be->ops->xent(be, &zt, td, N, K, (float)scale, &dzt, loss);
  double *dloss = dt_xcalloc(N, sizeof *dloss);
  for (int i = 0; i < N; i++) dloss[i] = loss[i];
  chk_close("chain xent loss", dloss, rloss, N);
  chk_tensor(be, "chain xent dlogits", &dzt, rdz);

  /* ---- backend backward ---- */
  be->ops->linear_backward(fc, &gt, &dzt, wfcd, &dgt, dwfcd, dbfcd);
  chk_tensor(be, "chain linear backward dg", &dgt, rdg);
  chk_param(be, "chain linear backward dw", dwfcd, rdwfc, nfc);
  chk_param(be, "chain linear backward db", dbfcd, rdbfc, K);
  be->ops->gap_backward(gap, &dgt, &dut);
  chk_tensor(be, "chain gap backward du", &dut, rdu);
  be->ops->conv_backward_data(conv2, &dut, w2d, &drt);
  chk_tensor(be, "chain conv2 backward data dr", &drt, rdr);
  be->ops->conv_backward_weights(conv2, &rt, &dut, dw2d);
  chk_wgrad(be, "chain conv2 backward weights dw2", dw2d, rdw2, &r2);
  be->ops->relu_backward(relu, &rt, &drt, &dbt);
  if (g_prec != DT_PRECISION_FP32) {
    /* 16 bits (conv1's rounded output, native or emulated) move the ReLU inputs by up to 2^-9
     * of their scale, far beyond the kink margin of the data: take the mask from the backend's
     * forward output, and redo the reference from here on with it. */
    double *mask = t_get(be, &rt);
    ref_relu_backward(na, mask, rdr, rdb);
    free(mask);
    ref_bn_backward(N, C, hw, ra, rdb, gamma.d, rmu, rvar, BN_EPS, false, NULL, rda, rdgamma,
                    rdbeta);
    ref_add(na, rda, rdu, rda);
    ref_conv_backward_weights(&r1, x.d, rda, rdw1);
  }
  chk_tensor(be, "chain relu backward db", &dbt, rdb);
  be->ops->bn_backward(bn, &at, &dbt, gd, smd, svd, &dat, dgd, dbd);
  chk_param(be, "chain bn backward dgamma", dgd, rdgamma, C);
  chk_param(be, "chain bn backward dbeta", dbd, rdbeta, C);
  t_copy(be, &dut, &skip); /* the skip's gradient, in a's layout */
  be->ops->accumulate(acc, &skip, &dat);
  chk_tensor(be, "chain bn backward + skip da", &dat, rda);
  be->ops->conv_backward_weights(conv1, &xt, &dat, dw1d);
  chk_wgrad(be, "chain conv1 backward weights dw1", dw1d, rdw1, &r1);

  /* ---- cleanup ---- */
  float *dev[] = {w1d, w2d, wfcd, bfcd, gd, bd, rmd, rvd, td, smd, svd, dgd, dbd, dw1d, dw2d,
                  dwfcd, dbfcd};
  for (size_t i = 0; i < DT_ARRAY_LEN(dev); i++) be->ops->free(be, dev[i]);
  dt_tensor *ts[] = {&xt, &at, &bt, &rt, &ut, &gt, &zt, &dzt, &dgt, &dut, &drt, &dbt, &dat,
                     &skip};
  for (size_t i = 0; i < DT_ARRAY_LEN(ts); i++) t_free(be, ts[i]);
  hvec *hs[] = {&x, &w1, &gamma, &beta, &w2, &wfc, &bfc, &rm, &rv, &t, &zc, &zw2, &zw1, &zfc,
                &zk};
  for (size_t i = 0; i < DT_ARRAY_LEN(hs); i++) hv_free(hs[i]);
  double *rs[] = {ra, rb, rr, ru, rg, rz, rloss, rdz, rmu, rvar, rdg, rdwfc, rdbfc, rdu,
                  rdr, rdb, rda, rdw2, rdw1, rdgamma, rdbeta, rrm, rrv, dloss};
  for (size_t i = 0; i < DT_ARRAY_LEN(rs); i++) free(rs[i]);
  free(loss);
  dt_op *ops[] = {conv1, bn, relu, conv2, acc, gap, fc};
  for (size_t i = 0; i < DT_ARRAY_LEN(ops); i++) be->ops->op_free(ops[i]);
  chk_end();
}

static void test_chain(void **state) { chain_run(*state, 0); }

/* The same after a change of the thread count: primitives re-created for it compute the same
 * (and none kept: the new ones choose the layouts the old ones had). */
static void test_chain_rethread(void **state) {
  dt_backend *be = *state;
  assert_int_equal(be->threads, 2);
  long made = be->rethread_prims;
  chain_run(be, 1);
  assert_true(be->rethread_prims > made);
  assert_int_equal(be->rethread_kept, 0);
  made = be->rethread_prims;
  chain_run(be, 2);
  assert_true(be->rethread_prims > made);
  assert_int_equal(be->rethread_kept, 0);
  assert_int_equal(be->threads, 2);
}

/* ---- ops of the other families (docs/reference-experiments.md "Models") ---- */

/* Input layouts of the new ops: plain, and what a stem-like convolution writes. */
static const char *tag_of(char *buf, size_t size, const char *op, dt_shape s, int kind) {
  snprintf(buf, size, "%s %dx%dx%dx%d %s", op, s.n, s.c, s.h, s.w, layout_name[kind]);
  return buf;
}

/* Values at least 2 / count apart (a permutation of a grid over [-1, 1)): max pooling then has
 * no ties, in fp32 as in double. */
static hvec hv_distinct(size_t n, size_t mult) {
  hvec v = hv_new(n);
  for (size_t i = 0; i < n; i++) {
    v.f[i] = (float)(-1.0 + 2.0 * (double)((i * mult) % n) / n);
    v.d[i] = v.f[i];
  }
  return v;
}

/* chk_tensor, and that the lanes a blocked layout pads the channels with hold zeros (the
 * sum of |raw buffer| equals the sum of |values|): outputs start as garbage, and a later
 * primitive may read padding lanes. */
static void chk_out(dt_backend *be, const char *what, const dt_tensor *t, const double *want) {
  chk_tensor(be, what, t, want);
  const size_t bytes = be->ops->layout_bytes(t->layout), n = dt_shape_count(t->shape);
  const int eb = elem_bytes(t->layout);
  if (bytes == n * (size_t)eb) return;
  void *raw = dt_xcalloc(bytes, 1);
  double *vals = t_get(be, t);
  be->ops->to_host(be, raw, t->data, bytes);
  double sr = 0, sv = 0;
  for (size_t i = 0; i < bytes / (size_t)eb; i++) sr += fabs(raw_elem(raw, i, eb));
  for (size_t i = 0; i < n; i++) sv += fabs(vals[i]);
  const bool ok = fabs(sr - sv) <= 1e-5 * sv;
  g_chk.checks++;
  if (!ok) {
    g_chk.failures++;
    print_message("  FAIL %s: padding lanes not zero (|raw| %g, |values| %g)\n", what, sr, sv);
  }
  free(raw), free(vals);
}

/* The common end of a one-input op's case whose backward needs only dy (pool, pad_channels,
 * shift): y = fwd(x) and dx = bwd(dy) into garbage-filled tensors (seeds gseed, gseed + 1),
 * compared with the references ry and rdx under tag; then frees x, dy, ry, rdx, op and keep. */
static void check_unary(dt_backend *be, const char *tag, dt_op *op, dt_op **keep,
                        void (*fwd)(dt_op *, const dt_tensor *, dt_tensor *),
                        void (*bwd)(dt_op *, const dt_tensor *, dt_tensor *), dt_shape xs,
                        const dt_layout *xl, dt_shape ys, const dt_layout *yl, hvec *x, hvec *dy,
                        double *ry, double *rdx, uint64_t gseed) {
  char what[160];
  dt_tensor xt = t_new(be, xs, xl), yt = t_garbage(be, ys, yl, gseed);
  dt_tensor dyt = t_new(be, ys, yl), dxt = t_garbage(be, xs, xl, gseed + 1);
  t_put(be, &xt, x), t_put(be, &dyt, dy);
  fwd(op, &xt, &yt);
  chk_out(be, strcat(strcpy(what, tag), ": forward"), &yt, ry);
  bwd(op, &dyt, &dxt);
  chk_out(be, strcat(strcpy(what, tag), ": backward dx"), &dxt, rdx);
  t_free(be, &xt), t_free(be, &yt), t_free(be, &dyt), t_free(be, &dxt);
  hv_free(x), hv_free(dy);
  free(ry), free(rdx);
  be->ops->op_free(op);
  op_release(be, keep);
}

static void pool_case(dt_backend *be, dt_shape s, dt_pool_kind pk, int k, int stride, int pad,
                      bool incl, int kind, uint64_t seed) {
  const bool max = pk == DT_POOL_MAX;
  const int P = ref_pool_out(s.h, k, stride, pad), Q = ref_pool_out(s.w, k, stride, pad);
  const dt_shape ys = {s.n, s.c, P, Q};
  const size_t nx = dt_shape_count(s), ny = dt_shape_count(ys);
  dt_op *keep;
  const dt_layout *xl = layout_of(be, s, kind, &keep), *yl = NULL;
  dt_op *op = be->ops->pool_create(be, s, xl, pk, k, stride, pad, incl, &yl);
  assert_non_null(op);
  assert_non_null(yl);
  char tag[96], name[48];
  snprintf(name, sizeof name, "%s pool %d/%d p%d%s", max ? "max" : "avg", k, stride, pad,
           max || incl ? "" : " excl");
  tag_of(tag, sizeof tag, name, s, kind);
  hvec x = hv_distinct(nx, 7919 % nx ? 7919 : 7907), dy = hv_rand(ny, seed, -1, 1);
  if (g_prec != DT_PRECISION_FP32) hv_round16(&x); /* max pooling on values without ties */
  double *ry = dt_xcalloc(ny, sizeof *ry), *rdx = dt_xcalloc(nx, sizeof *rdx);
  ref_pool_forward(s.n, s.c, s.h, s.w, max, k, stride, pad, incl, x.d, ry);
  ref_pool_backward(s.n, s.c, s.h, s.w, max, k, stride, pad, incl, x.d, dy.d, rdx);
  check_unary(be, tag, op, &keep, be->ops->pool_forward, be->ops->pool_backward, s, xl, ys, yl,
              &x, &dy, ry, rdx, seed + 1);
}

static void test_pool(void **state) {
  dt_backend *be = *state;
  chk_begin();
  static const struct {
    dt_shape s;
    dt_pool_kind kind;
    int k, stride, pad;
    bool incl;
  } cases[] = {
      {{2, 64, 8, 8}, DT_POOL_MAX, 2, 2, 0, true},   /* VGG */
      {{1, 17, 9, 9}, DT_POOL_MAX, 2, 2, 0, true},   /* batch 1, odd size and channels */
      {{2, 16, 11, 11}, DT_POOL_MAX, 3, 2, 1, true}, /* ImageNet stem max 3x3/2 pad 1 */
      {{2, 24, 8, 8}, DT_POOL_AVG, 2, 2, 0, true},   /* DenseNet transition */
      {{3, 21, 7, 7}, DT_POOL_AVG, 2, 2, 0, true},   /* PyramidNet shortcut, odd size */
      {{2, 16, 9, 8}, DT_POOL_AVG, 1, 2, 0, true},   /* shake-shake 1x1/2 subsampling */
      {{2, 5, 6, 6}, DT_POOL_AVG, 3, 1, 1, true},    /* padding counted */
      {{2, 5, 6, 6}, DT_POOL_AVG, 3, 1, 1, false},   /* padding excluded */
  };
  for (size_t ci = 0; ci < DT_ARRAY_LEN(cases); ci++)
    for (int kind = 0; kind < LAYOUT_KINDS; kind++)
      pool_case(be, cases[ci].s, cases[ci].kind, cases[ci].k, cases[ci].stride, cases[ci].pad,
                cases[ci].incl, kind, 9000 + 10 * ci);
  chk_end();
}

static void concat_case(dt_backend *be, int n, int ca, int cb, int h, int w, int kind_a,
                        int kind_b, uint64_t seed) {
  const dt_shape as = {n, ca, h, w}, bs = {n, cb, h, w}, ys = {n, ca + cb, h, w};
  const size_t na = dt_shape_count(as), nb = dt_shape_count(bs), ny = dt_shape_count(ys);
  dt_op *keep_a, *keep_b;
  const dt_layout *al = layout_of(be, as, kind_a, &keep_a),
                  *bl = layout_of(be, bs, kind_b, &keep_b);
  const dt_layout *yl = NULL;
  dt_op *op = be->ops->concat_create(be, as, al, bs, bl, &yl);
  assert_non_null(op);
  assert_non_null(yl);
  char tag[128], what[192];
  snprintf(tag, sizeof tag, "concat %dx(%d+%d)x%dx%d %s+%s", n, ca, cb, h, w, layout_name[kind_a],
           layout_name[kind_b]);
  hvec a = hv_rand(na, seed, -1, 1), b = hv_rand(nb, seed + 1, -1, 1),
       dy = hv_rand(ny, seed + 2, -1, 1);
  double *ry = dt_xcalloc(ny, sizeof *ry), *rda = dt_xcalloc(na, sizeof *rda);
  double *rdb = dt_xcalloc(nb, sizeof *rdb);
  ref_concat_forward(n, ca, cb, h * w, a.d, b.d, ry);
  ref_concat_backward(n, ca, cb, h * w, dy.d, rda, rdb);
  dt_tensor at = t_new(be, as, al), bt = t_new(be, bs, bl), yt = t_garbage(be, ys, yl, seed + 3);
  dt_tensor dyt = t_new(be, ys, yl), dat = t_garbage(be, as, al, seed + 4);
  dt_tensor dbt = t_garbage(be, bs, bl, seed + 5);
  t_put(be, &at, &a), t_put(be, &bt, &b), t_put(be, &dyt, &dy);
  be->ops->concat_forward(op, &at, &bt, &yt);
  chk_out(be, strcat(strcpy(what, tag), ": forward"), &yt, ry);
  be->ops->concat_backward(op, &dyt, &dat, &dbt);
  chk_out(be, strcat(strcpy(what, tag), ": backward da"), &dat, rda);
  chk_out(be, strcat(strcpy(what, tag), ": backward db"), &dbt, rdb);
  /* One input at a time, as the graph asks (the other left alone). */
  t_free(be, &dat), t_free(be, &dbt);
  dat = t_garbage(be, as, al, seed + 6), dbt = t_garbage(be, bs, bl, seed + 7);
  be->ops->concat_backward(op, &dyt, NULL, &dbt);
  be->ops->concat_backward(op, &dyt, &dat, NULL);
  chk_out(be, strcat(strcpy(what, tag), ": backward da alone"), &dat, rda);
  chk_out(be, strcat(strcpy(what, tag), ": backward db alone"), &dbt, rdb);
  t_free(be, &at), t_free(be, &bt), t_free(be, &yt), t_free(be, &dyt), t_free(be, &dat),
      t_free(be, &dbt);
  hv_free(&a), hv_free(&b), hv_free(&dy);
  free(ry), free(rda), free(rdb);
  be->ops->op_free(op);
  op_release(be, &keep_a);
  op_release(be, &keep_b);
}

static void pad_case(dt_backend *be, dt_shape s, int c_out, int kind, uint64_t seed) {
  const dt_shape ys = {s.n, c_out, s.h, s.w};
  const size_t nx = dt_shape_count(s), ny = dt_shape_count(ys);
  dt_op *keep;
  const dt_layout *xl = layout_of(be, s, kind, &keep), *yl = NULL;
  dt_op *op = be->ops->pad_channels_create(be, s, xl, c_out, &yl);
  assert_non_null(op);
  char tag[96], name[48];
  snprintf(name, sizeof name, "pad_channels ->%d", c_out);
  tag_of(tag, sizeof tag, name, s, kind);
  hvec x = hv_rand(nx, seed, -1, 1), dy = hv_rand(ny, seed + 1, -1, 1);
  double *ry = dt_xcalloc(ny, sizeof *ry), *rdx = dt_xcalloc(nx, sizeof *rdx);
  ref_pad_channels_forward(s.n, s.c, c_out, s.h * s.w, x.d, ry);
  ref_pad_channels_backward(s.n, s.c, c_out, s.h * s.w, dy.d, rdx);
  check_unary(be, tag, op, &keep, be->ops->pad_channels_forward, be->ops->pad_channels_backward,
              s, xl, ys, yl, &x, &dy, ry, rdx, seed + 2);
}

static void test_concat_pad(void **state) {
  dt_backend *be = *state;
  chk_begin();
  static const int cases[][5] = {
      /* n  ca  cb  h  w */
      {2, 24, 12, 8, 8},  /* DenseNet-BC k=12: the offset 24 is inside a block */
      {1, 36, 12, 5, 5},  /* batch 1, odd size */
      {2, 32, 16, 4, 4},  /* block-aligned */
      {2, 16, 16, 7, 7},  /* shake-shake shortcut halves */
      {3, 3, 5, 6, 5},    /* tiny, odd */
  };
  for (size_t ci = 0; ci < DT_ARRAY_LEN(cases); ci++)
    for (int ka = 0; ka < LAYOUT_KINDS; ka++)
      for (int kb = 0; kb < LAYOUT_KINDS; kb++)
        concat_case(be, cases[ci][0], cases[ci][1], cases[ci][2], cases[ci][3], cases[ci][4], ka,
                    kb, 9100 + 10 * ci);
  static const struct {
    dt_shape s;
    int c_out;
  } pads[] = {{{2, 16, 8, 8}, 21}, {{1, 21, 5, 5}, 26}, {{2, 100, 4, 4}, 100}, {{3, 5, 3, 3}, 37}};
  for (size_t pi = 0; pi < DT_ARRAY_LEN(pads); pi++)
    for (int kind = 0; kind < LAYOUT_KINDS; kind++)
      pad_case(be, pads[pi].s, pads[pi].c_out, kind, 9200 + 10 * pi);
  chk_end();
}

static void dropout_case(dt_backend *be, dt_shape s, float p, int kind, uint64_t seed) {
  const size_t n = dt_shape_count(s);
  dt_op *keep;
  const dt_layout *l = layout_of(be, s, kind, &keep);
  dt_op *op = be->ops->dropout_create(be, s, l, p);
  assert_non_null(op);
  char tag[96], what[160], name[32];
  snprintf(name, sizeof name, "dropout %.2f", p);
  tag_of(tag, sizeof tag, name, s, kind);
  uint64_t *keys = dt_xcalloc((size_t)s.n, sizeof *keys);
  dt_rng r = dt_rng_key(seed, 12, 0, 0);
  for (int i = 0; i < s.n; i++) keys[i] = dt_rng_u64(&r);
  hvec x = hv_rand(n, seed, -1, 1), dy = hv_rand(n, seed + 1, -1, 1);
  double *ry = dt_xcalloc(n, sizeof *ry), *rdx = dt_xcalloc(n, sizeof *rdx);
  ref_dropout_forward(s.n, s.c, s.h * s.w, p, keys, x.d, ry);
  ref_dropout_backward(s.n, s.c, s.h * s.w, p, keys, dy.d, rdx);
  dt_tensor xt = t_new(be, s, l), yt = t_garbage(be, s, l, seed + 2);
  dt_tensor dyt = t_new(be, s, l), dxt = t_garbage(be, s, l, seed + 3);
  t_put(be, &xt, &x), t_put(be, &dyt, &dy);
  be->ops->dropout_forward(op, &xt, keys, &yt);
  chk_out(be, strcat(strcpy(what, tag), ": forward"), &yt, ry);
  be->ops->dropout_backward(op, &dyt, &dxt);
  chk_out(be, strcat(strcpy(what, tag), ": backward dx"), &dxt, rdx);
  /* Inference: no keys, the identity. */
  dt_tensor yit = t_garbage(be, s, l, seed + 4);
  be->ops->dropout_forward(op, &xt, NULL, &yit);
  chk_out(be, strcat(strcpy(what, tag), ": forward (no keys) = x"), &yit, x.d);
  t_free(be, &xt), t_free(be, &yt), t_free(be, &dyt), t_free(be, &dxt), t_free(be, &yit);
  hv_free(&x), hv_free(&dy);
  free(ry), free(rdx), free(keys);
  be->ops->op_free(op);
  op_release(be, &keep);
}

static void sigmoid_case(dt_backend *be, dt_shape s, int kind, uint64_t seed) {
  const size_t n = dt_shape_count(s);
  dt_op *keep;
  const dt_layout *l = layout_of(be, s, kind, &keep);
  dt_op *op = be->ops->sigmoid_create(be, s, l);
  assert_non_null(op);
  char tag[96], what[160];
  tag_of(tag, sizeof tag, "sigmoid", s, kind);
  hvec x = hv_rand(n, seed, -6, 6), dy = hv_rand(n, seed + 1, -1, 1);
  double *ry = dt_xcalloc(n, sizeof *ry), *rdx = dt_xcalloc(n, sizeof *rdx);
  ref_sigmoid_forward(n, x.d, ry);
  ref_sigmoid_backward(n, ry, dy.d, rdx);
  dt_tensor xt = t_new(be, s, l), yt = t_garbage(be, s, l, seed + 2);
  dt_tensor dyt = t_new(be, s, l), dxt = t_garbage(be, s, l, seed + 3);
  t_put(be, &xt, &x), t_put(be, &dyt, &dy);
  be->ops->sigmoid_forward(op, &xt, &yt);
  chk_out(be, strcat(strcpy(what, tag), ": forward"), &yt, ry);
  be->ops->sigmoid_backward(op, &yt, &dyt, &dxt);
  chk_out(be, strcat(strcpy(what, tag), ": backward dx"), &dxt, rdx);
  t_free(be, &xt), t_free(be, &yt), t_free(be, &dyt), t_free(be, &dxt);
  hv_free(&x), hv_free(&dy);
  free(ry), free(rdx);
  be->ops->op_free(op);
  op_release(be, &keep);
}

static void test_dropout_sigmoid(void **state) {
  dt_backend *be = *state;
  chk_begin();
  static const dt_shape shapes[] = {{2, 16, 8, 8}, {1, 17, 9, 9}, {3, 5, 1, 1}, {2, 40, 7, 5}};
  for (size_t si = 0; si < DT_ARRAY_LEN(shapes); si++)
    for (int kind = 0; kind < LAYOUT_KINDS; kind++) {
      dropout_case(be, shapes[si], si % 2 ? 0.3f : 0.5f, kind, 9300 + 10 * si);
      sigmoid_case(be, shapes[si], kind, 9400 + 10 * si);
    }
  chk_end();
}

/* x in layout kind; s (N, C, 1, 1) plain (a linear layer's output, as in squeeze-excite) or,
 * with s_gap, in the layout of a global average pooling of x. */
static void scale_case(dt_backend *be, dt_shape s, int kind, bool s_gap, uint64_t seed) {
  const dt_shape ss = {s.n, s.c, 1, 1};
  const size_t n = dt_shape_count(s), ns = dt_shape_count(ss);
  dt_op *keep, *gap = NULL;
  const dt_layout *l = layout_of(be, s, kind, &keep), *sl = be->ops->layout_plain(be, ss);
  if (s_gap) gap = be->ops->gap_create(be, s, l, &sl);
  dt_op *op = be->ops->scale_create(be, s, l, sl);
  assert_non_null(op);
  char tag[128], what[192], name[48];
  snprintf(name, sizeof name, "scale (s %s)", s_gap ? "gap-out" : "plain");
  tag_of(tag, sizeof tag, name, s, kind);
  hvec x = hv_rand(n, seed, -1, 1), sv = hv_rand(ns, seed + 1, 0, 1);
  hvec dy = hv_rand(n, seed + 2, -1, 1);
  double *ry = dt_xcalloc(n, sizeof *ry), *rdx = dt_xcalloc(n, sizeof *rdx);
  double *rds = dt_xcalloc(ns, sizeof *rds);
  ref_scale_forward(s.n, s.c, s.h * s.w, x.d, sv.d, ry);
  ref_scale_backward(s.n, s.c, s.h * s.w, x.d, sv.d, dy.d, rdx, rds);
  dt_tensor xt = t_new(be, s, l), st = t_new(be, ss, sl), yt = t_garbage(be, s, l, seed + 3);
  dt_tensor dyt = t_new(be, s, l), dxt = t_garbage(be, s, l, seed + 4);
  dt_tensor dst = t_garbage(be, ss, sl, seed + 5);
  t_put(be, &xt, &x), t_put(be, &st, &sv), t_put(be, &dyt, &dy);
  be->ops->scale_forward(op, &xt, &st, &yt);
  chk_out(be, strcat(strcpy(what, tag), ": forward"), &yt, ry);
  be->ops->scale_backward(op, &xt, &st, &dyt, &dxt, &dst);
  chk_out(be, strcat(strcpy(what, tag), ": backward dx"), &dxt, rdx);
  chk_out(be, strcat(strcpy(what, tag), ": backward ds"), &dst, rds);
  t_free(be, &dxt), t_free(be, &dst);
  dxt = t_garbage(be, s, l, seed + 6), dst = t_garbage(be, ss, sl, seed + 7);
  be->ops->scale_backward(op, &xt, &st, &dyt, NULL, &dst);
  be->ops->scale_backward(op, &xt, &st, &dyt, &dxt, NULL);
  chk_out(be, strcat(strcpy(what, tag), ": backward dx alone"), &dxt, rdx);
  chk_out(be, strcat(strcpy(what, tag), ": backward ds alone"), &dst, rds);
  t_free(be, &xt), t_free(be, &st), t_free(be, &yt), t_free(be, &dyt), t_free(be, &dxt),
      t_free(be, &dst);
  hv_free(&x), hv_free(&sv), hv_free(&dy);
  free(ry), free(rdx), free(rds);
  be->ops->op_free(op);
  op_release(be, &gap);
  op_release(be, &keep);
}

static void shake_case(dt_backend *be, dt_shape s, int kind, uint64_t seed) {
  const size_t n = dt_shape_count(s), chw = n / s.n;
  dt_op *keep;
  const dt_layout *l = layout_of(be, s, kind, &keep);
  dt_op *op = be->ops->shake_create(be, s, l);
  assert_non_null(op);
  char tag[96], what[160];
  tag_of(tag, sizeof tag, "shake", s, kind);
  hvec a = hv_rand(n, seed, -1, 1), b = hv_rand(n, seed + 1, -1, 1);
  hvec dy = hv_rand(n, seed + 2, -1, 1);
  hvec alpha = hv_rand((size_t)s.n, seed + 3, 0, 1), beta = hv_rand((size_t)s.n, seed + 4, 0, 1);
  double *ry = dt_xcalloc(n, sizeof *ry), *rda = dt_xcalloc(n, sizeof *rda);
  double *rdb = dt_xcalloc(n, sizeof *rdb);
  ref_shake_forward(s.n, chw, a.d, b.d, alpha.d, ry);
  ref_shake_backward(s.n, chw, dy.d, beta.d, rda, rdb);
  dt_tensor at = t_new(be, s, l), bt = t_new(be, s, l), yt = t_garbage(be, s, l, seed + 5);
  dt_tensor dyt = t_new(be, s, l), dat = t_garbage(be, s, l, seed + 6);
  dt_tensor dbt = t_garbage(be, s, l, seed + 7);
  t_put(be, &at, &a), t_put(be, &bt, &b), t_put(be, &dyt, &dy);
  be->ops->shake_forward(op, &at, &bt, alpha.f, &yt);
  chk_out(be, strcat(strcpy(what, tag), ": forward"), &yt, ry);
  be->ops->shake_backward(op, &dyt, beta.f, &dat, &dbt);
  chk_out(be, strcat(strcpy(what, tag), ": backward da"), &dat, rda);
  chk_out(be, strcat(strcpy(what, tag), ": backward db"), &dbt, rdb);
  t_free(be, &dat), t_free(be, &dbt);
  dat = t_garbage(be, s, l, seed + 8), dbt = t_garbage(be, s, l, seed + 9);
  be->ops->shake_backward(op, &dyt, beta.f, NULL, &dbt);
  be->ops->shake_backward(op, &dyt, beta.f, &dat, NULL);
  chk_out(be, strcat(strcpy(what, tag), ": backward da alone"), &dat, rda);
  chk_out(be, strcat(strcpy(what, tag), ": backward db alone"), &dbt, rdb);
  t_free(be, &at), t_free(be, &bt), t_free(be, &yt), t_free(be, &dyt), t_free(be, &dat),
      t_free(be, &dbt);
  hv_free(&a), hv_free(&b), hv_free(&dy), hv_free(&alpha), hv_free(&beta);
  free(ry), free(rda), free(rdb);
  be->ops->op_free(op);
  op_release(be, &keep);
}

static void test_scale_shake(void **state) {
  dt_backend *be = *state;
  chk_begin();
  static const dt_shape shapes[] = {{2, 16, 8, 8}, {1, 17, 9, 9}, {3, 64, 4, 4}, {2, 5, 7, 3}};
  for (size_t si = 0; si < DT_ARRAY_LEN(shapes); si++)
    for (int kind = 0; kind < LAYOUT_KINDS; kind++) {
      scale_case(be, shapes[si], kind, false, 9500 + 10 * si);
      scale_case(be, shapes[si], kind, true, 9550 + 10 * si);
      shake_case(be, shapes[si], kind, 9600 + 10 * si);
    }
  chk_end();
}

static void shift_case(dt_backend *be, dt_shape s, int sy, int sx, int kind, uint64_t seed) {
  const size_t n = dt_shape_count(s);
  dt_op *keep;
  const dt_layout *l = layout_of(be, s, kind, &keep);
  dt_op *op = be->ops->shift_create(be, s, l, sy, sx);
  assert_non_null(op);
  char tag[96], name[48];
  snprintf(name, sizeof name, "shift (%d, %d)", sy, sx);
  tag_of(tag, sizeof tag, name, s, kind);
  hvec x = hv_rand(n, seed, -1, 1), dy = hv_rand(n, seed + 1, -1, 1);
  double *ry = dt_xcalloc(n, sizeof *ry), *rdx = dt_xcalloc(n, sizeof *rdx);
  ref_shift_forward(s.n, s.c, s.h, s.w, sy, sx, x.d, ry);
  ref_shift_backward(s.n, s.c, s.h, s.w, sy, sx, dy.d, rdx);
  check_unary(be, tag, op, &keep, be->ops->shift_forward, be->ops->shift_backward, s, l, s, l,
              &x, &dy, ry, rdx, seed + 2);
}

static void bias_case(dt_backend *be, dt_shape s, int kind, uint64_t seed) {
  const size_t n = dt_shape_count(s);
  dt_op *keep;
  const dt_layout *l = layout_of(be, s, kind, &keep);
  dt_op *op = be->ops->bias_create(be, s, l);
  assert_non_null(op);
  char tag[96], what[160];
  tag_of(tag, sizeof tag, "bias", s, kind);
  hvec x = hv_rand(n, seed, -1, 1), b = hv_rand((size_t)s.c, seed + 1, -1, 1);
  hvec dy = hv_rand(n, seed + 2, -1, 1), garbage = hv_rand((size_t)s.c, seed + 3, -7, 7);
  double *ry = dt_xcalloc(n, sizeof *ry), *rdb = dt_xcalloc((size_t)s.c, sizeof *rdb);
  ref_bias_forward(s.n, s.c, s.h * s.w, x.d, b.d, ry);
  ref_bias_backward(s.n, s.c, s.h * s.w, dy.d, rdb);
  dt_tensor xt = t_new(be, s, l), yt = t_garbage(be, s, l, seed + 4), dyt = t_new(be, s, l);
  t_put(be, &xt, &x), t_put(be, &dyt, &dy);
  float *bd = p_new(be, &b), *dbd = p_new(be, &garbage);
  be->ops->bias_forward(op, &xt, bd, &yt);
  chk_out(be, strcat(strcpy(what, tag), ": forward"), &yt, ry);
  be->ops->bias_forward(op, &xt, bd, &xt);
  chk_out(be, strcat(strcpy(what, tag), ": forward in place"), &xt, ry);
  be->ops->bias_backward(op, &dyt, dbd);
  chk_param(be, strcat(strcpy(what, tag), ": backward db"), dbd, rdb, (size_t)s.c);
  be->ops->free(be, bd), be->ops->free(be, dbd);
  t_free(be, &xt), t_free(be, &yt), t_free(be, &dyt);
  hv_free(&x), hv_free(&b), hv_free(&dy), hv_free(&garbage);
  free(ry), free(rdb);
  be->ops->op_free(op);
  op_release(be, &keep);
}

static void test_shift_bias(void **state) {
  dt_backend *be = *state;
  chk_begin();
  static const dt_shape shapes[] = {{2, 16, 8, 8}, {1, 17, 9, 9}, {3, 5, 4, 7}, {2, 64, 32, 32}};
  static const int shifts[][2] = {{1, 1}, {-1, 0}, {0, 2}};
  for (size_t si = 0; si < DT_ARRAY_LEN(shapes); si++)
    for (int kind = 0; kind < LAYOUT_KINDS; kind++) {
      for (size_t k = 0; k < DT_ARRAY_LEN(shifts); k++)
        shift_case(be, shapes[si], shifts[k][0], shifts[k][1], kind, 9700 + 10 * si + k);
      bias_case(be, shapes[si], kind, 9800 + 10 * si);
    }
  /* Random shapes from a fixed seed, batch 1 included. */
  dt_rng r = dt_rng_key(2025, 11, 0, 0);
  for (int i = 0; i < 6; i++) {
    const dt_shape s = {1 + (int)dt_rng_below(&r, 3), 1 + (int)dt_rng_below(&r, 40),
                        1 + (int)dt_rng_below(&r, 9), 1 + (int)dt_rng_below(&r, 9)};
    for (int kind = 0; kind < LAYOUT_KINDS; kind++) {
      bias_case(be, s, kind, 9900 + 10 * i);
      shift_case(be, s, 1, 1, kind, 9905 + 10 * i);
      shake_case(be, s, kind, 9950 + 10 * i);
      scale_case(be, s, kind, false, 9970 + 10 * i);
      dropout_case(be, s, 0.2f, kind, 9990 + 10 * i);
      sigmoid_case(be, s, kind, 9995 + 10 * i);
      pad_case(be, s, s.c + 1 + (int)dt_rng_below(&r, 20), kind, 9930 + 10 * i);
      concat_case(be, s.n, s.c, 1 + (int)dt_rng_below(&r, 20), s.h, s.w, kind, 1 - kind,
                  9940 + 10 * i);
      if (s.h >= 2 && s.w >= 2) {
        pool_case(be, s, DT_POOL_MAX, 2, 2, 0, true, kind, 9960 + 10 * i);
        pool_case(be, s, DT_POOL_AVG, 2, 2, 0, true, kind, 9965 + 10 * i);
      }
    }
  }
  chk_end();
}

/* ---- 16-bit activations are 16-bit (CPU) ---- */

/* The layout of the output of a 16 -> 16 3x3 convolution over a stem's output, in a backend
 * of the given precision, and its element count padding included (16 channels: none). */
static size_t conv_out_bytes(dt_precision precision, int *act_bytes) {
  dt_backend *be = test_backend_create(2);
  assert_non_null(be);
  if (precision != DT_PRECISION_FP32)
    assert_int_equal(be->ops->set_precision(be, precision), DT_OK);
  const dt_shape s = {2, 16, 8, 8};
  dt_op *keep;
  const dt_layout *xl = layout_of(be, s, LAYOUT_CONV, &keep), *yl = NULL;
  const dt_conv_params p = {2, 16, 8, 8, 16, 3, 3, 1, 1, 1, true};
  dt_op *op = be->ops->conv_create(be, &p, xl, &yl);
  assert_non_null(op);
  const size_t bytes = be->ops->layout_bytes(yl);
  *act_bytes = elem_bytes(yl);
  assert_int_equal(elem_bytes(xl), *act_bytes); /* the stem's output too */
  be->ops->op_free(op);
  op_release(be, &keep);
  be->ops->destroy(be);
  return bytes;
}

/* fp32 activations take 4 bytes an element; in bf16 on a CPU with bf16 instructions (oneDNN's
 * ISA avx512_core_bf16 or AMX) 2, so a convolution's output layout is half as large; where
 * bf16 is emulated, the same as fp32. fp16 is always emulated on the CPU (fp32 layouts). */
static void test_act_layouts(void **state) {
  (void)state;
  if (DT_TEST_DEVICE != DT_DEVICE_CPU) skip();
  const dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
  const bool bf16_isa = isa == dnnl_cpu_isa_avx512_core_bf16 || isa == dnnl_cpu_isa_avx512_core_amx;
  int eb32, eb16, ebh;
  const size_t b32 = conv_out_bytes(DT_PRECISION_FP32, &eb32);
  const size_t b16 = conv_out_bytes(DT_PRECISION_BF16, &eb16);
  const size_t bh = conv_out_bytes(DT_PRECISION_FP16, &ebh);
  char line[160];
  dt_cpu_compute_line(DT_PRECISION_BF16, line, sizeof line);
  print_message("  %s\n  conv output (2, 16, 8, 8): fp32 %zu bytes, bf16 %zu, fp16 %zu\n", line,
                b32, b16, bh);
  assert_int_equal(eb32, 4);
  assert_int_equal(b32, 2 * 16 * 8 * 8 * sizeof(float));
  assert_int_equal(eb16, bf16_isa ? 2 : 4);
  assert_int_equal(b16, bf16_isa ? b32 / 2 : b32);
  assert_true(strstr(line, bf16_isa ? "bf16 native" : "bf16: emulated") != NULL);
  assert_int_equal(ebh, 4);
  assert_int_equal(bh, b32);
}

int main(void) {
  /* Every op test, run once per precision (the group's setup sets it). */
#define OP_TESTS                                                                                 \
  cmocka_unit_test(test_memory), cmocka_unit_test(test_conv), cmocka_unit_test(test_bn),        \
      cmocka_unit_test(test_eltwise), cmocka_unit_test(test_gap), cmocka_unit_test(test_linear), \
      cmocka_unit_test(test_xent), cmocka_unit_test(test_chain),                                 \
      cmocka_unit_test(test_chain_rethread), cmocka_unit_test(test_pool),                        \
      cmocka_unit_test(test_concat_pad), cmocka_unit_test(test_dropout_sigmoid),                 \
      cmocka_unit_test(test_scale_shake), cmocka_unit_test(test_shift_bias)
  const struct CMUnitTest tests[] = {OP_TESTS, cmocka_unit_test(test_step_ops),
                                      cmocka_unit_test(test_optim_skip),
                                      cmocka_unit_test(test_act_layouts)};
  const struct CMUnitTest tests16[] = {OP_TESTS};
#undef OP_TESTS
  /* No CUDA backend in this build or no usable GPU: skipped. The CPU backend must exist. */
  dt_backend *probe = dt_backend_create(DT_TEST_DEVICE, 1, -1, 1);
  if (!probe) {
    printf("%s: %s: %s\n", DT_TEST_NAME, DT_TEST_DEVICE == DT_DEVICE_CUDA ? "skipped" : "failed",
           dt_error_message());
    return DT_TEST_DEVICE == DT_DEVICE_CUDA ? 77 : 1;
  }
  probe->ops->destroy(probe);
  /* A backend error is fatal to the whole binary; these select tests while debugging. */
  const char *only = getenv("DT_TEST_FILTER"), *skip = getenv("DT_TEST_SKIP");
  if (only && *only) cmocka_set_test_filter(only);
  if (skip && *skip) cmocka_set_skip_filter(skip);
  int rc = _cmocka_run_group_tests(DT_TEST_NAME, tests, DT_ARRAY_LEN(tests), setup_backend,
                                   teardown_backend);
  rc |= _cmocka_run_group_tests(DT_TEST_NAME "_bf16", tests16, DT_ARRAY_LEN(tests16), setup_bf16,
                                teardown_backend);
  rc |= _cmocka_run_group_tests(DT_TEST_NAME "_fp16", tests16, DT_ARRAY_LEN(tests16), setup_fp16,
                                teardown_backend);
  if (g_backends == 0) {
    fprintf(stderr, "%s: the op tests did not run on the backend\n", DT_TEST_NAME);
    return 1;
  }
  return rc;
}
