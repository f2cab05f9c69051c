/* test_ref_grad.c: finite-difference checks of every backward pass of the reference ops
 * (tests/ref/ref_ops.c) against its own forward pass, plus a few identities that tie the
 * forward passes to independent formulas. The reference is the oracle for every backend, so
 * it must be right on its own terms first.
 *
 * Each check draws a random output weighting g and differentiates the scalar objective
 * L = sum(y * g) by central differences in double precision, comparing with the analytic
 * gradient by the relative error in norm |numeric - analytic| / |analytic|. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <cmocka.h>

#include "common.h"
#include "ref/ref_ops.h"
#include "rng.h"
#include "testutil.h"

#define FD_STEP 1e-6
#define FD_TOL 1e-6
#define KINK_MARGIN 1e-4 /* no ReLU input may lie this close to 0 */

static double *dvec(size_t count) { return calloc(count ? count : 1, sizeof(double)); }

/* Uniform values in [lo, hi) from the stream keyed by seed. */
static void dfill(double *x, size_t count, uint64_t seed, double lo, double hi) {
  dt_rng r = dt_rng_key(seed, 7, 0, 0);
  for (size_t i = 0; i < count; i++) x[i] = lo + (hi - lo) * dt_rng_uniform(&r);
}

static double ddot(const double *a, const double *b, size_t count) {
  double s = 0;
  for (size_t i = 0; i < count; i++) s += a[i] * b[i];
  return s;
}

typedef double (*objective_fn)(void *ctx);

/* Relative error between `grad` and the central-difference gradient of f with respect to
 * every element of param (count values); param is restored afterwards. */
static double fd_rel_err(objective_fn f, void *ctx, double *param, size_t count,
                         const double *grad) {
  double *num = dvec(count);
  for (size_t i = 0; i < count; i++) {
    const double keep = param[i];
    param[i] = keep + FD_STEP;
    const double fp = f(ctx);
    param[i] = keep - FD_STEP;
    const double fm = f(ctx);
    param[i] = keep;
    num[i] = (fp - fm) / (2 * FD_STEP);
  }
  double err = tu_rel_err_d(num, grad, count);
  free(num);
  return err;
}

static void expect_small(const char *what, double err) {
  print_message("  %-44s rel err %.2e\n", what, err);
  assert_true(err < FD_TOL);
}

/* ---- convolution ---- */

typedef struct {
  ref_conv p;
  double *x, *w, *y, *g;
} conv_ctx;

static double conv_objective(void *ctx) {
  conv_ctx *c = ctx;
  ref_conv_forward(&c->p, c->x, c->w, c->y);
  return ddot(c->y, c->g, ref_conv_y_count(&c->p));
}

static void test_conv_grad(void **state) {
  (void)state;
  static const ref_conv cases[] = {
      /* n  c  h  w   k  r  s  stride pad groups */
      {2, 3, 5, 5, 4, 3, 3, 1, 1, 1},  /* 3x3 same padding */
      {1, 3, 7, 7, 5, 3, 3, 2, 1, 1},  /* stride 2, batch 1, odd size */
      {2, 4, 6, 6, 3, 3, 3, 2, 0, 1},  /* stride 2, pad 0 */
      {2, 5, 4, 4, 6, 1, 1, 1, 0, 1},  /* 1x1 */
      {2, 4, 7, 7, 6, 1, 1, 2, 0, 1},  /* 1x1 stride 2 (projection shortcut) */
      {2, 4, 5, 5, 6, 3, 3, 1, 1, 2},  /* groups 2 */
      {1, 6, 5, 5, 6, 3, 3, 2, 1, 3},  /* groups 3, stride 2 */
      {1, 2, 7, 5, 3, 3, 2, 1, 0, 1},  /* non-square input and kernel, pad 0 */
      {1, 2, 6, 6, 2, 5, 5, 1, 2, 1},  /* 5x5 pad 2 */
  };
  for (size_t ci = 0; ci < DT_ARRAY_LEN(cases); ci++) {
    conv_ctx c = {.p = cases[ci]};
    const size_t nx = ref_conv_x_count(&c.p), nw = ref_conv_w_count(&c.p),
                 ny = ref_conv_y_count(&c.p);
    c.x = dvec(nx), c.w = dvec(nw), c.y = dvec(ny), c.g = dvec(ny);
    double *dx = dvec(nx), *dw = dvec(nw);
    dfill(c.x, nx, 100 + ci, -1, 1);
    dfill(c.w, nw, 200 + ci, -1, 1);
    dfill(c.g, ny, 300 + ci, -1, 1);
    ref_conv_backward_data(&c.p, c.g, c.w, dx);
    ref_conv_backward_weights(&c.p, c.x, c.g, dw);
    char what[96];
    const ref_conv *p = &c.p;
    snprintf(what, sizeof what, "conv %dx%dx%dx%d k%d %dx%d s%d p%d g%d dx", p->n, p->c, p->h,
             p->w, p->k, p->r, p->s, p->stride, p->pad, p->groups);
    expect_small(what, fd_rel_err(conv_objective, &c, c.x, nx, dx));
    what[strlen(what) - 2] = 0;
    strcat(what, "dw");
    expect_small(what, fd_rel_err(conv_objective, &c, c.w, nw, dw));
    free(c.x), free(c.w), free(c.y), free(c.g), free(dx), free(dw);
  }
}

