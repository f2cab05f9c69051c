/* test_gpu_model.c: ResNet-preact-20 (the default config, 1x28x28 input, 10 classes) on the
 * CUDA backend against the CPU backend, both initialised from the same seed.
 *
 *   one step   forward and backward of one batch: the logits agree within 1e-4, every weight
 *              gradient within 1e-2 and the running statistics within 1e-3 (relative in
 *              norm, per tensor). Gradients are looser than the logits because a ReLU input
 *              that lies within fp32 noise of 0 may flip its mask between backends, which
 *              moves gradients at the 1e-3 level; the worst tensor is printed.
 *   50 steps   SGD (src/optim.h, the config's momentum, Nesterov and weight decay) on four
 *              fixed random batches cycled, on both backends: the mean loss of each step
 *              agrees within 2%; both curves are printed.
 *
 * The optimizer walks the CUDA backend's parameter arenas on the host, as the trainer does,
 * so this also checks that those arenas are host-accessible. Exits 77 (ctest: skipped)
 * without a CUDA backend or GPU. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "backend.h"
#include "common.h"
#include "models/model.h"
#include "optim.h"
#include "rng.h"
#include "testutil.h"

#define BATCH 32
#define CHANNELS 1
#define SIZE 28
#define CLASSES 10
#define BATCHES 4
#define STEPS 50
#define LOGIT_TOL 1e-4
#define GRAD_TOL 1e-2
#define STAT_TOL 1e-3
#define LOSS_TOL 0.02

static dt_config g_cfg;

/* One model on one backend. */
typedef struct {
  dt_backend *be;
  dt_model *m;
  dt_optim opt;
} side;

static side side_new(dt_backend *be) {
  side s = {be, dt_model_create(&g_cfg, be, CHANNELS, SIZE, SIZE, CLASSES), {0}};
  assert_non_null(s.m);
  dt_optim_init(&s.opt, &g_cfg, &s.m->params);
  return s;
}

static void side_free(side *s) {
  dt_optim_free(&s->opt);
  dt_model_free(s->m);
}

/* Batch b: images uniform in [-1, 1) (N, 1, 28, 28) and one-hot targets (N, 10). */
static void make_batch(int b, float *x, float *t) {
  tu_fill_uniform(x, (size_t)BATCH * CHANNELS * SIZE * SIZE, 100 + (uint64_t)b, -1, 1);
  dt_rng r = dt_rng_key(200 + (uint64_t)b, 7, 0, 0);
  memset(t, 0, sizeof(float) * BATCH * CLASSES);
  for (int i = 0; i < BATCH; i++) t[i * CLASSES + (int)dt_rng_below(&r, CLASSES)] = 1;
}

/* Forward, loss and backward of one batch; the logits (N, K) to the host when asked.
 * Returns the mean loss. */
static double step(side *s, const float *x, const float *t, float *logits) {
  dt_graph *g = dt_model_graph(s->m, BATCH, false);
  const dt_tensor *z = dt_graph_forward(g, x, true);
  float losses[BATCH];
  dt_graph_loss(g, t, 1.0f / BATCH, losses);
  dt_graph_backward(g);
  if (logits) s->be->ops->download(s->be, z, logits);
  double sum = 0;
  for (int i = 0; i < BATCH; i++) sum += losses[i];
  return sum / BATCH;
}

/* A copy of a backend arena on the host. */
static float *arena(side *s, const float *p, size_t n) {
  float *h = dt_xcalloc(n ? n : 1, sizeof *h);
  s->be->ops->to_host(s->be, h, p, n * sizeof *h);
  return h;
}

