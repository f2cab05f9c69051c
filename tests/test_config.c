/* test_config.c: the configuration module (src/config.c): defaults against the table, a full
 * file, every class of input error with the file, line, section and key in its message,
 * --set overrides, the checks between keys, write -> load round trip, --help-config, the enums
 * of the choice keys against the table, and each network family's checks reached. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "models/model.h"
#include "testutil.h"

static char *g_dir; /* temporary directory of this run */

static char *tmp_path(const char *name) {
  size_t n = strlen(g_dir) + strlen(name) + 2;
  char *p = malloc(n);
  snprintf(p, n, "%s/%s", g_dir, name);
  return p;
}

/* Write `text` as <tmpdir>/<name>, then read it over the defaults into `cfg`. */
static dt_status load_text(const char *name, const char *text, dt_config *cfg) {
  char *path = tmp_path(name);
  assert_int_equal(tu_write_file(path, text, strlen(text)), 0);
  dt_error_clear();
  dt_config_defaults(cfg);
  dt_status st = dt_config_load(cfg, path);
  free(path);
  return st;
}

/* The current error message contains every fragment of the NULL-terminated list. */
static void expect_message_v(const char *what, va_list ap) {
  const char *msg = dt_error_message();
  for (const char *frag = va_arg(ap, const char *); frag; frag = va_arg(ap, const char *)) {
    if (!strstr(msg, frag)) {
      print_error("%s: message \"%s\" lacks \"%s\"\n", what, msg, frag);
      fail();
    }
  }
}

static void expect_message(const char *what, ...) {
  va_list ap;
  va_start(ap, what);
  expect_message_v(what, ap);
  va_end(ap);
}

/* Loading `text` as file `name` fails with DT_ERR_CONFIG and a message holding the fragments. */
static void expect_load_error(const char *name, const char *text, ...) {
  dt_config cfg;
  dt_status st = load_text(name, text, &cfg);
  if (st != DT_ERR_CONFIG) {
    print_error("%s: status %d, expected DT_ERR_CONFIG (message \"%s\")\n", name, (int)st,
                dt_error_message());
    fail();
  }
  expect_message(name, name, NULL); /* the file is always named */
  va_list ap;
  va_start(ap, text);
  expect_message_v(name, ap);
  va_end(ap);
  dt_config_free(&cfg);
}

/* `assignment` fails with DT_ERR_CONFIG, the message starts with "--set <assignment>: " and
 * holds the fragments. */
static void expect_set_error(dt_config *cfg, const char *assignment, ...) {
  dt_error_clear();
  if (dt_config_set(cfg, assignment) != DT_ERR_CONFIG) {
    print_error("--set %s: accepted, expected DT_ERR_CONFIG\n", assignment);
    fail();
  }
  char prefix[1024];
  snprintf(prefix, sizeof prefix, "--set %s: ", assignment);
  if (strncmp(dt_error_message(), prefix, strlen(prefix)) != 0) {
    print_error("message \"%s\" does not start with \"%s\"\n", dt_error_message(), prefix);
    fail();
  }
  va_list ap;
  va_start(ap, assignment);
  expect_message_v(assignment, ap);
  va_end(ap);
}

static void expect_set_ok(dt_config *cfg, const char *assignment) {
  dt_error_clear();
  if (dt_config_set(cfg, assignment) != DT_OK) {
    print_error("--set %s: %s\n", assignment, dt_error_message());
    fail();
  }
}

/* Loads (over the defaults) and validates; returns the status of the validation. */
static dt_status validate_text(const char *name, const char *text) {
  dt_config cfg;
  dt_status st = load_text(name, text, &cfg);
  if (st != DT_OK) {
    print_error("%s: %s\n", name, dt_error_message());
    fail();
  }
  dt_error_clear();
  st = dt_config_validate(&cfg);
  dt_config_free(&cfg);
  return st;
}

static void expect_valid(const char *name, const char *text) {
  if (validate_text(name, text) != DT_OK) {
    print_error("%s: rejected: %s\n", name, dt_error_message());
    fail();
  }
}

static void expect_invalid(const char *name, const char *text, ...) {
  if (validate_text(name, text) != DT_ERR_CONFIG) {
    print_error("%s: accepted, expected DT_ERR_CONFIG\n", name);
    fail();
  }
  expect_message(name, name, NULL);
  va_list ap;
  va_start(ap, text);
  expect_message_v(name, ap);
  va_end(ap);
}

/* ---- per-type helpers used through the X-macro table ----
 * The default checks parse the table's strings with their own code, not config.c's. */

static bool word_bool(const char *s) {
  return !strcasecmp(s, "true") || !strcasecmp(s, "yes") || !strcasecmp(s, "on") || !strcmp(s, "1");
}

static void default_INT(const long *v, const char *def, const char *what) {
  if (*v != strtol(def, NULL, 10)) {
    print_error("%s: default %ld, table says %s\n", what, *v, def);
    fail();
  }
}
static void default_FLOAT(const double *v, const char *def, const char *what) {
  if (*v != strtod(def, NULL)) {
    print_error("%s: default %.17g, table says %s\n", what, *v, def);
    fail();
  }
}
static void default_BOOL(const bool *v, const char *def, const char *what) {
  if (*v != word_bool(def)) {
    print_error("%s: default %d, table says %s\n", what, *v, def);
    fail();
  }
}
static void default_STR(char *const *v, const char *def, const char *what) {
  if (!*v || strcmp(*v, def) != 0) {
    print_error("%s: default \"%s\", table says \"%s\"\n", what, *v ? *v : "(null)", def);
    fail();
  }
}
/* A CHOICE field holds the enum value; `what` is "section.key". */
#define default_CHOICE(v, def, what) default_choice((int)*(v), def, what)
static void default_choice(int v, const char *def, const char *what) {
  char section[32], key[64];
  assert_int_equal(sscanf(what, "%31[^.].%63s", section, key), 2);
  const char *text = dt_config_choice_text(section, key, v);
  if (!text || strcmp(text, def) != 0) {
    print_error("%s: default \"%s\", table says \"%s\"\n", what, text ? text : "(null)", def);
    fail();
  }
}
/* Items of a comma-separated default, whitespace-free in the table. */
static int split_items(const char *def, char items[][32]) {
  int n = 0;
  for (const char *p = def; *p;) {
    const char *c = strchr(p, ',');
    size_t len = c ? (size_t)(c - p) : strlen(p);
    assert_true(n < DT_LIST_MAX && len < 32);
    memcpy(items[n], p, len);
    items[n++][len] = 0;
    if (!c) break;
    p = c + 1;
  }
  return n;
}
static void default_INTLIST(const dt_intlist *v, const char *def, const char *what) {
  char items[DT_LIST_MAX][32];
  int n = split_items(def, items);
  if (v->n != n) {
    print_error("%s: default has %d items, table \"%s\"\n", what, v->n, def);
    fail();
  }
  for (int i = 0; i < n; i++) assert_int_equal(v->v[i], strtol(items[i], NULL, 10));
}
static void default_BOOLLIST(const dt_boollist *v, const char *def, const char *what) {
  char items[DT_LIST_MAX][32];
  int n = split_items(def, items);
  if (v->n != n) {
    print_error("%s: default has %d items, table \"%s\"\n", what, v->n, def);
    fail();
  }
  for (int i = 0; i < n; i++) assert_int_equal(v->v[i], word_bool(items[i]));
}

