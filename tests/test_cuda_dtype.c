/* test_cuda_dtype.c: the CPU side of the CUDA backend's 16-bit storage (src/cuda/cuda_dtype.h),
 * which needs no GPU: element sizes and tensor bytes per precision (activation memory halves in
 * bf16 / fp16, the plain fp32 layout does not), the element type of a concatenation, and when
 * an op's 16-bit copy of the fp32 weights is made.
 *
 * The weight copy is checked on a model of the device: the weights and the copy are version
 * numbers, an op-by-op call runs at once, a call made while a CUDA graph is recorded is
 * appended to the recording and runs at each replay, and every read of the copy must see the
 * weights' current version. The trainer's sequences are played through it: steps op by op
 * (one conversion per step, not one per call; also with a step's held uploads between forward
 * and backward, over several micro-batches), steps replayed from a recording (replay.c: two
 * warm-up passes, then forward, loss and backward recorded once) with the optimizer update
 * op by op in between, evaluation passes between replays, a backward with no forward, other
 * weights, and a backward recorded without its forward. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "cuda/cuda_dtype.h"
#include "replay.h"

static void test_sizes(void **state) {
  (void)state;
  assert_int_equal(dt_cuda_dtype_bytes(DT_CUDA_F32), 4);
  assert_int_equal(dt_cuda_dtype_bytes(DT_CUDA_BF16), 2);
  assert_int_equal(dt_cuda_dtype_bytes(DT_CUDA_F16), 2);
  assert_int_equal(dt_cuda_dtype_of(DT_PRECISION_FP32), DT_CUDA_F32);
  assert_int_equal(dt_cuda_dtype_of(DT_PRECISION_BF16), DT_CUDA_BF16);
  assert_int_equal(dt_cuda_dtype_of(DT_PRECISION_FP16), DT_CUDA_F16);
  assert_string_equal(dt_cuda_dtype_name(DT_CUDA_BF16), "bf16");
  assert_string_equal(dt_cuda_dtype_name(DT_CUDA_F16), "fp16");
  assert_string_equal(dt_cuda_dtype_name(DT_CUDA_F32), "fp32");
  /* An activation of ResNet-preact-20's first stage, batch 128: half the bytes in 16 bits. */
  const dt_shape s = {128, 16, 32, 32};
  const size_t fp32 = dt_cuda_tensor_bytes(s, dt_cuda_dtype_of(DT_PRECISION_FP32));
  assert_int_equal(fp32, (size_t)128 * 16 * 32 * 32 * 4);
  assert_int_equal(dt_cuda_tensor_bytes(s, dt_cuda_dtype_of(DT_PRECISION_BF16)) * 2, fp32);
  assert_int_equal(dt_cuda_tensor_bytes(s, dt_cuda_dtype_of(DT_PRECISION_FP16)) * 2, fp32);
  /* Concatenation: the inputs' type when they agree, else the activations'. */
  assert_int_equal(dt_cuda_concat_dtype(DT_CUDA_BF16, DT_CUDA_BF16, DT_CUDA_BF16), DT_CUDA_BF16);
  assert_int_equal(dt_cuda_concat_dtype(DT_CUDA_F32, DT_CUDA_F32, DT_CUDA_BF16), DT_CUDA_F32);
  assert_int_equal(dt_cuda_concat_dtype(DT_CUDA_F32, DT_CUDA_F16, DT_CUDA_F16), DT_CUDA_F16);
  assert_int_equal(dt_cuda_concat_dtype(DT_CUDA_BF16, DT_CUDA_F32, DT_CUDA_BF16), DT_CUDA_BF16);
}

/* ---- a model of the device, one op with a weight copy ---- */

enum { ACT_CONVERT, ACT_READ };

