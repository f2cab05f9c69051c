/* test_cpu_view_bf16.c: the CPU backend's plain-loop ops (src/cpu/cpu_view.c and its users:
 * concatenation, channel padding, spatial shift, dropout, shake-shake mixing, sigmoid, channel
 * scaling, per-channel bias) on bf16 tensors, forward and backward.
 *
 * Each op runs twice on one layout (NCHW, NHWC, nChw8c, nChw16c; channel counts that leave a
 * partial last block): on f32 tensors and on bf16 tensors (a dnnl_bf16 descriptor interned
 * with dt_cpu_layout_intern) holding the same bf16-representable values, uploaded with the
 * backend's upload. The ops compute in f32 and round once at the store, so every bf16 result
 * must equal the f32 result rounded to bf16 (precision.h's dt_round_bf16) bit for bit; the
 * bias gradient (f32) must equal the f32 run's. Output buffers start as garbage and their
 * padding lanes must come out zero in both runs. The channel scaling also takes an fp32 scale
 * with a bf16 x (native bf16 mode's squeeze-and-excitation gate is fp32), and a concatenation
 * takes an f32 and a bf16 tensor (y bf16: the f32 values rounded, the bf16 bits kept).
 *
 * It runs on the machine's ISA and again, when that is above AVX2, in a child process with
 * ONEDNN_MAX_CPU_ISA=AVX2. oneDNN 2.6.3 has no bf16 eltwise kernel below AVX-512 (no native
 * bf16 there, so the backend never makes bf16 tensors): the sigmoid is skipped where it cannot
 * be created, and the channel scaling runs its plain loops instead of oneDNN's binary mul. */
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
#include "precision.h"
#include "testutil.h"

#define CHILD_ENV "DT_TEST_VIEW_BF16_CHILD"

static dt_backend *g_be;
static int g_fail;

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

static const dnnl_format_tag_t k_tags[] = {dnnl_nchw, dnnl_nhwc, dnnl_nChw8c, dnnl_nChw16c};
static const char *const k_tag_names[] = {"NCHW", "NHWC", "nChw8c", "nChw16c"};
#define NTAGS 4

static const dt_layout *layout_of(dt_shape s, dnnl_format_tag_t tag, dnnl_data_type_t dt) {
  dnnl_dims_t dims = {s.n, s.c, s.h, s.w};
  dnnl_memory_desc_t md;
  if (dnnl_memory_desc_init_by_tag(&md, 4, dims, dt, tag) != dnnl_success)
    fail_msg("cannot make a descriptor");
  return dt_cpu_layout_intern(dt_cpu_be(g_be), &md);
}

/* Where element (n, c, h, w) of a 4-d NCHW / NHWC / nChw<b>c descriptor lives, read from the
 * descriptor here (not through dt_cpu_view, which is under test). */
typedef struct {
  int n, c, h, w, b, cp;
  long s[4];
  bool bf16;
} tview;

static tview tv_of(const dt_layout *l) {
  const dnnl_memory_desc_t *md = &l->md;
  const dnnl_blocking_desc_t *bd = &md->format_desc.blocking;
  tview v = {(int)md->dims[0], (int)md->dims[1], (int)md->dims[2], (int)md->dims[3],
             bd->inner_nblks ? (int)bd->inner_blks[0] : 1, (int)md->padded_dims[1],
             {bd->strides[0], bd->strides[1], bd->strides[2], bd->strides[3]},
             md->data_type == dnnl_bf16};
  return v;
}

static long tv_off(const tview *v, int n, int c, int h, int w) {
  return n * v->s[0] + (c / v->b) * v->s[1] + h * v->s[2] + w * v->s[3] + c % v->b;
}

/* The same value as an f32 tensor (f) and a bf16 tensor (h) of one blocking. */
typedef struct {
  dt_tensor f, h;
} pair;

