/* test_precision.c: the bf16 / fp16 roundings (src/precision.h) and the CPU backend's
 * reduced-precision convolutions built on them.
 *
 * Rounding, bit for bit, against two independent oracles: an exact double-precision model
 * of a binary format (significand bits, smallest quantum, largest finite; frexp / ldexp and
 * explicit ties to even), used for both formats, and for fp16 also GCC's _Float16
 * conversions (when the compiler has them). Special values, ties both ways, carries into the
 * exponent, the overflow threshold, the fp16 subnormals, the array forms (odd lengths, in
 * place, the multi-threaded path), then a few million random patterns.
 *
 * Convolutions (the emulation, which CPUs without 16-bit instructions run; forced with
 * dt_cpu_set_precision_emulated on CPUs that have them, where set_precision runs oneDNN's
 * native 16-bit kernels, tested by backend_ops.c): a backend in fp16 or bf16 must give, bit
 * for bit, what the fp32 backend gives
 * on operands rounded beforehand (the same oneDNN primitives run on the same values) with the
 * result rounded too (an accumulating forward adds the rounded result to the residual), and
 * not what it gives on the unrounded operands (so skipping a rounding fails). Forward, forward
 * accumulating onto a residual, backward data, backward weights; plain and blocked inputs,
 * stride 2, 1x1, groups, depthwise, narrow channels (on AVX-512 and AVX2 cpu_conv.c stages
 * their backward weights: rounding in its own buffers), weights used plain and reordered, and
 * a Winograd shape (AVX-512) large enough for the multi-threaded rounding. The caller's
 * operands must come back unchanged. */
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backend.h"
#include "common.h"
#include "cpu/backend_cpu.h"
#include "precision.h"
#include "rng.h"
#include "testutil.h"

/* ---- the double-precision oracle ---- */

/* A binary floating-point format: p significant bits (hidden bit included), the smallest
 * subnormal `quantum`, the largest finite value. */
typedef struct {
  const char *name;
  int p;
  double quantum;
  double max;
} fmt;

static const fmt FMT_FP16 = {"fp16", 11, 0x1p-24, 65504.0};
static const fmt FMT_BF16 = {"bf16", 8, 0x1p-133, 0x1.FEp127};

/* x rounded to the format with ties to even, in exact double arithmetic: the grid spacing at
 * |x| is 2^(e - p) for |x| in [2^(e-1), 2^e), never below the quantum (subnormals); a rounded
 * magnitude above max is infinite (IEEE overflow under round to nearest). NaN: NAN. */
static float oracle_round(const fmt *f, float xf) {
  const double x = xf;
  if (isnan(x)) return NAN;
  if (isinf(x) || x == 0) return xf;
  int e;
  (void)frexp(fabs(x), &e); /* |x| = m 2^e, m in [0.5, 1) */
  double step = ldexp(1.0, e - f->p);
  if (step < f->quantum) step = f->quantum;
  const double units = fabs(x) / step; /* exact: a power-of-two scaling */
  double whole = floor(units);
  const double frac = units - whole;
  if (frac > 0.5 || (frac == 0.5 && fmod(whole, 2.0) != 0)) whole += 1;
  const double r = whole * step;
  if (r > f->max) return x < 0 ? -INFINITY : INFINITY;
  return (float)(x < 0 ? -r : r); /* exact: r has at most p <= 24 significant bits */
}

static uint32_t bits_of(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  return u;
}

static float float_of(uint32_t u) {
  float x;
  memcpy(&x, &u, sizeof x);
  return x;
}

/* Whether got is the correct rounding `want`: the same bits, or for NaN a quiet NaN that the
 * format can hold (the dropped low bits zero). */
static bool same_rounding(const fmt *f, float got, float want) {
  if (isnan(want)) {
    const uint32_t low = f->p == 11 ? 0x1fffu : 0xffffu;
    return isnan(got) && (bits_of(got) & 0x00400000u) && (bits_of(got) & low) == 0;
  }
  return bits_of(got) == bits_of(want);
}

/* ---- checks of one value through every path ---- */

static int g_failures;