/* ---- batch normalisation (training mode, batch statistics) ---- */

typedef struct {
  int n, c, hw;
  bool relu;
  double eps;
  double *x, *gamma, *beta, *y, *g;
} bn_ctx;

static double bn_objective(void *ctx) {
  bn_ctx *b = ctx;
  ref_bn_forward_train(b->n, b->c, b->hw, b->x, b->gamma, b->beta, b->eps, b->relu, b->y, NULL,
                       NULL, NULL, NULL, 0);
  return ddot(b->y, b->g, (size_t)b->n * b->c * b->hw);
}

/* Smallest |gamma xhat + beta| over all elements: the distance of the ReLU input from its
 * kink. */
static double bn_kink_distance(const bn_ctx *b) {
  const size_t count = (size_t)b->n * b->c * b->hw;
  double *pre = dvec(count);
  ref_bn_forward_train(b->n, b->c, b->hw, b->x, b->gamma, b->beta, b->eps, false, pre, NULL,
                       NULL, NULL, NULL, 0);
  double d = INFINITY;
  for (size_t i = 0; i < count; i++) d = fmin(d, fabs(pre[i]));
  free(pre);
  return d;
}

static void test_bn_grad(void **state) {
  (void)state;
  static const struct { int n, c, h, w; } shapes[] = {
      {2, 3, 3, 3}, {1, 4, 5, 5}, {4, 2, 1, 1}, {3, 5, 2, 3},
  };
  for (size_t si = 0; si < DT_ARRAY_LEN(shapes); si++)
    for (int relu = 0; relu <= 1; relu++) {
      bn_ctx b = {.n = shapes[si].n, .c = shapes[si].c, .hw = shapes[si].h * shapes[si].w,
                  .relu = relu, .eps = 1e-5};
      const size_t count = (size_t)b.n * b.c * b.hw;
      b.x = dvec(count), b.y = dvec(count), b.g = dvec(count);
      b.gamma = dvec(b.c), b.beta = dvec(b.c);
      /* Redraw until no ReLU input sits within the finite-difference reach of its kink. */
      uint64_t seed = 1000 + 10 * si;
      int tries = 0;
      do {
        seed++;
        dfill(b.x, count, seed, -2, 2);
        dfill(b.gamma, b.c, seed + 500, 0.5, 1.5);
        dfill(b.beta, b.c, seed + 600, -0.5, 0.5);
        assert_true(++tries < 200);
      } while (relu && bn_kink_distance(&b) < KINK_MARGIN);
      dfill(b.g, count, seed + 700, -1, 1);

      double *mean = dvec(b.c), *var = dvec(b.c), *dx = dvec(count);
      double *dgamma = dvec(b.c), *dbeta = dvec(b.c);
      ref_bn_forward_train(b.n, b.c, b.hw, b.x, b.gamma, b.beta, b.eps, b.relu, b.y, mean, var,
                           NULL, NULL, 0);
      ref_bn_backward(b.n, b.c, b.hw, b.x, b.g, b.gamma, mean, var, b.eps, b.relu, b.y, dx,
                      dgamma, dbeta);
      char what[96];
      snprintf(what, sizeof what, "bn%s %dx%dx%dx%d", relu ? "+relu" : "", b.n, b.c,
               shapes[si].h, shapes[si].w);
      const size_t len = strlen(what);
      strcpy(what + len, " dx");
      expect_small(what, fd_rel_err(bn_objective, &b, b.x, count, dx));
      strcpy(what + len, " dgamma");
      expect_small(what, fd_rel_err(bn_objective, &b, b.gamma, b.c, dgamma));
      strcpy(what + len, " dbeta");
      expect_small(what, fd_rel_err(bn_objective, &b, b.beta, b.c, dbeta));
      free(b.x), free(b.y), free(b.g), free(b.gamma), free(b.beta);
      free(mean), free(var), free(dx), free(dgamma), free(dbeta);
    }
}

/* The training forward against closed forms: each channel of the output has mean beta and
 * variance gamma^2 var / (var + eps); saved statistics and the running update follow
 * PyTorch (unbiased variance in running_var); inference with the batch statistics as
 * running statistics reproduces the training output. */