/* A pair whose buffers hold garbage (a large finite number in every element, padding too). */
static pair pair_new(dt_shape s, dnnl_format_tag_t tag) {
  pair p;
  const dt_layout *lf = layout_of(s, tag, dnnl_f32), *lh = layout_of(s, tag, dnnl_bf16);
  p.f = (dt_tensor){s, lf, g_be->ops->alloc(g_be, g_be->ops->layout_bytes(lf))};
  p.h = (dt_tensor){s, lh, g_be->ops->alloc(g_be, g_be->ops->layout_bytes(lh))};
  memset(p.f.data, 0x5a, g_be->ops->layout_bytes(lf));
  memset(p.h.data, 0x5a, g_be->ops->layout_bytes(lh));
  return p;
}

/* A pair whose buffers have the layouts of tensors a (f32) and b (bf16): the outputs of ops
 * that choose their layout. */
static pair pair_like(dt_shape s, const dt_layout *lf, const dt_layout *lh) {
  pair p;
  p.f = (dt_tensor){s, lf, g_be->ops->alloc(g_be, g_be->ops->layout_bytes(lf))};
  p.h = (dt_tensor){s, lh, g_be->ops->alloc(g_be, g_be->ops->layout_bytes(lh))};
  memset(p.f.data, 0x5a, g_be->ops->layout_bytes(lf));
  memset(p.h.data, 0x5a, g_be->ops->layout_bytes(lh));
  return p;
}

static void pair_free(pair *p) {
  g_be->ops->free(g_be, p->f.data);
  g_be->ops->free(g_be, p->h.data);
}

/* Uniform values in [lo, hi), rounded to bf16, uploaded into both; the bf16 upload is checked
 * element by element against the raw buffer (the upload is a oneDNN reorder to bf16). */
static void pair_put(pair *p, uint64_t seed, float lo, float hi) {
  const dt_shape s = p->f.shape;
  const size_t n = dt_shape_count(s);
  float *v = dt_xcalloc(n, sizeof *v);
  tu_fill_uniform(v, n, seed, lo, hi);
  for (size_t i = 0; i < n; i++) v[i] = dt_round_bf16(v[i]);
  g_be->ops->upload(g_be, v, &p->f);
  g_be->ops->upload(g_be, v, &p->h);
  const tview vh = tv_of(p->h.layout);
  const uint16_t *raw = (const uint16_t *)p->h.data;
  size_t bad = 0;
  for (int a = 0; a < s.n; a++)
    for (int c = 0; c < s.c; c++)
      for (int y = 0; y < s.h; y++)
        for (int x = 0; x < s.w; x++) {
          const float want = v[(((size_t)a * s.c + c) * s.h + y) * s.w + x];
          if ((uint32_t)raw[tv_off(&vh, a, c, y, x)] << 16 != dt_precision_bits(want))
            bad++;
        }
  if (bad) {
    print_message("  FAIL upload to bf16: %zu of %zu elements differ\n", bad, n);
    g_fail++;
  }
  free(v);
}

/* Padding lanes (channels C .. padded C of a blocked layout) that are not zero. */
static size_t bad_padding(const dt_tensor *t) {
  const tview v = tv_of(t->layout);
  size_t bad = 0;
  for (int a = 0; a < v.n; a++)
    for (int c = v.c; c < v.cp; c++)
      for (int y = 0; y < v.h; y++)
        for (int x = 0; x < v.w; x++) {
          const long o = tv_off(&v, a, c, y, x);
          if (v.bf16 ? ((const uint16_t *)t->data)[o] != 0 : t->data[o] != 0.0f) bad++;
        }
  return bad;
}

/* The bf16 run's result must be the f32 run's rounded to bf16, bit for bit (ulps: how many
 * bf16 units in the last place it may differ by), and the padding of both zero. Both buffers
 * are read in place through their views (a reorder to f32 would be one more thing to trust;
 * oneDNN's reference one turns -0 into +0). */
