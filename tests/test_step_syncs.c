/* test_step_syncs.c: a training step waits for the device once (src/step.c, dt_step_run), in
 * fp32, with gradient accumulation, with Dual-Cutout, and in fp16 with a dynamic loss scale,
 * a skipped overflow step included. The real trainer (dt_trainer_setup) runs on the CPU
 * backend behind a counting wrapper that models which calls wait on the CUDA backend
 * (src/cuda/cuda_internal.h, "Synchronisation"): to_host, download and all_finite always hand
 * results to the host and wait; to_device and upload wait unless the caller holds their host
 * memory (hold_host), which the wrapper adds to the CPU backend's table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "trainer.h"

static dt_comm *g_comm;

/* What one step asked of the backend. */
typedef struct {
  long to_host, download, all_finite, to_device, upload;
  long waiting_uploads; /* to_device and upload outside hold_host: they wait on CUDA */
  bool held;
} counts;

static counts g_n;
static dt_backend_ops g_inner, g_counting;

static void c_to_host(dt_backend *be, void *dst, const void *src, size_t bytes) {
  g_n.to_host++;
  g_inner.to_host(be, dst, src, bytes);
}
static void c_download(dt_backend *be, const dt_tensor *src, float *nchw_host) {
  g_n.download++;
  g_inner.download(be, src, nchw_host);
}
static bool c_all_finite(dt_backend *be, const float *x, size_t n) {
  g_n.all_finite++;
  return g_inner.all_finite(be, x, n);
}
static void c_to_device(dt_backend *be, void *dst, const void *src, size_t bytes) {
  g_n.to_device++;
  g_n.waiting_uploads += !g_n.held;
  g_inner.to_device(be, dst, src, bytes);
}
static void c_upload(dt_backend *be, const float *nchw_host, dt_tensor *dst) {
  g_n.upload++;
  g_n.waiting_uploads += !g_n.held;
  g_inner.upload(be, nchw_host, dst);
}
static void c_hold_host(dt_backend *be, bool hold) {
  g_n.held = hold;
  if (g_inner.hold_host) g_inner.hold_host(be, hold);
}

/* The calls of the step that wait for the device on CUDA. */
static long waits(const counts *c) {
  return c->to_host + c->download + c->all_finite + c->waiting_uploads;
}

static void wrap(dt_backend *be) {
  g_inner = *be->ops;
  g_counting = g_inner;
  g_counting.to_host = c_to_host;
  g_counting.download = c_download;
  g_counting.all_finite = c_all_finite;
  g_counting.to_device = c_to_device;
  g_counting.upload = c_upload;
  g_counting.hold_host = c_hold_host;
  be->ops = &g_counting;
}

/* The weights, the running statistics and the first optimizer state array, in host memory
 * (through the wrapped backend, uncounted). */
typedef struct {
  float *w, *buf, *state;
  size_t n_w, n_b;
  long steps;
} trained;

static void state_of(dt_trainer *t, trained *s) {
  const dt_params *ps = &t->model->params;
  if (!s->w) {
    s->w = malloc(ps->n_weights * sizeof(float));
    s->buf = malloc(DT_MAX(ps->n_buffers, 1) * sizeof(float));
    s->state = malloc(ps->n_weights * sizeof(float));
    s->n_w = ps->n_weights;
    s->n_b = ps->n_buffers;
  }
  g_inner.to_host(t->be, s->w, ps->weights, ps->n_weights * sizeof(float));
  g_inner.to_host(t->be, s->buf, ps->buffers, ps->n_buffers * sizeof(float));
  g_inner.to_host(t->be, s->state, t->opt.dev[0], ps->n_weights * sizeof(float));
  s->steps = t->opt.steps;
}

static bool same_state(const trained *a, const trained *b) {
  return a->steps == b->steps && memcmp(a->w, b->w, a->n_w * sizeof(float)) == 0 &&
         memcmp(a->state, b->state, a->n_w * sizeof(float)) == 0 &&
         memcmp(a->buf, b->buf, a->n_b * sizeof(float)) == 0;
}

static void free_state(trained *s) {
  free(s->w);
  free(s->buf);
  free(s->state);
}

/* Train `steps` steps of quickstart.ini with the assignments `sets` (NULL-terminated) and
 * check that each waited once; overflow_step: the step whose gradients are made infinite
 * (-1: none). Returns the most waits of a step. */
