/* test_golden_models.c: every model family (docs/reference-experiments.md "Models") against the
 * independent PyTorch models of tools/dtrain_tools/torch_models.py, one small instance per file
 * of tests/golden/ written by tools/dtrain_tools/make_golden_models.py. Each file names its
 * network as dtrain --set overrides (config/ records); the test builds that model on the CPU
 * backend, copies the PyTorch weights by state_dict name (every name and shape must match, both
 * ways), runs one training-mode
 * forward and backward on the stored batch and requires the logits, the loss, every parameter
 * gradient and every updated batch-norm running statistic within 1e-4 relative error in norm.
 * The batch of each file was chosen in float64 so that no ReLU input and no max-pool top-two gap
 * lies within 1e-5 of its kink (gradients jump there). Dropout is off and shake-shake runs with
 * alpha = beta = 0.5 (shake_forward = shake_backward = false) so the step is deterministic. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cpu/backend_cpu.h"
#include "golden.h"
#include "models/model.h"
#include "testutil.h"

#define TOL 1e-4
#define NEAR_ZERO 1e-3

static char rec_buf[192];

static dt_backend *g_be;

static const golden_tensor *need(const golden_file *gf, const char *name) {
  const golden_tensor *t = golden_find(gf, name);
  if (!t) fail_msg("golden record %s missing", name);
  return t;
}

/* Apply the file's config/<section.key=value> records over the defaults and validate. */
static void config_from_golden(const golden_file *gf, dt_config *cfg, const char *path) {
  dt_config_defaults(cfg);
  assert_int_equal(dt_config_set(cfg, "data.dataset=cifar10"), DT_OK);
  int n = 0;
  for (int i = 0; i < gf->n; i++) {
    if (strncmp(gf->t[i].name, "config/", 7) != 0) continue;
    if (dt_config_set(cfg, gf->t[i].name + 7) != DT_OK)
      fail_msg("%s: %s", path, dt_error_message());
    n++;
  }
  if (n == 0) fail_msg("%s: no config/ records", path);
  dt_error_clear();
  if (dt_config_validate(cfg) != DT_OK) fail_msg("%s: %s", path, dt_error_message());
}

/* Copy every param/<name> into the model: same names and shapes on both sides. */
static void load_params(dt_model *m, const golden_file *gf) {
  dt_params *ps = &m->params;
  for (int i = 0; i < ps->count; i++) {
    const dt_param *p = &ps->items[i];
    char name[160];
    snprintf(name, sizeof name, "param/%s", p->name);
    const golden_tensor *t = need(gf, name);
    if (t->ndim != p->ndim) fail_msg("%s: %d dims in PyTorch, %d in dtrain", p->name, t->ndim, p->ndim);
    for (int d = 0; d < p->ndim; d++) {
      if (t->dims[d] != p->dims[d])
        fail_msg("%s: dim %d is %lld in PyTorch, %d in dtrain", p->name, d, (long long)t->dims[d],
                 p->dims[d]);
    }
    dt_params_entry_from_host(ps, i, dt_params_data(ps, i), t->data);
  }
  int golden_params = 0;
  for (int i = 0; i < gf->n; i++) {
    if (strncmp(gf->t[i].name, "param/", 6) != 0) continue;
    golden_params++;
    if (dt_params_find(ps, gf->t[i].name + 6) < 0)
      fail_msg("PyTorch tensor %s has no dtrain parameter", gf->t[i].name + 6);
  }
  assert_int_equal(golden_params, ps->count);
}

/* The golden record of a parameter: its gradient, or a running statistic after the step. */
static const char *record_name(const dt_param *p, char *buf) {
  snprintf(buf, sizeof rec_buf, "%s/%s", p->flags & DT_PARAM_BUFFER ? "step0" : "grad", p->name);
  return buf;
}

/* 0 gradients, 1 running means, 2 running variances */
static int param_kind(const dt_param *p) {
  if (!(p->flags & DT_PARAM_BUFFER)) return 0;
  return strstr(p->name, "running_mean") ? 1 : 2;
}