static void pair_check(const char *what, const char *tag, const pair *p, int ulps) {
  const tview vf = tv_of(p->f.layout), vh = tv_of(p->h.layout);
  const size_t n = dt_shape_count(p->f.shape);
  const uint16_t *raw = (const uint16_t *)p->h.data;
  size_t bad = 0;
  float first_f = 0, first_h = 0;
  for (int a = 0; a < vf.n; a++)
    for (int c = 0; c < vf.c; c++)
      for (int y = 0; y < vf.h; y++)
        for (int x = 0; x < vf.w; x++) {
          const float f = p->f.data[tv_off(&vf, a, c, y, x)];
          const uint16_t h = raw[tv_off(&vh, a, c, y, x)];
          const int32_t want = (int32_t)(dt_round_bf16_bits(dt_precision_bits(f)) >> 16);
          const int32_t d = want > h ? want - h : h - want;
          if (d > ulps) {
            if (!bad) first_f = f, first_h = dt_precision_float((uint32_t)h << 16);
            bad++;
          }
        }
  const size_t pad_f = bad_padding(&p->f), pad_h = bad_padding(&p->h);
  const bool ok = bad == 0 && pad_f == 0 && pad_h == 0;
  if (!ok || getenv("DT_TEST_VERBOSE"))
    print_message("  %s %s %s: %zu of %zu differ from the rounded f32 result (first: %.9g vs "
                  "%.9g), padding not zero: f32 %zu, bf16 %zu\n",
                  ok ? "ok" : "FAIL", what, tag, bad, n, first_f, first_h, pad_f, pad_h);
  if (!ok) g_fail++;
}

static const dt_shape k_shape = {3, 5, 4, 6};  /* 5 channels: a partial block in every blocking */
static const dt_shape k_shape2 = {3, 12, 4, 6}; /* the second concat input */

/* ---- the ops ---- */

static void concat_case(int ta, int tb) {
  char tag[64];
  snprintf(tag, sizeof tag, "%s + %s", k_tag_names[ta], k_tag_names[tb]);
  pair a = pair_new(k_shape, k_tags[ta]), b = pair_new(k_shape2, k_tags[tb]);
  pair_put(&a, 1, -2, 2);
  pair_put(&b, 2, -2, 2);
  const dt_layout *ylf, *ylh;
  dt_op *of = dt_cpu_concat_create(g_be, k_shape, a.f.layout, k_shape2, b.f.layout, &ylf);
  dt_op *oh = dt_cpu_concat_create(g_be, k_shape, a.h.layout, k_shape2, b.h.layout, &ylh);
  if (ylh->md.data_type != dnnl_bf16) fail_msg("concat of bf16 tensors is not bf16");
  const dt_shape ys = {k_shape.n, k_shape.c + k_shape2.c, k_shape.h, k_shape.w};
  pair y = pair_like(ys, ylf, ylh);
  dt_cpu_concat_forward(of, &a.f, &b.f, &y.f);
  dt_cpu_concat_forward(oh, &a.h, &b.h, &y.h);
  pair_check("concat forward", tag, &y, 0);
  pair dy = pair_like(ys, ylf, ylh), da = pair_new(k_shape, k_tags[ta]),
       db = pair_new(k_shape2, k_tags[tb]);
  pair_put(&dy, 3, -2, 2);
  dt_cpu_concat_backward(of, &dy.f, &da.f, &db.f);
  dt_cpu_concat_backward(oh, &dy.h, &da.h, &db.h);
  pair_check("concat backward da", tag, &da, 0);
  pair_check("concat backward db", tag, &db, 0);
  dt_cpu_op_free(of);
  dt_cpu_op_free(oh);
  pair_free(&a), pair_free(&b), pair_free(&y), pair_free(&dy), pair_free(&da), pair_free(&db);
}

static void pad_case(int t) {
  pair x = pair_new(k_shape, k_tags[t]);
  pair_put(&x, 4, -2, 2);
  const dt_layout *ylf, *ylh;
  dt_op *of = dt_cpu_pad_channels_create(g_be, k_shape, x.f.layout, 21, &ylf);
  dt_op *oh = dt_cpu_pad_channels_create(g_be, k_shape, x.h.layout, 21, &ylh);
  if (ylh->md.data_type != dnnl_bf16) fail_msg("padding of a bf16 tensor is not bf16");
  const dt_shape ys = {k_shape.n, 21, k_shape.h, k_shape.w};
  pair y = pair_like(ys, ylf, ylh), dy = pair_like(ys, ylf, ylh), dx = pair_new(k_shape, k_tags[t]);
  dt_cpu_pad_channels_forward(of, &x.f, &y.f);
  dt_cpu_pad_channels_forward(oh, &x.h, &y.h);
  pair_check("pad_channels forward", k_tag_names[t], &y, 0);
  pair_put(&dy, 5, -2, 2);
  dt_cpu_pad_channels_backward(of, &dy.f, &dx.f);
  dt_cpu_pad_channels_backward(oh, &dy.h, &dx.h);
  pair_check("pad_channels backward", k_tag_names[t], &dx, 0);
  dt_cpu_op_free(of);
  dt_cpu_op_free(oh);
  pair_free(&x), pair_free(&y), pair_free(&dy), pair_free(&dx);
}

