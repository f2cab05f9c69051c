/* test_grad_buckets.c: the buckets of overlapped gradient all-reduce (nn/grad_buckets.h) on
 * real models of several families, run on the CPU backend:
 *   - the buckets tile the trainable parameters of the arena exactly (no float twice, none
 *     left out), each holds whole parameters, and only a single parameter larger than the
 *     bucket size makes a bucket larger than that;
 *   - during a real backward pass, each bucket is handed out exactly once, right after the
 *     node that completes it, and what it holds at that moment (snapshotted) equals the final
 *     gradient bit for bit: nothing writes into a bucket after it was declared ready, so an
 *     all-reduce started then reduces the right values;
 *   - with small buckets most are ready before the pass ends (there is something to overlap).
 * The snapshot test fails if a bucket is launched too early (its snapshot would differ or be
 * incomplete) or if the ownership logic misses a parameter. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cpu/backend_cpu.h"
#include "models/model.h"
#include "nn/grad_buckets.h"
#include "rng.h"

static dt_backend *g_be;

typedef struct {
  dt_grad_buckets *b;
  dt_params *ps;
  float **snap;     /* per bucket: its gradients when it was declared ready */
  int *launched_at; /* per bucket: the node after which it was handed out (-1: at the end) */
  int launches;
} recorder;

static void take(recorder *r, const dt_bucket *bk, int node) {
  const int i = (int)(bk - r->b->buckets);
  assert_true(i >= 0 && i < r->b->n_buckets);
  assert_null(r->snap[i]); /* once only */
  r->snap[i] = malloc(bk->count * sizeof(float));
  g_be->ops->to_host(g_be, r->snap[i], r->ps->grads + bk->offset, bk->count * sizeof(float));
  r->launched_at[i] = node;
  r->launches++;
}

static void on_backward(void *ctx, int node) {
  recorder *r = ctx;
  const dt_bucket *bk;
  while ((bk = dt_grad_buckets_next(r->b, node)) != NULL) take(r, bk, node);
}

