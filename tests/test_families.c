/* test_families.c: the family builders of src/models/ against docs/reference-experiments.md "Common
 * conventions" parameter-count table (exact integers, 3x32x32 input, 10 classes), its 100-class and
 * 1-channel rules, the PyTorch state_dict names and shapes of each family, the multiply-accumulates
 * of ResNet-preact-20, the cross-key checks of each family's depth formula, and the
 * initialisation fan per family. Counting builds a graph without a backend, so no layer runs
 * here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "models/model.h"

#define MAX_SETS 10

/* A configuration as --set overrides over the defaults. */
typedef struct {
  const char *label;
  const char *sets[MAX_SETS];
} spec_cfg;

static void make_cfg(dt_config *cfg, const spec_cfg *s) {
  dt_config_defaults(cfg);
  assert_int_equal(dt_config_set(cfg, "data.dataset=cifar10"), DT_OK); /* the counts are for CIFAR-10 */
  for (int i = 0; i < MAX_SETS && s->sets[i]; i++) {
    if (dt_config_set(cfg, s->sets[i]) != DT_OK) fail_msg("%s: %s", s->label, dt_error_message());
  }
  dt_error_clear();
  if (dt_config_validate(cfg) != DT_OK) fail_msg("%s: rejected: %s", s->label, dt_error_message());
}

static dt_model *build(const spec_cfg *s, dt_config *cfg, int channels, int size, int classes) {
  make_cfg(cfg, s);
  return dt_model_create(cfg, NULL, channels, size, size, classes);
}

static long count(const spec_cfg *s, int channels, int size, int classes) {
  dt_config cfg;
  dt_model *m = build(s, &cfg, channels, size, classes);
  long n = dt_model_param_count(m);
  /* every family's summary walks its nodes (kinds, shapes) without a backend */
  FILE *devnull = fopen("/dev/null", "w");
  assert_non_null(devnull);
  assert_true(dt_model_summary(m, devnull) > 0);
  fclose(devnull);
  dt_model_free(m);
  dt_config_free(&cfg);
  return n;
}

/* ---- docs/reference-experiments.md "Common conventions" rows ---- */
static const spec_cfg k_vgg = {"VGG-15 BN", {"model.name=vgg"}};
static const spec_cfg k_resnet20 = {"ResNet-20", {"model.name=resnet", "model.depth=20"}};
static const spec_cfg k_resnet56 = {"ResNet-56", {"model.name=resnet", "model.depth=56"}};
static const spec_cfg k_resnet110 = {"ResNet-110", {"model.name=resnet", "model.depth=110"}};
static const spec_cfg k_preact20 = {"ResNet-preact-20", {"model.depth=20"}};
static const spec_cfg k_preact56 = {"ResNet-preact-56", {"model.depth=56"}};
static const spec_cfg k_preact110 = {"ResNet-preact-110", {"model.depth=110"}};
static const spec_cfg k_preact56_bn = {"ResNet-preact-56 last BN",
                                       {"model.depth=56", "model.add_last_bn=true"}};
static const spec_cfg k_preact164 = {"ResNet-preact-164 bottleneck",
                                     {"model.depth=164", "model.block_type=bottleneck"}};
static const spec_cfg k_preact20_w4 = {"ResNet-preact-20 c0 64",
                                       {"model.depth=20", "model.initial_channels=64"}};
static const spec_cfg k_preact50 = {"ResNet-preact-50", {"model.depth=50"}};
static const spec_cfg k_preact50_w4 = {"ResNet-preact-50 c0 64",
                                       {"model.depth=50", "model.initial_channels=64"}};
static const spec_cfg k_se110 = {"SE-ResNet-preact-110",
                                 {"model.name=se_resnet_preact", "model.depth=110",
                                  "model.se_reduction=16", "model.remove_first_relu=true",
                                  "model.add_last_bn=true", "model.preact_stage=true,false,false"}};
static const spec_cfg k_wrn28_10 = {"WRN-28-10",
                                    {"model.name=wrn", "model.depth=28", "model.widening_factor=10"}};
static const spec_cfg k_bc100 = {"DenseNet-BC-100 k=12",
                                 {"model.name=densenet", "model.depth=100",
                                  "model.block_type=bottleneck", "model.growth_rate=12",
                                  "model.compression_rate=0.5"}};
static const spec_cfg k_dense100 = {"DenseNet-100 k=12",
                                    {"model.name=densenet", "model.depth=100",
                                     "model.block_type=basic", "model.growth_rate=12",
                                     "model.compression_rate=1"}};
