/* train.c: a training run (train.h). Every rank sets up the same trainer (trainer.c) and runs
 * the same steps (step.c); rank 0 alone writes the run directory (io/rundir.c: config.ini,
 * log.txt, metrics.h5, checkpoints/), tells the user (report.c) and saves the checkpoints
 * (run_state.c). This file is the loop: each step is forward and backward, all-reduce,
 * update, report, maybe a checkpoint; each epoch ends with an evaluation (evaluate.c). SIGTERM
 * / SIGUSR1 end the run at the next step boundary with a checkpoint and exit status 143;
 * --resume continues bit-exactly from the latest checkpoint. */
#define _GNU_SOURCE
#include "train.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dump_batch.h"
#include "io/h5util.h"
#include "io/rundir.h"
#include "ranks.h"
#include "report.h"
#include "run_state.h"
#include "trainer.h"

static volatile sig_atomic_t g_stop_signal;

static void on_stop_signal(int sig) { g_stop_signal = sig; }

/* The action of the stop signals, SIGTERM and SIGUSR1. */
static void set_stop_action(void (*handler)(int)) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = handler;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGUSR1, &sa, NULL);
}

void dt_train_catch_signals(void) { set_stop_action(on_stop_signal); }

void dt_train_release_signals(void) {
  set_stop_action(SIG_DFL);
  if (g_stop_signal) raise(g_stop_signal); /* one that came during start-up */
}

/* Fault injection for the tests: DTRAIN_FAULT_KILL=RANK:STEP makes that rank SIGKILL itself
 * before step STEP; DTRAIN_FAULT_SIGNAL=STEP raises SIGTERM on every rank before that step. */
static void inject_faults(int rank, long step) {
  static int parsed;
  static long kill_rank = -1, kill_step = -1, signal_step = -1;
  if (!parsed) {
    parsed = 1;
    const char *k = getenv("DTRAIN_FAULT_KILL"), *s = getenv("DTRAIN_FAULT_SIGNAL");
    if (k && sscanf(k, "%ld:%ld", &kill_rank, &kill_step) != 2) kill_rank = -1;
    if (s) signal_step = atol(s);
  }
  if (kill_rank == rank && kill_step == step) raise(SIGKILL);
  if (signal_step == step) raise(SIGTERM);
}

/* DTRAIN_FAULT_OVERFLOW=S1,S2,... (0-based steps): whether rank 0's gradient sum of this step
 * gets an infinite element, as an fp16 overflow would leave it (tests of loss scaling;
 * dt_step_run writes it after the all-reduce). The step's finite check, reduced over every
 * rank, then skips the update everywhere. */
static bool overflow_at(long step) {
  static const char *v;
  static int looked;
  if (!looked) looked = 1, v = getenv("DTRAIN_FAULT_OVERFLOW"); /* once, off the step path */
  if (!v) return false;
  for (const char *p = v; *p;) {
    char *end;
    long s = strtol(p, &end, 10);
    if (end == p) return false;
    if (s == step) return true;
    p = *end == ',' ? end + 1 : end;
  }
  return false;
}

/* A run: the trainer, rank 0's run directory and reports, where it started and where it is. */
typedef struct {
  dt_trainer t;
  dt_rundir dir;
  dt_report rep;
  dt_run_start start;
  long step;      /* global steps completed */
  long last_ckpt; /* the step of the last checkpoint written, -1: none */
} run;

/* The epoch in progress. */
typedef struct {
  long epoch, i;      /* i: steps of the epoch completed */
  double t0;          /* when it started */
  double images_here; /* trained on by this process in this epoch (for images/s) */
  dt_epoch_metrics em;
} epoch_state;

/* Set up every rank, restore the start state, then (rank 0) the run directory. Rank 0 touches
 * the run directory only once every rank has set up, so an input error on any rank leaves no
 * new directory behind (and a resumed one unchanged). DT_EXIT_OK, or DT_EXIT_INPUT with the
 * message printed and everything freed. */