static void test_bn_stats(void **state) {
  (void)state;
  const int n = 3, c = 4, hw = 10;
  const double eps = 1e-5, momentum = 0.1, m = (double)n * hw;
  const size_t count = (size_t)n * c * hw;
  double *x = dvec(count), *y = dvec(count), *y2 = dvec(count);
  double gamma[4], beta[4], mean[4], var[4], rmean[4], rvar[4], rmean0[4], rvar0[4];
  dfill(x, count, 41, -3, 5);
  dfill(gamma, c, 42, 0.5, 2);
  dfill(beta, c, 43, -1, 1);
  dfill(rmean0, c, 44, -1, 1);
  dfill(rvar0, c, 45, 0.5, 2);
  memcpy(rmean, rmean0, sizeof rmean);
  memcpy(rvar, rvar0, sizeof rvar);
  ref_bn_forward_train(n, c, hw, x, gamma, beta, eps, false, y, mean, var, rmean, rvar, momentum);
  for (int ch = 0; ch < c; ch++) {
    /* Two-pass statistics of channel ch, written independently of ref_ops.c. */
    double s = 0, ss = 0, ys = 0, yss = 0;
    for (int i = 0; i < n; i++)
      for (int j = 0; j < hw; j++) s += x[((size_t)i * c + ch) * hw + j];
    const double mu = s / m;
    for (int i = 0; i < n; i++)
      for (int j = 0; j < hw; j++) {
        const size_t at = ((size_t)i * c + ch) * hw + j;
        ss += (x[at] - mu) * (x[at] - mu);
        ys += y[at];
      }
    const double v = ss / m, ymu = ys / m;
    for (int i = 0; i < n; i++)
      for (int j = 0; j < hw; j++) {
        const double d = y[((size_t)i * c + ch) * hw + j] - ymu;
        yss += d * d;
      }
    assert_true(fabs(mean[ch] - mu) < 1e-12);
    assert_true(fabs(var[ch] - v) < 1e-12);
    assert_true(fabs(ymu - beta[ch]) < 1e-12);
    assert_true(fabs(yss / m - gamma[ch] * gamma[ch] * v / (v + eps)) < 1e-10);
    assert_true(fabs(rmean[ch] - (0.9 * rmean0[ch] + 0.1 * mu)) < 1e-12);
    assert_true(fabs(rvar[ch] - (0.9 * rvar0[ch] + 0.1 * ss / (m - 1))) < 1e-12);
  }
  ref_bn_forward_infer(n, c, hw, x, gamma, beta, mean, var, eps, false, y2);
  assert_true(tu_rel_err_d(y2, y, count) < 1e-14);
  /* The fused ReLU is relu applied to the plain output. */
  ref_bn_forward_train(n, c, hw, x, gamma, beta, eps, true, y2, NULL, NULL, NULL, NULL, 0);
  ref_relu_forward(count, y, y);
  assert_true(tu_rel_err_d(y2, y, count) < 1e-14);
  free(x), free(y), free(y2);
}

/* ---- elementwise ---- */

typedef struct {
  size_t count;
  double *a, *b, *y, *g;
} elt_ctx;

static double relu_objective(void *ctx) {
  elt_ctx *e = ctx;
  ref_relu_forward(e->count, e->a, e->y);
  return ddot(e->y, e->g, e->count);
}

static double add_objective(void *ctx) {
  elt_ctx *e = ctx;
  ref_add(e->count, e->a, e->b, e->y);
  return ddot(e->y, e->g, e->count);
}

static void test_eltwise_grad(void **state) {
  (void)state;
  elt_ctx e = {.count = 2 * 3 * 5 * 5};
  e.a = dvec(e.count), e.b = dvec(e.count), e.y = dvec(e.count), e.g = dvec(e.count);
  double *da = dvec(e.count);
  dfill(e.a, e.count, 51, -1, 1);
  dfill(e.b, e.count, 52, -1, 1);
  dfill(e.g, e.count, 53, -1, 1);
  for (size_t i = 0; i < e.count; i++) /* keep every input off the kink */
    if (fabs(e.a[i]) < KINK_MARGIN) e.a[i] = e.a[i] < 0 ? -0.5 : 0.5;
  ref_relu_forward(e.count, e.a, e.y);
  ref_relu_backward(e.count, e.y, e.g, da);
  expect_small("relu 2x3x5x5 dx", fd_rel_err(relu_objective, &e, e.a, e.count, da));
  /* y = a + b passes g to both inputs. */
  expect_small("add 2x3x5x5 da", fd_rel_err(add_objective, &e, e.a, e.count, e.g));
  expect_small("add 2x3x5x5 db", fd_rel_err(add_objective, &e, e.b, e.count, e.g));
  free(e.a), free(e.b), free(e.y), free(e.g), free(da);
}

/* ---- global average pooling ---- */

typedef struct {
  int n, c, hw;
  double *x, *y, *g;
} gap_ctx;

static double gap_objective(void *ctx) {
  gap_ctx *p = ctx;
  ref_gap_forward(p->n, p->c, p->hw, p->x, p->y);
  return ddot(p->y, p->g, (size_t)p->n * p->c);
}

static void test_gap_grad(void **state) {
  (void)state;
  gap_ctx p = {.n = 3, .c = 5, .hw = 7 * 7};
  const size_t nx = (size_t)p.n * p.c * p.hw, ny = (size_t)p.n * p.c;
  p.x = dvec(nx), p.y = dvec(ny), p.g = dvec(ny);
  double *dx = dvec(nx);
  dfill(p.x, nx, 61, -1, 1);
  dfill(p.g, ny, 62, -1, 1);
  ref_gap_backward(p.n, p.c, p.hw, p.g, dx);
  expect_small("gap 3x5x7x7 dx", fd_rel_err(gap_objective, &p, p.x, nx, dx));
  free(p.x), free(p.y), free(p.g), free(dx);
}

