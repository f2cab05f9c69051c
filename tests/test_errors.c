/* test_errors.c: the error slot of the input-error tier (src/common.h): the latest failure's
 * message is the one reported. A metrics file that cannot be written is only a warning for
 * the trainer, which goes on; a checkpoint that then fails must be reported with its own
 * message, not the metrics warning's. A caller may quote the callee's message in its own. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "common.h"
#include "io/checkpoint.h"
#include "io/metrics.h"

#define MISSING_DIR "/nonexistent-dtrain-test-dir"

static void test_warning_does_not_mask_later_error(void **s) {
  (void)s;
  dt_error_clear();
  dt_metrics *m = NULL;
  assert_int_not_equal(dt_metrics_open(&m, MISSING_DIR "/metrics.h5", 0), DT_OK);
  assert_non_null(strstr(dt_error_message(), "metrics"));
  /* The trainer prints that as a warning and goes on; the next checkpoint fails. */
  assert_int_not_equal(dt_checkpoint_seal(MISSING_DIR "/ckpt_00000020.h5"), DT_OK);
  const char *msg = dt_error_message();
  if (!strstr(msg, "checkpoint") || !strstr(msg, "ckpt_00000020.h5") || strstr(msg, "metrics"))
    fail_msg("the checkpoint error is reported as \"%s\"", msg);
}

static void test_caller_quotes_callee(void **s) {
  (void)s;
  dt_error_clear();
  assert_string_equal(dt_error_message(), "unknown error");
  assert_int_equal(dt_error_set(DT_ERR_DATA, "inner %d", 1), DT_ERR_DATA);
  assert_int_equal(dt_error_set(DT_ERR_IO, "outer: %s", dt_error_message()), DT_ERR_IO);
  assert_string_equal(dt_error_message(), "outer: inner 1");
  dt_error_clear();
  assert_string_equal(dt_error_message(), "unknown error");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_warning_does_not_mask_later_error),
      cmocka_unit_test(test_caller_quotes_callee),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
