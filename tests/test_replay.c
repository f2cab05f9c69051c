/* test_replay.c: when the trainer replays a recorded step (src/replay.c, train.cuda_graphs),
 * with a fake backend that records nothing but counts what it is asked to do and hands out
 * numbered recordings. The case that matters: training records a step, evaluation with a
 * bigger batch grows a shared buffer the recording points into (the backend bumps its
 * generation), and the next training step must record anew instead of replaying into freed
 * memory, over several epochs. Also: two warm-up passes, re-recording for another graph or
 * loss scale, a failed recording turning replay off, memory moved during a recording. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "replay.h"

typedef struct {
  dt_backend base;
  long begins, ends, replays, frees, live, next_id;
  bool fail_capture;        /* capture_end returns NULL */
  bool move_while_recording; /* the recorded work grows a buffer */
  uintptr_t last_replayed;
} fake_be;

static fake_be *fake(dt_backend *be) { return (fake_be *)be; }

static void fk_begin(dt_backend *be) { fake(be)->begins++; }
static void *fk_end(dt_backend *be) {
  fake_be *f = fake(be);
  f->ends++;
  if (f->fail_capture) return NULL;
  f->live++;
  return (void *)(uintptr_t)(++f->next_id);
}
static void fk_replay(dt_backend *be, void *c) {
  fake(be)->replays++;
  fake(be)->last_replayed = (uintptr_t)c;
}
static void fk_free(dt_backend *be, void *c) {
  assert_non_null(c);
  fake(be)->frees++;
  fake(be)->live--;
}

static const dt_backend_ops fake_ops = {
    .name = "fake",
    .capture_begin = fk_begin,
    .capture_end = fk_end,
    .replay = fk_replay,
    .capture_free = fk_free,
};

static long g_recorded;
static void record(void *ctx) {
  fake_be *f = ctx;
  g_recorded++;
  if (f->move_while_recording) f->base.generation++;
}

static fake_be new_fake(void) {
  fake_be f = {0};
  f.base.ops = &fake_ops;
  return f;
}

static void test_warm_up_then_replay(void **state) {
  (void)state;
  fake_be f = new_fake();
  dt_replay r = {0};
  int graph = 0;
  g_recorded = 0;
  assert_false(dt_replay_pass(&r, &f.base, &graph, 1.0f, record, &f));
  assert_false(dt_replay_pass(&r, &f.base, &graph, 1.0f, record, &f));
  for (int i = 0; i < 5; i++) assert_true(dt_replay_pass(&r, &f.base, &graph, 1.0f, record, &f));
  assert_int_equal(f.begins, 1);
  assert_int_equal(g_recorded, 1);
  assert_int_equal(f.replays, 5);
  dt_replay_free(&r, &f.base);
  assert_int_equal(f.live, 0);
}

/* train -> eval -> train for three epochs: the first evaluation grows shared buffers, the
 * second frees an op, the third moves nothing; every training step replays a recording made
 * at the backend's present generation. */
static void test_evaluation_moves_memory(void **state) {
  (void)state;
  fake_be f = new_fake();
  dt_replay r = {0};
  int train_graph = 0;
  for (int epoch = 0; epoch < 3; epoch++) {
    for (int step = 0; step < 4; step++) {
      const bool replayed = dt_replay_pass(&r, &f.base, &train_graph, 1.0f, record, &f);
      if (epoch == 0 && step < 2) {
        assert_false(replayed);
        continue;
      }
      assert_true(replayed);
      /* What ran was recorded at the backend's present generation. */
      assert_int_equal(r.generation, f.base.generation);
      assert_int_equal(f.last_replayed, (uintptr_t)f.next_id);
    }
    /* Evaluation: a bigger batch grows the loss staging buffer and the 16-bit operands. */
    f.base.generation += epoch == 0 ? 2 : 0;
    if (epoch == 1) f.base.generation++; /* e.g. an op freed */
  }
  /* One recording in epoch 1 and one after each evaluation that moved memory. */
  assert_int_equal(r.recordings, 3);
  assert_int_equal(f.frees, 2);
  dt_replay_free(&r, &f.base);
  assert_int_equal(f.live, 0);
}

static void test_graph_and_scale_changes(void **state) {
  (void)state;
  fake_be f = new_fake();
  dt_replay r = {0};
  int g1 = 0, g2 = 0;
  for (int i = 0; i < 3; i++) dt_replay_pass(&r, &f.base, &g1, 1.0f, record, &f);
  assert_int_equal(r.recordings, 1);
  assert_true(dt_replay_pass(&r, &f.base, &g2, 1.0f, record, &f));
  assert_int_equal(r.recordings, 2);
  assert_true(dt_replay_pass(&r, &f.base, &g2, 0.5f, record, &f));
  assert_int_equal(r.recordings, 3);
  assert_true(dt_replay_pass(&r, &f.base, &g2, 0.5f, record, &f));
  assert_int_equal(r.recordings, 3);
  assert_int_equal(f.live, 1);
  dt_replay_free(&r, &f.base);
  assert_int_equal(f.live, 0);
}

static void test_failed_recording_turns_off(void **state) {
  (void)state;
  fake_be f = new_fake();
  f.fail_capture = true;
  dt_replay r = {0};
  int g = 0;
  for (int i = 0; i < 6; i++) assert_false(dt_replay_pass(&r, &f.base, &g, 1.0f, record, &f));
  assert_true(r.off);
  assert_int_equal(f.begins, 1);
  assert_int_equal(f.replays, 0);
}

static void test_memory_moved_while_recording(void **state) {
  (void)state;
  fake_be f = new_fake();
  f.move_while_recording = true;
  dt_replay r = {0};
  int g = 0;
  for (int i = 0; i < 2; i++) dt_replay_pass(&r, &f.base, &g, 1.0f, record, &f);
  /* The recording is dropped unused; the pass runs op by op. */
  assert_false(dt_replay_pass(&r, &f.base, &g, 1.0f, record, &f));
  assert_int_equal(f.replays, 0);
  assert_int_equal(f.live, 0);
  assert_false(r.off);
  f.move_while_recording = false;
  assert_true(dt_replay_pass(&r, &f.base, &g, 1.0f, record, &f));
  dt_replay_free(&r, &f.base);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_warm_up_then_replay),
      cmocka_unit_test(test_evaluation_moves_memory),
      cmocka_unit_test(test_graph_and_scale_changes),
      cmocka_unit_test(test_failed_recording_turns_off),
      cmocka_unit_test(test_memory_moved_while_recording),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