/* ---- linear ---- */

typedef struct {
  int n, c, k;
  double *x, *w, *b, *y, *g;
} lin_ctx;

static double lin_objective(void *ctx) {
  lin_ctx *l = ctx;
  ref_linear_forward(l->n, l->c, l->k, l->x, l->w, l->b, l->y);
  return ddot(l->y, l->g, (size_t)l->n * l->k);
}

static void test_linear_grad(void **state) {
  (void)state;
  lin_ctx l = {.n = 3, .c = 7, .k = 5};
  const size_t nx = (size_t)l.n * l.c, nw = (size_t)l.k * l.c, ny = (size_t)l.n * l.k;
  l.x = dvec(nx), l.w = dvec(nw), l.b = dvec(l.k), l.y = dvec(ny), l.g = dvec(ny);
  double *dx = dvec(nx), *dw = dvec(nw), *db = dvec(l.k), *dw2 = dvec(nw), *db2 = dvec(l.k);
  dfill(l.x, nx, 71, -1, 1);
  dfill(l.w, nw, 72, -1, 1);
  dfill(l.b, l.k, 73, -1, 1);
  dfill(l.g, ny, 74, -1, 1);
  ref_linear_backward(l.n, l.c, l.k, l.x, l.g, l.w, dx, dw, db);
  expect_small("linear 3x7 -> 5 dx", fd_rel_err(lin_objective, &l, l.x, nx, dx));
  expect_small("linear 3x7 -> 5 dw", fd_rel_err(lin_objective, &l, l.w, nw, dw));
  expect_small("linear 3x7 -> 5 db", fd_rel_err(lin_objective, &l, l.b, l.k, db));
  /* Without dx the weight gradients are unchanged. */
  ref_linear_backward(l.n, l.c, l.k, l.x, l.g, l.w, NULL, dw2, db2);
  assert_true(tu_rel_err_d(dw2, dw, nw) == 0 && tu_rel_err_d(db2, db, l.k) == 0);
  free(l.x), free(l.w), free(l.b), free(l.y), free(l.g);
  free(dx), free(dw), free(db), free(dw2), free(db2);
}

/* ---- soft-target cross-entropy ---- */

typedef struct {
  int n, k;
  double scale;
  double *z, *t, *loss;
} xent_ctx;

static double xent_objective(void *ctx) {
  xent_ctx *x = ctx;
  ref_xent(x->n, x->k, x->z, x->t, x->scale, x->loss, NULL);
  double s = 0;
  for (int i = 0; i < x->n; i++) s += x->loss[i];
  return x->scale * s;
}

static void test_xent_grad(void **state) {
  (void)state;
  xent_ctx x = {.n = 4, .k = 7, .scale = 0.37};
  const size_t nz = (size_t)x.n * x.k;
  x.z = dvec(nz), x.t = dvec(nz), x.loss = dvec(x.n);
  double *dz = dvec(nz);
  dfill(x.z, nz, 81, -4, 4);
  dfill(x.t, nz, 82, 0, 1);
  for (int i = 0; i < x.n; i++) { /* soft targets: rows normalised to sum to 1 */
    double s = 0;
    for (int j = 0; j < x.k; j++) s += x.t[(size_t)i * x.k + j];
    for (int j = 0; j < x.k; j++) x.t[(size_t)i * x.k + j] /= s;
  }
  ref_xent(x.n, x.k, x.z, x.t, x.scale, x.loss, dz);
  expect_small("xent 4x7 dlogits", fd_rel_err(xent_objective, &x, x.z, nz, dz));

  /* One-hot target on class j: loss = log sum exp(z) - z_j, computed here directly. */
  for (int i = 0; i < x.n; i++) {
    const int j = (3 * i + 1) % x.k;
    double se = 0;
    for (int q = 0; q < x.k; q++) {
      x.t[(size_t)i * x.k + q] = q == j ? 1 : 0;
      se += exp(x.z[(size_t)i * x.k + q]);
    }
    x.loss[i] = log(se) - x.z[(size_t)i * x.k + j];
  }
  double *loss = dvec(x.n);
  ref_xent(x.n, x.k, x.z, x.t, 1.0, loss, dz);
  assert_true(tu_rel_err_d(loss, x.loss, x.n) < 1e-13);
  /* Shifting the logits of a row leaves its loss unchanged (and must not overflow). */
  for (size_t i = 0; i < nz; i++) x.z[i] += 800;
  ref_xent(x.n, x.k, x.z, x.t, 1.0, loss, dz);
  assert_true(tu_rel_err_d(loss, x.loss, x.n) < 1e-10);
  free(x.z), free(x.t), free(x.loss), free(dz), free(loss);
}

/* ---- forward identities: conv against independent formulas ---- */

/* A 1x1 stride-1 convolution is a linear layer applied at each pixel, and a grouped
 * convolution is G independent convolutions on channel slices. */