static void report(const char *what, const fmt *f, float x, float got, float want) {
  if (g_failures++ < 20)
    print_message("  FAIL %s %s(%a = 0x%08x) = %a (0x%08x), want %a (0x%08x)\n", what, f->name,
                  (double)x, bits_of(x), (double)got, bits_of(got), (double)want, bits_of(want));
}

static float lib_scalar(const fmt *f, float x) {
  return f == &FMT_FP16 ? dt_round_fp16(x) : dt_round_bf16(x);
}

static void lib_array(const fmt *f, const float *src, float *dst, size_t n) {
  if (f == &FMT_FP16) dt_round_fp16_array(src, dst, n);
  else dt_round_bf16_array(src, dst, n);
}

/* Value x through the scalar and the array forms, against the oracles. */
static void check_value(const fmt *f, float x) {
  const float want = oracle_round(f, x);
  float got = lib_scalar(f, x);
  if (!same_rounding(f, got, want)) report("scalar", f, x, got, want);
  lib_array(f, &x, &got, 1);
  if (!same_rounding(f, got, want)) report("array", f, x, got, want);
#ifdef __FLT16_MAX__
  if (f == &FMT_FP16) {
    const float gcc = (float)(_Float16)x;
    if (!same_rounding(f, gcc, want)) report("oracle vs _Float16", f, x, gcc, want);
    if (!same_rounding(f, lib_scalar(f, x), gcc)) report("vs _Float16", f, x, lib_scalar(f, x), gcc);
  }
#endif
}

/* x, -x and the floats next to both. */
static void check_around(const fmt *f, float x) {
  const float v[] = {x, nextafterf(x, INFINITY), nextafterf(x, -INFINITY)};
  for (size_t i = 0; i < DT_ARRAY_LEN(v); i++) {
    check_value(f, v[i]);
    check_value(f, -v[i]);
  }
}

/* ---- rounding: hand-picked values ---- */

/* Expected results spelt out, so that a shared mistake of the library and the oracle fails
 * too. */
static void check_exact(const fmt *f, float x, float want) {
  const float got = lib_scalar(f, x);
  if (!same_rounding(f, got, want)) report("exact", f, x, got, want);
  const float o = oracle_round(f, x);
  if (!same_rounding(f, o, want)) report("oracle exact", f, x, o, want);
}