static int run_start(run *r, const dt_config *cfg, dt_comm *comm, const dt_run_opts *opts) {
  dt_trainer *t = &r->t;
  dt_status st = dt_trainer_setup(t, cfg, comm, opts->device);
  dt_rundir_init(&r->dir, opts->resume_dir ? opts->resume_dir : cfg->output_dir);
  dt_report_init(&r->rep, t->rank, t->world);
  r->last_ckpt = -1;
  /* A resumed run owns its directory before it picks the latest checkpoint. */
  if (st == DT_OK && opts->resume_dir && t->rank == 0) st = dt_rundir_take(&r->dir);
  if (st == DT_OK) st = dt_run_state_load(t, opts->resume_dir, opts->init_path, &r->start);
  else memset(&r->start, 0, sizeof r->start);
  const bool set_up = dt_trainer_join(t, &st, opts->device) == DT_OK;
  if (set_up && t->rank == 0)
    st = dt_rundir_open(&r->dir, cfg, opts->resume_dir ? r->start.step : -1,
                        opts->config_changes != NULL);
  if (st != DT_OK && t->rank == 0) {
    dt_rundir_abandon(&r->dir);
    fprintf(stderr, "dtrain: %s\n", dt_error_message());
  }
  if (!set_up || dt_ranks_agree(comm, st) != DT_OK) {
    if (st != DT_OK && t->rank != 0)
      fprintf(stderr, "dtrain (rank %d): %s\n", t->rank, dt_error_message());
    dt_trainer_free(t);
    dt_rundir_close(&r->dir);
    return DT_EXIT_INPUT;
  }
  dt_rundir_started(&r->dir); /* the run started: what it writes stays */
  r->rep.log = r->dir.log;
  r->rep.metrics = r->dir.metrics;
  r->step = r->start.step;
  dt_trainer_broadcast_params(t);
  dt_report_header(&r->rep, t, r->dir.path, r->start.note);
  if (opts->config_changes)
    dt_report_say(&r->rep, "configuration changed on resume (--set): %s; config.ini rewritten\n",
                  opts->config_changes);
  t->step.prefetch_ld = t->train_ld;
  return DT_EXIT_OK;
}

/* The step that found no update to apply: a skipped step, or the end of the run (its status
 * returned). */
static int skip_update(run *r, epoch_state *es, dt_scale_verdict verdict, bool loss_finite,
                       double used_scale) {
  const dt_config *cfg = r->t.cfg;
  const long step = r->step, epoch = es->epoch;
  if (verdict == DT_SCALE_NONFINITE && cfg->train_nonfinite != DT_TRAIN_NONFINITE_SKIP) {
    dt_report_error(&r->rep, "non-finite %s at step %ld (epoch %ld); stopping (set "
                             "train.nonfinite=skip to skip such steps)",
                    loss_finite ? "gradient" : "loss", step + 1, epoch + 1);
    return DT_EXIT_RUNTIME;
  }
  if (verdict == DT_SCALE_DIVERGED) {
    dt_report_error(&r->rep, "non-finite gradients at step %ld (epoch %ld) at every loss scale "
                             "down to %g: the run diverged; stopping",
                    step + 1, epoch + 1, used_scale);
    return DT_EXIT_RUNTIME;
  }
  const char *nl = r->rep.tty ? "\n" : "";
  if (verdict == DT_SCALE_OVERFLOW)
    dt_report_say(&r->rep,
                  "%sstep %ld: gradients overflow at loss scale %g: update skipped, scale now %g\n",
                  nl, step + 1, used_scale, r->t.ls.scale);
  else
    dt_report_say(&r->rep, "%sskipping step %ld: non-finite loss or gradient\n", nl, step + 1);
  es->em.skipped++; /* dt_step_run took the update and the running statistics back */
  return DT_EXIT_OK;
}

/* Every output.log_every steps of the epoch and at its end: the progress line over the
 * window since the last one. */