static long run_steps(const char *what, const char *const *sets, int steps, int overflow_step) {
  dt_config cfg;
  dt_config_defaults(&cfg);
  assert_int_equal(dt_config_load(&cfg, "configs/quickstart.ini"), DT_OK);
  const char *common[] = {"data.train_limit=96",  "data.test_limit=16", "train.batch_size=16",
                          "model.depth=8",        "train.threads=1",    "data.loader_threads=1",
                          "augment.random_crop=false"};
  for (size_t i = 0; i < DT_ARRAY_LEN(common); i++)
    assert_int_equal(dt_config_set(&cfg, common[i]), DT_OK);
  for (const char *const *s = sets; *s; s++) assert_int_equal(dt_config_set(&cfg, *s), DT_OK);
  assert_int_equal(dt_config_validate(&cfg), DT_OK);
  dt_trainer t;
  dt_status st = dt_trainer_setup(&t, &cfg, g_comm, DT_DEVICE_CPU);
  if (st != DT_OK) fprintf(stderr, "%s\n", dt_error_message());
  assert_int_equal(dt_trainer_join(&t, &st, DT_DEVICE_CPU), DT_OK);
  wrap(t.be);
  dt_step_start_loader(&t.step, t.train_ld, 0, 0);
  long most = 0, skipped = 0;
  trained before = {0}, after = {0};
  for (int i = 0; i < steps; i++) {
    const dt_batch *b = dt_loader_next(t.train_ld);
    assert_non_null(b);
    state_of(&t, &before);
    memset(&g_n, 0, sizeof g_n);
    const dt_step_result r = dt_step_run(&t.step, &t.opt, b, i, 0.01, false, i == overflow_step);
    print_message("%-34s step %d: %ld wait(s): to_host %ld, download %ld, all_finite %ld, "
                  "uploads outside hold %ld (of %ld to_device, %ld upload)%s\n",
                  what, i, waits(&g_n), g_n.to_host, g_n.download, g_n.all_finite,
                  g_n.waiting_uploads, g_n.to_device, g_n.upload,
                  r.verdict == DT_SCALE_APPLY ? "" : ", update skipped");
    skipped += r.verdict != DT_SCALE_APPLY;
    assert_true(r.verdict == DT_SCALE_APPLY || i == overflow_step);
    assert_true(r.images == b->n && r.loss_finite && r.correct >= 0 && r.correct <= b->n);
    assert_false(g_n.held); /* the step let go of the batch's host memory */
    /* A skipped update leaves no trace: weights, optimizer state and running statistics as
     * they were (one rank runs the update before the verdict and undoes it). */
    state_of(&t, &after);
    assert_true(same_state(&before, &after) == (r.verdict != DT_SCALE_APPLY));
    if (waits(&g_n) > most) most = waits(&g_n);
  }
  assert_int_equal(skipped, overflow_step >= 0);
  t.be->ops = &g_inner;
  free_state(&before);
  free_state(&after);
  dt_trainer_free(&t);
  dt_config_free(&cfg);
  return most;
}

static void test_fp32(void **state) {
  (void)state;
  const char *sets[] = {NULL};
  assert_int_equal(run_steps("fp32", sets, 4, -1), 1);
}

static void test_accumulation(void **state) {
  (void)state;
  const char *sets[] = {"train.accum_steps=2", NULL};
  assert_int_equal(run_steps("accum_steps=2", sets, 3, -1), 1);
  const char *three[] = {"train.accum_steps=3", "train.batch_size=24", NULL};
  assert_int_equal(run_steps("accum_steps=3", three, 3, -1), 1);
}

static void test_dual_cutout(void **state) {
  (void)state;
  const char *sets[] = {"augment.dual_cutout=true", NULL};
  assert_int_equal(run_steps("dual_cutout", sets, 3, -1), 1);
  const char *accum[] = {"augment.dual_cutout=true", "train.accum_steps=2", NULL};
  assert_int_equal(run_steps("dual_cutout, accum_steps=2", accum, 3, -1), 1);
}

static void test_fp16_loss_scale(void **state) {
  (void)state;
  const char *sets[] = {"train.precision=fp16", "train.loss_scale=dynamic",
                        "train.loss_scale_init=256", NULL};
  assert_int_equal(run_steps("fp16, dynamic scale, overflow", sets, 4, 2), 1);
  const char *skip[] = {"train.nonfinite=skip", NULL};
  assert_int_equal(run_steps("fp32, nonfinite=skip, overflow", skip, 3, 1), 1);
}

int main(int argc, char **argv) {
  g_comm = dt_comm_init(&argc, &argv);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fp32),
      cmocka_unit_test(test_accumulation),
      cmocka_unit_test(test_dual_cutout),
      cmocka_unit_test(test_fp16_loss_scale),
  };
  int failed = cmocka_run_group_tests(tests, NULL, NULL);
  dt_comm_finalize(g_comm);
  return failed;
}
