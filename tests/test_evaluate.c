/* test_evaluate.c: evaluation (src/evaluate.c) as a future --eval command would use it. The
 * accuracy counts on hand-made logits with ties; then a small model on the CPU backend over a
 * synthetic test split of 23 images in evaluation batches of 8: the sink sees every test image
 * once, in order, with its own label and per-image results, and the sums it could build from
 * them (loss, top-1, top-5) are exactly the ones dt_evaluate returns. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backend_factory.h"
#include "evaluate.h"
#include "rng.h"

static dt_comm *g_comm;

static void test_counts_and_ties(void **state) {
  (void)state;
  const float z[4] = {1, 3, 3, 0};
  /* Ties go to the lower class: class 1 is ahead of class 2. */
  assert_int_equal(dt_eval_label_rank(z, 1, 4), 0);
  assert_int_equal(dt_eval_label_rank(z, 2, 4), 1);
  assert_int_equal(dt_eval_label_rank(z, 0, 4), 2);
  assert_int_equal(dt_eval_label_rank(z, 3, 4), 3);
  assert_int_equal(dt_eval_argmax(z, 4), 1);
  const float rows[8] = {1, 3, 3, 0, 5, 4, 3, 2};
  const int labels[2] = {2, 0};
  assert_int_equal(dt_eval_topk_correct(rows, labels, 2, 4, 1), 1);
  assert_int_equal(dt_eval_topk_correct(rows, labels, 2, 4, 2), 2);
}

/* Random images and labels, C x 32 x 32, K classes (normalised by made-up statistics). */
static dt_dataset make_ds(int ntest, int classes, uint64_t seed) {
  dt_dataset ds;
  memset(&ds, 0, sizeof ds);
  ds.name = "synthetic";
  ds.classes = classes;
  for (int c = 0; c < 3; c++) {
    ds.mean[c] = 0.5f;
    ds.std[c] = 0.25f;
  }
  dt_rng r = dt_rng_key(seed, 77, 0, 0);
  dt_split *splits[2] = {&ds.train, &ds.test};
  const int counts[2] = {1, ntest};
  for (int s = 0; s < 2; s++) {
    dt_split *sp = splits[s];
    sp->count = counts[s];
    sp->channels = 3;
    sp->height = sp->width = 32;
    const size_t px = (size_t)counts[s] * 3 * 32 * 32;
    sp->images = malloc(px);
    sp->labels = malloc((size_t)counts[s]);
    for (size_t i = 0; i < px; i++) sp->images[i] = (uint8_t)dt_rng_below(&r, 256);
    for (int i = 0; i < counts[s]; i++)
      sp->labels[i] = (uint8_t)dt_rng_below(&r, (uint64_t)classes);
  }
  return ds;
}

/* What the sink saw, summed as a confusion-matrix builder would. */
typedef struct {
  const dt_dataset *ds;
  int *seen;  /* (count) times each test image was seen */
  long next;  /* the test index the next row must have */
  double loss, top1, top5;
  int confusion[10][10]; /* [label][prediction] */
} sink_state;

static void sink(void *ctx, const dt_eval_batch *b) {
  sink_state *s = ctx;
  assert_int_equal(b->first, s->next);
  assert_int_equal(b->classes, s->ds->classes);
  for (int i = 0; i < b->n; i++) {
    const long index = b->first + i;
    assert_true(index < s->ds->test.count);
    s->seen[index]++;
    assert_int_equal(b->labels[i], s->ds->test.labels[index]);
    const float *z = b->logits + (size_t)i * b->classes;
    s->loss += b->losses[i];
    const int rank = dt_eval_label_rank(z, b->labels[i], b->classes);
    s->top1 += rank < 1;
    s->top5 += rank < 5;
    s->confusion[b->labels[i]][dt_eval_argmax(z, b->classes)]++;
  }
  s->next += b->n;
}

static void test_per_image_results(void **state) {
  (void)state;
  const int N = 23, K = 10, E = 8;
  dt_dataset ds = make_ds(N, K, 5);
  dt_config cfg;
  dt_config_defaults(&cfg);
  cfg.model_depth = 8;
  dt_backend *be = dt_backend_create(DT_DEVICE_CPU, 1, 0, 1);
  assert_non_null(be);
  dt_model *model = dt_model_create(&cfg, be, 3, 32, 32, K);
  dt_loader_cfg lc = {.ds = &ds, .train = false, .seed = 1, .global_batch = E, .slice_offset = 0,
                      .slice_count = E, .threads = 2};
  dt_loader *ld = dt_loader_create(&lc);
  dt_evaluator ev;
  dt_evaluator_init(&ev, model, be, g_comm, ld, K, E);

  sink_state s = {.ds = &ds, .seen = calloc((size_t)N, sizeof(int))};
  const dt_eval_result r = dt_evaluate(&ev, sink, &s);
  assert_int_equal(s.next, N);
  for (int i = 0; i < N; i++) assert_int_equal(s.seen[i], 1);
  assert_true(r.images == N);
  assert_true(r.loss == s.loss / N);
  assert_true(r.top1 == 100.0 * s.top1 / N);
  assert_true(r.top5 == 100.0 * s.top5 / N);
  int diagonal = 0, all = 0;
  for (int y = 0; y < K; y++)
    for (int p = 0; p < K; p++)
      all += s.confusion[y][p], diagonal += y == p ? s.confusion[y][p] : 0;
  assert_int_equal(all, N);
  assert_true(100.0 * diagonal / N == r.top1); /* argmax = label exactly when top-1 correct */

  /* Without a sink: the same numbers (inference is deterministic). */
  const dt_eval_result again = dt_evaluate(&ev, NULL, NULL);
  assert_true(again.loss == r.loss && again.top1 == r.top1 && again.top5 == r.top5 &&
              again.images == r.images);

  free(s.seen);
  dt_evaluator_free(&ev);
  dt_loader_free(ld);
  dt_model_free(model);
  be->ops->destroy(be);
  dt_config_free(&cfg);
  dt_dataset_free(&ds);
}

int main(int argc, char **argv) {
  g_comm = dt_comm_init(&argc, &argv);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_counts_and_ties),
      cmocka_unit_test(test_per_image_results),
  };
  int failed = cmocka_run_group_tests(tests, NULL, NULL);
  dt_comm_finalize(g_comm);
  return failed;
}
