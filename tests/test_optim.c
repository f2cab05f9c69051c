/* test_optim.c: SGD (momentum, Nesterov, coupled weight decay, no-decay groups) against the
 * formulas of SPEC 4.1 evaluated in double, and the schedules of SPEC 4.2 at known points. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "optim.h"
#include "schedule.h"
#include "testutil.h"

static void run_sgd(bool nesterov, bool no_decay) {
  dt_config cfg;
  dt_config_defaults(&cfg);
  cfg.optim_nesterov = nesterov;
  cfg.optim_no_decay_bn_bias = no_decay;
  cfg.optim_momentum = 0.9;
  cfg.optim_weight_decay = 1e-2;
  dt_params ps = {0};
  int d1[2] = {3, 5}, d2[1] = {7};
  dt_params_add(&ps, "fc.weight", 2, d1, 0, DT_INIT_KAIMING_NORMAL, 5, 3);
  dt_params_add(&ps, "fc.bias", 1, d2, DT_PARAM_NO_DECAY, DT_INIT_ZEROS, 5, 3);
  dt_backend *be = dt_backend_cpu_create(1);
  dt_params_alloc(&ps, be);
  tu_fill_uniform(ps.weights, ps.n_weights, 1, -1, 1);
  double w[64], buf[64] = {0};
  for (size_t j = 0; j < ps.n_weights; j++) w[j] = ps.weights[j];
  dt_optim opt;
  dt_optim_init(&opt, &cfg, &ps);
  for (int step = 0; step < 5; step++) {
    tu_fill_uniform(ps.grads, ps.n_weights, 100 + step, -1, 1);
    double lr = 0.1 / (step + 1);
    for (int i = 0; i < ps.count; i++) {
      const dt_param *p = &ps.items[i];
      double wd = (no_decay && (p->flags & DT_PARAM_NO_DECAY)) ? 0 : 1e-2;
      for (size_t j = p->offset; j < p->offset + p->count; j++) {
        double g = 0.5 * ps.grads[j];
        double d = g + wd * w[j];
        buf[j] = step == 0 ? d : 0.9 * buf[j] + d;
        w[j] -= nesterov ? lr * (d + 0.9 * buf[j]) : lr * buf[j];
      }
    }
    dt_optim_step(&opt, &ps, lr, 0.5f);
  }
  for (int i = 0; i < ps.count; i++) {
    const dt_param *p = &ps.items[i];
    for (size_t j = p->offset; j < p->offset + p->count; j++)
      assert_true(fabs(ps.weights[j] - w[j]) < 1e-6);
  }
  dt_optim_free(&opt);
  dt_params_free(&ps, be);
  be->ops->destroy(be);
  dt_config_free(&cfg);
}

static void test_sgd_nesterov(void **s) { (void)s; run_sgd(true, false); }
static void test_sgd_momentum(void **s) { (void)s; run_sgd(false, false); }
static void test_sgd_no_decay(void **s) { (void)s; run_sgd(true, true); }

static void test_schedules(void **s) {
  (void)s;
  dt_config cfg;
  dt_config_defaults(&cfg);
  cfg.train_epochs = 10;
  cfg.train_batch_size = 256;
  cfg.optim_reference_batch = 128;
  cfg.optim_lr = 0.1;
  dt_schedule sch;
  /* cosine with the linear scaling rule: base 0.2 */
  free(cfg.schedule_type);
  cfg.schedule_type = strdup("cosine");
  cfg.schedule_min_factor = 0.001;
  dt_schedule_init(&sch, &cfg, 100);
  assert_true(fabs(dt_schedule_lr(&sch, 0) - 0.2) < 1e-12);
  assert_true(fabs(dt_schedule_lr(&sch, 500) - 0.2 * (0.001 + 0.999 * 0.5)) < 1e-12);
  assert_true(fabs(dt_schedule_lr(&sch, 1000) - 0.2 * 0.001) < 1e-12);
  /* linear warmup of 2 epochs, then the cosine over the remaining 8 */
  cfg.schedule_warmup_epochs = 2;
  cfg.schedule_warmup_start_factor = 0.1;
  dt_schedule_init(&sch, &cfg, 100);
  assert_true(fabs(dt_schedule_lr(&sch, 0) - 0.02) < 1e-12);
  assert_true(fabs(dt_schedule_lr(&sch, 100) - 0.2 * (0.1 + 0.9 * 0.5)) < 1e-12);
  assert_true(fabs(dt_schedule_lr(&sch, 200) - 0.2) < 1e-12);
  assert_true(fabs(dt_schedule_lr(&sch, 600) - 0.2 * (0.001 + 0.999 * 0.5)) < 1e-12);
  /* multistep: milestones count from the end of warmup */
  free(cfg.schedule_type);
  cfg.schedule_type = strdup("multistep");
  cfg.schedule_milestones.n = 2;
  cfg.schedule_milestones.v[0] = 3;
  cfg.schedule_milestones.v[1] = 6;
  cfg.schedule_gamma = 0.1;
  dt_schedule_init(&sch, &cfg, 100);
  assert_true(fabs(dt_schedule_lr(&sch, 499) - 0.2) < 1e-12);
  assert_true(fabs(dt_schedule_lr(&sch, 500) - 0.02) < 1e-12);
  assert_true(fabs(dt_schedule_lr(&sch, 799) - 0.02) < 1e-12);
  assert_true(fabs(dt_schedule_lr(&sch, 800) - 0.002) < 1e-12);
  /* constant */
  free(cfg.schedule_type);
  cfg.schedule_type = strdup("constant");
  cfg.schedule_warmup_epochs = 0;
  dt_schedule_init(&sch, &cfg, 100);
  assert_true(fabs(dt_schedule_lr(&sch, 999) - 0.2) < 1e-12);
  dt_config_free(&cfg);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sgd_nesterov),
      cmocka_unit_test(test_sgd_momentum),
      cmocka_unit_test(test_sgd_no_decay),
      cmocka_unit_test(test_schedules),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