static void check_case(void **state) {
  const char *name = *state;
  char path[256];
  snprintf(path, sizeof path, "tests/golden/%s.bin", name);
  golden_file gf;
  assert_int_equal(golden_load(&gf, path), 0);
  dt_config cfg;
  config_from_golden(&gf, &cfg, path);

  const golden_tensor *gx = need(&gf, "data/x"), *gy = need(&gf, "data/y");
  assert_int_equal(gx->ndim, 4);
  int n = (int)gx->dims[0], k = (int)need(&gf, "step0/logits")->dims[1];
  dt_model *m = dt_model_create(&cfg, g_be, (int)gx->dims[1], (int)gx->dims[2], (int)gx->dims[3], k);
  load_params(m, &gf);

  float *targets = calloc((size_t)n * k, sizeof *targets), *logits = malloc((size_t)n * k * sizeof *logits);
  float *losses = malloc((size_t)n * sizeof *losses);
  for (int j = 0; j < n; j++) targets[j * k + (int)gy->data[j]] = 1.0f;
  dt_graph *g = dt_model_graph(m, n, false);
  const dt_tensor *out = dt_graph_forward(g, gx->data, true);
  dt_graph_loss(g, targets, 1.0f / (float)n, losses);
  g_be->ops->download(g_be, out, logits);
  dt_graph_backward(g);

  double loss = 0;
  for (int j = 0; j < n; j++) loss += losses[j];
  loss /= n;
  double e_logits = tu_rel_err(logits, need(&gf, "step0/logits")->data, (size_t)n * k);
  double want_loss = need(&gf, "step0/loss")->data[0];
  double e_loss = fabs(loss - want_loss) / fabs(want_loss);

  /* Tensors that are zero analytically (the bias of a conv followed by batch norm, a BN shift
   * whose output reaches only other BNs, the running mean of a BN fed by a BN with zero shift)
   * hold rounding noise on both sides, and a relative error of noise means nothing. Their scale
   * is scale = RMS element of their kind (gradients, running means, running variances) x
   * sqrt(size): a tensor whose reference norm is below NEAR_ZERO x scale counts as zero and
   * must differ from it by less than NEAR_ZERO x scale; every other tensor by TOL relative. */
  dt_params *ps = &m->params;
  double sum2[3] = {0, 0, 0}, count[3] = {0, 0, 0};
  for (int i = 0; i < ps->count; i++) {
    const dt_param *p = &ps->items[i];
    const golden_tensor *t = need(&gf, record_name(p, rec_buf));
    int kind = param_kind(p);
    for (size_t j = 0; j < t->count; j++) sum2[kind] += (double)t->data[j] * t->data[j];
    count[kind] += (double)t->count;
  }
  double worst_grad = 0, worst_stat = 0, worst_zero = 0;
  const char *worst_grad_name = "", *worst_stat_name = "", *worst_zero_name = "";
  int bad = 0, zeros = 0;
  for (int i = 0; i < ps->count; i++) {
    const dt_param *p = &ps->items[i];
    bool buffer = p->flags & DT_PARAM_BUFFER;
    const golden_tensor *t = need(&gf, record_name(p, rec_buf));
    float *host = malloc(p->count * sizeof *host);
    dt_params_entry_to_host(ps, i, host, buffer ? dt_params_data(ps, i) : dt_params_grad(ps, i));
    int kind = param_kind(p);
    double ref = 0, diff = 0;
    for (size_t j = 0; j < p->count; j++) {
      ref += (double)t->data[j] * t->data[j];
      diff += ((double)host[j] - t->data[j]) * ((double)host[j] - t->data[j]);
    }
    free(host);
    ref = sqrt(ref);
    diff = sqrt(diff);
    double scale = sqrt(sum2[kind] / count[kind] * (double)p->count);
    bool zero = ref < NEAR_ZERO * scale;
    double err = zero ? diff / scale : diff / ref, limit = zero ? NEAR_ZERO : TOL;
    zeros += zero;
    if (zero && err > worst_zero) worst_zero = err, worst_zero_name = p->name;
    if (!zero && buffer && err > worst_stat) worst_stat = err, worst_stat_name = p->name;
    if (!zero && !buffer && err > worst_grad) worst_grad = err, worst_grad_name = p->name;
    if (err >= limit || getenv("DT_TEST_VERBOSE"))
      print_error("%s %s: %s error %.3g (norm %.3g, scale %.3g)\n", name, rec_buf,
                  zero ? "near-zero tensor, |diff| / scale" : "relative", err, ref, scale);
    bad += err >= limit;
  }
  printf("%-22s %6ld params, margin %.1e: logits %.2g, loss %.2g (%.6f vs %.6f), worst grad %.2g "
         "(%s), worst running stat %.2g (%s); %d of %d tensors zero analytically, worst |diff| / "
         "scale %.2g (%s)\n",
         name, dt_model_param_count(m), need(&gf, "step0/margin")->data[0], e_logits, e_loss, loss,
         want_loss, worst_grad, worst_grad_name, worst_stat, worst_stat_name, zeros, ps->count,
         worst_zero, worst_zero_name);
  assert_true(e_logits < TOL);
  assert_true(e_loss < TOL);
  assert_int_equal(bad, 0);

  free(targets);
  free(logits);
  free(losses);
  dt_model_free(m);
  dt_config_free(&cfg);
  golden_free(&gf);
}

static int setup(void **state) {
  (void)state;
  g_be = dt_backend_cpu_create(2);
  return g_be ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  g_be->ops->destroy(g_be);
  return 0;
}

/* One test per file, named after it; DT_GOLDEN_CASE=<pattern> runs only the matching ones. */
#define CASE(name) {name, check_case, NULL, NULL, (void *)name}

int main(void) {
  const struct CMUnitTest tests[] = {
      CASE("resnet"),           CASE("resnet_bottleneck"),     CASE("wrn"),
      CASE("densenet"),         CASE("densenet_basic"),        CASE("pyramidnet"),
      CASE("pyramidnet_bottleneck"), CASE("resnext"),          CASE("shake_shake"),
      CASE("se_resnet_preact"), CASE("vgg"),                   CASE("vgg_nobn"),
  };
  if (getenv("DT_GOLDEN_CASE")) cmocka_set_test_filter(getenv("DT_GOLDEN_CASE"));
  return cmocka_run_group_tests(tests, setup, teardown);
}