static void test_conv_identities(void **state) {
  (void)state;
  {
    const ref_conv p = {2, 5, 3, 4, 6, 1, 1, 1, 0, 1};
    const int hw = p.h * p.w;
    double *x = dvec(ref_conv_x_count(&p)), *w = dvec(ref_conv_w_count(&p));
    double *y = dvec(ref_conv_y_count(&p)), *y2 = dvec(ref_conv_y_count(&p));
    double *pix = dvec(p.c), *out = dvec(p.k), *zero = dvec(p.k);
    dfill(x, ref_conv_x_count(&p), 91, -1, 1);
    dfill(w, ref_conv_w_count(&p), 92, -1, 1);
    ref_conv_forward(&p, x, w, y);
    for (int n = 0; n < p.n; n++)
      for (int j = 0; j < hw; j++) {
        for (int ch = 0; ch < p.c; ch++) pix[ch] = x[((size_t)n * p.c + ch) * hw + j];
        ref_linear_forward(1, p.c, p.k, pix, w, zero, out);
        for (int k = 0; k < p.k; k++) y2[((size_t)n * p.k + k) * hw + j] = out[k];
      }
    assert_true(tu_rel_err_d(y2, y, ref_conv_y_count(&p)) < 1e-14);
    free(x), free(w), free(y), free(y2), free(pix), free(out), free(zero);
  }
  {
    const ref_conv p = {2, 6, 5, 5, 4, 3, 3, 2, 1, 2};
    const ref_conv q = {p.n, p.c / 2, p.h, p.w, p.k / 2, p.r, p.s, p.stride, p.pad, 1};
    const size_t nyq = ref_conv_y_count(&q), nxq = ref_conv_x_count(&q);
    const size_t per_n_x = nxq / q.n, per_n_y = nyq / q.n, nwq = ref_conv_w_count(&q);
    double *x = dvec(ref_conv_x_count(&p)), *w = dvec(ref_conv_w_count(&p));
    double *y = dvec(ref_conv_y_count(&p)), *y2 = dvec(ref_conv_y_count(&p));
    double *xq = dvec(nxq), *yq = dvec(nyq);
    dfill(x, ref_conv_x_count(&p), 93, -1, 1);
    dfill(w, ref_conv_w_count(&p), 94, -1, 1);
    ref_conv_forward(&p, x, w, y);
    for (int g = 0; g < 2; g++) {
      for (int n = 0; n < p.n; n++) /* channel slice g of every sample */
        memcpy(xq + n * per_n_x, x + (size_t)n * 2 * per_n_x + g * per_n_x,
               per_n_x * sizeof *x);
      ref_conv_forward(&q, xq, w + g * nwq, yq);
      for (int n = 0; n < p.n; n++)
        memcpy(y2 + (size_t)n * 2 * per_n_y + g * per_n_y, yq + n * per_n_y,
               per_n_y * sizeof *y);
    }
    assert_true(tu_rel_err_d(y2, y, ref_conv_y_count(&p)) < 1e-14);
    free(x), free(w), free(y), free(y2), free(xq), free(yq);
  }
}

/* ---- ops of the other families (docs/reference-experiments.md "Models") ---- */

/* One context for the smaller ops: inputs x (and x2), output y, its weighting g, and the
 * settings of whichever op `fwd` runs. */
typedef struct op_ctx op_ctx;
struct op_ctx {
  int n, c, h, w;     /* shape of x */
  int k, stride, pad; /* pooling window */
  bool max, incl_pad; /* pooling kind, count_include_pad */
  int c2;             /* concat: channels of x2; pad_channels: c_out */
  int sy, sx;         /* shift */
  double p;           /* dropout */
  uint64_t keys[4];   /* dropout: per-sample keys */
  double *x, *x2, *y, *g;
  size_t ny;
  void (*fwd)(op_ctx *o);
};

static double op_objective(void *ctx) {
  op_ctx *o = ctx;
  o->fwd(o);
  return ddot(o->y, o->g, o->ny);
}

static size_t op_nx(const op_ctx *o) { return (size_t)o->n * o->c * o->h * o->w; }

/* Values spread over [-1, 1) at least 2 / count apart (a permutation of a grid), so that no
 * two entries of a max-pooling window are within a finite-difference step of a tie. */
static void distinct_fill(double *x, size_t count, size_t mult) {
  for (size_t i = 0; i < count; i++) x[i] = -1.0 + 2.0 * (double)((i * mult) % count) / count;
}

static void pool_fwd(op_ctx *o) {
  ref_pool_forward(o->n, o->c, o->h, o->w, o->max, o->k, o->stride, o->pad, o->incl_pad, o->x,
                   o->y);
}