static void shift_case(int t) {
  pair x = pair_new(k_shape, k_tags[t]), y = pair_new(k_shape, k_tags[t]),
       dy = pair_new(k_shape, k_tags[t]), dx = pair_new(k_shape, k_tags[t]);
  pair_put(&x, 6, -2, 2);
  pair_put(&dy, 7, -2, 2);
  dt_op *of = dt_cpu_shift_create(g_be, k_shape, x.f.layout, 1, -2);
  dt_op *oh = dt_cpu_shift_create(g_be, k_shape, x.h.layout, 1, -2);
  dt_cpu_shift_forward(of, &x.f, &y.f);
  dt_cpu_shift_forward(oh, &x.h, &y.h);
  pair_check("shift forward", k_tag_names[t], &y, 0);
  dt_cpu_shift_backward(of, &dy.f, &dx.f);
  dt_cpu_shift_backward(oh, &dy.h, &dx.h);
  pair_check("shift backward", k_tag_names[t], &dx, 0);
  dt_cpu_op_free(of);
  dt_cpu_op_free(oh);
  pair_free(&x), pair_free(&y), pair_free(&dy), pair_free(&dx);
}

static void dropout_case(int t) {
  pair x = pair_new(k_shape, k_tags[t]), y = pair_new(k_shape, k_tags[t]),
       dy = pair_new(k_shape, k_tags[t]), dx = pair_new(k_shape, k_tags[t]),
       yi = pair_new(k_shape, k_tags[t]);
  pair_put(&x, 8, -2, 2);
  pair_put(&dy, 9, -2, 2);
  const uint64_t keys[3] = {11, 12, 13};
  dt_op *of = dt_cpu_dropout_create(g_be, k_shape, x.f.layout, 0.3f);
  dt_op *oh = dt_cpu_dropout_create(g_be, k_shape, x.h.layout, 0.3f);
  dt_cpu_dropout_forward(of, &x.f, keys, &y.f);
  dt_cpu_dropout_forward(oh, &x.h, keys, &y.h);
  pair_check("dropout forward", k_tag_names[t], &y, 0);
  dt_cpu_dropout_backward(of, &dy.f, &dx.f);
  dt_cpu_dropout_backward(oh, &dy.h, &dx.h);
  pair_check("dropout backward", k_tag_names[t], &dx, 0);
  /* Inference: a copy (its padding comes from x, which the upload zeroed). */
  dt_cpu_dropout_forward(of, &x.f, NULL, &yi.f);
  dt_cpu_dropout_forward(oh, &x.h, NULL, &yi.h);
  pair_check("dropout inference", k_tag_names[t], &yi, 0);
  dt_cpu_op_free(of);
  dt_cpu_op_free(oh);
  pair_free(&x), pair_free(&y), pair_free(&dy), pair_free(&dx), pair_free(&yi);
}

