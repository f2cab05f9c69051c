/* test_gpu_place.c: the GPU placement policy (src/gpu_place.c), every branch: a process on its
 * own, one rank per GPU, ranks past the last GPU, no GPU at all, and what the messages say
 * (counts, CUDA_VISIBLE_DEVICES as given or unset, the fix). Runs without a GPU. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "gpu_place.h"

/* The current error message contains `fragment`. */
static void expect_in_message(const char *fragment) {
  const char *msg = dt_error_message();
  if (!strstr(msg, fragment)) fail_msg("message \"%s\" lacks \"%s\"", msg, fragment);
}

/* Place one rank expecting an error; the device must stay untouched. */
static void place_fails(int local_rank, int local_size, int visible, const char *cvd) {
  dt_error_clear();
  int device = -42;
  assert_int_equal(dt_gpu_place(local_rank, local_size, visible, cvd, &device), DT_ERR_CONFIG);
  assert_int_equal(device, -42);
  assert_true(strlen(dt_error_message()) > 0);
}

static int place_ok(int local_rank, int local_size, int visible, const char *cvd) {
  dt_error_clear();
  int device = -42;
  assert_int_equal(dt_gpu_place(local_rank, local_size, visible, cvd, &device), DT_OK);
  /* No message was recorded: a first one now is kept. */
  dt_error_set(DT_ERR_IO, "sentinel");
  assert_string_equal(dt_error_message(), "sentinel");
  return device;
}

static void test_alone_takes_gpu0(void **state) {
  (void)state;
  assert_int_equal(place_ok(-1, 1, 1, NULL), 0);
  assert_int_equal(place_ok(-1, 1, 8, "3,5"), 0);
  /* Alone means alone: the local size a lone process passes does not matter. */
  assert_int_equal(place_ok(-1, 4, 2, NULL), 0);
}

static void test_one_gpu_per_local_rank(void **state) {
  (void)state;
  assert_int_equal(place_ok(0, 1, 1, NULL), 0);
  for (int r = 0; r < 4; r++) assert_int_equal(place_ok(r, 4, 4, "4,5,6,7"), r);
  /* Fewer ranks than GPUs: the first ones are used. */
  assert_int_equal(place_ok(1, 2, 8, NULL), 1);
}

static void test_too_many_ranks(void **state) {
  (void)state;
  place_fails(0, 4, 2, "0,1");
  expect_in_message("4 ranks on this node but only 2 GPUs visible (CUDA_VISIBLE_DEVICES=0,1)");
  expect_in_message("start at most 2 ranks per node, e.g. mpirun --map-by ppr:2:node");
  expect_in_message("--device cpu");
  /* Every rank of the node fails, not only those past the last GPU. */
  place_fails(3, 4, 2, "0,1");
  place_fails(1, 2, 1, NULL);
  expect_in_message("2 ranks on this node but only 1 GPU visible (CUDA_VISIBLE_DEVICES unset)");
  expect_in_message("start at most 1 rank per node, e.g. mpirun --map-by ppr:1:node");
  /* An empty CUDA_VISIBLE_DEVICES is quoted as given, not as unset. */
  place_fails(1, 3, 2, "");
  expect_in_message("(CUDA_VISIBLE_DEVICES=)");
}

static void test_rank_past_local_size(void **state) {
  (void)state;
  /* A caller's inconsistent pair still cannot put a rank past the last GPU. */
  place_fails(2, 1, 2, NULL);
  expect_in_message("3 ranks on this node but only 2 GPUs visible");
  assert_int_equal(place_ok(1, 1, 2, NULL), 1);
}

static void test_no_gpu(void **state) {
  (void)state;
  place_fails(-1, 1, 0, NULL);
  expect_in_message("no GPU visible (CUDA_VISIBLE_DEVICES unset); use --device cpu");
  place_fails(0, 1, 0, "");
  expect_in_message("no GPU visible (CUDA_VISIBLE_DEVICES=)");
  place_fails(0, 1, -1, "0");
  expect_in_message("(CUDA_VISIBLE_DEVICES=0)");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_alone_takes_gpu0),
      cmocka_unit_test(test_one_gpu_per_local_rank),
      cmocka_unit_test(test_too_many_ranks),
      cmocka_unit_test(test_rank_past_local_size),
      cmocka_unit_test(test_no_gpu),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
