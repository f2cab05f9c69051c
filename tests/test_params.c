/* test_params.c: the storage order of convolution weights in the parameter arenas (nn/params.h,
 * backend.h weights_krsc), on the CPU backend with its order set each way (the CUDA backend is
 * always KRSC, the CPU backend KRSC under DT_WEIGHTS_KRSC=1).
 *
 *  - the graph marks convolution weights DT_PARAM_CONV, and nothing else;
 *  - layout: on a KRSC backend the raw weight arena holds a 3x3 convolution weight (dense, and
 *    grouped with C/G = 4) as (K, R, S, C/G), checked element by element against the index
 *    formula written out here; a depthwise 3x3 (C/G = 1), a 1x1 (also grouped), a 5x1, the
 *    linear and batch-norm tensors and the alignment padding are the host's bytes as given. On
 *    an OIHW backend the raw arena is the host array byte for byte;
 *  - round trips: dt_params_from_host then dt_params_to_host, the _entry_ forms and
 *    dt_params_order_host there and back return the logical bytes, on the weight and the
 *    gradient arena alike;
 *  - dt_params_init gives the same logical weights on both orders (the checkpoint of a fresh
 *    run does not depend on the order). */
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
#include "nn/graph.h"
#include "nn/params.h"
#include "testutil.h"

/* The net's convolutions: name, K, C/G, R (= S), and whether KRSC permutes it. */
static const struct {
  const char *name;
  int k, cg, r;
  bool permuted;
} g_convs[] = {
    {"dense3.weight", 8, 3, 3, true},   /* 3 -> 8, 3x3 */
    {"group3.weight", 8, 4, 3, true},   /* 8 -> 8, 3x3, 2 groups */
    {"depth3.weight", 8, 1, 3, false},  /* 8 -> 8, 3x3, 8 groups: C/G = 1 */
    {"point1.weight", 6, 8, 1, false},  /* 8 -> 6, 1x1 */
    {"gpoint1.weight", 6, 3, 1, false}, /* 6 -> 6, 1x1, 2 groups */
    {"wide5.weight", 4, 6, 5, true},    /* 6 -> 4, 5x5 */
};

/* A small net with every kind of convolution weight, a batch norm and a linear layer; its
 * parameters registered in ps (no backend). */
static dt_graph *build(dt_params *ps) {
  dt_graph *g = dt_graph_create(NULL, ps, (dt_shape){2, 3, 8, 8}, true);
  int x = dt_graph_conv(g, "dense3", 0, 8, 3, 1, 1, 1, -1); /* value 0: the input */
  x = dt_graph_bn(g, "bn", x, true);
  x = dt_graph_conv(g, "group3", x, 8, 3, 1, 1, 2, -1);
  x = dt_graph_conv(g, "depth3", x, 8, 3, 1, 1, 8, -1);
  x = dt_graph_conv(g, "point1", x, 6, 1, 1, 0, 1, -1);
  x = dt_graph_conv(g, "gpoint1", x, 6, 1, 1, 0, 2, -1);
  x = dt_graph_conv(g, "wide5", x, 4, 5, 1, 2, 1, -1);
  x = dt_graph_gap(g, x);
  dt_graph_linear(g, "fc", x, 10);
  return g;
}

static void test_flags(void **state) {
  (void)state;
  dt_params ps = {0};
  dt_graph *g = build(&ps);
  int convs = 0;
  for (int i = 0; i < ps.count; i++) {
    const dt_param *p = &ps.items[i];
    bool want = false;
    for (size_t j = 0; j < DT_ARRAY_LEN(g_convs); j++) want |= strcmp(p->name, g_convs[j].name) == 0;
    if (!!(p->flags & DT_PARAM_CONV) != want)
      fail_msg("%s: DT_PARAM_CONV %s", p->name, want ? "missing" : "set on a non-convolution");
    convs += want;
  }
  assert_int_equal(convs, DT_ARRAY_LEN(g_convs));
  dt_graph_free(g);
  dt_params_free(&ps, NULL);
}

/* The params of the net on a CPU backend whose order is krsc. */
static dt_backend *backend(bool krsc) {
  dt_backend *be = dt_backend_cpu_create(1);
  assert_non_null(be);
  be->weights_krsc = krsc; /* before any arena or op exists */
  return be;
}

/* Raw arena (backend order) against the logical host array: every permuted convolution at its
 * KRSC index, everything else (other tensors, padding) at the same index. */