static void shake_case(int t) {
  pair a = pair_new(k_shape, k_tags[t]), b = pair_new(k_shape, k_tags[t]),
       y = pair_new(k_shape, k_tags[t]), dy = pair_new(k_shape, k_tags[t]),
       da = pair_new(k_shape, k_tags[t]), db = pair_new(k_shape, k_tags[t]);
  pair_put(&a, 10, -2, 2);
  pair_put(&b, 11, -2, 2);
  pair_put(&dy, 12, -2, 2);
  const float alpha[3] = {0.1f, 0.55f, 0.93f}, beta[3] = {0.7f, 0.25f, 0.5f};
  dt_op *of = dt_cpu_shake_create(g_be, k_shape, a.f.layout);
  dt_op *oh = dt_cpu_shake_create(g_be, k_shape, a.h.layout);
  dt_cpu_shake_forward(of, &a.f, &b.f, alpha, &y.f);
  dt_cpu_shake_forward(oh, &a.h, &b.h, alpha, &y.h);
  pair_check("shake forward", k_tag_names[t], &y, 0);
  dt_cpu_shake_backward(of, &dy.f, beta, &da.f, &db.f);
  dt_cpu_shake_backward(oh, &dy.h, beta, &da.h, &db.h);
  pair_check("shake backward da", k_tag_names[t], &da, 0);
  pair_check("shake backward db", k_tag_names[t], &db, 0);
  dt_cpu_op_free(of);
  dt_cpu_op_free(oh);
  pair_free(&a), pair_free(&b), pair_free(&y), pair_free(&dy), pair_free(&da), pair_free(&db);
}

/* True when oneDNN can run a bf16 logistic on this ISA. */
static bool have_bf16_eltwise(void) {
  const dt_layout *l = layout_of(k_shape, dnnl_nchw, dnnl_bf16);
  dnnl_eltwise_desc_t d;
  if (dnnl_eltwise_forward_desc_init(&d, dnnl_forward_training,
                                     dnnl_eltwise_logistic_use_dst_for_bwd, &l->md, 0.f,
                                     0.f) != dnnl_success)
    return false;
  dnnl_engine_t eng;
  if (dnnl_engine_create(&eng, dnnl_cpu, 0) != dnnl_success) return false;
  dnnl_primitive_desc_t pd;
  const bool ok = dnnl_primitive_desc_create(&pd, &d, NULL, eng, NULL) == dnnl_success;
  if (ok) dnnl_primitive_desc_destroy(pd);
  dnnl_engine_destroy(eng);
  return ok;
}

static void sigmoid_case(int t) {
  pair x = pair_new(k_shape, k_tags[t]), y = pair_new(k_shape, k_tags[t]),
       dy = pair_new(k_shape, k_tags[t]), dx = pair_new(k_shape, k_tags[t]);
  pair_put(&x, 13, -4, 4);
  pair_put(&dy, 14, -2, 2);
  dt_op *of = dt_cpu_sigmoid_create(g_be, k_shape, x.f.layout);
  dt_op *oh = dt_cpu_sigmoid_create(g_be, k_shape, x.h.layout);
  dt_cpu_sigmoid_forward(of, &x.f, &y.f);
  dt_cpu_sigmoid_forward(oh, &x.h, &y.h);
  pair_check("sigmoid forward", k_tag_names[t], &y, 0);
  /* The backward reads y: give both runs the bf16 y. */
  pair yy = pair_new(k_shape, k_tags[t]);
  const size_t n = dt_shape_count(k_shape);
  float *v = dt_xcalloc(n, sizeof *v);
  g_be->ops->download(g_be, &y.h, v);
  g_be->ops->upload(g_be, v, &yy.f);
  g_be->ops->upload(g_be, v, &yy.h);
  free(v);
  dt_cpu_sigmoid_backward(of, &yy.f, &dy.f, &dx.f);
  dt_cpu_sigmoid_backward(oh, &yy.h, &dy.h, &dx.h);
  pair_check("sigmoid backward", k_tag_names[t], &dx, 0);
  dt_cpu_op_free(of);
  dt_cpu_op_free(oh);
  pair_free(&x), pair_free(&y), pair_free(&dy), pair_free(&dx), pair_free(&yy);
}