/* Field equality; floats must be bit-for-bit the same value. */
static bool same_INT(const long *a, const long *b) { return *a == *b; }
static bool same_FLOAT(const double *a, const double *b) { return *a == *b; }
static bool same_BOOL(const bool *a, const bool *b) { return *a == *b; }
static bool same_STR(char *const *a, char *const *b) { return *a && *b && strcmp(*a, *b) == 0; }
#define same_CHOICE(a, b) (*(a) == *(b))
static bool same_INTLIST(const dt_intlist *a, const dt_intlist *b) {
  if (a->n != b->n) return false;
  for (int i = 0; i < a->n; i++)
    if (a->v[i] != b->v[i]) return false;
  return true;
}
static bool same_BOOLLIST(const dt_boollist *a, const dt_boollist *b) {
  if (a->n != b->n) return false;
  for (int i = 0; i < a->n; i++)
    if (a->v[i] != b->v[i]) return false;
  return true;
}

/* Number of keys whose values differ, each printed when `report`. */
static int count_differences(const dt_config *a, const dt_config *b, bool report) {
  int diff = 0;
#define CMP_KEY(sec, name, type, ...)                                      \
  if (!same_##type(&a->sec##_##name, &b->sec##_##name)) {                  \
    diff++;                                                                \
    if (report) print_error("[%s] %s differs\n", #sec, #name);             \
  }
  DT_CONFIG_KEYS(CMP_KEY, DT_CFG_NO_CHOICE)
#undef CMP_KEY
  return diff;
}

/* Every key set, each to a value other than its default (except single-choice keys). */
static const char *const k_full =
    "; a full configuration\n"
    "[data]\n"
    "dataset = cifar10\n"
    "dir = /tmp/data dir/cifar\n"
    "path = /tmp/own data.h5\n"
    "train_limit = 1000\n"
    "test_limit = 500\n"
    "loader_threads = 3\n"
    "\n"
    "[model]\n"
    "name = se_resnet_preact\n"
    "depth = 56\n"
    "block_type = bottleneck\n"
    "initial_channels = 32\n"
    "remove_first_relu = true\n"
    "add_last_bn = Yes\n"
    "preact_stage = true, false, FALSE\n"
    "widening_factor = 4\n"
    "drop_rate = 0.3\n"
    "growth_rate = 24\n"
    "compression_rate = 1\n"
    "alpha = 84\n"
    "cardinality = 4\n"
    "base_channels = 32\n"
    "shake_forward = false\n"
    "shake_backward = false\n"
    "shake_image = false\n"
    "se_reduction = 8\n"
    "vgg_channels = 32, 64, 128, 256, 256\n"
    "vgg_layers = 1, 1, 2, 2, 2\n"
    "use_bn = false\n"
    "init_mode = kaiming_fan_in\n"
    "\n"
    "[train]\n"
    "epochs = 160\r\n"
    "batch_size = 256\n"
    "eval_batch_size = 512\n"
    "seed = 4611686018427387903\n"
    "threads = 4\n"
    "max_steps = 1000\n"
    "accum_steps = 2\n"
    "nonfinite = skip\n"
    "precision = bf16\n"
    "bucket_mb = 0.5\n"
    "cuda_graphs = true\n"
    "deterministic = false\n"
    "loss_scale = fixed\n"
    "loss_scale_init = 1024\n"
    "loss_scale_growth = 500\n"
    "\n"
    "# hash comments work too\n"
    "[optim]\n"
    "name = lars\n"
    "lr = 0.2   ; an inline comment\n"
    "reference_batch = 256\n"
    "momentum = 0.95\n"
    "nesterov = off\n"
    "weight_decay = 1e-4\n"
    "no_decay_bn_bias = 1\n"
    "lars_eps = 1e-8\n"
    "lars_threshold = 0.02\n"
    "lars_eta = 0.001\n"
    "adam_beta1 = 0.8\n"
    "adam_beta2 = 0.99\n"
    "adam_eps = 1e-7\n"
    "\n"
    "[schedule]\n"
    "type = multistep\n"
    "milestones = 80, 120\n"
    "gamma = 0.2\n"
    "min_factor = 0\n"
    "warmup_epochs = 5\n"
    "warmup_start_factor = 0.01\n"
    "warmup_type = exponential\n"
    "warmup_exponent = 2\n"
    "t0 = 20\n"
    "t_mul = 2\n"
    "poly_power = 3\n"
    "\n"
    "[augment]\n"
    "random_crop = false\n"
    "crop_padding = 2\n"
    "hflip = true\n"
    "hflip_prob = 0.25\n"
    "cutout = true\n"
    "cutout_prob = 0.75\n"
    "cutout_size = 8\n"
    "cutout_inside = true\n"
    "random_erasing = true\n"
    "erasing_prob = 0.25\n"
    "erasing_area_min = 0.05\n"
    "erasing_area_max = 0.3\n"
    "erasing_min_aspect = 0.5\n"
    "erasing_max_attempts = 10\n"
    "dual_cutout = true\n"
    "dual_cutout_alpha = 0.2\n"
    "mixup = true\n"
    "mixup_alpha = 0.5\n"
    "ricap = true\n"
    "ricap_beta = 0.25\n"
    "cutmix = true\n"
    "cutmix_alpha = 2\n"
    "label_smoothing = 0.1\n"
    "\n"
    "[comm]\n"
    "timeout_s = 30\n"
    "[output]\n"
    "dir = runs/test\n"
    "overwrite = true\n"
    "log_every: 10\n"
    "checkpoint_every = 5\n"
    "checkpoint_steps = 100\n"
    "keep_last = 2\n"
    "tensorboard = true\n";

static int setup(void **state) {
  (void)state;
  g_dir = tu_tmpdir("config");
  return 0;
}

static int teardown(void **state) {
  (void)state;
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
  tu_run(cmd, NULL);
  free(g_dir);
  return 0;
}

/* ---- tests ---- */

static void test_defaults_match_table(void **state) {
  (void)state;
  dt_config cfg;
  dt_config_defaults(&cfg);
#define CHECK_DEFAULT(sec, name, type, def, ...) default_##type(&cfg.sec##_##name, def, #sec "." #name);
  DT_CONFIG_KEYS(CHECK_DEFAULT, DT_CFG_NO_CHOICE)
#undef CHECK_DEFAULT
  /* a few by hand, in case the table and the struct disagree in some systematic way */
  assert_int_equal(cfg.train_batch_size, 128);
  assert_true(cfg.optim_lr == 0.1);
  assert_true(cfg.optim_weight_decay == 5e-4);
  assert_string_equal(dt_data_dataset_str(cfg.data_dataset), "fashion_mnist");
  assert_string_equal(cfg.data_dir, "");
  assert_int_equal(cfg.model_preact_stage.n, 3);
  assert_int_equal(cfg.schedule_milestones.n, 0);
  assert_true(cfg.optim_nesterov);
  assert_false(cfg.output_overwrite);
  assert_null(cfg.source);
  dt_error_clear();
  assert_int_equal(dt_config_validate(&cfg), DT_OK);
  dt_config_free(&cfg);
  dt_config_free(&cfg); /* freeing twice is harmless: the pointers were cleared */
}

static void test_full_file_loads(void **state) {
  (void)state;
  dt_config cfg, def;
  if (load_text("full.ini", k_full, &cfg) != DT_OK) {
    print_error("%s\n", dt_error_message());
    fail();
  }
  assert_non_null(strstr(cfg.source, "full.ini"));
  assert_string_equal(dt_data_dataset_str(cfg.data_dataset), "cifar10");
  assert_string_equal(cfg.data_dir, "/tmp/data dir/cifar");
  assert_string_equal(cfg.data_path, "/tmp/own data.h5");
  assert_int_equal(cfg.model_depth, 56);
  assert_string_equal(dt_model_block_type_str(cfg.model_block_type), "bottleneck");
  assert_true(cfg.model_add_last_bn);
  assert_int_equal(cfg.model_preact_stage.n, 3);
  assert_true(cfg.model_preact_stage.v[0]);
  assert_false(cfg.model_preact_stage.v[1]);
  assert_false(cfg.model_preact_stage.v[2]);
  assert_int_equal(cfg.train_epochs, 160);
  assert_int_equal(cfg.train_seed, 4611686018427387903L);
  assert_string_equal(dt_train_precision_str(cfg.train_precision), "bf16");
  assert_string_equal(dt_train_loss_scale_str(cfg.train_loss_scale), "fixed");
  assert_true(cfg.train_bucket_mb == 0.5);
  assert_true(cfg.train_cuda_graphs);
  assert_false(cfg.train_deterministic);
  assert_true(cfg.train_loss_scale_init == 1024);
  assert_int_equal(cfg.train_loss_scale_growth, 500);
  assert_true(cfg.optim_lr == 0.2);
  assert_false(cfg.optim_nesterov);
  assert_true(cfg.optim_no_decay_bn_bias);
  assert_true(cfg.optim_weight_decay == 1e-4);
  assert_int_equal(cfg.schedule_milestones.n, 2);
  assert_int_equal(cfg.schedule_milestones.v[0], 80);
  assert_int_equal(cfg.schedule_milestones.v[1], 120);
  assert_true(cfg.schedule_min_factor == 0);
  assert_true(cfg.augment_hflip_prob == 0.25);
  assert_int_equal(cfg.output_log_every, 10);
  assert_true(cfg.output_tensorboard);
  assert_true(cfg.comm_timeout_s == 30);
  assert_true(cfg.augment_mixup && cfg.augment_ricap && cfg.augment_dual_cutout);
  assert_true(cfg.augment_label_smoothing == 0.1);
  /* Every [augment] method is on, which the cross-key check refuses (docs/reference-experiments.md
   * "Augmentations and losses": one batch-mixing method and one loss at a time); the rest of the
   * file is valid. */
  dt_error_clear();
  assert_int_equal(dt_config_validate(&cfg), DT_ERR_CONFIG);
  expect_message("full.ini", "full.ini", "[augment] mixup = true and ricap = true", NULL);

  /* The file sets every key that has a choice to something other than its default, so the
   * round trip below exercises every field. */
  dt_config_defaults(&def);
  int expected = 0;
#define COUNT_CHANGEABLE(sec, name, type, def_, lo, hi, choices, help) \
  expected += strcmp(#type, "CHOICE") != 0 || dt_config_choice_count(#sec, #name) > 1;
  DT_CONFIG_KEYS(COUNT_CHANGEABLE, DT_CFG_NO_CHOICE)
#undef COUNT_CHANGEABLE
  assert_int_equal(count_differences(&cfg, &def, false), expected);
  dt_config_free(&def);
  expect_set_ok(&cfg, "augment.ricap=false");
  expect_set_ok(&cfg, "augment.cutmix=false");
  expect_set_ok(&cfg, "augment.dual_cutout=false");
  expect_set_ok(&cfg, "augment.label_smoothing=0");
  dt_error_clear();
  assert_int_equal(dt_config_validate(&cfg), DT_OK);

  /* loading over a loaded config replaces (and frees) its strings */
  char *path = tmp_path("over.ini");
  const char *over = "[data]\ndir = elsewhere\n[output]\ndir = runs/x\n";
  assert_int_equal(tu_write_file(path, over, strlen(over)), 0);
  assert_int_equal(dt_config_load(&cfg, path), DT_OK);
  assert_string_equal(cfg.data_dir, "elsewhere");
  assert_string_equal(cfg.source, path);
  assert_int_equal(cfg.model_depth, 56);
  free(path);
  dt_config_free(&cfg);
}

static void test_accepted_spellings(void **state) {
  (void)state;
  dt_config cfg;
  const char *text =
      "\xEF\xBB\xBF[optim]\n"
      "nesterov = FALSE\n"
      "no_decay_bn_bias = Yes\n"
      "  ; an indented comment\n"
      "lr = +5e-2\n"
      "[model]\n"
      "remove_first_relu = ON\n"
      "add_last_bn = 0\n"
      "preact_stage = 1,no,off\n"
      "[schedule]\n"
      "milestones =\n"
      "[data]\n"
      "dir = a;b = c ;comment\n";
  if (load_text("spellings.ini", text, &cfg) != DT_OK) {
    print_error("%s\n", dt_error_message());
    fail();
  }
  assert_false(cfg.optim_nesterov);
  assert_true(cfg.optim_no_decay_bn_bias);
  assert_true(cfg.optim_lr == 5e-2);
  assert_true(cfg.model_remove_first_relu);
  assert_false(cfg.model_add_last_bn);
  assert_int_equal(cfg.model_preact_stage.n, 3);
  assert_true(cfg.model_preact_stage.v[0]);
  assert_false(cfg.model_preact_stage.v[1]);
  assert_int_equal(cfg.schedule_milestones.n, 0);
  assert_string_equal(cfg.data_dir, "a;b = c");
  dt_config_free(&cfg);
}

static void test_error_file_and_syntax(void **state) {
  (void)state;
  dt_config cfg;
  char *missing = tmp_path("missing.ini");
  dt_error_clear();
  dt_config_defaults(&cfg);
  assert_int_equal(dt_config_load(&cfg, missing), DT_ERR_CONFIG);
  expect_message("missing", missing, ": cannot open: No such file or directory", NULL);
  free(missing);
  dt_error_clear();
  assert_int_equal(dt_config_load(&cfg, g_dir), DT_ERR_CONFIG); /* a directory */
  expect_message("directory", g_dir, "cannot read", NULL);
  dt_config_free(&cfg);

  expect_load_error("syntax.ini", "[train]\nepochs = 3\nepochs 4\n", "syntax.ini:3:", "syntax error",
                    NULL);
  expect_load_error("header.ini", "[train\nepochs = 3\n", "header.ini:1:", "syntax error", NULL);
  expect_load_error("nosection.ini", "; top\nepochs = 3\n", "nosection.ini:2:", "epochs",
                    "before any [section]", NULL);
  expect_load_error("indented.ini", "[train]\nepochs = 3\n  batch_size = 4\n", "indented.ini:3:",
                    "indented", NULL);

  /* lines longer than the parser's buffer, as a comment and as a value */
  char text[1024];
  snprintf(text, sizeof text, "[train]\n; %0300d\nepochs = 3\n", 0);
  expect_load_error("long_comment.ini", text, "long_comment.ini:2:", "longer than", NULL);
  char dir[400];
  memset(dir, 'd', 250);
  dir[250] = 0;
  snprintf(text, sizeof text, "[train]\nepochs = 3\n[output]\ndir = %s\n", dir);
  expect_load_error("long_value.ini", text, "long_value.ini:4:", "longer than", NULL);
  /* the longest line accepted is just below the limit */
  memset(dir, 'd', 180);
  dir[180] = 0;
  snprintf(text, sizeof text, "[output]\ndir = %s\n", dir);
  assert_int_equal(load_text("long_ok.ini", text, &cfg), DT_OK);
  assert_string_equal(cfg.output_dir, dir);
  dt_config_free(&cfg);
}

static void test_error_unknown_names(void **state) {
  (void)state;
  expect_load_error("section.ini", "[train]\nepochs = 3\n[trian]\nbatch_size = 4\n",
                    "section.ini:3:", "unknown section [trian]", "did you mean [train]?",
                    "(sections: data, model, train, optim, schedule, augment, comm, output)", NULL);
  expect_load_error("empty_section.ini", "[train]\nepochs = 3\n\n[bogus]\n", "empty_section.ini:4:",
                    "unknown section [bogus]", NULL);
  expect_load_error("key.ini", "[optim]\nlr = 0.1\n\nlrr = 0.2\n", "key.ini:4:", "[optim] lrr",
                    "unknown key", "did you mean lr?",
                    "(keys of [optim]: name, lr, reference_batch, momentum, nesterov, weight_decay, "
                    "no_decay_bn_bias, lars_eps, lars_threshold, lars_eta, adam_beta1, adam_beta2, "
                    "adam_eps)",
                    NULL);
  expect_load_error("other_section.ini", "[optim]\nepochs = 30\n", "other_section.ini:2:",
                    "[optim] epochs: unknown key", "did you mean [train] epochs?", NULL);
  expect_load_error("duplicate.ini", "[train]\nepochs = 3\nbatch_size = 4\n\nepochs = 4\n",
                    "duplicate.ini:5:", "[train] epochs given twice", "first on line 2", NULL);
  expect_load_error("duplicate2.ini", "[train]\nepochs = 3\n[optim]\nlr = 1\n[train]\nepochs = 3\n",
                    "duplicate2.ini:6:", "[train] epochs given twice", NULL);
}

static void test_error_values(void **state) {
  (void)state;
  /* integers */
  expect_load_error("int.ini", "[train]\nepochs = 3\nbatch_size = abc\n", "int.ini:3:",
                    "[train] batch_size = abc: not an integer",
                    "(accepted: an integer in [1, 1048576])", NULL);
  expect_load_error("int_suffix.ini", "[train]\nbatch_size = 12x\n", "int_suffix.ini:2:",
                    "[train] batch_size = 12x: not an integer", NULL);
  expect_load_error("int_frac.ini", "[train]\nbatch_size = 1.5\n", "[train] batch_size = 1.5",
                    "not an integer", NULL);
  expect_load_error("int_empty.ini", "[train]\nbatch_size =\n", "[train] batch_size", "not an integer",
                    NULL);
  expect_load_error("int_huge.ini", "[train]\nseed = 99999999999999999999\n", "[train] seed",
                    "does not fit", NULL);
  expect_load_error("int_below.ini", "[train]\nbatch_size = 0\n", "int_below.ini:2:",
                    "[train] batch_size = 0", "less than the minimum 1", "[1, 1048576]", NULL);
  expect_load_error("int_above.ini", "[train]\nbatch_size = 1048577\n", "int_above.ini:2:",
                    "[train] batch_size = 1048577", "greater than the maximum 1048576", NULL);
  expect_load_error("int_negative.ini", "[data]\ntrain_limit = -1\n", "[data] train_limit = -1",
                    "less than the minimum 0", NULL);
  /* floats */
  expect_load_error("float.ini", "[optim]\nlr = 0.1.2\n", "float.ini:2:", "[optim] lr = 0.1.2",
                    "not a number", "(accepted: a finite number in [0, 1e+06])", NULL);
  expect_load_error("float_nan.ini", "[optim]\nlr = nan\n", "[optim] lr = nan", "not a finite number",
                    NULL);
  expect_load_error("float_inf.ini", "[optim]\nmomentum = -inf\n", "[optim] momentum = -inf",
                    "not a finite number", NULL);
  expect_load_error("float_overflow.ini", "[optim]\nlr = 1e999\n", "[optim] lr = 1e999",
                    "not a finite number", NULL);
  expect_load_error("float_below.ini", "[optim]\nmomentum = -0.5\n", "float_below.ini:2:",
                    "[optim] momentum = -0.5", "less than the minimum 0", "[0, 1]", NULL);
  expect_load_error("float_above.ini", "[optim]\nmomentum = 1.5\n", "float_above.ini:2:",
                    "[optim] momentum = 1.5", "greater than the maximum 1", NULL);
  /* booleans and choices */
  expect_load_error("bool.ini", "[optim]\nnesterov = maybe\n", "bool.ini:2:",
                    "[optim] nesterov = maybe: not a boolean", "true, false", NULL);
  expect_load_error("choice.ini", "[data]\ndataset = cifar\n", "choice.ini:2:",
                    "[data] dataset = cifar: not one of the choices",
                    "one of fashion_mnist, mnist, kmnist, cifar10, cifar100", NULL);
  expect_load_error("choice_case.ini", "[schedule]\ntype = Cosine\n", "[schedule] type = Cosine",
                    "one of constant, multistep, cosine", NULL);
  /* lists */
  char text[512] = "[schedule]\nmilestones = ";
  for (int i = 1; i <= DT_LIST_MAX + 1; i++)
    snprintf(text + strlen(text), sizeof text - strlen(text), "%s%d", i > 1 ? "," : "", i);
  strcat(text, "\n");
  expect_load_error("list_long.ini", text, "list_long.ini:2:", "[schedule] milestones",
                    "more than 16 items", "up to 16 comma-separated integers", NULL);
  expect_load_error("list_item.ini", "[schedule]\nmilestones = 80,abc\n", "list_item.ini:2:",
                    "[schedule] milestones = 80,abc", "item 2 (abc) is not an integer", NULL);
  expect_load_error("list_empty_item.ini", "[schedule]\nmilestones = 80,,120\n",
                    "[schedule] milestones", "item 2 is empty", NULL);
  expect_load_error("list_trailing.ini", "[schedule]\nmilestones = 80,\n", "item 2 is empty", NULL);
  expect_load_error("list_range.ini", "[schedule]\nmilestones = 10, 0\n", "[schedule] milestones",
                    "item 2 (0) is less than the minimum 1", NULL);
  expect_load_error("boollist.ini", "[model]\npreact_stage = true,maybe,false\n", "boollist.ini:2:",
                    "[model] preact_stage", "item 2 (maybe) is not a boolean", NULL);
}

static void test_set(void **state) {
  (void)state;
  dt_config cfg;
  dt_config_defaults(&cfg);
  expect_set_ok(&cfg, "train.batch_size=256");
  assert_int_equal(cfg.train_batch_size, 256);
  expect_set_ok(&cfg, " optim.lr = 0.05 ");
  assert_true(cfg.optim_lr == 0.05);
  expect_set_ok(&cfg, "data.dir=/tmp/some dir");
  assert_string_equal(cfg.data_dir, "/tmp/some dir");
  expect_set_ok(&cfg, "data.dir=/x=y"); /* only the first '=' separates */
  assert_string_equal(cfg.data_dir, "/x=y");
  expect_set_ok(&cfg, "schedule.milestones=10,20");
  assert_int_equal(cfg.schedule_milestones.n, 2);
  assert_int_equal(cfg.schedule_milestones.v[1], 20);
  expect_set_ok(&cfg, "schedule.milestones=");
  assert_int_equal(cfg.schedule_milestones.n, 0);
  expect_set_ok(&cfg, "model.block_type=bottleneck");
  assert_string_equal(dt_model_block_type_str(cfg.model_block_type), "bottleneck");

  expect_set_error(&cfg, "train.batch_size=abc", "not an integer",
                   "(accepted: an integer in [1, 1048576])", NULL);
  assert_int_equal(cfg.train_batch_size, 256); /* unchanged by a failed override */
  expect_set_error(&cfg, "train.batch_size=0", "less than the minimum 1", NULL);
  expect_set_error(&cfg, "optim.momentum=nan", "not a finite number", NULL);
  expect_set_error(&cfg, "augment.hflip=maybe", "not one of the choices", "auto, true, false", NULL);
  expect_set_error(&cfg, "train.batchsize=3", "[train] batchsize", "unknown key",
                   "did you mean batch_size?", NULL);
  expect_set_error(&cfg, "trian.epochs=3", "unknown section [trian]", "did you mean [train]?", NULL);
  expect_set_error(&cfg, "epochs=3", "expected section.key=value", NULL);
  expect_set_error(&cfg, "train.epochs", "expected section.key=value", NULL);
  expect_set_error(&cfg, "data.dir=a ;b", "comment", NULL);
  expect_set_error(&cfg, "data.dir=;b", "comment", NULL);
  expect_set_error(&cfg, "data.dir=a\tb", "control character", NULL);
  char big[600] = "output.dir=";
  memset(big + strlen(big), 'o', 300);
  big[11 + 300] = 0;
  expect_set_error(&cfg, big, "longer than", NULL);
  assert_string_equal(cfg.output_dir, "runs/default");
  dt_config_free(&cfg);
}

static void test_cross_key_checks(void **state) {
  (void)state;
  expect_valid("depth_110.ini", "[model]\ndepth = 110\n");
  expect_valid("depth_bottleneck.ini", "[model]\ndepth = 164\nblock_type = bottleneck\n");
  expect_valid("depth_bottleneck20.ini", "[model]\ndepth = 20\nblock_type = bottleneck\n");
  expect_invalid("depth_basic.ini", "[model]\ndepth = 21\n", "[model] depth = 21",
                 "block_type = basic", "6n+2", "20, 32, 44, 56, 110", "nearest: 20 or 26", NULL);
  expect_invalid("depth_bottleneck26.ini", "[model]\ndepth = 26\nblock_type = bottleneck\n",
                 "[model] depth = 26", "block_type = bottleneck", "9n+2", "nearest: 20 or 29", NULL);
  expect_invalid("depth_small.ini", "[model]\ndepth = 8\nblock_type = bottleneck\n",
                 "[model] depth = 8", "nearest: 11", NULL);

  expect_valid("stage3.ini", "[model]\npreact_stage = true,false,false\n");
  expect_invalid("stage2.ini", "[model]\npreact_stage = true,false\n", "[model] preact_stage",
                 "2 values", "exactly 3", NULL);
  expect_invalid("stage4.ini", "[model]\npreact_stage = true,false,false,true\n",
                 "[model] preact_stage", "4 values", NULL);
  expect_invalid("stage0.ini", "[model]\npreact_stage =\n", "[model] preact_stage", "0 values", NULL);

  expect_valid("warmup_ok.ini", "[train]\nepochs = 10\n[schedule]\nwarmup_epochs = 9\n");
  expect_invalid("warmup.ini", "[train]\nepochs = 10\n[schedule]\nwarmup_epochs = 10\n",
                 "[schedule] warmup_epochs = 10", "[train] epochs = 10", NULL);

  /* Milestones matter only to the multistep schedule. */
  expect_valid("milestones_other.ini", "[train]\nepochs = 10\n[schedule]\nmilestones = 80,40\n");
  expect_invalid("sgdr_sum.ini", "[train]\nepochs = 25\n[schedule]\ntype = sgdr\nt0 = 10\nt_mul = 2\n",
                 "sgdr periods", "10+20 = 30 epochs", NULL);
  expect_valid("sgdr_ok.ini", "[train]\nepochs = 30\n[schedule]\ntype = sgdr\nt0 = 10\nt_mul = 2\n");
  expect_valid("milestones_ok.ini",
               "[train]\nepochs = 160\n[schedule]\nwarmup_epochs = 5\nmilestones = 80,154\n");
  expect_invalid("milestones_order.ini",
                 "[train]\nepochs = 160\n[schedule]\ntype = multistep\nmilestones = 120,80\n",
                 "[schedule] milestones = 120,80", "not strictly increasing", NULL);
  expect_invalid("milestones_equal.ini",
                 "[train]\nepochs = 160\n[schedule]\ntype = multistep\nmilestones = 80,80\n",
                 "[schedule] milestones = 80,80", "not strictly increasing", NULL);
  expect_invalid("milestones_end.ini",
                 "[train]\nepochs = 160\n[schedule]\ntype = multistep\nwarmup_epochs = 5\nmilestones = 80,155\n",
                 "[schedule] milestones = 80,155", "155 is not less than", "= 155",
                 "[train] epochs", "[schedule] warmup_epochs", NULL);

  /* [augment]: one batch-mixing method and one loss at a time (docs/reference-experiments.md
   * "Augmentations and losses") */
  expect_valid("mix_one.ini", "[augment]\nricap = true\ncutout = true\nrandom_erasing = true\n");
  expect_valid("smooth.ini", "[augment]\nlabel_smoothing = 0.1\ncutout = true\n");
  expect_valid("dual.ini", "[augment]\ndual_cutout = true\nrandom_erasing = true\n");
  expect_invalid("mix_two.ini", "[augment]\nmixup = true\ncutmix = true\n",
                 "[augment] mixup = true and cutmix = true", "only one", NULL);
  expect_invalid("mix_two_b.ini", "[augment]\nricap = true\ncutmix = true\n",
                 "[augment] ricap = true and cutmix = true", NULL);
  expect_invalid("mix_smooth.ini", "[augment]\ncutmix = true\nlabel_smoothing = 0.01\n",
                 "[augment] cutmix = true and label_smoothing = 0.01", NULL);
  expect_invalid("dual_mix.ini", "[augment]\ndual_cutout = true\nricap = true\n",
                 "[augment] dual_cutout = true and ricap = true", NULL);
  expect_invalid("dual_smooth.ini", "[augment]\ndual_cutout = true\nlabel_smoothing = 0.1\n",
                 "[augment] dual_cutout = true and label_smoothing = 0.1", NULL);
  expect_invalid("dual_cutout.ini", "[augment]\ndual_cutout = true\ncutout = true\n",
                 "[augment] dual_cutout = true and cutout = true", NULL);
  expect_invalid("erasing_area.ini", "[augment]\nerasing_area_min = 0.5\nerasing_area_max = 0.4\n",
                 "[augment] erasing_area_min = 0.5", "erasing_area_max = 0.4", NULL);
  expect_valid("inside_ok.ini", "[augment]\ncutout = true\ncutout_inside = true\ncutout_size = 28\n");
  expect_invalid("inside_big.ini", "[augment]\ncutout = true\ncutout_inside = true\ncutout_size = 29\n",
                 "cutout_inside = true needs cutout_size <= 28", "fashion_mnist", NULL);
  expect_valid("inside_off.ini", "[augment]\ncutout = true\ncutout_size = 40\n");
}

/* ---- the choice keys: table, enums, parser and texts cannot drift apart ---- */

typedef struct {
  const char *id, *text; /* the constant's name and the value's text, as the table spells them */
  int value;             /* the constant's value */
} choice_item;

/* One choice key's values as listed in the table against the parser and the naming rule. */
static void check_choice_table(const char *section, const char *key, const choice_item *items,
                               int n) {
  assert_int_equal(dt_config_choice_count(section, key), n);
  assert_true(n >= 1);
  for (int i = 0; i < n; i++) {
    /* the constants count 0, 1, ... in table order: the enum is the table's list */
    if (items[i].value != i) {
      print_error("[%s] %s: %s = %d, listed at position %d\n", section, key, items[i].id,
                  items[i].value, i);
      fail();
    }
    /* the constant is named after its text: DT_<SECTION>_<KEY>_<VALUE> in capitals */
    char want[160];
    snprintf(want, sizeof want, "DT_%s_%s_%s", section, key, items[i].text);
    for (char *c = want; *c; c++) *c = (char)toupper((unsigned char)*c);
    if (strcmp(items[i].id, want) != 0) {
      print_error("[%s] %s: value \"%s\" is %s, expected %s\n", section, key, items[i].text,
                  items[i].id, want);
      fail();
    }
    /* name -> enum -> name through the parser's table (a repeated text would parse to the
     * first of its positions) */
    assert_string_equal(dt_config_choice_text(section, key, i), items[i].text);
    assert_int_equal(dt_config_choice_parse(section, key, items[i].text), i);
  }
  assert_null(dt_config_choice_text(section, key, n));
  assert_null(dt_config_choice_text(section, key, -1));
  assert_int_equal(dt_config_choice_parse(section, key, "no_such_value"), -1);
}

/* The value of key section.key as dt_config_write prints it. */
static void expect_printed(const dt_config *cfg, const char *section, const char *key,
                           const char *want) {
  char full[128], name[128], value[DT_STR_MAX + 64];
  snprintf(full, sizeof full, "%s.%s", section, key);
  for (size_t i = 0; i < dt_config_key_count(); i++) {
    dt_config_key_describe(cfg, i, name, sizeof name, value, sizeof value);
    if (strcmp(name, full) == 0) {
      assert_string_equal(value, want);
      return;
    }
  }
  print_error("%s not in the table\n", full);
  fail();
}

static void test_choice_enums_round_trip(void **state) {
  (void)state;
  dt_config cfg;
  dt_config_defaults(&cfg);
  int checked = 0;
  char set[256];
#define CHOICE_ITEM(id, text) {#id, text, (int)(id)},
#define CHECK_CHOICES_INT(...)
#define CHECK_CHOICES_FLOAT(...)
#define CHECK_CHOICES_BOOL(...)
#define CHECK_CHOICES_STR(...)
#define CHECK_CHOICES_INTLIST(...)
#define CHECK_CHOICES_BOOLLIST(...)
#define CHECK_CHOICES_CHOICE(sec, key, ...)                                                  \
  {                                                                                          \
    static const choice_item items[] = {__VA_ARGS__};                                        \
    const int n = (int)(sizeof items / sizeof items[0]);                                     \
    check_choice_table(#sec, #key, items, n);                                                \
    for (int i = 0; i < n; i++) {                                                            \
      /* the typed text of the enum, and text -> field -> printed text through --set */      \
      assert_string_equal(dt_##sec##_##key##_str((dt_##sec##_##key)items[i].value),          \
                          items[i].text);                                                    \
      snprintf(set, sizeof set, "%s.%s=%s", #sec, #key, items[i].text);                      \
      expect_set_ok(&cfg, set);                                                              \
      assert_int_equal((int)cfg.sec##_##key, items[i].value);                                \
      expect_printed(&cfg, #sec, #key, items[i].text);                                       \
    }                                                                                        \
    checked++;                                                                               \
  }
#define CHECK_CHOICES(sec, key, type, def, lo, hi, choices, help) \
  CHECK_CHOICES_##type(sec, key, choices)
  DT_CONFIG_KEYS(CHECK_CHOICES, CHOICE_ITEM)
#undef CHECK_CHOICES
#undef CHOICE_ITEM
  /* every key of type choice was walked, and the others have no values */
  int choice_keys = 0;
#define COUNT_CHOICE_KEYS(sec, key, type, ...)                   \
  if (strcmp(#type, "CHOICE") == 0) choice_keys++;               \
  else assert_int_equal(dt_config_choice_count(#sec, #key), 0);
  DT_CONFIG_KEYS(COUNT_CHOICE_KEYS, DT_CFG_NO_CHOICE)
#undef COUNT_CHOICE_KEYS
  assert_int_equal(checked, choice_keys);
  assert_true(checked >= 12);
  dt_config_free(&cfg);
}

/* Every model.name value has a family with a builder and a validator, and dt_config_validate
 * reaches that validator: each row is a configuration that only its family refuses. */
static void test_every_family_validated(void **state) {
  (void)state;
  static const struct {
    const char *name, *keys, *fragment;
  } rows[] = {
      {"resnet_preact", "depth = 21\n",
       "name = resnet_preact with block_type = basic: the depth must be 6n+2"},
      {"resnet", "depth = 21\n", "name = resnet with block_type = basic: the depth must be 6n+2"},
      {"wrn", "depth = 20\n", "name = wrn: the depth must be 6n+4"},
      {"densenet", "depth = 20\nblock_type = bottleneck\n",
       "name = densenet with block_type = bottleneck: the depth must be 6n+4"},
      {"pyramidnet", "depth = 21\n",
       "name = pyramidnet with block_type = basic: the depth must be 6n+2"},
      {"resnext", "depth = 21\n", "name = resnext: the depth must be 9n+2"},
      {"shake_shake", "depth = 20\ninitial_channels = 15\n",
       "initial_channels = 15: shake_shake needs an even width"},
      {"se_resnet_preact", "se_reduction = 32\n",
       "se_reduction = 32 is greater than initial_channels = 16"},
      {"vgg", "vgg_layers = 2,2\n", "vgg_channels has 5 values and vgg_layers 2"},
  };
  const int n = dt_config_choice_count("model", "name");
  assert_int_equal(n, (int)(sizeof rows / sizeof rows[0]));
  for (int v = 0; v < n; v++) {
    const dt_model_family *f = dt_model_family_of((dt_model_name)v);
    assert_non_null(f->build);
    assert_non_null(f->validate);
    const char *name = dt_model_name_str((dt_model_name)v);
    int row = -1;
    for (int r = 0; r < n; r++)
      if (strcmp(rows[r].name, name) == 0) row = r;
    if (row < 0) {
      print_error("model.name = %s has no row here\n", name);
      fail();
    }
    char text[512], file[64];
    snprintf(text, sizeof text, "[model]\nname = %s\n%s", name, rows[row].keys);
    snprintf(file, sizeof file, "family_%s.ini", name);
    expect_invalid(file, text, rows[row].fragment, NULL);
  }
}

/* Every line of an INI file that dt_config_write made fits the parser (it reads back, but a
 * comment line could be cut in a way that still parses). */
static void check_line_lengths(const char *text) {
  for (const char *p = text; *p;) {
    const char *nl = strchr(p, '\n');
    size_t len = nl ? (size_t)(nl - p) : strlen(p);
    if (len > 197) {
      print_error("written line of %zu characters: %.60s...\n", len, p);
      fail();
    }
    if (!nl) break;
    p = nl + 1;
  }
}

static void round_trip(dt_config *cfg, const char *name) {
  char *path = tmp_path(name);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  dt_config_write(cfg, f);
  assert_int_equal(fclose(f), 0);

  char *text = NULL;
  size_t size = 0;
  FILE *m = open_memstream(&text, &size);
  dt_config_write(cfg, m);
  fclose(m);
  check_line_lengths(text);
  /* sections in table order, each key with a comment above it */
  const char *pos = text;
#define CHECK_ORDER(sec, name_, ...)                                         \
  {                                                                          \
    const char *hit = strstr(pos, "\n" #name_ " =");                        \
    const char *header = hit;                                                \
    while (header && header > text && strncmp(header, "\n[", 2) != 0) header--; \
    if (!hit || strncmp(header, "\n[" #sec "]\n", strlen(#sec) + 4) != 0) {   \
      print_error("[%s] %s missing or out of order\n", #sec, #name_);        \
      fail();                                                                \
    }                                                                        \
    assert_true(hit[-1] != ']'); /* a comment line precedes the key */       \
    pos = hit + 1;                                                           \
  }
  DT_CONFIG_KEYS(CHECK_ORDER, DT_CFG_NO_CHOICE)
#undef CHECK_ORDER
  free(text);

  dt_config back;
  dt_config_defaults(&back);
  dt_error_clear();
  if (dt_config_load(&back, path) != DT_OK) {
    print_error("%s\n", dt_error_message());
    fail();
  }
  assert_int_equal(count_differences(cfg, &back, true), 0);
  dt_config_free(&back);
  free(path);
}

static void test_write_load_round_trip(void **state) {
  (void)state;
  dt_config cfg;
  dt_config_defaults(&cfg);
  round_trip(&cfg, "defaults_written.ini");
  dt_config_free(&cfg);

  assert_int_equal(load_text("full_rt.ini", k_full, &cfg), DT_OK);
  /* values whose text is not the shortest decimal, and edge values */
  expect_set_ok(&cfg, "optim.lr=0.3333333333333333");
  expect_set_ok(&cfg, "optim.momentum=0.1e-300");
  expect_set_ok(&cfg, "schedule.gamma=0.7000000000000001");
  expect_set_ok(&cfg, "schedule.warmup_start_factor=1");
  expect_set_ok(&cfg, "train.max_steps=1000000000000");
  expect_set_ok(&cfg, "schedule.milestones=1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16");
  expect_set_ok(&cfg, "model.preact_stage=false,true,false");
  expect_set_ok(&cfg, "data.dir=#a;semicolon and a#hash");
  round_trip(&cfg, "full_written.ini");

  /* the longest string every STR key accepts */
  char set[400];
  snprintf(set, sizeof set, "data.dir=%0191d", 7);
  expect_set_ok(&cfg, set);
  snprintf(set, sizeof set, "output.dir=%0191d", 8);
  expect_set_ok(&cfg, set);
  round_trip(&cfg, "long_written.ini");
  dt_config_free(&cfg);
}

static void test_help_mentions_every_key(void **state) {
  (void)state;
  char *text = NULL;
  size_t size = 0;
  FILE *m = open_memstream(&text, &size);
  dt_config_help(m);
  fclose(m);
  /* each key listed inside its own section, with its default and help */
#define CHECK_HELP(sec, name, type, def, lo, hi, choices, help)                     \
  {                                                                                 \
    const char *start = strstr(text, "\n[" #sec "]\n");                             \
    assert_non_null(start);                                                         \
    const char *next = strstr(start + 1, "\n[");                                    \
    const char *hit = strstr(start, "\n  " #name " (");                             \
    if (!hit || (next && hit > next)) {                                             \
      print_error("help lacks [%s] %s\n", #sec, #name);                             \
      fail();                                                                       \
    }                                                                               \
    char want[128];                                                                 \
    snprintf(want, sizeof want, "default %s)", *def ? def : "empty");               \
    assert_non_null(strstr(hit, want));                                             \
  }
  DT_CONFIG_KEYS(CHECK_HELP, DT_CFG_NO_CHOICE)
#undef CHECK_HELP
  assert_non_null(strstr(text, "accepted: an integer in [1, 1048576]"));
  assert_non_null(strstr(text, "one of fashion_mnist, mnist, kmnist, cifar10, cifar100"));
  assert_non_null(strstr(text, "global batch size (all ranks together)"));
  free(text);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_defaults_match_table),
      cmocka_unit_test(test_full_file_loads),
      cmocka_unit_test(test_accepted_spellings),
      cmocka_unit_test(test_error_file_and_syntax),
      cmocka_unit_test(test_error_unknown_names),
      cmocka_unit_test(test_error_values),
      cmocka_unit_test(test_set),
      cmocka_unit_test(test_cross_key_checks),
      cmocka_unit_test(test_write_load_round_trip),
      cmocka_unit_test(test_help_mentions_every_key),
      cmocka_unit_test(test_choice_enums_round_trip),
      cmocka_unit_test(test_every_family_validated),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
