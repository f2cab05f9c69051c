/* train.c: the training driver. Every rank loads the dataset and builds the model; rank r
 * computes slice r of each global batch in train.accum_steps micro-batches; gradients are
 * summed over micro-batches and ranks (the loss is already scaled by 1 / global batch);
 * one optimizer step everywhere. Rank 0 alone writes the run directory (config.ini, log.txt,
 * metrics.h5, checkpoints/). SIGTERM / SIGUSR1 end the run at the next step boundary with a
 * checkpoint and exit status 143; --resume continues bit-exactly from the latest checkpoint. */
#define _GNU_SOURCE
#include "train.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "data/loader.h"
#include "io/checkpoint.h"
#include "io/h5util.h"
#include "io/metrics.h"
#include "io/rundir.h"
#include "loss_scale.h"
#include "nn/grad_buckets.h"
#include "models/model.h"
#include "optim.h"
#include "precision.h"
#include "replay.h"
#include "schedule.h"
#include "thread_plan.h"

/* What an epoch's metrics rows are made of, so far: sums of loss, correct and images over
 * its applied steps, the same over the current output.log_every window, skipped updates.
 * Checkpoints carry it, so that a resumed epoch reports what an uninterrupted one would. */
typedef struct {
  double sums[3], win[3]; /* loss, correct, images */
  long skipped;
} epoch_metrics;

typedef struct {
  const dt_config *cfg;
  dt_comm *comm;
  int rank, world, accum, micro; /* micro: images per micro-batch */
  dt_backend *be;
  dt_dataset ds;
  bool ds_loaded;
  dt_model *model;
  dt_loader *train_ld, *test_ld;
  dt_optim opt;
  dt_schedule sched;
  dt_precision precision; /* train.precision */
  dt_loss_scale ls;
  /* GPU runs: gradients summed by NCCL on the device (NULL: through the host and MPI); with
   * one backward pass per step, bucket by bucket while backward runs (overlap). */
  dt_comm_nccl *nccl;
  dt_grad_buckets buckets;
  bool buckets_planned;
  /* GPU input: the loader whose next batch is copied to the device while this step computes
   * (backend prefetch), or NULL. */
  dt_loader *prefetch_ld;
  dt_replay replay; /* train.cuda_graphs: the recorded device work of a step */
  bool losses_pinned; /* t->losses came from host_alloc */
  char start_note[4400]; /* where the run's state came from (--resume, --init), for the header */
  epoch_metrics resumed; /* the resumed epoch's metrics so far (zero for a fresh run) */
  char threads_line[320]; /* "ranks: 8 x 8 threads (64 cores, 8 local ranks)" */
  long steps_per_epoch;
  const char *run_dir;
  int lock_fd;                /* the run directory's lock (rank 0), -1 when not held */
  const char *config_changes; /* --resume --set: what changed, "key = old -> new, ..." */
  char *created_dir;          /* a fresh run: the topmost directory it created, else NULL */
  FILE *log;
  dt_metrics *metrics;
  bool tty;
  float *losses, *logits; /* host scratch: per-sample losses, (N, K) logits */
  /* Partial gradient sums of the step's backward passes (micro-batches, Dual-Cutout views),
   * a stack of host arrays each holding grad_passes[i] passes (see sum_gradients). */
  float *grad_stack[32];
  int grad_passes[32], grad_depth;
  bool accumulate; /* more than one backward pass per step */
  float *logits2, *dlogits; /* host scratch of Dual-Cutout: second view's logits, a gradient */
  bool dual;              /* Dual-Cutout: two views, two passes */
  float *host_weights, *host_buffers; /* checkpoint staging */
  float *host_grads;                  /* the gradient sum crossing ranks (allreduce_grads) */
  float *buffers_backup; /* running statistics before the step (skipped steps, merging ranks) */
  double *buffers_delta;  /* (n_buffers) each rank's share of the merged running statistics */
} trainer;

static volatile sig_atomic_t g_stop_signal;

static void on_stop_signal(int sig) { g_stop_signal = sig; }

void dt_train_catch_signals(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGUSR1, &sa, NULL);
}

