/* test_gpu_ops.c: every op of the CUDA backend against the double-precision reference
 * (tests/ref/ref_ops.c), in fp32 with a relative error in norm below 1e-4, and the
 * convolutions in bf16 and fp16 below 2e-2 and 3e-3.
 *
 * The checks are those of tests/test_cpu_ops.c, compiled here a second time with the backend
 * its fixture creates swapped for the CUDA one: the same ops, shapes, layouts (plain NCHW and
 * what a stem convolution writes, NHWC on the GPU), garbage-filled outputs and the residual
 * chain, so the two backends are held to exactly the same tests. That file only reaches its
 * backend through the ops table and alloc / to_device / to_host, so nothing else changes.
 *
 * The tests run are listed below (GPU_OPS_TESTS) with the optional ops each needs (backend.h,
 * "ops of the other families"); a test whose ops the CUDA backend leaves NULL is reported as
 * not run. A test added to test_cpu_ops.c must be added to that list too.
 *
 * Exits 77 (ctest: skipped) when there is no CUDA backend in this build or no usable GPU, and
 * fails if the shared tests never created the CUDA backend. DT_TEST_VERBOSE, DT_TEST_FILTER
 * and DT_TEST_SKIP work as in test_cpu_ops. */
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "backend_factory.h"
#include "common.h"
#include "cpu/backend_cpu.h"

static int g_cuda_backends; /* CUDA backends the shared fixture created */

/* The fixture's backend: the CUDA one (threads are irrelevant there). */
static dt_backend *dt_test_gpu_backend(int threads) {
  dt_backend *be = dt_backend_create(DT_DEVICE_CUDA, threads, -1, 1);
  if (be && strcmp(be->ops->name, "cuda") == 0) g_cuda_backends++;
  return be;
}

#define dt_backend_cpu_create dt_test_gpu_backend
#define main dt_test_cpu_ops_main
#include "../test_cpu_ops.c"
#undef main
#undef dt_backend_cpu_create

/* The shared tests, each with whether the backend `o` has the ops it needs. */
#define GPU_OPS_TESTS(X)                                                                      \
  X(test_memory, true)                                                                        \
  X(test_conv, true)                                                                          \
  X(test_bn, true)                                                                            \
  X(test_eltwise, true)                                                                       \
  X(test_gap, true)                                                                           \
  X(test_linear, true)                                                                        \
  X(test_xent, true)                                                                          \
  X(test_chain, true)                                                                         \
  X(test_pool, o->pool_create)                                                                \
  X(test_concat_pad, o->concat_create && o->pad_channels_create)                              \
  X(test_dropout_sigmoid, o->dropout_create && o->sigmoid_create)                             \
  X(test_scale_shake, o->scale_create && o->shake_create)                                     \
  X(test_shift_bias, o->shift_create && o->bias_create && o->pool_create &&                   \
                         o->concat_create && o->pad_channels_create && o->dropout_create &&   \
                         o->sigmoid_create && o->scale_create && o->shake_create)           \
  X(test_conv_bf16, o->set_precision)                                                         \
  X(test_conv_fp16, o->set_precision)

int main(void) {
  dt_backend *probe = dt_backend_create(DT_DEVICE_CUDA, 1, -1, 1);
  if (!probe) {
    printf("test_gpu_ops: skipped: %s\n", dt_error_message());
    return 77;
  }
  const dt_backend_ops *o = probe->ops;
  struct CMUnitTest tests[32];
  size_t count = 0;
#define GPU_OPS_ADD(fn, available)                                                         \
  if (available) {                                                                         \
    const struct CMUnitTest t = cmocka_unit_test(fn);                                      \
    tests[count++] = t;                                                                    \
  } else {                                                                                 \
    printf("test_gpu_ops: %s not run: the CUDA backend lacks an op it needs\n", #fn);      \
  }
  GPU_OPS_TESTS(GPU_OPS_ADD)
#undef GPU_OPS_ADD
  probe->ops->destroy(probe);

  /* A backend error is fatal to the whole binary; these select tests while debugging. */
  const char *only = getenv("DT_TEST_FILTER"), *skip = getenv("DT_TEST_SKIP");
  if (only && *only) cmocka_set_test_filter(only);
  if (skip && *skip) cmocka_set_skip_filter(skip);
  const int rc = _cmocka_run_group_tests("test_gpu_ops", tests, count, setup_backend,
                                         teardown_backend);
  if (g_cuda_backends == 0) {
    fprintf(stderr, "test_gpu_ops: the shared op tests did not run on the CUDA backend\n");
    return 1;
  }
  return rc;
}
