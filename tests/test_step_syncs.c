/* test_step_syncs.c: a training step waits for the device once (src/step.c, dt_step_run: the
 * losses, top-1 count, non-finite flag and, with several ranks, the running statistics to
 * merge, in one to_host after the update; tests/test_mpi.sh runs it on 2 ranks),
 * in fp32, with gradient accumulation, with Dual-Cutout, and with a loss scale in fp16 and
 * train.nonfinite = skip, an overflow step included; a skipped step leaves weights, optimizer
 * state and running statistics exactly as they were. The real trainer on the CPU backend,
 * behind the counting wrapper of step_waits.h (the calls that wait on the CUDA backend);
 * tests/gpu/test_gpu_model.c runs the same on a GPU. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

#include <cmocka.h>

#include "step_waits.h"

static dt_comm *g_comm;

/* Each step waited once and let go of the batch's host memory; only overflow_step skipped,
 * and a skip left no trace. */
static void check(const char *what, const char *const *sets, int steps, int overflow_step) {
  sw_run r;
  assert_true(sw_run_steps(&r, what, g_comm, DT_DEVICE_CPU, sets, steps, overflow_step));
  assert_int_equal(r.steps, steps);
  assert_false(r.held_after);
  for (int i = 0; i < steps; i++) {
    assert_int_equal(sw_waits(&r.count[i]), 1);
    assert_int_equal(r.count[i].to_host, 1);
    assert_true(r.applied[i] == (i != overflow_step));
    assert_true(r.unchanged[i] == (i == overflow_step));
    assert_true(r.images[i] == 16 && r.loss[i] > 0 && r.correct[i] >= 0 && r.correct[i] <= 16);
  }
}

static void test_fp32(void **state) {
  (void)state;
  const char *sets[] = {NULL};
  check("fp32", sets, 4, -1);
}

static void test_accumulation(void **state) {
  (void)state;
  const char *two[] = {"train.accum_steps=2", NULL};
  check("accum_steps=2", two, 3, -1);
  const char *three[] = {"train.accum_steps=4", NULL};
  check("accum_steps=4", three, 3, -1);
}

static void test_dual_cutout(void **state) {
  (void)state;
  const char *sets[] = {"augment.dual_cutout=true", NULL};
  check("dual_cutout", sets, 3, -1);
  const char *accum[] = {"augment.dual_cutout=true", "train.accum_steps=2", NULL};
  check("dual_cutout, accum_steps=2", accum, 3, -1);
}

static void test_loss_scale(void **state) {
  (void)state;
  const char *fp16[] = {"train.precision=fp16", "train.loss_scale=dynamic",
                        "train.loss_scale_init=256", NULL};
  check("fp16, dynamic scale, overflow", fp16, 4, 2);
  const char *skip[] = {"train.nonfinite=skip", NULL};
  check("fp32, nonfinite=skip, overflow", skip, 3, 1);
}

int main(int argc, char **argv) {
  g_comm = dt_comm_init(&argc, &argv);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fp32),
      cmocka_unit_test(test_accumulation),
      cmocka_unit_test(test_dual_cutout),
      cmocka_unit_test(test_loss_scale),
  };
  int failed = cmocka_run_group_tests(tests, NULL, NULL);
  dt_comm_finalize(g_comm);
  return failed;
}
