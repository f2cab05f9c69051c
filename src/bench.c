/* bench.c: the two commands that train nothing. --bench times the steps of the training
 * configuration (with the loader, then model compute alone on one batch) and prints the
 * numbers that matter, on the same trainer a run sets up (trainer.h); --dry-run prints the
 * configuration, checks the dataset if present and prints the model's summary, and the
 * activation memory of its training graph on the CPU backend's layouts (planned, not
 * allocated). Both print that figure in one line (print_activations). */
#include <stdio.h>
#include <sys/stat.h>

#include "backend_factory.h"
#include "loader_options.h"
#include "precision.h"
#include "ranks.h"
#include "train.h"
#include "trainer.h"

/* Between steps: a new share of the cores, said on rank 0 (dt_trainer_share_poll). */
static void share_poll(dt_trainer *t) {
  char line[256];
  if (dt_trainer_share_poll(t, line, sizeof line) && t->rank == 0) {
    printf("%s\n", line);
    fflush(stdout);
  }
}

/* One timed training step: gradients, all-reduce, update and the step's one wait. */
static void bench_step(dt_trainer *t, const dt_batch *b, long i, float unscale, double *loss,
                       double *correct) {
  share_poll(t);
  dt_step_gradients(&t->step, b, i);
  dt_step_allreduce(&t->step);
  dt_optim_step(&t->opt, &t->model->params, dt_schedule_lr(&t->sched, i), unscale, NULL);
  dt_step_collect(&t->step, loss, correct);
}

/* "activations: 12.3 MiB (values 5.1, gradients 5.1, scratch 2.1) at batch 128, fp32, cpu
 * backend": dt_graph_activation_bytes of the training graph(s) of one rank's micro-batch. */
static void print_activations(dt_graph_bytes b, int batch, const dt_config *cfg,
                              const char *backend) {
  const double mib = 1048576.0;
  printf("activations: %.1f MiB (values %.1f, gradients %.1f, scratch %.1f) at batch %d, %s, %s "
         "backend\n",
         (double)dt_graph_bytes_total(b) / mib, (double)b.values / mib, (double)b.grads / mib,
         (double)b.scratch / mib, batch, dt_train_precision_str(cfg->train_precision), backend);
}

/* The summed activation bytes of the model's planned training graphs of batch n (two with
 * Dual-Cutout, which runs two passes). */
static dt_graph_bytes training_bytes(const dt_model *m, int n) {
  dt_graph_bytes sum = {0, 0, 0};
  for (int i = 0; i < m->n_graphs; i++) {
    if (m->graphs[i].n != n || m->graphs[i].inference) continue;
    dt_graph_bytes b = dt_graph_activation_bytes(m->graphs[i].g);
    sum.values += b.values;
    sum.grads += b.grads;
    sum.scratch += b.scratch;
  }
  return sum;
}