static void test_one_step(void **state) {
  dt_backend **be = *state;
  side cpu = side_new(be[0]), gpu = side_new(be[1]);
  const dt_params *pc = &cpu.m->params, *pg = &gpu.m->params;
  assert_int_equal(pc->n_weights, pg->n_weights);

  /* Same seed, same host-side initialisation: identical weights. */
  float *wc = arena(&cpu, pc->weights, pc->n_weights);
  float *wg = arena(&gpu, pg->weights, pg->n_weights);
  assert_memory_equal(wc, wg, pc->n_weights * sizeof(float));

  float *x = dt_xcalloc((size_t)BATCH * CHANNELS * SIZE * SIZE, sizeof *x);
  float *t = dt_xcalloc((size_t)BATCH * CLASSES, sizeof *t);
  float zc[BATCH * CLASSES], zg[BATCH * CLASSES];
  make_batch(0, x, t);
  const double lc = step(&cpu, x, t, zc), lg = step(&gpu, x, t, zg);
  const double zerr = tu_rel_err(zg, zc, BATCH * CLASSES);
  print_message("  loss cpu %.6f gpu %.6f; logits rel err %.2e (tolerance %.0e)\n", lc, lg, zerr,
                LOGIT_TOL);
  int failures = zerr < LOGIT_TOL ? 0 : 1;

  float *gc = arena(&cpu, pc->grads, pc->n_weights), *gg = arena(&gpu, pg->grads, pg->n_weights);
  float *bc = arena(&cpu, pc->buffers, pc->n_buffers);
  float *bg = arena(&gpu, pg->buffers, pg->n_buffers);
  double worst_grad = 0, worst_stat = 0;
  const char *worst_grad_name = "", *worst_stat_name = "";
  int grads = 0, stats = 0;
  for (int i = 0; i < pc->count; i++) {
    const dt_param *p = &pc->items[i];
    const bool buffer = p->flags & DT_PARAM_BUFFER;
    const double err = buffer ? tu_rel_err(bg + p->offset, bc + p->offset, p->count)
                              : tu_rel_err(gg + p->offset, gc + p->offset, p->count);
    const double tol = buffer ? STAT_TOL : GRAD_TOL;
    const bool ok = err < tol; /* false for NaN */
    if (!ok) {
      print_message("  FAIL %s %s rel err %.2e (tolerance %.0e)\n", p->name,
                    buffer ? "value" : "gradient", err, tol);
      failures++;
    }
    if (buffer) {
      stats++;
      if (!ok || err > worst_stat) worst_stat = ok ? err : INFINITY, worst_stat_name = p->name;
    } else {
      grads++;
      if (!ok || err > worst_grad) worst_grad = ok ? err : INFINITY, worst_grad_name = p->name;
    }
  }
  print_message("  %d weight gradients: worst rel err %.2e (%s)\n", grads, worst_grad,
                worst_grad_name);
  print_message("  %d running statistics: worst rel err %.2e (%s)\n", stats, worst_stat,
                worst_stat_name);

  free(wc), free(wg), free(gc), free(gg), free(bc), free(bg), free(x), free(t);
  side_free(&cpu);
  side_free(&gpu);
  assert_int_equal(failures, 0);
}

static void test_sgd_tracks(void **state) {
  dt_backend **be = *state;
  side cpu = side_new(be[0]), gpu = side_new(be[1]);
  const double lr = g_cfg.optim_lr * BATCH / (double)g_cfg.optim_reference_batch;
  float *x[BATCHES], *t[BATCHES];
  for (int b = 0; b < BATCHES; b++) {
    x[b] = dt_xcalloc((size_t)BATCH * CHANNELS * SIZE * SIZE, sizeof(float));
    t[b] = dt_xcalloc((size_t)BATCH * CLASSES, sizeof(float));
    make_batch(b, x[b], t[b]);
  }
  print_message("  SGD lr %g momentum %g nesterov %d weight decay %g, batch %d, %d steps\n", lr,
                g_cfg.optim_momentum, (int)g_cfg.optim_nesterov, g_cfg.optim_weight_decay, BATCH,
                STEPS);
  print_message("  step   loss cpu   loss gpu   rel diff\n");
  int failures = 0;
  double worst = 0;
  for (int s = 0; s < STEPS; s++) {
    const int b = s % BATCHES;
    const double lc = step(&cpu, x[b], t[b], NULL), lg = step(&gpu, x[b], t[b], NULL);
    dt_optim_step(&cpu.opt, &cpu.m->params, lr, 1.0f);
    dt_optim_step(&gpu.opt, &gpu.m->params, lr, 1.0f);
    const double rel = fabs(lg - lc) / fabs(lc);
    const bool ok = rel < LOSS_TOL; /* false for NaN */
    if (!ok) failures++;
    if (!ok || rel > worst) worst = ok ? rel : INFINITY;
    print_message("  %4d %10.6f %10.6f %10.2e%s\n", s + 1, lc, lg, rel, ok ? "" : "  FAIL");
  }
  print_message("  worst rel diff %.2e (tolerance %.0e)\n", worst, LOSS_TOL);
  for (int b = 0; b < BATCHES; b++) free(x[b]), free(t[b]);
  side_free(&cpu);
  side_free(&gpu);
  assert_int_equal(failures, 0);
}

static int setup(void **state) {
  static dt_backend *be[2];
  be[0] = dt_backend_cpu_create(2);
  be[1] = dt_backend_create(DT_DEVICE_CUDA, 1);
  if (!be[0] || !be[1]) {
    fprintf(stderr, "test_gpu_model: backend creation failed: %s\n", dt_error_message());
    return -1;
  }
  *state = be;
  return 0;
}

static int teardown(void **state) {
  dt_backend **be = *state;
  for (int i = 0; i < 2; i++)
    if (be && be[i]) be[i]->ops->destroy(be[i]);
  return 0;
}

int main(void) {
  dt_backend *probe = dt_backend_create(DT_DEVICE_CUDA, 1);
  if (!probe) {
    printf("test_gpu_model: skipped: %s\n", dt_error_message());
    return 77;
  }
  probe->ops->destroy(probe);
  dt_config_defaults(&g_cfg);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_one_step),
      cmocka_unit_test(test_sgd_tracks),
  };
  const int rc = cmocka_run_group_tests(tests, setup, teardown);
  dt_config_free(&g_cfg);
  return rc;
}