typedef struct {
  dt_backend base;            /* for dt_replay_pass: capture_begin / _end / replay / _free */
  /* device state */
  long weights;               /* version of the fp32 weights */
  long copy;                  /* version the 16-bit copy was made from (-1: never) */
  /* the backend's counters (backend_cuda.c) */
  unsigned long gen, capture_seq;
  bool capturing;
  /* the recording */
  int rec[64];
  int n_rec;
  bool have_rec;
  /* the op */
  dt_cuda_wcopy wc;
  const float *w;             /* the weights the calls pass */
  long conversions, reads, stale_reads;
} sim;

static sim *S(dt_backend *be) { return (sim *)be; }

static void run_act(sim *s, int a) {
  if (a == ACT_CONVERT) {
    s->copy = s->weights;
    s->conversions++;
  } else {
    s->reads++;
    if (s->copy != s->weights) s->stale_reads++;
  }
}

static void act(sim *s, int a) {
  if (!s->capturing) {
    run_act(s, a);
    return;
  }
  assert_true(s->n_rec < 64);
  s->rec[s->n_rec++] = a;
}

/* A pass of the op that reads the copy (conv forward, or backward-data). */
static void op_call(sim *s, bool forward) {
  if (dt_cuda_wcopy_update(&s->wc, s->w, s->gen, s->capturing, s->capture_seq, forward))
    act(s, ACT_CONVERT);
  act(s, ACT_READ);
}

/* The bumps of backend_cuda.c. */
static void optimizer_update(sim *s) {
  s->gen++;
  s->weights++;
}
static void to_device_targets(sim *s) { s->gen++; }
/* A step's uploads while the host is held (targets, labels, merged statistics) are never
 * weights: no bump. */
static void held_to_device(sim *s) { (void)s; }

static void sim_capture_begin(dt_backend *be) {
  sim *s = S(be);
  s->capturing = true;
  s->capture_seq++;
  s->gen++;
  s->n_rec = 0;
}
static void *sim_capture_end(dt_backend *be) {
  sim *s = S(be);
  s->capturing = false;
  s->gen++;
  s->have_rec = true;
  return s;
}
static void sim_replay(dt_backend *be, void *captured) {
  sim *s = S(be);
  assert_ptr_equal(captured, s);
  s->gen++;
  for (int i = 0; i < s->n_rec; i++) run_act(s, s->rec[i]);
}
static void sim_capture_free(dt_backend *be, void *captured) {
  (void)captured;
  S(be)->have_rec = false;
}

static const dt_backend_ops sim_ops = {.capture_begin = sim_capture_begin,
                                       .capture_end = sim_capture_end,
                                       .replay = sim_replay,
                                       .capture_free = sim_capture_free};

static float weights_a[4], weights_b[4]; /* two weight arrays: only their addresses matter */

static void sim_init(sim *s) {
  memset(s, 0, sizeof *s);
  s->base.ops = &sim_ops;
  s->copy = -1;
  s->capture_seq = 0;
  s->w = weights_a;
}

/* Forward, loss, backward: what replay.c records. */
static void record_pass(void *ctx) {
  sim *s = ctx;
  op_call(s, true);
  op_call(s, false);
}

static void test_op_by_op(void **state) {
  (void)state;
  sim s;
  sim_init(&s);
  for (int step = 0; step < 5; step++) {
    to_device_targets(&s);
    op_call(&s, true);
    op_call(&s, false);
    optimizer_update(&s);
  }
  assert_int_equal(s.stale_reads, 0);
  assert_int_equal(s.reads, 10);
  assert_int_equal(s.conversions, 5); /* once per step, not once per call */
  /* Two evaluation forwards on the same weights: no new copy. */
  op_call(&s, true);
  op_call(&s, true);
  assert_int_equal(s.conversions, 6);
  /* A backward with no forward after an update converts; other weights convert. */
  optimizer_update(&s);
  op_call(&s, false);
  assert_int_equal(s.conversions, 7);
  s.w = weights_b;
  op_call(&s, true);
  assert_int_equal(s.conversions, 8);
  s.w = weights_a;
  op_call(&s, false);
  assert_int_equal(s.conversions, 9);
  assert_int_equal(s.stale_reads, 0);
}