static void test_pool_grad(void **state) {
  (void)state;
  static const struct {
    int n, c, h, w, k, stride, pad;
    bool max, incl_pad;
  } cases[] = {
      {2, 3, 6, 6, 2, 2, 0, true, true},   /* VGG max 2x2/2 */
      {1, 2, 7, 7, 3, 2, 1, true, true},   /* ImageNet stem max 3x3/2 pad 1, odd size */
      {2, 3, 5, 5, 2, 2, 0, true, true},   /* odd size: the last row / column is dropped */
      {2, 3, 6, 6, 2, 2, 0, false, true},  /* DenseNet / PyramidNet avg 2x2/2 */
      {2, 2, 7, 5, 1, 2, 0, false, true},  /* shake-shake avg 1x1/2 (subsampling) */
      {1, 2, 5, 5, 3, 1, 1, false, true},  /* avg with padding counted */
      {1, 2, 5, 5, 3, 1, 1, false, false}, /* avg with padding excluded */
  };
  for (size_t ci = 0; ci < DT_ARRAY_LEN(cases); ci++) {
    op_ctx o = {.n = cases[ci].n, .c = cases[ci].c, .h = cases[ci].h, .w = cases[ci].w,
                .k = cases[ci].k, .stride = cases[ci].stride, .pad = cases[ci].pad,
                .max = cases[ci].max, .incl_pad = cases[ci].incl_pad, .fwd = pool_fwd};
    const int P = ref_pool_out(o.h, o.k, o.stride, o.pad),
              Q = ref_pool_out(o.w, o.k, o.stride, o.pad);
    const size_t nx = op_nx(&o);
    o.ny = (size_t)o.n * o.c * P * Q;
    o.x = dvec(nx), o.y = dvec(o.ny), o.g = dvec(o.ny);
    double *dx = dvec(nx);
    distinct_fill(o.x, nx, 37);
    dfill(o.g, o.ny, 400 + ci, -1, 1);
    ref_pool_backward(o.n, o.c, o.h, o.w, o.max, o.k, o.stride, o.pad, o.incl_pad, o.x, o.g, dx);
    char what[96];
    snprintf(what, sizeof what, "%s pool %dx%dx%dx%d %d/%d p%d%s dx", o.max ? "max" : "avg", o.n,
             o.c, o.h, o.w, o.k, o.stride, o.pad, o.max || o.incl_pad ? "" : " excl");
    expect_small(what, fd_rel_err(op_objective, &o, o.x, nx, dx));
    free(o.x), free(o.y), free(o.g), free(dx);
  }
  /* Independent formulas: a 1x1 stride-2 average takes every other pixel; a 2x2/2 max over a
   * row-major ramp is the bottom-right element of each window. */
  {
    const int h = 7, w = 5, P = ref_pool_out(h, 1, 2, 0), Q = ref_pool_out(w, 1, 2, 0);
    double *x = dvec((size_t)2 * h * w), *y = dvec((size_t)2 * P * Q);
    dfill(x, (size_t)2 * h * w, 410, -1, 1);
    ref_pool_forward(1, 2, h, w, false, 1, 2, 0, true, x, y);
    for (int c = 0; c < 2; c++)
      for (int i = 0; i < P; i++)
        for (int j = 0; j < Q; j++)
          assert_true(y[(c * P + i) * Q + j] == x[(c * h + 2 * i) * w + 2 * j]);
    for (int i = 0; i < h * w; i++) x[i] = i;
    ref_pool_forward(1, 1, h, w, true, 2, 2, 0, true, x, y);
    for (int i = 0; i < h / 2; i++)
      for (int j = 0; j < w / 2; j++)
        assert_true(y[i * (w / 2) + j] == (2 * i + 1) * w + 2 * j + 1);
    free(x), free(y);
  }
}

static void concat_fwd(op_ctx *o) {
  ref_concat_forward(o->n, o->c, o->c2, o->h * o->w, o->x, o->x2, o->y);
}

static void pad_fwd(op_ctx *o) {
  ref_pad_channels_forward(o->n, o->c, o->c2, o->h * o->w, o->x, o->y);
}

static void test_concat_pad_grad(void **state) {
  (void)state;
  op_ctx o = {.n = 2, .c = 3, .h = 4, .w = 5, .c2 = 5, .fwd = concat_fwd};
  const int hw = o.h * o.w;
  const size_t na = op_nx(&o), nb = (size_t)o.n * o.c2 * hw;
  o.ny = na + nb;
  o.x = dvec(na), o.x2 = dvec(nb), o.y = dvec(o.ny), o.g = dvec(o.ny);
  double *da = dvec(na), *db = dvec(nb);
  dfill(o.x, na, 421, -1, 1);
  dfill(o.x2, nb, 422, -1, 1);
  dfill(o.g, o.ny, 423, -1, 1);
  ref_concat_backward(o.n, o.c, o.c2, hw, o.g, da, db);
  expect_small("concat 2x(3+5)x4x5 da", fd_rel_err(op_objective, &o, o.x, na, da));
  expect_small("concat 2x(3+5)x4x5 db", fd_rel_err(op_objective, &o, o.x2, nb, db));
  /* Channel ch of sample i of y is channel ch of a, or channel ch - Ca of b. */
  concat_fwd(&o);
  assert_true(o.y[(size_t)(1 * 8 + 2) * hw + 3] == o.x[(size_t)(1 * 3 + 2) * hw + 3]);
  assert_true(o.y[(size_t)(1 * 8 + 6) * hw + 3] == o.x2[(size_t)(1 * 5 + 3) * hw + 3]);

  o.fwd = pad_fwd;
  o.c2 = 7; /* c_out */
  o.ny = (size_t)o.n * o.c2 * hw;
  double *dx = dvec(na);
  free(o.g);
  o.g = dvec(o.ny);
  dfill(o.g, o.ny, 424, -1, 1);
  ref_pad_channels_backward(o.n, o.c, o.c2, hw, o.g, dx);
  expect_small("pad_channels 2x3->7x4x5 dx", fd_rel_err(op_objective, &o, o.x, na, dx));
  pad_fwd(&o);
  for (int ch = o.c; ch < o.c2; ch++) assert_true(o.y[(size_t)(1 * 7 + ch) * hw + 2] == 0);
  free(o.x), free(o.x2), free(o.y), free(o.g), free(da), free(db), free(dx);
}