static const spec_cfg k_bc250 = {"DenseNet-BC-250 k=24",
                                 {"model.name=densenet", "model.depth=250",
                                  "model.block_type=bottleneck", "model.growth_rate=24"}};
static const spec_cfg k_bc190 = {"DenseNet-BC-190 k=40",
                                 {"model.name=densenet", "model.depth=190",
                                  "model.block_type=bottleneck", "model.growth_rate=40"}};
static const spec_cfg k_pyr110_84 = {"PyramidNet-110 alpha 84",
                                     {"model.name=pyramidnet", "model.depth=110", "model.alpha=84"}};
static const spec_cfg k_pyr110_270 = {"PyramidNet-110 alpha 270",
                                      {"model.name=pyramidnet", "model.depth=110", "model.alpha=270"}};
static const spec_cfg k_pyr164 = {"PyramidNet-164 bottleneck alpha 270",
                                  {"model.name=pyramidnet", "model.depth=164",
                                   "model.block_type=bottleneck", "model.alpha=270"}};
static const spec_cfg k_pyr272 = {"PyramidNet-272 bottleneck alpha 200",
                                  {"model.name=pyramidnet", "model.depth=272",
                                   "model.block_type=bottleneck", "model.alpha=200"}};
#define RESNEXT(card) \
  {"ResNeXt-29 " #card "x64d", {"model.name=resnext", "model.depth=29", "model.initial_channels=64", \
                               "model.cardinality=" #card, "model.base_channels=64"}}
static const spec_cfg k_resnext4 = RESNEXT(4), k_resnext8 = RESNEXT(8), k_resnext16 = RESNEXT(16);
#define SHAKE(c) \
  {"shake-shake-26 2x" #c "d", {"model.name=shake_shake", "model.depth=26", "model.initial_channels=" #c}}
static const spec_cfg k_shake32 = SHAKE(32), k_shake64 = SHAKE(64), k_shake96 = SHAKE(96),
                      k_shake128 = SHAKE(128);

typedef struct {
  const spec_cfg *cfg;
  long params; /* "Common conventions" table: 3x32x32, 10 classes */
} spec_row;

static const spec_row k_rows[] = {
    {&k_vgg, 14728266},        {&k_resnet20, 272474},       {&k_resnet56, 855770},
    {&k_resnet110, 1730714},   {&k_preact20, 272282},       {&k_preact56, 855578},
    {&k_preact110, 1730522},   {&k_preact56_bn, 857594},    {&k_preact164, 1619290},
    {&k_preact20_w4, 4326986}, {&k_preact50, 758362},       {&k_preact50_w4, 12077386},
    {&k_se110, 1748792},       {&k_wrn28_10, 36479194},     {&k_bc100, 769162},
    {&k_dense100, 7083538},    {&k_bc250, 15324406},        {&k_bc190, 25624430},
    {&k_pyr110_84, 3904446},   {&k_pyr110_270, 28485477},   {&k_pyr164, 27216021},
    {&k_pyr272, 26210842},     {&k_resnext4, 17562442},     {&k_resnext8, 34426698},
    {&k_resnext16, 68155210},  {&k_shake32, 2923162},       {&k_shake64, 11653978},
    {&k_shake96, 26192922},    {&k_shake128, 46539994},
};

static void test_spec_table(void **state) {
  (void)state;
  int bad = 0;
  for (size_t i = 0; i < sizeof k_rows / sizeof *k_rows; i++) {
    long got = count(k_rows[i].cfg, 3, 32, 10);
    printf("%-40s %10ld %10ld%s\n", k_rows[i].cfg->label, k_rows[i].params, got,
           got == k_rows[i].params ? "" : "  MISMATCH");
    bad += got != k_rows[i].params;
  }
  assert_int_equal(bad, 0);
}

/* docs/reference-experiments.md "Common conventions": 100 classes add 90 (C_last + 1); a 1-channel
 * input removes 2 x 9 x C_stem. */
typedef struct {
  const spec_cfg *cfg;
  long params;
  int c_last, c_stem;
} rule_row;

static const rule_row k_rules[] = {
    {&k_wrn28_10, 36479194, 640, 16},  {&k_bc100, 769162, 342, 24},
    {&k_pyr110_270, 28485477, 286, 16}, {&k_resnext8, 34426698, 1024, 64},
    {&k_shake96, 26192922, 384, 16},   {&k_se110, 1748792, 64, 16},
    {&k_resnet110, 1730714, 64, 16},   {&k_pyr164, 27216021, 1144, 16},
};

static void test_spec_rules(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof k_rules / sizeof *k_rules; i++) {
    const rule_row *r = &k_rules[i];
    long c100 = count(r->cfg, 3, 32, 100), gray = count(r->cfg, 1, 28, 10);
    printf("%-40s 100 classes %10ld (want %ld), 1x28x28 %10ld (want %ld)\n", r->cfg->label, c100,
           r->params + 90L * (r->c_last + 1), gray, r->params - 2L * 9 * r->c_stem);
    assert_int_equal(c100, r->params + 90L * (r->c_last + 1));
    assert_int_equal(gray, r->params - 2L * 9 * r->c_stem);
  }
  /* VGG keeps its count on CIFAR-100 apart from the FC: 90 x (512 + 1) more. */
  assert_int_equal(count(&k_vgg, 3, 32, 100), 14728266 + 90L * 513);
  /* ResNet-preact-20: a 1-channel 32x32 input has 2 x 9 x 16 fewer stem weights; 100 classes
   * 90 x (64 + 1) more. */
  assert_int_equal(count(&k_preact20, 1, 32, 10), 272282 - 2 * 9 * 16);
  assert_int_equal(count(&k_preact20, 3, 32, 100), 272282 + 90 * 65);
}

/* ---- names and shapes ---- */
static void expect_param(const dt_model *m, const char *label, const char *name, int ndim,
                         int d0, int d1, int d2, int d3) {
  int i = dt_params_find(&m->params, name);
  if (i < 0) fail_msg("%s: no parameter %s", label, name);
  const dt_param *p = &m->params.items[i];
  const int want[4] = {d0, d1, d2, d3};
  assert_int_equal(p->ndim, ndim);
  for (int d = 0; d < ndim; d++) {
    if (p->dims[d] != want[d])
      fail_msg("%s: %s dim %d is %d, want %d", label, name, d, p->dims[d], want[d]);
  }
}

static void expect_absent(const dt_model *m, const char *label, const char *name) {
  if (dt_params_find(&m->params, name) >= 0) fail_msg("%s: unexpected parameter %s", label, name);
}

static void test_names_and_shapes(void **state) {
  (void)state;
  dt_config cfg;
  dt_model *m = build(&k_resnet20, &cfg, 3, 32, 10);
  expect_param(m, "resnet", "bn.weight", 1, 16, 0, 0, 0);
  expect_param(m, "resnet", "stage1.block1.bn2.running_var", 1, 16, 0, 0, 0);
  expect_param(m, "resnet", "stage2.block1.shortcut.conv.weight", 4, 32, 16, 1, 1);
  expect_param(m, "resnet", "stage2.block1.shortcut.bn.bias", 1, 32, 0, 0, 0);
  expect_absent(m, "resnet", "stage1.block1.shortcut.conv.weight");
  dt_model_free(m);
  dt_config_free(&cfg);

  m = build(&k_wrn28_10, &cfg, 3, 32, 10);
  expect_param(m, "wrn", "conv.weight", 4, 16, 3, 3, 3);
  expect_param(m, "wrn", "stage1.block1.shortcut.conv.weight", 4, 160, 16, 1, 1);
  expect_param(m, "wrn", "stage3.block4.conv2.weight", 4, 640, 640, 3, 3);
  expect_param(m, "wrn", "bn.running_mean", 1, 640, 0, 0, 0);
  expect_absent(m, "wrn", "stage1.block2.shortcut.conv.weight");
  dt_model_free(m);
  dt_config_free(&cfg);

  m = build(&k_bc100, &cfg, 3, 32, 10);
  expect_param(m, "densenet", "conv.weight", 4, 24, 3, 3, 3);
  expect_param(m, "densenet", "stage1.block1.conv1.weight", 4, 48, 24, 1, 1);
  expect_param(m, "densenet", "stage1.block16.conv2.weight", 4, 12, 48, 3, 3);
  expect_param(m, "densenet", "stage1.transition.conv.weight", 4, 108, 216, 1, 1);
  expect_param(m, "densenet", "stage2.transition.conv.weight", 4, 150, 300, 1, 1);
  expect_param(m, "densenet", "bn.weight", 1, 342, 0, 0, 0);
  expect_absent(m, "densenet", "stage3.transition.conv.weight");
  dt_model_free(m);
  dt_config_free(&cfg);

  m = build(&k_pyr110_270, &cfg, 3, 32, 10);
  expect_param(m, "pyramidnet", "bn1.weight", 1, 16, 0, 0, 0);
  expect_param(m, "pyramidnet", "stage1.block1.conv1.weight", 4, 21, 16, 3, 3);
  expect_param(m, "pyramidnet", "stage3.block18.bn3.weight", 1, 286, 0, 0, 0);
  expect_param(m, "pyramidnet", "bn2.weight", 1, 286, 0, 0, 0);
  dt_model_free(m);
  dt_config_free(&cfg);

  m = build(&k_resnext8, &cfg, 3, 32, 10);
  expect_param(m, "resnext", "stage1.block1.conv2.weight", 4, 512, 64, 3, 3);
  expect_param(m, "resnext", "stage3.block1.conv2.weight", 4, 2048, 256, 3, 3);
  expect_param(m, "resnext", "stage1.block1.shortcut.conv.weight", 4, 256, 64, 1, 1);
  expect_param(m, "resnext", "fc.weight", 2, 10, 1024, 0, 0);
  dt_model_free(m);
  dt_config_free(&cfg);

  m = build(&k_shake96, &cfg, 3, 32, 10);
  expect_param(m, "shake", "stage1.block1.residual_path1.conv1.weight", 4, 96, 16, 3, 3);
  expect_param(m, "shake", "stage1.block1.residual_path2.bn2.weight", 1, 96, 0, 0, 0);
  expect_param(m, "shake", "stage1.block1.shortcut.skip.conv1.weight", 4, 48, 16, 1, 1);
  expect_param(m, "shake", "stage2.block1.shortcut.skip.conv2.weight", 4, 96, 96, 1, 1);
  expect_param(m, "shake", "stage3.block1.shortcut.skip.bn.weight", 1, 384, 0, 0, 0);
  expect_absent(m, "shake", "stage1.block2.shortcut.skip.conv1.weight");
  dt_model_free(m);
  dt_config_free(&cfg);

  m = build(&k_se110, &cfg, 3, 32, 10);
  expect_param(m, "se", "stage1.block1.se.fc1.weight", 2, 1, 16, 0, 0);
  expect_param(m, "se", "stage1.block1.se.fc2.bias", 1, 16, 0, 0, 0);
  expect_param(m, "se", "stage3.block18.se.fc1.weight", 2, 4, 64, 0, 0);
  expect_param(m, "se", "stage3.block18.bn3.weight", 1, 64, 0, 0, 0);
  dt_model_free(m);
  dt_config_free(&cfg);

  m = build(&k_vgg, &cfg, 3, 32, 10);
  expect_param(m, "vgg", "stage1.conv0.weight", 4, 64, 3, 3, 3);
  expect_param(m, "vgg", "stage1.conv0.bias", 1, 64, 0, 0, 0);
  expect_param(m, "vgg", "stage5.conv2.weight", 4, 512, 512, 3, 3);
  expect_param(m, "vgg", "stage5.bn2.running_var", 1, 512, 0, 0, 0);
  expect_param(m, "vgg", "fc.weight", 2, 10, 512, 0, 0);
  expect_absent(m, "vgg", "stage1.conv2.weight");
  dt_model_free(m);
  dt_config_free(&cfg);
}

/* ResNet-preact-20 (the default model): its PyTorch names, the projection shortcut only where
 * the shape changes, and about 41 M multiply-accumulates per image on 32x32 (conv + fc). */
static void test_preact_names_and_macs(void **state) {
  (void)state;
  dt_config cfg;
  dt_model *m = build(&k_preact20, &cfg, 3, 32, 10);
  const char *names[] = {"conv.weight", "stage1.block1.bn1.weight", "stage1.block1.bn1.running_var",
                         "stage1.block1.conv1.weight", "stage1.block1.conv2.weight",
                         "stage2.block1.shortcut.conv.weight", "stage3.block3.bn2.bias",
                         "bn.running_mean", "fc.weight", "fc.bias"};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++)
    if (dt_params_find(&m->params, names[i]) < 0) fail_msg("resnet_preact: no parameter %s", names[i]);
  expect_absent(m, "resnet_preact", "stage1.block1.shortcut.conv.weight");
  expect_param(m, "resnet_preact", "stage2.block1.shortcut.conv.weight", 4, 32, 16, 1, 1);
  FILE *devnull = fopen("/dev/null", "w");
  assert_non_null(devnull);
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

/* The last value of each graph is the (N, classes) logits at the right spatial size. */
static void test_output_shapes(void **state) {
  (void)state;
  const spec_cfg *cfgs[] = {&k_vgg,  &k_resnet20, &k_wrn28_10, &k_bc100,
                            &k_pyr164, &k_resnext4, &k_shake32, &k_se110};
  for (size_t i = 0; i < sizeof cfgs / sizeof *cfgs; i++) {
    dt_config cfg;
    dt_model *m = build(cfgs[i], &cfg, 3, 32, 7);
    const dt_graph *g = m->graphs[0].g;
    dt_shape s = dt_graph_shape(g, g->n_nodes);
    assert_int_equal(s.c, 7);
    assert_int_equal(s.h, 1);
    assert_int_equal(s.w, 1);
    dt_model_free(m);
    dt_config_free(&cfg);
  }
}

/* ---- cross-key checks ---- */
static void expect_rejected(const char *const *sets, const char *fragment) {
  dt_config cfg;
  dt_config_defaults(&cfg);
  for (int i = 0; sets[i]; i++) assert_int_equal(dt_config_set(&cfg, sets[i]), DT_OK);
  dt_error_clear();
  if (dt_config_validate(&cfg) != DT_ERR_CONFIG) fail_msg("accepted, expected: %s", fragment);
  if (!strstr(dt_error_message(), fragment))
    fail_msg("message \"%s\" lacks \"%s\"", dt_error_message(), fragment);
  dt_config_free(&cfg);
}

static void test_depth_checks(void **state) {
  (void)state;
  expect_rejected((const char *[]){"model.name=wrn", "model.depth=26", NULL},
                  "depth = 26 does not fit name = wrn: the depth must be 6n+4");
  expect_rejected((const char *[]){"model.name=wrn", "model.depth=26", NULL}, "nearest: 22 or 28");
  expect_rejected((const char *[]){"model.name=densenet", "model.depth=101",
                                   "model.block_type=bottleneck", NULL},
                  "name = densenet with block_type = bottleneck: the depth must be 6n+4");
  expect_rejected((const char *[]){"model.name=densenet", "model.depth=101", NULL},
                  "3n+4 (accepted: 40, 100");
  expect_rejected((const char *[]){"model.name=resnext", "model.depth=28", NULL},
                  "depth = 28 does not fit name = resnext: the depth must be 9n+2");
  expect_rejected((const char *[]){"model.name=shake_shake", "model.depth=27", NULL},
                  "nearest: 26 or 32");
  expect_rejected((const char *[]){"model.name=pyramidnet", "model.depth=111",
                                   "model.block_type=bottleneck", NULL},
                  "name = pyramidnet with block_type = bottleneck: the depth must be 9n+2");
  expect_rejected((const char *[]){"model.name=resnet", "model.depth=21", NULL}, "6n+2");
  expect_rejected((const char *[]){"model.name=se_resnet_preact", "model.depth=21", NULL}, "6n+2");
  expect_rejected((const char *[]){"model.name=shake_shake", "model.depth=26",
                                   "model.initial_channels=33", NULL},
                  "initial_channels = 33: shake_shake needs an even width");
  expect_rejected((const char *[]){"model.name=se_resnet_preact", "model.depth=20",
                                   "model.se_reduction=32", NULL},
                  "se_reduction = 32 is greater than initial_channels = 16");
  expect_rejected((const char *[]){"model.name=vgg", "data.dataset=fashion_mnist", NULL},
                  "would vanish");
  expect_rejected((const char *[]){"model.name=vgg", "data.dataset=cifar10",
                                   "model.vgg_layers=2,2,3,3", NULL},
                  "vgg_channels has 5 values and vgg_layers 4");
  expect_rejected((const char *[]){"model.name=densenet", "model.depth=10",
                                   "model.block_type=bottleneck", "model.growth_rate=1",
                                   "model.compression_rate=0.1", NULL},
                  "transition 1 would keep floor(3 x 0.1) = 0 channels");
}

static void test_init_fan(void **state) {
  (void)state;
  dt_config cfg;
  dt_config_defaults(&cfg);
  assert_true(dt_model_fan_out(&cfg)); /* auto, resnet_preact */
  assert_int_equal(dt_config_set(&cfg, "model.name=wrn"), DT_OK);
  assert_false(dt_model_fan_out(&cfg)); /* auto, wrn: fan_in (wrn.yaml) */
  assert_int_equal(dt_config_set(&cfg, "model.init_mode=kaiming_fan_out"), DT_OK);
  assert_true(dt_model_fan_out(&cfg));
  assert_int_equal(dt_config_set(&cfg, "model.init_mode=kaiming_fan_in"), DT_OK);
  assert_false(dt_model_fan_out(&cfg));
  assert_int_equal(dt_config_set(&cfg, "model.name=se_resnet_preact"), DT_OK);
  assert_true(dt_model_fan_out(&cfg)); /* its own initializer, always fan_out */
  dt_config_free(&cfg);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_spec_table),      cmocka_unit_test(test_spec_rules),
      cmocka_unit_test(test_names_and_shapes), cmocka_unit_test(test_preact_names_and_macs),
      cmocka_unit_test(test_output_shapes),
      cmocka_unit_test(test_depth_checks),    cmocka_unit_test(test_init_fan),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
