/* test_backend_table.c: every op of backend.h is required. Each backend this build has fills
 * every member of DT_BACKEND_REQUIRED_OPS: the CPU backend as constructed, the CUDA backend's
 * table without a GPU (dt_backend_cuda_ops, in builds with the CUDA backend). And
 * dt_backend_ops_missing names each required member a table leaves NULL, one at a time, while
 * the optional capabilities (DT_BACKEND_OPTIONAL_OPS) may be NULL. Planning a graph on a table
 * with a hole fails naming the op (tests/test_layers.c, test_missing_op). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "backend.h"
#include "cpu/backend_cpu.h"
#ifdef DT_HAVE_CUDA
#include "cuda/backend_cuda.h"
#endif

/* No required member of ops is NULL. */
static void expect_complete(const dt_backend_ops *ops) {
  const char *missing = dt_backend_ops_missing(ops);
  if (missing) fail_msg("the %s backend leaves op %s NULL", ops->name, missing);
}

static void test_cpu_table(void **state) {
  (void)state;
  dt_backend *be = dt_backend_cpu_create(1);
  assert_non_null(be);
  assert_string_equal(be->ops->name, "cpu");
  expect_complete(be->ops);
  be->ops->destroy(be);
}

static void test_cuda_table(void **state) {
  (void)state;
#ifdef DT_HAVE_CUDA
  const dt_backend_ops *ops = dt_backend_cuda_ops();
  assert_string_equal(ops->name, "cuda");
  expect_complete(ops);
#else
  skip(); /* no CUDA backend in this build */
#endif
}

/* Each required member, left NULL in a copy of a complete table, is the one named. */
static void test_each_hole_named(void **state) {
  (void)state;
  dt_backend *be = dt_backend_cpu_create(1);
  assert_non_null(be);
  int checked = 0;
#define DT_HOLE(m)                                                   \
  {                                                                  \
    dt_backend_ops ops = *be->ops;                                   \
    ops.m = NULL;                                                    \
    const char *missing = dt_backend_ops_missing(&ops);              \
    if (!missing || strcmp(missing, #m) != 0)                        \
      fail_msg("%s NULL: named %s", #m, missing ? missing : "none"); \
    checked++;                                                       \
  }
  DT_BACKEND_REQUIRED_OPS(DT_HOLE)
#undef DT_HOLE
  assert_true(checked > 50);
  /* The optional capabilities may all be NULL. */
  dt_backend_ops ops = *be->ops;
#define DT_CLEAR(m) ops.m = NULL;
  DT_BACKEND_OPTIONAL_OPS(DT_CLEAR)
#undef DT_CLEAR
  assert_null(dt_backend_ops_missing(&ops));
  be->ops->destroy(be);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_cpu_table),
      cmocka_unit_test(test_cuda_table),
      cmocka_unit_test(test_each_hole_named),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