static void dropout_fwd(op_ctx *o) {
  ref_dropout_forward(o->n, o->c, o->h * o->w, o->p, o->keys, o->x, o->y);
}

static void test_dropout_grad(void **state) {
  (void)state;
  op_ctx o = {.n = 3, .c = 4, .h = 5, .w = 5, .p = 0.3, .keys = {11, 12, 13}, .fwd = dropout_fwd};
  const size_t nx = op_nx(&o);
  o.ny = nx;
  o.x = dvec(nx), o.y = dvec(nx), o.g = dvec(nx);
  double *dx = dvec(nx);
  dfill(o.x, nx, 431, -1, 1);
  dfill(o.g, nx, 432, -1, 1);
  ref_dropout_backward(o.n, o.c, o.h * o.w, o.p, o.keys, o.g, dx);
  expect_small("dropout p0.3 3x4x5x5 dx", fd_rel_err(op_objective, &o, o.x, nx, dx));
  free(o.x), free(o.y), free(o.g), free(dx);

  /* The mask: kept fraction near 1 - p, survivors scaled by 1 / (1 - p) (the mean is kept),
   * independent across keys, and a pure function of (key, element). */
  const int c = 16, hw = 32 * 32;
  const size_t count = (size_t)c * hw;
  const double p = 0.25;
  const uint64_t k1[1] = {0x1234}, k2[1] = {0x1235};
  double *ones = dvec(count), *m1 = dvec(count), *m2 = dvec(count), *m1b = dvec(count);
  for (size_t i = 0; i < count; i++) ones[i] = 1;
  ref_dropout_forward(1, c, hw, p, k1, ones, m1);
  ref_dropout_forward(1, c, hw, p, k2, ones, m2);
  ref_dropout_forward(1, c, hw, p, k1, ones, m1b);
  size_t kept = 0, both = 0;
  double mean = 0;
  for (size_t i = 0; i < count; i++) {
    kept += m1[i] != 0;
    both += m1[i] != 0 && m2[i] != 0;
    mean += m1[i];
    assert_true(m1[i] == 0 || fabs(m1[i] - 1 / (1 - p)) < 1e-15);
    assert_true(m1[i] == m1b[i]);
  }
  const double f = (double)kept / count, fb = (double)both / count;
  print_message("  dropout p=%.2f: kept %.4f, kept by two keys %.4f, mean %.4f\n", p, f, fb,
                mean / count);
  /* 16384 Bernoulli draws: the standard deviation of the fraction is 0.0034. */
  assert_true(fabs(f - (1 - p)) < 0.015);
  assert_true(fabs(fb - (1 - p) * (1 - p)) < 0.015);
  assert_true(fabs(mean / count - 1) < 0.02);
  free(ones), free(m1), free(m2), free(m1b);
}

static void sigmoid_fwd(op_ctx *o) { ref_sigmoid_forward(o->ny, o->x, o->y); }

static void scale_fwd(op_ctx *o) { ref_scale_forward(o->n, o->c, o->h * o->w, o->x, o->x2, o->y); }

static void test_sigmoid_scale_grad(void **state) {
  (void)state;
  op_ctx o = {.n = 2, .c = 5, .h = 3, .w = 3, .fwd = sigmoid_fwd};
  const size_t nx = op_nx(&o), ns = (size_t)o.n * o.c;
  o.ny = nx;
  o.x = dvec(nx), o.x2 = dvec(ns), o.y = dvec(nx), o.g = dvec(nx);
  double *dx = dvec(nx), *ds = dvec(ns);
  dfill(o.x, nx, 441, -4, 4);
  dfill(o.x2, ns, 442, 0, 1);
  dfill(o.g, nx, 443, -1, 1);
  sigmoid_fwd(&o);
  ref_sigmoid_backward(nx, o.y, o.g, dx);
  expect_small("sigmoid 2x5x3x3 dx", fd_rel_err(op_objective, &o, o.x, nx, dx));
  assert_true(fabs(o.y[0] - 1 / (1 + exp(-o.x[0]))) < 1e-15);

  o.fwd = scale_fwd;
  ref_scale_backward(o.n, o.c, o.h * o.w, o.x, o.x2, o.g, dx, ds);
  expect_small("scale 2x5x3x3 * (2x5) dx", fd_rel_err(op_objective, &o, o.x, nx, dx));
  expect_small("scale 2x5x3x3 * (2x5) ds", fd_rel_err(op_objective, &o, o.x2, ns, ds));
  free(o.x), free(o.x2), free(o.y), free(o.g), free(dx), free(ds);
}