static void test_round_special(void **state) {
  (void)state;
  g_failures = 0;

  /* fp16: ties to even both ways; 1 + 2^-10 is the float after 1. */
  check_exact(&FMT_FP16, 1.0f + 0x1p-11f, 1.0f);                   /* tie, down to even */
  check_exact(&FMT_FP16, 1.0f + 3 * 0x1p-11f, 1.0f + 0x1p-9f);     /* tie, up to even */
  check_exact(&FMT_FP16, nextafterf(1.0f + 0x1p-11f, 2), 1.0f + 0x1p-10f);
  check_exact(&FMT_FP16, 2.0f - 0x1p-12f, 2.0f);                   /* carry into the exponent */
  check_exact(&FMT_FP16, 65504.0f, 65504.0f);                      /* largest finite */
  check_exact(&FMT_FP16, 65519.99f, 65504.0f);
  check_exact(&FMT_FP16, 65520.0f, INFINITY);                      /* the tie overflows */
  check_exact(&FMT_FP16, -65520.0f, -INFINITY);
  check_exact(&FMT_FP16, 1e9f, INFINITY);
  check_exact(&FMT_FP16, FLT_MAX, INFINITY);
  check_exact(&FMT_FP16, 0x1p-14f, 0x1p-14f);                      /* smallest normal */
  check_exact(&FMT_FP16, 0x1p-14f - 0x1p-25f, 0x1p-14f);           /* tie to the even normal */
  check_exact(&FMT_FP16, 0x1p-14f - 0x1p-24f, 0x1p-14f - 0x1p-24f); /* largest subnormal */
  check_exact(&FMT_FP16, 0x1p-24f, 0x1p-24f);                      /* smallest subnormal */
  check_exact(&FMT_FP16, 0x1p-25f, 0.0f);                          /* tie to 0 */
  check_exact(&FMT_FP16, -0x1p-25f, -0.0f);
  check_exact(&FMT_FP16, nextafterf(0x1p-25f, 1), 0x1p-24f);
  check_exact(&FMT_FP16, 3 * 0x1p-25f, 2 * 0x1p-24f);              /* 1.5 quanta: up to 2 */
  check_exact(&FMT_FP16, 5 * 0x1p-25f, 2 * 0x1p-24f);              /* 2.5 quanta: down to 2 */
  check_exact(&FMT_FP16, 0x1p-30f, 0.0f);
  check_exact(&FMT_FP16, 0x1p-149f, 0.0f);                         /* fp32 subnormal */
  check_exact(&FMT_FP16, -0.0f, -0.0f);
  check_exact(&FMT_FP16, 0.0f, 0.0f);
  check_exact(&FMT_FP16, INFINITY, INFINITY);
  check_exact(&FMT_FP16, -INFINITY, -INFINITY);
  check_exact(&FMT_FP16, NAN, NAN);
  check_exact(&FMT_FP16, float_of(0x7f800001u), NAN);              /* signalling NaN */
  check_exact(&FMT_FP16, float_of(0xff800001u), NAN);
  check_exact(&FMT_FP16, 0.1f, 0.0999755859375f);
  check_exact(&FMT_FP16, -3.14159265f, -3.140625f);

  /* bf16: 1 + 2^-7 is the value after 1. */
  check_exact(&FMT_BF16, 1.0f + 0x1p-8f, 1.0f);
  check_exact(&FMT_BF16, 1.0f + 3 * 0x1p-8f, 1.0f + 0x1p-6f);
  check_exact(&FMT_BF16, nextafterf(1.0f + 0x1p-8f, 2), 1.0f + 0x1p-7f);
  check_exact(&FMT_BF16, 2.0f - 0x1p-9f, 2.0f);
  check_exact(&FMT_BF16, 0x1.FEp127f, 0x1.FEp127f);                /* largest finite */
  check_exact(&FMT_BF16, 0x1.FEFFFEp127f, 0x1.FEp127f);
  check_exact(&FMT_BF16, 0x1.FFp127f, INFINITY);                   /* the tie overflows */
  check_exact(&FMT_BF16, FLT_MAX, INFINITY);
  check_exact(&FMT_BF16, -FLT_MAX, -INFINITY);
  check_exact(&FMT_BF16, 65520.0f, 65536.0f);                      /* no fp16 limit */
  check_exact(&FMT_BF16, 0x1p-133f, 0x1p-133f);                    /* smallest subnormal */
  check_exact(&FMT_BF16, 0x1p-134f, 0.0f);                         /* tie to 0 */
  check_exact(&FMT_BF16, 3 * 0x1p-134f, 0x1p-132f);
  check_exact(&FMT_BF16, 0x1p-149f, 0.0f);
  check_exact(&FMT_BF16, -0.0f, -0.0f);
  check_exact(&FMT_BF16, INFINITY, INFINITY);
  check_exact(&FMT_BF16, -INFINITY, -INFINITY);
  check_exact(&FMT_BF16, NAN, NAN);
  check_exact(&FMT_BF16, float_of(0x7f800001u), NAN);
  check_exact(&FMT_BF16, float_of(0xffff8001u), NAN);              /* payload only in the cut */
  check_exact(&FMT_BF16, 0.1f, 0.10009765625f);
  check_exact(&FMT_BF16, -3.14159265f, -3.140625f);

  /* Both formats: every power of two in range and its neighbours, and the fp16 binades'
   * ends (the grid of the format changes there). */
  for (int e = -150; e <= 128; e++) {
    check_around(&FMT_FP16, ldexpf(1.0f, e));
    check_around(&FMT_BF16, ldexpf(1.0f, e));
    check_around(&FMT_FP16, ldexpf(1.5f, e));
    check_around(&FMT_BF16, ldexpf(1.5f, e));
  }
  const float fp16_edges[] = {65504.0f, 65519.99f, 65520.0f, 65536.0f, 0x1p-14f, 0x1p-24f,
                              0x1p-25f, 0x1.8p-25f, 0x1.FFCp-15f};
  for (size_t i = 0; i < DT_ARRAY_LEN(fp16_edges); i++) {
    check_around(&FMT_FP16, fp16_edges[i]);
    check_around(&FMT_BF16, fp16_edges[i]);
  }
  print_message("  %d failures%s\n", g_failures,
#ifdef __FLT16_MAX__
                " (with _Float16 as a second fp16 oracle)"
#else
                " (no _Float16 in this compiler: double oracle only)"
#endif
  );
  assert_int_equal(g_failures, 0);
}