int dt_train_bench(const dt_config *cfg, dt_comm *comm, dt_device device, long steps) {
  if (dt_trainer_same_config(comm, cfg) != DT_OK) return DT_EXIT_INPUT;
  dt_trainer t;
  dt_status st = dt_trainer_setup(&t, cfg, comm, device);
  if (dt_trainer_join(&t, &st, device) != DT_OK) {
    if (st != DT_OK) fprintf(stderr, "dtrain: %s\n", dt_error_message());
    dt_trainer_free(&t);
    return DT_EXIT_INPUT;
  }
  const int warmup = 3;
  double loss = 0, correct = 0;
  const float unscale = dt_loss_scale_unscale(&t.ls); /* a fixed scale: timing only */
  /* With data: the loader prepares each batch while the model computes (and a GPU copies the
   * next one meanwhile). */
  t.step.prefetch_ld = t.train_ld;
  dt_step_start_loader(&t.step, t.train_ld, 0, 0);
  double n_with = 0, t0 = 0, ar0 = 0;
  for (long i = 0; i < warmup + steps; i++) {
    if (i == warmup) t0 = dt_now();
    const dt_batch *b = dt_loader_next(t.train_ld);
    if (!b) {
      dt_step_start_loader(&t.step, t.train_ld, i, 0);
      b = dt_loader_next(t.train_ld);
    }
    bench_step(&t, b, i, unscale, &loss, &correct);
    if (i >= warmup) n_with += b->global_n;
  }
  double with_data = n_with / (dt_now() - t0);
  /* Model compute only: one batch already in memory, stepped repeatedly. */
  t.step.prefetch_ld = NULL;
  dt_step_start_loader(&t.step, t.train_ld, 0, 0);
  const dt_batch *b = dt_loader_next(t.train_ld);
  double n_only = 0, nccl_s0 = 0;
  size_t nccl_n0 = 0, nccl_b0 = 0;
  for (long i = 0; i < warmup + steps; i++) {
    if (i == warmup) {
      dt_comm_barrier(comm);
      t0 = dt_now();
      ar0 = dt_comm_allreduce_seconds(comm);
      if (t.step.allreduce.nccl) {
        nccl_s0 = dt_comm_nccl_host_seconds(t.step.allreduce.nccl);
        nccl_n0 = dt_comm_nccl_allreduce_count(t.step.allreduce.nccl);
        nccl_b0 = dt_comm_nccl_allreduce_bytes(t.step.allreduce.nccl);
      }
    }
    bench_step(&t, b, i, unscale, &loss, &correct);
    if (i >= warmup) n_only += b->global_n;
  }
  double secs = dt_now() - t0, only = n_only / secs;
  double ar = dt_comm_allreduce_seconds(comm) - ar0;
  if (t.rank == 0) {
    printf(
        "model: %s-%ld, global batch %ld (%d rank(s) x %d micro-batch(es) of %d), %s, %d "
        "thread(s), %ld timed steps\n",
        dt_model_name_str(cfg->model_name), cfg->model_depth, cfg->train_batch_size, t.world,
        t.step.accum,
        t.step.micro, t.be->ops->name, t.be->threads, steps);
    printf("%s\n", t.threads_line);
    char how[200];
    dt_backend_compute_line(device, t.precision, how, sizeof how);
    if (how[0]) printf("compute: %s\n", how);
    printf("step: %.1f ms, all-reduce %.2f ms per step (%.1f%%), %.1f images/s per rank\n",
           1e3 * secs / (double)steps, 1e3 * ar / (double)steps, 100.0 * ar / secs, only / t.world);
    if (t.step.allreduce.nccl)
      printf(
          "nccl: %.1f all-reduces of %.2f MiB in all per step, %.3f ms per step in NCCL "
          "calls on the host (the transfers overlap)\n",
          (double)(dt_comm_nccl_allreduce_count(t.step.allreduce.nccl) - nccl_n0) / (double)steps,
          (double)(dt_comm_nccl_allreduce_bytes(t.step.allreduce.nccl) - nccl_b0) / (double)steps /
              1048576.0,
          1e3 * (dt_comm_nccl_host_seconds(t.step.allreduce.nccl) - nccl_s0) / (double)steps);
    if (t.be->rethread_prims || t.be->rethread_kept)
      printf("rethread: %ld primitives re-created for a new thread count, %ld kept, %.1f ms in "
             "all\n",
             t.be->rethread_prims, t.be->rethread_kept, 1e3 * t.be->rethread_seconds);
    print_activations(training_bytes(t.model, t.step.micro), t.step.micro, cfg, t.be->ops->name);
    printf("bench_with_data: %.1f images/s\n", with_data);
    printf("bench: %.1f images/s\n", only);
  }
  dt_trainer_free(&t);
  return DT_EXIT_OK;
}

/* The activation memory of the training graph of one rank's micro-batch (batch_size /
 * accum_steps) on the CPU backend in the configured precision: its layouts planned, no buffer
 * allocated, so that it costs no memory even for the largest models. */
static int dry_run_activations(const dt_config *cfg, const dt_dataset *ds) {
  dt_backend *be = dt_backend_create(DT_DEVICE_CPU, 1, 0, 1);
  if (!be) {
    fprintf(stderr, "dtrain: %s\n", dt_error_message());
    return DT_EXIT_INPUT;
  }
  const dt_precision precision = dt_precision_of(cfg->train_precision);
  if (precision != DT_PRECISION_FP32 && be->ops->set_precision(be, precision) != DT_OK) {
    fprintf(stderr, "dtrain: %s\n", dt_error_message());
    be->ops->destroy(be);
    return DT_EXIT_INPUT;
  }
  const int micro = (int)(cfg->train_batch_size / cfg->train_accum_steps);
  dt_params ps = {0};
  dt_graph *g = dt_graph_create(
      be, &ps, (dt_shape){micro, ds->train.channels, ds->train.height, ds->train.width}, false);
  dt_model_family_of(cfg->model_name)->build(cfg, g, ds->classes);
  dt_graph_plan_layouts(g);
  print_activations(dt_graph_activation_bytes(g), micro, cfg, be->ops->name);
  dt_graph_free(g);
  dt_params_free(&ps, NULL);
  be->ops->destroy(be);
  return DT_EXIT_OK;
}

int dt_train_dry_run(const dt_config *cfg) {
  dt_config_write(cfg, stdout);
  dt_dataset ds;
  const char *dataset = dt_data_dataset_str(cfg->data_dataset);
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
    printf("\ndataset: %s in %s: %d train / %d test images (valid)\n", dataset, dir,
           full.train.count, full.test.count);
    dt_dataset_free(&full);
  } else {
    printf("\ndataset: %s: directory %s not found (not validated)\n", dataset, dir);
  }
  dt_model *m =
      dt_model_create(cfg, NULL, ds.train.channels, ds.train.height, ds.train.width, ds.classes);
  printf("\nmodel: %s, input %dx%dx%d, %d classes\n", dt_model_name_str(cfg->model_name),
         ds.train.channels, ds.train.height, ds.train.width, ds.classes);
  long macs = dt_model_summary(m, stdout);
  printf("parameters: %ld\n", dt_model_param_count(m));
  printf("macs_per_image: %ld\n", macs);
  char how[200];
  dt_backend_compute_line(DT_DEVICE_CPU, dt_precision_of(cfg->train_precision), how, sizeof how);
  printf("compute (cpu): %s\n", how);
  dt_model_free(m);
  return dry_run_activations(cfg, &ds);
}