static void check_model(const char *const *sets, size_t n_sets, size_t bucket_floats) {
  dt_config cfg;
  dt_config_defaults(&cfg);
  for (size_t i = 0; i < n_sets; i++) assert_int_equal(dt_config_set(&cfg, sets[i]), DT_OK);
  const int n = 4, classes = 10;
  dt_model *m = dt_model_create(&cfg, g_be, 3, 32, 32, classes);
  assert_non_null(m);
  dt_params *ps = &m->params;
  dt_graph *g = dt_model_graph(m, n, false);

  dt_grad_buckets b;
  dt_grad_buckets_plan(&b, g, bucket_floats);
  /* Tiling: mark every float of every bucket; each trainable parameter's floats exactly once. */
  unsigned char *seen = calloc(ps->n_weights, 1);
  for (int i = 0; i < b.n_buckets; i++) {
    const dt_bucket *bk = &b.buckets[i];
    assert_true(bk->offset + bk->count <= ps->n_weights);
    for (size_t j = 0; j < bk->count; j++) seen[bk->offset + j]++;
  }
  size_t largest = 0;
  for (int i = 0; i < ps->count; i++) {
    const dt_param *p = &ps->items[i];
    if (p->flags & DT_PARAM_BUFFER) continue;
    if (p->count > largest) largest = p->count;
    for (size_t j = 0; j < p->count; j++) assert_int_equal(seen[p->offset + j], 1);
    /* whole parameters: the bucket holding its first float holds its last */
    for (int k = 0; k < b.n_buckets; k++) {
      const dt_bucket *bk = &b.buckets[k];
      if (p->offset >= bk->offset && p->offset < bk->offset + bk->count)
        assert_true(p->offset + p->count <= bk->offset + bk->count);
    }
  }
  for (int i = 0; i < b.n_buckets; i++)
    assert_true(b.buckets[i].count <= DT_MAX(bucket_floats, largest));
  free(seen);

  /* A real backward pass with the hook. */
  dt_rng rng = dt_rng_key(7, 0, 0, 0);
  const size_t in = (size_t)n * 3 * 32 * 32;
  float *x = malloc(in * sizeof *x), *t = calloc((size_t)n * classes, sizeof *t), losses[4];
  for (size_t i = 0; i < in; i++) x[i] = (float)dt_rng_normal(&rng);
  for (int i = 0; i < n; i++) t[i * classes + i % classes] = 1.0f;
  recorder r = {&b, ps, calloc((size_t)b.n_buckets, sizeof(float *)),
                calloc((size_t)b.n_buckets, sizeof(int)), 0};
  /* Poison the arena so a bucket snapshotted before its gradients were written shows it. */
  float *poison = malloc(ps->n_weights * sizeof *poison);
  for (size_t i = 0; i < ps->n_weights; i++) poison[i] = 12345.0f;
  g_be->ops->to_device(g_be, ps->grads, poison, ps->n_weights * sizeof(float));
  dt_graph_forward(g, x, true);
  dt_graph_loss(g, t, 1.0f / (float)n, losses);
  dt_grad_buckets_reset(&b);
  g->on_backward = on_backward;
  g->on_backward_ctx = &r;
  dt_graph_backward(g);
  const dt_bucket *bk;
  while ((bk = dt_grad_buckets_next(&b, -1)) != NULL) take(&r, bk, -1);
  g->on_backward = NULL;
  assert_int_equal(r.launches, b.n_buckets);

  float *final = malloc(ps->n_weights * sizeof *final);
  g_be->ops->to_host(g_be, final, ps->grads, ps->n_weights * sizeof(float));
  int early = 0;
  for (int i = 0; i < b.n_buckets; i++) {
    const dt_bucket *k = &b.buckets[i];
    if (memcmp(r.snap[i], final + k->offset, k->count * sizeof(float)) != 0)
      fail_msg("bucket %d (offset %zu, %zu floats, ready after node %d) changed after it was "
               "handed out", i, k->offset, k->count, r.launched_at[i]);
    for (size_t j = 0; j < k->count; j++)
      if (final[k->offset + j] == 12345.0f)
        fail_msg("bucket %d holds a gradient that backward never wrote (offset %zu)", i,
                 k->offset + j);
    early += r.launched_at[i] > 0;
    free(r.snap[i]);
  }
  print_message("  %s-%ld: %d buckets of <= %zu floats (%zu in all), %d ready before the last "
                "node's backward\n", dt_model_name_str(cfg.model_name), cfg.model_depth, b.n_buckets, bucket_floats,
                ps->n_weights, early);
  assert_true(early >= b.n_buckets / 2);
  free(final);
  free(poison);
  free(r.snap);
  free(r.launched_at);
  free(x);
  free(t);
  dt_grad_buckets_free(&b);
  dt_model_free(m);
  dt_config_free(&cfg);
}

static void test_resnet_preact(void **state) {
  (void)state;
  const char *s[] = {"model.name=resnet_preact", "model.depth=20"};
  check_model(s, 2, 4096);
}

static void test_resnet_one_bucket_per_param(void **state) {
  (void)state;
  const char *s[] = {"model.name=resnet", "model.depth=20"};
  check_model(s, 2, 1);
}

static void test_densenet(void **state) {
  (void)state;
  const char *s[] = {"model.name=densenet", "model.depth=10", "model.block_type=bottleneck",
                     "model.growth_rate=4", "model.compression_rate=0.5"};
  check_model(s, 5, 2000);
}

static void test_shake_shake(void **state) {
  (void)state;
  const char *s[] = {"model.name=shake_shake", "model.depth=8", "model.base_channels=8"};
  check_model(s, 3, 3000);
}

int main(void) {
  g_be = dt_backend_cpu_create(1);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_resnet_preact),
      cmocka_unit_test(test_resnet_one_bucket_per_param),
      cmocka_unit_test(test_densenet),
      cmocka_unit_test(test_shake_shake),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  g_be->ops->destroy(g_be);
  return rc;
}
