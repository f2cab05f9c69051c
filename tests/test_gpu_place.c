/* test_gpu_place.c: the GPU placement policy (src/gpu_place.c), every branch: a process on its
 * own, one rank per GPU, one GPU per rank bound by the launcher (Slurm, MIG), ranks past the
 * last GPU, no GPU at all, what the messages say (counts, CUDA_VISIBLE_DEVICES as given or
 * unset, the fix), and a table of the launcher layouts known to occur. Runs without a GPU. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
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
  place_fails(2, 3, 2, NULL);
  expect_in_message("3 ranks on this node but only 2 GPUs visible (CUDA_VISIBLE_DEVICES unset)");
  expect_in_message("srun --gpus-per-task=1");
  /* An empty CUDA_VISIBLE_DEVICES is quoted as given, not as unset. */
  place_fails(1, 3, 2, "");
  expect_in_message("(CUDA_VISIBLE_DEVICES=)");
}

/* Exactly one GPU visible through CUDA_VISIBLE_DEVICES is this rank's own, whatever the local
 * rank and size: the launcher bound one device to each rank. With the variable unset, one
 * visible GPU is the node's only one, and 8 ranks may not share it. */
static void test_one_visible_gpu_is_used(void **state) {
  (void)state;
  for (int r = 0; r < 8; r++) {
    place_fails(r, 8, 1, NULL);
    expect_in_message("8 ranks on this node but only 1 GPUs visible (CUDA_VISIBLE_DEVICES unset)");
    char cvd[8];
    snprintf(cvd, sizeof cvd, "%d", r);
    assert_int_equal(place_ok(r, 8, 1, cvd), 0);
  }
  /* A local rank past the local size (a caller's inconsistent pair) still has its one GPU. */
  assert_int_equal(place_ok(5, 2, 1, "0"), 0);
}

/* The layouts launchers produce, as one rank of the node sees them: local rank and size
 * (Open MPI's shared-memory split), the devices the CUDA runtime counts, and
 * CUDA_VISIBLE_DEVICES as the launcher set it. device -1: refused. */
typedef struct {
  const char *layout;
  int local_rank, local_size, visible;
  const char *cvd;
  int device;
} layout_case;

static const layout_case layouts[] = {
    {"mpirun -np 8, whole node, variable unset", 5, 8, 8, NULL, 5},
    {"mpirun -np 8, whole node, list", 7, 8, 8, "0,1,2,3,4,5,6,7", 7},
    {"mpirun -np 4 on a 4-GPU subset", 3, 4, 4, "4,5,6,7", 3},
    {"mpirun -np 2, node of 8", 1, 2, 8, NULL, 1},
    {"mpirun -np 8 on a 4-GPU node", 6, 8, 4, NULL, -1},
    {"mpirun -np 4 on a one-GPU node, variable unset", 2, 4, 1, NULL, -1},
    {"mpirun -np 4 on a one-GPU node, rank 0", 0, 4, 1, NULL, -1},
    {"mpirun -np 8 on a 4-GPU node, rank below the count", 0, 8, 4, "0,1,2,3", -1},
    {"srun --gpus-per-task=1, per-task list entry", 3, 8, 1, "3", 0},
    {"srun --gpus-per-task=1 under device cgroups, renumbered", 6, 8, 1, "0", 0},
    {"srun --gpu-bind=single:1", 2, 4, 1, "2", 0},
    {"srun --gpus-per-task=1, by UUID", 4, 8, 1, "GPU-8f6c2e1a-3b9d-4c55-a1e2-0c9d7b3e4f10", 0},
    {"srun --gpus-per-task=2, both of the task's GPUs", 1, 2, 2, "2,3", 1},
    {"srun --gpus-per-task=2 with 8 tasks: refused", 5, 8, 2, "2,3", -1},
    {"UUID list, whole node", 1, 2, 2,
     "GPU-8f6c2e1a-3b9d-4c55-a1e2-0c9d7b3e4f10,GPU-1d2e3f40-5a6b-4c7d-8e9f-a0b1c2d3e4f5", 1},
    {"MIG instance per rank, new style", 6, 7, 1, "MIG-4b4b1a2c-5e6f-5a7b-8c9d-0e1f2a3b4c5d", 0},
    {"MIG instance per rank, old style", 2, 7, 1, "MIG-GPU-8f6c2e1a-3b9d-4c55-a1e2-0c9d7b3e4f10/1/0",
     0},
    {"single process, whole node", -1, 1, 8, NULL, 0},
    {"single process, one of a list", -1, 1, 3, "5,6,7", 0},
    {"empty variable: no device", 0, 1, 0, "", -1},
    {"NoDevFiles (Slurm without GPUs)", 0, 4, 0, "NoDevFiles", -1},
    {"invalid first entry: CUDA counts none", 0, 1, 0, "-1", -1},
    {"invalid later entry: CUDA counts those before it", 1, 2, 2, "0,1,-1,3", 1},
    {"local rank past the device count", 9, 8, 8, NULL, -1},
    {"local rank past the device count, one device", 9, 8, 1, "1", 0},
};

static void test_launcher_layouts(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof layouts / sizeof layouts[0]; i++) {
    const layout_case *c = &layouts[i];
    dt_error_clear();
    int device = -42;
    const dt_status st = dt_gpu_place(c->local_rank, c->local_size, c->visible, c->cvd, &device);
    if (c->device < 0) {
      if (st != DT_ERR_CONFIG || device != -42)
        fail_msg("%s: expected a refusal, got status %d device %d", c->layout, (int)st, device);
      if (c->cvd && !strstr(dt_error_message(), c->cvd))
        fail_msg("%s: message \"%s\" does not quote CUDA_VISIBLE_DEVICES", c->layout,
                 dt_error_message());
    } else if (st != DT_OK || device != c->device) {
      fail_msg("%s: expected GPU %d, got status %d device %d (%s)", c->layout, c->device,
               (int)st, device, dt_error_message());
    }
  }
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
      cmocka_unit_test(test_one_visible_gpu_is_used),
      cmocka_unit_test(test_launcher_layouts),
      cmocka_unit_test(test_no_gpu),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
