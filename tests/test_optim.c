/* test_optim.c: SGD (momentum, Nesterov, coupled weight decay, no-decay groups), LARS and Adam
 * against the formulas of docs/reference-experiments.md "Optimizers" evaluated in double, the
 * skip flag of dt_optim_step and dt_optim_unstep, and the schedules of
 * docs/reference-experiments.md "Schedules" at known points. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cpu/backend_cpu.h"
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
    dt_optim_step(&opt, &ps, lr, 0.5f, NULL);
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
  cfg.schedule_type = DT_SCHEDULE_TYPE_COSINE;
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
  cfg.schedule_type = DT_SCHEDULE_TYPE_MULTISTEP;
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
  cfg.schedule_type = DT_SCHEDULE_TYPE_CONSTANT;
  cfg.schedule_warmup_epochs = 0;
  dt_schedule_init(&sch, &cfg, 100);
  assert_true(fabs(dt_schedule_lr(&sch, 999) - 0.2) < 1e-12);
  dt_config_free(&cfg);
}

/* A two-tensor table (a weight that LARS adapts, and a tiny bias under its threshold) with random
 * weights; runs `steps` updates of dtrain and of the formulas of docs/reference-experiments.md
 * "Optimizers" in double. */
typedef struct {
  dt_params ps;
  dt_backend *be;
  dt_config cfg;
} optim_case;

static void case_init(optim_case *c, const char *name) {
  dt_config_defaults(&c->cfg);
  c->cfg.optim_name = dt_config_choice_parse("optim", "name", name);
  assert_true((int)c->cfg.optim_name >= 0);
  c->cfg.optim_momentum = 0.9;
  c->cfg.optim_weight_decay = 5e-3;
  memset(&c->ps, 0, sizeof c->ps);
  int d1[2] = {4, 6}, d2[1] = {5};
  dt_params_add(&c->ps, "fc.weight", 2, d1, 0, DT_INIT_KAIMING_NORMAL, 6, 4);
  dt_params_add(&c->ps, "fc.bias", 1, d2, DT_PARAM_NO_DECAY, DT_INIT_ZEROS, 6, 4);
  c->be = dt_backend_cpu_create(1);
  dt_params_alloc(&c->ps, c->be);
  tu_fill_uniform(c->ps.weights, c->ps.n_weights, 3, -1, 1);
  /* The bias stays below LARS's threshold: |w| < 1e-2. */
  for (size_t j = c->ps.items[1].offset; j < c->ps.items[1].offset + 5; j++) c->ps.weights[j] *= 1e-3f;
}

static void case_free(optim_case *c) {
  dt_params_free(&c->ps, c->be);
  c->be->ops->destroy(c->be);
  dt_config_free(&c->cfg);
}

static double dnorm(const double *x, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++) s += x[i] * x[i];
  return sqrt(s);
}

static void test_lars(void **st) {
  (void)st;
  for (int with_eta = 0; with_eta < 2; with_eta++) {
    optim_case c;
    case_init(&c, "lars");
    c.cfg.optim_lars_eta = with_eta ? 0.02 : 0.0;
    double w[64], buf[64] = {0}, g[64];
    for (size_t j = 0; j < c.ps.n_weights; j++) w[j] = c.ps.weights[j];
    dt_optim opt;
    dt_optim_init(&opt, &c.cfg, &c.ps);
    int adapted = 0;
    for (int step = 0; step < 4; step++) {
      tu_fill_uniform(c.ps.grads, c.ps.n_weights, 50 + step, -1, 1);
      double lr = 0.05;
      for (int i = 0; i < c.ps.count; i++) {
        const dt_param *p = &c.ps.items[i];
        double *wi = w + p->offset, *gi = g + p->offset, *bi = buf + p->offset;
        for (size_t j = 0; j < p->count; j++) gi[j] = c.ps.grads[p->offset + j];
        /* docs/reference-experiments.md "Optimizers": every tensor adapted, wd on all of them, no
         * Nesterov. */
        double wn = dnorm(wi, p->count), gn = dnorm(gi, p->count), wd = 5e-3;
        double local = wn / (1e-9 + gn + wd * wn);
        if (with_eta) local *= 0.02;
        if (wn < 1e-2) local = 1.0;
        else adapted++;
        for (size_t j = 0; j < p->count; j++) {
          double d = gi[j] + wd * wi[j];
          bi[j] = 0.9 * bi[j] + lr * local * d;
          wi[j] -= bi[j];
        }
      }
      dt_optim_step(&opt, &c.ps, 0.05, 1.0f, NULL);
    }
    /* The weight is adapted at every step; the tiny bias is not at first (it grows past the
     * threshold after the first update and is adapted from then on). */
    assert_int_equal(adapted, 7);
    for (size_t j = 0; j < c.ps.n_weights; j++)
      if (j < c.ps.items[0].count || (j >= c.ps.items[1].offset && j < c.ps.items[1].offset + 5))
        assert_true(fabs(c.ps.weights[j] - w[j]) <= 1e-5 * fmax(1.0, fabs(w[j])));
    dt_optim_free(&opt);
    case_free(&c);
  }
}