static void report_progress(run *r, epoch_state *es, double lr) {
  const dt_config *cfg = r->t.cfg;
  const long spe = r->t.steps_per_epoch;
  double *win = es->em.win;
  if (es->i % cfg->output_log_every != 0 && es->i != spe) return;
  const double ips = es->images_here / (dt_now() - es->t0);
  const double wl = win[2] > 0 ? win[0] / win[2] : NAN,
               wa = win[2] > 0 ? 100.0 * win[1] / win[2] : NAN;
  const dt_step_row row = {(double)r->step, (double)es->epoch + 1, lr, wl, wa, ips, r->t.ls.scale};
  dt_report_progress(&r->rep, &row, cfg->train_epochs, es->i, spe,
                     (cfg->train_epochs - es->epoch) * spe - es->i, cfg->train_batch_size,
                     r->t.ls.active);
  win[0] = win[1] = win[2] = 0;
}

/* Collective: the checkpoint of the state after r->step (rank 0 writes it). */
static int save_checkpoint(run *r, long epoch, long step_in_epoch, const dt_epoch_metrics *em) {
  dt_status st = dt_ranks_agree(r->t.comm, dt_run_state_save(&r->t, r->dir.path, r->dir.metrics,
                                                             epoch, r->step, step_in_epoch, em));
  r->last_ckpt = r->step;
  if (st == DT_OK) return DT_EXIT_OK;
  dt_report_error(&r->rep, "%s", dt_error_message());
  return DT_EXIT_RUNTIME;
}

/* After a step: a checkpoint on a signal (then the run ends, preempted), every
 * output.checkpoint_steps steps, and at train.max_steps, unless the epoch ends here (its end
 * saves). *stop: the run ends after this step. */
static int maybe_checkpoint(run *r, epoch_state *es, bool signalled, bool *stop) {
  const dt_config *cfg = r->t.cfg;
  const long max_steps = cfg->train_max_steps, step = r->step;
  const bool at_max = max_steps && step >= max_steps;
  if (!signalled && !(cfg->output_checkpoint_steps && step % cfg->output_checkpoint_steps == 0) &&
      !at_max)
    return DT_EXIT_OK;
  if (signalled || es->i != r->t.steps_per_epoch) {
    dt_report_newline(&r->rep);
    int status = save_checkpoint(r, es->epoch, es->i, &es->em);
    if (status != DT_EXIT_OK) return status;
    if (signalled) {
      dt_report_say(&r->rep, "stopped by a signal after step %ld: checkpoint written; continue "
                             "with --resume %s\n", step, r->dir.path);
      return DT_EXIT_PREEMPTED;
    }
  }
  *stop = at_max;
  return DT_EXIT_OK;
}

/* output.tensorboard: the first batch, drawn as --dump-batch draws it, as the image summary
 * train/batch at step 0 (rank 0). */
static void tensorboard_batch_image(run *r, const dt_batch *b) {
  if (r->t.rank != 0 || !dt_metrics_has_images(r->dir.metrics)) return;
  uint8_t *png;
  size_t len;
  int w, h;
  if (!dt_dump_batch_png(&r->t.ds, b, &png, &len, &w, &h)) {
    fprintf(stderr, "dtrain: warning: TensorBoard: cannot encode the batch picture: %s\n",
            strerror(errno));
    return;
  }
  dt_metrics_image(r->dir.metrics, "train/batch", 0, png, len, w, h);
  free(png);
}

/* One step of batch b: forward and backward, all-reduce, update, report, maybe checkpoint.
 * *stop: the epoch ends here (train.max_steps). */
static int train_step(run *r, epoch_state *es, const dt_batch *b, bool *stop) {
  dt_trainer *t = &r->t;
  dt_step *s = &t->step;
  char line[256];
  if (dt_trainer_share_poll(t, line, sizeof line)) {
    dt_report_newline(&r->rep); /* after a terminal's progress line */
    dt_report_say(&r->rep, "%s\n", line);
  }
  if (r->step == 0) tensorboard_batch_image(r, b);
  inject_faults(t->rank, r->step);
  const double lr = dt_schedule_lr(&t->sched, r->step);
  const dt_step_result sr =
      dt_step_run(s, &t->opt, b, r->step, lr, g_stop_signal != 0, overflow_at(r->step));
  if (sr.verdict == DT_SCALE_APPLY) {
    const double red[3] = {sr.loss, sr.correct, sr.images};
    for (int j = 0; j < 3; j++) es->em.sums[j] += red[j], es->em.win[j] += red[j];
    es->images_here += sr.images;
  } else {
    int status = skip_update(r, es, sr.verdict, sr.loss_finite, sr.used_scale);
    if (status != DT_EXIT_OK) return status;
  }
  r->step++, es->i++;
  report_progress(r, es, lr);
  return maybe_checkpoint(r, es, sr.signalled, stop);
}