/* Every tie of the format at random grid points: the midpoint between a representable value
 * and the next one (exact in fp32), and the floats on either side. */
static void test_round_ties(void **state) {
  (void)state;
  g_failures = 0;
  dt_rng r = dt_rng_key(77, 1, 0, 0);
  const fmt *fmts[] = {&FMT_FP16, &FMT_BF16};
  for (size_t fi = 0; fi < DT_ARRAY_LEN(fmts); fi++) {
    const fmt *f = fmts[fi];
    const int emin = f == &FMT_FP16 ? -26 : -135, emax = f == &FMT_FP16 ? 17 : 128;
    for (int i = 0; i < 200000; i++) {
      /* A random representable g: a p-bit significand at a random exponent. */
      const int e = emin + (int)dt_rng_below(&r, (uint64_t)(emax - emin));
      const double sig = (double)((1u << (f->p - 1)) + dt_rng_below(&r, 1u << (f->p - 1)));
      double g = oracle_round(f, (float)ldexp(sig, e - f->p + 1));
      if (isinf(g)) g = f->max;
      if (g == 0) g = f->quantum; /* below the smallest subnormal */
      double step = ldexp(1.0, (int)floor(log2(g)) - f->p + 1);
      if (step < f->quantum) step = f->quantum;
      const float mid = (float)(g + step / 2);
      check_around(f, mid);
    }
  }
  print_message("  400000 ties: %d failures\n", g_failures);
  assert_int_equal(g_failures, 0);
}

/* Random patterns through the array forms (the multi-threaded path, as convolutions call
 * them), every one compared with the oracles. */
static void test_round_random(void **state) {
  (void)state;
  g_failures = 0;
  const size_t n = (size_t)1 << 21;
  float *x = dt_xcalloc(n, sizeof *x), *y = dt_xcalloc(n, sizeof *y);
  float *z = dt_xcalloc(n, sizeof *z);
  dt_rng r = dt_rng_key(78, 2, 0, 0);
  /* Half every bit pattern (all exponents, NaNs and infinities included), half magnitudes
   * log-uniform over 2^-30 .. 2^20, the range where fp16 changes. */
  for (size_t i = 0; i < n; i++) {
    if (i % 2) x[i] = float_of((uint32_t)dt_rng_u64(&r));
    else x[i] = (float)(ldexp(1.0 + dt_rng_uniform(&r), -30 + (int)dt_rng_below(&r, 50)) *
                        (dt_rng_below(&r, 2) ? 1 : -1));
  }
  const fmt *fmts[] = {&FMT_FP16, &FMT_BF16};
  for (size_t fi = 0; fi < DT_ARRAY_LEN(fmts); fi++) {
    const fmt *f = fmts[fi];
    lib_array(f, x, y, n);
    for (size_t i = 0; i < n; i++) {
      const float want = oracle_round(f, x[i]);
      if (!same_rounding(f, y[i], want)) report("random", f, x[i], y[i], want);
#ifdef __FLT16_MAX__
      if (f == &FMT_FP16 && !same_rounding(f, y[i], (float)(_Float16)x[i]))
        report("random vs _Float16", f, x[i], y[i], (float)(_Float16)x[i]);
#endif
    }
    /* In place and at odd lengths and offsets (vector remainders): the same bits. */
    memcpy(z, x, n * sizeof *z);
    lib_array(f, z, z, n);
    if (memcmp(z, y, n * sizeof *z) != 0) report("in place", f, 0, 0, 0);
    for (size_t len = 0; len < 40; len++) {
      memset(z, 0, 64 * sizeof *z);
      lib_array(f, x + 3, z + 1, len);
      for (size_t i = 0; i < 64; i++) {
        const float want = i >= 1 && i < 1 + len ? y[i + 2] : 0.0f;
        if (bits_of(z[i]) != bits_of(want)) report("short array", f, x[i + 2], z[i], want);
      }
    }
  }
  /* dt_round_array dispatches; fp32 copies. */
  dt_round_array(DT_PRECISION_FP32, x, z, n);
  if (memcmp(z, x, n * sizeof *z) != 0) report("fp32 copy", &FMT_FP16, 0, 0, 0);
  dt_round_array(DT_PRECISION_FP16, x, z, n);
  dt_round_fp16_array(x, y, n);
  if (memcmp(z, y, n * sizeof *z) != 0) report("dispatch fp16", &FMT_FP16, 0, 0, 0);
  dt_round_array(DT_PRECISION_BF16, x, z, n);
  dt_round_bf16_array(x, y, n);
  if (memcmp(z, y, n * sizeof *z) != 0) report("dispatch bf16", &FMT_BF16, 0, 0, 0);
  print_message("  %zu random values in each format: %d failures\n", n, g_failures);
  free(x), free(y), free(z);
  assert_int_equal(g_failures, 0);
}

