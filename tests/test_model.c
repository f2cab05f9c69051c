/* test_model.c: parameter counts and MACs of the model builders against
 * docs/reference-experiments.md "Common conventions" table, PyTorch state_dict names, and the fused
 * residual structure. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "models/model.h"

static long count(const char *block, long depth, bool last_bn, int channels, int classes) {
  dt_config cfg;
  dt_config_defaults(&cfg);
  cfg.model_depth = depth;
  cfg.model_block_type = dt_config_choice_parse("model", "block_type", block);
  cfg.model_add_last_bn = last_bn;
  dt_model *m = dt_model_create(&cfg, NULL, channels, 32, 32, classes);
  long n = dt_model_param_count(m);
  dt_model_free(m);
  dt_config_free(&cfg);
  return n;
}

static void test_spec_counts(void **state) {
  (void)state;
  assert_int_equal(count("basic", 20, false, 3, 10), 272282);
  assert_int_equal(count("basic", 56, false, 3, 10), 855578);
  assert_int_equal(count("basic", 110, false, 3, 10), 1730522);
  assert_int_equal(count("basic", 56, true, 3, 10), 857594);
  assert_int_equal(count("bottleneck", 164, false, 3, 10), 1619290);
  /* 1-channel input: 2 x 9 x 16 fewer stem weights; 100 classes: 90 x (64 + 1) more. */
  assert_int_equal(count("basic", 20, false, 1, 10), 272282 - 2 * 9 * 16);
  assert_int_equal(count("basic", 20, false, 3, 100), 272282 + 90 * 65);
}

static void test_names_and_macs(void **state) {
  (void)state;
  dt_config cfg;
  dt_config_defaults(&cfg);
  dt_model *m = dt_model_create(&cfg, NULL, 3, 32, 32, 10);
  const char *names[] = {"conv.weight", "stage1.block1.bn1.weight", "stage1.block1.bn1.running_var",
                         "stage1.block1.conv1.weight", "stage1.block1.conv2.weight",
                         "stage2.block1.shortcut.conv.weight", "stage3.block3.bn2.bias",
                         "bn.running_mean", "fc.weight", "fc.bias"};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++)
    assert_true(dt_params_find(&m->params, names[i]) >= 0);
  assert_true(dt_params_find(&m->params, "stage1.block1.shortcut.conv.weight") < 0);
  const dt_param *w = &m->params.items[dt_params_find(&m->params, "stage2.block1.shortcut.conv.weight")];
  assert_int_equal(w->ndim, 4);
  assert_int_equal(w->dims[0], 32);
  assert_int_equal(w->dims[1], 16);
  assert_int_equal(w->dims[2], 1);
  /* ResNet-20 on 32x32: about 41 M multiply-accumulates per image (conv + fc). */
  FILE *devnull = fopen("/dev/null", "w");
  long macs = dt_model_summary(m, devnull);
  fclose(devnull);
  long expect = 16L * 3 * 9 * 32 * 32                                  /* stem */
                + 6L * 16 * 16 * 9 * 32 * 32                           /* stage 1 */
                + (32L * 16 * 9 * 16 * 16 + 5L * 32 * 32 * 9 * 16 * 16 + 32L * 16 * 16 * 16) /* stage 2 */
                + (64L * 32 * 9 * 8 * 8 + 5L * 64 * 64 * 9 * 8 * 8 + 64L * 32 * 8 * 8) /* stage 3 */
                + 64L * 10;
  assert_int_equal(macs, expect);
  dt_model_free(m);
  dt_config_free(&cfg);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_spec_counts),
      cmocka_unit_test(test_names_and_macs),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