static void test_adam(void **st) {
  (void)st;
  for (int ams = 0; ams < 2; ams++) {
    optim_case c;
    case_init(&c, ams ? "amsgrad" : "adam");
    double w[64], m[64] = {0}, v[64] = {0}, vmax[64] = {0};
    for (size_t j = 0; j < c.ps.n_weights; j++) w[j] = c.ps.weights[j];
    dt_optim opt;
    dt_optim_init(&opt, &c.cfg, &c.ps);
    for (int t = 1; t <= 5; t++) {
      /* Large then small gradients, so AMSGrad's maximum differs from v. */
      tu_fill_uniform(c.ps.grads, c.ps.n_weights, 70 + t, t < 3 ? -2.0f : -0.1f, t < 3 ? 2.0f : 0.1f);
      const double lr = 1e-2, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 5e-3;
      for (size_t j = 0; j < c.ps.n_weights; j++) {
        /* torch.optim.Adam: L2 added to the gradient, bias-corrected moments. */
        double d = c.ps.grads[j] + wd * w[j];
        m[j] = b1 * m[j] + (1 - b1) * d;
        v[j] = b2 * v[j] + (1 - b2) * d * d;
        vmax[j] = fmax(vmax[j], v[j]);
        double vv = ams ? vmax[j] : v[j];
        w[j] -= lr / (1 - pow(b1, t)) * m[j] / (sqrt(vv) / sqrt(1 - pow(b2, t)) + eps);
      }
      dt_optim_step(&opt, &c.ps, 1e-2, 1.0f, NULL);
    }
    for (int i = 0; i < c.ps.count; i++) {
      const dt_param *p = &c.ps.items[i];
      for (size_t j = p->offset; j < p->offset + p->count; j++)
        assert_true(fabs(c.ps.weights[j] - w[j]) < 1e-5);
    }
    dt_optim_free(&opt);
    case_free(&c);
  }
}

/* ---- the skip flag of dt_optim_step, and dt_optim_unstep ---- */

static const char *const optim_names[] = {"sgd", "lars", "adam", "amsgrad"};

/* w, g and every state array of c and o, one after the other (host copies). */
static float *optim_snapshot(optim_case *c, const dt_optim *o, size_t *bytes) {
  const size_t n = c->ps.n_weights, nb = n * sizeof(float);
  *bytes = (2 + (size_t)o->state.n_states) * nb;
  float *out = dt_xcalloc(2 + (size_t)o->state.n_states, nb);
  c->be->ops->to_host(c->be, out, c->ps.weights, nb);
  c->be->ops->to_host(c->be, out + n, c->ps.grads, nb);
  for (int i = 0; i < o->state.n_states; i++)
    c->be->ops->to_host(c->be, out + (2 + (size_t)i) * n, o->dev[i], nb);
  return out;
}

/* The gradients of step s (the same for every case). */
static void optim_grads(optim_case *c, int s) {
  float *g = dt_xcalloc(c->ps.n_weights, sizeof(float));
  tu_fill_uniform(g, c->ps.n_weights, 300 + (uint64_t)s, -1, 1);
  c->be->ops->to_device(c->be, c->ps.grads, g, c->ps.n_weights * sizeof(float));
  free(g);
}

/* An int32 of backend memory holding v. */
static int32_t *optim_flag(dt_backend *be, int32_t v) {
  int32_t *f = be->ops->alloc(be, sizeof v);
  be->ops->to_device(be, f, &v, sizeof v);
  return f;
}

/* For every optimizer, after 0 and after 2 real updates (gradient scale 0.5, so an update
 * also rewrites g): an update with its skip flag set leaves the weights, the gradients and
 * every state array byte-identical, and counts the call (opt->steps); a zero flag gives the
 * bytes of no flag; a skipped update, dt_optim_unstep, then a real one gives the bytes of one
 * real update from the same state (Adam's bias corrections use the same t). */
