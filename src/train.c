/* train.c: the training driver. Setup (backend, dataset, model, loaders, run directory),
 * the epoch loop with per-iteration schedule, evaluation of the whole test set every epoch,
 * progress lines, --bench and --dry-run. */
#define _GNU_SOURCE
#include "train.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/loader.h"
#include "models/model.h"
#include "optim.h"
#include "schedule.h"

typedef struct {
  const dt_config *cfg;
  dt_backend *be;
  dt_dataset ds;
  bool ds_loaded;
  dt_model *model;
  dt_loader *train_ld, *test_ld;
  dt_optim opt;
  dt_schedule sched;
  long steps_per_epoch;
  FILE *log;
  bool tty;
  float *losses, *logits; /* host scratch: per-sample losses, (N, K) logits */
} trainer;

/* Print to stdout and append to log.txt. */
static void say(trainer *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(trainer *t, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  fflush(stdout);
  if (t->log) {
    va_start(ap, fmt);
    vfprintf(t->log, fmt, ap);
    va_end(ap);
    fflush(t->log);
  }
}

static dt_augment_cfg augment_cfg(const dt_config *cfg, const dt_dataset *ds) {
  dt_augment_cfg a;
  a.random_crop = strcmp(cfg->augment_random_crop, "false") != 0;
  a.crop_padding = (int)cfg->augment_crop_padding;
  a.hflip = strcmp(cfg->augment_hflip, "auto") == 0 ? ds->default_hflip
                                                    : strcmp(cfg->augment_hflip, "true") == 0;
  a.hflip_prob = (float)cfg->augment_hflip_prob;
  return a;
}

/* Create the run directory and write config.ini into it atomically. Refuses to reuse a
 * directory that already holds a run unless output.overwrite. */
static dt_status open_run_dir(trainer *t) {
  const dt_config *cfg = t->cfg;
  const char *dir = cfg->output_dir;
  char path[4096];
  /* mkdir -p */
  snprintf(path, sizeof path, "%s", dir);
  for (char *p = path + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    if (mkdir(path, 0777) != 0 && errno != EEXIST)
      return dt_error_set(DT_ERR_IO, "output.dir %s: cannot create %s: %s", dir, path, strerror(errno));
    *p = '/';
  }
  if (mkdir(path, 0777) != 0 && errno != EEXIST)
    return dt_error_set(DT_ERR_IO, "output.dir %s: cannot create it: %s", dir, strerror(errno));
  struct stat st;
  if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
    return dt_error_set(DT_ERR_IO, "output.dir %s: not a directory", dir);
  if (access(dir, W_OK | X_OK) != 0)
    return dt_error_set(DT_ERR_IO, "output.dir %s: not writable: %s", dir, strerror(errno));
  snprintf(path, sizeof path, "%s/config.ini", dir);
  if (!cfg->output_overwrite && access(path, F_OK) == 0)
    return dt_error_set(DT_ERR_IO,
                        "output.dir %s already holds a run (config.ini); choose another "
                        "directory or set output.overwrite=true",
                        dir);
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s/.config.ini.tmp", dir);
  FILE *f = fopen(tmp, "w");
  if (!f) return dt_error_set(DT_ERR_IO, "output.dir %s: cannot write %s: %s", dir, tmp, strerror(errno));
  dt_config_write(cfg, f);
  if (fflush(f) != 0 || ferror(f) || fsync(fileno(f)) != 0) {
    int e = errno;
    fclose(f);
    unlink(tmp);
    return dt_error_set(DT_ERR_IO, "output.dir %s: writing config.ini failed: %s", dir, strerror(e));
  }
  fclose(f);
  if (rename(tmp, path) != 0) {
    int e = errno;
    unlink(tmp);
    return dt_error_set(DT_ERR_IO, "output.dir %s: cannot create config.ini: %s", dir, strerror(e));
  }
  snprintf(path, sizeof path, "%s/log.txt", dir);
  t->log = fopen(path, cfg->output_overwrite ? "w" : "a");
  if (!t->log) return dt_error_set(DT_ERR_IO, "output.dir %s: cannot write log.txt: %s", dir, strerror(errno));
  return DT_OK;
}

static void trainer_free(trainer *t) {
  dt_loader_free(t->train_ld);
  dt_loader_free(t->test_ld);
  dt_optim_free(&t->opt);
  dt_model_free(t->model);
  if (t->ds_loaded) dt_dataset_free(&t->ds);
  if (t->be) t->be->ops->destroy(t->be);
  if (t->log) fclose(t->log);
  free(t->losses);
  free(t->logits);
}

/* Everything but the run directory. */
static dt_status trainer_setup(trainer *t, const dt_config *cfg, dt_device device) {
  memset(t, 0, sizeof *t);
  t->cfg = cfg;
  t->tty = isatty(STDOUT_FILENO);
  dt_status st = dt_dataset_load(&t->ds, cfg->data_dataset, cfg->data_dir);
  if (st != DT_OK) return st;
  t->ds_loaded = true;
  dt_dataset_limit(&t->ds, (int)cfg->data_train_limit, (int)cfg->data_test_limit);
  int B = (int)cfg->train_batch_size;
  if (t->ds.train.count < B)
    return dt_error_set(DT_ERR_CONFIG, "train.batch_size = %d is larger than the %d training images",
                        B, t->ds.train.count);
  t->be = dt_backend_create(device, (int)cfg->train_threads);
  if (!t->be) return DT_ERR_CONFIG;
  const dt_split *tr = &t->ds.train;
  t->model = dt_model_create(cfg, t->be, tr->channels, tr->height, tr->width, t->ds.classes);
  dt_loader_cfg lc = {&t->ds, true, augment_cfg(cfg, &t->ds), (uint64_t)cfg->train_seed, B, 0, B,
                      (int)cfg->data_loader_threads};
  t->train_ld = dt_loader_create(&lc);
  lc.train = false;
  lc.global_batch = lc.slice_count = (int)cfg->train_eval_batch_size;
  t->test_ld = dt_loader_create(&lc);
  t->steps_per_epoch = dt_loader_steps(t->train_ld);
  dt_schedule_init(&t->sched, cfg, t->steps_per_epoch);
  dt_optim_init(&t->opt, cfg, &t->model->params);
  int maxn = (int)DT_MAX(cfg->train_batch_size, cfg->train_eval_batch_size);
  t->losses = dt_xmalloc((size_t)maxn * sizeof(float));
  t->logits = dt_xmalloc((size_t)maxn * t->ds.classes * sizeof(float));
  return DT_OK;
}

/* Count of rows whose label is among the k largest logits. */
static int topk_correct(const float *logits, const int *labels, int n, int classes, int k) {
  int correct = 0;
  for (int i = 0; i < n; i++) {
    const float *z = logits + (size_t)i * classes;
    float target = z[labels[i]];
    int above = 0;
    for (int c = 0; c < classes; c++)
      if (z[c] > target || (z[c] == target && c < labels[i])) above++;
    correct += above < k;
  }
  return correct;
}

typedef struct {
  double loss, top1, top5;
  long images;
} eval_result;

static eval_result evaluate(trainer *t) {
  eval_result r = {0, 0, 0, 0};
  dt_loader_start(t->test_ld, 0, 0);
  const dt_batch *b;
  while ((b = dt_loader_next(t->test_ld)) != NULL) {
    dt_graph *g = dt_model_graph(t->model, b->n, true);
    const dt_tensor *logits = dt_graph_forward(g, b->images, false);
    dt_graph_loss(g, b->targets, 1.0f, t->losses);
    t->be->ops->download(t->be, logits, t->logits);
    for (int i = 0; i < b->n; i++) r.loss += t->losses[i];
    r.top1 += topk_correct(t->logits, b->labels, b->n, t->ds.classes, 1);
    r.top5 += topk_correct(t->logits, b->labels, b->n, t->ds.classes, DT_MIN(5, t->ds.classes));
    r.images += b->n;
  }
  r.loss /= (double)r.images;
  r.top1 = 100.0 * r.top1 / (double)r.images;
  r.top5 = 100.0 * r.top5 / (double)r.images;
  return r;
}

/* One optimisation step on a prepared batch; returns the summed loss and top-1 count. */
static void train_step(trainer *t, const dt_batch *b, long step, double *loss_sum, double *correct) {
  dt_graph *g = dt_model_graph(t->model, b->n, false);
  const dt_tensor *logits = dt_graph_forward(g, b->images, true);
  dt_graph_loss(g, b->targets, 1.0f / (float)b->global_n, t->losses);
  dt_graph_backward(g);
  dt_optim_step(&t->opt, &t->model->params, dt_schedule_lr(&t->sched, step), 1.0f);
  t->be->ops->download(t->be, logits, t->logits);
  for (int i = 0; i < b->n; i++) *loss_sum += t->losses[i];
  *correct += topk_correct(t->logits, b->labels, b->n, t->ds.classes, 1);
}

static void format_eta(double seconds, char *buf, size_t size) {
  long s = (long)(seconds + 0.5);
  if (s >= 3600)
    snprintf(buf, size, "%ldh%02ldm", s / 3600, s / 60 % 60);
  else
    snprintf(buf, size, "%ldm%02lds", s / 60, s % 60);
}

static void print_header(trainer *t) {
  const dt_config *cfg = t->cfg;
  say(t, "dtrain %s: %s (%d train / %d test images, %dx%dx%d, %d classes) on %s, %d thread(s)\n",
      DT_VERSION, cfg->data_dataset, t->ds.train.count, t->ds.test.count, t->ds.train.channels,
      t->ds.train.height, t->ds.train.width, t->ds.classes, t->be->ops->name, t->be->threads);
  say(t, "model: %s-%ld %s, %ld parameters\n", cfg->model_name, cfg->model_depth,
      cfg->model_block_type, dt_model_param_count(t->model));
  say(t, "lr: %g x batch %ld / reference %ld (linear scaling rule) = %g, schedule %s\n",
      cfg->optim_lr, cfg->train_batch_size, cfg->optim_reference_batch, t->sched.base_lr,
      cfg->schedule_type);
  say(t, "steps: %ld per epoch x %ld epochs\n", t->steps_per_epoch, cfg->train_epochs);
}

int dt_train_run(const dt_config *cfg, dt_device device) {
  trainer t;
  dt_status st = trainer_setup(&t, cfg, device);
  if (st == DT_OK) st = open_run_dir(&t);
  if (st != DT_OK) {
    fprintf(stderr, "dtrain: %s\n", dt_error_message());
    trainer_free(&t);
    return 1;
  }
  print_header(&t);
  long step = 0, max_steps = cfg->train_max_steps;
  const long log_every = cfg->output_log_every;
  const int B = (int)cfg->train_batch_size;
  double t_start = dt_now();
  for (long epoch = 0; epoch < cfg->train_epochs && (max_steps == 0 || step < max_steps); epoch++) {
    double t0 = dt_now(), loss_sum = 0, correct = 0, win_loss = 0, win_correct = 0;
    long seen = 0, win_seen = 0;
    dt_loader_start(t.train_ld, epoch, 0);
    const dt_batch *b;
    long i = 0;
    while ((b = dt_loader_next(t.train_ld)) != NULL && (max_steps == 0 || step < max_steps)) {
      double l = 0, c = 0;
      train_step(&t, b, step, &l, &c);
      loss_sum += l, correct += c, seen += b->n;
      win_loss += l, win_correct += c, win_seen += b->n;
      step++, i++;
      if (!isfinite(l)) {
        fprintf(stderr, "\ndtrain: loss is %g at step %ld (epoch %ld); stopping\n", l, step, epoch + 1);
        trainer_free(&t);
        return 2;
      }
      if (i % log_every == 0 || i == t.steps_per_epoch) {
        double el = dt_now() - t0, ips = (double)seen / el;
        long left = (cfg->train_epochs - epoch) * t.steps_per_epoch - i;
        char eta[32];
        format_eta((double)left * B / ips, eta, sizeof eta);
        char line[256];
        snprintf(line, sizeof line,
                 "epoch %ld/%ld step %ld/%ld lr %.5f loss %.4f acc %.2f%% %.0f img/s ETA %s",
                 epoch + 1, cfg->train_epochs, i, t.steps_per_epoch, dt_schedule_lr(&t.sched, step - 1),
                 win_loss / (double)win_seen, 100.0 * win_correct / (double)win_seen, ips, eta);
        if (t.tty) {
          printf("\r%s\033[K", line);
          fflush(stdout);
        } else {
          printf("%s\n", line);
          fflush(stdout);
        }
        if (t.log) fprintf(t.log, "%s\n", line);
        win_loss = win_correct = 0;
        win_seen = 0;
      }
    }
    double train_s = dt_now() - t0;
    eval_result r = evaluate(&t);
    if (t.tty) printf("\r\033[K");
    say(&t,
        "epoch %ld/%ld train loss %.4f acc %.2f%% | test loss %.4f top1 %.2f%% top5 %.2f%% | "
        "%.1f s, %.0f img/s\n",
        epoch + 1, cfg->train_epochs, loss_sum / (double)DT_MAX(seen, 1),
        100.0 * correct / (double)DT_MAX(seen, 1), r.loss, r.top1, r.top5, dt_now() - t0,
        (double)seen / train_s);
  }
  say(&t, "done: %ld steps in %.1f s\n", step, dt_now() - t_start);
  trainer_free(&t);
  return 0;
}

int dt_train_bench(const dt_config *cfg, dt_device device, long steps) {
  trainer t;
  dt_status st = trainer_setup(&t, cfg, device);
  if (st != DT_OK) {
    fprintf(stderr, "dtrain: %s\n", dt_error_message());
    trainer_free(&t);
    return 1;
  }
  const int warmup = 3;
  double loss = 0, correct = 0;
  /* With data: the loader prepares each batch while the model computes. */
  dt_loader_start(t.train_ld, 0, 0);
  long n_with = 0;
  double t0 = 0;
  for (long i = 0; i < warmup + steps; i++) {
    if (i == warmup) t0 = dt_now();
    const dt_batch *b = dt_loader_next(t.train_ld);
    if (!b) {
      dt_loader_start(t.train_ld, i, 0);
      b = dt_loader_next(t.train_ld);
    }
    train_step(&t, b, i, &loss, &correct);
    if (i >= warmup) n_with += b->n;
  }
  double with_data = (double)n_with / (dt_now() - t0);
  /* Model compute only: one batch already in memory, stepped repeatedly. */
  dt_loader_start(t.train_ld, 0, 0);
  const dt_batch *b = dt_loader_next(t.train_ld);
  long n_only = 0;
  for (long i = 0; i < warmup + steps; i++) {
    if (i == warmup) t0 = dt_now();
    train_step(&t, b, i, &loss, &correct);
    if (i >= warmup) n_only += b->n;
  }
  double only = (double)n_only / (dt_now() - t0);
  printf("model: %s-%ld, batch %ld, %s, %d thread(s), %ld timed steps\n", cfg->model_name,
         cfg->model_depth, cfg->train_batch_size, t.be->ops->name, t.be->threads, steps);
  printf("bench_with_data: %.1f images/s\n", with_data);
  printf("bench: %.1f images/s\n", only);
  trainer_free(&t);
  return 0;
}

int dt_train_dry_run(const dt_config *cfg) {
  dt_config_write(cfg, stdout);
  dt_dataset ds;
  dt_status st = dt_dataset_describe(cfg->data_dataset, &ds);
  if (st != DT_OK) {
    fprintf(stderr, "dtrain: %s\n", dt_error_message());
    return 1;
  }
  const char *dir = cfg->data_dir[0] ? cfg->data_dir : dt_dataset_default_dir(cfg->data_dataset);
  struct stat sb;
  if (stat(dir, &sb) == 0) {
    dt_dataset full;
    if (dt_dataset_load(&full, cfg->data_dataset, cfg->data_dir) != DT_OK) {
      fprintf(stderr, "dtrain: %s\n", dt_error_message());
      return 1;
    }
    printf("\ndataset: %s in %s: %d train / %d test images (valid)\n", cfg->data_dataset, dir,
           full.train.count, full.test.count);
    dt_dataset_free(&full);
  } else {
    printf("\ndataset: %s: directory %s not found (not validated)\n", cfg->data_dataset, dir);
  }
  dt_model *m = dt_model_create(cfg, NULL, ds.train.channels, ds.train.height, ds.train.width, ds.classes);
  printf("\nmodel: %s, input %dx%dx%d, %d classes\n", cfg->model_name, ds.train.channels,
         ds.train.height, ds.train.width, ds.classes);
  long macs = dt_model_summary(m, stdout);
  printf("parameters: %ld\n", dt_model_param_count(m));
  printf("macs_per_image: %ld\n", macs);
  dt_model_free(m);
  return 0;
}