static void test_names(void **state) {
  (void)state;
  const dt_precision all[] = {DT_PRECISION_FP32, DT_PRECISION_BF16, DT_PRECISION_FP16};
  const char *names[] = {"fp32", "bf16", "fp16"};
  for (size_t i = 0; i < DT_ARRAY_LEN(all); i++) {
    assert_string_equal(dt_precision_name(all[i]), names[i]);
    dt_precision p = DT_PRECISION_FP32;
    assert_true(dt_precision_parse(names[i], &p));
    assert_int_equal(p, all[i]);
  }
  dt_precision p = DT_PRECISION_BF16;
  assert_false(dt_precision_parse("fp8", &p));
  assert_false(dt_precision_parse("", &p));
  assert_false(dt_precision_parse(NULL, &p));
  assert_int_equal(p, DT_PRECISION_BF16);
}

/* ---- convolutions on the CPU backend ---- */

typedef struct {
  dt_backend *fp32, *bf16, *fp16;
} backends;

static dt_backend *backend_new(dt_precision prec) {
  dt_backend *be = dt_backend_cpu_create(2);
  assert_non_null(be);
  assert_non_null(be->ops->set_precision);
  assert_int_equal(dt_cpu_set_precision_emulated(be, prec), DT_OK);
  return be;
}

static int setup_backends(void **state) {
  backends *b = dt_xcalloc(1, sizeof *b);
  b->fp32 = backend_new(DT_PRECISION_FP32);
  b->bf16 = backend_new(DT_PRECISION_BF16);
  b->fp16 = backend_new(DT_PRECISION_FP16);
  *state = b;
  return 0;
}

static int teardown_backends(void **state) {
  backends *b = *state;
  b->fp32->ops->destroy(b->fp32);
  b->bf16->ops->destroy(b->bf16);
  b->fp16->ops->destroy(b->fp16);
  free(b);
  return 0;
}

/* One convolution on one backend with its input layout: plain, or (blocked) what a stem
 * convolution writes, as in a model; the stem is kept alive with the op. */
typedef struct {
  dt_backend *be;
  dt_op *op, *stem;
  const dt_layout *xl, *yl;
} conv_on;

static conv_on conv_on_new(dt_backend *be, const dt_conv_params *p, bool blocked) {
  conv_on c = {be, NULL, NULL, NULL, NULL};
  const dt_shape xs = {p->n, p->c, p->h, p->w};
  c.xl = be->ops->layout_plain(be, xs);
  if (blocked) {
    const dt_shape image = {p->n, 3, p->h, p->w};
    const dt_conv_params sp = {p->n, 3, p->h, p->w, p->c, 3, 3, 1, 1, 1, false};
    c.stem = be->ops->conv_create(be, &sp, be->ops->layout_plain(be, image), &c.xl);
    assert_non_null(c.stem);
  }
  c.op = be->ops->conv_create(be, p, c.xl, &c.yl);
  assert_non_null(c.op);
  return c;
}