/* Print on rank 0 to stdout and log.txt. */
static void say(trainer *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(trainer *t, const char *fmt, ...) {
  if (t->rank != 0) return;
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

/* A runtime error, on rank 0: one message on stderr (after the progress line of a terminal)
 * and in log.txt. */
static void say_error(trainer *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say_error(trainer *t, const char *fmt, ...) {
  if (t->rank != 0) return;
  char msg[2400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (t->tty) printf("\n");
  fflush(stdout);
  fprintf(stderr, "dtrain: %s\n", msg);
  fflush(stderr);
  if (t->log) {
    fprintf(t->log, "dtrain: %s\n", msg);
    fflush(t->log);
  }
}

/* ---- run directory (rank 0) ---- */

/* Create dir and its missing parents; *created: the topmost one this call created
 * (malloc'ed), NULL when dir existed. */
static dt_status make_dirs(const char *dir, char **created) {
  char path[4096];
  *created = NULL;
  snprintf(path, sizeof path, "%s", dir);
  for (char *p = path + 1;; p++) {
    if (*p != '/' && *p != 0) continue;
    char c = *p;
    *p = 0;
    if (mkdir(path, 0777) == 0) {
      if (!*created) *created = dt_xstrdup(path);
    } else if (errno != EEXIST) {
      return dt_error_set(DT_ERR_IO, "output.dir %s: cannot create %s: %s", dir, path, strerror(errno));
    }
    *p = c;
    if (c == 0) break;
  }
  struct stat st;
  if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
    return dt_error_set(DT_ERR_IO, "output.dir %s: not a directory", dir);
  if (access(dir, W_OK | X_OK) != 0)
    return dt_error_set(DT_ERR_IO, "output.dir %s: not writable: %s", dir, strerror(errno));
  return DT_OK;
}

/* Write the config as run to dir/config.ini through a temporary file and a rename. */
static dt_status write_config(const dt_config *cfg, const char *dir) {
  char path[4200], tmp[4200];
  snprintf(path, sizeof path, "%s/config.ini", dir);
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
  return DT_OK;
}

/* Delete every checkpoint of dir/checkpoints, temporary files of interrupted writes included
 * (dt_checkpoint_prune keeps them all for keep_last <= 0): a run started over must never be
 * resumed from the checkpoints of the run it replaced. partial_only: only those temporary
 * files (a resumed run clears what a killed write of its predecessor left). */
static void remove_checkpoints(const char *dir, bool partial_only) {
  char path[4200];
  snprintf(path, sizeof path, "%s/checkpoints", dir);
  DIR *dp = opendir(path);
  if (!dp) return;
  const struct dirent *e;
  while ((e = readdir(dp)) != NULL) {
    const char *name = e->d_name;
    size_t len = strlen(name);
    bool done = strncmp(name, "step_", 5) == 0 && len > 3 && strcmp(name + len - 3, ".h5") == 0;
    bool partial = strncmp(name, ".step_", 6) == 0 && strstr(name, ".h5.tmp.") != NULL;
    if (!partial && (partial_only || !done)) continue;
    char file[4500];
    snprintf(file, sizeof file, "%s/%s", path, name);
    unlink(file);
  }
  closedir(dp);
}

/* A fresh run that fails before it starts leaves nothing behind: what it wrote in the
 * directories it created, and those directories. */
static void remove_created_dirs(trainer *t) {
  if (!t->created_dir) return;
  if (t->log) fclose(t->log);
  t->log = NULL;
  if (t->metrics) dt_metrics_close(t->metrics);
  t->metrics = NULL;
  static const char *const files[] = {"config.ini", ".config.ini.tmp", "log.txt", "metrics.h5",
                                      DT_RUNDIR_LOCK};
  char path[4200];
  /* Only while holding the lock: otherwise the files are another process's. */
  for (size_t i = 0; t->lock_fd >= 0 && i < DT_ARRAY_LEN(files); i++) {
    snprintf(path, sizeof path, "%s/%s", t->run_dir, files[i]);
    unlink(path);
  }
  if (t->lock_fd >= 0) close(t->lock_fd);
  t->lock_fd = -1;
  /* From the run directory up to the topmost one created; rmdir keeps anything not empty. */
  snprintf(path, sizeof path, "%s", t->run_dir);
  const size_t top = strlen(t->created_dir);
  for (;;) {
    if (rmdir(path) != 0 || strlen(path) <= top) break;
    char *slash = strrchr(path, '/');
    if (!slash || slash == path) break;
    *slash = 0;
  }
  free(t->created_dir);
  t->created_dir = NULL;
}

/* Take the run directory's lock once (rank 0). */
static dt_status lock_run_dir(trainer *t) {
  if (t->lock_fd >= 0) return DT_OK;
  return dt_rundir_lock(t->run_dir, &t->lock_fd);
}

/* A fresh run refuses a directory that already holds a run unless output.overwrite; a
 * resumed run appends to its own directory, with config.ini rewritten when --set changed
 * it. The directory's lock is held from before anything in it changes. */
static dt_status open_run_dir(trainer *t, bool resume, long resume_step) {
  const dt_config *cfg = t->cfg;
  const char *dir = t->run_dir;
  char path[4200];
  if (!resume) {
    dt_status st = make_dirs(dir, &t->created_dir);
    if (st != DT_OK) return st;
    st = lock_run_dir(t);
    if (st != DT_OK) return st;
    snprintf(path, sizeof path, "%s/config.ini", dir);
    if (!cfg->output_overwrite && access(path, F_OK) == 0)
      return dt_error_set(DT_ERR_IO,
                          "output.dir %s already holds a run (config.ini); continue it with "
                          "--resume %s, choose another directory, or set output.overwrite=true",
                          dir, dir);
    dt_rundir_lock_note(t->lock_fd);
    if (cfg->output_overwrite) {
      /* Old checkpoints and metrics would mix with the new run's. */
      snprintf(path, sizeof path, "%s/metrics.h5", dir);
      unlink(path);
      remove_checkpoints(dir, false);
    }
    st = write_config(cfg, dir);
    if (st != DT_OK) return st;
  }
  if (resume) {
    /* The lock was taken before the checkpoint was chosen (dt_train_run). */
    DT_CHECK(t->lock_fd >= 0);
    dt_rundir_lock_note(t->lock_fd);
    dt_status st = t->config_changes ? write_config(cfg, dir) : DT_OK;
    if (st != DT_OK) return st;
    remove_checkpoints(dir, true);
  }
  snprintf(path, sizeof path, "%s/log.txt", dir);
  t->log = fopen(path, resume || !cfg->output_overwrite ? "a" : "w");
  if (!t->log) return dt_error_set(DT_ERR_IO, "output.dir %s: cannot write log.txt: %s", dir, strerror(errno));
  snprintf(path, sizeof path, "%s/metrics.h5", dir);
  return dt_metrics_open(&t->metrics, path, resume ? resume_step : -1);
}

/* ---- setup ---- */

static void trainer_free(trainer *t) {
  dt_comm_nccl_destroy(t->nccl); /* before the backend: it waits for its all-reduces */
  dt_replay_free(&t->replay, t->be);
  if (t->losses_pinned) {
    t->be->ops->host_free(t->be, t->losses);
    t->losses = NULL;
  }
  dt_grad_buckets_free(&t->buckets);
  dt_loader_free(t->train_ld);
  dt_loader_free(t->test_ld);
  dt_optim_free(&t->opt);
  dt_model_free(t->model);
  if (t->ds_loaded) dt_dataset_free(&t->ds);
  if (t->be) t->be->ops->destroy(t->be);
  if (t->metrics) dt_metrics_close(t->metrics);
  if (t->log) fclose(t->log);
  if (t->lock_fd >= 0) close(t->lock_fd); /* the kernel would release it at exit too */
  free(t->created_dir);
  free(t->losses);
  free(t->logits);
  for (size_t i = 0; i < DT_ARRAY_LEN(t->grad_stack); i++) free(t->grad_stack[i]);
  free(t->logits2);
  free(t->dlogits);
  free(t->host_weights);
  free(t->host_buffers);
  free(t->host_grads);
  free(t->buffers_backup);
  free(t->buffers_delta);
}

/* Floats in an all-reduce bucket of train.bucket_mb MiB (at least one). */
static size_t bucket_floats(const dt_config *cfg) {
  return (size_t)(cfg->train_bucket_mb * (1 << 20) / sizeof(float)) + 1;
}

/* The loader's image buffers from the backend's page-locked memory (host_alloc). */
static void *loader_image_alloc(void *ctx, size_t bytes) {
  dt_backend *be = ctx;
  return be->ops->host_alloc(be, bytes);
}

static void loader_image_free(void *ctx, void *ptr) {
  dt_backend *be = ctx;
  be->ops->host_free(be, ptr);
}

/* Everything but the run directory, identically on every rank. */
static dt_status trainer_setup(trainer *t, const dt_config *cfg, dt_comm *comm, dt_device device) {
  memset(t, 0, sizeof *t);
  t->lock_fd = -1;
  t->cfg = cfg;
  t->comm = comm;
  t->rank = dt_comm_rank(comm);
  t->world = dt_comm_size(comm);
  t->accum = (int)cfg->train_accum_steps;
  /* One refreshing line on a terminal; under mpirun stdout looks like a terminal but is
   * forwarded into job logs, so multi-rank runs print whole lines. */
  t->tty = t->rank == 0 && t->world == 1 && isatty(STDOUT_FILENO);
  t->run_dir = cfg->output_dir;
  /* Collective over the node, so before anything that can fail on one rank only. */
  int threads = dt_thread_plan_start(comm, cfg, device, NULL, t->threads_line, sizeof t->threads_line);
  int B = (int)cfg->train_batch_size;
  if (B % (t->world * t->accum) != 0)
    return dt_error_set(DT_ERR_CONFIG,
                        "%s: [train] batch_size = %d must be divisible by ranks x accum_steps = "
                        "%d x %d",
                        cfg->source ? cfg->source : "config", B, t->world, t->accum);
  t->micro = B / (t->world * t->accum);
  dt_status st = dt_dataset_load_config(&t->ds, cfg);
  if (st != DT_OK) return st;
  t->ds_loaded = true;
  dt_dataset_limit(&t->ds, (int)cfg->data_train_limit, (int)cfg->data_test_limit);
  if (t->ds.train.count < B)
    return dt_error_set(DT_ERR_CONFIG, "train.batch_size = %d is larger than the %d training images",
                        B, t->ds.train.count);
  t->be = dt_backend_create(device, threads, dt_comm_local_rank(comm),
                            dt_comm_local_size(comm));
  if (!t->be) return DT_ERR_CONFIG;
  t->be->deterministic = cfg->train_deterministic;
  DT_CHECK(dt_precision_parse(cfg->train_precision, &t->precision)); /* a checked choice */
  if (t->precision != DT_PRECISION_FP32) {
    if (!t->be->ops->set_precision)
      return dt_error_set(DT_ERR_CONFIG,
                          "%s: [train] precision = %s is not supported by the %s backend, which "
                          "computes in fp32 only; use precision = fp32",
                          cfg->source ? cfg->source : "config", cfg->train_precision,
                          t->be->ops->name);
    st = t->be->ops->set_precision(t->be, t->precision);
    if (st != DT_OK) return st;
  }
  dt_loss_scale_init(&t->ls, cfg);
  dt_comm_set_bucket(t->comm, bucket_floats(cfg));
  const dt_split *tr = &t->ds.train;
  t->model = dt_model_create(cfg, t->be, tr->channels, tr->height, tr->width, t->ds.classes);
  int per_rank = B / t->world;
  dt_loader_cfg lc;
  dt_erase_cfg erase;
  dt_mix_cfg mix;
  dt_loader_cfg_from_config(&lc, &erase, &mix, cfg, &t->ds);
  lc.slice_offset = t->rank * per_rank;
  lc.slice_count = per_rank;
  if (t->be->ops->host_alloc) {
    lc.image_alloc = loader_image_alloc;
    lc.image_free = loader_image_free;
    lc.image_ctx = t->be;
  }
  t->train_ld = dt_loader_create_train(&lc, &erase, &mix);
  t->dual = erase.dual_cutout;
  /* Buffers sized by the data present: an evaluation batch larger than the test set holds
   * the test set. */
  int E = (int)DT_MIN(cfg->train_eval_batch_size, (long)DT_MAX(t->ds.test.count, 1));
  E = (E + t->world - 1) / t->world * t->world; /* equal slices of every full eval batch */
  lc.train = false;
  lc.global_batch = E;
  lc.slice_offset = t->rank * (E / t->world);
  lc.slice_count = E / t->world;
  t->test_ld = dt_loader_create(&lc);
  t->steps_per_epoch = dt_loader_steps(t->train_ld);
  dt_schedule_init(&t->sched, cfg, t->steps_per_epoch);
  dt_optim_init(&t->opt, cfg, &t->model->params);
  int maxn = DT_MAX(per_rank, E);
  /* Page-locked where the backend has it: a replayed step writes the losses there. */
  t->losses_pinned = t->be->ops->host_alloc != NULL;
  t->losses = t->losses_pinned ? t->be->ops->host_alloc(t->be, 2 * (size_t)maxn * sizeof(float))
                               : dt_xmalloc(2 * (size_t)maxn * sizeof(float));
  t->logits = dt_xmalloc((size_t)maxn * t->ds.classes * sizeof(float));
  const dt_params *ps = &t->model->params;
  t->accumulate = t->accum > 1 || t->dual;
  if (t->dual) {
    t->logits2 = dt_xmalloc((size_t)maxn * t->ds.classes * sizeof(float));
    t->dlogits = dt_xmalloc((size_t)maxn * t->ds.classes * sizeof(float));
  }
  t->host_weights = dt_xmalloc(DT_MAX(ps->n_weights, 1) * sizeof(float));
  t->host_buffers = dt_xmalloc(DT_MAX(ps->n_buffers, 1) * sizeof(float));
  if (strcmp(cfg->train_nonfinite, "skip") == 0 || t->world > 1 || t->ls.dynamic)
    t->buffers_backup = dt_xmalloc(DT_MAX(ps->n_buffers, 1) * sizeof(float));
  if (t->world > 1) {
    t->buffers_delta = dt_xmalloc(DT_MAX(ps->n_buffers, 1) * sizeof(double));
    t->host_grads = dt_xmalloc(DT_MAX(ps->n_weights, 1) * sizeof(float));
  }
  return DT_OK;
}

/* Every rank must agree on an input error found by one of them (rank 0's run directory,
 * say): returns the first failing status, with the message printed by the rank that has it. */
static dt_status agree(trainer *t, dt_status st) {
  double v = st;
  dt_comm_allreduce_sum_f64(t->comm, &v, 1);
  return v == 0 ? DT_OK : (st != DT_OK ? st : DT_ERR_IO);
}

/* ---- every rank runs the same inputs ---- */

/* "rank 1" or "ranks 1, 3, 4" (at most 8 listed) of the ranks whose flag is set. */
static void list_ranks(const bool *differs, int world, char *buf, size_t cap) {
  int n = 0;
  for (int r = 0; r < world; r++) n += differs[r];
  size_t len = (size_t)snprintf(buf, cap, "rank%s", n > 1 ? "s" : "");
  int shown = 0;
  for (int r = 0; r < world && len < cap; r++) {
    if (!differs[r]) continue;
    if (shown++ == 8) {
      snprintf(buf + len, cap - len, " and %d more", n - 8);
      break;
    }
    len += (size_t)snprintf(buf + len, cap - len, "%s %d", shown > 1 ? "," : "", r);
  }
}

/* Collective, first thing: every rank must run the same configuration. The ranks exchange one
 * digest per key; on a difference they exchange the first differing key's values, and every
 * rank returns DT_ERR_CONFIG with a message (printed by rank 0 only) naming the key, rank 0's
 * value and the first other value with the ranks that have it. A rank with another epoch
 * count would wait forever in a collective, another batch size or depth would make the
 * reductions disagree in size, another seed or learning rate would train silently wrong. */
static dt_status ranks_share_config(dt_comm *comm, const dt_config *cfg) {
  const int world = dt_comm_size(comm);
  if (world == 1) return DT_OK;
  const size_t nk = dt_config_key_count();
  uint64_t *mine = dt_xmalloc(nk * sizeof *mine), *all = dt_xmalloc((size_t)world * nk * sizeof *all);
  dt_config_digest(cfg, mine);
  dt_comm_allgather(comm, mine, all, nk * sizeof *mine);
  long key = -1;
  for (int r = 1; r < world; r++) {
    long k = dt_config_digest_diff(all, all + (size_t)r * nk);
    if (k >= 0 && (key < 0 || k < key)) key = k;
  }
  dt_status st = DT_OK;
  if (key >= 0) {
    enum { VAL = DT_STR_MAX + 64 };
    char name[160], *values = dt_xmalloc((size_t)world * VAL), value[VAL];
    dt_config_key_describe(cfg, (size_t)key, name, sizeof name, value, sizeof value);
    dt_comm_allgather(comm, value, values, VAL);
    /* The first rank whose value differs from rank 0's, and every rank sharing it. */
    int first = -1;
    bool *same_as_first = dt_xcalloc((size_t)world, sizeof(bool));
    for (int r = 1; r < world; r++) {
      const char *v = values + (size_t)r * VAL;
      if (first < 0 && strcmp(v, values) != 0) first = r;
      if (first >= 0 && strcmp(v, values + (size_t)first * VAL) == 0) same_as_first[r] = true;
    }
    /* Digests are of these very texts: some rank's text differs. */
    DT_CHECK(first > 0);
    char ranks[160];
    list_ranks(same_as_first, world, ranks, sizeof ranks);
    st = dt_error_set(DT_ERR_CONFIG,
                      "the ranks run different configurations: %s = %s on rank 0 but %s on %s; "
                      "start every rank with the same config file and --set options",
                      name, *values ? values : "(empty)",
                      values[(size_t)first * VAL] ? values + (size_t)first * VAL : "(empty)", ranks);
    free(same_as_first);
    free(values);
  }
  free(mine);
  free(all);
  return st;
}

/* What a rank loaded (after data.train_limit and data.test_limit): sizes and the CRC-32 of
 * the images and labels of each split. */
enum { DS_DIGEST = 10 };
static void dataset_digest(const dt_dataset *ds, uint64_t *d) {
  const dt_split *sp[2] = {&ds->train, &ds->test};
  d[0] = (uint64_t)ds->train.count;
  d[1] = (uint64_t)ds->test.count;
  d[2] = (uint64_t)ds->train.channels;
  d[3] = (uint64_t)ds->train.height;
  d[4] = (uint64_t)ds->train.width;
  d[5] = (uint64_t)ds->classes;
  for (int s = 0; s < 2; s++) {
    const size_t n = (size_t)sp[s]->count, image = (size_t)sp[s]->channels * sp[s]->height * sp[s]->width;
    d[6 + 2 * s] = crc32_z(crc32_z(0L, Z_NULL, 0), sp[s]->images, n * image);
    d[7 + 2 * s] = crc32_z(crc32_z(0L, Z_NULL, 0), sp[s]->labels, n);
  }
}

/* Collective, after every rank has loaded its dataset: the same images everywhere (a relative
 * or node-local data.dir can name other files on each node). Returns the same verdict on every
 * rank; on a difference *st holds the message on rank 0 (which prints it). */
static bool ranks_share_dataset(trainer *t, dt_status *st) {
  if (t->world == 1) return true;
  uint64_t mine[DS_DIGEST], *all = dt_xmalloc((size_t)t->world * sizeof mine);
  dataset_digest(&t->ds, mine);
  dt_comm_allgather(t->comm, mine, all, sizeof mine);
  static const char *const what[DS_DIGEST] = {
      "training images (count)", "test images (count)", "channels", "height", "width", "classes",
      "training images (CRC-32)", "training labels (CRC-32)", "test images (CRC-32)",
      "test labels (CRC-32)"};
  int first = -1, field = -1;
  bool *differs = dt_xcalloc((size_t)t->world, sizeof(bool));
  for (int r = 1; r < t->world; r++) {
    const uint64_t *d = all + (size_t)r * DS_DIGEST;
    for (int k = 0; k < DS_DIGEST; k++)
      if (d[k] != all[k]) {
        differs[r] = true;
        if (first < 0) first = r, field = k;
        break;
      }
  }
  if (first >= 0 && t->rank == 0) {
    char ranks[160];
    list_ranks(differs, t->world, ranks, sizeof ranks);
    const uint64_t a = all[field], b = all[(size_t)first * DS_DIGEST + field];
    char va[32], vb[32];
    snprintf(va, sizeof va, field >= 6 ? "%08" PRIx64 : "%" PRIu64, a);
    snprintf(vb, sizeof vb, field >= 6 ? "%08" PRIx64 : "%" PRIu64, b);
    const dt_config *cfg = t->cfg;
    *st = dt_error_set(DT_ERR_DATA,
                       "the ranks loaded different datasets: %s %s on rank 0, %s on rank %d "
                       "(%s differ%s from rank 0); %s %s must hold the same files for every "
                       "rank",
                       what[field], va, vb, first, ranks, strchr(ranks, ',') ? "" : "s",
                       dt_dataset_is_file(cfg) ? "data.path" : "data.dir", dt_dataset_location(cfg));
  }
  free(differs);
  free(all);
  return first < 0;
}

/* ---- parameters across ranks and files ---- */

static void params_to_host(trainer *t) {
  dt_params *ps = &t->model->params;
  t->be->ops->to_host(t->be, t->host_weights, ps->weights, ps->n_weights * sizeof(float));
  t->be->ops->to_host(t->be, t->host_buffers, ps->buffers, ps->n_buffers * sizeof(float));
}

static void params_from_host(trainer *t) {
  dt_params *ps = &t->model->params;
  t->be->ops->to_device(t->be, ps->weights, t->host_weights, ps->n_weights * sizeof(float));
  t->be->ops->to_device(t->be, ps->buffers, t->host_buffers, ps->n_buffers * sizeof(float));
}

/* With NCCL the device sums the gradients (DT_NCCL=1 uses it on one rank too, to test the
 * path on a single GPU). Collective: after every rank has set up. */
static dt_status start_nccl(trainer *t, dt_device device) {
  const char *force = getenv("DT_NCCL");
  if (device != DT_DEVICE_CUDA || (t->world == 1 && !(force && strcmp(force, "1") == 0)))
    return DT_OK;
  t->nccl = dt_comm_nccl_create(t->comm);
  if (!t->nccl) return DT_ERR_CONFIG;
  dt_comm_nccl_set_timeout(t->nccl, t->cfg->comm_timeout_s);
  return DT_OK;
}

/* The backward hook of an overlapped step: all-reduce each bucket this node completed. */
static void launch_buckets(void *ctx, int node) {
  trainer *t = ctx;
  dt_params *ps = &t->model->params;
  const dt_bucket *b;
  while ((b = dt_grad_buckets_next(&t->buckets, node)) != NULL)
    dt_comm_nccl_allreduce_async(t->nccl, ps->grads + b->offset, b->count,
                                 t->be->ops->native_stream(t->be));
}

/* Arm the overlap on the graph of a single-pass step (NCCL only). */
static void overlap_begin(trainer *t, dt_graph *g) {
  if (!t->nccl || t->accumulate) return;
  if (!t->buckets_planned) {
    dt_grad_buckets_plan(&t->buckets, g, bucket_floats(t->cfg));
    t->buckets_planned = true;
  }
  dt_grad_buckets_reset(&t->buckets);
  g->on_backward = launch_buckets;
  g->on_backward_ctx = t;
}

/* Sum the gradient arena over the ranks. NCCL: the buckets not yet launched by the overlap
 * (all of them after several passes), then the compute stream waits for the sums. MPI: the
 * comm works on host memory and the arena is backend memory, so the sum goes through
 * host_grads. */
static void allreduce_grads(trainer *t) {
  dt_params *ps = &t->model->params;
  if (t->nccl) {
    void *stream = t->be->ops->native_stream(t->be);
    if (t->buckets_planned && !t->accumulate) {
      const dt_bucket *b;
      while ((b = dt_grad_buckets_next(&t->buckets, -1)) != NULL)
        dt_comm_nccl_allreduce_async(t->nccl, ps->grads + b->offset, b->count, stream);
    } else {
      const size_t bucket = bucket_floats(t->cfg);
      for (size_t off = 0; off < ps->n_weights; off += bucket)
        dt_comm_nccl_allreduce_async(t->nccl, ps->grads + off, DT_MIN(bucket, ps->n_weights - off),
                                     stream);
    }
    dt_comm_nccl_join(t->nccl, stream);
    return;
  }
  if (t->world == 1) return;
  const size_t bytes = ps->n_weights * sizeof(float);
  t->be->ops->to_host(t->be, t->host_grads, ps->grads, bytes);
  dt_comm_allreduce_sum(t->comm, t->host_grads, ps->n_weights);
  t->be->ops->to_device(t->be, ps->grads, t->host_grads, bytes);
}

/* Rank 0's weights and running statistics everywhere. */
static void broadcast_params(trainer *t) {
  if (t->world == 1) return;
  params_to_host(t);
  const dt_params *ps = &t->model->params;
  dt_comm_broadcast(t->comm, t->host_weights, ps->n_weights * sizeof(float), 0);
  dt_comm_broadcast(t->comm, t->host_buffers, ps->n_buffers * sizeof(float), 0);
  params_from_host(t);
}

/* Batch-norm running statistics are updated per rank, once per training forward pass, from
 * its own micro-batches. They are merged as if one rank had run every pass of the step in
 * rank order (what a single process with ranks x accum_steps micro-batches computes), which
 * keeps every rank and every checkpoint identical for any split. With a = 1 - momentum, P
 * passes per rank and r0 the statistics before the step (buffers_backup), rank r holds
 * a^P r0 + c_r, and the sequential result is a^(P W) r0 + sum_r a^(P (W - 1 - r)) c_r. A plain
 * average would give a^P r0 + mean_r c_r instead: too little decay, and a different result
 * for every world size. */
static void merge_buffers(trainer *t, int passes) {
  if (t->world == 1) return;
  dt_params *ps = &t->model->params;
  t->be->ops->to_host(t->be, t->host_buffers, ps->buffers, ps->n_buffers * sizeof(float));
  const double a = 1.0 - (double)dt_model_graph(t->model, t->micro, false)->bn_momentum;
  const double a_p = pow(a, passes), later = pow(a_p, t->world - 1 - t->rank);
  const double a_all = pow(a_p, t->world);
  const float *r0 = t->buffers_backup;
  for (size_t i = 0; i < ps->n_buffers; i++)
    t->buffers_delta[i] = ((double)t->host_buffers[i] - a_p * r0[i]) * later;
  dt_comm_allreduce_sum_f64(t->comm, t->buffers_delta, ps->n_buffers);
  for (size_t i = 0; i < ps->n_buffers; i++)
    t->host_buffers[i] = (float)(a_all * r0[i] + t->buffers_delta[i]);
  t->be->ops->to_device(t->be, ps->buffers, t->host_buffers, ps->n_buffers * sizeof(float));
}

_Static_assert(DT_CHECKPOINT_ALGO_COLS == DT_BACKEND_ALGO_COLS,
               "a checkpoint row of algorithm choices is a backend row");

/* Rank 0 writes a checkpoint of the state after `step` steps, with the metrics of the epoch
 * in progress (NULL: none, at an epoch boundary). The step rows logged so far reach
 * metrics.h5 first: a run killed later resumes from here and redoes only what follows. */
static dt_status save_checkpoint(trainer *t, long epoch, long step, long step_in_epoch,
                                 const epoch_metrics *em) {
  if (t->rank != 0) return DT_OK;
  if (t->metrics && dt_metrics_flush(t->metrics) != DT_OK)
    fprintf(stderr, "dtrain: warning: %s\n", dt_error_message());
  params_to_host(t);
  dt_optim_state_to_host(&t->opt);
  dt_checkpoint_meta meta = {0};
  meta.epoch = epoch;
  meta.step = step;
  meta.step_in_epoch = step_in_epoch;
  meta.optimizer_steps = t->opt.steps;
  meta.world_size = t->world;
  meta.seed = t->cfg->train_seed;
  meta.loss_scale = t->ls.scale;
  meta.loss_scale_good = t->ls.good;
  if (em) {
    memcpy(meta.epoch_sums, em->sums, sizeof meta.epoch_sums);
    memcpy(meta.window_sums, em->win, sizeof meta.window_sums);
    meta.epoch_skipped = em->skipped;
  }
  snprintf(meta.model, sizeof meta.model, "%s", t->cfg->model_name);
  meta.config_text = dt_config_text(t->cfg);
  /* The backend's algorithm choices, so that a resumed run makes the same (train.deterministic). */
  if (t->be->ops->algos_export) {
    meta.n_algos = t->be->ops->algos_export(t->be, NULL, 0);
    meta.algos = dt_xmalloc(DT_MAX(meta.n_algos, 1) * DT_CHECKPOINT_ALGO_COLS * sizeof(int32_t));
    meta.n_algos = DT_MIN(meta.n_algos, t->be->ops->algos_export(t->be, meta.algos, meta.n_algos));
  }
  char path[4200];
  dt_checkpoint_path(t->run_dir, step, path, sizeof path);
  dt_status st = dt_checkpoint_save(path, &t->model->params, t->host_weights, t->host_buffers,
                                    &t->opt.state, &meta);
  free(meta.config_text);
  free(meta.algos);
  if (st == DT_OK) dt_checkpoint_prune(t->run_dir, (int)t->cfg->output_keep_last);
  return st;
}

/* ---- steps and evaluation ---- */

/* Count of rows whose label is among the k largest logits (ties go to the lower class). */
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
  double loss, top1, top5, images;
} eval_result;

static eval_result evaluate(trainer *t) {
  double sums[4] = {0, 0, 0, 0}; /* loss, top1, top5, images */
  dt_loader_start(t->test_ld, 0, 0);
  const dt_batch *b;
  const int K = t->ds.classes;
  while ((b = dt_loader_next(t->test_ld)) != NULL) {
    if (b->n == 0) continue;
    dt_graph *g = dt_model_graph(t->model, b->n, true);
    const dt_tensor *logits = dt_graph_forward(g, b->images, false);
    dt_graph_loss(g, b->targets, 1.0f, t->losses);
    t->be->ops->download(t->be, logits, t->logits);
    for (int i = 0; i < b->n; i++) sums[0] += t->losses[i];
    sums[1] += topk_correct(t->logits, b->labels, b->n, K, 1);
    sums[2] += topk_correct(t->logits, b->labels, b->n, K, DT_MIN(5, K));
    sums[3] += b->n;
  }
  dt_comm_allreduce_sum_f64(t->comm, sums, 4);
  eval_result r = {sums[0] / sums[3], 100.0 * sums[1] / sums[3], 100.0 * sums[2] / sums[3], sums[3]};
  return r;
}

static int argmax(const float *z, int k) {
  int best = 0;
  for (int c = 1; c < k; c++)
    if (z[c] > z[best]) best = c;
  return best;
}

/* Training accuracy of n rows: the label match, or with mixed targets the reference mix of the
 * accuracies, sum_i target[i, argmax z_i]. */
static double train_correct(const float *logits, const float *targets, const int *labels, int n,
                            int K, bool mixed) {
  if (!mixed) return topk_correct(logits, labels, n, K, 1);
  double c = 0;
  for (int i = 0; i < n; i++) c += targets[(size_t)i * K + argmax(logits + (size_t)i * K, K)];
  return c;
}

/* The factor of the loss gradient, S / global_n (S = 1 without loss scaling), in float as
 * S * fl(1 / global_n): for S a power of two exactly S times the unscaled factor, so that
 * scaling changes no rounding anywhere in backward. */
static float loss_grad(const trainer *t, int global_n) {
  return (float)t->ls.scale * (1.0f / (float)global_n);
}

/* Add the top partial sum of the stack to the one below it. */
static void merge_top_gradients(trainer *t) {
  const size_t n = t->model->params.n_weights;
  float *dst = t->grad_stack[t->grad_depth - 2];
  const float *src = t->grad_stack[t->grad_depth - 1];
  for (size_t j = 0; j < n; j++) dst[j] += src[j];
  t->grad_passes[t->grad_depth - 2] += t->grad_passes[t->grad_depth - 1];
  t->grad_depth--;
}

/* Add this backward pass's parameter gradients to the step's sum (pass 0 starts it). The
 * passes are added in fp32 as a balanced binary tree in pass order, (g0 + g1) + (g2 + g3),
 * by a stack that merges neighbours holding equally many passes: the order in which an
 * all-reduce by recursive doubling adds ranks. A plain running sum, ((g0 + g1) + g2) + g3,
 * rounds differently from 2 ranks x 2 passes or 4 ranks x 1, and training amplifies that
 * last-bit difference (pre-batch-norm biases have gradients that are mostly cancellation). */
static void sum_gradients(trainer *t, int pass) {
  dt_params *ps = &t->model->params;
  if (!t->accumulate) return;
  if (pass == 0) t->grad_depth = 0;
  const int d = t->grad_depth++;
  DT_CHECK(d < (int)DT_ARRAY_LEN(t->grad_stack));
  if (!t->grad_stack[d]) t->grad_stack[d] = dt_xmalloc(DT_MAX(ps->n_weights, 1) * sizeof(float));
  t->be->ops->to_host(t->be, t->grad_stack[d], ps->grads, ps->n_weights * sizeof(float));
  t->grad_passes[d] = 1;
  while (t->grad_depth >= 2 &&
         t->grad_passes[t->grad_depth - 2] == t->grad_passes[t->grad_depth - 1])
    merge_top_gradients(t);
}

/* Dual-Cutout on one micro-batch (docs/reference-experiments.md "Augmentations and losses"): z1 and
 * z2 from two forward passes with their own batch statistics; loss 0.5 [CE(z1, y) + CE(z2, y)] +
 * alpha MSE(z1, z2), CE over the global batch and MSE over its N x K logits; accuracy on (z1 + z2)
 * / 2. */
static void dual_cutout_step(trainer *t, const float *x1, const float *x2, const float *targets,
                             const int *labels, int global_n, uint64_t key, long offset, int *pass,
                             double *loss_sum, double *correct) {
  const int n = t->micro, K = t->ds.classes;
  const double alpha = t->cfg->augment_dual_cutout_alpha;
  dt_graph *g1 = dt_model_graph_slot(t->model, n, false, 0);
  dt_graph *g2 = dt_model_graph_slot(t->model, n, false, 1);
  g1->step_key = g2->step_key = key;
  g1->sample_offset = g2->sample_offset = offset;
  const dt_tensor *z1 = dt_graph_forward(g1, x1, true), *z2 = dt_graph_forward(g2, x2, true);
  float *l2 = t->losses + n;
  dt_graph_loss(g1, targets, 0.5f * loss_grad(t, global_n), t->losses);
  dt_graph_loss(g2, targets, 0.5f * loss_grad(t, global_n), l2);
  t->be->ops->download(t->be, z1, t->logits);
  t->be->ops->download(t->be, z2, t->logits2);
  const size_t bytes = (size_t)n * K * sizeof(float);
  const float scale = (float)(t->ls.scale * 2.0 * alpha / ((double)global_n * K));
  dt_graph *gs[2] = {g1, g2};
  for (int v = 0; v < 2; v++) {
    dt_tensor *dz = &gs[v]->values[gs[v]->n_nodes].grad;
    t->be->ops->to_host(t->be, t->dlogits, dz->data, bytes);
    const float sign = v == 0 ? 1.0f : -1.0f;
    for (size_t j = 0; j < (size_t)n * K; j++)
      t->dlogits[j] += sign * scale * (t->logits[j] - t->logits2[j]);
    t->be->ops->to_device(t->be, dz->data, t->dlogits, bytes);
    dt_graph_backward(gs[v]);
    sum_gradients(t, (*pass)++);
  }
  for (int i = 0; i < n; i++) {
    double mse = 0;
    for (int c = 0; c < K; c++) {
      double d = (double)t->logits[i * K + c] - t->logits2[i * K + c];
      mse += d * d;
    }
    *loss_sum += 0.5 * ((double)t->losses[i] + l2[i]) + alpha * mse / K;
  }
  for (size_t j = 0; j < (size_t)n * K; j++) t->logits[j] = 0.5f * (t->logits[j] + t->logits2[j]);
  *correct += topk_correct(t->logits, labels, n, K, 1);
}

/* A loader restart refills batch memory that may have been prefetched and never uploaded. */
static void start_loader(trainer *t, dt_loader *ld, long epoch, long first_step) {
  if (t->be->ops->prefetch) t->be->ops->prefetch(t->be, NULL, 0);
  dt_loader_start(ld, epoch, first_step);
}

/* While the device runs this step's forward pass: wait for the loader's next batch and start
 * copying its images (single-pass steps, where upload takes the whole batch at once). */
static void prefetch_next(trainer *t) {
  if (!t->prefetch_ld || !t->be->ops->prefetch || t->accumulate) return;
  const dt_batch *nb = dt_loader_peek(t->prefetch_ld);
  if (!nb || nb->n == 0) return;
  const dt_split *tr = &t->ds.train;
  t->be->ops->prefetch(t->be, nb->images,
                       (size_t)nb->n * tr->channels * tr->height * tr->width);
}

/* train.cuda_graphs applies to this step: a backend that records, one pass, no per-step host
 * input in the model, no NCCL hooks in backward. */
static bool replayable(const trainer *t, const dt_graph *g) {
  return t->cfg->train_cuda_graphs && !t->replay.off && t->be->ops->capture_begin &&
         !t->accumulate && !t->nccl && dt_graph_replayable(g);
}

/* What a recording of one training pass runs (replay_step). */
typedef struct {
  dt_graph *g;
  float grad_scale;
  float *losses;
} replay_record_ctx;

static void replay_record(void *ctx) {
  replay_record_ctx *c = ctx;
  dt_graph_run_forward(c->g, true);
  dt_graph_run_loss(c->g, c->grad_scale, c->losses);
  dt_graph_backward(c->g);
}

/* One pass with the device work replayed: inputs and targets go up first, the recorded
 * forward, loss and backward run as one unit, recorded anew when the graph, the loss
 * gradient factor (a new loss scale) or the backend's memory changed (dt_replay_pass). The
 * first two steps run op by op, so that every buffer and algorithm exists before recording.
 * Returns the logits. */
static const dt_tensor *replay_step(trainer *t, dt_graph *g, const float *x,
                                    const float *targets, float grad_scale) {
  dt_graph_set_input(g, x);
  dt_graph_set_targets(g, targets);
  replay_record_ctx rc = {g, grad_scale, t->losses};
  if (dt_replay_pass(&t->replay, t->be, g, grad_scale, replay_record, &rc)) {
    prefetch_next(t);
  } else {
    /* Warm-up, or recording failed: nothing recorded has run. */
    dt_graph_run_forward(g, true);
    prefetch_next(t);
    dt_graph_run_loss(g, grad_scale, t->losses);
    dt_graph_backward(g);
  }
  return &g->values[g->n_nodes].t;
}

/* Forward and backward over this rank's micro-batches of global step `step`; leaves the
 * rank's gradient sum in the gradient arena. Adds the summed loss and top-1 count. Returns the
 * number of training passes (each one updated the batch-norm running statistics). Dropout and
 * shake-shake draw from a key of (seed, step) and each sample's index in the global batch, so
 * they too are the same for any world size. */
static int compute_gradients(trainer *t, const dt_batch *b, long step, double *loss_sum,
                             double *correct) {
  dt_rng kr = dt_rng_key((uint64_t)t->cfg->train_seed, DT_RNG_DROPOUT, (uint64_t)step, 0);
  const uint64_t key = dt_rng_u64(&kr);
  dt_params *ps = &t->model->params;
  const dt_split *tr = &t->ds.train;
  const size_t image = (size_t)tr->channels * tr->height * tr->width;
  const int K = t->ds.classes;
  int pass = 0;
  for (int k = 0; k < t->accum; k++) {
    const size_t first = (size_t)k * t->micro;
    const float *x = b->images + first * image, *targets = b->targets + first * K;
    const int *labels = b->labels + first;
    const long offset = (long)t->rank * (b->global_n / t->world) + (long)first;
    if (b->images2) {
      dual_cutout_step(t, x, b->images2 + first * image, targets, labels, b->global_n, key, offset,
                       &pass, loss_sum, correct);
      continue;
    }
    dt_graph *g = dt_model_graph(t->model, t->micro, false);
    g->step_key = key;
    g->sample_offset = offset;
    const dt_tensor *logits;
    if (replayable(t, g)) {
      logits = replay_step(t, g, x, targets, loss_grad(t, b->global_n));
    } else {
      logits = dt_graph_forward(g, x, true);
      prefetch_next(t);
      dt_graph_loss(g, targets, loss_grad(t, b->global_n), t->losses);
      overlap_begin(t, g);
      dt_graph_backward(g);
      g->on_backward = NULL;
    }
    sum_gradients(t, pass++);
    t->be->ops->download(t->be, logits, t->logits);
    for (int i = 0; i < t->micro; i++) *loss_sum += t->losses[i];
    *correct += train_correct(t->logits, targets, labels, t->micro, K, b->mixed);
  }
  if (pass > 1) {
    /* What is left on the stack (pass counts other than powers of two), from the top. */
    while (t->grad_depth > 1) merge_top_gradients(t);
    t->be->ops->to_device(t->be, ps->grads, t->grad_stack[0], ps->n_weights * sizeof(float));
  }
  return pass;
}

/* Fault injection for the tests: DTRAIN_FAULT_KILL=RANK:STEP makes that rank SIGKILL itself
 * before step STEP; DTRAIN_FAULT_SIGNAL=STEP raises SIGTERM on every rank before that step. */
static void inject_faults(const trainer *t, long step) {
  static int parsed;
  static long kill_rank = -1, kill_step = -1, signal_step = -1;
  if (!parsed) {
    parsed = 1;
    const char *k = getenv("DTRAIN_FAULT_KILL"), *s = getenv("DTRAIN_FAULT_SIGNAL");
    if (k && sscanf(k, "%ld:%ld", &kill_rank, &kill_step) != 2) kill_rank = -1;
    if (s) signal_step = atol(s);
  }
  if (kill_rank == t->rank && kill_step == step) raise(SIGKILL);
  if (signal_step == step) raise(SIGTERM);
}

/* DTRAIN_FAULT_OVERFLOW=S1,S2,... (0-based steps): rank 0's gradient sum of those steps gets
 * an infinite element, as an fp16 overflow would leave it (tests of loss scaling). Called
 * after allreduce_grads: the write is enqueued on the compute stream, which has joined the
 * all-reduces, so it cannot race an NCCL reduction of the same bucket (and be lost in it). The
 * step's finite check, reduced over every rank, then skips the update everywhere. */
static void inject_overflow(const trainer *t, long step) {
  static const char *v;
  static int looked;
  if (!looked) looked = 1, v = getenv("DTRAIN_FAULT_OVERFLOW"); /* once, off the step path */
  if (!v || t->rank != 0) return;
  for (const char *p = v; *p;) {
    char *end;
    long s = strtol(p, &end, 10);
    if (end == p) return;
    if (s == step) {
      const float inf = INFINITY;
      t->be->ops->to_device(t->be, t->model->params.grads, &inf, sizeof inf);
      return;
    }
    p = *end == ',' ? end + 1 : end;
  }
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
  say(t, "dtrain %s: %s (%d train / %d test images, %dx%dx%d, %d classes) on %s\n", DT_VERSION,
      cfg->data_dataset, t->ds.train.count, t->ds.test.count, t->ds.train.channels,
      t->ds.train.height, t->ds.train.width, t->ds.classes, t->be->ops->name);
  say(t, "%s; global batch %ld = %d ranks x %d micro-batches x %d images\n", t->threads_line,
      cfg->train_batch_size, t->world, t->accum, t->micro);
  say(t, "model: %s-%ld %s, %ld parameters\n", cfg->model_name, cfg->model_depth,
      cfg->model_block_type, dt_model_param_count(t->model));
  say(t, "lr: %g x batch %ld / reference %ld (linear scaling rule) = %g; %s, schedule %s\n",
      cfg->optim_lr, cfg->train_batch_size, cfg->optim_reference_batch, t->sched.base_lr,
      cfg->optim_name, cfg->schedule_type);
  if (t->precision != DT_PRECISION_FP32 || t->ls.active) {
    char scaling[128] = "no loss scaling";
    if (t->ls.dynamic)
      snprintf(scaling, sizeof scaling, "dynamic loss scale from %g (x2 after %ld good steps)",
               t->ls.scale, t->ls.growth);
    else if (t->ls.active)
      snprintf(scaling, sizeof scaling, "fixed loss scale %g", t->ls.scale);
    say(t, "precision: %s convolutions%s; %s\n", dt_precision_name(t->precision),
        t->precision != DT_PRECISION_FP32 && strcmp(t->be->ops->name, "cpu") == 0
            ? " (emulated by rounding operands and results)"
            : "",
        scaling);
  }
  if (t->nccl)
    say(t, "all-reduce: NCCL on the GPUs, buckets of %g MiB %s\n", cfg->train_bucket_mb,
        t->accumulate ? "after the step's last backward pass" : "overlapped with backward");
  else if (t->world > 1)
    say(t, "all-reduce: MPI through host memory, buckets of %g MiB\n", cfg->train_bucket_mb);
  say(t, "steps: %ld per epoch x %ld epochs; run directory %s\n", t->steps_per_epoch,
      cfg->train_epochs, t->run_dir);
  /* Printed here, once log.txt is open, so that the log says where the run came from. */
  if (t->start_note[0]) say(t, "%s\n", t->start_note);
}

/* The checkpoint a run resumes from against the configuration it resumes with: the same seed
 * and model, a position (epoch, step in epoch, step) that this configuration's epochs can
 * have, a loss scale it can use, metrics sums of at most the images of the steps done. */
static dt_status check_resume_meta(const trainer *t, const char *path, const dt_checkpoint_meta *m) {
  const dt_config *cfg = t->cfg;
  const long spe = t->steps_per_epoch;
  if (m->seed != cfg->train_seed)
    return dt_error_set(DT_ERR_DATA,
                        "checkpoint %s: seed %ld, but the configuration has [train] seed = %ld",
                        path, m->seed, cfg->train_seed);
  if (strcmp(m->model, cfg->model_name) != 0)
    return dt_error_set(DT_ERR_DATA,
                        "checkpoint %s: model %s, but the configuration has [model] name = %s",
                        path, m->model, cfg->model_name);
  if (m->step_in_epoch > spe)
    return dt_error_set(DT_ERR_DATA,
                        "checkpoint %s: step_in_epoch = %ld is beyond the %ld steps of an epoch",
                        path, m->step_in_epoch, spe);
  if (m->epoch + (m->step_in_epoch > 0) > cfg->train_epochs)
    return dt_error_set(DT_ERR_DATA,
                        "checkpoint %s: epoch %ld%s is beyond [train] epochs = %ld", path,
                        m->epoch + (m->step_in_epoch > 0),
                        m->step_in_epoch > 0 ? " (in progress)" : " (completed)", cfg->train_epochs);
  if (m->step != m->epoch * spe + m->step_in_epoch)
    return dt_error_set(DT_ERR_DATA,
                        "checkpoint %s: step = %ld, but epoch %ld x %ld steps per epoch + "
                        "step_in_epoch %ld = %ld (corrupt, or another batch or dataset size?)",
                        path, m->step, m->epoch, spe, m->step_in_epoch,
                        m->epoch * spe + m->step_in_epoch);
  if (t->ls.active && m->loss_scale > 0 && m->loss_scale < DT_LOSS_SCALE_MIN)
    return dt_error_set(DT_ERR_DATA, "checkpoint %s: loss_scale = %g is below the smallest, %g",
                        path, m->loss_scale, DT_LOSS_SCALE_MIN);
  const double images = (double)m->step_in_epoch * (double)cfg->train_batch_size;
  if (m->epoch_sums[2] > images)
    return dt_error_set(DT_ERR_DATA,
                        "checkpoint %s: epoch_images = %g exceeds the %g images of %ld steps",
                        path, m->epoch_sums[2], images, m->step_in_epoch);
  return DT_OK;
}

/* Restore the state of a checkpoint (resume) or the weights of one (--init). */
static dt_status load_start(trainer *t, const dt_run_opts *opts, long *step, long *epoch,
                            long *step_in_epoch) {
  *step = *epoch = *step_in_epoch = 0;
  if (!opts->resume_dir && !opts->init_path) return DT_OK;
  char path[4200];
  dt_status st;
  if (opts->resume_dir) {
    st = dt_checkpoint_latest(opts->resume_dir, path, sizeof path);
    if (st != DT_OK) return st;
  } else {
    snprintf(path, sizeof path, "%s", opts->init_path);
  }
  dt_checkpoint_meta meta = {0};
  params_to_host(t);
  st = dt_checkpoint_load(path, &t->model->params, t->host_weights, t->host_buffers,
                          opts->resume_dir ? &t->opt.state : NULL, opts->resume_dir ? &meta : NULL);
  if (st != DT_OK) return st;
  if (opts->resume_dir) st = check_resume_meta(t, path, &meta);
  if (st != DT_OK) {
    free(meta.config_text);
    free(meta.algos);
    return st;
  }
  params_from_host(t);
  if (opts->resume_dir) {
    dt_optim_state_from_host(&t->opt);
    memcpy(t->resumed.sums, meta.epoch_sums, sizeof meta.epoch_sums);
    memcpy(t->resumed.win, meta.window_sums, sizeof meta.window_sums);
    t->resumed.skipped = meta.epoch_skipped;
    *step = meta.step;
    *epoch = meta.epoch;
    *step_in_epoch = meta.step_in_epoch;
    t->opt.steps = meta.optimizer_steps;
    if (t->ls.active && meta.loss_scale > 0) {
      t->ls.scale = meta.loss_scale;
      t->ls.good = meta.loss_scale_good;
    }
    snprintf(t->start_note, sizeof t->start_note,
             "resuming from %s: epoch %ld, step %ld (checkpoint of %d rank(s))", path,
             meta.epoch + (meta.step_in_epoch > 0), meta.step, meta.world_size);
    /* train.deterministic: the algorithms the interrupted run chose, not a new timing. */
    if (t->cfg->train_deterministic && meta.n_algos > 0 && t->be->ops->algos_import)
      t->be->ops->algos_import(t->be, meta.algos, meta.n_algos);
    free(meta.config_text);
    free(meta.algos);
  } else {
    snprintf(t->start_note, sizeof t->start_note, "initial weights from %s", path);
  }
  return DT_OK;
}

int dt_train_run(const dt_config *cfg, dt_comm *comm, const dt_run_opts *opts) {
  if (ranks_share_config(comm, cfg) != DT_OK) {
    if (dt_comm_rank(comm) == 0) fprintf(stderr, "dtrain: %s\n", dt_error_message());
    return DT_EXIT_INPUT;
  }
  h5_init();
  trainer t;
  dt_status st = trainer_setup(&t, cfg, comm, opts->device);
  if (opts->resume_dir) t.run_dir = opts->resume_dir;
  t.config_changes = opts->config_changes;
  long step = 0, epoch0 = 0, skip = 0;
  /* A resumed run owns its directory before it picks the latest checkpoint. */
  if (st == DT_OK && opts->resume_dir && t.rank == 0) st = lock_run_dir(&t);
  if (st == DT_OK) st = load_start(&t, opts, &step, &epoch0, &skip);
  /* Rank 0 touches the run directory only once every rank has set up, so an input error on
   * any rank leaves no new directory behind (and a resumed one unchanged). */
  if (agree(&t, st) == DT_OK && ranks_share_dataset(&t, &st)) st = start_nccl(&t, opts->device);
  const bool set_up = agree(&t, st) == DT_OK;
  if (set_up && t.rank == 0) st = open_run_dir(&t, opts->resume_dir != NULL, step);
  if (st != DT_OK && t.rank == 0) {
    remove_created_dirs(&t);
    fprintf(stderr, "dtrain: %s\n", dt_error_message());
  }
  if (!set_up || agree(&t, st) != DT_OK) {
    if (st != DT_OK && t.rank != 0) fprintf(stderr, "dtrain (rank %d): %s\n", t.rank, dt_error_message());
    trainer_free(&t);
    return DT_EXIT_INPUT;
  }
  free(t.created_dir); /* the run started: what it writes stays */
  t.created_dir = NULL;
  broadcast_params(&t);
  print_header(&t);
  if (t.config_changes)
    say(&t, "configuration changed on resume (--set): %s; config.ini rewritten\n",
        t.config_changes);
  t.prefetch_ld = t.train_ld;

  const long max_steps = cfg->train_max_steps, log_every = cfg->output_log_every;
  const bool skip_nonfinite = strcmp(cfg->train_nonfinite, "skip") == 0;
  const double t_start = dt_now();
  int status = DT_EXIT_OK;
  long last_ckpt = -1;
  for (long epoch = epoch0; epoch < cfg->train_epochs && status == DT_EXIT_OK; epoch++) {
    if (max_steps && step >= max_steps) break;
    const double t0 = dt_now();
    epoch_metrics em = {0};
    if (epoch == epoch0) em = t.resumed;
    double *sums = em.sums, *win = em.win; /* loss, correct, images */
    double images_here = 0; /* trained on by this process in this epoch (for images/s) */
    long i = epoch == epoch0 ? skip : 0;
    start_loader(&t, t.train_ld, epoch, i);
    const dt_batch *b;
    while ((b = dt_loader_next(t.train_ld)) != NULL) {
      inject_faults(&t, step);
      dt_params *ps = &t.model->params;
      if (t.buffers_backup)
        t.be->ops->to_host(t.be, t.buffers_backup, ps->buffers, ps->n_buffers * sizeof(float));
      double loss = 0, correct = 0;
      const int passes = compute_gradients(&t, b, step, &loss, &correct);
      allreduce_grads(&t);
      inject_overflow(&t, step); /* after the join: NCCL no longer touches the gradients */
      /* One reduction carries the metrics and every rank's view of signals and faults. */
      double red[5] = {loss, correct, b->n, g_stop_signal != 0, !dt_optim_grads_finite(&t.model->params)};
      dt_comm_allreduce_sum_f64(comm, red, 5);
      const double lr = dt_schedule_lr(&t.sched, step);
      /* The gradients carry this step's loss scale until the update divides it out. */
      const double used_scale = t.ls.scale;
      const dt_scale_verdict verdict =
          isfinite(red[0]) ? dt_loss_scale_update(&t.ls, red[4] == 0) : DT_SCALE_NONFINITE;
      if (verdict == DT_SCALE_APPLY) {
        dt_optim_step(&t.opt, &t.model->params, lr, (float)(1.0 / used_scale));
        merge_buffers(&t, passes);
        for (int j = 0; j < 3; j++) sums[j] += red[j], win[j] += red[j];
        images_here += red[2];
      } else {
        if (verdict == DT_SCALE_NONFINITE && !skip_nonfinite) {
          say_error(&t, "non-finite %s at step %ld (epoch %ld); stopping (set "
                        "train.nonfinite=skip to skip such steps)",
                    isfinite(red[0]) ? "gradient" : "loss", step + 1, epoch + 1);
          status = DT_EXIT_RUNTIME;
          break;
        }
        if (verdict == DT_SCALE_DIVERGED) {
          say_error(&t, "non-finite gradients at step %ld (epoch %ld) at every loss scale "
                        "down to %g: the run diverged; stopping",
                    step + 1, epoch + 1, used_scale);
          status = DT_EXIT_RUNTIME;
          break;
        }
        if (verdict == DT_SCALE_OVERFLOW)
          say(&t, "%sstep %ld: gradients overflow at loss scale %g: update skipped, scale now %g\n",
              t.tty ? "\n" : "", step + 1, used_scale, t.ls.scale);
        else
          say(&t, "%sskipping step %ld: non-finite loss or gradient\n", t.tty ? "\n" : "",
              step + 1);
        em.skipped++;
        /* The forward pass also fed the running statistics: take them back. */
        t.be->ops->to_device(t.be, ps->buffers, t.buffers_backup, ps->n_buffers * sizeof(float));
      }
      step++, i++;
      if (i % log_every == 0 || i == t.steps_per_epoch) {
        double el = dt_now() - t0, ips = images_here / el;
        long left = (cfg->train_epochs - epoch) * t.steps_per_epoch - i;
        char eta[32], line[256];
        format_eta((double)left * (double)cfg->train_batch_size / ips, eta, sizeof eta);
        double wl = win[2] > 0 ? win[0] / win[2] : NAN, wa = win[2] > 0 ? 100.0 * win[1] / win[2] : NAN;
        int len = snprintf(line, sizeof line,
                           "epoch %ld/%ld step %ld/%ld lr %.5f loss %.4f acc %.2f%% %.0f img/s ETA %s",
                           epoch + 1, cfg->train_epochs, i, t.steps_per_epoch, lr, wl, wa, ips, eta);
        if (t.ls.active && len > 0 && (size_t)len < sizeof line)
          snprintf(line + len, sizeof line - (size_t)len, " scale %g", t.ls.scale);
        if (t.rank == 0) {
          printf(t.tty ? "\r%s\033[K" : "%s\n", line);
          fflush(stdout);
          if (t.log) {
            fprintf(t.log, "%s\n", line);
            fflush(t.log); /* progress visible to tail -f while the epoch runs */
          }
          dt_step_row row = {(double)step, (double)epoch + 1, lr, wl, wa, ips, t.ls.scale};
          dt_metrics_step(t.metrics, &row);
        }
        win[0] = win[1] = win[2] = 0;
      }
      if (red[3] > 0 || (cfg->output_checkpoint_steps && step % cfg->output_checkpoint_steps == 0) ||
          (max_steps && step >= max_steps)) {
        bool end_of_epoch = i == t.steps_per_epoch;
        if (red[3] > 0 || !end_of_epoch) {
          if (t.tty) printf("\n");
          dt_status cs = agree(&t, save_checkpoint(&t, epoch, step, i, &em));
          if (cs != DT_OK) {
            say_error(&t, "%s", dt_error_message());
            status = DT_EXIT_RUNTIME;
            break;
          }
          last_ckpt = step;
          if (red[3] > 0) {
            say(&t, "stopped by a signal after step %ld: checkpoint written; continue with "
                    "--resume %s\n", step, t.run_dir);
            status = DT_EXIT_PREEMPTED;
            break;
          }
        }
        if (max_steps && step >= max_steps) break;
      }
    }
    if (status != DT_EXIT_OK) break;
    bool epoch_done = i == t.steps_per_epoch;
    double train_s = dt_now() - t0;
    eval_result r = evaluate(&t);
    if (t.tty) printf("\r\033[K");
    /* No step of the epoch counted (resumed at its end from a checkpoint of format 1, which
     * has no metrics state, or every update skipped): its training metrics are unknown (NaN),
     * not zero. */
    const double n = sums[2] > 0 ? sums[2] : NAN;
    say(&t,
        "epoch %ld/%ld train loss %.4f acc %.2f%% | test loss %.4f top1 %.2f%% top5 %.2f%% | "
        "%.1f s, %.0f img/s\n",
        epoch + 1, cfg->train_epochs, sums[0] / n, 100.0 * sums[1] / n, r.loss, r.top1, r.top5,
        dt_now() - t0, images_here / train_s);
    if (t.rank == 0) {
      dt_epoch_row row = {(double)epoch + 1, (double)step, dt_schedule_lr(&t.sched, DT_MAX(step - 1, 0)),
                          sums[0] / n, 100.0 * sums[1] / n, r.loss, r.top1, r.top5,
                          dt_now() - t0, images_here / train_s, t.ls.scale, (double)em.skipped};
      if (dt_metrics_epoch(t.metrics, &row) != DT_OK)
        fprintf(stderr, "dtrain: warning: %s\n", dt_error_message());
    }
    bool last = epoch + 1 == cfg->train_epochs || (max_steps && step >= max_steps);
    bool periodic = cfg->output_checkpoint_every && (epoch + 1) % cfg->output_checkpoint_every == 0;
    if (epoch_done && (last || periodic) && last_ckpt != step) {
      dt_status cs = agree(&t, save_checkpoint(&t, epoch + 1, step, 0, NULL));
      if (cs != DT_OK) {
        say_error(&t, "%s", dt_error_message());
        status = DT_EXIT_RUNTIME;
      }
      last_ckpt = step;
    }
  }
  if (status == DT_EXIT_OK) {
    double ar = dt_comm_allreduce_seconds(comm);
    say(&t, "done: %ld steps in %.1f s", step, dt_now() - t_start);
    if (t.world > 1) say(&t, ", all-reduce %.1f s", ar);
    if (t.replay.recordings)
      say(&t, ", %ld passes replayed from %ld CUDA graph recordings", t.replay.replays,
          t.replay.recordings);
    say(&t, "\n");
  }
  trainer_free(&t);
  return status;
}

int dt_train_bench(const dt_config *cfg, dt_comm *comm, dt_device device, long steps) {
  if (ranks_share_config(comm, cfg) != DT_OK) {
    if (dt_comm_rank(comm) == 0) fprintf(stderr, "dtrain: %s\n", dt_error_message());
    return DT_EXIT_INPUT;
  }
  trainer t;
  dt_status st = trainer_setup(&t, cfg, comm, device);
  dt_status all = agree(&t, st);
  if (all == DT_OK && !ranks_share_dataset(&t, &st)) all = DT_ERR_DATA;
  if (all == DT_OK) {
    st = start_nccl(&t, device);
    all = agree(&t, st);
  }
  if (all != DT_OK) {
    if (st != DT_OK) fprintf(stderr, "dtrain: %s\n", dt_error_message());
    trainer_free(&t);
    return DT_EXIT_INPUT;
  }
  const int warmup = 3;
  double loss = 0, correct = 0;
  const float unscale = dt_loss_scale_unscale(&t.ls); /* a fixed scale: timing only */
  /* With data: the loader prepares each batch while the model computes (and a GPU copies the
   * next one meanwhile). */
  t.prefetch_ld = t.train_ld;
  start_loader(&t, t.train_ld, 0, 0);
  double n_with = 0, t0 = 0, ar0 = 0;
  for (long i = 0; i < warmup + steps; i++) {
    if (i == warmup) t0 = dt_now();
    const dt_batch *b = dt_loader_next(t.train_ld);
    if (!b) {
      start_loader(&t, t.train_ld, i, 0);
      b = dt_loader_next(t.train_ld);
    }
    compute_gradients(&t, b, i, &loss, &correct);
    allreduce_grads(&t);
    dt_optim_step(&t.opt, &t.model->params, dt_schedule_lr(&t.sched, i), unscale);
    if (i >= warmup) n_with += b->global_n;
  }
  double with_data = n_with / (dt_now() - t0);
  /* Model compute only: one batch already in memory, stepped repeatedly. */
  t.prefetch_ld = NULL;
  start_loader(&t, t.train_ld, 0, 0);
  const dt_batch *b = dt_loader_next(t.train_ld);
  double n_only = 0, nccl_s0 = 0;
  size_t nccl_n0 = 0, nccl_b0 = 0;
  for (long i = 0; i < warmup + steps; i++) {
    if (i == warmup) {
      dt_comm_barrier(comm);
      t0 = dt_now();
      ar0 = dt_comm_allreduce_seconds(comm);
      if (t.nccl) {
        nccl_s0 = dt_comm_nccl_host_seconds(t.nccl);
        nccl_n0 = dt_comm_nccl_allreduce_count(t.nccl);
        nccl_b0 = dt_comm_nccl_allreduce_bytes(t.nccl);
      }
    }
    compute_gradients(&t, b, i, &loss, &correct);
    allreduce_grads(&t);
    dt_optim_step(&t.opt, &t.model->params, dt_schedule_lr(&t.sched, i), unscale);
    if (i >= warmup) n_only += b->global_n;
  }
  double secs = dt_now() - t0, only = n_only / secs;
  double ar = dt_comm_allreduce_seconds(comm) - ar0;
  if (t.rank == 0) {
    printf("model: %s-%ld, global batch %ld (%d rank(s) x %d micro-batch(es) of %d), %s, %d "
           "thread(s), %ld timed steps\n",
           cfg->model_name, cfg->model_depth, cfg->train_batch_size, t.world, t.accum, t.micro,
           t.be->ops->name, t.be->threads, steps);
    printf("%s\n", t.threads_line);
    printf("step: %.1f ms, all-reduce %.2f ms per step (%.1f%%), %.1f images/s per rank\n",
           1e3 * secs / (double)steps, 1e3 * ar / (double)steps, 100.0 * ar / secs, only / t.world);
    if (t.nccl)
      printf("nccl: %.1f all-reduces of %.2f MiB in all per step, %.3f ms per step in NCCL "
             "calls on the host (the transfers overlap)\n",
             (double)(dt_comm_nccl_allreduce_count(t.nccl) - nccl_n0) / (double)steps,
             (double)(dt_comm_nccl_allreduce_bytes(t.nccl) - nccl_b0) / (double)steps / 1048576.0,
             1e3 * (dt_comm_nccl_host_seconds(t.nccl) - nccl_s0) / (double)steps);
    printf("bench_with_data: %.1f images/s\n", with_data);
    printf("bench: %.1f images/s\n", only);
  }
  trainer_free(&t);
  return DT_EXIT_OK;
}

int dt_train_dry_run(const dt_config *cfg) {
  dt_config_write(cfg, stdout);
  dt_dataset ds;
  dt_status st = dt_dataset_describe_config(cfg, &ds);
  if (st != DT_OK) {
    fprintf(stderr, "dtrain: %s\n", dt_error_message());
    return DT_EXIT_INPUT;
  }
  const char *dir = dt_dataset_location(cfg);
  struct stat sb;
  if (stat(dir, &sb) == 0) {
    dt_dataset full;
    if (dt_dataset_load_config(&full, cfg) != DT_OK) {
      fprintf(stderr, "dtrain: %s\n", dt_error_message());
      return DT_EXIT_INPUT;
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
  return DT_EXIT_OK;
}
