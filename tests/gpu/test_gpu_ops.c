/* test_gpu_ops.c: every op of the CUDA backend against the double-precision reference
 * (tests/ref/ref_ops.c), in fp32 with a relative error in norm below 1e-4.
 *
 * The checks are those of tests/test_cpu_ops.c, compiled here a second time with the backend
 * its fixture creates swapped for the CUDA one: the same ops, shapes, layouts (plain NCHW and
 * what a stem convolution writes, NHWC on the GPU), garbage-filled outputs and the residual
 * chain, so the two backends are held to exactly the same tests. That file only reaches its
 * backend through the ops table and alloc / to_device / to_host, so nothing else changes.
 *
 * Exits 77 (ctest: skipped) when there is no CUDA backend in this build or no usable GPU, and
 * fails if the shared tests never created the CUDA backend. DT_TEST_VERBOSE, DT_TEST_FILTER
 * and DT_TEST_SKIP work as in test_cpu_ops. */
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "common.h"

static int g_cuda_backends; /* CUDA backends the shared fixture created */

/* The fixture's backend: the CUDA one (threads are irrelevant there). */
static dt_backend *dt_test_gpu_backend(int threads) {
  dt_backend *be = dt_backend_create(DT_DEVICE_CUDA, threads);
  if (be && strcmp(be->ops->name, "cuda") == 0) g_cuda_backends++;
  return be;
}

#define dt_backend_cpu_create dt_test_gpu_backend
#define main dt_test_cpu_ops_main
#include "../test_cpu_ops.c"
#undef main
#undef dt_backend_cpu_create

int main(void) {
  dt_backend *probe = dt_backend_create(DT_DEVICE_CUDA, 1);
  if (!probe) {
    printf("test_gpu_ops: skipped: %s\n", dt_error_message());
    return 77;
  }
  probe->ops->destroy(probe);
  const int rc = dt_test_cpu_ops_main();
  if (g_cuda_backends == 0) {
    fprintf(stderr, "test_gpu_ops: the shared op tests did not run on the CUDA backend\n");
    return 1;
  }
  return rc;
}