static void conv_on_free(conv_on *c) {
  c->be->ops->op_free(c->op);
  if (c->stem) c->be->ops->op_free(c->stem);
}

static dt_tensor tensor_up(dt_backend *be, dt_shape s, const dt_layout *l, const float *host) {
  dt_tensor t = {s, l, be->ops->alloc(be, be->ops->layout_bytes(l))};
  be->ops->upload(be, host, &t);
  return t;
}

static float *param_up(dt_backend *be, const float *host, size_t n) {
  float *p = be->ops->alloc(be, n * sizeof(float));
  be->ops->to_device(be, p, host, n * sizeof(float));
  return p;
}

static float *tensor_down(dt_backend *be, const dt_tensor *t) {
  float *h = dt_xcalloc(dt_shape_count(t->shape), sizeof *h);
  be->ops->download(be, t, h);
  return h;
}

static float *param_down(dt_backend *be, const float *p, size_t n) {
  float *h = dt_xcalloc(n, sizeof *h);
  be->ops->to_host(be, h, p, n * sizeof(float));
  return h;
}

/* Host operands of one case and the results of one pass set. */
typedef struct {
  float *y, *yacc, *dx, *dw;
} results;

static void results_free(results *r) { free(r->y), free(r->yacc), free(r->dx), free(r->dw); }

/* All passes of c on the given operands; y0 is the residual the accumulating forward adds
 * onto. The caller's operands must be left as they were (checked by downloading them). */
static results conv_run(conv_on *c, const dt_conv_params *p, const float *x, const float *w,
                        const float *dy, const float *y0) {
  dt_backend *be = c->be;
  const int oh = (p->h + 2 * p->pad - p->r) / p->stride + 1;
  const int ow = (p->w + 2 * p->pad - p->s) / p->stride + 1;
  const dt_shape xs = {p->n, p->c, p->h, p->w}, ys = {p->n, p->k, oh, ow};
  const size_t nx = dt_shape_count(xs), ny = dt_shape_count(ys);
  const size_t nw = (size_t)p->k * (p->c / p->groups) * p->r * p->s;
  dt_tensor xt = tensor_up(be, xs, c->xl, x), dyt = tensor_up(be, ys, c->yl, dy);
  dt_tensor yt = tensor_up(be, ys, c->yl, y0), dxt = tensor_up(be, xs, c->xl, x);
  float *wd = param_up(be, w, nw), *dwd = param_up(be, w, nw);
  results r = {0};

  be->ops->conv_forward(c->op, &xt, wd, &yt, false);
  r.y = tensor_down(be, &yt);
  be->ops->upload(be, y0, &yt);
  be->ops->conv_forward(c->op, &xt, wd, &yt, true);
  r.yacc = tensor_down(be, &yt);
  if (p->need_dx) {
    be->ops->conv_backward_data(c->op, &dyt, wd, &dxt);
    r.dx = tensor_down(be, &dxt);
  }
  be->ops->conv_backward_weights(c->op, &xt, &dyt, dwd);
  r.dw = param_down(be, dwd, nw);

  float *xb = tensor_down(be, &xt), *dyb = tensor_down(be, &dyt), *wb = param_down(be, wd, nw);
  assert_memory_equal(xb, x, nx * sizeof *x);
  assert_memory_equal(dyb, dy, ny * sizeof *dy);
  assert_memory_equal(wb, w, nw * sizeof *w);
  free(xb), free(dyb), free(wb);
  be->ops->free(be, wd), be->ops->free(be, dwd);
  be->ops->free(be, xt.data), be->ops->free(be, dyt.data);
  be->ops->free(be, yt.data), be->ops->free(be, dxt.data);
  return r;
}

static bool same_bits(const float *a, const float *b, size_t n) {
  return memcmp(a, b, n * sizeof *a) == 0;
}

static int g_conv_failures;

