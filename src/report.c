/* report.c: what a run tells its user (report.h). */
#include "report.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "backend_factory.h"
#include "precision.h"

void dt_report_init(dt_report *r, int rank, int world) {
  memset(r, 0, sizeof *r);
  r->rank = rank;
  /* One refreshing line on a terminal; under mpirun stdout looks like a terminal but is
   * forwarded into job logs, so multi-rank runs print whole lines. */
  r->tty = rank == 0 && world == 1 && isatty(STDOUT_FILENO);
}

void dt_report_say(const dt_report *r, const char *fmt, ...) {
  if (r->rank != 0) return;
  va_list ap;
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  fflush(stdout);
  if (r->log) {
    va_start(ap, fmt);
    vfprintf(r->log, fmt, ap);
    va_end(ap);
    fflush(r->log);
  }
}

void dt_report_error(const dt_report *r, const char *fmt, ...) {
  if (r->rank != 0) return;
  char msg[2400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (r->tty) printf("\n");
  fflush(stdout);
  fprintf(stderr, "dtrain: %s\n", msg);
  fflush(stderr);
  if (r->log) {
    fprintf(r->log, "dtrain: %s\n", msg);
    fflush(r->log);
  }
}

void dt_report_newline(const dt_report *r) {
  if (r->tty) printf("\n");
}

void dt_report_format_eta(double seconds, char *buf, size_t size) {
  long s = (long)(seconds + 0.5);
  if (s >= 3600)
    snprintf(buf, size, "%ldh%02ldm", s / 3600, s / 60 % 60);
  else
    snprintf(buf, size, "%ldm%02lds", s / 60, s % 60);
}

void dt_report_header(const dt_report *r, const dt_trainer *t, const char *run_dir,
                      const char *start_note) {
  const dt_config *cfg = t->cfg;
  dt_report_say(r, "dtrain %s: %s (%d train / %d test images, %dx%dx%d, %d classes) on %s\n",
                DT_VERSION, dt_data_dataset_str(cfg->data_dataset), t->ds.train.count, t->ds.test.count,
                t->ds.train.channels, t->ds.train.height, t->ds.train.width, t->ds.classes,
                t->be->ops->name);
  dt_report_say(r, "%s; global batch %ld = %d ranks x %d micro-batches x %d images\n",
                t->threads_line, cfg->train_batch_size, t->world, t->step.accum, t->step.micro);
  dt_report_say(r, "model: %s-%ld %s, %ld parameters\n",
                dt_model_name_str(cfg->model_name), cfg->model_depth,
                dt_model_block_type_str(cfg->model_block_type), dt_model_param_count(t->model));
  dt_report_say(r,
                "lr: %g x batch %ld / reference %ld (linear scaling rule) = %g; %s, schedule %s\n",
                cfg->optim_lr, cfg->train_batch_size, cfg->optim_reference_batch, t->sched.base_lr,
                dt_optim_name_str(cfg->optim_name), dt_schedule_type_str(cfg->schedule_type));
  if (t->precision != DT_PRECISION_FP32 || t->ls.active) {
    char scaling[128] = "no loss scaling";
    if (t->ls.dynamic)
      snprintf(scaling, sizeof scaling, "dynamic loss scale from %g (x2 after %ld good steps)",
               t->ls.scale, t->ls.growth);
    else if (t->ls.active)
      snprintf(scaling, sizeof scaling, "fixed loss scale %g", t->ls.scale);
    /* On the CPU: oneDNN's ISA and whether 16 bits are native or emulated (once, here). */
    char how[200] = "", note[256] = "";
    const bool cpu = strcmp(t->be->ops->name, "cpu") == 0;
    const bool native =
        cpu && dt_backend_compute_line(DT_DEVICE_CPU, t->precision, how, sizeof how);
    if (cpu && t->precision != DT_PRECISION_FP32)
      snprintf(note, sizeof note, " (%s%s)",
               native ? "" : "emulated by rounding operands and results; ", how);
    dt_report_say(r, "precision: %s %s%s; %s\n", dt_precision_name(t->precision),
                  native ? "activations and convolutions" : "convolutions", note, scaling);
  }
  if (t->step.allreduce.nccl)
    dt_report_say(
        r, "all-reduce: NCCL on the GPUs, buckets of %g MiB %s\n", cfg->train_bucket_mb,
        t->step.accumulate ? "after the step's last backward pass" : "overlapped with backward");
  else if (t->world > 1)
    dt_report_say(r, "all-reduce: MPI through host memory, buckets of %g MiB\n",
                  cfg->train_bucket_mb);
  dt_report_say(r, "steps: %ld per epoch x %ld epochs; run directory %s\n", t->steps_per_epoch,
                cfg->train_epochs, run_dir);
  /* Printed here, once log.txt is open, so that the log says where the run came from. */
  if (start_note && start_note[0]) dt_report_say(r, "%s\n", start_note);
}

void dt_report_progress(const dt_report *r, const dt_step_row *row, long epochs,
                        long step_in_epoch, long steps_per_epoch, long steps_left,
                        long batch_size, bool show_scale) {
  if (r->rank != 0) return;
  char eta[32], line[256];
  dt_report_format_eta((double)steps_left * (double)batch_size / row->images_per_s, eta,
                       sizeof eta);
  int len = snprintf(line, sizeof line,
                     "epoch %ld/%ld step %ld/%ld lr %.5f loss %.4f acc %.2f%% %.0f img/s ETA %s",
                     (long)row->epoch, epochs, step_in_epoch, steps_per_epoch, row->lr, row->loss,
                     row->top1, row->images_per_s, eta);
  if (show_scale && len > 0 && (size_t)len < sizeof line)
    snprintf(line + len, sizeof line - (size_t)len, " scale %g", row->loss_scale);
  printf(r->tty ? "\r%s\033[K" : "%s\n", line);
  fflush(stdout);
  if (r->log) {
    fprintf(r->log, "%s\n", line);
    fflush(r->log); /* progress visible to tail -f while the epoch runs */
  }
  dt_metrics_step(r->metrics, row);
}

void dt_report_epoch(const dt_report *r, const dt_epoch_row *row, long epochs) {
  if (r->tty) printf("\r\033[K");
  dt_report_say(r,
                "epoch %ld/%ld train loss %.4f acc %.2f%% | test loss %.4f top1 %.2f%% top5 "
                "%.2f%% | %.1f s, %.0f img/s\n",
                (long)row->epoch, epochs, row->train_loss, row->train_top1, row->test_loss,
                row->test_top1, row->test_top5, row->seconds, row->images_per_s);
  if (r->rank == 0 && dt_metrics_epoch(r->metrics, row) != DT_OK)
    fprintf(stderr, "dtrain: warning: %s\n", dt_error_message());
}