static void test_skip_unstep(void **st) {
  (void)st;
  for (size_t k = 0; k < DT_ARRAY_LEN(optim_names); k++)
    for (int before = 0; before <= 2; before += 2) {
      optim_case c[3];
      dt_optim o[3];
      for (int i = 0; i < 3; i++) {
        case_init(&c[i], optim_names[k]);
        dt_optim_init(&o[i], &c[i].cfg, &c[i].ps);
        for (int s = 0; s < before; s++) {
          optim_grads(&c[i], s);
          dt_optim_step(&o[i], &c[i].ps, 0.05, 0.5f, NULL);
        }
        optim_grads(&c[i], before);
      }
      int32_t *one = optim_flag(c[0].be, 1), *zero = optim_flag(c[1].be, 0);
      size_t bytes;
      /* c[0]: skipped; it must not have changed */
      float *held = optim_snapshot(&c[0], &o[0], &bytes);
      dt_optim_step(&o[0], &c[0].ps, 0.05, 0.5f, one);
      assert_int_equal(o[0].steps, before + 1);
      float *after = optim_snapshot(&c[0], &o[0], &bytes);
      if (memcmp(held, after, bytes) != 0)
        fail_msg("%s after %d steps: a skipped update changed the weights, gradients or state",
                 optim_names[k], before);
      /* ...then unstep and a real update; c[1]: a zero flag; c[2]: no flag */
      dt_optim_unstep(&o[0]);
      assert_int_equal(o[0].steps, before);
      dt_optim_step(&o[0], &c[0].ps, 0.05, 0.5f, NULL);
      dt_optim_step(&o[1], &c[1].ps, 0.05, 0.5f, zero);
      dt_optim_step(&o[2], &c[2].ps, 0.05, 0.5f, NULL);
      float *got[3];
      for (int i = 0; i < 3; i++) got[i] = optim_snapshot(&c[i], &o[i], &bytes);
      if (memcmp(got[2], held, bytes) == 0)
        fail_msg("%s: the real update changed nothing", optim_names[k]);
      if (memcmp(got[1], got[2], bytes) != 0)
        fail_msg("%s after %d steps: a zero skip flag differs from none", optim_names[k], before);
      if (memcmp(got[0], got[2], bytes) != 0)
        fail_msg("%s after %d steps: skipped, unstep, update differs from one update",
                 optim_names[k], before);
      assert_int_equal(o[0].steps, o[2].steps);
      for (int i = 0; i < 3; i++) free(got[i]);
      free(held), free(after);
      c[0].be->ops->free(c[0].be, one), c[1].be->ops->free(c[1].be, zero);
      for (int i = 0; i < 3; i++) {
        dt_optim_free(&o[i]);
        case_free(&c[i]);
      }
    }
}

static void test_more_schedules(void **s) {
  (void)s;
  dt_config cfg;
  dt_config_defaults(&cfg);
  cfg.train_epochs = 30;
  cfg.optim_lr = 0.1;
  cfg.schedule_min_factor = 0.01;
  dt_schedule sch;
  const double pi = 3.14159265358979323846;
  /* SGDR: periods of 10 and 20 epochs, each a cosine from 1 to min_factor. */
  cfg.schedule_type = DT_SCHEDULE_TYPE_SGDR;
  cfg.schedule_t0 = 10;
  cfg.schedule_t_mul = 2;
  dt_schedule_init(&sch, &cfg, 10);
  assert_true(fabs(dt_schedule_lr(&sch, 0) - 0.1) < 1e-12);
  assert_true(fabs(dt_schedule_lr(&sch, 50) - 0.1 * (0.01 + 0.99 * 0.5 * (1 + cos(pi * 0.5)))) < 1e-12);
  assert_true(fabs(dt_schedule_lr(&sch, 100) - 0.1) < 1e-12); /* the restart */
  assert_true(fabs(dt_schedule_lr(&sch, 150) - 0.1 * (0.01 + 0.99 * 0.5 * (1 + cos(pi * 0.25)))) < 1e-12);
  /* linear from 1 to min_factor */
  cfg.schedule_type = DT_SCHEDULE_TYPE_LINEAR;
  dt_schedule_init(&sch, &cfg, 10);
  assert_true(fabs(dt_schedule_lr(&sch, 150) - 0.1 * (1 - 0.99 * 0.5)) < 1e-12);
  /* polynomial decay */
  cfg.schedule_type = DT_SCHEDULE_TYPE_POLY;
  cfg.schedule_poly_power = 2;
  dt_schedule_init(&sch, &cfg, 10);
  assert_true(fabs(dt_schedule_lr(&sch, 150) - 0.1 * (0.01 + 0.99 * 0.25)) < 1e-12);
  /* exponential warmup over 5 epochs, without the reference's doubled base lr */
  cfg.schedule_type = DT_SCHEDULE_TYPE_CONSTANT;
  cfg.schedule_warmup_type = DT_SCHEDULE_WARMUP_TYPE_EXPONENTIAL;
  cfg.schedule_warmup_epochs = 5;
  cfg.schedule_warmup_start_factor = 0.1;
  cfg.schedule_warmup_exponent = 4;
  dt_schedule_init(&sch, &cfg, 10);
  assert_true(fabs(dt_schedule_lr(&sch, 25) - 0.1 * (0.1 + 0.9 * pow(0.5, 4))) < 1e-12);
  assert_true(fabs(dt_schedule_lr(&sch, 50) - 0.1) < 1e-12);
  dt_config_free(&cfg);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sgd_nesterov),
      cmocka_unit_test(test_sgd_momentum),
      cmocka_unit_test(test_sgd_no_decay),
      cmocka_unit_test(test_schedules),
      cmocka_unit_test(test_lars),
      cmocka_unit_test(test_adam),
      cmocka_unit_test(test_skip_unstep),
      cmocka_unit_test(test_more_schedules),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