/* ts: the blocking of the scale (N, C, 1, 1). */
static void scale_case(int t, int ts) {
  char tag[64];
  snprintf(tag, sizeof tag, "%s, scale %s", k_tag_names[t], k_tag_names[ts]);
  const dt_shape ss = {k_shape.n, k_shape.c, 1, 1};
  pair x = pair_new(k_shape, k_tags[t]), s = pair_new(ss, k_tags[ts]),
       y = pair_new(k_shape, k_tags[t]), dy = pair_new(k_shape, k_tags[t]),
       dx = pair_new(k_shape, k_tags[t]), ds = pair_new(ss, k_tags[ts]);
  pair_put(&x, 15, -2, 2);
  pair_put(&s, 16, 0, 1);
  pair_put(&dy, 17, -2, 2);
  dt_op *of = dt_cpu_scale_create(g_be, k_shape, x.f.layout, s.f.layout);
  dt_op *oh = dt_cpu_scale_create(g_be, k_shape, x.h.layout, s.h.layout);
  dt_cpu_scale_forward(of, &x.f, &s.f, &y.f);
  dt_cpu_scale_forward(oh, &x.h, &s.h, &y.h);
  pair_check("scale forward", tag, &y, 0);
  dt_cpu_scale_backward(of, &x.f, &s.f, &dy.f, &dx.f, &ds.f);
  dt_cpu_scale_backward(oh, &x.h, &s.h, &dy.h, &dx.h, &ds.h);
  pair_check("scale backward dx", tag, &dx, 0);
  pair_check("scale backward ds", tag, &ds, 0);
  dt_cpu_op_free(of);
  dt_cpu_op_free(oh);
  pair_free(&x), pair_free(&s), pair_free(&y), pair_free(&dy), pair_free(&dx), pair_free(&ds);
}

/* A bf16 x scaled by an fp32 s (the squeeze-and-excitation gate comes from fp32 linear layers
 * in native bf16 mode): s and ds are fp32 in both runs, s not rounded to bf16. y and dx must be
 * the f32 run's rounded to bf16, ds equal to the f32 run's. */
static void scale_mixed_case(int t, int ts) {
  char tag[64];
  snprintf(tag, sizeof tag, "%s, fp32 scale %s", k_tag_names[t], k_tag_names[ts]);
  const dt_shape ss = {k_shape.n, k_shape.c, 1, 1};
  pair x = pair_new(k_shape, k_tags[t]), y = pair_new(k_shape, k_tags[t]),
       dy = pair_new(k_shape, k_tags[t]), dx = pair_new(k_shape, k_tags[t]),
       s = pair_new(ss, k_tags[ts]), ds = pair_new(ss, k_tags[ts]);
  pair_put(&x, 20, -2, 2);
  pair_put(&dy, 21, -2, 2);
  float sv[15];
  tu_fill_uniform(sv, 15, 22, 0, 1);
  g_be->ops->upload(g_be, sv, &s.f);
  dt_op *of = dt_cpu_scale_create(g_be, k_shape, x.f.layout, s.f.layout);
  dt_op *oh = dt_cpu_scale_create(g_be, k_shape, x.h.layout, s.f.layout);
  dt_cpu_scale_forward(of, &x.f, &s.f, &y.f);
  dt_cpu_scale_forward(oh, &x.h, &s.f, &y.h);
  pair_check("scale forward", tag, &y, 0);
  /* ds of the bf16 run goes to the f32 tensor of the pair h is not: compare the two f32s. */
  dt_tensor ds_h = {ss, s.f.layout, g_be->ops->alloc(g_be, g_be->ops->layout_bytes(s.f.layout))};
  memset(ds_h.data, 0x5a, g_be->ops->layout_bytes(s.f.layout));
  dt_cpu_scale_backward(of, &x.f, &s.f, &dy.f, &dx.f, &ds.f);
  dt_cpu_scale_backward(oh, &x.h, &s.f, &dy.h, &dx.h, &ds_h);
  pair_check("scale backward dx", tag, &dx, 0);
  const size_t bytes = g_be->ops->layout_bytes(s.f.layout);
  if (memcmp(ds.f.data, ds_h.data, bytes) != 0) {
    print_message("  FAIL scale backward ds %s: the bf16 run's fp32 ds differs from the f32 run's "
                  "(padding included)\n", tag);
    g_fail++;
  }
  g_be->ops->free(g_be, ds_h.data);
  dt_cpu_op_free(of);
  dt_cpu_op_free(oh);
  pair_free(&x), pair_free(&s), pair_free(&y), pair_free(&dy), pair_free(&dx), pair_free(&ds);
}