/* got must equal want bit for bit and differ from unrounded (the fp32 result on the original
 * operands) somewhere. */
static void conv_expect(const char *what, const char *pass, const float *got, const float *want,
                        const float *unrounded, size_t n) {
  const bool equal = same_bits(got, want, n), differs = !same_bits(got, unrounded, n);
  if (equal && differs) return;
  g_conv_failures++;
  size_t i = 0;
  while (i + 1 < n && (equal ? got[i] == unrounded[i] : bits_of(got[i]) == bits_of(want[i]))) i++;
  print_message("  FAIL %s %s: %s (element %zu: %.9g, rounded-operand fp32 %.9g, fp32 %.9g)\n",
                what, pass, equal ? "same as plain fp32" : "not the fp32 result on rounded operands",
                i, (double)got[i], (double)want[i], (double)unrounded[i]);
}

static void conv_case(backends *b, const dt_conv_params *p, bool blocked, uint64_t seed) {
  const int oh = (p->h + 2 * p->pad - p->r) / p->stride + 1;
  const int ow = (p->w + 2 * p->pad - p->s) / p->stride + 1;
  const size_t nx = (size_t)p->n * p->c * p->h * p->w, ny = (size_t)p->n * p->k * oh * ow;
  const size_t nw = (size_t)p->k * (p->c / p->groups) * p->r * p->s;
  float *x = dt_xcalloc(nx, sizeof *x), *w = dt_xcalloc(nw, sizeof *w);
  float *dy = dt_xcalloc(ny, sizeof *dy), *y0 = dt_xcalloc(ny, sizeof *y0);
  tu_fill_uniform(x, nx, seed, -1, 1);
  tu_fill_uniform(w, nw, seed + 1, -0.5f, 0.5f);
  tu_fill_uniform(dy, ny, seed + 2, -1, 1);
  tu_fill_uniform(y0, ny, seed + 3, -1, 1);
  float *xr = dt_xcalloc(nx, sizeof *xr), *wr = dt_xcalloc(nw, sizeof *wr);
  float *dyr = dt_xcalloc(ny, sizeof *dyr);

  char what[160];
  snprintf(what, sizeof what, "conv %dx%dx%dx%d k%d %dx%d s%d p%d g%d %s", p->n, p->c, p->h, p->w,
           p->k, p->r, p->s, p->stride, p->pad, p->groups, blocked ? "blocked" : "plain");

  conv_on c32 = conv_on_new(b->fp32, p, blocked);
  results plain = conv_run(&c32, p, x, w, dy, y0);
  const dt_precision precs[] = {DT_PRECISION_FP16, DT_PRECISION_BF16};
  for (size_t i = 0; i < DT_ARRAY_LEN(precs); i++) {
    dt_round_array(precs[i], x, xr, nx);
    dt_round_array(precs[i], w, wr, nw);
    dt_round_array(precs[i], dy, dyr, ny);
    conv_on cr = conv_on_new(precs[i] == DT_PRECISION_FP16 ? b->fp16 : b->bf16, p, blocked);
    results got = conv_run(&cr, p, x, w, dy, y0);
    /* What 16-bit tensor cores compute: fp32 sums of exact products of the rounded operands,
     * the result rounded once more; an accumulating forward adds that to y0 in fp32. */
    results want = conv_run(&c32, p, xr, wr, dyr, y0);
    dt_round_array(precs[i], want.y, want.y, ny);
    for (size_t j = 0; j < ny; j++) want.yacc[j] = y0[j] + want.y[j];
    if (p->need_dx) dt_round_array(precs[i], want.dx, want.dx, nx);
    dt_round_array(precs[i], want.dw, want.dw, nw);
    char label[200];
    snprintf(label, sizeof label, "%s %s", what, dt_precision_name(precs[i]));
    conv_expect(label, "forward", got.y, want.y, plain.y, ny);
    conv_expect(label, "forward accumulate", got.yacc, want.yacc, plain.yacc, ny);
    if (p->need_dx) conv_expect(label, "backward data", got.dx, want.dx, plain.dx, nx);
    conv_expect(label, "backward weights", got.dw, want.dw, plain.dw, nw);
    results_free(&got), results_free(&want);
    conv_on_free(&cr);
  }
  results_free(&plain);
  conv_on_free(&c32);
  free(x), free(w), free(dy), free(y0), free(xr), free(wr), free(dyr);
}