static void check_layout(const dt_params *ps, const float *raw, const float *logical, bool krsc) {
  bool *seen = dt_xcalloc(ps->n_weights ? ps->n_weights : 1, sizeof *seen);
  int permuted = 0;
  for (size_t j = 0; j < DT_ARRAY_LEN(g_convs); j++) {
    const int i = dt_params_find(ps, g_convs[j].name);
    assert_true(i >= 0);
    const dt_param *p = &ps->items[i];
    const int k = g_convs[j].k, cg = g_convs[j].cg, r = g_convs[j].r;
    assert_true(p->dims[0] == k && p->dims[1] == cg && p->dims[2] == r && p->dims[3] == r);
    assert_int_equal(dt_params_permuted(ps, p), krsc && g_convs[j].permuted);
    if (!dt_params_permuted(ps, p)) continue;
    permuted++;
    const float *L = logical + p->offset, *R = raw + p->offset;
    for (int o = 0; o < k; o++)
      for (int c = 0; c < cg; c++)
        for (int y = 0; y < r; y++)
          for (int x = 0; x < r; x++) {
            const size_t oihw = (((size_t)o * cg + c) * r + y) * r + x;
            const size_t krsc_i = (((size_t)o * r + y) * r + x) * cg + c;
            if (R[krsc_i] != L[oihw])
              fail_msg("%s: raw[%zu] = %g, want logical[%zu] = %g (K %d, C %d, R %d, S %d)",
                       p->name, krsc_i, R[krsc_i], oihw, L[oihw], o, c, y, x);
          }
    for (size_t e = 0; e < p->count; e++) seen[p->offset + e] = true;
  }
  assert_int_equal(permuted, krsc ? 3 : 0);
  for (size_t e = 0; e < ps->n_weights; e++)
    if (!seen[e] && memcmp(&raw[e], &logical[e], sizeof *raw) != 0)
      fail_msg("element %zu (not a permuted convolution): raw %g, host %g", e, raw[e], logical[e]);
  free(seen);
}

static void order_case(bool krsc) {
  dt_params ps = {0};
  dt_graph *g = build(&ps);
  dt_backend *be = backend(krsc);
  dt_params_alloc(&ps, be);
  const size_t n = ps.n_weights, bytes = n * sizeof(float);
  float *logical = dt_xcalloc(n, sizeof(float)), *raw = dt_xcalloc(n, sizeof(float));
  float *back = dt_xcalloc(n, sizeof(float));
  tu_fill_uniform(logical, n, 5, -1, 1); /* the padding too: it must be kept as given */
  float *arenas[2] = {ps.weights, ps.grads};
  for (int a = 0; a < 2; a++) {
    dt_params_from_host(&ps, arenas[a], logical);
    be->ops->to_host(be, raw, arenas[a], bytes);
    check_layout(&ps, raw, logical, krsc);
    if (!krsc) assert_memory_equal(raw, logical, bytes);
    memset(back, 0, bytes);
    dt_params_to_host(&ps, back, arenas[a]);
    assert_memory_equal(back, logical, bytes);
  }
  /* In place on the host, there and back. */
  memcpy(back, logical, bytes);
  dt_params_order_host(&ps, back, true);
  assert_memory_equal(back, raw, bytes);
  dt_params_order_host(&ps, back, false);
  assert_memory_equal(back, logical, bytes);
  /* Entry by entry: the same bytes as the whole arena. */
  be->ops->zero(be, ps.weights, bytes);
  for (int i = 0; i < ps.count; i++) {
    const dt_param *p = &ps.items[i];
    if (p->flags & DT_PARAM_BUFFER) continue;
    dt_params_entry_from_host(&ps, i, dt_params_data(&ps, i), logical + p->offset);
  }
  float *raw2 = dt_xcalloc(n, sizeof(float));
  be->ops->to_host(be, raw2, ps.weights, bytes);
  memset(back, 0, bytes);
  for (int i = 0; i < ps.count; i++) {
    const dt_param *p = &ps.items[i];
    if (p->flags & DT_PARAM_BUFFER) continue;
    assert_memory_equal(raw2 + p->offset, raw + p->offset, p->count * sizeof(float));
    dt_params_entry_to_host(&ps, i, back + p->offset, dt_params_data(&ps, i));
    assert_memory_equal(back + p->offset, logical + p->offset, p->count * sizeof(float));
  }
  print_message("  %s: %zu weight floats, raw arena %s the logical array\n",
                krsc ? "KRSC" : "OIHW", n, memcmp(raw, logical, bytes) ? "differs from" : "is");
  if (krsc) assert_true(memcmp(raw, logical, bytes) != 0);
  free(logical), free(raw), free(raw2), free(back);
  dt_graph_free(g);
  dt_params_free(&ps, be);
  be->ops->destroy(be);
}

static void test_order_oihw(void **state) {
  (void)state;
  order_case(false);
}

static void test_order_krsc(void **state) {
  (void)state;
  order_case(true);
}

/* The initial weights in logical order do not depend on the storage order. */
static void test_init_same(void **state) {
  (void)state;
  float *logical[2];
  size_t n = 0;
  for (int k = 0; k < 2; k++) {
    dt_params ps = {0};
    dt_graph *g = build(&ps);
    dt_backend *be = backend(k == 1);
    dt_params_alloc(&ps, be);
    dt_params_init(&ps, be, 3, false);
    n = ps.n_weights;
    logical[k] = dt_xcalloc(n, sizeof(float));
    dt_params_to_host(&ps, logical[k], ps.weights);
    dt_graph_free(g);
    dt_params_free(&ps, be);
    be->ops->destroy(be);
  }
  assert_memory_equal(logical[0], logical[1], n * sizeof(float));
  free(logical[0]), free(logical[1]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_flags),
      cmocka_unit_test(test_order_oihw),
      cmocka_unit_test(test_order_krsc),
      cmocka_unit_test(test_init_same),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