static void bias_case(int t) {
  pair x = pair_new(k_shape, k_tags[t]), y = pair_new(k_shape, k_tags[t]),
       dy = pair_new(k_shape, k_tags[t]);
  pair_put(&x, 18, -2, 2);
  pair_put(&dy, 19, -2, 2);
  float bias[5] = {0.5f, -0.25f, 1.0f / 3.0f, 0.01f, -7.0f};
  dt_op *of = dt_cpu_bias_create(g_be, k_shape, x.f.layout);
  dt_op *oh = dt_cpu_bias_create(g_be, k_shape, x.h.layout);
  dt_cpu_bias_forward(of, &x.f, bias, &y.f);
  dt_cpu_bias_forward(oh, &x.h, bias, &y.h);
  pair_check("bias forward", k_tag_names[t], &y, 0);
  float dbf[5], dbh[5];
  dt_cpu_bias_backward(of, &dy.f, dbf);
  dt_cpu_bias_backward(oh, &dy.h, dbh);
  if (memcmp(dbf, dbh, sizeof dbf) != 0) {
    print_message("  FAIL bias backward %s: f32 db[0] %.9g, from bf16 %.9g\n", k_tag_names[t],
                  dbf[0], dbh[0]);
    g_fail++;
  }
  dt_cpu_op_free(of);
  dt_cpu_op_free(oh);
  pair_free(&x), pair_free(&y), pair_free(&dy);
}

static void test_ops_bf16(void **state) {
  (void)state;
  g_fail = 0;
  const bool sigmoid = have_bf16_eltwise();
  if (!sigmoid) print_message("  oneDNN has no bf16 eltwise on this ISA: sigmoid skipped\n");
  for (int t = 0; t < NTAGS; t++) {
    for (int t2 = 0; t2 < NTAGS; t2++) concat_case(t, t2);
    pad_case(t);
    shift_case(t);
    dropout_case(t);
    shake_case(t);
    if (sigmoid) sigmoid_case(t);
    scale_case(t, t);
    scale_case(t, 0);
    scale_mixed_case(t, t);
    scale_mixed_case(t, 0);
    bias_case(t);
  }
  assert_int_equal(g_fail, 0);
}

/* ---- a concatenation of an f32 and a bf16 tensor (the image batch beside 16-bit activations) ----
 * y is bf16 (the narrower type) with the blocking of the input with the larger block: y's
 * channels of the f32 input are its values rounded to bf16, those of the bf16 input its bits;
 * backward gives the f32 input dy's values exactly (widened) and the bf16 input dy's bits. */

static float raw_at(const dt_tensor *t, const tview *v, int n, int c, int h, int w) {
  const long off = tv_off(v, n, c, h, w);
  if (v->bf16) return dt_precision_float((uint32_t)((const uint16_t *)t->data)[off] << 16);
  return ((const float *)t->data)[off];
}