/* The end of an epoch: evaluation, the epoch line, the checkpoint of the last and of every
 * output.checkpoint_every-th epoch (unless this step has one). */
static int end_epoch(run *r, epoch_state *es) {
  dt_trainer *t = &r->t;
  const dt_config *cfg = t->cfg;
  const bool epoch_done = es->i == t->steps_per_epoch;
  const double train_s = dt_now() - es->t0;
  const dt_eval_result ev = dt_evaluate(&t->eval, NULL, NULL);
  /* No step of the epoch counted (resumed at its end from a checkpoint of format 1, which
   * has no metrics state, or every update skipped): its training metrics are unknown (NaN),
   * not zero. */
  const double *sums = es->em.sums, n = sums[2] > 0 ? sums[2] : NAN;
  const long step = r->step;
  const dt_epoch_row row = {(double)es->epoch + 1, (double)step,
                            dt_schedule_lr(&t->sched, DT_MAX(step - 1, 0)), sums[0] / n,
                            100.0 * sums[1] / n, ev.loss, ev.top1, ev.top5, dt_now() - es->t0,
                            es->images_here / train_s, t->ls.scale, (double)es->em.skipped};
  dt_report_epoch(&r->rep, &row, cfg->train_epochs);
  const long max_steps = cfg->train_max_steps;
  const bool last = es->epoch + 1 == cfg->train_epochs || (max_steps && step >= max_steps);
  const bool periodic =
      cfg->output_checkpoint_every && (es->epoch + 1) % cfg->output_checkpoint_every == 0;
  if (epoch_done && (last || periodic) && r->last_ckpt != step)
    return save_checkpoint(r, es->epoch + 1, 0, NULL);
  return DT_EXIT_OK;
}

/* One epoch from the run's position; a resumed run's first epoch starts where it stopped. */
static int train_epoch(run *r, long epoch) {
  dt_trainer *t = &r->t;
  const bool first = epoch == r->start.epoch;
  epoch_state es = {epoch, first ? r->start.step_in_epoch : 0, dt_now(), 0, {{0}, {0}, 0}};
  if (first) es.em = r->start.metrics;
  dt_step_start_loader(&t->step, t->train_ld, epoch, es.i);
  const dt_batch *b;
  bool stop = false;
  while (!stop && (b = dt_loader_next(t->train_ld)) != NULL) {
    int status = train_step(r, &es, b, &stop);
    if (status != DT_EXIT_OK) return status;
  }
  return end_epoch(r, &es);
}

int dt_train_run(const dt_config *cfg, dt_comm *comm, const dt_run_opts *opts) {
  if (dt_trainer_same_config(comm, cfg) != DT_OK) return DT_EXIT_INPUT;
  h5_init();
  run r;
  int status = run_start(&r, cfg, comm, opts);
  if (status != DT_EXIT_OK) return status;
  const double t_start = dt_now();
  const long max_steps = cfg->train_max_steps;
  for (long epoch = r.start.epoch; epoch < cfg->train_epochs && status == DT_EXIT_OK; epoch++) {
    if (max_steps && r.step >= max_steps) break;
    status = train_epoch(&r, epoch);
  }
  if (status == DT_EXIT_OK) {
    double ar = dt_comm_allreduce_seconds(comm);
    dt_report_say(&r.rep, "done: %ld steps in %.1f s", r.step, dt_now() - t_start);
    if (r.t.world > 1) dt_report_say(&r.rep, ", all-reduce %.1f s", ar);
    const dt_replay *rp = &r.t.step.replay;
    if (rp->recordings)
      dt_report_say(&r.rep, ", %ld passes replayed from %ld CUDA graph recordings", rp->replays,
                    rp->recordings);
    dt_report_say(&r.rep, "\n");
  }
  dt_trainer_free(&r.t);
  dt_rundir_close(&r.dir);
  return status;
}