/* Targets set between forward and backward, and several micro-batches a step (src/step.c):
 * the uploads are held, so the copy is still made once per step. */
static void test_held_uploads(void **state) {
  (void)state;
  sim s;
  sim_init(&s);
  for (int step = 0; step < 4; step++) {
    for (int micro = 0; micro < 3; micro++) {
      op_call(&s, true);
      held_to_device(&s); /* targets */
      op_call(&s, false);
    }
    optimizer_update(&s);
  }
  assert_int_equal(s.stale_reads, 0);
  assert_int_equal(s.reads, 24);
  assert_int_equal(s.conversions, 4);
}

static void test_replayed_steps(void **state) {
  (void)state;
  sim s;
  sim_init(&s);
  dt_replay r = {0};
  const int graph = 0;
  for (int step = 0; step < 8; step++) {
    to_device_targets(&s);
    if (!dt_replay_pass(&r, &s.base, &graph, 1.0f, record_pass, &s)) record_pass(&s);
    optimizer_update(&s);
    if (step % 3 == 2) { /* an evaluation pass op by op between replays */
      op_call(&s, true);
      op_call(&s, true);
    }
  }
  assert_int_equal(r.recordings, 1);
  assert_int_equal(r.replays, 6);
  /* The recording converts in its forward only, and every replay runs it. */
  assert_int_equal(s.n_rec, 3);
  assert_int_equal(s.rec[0], ACT_CONVERT);
  assert_int_equal(s.stale_reads, 0);
  assert_int_equal(s.reads, 8 * 2 + 2 * 2);
  dt_replay_free(&r, &s.base);
}

/* A backward recorded on its own (its forward ran op by op) converts in the recording. */
static void backward_only(void *ctx) { op_call(ctx, false); }

static void test_backward_recorded_alone(void **state) {
  (void)state;
  sim s;
  sim_init(&s);
  dt_replay r = {0};
  const int graph = 0;
  for (int step = 0; step < 6; step++) {
    op_call(&s, true);
    if (!dt_replay_pass(&r, &s.base, &graph, 1.0f, backward_only, &s)) backward_only(&s);
    optimizer_update(&s);
    /* An update the forward never saw before the recorded backward replays. */
    if (step == 4) {
      optimizer_update(&s);
      if (!dt_replay_pass(&r, &s.base, &graph, 1.0f, backward_only, &s)) backward_only(&s);
    }
  }
  assert_int_equal(r.recordings, 1);
  assert_int_equal(s.rec[0], ACT_CONVERT);
  assert_int_equal(s.stale_reads, 0);
  dt_replay_free(&r, &s.base);
}

/* The forward recorded in one recording and the backward in the next (as after a
 * re-recording): the backward must not trust the conversion of the first recording. */
static void test_two_recordings(void **state) {
  (void)state;
  sim s;
  sim_init(&s);
  for (int step = 0; step < 3; step++) {
    s.base.ops->capture_begin(&s.base);
    op_call(&s, true);
    void *c = s.base.ops->capture_end(&s.base);
    assert_int_equal(s.rec[0], ACT_CONVERT);
    s.base.ops->replay(&s.base, c);
    optimizer_update(&s);
    s.base.ops->capture_begin(&s.base);
    op_call(&s, false);
    c = s.base.ops->capture_end(&s.base);
    assert_int_equal(s.n_rec, 2);
    assert_int_equal(s.rec[0], ACT_CONVERT);
    s.base.ops->replay(&s.base, c);
  }
  assert_int_equal(s.stale_reads, 0);
  assert_int_equal(s.reads, 6);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sizes),
      cmocka_unit_test(test_op_by_op),
      cmocka_unit_test(test_held_uploads),
      cmocka_unit_test(test_replayed_steps),
      cmocka_unit_test(test_backward_recorded_alone),
      cmocka_unit_test(test_two_recordings),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