static void test_conv(void **state) {
  backends *b = *state;
  g_conv_failures = 0;
  static const dt_conv_params cases[] = {
      /* n   c   h   w   k  r  s  stride pad groups need_dx */
      {2, 3, 12, 12, 16, 3, 3, 1, 1, 1, false}, /* stem: no input gradient */
      {2, 16, 8, 8, 16, 3, 3, 1, 1, 1, true},
      {1, 5, 9, 9, 17, 3, 3, 2, 1, 1, true},    /* stride 2, odd channels */
      {2, 17, 7, 7, 8, 1, 1, 1, 0, 1, true},    /* 1x1 */
      {2, 16, 9, 9, 32, 1, 1, 2, 0, 1, true},   /* 1x1 stride 2 projection */
      {3, 8, 7, 7, 6, 3, 3, 1, 1, 2, true},     /* groups 2 */
      {2, 16, 8, 8, 32, 3, 3, 2, 1, 4, true},   /* groups 4, stride 2 */
      {2, 6, 7, 7, 6, 3, 3, 1, 1, 6, true},     /* depthwise */
      {2, 8, 12, 12, 8, 3, 3, 1, 1, 1, true},   /* 8 channels: staged on AVX-512 when blocked */
      {2, 4, 10, 10, 4, 3, 3, 1, 1, 1, true},   /* 4 channels: staged on AVX2 too */
      {4, 64, 16, 16, 64, 3, 3, 1, 1, 1, true}, /* Winograd on AVX-512; the threaded rounding */
  };
  for (size_t i = 0; i < DT_ARRAY_LEN(cases); i++)
    for (int blocked = 0; blocked < 2; blocked++)
      conv_case(b, &cases[i], blocked, 900 + 10 * i);
  print_message("  %zu convolutions x 2 layouts x 2 precisions: %d failures\n",
                DT_ARRAY_LEN(cases), g_conv_failures);
  assert_int_equal(g_conv_failures, 0);
}

/* What fp16 loss scaling is about: an operand beyond 65504 is infinite in fp16 (and so are
 * the outputs it reaches), finite in bf16 and fp32; values below 2^-25 vanish in fp16 only. */
static void test_conv_range(void **state) {
  backends *b = *state;
  const dt_conv_params p = {1, 2, 4, 4, 1, 1, 1, 1, 0, 1, true}; /* 1x1, 2 -> 1 channels */
  float x[32], w[2] = {1.0f, 1.0f}, dy[16], y0[16] = {0};
  for (int i = 0; i < 16; i++) {
    x[i] = 0.5f;
    x[16 + i] = 1e-8f; /* channel 1: below half of fp16's smallest subnormal */
    dy[i] = 1.0f;
  }
  x[5] = 70000.0f;
  dt_backend *bes[] = {b->fp32, b->bf16, b->fp16};
  for (size_t i = 0; i < DT_ARRAY_LEN(bes); i++) {
    conv_on c = conv_on_new(bes[i], &p, false);
    results r = conv_run(&c, &p, x, w, dy, y0);
    const bool fp16 = bes[i] == b->fp16;
    assert_int_equal(isinf(r.y[5]) != 0, fp16);
    assert_true(isfinite(r.y[4]));
    assert_int_equal(isinf(r.dw[0]) != 0, fp16); /* sum over pixels of x channel 0 */
    assert_int_equal(r.dw[1] == 0.0f, fp16);     /* sum of the tiny channel */
    results_free(&r);
    conv_on_free(&c);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_special),
      cmocka_unit_test(test_round_ties),
      cmocka_unit_test(test_round_random),
      cmocka_unit_test(test_names),
      cmocka_unit_test_setup_teardown(test_conv, setup_backends, teardown_backends),
      cmocka_unit_test_setup_teardown(test_conv_range, setup_backends, teardown_backends),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