static const double g_shake_alpha[3] = {0.1, 0.75, 0.5};

static void shake_fwd(op_ctx *o) {
  ref_shake_forward(o->n, op_nx(o) / o->n, o->x, o->x2, g_shake_alpha, o->y);
}

static void test_shake_grad(void **state) {
  (void)state;
  op_ctx o = {.n = 3, .c = 2, .h = 3, .w = 4, .fwd = shake_fwd};
  const size_t nx = op_nx(&o), chw = nx / o.n;
  o.ny = nx;
  o.x = dvec(nx), o.x2 = dvec(nx), o.y = dvec(nx), o.g = dvec(nx);
  double *da = dvec(nx), *db = dvec(nx);
  dfill(o.x, nx, 451, -1, 1);
  dfill(o.x2, nx, 452, -1, 1);
  dfill(o.g, nx, 453, -1, 1);
  /* With beta = alpha the backward is the true gradient of the forward. */
  ref_shake_backward(o.n, chw, o.g, g_shake_alpha, da, db);
  expect_small("shake 3x2x3x4 (beta = alpha) da", fd_rel_err(op_objective, &o, o.x, nx, da));
  expect_small("shake 3x2x3x4 (beta = alpha) db", fd_rel_err(op_objective, &o, o.x2, nx, db));
  /* With another beta the two branch gradients still sum to dy, split by beta. */
  const double beta[3] = {0.9, 0.2, 0.6};
  ref_shake_backward(o.n, chw, o.g, beta, da, NULL);
  ref_shake_backward(o.n, chw, o.g, beta, NULL, db);
  for (size_t i = 0; i < nx; i++) {
    assert_true(fabs(da[i] + db[i] - o.g[i]) < 1e-15);
    assert_true(fabs(da[i] - beta[i / chw] * o.g[i]) < 1e-15);
  }
  free(o.x), free(o.x2), free(o.y), free(o.g), free(da), free(db);
}

static void shift_fwd(op_ctx *o) {
  ref_shift_forward(o->n, o->c, o->h, o->w, o->sy, o->sx, o->x, o->y);
}

static void bias_fwd(op_ctx *o) { ref_bias_forward(o->n, o->c, o->h * o->w, o->x, o->x2, o->y); }

static void test_shift_bias_grad(void **state) {
  (void)state;
  static const int shifts[][2] = {{1, 1}, {-1, 0}, {0, 2}, {-2, -1}};
  op_ctx o = {.n = 2, .c = 3, .h = 5, .w = 4, .fwd = shift_fwd};
  const size_t nx = op_nx(&o);
  o.ny = nx;
  o.x = dvec(nx), o.x2 = dvec(o.c), o.y = dvec(nx), o.g = dvec(nx);
  double *dx = dvec(nx), *db = dvec(o.c);
  dfill(o.x, nx, 461, -1, 1);
  dfill(o.x2, o.c, 462, -1, 1);
  dfill(o.g, nx, 463, -1, 1);
  for (size_t si = 0; si < DT_ARRAY_LEN(shifts); si++) {
    o.sy = shifts[si][0], o.sx = shifts[si][1];
    ref_shift_backward(o.n, o.c, o.h, o.w, o.sy, o.sx, o.g, dx);
    char what[96];
    snprintf(what, sizeof what, "shift (%d, %d) 2x3x5x4 dx", o.sy, o.sx);
    expect_small(what, fd_rel_err(op_objective, &o, o.x, nx, dx));
  }
  /* The shake-shake shortcut's shift by (1, 1): drop the first row and column, zero-fill. */
  o.sy = o.sx = 1;
  shift_fwd(&o);
  assert_true(o.y[0] == o.x[1 * o.w + 1] && o.y[(o.h - 1) * o.w] == 0 && o.y[o.w - 1] == 0);

  o.fwd = bias_fwd;
  ref_bias_backward(o.n, o.c, o.h * o.w, o.g, db);
  expect_small("bias 2x3x5x4 dx", fd_rel_err(op_objective, &o, o.x, nx, o.g));
  expect_small("bias 2x3x5x4 db", fd_rel_err(op_objective, &o, o.x2, o.c, db));
  free(o.x), free(o.x2), free(o.y), free(o.g), free(dx), free(db);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_conv_grad),      cmocka_unit_test(test_conv_identities),
      cmocka_unit_test(test_bn_grad),        cmocka_unit_test(test_bn_stats),
      cmocka_unit_test(test_eltwise_grad),   cmocka_unit_test(test_gap_grad),
      cmocka_unit_test(test_linear_grad),    cmocka_unit_test(test_xent_grad),
      cmocka_unit_test(test_pool_grad),      cmocka_unit_test(test_concat_pad_grad),
      cmocka_unit_test(test_dropout_grad),   cmocka_unit_test(test_sigmoid_scale_grad),
      cmocka_unit_test(test_shake_grad),     cmocka_unit_test(test_shift_bias_grad),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