static void concat_mixed_case(bool f32_first) {
  const dt_shape sf = {2, 3, 5, 4}, sh = {2, 21, 5, 4}; /* a partial last block in y */
  const dt_layout *lf = layout_of(sf, dnnl_nchw, dnnl_f32), *lh = layout_of(sh, dnnl_nChw16c, dnnl_bf16);
  const size_t nf = dt_shape_count(sf), nh = dt_shape_count(sh);
  float *vf = dt_xcalloc(nf, sizeof *vf), *vh = dt_xcalloc(nh, sizeof *vh);
  tu_fill_uniform(vf, nf, 11, -3.0f, 3.0f); /* not bf16-representable: y rounds them */
  tu_fill_uniform(vh, nh, 12, -3.0f, 3.0f);
  for (size_t i = 0; i < nh; i++) vh[i] = dt_round_bf16(vh[i]);
  dt_tensor tf = {sf, lf, g_be->ops->alloc(g_be, g_be->ops->layout_bytes(lf))};
  dt_tensor th = {sh, lh, g_be->ops->alloc(g_be, g_be->ops->layout_bytes(lh))};
  g_be->ops->upload(g_be, vf, &tf);
  g_be->ops->upload(g_be, vh, &th);
  const dt_tensor *a = f32_first ? &tf : &th, *b = f32_first ? &th : &tf;
  const dt_layout *yl = NULL;
  dt_op *op = g_be->ops->concat_create(g_be, a->shape, a->layout, b->shape, b->layout, &yl);
  const dt_shape ys = {2, sf.c + sh.c, 5, 4};
  dt_tensor y = {ys, yl, g_be->ops->alloc(g_be, g_be->ops->layout_bytes(yl))};
  memset(y.data, 0x5a, g_be->ops->layout_bytes(yl));
  g_be->ops->concat_forward(op, a, b, &y);
  const tview tvy = tv_of(yl);
  assert_true(tvy.bf16);
  assert_int_equal(tvy.b, 16);
  const int ca = a->shape.c;
  size_t bad = 0;
  for (int n = 0; n < ys.n; n++)
    for (int c = 0; c < tvy.cp; c++)
      for (int h = 0; h < ys.h; h++)
        for (int w = 0; w < ys.w; w++) {
          const float got = raw_at(&y, &tvy, n, c, h, w);
          float want = 0.0f; /* padding lanes */
          if (c < ys.c) {
            const bool from_f = (c < ca) == f32_first;
            const int cc = c < ca ? c : c - ca;
            want = from_f ? dt_round_bf16(vf[(((size_t)n * sf.c + cc) * 5 + h) * 4 + w])
                          : vh[(((size_t)n * sh.c + cc) * 5 + h) * 4 + w];
          }
          if (dt_precision_bits(got) != dt_precision_bits(want)) bad++;
        }
  /* backward: dy = y (bf16 values) */
  dt_tensor da = {a->shape, a->layout, g_be->ops->alloc(g_be, g_be->ops->layout_bytes(a->layout))};
  dt_tensor db = {b->shape, b->layout, g_be->ops->alloc(g_be, g_be->ops->layout_bytes(b->layout))};
  g_be->ops->concat_backward(op, &y, &da, &db);
  const tview tva = tv_of(a->layout), tvb = tv_of(b->layout);
  for (int n = 0; n < ys.n; n++)
    for (int c = 0; c < ys.c; c++)
      for (int h = 0; h < ys.h; h++)
        for (int w = 0; w < ys.w; w++) {
          const float want = raw_at(&y, &tvy, n, c, h, w);
          const float got = c < ca ? raw_at(&da, &tva, n, c, h, w) : raw_at(&db, &tvb, n, c - ca, h, w);
          if (dt_precision_bits(got) != dt_precision_bits(want)) bad++;
        }
  if (bad) print_message("  concat f32 %s bf16: %zu elements wrong\n", f32_first ? "before" : "after", bad);
  g_fail += bad != 0;
  g_be->ops->op_free(op);
  g_be->ops->free(g_be, y.data);
  g_be->ops->free(g_be, da.data);
  g_be->ops->free(g_be, db.data);
  g_be->ops->free(g_be, tf.data);
  g_be->ops->free(g_be, th.data);
  free(vf);
  free(vh);
}

static void test_concat_mixed(void **state) {
  (void)state;
  g_fail = 0;
  concat_mixed_case(true);
  concat_mixed_case(false);
  assert_int_equal(g_fail, 0);
}

/* ---- the same on AVX2, in a child process (oneDNN fixes its ISA at first use) ---- */

static void test_avx2(void **state) {
  (void)state;
  if (getenv(CHILD_ENV)) skip(); /* this is the child */
  const dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
  if (isa == dnnl_cpu_isa_avx2 || isa == dnnl_cpu_isa_sse41 || isa == dnnl_cpu_isa_all) {
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
  if (rc != 0 || getenv("DT_TEST_VERBOSE")) print_message("%s\n", out ? out : "(no output)");
  free(out);
  assert_int_equal(rc, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ops_bf16),
      cmocka_unit_test(test_concat_mixed),
      cmocka_unit_test(test_avx2),
  };
  const char *isa = getenv("ONEDNN_MAX_CPU_ISA");
  if (getenv(CHILD_ENV)) print_message("child run, ONEDNN_MAX_CPU_ISA=%s\n", isa ? isa : "");
  return cmocka_run_group_tests(tests, setup, teardown);
}
