/* step_waits.c: the counting backend wrapper and the runs of tests/step_waits.h. */
#include "step_waits.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trainer.h"

static sw_counts g_n;
static dt_backend_ops g_inner, g_counting;

long sw_waits(const sw_counts *c) {
  return c->to_host + c->download + c->waiting_uploads;
}

static void c_to_host(dt_backend *be, void *dst, const void *src, size_t bytes) {
  g_n.to_host++;
  g_inner.to_host(be, dst, src, bytes);
}
static void c_download(dt_backend *be, const dt_tensor *src, float *nchw_host) {
  g_n.download++;
  g_inner.download(be, src, nchw_host);
}
static void c_to_device(dt_backend *be, void *dst, const void *src, size_t bytes) {
  g_n.to_device++;
  g_n.waiting_uploads += !g_n.held;
  g_inner.to_device(be, dst, src, bytes);
}
static void c_upload(dt_backend *be, const float *nchw_host, dt_tensor *dst) {
  g_n.upload++;
  g_n.waiting_uploads += !g_n.held;
  g_inner.upload(be, nchw_host, dst);
}
static void c_hold_host(dt_backend *be, bool hold) {
  g_n.held = hold;
  if (g_inner.hold_host) g_inner.hold_host(be, hold);
}

/* The weights, the running statistics and the first optimizer state array in host memory
 * (through the inner table: not counted). */
typedef struct {
  float *w, *buf, *state;
  size_t n_w, n_b;
  long steps;
} trained;

static void state_of(dt_trainer *t, trained *s) {
  const dt_params *ps = &t->model->params;
  if (!s->w) {
    s->n_w = ps->n_weights;
    s->n_b = ps->n_buffers;
    s->w = dt_xmalloc(DT_MAX(s->n_w, 1) * sizeof(float));
    s->buf = dt_xmalloc(DT_MAX(s->n_b, 1) * sizeof(float));
    s->state = dt_xmalloc(DT_MAX(s->n_w, 1) * sizeof(float));
  }
  g_inner.to_host(t->be, s->w, ps->weights, s->n_w * sizeof(float));
  g_inner.to_host(t->be, s->buf, ps->buffers, s->n_b * sizeof(float));
  g_inner.to_host(t->be, s->state, t->opt.dev[0], s->n_w * sizeof(float));
  s->steps = t->opt.steps;
}

static bool same_state(const trained *a, const trained *b) {
  return a->steps == b->steps && memcmp(a->w, b->w, a->n_w * sizeof(float)) == 0 &&
         memcmp(a->state, b->state, a->n_w * sizeof(float)) == 0 &&
         memcmp(a->buf, b->buf, a->n_b * sizeof(float)) == 0;
}

static void free_state(trained *s) {
  free(s->w);
  free(s->buf);
  free(s->state);
}

bool sw_run_steps(sw_run *out, const char *what, dt_comm *comm, dt_device device,
                  const char *const *sets, int steps, int overflow_step) {
  memset(out, 0, sizeof *out);
  if (steps > SW_MAX_STEPS) steps = SW_MAX_STEPS;
  dt_config cfg;
  dt_config_defaults(&cfg);
  dt_status st = dt_config_load(&cfg, "configs/quickstart.ini");
  const char *common[] = {"data.train_limit=96",  "data.test_limit=16", "train.batch_size=16",
                          "model.depth=8",        "train.threads=1",    "data.loader_threads=1",
                          "augment.random_crop=false"};
  for (size_t i = 0; i < DT_ARRAY_LEN(common) && st == DT_OK; i++)
    st = dt_config_set(&cfg, common[i]);
  for (const char *const *s = sets; *s && st == DT_OK; s++) st = dt_config_set(&cfg, *s);
  if (st == DT_OK) st = dt_config_validate(&cfg);
  dt_trainer t;
  memset(&t, 0, sizeof t);
  if (st == DT_OK) st = dt_trainer_setup(&t, &cfg, comm, device);
  if (st != DT_OK || dt_trainer_join(&t, &st, device) != DT_OK) {
    fprintf(stderr, "%s: cannot set up: %s\n", what, dt_error_message());
    dt_trainer_free(&t);
    dt_config_free(&cfg);
    return false;
  }
  g_inner = *t.be->ops;
  g_counting = g_inner;
  g_counting.to_host = c_to_host;
  g_counting.download = c_download;
  g_counting.to_device = c_to_device;
  g_counting.upload = c_upload;
  g_counting.hold_host = c_hold_host;
  t.be->ops = &g_counting;
  trained before = {0}, after = {0};
  const dt_comm_nccl *nc = t.step.allreduce.nccl;
  out->nccl = nc != NULL;
  const size_t allreduces0 = nc ? dt_comm_nccl_allreduce_count(nc) : 0;
  dt_step_start_loader(&t.step, t.train_ld, 0, 0);
  for (int i = 0; i < steps; i++) {
    const dt_batch *b = dt_loader_next(t.train_ld);
    if (!b) break;
    state_of(&t, &before);
    memset(&g_n, 0, sizeof g_n);
    const dt_step_result r = dt_step_run(&t.step, &t.opt, b, i, 0.01, false, i == overflow_step);
    out->count[i] = g_n;
    out->held_after |= g_n.held;
    state_of(&t, &after);
    out->loss[i] = r.loss;
    out->correct[i] = r.correct;
    out->images[i] = r.images;
    out->applied[i] = r.verdict == DT_SCALE_APPLY;
    out->unchanged[i] = same_state(&before, &after);
    out->steps = i + 1;
    printf("%-32s %s step %d: %ld wait(s): to_host %ld, download %ld, uploads "
           "outside hold %ld (of %ld to_device, %ld upload); loss %.6f, top-1 %g of %g%s\n",
           what, t.be->ops->name, i, sw_waits(&g_n), g_n.to_host, g_n.download,
           g_n.waiting_uploads, g_n.to_device, g_n.upload, r.loss / r.images, r.correct,
           r.images, out->applied[i] ? "" : ", update skipped");
  }
  if (nc) out->nccl_allreduces = dt_comm_nccl_allreduce_count(nc) - allreduces0;
  t.be->ops = &g_inner;
  free_state(&before);
  free_state(&after);
  dt_trainer_free(&t);
  dt_config_free(&cfg);
  return true;
}
